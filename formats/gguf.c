/* gguf.c: GGUF v2/v3 reader (metadata, tensor infos, on-demand tensor data
 * dequantized to fp32) and writer (F32/F16/BF16 tensors, metadata copied or set).
 *
 * Reader invariants, in the order they are established by cllm_gguf_open:
 *   - the path is a regular file (a FIFO or stdin is refused: sizes are checked
 *     against the file size, which needs a seekable file);
 *   - magic "GGUF", version 2 or 3, little-endian (a byte-swapped version is
 *     named as such);
 *   - every count, length and array size is checked against the bytes left in
 *     the file BEFORE anything is allocated for it (a string can never be longer
 *     than the rest of the file, an array of n elements needs n * min-size bytes);
 *   - keys are non-empty printable ASCII, at most 65535 bytes, unique; arrays of
 *     arrays are refused (no recursion);
 *   - general.alignment, when present, is a u32 power of two in [1, 1 MiB];
 *   - tensor names are 1..63 bytes and unique; n_dims is 1..4; every ne is >= 1
 *     and their product fits int64; the type is a known ggml type; ne[0] is a
 *     multiple of its block size; the byte size is computed in checked 64-bit
 *     arithmetic; offsets are aligned, lie inside the data section with their
 *     whole size, and no two tensors overlap.
 * Nothing here asserts on file contents; every failure is a CLLM_E* code with a
 * message naming the file, the field and its value.
 */
#include "gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "fileio.h"

#define GGUF_MAGIC 0x46554747u      /* "GGUF" read as little-endian u32 */
#define GGUF_DEFAULT_ALIGN 32u
#define GGUF_MAX_ALIGN (1u << 20)
#define GGUF_MAX_KEY 65535u
#define GGUF_MAX_STR (1ull << 30)   /* one string value: 1 GiB, like llama.cpp */
#define GGUF_MAX_NAME 64            /* tensor names are < 64 bytes (ggml) */

/* ---- type tables ---- */

typedef struct { const char *name; int blck; int size; } ggml_type_info;

static const ggml_type_info *type_info(int t) {
    static const ggml_type_info tab[] = {
        [0] = {"F32", 1, 4}, [1] = {"F16", 1, 2}, [2] = {"Q4_0", 32, 18}, [3] = {"Q4_1", 32, 20},
        [6] = {"Q5_0", 32, 22}, [7] = {"Q5_1", 32, 24}, [8] = {"Q8_0", 32, 34}, [9] = {"Q8_1", 32, 40},
        [10] = {"Q2_K", 256, 84}, [11] = {"Q3_K", 256, 110}, [12] = {"Q4_K", 256, 144},
        [13] = {"Q5_K", 256, 176}, [14] = {"Q6_K", 256, 210}, [15] = {"Q8_K", 256, 292},
        [16] = {"IQ2_XXS", 256, 66}, [17] = {"IQ2_XS", 256, 74}, [18] = {"IQ3_XXS", 256, 98},
        [19] = {"IQ1_S", 256, 50}, [20] = {"IQ4_NL", 32, 18}, [21] = {"IQ3_S", 256, 110},
        [22] = {"IQ2_S", 256, 82}, [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},
        [25] = {"I16", 1, 2}, [26] = {"I32", 1, 4}, [27] = {"I64", 1, 8}, [28] = {"F64", 1, 8},
        [29] = {"IQ1_M", 256, 56}, [30] = {"BF16", 1, 2}, [34] = {"TQ1_0", 256, 54},
        [35] = {"TQ2_0", 256, 66}, [39] = {"MXFP4", 32, 17},
    };
    if (t < 0 || t >= (int)(sizeof tab / sizeof tab[0]) || !tab[t].name) return NULL;
    return &tab[t];
}

const char *cllm_ggml_type_name(int type) {
    const ggml_type_info *ti = type_info(type);
    return ti ? ti->name : NULL;
}

const char *cllm_gguf_vtype_name(int vt) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "string", "array", "u64", "i64", "f64"};
    return vt >= 0 && vt <= 12 ? names[vt] : "?";
}

/* Size of one scalar element of a value type; strings count their 8-byte length
 * (the minimum they take in the file); 0 for arrays/unknown. */
static size_t vtype_size(int vt) {
    switch (vt) {
    case GGUF_T_U8: case GGUF_T_I8: case GGUF_T_BOOL: return 1;
    case GGUF_T_U16: case GGUF_T_I16: return 2;
    case GGUF_T_U32: case GGUF_T_I32: case GGUF_T_F32: return 4;
    case GGUF_T_U64: case GGUF_T_I64: case GGUF_T_F64: case GGUF_T_STR: return 8;
    default: return 0;
    }
}

static int vtype_is_int(int vt) {
    return vt == GGUF_T_U8 || vt == GGUF_T_I8 || vt == GGUF_T_U16 || vt == GGUF_T_I16 ||
           vt == GGUF_T_U32 || vt == GGUF_T_I32 || vt == GGUF_T_U64 || vt == GGUF_T_I64;
}

/* ---- the parsed file ---- */

typedef struct kv {
    char *key;
    int type;            /* enum cllm_gguf_vtype */
    int elem_type;       /* arrays: element type */
    uint64_t n;          /* arrays: element count */
    union { uint64_t u; int64_t i; double f; } num; /* scalars (bool in u) */
    cllm_gguf_str str;   /* string scalar */
    void *arr;           /* numeric arrays: n packed LE elements; string arrays: cllm_gguf_str[n] */
    int32_t *arr_i32;    /* integer arrays of another type, widened (NULL if out of range) */
    int i32_ok;          /* arr (I32) or arr_i32 is a valid int32 view */
} kv;

struct cllm_gguf {
    char *path;
    FILE *f;
    uint64_t size, pos;  /* file size; read position while parsing */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_start;
    kv *kvs;
    int n_kv;
    cllm_gguf_tensor *tensors;
    int n_tensors;
    int *kv_hash, *t_hash; /* open addressing, -1 empty */
    size_t kv_hcap, t_hcap;
};

