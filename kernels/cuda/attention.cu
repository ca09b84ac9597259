/* attention.cu: causal grouped-query attention of new tokens over the KV
 * cache, several sequences of different lengths in one launch.
 *
 * For row r, head h, kv head g = h / (NH/NKV), n = pos[r] + 1 keys of the
 * row's cache slot z = slot[r]:
 *   s[j] = q[r,h] . k[z, j, g] / sqrt(HS)         j < n   (fp32 from bf16 k)
 *   p = softmax(s)                                 (fp32, max subtracted)
 *   out[r,h] = bf16(sum_j p[j] v[z, j, g])         (fp32 accumulation)
 *
 * kernel1: one block of `threads` (128, 256 or 512; blockDim) per (h, r):
 * grid (NH, R).
 *   1. q[r,h] into shared memory;
 *   2. one thread per key (strided): a 16-byte-load dot product over HS,
 *      the score kept in shared memory (one float per key);
 *   3. block max, exponentials in place, block sum;
 *   4. threads split as (HS/8 dim octets) x (key slices): 16-byte loads of
 *      v rows, four keys' loads in flight per thread before their sums (a
 *      decode step has one row: 9 blocks for SmolLM2, so this pass is bound by
 *      load latency, not bandwidth; measured on an H200, docs/CUDA.md);
 *      slices reduced in shared memory in a fixed order.
 * At one row a block's passes are rounds of dependent loads: with 128
 * threads and 350 keys, 3 rounds of keys and 6 of values (4 keys each);
 * 256 threads halve both (the default since session 7, unmeasured; the
 * bits depend on the thread count, which is fixed per state, so a row's
 * result still never depends on the other rows).
 * Shared memory: (HS + 32 + slices*HS + max_keys) floats, dynamic; above
 * 48 KiB the launcher raises the kernel's limit (up to the device's opt-in
 * maximum, 227 KiB on H100: about 57,000 keys).
 * Work per block is O(n*HS); every (h, r) re-reads its sequence's keys, which
 * the NH/NKV heads of a group and the rows of a sequence share through L2.
 * (A split-K, flash-decoding variant is the next step for long contexts.) */
#include "flash_tile.h"
#include "kernels_cuda.h"

enum { ATT_MAX_THREADS = 512 };

static size_t att_smem(int HS, int keys, int threads) {
    int slices = threads / (HS / 8);
    return (size_t)(HS + 32 + slices * HS + keys) * sizeof(float);
}

int attention_threads_supported(int threads) { return threads == 128 || threads == 256 || threads == 512; }

/* out (R, NH*HS); q (R, NH*HS); kc, vc (S, CAP, NKV*HS); pos (R); slot (R);
 * pdl: launched with programmatic stream serialization */
