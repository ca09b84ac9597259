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
 * dq) or per (key row, kv head) (dk/dv), rows on grid x (no 65,535 limit);
 * the warps take keys (or query rows) in turn, the 32 lanes of a warp split the head's dims (lane l holds dims
 * l, l + 32, ...; DPL = dims per lane, a template parameter, HS <= 32*DPL),
 * so a dot product is one warp_sum. The forward keeps an online softmax per
 * warp (running max, sum, weighted v) and merges the warps through shared
 * memory. The dq kernel makes two passes over the keys (D first, then dq:
 * exact, where the usual D = do . out would read the bf16 output); it also
 * writes D for the dk/dv kernel. Shared memory: at most 2 ATT_WARPS HS
 * floats (8 KiB at HS 256), static.
 * Forks (train_kernels.h): a fork's row sees its prefix's keys first, then
 * its own (key_row); a key row in the prefix of a fork also collects the
 * fork's query rows in the dk/dv kernel, after its own sequence's.
 * This is kernel1 (variant 1, and variant 0 for head sizes the tensor-core
 * kernels do not take); kernel2 below does the same sums with a thread per
 * key (variant 2, where its shared memory fits). On an H200 at SmolLM2's
 * shapes (16 x 320 rows) kernel1's training step took 97 ms and kernel2's
 * 164 ms (test_cuda_train --bench, docs/CUDA-TRAINING.md).
 * Cost of both: every (row, head) re-reads its keys (L2-resident for T ~
 * 300), so this is O(T^2 HS) reads per sequence and head, on CUDA cores.
 * The default for head sizes 16, 32, 64 and 128 is attention_flash.cu: the
 * same sums tiled (flash-attention 2) on the tensor cores; these two remain
 * the reference the test compares it with and the fallback for other head
 * sizes. */
#include "train_kernels.h"

