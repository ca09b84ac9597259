/* test_backward.c: the training forward and backward pass (libcore/train_fwd.c
 * and the <op>_backward kernels).
 *
 *  1. forward_equal: the training forward's logits equal cllm_forward's (the
 *     inference path with a KV cache) row by row, relerr <= 1e-5 (the same
 *     kernels on the same rows; only the matmul path may differ with the row
 *     count, i.e. summation order, ~1e-7).
 *  2. finite_diff: every parameter tensor's gradient of L = sum(logits * R)
 *     (so dlogits = R) against central differences, on tiny random models
 *     (tied and untied, with and without q/k/v bias, GQA, a padded batch),
 *     L summed in double, the difference Richardson-extrapolated:
 *     D(h) = (L(p + h d) - L(p - h d)) / 2h, FD = (4 D(h/2) - D(h)) / 3,
 *     which cancels the h^2 truncation term, so h can be large enough that
 *     the fp32 noise of L (a few ulps of |L| ~ 10, i.e. ~2e-6 absolute)
 *     divided by 2h stays ~1e-5.
 *     a) one random direction d per tensor (all elements at once), uniform
 *        in +-max|p| of the tensor (+-0.5 for biases: they are ~0.1 and the
 *        k bias's gradient is tiny, as a constant key shift cancels in the
 *        softmax but for RoPE), h = 0.1. Error |FD - <g,d>| / sum_i |g_i d_i|
 *        (the scale on which <g,d> itself is computed, so cancellation in the
 *        dot product cannot inflate the measure).
 *     b) 6 single elements per tensor, h = 0.05 absolute:
 *        |FD - g_i| / max_j |g_j| of the tensor.
 *     Tolerance 2e-3 for both: over 21 seeds x 4 model variants the worst
 *     errors measured were 4.0e-4 (a) and 4.5e-4 (b) (TEST_SEED=n reruns
 *     with another seed). Bugs planted by hand to check the check: RoPE's
 *     backward rotating the wrong way gave errors 2e-3 .. 5e-2 on 8+ tensors,
 *     a dropped k bias gradient 3e-2 .. 0.17.
 *  3. padding / accumulation / threads: a padded batch with garbage in the
 *     padded rows (out-of-range tokens, NaN dlogits) gives the gradients of
 *     its sequences run one by one; backward twice adds twice; 1 and 4
 *     threads agree to 1e-6 relative (OpenBLAS may split its sums).
 *  4. golden: gradients from torch autograd (tests/golden/backward_golden.py)
 *     for sum(logits * R) and for mean cross-entropy, on a tied Llama and an
 *     untied Qwen2 with bias, read through the HF loader; relerr <= 1e-4 per
 *     tensor (see GOLD_TOL for why).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "err.h"
#include "forward.h"
#include "fwd_testutil.h"
#include "kernels.h"
#include "model.h"
#include "rng.h"
#include "train_fwd.h"

static cllm_config tiny_cfg(int tied, int bias) {
    cllm_config c = small_config(bias ? "qwen2" : "llama", 2, 32, 4, 2, 8, 64, 64, tied, bias);
    snprintf(c.name, sizeof c.name, "tiny-train");
    c.max_ctx = 64;
    return c;
}

static void fill_uniform(float *p, size_t n, float a, cllm_rng *r) {
    for (size_t i = 0; i < n; i++) p[i] = a * (2.0f * cllm_rng_float(r) - 1.0f);
}

/* L = sum over real rows of logits * R, in double */
static double loss_dot(cllm_act *a, const cllm_model *m, const int *tok, const int *lens, int B,
                       int T, const float *R, float *logits) {
    int V = m->cfg.vocab;
    if (cllm_train_forward(a, m, tok, lens, B, T, logits)) return NAN;
    double L = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < lens[b]; t++)
            for (int v = 0; v < V; v++) {
                size_t i = ((size_t)b * T + t) * V + v;
                L += (double)logits[i] * R[i];
            }
    return L;
}

/* ---- 1. the training forward equals the inference forward ---------------- */

