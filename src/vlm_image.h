/* Image decoding and per-family preprocessing. Owned by issue 5. */
#ifndef VLM_IMAGE_H
#define VLM_IMAGE_H
#endif
