/* attention.cu: causal grouped-query self-attention for training (no KV
 * cache: row t of a sequence attends to its rows 0..t), forward and backward,
 * flash style: nothing (T, T) is stored; the forward saves each (row, head)'s
 * log-sum-exp and the backward recomputes the probabilities from it.
 *
 * For row r = (b, t), head h, kv head g = h / (NH/NKV), keys j = 0..t:
 *   s_j = q . k_j / sqrt(HS),  lse = log sum_j exp(s_j),  p_j = exp(s_j - lse)
 *   out = sum_j p_j v_j
 * Backward with do = dout[r, h], dp_j = do . v_j, D = sum_j p_j dp_j:
 *   ds_j = p_j (dp_j - D)
 *   dq   = sum_j ds_j k_j / sqrt(HS)
 *   dk_j += ds_j q / sqrt(HS),  dv_j += p_j do   (summed over the rows t >= j
 *                                                 and the group's NH/NKV heads)
 * q, k, v and do are bf16, every dot product, exponential and sum is fp32.
 *
 * Work decomposition: a block of ATT_WARPS warps per (row, head) (forward,
 * dq) or per (key row, kv head) (dk/dv), rows on grid x (no 65,535 limit); the warps take keys (or query rows)
 * in turn, the 32 lanes of a warp split the head's dims (lane l holds dims
 * l, l + 32, ...; DPL = dims per lane, a template parameter, HS <= 32*DPL),
 * so a dot product is one warp_sum. The forward keeps an online softmax per
 * warp (running max, sum, weighted v) and merges the warps through shared
 * memory. The dq kernel makes two passes over the keys (D first, then dq:
 * exact, where the usual D = do . out would read the bf16 output); it also
 * writes D for the dk/dv kernel. Shared memory: at most 2 ATT_WARPS HS
 * floats (8 KiB at HS 256), static.
 * Cost: every (row, head) re-reads its keys (L2-resident for T ~ 300), so
 * this is O(T^2 HS) reads per sequence and head; a tiled (flash-attention 2)
 * kernel with k/v tiles in shared memory is the next step for long T. */
#include "train_kernels.h"

namespace cllm_train {

enum { ATT_WARPS = 4, ATT_MAX_HS = 256 };

/* out (R, QD) bf16; lse (R, NH); qkv (R, QKV) bf16; lens (B). grid (R, NH) */
template <int DPL>
__global__ void attention_forward_kernel1(floatX *out, float *lse, const floatX *qkv,
                                          const int *lens, int T, int NH, int NKV, int HS) {
    __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][32 * DPL];
    int r = blockIdx.x, h = blockIdx.y, b = r / T, t = r % T;
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, g = h / (NH / NKV);
    floatX *o = out + (size_t)r * QD + (size_t)h * HS;
    if (t >= lens[b]) {
        for (int i = threadIdx.x; i < HS; i += blockDim.x) o[i] = __float2bfloat16(0.0f);
        if (threadIdx.x == 0) lse[(size_t)r * NH + h] = 0.0f;
        return;
    }
    const floatX *qr = qkv + (size_t)r * QKV + (size_t)h * HS;
    const floatX *kb = qkv + (size_t)b * T * QKV + QD + (size_t)g * HS;   /* key j at + j*QKV */
    const floatX *vb = kb + KD;
    float q[DPL], acc[DPL];
#pragma unroll
    for (int k = 0; k < DPL; k++) {
        int d = lane + 32 * k;
        q[k] = d < HS ? __bfloat162float(qr[d]) : 0.0f;
        acc[k] = 0.0f;
    }
    float scale = 1.0f / sqrtf((float)HS);
    float m = -INFINITY, l = 0.0f;
    for (int j = w; j <= t; j += ATT_WARPS) {
        const floatX *kj = kb + (size_t)j * QKV, *vj = vb + (size_t)j * QKV;
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) {
            int d = lane + 32 * k;
            if (d < HS) dot += q[k] * __bfloat162float(kj[d]);
        }
        float s = warp_sum(dot) * scale;
        float mn = fmaxf(m, s);
        float corr = expf(m - mn);          /* 0 on the first key (m = -inf) */
        float p = expf(s - mn);
        l = l * corr + p;
#pragma unroll
        for (int k = 0; k < DPL; k++) {
            int d = lane + 32 * k;
            float vv = d < HS ? __bfloat162float(vj[d]) : 0.0f;
            acc[k] = acc[k] * corr + p * vv;
        }
        m = mn;
    }
    if (lane == 0) {
        s_m[w] = m;
        s_l[w] = l;
    }
