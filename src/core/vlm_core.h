/* src/core — the tensor core.
 *
 * Owns: errors (vlm_error, vlm_status), dtypes and their conversions, the
 * growable byte buffer, tensors and views, the arena, the compute context,
 * the op front-ends (shape checks, then one vlm_op handed to a backend), the
 * backend interface, RoPE tables, named host tensors (vlm_features) and the
 * KV cache. May call: libc only. Knows no file format, no text, no image and
 * no model: everything else in the library is built on it, and a backend
 * (vlm_cpu.c, vlm_cuda.cu) needs nothing but this header.
 */
#ifndef VLM_CORE_H
#define VLM_CORE_H

#include "platform/vlm_platform.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ errors */

typedef enum vlm_status {
    VLM_OK = 0,
    VLM_ERR_IO,          /* file missing, unreadable, mmap failed */
    VLM_ERR_FORMAT,      /* malformed safetensors / JSON / image / tokenizer */
    VLM_ERR_CONFIG,      /* config.json missing a required key or inconsistent */
    VLM_ERR_UNSUPPORTED, /* unknown architecture, dtype or feature */
    VLM_ERR_OOM,         /* allocation failed */
    VLM_ERR_ARG,         /* bad argument from the caller (shape mismatch, ...) */
    VLM_ERR_CONTEXT,     /* prompt or generation does not fit the context */
    VLM_ERR_CANCELLED,   /* the caller asked to stop */
    VLM_ERR_LIMIT,       /* an input needs more than a budget of vlm_limits allows */
} vlm_status;

typedef struct vlm_error {
    vlm_status code;
    char msg[512];
} vlm_error;

/* Records the first error (later ones are ignored until cleared) and returns code. */
vlm_status vlm_error_set(vlm_error *err, vlm_status code, const char *fmt, ...)
#if defined(__MINGW32__) /* C99 formats (%zu) through MinGW's own printf */
    __attribute__((format(gnu_printf, 3, 4)))
#elif defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void vlm_error_clear(vlm_error *err);
const char *vlm_status_name(vlm_status s);

/* Budgets against untrusted inputs (a model folder from the Hub is one: its
 * chat template is a program). One place, sane defaults, overridable: 0 in
 * a field means its default. Exceeding one is VLM_ERR_LIMIT with a message
 * that names the budget. */
typedef struct vlm_limits {
    int64_t template_steps;   /* chat template: evaluation steps (default 10,000,000) */
    size_t template_output;   /* chat template: bytes of output (default 16 MiB) */
    size_t template_memory;   /* chat template: interpreter memory (default 64 MiB) */
    int64_t image_pixels;     /* one image's width x height, checked from its header before
                                 decoding (default 100,000,000) */
} vlm_limits;
vlm_limits vlm_limits_default(void);
/* l with its zero fields replaced by the defaults (l may be NULL). */
vlm_limits vlm_limits_resolve(const vlm_limits *l);

/* Opens every public call that takes an error (the API, the loaders, the
 * processors): err may be NULL (a local one stands in) and starts clear, so
 * a failure's message is always this call's own and a success leaves
 * err->code == VLM_OK. The loader helpers a model calls many times before
 * checking once (vlm_weight, vlm_tokens_push) keep the first error instead. */
#define VLM_ERROR_BEGIN(err)                \
    vlm_error vlm_local_err_;               \
    if (!(err)) (err) = &vlm_local_err_;    \
    vlm_error_clear(err)

/* ------------------------------------------------------------------ dtypes */

