/* Attention: flash-style tiles with online softmax; K/V blocks skipped or
 * accepted whole from position/segment summaries; split keys for decode. */
#include "cpu/kernels/kernels.h"

/* ------------------------------------------------------------------ attention */

#define CPU_ATTN_BLOCK 256

typedef struct cpu_attn_arg {
    cpu_ctx *ctx;
    const vlm_op *op;
    int64_t T, Hq, Hkv, D, Dv, S, group;
} cpu_attn_arg;

static inline int cpu_visible(const vlm_attn_params *p, int64_t i, int64_t j) {
    if (p->k_pos && p->k_pos[j] < 0) return 0;
    if (p->q_seg && p->q_seg[i] != p->k_seg[j]) return 0;
    if (p->causal) {
        int ok = p->k_pos[j] <= p->q_pos[i];
        if (!ok && p->q_group && p->q_group[i] >= 0 && p->q_group[i] == p->k_group[j]) ok = 1;
        if (!ok) return 0;
    }
    if (p->window > 0 && p->q_pos[i] - p->k_pos[j] >= p->window) return 0;
    return 1;
}

static void cpu_attn_fn(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_attn_arg *A = (cpu_attn_arg *)p;
    const vlm_op *op = A->op;
    const vlm_attn_params *ap = &op->attn;
    const vlm_tensor *q = op->a, *k = op->b, *v = op->c;
    int64_t D = A->D, Dv = A->Dv;
    size_t ek = vlm_dtype_size(k->dtype), ev = vlm_dtype_size(v->dtype);
    float *qb = A->ctx->tscratch[tid], *acc = qb + D, *sc = acc + Dv;
    int32_t *idx = (int32_t *)(sc + CPU_ATTN_BLOCK);
    for (int64_t r = r0; r < r1; r++) {
        int64_t t = r / A->Hq, h = r % A->Hq, hk = h / A->group;
        cpu_load(qb, q->data, q->dtype, t * q->stride[0] + h * q->stride[1], 1, D);
        float m = -INFINITY, l = 0;
        memset(acc, 0, (size_t)Dv * 4);
        for (int64_t j0 = 0; j0 < A->S; j0 += CPU_ATTN_BLOCK) {
            int64_t j1 = j0 + CPU_ATTN_BLOCK < A->S ? j0 + CPU_ATTN_BLOCK : A->S;
            int nv = 0;
            for (int64_t j = j0; j < j1; j++) {
                if (!cpu_visible(ap, t, j)) continue;
                const char *kr = (const char *)k->data + (j * k->stride[0] + hk * k->stride[1]) * (int64_t)ek;
                float s = cpu_dot(qb, kr, k->dtype, D) * ap->scale;
                if (ap->softcap > 0) s = tanhf(s / ap->softcap) * ap->softcap;
                sc[nv] = s;
                idx[nv++] = (int32_t)j;
            }
            if (!nv) continue;
            float bm = cpu_max(sc, nv);
            if (bm > m) {
                if (l > 0) {
                    float f = expf(m - bm);
                    l *= f;
                    cpu_scale_inplace(acc, f, Dv);
                }
                m = bm;
            }
            l += cpu_exp_sub_sum(sc, sc, m, nv);
            for (int c = 0; c < nv; c++) {
                const char *vr = (const char *)v->data + (idx[c] * v->stride[0] + hk * v->stride[1]) * (int64_t)ev;
                cpu_axpy(acc, sc[c], vr, v->dtype, Dv);
            }
        }
        float *o = (float *)op->out->data + r * Dv;
        if (l > 0) {
            float inv = 1.0f / l;
            for (int64_t i = 0; i < Dv; i++) o[i] = acc[i] * inv;
        } else memset(o, 0, (size_t)Dv * 4);
    }
}

/* Tiled attention (flash-attention style): one work item is a tile of Tq
 * queries times the `group` query heads sharing one KV head, R = Tq*group
 * rows. For each block of BK keys: S = Q.K^T, mask, online softmax,
 * O += P.V. The two products run on the variant's GEMM engine (gemm.c:
 * the K block packed as 16-key panels, the V block as 16-column panels, Q
 * scaled once as it is loaded), else on sgemm. K/V blocks in f16/bf16 are
 * converted once per tile and reused by all R rows. */
