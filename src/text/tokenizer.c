/* Tokenizers: HF tokenizer.json BPE models (byte-level and byte-fallback),
 * added/special tokens, normalizers, pre-tokenizers, post-processor, decoders.
 *
 * Pre-tokenizer regexes are not interpreted: the Split patterns the supported
 * tokenizers use (GPT-2, Qwen2, Llama 3) are recognized and run by hand-written
 * matchers with the regex's leftmost-first backtracking semantics. */
#include "text/vlm_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ ids */

static vlm_status tok_grow(vlm_tokens *t, int need, vlm_error *err) {
    if (t->n + need <= t->cap) return VLM_OK;
    int cap = t->cap ? t->cap : 64;
    while (cap < t->n + need) cap *= 2;
    int32_t *p = realloc(t->ids, (size_t)cap * sizeof *p);
    if (!p) return vlm_error_set(err, VLM_ERR_OOM, "out of memory for %d token ids", cap);
    t->ids = p;
    t->cap = cap;
    return VLM_OK;
}

vlm_status vlm_tokens_push(vlm_tokens *t, int32_t id, vlm_error *err) {
    if (t->n >= t->cap && tok_grow(t, 1, err)) return err ? err->code : VLM_ERR_OOM;
    t->ids[t->n++] = id;
    return VLM_OK;
}

vlm_status vlm_tokens_push_n(vlm_tokens *t, int32_t id, int count, vlm_error *err) {
    if (count <= 0) return VLM_OK;
    if (tok_grow(t, count, err)) return err ? err->code : VLM_ERR_OOM;
    for (int i = 0; i < count; i++) t->ids[t->n++] = id;
    return VLM_OK;
}

void vlm_tokens_free(vlm_tokens *t) {
    free(t->ids);
    t->ids = NULL;
    t->n = t->cap = 0;
}

/* ------------------------------------------------------------------ hash maps */

static uint64_t tok_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ULL; }
    return h ^ (h >> 29);
}

/* Open addressing: string -> id, strings owned by the tokenizer's pieces. */
typedef struct tok_strmap {
    int32_t *slots; /* id or -1 */
    uint32_t mask;
} tok_strmap;

/* Merge table: (left id, right id) -> rank, merged id. */
typedef struct tok_merge_slot {
    uint64_t key; /* (left << 32 | right) + 1; 0 = empty */
    int32_t rank, id;
} tok_merge_slot;

typedef struct tok_added {
    char *s;
    int len;
    int32_t id;
    int special, lstrip, rstrip, single_word, normalized;
} tok_added;

enum { TOK_PRE_QWEN = 1, TOK_PRE_GPT2, TOK_PRE_LLAMA3, TOK_PRE_DIGITS, TOK_PRE_SPLIT_STR,
       TOK_PRE_WHITESPACE_SPLIT };
enum { TOK_BEH_REMOVED = 0, TOK_BEH_ISOLATED, TOK_BEH_MERGED_PREV, TOK_BEH_MERGED_NEXT, TOK_BEH_CONTIGUOUS };
typedef struct tok_pre {
    int kind;
    int individual;      /* DIGITS */
    char *pat; int pat_len; int behavior; /* SPLIT_STR */
} tok_pre;

enum { TOK_NORM_NFC = 1, TOK_NORM_REPLACE, TOK_NORM_PREPEND };
typedef struct tok_norm {
    int kind;
    char *a; int a_len;  /* REPLACE pattern / PREPEND text */
    char *b; int b_len;  /* REPLACE content */
} tok_norm;

enum { TOK_DEC_BYTELEVEL = 1, TOK_DEC_REPLACE, TOK_DEC_BYTEFALLBACK, TOK_DEC_FUSE, TOK_DEC_STRIP };
typedef struct tok_dec {
    int kind;
    char *a; int a_len;
    char *b; int b_len;
    int start, stop; /* STRIP */
} tok_dec;

#define TOK_MAX_STEPS 8

struct vlm_tokenizer {
    int n_vocab;
    char **piece;      /* id -> string (NULL if unused id) */
    int *piece_len;
    tok_strmap vocab;  /* model vocabulary + added tokens */
    tok_merge_slot *merges;
    uint64_t merge_mask;
    int n_merges;
    int byte_level;        /* BPE symbols are GPT-2 byte-to-unicode chars */
    int byte_fallback;
    int32_t unk_id;        /* model unk id or -1 */
    int fuse_unk;
    int32_t byte_id[256];  /* byte-level: id of each byte's char; fallback: <0xNN> */
    char *cont_prefix; int cont_prefix_len; /* continuing_subword_prefix (unsupported if set) */
    tok_added *added;
    int n_added;
    unsigned char added_first[256]; /* bytes that start some added token */
    /* Trie over added-token strings: (node, byte) -> child in an open-addressing table. */
    uint64_t *trie_key; int32_t *trie_child; uint64_t trie_mask;
    int32_t *trie_term; int n_trie;   /* per node: index into added, or -1 */
    unsigned char *special; /* per id */
    tok_norm norm[TOK_MAX_STEPS]; int n_norm;
    tok_pre pre[TOK_MAX_STEPS]; int n_pre;
    tok_dec dec[TOK_MAX_STEPS]; int n_dec;
    int32_t post_prefix[8], post_suffix[8];
    int n_post_prefix, n_post_suffix;
    int has_template_post; /* post_processor is a TemplateProcessing */
    /* tokenizer_config.json */
    vlm_tokenizer_info info;
    char *bos_str, *eos_str, *chat_template;
};

static uint32_t tok_pow2(uint64_t n) {
    uint32_t c = 16;
    while (c < n * 2) c <<= 1;
    return c;
}

static int32_t tok_map_get(const vlm_tokenizer *t, const char *s, size_t n) {
    if (!t->vocab.slots) return -1;
    uint32_t i = (uint32_t)tok_hash(s, n) & t->vocab.mask;
    for (;;) {
        int32_t id = t->vocab.slots[i];
        if (id < 0) return -1;
        if ((size_t)t->piece_len[id] == n && !memcmp(t->piece[id], s, n)) return id;
        i = (i + 1) & t->vocab.mask;
    }
}

static void tok_map_put(vlm_tokenizer *t, int32_t id) {
    uint32_t i = (uint32_t)tok_hash(t->piece[id], (size_t)t->piece_len[id]) & t->vocab.mask;
    for (;;) {
        int32_t o = t->vocab.slots[i];
        if (o < 0) { t->vocab.slots[i] = id; return; }
        if (o == id) return;
        if (t->piece_len[o] == t->piece_len[id] && !memcmp(t->piece[o], t->piece[id], (size_t)t->piece_len[id])) {
            t->vocab.slots[i] = id; /* later definition (added token) wins */
            return;
        }
        i = (i + 1) & t->vocab.mask;
    }
}

static const tok_merge_slot *tok_merge_get(const vlm_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t i = (key * 0x9E3779B97F4A7C15ULL >> 17) & t->merge_mask;
    for (;;) {
        const tok_merge_slot *s = &t->merges[i];
        if (s->key == key) return s;
        if (!s->key) return NULL;
        i = (i + 1) & t->merge_mask;
    }
}

static int tok_merge_put(vlm_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t i = (key * 0x9E3779B97F4A7C15ULL >> 17) & t->merge_mask;
    for (;;) {
        tok_merge_slot *s = &t->merges[i];
        if (s->key == key) return 0; /* duplicate: keep the first (lowest rank) */
        if (!s->key) { s->key = key; s->rank = rank; s->id = id; return 1; }
        i = (i + 1) & t->merge_mask;
    }
}

/* ------------------------------------------------------------------ GPT-2 byte <-> unicode */

static uint32_t tok_byte_to_cp(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    int n = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF))) n++;
    return 256 + (uint32_t)n;
}

static int tok_cp_to_byte(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return (int)cp;
    if (cp < 256 || cp >= 256 + 68) return -1;
    int n = (int)(cp - 256);
    for (int i = 0; i < 256; i++)
        if (!((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF)))
            if (n-- == 0) return i;
    return -1;
}


/* ------------------------------------------------------------------ byte buffer */


/* ------------------------------------------------------------------ loading */

static char *tok_strndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

static int tok_str_pattern(const vlm_json *pat, const char **s, int *len, int *is_regex) {
    const vlm_json *p;
    if ((p = vlm_json_get(pat, "String")) && p->type == VLM_JSON_STRING) { *s = p->str; *len = p->n; *is_regex = 0; return 1; }
    if ((p = vlm_json_get(pat, "Regex")) && p->type == VLM_JSON_STRING) { *s = p->str; *len = p->n; *is_regex = 1; return 1; }
    return 0;
}

