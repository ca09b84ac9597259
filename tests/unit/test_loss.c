/* test_loss.c: the training losses (libcore/loss.h): every dlogits equals
 * central finite differences of the loss value (computed in double from the
 * float logits), soft cross-entropy equals KL + the teacher's entropy, the
 * consistency loss skips the rows before the first differing token, label
 * smoothing matches its closed form, huge logits stay finite, the reductions'
 * values (scale, SUM, MEAN, added to *loss) equal the rows' definitions, and
 * every argument bound is checked. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "err.h"
#include "loss.h"
#include "rng.h"

#define V 11
#define M 5

static void fill(cllm_rng *r, float *x, int n, float amp) {
    for (int i = 0; i < n; i++) x[i] = (cllm_rng_float(r) * 2 - 1) * amp;
}

/* Finite-difference check of a loss f(logits) against its analytic gradient. */
typedef double (*loss_fn)(const float *x, float *dx, void *ctx);

static double fd_check(loss_fn fn, float *x, int n, void *ctx, const char *what) {
    float *dx = calloc((size_t)n, sizeof *dx);
    fn(x, dx, ctx);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        float keep = x[i];
        const float h = 1e-2f;
        x[i] = keep + h;
        double lp = fn(x, NULL, ctx);
        x[i] = keep - h;
        double lm = fn(x, NULL, ctx);
        x[i] = keep;
        double fd = (lp - lm) / (2.0 * h);
        double err = fabs(fd - dx[i]) / (fabs(fd) > 1e-3 ? fabs(fd) : 1e-3);
        if (err > worst) worst = err;
    }
    free(dx);
    CHECK_MSG(worst < 2e-3, "%s: dlogits vs finite differences, worst relative error %.3g", what, worst);
    printf("%s: worst relative error vs finite differences %.2e\n", what, worst);
    return worst;
}

typedef struct { const int32_t *tgt; double eps; int reduce; float scale; } ce_ctx;
static double ce_fn(const float *x, float *dx, void *c_) {
    ce_ctx *c = c_;
    double l = 0;
    int rc = cllm_ce_loss(x, V, c->tgt, M, c->eps, c->reduce, c->scale, dx, &l);
    if (rc) abort();
    return l;
}

typedef struct { const float *teacher; const int32_t *y, *ystar; int reduce; float scale; } sc_ctx;
static double sc_fn(const float *x, float *dx, void *c_) {
    sc_ctx *c = c_;
    double l = 0;
    int rc = cllm_consistency_loss(x, c->teacher, V, c->y, c->ystar, M, c->reduce, c->scale, dx, &l, NULL);
    if (rc) abort();
    return l;
}

