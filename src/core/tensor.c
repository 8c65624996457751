/* Tensors, the arena, the compute context, views, named host tensors. */
#include "core/vlm_core.h"
#include "core/core_internal.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ tensors */

int64_t vlm_nelem(const vlm_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Elements a row of the last dim takes in memory: block types pad rows to
 * whole blocks. */
static int64_t core_row_span(const vlm_tensor *t) {
    int64_t n = t->ndim ? t->shape[t->ndim - 1] : 1, b = vlm_dtype_block(t->dtype);
    return (n + b - 1) / b * b;
}

size_t vlm_nbytes(const vlm_tensor *t) {
    int64_t n = t->ndim ? t->shape[t->ndim - 1] : 1;
    return n ? (size_t)(vlm_nelem(t) / n) * vlm_dtype_bytes(t->dtype, n) : 0;
}

static void core_set_contiguous_strides(vlm_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= i == t->ndim - 1 ? core_row_span(t) : t->shape[i];
    }
}

int vlm_is_contiguous(const vlm_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= i == t->ndim - 1 ? core_row_span(t) : t->shape[i];
    }
    return 1;
}

vlm_tensor vlm_tensor_make(vlm_dtype dtype, int ndim, const int64_t *shape, void *data) {
    vlm_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    core_set_contiguous_strides(&t);
    t.data = data;
    return t;
}

/* Offset in elements of the flat_index-th element in logical (row-major) order. */
static int64_t core_offset(const vlm_tensor *t, int64_t flat) {
    int64_t off = 0;
    for (int i = t->ndim - 1; i >= 0; i--) {
        off += (flat % t->shape[i]) * t->stride[i];
        flat /= t->shape[i];
    }
    return off;
}

float vlm_get_f32(const vlm_tensor *t, int64_t flat) {
    int64_t o = core_offset(t, flat);
    switch (t->dtype) {
    case VLM_F32: return ((const float *)t->data)[o];
    case VLM_F16: return vlm_f16_to_f32(((const uint16_t *)t->data)[o]);
    case VLM_BF16: return vlm_bf16_to_f32(((const uint16_t *)t->data)[o]);
    case VLM_I32: return (float)((const int32_t *)t->data)[o];
    case VLM_I64: return (float)((const int64_t *)t->data)[o];
    case VLM_U8: case VLM_BOOL: return (float)((const uint8_t *)t->data)[o];
    case VLM_I8: return (float)((const int8_t *)t->data)[o];
    case VLM_Q8_0: case VLM_Q4_0: case VLM_Q4_Z: { /* o is a multiple of 32 plus the index in its block */
        float blk[32];
        vlm_dequantize_row(t->dtype, (const char *)t->data + vlm_dtype_bytes(t->dtype, o - o % 32), 32, blk);
        return blk[o % 32];
    }
    case VLM_Q8_0R8: case VLM_Q4_0R8: case VLM_Q4_ZR8: { /* the block of row o / ld, out of its group */
        int64_t ld = t->stride[t->ndim - 2], row = o / ld, k = o % ld;
        vlm_dtype u = vlm_dtype_unpacked(t->dtype);
        size_t bs = vlm_dtype_size(u);
        const unsigned char *g = (const unsigned char *)t->data + vlm_dtype_bytes(u, (row - row % 8) * ld);
        unsigned char rows[8 * 34];
        float blk[32];
        vlm_unpack_r8(t->dtype, g + (size_t)(k / 32) * 8 * bs, 32, rows);
        vlm_dequantize_row(u, rows + (size_t)(row % 8) * bs, 32, blk);
        return blk[k % 32];
    }
    default: return 0;
    }
}

int64_t vlm_get_i64(const vlm_tensor *t, int64_t flat) {
    int64_t o = core_offset(t, flat);
    switch (t->dtype) {
    case VLM_I32: return ((const int32_t *)t->data)[o];
    case VLM_I64: return ((const int64_t *)t->data)[o];
    case VLM_U8: case VLM_BOOL: return ((const uint8_t *)t->data)[o];
    case VLM_I8: return ((const int8_t *)t->data)[o];
    default: return (int64_t)vlm_get_f32(t, flat);
    }
}

