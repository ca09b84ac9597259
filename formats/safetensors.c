/* safetensors.c: safetensors reader (single file or sharded HF directory) and
 * writer. See safetensors.h for the checks the reader makes; in short, nothing
 * from the header is trusted until it has been checked against the file size,
 * and the tensors must tile the data buffer exactly.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "err.h"
#include "fileio.h"
#include "gguf.h"   /* cllm_f32_to_f16 / bf16 and the f16 -> f32 dequantizer */

#define ST_MAX_HEADER 100000000ull

static const struct { const char *name; int size; } dtypes[CLLM_ST_NDTYPE] = {
    [CLLM_ST_F32] = {"F32", 4}, [CLLM_ST_F16] = {"F16", 2}, [CLLM_ST_BF16] = {"BF16", 2},
    [CLLM_ST_F64] = {"F64", 8}, [CLLM_ST_I64] = {"I64", 8}, [CLLM_ST_I32] = {"I32", 4},
    [CLLM_ST_I16] = {"I16", 2}, [CLLM_ST_I8] = {"I8", 1}, [CLLM_ST_U8] = {"U8", 1},
    [CLLM_ST_BOOL] = {"BOOL", 1}, [CLLM_ST_U16] = {"U16", 2}, [CLLM_ST_U32] = {"U32", 4},
    [CLLM_ST_U64] = {"U64", 8}, [CLLM_ST_F8_E4M3] = {"F8_E4M3", 1}, [CLLM_ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *cllm_st_dtype_name(int d) { return d >= 0 && d < CLLM_ST_NDTYPE ? dtypes[d].name : "?"; }

typedef struct st_file {
    char *path;
    int fd;
    uint64_t data_start, data_size;
} st_file;

struct cllm_st {
    st_file *files;
    int n_files;
    cllm_st_tensor *ts;
    int n_ts, cap_ts;
    json_t *meta;   /* __metadata__ of the first file, or NULL */
    json_t *by_name;/* name -> index into ts (a hash table: a hostile header may hold a million names) */
};

void cllm_st_close(cllm_st *st) {
    if (!st) return;
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].fd >= 0) close(st->files[i].fd);
        free(st->files[i].path);
    }
    free(st->files);
    for (int i = 0; i < st->n_ts; i++) free((void *)st->ts[i].name);
    free(st->ts);
    json_decref(st->meta);
    json_decref(st->by_name);
    free(st);
}

/* The header's n bytes at off; the file's size was checked, so a short read
 * means it changed since. */
static int read_header_part(int fd, const char *path, void *buf, size_t n, uint64_t off) {
    if (!cllm_pread_full(fd, buf, n, off)) return 0;
    return cllm_error(errno ? CLLM_EIO : CLLM_ETRUNC, "%s: header: %s", path,
                      errno ? strerror(errno) : "file ends early (changed while read?)");
}

