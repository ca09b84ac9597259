/* flash_tile.h: the building blocks of the tiled (flash-attention 2)
 * attention kernels on the tensor cores, shared by the inference kernel
 * (attention.cu, kernel2) and the training ones (train/attention_flash.cu).
 *
 * A warp holds 16 query rows as one mma A tile (fragments of common.h's
 * mma_bf16_16816 layout: lane 4g + t holds rows g and g + 8); keys, values
 * (and for the backward q, do) come in tiles of FLASH_TILE rows staged in
 * shared memory row-major (n, HS + 8) or transposed (HS, n + 8): the + 8
 * puts the 8 rows a fragment load reads in distinct banks. Accumulators are
 * (16 x 8) n-tiles of 4 floats per lane: x[0..1] row g, x[2..3] row g + 8,
 * columns 2t, 2t + 1. */
#ifndef CLLM_CUDA_FLASH_TILE_H
#define CLLM_CUDA_FLASH_TILE_H

#include "common.h"

enum { FLASH_TILE = 64 };   /* keys a forward tile */

/* Rows [0, n) of a bf16 matrix with row stride ld, columns [0, HS), into
 * shared memory: dst (n, HS + 8) and/or dstT (HS, n + 8) transposed; rows at
 * or after `valid` are zeros. Every thread of the block calls it. */
/* One 16-byte chunk v (row r, columns c .. c + 7 of an n-row tile) into dst
 * and/or dstT, as load_tile lays them out. */
template <int HS>
__device__ __forceinline__ void tile_store_chunk(floatX *dst, floatX *dstT, int n, int r, int c, uint4 v) {
    if (dst) *reinterpret_cast<uint4 *>(dst + (size_t)r * (HS + 8) + c) = v;
    if (dstT) {
        const floatX *e = reinterpret_cast<const floatX *>(&v);
#pragma unroll
        for (int k = 0; k < 8; k++) dstT[(size_t)(c + k) * (n + 8) + r] = e[k];
    }
}

template <int HS>
__device__ __forceinline__ void load_tile(floatX *dst, floatX *dstT, int n, const floatX *src, size_t ld,
                                          int valid) {
    constexpr int CH = HS / 8;   /* 16-byte chunks a row */
    for (int i = threadIdx.x; i < n * CH; i += blockDim.x) {
        int r = i / CH, c = (i % CH) * 8;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (r < valid) v = *reinterpret_cast<const uint4 *>(src + (size_t)r * ld + c);
        tile_store_chunk<HS>(dst, dstT, n, r, c, v);
    }
}

/* load_tile in two halves, so that a tile's global loads are in flight while
 * the block works on the previous tile: tile_fetch loads a block of THREADS
 * threads' share of rows [0, N) (thread t: chunks t + THREADS j, as
 * load_tile's loop) into registers, all loads issued before any is used;
 * tile_put stores them as load_tile would. The same elements land in the
 * same places: the kernel's results do not change. */
template <int HS, int N, int THREADS>
struct tile_regs {
    static constexpr int CH = HS / 8, PER = (N * CH + THREADS - 1) / THREADS;
    uint4 v[PER];
};

template <int HS, int N, int THREADS>
__device__ __forceinline__ void tile_fetch(tile_regs<HS, N, THREADS> &t, const floatX *src, size_t ld, int valid) {
    typedef tile_regs<HS, N, THREADS> T;
#pragma unroll
    for (int j = 0; j < T::PER; j++) {
        int i = threadIdx.x + THREADS * j, r = i / T::CH, c = (i % T::CH) * 8;
        t.v[j] = make_uint4(0u, 0u, 0u, 0u);
        if (i < N * T::CH && r < valid) t.v[j] = *reinterpret_cast<const uint4 *>(src + (size_t)r * ld + c);
    }
}

template <int HS, int N, int THREADS>
__device__ __forceinline__ void tile_put(const tile_regs<HS, N, THREADS> &t, floatX *dst, floatX *dstT) {
    typedef tile_regs<HS, N, THREADS> T;
#pragma unroll
    for (int j = 0; j < T::PER; j++) {
        int i = threadIdx.x + THREADS * j, r = i / T::CH, c = (i % T::CH) * 8;
        if (i < N * T::CH) tile_store_chunk<HS>(dst, dstT, N, r, c, t.v[j]);
    }
}

/* B fragment of the n-tile starting at row n0 of a row-major (., stride)
 * shared tile, k-step kk: B[k][n] = tile[n0 + n][16 kk + k]. */
__device__ __forceinline__ void b_frag(unsigned b[2], const floatX *tile, int stride, int n0, int kk) {
    int lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const floatX *p = tile + (size_t)(n0 + g) * stride + 16 * kk + 2 * tq;
    b[0] = ld_bf16x2(p);
    b[1] = ld_bf16x2(p + 8);
}

/* The A fragment of k-step kk from accumulators x[n-tile][4] (16 rows x
 * 8 per n-tile): columns 16 kk .. 16 kk + 15 are n-tiles 2 kk and 2 kk + 1. */