int main(void) {
    cllm_rng r;
    cllm_rng_seed(&r, 42);
    float s[M * V], t[M * V];
    int32_t tgt[M] = { 0, 3, 10, 7, 7 };
    fill(&r, s, M * V, 4);
    fill(&r, t, M * V, 4);

    /* Cross-entropy (SFT), label-smoothed cross-entropy (AR), sum and mean, scaled. */
    ce_ctx c1 = { tgt, 0.0, CLLM_REDUCE_SUM, 1.0f };
    fd_check(ce_fn, s, M * V, &c1, "ce sum");
    ce_ctx c2 = { tgt, 0.1, CLLM_REDUCE_MEAN, 10.0f };
    fd_check(ce_fn, s, M * V, &c2, "ce smoothed 0.1 mean x10");
    TEST_OK("ce_grad");

    /* Label smoothing closed form: (1-eps)*nll + eps*mean(-log q). */
    {
        double lse = 0, mx = s[0];
        for (int v = 1; v < V; v++) if (s[v] > mx) mx = s[v];
        for (int v = 0; v < V; v++) lse += exp(s[v] - mx);
        lse = mx + log(lse);
        double want = 0.9 * (lse - s[0]);
        for (int v = 0; v < V; v++) want += 0.1 * (lse - s[v]) / V;
        double got = cllm_ce_row(s, V, 0, 0.1, 1.0f, NULL);
        CHECK_MSG(fabs(got - want) < 1e-12, "smoothed CE %.15g vs %.15g", got, want);
        /* The gradient of a row sums to 0. */
        float d[V];
        cllm_ce_row(s, V, 4, 0.1, 1.0f, d);
        double sum = 0;
        for (int v = 0; v < V; v++) sum += d[v];
        CHECK(fabs(sum) < 1e-6);
    }
    TEST_OK("label_smoothing");

    /* Soft cross-entropy equals KL(p||q) + H(p). */
    for (int i = 0; i < M; i++) {
        const float *sr = s + i * V, *tr = t + i * V;
        double ms = sr[0], mt = tr[0], zs = 0, zt = 0;
        for (int v = 1; v < V; v++) { if (sr[v] > ms) ms = sr[v]; if (tr[v] > mt) mt = tr[v]; }
        for (int v = 0; v < V; v++) { zs += exp(sr[v] - ms); zt += exp(tr[v] - mt); }
        double kl = 0, h = 0;
        for (int v = 0; v < V; v++) {
            double lp = tr[v] - mt - log(zt), lq = sr[v] - ms - log(zs);
            kl += exp(lp) * (lp - lq);
            h -= exp(lp) * lp;
        }
        double sce = cllm_soft_ce_row(sr, tr, V, 1.0f, NULL);
        CHECK_MSG(fabs(sce - (kl + h)) < 1e-12, "row %d: soft CE %.15g vs KL+H %.15g", i, sce, kl + h);
        CHECK(kl >= 0);
        /* Teacher == student: the gradient vanishes and the loss is H(p). */
        float d[V];
        double self = cllm_soft_ce_row(tr, tr, V, 1.0f, d);
        CHECK(fabs(self - h) < 1e-12);
        for (int v = 0; v < V; v++) CHECK(fabs(d[v]) < 1e-7);
    }
    TEST_OK("soft_ce_is_kl_plus_entropy");

    /* Consistency loss gradients, all rows kept and some skipped. */
    int32_t y[M] = { 5, 6, 1, 2, 3 }, ystar[M] = { 5, 6, 9, 2, 4 };
    sc_ctx k1 = { t, y, ystar, CLLM_REDUCE_SUM, 1.0f };
    fd_check(sc_fn, s, M * V, &k1, "consistency sum (skip 2)");
    sc_ctx k2 = { t, y, ystar, CLLM_REDUCE_MEAN, 3.0f };
    fd_check(sc_fn, s, M * V, &k2, "consistency mean x3 (skip 2)");
    TEST_OK("consistency_grad");

    /* Skipping rule: rows before the first token where y and y* differ carry
     * no loss and no gradient; the rest add up row by row. */
    {
        float d[M * V];
        double l = 0;
        int kept = -1;
        CHECK_OK(cllm_consistency_loss(s, t, V, y, ystar, M, CLLM_REDUCE_SUM, 1.0f, d, &l, &kept));
        CHECK_EQ_INT(kept, 3);
        CHECK_EQ_INT(cllm_first_diff(y, ystar, M), 2);
        for (int i = 0; i < 2 * V; i++) CHECK(d[i] == 0.0f);
        double want = 0;
        for (int i = 2; i < M; i++) want += cllm_soft_ce_row(s + i * V, t + i * V, V, 1.0f, NULL);
        CHECK_MSG(fabs(l - want) < 1e-9, "consistency %.15g vs rows %.15g", l, want);
        /* Mean divides by the rows kept. */
        double lm = 0;
        CHECK_OK(cllm_consistency_loss(s, t, V, y, ystar, M, CLLM_REDUCE_MEAN, 1.0f, NULL, &lm, NULL));
        CHECK_MSG(fabs(lm - want / 3) < 1e-6, "mean %.15g vs %.15g", lm, want / 3);
        /* Identical states: nothing kept, zero loss, zero gradient. */
        double l0 = 0;
        memset(d, 0x7f, sizeof d);
        CHECK_OK(cllm_consistency_loss(s, t, V, y, y, M, CLLM_REDUCE_MEAN, 1.0f, d, &l0, &kept));
        CHECK_EQ_INT(kept, 0);
        CHECK(l0 == 0);
        for (int i = 0; i < M * V; i++) CHECK(d[i] == 0.0f);
        /* The first token differs: every row counts. */
        int32_t y2[M] = { 0, 6, 9, 2, 4 };
        CHECK_OK(cllm_consistency_loss(s, t, V, y2, ystar, M, CLLM_REDUCE_SUM, 1.0f, NULL, &l0, &kept));
        CHECK_EQ_INT(kept, M);
    }
    TEST_OK("consistency_skip_rule");

    /* Huge logits: max subtraction keeps everything finite. */
    {
        float big[V], tb[V], d[V];
        for (int v = 0; v < V; v++) { big[v] = 1e30f * (v % 3 - 1); tb[v] = -1e30f * (v % 2); }
        double l1 = cllm_ce_row(big, V, 2, 0.0, 1.0f, d);
        CHECK(isfinite(l1));
        for (int v = 0; v < V; v++) CHECK(isfinite(d[v]));
        double l2 = cllm_soft_ce_row(big, tb, V, 1.0f, d);
        CHECK(isfinite(l2) || isinf(l2));
        for (int v = 0; v < V; v++) CHECK(isfinite(d[v]));
        big[0] = 88.0f; big[1] = 89.0f;
        for (int v = 2; v < V; v++) big[v] = -5;
        double l3 = cllm_ce_row(big, V, 1, 0.0, 1.0f, NULL);
        CHECK(l3 > 0 && l3 < 1);
    }
    TEST_OK("stable");

    /* Rows whose maximum is the last logit, and rows of only very negative
     * logits: the maximum must be found over all V entries and taken from
     * the row itself (not from 0), or exp overflows (to inf) or underflows
     * (every term 0, log 0). Expected values in closed form: a row of V equal
     * logits has -log q = log V for every target; a row with x[V-1] = 1000
     * and 0 elsewhere has -log q[V-1] = log(1 + (V-1) e^-1000) = 0 in double.
     * Tolerance 1e-12: a handful of double operations. */
    {
        float last[V], low[V], d[V];
        for (int v = 0; v < V; v++) { last[v] = 0.0f; low[v] = -2000.0f; }
        last[V - 1] = 1000.0f;
        double l1 = cllm_ce_row(last, V, V - 1, 0.0, 1.0f, d);
        CHECK_MSG(fabs(l1) < 1e-12, "max at the last logit: CE %.17g, want 0", l1);
        for (int v = 0; v < V; v++) CHECK_MSG(fabs(d[v]) < 1e-12, "max at the last logit: dlogits[%d] %g", v, d[v]);
        double l2 = cllm_ce_row(low, V, 3, 0.0, 1.0f, NULL);
        CHECK_MSG(fabs(l2 - log((double)V)) < 1e-12, "all logits -2000: CE %.17g, want log V", l2);
        double l3 = cllm_soft_ce_row(low, last, V, 1.0f, NULL);   /* p = one-hot(V-1): -log q[V-1] = log V */
        CHECK_MSG(fabs(l3 - log((double)V)) < 1e-12, "soft CE, all student logits -2000: %.17g, want log V", l3);
    }
    TEST_OK("stable_extremes");

    /* The reductions on values, from the row definitions computed here in
     * double: every row's own target (a hand-made table), MEAN = SUM / m,
     * SUM of the rows, scale multiplying both the value and the gradient,
     * and the result added to *loss, not stored. dlogits of the soft CE at a
     * scale other than 1 (test_cllm_grad and the MEAN x3 case above keep the
     * row scale at 1): scale * (q - p). Tolerances: 1e-12 relative for values
     * summed in double (MEAN: the fp32 scale / m, below); 1e-6 absolute for fp32
     * dlogits of size <= 5. */
    {
        double want_sum = 0;
        for (int i = 0; i < M; i++) {
            const float *x = s + i * V;
            double mx = x[0], z = 0, sl = 0;
            for (int v = 1; v < V; v++) if (x[v] > mx) mx = x[v];
            for (int v = 0; v < V; v++) { z += exp((double)x[v] - mx); sl += x[v]; }
            double lse = mx + log(z);
            want_sum += 0.8 * (lse - x[tgt[i]]) + 0.2 * (lse - sl / V);
        }
        double l = 1.5;
        CHECK_OK(cllm_ce_loss(s, V, tgt, M, 0.2, CLLM_REDUCE_SUM, 2.0f, NULL, &l));
        CHECK_MSG(fabs(l - (1.5 + 2 * want_sum)) < 1e-12 * want_sum, "CE sum x2 onto 1.5: %.15g vs %.15g", l,
                  1.5 + 2 * want_sum);
        l = -0.25;
        CHECK_OK(cllm_ce_loss(s, V, tgt, M, 0.2, CLLM_REDUCE_MEAN, 3.0f, NULL, &l));
        /* MEAN's row scale is the fp32 scale / m (loss.h: scale is a float), 2^-24 relative */
        CHECK_MSG(fabs(l - (-0.25 + 3 * want_sum / M)) < 2e-7 * want_sum, "CE mean x3 onto -0.25: %.15g vs %.15g",
                  l, -0.25 + 3 * want_sum / M);
        /* consistency: rows 2..4 kept (y, ystar below differ first at 2) */
        int32_t cy[M] = { 5, 6, 1, 2, 3 }, cys[M] = { 5, 6, 9, 2, 4 };
        double want_c = 0;
        for (int i = 2; i < M; i++) want_c += cllm_soft_ce_row(s + i * V, t + i * V, V, 1.0f, NULL);
        l = 0.75;
        CHECK_OK(cllm_consistency_loss(s, t, V, cy, cys, M, CLLM_REDUCE_SUM, 2.0f, NULL, &l, NULL));
        CHECK_MSG(fabs(l - (0.75 + 2 * want_c)) < 1e-12 * want_c, "consistency sum x2 onto 0.75: %.15g vs %.15g", l,
                  0.75 + 2 * want_c);
        float d[M * V];
        l = 0;
        CHECK_OK(cllm_consistency_loss(s, t, V, cy, cys, M, CLLM_REDUCE_MEAN, 5.0f, d, &l, NULL));
        for (int i = 2; i < M; i++) {
            const float *x = s + i * V, *u = t + i * V;
            double mx = x[0], mu = u[0], zx = 0, zu = 0;
            for (int v = 1; v < V; v++) { if (x[v] > mx) mx = x[v]; if (u[v] > mu) mu = u[v]; }
            for (int v = 0; v < V; v++) { zx += exp((double)x[v] - mx); zu += exp((double)u[v] - mu); }
            for (int v = 0; v < V; v++) {
                double want = 5.0 / 3 * (exp(x[v] - mx) / zx - exp(u[v] - mu) / zu);
                CHECK_MSG(fabs(d[i * V + v] - want) < 1e-6, "consistency mean x5 row %d: d[%d] %.9g vs %.9g", i, v,
                          d[i * V + v], want);
            }
        }
        /* m = 0: nothing added, no gradient written */
        l = 0.5;
        CHECK_OK(cllm_ce_loss(s, V, tgt, 0, 0.1, CLLM_REDUCE_MEAN, 1.0f, NULL, &l));
        CHECK(l == 0.5);
    }
    TEST_OK("reduce_values");

    /* Bad arguments are errors, not crashes. */
    {
        double l = 0;
        int32_t bad[1] = { V };
        CHECK(cllm_ce_loss(s, V, bad, 1, 0.0, CLLM_REDUCE_SUM, 1.0f, NULL, &l) == CLLM_EINVAL);
        CHECK(cllm_ce_loss(s, V, tgt, 1, 1.0, CLLM_REDUCE_SUM, 1.0f, NULL, &l) == CLLM_EINVAL);
        CHECK(cllm_consistency_loss(s, t, 0, y, y, 1, CLLM_REDUCE_SUM, 1.0f, NULL, &l, NULL) == CLLM_EINVAL);
        /* each bound of the checks (loss.h: eps in [0, 1), targets in [0, V), sizes, SUM or MEAN) */
        int32_t neg[1] = { -1 };
        CHECK(cllm_ce_loss(s, V, neg, 1, 0.0, CLLM_REDUCE_SUM, 1.0f, NULL, &l) == CLLM_EINVAL);
        CHECK(cllm_ce_loss(s, V, tgt, 1, -0.1, CLLM_REDUCE_SUM, 1.0f, NULL, &l) == CLLM_EINVAL);
        CHECK(cllm_ce_loss(s, V, tgt, -1, 0.0, CLLM_REDUCE_SUM, 1.0f, NULL, &l) == CLLM_EINVAL);
        CHECK(cllm_ce_loss(s, 0, tgt, 0, 0.0, CLLM_REDUCE_SUM, 1.0f, NULL, &l) == CLLM_EINVAL);
        CHECK(cllm_ce_loss(s, V, tgt, 1, 0.0, 2, 1.0f, NULL, &l) == CLLM_EINVAL);
        CHECK(cllm_ce_loss(s, V, tgt, 1, 0.0, -1, 1.0f, NULL, &l) == CLLM_EINVAL);
        CHECK(cllm_consistency_loss(s, t, V, y, y, -1, CLLM_REDUCE_SUM, 1.0f, NULL, &l, NULL) == CLLM_EINVAL);
        CHECK(cllm_consistency_loss(s, t, V, y, ystar, 1, 2, 1.0f, NULL, &l, NULL) == CLLM_EINVAL);
        CHECK(l == 0);
    }
    TEST_OK("bad_args");
    TEST_END();
}
