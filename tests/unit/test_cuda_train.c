/* test_cuda_train.c: the CUDA training step (libcore/cuda_train.h) against
 * the CPU's (train_fwd.h + loss.h + adamw.h), from the same weights and data.
 *
 * Without a CUDA build or without a device it prints "skip: no CUDA device"
 * and exits 0 (this project's development machines have no GPU; the GPU
 * session runs it, docs/CUDA-TRAINING.md).
 *
 * Parity, on two tiny random models (a LLaMA-like tied model, GQA 3:1,
 * HS 32; a Qwen2-like untied model with q/k/v biases, GQA 2:1, HS 64, odd V),
 * each with the default attention kernels (tiled, tensor cores) and again
 * with the warp-per-key ones (cllm_cuda_train_opts.attention = 1, names
 * ending in _warpattn) and the thread-per-key ones (2, _keyattn); and a
 * one-layer LLaMA-like model with HS 128 (GQA 2:1) with the default ones,
 * one optimizer step of two micro-batches, the CLLM pattern:
 *   call 1 (the "AR" pass on x||y*): cross-entropy rows with label smoothing
 *     0.1 and the AR weight, some of them also saved as teacher rows;
 *   call 2 (the "student" pass on x||y): soft cross-entropy rows against the
 *     saved teacher rows (consistency, SUM), some rows also with a plain
 *     cross-entropy; sequences of different lengths, padded rows holding
 *     out-of-range garbage tokens;
 *   then clipping (active) and AdamW.
 * Checked: each loss part of each call (relative 2e-2), every tensor's
 * gradient (GRAD_TOL below; CLLM_VERBOSE=1 prints each tensor's error), the gradient norm (2e-2), the updated weights
 * (UPDATE rules below); AdamW alone on equal inputs (CPU gradients uploaded,
 * weight decay with a no-decay mask, non-zero moments), three steps: the
 * defaults unclipped; betas, eps and a step count from set_opt, clipped
 * without norm_out; set_opt without a mask: weights and moments equal to 1e-6
 * relative (expected bit-equal; the count of differing elements is printed);
 * argument errors.
 *
 * Forks (test_forks): one call with forks (a student x||y(j) branching off
 * x||y*, reading in the same call the teacher slots x||y*'s rows save)
 * against the CPU's cllm_train_forward_fork, with the default and the
 * warp-per-key kernels (the thread-per-key ones fall back to those with
 * forks); once more with sequence 1 not forking (sequence 2's fork is then
 * the second packed fork, not the third) and RMSNorm weights 1 +- 0.7, where
 * the other tests' 1 +- 0.1 hide a norm backward's w.
 *
 * CLLM_TEST_CUDA_TRAIN_ONLY=s runs only the parity and fork tests whose name
 * contains s (tests/cuemu/check.sh runs the fork tests again under
 * CUEMU_ORDER=rev, ~10 s).
 *
 * --bench [B T]: SmolLM2-135M shapes (random weights, 30 layers, C 576,
 * V 49,152), B records of ~T tokens (lengths T-40..T, default 16 x 320), SFT
 * loss on every real row; prints training tokens/s (forward + loss +
 * backward + clipped AdamW step) and the model FLOP utilisation against the
 * H100/H200 SXM dense bf16 peak (989 TFLOP/s), with the default attention
 * kernels, then with the warp-per-key ones (the baseline, same process). No
 * checks beyond success.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adamw.h"
#include "check.h"
#include "clock.h"
#include "err.h"
#include "fwd_testutil.h"
#include "loss.h"
#include "model.h"
#include "rng.h"
#include "train_fwd.h"

#if CLLM_CUDA
#include "cuda_backend.h"
#include "cuda_train.h"

#define LOSS_TOL 2e-2
/* Gradient tolerance, per tensor: max|g_gpu - g_cpu| / max|g_cpu|.
 * The GPU rounds every matrix-product input to bf16 (relative error <= 2^-9
 * ~ 2e-3 per rounding) and keeps fp32 elsewhere. A weight gradient of the
 * first layer sits behind ~10 such roundings (dlogits, the residual
 * gradient's bf16 copy twice per layer, dh/dgu, dao, dq/dk/dv, and the saved
 * bf16 activations it meets), which add roughly in quadrature to ~1e-2
 * relative at the tensor's largest elements; 5e-2 leaves a factor of ~5 so a
 * one-shot GPU run does not fail on rounding, while a wrong operation (sign,
 * transposed product, dropped term, wrong head) gives errors of order 1. */
#define GRAD_TOL 5e-2
/* Updated weights. Adam's first step moves an element by lr * m/(sqrt(v)+eps)
 * = lr * g/(|g| + eps'), i.e. about +-lr whatever |g| is, so a bf16 rounding
 * that flips the sign of a near-zero gradient moves it by 2 lr: no element may
 * differ by more than 2 lr (plus rounding), and among the elements whose CPU
 * gradient is at least 5e-2 of its tensor's largest (where bf16 noise cannot
 * flip the sign) at least 99 % must move within lr/10 of the CPU. */
#define UPDATE_SIGN_FRAC 0.99

static double relerr(double a, double b) {
    double d = fabs(a - b), s = fabs(b);
    return s > 0 ? d / s : d;
}

/* ---- the CPU side of one micro-batch -------------------------------------- */

/* Forward (with forks: fork (B) or NULL), the losses of rows (as
 * cllm_cuda_train_micro_fork defines them), backward (grads +=). teacher
 * (S, V) is read and written by slot: the call's saves first (the GPU runs
 * the saving rows' chunks before the reading ones). */
