/* Shared by the core's own sources, not part of the public API. */
#ifndef VLM_CORE_INTERNAL_H
#define VLM_CORE_INTERNAL_H

/* A failed shape check in an op or view: record it in the compute context
 * and return NULL, so the model only checks its final result. */
#define CORE_REQUIRE(c, cond, ...)                                          \
    do {                                                                    \
        if (!(cond)) {                                                      \
            vlm_error_set(&(c)->err, VLM_ERR_ARG, __VA_ARGS__);             \
            (c)->failed = 1;                                                \
            return NULL;                                                    \
        }                                                                   \
    } while (0)

#endif /* VLM_CORE_INTERNAL_H */
