/* AWQ checkpoints that lie or ask for what vlm does not run: each is a
 * one-line error from vlm_model_load naming the problem, never a crash or
 * a model with garbage weights. The folder edited is tests/awq/qwen2_5_vl
 * (tools/pack_awq.py), whose logits tests/run.sh checks against the
 * dequantized reference; here, a copy with its config.json edited by sed,
 * or its tensors rewritten through vlm_st_write. */
#include "vlm.h"
#include "test_util.h"

#define AWQ "tests/awq/qwen2_5_vl/model"
#define LIE "build/awq_lie"
#define Q0 "model.layers.0.self_attn.q_proj"

static vlm_status load(vlm_error *err) {
    vlm_model *m = NULL;
    vlm_model_params mp = {.n_threads = 1};
    vlm_status st = vlm_model_load(&m, LIE, &mp, err);
    vlm_model_free(m);
    return st;
}

static int copy_folder(const char *sed) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "rm -rf " LIE " && mkdir -p " LIE " && cp " AWQ "/*.json " LIE "/ && "
             "ln -sf ../../" AWQ "/model.safetensors " LIE "/model.safetensors%s%s%s",
             sed ? " && sed -i '" : "", sed ? sed : "", sed ? "' " LIE "/config.json" : "");
    return system(cmd);
}

static void test_config(void) {
    static const struct { const char *sed, *want; vlm_status code; } cases[] = {
        {"s/\"quant_method\": \"awq\"/\"quant_method\": \"gptq\"/", "gptq", VLM_ERR_UNSUPPORTED},
        {"s/\"bits\": 4/\"bits\": 8/", "8 bits", VLM_ERR_UNSUPPORTED},
        {"s/\"version\": \"gemm\"/\"version\": \"gemv\"/", "gemv", VLM_ERR_UNSUPPORTED},
        {"s/\"zero_point\": true/\"zero_point\": false/", "zero point", VLM_ERR_UNSUPPORTED},
        {"s/\"group_size\": 64/\"group_size\": 48/", "group size 48", VLM_ERR_UNSUPPORTED},
        {"s/\"group_size\": 64/\"group_size\": 32/", Q0 ".qzeros", VLM_ERR_FORMAT},  /* the tensors say 64 */
        /* a module the list leaves unconverted is read as stored: this one is not */
        {"s/\"visual\",/\"visual\", \"layers.0.self_attn.q_proj\",/", Q0 ".weight not found", VLM_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (copy_folder(cases[i].sed) != 0 || system("! cmp -s " LIE "/config.json " AWQ "/config.json") != 0) {
            CHECK(0, "edit the config with %s", cases[i].sed);
            continue;
        }
        vlm_error err = {0};
        vlm_status st = load(&err);
        CHECK(st == cases[i].code && strstr(err.msg, cases[i].want) && !strchr(err.msg, '\n'), "%s: %s (%s)",
              cases[i].sed, vlm_status_name(st), err.msg);
    }
    /* the module left unconverted by the list loads as stored, the others as AWQ */
    CHECK(copy_folder(NULL) == 0, "copy");
    vlm_error err = {0};
    CHECK(load(&err) == VLM_OK, "the folder as packed: %s", err.msg);
}

/* The checkpoint rewritten with tensor `drop` left out and tensor `swap`
 * replaced by `with`. */
static void test_tensors(void) {
    static const struct { const char *name, *how, *want; } cases[] = {
        {Q0 ".qzeros", "drop", Q0 ".qzeros not found"},
        {Q0 ".scales", "f32", Q0 ".scales is F32"},
        {Q0 ".qweight", "transpose", Q0 ".qweight is I32 [8, 64]"},
    };
    vlm_safetensors st = {0};
    vlm_error err = {0};
    if (vlm_st_open(&st, AWQ "/model.safetensors", &err) != VLM_OK) {
        CHECK(0, "open: %s", err.msg);
        return;
    }
    const char **names = malloc(sizeof *names * (size_t)st.n_entries);
    vlm_tensor *ts = malloc(sizeof *ts * (size_t)st.n_entries);
    const vlm_tensor **tp = malloc(sizeof *tp * (size_t)st.n_entries);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(copy_folder(NULL) == 0 && system("rm " LIE "/model.safetensors") == 0, "copy");
        int n = 0;
        float *f32 = NULL;
        for (int k = 0; k < st.n_entries; k++) {
            vlm_tensor t = vlm_st_tensor(&st.entries[k]);
            if (!strcmp(st.entries[k].name, cases[i].name)) {
                if (!strcmp(cases[i].how, "drop")) continue;
                if (!strcmp(cases[i].how, "f32")) {
                    f32 = malloc(sizeof(float) * (size_t)vlm_nelem(&t));
                    for (int64_t j = 0; j < vlm_nelem(&t); j++) f32[j] = vlm_get_f32(&t, j);
                    t = vlm_tensor_make(VLM_F32, t.ndim, t.shape, f32);
                } else t = vlm_tensor_make(t.dtype, 2, (const int64_t[]){t.shape[1], t.shape[0]}, t.data);
            }
            names[n] = st.entries[k].name;
            ts[n++] = t;
        }
        for (int k = 0; k < n; k++) tp[k] = &ts[k];
        CHECK(vlm_st_write(LIE "/model.safetensors", n, names, tp, &err) == VLM_OK, "write: %s", err.msg);
        free(f32);
        vlm_error e2 = {0};
        vlm_status s = load(&e2);
        CHECK(s == VLM_ERR_FORMAT && strstr(e2.msg, cases[i].want) && !strchr(e2.msg, '\n'), "%s %s: %s (%s)",
              cases[i].how, cases[i].name, vlm_status_name(s), e2.msg);
    }
    free(names);
    free(ts);
    free(tp);
    vlm_st_close(&st);
}

int main(void) {
    TEST_MAIN_NEEDS_SHELL("AWQ folders edited with sed, cp and ln");
    test_config();
    test_tensors();
    TEST_MAIN_END();
}
