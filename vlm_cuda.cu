/* CUDA backend (issue 11): placeholder that compiles with nvcc. */
#include "vlm.h"
