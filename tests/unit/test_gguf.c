/* test_gguf.c: the GGUF reader and writer.
 *
 *  - dequantized tensors of the real SmolLM2 GGUF (Q8_0, Q4_1, F32) equal the
 *    `gguf` package's own dequantization bit for bit (tests/golden/gguf_dequant.txt,
 *    written by tests/golden/gguf_dequant.py: a checksum over every value's bits
 *    and the first 512 values);
 *  - hostile files crafted in memory (truncated at 30 offsets, wrong magic,
 *    tensor beyond end of file, 64-bit overflow, huge string length, unknown
 *    type, n_dims 5, bad alignment, overlap, ...) each fail with a negative code
 *    and a message naming the problem;
 *  - the writer round-trips every metadata value type and F32/F16/BF16 tensors;
 *  - f32 -> f16 -> f32 is exact for every representable half.
 */
#include <inttypes.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "gguf.h"

static uint64_t checksum(const float *a, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &a[i], 4);
        s += (uint64_t)b * ((uint64_t)i * 2654435761u + 1);
    }
    return s;
}

/* ---- golden dequantization ---- */

static void test_golden(void) {
    const char *path = test_model_path();
    FILE *f = fopen("tests/golden/gguf_dequant.txt", "r");
    CHECK(f != NULL);
    if (!f) return;
    cllm_gguf *g = NULL;
    CHECK_OK(cllm_gguf_open(&g, path));
    if (!g) { fclose(f); return; }
    CHECK_EQ_INT(cllm_gguf_version(g), 3);
    CHECK_EQ_INT(cllm_gguf_n_tensors(g), 272);
    char line[512], kind[16], name[128];
    size_t numel;
    uint64_t want_sum;
    double fsum;
    int n_checked = 0, types_seen[64] = {0};
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        if (sscanf(line, "%15s %127s %zu %" SCNx64 " %lf", kind, name, &numel, &want_sum, &fsum) != 5) continue;
        uint32_t first[512];
        for (int i = 0; i < 512; i++) CHECK(fscanf(f, "%" SCNx32, &first[i]) == 1);
        if (strcmp(kind, "gguf")) continue;   /* "hf" lines are test_model's */
        const cllm_gguf_tensor *t = cllm_gguf_find_tensor(g, name);
        CHECK_MSG(t != NULL, "%s", name);
        if (!t) continue;
        float *v = malloc(numel * sizeof(float));
        CHECK_OK(cllm_gguf_read_f32(g, t, v, numel));
        CHECK_MSG(checksum(v, numel) == want_sum, "%s: checksum %016" PRIx64 " want %016" PRIx64, name,
                  checksum(v, numel), want_sum);
        int bad = 0;
        for (int i = 0; i < 512 && (size_t)i < numel; i++) {
            uint32_t b;
            memcpy(&b, &v[i], 4);
            if (b != first[i] && bad++ < 3)
                fprintf(stderr, "%s[%d]: %08" PRIx32 " want %08" PRIx32 "\n", name, i, b, first[i]);
        }
        CHECK_MSG(bad == 0, "%s: %d of the first 512 values differ", name, bad);
        double s = 0;
        for (size_t i = 0; i < numel; i++) s += v[i];
        CHECK_MSG(fabs(s - fsum) <= 1e-6 * (fabs(fsum) + 1), "%s: sum %.17g want %.17g", name, s, fsum);
        types_seen[t->type & 63] = 1;
        free(v);
        n_checked++;
    }
    fclose(f);
    CHECK(n_checked >= 5);
    CHECK(types_seen[GGML_T_Q8_0] && types_seen[GGML_T_Q4_1] && types_seen[GGML_T_F32]);
    /* metadata through the typed getters */
    int64_t v;
    double d;
    cllm_gguf_str s;
    const cllm_gguf_str *toks;
    const int32_t *tt;
    size_t n;
    CHECK_OK(cllm_gguf_get_int(g, "llama.block_count", &v));
    CHECK_EQ_INT(v, 30);
    CHECK_OK(cllm_gguf_get_float(g, "llama.rope.freq_base", &d));
    CHECK(d == 100000.0);
    CHECK_OK(cllm_gguf_get_str(g, "general.architecture", &s));
    CHECK_STR(s.s, "llama");
    CHECK_OK(cllm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", &toks, &n));
    CHECK_EQ_INT(n, 49152);
    CHECK_OK(cllm_gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &tt, &n));
    CHECK_EQ_INT(n, 49152);
    CHECK(cllm_gguf_get_str(g, "llama.block_count", &s) == CLLM_EFORMAT);
    CHECK(strstr(cllm_errmsg(), "llama.block_count") && strstr(cllm_errmsg(), "u32"));
    CHECK(cllm_gguf_get_int(g, "no.such.key", &v) == CLLM_EFORMAT);
    CHECK(strstr(cllm_errmsg(), "missing metadata key no.such.key") != NULL);
    cllm_gguf_close(g);
    TEST_OK("gguf golden dequantization (Q8_0, Q4_1, F32 bit-equal to gguf-py)");
}

