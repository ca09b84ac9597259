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
#include <fcntl.h>
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

/* A file of only metadata: "GGUF", version 3, no tensors, n_kv keys, then what
 * the caller puts. */
static void kv_header(buf *C, uint64_t n_kv) { C->n = 0; put(C, "GGUF", 4); u32(C, 3); u64(C, 0); u64(C, n_kv); }

/* More hostile and boundary files (found by mutation testing: each case below
 * once passed with a check weakened or removed). */
static void test_bad_files_more(void) {
    buf B, C;
    cllm_gguf *g = NULL;
    /* versions: a future one, and one whose low 16 bits are 0 only in part */
    base(&B); patch32(&B, at.version, 4); EXPECT_FAIL(&B, "unsupported GGUF version 4");
    base(&B); patch32(&B, at.version, 256); EXPECT_FAIL(&B, "unsupported GGUF version 256");
    base(&B); patch32(&B, at.version, 0x02000000); EXPECT_FAIL(&B, "byte-swapped");
    /* counts that fit INT_MAX but not the bytes left: refused before any allocation */
    base(&B); patch64(&B, at.n_kv, 1000000); EXPECT_FAIL(&B, "metadata count 1000000 is impossible");
    base(&B); patch64(&B, at.n_t, 1000000); EXPECT_FAIL(&B, "tensor count 1000000 is impossible");
    /* an array whose count fits the bytes left but count x element size does not */
    base(&B); patch64(&B, at.arr_n, 200); EXPECT_FAIL(&B, "array of 200 i32 elements needs more than");
    /* array element type 13 (one past f64) */
    base(&B); patch32(&B, at.arr_n - 4, 13); EXPECT_FAIL(&B, "unknown array element type 13");
    /* keys: DEL and a control byte are not printable */
    kv_header(&C, 1); str(&C, "a\x7f"); u32(&C, GGUF_T_U8); C.b[C.n++] = 1; EXPECT_FAIL(&C, "non-ASCII byte 0x7f");
    kv_header(&C, 1); str(&C, "a\x1f"); u32(&C, GGUF_T_U8); C.b[C.n++] = 1; EXPECT_FAIL(&C, "non-printable or non-ASCII byte 0x1f");
    kv_header(&C, 1); str(&C, " ~"); u32(&C, GGUF_T_U8); C.b[C.n++] = 1; CHECK_OK(try_open(&C, C.n));
    /* bool array elements must be 0 or 1 */
    kv_header(&C, 1); str(&C, "k"); u32(&C, GGUF_T_ARR); u32(&C, GGUF_T_BOOL); u64(&C, 3);
    C.b[C.n++] = 1; C.b[C.n++] = 2; C.b[C.n++] = 0;
    EXPECT_FAIL(&C, "bool element 1 is neither 0 nor 1");
    /* integer arrays: the int32 view is refused when a value does not fit */
    {
        kv_header(&C, 4);
        str(&C, "u32"); u32(&C, GGUF_T_ARR); u32(&C, GGUF_T_U32); u64(&C, 2); u32(&C, 5); u32(&C, 0x80000000u);
        str(&C, "u64"); u32(&C, GGUF_T_ARR); u32(&C, GGUF_T_U64); u64(&C, 2); u64(&C, 5); u64(&C, 1ull << 63);
        str(&C, "i64"); u32(&C, GGUF_T_ARR); u32(&C, GGUF_T_I64); u64(&C, 2); u64(&C, (uint64_t)-5); u64(&C, (uint64_t)INT32_MIN);
        str(&C, "u8"); u32(&C, GGUF_T_ARR); u32(&C, GGUF_T_U8); u64(&C, 2); C.b[C.n++] = 200; C.b[C.n++] = 7;
        CHECK(write_file(&C, C.n) == 0);
        CHECK_OK(cllm_gguf_open(&g, tmpfile_path()));
        if (g) {
            const int32_t *a;
            size_t n;
            CHECK(cllm_gguf_get_arr_i32(g, "u32", &a, &n) == CLLM_EFORMAT);
            CHECK(strstr(cllm_errmsg(), "key u32 has values outside the int32 range") != NULL);
            CHECK(cllm_gguf_get_arr_i32(g, "u64", &a, &n) == CLLM_EFORMAT);
            CHECK_OK(cllm_gguf_get_arr_i32(g, "i64", &a, &n));
            CHECK(n == 2 && a[0] == -5 && a[1] == INT32_MIN);
            CHECK_OK(cllm_gguf_get_arr_i32(g, "u8", &a, &n));
            CHECK(n == 2 && a[0] == 200 && a[1] == 7);
            cllm_gguf_close(g);
            g = NULL;
        }
    }
    /* tensor names: 63 bytes load, an embedded NUL is refused */
    {
        const char *n63 = "012345678901234567890123456789012345678901234567890123456789012";
        C.n = 0; put(&C, "GGUF", 4); u32(&C, 3); u64(&C, 1); u64(&C, 0);
        str(&C, n63); u32(&C, 1); u64(&C, 1); u32(&C, GGML_T_F32); u64(&C, 0);
        pad(&C, 32); float one = 1; put(&C, &one, 4);
        CHECK_OK(try_open(&C, C.n));
        C.n = 0; put(&C, "GGUF", 4); u32(&C, 3); u64(&C, 1); u64(&C, 0);
        u64(&C, 3); put(&C, "a\0b", 3); u32(&C, 1); u64(&C, 1); u32(&C, GGML_T_F32); u64(&C, 0);
        pad(&C, 32); put(&C, &one, 4);
        EXPECT_FAIL(&C, "has a bad name (length 3");
    }
    /* n_dims 0 */
    base(&B); patch32(&B, at.a_ndims, 0); EXPECT_FAIL(&B, "tensor a has n_dims 0");
    /* tensor types: one past the end of ggml's table, a hole in it, and the
     * accessors' answer for a negative type */
    base(&B); patch32(&B, at.a_type, 40); EXPECT_FAIL(&B, "tensor a has unknown type 40");
    base(&B); patch32(&B, at.a_type, 4); EXPECT_FAIL(&B, "tensor a has unknown type 4");
    CHECK(cllm_ggml_type_name(-1) == NULL && cllm_ggml_type_name(40) == NULL);
    CHECK_STR(cllm_ggml_type_name(39), "MXFP4");
    CHECK_EQ_INT(cllm_ggml_block_elems(-1), 0);
    /* alignment: 1 MiB is the largest allowed, 2 MiB is refused */
    base(&B); patch32(&B, at.align_val, 2u << 20); EXPECT_FAIL(&B, "general.alignment 2097152 is not a power of two up to 1048576");
    {
        size_t big = (2u << 20) + 64;
        unsigned char *m = calloc(1, big);
        base(&B);
        patch32(&B, at.align_val, 1u << 20);
        patch64(&B, at.b_off, 1u << 20);
        memcpy(m, B.b, at.data);                                   /* header; data at 1 MiB */
        memcpy(m + (1u << 20), B.b + at.data, 256);                /* a at 0 */
        memcpy(m + (2u << 20), B.b + at.data + 256, 34);           /* b at 1 MiB */
        FILE *f = fopen(tmpfile_path(), "wb");
        CHECK(f && fwrite(m, 1, (2u << 20) + 34, f) == (2u << 20) + 34);
        if (f) fclose(f);
        CHECK_OK(cllm_gguf_open(&g, tmpfile_path()));
        if (g) {
            CHECK_EQ_INT(cllm_gguf_alignment(g), 1u << 20);
            CHECK_EQ_INT(cllm_gguf_data_offset(g), 1u << 20);
            float q[32];
            CHECK_OK(cllm_gguf_read_f32(g, cllm_gguf_find_tensor(g, "b"), q, 32));
            CHECK(q[0] == -16 && q[31] == 15);
            cllm_gguf_close(g);
            g = NULL;
        }
        free(m);
    }
    /* tensors listed out of offset order: fine when apart, refused when they overlap */
    {
        /* a: F32 [32,2] at 64 (256 bytes), b: Q8_0 [32] at 0 (34 bytes) */
        base(&B);
        size_t a_off = at.a_type + 4;
        patch64(&B, a_off, 64);
        patch64(&B, at.b_off, 0);
        unsigned char data[290];
        memcpy(data, B.b + at.data, 290);
        B.n = at.data;
        put(&B, data + 256, 34);                     /* b */
        while (B.n < at.data + 64) B.b[B.n++] = 0;
        put(&B, data, 256);                          /* a */
        CHECK_OK(try_open(&B, B.n));
        CHECK_OK(cllm_gguf_open(&g, tmpfile_path()));
        if (g) {
            float v[64], q[32];
            CHECK_OK(cllm_gguf_read_f32(g, cllm_gguf_find_tensor(g, "a"), v, 64));
            CHECK_OK(cllm_gguf_read_f32(g, cllm_gguf_find_tensor(g, "b"), q, 32));
            CHECK(v[0] == 0 && v[63] == 63 && q[0] == -16 && q[31] == 15);
            cllm_gguf_close(g);
            g = NULL;
        }
        patch64(&B, a_off, 32);                      /* a [32, 288) overlaps b [0, 34) */
        EXPECT_FAIL(&B, "tensors b and a overlap");
    }
    /* the smallest tensor infos (1-byte names, I8 [1], alignment 1) are possible:
     * the tensor-count bound must not refuse them */
    {
        kv_header(&C, 1);
        str(&C, "general.alignment"); u32(&C, GGUF_T_U32); u32(&C, 1);
        patch64(&C, 8, 40);
        for (int i = 0; i < 40; i++) {
            char nm[2] = {(char)('A' + i), 0};
            str(&C, nm); u32(&C, 1); u64(&C, 1); u32(&C, 24 /* I8 */); u64(&C, (uint64_t)i);
        }
        for (int i = 0; i < 40; i++) C.b[C.n++] = (unsigned char)i;
        CHECK(write_file(&C, C.n) == 0);
        CHECK_OK(cllm_gguf_open(&g, tmpfile_path()));
        if (g) { CHECK_EQ_INT(cllm_gguf_n_tensors(g), 40); cllm_gguf_close(g); g = NULL; }
    }
    /* tensor reads: the element count must match; read_raw wants the exact size */
    base(&B);
    CHECK(write_file(&B, B.n) == 0);
    CHECK_OK(cllm_gguf_open(&g, tmpfile_path()));
    if (g) {
        float v[64];
        unsigned char raw[300];
        const cllm_gguf_tensor *ta = cllm_gguf_find_tensor(g, "a"), *tb = cllm_gguf_find_tensor(g, "b");
        CHECK(cllm_gguf_read_f32(g, ta, v, 63) == CLLM_EINVAL);
        CHECK(strstr(cllm_errmsg(), "tensor a has 64 elements, caller expected 63") != NULL);
        CHECK(cllm_gguf_read_raw(g, tb, raw, 35) == CLLM_EINVAL);
        CHECK_OK(cllm_gguf_read_raw(g, tb, raw, 34));
        CHECK(raw[0] == 0x00 && raw[1] == 0x3c && raw[2] == (unsigned char)-16);
        cllm_gguf_close(g);
        g = NULL;
    }
    unlink(tmpfile_path());
    TEST_OK("gguf hostile and boundary files (mutation-found gaps)");
}

