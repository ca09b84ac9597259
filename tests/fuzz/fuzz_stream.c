/* fuzz_stream.c: bytes -> record stream reader -> every record -> schema
 * validation, the typed getters of its type, JSON rendering and re-packing.
 *
 * The first byte picks how the rest is used (zstd data mutates badly, so most
 * modes let the fuzzer write the decompressed msgpack directly):
 *   mode 0: the rest is the stream as is (zstd frames, garbage, cut frames);
 *   mode 1: the rest is msgpack, compressed here into one checksummed frame;
 *   mode 2: as 1, after a valid header record (reaches the typed getters);
 *   mode 3: as 2, split into two frames at a point given by the second byte.
 * Bits 2..3 pick the record size limit (default, 1 MiB, 4 KiB, 64 bytes).
 * Properties: the reader never reads out of bounds, every record it delivers
 * is a map with a type, re-packs into msgpack that scans to the same node
 * count, and renders as JSON that jansson parses; and the msgpack bytes
 * scanned step by step (cllm_mp_scan_more, pieces of 1-16 bytes from bits
 * 4..7) end as the one-shot scan does: the same size and node count, the
 * same error, or more wanted.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <zstd.h>

#include "err.h"
#include "fuzz.h"
#include "json.h"
#include "records.h"
#include "stream.h"

static cllm_packbuf header;

static void init_header(void) {
    if (header.size) return;
    char *argv[] = { "fuzz" };
    cllm_header_rec h = { .producer = "fuzz", .model = "m", .vocab = 100, .tokenizer = "", .argc = 1, .argv = argv };
    if (cllm_rec_header_pack(&header, &h)) abort();
}

/* One zstd frame with a checksum, appended to *out. */
static int compress_frame(uint8_t **out, size_t *out_len, const uint8_t *src, size_t n) {
    size_t bound = ZSTD_compressBound(n);
    uint8_t *p = realloc(*out, *out_len + bound);
    if (!p) return -1;
    *out = p;
    ZSTD_CCtx *c = ZSTD_createCCtx();
    if (!c) return -1;
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1);
    size_t k = ZSTD_compress2(c, p + *out_len, bound, src, n);
    ZSTD_freeCCtx(c);
    if (ZSTD_isError(k)) return -1;
    *out_len += k;
    return 0;
}

/* True when some map inside v has a map or array as a key. */
static int container_key(const cllm_value *v) {
    if (v->type == CLLM_MP_ARRAY) {
        for (uint32_t i = 0; i < v->n; i++) if (container_key(&v->v.items[i])) return 1;
    } else if (v->type == CLLM_MP_MAP) {
        for (uint32_t i = 0; i < 2 * v->n; i++) {
            const cllm_value *x = &v->v.items[i];
            if (i % 2 == 0 && (x->type == CLLM_MP_MAP || x->type == CLLM_MP_ARRAY)) return 1;
            if (container_key(x)) return 1;
        }
    }
    return 0;
}

static void check_record(const cllm_record *rec) {
    const cllm_value *root = rec->root;
    if (!root || root->type != CLLM_MP_MAP) fuzz_fail("record %llu is not a map", (unsigned long long)rec->index);
    if (!rec->type || !*rec->type) fuzz_fail("record without type");
    cllm_rec_validate(rec);

    if (!strcmp(rec->type, "prompt")) {
        cllm_prompt_rec p;
        memset(&p, 0, sizeof p);
        if (!cllm_rec_prompt_get(rec, &p)) {
            for (size_t i = 0; i < p.tokens.n; i++)
                if (p.tokens.ids[i] < 0) fuzz_fail("prompt token %zu is negative", i);
            cllm_rec_prompt_free(&p);
        }
    } else if (!strcmp(rec->type, "gen")) {
        cllm_gen_rec g;
        memset(&g, 0, sizeof g);
        if (!cllm_rec_gen_get(rec, &g)) cllm_rec_gen_free(&g);
    } else if (!strcmp(rec->type, "traj")) {
        cllm_traj_rec t;
        memset(&t, 0, sizeof t);
        if (!cllm_rec_traj_get(rec, &t)) {
            for (size_t s = 0; s < t.n_states; s++)
                for (size_t i = 0; i < t.states[s].n; i++)
                    if (t.states[s].ids[i] < 0) fuzz_fail("traj state token negative");
            cllm_rec_traj_free(&t);
        }
    }
    /* Field getters on any record, with the field names the schemas use. */
    static const char *const fields[] = { "id", "tokens", "text", "value", "name", "step", "eos", "records", "states" };
    for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) {
        cllm_tokens t = {0};
        cllm_rec_get_tokens(root, fields[f], &t, 0);
        cllm_tokens_free(&t);  /* the buffer is the caller's also on error */
        int64_t i;
        double d;
        int b;
        char *s = NULL;
        cllm_rec_get_i64(root, fields[f], &i, 0);
        cllm_rec_get_double(root, fields[f], &d, 0);
        cllm_rec_get_bool(root, fields[f], &b, 0);
        if (!cllm_rec_get_str(root, fields[f], &s, 0)) free(s);
    }

    /* JSON rendering (cllm-cat -j) must give text jansson parses. Skipped
     * for records with a map or array as a map key: their rendering grows
     * exponentially with the nesting (finding F3 in docs/RELIABILITY.md;
     * tests/fuzz/corpus/stream/regress-key-nesting), which would stall the
     * fuzzer on a known bug. Remove the skip once that is fixed. */
    cllm_strbuf js = {0};
    if (!container_key(root)) cllm_value_to_json(&js, root);
    if (!js.error && js.s) {
        json_error_t err;
        /* jansson cannot hold a NUL inside an object key (valid JSON all the
         * same): such a record renders fine but does not read back (finding
         * F1 in docs/RELIABILITY.md). */
        json_t *v = json_loadb(js.s, js.len, JSON_ALLOW_NUL, &err);
        if (!v && !strstr(err.text, "NUL byte in object key") && !strstr(err.text, "too big integer")) fuzz_fail("record %llu renders as invalid JSON (%s): %.200s", (unsigned long long)rec->index, err.text, js.s);
        json_decref(v);
    }
    cllm_strbuf_free(&js);

    /* Re-pack (cllm-cat field copies) and rescan: same shape. */
    cllm_packbuf pb = {0};
    cllm_pack_value(&pb, root);
    if (!pb.error) {
        size_t used = 0, nv = 0, nv0 = 0, used0 = 0;
        if (cllm_mp_scan(rec->raw, rec->raw_len, &used0, &nv0) != CLLM_MP_COMPLETE || used0 != rec->raw_len)
            fuzz_fail("record %llu: raw bytes do not rescan", (unsigned long long)rec->index);
        int rc = cllm_mp_scan((const uint8_t *)pb.data, pb.size, &used, &nv);
        if (rc != CLLM_MP_COMPLETE || used != pb.size || nv != nv0)
            fuzz_fail("record %llu: re-packed value scans differently (rc %d, %zu/%zu bytes, %zu/%zu nodes)",
                      (unsigned long long)rec->index, rc, used, pb.size, nv, nv0);
    }
    cllm_packbuf_free(&pb);
}

