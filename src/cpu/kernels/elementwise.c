/* Row-wise ops: binary element-wise with broadcasting, unary functions and
 * GLU, RMS/layer norms, softmax, RoPE. */
#include "cpu/kernels/kernels.h"

/* ------------------------------------------------------------------ element-wise */

static inline float cpu_unary1(int f, float x, float cap) {
    switch (f) {
    case VLM_UNARY_SILU: return x / (1.0f + expf(-x));
    case VLM_UNARY_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case VLM_UNARY_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case VLM_UNARY_RELU: return x > 0 ? x : 0;
    case VLM_UNARY_TANH: return tanhf(x);
    case VLM_UNARY_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case VLM_UNARY_EXP: return expf(x);
    case VLM_UNARY_SOFTCAP: return tanhf(x / cap) * cap;
    case VLM_UNARY_SQR: return x * x;
    case VLM_UNARY_SQRT: return sqrtf(x);
    case VLM_UNARY_NEG: return -x;
    default: return x;
    }
}

static void cpu_unary_vec(int f, float *y, const float *x, int64_t n, float cap) {
    int64_t i = 0;
#if CPU_AVX2
    if (f == VLM_UNARY_SILU || f == VLM_UNARY_SIGMOID) {
        const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, cpu_exp8(_mm256_sub_ps(zero, v))));
            _mm256_storeu_ps(y + i, f == VLM_UNARY_SILU ? _mm256_mul_ps(v, s) : s);
        }
    } else if (f == VLM_UNARY_GELU_TANH) {
        /* 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)): no tanhf, no cancellation */
        const __m256 one = _mm256_set1_ps(1.0f), m2c = _mm256_set1_ps(-2.0f * 0.79788456080286536f),
                     k = _mm256_set1_ps(0.044715f);
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            __m256 u = _mm256_mul_ps(m2c, _mm256_fmadd_ps(_mm256_mul_ps(k, v), _mm256_mul_ps(v, v), v));
            _mm256_storeu_ps(y + i, _mm256_div_ps(v, _mm256_add_ps(one, cpu_exp8(u))));
        }
    } else if (f == VLM_UNARY_GELU) {
        /* 0.5 x (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26
         * (absolute error below 1.5e-7) */
        const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f), rs2 = _mm256_set1_ps(0.70710678118654752f);
        const __m256 p = _mm256_set1_ps(0.3275911f), sign = _mm256_set1_ps(-0.0f);
        const __m256 a1 = _mm256_set1_ps(0.254829592f), a2 = _mm256_set1_ps(-0.284496736f), a3 = _mm256_set1_ps(1.421413741f),
                     a4 = _mm256_set1_ps(-1.453152027f), a5 = _mm256_set1_ps(1.061405429f);
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i), z = _mm256_mul_ps(v, rs2);
            __m256 az = _mm256_andnot_ps(sign, z);
            __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(p, az, one));
            __m256 poly = _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_fmadd_ps(a5, t, a4), t, a3), t, a2), t, a1);
            __m256 e = _mm256_fnmadd_ps(_mm256_mul_ps(poly, t), cpu_exp8(_mm256_mul_ps(_mm256_xor_ps(az, sign), az)), one);
            __m256 erf = _mm256_or_ps(e, _mm256_and_ps(z, sign)); /* e >= 0: the sign of z */
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, erf)));
        }
    } else if (f == VLM_UNARY_TANH || f == VLM_UNARY_SOFTCAP) {
        /* tanh(t) = 2 / (1 + exp(-2t)) - 1 (absolute error about 1e-7) */
        const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f), m2 = _mm256_set1_ps(-2.0f);
        const float c = f == VLM_UNARY_SOFTCAP ? cap : 1.0f;
        const __m256 vc = _mm256_set1_ps(c), inv = _mm256_set1_ps(1.0f / c);
        for (; i + 8 <= n; i += 8) {
            __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv);
            __m256 th = _mm256_sub_ps(_mm256_div_ps(two, _mm256_add_ps(one, cpu_exp8(_mm256_mul_ps(m2, t)))), one);
            _mm256_storeu_ps(y + i, _mm256_mul_ps(th, vc));
        }
    } else if (f == VLM_UNARY_RELU) {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_max_ps(_mm256_loadu_ps(x + i), _mm256_setzero_ps()));
    } else if (f == VLM_UNARY_SQR) {
        for (; i + 8 <= n; i += 8) { __m256 v = _mm256_loadu_ps(x + i); _mm256_storeu_ps(y + i, _mm256_mul_ps(v, v)); }
    }
