/* safetensors: mmap'd reader with full header validation, sharded
 * checkpoints (model.safetensors.index.json), and a writer.
 *
 * File layout: 8-byte little-endian header length N, N bytes of JSON header
 * (an object; trailing spaces allowed), then the data section. Each header
 * entry is {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} with
 * offsets relative to the data section; "__metadata__" is an optional object
 * of strings. Validation follows the reference implementation: offsets lie
 * in the data section, end - begin equals the tensor's byte size, the
 * tensors tile the data section without overlaps or gaps, and the data
 * section holds nothing after the last tensor.
 *
 * Alignment: vlm_st_write (like the reference writer) orders the data by
 * element size so every tensor is aligned to its element size. Files from
 * other writers may place e.g. an F32 tensor at an odd offset; the reader
 * accepts them (as the reference does), so code that dereferences
 * entry->data as float/int types on such files must copy first.
 */
#include "io/vlm_io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

struct vlm_st_file {
    char *path;
    vlm_mapped_file map;
};

/* ------------------------------------------------------------------ helpers */

static char *st_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t o = a;
    if (a && dir[a - 1] != '/') p[o++] = '/';
    memcpy(p + o, name, b + 1);
    return p;
}

static int st_is_file(const char *path) {
    return vlm_path_kind(path) == 1;
}

static int st_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* A JSON number that is an integer in [0, 2^53]; returns 0 on success. */
static int st_json_uint(const vlm_json *j, uint64_t *out) {
    if (!j || j->type != VLM_JSON_NUMBER) return -1;
    double v = j->num;
    if (!(v >= 0 && v <= 9007199254740992.0) || v != (double)(uint64_t)v) return -1;
    *out = (uint64_t)v;
    return 0;
}

static int st_cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const vlm_st_entry *)a)->name, ((const vlm_st_entry *)b)->name);
}

typedef struct st_range { uint64_t begin, end; const char *name; } st_range;

static int st_cmp_range(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Growable entry list while opening. */
typedef struct st_list { vlm_st_entry *v; int n, cap; } st_list;

static vlm_st_entry *st_list_push(st_list *l) {
    if (l->n == l->cap) {
        if (l->cap > (1 << 26)) return NULL;
        int nc = l->cap ? l->cap * 2 : 64;
        vlm_st_entry *nv = realloc(l->v, (size_t)nc * sizeof *nv);
        if (!nv) return NULL;
        l->v = nv;
        l->cap = nc;
    }
    vlm_st_entry *e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    return e;
}

/* ------------------------------------------------------------------ one file */

/* A quantized weight's metadata (vlm_st_write_meta) applied to its entry,
 * checked against the bytes stored. */
static vlm_status st_apply_quant(vlm_st_entry *e, const vlm_json *meta, const char *path, vlm_error *err) {
    size_t kn = strlen(e->name) + 5;
    char *key = malloc(kn);
    if (!key) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    snprintf(key, kn, "vlm:%s", e->name);
    const char *v = vlm_json_str(vlm_json_get(meta, key), NULL);
    free(key);
    if (!v) return VLM_OK;
    /* "<DTYPE> <d0> ... <dn-1> <ORIGINAL>": the dims of the values, the
     * stored U8 tensor having the same but the last in bytes */
    char tok[VLM_MAX_DIMS + 2][24];
    int nt = 0, used = 0, off = 0;
    while (nt < VLM_MAX_DIMS + 2 && sscanf(v + off, "%23s%n", tok[nt], &used) == 1) { nt++; off += used; }
    int nd = nt - 2, bad = nt < 4 || sscanf(v + off, "%23s", tok[0]) == 1 || nd != e->ndim || e->dtype != VLM_U8;
    vlm_dtype t = VLM_U8, o = VLM_U8;
    int64_t dims[VLM_MAX_DIMS];
    if (!bad) bad = vlm_dtype_from_name(tok[0], &t) || vlm_dtype_block(t) == 1 || vlm_dtype_from_name(tok[nt - 1], &o) ||
                    vlm_dtype_block(o) != 1;
    for (int d = 0; !bad && d < nd; d++) {
        char *end;
        long long x = strtoll(tok[1 + d], &end, 10);
        bad = *end || x < 0 || x >= (1LL << 31) || (d == nd - 1 && x == 0);
        dims[d] = x;
        if (!bad && d < nd - 1) bad = e->shape[d] != x;
    }
    if (!bad) bad = dims[nd - 2] % vlm_dtype_rows(t) || e->shape[nd - 1] != (int64_t)vlm_dtype_bytes(t, dims[nd - 1]);
    if (bad)
        return vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': quantization metadata \"%s\" does not fit its %s tensor",
                             path, e->name, v, vlm_dtype_name(e->dtype));
    e->dtype = t;
    e->shape[nd - 1] = dims[nd - 1];
    e->orig_dtype = o;
    return VLM_OK;
}