typedef enum vlm_dtype {
    VLM_F32 = 0,
    VLM_F16,
    VLM_BF16,
    VLM_I32,
    VLM_I64,
    VLM_U8,
    VLM_BOOL,
    VLM_I8,
    /* Block-quantized weights (byte layouts in the README, "Quantized
     * weights"): blocks of 32 consecutive elements of a row, each an f16
     * scale d then the codes. A row of such a tensor is a whole number of
     * blocks (the last one zero-padded): the last dim's stride is 1 and the
     * next stride counts padded elements (vlm_tensor_make does this). */
    VLM_Q8_0, /* d, 32 int8 q:                              x = d * q */
    VLM_Q4_0, /* d, 16 bytes, byte j = q[j] | q[j+16] << 4:  x = d * (q - 8) */
    /* q4_0's codes with a zero point per block (AWQ's form, which repacks
     * into it exactly): d, the 16 code bytes as q4_0's, then z (0..15). */
    VLM_Q4_Z, /* d, 16 bytes as q4_0, u8 z:                 x = d * (q - z) */
    /* The same blocks with each group of 8 rows interleaved block by block
     * (README: the 8 scales, then the codes 4 per row in turn), so that a
     * kernel reads 8 rows' codes and scales in whole vectors: the CPU's
     * compute layout, made at load (vlm_repack_r8) and stored as such by
     * `vlm quantize`; row counts and row views come in multiples of 8. */
    VLM_Q8_0R8,
    VLM_Q4_0R8,
    VLM_Q4_ZR8, /* the 8 scales, the codes as Q4_0R8's, then the 8 zero points */
    VLM_NTYPES
} vlm_dtype;

size_t vlm_dtype_size(vlm_dtype t);  /* bytes per element; block types: per block */
int vlm_dtype_block(vlm_dtype t);    /* elements per block: 32 for block types, else 1 */
/* Bytes that n consecutive elements of a row take (block types: whole
 * blocks, so an offset of n elements is exact when n is a multiple of 32). */
size_t vlm_dtype_bytes(vlm_dtype t, int64_t n);
/* The quantized formats' reference (scalar) codecs, also used at load:
 * n floats into ceil(n / 32) blocks of t (the last block's missing
 * elements taken as 0), and back. t is VLM_Q8_0, VLM_Q4_0 or VLM_Q4_Z. */
void vlm_quantize_row(vlm_dtype t, const float *x, int64_t n, void *blocks);
void vlm_dequantize_row(vlm_dtype t, const void *blocks, int64_t n, float *x);
/* Rows interleaved per group: 8 for the R8 types, else 1; and the block
 * format an R8 type interleaves (t itself for the others). */
int vlm_dtype_rows(vlm_dtype t);
vlm_dtype vlm_dtype_unpacked(vlm_dtype t);
/* 8 consecutive rows of K elements of a block type (each
 * vlm_dtype_bytes(t, K) bytes) into one group of its R8 layout, and back. */
void vlm_repack_r8(vlm_dtype t, const void *rows, int64_t K, void *group);
void vlm_unpack_r8(vlm_dtype t, const void *group, int64_t K, void *rows);
/* AWQ checkpoints (AutoAWQ's GEMM layout, as the Hub publishes them): a
 * linear of K inputs and N outputs is qweight int32 [K, N/8] and qzeros
 * int32 [K/G, N/8], 8 4-bit values per word (AutoAWQ's nibble order), and
 * scales f16 [K/G, N]; w[n][k] = scales[k/G][n] * (q[k][n] - z[k/G][n]).
 * Rows [8 j0, 8 j1) of w into dst as VLM_Q4_Z rows or VLM_Q4_ZR8 groups,
 * exactly (the scale copied, the zero point kept). G a multiple of 32 and
 * K of G; the arrays may be unaligned. */
void vlm_awq_repack(vlm_dtype t, const void *qweight, const void *qzeros, const void *scales, int64_t K,
                    int64_t N, int64_t G, int64_t j0, int64_t j1, void *dst);
/* "q8_0" / "q4_0" -> the dtype; -1 for any other name. */
int vlm_quant_from_name(const char *name, vlm_dtype *out);
const char *vlm_dtype_name(vlm_dtype t); /* safetensors spelling: "F32", "BF16", ... */
int vlm_dtype_from_name(const char *name, vlm_dtype *out); /* 0 on success */

float vlm_f16_to_f32(uint16_t h);
uint16_t vlm_f32_to_f16(float f);    /* round to nearest even */
float vlm_bf16_to_f32(uint16_t h);
uint16_t vlm_f32_to_bf16(float f);   /* round to nearest even */

/* ------------------------------------------------------------------ text helpers */

/* A growable byte string, always NUL-terminated after its n bytes. Zero it
 * to start; free(p) when done. A failed allocation sets oom and makes every
 * later append a no-op, so a caller checks once at the end. */