namespace cllm_train {

enum { ATT_WARPS = 4, ATT_MAX_HS = 256 };


/* out (R, QD) bf16; lse (R, NH); qkv (R, QKV) bf16; row0 (B + 1).
 * grid (B*T, NH) */
template <int DPL>
__global__ void attention_forward_kernel1(floatX *out, float *lse, const floatX *qkv,
                                          const int *row0, const seq_fork *fork, int T, int NH, int NKV,
                                          int HS) {
    __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][32 * DPL];
    int h = blockIdx.y, b, t, n;
    size_t base;
    if (!packed_row(row0, blockIdx.x, T, &b, &t, &n, &base)) return;
    size_t r = base + t;
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, g = h / (NH / NKV);
    floatX *o = out + r * QD + (size_t)h * HS;
    const floatX *qr = qkv + r * QKV + (size_t)h * HS;
    const floatX *kb = qkv + base * QKV + QD + (size_t)g * HS, *pkb;   /* own key j at + j*QKV */
    int np = fork_prefix(fork, row0, b, qkv, QKV, QD + (size_t)g * HS, &pkb);
    float q[DPL], acc[DPL];
#pragma unroll
    for (int k = 0; k < DPL; k++) {
        int d = lane + 32 * k;
        q[k] = d < HS ? __bfloat162float(qr[d]) : 0.0f;
        acc[k] = 0.0f;
    }
    float scale = 1.0f / sqrtf((float)HS);
    float m = -INFINITY, l = 0.0f;
    for (int j = w; j <= np + t; j += ATT_WARPS) {
        const floatX *kj = key_row(pkb, kb, np, j, QKV), *vj = kj + KD;
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
    if (threadIdx.x == 0) lse[r * NH + h] = M + logf(L);
}

/* dq part of dqkv (R, QKV) fp32 =; Dsum (R, NH) =; dout (R, QD) bf16;
 * qkv (R, QKV) bf16; lse (R, NH). grid (B*T, NH) */
template <int DPL>
__global__ void attention_backward_dq_kernel1(float *dqkv, float *Dsum, const floatX *dout,
                                              const floatX *qkv, const float *lse, const int *row0,
                                              const seq_fork *fork, int T, int NH, int NKV, int HS) {
    __shared__ float s_red[ATT_WARPS];
    __shared__ float s_acc[ATT_WARPS][32 * DPL];
    int h = blockIdx.y, b, t, n;
    size_t base;
    if (!packed_row(row0, blockIdx.x, T, &b, &t, &n, &base)) return;
    size_t r = base + t;
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, g = h / (NH / NKV);
    float *dq = dqkv + r * QKV + (size_t)h * HS;
    const floatX *qr = qkv + r * QKV + (size_t)h * HS;
    const floatX *dor = dout + r * QD + (size_t)h * HS;
    const floatX *kb = qkv + base * QKV + QD + (size_t)g * HS, *pkb;
    int np = fork_prefix(fork, row0, b, qkv, QKV, QD + (size_t)g * HS, &pkb);
    float q[DPL], dov[DPL], acc[DPL];
#pragma unroll
    for (int k = 0; k < DPL; k++) {
        int d = lane + 32 * k;
        q[k] = d < HS ? __bfloat162float(qr[d]) : 0.0f;
        dov[k] = d < HS ? __bfloat162float(dor[d]) : 0.0f;
        acc[k] = 0.0f;
    }
    float scale = 1.0f / sqrtf((float)HS), L = lse[r * NH + h];
    /* pass 1: D = sum_j p_j dp_j */
    float Dw = 0.0f;
    for (int j = w; j <= np + t; j += ATT_WARPS) {
        const floatX *kj = key_row(pkb, kb, np, j, QKV), *vj = kj + KD;
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
    for (int j = w; j <= np + t; j += ATT_WARPS) {
        const floatX *kj = key_row(pkb, kb, np, j, QKV), *vj = kj + KD;
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
    if (threadIdx.x == 0) Dsum[r * NH + h] = D;
}

/* dk, dv parts of dqkv (R, QKV) fp32 =; dout (R, QD) bf16; qkv (R, QKV) bf16;
 * lse, Dsum (R, NH). grid (B*T, NKV): block (b*T + j, g) owns key row j of
 * sequence b, kv head g: its query rows are b's rows j .. n-1 and, when j
 * is in the prefix of b's fork, every row of the fork (items after b's). */
template <int DPL>
__global__ void attention_backward_dkv_kernel1(float *dqkv, const float *Dsum, const floatX *dout,
                                               const floatX *qkv, const float *lse, const int *row0,
                                               const seq_fork *fork, int T, int NH, int NKV, int HS) {
    __shared__ float s_dk[ATT_WARPS][32 * DPL], s_dv[ATT_WARPS][32 * DPL];
    int g = blockIdx.y, b, j, n;
    size_t base;
    if (!packed_row(row0, blockIdx.x, T, &b, &j, &n, &base)) return;
    size_t r = base + j;
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, group = NH / NKV;
    float *dk = dqkv + r * QKV + QD + (size_t)g * HS, *dv = dk + KD;
    const floatX *kj = qkv + r * QKV + QD + (size_t)g * HS, *vj = kj + KD;
    float kk[DPL], vv[DPL], adk[DPL], adv[DPL];
#pragma unroll
    for (int k = 0; k < DPL; k++) {
        int d = lane + 32 * k;
        kk[k] = d < HS ? __bfloat162float(kj[d]) : 0.0f;
        vv[k] = d < HS ? __bfloat162float(vj[d]) : 0.0f;
        adk[k] = adv[k] = 0.0f;
    }
    float scale = 1.0f / sqrtf((float)HS);
    int own = (n - j) * group, items = own, child = fork ? fork[b].child : -1;
    size_t cbase = 0;
    if (child >= 0 && j < fork[child].pre) {
        cbase = (size_t)row0[child];
        items += (row0[child + 1] - row0[child]) * group;
    }
    for (int it = w; it < items; it += ATT_WARPS) {
        size_t rt = it < own ? base + j + it / group : cbase + (it - own) / group;
        int h = g * group + it % group;
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

/* ---- kernel2: a thread per key (or per query row of a key) -------------------
 * The same arithmetic as kernel1 with the work turned around: one block of
 * ATT_THREADS threads per (row, head) (or (key row, kv head)); each thread
 * computes whole dot products for its keys (bf16x2 loads of the key row,
 * the query row in shared memory), so a dot product costs no shuffles; the
 * scores (or p, ds) wait in shared memory (one or two floats per key); the
 * weighted sums over keys are split as (dim pairs) x (key slices) and the
 * slices reduced through shared memory, as the inference kernel does.
 * Dynamic shared memory (floats), with S = slices * HS <= 256: forward
 * HS + 32 + S + T, dq 2 HS + 32 + S + 2 T, dk/dv 2 HS + 2 S + 2 T NH/NKV
 * (p and ds per item); the launcher falls back to
 * kernel1 for a call with forks, and when that exceeds 48 KiB (T beyond ~5,000 for SmolLM2). Needs HS
 * even (bf16x2 loads; cllm_model_alloc's check). */
enum { ATT_THREADS = 128 };

__device__ __forceinline__ float dot_bf16_row(const float *xs, const floatX *row, int HS) {
    const __nv_bfloat162 *r2 = reinterpret_cast<const __nv_bfloat162 *>(row);
    float a = 0.0f;
    for (int i = 0; i < HS / 2; i++) {
        float2 f = __bfloat1622float2(r2[i]);
        a += xs[2 * i] * f.x + xs[2 * i + 1] * f.y;
    }
    return a;
}

/* out (R, QD) bf16; lse (R, NH); qkv (R, QKV) bf16; row0 (B + 1).
 * grid (B*T, NH) */
__global__ void attention_forward_kernel2(floatX *out, float *lse, const floatX *qkv,
                                          const int *row0, int T, int NH, int NKV, int HS) {
    extern __shared__ float smem[];
    int h = blockIdx.y, b, t, n;
    size_t base;
    if (!packed_row(row0, blockIdx.x, T, &b, &t, &n, &base)) return;
    size_t r = base + t;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, g = h / (NH / NKV);
    int pairs = HS / 2, slices = blockDim.x / pairs;
    float *qs = smem, *red = qs + HS, *part = red + 32, *att = part + slices * HS;
    floatX *o = out + r * QD + (size_t)h * HS;
    const floatX *qr = qkv + r * QKV + (size_t)h * HS;
    const floatX *kb = qkv + base * QKV + QD + (size_t)g * HS;   /* key j at + j*QKV */
    const floatX *vb = kb + KD;
    for (int i = threadIdx.x; i < HS; i += blockDim.x) qs[i] = __bfloat162float(qr[i]);
    __syncthreads();
    float scale = 1.0f / sqrtf((float)HS), mx = -INFINITY;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        float s = dot_bf16_row(qs, kb + (size_t)j * QKV, HS) * scale;
        att[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        float e = expf(att[j] - mx);
        att[j] = e;
        sum += e;
    }
    sum = block_sum(sum, red);            /* its barriers also publish att[] */
    int dp = threadIdx.x % pairs, sl = threadIdx.x / pairs;
    if (sl < slices) {
        float2 acc = make_float2(0.0f, 0.0f);
        for (int j = sl; j <= t; j += slices) {
            float2 v = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162 *>(vb + (size_t)j * QKV)[dp]);
            acc.x += att[j] * v.x;
            acc.y += att[j] * v.y;
        }
        part[sl * HS + 2 * dp] = acc.x;
        part[sl * HS + 2 * dp + 1] = acc.y;
    }
    __syncthreads();
    float inv = 1.0f / sum;
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        float a = 0.0f;
        for (int k = 0; k < slices; k++) a += part[k * HS + i];
        o[i] = __float2bfloat16(a * inv);
    }
    if (threadIdx.x == 0) lse[r * NH + h] = mx + logf(sum);
}

/* dq part of dqkv (R, QKV) fp32 =; Dsum (R, NH) =; dout (R, QD) bf16;
 * qkv (R, QKV) bf16; lse (R, NH). grid (B*T, NH) */
__global__ void attention_backward_dq_kernel2(float *dqkv, float *Dsum, const floatX *dout,
                                              const floatX *qkv, const float *lse,
                                              const int *row0, int T, int NH, int NKV, int HS) {
    extern __shared__ float smem[];
    int h = blockIdx.y, b, t, n;
    size_t base;
    if (!packed_row(row0, blockIdx.x, T, &b, &t, &n, &base)) return;
    size_t r = base + t;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, g = h / (NH / NKV);
    int pairs = HS / 2, slices = blockDim.x / pairs;
    float *qs = smem, *dos = qs + HS, *red = dos + HS, *part = red + 32;
    float *pj = part + slices * HS, *dpj = pj + T;
    float *dq = dqkv + r * QKV + (size_t)h * HS;
    const floatX *qr = qkv + r * QKV + (size_t)h * HS;
    const floatX *dor = dout + r * QD + (size_t)h * HS;
    const floatX *kb = qkv + base * QKV + QD + (size_t)g * HS;
    const floatX *vb = kb + KD;
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        qs[i] = __bfloat162float(qr[i]);
        dos[i] = __bfloat162float(dor[i]);
    }
    __syncthreads();
    float scale = 1.0f / sqrtf((float)HS), L = lse[r * NH + h], Dl = 0.0f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) {
        float p = expf(dot_bf16_row(qs, kb + (size_t)j * QKV, HS) * scale - L);
        float d = dot_bf16_row(dos, vb + (size_t)j * QKV, HS);
        pj[j] = p;
        dpj[j] = d;
        Dl += p * d;
    }
    float D = block_sum(Dl, red);
    for (int j = threadIdx.x; j <= t; j += blockDim.x) pj[j] = pj[j] * (dpj[j] - D) * scale;   /* ds */
    __syncthreads();
    int dp = threadIdx.x % pairs, sl = threadIdx.x / pairs;
    if (sl < slices) {
        float2 acc = make_float2(0.0f, 0.0f);
        for (int j = sl; j <= t; j += slices) {
            float2 k = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162 *>(kb + (size_t)j * QKV)[dp]);
            acc.x += pj[j] * k.x;
            acc.y += pj[j] * k.y;
        }
        part[sl * HS + 2 * dp] = acc.x;
        part[sl * HS + 2 * dp + 1] = acc.y;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        float a = 0.0f;
        for (int k = 0; k < slices; k++) a += part[k * HS + i];
        dq[i] = a;
    }
    if (threadIdx.x == 0) Dsum[r * NH + h] = D;
}