/* A key of n bytes (65535 allowed, 65536 refused); built on the heap. */
static void test_long_key(void) {
    for (size_t n = 65535; n <= 65536; n++) {
        size_t sz = 24 + 8 + n + 4 + 1;
        unsigned char *m = malloc(sz), *p = m;
        uint32_t v3 = 3;
        uint64_t zero = 0, one = 1, len = n;
        memcpy(p, "GGUF", 4); p += 4; memcpy(p, &v3, 4); p += 4; memcpy(p, &zero, 8); p += 8; memcpy(p, &one, 8); p += 8;
        memcpy(p, &len, 8); p += 8; memset(p, 'k', n); p += n;
        uint32_t t = GGUF_T_U8; memcpy(p, &t, 4); p += 4; *p++ = 1;
        FILE *f = fopen(tmpfile_path(), "wb");
        CHECK(f && fwrite(m, 1, sz, f) == sz);
        if (f) fclose(f);
        free(m);
        cllm_gguf *g = NULL;
        int rc = cllm_gguf_open(&g, tmpfile_path());
        if (n == 65535) CHECK_OK(rc);
        else CHECK(rc == CLLM_EFORMAT && strstr(cllm_errmsg(), "metadata key #0 is longer than 65535 bytes"));
        cllm_gguf_close(g);
    }
    /* a string value of 1 GiB + 1 in a (sparse) file that holds it: over the cap,
     * refused before anything is allocated or read */
    buf C;
    kv_header(&C, 1);
    str(&C, "k"); u32(&C, GGUF_T_STR); u64(&C, (1ull << 30) + 1);
    CHECK(write_file(&C, C.n) == 0);
    CHECK_OK(truncate(tmpfile_path(), (off_t)(C.n + (1ull << 30) + 1)));
    cllm_gguf *g = NULL;
    CHECK(cllm_gguf_open(&g, tmpfile_path()) == CLLM_ELIMIT &&
          strstr(cllm_errmsg(), "string length 1073741825 exceeds the limit 1073741824"));
    cllm_gguf_close(g);
    unlink(tmpfile_path());
    TEST_OK("gguf key length limit 65535, string limit 1 GiB");
}