static void check_forward_equal(const cllm_model *m, const char *what) {
    enum { B = 3, T = 20 };
    int V = m->cfg.vocab;
    int lens[B] = {20, 13, 1};
    int tok[B * T];
    cllm_rng r;
    cllm_rng_seed(&r, 5);
    for (int i = 0; i < B * T; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    float *logits = malloc((size_t)B * T * V * sizeof(float));
    cllm_act *a = NULL;
    CHECK_OK(cllm_act_init(&a, m, B, T));
    cllm_fwd f;
    cllm_kv kv;
    CHECK_OK(cllm_fwd_init(&f, m, T));
    CHECK_OK(cllm_kv_init(&kv, &m->cfg, 1, T));
    if (!a || !logits) { CHECK(0); goto out; }
    CHECK_OK(cllm_train_forward(a, m, tok, lens, B, T, logits));
    double worst = 0;
    for (int b = 0; b < B; b++) {
        CHECK_OK(cllm_forward(&f, &kv, 0, 0, tok + b * T, lens[b], 0));
        for (int t = 0; t < lens[b]; t++) {
            double e = row_relerr(logits + ((size_t)b * T + t) * V, f.logits + (size_t)t * V, V);
            if (e > worst) worst = e;
            CHECK_MSG(e <= 1e-5, "%s: sequence %d row %d: relerr %.3g", what, b, t, e);
        }
    }
    printf("forward_equal %s: worst row relerr %.3g (tolerance 1e-5)\n", what, worst);
out:
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    cllm_act_free(a);
    free(logits);
}

/* ---- 2. finite differences ------------------------------------------------ */

static void check_finite_diff(int tied, int bias) {
    enum { B = 2, T = 8 };
    cllm_config c = tiny_cfg(tied, bias);
    cllm_model m;
    uint64_t seed = getenv("TEST_SEED") ? strtoull(getenv("TEST_SEED"), NULL, 10) : 100;
    if (random_model(&m, &c, seed + 2 * tied + bias)) { CHECK(0); return; }
    int V = c.vocab;
    int lens[B] = {8, 5};
    int tok[B * T];
    cllm_rng r;
    cllm_rng_seed(&r, seed + 11);
    for (int i = 0; i < B * T; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    size_t NL = (size_t)B * T * V;
    float *R = calloc(NL, sizeof(float)), *logits = malloc(NL * sizeof(float));
    float *g = calloc(m.n_params, sizeof(float)), *d = malloc(m.n_params * sizeof(float));
    float *p0 = malloc(m.n_params * sizeof(float));
    cllm_act *a = NULL;
    CHECK_OK(cllm_act_init(&a, &m, B, T));
    if (!R || !logits || !g || !d || !p0 || !a) { CHECK(0); goto out; }
    for (int b = 0; b < B; b++) fill_uniform(R + (size_t)b * T * V, (size_t)lens[b] * V, 1.0f, &r);
    memcpy(p0, m.params, m.n_params * sizeof(float));
    double L0 = loss_dot(a, &m, tok, lens, B, T, R, logits);
    CHECK(isfinite(L0));
    CHECK_OK(cllm_train_backward(a, &m, R, g));

    const double eps = 0.1, eps_el = 0.05;   /* see the header comment */
    double worst_dir = 0, worst_el = 0;
    for (int ti = 0; ti < m.n_tensors; ti++) {
        const cllm_tensor_info *t = &m.tensors[ti];
        float *p = m.params + t->offset;
        const float *gt = g + t->offset;
        /* a) one random direction, scaled like the tensor (max |p|); biases by 0.5
         * (they are small, ~0.1, and their gradients too: see the header) */
        float amax = 0;
        for (size_t j = 0; j < t->numel; j++)
            if (fabsf(p0[t->offset + j]) > amax) amax = fabsf(p0[t->offset + j]);
        if (strstr(t->name, "bias")) amax = 0.5f;
        float *dt = d + t->offset;
        fill_uniform(dt, t->numel, amax, &r);
        double gd = 0, scale = 0, gmax = 0;
        for (size_t j = 0; j < t->numel; j++) {
            gd += (double)gt[j] * dt[j];
            scale += fabs((double)gt[j] * dt[j]);
            if (fabs(gt[j]) > gmax) gmax = fabs(gt[j]);
        }
        double D[2];
        for (int s = 0; s < 2; s++) {
            double h = s ? eps / 2 : eps;
            for (size_t j = 0; j < t->numel; j++) p[j] = p0[t->offset + j] + (float)h * dt[j];
            double Lp = loss_dot(a, &m, tok, lens, B, T, R, logits);
            for (size_t j = 0; j < t->numel; j++) p[j] = p0[t->offset + j] - (float)h * dt[j];
            double Lm = loss_dot(a, &m, tok, lens, B, T, R, logits);
            D[s] = (Lp - Lm) / (2 * h);
        }
        memcpy(p, p0 + t->offset, t->numel * sizeof(float));
        double fd = (4 * D[1] - D[0]) / 3;   /* Richardson: the h^2 term cancels */
        double e = fabs(fd - gd) / (scale > 0 ? scale : 1);
        if (e > worst_dir) worst_dir = e;
        CHECK_MSG(e <= 2e-3, "tied=%d bias=%d %s: directional FD %.6g vs <g,d> %.6g (scale %.3g): err %.3g",
                  tied, bias, t->name, fd, gd, scale, e);
        /* b) single elements, the same Richardson difference */
        for (int k = 0; k < 6; k++) {
            size_t j = (size_t)cllm_rng_below(&r, t->numel);
            double Dj[2];
            for (int s = 0; s < 2; s++) {
                float h = (float)(s ? eps_el / 2 : eps_el);
                p[j] = p0[t->offset + j] + h;
                double Lp = loss_dot(a, &m, tok, lens, B, T, R, logits);
                p[j] = p0[t->offset + j] - h;
                double Lm = loss_dot(a, &m, tok, lens, B, T, R, logits);
                Dj[s] = (Lp - Lm) / (2.0 * h);
            }
            p[j] = p0[t->offset + j];
            double fdj = (4 * Dj[1] - Dj[0]) / 3;
            double ej = fabs(fdj - gt[j]) / (gmax > 0 ? gmax : 1);
            if (ej > worst_el) worst_el = ej;
            CHECK_MSG(ej <= 2e-3, "tied=%d bias=%d %s[%zu]: FD %.6g vs grad %.6g (tensor max %.3g): err %.3g",
                      tied, bias, t->name, j, fdj, gt[j], gmax, ej);
        }
    }
    printf("finite_diff tied=%d bias=%d: %d tensors, worst directional err %.3g (tol 2e-3), "
           "worst element err %.3g (tol 2e-3)\n", tied, bias, m.n_tensors, worst_dir, worst_el);
out:
    cllm_act_free(a);
    free(R); free(logits); free(g); free(d); free(p0);
    cllm_model_free(&m);
}

/* ---- 3. padding, accumulation, threads ------------------------------------ */

static double max_relerr(const float *a, const float *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= md)) md = e;   /* NaN propagates */
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return mb > 0 ? md / mb : md;
}

