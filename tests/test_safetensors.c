/* safetensors reader/writer: real checkpoints against listings made by
 * Python's json module (tests/data/st/listing.py), write/read round trips,
 * corrupted headers, sharded checkpoints. */
#include "vlm.h"
#include "test_util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char tmpdir[64];

static uint32_t fnv1a32(const void *p, size_t n) {
    const unsigned char *b = p;
    uint32_t h = 0x811C9DC5u;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x01000193u;
    return h;
}

/* ------------------------------------------------------------ real files */

static void test_listing(const char *base) {
    char path[256], lpath[256];
    snprintf(path, sizeof path, "tests/data/st/%s.safetensors", base);
    snprintf(lpath, sizeof lpath, "tests/data/st/%s.txt", base);
    FILE *f = fopen(lpath, "r");
    CHECK(f != NULL, "cannot open %s", lpath);
    if (!f) return;
    vlm_safetensors st;
    vlm_error err = {0};
    vlm_status s = vlm_st_open(&st, path, &err);
    CHECK(s == VLM_OK, "%s: %s", path, err.msg);
    if (s != VLM_OK) { fclose(f); return; }
    char line[4096], meta[1024];
    int n = -1;
    CHECK(fgets(line, sizeof line, f) && sscanf(line, "n_tensors %d metadata %1023s", &n, meta) == 2, "listing header");
    CHECK(st.n_entries == n, "%s: %d entries, listing has %d", base, st.n_entries, n);
    CHECK(st.n_files == 1, "n_files %d", st.n_files);
    if (!strcmp(meta, "null")) CHECK(st.metadata == NULL, "%s: metadata should be absent", base);
    else {
        CHECK(st.metadata && st.metadata->type == VLM_JSON_OBJECT, "%s: metadata missing", base);
        CHECK(!strcmp(meta, "{\"format\":\"pt\"}") && !strcmp(vlm_json_str(vlm_json_get(st.metadata, "format"), ""), "pt"),
              "%s: metadata %s", base, meta);
    }
    const unsigned char *data0 = NULL;
    int i = 0;
    while (fgets(line, sizeof line, f)) {
        char name[512], dtype[16];
        int ndim, used = 0;
        if (sscanf(line, "%511s %15s %d%n", name, dtype, &ndim, &used) != 3) { CHECK(0, "bad listing line %s", line); break; }
        const char *p = line + used;
        int64_t shape[8] = {0};
        int k = 0;
        if (ndim == 0) { int u; sscanf(p, " -%n", &u); p += u; }
        for (; k < ndim && k < 8; k++) { long long v; int u; sscanf(p, "%lld%n", &v, &u); shape[k] = v; p += u; }
        unsigned long long b, e;
        unsigned h;
        CHECK(sscanf(p, "%llu %llu %x", &b, &e, &h) == 3, "listing tail %s", p);
        CHECK(i < st.n_entries, "more listing lines than entries");
        if (i >= st.n_entries) break;
        const vlm_st_entry *en = &st.entries[i];
        CHECK(!strcmp(en->name, name), "%s: entry %d is '%s', listing '%s' (sorted order)", base, i, en->name, name);
        CHECK(!strcmp(vlm_dtype_name(en->dtype), dtype), "%s: dtype %s vs %s", name, vlm_dtype_name(en->dtype), dtype);
        CHECK(en->ndim == ndim, "%s: ndim %d vs %d", name, en->ndim, ndim);
        for (int d = 0; d < ndim && d < VLM_MAX_DIMS; d++) CHECK(en->shape[d] == shape[d], "%s: dim %d", name, d);
        CHECK(en->nbytes == e - b, "%s: nbytes %zu vs %llu", name, en->nbytes, e - b);
        if (i == 0 || !data0) data0 = (const unsigned char *)en->data - b; /* data section start */
        CHECK((const unsigned char *)en->data == data0 + b, "%s: data pointer at offset %lld, want %llu", name,
              (long long)((const unsigned char *)en->data - data0), b);
        CHECK(fnv1a32(en->data, en->nbytes) == h, "%s: data hash", name);
        CHECK(vlm_st_find(&st, name) == en, "find %s", name);
        vlm_tensor t = vlm_st_tensor(en);
        CHECK(t.data == en->data && vlm_nbytes(&t) == en->nbytes && t.ndim == ndim, "%s: tensor view", name);
        i++;
    }
    CHECK(i == st.n_entries, "%s: listing has %d lines, %d entries", base, i, st.n_entries);
    CHECK(vlm_st_find(&st, "") == NULL && vlm_st_find(&st, "zzz.not.there") == NULL && vlm_st_find(&st, "a") == NULL, "find absent");
    vlm_st_close(&st);
    fclose(f);
}