static int cmp_begin(const void *a, const void *b) {
    const cllm_st_tensor *x = *(cllm_st_tensor *const *)a, *y = *(cllm_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Parse one tensor entry of file fi. */
static int parse_entry(cllm_st *st, int fi, const char *path, const char *name, json_t *v) {
    if (!json_is_object(v)) return cllm_error(CLLM_EFORMAT, "%s: entry %s is not an object", path, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"), *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd)) return cllm_error(CLLM_EFORMAT, "%s: tensor %s has no string dtype", path, name);
    if (!json_is_array(js)) return cllm_error(CLLM_EFORMAT, "%s: tensor %s has no shape array", path, name);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return cllm_error(CLLM_EFORMAT, "%s: tensor %s: data_offsets must be [begin, end]", path, name);
    if (json_object_size(v) != 3)
        return cllm_error(CLLM_EFORMAT, "%s: tensor %s has fields besides dtype, shape and data_offsets", path, name);
    cllm_st_tensor t = {0};
    t.file = fi;
    t.dtype = -1;
    for (int d = 0; d < CLLM_ST_NDTYPE; d++)
        if (!strcmp(json_string_value(jd), dtypes[d].name)) t.dtype = d;
    if (t.dtype < 0) return cllm_error(CLLM_EFORMAT, "%s: tensor %s has unknown dtype %.40s", path, name, json_string_value(jd));
    size_t nd = json_array_size(js);
    if (nd > CLLM_ST_MAX_DIMS) return cllm_error(CLLM_EFORMAT, "%s: tensor %s has %zu dimensions (at most %d)", path, name, nd, CLLM_ST_MAX_DIMS);
    t.n_dims = (int)nd;
    uint64_t numel = 1;
    for (size_t d = 0; d < nd; d++) {
        json_t *e = json_array_get(js, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return cllm_error(CLLM_EFORMAT, "%s: tensor %s: shape entry %zu is not a non-negative integer", path, name, d);
        t.shape[d] = json_integer_value(e);
        if (__builtin_mul_overflow(numel, (uint64_t)t.shape[d], &numel))
            return cllm_error(CLLM_EFORMAT, "%s: tensor %s: element count overflows 64 bits", path, name);
    }
    t.numel = numel;
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)dtypes[t.dtype].size, &nbytes))
        return cllm_error(CLLM_EFORMAT, "%s: tensor %s: byte size overflows 64 bits", path, name);
    json_t *b = json_array_get(jo, 0), *e = json_array_get(jo, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 || json_integer_value(e) < 0)
        return cllm_error(CLLM_EFORMAT, "%s: tensor %s: data_offsets are not non-negative integers", path, name);
    t.begin = (uint64_t)json_integer_value(b);
    t.end = (uint64_t)json_integer_value(e);
    if (t.end < t.begin) return cllm_error(CLLM_EFORMAT, "%s: tensor %s: data_offsets end %" PRIu64 " < begin %" PRIu64, path, name, t.end, t.begin);
    if (t.end - t.begin != nbytes)
        return cllm_error(CLLM_EFORMAT, "%s: tensor %s: %" PRIu64 " bytes for %" PRIu64 " %s elements (expected %" PRIu64 ")",
                          path, name, t.end - t.begin, numel, dtypes[t.dtype].name, nbytes);
    if (cllm_st_find(st, name)) return cllm_error(CLLM_EFORMAT, "%s: duplicate tensor name %s", path, name);
    if (!st->by_name && !(st->by_name = json_object())) return cllm_error(CLLM_ENOMEM, "out of memory");
    if (json_object_set_new(st->by_name, name, json_integer(st->n_ts)))
        return cllm_error(CLLM_EFORMAT, "%s: tensor name is not valid UTF-8 or out of memory", path);
    t.name = cllm_strdup(name);
    if (!t.name) return CLLM_ENOMEM;
    size_t cap = (size_t)st->cap_ts;
    if (cllm_grow((void **)&st->ts, &cap, (size_t)st->n_ts + 1, sizeof *st->ts)) { free((void *)t.name); return CLLM_ENOMEM; }
    st->cap_ts = (int)cap;
    st->ts[st->n_ts++] = t;
    return 0;
}

/* Add one file (a shard) to st and parse its header. */
static int add_file(cllm_st *st, const char *path) {
    size_t cap = (size_t)st->n_files;
    if (cllm_grow((void **)&st->files, &cap, (size_t)st->n_files + 1, sizeof *st->files)) return CLLM_ENOMEM;
    int fi = st->n_files;
    st_file *f = &st->files[fi];
    f->fd = -1;
    f->path = cllm_strdup(path);
    if (!f->path) return CLLM_ENOMEM;
    st->n_files++;
    struct stat sb;
    if (stat(path, &sb)) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return cllm_error(CLLM_EINVAL, "%s: not a regular file (not seekable)", path);
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    if (fstat(f->fd, &sb)) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return cllm_error(CLLM_EINVAL, "%s: not a regular file (not seekable)", path);
    uint64_t size = (uint64_t)sb.st_size;
    unsigned char lenb[8];
    if (size < 8) return cllm_error(CLLM_EFORMAT, "%s: %" PRIu64 " bytes is too short for a safetensors file", path, size);
    int rc = read_header_part(f->fd, path, lenb, 8, 0);
    if (rc) return rc;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | lenb[i];
    if (n > ST_MAX_HEADER)
        return cllm_error(CLLM_ELIMIT, "%s: header length %" PRIu64 " exceeds the limit of %llu bytes", path, n, ST_MAX_HEADER);
    if (n > size - 8)
        return cllm_error(CLLM_ETRUNC, "%s: header length %" PRIu64 " is larger than the file (%" PRIu64 " bytes; truncated download?)",
                          path, n, size);
    if (n < 2) return cllm_error(CLLM_EFORMAT, "%s: header length %" PRIu64 " is too short for a JSON object", path, n);
    char *h = cllm_malloc((size_t)n);
    if (!h) return CLLM_ENOMEM;
    if ((rc = read_header_part(f->fd, path, h, (size_t)n, 8))) { free(h); return rc; }
    if (h[0] != '{') { free(h); return cllm_error(CLLM_EFORMAT, "%s: header does not start with '{' (not a safetensors file?)", path); }
    json_error_t je;
    json_t *root = json_loadb(h, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    free(h);
    if (!root) return cllm_error(CLLM_EFORMAT, "%s: bad JSON header at byte %d: %s", path, je.position, je.text);
    if (!json_is_object(root)) { rc = cllm_error(CLLM_EFORMAT, "%s: header is not a JSON object", path); goto out; }
    f->data_start = 8 + n;
    f->data_size = size - 8 - n;
    int first = st->n_ts;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) { rc = cllm_error(CLLM_EFORMAT, "%s: __metadata__ is not an object", path); goto out; }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv)
                if (!json_is_string(mv)) { rc = cllm_error(CLLM_EFORMAT, "%s: __metadata__ value of %s is not a string", path, mk); goto out; }
            if (!st->meta) st->meta = json_incref(v);
            continue;
        }
        if ((rc = parse_entry(st, fi, path, key, v))) goto out;
    }
    /* The tensors must tile [0, data_size) exactly. */
    int cnt = st->n_ts - first;
    if (cnt == 0) {
        if (f->data_size) rc = cllm_error(CLLM_EFORMAT, "%s: %" PRIu64 " data bytes but no tensors", path, f->data_size);
        goto out;
    }
    cllm_st_tensor **ord = cllm_malloc((size_t)cnt * sizeof *ord);
    if (!ord) { rc = CLLM_ENOMEM; goto out; }
    for (int i = 0; i < cnt; i++) ord[i] = &st->ts[first + i];
    qsort(ord, (size_t)cnt, sizeof *ord, cmp_begin);
    uint64_t at = 0;
    for (int i = 0; i < cnt && !rc; i++) {
        if (ord[i]->begin < at)
            rc = cllm_error(CLLM_EFORMAT, "%s: tensors %s and %s overlap (bytes %" PRIu64 "..%" PRIu64 ")", path,
                            ord[i - 1]->name, ord[i]->name, ord[i]->begin, at);
        else if (ord[i]->begin > at)
            rc = cllm_error(CLLM_EFORMAT, "%s: gap of %" PRIu64 " bytes before tensor %s", path, ord[i]->begin - at, ord[i]->name);
        at = ord[i]->end;
    }
    free(ord);
    if (!rc && at > f->data_size)
        rc = cllm_error(CLLM_ETRUNC, "%s: tensors need %" PRIu64 " data bytes, the file has %" PRIu64 " (truncated download?)",
                        path, at, f->data_size);
    else if (!rc && at < f->data_size)
        rc = cllm_error(CLLM_EFORMAT, "%s: %" PRIu64 " bytes after the last tensor", path, f->data_size - at);
