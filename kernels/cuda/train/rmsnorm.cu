/* rmsnorm.cu: RMSNorm (HF LlamaRMSNorm, fp32 statistics) for training,
 * fused with the residual add before it, and its backward.
 *   forward:  res = a + b (when b);  y = res or a
 *             rstd = 1/sqrt(mean(y^2) + eps);  xn = bf16(y * rstd * w)
 *   backward: c = rstd^2/C * sum_k dout_k w_k y_k
 *             dx += rstd (dout w - y c)    (dxb = bf16(dx) for the next products)
 *             dw += sum_rows dout y rstd
 * forward_kernel1 / backward_kernel1: one block of 256 threads per row, the
 * row's sums reduced in fp32 (the CPU sums in double; the difference is far
 * below bf16). dweight_kernel1: a (column tile, row chunk) grid; each thread
 * sums its column over the chunk's rows, then one atomicAdd per column and
 * chunk (coalesced reads along C). */
#include "train_kernels.h"

namespace cllm_train {

/* xn (R, C) bf16; rstd (R); res (R, C) or NULL; a (R, C); b (R, C) or NULL; w (C) */
__global__ void rmsnorm_forward_kernel1(floatX *xn, float *rstd, float *res, const float *a,
                                        const float *b, const float *w, int C, float eps) {
    __shared__ float red[32];
    size_t off = (size_t)blockIdx.x * C;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float y = a[off + i];
        if (b) {
            y += b[off + i];
            res[off + i] = y;
        }
        ss += y * y;
    }
    ss = block_sum(ss, red);
    float rs = 1.0f / sqrtf(ss / (float)C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = rs;
    /* res[off + i] was written by this same thread: no barrier needed */
    const float *y = b ? res : a;
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        xn[off + i] = __float2bfloat16((y[off + i] * rs) * w[i]);
}

/* dx (R, C) +=; dxb (R, C) or NULL; dout, x (R, C); w (C); rstd (R) */
__global__ void rmsnorm_backward_kernel1(float *dx, floatX *dxb, const float *dout,
                                         const float *x, const float *w, const float *rstd,
                                         int C) {
    __shared__ float red[32];
    size_t off = (size_t)blockIdx.x * C;
    float r = rstd[blockIdx.x];
    float dot = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) dot += dout[off + i] * w[i] * x[off + i];
    dot = block_sum(dot, red);
    float c = dot * r * r / (float)C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float d = dx[off + i] + r * (dout[off + i] * w[i] - x[off + i] * c);
        dx[off + i] = d;
        if (dxb) dxb[off + i] = __float2bfloat16(d);
    }
}

enum { DW_ROWS = 64 };

/* dw (C) +=; dout, x (R, C); rstd (R). grid (ceil(C/blockDim), ceil(R/DW_ROWS)) */
__global__ void rmsnorm_dweight_kernel1(float *dw, const float *dout, const float *x,
                                        const float *rstd, int R, int C) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C) return;
    int r0 = blockIdx.y * DW_ROWS, r1 = min(R, r0 + DW_ROWS);
    float s = 0.0f;
    for (int r = r0; r < r1; r++) s += dout[(size_t)r * C + i] * (x[(size_t)r * C + i] * rstd[r]);
    atomicAdd(dw + i, s);
}

int rmsnorm_forward(floatX *xn, float *rstd, float *res, const float *a, const float *b,
                    const float *weight, int R, int C, float eps, cudaStream_t stream) {
    if (b && !res) return cllm_error(CLLM_EINVAL, "rmsnorm_forward: residual add without output");
    rmsnorm_forward_kernel1<<<R, 256, 0, stream>>>(xn, rstd, res, a, b, weight, C, eps);
    return CUDA_CHECK_LAUNCH();
}

int rmsnorm_backward(float *dx, floatX *dxb, float *dweight, const float *dout, const float *x,
                     const float *weight, const float *rstd, int R, int C, cudaStream_t stream) {
    int rc;
    if (dweight) {
        dim3 grid(ceil_div(C, 128), ceil_div(R, DW_ROWS));
        rmsnorm_dweight_kernel1<<<grid, 128, 0, stream>>>(dweight, dout, x, rstd, R, C);
        if ((rc = CUDA_CHECK_LAUNCH())) return rc;
    }
    rmsnorm_backward_kernel1<<<R, 256, 0, stream>>>(dx, dxb, dout, x, weight, rstd, C);
    return CUDA_CHECK_LAUNCH();
}

}  // namespace cllm_train