static uint64_t hash_str(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int hash_init(int **tab, size_t *cap, size_t n) {
    size_t c = 16;
    while (c < 2 * n + 1) c *= 2;
    *tab = cllm_malloc(c * sizeof(int));
    if (!*tab) return CLLM_ENOMEM;
    for (size_t i = 0; i < c; i++) (*tab)[i] = -1;
    *cap = c;
    return 0;
}

/* ---- reading ---- */

static int rd_bytes(cllm_gguf *g, void *dst, uint64_t n, const char *what) {
    if (n > g->size - g->pos)
        return cllm_error(CLLM_ETRUNC, "%s: file ends inside %s at byte %" PRIu64
                          " (truncated download?)", g->path, what, g->pos);
    if (n && fread(dst, 1, (size_t)n, g->f) != n) {
        if (ferror(g->f)) return cllm_error(CLLM_EIO, "%s: read error: %s", g->path, strerror(errno));
        return cllm_error(CLLM_ETRUNC, "%s: file ends inside %s at byte %" PRIu64
                          " (truncated download, or the file changed while read?)", g->path, what, g->pos);
    }
    g->pos += n;
    return 0;
}

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static int rd_u32(cllm_gguf *g, uint32_t *v, const char *what) {
    unsigned char b[4];
    int rc = rd_bytes(g, b, 4, what);
    if (!rc) *v = le32(b);
    return rc;
}
static int rd_u64(cllm_gguf *g, uint64_t *v, const char *what) {
    unsigned char b[8];
    int rc = rd_bytes(g, b, 8, what);
    if (!rc) *v = le64(b);
    return rc;
}

/* A GGUF string: u64 length + bytes; copied with a NUL added. */
static int rd_str(cllm_gguf *g, cllm_gguf_str *out, uint64_t cap, const char *what) {
    uint64_t len;
    int rc = rd_u64(g, &len, what);
    if (rc) return rc;
    if (len > g->size - g->pos)
        return cllm_error(CLLM_EFORMAT, "%s: %s: string length %" PRIu64 " runs past end of file "
                          "(%" PRIu64 " bytes left)", g->path, what, len, g->size - g->pos);
    if (len > cap)
        return cllm_error(CLLM_ELIMIT, "%s: %s: string length %" PRIu64 " exceeds the limit %" PRIu64,
                          g->path, what, len, cap);
    char *s = cllm_malloc((size_t)len + 1);
    if (!s) return CLLM_ENOMEM;
    rc = rd_bytes(g, s, len, what);
    if (rc) { free(s); return rc; }
    s[len] = 0;
    out->s = s;
    out->len = (size_t)len;
    return 0;
}

/* One scalar of numeric type vt into k->num. */
static void decode_num(kv *k, int vt, const unsigned char *b) {
    switch (vt) {
    case GGUF_T_U8: case GGUF_T_BOOL: k->num.u = b[0]; break;
    case GGUF_T_I8: k->num.i = (int8_t)b[0]; break;
    case GGUF_T_U16: k->num.u = le16(b); break;
    case GGUF_T_I16: k->num.i = (int16_t)le16(b); break;
    case GGUF_T_U32: k->num.u = le32(b); break;
    case GGUF_T_I32: k->num.i = (int32_t)le32(b); break;
    case GGUF_T_U64: k->num.u = le64(b); break;
    case GGUF_T_I64: k->num.i = (int64_t)le64(b); break;
    case GGUF_T_F32: { uint32_t u = le32(b); float f; memcpy(&f, &u, 4); k->num.f = f; break; }
    case GGUF_T_F64: { uint64_t u = le64(b); double f; memcpy(&f, &u, 8); k->num.f = f; break; }
    default: break;
    }
}

static int vtype_signed(int vt) { return vt == GGUF_T_I8 || vt == GGUF_T_I16 || vt == GGUF_T_I32 || vt == GGUF_T_I64; }

/* Element j of a packed integer array as int64; *too_big set for a u64 above INT64_MAX. */
static int64_t arr_int(const kv *k, uint64_t j, int *too_big) {
    const unsigned char *p = (const unsigned char *)k->arr + j * vtype_size(k->elem_type);
    *too_big = 0;
    switch (k->elem_type) {
    case GGUF_T_U8: return p[0];
    case GGUF_T_I8: return (int8_t)p[0];
    case GGUF_T_U16: return le16(p);
    case GGUF_T_I16: return (int16_t)le16(p);
    case GGUF_T_U32: return le32(p);
    case GGUF_T_I32: return (int32_t)le32(p);
    case GGUF_T_I64: return (int64_t)le64(p);
    case GGUF_T_U64: { uint64_t u = le64(p); if (u > INT64_MAX) { *too_big = 1; return 0; } return (int64_t)u; }
    default: *too_big = 1; return 0;
    }
}

static int rd_value(cllm_gguf *g, kv *k, const char *what) {
    int rc;
    unsigned char b[8];
    if (k->type == GGUF_T_STR) return rd_str(g, &k->str, GGUF_MAX_STR, what);
    if (k->type != GGUF_T_ARR) {
        size_t sz = vtype_size(k->type);
        if ((rc = rd_bytes(g, b, sz, what))) return rc;
        if (k->type == GGUF_T_BOOL && b[0] > 1)
            return cllm_error(CLLM_EFORMAT, "%s: %s: bool value %u is neither 0 nor 1", g->path, what, b[0]);
        decode_num(k, k->type, b);
        return 0;
    }
    uint32_t et;
    if ((rc = rd_u32(g, &et, what))) return rc;
    if (et == GGUF_T_ARR)
        return cllm_error(CLLM_EUNSUP, "%s: %s: arrays of arrays are not supported", g->path, what);
    if (et > GGUF_T_F64)
        return cllm_error(CLLM_EFORMAT, "%s: %s: unknown array element type %" PRIu32, g->path, what, et);
    k->elem_type = (int)et;
    if ((rc = rd_u64(g, &k->n, what))) return rc;
    size_t esz = vtype_size(k->elem_type);
    uint64_t left = g->size - g->pos;
    if (k->n > left / esz)
        return cllm_error(CLLM_EFORMAT, "%s: %s: array of %" PRIu64 " %s elements needs more than the %"
                          PRIu64 " bytes left in the file", g->path, what, k->n,
                          cllm_gguf_vtype_name(k->elem_type), left);
    size_t n = (size_t)k->n;
    if (k->elem_type == GGUF_T_STR) {
        cllm_gguf_str *a = cllm_calloc(n ? n : 1, sizeof *a);
        if (!a) return CLLM_ENOMEM;
        k->arr = a;
        for (size_t j = 0; j < n; j++)
            if ((rc = rd_str(g, &a[j], GGUF_MAX_STR, what))) {
                return rc;  /* the strings read so far are freed with the kv (n known) */
            }
        return 0;
    }
    k->arr = cllm_malloc(n * esz);
    if (!k->arr) return CLLM_ENOMEM;
    if ((rc = rd_bytes(g, k->arr, n * esz, what))) return rc;
    if (k->elem_type == GGUF_T_BOOL)
        for (size_t j = 0; j < n; j++)
            if (((unsigned char *)k->arr)[j] > 1)
                return cllm_error(CLLM_EFORMAT, "%s: %s: bool element %zu is neither 0 nor 1", g->path, what, j);
    if (vtype_is_int(k->elem_type)) {
        if (k->elem_type == GGUF_T_I32) { k->i32_ok = 1; return 0; }
        k->arr_i32 = cllm_malloc(n ? n * sizeof(int32_t) : 1);
        if (!k->arr_i32) return CLLM_ENOMEM;
        k->i32_ok = 1;
        for (size_t j = 0; j < n; j++) {
            int big;
            int64_t v = arr_int(k, j, &big);
            if (big || v < INT32_MIN || v > INT32_MAX) { k->i32_ok = 0; break; }
            k->arr_i32[j] = (int32_t)v;
        }
        if (!k->i32_ok) { free(k->arr_i32); k->arr_i32 = NULL; }
    }
    return 0;
}

static void kv_free(kv *k) {
    free(k->key);
    free((void *)k->str.s);
    if (k->type == GGUF_T_ARR && k->elem_type == GGUF_T_STR && k->arr) {
        cllm_gguf_str *a = k->arr;
        for (uint64_t j = 0; j < k->n; j++) free((void *)a[j].s);
    }
    free(k->arr);
    free(k->arr_i32);
}

void cllm_gguf_close(cllm_gguf *g) {
    if (!g) return;
    if (g->f) fclose(g->f);
    for (int i = 0; i < g->n_kv; i++) kv_free(&g->kvs[i]);
    free(g->kvs);
    for (int i = 0; i < g->n_tensors; i++) free((void *)g->tensors[i].name);
    free(g->tensors);
    free(g->kv_hash);
    free(g->t_hash);
    free(g->path);
    free(g);
}

void cllm_gguf_drop_file(cllm_gguf *g) {
    if (g && g->f) { fclose(g->f); g->f = NULL; }
}

/* Insert name (index idx) into a hash table over names; -1 if a duplicate. */
static int hash_insert(int *tab, size_t cap, const char *name, int idx, const char *(*name_of)(const cllm_gguf *, int),
                       const cllm_gguf *g) {
    size_t h = (size_t)hash_str(name, strlen(name)) & (cap - 1);
    while (tab[h] >= 0) {
        if (!strcmp(name_of(g, tab[h]), name)) return -1;
        h = (h + 1) & (cap - 1);
    }
    tab[h] = idx;
    return 0;
}

static int hash_find(const int *tab, size_t cap, const char *name, const char *(*name_of)(const cllm_gguf *, int),
                     const cllm_gguf *g) {
    if (!tab) return -1;
    size_t h = (size_t)hash_str(name, strlen(name)) & (cap - 1);
    while (tab[h] >= 0) {
        if (!strcmp(name_of(g, tab[h]), name)) return tab[h];
        h = (h + 1) & (cap - 1);
    }
    return -1;
}

static const char *kv_name(const cllm_gguf *g, int i) { return g->kvs[i].key; }
static const char *t_name(const cllm_gguf *g, int i) { return g->tensors[i].name; }

static int parse_kvs(cllm_gguf *g, uint64_t n_kv) {
    /* Each entry takes at least 8 (key len) + 4 (type) + 1 (value) bytes. */
    uint64_t left = g->size - g->pos;
    if (n_kv > left / 13 || n_kv > INT_MAX)
        return cllm_error(CLLM_EFORMAT, "%s: metadata count %" PRIu64 " is impossible for the %" PRIu64
                          " bytes left in the file", g->path, n_kv, left);
    g->kvs = cllm_calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kvs);
    if (!g->kvs) return CLLM_ENOMEM;
    int rc = hash_init(&g->kv_hash, &g->kv_hcap, (size_t)n_kv);
    if (rc) return rc;
    char what[160];
    for (uint64_t i = 0; i < n_kv; i++) {
        kv *k = &g->kvs[i];
        snprintf(what, sizeof what, "metadata key #%" PRIu64, i);
        cllm_gguf_str key = {0};
        if ((rc = rd_str(g, &key, GGUF_MAX_KEY, what))) {
            if (rc == CLLM_ELIMIT)
                cllm_error(CLLM_EFORMAT, "%s: metadata key #%" PRIu64 " is longer than %u bytes",
                           g->path, i, GGUF_MAX_KEY);
            return rc == CLLM_ELIMIT ? CLLM_EFORMAT : rc;
        }
        k->key = (char *)key.s;
        g->n_kv = (int)i + 1;  /* from here on kv_free owns k */
        if (key.len == 0) return cllm_error(CLLM_EFORMAT, "%s: metadata key #%" PRIu64 " is empty", g->path, i);
        for (size_t j = 0; j < key.len; j++)
            if ((unsigned char)key.s[j] < 0x20 || (unsigned char)key.s[j] > 0x7e)
                return cllm_error(CLLM_EFORMAT, "%s: metadata key #%" PRIu64 " has a non-printable or "
                                  "non-ASCII byte 0x%02x", g->path, i, (unsigned char)key.s[j]);
        if (hash_insert(g->kv_hash, g->kv_hcap, k->key, (int)i, kv_name, g))
            return cllm_error(CLLM_EFORMAT, "%s: duplicate metadata key %s", g->path, k->key);
        snprintf(what, sizeof what, "the value of key %.100s", k->key);
        uint32_t vt;
        if ((rc = rd_u32(g, &vt, what))) return rc;
        if (vt > GGUF_T_F64)
            return cllm_error(CLLM_EFORMAT, "%s: key %s has unknown value type %" PRIu32, g->path, k->key, vt);
        k->type = (int)vt;
        if ((rc = rd_value(g, k, what))) return rc;
    }
    return 0;
}

