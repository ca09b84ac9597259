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
 * (at the price of ceil(R/G) calls). G = 0: one call of R rows. */
#include "kernels_cuda.h"

/* out (R, OC) fp32; inp (R, C) bf16; weight (OC, C) bf16; with rows_per_call
 * G > 0, out and inp hold ceil(R/G)*G rows */
int matmul_forward(cublasHandle_t handle, float *out, const floatX *inp, const floatX *weight,
                   int R, int C, int OC, int rows_per_call, cudaStream_t stream) {
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
