/* matmul.cu: the Linear layer's three products through cublasGemmEx (bf16
 * A and B, CUBLAS_COMPUTE_32F, fp32 or bf16 C), and the bias gradient.
 *
 * Row-major X (rows, cols) with row stride ld is, to column-major cuBLAS,
 * X^T (cols, rows) with leading dimension ld. So, with W (OC, C) row-major:
 *   forward  out (R, OC) = inp W^T:  out^T = op_T(W^T) inp^T
 *            transa T, transb N, m OC, n R, k C, lda C, ldb C, ldc ldo
 *   dinp     dinp (R, C) = dout W:   dinp^T = W^T dout^T
 *            transa N, transb N, m C, n R, k OC, lda C, ldb ldd, ldc C
 *   dweight  dW (OC, C) += dout^T inp:  dW^T = inp^T dout
 *            transa N, transb T, m C, n OC, k R, lda C, ldb ldd, ldc C, beta 1
 * bias_backward_kernel1: (column tile, row chunk) grid, column sums in fp32,
 * one atomicAdd per column and chunk. */
#include "train_kernels.h"

namespace cllm_train {

int matmul_forward(cublasHandle_t h, void *out, int out_bf16, int ldo, const floatX *inp,
                   const floatX *W, int R, int C, int OC, cudaStream_t stream) {
    const float alpha = 1.0f, beta = 0.0f;
    int rc = CUBLAS_CHECK(cublasSetStream(h, stream));
    if (rc) return rc;
    return CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, R, C, &alpha, W, CUDA_R_16BF,
                                     C, inp, CUDA_R_16BF, C, &beta, out,
                                     out_bf16 ? CUDA_R_16BF : CUDA_R_32F, ldo, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
}

int matmul_backward_dinp(cublasHandle_t h, void *dinp, int out_bf16, float beta, const floatX *dout,
                         int ldd, const floatX *W, int R, int C, int OC, cudaStream_t stream) {
    const float alpha = 1.0f;
    if (out_bf16 && beta != 0.0f)
        return cllm_error(CLLM_EINVAL, "matmul_backward_dinp: a bf16 output cannot accumulate");
    int rc = CUBLAS_CHECK(cublasSetStream(h, stream));
    if (rc) return rc;
    return CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, C, R, OC, &alpha, W, CUDA_R_16BF,
                                     C, dout, CUDA_R_16BF, ldd, &beta, dinp,
                                     out_bf16 ? CUDA_R_16BF : CUDA_R_32F, C, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
}

int matmul_backward_dweight(cublasHandle_t h, float *dW, const floatX *dout, int ldd,
                            const floatX *inp, int R, int C, int OC, cudaStream_t stream) {
    const float alpha = 1.0f, beta = 1.0f;
    int rc = CUBLAS_CHECK(cublasSetStream(h, stream));
    if (rc) return rc;
    return CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, R, &alpha, inp,
                                     CUDA_R_16BF, C, dout, CUDA_R_16BF, ldd, &beta, dW, CUDA_R_32F,
                                     C, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

enum { BIAS_ROWS = 64 };

/* dbias (OC) +=; dout (R, OC) stride ldd. grid (ceil(OC/blockDim), ceil(R/BIAS_ROWS)) */
__global__ void bias_backward_kernel1(float *dbias, const float *dout, int ldd, int R, int OC) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) return;
    int r0 = blockIdx.y * BIAS_ROWS, r1 = min(R, r0 + BIAS_ROWS);
    float s = 0.0f;
    for (int r = r0; r < r1; r++) s += dout[(size_t)r * ldd + o];
    atomicAdd(dbias + o, s);
}

int bias_backward(float *dbias, const float *dout, int ldd, int R, int OC, cudaStream_t stream) {
    dim3 grid(ceil_div(OC, 128), ceil_div(R, BIAS_ROWS));
    bias_backward_kernel1<<<grid, 128, 0, stream>>>(dbias, dout, ldd, R, OC);
    return CUDA_CHECK_LAUNCH();
}

}  // namespace cllm_train
