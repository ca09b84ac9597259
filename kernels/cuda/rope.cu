/* rope.cu: after the fused QKV product, per row r:
 *   z = qkv[r] + bias                                   (QKV) fp32
 *   q[r] = RoPE(z[0 : QD])                              -> q (R, NH, HS) fp32
 *   kc[slot[r], pos[r]] = bf16(RoPE(z[QD : QD + KD]))   -> cache (S, CAP, KD)
 *   vc[slot[r], pos[r]] = bf16(z[QD + KD : QKV])
 * RoPE is HF's half-split rotation of each head's first D = rope_dim dims,
 * pairs (x[i], x[i + D/2]) at angle (float)pos[r] * inv_freq[i], one fp32
 * product as in kernels/cpu/rope.c (inv_freq is the host's table, so it is
 * bit-identical); cosf/sinf are CUDA's (<= 2 ulp, full range reduction).
 * The rotation is epilogue.h's rope_rotate, which the products that fuse
 * this op (matmul16.cu, matmul.cu) use too: same bits either way.
 * kernel1: one block per row, one thread per output element; a rotated
 * element reads its partner from qkv, so no element is read after being
 * written (q and the cache are separate buffers). */
#include "epilogue.h"

/* q (R, NH*HS); kc, vc (S, CAP, KD); qkv (R, QKV); bias (QKV) or NULL;
 * inv_freq (rope_dim/2); pos (R); slot (R) */
__global__ void qkv_rope_forward_kernel1(float *q, floatX *kc, floatX *vc, const float *qkv,
                                         const float *bias, const float *inv_freq,
                                         const int *pos, const int *slot, int NH, int NKV,
                                         int HS, int rope_dim, int cap) {
    pdl_wait();
    pdl_launch_dependents();
    int r = blockIdx.x;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, half = rope_dim / 2;
    const float *z = qkv + (size_t)r * QKV;
    size_t crow = ((size_t)slot[r] * cap + pos[r]) * KD;
    for (int j = threadIdx.x; j < QKV; j += blockDim.x) {
        float v = z[j] + (bias ? bias[j] : 0.0f);
        if (j < QD + KD) {                       /* q or k: rotate */
            int d = (j < QD ? j : j - QD) % HS;  /* dim within the head */
            if (d < rope_dim) {
                int i = d < half ? d : d - half;
                int pj = d < half ? j + half : j - half;          /* partner element */
                float u = z[pj] + (bias ? bias[pj] : 0.0f);
                /* d < half: x[i] c - x[i+half] s;  d >= half: x[i+half] c + x[i] s */
                float sn, cs;
                rope_sincos(pos[r], inv_freq[i], &sn, &cs);
                v = rope_rotate(v, u, sn, cs, d >= half);
            }
            if (j < QD) q[(size_t)r * QD + j] = v;
            else kc[crow + (j - QD)] = __float2bfloat16(v);
        } else {
            vc[crow + (j - QD - KD)] = __float2bfloat16(v);
        }
    }
}

int qkv_rope_forward(float *q, floatX *kc, floatX *vc, const float *qkv, const float *bias,
                     const float *inv_freq, const int *pos, const int *slot, int R, int NH,
                     int NKV, int HS, int rope_dim, int cap, int pdl, cudaStream_t stream) {
    return launch_kernel("qkv_rope_forward_kernel1", qkv_rope_forward_kernel1, dim3(R), dim3(256), 0, stream, pdl,
                         q, kc, vc, qkv, bias, inv_freq, pos, slot, NH, NKV, HS, rope_dim, cap);
}

int qkv_rope_fusable(int NH, int NKV, int HS, int rope_dim) {
    return NH > 0 && NKV > 0 && rope_dim > 0 && rope_dim % 16 == 0 && rope_dim <= HS && (HS - rope_dim) % 16 == 0;
}