__global__ void attention_forward_kernel1(floatX *out, const float *q, const floatX *kc,
                                          const floatX *vc, const int *pos, const int *slot,
                                          int NH, int NKV, int HS, int cap, int pdl) {
    extern __shared__ float smem[];
    int h = blockIdx.x, r = blockIdx.y;
    int g = h / (NH / NKV), KD = NKV * HS;
    int n = pos[r] + 1;
    int octets = HS / 8, slices = blockDim.x / octets;
    float *qs = smem;                    /* (HS) */
    float *red = qs + HS;                /* (32) */
    float *part = red + 32;              /* (slices, HS) */
    float *att = part + slices * HS;     /* (n) */
    const floatX *kbase = kc + (size_t)slot[r] * cap * KD + (size_t)g * HS;   /* key j at + j*KD */
    const floatX *vbase = vc + (size_t)slot[r] * cap * KD + (size_t)g * HS;
    const float *qr = q + ((size_t)r * NH + h) * HS;
    /* Launched with pdl, this runs while the previous kernel (q and the
     * row's own key and value) does: the keys and values before the row's
     * own are asked into L2 first (a hint; the writes land in L2, so an early
     * line is never stale), then the wait. (Not otherwise: the loads follow
     * at once, and a call of many rows would ask for each key per row.) */
    int lines = (HS + 63) / 64;   /* 128-byte lines of a head's bf16 key */
    for (int i = threadIdx.x; pdl && i < (n - 1) * lines; i += blockDim.x) {
        size_t off = (size_t)(i / lines) * KD + (size_t)(i % lines) * 64;
        prefetch_l2(kbase + off);
        prefetch_l2(vbase + off);
    }
    pdl_wait();
    pdl_launch_dependents();
    for (int i = threadIdx.x; i < HS; i += blockDim.x) qs[i] = qr[i];
    __syncthreads();

    float scale = 1.0f / sqrtf((float)HS);
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const uint4 *k4 = reinterpret_cast<const uint4 *>(kbase + (size_t)j * KD);
        float dot = 0.0f;
#pragma unroll 4
        for (int c = 0; c < HS / 8; c++) {
            uint4 u = k4[c];
            const __nv_bfloat162 *k2 = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float2 kf = __bfloat1622float2(k2[e]);
                dot += qs[8 * c + 2 * e] * kf.x + qs[8 * c + 2 * e + 1] * kf.y;
            }
        }
        dot *= scale;
        att[j] = dot;
        mx = fmaxf(mx, dot);
    }
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float e = expf(att[j] - mx);
        att[j] = e;
        sum += e;
    }
    sum = block_sum(sum, red);           /* its barriers also publish att[] */

    int d8 = threadIdx.x % octets, sl = threadIdx.x / octets;
    if (sl < slices) {
        float acc[8];
#pragma unroll
        for (int e = 0; e < 8; e++) acc[e] = 0.0f;
        /* keys sl, sl + slices, ...: four 16-byte loads issued, then their sums
         * in key order (the order depends on n alone, never on other rows) */
        int j = sl;
        for (; j + 3 * slices < n; j += 4 * slices) {
            uint4 u[4];
#pragma unroll
            for (int t = 0; t < 4; t++)
                u[t] = reinterpret_cast<const uint4 *>(vbase + (size_t)(j + t * slices) * KD)[d8];
#pragma unroll
            for (int t = 0; t < 4; t++) {
                float p = att[j + t * slices];
                const __nv_bfloat162 *v2 = reinterpret_cast<const __nv_bfloat162 *>(&u[t]);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float2 vf = __bfloat1622float2(v2[e]);
                    acc[2 * e] += p * vf.x;
                    acc[2 * e + 1] += p * vf.y;
                }
            }
        }
        for (; j < n; j += slices) {
            uint4 u = reinterpret_cast<const uint4 *>(vbase + (size_t)j * KD)[d8];
            float p = att[j];
            const __nv_bfloat162 *v2 = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float2 vf = __bfloat1622float2(v2[e]);
                acc[2 * e] += p * vf.x;
                acc[2 * e + 1] += p * vf.y;
            }
        }
#pragma unroll
        for (int e = 0; e < 8; e++) part[sl * HS + 8 * d8 + e] = acc[e];
    }
    __syncthreads();
    float inv = 1.0f / sum;
    floatX *o = out + ((size_t)r * NH + h) * HS;
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        float a = 0.0f;
        for (int s = 0; s < slices; s++) a += part[s * HS + i];
        o[i] = __float2bfloat16(a * inv);
    }
}

int attention_max_keys(int HS, int *max_keys) {
    int dev = 0, optin = 0, rc;
    *max_keys = 0;
    if ((rc = CUDA_CHECK(cudaGetDevice(&dev)))) return rc;
    if ((rc = CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev))))
        return rc;
    /* for any thread count */
    long long k = (long long)optin / (long long)sizeof(float) - (long long)att_smem(HS, 0, ATT_MAX_THREADS) / 4;
    *max_keys = k > 0 ? (int)k : 0;
    return 0;
}

