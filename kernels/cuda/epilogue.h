/* epilogue.h: the ops fused after a matrix product, shared by the two
 * tensor-core products that fuse them: matmul16.cu (calls of up to 16 rows)
 * and matmul.cu's fixed-order kernel (any number of rows). A fused op
 * computes each element with the same function as its own kernel
 * (swiglu.cu, rope.cu), so fusing it changes no bit: the products' sums are
 * the only difference between routes.
 *
 * Output groups. Both kernels produce outputs in groups of 16: two n-tiles
 * of 8 columns each (mma m16n8k16), fed by 16 W rows. For a plain product
 * group grp is outputs 16 grp .. 16 grp + 15 (W rows the same). For the
 * fused epilogues an element and its partner must land in the same lane:
 *   EPI_SWIGLU    W is [Wgate; Wup] (2F, K), units = F: group grp is the 8
 *                 outputs 8 grp .. 8 grp + 7, n-tile 0 their gate rows and
 *                 n-tile 1 their up rows (F + 8 grp ..).
 *   EPI_QKV_ROPE  W is Wqkv, units = QKV: within each of the NH + NKV
 *                 rotated heads, rope_dim/16 pair groups (dims 8j .. 8j + 7
 *                 in n-tile 0, their RoPE partners + rope_dim/2 in n-tile 1),
 *                 then (HS - rope_dim)/16 plain groups of 16 dims; then the
 *                 v part, KD/16 plain groups (qkv_rope_fusable).
 * Column c (0..7) of n-tile 0 is output col0 + c, of n-tile 1 col1 + c. */
#ifndef CLLM_CUDA_EPILOGUE_H
#define CLLM_CUDA_EPILOGUE_H

#include "kernels_cuda.h"

/* what the product's epilogue does with its result d:
 *   EPI_F32       out[r, o] = d                               out (R, units) fp32
 *   EPI_ADD       x[r, o] += d  (the residual add)            x (R, units) fp32
 *   EPI_SWIGLU    h[r, o] = bf16(silu(d_gate) d_up)           h (R, units) bf16
 *   EPI_QKV_ROPE  bias, RoPE, q and the cache writes          qkv_rope_args
 *   EPI_ARGMAX    the row's argmax key (atomicMax), nothing written per output */
enum { EPI_F32, EPI_ADD, EPI_SWIGLU, EPI_QKV_ROPE, EPI_ARGMAX };

struct rope_group {
    int col0, col1, rotate, dim0;   /* dim0: dim within the head of col0 (rotated groups) */
};

__host__ __device__ static inline int rope_groups(const qkv_rope_args &ra) {
    int per_head = ra.rope_dim / 16 + (ra.HS - ra.rope_dim) / 16;
    return (ra.NH + ra.NKV) * per_head + ra.NKV * ra.HS / 16;
}

__host__ __device__ static inline rope_group rope_group_at(const qkv_rope_args &ra, int grp) {
    int pairs = ra.rope_dim / 16, per_head = pairs + (ra.HS - ra.rope_dim) / 16, nqk = ra.NH + ra.NKV;
    rope_group rg;
    if (grp < nqk * per_head) {
        int head = grp / per_head, j = grp % per_head;
        rg.rotate = j < pairs;
        rg.dim0 = rg.rotate ? 8 * j : ra.rope_dim + 16 * (j - pairs);
        rg.col0 = head * ra.HS + rg.dim0;
        rg.col1 = rg.col0 + (rg.rotate ? ra.rope_dim / 2 : 8);
    } else {
        rg.rotate = 0;
        rg.dim0 = 0;
        rg.col0 = nqk * ra.HS + 16 * (grp - nqk * per_head);
        rg.col1 = rg.col0 + 8;
    }
    return rg;
}

/* The output groups of a product with `units` outputs */
template <int OUT>
__host__ __device__ static inline int out_groups(int units, const qkv_rope_args &ra) {
    return OUT == EPI_SWIGLU ? units / 8 : OUT == EPI_QKV_ROPE ? rope_groups(ra) : (units + 15) / 16;
}

/* The W row feeding column g of n-tile nt in output group grp (rg: the
 * group's rope_group, for EPI_QKV_ROPE) */
template <int OUT>
__host__ __device__ static inline int group_w_row(int grp, int nt, int g, int units, const rope_group &rg) {
    if (OUT == EPI_SWIGLU) return (nt ? units : 0) + grp * 8 + g;   /* gate, up */
    if (OUT == EPI_QKV_ROPE) return (nt ? rg.col1 : rg.col0) + g;
    return grp * 16 + nt * 8 + g;
}

