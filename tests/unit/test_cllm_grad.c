/* test_cllm_grad.c: the gradient of the whole CLLM objective, end to end.
 *
 * test_backward checks the backward pass for arbitrary dlogits (against torch
 * and finite differences); test_loss checks each loss's dlogits. This test
 * checks their composition the way cllm-train uses it, on a tiny random model:
 *   J(p) = soft-CE(student(p) rows on ctx||y, teacher rows on ctx||y*)   (global consistency,
 *          summed, rows before the first y != y* skipped)
 *        + 10 * label-smoothed(0.1) CE(rows of ctx||y* predicting y*, mean) (AR)
 * with the teacher's logits frozen at the starting parameters: the teacher is a
 * stop-gradient copy (theta^-), so finite differences must not move it either.
 * For every parameter tensor, the directional derivative along a random
 * direction (Richardson-extrapolated central difference, loss summed in double)
 * must match <grad, d> to 2e-3 of sum |grad * d|: the same tolerance and the
 * same reasons as test_backward (fp32 forward noise of ~1e-6 absolute divided
 * by a step of 0.05..0.1 of the tensor's scale).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "err.h"
#include "fwd_testutil.h"
#include "loss.h"
#include "model.h"
#include "rng.h"
#include "train_fwd.h"

enum { P = 5, M = 6, T = P + M, B = 2 };   /* context, window, sequence length, sequences */

typedef struct objective {
    const cllm_model *m;
    cllm_act *a;
    int tok[B * T], lens[B];
    int32_t y[M], ystar[M];
    float *teacher;   /* (M, V) frozen teacher rows */
    float *logits;    /* (B, T, V) */
    float *dlogits;   /* (B, T, V) */
} objective;

/* J at the model's current parameters; with dl != NULL also dJ/dlogits. */
static double eval_j(objective *o, float *dl) {
    int V = o->m->cfg.vocab;
    if (cllm_train_forward(o->a, o->m, o->tok, o->lens, B, T, o->logits)) return NAN;
    double cons = 0, ar = 0;
    size_t row0 = (size_t)(P - 1) * V;              /* the row predicting window token 0 */
    float *ds = dl ? dl + row0 : NULL, *da = dl ? dl + (size_t)T * V + row0 : NULL;
    if (dl) memset(dl, 0, (size_t)B * T * V * sizeof(float));
    if (cllm_consistency_loss(o->logits + row0, o->teacher, V, o->y, o->ystar, M, CLLM_REDUCE_SUM, 1.0f, ds,
                              &cons, NULL))
        return NAN;
    if (cllm_ce_loss(o->logits + (size_t)T * V + row0, V, o->ystar, M, 0.1, CLLM_REDUCE_MEAN, 10.0f, da, &ar))
        return NAN;
    return cons + ar;
}

