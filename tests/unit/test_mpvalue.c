/* test_mpvalue: the bounded msgpack decoder (libcore/mpvalue.h) on bytes
 * written by hand from the msgpack specification, every format of it: the
 * fixints, nil and the booleans, float 32/64, uint and int 8/16/32/64 (the
 * signed ones sign-extended, the non-negative ones normalised to UINT as the
 * header says), str, bin, array and map in each size class, fixext 1..16 and
 * ext 8/16/32, the reserved byte 0xc1, the nesting limit, and every proper
 * prefix of each value asking for more bytes. Expected values are the
 * specification's, not the decoder's output. test_stream checks the same
 * decoder against msgpack-c on random records.
 */
#include <stdint.h>

#include "check.h"
#include "err.h"
#include "mpvalue.h"

static cllm_value nodes[4096];

/* Scan and build the value in b[0..n): it must take exactly n bytes (or
 * `want` when the bytes hold more than one value) and want_nodes nodes, and
 * every proper prefix must ask for more, at once and step by step. */
static const cllm_value *decode(const uint8_t *b, size_t n, size_t want, size_t want_nodes, int line) {
    size_t used = 0, nv = 0;
    int rc = cllm_mp_scan(b, n, &used, &nv);
    CHECK_MSG(rc == CLLM_MP_COMPLETE && used == want && nv == want_nodes,
              "line %d: rc %d, %zu bytes (want %zu), %zu nodes (want %zu)", line, rc, used, want, nv, want_nodes);
    for (size_t cut = 0; cut < want; cut++) {
        size_t u, v;
        CHECK_MSG(cllm_mp_scan(b, cut, &u, &v) == CLLM_MP_NEED_MORE, "line %d: prefix of %zu bytes", line, cut);
    }
    cllm_mp_scanner s;   /* one byte at a time */
    cllm_mp_scanner_init(&s);
    size_t u = 0, v = 0;
    int r = CLLM_MP_NEED_MORE;
    size_t have = 0;
    while (r == CLLM_MP_NEED_MORE && have < n) r = cllm_mp_scan_more(&s, b, ++have, &u, &v);
    CHECK_MSG(r == CLLM_MP_COMPLETE && have == want && u == want && v == want_nodes,
              "line %d: byte by byte: rc %d after %zu bytes, %zu used, %zu nodes", line, r, have, u, v);
    if (rc != CLLM_MP_COMPLETE || nv > sizeof nodes / sizeof *nodes) return NULL;
    memset(nodes, 0xa5, sizeof nodes);
    cllm_mp_build(b, nodes);
    return nodes;
}
#define DEC(...) decode((const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__}), \
                        sizeof((const uint8_t[]){__VA_ARGS__}), 1, __LINE__)

static void check_uint(const cllm_value *v, uint64_t x, int line) {
    CHECK_MSG(v && v->type == CLLM_MP_UINT && v->v.u == x, "line %d: want uint %llu, got type %d value %llu", line,
              (unsigned long long)x, v ? v->type : -1, v ? (unsigned long long)v->v.u : 0);
}
static void check_int(const cllm_value *v, int64_t x, int line) {
    CHECK_MSG(v && v->type == CLLM_MP_INT && v->v.i == x, "line %d: want int %lld, got type %d value %lld", line,
              (long long)x, v ? v->type : -1, v ? (long long)v->v.i : 0);
}
#define UINT_IS(x, ...) check_uint(DEC(__VA_ARGS__), x, __LINE__)
#define INT_IS(x, ...) check_int(DEC(__VA_ARGS__), x, __LINE__)

