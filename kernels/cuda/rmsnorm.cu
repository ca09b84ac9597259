/* rmsnorm.cu: RMSNorm (HF LlamaRMSNorm, fp32) into the bf16 input of the next
 * matrix product, alone or fused with the residual add before it.
 *   x[src] += proj[src]          (residual_rmsnorm only)
 *   xn[r] = x[src] * rsqrt(mean(x[src]^2) + eps) * weight
 * with the row gather src(i) = rows ? rows[i] : i of kernels_cuda.h.
 * kernel1: one block per output row; the row's sum of squares is reduced in
 * fp32 (the CPU sums in double; the difference is far below bf16's). The
 * residual variant writes x back once, then re-reads it from its own writes
 * (same thread, same element: no barrier needed for that). */
#include "kernels_cuda.h"

/* xn (n, C); x (R, C); proj (R, C) or NULL; weight (C); rows (n) or NULL */
__global__ void rmsnorm_forward_kernel1(floatX *xn, float *x, const float *proj,
                                        const float *weight, const int *rows, int C, float eps) {
    __shared__ float red[32];
    pdl_wait();
    pdl_launch_dependents();
    int r = blockIdx.x;
    size_t src = rows ? (size_t)rows[r] : (size_t)r;
    float *xr = x + src * C;
    float ss = 0.0f;
    if (proj) {
        const float *pr = proj + src * C;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            float v = xr[i] + pr[i];
            xr[i] = v;
            ss += v * v;
        }
    } else {
        for (int i = threadIdx.x; i < C; i += blockDim.x) ss += xr[i] * xr[i];
    }
    ss = block_sum(ss, red);
    float rs = 1.0f / sqrtf(ss / (float)C + eps);
    floatX *o = xn + (size_t)r * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) o[i] = __float2bfloat16((xr[i] * rs) * weight[i]);
}

int rmsnorm_forward(floatX *xn, const float *x, const float *weight, const int *rows, int n,
                    int C, float eps, int pdl, cudaStream_t stream) {
    /* x is only read when proj is NULL */
    return residual_rmsnorm_forward(xn, const_cast<float *>(x), NULL, weight, rows, n, C, eps, pdl, stream);
}

int residual_rmsnorm_forward(floatX *xn, float *x, const float *proj, const float *weight,
                             const int *rows, int n, int C, float eps, int pdl, cudaStream_t stream) {
    return launch_kernel("rmsnorm_forward_kernel1", rmsnorm_forward_kernel1, dim3(n), dim3(256), 0, stream, pdl, xn,
                         x, proj, weight, rows, C, eps);
}
