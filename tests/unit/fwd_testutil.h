/* fwd_testutil.h: helpers shared by test_forward.c and test_decode.c.
 *
 *  - golden_*: the logits files written by tests/golden/forward_golden.py
 *    (format in that script's docstring);
 *  - tiny_load: the tiny Qwen2 model of tests/golden/tiny-qwen2 read with a
 *    minimal safetensors reader of its own (config.json + model.safetensors,
 *    F32 only), so these tests do not depend on the model loader;
 *  - small_config, random_model: a small config, and a model of a config with
 *    seeded random weights;
 *  - row_relerr: the error measure of the golden comparisons.
 */
#ifndef CLLM_FWD_TESTUTIL_H
#define CLLM_FWD_TESTUTIL_H

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "model.h"
#include "rng.h"

/* Relative error of row a against the reference b: max_i |a_i - b_i| / max_i |b_i|.
 * Logits are compared on the scale of the row (its largest magnitude) rather
 * than element by element: small logits (near 0) carry no information about
 * correctness, while an error of 1e-4 of the row's scale changes no softmax
 * probability by more than ~1e-4 relative. */
static inline double row_relerr(const float *a, const float *b, int n) {
    double md = 0, mb = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (isnan(d)) return d;   /* a NaN must fail the check, not be skipped by the max */
        if (d > md) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return mb > 0 ? md / mb : md;
}

/* The norm-wise relative error ||a - b||_2 / ||b||_2, the measure most
 * numerical comparisons quote (torch.testing and BLAS tests use norms; the
 * bars here use row_relerr, the stricter). Printed beside row_relerr where
 * bf16 logits are compared with fp32 ones, so both are on record. */
static inline double row_l2relerr(const float *a, const float *b, int n) {
    double dd = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        dd += d * d;
        bb += (double)b[i] * b[i];
    }
    if (isnan(dd)) return dd;
    return bb > 0 ? sqrt(dd / bb) : sqrt(dd);
}

typedef struct golden_prompt {
    int T, n_full;
    int *tokens;        /* (T) */
    int *top_ids;       /* (T, K) */
    float *top_vals;    /* (T, K) */
    float *fixed_vals;  /* (T, NF) */
    float *full;        /* (n_full, V), rows T-n_full .. T-1 */
} golden_prompt;

typedef struct golden {
    int n, V, K, NF;
    int *fixed_ids;     /* (NF) */
    golden_prompt *p;   /* (n) */
} golden;

static inline int golden_read_(FILE *f, void *p, size_t sz, size_t n) {
    return n == 0 || fread(p, sz, n, f) == n ? 0 : -1;
}

static inline void golden_free(golden *g) {
    for (int i = 0; g->p && i < g->n; i++) {
        free(g->p[i].tokens); free(g->p[i].top_ids); free(g->p[i].top_vals);
        free(g->p[i].fixed_vals); free(g->p[i].full);
    }
    free(g->p);
    free(g->fixed_ids);
    memset(g, 0, sizeof *g);
}