static const char tok_re_gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char tok_re_qwen[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char tok_re_llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static vlm_status tok_add_pre(vlm_tokenizer *t, tok_pre p, vlm_error *err) {
    if (t->n_pre >= TOK_MAX_STEPS) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: too many pre-tokenizer steps");
    t->pre[t->n_pre++] = p;
    return VLM_OK;
}

static vlm_status tok_load_pre(vlm_tokenizer *t, const vlm_json *j, vlm_error *err) {
    if (!j || j->type == VLM_JSON_NULL) return VLM_OK;
    const char *type = vlm_json_str(vlm_json_get(j, "type"), NULL);
    if (!type) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: pre_tokenizer without a type");
    tok_pre p;
    memset(&p, 0, sizeof p);
    if (!strcmp(type, "Sequence")) {
        const vlm_json *a = vlm_json_get(j, "pretokenizers");
        if (!a || a->type != VLM_JSON_ARRAY) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: Sequence pre_tokenizer without pretokenizers");
        for (int i = 0; i < a->n; i++)
            if (tok_load_pre(t, &a->items[i], err)) return err->code;
        return VLM_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        t->byte_level = 1;
        if (vlm_json_bool(vlm_json_get(j, "add_prefix_space"), 0))
            return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: ByteLevel add_prefix_space is not supported");
        if (vlm_json_bool(vlm_json_get(j, "use_regex"), 1)) { p.kind = TOK_PRE_GPT2; return tok_add_pre(t, p, err); }
        return VLM_OK;
    }
    if (!strcmp(type, "Digits")) {
        p.kind = TOK_PRE_DIGITS;
        p.individual = vlm_json_bool(vlm_json_get(j, "individual_digits"), 0);
        return tok_add_pre(t, p, err);
    }
    if (!strcmp(type, "Split")) {
        const char *s; int len, is_regex;
        if (!tok_str_pattern(vlm_json_get(j, "pattern"), &s, &len, &is_regex))
            return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: Split pre_tokenizer without a pattern");
        const char *beh = vlm_json_str(vlm_json_get(j, "behavior"), "Isolated");
        if (vlm_json_bool(vlm_json_get(j, "invert"), 0))
            return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: inverted Split is not supported");
        if (is_regex) {
            if (strcmp(beh, "Isolated"))
                return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: regex Split with behavior %s is not supported", beh);
            if (!strcmp(s, tok_re_qwen)) p.kind = TOK_PRE_QWEN;
            else if (!strcmp(s, tok_re_gpt2)) p.kind = TOK_PRE_GPT2;
            else if (!strcmp(s, tok_re_llama3)) p.kind = TOK_PRE_LLAMA3;
            else return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: unsupported Split regex %.200s", s);
            return tok_add_pre(t, p, err);
        }
        p.kind = TOK_PRE_SPLIT_STR;
        if (!strcmp(beh, "Removed")) p.behavior = TOK_BEH_REMOVED;
        else if (!strcmp(beh, "Isolated")) p.behavior = TOK_BEH_ISOLATED;
        else if (!strcmp(beh, "MergedWithPrevious")) p.behavior = TOK_BEH_MERGED_PREV;
        else if (!strcmp(beh, "MergedWithNext")) p.behavior = TOK_BEH_MERGED_NEXT;
        else if (!strcmp(beh, "Contiguous")) p.behavior = TOK_BEH_CONTIGUOUS;
        else return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: unknown Split behavior %s", beh);
        if (len == 0) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: empty Split pattern");
        p.pat = tok_strndup(s, (size_t)len);
        p.pat_len = len;
        if (!p.pat) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
        return tok_add_pre(t, p, err);
    }
    if (!strcmp(type, "WhitespaceSplit")) { p.kind = TOK_PRE_WHITESPACE_SPLIT; return tok_add_pre(t, p, err); }
    return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: unsupported pre_tokenizer type %s", type);
}

static vlm_status tok_load_norm(vlm_tokenizer *t, const vlm_json *j, vlm_error *err) {
    if (!j || j->type == VLM_JSON_NULL) return VLM_OK;
    const char *type = vlm_json_str(vlm_json_get(j, "type"), NULL);
    if (!type) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: normalizer without a type");
    if (!strcmp(type, "Sequence")) {
        const vlm_json *a = vlm_json_get(j, "normalizers");
        if (!a || a->type != VLM_JSON_ARRAY) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: Sequence normalizer without normalizers");
        for (int i = 0; i < a->n; i++)
            if (tok_load_norm(t, &a->items[i], err)) return err->code;
        return VLM_OK;
    }
    if (t->n_norm >= TOK_MAX_STEPS) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: too many normalizers");
    tok_norm *n = &t->norm[t->n_norm];
    memset(n, 0, sizeof *n);
    if (!strcmp(type, "NFC")) { n->kind = TOK_NORM_NFC; t->n_norm++; return VLM_OK; }
    if (!strcmp(type, "Replace")) {
        const char *s; int len, is_regex;
        const char *c = vlm_json_str(vlm_json_get(j, "content"), NULL);
        if (!tok_str_pattern(vlm_json_get(j, "pattern"), &s, &len, &is_regex) || !c)
            return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: Replace normalizer without pattern/content");
        if (is_regex || len == 0) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: regex Replace normalizer is not supported");
        n->kind = TOK_NORM_REPLACE;
        n->a = tok_strndup(s, (size_t)len); n->a_len = len;
        n->b = tok_strndup(c, strlen(c)); n->b_len = (int)strlen(c);
        t->n_norm++;
        return VLM_OK;
    }
    if (!strcmp(type, "Prepend")) {
        const char *c = vlm_json_str(vlm_json_get(j, "prepend"), NULL);
        if (!c) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: Prepend normalizer without prepend");
        n->kind = TOK_NORM_PREPEND;
        n->a = tok_strndup(c, strlen(c)); n->a_len = (int)strlen(c);
        t->n_norm++;
        return VLM_OK;
    }
    return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: unsupported normalizer type %s", type);
}

static vlm_status tok_load_dec(vlm_tokenizer *t, const vlm_json *j, vlm_error *err) {
    if (!j || j->type == VLM_JSON_NULL) return VLM_OK;
    const char *type = vlm_json_str(vlm_json_get(j, "type"), NULL);
    if (!type) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: decoder without a type");
    if (!strcmp(type, "Sequence")) {
        const vlm_json *a = vlm_json_get(j, "decoders");
        if (!a || a->type != VLM_JSON_ARRAY) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: Sequence decoder without decoders");
        for (int i = 0; i < a->n; i++)
            if (tok_load_dec(t, &a->items[i], err)) return err->code;
        return VLM_OK;
    }
    if (t->n_dec >= TOK_MAX_STEPS) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: too many decoders");
    tok_dec *d = &t->dec[t->n_dec];
    memset(d, 0, sizeof *d);
    if (!strcmp(type, "ByteLevel")) d->kind = TOK_DEC_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback")) d->kind = TOK_DEC_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) d->kind = TOK_DEC_FUSE;
    else if (!strcmp(type, "Replace")) {
        const char *s; int len, is_regex;
        const char *c = vlm_json_str(vlm_json_get(j, "content"), NULL);
        if (!tok_str_pattern(vlm_json_get(j, "pattern"), &s, &len, &is_regex) || !c || is_regex || !len)
            return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: unsupported Replace decoder");
        d->kind = TOK_DEC_REPLACE;
        d->a = tok_strndup(s, (size_t)len); d->a_len = len;
        d->b = tok_strndup(c, strlen(c)); d->b_len = (int)strlen(c);
    } else if (!strcmp(type, "Strip")) {
        const char *c = vlm_json_str(vlm_json_get(j, "content"), " ");
        d->kind = TOK_DEC_STRIP;
        d->a = tok_strndup(c, strlen(c)); d->a_len = (int)strlen(c);
        d->start = (int)vlm_json_int(vlm_json_get(j, "start"), 0);
        d->stop = (int)vlm_json_int(vlm_json_get(j, "stop"), 0);
    } else return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: unsupported decoder type %s", type);
    t->n_dec++;
    return VLM_OK;
}

static vlm_status tok_load_post(vlm_tokenizer *t, const vlm_json *j, vlm_error *err) {
    if (!j || j->type == VLM_JSON_NULL) return VLM_OK;
    const char *type = vlm_json_str(vlm_json_get(j, "type"), NULL);
    if (!type) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: post_processor without a type");
    if (!strcmp(type, "ByteLevel")) return VLM_OK;
    if (!strcmp(type, "Sequence")) {
        const vlm_json *a = vlm_json_get(j, "processors");
        for (int i = 0; a && i < a->n; i++)
            if (tok_load_post(t, &a->items[i], err)) return err->code;
        return VLM_OK;
    }
    if (strcmp(type, "TemplateProcessing"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: unsupported post_processor type %s", type);
    const vlm_json *single = vlm_json_get(j, "single");
    const vlm_json *specials = vlm_json_get(j, "special_tokens");
    if (!single || single->type != VLM_JSON_ARRAY)
        return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: TemplateProcessing without single");
    int seen_seq = 0;
    t->has_template_post = 1;
    t->n_post_prefix = t->n_post_suffix = 0;
    for (int i = 0; i < single->n; i++) {
        const vlm_json *it = &single->items[i];
        const vlm_json *sp = vlm_json_get(it, "SpecialToken");
        if (vlm_json_get(it, "Sequence")) { seen_seq = 1; continue; }
        if (!sp) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: bad TemplateProcessing item");
        const char *name = vlm_json_str(vlm_json_get(sp, "id"), "");
        const vlm_json *ids = vlm_json_get(vlm_json_get(specials, name), "ids");
        if (!ids || ids->type != VLM_JSON_ARRAY)
            return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: TemplateProcessing special token %s has no ids", name);
        for (int k = 0; k < ids->n; k++) {
            int32_t id = (int32_t)vlm_json_int(&ids->items[k], -1);
            if (seen_seq) { if (t->n_post_suffix < 8) t->post_suffix[t->n_post_suffix++] = id; }
            else if (t->n_post_prefix < 8) t->post_prefix[t->n_post_prefix++] = id;
        }
    }
    return VLM_OK;
}

static vlm_status tok_build_trie(vlm_tokenizer *t, vlm_error *err);

static vlm_status tok_set_piece(vlm_tokenizer *t, int32_t id, const char *s, size_t n, vlm_error *err) {
    if (id < 0 || id >= t->n_vocab) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: token id %d out of range", id);
    free(t->piece[id]);
    t->piece[id] = tok_strndup(s, n);
    if (!t->piece[id]) return vlm_error_set(err, VLM_ERR_OOM, "out of memory for the vocabulary");
    t->piece_len[id] = (int)n;
    return VLM_OK;
}

/* Reads the special-token fields of tokenizer_config.json. */
static const char *tok_cfg_token(const vlm_json *cfg, const char *key) {
    const vlm_json *v = vlm_json_get(cfg, key);
    if (!v) return NULL;
    if (v->type == VLM_JSON_STRING) return v->str;
    if (v->type == VLM_JSON_OBJECT) return vlm_json_str(vlm_json_get(v, "content"), NULL);
    return NULL;
}

static vlm_status tok_load_config(vlm_tokenizer *t, const vlm_json *cfg, vlm_error *err) {
    if (!cfg) return VLM_OK;
    if (cfg->type != VLM_JSON_OBJECT) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer_config.json: not an object");
    const char *bos = tok_cfg_token(cfg, "bos_token"), *eos = tok_cfg_token(cfg, "eos_token");
    const char *pad = tok_cfg_token(cfg, "pad_token"), *unk = tok_cfg_token(cfg, "unk_token");
    if (bos) { free(t->bos_str); t->bos_str = tok_strndup(bos, strlen(bos)); t->info.bos_id = tok_map_get(t, bos, strlen(bos)); }
    if (eos) { free(t->eos_str); t->eos_str = tok_strndup(eos, strlen(eos)); t->info.eos_id = tok_map_get(t, eos, strlen(eos)); }
    if (pad) t->info.pad_id = tok_map_get(t, pad, strlen(pad));
    if (unk) t->info.unk_id = tok_map_get(t, unk, strlen(unk));
    const vlm_json *v;
    if ((v = vlm_json_get(cfg, "add_bos_token")) && v->type == VLM_JSON_BOOL) t->info.add_bos = (int)v->num;
    if ((v = vlm_json_get(cfg, "add_eos_token")) && v->type == VLM_JSON_BOOL) t->info.add_eos = (int)v->num;
    const char *ct = vlm_json_str(vlm_json_get(cfg, "chat_template"), NULL);
    if (!ct) { /* list of named templates: take "default" */
        const vlm_json *a = vlm_json_get(cfg, "chat_template");
        for (int i = 0; a && a->type == VLM_JSON_ARRAY && i < a->n; i++)
            if (!strcmp(vlm_json_str(vlm_json_get(&a->items[i], "name"), ""), "default"))
                ct = vlm_json_str(vlm_json_get(&a->items[i], "template"), NULL);
    }
    if (ct) { free(t->chat_template); t->chat_template = tok_strndup(ct, strlen(ct)); }
    /* Without a TemplateProcessing post-processor, add_bos_token / add_eos_token decide. */
    if (!t->has_template_post) {
        t->n_post_prefix = t->n_post_suffix = 0;
        if (t->info.add_bos && t->info.bos_id >= 0) t->post_prefix[t->n_post_prefix++] = t->info.bos_id;
        if (t->info.add_eos && t->info.eos_id >= 0) t->post_suffix[t->n_post_suffix++] = t->info.eos_id;
    }
    return VLM_OK;
}

static vlm_status tok_load_tree(vlm_tokenizer *t, const vlm_json *root, vlm_error *err) {
    if (!root || root->type != VLM_JSON_OBJECT) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: not a JSON object");
    const vlm_json *model = vlm_json_get(root, "model");
    if (!model || model->type != VLM_JSON_OBJECT) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: missing \"model\"");
    const char *mtype = vlm_json_str(vlm_json_get(model, "type"), NULL);
    const vlm_json *vocab = vlm_json_get(model, "vocab"), *merges = vlm_json_get(model, "merges");
    if (mtype && strcmp(mtype, "BPE"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: model type %s is not supported (only BPE)", mtype);
    if (!vocab || vocab->type != VLM_JSON_OBJECT) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: model has no \"vocab\" object");
    if (!merges || merges->type != VLM_JSON_ARRAY) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: BPE model has no \"merges\" array");
    const vlm_json *added = vlm_json_get(root, "added_tokens");
    if (added && added->type != VLM_JSON_ARRAY) return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: \"added_tokens\" is not an array");
    const char *cp = vlm_json_str(vlm_json_get(model, "continuing_subword_prefix"), "");
    const char *ew = vlm_json_str(vlm_json_get(model, "end_of_word_suffix"), "");
    if (*cp || *ew) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: continuing_subword_prefix / end_of_word_suffix are not supported");
    t->byte_fallback = vlm_json_bool(vlm_json_get(model, "byte_fallback"), 0);
    t->fuse_unk = vlm_json_bool(vlm_json_get(model, "fuse_unk"), 0);
    if (vlm_json_bool(vlm_json_get(model, "ignore_merges"), 0))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "tokenizer.json: ignore_merges is not supported");

    /* Id space. */
    int64_t max_id = -1;
    for (int i = 0; i < vocab->n; i++) {
        const vlm_json *v = &vocab->items[i];
        if (v->type != VLM_JSON_NUMBER || v->num < 0 || v->num > 1e8 || v->num != (double)(int64_t)v->num)
            return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: vocab entry \"%.60s\" has no valid id", v->key);
        if ((int64_t)v->num > max_id) max_id = (int64_t)v->num;
    }
    for (int i = 0; added && i < added->n; i++) {
        int64_t id = vlm_json_int(vlm_json_get(&added->items[i], "id"), -1);
        if (id < 0 || id > 100000000 || !vlm_json_str(vlm_json_get(&added->items[i], "content"), NULL))
            return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: added token %d has no valid id/content", i);
        if (id > max_id) max_id = id;
    }
    t->n_vocab = (int)(max_id + 1);
    t->piece = calloc((size_t)t->n_vocab + 1, sizeof *t->piece);
    t->piece_len = calloc((size_t)t->n_vocab + 1, sizeof *t->piece_len);
    t->special = calloc((size_t)t->n_vocab + 1, 1);
    t->vocab.mask = tok_pow2((uint64_t)vocab->n + (added ? (uint64_t)added->n : 0)) - 1;
    t->vocab.slots = malloc(((size_t)t->vocab.mask + 1) * sizeof *t->vocab.slots);
    if (!t->piece || !t->piece_len || !t->special || !t->vocab.slots) return vlm_error_set(err, VLM_ERR_OOM, "out of memory for the vocabulary");
    memset(t->vocab.slots, 0xFF, ((size_t)t->vocab.mask + 1) * sizeof *t->vocab.slots);
    for (int i = 0; i < vocab->n; i++) {
        const vlm_json *v = &vocab->items[i];
        if (tok_set_piece(t, (int32_t)v->num, v->key, strlen(v->key), err)) return err->code;
        tok_map_put(t, (int32_t)v->num);
    }
    const char *unk = vlm_json_str(vlm_json_get(model, "unk_token"), NULL);
    t->unk_id = unk ? tok_map_get(t, unk, strlen(unk)) : -1;

    /* Merges. */
    t->n_merges = merges->n;
    t->merge_mask = tok_pow2((uint64_t)merges->n + 1) - 1;
    t->merges = calloc(t->merge_mask + 1, sizeof *t->merges);
    if (!t->merges) return vlm_error_set(err, VLM_ERR_OOM, "out of memory for %d merges", merges->n);
    char *tmp = NULL;
    size_t tmp_cap = 0;
    for (int i = 0; i < merges->n; i++) {
        const vlm_json *m = &merges->items[i];
        const char *a, *b;
        size_t la, lb;
        if (m->type == VLM_JSON_ARRAY && m->n == 2 && m->items[0].type == VLM_JSON_STRING && m->items[1].type == VLM_JSON_STRING) {
            a = m->items[0].str; la = (size_t)m->items[0].n;
            b = m->items[1].str; lb = (size_t)m->items[1].n;
        } else if (m->type == VLM_JSON_STRING) {
            const char *sp = memchr(m->str, ' ', (size_t)m->n);
            if (!sp || memchr(sp + 1, ' ', (size_t)m->n - (size_t)(sp + 1 - m->str))) {
                free(tmp);
                return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: merge %d \"%.60s\" is not two tokens separated by a space", i, m->str);
            }
            a = m->str; la = (size_t)(sp - m->str);
            b = sp + 1; lb = (size_t)m->n - la - 1;
        } else {
            free(tmp);
            return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: merge %d is neither a [\"a\", \"b\"] pair nor an \"a b\" string", i);
        }
        int32_t ia = tok_map_get(t, a, la), ib = tok_map_get(t, b, lb);
        if (la + lb + 1 > tmp_cap) {
            tmp_cap = (la + lb + 1) * 2;
            char *p = realloc(tmp, tmp_cap);
            if (!p) { free(tmp); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
            tmp = p;
        }
        memcpy(tmp, a, la);
        memcpy(tmp + la, b, lb);
        int32_t ic = tok_map_get(t, tmp, la + lb);
        if (ia < 0 || ib < 0 || ic < 0) {
            free(tmp);
            return vlm_error_set(err, VLM_ERR_FORMAT, "tokenizer.json: merge %d (\"%.40s\" \"%.40s\") uses a token missing from the vocab", i,
                                 ia < 0 ? "?" : t->piece[ia], ib < 0 ? "?" : t->piece[ib]);
        }
        tok_merge_put(t, ia, ib, i, ic);
    }
    free(tmp);

    /* Added tokens: they override the model's pieces for their ids. */
    if (added && added->n) {
        t->added = calloc((size_t)added->n, sizeof *t->added);
        if (!t->added) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
        for (int i = 0; i < added->n; i++) {
            const vlm_json *a = &added->items[i];
            const vlm_json *c = vlm_json_get(a, "content");
            tok_added *d = &t->added[t->n_added];
            d->id = (int32_t)vlm_json_int(vlm_json_get(a, "id"), -1);
            d->len = c->n;
            d->s = tok_strndup(c->str, (size_t)c->n);
            if (!d->s) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
            d->special = vlm_json_bool(vlm_json_get(a, "special"), 0);
            d->lstrip = vlm_json_bool(vlm_json_get(a, "lstrip"), 0);
            d->rstrip = vlm_json_bool(vlm_json_get(a, "rstrip"), 0);
            d->single_word = vlm_json_bool(vlm_json_get(a, "single_word"), 0);
            d->normalized = vlm_json_bool(vlm_json_get(a, "normalized"), 0);
            if (!d->len) { free(d->s); continue; }
            if (tok_set_piece(t, d->id, d->s, (size_t)d->len, err)) return err->code;
            tok_map_put(t, d->id);
            t->special[d->id] = (unsigned char)(2 | (d->special ? 1 : 0));
            t->added_first[(unsigned char)d->s[0]] = 1;
            t->n_added++;
        }
    }
    if (tok_build_trie(t, err)) return err->code;

    /* Initial symbols of a word. */
    if (tok_load_norm(t, vlm_json_get(root, "normalizer"), err)) return err->code;
    if (tok_load_pre(t, vlm_json_get(root, "pre_tokenizer"), err)) return err->code;
    if (tok_load_dec(t, vlm_json_get(root, "decoder"), err)) return err->code;
    if (tok_load_post(t, vlm_json_get(root, "post_processor"), err)) return err->code;
    for (int b = 0; b < 256; b++) {
        char s[8];
        int n;
        if (t->byte_level) n = vlm_utf8_encode(tok_byte_to_cp(b), s);
        else n = snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_id[b] = tok_map_get(t, s, (size_t)n);
        /* A byte-level vocab may lack some bytes' symbols: they become unk (or nothing). */
        if (t->byte_level && t->byte_id[b] < 0) t->byte_id[b] = t->unk_id;
    }
    t->info.bos_id = t->info.eos_id = t->info.pad_id = -1;
    t->info.unk_id = t->unk_id;
    return VLM_OK;
}

