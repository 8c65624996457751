/* Model loading: config.json + safetensors -> an architecture's weights. */
#include "io/vlm_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int model_name_in(const char *s, const char *const *list) {
    for (; s && list && *list; list++)
        if (!strcmp(s, *list)) return 1;
    return 0;
}

const vlm_arch *vlm_find_arch(const vlm_json *config) {
    const vlm_json *archs = vlm_json_get(config, "architectures");
    const char *model_type = vlm_json_str(vlm_json_get(config, "model_type"), NULL);
    for (int i = 0; vlm_archs[i]; i++) {
        for (int j = 0; archs && j < archs->n; j++)
            if (model_name_in(vlm_json_str(vlm_json_at(archs, j), NULL), vlm_archs[i]->hf_architectures))
                return vlm_archs[i];
        if (model_name_in(model_type, vlm_archs[i]->model_types)) return vlm_archs[i];
    }
    return NULL;
}

/* eos ids from generation_config.json, else config (top level or text_config). */
static void model_read_eos(vlm_model *m) {
    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", m->dir);
    vlm_error ignore = {0};
    vlm_json *gen = vlm_json_load(path, &ignore);
    const vlm_json *e = gen ? vlm_json_get(gen, "eos_token_id") : NULL;
    if (!e) e = vlm_json_get(m->config, "eos_token_id");
    if (!e) e = vlm_json_path(m->config, "text_config.eos_token_id");
    m->n_eos = 0;
    if (e && e->type == VLM_JSON_NUMBER) m->eos_ids[m->n_eos++] = (int32_t)e->num;
    else if (e && e->type == VLM_JSON_ARRAY)
        for (int i = 0; i < e->n && m->n_eos < 8; i++) m->eos_ids[m->n_eos++] = (int32_t)vlm_json_int(vlm_json_at(e, i), -1);
    vlm_json_free(gen);
}

/* Sizes in config.json must be whole numbers in [0, 2^31): everything that
 * sizes an allocation is read from keys of these shapes, so a lying value
 * stops here, before it can overflow a product of sizes. */
static int model_size_key(const char *k) {
    size_t n = strlen(k);
    static const char *const suffixes[] = {"_size", "_dim", "_heads", "_layers", "depth", "_experts", "_tok"};
    if (!strncmp(k, "num_", 4) || !strncmp(k, "vocab", 5)) return 1;
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t m = strlen(suffixes[i]);
        if (n >= m && !strcmp(k + n - m, suffixes[i])) return 1;
    }
    return 0;
}
static vlm_status model_check_sizes(const vlm_json *j, const char *path, vlm_error *err) {
    for (int i = 0; j && (j->type == VLM_JSON_OBJECT || j->type == VLM_JSON_ARRAY) && i < j->n; i++) {
        const vlm_json *c = &j->items[i];
        char sub[256];
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", c->key ? c->key : "[]");
        if (c->type == VLM_JSON_NUMBER && c->key && model_size_key(c->key) &&
            !(c->num >= 0 && c->num < 2147483648.0 && c->num == (double)(int64_t)c->num))
            return vlm_error_set(err, VLM_ERR_CONFIG, "config.json: %s = %.17g is not a size (a whole number in [0, 2^31))",
                                 sub, c->num);
        if (model_check_sizes(c, sub, err) != VLM_OK) return err->code;
    }
    return VLM_OK;
}

/* config.json's quantization_config: AWQ (4-bit, GEMM layout, zero points,
 * groups of a multiple of 32) or vlm quantize's own; any other method is
 * refused here rather than as a missing weight later. */