/* ---- crafted files ---- */

typedef struct { unsigned char b[4096]; size_t n; } buf;
static void put(buf *B, const void *p, size_t n) { memcpy(B->b + B->n, p, n); B->n += n; }
static void u32(buf *B, uint32_t v) { put(B, &v, 4); }
static void u64(buf *B, uint64_t v) { put(B, &v, 8); }
static void str(buf *B, const char *s) { u64(B, strlen(s)); put(B, s, strlen(s)); }
static void pad(buf *B, size_t a) { while (B->n % a) B->b[B->n++] = 0; }

/* Field positions in the base file, for mutations. */
static struct {
    size_t version, n_t, n_kv, arch_len, align_type, align_val, arr_n, a_ndims, a_ne0, a_ne1, a_type, b_type, b_off, data;
} at;

/* A valid file: 3 keys (architecture, alignment 32, an i32 array), tensors
 * a: F32 [32, 2] at 0 and b: Q8_0 [32] at 256. */
static void base(buf *B) {
    B->n = 0;
    put(B, "GGUF", 4);
    at.version = B->n; u32(B, 3);
    at.n_t = B->n; u64(B, 2);
    at.n_kv = B->n; u64(B, 3);
    str(B, "general.architecture"); u32(B, GGUF_T_STR); at.arch_len = B->n; str(B, "llama");
    str(B, "general.alignment"); at.align_type = B->n; u32(B, GGUF_T_U32); at.align_val = B->n; u32(B, 32);
    str(B, "test.array"); u32(B, GGUF_T_ARR); u32(B, GGUF_T_I32); at.arr_n = B->n; u64(B, 3);
    u32(B, 7); u32(B, 8); u32(B, 9);
    str(B, "a"); at.a_ndims = B->n; u32(B, 2); at.a_ne0 = B->n; u64(B, 32); at.a_ne1 = B->n; u64(B, 2);
    at.a_type = B->n; u32(B, GGML_T_F32); u64(B, 0);
    str(B, "b"); u32(B, 1); u64(B, 32); at.b_type = B->n; u32(B, GGML_T_Q8_0); at.b_off = B->n; u64(B, 256);
    pad(B, 32);
    at.data = B->n;
    for (int i = 0; i < 64; i++) { float x = (float)i; put(B, &x, 4); }
    uint16_t d = 0x3c00; /* 1.0 */
    put(B, &d, 2);
    for (int i = 0; i < 32; i++) B->b[B->n++] = (unsigned char)(i - 16);
}

static const char *tmpfile_path(void) {
    static char p[64];
    snprintf(p, sizeof p, "/tmp/cllm-test-gguf-%d.gguf", (int)getpid());
    return p;
}

