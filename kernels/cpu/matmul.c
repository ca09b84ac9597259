/* matmul.c: out = inp W^T (+ bias), the Linear layer, through OpenBLAS.
 * One row (T == 1, the AR decode step) goes through sgemv, which streams W
 * once at memory bandwidth; more rows go through sgemm. */
#include <cblas.h>

#include "kernels.h"

/* out (T, OC); inp (T, C); weight (OC, C); bias (OC) or NULL */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int T, int C, int OC) {
    if (T == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, C, 1.0f, weight, C, inp, 1, 0.0f, out, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, OC, C,
                    1.0f, inp, C, weight, C, 0.0f, out, OC);
    }
    if (bias) {
        for (int t = 0; t < T; t++) {
            float *o = out + (size_t)t * OC;
            for (int j = 0; j < OC; j++) o[j] += bias[j];
        }
    }
}