/* W rows a product reads: [Wgate; Wup] has two per output */
template <int OUT>
__host__ __device__ static inline int w_rows(int units) { return OUT == EPI_SWIGLU ? 2 * units : units; }

/* silu(g) u, silu(z) = z / (1 + exp(-z)) (swiglu.cu's element) */
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

/* HF half-split RoPE of a pair (x, partner) at angle (float)pos * inv_freq
 * (fp32; rope_sincos): x c - partner s for the first half's element,
 * x c + partner s for the second's. The roundings are explicit (no fused
 * multiply-add, which the compiler may or may not form per call site), so
 * rope.cu and the fused epilogues agree bit for bit. */
__device__ __forceinline__ void rope_sincos(int pos, float inv_freq, float *sn, float *cs) {
    sincosf(__fmul_rn((float)pos, inv_freq), sn, cs);
}
__device__ __forceinline__ float rope_rotate(float x, float partner, float sn, float cs, int second_half) {
    float a = __fmul_rn(x, cs), b = __fmul_rn(partner, sn);
    return second_half ? __fadd_rn(a, b) : __fsub_rn(a, b);
}

/* Row r's outputs col0 + c and col1 + c of group rg, z0 and z1 (bias not
 * yet added): bias, RoPE (rotated groups), then q (fp32) or the cache row
 * (slot, pos) (bf16), as rope.cu. What it reads from memory comes in
 * (qkv_rope_in): the row's position and cache slot, the columns' biases
 * and inverse frequency, so that a caller with many outputs a thread loads
 * them all before its first store (a load after a store the compiler cannot
 * tell apart waits for it: one trip to L2 per output). */
typedef struct qkv_rope_in {
    int pos, slot;
    float b0, b1, inv;   /* bias[col0 + c], bias[col1 + c] (0 without bias), inv_freq[dim0 + c] (rotated) */
} qkv_rope_in;

/* The columns' part; a group that does not rotate reads inv_freq[0] (unused):
 * unconditional loads, which a caller can issue together */
__device__ __forceinline__ void qkv_rope_load_cols(const qkv_rope_args &ra, const rope_group &rg, int c,
                                                   qkv_rope_in *in) {
    in->b0 = ra.bias ? ra.bias[rg.col0 + c] : 0.0f;
    in->b1 = ra.bias ? ra.bias[rg.col1 + c] : 0.0f;
    in->inv = ra.inv_freq[rg.rotate ? rg.dim0 + c : 0];
}

__device__ __forceinline__ void qkv_rope_put(const qkv_rope_args &ra, int r, const rope_group &rg, int c, float z0,
                                             float z1, const qkv_rope_in &in) {
    int col0 = rg.col0 + c, col1 = rg.col1 + c;
    if (ra.bias) {
        z0 += in.b0;
        z1 += in.b1;
    }
    if (rg.rotate) {
        float sn, cs;
        rope_sincos(in.pos, in.inv, &sn, &cs);
        float r0 = rope_rotate(z0, z1, sn, cs, 0), r1 = rope_rotate(z1, z0, sn, cs, 1);
        z0 = r0;
        z1 = r1;
    }
    int QD = ra.NH * ra.HS, KD = ra.NKV * ra.HS;
    size_t crow = ((size_t)in.slot * ra.cap + in.pos) * KD;
    float z[2] = {z0, z1};
    int col[2] = {col0, col1};
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
        if (col[nt] < QD) ra.q[(size_t)r * QD + col[nt]] = z[nt];
        else if (col[nt] < QD + KD) ra.kc[crow + (col[nt] - QD)] = __float2bfloat16(z[nt]);
        else ra.vc[crow + (col[nt] - QD - KD)] = __float2bfloat16(z[nt]);
    }
}

/* One output pair, its inputs loaded here (callers with one or two a thread). */
__device__ __forceinline__ void qkv_rope_store(const qkv_rope_args &ra, int r, const rope_group &rg, int c, float z0,
                                               float z1) {
    qkv_rope_in in;
    qkv_rope_load_cols(ra, rg, c, &in);
    in.pos = ra.pos[r];
    in.slot = ra.slot[r];
    qkv_rope_put(ra, r, rg, c, z0, z1, in);
}

#endif
