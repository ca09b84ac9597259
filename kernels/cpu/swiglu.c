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