static vlm_status model_read_quant_config(vlm_model *m, vlm_error *err) {
    const vlm_json *q = vlm_json_get(m->config, "quantization_config");
    if (!q) return VLM_OK;
    const char *method = vlm_json_str(vlm_json_get(q, "quant_method"), "");
    if (!strcmp(method, "vlm")) return VLM_OK; /* the tensors describe themselves */
    if (strcmp(method, "awq"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "config.json: quantization method '%s' is not supported (awq is)",
                             method);
    double bits = vlm_json_num(vlm_json_get(q, "bits"), 4), group = vlm_json_num(vlm_json_get(q, "group_size"), 128);
    const char *version = vlm_json_str(vlm_json_get(q, "version"), "gemm");
    int zero_point = vlm_json_bool(vlm_json_get(q, "zero_point"), 1);
    int gemm = !strcmp(version, "gemm") || !strcmp(version, "GEMM"); /* transformers' spelling, AutoAWQ's */
    if (bits != 4 || !gemm || !zero_point)
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED,
                             "config.json: AWQ with %g bits, version '%s'%s: only 4-bit GEMM with zero points is supported",
                             bits, version, zero_point ? "" : ", no zero point");
    if (!(group >= 32 && group <= 65536 && group == (double)(int)group && (int)group % 32 == 0))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "config.json: AWQ group size %g: only multiples of 32 are supported",
                             group);
    m->awq_group = (int)group;
    m->awq_skip = vlm_json_get(q, "modules_to_not_convert");
    return VLM_OK;
}

vlm_status vlm_model_load(vlm_model **out, const char *dir, const vlm_model_params *p, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    *out = NULL;
    vlm_model *m = (vlm_model *)calloc(1, sizeof *m);
    if (!m) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    m->dir = vlm_strdup(dir);
    char path[4096];
    size_t dl = strlen(dir);
    if (p && p->random_weights && dl > 5 && !strcmp(dir + dl - 5, ".json")) {
        snprintf(path, sizeof path, "%s", dir);
        char *slash = m->dir ? strrchr(m->dir, '/') : NULL;
        if (slash) *slash = 0;
        else if (m->dir) strcpy(m->dir, ".");
    } else snprintf(path, sizeof path, "%s/config.json", dir);
    vlm_status s = VLM_OK;
    if (!m->dir) { s = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); goto fail; }
    m->config = vlm_json_load(path, err);
    if (!m->config) { s = err->code ? err->code : VLM_ERR_IO; goto fail; }
    if ((s = model_check_sizes(m->config, "", err)) != VLM_OK) goto fail;
    m->arch = vlm_find_arch(m->config);
    if (!m->arch) {
        const vlm_json *a = vlm_json_at(vlm_json_get(m->config, "architectures"), 0);
        s = vlm_error_set(err, VLM_ERR_UNSUPPORTED, "%s: architecture %s not supported yet", path,
                          vlm_json_str(a, vlm_json_str(vlm_json_get(m->config, "model_type"), "(none given)")));
        goto fail;
    }
    if (p && p->random_weights) {
        m->random_weights = 1;
        m->random_dtype = p->random_dtype;
        m->rng = 0x9e3779b97f4a7c15ULL;
    } else if ((s = vlm_st_open(&m->weights, dir, err)) != VLM_OK) goto fail;
    if (p && p->backend) m->be = p->backend;
    else {
        vlm_cpu_params cp = {.n_threads = p ? p->n_threads : 0, .kernels = p ? p->kernels : NULL,
                             .compute = p ? p->compute : NULL};
        m->be = vlm_backend_cpu_new(&cp, err);
        if (!m->be) { s = err->code ? err->code : VLM_ERR_OOM; goto fail; }
        m->own_backend = 1;
    }
    model_read_eos(m);
    if ((s = model_read_quant_config(m, err)) != VLM_OK) goto fail;
    if (p && (p->quant == VLM_Q8_0 || p->quant == VLM_Q4_0)) {
        m->quant = p->quant;
        m->quant_vision = p->quant_vision;
    } else if (p && p->quant != 0) {
        s = vlm_error_set(err, VLM_ERR_ARG, "quantization to %s: only q8_0 and q4_0 are supported", vlm_dtype_name(p->quant));
        goto fail;
    }
    if (p) {
        m->progress = p->progress;
        m->progress_user = p->progress_user;
    }
    for (int i = 0; i < m->weights.n_entries; i++) m->progress_total += (int64_t)m->weights.entries[i].nbytes;
    if ((s = m->arch->load(m, err)) != VLM_OK) goto fail;
    if (m->progress) m->progress(m->progress_user, m->progress_total, m->progress_total);
    *out = m;
    return VLM_OK;