/* Maps `path`, validates its header and appends its tensors to `list`.
 * `metadata`: where to store "__metadata__" (NULL to drop it). */
static vlm_status st_open_file(vlm_st_file *f, const char *path, st_list *list, vlm_json **metadata, vlm_error *err) {
    memset(f, 0, sizeof *f);
    f->path = vlm_strdup(path);
    if (!f->path) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    char why[256];
    if (vlm_map_file(path, &f->map, why, sizeof why) != 0) return vlm_error_set(err, VLM_ERR_IO, "%s: %s", path, why);
    uint64_t size = f->map.size;
    if (size < 8)
        return vlm_error_set(err, VLM_ERR_FORMAT, "%s: file of %llu bytes is too small for a safetensors header",
                             path, (unsigned long long)size);
    const unsigned char *b = (const unsigned char *)f->map.data;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    if (hlen < 2)
        return vlm_error_set(err, VLM_ERR_FORMAT, "%s: header length %llu is too small (a JSON object needs at least 2 bytes)",
                             path, (unsigned long long)hlen);
    if (hlen > ST_MAX_HEADER)
        return vlm_error_set(err, VLM_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit (corrupt or not a safetensors file)",
                             path, (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    if (hlen > size - 8)
        return vlm_error_set(err, VLM_ERR_FORMAT, "%s: header length %llu exceeds the %llu bytes after the length field (truncated file?)",
                             path, (unsigned long long)hlen, (unsigned long long)(size - 8));
    const char *htext = (const char *)b + 8;
    if (htext[0] != '{')
        return vlm_error_set(err, VLM_ERR_FORMAT, "%s: header does not start with '{' (not a safetensors file?)", path);
    vlm_error jerr = {0};
    vlm_json *h = vlm_json_parse(htext, (size_t)hlen, &jerr);
    if (!h) return vlm_error_set(err, jerr.code, "%s: header: %s", path, jerr.msg);
    if (h->type != VLM_JSON_OBJECT) {
        vlm_json_free(h);
        return vlm_error_set(err, VLM_ERR_FORMAT, "%s: header is not a JSON object", path);
    }
    const unsigned char *data = b + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    vlm_status st = VLM_OK;
    int first = list->n, n_tensors = 0;
    const vlm_json *fmeta = NULL; /* this file's __metadata__ */
    for (int i = 0; i < h->n && st == VLM_OK; i++) {
        vlm_json *it = &h->items[i];
        const char *name = it->key;
        if (!strcmp(name, "__metadata__")) {
            fmeta = it;
            if (it->type != VLM_JSON_OBJECT) {
                st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: __metadata__ is not an object", path);
                break;
            }
            for (int k = 0; k < it->n; k++)
                if (it->items[k].type != VLM_JSON_STRING) {
                    st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: __metadata__ value '%s' is not a string", path, it->items[k].key);
                    break;
                }
            if (st == VLM_OK && metadata && !*metadata) {
                /* Move the subtree out of the header tree. */
                vlm_json *m = malloc(sizeof *m);
                if (!m) { st = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); break; }
                *m = *it;
                m->key = NULL;
                it->type = VLM_JSON_NULL;
                it->n = 0;
                it->items = NULL;
                *metadata = m;
                fmeta = m;
            }
            continue;
        }
        if (it->type != VLM_JSON_OBJECT) {
            st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path, name);
            break;
        }
        const vlm_json *jd = vlm_json_get(it, "dtype"), *js = vlm_json_get(it, "shape"), *jo = vlm_json_get(it, "data_offsets");
        if (!jd || jd->type != VLM_JSON_STRING) { st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", path, name); break; }
        if (!js || js->type != VLM_JSON_ARRAY) { st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"", path, name); break; }
        if (!jo || jo->type != VLM_JSON_ARRAY || jo->n != 2) {
            st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be an array [begin, end]", path, name);
            break;
        }
        vlm_dtype dt;
        if (vlm_dtype_from_name(jd->str, &dt) || vlm_dtype_block(dt) != 1) { /* block types are stored as U8 */
            st = vlm_error_set(err, VLM_ERR_UNSUPPORTED, "%s: tensor '%s': unsupported dtype \"%s\"", path, name, jd->str);
            break;
        }
        if (js->n > VLM_MAX_DIMS) {
            st = vlm_error_set(err, VLM_ERR_UNSUPPORTED, "%s: tensor '%s': %d dimensions (at most %d supported)", path, name, js->n, VLM_MAX_DIMS);
            break;
        }
        vlm_st_entry *e = st_list_push(list);
        if (!e) { st = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); break; }
        e->dtype = dt;
        e->ndim = js->n;
        uint64_t nbytes = vlm_dtype_size(dt);
        for (int d = 0; d < js->n; d++) {
            uint64_t v;
            if (js->items[d].type == VLM_JSON_NUMBER && js->items[d].num < 0) {
                st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': negative dimension %g in shape", path, name, js->items[d].num);
                break;
            }
            if (st_json_uint(&js->items[d], &v)) {
                st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer", path, name, d);
                break;
            }
            if (v && nbytes > UINT64_MAX / 2 / v) {
                st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': shape too large (byte size overflows)", path, name);
                break;
            }
            e->shape[d] = (int64_t)v;
            nbytes *= v;
        }
        if (st != VLM_OK) break;
        uint64_t ob, oe;
        if (st_json_uint(&jo->items[0], &ob) || st_json_uint(&jo->items[1], &oe)) {
            st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': data_offsets are not non-negative integers", path, name);
            break;
        }
        if (oe < ob) {
            st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': data_offsets end %llu < begin %llu", path, name,
                               (unsigned long long)oe, (unsigned long long)ob);
            break;
        }
        if (oe > data_size) {
            st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] past the end of the %llu-byte data section",
                               path, name, (unsigned long long)ob, (unsigned long long)oe, (unsigned long long)data_size);
            break;
        }
        if (oe - ob != nbytes) {
            st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s': data_offsets span %llu bytes but shape and dtype %s need %llu",
                               path, name, (unsigned long long)(oe - ob), jd->str, (unsigned long long)nbytes);
            break;
        }
        e->data = data + ob;
        e->nbytes = (size_t)nbytes;
        e->orig_dtype = dt;
        e->name = vlm_strdup(name);
        if (!e->name) { st = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); break; }
        n_tensors++;
    }
    for (int i = first; i < list->n && st == VLM_OK && fmeta; i++) st = st_apply_quant(&list->v[i], fmeta, path, err);
    vlm_json_free(h);
    if (st != VLM_OK) return st;
    /* The tensors must tile the data section: no overlaps, no gaps. */
    if (n_tensors) {
        st_range *r = malloc((size_t)n_tensors * sizeof *r);
        if (!r) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
        for (int i = 0; i < n_tensors; i++) {
            const vlm_st_entry *e = &list->v[first + i];
            r[i].begin = (uint64_t)((const unsigned char *)e->data - data);
            r[i].end = r[i].begin + e->nbytes;
            r[i].name = e->name;
        }
        qsort(r, (size_t)n_tensors, sizeof *r, st_cmp_range);
        uint64_t pos = 0;
        for (int i = 0; i < n_tensors && st == VLM_OK; i++) {
            if (r[i].begin < pos)
                st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s' (bytes %llu..%llu) overlaps tensor '%s' (ending at %llu)",
                                   path, r[i].name, (unsigned long long)r[i].begin, (unsigned long long)r[i].end,
                                   r[i - 1].name, (unsigned long long)pos);
            else if (r[i].begin > pos)
                st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: gap of %llu bytes in the data section before tensor '%s'",
                                   path, (unsigned long long)(r[i].begin - pos), r[i].name);
            pos = r[i].end;
        }
        if (st == VLM_OK && pos != data_size)
            st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: data section has %llu bytes but the tensors cover %llu",
                               path, (unsigned long long)data_size, (unsigned long long)pos);
        free(r);
    } else if (data_size != 0) {
        st = vlm_error_set(err, VLM_ERR_FORMAT, "%s: %llu bytes of data but no tensors", path, (unsigned long long)data_size);
    }
    return st;
}