typedef struct vlm_buf {
    char *p;
    size_t n, cap;
    int oom;
} vlm_buf;
int vlm_buf_add(vlm_buf *b, const void *s, size_t n); /* 0, or -1 once oom */
int vlm_buf_str(vlm_buf *b, const char *s);
/* UTF-8 encoding of code point cp (< 0x110000) into out[0..4); returns its length. */
int vlm_utf8_encode(uint32_t cp, char *out);
/* A 64-bit hash of n bytes (not cryptographic: for caches keyed by content). */
uint64_t vlm_hash64(const void *data, size_t n, uint64_t seed);

/* ------------------------------------------------------------------ tensors */

#define VLM_MAX_DIMS 6

typedef struct vlm_tensor {
    vlm_dtype dtype;
    int ndim;
    int64_t shape[VLM_MAX_DIMS];
    int64_t stride[VLM_MAX_DIMS]; /* in elements */
    void *data;                   /* backend memory (host memory for the CPU backend) */
} vlm_tensor;

int64_t vlm_nelem(const vlm_tensor *t);
size_t vlm_nbytes(const vlm_tensor *t); /* of a contiguous tensor of this shape */
int vlm_is_contiguous(const vlm_tensor *t);
/* Fills a tensor header for contiguous data (does not allocate). */
vlm_tensor vlm_tensor_make(vlm_dtype dtype, int ndim, const int64_t *shape, void *data);
/* Element access for tests and host-side glue; converts to/from f32. */
float vlm_get_f32(const vlm_tensor *t, int64_t flat_index);   /* flat index in logical order */
int64_t vlm_get_i64(const vlm_tensor *t, int64_t flat_index);

/* ------------------------------------------------------------------ arena */

/* Bump allocator in chunks. Reset keeps one chunk as large as the high-water
 * mark, so after the first pass a forward pass allocates nothing. */
typedef struct vlm_arena_chunk vlm_arena_chunk;
typedef struct vlm_arena {
    vlm_arena_chunk *head;
    size_t used, high_water, total_reserved;
} vlm_arena;

void *vlm_arena_alloc(vlm_arena *a, size_t nbytes); /* 64-byte aligned, NULL on OOM */
/* Mark/release: free everything allocated after a mark (per-layer scratch). */
typedef struct vlm_arena_mark {
    vlm_arena_chunk *chunk;
    size_t chunk_used, used;
} vlm_arena_mark;
vlm_arena_mark vlm_arena_get_mark(const vlm_arena *a);
void vlm_arena_release(vlm_arena *a, vlm_arena_mark m);
void vlm_arena_reset(vlm_arena *a);
void vlm_arena_free(vlm_arena *a);

/* ------------------------------------------------------------------ ops */

typedef enum vlm_op_kind {
    VLM_OP_NONE = 0,
    VLM_OP_CPY,        /* out = convert/copy of a (any layout, any dtype) */
    VLM_OP_MATMUL,     /* out[..., M, N] = a[..., M, K] . b[..., N, K]^T (+ bias c[N]); a, b I8: out I32, exact */
    VLM_OP_MATMUL_ID,  /* out[T, k, N] = a[T or T*k, K] . b[ids[T,k]][N, K]^T: MoE experts */
    VLM_OP_ADD,        /* out = a + b, b broadcast to a (numpy rules, b's dims size 1 or equal) */
    VLM_OP_MUL,        /* out = a * b, broadcast as ADD */
    VLM_OP_SCALE,      /* out = a * p.f[0] + p.f[1] */
    VLM_OP_UNARY,      /* out = f(a), f = p.i[0] (vlm_unary_op) */
    VLM_OP_GLU,        /* out = act(a) * b, act = p.i[0] (vlm_unary_op) */
    VLM_OP_RMS_NORM,   /* over last dim; w = b (may be NULL); p.f[0] eps; p.i[0] 1 = (1+w) */
    VLM_OP_LAYER_NORM, /* over last dim; w = b, bias = c (either may be NULL); p.f[0] eps */
    VLM_OP_SOFTMAX,    /* over last dim of a*p.f[0]; p.f[1] > 0: softcap tanh(x/cap)*cap first */
    VLM_OP_ROPE,       /* a[T, H, D], cos = b[T, R], sin = c[T, R]: rotate-half on dims [0, R) */
    VLM_OP_ATTN,       /* see vlm_attn_params */
    VLM_OP_CONCAT,     /* out = cat(a, b) along dim p.i[0] */
    VLM_OP_GET_ROWS,   /* out[n, D] (f32) = a[ids = b[n]] with a[V, D] any float dtype */
    VLM_OP_SET_ROWS,   /* in place: a[ids = c[n]] = b[n, ...], converted to a's dtype */
    VLM_OP_TOPK,       /* out = top p.i[0] values of a along last dim (descending); indices in aux */
    VLM_OP_ARGMAX,     /* out[...] (i32) = argmax of a along last dim */
    VLM_OP_IM2COL,     /* a[C, H, W] -> out[(H/P)*(W/P), C*P*P], P = p.i[0], row-major patches */
    VLM_OP_COUNT
} vlm_op_kind;

