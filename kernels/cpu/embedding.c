/* embedding.c: token embedding lookup (no scaling, as LLaMA does). */
#include <string.h>

#include "kernels.h"

/* out (T, C); tokens (T); wte (V, C) */
void embedding_forward(float *out, const int *tokens, const float *wte, int T, int C) {
    for (int t = 0; t < T; t++)
        memcpy(out + (size_t)t * C, wte + (size_t)tokens[t] * C, (size_t)C * sizeof(float));
}

/* dwte (V, C) +=; dout (T, C); tokens (T). Rows in token order, one thread:
 * repeated tokens accumulate in a fixed order. */
void embedding_backward(float *dwte, const float *dout, const int *tokens, int T, int C) {
    for (int t = 0; t < T; t++) {
        float *d = dwte + (size_t)tokens[t] * C;
        const float *g = dout + (size_t)t * C;
        for (int i = 0; i < C; i++) d[i] += g[i];
    }
}
