/* MATMUL_ID: mixture-of-experts products that read only the chosen experts,
 * grouped per expert. */
#include "cpu/kernels/kernels.h"

/* MoE: out[T, k, N] = x[t or t*k] . w[ids[t, j]]^T, grouped by expert. */
/* Decode-sized MoE: one parallel region over (active expert, row of w). */
typedef struct cpu_moe_arg {
    cpu_ctx *ctx;
    const int64_t *order, *estart;
    const int32_t *elist;
    int64_t N, K, ldw; /* ldw: elements between rows of w (block types: padded) */
    const float *xg;
    const char *w;
    vlm_dtype wt;
    float *out;
    int round_w; /* bf16 compute on f16/f32 experts */
} cpu_moe_arg;

static void cpu_moe_fn(void *p, int64_t i0, int64_t i1, int tid) {
    cpu_moe_arg *A = (cpu_moe_arg *)p;
    for (int64_t it = i0; it < i1; it++) {
        int64_t ei = it / A->N, n = it % A->N, e = A->elist[ei];
        const char *wr = A->w + cpu_bytes(A->wt, (e * A->N + n) * A->ldw);
        vlm_dtype wt = A->wt;
        if (A->round_w) {
            cpu_to_f32_round(A->ctx->tscratch[tid], wr, wt, A->K, 1);
            wr = (const char *)A->ctx->tscratch[tid];
            wt = VLM_F32;
        }
        for (int64_t s0 = A->estart[ei]; s0 < A->estart[ei + 1]; s0 += 4) {
            int mm = A->estart[ei + 1] - s0 < 4 ? (int)(A->estart[ei + 1] - s0) : 4;
            float res[4];
            cpu_dotm(A->xg + s0 * A->K, A->K, mm, wr, wt, A->K, res);
            for (int r = 0; r < mm; r++) A->out[A->order[s0 + r] * A->N + n] = res[r];
        }
    }
}

/* MoE: out[T, k, N] = x[t or t*k] . w[ids[t, j]]^T, grouped by expert so each
 * chosen expert's weights are read once per call; other experts are not touched. */
CPU_KFN vlm_status cpu_op_matmul_id(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    const vlm_tensor *x = op->a, *w = op->b, *ids = op->aux;
    int64_t T = ids->shape[0], k = ids->shape[1], E = w->shape[0], N = w->shape[1], K = w->shape[2];
    int per_slot = x->shape[0] == T * k && k > 1;
    const int32_t *id = (const int32_t *)ids->data;
    int64_t TK = T * k;
    for (int64_t i = 0; i < TK; i++)
        if (id[i] < 0 || id[i] >= E)
            return vlm_error_set(err, VLM_ERR_ARG, "matmul_id: expert id %d out of range [0, %lld)", id[i], (long long)E);
    if (TK == 0 || N == 0) return VLM_OK;
    /* decode-sized calls share one parallel region over all (expert, row)
     * items; quantized experts go expert by expert to cpu_mm, whose int8
     * GEMV reads their blocks as they are */
    int small = TK <= 64 && vlm_dtype_block(w->dtype) == 1;
    /* shared scratch: order[TK], estart[TK+1] (int64), elist[TK] (int32), counts[E] (int64), then x rows */
    size_t idx_floats = (size_t)(TK * 2 + (TK + 1) * 2 + TK + E * 2 + 32);
    int64_t *counts = NULL;
    float *sh = cpu_shared(ctx, idx_floats);
    if (!sh) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of memory in matmul_id");
    counts = (int64_t *)sh;
    memset(counts, 0, sizeof(int64_t) * (size_t)E);
    for (int64_t i = 0; i < TK; i++) counts[id[i]]++;
    int64_t max_cnt = 0, ne = 0;
    for (int64_t e = 0; e < E; e++) {
        if (counts[e] > max_cnt) max_cnt = counts[e];
        ne += counts[e] > 0;
    }
    size_t xrows = small ? (size_t)TK : (size_t)max_cnt;
    size_t need = idx_floats + xrows * (size_t)(K + (small ? 0 : N));
    sh = cpu_shared(ctx, need); /* may move: recount below */
    if (!sh) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of memory in matmul_id");
    counts = (int64_t *)sh;
    int64_t *order = counts + E, *estart = order + TK;
    int32_t *elist = (int32_t *)(estart + TK + 1);
    float *xg = (float *)(elist + TK + 1);
    xg = (float *)(((uintptr_t)xg + 63) & ~(uintptr_t)63);
    if ((size_t)(xg - sh) + xrows * (size_t)(K + (small ? 0 : N)) > ctx->shared_n)
        return vlm_error_set(err, VLM_ERR_OOM, "cpu: matmul_id scratch layout");
    memset(counts, 0, sizeof(int64_t) * (size_t)E);
    for (int64_t i = 0; i < TK; i++) counts[id[i]]++;
    /* counting sort of the (t, j) slots by expert */
    int64_t pos = 0, ei = 0;
    for (int64_t e = 0; e < E; e++) {
        if (!counts[e]) continue;
        elist[ei] = (int32_t)e;
        estart[ei++] = pos;
        int64_t c = pos;
        for (int64_t i = 0; i < TK; i++)
            if (id[i] == e) order[c++] = i;
        pos = c;
    }
    estart[ei] = pos;
    float *out = (float *)op->out->data;
    int64_t ldw = w->stride[1];
    if (small) {
        for (int64_t s = 0; s < TK; s++) {
            int64_t row = per_slot ? order[s] : order[s] / k;
            cpu_load(xg + s * K, x->data, x->dtype, row * K, 1, K);
        }
        if (ctx->bf16) cpu_round_bf16(xg, TK * K);
        cpu_moe_arg A = {ctx, order, estart, elist, N, K, ldw, xg, (const char *)w->data, w->dtype, out,
                         ctx->bf16 && w->dtype != VLM_BF16};
        if (A.round_w && cpu_reserve(ctx, (size_t)K)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
        int64_t min_items = 16384 / (K * (TK / (ne ? ne : 1))) + 1;
        cpu_parallel(ctx, ne * N, min_items, cpu_moe_fn, &A);
        return VLM_OK;
    }
    float *og = xg + max_cnt * K;
    for (int64_t q = 0; q < ne; q++) {
        int64_t e = elist[q], cnt = estart[q + 1] - estart[q];
        for (int64_t c = 0; c < cnt; c++) {
            int64_t i = order[estart[q] + c], row = per_slot ? i : i / k;
            cpu_load(xg + c * K, x->data, x->dtype, row * K, 1, K);
        }
        vlm_status st = cpu_mm(ctx, cnt, N, K, xg, K, (const char *)w->data + cpu_bytes(w->dtype, e * N * ldw), w->dtype,
                               ldw, NULL, og, N, err);
        if (st) return st;
        for (int64_t c = 0; c < cnt; c++) memcpy(out + order[estart[q] + c] * N, og + c * N, (size_t)N * 4);
    }
    return VLM_OK;
}