static void check_padding_accum_threads(void) {
    enum { B = 3, T = 10 };
    cllm_config c = tiny_cfg(1, 1);
    cllm_model m;
    if (random_model(&m, &c, 77)) { CHECK(0); return; }
    int V = c.vocab;
    int lens[B] = {10, 4, 7};
    int tok[B * T];
    cllm_rng r;
    cllm_rng_seed(&r, 3);
    for (int i = 0; i < B * T; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    size_t NL = (size_t)B * T * V;
    float *R = malloc(NL * sizeof(float)), *logits = malloc(NL * sizeof(float));
    float *g = calloc(m.n_params, sizeof(float)), *g1 = calloc(m.n_params, sizeof(float));
    float *g2 = calloc(m.n_params, sizeof(float));
    cllm_act *a = NULL;
    CHECK_OK(cllm_act_init(&a, &m, B, T));
    if (!R || !logits || !g || !g1 || !g2 || !a) { CHECK(0); goto out; }
    fill_uniform(R, NL, 1.0f, &r);
    /* garbage in the padded rows */
    for (int b = 0; b < B; b++)
        for (int t = lens[b]; t < T; t++) {
            tok[b * T + t] = -5 - t;
            for (int v = 0; v < V; v++) R[((size_t)b * T + t) * V + v] = NAN;
        }
    CHECK_OK(cllm_train_forward(a, &m, tok, lens, B, T, logits));
    CHECK_OK(cllm_train_backward(a, &m, R, g));
    /* one sequence at a time, accumulated */
    for (int b = 0; b < B; b++) {
        CHECK_OK(cllm_train_forward(a, &m, tok + b * T, &lens[b], 1, lens[b], logits));
        /* rows of sequence b, packed with stride lens[b]: R rows are the first lens[b] of b */
        CHECK_OK(cllm_train_backward(a, &m, R + (size_t)b * T * V, g1));
    }
    double e = max_relerr(g1, g, m.n_params);
    CHECK_MSG(e <= 1e-6, "padded batch vs one by one: relerr %.3g", e);
    printf("padding: batch vs sequences one by one relerr %.3g\n", e);
    /* accumulation: a second backward of the same forward adds the same again */
    memcpy(g2, g1, m.n_params * sizeof(float));
    CHECK_OK(cllm_train_backward(a, &m, R + (size_t)(B - 1) * T * V, g2));
    CHECK_OK(cllm_train_forward(a, &m, tok, lens, B, T, logits));
    memset(g1, 0, m.n_params * sizeof(float));
    CHECK_OK(cllm_train_backward(a, &m, R, g1));
    CHECK_OK(cllm_train_backward(a, &m, R, g1));
    for (size_t i = 0; i < m.n_params; i++) g2[i] = 2.0f * g[i];
    e = max_relerr(g1, g2, m.n_params);
    CHECK_MSG(e <= 1e-6, "backward twice vs 2x: relerr %.3g", e);
    /* threads */
    kernels_set_threads(4);
    memset(g1, 0, m.n_params * sizeof(float));
    CHECK_OK(cllm_train_forward(a, &m, tok, lens, B, T, logits));
    CHECK_OK(cllm_train_backward(a, &m, R, g1));
    kernels_set_threads(1);
    e = max_relerr(g1, g, m.n_params);
    CHECK_MSG(e <= 1e-6, "4 threads vs 1: relerr %.3g", e);
    printf("threads: 4 vs 1 relerr %.3g\n", e);
    /* errors */
    int badlens[B] = {0, 4, 7};
    CHECK(cllm_train_forward(a, &m, tok, badlens, B, T, logits) == CLLM_EINVAL);
    CHECK(cllm_train_forward(a, &m, tok, lens, B + 1, T, logits) == CLLM_EINVAL);
    tok[1] = V;
    CHECK(cllm_train_forward(a, &m, tok, lens, B, T, logits) == CLLM_EINVAL);
    cllm_act *a2 = NULL;
    CHECK_OK(cllm_act_init(&a2, &m, 1, 1));
    CHECK(cllm_train_backward(a2, &m, R, g1) == CLLM_EINVAL);   /* no forward yet */
    cllm_act_free(a2);
    CHECK(cllm_act_init(&a2, &m, 0, 4) == CLLM_EINVAL && a2 == NULL);
out:
    cllm_act_free(a);
    free(R); free(logits); free(g); free(g1); free(g2);
    cllm_model_free(&m);
}

/* cllm_train_forward_lm: the LM head on a window of rows per sequence gives
 * those rows' logits (packed) equal to the full layout's, and a backward of
 * packed dlogits equals the full layout's with zeros outside the windows;
 * a window of 0 rows, a window at the last row, bad windows refused. */
static void check_lm_windows(void) {
    enum { B = 3, T = 9 };
    cllm_config c = tiny_cfg(1, 1);
    cllm_model m;
    if (random_model(&m, &c, 78)) { CHECK(0); return; }
    int V = c.vocab;
    int lens[B] = {9, 5, 7}, from[B] = {3, 0, 6}, n[B] = {4, 0, 1};
    int tok[B * T];
    cllm_rng r;
    cllm_rng_seed(&r, 4);
    for (int i = 0; i < B * T; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    size_t NL = (size_t)B * T * V, NP = (size_t)(4 + 0 + 1) * V;
    float *full = malloc(NL * sizeof(float)), *dfull = calloc(NL, sizeof(float));
    float *packed = malloc(NP * sizeof(float)), *dpacked = malloc(NP * sizeof(float));
    float *g = calloc(m.n_params, sizeof(float)), *gw = calloc(m.n_params, sizeof(float));
    cllm_act *a = NULL;
    CHECK_OK(cllm_act_init(&a, &m, B, T));
    if (!full || !dfull || !packed || !dpacked || !g || !gw || !a) { CHECK(0); goto out; }
    fill_uniform(dpacked, NP, 1.0f, &r);
    CHECK_OK(cllm_train_forward(a, &m, tok, lens, B, T, full));
    size_t p = 0;
    for (int b = 0; b < B; b++)
        for (int t = from[b]; t < from[b] + n[b]; t++, p++)
            memcpy(dfull + ((size_t)b * T + t) * V, dpacked + p * V, (size_t)V * sizeof(float));
    CHECK_OK(cllm_train_backward(a, &m, dfull, g));
    CHECK_OK(cllm_train_forward_lm(a, &m, tok, lens, B, T, from, n, packed));
    CHECK_OK(cllm_train_backward(a, &m, dpacked, gw));
    double el = 0;
    p = 0;
    for (int b = 0; b < B; b++)
        for (int t = from[b]; t < from[b] + n[b]; t++, p++) {
            double e = max_relerr(packed + p * V, full + ((size_t)b * T + t) * V, V);
            if (e > el) el = e;
        }
    double eg = max_relerr(gw, g, m.n_params);
    CHECK_MSG(el <= 1e-6, "windowed logits vs full: relerr %.3g", el);
    CHECK_MSG(eg <= 1e-6, "windowed backward vs full: relerr %.3g", eg);
    printf("LM windows: logits relerr %.3g, gradients relerr %.3g\n", el, eg);
    int bad_from[B] = {3, 0, 7}, bad_n[B] = {4, 0, 1};   /* sequence 2: rows 7..8 of a length-7 sequence */
    CHECK(cllm_train_forward_lm(a, &m, tok, lens, B, T, bad_from, bad_n, packed) == CLLM_EINVAL);
    int neg_n[B] = {4, -1, 1};
    CHECK(cllm_train_forward_lm(a, &m, tok, lens, B, T, from, neg_n, packed) == CLLM_EINVAL);
    int neg_from[B] = {-1, 0, 6}, one_n[B] = {1, 0, 1};   /* row -1: before the sequence */
    CHECK(cllm_train_forward_lm(a, &m, tok, lens, B, T, neg_from, one_n, packed) == CLLM_EINVAL);
out:
    cllm_act_free(a);
    free(full); free(dfull); free(packed); free(dpacked); free(g); free(gw);
    cllm_model_free(&m);
}

/* cllm_train_forward_fork: a fork b' of sequence b at `at` computes what a
 * sequence tokens_b[0..at) || fork_b computes, in one pass with b. Reference:
 * cllm_train_forward_lm on 2B sequences (the B, then each fork spelt out
 * with its prefix), windows on the same rows, so both pack their logits in
 * the same layout. Forks at the end of a sequence, in its middle, at 0 (no
 * prefix); one sequence without a fork. Logits agree to 1e-6 (the same
 * kernels on the same rows; only BLAS's row count differs), gradients of
 * the same random dlogits to 1e-5 (the shared rows' gradients are summed
 * over the sequence's and the fork's queries in one pass instead of two);
 * both on 1 and 4 threads. Bad forks and too many rows are refused. */
static void check_forks(void) {
    enum { B = 4, T = 12 };
    cllm_config c = tiny_cfg(0, 1);
    cllm_model m;
    if (random_model(&m, &c, 79)) { CHECK(0); return; }
    int V = c.vocab;
    int lens[B] = {9, 5, 7, 6}, from[B] = {3, 0, 6, 2}, n[B] = {4, 0, 1, 3};
    int at[B] = {4, 0, 7, 0}, nf[B] = {5, 2, 5, 0};
    int tok[B * T], ftok[B][T], rtok[2 * B * T], rlens[2 * B], rfrom[2 * B], rn[2 * B];
    memset(ftok, 0, sizeof ftok);   /* ids past a fork's n are valid: bad[0].n below is refused by its bound alone */
    cllm_rng r;
    cllm_rng_seed(&r, 5);
    for (int i = 0; i < B * T; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    cllm_fork fk[B];
    size_t rows = 0;
    int E = B;
    memcpy(rtok, tok, sizeof tok);
    for (int b = 0; b < B; b++) {
        rlens[b] = lens[b];
        rfrom[b] = from[b];
        rn[b] = n[b];
        rows += (size_t)n[b];
        for (int i = 0; i < nf[b]; i++) ftok[b][i] = (int)cllm_rng_below(&r, (uint64_t)V);
        fk[b] = (cllm_fork){ ftok[b], at[b], nf[b] };
        if (!nf[b]) continue;
        int *row = rtok + (size_t)E * T;   /* the fork spelt out */
        memcpy(row, tok + (size_t)b * T, (size_t)at[b] * sizeof(int));
        memcpy(row + at[b], ftok[b], (size_t)nf[b] * sizeof(int));
        rlens[E] = at[b] + nf[b];
        rfrom[E] = at[b];
        rn[E] = nf[b];
        rows += (size_t)nf[b];
        E++;
    }
    size_t NL = rows * V;
    float *ref = malloc(NL * sizeof(float)), *got = malloc(NL * sizeof(float)), *dl = malloc(NL * sizeof(float));
    float *gref = calloc(m.n_params, sizeof(float)), *g = calloc(m.n_params, sizeof(float));
    cllm_act *a = NULL, *small = NULL;
    CHECK_OK(cllm_act_init(&a, &m, 2 * B, T));
    if (!ref || !got || !dl || !gref || !g || !a) { CHECK(0); goto out; }
    fill_uniform(dl, NL, 1.0f, &r);
    for (int threads = 1; threads <= 4; threads += 3) {
        kernels_set_threads(threads);
        memset(gref, 0, m.n_params * sizeof(float));
        memset(g, 0, m.n_params * sizeof(float));
        CHECK_OK(cllm_train_forward_lm(a, &m, rtok, rlens, E, T, rfrom, rn, ref));
        CHECK_OK(cllm_train_backward(a, &m, dl, gref));
        CHECK_OK(cllm_train_forward_fork(a, &m, tok, lens, B, T, from, n, fk, got));
        CHECK_OK(cllm_train_backward(a, &m, dl, g));
        double el = max_relerr(got, ref, NL), eg = max_relerr(g, gref, m.n_params);
        CHECK_MSG(el <= 1e-6, "forks, %d threads: logits vs the forks spelt out: relerr %.3g", threads, el);
        CHECK_MSG(eg <= 1e-5, "forks, %d threads: gradients vs the forks spelt out: relerr %.3g", threads, eg);
        printf("forks (%d threads): logits relerr %.3g, gradients relerr %.3g\n", threads, el, eg);
    }
    kernels_set_threads(1);
    /* without windows: the sequences' rows in (B, T, V), then the forks' rows
     * (train_fwd.h), which equal the windowed call's fork rows (the last
     * nf[0] + nf[1] + nf[2] rows of got) */
    {
        size_t nfork = (size_t)(nf[0] + nf[1] + nf[2] + nf[3]), nseq = (size_t)B * T;
        float *nw = malloc((nseq + nfork) * V * sizeof(float));
        if (nw) {
            CHECK_OK(cllm_train_forward_fork(a, &m, tok, lens, B, T, NULL, NULL, fk, nw));
            double e = max_relerr(nw + nseq * V, got + (rows - nfork) * V, nfork * V);
            CHECK_MSG(e <= 1e-6, "forks without windows: fork rows vs windowed: relerr %.3g", e);
            free(nw);
        } else CHECK(0);
    }
    cllm_fork bad[B];
    memcpy(bad, fk, sizeof bad);
    bad[1].at = 6;   /* past the end of sequence 1 (length 5) */
    CHECK(cllm_train_forward_fork(a, &m, tok, lens, B, T, from, n, bad, got) == CLLM_EINVAL);
    memcpy(bad, fk, sizeof bad);
    bad[0].n = 9;    /* positions 4..12: past T */
    CHECK(cllm_train_forward_fork(a, &m, tok, lens, B, T, from, n, bad, got) == CLLM_EINVAL);
    memcpy(bad, fk, sizeof bad);
    int badtok[2] = {0, V};
    bad[1].tokens = badtok;
    CHECK(cllm_train_forward_fork(a, &m, tok, lens, B, T, from, n, bad, got) == CLLM_EINVAL);
    /* activations for 4 x 9 rows: sequences of 9 + 9 + 9 + 6 rows fit, not
     * with forks of 5 + 2 + 2 more */
    CHECK_OK(cllm_act_init(&small, &m, B, T - 3));
    int lens9[B] = {9, 9, 9, 6};
    memcpy(bad, fk, sizeof bad);
    bad[2].n = 2;
    if (small) CHECK(cllm_train_forward_fork(small, &m, tok, lens9, B, 9, from, n, NULL, got) == 0);
    if (small) CHECK(cllm_train_forward_fork(small, &m, tok, lens9, B, 9, from, n, bad, got) == CLLM_EINVAL);
out:
    kernels_set_threads(1);
    cllm_act_free(a);
    cllm_act_free(small);
    free(ref); free(got); free(dl); free(gref); free(g);
    cllm_model_free(&m);
}

/* attention_backward above its threading threshold: 1 and 4 threads give the
 * same bits (each (sequence, kv head) pair is reduced by one thread); and a
 * sequence packed after another gives what it gives alone. */
static void check_attention_threads(void) {
    enum { B = 2, T = 64, NH = 4, NKV = 2, HS = 16 };
    int row0[B + 1] = {0, 64, 105};   /* sequences of 64 and 41 rows, packed */
    size_t nq = (size_t)row0[B] * NH * HS, nk = (size_t)row0[B] * NKV * HS;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *dout = malloc(nq * 4);
    float *dq1 = malloc(nq * 4), *dk1 = malloc(nk * 4), *dv1 = malloc(nk * 4);
    float *dq4 = malloc(nq * 4), *dk4 = malloc(nk * 4), *dv4 = malloc(nk * 4);
    float *att = malloc((size_t)4 * 2 * T * 4);
    if (!q || !k || !v || !dout || !dq1 || !dk1 || !dv1 || !dq4 || !dk4 || !dv4 || !att) { CHECK(0); goto out; }
    cllm_rng r;
    cllm_rng_seed(&r, 8);
    fill_uniform(q, nq, 1.0f, &r);
    fill_uniform(k, nk, 1.0f, &r);
    fill_uniform(v, nk, 1.0f, &r);
    fill_uniform(dout, nq, 1.0f, &r);
    kernels_set_threads(1);
    attention_backward(dq1, dk1, dv1, dout, q, k, v, row0, NULL, NULL, att, B, T, NH, NKV, HS);
    kernels_set_threads(4);
    attention_backward(dq4, dk4, dv4, dout, q, k, v, row0, NULL, NULL, att, B, T, NH, NKV, HS);
    kernels_set_threads(1);
    CHECK(!memcmp(dq1, dq4, nq * 4) && !memcmp(dk1, dk4, nk * 4) && !memcmp(dv1, dv4, nk * 4));
    /* sequence 1 alone (its rows moved to the front of dq4 ...) equals its rows in the pack */
    int one[2] = {0, row0[2] - row0[1]};
    size_t oq = (size_t)row0[1] * NH * HS, ok = (size_t)row0[1] * NKV * HS;
    attention_backward(dq4, dk4, dv4, dout + oq, q + oq, k + ok, v + ok, one, NULL, NULL, att, 1, T, NH, NKV, HS);
    CHECK(!memcmp(dq4, dq1 + oq, (nq - oq) * 4) && !memcmp(dk4, dk1 + ok, (nk - ok) * 4) &&
          !memcmp(dv4, dv1 + ok, (nk - ok) * 4));
out:
    free(q); free(k); free(v); free(dout); free(dq1); free(dk1); free(dv1);
    free(dq4); free(dk4); free(dv4); free(att);
}

/* The row checks and the packed layout (train_fwd.h), every bound on its
 * own: ids in [0, V) at the first and the last real row; a fork of n = 0 is
 * no fork whatever its `at`; a fork's n >= 0, at >= 0, ids in [0, V) from its
 * first; *rows = sum of lens and forks' n. cllm_pack_rows on ragged lengths:
 * the real tokens one sequence after another, row0 the running sums. */
static void check_rows_pack(void) {
    enum { B = 3, T = 5, V = 50 };
    int lens[B] = {5, 2, 4};
    int tok[B * T] = {1, 2, 3, 4, 5, 6, 7, -9, -9, -9, 11, 12, 13, 14, 99};
    int ft[2] = {8, 9}, out[B * T], row0[B + 1];
    size_t rows = 0;
    cllm_fork fk[B] = {{ft, 5, 0}, {ft, -1, 0}, {ft, 4, 1}};   /* n = 0: no fork, at is not looked at */
    CHECK_OK(cllm_check_rows(tok, lens, B, T, fk, V, "t", &rows));
    CHECK_EQ_INT(rows, 5 + 2 + 4 + 1);
    CHECK_EQ_INT(cllm_pack_rows(tok, lens, B, T, out, row0), 11);
    int want[11] = {1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14}, want0[B + 1] = {0, 5, 7, 11};
    CHECK(!memcmp(out, want, sizeof want) && !memcmp(row0, want0, sizeof want0));
    tok[13] = V;   /* the last real row of sequence 2 */
    CHECK(cllm_check_rows(tok, lens, B, T, NULL, V, "t", &rows) == CLLM_EINVAL);
    tok[13] = 14;
    tok[10] = -1;
    CHECK(cllm_check_rows(tok, lens, B, T, NULL, V, "t", &rows) == CLLM_EINVAL);
    tok[10] = 11;
    cllm_fork bad[B] = {{ft, 5, 0}, {ft, 0, -1}, {ft, 4, 1}};
    CHECK(cllm_check_rows(tok, lens, B, T, bad, V, "t", &rows) == CLLM_EINVAL);
    bad[1] = (cllm_fork){ft, -1, 1};
    CHECK(cllm_check_rows(tok, lens, B, T, bad, V, "t", &rows) == CLLM_EINVAL);
    int ftneg[2] = {-1, 0};
    bad[1] = (cllm_fork){ftneg, 1, 2};
    CHECK(cllm_check_rows(tok, lens, B, T, bad, V, "t", &rows) == CLLM_EINVAL);
    bad[1] = (cllm_fork){ft, 1, 2};
    CHECK_OK(cllm_check_rows(tok, lens, B, T, bad, V, "t", &rows));
}

/* Models and activations (train_fwd.h): activations made for one model take
 * another of the same config (a copy: its own weights, the same results as
 * activations made for it, bit for bit), refuse a model of another config,
 * and refuse head layouts the kernels cannot run; B sequences that all fork
 * fill the 2B + 1 row starts; a backward on more threads than its forward
 * (the attention scratch is per thread: 2T floats each; ASan sees an
 * overrun, when a worker past the forward's scratch takes a task) gives
 * the 1-thread gradients (to 1e-6, as check_padding_accum_threads). */
static void check_models_acts(void) {
    enum { B = 2, T = 64 };
    cllm_config c = tiny_cfg(1, 1);
    cllm_model m, m2, m3;
    if (random_model(&m, &c, 81)) { CHECK(0); return; }
    if (random_model(&m2, &c, 82)) { CHECK(0); cllm_model_free(&m); return; }
    cllm_config c3 = c;
    c3.d_ff = 48;
    if (random_model(&m3, &c3, 83)) { CHECK(0); cllm_model_free(&m); cllm_model_free(&m2); return; }
    int V = c.vocab;
    int lens[B] = {T, 40}, tok[B * T], ft[B][8];
    cllm_rng r;
    cllm_rng_seed(&r, 6);
    for (int i = 0; i < B * T; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < 8; i++) ft[b][i] = (int)cllm_rng_below(&r, (uint64_t)V);
    size_t NL = (size_t)(B * T + 16) * V;   /* (B, T, V) and 2 forks of 8 rows */
    float *l1 = malloc(NL * sizeof(float)), *l2 = malloc(NL * sizeof(float)), *dl = malloc(NL * sizeof(float));
    float *g1 = calloc(m.n_params, sizeof(float)), *g2 = calloc(m.n_params, sizeof(float));
    cllm_act *a = NULL, *a2 = NULL, *bad = NULL;
    CHECK_OK(cllm_act_init(&a, &m, B, T));
    CHECK_OK(cllm_act_init(&a2, &m2, B, T));
    if (!l1 || !l2 || !dl || !g1 || !g2 || !a || !a2) { CHECK(0); goto out; }
    fill_uniform(dl, NL, 1.0f, &r);
    /* a copy of the config, other weights */
    CHECK_OK(cllm_train_forward(a2, &m2, tok, lens, B, T, l2));
    CHECK_OK(cllm_train_backward(a2, &m2, dl, g2));
    CHECK_OK(cllm_train_forward(a, &m2, tok, lens, B, T, l1));
    CHECK_OK(cllm_train_backward(a, &m2, dl, g1));
    for (int b = 0; b < B; b++)
        CHECK(!memcmp(l1 + (size_t)b * T * V, l2 + (size_t)b * T * V, (size_t)lens[b] * V * sizeof(float)));
    CHECK(!memcmp(g1, g2, m.n_params * sizeof(float)));
    /* another config */
    CHECK(cllm_train_forward(a, &m3, tok, lens, B, T, l1) == CLLM_EINVAL);
    CHECK(cllm_train_backward(a, &m3, dl, g1) == CLLM_EINVAL);
    /* head layouts */
    cllm_model mm = m;
    mm.cfg.n_head_kv = 3;   /* 4 heads do not group into 3 */
    CHECK(cllm_act_init(&bad, &mm, 1, 4) == CLLM_EINVAL && !bad);
    mm.cfg = c;
    mm.cfg.rope_dim = c.head_dim + 2;
    CHECK(cllm_act_init(&bad, &mm, 1, 4) == CLLM_EINVAL && !bad);
    mm.cfg.rope_dim = c.head_dim - 1;
    CHECK(cllm_act_init(&bad, &mm, 1, 4) == CLLM_EINVAL && !bad);
    CHECK(cllm_act_init(&bad, &m, 1, 0) == CLLM_EINVAL && !bad);
    /* every sequence forks: E = 2B packed sequences */
    cllm_fork fk[B] = {{ft[0], 10, 8}, {ft[1], 40, 8}};
    int lens2[B] = {T - 8, 40};
    CHECK_OK(cllm_train_forward_fork(a, &m, tok, lens2, B, T, NULL, NULL, fk, l1));
    CHECK_OK(cllm_train_backward(a, &m, dl, g1));
    /* threads: forward on 1, backward on 4 (above attention_backward's threshold: 64 rows) */
    memset(g1, 0, m.n_params * sizeof(float));
    memset(g2, 0, m.n_params * sizeof(float));
    cllm_act_free(a);
    a = NULL;
    CHECK_OK(cllm_act_init(&a, &m, B, T));   /* fresh: its scratch sized by this forward */
    if (!a) goto out;
    CHECK_OK(cllm_train_forward(a, &m, tok, lens, B, T, l1));
    CHECK_OK(cllm_train_backward(a, &m, dl, g1));
    CHECK_OK(cllm_train_forward(a2, &m, tok, lens, B, T, l2));   /* a2: never ran on 4 threads either */
    kernels_set_threads(4);
    double e = 0;
    for (int rep = 0; rep < 8; rep++) {   /* the pool hands tasks to whichever worker is free: repeat so
                                             that workers 2 and 3 (past a 2-thread scratch) get some */
        memset(g2, 0, m.n_params * sizeof(float));
        CHECK_OK(cllm_train_backward(a2, &m, dl, g2));
        double er = max_relerr(g2, g1, m.n_params);
        if (!(er <= e)) e = er;
    }
    kernels_set_threads(1);
    CHECK_MSG(e <= 1e-6, "backward on 4 threads after a forward on 1: relerr %.3g", e);
out:
    kernels_set_threads(1);
    cllm_act_free(a);
    cllm_act_free(a2);
    free(l1); free(l2); free(dl); free(g1); free(g2);
    cllm_model_free(&m);
    cllm_model_free(&m2);
    cllm_model_free(&m3);
}

/* ---- 4. torch autograd golden --------------------------------------------- */

/* Tolerance: relerr = max_i |ours_i - torch_i| / max_i |torch_i| per tensor
 * (per row for logits) <= 1e-4, the project's bar for agreement with torch
 * (DESIGN.md section 7). Both sides are fp32 with different summation orders
 * (BLAS blocking, pairwise vs sequential sums); the differences are a few
 * ulps per reduction, growing with depth, ~1e-6 relative here, so the bar
 * leaves two orders of magnitude of room and still fails any real error,
 * which shows up at 1e-2 or more (see the finite-difference check). The
 * scale is the tensor's largest |gradient|: elements near zero carry
 * rounding noise of the size of the large ones. */
#define GOLD_TOL 1e-4

static int rd(FILE *f, void *p, size_t sz, size_t n) { return fread(p, sz, n, f) == n ? 0 : -1; }

static double relerr_vs(const float *a, const float *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= md)) md = e;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return mb > 0 ? md / mb : md;
}

/* One case of backward_grads.bin; returns -1 on a read error. */
static int golden_case(FILE *f, double *worst_grad, double *worst_logit) {
    int rc = -1, n, hdr[4], B, T, V;
    char dir[256], name[128];
    int *lens = NULL, *tok = NULL, *tgt = NULL;
    float *R = NULL, *glog = NULL, *logits = NULL, *dl = NULL, *grads = NULL, *gt = NULL;
    double gloss;
    cllm_model m;
    int loaded = 0;
    cllm_act *a = NULL;
    if (rd(f, &n, 4, 1) || n < 1 || n >= (int)sizeof dir || rd(f, dir, 1, (size_t)n)) goto out;
    dir[n] = 0;
    if (rd(f, hdr, 4, 4)) goto out;
    B = hdr[1]; T = hdr[2]; V = hdr[3];
    if (B < 1 || B > 64 || T < 1 || T > 4096 || V < 1 || V > 1 << 20) goto out;
    size_t NL = (size_t)B * T * V;
    lens = malloc((size_t)B * sizeof(int));
    tok = malloc((size_t)B * T * sizeof(int));
    tgt = malloc((size_t)B * T * sizeof(int));
    R = calloc(NL, sizeof(float));
    glog = malloc(NL * sizeof(float));
    logits = malloc(NL * sizeof(float));
    dl = calloc(NL, sizeof(float));
    if (!lens || !tok || !tgt || !R || !glog || !logits || !dl) goto out;
    if (rd(f, lens, 4, (size_t)B) || rd(f, tok, 4, (size_t)B * T)) goto out;
    if (hdr[0] == 0 ? rd(f, R, 4, NL) : rd(f, tgt, 4, (size_t)B * T)) goto out;
    if (rd(f, &gloss, 8, 1) || rd(f, glog, 4, NL)) goto out;

    CHECK_OK(cllm_model_load(&m, dir));
    loaded = 1;
    CHECK_EQ_INT(m.cfg.vocab, V);
    grads = calloc(m.n_params, sizeof(float));
    if (!grads || m.cfg.vocab != V) goto out;
    CHECK_OK(cllm_act_init(&a, &m, B, T));
    if (!a) goto out;
    CHECK_OK(cllm_train_forward(a, &m, tok, lens, B, T, logits));
    /* logits and the loss, and dlogits for the loss */
    double loss = 0;
    int rows = 0;
    for (int b = 0; b < B; b++) rows += lens[b];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < lens[b]; t++) {
            size_t r0 = ((size_t)b * T + t) * V;
            double e = row_relerr(logits + r0, glog + r0, V);
            if (e > *worst_logit) *worst_logit = e;
            CHECK_MSG(e <= GOLD_TOL, "%s: logits row %d/%d relerr %.3g", dir, b, t, e);
            if (hdr[0] == 0) {
                for (int v = 0; v < V; v++) loss += (double)logits[r0 + v] * R[r0 + v];
                memcpy(dl + r0, R + r0, (size_t)V * sizeof(float));
            } else {
                double mx = -INFINITY, se = 0;
                for (int v = 0; v < V; v++) if (logits[r0 + v] > mx) mx = logits[r0 + v];
                for (int v = 0; v < V; v++) se += exp(logits[r0 + v] - mx);
                int y = tgt[(size_t)b * T + t];
                loss += (log(se) + mx - logits[r0 + y]) / rows;
                for (int v = 0; v < V; v++)
                    dl[r0 + v] = (float)((exp(logits[r0 + v] - mx) / se - (v == y)) / rows);
            }
        }
    CHECK_MSG(fabs(loss - gloss) <= 1e-5 * fmax(1.0, fabs(gloss)), "%s loss %d: %.8g vs torch %.8g",
              dir, hdr[0], loss, gloss);
    CHECK_OK(cllm_train_backward(a, &m, dl, grads));
    int nt;
    if (rd(f, &nt, 4, 1)) goto out;
    CHECK_EQ_INT(nt, m.n_tensors);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < nt; i++) {
        int numel;
        if (rd(f, &n, 4, 1) || n < 1 || n >= (int)sizeof name || rd(f, name, 1, (size_t)n)) goto out;
        name[n] = 0;
        if (rd(f, &numel, 4, 1) || numel < 1) goto out;
        free(gt);
        gt = malloc((size_t)numel * sizeof(float));
        if (!gt || rd(f, gt, 4, (size_t)numel)) goto out;
        const cllm_tensor_info *ti = cllm_model_tensor(&m, name);
        CHECK_MSG(ti != NULL, "%s: no tensor %s", dir, name);
        if (!ti) continue;
        CHECK_EQ_INT(ti->numel, numel);
        if (ti->numel != (size_t)numel) continue;
        double e = relerr_vs(grads + ti->offset, gt, (size_t)numel);
        if (e > worst) { worst = e; worst_name = ti->name; }
        CHECK_MSG(e <= GOLD_TOL, "%s loss %d: gradient of %s: relerr %.3g", dir, hdr[0], name, e);
    }
    printf("golden %s loss %s: loss %.7g (torch %.7g), worst gradient relerr %.3g (%s), tol %g\n",
           dir, hdr[0] == 0 ? "sum(logits*R)" : "cross-entropy", loss, gloss, worst, worst_name, GOLD_TOL);
    if (worst > *worst_grad) *worst_grad = worst;
    rc = 0;