/* dk, dv parts of dqkv (R, QKV) fp32 =; dout (R, QD) bf16; qkv (R, QKV) bf16;
 * lse, Dsum (R, NH). grid (B*T, NKV): block (b*T + j, g) owns key row j of
 * sequence b, kv head g; items it = (t - j) * group + (h - g*group) for
 * query rows t = j .. n-1. */
__global__ void attention_backward_dkv_kernel2(float *dqkv, const float *Dsum, const floatX *dout,
                                               const floatX *qkv, const float *lse,
                                               const int *row0, int T, int NH, int NKV, int HS) {
    extern __shared__ float smem[];
    int g = blockIdx.y, b, j, n;
    size_t base;
    if (!packed_row(row0, blockIdx.x, T, &b, &j, &n, &base)) return;
    size_t r = base + j;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, group = NH / NKV;
    int pairs = HS / 2, slices = blockDim.x / pairs;
    float *ks = smem, *vs = ks + HS, *partk = vs + HS, *partv = partk + slices * HS;
    float *ps = partv + slices * HS, *dss = ps + (size_t)T * group;
    float *dk = dqkv + r * QKV + QD + (size_t)g * HS, *dv = dk + KD;
    const floatX *kj = qkv + r * QKV + QD + (size_t)g * HS, *vj = kj + KD;
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        ks[i] = __bfloat162float(kj[i]);
        vs[i] = __bfloat162float(vj[i]);
    }
    __syncthreads();
    float scale = 1.0f / sqrtf((float)HS);
    int items = (n - j) * group;
    for (int it = threadIdx.x; it < items; it += blockDim.x) {
        size_t rt = base + j + it / group;
        int h = g * group + it % group;
        float p = expf(dot_bf16_row(ks, qkv + rt * QKV + (size_t)h * HS, HS) * scale - lse[rt * NH + h]);
        float d = dot_bf16_row(vs, dout + rt * QD + (size_t)h * HS, HS);
        ps[it] = p;
        dss[it] = p * (d - Dsum[rt * NH + h]) * scale;
    }
    __syncthreads();
    int dp = threadIdx.x % pairs, sl = threadIdx.x / pairs;
    if (sl < slices) {
        float2 ak = make_float2(0.0f, 0.0f), av = make_float2(0.0f, 0.0f);
        for (int it = sl; it < items; it += slices) {
            size_t rt = base + j + it / group;
            int h = g * group + it % group;
            float2 q = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162 *>(qkv + rt * QKV + (size_t)h * HS)[dp]);
            float2 d = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162 *>(dout + rt * QD + (size_t)h * HS)[dp]);
            ak.x += dss[it] * q.x;
            ak.y += dss[it] * q.y;
            av.x += ps[it] * d.x;
            av.y += ps[it] * d.y;
        }
        partk[sl * HS + 2 * dp] = ak.x;
        partk[sl * HS + 2 * dp + 1] = ak.y;
        partv[sl * HS + 2 * dp] = av.x;
        partv[sl * HS + 2 * dp + 1] = av.y;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        float a = 0.0f, c = 0.0f;
        for (int k = 0; k < slices; k++) {
            a += partk[k * HS + i];
            c += partv[k * HS + i];
        }
        dk[i] = a;
        dv[i] = c;
    }
}