static int parse_tensors(cllm_gguf *g, uint64_t n_t) {
    /* Each info takes at least 8+1 (name) + 4 (n_dims) + 8 (ne) + 4 (type) + 8 (offset) bytes. */
    uint64_t left = g->size - g->pos;
    if (n_t > left / 33 || n_t > INT_MAX)
        return cllm_error(CLLM_EFORMAT, "%s: tensor count %" PRIu64 " is impossible for the %" PRIu64
                          " bytes left in the file", g->path, n_t, left);
    g->tensors = cllm_calloc(n_t ? (size_t)n_t : 1, sizeof *g->tensors);
    if (!g->tensors) return CLLM_ENOMEM;
    int rc = hash_init(&g->t_hash, &g->t_hcap, (size_t)n_t);
    if (rc) return rc;
    char what[160];
    for (uint64_t i = 0; i < n_t; i++) {
        cllm_gguf_tensor *t = &g->tensors[i];
        snprintf(what, sizeof what, "tensor info #%" PRIu64, i);
        cllm_gguf_str nm = {0};
        if ((rc = rd_str(g, &nm, 1u << 16, what))) return rc == CLLM_ELIMIT ? CLLM_EFORMAT : rc;
        t->name = nm.s;
        g->n_tensors = (int)i + 1;
        if (nm.len == 0 || nm.len >= GGUF_MAX_NAME || strlen(nm.s) != nm.len)
            return cllm_error(CLLM_EFORMAT, "%s: tensor #%" PRIu64 " has a bad name (length %zu; names are "
                              "1 to %d bytes without NUL)", g->path, i, nm.len, GGUF_MAX_NAME - 1);
        if (hash_insert(g->t_hash, g->t_hcap, t->name, (int)i, t_name, g))
            return cllm_error(CLLM_EFORMAT, "%s: duplicate tensor name %s", g->path, t->name);
        snprintf(what, sizeof what, "the info of tensor %s", t->name);
        uint32_t nd;
        if ((rc = rd_u32(g, &nd, what))) return rc;
        if (nd < 1 || nd > 4)
            return cllm_error(CLLM_EFORMAT, "%s: tensor %s has n_dims %" PRIu32 " (must be 1 to 4)", g->path, t->name, nd);
        t->n_dims = (int)nd;
        int64_t numel = 1;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne;
            if ((rc = rd_u64(g, &ne, what))) return rc;
            if (ne == 0 || ne > INT64_MAX)
                return cllm_error(CLLM_EFORMAT, "%s: tensor %s has dimension %" PRIu32 " = %" PRIu64
                                  " (must be 1 to 2^63-1)", g->path, t->name, d, ne);
            t->ne[d] = (int64_t)ne;
            if (__builtin_mul_overflow(numel, t->ne[d], &numel))
                return cllm_error(CLLM_EFORMAT, "%s: tensor %s: element count overflows 64 bits", g->path, t->name);
        }
        uint32_t ty;
        if ((rc = rd_u32(g, &ty, what))) return rc;
        const ggml_type_info *ti = ty <= INT_MAX ? type_info((int)ty) : NULL;
        if (!ti) return cllm_error(CLLM_EFORMAT, "%s: tensor %s has unknown type %" PRIu32, g->path, t->name, ty);
        t->type = (int)ty;
        if (t->ne[0] % ti->blck)
            return cllm_error(CLLM_EFORMAT, "%s: tensor %s: row length %" PRId64 " is not a multiple of the %s "
                              "block size %d", g->path, t->name, t->ne[0], ti->name, ti->blck);
        int64_t nb;
        if (__builtin_mul_overflow(numel / ti->blck, (int64_t)ti->size, &nb))
            return cllm_error(CLLM_EFORMAT, "%s: tensor %s: byte size overflows 64 bits", g->path, t->name);
        t->nbytes = (uint64_t)nb;
        if ((rc = rd_u64(g, &t->offset, what))) return rc;
    }
    return 0;
}

