/* test_stream.c: the record stream: round trips of every record type, joined
 * streams, truncation at every byte offset, flipped bytes, hostile msgpack, and
 * the decoder against msgpack-c's own unpacker. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msgpack.h>
#include <zstd.h>

#include "check.h"
#include "err.h"
#include "json.h"
#include "records.h"
#include "stream.h"

/* Write records into a memory buffer through a pipe-free path: a temp file. */
typedef struct membuf { uint8_t *p; size_t n; } membuf;

static membuf slurp(const char *path) {
    membuf m = { 0 };
    FILE *f = fopen(path, "rb");
    if (!f) return m;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    m.p = malloc((size_t)n + 1);
    m.n = fread(m.p, 1, (size_t)n, f);
    fclose(f);
    return m;
}

static void tokens_set(cllm_tokens *t, const int32_t *ids, size_t n) { t->n = 0; cllm_tokens_append(t, ids, n); }

/* One stream holding one record of each type; returns its bytes. */
static membuf write_sample(const char *path, int64_t id_base, int records_each) {
    cllm_writer *w;
    CHECK_OK(cllm_writer_open(&w, path, 1));
    cllm_packbuf b = { 0 };
    char *argv[] = { "test", "--x" };
    cllm_header_rec h = { "test_stream", "tiny", 256, "0123456789abcdef", 2, argv };
    CHECK_OK(cllm_rec_header_pack(&b, &h));
    CHECK_OK(cllm_writer_put_header(w, b.data, b.size));
    for (int k = 0; k < records_each; k++) {
        cllm_prompt_rec p = { 0 };
        p.id = id_base + k;
        int32_t pt[] = { 1, 2, 3, 70000 };
        tokens_set(&p.tokens, pt, 4);
        p.has_tokens = 1;
        p.text = "Question: 2+2?";
        p.answer = "4";
        CHECK_OK(cllm_rec_prompt_pack(&b, &p));
        CHECK_OK(cllm_writer_put(w, b.data, b.size));
        cllm_tokens_free(&p.tokens);

        cllm_gen_rec g = { 0 };
        g.id = id_base + k;
        int32_t out[] = { 9, 8, 7 };
        tokens_set(&g.prompt, pt, 4);
        tokens_set(&g.output, out, 3);
        g.text = "abc";
        g.method = "jacobi";
        g.n = 16;
        g.steps = 2;
        g.time_s = 0.125;
        g.eos = 1;
        int32_t acc[] = { 2, 1 };
        tokens_set(&g.accepted, acc, 2);
        cllm_tokens st[2] = { { 0 }, { 0 } };
        tokens_set(&st[0], out, 3);
        tokens_set(&st[1], acc, 2);
        g.states = st;
        g.n_states = 2;
        CHECK_OK(cllm_rec_gen_pack(&b, &g));
        CHECK_OK(cllm_writer_put(w, b.data, b.size));
        cllm_tokens_free(&g.prompt); cllm_tokens_free(&g.output); cllm_tokens_free(&g.accepted);
        cllm_tokens_free(&st[0]); cllm_tokens_free(&st[1]);

        cllm_traj_rec t = { 0 };
        t.id = id_base + k;
        t.chunk = 3;
        tokens_set(&t.prompt, pt, 4);
        tokens_set(&t.prefix, out, 3);
        cllm_tokens ts[3] = { { 0 }, { 0 }, { 0 } };
        int32_t s0[] = { 5, 5, 5, 5 }, s1[] = { 1, 5, 6, 5 }, s2[] = { 1, 2, 6, 5 }, fx[] = { 1, 2, 3, 4 };
        tokens_set(&ts[0], s0, 4); tokens_set(&ts[1], s1, 4); tokens_set(&ts[2], s2, 4);
        t.states = ts;
        t.n_states = 3;
        tokens_set(&t.fixed, fx, 4);
        t.eos = 0;
        t.has_labels = 1;
        tokens_set(&t.labels, fx, 2);
        CHECK_OK(cllm_rec_traj_pack(&b, &t));
        CHECK_OK(cllm_writer_put(w, b.data, b.size));
        for (int i = 0; i < 3; i++) cllm_tokens_free(&ts[i]);
        cllm_tokens_free(&t.prompt); cllm_tokens_free(&t.prefix); cllm_tokens_free(&t.fixed); cllm_tokens_free(&t.labels);

        cllm_metric_rec me = { "loss", 1.0 / 3.0, 7, "nats" };
        CHECK_OK(cllm_rec_metric_pack(&b, &me));
        CHECK_OK(cllm_writer_put(w, b.data, b.size));
    }
    cllm_packbuf_free(&b);
    CHECK_OK(cllm_writer_close(w));
    return slurp(path);
}