static void st_close_file(vlm_st_file *f) {
    vlm_unmap_file(&f->map);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------------ open / close */

void vlm_st_close(vlm_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_entries; i++) free(st->entries[i].name);
    free(st->entries);
    for (int i = 0; i < st->n_files; i++) st_close_file(&st->files[i]);
    free(st->files);
    vlm_json_free(st->metadata);
    memset(st, 0, sizeof *st);
}

/* Sorts the entries and rejects duplicate names. */
static vlm_status st_finish(vlm_safetensors *st, const char *path, vlm_error *err) {
    if (st->n_entries > 1) qsort(st->entries, (size_t)st->n_entries, sizeof *st->entries, st_cmp_entry_name);
    for (int i = 1; i < st->n_entries; i++)
        if (!strcmp(st->entries[i - 1].name, st->entries[i].name))
            return vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s' appears twice", path, st->entries[i].name);
    return VLM_OK;
}

static vlm_status st_open_index(vlm_safetensors *st, const char *index_path, st_list *list, vlm_error *err) {
    vlm_json *idx = vlm_json_load(index_path, err);
    if (!idx) return err ? err->code : VLM_ERR_FORMAT;
    vlm_status s = VLM_OK;
    const vlm_json *wm = vlm_json_get(idx, "weight_map");
    char *dir = NULL;
    const char **names = NULL;
    if (!wm || wm->type != VLM_JSON_OBJECT) {
        s = vlm_error_set(err, VLM_ERR_FORMAT, "%s: missing \"weight_map\" object", index_path);
        goto done;
    }
    dir = vlm_strdup(index_path);
    names = calloc((size_t)wm->n + 1, sizeof *names);
    if (!dir || !names) { s = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); goto done; }
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    else strcpy(dir, ".");
    /* Distinct shard files in order of first appearance. */
    int n_names = 0;
    for (int i = 0; i < wm->n; i++) {
        const vlm_json *v = &wm->items[i];
        if (v->type != VLM_JSON_STRING || v->n == 0 || (int)strlen(v->str) != v->n) {
            s = vlm_error_set(err, VLM_ERR_FORMAT, "%s: weight_map[\"%s\"] is not a file name", index_path, v->key);
            goto done;
        }
        if (v->str[0] == '/' || strstr(v->str, "..")) {
            s = vlm_error_set(err, VLM_ERR_FORMAT, "%s: weight_map[\"%s\"] = \"%s\" points outside the checkpoint directory",
                              index_path, v->key, v->str);
            goto done;
        }
        int seen = 0;
        for (int k = 0; k < n_names && !seen; k++) seen = !strcmp(names[k], v->str);
        if (!seen) names[n_names++] = v->str;
    }
    st->files = calloc((size_t)n_names + 1, sizeof *st->files);
    if (!st->files) { s = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); goto done; }
    for (int k = 0; k < n_names; k++) {
        char *p = st_join(dir, names[k]);
        if (!p) { s = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); goto done; }
        int first = list->n;
        st->n_files++;
        s = st_open_file(&st->files[k], p, list, &st->metadata, err);
        if (s == VLM_OK) {
            /* Every tensor the index assigns to this shard must be in it. */
            for (int i = 0; i < wm->n && s == VLM_OK; i++) {
                if (strcmp(wm->items[i].str, names[k])) continue;
                int found = 0;
                for (int t = first; t < list->n && !found; t++) found = !strcmp(list->v[t].name, wm->items[i].key);
                if (!found)
                    s = vlm_error_set(err, VLM_ERR_FORMAT, "%s: tensor '%s' listed in the index is not in %s",
                                      index_path, wm->items[i].key, p);
            }
        }
        free(p);
        if (s != VLM_OK) goto done;
    }
