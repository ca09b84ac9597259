/* swiglu.cu: the LLaMA MLP's gate after the one [gate; up] product, and its
 * backward. With g = gate, u = up, s = sigmoid(g):
 *   forward:  h = bf16(g s u)                       (silu(g) = g s)
 *   backward: dgate = dh u s (1 + g (1 - s)),  dup = dh g s   (bf16 out)
 * gate and up are read from the saved bf16 [gate, up] rows, in the forward
 * too, so the backward's recomputed h equals the forward's bit for bit.
 * kernel1s: grid-stride loops over the R*F elements (memory-bound). */
#include "train_kernels.h"

namespace cllm_train {

/* h (R, F); gu (R, 2F) */
__global__ void swiglu_forward_kernel1(floatX *h, const floatX *gu, size_t N, int F) {
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < N;
         k += (size_t)gridDim.x * blockDim.x) {
        size_t r = k / F, i = k % F;
        float g = __bfloat162float(gu[r * 2 * F + i]), u = __bfloat162float(gu[r * 2 * F + F + i]);
        float s = 1.0f / (1.0f + expf(-g));
        h[k] = __float2bfloat16(g * s * u);
    }
}

/* dgu (R, 2F); dh (R, F); gu (R, 2F) */
__global__ void swiglu_backward_kernel1(floatX *dgu, const float *dh, const floatX *gu, size_t N,
                                        int F) {
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < N;
         k += (size_t)gridDim.x * blockDim.x) {
        size_t r = k / F, i = k % F;
        float g = __bfloat162float(gu[r * 2 * F + i]), u = __bfloat162float(gu[r * 2 * F + F + i]);
        float d = dh[k];
        float s = 1.0f / (1.0f + expf(-g));
        dgu[r * 2 * F + i] = __float2bfloat16(d * u * (s * (1.0f + g * (1.0f - s))));
        dgu[r * 2 * F + F + i] = __float2bfloat16(d * g * s);
    }
}

static int grid_for(size_t N) {
    size_t b = (N + 255) / 256;
    return (int)(b < 65535 ? (b ? b : 1) : 65535);
}

int swiglu_forward(floatX *h, const floatX *gu, int R, int F, cudaStream_t stream) {
    size_t N = (size_t)R * F;
    swiglu_forward_kernel1<<<grid_for(N), 256, 0, stream>>>(h, gu, N, F);
    return CUDA_CHECK_LAUNCH();
}

int swiglu_backward(floatX *dgu, const float *dh, const floatX *gu, int R, int F,
                    cudaStream_t stream) {
    size_t N = (size_t)R * F;
    swiglu_backward_kernel1<<<grid_for(N), 256, 0, stream>>>(dgu, dh, gu, N, F);
    return CUDA_CHECK_LAUNCH();
}

}  // namespace cllm_train
