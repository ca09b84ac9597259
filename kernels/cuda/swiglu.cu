/* swiglu.cu: the LLaMA MLP's gate, fused after the one [gate; up] product.
 *   h[r, i] = bf16(silu(gu[r, i]) * gu[r, F + i]),  silu(z) = z / (1 + exp(-z))
 * kernel1: a grid-stride loop over the R*F outputs (each read once, written
 * once: memory-bound, coalesced). */
#include "kernels_cuda.h"

/* h (R, F); gu (R, 2F) */
__global__ void swiglu_forward_kernel1(floatX *h, const float *gu, size_t N, int F) {
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < N;
         k += (size_t)gridDim.x * blockDim.x) {
        size_t r = k / F, i = k % F;
        float g = gu[r * 2 * F + i], u = gu[r * 2 * F + F + i];
        h[k] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
    }
}

int swiglu_forward(floatX *h, const float *gu, int R, int F, cudaStream_t stream) {
    size_t N = (size_t)R * F;
    int blocks = (int)((N + 255) / 256);
    if (blocks > 65535) blocks = 65535;
    swiglu_forward_kernel1<<<blocks, 256, 0, stream>>>(h, gu, N, F);
    return CUDA_CHECK_LAUNCH();
}
