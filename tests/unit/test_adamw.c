/* test_adamw.c: AdamW equals torch.optim.AdamW (tests/golden/adamw_golden.py)
 * after one and several steps, with and without weight decay; the warm-up +
 * cosine schedule equals torch LambdaLR with HF's lambda; gradient clipping
 * matches clip_grad_norm_. */
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
    TEST_END();
}
