/* residual.c: the residual stream update, out = a + b. */
#include "kernels.h"

/* out, a, b (N) */
void residual_forward(float *out, const float *a, const float *b, size_t N) {
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

/* da, db (N) += dout (N) */
void residual_backward(float *da, float *db, const float *dout, size_t N) {
    for (size_t i = 0; i < N; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}
