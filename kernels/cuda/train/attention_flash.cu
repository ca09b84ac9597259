/* attention_flash.cu: causal grouped-query self-attention for training on the
 * tensor cores, tiled as flash-attention 2: the same sums as attention.cu
 * (whose comment has the formulas), with k/v (or q/do) tiles in shared
 * memory read by 64 rows at once, and every product an mma.sync m16n8k16
 * (bf16 operands, fp32 accumulation; common.h's mma_bf16_16816; the tile
 * loads, fragment products and the forward's key-tile step are
 * flash_tile.h's, shared with the inference kernel).
 *
 * Shapes: qkv (R, QKV) bf16 after RoPE, the sequences packed (row (b, t)
 * at row0[b] + t, R = row0[B]; T the longest),
 * QKV = QD + 2 KD, head h's q at column h*HS, kv head g's k at QD + g*HS and
 * v at QD + KD + g*HS, g = h / (NH/NKV). HS is a template parameter: 16, 32,
 * 64 or 128 (attention_flash_supported); other head sizes use attention.cu.
 *
 * Forward, grid (ceil(T/64), NH, B): a block of 4 warps owns 64 query rows of one
 * (sequence, head), a warp 16 of them (the mma's M). For each 64-key tile up
 * to the block's last row: the k tile (64, HS) and the v tile transposed
 * (HS, 64) go to shared memory; a warp computes S = Q K^T (16 x 64) from its
 * q fragments (registers, loaded once), masks keys after the row, updates the
 * running max and sum (online softmax, fp32), and adds P V with P rounded to
 * bf16 in registers (the accumulator layout of S is the A layout of P).
 * Saves lse = max + log(sum) per (row, head).
 *
 * Backward, D = do . out per (row, head) (from the bf16 output, as flash
 * attention does; attention.cu computes sum_j p_j dp_j exactly instead):
 *  dq kernel, grid (ceil(T/64), NH, B), a warp per 16 query rows: per key tile,
 *    S = Q K^T, dP = dO V^T, dS = P (dP - D) / sqrt(HS), dQ += dS K
 *    (k row-major and transposed, v row-major in shared memory); writes D.
 *  dk/dv kernel, grid (ceil(T/64), NKV, B), a warp per 16 key rows: for each query
 *    head of the group and each 32-row query tile from the key tile on,
 *    S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T/sqrt(HS) - lse), dS^T as
 *    above, dV += P^T dO, dK += dS^T Q (q and do row-major and transposed in
 *    shared memory); sums over the group's heads in registers, so nothing is
 *    added atomically and the result does not depend on scheduling.
 * P and dS are rounded to bf16 for their products (operands of the tensor
 * cores); every score, exponential, max and sum is fp32.
 *
 * Forks (train_kernels.h): a fork's rows first take the key tiles of their
 * prefix (the parent's rows 0 .. pre - 1, every key visible: lim = pre - 1
 * for every row), then their own causally; in the dk/dv kernel a key tile
 * that reaches into the prefix of its sequence's fork also takes every
 * query tile of the fork (keys < pre visible), after its own, in registers.
 *
 * A tile's rows past its sequence's end (t >= n, the next sequence's rows
 * or past R) are loaded as zeros (so nothing of another sequence meets a
 * row, not even as 0 * NaN), masked out of P and never written; blocks whose
 * 64 rows all lie past the end do nothing.
 *
 * Shared memory (static, < 48 KiB at HS 128): forward 64 (HS + 8) + HS 72
 * bf16; dq 2 BC (HS + 8) + HS (BC + 8), BC = 64 (32 at HS 128); dk/dv
 * 2 * 32 (HS + 8) + 2 HS 40. Row strides of HS + 8 (and 64 + 8, 32 + 8)
 * bf16 put the 8 rows a fragment load reads in distinct banks. */
#include "train_kernels.h"
#include "../flash_tile.h"