/* dynamic shared memory of the kernel2s, bytes */
static size_t smem_fwd2(int HS, int T) {
    return (size_t)(HS + 32 + (ATT_THREADS / (HS / 2)) * HS + T) * sizeof(float);
}
static size_t smem_dq2(int HS, int T) {
    return (size_t)(2 * HS + 32 + (ATT_THREADS / (HS / 2)) * HS + 2 * T) * sizeof(float);
}
static size_t smem_dkv2(int HS, int T, int group) {
    return (size_t)(2 * HS + 2 * (ATT_THREADS / (HS / 2)) * HS + 2 * (size_t)T * group) * sizeof(float);
}
enum { SMEM_DEFAULT = 48 * 1024 };

static int dims_per_lane(int HS, int NH, int NKV, int *dpl) {
    if (HS < 2 || HS % 2 || HS > ATT_MAX_HS || NKV < 1 || NH % NKV)
        return cllm_error(CLLM_EUNSUP, "training attention: head size %d / heads %d:%d not supported "
                          "on CUDA (even head size <= %d)", HS, NH, NKV, ATT_MAX_HS);
    *dpl = HS <= 32 ? 1 : HS <= 64 ? 2 : HS <= 128 ? 4 : 8;
    return 0;
}

int attention_forward(floatX *out, float *lse, const floatX *qkv, const int *row0, const seq_fork *fork,
                      int B, int T, int NH, int NKV, int HS, int variant, cudaStream_t stream) {
    int dpl, rc = dims_per_lane(HS, NH, NKV, &dpl);
    if (rc) return rc;
    if (variant == 0 && attention_flash_supported(HS))
        return attention_forward_flash_launch(out, lse, qkv, row0, fork, B, T, NH, NKV, HS, stream);
    dim3 grid(B * T, NH);
    size_t sm = smem_fwd2(HS, T);
    if (variant == 2 && sm <= SMEM_DEFAULT && !fork) {
        attention_forward_kernel2<<<grid, ATT_THREADS, sm, stream>>>(out, lse, qkv, row0, T, NH, NKV, HS);
        return CUDA_CHECK_LAUNCH();
    }
    dim3 block(32 * ATT_WARPS);
    switch (dpl) {
    case 1: attention_forward_kernel1<1><<<grid, block, 0, stream>>>(out, lse, qkv, row0, fork, T, NH, NKV, HS); break;
    case 2: attention_forward_kernel1<2><<<grid, block, 0, stream>>>(out, lse, qkv, row0, fork, T, NH, NKV, HS); break;
    case 4: attention_forward_kernel1<4><<<grid, block, 0, stream>>>(out, lse, qkv, row0, fork, T, NH, NKV, HS); break;
    default: attention_forward_kernel1<8><<<grid, block, 0, stream>>>(out, lse, qkv, row0, fork, T, NH, NKV, HS); break;
    }
    return CUDA_CHECK_LAUNCH();
}

