/* Op front-ends: check shapes, allocate the output, hand one vlm_op to the
 * backend. RoPE tables. */
#include "core/vlm_core.h"
#include "core/core_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ op front-ends */

const char *vlm_op_name(vlm_op_kind kind) {
    static const char *const names[VLM_OP_COUNT] = {
        "none", "cpy", "matmul", "matmul_id", "add", "mul", "scale", "unary", "glu", "rms_norm", "layer_norm",
        "softmax", "rope", "attn", "concat", "get_rows", "set_rows", "topk", "argmax", "im2col"};
    return (unsigned)kind < VLM_OP_COUNT && names[kind] ? names[kind] : "?";
}

static void core_profile(vlm_profile *p, const vlm_op *op, double seconds) {
    double flops = 0, bytes = 0;
    if (op->kind == VLM_OP_MATMUL || op->kind == VLM_OP_MATMUL_ID) {
        const vlm_tensor *w = op->b;
        double rows = (double)vlm_nelem(op->out) / (double)w->shape[w->ndim - 2];
        double per_matrix = (double)w->shape[w->ndim - 2] * (double)vlm_dtype_bytes(w->dtype, w->shape[w->ndim - 1]);
        flops = 2.0 * rows * (double)w->shape[w->ndim - 2] * (double)w->shape[w->ndim - 1];
        if (op->kind == VLM_OP_MATMUL) bytes = (double)vlm_nbytes(w);
        else {
            double chosen = (double)vlm_nelem(op->aux), experts = (double)w->shape[0];
            bytes = (chosen < experts ? chosen : experts) * per_matrix;
        }
    }
    p->weight_bytes[op->kind] += bytes;
    p->seconds[op->kind] += seconds;
    p->flops[op->kind] += flops;
    p->calls[op->kind]++;
}

static vlm_tensor *core_run(vlm_compute *c, vlm_op *op) {
    if (c->failed) return NULL;
    if (c->abort && c->abort(c->abort_user)) {
        c->failed = 1;
        vlm_error_set(&c->err, VLM_ERR_CANCELLED, "cancelled");
        return NULL;
    }
    vlm_profile *prof = c->be->profile;
    double t0 = prof ? vlm_time_s() : 0;
    vlm_status s = c->be->exec(c->be, op, &c->err);
    if (s != VLM_OK) { c->failed = 1; return NULL; }
    if (prof) core_profile(prof, op, vlm_time_s() - t0);
    return op->out ? op->out : op->a;
}

static int core_is_float(vlm_dtype t) { return t == VLM_F32 || t == VLM_F16 || t == VLM_BF16; }
/* A weight a matmul or row lookup can read: float, or block-quantized with
 * whole-block rows. */
static int core_is_weight(const vlm_tensor *w) {
    if (core_is_float(w->dtype)) return 1;
    int64_t b = vlm_dtype_block(w->dtype);
    return b > 1 && w->ndim >= 2 && w->stride[w->ndim - 1] == 1 && w->stride[w->ndim - 2] % b == 0 &&
           w->shape[w->ndim - 2] % vlm_dtype_rows(w->dtype) == 0;
}

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
    /* int8 x int8 -> exact int32 sums: 2-D, no bias (the quantized formats' engine) */
    int i8 = x->dtype == VLM_I8 && w->dtype == VLM_I8;
    CORE_REQUIRE(c, (core_is_float(x->dtype) && core_is_weight(w)) || (i8 && w->ndim == 2 && !bias && K <= (1 << 17)),
                 "matmul of %s x %s (float x, float or quantized w; or 2-D int8 ones with K <= 131072 and no bias)",
                 vlm_dtype_name(x->dtype), vlm_dtype_name(w->dtype));
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
    op.out = vlm_new(c, i8 ? VLM_I32 : VLM_F32, x->ndim, shape);
    return op.out ? core_run(c, &op) : NULL;
}

vlm_tensor *vlm_matmul_id(vlm_compute *c, vlm_tensor *x, vlm_tensor *w, vlm_tensor *ids) {
    if (!x || !w || !ids) return NULL;
    CORE_REQUIRE(c, w->ndim == 3 && x->ndim == 2 && ids->ndim == 2 && ids->dtype == VLM_I32,
                 "matmul_id wants x[T,K] or x[T*k,K], w[E,N,K], ids[T,k] i32");
    int64_t T = ids->shape[0], k = ids->shape[1], N = w->shape[1], K = w->shape[2];
    CORE_REQUIRE(c, x->shape[1] == K && (x->shape[0] == T || x->shape[0] == T * k), "matmul_id shapes");
    CORE_REQUIRE(c, vlm_is_contiguous(x) && vlm_is_contiguous(w) && vlm_is_contiguous(ids), "matmul_id needs contiguous inputs");
    CORE_REQUIRE(c, core_is_float(x->dtype) && core_is_weight(w), "matmul_id of %s x %s", vlm_dtype_name(x->dtype),
                 vlm_dtype_name(w->dtype));
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
    CORE_REQUIRE(c, core_is_weight(table) && table->stride[1] == 1, "get_rows table");
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