static void test_real_values(void) {
    /* Spot-check decoded values: bf16 embeddings are N(0, 0.1²), norm weights N(1, 0.1²). */
    vlm_safetensors st;
    vlm_error err = {0};
    if (vlm_st_open(&st, "tests/data/st/qwen2_5_vl_bf16.safetensors", &err)) { CHECK(0, "%s", err.msg); return; }
    const vlm_st_entry *e = vlm_st_find(&st, "model.norm.weight");
    CHECK(e && e->dtype == VLM_BF16 && e->ndim == 1 && e->shape[0] == 64, "model.norm.weight");
    if (e) {
        vlm_tensor t = vlm_st_tensor(e);
        double mean = 0;
        for (int i = 0; i < 64; i++) mean += vlm_get_f32(&t, i) / 64;
        CHECK(mean > 0.9 && mean < 1.1, "norm weight mean %f", mean);
    }
    vlm_st_close(&st);
    if (vlm_st_open(&st, "tests/data/st/internvl_inputs.safetensors", &err)) { CHECK(0, "%s", err.msg); return; }
    e = vlm_st_find(&st, "input_ids");
    CHECK(e && e->dtype == VLM_I64, "input_ids");
    if (e) {
        vlm_tensor t = vlm_st_tensor(e);
        int ok = 1;
        for (int64_t i = 0; i < e->shape[0]; i++) ok &= vlm_get_i64(&t, i) >= 0 && vlm_get_i64(&t, i) < 1024 * 1024;
        CHECK(ok, "input ids in range");
    }
    vlm_st_close(&st);
}

/* ------------------------------------------------------------ writer */