#pragma unroll
    for (int k = 0; k < DPL; k++) s_acc[w][lane + 32 * k] = acc[k];
    __syncthreads();
    float M = -INFINITY;
    for (int i = 0; i < ATT_WARPS; i++) M = fmaxf(M, s_m[i]);   /* finite: warp 0 saw key 0 */
    float L = 0.0f, f[ATT_WARPS];
    for (int i = 0; i < ATT_WARPS; i++) {
        f[i] = expf(s_m[i] - M);   /* 0 for a warp that saw no key */
        L += s_l[i] * f[i];
    }
    float inv = 1.0f / L;
    for (int d = threadIdx.x; d < HS; d += blockDim.x) {
        float a = 0.0f;
        for (int i = 0; i < ATT_WARPS; i++) a += s_acc[i][d] * f[i];
        o[d] = __float2bfloat16(a * inv);
    }
    if (threadIdx.x == 0) lse[(size_t)r * NH + h] = M + logf(L);
}

/* dq part of dqkv (R, QKV) fp32 =; Dsum (R, NH) =; dout (R, QD) bf16;
 * qkv (R, QKV) bf16; lse (R, NH). grid (R, NH) */
template <int DPL>
__global__ void attention_backward_dq_kernel1(float *dqkv, float *Dsum, const floatX *dout,
                                              const floatX *qkv, const float *lse,
                                              const int *lens, int T, int NH, int NKV, int HS) {
    __shared__ float s_red[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][32 * DPL];
    int r = blockIdx.x, h = blockIdx.y, b = r / T, t = r % T;
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, g = h / (NH / NKV);
    float *dq = dqkv + (size_t)r * QKV + (size_t)h * HS;
    if (t >= lens[b]) {
        for (int i = threadIdx.x; i < HS; i += blockDim.x) dq[i] = 0.0f;
        if (threadIdx.x == 0) Dsum[(size_t)r * NH + h] = 0.0f;
        return;
    }
    const floatX *qr = qkv + (size_t)r * QKV + (size_t)h * HS;
    const floatX *dor = dout + (size_t)r * QD + (size_t)h * HS;
    const floatX *kb = qkv + (size_t)b * T * QKV + QD + (size_t)g * HS;
    const floatX *vb = kb + KD;
    float q[DPL], dov[DPL], acc[DPL];
#pragma unroll
    for (int k = 0; k < DPL; k++) {
        int d = lane + 32 * k;
        q[k] = d < HS ? __bfloat162float(qr[d]) : 0.0f;
        dov[k] = d < HS ? __bfloat162float(dor[d]) : 0.0f;
        acc[k] = 0.0f;
    }
    float scale = 1.0f / sqrtf((float)HS), L = lse[(size_t)r * NH + h];
    /* pass 1: D = sum_j p_j dp_j */
    float Dw = 0.0f;
    for (int j = w; j <= t; j += ATT_WARPS) {
        const floatX *kj = kb + (size_t)j * QKV, *vj = vb + (size_t)j * QKV;
        float s = 0.0f, dp = 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) {
            int d = lane + 32 * k;
            if (d < HS) {
                s += q[k] * __bfloat162float(kj[d]);
                dp += dov[k] * __bfloat162float(vj[d]);
            }
        }
        s = warp_sum(s) * scale;
        dp = warp_sum(dp);
        Dw += expf(s - L) * dp;
    }
    if (lane == 0) s_red[w] = Dw;
    __syncthreads();
    float D = 0.0f;
    for (int i = 0; i < ATT_WARPS; i++) D += s_red[i];
    /* pass 2: dq = scale sum_j p_j (dp_j - D) k_j */
    for (int j = w; j <= t; j += ATT_WARPS) {
        const floatX *kj = kb + (size_t)j * QKV, *vj = vb + (size_t)j * QKV;
        float s = 0.0f, dp = 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) {
            int d = lane + 32 * k;
            if (d < HS) {
                s += q[k] * __bfloat162float(kj[d]);
                dp += dov[k] * __bfloat162float(vj[d]);
            }
        }
        s = warp_sum(s) * scale;
        dp = warp_sum(dp);
        float ds = expf(s - L) * (dp - D) * scale;