void vlm_tokenizer_free(vlm_tokenizer *t) {
    if (!t) return;
    for (int i = 0; t->piece && i < t->n_vocab; i++) free(t->piece[i]);
    free(t->piece);
    free(t->piece_len);
    free(t->special);
    free(t->vocab.slots);
    free(t->merges);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].s);
    free(t->added);
    free(t->trie_key);
    free(t->trie_child);
    free(t->trie_term);
    for (int i = 0; i < t->n_norm; i++) { free(t->norm[i].a); free(t->norm[i].b); }
    for (int i = 0; i < t->n_pre; i++) free(t->pre[i].pat);
    for (int i = 0; i < t->n_dec; i++) { free(t->dec[i].a); free(t->dec[i].b); }
    free(t->bos_str);
    free(t->eos_str);
    free(t->chat_template);
    free(t);
}

static vlm_status tok_finish_load(vlm_tokenizer *t, const vlm_json *root, const vlm_json *cfg, vlm_error *err) {
    if (tok_load_tree(t, root, err)) return err->code;
    return tok_load_config(t, cfg, err);
}

vlm_status vlm_tokenizer_load_mem(vlm_tokenizer **out, const char *json, size_t len,
                                  const char *config_json, size_t config_len, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    *out = NULL;
    vlm_json *root = vlm_json_parse(json, len, err);
    if (!root) return err ? err->code : VLM_ERR_FORMAT;
    vlm_json *cfg = NULL;
    if (config_json) {
        cfg = vlm_json_parse(config_json, config_len, err);
        if (!cfg) { vlm_json_free(root); return err ? err->code : VLM_ERR_FORMAT; }
    }
    vlm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) { vlm_json_free(root); vlm_json_free(cfg); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    vlm_status st = tok_finish_load(t, root, cfg, err);
    vlm_json_free(root);
    vlm_json_free(cfg);
    if (st) { vlm_tokenizer_free(t); return st; }
    *out = t;
    return VLM_OK;
}

