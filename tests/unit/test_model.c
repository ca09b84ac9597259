/* test_model.c: the in-memory model, its loaders and savers, safetensors.
 *
 *  - cllm_model_alloc lays out the tensor table and pointers as model.h says;
 *  - tiny random models (llama with q/k/v bias and an untied lm_head; qwen2)
 *    survive GGUF and HF save/load bit for bit (this checks that the GGUF
 *    writer's Q/K permutation and the loader's un-permutation are inverses);
 *  - the real SmolLM2 GGUF loads with the hyperparameters of the file, and its
 *    Q/K projections after un-permutation equal HF transformers' own GGUF load
 *    (tests/golden/gguf_dequant.txt "hf" lines);
 *  - GGUF -> HF directory -> model: every tensor bit-equal (both loaders give the
 *    same model); -> GGUF again: every tensor bit-equal and the metadata kept
 *    (except general.file_type, general.quantization_version and non-string
 *    general.* keys such as general.languages); bf16 output is the rounding of
 *    the fp32 weights;
 *  - the loader's start-up threads: SmolLM2's parameters bit-equal on 1 and
 *    3 threads; of two unreadable tensors the first is named, whatever the
 *    threads do;
 *  - hostile safetensors files each fail with a clear message;
 *  - both writers fsync before the rename; a failing fsync is an error that
 *    leaves no file (fsync is wrapped here);
 *  - HF -> GGUF -> HF keeps Qwen2's and Llama 3's pre-tokenizers (same ids),
 *    pads the GGUF token list to the embedding's rows; mistral saves as a
 *    llama GGUF and a config.json without HF's default sliding window;
 *  - a GGUF's add_bos_token becomes a TemplateProcessing post-processor in
 *    the HF tokenizer.json written from it (same ids, BOS first);
 *  - partial RoPE is refused as a HF output (before writing) and kept in a
 *    GGUF; the HF loader refuses partial_rotary_factor and RoPE scaling.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jansson.h>

#include "check.h"
#include "err.h"
#include "gguf.h"
#include "model.h"
#include "safetensors.h"
#include "startup.h"
#include "tokenizer.h"

static char tmpdir[128];

/* fsync, failing with fsync_errno when set: the ENOSPC/EDQUOT that NFS and
 * delayed allocation report only there. fsync_calls counts the calls. */
static int fsync_errno, fsync_calls;
int fsync(int fd) {
    fsync_calls++;
    if (fsync_errno) { errno = fsync_errno; return -1; }
    return (int)syscall(SYS_fsync, fd);
}

static const char *tmp(const char *name) {
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static uint64_t checksum(const float *a, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &a[i], 4);
        s += (uint64_t)b * ((uint64_t)i * 2654435761u + 1);
    }
    return s;
}

/* Same config, same tensor table, every parameter bit-equal. */
static int same_model(const cllm_model *a, const cllm_model *b, const char *what) {
    int ok = 1;
    const cllm_config *x = &a->cfg, *y = &b->cfg;
    if (strcmp(x->arch, y->arch) || x->n_layer != y->n_layer || x->d_model != y->d_model || x->n_head != y->n_head ||
        x->n_head_kv != y->n_head_kv || x->head_dim != y->head_dim || x->d_ff != y->d_ff || x->vocab != y->vocab ||
        x->max_ctx != y->max_ctx || x->rope_theta != y->rope_theta || x->rope_dim != y->rope_dim ||
        x->rms_eps != y->rms_eps || x->tied != y->tied || x->qkv_bias != y->qkv_bias || x->bos_id != y->bos_id ||
        x->eos_id != y->eos_id || x->pad_id != y->pad_id) {
        fprintf(stderr, "%s: configs differ\n", what);
        ok = 0;
    }
    if (a->n_tensors != b->n_tensors || a->n_params != b->n_params) {
        fprintf(stderr, "%s: tensor tables differ\n", what);
        return 0;
    }
    for (int i = 0; i < a->n_tensors; i++) {
        const cllm_tensor_info *s = &a->tensors[i], *t = &b->tensors[i];
        if (strcmp(s->name, t->name) || s->numel != t->numel || s->offset != t->offset ||
            memcmp(a->params + s->offset, b->params + t->offset, s->numel * sizeof(float))) {
            if (ok) fprintf(stderr, "%s: tensor %s differs\n", what, s->name);
            ok = 0;
        }
    }
    return ok;
}

static void fill_random(cllm_model *m, uint64_t seed) {
    uint64_t x = seed;
    for (size_t i = 0; i < m->n_params; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        m->params[i] = (float)((int64_t)(x >> 40) - (1 << 23)) / (float)(1 << 23);
    }
}

static void test_alloc(void) {
    cllm_config c;
    memset(&c, 0, sizeof c);
    strcpy(c.arch, "llama");
    c.n_layer = 2; c.d_model = 16; c.n_head = 4; c.n_head_kv = 2; c.head_dim = 4; c.d_ff = 24; c.vocab = 10;
    c.max_ctx = 64; c.rope_theta = 10000; c.rms_eps = 1e-5f; c.qkv_bias = 1; c.tied = 0;
    c.bos_id = 1; c.eos_id = 2; c.pad_id = -1;
    cllm_model m;
    CHECK_OK(cllm_model_alloc(&m, &c));
    CHECK_EQ_INT(m.cfg.rope_dim, 4);
    CHECK_EQ_INT(m.n_tensors, 2 + 2 * 12 + 1);
    size_t want = 10 * 16 + 2 * (16 + 16 * 16 + 16 + 8 * 16 + 8 + 8 * 16 + 8 + 16 * 16 + 16 + 3 * 24 * 16) + 16 + 10 * 16;
    CHECK_EQ_INT(m.n_params, want);
    size_t off = 0;
    for (int i = 0; i < m.n_tensors; i++) {
        CHECK_EQ_INT(m.tensors[i].offset, off);
        off += m.tensors[i].numel;
    }
    const cllm_tensor_info *t = cllm_model_tensor(&m, "model.layers.1.self_attn.k_proj.weight");
    CHECK(t && t->shape[0] == 8 && t->shape[1] == 16 && m.layers[1].wk == m.params + t->offset);
    t = cllm_model_tensor(&m, "model.layers.0.self_attn.v_proj.bias");
    CHECK(t && m.layers[0].bv == m.params + t->offset);
    CHECK(m.lm_head != m.tok_emb && m.lm_head == m.params + cllm_model_tensor(&m, "lm_head.weight")->offset);
    CHECK(cllm_model_tensor(&m, "nope") == NULL);
    cllm_model_free(&m);
    c.n_head = 3;
    CHECK(cllm_model_alloc(&m, &c) == CLLM_EINVAL);
    TEST_OK("model alloc layout");
}