static int cmp_off(const void *a, const void *b) {
    const cllm_gguf_tensor *x = *(cllm_gguf_tensor *const *)a, *y = *(cllm_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int check_layout(cllm_gguf *g) {
    int i = cllm_gguf_find(g, "general.alignment");
    g->alignment = GGUF_DEFAULT_ALIGN;
    if (i >= 0) {
        const kv *k = &g->kvs[i];
        if (k->type != GGUF_T_U32)
            return cllm_error(CLLM_EFORMAT, "%s: general.alignment has type %s (must be u32)", g->path,
                              cllm_gguf_vtype_name(k->type));
        uint64_t a = k->num.u;
        if (a == 0 || (a & (a - 1)) || a > GGUF_MAX_ALIGN)
            return cllm_error(CLLM_EFORMAT, "%s: general.alignment %" PRIu64 " is not a power of two up to %u",
                              g->path, a, GGUF_MAX_ALIGN);
        g->alignment = (uint32_t)a;
    }
    /* pos <= size, so this cannot wrap. */
    g->data_start = (g->pos + g->alignment - 1) / g->alignment * g->alignment;
    uint64_t data_size = g->size > g->data_start ? g->size - g->data_start : 0;
    for (int j = 0; j < g->n_tensors; j++) {
        const cllm_gguf_tensor *t = &g->tensors[j];
        if (t->offset % g->alignment)
            return cllm_error(CLLM_EFORMAT, "%s: tensor %s offset %" PRIu64 " is not a multiple of the alignment %u",
                              g->path, t->name, t->offset, g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return cllm_error(CLLM_ETRUNC, "%s: tensor %s (offset %" PRIu64 ", %" PRIu64 " bytes) lies beyond "
                              "end of file (truncated download?)", g->path, t->name, t->offset, t->nbytes);
    }
    if (g->n_tensors > 1) {
        cllm_gguf_tensor **ord = cllm_malloc((size_t)g->n_tensors * sizeof *ord);
        if (!ord) return CLLM_ENOMEM;
        for (int j = 0; j < g->n_tensors; j++) ord[j] = &g->tensors[j];
        qsort(ord, (size_t)g->n_tensors, sizeof *ord, cmp_off);
        for (int j = 0; j + 1 < g->n_tensors; j++)
            if (ord[j]->offset + ord[j]->nbytes > ord[j + 1]->offset) {
                int rc = cllm_error(CLLM_EFORMAT, "%s: tensors %s and %s overlap (offsets %" PRIu64 " and %" PRIu64 ")",
                                    g->path, ord[j]->name, ord[j + 1]->name, ord[j]->offset, ord[j + 1]->offset);
                free(ord);
                return rc;
            }
        free(ord);
    }
    return 0;
}

int cllm_gguf_open(cllm_gguf **out, const char *path) {
    *out = NULL;
    cllm_gguf *g = cllm_calloc(1, sizeof *g);
    if (!g) return CLLM_ENOMEM;
    int rc;
    g->path = cllm_strdup(path);
    if (!g->path) { free(g); return CLLM_ENOMEM; }
    /* stat before open: opening a FIFO for reading would block. */
    struct stat st;
    if (stat(path, &st)) { rc = cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno)); goto fail; }
    if (S_ISREG(st.st_mode)) {
        g->f = fopen(path, "rb");
        if (!g->f) { rc = cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno)); goto fail; }
        if (fstat(fileno(g->f), &st)) { rc = cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno)); goto fail; }
    }
    if (S_ISDIR(st.st_mode)) { rc = cllm_error(CLLM_EINVAL, "%s: is a directory, not a GGUF file", path); goto fail; }
    if (!S_ISREG(st.st_mode)) {
        rc = cllm_error(CLLM_EINVAL, "%s: not a regular file (not seekable); a GGUF model must be a file", path);
        goto fail;
    }
    g->size = (uint64_t)st.st_size;
    setvbuf(g->f, NULL, _IOFBF, 1 << 16);

    unsigned char hdr[8];
    if ((rc = rd_bytes(g, hdr, 8, "the header"))) {
        if (g->size < 4 || le32(hdr) != GGUF_MAGIC)
            rc = cllm_error(CLLM_EFORMAT, "%s: not a GGUF file (%" PRIu64 " bytes, too short)", path, g->size);
        goto fail;
    }
    if (le32(hdr) != GGUF_MAGIC) {
        char m[20];
        for (int j = 0; j < 4; j++) m[j] = hdr[j] >= 0x20 && hdr[j] < 0x7f ? (char)hdr[j] : '?';
        m[4] = 0;
        rc = cllm_error(CLLM_EFORMAT, "%s: not a GGUF file (magic \"%s\", expected \"GGUF\")", path, m);
        goto fail;
    }
    g->version = le32(hdr + 4);
    if (g->version != 2 && g->version != 3) {
        if (g->version != 0 && (g->version & 0xFFFF) == 0)
            rc = cllm_error(CLLM_EUNSUP, "%s: GGUF version 0x%08" PRIx32 " looks byte-swapped (big-endian file?); "
                            "only little-endian GGUF is supported", path, g->version);
        else
            rc = cllm_error(CLLM_EUNSUP, "%s: unsupported GGUF version %" PRIu32 " (2 and 3 are supported)",
                            path, g->version);
        goto fail;
    }
    uint64_t n_t, n_kv;
    if ((rc = rd_u64(g, &n_t, "the header")) || (rc = rd_u64(g, &n_kv, "the header"))) goto fail;
    if ((rc = parse_kvs(g, n_kv))) goto fail;
    if ((rc = parse_tensors(g, n_t))) goto fail;
    if ((rc = check_layout(g))) goto fail;
    *out = g;
    return 0;