done:
    free(names);
    free(dir);
    vlm_json_free(idx);
    return s;
}

vlm_status vlm_st_open(vlm_safetensors *st, const char *path, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    memset(st, 0, sizeof *st);
    if (!path) return vlm_error_set(err, VLM_ERR_ARG, "vlm_st_open: NULL path");
    int kind = vlm_path_kind(path);
    if (!kind) return vlm_error_set(err, VLM_ERR_IO, "%s: no such file or directory", path);
    char *file = NULL;
    if (kind == 2) {
        file = st_join(path, "model.safetensors");
        if (file && !st_is_file(file)) {
            free(file);
            file = st_join(path, "model.safetensors.index.json");
            if (file && !st_is_file(file)) {
                free(file);
                return vlm_error_set(err, VLM_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json in this directory", path);
            }
        }
    } else {
        file = vlm_strdup(path);
    }
    if (!file) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    st_list list = {0};
    vlm_status s;
    if (st_ends_with(file, ".json")) {
        s = st_open_index(st, file, &list, err);
    } else {
        st->files = calloc(1, sizeof *st->files);
        if (!st->files) s = vlm_error_set(err, VLM_ERR_OOM, "out of memory");
        else {
            st->n_files = 1;
            s = st_open_file(&st->files[0], file, &list, &st->metadata, err);
        }
    }
    st->entries = list.v;
    st->n_entries = list.n;
    if (s == VLM_OK) s = st_finish(st, file, err);
    free(file);
    if (s != VLM_OK) vlm_st_close(st);
    return s;
}

const vlm_st_entry *vlm_st_find(const vlm_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    int lo = 0, hi = st->n_entries - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->entries[mid].name, name);
        if (c == 0) return &st->entries[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

vlm_tensor vlm_st_tensor(const vlm_st_entry *e) {
    return vlm_tensor_make(e->dtype, e->ndim, e->shape, (void *)e->data);
}

/* ------------------------------------------------------------------ writer */

static void st_buf_json_string(vlm_buf *b, const char *s) {
    vlm_buf_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; vlm_buf_add(b, esc, 2); }
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); vlm_buf_add(b, esc, 6); }
        else vlm_buf_add(b, (const char *)&c, 1);
    }
    vlm_buf_add(b, "\"", 1);
}