namespace cllm_train {

enum { FA_WARPS = 4, FA_TILE = 16 * FA_WARPS, FA_BQ = 32 };
static_assert((int)FA_TILE == (int)FLASH_TILE, "a block's query rows are one forward key tile");

/* The A fragments (16 rows x HS, kk-th 16 columns) of rows r0 + g and
 * r0 + g + 8 of a bf16 matrix (row stride ld, starting at column 0): rows at
 * or after `valid` are zeros. */
template <int HS>
__device__ __forceinline__ void load_a_frags(unsigned a[HS / 16][4], const floatX *src, size_t ld, int r0,
                                             int valid) {
    int lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    int ra = r0 + g, rb = ra + 8;
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++) {
        int c = 16 * kk + 2 * tq;
        a[kk][0] = ra < valid ? ld_bf16x2(src + (size_t)ra * ld + c) : 0u;
        a[kk][1] = rb < valid ? ld_bf16x2(src + (size_t)rb * ld + c) : 0u;
        a[kk][2] = ra < valid ? ld_bf16x2(src + (size_t)ra * ld + c + 8) : 0u;
        a[kk][3] = rb < valid ? ld_bf16x2(src + (size_t)rb * ld + c + 8) : 0u;
    }
}

/* Key tile `it` of a block's loop over keys: a fork's prefix's n_pre tiles
 * first (keys at pk, np of them), then the sequence's own (at own, n of
 * them), `tile` keys each. Returns the tile's first key row; *j0 its first
 * key (counted in its part), *valid the rows there are, *pre 1 in the prefix. */
__device__ __forceinline__ const floatX *key_tile(int it, int n_pre, int tile, const floatX *pk, int np,
                                                  const floatX *own, int n, size_t QKV, int *j0, int *valid,
                                                  int *pre) {
    *pre = it < n_pre;
    *j0 = (*pre ? it : it - n_pre) * tile;
    *valid = (*pre ? np : n) - *j0;
    return (*pre ? pk : own) + (size_t)*j0 * QKV;
}

/* One BC-key tile of the dq kernel for a warp's 16 rows: qa, da the rows'
 * q and do (fragments), ks, vs the tile's k and v (BC, HS + 8), kt k
 * transposed (HS, BC + 8), j0 its first key; row e (g, g + 8) sees keys <=
 * lim[e], wlast the largest; L, D the rows' lse and D. dq += dS K. */
template <int HS, int BC>
__device__ __forceinline__ void dq_tile(float dq[HS / 8][4], const unsigned qa[HS / 16][4],
                                        const unsigned da[HS / 16][4], const floatX *ks, const floatX *vs,
                                        const floatX *kt, int j0, const int lim[2], int wlast, const float L[2],
                                        const float D[2], float scale) {
    int tq = threadIdx.x % 4;
    float ds[BC / 8][4];
#pragma unroll
    for (int nt = 0; nt < BC / 8; nt++) {
        ds[nt][0] = ds[nt][1] = ds[nt][2] = ds[nt][3] = 0.0f;
        if (j0 + 8 * nt > wlast) continue;
        float sacc[4], pacc[4];
        rows_times_tile<HS>(sacc, qa, ks, 8 * nt);
        rows_times_tile<HS>(pacc, da, vs, 8 * nt);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int e = i >> 1, key = j0 + 8 * nt + 2 * tq + (i & 1);
            float p = key <= lim[e] ? expf(sacc[i] * scale - L[e]) : 0.0f;
            ds[nt][i] = p * (pacc[i] - D[e]) * scale;
        }
    }
    acc_times_tile<HS, BC / 16>(dq, ds, kt, kk_needed(j0, wlast, BC / 16));
}

/* One BQ-query tile of the dk/dv kernel for a warp's 16 keys: ka, va the
 * keys' k and v (fragments), qs, dos the tile's q and do (BQ, HS + 8), qt,
 * dot transposed (HS, BQ + 8), s_lse, s_D theirs; q0 the tile's first query
 * (in the keys' sequence: causal, query >= key) or, causal 0, a fork's
 * query (keys < klim visible); queries >= nq are padding. dv += P^T dO,
 * dk += dS^T Q. */
