/* common.cu: the checked-call helpers of common.h. Each records one line with
 * cllm_error and returns the code: CLLM_ENOMEM for allocation failures,
 * CLLM_EUNSUP when there is no usable device or driver, CLLM_EIO for any other
 * device failure (the CUDA or cuBLAS error text says which). */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int cuda_malloc_host_(void **p, size_t n, const char *what, const char *file, int line) {
    *p = NULL;
    cudaError_t e = cudaMallocHost(p, n);
    if (e == cudaSuccess) return 0;
    *p = NULL;
    (void)cudaGetLastError();  /* clear a non-sticky allocation error */
    return cllm_error(code_of(e), "%s:%d: cudaMallocHost(%zu bytes) for %s: %s (pinned host memory)", file, line, n,
                      what, cudaGetErrorString(e));
}

/* ---- per-op device times (CLLM_CUDA_PROFILE) ------------------------------ */

int cuda_op_profile_init(cuda_op_profile *p, int on, const char *const *names, int n_ops, int cap) {
    memset(p, 0, sizeof *p);
    if (!on) return 0;
    p->names = names;
    p->n_ops = n_ops;
    p->ev = (cudaEvent_t *)calloc((size_t)cap, sizeof *p->ev);
    p->ev_op = (int *)calloc((size_t)cap, sizeof *p->ev_op);
    p->op_ms = (double *)calloc((size_t)n_ops, sizeof *p->op_ms);
    p->op_n = (unsigned long long *)calloc((size_t)n_ops, sizeof *p->op_n);
    if (!p->ev || !p->ev_op || !p->op_ms || !p->op_n) {
        cuda_op_profile_free(p);
        return cllm_error(CLLM_ENOMEM, "CUDA profile: out of host memory");
    }
    for (int i = 0; i < cap; i++) {
        int rc = CUDA_CHECK(cudaEventCreate(&p->ev[i]));
        if (rc) {
            cuda_op_profile_free(p);
            return rc;
        }
        p->cap = i + 1;
    }
    p->on = 1;
    return 0;
}

void cuda_op_profile_mark(cuda_op_profile *p, int op, cudaStream_t stream) {
    if (!p->on) return;
    if (op < 0) p->n_ev = 0;
    if (p->n_ev >= p->cap) {
        p->dropped++;
        return;
    }
    if (cudaEventRecord(p->ev[p->n_ev], stream) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    p->ev_op[p->n_ev++] = op;
}

void cuda_op_profile_collect(cuda_op_profile *p) {
    if (!p->on) return;
    for (int k = 1; k < p->n_ev; k++) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, p->ev[k - 1], p->ev[k]) != cudaSuccess) {
            (void)cudaGetLastError();
            continue;
        }
        int op = p->ev_op[k];
        if (op >= 0 && op < p->n_ops) {
            p->op_ms[op] += ms;
            p->op_n[op]++;
        }
    }
    p->n_ev = 0;
}

void cuda_op_profile_print(const cuda_op_profile *p, const char *what) {
    if (!p->on) return;
    double total = 0.0;
    for (int i = 0; i < p->n_ops; i++) total += p->op_ms[i];
    fprintf(stderr, "cllm: CUDA %s ops, device time (events): %.3f s in all", what, total / 1e3);
    if (p->dropped) fprintf(stderr, " (%llu ops past the event capacity not timed)", p->dropped);
    fputc('\n', stderr);
    for (int i = 0; i < p->n_ops; i++)
        if (p->op_n[i])
            fprintf(stderr, "cllm:   %-15s %9.3f ms %5.1f %%  %8.2f us per op\n", p->names[i], p->op_ms[i],
                    total > 0 ? 100.0 * p->op_ms[i] / total : 0.0, 1e3 * p->op_ms[i] / (double)p->op_n[i]);
}

void cuda_op_profile_free(cuda_op_profile *p) {
    for (int i = 0; p->ev && i < p->cap; i++) (void)cudaEventDestroy(p->ev[i]);
    free(p->ev);
    free(p->ev_op);
    free(p->op_ms);
    free(p->op_n);
    memset(p, 0, sizeof *p);
}