/* 0 on success, -1 (with a message on stderr) otherwise. */
static inline int golden_load(golden *g, const char *path) {
    memset(g, 0, sizeof *g);
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "%s: cannot open\n", path); return -1; }
    char magic[8];
    int32_t h[4];
    if (golden_read_(f, magic, 1, 8) || memcmp(magic, "CLLMGLD1", 8) || golden_read_(f, h, 4, 4))
        goto bad;
    g->n = h[0]; g->V = h[1]; g->K = h[2]; g->NF = h[3];
    if (g->n < 1 || g->n > 100 || g->V < 1 || g->K < 1 || g->K > g->V || g->NF < 0 || g->NF > g->V) goto bad;
    g->fixed_ids = calloc((size_t)g->NF + 1, sizeof(int));
    g->p = calloc((size_t)g->n, sizeof *g->p);
    if (!g->fixed_ids || !g->p || golden_read_(f, g->fixed_ids, 4, (size_t)g->NF)) goto bad;
    for (int i = 0; i < g->n; i++) {
        golden_prompt *p = &g->p[i];
        int32_t tn[2];
        if (golden_read_(f, tn, 4, 2) || tn[0] < 1 || tn[0] > 100000 || tn[1] < 0 || tn[1] > tn[0]) goto bad;
        p->T = tn[0]; p->n_full = tn[1];
        size_t T = (size_t)p->T;
        p->tokens = malloc(T * sizeof(int));
        p->top_ids = malloc(T * g->K * sizeof(int));
        p->top_vals = malloc(T * g->K * sizeof(float));
        p->fixed_vals = malloc(T * (g->NF + 1) * sizeof(float));
        p->full = malloc(((size_t)p->n_full * g->V + 1) * sizeof(float));
        if (!p->tokens || !p->top_ids || !p->top_vals || !p->fixed_vals || !p->full) goto bad;
        if (golden_read_(f, p->tokens, 4, T)) goto bad;
        for (size_t t = 0; t < T; t++)
            if (golden_read_(f, p->top_ids + t * g->K, 4, g->K) ||
                golden_read_(f, p->top_vals + t * g->K, 4, g->K) ||
                golden_read_(f, p->fixed_vals + t * g->NF, 4, g->NF)) goto bad;
        if (golden_read_(f, p->full, 4, (size_t)p->n_full * g->V)) goto bad;
    }
    fclose(f);
    return 0;
bad:
    fprintf(stderr, "%s: not a golden logits file (or truncated)\n", path);
    fclose(f);
    golden_free(g);
    return -1;
}

static inline int json_int_(json_t *o, const char *k, int def) {
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

static inline double json_num_(json_t *o, const char *k, double def) {
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : def;
}

/* Read dir/config.json and dir/model.safetensors (F32) into m. 0 or -1. */
static inline int tiny_load(cllm_model *m, const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *cj = json_load_file(path, 0, &je);
    if (!cj) { fprintf(stderr, "%s: %s\n", path, je.text); return -1; }
    cllm_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.arch, sizeof c.arch, "%s", json_string_value(json_object_get(cj, "model_type")) ?
             json_string_value(json_object_get(cj, "model_type")) : "llama");
    c.n_layer = json_int_(cj, "num_hidden_layers", 0);
    c.d_model = json_int_(cj, "hidden_size", 0);
    c.n_head = json_int_(cj, "num_attention_heads", 0);
    c.n_head_kv = json_int_(cj, "num_key_value_heads", c.n_head);
    c.head_dim = c.n_head ? c.d_model / c.n_head : 0;
    c.d_ff = json_int_(cj, "intermediate_size", 0);
    c.vocab = json_int_(cj, "vocab_size", 0);
    c.max_ctx = json_int_(cj, "max_position_embeddings", 0);
    c.rope_theta = (float)json_num_(cj, "rope_theta", 10000.0);
    c.rope_dim = c.head_dim;
    c.rms_eps = (float)json_num_(cj, "rms_norm_eps", 1e-6);
    c.tied = json_is_true(json_object_get(cj, "tie_word_embeddings"));
    c.qkv_bias = !strcmp(c.arch, "qwen2");
    c.bos_id = json_int_(cj, "bos_token_id", -1);
    c.eos_id = json_int_(cj, "eos_token_id", -1);
    c.pad_id = -1;
    json_decref(cj);
    if (cllm_model_alloc(m, &c)) { fprintf(stderr, "alloc: %s\n", cllm_errmsg()); return -1; }

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "%s: cannot open\n", path); cllm_model_free(m); return -1; }
    uint64_t hl = 0;
    char *hdr = NULL;
    json_t *h = NULL;
    int rc = -1, filled = 0;
    if (fread(&hl, 8, 1, f) != 1 || hl > (1u << 24)) goto out;
    hdr = malloc(hl + 1);
    if (!hdr || fread(hdr, 1, hl, f) != hl) goto out;
    hdr[hl] = 0;
    h = json_loads(hdr, 0, &je);
    if (!h) goto out;
    const char *name;
    json_t *v;
    json_object_foreach(h, name, v) {
        if (!strcmp(name, "__metadata__")) continue;
        const cllm_tensor_info *ti = cllm_model_tensor(m, name);
        json_t *off = json_object_get(v, "data_offsets");
        if (!ti || strcmp(json_string_value(json_object_get(v, "dtype")), "F32") || !off) {
            fprintf(stderr, "%s: unexpected tensor %s\n", path, name);
            goto out;
        }
        size_t a = (size_t)json_integer_value(json_array_get(off, 0));
        size_t b = (size_t)json_integer_value(json_array_get(off, 1));
        if (b - a != ti->numel * sizeof(float)) { fprintf(stderr, "%s: size of %s\n", path, name); goto out; }
        if (fseek(f, (long)(8 + hl + a), SEEK_SET) ||
            fread(m->params + ti->offset, sizeof(float), ti->numel, f) != ti->numel) goto out;
        filled++;
    }
    if (filled != m->n_tensors) { fprintf(stderr, "%s: %d of %d tensors\n", path, filled, m->n_tensors); goto out; }
    rc = 0;