template <int HS>
__device__ __forceinline__ void dkv_tile(float dk[HS / 8][4], float dv[HS / 8][4], const unsigned ka[HS / 16][4],
                                         const unsigned va[HS / 16][4], const floatX *qs, const floatX *dos,
                                         const floatX *qt, const floatX *dot, const float *s_lse, const float *s_D,
                                         int q0, int nq, const int keys[2], int r0, int causal, int klim,
                                         float scale) {
    int tq = threadIdx.x % 4;
    float pt[FA_BQ / 8][4], dst[FA_BQ / 8][4];   /* P^T, dS^T (16 keys x BQ queries) */
#pragma unroll
    for (int nt = 0; nt < FA_BQ / 8; nt++) {
        pt[nt][0] = pt[nt][1] = pt[nt][2] = pt[nt][3] = 0.0f;
        dst[nt][0] = dst[nt][1] = dst[nt][2] = dst[nt][3] = 0.0f;
        if (causal && q0 + 8 * nt + 7 < r0) continue;   /* queries before every key of the warp */
        float sacc[4], pacc[4];
        rows_times_tile<HS>(sacc, ka, qs, 8 * nt);
        rows_times_tile<HS>(pacc, va, dos, 8 * nt);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int qi = 8 * nt + 2 * tq + (i & 1), query = q0 + qi, key = keys[i >> 1];
            int seen = (causal ? query >= key : key < klim) && query < nq;
            float p = seen ? expf(sacc[i] * scale - s_lse[qi]) : 0.0f;
            pt[nt][i] = p;
            dst[nt][i] = p * (pacc[i] - s_D[qi]) * scale;
        }
    }
    acc_times_tile<HS, FA_BQ / 16>(dv, pt, dot, FA_BQ / 16);
    acc_times_tile<HS, FA_BQ / 16>(dk, dst, qt, FA_BQ / 16);
}

/* out (R, QD) bf16 =; lse (R, NH) =; qkv (R, QKV) bf16; row0 (B + 1).
 * grid (ceil(T / 64), NH, B), block 128. */
