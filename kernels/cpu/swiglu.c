/* swiglu.c: the SwiGLU gate of the LLaMA MLP, out = silu(gate) * up. */
#include <math.h>

#include "kernels.h"

/* out (T, F); gate (T, F); up (T, F) */
void swiglu_forward(float *out, const float *gate, const float *up, int T, int F) {
    size_t n = (size_t)T * F;
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float silu = g / (1.0f + expf(-g));
        out[i] = silu * up[i];
    }
}

/* out (T, F); gu (T, 2F): gate then up in each row */
void swiglu_forward_fused(float *out, const float *gu, int T, int F) {
    for (int t = 0; t < T; t++) {
        const float *gate = gu + (size_t)t * 2 * F, *up = gate + F;
        float *o = out + (size_t)t * F;
        for (int i = 0; i < F; i++) {
            float g = gate[i];
            float silu = g / (1.0f + expf(-g));
            o[i] = silu * up[i];
        }
    }
}

/* dgate, dup (T, F) =; dout, gate, up (T, F). dgate may equal dout. */
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, int T, int F) {
    size_t n = (size_t)T * F;
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], u = up[i], d = dout[i];
        float sg = 1.0f / (1.0f + expf(-g));
        float silu = g * sg;
        dgate[i] = d * u * (sg * (1.0f + g * (1.0f - sg)));
        dup[i] = d * silu;
    }
}
