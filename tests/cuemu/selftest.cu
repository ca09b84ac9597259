/* selftest.cu: the emulator's own test (tests/cuemu/check.sh), a CUDA source
 * built like the project's through cu2cc. `selftest ok` checks what must work
 * (barriers, shuffles, shared memory, NaN-filled allocations, lazy streams,
 * graphs, launch limits, cudaLaunchKernelEx (a PDL grid reading what its
 * predecessor wrote after its wait), cp.async landing at its wait,
 * cublasGemmEx against a naive product); each other
 * mode does one thing the emulator must refuse, and check.sh expects it to
 * abort with the message named there. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

static int failures;
#define EXPECT(c)                                                        \
    do {                                                                 \
        if (!(c)) {                                                      \
            fprintf(stderr, "selftest:%d: expected %s\n", __LINE__, #c); \
            failures++;                                                  \
        }                                                                \
    } while (0)

__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* out[b] = sum over the block of (b + t); also down/idx/up shuffles per warp */
__global__ void reduce_kernel(float *out, int *shfl_ok, int *count) {
    __shared__ float part[32];
    int t = threadIdx.x, lane = t % 32, w = t / 32;
    float v = warp_sum((float)(blockIdx.x + t));
    if (lane == 0) part[w] = v;
    __syncthreads();
    if (t == 0) {
        float s = 0;
        for (int i = 0; i < (int)blockDim.x / 32; i++) s += part[i];
        out[blockIdx.x] = s;
    }
    int down = __shfl_down_sync(0xffffffffu, lane, 1), idx = __shfl_sync(0xffffffffu, lane, 7);
    int up = __shfl_up_sync(0xffffffffu, lane, 2);
    if (down != (lane < 31 ? lane + 1 : lane) || idx != 7 || up != (lane >= 2 ? lane - 2 : lane)) atomicAdd(shfl_ok, 1);
    atomicAdd(count, 1);
}

__global__ void inc_kernel(int *x, const int *add) { *x += *add; }

__global__ void smem_kernel(float *out) {
    extern __shared__ float big[];
    big[threadIdx.x] = 1.0f;
    __syncthreads();
    if (threadIdx.x == 0) out[0] = big[0] + big[blockDim.x - 1];
}

__global__ void exited_lane_kernel(float *out) {
    if (threadIdx.x == 5) return;
    out[threadIdx.x] = warp_sum(1.0f);
}

__global__ void sync_vs_shuffle_kernel(float *out) {
    if (threadIdx.x < 16) __syncthreads();
    else out[threadIdx.x] = warp_sum(1.0f);
}

__global__ void partial_warp_kernel(float *out) { out[threadIdx.x] = warp_sum(1.0f); }

/* launched with programmatic stream serialization: x += add after the wait
 * (wait 1). Refused: never waiting (0), letting the successor launch before
 * waiting (2), writing x (3) or reading add (4) before waiting. */
__global__ void pdl_kernel(int *x, const int *add, int wait) {
    if (wait == 0) return;
    if (wait == 2) cudaTriggerProgrammaticLaunchCompletion();
    if (wait == 3) *x = 0;
    int early = wait == 4 ? *(volatile const int *)add : 0;
    cudaGridDependencySynchronize();
    if (wait == 1) cudaTriggerProgrammaticLaunchCompletion();
    *x += *add + early;
}
static cudaError_t launch_pdl(int *x, const int *add, int wait) {
    cudaLaunchAttribute at[1] = {};
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(1);
    cfg.blockDim = dim3(1);
    cfg.attrs = at;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, pdl_kernel, x, add, wait);
}

/* cp.async lands at the wait that covers its group: out[0] before any wait
 * (the 0xFF fill: NaN), out[1], out[2] after waiting for all but the newest
 * group (the first copy landed, the zero-fill not yet), out[3] after waiting
 * for all (0); wait < 0: exit with a copy in flight */
__global__ void cp_async_kernel(float *out, const float *src, int wait) {
    __shared__ float st[8];   /* the emulator aligns shared arrays to 16 bytes */
    cuemu_cp_async16(st, src, 1);
    cuemu_cp_async_commit();
    out[0] = st[0];
    cuemu_cp_async16(st + 4, src, 0);
    cuemu_cp_async_commit();
    if (wait < 0) return;
    cuemu_cp_async_wait(1);
    out[1] = st[0];
    out[2] = st[4];
    cuemu_cp_async_wait(0);
    out[3] = st[4];
}

