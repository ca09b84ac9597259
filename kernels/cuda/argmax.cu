/* argmax.cu: greedy choice per row on the device, so only token ids cross to
 * the host. The lowest id wins a tie, as argmax_forward on the CPU and
 * torch.argmax do; NaN never wins (comparisons with NaN are false).
 * kernel1: one block of 512 threads per row; each thread scans a strided
 * slice keeping (value, id), then a warp-shuffle and shared-memory reduction
 * with the rule "larger value, or equal value and lower id"; the winner
 * leaves as its argmax_key (kernels_cuda.h), as the LM head's fused argmax
 * (matmul16.cu) gives it. */
#include "kernels_cuda.h"

__device__ __forceinline__ void better(float &v, int &i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) { v = v2; i = i2; }
}

/* keys (R): argmax_key of the winner, 0 for none; logits (R, V) */
__global__ void argmax_forward_kernel1(argmax_key_t *keys, const float *logits, int V) {
    __shared__ float sv[32];
    __shared__ int si[32];
    pdl_wait();
    pdl_launch_dependents();
    const float *row = logits + (size_t)blockIdx.x * V;
    float v = -INFINITY;
    int id = 0x7fffffff;
    for (int k = threadIdx.x; k < V; k += blockDim.x) better(v, id, row[k], k);
    for (int o = 16; o > 0; o >>= 1)
        better(v, id, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, id, o));
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    if (lane == 0) { sv[warp] = v; si[warp] = id; }
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? sv[lane] : -INFINITY;
        id = lane < nw ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1)
            better(v, id, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, id, o));
        /* a row of NaN only: key 0, read as id 0, as the CPU's scan gives */
        if (lane == 0) keys[blockIdx.x] = id == 0x7fffffff ? 0ull : argmax_key(v, id);
    }
}

int argmax_forward(argmax_key_t *keys, const float *logits, int R, int V, int pdl, cudaStream_t stream) {
    return launch_kernel("argmax_forward_kernel1", argmax_forward_kernel1, dim3(R), dim3(512), 0, stream, pdl, keys,
                         logits, V);
}