int attention_backward(float *dqkv, float *Dsum, const floatX *dout, const floatX *out,
                       const floatX *qkv, const float *lse, const int *row0, const seq_fork *fork, int B,
                       int T, int NH, int NKV, int HS, int variant, cudaStream_t stream) {
    int dpl, rc = dims_per_lane(HS, NH, NKV, &dpl);
    if (rc) return rc;
    if (variant == 0 && attention_flash_supported(HS))
        return attention_backward_flash_launch(dqkv, Dsum, dout, out, qkv, lse, row0, fork, B, T, NH, NKV,
                                               HS, stream);
    dim3 gq(B * T, NH), gkv(B * T, NKV);
    size_t sq = smem_dq2(HS, T), skv = smem_dkv2(HS, T, NH / NKV);
    if (variant == 2 && sq <= SMEM_DEFAULT && skv <= SMEM_DEFAULT && !fork) {
        attention_backward_dq_kernel2<<<gq, ATT_THREADS, sq, stream>>>(dqkv, Dsum, dout, qkv, lse,
                                                                       row0, T, NH, NKV, HS);
        if ((rc = CUDA_CHECK_LAUNCH())) return rc;
        attention_backward_dkv_kernel2<<<gkv, ATT_THREADS, skv, stream>>>(dqkv, Dsum, dout, qkv, lse,
                                                                          row0, T, NH, NKV, HS);
        return CUDA_CHECK_LAUNCH();
    }
    dim3 block(32 * ATT_WARPS);
#define ATT_BWD(D)                                                                                \
    attention_backward_dq_kernel1<D><<<gq, block, 0, stream>>>(dqkv, Dsum, dout, qkv, lse, row0, \
                                                               fork, T, NH, NKV, HS);            \
    if ((rc = CUDA_CHECK_LAUNCH())) return rc;                                                    \
    attention_backward_dkv_kernel1<D><<<gkv, block, 0, stream>>>(dqkv, Dsum, dout, qkv, lse,     \
                                                                 row0, fork, T, NH, NKV, HS);    \
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
