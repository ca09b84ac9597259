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
/* cudaMallocHost (pinned host memory) of n bytes, the same way. */
int cuda_malloc_host_(void **p, size_t n, const char *what, const char *file, int line);

#define CUDA_CHECK(call) cuda_check_((call), #call, __FILE__, __LINE__)
#define CUDA_CHECK_LAUNCH() cuda_check_(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check_((call), #call, __FILE__, __LINE__)
#define CUDA_MALLOC(pp, n, what) cuda_malloc_((void **)(pp), (n), (what), __FILE__, __LINE__)
#define CUDA_MALLOC_HOST(pp, n, what) cuda_malloc_host_((void **)(pp), (n), (what), __FILE__, __LINE__)

static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Per-op device times from CUDA events (CLLM_CUDA_PROFILE=1): an event is
 * recorded after each op, and after the stream's synchronisation the time
 * between consecutive events goes to the op that ended it. Names are the
 * ops' (n_ops of them); events past the capacity are not recorded (counted
 * in dropped). Nothing here fails a run: a failed event call only loses
 * that sample. */
typedef struct cuda_op_profile {
    int on, n_ops, cap, n_ev;
    const char *const *names;
    cudaEvent_t *ev;              /* (cap) */
    int *ev_op;                   /* (cap) */
    double *op_ms;                /* (n_ops) */
    unsigned long long *op_n, dropped;
} cuda_op_profile;
/* on = 0: an inactive profile (every call a no-op); else cap events */
int cuda_op_profile_init(cuda_op_profile *p, int on, const char *const *names, int n_ops, int cap);
/* the start mark of a synchronised stretch (op -1), or the end of op */
void cuda_op_profile_mark(cuda_op_profile *p, int op, cudaStream_t stream);
/* after the stream's synchronisation: add up the stretch's events */
void cuda_op_profile_collect(cuda_op_profile *p);
/* "prog: <what> ops, device time (events): ..." and one line per op, stderr */
void cuda_op_profile_print(const cuda_op_profile *p, const char *what);
void cuda_op_profile_free(cuda_op_profile *p);

/* Programmatic dependent launch (sm_90). A kernel launched with pdl set
 * (launch_kernel) may be scheduled while its predecessor in the stream still
 * runs, once every block of the predecessor has called
 * pdl_launch_dependents() (or exited). Until its own pdl_wait() returns it
 * may only read what the kernels it can overlap do not write (weights; a
 * forward call's row tables, copied before the call's first kernel, which is
 * launched without pdl) and write nothing; pdl_wait() returns when the
 * predecessor has finished and its writes are visible (the predecessor
 * itself waited for its own, so all earlier work is done). Every thread of such a kernel calls
 * pdl_wait(), and calls pdl_launch_dependents() only after it (the CPU
 * emulation checks both, and aborts on a touch of what the predecessor
 * wrote, or on any write, before the wait). Launched without pdl, the wait
 * returns at once. What is gained: the kernel's launch and its first loads
 * overlap the predecessor's tail, which at one decoding row is most of a
 * kernel's time (docs/CUDA.md "Where the time goes"). */
