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
 *   epilogue (epilogue.h; row i, output o, d = row i of the tile times W[o]):
 *     EPI_F32       out[i, o] = d and, with keys, the row's argmax
 *                   (argmax_key, one atomicMax per row and block after a
 *                   block-local max)
 *     EPI_ADD       x[i, o] += d (the residual add)
 *     EPI_SWIGLU    h[i, o] = bf16(silu(d_gate) d_up), as swiglu.cu
 *     EPI_QKV_ROPE  bias, RoPE, q and the cache writes as rope.cu; a
 *                   group's two n-tiles are 8 dims of a head and their RoPE
 *                   partners, so a rotation has both its inputs in one block
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
#include "epilogue.h"

enum { MM_WARPS = 8, MM_NT = 2, MM_MAX_SEG = 16, MM_MAX_BLOCKS = 1024 };

/* the tile's row stride in bf16: K + 8 puts the 8 rows a fragment load reads
 * in 8 different shared-memory banks */
static __host__ __device__ int tile_stride(int K) { return K + 8; }

static size_t mm_smem(int K) {
    return (size_t)16 * tile_stride(K) * sizeof(floatX) + (size_t)MM_WARPS * MM_NT * 128 * sizeof(float);
}

/* W (units or 2*units, K); inp (R, K) bf16 | x (*, K) fp32 with nw (K) and rows (R) or NULL;
 * out (R, units) fp32 (F32: =, ADD: +=) | h (R, units) bf16; keys (R) or NULL (F32);
 * ra (QKV_ROPE; units = QKV) */