/* Read all records of a buffer; check each decodes to what write_sample wrote.
 * Returns the number of records seen; *final gets the reader's last code. */
static int read_all(const membuf *m, int *final, int verify) {
    cllm_reader *r;
    if (cllm_reader_open_mem(&r, m->p, m->n, "mem")) { *final = -100; return 0; }
    cllm_record rec;
    int n = 0, rc;
    while ((rc = cllm_reader_next(r, &rec)) == 0) {
        n++;
        if (!verify) continue;
        CHECK_OK(cllm_rec_validate(&rec));
        if (!strcmp(rec.type, "prompt")) {
            cllm_prompt_rec p;
            CHECK_OK(cllm_rec_prompt_get(&rec, &p));
            CHECK(p.has_tokens && p.tokens.n == 4 && p.tokens.ids[3] == 70000);
            CHECK_STR(p.text, "Question: 2+2?");
            CHECK_STR(p.answer, "4");
            cllm_rec_prompt_free(&p);
        } else if (!strcmp(rec.type, "gen")) {
            cllm_gen_rec g;
            CHECK_OK(cllm_rec_gen_get(&rec, &g));
            CHECK(g.output.n == 3 && g.output.ids[0] == 9 && g.n == 16 && g.steps == 2 && g.eos == 1);
            CHECK(g.time_s == 0.125 && g.n_states == 2 && g.states[1].ids[0] == 2 && g.accepted.n == 2);
            CHECK_STR(g.method, "jacobi");
            cllm_rec_gen_free(&g);
        } else if (!strcmp(rec.type, "traj")) {
            cllm_traj_rec t;
            CHECK_OK(cllm_rec_traj_get(&rec, &t));
            CHECK(t.chunk == 3 && t.n_states == 3 && t.fixed.n == 4 && t.fixed.ids[3] == 4);
            CHECK(t.states[1].ids[2] == 6 && t.prefix.n == 3 && t.has_labels && t.labels.n == 2);
            cllm_rec_traj_free(&t);
        } else if (!strcmp(rec.type, "metric")) {
            double v;
            CHECK_OK(cllm_rec_get_double(rec.root, "value", &v, 1));
            CHECK(v == 1.0 / 3.0);
        } else if (!strcmp(rec.type, "header")) {
            char *tok;
            CHECK_OK(cllm_rec_get_str(rec.root, "tokenizer", &tok, 1));
            CHECK_STR(tok, "0123456789abcdef");
            free(tok);
        }
    }
    *final = rc;
    cllm_reader_close(r);
    return n;
}

static void test_round_trip(void) {
    membuf m = write_sample("/tmp/cllm_test_stream_a.zst", 0, 3);
    int final;
    int n = read_all(&m, &final, 1);
    CHECK_EQ_INT(n, 1 + 4 * 3 + 1);
    CHECK_EQ_INT(final, CLLM_EOF);
    free(m.p);
    TEST_OK("round trip of every record type");
}