template <int HS>
__global__ void __launch_bounds__(32 * FA_WARPS)
attention_forward_flash(floatX *out, float *lse, const floatX *qkv, const int *row0, const seq_fork *fork,
                        int NH, int NKV) {
    __shared__ uint4 fa_fwd_smem[(FA_TILE * (HS + 8) + HS * (FA_TILE + 8)) / 8];
    floatX *ks = reinterpret_cast<floatX *>(fa_fwd_smem);   /* (64, HS + 8) */
    floatX *vt = ks + FA_TILE * (HS + 8);                    /* (HS, 64 + 8) */
    int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * FA_TILE, n = row0[b + 1] - row0[b];
    if (q0 >= n) return;   /* past the sequence's end */
    int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, tq = lane % 4;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, kvh = h / (NH / NKV);
    size_t rbase = (size_t)row0[b];
    const floatX *base = qkv + rbase * QKV;
    int r0 = q0 + 16 * w, rows[2] = {r0 + g, r0 + g + 8};
    int last = min(q0 + FA_TILE, n) - 1;   /* the block's last real row */
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, o[HS / 8][4];
#pragma unroll
    for (int nd = 0; nd < HS / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    unsigned qa[HS / 16][4];
    load_a_frags<HS>(qa, base + (size_t)h * HS, QKV, r0, n);
    const float scale = 1.0f / sqrtf((float)HS);

    /* key tiles: a fork's prefix first (every key visible to every row), then the sequence's own */
    const floatX *pk;
    int np = fork_prefix(fork, row0, b, qkv, QKV, QD + (size_t)kvh * HS, &pk);
    int n_pre = (np + FA_TILE - 1) / FA_TILE, n_tiles = n_pre + last / FA_TILE + 1;
    for (int it = 0; it < n_tiles; it++) {
        int j0, valid, pre;
        const floatX *kg =
            key_tile(it, n_pre, FA_TILE, pk, np, base + QD + (size_t)kvh * HS, n, QKV, &j0, &valid, &pre);
        __syncthreads();   /* the previous tile's readers are done */
        load_tile<HS>(ks, nullptr, FA_TILE, kg, QKV, valid);
        load_tile<HS>(nullptr, vt, FA_TILE, kg + KD, QKV, valid);
        __syncthreads();
        if (r0 > last) continue;   /* this warp's rows are all padding */
        int lim[2] = {pre ? np - 1 : rows[0], pre ? np - 1 : rows[1]};   /* (values, not a pointer: registers) */
        flash_forward_tile<HS>(qa, ks, vt, j0, lim, pre ? np - 1 : r0 + 15, scale, m, l, o);
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        int row = rows[e];
        float L = quad_sum(l[e]);
        if (row >= n) continue;
        float inv = 1.0f / L;
        floatX *orow = out + (rbase + row) * QD + (size_t)h * HS;
#pragma unroll
        for (int nd = 0; nd < HS / 8; nd++)
            *reinterpret_cast<unsigned *>(orow + 8 * nd + 2 * tq) =
                pack_bf16x2(o[nd][2 * e] * inv, o[nd][2 * e + 1] * inv);
        if (tq == 0) lse[(rbase + row) * NH + h] = m[e] + logf(L);
    }
}

/* dq part of dqkv (R, QKV) fp32 =; Dsum (R, NH) = do . out; dout, out
 * (R, QD) bf16; qkv (R, QKV) bf16; lse (R, NH). grid (ceil(T / 64), NH, B). */
template <int HS>
__global__ void __launch_bounds__(32 * FA_WARPS)
attention_backward_dq_flash(float *dqkv, float *Dsum, const floatX *dout, const floatX *out,
                            const floatX *qkv, const float *lse, const int *row0, const seq_fork *fork,
                            int NH, int NKV) {
    constexpr int BC = HS <= 64 ? 64 : 32;   /* keys a tile */
    __shared__ uint4 fa_dq_smem[(2 * BC * (HS + 8) + HS * (BC + 8)) / 8];
    floatX *ks = reinterpret_cast<floatX *>(fa_dq_smem);   /* (BC, HS + 8) */
    floatX *vs = ks + BC * (HS + 8);                        /* (BC, HS + 8) */
    floatX *kt = vs + BC * (HS + 8);                        /* (HS, BC + 8) */
    int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * FA_TILE, n = row0[b + 1] - row0[b];
    if (q0 >= n) return;   /* past the sequence's end */
    int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, tq = lane % 4;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, kvh = h / (NH / NKV);
    size_t rbase = (size_t)row0[b];
    const floatX *base = qkv + rbase * QKV;
    int r0 = q0 + 16 * w, rows[2] = {r0 + g, r0 + g + 8};
    int last = min(q0 + FA_TILE, n) - 1;
    unsigned qa[HS / 16][4], da[HS / 16][4];
    load_a_frags<HS>(qa, base + (size_t)h * HS, QKV, r0, n);
    load_a_frags<HS>(da, dout + rbase * QD + (size_t)h * HS, QD, r0, n);
    float D[2] = {0.0f, 0.0f}, L[2];
    {   /* D = do . out, from the same fragment positions of out */
        unsigned oa[HS / 16][4];
        load_a_frags<HS>(oa, out + rbase * QD + (size_t)h * HS, QD, r0, n);
#pragma unroll
        for (int kk = 0; kk < HS / 16; kk++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&da[kk][i]));
                float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&oa[kk][i]));
                D[i & 1] += x.x * y.x + x.y * y.y;
            }
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        D[e] = quad_sum(D[e]);
        L[e] = rows[e] < n ? lse[(rbase + rows[e]) * NH + h] : 0.0f;
    }
    float dq[HS / 8][4];
#pragma unroll
    for (int nd = 0; nd < HS / 8; nd++) dq[nd][0] = dq[nd][1] = dq[nd][2] = dq[nd][3] = 0.0f;
    const float scale = 1.0f / sqrtf((float)HS);

    /* key tiles: a fork's prefix first (every key visible), then the sequence's own */
    const floatX *pk;
    int np = fork_prefix(fork, row0, b, qkv, QKV, QD + (size_t)kvh * HS, &pk);
    int n_pre = (np + BC - 1) / BC, n_tiles = n_pre + last / BC + 1;
    for (int it = 0; it < n_tiles; it++) {
        int j0, valid, pre;
        const floatX *kg = key_tile(it, n_pre, BC, pk, np, base + QD + (size_t)kvh * HS, n, QKV, &j0, &valid,
                                    &pre);
        __syncthreads();
        load_tile<HS>(ks, kt, BC, kg, QKV, valid);
        load_tile<HS>(vs, nullptr, BC, kg + KD, QKV, valid);
        __syncthreads();
        if (r0 > last) continue;
        int lim[2] = {pre ? np - 1 : rows[0], pre ? np - 1 : rows[1]};
        dq_tile<HS, BC>(dq, qa, da, ks, vs, kt, j0, lim, pre ? np - 1 : r0 + 15, L, D, scale);
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        int row = rows[e];
        if (row >= n) continue;
        float *drow = dqkv + (rbase + row) * QKV + (size_t)h * HS;
#pragma unroll
        for (int nd = 0; nd < HS / 8; nd++)
            *reinterpret_cast<float2 *>(drow + 8 * nd + 2 * tq) = make_float2(dq[nd][2 * e], dq[nd][2 * e + 1]);
        if (tq == 0) Dsum[(rbase + row) * NH + h] = D[e];
    }
}

