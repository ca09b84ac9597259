/* rope.c: rotary position embedding, HF LLaMA half-split layout.
 *
 * Mirrors HF's LlamaRotaryEmbedding in fp32: inv_freq[i] = 1 / theta^(2i/D)
 * (the exponent 2i/D is an fp32 division, the power and the reciprocal are
 * fp32), angle = (float)pos * inv_freq[i] (one fp32 product), then cos/sin of
 * the fp32 angle. Rows are rotated as (x[i], x[i + D/2]) pairs.
 */
#include <math.h>

#include "kernels.h"

/* Rotate x (T, NH, HS) in place by the angles pos * inv_freq, with sin
 * multiplied by sign: +1 is the rotation, -1 its transpose (the backward). */
static void rope_rotate(float *x, const int *pos, int T, int NH, int HS, int rope_dim, float theta, float sign) {
    int half = rope_dim / 2;
    for (int t = 0; t < T; t++) {
        float p = (float)pos[t];
        for (int i = 0; i < half; i++) {
            float expo = (float)(2 * i) / (float)rope_dim;
            float inv_freq = 1.0f / powf(theta, expo);
            float ang = p * inv_freq;
            float c = cosf(ang), s = sign * sinf(ang);
            for (int h = 0; h < NH; h++) {
                float *v = x + ((size_t)t * NH + h) * HS;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

/* x (T, NH, HS) in place; pos (T) */
void rope_forward(float *x, const int *pos, int T, int NH, int HS, int rope_dim, float theta) {
    rope_rotate(x, pos, T, NH, HS, rope_dim, theta, 1.0f);
}

/* dx (T, NH, HS) in place: the transposed rotation, same angles as above */
void rope_backward(float *dx, const int *pos, int T, int NH, int HS, int rope_dim, float theta) {
    rope_rotate(dx, pos, T, NH, HS, rope_dim, theta, -1.0f);
}

/* cs (T, rope_dim): row t holds cos then sin of pos[t] * inv_freq[i], i < rope_dim/2,
 * every value as rope_rotate computes it */
void rope_table(float *cs, const int *pos, int T, int rope_dim, float theta) {
    int half = rope_dim / 2;
    for (int t = 0; t < T; t++) {
        float p = (float)pos[t];
        float *c = cs + (size_t)t * rope_dim, *s = c + half;
        for (int i = 0; i < half; i++) {
            float expo = (float)(2 * i) / (float)rope_dim;
            float inv_freq = 1.0f / powf(theta, expo);
            float ang = p * inv_freq;
            c[i] = cosf(ang);
            s[i] = sinf(ang);
        }
    }
}

/* x (T, NH, HS) in place; cs (T, rope_dim) from rope_table */
void rope_apply(float *x, const float *cs, int T, int NH, int HS, int rope_dim) {
    int half = rope_dim / 2;
    for (int t = 0; t < T; t++) {
        const float *c = cs + (size_t)t * rope_dim, *s = c + half;
        for (int h = 0; h < NH; h++) {
            float *v = x + ((size_t)t * NH + h) * HS;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}