/* The step-wise scan of p[0..n) in pieces of step bytes against the one-shot scan. */
static void check_piecewise(const uint8_t *p, size_t n, size_t step) {
    size_t used = 0, nv = 0, used2 = 0, nv2 = 0;
    int whole = cllm_mp_scan(p, n, &used, &nv);
    cllm_mp_scanner s;
    cllm_mp_scanner_init(&s);
    int rc = CLLM_MP_NEED_MORE;
    size_t have = 0;
    do {
        have = n - have > step ? have + step : n;
        rc = cllm_mp_scan_more(&s, p, have, &used2, &nv2);
    } while (rc == CLLM_MP_NEED_MORE && have < n);
    if (rc != whole || (rc == CLLM_MP_COMPLETE && (used2 != used || nv2 != nv)))
        fuzz_fail("scan in pieces of %zu: rc %d, %zu bytes, %zu nodes; in one go: rc %d, %zu bytes, %zu nodes", step, rc,
                  used2, nv2, whole, used, nv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    init_header();
    int mode = data[0] & 3;
    static const size_t limits[4] = { CLLM_STREAM_MAX_RECORD_DEFAULT, 1u << 20, 4096, 64 };
    size_t limit = limits[(data[0] >> 2) & 3];
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    if (mode != 0) check_piecewise(body, n, 1 + (data[0] >> 4));

    uint8_t *buf = NULL;
    size_t len = 0;
    const uint8_t *in = body;
    size_t in_len = n;
    if (mode != 0) {
        size_t split = n;
        if (mode == 3 && n > 0) { split = body[0] % n; body++; n--; if (split > n) split = n; }
        uint8_t *plain = malloc(header.size + n + 1);
        if (!plain) return 0;
        size_t pl = 0;
        if (mode >= 2) { memcpy(plain, header.data, header.size); pl = header.size; }
        memcpy(plain + pl, body, n);
        size_t cut = mode == 3 ? pl + split : pl + n;
        if (compress_frame(&buf, &len, plain, cut) ||
            (mode == 3 && compress_frame(&buf, &len, plain + cut, pl + n - cut))) {
            free(plain);
            free(buf);
            return 0;
        }
        free(plain);
        in = buf;
        in_len = len;
    }

    cllm_reader *r;
    if (cllm_reader_open_mem(&r, in, in_len, "fuzz")) { free(buf); return 0; }
    cllm_reader_set_max_record(r, limit);
    cllm_record rec;
    int rc;
    uint64_t seen = 0;
    while ((rc = cllm_reader_next(r, &rec)) == 0) {
        if (rec.index != seen++) fuzz_fail("record index %llu, expected %llu", (unsigned long long)rec.index,
                                           (unsigned long long)(seen - 1));
        if (rec.raw_len > limit) fuzz_fail("record of %zu bytes above the limit %zu", rec.raw_len, limit);
        if (!cllm_reader_header(r)) fuzz_fail("a record was delivered with no header");
        check_record(&rec);
    }
    if (rc != CLLM_EOF && !*cllm_errmsg()) fuzz_fail("reader error %d without a message", rc);
    /* Errors are sticky. */
    if (rc != CLLM_EOF && cllm_reader_next(r, &rec) != rc) fuzz_fail("reader error not sticky");
    cllm_reader_close(r);
    free(buf);
    return 0;
}
