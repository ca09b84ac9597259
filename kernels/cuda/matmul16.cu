/* matmul16.cu: out = inp W^T for calls of up to 16 rows (an AR step, a
 * Jacobi window), on the tensor cores as one 16-row tile, with the ops
 * around the product fused in. At one row cuBLAS' GEMM costs ~8.5 us per
 * product on an H200 and RMSNorm, SwiGLU and the residual add ~3-5 us each
 * (per-op events, docs/CUDA.md "Where the time goes"); here a layer is four
 * of these launches plus RoPE and attention, and 1 row costs what 16 do.
 *
 *   prologue (the bf16 input tile xs (16, K) in shared memory; rows >= R zero):
 *     MM16_IN_ROWS  inp (R, K) bf16 as it is (the attention output, h)
 *     MM16_IN_NORM  RMSNorm of the fp32 rows x[src(i)] (src(i) = rows ? rows[i]
 *                 : i, the LM head's gather) times nw, rounded to bf16 as
 *                 rmsnorm.cu does: bf16((x * rsqrt(mean(x^2) + eps)) * nw)
 *   epilogue (row i, output o, d = row i of the tile times W[o]):
 *     MM16_OUT_F32     out[i, o] = d                      out (R, OC) fp32
 *     MM16_OUT_ADD     x[i, o] += d   (the residual add)  x (R, OC) fp32
 *     MM16_OUT_SWIGLU  W is [Wgate; Wup] (2F, K), F = OC: h[i, o] =
 *                    bf16(silu(d_gate) * d_up) as swiglu.cu   h (R, F) bf16
 *
 * kernel1: blocks of 8 warps; a block takes 16 outputs at a time (SwiGLU: 8
 * outputs, their gate and up rows), grid-stride. The K/16 k-steps are cut
 * into 8 fixed segments, one per warp (ceil(K/128) k-steps each); a warp
 * loads its segment's W fragments (32-bit loads straight from global memory,
 * each W row read once per call), runs its mma.sync chain from zero, and
 * leaves its 16 x 16 partial tile in shared memory; the partials are then
 * added in warp order 0..7 and the epilogue applied.
 *
 * Numerics: every output is (((seg0 + seg1) + seg2) ... + seg7), each
 * segment one mma chain over that row of the tile; nothing in it depends on
 * the other rows of the tile or on R, so a row comes out bit for bit the
 * same in a 16-row call as alone (batch-invariant by construction, as the
 * CPU's matmul): a Jacobi window's rows equal the AR steps' (test_cuda).
 * Calls of more rows go to cuBLAS (matmul.cu), whose sums differ in order. */
#include "kernels_cuda.h"

enum { MM_WARPS = 8, MM_NT = 2, MM_MAX_SEG = 16, MM_MAX_BLOCKS = 1024 };

/* the tile's row stride in bf16: K + 8 puts the 8 rows a fragment load reads
 * in 8 different shared-memory banks */
static __host__ __device__ int tile_stride(int K) { return K + 8; }

static size_t mm_smem(int K) {
    return (size_t)16 * tile_stride(K) * sizeof(floatX) + (size_t)MM_WARPS * MM_NT * 128 * sizeof(float);
}

__device__ __forceinline__ unsigned ld32(const floatX *p) { return *reinterpret_cast<const unsigned *>(p); }

/* W (units or 2*units, K); inp (R, K) bf16 | x (*, K) fp32 with nw (K) and rows (R) or NULL;
 * out (R, units) fp32 (F32: =, ADD: +=) | h (R, units) bf16 */
