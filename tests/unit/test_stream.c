/* test_stream.c: the record stream: round trips of every record type, joined
 * streams, truncation at every byte offset, flipped bytes, hostile msgpack, and
 * the decoder against msgpack-c's own unpacker. */
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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

/* The sample files, in a directory of this run's own (main): fixed names in
 * /tmp were shared by every run on the machine (a build and a build-san run
 * side by side, two checkouts, two users), one run reading the file another
 * had just rewritten ("n == 1 + 4 * 3 + 1 (10 vs 14)": 2 runs in 60 with two
 * at once), or not allowed to replace another user's. */
static char tmp_dir[1024], path_a[1100], path_b[1100];

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
    membuf m = write_sample(path_a, 0, 3);
    int final;
    int n = read_all(&m, &final, 1);
    CHECK_EQ_INT(n, 1 + 4 * 3 + 1);
    CHECK_EQ_INT(final, CLLM_EOF);
    free(m.p);
    TEST_OK("round trip of every record type");
}

static void test_concat(void) {
    membuf a = write_sample(path_a, 0, 2);
    membuf b = write_sample(path_b, 100, 3);
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
    membuf m = write_sample(path_a, 0, 2);
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
    membuf m = write_sample(path_a, 0, 2);
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
        /* The same bytes arriving in pieces of random sizes, now and then at a
         * new address, through the step-wise scanner: more wanted until the last
         * byte, then the same size and node count. The scan resumes where it
         * stopped: what it has not passed yet is never more than the element
         * in progress (at most a 70,000-byte string with its head), which a
         * scanner restarting from the top each time would break. */
        cllm_mp_scanner scan;
        cllm_mp_scanner_init(&scan);
        size_t have = 0, u3 = 0, n3 = 0, prev_off = 0;
        int rc3 = CLLM_MP_NEED_MORE, calls = 0;
        while (rc3 == CLLM_MP_NEED_MORE && have < sb.size) {
            size_t piece = 1 + (size_t)rand() % (iter % 3 == 0 && sb.size < 100000 ? 8 : 4096);
            have = have + piece < sb.size ? have + piece : sb.size;
            if (calls % 16 == 0) {   /* now and then at another address */
                uint8_t *moved = malloc(have);
                memcpy(moved, sb.data, have);
                rc3 = cllm_mp_scan_more(&scan, moved, have, &u3, &n3);
                free(moved);
            } else {
                rc3 = cllm_mp_scan_more(&scan, (const uint8_t *)sb.data, have, &u3, &n3);
            }
            calls++;
            if (rc3 == CLLM_MP_NEED_MORE) {
                CHECK_MSG(have < sb.size, "iter %d: more wanted with all %zu bytes there", iter, have);
                CHECK_MSG(scan.off >= prev_off && scan.off <= have && have - scan.off <= 70000 + 16,
                          "iter %d: at %zu of %zu bytes the scan stands at %zu (before: %zu)", iter, have, sb.size,
                          scan.off, prev_off);
                prev_off = scan.off;
            }
        }
        CHECK_MSG(rc3 == CLLM_MP_COMPLETE && have == sb.size && u3 == sb.size && n3 == nv,
                  "iter %d: in %d pieces: rc %d, %zu of %zu bytes, %zu of %zu nodes", iter, calls, rc3, u3, sb.size,
                  n3, nv);
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

/* The JSON text of a msgpack value (the first in b). */
static char *json_of(const cllm_packbuf *b) {
    size_t used, nv;
    if (cllm_mp_scan((const uint8_t *)b->data, b->size, &used, &nv) != CLLM_MP_COMPLETE) return NULL;
    cllm_value *nodes = malloc(nv * sizeof *nodes);
    cllm_mp_build((const uint8_t *)b->data, nodes);
    cllm_strbuf s = { 0 };
    cllm_value_to_json(&s, nodes);
    free(nodes);
    return s.s;
}

/* A JSON object given as text, as a record (cllm-cat -J): its JSON text back,
 * or NULL with *rc set on an error. */
static char *record_of(const char *text, int64_t id, const char *field, int *rc) {
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    CHECK_MSG(j != NULL, "%s: %s", text, err.text);
    cllm_packbuf b = { 0 };
    *rc = j ? cllm_json_to_record(&b, j, id, field) : -1;
    char *out = *rc ? NULL : json_of(&b);
    cllm_packbuf_free(&b);
    json_decref(j);
    return out;
}

/* JSON quoting (valid UTF-8 kept, anything else U+FFFD per byte, control
 * characters escaped), float round trips, the nesting limit, and the prompt
 * record made from a JSON object. */
static void test_json_edges(void) {
    static const struct { const char *in; size_t n; const char *out; } q[] = {
        { "\xe0\xa0\x80|\xf0\x90\x80\x80|\xf4\x8f\xbf\xbf", 13, "\"\xe0\xa0\x80|\xf0\x90\x80\x80|\xf4\x8f\xbf\xbf\"" },
        { "\xe0\x90\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"" },          /* overlong U+0400 */
        { "\xc1\xbf", 2, "\"\\ufffd\\ufffd\"" },                     /* overlong U+007F */
        { "\xed\xbf\xbf", 3, "\"\\ufffd\\ufffd\\ufffd\"" },          /* surrogate U+DFFF */
        { "\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"" },          /* surrogate U+D800 */
        { "\xee\x80\x80", 3, "\"\xee\x80\x80\"" },                   /* U+E000 */
        { "\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\"" }, /* U+110000 */
        { "\xe2\x82", 2, "\"\\ufffd\\ufffd\"" },                     /* cut short */
        { "\x01\x1f\x7f\b\f\r\t\n", 8, "\"\\u0001\\u001f\x7f\\b\\f\\r\\t\\n\"" },
        { "a\\b\"c", 5, "\"a\\\\b\\\"c\"" },
        { "x\0y", 3, "\"x\\u0000y\"" },
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        cllm_strbuf s = { 0 };
        cllm_json_quote(&s, q[i].in, q[i].n);
        CHECK_STR(s.s, q[i].out);
        cllm_strbuf_free(&s);
    }
    /* doubles: the shortest text that reads back the same value, always with '.' or 'e' */
    cllm_packbuf b = { 0 };
    static const struct { double d; const char *out; } f[] = {
        { 0.1 + 0.2, "0.30000000000000004" }, { 1e300, "1e+300" }, { 2.0, "2.0" }, { -0.5, "-0.5" },
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        cllm_packbuf_reset(&b);
        cllm_pack_double(&b, f[i].d);
        char *t = json_of(&b);
        CHECK_STR(t, f[i].out);
        free(t);
    }
    /* binary as hex: raw msgpack bin8 bytes (five one-byte values make the room) */
    static const uint8_t bin[] = { 0xc4, 0x03, 0x0f, 0xa5, 0xf0 };
    cllm_packbuf_reset(&b);
    for (size_t i = 0; i < sizeof bin; i++) cllm_pack_bool(&b, 0);
    memcpy(b.data, bin, sizeof bin);
    char *t = json_of(&b);
    CHECK_STR(t, "{\"$bin\":\"0fa5f0\"}");
    free(t);
    /* nesting: 32 levels of containers pack and scan, 33 are refused as the reader would */
    char deep[80];
    for (int levels = 32; levels <= 33; levels++) {
        int k = 0;
        for (int i = 0; i < levels; i++) deep[k++] = '[';
        deep[k++] = '1';
        for (int i = 0; i < levels; i++) deep[k++] = ']';
        deep[k] = 0;
        json_error_t err;
        json_t *j = json_loads(deep, 0, &err);
        cllm_packbuf_reset(&b);
        int rc = j ? cllm_json_pack(&b, j) : -1;
        if (levels == 32) {
            CHECK_OK(rc);
            size_t used, nv;
            CHECK(cllm_mp_scan((const uint8_t *)b.data, b.size, &used, &nv) == CLLM_MP_COMPLETE);
        } else {
            CHECK_EQ_INT(rc, CLLM_ELIMIT);
        }
        json_decref(j);
    }
    cllm_packbuf_free(&b);

    /* JSON object -> prompt record */
    int rc;
    char *r = record_of("{\"id\":0,\"text\":\"a\"}", 9, NULL, &rc);      /* id 0 is an id */
    CHECK_STR(r, "{\"type\":\"prompt\",\"id\":0,\"text\":\"a\"}");
    free(r);
    r = record_of("{\"id\":\"x\",\"text\":\"a\"}", 9, NULL, &rc);     /* a non-integer id moves aside */
    CHECK_STR(r, "{\"type\":\"prompt\",\"id\":9,\"source_id\":\"x\",\"text\":\"a\"}");
    free(r);
    r = record_of("{\"id\":-2,\"tokens\":[1]}", 3, NULL, &rc);       /* tokens need no text */
    CHECK_STR(r, "{\"type\":\"prompt\",\"id\":3,\"source_id\":-2,\"tokens\":[1]}");
    free(r);
    r = record_of("{\"question\":\"q\",\"answer\":\"4\"}", 1, NULL, &rc); /* the question is the text */
    CHECK_STR(r, "{\"type\":\"prompt\",\"id\":1,\"question\":\"q\",\"answer\":\"4\",\"text\":\"q\"}");
    free(r);
    r = record_of("{\"prompt\":\"p\",\"question\":\"q\"}", 1, NULL, &rc); /* prompt before question */
    CHECK_STR(r, "{\"type\":\"prompt\",\"id\":1,\"prompt\":\"p\",\"question\":\"q\",\"text\":\"p\"}");
    free(r);
    r = record_of("{\"q\":\"x\"}", 1, "q", &rc);
    CHECK_STR(r, "{\"type\":\"prompt\",\"id\":1,\"q\":\"x\",\"text\":\"x\"}");
    free(r);
    r = record_of("{\"a\":\"x\"}", 1, "q", &rc);
    CHECK(!r && rc == CLLM_ESCHEMA);
    r = record_of("{\"prompt\":3}", 1, NULL, &rc);
    CHECK(!r && rc == CLLM_ESCHEMA);
    r = record_of("{\"type\":\"\",\"a\":1}", 1, NULL, &rc);               /* an empty type */
    CHECK(!r && rc == CLLM_ESCHEMA);
    r = record_of("{\"type\":\"metric\",\"name\":\"n\"}", 1, NULL, &rc);  /* a typed record as is */
    CHECK_STR(r, "{\"type\":\"metric\",\"name\":\"n\"}");
    free(r);
    TEST_OK("json edges");
}

/* ------------------------------------------------ section and record rules */

/* Append one record, given as a JSON object, as msgpack to b. */
static void pack_json(cllm_packbuf *b, const char *text) {
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    CHECK_MSG(j != NULL, "test JSON %s: %s", text, err.text);
    if (!j) return;
    CHECK_OK(cllm_json_pack(b, j));
    json_decref(j);
}

/* Read msgpack records (one checksummed zstd frame) with a record size limit
 * (0: the default). Returns the reader's final code; *n gets the records
 * delivered, why (when not NULL) the interrupted mark and *n_why its count. */
static int read_packed(const cllm_packbuf *b, size_t max_record, int *n, char *why, uint64_t *n_why) {
    membuf m = zstd_wrap(b->data, b->size);
    cllm_reader *r;
    *n = 0;
    if (cllm_reader_open_mem(&r, m.p, m.n, "mem")) { free(m.p); return -100; }
    if (max_record) cllm_reader_set_max_record(r, max_record);
    cllm_record rec;
    int rc;
    while ((rc = cllm_reader_next(r, &rec)) == 0) (*n)++;
    if (why) {
        const char *w = cllm_reader_interrupted(r, n_why);
        snprintf(why, 32, "%s", w ? w : "");
    }
    cllm_reader_close(r);
    free(m.p);
    return rc;
}

/* The final code of a stream made of the given JSON records (NULL-terminated);
 * *n gets the records delivered before it. */
static int read_json_records(int *n, ...) {
    cllm_packbuf b = { 0 };
    va_list ap;
    va_start(ap, n);
    for (const char *s; (s = va_arg(ap, const char *)) != NULL;) pack_json(&b, s);
    va_end(ap);
    int rc = read_packed(&b, 0, n, NULL, NULL);
    cllm_packbuf_free(&b);
    return rc;
}

#define HDR "{\"type\":\"header\",\"format\":\"cllm\",\"version\":1,\"producer\":\"t\"}"
#define MET "{\"type\":\"metric\",\"name\":\"a\",\"value\":1}"
#define END0 "{\"type\":\"end\",\"records\":0}"
#define END1 "{\"type\":\"end\",\"records\":1}"

/* A code and a message fragment, or a clean end with n records. */
#define CHECK_READ(rc, n, want_rc, want_n, frag) \
    CHECK_MSG((rc) == (want_rc) && (n) == (want_n) && ((want_rc) == CLLM_EOF || strstr(cllm_errmsg(), frag)), \
              "code %d after %d records (%s), expected %d after %d records and \"%s\"", rc, n, cllm_errmsg(), \
              want_rc, want_n, frag)

/* cllm-stream(5) section 4: every header is checked, sections are closed by
 * an end record that counts their data records, nothing follows an end but a
 * header, and a header inside an open section means an earlier one was cut. */
static void test_sections(void) {
    int n, rc;
    rc = read_json_records(&n, HDR, MET, END1, HDR, END0, NULL);
    CHECK_READ(rc, n, CLLM_EOF, 5, "");
    rc = read_json_records(&n, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":0,\"producer\":\"t\"}", END0, NULL);
    CHECK_READ(rc, n, CLLM_EUNSUP, 0, "not supported");
    rc = read_json_records(&n, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":-1,\"producer\":\"t\"}", END0, NULL);
    CHECK_READ(rc, n, CLLM_EUNSUP, 0, "not supported");
    rc = read_json_records(&n, HDR, END0, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":2,\"producer\":\"t\"}", END0, NULL);
    CHECK_READ(rc, n, CLLM_EUNSUP, 2, "not supported");
    rc = read_json_records(&n, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":\"1\",\"producer\":\"t\"}", END0, NULL);
    CHECK_READ(rc, n, CLLM_ESCHEMA, 0, "version");
    rc = read_json_records(&n, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":1.0,\"producer\":\"t\"}", END0, NULL);
    CHECK_READ(rc, n, CLLM_ESCHEMA, 0, "version");
    rc = read_json_records(&n, "{\"type\":\"header\",\"format\":\"cllm2\",\"version\":1,\"producer\":\"t\"}", END0, NULL);
    CHECK_READ(rc, n, CLLM_EFORMAT, 0, "format");
    rc = read_json_records(&n, HDR, END0, HDR, MET, "{\"type\":\"header\",\"version\":1,\"producer\":\"t\"}", END1, NULL);
    CHECK_READ(rc, n, CLLM_EFORMAT, 4, "format");
    /* A header while a section is open: the earlier section lost its end. */
    rc = read_json_records(&n, HDR, MET, HDR, MET, END1, NULL);
    CHECK_READ(rc, n, CLLM_ETRUNC, 2, "truncated");
    /* After an end record only a header may come. */
    rc = read_json_records(&n, HDR, END0, MET, END1, NULL);
    CHECK_READ(rc, n, CLLM_EFORMAT, 2, "end record");
    rc = read_json_records(&n, HDR, END0, END0, NULL);
    CHECK_READ(rc, n, CLLM_EFORMAT, 2, "end record");
    /* The end record's count must be the number of data records, neither more nor less. */
    rc = read_json_records(&n, HDR, MET, MET, END1, NULL);
    CHECK_READ(rc, n, CLLM_EFORMAT, 3, "records lost");
    rc = read_json_records(&n, HDR, MET, END0, NULL);
    CHECK_READ(rc, n, CLLM_EFORMAT, 2, "records lost");
    rc = read_json_records(&n, HDR, "{\"type\":\"end\",\"records\":-1}", NULL);
    CHECK_READ(rc, n, CLLM_ESCHEMA, 1, "records count");
    rc = read_json_records(&n, HDR, "{\"type\":\"end\",\"records\":\"0\"}", NULL);
    CHECK_READ(rc, n, CLLM_ESCHEMA, 1, "records count");
    rc = read_json_records(&n, HDR, "{\"type\":\"end\"}", NULL);
    CHECK_READ(rc, n, CLLM_ESCHEMA, 1, "records count");
    /* Decompressed content that is empty holds no header: an error. */
    rc = read_json_records(&n, NULL);
    CHECK_READ(rc, n, CLLM_EFORMAT, 0, "no header");
    TEST_OK("section rules");
}

/* The end record's "interrupted" mark: a string of 1 to 31 bytes, reported. */
static void test_interrupted_mark(void) {
    cllm_packbuf b = { 0 };
    char why[32];
    uint64_t n_why = 99;
    int n;
    pack_json(&b, HDR);
    pack_json(&b, END0);
    CHECK_EQ_INT(read_packed(&b, 0, &n, why, &n_why), CLLM_EOF);
    CHECK(n_why == 0 && why[0] == 0);
    pack_json(&b, HDR);
    pack_json(&b, MET);
    pack_json(&b, "{\"type\":\"end\",\"records\":1,\"interrupted\":\"SIGINT\"}");
    pack_json(&b, HDR);
    pack_json(&b, "{\"type\":\"end\",\"records\":0,\"interrupted\":\"SIGTERM\"}");
    CHECK_EQ_INT(read_packed(&b, 0, &n, why, &n_why), CLLM_EOF);
    CHECK_EQ_INT(n, 7);
    CHECK_EQ_INT(n_why, 2);
    CHECK_STR(why, "SIGTERM");
    cllm_packbuf_reset(&b);
    pack_json(&b, HDR);
    pack_json(&b, "{\"type\":\"end\",\"records\":0,\"interrupted\":\"0123456789012345678901234567890\"}");
    CHECK_EQ_INT(read_packed(&b, 0, &n, why, &n_why), CLLM_EOF);
    CHECK_STR(why, "0123456789012345678901234567890");
    static const char *const bad[] = {
        "{\"type\":\"end\",\"records\":0,\"interrupted\":\"01234567890123456789012345678901\"}", /* 32 bytes */
        "{\"type\":\"end\",\"records\":0,\"interrupted\":\"\"}",
        "{\"type\":\"end\",\"records\":0,\"interrupted\":true}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cllm_packbuf_reset(&b);
        pack_json(&b, HDR);
        pack_json(&b, bad[i]);
        int rc = read_packed(&b, 0, &n, NULL, NULL);
        CHECK_MSG(rc == CLLM_ESCHEMA && n == 1 && strstr(cllm_errmsg(), "interrupted"), "%s: %d %s", bad[i], rc, cllm_errmsg());
    }
    cllm_packbuf_free(&b);
    TEST_OK("interrupted mark");
}

/* The type field: a string of 1 to 63 bytes without a NUL byte. */
static void test_type_field(void) {
    struct { const char *s; size_t n; int ok; } cases[] = {
        { "x", 1, 1 },
        { "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk", 63, 1 },
        { "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl", 64, 0 },
        { "", 0, 0 },
        { "a\0b", 3, 0 },
    };
    cllm_packbuf b = { 0 };
    int n, rc;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cllm_packbuf_reset(&b);
        pack_json(&b, HDR);
        cllm_pack_map(&b, 1);
        cllm_pack_cstr(&b, "type");
        cllm_pack_str(&b, cases[i].s, cases[i].n);
        pack_json(&b, END1);
        rc = read_packed(&b, 0, &n, NULL, NULL);
        if (cases[i].ok) CHECK_MSG(rc == CLLM_EOF && n == 3, "type of %zu bytes: %d %s", cases[i].n, rc, cllm_errmsg());
        else CHECK_MSG(rc == CLLM_ESCHEMA && n == 1 && strstr(cllm_errmsg(), "type"), "type case %zu: %d %s", i, rc, cllm_errmsg());
    }
    /* A type that is not a string. */
    rc = read_json_records(&n, HDR, "{\"type\":5}", END1, NULL);
    CHECK_READ(rc, n, CLLM_ESCHEMA, 1, "type");
    rc = read_json_records(&n, HDR, "{\"type\":[\"metric\"]}", END1, NULL);
    CHECK_READ(rc, n, CLLM_ESCHEMA, 1, "type");
    /* Unknown types are data records like any other (section 6). */
    rc = read_json_records(&n, HDR, "{\"x\":1,\"type\":\"custom\"}", END1, NULL);
    CHECK_READ(rc, n, CLLM_EOF, 3, "");
    cllm_packbuf_free(&b);
    TEST_OK("type field");
}

/* The record size limit: a record of exactly the limit passes, one byte more does not. */
static void test_record_limit(void) {
    char big[400];
    snprintf(big, sizeof big, "{\"type\":\"metric\",\"name\":\"%0300d\",\"value\":1}", 0);
    cllm_packbuf one = { 0 }, b = { 0 };
    pack_json(&one, big);
    size_t size = one.size;
    pack_json(&b, HDR);
    pack_json(&b, big);
    pack_json(&b, END1);
    int n;
    int rc = read_packed(&b, size, &n, NULL, NULL);
    CHECK_MSG(rc == CLLM_EOF && n == 3, "limit %zu: %d %s", size, rc, cllm_errmsg());
    rc = read_packed(&b, size - 1, &n, NULL, NULL);
    CHECK_MSG(rc == CLLM_ELIMIT && n == 1, "limit %zu: %d %s", size - 1, rc, cllm_errmsg());
    cllm_packbuf_free(&one);
    cllm_packbuf_free(&b);
    TEST_OK("record size limit");
}

/* One frame without a content size, made with the given window log. */
static membuf zstd_window(const void *data, size_t n, int window_log) {
    membuf m = { malloc(ZSTD_compressBound(n) + 64), 0 };
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, window_log);
    ZSTD_outBuffer ob = { m.p, ZSTD_compressBound(n) + 64, 0 };
    ZSTD_inBuffer ib = { data, n, 0 };
    CHECK(!ZSTD_isError(ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_continue)));
    CHECK(ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_end) == 0);
    m.n = ob.pos;
    ZSTD_freeCCtx(c);
    /* No single-segment flag, so a window descriptor: exponent windowLog - 10, mantissa 0. */
    CHECK(m.n > 6 && !(m.p[4] & 0x20) && m.p[5] == (uint8_t)((window_log - 10) << 3));
    return m;
}