static void test_concat(void) {
    membuf a = write_sample("/tmp/cllm_test_stream_a.zst", 0, 2);
    membuf b = write_sample("/tmp/cllm_test_stream_b.zst", 100, 3);
    membuf ab = { malloc(a.n + b.n), a.n + b.n };
    memcpy(ab.p, a.p, a.n);
    memcpy(ab.p + a.n, b.p, b.n);
    int final;
    int n = read_all(&ab, &final, 1);
    CHECK_EQ_INT(n, (1 + 8 + 1) + (1 + 12 + 1));
    CHECK_EQ_INT(final, CLLM_EOF);
    /* A skippable frame between the two streams is ignored. */
    uint8_t skip[8 + 5] = { 0x50, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o' };
    membuf asb = { malloc(a.n + sizeof skip + b.n), a.n + sizeof skip + b.n };
    memcpy(asb.p, a.p, a.n);
    memcpy(asb.p + a.n, skip, sizeof skip);
    memcpy(asb.p + a.n + sizeof skip, b.p, b.n);
    n = read_all(&asb, &final, 1);
    CHECK_EQ_INT(n, 24);
    CHECK_EQ_INT(final, CLLM_EOF);
    free(a.p); free(b.p); free(ab.p); free(asb.p);
    TEST_OK("joined streams read as one");
}

/* Cut the stream at every byte offset: every complete record before the cut is
 * delivered (so the count never drops below what the bytes held), then a
 * truncation error; never a clean EOF. */
static void test_truncation(void) {
    membuf m = write_sample("/tmp/cllm_test_stream_a.zst", 0, 2);
    int full_final;
    int full = read_all(&m, &full_final, 0);
    int prev = 0, bad = 0;
    for (size_t cut = 1; cut < m.n; cut++) {
        membuf c = { m.p, cut };
        int final;
        int n = read_all(&c, &final, 0);
        if (final != CLLM_ETRUNC || !strstr(cllm_errmsg(), "truncated")) {
            if (bad++ < 5) fprintf(stderr, "cut at %zu: code %d (%s)\n", cut, final, cllm_errmsg());
        }
        CHECK(n <= full);
        CHECK_MSG(n >= prev, "cut at %zu delivered %d records, a shorter cut delivered %d", cut, n, prev);
        prev = n;
    }
    CHECK_EQ_INT(bad, 0);
    /* Each record is flushed as it is written, so a cut just before the end
     * record's block still delivers every data record. */
    CHECK(prev >= full - 1);
    free(m.p);
    TEST_OK("truncation at every byte offset");
}

/* FNV-1a of every decoded record's bytes, or 0 when reading failed. */
static uint64_t content_hash(const membuf *m) {
    cllm_reader *r;
    if (cllm_reader_open_mem(&r, m->p, m->n, "mem")) return 0;
    cllm_record rec;
    uint64_t h = 1469598103934665603ull;
    int rc;
    while ((rc = cllm_reader_next(r, &rec)) == 0)
        for (size_t i = 0; i < rec.raw_len; i++) h = (h ^ rec.raw[i]) * 1099511628211ull;
    cllm_reader_close(r);
    return rc == CLLM_EOF ? h : 0;
}

/* Flip bits of every byte: an error, never a crash, never different records.
 * Some flips are harmless to zstd (the window size byte, reserved bits that
 * decoders ignore): those decode to the very same records, which is fine. */
static void test_flips(void) {
    membuf m = write_sample("/tmp/cllm_test_stream_a.zst", 0, 2);
    uint64_t good = content_hash(&m);
    CHECK(good != 0);
    int wrong = 0, caught = 0, harmless = 0;
    for (size_t i = 0; i < m.n; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            m.p[i] ^= (uint8_t)(1u << bit);
            uint64_t h = content_hash(&m);
            if (h == 0) caught++;
            else if (h == good) harmless++;
            else if (wrong++ < 5) fprintf(stderr, "flip at byte %zu bit %d gave different records\n", i, bit);
            m.p[i] ^= (uint8_t)(1u << bit);
        }
    }
    CHECK_EQ_INT(wrong, 0);
    printf("flips: %d caught, %d harmless (same records), %d wrong\n", caught, harmless, wrong);
    free(m.p);
    TEST_OK("flipped bytes are detected");
}

/* Hostile msgpack inside a valid zstd frame (checksummed, as a writer would). */
static membuf zstd_wrap(const void *data, size_t n) {
    membuf m = { malloc(ZSTD_compressBound(n)), 0 };
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    m.n = ZSTD_compress2(c, m.p, ZSTD_compressBound(n), data, n);
    CHECK(!ZSTD_isError(m.n));
    ZSTD_freeCCtx(c);
    return m;
}

static int read_code(const void *data, size_t n) {
    membuf m = zstd_wrap(data, n);
    int final;
    read_all(&m, &final, 1);
    free(m.p);
    return final;
}

