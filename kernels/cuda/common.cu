/* common.cu: the checked-call helpers of common.h. Each records one line with
 * cllm_error and returns the code: CLLM_ENOMEM for allocation failures,
 * CLLM_EUNSUP when there is no usable device or driver, CLLM_EIO for any other
 * device failure (the CUDA or cuBLAS error text says which). */
#include "common.h"

static int code_of(cudaError_t e) {
    switch (e) {
    case cudaErrorMemoryAllocation: return CLLM_ENOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice: return CLLM_EUNSUP;
    default: return CLLM_EIO;
    }
}

int cuda_check_(cudaError_t e, const char *call, const char *file, int line) {
    if (e == cudaSuccess) return 0;
    return cllm_error(code_of(e), "%s:%d: %s: CUDA error %d (%s): %s", file, line, call, (int)e,
                      cudaGetErrorName(e), cudaGetErrorString(e));
}

int cublas_check_(cublasStatus_t s, const char *call, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    int code = s == CUBLAS_STATUS_ALLOC_FAILED ? CLLM_ENOMEM
             : s == CUBLAS_STATUS_NOT_INITIALIZED || s == CUBLAS_STATUS_ARCH_MISMATCH ? CLLM_EUNSUP
             : CLLM_EIO;
    return cllm_error(code, "%s:%d: %s: cuBLAS status %d (%s)", file, line, call, (int)s,
                      cublasGetStatusString(s));
}

int cuda_malloc_(void **p, size_t n, const char *what, const char *file, int line) {
    *p = NULL;
    cudaError_t e = cudaMalloc(p, n);
    if (e == cudaSuccess) return 0;
    *p = NULL;
    size_t fr = 0, tot = 0;
    cudaError_t e2 = cudaMemGetInfo(&fr, &tot);
    if (e2 != cudaSuccess) fr = tot = 0;
    (void)cudaGetLastError();  /* clear a non-sticky allocation error */
    return cllm_error(code_of(e),
                      "%s:%d: cudaMalloc(%zu bytes) for %s: %s (device memory: %zu MiB free of %zu MiB)",
                      file, line, n, what, cudaGetErrorString(e), fr >> 20, tot >> 20);
}
