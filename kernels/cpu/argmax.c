/* argmax.c: greedy choice per row; the lowest id wins a tie, as torch.argmax. */
#include "kernels.h"

/* out (T); logits (T, V) */
void argmax_forward(int *out, const float *logits, int T, int V) {
    for (int t = 0; t < T; t++) {
        const float *r = logits + (size_t)t * V;
        int best = 0;
        for (int v = 1; v < V; v++)
            if (r[v] > r[best]) best = v;
        out[t] = best;
    }
}