static int tok_file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

static char *tok_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    vlm_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) vlm_buf_add(&b, chunk, n);
    fclose(f);
    if (b.oom) { free(b.p); return NULL; }
    if (!b.p) { b.p = calloc(1, 1); }
    *len = b.n;
    return b.p;
}

vlm_status vlm_tokenizer_load(vlm_tokenizer **out, const char *path, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    *out = NULL;
    size_t pl = strlen(path);
    char *dir = malloc(pl + 64), *file = malloc(pl + 64);
    if (!dir || !file) { free(dir); free(file); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    size_t n = strlen(path);
    if (n > 5 && !strcmp(path + n - 5, ".json")) {
        memcpy(file, path, n + 1);
        const char *slash = strrchr(path, '/');
        if (slash) { memcpy(dir, path, (size_t)(slash - path)); dir[slash - path] = 0; }
        else strcpy(dir, ".");
    } else {
        memcpy(dir, path, n + 1);
        while (n > 1 && dir[n - 1] == '/') dir[--n] = 0;
        snprintf(file, pl + 64, "%s/tokenizer.json", dir);
    }
    size_t len;
    char *text = tok_read_file(file, &len);
    if (!text) {
        vlm_status st = vlm_error_set(err, VLM_ERR_IO, "cannot read %s", file);
        free(dir); free(file);
        return st;
    }
    vlm_json *root = vlm_json_parse(text, len, err);
    free(text);
    if (!root) { free(dir); free(file); return err ? err->code : VLM_ERR_FORMAT; }
    vlm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) { vlm_json_free(root); free(dir); free(file); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    vlm_status st = tok_load_tree(t, root, err);
    vlm_json_free(root);
    static const char *const cfg_names[] = {"special_tokens_map.json", "tokenizer_config.json"};
    for (int k = 0; !st && k < 2; k++) {
        snprintf(file, pl + 64, "%s/%s", dir, cfg_names[k]);
        if (!tok_file_exists(file)) continue;
        vlm_json *cfg = vlm_json_load(file, err);
        if (!cfg) { st = err ? err->code : VLM_ERR_FORMAT; break; }
        st = tok_load_config(t, cfg, err);
        vlm_json_free(cfg);
    }
    /* A separate chat template file takes precedence. */
    snprintf(file, pl + 64, "%s/chat_template.jinja", dir);
    if (!st && tok_file_exists(file)) {
        char *ct = tok_read_file(file, &len);
        if (ct) { free(t->chat_template); t->chat_template = ct; }
    } else if (!st) {
        snprintf(file, pl + 64, "%s/chat_template.json", dir);
        if (tok_file_exists(file)) {
            vlm_json *cj = vlm_json_load(file, err);
            if (!cj) st = err ? err->code : VLM_ERR_FORMAT;
            else {
                const char *ct = vlm_json_str(vlm_json_get(cj, "chat_template"), NULL);
                if (ct) { free(t->chat_template); t->chat_template = tok_strndup(ct, strlen(ct)); }
                vlm_json_free(cj);
            }
        }
    }
    free(dir);
    free(file);
    if (st) { vlm_tokenizer_free(t); return st; }
    *out = t;
    return VLM_OK;
}

int vlm_tokenizer_n_vocab(const vlm_tokenizer *t) { return t->n_vocab; }

const char *vlm_token_to_piece(const vlm_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->piece[id] : NULL;
}

int32_t vlm_token_id(const vlm_tokenizer *t, const char *piece) { return tok_map_get(t, piece, strlen(piece)); }

int vlm_token_is_special(const vlm_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->special[id] & 1);
}