static void roundtrip_tiny(const char *arch, int bias, int tied) {
    cllm_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    strcpy(c.name, "tiny");
    c.n_layer = 2; c.d_model = 32; c.n_head = 4; c.n_head_kv = 2; c.head_dim = 8; c.d_ff = 64; c.vocab = 40;
    c.max_ctx = 128; c.rope_theta = 10000; c.rms_eps = 1e-6f; c.qkv_bias = bias; c.tied = tied;
    c.bos_id = 1; c.eos_id = 2; c.pad_id = 0;
    cllm_model m, g, h;
    CHECK_OK(cllm_model_alloc(&m, &c));
    fill_random(&m, 42);
    const char *gp = tmp("tiny.gguf"), *hp = tmp("tiny-hf");
    CHECK_OK(cllm_model_save(&m, gp, "f32"));
    CHECK_OK(cllm_model_load(&g, gp));
    /* llama.cpp knows no "mistral" architecture: a Mistral GGUF says llama */
    CHECK_STR(g.cfg.arch, strcmp(arch, "mistral") ? arch : "llama");
    snprintf(g.cfg.arch, sizeof g.cfg.arch, "%s", arch);
    CHECK(same_model(&m, &g, "tiny gguf"));
    CHECK_STR(g.cfg.name, "tiny");
    /* the stored Q rows are the permuted ones (llama) or not (qwen2) */
    cllm_gguf *gg = NULL;
    CHECK_OK(cllm_gguf_open(&gg, gp));
    if (gg) {
        float q[32 * 32];
        CHECK_OK(cllm_gguf_read_f32(gg, cllm_gguf_find_tensor(gg, "blk.1.attn_q.weight"), q, 32 * 32));
        /* GGUF row h*HS + 2i + t = HF row h*HS + t*HS/2 + i; head 1, i 1, t 1: gguf row 11 = hf row 13 */
        int permuted = strcmp(arch, "qwen2") != 0;
        CHECK(!memcmp(q + 11 * 32, m.layers[1].wq + (permuted ? 13 : 11) * 32, 32 * sizeof(float)));
        cllm_gguf_close(gg);
    }
    CHECK_OK(cllm_model_save(&m, hp, "f32"));
    CHECK_OK(cllm_model_load(&h, hp));
    CHECK(same_model(&m, &h, "tiny hf"));
    cllm_model_free(&g);
    cllm_model_free(&h);
    cllm_model_free(&m);
}

/* Set the type of tensor name in a GGUF file to type, in its tensor info
 * (u64 name length, the name, u32 n_dims, n_dims u64 ne, u32 type). */
static int patch_tensor_type(const char *path, const char *name, uint32_t type) {
    FILE *f = fopen(path, "r+b");
    if (!f) return -1;
    static unsigned char b[1 << 16];
    size_t n = fread(b, 1, sizeof b, f), len = strlen(name);
    int rc = -1;
    for (size_t i = 8; i + len + 4 <= n && rc; i++) {
        uint64_t l;
        memcpy(&l, b + i - 8, 8);
        if (l != len || memcmp(b + i, name, len)) continue;
        uint32_t nd;
        memcpy(&nd, b + i + len, 4);
        size_t at = i + len + 4 + 8 * (size_t)nd;
        rc = nd < 1 || nd > 4 || fseek(f, (long)at, SEEK_SET) || fwrite(&type, 4, 1, f) != 1 ? -1 : 0;
    }
    return fclose(f) || rc ? -1 : 0;
}

/* The loader reads in parts on the start-up threads (startup.h): with two
 * tensors it cannot read, the error names the first in the model's order,
 * however the threads run (I8 is a ggml type no loader dequantizes). */
static void test_load_threads_error(void) {
    cllm_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.arch, sizeof c.arch, "llama");
    c.n_layer = 2; c.d_model = 32; c.n_head = 4; c.n_head_kv = 2; c.head_dim = 8; c.d_ff = 64; c.vocab = 40;
    c.max_ctx = 128; c.rope_theta = 10000; c.rms_eps = 1e-6f; c.bos_id = 1; c.eos_id = 2; c.pad_id = 0;
    cllm_model m, g;
    CHECK_OK(cllm_model_alloc(&m, &c));
    fill_random(&m, 7);
    const char *gp = tmp("bad-types.gguf");
    CHECK_OK(cllm_model_save(&m, gp, "f32"));
    cllm_model_free(&m);
    CHECK_OK(patch_tensor_type(gp, "blk.1.ffn_down.weight", 24));
    CHECK_OK(patch_tensor_type(gp, "blk.0.attn_k.weight", 24));
    int same = 0, tries = 20;
    cllm_set_startup_threads(3);
    for (int i = 0; i < tries; i++) {
        int rc = cllm_model_load(&g, gp);
        same += rc == CLLM_EUNSUP && strstr(cllm_errmsg(), "blk.0.attn_k.weight has type I8") != NULL;
        if (i == 0) CHECK_MSG(same == 1, "rc %d: %s", rc, cllm_errmsg());
        CHECK(g.params == NULL);
    }
    cllm_set_startup_threads(0);
    CHECK_EQ_INT(same, tries);
    TEST_OK("GGUF load on 3 threads: of two unreadable tensors, the first in the model's order is named");
}

static void test_tiny(void) {
    roundtrip_tiny("llama", 1, 0);
    roundtrip_tiny("llama", 0, 1);
    roundtrip_tiny("qwen2", 1, 1);
    roundtrip_tiny("mistral", 0, 0);
    /* HF's MistralConfig defaults to a 4096-token sliding window: the
     * config.json written says there is none, as the model computes. */
    json_error_t je;
    json_t *cfg = json_load_file(tmp("tiny-hf/config.json"), 0, &je);
    CHECK_MSG(cfg && json_is_null(json_object_get(cfg, "sliding_window")), "mistral config.json: sliding_window %s",
              cfg && json_object_get(cfg, "sliding_window") ? "not null" : "missing");
    json_decref(cfg);
    TEST_OK("tiny models: GGUF and HF save/load bit-equal (llama+bias+untied, llama tied, qwen2, mistral)");
}

/* Compare the model's tensors with the "hf" lines of the golden file. */
static void check_hf_golden(const cllm_model *m) {
    FILE *f = fopen("tests/golden/gguf_dequant.txt", "r");
    CHECK(f != NULL);
    if (!f) return;
    char line[512], kind[16], name[128];
    size_t numel;
    uint64_t want;
    double fsum;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || sscanf(line, "%15s %127s %zu %" SCNx64 " %lf", kind, name, &numel, &want, &fsum) != 5) continue;
        uint32_t first[512];
        for (int i = 0; i < 512; i++) CHECK(fscanf(f, "%" SCNx32, &first[i]) == 1);
        if (strcmp(kind, "hf")) continue;
        const cllm_tensor_info *t = cllm_model_tensor(m, name);
        CHECK_MSG(t && t->numel == numel, "%s", name);
        if (!t) continue;
        const float *v = m->params + t->offset;
        CHECK_MSG(checksum(v, numel) == want, "%s: checksum differs from HF transformers' GGUF load", name);
        CHECK_MSG(!memcmp(v, first, 512 * 4), "%s: first values differ from HF", name);
        n++;
    }
    fclose(f);
    CHECK(n >= 4);
}

/* Every key of a is in b with the same type and value, except the listed ones. */
static int same_metadata(const cllm_gguf *a, const cllm_gguf *b, const char *const *skip) {
    int ok = 1;
    for (int i = 0; i < cllm_gguf_n_kv(a); i++) {
        const char *k = cllm_gguf_key(a, i);
        int skipped = 0;
        for (const char *const *s = skip; *s; s++) skipped |= !strcmp(*s, k);
        if (skipped) continue;
        int j = cllm_gguf_find(b, k);
        if (j < 0) { fprintf(stderr, "metadata: %s missing\n", k); ok = 0; continue; }
        int ta = cllm_gguf_kv_type(a, i), tb = cllm_gguf_kv_type(b, j);
        if (ta != tb) { fprintf(stderr, "metadata: %s type %d vs %d\n", k, ta, tb); ok = 0; continue; }
        int64_t x, y;
        double fx, fy;
        cllm_gguf_str sx, sy;
        const cllm_gguf_str *ax, *ay;
        const int32_t *ix, *iy;
        size_t nx, ny;
        if (!cllm_gguf_get_int(a, k, &x)) { CHECK_OK(cllm_gguf_get_int(b, k, &y)); if (x != y) { fprintf(stderr, "metadata: %s value\n", k); ok = 0; } }
        else if (!cllm_gguf_get_float(a, k, &fx)) { CHECK_OK(cllm_gguf_get_float(b, k, &fy)); if (fx != fy) { fprintf(stderr, "metadata: %s value\n", k); ok = 0; } }
        else if (!cllm_gguf_get_str(a, k, &sx)) {
            CHECK_OK(cllm_gguf_get_str(b, k, &sy));
            if (sx.len != sy.len || memcmp(sx.s, sy.s, sx.len)) { fprintf(stderr, "metadata: %s value\n", k); ok = 0; }
        } else if (!cllm_gguf_get_arr_str(a, k, &ax, &nx)) {
            CHECK_OK(cllm_gguf_get_arr_str(b, k, &ay, &ny));
            int same = nx == ny;
            for (size_t q = 0; same && q < nx; q++) same = ax[q].len == ay[q].len && !memcmp(ax[q].s, ay[q].s, ax[q].len);
            if (!same) { fprintf(stderr, "metadata: %s value\n", k); ok = 0; }
        } else if (!cllm_gguf_get_arr_i32(a, k, &ix, &nx)) {
            CHECK_OK(cllm_gguf_get_arr_i32(b, k, &iy, &ny));
            if (nx != ny || memcmp(ix, iy, nx * 4)) { fprintf(stderr, "metadata: %s value\n", k); ok = 0; }
        }
    }
    return ok;
}