static int cpu_micro(cllm_act *act, const cllm_model *m, const int *tok, const int *lens, int B,
                     int T, const cllm_fork *fork, const cllm_cuda_loss_row *rows, int n, double eps,
                     float *teacher, float *grads, double *ce, double *soft) {
    int V = m->cfg.vocab, rc;
    size_t nrow = (size_t)B * T, foff[B];   /* logits rows: (B, T), then the forks' */
    for (int b = 0; b < B; b++) {
        foff[b] = nrow;
        nrow += fork ? (size_t)fork[b].n : 0;
    }
    float *logits = calloc(nrow * V, sizeof(float)), *dl = calloc(nrow * V, sizeof(float));
    float *tmp = malloc((size_t)V * sizeof(float));
    size_t *at = malloc((size_t)(n > 0 ? n : 1) * sizeof(size_t));
    *ce = *soft = 0;
    if (!logits || !dl || !tmp || !at) { rc = CLLM_ENOMEM; goto out; }
    if ((rc = cllm_train_forward_fork(act, m, tok, lens, B, T, NULL, NULL, fork, logits))) goto out;
    for (int i = 0; i < n; i++) {
        int q = rows[i].row / T;
        at[i] = q < B ? (size_t)rows[i].row : foff[q - B] + (size_t)(rows[i].row % T);
    }
    for (int i = 0; i < n; i++)
        if (rows[i].save >= 0)
            memcpy(teacher + (size_t)rows[i].save * V, logits + at[i] * V, (size_t)V * sizeof(float));
    for (int i = 0; i < n; i++) {
        const float *x = logits + at[i] * V;
        float *d = dl + at[i] * V;
        if (rows[i].target >= 0) {
            *ce += (double)rows[i].ce_scale * cllm_ce_row(x, V, rows[i].target, eps, rows[i].ce_scale, tmp);
            for (int v = 0; v < V; v++) d[v] += tmp[v];
        }
        if (rows[i].teacher >= 0) {
            *soft += (double)rows[i].soft_scale *
                     cllm_soft_ce_row(x, teacher + (size_t)rows[i].teacher * V, V, rows[i].soft_scale, tmp);
            for (int v = 0; v < V; v++) d[v] += tmp[v];
        }
    }
    rc = cllm_train_backward(act, m, dl, grads);
out:
    free(logits);
    free(dl);
    free(tmp);
    free(at);
    return rc;
}

/* Every tensor's gradient, GPU against CPU, within GRAD_TOL. */
static void check_grads(const char *name, const cllm_model *m, const float *g_gpu, const float *g_cpu) {
    size_t np = m->n_params;
    /* A tensor's error is measured on its own scale, floored at 1e-2 of the
     * largest gradient of the model. The floor is for gradients that are
     * small sums of large terms, where bf16 rounding of the terms is large
     * relative to the sum: the k bias (softmax is shift-invariant, so the
     * post-RoPE key gradients of a query sum to zero and only RoPE's
     * position-dependent rotation leaves a residue). A wrong operation still
     * shows: its error is of the order of the tensor's own gradient. */
    double gmax_all = 0;
    for (size_t k = 0; k < np; k++)
        if (fabs(g_cpu[k]) > gmax_all) gmax_all = fabs(g_cpu[k]);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m->n_tensors; i++) {
        const cllm_tensor_info *ti = &m->tensors[i];
        const float *a = g_gpu + ti->offset, *b = g_cpu + ti->offset;
        double md = 0, mb = 0, dot = 0, na = 0, nb = 0;
        for (size_t j = 0; j < ti->numel; j++) {
            double d = fabs((double)a[j] - b[j]);
            if (!(d <= md)) md = isnan(d) ? INFINITY : d;   /* a NaN is an infinite error, not none */
            if (fabs(b[j]) > mb) mb = fabs(b[j]);
            dot += (double)a[j] * b[j];
            na += (double)a[j] * a[j];
            nb += (double)b[j] * b[j];
        }
        double e = md / (mb > 1e-2 * gmax_all ? mb : 1e-2 * gmax_all);
        double cosv = na > 0 && nb > 0 ? dot / sqrt(na * nb) : (na == nb ? 1.0 : 0.0);
        if (e > worst) { worst = e; worst_name = ti->name; }
        CHECK_MSG(e <= GRAD_TOL, "%s: gradient of %s: relerr %.3g (cosine %.6f, max %.3g, model max %.3g)",
                  name, ti->name, e, cosv, mb, gmax_all);
        if (getenv("CLLM_VERBOSE"))
            printf("  %-48s relerr %.3g cosine %.6f max %.3g (model max %.3g)\n", ti->name, e, cosv,
                   mb, gmax_all);
    }
    printf("%s: gradients: worst relerr %.3g (%s), tolerance %.g\n", name, worst, worst_name, GRAD_TOL);
}

/* ---- parity on a tiny model ------------------------------------------------ */

/* T > 128 so that the attention kernels' strided loops over keys take more
 * than one turn (kernel2 has 128 threads, kernel1 4 warps) */
enum { PB = 3, PT = 150, NSLOT = 8, PROWS = 160 };