static int read_window(const membuf *m, size_t max_window) {
    cllm_reader *r;
    if (cllm_reader_open_mem(&r, m->p, m->n, "mem")) return -100;
    int rc = max_window ? cllm_reader_set_max_window(r, max_window) : 0;
    cllm_record rec;
    while (rc == 0) rc = cllm_reader_next(r, &rec);
    cllm_reader_close(r);
    return rc;
}

/* Section 2: windows up to 2^27 bytes are accepted, larger ones refused unless
 * the limit is raised; checksums are checked. */
static void test_zstd_frames(void) {
    cllm_packbuf b = { 0 };
    pack_json(&b, HDR);
    pack_json(&b, MET);
    pack_json(&b, END1);
    membuf m27 = zstd_window(b.data, b.size, 27), m28 = zstd_window(b.data, b.size, 28);
    CHECK_EQ_INT(read_window(&m27, 0), CLLM_EOF);
    int rc = read_window(&m28, 0);
    CHECK_MSG(rc == CLLM_ELIMIT && strstr(cllm_errmsg(), "window"), "window 2^28: %d %s", rc, cllm_errmsg());
    CHECK_EQ_INT(read_window(&m28, (size_t)1 << 28), CLLM_EOF);
    CHECK_EQ_INT(read_window(&m27, (size_t)1 << 26), CLLM_ELIMIT);
    cllm_reader *r;
    CHECK_OK(cllm_reader_open_mem(&r, m27.p, m27.n, "mem"));
    CHECK_EQ_INT(cllm_reader_set_max_window(r, 3u << 20), CLLM_EINVAL);
    CHECK_OK(cllm_reader_set_max_window(r, 1024));
    cllm_reader_close(r);
    /* A wrong content checksum. */
    m27.p[m27.n - 1] ^= 1;
    rc = read_window(&m27, 0);
    CHECK_MSG(rc == CLLM_EFORMAT && strstr(cllm_errmsg(), "checksum mismatch"), "checksum: %d %s", rc, cllm_errmsg());
    free(m27.p);
    free(m28.p);
    cllm_packbuf_free(&b);
    TEST_OK("zstd window and checksum");
}