#endif
    for (; i < n; i++) y[i] = cpu_unary1(f, x[i], cap);
}

static void cpu_ew_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_op *op = A->op;
    int64_t D = cpu_lastdim(&A->a);
    float *ba = A->ctx->tscratch[tid], *bb = ba + D;
    for (int64_t r = r0; r < r1; r++) {
        float *o = (float *)A->out.data + r * D;
        const float *x = cpu_row(&A->a, r, ba);
        switch (op->kind) {
        case VLM_OP_ADD: case VLM_OP_MUL: {
            const float *y = cpu_row(&A->b, r, bb);
            int64_t i = 0;
            if (cpu_laststride(&A->b) == 0 && D > 1) { /* broadcast scalar per row */
                float s = y[0];
                if (op->kind == VLM_OP_ADD) for (; i < D; i++) o[i] = x[i] + s;
                else for (; i < D; i++) o[i] = x[i] * s;
                break;
            }
#if CPU_AVX2
            if (op->kind == VLM_OP_ADD)
                for (; i + 8 <= D; i += 8) _mm256_storeu_ps(o + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
            else
                for (; i + 8 <= D; i += 8) _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
            if (op->kind == VLM_OP_ADD) for (; i < D; i++) o[i] = x[i] + y[i];
            else for (; i < D; i++) o[i] = x[i] * y[i];
            break;
        }
        case VLM_OP_SCALE: {
            float s = op->f[0], b = op->f[1];
            int64_t i = 0;
#if CPU_AVX2
            __m256 vs = _mm256_set1_ps(s), vb = _mm256_set1_ps(b);
            for (; i + 8 <= D; i += 8) _mm256_storeu_ps(o + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vs, vb));
#endif
            for (; i < D; i++) o[i] = x[i] * s + b;
            break;
        }
        case VLM_OP_UNARY: cpu_unary_vec(op->i[0], o, x, D, op->f[0]); break;
        case VLM_OP_GLU: {
            const float *y = cpu_row(&A->b, r, bb);
            cpu_unary_vec(op->i[0], o, x, D, op->f[0]);
            int64_t i = 0;
#if CPU_AVX2
            for (; i + 8 <= D; i += 8) _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(o + i), _mm256_loadu_ps(y + i)));
#endif
            for (; i < D; i++) o[i] *= y[i];
            break;
        }
        default: break;
        }
    }
}

CPU_KFN vlm_status cpu_op_ew(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    cpu_rows_arg A = {.ctx = ctx, .op = op, .a = *op->a, .out = *op->out};
    if (op->kind == VLM_OP_ADD || op->kind == VLM_OP_MUL) A.b = cpu_broadcast(op->a, op->b);
    else if (op->b) A.b = *op->b;
    if (op->kind == VLM_OP_UNARY && op->i[0] == VLM_UNARY_SOFTCAP && !(op->f[0] > 0))
        return vlm_error_set(err, VLM_ERR_ARG, "softcap needs cap > 0");
    if ((unsigned)op->i[0] > VLM_UNARY_NEG && (op->kind == VLM_OP_UNARY || op->kind == VLM_OP_GLU))
        return vlm_error_set(err, VLM_ERR_ARG, "unknown unary op %d", op->i[0]);
    int64_t D = cpu_lastdim(&A.a);
    if (vlm_nelem(&A.a) == 0) return VLM_OK;
    if (cpu_reserve(ctx, (size_t)D * 2)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    int work = op->kind == VLM_OP_UNARY || op->kind == VLM_OP_GLU ? 8 : 1;
    cpu_parallel(ctx, cpu_nrows(&A.a), cpu_min_rows(D, work), cpu_ew_rows, &A);
    return VLM_OK;
}

/* ------------------------------------------------------------------ norms, softmax */

CPU_KFN void cpu_norm_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_op *op = A->op;
    int64_t D = cpu_lastdim(&A->a);
    float *ba = A->ctx->tscratch[tid], *w = ba + D, *b = w + D;
    int has_w = op->b != NULL, has_b = op->c != NULL;
    if (has_w) cpu_to_f32(w, op->b->data, op->b->dtype, D);
    if (has_b) cpu_to_f32(b, op->c->data, op->c->dtype, D);
    if (has_w && op->kind == VLM_OP_RMS_NORM && op->i[0])
        for (int64_t i = 0; i < D; i++) w[i] += 1.0f;
    for (int64_t r = r0; r < r1; r++) {
        float *o = (float *)A->out.data + r * D;
        const float *x = cpu_row(&A->a, r, ba);
        if (op->kind == VLM_OP_RMS_NORM) {
            double ss = 0;
            int64_t i = 0;
#if CPU_AVX2
            __m256 acc = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
            for (; i + 16 <= D; i += 16) {
                __m256 v = _mm256_loadu_ps(x + i), v2 = _mm256_loadu_ps(x + i + 8);
                acc = _mm256_fmadd_ps(v, v, acc);
                acc2 = _mm256_fmadd_ps(v2, v2, acc2);
            }
            ss = cpu_hsum(_mm256_add_ps(acc, acc2));
#endif
            for (; i < D; i++) ss += (double)x[i] * x[i];
            float inv = (float)(1.0 / sqrt(ss / (double)D + (double)op->f[0]));
            if (has_w) for (i = 0; i < D; i++) o[i] = x[i] * inv * w[i];
            else for (i = 0; i < D; i++) o[i] = x[i] * inv;
        } else { /* layer norm */
            double mean = 0, var = 0;
            for (int64_t i = 0; i < D; i++) mean += x[i];
            mean /= (double)D;
            for (int64_t i = 0; i < D; i++) { double d = x[i] - mean; var += d * d; }
            var /= (double)D;
            float inv = (float)(1.0 / sqrt(var + (double)op->f[0])), mf = (float)mean;
            for (int64_t i = 0; i < D; i++) {
                float v = (x[i] - mf) * inv;
                if (has_w) v *= w[i];
                if (has_b) v += b[i];
                o[i] = v;
            }
        }
    }
}