fail:
    vlm_model_free(m);
    return s;
}

void vlm_model_free(vlm_model *m) {
    if (!m) return;
    if (m->arch && m->impl && m->arch->unload) m->arch->unload(m);
    vlm_st_close(&m->weights);
    vlm_json_free(m->config);
    for (int i = 0; i < m->n_quantized; i++) free(m->quantized[i].name);
    free(m->quantized);
    vlm_arena_free(&m->arena);
    if (m->own_backend && m->be) m->be->destroy(m->be);
    free(m->dir);
    free(m);
}

/* Made-up weights for benchmarks: vectors near 1 (norm scales), matrices
 * small and centred so activations stay finite through many layers. Fills
 * t (contiguous, of m->random_dtype). */
static void model_random_fill(vlm_model *m, vlm_tensor *t, int ndim) {
    int64_t n = vlm_nelem(t);
    float scale = ndim == 1 ? 0.1f : 0.04f, offset = ndim == 1 ? 1.0f : 0.0f;
    /* Draw a block of 4099 values (a prime, so rows don't repeat in step) and
     * tile it: the values only need to be plausible, and a 7B model would
     * otherwise take minutes to make up. */
    enum { BLOCK = 4099 };
    size_t es = vlm_dtype_size(t->dtype);
    unsigned char *p = (unsigned char *)t->data;
    uint64_t x = m->rng;
    for (int64_t i = 0; i < n && i < BLOCK; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        float v = offset + scale * ((float)(x >> 40) / (float)(1 << 24) - 0.5f);
        if (t->dtype == VLM_F32) ((float *)t->data)[i] = v;
        else if (t->dtype == VLM_F16) ((uint16_t *)t->data)[i] = vlm_f32_to_f16(v);
        else ((uint16_t *)t->data)[i] = vlm_f32_to_bf16(v);
    }
    for (int64_t done = BLOCK; done < n; done *= 2) /* doubling copies */
        memcpy(p + done * es, p, (size_t)((n - done < done ? n - done : done)) * es);
    m->rng = x;
}
static vlm_tensor *model_random_weight(vlm_model *m, int ndim, const int64_t *shape) {
    vlm_tensor *t = (vlm_tensor *)vlm_arena_alloc(&m->arena, sizeof *t);
    if (!t) return NULL;
    *t = vlm_tensor_make(m->random_dtype, ndim, shape, NULL);
    t->data = vlm_arena_alloc(&m->arena, vlm_nbytes(t));
    if (!t->data) return NULL;
    model_random_fill(m, t, ndim);
    return t;
}

vlm_status vlm_model_check_count(vlm_model *m, int64_t n, const char *what, vlm_error *err) {
    int64_t most = m->random_weights ? 65536 : m->weights.n_entries;
    if (n >= 0 && n <= most) return VLM_OK;
    return vlm_error_set(err, VLM_ERR_CONFIG, "config: %s = %lld, but the checkpoint holds %lld tensors in all", what,
                         (long long)n, (long long)most);
}

vlm_tensor *vlm_weight_opt(vlm_model *m, const char *name) {
    if (m->random_weights) return NULL; /* optional weights are absent in a made-up model */
    const vlm_st_entry *e = vlm_st_find(&m->weights, name);
    if (!e) return NULL;
    vlm_tensor *t = (vlm_tensor *)vlm_arena_alloc(&m->arena, sizeof *t);
    if (!t) return NULL;
    *t = vlm_st_tensor(e);
    return t;
}

static vlm_tensor *model_weight(vlm_model *m, const char *name, int ndim, const int64_t *shape, vlm_error *err);