/* ------------------------------------------------------------- writer */

static membuf fd_bytes(int fd) {
    membuf m = { 0 };
    off_t n = lseek(fd, 0, SEEK_END);
    m.p = malloc((size_t)n + 1);
    m.n = (size_t)pread(fd, m.p, (size_t)n, 0);
    return m;
}

/* The types of a stream's records, joined by spaces; the final code. */
static int stream_types(const membuf *m, char *out, size_t cap) {
    cllm_reader *r;
    out[0] = 0;
    if (cllm_reader_open_mem(&r, m->p, m->n, "mem")) return -100;
    cllm_record rec;
    int rc;
    size_t len = 0;
    while ((rc = cllm_reader_next(r, &rec)) == 0) {
        int64_t k = -1;
        if (!strcmp(rec.type, "end")) cllm_rec_get_i64(rec.root, "records", &k, 1);
        if (k >= 0) len += (size_t)snprintf(out + len, cap - len, "%send(%lld)", len ? " " : "", (long long)k);
        else len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? " " : "", rec.type);
        if (len >= cap) len = cap - 1;
    }
    cllm_reader_close(r);
    return rc;
}

static void test_writer(void) {
    cllm_packbuf h = { 0 }, met = { 0 };
    cllm_header_rec hr = { "test_stream", "", 0, "", 0, NULL };
    CHECK_OK(cllm_rec_header_pack(&h, &hr));
    pack_json(&met, MET);
    char types[256];
    cllm_writer *w;

    /* A record before the header is refused. */
    FILE *f = tmpfile();
    CHECK_OK(cllm_writer_open_fd(&w, fileno(f), "tmp", 1));
    CHECK_EQ_INT(cllm_writer_put(w, met.data, met.size), CLLM_EINVAL);
    /* Each record is flushed as it is written: what is out decodes to every
     * record so far, then reads as truncated. */
    CHECK_OK(cllm_writer_put_header(w, h.data, h.size));
    for (int i = 1; i <= 3; i++) {
        CHECK_OK(cllm_writer_put(w, met.data, met.size));
        membuf m = fd_bytes(fileno(f));
        int final;
        CHECK_EQ_INT(read_all(&m, &final, 0), 1 + i);
        CHECK_EQ_INT(final, CLLM_ETRUNC);
        free(m.p);
    }
    /* A second header closes the open section first, and counts anew. */
    CHECK_OK(cllm_writer_put_header(w, h.data, h.size));
    CHECK_OK(cllm_writer_put(w, met.data, met.size));
    CHECK_OK(cllm_writer_close(w));
    membuf m = fd_bytes(fileno(f));
    CHECK_EQ_INT(stream_types(&m, types, sizeof types), CLLM_EOF);
    CHECK_STR(types, "header metric metric metric end(3) header metric end(1)");
    free(m.p);
    fclose(f);

    /* A producer marks its end record interrupted; readers report it. */
    f = tmpfile();
    CHECK_OK(cllm_writer_open_fd(&w, fileno(f), "tmp", 1));
    CHECK_OK(cllm_writer_put_header(w, h.data, h.size));
    CHECK_OK(cllm_writer_put(w, met.data, met.size));
    cllm_writer_set_interrupted(w, "SIGTERM");
    CHECK_OK(cllm_writer_close(w));
    m = fd_bytes(fileno(f));
    cllm_reader *r;
    CHECK_OK(cllm_reader_open_mem(&r, m.p, m.n, "mem"));
    cllm_record rec;
    int rc, n = 0;
    while ((rc = cllm_reader_next(r, &rec)) == 0) n++;
    CHECK_EQ_INT(rc, CLLM_EOF);
    CHECK_EQ_INT(n, 3);
    uint64_t n_why = 0;
    const char *why = cllm_reader_interrupted(r, &n_why);
    CHECK_STR(why, "SIGTERM");
    CHECK_EQ_INT(n_why, 1);
    cllm_reader_close(r);
    free(m.p);
    fclose(f);

    /* A writer that fails (no signal) ends its frame without an end record:
     * what it wrote decodes, checksum included, and reads as truncated. */
    f = tmpfile();
    CHECK_OK(cllm_writer_open_fd(&w, fileno(f), "tmp", 1));
    CHECK_OK(cllm_writer_put_header(w, h.data, h.size));
    CHECK_OK(cllm_writer_put(w, met.data, met.size));
    cllm_writer_abort(w);
    m = fd_bytes(fileno(f));
    CHECK_EQ_INT(stream_types(&m, types, sizeof types), CLLM_ETRUNC);
    CHECK_STR(types, "header metric");
    CHECK_MSG(strstr(cllm_errmsg(), "no end record"), "abort: %s", cllm_errmsg());
    free(m.p);
    fclose(f);
    cllm_packbuf_free(&h);
    cllm_packbuf_free(&met);
    TEST_OK("writer sections, flushes, interrupted mark and abort");
}