vlm_tokenizer_info vlm_tokenizer_get_info(const vlm_tokenizer *t) {
    vlm_tokenizer_info i = t->info;
    i.bos_token = t->bos_str ? t->bos_str : "";
    i.eos_token = t->eos_str ? t->eos_str : "";
    i.chat_template = t->chat_template;
    return i;
}

vlm_status vlm_tokenizer_set_chat_template(vlm_tokenizer *t, const char *src, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    char *c = src ? tok_strndup(src, strlen(src)) : NULL;
    if (src && !c) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    free(t->chat_template);
    t->chat_template = c;
    return VLM_OK;
}

/* ------------------------------------------------------------------ pre-tokenizer matchers */

typedef struct tok_span { size_t a, b; } tok_span;

typedef struct tok_spans {
    tok_span *v;
    size_t n, cap;
    int oom;
} tok_spans;

static void tok_spans_add(tok_spans *s, size_t a, size_t b) {
    if (a >= b || s->oom) return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        tok_span *p = realloc(s->v, cap * sizeof *p);
        if (!p) { s->oom = 1; return; }
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n].a = a;
    s->v[s->n].b = b;
    s->n++;
}

static inline uint32_t tok_cp(const unsigned char *s, size_t i, size_t end, int *len) {
    if (s[i] < 0x80) { *len = 1; return s[i]; }
    uint32_t cp;
    *len = vlm_utf8_decode(s + i, end - i, &cp);
    return cp;
}

static inline int tok_props(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return VLM_UNI_L;
        if (cp >= '0' && cp <= '9') return VLM_UNI_N;
        if (cp == ' ' || (cp >= 9 && cp <= 13)) return VLM_UNI_WS;
        return 0;
    }
    if (cp >= 0x110000) return 0;
    return vlm_uni_props(cp);
}

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at i, 0 if none. */
static size_t tok_contraction(const unsigned char *s, size_t i, size_t end, int icase) {
    if (s[i] != '\'' || i + 1 >= end) return 0;
    unsigned c = s[i + 1], c2 = i + 2 < end ? s[i + 2] : 0;
    if (icase) {
        if (c >= 'A' && c <= 'Z') c |= 0x20;
        if (c2 >= 'A' && c2 <= 'Z') c2 |= 0x20;
        /* (?i) also matches U+017F LATIN SMALL LETTER LONG S for s. */
        if (c == 0xC5 && c2 == 0xBF) return 3;
    }
    if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
    if ((c == 'r' && c2 == 'e') || (c == 'v' && c2 == 'e') || (c == 'l' && c2 == 'l')) return 3;
    return 0;
}

static size_t tok_run(const unsigned char *s, size_t i, size_t end, int want, int neg) {
    while (i < end) {
        int l;
        uint32_t cp = tok_cp(s, i, end, &l);
        int p = tok_props(cp) & want;
        if (neg ? p != 0 : p == 0) break;
        i += (size_t)l;
    }
    return i;
}

/* Whitespace tail shared by the patterns: \s*[\r\n]+ (when nl), \s+(?!\S), \s+ */
static size_t tok_ws_tail(const unsigned char *s, size_t i, size_t end, int nl) {
    size_t w = i, last_nl = 0, last_start = i;
    int count = 0;
    while (w < end) {
        int l;
        uint32_t cp = tok_cp(s, w, end, &l);
        if (!(tok_props(cp) & VLM_UNI_WS)) break;
        if (cp == '\r' || cp == '\n') last_nl = w + 1;
        last_start = w;
        w += (size_t)l;
        count++;
    }
    if (nl && last_nl) return last_nl;
    if (w == end || count < 2) return w;
    return last_start;
}

/* One match of the Qwen2 / Llama 3 pattern at i (max_digits 1 or 3). */
static size_t tok_match_qwen(const unsigned char *s, size_t i, size_t end, int max_digits) {
    size_t c = tok_contraction(s, i, end, 1);
    if (c) return i + c;
    int l0;
    uint32_t c0 = tok_cp(s, i, end, &l0);
    int p0 = tok_props(c0);
    if (p0 & VLM_UNI_L) return tok_run(s, i, end, VLM_UNI_L, 0);
    if (c0 != '\r' && c0 != '\n' && !(p0 & VLM_UNI_N) && i + (size_t)l0 < end) {
        int l1;
        uint32_t c1 = tok_cp(s, i + (size_t)l0, end, &l1);
        if (tok_props(c1) & VLM_UNI_L) return tok_run(s, i + (size_t)l0, end, VLM_UNI_L, 0);
    }
    if (p0 & VLM_UNI_N) {
        size_t j = i + (size_t)l0;
        for (int k = 1; k < max_digits && j < end; k++) {
            int l;
            uint32_t cp = tok_cp(s, j, end, &l);
            if (!(tok_props(cp) & VLM_UNI_N)) break;
            j += (size_t)l;
        }
        return j;
    }
    size_t j = i + (c0 == ' ' ? 1 : 0);
    if (j < end) {
        int l;
        uint32_t cj = tok_cp(s, j, end, &l);
        if (!(tok_props(cj) & (VLM_UNI_WS | VLM_UNI_L | VLM_UNI_N))) {
            j = tok_run(s, j, end, VLM_UNI_WS | VLM_UNI_L | VLM_UNI_N, 1);
            while (j < end && (s[j] == '\r' || s[j] == '\n')) j++;
            return j;
        }
    }
    return tok_ws_tail(s, i, end, 1);
}