fail:
    cllm_gguf_close(g);
    return rc;
}

/* ---- accessors ---- */

uint32_t cllm_gguf_version(const cllm_gguf *g) { return g->version; }
int cllm_gguf_n_kv(const cllm_gguf *g) { return g->n_kv; }
const char *cllm_gguf_key(const cllm_gguf *g, int i) { return i >= 0 && i < g->n_kv ? g->kvs[i].key : NULL; }
int cllm_gguf_find(const cllm_gguf *g, const char *key) { return hash_find(g->kv_hash, g->kv_hcap, key, kv_name, g); }
int cllm_gguf_kv_type(const cllm_gguf *g, int i) { return i >= 0 && i < g->n_kv ? g->kvs[i].type : -1; }
const char *cllm_gguf_path(const cllm_gguf *g) { return g->path; }
uint64_t cllm_gguf_file_size(const cllm_gguf *g) { return g->size; }
uint64_t cllm_gguf_data_offset(const cllm_gguf *g) { return g->data_start; }
uint32_t cllm_gguf_alignment(const cllm_gguf *g) { return g->alignment; }

int cllm_gguf_arr_info(const cllm_gguf *g, int i, int *elem_type, uint64_t *n) {
    if (i < 0 || i >= g->n_kv || g->kvs[i].type != GGUF_T_ARR)
        return cllm_error(CLLM_EINVAL, "%s: metadata entry %d is not an array", g->path, i);
    if (elem_type) *elem_type = g->kvs[i].elem_type;
    if (n) *n = g->kvs[i].n;
    return 0;
}

static const kv *get_kv(const cllm_gguf *g, const char *key, int *rc) {
    int i = cllm_gguf_find(g, key);
    if (i < 0) { *rc = cllm_error(CLLM_EFORMAT, "%s: missing metadata key %s", g->path, key); return NULL; }
    *rc = 0;
    return &g->kvs[i];
}

static int wrong_type(const cllm_gguf *g, const kv *k, const char *want) {
    if (k->type == GGUF_T_ARR)
        return cllm_error(CLLM_EFORMAT, "%s: key %s is an array of %s, expected %s", g->path, k->key,
                          cllm_gguf_vtype_name(k->elem_type), want);
    return cllm_error(CLLM_EFORMAT, "%s: key %s has type %s, expected %s", g->path, k->key,
                      cllm_gguf_vtype_name(k->type), want);
}

int cllm_gguf_get_int(const cllm_gguf *g, const char *key, int64_t *out) {
    int rc;
    const kv *k = get_kv(g, key, &rc);
    if (!k) return rc;
    if (!vtype_is_int(k->type)) return wrong_type(g, k, "an integer");
    if (vtype_signed(k->type)) { *out = k->num.i; return 0; }
    if (k->num.u > INT64_MAX)
        return cllm_error(CLLM_EFORMAT, "%s: key %s value %" PRIu64 " is too large", g->path, key, k->num.u);
    *out = (int64_t)k->num.u;
    return 0;
}

int cllm_gguf_get_float(const cllm_gguf *g, const char *key, double *out) {
    int rc;
    const kv *k = get_kv(g, key, &rc);
    if (!k) return rc;
    if (k->type != GGUF_T_F32 && k->type != GGUF_T_F64) return wrong_type(g, k, "f32 or f64");
    *out = k->num.f;
    return 0;
}

int cllm_gguf_get_bool(const cllm_gguf *g, const char *key, int *out) {
    int rc;
    const kv *k = get_kv(g, key, &rc);
    if (!k) return rc;
    if (k->type != GGUF_T_BOOL) return wrong_type(g, k, "bool");
    *out = (int)k->num.u;
    return 0;
}

int cllm_gguf_get_str(const cllm_gguf *g, const char *key, cllm_gguf_str *out) {
    int rc;
    const kv *k = get_kv(g, key, &rc);
    if (!k) return rc;
    if (k->type != GGUF_T_STR) return wrong_type(g, k, "string");
    *out = k->str;
    return 0;
}

int cllm_gguf_get_arr_str(const cllm_gguf *g, const char *key, const cllm_gguf_str **out, size_t *n) {
    int rc;
    const kv *k = get_kv(g, key, &rc);
    if (!k) return rc;
    if (k->type != GGUF_T_ARR || k->elem_type != GGUF_T_STR) return wrong_type(g, k, "an array of strings");
    *out = k->arr;
    *n = (size_t)k->n;
    return 0;
}

int cllm_gguf_get_arr_i32(const cllm_gguf *g, const char *key, const int32_t **out, size_t *n) {
    int rc;
    const kv *k = get_kv(g, key, &rc);
    if (!k) return rc;
    if (k->type != GGUF_T_ARR || !vtype_is_int(k->elem_type)) return wrong_type(g, k, "an array of integers");
    if (!k->i32_ok)
        return cllm_error(CLLM_EFORMAT, "%s: key %s has values outside the int32 range", g->path, key);
    *out = k->elem_type == GGUF_T_I32 ? k->arr : k->arr_i32;
    *n = (size_t)k->n;
    return 0;
}

int cllm_gguf_get_arr_f32(const cllm_gguf *g, const char *key, const float **out, size_t *n) {
    int rc;
    const kv *k = get_kv(g, key, &rc);
    if (!k) return rc;
    if (k->type != GGUF_T_ARR || k->elem_type != GGUF_T_F32) return wrong_type(g, k, "an array of f32");
    *out = k->arr;  /* malloc'd, so aligned; the host is little-endian (checked at build: x86/arm LE) */
    *n = (size_t)k->n;
    return 0;
}

int cllm_gguf_n_tensors(const cllm_gguf *g) { return g->n_tensors; }
const cllm_gguf_tensor *cllm_gguf_tensor_at(const cllm_gguf *g, int i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}
const cllm_gguf_tensor *cllm_gguf_find_tensor(const cllm_gguf *g, const char *name) {
    int i = hash_find(g->t_hash, g->t_hcap, name, t_name, g);
    return i >= 0 ? &g->tensors[i] : NULL;
}