static void test_real(void) {
    const char *path = test_model_path();
    cllm_model m, h, r;
    CHECK_OK(cllm_model_load(&m, path));
    if (!m.params) return;
    CHECK_STR(m.cfg.arch, "llama");
    CHECK(m.cfg.n_layer == 30 && m.cfg.d_model == 576 && m.cfg.n_head == 9 && m.cfg.n_head_kv == 3);
    CHECK(m.cfg.head_dim == 64 && m.cfg.d_ff == 1536 && m.cfg.vocab == 49152 && m.cfg.max_ctx == 8192);
    CHECK(m.cfg.rope_theta == 100000.0f && m.cfg.rms_eps == 1e-5f && m.cfg.tied && !m.cfg.qkv_bias);
    CHECK(m.cfg.bos_id == 1 && m.cfg.eos_id == 2 && m.cfg.pad_id == 2);
    CHECK_EQ_INT(m.n_tensors, 272);
    CHECK(m.lm_head == m.tok_emb);
    CHECK(m.tok != NULL);
    check_hf_golden(&m);
    TEST_OK("real GGUF loads; Q/K un-permutation equals HF transformers");

    /* the start-up threads: every parameter bit-equal on 1 thread and on 3 */
    for (int th = 1; th <= 3; th += 2) {
        cllm_set_startup_threads(th);
        CHECK_OK(cllm_model_load(&r, path));
        CHECK_EQ_INT(cllm_startup_threads(), th);
        if (r.params) CHECK_MSG(same_model(&m, &r, th == 1 ? "1 thread" : "3 threads"), "start-up threads %d", th);
        cllm_model_free(&r);
    }
    cllm_set_startup_threads(0);
    TEST_OK("real GGUF: the same parameters loaded on 1, 3 and the default start-up threads");

    /* an HF directory of bf16 tensors: the bf16 rounding of every matrix, on 1 and 3 threads */
    const char *hbf = tmp("smol-hf-bf16");
    CHECK_OK(cllm_model_save(&m, hbf, "bf16"));
    for (int th = 1; th <= 3; th += 2) {
        cllm_set_startup_threads(th);
        CHECK_OK(cllm_model_load(&r, hbf));
        size_t bad = 0;
        for (int i = 0; r.params && i < m.n_tensors; i++) {
            const cllm_tensor_info *t = &m.tensors[i];
            float *want = malloc(t->numel * sizeof(float));
            if (!want) { bad++; continue; }
            memcpy(want, m.params + t->offset, t->numel * sizeof(float));
            if (t->n_dims == 2) cllm_f32_round_bf16(want, t->numel);
            bad += memcmp(want, r.params + t->offset, t->numel * sizeof(float)) != 0;
            free(want);
        }
        CHECK_MSG(r.params && bad == 0, "start-up threads %d: %zu tensors differ", th, bad);
        cllm_model_free(&r);
    }
    cllm_set_startup_threads(0);
    TEST_OK("HF bf16 directory: every tensor the rounding of the source's, on 1 and 3 start-up threads");

    /* GGUF -> HF directory -> model */
    const char *hp = tmp("smol-hf"), *gp = tmp("smol-rt.gguf"), *bp = tmp("smol-bf16.gguf");
    CHECK_OK(cllm_model_save(&m, hp, "f32"));
    CHECK_OK(cllm_model_load(&h, hp));
    CHECK(same_model(&m, &h, "gguf vs safetensors"));
    /* the tokenizer.json written from the GGUF metadata gives the same tokenizer */
    CHECK(h.tok != NULL);
    if (h.tok && m.tok) CHECK_STR(cllm_tokenizer_hash(h.tok), cllm_tokenizer_hash(m.tok));
    /* -> GGUF again */
    CHECK_OK(cllm_model_save(&h, gp, "f32"));
    CHECK_OK(cllm_model_load(&r, gp));
    CHECK(same_model(&m, &r, "gguf -> hf -> gguf"));
    CHECK(r.tok != NULL);
    cllm_gguf *a = NULL, *b = NULL;
    CHECK_OK(cllm_gguf_open(&a, path));
    CHECK_OK(cllm_gguf_open(&b, gp));
    if (a && b) {
        const char *skip[] = {"general.file_type", "general.quantization_version", "general.languages", NULL};
        CHECK(same_metadata(a, b, skip));
        int64_t ft;
        CHECK_OK(cllm_gguf_get_int(b, "general.file_type", &ft));
        CHECK_EQ_INT(ft, 0);
        /* stored Q rows are permuted again, as llama.cpp expects: equal to the source's */
        float *x = malloc(576 * 576 * 4), *y = malloc(576 * 576 * 4);
        CHECK_OK(cllm_gguf_read_f32(a, cllm_gguf_find_tensor(a, "blk.3.attn_q.weight"), x, 576 * 576));
        CHECK_OK(cllm_gguf_read_f32(b, cllm_gguf_find_tensor(b, "blk.3.attn_q.weight"), y, 576 * 576));
        CHECK(!memcmp(x, y, 576 * 576 * 4));
        free(x);
        free(y);
    }
    cllm_gguf_close(a);
    cllm_gguf_close(b);
    cllm_model_free(&r);
    cllm_model_free(&h);
    TEST_OK("GGUF -> safetensors -> GGUF: tensors bit-equal, metadata kept");

    /* bf16 GGUF: matrices are the bf16 rounding, vectors stay f32 */
    CHECK_OK(cllm_model_save(&m, bp, "bf16"));
    CHECK_OK(cllm_model_load(&r, bp));
    if (r.params) {
        int bad = 0;
        for (int i = 0; i < m.n_tensors; i++) {
            const cllm_tensor_info *t = &m.tensors[i];
            for (size_t j = 0; j < t->numel; j += 97) {
                float v = m.params[t->offset + j], want = v;
                if (t->n_dims == 2) {
                    uint16_t hb;
                    cllm_f32_to_bf16(&v, &hb, 1);
                    uint32_t bits = (uint32_t)hb << 16;
                    memcpy(&want, &bits, 4);
                }
                if (r.params[t->offset + j] != want) bad++;
            }
        }
        CHECK(bad == 0);
        cllm_model_free(&r);
    }
    cllm_model_free(&m);
    TEST_OK("bf16 GGUF save");
}

/* Number of entries of dir whose name contains part. */
static int count_names(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) n += strstr(e->d_name, part) != NULL;
    if (d) closedir(d);
    return n;
}

