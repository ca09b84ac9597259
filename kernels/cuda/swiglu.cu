/* swiglu.cu: the LLaMA MLP's gate, fused after the one [gate; up] product.
 *   h[r, i] = bf16(silu(gu[r, i]) * gu[r, F + i]),  silu(z) = z / (1 + exp(-z))
 * kernel1: a grid-stride loop over the R*F outputs (each read once, written
 * once: memory-bound, coalesced). The element is epilogue.h's silu_mul, as
 * in the products that fuse this op. */
#include "epilogue.h"

/* h (R, F); gu (R, 2F) */
__global__ void swiglu_forward_kernel1(floatX *h, const float *gu, size_t N, int F) {
    pdl_wait();
    pdl_launch_dependents();
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < N;
         k += (size_t)gridDim.x * blockDim.x) {
        size_t r = k / F, i = k % F;
        float g = gu[r * 2 * F + i], u = gu[r * 2 * F + F + i];
        h[k] = __float2bfloat16(silu_mul(g, u));
    }
}

int swiglu_forward(floatX *h, const float *gu, int R, int F, int pdl, cudaStream_t stream) {
    size_t N = (size_t)R * F;
    int blocks = (int)((N + 255) / 256);
    if (blocks > 65535) blocks = 65535;
    return launch_kernel("swiglu_forward_kernel1", swiglu_forward_kernel1, dim3(blocks), dim3(256), 0, stream, pdl,
                         h, gu, N, F);
}
