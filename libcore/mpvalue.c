/* mpvalue.c: bounded msgpack scanner and tree builder (see mpvalue.h).
 *
 * Invariant: cllm_mp_build() only ever runs on bytes that cllm_mp_scan()
 * accepted, so it does no bounds checks of its own.
 */
#include "mpvalue.h"

#include <string.h>

#include "err.h"

static inline uint64_t be(const uint8_t *p, int n) {
    uint64_t x = 0;
    for (int i = 0; i < n; i++) x = (x << 8) | p[i];
    return x;
}

/* Decode the head of the value at p: its type, its payload size in bytes
 * (STR/BIN/EXT/scalars) or element count (ARRAY: n, MAP: 2n children), and
 * the head's own length. Returns 1 when more bytes are needed, 0 on success,
 * -1 on the reserved byte 0xc1. */
typedef struct head {
    uint8_t type;
    int8_t ext_type;
    size_t hlen;       /* bytes of the head (tag + length fields) */
    uint64_t payload;  /* bytes following the head (STR/BIN/EXT, fixed scalars) */
    uint64_t children; /* child values (ARRAY n, MAP 2n) */
    uint32_t n;        /* length or count as stored */
} head;

static int read_head(const uint8_t *p, size_t avail, head *h) {
    if (avail < 1) return 1;
    uint8_t c = p[0];
    memset(h, 0, sizeof *h);
    h->hlen = 1;
    if (c <= 0x7f) { h->type = CLLM_MP_UINT; return 0; }
    if (c >= 0xe0) { h->type = CLLM_MP_INT; return 0; }
    if ((c & 0xf0) == 0x80) { h->type = CLLM_MP_MAP; h->n = c & 0x0f; h->children = 2ull * h->n; return 0; }
    if ((c & 0xf0) == 0x90) { h->type = CLLM_MP_ARRAY; h->n = c & 0x0f; h->children = h->n; return 0; }
    if ((c & 0xe0) == 0xa0) { h->type = CLLM_MP_STR; h->n = c & 0x1f; h->payload = h->n; return 0; }
    int lenbytes = 0;
    switch (c) {
    case 0xc0: h->type = CLLM_MP_NIL; return 0;
    case 0xc2: case 0xc3: h->type = CLLM_MP_BOOL; return 0;
    case 0xc1: return -1;
    case 0xca: h->type = CLLM_MP_FLOAT; h->payload = 4; return 0;
    case 0xcb: h->type = CLLM_MP_FLOAT; h->payload = 8; return 0;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        h->type = CLLM_MP_UINT; h->payload = 1u << (c - 0xcc); return 0;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3:
        h->type = CLLM_MP_INT; h->payload = 1u << (c - 0xd0); return 0;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        h->type = CLLM_MP_EXT; h->hlen = 2; h->n = 1u << (c - 0xd4); h->payload = h->n;
        if (avail < 2) return 1;
        h->ext_type = (int8_t)p[1];
        return 0;
    case 0xd9: case 0xc4: case 0xc7: lenbytes = 1; break;
    case 0xda: case 0xc5: case 0xc8: case 0xdc: case 0xde: lenbytes = 2; break;
    case 0xdb: case 0xc6: case 0xc9: case 0xdd: case 0xdf: lenbytes = 4; break;
    default: return -1;
    }
    int is_ext = (c == 0xc7 || c == 0xc8 || c == 0xc9);
    h->hlen = 1 + (size_t)lenbytes + (is_ext ? 1 : 0);
    if (avail < h->hlen) return 1;
    h->n = (uint32_t)be(p + 1, lenbytes);
    if (is_ext) { h->type = CLLM_MP_EXT; h->ext_type = (int8_t)p[1 + lenbytes]; h->payload = h->n; return 0; }
    switch (c) {
    case 0xd9: case 0xda: case 0xdb: h->type = CLLM_MP_STR; h->payload = h->n; break;
    case 0xc4: case 0xc5: case 0xc6: h->type = CLLM_MP_BIN; h->payload = h->n; break;
    case 0xdc: case 0xdd: h->type = CLLM_MP_ARRAY; h->children = h->n; break;
    default: h->type = CLLM_MP_MAP; h->children = 2ull * h->n; break;
    }
    return 0;
}

void cllm_mp_scanner_init(cllm_mp_scanner *s) {
    s->stack[0] = 1;
    s->depth = 0;
    s->off = s->nodes = 0;
}

