/* Token sampling: penalties, temperature, top-k, top-p, min-p, a draw. */
#include "api/vlm_api.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

vlm_sampling vlm_sampling_default(void) {
    vlm_sampling p = {.temperature = 0.7f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .repetition_penalty = 1.0f,
                      .penalty_last_n = 64, .seed = 0x5eed};
    return p;
}

static uint64_t smp_splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t smp_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

double vlm_sampler_uniform(vlm_sampler *s) { /* xoshiro256** */
    uint64_t *r = s->rng, out = smp_rotl(r[1] * 5, 7) * 9, t = r[1] << 17;
    r[2] ^= r[0]; r[3] ^= r[1]; r[1] ^= r[2]; r[0] ^= r[3]; r[2] ^= t; r[3] = smp_rotl(r[3], 45);
    return (double)(out >> 11) * (1.0 / 9007199254740992.0);
}

vlm_status vlm_sampler_init(vlm_sampler *s, const vlm_sampling *p, int n_vocab, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    memset(s, 0, sizeof *s);
    if (n_vocab <= 0) return vlm_error_set(err, VLM_ERR_ARG, "sampler for an empty vocabulary");
    s->p = p ? *p : vlm_sampling_default();
    if (!(s->p.temperature >= 0) || !(s->p.top_p > 0 && s->p.top_p <= 1) || !(s->p.min_p >= 0 && s->p.min_p <= 1) ||
        !(s->p.repetition_penalty > 0) || s->p.top_k < 0)
        return vlm_error_set(err, VLM_ERR_ARG, "sampling parameters out of range (temperature >= 0, 0 < top_p <= 1, "
                                               "0 <= min_p <= 1, repetition_penalty > 0, top_k >= 0)");
    s->n_vocab = n_vocab;
    uint64_t seed = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = smp_splitmix(&seed);
    s->work = (float *)malloc(sizeof(float) * (size_t)n_vocab);
    s->order = (int32_t *)malloc(sizeof(int32_t) * (size_t)n_vocab);
    s->tmp = (int32_t *)malloc(sizeof(int32_t) * (size_t)n_vocab);
    if (!s->work || !s->order || !s->tmp) { vlm_sampler_free(s); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    return VLM_OK;
}

void vlm_sampler_free(vlm_sampler *s) {
    free(s->work);
    free(s->order);
    free(s->tmp);
    s->work = NULL;
    s->order = NULL;
    s->tmp = NULL;
}

static void smp_penalties(vlm_sampler *s, float *x, const int32_t *hist, int n) {
    const vlm_sampling *p = &s->p;
    if (p->repetition_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f) return;
    int start = p->penalty_last_n < 0 || p->penalty_last_n > n ? 0 : n - p->penalty_last_n;
    /* order[] doubles as an occurrence counter here; it is rebuilt later. */
    for (int i = start; i < n; i++)
        if (hist[i] >= 0 && hist[i] < s->n_vocab) s->order[hist[i]] = 0;
    for (int i = start; i < n; i++)
        if (hist[i] >= 0 && hist[i] < s->n_vocab) s->order[hist[i]]++;
    for (int i = start; i < n; i++) {
        int32_t t = hist[i];
        if (t < 0 || t >= s->n_vocab || s->order[t] <= 0) continue; /* each token once */
        float v = x[t];
        if (p->repetition_penalty != 1.0f) v = v > 0 ? v / p->repetition_penalty : v * p->repetition_penalty;
        v -= p->presence_penalty + p->frequency_penalty * (float)s->order[t];
        x[t] = v;
        s->order[t] = 0;
    }
}

/* i before j: higher logit first, then lower id (a total order, so any
 * correct sort gives the same candidates). */
static int smp_before(const float *x, int32_t i, int32_t j) { return x[i] > x[j] || (x[i] == x[j] && i < j); }

/* Sorts idx[0..n) by smp_before: bottom-up merge sort through tmp[n]
 * (qsort_r, the one with a context, is not in C11). */
static void smp_sort(int32_t *idx, int32_t *tmp, int n, const float *x) {
    int32_t *a = idx, *b = tmp;
    for (int w = 1; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, i = lo, j = mid, k = lo;
            while (i < mid && j < hi) b[k++] = smp_before(x, a[j], a[i]) ? a[j++] : a[i++];
            while (i < mid) b[k++] = a[i++];
            while (j < hi) b[k++] = a[j++];
        }
        int32_t *t = a; a = b; b = t;
    }
    if (a != idx) memcpy(idx, a, sizeof(int32_t) * (size_t)n);
}

int32_t vlm_sample(vlm_sampler *s, const float *logits, const int32_t *history, int n_history) {
    int V = s->n_vocab;
    float *x = s->work;
    memcpy(x, logits, sizeof(float) * (size_t)V);
    smp_penalties(s, x, history, n_history);
    int best = 0;
    for (int i = 1; i < V; i++) if (x[i] > x[best]) best = i;
    if (s->p.temperature == 0.0f) return best;
    for (int i = 0; i < V; i++) x[i] /= s->p.temperature;
    /* Candidates sorted by logit, cut by top-k; then softmax over them.
     * Tokens more than 40 nats below the best (relative probability under
     * 4e-18) cannot change any cut, so only the rest are sorted. */
    int n = 0;
    float floor_v = x[best] - 40.0f;
    for (int i = 0; i < V; i++) if (x[i] >= floor_v) s->order[n++] = i;
    smp_sort(s->order, s->tmp, n, x);
    if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;
    double max = x[s->order[0]], sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[s->order[i]] - max);
    /* top-p: the smallest prefix whose mass reaches top_p (at least one token). */
    if (s->p.top_p < 1.0f) {
        double acc = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += exp((double)x[s->order[i]] - max) / sum;
            if (acc >= s->p.top_p) { keep = i + 1; break; }
        }
        n = keep;
    }
    /* min-p: drop tokens below min_p times the top probability. */
    if (s->p.min_p > 0.0f) {
        int keep = 1;
        while (keep < n && exp((double)x[s->order[keep]] - max) >= s->p.min_p) keep++;
        n = keep;
    }
    sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[s->order[i]] - max);
    double r = vlm_sampler_uniform(s) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += exp((double)x[s->order[i]] - max);
        if (r < acc) return s->order[i];
    }
    return s->order[n - 1];
}