out:
    json_decref(root);
    return rc;
}

int cllm_st_open(cllm_st **out, const char *path) {
    *out = NULL;
    cllm_st *st = cllm_calloc(1, sizeof *st);
    if (!st) return CLLM_ENOMEM;
    int rc = add_file(st, path);
    if (rc) { cllm_st_close(st); return rc; }
    *out = st;
    return 0;
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = cllm_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int cllm_st_open_dir(cllm_st **out, const char *dir) {
    *out = NULL;
    char *idx = join(dir, "model.safetensors.index.json");
    if (!idx) return CLLM_ENOMEM;
    struct stat sb;
    if (stat(idx, &sb)) {
        free(idx);
        char *single = join(dir, "model.safetensors");
        if (!single) return CLLM_ENOMEM;
        if (stat(single, &sb)) {
            int rc = cllm_error(CLLM_EIO, "%s: no model.safetensors or model.safetensors.index.json", dir);
            free(single);
            return rc;
        }
        int rc = cllm_st_open(out, single);
        free(single);
        return rc;
    }
    json_error_t je;
    json_t *root = json_load_file(idx, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        int rc = cllm_error(CLLM_EFORMAT, "%s: bad JSON at line %d: %s", idx, je.line, je.text);
        free(idx);
        return rc;
    }
    int rc = 0;
    cllm_st *st = cllm_calloc(1, sizeof *st);
    if (!st) { rc = CLLM_ENOMEM; goto out; }
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) { rc = cllm_error(CLLM_EFORMAT, "%s: no weight_map object", idx); goto out; }
    const char *name;
    json_t *v;
    /* Open each shard once, in order of first mention. */
    json_object_foreach(wm, name, v) {
        if (!json_is_string(v)) { rc = cllm_error(CLLM_EFORMAT, "%s: weight_map entry %s is not a string", idx, name); goto out; }
        const char *fn = json_string_value(v);
        if (!*fn || strchr(fn, '/') || !strcmp(fn, ".") || !strcmp(fn, "..")) {
            rc = cllm_error(CLLM_EFORMAT, "%s: shard name \"%.100s\" is not a plain file name", idx, fn);
            goto out;
        }
        int seen = 0;
        for (int i = 0; i < st->n_files && !seen; i++) {
            const char *base = strrchr(st->files[i].path, '/');
            seen = !strcmp(base ? base + 1 : st->files[i].path, fn);
        }
        if (seen) continue;
        char *p = join(dir, fn);
        if (!p) { rc = CLLM_ENOMEM; goto out; }
        rc = add_file(st, p);
        free(p);
        if (rc) goto out;
    }
    /* Every mapped tensor must be in the shard the index names. */
    json_object_foreach(wm, name, v) {
        const cllm_st_tensor *t = cllm_st_find(st, name);
        const char *fn = json_string_value(v);
        const char *base = t ? strrchr(st->files[t->file].path, '/') : NULL;
        if (!t || strcmp(base ? base + 1 : st->files[t->file].path, fn)) {
            rc = cllm_error(CLLM_EFORMAT, "%s: tensor %s is not in shard %s", idx, name, fn);
            goto out;
        }
    }
out:
    json_decref(root);
    free(idx);
    if (rc) { cllm_st_close(st); return rc; }
    *out = st;
    return 0;
}