template <int IN, int OUT>
__global__ void matmul16_forward_kernel1(const floatX *W, int K, int units, const floatX *inp,
                                         const float *x, const float *nw, const int *rows, float eps,
                                         float *out, floatX *h, int R) {
    extern __shared__ uint4 mm_smem_raw[];
    int KP = tile_stride(K);
    floatX *xs = reinterpret_cast<floatX *>(mm_smem_raw);             /* (16, KP) */
    float *part = reinterpret_cast<float *>(xs + (size_t)16 * KP);    /* (WARPS, NT, 16, 8) */
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;

    if (IN == MM16_IN_ROWS) {
        int K8 = K / 8;
        for (int i = threadIdx.x; i < 16 * K8; i += blockDim.x) {
            int r = i / K8, c = i % K8;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (r < R) v = reinterpret_cast<const uint4 *>(inp + (size_t)r * K)[c];
            reinterpret_cast<uint4 *>(xs + (size_t)r * KP)[c] = v;
        }
    } else {
        for (int r = warp; r < 16; r += MM_WARPS) {
            floatX *d = xs + (size_t)r * KP;
            if (r >= R) {
                for (int k = lane; k < K; k += 32) d[k] = __float2bfloat16(0.0f);
                continue;
            }
            const float *xr = x + (rows ? (size_t)rows[r] : (size_t)r) * K;
            float ss = 0.0f;
            for (int k = lane; k < K; k += 32) ss += xr[k] * xr[k];
            ss = warp_sum(ss);
            float rs = 1.0f / sqrtf(ss / (float)K + eps);
            for (int k = lane; k < K; k += 32) d[k] = __float2bfloat16((xr[k] * rs) * nw[k]);
        }
    }
    __syncthreads();

    int KS = K / 16, S = (KS + MM_WARPS - 1) / MM_WARPS;
    int ks0 = warp * S, ks1 = ks0 + S < KS ? ks0 + S : KS;
    int W_rows = OUT == MM16_OUT_SWIGLU ? 2 * units : units;
    int groups = OUT == MM16_OUT_SWIGLU ? units / 8 : (units + 15) / 16;
    for (int grp = blockIdx.x; grp < groups; grp += gridDim.x) {
        /* the W row this lane feeds to n-tile nt (column g of its B fragment) */
        int wrow[MM_NT];
        wrow[0] = OUT == MM16_OUT_SWIGLU ? grp * 8 + g : grp * 16 + g;
        wrow[1] = OUT == MM16_OUT_SWIGLU ? units + grp * 8 + g : grp * 16 + 8 + g;
        unsigned b[MM_MAX_SEG][MM_NT][2];
#pragma unroll
        for (int s = 0; s < MM_MAX_SEG; s++) {
            int k0 = (ks0 + s) * 16 + 2 * t;
#pragma unroll
            for (int nt = 0; nt < MM_NT; nt++) {
                int ok = ks0 + s < ks1 && wrow[nt] < W_rows;
                const floatX *wr = W + (size_t)(ok ? wrow[nt] : 0) * K;
                b[s][nt][0] = ok ? ld32(wr + k0) : 0u;
                b[s][nt][1] = ok ? ld32(wr + k0 + 8) : 0u;
            }
        }
        float acc[MM_NT][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int s = 0; s < MM_MAX_SEG; s++) {
            if (ks0 + s >= ks1) break;
            int k0 = (ks0 + s) * 16 + 2 * t;
            unsigned a[4] = {ld32(xs + (size_t)g * KP + k0), ld32(xs + (size_t)(g + 8) * KP + k0),
                             ld32(xs + (size_t)g * KP + k0 + 8), ld32(xs + (size_t)(g + 8) * KP + k0 + 8)};
#pragma unroll
            for (int nt = 0; nt < MM_NT; nt++) mma_bf16_16816(acc[nt], a, b[s][nt]);
        }
#pragma unroll
        for (int nt = 0; nt < MM_NT; nt++) {
            float *p = part + (size_t)(warp * MM_NT + nt) * 128;
            p[g * 8 + 2 * t] = acc[nt][0];
            p[g * 8 + 2 * t + 1] = acc[nt][1];
            p[(g + 8) * 8 + 2 * t] = acc[nt][2];
            p[(g + 8) * 8 + 2 * t + 1] = acc[nt][3];
        }
        __syncthreads();
        int per_row = OUT == MM16_OUT_SWIGLU ? 8 : 16;
        for (int it = threadIdx.x; it < R * per_row; it += blockDim.x) {
            int r = it / per_row, c = it % per_row;
            if (OUT == MM16_OUT_SWIGLU) {
                float gs = 0.0f, us = 0.0f;
                for (int w = 0; w < MM_WARPS; w++) {
                    gs += part[(size_t)(w * MM_NT) * 128 + r * 8 + c];
                    us += part[(size_t)(w * MM_NT + 1) * 128 + r * 8 + c];
                }
                h[(size_t)r * units + grp * 8 + c] = __float2bfloat16(gs / (1.0f + expf(-gs)) * us);
            } else {
                int nt = c / 8, o = grp * 16 + c;
                if (o >= units) continue;
                float v = 0.0f;
                for (int w = 0; w < MM_WARPS; w++) v += part[(size_t)(w * MM_NT + nt) * 128 + r * 8 + c % 8];
                if (OUT == MM16_OUT_F32) out[(size_t)r * units + o] = v;
                else out[(size_t)r * units + o] += v;
            }
        }
        __syncthreads();   /* part is rewritten by the next group */
    }
}

int mm16_supported(int K) { return K >= 16 && K % 16 == 0 && K <= 16 * MM_WARPS * MM_MAX_SEG; }

template <int IN, int OUT>
static int launch(const floatX *W, int K, int units, const floatX *inp, const float *x, const float *nw,
                  const int *rows, float eps, float *out, floatX *h, int R, cudaStream_t stream) {
    if (!mm16_supported(K) || R < 1 || R > 16 || (OUT == MM16_OUT_SWIGLU && units % 8))
        return cllm_error(CLLM_EUNSUP, "matmul16: %d rows, inner size %d, %d outputs not supported", R, K, units);
    size_t smem = mm_smem(K);
    if (smem > 48 * 1024) {
        int rc = CUDA_CHECK(cudaFuncSetAttribute(matmul16_forward_kernel1<IN, OUT>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        if (rc) return rc;
    }
    int groups = OUT == MM16_OUT_SWIGLU ? units / 8 : ceil_div(units, 16);
    int blocks = groups < MM_MAX_BLOCKS ? groups : MM_MAX_BLOCKS;
    matmul16_forward_kernel1<IN, OUT><<<blocks, 32 * MM_WARPS, smem, stream>>>(W, K, units, inp, x, nw, rows, eps,
                                                                              out, h, R);
    return CUDA_CHECK_LAUNCH();
}

int mm16_norm_forward(float *out, const float *x, const float *nw, const int *rows, float eps,
                      const floatX *W, int R, int K, int OC, cudaStream_t stream) {
    return launch<MM16_IN_NORM, MM16_OUT_F32>(W, K, OC, NULL, x, nw, rows, eps, out, NULL, R, stream);
}

int mm16_residual_forward(float *x, const floatX *inp, const floatX *W, int R, int K, int OC,
                          cudaStream_t stream) {
    return launch<MM16_IN_ROWS, MM16_OUT_ADD>(W, K, OC, inp, NULL, NULL, NULL, 0.0f, x, NULL, R, stream);
}

int mm16_norm_swiglu_forward(floatX *h, const float *x, const float *nw, float eps, const floatX *Wgu,
                             int R, int K, int F, cudaStream_t stream) {
    return launch<MM16_IN_NORM, MM16_OUT_SWIGLU>(Wgu, K, F, NULL, x, nw, NULL, eps, NULL, h, R, stream);
}