static int write_file(const buf *B, size_t n) {
    FILE *f = fopen(tmpfile_path(), "wb");
    if (!f) return -1;
    size_t w = fwrite(B->b, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

/* Open B (first n bytes); return the code. */
static int try_open(const buf *B, size_t n) {
    CHECK(write_file(B, n) == 0);
    cllm_gguf *g = NULL;
    int rc = cllm_gguf_open(&g, tmpfile_path());
    if (!rc) {
        /* A file that opens must also read its tensors without trouble. */
        for (int i = 0; i < cllm_gguf_n_tensors(g); i++) {
            const cllm_gguf_tensor *t = cllm_gguf_tensor_at(g, i);
            size_t ne = (size_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
            float *v = malloc(ne * sizeof(float));
            rc = cllm_gguf_read_f32(g, t, v, ne);
            free(v);
            if (rc) break;
        }
        cllm_gguf_close(g);
    }
    return rc;
}

#define EXPECT_FAIL(B, frag) do { int rc__ = try_open(B, (B)->n); \
    CHECK_MSG(rc__ < 0 && strstr(cllm_errmsg(), frag), "expected failure with \"%s\", got %d \"%s\"", frag, rc__, cllm_errmsg()); } while (0)

static void patch32(buf *B, size_t off, uint32_t v) { memcpy(B->b + off, &v, 4); }
static void patch64(buf *B, size_t off, uint64_t v) { memcpy(B->b + off, &v, 8); }

static void test_bad_files(void) {
    buf B;
    base(&B);
    CHECK_OK(try_open(&B, B.n));
    {   /* the base file reads back what was put in */
        cllm_gguf *g = NULL;
        CHECK_OK(cllm_gguf_open(&g, tmpfile_path()));
        if (g) {
            const int32_t *a;
            size_t n;
            CHECK_OK(cllm_gguf_get_arr_i32(g, "test.array", &a, &n));
            CHECK(n == 3 && a[0] == 7 && a[2] == 9);
            float v[64], q[32];
            CHECK_OK(cllm_gguf_read_f32(g, cllm_gguf_find_tensor(g, "a"), v, 64));
            CHECK(v[0] == 0 && v[63] == 63);
            CHECK_OK(cllm_gguf_read_f32(g, cllm_gguf_find_tensor(g, "b"), q, 32));
            CHECK(q[0] == -16 && q[31] == 15);
            CHECK(cllm_gguf_read_f32(g, cllm_gguf_find_tensor(g, "b"), q, 31) == CLLM_EINVAL);
            cllm_gguf_close(g);
        }
    }
    /* truncated at 30 offsets spread over the whole file: never opens */
    int bad_trunc = 0;
    for (int k = 0; k < 30; k++) {
        size_t n = (size_t)k * (B.n - 1) / 29;
        if (k == 29) n = B.n - 1;
        int rc = try_open(&B, n);
        if (rc >= 0) { bad_trunc++; fprintf(stderr, "truncated at %zu of %zu opened\n", n, B.n); }
        else if (!strstr(cllm_errmsg(), "truncated") && !strstr(cllm_errmsg(), "past end") &&
                 !strstr(cllm_errmsg(), "too short") && !strstr(cllm_errmsg(), "impossible") &&
                 !strstr(cllm_errmsg(), "bytes left")) {
            bad_trunc++;
            fprintf(stderr, "truncated at %zu: unclear message \"%s\"\n", n, cllm_errmsg());
        }
    }
    CHECK(bad_trunc == 0);

    base(&B); memcpy(B.b, "FUGG", 4); EXPECT_FAIL(&B, "not a GGUF file (magic \"FUGG\"");
    base(&B); patch32(&B, at.version, 1); EXPECT_FAIL(&B, "unsupported GGUF version 1");
    base(&B); patch32(&B, at.version, 0x03000000); EXPECT_FAIL(&B, "byte-swapped");
    base(&B); patch64(&B, at.n_kv, UINT64_MAX); EXPECT_FAIL(&B, "metadata count 18446744073709551615 is impossible");
    base(&B); patch64(&B, at.n_t, UINT64_MAX / 2); EXPECT_FAIL(&B, "tensor count");
    base(&B); patch64(&B, at.arch_len, 1ull << 63); EXPECT_FAIL(&B, "string length 9223372036854775808 runs past end of file");
    base(&B); patch64(&B, at.arr_n, 1ull << 63); EXPECT_FAIL(&B, "array of 9223372036854775808 i32 elements");
    base(&B); patch32(&B, at.a_type, 99); EXPECT_FAIL(&B, "tensor a has unknown type 99");
    base(&B); patch32(&B, at.a_ndims, 5); EXPECT_FAIL(&B, "tensor a has n_dims 5");
    base(&B); patch32(&B, at.a_ndims, 0xFFFFFFFFu); EXPECT_FAIL(&B, "n_dims 4294967295");
    base(&B); patch64(&B, at.a_ne0, 1ull << 62); patch64(&B, at.a_ne1, 1ull << 62); EXPECT_FAIL(&B, "element count overflows 64 bits");
    base(&B); patch64(&B, at.a_ne0, (1ull << 62) - 1); patch64(&B, at.a_ne1, 1); EXPECT_FAIL(&B, "byte size overflows");
    base(&B); patch64(&B, at.a_ne1, 0); EXPECT_FAIL(&B, "dimension 1 = 0");
    base(&B); patch64(&B, at.a_ne1, 1ull << 63); EXPECT_FAIL(&B, "dimension 1 = 9223372036854775808");
    base(&B); patch64(&B, at.a_ne1, 1000); EXPECT_FAIL(&B, "tensor a (offset 0, 128000 bytes) lies beyond end of file (truncated download?)");
    base(&B); patch64(&B, at.b_off, 1ull << 40); EXPECT_FAIL(&B, "tensor b (offset 1099511627776, 34 bytes) lies beyond end of file");
    base(&B); patch64(&B, at.b_off, UINT64_MAX - 31); EXPECT_FAIL(&B, "lies beyond end of file");
    base(&B); patch64(&B, at.b_off, 260); EXPECT_FAIL(&B, "offset 260 is not a multiple of the alignment 32");
    base(&B); patch64(&B, at.b_off, 224); EXPECT_FAIL(&B, "tensors a and b overlap");
    base(&B); patch32(&B, at.align_val, 0); EXPECT_FAIL(&B, "general.alignment 0 is not a power of two");
    base(&B); patch32(&B, at.align_val, 13); EXPECT_FAIL(&B, "general.alignment 13 is not a power of two");
    base(&B); patch32(&B, at.align_val, 0x80000000u); EXPECT_FAIL(&B, "general.alignment 2147483648");
    base(&B); patch32(&B, at.align_type, GGUF_T_I32); EXPECT_FAIL(&B, "general.alignment has type i32 (must be u32)");
    base(&B); patch32(&B, at.align_type, 13); EXPECT_FAIL(&B, "unknown value type 13");
    base(&B); patch32(&B, at.b_type, GGML_T_Q8_0 + 100); EXPECT_FAIL(&B, "tensor b has unknown type 108");
    base(&B); patch32(&B, at.b_type, 14); EXPECT_FAIL(&B, "row length 32 is not a multiple of the Q6_K block size 256");
    /* a valid but unsupported tensor type opens, and fails on read */
    base(&B); patch32(&B, at.b_type, 20); /* IQ4_NL: 18 bytes per 32 */
    EXPECT_FAIL(&B, "IQ4_NL, which this reader cannot dequantize");
    /* array of arrays, duplicate keys, empty key */
    base(&B); memcpy(B.b + at.arr_n - 4, &(uint32_t){GGUF_T_ARR}, 4); EXPECT_FAIL(&B, "arrays of arrays are not supported");
    {
        buf C = {{0}, 0};
        put(&C, "GGUF", 4); u32(&C, 3); u64(&C, 0); u64(&C, 2);
        str(&C, "k"); u32(&C, GGUF_T_U8); C.b[C.n++] = 1;
        str(&C, "k"); u32(&C, GGUF_T_U8); C.b[C.n++] = 2;
        EXPECT_FAIL(&C, "duplicate metadata key k");
        C.n = 0;
        put(&C, "GGUF", 4); u32(&C, 3); u64(&C, 0); u64(&C, 1);
        str(&C, ""); u32(&C, GGUF_T_U8); C.b[C.n++] = 1;
        EXPECT_FAIL(&C, "metadata key #0 is empty");
        C.n = 0;
        put(&C, "GGUF", 4); u32(&C, 3); u64(&C, 0); u64(&C, 1);
        str(&C, "b\xc3\xa9"); u32(&C, GGUF_T_U8); C.b[C.n++] = 1;
        EXPECT_FAIL(&C, "non-ASCII byte 0xc3");
        C.n = 0;
        put(&C, "GGUF", 4); u32(&C, 3); u64(&C, 0); u64(&C, 1);
        str(&C, "k"); u32(&C, GGUF_T_BOOL); C.b[C.n++] = 2;
        EXPECT_FAIL(&C, "bool value 2");
        /* a 64-byte tensor name */
        C.n = 0;
        put(&C, "GGUF", 4); u32(&C, 3); u64(&C, 1); u64(&C, 0);
        str(&C, "0123456789012345678901234567890123456789012345678901234567890123");
        u32(&C, 1); u64(&C, 1); u32(&C, 0); u64(&C, 0);
        EXPECT_FAIL(&C, "has a bad name (length 64");
        /* a file with no tensors and no padding is fine */
        C.n = 0;
        put(&C, "GGUF", 4); u32(&C, 2); u64(&C, 0); u64(&C, 1);
        str(&C, "k"); u32(&C, GGUF_T_STR); u64(&C, 3); put(&C, "a\0b", 3);
        CHECK_OK(try_open(&C, C.n));
        cllm_gguf *g = NULL;
        CHECK_OK(cllm_gguf_open(&g, tmpfile_path()));
        cllm_gguf_str s;
        if (g) { CHECK_OK(cllm_gguf_get_str(g, "k", &s)); CHECK(s.len == 3 && s.s[2] == 'b'); cllm_gguf_close(g); }
    }
    /* not a regular file */
    char fifo[80];
    snprintf(fifo, sizeof fifo, "/tmp/cllm-test-fifo-%d", (int)getpid());
    if (mkfifo(fifo, 0600) == 0) {
        cllm_gguf *g = NULL;
        int rc = cllm_gguf_open(&g, fifo);
        CHECK(rc < 0 && strstr(cllm_errmsg(), "not seekable"));
        unlink(fifo);
    }
    cllm_gguf *g = NULL;
    CHECK(cllm_gguf_open(&g, "/nonexistent/x.gguf") == CLLM_EIO);
    CHECK(strstr(cllm_errmsg(), "/nonexistent/x.gguf: No such file") != NULL);
    unlink(tmpfile_path());
    TEST_OK("gguf hostile files");
}

/* ---- writer ---- */

static void test_writer(void) {
    const char *path = tmpfile_path();
    cllm_gguf_writer *w = NULL;
    CHECK_OK(cllm_gguf_writer_new(&w));
    if (!w) return;
    const char *strs[] = {"x", "", "\xc4\xa0the"};
    int32_t ia[] = {1, -2, 3};
    float fa[] = {0.5f, -1.25f};
    CHECK_OK(cllm_gguf_writer_set_str(w, "general.architecture", "llama", 5));
    CHECK_OK(cllm_gguf_writer_set_u32(w, "u", 7));
    CHECK_OK(cllm_gguf_writer_set_i32(w, "i", -7));
    CHECK_OK(cllm_gguf_writer_set_f32(w, "f", 1e-5f));
    CHECK_OK(cllm_gguf_writer_set_bool(w, "b", 1));
    CHECK_OK(cllm_gguf_writer_set_arr_str(w, "as", strs, NULL, 3));
    CHECK_OK(cllm_gguf_writer_set_arr_i32(w, "ai", ia, 3));
    CHECK_OK(cllm_gguf_writer_set_arr_f32(w, "af", fa, 2));
    CHECK_OK(cllm_gguf_writer_set_u32(w, "u", 8));   /* replaces */
    CHECK_OK(cllm_gguf_writer_set_u32(w, "gone", 1));
    CHECK_OK(cllm_gguf_writer_remove(w, "gone"));
    float t1[96], t2[64];
    for (int i = 0; i < 96; i++) t1[i] = (float)i * 0.37f - 3.0f;
    for (int i = 0; i < 64; i++) t2[i] = 1.0f / (float)(i + 1);
    int64_t ne1[2] = {32, 3}, ne2[1] = {64};
    CHECK_OK(cllm_gguf_writer_add_tensor(w, "t.f32", 2, ne1, GGML_T_F32, t1));
    CHECK_OK(cllm_gguf_writer_add_tensor(w, "t.f16", 1, ne2, GGML_T_F16, t2));
    CHECK_OK(cllm_gguf_writer_add_tensor(w, "t.bf16", 1, ne2, GGML_T_BF16, t2));
    CHECK(cllm_gguf_writer_add_tensor(w, "t.f32", 1, ne2, GGML_T_F32, t2) == CLLM_EINVAL);
    CHECK(cllm_gguf_writer_add_tensor(w, "q", 1, ne2, GGML_T_Q8_0, t2) == CLLM_EINVAL);
    CHECK_OK(cllm_gguf_writer_write(w, path));
    cllm_gguf_writer_free(w);

    cllm_gguf *g = NULL;
    CHECK_OK(cllm_gguf_open(&g, path));
    if (!g) return;
    int64_t v;
    double d;
    int b;
    cllm_gguf_str s;
    const cllm_gguf_str *as;
    const int32_t *ai;
    const float *af;
    size_t n;
    CHECK_EQ_INT(cllm_gguf_n_kv(g), 8);
    CHECK(cllm_gguf_find(g, "gone") < 0);
    CHECK_OK(cllm_gguf_get_int(g, "u", &v)); CHECK_EQ_INT(v, 8);
    CHECK_EQ_INT(cllm_gguf_kv_type(g, cllm_gguf_find(g, "u")), GGUF_T_U32);
    CHECK_OK(cllm_gguf_get_int(g, "i", &v)); CHECK_EQ_INT(v, -7);
    CHECK_OK(cllm_gguf_get_float(g, "f", &d)); CHECK((float)d == 1e-5f);
    CHECK_OK(cllm_gguf_get_bool(g, "b", &b)); CHECK_EQ_INT(b, 1);
    CHECK_OK(cllm_gguf_get_str(g, "general.architecture", &s)); CHECK_STR(s.s, "llama");
    CHECK_OK(cllm_gguf_get_arr_str(g, "as", &as, &n));
    CHECK(n == 3 && !strcmp(as[0].s, "x") && as[1].len == 0 && !strcmp(as[2].s, "\xc4\xa0the"));
    CHECK_OK(cllm_gguf_get_arr_i32(g, "ai", &ai, &n)); CHECK(n == 3 && ai[1] == -2);
    CHECK_OK(cllm_gguf_get_arr_f32(g, "af", &af, &n)); CHECK(n == 2 && af[1] == -1.25f);
    float r1[96], r2[64], r3[64];
    CHECK_OK(cllm_gguf_read_f32(g, cllm_gguf_find_tensor(g, "t.f32"), r1, 96));
    CHECK(!memcmp(r1, t1, sizeof t1));
    CHECK_OK(cllm_gguf_read_f32(g, cllm_gguf_find_tensor(g, "t.f16"), r2, 64));
    CHECK_OK(cllm_gguf_read_f32(g, cllm_gguf_find_tensor(g, "t.bf16"), r3, 64));
    int ok16 = 1, okb = 1;
    for (int i = 0; i < 64; i++) {
        if (fabsf(r2[i] - t2[i]) > fabsf(t2[i]) * (1.0f / 2048)) ok16 = 0;
        if (fabsf(r3[i] - t2[i]) > fabsf(t2[i]) * (1.0f / 256)) okb = 0;
    }
    CHECK(ok16 && okb);
    CHECK_EQ_INT(cllm_gguf_find_tensor(g, "t.f16")->offset % 32, 0);
    /* copy every entry into a second file: identical metadata */
    cllm_gguf_writer *w2 = NULL;
    CHECK_OK(cllm_gguf_writer_new(&w2));
    for (int i = 0; i < cllm_gguf_n_kv(g); i++) CHECK_OK(cllm_gguf_writer_copy_kv(w2, g, i));
    char p2[80];
    snprintf(p2, sizeof p2, "%s.2", path);
    CHECK_OK(cllm_gguf_writer_write(w2, p2));
    cllm_gguf_writer_free(w2);
    cllm_gguf *g2 = NULL;
    CHECK_OK(cllm_gguf_open(&g2, p2));
    if (g2) {
        CHECK_EQ_INT(cllm_gguf_n_kv(g2), cllm_gguf_n_kv(g));
        CHECK_OK(cllm_gguf_get_arr_str(g2, "as", &as, &n));
        CHECK(n == 3 && !strcmp(as[2].s, "\xc4\xa0the"));
        CHECK_OK(cllm_gguf_get_float(g2, "f", &d)); CHECK((float)d == 1e-5f);
        cllm_gguf_close(g2);
    }
    /* parts (the start-up threads' reads) equal the whole tensor's; bad bounds
     * refused; a file cut short after its open: an error, never short data */
    const cllm_gguf_tensor *tf = cllm_gguf_find_tensor(g, "t.f32"), *th = cllm_gguf_find_tensor(g, "t.f16");
    float p1[96], p2v[64];
    unsigned char raw[256];
    CHECK_OK(cllm_gguf_read_part_f32(g, tf, 32, 64, p1 + 32, NULL));
    CHECK_OK(cllm_gguf_read_part_f32(g, tf, 0, 32, p1, NULL));
    CHECK(!memcmp(p1, t1, sizeof t1));
    CHECK_EQ_INT(cllm_gguf_part_bytes(th, 40), 80);
    CHECK_OK(cllm_gguf_read_part_f32(g, th, 24, 40, p2v + 24, raw));
    CHECK_OK(cllm_gguf_read_part_f32(g, th, 0, 24, p2v, raw));
    CHECK(!memcmp(p2v, r2, sizeof r2));
    CHECK(cllm_gguf_read_part_f32(g, tf, 90, 7, p1, NULL) == CLLM_EINVAL);
    CHECK(strstr(cllm_errmsg(), "t.f32") && strstr(cllm_errmsg(), "90..97"));
    CHECK_EQ_INT(cllm_ggml_block_elems(GGML_T_Q4_1), 32);
    CHECK_EQ_INT(cllm_ggml_block_elems(4), 0);
    CHECK_OK(truncate(path, (off_t)(cllm_gguf_data_offset(g) + th->offset + 10)));
    CHECK(cllm_gguf_read_part_f32(g, th, 0, 64, p2v, raw) == CLLM_ETRUNC);
    CHECK(strstr(cllm_errmsg(), "t.f16") && strstr(cllm_errmsg(), "file ends early"));
    CHECK(cllm_gguf_read_f32(g, th, p2v, 64) == CLLM_ETRUNC);
    cllm_gguf_close(g);
    unlink(path);
    unlink(p2);
    TEST_OK("gguf writer round trip; tensor parts, and a file cut after its open");
}

static void test_half(void) {
    /* every finite half -> f32 -> half is the identity; f32 -> bf16 rounds to nearest even */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN */
        uint16_t hh = (uint16_t)h, back;
        float f;
        CHECK_OK(cllm_dequantize(GGML_T_F16, &hh, &f, 1));
        cllm_f32_to_f16(&f, &back, 1);
        if (back != hh && bad++ < 3) fprintf(stderr, "half %04x -> %g -> %04x\n", h, (double)f, back);
    }
    CHECK(bad == 0);
    float x[4] = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 65520.0f, 1e-8f};
    uint16_t bf[4], hf[4];
    cllm_f32_to_bf16(x, bf, 2);
    CHECK(bf[0] == 0x3f80 && bf[1] == 0x3f82);  /* ties to even */
    cllm_f32_to_f16(x + 2, hf, 2);
    CHECK(hf[0] == 0x7c00 && hf[1] == 0x0000);  /* overflow to inf, underflow to 0 */
    float q;
    CHECK(cllm_dequantize(GGML_T_Q4_1, bf, &q, 1) == CLLM_EINVAL);
    TEST_OK("f16/bf16 conversions");
}

int main(void) {
    test_golden();
    test_bad_files();
    test_writer();
    test_half();
    TEST_END();
}
