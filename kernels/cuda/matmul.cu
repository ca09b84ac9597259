/* matmul.cu: out = inp W^T through cuBLAS, bf16 in, fp32 accumulate and out.
 * Row-major (R, OC) = (R, C) x (OC, C)^T is, in cuBLAS' column-major terms,
 * out^T (OC, R) = W (C, OC)^T x inp^T (C, R): transa = T, transb = N,
 * m = OC, n = R, k = C, lda = ldb = C, ldc = OC. No kernel of our own. */
#include "kernels_cuda.h"

int matmul_forward(cublasHandle_t handle, float *out, const floatX *inp, const floatX *weight,
                   int R, int C, int OC, cudaStream_t stream) {
    const float alpha = 1.0f, beta = 0.0f;
    int rc = CUBLAS_CHECK(cublasSetStream(handle, stream));
    if (rc) return rc;
    return CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, OC, R, C, &alpha, weight,
                                     CUDA_R_16BF, C, inp, CUDA_R_16BF, C, &beta, out, CUDA_R_32F,
                                     OC, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
