/* CUDA backend (issue 11). Not implemented yet: this file only fixes the
 * entry point so `make CUDA=1` builds and a caller gets a clear error. */
#include "vlm.h"

extern "C" vlm_backend *vlm_backend_cuda(int device, vlm_error *err) {
    (void)device;
    vlm_error_set(err, VLM_ERR_UNSUPPORTED, "the CUDA backend is not implemented yet");
    return NULL;
}