/* ------------------------------------------------------------------ arena */

struct vlm_arena_chunk {
    vlm_arena_chunk *next;
    size_t size, used;
    _Alignas(64) unsigned char data[];
};

void *vlm_arena_alloc(vlm_arena *a, size_t nbytes) {
    nbytes = (nbytes + 63) & ~(size_t)63;
    if (nbytes == 0) nbytes = 64;
    vlm_arena_chunk *h = a->head;
    if (!h || h->size - h->used < nbytes) {
        size_t size = nbytes > (16u << 20) ? nbytes : (16u << 20);
        if (!h && a->high_water > size) size = a->high_water;
        h = (vlm_arena_chunk *)vlm_aligned_alloc(64, sizeof *h + size);
        if (!h) return NULL;
        h->size = size;
        h->used = 0;
        h->next = a->head;
        a->head = h;
        a->total_reserved += size;
    }
    void *p = h->data + h->used;
    h->used += nbytes;
    a->used += nbytes;
    if (a->used > a->high_water) a->high_water = a->used;
    return p;
}

vlm_arena_mark vlm_arena_get_mark(const vlm_arena *a) {
    vlm_arena_mark m = {a->head, a->head ? a->head->used : 0, a->used};
    return m;
}

void vlm_arena_release(vlm_arena *a, vlm_arena_mark m) {
    while (a->head && a->head != m.chunk) { /* chunks opened after the mark */
        vlm_arena_chunk *h = a->head;
        a->head = h->next;
        a->total_reserved -= h->size;
        vlm_aligned_free(h);
    }
    if (a->head) a->head->used = m.chunk_used;
    a->used = m.used;
}

void vlm_arena_reset(vlm_arena *a) {
    /* Keep one chunk big enough for everything the last pass needed. */
    vlm_arena_chunk *h = a->head;
    if (h && h->next) {
        vlm_arena_free(a);
        size_t hw = a->high_water;
        a->high_water = hw;
        h = (vlm_arena_chunk *)vlm_aligned_alloc(64, sizeof *h + hw);
        if (h) { h->size = hw; h->used = 0; h->next = NULL; a->head = h; a->total_reserved = hw; }
    } else if (h) h->used = 0;
    a->used = 0;
}

void vlm_arena_free(vlm_arena *a) {
    size_t hw = a->high_water;
    for (vlm_arena_chunk *h = a->head, *n; h; h = n) { n = h->next; vlm_aligned_free(h); }
    memset(a, 0, sizeof *a);
    a->high_water = hw;
}

/* ------------------------------------------------------------------ compute */

void vlm_compute_init(vlm_compute *c, vlm_backend *be) {
    memset(c, 0, sizeof *c);
    c->be = be;
}

void vlm_compute_reset(vlm_compute *c) {
    vlm_arena_reset(&c->arena);
    c->failed = 0;
    vlm_error_clear(&c->err);
}

void vlm_compute_free(vlm_compute *c) {
    vlm_arena_free(&c->arena);
    c->arena.high_water = 0;
}

static vlm_tensor *core_fail(vlm_compute *c, vlm_status code, const char *what) {
    vlm_error_set(&c->err, code, "%s", what);
    c->failed = 1;
    return NULL;
}

static vlm_tensor *core_header(vlm_compute *c) {
    vlm_tensor *t = (vlm_tensor *)vlm_arena_alloc(&c->arena, sizeof(vlm_tensor));
    if (!t) return core_fail(c, VLM_ERR_OOM, "out of memory for a tensor header");
    memset(t, 0, sizeof *t);
    return t;
}