/* One match of the GPT-2 pattern at i. */
static size_t tok_match_gpt2(const unsigned char *s, size_t i, size_t end) {
    size_t c = tok_contraction(s, i, end, 0);
    if (c) return i + c;
    size_t j = i + (s[i] == ' ' ? 1 : 0);
    if (j < end) {
        int l;
        uint32_t cj = tok_cp(s, j, end, &l);
        int p = tok_props(cj);
        if (p & VLM_UNI_L) return tok_run(s, j, end, VLM_UNI_L, 0);
        if (p & VLM_UNI_N) return tok_run(s, j, end, VLM_UNI_N, 0);
        if (!(p & VLM_UNI_WS)) return tok_run(s, j, end, VLM_UNI_WS | VLM_UNI_L | VLM_UNI_N, 1);
    }
    return tok_ws_tail(s, i, end, 0);
}

/* Splits every span of in by step p into out. */
static void tok_pre_step(const tok_pre *p, const unsigned char *s, const tok_spans *in, tok_spans *out) {
    for (size_t k = 0; k < in->n; k++) {
        size_t a = in->v[k].a, b = in->v[k].b;
        switch (p->kind) {
        case TOK_PRE_QWEN:
        case TOK_PRE_LLAMA3:
            for (size_t i = a; i < b;) {
                size_t e = tok_match_qwen(s, i, b, p->kind == TOK_PRE_QWEN ? 1 : 3);
                tok_spans_add(out, i, e);
                i = e;
            }
            break;
        case TOK_PRE_GPT2:
            for (size_t i = a; i < b;) {
                size_t e = tok_match_gpt2(s, i, b);
                tok_spans_add(out, i, e);
                i = e;
            }
            break;
        case TOK_PRE_DIGITS: {
            size_t start = a;
            for (size_t i = a; i < b;) {
                int l;
                uint32_t cp = tok_cp(s, i, b, &l);
                if (tok_props(cp) & VLM_UNI_N) {
                    if (p->individual) {
                        tok_spans_add(out, start, i);
                        tok_spans_add(out, i, i + (size_t)l);
                        start = i + (size_t)l;
                    } else {
                        size_t e = tok_run(s, i, b, VLM_UNI_N, 0);
                        tok_spans_add(out, start, i);
                        tok_spans_add(out, i, e);
                        start = e;
                        i = e;
                        continue;
                    }
                }
                i += (size_t)l;
            }
            tok_spans_add(out, start, b);
            break;
        }
        case TOK_PRE_WHITESPACE_SPLIT:
            for (size_t i = a; i < b;) {
                size_t e = tok_run(s, i, b, VLM_UNI_WS, 1);
                tok_spans_add(out, i, e);
                i = tok_run(s, e, b, VLM_UNI_WS, 0);
            }
            break;
        case TOK_PRE_SPLIT_STR: {
            size_t start = a, pl = (size_t)p->pat_len;
            size_t i = a;
            while (i + pl <= b) {
                if (memcmp(s + i, p->pat, pl)) { i++; continue; }
                size_t e = i + pl;
                switch (p->behavior) {
                case TOK_BEH_REMOVED: tok_spans_add(out, start, i); start = e; break;
                case TOK_BEH_ISOLATED: tok_spans_add(out, start, i); tok_spans_add(out, i, e); start = e; break;
                case TOK_BEH_MERGED_PREV: tok_spans_add(out, start, e); start = e; break;
                case TOK_BEH_MERGED_NEXT: tok_spans_add(out, start, i); start = i; break;
                case TOK_BEH_CONTIGUOUS:
                    if (start < i) { tok_spans_add(out, start, i); start = i; }
                    while (e + pl <= b && !memcmp(s + e, p->pat, pl)) e += pl;
                    tok_spans_add(out, start, e);
                    start = e;
                    break;
                }
                i = e;
            }
            tok_spans_add(out, start, b);
            break;
        }
        }
    }
}

/* ------------------------------------------------------------------ BPE */

typedef struct tok_sym { int32_t id; int prev, next; } tok_sym;
typedef struct tok_cand { int32_t rank; int pos; int32_t left, right; } tok_cand;

typedef struct tok_work {
    tok_sym *sym;
    size_t sym_cap;
    tok_cand *heap;
    size_t heap_n, heap_cap;
    int oom;
} tok_work;