#pragma unroll
        for (int k = 0; k < DPL; k++) {
            int d = lane + 32 * k;
            if (d < HS) acc[k] += ds * __bfloat162float(kj[d]);
        }
    }
#pragma unroll
    for (int k = 0; k < DPL; k++) s_acc[w][lane + 32 * k] = acc[k];
    __syncthreads();
    for (int d = threadIdx.x; d < HS; d += blockDim.x) {
        float a = 0.0f;
        for (int i = 0; i < ATT_WARPS; i++) a += s_acc[i][d];
        dq[d] = a;
    }
    if (threadIdx.x == 0) Dsum[(size_t)r * NH + h] = D;
}

/* dk, dv parts of dqkv (R, QKV) fp32 =; dout (R, QD) bf16; qkv (R, QKV) bf16;
 * lse, Dsum (R, NH). grid (R, NKV): block (r, g) owns key row r, kv head g. */
template <int DPL>
__global__ void attention_backward_dkv_kernel1(float *dqkv, const float *Dsum, const floatX *dout,
                                               const floatX *qkv, const float *lse,
                                               const int *lens, int T, int NH, int NKV, int HS) {
    __shared__ float s_dk[ATT_WARPS][32 * DPL], s_dv[ATT_WARPS][32 * DPL];
    int r = blockIdx.x, g = blockIdx.y, b = r / T, j = r % T;
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, group = NH / NKV;
    int n = lens[b];
    float *dk = dqkv + (size_t)r * QKV + QD + (size_t)g * HS, *dv = dk + KD;
    if (j >= n) {
        for (int i = threadIdx.x; i < HS; i += blockDim.x) dk[i] = dv[i] = 0.0f;
        return;
    }
    const floatX *kj = qkv + (size_t)r * QKV + QD + (size_t)g * HS, *vj = kj + KD;
    float kk[DPL], vv[DPL], adk[DPL], adv[DPL];
#pragma unroll
    for (int k = 0; k < DPL; k++) {
        int d = lane + 32 * k;
        kk[k] = d < HS ? __bfloat162float(kj[d]) : 0.0f;
        vv[k] = d < HS ? __bfloat162float(vj[d]) : 0.0f;
        adk[k] = adv[k] = 0.0f;
    }
    float scale = 1.0f / sqrtf((float)HS);
    int items = (n - j) * group;
    for (int it = w; it < items; it += ATT_WARPS) {
        int t = j + it / group, h = g * group + it % group;
        size_t rt = (size_t)b * T + t;
        const floatX *qt = qkv + rt * QKV + (size_t)h * HS;
        const floatX *dot_ = dout + rt * QD + (size_t)h * HS;
        float qv[DPL], dov[DPL], s = 0.0f, dp = 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) {
            int d = lane + 32 * k;
            qv[k] = d < HS ? __bfloat162float(qt[d]) : 0.0f;
            dov[k] = d < HS ? __bfloat162float(dot_[d]) : 0.0f;
            s += qv[k] * kk[k];
            dp += dov[k] * vv[k];
        }
        s = warp_sum(s) * scale;
        dp = warp_sum(dp);
        float p = expf(s - lse[rt * NH + h]);
        float ds = p * (dp - Dsum[rt * NH + h]) * scale;
#pragma unroll
        for (int k = 0; k < DPL; k++) {
            adv[k] += p * dov[k];
            adk[k] += ds * qv[k];
        }
    }
