/* The architectures this build knows. Add a line per models/<arch>.c. */
#include "vlm.h"

const vlm_arch *const vlm_archs[] = {
    NULL,
};
