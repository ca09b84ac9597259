/* cuda_fp16.h (cuemu stand-in): only so that headers which include it (nccl.h)
 * compile against the emulator instead of the real CUDA headers; no kernel
 * of the project uses fp16. */
#ifndef CUEMU_CUDA_FP16_H
#define CUEMU_CUDA_FP16_H
#include "cuda_runtime.h"
struct alignas(2) __half {
    unsigned short __x;
};
#endif
