/* cuda_runtime.h (cuemu stand-in): the subset of the CUDA runtime that
 * kernels/cuda/ uses, for running the unchanged .cu files on the CPU with g++
 * (tests/cuemu/cuemu.cc implements it; docs/CUDA.md, "CPU emulation").
 *
 * Device side: a kernel is an ordinary function; tests/cuemu/cu2cc rewrites
 * each launch `k<<<grid, block, smem, stream>>>(args)` into
 * cuemu::make_launch(k, "k", grid, block, smem, stream)(args) and each
 * __shared__ declaration into per-block memory, and the runtime runs every
 * CUDA thread of a block as a fiber, so __syncthreads and the warp shuffles
 * are real barriers. __shared__ is deliberately left undefined: a form that
 * cu2cc does not rewrite fails to compile instead of silently becoming a
 * per-thread variable.
 *
 * Host side: the API functions keep CUDA's names, types and error codes
 * (numeric values as in driver_types.h) for what the project calls, and
 * nothing else, so a new call shows up as a link error to be added here. */
#ifndef CUEMU_CUDA_RUNTIME_H
#define CUEMU_CUDA_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

/* ---- vector types: CUDA's alignments, so that UBSan's alignment check
 * catches a misaligned vector load as the GPU would ------------------------ */
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline int2 make_int2(int x, int y) { return int2{x, y}; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

/* ---- runtime types --------------------------------------------------------- */
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoKernelImageForDevice = 209,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorNotReady = 600,
    cudaErrorNotSupported = 801,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureUnmatched = 903,
} cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
};

enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

#define cudaStreamDefault 0x0u
#define cudaStreamNonBlocking 0x1u

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
typedef struct CUgraph_st *cudaGraph_t;
typedef struct CUgraphExec_st *cudaGraphExec_t;

typedef struct cudaUUID_st { char bytes[16]; } cudaUUID_t;

struct cudaDeviceProp {
    char name[256];
    cudaUUID_t uuid;
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    size_t sharedMemPerBlockOptin;
    size_t sharedMemPerMultiprocessor;
    int regsPerBlock;
    int warpSize;
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    int major, minor;
    int multiProcessorCount;
    int maxThreadsPerMultiProcessor;
    int l2CacheSize;
};

/* ---- host API (tests/cuemu/cuemu.cc) ---------------------------------------- */
extern "C" {
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int dev);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);

cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemset(void *p, int value, size_t n);
cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s);

cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);

cudaError_t cudaFuncSetAttribute(const void *fn, cudaFuncAttribute attr, int value);

/* events: the host clock when the stream reaches the record */
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
}

template <class T> static inline cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }
template <class T> static inline cudaError_t cudaMallocHost(T **p, size_t n) {
    return cudaMallocHost((void **)p, n);
}
template <class T> static inline cudaError_t cudaFuncSetAttribute(T *fn, cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute((const void *)fn, attr, value);
}

/* ---- device side --------------------------------------------------------- */
/* The running CUDA thread's index (a pointer into the fiber's record), and
 * the block being run. */
extern uint3 *cuemu_tid_ptr;
extern uint3 cuemu_bid;
extern dim3 cuemu_bdim, cuemu_gdim;
#define threadIdx (*cuemu_tid_ptr)
#define blockIdx cuemu_bid
#define blockDim cuemu_bdim
#define gridDim cuemu_gdim
static const int warpSize = 32;

void __syncthreads(void);
/* programmatic dependent launch: the wait is recorded (a grid launched with
 * programmatic stream serialization fails if a thread never waits); grids run
 * one after another here, so there is nothing to wait for */
void cudaGridDependencySynchronize(void);
void cudaTriggerProgrammaticLaunchCompletion(void);
/* cp.async (16 bytes, global to shared; valid = 0: zeros), commit_group and
 * wait_group n: a copy lands when a wait covers its group (cuemu.cc) */
/* prefetch.global.L2: checks that p is device memory, reads nothing (a
 * prefetch may name what the predecessor of a PDL grid writes) */
void cuemu_prefetch_l2(const void *p);
void cuemu_cp_async16(void *smem, const void *gmem, int valid);
void cuemu_cp_async_commit(void);
void cuemu_cp_async_wait(int n);
enum { CUEMU_SHFL_IDX, CUEMU_SHFL_UP, CUEMU_SHFL_DOWN, CUEMU_SHFL_XOR, CUEMU_SYNCWARP, CUEMU_GATHER };
/* A barrier over the lanes of mask in the current warp; returns the bits that
 * lane src(op, arg, width) passed in. */
uint64_t cuemu_shfl(unsigned mask, uint64_t bits, int op, int arg, int width);
/* Per-block shared memory: the array of the __shared__ declaration `key`
 * (bytes, 0xFF-filled at the block's first use), and the launch's dynamic
 * shared memory (extern __shared__). */
void *cuemu_shared(const void *key, size_t bytes);
void *cuemu_dyn_smem(void);

