/* test_forward.c: the CPU forward pass against HF transformers (golden logits
 * from tests/golden/forward_golden.py), KV-cache rollback and several
 * sequences, thread-count invariance, argument errors, the bf16 reference
 * (cllm_model_round_bf16 + CLLM_FWD_BF16).
 *
 * Tolerance: relative error <= 1e-4 per logits row, with
 * relerr = max_i |ours_i - hf_i| / max_i |hf_i| (see row_relerr in
 * fwd_testutil.h). For rows stored partially (SmolLM2: top-5 and 64 fixed ids
 * per position), the scale is the largest stored |hf_i|, which is <= the
 * row's, so the check is stricter than on the full row.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "err.h"
#include "forward.h"
#include "fwd_testutil.h"
#include "kernels.h"
#include "model.h"

#define TOL 1e-4

static void test_tiny_golden(const cllm_model *m) {
    golden g;
    if (golden_load(&g, "tests/golden/tiny_logits.bin")) { CHECK(0); return; }
    CHECK_EQ_INT(g.V, m->cfg.vocab);
    cllm_fwd f;
    cllm_kv kv;
    CHECK_OK(cllm_fwd_init(&f, m, 64));
    CHECK_OK(cllm_kv_init(&kv, &m->cfg, 1, 128));
    double worst = 0;
    for (int i = 0; i < g.n; i++) {
        golden_prompt *p = &g.p[i];
        CHECK_OK(cllm_forward(&f, &kv, 0, 0, p->tokens, p->T, 0));
        CHECK_EQ_INT(p->n_full, p->T);
        for (int t = 0; t < p->T; t++) {
            double e = row_relerr(f.logits + (size_t)t * g.V, p->full + (size_t)t * g.V, g.V);
            if (e > worst) worst = e;
            CHECK_MSG(e <= TOL, "tiny prompt %d position %d: relerr %.3g", i, t, e);
            CHECK_EQ_INT(f.argmax[t], p->top_ids[(size_t)t * g.K]);
        }
    }
    printf("tiny-qwen2: worst row relerr %.3g over %d prompts\n", worst, g.n);
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    golden_free(&g);
    TEST_OK("tiny_golden");
}

/* Forward of a sequence in pieces, with rollbacks and other sequences in
 * between, equals the forward in one go. */
