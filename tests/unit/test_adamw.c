/* test_adamw.c: AdamW equals torch.optim.AdamW (tests/golden/adamw_golden.py)
 * after one and several steps, with and without weight decay; the warm-up +
 * cosine schedule equals torch LambdaLR with HF's lambda; gradient clipping
 * matches clip_grad_norm_; two steps with the defaults, and with weight decay
 * and two no-decay ranges, equal their closed form; the norm is summed in
 * double. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "check.h"
#include "err.h"

#define N 64
#define NDECAY 48

static float param0(int i) { return (float)((double)((i * 37) % 101 - 50) / 50); }
static float grad(int s, int i) { return (float)((double)((i * 13 + s * 7) % 97 - 48) / 100 * pow(10.0, -(i % 4))); }

static double relerr(double a, double b) {
    double d = fabs(a - b), s = fabs(b);
    return s > 1e-30 ? d / s : d;
}

int main(void) {
    const char *path = "tests/golden/adamw_golden.txt";
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); return 1; }
    char line[8192];
    int n_adam = 0, n_sched = 0;
    double worst_p = 0, worst_mv = 0, worst_lr = 0;
    while (fgets(line, sizeof line, f)) {
        double lr, wd, frac;
        int steps, total, warm;
        if (sscanf(line, "adamw %lf %lf %d", &lr, &wd, &steps) == 3) {
            cllm_adamw o;
            CHECK_OK(cllm_adamw_init(&o, N));
            o.weight_decay = wd;
            CHECK_OK(cllm_adamw_no_decay(&o, NDECAY, N - NDECAY));
            float p[N], g[N];
            for (int i = 0; i < N; i++) p[i] = param0(i);
            for (int s = 0; s < steps; s++) {
                for (int i = 0; i < N; i++) g[i] = grad(s, i);
                cllm_adamw_step(&o, p, g, lr);
            }
            CHECK_EQ_INT(o.t, steps);
            for (int i = 0; i < N; i++) {
                double ep, em, ev;
                if (!fgets(line, sizeof line, f) || sscanf(line, "%lf %lf %lf", &ep, &em, &ev) != 3) {
                    CHECK_MSG(0, "short golden file");
                    break;
                }
                double rp = relerr(p[i], ep), rm = relerr(o.m[i], em), rv = relerr(o.v[i], ev);
                if (rp > worst_p) worst_p = rp;
                if (rm > worst_mv) worst_mv = rm;
                if (rv > worst_mv) worst_mv = rv;
                CHECK_MSG(rp <= 1e-6, "lr %g wd %g steps %d: param[%d] %.9g vs torch %.9g", lr, wd, steps, i, p[i], ep);
                CHECK_MSG(rm <= 1e-6 && rv <= 1e-6, "lr %g steps %d: m/v[%d] %.9g %.9g vs %.9g %.9g", lr, steps, i,
                          o.m[i], o.v[i], em, ev);
            }
            cllm_adamw_free(&o);
            n_adam++;
        } else if (sscanf(line, "schedule %lf %d %d", &frac, &total, &warm) == 3) {
            CHECK_EQ_INT(cllm_warmup_steps(frac, total), warm);
            for (int s = 0; s < total; s++) {
                double e;
                if (fscanf(f, "%lf", &e) != 1) { CHECK_MSG(0, "short schedule"); break; }
                double got = 2e-5 * cllm_lr_cosine(s, warm, total);
                double r = fabs(got - e) / 2e-5;
                if (r > worst_lr) worst_lr = r;
                CHECK_MSG(r <= 1e-12, "schedule %g/%d step %d: %.12g vs %.12g", frac, total, s, got, e);
            }
            n_sched++;
        }
    }
    fclose(f);
    CHECK_EQ_INT(n_adam, 4);
    CHECK_EQ_INT(n_sched, 4);
    printf("adamw vs torch: worst relative error params %.3g, moments %.3g; schedule %.3g\n", worst_p, worst_mv, worst_lr);
    TEST_OK("adamw_torch");
    TEST_OK("schedule_lambdalr");

    /* End of schedule: 0 at and past total; no warm-up starts at 1. */
    CHECK(cllm_lr_cosine(0, 0, 10) == 1.0);
    CHECK(fabs(cllm_lr_cosine(10, 1, 10)) < 1e-15);
    CHECK(cllm_lr_cosine(20, 1, 10) >= 0);

    /* clip_grad_norm_: norm 5 clipped to 1, the factor max/(norm+1e-6). */
    float g[2] = { 3.0f, 4.0f };
    double nrm = cllm_grad_norm(g, 2);
    CHECK(fabs(nrm - 5.0) < 1e-12);
    double c = cllm_grad_clip(g, 2, nrm, 1.0);
    CHECK(fabs(c - 1.0 / (5.0 + 1e-6)) < 1e-15);
    CHECK(fabs(cllm_grad_norm(g, 2) - 1.0) < 1e-6);
    CHECK(cllm_grad_clip(g, 2, 0.5, 1.0) == 1.0);
    CHECK(cllm_grad_clip(g, 2, 100, 0.0) == 1.0);
    TEST_OK("grad_clip");

    /* The defaults of adamw.h (betas 0.9 / 0.999, eps 1e-8, weight decay 0)
     * and the step's definition, in closed form (double) for two steps:
     *   m1 = (1-b1) g1, v1 = (1-b2) g1^2, p1 = p0 - lr m1/(1-b1) / (sqrt(v1/(1-b2)) + eps)
     *                                        = p0 - lr g1 / (|g1| + eps);
     *   m2 = b1 m1 + (1-b1) g2, v2 = b2 v1 + (1-b2) g2^2,
     *   p2 = p1 - lr m2/(1-b1^2) / (sqrt(v2)/sqrt(1-b2^2) + eps).
     * Gradients from 1 down to 1e-7 (eps matters at the small ones: at
     * |g| = 1e-7 it is 10 % of the denominator). With weight decay wd on a
     * second optimizer, p is first multiplied by 1 - lr wd, except on the two
     * ranges given to cllm_adamw_no_decay (two calls: both stay exempt),
     * where the result must equal the optimizer without decay bit for bit
     * (the same fp32 operations). Tolerance 1e-6 absolute on parameters in
     * [-1, 1] moving by <= 2 lr = 0.02: the fp32 steps round at ~6e-8 each. */
    {
        enum { K = 16 };
        const double lr = 0.01, wd = 0.1, b1 = 0.9, b2 = 0.999, ep = 1e-8;
        cllm_adamw o0, o1;
        CHECK_OK(cllm_adamw_init(&o0, K));
        CHECK_OK(cllm_adamw_init(&o1, K));
        o1.weight_decay = wd;
        CHECK_OK(cllm_adamw_no_decay(&o1, 0, 4));
        CHECK_OK(cllm_adamw_no_decay(&o1, 8, 4));
        float p0[K], q0[K], g1[K], g2[K];
        for (int i = 0; i < K; i++) {
            p0[i] = q0[i] = (float)((i * 7 % K) - 7.5) / 8;
            g1[i] = (float)((i % 2 ? -1 : 1) * pow(10.0, -(i % 8)));
            g2[i] = (float)(0.5 * pow(10.0, -((i + 3) % 8)));
        }
        double r[K], rd[K];
        for (int i = 0; i < K; i++) {
            double m1 = (1 - b1) * g1[i], v1 = (1 - b2) * (double)g1[i] * g1[i];
            double m2 = b1 * m1 + (1 - b1) * g2[i], v2 = b2 * v1 + (1 - b2) * (double)g2[i] * g2[i];
            int decays = !(i < 4 || (i >= 8 && i < 12));
            for (int k = 0; k < 2; k++) {
                double p = p0[i], fk = k && decays ? 1 - lr * wd : 1;
                p = p * fk - lr * g1[i] / (fabs(g1[i]) + ep);
                p = p * fk - lr * m2 / (1 - b1 * b1) / (sqrt(v2) / sqrt(1 - b2 * b2) + ep);
                if (k) rd[i] = p; else r[i] = p;
            }
        }
        cllm_adamw_step(&o0, p0, g1, lr);
        cllm_adamw_step(&o0, p0, g2, lr);
        cllm_adamw_step(&o1, q0, g1, lr);
        cllm_adamw_step(&o1, q0, g2, lr);
        for (int i = 0; i < K; i++) {
            CHECK_MSG(fabs(p0[i] - r[i]) < 1e-6, "defaults, 2 steps: p[%d] %.9g vs %.9g", i, p0[i], r[i]);
            CHECK_MSG(fabs(q0[i] - rd[i]) < 1e-6, "wd %g, 2 steps: p[%d] %.9g vs %.9g", wd, i, q0[i], rd[i]);
            if (i < 4 || (i >= 8 && i < 12)) CHECK_MSG(q0[i] == p0[i], "no-decay element %d decayed", i);
        }
        /* the range checks: [off, off + len) within [0, n) */
        CHECK_OK(cllm_adamw_no_decay(&o1, K, 0));
        CHECK_OK(cllm_adamw_no_decay(&o1, K - 3, 3));
        CHECK(cllm_adamw_no_decay(&o1, K - 3, 4) == CLLM_EINVAL);
        CHECK(cllm_adamw_no_decay(&o1, K + 1, 0) == CLLM_EINVAL);
        cllm_adamw_free(&o0);
        cllm_adamw_free(&o1);
    }
    TEST_OK("adamw_closed_form");

    /* The norm is summed in double (adamw.h): a float's square is exact in
     * double and so is the square root of 4 equal squares, so the norm of
     * {x} is |x| and of {x, -x, x, -x} is 2|x|, exactly; x = 1 + 2^-12 has a
     * square that fp32 cannot hold (26 significant bits). And 100000
     * elements against a long double sum, 1e-12 relative (double rounding
     * over 1e5 terms: < 1e5 * 2^-53 ~ 1e-11 worst case, ~1e-14 typical). */
    {
        float x = 1.0f + 0x1p-12f, g4[4] = { x, -x, x, -x };
        CHECK(cllm_grad_norm(&x, 1) == (double)x);
        CHECK(cllm_grad_norm(g4, 4) == 2.0 * x);
        enum { NN = 100000 };
        float *gl = malloc(NN * sizeof *gl);
        if (gl) {
            long double ss = 0;
            for (int i = 0; i < NN; i++) {
                gl[i] = (float)(((i * 7919) % 2001 - 1000) / 997.0);
                ss += (long double)gl[i] * gl[i];
            }
            double want = (double)sqrtl(ss), got = cllm_grad_norm(gl, NN);
            CHECK_MSG(fabs(got - want) <= 1e-12 * want, "norm of %d elements %.17g vs %.17g", NN, got, want);
            free(gl);
        }
    }
    TEST_OK("grad_norm_double");
    TEST_END();
}