/* dk, dv parts of dqkv (R, QKV) fp32 =; Dsum, lse (R, NH); dout (R, QD) bf16;
 * qkv (R, QKV) bf16. grid (ceil(T / 64), NKV, B): 64 key rows of one kv head. */
template <int HS>
__global__ void __launch_bounds__(32 * FA_WARPS)
attention_backward_dkv_flash(float *dqkv, const float *Dsum, const floatX *dout, const floatX *qkv,
                             const float *lse, const int *row0, const seq_fork *fork, int NH, int NKV) {
    __shared__ uint4 fa_dkv_smem[(2 * FA_BQ * (HS + 8) + 2 * HS * (FA_BQ + 8)) / 8];
    __shared__ float s_lse[FA_BQ], s_D[FA_BQ];
    floatX *qs = reinterpret_cast<floatX *>(fa_dkv_smem);   /* (BQ, HS + 8) */
    floatX *dos = qs + FA_BQ * (HS + 8);                     /* (BQ, HS + 8) */
    floatX *qt = dos + FA_BQ * (HS + 8);                     /* (HS, BQ + 8) */
    floatX *dot = qt + HS * (FA_BQ + 8);                     /* (HS, BQ + 8) */
    int b = blockIdx.z, kvh = blockIdx.y, k0 = blockIdx.x * FA_TILE, n = row0[b + 1] - row0[b];
    if (k0 >= n) return;   /* past the sequence's end */
    int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, tq = lane % 4;
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD, group = NH / NKV;
    size_t rbase = (size_t)row0[b];
    const floatX *base = qkv + rbase * QKV;
    int r0 = k0 + 16 * w, keys[2] = {r0 + g, r0 + g + 8};
    unsigned ka[HS / 16][4], va[HS / 16][4];
    load_a_frags<HS>(ka, base + QD + (size_t)kvh * HS, QKV, r0, n);
    load_a_frags<HS>(va, base + QD + KD + (size_t)kvh * HS, QKV, r0, n);
    float dk[HS / 8][4], dv[HS / 8][4];
#pragma unroll
    for (int nd = 0; nd < HS / 8; nd++)
#pragma unroll
        for (int i = 0; i < 4; i++) dk[nd][i] = dv[nd][i] = 0.0f;
    const float scale = 1.0f / sqrtf((float)HS);
    /* the fork whose prefix this key tile reaches into: all its rows are queries of keys < cpre */
    int child = fork ? fork[b].child : -1, cn = 0, cpre = 0;
    size_t cbase = 0;
    if (child >= 0 && k0 < fork[child].pre) {
        cpre = fork[child].pre;
        cbase = (size_t)row0[child];
        cn = row0[child + 1] - row0[child];
    }

    /* query tiles: the sequence's own from the key tile on, then the fork's */
    int n_own = (n - k0 + FA_BQ - 1) / FA_BQ, n_tiles = n_own + (cn + FA_BQ - 1) / FA_BQ;
    for (int hh = 0; hh < group; hh++) {
        int h = kvh * group + hh;
        for (int it = 0; it < n_tiles; it++) {
            int own = it < n_own, q0 = own ? k0 + it * FA_BQ : (it - n_own) * FA_BQ, nq = own ? n : cn;
            size_t qb = (own ? rbase : cbase) + q0;   /* the tile's first query row */
            __syncthreads();
            load_tile<HS>(qs, qt, FA_BQ, qkv + qb * QKV + (size_t)h * HS, QKV, nq - q0);
            load_tile<HS>(dos, dot, FA_BQ, dout + qb * QD + (size_t)h * HS, QD, nq - q0);
            for (int i = threadIdx.x; i < FA_BQ; i += blockDim.x) {
                int real = q0 + i < nq;
                s_lse[i] = real ? lse[(qb + i) * NH + h] : 0.0f;
                s_D[i] = real ? Dsum[(qb + i) * NH + h] : 0.0f;
            }
            __syncthreads();
            /* padding keys; own queries before the keys; a fork's, keys past its prefix */
            if (r0 >= n || (own ? q0 + FA_BQ - 1 < r0 : r0 >= cpre)) continue;
            dkv_tile<HS>(dk, dv, ka, va, qs, dos, qt, dot, s_lse, s_D, q0, nq, keys, r0, own, cpre, scale);
        }
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        int key = keys[e];
        if (key >= n) continue;
        float *dkr = dqkv + (rbase + key) * QKV + QD + (size_t)kvh * HS, *dvr = dkr + KD;
#pragma unroll
        for (int nd = 0; nd < HS / 8; nd++) {
            int c = 8 * nd + 2 * tq;
            *reinterpret_cast<float2 *>(dkr + c) = make_float2(dk[nd][2 * e], dk[nd][2 * e + 1]);
            *reinterpret_cast<float2 *>(dvr + c) = make_float2(dv[nd][2 * e], dv[nd][2 * e + 1]);
        }
    }
}