int cllm_st_n_tensors(const cllm_st *st) { return st->n_ts; }
const cllm_st_tensor *cllm_st_tensor_at(const cllm_st *st, int i) { return i >= 0 && i < st->n_ts ? &st->ts[i] : NULL; }

const cllm_st_tensor *cllm_st_find(const cllm_st *st, const char *name) {
    json_t *i = st->by_name ? json_object_get(st->by_name, name) : NULL;
    return i ? &st->ts[json_integer_value(i)] : NULL;
}

const char *cllm_st_metadata(const cllm_st *st, const char *key) {
    return st->meta ? json_string_value(json_object_get(st->meta, key)) : NULL;
}

size_t cllm_st_n_metadata(const cllm_st *st) { return st->meta ? json_object_size(st->meta) : 0; }

int cllm_st_metadata_at(const cllm_st *st, size_t i, const char **key, const char **val) {
    void *it = st->meta ? json_object_iter(st->meta) : NULL;
    for (size_t k = 0; it && k < i; k++) it = json_object_iter_next(st->meta, it);
    if (!it) return -1;
    *key = json_object_iter_key(it);
    *val = json_string_value(json_object_iter_value(it));
    return 0;
}

size_t cllm_st_part_bytes(const cllm_st_tensor *t, size_t n) {
    return t->dtype >= 0 && t->dtype < CLLM_ST_NDTYPE ? n * (size_t)dtypes[t->dtype].size : 0;
}