int attention_forward(floatX *out, const float *q, const floatX *kc, const floatX *vc,
                      const int *pos, const int *slot, int R, int NH, int NKV, int HS, int cap,
                      int max_keys, int threads, int pdl, cudaStream_t stream) {
    if (HS % 8 || HS > 256 || NH % NKV)
        return cllm_error(CLLM_EUNSUP, "attention: head size %d / heads %d:%d not supported on CUDA",
                          HS, NH, NKV);
    if (!attention_threads_supported(threads))
        return cllm_error(CLLM_EINVAL, "attention: %d threads a block (128, 256 or 512)", threads);
    size_t smem = att_smem(HS, max_keys, threads);
    /* The limit is the kernel's, not the launch's: only ever raised, so that a
     * graph captured with a larger cache, replayed after a call that needed
     * less, still finds its shared memory allowed. (One device a process.) */
    static size_t smem_allowed = 48 * 1024;
    if (smem > smem_allowed) {
        int rc = CUDA_CHECK(cudaFuncSetAttribute(attention_forward_kernel1,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 (int)smem));
        if (rc) return rc;
        smem_allowed = smem;
    }
    return launch_kernel("attention_forward_kernel1", attention_forward_kernel1, dim3(NH, R), dim3(threads),
                         smem, stream, pdl, out, q, kc, vc, pos, slot, NH, NKV, HS, cap, pdl);
}

/* ---- kernel2: tiled on the tensor cores ---------------------------------
 * For the calls that do not take the 16-row path (more than 16 rows:
 * batched Jacobi windows; and every call holding prompt rows). The rows of a call are cut into segments (segs, built by
 * the host: a sequence's rows in runs of at most 16), and one block of 4
 * warps takes (segment, kv head g, up to 4 of g's query heads): warp w holds
 * its head's q for the segment's rows as one 16-row mma tile (q rounded to
 * bf16), and per 64-key tile of the slot's cache (k row-major, v transposed,
 * in shared memory, keys past the segment's last position zero) computes
 * S = Q K^T, masks keys after each row's position, keeps an online softmax
 * in fp32 and adds P V with P rounded to bf16 (flash_tile.h, shared with
 * the training kernels in train/attention_flash.cu). So the keys are read
 * once per segment and kv head instead of once per (row, head), and the
 * sums run on the tensor cores.
 * A row's result depends on its q, its position and the aligned key tiles
 * alone (tiles past its position add exact zeros), not on the other rows of
 * its segment: batch-invariant, as kernel1. HS in {16, 32, 64, 128}. */
enum { AT_WARPS = 4, AT_TILE = FLASH_TILE };

/* out (R, NH*HS) bf16; q (R, NH*HS) fp32; kc, vc (S, CAP, KD) bf16; pos, slot (R);
 * segs (R + 1): segment s is rows segs[s] .. segs[s + 1] - 1 (segs[s] = R: none).
 * grid (max_segs, NKV * ceil(group / 4)), block 128 */
