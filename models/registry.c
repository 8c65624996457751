/* The architectures this build knows. Add a line per models/<arch>.c. */
#include "vlm.h"

extern const vlm_arch vlm_arch_gemma4;
extern const vlm_arch vlm_arch_qwen2_5_vl;
extern const vlm_arch vlm_arch_qwen3_vl;
extern const vlm_arch vlm_arch_idefics3;
extern const vlm_arch vlm_arch_internvl;

const vlm_arch *const vlm_archs[] = {
    &vlm_arch_gemma4,
    &vlm_arch_qwen2_5_vl,
    &vlm_arch_qwen3_vl,
    &vlm_arch_idefics3,
    &vlm_arch_internvl,
    NULL,
};