static int tok_cand_less(const tok_cand *a, const tok_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void tok_heap_push(tok_work *w, tok_cand c) {
    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 256;
        tok_cand *p = realloc(w->heap, cap * sizeof *p);
        if (!p) { w->oom = 1; return; }
        w->heap = p;
        w->heap_cap = cap;
    }
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!tok_cand_less(&c, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
}

static tok_cand tok_heap_pop(tok_work *w) {
    tok_cand top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const tok_cand *mv = &last;
        if (l < n && tok_cand_less(&w->heap[l], mv)) { m = l; mv = &w->heap[l]; }
        if (r < n && tok_cand_less(&w->heap[r], mv)) { m = r; }
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void tok_try_pair(const vlm_tokenizer *t, tok_work *w, int pos) {
    int nx = w->sym[pos].next;
    if (nx < 0) return;
    const tok_merge_slot *m = tok_merge_get(t, w->sym[pos].id, w->sym[nx].id);
    if (!m) return;
    tok_cand c = {m->rank, pos, w->sym[pos].id, w->sym[nx].id};
    tok_heap_push(w, c);
}

/* BPE of one pre-token: s[a..b) (already normalized). Appends ids. */
static vlm_status tok_bpe(const vlm_tokenizer *t, tok_work *w, const unsigned char *s, size_t a, size_t b,
                          vlm_tokens *out, vlm_error *err) {
    size_t n = b - a;
    if (n + 1 > w->sym_cap) {
        size_t cap = w->sym_cap ? w->sym_cap : 256;
        while (cap < n + 1) cap *= 2;
        tok_sym *p = realloc(w->sym, cap * sizeof *p);
        if (!p) return vlm_error_set(err, VLM_ERR_OOM, "out of memory in BPE");
        w->sym = p;
        w->sym_cap = cap;
    }
    int ns = 0;
    if (t->byte_level) {
        for (size_t i = a; i < b; i++)
            if (t->byte_id[s[i]] >= 0) w->sym[ns++].id = t->byte_id[s[i]];
    } else {
        for (size_t i = a; i < b;) {
            int l;
            uint32_t cp = tok_cp(s, i, b, &l);
            int32_t id = cp < 0x110000 ? tok_map_get(t, (const char *)s + i, (size_t)l) : -1;
            if (id >= 0) w->sym[ns++].id = id;
            else if (t->byte_fallback && t->byte_id[s[i]] >= 0) {
                int ok = 1;
                for (int k = 0; k < l; k++) if (t->byte_id[s[i + k]] < 0) ok = 0;
                if (ok) for (int k = 0; k < l; k++) w->sym[ns++].id = t->byte_id[s[i + k]];
                else if (t->unk_id >= 0) w->sym[ns++].id = t->unk_id;
            } else if (t->unk_id >= 0) {
                if (!(t->fuse_unk && ns > 0 && w->sym[ns - 1].id == t->unk_id)) w->sym[ns++].id = t->unk_id;
            }
            i += (size_t)l;
        }
    }
    if (ns == 0) return VLM_OK;
    for (int i = 0; i < ns; i++) { w->sym[i].prev = i - 1; w->sym[i].next = i + 1 < ns ? i + 1 : -1; }
    if (ns > 1) {
        w->heap_n = 0;
        for (int i = 0; i + 1 < ns; i++) tok_try_pair(t, w, i);
        while (w->heap_n) {
            tok_cand c = tok_heap_pop(w);
            tok_sym *l = &w->sym[c.pos];
            if (l->id != c.left || l->next < 0 || w->sym[l->next].id != c.right) continue;
            const tok_merge_slot *m = tok_merge_get(t, c.left, c.right);
            int r = l->next;
            l->id = m->id;
            l->next = w->sym[r].next;
            if (l->next >= 0) w->sym[l->next].prev = c.pos;
            w->sym[r].id = -1; /* dead */
            if (l->prev >= 0) tok_try_pair(t, w, l->prev);
            tok_try_pair(t, w, c.pos);
        }
        if (w->oom) return vlm_error_set(err, VLM_ERR_OOM, "out of memory in BPE");
    }
    if (tok_grow(out, ns, err)) return err ? err->code : VLM_ERR_OOM;
    for (int i = 0; i >= 0; i = w->sym[i].next) out->ids[out->n++] = w->sym[i].id;
    return VLM_OK;
}

/* Normalizes, pre-tokenizes and BPE-encodes a text segment without added tokens. */
static vlm_status tok_encode_segment(const vlm_tokenizer *t, tok_work *w, const char *text, size_t len,
                                     vlm_tokens *out, vlm_error *err) {
    if (!len) return VLM_OK;
    char *norm = NULL;
    size_t nlen = len;
    const char *s = text;
    for (int k = 0; k < t->n_norm; k++) {
        const tok_norm *nm = &t->norm[k];
        char *o = NULL;
        size_t ol = 0;
        if (nm->kind == TOK_NORM_NFC) {
            if (vlm_nfc(s, nlen, &o, &ol, err)) { free(norm); return err->code; }
        } else {
            vlm_buf b = {0};
            if (nm->kind == TOK_NORM_PREPEND) { vlm_buf_add(&b, nm->a, (size_t)nm->a_len); vlm_buf_add(&b, s, nlen); }
            else {
                size_t i = 0, start = 0, pl = (size_t)nm->a_len;
                while (i + pl <= nlen) {
                    if (!memcmp(s + i, nm->a, pl)) {
                        vlm_buf_add(&b, s + start, i - start);
                        vlm_buf_add(&b, nm->b, (size_t)nm->b_len);
                        i += pl;
                        start = i;
                    } else i++;
                }
                vlm_buf_add(&b, s + start, nlen - start);
            }
            if (b.oom) { free(b.p); free(norm); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
            o = b.p ? b.p : calloc(1, 1);
            ol = b.n;
        }
        free(norm);
        norm = o;
        s = o;
        nlen = ol;
    }
    const unsigned char *u = (const unsigned char *)s;
    tok_spans cur = {0}, nxt = {0};
    tok_spans_add(&cur, 0, nlen);
    for (int k = 0; k < t->n_pre; k++) {
        nxt.n = 0;
        tok_pre_step(&t->pre[k], u, &cur, &nxt);
        tok_spans tmp = cur; cur = nxt; nxt = tmp;
    }
    vlm_status st = VLM_OK;
    if (cur.oom || nxt.oom) st = vlm_error_set(err, VLM_ERR_OOM, "out of memory in pre-tokenization");
    for (size_t k = 0; !st && k < cur.n; k++) st = tok_bpe(t, w, u, cur.v[k].a, cur.v[k].b, out, err);
    free(cur.v);
    free(nxt.v);
    free(norm);
    return st;
}

static int32_t tok_trie_child(const vlm_tokenizer *t, int32_t node, unsigned char c) {
    uint64_t key = (((uint64_t)(uint32_t)node << 8) | c) + 1;
    uint64_t i = (key * 0x9E3779B97F4A7C15ULL >> 20) & t->trie_mask;
    for (;;) {
        if (t->trie_key[i] == key) return t->trie_child[i];
        if (!t->trie_key[i]) return -1;
        i = (i + 1) & t->trie_mask;
    }
}

static vlm_status tok_build_trie(vlm_tokenizer *t, vlm_error *err) {
    uint64_t total = 1;
    for (int k = 0; k < t->n_added; k++) total += (uint64_t)t->added[k].len;
    t->trie_mask = tok_pow2(total) - 1;
    t->trie_key = calloc(t->trie_mask + 1, sizeof *t->trie_key);
    t->trie_child = malloc((t->trie_mask + 1) * sizeof *t->trie_child);
    t->trie_term = malloc(total * sizeof *t->trie_term);
    if (!t->trie_key || !t->trie_child || !t->trie_term) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    t->n_trie = 1;
    t->trie_term[0] = -1;
    for (int k = 0; k < t->n_added; k++) {
        int32_t node = 0;
        for (int j = 0; j < t->added[k].len; j++) {
            unsigned char c = (unsigned char)t->added[k].s[j];
            int32_t ch = tok_trie_child(t, node, c);
            if (ch < 0) {
                ch = t->n_trie++;
                t->trie_term[ch] = -1;
                uint64_t key = (((uint64_t)(uint32_t)node << 8) | c) + 1;
                uint64_t i = (key * 0x9E3779B97F4A7C15ULL >> 20) & t->trie_mask;
                while (t->trie_key[i]) i = (i + 1) & t->trie_mask;
                t->trie_key[i] = key;
                t->trie_child[i] = ch;
            }
            node = ch;
        }
        t->trie_term[node] = k;
    }
    return VLM_OK;
}

/* Longest added token starting at s[i], or NULL. */
static const tok_added *tok_added_at(const vlm_tokenizer *t, const char *s, size_t i, size_t len) {
    int32_t node = 0, best = -1;
    for (size_t j = i; j < len; j++) {
        node = tok_trie_child(t, node, (unsigned char)s[j]);
        if (node < 0) break;
        if (t->trie_term[node] >= 0) best = t->trie_term[node];
    }
    return best >= 0 ? &t->added[best] : NULL;
}

static int tok_is_ws_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

size_t vlm_tokenizer_added_at(const vlm_tokenizer *t, const char *s, size_t len) {
    if (!t->n_added || !len || !t->added_first[(unsigned char)s[0]]) return 0;
    const tok_added *a = tok_added_at(t, s, 0, len);
    return a ? (size_t)a->len : 0;
}

vlm_status vlm_tokenize(const vlm_tokenizer *t, const char *text, size_t len, int flags,
                        vlm_tokens *out, vlm_error *err) {
    return vlm_tokenize_ranges(t, text, len, flags, NULL, 0, out, err);
}

vlm_status vlm_tokenize_ranges(const vlm_tokenizer *t, const char *text, size_t len, int flags,
                               const size_t *plain, int n_plain, vlm_tokens *out, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    tok_work w = {0};
    int r = 0; /* first plain range not wholly before i */
    vlm_status st = VLM_OK;
    if (flags & VLM_TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_post_prefix && !st; i++) st = vlm_tokens_push(out, t->post_prefix[i], err);
    size_t seg = 0, i = 0;
    int parse = !(flags & VLM_TOK_NO_PARSE_SPECIAL) && t->n_added > 0;
    while (!st && i < len) {
        const tok_added *a = NULL;
        if (parse && t->added_first[(unsigned char)text[i]]) a = tok_added_at(t, text, i, len);
        while (a && r < n_plain && plain[2 * r + 1] <= i) r++;
        if (a && r < n_plain && plain[2 * r] < i + (size_t)a->len) a = NULL; /* overlaps the user's text */
        if (!a) { i++; continue; }
        size_t s0 = i, e = i + (size_t)a->len;
        if (a->lstrip) while (s0 > seg && tok_is_ws_byte(text[s0 - 1])) s0--;
        if (a->rstrip) while (e < len && tok_is_ws_byte(text[e])) e++;
        st = tok_encode_segment(t, &w, text + seg, s0 - seg, out, err);
        if (!st) st = vlm_tokens_push(out, a->id, err);
        i = seg = e;
    }
    if (!st) st = tok_encode_segment(t, &w, text + seg, len - seg, out, err);
    if (flags & VLM_TOK_ADD_SPECIAL)
        for (int k = 0; k < t->n_post_suffix && !st; k++) st = vlm_tokens_push(out, t->post_suffix[k], err);
    free(w.sym);
    free(w.heap);
    return st;
}

/* ------------------------------------------------------------------ decoding */

/* Raw bytes of one token after the decoder chain (before UTF-8 validation),
 * appended to b; returns -1, or the byte value (0..255, not appended) when
 * ByteFallback turned the token into a raw byte: those are collected in runs
 * and validated as a whole, as HF's ByteFallback decoder does. */
static int tok_decode_piece(const vlm_tokenizer *t, int32_t id, int first, vlm_buf *b) {
    const char *p = t->piece[id];
    size_t n = (size_t)t->piece_len[id];
    if (!p) return -1;
    char *tmp = NULL;
    for (int k = 0; k < t->n_dec; k++) {
        const tok_dec *d = &t->dec[k];
        if (d->kind == TOK_DEC_BYTELEVEL) {
            vlm_buf o = {0};
            for (size_t i = 0; i < n;) {
                uint32_t cp;
                int l = vlm_utf8_decode((const unsigned char *)p + i, n - i, &cp);
                int by = tok_cp_to_byte(cp);
                if (by >= 0) { char c = (char)by; vlm_buf_add(&o, &c, 1); }
                else vlm_buf_add(&o, p + i, (size_t)l);
                i += (size_t)l;
            }
            free(tmp); tmp = o.p; p = tmp ? tmp : ""; n = o.n;
        } else if (d->kind == TOK_DEC_REPLACE) {
            vlm_buf o = {0};
            size_t i = 0, start = 0, pl = (size_t)d->a_len;
            while (i + pl <= n) {
                if (!memcmp(p + i, d->a, pl)) { vlm_buf_add(&o, p + start, i - start); vlm_buf_add(&o, d->b, (size_t)d->b_len); i += pl; start = i; }
                else i++;
            }
            vlm_buf_add(&o, p + start, n - start);
            free(tmp); tmp = o.p; p = tmp ? tmp : ""; n = o.n;
        } else if (d->kind == TOK_DEC_BYTEFALLBACK) {
            if (n == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>') {
                unsigned v = 0;
                int ok = 1;
                for (int q = 3; q < 5; q++) {
                    char c = p[q];
                    v <<= 4;
                    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
                    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
                    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
                    else ok = 0;
                }
                if (ok && k == t->n_dec - 1) { free(tmp); return (int)v; }
                if (ok) {
                    /* Decoders after ByteFallback (Fuse, Strip) leave a lone byte as it is. */
                    free(tmp);
                    for (int k2 = k + 1; k2 < t->n_dec; k2++)
                        if (t->dec[k2].kind != TOK_DEC_FUSE && t->dec[k2].kind != TOK_DEC_STRIP) goto not_byte;
                    return (int)v;
                not_byte:
                    tmp = malloc(2);
                    if (!tmp) { b->oom = 1; return -1; }
                    tmp[0] = (char)v; p = tmp; n = 1;
                }
            }
        } else if (d->kind == TOK_DEC_STRIP) {
            if (first) {
                int k2 = 0;
                while (k2 < d->start && n >= (size_t)d->a_len && !memcmp(p, d->a, (size_t)d->a_len)) { p += d->a_len; n -= (size_t)d->a_len; k2++; }
            }
        }
        /* FUSE: concatenation is what we do anyway. */
    }
    vlm_buf_add(b, p, n);
    free(tmp);
    return -1;
}

/* A finished run of ByteFallback bytes: as is when valid UTF-8, else one U+FFFD per byte. */
static void tok_flush_run(vlm_buf *b, const unsigned char *run, size_t n) {
    int valid = 1;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)vlm_utf8_decode(run + i, n - i, &cp);
        if (cp >= 0x110000) { valid = 0; break; }
    }
    if (valid) { vlm_buf_add(b, run, n); return; }
    for (size_t i = 0; i < n; i++) vlm_buf_add(b, "\xEF\xBF\xBD", 3);
}

/* Appends s[0..n) to b replacing invalid UTF-8 (maximal invalid subparts) by U+FFFD.
 * With hold != NULL, an incomplete sequence at the very end is not emitted:
 * its length is returned in *hold. */
static void tok_utf8_lossy(vlm_buf *b, const unsigned char *s, size_t n, int *hold) {
    size_t i = 0, start = 0;
    if (hold) *hold = 0;
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; }
        uint32_t cp;
        int l = vlm_utf8_decode(s + i, n - i, &cp);
        if (cp < 0x110000) { i += (size_t)l; continue; }
        /* Is it a valid but truncated prefix at the end? */
        unsigned c = s[i];
        int need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        size_t k = 1;
        while (need && k < (size_t)need && i + k < n && (s[i + k] & 0xC0) == 0x80) {
            /* second-byte range restrictions */
            if (k == 1 && ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) ||
                           (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F))) break;
            k++;
        }
        if (need && i + k == n && k < (size_t)need && hold) {
            vlm_buf_add(b, s + start, i - start);
            *hold = (int)k;
            return;
        }
        vlm_buf_add(b, s + start, i - start);
        vlm_buf_add(b, "\xEF\xBF\xBD", 3);
        i += need && k < (size_t)need ? k : 1;
        start = i;
    }
    vlm_buf_add(b, s + start, n - start);
}