out:
    cllm_act_free(a);
    if (loaded) cllm_model_free(&m);
    free(lens); free(tok); free(tgt); free(R); free(glog); free(logits); free(dl); free(grads); free(gt);
    return rc;
}

static void check_golden(void) {
    FILE *f = fopen("tests/golden/backward_grads.bin", "rb");
    CHECK_MSG(f != NULL, "cannot open tests/golden/backward_grads.bin (run from the repo root)");
    if (!f) return;
    char magic[8];
    int n = 0;
    CHECK(rd(f, magic, 1, 8) == 0 && !memcmp(magic, "CLLMGRD1", 8));
    CHECK(rd(f, &n, 4, 1) == 0 && n > 0);
    double wg = 0, wl = 0;
    for (int i = 0; i < n; i++) {
        int rc = golden_case(f, &wg, &wl);
        CHECK_MSG(rc == 0, "backward_grads.bin: case %d unreadable", i);
        if (rc) break;
    }
    fclose(f);
    printf("golden: %d cases, worst logits relerr %.3g, worst gradient relerr %.3g (tol %g)\n",
           n, wl, wg, GOLD_TOL);
}

int main(void) {
    kernels_set_threads(1);
    cllm_model m;
    for (int tied = 0; tied <= 1; tied++) {
        cllm_config c = tiny_cfg(tied, !tied);
        if (random_model(&m, &c, 9)) { CHECK(0); TEST_END(); }
        check_forward_equal(&m, tied ? "random tied llama" : "random qwen2 (bias)");
        cllm_model_free(&m);
    }
    if (tiny_load(&m, "tests/golden/tiny-qwen2")) { CHECK(0); TEST_END(); }
    check_forward_equal(&m, "tiny-qwen2");
    cllm_model_free(&m);
    TEST_OK("forward_equal");

    check_finite_diff(0, 0);
    check_finite_diff(0, 1);
    check_finite_diff(1, 0);
    check_finite_diff(1, 1);
    TEST_OK("finite_diff");

    check_padding_accum_threads();
    check_lm_windows();
    check_forks();
    check_attention_threads();
    check_rows_pack();
    check_models_acts();
    TEST_OK("padding_accum_threads");

    check_golden();
    TEST_OK("golden");
    TEST_END();
}
