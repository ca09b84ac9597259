/* matmul.cu: out = inp W^T through cuBLAS, bf16 in, fp32 accumulate and out.
 * Row-major (R, OC) = (R, C) x (OC, C)^T is, in cuBLAS' column-major terms,
 * out^T (OC, R) = W (C, OC)^T x inp^T (C, R): transa = T, transb = N,
 * m = OC, n = R, k = C, lda = ldb = C, ldc = OC.
 *
 * Batch invariance: cuBLAS picks its algorithm (tiles, split-K) by shape, so
 * a row's sums can change with R. With rows_per_call = G > 0 the product is
 * made in pieces of exactly G rows (the last one reading and writing up to G
 * rows past R: the caller's buffers are padded), so every call has one shape
 * and a row's result depends only on that row, whatever else is in the batch
 * (at the price of ceil(R/G) calls). G = 0: one call of R rows.
 *
 * G = MATMUL_FIXED_ORDER: kernel1 below instead of cuBLAS, one launch for any
 * R: a block of 4 warps takes a 64-row x 64-output tile; per 64-wide K chunk,
 * in order, the inp and W tiles go to shared memory (rows past R or OC and
 * columns past K as zeros) and each warp adds its 16 rows x 64 outputs as
 * 4 k-steps x 8 n-tiles of mma.sync m16n8k16 (bf16 in, fp32 accumulate).
 * Two shared-memory stages: chunk c + 1 is copied (cp.async) while chunk c
 * is multiplied, so the global loads' latency is hidden instead of paid once
 * a chunk. Every output is summed in the same order whatever R is and
 * whatever else is in the call: batch-invariant by construction, without the
 * launches of G-row pieces. Needs K % 16 == 0.
 *
 * matmul_argmax_forward: the same product for the LM head when only the
 * rows' argmax is wanted: each warp reduces its rows' best over the tile's
 * 64 outputs (argmax_key: value, then the lower id) and adds it to the row's
 * key with one atomicMax; the (R, OC) fp32 logits are never written (at
 * 49,152 outputs a row that is 200 KB a row written and read back). */
#include "flash_tile.h"
#include "kernels_cuda.h"

enum { MT_TILE = 64, MT_K = 64, MT_WARPS = 4, MT_LD = MT_K + 8 };
enum { MT_OUT_F32, MT_OUT_ARGMAX };

/* Chunk k0 of the block's inp rows r0.. and W rows c0.. into one stage (as,
 * bs: (64, MT_LD) each), zeros past R, OC and K; asynchronous (cp.async). */
__device__ __forceinline__ void mt_load_chunk(floatX *as, floatX *bs, const floatX *inp, const floatX *W, int r0,
                                              int c0, int k0, int R, int K, int OC) {
    int kc = min(MT_K, K - k0);
    for (int i = threadIdx.x; i < MT_TILE * (MT_K / 8); i += blockDim.x) {
        int r = i / (MT_K / 8), c = (i % (MT_K / 8)) * 8;
        int va = c < kc && r0 + r < R, vb = c < kc && c0 + r < OC;
        cp_async16(as + (size_t)r * MT_LD + c, va ? inp + (size_t)(r0 + r) * K + k0 + c : inp, va);
        cp_async16(bs + (size_t)r * MT_LD + c, vb ? W + (size_t)(c0 + r) * K + k0 + c : W, vb);
    }
}

/* OUT = MT_OUT_F32: out (R, OC) fp32 = inp (R, K) bf16 x W (OC, K)^T bf16;
 * MT_OUT_ARGMAX: keys (R) atomicMax'ed with each row's best of the tile.
 * grid (ceil(OC/64), ceil(R/64)), block 128 */