vlm_tensor *vlm_new(vlm_compute *c, vlm_dtype dtype, int ndim, const int64_t *shape) {
    CORE_REQUIRE(c, ndim >= 0 && ndim <= VLM_MAX_DIMS, "tensor rank %d out of range", ndim);
    vlm_tensor *t = core_header(c);
    if (!t) return NULL;
    *t = vlm_tensor_make(dtype, ndim, shape, NULL);
    for (int i = 0; i < ndim; i++) CORE_REQUIRE(c, shape[i] >= 0, "negative dimension");
    t->data = vlm_arena_alloc(&c->arena, vlm_nbytes(t));
    if (!t->data) return core_fail(c, VLM_ERR_OOM, "out of memory for activations");
    return t;
}

vlm_tensor *vlm_new_1d(vlm_compute *c, vlm_dtype dtype, int64_t n0) { return vlm_new(c, dtype, 1, &n0); }
vlm_tensor *vlm_new_2d(vlm_compute *c, vlm_dtype dtype, int64_t n0, int64_t n1) {
    int64_t s[2] = {n0, n1};
    return vlm_new(c, dtype, 2, s);
}
vlm_tensor *vlm_new_3d(vlm_compute *c, vlm_dtype dtype, int64_t n0, int64_t n1, int64_t n2) {
    int64_t s[3] = {n0, n1, n2};
    return vlm_new(c, dtype, 3, s);
}

vlm_tensor *vlm_from_host(vlm_compute *c, vlm_dtype dtype, int ndim, const int64_t *shape, const void *host) {
    vlm_tensor *t = vlm_new(c, dtype, ndim, shape);
    if (t) c->be->upload(c->be, t->data, host, vlm_nbytes(t));
    return t;
}

/* ------------------------------------------------------------------ views */

static vlm_tensor *core_view(vlm_compute *c, const vlm_tensor *t) {
    vlm_tensor *v = core_header(c);
    if (v) *v = *t;
    return v;
}