/* A one-layer model's config (width 32, 4 heads of 8, 2 KV heads, FFN 64),
 * vocab V, BOS 1, EOS 2: the tests change what they need. */
static void tiny_config(cllm_config *c, const char *arch, int V) {
    memset(c, 0, sizeof *c);
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    c->n_layer = 1; c->d_model = 32; c->n_head = 4; c->n_head_kv = 2; c->head_dim = 8; c->d_ff = 64; c->vocab = V;
    c->max_ctx = 128; c->rope_theta = 10000; c->rms_eps = 1e-6f; c->bos_id = 1; c->eos_id = 2; c->pad_id = -1;
}

/* A save whose fsync fails (a full disk or quota that NFS or delayed
 * allocation reports only there) is an error, leaves no file under the final
 * name and no temporary file; a save that succeeds fsync'd its data before
 * the rename. */
static void test_save_fsync(void) {
    cllm_config c;
    tiny_config(&c, "llama", 40);
    c.tied = 1;
    cllm_model m;
    CHECK_OK(cllm_model_alloc(&m, &c));
    fill_random(&m, 3);
    const char *gp = tmp("fsync.gguf"), *hp = tmp("fsync-hf");
    struct stat st;
    fsync_calls = 0;
    CHECK_OK(cllm_model_save(&m, gp, "f32"));
    CHECK_MSG(fsync_calls >= 1, "the GGUF writer never called fsync");
    fsync_calls = 0;
    CHECK_OK(cllm_model_save(&m, hp, "bf16"));
    CHECK_MSG(fsync_calls >= 1, "the safetensors writer never called fsync");
    remove(gp);
    remove(tmp("fsync-hf/model.safetensors"));
    fsync_errno = EDQUOT;
    int rc = cllm_model_save(&m, gp, "f16");
    CHECK_MSG(rc == CLLM_EIO && strstr(cllm_errmsg(), "fsync") && strstr(cllm_errmsg(), strerror(EDQUOT)),
              "GGUF save with a failing fsync: rc %d: %s", rc, cllm_errmsg());
    CHECK(stat(gp, &st) != 0);
    rc = cllm_model_save(&m, hp, "f32");
    CHECK_MSG(rc == CLLM_EIO && strstr(cllm_errmsg(), "fsync"), "HF save with a failing fsync: rc %d: %s", rc, cllm_errmsg());
    CHECK(stat(tmp("fsync-hf/model.safetensors"), &st) != 0);
    fsync_errno = 0;
    CHECK_EQ_INT(count_names(tmpdir, ".tmp."), 0);
    CHECK_EQ_INT(count_names(hp, ".tmp."), 0);
    cllm_model_free(&m);
    TEST_OK("GGUF and safetensors saves fsync before the rename; a failing fsync leaves no file");
}

/* The regexes of HF's Qwen2 and Llama 3 tokenizer.json (Split, before a
 * ByteLevel without regex), JSON-escaped as the file holds them. */
