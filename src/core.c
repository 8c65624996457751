/* The tensor core: errors, dtypes, arena, views, op front-ends, KV cache. */
#include "vlm.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ errors */

vlm_status vlm_error_set(vlm_error *err, vlm_status code, const char *fmt, ...) {
    if (!err || err->code != VLM_OK) return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

void vlm_error_clear(vlm_error *err) {
    if (!err) return;
    err->code = VLM_OK;
    err->msg[0] = 0;
}

const char *vlm_status_name(vlm_status s) {
    switch (s) {
    case VLM_OK: return "ok";
    case VLM_ERR_IO: return "i/o error";
    case VLM_ERR_FORMAT: return "format error";
    case VLM_ERR_CONFIG: return "config error";
    case VLM_ERR_UNSUPPORTED: return "unsupported";
    case VLM_ERR_OOM: return "out of memory";
    case VLM_ERR_ARG: return "invalid argument";
    case VLM_ERR_CONTEXT: return "context full";
    case VLM_ERR_CANCELLED: return "cancelled";
    }
    return "unknown error";
}

/* ------------------------------------------------------------------ text helpers */

int vlm_buf_add(vlm_buf *b, const void *s, size_t n) {
    if (b->oom) return -1;
    if (n == 0) return 0;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = (char *)realloc(b->p, cap);
        if (!p) { b->oom = 1; return -1; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int vlm_buf_str(vlm_buf *b, const char *s) { return vlm_buf_add(b, s, strlen(s)); }

int vlm_utf8_encode(uint32_t cp, char *s) {
    if (cp < 0x80) { s[0] = (char)cp; return 1; }
    if (cp < 0x800) { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12)); s[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    s[0] = (char)(0xF0 | (cp >> 18)); s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    s[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); s[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------ dtypes */

static const struct { const char *name; size_t size; } core_dtypes[VLM_NTYPES] = {
    [VLM_F32] = {"F32", 4}, [VLM_F16] = {"F16", 2}, [VLM_BF16] = {"BF16", 2},
    [VLM_I32] = {"I32", 4}, [VLM_I64] = {"I64", 8}, [VLM_U8] = {"U8", 1},
    [VLM_BOOL] = {"BOOL", 1},
};

size_t vlm_dtype_size(vlm_dtype t) { return (unsigned)t < VLM_NTYPES ? core_dtypes[t].size : 0; }
const char *vlm_dtype_name(vlm_dtype t) { return (unsigned)t < VLM_NTYPES ? core_dtypes[t].name : "?"; }

int vlm_dtype_from_name(const char *name, vlm_dtype *out) {
    for (int i = 0; i < VLM_NTYPES; i++)
        if (!strcmp(name, core_dtypes[i].name)) { *out = (vlm_dtype)i; return 0; }
    return -1;
}

float vlm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: renormalize */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000 | (man << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t vlm_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - exp;
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into the exponent: correct */
    return (uint16_t)half;
}

float vlm_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t vlm_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* ------------------------------------------------------------------ tensors */

int64_t vlm_nelem(const vlm_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t vlm_nbytes(const vlm_tensor *t) { return (size_t)vlm_nelem(t) * vlm_dtype_size(t->dtype); }

static void core_set_contiguous_strides(vlm_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) { t->stride[i] = s; s *= t->shape[i]; }
}

int vlm_is_contiguous(const vlm_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
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
    default: return 0;
    }
}

int64_t vlm_get_i64(const vlm_tensor *t, int64_t flat) {
    int64_t o = core_offset(t, flat);
    switch (t->dtype) {
    case VLM_I32: return ((const int32_t *)t->data)[o];
    case VLM_I64: return ((const int64_t *)t->data)[o];
    case VLM_U8: case VLM_BOOL: return ((const uint8_t *)t->data)[o];
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
        h = (vlm_arena_chunk *)aligned_alloc(64, (sizeof *h + size + 63) & ~(size_t)63);
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
        free(h);
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
        h = (vlm_arena_chunk *)aligned_alloc(64, (sizeof *h + hw + 63) & ~(size_t)63);
        if (h) { h->size = hw; h->used = 0; h->next = NULL; a->head = h; a->total_reserved = hw; }
    } else if (h) h->used = 0;
    a->used = 0;
}

void vlm_arena_free(vlm_arena *a) {
    size_t hw = a->high_water;
    for (vlm_arena_chunk *h = a->head, *n; h; h = n) { n = h->next; free(h); }
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

#define CORE_REQUIRE(c, cond, ...)                                          \
    do {                                                                    \
        if (!(cond)) {                                                      \
            vlm_error_set(&(c)->err, VLM_ERR_ARG, __VA_ARGS__);             \
            (c)->failed = 1;                                                \
            return NULL;                                                    \
        }                                                                   \
    } while (0)

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
    vlm_tensor *v = core_view(c, t);
    if (!v) return NULL;
    v->data = (char *)t->data + start * t->stride[dim] * (int64_t)vlm_dtype_size(t->dtype);
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
    CORE_REQUIRE(c, t->ndim < VLM_MAX_DIMS && t->stride[d] == 1 && n0 * n1 == t->shape[d],
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

/* ------------------------------------------------------------------ op front-ends */

static vlm_tensor *core_run(vlm_compute *c, vlm_op *op) {
    if (c->failed) return NULL;
    vlm_status s = c->be->exec(c->be, op, &c->err);
    if (s != VLM_OK) { c->failed = 1; return NULL; }
    return op->out ? op->out : op->a;
}

static int core_is_float(vlm_dtype t) { return t == VLM_F32 || t == VLM_F16 || t == VLM_BF16; }

static vlm_tensor *core_like(vlm_compute *c, const vlm_tensor *a) {
    return vlm_new(c, VLM_F32, a->ndim, a->shape);
}

vlm_tensor *vlm_cast(vlm_compute *c, vlm_tensor *a, vlm_dtype to) {
    if (!a) return NULL;
    vlm_op op = {.kind = VLM_OP_CPY, .a = a};
    op.out = vlm_new(c, to, a->ndim, a->shape);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_status vlm_copy(vlm_compute *c, vlm_tensor *dst, vlm_tensor *src) {
    if (c->failed) return c->err.code;
    int same = dst && src && dst->ndim == src->ndim;
    for (int i = 0; same && i < dst->ndim; i++) same = dst->shape[i] == src->shape[i];
    if (!same) {
        c->failed = 1;
        return vlm_error_set(&c->err, VLM_ERR_ARG, "copy between tensors of different shapes");
    }
    vlm_op op = {.kind = VLM_OP_CPY, .a = src, .out = dst};
    return core_run(c, &op) ? VLM_OK : c->err.code;
}

vlm_tensor *vlm_cont(vlm_compute *c, vlm_tensor *a) {
    if (!a) return NULL;
    if (a->dtype == VLM_F32 && vlm_is_contiguous(a)) return a;
    return vlm_cast(c, a, VLM_F32);
}

vlm_tensor *vlm_matmul(vlm_compute *c, vlm_tensor *a, vlm_tensor *w) { return vlm_linear(c, a, w, NULL); }

vlm_tensor *vlm_linear(vlm_compute *c, vlm_tensor *x, vlm_tensor *w, vlm_tensor *bias) {
    if (!x || !w) return NULL;
    CORE_REQUIRE(c, x->ndim >= 1 && w->ndim >= 2, "matmul ranks %d x %d", x->ndim, w->ndim);
    int64_t K = x->shape[x->ndim - 1], N = w->shape[w->ndim - 2];
    CORE_REQUIRE(c, w->shape[w->ndim - 1] == K, "matmul inner dims %lld vs %lld",
                 (long long)K, (long long)w->shape[w->ndim - 1]);
    CORE_REQUIRE(c, core_is_float(x->dtype) && core_is_float(w->dtype), "matmul of non-float tensors");
    CORE_REQUIRE(c, x->stride[x->ndim - 1] == 1 && w->stride[w->ndim - 1] == 1, "matmul needs unit inner stride");
    if (w->ndim > 2) { /* batched: leading dims of w match those of x */
        CORE_REQUIRE(c, w->ndim == x->ndim, "batched matmul rank mismatch");
        for (int i = 0; i < w->ndim - 2; i++) CORE_REQUIRE(c, w->shape[i] == x->shape[i], "batched matmul batch dims");
    }
    if (bias) CORE_REQUIRE(c, vlm_nelem(bias) == N && vlm_is_contiguous(bias), "bias of %lld for N=%lld",
                           (long long)vlm_nelem(bias), (long long)N);
    int64_t shape[VLM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = N;
    vlm_op op = {.kind = VLM_OP_MATMUL, .a = x, .b = w, .c = bias};
    op.out = vlm_new(c, VLM_F32, x->ndim, shape);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_matmul_id(vlm_compute *c, vlm_tensor *x, vlm_tensor *w, vlm_tensor *ids) {
    if (!x || !w || !ids) return NULL;
    CORE_REQUIRE(c, w->ndim == 3 && x->ndim == 2 && ids->ndim == 2 && ids->dtype == VLM_I32,
                 "matmul_id wants x[T,K] or x[T*k,K], w[E,N,K], ids[T,k] i32");
    int64_t T = ids->shape[0], k = ids->shape[1], N = w->shape[1], K = w->shape[2];
    CORE_REQUIRE(c, x->shape[1] == K && (x->shape[0] == T || x->shape[0] == T * k), "matmul_id shapes");
    CORE_REQUIRE(c, vlm_is_contiguous(x) && vlm_is_contiguous(w) && vlm_is_contiguous(ids), "matmul_id needs contiguous inputs");
    vlm_op op = {.kind = VLM_OP_MATMUL_ID, .a = x, .b = w, .aux = ids};
    op.out = vlm_new_3d(c, VLM_F32, T, k, N);
    return op.out ? core_run(c, &op) : NULL;
}

static vlm_tensor *core_binary(vlm_compute *c, vlm_op_kind kind, vlm_tensor *a, vlm_tensor *b) {
    if (!a || !b) return NULL;
    CORE_REQUIRE(c, b->ndim <= a->ndim, "broadcast: b has more dims than a");
    for (int i = 1; i <= b->ndim; i++) {
        int64_t da = a->shape[a->ndim - i], db = b->shape[b->ndim - i];
        CORE_REQUIRE(c, db == da || db == 1, "broadcast: dim %d of b is %lld, a has %lld",
                     b->ndim - i, (long long)db, (long long)da);
    }
    CORE_REQUIRE(c, core_is_float(a->dtype) && core_is_float(b->dtype), "elementwise op on non-float tensors");
    vlm_op op = {.kind = kind, .a = a, .b = b};
    op.out = core_like(c, a);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_add(vlm_compute *c, vlm_tensor *a, vlm_tensor *b) { return core_binary(c, VLM_OP_ADD, a, b); }
vlm_tensor *vlm_mul(vlm_compute *c, vlm_tensor *a, vlm_tensor *b) { return core_binary(c, VLM_OP_MUL, a, b); }

vlm_tensor *vlm_scale_bias(vlm_compute *c, vlm_tensor *a, float s, float b) {
    if (!a) return NULL;
    vlm_op op = {.kind = VLM_OP_SCALE, .a = a, .f = {s, b}};
    op.out = core_like(c, a);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_scale(vlm_compute *c, vlm_tensor *a, float s) { return vlm_scale_bias(c, a, s, 0); }

vlm_tensor *vlm_unary(vlm_compute *c, vlm_tensor *a, vlm_unary_op f) {
    if (!a) return NULL;
    vlm_op op = {.kind = VLM_OP_UNARY, .a = a, .i = {(int32_t)f}};
    op.out = core_like(c, a);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_softcap(vlm_compute *c, vlm_tensor *a, float cap) {
    if (!a) return NULL;
    vlm_op op = {.kind = VLM_OP_UNARY, .a = a, .i = {VLM_UNARY_SOFTCAP}, .f = {cap}};
    op.out = core_like(c, a);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_glu(vlm_compute *c, vlm_tensor *gate, vlm_tensor *up, vlm_unary_op act) {
    if (!gate || !up) return NULL;
    CORE_REQUIRE(c, vlm_nelem(gate) == vlm_nelem(up) && gate->shape[gate->ndim - 1] == up->shape[up->ndim - 1],
                 "glu: gate and up shapes differ");
    vlm_op op = {.kind = VLM_OP_GLU, .a = gate, .b = up, .i = {(int32_t)act}};
    op.out = core_like(c, gate);
    return op.out ? core_run(c, &op) : NULL;
}

static vlm_tensor *core_norm(vlm_compute *c, vlm_op_kind kind, vlm_tensor *x, vlm_tensor *w, vlm_tensor *b,
                             float eps, int plus_one) {
    if (!x) return NULL;
    int64_t D = x->shape[x->ndim - 1];
    CORE_REQUIRE(c, !w || (vlm_nelem(w) == D && vlm_is_contiguous(w)), "norm weight size %lld, want %lld",
                 (long long)(w ? vlm_nelem(w) : 0), (long long)D);
    CORE_REQUIRE(c, !b || (vlm_nelem(b) == D && vlm_is_contiguous(b)), "norm bias size mismatch");
    vlm_op op = {.kind = kind, .a = x, .b = w, .c = b, .f = {eps}, .i = {plus_one}};
    op.out = core_like(c, x);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_rms_norm(vlm_compute *c, vlm_tensor *x, vlm_tensor *w, float eps) {
    return core_norm(c, VLM_OP_RMS_NORM, x, w, NULL, eps, 0);
}
vlm_tensor *vlm_rms_norm_1p(vlm_compute *c, vlm_tensor *x, vlm_tensor *w, float eps) {
    return core_norm(c, VLM_OP_RMS_NORM, x, w, NULL, eps, 1);
}
vlm_tensor *vlm_layer_norm(vlm_compute *c, vlm_tensor *x, vlm_tensor *w, vlm_tensor *b, float eps) {
    return core_norm(c, VLM_OP_LAYER_NORM, x, w, b, eps, 0);
}

vlm_tensor *vlm_softmax(vlm_compute *c, vlm_tensor *a, float scale, float softcap) {
    if (!a) return NULL;
    vlm_op op = {.kind = VLM_OP_SOFTMAX, .a = a, .f = {scale, softcap}};
    op.out = core_like(c, a);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_rope(vlm_compute *c, vlm_tensor *x, vlm_tensor *cos, vlm_tensor *sin) {
    if (!x || !cos || !sin) return NULL;
    CORE_REQUIRE(c, x->ndim == 3 && cos->ndim == 2 && sin->ndim == 2, "rope wants x[T,H,D], cos/sin[T,R]");
    int64_t T = x->shape[0], D = x->shape[2], R = cos->shape[1];
    CORE_REQUIRE(c, cos->shape[0] == T && sin->shape[0] == T && sin->shape[1] == R && R % 2 == 0 && R <= D,
                 "rope table [%lld,%lld] for x[%lld,*,%lld]", (long long)cos->shape[0], (long long)R,
                 (long long)T, (long long)D);
    CORE_REQUIRE(c, cos->dtype == VLM_F32 && sin->dtype == VLM_F32 && vlm_is_contiguous(cos) && vlm_is_contiguous(sin),
                 "rope tables must be contiguous f32");
    vlm_op op = {.kind = VLM_OP_ROPE, .a = x, .b = cos, .c = sin};
    op.out = core_like(c, x);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_attention(vlm_compute *c, vlm_tensor *q, vlm_tensor *k, vlm_tensor *v, const vlm_attn_params *p) {
    if (!q || !k || !v) return NULL;
    CORE_REQUIRE(c, q->ndim == 3 && k->ndim == 3 && v->ndim == 3, "attention wants [T,H,D] tensors");
    int64_t T = q->shape[0], Hq = q->shape[1], D = q->shape[2], S = k->shape[0], Hkv = k->shape[1];
    CORE_REQUIRE(c, k->shape[2] == D && v->shape[0] == S && v->shape[1] == Hkv && Hkv > 0 && Hq % Hkv == 0,
                 "attention shapes q[%lld,%lld,%lld] k[%lld,%lld,%lld] v[%lld,%lld,%lld]", (long long)T,
                 (long long)Hq, (long long)D, (long long)S, (long long)Hkv, (long long)k->shape[2],
                 (long long)v->shape[0], (long long)v->shape[1], (long long)v->shape[2]);
    CORE_REQUIRE(c, q->stride[2] == 1 && k->stride[2] == 1 && v->stride[2] == 1, "attention needs unit inner stride");
    CORE_REQUIRE(c, !(p->causal || p->window) || (p->q_pos && p->k_pos), "causal attention needs positions");
    CORE_REQUIRE(c, !p->q_seg == !p->k_seg && !p->q_group == !p->k_group, "attention: seg/group arrays come in pairs");
    vlm_op op = {.kind = VLM_OP_ATTN, .a = q, .b = k, .c = v, .attn = *p};
    op.out = vlm_new_3d(c, VLM_F32, T, Hq, v->shape[2]);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_concat(vlm_compute *c, vlm_tensor *a, vlm_tensor *b, int dim) {
    if (!a || !b) return NULL;
    CORE_REQUIRE(c, a->ndim == b->ndim && dim >= 0 && dim < a->ndim, "concat ranks/dim");
    int64_t shape[VLM_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) {
        CORE_REQUIRE(c, i == dim || a->shape[i] == b->shape[i], "concat: dim %d differs", i);
        shape[i] = a->shape[i] + (i == dim ? b->shape[i] : 0);
    }
    vlm_op op = {.kind = VLM_OP_CONCAT, .a = a, .b = b, .i = {dim}};
    op.out = vlm_new(c, VLM_F32, a->ndim, shape);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_get_rows(vlm_compute *c, vlm_tensor *table, vlm_tensor *ids) {
    if (!table || !ids) return NULL;
    CORE_REQUIRE(c, table->ndim == 2 && ids->ndim == 1 && (ids->dtype == VLM_I32 || ids->dtype == VLM_I64),
                 "get_rows wants table[V,D], ids[n] i32/i64");
    CORE_REQUIRE(c, core_is_float(table->dtype) && table->stride[1] == 1, "get_rows table");
    vlm_op op = {.kind = VLM_OP_GET_ROWS, .a = table, .b = ids};
    op.out = vlm_new_2d(c, VLM_F32, ids->shape[0], table->shape[1]);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_status vlm_set_rows(vlm_compute *c, vlm_tensor *dst, vlm_tensor *src, vlm_tensor *ids) {
    if (c->failed) return c->err.code;
    if (!dst || !src || !ids) {
        c->failed = 1;
        return vlm_error_set(&c->err, VLM_ERR_ARG, "set_rows: missing input");
    }
    int64_t row = dst->ndim ? vlm_nelem(dst) / dst->shape[0] : 0;
    if (ids->ndim != 1 || src->shape[0] != ids->shape[0] || (ids->dtype != VLM_I32 && ids->dtype != VLM_I64) ||
        vlm_nelem(src) != ids->shape[0] * row || !vlm_is_contiguous(dst)) {
        c->failed = 1;
        return vlm_error_set(&c->err, VLM_ERR_ARG, "set_rows shapes: dst rows of %lld, src %lld rows, ids %lld",
                             (long long)row, (long long)src->shape[0], (long long)ids->shape[0]);
    }
    vlm_op op = {.kind = VLM_OP_SET_ROWS, .a = dst, .b = src, .c = ids};
    return core_run(c, &op) ? VLM_OK : c->err.code;
}

vlm_tensor *vlm_topk(vlm_compute *c, vlm_tensor *a, int k, vlm_tensor **indices) {
    if (!a) return NULL;
    CORE_REQUIRE(c, k > 0 && k <= a->shape[a->ndim - 1], "topk k=%d", k);
    int64_t shape[VLM_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
    shape[a->ndim - 1] = k;
    vlm_op op = {.kind = VLM_OP_TOPK, .a = a, .i = {k}};
    op.out = vlm_new(c, VLM_F32, a->ndim, shape);
    op.aux = vlm_new(c, VLM_I32, a->ndim, shape);
    if (!op.out || !op.aux) return NULL;
    if (indices) *indices = op.aux;
    return core_run(c, &op);
}

vlm_tensor *vlm_argmax(vlm_compute *c, vlm_tensor *a) {
    if (!a) return NULL;
    int64_t shape[VLM_MAX_DIMS];
    for (int i = 0; i < a->ndim - 1; i++) shape[i] = a->shape[i];
    int nd = a->ndim > 1 ? a->ndim - 1 : 1;
    if (a->ndim == 1) shape[0] = 1;
    vlm_op op = {.kind = VLM_OP_ARGMAX, .a = a};
    op.out = vlm_new(c, VLM_I32, nd, shape);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_im2col(vlm_compute *c, vlm_tensor *img, int patch) {
    if (!img) return NULL;
    CORE_REQUIRE(c, (img->ndim == 3 || img->ndim == 4) && patch > 0, "im2col wants [C,H,W] or [N,C,H,W]");
    int64_t N = img->ndim == 4 ? img->shape[0] : 1, C = img->shape[img->ndim - 3], H = img->shape[img->ndim - 2],
            W = img->shape[img->ndim - 1];
    CORE_REQUIRE(c, H % patch == 0 && W % patch == 0, "im2col: %lldx%lld not divisible by patch %d",
                 (long long)H, (long long)W, patch);
    vlm_op op = {.kind = VLM_OP_IM2COL, .a = img, .i = {patch}};
    op.out = vlm_new_2d(c, VLM_F32, N * (H / patch) * (W / patch), C * patch * patch);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_pixel_shuffle(vlm_compute *c, vlm_tensor *x, int r) {
    /* x[N, h, w, C] -> [N, h, w/r, C*r] -> swap -> [N, w/r, h, C*r] -> [N, w/r, h/r, C*r²] -> swap back */
    if (!x) return NULL;
    CORE_REQUIRE(c, x->ndim == 3 && r > 0, "pixel_shuffle wants x[N, S, C]");
    int64_t N = x->shape[0], S = x->shape[1], C = x->shape[2];
    int64_t side = (int64_t)(sqrt((double)S) + 0.5);
    CORE_REQUIRE(c, side * side == S && side % r == 0, "pixel_shuffle: %lld tokens is not a square multiple of %d",
                 (long long)S, r);
    vlm_tensor *t = vlm_reshape_4d(c, vlm_cont(c, x), N, side, side / r, C * r);
    t = vlm_cont(c, vlm_transpose(c, t, 1, 2));
    t = vlm_reshape_4d(c, t, N, side / r, side / r, C * r * r);
    t = vlm_cont(c, vlm_transpose(c, t, 1, 2));
    return vlm_reshape_3d(c, t, N, S / (r * r), C * r * r);
}

vlm_status vlm_to_host_f32(vlm_compute *c, const vlm_tensor *t, float *dst) {
    if (!t) return vlm_error_set(&c->err, VLM_ERR_ARG, "to_host of NULL tensor");
    vlm_tensor *f = vlm_cont(c, (vlm_tensor *)t);
    if (!f) return c->err.code ? c->err.code : VLM_ERR_ARG;
    c->be->download(c->be, dst, f->data, vlm_nbytes(f));
    return VLM_OK;
}

/* ------------------------------------------------------------------ rope tables */

void vlm_rope_inv_freq(float *inv_freq, int dim, float theta) {
    for (int i = 0; i < dim / 2; i++) inv_freq[i] = (float)(1.0 / pow((double)theta, (double)(2 * i) / dim));
}

void vlm_rope_table(float *cos_out, float *sin_out, const float *pos, int n, const float *inv_freq, int n_freq) {
    for (int t = 0; t < n; t++)
        for (int i = 0; i < n_freq; i++) {
            /* f32 product as torch computes it, then cos/sin in double for accuracy */
            float ang = pos[t] * inv_freq[i];
            float cv = (float)cos((double)ang), sv = (float)sin((double)ang);
            cos_out[t * 2 * n_freq + i] = cos_out[t * 2 * n_freq + n_freq + i] = cv;
            sin_out[t * 2 * n_freq + i] = sin_out[t * 2 * n_freq + n_freq + i] = sv;
        }
}

/* ------------------------------------------------------------------ features */

const vlm_tensor *vlm_features_get(const vlm_features *f, const char *name) {
    if (!f) return NULL;
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) return &f->tensors[i];
    return NULL;
}

/* ------------------------------------------------------------------ KV cache */

vlm_status vlm_kv_init(vlm_kv_cache *kv, vlm_backend *be, vlm_dtype dtype, int n_layers, const int *cap,
                       const int *n_kv_heads, const int *head_dim, const int *share, vlm_error *err) {
    memset(kv, 0, sizeof *kv);
    if (dtype != VLM_F32 && dtype != VLM_F16 && dtype != VLM_BF16)
        return vlm_error_set(err, VLM_ERR_ARG, "KV cache dtype must be f32, f16 or bf16");
    kv->be = be;
    kv->n_layers = n_layers;
    kv->layers = (vlm_kv_layer *)calloc((size_t)n_layers, sizeof *kv->layers);
    if (!kv->layers) return vlm_error_set(err, VLM_ERR_OOM, "out of memory for the KV cache");
    size_t total = 0, es = vlm_dtype_size(dtype);
    for (int l = 0; l < n_layers; l++) {
        if (share && share[l] >= 0) {
            if (share[l] >= l) return vlm_error_set(err, VLM_ERR_ARG, "layer %d shares a later layer's cache", l);
            continue;
        }
        if (cap[l] <= 0) return vlm_error_set(err, VLM_ERR_ARG, "KV cache capacity %d for layer %d", cap[l], l);
        total += 2 * (size_t)cap[l] * n_kv_heads[l] * head_dim[l] * es;
    }
    kv->storage = be->alloc(be, total ? total : 1);
    if (!kv->storage) { vlm_kv_free(kv); return vlm_error_set(err, VLM_ERR_OOM, "out of memory for a %zu-byte KV cache", total); }
    char *p = (char *)kv->storage;
    for (int l = 0; l < n_layers; l++) {
        vlm_kv_layer *L = &kv->layers[l];
        if (share && share[l] >= 0) { *L = kv->layers[share[l]]; L->owner = 0; continue; }
        int64_t shape[3] = {cap[l], n_kv_heads[l], head_dim[l]};
        L->k = (vlm_tensor *)malloc(sizeof(vlm_tensor));
        L->v = (vlm_tensor *)malloc(sizeof(vlm_tensor));
        L->slot_pos = (int32_t *)malloc(sizeof(int32_t) * (size_t)cap[l]);
        if (!L->k || !L->v || !L->slot_pos) {
            free(L->k); free(L->v); free(L->slot_pos);
            L->k = L->v = NULL; L->slot_pos = NULL;
            vlm_kv_free(kv);
            return vlm_error_set(err, VLM_ERR_OOM, "out of memory for the KV cache");
        }
        size_t bytes = (size_t)cap[l] * n_kv_heads[l] * head_dim[l] * es;
        *L->k = vlm_tensor_make(dtype, 3, shape, p);
        *L->v = vlm_tensor_make(dtype, 3, shape, p + bytes);
        p += 2 * bytes;
        L->cap = cap[l];
        L->owner = 1;
    }
    vlm_kv_clear(kv);
    return VLM_OK;
}

void vlm_kv_free(vlm_kv_cache *kv) {
    if (kv->layers)
        for (int l = 0; l < kv->n_layers; l++)
            if (kv->layers[l].owner) { free(kv->layers[l].k); free(kv->layers[l].v); free(kv->layers[l].slot_pos); }
    free(kv->layers);
    if (kv->storage) kv->be->free(kv->be, kv->storage);
    memset(kv, 0, sizeof *kv);
}

void vlm_kv_clear(vlm_kv_cache *kv) {
    for (int l = 0; l < kv->n_layers; l++)
        if (kv->layers[l].owner)
            for (int s = 0; s < kv->layers[l].cap; s++) kv->layers[l].slot_pos[s] = -1;
}

void vlm_kv_truncate(vlm_kv_cache *kv, int pos) {
    for (int l = 0; l < kv->n_layers; l++)
        if (kv->layers[l].owner)
            for (int s = 0; s < kv->layers[l].cap; s++)
                if (kv->layers[l].slot_pos[s] >= pos) kv->layers[l].slot_pos[s] = -1;
}

vlm_status vlm_kv_write(vlm_compute *c, vlm_kv_layer *l, vlm_tensor *k_new, vlm_tensor *v_new, const int32_t *pos, int n) {
    if (c->failed) return c->err.code;
    if (n > l->cap) {
        c->failed = 1;
        return vlm_error_set(&c->err, VLM_ERR_CONTEXT, "%d tokens in one step exceed the cache ring of %d", n, l->cap);
    }
    vlm_tensor *slots = vlm_new_1d(c, VLM_I32, n);
    if (!slots) return c->err.code;
    int32_t *host = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)(n ? n : 1));
    if (!host) { c->failed = 1; return vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory"); }
    for (int i = 0; i < n; i++) host[i] = pos[i] % l->cap;
    c->be->upload(c->be, slots->data, host, sizeof(int32_t) * (size_t)n);
    vlm_status s = vlm_set_rows(c, l->k, k_new, slots);
    if (s == VLM_OK) s = vlm_set_rows(c, l->v, v_new, slots);
    if (s != VLM_OK) return s;
    for (int i = 0; i < n; i++) l->slot_pos[host[i]] = pos[i];
    return VLM_OK;
}