static void test_parity(const char *name, const cllm_config *c, uint64_t seed, int att) {
    cllm_model m;
    if (random_model(&m, c, seed)) { CHECK_MSG(0, "%s: alloc: %s", name, cllm_errmsg()); return; }
    int V = c->vocab;
    size_t np = m.n_params;
    cllm_rng r;
    cllm_rng_seed(&r, seed + 7);
    int tok1[PB * PT], tok2[PB * PT], lens[PB] = {PT, 97, 6};
    for (int i = 0; i < PB * PT; i++) {
        tok1[i] = (int)cllm_rng_below(&r, (uint64_t)V);
        tok2[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    }
    for (int b = 0; b < PB; b++)   /* garbage in padded rows: must never be read */
        for (int t = lens[b]; t < PT; t++) tok1[b * PT + t] = tok2[b * PT + t] = V + 1000 + t;
    /* student context shares its first rows with the teacher's sequence */
    for (int t = 0; t < 4; t++) tok2[t] = tok1[t];

    /* call 1: CE on every real row of seq 0 but the last (AR weight 10, mean
     * over 19), rows 4..11 of seq 0 also saved as teacher slots 0..7; CE on
     * seq 2's rows 0..4 (mean over 5) */
    cllm_cuda_loss_row r1[PROWS], r2[PROWS];
    int n1 = 0, n2 = 0;
    for (int t = 0; t < lens[0] - 1; t++)
        r1[n1++] = (cllm_cuda_loss_row){t, tok1[t + 1], 10.0f / (float)(lens[0] - 1), -1, 0.0f,
                                        t >= 4 && t < 12 ? t - 4 : -1};
    for (int t = 0; t < lens[2] - 1; t++)
        r1[n1++] = (cllm_cuda_loss_row){2 * PT + t, tok1[2 * PT + t + 1], 1.0f / (float)(lens[2] - 1),
                                        -1, 0.0f, -1};
    /* call 2: soft CE of seq 0 rows 4..11 and seq 1 rows 3..10 against slots
     * 0..7 (SUM, scale 1), seq 0 rows 6 and 9 also CE; a MEAN-style scale on
     * seq 1 (1/8) */
    for (int i = 0; i < NSLOT; i++) {
        int t = 4 + i;
        r2[n2++] = (cllm_cuda_loss_row){t, t == 6 || t == 9 ? tok2[t + 1] : -1, 0.5f, i, 1.0f, -1};
        r2[n2++] = (cllm_cuda_loss_row){PT + 3 + i, -1, 0.0f, i, 0.125f, -1};
    }

    cllm_cuda_train *gt = NULL;
    /* 7 rows per chunk: many chunks; the default kernels with activations for
     * the calls' 253 packed tokens only, the others for PB x PT rows */
    cllm_cuda_train_opts o = {PB, PT, PROWS, NSLOT, 7, att, 0, att == 0 ? PT + 97 + 6 : 0, 0, 0};
    float *g_cpu = calloc(np, sizeof(float)), *g_gpu = calloc(np, sizeof(float));
    float *p_gpu = calloc(np, sizeof(float)), *p0 = malloc(np * sizeof(float));
    float *teacher = calloc((size_t)NSLOT * V, sizeof(float));
    cllm_act *act = NULL;
    cllm_adamw oc, og;
    memset(&oc, 0, sizeof oc);
    memset(&og, 0, sizeof og);
    CHECK(g_cpu && g_gpu && p_gpu && p0 && teacher);
    /* CLLM_CUDA_TRAIN_ATTENTION takes 0, 1 or 2 (cllm(7)); anything else is refused, not read as a number */
    const char *bad_att[] = {"3", "-1", "1x", "01", " 1"};
    for (size_t i = 0; i < sizeof bad_att / sizeof bad_att[0]; i++) {
        setenv("CLLM_CUDA_TRAIN_ATTENTION", bad_att[i], 1);
        int rc = cllm_cuda_train_init(&gt, &m, &o);
        CHECK_MSG(rc == CLLM_EINVAL && gt == NULL && strstr(cllm_errmsg(), "CLLM_CUDA_TRAIN_ATTENTION"), "'%s': %d %s",
                  bad_att[i], rc, cllm_errmsg());
    }
    unsetenv("CLLM_CUDA_TRAIN_ATTENTION");
    CHECK_OK(cllm_cuda_train_init(&gt, &m, &o));
    CHECK_OK(cllm_act_init(&act, &m, PB, PT));
    CHECK_OK(cllm_adamw_init(&oc, np));
    CHECK_OK(cllm_adamw_init(&og, np));
    if (check_failures) goto out;
    memcpy(p0, m.params, np * sizeof(float));

    double ce_c[2], so_c[2], ce_g[2], so_g[2];
    if (att == 0) {   /* one token more than planned: refused, nothing changes */
        int more[PB] = {PT, 98, 6};
        tok1[PT + 97] = 0;
        CHECK(cllm_cuda_train_micro(gt, tok1, more, PB, PT, r1, n1, 0.1, 1, &ce_g[0], &so_g[0]) == CLLM_EINVAL);
        tok1[PT + 97] = V + 1000 + 97;
    }
    CHECK_OK(cpu_micro(act, &m, tok1, lens, PB, PT, NULL, r1, n1, 0.1, teacher, g_cpu, &ce_c[0], &so_c[0]));
    CHECK_OK(cpu_micro(act, &m, tok2, lens, PB, PT, NULL, r2, n2, 0.0, teacher, g_cpu, &ce_c[1], &so_c[1]));
    CHECK_OK(cllm_cuda_train_micro(gt, tok1, lens, PB, PT, r1, n1, 0.1, 1, &ce_g[0], &so_g[0]));
    CHECK_OK(cllm_cuda_train_micro(gt, tok2, lens, PB, PT, r2, n2, 0.0, 1, &ce_g[1], &so_g[1]));
    if (check_failures) goto out;
    for (int k = 0; k < 2; k++) {
        printf("%s: call %d: CE %.6f (CPU %.6f, relerr %.2g), soft CE %.6f (CPU %.6f, relerr %.2g)\n",
               name, k + 1, ce_g[k], ce_c[k], relerr(ce_g[k], ce_c[k]), so_g[k], so_c[k],
               relerr(so_g[k], so_c[k]));
        CHECK_MSG(relerr(ce_g[k], ce_c[k]) <= LOSS_TOL, "%s: call %d CE", name, k + 1);
        CHECK_MSG(relerr(so_g[k], so_c[k]) <= LOSS_TOL, "%s: call %d soft CE", name, k + 1);
    }
    CHECK(so_c[0] == 0 && so_g[0] == 0 && ce_c[1] > 0 && so_c[1] > 0);

    /* gradients, tensor by tensor */
    CHECK_OK(cllm_cuda_train_get_grads(gt, g_gpu));
    check_grads(name, &m, g_gpu, g_cpu);

    /* one clipped AdamW step on each side */
    {
        double lr = 1e-3, max_norm = 0.5;
        double norm_c = cllm_grad_norm(g_cpu, np), norm_g = 0, coef_g = 0;
        double coef_c = cllm_grad_clip(g_cpu, np, norm_c, max_norm);
        cllm_adamw_step(&oc, m.params, g_cpu, lr);
        CHECK_OK(cllm_cuda_train_step(gt, lr, max_norm, &norm_g, &coef_g));
        CHECK_OK(cllm_cuda_train_get_params(gt, p_gpu));
        printf("%s: grad norm %.6g (CPU %.6g), clip factor %.4g (CPU %.4g)\n", name, norm_g, norm_c,
               coef_g, coef_c);
        CHECK_MSG(relerr(norm_g, norm_c) <= LOSS_TOL, "%s: gradient norm", name);
        CHECK(coef_c < 1.0);   /* clipping was active */
        size_t big = 0, big_ok = 0, over = 0;
        double maxd = 0;
        for (int i = 0; i < m.n_tensors; i++) {
            const cllm_tensor_info *ti = &m.tensors[i];
            double gmax = 0;
            for (size_t j = 0; j < ti->numel; j++)
                if (fabs(g_cpu[ti->offset + j]) > gmax) gmax = fabs(g_cpu[ti->offset + j]);
            for (size_t j = 0; j < ti->numel; j++) {
                size_t k = ti->offset + j;
                double d = fabs((double)p_gpu[k] - m.params[k]);
                if (d > maxd) maxd = d;
                if (d > 2 * lr * 1.001 + 1e-6 * fabs(p0[k])) over++;
                if (gmax > 0 && fabs(g_cpu[k]) >= 5e-2 * gmax) {
                    big++;
                    if (d <= 0.1 * lr) big_ok++;
                }
            }
        }
        double frac = big ? (double)big_ok / (double)big : 1.0;
        printf("%s: updated weights: max |diff| %.3g (lr %.g), %zu over 2 lr; %.4f of %zu "
               "well-defined updates within lr/10\n", name, maxd, lr, over, frac, big);
        CHECK_MSG(over == 0, "%s: %zu weights moved more than 2 lr from the CPU's", name, over);
        CHECK_MSG(frac >= UPDATE_SIGN_FRAC, "%s: only %.4f of the updates agree", name, frac);
    }

    /* AdamW alone, equal inputs: weight decay with a no-decay mask (the
     * norms), non-zero moments (the state after the step above); step 1
     * unclipped with the default hyperparameters; step 2 with others taken
     * from set_opt (betas, eps, a step count of 6: bias corrections of step
     * 7) and clipping active without norm_out (the GPU must compute the
     * norm itself; expected: cllm_grad_norm and cllm_grad_clip on the CPU,
     * where the scale no longer cancels: the moments are not zero); step 3
     * after set_opt without a mask (every element decays) */
    for (int step = 1; step <= 3; step++) {
        double lr = 3e-3, max_norm = 0.0;
        uint8_t *mask = NULL;
        if (step == 1) {
            oc.weight_decay = 0.1;
            for (int i = 0; i < m.n_tensors; i++)
                if (m.tensors[i].n_dims == 1) CHECK_OK(cllm_adamw_no_decay(&oc, m.tensors[i].offset, m.tensors[i].numel));
        } else if (step == 2) {
            oc.beta1 = 0.8;
            oc.beta2 = 0.99;
            oc.eps = 1e-4;
            oc.t = 6;
            max_norm = 0.5 * cllm_grad_norm(g_gpu, np);
        } else {
            mask = oc.no_decay;   /* restored below, for cllm_adamw_free */
            oc.no_decay = NULL;
        }
        memcpy(g_cpu, g_gpu, np * sizeof(float));   /* any gradient, the same on both */
        CHECK_OK(cllm_cuda_train_set_params(gt, m.params));
        CHECK_OK(cllm_cuda_train_set_opt(gt, &oc));
        CHECK_OK(cllm_cuda_train_set_grads(gt, g_cpu));
        if (max_norm > 0) CHECK(cllm_grad_clip(g_cpu, np, cllm_grad_norm(g_cpu, np), max_norm) < 0.51);
        cllm_adamw_step(&oc, m.params, g_cpu, lr);
        if (mask) oc.no_decay = mask;
        CHECK_OK(cllm_cuda_train_step(gt, lr, max_norm, NULL, NULL));
        CHECK_OK(cllm_cuda_train_get_params(gt, p_gpu));
        CHECK_OK(cllm_cuda_train_get_opt(gt, &og));
        CHECK_EQ_INT(og.t, oc.t);
        size_t diff = 0;
        double worst_p = 0, worst_mv = 0;
        for (size_t k = 0; k < np; k++) {
            if (p_gpu[k] != m.params[k] || og.m[k] != oc.m[k] || og.v[k] != oc.v[k]) diff++;
            double e = fabs((double)p_gpu[k] - m.params[k]) / (fabs(m.params[k]) + 1e-30);
            if (!(e <= worst_p)) worst_p = isnan(e) ? INFINITY : e;   /* NaN: infinite error */
            e = fabs((double)og.m[k] - oc.m[k]) / (fabs(oc.m[k]) + 1e-30);
            if (!(e <= worst_mv)) worst_mv = isnan(e) ? INFINITY : e;
            e = fabs((double)og.v[k] - oc.v[k]) / (fabs(oc.v[k]) + 1e-30);
            if (!(e <= worst_mv)) worst_mv = isnan(e) ? INFINITY : e;
        }
        printf("%s: AdamW on equal inputs, step %d: %zu of %zu elements differ in any bit; worst relerr "
               "weights %.3g, moments %.3g\n", name, step, diff, np, worst_p, worst_mv);
        CHECK_MSG(worst_p <= 1e-6 && worst_mv <= 1e-6, "%s: AdamW step %d differs from adamw.c", name, step);
    }

    /* argument errors are refused before anything runs */
    {
        int bad[PB * PT];
        memcpy(bad, tok1, sizeof bad);
        bad[3] = V;
        CHECK(cllm_cuda_train_micro(gt, bad, lens, PB, PT, r1, n1, 0.1, 1, NULL, NULL) == CLLM_EINVAL);
        cllm_cuda_loss_row rr[2] = {{2 * PT + 7, 1, 1.0f, -1, 0.0f, -1}, {0, 1, 1.0f, -1, 0.0f, -1}};
        CHECK(cllm_cuda_train_micro(gt, tok1, lens, PB, PT, rr, 1, 0.0, 1, NULL, NULL) == CLLM_EINVAL);
        rr[0] = rr[1];
        CHECK(cllm_cuda_train_micro(gt, tok1, lens, PB, PT, rr, 2, 0.0, 1, NULL, NULL) == CLLM_EINVAL);
        rr[0] = (cllm_cuda_loss_row){0, -1, 0.0f, 2, 1.0f, -1};
        rr[1] = (cllm_cuda_loss_row){1, -1, 0.0f, -1, 0.0f, 2};
        CHECK(cllm_cuda_train_micro(gt, tok1, lens, PB, PT, rr, 2, 0.0, 1, NULL, NULL) == CLLM_EINVAL);
        CHECK(cllm_cuda_train_micro(gt, tok1, lens, PB + 1, PT, rr, 1, 0.0, 1, NULL, NULL) == CLLM_EINVAL);
        CHECK(cllm_cuda_train_micro(gt, tok1, lens, PB, PT, rr, 1, 1.0, 1, NULL, NULL) == CLLM_EINVAL);
    }
    printf("%s: %zu MiB on the device\n", name, cllm_cuda_train_bytes(gt) >> 20);
out:
    cllm_adamw_free(&oc);
    cllm_adamw_free(&og);
    cllm_act_free(act);
    cllm_cuda_train_free(gt);
    free(g_cpu);
    free(g_gpu);
    free(p_gpu);
    free(p0);
    free(teacher);
    cllm_model_free(&m);
    TEST_OK(name);
}

/* ---- forks (cllm_cuda_train_micro_fork) --------------------------------- */

/* One call with forks against the CPU's cllm_train_forward_fork, from the
 * same weights: sequence 0 (150 rows) forks at 100 with 40 rows (a prefix of
 * two key tiles and a bit, 64 rows each), sequence 1 (97) at its end with 20,
 * sequence 2 (6) at 0 (no prefix) with 5. AR-like CE rows on sequence 0 save
 * teacher slots that fork 0's first rows read in the same call (after them),
 * CE rows on the forks and on sequence 1. Each loss part within LOSS_TOL,
 * every gradient within GRAD_TOL; a row reading a slot saved after it, a
 * fork row past the fork's end and a fork past its sequence are refused.
 * nofork1: sequence 1 does not fork (its rows are left out), the norms'
 * weights are spread to 1 +- 0.7, and chunks are 13 rows. */
static void test_forks(const char *name, const cllm_config *c, uint64_t seed, int att, int nofork1) {
    cllm_model m;
    if (random_model(&m, c, seed)) { CHECK_MSG(0, "%s: alloc: %s", name, cllm_errmsg()); return; }
    int V = c->vocab;
    size_t np = m.n_params;
    if (nofork1)   /* RMSNorm weights 1 +- 0.7 instead of 1 +- 0.1: the norms' w terms matter */
        for (int i = 0; i < m.n_tensors; i++)
            if (strstr(m.tensors[i].name, "norm"))
                for (size_t j = 0; j < m.tensors[i].numel; j++) {
                    float *w = m.params + m.tensors[i].offset + j;
                    *w = 1.0f + 7.0f * (*w - 1.0f);
                }
    cllm_rng r;
    cllm_rng_seed(&r, seed + 9);
    int tok[PB * PT], lens[PB] = {PT, 97, 6}, ft[PB][40];
    for (int i = 0; i < PB * PT; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    for (int b = 0; b < PB; b++)
        for (int i = 0; i < 40; i++) ft[b][i] = (int)cllm_rng_below(&r, (uint64_t)V);
    cllm_fork fk[PB] = {{ft[0], 100, 40}, {ft[1], 97, nofork1 ? 0 : 20}, {ft[2], 0, 5}};
    cllm_cuda_loss_row rows[PROWS];
    int n = 0;
    for (int i = 0; i < 5; i++)   /* sequence 0 rows 95..99: CE, saved as slots 0..4 */
        rows[n++] = (cllm_cuda_loss_row){95 + i, tok[96 + i], 2.0f, -1, 0.0f, i};
    for (int i = 0; i < 7; i++)   /* sequence 1 rows 90..96: CE */
        rows[n++] = (cllm_cuda_loss_row){PT + 90 + i, (int)cllm_rng_below(&r, (uint64_t)V), 0.5f, -1, 0.0f, -1};
    for (int i = 0; i < 5; i++)   /* fork 0 rows 0..4 against slots 0..4, rows 0 and 3 also CE */
        rows[n++] = (cllm_cuda_loss_row){PB * PT + i, i == 0 || i == 3 ? ft[0][i + 1] : -1, 0.25f, i, 1.0f, -1};
    for (int i = 10; i < 40; i++)
        rows[n++] = (cllm_cuda_loss_row){PB * PT + i, (int)cllm_rng_below(&r, (uint64_t)V), 0.1f, -1, 0.0f, -1};
    for (int i = 0; i < fk[1].n; i++)
        rows[n++] = (cllm_cuda_loss_row){(PB + 1) * PT + i, (int)cllm_rng_below(&r, (uint64_t)V), 0.2f, -1, 0.0f, -1};
    for (int i = 0; i < 5; i++)
        rows[n++] = (cllm_cuda_loss_row){(PB + 2) * PT + i, (int)cllm_rng_below(&r, (uint64_t)V), 0.3f, -1, 0.0f, -1};
    int tokens = PT + 97 + 6 + 40 + fk[1].n + 5;
    cllm_cuda_train *gt = NULL;
    /* chunks of 9 rows; with nofork1 of 13, so that the first holds both rows
     * saving teacher slots and fork rows reading them were they not split
     * (check_micro's split: the race shows under CUEMU_ORDER=rev) */
    cllm_cuda_train_opts o = {PB, PT, PROWS, NSLOT, nofork1 ? 13 : 9, att, 0, tokens, 0, 0};
    float *g_cpu = calloc(np, sizeof(float)), *g_gpu = calloc(np, sizeof(float));
    float *teacher = calloc((size_t)NSLOT * V, sizeof(float));
    cllm_act *act = NULL;
    double ce_c, so_c, ce_g, so_g;
    CHECK(g_cpu && g_gpu && teacher);
    CHECK_OK(cllm_cuda_train_init(&gt, &m, &o));
    CHECK_OK(cllm_act_init(&act, &m, 2 * PB, PT));
    if (check_failures) goto out;
    CHECK_OK(cpu_micro(act, &m, tok, lens, PB, PT, fk, rows, n, 0.1, teacher, g_cpu, &ce_c, &so_c));
    CHECK_OK(cllm_cuda_train_micro_fork(gt, tok, lens, PB, PT, fk, rows, n, 0.1, 1, &ce_g, &so_g));
    if (check_failures) goto out;
    printf("%s: CE %.6f (CPU %.6f, relerr %.2g), soft CE %.6f (CPU %.6f, relerr %.2g)\n", name, ce_g, ce_c,
           relerr(ce_g, ce_c), so_g, so_c, relerr(so_g, so_c));
    CHECK_MSG(relerr(ce_g, ce_c) <= LOSS_TOL, "%s: CE", name);
    CHECK_MSG(relerr(so_g, so_c) <= LOSS_TOL, "%s: soft CE", name);
    CHECK(ce_c > 0 && so_c > 0);
    CHECK_OK(cllm_cuda_train_get_grads(gt, g_gpu));
    check_grads(name, &m, g_gpu, g_cpu);
    {   /* refused: a slot read before the row saving it, a fork row past its
         * end, a fork past its sequence's end */
        cllm_cuda_loss_row rr[2] = {{PB * PT, -1, 0.0f, 0, 1.0f, -1}, {0, 1, 1.0f, -1, 0.0f, 0}};
        CHECK(cllm_cuda_train_micro_fork(gt, tok, lens, PB, PT, fk, rr, 2, 0.0, 1, NULL, NULL) == CLLM_EINVAL);
        rr[0] = (cllm_cuda_loss_row){(PB + 2) * PT + 5, 1, 1.0f, -1, 0.0f, -1};
        CHECK(cllm_cuda_train_micro_fork(gt, tok, lens, PB, PT, fk, rr, 1, 0.0, 1, NULL, NULL) == CLLM_EINVAL);
        CHECK(cllm_cuda_train_micro(gt, tok, lens, PB, PT, rows + 12, 1, 0.0, 1, NULL, NULL) == CLLM_EINVAL);
        cllm_fork bad[PB] = {{ft[0], 100, 40}, {ft[1], 98, 20}, {ft[2], 0, 5}};
        CHECK(cllm_cuda_train_micro_fork(gt, tok, lens, PB, PT, bad, rows, n, 0.0, 1, NULL, NULL) == CLLM_EINVAL);
    }
out:
    cllm_act_free(act);
    cllm_cuda_train_free(gt);
    free(g_cpu);
    free(g_gpu);
    free(teacher);
    cllm_model_free(&m);
    TEST_OK(name);
}

/* A micro-batch whose sequences fill the planned (max_B, max_T) and fork:
 * its packed rows (a sequence's and its fork's) outnumber max_B x max_T, as
 * cllm-train's one-pass CLLM step makes them (cu_fit plans max_tokens for
 * the sum of lens and forks, with max_T the longest sequence): one sequence
 * of FT rows, a fork of FN rows at FA, planned as cu_fit plans it. It must
 * run, and match the CPU, not be refused as more tokens than planned. */
enum { FT = 40, FA = 30, FN = 10 };
static void test_full_fork(const char *name, const cllm_config *c, uint64_t seed) {
    cllm_model m;
    if (random_model(&m, c, seed)) { CHECK_MSG(0, "%s: alloc: %s", name, cllm_errmsg()); return; }
    int V = c->vocab;
    size_t np = m.n_params;
    cllm_rng r;
    cllm_rng_seed(&r, seed + 3);
    int tok[FT], lens[1] = {FT}, ft[FN];
    for (int i = 0; i < FT; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    for (int i = 0; i < FN; i++) ft[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    cllm_fork fk[1] = {{ft, FA, FN}};
    cllm_cuda_loss_row rows[FT + FN];
    int n = 0;
    for (int t = FA - 4; t < FT - 1; t++)   /* the sequence's last rows, CE */
        rows[n++] = (cllm_cuda_loss_row){t, tok[t + 1], 0.5f, -1, 0.0f, -1};
    for (int i = 0; i < FN; i++)   /* every fork row, CE */
        rows[n++] = (cllm_cuda_loss_row){FT + i, (int)cllm_rng_below(&r, (uint64_t)V), 0.25f, -1, 0.0f, -1};
    cllm_cuda_train_opts o = {1, FT, 0, 0, 0, 0, 0, FT + FN, 0, 0};
    cllm_cuda_train *gt = NULL;
    float *g_cpu = calloc(np, sizeof(float)), *g_gpu = calloc(np, sizeof(float));
    cllm_act *act = NULL;
    double ce_c, so_c, ce_g = 0, so_g = 0;
    CHECK(g_cpu && g_gpu);
    CHECK_OK(cllm_cuda_train_init(&gt, &m, &o));
    CHECK_OK(cllm_act_init(&act, &m, 2, FT));
    if (check_failures) goto out;
    CHECK_OK(cpu_micro(act, &m, tok, lens, 1, FT, fk, rows, n, 0.0, NULL, g_cpu, &ce_c, &so_c));
    int rc = cllm_cuda_train_micro_fork(gt, tok, lens, 1, FT, fk, rows, n, 0.0, 1, &ce_g, &so_g);
    CHECK_MSG(rc == 0, "%s: %d packed rows of a %d x %d plan with max_tokens %d: %s", name, FT + FN, 1, FT, FT + FN,
              rc ? cllm_errmsg() : "");
    if (check_failures) goto out;
    printf("%s: %d packed rows (plan 1 x %d): CE %.6f (CPU %.6f, relerr %.2g)\n", name, FT + FN, FT, ce_g, ce_c,
           relerr(ce_g, ce_c));
    CHECK_MSG(relerr(ce_g, ce_c) <= LOSS_TOL, "%s: CE", name);
    CHECK_OK(cllm_cuda_train_get_grads(gt, g_gpu));
    check_grads(name, &m, g_gpu, g_cpu);
out:
    cllm_act_free(act);
    cllm_cuda_train_free(gt);
    free(g_cpu);
    free(g_gpu);
    cllm_model_free(&m);
    TEST_OK(name);
}

/* ---- throughput on SmolLM2-135M shapes ------------------------------------- */

/* Seconds per optimizer step (zero_grad, one micro-batch, clipped AdamW) over
 * STEPS steps after WARM; *tf and *tfb: a forward-only and a forward+backward
 * micro-batch alone. */
static double bench_steps(cllm_cuda_train *gt, const int *tok, const int *lens, int B, int T,
                          const cllm_cuda_loss_row *rows, int n, double *ce, double *norm,
                          double *tf, double *tfb) {
    enum { WARM = 2, STEPS = 10 };
    double t0 = 0;
    for (int s = 0; s < WARM + STEPS; s++) {
        if (s == WARM) t0 = cllm_now_s();
        CHECK_OK(cllm_cuda_train_zero_grad(gt));
        CHECK_OK(cllm_cuda_train_micro(gt, tok, lens, B, T, rows, n, 0.0, 1, ce, NULL));
        CHECK_OK(cllm_cuda_train_step(gt, 1e-4, 1.0, norm, NULL));
        if (check_failures) return 0;
    }
    double dt = (cllm_now_s() - t0) / STEPS, a = cllm_now_s();
    for (int s = 0; s < 3; s++) CHECK_OK(cllm_cuda_train_micro(gt, tok, lens, B, T, rows, n, 0.0, 0, NULL, NULL));
    *tf = (cllm_now_s() - a) / 3;
    a = cllm_now_s();
    for (int s = 0; s < 3; s++) CHECK_OK(cllm_cuda_train_micro(gt, tok, lens, B, T, rows, n, 0.0, 1, NULL, NULL));
    *tfb = (cllm_now_s() - a) / 3;
    return dt;
}

/* B records of T - 40 .. T tokens (spread 0: issue 8's "~300 tokens"), or
 * (spread 1) of 60 .. T tokens, uniform: the spread of CLLM training records
 * (prompt + answer prefix + window; 58 .. 387 tokens, mean 207, in 667 GSM8K
 * trajectories of SmolLM2), where a micro-batch padded to its longest record
 * would be ~40 % padding. With spread, the same micro-batch is timed again
 * with every record made T long (filler tokens after the real ones, the same
 * loss rows: the real rows' results do not change, causal attention never
 * looks ahead): the cost of the padding the trainer's packed rows avoid. */
static void bench(int B, int T, int att, int spread) {
    cllm_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.arch, sizeof c.arch, "llama");
    c.n_layer = 30; c.d_model = 576; c.n_head = 9; c.n_head_kv = 3; c.head_dim = 64;
    c.d_ff = 1536; c.vocab = 49152; c.max_ctx = 2048; c.rope_theta = 100000.0f; c.rope_dim = 64;
    c.rms_eps = 1e-5f; c.tied = 1; c.bos_id = c.eos_id = c.pad_id = -1;
    cllm_model m;
    if (random_model(&m, &c, 99)) { CHECK_MSG(0, "bench: alloc: %s", cllm_errmsg()); return; }
    int *tok = malloc((size_t)B * T * sizeof(int)), *lens = malloc((size_t)B * sizeof(int));
    cllm_cuda_loss_row *rows = malloc((size_t)B * T * sizeof *rows);
    cllm_cuda_train *gt = NULL;
    cllm_cuda_train_opts o = {B, T, B * T, 0, 0, att, 0, 0, 0, 0};
    CHECK(tok && lens && rows);
    if (check_failures) goto out;
    cllm_rng r;
    cllm_rng_seed(&r, 5);
    long long ntok = 0;
    int n = 0;
    double att_ctx = 0;   /* sum over real rows of their position + 1 */
    for (int b = 0; b < B; b++) {
        lens[b] = spread ? (T > 60 ? 60 + (int)cllm_rng_below(&r, (uint64_t)(T - 59)) : T)
                         : T - (int)cllm_rng_below(&r, T > 41 ? 41 : 1);
        ntok += lens[b];
        for (int t = 0; t < T; t++) tok[b * T + t] = (int)cllm_rng_below(&r, (uint64_t)c.vocab);
        for (int t = 0; t < lens[b]; t++) att_ctx += t + 1;
        for (int t = 0; t + 1 < lens[b]; t++)
            rows[n++] = (cllm_cuda_loss_row){b * T + t, tok[b * T + t + 1], 1.0f / (float)(lens[b] - 1),
                                             -1, 0.0f, -1};
    }
    CHECK_OK(cllm_cuda_train_init(&gt, &m, &o));
    if (check_failures) goto out;
    printf("bench: SmolLM2-135M shapes, %s attention kernels, %zu parameters, %d x %d (%lld real "
           "tokens, %s, %d loss rows), %zu MiB on the device\n",
           att == 2 ? "thread-per-key" : att == 1 ? "warp-per-key" : "default (tensor-core)", m.n_params, B, T,
           ntok, spread ? "lengths 60..T" : "lengths T-40..T", n, cllm_cuda_train_bytes(gt) >> 20);
    double ce = 0, norm = 0, tf = 0, tfb = 0;
    double dt = bench_steps(gt, tok, lens, B, T, rows, n, &ce, &norm, &tf, &tfb);
    if (check_failures) goto out;
    /* model FLOPs: 6 per parameter of every product per token (2 forward, 4
     * backward; the LM head on the loss rows), attention 12 QD flops per
     * (query, key) pair per layer (QK^T and PV, forward 4, backward 8) */
    double C = c.d_model, QD = c.n_head * c.head_dim, KD = c.n_head_kv * c.head_dim, F = c.d_ff;
    double per_tok = 6.0 * c.n_layer * (C * (QD + 2 * KD) + QD * C + 3 * C * F);
    double flops = per_tok * ntok + 6.0 * C * c.vocab * n + 12.0 * QD * c.n_layer * att_ctx;
    printf("bench: step %.2f ms (forward+loss %.2f ms, +backward %.2f ms), loss %.4f, grad norm %.3g\n",
           dt * 1e3, tf * 1e3, tfb * 1e3, ce, norm);
    printf("bench: %.0f training tokens/s, %.1f TFLOP/s model FLOPs, MFU %.1f %% of 989 TFLOP/s "
           "(H100/H200 SXM dense bf16)\n", ntok / dt, flops / dt * 1e-12, 100.0 * flops / dt / 989e12);
    if (spread) {   /* the same records padded to T: the baseline of packing */
        int *full = malloc((size_t)B * sizeof(int));
        CHECK(full != NULL);
        if (check_failures) goto out;
        for (int b = 0; b < B; b++) full[b] = T;
        /* the same loss from the same weights (the products of the longer
         * call may take other cuBLAS algorithms: equal within 1e-3, not bits) */
        double ce_packed = 0, ce_padded = 0, ce2 = 0, norm2 = 0, tf2 = 0, tfb2 = 0;
        CHECK_OK(cllm_cuda_train_micro(gt, tok, lens, B, T, rows, n, 0.0, 0, &ce_packed, NULL));
        CHECK_OK(cllm_cuda_train_micro(gt, tok, full, B, T, rows, n, 0.0, 0, &ce_padded, NULL));
        CHECK_MSG(fabs(ce_padded - ce_packed) <= 1e-3 * fabs(ce_packed), "bench: padded loss %.6f vs packed %.6f",
                  ce_padded, ce_packed);
        double dt2 = check_failures ? 0 : bench_steps(gt, tok, full, B, T, rows, n, &ce2, &norm2, &tf2, &tfb2);
        free(full);
        if (check_failures) goto out;
        printf("bench: padded to %d rows a record (%lld rows, %.0f %% padding): step %.2f ms; packed "
               "%.2f ms: %.2fx, %.0f training tokens/s padded\n", T, (long long)B * T,
               100.0 * (1.0 - (double)ntok / ((double)B * T)), dt2 * 1e3, dt * 1e3, dt2 / dt, ntok / dt2);
    }
out:
    cllm_cuda_train_free(gt);
    free(tok);
    free(lens);
    free(rows);
    cllm_model_free(&m);
    TEST_OK("bench");
}

/* CLLM_TEST_CUDA_TRAIN_ONLY=s: only the parity and fork tests whose name
 * contains s (check.sh runs the fork tests again under CUEMU_ORDER=rev) */
static int wanted(const char *name) {
    const char *s = getenv("CLLM_TEST_CUDA_TRAIN_ONLY");
    return !s || !*s || strstr(name, s);
}
#define TEST_PARITY(name, ...) do { if (wanted(name)) test_parity(name, __VA_ARGS__); } while (0)
#define TEST_FORKS(name, ...) do { if (wanted(name)) test_forks(name, __VA_ARGS__); } while (0)

#endif

int main(int argc, char **argv) {
#if !CLLM_CUDA
    (void)argc;
    (void)argv;
    printf("skip: no CUDA device (built without CUDA)\n");
    return check_failures;   /* 0 */
#else
    int n = 0, rc = cllm_cuda_train_devices(&n);
    if (rc || n < 1) {
        printf("skip: no CUDA device%s%s\n", rc ? ": " : "", rc ? cllm_errmsg() : "");
        return 0;
    }
    char name[256];
    CHECK_OK(cllm_cuda_device_name(name, sizeof name));
    printf("device: %s\n", name);
    int do_bench = argc > 1 && !strcmp(argv[1], "--bench");
    if (!do_bench || getenv("CLLM_BENCH_PARITY")) {
        cllm_config a = small_config("llama", 2, 96, 3, 1, 32, 192, 300, 1, 0);
        cllm_config b = small_config("qwen2", 2, 256, 4, 2, 64, 320, 257, 0, 1);
        TEST_PARITY("parity_llama_tied_gqa", &a, 11, 0);
        TEST_PARITY("parity_qwen2_bias", &b, 12, 0);
        /* head size 128, the tensor-core kernels' largest (other templates) */
        cllm_config d = small_config("llama", 1, 256, 2, 1, 128, 256, 300, 1, 0);
        TEST_PARITY("parity_llama_hs128", &d, 13, 0);
        TEST_PARITY("parity_llama_tied_gqa_warpattn", &a, 11, 1);
        TEST_PARITY("parity_qwen2_bias_warpattn", &b, 12, 1);
        TEST_PARITY("parity_llama_tied_gqa_keyattn", &a, 11, 2);
        TEST_PARITY("parity_qwen2_bias_keyattn", &b, 12, 2);
        TEST_FORKS("forks_llama_tied_gqa", &a, 21, 0, 0);
        TEST_FORKS("forks_qwen2_bias", &b, 22, 0, 0);
        TEST_FORKS("forks_llama_hs128", &d, 23, 0, 0);
        TEST_FORKS("forks_llama_tied_gqa_warpattn", &a, 21, 1, 0);
        TEST_FORKS("forks_qwen2_bias_warpattn", &b, 22, 1, 0);
        /* sequence 1 without a fork: sequence 2's fork is the second (E = 5) */
        TEST_FORKS("forks_qwen2_bias_nofork1", &b, 24, 0, 1);
        if (wanted("full_fork")) test_full_fork("full_fork_llama_tied_gqa", &a, 25);
    }
    if (do_bench) {
        int B = argc > 3 ? atoi(argv[2]) : 16, T = argc > 3 ? atoi(argv[3]) : 320;
        int spread = argc > 4 && !strcmp(argv[4], "spread");
        if (B < 1 || T < 2 || (argc > 4 && !spread)) {
            fprintf(stderr, "usage: %s [--bench [B T [spread]]]\n", argv[0]);
            return 2;
        }
        bench(B, T, 0, spread);
        if (!check_failures && !spread) bench(B, T, 1, 0);
    }
    TEST_END();
#endif
}