typedef enum vlm_unary_op {
    VLM_UNARY_SILU = 0,
    VLM_UNARY_GELU,      /* exact erf GELU */
    VLM_UNARY_GELU_TANH, /* tanh approximation ("gelu_pytorch_tanh") */
    VLM_UNARY_RELU,
    VLM_UNARY_TANH,
    VLM_UNARY_SIGMOID,
    VLM_UNARY_EXP,
    VLM_UNARY_SOFTCAP,   /* tanh(x / cap) * cap, cap = op param f[0] */
    VLM_UNARY_SQR,
    VLM_UNARY_SQRT,
    VLM_UNARY_NEG,
} vlm_unary_op;

/* Which keys a query may see. A key j is visible to query i when
 *   k_pos[j] >= 0 (a live cache slot), and
 *   if seg: q_seg[i] == k_seg[j]  (block-diagonal packed sequences), and
 *   if causal: k_pos[j] <= q_pos[i], or q_group[i] == k_group[j] >= 0
 *              (bidirectional spans such as one image's tokens), and
 *   if window > 0: q_pos[i] - k_pos[j] < window.
 * Without causal, every key that passes the segment test is visible.
 * Positions are absolute token indices in the sequence (not RoPE positions).
 * All index arrays are host int32 arrays owned by the caller for the call. */
typedef struct vlm_attn_params {
    float scale;          /* applied to q.k */
    float softcap;        /* > 0: tanh soft-capping of scores */
    int causal;
    int window;           /* sliding window size, 0 = none */
    const int32_t *q_pos, *k_pos;     /* required when causal or window; k_pos may mark -1 = empty */
    const int32_t *q_seg, *k_seg;     /* optional: packed variable-length sequences */
    const int32_t *q_group, *k_group; /* optional: bidirectional spans (-1 = none) */
} vlm_attn_params;

typedef struct vlm_op {
    vlm_op_kind kind;
    vlm_tensor *out;
    vlm_tensor *a, *b, *c;
    vlm_tensor *aux;      /* second output (TOPK indices) or ids (MATMUL_ID) */
    float f[4];
    int32_t i[4];
    vlm_attn_params attn; /* ATTN: q = a, k = b, v = c */
} vlm_op;

/* A backend executes one op at a time on tensors in its own memory. */
/* Time and work per op kind, summed while a backend's `profile` points here
 * (benchmarks: `vlm bench --profile`). The figures are only meaningful while
 * one thread computes on the backend. flops: 2*M*N*K for MATMUL and
 * MATMUL_ID (the products' multiply-adds), 0 for other ops. weight_bytes:
 * the bytes of the weights (b) those products read: all of b for MATMUL,
 * for MATMUL_ID min(T*k, E) experts' worth (exact for one token). */
typedef struct vlm_profile {
    double seconds[VLM_OP_COUNT];
    double flops[VLM_OP_COUNT];
    double weight_bytes[VLM_OP_COUNT];
    int64_t calls[VLM_OP_COUNT];
} vlm_profile;
const char *vlm_op_name(vlm_op_kind kind); /* "matmul", "attn", ... */

