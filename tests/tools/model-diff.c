/* model-diff: compare two models of the same shape tensor by tensor.
 *
 *   model-diff [--tol R] [-q] A B
 *
 * For every tensor prints its name, the max relative error
 * max|a - b| / max|b| (the project's convention, DESIGN.md §7; 0 when both
 * are all zero), the max absolute error and the largest element-wise relative
 * error |a - b| / |b| over elements with |b| >= 1e-3 * max|b|; last a line
 * "max R". Exit 0 when every tensor's max relative error is <= R (default
 * 1e-5), 1 when one is larger or the models do not load or differ in shape,
 * 2 on a usage error. A test tool: the binaries in cmd/ are the product.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "model.h"

static int usage(void) {
    fprintf(stderr, "usage: model-diff [--tol R] [-q] A B\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *pa = NULL, *pb = NULL;
    double tol = 1e-5;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tol") && i + 1 < argc) {
            char *end;
            tol = strtod(argv[++i], &end);
            if (*end || !(tol >= 0)) return usage();
        } else if (!strcmp(argv[i], "-q")) quiet = 1;
        else if (argv[i][0] == '-' && argv[i][1]) return usage();
        else if (!pa) pa = argv[i];
        else if (!pb) pb = argv[i];
        else return usage();
    }
    if (!pa || !pb) return usage();
    cllm_model a, b;
    if (cllm_model_load(&a, pa)) { fprintf(stderr, "model-diff: %s: %s\n", pa, cllm_errmsg()); return 1; }
    if (cllm_model_load(&b, pb)) { fprintf(stderr, "model-diff: %s: %s\n", pb, cllm_errmsg()); cllm_model_free(&a); return 1; }
    int bad = 0;
    double worst = 0;
    if (a.n_tensors != b.n_tensors || a.n_params != b.n_params) {
        fprintf(stderr, "model-diff: %s and %s differ in shape (%d/%d tensors, %zu/%zu parameters)\n", pa, pb, a.n_tensors,
                b.n_tensors, a.n_params, b.n_params);
        bad = 1;
    }
    for (int t = 0; !bad && t < a.n_tensors; t++) {
        const cllm_tensor_info *ta = &a.tensors[t], *tb = &b.tensors[t];
        if (strcmp(ta->name, tb->name) || ta->numel != tb->numel) {
            fprintf(stderr, "model-diff: tensor %d: %s (%zu) vs %s (%zu)\n", t, ta->name, ta->numel, tb->name, tb->numel);
            bad = 1;
            break;
        }
        const float *x = a.params + ta->offset, *y = b.params + tb->offset;
        double maxb = 0, maxd = 0, elem = 0;
        for (size_t i = 0; i < ta->numel; i++) {
            double d = fabs((double)x[i] - y[i]);
            if (fabs(y[i]) > maxb) maxb = fabs(y[i]);
            if (d > maxd || isnan(d)) maxd = isnan(d) ? INFINITY : d;
        }
        for (size_t i = 0; i < ta->numel; i++)
            if (fabs(y[i]) >= 1e-3 * maxb && maxb > 0) {
                double r = fabs((double)x[i] - y[i]) / fabs(y[i]);
                if (r > elem) elem = r;
            }
        double rel = maxb > 0 ? maxd / maxb : (maxd > 0 ? INFINITY : 0);
        if (rel > worst) worst = rel;
        if (!quiet) printf("%-48s rel %.3e  abs %.3e  elem %.3e\n", ta->name, rel, maxd, elem);
    }
    if (!bad) {
        printf("max %.3e\n", worst);
        if (!(worst <= tol)) bad = 1;
    }
    cllm_model_free(&a);
    cllm_model_free(&b);
    return bad;
}