#define CPU_FA_BK 128
#define CPU_FA_OWN_ROWS 24
#define CPU_FA_PART 512 /* keys per part when decode splits the keys (a multiple of the block sizes) */

typedef struct cpu_fa_arg {
    cpu_ctx *ctx;
    const vlm_op *op;
    int64_t T, Hq, Hkv, D, Dv, S, group, Tq, R, ntiles;
    int64_t bk;                   /* keys per block, at most CPU_FA_BK */
    const struct cpu_span *kspan; /* per key block */
    int64_t nparts, part_len;     /* keys split into parts (decode with few KV heads) */
    float *part;                  /* per (g, tile, part): R rows of [m, l, O[Dv]] */
} cpu_fa_arg;

/* Summary of a run of queries or keys, to skip or fully accept blocks
 * without testing every (query, key) pair. */
typedef struct cpu_span {
    int32_t pmin, pmax;   /* positions of live entries */
    int32_t smin, smax;   /* segments */
    int live, all_live;   /* any / all k_pos >= 0 */
    int grouped;          /* any group id >= 0 */
} cpu_span;

static void cpu_span_make(cpu_span *sp, const int32_t *pos, const int32_t *seg, const int32_t *grp, int64_t j0, int64_t n) {
    sp->pmin = INT32_MAX; sp->pmax = INT32_MIN; sp->smin = INT32_MAX; sp->smax = INT32_MIN;
    sp->live = 0; sp->all_live = 1; sp->grouped = 0;
    for (int64_t j = j0; j < j0 + n; j++) {
        int32_t p = pos ? pos[j] : 0;
        if (p < 0) { sp->all_live = 0; continue; }
        sp->live = 1;
        if (p < sp->pmin) sp->pmin = p;
        if (p > sp->pmax) sp->pmax = p;
        if (seg) { if (seg[j] < sp->smin) sp->smin = seg[j]; if (seg[j] > sp->smax) sp->smax = seg[j]; }
        if (grp && grp[j] >= 0) sp->grouped = 1;
    }
}

/* -1: no pair visible, 1: every pair visible, 0: test each pair. */
static int cpu_span_class(const vlm_attn_params *p, const cpu_span *q, const cpu_span *k) {
    if (!k->live) return -1;
    if (p->q_seg && (q->smax < k->smin || k->smax < q->smin)) return -1;
    int groups = q->grouped && k->grouped;
    if (p->causal && !groups && k->pmin > q->pmax) return -1;
    if (p->window > 0 && (int64_t)q->pmin - k->pmax >= p->window) return -1;
    if (!k->all_live) return 0;
    if (p->q_seg && !(q->smin == q->smax && k->smin == k->smax && q->smin == k->smin)) return 0;
    if (p->causal && k->pmax > q->pmin) return 0;
    if (p->window > 0 && (int64_t)q->pmax - k->pmin >= p->window) return 0;
    return 1;
}

/* Dv rounded up to the engine's 16-column panels */
static int64_t cpu_fa_dv16(int64_t Dv) { return (Dv + 15) / 16 * 16; }

/* Q, O, P, then (64-byte aligned) the K and V blocks, 8 conversion rows,
 * m and l per row, the visibility bytes */
static size_t cpu_fa_scratch(int64_t R, int64_t Tq, int64_t D, int64_t Dv) {
    return (size_t)(R * D + R * Dv + R * CPU_FA_BK + 16 + CPU_FA_BK * D + CPU_FA_BK * cpu_fa_dv16(Dv) + 8 * D + Dv + 2 * R +
                    Tq * CPU_FA_BK / 4 + 64);
}