template <int IN, int OUT>
__global__ void __launch_bounds__(32 * MM_WARPS, 2)   /* two blocks an SM: <= 128 registers */
matmul16_forward_kernel1(const floatX *W, int K, int units, const floatX *inp, const float *x, const float *nw,
                         const int *rows, float eps, float *out, floatX *h, argmax_key_t *keys, qkv_rope_args ra,
                         int R) {
    extern __shared__ uint4 mm_smem_raw[];
    __shared__ argmax_key_t best[16];   /* F32 with keys: the block's argmax key per row */
    int KP = tile_stride(K);
    floatX *xs = reinterpret_cast<floatX *>(mm_smem_raw);             /* (16, KP) */
    float *part = reinterpret_cast<float *>(xs + (size_t)16 * KP);    /* (WARPS, NT, 16, 8) */
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    int W_rows = w_rows<OUT>(units);
    int groups = out_groups<OUT>(units, ra);

    /* Launched with pdl, this runs while the previous kernel does: the W
     * rows of the block's groups (16 each) are asked into L2 (weights:
     * nothing earlier writes them), then the wait; the next kernel may start
     * its own prefetch once every block is past it. (A block with several
     * groups, the LM head's, so also has its later groups' rows on the way
     * while it works on the first.) */
    for (int grp = blockIdx.x; grp < groups; grp += gridDim.x) {
        rope_group rg0 = {0, 0, 0, 0};
        if (OUT == EPI_QKV_ROPE) rg0 = rope_group_at(ra, grp);
        int lines = (K + 63) / 64;   /* 128-byte lines of a bf16 row */
        for (int i = threadIdx.x; i < 16 * lines; i += blockDim.x) {
            int j = i / lines, row = group_w_row<OUT>(grp, j / 8, j % 8, units, rg0);
            if (row < W_rows) prefetch_l2(W + (size_t)row * K + (size_t)(i % lines) * 64);
        }
    }
    pdl_wait();
    pdl_launch_dependents();

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
    if (OUT == EPI_F32 && threadIdx.x < 16) best[threadIdx.x] = 0ull;
    __syncthreads();

    int KS = K / 16, S = (KS + MM_WARPS - 1) / MM_WARPS;
    int ks0 = warp * S, ks1 = ks0 + S < KS ? ks0 + S : KS;
    argmax_key_t mine = 0ull;   /* F32 with keys: this thread's best (it handles one row) */
    for (int grp = blockIdx.x; grp < groups; grp += gridDim.x) {
        /* the W row this lane feeds to n-tile nt (column g of its B fragment) */
        int wrow[MM_NT];
        rope_group rg = {0, 0, 0, 0};
        if (OUT == EPI_QKV_ROPE) rg = rope_group_at(ra, grp);
        for (int nt = 0; nt < MM_NT; nt++) wrow[nt] = group_w_row<OUT>(grp, nt, g, units, rg);
        unsigned b[MM_MAX_SEG][MM_NT][2];
#pragma unroll
        for (int s = 0; s < MM_MAX_SEG; s++) {
            int k0 = (ks0 + s) * 16 + 2 * t;
#pragma unroll
            for (int nt = 0; nt < MM_NT; nt++) {
                int ok = ks0 + s < ks1 && wrow[nt] < W_rows;
                const floatX *wr = W + (size_t)(ok ? wrow[nt] : 0) * K;
                b[s][nt][0] = ok ? ld_bf16x2(wr + k0) : 0u;
                b[s][nt][1] = ok ? ld_bf16x2(wr + k0 + 8) : 0u;
            }
        }
        float acc[MM_NT][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int s = 0; s < MM_MAX_SEG; s++) {
            if (ks0 + s >= ks1) break;
            int k0 = (ks0 + s) * 16 + 2 * t;
            unsigned a[4] = {ld_bf16x2(xs + (size_t)g * KP + k0), ld_bf16x2(xs + (size_t)(g + 8) * KP + k0),
                             ld_bf16x2(xs + (size_t)g * KP + k0 + 8), ld_bf16x2(xs + (size_t)(g + 8) * KP + k0 + 8)};
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
        int per_row = OUT == EPI_SWIGLU || OUT == EPI_QKV_ROPE ? 8 : 16;
        for (int it = threadIdx.x; it < R * per_row; it += blockDim.x) {
            int r = it / per_row, c = it % per_row;
            if (OUT == EPI_QKV_ROPE) {
                float z[2];
                for (int nt = 0; nt < 2; nt++) {
                    float v = 0.0f;
                    for (int w = 0; w < MM_WARPS; w++) v += part[(size_t)(w * MM_NT + nt) * 128 + r * 8 + c];
                    z[nt] = v;
                }
                qkv_rope_store(ra, r, rg, c, z[0], z[1]);
            } else if (OUT == EPI_SWIGLU) {
                float gs = 0.0f, us = 0.0f;
                for (int w = 0; w < MM_WARPS; w++) {
                    gs += part[(size_t)(w * MM_NT) * 128 + r * 8 + c];
                    us += part[(size_t)(w * MM_NT + 1) * 128 + r * 8 + c];
                }
                h[(size_t)r * units + grp * 8 + c] = __float2bfloat16(silu_mul(gs, us));
            } else {
                int nt = c / 8, o = grp * 16 + c;
                if (o >= units) continue;
                float v = 0.0f;
                for (int w = 0; w < MM_WARPS; w++) v += part[(size_t)(w * MM_NT + nt) * 128 + r * 8 + c % 8];
                if (OUT == EPI_F32) {
                    out[(size_t)r * units + o] = v;
                    if (keys && v == v) {   /* NaN is never a candidate */
                        argmax_key_t k = argmax_key(v, o);
                        if (k > mine) mine = k;
                    }
                } else {
                    out[(size_t)r * units + o] += v;
                }
            }
        }
        __syncthreads();   /* part is rewritten by the next group */
    }
    if (OUT == EPI_F32 && keys) {
        /* R * 16 <= blockDim.x: thread it handled row it / 16 in every group */
        if ((int)threadIdx.x < R * 16 && mine) atomicMax(&best[threadIdx.x / 16], mine);
        __syncthreads();
        if ((int)threadIdx.x < R && best[threadIdx.x]) atomicMax(&keys[threadIdx.x], best[threadIdx.x]);
    }
}

int mm16_supported(int K) { return K >= 16 && K % 16 == 0 && K <= 16 * MM_WARPS * MM_MAX_SEG; }

template <int IN, int OUT>
static int launch(const floatX *W, int K, int units, const floatX *inp, const float *x, const float *nw,
                  const int *rows, float eps, float *out, floatX *h, argmax_key_t *keys,
                  const qkv_rope_args *ra, int R, int pdl, cudaStream_t stream) {
    if (!mm16_supported(K) || R < 1 || R > 16 || (OUT == EPI_SWIGLU && units % 8) ||
        (OUT == EPI_QKV_ROPE && !qkv_rope_fusable(ra->NH, ra->NKV, ra->HS, ra->rope_dim)))
        return cllm_error(CLLM_EUNSUP, "matmul16: %d rows, inner size %d, %d outputs not supported", R, K, units);
    qkv_rope_args rargs;
    if (ra) rargs = *ra;
    else memset(&rargs, 0, sizeof rargs);
    size_t smem = mm_smem(K);
    if (smem > 48 * 1024) {
        int rc = CUDA_CHECK(cudaFuncSetAttribute(matmul16_forward_kernel1<IN, OUT>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        if (rc) return rc;
    }
    int groups = out_groups<OUT>(units, rargs);
    int blocks = groups < MM_MAX_BLOCKS ? groups : MM_MAX_BLOCKS;
    return launch_kernel("matmul16_forward_kernel1", matmul16_forward_kernel1<IN, OUT>, dim3(blocks),
                         dim3(32 * MM_WARPS), smem, stream, pdl, W, K, units, inp, x, nw, rows, eps, out, h, keys,
                         rargs, R);
}

int mm16_norm_forward(float *out, argmax_key_t *keys, const float *x, const float *nw, const int *rows,
                      float eps, const floatX *W, int R, int K, int OC, int pdl, cudaStream_t stream) {
    return launch<MM16_IN_NORM, EPI_F32>(W, K, OC, NULL, x, nw, rows, eps, out, NULL, keys, NULL, R, pdl,
                                              stream);
}

int mm16_residual_forward(float *x, const floatX *inp, const floatX *W, int R, int K, int OC, int pdl,
                          cudaStream_t stream) {
    return launch<MM16_IN_ROWS, EPI_ADD>(W, K, OC, inp, NULL, NULL, NULL, 0.0f, x, NULL, NULL, NULL, R, pdl,
                                              stream);
}

int mm16_norm_swiglu_forward(floatX *h, const float *x, const float *nw, float eps, const floatX *Wgu,
                             int R, int K, int F, int pdl, cudaStream_t stream) {
    return launch<MM16_IN_NORM, EPI_SWIGLU>(Wgu, K, F, NULL, x, nw, NULL, eps, NULL, h, NULL, NULL, R, pdl,
                                                 stream);
}

int mm16_norm_qkv_rope_forward(const qkv_rope_args *ra, const float *x, const float *nw, float eps,
                               const floatX *Wqkv, int R, int K, int pdl, cudaStream_t stream) {
    int QKV = (ra->NH + 2 * ra->NKV) * ra->HS;
    return launch<MM16_IN_NORM, EPI_QKV_ROPE>(Wqkv, K, QKV, NULL, x, nw, NULL, eps, NULL, NULL, NULL, ra, R,
                                                   pdl, stream);
}