out:
    if (rc && !filled) fprintf(stderr, "%s: bad safetensors file\n", path);
    json_decref(h);
    free(hdr);
    fclose(f);
    if (rc) cllm_model_free(m);
    return rc;
}

/* The config of a small model for random weights: arch ("llama", "qwen2"),
 * L layers of width C, NH heads of size HS over NKV kv heads, F, V, tied
 * embeddings, q/k/v biases; context 256, RoPE over the whole head with theta
 * 1e4, RMSNorm eps 1e-5, no special ids. Tests change fields after it. */
static inline cllm_config small_config(const char *arch, int L, int C, int NH, int NKV, int HS, int F, int V,
                                       int tied, int bias) {
    cllm_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    c.n_layer = L; c.d_model = C; c.n_head = NH; c.n_head_kv = NKV; c.head_dim = HS; c.d_ff = F;
    c.vocab = V; c.max_ctx = 256; c.rope_theta = 10000.0f; c.rope_dim = HS; c.rms_eps = 1e-5f;
    c.tied = tied; c.qkv_bias = bias; c.bos_id = c.eos_id = c.pad_id = -1;
    return c;
}

/* Weights ~ U(-a, a) with a = 1/sqrt(fan_in) (norms ~ 1 +- 0.1). */
static inline int random_model(cllm_model *m, const cllm_config *c, uint64_t seed) {
    if (cllm_model_alloc(m, c)) return -1;
    cllm_rng r;
    cllm_rng_seed(&r, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        const cllm_tensor_info *t = &m->tensors[i];
        float *p = m->params + t->offset;
        int norm = strstr(t->name, "norm") != NULL;
        float a = t->n_dims == 2 ? 1.0f / sqrtf((float)t->shape[1]) : 0.1f;
        for (size_t j = 0; j < t->numel; j++) {
            float u = 2.0f * cllm_rng_float(&r) - 1.0f;
            p[j] = norm ? 1.0f + 0.1f * u : a * u;
        }
    }
    return 0;
}

/* Lines of space-separated token ids; returns the count read (<= max). */
static inline int read_id_lines(const char *path, int max, int **ids, int *lens) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[65536];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        int cap = 0, len = 0;
        int *v = NULL;
        for (char *s = line, *e; ; s = e) {
            long x = strtol(s, &e, 10);
            if (e == s) break;
            if (len == cap) { cap = cap ? 2 * cap : 128; v = realloc(v, (size_t)cap * sizeof(int)); }
            v[len++] = (int)x;
        }
        ids[n] = v;
        lens[n++] = len;
    }
    fclose(f);
    return n;
}

#endif