static void cpu_fa_fn(void *p, int64_t i0, int64_t i1, int tid) {
    cpu_fa_arg *A = (cpu_fa_arg *)p;
    const vlm_op *op = A->op;
    const vlm_attn_params *ap = &op->attn;
    const vlm_tensor *q = op->a, *k = op->b, *v = op->c;
    const int64_t D = A->D, Dv = A->Dv, G = A->group, BK = A->bk;
    size_t ek = vlm_dtype_size(k->dtype), ev = vlm_dtype_size(v->dtype);
    float *Q = A->ctx->tscratch[tid], *O = Q + A->R * D, *P = O + A->R * Dv;
    float *Kf = (float *)(((uintptr_t)(P + A->R * BK) + 63) & ~(uintptr_t)63), *Vf = Kf + BK * D;
    float *row = Vf + BK * cpu_fa_dv16(Dv), *mrow = row + 8 * D + Dv, *lrow = mrow + A->R;
    uint8_t *vis = (uint8_t *)(lrow + A->R);
    for (int64_t item = i0; item < i1; item++) {
        int64_t part = item % A->nparts, gt = item / A->nparts;
        int64_t g = gt / A->ntiles, t0 = (gt % A->ntiles) * A->Tq;
        int64_t jbeg = part * A->part_len, jend = jbeg + A->part_len < A->S ? jbeg + A->part_len : A->S;
        int64_t tq = A->T - t0 < A->Tq ? A->T - t0 : A->Tq, R = tq * G;
        /* the GEMM engine for tiles of many rows (prefill, vision); sgemm (or
         * without a BLAS, dot and axpy rows) for the few rows of decode,
         * where packing K and V costs more than it saves (measured: 11 vs 15
         * GFLOP/s per CPU-second at T=1) */
        int own = CPU_PACKED && R >= CPU_FA_OWN_ROWS;
        for (int64_t ti = 0; ti < tq; ti++)
            for (int64_t gi = 0; gi < G; gi++) {
                cpu_load(Q + (ti * G + gi) * D, q->data, q->dtype, (t0 + ti) * q->stride[0] + (g * G + gi) * q->stride[1], 1, D);
                if (own) cpu_scale_inplace(Q + (ti * G + gi) * D, ap->scale, D);
            }
        memset(O, 0, sizeof(float) * (size_t)(R * Dv));
        for (int64_t r = 0; r < R; r++) { mrow[r] = -INFINITY; lrow[r] = 0; }
        cpu_span qspan;
        cpu_span_make(&qspan, ap->q_pos, ap->q_seg, ap->q_group, t0, tq);
        qspan.all_live = qspan.live = 1;
        for (int64_t j0 = jbeg; j0 < jend; j0 += BK) {
            int64_t nb = jend - j0 < BK ? jend - j0 : BK;
            /* visibility of the block for each query of the tile; trim to visible columns */
            int cls = A->kspan ? cpu_span_class(ap, &qspan, &A->kspan[j0 / BK]) : 1;
            if (cls < 0) continue;
            int64_t jlo = nb, jhi = -1;
            if (cls > 0) {
                memset(vis, 1, (size_t)(tq * BK));
                jlo = 0;
                jhi = nb - 1;
            } else
                for (int64_t ti = 0; ti < tq; ti++)
                    for (int64_t jj = 0; jj < nb; jj++) {
                        uint8_t vv = (uint8_t)cpu_visible(ap, t0 + ti, j0 + jj);
                        vis[ti * BK + jj] = vv;
                        if (vv) { if (jj < jlo) jlo = jj; if (jj > jhi) jhi = jj; }
                    }
            if (jhi < 0) continue;
            int64_t nc = jhi - jlo + 1, jb = j0 + jlo;
            const char *kbase = (const char *)k->data + (jb * k->stride[0] + g * k->stride[1]) * (int64_t)ek;
            const char *vbase = (const char *)v->data + (jb * v->stride[0] + g * v->stride[1]) * (int64_t)ev;
            const float *Kb = NULL, *Vb = NULL;
            int64_t ldk = 0, ldv = 0;
#if CPU_PACKED
            if (own) {
                cpu_pack_panels(Kf, kbase, k->dtype, k->stride[0], nc, D, 0, row);
                cpu_gemm_panels(Q, D, R, Kf, nc, D, P, BK, 0);
            } else
#endif
            {
                if (k->dtype == VLM_F32 && k->stride[0] >= D) { Kb = (const float *)kbase; ldk = k->stride[0]; }
                else {
                    for (int64_t jj = 0; jj < nc; jj++) cpu_to_f32(Kf + jj * D, kbase + jj * k->stride[0] * (int64_t)ek, k->dtype, D);
                    Kb = Kf; ldk = D;
                }
                if (v->dtype == VLM_F32 && v->stride[0] >= Dv) { Vb = (const float *)vbase; ldv = v->stride[0]; }
                else {
                    for (int64_t jj = 0; jj < nc; jj++) cpu_to_f32(Vf + jj * Dv, vbase + jj * v->stride[0] * (int64_t)ev, v->dtype, Dv);
                    Vb = Vf; ldv = Dv;
                }
                cpu_sgemm(1, R, nc, D, ap->scale, Q, D, Kb, ldk, 0.0f, P, BK);
            }
            for (int64_t r = 0; r < R; r++) {
                float *pr = P + r * BK;
                const uint8_t *vr = vis + (r / G) * BK + jlo;
                if (ap->softcap > 0) {
                    float inv = 1.0f / ap->softcap;
                    for (int64_t jj = 0; jj < nc; jj++) pr[jj] = tanhf(pr[jj] * inv) * ap->softcap;
                }
                for (int64_t jj = 0; jj < nc; jj++) if (!vr[jj]) pr[jj] = -INFINITY;
                float bm = cpu_max(pr, nc);
                if (bm == -INFINITY) { memset(pr, 0, sizeof(float) * (size_t)nc); continue; }
                if (bm > mrow[r]) {
                    if (lrow[r] > 0) {
                        float f = expf(mrow[r] - bm);
                        lrow[r] *= f;
                        cpu_scale_inplace(O + r * Dv, f, Dv);
                    }
                    mrow[r] = bm;
                }
                lrow[r] += cpu_exp_sub_sum(pr, pr, mrow[r], nc);
            }
#if CPU_PACKED
            if (own) {
                cpu_pack_panels_kmajor(Vf, vbase, v->dtype, v->stride[0], nc, Dv, row);
                cpu_gemm_panels(P, BK, R, Vf, Dv, nc, O, Dv, 1);
            } else
#endif
            cpu_sgemm(0, R, Dv, nc, 1.0f, P, BK, Vb, ldv, 1.0f, O, Dv);
        }
        if (A->nparts > 1) { /* partial result, merged by cpu_fa_merge */
            float *dst = A->part + item * A->R * (Dv + 2);
            for (int64_t r = 0; r < R; r++) {
                dst[r * (Dv + 2)] = mrow[r];
                dst[r * (Dv + 2) + 1] = lrow[r];
                memcpy(dst + r * (Dv + 2) + 2, O + r * Dv, sizeof(float) * (size_t)Dv);
            }
            continue;
        }
        for (int64_t ti = 0; ti < tq; ti++)
            for (int64_t gi = 0; gi < G; gi++) {
                int64_t r = ti * G + gi;
                float *o = (float *)op->out->data + ((t0 + ti) * A->Hq + g * G + gi) * Dv;
                if (lrow[r] > 0) {
                    float inv = 1.0f / lrow[r];
                    for (int64_t i = 0; i < Dv; i++) o[i] = O[r * Dv + i] * inv;
                } else memset(o, 0, sizeof(float) * (size_t)Dv);
            }
    }
}