static void test_roundtrip(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    float f32[24];
    for (int i = 0; i < 24; i++) f32[i] = (float)i * 0.5f - 3;
    uint16_t f16[6], bf16[6];
    for (int i = 0; i < 6; i++) { f16[i] = vlm_f32_to_f16((float)i - 2.5f); bf16[i] = vlm_f32_to_bf16((float)i * 3); }
    int32_t i32[5] = {1, -2, 3, -4, 2147483647};
    int64_t i64[3] = {-1, 1LL << 40, 7};
    uint8_t u8[7] = {0, 1, 2, 3, 250, 255, 9};
    uint8_t bl[3] = {1, 0, 1};
    int64_t s24[6] = {1, 2, 1, 3, 2, 2}, s6[2] = {2, 3}, s5[1] = {5}, s3[1] = {3}, s7[1] = {7}, s0[2] = {4, 0};
    vlm_tensor t[9];
    t[0] = vlm_tensor_make(VLM_F32, 6, s24, f32);
    t[1] = vlm_tensor_make(VLM_F16, 2, s6, f16);
    t[2] = vlm_tensor_make(VLM_BF16, 2, s6, bf16);
    t[3] = vlm_tensor_make(VLM_I32, 1, s5, i32);
    t[4] = vlm_tensor_make(VLM_I64, 1, s3, i64);
    t[5] = vlm_tensor_make(VLM_U8, 1, s7, u8);
    t[6] = vlm_tensor_make(VLM_BOOL, 1, s3, bl);
    t[7] = vlm_tensor_make(VLM_F32, 0, NULL, f32 + 5); /* scalar */
    t[8] = vlm_tensor_make(VLM_F32, 2, s0, NULL);      /* empty */
    const char *names[9] = {"w.f32", "w.f16", "w.bf16", "z \"quoted\\\" \t name", "a.i64", "u8", "mask", "scalar", "empty"};
    const vlm_tensor *tp[9];
    for (int i = 0; i < 9; i++) tp[i] = &t[i];
    vlm_error err = {0};
    vlm_status s = vlm_st_write(path, 9, names, tp, &err);
    CHECK(s == VLM_OK, "write: %s", err.msg);
    /* Header length is a multiple of 8 and the header is padded with spaces. */
    FILE *f = fopen(path, "rb");
    unsigned char len8[8] = {0};
    CHECK(f && fread(len8, 1, 8, f) == 8, "read back");
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | len8[i];
    CHECK(hl % 8 == 0 && hl >= 2, "header length %llu", (unsigned long long)hl);
    if (f) fclose(f);
    vlm_safetensors st;
    s = vlm_st_open(&st, path, &err);
    CHECK(s == VLM_OK, "reopen: %s", err.msg);
    if (s != VLM_OK) return;
    CHECK(st.n_entries == 9 && st.metadata == NULL, "entries %d", st.n_entries);
    for (int i = 1; i < st.n_entries; i++) CHECK(strcmp(st.entries[i - 1].name, st.entries[i].name) < 0, "sorted");
    for (int i = 0; i < 9; i++) {
        const vlm_st_entry *e = vlm_st_find(&st, names[i]);
        CHECK(e != NULL, "find '%s'", names[i]);
        if (!e) continue;
        CHECK(e->dtype == t[i].dtype && e->ndim == t[i].ndim && e->nbytes == vlm_nbytes(&t[i]), "'%s' header", names[i]);
        for (int d = 0; d < t[i].ndim; d++) CHECK(e->shape[d] == t[i].shape[d], "'%s' dim %d", names[i], d);
        CHECK(e->nbytes == 0 || !memcmp(e->data, t[i].data, e->nbytes), "'%s' data", names[i]);
        CHECK((uintptr_t)e->data % vlm_dtype_size(e->dtype) == 0, "'%s' data aligned to its element size", names[i]);
    }
    const vlm_st_entry *e = vlm_st_find(&st, "w.bf16");
    if (e) { vlm_tensor v = vlm_st_tensor(e); CHECK(vlm_get_f32(&v, 5) == 15.0f, "bf16 value"); }
    e = vlm_st_find(&st, "scalar");
    if (e) { vlm_tensor v = vlm_st_tensor(e); CHECK(vlm_nelem(&v) == 1 && vlm_get_f32(&v, 0) == f32[5], "scalar value"); }
    vlm_st_close(&st);
    CHECK(st.entries == NULL && st.n_entries == 0, "close clears");

    /* Writer argument errors. */
    const char *dup[2] = {"x", "x"};
    const vlm_tensor *tp2[2] = {&t[0], &t[1]};
    vlm_error_clear(&err);
    CHECK(vlm_st_write(path, 2, dup, tp2, &err) == VLM_ERR_ARG && strstr(err.msg, "twice"), "duplicate names: %s", err.msg);
    vlm_tensor nc = t[1];
    nc.stride[0] = 1; nc.stride[1] = 2; /* transposed view */
    const vlm_tensor *tp3[1] = {&nc};
    const char *n1[1] = {"nc"};
    vlm_error_clear(&err);
    CHECK(vlm_st_write(path, 1, n1, tp3, &err) == VLM_ERR_ARG && strstr(err.msg, "contiguous"), "non-contiguous: %s", err.msg);
    vlm_error_clear(&err);
    CHECK(vlm_st_write("/nonexistent-dir/x.safetensors", 1, names, tp, &err) == VLM_ERR_IO, "unwritable path: %s", err.msg);
    /* Zero tensors: "{}" padded. */
    vlm_error_clear(&err);
    CHECK(vlm_st_write(path, 0, NULL, NULL, &err) == VLM_OK, "empty write: %s", err.msg);
    CHECK(vlm_st_open(&st, path, &err) == VLM_OK && st.n_entries == 0, "empty open: %s", err.msg);
    vlm_st_close(&st);
}

/* ------------------------------------------------------------ corruption */

/* Writes a file: 8-byte length (hlen_override if nonzero, else the header's),
 * the header, then ndata bytes of data. */
static void write_raw(const char *path, const char *header, uint64_t hlen_override, size_t ndata) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    uint64_t hl = hlen_override ? hlen_override : strlen(header);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < ndata; i++) fputc((int)(i * 7), f);
    fclose(f);
}

static void expect_bad(const char *what, const char *header, uint64_t hlen, size_t ndata,
                       vlm_status code, const char *needle) {
    char path[128];
    snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
    write_raw(path, header, hlen, ndata);
    vlm_safetensors st;
    vlm_error err = {0};
    vlm_status s = vlm_st_open(&st, path, &err);
    CHECK(s == code, "%s: got %s (%s), want %s", what, vlm_status_name(s), err.msg, vlm_status_name(code));
    CHECK(err.code == code && err.msg[0] && strstr(err.msg, needle) && strstr(err.msg, path),
          "%s: message '%s' should name the file and mention '%s'", what, err.msg, needle);
    CHECK(st.n_entries == 0 && st.entries == NULL && st.files == NULL, "%s: st cleared on failure", what);
    if (s == VLM_OK) vlm_st_close(&st);
}

