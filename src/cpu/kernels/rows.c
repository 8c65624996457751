/* Ops that move rows: concat, get/set rows, top-k, argmax, im2col. */
#include "cpu/kernels/kernels.h"

/* ------------------------------------------------------------------ concat, rows, topk, argmax, im2col */

static void cpu_concat_rows(void *p, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    int dim = A->op->i[0], nd = A->out.ndim;
    const vlm_tensor *a = &A->a, *b = &A->b;
    int64_t D = cpu_lastdim(&A->out);
    for (int64_t r = r0; r < r1; r++) {
        float *o = (float *)A->out.data + r * D;
        if (dim == nd - 1) {
            int64_t Da = cpu_lastdim(a), Db = cpu_lastdim(b);
            cpu_load(o, a->data, a->dtype, cpu_row_off(a, r), cpu_laststride(a), Da);
            cpu_load(o + Da, b->data, b->dtype, cpu_row_off(b, r), cpu_laststride(b), Db);
        } else {
            /* multi-index of out row r; pick a or b by the index at dim */
            int64_t rr = r, ia = 0, ib = 0, use_b = 0;
            for (int d = nd - 2; d >= 0; d--) {
                int64_t i = rr % A->out.shape[d];
                rr /= A->out.shape[d];
                if (d == dim && i >= a->shape[d]) { use_b = 1; ib += (i - a->shape[d]) * b->stride[d]; }
                else if (d == dim) ia += i * a->stride[d];
                else { ia += i * a->stride[d]; ib += i * b->stride[d]; }
            }
            if (use_b) cpu_load(o, b->data, b->dtype, ib, cpu_laststride(b), D);
            else cpu_load(o, a->data, a->dtype, ia, cpu_laststride(a), D);
        }
    }
}

CPU_KFN vlm_status cpu_op_concat(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    (void)err;
    cpu_rows_arg A = {.ctx = ctx, .op = op, .a = *op->a, .b = *op->b, .out = *op->out};
    if (vlm_nelem(&A.out) == 0) return VLM_OK;
    cpu_parallel(ctx, cpu_nrows(&A.out), cpu_min_rows(cpu_lastdim(&A.out), 1), cpu_concat_rows, &A);
    return VLM_OK;
}

CPU_KFN vlm_status cpu_op_get_rows(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    const vlm_tensor *tab = op->a, *ids = op->b;
    int64_t V = tab->shape[0], D = tab->shape[1], n = ids->shape[0];
    float *out = (float *)op->out->data;
    for (int64_t r = 0; r < n; r++) {
        int64_t id = cpu_get_int(ids->data, ids->dtype, r * ids->stride[0]);
        if (id < 0 || id >= V)
            return vlm_error_set(err, VLM_ERR_ARG, "get_rows: id %lld out of range [0, %lld)", (long long)id, (long long)V);
    }
    if (vlm_dtype_rows(tab->dtype) == 8) { /* the row's group to f32, then the row */
        if (cpu_reserve(ctx, (size_t)(8 * D))) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
        for (int64_t r = 0; r < n; r++) {
            int64_t id = cpu_get_int(ids->data, ids->dtype, r * ids->stride[0]);
            cpu_rows_to_f32(ctx->tscratch[0], D, (const char *)tab->data, tab->dtype, tab->stride[0], id - id % 8, 8, D, 0);
            memcpy(out + r * D, ctx->tscratch[0] + id % 8 * D, sizeof(float) * (size_t)D);
        }
        return VLM_OK;
    }
    for (int64_t r = 0; r < n; r++) {
        int64_t id = cpu_get_int(ids->data, ids->dtype, r * ids->stride[0]);
        cpu_load(out + r * D, tab->data, tab->dtype, id * tab->stride[0], 1, D);
    }
    return VLM_OK;
}