/* Combines the key parts of each (g, tile) row: softmax over the union. */
static void cpu_fa_merge(void *p, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    cpu_fa_arg *A = (cpu_fa_arg *)p;
    const int64_t Dv = A->Dv, G = A->group, W = Dv + 2;
    for (int64_t gt = i0; gt < i1; gt++) {
        int64_t g = gt / A->ntiles, t0 = (gt % A->ntiles) * A->Tq;
        int64_t tq = A->T - t0 < A->Tq ? A->T - t0 : A->Tq;
        const float *base = A->part + gt * A->nparts * A->R * W;
        for (int64_t r = 0; r < tq * G; r++) {
            float m = -INFINITY, l = 0;
            for (int64_t q = 0; q < A->nparts; q++) {
                const float *e = base + (q * A->R + r) * W;
                if (e[1] > 0 && e[0] > m) m = e[0];
            }
            float *o = (float *)A->op->out->data + ((t0 + r / G) * A->Hq + g * G + r % G) * Dv;
            memset(o, 0, sizeof(float) * (size_t)Dv);
            for (int64_t q = 0; q < A->nparts; q++) {
                const float *e = base + (q * A->R + r) * W;
                if (!(e[1] > 0)) continue;
                float f = expf(e[0] - m);
                l += e[1] * f;
                for (int64_t i = 0; i < Dv; i++) o[i] += e[2 + i] * f;
            }
            if (l > 0) cpu_scale_inplace(o, 1.0f / l, Dv);
        }
    }
}