CPU_KFN void cpu_softmax_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_op *op = A->op;
    int64_t D = cpu_lastdim(&A->a);
    float *ba = A->ctx->tscratch[tid];
    float scale = op->f[0], cap = op->f[1];
    for (int64_t r = r0; r < r1; r++) {
        float *o = (float *)A->out.data + r * D;
        const float *x = cpu_row(&A->a, r, ba);
        for (int64_t i = 0; i < D; i++) {
            float v = x[i] * scale;
            o[i] = cap > 0 ? tanhf(v / cap) * cap : v;
        }
        float m = cpu_max(o, D);
        if (m == -INFINITY) { memset(o, 0, (size_t)D * 4); continue; }
        float s = cpu_exp_sub_sum(o, o, m, D);
        cpu_scale_inplace(o, 1.0f / s, D);
    }
}

CPU_KFN vlm_status cpu_op_rows(cpu_ctx *ctx, const vlm_op *op, vlm_error *err, vlm_parallel_fn fn, int work) {
    cpu_rows_arg A = {.ctx = ctx, .op = op, .a = *op->a, .out = *op->out};
    int64_t D = cpu_lastdim(&A.a);
    if (vlm_nelem(&A.a) == 0) return VLM_OK;
    if (cpu_reserve(ctx, (size_t)D * 3)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    cpu_parallel(ctx, cpu_nrows(&A.a), cpu_min_rows(D, work), fn, &A);
    return VLM_OK;
}

/* ------------------------------------------------------------------ RoPE */

static void cpu_rope_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_tensor *x = &A->a;
    int64_t H = x->shape[1], D = x->shape[2], R = A->b.shape[1], h2 = R / 2;
    float *buf = A->ctx->tscratch[tid];
    for (int64_t r = r0; r < r1; r++) {
        int64_t t = r / H;
        const float *xr = cpu_row(x, r, buf);
        const float *cs = (const float *)A->b.data + t * R, *sn = (const float *)A->c.data + t * R;
        float *o = (float *)A->out.data + r * D;
        for (int64_t i = 0; i < h2; i++) {
            o[i] = xr[i] * cs[i] - xr[i + h2] * sn[i];
            o[i + h2] = xr[i + h2] * cs[i + h2] + xr[i] * sn[i + h2];
        }
        if (R < D) memcpy(o + R, xr + R, (size_t)(D - R) * 4);
    }
}

CPU_KFN vlm_status cpu_op_rope(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    cpu_rows_arg A = {.ctx = ctx, .op = op, .a = *op->a, .b = *op->b, .c = *op->c, .out = *op->out};
    int64_t D = op->a->shape[2];
    if (vlm_nelem(&A.a) == 0) return VLM_OK;
    if (cpu_reserve(ctx, (size_t)D)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    cpu_parallel(ctx, cpu_nrows(&A.a), cpu_min_rows(D, 2), cpu_rope_rows, &A);
    return VLM_OK;
}
