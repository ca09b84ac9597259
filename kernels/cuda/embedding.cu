/* embedding.cu: token embedding lookup, bf16 table -> fp32 residual stream.
 *   out[r, i] = wte[tokens[r], i]
 * kernel1: one block per row, threads over C in steps of 2 (bf16x2 loads; C
 * is even for every supported model, an odd tail is handled). */
#include "kernels_cuda.h"

/* out (R, C); tokens (R); wte (V, C) */
__global__ void embedding_forward_kernel1(float *out, const int *tokens, const floatX *wte, int C) {
    int r = blockIdx.x;
    const floatX *row = wte + (size_t)tokens[r] * C;
    float *o = out + (size_t)r * C;
    int C2 = C / 2;
    const __nv_bfloat162 *row2 = reinterpret_cast<const __nv_bfloat162 *>(row);
    for (int i = threadIdx.x; i < C2; i += blockDim.x) {
        float2 v = __bfloat1622float2(row2[i]);
        o[2 * i] = v.x;
        o[2 * i + 1] = v.y;
    }
    if ((C & 1) && threadIdx.x == 0) o[C - 1] = __bfloat162float(row[C - 1]);
}

int embedding_forward(float *out, const int *tokens, const floatX *wte, int R, int C,
                      cudaStream_t stream) {
    /* bf16x2 loads need 4-byte aligned rows: C even (the host checks). */
    embedding_forward_kernel1<<<R, 256, 0, stream>>>(out, tokens, wte, C);
    return CUDA_CHECK_LAUNCH();
}
