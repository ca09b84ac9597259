/* cuda_bf16.h (cuemu stand-in): __nv_bfloat16 and the conversions the
 * kernels use, with the device's rounding: fp32 -> bf16 rounds to nearest
 * even (cvt.rn.bf16.f32), NaN becomes the canonical NaN 0x7FFF; bf16 -> fp32
 * is exact. */
#ifndef CUEMU_CUDA_BF16_H
#define CUEMU_CUDA_BF16_H

#include <stdint.h>
#include <string.h>

#include "cuda_runtime.h"

struct __nv_bfloat16;
static inline __nv_bfloat16 __float2bfloat16(float f);
static inline float __bfloat162float(__nv_bfloat16 h);

struct alignas(2) __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    /* the real header's implicit conversions (host and device) */
    __nv_bfloat16(float f) { *this = __float2bfloat16(f); }
    operator float() const { return __bfloat162float(*this); }
};
struct alignas(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};

static inline __nv_bfloat16 cuemu_bf16_bits(unsigned short b) {
    __nv_bfloat16 h;
    h.__x = b;
    return h;
}
static inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return cuemu_bf16_bits(0x7fff);
    u += 0x7fffu + ((u >> 16) & 1u);
    return cuemu_bf16_bits((unsigned short)(u >> 16));
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
static inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = (uint32_t)h.__x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline float2 __bfloat1622float2(__nv_bfloat162 h) {
    return make_float2(__bfloat162float(h.x), __bfloat162float(h.y));
}
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__float2bfloat16(a), __float2bfloat16(b)};
}
static inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }

#endif