template <int OUT>
__global__ void __launch_bounds__(32 * MT_WARPS)
matmul_forward_kernel1(float *out, argmax_key_t *keys, const floatX *inp, const floatX *W, int R, int K, int OC) {
    __shared__ uint4 mt_smem[2 * 2 * MT_TILE * MT_LD / 8];   /* 2 stages x (inp tile, W tile) */
    floatX *stage0 = reinterpret_cast<floatX *>(mt_smem);
    int r0 = blockIdx.y * MT_TILE, c0 = blockIdx.x * MT_TILE;
    int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, tq = lane % 4;
    float acc[MT_TILE / 8][4];
#pragma unroll
    for (int nt = 0; nt < MT_TILE / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    int chunks = (K + MT_K - 1) / MT_K;
    mt_load_chunk(stage0, stage0 + MT_TILE * MT_LD, inp, W, r0, c0, 0, R, K, OC);
    cp_async_commit();
    for (int ch = 0; ch < chunks; ch++) {
        floatX *as = stage0 + (size_t)(ch & 1) * 2 * MT_TILE * MT_LD, *bs = as + MT_TILE * MT_LD;
        if (ch + 1 < chunks) {   /* the next chunk into the other stage (its readers passed the last barrier) */
            floatX *an = stage0 + (size_t)((ch + 1) & 1) * 2 * MT_TILE * MT_LD;
            mt_load_chunk(an, an + MT_TILE * MT_LD, inp, W, r0, c0, (ch + 1) * MT_K, R, K, OC);
            cp_async_commit();
            cp_async_wait<1>();   /* this chunk's copies are done, the next one's may not be */
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();          /* ... and every thread's copies of this chunk are visible */
        int kc = min(MT_K, K - ch * MT_K);
        for (int kk = 0; kk < kc / 16; kk++) {
            const floatX *ap = as + (size_t)(16 * w + g) * MT_LD + 16 * kk + 2 * tq;
            unsigned a[4] = {ld_bf16x2(ap), ld_bf16x2(ap + 8 * MT_LD), ld_bf16x2(ap + 8), ld_bf16x2(ap + 8 * MT_LD + 8)};
#pragma unroll
            for (int nt = 0; nt < MT_TILE / 8; nt++) {
                unsigned bf[2];
                b_frag(bf, bs, MT_LD, 8 * nt, kk);
                mma_bf16_16816(acc[nt], a, bf);
            }
        }
        __syncthreads();          /* this stage is refilled at chunk ch + 2 */
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        int r = r0 + 16 * w + g + 8 * e;
        if (OUT == MT_OUT_ARGMAX) {
            /* lanes 4g .. 4g + 3 hold row r's 64 outputs: their best, then one atomic */
            argmax_key_t best = 0ull;
#pragma unroll
            for (int nt = 0; nt < MT_TILE / 8; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    int c = c0 + 8 * nt + 2 * tq + j;
                    float v = acc[nt][2 * e + j];
                    if (c < OC && v == v) {   /* NaN is never a candidate */
                        argmax_key_t k = argmax_key(v, c);
                        if (k > best) best = k;
                    }
                }
            argmax_key_t o = __shfl_xor_sync(0xffffffffu, best, 1);
            if (o > best) best = o;
            o = __shfl_xor_sync(0xffffffffu, best, 2);
            if (o > best) best = o;
            if (tq == 0 && r < R && best) atomicMax(&keys[r], best);
            continue;
        }
        if (r >= R) continue;
#pragma unroll
        for (int nt = 0; nt < MT_TILE / 8; nt++) {
            int c = c0 + 8 * nt + 2 * tq;
            if (c < OC) out[(size_t)r * OC + c] = acc[nt][2 * e];
            if (c + 1 < OC) out[(size_t)r * OC + c + 1] = acc[nt][2 * e + 1];
        }
    }
}

int matmul_argmax_forward(argmax_key_t *keys, const floatX *inp, const floatX *weight, int R, int C, int OC,
                          cudaStream_t stream) {
    if (C % 16 || C < 16) return cllm_error(CLLM_EUNSUP, "matmul: inner size %d is not a multiple of 16", C);
    dim3 grid(ceil_div(OC, MT_TILE), ceil_div(R, MT_TILE));
    matmul_forward_kernel1<MT_OUT_ARGMAX><<<grid, 32 * MT_WARPS, 0, stream>>>(NULL, keys, inp, weight, R, C, OC);
    return CUDA_CHECK_LAUNCH();
}

/* out (R, OC) fp32; inp (R, C) bf16; weight (OC, C) bf16; with rows_per_call
 * G > 0, out and inp hold ceil(R/G)*G rows; MATMUL_FIXED_ORDER: kernel1 */
int matmul_forward(cublasHandle_t handle, float *out, const floatX *inp, const floatX *weight,
                   int R, int C, int OC, int rows_per_call, cudaStream_t stream) {
    if (rows_per_call == MATMUL_FIXED_ORDER) {
        if (C % 16 || C < 16)
            return cllm_error(CLLM_EUNSUP, "matmul: inner size %d is not a multiple of 16", C);
        dim3 grid(ceil_div(OC, MT_TILE), ceil_div(R, MT_TILE));
        matmul_forward_kernel1<MT_OUT_F32><<<grid, 32 * MT_WARPS, 0, stream>>>(out, NULL, inp, weight, R, C, OC);
        return CUDA_CHECK_LAUNCH();
    }
    const float alpha = 1.0f, beta = 0.0f;
    int rc = CUBLAS_CHECK(cublasSetStream(handle, stream));
    int G = rows_per_call > 0 ? rows_per_call : R;
    for (int r0 = 0; !rc && r0 < R; r0 += G)
        rc = CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, OC, G, C, &alpha, weight,
                                       CUDA_R_16BF, C, inp + (size_t)r0 * C, CUDA_R_16BF, C, &beta,
                                       out + (size_t)r0 * OC, CUDA_R_32F, OC, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT));
    return rc;
}