static void check(int tied, int bias) {
    cllm_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.arch, sizeof c.arch, "%s", bias ? "qwen2" : "llama");
    c.n_layer = 2; c.d_model = 32; c.n_head = 4; c.n_head_kv = 2; c.head_dim = 8; c.d_ff = 64;
    c.vocab = 64; c.max_ctx = 64; c.rope_theta = 10000.0f; c.rope_dim = 8; c.rms_eps = 1e-5f;
    c.tied = tied; c.qkv_bias = bias; c.bos_id = c.eos_id = c.pad_id = -1;
    cllm_model m;
    if (random_model(&m, &c, 40 + 2 * tied + bias)) { CHECK(0); return; }
    int V = c.vocab;
    objective o;
    memset(&o, 0, sizeof o);
    o.m = &m;
    cllm_rng r;
    cllm_rng_seed(&r, 7 + tied + bias);
    /* ctx, then y* (the fixed point) and a state y that agrees on its first 2 tokens */
    for (int i = 0; i < P; i++) o.tok[i] = o.tok[T + i] = (int)cllm_rng_below(&r, (uint64_t)V);
    for (int i = 0; i < M; i++) {
        o.ystar[i] = (int32_t)cllm_rng_below(&r, (uint64_t)V);
        o.y[i] = i < 2 ? o.ystar[i] : (int32_t)cllm_rng_below(&r, (uint64_t)V);
        o.tok[P + i] = o.y[i];
        o.tok[T + P + i] = o.ystar[i];
    }
    o.lens[0] = o.lens[1] = T;
    size_t NL = (size_t)B * T * V;
    o.logits = malloc(NL * sizeof(float));
    o.dlogits = malloc(NL * sizeof(float));
    o.teacher = malloc((size_t)M * V * sizeof(float));
    float *g = calloc(m.n_params, sizeof(float)), *d = malloc(m.n_params * sizeof(float));
    float *p0 = malloc(m.n_params * sizeof(float));
    CHECK_OK(cllm_act_init(&o.a, &m, B, T));
    if (!o.logits || !o.dlogits || !o.teacher || !g || !d || !p0 || !o.a) { CHECK(0); goto out; }
    memcpy(p0, m.params, m.n_params * sizeof(float));
    /* Freeze the teacher: sequence 1's window rows at the starting parameters. */
    CHECK_OK(cllm_train_forward(o.a, &m, o.tok, o.lens, B, T, o.logits));
    memcpy(o.teacher, o.logits + (size_t)T * V + (size_t)(P - 1) * V, (size_t)M * V * sizeof(float));
    double J0 = eval_j(&o, o.dlogits);
    CHECK(isfinite(J0) && J0 > 0);
    CHECK_OK(cllm_train_backward(o.a, &m, o.dlogits, g));

    double worst = 0;
    const double eps = 0.1;
    for (int ti = 0; ti < m.n_tensors; ti++) {
        const cllm_tensor_info *t = &m.tensors[ti];
        float *p = m.params + t->offset, *dt = d + t->offset;
        const float *gt = g + t->offset;
        float amax = 0;
        for (size_t j = 0; j < t->numel; j++)
            if (fabsf(p0[t->offset + j]) > amax) amax = fabsf(p0[t->offset + j]);
        if (strstr(t->name, "bias")) amax = 0.5f;
        for (size_t j = 0; j < t->numel; j++) dt[j] = amax * (2.0f * cllm_rng_float(&r) - 1.0f);
        double gd = 0, scale = 0;
        for (size_t j = 0; j < t->numel; j++) { gd += (double)gt[j] * dt[j]; scale += fabs((double)gt[j] * dt[j]); }
        double D[2];
        for (int s = 0; s < 2; s++) {
            double h = s ? eps / 2 : eps;
            for (size_t j = 0; j < t->numel; j++) p[j] = p0[t->offset + j] + (float)h * dt[j];
            double Jp = eval_j(&o, NULL);
            for (size_t j = 0; j < t->numel; j++) p[j] = p0[t->offset + j] - (float)h * dt[j];
            double Jm = eval_j(&o, NULL);
            D[s] = (Jp - Jm) / (2 * h);
        }
        memcpy(p, p0 + t->offset, t->numel * sizeof(float));
        double fd = (4 * D[1] - D[0]) / 3;
        double e = fabs(fd - gd) / (scale > 0 ? scale : 1);
        if (e > worst) worst = e;
        CHECK_MSG(e <= 2e-3, "tied=%d bias=%d %s: directional FD %.6g vs <g,d> %.6g (scale %.3g): err %.3g",
                  tied, bias, t->name, fd, gd, scale, e);
    }
    printf("cllm objective tied=%d bias=%d: J = %.4f, %d tensors, worst directional err %.3g (tol 2e-3)\n",
           tied, bias, J0, m.n_tensors, worst);
out:
    cllm_act_free(o.a);
    free(o.logits); free(o.dlogits); free(o.teacher); free(g); free(d); free(p0);
    cllm_model_free(&m);
}

int main(void) {
    check(1, 0);
    check(0, 1);
    TEST_OK("gradient of the CLLM objective (global consistency + AR) vs finite differences");
    TEST_END();
}