#define ENT(name, dt, shape, b, e) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_corrupt(void) {
    /* A valid baseline first, so the failures below are the intended ones. */
    {
        char path[128];
        snprintf(path, sizeof path, "%s/ok.safetensors", tmpdir);
        write_raw(path, "{" ENT("a", "F32", "[2,3]", 0, 24) "," ENT("b", "U8", "[4]", 24, 28) ",\"__metadata__\":{\"k\":\"v\"}}   ", 0, 28);
        vlm_safetensors st;
        vlm_error err = {0};
        CHECK(vlm_st_open(&st, path, &err) == VLM_OK && st.n_entries == 2, "baseline: %s", err.msg);
        CHECK(!strcmp(vlm_json_str(vlm_json_get(st.metadata, "k"), ""), "v"), "baseline metadata");
        vlm_st_close(&st);
    }
    const char *good = "{" ENT("a", "F32", "[2,3]", 0, 24) "}";
    /* Size / length field */
    expect_bad("empty file", "", 0, 0, VLM_ERR_FORMAT, "too small");
    {
        char path[128];
        snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
        FILE *f = fopen(path, "wb");
        fwrite("\x10\0\0", 1, 3, f);
        fclose(f);
        vlm_safetensors st;
        vlm_error err = {0};
        CHECK(vlm_st_open(&st, path, &err) == VLM_ERR_FORMAT && strstr(err.msg, "too small"), "3-byte file: %s", err.msg);
    }
    {
        char path[128];
        snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
        fclose(fopen(path, "wb")); /* 0 bytes */
        vlm_safetensors st;
        vlm_error err = {0};
        CHECK(vlm_st_open(&st, path, &err) == VLM_ERR_FORMAT && strstr(err.msg, "too small"), "0-byte file: %s", err.msg);
    }
    /* a header length that runs past the end of the file by less than the 8 length bytes */
    expect_bad("header length 6 bytes past the end", "{" ENT("a", "U8", "[4]", 0, 4) "}",
               strlen("{" ENT("a", "U8", "[4]", 0, 4) "}") + 6, 4, VLM_ERR_FORMAT, "truncated file");
    expect_bad("one-byte gap", "{" ENT("a", "U8", "[2]", 0, 2) "," ENT("b", "U8", "[2]", 3, 5) "}", 0, 5,
               VLM_ERR_FORMAT, "gap of 1 bytes");
    expect_bad("header length 0", "", 0, 0, VLM_ERR_FORMAT, "too small");
    expect_bad("header length 1", "{", 0, 0, VLM_ERR_FORMAT, "too small");
    expect_bad("huge header length", good, 1ULL << 40, 24, VLM_ERR_FORMAT, "limit");
    expect_bad("header length > file", good, strlen(good) + 100, 24, VLM_ERR_FORMAT, "truncated");
    expect_bad("truncated data", good, 0, 20, VLM_ERR_FORMAT, "past the end");
    expect_bad("truncated header", "{\"a\":{\"dtype\":\"F32\",\"sha", strlen(good), 0, VLM_ERR_FORMAT, "truncated");
    /* JSON */
    expect_bad("bad JSON", "{\"a\":{\"dtype\":\"F32\",,}}", 0, 0, VLM_ERR_FORMAT, "line 1, column 21");
    expect_bad("not an object", "[1,2]   ", 0, 0, VLM_ERR_FORMAT, "does not start with '{'");
    expect_bad("binary garbage", "\x01\x02\x03\x04", 0, 0, VLM_ERR_FORMAT, "does not start");
    expect_bad("entry not object", "{\"a\":3}", 0, 0, VLM_ERR_FORMAT, "'a'");
    expect_bad("missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4, VLM_ERR_FORMAT, "dtype");
    expect_bad("missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 0, 4, VLM_ERR_FORMAT, "shape");
    expect_bad("missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, 4, VLM_ERR_FORMAT, "data_offsets");
    expect_bad("3 offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 0, 4, VLM_ERR_FORMAT, "data_offsets");
    expect_bad("metadata not strings", "{\"__metadata__\":{\"k\":1}}", 0, 0, VLM_ERR_FORMAT, "__metadata__");
    /* Values */
    expect_bad("unknown dtype", "{" ENT("a", "F8_E4M3", "[4]", 0, 4) "}", 0, 4, VLM_ERR_UNSUPPORTED, "F8_E4M3");
    expect_bad("too many dims", "{" ENT("a", "U8", "[1,1,1,1,1,1,1]", 0, 1) "}", 0, 1, VLM_ERR_UNSUPPORTED, "7 dimensions");
    expect_bad("negative dim", "{" ENT("a", "F32", "[2,-3]", 0, 24) "}", 0, 24, VLM_ERR_FORMAT, "negative dimension");
    expect_bad("fractional dim", "{" ENT("a", "F32", "[2.5]", 0, 10) "}", 0, 10, VLM_ERR_FORMAT, "shape[0]");
    expect_bad("string dim", "{" ENT("a", "F32", "[\"2\"]", 0, 8) "}", 0, 8, VLM_ERR_FORMAT, "shape[0]");
    expect_bad("shape overflow", "{" ENT("a", "F32", "[4294967296,4294967296,4294967296]", 0, 0) "}", 0, 0, VLM_ERR_FORMAT, "overflow");
    expect_bad("size mismatch", "{" ENT("a", "F32", "[2,3]", 0, 20) "}", 0, 24, VLM_ERR_FORMAT, "need 24");
    expect_bad("offset past end", "{" ENT("a", "F32", "[2,3]", 8, 32) "}", 0, 24, VLM_ERR_FORMAT, "past the end");
    expect_bad("end < begin", "{" ENT("a", "F32", "[0]", 8, 4) "}", 0, 24, VLM_ERR_FORMAT, "end 4 < begin 8");
    expect_bad("negative offset", "{" ENT("a", "F32", "[1]", -4, 0) "}", 0, 24, VLM_ERR_FORMAT, "non-negative");
    expect_bad("overlap", "{" ENT("a", "F32", "[2]", 0, 8) "," ENT("b", "F32", "[2]", 4, 12) "}", 0, 12, VLM_ERR_FORMAT, "overlaps");
    expect_bad("gap", "{" ENT("a", "F32", "[1]", 0, 4) "," ENT("b", "F32", "[1]", 8, 12) "}", 0, 12, VLM_ERR_FORMAT, "gap");
    expect_bad("trailing data", good, 0, 30, VLM_ERR_FORMAT, "cover 24");
    expect_bad("duplicate name", "{" ENT("a", "F32", "[1]", 0, 4) "," ENT("a", "F32", "[1]", 4, 8) "}", 0, 8, VLM_ERR_FORMAT, "twice");
    /* Paths */
    vlm_safetensors st;
    vlm_error err = {0};
    CHECK(vlm_st_open(&st, "/nonexistent/model.safetensors", &err) == VLM_ERR_IO && strstr(err.msg, "/nonexistent"), "missing: %s", err.msg);
    vlm_error_clear(&err);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/emptydir", tmpdir);
    vlm_make_dir(sub);
    CHECK(vlm_st_open(&st, sub, &err) == VLM_ERR_IO && strstr(err.msg, "model.safetensors"), "empty dir: %s", err.msg);
}

/* ------------------------------------------------------------ shards */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) { fputs(text, f); fclose(f); }
}

static void test_sharded(void) {
    char dir[128], p1[192], p2[192], idx[192];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    vlm_make_dir(dir);
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    float a[6] = {1, 2, 3, 4, 5, 6}, b[4] = {-1, -2, -3, -4}, c[2] = {9, 8};
    int64_t sa[2] = {2, 3}, sb[1] = {4}, sc[1] = {2};
    vlm_tensor ta = vlm_tensor_make(VLM_F32, 2, sa, a), tb = vlm_tensor_make(VLM_F32, 1, sb, b), tc = vlm_tensor_make(VLM_F32, 1, sc, c);
    const char *n1[2] = {"model.layers.1.w", "lm_head.weight"}, *n2[1] = {"model.embed.weight"};
    const vlm_tensor *t1[2] = {&ta, &tb}, *t2[1] = {&tc};
    vlm_error err = {0};
    CHECK(vlm_st_write(p1, 2, n1, t1, &err) == VLM_OK, "shard 1: %s", err.msg);
    CHECK(vlm_st_write(p2, 1, n2, t2, &err) == VLM_OK, "shard 2: %s", err.msg);
    write_text(idx, "{\"metadata\": {\"total_size\": 48}, \"weight_map\": {\n"
                    "  \"lm_head.weight\": \"model-00001-of-00002.safetensors\",\n"
                    "  \"model.embed.weight\": \"model-00002-of-00002.safetensors\",\n"
                    "  \"model.layers.1.w\": \"model-00001-of-00002.safetensors\"}}");
    const char *paths[2] = {idx, dir};
    for (int k = 0; k < 2; k++) {
        vlm_safetensors st;
        vlm_error_clear(&err);
        vlm_status s = vlm_st_open(&st, paths[k], &err);
        CHECK(s == VLM_OK, "open sharded via %s: %s", paths[k], err.msg);
        if (s != VLM_OK) continue;
        CHECK(st.n_files == 2 && st.n_entries == 3, "files %d entries %d", st.n_files, st.n_entries);
        CHECK(!strcmp(st.entries[0].name, "lm_head.weight") && !strcmp(st.entries[1].name, "model.embed.weight") &&
              !strcmp(st.entries[2].name, "model.layers.1.w"), "merged and sorted");
        const vlm_st_entry *e = vlm_st_find(&st, "model.embed.weight");
        CHECK(e && e->nbytes == 8 && !memcmp(e->data, c, 8), "shard 2 data");
        e = vlm_st_find(&st, "model.layers.1.w");
        CHECK(e && e->ndim == 2 && e->shape[1] == 3 && !memcmp(e->data, a, 24), "shard 1 data");
        e = vlm_st_find(&st, "lm_head.weight");
        CHECK(e && !memcmp(e->data, b, 16), "shard 1 data b");
        vlm_st_close(&st);
    }
    /* A directory holding model.safetensors wins over nothing else. */
    {
        char d2[128], p[192];
        snprintf(d2, sizeof d2, "%s/single", tmpdir);
        vlm_make_dir(d2);
        snprintf(p, sizeof p, "%s/model.safetensors", d2);
        CHECK(vlm_st_write(p, 1, n2, t2, &err) == VLM_OK, "single: %s", err.msg);
        vlm_safetensors st;
        CHECK(vlm_st_open(&st, d2, &err) == VLM_OK && st.n_entries == 1, "open dir with model.safetensors: %s", err.msg);
        vlm_st_close(&st);
    }
    struct { const char *what, *text; vlm_status code; const char *needle; } bad[] = {
        {"duplicate across shards", "{\"weight_map\": {\"model.embed.weight\": \"model-00002-of-00002.safetensors\","
                                    "\"x\": \"dup.safetensors\"}}", VLM_ERR_FORMAT, "twice"},
        {"tensor not in its shard", "{\"weight_map\": {\"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}",
         VLM_ERR_FORMAT, "not in"},
        {"missing shard", "{\"weight_map\": {\"a\": \"model-00003-of-00003.safetensors\"}}", VLM_ERR_IO, "model-00003"},
        {"no weight_map", "{\"metadata\": {}}", VLM_ERR_FORMAT, "weight_map"},
        {"bad JSON", "{\"weight_map\": {\"a\": }}", VLM_ERR_FORMAT, "line 1, column 22"},
        {"escaping path", "{\"weight_map\": {\"a\": \"../x.safetensors\"}}", VLM_ERR_FORMAT, "outside"},
        {"non-string file", "{\"weight_map\": {\"a\": 3}}", VLM_ERR_FORMAT, "weight_map"},
    };
    char dup[192];
    snprintf(dup, sizeof dup, "%s/dup.safetensors", dir);
    const char *nd[2] = {"model.embed.weight", "x"};
    const vlm_tensor *td[2] = {&tc, &tc};
    CHECK(vlm_st_write(dup, 2, nd, td, &err) == VLM_OK, "dup shard: %s", err.msg);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(idx, bad[i].text);
        vlm_safetensors st;
        vlm_error_clear(&err);
        vlm_status s = vlm_st_open(&st, idx, &err);
        CHECK(s == bad[i].code && strstr(err.msg, bad[i].needle), "%s: %s (%s)", bad[i].what, vlm_status_name(s), err.msg);
        CHECK(st.entries == NULL && st.files == NULL, "%s: cleared", bad[i].what);
        if (s == VLM_OK) vlm_st_close(&st);
    }
}

static void rm_rf(const char *dir) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (TEST_SHELL && system(cmd)) {}
}

int main(void) {
    strcpy(tmpdir, "/tmp/vlm_test_st_XXXXXX");
    if (!test_mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    test_listing("qwen2_5_vl_bf16");
    test_listing("internvl");
    test_listing("internvl_inputs");
    test_real_values();
    test_roundtrip();
    test_corrupt();
    test_sharded();
    rm_rf(tmpdir);
    TEST_MAIN_END();
}