__device__ __forceinline__ void pdl_wait(void) {
#if defined(CUEMU_CUDA_RUNTIME_H)
    cudaGridDependencySynchronize();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents(void) {
#if defined(CUEMU_CUDA_RUNTIME_H)
    cudaTriggerProgrammaticLaunchCompletion();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* A hint: the 128-byte line holding p into L2 (p must point into an
 * allocation; the emulation checks that it does). */
__device__ __forceinline__ void prefetch_l2(const void *p) {
#if defined(CUEMU_CUDA_RUNTIME_H)
    cuemu_prefetch_l2(p);
#else
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#endif
}

/* cp.async (sm_80): 16 bytes from global to shared memory without passing
 * through registers, so a tile's loads for the next step are in flight while
 * the current one is used; valid = 0 writes 16 zero bytes instead (gmem must
 * still be a valid address). cp_async_commit() closes the thread's group of
 * copies; cp_async_wait<N>() waits until at most N of its groups are still
 * in flight; a __syncthreads() after it shows the data to the block. The
 * emulation lands a copy only at the wait that covers it (so a read before
 * the wait sees the old contents). */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int valid) {
#if defined(CUEMU_CUDA_RUNTIME_H)
    cuemu_cp_async16(smem, gmem, valid);
#else
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0)
                 : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit(void) {
#if defined(CUEMU_CUDA_RUNTIME_H)
    cuemu_cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait(void) {
#if defined(CUEMU_CUDA_RUNTIME_H)
    cuemu_cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/* Launch k (name: for messages) on grid x block with smem bytes of dynamic
 * shared memory on stream st; pdl: with programmatic stream serialization
 * (above; k must call pdl_wait). 0 or the recorded error. */
template <class... P, class... A>
static inline int launch_kernel(const char *name, void (*k)(P...), dim3 grid, dim3 block, size_t smem,
                                cudaStream_t st, int pdl, A... args) {
    cudaLaunchAttribute attr[1] = {};
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
#ifdef CUEMU_CUDA_RUNTIME_H
    cudaError_t e = cuemu_launch_ex(name, &cfg, k, args...);
#else
    cudaError_t e = cudaLaunchKernelEx(&cfg, k, args...);
#endif
    if (e != cudaSuccess) (void)cudaGetLastError();   /* reported here, not by a later launch's check */
    return cuda_check_(e, name, __FILE__, __LINE__);
}

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

/* Two adjacent bf16 (p 4-byte aligned) as the 32-bit register an mma
 * fragment takes, and two floats rounded into one (lo in the low half, the
 * lower k of a fragment). */
__device__ __forceinline__ unsigned ld_bf16x2(const floatX *p) { return *reinterpret_cast<const unsigned *>(p); }
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const unsigned *>(&v);
}

/* ldmatrix.x4 (sm_75): four 8x8 bf16 matrices from shared memory in one
 * instruction, each lane receiving its mma fragment registers. Lanes 8 m ..
 * 8 m + 7 give the addresses of matrix m's rows 0..7 (16 bytes each, 16-byte
 * aligned); lane l gets in r[m] the two elements of matrix m's row l / 4 at
 * columns 2 (l % 4) and 2 (l % 4) + 1, lower column in the low half: the
 * layout ld_bf16x2 would give lane l reading that row itself, so the
 * registers (and so every result) are the same as with four ld_bf16x2 a
 * lane, in one instruction instead of four. Every lane of the warp must call
 * it. The emulation gathers the warp's row addresses (cuemu_warp_gather) and
 * reads as the PTX ISA says. */
__device__ __forceinline__ void ldsm_x4(unsigned r[4], const floatX *row) {
#if defined(CUEMU_CUDA_RUNTIME_H)
    int lane = threadIdx.x % 32;
    uintptr_t p = (uintptr_t)row;
    uint32_t mine[2] = {(uint32_t)p, (uint32_t)((uint64_t)p >> 32)};
    const uint32_t *all = cuemu_warp_gather(mine, 2);
    for (int m = 0; m < 4; m++) {
        const uint32_t *w = all + 8 * (8 * m + lane / 4);
        const floatX *src = (const floatX *)(uintptr_t)((uint64_t)w[0] | (uint64_t)w[1] << 32);
        r[m] = ld_bf16x2(src + 2 * (lane % 4));
    }
#else
    unsigned s = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#endif
}

/* Tensor cores: d (16x8, fp32) += a (16x16, bf16, row-major) b (16x8, bf16,
 * column-major), mma.sync.m16n8k16 with fp32 accumulation. Fragments as the
 * PTX ISA lays them out for lane = 4*g + t (g = lane / 4, t = lane % 4); each
 * 32-bit register holds two bf16, the lower k in the low half:
 *   a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]
 *   a[2] = A[g][2t+8..+9]    a[3] = A[g+8][2t+8..+9]
 *   b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..+9][g]
 *   d[0..1] = D[g][2t..2t+1] d[2..3] = D[g+8][2t..2t+1]
 * A row's results depend on that row of A alone. Under the CPU emulation
 * (tests/cuemu/) the warp's fragments are gathered in one barrier
 * (cuemu_warp_gather, where 12 shuffles would take 12) and summed in
 * k order in fp32. Every lane of the warp must call it. */
#ifdef CUEMU_CUDA_RUNTIME_H
static inline float bf16_bits_float(unsigned v) {   /* the bf16 in v's low 16 bits */
    unsigned u = (v & 0xffffu) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
#endif
__device__ __forceinline__ void mma_bf16_16816(float d[4], const unsigned a[4], const unsigned b[2]) {
#ifdef CUEMU_CUDA_RUNTIME_H
    int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    float A[2][16], B[2][16];   /* rows g, g+8 of A; columns 2t, 2t+1 of B */
    /* the warp's fragments, in one barrier (what 12 shuffles would give) */
    uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    const uint32_t *all = cuemu_warp_gather(mine, 6);
    for (int tt = 0; tt < 4; tt++) {
        unsigned r[4], c[2][2];
        for (int i = 0; i < 4; i++) r[i] = all[8 * (4 * g + tt) + i];
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < 2; i++) c[j][i] = all[8 * (4 * (2 * t + j) + tt) + 4 + i];
        for (int h = 0; h < 2; h++) {   /* low, high half: k = 2tt + h (+8) */
            A[0][2 * tt + h] = bf16_bits_float(r[0] >> (16 * h));
            A[1][2 * tt + h] = bf16_bits_float(r[1] >> (16 * h));
            A[0][2 * tt + 8 + h] = bf16_bits_float(r[2] >> (16 * h));
            A[1][2 * tt + 8 + h] = bf16_bits_float(r[3] >> (16 * h));
            for (int j = 0; j < 2; j++) {
                B[j][2 * tt + h] = bf16_bits_float(c[j][0] >> (16 * h));
                B[j][2 * tt + 8 + h] = bf16_bits_float(c[j][1] >> (16 * h));
            }
        }
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            float s = 0.0f;
            for (int k = 0; k < 16; k++) s += A[i][k] * B[j][k];
            d[2 * i + j] += s;
        }
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

#endif