vlm_tensor *vlm_reshape(vlm_compute *c, vlm_tensor *t, int ndim, const int64_t *shape) {
    if (!t) return NULL;
    CORE_REQUIRE(c, vlm_is_contiguous(t), "reshape of a non-contiguous tensor");
    CORE_REQUIRE(c, ndim > 0 && ndim <= VLM_MAX_DIMS, "reshape rank %d", ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    CORE_REQUIRE(c, n == vlm_nelem(t), "reshape to %lld elements from %lld", (long long)n, (long long)vlm_nelem(t));
    CORE_REQUIRE(c, vlm_dtype_block(t->dtype) == 1 || shape[ndim - 1] == t->shape[t->ndim - 1],
                 "reshape of %s must keep its rows", vlm_dtype_name(t->dtype));
    CORE_REQUIRE(c, vlm_dtype_rows(t->dtype) == 1 || (ndim >= 2 && t->ndim >= 2 && shape[ndim - 2] == t->shape[t->ndim - 2]),
                 "reshape of %s must keep its row groups", vlm_dtype_name(t->dtype));
    vlm_tensor *v = core_header(c);
    if (v) *v = vlm_tensor_make(t->dtype, ndim, shape, t->data);
    return v;
}

vlm_tensor *vlm_reshape_2d(vlm_compute *c, vlm_tensor *t, int64_t n0, int64_t n1) {
    int64_t s[2] = {n0, n1};
    return vlm_reshape(c, t, 2, s);
}
vlm_tensor *vlm_reshape_3d(vlm_compute *c, vlm_tensor *t, int64_t n0, int64_t n1, int64_t n2) {
    int64_t s[3] = {n0, n1, n2};
    return vlm_reshape(c, t, 3, s);
}
vlm_tensor *vlm_reshape_4d(vlm_compute *c, vlm_tensor *t, int64_t n0, int64_t n1, int64_t n2, int64_t n3) {
    int64_t s[4] = {n0, n1, n2, n3};
    return vlm_reshape(c, t, 4, s);
}

vlm_tensor *vlm_permute(vlm_compute *c, vlm_tensor *t, const int *perm) {
    if (!t) return NULL;
    vlm_tensor *v = core_view(c, t);
    if (!v) return NULL;
    int seen = 0;
    for (int i = 0; i < t->ndim; i++) {
        CORE_REQUIRE(c, perm[i] >= 0 && perm[i] < t->ndim && !(seen & (1 << perm[i])), "bad permutation");
        seen |= 1 << perm[i];
        CORE_REQUIRE(c, vlm_dtype_block(t->dtype) == 1 || i < t->ndim - 1 - (vlm_dtype_rows(t->dtype) > 1) || perm[i] == i,
                     "permute of %s must keep its rows", vlm_dtype_name(t->dtype));
        v->shape[i] = t->shape[perm[i]];
        v->stride[i] = t->stride[perm[i]];
    }
    return v;
}

vlm_tensor *vlm_transpose(vlm_compute *c, vlm_tensor *t, int d0, int d1) {
    if (!t) return NULL;
    CORE_REQUIRE(c, d0 >= 0 && d1 >= 0 && d0 < t->ndim && d1 < t->ndim, "transpose dims out of range");
    int perm[VLM_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return vlm_permute(c, t, perm);
}

vlm_tensor *vlm_slice(vlm_compute *c, vlm_tensor *t, int dim, int64_t start, int64_t len) {
    if (!t) return NULL;
    CORE_REQUIRE(c, dim >= 0 && dim < t->ndim && start >= 0 && len >= 0 && start + len <= t->shape[dim],
                 "slice [%lld, +%lld) of dim %d (size %lld)", (long long)start, (long long)len, dim,
                 (long long)(dim >= 0 && dim < t->ndim ? t->shape[dim] : -1));
    CORE_REQUIRE(c, vlm_dtype_block(t->dtype) == 1 || (t->stride[dim] * start) % vlm_dtype_block(t->dtype) == 0,
                 "slice of %s inside a block", vlm_dtype_name(t->dtype));
    CORE_REQUIRE(c, vlm_dtype_rows(t->dtype) == 1 || dim != t->ndim - 2 || (start % 8 == 0 && len % 8 == 0),
                 "slice of %s inside a group of 8 rows", vlm_dtype_name(t->dtype));
    vlm_tensor *v = core_view(c, t);
    if (!v) return NULL;
    v->data = (char *)t->data + vlm_dtype_bytes(t->dtype, start * t->stride[dim]);
    v->shape[dim] = len;
    return v;
}

vlm_tensor *vlm_index(vlm_compute *c, vlm_tensor *t, int64_t i) {
    vlm_tensor *v = vlm_slice(c, t, 0, i, 1);
    if (!v) return NULL;
    for (int d = 1; d < v->ndim; d++) { v->shape[d - 1] = v->shape[d]; v->stride[d - 1] = v->stride[d]; }
    v->ndim--;
    return v;
}

vlm_tensor *vlm_split_last(vlm_compute *c, vlm_tensor *t, int64_t n0, int64_t n1) {
    if (!t) return NULL;
    int d = t->ndim - 1;
    CORE_REQUIRE(c, t->ndim < VLM_MAX_DIMS && t->stride[d] == 1 && n0 * n1 == t->shape[d] && vlm_dtype_block(t->dtype) == 1,
                 "split_last: %lld into %lldx%lld", (long long)t->shape[d], (long long)n0, (long long)n1);
    vlm_tensor *v = core_view(c, t);
    if (!v) return NULL;
    v->shape[d] = n0;
    v->stride[d] = n1;
    v->shape[d + 1] = n1;
    v->stride[d + 1] = 1;
    v->ndim++;
    return v;
}

/* ------------------------------------------------------------------ features */

const vlm_tensor *vlm_features_get(const vlm_features *f, const char *name) {
    if (!f) return NULL;
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) return &f->tensors[i];
    return NULL;
}
