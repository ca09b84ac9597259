/* matmul.cu: out = inp W^T through cuBLAS, bf16 in, fp32 accumulate and out.
 * Row-major (R, OC) = (R, C) x (OC, C)^T is, in cuBLAS' column-major terms,
 * out^T (OC, R) = W (C, OC)^T x inp^T (C, R): transa = T, transb = N,
 * m = OC, n = R, k = C, lda = ldb = C, ldc = OC. No kernel of our own.
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
 * Every output is summed in the same order whatever R is and whatever else
 * is in the call: batch-invariant by construction, without the launches of
 * G-row pieces. Needs K % 16 == 0. */
#include "flash_tile.h"
#include "kernels_cuda.h"

enum { MT_TILE = 64, MT_K = 64, MT_WARPS = 4 };

/* out (R, OC) fp32 = inp (R, K) bf16 x W (OC, K)^T bf16. grid (ceil(OC/64), ceil(R/64)), block 128 */
__global__ void __launch_bounds__(32 * MT_WARPS)
matmul_forward_kernel1(float *out, const floatX *inp, const floatX *W, int R, int K, int OC) {
    __shared__ uint4 mt_smem[2 * MT_TILE * (MT_K + 8) / 8];
    floatX *as = reinterpret_cast<floatX *>(mt_smem);   /* (64 rows, MT_K + 8) */
    floatX *bs = as + MT_TILE * (MT_K + 8);              /* (64 outputs, MT_K + 8) */
    int r0 = blockIdx.y * MT_TILE, c0 = blockIdx.x * MT_TILE;
    int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, tq = lane % 4;
    float acc[MT_TILE / 8][4];
#pragma unroll
    for (int nt = 0; nt < MT_TILE / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += MT_K) {
        int kc = min(MT_K, K - k0);   /* a multiple of 16 */
        __syncthreads();              /* the previous chunk's readers are done */
        for (int i = threadIdx.x; i < MT_TILE * (MT_K / 8); i += blockDim.x) {
            int r = i / (MT_K / 8), c = (i % (MT_K / 8)) * 8;
            uint4 a = make_uint4(0u, 0u, 0u, 0u), b = a;
            if (c < kc && r0 + r < R) a = *reinterpret_cast<const uint4 *>(inp + (size_t)(r0 + r) * K + k0 + c);
            if (c < kc && c0 + r < OC) b = *reinterpret_cast<const uint4 *>(W + (size_t)(c0 + r) * K + k0 + c);
            *reinterpret_cast<uint4 *>(as + (size_t)r * (MT_K + 8) + c) = a;
            *reinterpret_cast<uint4 *>(bs + (size_t)r * (MT_K + 8) + c) = b;
        }
        __syncthreads();
        for (int kk = 0; kk < kc / 16; kk++) {
            const floatX *ap = as + (size_t)(16 * w + g) * (MT_K + 8) + 16 * kk + 2 * tq;
            unsigned a[4] = {ld_bf16x2(ap), ld_bf16x2(ap + 8 * (MT_K + 8)), ld_bf16x2(ap + 8),
                             ld_bf16x2(ap + 8 * (MT_K + 8) + 8)};
#pragma unroll
            for (int nt = 0; nt < MT_TILE / 8; nt++) {
                unsigned bf[2];
                b_frag(bf, bs, MT_K + 8, 8 * nt, kk);
                mma_bf16_16816(acc[nt], a, bf);
            }
        }
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        int r = r0 + 16 * w + g + 8 * e;
        if (r >= R) continue;
#pragma unroll
        for (int nt = 0; nt < MT_TILE / 8; nt++) {
            int c = c0 + 8 * nt + 2 * tq;
            if (c < OC) out[(size_t)r * OC + c] = acc[nt][2 * e];
            if (c + 1 < OC) out[(size_t)r * OC + c + 1] = acc[nt][2 * e + 1];
        }
    }
}

/* out (R, OC) fp32; inp (R, C) bf16; weight (OC, C) bf16; with rows_per_call
 * G > 0, out and inp hold ceil(R/G)*G rows; MATMUL_FIXED_ORDER: kernel1 */
int matmul_forward(cublasHandle_t handle, float *out, const floatX *inp, const floatX *weight,
                   int R, int C, int OC, int rows_per_call, cudaStream_t stream) {
    if (rows_per_call == MATMUL_FIXED_ORDER) {
        if (C % 16 || C < 16)
            return cllm_error(CLLM_EUNSUP, "matmul: inner size %d is not a multiple of 16", C);
        dim3 grid(ceil_div(OC, MT_TILE), ceil_div(R, MT_TILE));
        matmul_forward_kernel1<<<grid, 32 * MT_WARPS, 0, stream>>>(out, inp, weight, R, C, OC);
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