static void test_ok(void) {
    float *d_out;
    int *d_cnt, h_cnt[2];
    EXPECT(cudaMalloc(&d_out, 4 * sizeof(float)) == cudaSuccess);
    EXPECT(cudaMalloc(&d_cnt, 2 * sizeof(int)) == cudaSuccess);
    float h[4];
    EXPECT(cudaMemcpy(h, d_out, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    EXPECT(isnan(h[0]) && isnan(h[3]));   /* never written: NaN */
    EXPECT(cudaMemset(d_cnt, 0, 2 * sizeof(int)) == cudaSuccess);
    reduce_kernel<<<4, 96>>>(d_out, d_cnt, d_cnt + 1);
    EXPECT(cudaGetLastError() == cudaSuccess);
    EXPECT(cudaMemcpy(h, d_out, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    EXPECT(cudaMemcpy(h_cnt, d_cnt, sizeof h_cnt, cudaMemcpyDeviceToHost) == cudaSuccess);
    for (int b = 0; b < 4; b++) EXPECT(h[b] == 96.0f * b + 95 * 96 / 2);
    EXPECT(h_cnt[0] == 0 && h_cnt[1] == 4 * 96);

    /* lazy non-blocking stream: nothing lands in pinned memory before the wait */
    cudaStream_t s;
    int *x, *add, *pin;
    EXPECT(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    EXPECT(cudaMalloc(&x, sizeof(int)) == cudaSuccess && cudaMalloc(&add, sizeof(int)) == cudaSuccess);
    EXPECT(cudaMallocHost(&pin, 2 * sizeof(int)) == cudaSuccess);
    pin[0] = 5;
    pin[1] = 0;
    EXPECT(cudaMemsetAsync(x, 0, sizeof(int), s) == cudaSuccess);
    EXPECT(cudaMemcpyAsync(add, pin, sizeof(int), cudaMemcpyHostToDevice, s) == cudaSuccess);
    inc_kernel<<<1, 1, 0, s>>>(x, add);
    EXPECT(cudaMemcpyAsync(pin + 1, x, sizeof(int), cudaMemcpyDeviceToHost, s) == cudaSuccess);
    EXPECT(pin[1] == 0);
    EXPECT(cudaStreamSynchronize(s) == cudaSuccess);
    EXPECT(pin[1] == 5);

    /* a graph replays kernels and reads pinned memory when it runs */
    cudaGraph_t g;
    cudaGraphExec_t ge;
    EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
    EXPECT(cudaMemcpyAsync(add, pin, sizeof(int), cudaMemcpyHostToDevice, s) == cudaSuccess);
    inc_kernel<<<1, 1, 0, s>>>(x, add);
    EXPECT(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);   /* breaks the capture */
    EXPECT(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && !g);
    EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
    EXPECT(cudaMemcpyAsync(add, pin, sizeof(int), cudaMemcpyHostToDevice, s) == cudaSuccess);
    inc_kernel<<<1, 1, 0, s>>>(x, add);
    EXPECT(cudaStreamEndCapture(s, &g) == cudaSuccess);
    EXPECT(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess);
    for (int i = 1; i <= 3; i++) {
        pin[0] = i;
        EXPECT(cudaGraphLaunch(ge, s) == cudaSuccess);
        EXPECT(cudaStreamSynchronize(s) == cudaSuccess);
    }
    EXPECT(cudaMemcpy(h_cnt, x, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess);
    EXPECT(h_cnt[0] == 5 + 1 + 2 + 3);
    EXPECT(cudaGraphExecDestroy(ge) == cudaSuccess && cudaGraphDestroy(g) == cudaSuccess);
    /* cudaLaunchKernelEx with programmatic stream serialization runs the kernel */
    EXPECT(launch_pdl(x, add, 1) == cudaSuccess);
    EXPECT(cudaMemcpy(h_cnt, x, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess);
    EXPECT(h_cnt[0] == 5 + 1 + 2 + 3 + 3);
    /* after a kernel that wrote x and add: reading both after the wait is allowed */
    inc_kernel<<<1, 1>>>(add, x);
    EXPECT(launch_pdl(x, add, 1) == cudaSuccess);
    EXPECT(cudaMemcpy(h_cnt, x, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess);
    EXPECT(h_cnt[0] == 14 + 17);

    /* cp.async: a copy lands at the wait that covers it, not before */
    float src[4] = {3.0f, 4.0f, 5.0f, 6.0f};
    EXPECT(cudaMemcpy(d_out, src, sizeof src, cudaMemcpyHostToDevice) == cudaSuccess);
    float *d_cp;
    EXPECT(cudaMalloc(&d_cp, 4 * sizeof(float)) == cudaSuccess);
    cp_async_kernel<<<1, 1>>>(d_cp, d_out, 1);
    EXPECT(cudaMemcpy(h, d_cp, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    EXPECT(isnan(h[0]) && h[1] == 3.0f && isnan(h[2]) && h[3] == 0.0f);
    cudaFree(d_cp);

    /* dynamic shared memory above 48 KiB needs the attribute */
    smem_kernel<<<1, 128, 64 << 10>>>(d_out);
    EXPECT(cudaGetLastError() == cudaErrorInvalidValue);
    EXPECT(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10) == cudaSuccess);
    smem_kernel<<<1, 128, 64 << 10>>>(d_out);
    EXPECT(cudaGetLastError() == cudaSuccess);
    smem_kernel<<<1, 1025>>>(d_out);
    EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration);

    /* cublasGemmEx: C (m x n) = op(A) op(B), column-major, bf16 in, fp32 out */
    enum { M = 3, N = 2, K = 4 };
    __nv_bfloat16 a[K * M], b[K * N];
    for (int i = 0; i < K * M; i++) a[i] = __float2bfloat16((float)(i % 5) - 2.0f);
    for (int i = 0; i < K * N; i++) b[i] = __float2bfloat16((float)(i % 3) + 0.5f);
    void *da, *db;
    float *dc, c[M * N];
    EXPECT(cudaMalloc(&da, sizeof a) == cudaSuccess && cudaMalloc(&db, sizeof b) == cudaSuccess);
    EXPECT(cudaMalloc(&dc, sizeof c) == cudaSuccess);
    EXPECT(cudaMemcpy(da, a, sizeof a, cudaMemcpyHostToDevice) == cudaSuccess);
    EXPECT(cudaMemcpy(db, b, sizeof b, cudaMemcpyHostToDevice) == cudaSuccess);
    cublasHandle_t hb;
    const float one = 1.0f, zero = 0.0f;
    EXPECT(cublasCreate(&hb) == CUBLAS_STATUS_SUCCESS);
    /* A stored K x M (transa T), B stored K x N (transb N): C = A^T B; C's NaN is not read */
    EXPECT(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, da, CUDA_R_16BF, K, db, CUDA_R_16BF, K, &zero,
                        dc, CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
    EXPECT(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, da, CUDA_R_16BF, K - 1, db, CUDA_R_16BF, K,
                        &zero, dc, CUDA_R_32F, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
    EXPECT(cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost) == cudaSuccess);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float r = 0;
            for (int l = 0; l < K; l++) r += __bfloat162float(a[l + i * K]) * __bfloat162float(b[l + j * K]);
            EXPECT(c[i + j * M] == r);
        }
    EXPECT(__bfloat162float(__float2bfloat16(1.00390625f)) == 1.0f);        /* tie to even: down */
    EXPECT(__bfloat162float(__float2bfloat16(1.01171875f)) == 1.015625f);   /* tie to even: up */
    cublasDestroy(hb);
    cudaStreamDestroy(s);
    cudaFree(da), cudaFree(db), cudaFree(dc), cudaFree(x), cudaFree(add), cudaFree(d_out), cudaFree(d_cnt);
    cudaFreeHost(pin);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "ok";
    float *d;
    cudaMalloc(&d, 64 * sizeof(float));
    if (!strcmp(mode, "ok")) test_ok();
    else if (!strcmp(mode, "exited-lane")) exited_lane_kernel<<<1, 32>>>(d);
    else if (!strcmp(mode, "sync-vs-shuffle")) sync_vs_shuffle_kernel<<<1, 32>>>(d);
    else if (!strcmp(mode, "copy-out-of-bounds")) {
        float h[65];
        cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice);
    } else if (!strcmp(mode, "partial-warp")) partial_warp_kernel<<<1, 16>>>(d);
    else if (!strcmp(mode, "pdl-no-wait")) {
        int *xi;
        cudaMalloc(&xi, 2 * sizeof(int));
        cudaMemset(xi, 0, 2 * sizeof(int));
        launch_pdl(xi, xi + 1, 0);
    }
    else if (!strcmp(mode, "pdl-trigger-first") || !strcmp(mode, "pdl-write-early") ||
             !strcmp(mode, "pdl-read-early")) {
        int *xi, *add;   /* separate allocations: the check works on pages */
        cudaMalloc(&xi, sizeof(int));
        cudaMalloc(&add, sizeof(int));
        cudaMemset(xi, 0, sizeof(int));
        cudaMemset(add, 0, sizeof(int));
        inc_kernel<<<1, 1>>>(add, xi);   /* writes add: the PDL kernel's predecessor */
        launch_pdl(xi, add, !strcmp(mode, "pdl-trigger-first") ? 2 : !strcmp(mode, "pdl-write-early") ? 3 : 4);
    } else if (!strcmp(mode, "cp-async-in-flight")) cp_async_kernel<<<1, 1>>>(d, d + 32, -1);
    else {
        fprintf(stderr, "selftest: unknown mode %s\n", mode);
        return 2;
    }
    cudaDeviceSynchronize();
    cudaFree(d);
    if (failures) fprintf(stderr, "selftest: %d failure(s)\n", failures);
    else printf("selftest %s: ok\n", mode);
    return failures != 0;
}