int attention_flash_supported(int HS) { return HS == 16 || HS == 32 || HS == 64 || HS == 128; }

int attention_forward_flash_launch(floatX *out, float *lse, const floatX *qkv, const int *row0,
                                   const seq_fork *fork, int B, int T, int NH, int NKV, int HS,
                                   cudaStream_t stream) {
    dim3 grid(ceil_div(T, FA_TILE), NH, B), block(32 * FA_WARPS);
    switch (HS) {
    case 16: attention_forward_flash<16><<<grid, block, 0, stream>>>(out, lse, qkv, row0, fork, NH, NKV); break;
    case 32: attention_forward_flash<32><<<grid, block, 0, stream>>>(out, lse, qkv, row0, fork, NH, NKV); break;
    case 64: attention_forward_flash<64><<<grid, block, 0, stream>>>(out, lse, qkv, row0, fork, NH, NKV); break;
    case 128: attention_forward_flash<128><<<grid, block, 0, stream>>>(out, lse, qkv, row0, fork, NH, NKV); break;
    default: return cllm_error(CLLM_EUNSUP, "training attention (tensor cores): head size %d", HS);
    }
    return CUDA_CHECK_LAUNCH();
}

int attention_backward_flash_launch(float *dqkv, float *Dsum, const floatX *dout, const floatX *out,
                                    const floatX *qkv, const float *lse, const int *row0, const seq_fork *fork,
                                    int B, int T, int NH, int NKV, int HS, cudaStream_t stream) {
    dim3 gq(ceil_div(T, FA_TILE), NH, B), gkv(ceil_div(T, FA_TILE), NKV, B), block(32 * FA_WARPS);
    int rc;
#define FA_BWD(S)                                                                                      \
    attention_backward_dq_flash<S><<<gq, block, 0, stream>>>(dqkv, Dsum, dout, out, qkv, lse, row0, fork, \
                                                             NH, NKV);                                   \
    if ((rc = CUDA_CHECK_LAUNCH())) return rc;                                                         \
    attention_backward_dkv_flash<S><<<gkv, block, 0, stream>>>(dqkv, Dsum, dout, qkv, lse, row0, fork, \
                                                               NH, NKV);                                 \
    break;
    switch (HS) {
    case 16: FA_BWD(16)
    case 32: FA_BWD(32)
    case 64: FA_BWD(64)
    case 128: FA_BWD(128)
    default: return cllm_error(CLLM_EUNSUP, "training attention (tensor cores): head size %d", HS);
    }
#undef FA_BWD
    return CUDA_CHECK_LAUNCH();
}

}  // namespace cllm_train
