/* The sampler against a reference written here from the definitions: the
 * reference computes the final distribution in double precision; many
 * draws from vlm_sample must land only on its support, with frequencies
 * close to its probabilities. */
#include "test_util.h"
#include "vlm.h"

#define V 12
#define DRAWS 40000

/* Reference: penalties, temperature, top-k, top-p, min-p -> probabilities. */
static void reference(const float *logits, const vlm_sampling *p, const int32_t *hist, int nh, double *prob) {
    double x[V];
    int seen[V] = {0};
    int start = p->penalty_last_n < 0 || p->penalty_last_n > nh ? 0 : nh - p->penalty_last_n;
    for (int i = start; i < nh; i++) seen[hist[i]]++;
    for (int i = 0; i < V; i++) {
        double v = logits[i];
        if (seen[i]) {
            if (v > 0) v /= p->repetition_penalty;
            else v *= p->repetition_penalty;
            v -= p->presence_penalty + p->frequency_penalty * seen[i];
        }
        x[i] = v / p->temperature;
    }
    int order[V];
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 0; i < V; i++) /* selection sort, descending, ties by index */
        for (int j = i + 1; j < V; j++)
            if (x[order[j]] > x[order[i]] || (x[order[j]] == x[order[i]] && order[j] < order[i])) {
                int t = order[i]; order[i] = order[j]; order[j] = t;
            }
    int n = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp(x[order[i]] - x[order[0]]);
    if (p->top_p < 1) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += exp(x[order[i]] - x[order[0]]) / sum;
            if (acc >= p->top_p) { n = i + 1; break; }
        }
    }
    if (p->min_p > 0) {
        int keep = 1;
        while (keep < n && exp(x[order[keep]] - x[order[0]]) >= p->min_p) keep++;
        n = keep;
    }
    for (int i = 0; i < V; i++) prob[i] = 0;
    sum = 0;
    for (int i = 0; i < n; i++) sum += exp(x[order[i]] - x[order[0]]);
    for (int i = 0; i < n; i++) prob[order[i]] = exp(x[order[i]] - x[order[0]]) / sum;
}

static void compare(const char *what, const float *logits, vlm_sampling p, const int32_t *hist, int nh) {
    double prob[V];
    reference(logits, &p, hist, nh, prob);
    vlm_sampler s;
    vlm_error err = {0};
    CHECK(vlm_sampler_init(&s, &p, V, &err) == VLM_OK, "%s", err.msg);
    int count[V] = {0};
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = vlm_sample(&s, logits, hist, nh);
        CHECK(t >= 0 && t < V, "token in range");
        if (t >= 0 && t < V) count[t]++;
    }
    double worst = 0;
    for (int i = 0; i < V; i++) {
        double f = (double)count[i] / DRAWS;
        CHECK(prob[i] > 0 || count[i] == 0, "%s: token %d drawn %d times outside the reference support", what, i, count[i]);
        /* 5 standard deviations of a binomial frequency, plus a small floor */
        double tol = 5 * sqrt(prob[i] * (1 - prob[i]) / DRAWS) + 1e-3;
        if (fabs(f - prob[i]) > worst) worst = fabs(f - prob[i]);
        CHECK(fabs(f - prob[i]) <= tol, "%s: token %d frequency %.4f, reference %.4f", what, i, f, prob[i]);
    }
    printf("%-28s max |freq - p| = %.4f\n", what, worst);
    vlm_sampler_free(&s);
}

int main(void) {
    const float logits[V] = {1.0f, 2.5f, 0.3f, -1.0f, 2.4f, 0.0f, 1.7f, -3.0f, 0.9f, 2.0f, -0.5f, 1.2f};
    const int32_t hist[] = {1, 4, 4, 9, 3};
    int nh = 5;
    vlm_sampling base = vlm_sampling_default();
    base.temperature = 1.0f;
    base.penalty_last_n = -1;

    vlm_sampling p = base;
    compare("temperature 1", logits, p, NULL, 0);
    p.temperature = 0.5f;
    compare("temperature 0.5", logits, p, NULL, 0);
    p = base; p.top_k = 3;
    compare("top_k 3", logits, p, NULL, 0);
    p = base; p.top_p = 0.6f;
    compare("top_p 0.6", logits, p, NULL, 0);
    { /* two equal best logits, top_p 0.5: the first alone reaches the mass, so only it is kept */
        float tie[V];
        for (int i = 0; i < V; i++) tie[i] = -100.0f;
        tie[3] = tie[7] = 5.0f;
        p = base; p.top_p = 0.5f;
        compare("top_p at the boundary", tie, p, NULL, 0);
    }
    p = base; p.min_p = 0.3f;
    compare("min_p 0.3", logits, p, NULL, 0);
    p = base; p.repetition_penalty = 1.5f;
    compare("repetition_penalty 1.5", logits, p, hist, nh);
    p = base; p.presence_penalty = 0.8f; p.frequency_penalty = 0.3f;
    compare("presence+frequency", logits, p, hist, nh);
    p = base; p.penalty_last_n = 2; p.repetition_penalty = 2.0f;
    compare("penalty window 2", logits, p, hist, nh);
    p = base; p.top_k = 5; p.top_p = 0.8f; p.min_p = 0.2f; p.temperature = 0.8f;
    compare("combined", logits, p, hist, nh);

    /* Greedy is the argmax, penalties included. */
    vlm_sampler s;
    vlm_error err = {0};
    p = base; p.temperature = 0;
    CHECK(vlm_sampler_init(&s, &p, V, &err) == VLM_OK, "%s", err.msg);
    CHECK(vlm_sample(&s, logits, NULL, 0) == 1, "greedy picks the argmax");
    vlm_sampler_free(&s);
    p.repetition_penalty = 2.0f;
    CHECK(vlm_sampler_init(&s, &p, V, &err) == VLM_OK, "%s", err.msg);
    CHECK(vlm_sample(&s, logits, hist, nh) == 6, "greedy after penalising 1, 4 and 9 picks 6");
    vlm_sampler_free(&s);

    /* Same seed, same tokens; another seed, another sequence. */
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        p = base;
        p.seed = run == 2 ? 99 : 7;
        CHECK(vlm_sampler_init(&s, &p, V, &err) == VLM_OK, "%s", err.msg);
        int32_t *out = run == 0 ? a : run == 1 ? b : c;
        for (int i = 0; i < 64; i++) out[i] = vlm_sample(&s, logits, NULL, 0);
        vlm_sampler_free(&s);
    }
    CHECK(!memcmp(a, b, sizeof a), "same seed gives the same tokens");
    CHECK(memcmp(a, c, sizeof a), "another seed gives other tokens");

    /* Bad parameters are refused. */
    p = base; p.top_p = 0;
    CHECK(vlm_sampler_init(&s, &p, V, &err) == VLM_ERR_ARG, "top_p 0 refused");
    TEST_MAIN_END();
}