static void test_rollback(const cllm_model *m) {
    int V = m->cfg.vocab, N = 40;
    int tok[41], junk[8];
    cllm_rng r;
    cllm_rng_seed(&r, 99);
    for (int i = 0; i < 41; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    for (int i = 0; i < 8; i++) junk[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    cllm_fwd f;
    cllm_kv kv;
    CHECK_OK(cllm_fwd_init(&f, m, 64));
    CHECK_OK(cllm_kv_init(&kv, &m->cfg, 3, 64));
    float *one = malloc((size_t)N * V * sizeof(float));
    float *pcs = malloc((size_t)N * V * sizeof(float));
    CHECK_OK(cllm_forward(&f, &kv, 0, 0, tok, N, 0));
    memcpy(one, f.logits, (size_t)N * V * sizeof(float));

    /* sequence 1 in pieces: [0,10), junk, rollback, [10,11), [11,25), junk, [25,40) */
#define PIECE(pos, T) do { CHECK_OK(cllm_forward(&f, &kv, 1, pos, tok + (pos), T, 0)); \
        memcpy(pcs + (size_t)(pos) * V, f.logits, (size_t)(T) * V * sizeof(float)); } while (0)
    PIECE(0, 10);
    CHECK_OK(cllm_forward(&f, &kv, 1, 10, junk, 6, 0));
    CHECK_EQ_INT(cllm_kv_len(&kv, 1), 16);
    CHECK_OK(cllm_kv_rollback(&kv, 1, 10));
    CHECK_OK(cllm_forward(&f, &kv, 2, 0, junk, 8, 8));         /* another sequence */
    PIECE(10, 1);
    PIECE(11, 14);
    CHECK_OK(cllm_forward(&f, &kv, 1, 25, junk, 3, 3));
    CHECK_OK(cllm_forward(&f, &kv, 2, 8, tok, 5, 5));
    PIECE(25, 15);                                             /* pos < len: implicit rollback */
#undef PIECE
    CHECK_EQ_INT(cllm_kv_len(&kv, 1), N);
    double worst = 0;
    for (int t = 0; t < N; t++) {
        double e = row_relerr(pcs + (size_t)t * V, one + (size_t)t * V, V);
        if (e > worst) worst = e;
        CHECK_MSG(e <= 1e-5, "position %d: pieces vs one go relerr %.3g", t, e);
    }
    /* The next token after the same 40 tokens, in sequence 0 and in sequence 1
     * (caches built in one go and in pieces: equal up to rounding). */
    CHECK_OK(cllm_forward(&f, &kv, 0, N, tok + N, 1, 0));
    memcpy(one, f.logits, (size_t)V * sizeof(float));
    CHECK_OK(cllm_forward(&f, &kv, 1, N, tok + N, 1, 0));
    double e1 = row_relerr(f.logits, one, V);
    CHECK_MSG(e1 <= 1e-5, "next token, sequence 1 vs 0: relerr %.3g", e1);
    printf("rollback: worst relerr pieces vs one go %.3g\n", worst);
    free(one);
    free(pcs);
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    TEST_OK("kv_rollback");
}

/* The result must not depend on the thread count (every output element is
 * reduced by one thread in a fixed order). */
static void test_threads(const cllm_model *m) {
    int V = m->cfg.vocab, N = 48;
    int tok[48];
    for (int i = 0; i < N; i++) tok[i] = (i * 37 + 5) % V;
    cllm_fwd f;
    cllm_kv kv;
    CHECK_OK(cllm_fwd_init(&f, m, 64));
    CHECK_OK(cllm_kv_init(&kv, &m->cfg, 1, 64));
    float *a = malloc((size_t)N * V * sizeof(float));
    kernels_set_threads(1);
    CHECK_OK(cllm_forward(&f, &kv, 0, 0, tok, N, 0));
    memcpy(a, f.logits, (size_t)N * V * sizeof(float));
    kernels_set_threads(3);
    CHECK_OK(cllm_forward(&f, &kv, 0, 0, tok, N, 0));
    double e = row_relerr(f.logits, a, N * V);
    CHECK_MSG(e <= 1e-6, "1 vs 3 threads: relerr %.3g", e);
    kernels_set_threads(2);
    free(a);
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    TEST_OK("threads");
}

/* The pool's sizes: a wider job (start-up work, kernels_parallel_n) grows it;
 * the next job at the --threads size runs on that many threads only (its
 * callers size per-thread scratch by kernels_threads()). Each task waits
 * 0.5 ms, so that every started worker takes some. */
typedef struct pool_probe { int runs[64]; int max_worker; pthread_mutex_t mu; } pool_probe;

static void probe_task(void *ctx, int task, int worker) {
    pool_probe *p = ctx;
    usleep(500);
    pthread_mutex_lock(&p->mu);
    p->runs[task]++;
    if (worker > p->max_worker) p->max_worker = worker;
    pthread_mutex_unlock(&p->mu);
}

static int probe(int n_threads, int wide) {
    pool_probe p = {.max_worker = -1, .mu = PTHREAD_MUTEX_INITIALIZER};
    if (wide) kernels_parallel_n(n_threads, 64, probe_task, &p);
    else kernels_parallel(64, probe_task, &p);
    for (int i = 0; i < 64; i++) CHECK_MSG(p.runs[i] == 1, "task %d ran %d times", i, p.runs[i]);
    return p.max_worker;
}

static void test_pool_sizes(void) {
    kernels_set_threads(2);
    int w = probe(5, 1);
    CHECK_MSG(w >= 2 && w <= 4, "a job on 5 threads: workers up to %d", w);
    w = probe(2, 0);
    CHECK_MSG(w <= 1, "the next job at --threads 2 ran on worker %d", w);
    CHECK_EQ_INT(probe(1, 1), 0);
    kernels_set_threads(3);
    w = probe(3, 0);
    CHECK_MSG(w >= 1 && w <= 2, "--threads 3: workers up to %d", w);
    kernels_set_threads(2);
    TEST_OK("pool: grown for a wide job, back to --threads for the next");
}

/* A ragged batch (a Jacobi window, an AR step, a prompt chunk with only its
 * last row through the LM head, and a fresh prompt with none) in one call
 * gives every sequence the logits, argmax and cache rows it gets alone.
 * Tolerance: 0 (bit for bit) on CPUs with AVX-512, whose matmul sums every
 * output in a fixed order whatever the row count (kernels/cpu/matmul.c);
 * elsewhere BLAS may reassociate with the row count: 1e-5 of the row's scale. */
static void test_batch(const cllm_model *m, const char *name) {
    int V = m->cfg.vocab, KD = m->cfg.n_head_kv * m->cfg.head_dim;
    double tol = __builtin_cpu_supports("avx512f") ? 0.0 : 1e-5;
    enum { NS = 4 };
    /* per sequence: history length (cached before), new tokens, lm_from */
    const int hist[NS] = {20, 9, 30, 0}, newT[NS] = {16, 1, 12, 7}, lmf[NS] = {0, 0, 11, 7};
    const int seqs[NS] = {2, 0, 3, 1};   /* cache slots, not in call order */
    int tok[NS][48];
    for (int b = 0; b < NS; b++)
        for (int i = 0; i < 48; i++) tok[b][i] = (i * 31 + b * 17 + 3) % V;
    cllm_fwd f, g;
    cllm_kv kb, ks;
    CHECK_OK(cllm_fwd_init(&f, m, 40));
    CHECK_OK(cllm_fwd_init(&g, m, 40));
    CHECK_OK(cllm_kv_init(&kb, &m->cfg, NS, 64));
    CHECK_OK(cllm_kv_init(&ks, &m->cfg, NS, 64));
    if (check_failures) return;
    for (int b = 0; b < NS; b++)
        if (hist[b]) {
            CHECK_OK(cllm_forward(&f, &kb, seqs[b], 0, tok[b], hist[b], hist[b]));
            CHECK_OK(cllm_forward(&g, &ks, seqs[b], 0, tok[b], hist[b], hist[b]));
        }
    cllm_fwd_seq s[NS];
    int in[40], R = 0, row0[NS];
    for (int b = 0; b < NS; b++) {
        s[b] = (cllm_fwd_seq){seqs[b], hist[b], newT[b], lmf[b]};
        row0[b] = R;
        memcpy(in + R, tok[b] + hist[b], (size_t)newT[b] * sizeof(int));
        R += newT[b];
    }
    CHECK_OK(cllm_forward_batch(&f, &kb, s, NS, in));
    double worst = 0;
    for (int b = 0; b < NS; b++) {
        CHECK_OK(cllm_forward(&g, &ks, seqs[b], hist[b], tok[b] + hist[b], newT[b], lmf[b]));
        CHECK_EQ_INT(cllm_kv_len(&kb, seqs[b]), hist[b] + newT[b]);
        for (int t = lmf[b]; t < newT[b]; t++) {
            double e = row_relerr(f.logits + (size_t)(row0[b] + t) * V, g.logits + (size_t)t * V, V);
            if (e > worst) worst = e;
            CHECK_MSG(e <= tol, "%s: sequence %d row %d: batched vs alone relerr %.3g", name, b, t, e);
            CHECK_EQ_INT(f.argmax[row0[b] + t], g.argmax[t]);
        }
        for (int l = 0; l < m->cfg.n_layer; l++) {   /* the cache rows written */
            size_t off = (((size_t)l * NS + seqs[b]) * 64) * KD, n = (size_t)(hist[b] + newT[b]) * KD;
            double e = row_relerr(kb.k + off, ks.k + off, (int)n), e2 = row_relerr(kb.v + off, ks.v + off, (int)n);
            CHECK_MSG(e <= tol && e2 <= tol, "%s: sequence %d layer %d: cache differs (%.3g, %.3g)", name, b, l, e, e2);
        }
    }
    /* argument errors change nothing */
    int len0 = cllm_kv_len(&kb, 0);
    cllm_fwd_seq twice[2] = {{0, len0, 1, 0}, {0, len0, 1, 0}};
    CHECK_EQ_INT(cllm_forward_batch(&f, &kb, twice, 2, in), CLLM_EINVAL);
    cllm_fwd_seq wide[2] = {{0, len0, 30, 0}, {1, cllm_kv_len(&kb, 1), 11, 0}};   /* 41 rows > 40 */
    CHECK_EQ_INT(cllm_forward_batch(&f, &kb, wide, 2, in), CLLM_EINVAL);
    CHECK_EQ_INT(cllm_kv_len(&kb, 0), len0);
    printf("%s: ragged batch of %d sequences (%d rows) vs each alone: worst relerr %.3g (tolerance %g)\n", name,
           NS, R, worst, tol);
    cllm_kv_free(&kb);
    cllm_kv_free(&ks);
    cllm_fwd_free(&f);
    cllm_fwd_free(&g);
    TEST_OK("batch");
}

/* The LM head's rows moved to their slots when a later sequence's rows
 * land on slots that still hold compact results: sequence 0 wants its last
 * row only (row 3), sequence 1 every row (rows 4..6), so the 4 compact rows
 * 0..3 go to rows 3..6. Each sequence's logits and argmax must be those it
 * gets alone (tolerance as test_batch's). */
static void test_lm_rows(const cllm_model *m) {
    int V = m->cfg.vocab;
    double tol = __builtin_cpu_supports("avx512f") ? 0.0 : 1e-5;
    int tok[7] = {5, 17, 3, 9, 40, 2, 11};
    cllm_fwd f, g;
    cllm_kv kb, ks;
    CHECK_OK(cllm_fwd_init(&f, m, 8));
    CHECK_OK(cllm_fwd_init(&g, m, 8));
    CHECK_OK(cllm_kv_init(&kb, &m->cfg, 2, 8));
    CHECK_OK(cllm_kv_init(&ks, &m->cfg, 2, 8));
    if (check_failures) return;
    cllm_fwd_seq s[2] = {{0, 0, 4, 3}, {1, 0, 3, 0}};
    CHECK_OK(cllm_forward_batch(&f, &kb, s, 2, tok));
    CHECK_OK(cllm_forward(&g, &ks, 0, 0, tok, 4, 3));
    double e = row_relerr(f.logits + (size_t)3 * V, g.logits + (size_t)3 * V, V);
    CHECK_MSG(e <= tol, "sequence 0 row 3: batched vs alone relerr %.3g", e);
    CHECK_EQ_INT(f.argmax[3], g.argmax[3]);
    CHECK_OK(cllm_forward(&g, &ks, 1, 0, tok + 4, 3, 0));
    for (int t = 0; t < 3; t++) {
        e = row_relerr(f.logits + (size_t)(4 + t) * V, g.logits + (size_t)t * V, V);
        CHECK_MSG(e <= tol, "sequence 1 row %d: batched vs alone relerr %.3g", t, e);
        CHECK_EQ_INT(f.argmax[4 + t], g.argmax[t]);
    }
    cllm_kv_free(&kb);
    cllm_kv_free(&ks);
    cllm_fwd_free(&f);
    cllm_fwd_free(&g);
    TEST_OK("lm rows moved over compact rows");
}

/* Gate and up apart (a model whose w_up does not follow w_gate: the
 * unfused branch of forward_cpu, which no model of cllm_model_alloc takes)
 * give the fused forward's logits: the same products, row by row (bit for
 * bit on AVX-512, matmul.c; 1e-5 of the row's scale elsewhere). */
static void test_unfused(cllm_model *m) {
    int V = m->cfg.vocab, L = m->cfg.n_layer, T = 9;
    size_t FC = (size_t)m->cfg.d_ff * m->cfg.d_model;
    double tol = __builtin_cpu_supports("avx512f") ? 0.0 : 1e-5;
    int tok[9] = {3, 1, 4, 1, 5, 9, 2, 6, 5};
    float *up = malloc((size_t)L * FC * sizeof(float)), *a = malloc((size_t)T * V * sizeof(float));
    float **keep = malloc((size_t)L * sizeof(float *));
    cllm_fwd f;
    cllm_kv kv;
    CHECK_OK(cllm_fwd_init(&f, m, T));
    CHECK_OK(cllm_kv_init(&kv, &m->cfg, 1, T));
    CHECK_OK(cllm_forward(&f, &kv, 0, 0, tok, T, 0));
    memcpy(a, f.logits, (size_t)T * V * sizeof(float));
    cllm_fwd_free(&f);
    for (int l = 0; l < L; l++) {
        keep[l] = m->layers[l].w_up;
        memcpy(up + l * FC, keep[l], FC * sizeof(float));
        m->layers[l].w_up = up + l * FC;
    }
    CHECK_OK(cllm_fwd_init(&f, m, T));
    CHECK_MSG(!f.gate_up_fused, "gate and up apart, yet fused");
    CHECK_OK(cllm_forward(&f, &kv, 0, 0, tok, T, 0));
    double e = row_relerr(f.logits, a, T * V);
    CHECK_MSG(e <= tol, "gate and up apart vs fused: relerr %.3g", e);
    for (int l = 0; l < L; l++) m->layers[l].w_up = keep[l];
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    free(up); free(a); free(keep);
    TEST_OK("gate and up as two products");
}

/* cllm_kv_grow keeps every cached sequence: continuing after a growth gives
 * what a cache made large from the start gives (bit for bit: same rows,
 * same arithmetic). */
static void test_grow(const cllm_model *m) {
    int V = m->cfg.vocab;
    int tok[32];
    for (int i = 0; i < 32; i++) tok[i] = (i * 13 + 7) % V;
    cllm_fwd f;
    cllm_kv small, big;
    CHECK_OK(cllm_fwd_init(&f, m, 16));
    CHECK_OK(cllm_kv_init(&small, &m->cfg, 2, 16));
    CHECK_OK(cllm_kv_init(&big, &m->cfg, 2, 40));
    if (check_failures) return;
    float *a = malloc((size_t)8 * V * sizeof(float));
    CHECK_OK(cllm_forward(&f, &small, 0, 0, tok, 10, 10));
    CHECK_OK(cllm_forward(&f, &small, 1, 0, tok + 3, 5, 5));
    CHECK_OK(cllm_kv_grow(&small, 40));
    CHECK_EQ_INT(small.cap, 40);
    CHECK_EQ_INT(cllm_kv_len(&small, 0), 10);
    CHECK_EQ_INT(cllm_kv_len(&small, 1), 5);
    CHECK_OK(cllm_forward(&f, &small, 0, 10, tok + 10, 8, 0));
    memcpy(a, f.logits, (size_t)8 * V * sizeof(float));
    CHECK_OK(cllm_forward(&f, &big, 0, 0, tok, 10, 10));
    CHECK_OK(cllm_forward(&f, &big, 0, 10, tok + 10, 8, 0));
    CHECK_MSG(!memcmp(a, f.logits, (size_t)8 * V * sizeof(float)), "continuing after cllm_kv_grow differs");
    /* the other sequence too (the last one of the cache) */
    CHECK_OK(cllm_forward(&f, &small, 1, 5, tok + 8, 6, 0));
    memcpy(a, f.logits, (size_t)6 * V * sizeof(float));
    CHECK_OK(cllm_forward(&f, &big, 1, 0, tok + 3, 5, 5));
    CHECK_OK(cllm_forward(&f, &big, 1, 5, tok + 8, 6, 0));
    CHECK_MSG(!memcmp(a, f.logits, (size_t)6 * V * sizeof(float)), "sequence 1 after cllm_kv_grow differs");
    CHECK_OK(cllm_kv_grow(&small, 20));   /* smaller than it is: nothing to do */
    CHECK_EQ_INT(small.cap, 40);
    free(a);
    cllm_kv_free(&small);
    cllm_kv_free(&big);

    /* cllm_kv_reserve: made on first use, then grown by doubling, keeping
     * what is cached */
    cllm_kv kv = {0};
    CHECK_OK(cllm_kv_reserve(&kv, &f, 2, 30));
    CHECK_EQ_INT(kv.cap, 512);
    CHECK_EQ_INT(kv.n_seq, 2);
    CHECK_OK(cllm_forward(&f, &kv, 1, 0, tok, 7, 7));
    CHECK_OK(cllm_kv_reserve(&kv, &f, 2, 512));   /* it fits: unchanged */
    CHECK_EQ_INT(kv.cap, 512);
    CHECK_OK(cllm_kv_reserve(&kv, &f, 2, 513));
    CHECK_EQ_INT(kv.cap, 1024);
    CHECK_EQ_INT(cllm_kv_len(&kv, 1), 7);
    CHECK(cllm_kv_reserve(&kv, &f, 2, (1 << 30) + 1) == CLLM_ELIMIT && strstr(cllm_errmsg(), "too long"));
    CHECK_EQ_INT(kv.cap, 1024);
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    TEST_OK("kv_grow, kv_reserve");
}

/* The doubling stops at the device's limit: a context between the last
 * power of two and the limit fits (the CUDA attention holds some 50k keys
 * of head size 64 on an H100; doubled, 40,000 became 65,536 and was
 * refused). */
static void test_kv_next_cap(void) {
    CHECK_EQ_INT(cllm_kv_next_cap(0, 1, 1 << 30), 512);
    CHECK_EQ_INT(cllm_kv_next_cap(0, 600, 1 << 30), 1024);
    CHECK_EQ_INT(cllm_kv_next_cap(512, 513, 1 << 30), 1024);
    CHECK_EQ_INT(cllm_kv_next_cap(1024, 700, 1 << 30), 1024);    /* holds it already */
    CHECK_EQ_INT(cllm_kv_next_cap(0, 40000, 50000), 50000);       /* clamped, not refused */
    CHECK_EQ_INT(cllm_kv_next_cap(32768, 32769, 50000), 50000);
    CHECK_EQ_INT(cllm_kv_next_cap(32768, 50000, 50000), 50000);
    CHECK_EQ_INT(cllm_kv_next_cap(0, 300, 400), 400);             /* a limit under 512 */
    CHECK_EQ_INT(cllm_kv_next_cap(50000, 50001, 50000), -1);
    CHECK_EQ_INT(cllm_kv_next_cap(0, 1 << 30, 1 << 30), 1 << 30);
    TEST_OK("kv_next_cap: doubling, clamped to the device's limit");
}

static void test_errors(const cllm_model *m) {
    cllm_fwd f;
    cllm_kv kv;
    CHECK_OK(cllm_fwd_init(&f, m, 8));
    CHECK_OK(cllm_kv_init(&kv, &m->cfg, 2, 16));
    int tok[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    CHECK_OK(cllm_forward(&f, &kv, 0, 0, tok, 4, 4));
    int bad[2] = {1, m->cfg.vocab};
    CHECK_EQ_INT(cllm_forward(&f, &kv, 0, 4, bad, 2, 0), CLLM_EINVAL);
    CHECK_EQ_INT(cllm_kv_len(&kv, 0), 4);                        /* unchanged */
    bad[1] = -1;
    CHECK_EQ_INT(cllm_forward(&f, &kv, 0, 4, bad, 2, 0), CLLM_EINVAL);
    CHECK_EQ_INT(cllm_forward(&f, &kv, 0, 0, tok, 9, 0), CLLM_EINVAL);   /* T > max_T */
    CHECK_EQ_INT(cllm_forward(&f, &kv, 0, 5, tok, 1, 0), CLLM_EINVAL);   /* gap */
    CHECK_EQ_INT(cllm_forward(&f, &kv, 2, 0, tok, 1, 0), CLLM_EINVAL);   /* no such seq */
    CHECK_EQ_INT(cllm_forward(&f, &kv, 0, 4, tok, 2, 3), CLLM_EINVAL);   /* lm_from > T */
    CHECK_OK(cllm_forward(&f, &kv, 0, 4, tok, 8, 8));
    CHECK_OK(cllm_forward(&f, &kv, 0, 12, tok, 4, 4));
    CHECK_EQ_INT(cllm_forward(&f, &kv, 0, 16, tok, 1, 0), CLLM_ELIMIT);  /* cache full */
    CHECK_EQ_INT(cllm_kv_rollback(&kv, 0, 17), CLLM_EINVAL);
    CHECK_EQ_INT(cllm_kv_rollback(&kv, 0, -1), CLLM_EINVAL);
    CHECK_OK(cllm_kv_rollback(&kv, 0, 0));
    CHECK_EQ_INT(cllm_kv_len(&kv, 0), 0);
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    TEST_OK("errors");
}

/* The bounds of forward.h, each at its edge: what it allows passes, one
 * past it is refused (and changes nothing). */
static void test_bounds(const cllm_model *m) {
    cllm_fwd f;
    cllm_kv kv, other;
    CHECK_EQ_INT(cllm_fwd_init(&f, m, 0), CLLM_EINVAL);           /* max_T >= 1 */
    CHECK_EQ_INT(cllm_kv_init(&kv, &m->cfg, 0, 16), CLLM_EINVAL);  /* n_seq >= 1 */
    CHECK_EQ_INT(cllm_kv_init(&kv, &m->cfg, 2, 0), CLLM_EINVAL);   /* cap >= 1 */
    CHECK_OK(cllm_fwd_init(&f, m, 8));
    CHECK_OK(cllm_kv_init(&kv, &m->cfg, 2, 16));
    if (check_failures) return;
    int tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK_OK(cllm_forward(&f, &kv, 1, 0, tok, 3, 3));
    CHECK_EQ_INT(cllm_kv_len(&kv, 1), 3);
    CHECK_EQ_INT(cllm_kv_len(&kv, 2), 0);                          /* no such sequence: 0 */
    CHECK_EQ_INT(cllm_kv_len(&kv, -1), 0);
    /* 6 sequences: their lengths fill the allocator's chunk, so one past
     * them is the next chunk's header (ASan's report in any case) */
    CHECK_OK(cllm_kv_init(&other, &m->cfg, 6, 4));
    CHECK_EQ_INT(cllm_kv_len(&other, 6), 0);
    CHECK_EQ_INT(cllm_kv_len(&other, 5), 0);
    cllm_kv_free(&other);
    CHECK_OK(cllm_kv_rollback(&kv, 1, 3));                         /* len <= its length */
    CHECK_EQ_INT(cllm_kv_rollback(&kv, 2, 0), CLLM_EINVAL);
    CHECK_EQ_INT(cllm_kv_rollback(&kv, -1, 0), CLLM_EINVAL);
    CHECK_EQ_INT(cllm_kv_len(&kv, 1), 3);
    /* every refused call leaves sequence 1 at 3 */
    cllm_fwd_seq s2[2] = {{0, 0, 4, 4}, {1, 3, 4, 4}};              /* 8 rows = max_T: allowed */
    CHECK_EQ_INT(cllm_forward_batch(&f, &kv, s2, 0, tok), CLLM_EINVAL);   /* B >= 1 */
    CHECK_EQ_INT(cllm_forward(&f, &kv, 1, 3, tok, 0, 0), CLLM_EINVAL);    /* T >= 1 */
    CHECK_EQ_INT(cllm_forward(&f, &kv, -1, 0, tok, 1, 0), CLLM_EINVAL);   /* seq >= 0 */
    CHECK_EQ_INT(cllm_forward(&f, &kv, 1, -1, tok, 1, 0), CLLM_EINVAL);   /* pos >= 0 */
    CHECK_EQ_INT(cllm_forward(&f, &kv, 1, 3, tok, 1, -1), CLLM_EINVAL);   /* lm_from >= 0 */
    cllm_config c = m->cfg;
    c.n_layer++;
    CHECK_OK(cllm_kv_init(&other, &c, 2, 16));                     /* another model's cache */
    CHECK_EQ_INT(cllm_forward(&f, &other, 1, 0, tok, 1, 0), CLLM_EINVAL);
    cllm_kv_free(&other);
    c = m->cfg;
    c.n_head_kv = c.n_head;
    CHECK_OK(cllm_kv_init(&other, &c, 2, 16));
    CHECK_EQ_INT(cllm_forward(&f, &other, 1, 0, tok, 1, 0), CLLM_EINVAL);
    cllm_kv_free(&other);
    int tok9[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    cllm_fwd_seq s9[2] = {{0, 0, 4, 4}, {1, 3, 5, 5}};              /* 9 rows > max_T, valid ids */
    CHECK_EQ_INT(cllm_forward_batch(&f, &kv, s9, 2, tok9), CLLM_EINVAL);
    CHECK_EQ_INT(cllm_kv_len(&kv, 0), 0);
    CHECK_EQ_INT(cllm_kv_len(&kv, 1), 3);
    CHECK_OK(cllm_forward_batch(&f, &kv, s2, 2, tok));
    CHECK_EQ_INT(cllm_kv_len(&kv, 0), 4);
    CHECK_EQ_INT(cllm_kv_len(&kv, 1), 7);
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    TEST_OK("bounds of the KV cache and of a call");
}

/* SmolLM2-135M-Instruct from its GGUF against HF fp32 on the same
 * dequantized weights. */
static void test_smollm2_golden(void) {
    cllm_model m;
    const char *path = test_model_path();
    int rc = cllm_model_load(&m, path);
    if (rc == CLLM_EUNSUP) {   /* loader not there yet in this build */
        printf("skip smollm2_golden: %s\n", cllm_errmsg());
        return;
    }
    CHECK_OK(rc);
    if (rc) return;
    golden g;
    if (golden_load(&g, "tests/golden/smollm2_logits.bin")) { CHECK(0); cllm_model_free(&m); return; }
    CHECK_EQ_INT(g.V, m.cfg.vocab);
    cllm_fwd f;
    cllm_kv kv;
    int maxT = 0;
    for (int i = 0; i < g.n; i++) if (g.p[i].T > maxT) maxT = g.p[i].T;
    CHECK_OK(cllm_fwd_init(&f, &m, maxT));
    CHECK_OK(cllm_kv_init(&kv, &m.cfg, 1, maxT));
    double worst = 0;
    float *ref = malloc((size_t)(g.K + g.NF) * sizeof(float));
    float *ours = malloc((size_t)(g.K + g.NF) * sizeof(float));
    for (int i = 0; i < g.n && !check_failures; i++) {
        golden_prompt *p = &g.p[i];
        CHECK_OK(cllm_forward(&f, &kv, 0, 0, p->tokens, p->T, 0));
        for (int t = 0; t < p->T; t++) {
            const float *row = f.logits + (size_t)t * g.V;
            for (int k = 0; k < g.K; k++) {
                ref[k] = p->top_vals[(size_t)t * g.K + k];
                ours[k] = row[p->top_ids[(size_t)t * g.K + k]];
            }
            for (int k = 0; k < g.NF; k++) {
                ref[g.K + k] = p->fixed_vals[(size_t)t * g.NF + k];
                ours[g.K + k] = row[g.fixed_ids[k]];
            }
            double e = row_relerr(ours, ref, g.K + g.NF);
            if (e > worst) worst = e;
            CHECK_MSG(e <= TOL, "prompt %d position %d: relerr %.3g", i, t, e);
            int top = p->top_ids[(size_t)t * g.K];
            float margin = p->top_vals[(size_t)t * g.K] - p->top_vals[(size_t)t * g.K + 1];
            if (f.argmax[t] != top)
                printf("prompt %d position %d: argmax %d vs HF %d (HF top-2 margin %.3g)\n",
                       i, t, f.argmax[t], top, margin);
            CHECK_MSG(f.argmax[t] == top || margin < 1e-3f, "prompt %d position %d: argmax %d vs %d",
                      i, t, f.argmax[t], top);
        }
        for (int r = 0; r < p->n_full; r++) {
            int t = p->T - p->n_full + r;
            double e = row_relerr(f.logits + (size_t)t * g.V, p->full + (size_t)r * g.V, g.V);
            if (e > worst) worst = e;
            CHECK_MSG(e <= TOL, "prompt %d last position %d (full row): relerr %.3g", i, t, e);
        }
    }
    printf("smollm2: worst relerr %.3g over %d prompts (tolerance %g)\n", worst, g.n, TOL);
    free(ref);
    free(ours);
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    golden_free(&g);
    cllm_model_free(&m);
    TEST_OK("smollm2_golden");
}

/* 1 when every value is a bf16 value (its low 16 bits zero). */
static int all_bf16(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        if (u & 0xffffu) return 0;
    }
    return 1;
}

/* cllm_model_round_bf16 and CLLM_FWD_BF16, the CPU reference with the CUDA
 * backend's roundings: the matrices become bf16 values within half a bf16
 * ulp (2^-8 relative), norms and biases stay; a forward with the flag leaves
 * bf16 values where the device keeps bf16 (the cache rows, the attention and
 * SwiGLU outputs, the normed rows of the LM head) and its logits differ from
 * the fp32 forward's by a bf16-sized error: > 0 and <= tol of the row's
 * scale. The prompts: n rows of ids (each run in 64-token chunks from
 * position 0), or with ids NULL one synthetic prompt of 24 tokens. The worst
 * error is printed: on SmolLM2 it is bf16's own error on this measure, the
 * floor under the GPU's (docs/CUDA.md "Parity"). */
static void test_bf16(const char *name, const char *path, int *const *ids, const int *lens, int n, double tol) {
    cllm_model m, m16;
    if (cllm_model_load(&m, path)) {
        CHECK_MSG(0, "%s: %s", path, cllm_errmsg());
        return;
    }
    if (cllm_model_load(&m16, path)) {
        CHECK_MSG(0, "%s: %s", path, cllm_errmsg());
        cllm_model_free(&m);
        return;
    }
    cllm_model_round_bf16(&m16);
    const cllm_config *c = &m.cfg;
    size_t C = c->d_model, V = c->vocab, KD = (size_t)c->n_head_kv * c->head_dim;
    size_t changed = 0, off_grid = 0, too_far = 0;
    for (int t = 0; t < m.n_tensors; t++) {
        const cllm_tensor_info *ti = &m.tensors[t];
        const float *a = m.params + ti->offset, *b = m16.params + ti->offset;
        int matrix = ti->n_dims == 2;   /* embeddings and projections; norms and biases are vectors */
        for (size_t i = 0; i < ti->numel; i++) {
            if (!matrix) {
                off_grid += a[i] != b[i];
                continue;
            }
            changed += a[i] != b[i];
            off_grid += !all_bf16(&b[i], 1);
            too_far += fabs((double)a[i] - b[i]) > fabs((double)a[i]) / 256;
        }
    }
    CHECK_MSG(changed > 0 && off_grid == 0 && too_far == 0, "%s round_bf16: %zu changed, %zu off the grid, %zu too far",
              name, changed, off_grid, too_far);

    enum { CH = 64 };
    int synth[24], one = 24;
    if (!ids) {
        for (int i = 0; i < one; i++) synth[i] = (i * 41 + 7) % (int)V;
        n = 1;
        lens = &one;
    }
    int cap = 0;
    for (int i = 0; i < n; i++) cap = lens[i] > cap ? lens[i] : cap;
    cllm_fwd f, f16;
    cllm_kv kv, kv16;
    CHECK_OK(cllm_fwd_init(&f, &m, CH));
    CHECK_OK(cllm_fwd_init_on(&f16, &m16, CH, CLLM_DEVICE_CPU, CLLM_FWD_BF16));
    CHECK_OK(cllm_kv_init(&kv, c, 1, cap));
    CHECK_OK(cllm_kv_init(&kv16, c, 1, cap));
    double worst = 0, worst_l2 = 0, sum = 0;
    int rows = 0;
    for (int i = 0; i < n && !check_failures; i++) {
        const int *tok = ids ? ids[i] : synth;
        for (int s = 0; s < lens[i]; s += CH) {
            int T = lens[i] - s < CH ? lens[i] - s : CH;
            CHECK_OK(cllm_forward(&f, &kv, 0, s, tok + s, T, 0));
            CHECK_OK(cllm_forward(&f16, &kv16, 0, s, tok + s, T, 0));
            if (check_failures) break;
            for (int t = 0; t < T; t++) {
                double e = row_relerr(f16.logits + (size_t)t * V, f.logits + (size_t)t * V, (int)V);
                if (e > worst) worst = e;
                sum += e;
                double e2 = row_l2relerr(f16.logits + (size_t)t * V, f.logits + (size_t)t * V, (int)V);
                if (e2 > worst_l2) worst_l2 = e2;
            }
            CHECK_MSG(all_bf16(f16.ao, (size_t)T * c->n_head * c->head_dim) && all_bf16(f16.h, (size_t)T * c->d_ff) &&
                          all_bf16(f16.xn, (size_t)T * C),
                      "%s bf16 forward: a product's input not bf16", name);
            CHECK_MSG(!all_bf16(f.h, (size_t)T * c->d_ff), "%s fp32 forward: SwiGLU outputs all bf16 values", name);
            rows += T;
        }
        size_t cache = (size_t)c->n_layer * kv16.n_seq * kv16.cap * KD;
        CHECK_MSG(all_bf16(kv16.k, cache) && all_bf16(kv16.v, cache), "%s bf16 forward: cache rows not bf16", name);
    }
    CHECK_MSG(worst > 0 && worst <= tol, "%s bf16 forward vs fp32: worst row relerr %.3g (bar %.0e)", name, worst, tol);
    printf("%s: the CPU with the CUDA backend's bf16 roundings vs fp32: worst row relerr %.3g over %d rows "
           "(mean %.3g; norm-wise, ||a - b|| / ||b||: worst row %.3g)\n", name, worst, rows, rows ? sum / rows : 0.0,
           worst_l2);
    cllm_kv_free(&kv);
    cllm_kv_free(&kv16);
    cllm_fwd_free(&f);
    cllm_fwd_free(&f16);
    cllm_model_free(&m);
    cllm_model_free(&m16);
    TEST_OK("bf16 reference");
}

int main(void) {
    kernels_set_threads(2);
    cllm_model m;
    if (tiny_load(&m, "tests/golden/tiny-qwen2")) {
        CHECK(0);
        TEST_END();
    }
    test_tiny_golden(&m);
    test_rollback(&m);
    test_threads(&m);
    test_pool_sizes();
    test_errors(&m);
    test_bounds(&m);
    test_lm_rows(&m);
    test_unfused(&m);
    test_batch(&m, "tiny-qwen2");
    test_grow(&m);
    test_kv_next_cap();
    cllm_model_free(&m);
    /* the same model through the project's HF loader */
    int rc = cllm_model_load(&m, "tests/golden/tiny-qwen2");
    CHECK_OK(rc);
    if (!rc) {
        CHECK(m.cfg.qkv_bias && !m.cfg.tied && m.cfg.n_head_kv == 2);
        test_tiny_golden(&m);
        test_batch(&m, "tiny-qwen2 (gate/up as one product)");
        cllm_model_free(&m);
    }
    test_bf16("tiny-qwen2", "tests/golden/tiny-qwen2", NULL, NULL, 0, 2e-2);
    test_smollm2_golden();
    {   /* SmolLM2 (when $CLLM_MODEL loads): test_cuda's first 3 GSM8K prompts, its bar for bf16 */
        int *ids[3], lens[3], np = read_id_lines("tests/golden/gsm8k20_ids.txt", 3, ids, lens);
        if (np == 3 && access(test_model_path(), R_OK) == 0)
            test_bf16("smollm2", test_model_path(), ids, lens, np, 5e-2);
        for (int i = 0; i < np; i++) free(ids[i]);
    }
    if (!cllm_model_load(&m, test_model_path())) {
        test_batch(&m, "smollm2");
        cllm_model_free(&m);
    }
    TEST_END();
}