/* A producer that pauses after a record: the reader at the other end of the
 * pipe gets the record before the producer goes on (section 2: "a reader at
 * the other end of a pipe receives records as they are made"), also when the
 * record's bytes come in two reads. The producer waits up to 3 s for the
 * reader to say it has the record, then writes the end record anyway. */
static void test_pipe_delivery(size_t blob, int split) {
    FILE *f = tmpfile();
    cllm_writer *w;
    CHECK_OK(cllm_writer_open_fd(&w, fileno(f), "tmp", 1));
    cllm_packbuf b = { 0 };
    cllm_header_rec hr = { "test_stream", "", 0, "", 0, NULL };
    CHECK_OK(cllm_rec_header_pack(&b, &hr));
    CHECK_OK(cllm_writer_put_header(w, b.data, b.size));
    off_t rec_start = lseek(fileno(f), 0, SEEK_END);
    /* A record of incompressible bytes (stored as a raw zstd block). */
    cllm_packbuf_reset(&b);
    cllm_pack_map(&b, 2);
    cllm_pack_cstr(&b, "type");
    cllm_pack_cstr(&b, "blob");
    cllm_pack_cstr(&b, "data");
    uint8_t bin[5] = { 0xc6, (uint8_t)(blob >> 24), (uint8_t)(blob >> 16), (uint8_t)(blob >> 8), (uint8_t)blob };
    cllm_pack_raw(&b, bin, 5);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < blob; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        uint8_t c = (uint8_t)x;
        cllm_pack_raw(&b, &c, 1);
    }
    CHECK_OK(cllm_writer_put(w, b.data, b.size));
    off_t rec_end = lseek(fileno(f), 0, SEEK_END);
    CHECK_OK(cllm_writer_close(w));
    membuf m = fd_bytes(fileno(f));
    fclose(f);
    size_t rec_size = b.size;
    cllm_packbuf_free(&b);
    size_t cut = split ? (size_t)(rec_start + (rec_end - rec_start) / 2) : (size_t)rec_end;

    int data[2], ack[2];
    CHECK(pipe(data) == 0 && pipe(ack) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(data[0]);
        close(ack[1]);
        int ok = write(data[1], m.p, cut) == (ssize_t)cut;
        usleep(20000);
        ok &= write(data[1], m.p + cut, (size_t)rec_end - cut) == (ssize_t)((size_t)rec_end - cut);
        struct pollfd pf = { ack[0], POLLIN, 0 };
        /* A bound for a reader that holds the record back (it then gets it
         * only after this): 30 s, not the 3 s it was, which a reader merely
         * slow to be scheduled (ASan, a loaded machine) could overrun. */
        int acked = poll(&pf, 1, 30000) == 1;
        ok &= write(data[1], m.p + rec_end, m.n - (size_t)rec_end) == (ssize_t)(m.n - (size_t)rec_end);
        close(data[1]);
        _exit(!ok ? 2 : acked ? 0 : 1);
    }
    close(data[1]);
    close(ack[0]);
    cllm_reader *r;
    CHECK_OK(cllm_reader_open_fd(&r, data[0], "pipe"));
    cllm_record rec;
    CHECK_OK(cllm_reader_next(r, &rec));
    CHECK_OK(cllm_reader_next(r, &rec));
    CHECK(!strcmp(rec.type, "blob") && rec.raw_len == rec_size);
    CHECK(write(ack[1], "k", 1) == 1 || 1); /* the producer may have given up waiting */
    CHECK_OK(cllm_reader_next(r, &rec));
    CHECK_EQ_INT(cllm_reader_next(r, &rec), CLLM_EOF);
    cllm_reader_close(r);
    close(data[0]);
    close(ack[1]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "record of %zu bytes%s: the reader held it back until the producer went on (status %d)",
              blob, split ? " in two reads" : "", status);
    free(m.p);
}