typedef struct vlm_backend {
    const char *name;
    void *impl;
    vlm_status (*exec)(struct vlm_backend *be, const vlm_op *op, vlm_error *err);
    /* Memory for activations and caches. The CPU backend uses host memory. */
    void *(*alloc)(struct vlm_backend *be, size_t nbytes);
    void (*free)(struct vlm_backend *be, void *p);
    /* Copies between host and backend memory (memcpy on the CPU). */
    void (*upload)(struct vlm_backend *be, void *dst, const void *src, size_t nbytes);
    void (*download)(struct vlm_backend *be, void *dst, const void *src, size_t nbytes);
    void (*destroy)(struct vlm_backend *be);
    int n_threads;
    const char *kernels;     /* the kernel variant running the ops, e.g. "avx2" */
    const char *compute;     /* "f32" or "bf16" (vlm_cpu_params.compute) */
    vlm_profile *profile;    /* NULL, or where each op's time and work is added */
} vlm_backend;

/* vlm_cpu.c. The kernels are compiled for several instruction sets in one
 * build and chosen at run time: "avx2" (AVX2+FMA+F16C) where the CPU has it,
 * else "scalar" (portable C). kernels: NULL or "" for $VLM_KERNELS if set,
 * else "auto" (the fastest the CPU runs); a name forces that variant (an
 * error if unknown or if the CPU lacks its instructions). */
typedef struct vlm_cpu_params {
    int n_threads;           /* <= 0: one per core */
    const char *kernels;
    /* "f32": every matmul in f32 (exact). "bf16": each matmul's inputs
     * rounded to bf16 (ties to even), products summed in f32, as bf16
     * dot-product hardware does; elsewhere (norms, softmax, RoPE, residuals)
     * f32. NULL or "auto": bf16 where the chosen kernels have bf16
     * dot-product instructions, else f32. */
    const char *compute;
} vlm_cpu_params;
vlm_backend *vlm_backend_cpu_new(const vlm_cpu_params *p, vlm_error *err);
/* Shorthand: default kernels, n_threads <= 0: one per core. */
vlm_backend *vlm_backend_cpu(int n_threads, vlm_error *err);
/* The variant a CPU backend made now with default kernels would run
 * ($VLM_KERNELS, else the fastest this CPU has). */
const char *vlm_cpu_kernels(void);
/* The i-th variant this build has that the CPU runs, fastest first; NULL
 * past the last. */
const char *vlm_cpu_kernel_name(int i);
/* What a variant runs on each path (lines "path  kernel"), NULL if unknown. */
const char *vlm_cpu_kernel_paths(const char *name);
/* vlm_cuda.cu, built with `make CUDA=1`. */
vlm_backend *vlm_backend_cuda(int device, vlm_error *err);

/* The CPU backend's thread pool, usable by host-side code (preprocessing):
 * fn(arg, begin, end, thread) over chunks of [0, n). Safe from any thread;
 * waits while an op runs on the backend; a call nested in one of its own
 * regions runs inline. */
typedef void (*vlm_parallel_fn)(void *arg, int64_t begin, int64_t end, int thread);
void vlm_cpu_parallel_for(vlm_backend *cpu, int64_t n, int64_t min_chunk, vlm_parallel_fn fn, void *arg);

/* Per-context compute state: arena for activations, the backend, the first
 * error. abort (optional) is asked before every op: non-zero stops the
 * computation with VLM_ERR_CANCELLED (a vision tower or a long prefill stops
 * within one op, not at the end). */
typedef struct vlm_compute {
    vlm_backend *be;
    vlm_arena arena;
    vlm_error err;
    int failed;
    int (*abort)(void *user);
    void *abort_user;
} vlm_compute;

void vlm_compute_init(vlm_compute *c, vlm_backend *be);
void vlm_compute_reset(vlm_compute *c); /* frees all activations, keeps memory */
void vlm_compute_free(vlm_compute *c);

/* New tensor in the arena (uninitialized), or copied from host data. */
vlm_tensor *vlm_new(vlm_compute *c, vlm_dtype dtype, int ndim, const int64_t *shape);
vlm_tensor *vlm_new_1d(vlm_compute *c, vlm_dtype dtype, int64_t n0);
vlm_tensor *vlm_new_2d(vlm_compute *c, vlm_dtype dtype, int64_t n0, int64_t n1);
vlm_tensor *vlm_new_3d(vlm_compute *c, vlm_dtype dtype, int64_t n0, int64_t n1, int64_t n2);
vlm_tensor *vlm_from_host(vlm_compute *c, vlm_dtype dtype, int ndim, const int64_t *shape, const void *host);
/* Copies a tensor's contents to host memory as f32 (any dtype / layout). */
vlm_status vlm_to_host_f32(vlm_compute *c, const vlm_tensor *t, float *dst);

