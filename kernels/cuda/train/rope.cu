/* rope.cu: bias and HF half-split RoPE after the QKV product, and the
 * backward's transposed rotation, for training (row row0[b] + t of the
 * packed rows is position t, after the prefix of a fork: seq_pos0 + t).
 *   forward:  z = y + bias;  for the q and k heads' first D = rope_dim dims,
 *             pairs (i, i + D/2) at angle a = (float)t * inv_freq[i]:
 *               out[i] = z[i] cos a - z[i+D/2] sin a,
 *               out[i+D/2] = z[i+D/2] cos a + z[i] sin a;
 *             other dims (and v) pass; out is bf16.
 *   backward: the same with sin negated (the inverse rotation), fp32 in,
 *             bf16 out (and fp32 out for the bias gradients).
 * inv_freq is the host's table, computed as kernels/cpu/rope.c computes it,
 * so angles equal the CPU's; CUDA's sincosf is within 2 ulp.
 * kernel1: one block per (sequence, position) of a (B, T) grid, those past
 * a sequence's end doing nothing, one thread per output element; a rotated
 * element reads its partner from the input, and the output is another
 * buffer, so nothing is read after being written. */
#include "train_kernels.h"

namespace cllm_train {

/* out (R, QKV); in (R, QKV); bq (QD), bk, bv (KD) or NULL; inv_freq (rope_dim/2);
 * row0 (B + 1); fork (B) or NULL. sign +1: rotation (forward), -1: its transpose (backward).
 * grid (B*T) */
template <typename TOut>
__global__ void rope_kernel1(TOut *out, float *out32, const float *in, const float *bq,
                             const float *bk, const float *bv, const float *inv_freq,
                             const int *row0, const seq_fork *fork, int T, int NH, int NKV, int HS,
                             int rope_dim, float sign) {
    int b, t, n;
    size_t r;
    if (!packed_row(row0, blockIdx.x, T, &b, &t, &n, &r)) return;
    r += t;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, half = rope_dim / 2;
    const float *z = in + (size_t)r * QKV;
    float p = (float)(seq_pos0(fork, b) + t);
    for (int j = threadIdx.x; j < QKV; j += blockDim.x) {
        float v = z[j];
        if (bq) v += j < QD ? bq[j] : j < QD + KD ? bk[j - QD] : bv[j - QD - KD];
        if (j < QD + KD) {
            int d = (j < QD ? j : j - QD) % HS;     /* dim within the head */
            if (d < rope_dim) {
                int i = d < half ? d : d - half;
                int pj = d < half ? j + half : j - half;
                float u = z[pj];
                if (bq) u += pj < QD ? bq[pj] : bk[pj - QD];
                float s, c;
                sincosf(p * inv_freq[i], &s, &c);
                s *= sign;
                v = d < half ? v * c - u * s : v * c + u * s;
            }
        }
        if constexpr (sizeof(TOut) == 2) out[(size_t)r * QKV + j] = __float2bfloat16(v);
        else out[(size_t)r * QKV + j] = v;
        if (out32) out32[(size_t)r * QKV + j] = v;
    }
}

int rope_forward(floatX *qkv, const float *y, const float *bq, const float *bk, const float *bv,
                 const float *inv_freq, const int *row0, const seq_fork *fork, int B, int T, int NH, int NKV,
                 int HS, int rope_dim, cudaStream_t stream) {
    if ((bq != NULL) != (bk != NULL) || (bq != NULL) != (bv != NULL))
        return cllm_error(CLLM_EINVAL, "rope_forward: biases must be all present or all absent");
    rope_kernel1<floatX><<<B * T, 256, 0, stream>>>(qkv, NULL, y, bq, bk, bv, inv_freq, row0, fork, T,
                                                    NH, NKV, HS, rope_dim, 1.0f);
    return CUDA_CHECK_LAUNCH();
}

int rope_backward(floatX *dzb, float *dz32, const float *d, const float *inv_freq, const int *row0,
                  const seq_fork *fork, int B, int T, int NH, int NKV, int HS, int rope_dim, cudaStream_t stream) {
    rope_kernel1<floatX><<<B * T, 256, 0, stream>>>(dzb, dz32, d, NULL, NULL, NULL, inv_freq, row0,
                                                    fork, T, NH, NKV, HS, rope_dim, -1.0f);
    return CUDA_CHECK_LAUNCH();
}

}  // namespace cllm_train
