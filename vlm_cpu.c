/* CPU backend — placeholder until the foundation lands. */
#include "vlm.h"