/* Views: no copy, share data. */
vlm_tensor *vlm_reshape(vlm_compute *c, vlm_tensor *t, int ndim, const int64_t *shape); /* t contiguous */
vlm_tensor *vlm_reshape_2d(vlm_compute *c, vlm_tensor *t, int64_t n0, int64_t n1);
vlm_tensor *vlm_reshape_3d(vlm_compute *c, vlm_tensor *t, int64_t n0, int64_t n1, int64_t n2);
vlm_tensor *vlm_reshape_4d(vlm_compute *c, vlm_tensor *t, int64_t n0, int64_t n1, int64_t n2, int64_t n3);
vlm_tensor *vlm_permute(vlm_compute *c, vlm_tensor *t, const int *perm); /* out dim i = t dim perm[i] */
vlm_tensor *vlm_transpose(vlm_compute *c, vlm_tensor *t, int d0, int d1);
vlm_tensor *vlm_slice(vlm_compute *c, vlm_tensor *t, int dim, int64_t start, int64_t len);
vlm_tensor *vlm_index(vlm_compute *c, vlm_tensor *t, int64_t i); /* t[i], drops dim 0 */
/* Splits the last dim (unit stride) into [n0, n1]; works on strided rows (e.g. a slice of fused qkv). */
vlm_tensor *vlm_split_last(vlm_compute *c, vlm_tensor *t, int64_t n0, int64_t n1);

/* Ops. Outputs are f32 unless stated. */
vlm_tensor *vlm_cont(vlm_compute *c, vlm_tensor *a);                      /* contiguous f32 copy */
vlm_tensor *vlm_cast(vlm_compute *c, vlm_tensor *a, vlm_dtype to);        /* contiguous copy in dtype */
vlm_status vlm_copy(vlm_compute *c, vlm_tensor *dst, vlm_tensor *src);    /* into an existing tensor, same shape */
vlm_tensor *vlm_matmul(vlm_compute *c, vlm_tensor *a, vlm_tensor *w);     /* a . w^T; I8 x I8 (2-D): exact I32 */
vlm_tensor *vlm_linear(vlm_compute *c, vlm_tensor *x, vlm_tensor *w, vlm_tensor *bias); /* bias may be NULL */
vlm_tensor *vlm_matmul_id(vlm_compute *c, vlm_tensor *x, vlm_tensor *w_experts, vlm_tensor *ids);
vlm_tensor *vlm_add(vlm_compute *c, vlm_tensor *a, vlm_tensor *b);
vlm_tensor *vlm_mul(vlm_compute *c, vlm_tensor *a, vlm_tensor *b);
vlm_tensor *vlm_scale(vlm_compute *c, vlm_tensor *a, float s);
vlm_tensor *vlm_scale_bias(vlm_compute *c, vlm_tensor *a, float s, float b);
vlm_tensor *vlm_unary(vlm_compute *c, vlm_tensor *a, vlm_unary_op f);
vlm_tensor *vlm_softcap(vlm_compute *c, vlm_tensor *a, float cap);
vlm_tensor *vlm_glu(vlm_compute *c, vlm_tensor *gate, vlm_tensor *up, vlm_unary_op act);
vlm_tensor *vlm_rms_norm(vlm_compute *c, vlm_tensor *x, vlm_tensor *w, float eps);
vlm_tensor *vlm_rms_norm_1p(vlm_compute *c, vlm_tensor *x, vlm_tensor *w, float eps); /* (1+w)*x̂ */
vlm_tensor *vlm_layer_norm(vlm_compute *c, vlm_tensor *x, vlm_tensor *w, vlm_tensor *b, float eps);
vlm_tensor *vlm_softmax(vlm_compute *c, vlm_tensor *a, float scale, float softcap);
vlm_tensor *vlm_rope(vlm_compute *c, vlm_tensor *x, vlm_tensor *cos, vlm_tensor *sin);
vlm_tensor *vlm_attention(vlm_compute *c, vlm_tensor *q, vlm_tensor *k, vlm_tensor *v, const vlm_attn_params *p);
vlm_tensor *vlm_concat(vlm_compute *c, vlm_tensor *a, vlm_tensor *b, int dim);
vlm_tensor *vlm_get_rows(vlm_compute *c, vlm_tensor *table, vlm_tensor *ids);
vlm_status vlm_set_rows(vlm_compute *c, vlm_tensor *dst, vlm_tensor *src, vlm_tensor *ids);
vlm_tensor *vlm_topk(vlm_compute *c, vlm_tensor *a, int k, vlm_tensor **indices); /* indices i32 */
vlm_tensor *vlm_argmax(vlm_compute *c, vlm_tensor *a);
vlm_tensor *vlm_im2col(vlm_compute *c, vlm_tensor *img, int patch);