static void test_scalars(void) {
    UINT_IS(0, 0x00);
    UINT_IS(127, 0x7f);
    INT_IS(-32, 0xe0);
    INT_IS(-1, 0xff);
    const cllm_value *v = DEC(0xc0);
    CHECK(v && v->type == CLLM_MP_NIL);
    v = DEC(0xc2);
    CHECK(v && v->type == CLLM_MP_BOOL && v->v.b == 0);
    v = DEC(0xc3);
    CHECK(v && v->type == CLLM_MP_BOOL && v->v.b == 1);
    v = DEC(0xca, 0x3f, 0xc0, 0x00, 0x00);                           /* float 32: 1.5 */
    CHECK(v && v->type == CLLM_MP_FLOAT && v->v.f == 1.5);
    v = DEC(0xca, 0xc0, 0x49, 0x0f, 0xdb);                           /* float 32: -pi rounded */
    CHECK(v && v->type == CLLM_MP_FLOAT && v->v.f == (double)-3.14159265f);
    v = DEC(0xcb, 0xc0, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00);  /* float 64: -2.25 */
    CHECK(v && v->type == CLLM_MP_FLOAT && v->v.f == -2.25);
    v = DEC(0xcb, 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a);  /* float 64: 0.1 */
    CHECK(v && v->type == CLLM_MP_FLOAT && v->v.f == 0.1);

    UINT_IS(0, 0xcc, 0x00);
    UINT_IS(255, 0xcc, 0xff);
    UINT_IS(256, 0xcd, 0x01, 0x00);
    UINT_IS(65535, 0xcd, 0xff, 0xff);
    UINT_IS(65536, 0xce, 0x00, 0x01, 0x00, 0x00);
    UINT_IS(0xfedcba98u, 0xce, 0xfe, 0xdc, 0xba, 0x98);
    UINT_IS(1ull << 32, 0xcf, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00);
    UINT_IS(0x0123456789abcdefull, 0xcf, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef);
    UINT_IS(UINT64_MAX, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);

    INT_IS(-128, 0xd0, 0x80);
    INT_IS(-1, 0xd0, 0xff);
    UINT_IS(127, 0xd0, 0x7f);                                        /* a signed tag, non-negative: UINT */
    UINT_IS(0, 0xd0, 0x00);
    INT_IS(-32768, 0xd1, 0x80, 0x00);
    INT_IS(-129, 0xd1, 0xff, 0x7f);
    UINT_IS(32767, 0xd1, 0x7f, 0xff);
    INT_IS(INT32_MIN, 0xd2, 0x80, 0x00, 0x00, 0x00);
    INT_IS(-65537, 0xd2, 0xff, 0xfe, 0xff, 0xff);
    UINT_IS(INT32_MAX, 0xd2, 0x7f, 0xff, 0xff, 0xff);
    INT_IS(INT64_MIN, 0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00);
    INT_IS(-1, 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    INT_IS(-4294967297ll, 0xd3, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff);
    UINT_IS(INT64_MAX, 0xd3, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    TEST_OK("scalars: fixints, nil, bool, float 32/64, uint and int 8..64 at their edges");
}

static void check_bytes(const cllm_value *v, int type, const char *s, uint32_t n, int line) {
    CHECK_MSG(v && v->type == type && v->n == n && !memcmp(v->v.s, s, n), "line %d: want type %d, %u bytes", line,
              type, n);
}

static void test_bytes(void) {
    const char *abc = "abc";
    check_bytes(DEC(0xa0), CLLM_MP_STR, "", 0, __LINE__);
    check_bytes(DEC(0xa3, 'a', 'b', 'c'), CLLM_MP_STR, abc, 3, __LINE__);
    static uint8_t b[140000];
    for (size_t i = 0; i < sizeof b; i++) b[i] = (uint8_t)('a' + i % 26);
    /* fixstr 31, str 8/16/32, bin 8/16/32, each with a length that needs every
     * byte of its length field. */
    static const struct { uint8_t tag; int type, lenbytes; uint32_t n; } forms[] = {
        {0xbf, CLLM_MP_STR, 0, 31},     {0xd9, CLLM_MP_STR, 1, 0},      {0xd9, CLLM_MP_STR, 1, 200},
        {0xda, CLLM_MP_STR, 2, 0x1234}, {0xdb, CLLM_MP_STR, 4, 0x10203}, {0xdb, CLLM_MP_STR, 4, 3},
        {0xc4, CLLM_MP_BIN, 1, 255},    {0xc4, CLLM_MP_BIN, 1, 0},      {0xc5, CLLM_MP_BIN, 2, 0x0102},
        {0xc6, CLLM_MP_BIN, 4, 0x1ff01},
    };
    for (size_t f = 0; f < sizeof forms / sizeof *forms; f++) {
        uint32_t n = forms[f].n;
        size_t h = 1 + (size_t)forms[f].lenbytes;
        uint8_t *buf = malloc(h + n + 1);
        buf[0] = forms[f].tag;
        for (int k = 0; k < forms[f].lenbytes; k++) buf[1 + k] = (uint8_t)(n >> 8 * (forms[f].lenbytes - 1 - k));
        memcpy(buf + h, b, n);
        buf[h + n] = 0xc1;   /* after the value: never read */
        const cllm_value *v = decode(buf, h + n + 1, h + n, 1, (int)f);
        CHECK_MSG(v && v->type == forms[f].type && v->n == n && v->v.s == (const char *)buf + h,
                  "form %zu (0x%02x, %u bytes)", f, forms[f].tag, n);
        free(buf);
    }
    /* fixext 1, 2, 4, 8, 16: tag, type, data. */
    for (int k = 0; k < 5; k++) {
        uint8_t buf[20];
        uint32_t n = 1u << k;
        buf[0] = (uint8_t)(0xd4 + k);
        buf[1] = (uint8_t)(k == 2 ? 0xff : 0x05 + k);   /* type -1 once: signed */
        memcpy(buf + 2, b, n);
        const cllm_value *v = decode(buf, 2 + n, 2 + n, 1, 1000 + k);
        CHECK_MSG(v && v->type == CLLM_MP_EXT && v->n == n && v->ext_type == (k == 2 ? -1 : 5 + k) &&
                      v->v.s == (const char *)buf + 2,
                  "fixext %u", n);
    }
    /* ext 8/16/32: tag, length, type, data. */
    static const struct { uint8_t tag; int lenbytes; uint32_t n; } ext[] = {
        {0xc7, 1, 0}, {0xc7, 1, 3}, {0xc7, 1, 255}, {0xc8, 2, 0x0203}, {0xc9, 4, 0x10001},
    };
    for (size_t f = 0; f < sizeof ext / sizeof *ext; f++) {
        uint32_t n = ext[f].n;
        size_t h = 2 + (size_t)ext[f].lenbytes;
        uint8_t *buf = malloc(h + n);
        buf[0] = ext[f].tag;
        for (int k = 0; k < ext[f].lenbytes; k++) buf[1 + k] = (uint8_t)(n >> 8 * (ext[f].lenbytes - 1 - k));
        buf[h - 1] = 0x80;   /* type -128 */
        memcpy(buf + h, b, n);
        const cllm_value *v = decode(buf, h + n, h + n, 1, 2000 + (int)f);
        CHECK_MSG(v && v->type == CLLM_MP_EXT && v->n == n && v->ext_type == -128 && v->v.s == (const char *)buf + h,
                  "ext form %zu (0x%02x, %u bytes)", f, ext[f].tag, n);
        free(buf);
    }
    TEST_OK("str, bin, fixext and ext in every size class");
}

/* Element i of a test array (i mod 2^16), or of a map's pairs (key, value). */
static uint32_t elem(int map, uint32_t i) { return (map ? (i % 2 ? i / 2 % 100 + 100 : i / 2) : i) & 0xffff; }

static void test_containers(void) {
    const cllm_value *v = decode((const uint8_t[]){0x90}, 1, 1, 1, __LINE__);
    CHECK(v && v->type == CLLM_MP_ARRAY && v->n == 0);
    v = decode((const uint8_t[]){0x80}, 1, 1, 1, __LINE__);
    CHECK(v && v->type == CLLM_MP_MAP && v->n == 0);
    v = decode((const uint8_t[]){0x93, 0x01, 0xff, 0xa1, 'x'}, 5, 5, 4, __LINE__);
    CHECK(v && v->type == CLLM_MP_ARRAY && v->n == 3);
    if (v) {
        check_uint(&v->v.items[0], 1, __LINE__);
        check_int(&v->v.items[1], -1, __LINE__);
        CHECK(v->v.items[2].type == CLLM_MP_STR && v->v.items[2].n == 1 && v->v.items[2].v.s[0] == 'x');
    }
    /* fixarray 15, array 16 and 32; fixmap 15, map 16 and 32, holding
     * 0, 1, 2, ... (maps: key i, value i + 100 as uint 8). */
    static const struct { uint8_t tag; int lenbytes, map; uint32_t n; } forms[] = {
        {0x9f, 0, 0, 15}, {0xdc, 2, 0, 0}, {0xdc, 2, 0, 300}, {0xdd, 4, 0, 0}, {0xdd, 4, 0, 0x10002},
        {0x8f, 0, 1, 15}, {0xde, 2, 1, 0}, {0xde, 2, 1, 260}, {0xdf, 4, 1, 0}, {0xdf, 4, 1, 0x10001},
    };
    for (size_t f = 0; f < sizeof forms / sizeof *forms; f++) {
        uint32_t n = forms[f].n, kids = forms[f].map ? 2 * n : n;
        size_t h = 1 + (size_t)forms[f].lenbytes, size = h;
        uint8_t *buf = malloc(h + 3 * (size_t)kids + 1);
        buf[0] = forms[f].tag;
        for (int k = 0; k < forms[f].lenbytes; k++) buf[1 + k] = (uint8_t)(n >> 8 * (forms[f].lenbytes - 1 - k));
        for (uint32_t i = 0; i < kids; i++) {
            uint32_t x = elem(forms[f].map, i);
            if (x < 128) buf[size++] = (uint8_t)x;
            else if (x < 256) { buf[size++] = 0xcc; buf[size++] = (uint8_t)x; }
            else { buf[size++] = 0xcd; buf[size++] = (uint8_t)(x >> 8); buf[size++] = (uint8_t)x; }
        }
        buf[size] = 0x00;   /* a next value: not part of this one */
        cllm_value *all = kids + 1 <= sizeof nodes / sizeof *nodes ? nodes : malloc((kids + 1) * sizeof *all);
        size_t used, nv;
        CHECK_EQ_INT(cllm_mp_scan(buf, size + 1, &used, &nv), CLLM_MP_COMPLETE);
        CHECK_MSG(used == size && nv == kids + 1, "form %zu: %zu bytes of %zu, %zu nodes", f, used, size, nv);
        size_t u, w;
        CHECK(cllm_mp_scan(buf, size - 1, &u, &w) == CLLM_MP_NEED_MORE);
        CHECK(cllm_mp_scan(buf, h - 1, &u, &w) == CLLM_MP_NEED_MORE);
        cllm_mp_build(buf, all);
        CHECK_MSG(all[0].type == (forms[f].map ? CLLM_MP_MAP : CLLM_MP_ARRAY) && all[0].n == n, "form %zu", f);
        int bad = 0;
        for (uint32_t i = 0; i < kids && all[0].type != CLLM_MP_NIL; i++) {
            uint32_t x = elem(forms[f].map, i);
            if (all[0].v.items[i].type != CLLM_MP_UINT || all[0].v.items[i].v.u != x) bad++;
        }
        CHECK_MSG(!bad, "form %zu: %d elements wrong", f, bad);
        if (all != nodes) free(all);
        free(buf);
    }
    /* A map in an array in a map: children follow their parent's slot. */
    const uint8_t nest[] = {0x82, 0xa1, 'a', 0x92, 0x81, 0xa1, 'b', 0x07, 0xc0, 0xa1, 'c', 0xc3};
    v = decode(nest, sizeof nest, sizeof nest, 9, __LINE__);
    if (v) {
        const cllm_value *a = cllm_mp_get(v, "a");
        CHECK(a && a->type == CLLM_MP_ARRAY && a->n == 2);
        if (a) {
            check_uint(cllm_mp_get(&a->v.items[0], "b"), 7, __LINE__);
            CHECK(a->v.items[1].type == CLLM_MP_NIL);
        }
        const cllm_value *c = cllm_mp_get(v, "c");
        CHECK(c && c->type == CLLM_MP_BOOL && c->v.b);
    }
    TEST_OK("arrays and maps in every size class, nested");
}

static void test_refusals(void) {
    size_t used, nv;
    const uint8_t c1[] = {0x92, 0x01, 0xc1};
    int rc = cllm_mp_scan(c1, sizeof c1, &used, &nv);
    CHECK_MSG(rc == CLLM_EFORMAT && strstr(cllm_errmsg(), "0xc1") && strstr(cllm_errmsg(), "offset 2"), "%d %s", rc,
              cllm_errmsg());
    /* CLLM_MP_MAX_DEPTH containers inside one another are read; one more is not. */
    uint8_t deep[CLLM_MP_MAX_DEPTH + 2];
    memset(deep, 0x91, sizeof deep);
    deep[CLLM_MP_MAX_DEPTH] = 0x2a;
    rc = cllm_mp_scan(deep, CLLM_MP_MAX_DEPTH + 1, &used, &nv);
    CHECK_MSG(rc == CLLM_MP_COMPLETE && used == CLLM_MP_MAX_DEPTH + 1 && nv == CLLM_MP_MAX_DEPTH + 1, "depth %d: %d",
              CLLM_MP_MAX_DEPTH, rc);
    cllm_mp_build(deep, nodes);
    const cllm_value *v = nodes;
    for (int d = 0; d < CLLM_MP_MAX_DEPTH && v->type == CLLM_MP_ARRAY; d++) v = &v->v.items[0];
    check_uint(v, 42, __LINE__);
    deep[CLLM_MP_MAX_DEPTH] = 0x91;
    deep[CLLM_MP_MAX_DEPTH + 1] = 0x2a;
    rc = cllm_mp_scan(deep, sizeof deep, &used, &nv);
    CHECK_MSG(rc == CLLM_ELIMIT && strstr(cllm_errmsg(), "deeper than 32"), "depth 33: %d %s", rc, cllm_errmsg());
    /* Two values back to back: the scan takes the first. */
    const uint8_t two[] = {0xcd, 0x12, 0x34, 0x05};
    CHECK(cllm_mp_scan(two, sizeof two, &used, &nv) == CLLM_MP_COMPLETE && used == 3 && nv == 1);
    cllm_mp_build(two, nodes);
    check_uint(nodes, 0x1234, __LINE__);
    TEST_OK("0xc1 refused at its offset; nesting up to CLLM_MP_MAX_DEPTH, no deeper");
}

static void test_queries(void) {
    /* {1: 2, "ab": 3, "a": 4, "b": "x"}: a non-string key is skipped, keys
     * match whole. */
    const uint8_t m[] = {0x84, 0x01, 0x02, 0xa2, 'a', 'b', 0x03, 0xa1, 'a', 0x04, 0xa1, 'b', 0xa1, 'x'};
    size_t used, nv;
    CHECK(cllm_mp_scan(m, sizeof m, &used, &nv) == CLLM_MP_COMPLETE && nv == 9);
    cllm_mp_build(m, nodes);
    check_uint(cllm_mp_get(nodes, "a"), 4, __LINE__);
    check_uint(cllm_mp_get(nodes, "ab"), 3, __LINE__);
    CHECK(cllm_mp_get(nodes, "") == NULL);
    CHECK(cllm_mp_get(nodes, "abc") == NULL);
    CHECK(cllm_mp_get(nodes, "c") == NULL);
    CHECK(cllm_mp_get(NULL, "a") == NULL);
    CHECK(cllm_mp_get(&nodes[1], "a") == NULL);   /* not a map */
    CHECK(cllm_mp_str_eq(cllm_mp_get(nodes, "b"), "x"));
    CHECK(!cllm_mp_str_eq(cllm_mp_get(nodes, "b"), "xy"));
    CHECK(!cllm_mp_str_eq(cllm_mp_get(nodes, "b"), ""));
    CHECK(!cllm_mp_str_eq(cllm_mp_get(nodes, "b"), "y"));
    CHECK(!cllm_mp_str_eq(NULL, "x"));
    const uint8_t bin[] = {0xc4, 0x01, 'x'};
    cllm_mp_build(bin, nodes);
    CHECK(!cllm_mp_str_eq(nodes, "x"));   /* bin with the same bytes: not a str */

    int64_t i = 7;
    double d = 7;
    cllm_value x = {.type = CLLM_MP_UINT, .v.u = (uint64_t)INT64_MAX};
    CHECK(cllm_mp_as_i64(&x, &i) == 0 && i == INT64_MAX);
    x.v.u = (uint64_t)INT64_MAX + 1;
    i = 7;
    CHECK(cllm_mp_as_i64(&x, &i) == -1 && i == 7);
    CHECK(cllm_mp_as_double(&x, &d) == 0 && d == 9223372036854775808.0);
    x = (cllm_value){.type = CLLM_MP_INT, .v.i = INT64_MIN};
    CHECK(cllm_mp_as_i64(&x, &i) == 0 && i == INT64_MIN);
    CHECK(cllm_mp_as_double(&x, &d) == 0 && d == -9223372036854775808.0);
    x = (cllm_value){.type = CLLM_MP_FLOAT, .v.f = 2.5};
    i = 7;
    CHECK(cllm_mp_as_i64(&x, &i) == -1 && i == 7);
    CHECK(cllm_mp_as_double(&x, &d) == 0 && d == 2.5);
    x = (cllm_value){.type = CLLM_MP_BOOL, .v.b = 1};
    CHECK(cllm_mp_as_i64(&x, &i) == -1 && cllm_mp_as_double(&x, &d) == -1);
    x = (cllm_value){.type = CLLM_MP_STR, .n = 1, .v.s = "1"};
    CHECK(cllm_mp_as_i64(&x, &i) == -1 && cllm_mp_as_double(&x, &d) == -1);
    CHECK(cllm_mp_as_i64(NULL, &i) == -1 && cllm_mp_as_double(NULL, &d) == -1);
    TEST_OK("map lookup, str_eq, as_i64 and as_double at their edges");
}

int main(void) {
    test_scalars();
    test_bytes();
    test_containers();
    test_refusals();
    test_queries();
    TEST_END();
}
