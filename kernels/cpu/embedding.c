/* embedding.c: token embedding lookup (no scaling, as LLaMA does). */
#include <string.h>

#include "kernels.h"

/* out (T, C); tokens (T); wte (V, C) */
void embedding_forward(float *out, const int *tokens, const float *wte, int T, int C) {
    for (int t = 0; t < T; t++)
        memcpy(out + (size_t)t * C, wte + (size_t)tokens[t] * C, (size_t)C * sizeof(float));
}