static void model_progress(vlm_model *m, size_t bytes) {
    m->progress_done += (int64_t)bytes;
    if (m->progress) m->progress(m->progress_user, m->progress_done, m->progress_total);
}

vlm_tensor *vlm_weight(vlm_model *m, const char *name, int ndim, const int64_t *shape, vlm_error *err) {
    vlm_tensor *t = model_weight(m, name, ndim, shape, err);
    if (t) model_progress(m, vlm_nbytes(t));
    return t;
}

/* ------------------------------------------------------------------ quantize at load */

typedef struct model_quant_arg {
    const vlm_tensor *src; /* row r of dst comes from row r % src->shape[0] (made-up weights repeat) */
    vlm_tensor *dst;       /* a block type, or its R8 layout (then the items are groups of 8 rows) */
    int release;           /* src is mmap'd: drop its pages once read */
} model_quant_arg;

/* n elements of row r of src from element k0, to f32 */
static void model_src_f32(const vlm_tensor *src, int64_t r, int64_t k0, int64_t n, float *buf) {
    size_t es = vlm_dtype_size(src->dtype);
    r %= src->shape[0];
    const unsigned char *s = (const unsigned char *)src->data + (size_t)(r * src->stride[0] + k0) * es;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        if (src->dtype == VLM_F32) memcpy(&buf[i], s + (size_t)i * 4, 4);
        else {
            memcpy(&h, s + (size_t)i * 2, 2);
            buf[i] = src->dtype == VLM_F16 ? vlm_f16_to_f32(h) : vlm_bf16_to_f32(h);
        }
    }
}

/* Items [i0, i1) (rows, or groups of 8 rows for an R8 dst) of src into dst's
 * blocks, a few blocks at a time so that no row-sized buffer is needed. */
static void model_quant_rows(void *p, int64_t i0, int64_t i1, int thread) {
    (void)thread;
    const model_quant_arg *A = (const model_quant_arg *)p;
    const vlm_tensor *src = A->src;
    vlm_dtype t = A->dst->dtype, u = vlm_dtype_unpacked(t);
    int64_t K = src->shape[1];
    size_t row_bytes = vlm_dtype_bytes(u, K), bs = vlm_dtype_size(u);
    unsigned char *dst = (unsigned char *)A->dst->data;
    float buf[1024];
    for (int64_t it = i0; it < i1; it++) {
        if (vlm_dtype_rows(t) == 8) { /* block by block: 8 rows' blocks, then interleaved */
            unsigned char blocks[8 * 34];
            for (int64_t k = 0; k < K; k += 32) {
                int64_t n = K - k < 32 ? K - k : 32;
                for (int r = 0; r < 8; r++) {
                    model_src_f32(src, it * 8 + r, k, n, buf);
                    vlm_quantize_row(u, buf, n, blocks + r * bs);
                }
                vlm_repack_r8(t, blocks, 32, dst + (size_t)it * 8 * row_bytes + (size_t)(k / 32) * 8 * bs);
            }
            continue;
        }
        for (int64_t k = 0; k < K; k += 1024) {
            int64_t n = K - k < 1024 ? K - k : 1024;
            model_src_f32(src, it, k, n, buf);
            vlm_quantize_row(u, buf, n, dst + (size_t)it * row_bytes + vlm_dtype_bytes(u, k));
        }
    }
    if (A->release) { /* so that a large table is never resident twice */
        int64_t rows = vlm_dtype_rows(t);
        vlm_map_release((const char *)src->data + (size_t)(i0 * rows * src->stride[0]) * vlm_dtype_size(src->dtype),
                        (size_t)((i1 - i0) * rows * src->stride[0]) * vlm_dtype_size(src->dtype));
    }
}

/* The CPU kernels read groups of 8 rows interleaved (vlm_repack_r8). */
static int model_reads_r8(const vlm_model *m) { return m->be && m->be->name && !strcmp(m->be->name, "cpu"); }