template <int HS>
__global__ void __launch_bounds__(32 * AT_WARPS)
attention_forward_kernel2(floatX *out, const float *q, const floatX *kc, const floatX *vc, const int *pos,
                          const int *slot, const int *segs, int R, int NH, int NKV, int cap) {
    __shared__ uint4 at_smem[(AT_TILE * (HS + 8) + HS * (AT_TILE + 8)) / 8];
    floatX *ks = reinterpret_cast<floatX *>(at_smem);   /* (64, HS + 8) */
    floatX *vt = ks + AT_TILE * (HS + 8);                /* (HS, 64 + 8) */
    pdl_wait();
    pdl_launch_dependents();
    int r0 = segs[blockIdx.x], r1 = segs[blockIdx.x + 1];   /* both loads in one trip */
    if (r0 >= R) return;
    int group = NH / NKV, chunks = (group + AT_WARPS - 1) / AT_WARPS;
    int g = blockIdx.y / chunks, lane = threadIdx.x % 32, w = threadIdx.x / 32, gq = lane / 4, tq = lane % 4;
    int hh = (blockIdx.y % chunks) * AT_WARPS + w, h = g * group + hh, has_head = hh < group;
    int QD = NH * HS, KD = NKV * HS;
    int nk = 0;   /* keys the segment needs: its last position + 1 */
    for (int r = r0; r < r1; r++) nk = max(nk, pos[r] + 1);
    size_t zbase = (size_t)slot[r0] * cap;
    int rows[2] = {r0 + gq, r0 + gq + 8};
    int lim[2];   /* each row's last key; -1 for rows outside the segment */
    unsigned qa[HS / 16][4];
#pragma unroll
    for (int e = 0; e < 2; e++) lim[e] = rows[e] < r1 ? pos[rows[e]] : -1;
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int e = i & 1, c = 16 * kk + 2 * tq + (i >> 1) * 8;
            const float *qr = q + (size_t)rows[e] * QD + (size_t)h * HS + c;
            qa[kk][i] = has_head && lim[e] >= 0 ? pack_bf16x2(qr[0], qr[1]) : 0u;
        }
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, o[HS / 8][4];
#pragma unroll
    for (int nd = 0; nd < HS / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    int wlast = max(lim[0], lim[1]);
    wlast = max(wlast, __shfl_xor_sync(0xffffffffu, wlast, 4));
    wlast = max(wlast, __shfl_xor_sync(0xffffffffu, wlast, 8));
    wlast = max(wlast, __shfl_xor_sync(0xffffffffu, wlast, 16));   /* the warp's last key */
    const float scale = 1.0f / sqrtf((float)HS);

    /* tile j0 + 64's keys and values are loaded into registers while tile j0 is worked on (the
     * window calls' segments are short and few per SM, so one load's latency a tile, not one a
     * 16-byte chunk, is what the block waits for) */
    tile_regs<HS, AT_TILE, 32 * AT_WARPS> kr, vr;
    const floatX *kg = kc + zbase * KD + (size_t)g * HS, *vg = vc + zbase * KD + (size_t)g * HS;
    if (nk > 0) {
        tile_fetch(kr, kg, KD, nk);
        tile_fetch(vr, vg, KD, nk);
    }
    for (int j0 = 0; j0 < nk; j0 += AT_TILE) {
        __syncthreads();
        tile_put(kr, ks, (floatX *)nullptr);
        tile_put(vr, (floatX *)nullptr, vt);
        __syncthreads();
        int j1 = j0 + AT_TILE;
        if (j1 < nk) {
            tile_fetch(kr, kg + (size_t)j1 * KD, KD, nk - j1);
            tile_fetch(vr, vg + (size_t)j1 * KD, KD, nk - j1);
        }
        if (!has_head || j0 > wlast) continue;
        flash_forward_tile<HS>(qa, ks, vt, j0, lim, wlast, scale, m, l, o);
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float L = quad_sum(l[e]);
        if (!has_head || lim[e] < 0) continue;
        float inv = 1.0f / L;
        floatX *orow = out + (size_t)rows[e] * QD + (size_t)h * HS;
#pragma unroll
        for (int nd = 0; nd < HS / 8; nd++)
            *reinterpret_cast<unsigned *>(orow + 8 * nd + 2 * tq) =
                pack_bf16x2(o[nd][2 * e] * inv, o[nd][2 * e + 1] * inv);
    }
}

int attention_tiled_supported(int HS) { return HS == 16 || HS == 32 || HS == 64 || HS == 128; }

int attention_tiled_forward(floatX *out, const float *q, const floatX *kc, const floatX *vc, const int *pos,
                            const int *slot, const int *segs, int max_segs, int R, int NH, int NKV, int HS,
                            int cap, int pdl, cudaStream_t stream) {
    if (NKV < 1 || NH % NKV)
        return cllm_error(CLLM_EUNSUP, "attention: heads %d:%d not supported on CUDA", NH, NKV);
    if (max_segs < 1 || max_segs > R)
        return cllm_error(CLLM_EINVAL, "attention: %d segments for %d rows", max_segs, R);
    dim3 grid(max_segs, NKV * ceil_div(NH / NKV, AT_WARPS)), block(32 * AT_WARPS);
#define AT_LAUNCH(S)                                                                                        \
    return launch_kernel("attention_forward_kernel2", attention_forward_kernel2<S>, grid, block, 0, stream, pdl, out, \
                         q, kc, vc, pos, slot, segs, R, NH, NKV, cap)
    switch (HS) {
    case 16: AT_LAUNCH(16);
    case 32: AT_LAUNCH(32);
    case 64: AT_LAUNCH(64);
    case 128: AT_LAUNCH(128);
    default: return cllm_error(CLLM_EUNSUP, "attention (tiled): head size %d", HS);
    }
#undef AT_LAUNCH
}