#pragma unroll
    for (int k = 0; k < DPL; k++) {
        s_dk[w][lane + 32 * k] = adk[k];
        s_dv[w][lane + 32 * k] = adv[k];
    }
    __syncthreads();
    for (int d = threadIdx.x; d < HS; d += blockDim.x) {
        float a = 0.0f, c = 0.0f;
        for (int i = 0; i < ATT_WARPS; i++) {
            a += s_dk[i][d];
            c += s_dv[i][d];
        }
        dk[d] = a;
        dv[d] = c;
    }
}

static int dims_per_lane(int HS, int NH, int NKV, int *dpl) {
    if (HS < 1 || HS > ATT_MAX_HS || NKV < 1 || NH % NKV)
        return cllm_error(CLLM_EUNSUP, "training attention: head size %d / heads %d:%d not supported "
                          "on CUDA (head size <= %d)", HS, NH, NKV, ATT_MAX_HS);
    *dpl = HS <= 32 ? 1 : HS <= 64 ? 2 : HS <= 128 ? 4 : 8;
    return 0;
}

int attention_forward(floatX *out, float *lse, const floatX *qkv, const int *lens, int B, int T,
                      int NH, int NKV, int HS, cudaStream_t stream) {
    int dpl, rc = dims_per_lane(HS, NH, NKV, &dpl);
    if (rc) return rc;
    dim3 grid(B * T, NH), block(32 * ATT_WARPS);
    switch (dpl) {
    case 1: attention_forward_kernel1<1><<<grid, block, 0, stream>>>(out, lse, qkv, lens, T, NH, NKV, HS); break;
    case 2: attention_forward_kernel1<2><<<grid, block, 0, stream>>>(out, lse, qkv, lens, T, NH, NKV, HS); break;
    case 4: attention_forward_kernel1<4><<<grid, block, 0, stream>>>(out, lse, qkv, lens, T, NH, NKV, HS); break;
    default: attention_forward_kernel1<8><<<grid, block, 0, stream>>>(out, lse, qkv, lens, T, NH, NKV, HS); break;
    }
    return CUDA_CHECK_LAUNCH();
}

int attention_backward(float *dqkv, float *Dsum, const floatX *dout, const floatX *qkv,
                       const float *lse, const int *lens, int B, int T, int NH, int NKV, int HS,
                       cudaStream_t stream) {
    int dpl, rc = dims_per_lane(HS, NH, NKV, &dpl);
    if (rc) return rc;
    dim3 gq(B * T, NH), gkv(B * T, NKV), block(32 * ATT_WARPS);
#define ATT_BWD(D)                                                                                \
    attention_backward_dq_kernel1<D><<<gq, block, 0, stream>>>(dqkv, Dsum, dout, qkv, lse, lens, \
                                                               T, NH, NKV, HS);                  \
    if ((rc = CUDA_CHECK_LAUNCH())) return rc;                                                    \
    attention_backward_dkv_kernel1<D><<<gkv, block, 0, stream>>>(dqkv, Dsum, dout, qkv, lse,     \
                                                                 lens, T, NH, NKV, HS);          \
    break;
    switch (dpl) {
    case 1: ATT_BWD(1)
    case 2: ATT_BWD(2)
    case 4: ATT_BWD(4)
    default: ATT_BWD(8)
    }
#undef ATT_BWD
    return CUDA_CHECK_LAUNCH();
}

}  // namespace cllm_train