CPU_KFN vlm_status cpu_op_set_rows(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    const vlm_tensor *dst = op->a, *src = op->b, *ids = op->c;
    int64_t R = dst->shape[0], n = ids->shape[0];
    int64_t row = n ? vlm_nelem(src) / n : 0;
    for (int64_t r = 0; r < n; r++) {
        int64_t id = cpu_get_int(ids->data, ids->dtype, r * ids->stride[0]);
        if (id < 0 || id >= R)
            return vlm_error_set(err, VLM_ERR_ARG, "set_rows: id %lld out of range [0, %lld)", (long long)id, (long long)R);
    }
    int64_t Ds = cpu_lastdim(src), ss = cpu_laststride(src), nsr = cpu_nrows(src);
    if (cpu_reserve(ctx, (size_t)Ds)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    float *buf = ctx->tscratch[0];
    int same = src->dtype == dst->dtype && ss == 1;
    size_t es = vlm_dtype_size(dst->dtype);
    for (int64_t sr = 0; sr < nsr; sr++) {
        int64_t f0 = sr * Ds, so = cpu_row_off(src, sr);
        if (row % Ds == 0 || Ds == 0) {
            int64_t id = cpu_get_int(ids->data, ids->dtype, (f0 / row) * ids->stride[0]);
            int64_t doff = id * row + f0 % row;
            if (same) memcpy((char *)dst->data + doff * (int64_t)es, (const char *)src->data + so * (int64_t)es, (size_t)Ds * es);
            else {
                cpu_load(buf, src->data, src->dtype, so, ss, Ds);
                cpu_store(dst->data, dst->dtype, doff, 1, buf, Ds);
            }
        } else {
            cpu_load(buf, src->data, src->dtype, so, ss, Ds);
            for (int64_t i = 0; i < Ds; i++) {
                int64_t f = f0 + i;
                int64_t id = cpu_get_int(ids->data, ids->dtype, (f / row) * ids->stride[0]);
                cpu_store(dst->data, dst->dtype, id * row + f % row, 1, buf + i, 1);
            }
        }
    }
    return VLM_OK;
}

CPU_KFN void cpu_topk_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    int64_t D = cpu_lastdim(&A->a), k = A->op->i[0];
    float *buf = A->ctx->tscratch[tid];
    for (int64_t r = r0; r < r1; r++) {
        const float *x = cpu_row(&A->a, r, buf);
        float *ov = (float *)A->out.data + r * k;
        int32_t *oi = (int32_t *)A->op->aux->data + r * k;
        int64_t n = 0;
        for (int64_t i = 0; i < D; i++) {
            float v = x[i];
            if (v != v) continue;
            if (n == k && !(v > ov[k - 1])) continue;
            int64_t j = n < k ? n++ : k - 1;
            while (j > 0 && v > ov[j - 1]) { ov[j] = ov[j - 1]; oi[j] = oi[j - 1]; j--; }
            ov[j] = v;
            oi[j] = (int32_t)i;
        }
        for (; n < k; n++) { ov[n] = NAN; oi[n] = 0; }
    }
}

CPU_KFN void cpu_argmax_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    int64_t D = cpu_lastdim(&A->a);
    float *buf = A->ctx->tscratch[tid];
    for (int64_t r = r0; r < r1; r++) {
        const float *x = cpu_row(&A->a, r, buf);
        int64_t best = 0;
        for (int64_t i = 1; i < D; i++)
            if (x[i] > x[best]) best = i;
        ((int32_t *)A->out.data)[r] = (int32_t)best;
    }
}

CPU_KFN void cpu_im2col_rows(void *p, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_tensor *x = &A->a;
    int P = A->op->i[0], nd = x->ndim;
    int64_t C = x->shape[nd - 3], H = x->shape[nd - 2], W = x->shape[nd - 1];
    int64_t gh = H / P, gw = W / P, cols = C * P * P;
    int64_t sn = nd == 4 ? x->stride[0] : 0, sc = x->stride[nd - 3], sy = x->stride[nd - 2], sx = x->stride[nd - 1];
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / (gh * gw), py = (r / gw) % gh, px = r % gw;
        float *o = (float *)A->out.data + r * cols;
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < P; y++) {
                int64_t off = n * sn + c * sc + (py * P + y) * sy + px * P * sx;
                cpu_load(o + (c * P + y) * P, x->data, x->dtype, off, sx, P);
            }
    }
}