__device__ __forceinline__ void acc_to_a(unsigned a[4], const float x0[4], const float x1[4]) {
    a[0] = pack_bf16x2(x0[0], x0[1]);
    a[1] = pack_bf16x2(x0[2], x0[3]);
    a[2] = pack_bf16x2(x1[0], x1[1]);
    a[3] = pack_bf16x2(x1[2], x1[3]);
}

/* Sum / max over the 4 lanes of a quad (the lanes holding one row of an
 * accumulator). */
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

/* acc (16 x 8) = A (16 x HS: fragments a) times rows n0 .. n0 + 7 of a
 * row-major shared tile (., HS + 8), transposed: S = Q K^T for 8 keys. */
template <int HS>
__device__ __forceinline__ void rows_times_tile(float acc[4], const unsigned a[HS / 16][4], const floatX *tile,
                                                int n0) {
    acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++) {
        unsigned bf[2];
        b_frag(bf, tile, HS + 8, n0, kk);
        mma_bf16_16816(acc, a[kk], bf);
    }
}

/* acc (16 x HS) += X (16 x 16 NK, accumulators x[2 NK][4] rounded to bf16)
 * times a transposed shared tile tT (HS, 16 NK + 8): P V, dS K, ... Only
 * the first kk_end k-steps (the rest of X is zero). */
template <int HS, int NK>
__device__ __forceinline__ void acc_times_tile(float acc[HS / 8][4], const float x[2 * NK][4], const floatX *tT,
                                               int kk_end) {
#pragma unroll
    for (int kk = 0; kk < NK; kk++) {
        if (kk >= kk_end) continue;
        unsigned xa[4];
        acc_to_a(xa, x[2 * kk], x[2 * kk + 1]);
#pragma unroll
        for (int nd = 0; nd < HS / 8; nd++) {
            unsigned bf[2];
            b_frag(bf, tT, 16 * NK + 8, 8 * nd, kk);
            mma_bf16_16816(acc[nd], xa, bf);
        }
    }
}

/* k-steps of a tile starting at key j0 that a warp whose last key is wlast
 * needs (keys after wlast have p = 0) */
__device__ __forceinline__ int kk_needed(int j0, int wlast, int nk) {
    if (wlast < j0) return 0;
    int k = (wlast - j0) / 16 + 1;
    return k > nk ? nk : k;
}

/* One FLASH_TILE-key tile of the forward for a warp's 16 rows: qa the rows'
 * q (bf16 fragments), ks the keys (64, HS + 8), vt the values transposed
 * (HS, 64 + 8), j0 the tile's first key, lim[e] the last key of row g (e 0)
 * and g + 8 (e 1), wlast the warp's largest lim. Updates the online softmax:
 * running max m, the lane's part of the running sum l (quad_sum it at the
 * end), the output o (16 x HS, fp32). */
template <int HS>
__device__ __forceinline__ void flash_forward_tile(const unsigned qa[HS / 16][4], const floatX *ks,
                                                   const floatX *vt, int j0, const int lim[2], int wlast,
                                                   float scale, float m[2], float l[2], float o[HS / 8][4]) {
    int tq = threadIdx.x % 4;
    float s[FLASH_TILE / 8][4], mx[2] = {m[0], m[1]};
    /* every n-tile, also those past the warp's last key (their scores stay -inf: a score is
     * kept only for key <= lim, so the result is the same): with a branch around each, the
     * compiler ran the 8 chains of HS/16 dependent mma one after another; without, it
     * interleaves them (~HS/16 mma latencies for the tile instead of 8 HS/16). HS 128 keeps
     * the branch: without it the inference kernel spills at 255 registers. */
#pragma unroll
    for (int nt = 0; nt < FLASH_TILE / 8; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = -INFINITY;
        if (HS >= 128 && j0 + 8 * nt > wlast) continue;   /* keys after every row of the warp */
        float acc[4];
        rows_times_tile<HS>(acc, qa, ks, 8 * nt);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int key = j0 + 8 * nt + 2 * tq + (i & 1);
            if (key <= lim[i >> 1]) s[nt][i] = acc[i] * scale;
            mx[i >> 1] = fmaxf(mx[i >> 1], s[nt][i]);
        }
    }
    float corr[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        mx[e] = quad_max(mx[e]);
        corr[e] = mx[e] == -INFINITY ? 1.0f : expf(m[e] - mx[e]);   /* 0 after m = -inf */
        m[e] = mx[e];
        l[e] *= corr[e];
    }
#pragma unroll
    for (int nt = 0; nt < FLASH_TILE / 8; nt++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float p = s[nt][i] == -INFINITY ? 0.0f : expf(s[nt][i] - m[i >> 1]);
            s[nt][i] = p;
            l[i >> 1] += p;
        }
#pragma unroll
    for (int nd = 0; nd < HS / 8; nd++)
#pragma unroll
        for (int i = 0; i < 4; i++) o[nd][i] *= corr[i >> 1];
    acc_times_tile<HS, FLASH_TILE / 16>(o, s, vt, kk_needed(j0, wlast, FLASH_TILE / 16));
}

#endif