static const char qwen2_re[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
                               "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+";
static const char llama3_re[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
                                "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+";

/* Write a small byte-level BPE tokenizer.json into dir: ids 0..9 and a
 * special token <|end|> at 10, or (hole) without ids 8 and 9; the
 * pre_tokenizer pre (a JSON text). */
static int write_tok(const char *dir, const char *pre, int ignore_merges, int hole) {
    char p[300];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fprintf(f, "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 10, \"content\": \"<|end|>\", \"special\": true}], "
               "\"normalizer\": null, \"pre_tokenizer\": %s, \"decoder\": {\"type\": \"ByteLevel\"}, "
               "\"model\": {\"type\": \"BPE\", \"ignore_merges\": %s, \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, "
               "\"1\": 3, \"2\": 4, \"\u0120\": 5, \"\u01201\": 6, \"12\": 7%s}, \"merges\": [\"a b\", \"\u0120 1\", \"1 2\"]}}",
            pre, ignore_merges ? "true" : "false", hole ? "" : ", \"ba\": 8, \"bb\": 9");
    if (fclose(f)) return -1;
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    f = fopen(p, "w");
    if (!f) return -1;
    fputs("{\"eos_token\": \"<|end|>\"}", f);
    return fclose(f) ? -1 : 0;
}

static int same_ids(const cllm_tokenizer *a, const cllm_tokenizer *b, const char *text) {
    int32_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = a && b && !cllm_tokenizer_encode(a, text, strlen(text), 1, &x, &nx) &&
               !cllm_tokenizer_encode(b, text, strlen(text), 1, &y, &ny) && nx == ny && !memcmp(x, y, nx * sizeof *x);
    free(x);
    free(y);
    return same;
}

/* A tiny qwen2 model of vocab V in a HF directory with write_tok's tokenizer,
 * loaded into *h. */
static int tok_model(cllm_model *h, const char *dir, int V, const char *pre, int ignore_merges, int hole) {
    cllm_config c;
    tiny_config(&c, "qwen2", V);
    c.tied = 1; c.qkv_bias = 1; c.bos_id = -1; c.eos_id = 10;
    cllm_model m;
    int rc = cllm_model_alloc(&m, &c);
    if (rc) return rc;
    fill_random(&m, 5);
    rc = cllm_model_save(&m, dir, "f32");
    cllm_model_free(&m);
    if (!rc && write_tok(dir, pre, ignore_merges, hole)) rc = CLLM_EIO;
    return rc ? rc : cllm_model_load(h, dir);
}

/* HF directory -> GGUF -> HF directory for Qwen2's and Llama 3's
 * pre-tokenizers: the GGUF names the pipeline (qwen2, llama-bpe; it said
 * gpt2, splitting text as GPT-2 does), the HF directory written from it
 * holds the Split regex (it held a plain ByteLevel), and all three
 * tokenizers give the same ids. A pipeline no GGUF name has is refused. */
static void test_tokenizer_pre_roundtrip(void) {
    static const char *const names[] = { "qwen2", "llama-bpe" };
    const char *text = "ab 12 ab12 1212<|end|>";
    for (int k = 0; k < 2; k++) {
        char pre[600];
        snprintf(pre, sizeof pre, "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
                 "{\"Regex\": \"%s\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
                 "\"add_prefix_space\": false, \"trim_offsets\": false, \"use_regex\": false}]}", k ? llama3_re : qwen2_re);
        char d[64], g[64], d2[64];
        snprintf(d, sizeof d, "pre-%d", k);
        snprintf(g, sizeof g, "pre-%d.gguf", k);
        snprintf(d2, sizeof d2, "pre-%d-back", k);
        const char *dp = tmp(d), *gp = tmp(g), *d2p = tmp(d2);
        cllm_model h, m, h2;
        CHECK_OK(tok_model(&h, dp, 11, pre, k, 0));
        if (!h.tok) { cllm_model_free(&h); continue; }
        CHECK_OK(cllm_model_save(&h, gp, "f32"));
        cllm_gguf *gg = NULL;
        CHECK_OK(cllm_gguf_open(&gg, gp));
        if (gg) {
            cllm_gguf_str s;
            CHECK_OK(cllm_gguf_get_str(gg, "tokenizer.ggml.pre", &s));
            CHECK_STR(s.s, names[k]);
            cllm_gguf_close(gg);
        }
        CHECK_OK(cllm_model_load(&m, gp));
        CHECK_MSG(same_ids(h.tok, m.tok, text), "%s: the GGUF tokenizes differently from its HF source", names[k]);
        if (m.tok) CHECK_STR(cllm_tokenizer_hash(m.tok), cllm_tokenizer_hash(h.tok));
        CHECK_OK(cllm_model_save(&m, d2p, "f32"));
        CHECK_OK(cllm_model_load(&h2, d2p));
        CHECK_MSG(same_ids(m.tok, h2.tok, text), "%s: the HF directory written from the GGUF tokenizes differently",
                  names[k]);
        cllm_model_free(&h2);
        cllm_model_free(&m);
        cllm_model_free(&h);
    }
    /* a pipeline without a GGUF name: refused, no file */
    const char *dp = tmp("pre-custom"), *gp = tmp("pre-custom.gguf");
    cllm_model h;
    CHECK_OK(tok_model(&h, dp, 11, "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"[a-z]+\"}, "
                                   "\"behavior\": \"Isolated\", \"invert\": false}", 0, 0));
    if (h.tok) {
        int rc = cllm_model_save(&h, gp, "f32");
        CHECK_MSG(rc == CLLM_EUNSUP && strstr(cllm_errmsg(), "pre_tokenizer"), "rc %d: %s", rc, cllm_errmsg());
        struct stat st;
        CHECK(stat(gp, &st) != 0);
    }
    cllm_model_free(&h);
    TEST_OK("HF -> GGUF -> HF: Qwen2 and Llama 3 pre-tokenizers kept (same ids); an unnamed one refused");
}

/* HF -> GGUF when the tokenizer has fewer tokens than the embedding has rows
 * (Qwen2: 151646 tokens, 151936 rows) or ids without a token: llama.cpp
 * sizes token_embd by the token count, so the GGUF lists a token for every
 * row, the missing ones "[PAD<id>]" of type UNUSED as llama.cpp's converter
 * writes them (the save failed on a hole, and wrote a short list otherwise). */
static void test_tokenizer_pad(void) {
    char pre[600];
    snprintf(pre, sizeof pre, "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
             "{\"Regex\": \"%s\"}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
             "\"use_regex\": false}]}", qwen2_re);
    for (int hole = 0; hole < 2; hole++) {
        const char *dp = tmp(hole ? "pad-hole" : "pad"), *gp = tmp(hole ? "pad-hole.gguf" : "pad.gguf");
        cllm_model h, m;
        CHECK_OK(tok_model(&h, dp, 40, pre, 0, hole));
        if (!h.tok) { cllm_model_free(&h); continue; }
        CHECK_OK(cllm_model_save(&h, gp, "f32"));
        cllm_gguf *gg = NULL;
        CHECK_OK(cllm_gguf_open(&gg, gp));
        if (gg) {
            const cllm_gguf_str *toks;
            const int32_t *types;
            size_t n = 0, nt = 0;
            CHECK_OK(cllm_gguf_get_arr_str(gg, "tokenizer.ggml.tokens", &toks, &n));
            CHECK_OK(cllm_gguf_get_arr_i32(gg, "tokenizer.ggml.token_type", &types, &nt));
            CHECK_EQ_INT(n, cllm_gguf_find_tensor(gg, "token_embd.weight")->ne[1]);
            CHECK_EQ_INT(nt, 40);
            if (n == 40 && nt == 40) {
                CHECK_STR(toks[8].s, hole ? "[PAD8]" : "ba");
                CHECK_STR(toks[11].s, "[PAD11]");
                CHECK_STR(toks[39].s, "[PAD39]");
                CHECK(types[8] == (hole ? CLLM_TOK_UNUSED : CLLM_TOK_NORMAL) && types[39] == CLLM_TOK_UNUSED);
                CHECK(types[10] == CLLM_TOK_CONTROL && types[2] == CLLM_TOK_NORMAL);
            }
            cllm_gguf_close(gg);
        }
        CHECK_OK(cllm_model_load(&m, gp));
        CHECK(same_ids(h.tok, m.tok, "ab 12 ab12 1212<|end|>"));
        /* one tokenizer in two forms: the same hash (streams of one are taken with
         * the other: cllm-train's and cllm-bench --vs's checks) */
        if (m.tok) CHECK_STR(cllm_tokenizer_hash(m.tok), cllm_tokenizer_hash(h.tok));
        cllm_model_free(&m);
        cllm_model_free(&h);
    }
    TEST_OK("HF -> GGUF: the token list as long as the embedding, [PAD<id>] UNUSED for ids without a token, one hash");
}

/* The ids a model's tokenizer gives text, with BOS first when it adds one
 * (what the prompt reader and HF's encode(add_special_tokens=True) give). */
static int ids_with_bos(const cllm_tokenizer *t, const char *text, int32_t **ids, size_t *n) {
    int32_t *x = NULL;
    size_t nx = 0;
    int rc = cllm_tokenizer_encode(t, text, strlen(text), 1, &x, &nx);
    if (rc) return rc;
    int b = cllm_tokenizer_add_bos(t);
    *ids = malloc((nx + 1) * sizeof **ids);
    if (!*ids) { free(x); return CLLM_ENOMEM; }
    if (b) (*ids)[0] = cllm_tokenizer_bos(t);
    memcpy(*ids + b, x, nx * sizeof *x);
    *n = nx + (size_t)b;
    free(x);
    return 0;
}

static int same_ids_bos(const cllm_tokenizer *a, const cllm_tokenizer *b, const char *text) {
    int32_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = a && b && !ids_with_bos(a, text, &x, &nx) && !ids_with_bos(b, text, &y, &ny) && nx == ny &&
               !memcmp(x, y, nx * sizeof *x);
    free(x);
    free(y);
    return same;
}

/* GGUF (add_bos_token, BOS 10) -> HF directory: tokenizer.json's
 * post-processor prepends BOS, as Llama 3's does (a Sequence of ByteLevel
 * and a TemplateProcessing), since HF's fast tokenizers go by it, not by
 * tokenizer_config.json's add_bos_token (it got a ByteLevel alone, so HF
 * added no BOS); loaded back, with or without tokenizer_config.json's
 * add_bos_token, it gives the GGUF's ids, BOS first. */
static void bos_gguf_to_hf(const cllm_model *m) {
    const char *dp = tmp("bos-tpl-back"), *text = "ab 12 ab12<|end|> 1212";
    cllm_model h;
    CHECK_OK(cllm_model_save(m, dp, "f32"));
    char p[300];
    snprintf(p, sizeof p, "%s/tokenizer.json", dp);
    json_error_t je;
    json_t *tj = json_load_file(p, 0, &je);
    json_t *pp = json_object_get(tj, "post_processor"), *procs = json_object_get(pp, "processors");
    json_t *tp = json_array_get(procs, 1);
    CHECK_MSG(json_is_string(json_object_get(pp, "type")) && !strcmp(json_string_value(json_object_get(pp, "type")), "Sequence") &&
              json_array_size(procs) == 2 && !strcmp(json_string_value(json_object_get(json_array_get(procs, 0), "type")), "ByteLevel") &&
              json_is_string(json_object_get(tp, "type")) && !strcmp(json_string_value(json_object_get(tp, "type")), "TemplateProcessing"),
              "tokenizer.json: post_processor is not Sequence[ByteLevel, TemplateProcessing]");
    json_t *single = json_object_get(tp, "single"), *pair = json_object_get(tp, "pair");
    CHECK(json_array_size(single) == 2 && json_array_size(pair) == 4);
    CHECK_STR(json_string_value(json_object_get(json_object_get(json_array_get(single, 0), "SpecialToken"), "id")), "<|end|>");
    CHECK_STR(json_string_value(json_object_get(json_object_get(json_array_get(single, 1), "Sequence"), "id")), "A");
    CHECK_STR(json_string_value(json_object_get(json_object_get(json_array_get(pair, 3), "Sequence"), "id")), "B");
    json_t *ids = json_object_get(json_object_get(json_object_get(tp, "special_tokens"), "<|end|>"), "ids");
    CHECK(json_array_size(ids) == 1 && json_integer_value(json_array_get(ids, 0)) == 10);
    json_decref(tj);
    CHECK_OK(cllm_model_load(&h, dp));
    if (h.tok) {
        CHECK(cllm_tokenizer_add_bos(h.tok) == 1 && cllm_tokenizer_bos(h.tok) == 10);
        CHECK_MSG(same_ids_bos(m->tok, h.tok, text), "GGUF -> HF: the HF directory tokenizes differently (BOS first)");
    }
    cllm_model_free(&h);
    /* tokenizer.json alone says it (what HF's fast tokenizer reads) */
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dp);
    json_t *tc = json_load_file(p, 0, &je);
    CHECK(json_is_true(json_object_get(tc, "add_bos_token")));
    json_object_del(tc, "add_bos_token");
    CHECK(tc && json_dump_file(tc, p, 0) == 0);
    json_decref(tc);
    cllm_tokenizer *t = NULL;
    CHECK_OK(cllm_tokenizer_from_hf_dir(&t, dp));
    if (t) {
        CHECK_MSG(cllm_tokenizer_add_bos(t) == 1 && cllm_tokenizer_bos(t) == 10,
                  "tokenizer.json alone: add_bos %d, bos %d (the GGUF: 1, 10)", cllm_tokenizer_add_bos(t), cllm_tokenizer_bos(t));
        CHECK(same_ids_bos(m->tok, t, text));
    }
    cllm_tokenizer_free(t);
}

/* HF -> GGUF of a tokenizer whose post-processor prepends BOS and whose
 * tokenizer_config names no bos_token (Llama 3's form without the config
 * key): the GGUF prepends the same token (it got add_bos_token with no BOS
 * id, so prompts from it had none). */
static void test_tokenizer_bos_from_template(void) {
    const char *dp = tmp("bos-tpl"), *gp = tmp("bos-tpl.gguf");
    cllm_model h, m;
    CHECK_OK(tok_model(&h, dp, 11, "{\"type\": \"ByteLevel\", \"add_prefix_space\": false}", 0, 0));
    cllm_model_free(&h);
    char p[300];
    snprintf(p, sizeof p, "%s/tokenizer.json", dp);
    FILE *f = fopen(p, "r");
    char buf[4096];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    CHECK(n > 0 && buf[0] == '{');
    f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f || n == 0) return;
    fprintf(f, "{\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
               "{\"id\": \"<|end|>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
               "\"special_tokens\": {\"<|end|>\": {\"id\": \"<|end|>\", \"ids\": [10], \"tokens\": [\"<|end|>\"]}}}, %s",
            buf + 1);
    CHECK(fclose(f) == 0);
    CHECK_OK(cllm_model_load(&h, dp));
    if (!h.tok) { cllm_model_free(&h); return; }
    CHECK(cllm_tokenizer_add_bos(h.tok) == 1 && cllm_tokenizer_bos(h.tok) == 10);
    CHECK_OK(cllm_model_save(&h, gp, "f32"));
    CHECK_OK(cllm_model_load(&m, gp));
    if (m.tok)
        CHECK_MSG(cllm_tokenizer_add_bos(m.tok) == 1 && cllm_tokenizer_bos(m.tok) == 10,
                  "the GGUF: add_bos %d, bos %d (its HF source: 1, 10)", cllm_tokenizer_add_bos(m.tok),
                  cllm_tokenizer_bos(m.tok));
    if (m.tok) bos_gguf_to_hf(&m);
    cllm_model_free(&m);
    cllm_model_free(&h);
    TEST_OK("HF -> GGUF -> HF: a post-processor's BOS (no bos_token in the config) is the GGUF's BOS, prepended; "
            "the HF directory written from the GGUF prepends it in tokenizer.json's post-processor");
}