template <class T> static inline T cuemu_shfl_t(unsigned mask, T v, int op, int arg, int width) {
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    b = cuemu_shfl(mask, b, op, arg, width);
    T r;
    memcpy(&r, &b, sizeof r);
    return r;
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return cuemu_shfl_t(mask, v, CUEMU_SHFL_IDX, src, width);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return cuemu_shfl_t(mask, v, CUEMU_SHFL_UP, (int)d, width);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return cuemu_shfl_t(mask, v, CUEMU_SHFL_DOWN, (int)d, width);
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return cuemu_shfl_t(mask, v, CUEMU_SHFL_XOR, lane_mask, width);
}
static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)cuemu_shfl(mask, 0, CUEMU_SYNCWARP, 0, 32); }
/* cuemu only, for emulating warp-wide instructions (mma.sync) in one
 * barrier instead of a shuffle per operand: every lane of the full warp
 * passes n (1..8) 32-bit words and gets back all 32 lanes' words, lane l's
 * at [8 l], readable until the warp's collective after the next one. */
const uint32_t *cuemu_warp_gather(const uint32_t *words, int n);

/* Atomics: fibers only switch at barriers, so a plain read-modify-write is
 * atomic here. */
#define CUEMU_ATOMIC_ADD(T) \
    static inline T atomicAdd(T *p, T v) { T old = *p; *p = old + v; return old; }
CUEMU_ATOMIC_ADD(int)
CUEMU_ATOMIC_ADD(unsigned)
CUEMU_ATOMIC_ADD(unsigned long long)
CUEMU_ATOMIC_ADD(float)
CUEMU_ATOMIC_ADD(double)
#undef CUEMU_ATOMIC_ADD
static inline int atomicMax(int *p, int v) { int old = *p; if (v > old) *p = v; return old; }
static inline unsigned long long atomicMax(unsigned long long *p, unsigned long long v) {
    unsigned long long old = *p;
    if (v > old) *p = v;
    return old;
}
static inline int atomicMin(int *p, int v) { int old = *p; if (v < old) *p = v; return old; }
static inline int atomicExch(int *p, int v) { int old = *p; *p = v; return old; }
static inline int atomicCAS(int *p, int cmp, int v) { int old = *p; if (old == cmp) *p = v; return old; }
/* Memory order: one memory, and blocks run one after another, so a fence
 * orders nothing here and a load past L1 is a load. */
static inline void __threadfence(void) {}
template <typename T> static inline T __ldcg(const T *p) { return *p; }

/* Math intrinsics: IEEE round-to-nearest operations (the .cu files are built
 * with -ffp-contract=off, so no FMA is formed where the source has none). */
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __fdividef(float a, float b) { return a / b; }
/* __expf, __logf: glibc declares them (its exact versions serve) */
static inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
static inline float __saturatef(float a) { return a < 0.0f ? 0.0f : a > 1.0f ? 1.0f : a; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
template <class T> static inline T __ldg(const T *p) { return *p; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }

/* ---- launches ---------------------------------------------------------------- */
namespace cuemu {
/* Validate the configuration (errors go to cudaGetLastError) and queue the
 * grid on the stream: body runs once per CUDA thread, on its fiber. pdl: the
 * launch allows programmatic stream serialization (its threads must call
 * cudaGridDependencySynchronize). */
cudaError_t launch(const void *fn, const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t s, bool pdl,
                   std::function<void()> body);

template <class... P> struct Launch {
    void (*fn)(P...);
    const char *name;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    bool pdl;
    /* The arguments convert to the kernel's parameter types here, as in a
     * real launch, and are kept by value (graphs replay them). */
    cudaError_t operator()(P... a) const {
        void (*f)(P...) = fn;
        return launch((const void *)f, name, grid, block, smem, stream, pdl, [=]() { f(a...); });
    }
};
template <class... P>
static inline Launch<P...> make_launch(void (*fn)(P...), const char *name, dim3 grid, dim3 block,
                                       size_t smem = 0, cudaStream_t s = 0) {
    return Launch<P...>{fn, name, grid, block, smem, s, false};
}
}  // namespace cuemu

/* cudaLaunchKernelEx with the one attribute the project sets */
enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization = 5 };
struct cudaLaunchAttributeValue {
    int programmaticStreamSerializationAllowed;
};
struct cudaLaunchAttribute {
    cudaLaunchAttributeID id;
    cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
    dim3 gridDim, blockDim;
    size_t dynamicSmemBytes;
    cudaStream_t stream;
    cudaLaunchAttribute *attrs;
    unsigned numAttrs;
};
/* the same with the kernel's name for messages (kernels/cuda/common.h's launcher passes it) */
template <class... P, class... A>
static inline cudaError_t cuemu_launch_ex(const char *name, const cudaLaunchConfig_t *c, void (*k)(P...), A &&...a) {
    bool pdl = false;
    for (unsigned i = 0; i < c->numAttrs; i++)
        if (c->attrs[i].id == cudaLaunchAttributeProgrammaticStreamSerialization)
            pdl = c->attrs[i].val.programmaticStreamSerializationAllowed != 0;
    cuemu::Launch<P...> l{k, name, c->gridDim, c->blockDim, c->dynamicSmemBytes, c->stream, pdl};
    return l(a...);
}
template <class... P, class... A>
static inline cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t *c, void (*k)(P...), A &&...a) {
    return cuemu_launch_ex("cudaLaunchKernelEx", c, k, a...);
}

#endif