static vlm_dtype model_quant_for(const vlm_model *m, vlm_linear_role role) {
    if (!m->quant || (role == VLM_LINEAR_VISION && !m->quant_vision)) return 0;
    return role == VLM_LINEAR_OUTPUT ? VLM_Q8_0 : m->quant;
}

/* src's rows (a 2-D view; row r taken from r % its rows) quantized to q:
 * a tensor of `ndim` dims shaped as `shape` (experts: [E, N, K], whose
 * rows are src's E * N) in the model's arena; NULL when out of memory. */
static vlm_tensor *model_quantize(vlm_model *m, const vlm_tensor *src, int ndim, const int64_t *shape, vlm_dtype q) {
    vlm_tensor *dst = (vlm_tensor *)vlm_arena_alloc(&m->arena, sizeof *dst);
    if (!dst) return NULL;
    int64_t rows = 1, per = shape[ndim - 2]; /* rows per matrix: groups of 8 must not straddle two */
    for (int d = 0; d < ndim - 1; d++) rows *= shape[d];
    int r8 = per % 8 == 0 && model_reads_r8(m);
    if (r8) q = q == VLM_Q8_0 ? VLM_Q8_0R8 : VLM_Q4_0R8;
    *dst = vlm_tensor_make(q, ndim, shape, NULL);
    if (!(dst->data = vlm_arena_alloc(&m->arena, vlm_nbytes(dst)))) return NULL;
    model_quant_arg A = {src, dst, !m->random_weights};
    vlm_cpu_parallel_for(m->be, r8 ? rows / 8 : rows, r8 ? 2 : 16, model_quant_rows, &A);
    m->quant_bytes += vlm_nbytes(dst);
    return dst;
}

static vlm_status model_record(vlm_model *m, const char *name, const vlm_tensor *t) {
    if ((m->n_quantized & (m->n_quantized - 1)) == 0) { /* capacity doubles at powers of two */
        void *p = realloc(m->quantized, sizeof *m->quantized * (size_t)(m->n_quantized ? 2 * m->n_quantized : 1));
        if (!p) return VLM_ERR_OOM;
        m->quantized = p;
    }
    char *copy = vlm_strdup(name);
    if (!copy) return VLM_ERR_OOM;
    m->quantized[m->n_quantized].name = copy;
    m->quantized[m->n_quantized++].t = t;
    return VLM_OK;
}

static int model_quantizable(const vlm_tensor *t) {
    return (t->ndim == 2 || (t->ndim == 3 && vlm_is_contiguous(t))) &&
           (t->dtype == VLM_F32 || t->dtype == VLM_F16 || t->dtype == VLM_BF16) && t->stride[t->ndim - 1] == 1 &&
           t->shape[t->ndim - 1] > 0 && t->shape[t->ndim - 2] > 0;
}

vlm_tensor *vlm_quantize_weight(vlm_model *m, vlm_tensor *t, vlm_linear_role role, const char *name, vlm_error *err) {
    vlm_dtype q = model_quant_for(m, role);
    if (!t || !q || !model_quantizable(t)) return t;
    vlm_tensor rows = *t; /* a matrix, or experts [E, N, K] as E * N rows */
    if (t->ndim == 3) rows = vlm_tensor_make(t->dtype, 2, (const int64_t[]){t->shape[0] * t->shape[1], t->shape[2]}, t->data);
    vlm_tensor *d = model_quantize(m, &rows, t->ndim, t->shape, q); /* releases t's mmap'd pages as it goes */
    if (!d || model_record(m, name, d) != VLM_OK) {
        vlm_error_set(err, VLM_ERR_OOM, "out of memory quantizing weight %s", name);
        return NULL;
    }
    return d;
}

/* ------------------------------------------------------------------ AWQ checkpoints */

typedef struct model_awq_arg {
    const vlm_tensor *qweight, *qzeros, *scales;
    vlm_tensor *dst;
    int64_t group;
} model_awq_arg;

