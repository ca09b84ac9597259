/* adamw.cu: the optimizer step on the device (fp32 master weights, fp32
 * moments, the bf16 compute copy written in the same pass), the gradient's
 * squared norm for global-norm clipping, and the fp32 -> bf16 cast.
 *
 * adamw_kernel1 repeats libcore/adamw.c's element update operation for
 * operation in fp32: fmaf for torch's lerp; every other product and sum an
 * explicit __fmul_rn / __fadd_rn, so nvcc cannot contract it into an FMA
 * (adamw.c is built with -ffp-contract=off); IEEE sqrtf and __fdiv_rn. With
 * the same host-computed
 * scalars, so on equal inputs it gives adamw.c's result bit for bit (the
 * test checks it). The clip factor is applied as adamw.c's cllm_grad_clip
 * applies it: one fp32 product g * c. A grid-stride loop; memory-bound
 * (4 fp32 reads, 3 fp32 writes and a bf16 write per parameter).
 * grad_sumsq_kernel1: per-thread double sums, a block reduction in double
 * through shared memory, one double atomicAdd per block (sm_60+). */
#include "train_kernels.h"

namespace cllm_train {

__global__ void adamw_kernel1(float *p, floatX *pb, float *m, float *v, const float *grads,
                              const unsigned char *no_decay, size_t n, float gscale, int wd,
                              float decay, float w1, float b2, float w2, float step_size,
                              float bc2_sqrt, float eps) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = grads[i];
        if (gscale != 1.0f) g = __fmul_rn(g, gscale);
        float pi = p[i];
        if (wd && !(no_decay && no_decay[i])) pi = __fmul_rn(pi, decay);
        float mi = fmaf(w1, g - m[i], m[i]);
        float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(w2, __fmul_rn(g, g)));
        float denom = __fadd_rn(__fdiv_rn(sqrtf(vi), bc2_sqrt), eps);
        pi = __fadd_rn(pi, __fmul_rn(-step_size, __fdiv_rn(mi, denom)));
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        pb[i] = __float2bfloat16(pi);
    }
}

__global__ void grad_sumsq_kernel1(double *out, const float *g, size_t n) {
    __shared__ double red[32];
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        s += (double)g[i] * (double)g[i];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    if (lane == 0) red[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < nw ? red[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) atomicAdd(out, s);
    }
}

__global__ void cast_bf16_kernel1(floatX *dst, const float *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16(src[i]);
}

static int grid_for(size_t N, int cap) {
    size_t b = (N + 255) / 256;
    return (int)(b < (size_t)cap ? (b ? b : 1) : (size_t)cap);
}

int adamw_update(float *p, floatX *pb, float *m, float *v, const float *grads,
                 const unsigned char *no_decay, size_t n, float gscale, int wd, float decay,
                 float w1, float b2, float w2, float step_size, float bc2_sqrt, float eps,
                 cudaStream_t stream) {
    adamw_kernel1<<<grid_for(n, 65535), 256, 0, stream>>>(p, pb, m, v, grads, no_decay, n, gscale,
                                                          wd, decay, w1, b2, w2, step_size,
                                                          bc2_sqrt, eps);
    return CUDA_CHECK_LAUNCH();
}

int grad_sumsq(double *out, const float *g, size_t n, cudaStream_t stream) {
    grad_sumsq_kernel1<<<grid_for(n, 1024), 256, 0, stream>>>(out, g, n);
    return CUDA_CHECK_LAUNCH();
}

int cast_bf16(floatX *dst, const float *src, size_t n, cudaStream_t stream) {
    cast_bf16_kernel1<<<grid_for(n, 65535), 256, 0, stream>>>(dst, src, n);
    return CUDA_CHECK_LAUNCH();
}

}  // namespace cllm_train