/* ---- dequantization ---- */

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | man << 13;
    else bits = sign | (exp + 127 - 15) << 23 | man << 13;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int cllm_dequantize(int type, const void *src, float *dst, size_t n) {
    const unsigned char *p = src;
    const ggml_type_info *ti = type_info(type);
    if (!ti) return cllm_error(CLLM_EFORMAT, "unknown tensor type %d", type);
    if (n % (size_t)ti->blck)
        return cllm_error(CLLM_EINVAL, "%zu elements of %s: not a multiple of the block size %d", n, ti->name, ti->blck);
    size_t nb = n / (size_t)ti->blck;
    switch (type) {
    case GGML_T_F32:
        memcpy(dst, p, n * 4);  /* little-endian host */
        return 0;
    case GGML_T_F16:
        for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(le16(p + 2 * i));
        return 0;
    case GGML_T_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(le16(p + 2 * i));
        return 0;
    case GGML_T_Q8_0: /* {f16 d; i8 qs[32]}: y = qs * d */
        for (size_t b = 0; b < nb; b++, p += 34, dst += 32) {
            float d = f16_to_f32(le16(p));
            for (int j = 0; j < 32; j++) dst[j] = (float)(int8_t)p[2 + j] * d;
        }
        return 0;
    case GGML_T_Q4_0: /* {f16 d; u8 qs[16]}: y[j] = (lo-8)*d, y[j+16] = (hi-8)*d */
        for (size_t b = 0; b < nb; b++, p += 18, dst += 32) {
            float d = f16_to_f32(le16(p));
            for (int j = 0; j < 16; j++) {
                dst[j] = d * (float)((p[2 + j] & 15) - 8);
                dst[j + 16] = d * (float)((p[2 + j] >> 4) - 8);
            }
        }
        return 0;
    case GGML_T_Q4_1: /* {f16 d; f16 m; u8 qs[16]}: y[j] = lo*d + m, y[j+16] = hi*d + m */
        for (size_t b = 0; b < nb; b++, p += 20, dst += 32) {
            float d = f16_to_f32(le16(p)), m = f16_to_f32(le16(p + 2));
            for (int j = 0; j < 16; j++) {
                float lo = d * (float)(p[4 + j] & 15), hi = d * (float)(p[4 + j] >> 4);
                dst[j] = lo + m;
                dst[j + 16] = hi + m;
            }
        }
        return 0;
    default:
        return cllm_error(CLLM_EUNSUP, "tensor type %s is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
                          ti->name);
    }
}

/* pread until n bytes or the end of the file (no shared file position, so
 * threads may read one file at once) */
static int pread_all(const cllm_gguf *g, const cllm_gguf_tensor *t, void *dst, size_t n, uint64_t at) {
    if (!cllm_pread_full(fileno(g->f), dst, n, at)) return 0;
    return cllm_error(errno ? CLLM_EIO : CLLM_ETRUNC, "%s: tensor %s: %s", g->path, t->name,
                      errno ? strerror(errno) : "file ends early (changed while read?)");
}

int cllm_gguf_read_raw(cllm_gguf *g, const cllm_gguf_tensor *t, void *dst, size_t nbytes) {
    if (!g->f) return cllm_error(CLLM_EINVAL, "%s: file already closed", g->path);
    if (nbytes != t->nbytes)
        return cllm_error(CLLM_EINVAL, "%s: tensor %s has %" PRIu64 " bytes, caller asked for %zu", g->path,
                          t->name, t->nbytes, nbytes);
    return pread_all(g, t, dst, nbytes, g->data_start + t->offset);
}

int cllm_ggml_block_elems(int type) {
    const ggml_type_info *ti = type_info(type);
    return ti ? ti->blck : 0;
}

size_t cllm_gguf_part_bytes(const cllm_gguf_tensor *t, size_t n) {
    const ggml_type_info *ti = type_info(t->type);   /* known: checked at open */
    return ti ? n / (size_t)ti->blck * (size_t)ti->size : 0;
}

static int dequantizable(const cllm_gguf *g, const cllm_gguf_tensor *t) {
    if (t->type != GGML_T_F32 && t->type != GGML_T_F16 && t->type != GGML_T_BF16 && t->type != GGML_T_Q8_0 &&
        t->type != GGML_T_Q4_0 && t->type != GGML_T_Q4_1)
        return cllm_error(CLLM_EUNSUP, "%s: tensor %s has type %s, which this reader cannot dequantize "
                          "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)", g->path, t->name, type_info(t->type)->name);
    return 0;
}

int cllm_gguf_read_part_f32(const cllm_gguf *g, const cllm_gguf_tensor *t, size_t first, size_t n, float *dst,
                            void *raw) {
    if (!g->f) return cllm_error(CLLM_EINVAL, "%s: file already closed", g->path);
    int rc = dequantizable(g, t);
    if (rc) return rc;
    const ggml_type_info *ti = type_info(t->type);
    uint64_t numel = (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);  /* checked at open */
    if (first % (size_t)ti->blck || n % (size_t)ti->blck || first > numel || n > numel - first)
        return cllm_error(CLLM_EINVAL, "%s: tensor %s: elements %zu..%zu are not whole %s blocks inside its %" PRIu64,
                          g->path, t->name, first, first + n, ti->name, numel);
    uint64_t at = g->data_start + t->offset + first / (size_t)ti->blck * (size_t)ti->size;
    size_t bytes = cllm_gguf_part_bytes(t, n);
    if (t->type == GGML_T_F32) return pread_all(g, t, dst, bytes, at);  /* little-endian host: as stored */
    if ((rc = pread_all(g, t, raw, bytes, at))) return rc;
    return cllm_dequantize(t->type, raw, dst, n);
}

int cllm_gguf_read_f32(cllm_gguf *g, const cllm_gguf_tensor *t, float *dst, size_t numel) {
    if (!g->f) return cllm_error(CLLM_EINVAL, "%s: file already closed", g->path);
    const ggml_type_info *ti = type_info(t->type);
    int64_t want = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];  /* checked at open */
    if ((uint64_t)want != (uint64_t)numel)
        return cllm_error(CLLM_EINVAL, "%s: tensor %s has %" PRId64 " elements, caller expected %zu", g->path,
                          t->name, want, numel);
    int rc = dequantizable(g, t);
    if (rc) return rc;
    /* Read and dequantize in parts of whole blocks (about 1 MiB). */
    size_t chunk = ((size_t)1 << 20) / (size_t)ti->size * (size_t)ti->blck;
    if (chunk == 0) chunk = (size_t)ti->blck;
    if (chunk > numel) chunk = numel;
    void *raw = cllm_malloc(cllm_gguf_part_bytes(t, chunk));
    if (!raw) return CLLM_ENOMEM;
    for (size_t i = 0; i < numel && !rc; i += chunk)
        rc = cllm_gguf_read_part_f32(g, t, i, numel - i < chunk ? numel - i : chunk, dst + i, raw);
    free(raw);
    return rc;
}

/* ---- fp32 -> f16 / bf16 ---- */

static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 | ((ax >> 13) & 0x3ff) : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (ax < 0x33000000u) return (uint16_t)sign;   /* < 2^-25: rounds to 0 */
        /* value = m * 2^(e-150); in units of the half subnormal 2^-24: m >> (126-e) */
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000, sh = 126 - e;
        uint32_t r = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((ax >> 13) - (112u << 10)), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

void cllm_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_f16(src[i]);
}

static uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

void cllm_f32_to_bf16(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}

void cllm_f32_round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)f32_to_bf16(x[i]) << 16;
        memcpy(&x[i], &b, 4);
    }
}

