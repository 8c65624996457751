/* The engine's cache of vision-encoder outputs (vision_cache.c): the rows an
 * image becomes, kept under a key made of its pixels and the processor's
 * settings, least recently used first out, bounded in bytes, shared by the
 * engine's sessions on any thread. A client that sends the same image again
 * (a stateless server's every turn, a robot's unchanged view) gets its rows
 * without running the vision tower. Inner to src/api. */
#ifndef VLM_API_VISION_CACHE_H
#define VLM_API_VISION_CACHE_H

#include "io/vlm_io.h"
#include "vision/vlm_vision.h"

typedef struct vlm_vcache vlm_vcache;

/* max_bytes 0: a cache that keeps nothing (every image is encoded). NULL if out of memory. */
vlm_vcache *vlm_vcache_new(size_t max_bytes);
void vlm_vcache_free(vlm_vcache *v);

/* The vision output of images[0..n) in order, as one call's: each image
 * from the cache under keys[i], or run alone through the processor and the
 * tower (then kept). *n_encoded: how many ran the tower. */
vlm_status vlm_vcache_encode(vlm_vcache *v, vlm_model *m, vlm_compute *c, const vlm_image_processor *proc,
                             const vlm_image *images, const uint64_t *keys, int n, vlm_vision_out *out,
                             int *n_encoded, vlm_error *err);

typedef struct vlm_vcache_stats {
    int64_t hits, misses, entries;
    size_t bytes, max_bytes;
} vlm_vcache_stats;
vlm_vcache_stats vlm_vcache_get_stats(vlm_vcache *v);

#endif