static void test_pipe(void) {
    signal(SIGPIPE, SIG_IGN);
    test_pipe_delivery(3000, 0);
    test_pipe_delivery(3000, 1);      /* a raw block that comes in two reads */
    test_pipe_delivery(200000, 0);    /* a record larger than a zstd block (128 KiB) */
    TEST_OK("a paused producer's records reach the reader");
}

/* ------------------------------------------------------------- schemas */

/* Validate (cllm-cat --check) one record given as JSON. */
static int validate_json(const char *text) {
    cllm_packbuf b = { 0 };
    pack_json(&b, text);
    size_t used, nv;
    int rc = -100;
    if (cllm_mp_scan((const uint8_t *)b.data, b.size, &used, &nv) == CLLM_MP_COMPLETE) {
        cllm_value *nodes = malloc(nv * sizeof *nodes);
        cllm_mp_build((const uint8_t *)b.data, nodes);
        const cllm_value *t = cllm_mp_get(nodes, "type");
        char type[64];
        snprintf(type, sizeof type, "%.*s", t ? (int)t->n : 0, t ? t->v.s : "");
        cllm_record rec = { nodes, type, (const uint8_t *)b.data, b.size, 0 };
        rc = cllm_rec_validate(&rec);
        free(nodes);
    }
    cllm_packbuf_free(&b);
    return rc;
}