/* ---- writer ---- */

typedef struct wkv { char *key; unsigned char *buf; size_t len; } wkv;  /* buf: the whole serialised entry */
typedef struct wtensor { char *name; int n_dims; int64_t ne[4]; int type; const float *data; uint64_t numel, nbytes; } wtensor;

struct cllm_gguf_writer {
    wkv *kvs;
    size_t n_kv, cap_kv;
    wtensor *ts;
    size_t n_t, cap_t;
};

/* A growing byte buffer for one entry. */
typedef struct { unsigned char *p; size_t n, cap; int err; } bbuf;

static void bb_put(bbuf *b, const void *src, size_t n) {
    if (b->err) return;
    if (cllm_grow((void **)&b->p, &b->cap, b->n + n, 1)) { b->err = CLLM_ENOMEM; return; }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void bb_u32(bbuf *b, uint32_t v) {
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    bb_put(b, x, 4);
}
static void bb_u64(bbuf *b, uint64_t v) { bb_u32(b, (uint32_t)v); bb_u32(b, (uint32_t)(v >> 32)); }
static void bb_str(bbuf *b, const char *s, size_t n) { bb_u64(b, n); bb_put(b, s, n); }

int cllm_gguf_writer_new(cllm_gguf_writer **out) {
    *out = cllm_calloc(1, sizeof **out);
    return *out ? 0 : CLLM_ENOMEM;
}

void cllm_gguf_writer_free(cllm_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) { free(w->kvs[i].key); free(w->kvs[i].buf); }
    free(w->kvs);
    for (size_t i = 0; i < w->n_t; i++) free(w->ts[i].name);
    free(w->ts);
    free(w);
}

static int check_key(const char *key) {
    size_t n = strlen(key);
    if (n == 0 || n > GGUF_MAX_KEY) return cllm_error(CLLM_EINVAL, "gguf writer: bad key length %zu", n);
    return 0;
}

/* Start an entry: key + value type. */
static void bb_begin(bbuf *b, const char *key, int vt) { bb_str(b, key, strlen(key)); bb_u32(b, (uint32_t)vt); }

/* Take ownership of b as the entry for key (replacing an existing one). */
static int w_commit(cllm_gguf_writer *w, const char *key, bbuf *b) {
    if (b->err) { free(b->p); return b->err; }
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kvs[i].key, key)) {
            free(w->kvs[i].buf);
            w->kvs[i].buf = b->p;
            w->kvs[i].len = b->n;
            return 0;
        }
    char *k = cllm_strdup(key);
    if (!k || cllm_grow((void **)&w->kvs, &w->cap_kv, w->n_kv + 1, sizeof *w->kvs)) {
        free(k); free(b->p);
        return CLLM_ENOMEM;
    }
    w->kvs[w->n_kv++] = (wkv){k, b->p, b->n};
    return 0;
}

int cllm_gguf_writer_has(const cllm_gguf_writer *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kvs[i].key, key)) return 1;
    return 0;
}

int cllm_gguf_writer_remove(cllm_gguf_writer *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kvs[i].key, key)) {
            free(w->kvs[i].key);
            free(w->kvs[i].buf);
            memmove(&w->kvs[i], &w->kvs[i + 1], (w->n_kv - i - 1) * sizeof *w->kvs);
            w->n_kv--;
            return 0;
        }
    return 0;
}

static int w_scalar(cllm_gguf_writer *w, const char *key, int vt, const void *v, size_t n) {
    int rc = check_key(key);
    if (rc) return rc;
    bbuf b = {0};
    bb_begin(&b, key, vt);
    bb_put(&b, v, n);  /* little-endian host */
    return w_commit(w, key, &b);
}

int cllm_gguf_writer_set_u32(cllm_gguf_writer *w, const char *key, uint32_t v) { return w_scalar(w, key, GGUF_T_U32, &v, 4); }
int cllm_gguf_writer_set_i32(cllm_gguf_writer *w, const char *key, int32_t v) { return w_scalar(w, key, GGUF_T_I32, &v, 4); }
int cllm_gguf_writer_set_f32(cllm_gguf_writer *w, const char *key, float v) { return w_scalar(w, key, GGUF_T_F32, &v, 4); }
int cllm_gguf_writer_set_bool(cllm_gguf_writer *w, const char *key, int v) {
    unsigned char b = v ? 1 : 0;
    return w_scalar(w, key, GGUF_T_BOOL, &b, 1);
}

int cllm_gguf_writer_set_str(cllm_gguf_writer *w, const char *key, const char *s, size_t len) {
    int rc = check_key(key);
    if (rc) return rc;
    bbuf b = {0};
    bb_begin(&b, key, GGUF_T_STR);
    bb_str(&b, s, len);
    return w_commit(w, key, &b);
}

int cllm_gguf_writer_set_arr_str(cllm_gguf_writer *w, const char *key, const char *const *s, const size_t *lens, size_t n) {
    int rc = check_key(key);
    if (rc) return rc;
    bbuf b = {0};
    bb_begin(&b, key, GGUF_T_ARR);
    bb_u32(&b, GGUF_T_STR);
    bb_u64(&b, n);
    for (size_t i = 0; i < n; i++) bb_str(&b, s[i], lens ? lens[i] : strlen(s[i]));
    return w_commit(w, key, &b);
}

static int w_arr(cllm_gguf_writer *w, const char *key, int et, const void *v, size_t n, size_t esz) {
    int rc = check_key(key);
    if (rc) return rc;
    bbuf b = {0};
    bb_begin(&b, key, GGUF_T_ARR);
    bb_u32(&b, (uint32_t)et);
    bb_u64(&b, n);
    bb_put(&b, v, n * esz);
    return w_commit(w, key, &b);
}

int cllm_gguf_writer_set_arr_i32(cllm_gguf_writer *w, const char *key, const int32_t *v, size_t n) {
    return w_arr(w, key, GGUF_T_I32, v, n, 4);
}
int cllm_gguf_writer_set_arr_f32(cllm_gguf_writer *w, const char *key, const float *v, size_t n) {
    return w_arr(w, key, GGUF_T_F32, v, n, 4);
}

/* Serialise a numeric scalar of type vt from a parsed kv. */
static void bb_num(bbuf *b, int vt, const kv *k) {
    unsigned char x[8];
    uint64_t u = vtype_signed(vt) ? (uint64_t)k->num.i : k->num.u;
    if (vt == GGUF_T_F32) { float f = (float)k->num.f; memcpy(x, &f, 4); bb_put(b, x, 4); return; }
    if (vt == GGUF_T_F64) { memcpy(x, &k->num.f, 8); bb_put(b, x, 8); return; }
    for (int i = 0; i < 8; i++) x[i] = (unsigned char)(u >> (8 * i));
    bb_put(b, x, vtype_size(vt));
}