static int ggml_type_of(const cllm_st *st, const cllm_st_tensor *t) {
    int gtype = t->dtype == CLLM_ST_F32 ? GGML_T_F32 : t->dtype == CLLM_ST_F16 ? GGML_T_F16 :
                t->dtype == CLLM_ST_BF16 ? GGML_T_BF16 : -1;
    if (gtype < 0)
        return cllm_error(CLLM_EUNSUP, "%s: tensor %s has dtype %s (supported: F32, F16, BF16)",
                          st->files[t->file].path, t->name, dtypes[t->dtype].name);
    return gtype;
}

int cllm_st_read_part_f32(const cllm_st *st, const cllm_st_tensor *t, size_t first, size_t n, float *dst, void *raw) {
    const st_file *f = &st->files[t->file];
    int gtype = ggml_type_of(st, t);
    if (gtype < 0) return gtype;
    if (first > t->numel || n > t->numel - first)
        return cllm_error(CLLM_EINVAL, "%s: tensor %s: elements %zu..%zu are not inside its %" PRIu64, f->path,
                          t->name, first, first + n, t->numel);
    size_t esz = (size_t)dtypes[t->dtype].size;
    void *to = t->dtype == CLLM_ST_F32 ? (void *)dst : raw;   /* little-endian host: F32 as stored */
    if (cllm_pread_full(f->fd, to, n * esz, f->data_start + t->begin + first * esz))
        return cllm_error(errno ? CLLM_EIO : CLLM_ETRUNC, "%s: tensor %s: %s", f->path, t->name,
                          errno ? strerror(errno) : "file ends early (changed while read?)");
    return t->dtype == CLLM_ST_F32 ? 0 : cllm_dequantize(gtype, raw, dst, n);
}

int cllm_st_read_f32(cllm_st *st, const cllm_st_tensor *t, float *dst, size_t numel) {
    if (t->numel != numel)
        return cllm_error(CLLM_EINVAL, "%s: tensor %s has %" PRIu64 " elements, caller expected %zu",
                          st->files[t->file].path, t->name, t->numel, numel);
    int rc = ggml_type_of(st, t);
    if (rc < 0) return rc;
    if (t->dtype == CLLM_ST_F32) return cllm_st_read_part_f32(st, t, 0, numel, dst, NULL);
    enum { CH = 1 << 18 };
    void *raw = cllm_malloc(cllm_st_part_bytes(t, CH));
    if (!raw) return CLLM_ENOMEM;
    rc = 0;
    for (size_t i = 0; i < numel && !rc; i += CH)
        rc = cllm_st_read_part_f32(st, t, i, numel - i < CH ? numel - i : CH, dst + i, raw);
    free(raw);
    return rc;
}

/* ---- writer ---- */

static int wr(FILE *f, const void *p, size_t n, const char *path) {
    if (n && fwrite(p, 1, n, f) != n) return cllm_error(CLLM_EIO, "%s: write error: %s", path, strerror(errno));
    return 0;
}