/* Section 5: each record type's required fields and field types; section 3:
 * token arrays hold integers 0 <= t < 2^31 in any integer format. */
static void test_schemas(void) {
    static const struct { int ok; const char *json; } cases[] = {
        { 1, "{\"type\":\"prompt\",\"id\":1,\"tokens\":[0,2147483647]}" },
        { 1, "{\"type\":\"prompt\",\"id\":1,\"tokens\":[]}" },
        { 1, "{\"type\":\"prompt\",\"id\":1,\"text\":\"hi\"}" },
        { 0, "{\"type\":\"prompt\",\"id\":1,\"tokens\":[2147483648]}" },
        { 0, "{\"type\":\"prompt\",\"id\":1,\"tokens\":[4294967296]}" },
        { 0, "{\"type\":\"prompt\",\"id\":1,\"tokens\":[-1]}" },
        { 0, "{\"type\":\"prompt\",\"id\":1,\"tokens\":[0.0]}" },
        { 0, "{\"type\":\"prompt\",\"id\":1,\"tokens\":[1.0]}" },
        { 0, "{\"type\":\"prompt\",\"id\":1,\"tokens\":[false]}" },
        { 0, "{\"type\":\"prompt\",\"id\":1,\"tokens\":[null]}" },
        { 0, "{\"type\":\"prompt\",\"id\":1,\"tokens\":[\"1\"]}" },
        { 0, "{\"type\":\"prompt\",\"id\":1,\"tokens\":7}" },
        { 0, "{\"type\":\"prompt\",\"id\":1}" },
        { 0, "{\"type\":\"prompt\",\"tokens\":[1]}" },
        { 0, "{\"type\":\"prompt\",\"id\":\"1\",\"tokens\":[1]}" },
        { 0, "{\"type\":\"prompt\",\"id\":1,\"text\":5}" },
        { 1, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"output\":[2],\"text\":\"t\",\"method\":\"ar\",\"n\":1,\"steps\":2,\"time_s\":1,\"eos\":false}" },
        { 1, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"output\":[2],\"text\":\"t\",\"method\":\"ar\",\"n\":1,\"steps\":2,\"time_s\":0.5,\"eos\":true,\"accepted\":[1],\"states\":[[2]],\"answer\":\"a\"}" },
        { 0, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"output\":[2],\"text\":\"t\",\"method\":\"ar\",\"n\":\"1\",\"steps\":2,\"time_s\":1,\"eos\":false}" },
        { 0, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"output\":[2],\"text\":\"t\",\"method\":\"ar\",\"n\":1,\"steps\":2,\"time_s\":\"1\",\"eos\":false}" },
        { 0, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"output\":[2],\"text\":\"t\",\"method\":\"ar\",\"n\":1,\"steps\":2,\"time_s\":1,\"eos\":0}" },
        { 0, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"output\":[2],\"text\":5,\"method\":\"ar\",\"n\":1,\"steps\":2,\"time_s\":1,\"eos\":false}" },
        { 0, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"output\":[2],\"text\":\"t\",\"method\":\"ar\",\"n\":1,\"steps\":2,\"time_s\":1,\"eos\":false,\"states\":{\"a\":[1]}}" },
        { 0, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"output\":[2],\"text\":\"t\",\"method\":\"ar\",\"n\":1,\"time_s\":1,\"eos\":false}" },
        { 0, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"text\":\"t\",\"method\":\"ar\",\"n\":1,\"steps\":2,\"time_s\":1,\"eos\":false}" },
        { 0, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"output\":[2],\"text\":\"t\",\"method\":\"ar\",\"n\":1,\"steps\":2,\"time_s\":1,\"eos\":false,\"states\":7}" },
        { 0, "{\"type\":\"traj\",\"id\":0,\"chunk\":0,\"prompt\":[1],\"prefix\":[],\"states\":\"x\",\"fixed\":[1,2],\"eos\":false}" },
        { 1, "{\"type\":\"traj\",\"id\":0,\"chunk\":0,\"prompt\":[1],\"prefix\":[],\"states\":[[1,2]],\"fixed\":[1,2],\"eos\":false}" },
        { 0, "{\"type\":\"traj\",\"id\":0,\"chunk\":0,\"prompt\":[1],\"prefix\":[],\"fixed\":[1,2],\"eos\":false}" },
        { 0, "{\"type\":\"traj\",\"id\":0,\"chunk\":0,\"prompt\":[1],\"prefix\":[],\"states\":[[1]],\"fixed\":[1,2],\"eos\":false}" },
        { 0, "{\"type\":\"traj\",\"id\":0,\"chunk\":0,\"prompt\":[1],\"prefix\":[],\"states\":[[1,2]],\"fixed\":[1,2],\"eos\":false,\"labels\":[-2]}" },
        { 1, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":1,\"producer\":\"p\",\"model\":\"\",\"vocab\":0,\"tokenizer\":\"\"}" },
        { 0, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":1}" },
        { 0, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":1,\"producer\":\"p\",\"model\":5}" },
        { 0, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":1,\"producer\":\"p\",\"vocab\":\"5\"}" },
        { 0, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":1,\"producer\":\"p\",\"tokenizer\":5}" },
        { 1, "{\"type\":\"metric\",\"name\":\"a\",\"value\":1,\"step\":0,\"unit\":\"s\",\"meta\":{}}" },
        { 0, "{\"type\":\"metric\",\"value\":1}" },
        { 0, "{\"type\":\"metric\",\"name\":\"a\"}" },
        { 0, "{\"type\":\"metric\",\"name\":\"a\",\"value\":\"1\"}" },
        { 0, "{\"type\":\"metric\",\"name\":\"a\",\"value\":1,\"step\":1.5}" },
        { 0, "{\"type\":\"metric\",\"name\":\"a\",\"value\":1,\"unit\":1}" },
        { 0, "{\"type\":\"header\",\"version\":1,\"producer\":\"p\"}" },
        { 0, "{\"type\":\"header\",\"format\":\"cllm\",\"version\":\"1\",\"producer\":\"p\"}" },
        { 1, "{\"type\":\"end\",\"records\":0,\"interrupted\":\"SIGINT\"}" },
        { 0, "{\"type\":\"end\",\"records\":\"0\"}" },
        { 0, "{\"type\":\"end\"}" },
        { 0, "{\"type\":\"end\",\"records\":0,\"interrupted\":5}" },
        { 1, "{\"type\":\"custom\",\"name\":5}" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = validate_json(cases[i].json);
        if (cases[i].ok) CHECK_MSG(rc == 0, "%s: %d %s", cases[i].json, rc, cllm_errmsg());
        else CHECK_MSG(rc == CLLM_ESCHEMA, "%s: %d, expected CLLM_ESCHEMA", cases[i].json, rc);
    }
    TEST_OK("record schemas");
}

/* Decode the first record of b's msgpack into nodes (caller frees). */
static cllm_value *build(const cllm_packbuf *b, cllm_record *rec, const char *type) {
    size_t used, nv;
    CHECK(cllm_mp_scan((const uint8_t *)b->data, b->size, &used, &nv) == CLLM_MP_COMPLETE);
    cllm_value *nodes = malloc(nv * sizeof *nodes);
    cllm_mp_build((const uint8_t *)b->data, nodes);
    *rec = (cllm_record){ nodes, type, (const uint8_t *)b->data, b->size, 0 };
    return nodes;
}

/* Decoded values and the writers' choices of optional fields. */
static void test_record_fields(void) {
    cllm_packbuf b = { 0 };
    cllm_record rec;
    /* A token in a signed format holding a non-negative value (int 8: 5). */
    cllm_pack_map(&b, 3);
    cllm_pack_cstr(&b, "type"); cllm_pack_cstr(&b, "prompt");
    cllm_pack_cstr(&b, "id"); cllm_pack_int(&b, 1);
    cllm_pack_cstr(&b, "tokens"); cllm_pack_array(&b, 2);
    const uint8_t int8_5[] = { 0xd0, 0x05 }, int32_max[] = { 0xd2, 0x7f, 0xff, 0xff, 0xff };
    cllm_pack_raw(&b, int8_5, sizeof int8_5);
    cllm_pack_raw(&b, int32_max, sizeof int32_max);
    cllm_value *nodes = build(&b, &rec, "prompt");
    cllm_prompt_rec p;
    CHECK_OK(cllm_rec_prompt_get(&rec, &p));
    CHECK(p.has_tokens && p.tokens.n == 2 && p.tokens.ids[0] == 5 && p.tokens.ids[1] == INT32_MAX && !p.text);
    cllm_rec_prompt_free(&p);
    free(nodes);
    /* A prompt with text only has no tokens. */
    cllm_packbuf_reset(&b);
    pack_json(&b, "{\"type\":\"prompt\",\"id\":3,\"text\":\"hi\"}");
    nodes = build(&b, &rec, "prompt");
    CHECK_OK(cllm_rec_prompt_get(&rec, &p));
    CHECK(!p.has_tokens && p.tokens.n == 0 && p.id == 3);
    CHECK_STR(p.text, "hi");
    cllm_rec_prompt_free(&p);
    free(nodes);
    /* A traj record without labels; a gen record without a trace. */
    cllm_packbuf_reset(&b);
    pack_json(&b, "{\"type\":\"traj\",\"id\":0,\"chunk\":0,\"prompt\":[1],\"prefix\":[],\"states\":[],\"fixed\":[1,2],\"eos\":true}");
    nodes = build(&b, &rec, "traj");
    cllm_traj_rec t;
    CHECK_OK(cllm_rec_traj_get(&rec, &t));
    CHECK(!t.has_labels && t.n_states == 0 && t.fixed.n == 2 && t.eos);
    cllm_rec_traj_free(&t);
    free(nodes);
    cllm_packbuf_reset(&b);
    pack_json(&b, "{\"type\":\"gen\",\"id\":0,\"prompt\":[1],\"output\":[2],\"text\":\"t\",\"method\":\"ar\",\"n\":1,\"steps\":2,\"time_s\":1,\"eos\":false}");
    nodes = build(&b, &rec, "gen");
    cllm_gen_rec g;
    CHECK_OK(cllm_rec_gen_get(&rec, &g));
    CHECK(g.accepted.n == 0 && g.n_states == 0 && !g.states && g.time_s == 1.0 && !g.answer);
    cllm_rec_gen_free(&g);
    free(nodes);
    /* A required field missing is an error, not "absent". */
    cllm_packbuf_reset(&b);
    pack_json(&b, "{\"type\":\"gen\",\"prompt\":[1],\"output\":[2],\"text\":\"t\",\"method\":\"ar\",\"n\":1,\"steps\":2,\"time_s\":1,\"eos\":false}");
    nodes = build(&b, &rec, "gen");
    CHECK_EQ_INT(cllm_rec_gen_get(&rec, &g), CLLM_ESCHEMA);
    free(nodes);

    /* Writers: a metric's step 0 is a value (only -1 means absent). */
    cllm_metric_rec me = { "loss", 0.5, 0, NULL };
    CHECK_OK(cllm_rec_metric_pack(&b, &me));
    nodes = build(&b, &rec, "metric");
    int64_t step = -1;
    CHECK_EQ_INT(cllm_rec_get_i64(rec.root, "step", &step, 0), 0);
    CHECK_EQ_INT(step, 0);
    CHECK_EQ_INT(cllm_rec_validate(&rec), 0);
    free(nodes);
    me.step = -1;
    CHECK_OK(cllm_rec_metric_pack(&b, &me));
    nodes = build(&b, &rec, "metric");
    CHECK_EQ_INT(cllm_rec_get_i64(rec.root, "step", &step, 0), 1);
    CHECK(cllm_mp_get(rec.root, "unit") == NULL && rec.root->n == 3);
    free(nodes);
    /* Writers write "accepted" and "states" together, or neither. */
    cllm_gen_rec gw = { 0 };
    gw.method = "jacobi";
    gw.text = "";
    cllm_tokens_push(&gw.accepted, 1);
    CHECK_OK(cllm_rec_gen_pack(&b, &gw));
    nodes = build(&b, &rec, "gen");
    CHECK(cllm_mp_get(rec.root, "accepted") && cllm_mp_get(rec.root, "states"));
    CHECK_OK(cllm_rec_validate(&rec));
    free(nodes);
    cllm_tokens_free(&gw.accepted);
    /* Packing a decoded record again gives its bytes back. */
    cllm_packbuf_reset(&b);
    pack_json(&b, "{\"type\":\"custom\",\"m\":{\"a\":[1,{\"b\":null}],\"c\":-2},\"s\":\"x\"}");
    nodes = build(&b, &rec, "custom");
    cllm_packbuf again = { 0 };
    cllm_pack_value(&again, rec.root);
    CHECK(again.size == b.size && !memcmp(again.data, b.data, b.size));
    cllm_packbuf_free(&again);
    free(nodes);
    cllm_packbuf_free(&b);
    TEST_OK("record fields");
}

int main(void) {
    const char *td = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/cllm_test_stream.XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(tmp_dir)) { perror(tmp_dir); return 1; }
    snprintf(path_a, sizeof path_a, "%s/a.zst", tmp_dir);
    snprintf(path_b, sizeof path_b, "%s/b.zst", tmp_dir);
    test_round_trip();
    test_concat();
    test_truncation();
    test_flips();
    test_hostile();
    test_decoder_vs_msgpack_c();
    test_json();
    test_json_edges();
    test_sections();
    test_interrupted_mark();
    test_type_field();
    test_record_limit();
    test_zstd_frames();
    test_writer();
    test_schemas();
    test_record_fields();
    test_pipe();
    unlink(path_a);
    unlink(path_b);
    rmdir(tmp_dir);
    TEST_END();
}