/* groups of 8 rows (one packed word column) [j0, j1) */
static void model_awq_rows(void *p, int64_t j0, int64_t j1, int tid) {
    (void)tid;
    const model_awq_arg *A = (const model_awq_arg *)p;
    int64_t K = A->dst->shape[1], N = A->dst->shape[0];
    vlm_awq_repack(A->dst->dtype, A->qweight->data, A->qzeros->data, A->scales->data, K, N, A->group, j0, j1,
                   (char *)A->dst->data + (size_t)j0 * 8 * vlm_dtype_bytes(VLM_Q4_Z, K));
}

/* modules_to_not_convert: as transformers and vLLM read it, an entry that
 * occurs in the module's name */
static int model_awq_skipped(const vlm_model *m, const char *module) {
    for (int i = 0; m->awq_skip && i < m->awq_skip->n; i++) {
        const char *s = vlm_json_str(vlm_json_at(m->awq_skip, i), NULL);
        if (s && *s && strstr(module, s)) return 1;
    }
    return 0;
}

static vlm_tensor *model_awq_part(vlm_model *m, const char *module, const char *part, vlm_dtype dt, int64_t d0,
                                  int64_t d1, vlm_error *err) {
    char name[600];
    snprintf(name, sizeof name, "%s.%s", module, part);
    vlm_tensor *t = vlm_weight_opt(m, name);
    if (!t) vlm_error_set(err, VLM_ERR_FORMAT, "AWQ weight %s not found in the checkpoint", name);
    else if (t->dtype != dt || t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1) {
        vlm_error_set(err, VLM_ERR_FORMAT, "AWQ weight %s is %s [%lld, %lld], the config implies %s [%lld, %lld]", name,
                      vlm_dtype_name(t->dtype), (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
                      vlm_dtype_name(dt), (long long)d0, (long long)d1);
        t = NULL;
    }
    return t;
}

/* The linear `name` (...weight) of an AWQ checkpoint as q4_z; NULL with no
 * error when the module is stored unquantized. */
static vlm_tensor *model_awq_linear(vlm_model *m, const char *name, int64_t out, int64_t in, vlm_error *err) {
    char module[512], probe[600];
    size_t n = strlen(name);
    if (n < 8 || n - 7 >= sizeof module || strcmp(name + n - 7, ".weight")) return NULL;
    memcpy(module, name, n - 7);
    module[n - 7] = 0;
    snprintf(probe, sizeof probe, "%s.qweight", module);
    if (model_awq_skipped(m, module) || !vlm_st_find(&m->weights, probe)) return NULL;
    int64_t G = m->awq_group;
    if (out % 8 || in % G) {
        vlm_error_set(err, VLM_ERR_FORMAT, "AWQ weight %s: [%lld, %lld] does not split into 8 outputs per word and groups of %lld inputs",
                      module, (long long)out, (long long)in, (long long)G);
        return NULL;
    }
    model_awq_arg A = {model_awq_part(m, module, "qweight", VLM_I32, in, out / 8, err), NULL, NULL, NULL, G};
    if (A.qweight) A.qzeros = model_awq_part(m, module, "qzeros", VLM_I32, in / G, out / 8, err);
    if (A.qzeros) A.scales = model_awq_part(m, module, "scales", VLM_F16, in / G, out, err);
    if (!A.scales) return NULL;
    int r8 = model_reads_r8(m); /* out is a multiple of 8 */
    vlm_tensor *dst = (vlm_tensor *)vlm_arena_alloc(&m->arena, sizeof *dst);
    if (dst) {
        *dst = vlm_tensor_make(r8 ? VLM_Q4_ZR8 : VLM_Q4_Z, 2, (const int64_t[]){out, in}, NULL);
        dst->data = vlm_arena_alloc(&m->arena, vlm_nbytes(dst));
    }
    if (!dst || !dst->data) {
        vlm_error_set(err, VLM_ERR_OOM, "out of memory for AWQ weight %s", module);
        return NULL;
    }
    A.dst = dst;
    vlm_cpu_parallel_for(m->be, out / 8, 4, model_awq_rows, &A);
    const vlm_tensor *parts[3] = {A.qweight, A.qzeros, A.scales};
    for (int i = 0; i < 3; i++) {
        vlm_map_release(parts[i]->data, vlm_nbytes(parts[i]));
        model_progress(m, vlm_nbytes(parts[i]));
    }
    m->quant_bytes += vlm_nbytes(dst);
    return dst;
}

vlm_tensor *vlm_weight_linear(vlm_model *m, const char *name, int64_t out, int64_t in, vlm_linear_role role,
                              vlm_error *err) {
    const int64_t shape[2] = {out, in};
    if (m->awq_group && !m->random_weights) {
        vlm_tensor *t = model_awq_linear(m, name, out, in, err);
        if (t || err->code) return t;
    }
    vlm_dtype q = model_quant_for(m, role);
    if (!q) return vlm_weight(m, name, 2, shape, err);
    if (!m->random_weights) return vlm_quantize_weight(m, vlm_weight(m, name, 2, shape, err), role, name, err);
    if (out == 0 || in == 0) return vlm_weight(m, name, 2, shape, err);
    /* made up: 64 rows in a temporary, repeated (the values only need to be
     * plausible), so that no float copy of a large table is ever resident */
    vlm_tensor src = vlm_tensor_make(m->random_dtype, 2, (const int64_t[]){out < 64 ? out : 64, in}, NULL);
    src.data = malloc(vlm_nbytes(&src) ? vlm_nbytes(&src) : 1);
    vlm_tensor *d = NULL;
    if (src.data) {
        model_random_fill(m, &src, 2);
        d = model_quantize(m, &src, 2, shape, q);
    }
    free(src.data);
    if (!d) vlm_error_set(err, VLM_ERR_OOM, "out of memory for weight %s", name);
    else model_progress(m, vlm_nbytes(d));
    return d;
}

static vlm_tensor *model_weight(vlm_model *m, const char *name, int ndim, const int64_t *shape, vlm_error *err) {
    if (m->random_weights) {
        vlm_tensor *r = model_random_weight(m, ndim, shape);
        if (!r) vlm_error_set(err, VLM_ERR_OOM, "out of memory for weight %s", name);
        return r;
    }
    vlm_tensor *t = vlm_weight_opt(m, name);
    if (!t) {
        vlm_error_set(err, VLM_ERR_FORMAT, "weight %s not found in the checkpoint", name);
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = shape[i] < 0 || shape[i] == t->shape[i];
    if (!ok) {
        char want[128] = "", got[128] = "";
        for (int i = 0; i < ndim; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)shape[i]);
        for (int i = 0; i < t->ndim; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)t->shape[i]);
        vlm_error_set(err, VLM_ERR_FORMAT, "weight %s has shape [%s], the config implies [%s]", name, got, want);
        return NULL;
    }
    return t;
}

vlm_status vlm_seq_init(vlm_seq *s, vlm_model *m, int n_ctx, int max_batch, vlm_dtype kv_dtype, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    memset(s, 0, sizeof *s);
    if (n_ctx <= 0) return vlm_error_set(err, VLM_ERR_ARG, "context length %d", n_ctx);
    s->model = m;
    s->n_ctx = n_ctx;
    s->max_batch = max_batch > 0 ? max_batch : n_ctx;
    s->kv_dtype = kv_dtype;
    vlm_compute_init(&s->c, m->be);
    return m->arch->seq_init(m, s, err);
}

void vlm_seq_free(vlm_seq *s) {
    if (s->model && s->model->arch->seq_free) s->model->arch->seq_free(s->model, s);
    vlm_kv_free(&s->kv);
    vlm_compute_free(&s->c);
    memset(s, 0, sizeof *s);
}

void vlm_seq_reset(vlm_seq *s) {
    vlm_kv_clear(&s->kv);
    s->n_past = 0;
    s->rope_pos = 0;
}