vlm_status vlm_detokenize(const vlm_tokenizer *t, const int32_t *ids, int n, int flags,
                          char **out, size_t *out_len, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    vlm_buf raw = {0}, o = {0}, run = {0}, piece = {0};
    int first = 1;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab || !t->piece[ids[i]]) {
            free(raw.p);
            free(run.p);
            free(piece.p);
            return vlm_error_set(err, VLM_ERR_ARG, "detokenize: id %d is not in the vocabulary", ids[i]);
        }
        if ((flags & VLM_DETOK_SKIP_SPECIAL) && (t->special[ids[i]] & 1)) continue;
        int by = tok_decode_piece(t, ids[i], first, &piece);
        first = 0;
        if (by >= 0) { unsigned char c = (unsigned char)by; vlm_buf_add(&run, &c, 1); continue; }
        tok_flush_run(&raw, (const unsigned char *)run.p, run.n);
        run.n = 0;
        vlm_buf_add(&raw, piece.p ? piece.p : "", piece.n);
        piece.n = 0;
    }
    tok_flush_run(&raw, (const unsigned char *)run.p, run.n);
    free(run.p);
    free(piece.p);
    tok_utf8_lossy(&o, (const unsigned char *)(raw.p ? raw.p : ""), raw.n, NULL);
    free(raw.p);
    if (raw.oom || o.oom) { free(o.p); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    if (!o.p) o.p = calloc(1, 1);
    if (!o.p) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    *out = o.p;
    if (out_len) *out_len = o.n;
    return VLM_OK;
}

void vlm_detok_stream_init(vlm_detok_stream *s, const vlm_tokenizer *tok, int flags) {
    memset(s, 0, sizeof *s);
    s->tok = tok;
    s->flags = flags;
}

const char *vlm_detok_stream_push(vlm_detok_stream *s, int32_t id, size_t *len) {
    const vlm_tokenizer *t = s->tok;
    vlm_buf raw = {0}, o = {0}, piece = {0};
    if (id < 0 || id >= t->n_vocab || !t->piece[id] || ((s->flags & VLM_DETOK_SKIP_SPECIAL) && (t->special[id] & 1))) {
        /* Unknown or skipped: nothing to add (a ByteFallback run continues). */
        free(s->buf);
        s->buf = NULL;
        s->len = 0;
        if (len) *len = 0;
        return "";
    }
    {
        int by = tok_decode_piece(t, id, !s->started, &piece);
        s->started = 1;
        if (by >= 0) { /* a ByteFallback run is held until it ends */
            free(piece.p);
            if (s->run_len == s->run_cap) {
                size_t cap = s->run_cap ? s->run_cap * 2 : 16;
                unsigned char *r = realloc(s->run, cap);
                if (!r) { if (len) *len = 0; return ""; }
                s->run = r;
                s->run_cap = cap;
            }
            s->run[s->run_len++] = (unsigned char)by;
            free(s->buf);
            s->buf = NULL;
            s->len = 0;
            if (len) *len = 0;
            return "";
        }
    }
    vlm_buf_add(&raw, s->pending, (size_t)s->n_pending);
    tok_flush_run(&raw, s->run, s->run_len);
    s->run_len = 0;
    vlm_buf_add(&raw, piece.p ? piece.p : "", piece.n);
    free(piece.p);
    int hold = 0;
    tok_utf8_lossy(&o, (const unsigned char *)(raw.p ? raw.p : ""), raw.n, &hold);
    s->n_pending = hold;
    if (hold) memcpy(s->pending, raw.p + raw.n - (size_t)hold, (size_t)hold);
    free(raw.p);
    free(s->buf);
    s->buf = o.p ? o.p : calloc(1, 1);
    s->len = o.p ? o.n : 0;
    if (len) *len = s->len;
    return s->buf ? s->buf : "";
}

const char *vlm_detok_stream_flush(vlm_detok_stream *s, size_t *len) {
    vlm_buf o = {0}, raw = {0};
    vlm_buf_add(&raw, s->pending, (size_t)s->n_pending);
    tok_flush_run(&raw, s->run, s->run_len);
    tok_utf8_lossy(&o, (const unsigned char *)(raw.p ? raw.p : ""), raw.n, NULL);
    free(raw.p);
    s->n_pending = 0;
    s->run_len = 0;
    free(s->buf);
    s->buf = o.p ? o.p : calloc(1, 1);
    s->len = o.p ? o.n : 0;
    if (len) *len = s->len;
    return s->buf ? s->buf : "";
}

void vlm_detok_stream_free(vlm_detok_stream *s) {
    free(s->buf);
    free(s->run);
    s->run = NULL;
    s->run_len = s->run_cap = 0;
    s->buf = NULL;
    s->len = 0;
}