int cllm_gguf_writer_copy_kv(cllm_gguf_writer *w, const cllm_gguf *g, int i) {
    if (i < 0 || i >= g->n_kv) return cllm_error(CLLM_EINVAL, "gguf writer: no metadata entry %d", i);
    const kv *k = &g->kvs[i];
    bbuf b = {0};
    bb_begin(&b, k->key, k->type);
    if (k->type == GGUF_T_STR) bb_str(&b, k->str.s, k->str.len);
    else if (k->type != GGUF_T_ARR) bb_num(&b, k->type, k);
    else {
        bb_u32(&b, (uint32_t)k->elem_type);
        bb_u64(&b, k->n);
        if (k->elem_type == GGUF_T_STR) {
            const cllm_gguf_str *a = k->arr;
            for (uint64_t j = 0; j < k->n; j++) bb_str(&b, a[j].s, a[j].len);
        } else bb_put(&b, k->arr, (size_t)k->n * vtype_size(k->elem_type));
    }
    return w_commit(w, k->key, &b);
}

int cllm_gguf_writer_add_tensor(cllm_gguf_writer *w, const char *name, int n_dims, const int64_t *ne, int type,
                                const float *data) {
    size_t len = strlen(name);
    if (len == 0 || len >= GGUF_MAX_NAME)
        return cllm_error(CLLM_EINVAL, "gguf writer: tensor name \"%s\" must be 1 to %d bytes", name, GGUF_MAX_NAME - 1);
    if (n_dims < 1 || n_dims > 4) return cllm_error(CLLM_EINVAL, "gguf writer: tensor %s: n_dims %d", name, n_dims);
    if (type != GGML_T_F32 && type != GGML_T_F16 && type != GGML_T_BF16)
        return cllm_error(CLLM_EINVAL, "gguf writer: tensor %s: can only write F32, F16 or BF16", name);
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->ts[i].name, name)) return cllm_error(CLLM_EINVAL, "gguf writer: duplicate tensor %s", name);
    wtensor t = {0};
    t.n_dims = n_dims;
    t.type = type;
    t.data = data;
    uint64_t numel = 1;
    for (int d = 0; d < 4; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 1 || __builtin_mul_overflow(numel, (uint64_t)t.ne[d], &numel))
            return cllm_error(CLLM_EINVAL, "gguf writer: tensor %s: bad shape", name);
    }
    t.numel = numel;
    if (__builtin_mul_overflow(numel, (uint64_t)type_info(type)->size, &t.nbytes))
        return cllm_error(CLLM_EINVAL, "gguf writer: tensor %s: too large", name);
    t.name = cllm_strdup(name);
    if (!t.name || cllm_grow((void **)&w->ts, &w->cap_t, w->n_t + 1, sizeof *w->ts)) {
        free(t.name);
        return CLLM_ENOMEM;
    }
    w->ts[w->n_t++] = t;
    return 0;
}

static int w_write(FILE *f, const void *p, size_t n, const char *path) {
    if (n && fwrite(p, 1, n, f) != n) return cllm_error(CLLM_EIO, "%s: write error: %s", path, strerror(errno));
    return 0;
}

static int w_pad(FILE *f, uint64_t pos, uint32_t align, const char *path) {
    static const unsigned char zeros[64];
    uint64_t pad = (align - pos % align) % align;
    while (pad) {
        size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        int rc = w_write(f, zeros, k, path);
        if (rc) return rc;
        pad -= k;
    }
    return 0;
}

static int w_tensor_data(FILE *f, const wtensor *t, const char *path) {
    if (t->type == GGML_T_F32) return w_write(f, t->data, (size_t)t->nbytes, path);
    enum { CH = 1 << 16 };
    uint16_t *buf = cllm_malloc(CH * sizeof *buf);
    if (!buf) return CLLM_ENOMEM;
    int rc = 0;
    for (uint64_t i = 0; i < t->numel && !rc; i += CH) {
        size_t k = t->numel - i < CH ? (size_t)(t->numel - i) : CH;
        if (t->type == GGML_T_F16) cllm_f32_to_f16(t->data + i, buf, k);
        else cllm_f32_to_bf16(t->data + i, buf, k);
        rc = w_write(f, buf, k * 2, path);
    }
    free(buf);
    return rc;
}

int cllm_gguf_writer_write(cllm_gguf_writer *w, const char *path) {
    uint32_t align = GGUF_DEFAULT_ALIGN;
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kvs[i].key, "general.alignment")) {
            /* The entry is key, type and value; only a u32 has 4 value bytes to read. */
            size_t at = 8 + strlen("general.alignment");
            const unsigned char *b = w->kvs[i].buf + at;
            uint32_t vt = le32(b), a = vt == GGUF_T_U32 && w->kvs[i].len >= at + 8 ? le32(b + 4) : 0;
            if (vt != GGUF_T_U32 || a == 0 || (a & (a - 1)) || a > GGUF_MAX_ALIGN)
                return cllm_error(CLLM_EINVAL, "%s: general.alignment must be a u32 power of two up to %u", path,
                                  GGUF_MAX_ALIGN);
            align = a;
        }
    size_t plen = strlen(path);
    char *tmp = cllm_malloc(plen + 32);
    if (!tmp) return CLLM_ENOMEM;
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int rc = cllm_error(CLLM_EIO, "%s: %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    int rc = 0;
    bbuf h = {0};
    bb_u32(&h, GGUF_MAGIC);
    bb_u32(&h, 3);
    bb_u64(&h, w->n_t);
    bb_u64(&h, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) bb_put(&h, w->kvs[i].buf, w->kvs[i].len);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->ts[i];
        bb_str(&h, t->name, strlen(t->name));
        bb_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) bb_u64(&h, (uint64_t)t->ne[d]);
        bb_u32(&h, (uint32_t)t->type);
        bb_u64(&h, off);
        uint64_t padded = (t->nbytes + align - 1) / align * align;
        if (__builtin_add_overflow(off, padded, &off)) { rc = cllm_error(CLLM_EINVAL, "%s: data too large", path); break; }
    }
    if (!rc && h.err) rc = h.err;
    if (!rc) rc = w_write(f, h.p, h.n, tmp);
    if (!rc) rc = w_pad(f, h.n, align, tmp);
    for (size_t i = 0; i < w->n_t && !rc; i++) {
        rc = w_tensor_data(f, &w->ts[i], tmp);
        if (!rc) rc = w_pad(f, w->ts[i].nbytes, align, tmp);
    }
    free(h.p);
    if (fflush(f) && !rc) rc = cllm_error(CLLM_EIO, "%s: write error: %s", tmp, strerror(errno));
    /* The data on disk before the name points at it: fsync is also where a
     * filesystem that delays allocation (NFS, quotas) reports ENOSPC/EDQUOT,
     * and without it a crash after the rename can leave an empty or partial
     * file under the final name. */
    if (!rc && cllm_fsync(fileno(f))) rc = cllm_error(CLLM_EIO, "%s: fsync: %s", tmp, strerror(errno));
    if (fclose(f) && !rc) rc = cllm_error(CLLM_EIO, "%s: write error: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path)) rc = cllm_error(CLLM_EIO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (rc) remove(tmp);
    free(tmp);
    return rc;
}