typedef struct st_witem { const char *name; const vlm_tensor *t; } st_witem;

static int st_cmp_witem(const void *a, const void *b) {
    return strcmp(((const st_witem *)a)->name, ((const st_witem *)b)->name);
}

/* Data order: larger element sizes first, then by name (as the reference
 * writer does), so that every tensor is aligned to its element size. */
static int st_cmp_witem_layout(const void *a, const void *b) {
    const st_witem *x = a, *y = b;
    size_t sx = vlm_dtype_size(x->t->dtype), sy = vlm_dtype_size(y->t->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

vlm_status vlm_st_write(const char *path, int n, const char *const *names,
                        const vlm_tensor *const *tensors, vlm_error *err) {
    return vlm_st_write_meta(path, n, names, tensors, 0, NULL, NULL, err);
}

vlm_status vlm_st_write_meta(const char *path, int n, const char *const *names, const vlm_tensor *const *tensors,
                             int n_meta, const char *const *keys, const char *const *values, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    if (!path || n < 0 || (n > 0 && (!names || !tensors)) || n_meta < 0 || (n_meta > 0 && (!keys || !values)))
        return vlm_error_set(err, VLM_ERR_ARG, "vlm_st_write: bad arguments");
    for (int i = 0; i < n_meta; i++)
        if (!keys[i] || !values[i]) return vlm_error_set(err, VLM_ERR_ARG, "vlm_st_write: metadata %d is missing", i);
    st_witem *items = calloc((size_t)n + 1, sizeof *items);
    if (!items) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    vlm_status s = VLM_OK;
    for (int i = 0; i < n && s == VLM_OK; i++) {
        const vlm_tensor *t = tensors[i];
        if (!names[i] || !names[i][0] || !strcmp(names[i], "__metadata__"))
            s = vlm_error_set(err, VLM_ERR_ARG, "vlm_st_write: tensor %d has an invalid name", i);
        else if (!t || (unsigned)t->dtype >= VLM_NTYPES || vlm_dtype_block(t->dtype) != 1 || t->ndim < 0 ||
                 t->ndim > VLM_MAX_DIMS) /* block types go as U8 bytes */
            s = vlm_error_set(err, VLM_ERR_ARG, "vlm_st_write: tensor '%s' has an invalid header", names[i]);
        else if (!vlm_is_contiguous(t))
            s = vlm_error_set(err, VLM_ERR_ARG, "vlm_st_write: tensor '%s' is not contiguous", names[i]);
        else {
            for (int d = 0; d < t->ndim; d++)
                if (t->shape[d] < 0) s = vlm_error_set(err, VLM_ERR_ARG, "vlm_st_write: tensor '%s' has a negative dimension", names[i]);
            if (s == VLM_OK && vlm_nbytes(t) && !t->data)
                s = vlm_error_set(err, VLM_ERR_ARG, "vlm_st_write: tensor '%s' has no data", names[i]);
        }
        items[i].name = names[i];
        items[i].t = t;
    }
    if (s != VLM_OK) { free(items); return s; }
    qsort(items, (size_t)n, sizeof *items, st_cmp_witem);
    for (int i = 1; i < n; i++)
        if (!strcmp(items[i - 1].name, items[i].name)) {
            s = vlm_error_set(err, VLM_ERR_ARG, "vlm_st_write: tensor name '%s' given twice", items[i].name);
            free(items);
            return s;
        }
    qsort(items, (size_t)n, sizeof *items, st_cmp_witem_layout);
    vlm_buf h = {0};
    vlm_buf_str(&h, "{");
    if (n_meta) {
        vlm_buf_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) vlm_buf_str(&h, ",");
            st_buf_json_string(&h, keys[i]);
            vlm_buf_str(&h, ":");
            st_buf_json_string(&h, values[i]);
        }
        vlm_buf_str(&h, n ? "}," : "}");
    }
    uint64_t off = 0;
    char num[64];
    for (int i = 0; i < n; i++) {
        const vlm_tensor *t = items[i].t;
        if (i) vlm_buf_str(&h, ",");
        st_buf_json_string(&h, items[i].name);
        vlm_buf_str(&h, ":{\"dtype\":\"");
        vlm_buf_str(&h, vlm_dtype_name(t->dtype));
        vlm_buf_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            vlm_buf_str(&h, num);
        }
        uint64_t nb = vlm_nbytes(t);
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + nb));
        vlm_buf_str(&h, num);
        off += nb;
    }
    vlm_buf_str(&h, "}");
    while (h.n % 8) vlm_buf_str(&h, " "); /* data section 8-byte aligned */
    if (h.oom) { free(h.p); free(items); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    FILE *f = fopen(path, "wb");
    if (!f) {
        s = vlm_error_set(err, VLM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        free(h.p); free(items);
        return s;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.p, 1, h.n, f) == h.n;
    for (int i = 0; i < n && ok; i++) {
        size_t nb = vlm_nbytes(items[i].t);
        if (nb) ok = fwrite(items[i].t->data, 1, nb, f) == nb;
    }
    if (fclose(f) != 0) ok = 0;
    free(h.p);
    free(items);
    if (!ok) {
        remove(path);
        return vlm_error_set(err, VLM_ERR_IO, "%s: write failed", path);
    }
    return VLM_OK;
}
