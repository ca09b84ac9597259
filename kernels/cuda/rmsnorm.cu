/* rmsnorm.cu: RMSNorm (HF LlamaRMSNorm, fp32) into the bf16 input of the next
 * matrix product, alone or fused with the residual add before it.
 *   x[src] += proj[src]          (residual_rmsnorm only)
 *   xn[r] = x[src] * rsqrt(mean(x[src]^2) + eps) * weight
 * with the row gather src(i) = rows ? rows[i] : i of kernels_cuda.h.
 * kernel1: one block of RN_THREADS per output row; thread t takes elements
 * t, t + RN_THREADS, ... (PER of them, a template argument: at most PER *
 * RN_THREADS = C_max). The row's sum of squares is reduced in fp32 (the CPU
 * sums in double; the difference is far below bf16's). Every load comes
 * before the first use and store (the weights even before the wait for the
 * predecessor: nothing writes them), as unconditional loads (an element past
 * C reads element 0, unused): a strided loop's load, add and store, element
 * by element, made each element a trip to L2 of its own, and predicated loads
 * run out of predicate registers. The sums are the same as that loop's (each
 * thread adds its elements in order), so the bits are too. */
#include "kernels_cuda.h"

enum { RN_THREADS = 256, RN_MAX_C = 32 * RN_THREADS };

/* xn (n, C); x (R, C); proj (R, C) or NULL; weight (C); rows (n) or NULL; C <= PER RN_THREADS */
template <int PER>
__global__ void __launch_bounds__(RN_THREADS)
rmsnorm_forward_kernel1(floatX *xn, float *x, const float *proj, const float *weight, const int *rows, int C,
                        float eps) {
    __shared__ float red[32];
    float wv[PER], v[PER];
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int i = threadIdx.x + k * RN_THREADS;
        wv[k] = weight[i < C ? i : 0];
    }
    pdl_wait();
    pdl_launch_dependents();
    int r = blockIdx.x;
    size_t src = rows ? (size_t)rows[r] : (size_t)r;
    float *xr = x + src * C;
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int i = threadIdx.x + k * RN_THREADS;
        v[k] = xr[i < C ? i : 0];
    }
    if (proj) {
        const float *pr = proj + src * C;
        float p[PER];
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int i = threadIdx.x + k * RN_THREADS;
            p[k] = pr[i < C ? i : 0];
        }
#pragma unroll
        for (int k = 0; k < PER; k++) {
            int i = threadIdx.x + k * RN_THREADS;
            v[k] += p[k];
            if (i < C) xr[i] = v[k];
        }
    }
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < PER; k++)
        if ((int)threadIdx.x + k * RN_THREADS < C) ss += v[k] * v[k];
    ss = block_sum(ss, red);
    float rs = 1.0f / sqrtf(ss / (float)C + eps);
    floatX *o = xn + (size_t)r * C;
#pragma unroll
    for (int k = 0; k < PER; k++) {
        int i = threadIdx.x + k * RN_THREADS;
        if (i < C) o[i] = __float2bfloat16((v[k] * rs) * wv[k]);
    }
}

int rmsnorm_forward(floatX *xn, const float *x, const float *weight, const int *rows, int n,
                    int C, float eps, int pdl, cudaStream_t stream) {
    /* x is only read when proj is NULL */
    return residual_rmsnorm_forward(xn, const_cast<float *>(x), NULL, weight, rows, n, C, eps, pdl, stream);
}

int residual_rmsnorm_forward(floatX *xn, float *x, const float *proj, const float *weight,
                             const int *rows, int n, int C, float eps, int pdl, cudaStream_t stream) {
#define RN_LAUNCH(PER)                                                                                       \
    return launch_kernel("rmsnorm_forward_kernel1", rmsnorm_forward_kernel1<PER>, dim3(n), dim3(RN_THREADS), 0, \
                         stream, pdl, xn, x, proj, weight, rows, C, eps)
    if (C < 1 || C > RN_MAX_C) return cllm_error(CLLM_EUNSUP, "CUDA RMSNorm: width %d (1..%d supported)", C, RN_MAX_C);
    if (C <= 4 * RN_THREADS) RN_LAUNCH(4);
    if (C <= 8 * RN_THREADS) RN_LAUNCH(8);
    if (C <= 16 * RN_THREADS) RN_LAUNCH(16);
    RN_LAUNCH(32);
#undef RN_LAUNCH
}