/* Rewrite dir/config.json with key set to the JSON text val (NULL: removed). */
static int set_config(const char *dir, const char *key, const char *val) {
    char p[300];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_error_t je;
    json_t *cfg = json_load_file(p, 0, &je);
    if (!cfg) return -1;
    json_t *v = val ? json_loads(val, JSON_DECODE_ANY, &je) : NULL;
    int rc = val ? (v ? json_object_set_new(cfg, key, v) : -1) : json_object_del(cfg, key);
    if (!rc) rc = json_dump_file(cfg, p, JSON_INDENT(2));
    json_decref(cfg);
    return rc;
}

/* Partial RoPE (rope_dim < head_dim, GGUF's rope.dimension_count): HF's
 * Llama, Mistral and Qwen2 rotate the whole head, so a HF save is refused
 * before anything is written (it dropped the partial RoPE: the saved model
 * computed something else), by cllm_model_save_check too (cllm-train's
 * check before its first step); GGUF keeps it. The HF loader refuses what
 * it cannot compute: partial_rotary_factor other than 1 (at the top or in
 * transformers 5's rope_parameters) and a rope_parameters rope_type other
 * than default without rope_theta (both were ignored), rope_scaling. */
static void test_partial_rope(void) {
    cllm_config c;
    tiny_config(&c, "llama", 40);
    c.rope_dim = 4;
    cllm_model m, g, h;
    CHECK_OK(cllm_model_alloc(&m, &c));
    CHECK_EQ_INT(m.cfg.rope_dim, 4);
    fill_random(&m, 11);
    const char *hp = tmp("partial-hf"), *gp = tmp("partial.gguf"), *fp = tmp("full-hf");
    int rc = cllm_model_save(&m, hp, "f32");
    CHECK_MSG(rc == CLLM_EUNSUP && strstr(cllm_errmsg(), "partial") && strstr(cllm_errmsg(), "4 of each head's 8") &&
              strstr(cllm_errmsg(), "save it as GGUF"), "HF save of partial RoPE: rc %d: %s", rc, cllm_errmsg());
    struct stat st;
    CHECK_MSG(stat(hp, &st) != 0, "the refused HF save left %s", hp);
    rc = cllm_model_save_check(&m, hp);
    CHECK_MSG(rc == CLLM_EUNSUP && strstr(cllm_errmsg(), "partial"), "save_check: rc %d: %s", rc, cllm_errmsg());
    CHECK_OK(cllm_model_save_check(&m, gp));
    CHECK_OK(cllm_model_save_check(NULL, hp));
    CHECK_OK(cllm_model_save(&m, gp, "f32"));
    CHECK_OK(cllm_model_load(&g, gp));
    CHECK_EQ_INT(g.cfg.rope_dim, 4);
    CHECK(same_model(&m, &g, "partial rope gguf"));
    cllm_model_free(&g);
    cllm_model_free(&m);

    /* the HF loader */
    c.rope_dim = 0;
    CHECK_OK(cllm_model_alloc(&m, &c));
    fill_random(&m, 12);
    CHECK_OK(cllm_model_save_check(&m, fp));
    CHECK_OK(cllm_model_save(&m, fp, "f32"));
    cllm_model_free(&m);
    static const struct { const char *key, *val, *msg; } cases[] = {
        { "partial_rotary_factor", "0.5", "partial_rotary_factor 0.5 is not supported" },
        { "partial_rotary_factor", "\"half\"", "partial_rotary_factor is not a number" },
        { "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 10000.0, \"partial_rotary_factor\": 0.25}",
          "partial_rotary_factor 0.25" },
        { "rope_parameters", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", "rope_type \"llama3\" is not supported" },
        { "rope_parameters", "[10000]", "rope_parameters is not an object" },
        { "rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", "rope_scaling \"linear\" is not supported" },
        { "rope_scaling", "{\"factor\": 2.0}", "rope_scaling \"(no type)\"" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_OK(set_config(fp, cases[i].key, cases[i].val));
        rc = cllm_model_load(&h, fp);
        CHECK_MSG(rc != 0 && strstr(cllm_errmsg(), "config.json") && strstr(cllm_errmsg(), cases[i].msg),
                  "%s = %s: rc %d: %s", cases[i].key, cases[i].val, rc, cllm_errmsg());
        if (!rc) cllm_model_free(&h);
        CHECK_OK(set_config(fp, cases[i].key, NULL));
    }
    /* what the whole head's RoPE may say */
    static const struct { const char *key, *val; } fine[] = {
        { "partial_rotary_factor", "1.0" }, { "partial_rotary_factor", "null" }, { "rope_scaling", "null" },
        { "rope_scaling", "{\"rope_type\": \"default\"}" },
        { "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 10000.0, \"partial_rotary_factor\": 1}" },
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        CHECK_OK(set_config(fp, fine[i].key, fine[i].val));
        rc = cllm_model_load(&h, fp);
        CHECK_MSG(rc == 0, "%s = %s: rc %d: %s", fine[i].key, fine[i].val, rc, cllm_errmsg());
        if (!rc) { CHECK_EQ_INT(h.cfg.rope_dim, 8); cllm_model_free(&h); }
        CHECK_OK(set_config(fp, fine[i].key, NULL));
    }
    TEST_OK("partial RoPE: HF save refused before writing (save_check too), GGUF keeps it; HF loader refuses "
            "partial_rotary_factor != 1 and RoPE scaling");
}

/* ---- hostile safetensors ---- */

static int st_file(const char *hdr, size_t data_bytes, int64_t len_override) {
    const char *p = tmp("bad.safetensors");
    FILE *f = fopen(p, "wb");
    if (!f) return -1;
    uint64_t n = len_override >= 0 ? (uint64_t)len_override : strlen(hdr);
    if (len_override == -2) n = UINT64_MAX;
    fwrite(&n, 8, 1, f);
    fwrite(hdr, 1, strlen(hdr), f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
    cllm_st *st = NULL;
    int rc = cllm_st_open(&st, p);
    cllm_st_close(st);
    return rc;
}

#define ST_FAIL(hdr, data, len, frag) do { int rc__ = st_file(hdr, data, len); \
    CHECK_MSG(rc__ < 0 && strstr(cllm_errmsg(), frag), "expected \"%s\", got %d \"%s\"", frag, rc__, cllm_errmsg()); } while (0)

static void test_bad_safetensors(void) {
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                     "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]}}";
    CHECK_OK(st_file(ok, 24, -1));
    CHECK_OK(st_file("{\"__metadata__\":{\"format\":\"pt\"},\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                     "\"z\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[4,4]}}      ", 4, -1));
    ST_FAIL(ok, 24, 1000, "header length 1000 is larger than the file");
    ST_FAIL(ok, 24, -2, "header length 18446744073709551615 exceeds the limit");
    ST_FAIL(ok, 23, -1, "truncated");
    ST_FAIL(ok, 25, -1, "1 bytes after the last tensor");
    ST_FAIL("[1, 2]", 0, -1, "does not start with '{'");
    ST_FAIL("{\"a\":", 0, -1, "bad JSON header");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, -1, "overlap");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, -1, "gap of 4 bytes before tensor a");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, -1, "end 4 < begin 8");
    ST_FAIL("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1, "unknown dtype F33");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, -1, "shape entry 0 is not a non-negative integer");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, -1, "shape entry 0");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, -1, "overflows 64 bits");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, -1, "4 bytes for 2 F32 elements");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            8, -1, "duplicate");
    ST_FAIL("{\"__metadata__\":{\"x\":1}}", 0, -1, "__metadata__ value of x is not a string");
    {
        const char *p = tmp("short.safetensors");
        FILE *f = fopen(p, "wb");
        fputs("abc", f);
        fclose(f);
        cllm_st *st = NULL;
        CHECK(cllm_st_open(&st, p) < 0 && strstr(cllm_errmsg(), "too short"));
    }
    /* a sharded directory whose index names a file outside it */
    const char *d = tmp("shard-dir");
    mkdir(d, 0700);
    FILE *f = fopen(tmp("shard-dir/model.safetensors.index.json"), "w");
    if (f) { fputs("{\"weight_map\":{\"a\":\"../x.safetensors\"}}", f); fclose(f); }
    cllm_st *st = NULL;
    CHECK(cllm_st_open_dir(&st, d) < 0 && strstr(cllm_errmsg(), "not a plain file name"));
    TEST_OK("safetensors hostile files");
}

