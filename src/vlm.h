/* vlm.h — vision-language model inference in C.
 *
 * The public API and the tensor core the model files are written against,
 * one header per subsystem (dependencies run one way: api -> text, vision,
 * io -> core). The top-level vlm.h is generated from this file and the
 * sources in src/ (tools/amalgamate.sh): define VLM_IMPLEMENTATION in one C
 * file before including it to get the implementation, stb style.
 *
 * Conventions
 *  - Shapes are row-major as in PyTorch: shape[0] is the outermost dimension,
 *    shape[ndim-1] the innermost (contiguous) one. Strides are in elements.
 *  - Every fallible function returns vlm_status and fills a vlm_error.
 *    Nothing in the library prints, calls exit() or abort().
 *  - Ops allocate their outputs from the compute context's arena; a forward
 *    pass calls vlm_compute_reset() when done and nothing is malloc'd per op.
 *    An op given a NULL input returns NULL (the first failure is recorded in
 *    the context), so a model can check only its final result.
 */
#ifndef VLM_H
#define VLM_H

#include "platform/vlm_platform.h" /* files, mmap, threads, clocks, CPU features */
#include "core/vlm_core.h"     /* errors, tensors, arena, ops, backends, KV cache */
#include "io/vlm_io.h"         /* JSON, safetensors, the model contract and loader */
#include "text/vlm_text.h"     /* tokenizers, Unicode, chat templates, prompts */
#include "vision/vlm_vision.h" /* image decoding and per-family preprocessing */
#include "api/vlm_api.h"       /* engines, sessions, sampling */

#endif /* VLM_H */