CPU_KFN vlm_status cpu_op_attn(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    cpu_attn_arg A = {ctx, op, op->a->shape[0], op->a->shape[1], op->b->shape[1], op->a->shape[2], op->c->shape[2],
                      op->b->shape[0], 0};
    A.group = A.Hq / A.Hkv;
    if (A.T * A.Hq == 0) return VLM_OK;
    if (A.S >= 16) { /* measured faster than the per-row path even for decode without GQA */
        cpu_fa_arg F = {ctx, op, A.T, A.Hq, A.Hkv, A.D, A.Dv, A.S, A.group, 0, 0, 0, CPU_FA_BK, NULL, 1, A.S, NULL};
        const vlm_attn_params *ap = &op->attn;
        /* packed short sequences (windowed vision attention): smaller tiles waste less on masked pairs */
        if (ap->q_seg && A.group == 1) F.bk = 64;
        int64_t tq = F.bk / A.group;
        if (tq < 1) tq = 1;
        if (tq > A.T) tq = A.T;
        F.Tq = tq;
        F.R = tq * A.group;
        F.ntiles = (A.T + tq - 1) / tq;
        /* Too few (KV head, tile) items to keep threads busy (decode with one or
         * two KV heads): split the keys into parts of CPU_FA_PART and merge.
         * The split does not depend on the thread count. */
        if (A.Hkv * F.ntiles < 4 && A.S >= 2 * CPU_FA_PART) {
            F.part_len = CPU_FA_PART;
            F.nparts = (A.S + CPU_FA_PART - 1) / CPU_FA_PART;
        }
        int64_t nblk = (A.S + F.bk - 1) / F.bk;
        size_t span_f = (size_t)nblk * sizeof(cpu_span) / sizeof(float) + 16;
        size_t part_f = F.nparts > 1 ? (size_t)(A.Hkv * F.ntiles * F.nparts * F.R * (A.Dv + 2)) : 0;
        float *sh = cpu_shared(ctx, span_f + part_f + 1);
        if (!sh) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
        if (part_f) F.part = sh + span_f;
        if (ap->k_pos || ap->k_seg) { /* block summaries of the keys */
            cpu_span *ks = (cpu_span *)sh;
            for (int64_t b = 0; b < nblk; b++)
                cpu_span_make(&ks[b], ap->k_pos, ap->k_seg, ap->k_group, b * F.bk, A.S - b * F.bk < F.bk ? A.S - b * F.bk : F.bk);
            F.kspan = ks;
        }
        if (cpu_reserve(ctx, cpu_fa_scratch(F.R, F.Tq, A.D, A.Dv)))
            return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
        cpu_parallel(ctx, A.Hkv * F.ntiles * F.nparts, 1, cpu_fa_fn, &F);
        if (F.nparts > 1) cpu_parallel(ctx, A.Hkv * F.ntiles, 1, cpu_fa_merge, &F);
        return VLM_OK;
    }
    if (cpu_reserve(ctx, (size_t)(A.D + A.Dv + 2 * CPU_ATTN_BLOCK)))
        return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    int64_t min = 1 + 65536 / ((A.S + 1) * (A.D + A.Dv));
    cpu_parallel(ctx, A.T * A.Hq, min, cpu_attn_fn, &A);
    return VLM_OK;
}
