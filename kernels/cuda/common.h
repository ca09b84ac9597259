/* common.h: what every CUDA file of cllm shares: the bf16 type, checked CUDA
 * and cuBLAS calls, checked device allocation, small device helpers.
 *
 * Errors: no CUDA call's result is ignored. A failing call is recorded with
 * cllm_error (libcore/err.h) as "file:line: call: CUDA error text" and the
 * caller returns the code; nothing prints, nothing exits. cudaMalloc failures
 * add the bytes asked and cudaMemGetInfo's free/total.
 *   int rc;
 *   if ((rc = CUDA_CHECK(cudaMemcpy(...)))) return rc;
 * Kernel launches are checked with CUDA_CHECK_LAUNCH() (cudaGetLastError).
 *
 * Only .cu files include this header (it needs cuda_runtime.h / cublas).
 */
#ifndef CLLM_CUDA_COMMON_H
#define CLLM_CUDA_COMMON_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>

extern "C" {
#include "err.h"
}

/* Activations and weights on the device. */
typedef __nv_bfloat16 floatX;

/* 0, or the cllm error code (recorded) for a failed CUDA runtime call. */
int cuda_check_(cudaError_t e, const char *call, const char *file, int line);
/* 0, or the cllm error code (recorded) for a failed cuBLAS call. */
int cublas_check_(cublasStatus_t s, const char *call, const char *file, int line);
/* cudaMalloc of n bytes (what: a name for the message); *p = NULL on failure. */
int cuda_malloc_(void **p, size_t n, const char *what, const char *file, int line);

#define CUDA_CHECK(call) cuda_check_((call), #call, __FILE__, __LINE__)
#define CUDA_CHECK_LAUNCH() cuda_check_(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check_((call), #call, __FILE__, __LINE__)
#define CUDA_MALLOC(pp, n, what) cuda_malloc_((void **)(pp), (n), (what), __FILE__, __LINE__)

static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Sum / max over the 32 lanes of a warp; every lane gets the result. */
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over a block of blockDim.x threads (a multiple of 32, <= 1024); every
 * thread gets the result. shared: 32 floats. Contains __syncthreads. */
__device__ __forceinline__ float block_sum(float v, float *shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();                       /* shared may be in use by a previous call */
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nw ? shared[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float *shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nw ? shared[lane] : -INFINITY;
    return warp_max(v);
}

#endif