int cllm_st_write(const char *path, const cllm_st_wtensor *ts, size_t n, int dtype,
                  const char *const *meta_keys, const char *const *meta_vals, size_t n_meta) {
    if (dtype != CLLM_ST_F32 && dtype != CLLM_ST_F16 && dtype != CLLM_ST_BF16)
        return cllm_error(CLLM_EINVAL, "%s: can only write F32, F16 or BF16 tensors", path);
    size_t esz = (size_t)dtypes[dtype].size;
    int rc = 0;
    json_t *root = json_object();
    if (!root) return cllm_error(CLLM_ENOMEM, "out of memory building a safetensors header");
    if (n_meta) {
        json_t *m = json_object();
        for (size_t i = 0; m && i < n_meta; i++) json_object_set_new(m, meta_keys[i], json_string(meta_vals[i]));
        if (!m || json_object_set_new(root, "__metadata__", m)) rc = cllm_error(CLLM_ENOMEM, "out of memory building a safetensors header");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t numel = 1;
        json_t *shape = json_array();
        for (int d = 0; d < ts[i].n_dims; d++) {
            numel *= (uint64_t)ts[i].shape[d];
            json_array_append_new(shape, json_integer(ts[i].shape[d]));
        }
        json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtypes[dtype].name, "shape", shape, "data_offsets",
                              (json_int_t)off, (json_int_t)(off + numel * esz));
        int dup = json_object_get(root, ts[i].name) != NULL;
        if (dup) json_decref(e);   /* json_object_set_new would have taken it */
        if (!e || dup || json_object_set_new(root, ts[i].name, e))
            rc = cllm_error(CLLM_EINVAL, "%s: cannot add tensor %s to the header (duplicate name?)", path, ts[i].name);
        off += numel * esz;
    }
    char *hdr = rc ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (rc) return rc;
    if (!hdr) return cllm_error(CLLM_ENOMEM, "out of memory writing a safetensors header");
    size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8;  /* pad with spaces to 8 bytes */
    size_t plen = strlen(path);
    char *tmp = cllm_malloc(plen + 32);
    FILE *f = NULL;
    if (!tmp) { free(hdr); return CLLM_ENOMEM; }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (!f) { rc = cllm_error(CLLM_EIO, "%s: %s", tmp, strerror(errno)); goto out; }
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    rc = wr(f, lb, 8, tmp);
    if (!rc) rc = wr(f, hdr, hlen, tmp);
    for (size_t i = hlen; i < padded && !rc; i++) rc = wr(f, " ", 1, tmp);
    uint16_t *buf = NULL;
    enum { CH = 1 << 16 };
    if (!rc && dtype != CLLM_ST_F32 && !(buf = cllm_malloc(CH * sizeof *buf))) rc = CLLM_ENOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < ts[i].n_dims; d++) numel *= (uint64_t)ts[i].shape[d];
        if (dtype == CLLM_ST_F32) { rc = wr(f, ts[i].data, (size_t)numel * 4, tmp); continue; }
        for (uint64_t j = 0; j < numel && !rc; j += CH) {
            size_t k = numel - j < CH ? (size_t)(numel - j) : CH;
            if (dtype == CLLM_ST_F16) cllm_f32_to_f16(ts[i].data + j, buf, k);
            else cllm_f32_to_bf16(ts[i].data + j, buf, k);
            rc = wr(f, buf, k * 2, tmp);
        }
    }
    free(buf);
    if (!rc && fflush(f)) rc = cllm_error(CLLM_EIO, "%s: write error: %s", tmp, strerror(errno));
    /* On disk before the rename (as gguf.c's writer): fsync reports the
     * ENOSPC/EDQUOT of delayed allocation, and a crash after the rename
     * cannot leave a partial file under the final name. */
    if (!rc && cllm_fsync(fileno(f))) rc = cllm_error(CLLM_EIO, "%s: fsync: %s", tmp, strerror(errno));
    if (fclose(f) && !rc) rc = cllm_error(CLLM_EIO, "%s: write error: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path)) rc = cllm_error(CLLM_EIO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (rc) remove(tmp);
out:
    free(tmp);
    free(hdr);
    return rc;
}
