/* embedding.cu: token embedding and its backward, for training.
 *   forward:  out[r] = wte[max(tok[r], 0)]          (fp32 master table)
 *   backward: dwte[tok[r]] += dout[r], tok[r] >= 0   (padded rows skipped)
 * Reading the fp32 master table keeps the residual stream's first value equal
 * to the CPU's. kernel1s: grid-stride loops over the R*C elements (coalesced
 * along C); the backward adds with atomicAdd, since two rows may carry the
 * same token. */
#include "train_kernels.h"

namespace cllm_train {

/* out (R, C); tok (R); wte (V, C) */
__global__ void embedding_forward_kernel1(float *out, const int *tok, const float *wte, size_t N,
                                          int C) {
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < N;
         k += (size_t)gridDim.x * blockDim.x) {
        size_t r = k / C, i = k % C;
        int id = tok[r];
        out[k] = wte[(size_t)(id > 0 ? id : 0) * C + i];
    }
}

/* dwte (V, C) +=; dout (R, C); tok (R) */
__global__ void embedding_backward_kernel1(float *dwte, const float *dout, const int *tok, size_t N,
                                           int C) {
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < N;
         k += (size_t)gridDim.x * blockDim.x) {
        size_t r = k / C, i = k % C;
        int id = tok[r];
        if (id >= 0) atomicAdd(dwte + (size_t)id * C + i, dout[k]);
    }
}

static int grid_for(size_t N) {
    size_t b = (N + 255) / 256;
    return (int)(b < 65535 ? (b ? b : 1) : 65535);
}

int embedding_forward(float *out, const int *tok, const float *wte, int R, int C,
                      cudaStream_t stream) {
    size_t N = (size_t)R * C;
    embedding_forward_kernel1<<<grid_for(N), 256, 0, stream>>>(out, tok, wte, N, C);
    return CUDA_CHECK_LAUNCH();
}

int embedding_backward(float *dwte, const float *dout, const int *tok, int R, int C,
                       cudaStream_t stream) {
    size_t N = (size_t)R * C;
    embedding_backward_kernel1<<<grid_for(N), 256, 0, stream>>>(dwte, dout, tok, N, C);
    return CUDA_CHECK_LAUNCH();
}

}  // namespace cllm_train