int cllm_mp_scan_more(cllm_mp_scanner *s, const uint8_t *buf, size_t len, size_t *used, size_t *n_values) {
    /* Iterative walk: stack[d] holds how many values remain at depth d. An
     * element is taken whole or not at all: when its bytes run out, the walk
     * stops at its start (off0, nodes0, its count given back) and the next
     * call reads it again from there. */
    uint64_t *stack = s->stack;
    int depth = s->depth;
    size_t off = s->off, nodes = s->nodes, off0 = off, nodes0 = nodes;
    while (depth >= 0) {
        if (stack[depth] == 0) { depth--; continue; }
        off0 = off;
        nodes0 = nodes;
        stack[depth]--;
        uint8_t c0 = off < len ? buf[off] : 0;
        if (off < len && (c0 <= 0x7f || c0 == 0xcc || c0 == 0xcd)) { /* fast path: small unsigned */
            size_t sz = c0 <= 0x7f ? 1 : (c0 == 0xcc ? 2 : 3);
            if (sz > len - off) goto need_more;
            off += sz;
            nodes++;
            if (depth == 0 && stack[0] == 0) break;
            continue;
        }
        head h;
        int rc = read_head(buf + off, len - off, &h);
        if (rc > 0) goto need_more;
        if (rc < 0) return cllm_error(CLLM_EFORMAT, "invalid msgpack byte 0x%02x at offset %zu", buf[off], off);
        off += h.hlen;
        nodes++;
        if (h.payload > len - off) goto need_more;
        off += (size_t)h.payload;
        if (h.children) {
            /* Every child takes at least one byte: a count larger than the bytes
             * left can only be satisfied by more input, never by allocation. */
            if (depth + 1 > CLLM_MP_MAX_DEPTH)
                return cllm_error(CLLM_ELIMIT, "msgpack nesting deeper than %d at offset %zu", CLLM_MP_MAX_DEPTH, off);
            if (h.children > len - off) goto need_more;
            stack[++depth] = h.children;
        }
        if (depth == 0 && stack[0] == 0) break;
    }
    *used = off;
    *n_values = nodes;
    return CLLM_MP_COMPLETE;
need_more:
    stack[depth]++;
    s->depth = depth;
    s->off = off0;
    s->nodes = nodes0;
    return CLLM_MP_NEED_MORE;
}

int cllm_mp_scan(const uint8_t *buf, size_t len, size_t *used, size_t *n_values) {
    cllm_mp_scanner s;
    cllm_mp_scanner_init(&s);
    return cllm_mp_scan_more(&s, buf, len, used, n_values);
}

static double load_float(const uint8_t *p, size_t n) {
    if (n == 4) {
        uint32_t b = (uint32_t)be(p, 4);
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    uint64_t b = be(p, 8);
    double d;
    memcpy(&d, &b, 8);
    return d;
}

/* Fill *v from the bytes at *pp; children go to the next free nodes. */
static const uint8_t *build_one(const uint8_t *p, cllm_value *v, cllm_value **next) {
    /* Fast paths for what token arrays hold: small unsigned integers. */
    if (p[0] <= 0x7f) { v->type = CLLM_MP_UINT; v->n = 0; v->v.u = p[0]; return p + 1; }
    if (p[0] == 0xcd) { v->type = CLLM_MP_UINT; v->n = 0; v->v.u = (uint64_t)p[1] << 8 | p[2]; return p + 3; }
    head h;
    read_head(p, SIZE_MAX, &h);
    uint8_t c = p[0];
    const uint8_t *q = p + h.hlen;
    v->type = h.type;
    v->n = h.n;
    v->ext_type = h.ext_type;
    switch (h.type) {
    case CLLM_MP_NIL: break;
    case CLLM_MP_BOOL: v->v.b = (c == 0xc3); break;
    case CLLM_MP_UINT:
        v->v.u = (c <= 0x7f) ? c : be(q, (int)h.payload);
        break;
    case CLLM_MP_INT:
        if (c >= 0xe0) v->v.i = (int8_t)c;
        else {
            uint64_t x = be(q, (int)h.payload);
            int bits = 8 * (int)h.payload;
            if (bits < 64 && (x >> (bits - 1))) x |= ~0ull << bits; /* sign-extend */
            v->v.i = (int64_t)x;
        }
        /* Encoders may use a signed tag for a non-negative value: normalise. */
        if (v->v.i >= 0) { v->type = CLLM_MP_UINT; v->v.u = (uint64_t)v->v.i; }
        break;
    case CLLM_MP_FLOAT: v->v.f = load_float(q, (size_t)h.payload); break;
    case CLLM_MP_STR: case CLLM_MP_BIN: case CLLM_MP_EXT: v->v.s = (const char *)q; break;
    case CLLM_MP_ARRAY: case CLLM_MP_MAP: {
        cllm_value *items = *next;
        *next += h.children;
        v->v.items = items;
        for (uint64_t i = 0; i < h.children; i++) q = build_one(q, &items[i], next);
        return q;
    }
    }
    return q + h.payload;
}

void cllm_mp_build(const uint8_t *buf, cllm_value *nodes) {
    cllm_value *next = nodes + 1;
    build_one(buf, nodes, &next);
}

const cllm_value *cllm_mp_get(const cllm_value *map, const char *key) {
    if (!map || map->type != CLLM_MP_MAP) return NULL;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->n; i++) {
        const cllm_value *k = &map->v.items[2 * i];
        if (k->type == CLLM_MP_STR && k->n == klen && memcmp(k->v.s, key, klen) == 0) return &map->v.items[2 * i + 1];
    }
    return NULL;
}

int cllm_mp_str_eq(const cllm_value *v, const char *s) {
    size_t n = strlen(s);
    return v && v->type == CLLM_MP_STR && v->n == n && memcmp(v->v.s, s, n) == 0;
}

int cllm_mp_as_i64(const cllm_value *v, int64_t *out) {
    if (!v) return -1;
    if (v->type == CLLM_MP_INT) { *out = v->v.i; return 0; }
    if (v->type == CLLM_MP_UINT && v->v.u <= (uint64_t)INT64_MAX) { *out = (int64_t)v->v.u; return 0; }
    return -1;
}

int cllm_mp_as_double(const cllm_value *v, double *out) {
    if (!v) return -1;
    if (v->type == CLLM_MP_FLOAT) { *out = v->v.f; return 0; }
    if (v->type == CLLM_MP_INT) { *out = (double)v->v.i; return 0; }
    if (v->type == CLLM_MP_UINT) { *out = (double)v->v.u; return 0; }
    return -1;
}