/* A tensor 5 GiB into the data section of a (sparse) file: offsets, the
 * bounds check and the reads are 64-bit (a 32-bit offset or off_t anywhere
 * would read the tensor from the wrong place or refuse the file). One byte
 * short, the same file is refused as truncated. */
static void test_offset_past_4gib(void) {
    const uint64_t far = 5ull << 30;
    buf B;
    base(&B);
    patch64(&B, at.b_off, far);
    size_t b_bytes = 2 + 32;                      /* b: one Q8_0 block */
    size_t head = at.data + 256;                  /* the header and a's data */
    CHECK(write_file(&B, head) == 0);
    int fd = open(tmpfile_path(), O_WRONLY);
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK(pwrite(fd, B.b + at.data + 256, b_bytes, (off_t)(at.data + far)) == (ssize_t)b_bytes);
    close(fd);
    cllm_gguf *g = NULL;
    CHECK_OK(cllm_gguf_open(&g, tmpfile_path()));
    if (g) {
        const cllm_gguf_tensor *t = cllm_gguf_find_tensor(g, "b");
        CHECK(t && t->offset == far);
        float v[32] = { 0 };
        if (t) CHECK_OK(cllm_gguf_read_f32(g, t, v, 32));
        int same = 1;
        for (int i = 0; i < 32; i++) same &= v[i] == (float)(i - 16);
        CHECK_MSG(same, "tensor b read from the wrong place: v[0] = %g, v[31] = %g", v[0], v[31]);
        cllm_gguf_close(g);
    }
    CHECK_OK(truncate(tmpfile_path(), (off_t)(at.data + far + b_bytes - 1)));
    g = NULL;
    int rc = cllm_gguf_open(&g, tmpfile_path());
    CHECK_MSG(rc == CLLM_ETRUNC && strstr(cllm_errmsg(), "tensor b (offset 5368709120, 34 bytes) lies beyond end of file"), "got %d \"%s\"", rc, cllm_errmsg());
    cllm_gguf_close(g);
    unlink(tmpfile_path());
    TEST_OK("gguf tensor 5 GiB into the file read from its place; one byte short refused");
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

/* The writer: padding after tensors whose sizes are not multiples of the
 * alignment, general.alignment honoured and checked, every metadata type copied
 * byte for byte, and the argument checks (found by mutation testing). */
static void test_writer_more(void) {
    const char *path = tmpfile_path();
    cllm_gguf_writer *w = NULL;
    cllm_gguf *g = NULL;
    float x[5] = {1, 2, 3, 4, 5}, r[5];
    int64_t n3[1] = {3}, n5[1] = {5}, n2[1] = {2};
    for (int align = 32; align <= 64; align += 32) {
        CHECK_OK(cllm_gguf_writer_new(&w));
        if (!w) return;
        if (align != 32) CHECK_OK(cllm_gguf_writer_set_u32(w, "general.alignment", (uint32_t)align));
        CHECK_OK(cllm_gguf_writer_add_tensor(w, "x", 1, n3, GGML_T_F32, x));     /* 12 bytes */
        CHECK_OK(cllm_gguf_writer_add_tensor(w, "y", 1, n5, GGML_T_F16, x));     /* 10 bytes */
        CHECK_OK(cllm_gguf_writer_add_tensor(w, "z", 1, n2, GGML_T_BF16, x + 3)); /* 4 bytes */
        CHECK_OK(cllm_gguf_writer_write(w, path));
        cllm_gguf_writer_free(w);
        w = NULL;
        CHECK_OK(cllm_gguf_open(&g, path));
        if (!g) return;
        CHECK_EQ_INT(cllm_gguf_alignment(g), align);
        CHECK_EQ_INT(cllm_gguf_data_offset(g) % (uint64_t)align, 0);
        const cllm_gguf_tensor *tx = cllm_gguf_find_tensor(g, "x"), *ty = cllm_gguf_find_tensor(g, "y"),
                               *tz = cllm_gguf_find_tensor(g, "z");
        CHECK(tx && ty && tz);
        if (tx && ty && tz) {
            CHECK(tx->offset == 0 && ty->offset == (uint64_t)align && tz->offset == 2 * (uint64_t)align);
            CHECK_EQ_INT(cllm_gguf_file_size(g), cllm_gguf_data_offset(g) + 3 * (uint64_t)align);
            CHECK_OK(cllm_gguf_read_f32(g, tx, r, 3)); CHECK(!memcmp(r, x, 3 * sizeof(float)));
            CHECK_OK(cllm_gguf_read_f32(g, ty, r, 5)); CHECK(!memcmp(r, x, 5 * sizeof(float)));
            CHECK_OK(cllm_gguf_read_f32(g, tz, r, 2)); CHECK(r[0] == 4 && r[1] == 5);
        }
        cllm_gguf_close(g);
        g = NULL;
    }
    /* a bad general.alignment is refused, and no file is left */
    unlink(path);
    CHECK_OK(cllm_gguf_writer_new(&w));
    CHECK_OK(cllm_gguf_writer_set_u32(w, "general.alignment", 13));
    CHECK(cllm_gguf_writer_write(w, path) == CLLM_EINVAL && strstr(cllm_errmsg(), "general.alignment must be"));
    CHECK_OK(cllm_gguf_writer_set_u32(w, "general.alignment", 2u << 20));
    CHECK(cllm_gguf_writer_write(w, path) == CLLM_EINVAL);
    CHECK_OK(cllm_gguf_writer_set_i32(w, "general.alignment", 32));
    CHECK(cllm_gguf_writer_write(w, path) == CLLM_EINVAL);
    CHECK(access(path, F_OK) != 0);
    /* argument checks */
    int64_t n0[1] = {0}, nneg[2] = {4, -1};
    CHECK(cllm_gguf_writer_add_tensor(w, "0123456789012345678901234567890123456789012345678901234567890123", 1, n3,
                                      GGML_T_F32, x) == CLLM_EINVAL);
    CHECK_OK(cllm_gguf_writer_add_tensor(w, "012345678901234567890123456789012345678901234567890123456789012", 1, n3,
                                         GGML_T_F32, x));
    CHECK(cllm_gguf_writer_add_tensor(w, "e", 1, n0, GGML_T_F32, x) == CLLM_EINVAL);
    CHECK(cllm_gguf_writer_add_tensor(w, "n", 2, nneg, GGML_T_F32, x) == CLLM_EINVAL);
    CHECK(cllm_gguf_writer_add_tensor(w, "d", 5, n3, GGML_T_F32, x) == CLLM_EINVAL);
    char *key = malloc(65537);
    memset(key, 'k', 65536);
    key[65536] = 0;
    CHECK(cllm_gguf_writer_set_u32(w, key, 1) == CLLM_EINVAL);
    key[65535] = 0;
    CHECK_OK(cllm_gguf_writer_set_u32(w, key, 1));
    free(key);
    CHECK(cllm_gguf_writer_set_u32(w, "", 1) == CLLM_EINVAL);
    cllm_gguf_writer_free(w);
    w = NULL;
    /* every value type, copied from a file: the copy's metadata bytes are the source's */
    {
        buf C;
        kv_header(&C, 17);
        str(&C, "u8"); u32(&C, GGUF_T_U8); C.b[C.n++] = 200;
        str(&C, "i8"); u32(&C, GGUF_T_I8); C.b[C.n++] = 0x85;
        str(&C, "u16"); u32(&C, GGUF_T_U16); put(&C, "\x01\xf0", 2);
        str(&C, "i16"); u32(&C, GGUF_T_I16); put(&C, "\x01\x80", 2);
        str(&C, "u32"); u32(&C, GGUF_T_U32); u32(&C, 0xfedcba98u);
        str(&C, "i32"); u32(&C, GGUF_T_I32); u32(&C, 0x80000001u);
        str(&C, "f32"); u32(&C, GGUF_T_F32); u32(&C, 0x3eaaaaabu);
        str(&C, "bool"); u32(&C, GGUF_T_BOOL); C.b[C.n++] = 1;
        str(&C, "str"); u32(&C, GGUF_T_STR); u64(&C, 3); put(&C, "a\0b", 3);
        str(&C, "u64"); u32(&C, GGUF_T_U64); u64(&C, 0xfedcba9876543210ull);
        str(&C, "i64"); u32(&C, GGUF_T_I64); u64(&C, 0x8000000000000001ull);
        str(&C, "f64"); u32(&C, GGUF_T_F64); u64(&C, 0x3fd5555555555555ull);
        str(&C, "au8"); u32(&C, GGUF_T_ARR); u32(&C, GGUF_T_U8); u64(&C, 3); put(&C, "\x01\xfe\x7f", 3);
        str(&C, "ai16"); u32(&C, GGUF_T_ARR); u32(&C, GGUF_T_I16); u64(&C, 2); put(&C, "\xff\xff\x02\x00", 4);
        str(&C, "au64"); u32(&C, GGUF_T_ARR); u32(&C, GGUF_T_U64); u64(&C, 2); u64(&C, 1); u64(&C, ~0ull);
        str(&C, "abool"); u32(&C, GGUF_T_ARR); u32(&C, GGUF_T_BOOL); u64(&C, 2); put(&C, "\x01\x00", 2);
        str(&C, "astr"); u32(&C, GGUF_T_ARR); u32(&C, GGUF_T_STR); u64(&C, 2); str(&C, ""); u64(&C, 2); put(&C, "\0z", 2);
        CHECK(write_file(&C, C.n) == 0);
        CHECK_OK(cllm_gguf_open(&g, tmpfile_path()));
        char p2[80];
        snprintf(p2, sizeof p2, "%s.copy", path);
        if (g) {
            CHECK_OK(cllm_gguf_writer_new(&w));
            for (int i = 0; i < cllm_gguf_n_kv(g); i++) CHECK_OK(cllm_gguf_writer_copy_kv(w, g, i));
            CHECK_OK(cllm_gguf_writer_write(w, p2));
            cllm_gguf_writer_free(w);
            cllm_gguf_close(g);
            g = NULL;
        }
        FILE *f = fopen(p2, "rb");
        unsigned char out[4096];
        size_t got = f ? fread(out, 1, sizeof out, f) : 0;
        if (f) fclose(f);
        CHECK_EQ_INT(got, (C.n + 31) / 32 * 32);
        size_t diff = 0;
        while (diff < C.n && diff < got && out[diff] == C.b[diff]) diff++;
        CHECK_MSG(diff == C.n, "the copy differs from the source at byte %zu of %zu", diff, C.n);
        unlink(p2);
    }
    unlink(path);
    TEST_OK("gguf writer: padding, alignment, argument checks, every metadata type copied exactly");
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

static float bits_f32(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }

/* Q4_0 / Q4_1 / Q8_0 blocks built by hand, against the ggml formulas (y = (q-8)*d,
 * y = q*d + m, y = q*d; low nibbles are elements 0-15, high nibbles 16-31), and
 * NaN, infinity and round-to-nearest-even at the f16/bf16 edges (found by
 * mutation testing: the golden file has no Q4_0 tensor, and the half test
 * skips NaN). */
static void test_dequant_more(void) {
    unsigned char q[2 * 20];
    float y[64];
    int bad = 0;
    /* Q4_0: block 0 d = 0.5, qs[j] = j | (15-j) << 4; block 1 d = -2, qs = 0x9a */
    q[0] = 0x00; q[1] = 0x38;
    for (int j = 0; j < 16; j++) q[2 + j] = (unsigned char)(j | (15 - j) << 4);
    q[18] = 0x00; q[19] = 0xc0;
    for (int j = 0; j < 16; j++) q[20 + j] = 0x9a;
    CHECK_OK(cllm_dequantize(GGML_T_Q4_0, q, y, 64));
    for (int j = 0; j < 16; j++) {
        if (y[j] != (float)(j - 8) * 0.5f || y[j + 16] != (float)(7 - j) * 0.5f) bad++;
        if (y[32 + j] != -4.0f || y[48 + j] != -2.0f) bad++;
    }
    CHECK_MSG(bad == 0, "Q4_0: %d values wrong (y[0]=%g y[16]=%g y[32]=%g y[48]=%g)", bad, (double)y[0], (double)y[16],
              (double)y[32], (double)y[48]);
    /* Q4_1: d = 0.25, m = -1.5 (added), same nibbles */
    q[0] = 0x00; q[1] = 0x34; q[2] = 0x00; q[3] = 0xbe;
    for (int j = 0; j < 16; j++) q[4 + j] = (unsigned char)(j | (15 - j) << 4);
    CHECK_OK(cllm_dequantize(GGML_T_Q4_1, q, y, 32));
    bad = 0;
    for (int j = 0; j < 16; j++)
        if (y[j] != (float)j * 0.25f - 1.5f || y[j + 16] != (float)(15 - j) * 0.25f - 1.5f) bad++;
    CHECK_MSG(bad == 0, "Q4_1: %d values wrong", bad);
    /* Q8_0: d = 0.5, signed quants */
    q[0] = 0x00; q[1] = 0x38;
    for (int j = 0; j < 32; j++) q[2 + j] = (unsigned char)(j * 8 - 128);
    CHECK_OK(cllm_dequantize(GGML_T_Q8_0, q, y, 32));
    bad = 0;
    for (int j = 0; j < 32; j++)
        if (y[j] != (float)(j * 8 - 128) * 0.5f) bad++;
    CHECK_MSG(bad == 0, "Q8_0: %d values wrong", bad);
    /* f16 -> f32: NaN stays NaN, infinities and the smallest subnormal */
    uint16_t h[4] = {0x7e00, 0x7c01, 0xfc00, 0x0001};
    CHECK_OK(cllm_dequantize(GGML_T_F16, h, y, 4));
    CHECK(isnan(y[0]) && isnan(y[1]) && isinf(y[2]) && y[2] < 0 && y[3] == ldexpf(1, -24));
    /* f32 -> bf16: a NaN whose payload is only in the low bits stays NaN */
    float nan_lo[2] = {bits_f32(0x7f800001u), bits_f32(0xff800001u)};
    uint16_t b[2];
    cllm_f32_to_bf16(nan_lo, b, 2);
    CHECK((b[0] & 0x7f80) == 0x7f80 && (b[0] & 0x7f) != 0 && (b[1] & 0xff80) == 0xff80 && (b[1] & 0x7f) != 0);
    float rb[2];
    CHECK_OK(cllm_dequantize(GGML_T_BF16, b, rb, 2));
    CHECK(isnan(rb[0]) && isnan(rb[1]));
    /* f32 -> f16: NaN with a low-bit payload stays NaN; ties to even, normal and subnormal */
    float xs[8] = {nan_lo[0], 1.0f + ldexpf(1, -11), 1.0f + 3 * ldexpf(1, -11), 1.5f * ldexpf(1, -24),
                   2.5f * ldexpf(1, -24), ldexpf(1, -25), 65519.0f, -INFINITY};
    uint16_t hs[8];
    cllm_f32_to_f16(xs, hs, 8);
    CHECK_MSG((hs[0] & 0x7c00) == 0x7c00 && (hs[0] & 0x3ff) != 0, "NaN -> %04x", hs[0]);
    CHECK_MSG(hs[1] == 0x3c00 && hs[2] == 0x3c02, "normal ties: %04x %04x", hs[1], hs[2]);
    CHECK_MSG(hs[3] == 0x0002 && hs[4] == 0x0002 && hs[5] == 0x0000, "subnormal ties: %04x %04x %04x", hs[3], hs[4], hs[5]);
    CHECK_MSG(hs[6] == 0x7bff && hs[7] == 0xfc00, "65519 -> %04x, -inf -> %04x", hs[6], hs[7]);
    TEST_OK("Q4_0/Q4_1/Q8_0 blocks by hand; f16/bf16 NaN, infinity and ties to even");
}

/* Findings of the mutation campaign, fixed in formats/gguf.c:
 *  - version 0 was reported as "looks byte-swapped (big-endian file?)";
 *  - the writer read 4 bytes past a 1-byte general.alignment entry (a bool set
 *    by the caller) before refusing it: a heap overflow under ASan. */
static void test_findings(void) {
    buf B;
    base(&B); patch32(&B, at.version, 0); EXPECT_FAIL(&B, "unsupported GGUF version 0 (2 and 3 are supported)");
    cllm_gguf_writer *w = NULL;
    CHECK_OK(cllm_gguf_writer_new(&w));
    if (!w) return;
    CHECK_OK(cllm_gguf_writer_set_bool(w, "general.alignment", 1));
    CHECK(cllm_gguf_writer_write(w, tmpfile_path()) == CLLM_EINVAL && strstr(cllm_errmsg(), "general.alignment must be"));
    cllm_gguf_writer_free(w);
    unlink(tmpfile_path());
    TEST_OK("gguf version 0 named as unsupported; writer refuses a bool general.alignment without reading past it");
}

int main(void) {
    test_golden();
    test_bad_files();
    test_bad_files_more();
    test_long_key();
    test_offset_past_4gib();
    test_writer();
    test_writer_more();
    test_half();
    test_dequant_more();
    test_findings();
    TEST_END();
}