static void test_hostile(void) {
    const uint8_t array32[] = { 0xdd, 0xff, 0xff, 0xff, 0xff };     /* 4G elements, 5 bytes */
    const uint8_t map32[] = { 0xdf, 0xff, 0xff, 0xff, 0xff };
    const uint8_t reserved[] = { 0x81, 0xa4, 't', 'y', 'p', 'e', 0xc1 };
    const uint8_t str32[] = { 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a' };
    uint8_t deep[200];
    for (size_t i = 0; i < sizeof deep; i++) deep[i] = 0x91; /* array of array of ... */
    int rc = read_code(array32, sizeof array32);
    CHECK_MSG(rc == CLLM_ETRUNC, "array32 header: %d %s", rc, cllm_errmsg());
    rc = read_code(map32, sizeof map32);
    CHECK_MSG(rc == CLLM_ETRUNC, "map32 header: %d %s", rc, cllm_errmsg());
    rc = read_code(reserved, sizeof reserved);
    CHECK_MSG(rc == CLLM_EFORMAT && strstr(cllm_errmsg(), "0xc1"), "0xc1: %d %s", rc, cllm_errmsg());
    rc = read_code(str32, sizeof str32);
    CHECK_MSG(rc == CLLM_ETRUNC, "str32: %d %s", rc, cllm_errmsg());
    rc = read_code(deep, sizeof deep);
    CHECK_MSG(rc == CLLM_ELIMIT && strstr(cllm_errmsg(), "nesting"), "deep: %d %s", rc, cllm_errmsg());
    const uint8_t not_map[] = { 0x93, 1, 2, 3 };
    rc = read_code(not_map, sizeof not_map);
    CHECK_MSG(rc == CLLM_ESCHEMA && strstr(cllm_errmsg(), "not a map"), "array record: %d %s", rc, cllm_errmsg());
    const uint8_t no_type[] = { 0x81, 0xa1, 'x', 0x01 };
    rc = read_code(no_type, sizeof no_type);
    CHECK_MSG(rc == CLLM_ESCHEMA && strstr(cllm_errmsg(), "type"), "no type: %d %s", rc, cllm_errmsg());
    const uint8_t no_header[] = { 0x81, 0xa4, 't', 'y', 'p', 'e', 0xa4, 't', 'r', 'a', 'j' };
    rc = read_code(no_header, sizeof no_header);
    CHECK_MSG(rc == CLLM_EFORMAT && strstr(cllm_errmsg(), "header"), "no header: %d %s", rc, cllm_errmsg());
    TEST_OK("hostile msgpack");
}

/* The bounded decoder agrees with msgpack-c on values msgpack-c packed. */
static void test_decoder_vs_msgpack_c(void) {
    srand(7);
    for (int iter = 0; iter < 200; iter++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        int n = 1 + rand() % 20;
        msgpack_pack_map(&pk, (size_t)n);
        for (int i = 0; i < n; i++) {
            char key[16];
            int kl = snprintf(key, sizeof key, "k%d", i);
            msgpack_pack_str_with_body(&pk, key, (size_t)kl);
            switch (rand() % 6) {
            case 0: msgpack_pack_int64(&pk, (int64_t)rand() * (rand() % 2 ? -1 : 1) * 4099); break;
            case 1: msgpack_pack_uint64(&pk, (uint64_t)rand() << 33); break;
            case 2: msgpack_pack_double(&pk, rand() / 7.0); break;
            case 3: msgpack_pack_float(&pk, (float)(rand() / 3.0)); break;
            case 4: {
                int m = rand() % 300;
                msgpack_pack_array(&pk, (size_t)m);
                for (int j = 0; j < m; j++) msgpack_pack_uint32(&pk, (uint32_t)rand() % 70000);
                break;
            }
            default: {
                int m = rand() % 70000;
                char *s = malloc((size_t)m + 1);
                memset(s, 'a' + rand() % 26, (size_t)m);
                msgpack_pack_str_with_body(&pk, s, (size_t)m);
                free(s);
            }
            }
        }
        size_t used, nv;
        CHECK_EQ_INT(cllm_mp_scan((const uint8_t *)sb.data, sb.size, &used, &nv), CLLM_MP_COMPLETE);
        CHECK_EQ_INT(used, sb.size);
        cllm_value *nodes = malloc(nv * sizeof *nodes);
        cllm_mp_build((const uint8_t *)sb.data, nodes);
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        CHECK(msgpack_unpack_next(&up, sb.data, sb.size, &off) == MSGPACK_UNPACK_SUCCESS);
        msgpack_object o = up.data;
        CHECK(o.type == MSGPACK_OBJECT_MAP && o.via.map.size == nodes[0].n);
        for (uint32_t i = 0; i < o.via.map.size && i < nodes[0].n; i++) {
            msgpack_object v = o.via.map.ptr[i].val;
            const cllm_value *x = &nodes[0].v.items[2 * i + 1];
            switch (v.type) {
            case MSGPACK_OBJECT_POSITIVE_INTEGER: CHECK(x->type == CLLM_MP_UINT && x->v.u == v.via.u64); break;
            case MSGPACK_OBJECT_NEGATIVE_INTEGER: CHECK(x->type == CLLM_MP_INT && x->v.i == v.via.i64); break;
            case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: CHECK(x->type == CLLM_MP_FLOAT && x->v.f == v.via.f64); break;
            case MSGPACK_OBJECT_STR: CHECK(x->type == CLLM_MP_STR && x->n == v.via.str.size && !memcmp(x->v.s, v.via.str.ptr, x->n)); break;
            case MSGPACK_OBJECT_ARRAY:
                CHECK(x->type == CLLM_MP_ARRAY && x->n == v.via.array.size);
                for (uint32_t j = 0; j < x->n && j < v.via.array.size; j++) CHECK(x->v.items[j].v.u == v.via.array.ptr[j].via.u64);
                break;
            default: CHECK(0);
            }
        }
        /* Every proper prefix asks for more bytes. */
        for (size_t cut = 0; cut < sb.size; cut += 1 + sb.size / 50) {
            size_t u2, n2;
            CHECK(cllm_mp_scan((const uint8_t *)sb.data, cut, &u2, &n2) == CLLM_MP_NEED_MORE);
        }
        msgpack_unpacked_destroy(&up);
        free(nodes);
        msgpack_sbuffer_destroy(&sb);
    }
    TEST_OK("decoder agrees with msgpack-c");
}

/* JSON text of a record: integers stay integers, floats round-trip. */
static void test_json(void) {
    json_error_t err;
    const char *text = "{\"type\":\"metric\",\"name\":\"x\\n\\\"q\\\"\",\"value\":0.1,\"ids\":[1,2,3],\"f\":1.0,\"neg\":-5,\"u\":\"\xc3\xa9\"}";
    json_t *j = json_loads(text, 0, &err);
    CHECK(j != NULL);
    cllm_packbuf b = { 0 };
    CHECK_OK(cllm_json_to_record(&b, j, 0, NULL));
    size_t used, nv;
    CHECK(cllm_mp_scan((const uint8_t *)b.data, b.size, &used, &nv) == CLLM_MP_COMPLETE);
    cllm_value *nodes = malloc(nv * sizeof *nodes);
    cllm_mp_build((const uint8_t *)b.data, nodes);
    cllm_strbuf s = { 0 };
    cllm_value_to_json(&s, nodes);
    CHECK_STR(s.s, text);
    /* Invalid UTF-8 becomes U+FFFD rather than invalid JSON. */
    s.len = 0;
    cllm_json_quote(&s, "a\xff" "b", 3);
    CHECK_STR(s.s, "\"a\\ufffdb\"");
    cllm_strbuf_free(&s);
    free(nodes);
    cllm_packbuf_free(&b);
    json_decref(j);
    TEST_OK("json conversion");
}

int main(void) {
    test_round_trip();
    test_concat();
    test_truncation();
    test_flips();
    test_hostile();
    test_decoder_vs_msgpack_c();
    test_json();
    unlink("/tmp/cllm_test_stream_a.zst");
    unlink("/tmp/cllm_test_stream_b.zst");
    unlink("/tmp/cllm_test_stream_raw.zst");
    TEST_END();
}