/* Composite helpers built from the ops above. */
/* Pixel shuffle (space-to-depth) of x[N, S, C], S a square: -> [N, S/r², C*r²]
 * with the channel order of Idefics3 and InternVL (ps_version v2), which agree. */
vlm_tensor *vlm_pixel_shuffle(vlm_compute *c, vlm_tensor *x, int r);

/* ------------------------------------------------------------------ rope tables */

/* Standard inverse frequencies theta^(-2i/dim), i < dim/2. */
void vlm_rope_inv_freq(float *inv_freq, int dim, float theta);
/* cos/sin tables [n, 2*n_freq] in rotate-half layout (the two halves repeat)
 * for one position stream: angle[t][i] = pos[t] * inv_freq[i]. */
void vlm_rope_table(float *cos_out, float *sin_out, const float *pos, int n,
                    const float *inv_freq, int n_freq);

/* ------------------------------------------------------------------ features */

/* Named tensors as an HF processor returns them ("pixel_values",
 * "image_grid_thw", ...). Tensors are host memory. */
#define VLM_MAX_FEATURES 16
typedef struct vlm_features {
    int n;
    const char *names[VLM_MAX_FEATURES];
    vlm_tensor tensors[VLM_MAX_FEATURES];
} vlm_features;
const vlm_tensor *vlm_features_get(const vlm_features *f, const char *name);


/* ------------------------------------------------------------------ KV cache */

/* One layer's keys and values in a ring of `cap` slots. A token at absolute
 * position p lives in slot p % cap; slot_pos[s] is the position stored in
 * slot s, or -1 while empty. A full-attention layer has cap = n_ctx; a
 * sliding-window layer has cap = window + max tokens per forward call, so a
 * chunk can be written before it is attended without losing keys it needs. */
typedef struct vlm_kv_layer {
    vlm_tensor *k, *v;  /* [cap, n_kv_heads, head_dim] in the cache dtype */
    int32_t *slot_pos;  /* host array [cap] */
    int cap;
    int owner;          /* 0: shares an earlier layer's cache */
} vlm_kv_layer;

typedef struct vlm_kv_cache {
    int n_layers;
    vlm_kv_layer *layers;
    vlm_backend *be;
    void *storage;      /* one backend allocation for all layers */
} vlm_kv_cache;

/* Per layer: cap[l], n_kv_heads[l], head_dim[l] (k and v same), share[l] = index
 * of an earlier layer whose cache layer l reuses, or -1. */
vlm_status vlm_kv_init(vlm_kv_cache *kv, vlm_backend *be, vlm_dtype dtype, int n_layers,
                       const int *cap, const int *n_kv_heads, const int *head_dim,
                       const int *share, vlm_error *err);
void vlm_kv_free(vlm_kv_cache *kv);
void vlm_kv_clear(vlm_kv_cache *kv);
/* Writes k_new/v_new [n, n_kv_heads, head_dim] for positions pos[0..n) (host).
 * Fails when n > cap. */
vlm_status vlm_kv_write(vlm_compute *c, vlm_kv_layer *l, vlm_tensor *k_new, vlm_tensor *v_new,
                        const int32_t *pos, int n);
/* Drops all positions >= pos (rewind for multi-turn edits). */
void vlm_kv_truncate(vlm_kv_cache *kv, int pos);

#ifdef __cplusplus
}
#endif

#endif /* VLM_CORE_H */