/* More hostile and boundary safetensors files (found by mutation testing: each
 * case below once passed with a check weakened or removed). */
static void test_bad_safetensors_more(void) {
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                     "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]}}";
    char p[160];
    snprintf(p, sizeof p, "%s", tmp("bad.safetensors"));
    cllm_st *st = NULL;
    {   /* 7 bytes: too short, not "file ends early" */
        FILE *f = fopen(p, "wb");
        if (f) { fwrite("\002\000\000\000{}x", 1, 7, f); fclose(f); }
        CHECK(cllm_st_open(&st, p) < 0 && strstr(cllm_errmsg(), "7 bytes is too short"));
    }
    {   /* header length 100000001 in a (sparse) file large enough to hold it:
         * over the limit, refused before it is read */
        FILE *f = fopen(p, "wb");
        uint64_t n = 100000001;
        if (f) { fwrite(&n, 8, 1, f); fputc('{', f); fclose(f); }
        CHECK_OK(truncate(p, 100000100));
        CHECK(cllm_st_open(&st, p) == CLLM_ELIMIT && strstr(cllm_errmsg(), "header length 100000001 exceeds the limit"));
        unlink(p);
    }
    /* header length one byte more than the file holds */
    char frag[64];
    snprintf(frag, sizeof frag, "header length %zu is larger than the file", strlen(ok) + 25);
    ST_FAIL(ok, 24, (int64_t)(strlen(ok) + 25), frag);
    CHECK_OK(st_file(ok, 24, (int64_t)strlen(ok)));
    ST_FAIL("", 0, 0, "header length 0 is too short for a JSON object");
    ST_FAIL("{", 0, 1, "header length 1 is too short");
    ST_FAIL("{\"__metadata__\":[1]}", 0, -1, "__metadata__ is not an object");
    ST_FAIL("{\"a\":1}", 0, -1, "entry a is not an object");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, -1, "data_offsets must be [begin, end]");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, -1, "fields besides");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, -1, "has 9 dimensions (at most 8)");
    CHECK_OK(st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, -1));
    /* 2^62 elements fit 64 bits, their 2^64 bytes do not (they would wrap to 0) */
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2305843009213693952,2],\"data_offsets\":[0,0]}}", 0, -1,
            "byte size overflows 64 bits");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, -1, "data_offsets are not non-negative integers");
    ST_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4, -1, "data_offsets are not non-negative integers");
    /* a one-byte overlap */
    ST_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[7,8]}}",
            8, -1, "tensors a and b overlap");
    /* data bytes but no tensors; no data and no tensors is fine */
    ST_FAIL("{}", 4, -1, "4 data bytes but no tensors");
    CHECK_OK(st_file("{}", 0, -1));
    /* an empty tensor that begins where another one does, in either order */
    CHECK_OK(st_file("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, -1));
    CHECK_OK(st_file("{\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, -1));
    /* a read must ask for the tensor's own element count */
    CHECK_OK(st_file(ok, 24, -1));
    CHECK_OK(cllm_st_open(&st, p));
    if (st) {
        float v[4];
        CHECK(cllm_st_read_f32(st, cllm_st_find(st, "a"), v, 3) == CLLM_EINVAL);
        CHECK(strstr(cllm_errmsg(), "tensor a has 4 elements, caller expected 3") != NULL);
        cllm_st_close(st);
        st = NULL;
    }
    /* writer: the header is padded with spaces to a multiple of 8; F16 reads back;
     * metadata kept */
    {
        float a[3] = {1.5f, -2.0f, 65504.0f};
        int64_t sa[1] = {3};
        cllm_st_wtensor ta = {"abc", 1, sa, a};
        const char *mk[1] = {"format"}, *mv[1] = {"pt"};
        CHECK_OK(cllm_st_write(p, &ta, 1, CLLM_ST_F16, mk, mv, 1));
        FILE *f = fopen(p, "rb");
        uint64_t n = 0;
        char h[256] = {0};
        CHECK(f && fread(&n, 8, 1, f) == 1 && n < sizeof h && fread(h, 1, (size_t)n, f) == n);
        if (f) fclose(f);
        size_t jl = strlen(h);
        while (jl && h[jl - 1] == ' ') jl--;        /* the JSON without its padding */
        CHECK(jl % 8 != 0);                          /* (this header does need padding) */
        CHECK_MSG(n % 8 == 0 && jl > 0 && h[jl - 1] == '}' && n - jl < 8, "header length %llu: \"%s\"",
                  (unsigned long long)n, h);
        CHECK_OK(cllm_st_open(&st, p));
        if (st) {
            float r[3];
            const cllm_st_tensor *t = cllm_st_find(st, "abc");
            CHECK(t && t->dtype == CLLM_ST_F16 && t->end - t->begin == 6);
            CHECK_OK(cllm_st_read_f32(st, t, r, 3));
            CHECK(!memcmp(r, a, sizeof a));
            CHECK_STR(cllm_st_metadata(st, "format"), "pt");
            cllm_st_close(st);
            st = NULL;
        }
        /* duplicate names are refused, without leaking the entry (LeakSanitizer) */
        cllm_st_wtensor td[2] = {{"d", 1, sa, a}, {"d", 1, sa, a}};
        CHECK(cllm_st_write(p, td, 2, CLLM_ST_F32, NULL, NULL, 0) == CLLM_EINVAL);
        CHECK(strstr(cllm_errmsg(), "cannot add tensor d") != NULL);
    }
    /* shards: the same tensor name in two shards; the index naming the wrong shard */
    {
        char d[160];
        snprintf(d, sizeof d, "%s", tmp("dup-shards"));
        mkdir(d, 0700);
        float a[2] = {1, 2};
        int64_t sa[1] = {2};
        cllm_st_wtensor ta = {"a", 1, sa, a}, tb[2] = {{"b", 1, sa, a}, {"a", 1, sa, a}};
        CHECK_OK(cllm_st_write(tmp("dup-shards/m-1.safetensors"), &ta, 1, CLLM_ST_F32, NULL, NULL, 0));
        CHECK_OK(cllm_st_write(tmp("dup-shards/m-2.safetensors"), tb, 2, CLLM_ST_F32, NULL, NULL, 0));
        FILE *f = fopen(tmp("dup-shards/model.safetensors.index.json"), "w");
        if (f) { fputs("{\"weight_map\":{\"a\":\"m-1.safetensors\",\"b\":\"m-2.safetensors\"}}", f); fclose(f); }
        CHECK(cllm_st_open_dir(&st, d) == CLLM_EFORMAT && strstr(cllm_errmsg(), "duplicate tensor name a"));
        CHECK_OK(cllm_st_write(tmp("dup-shards/m-2.safetensors"), tb, 1, CLLM_ST_F32, NULL, NULL, 0));
        f = fopen(tmp("dup-shards/model.safetensors.index.json"), "w");
        if (f) { fputs("{\"weight_map\":{\"b\":\"m-2.safetensors\",\"a\":\"m-2.safetensors\",\"x\":\"m-1.safetensors\"}}", f); fclose(f); }
        CHECK_MSG(cllm_st_open_dir(&st, d) == CLLM_EFORMAT && strstr(cllm_errmsg(), "tensor a is not in shard m-2.safetensors"), "%s", cllm_errmsg());
    }
    TEST_OK("safetensors hostile and boundary files, writer padding (mutation-found gaps)");
}

static void test_sharded(void) {
    /* two shards + index: loads like one file */
    const char *d = tmp("sharded");
    mkdir(d, 0700);
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
    int64_t sa[2] = {2, 2}, sb[1] = {2};
    cllm_st_wtensor ta = {"a", 2, sa, a}, tb = {"b", 1, sb, b};
    CHECK_OK(cllm_st_write(tmp("sharded/m-1.safetensors"), &ta, 1, CLLM_ST_F32, NULL, NULL, 0));
    CHECK_OK(cllm_st_write(tmp("sharded/m-2.safetensors"), &tb, 1, CLLM_ST_BF16, NULL, NULL, 0));
    FILE *f = fopen(tmp("sharded/model.safetensors.index.json"), "w");
    if (f) { fputs("{\"metadata\":{},\"weight_map\":{\"a\":\"m-1.safetensors\",\"b\":\"m-2.safetensors\"}}", f); fclose(f); }
    cllm_st *st = NULL;
    CHECK_OK(cllm_st_open_dir(&st, d));
    if (st) {
        float ra[4], rb[2];
        CHECK_EQ_INT(cllm_st_n_tensors(st), 2);
        CHECK_OK(cllm_st_read_f32(st, cllm_st_find(st, "a"), ra, 4));
        CHECK_OK(cllm_st_read_f32(st, cllm_st_find(st, "b"), rb, 2));
        CHECK(!memcmp(ra, a, sizeof a) && rb[0] == 5 && rb[1] == 6);
        /* parts (the loader's reads on the start-up threads) equal the whole */
        const cllm_st_tensor *t = cllm_st_find(st, "a"), *u = cllm_st_find(st, "b");
        uint16_t raw[2];
        float pa[4] = {0}, pb[2] = {0};
        CHECK_OK(cllm_st_read_part_f32(st, t, 1, 3, pa + 1, NULL));
        CHECK_OK(cllm_st_read_part_f32(st, t, 0, 1, pa, NULL));
        CHECK(!memcmp(pa, a, sizeof a));
        CHECK_EQ_INT(cllm_st_part_bytes(u, 2), 4);
        CHECK_OK(cllm_st_read_part_f32(st, u, 1, 1, pb + 1, raw));
        CHECK(pb[0] == 0 && pb[1] == 6);
        CHECK(cllm_st_read_part_f32(st, t, 3, 2, pa, NULL) == CLLM_EINVAL);
        CHECK(strstr(cllm_errmsg(), "tensor a") && strstr(cllm_errmsg(), "3..5"));
        /* a shard cut after its open: an error, never short data */
        CHECK_OK(truncate(tmp("sharded/m-2.safetensors"), 8));
        CHECK(cllm_st_read_part_f32(st, u, 0, 2, pb, raw) == CLLM_ETRUNC);
        CHECK(strstr(cllm_errmsg(), "file ends early") != NULL);
        cllm_st_close(st);
    }
    TEST_OK("safetensors shards; tensor parts, and a shard cut after its open");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cllm-test-model-%d", (int)getpid());
    mkdir(tmpdir, 0700);
    test_alloc();
    test_tiny();
    test_load_threads_error();
    test_bad_safetensors();
    test_bad_safetensors_more();
    test_sharded();
    test_save_fsync();
    test_tokenizer_pre_roundtrip();
    test_tokenizer_pad();
    test_tokenizer_bos_from_template();
    test_partial_rope();
    test_real();
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    TEST_END();
}
