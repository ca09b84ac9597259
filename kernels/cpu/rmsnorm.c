/* rmsnorm.c: RMSNorm as HF LlamaRMSNorm computes it in fp32:
 * y = x * rsqrt(mean(x^2) + eps), then y * weight (no "+1" on the weight).
 * The sum of squares is accumulated in double so the result does not depend
 * on the summation order (torch reduces pairwise; either is within 1e-7). */
#include <math.h>

#include "kernels.h"

/* out (T, C); rstd (T) or NULL; inp (T, C); weight (C) */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                     int T, int C, float eps) {
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * C;
        float *y = out + (size_t)t * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float var = (float)(ss / C);
        float r = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < C; i++) y[i] = (x[i] * r) * weight[i];
        if (rstd) rstd[t] = r;
    }
}

/* dinp (T, C) +=; dweight (C) += or NULL; dout (T, C); inp (T, C); weight (C);
 * rstd (T) from the forward. The row's dot product is summed in double. */
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                      const float *weight, const float *rstd, int T, int C) {
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * C;
        const float *dy = dout + (size_t)t * C;
        float *dx = dinp + (size_t)t * C;
        float r = rstd[t];
        double dot = 0.0;
        for (int i = 0; i < C; i++) dot += (double)dy[i] * weight[i] * x[i];
        float c = (float)(dot * r * r / C);
        for (int i = 0; i < C; i++) {
            dx[i] += r * (dy[i] * weight[i] - x[i] * c);
            if (dweight) dweight[i] += dy[i] * (x[i] * r);
        }
    }
}
