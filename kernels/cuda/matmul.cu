/* matmul.cu: out = inp W^T through cuBLAS, bf16 in, fp32 accumulate and out.
 * Row-major (R, OC) = (R, C) x (OC, C)^T is, in cuBLAS' column-major terms,
 * out^T (OC, R) = W (C, OC)^T x inp^T (C, R): transa = T, transb = N,
 * m = OC, n = R, k = C, lda = ldb = C, ldc = OC.
 *
 * Batch invariance: cuBLAS picks its algorithm (tiles, split-K) by shape, so
 * a row's sums can change with R. With rows_per_call = G > 0 the product is
 * made in pieces of exactly G rows (the last one reading and writing up to G
 * rows past R: the caller's buffers are padded), so every call has one shape
 * and a row's result depends only on that row, whatever else is in the batch
 * (at the price of ceil(R/G) calls). G = 0: one call of R rows.
 *
 * G = MATMUL_FIXED_ORDER: kernel1 below instead of cuBLAS, one launch for any
 * R: a block of 4 warps takes 64 or 128 rows (below) x 4 output groups
 * (epilogue.h: 16 outputs each, for a plain product the 64 outputs 64 by ..);
 * per 64-wide K chunk, in order, the inp tile and the groups' 64 W rows go
 * to shared memory (rows past R or the W rows and columns past K as zeros)
 * and each warp adds its 16 or 32 rows x 64 outputs as 4 k-steps x 8 n-tiles
 * of mma.sync m16n8k16 (bf16 in, fp32 accumulate). MT_STAGES (3)
 * shared-memory stages (54 or 81 KiB, dynamic): chunks c + 1 and c + 2 are on their way (cp.async)
 * while chunk c is multiplied, so a chunk's load latency (which at one
 * block an SM, the small products of a batched window call, is most of a
 * chunk's time) is paid once per call, not once a chunk; one barrier a
 * chunk (it also frees the stage the next copy fills). Every output is
 * summed in the same order whatever R is, whatever else is in the call and
 * whichever row tile the call takes: batch-invariant by construction,
 * without the launches of G-row pieces. Needs K % 16 == 0.
 *
 * The epilogue (epilogue.h) is the plain fp32 output or the op after the
 * product: the residual add (wo, down), SwiGLU (gate/up), bias + RoPE + the
 * cache writes (qkv), the LM head's argmax. A fused op's elements are its
 * own kernel's, so the fused and unfused routes give the same bits
 * (test_cuda); fusing saves the op's launch and the fp32 round trip of the
 * product's output. The argmax: each warp reduces its rows' best over the
 * tile's 64 outputs (argmax_key: value, then the lower id) and adds it to
 * the row's key with one atomicMax; the (R, OC) fp32 logits are never
 * written (at 49,152 outputs that is 200 KB a row written and read back).
 *
 * K slices (mt_cfg.kslice, kernels_cuda.h): grid z is the slice. Each block
 * sums its slice's chunks as above, writes its partial tile to the
 * workspace (fp32, in its threads' fragment order: coalesced), and takes a
 * ticket for the tile (__threadfence, then atomicAdd); the block that takes
 * the last ticket reads the S partial tiles back in slice order, adds them
 * (slice 0 + slice 1 + ..., the same order whichever block is last, so the
 * same bits), resets the ticket for the next launch and runs the epilogue.
 * Batch-invariant as before: S depends on K and kslice, never on R.
 *
 * pdl (common.h): the blocks of the first row tile ask their W rows (their
 * slice) into L2, then every block waits for the predecessor. */
#include "epilogue.h"
#include "flash_tile.h"

enum { MT_COLS = 64, MT_K = 64, MT_WARPS = 4, MT_LD = MT_K + 8, MT_GROUPS = MT_COLS / 16, MT_STAGES = 3 };
/* A block takes 64 RF rows x 64 outputs, a warp 16 RF rows (RF row fragments
 * of the mma's 16) x 64: RF = 2 reads each W fragment from shared memory
 * once for two A fragments (192 bytes of shared-memory reads an mma instead
 * of 320) and each W tile from L2 once per 128 rows, at half the blocks an SM
 * (81 KiB of shared memory, 64 accumulators a thread). Every output's sum is
 * the same chain of mma k-steps either way: the same bits. (Blocks of 8
 * warps taking 128 outputs, each inp tile read from L2 half as often, ran
 * no faster on an H200: round 6.) */
template <int RF>
struct mt_shape {
    static constexpr int threads = 32 * MT_WARPS;
    static constexpr int rows = 64 * RF;                                  /* a block's rows */
    static constexpr int a_copies = rows * (MT_K / 8) / threads;          /* 16-byte copies a thread makes a chunk */
    static constexpr int w_copies = MT_COLS * (MT_K / 8) / threads;
    static constexpr size_t stage = (size_t)(rows + MT_COLS) * MT_LD;     /* bf16: the inp tile, then the W tile */
    static constexpr size_t smem = MT_STAGES * stage * sizeof(floatX);
};
static_assert(mt_shape<1>::w_copies * mt_shape<1>::threads == MT_COLS * (MT_K / 8), "the copies divide evenly");

/* Chunk k0 of the block's inp and W rows into one stage (as: (64 RF, MT_LD),
 * bs: (64, MT_LD)), zeros for rows past R or the W rows (NULL) and columns
 * from kend (the end of K or of the block's slice); asynchronous (cp.async).
 * Thread t copies columns 8 (t % 8) .. of tile rows t / 8 + 16 i: arow[i],
 * wrow[i]. */
template <int RF>
__device__ __forceinline__ void mt_load_chunk(floatX *as, floatX *bs, const floatX *const *arow,
                                              const floatX *const *wrow, const floatX *any, int k0, int kend) {
    typedef mt_shape<RF> sh;
    int c = (threadIdx.x % 8) * 8, kc = min(MT_K, kend - k0);
#pragma unroll
    for (int i = 0; i < sh::a_copies; i++) {
        int r = threadIdx.x / 8 + 16 * i, va = c < kc && arow[i];
        cp_async16(as + (size_t)r * MT_LD + c, va ? arow[i] + k0 + c : any, va);
    }
#pragma unroll
    for (int i = 0; i < sh::w_copies; i++) {
        int r = threadIdx.x / 8 + 16 * i, vb = c < kc && wrow[i];
        cp_async16(bs + (size_t)r * MT_LD + c, vb ? wrow[i] + k0 + c : any, vb);
    }
}

/* The fragments of k-step kk for the warp's RF row fragments (as: the warp's
 * first row) and its 8 n-tiles (bs: the warp's first W row), by ldmatrix
 * (LDSM) or 32-bit loads: the same registers */
template <int RF, bool LDSM>
__device__ __forceinline__ void mt_frags(unsigned a[RF][4], unsigned bf[MT_COLS / 8][2], const floatX *as,
                                         const floatX *bs, int kk) {
    int lane = threadIdx.x % 32;
    if (LDSM) {
        /* one ldmatrix a 16-row A fragment and a pair of W n-tiles, where 32-bit loads
         * took 4 and 4 (the compiler made each mma wait for its own two): lane l gives
         * row l % 8 of matrix l / 8, which for A is rows + 8 (matrices 1, 3) and
         * columns + 8 (2, 3), for a W pair columns + 8 (1, 3) and rows + 8 (2, 3) */
        int m = lane / 8, rr = lane % 8;
#pragma unroll
        for (int rf = 0; rf < RF; rf++)
            ldsm_x4(a[rf], as + (size_t)(16 * rf + rr + 8 * (m % 2)) * MT_LD + 16 * kk + 8 * (m / 2));
#pragma unroll
        for (int np = 0; np < MT_COLS / 16; np++) {
            unsigned q[4];
            ldsm_x4(q, bs + (size_t)(16 * np + 8 * (m / 2) + rr) * MT_LD + 16 * kk + 8 * (m % 2));
            bf[2 * np][0] = q[0];
            bf[2 * np][1] = q[1];
            bf[2 * np + 1][0] = q[2];
            bf[2 * np + 1][1] = q[3];
        }
    } else {
        int g = lane / 4, tq = lane % 4;
#pragma unroll
        for (int rf = 0; rf < RF; rf++) {
            const floatX *ap = as + (size_t)(16 * rf + g) * MT_LD + 16 * kk + 2 * tq;
            a[rf][0] = ld_bf16x2(ap);
            a[rf][1] = ld_bf16x2(ap + 8 * MT_LD);
            a[rf][2] = ld_bf16x2(ap + 8);
            a[rf][3] = ld_bf16x2(ap + 8 * MT_LD + 8);
        }
#pragma unroll
        for (int nt = 0; nt < MT_COLS / 8; nt++) b_frag(bf[nt], bs, MT_LD, 8 * nt, kk);
    }
}

/* One chunk's kc / 16 k-steps into the accumulators, in order. A whole
 * chunk (all but a slice's last, at most) is unrolled with the next
 * k-step's fragments asked for before this one's mma, where a loop made
 * every k-step wait for its own loads (ptxas: 5 LDSM, then the 8 or 16 HMMA
 * that need them, a branch back); ptxas interleaves the unrolled loads with
 * the mma its own way (a W pair's LDSM before its two HMMA). 1-2.5 % faster
 * on an H200 (round 6: test_cuda's one-call bench, cllm-traj --batch 64).
 * The same mma chain per output either way: the same bits. */
/* one k-step: each of the warp's outputs gets the next link of its mma chain */
template <int RF>
__device__ __forceinline__ void mt_kstep(float acc[RF][MT_COLS / 8][4], const unsigned a[RF][4],
                                         const unsigned bf[MT_COLS / 8][2]) {
#pragma unroll
    for (int nt = 0; nt < MT_COLS / 8; nt++)
#pragma unroll
        for (int rf = 0; rf < RF; rf++) mma_bf16_16816(acc[rf][nt], a[rf], bf[nt]);
}
template <int RF, bool LDSM>
__device__ __forceinline__ void mt_chunk_mma(float acc[RF][MT_COLS / 8][4], const floatX *as, const floatX *bs,
                                             int kc) {
    if (kc == MT_K) {
        unsigned a[2][RF][4], bf[2][MT_COLS / 8][2];
        mt_frags<RF, LDSM>(a[0], bf[0], as, bs, 0);
#pragma unroll
        for (int kk = 0; kk < MT_K / 16; kk++) {
            if (kk + 1 < MT_K / 16) mt_frags<RF, LDSM>(a[(kk + 1) % 2], bf[(kk + 1) % 2], as, bs, kk + 1);
            mt_kstep<RF>(acc, a[kk % 2], bf[kk % 2]);
        }
        return;
    }
    for (int kk = 0; kk < kc / 16; kk++) {
        unsigned a[RF][4], bf[MT_COLS / 8][2];
        mt_frags<RF, LDSM>(a, bf, as, bs, kk);
        mt_kstep<RF>(acc, a, bf);
    }
}

/* inp (R, K) bf16, W (w_rows<OUT>(units), K) bf16; per OUT (epilogue.h):
 * out (R, units) fp32 (F32: =, ADD: +=) | h (R, units) bf16 | keys (R) | ra.
 * Rows r_begin .. R - 1 (a piece of a larger call: r is the call's row).
 * K slices (gridDim.z > 1): slice z is K columns z kslice .., ws
 * (tiles x S x 64 RF x 64) fp32, tickets (tiles).
 * grid (ceil((R - r_begin) / 64 RF), ceil(out_groups / 4), S), block 128: the row tiles of
 * one column of W tiles are neighbours in launch order, so the blocks
 * resident at once share their W tiles through L2 and each W tile comes from
 * memory about once (the LM head's 56 MB of W does not fit in L2; with the W
 * tiles in x, every 64 rows re-read all of it). */
template <int OUT, int RF>
__global__ void __launch_bounds__(32 * MT_WARPS)
matmul_forward_kernel1(const floatX *inp, const floatX *W, int r_begin, int R, int K, int units, float *out, floatX *h,
                       argmax_key_t *keys, qkv_rope_args ra, int kslice, float *ws, unsigned *tickets, int pdl,
                       int ldsm) {
    typedef mt_shape<RF> sh;
    extern __shared__ uint4 mt_smem[];   /* MT_STAGES x (inp tile, W tile): sh::smem bytes */
    __shared__ int mt_last;              /* K slices: this block took the tile's last ticket */
    floatX *stage0 = reinterpret_cast<floatX *>(mt_smem);
    int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, tq = lane % 4;
    int r0 = r_begin + blockIdx.x * sh::rows, grp0 = blockIdx.y * MT_GROUPS, groups = out_groups<OUT>(units, ra);
    int S = gridDim.z, kb = S > 1 ? blockIdx.z * kslice : 0, ke = S > 1 ? min(K, kb + kslice) : K;
    /* the tile rows this thread copies: inp rows r0 + tr, W rows of group grp0 + tr / 16 */
    const floatX *arow[sh::a_copies], *wrow[sh::w_copies];
#pragma unroll
    for (int i = 0; i < sh::a_copies; i++) {
        int tr = threadIdx.x / 8 + 16 * i;
        arow[i] = r0 + tr < R ? inp + (size_t)(r0 + tr) * K : NULL;
    }
#pragma unroll
    for (int i = 0; i < sh::w_copies; i++) {
        int tr = threadIdx.x / 8 + 16 * i, grp = grp0 + tr / 16;
        rope_group rg = {0, 0, 0, 0};
        if (OUT == EPI_QKV_ROPE && grp < groups) rg = rope_group_at(ra, grp);
        int wr = grp < groups ? group_w_row<OUT>(grp, (tr / 8) % 2, tr % 8, units, rg) : -1;
        wrow[i] = wr >= 0 && wr < w_rows<OUT>(units) ? W + (size_t)wr * K : NULL;
    }
    /* launched with pdl: the weights (which nothing earlier writes) on their
     * way to L2 while the predecessor finishes */
    if (pdl && blockIdx.x == 0 && threadIdx.x % 8 == 0)
#pragma unroll
        for (int i = 0; i < sh::w_copies; i++)
            if (wrow[i])
                for (int k = kb; k < ke; k += 64) prefetch_l2(wrow[i] + k);
    pdl_wait();
    pdl_launch_dependents();

    float acc[RF][MT_COLS / 8][4];
#pragma unroll
    for (int rf = 0; rf < RF; rf++)
#pragma unroll
        for (int nt = 0; nt < MT_COLS / 8; nt++) acc[rf][nt][0] = acc[rf][nt][1] = acc[rf][nt][2] = acc[rf][nt][3] = 0.0f;
    int chunks = (ke - kb + MT_K - 1) / MT_K;
    /* chunks 0 .. MT_STAGES - 2 on their way; one commit group per chunk (empty past the last) */
#pragma unroll
    for (int c = 0; c < MT_STAGES - 1; c++) {
        if (c < chunks)
            mt_load_chunk<RF>(stage0 + c * sh::stage, stage0 + c * sh::stage + sh::rows * MT_LD, arow, wrow, W,
                              kb + c * MT_K, ke);
        cp_async_commit();
    }
    for (int ch = 0; ch < chunks; ch++) {
        floatX *as = stage0 + (size_t)(ch % MT_STAGES) * sh::stage, *bs = as + sh::rows * MT_LD;
        cp_async_wait<MT_STAGES - 2>();   /* groups 0 .. ch done: this chunk's copies landed */
        __syncthreads();   /* ... every thread's, visible; and chunk ch - 1's stage is no longer read */
        int nx = ch + MT_STAGES - 1;   /* into chunk ch - 1's stage */
        if (nx < chunks) {
            floatX *an = stage0 + (size_t)(nx % MT_STAGES) * sh::stage;
            mt_load_chunk<RF>(an, an + sh::rows * MT_LD, arow, wrow, W, kb + nx * MT_K, ke);
        }
        cp_async_commit();
        int kc = min(MT_K, ke - kb - ch * MT_K);
        const floatX *aw = as + (size_t)16 * RF * w * MT_LD;   /* the warp's rows of the inp tile */
        if (ldsm) mt_chunk_mma<RF, true>(acc, aw, bs, kc);
        else mt_chunk_mma<RF, false>(acc, aw, bs, kc);
    }
    if (S > 1) {
        /* this slice's partial tile to the workspace, in fragment order (thread t's float4 of
         * (rf, nt) at (rf 8 + nt) 128 + t: consecutive threads, consecutive 16 bytes) */
        int tile = blockIdx.y * gridDim.x + blockIdx.x, part4 = RF * 8 * sh::threads;   /* float4s a partial */
        float4 *part = reinterpret_cast<float4 *>(ws) + ((size_t)tile * S + blockIdx.z) * part4;
#pragma unroll
        for (int rf = 0; rf < RF; rf++)
#pragma unroll
            for (int nt = 0; nt < MT_COLS / 8; nt++)
                part[(rf * 8 + nt) * sh::threads + threadIdx.x] =
                    make_float4(acc[rf][nt][0], acc[rf][nt][1], acc[rf][nt][2], acc[rf][nt][3]);
        __threadfence();   /* the partial visible device-wide before the ticket */
        __syncthreads();
        if (threadIdx.x == 0) mt_last = atomicAdd(&tickets[tile], 1u) == (unsigned)(S - 1);
        __syncthreads();
        if (!mt_last) return;
        __threadfence();
        /* the last block: the slices' sums in slice order (past L1: other SMs wrote them), a
         * slice at a time with all of its 8 RF loads in flight: S trips to L2 for the block,
         * where a loop over the slices inside each (rf, nt) made up to 8 RF S trips one
         * after another (the branches of its remainder kept the loads apart) */
        const float4 *all = reinterpret_cast<const float4 *>(ws) + (size_t)tile * S * part4 + threadIdx.x;
        for (int z = 0; z < S; z++) {
            float4 u[RF][MT_COLS / 8];
#pragma unroll
            for (int rf = 0; rf < RF; rf++)
#pragma unroll
                for (int nt = 0; nt < MT_COLS / 8; nt++)
                    u[rf][nt] = __ldcg(all + (size_t)z * part4 + (rf * 8 + nt) * sh::threads);
#pragma unroll
            for (int rf = 0; rf < RF; rf++)
#pragma unroll
                for (int nt = 0; nt < MT_COLS / 8; nt++) {   /* slice 0 as it is, then + slice 1, ... */
                    acc[rf][nt][0] = z ? acc[rf][nt][0] + u[rf][nt].x : u[rf][nt].x;
                    acc[rf][nt][1] = z ? acc[rf][nt][1] + u[rf][nt].y : u[rf][nt].y;
                    acc[rf][nt][2] = z ? acc[rf][nt][2] + u[rf][nt].z : u[rf][nt].z;
                    acc[rf][nt][3] = z ? acc[rf][nt][3] + u[rf][nt].w : u[rf][nt].w;
                }
        }
        if (threadIdx.x == 0) tickets[tile] = 0u;   /* for the next launch (stream order) */
    }
    /* the call's row of this lane's half e of the warp's row fragment rf */
    auto frag_row = [&](int rf, int e) { return r0 + 16 * (w * RF + rf) + g + 8 * e; };
    /* lane (g, tq) holds rows g and g + 8 of each of the warp's 16-row fragments, columns 2 tq,
     * 2 tq + 1 of each n-tile; n-tiles 2 i and 2 i + 1 are group grp0 + i.
     * The epilogues that read memory load everything they read before their first store: a
     * load the compiler cannot place before an earlier store waits for it, and so one trip to
     * L2 an output (32 RF in a row, most of such a product's time at a window call's size)
     * became one trip a thread (the residual add: one a row fragment). Same arithmetic. */
    if (OUT == EPI_ADD) {
#pragma unroll
        for (int rf = 0; rf < RF; rf++) {
            /* (e, group, j, n-tile): whether the output is in the call, x before the add, by
             * unconditional loads (an element outside reads element 0, unused): predicated
             * ones, 16 conditions, went back beside their stores for want of predicate
             * registers */
            bool in[2][MT_GROUPS][2][2];
            float old[2][MT_GROUPS][2][2];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int r = frag_row(rf, e);
#pragma unroll
                for (int i = 0; i < MT_GROUPS; i++)
#pragma unroll
                    for (int j = 0; j < 2; j++)
#pragma unroll
                        for (int n = 0; n < 2; n++) {
                            int o = (grp0 + i) * 16 + 8 * n + 2 * tq + j;
                            in[e][i][j][n] = r < R && grp0 + i < groups && o < units;
                            old[e][i][j][n] = out[in[e][i][j][n] ? (size_t)r * units + o : 0];
                        }
            }
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float *y = out + (size_t)frag_row(rf, e) * units;
#pragma unroll
                for (int i = 0; i < MT_GROUPS; i++)
#pragma unroll
                    for (int j = 0; j < 2; j++)
#pragma unroll
                        for (int n = 0; n < 2; n++)
                            if (in[e][i][j][n])
                                y[(grp0 + i) * 16 + 8 * n + 2 * tq + j] = old[e][i][j][n] + acc[rf][2 * i + n][2 * e + j];
            }
        }
    } else if (OUT == EPI_QKV_ROPE) {
        /* the columns' biases and inverse frequencies (the same for all of the thread's rows),
         * the rows' positions and cache slots, then the stores */
        rope_group rgs[MT_GROUPS];
        qkv_rope_in in[MT_GROUPS][2];
#pragma unroll
        for (int i = 0; i < MT_GROUPS; i++) {
            rgs[i] = grp0 + i < groups ? rope_group_at(ra, grp0 + i) : rope_group{0, 0, 0, 0};
#pragma unroll
            for (int j = 0; j < 2; j++) qkv_rope_load_cols(ra, rgs[i], 2 * tq + j, &in[i][j]);
        }
        int rpos[2 * RF], rslot[2 * RF];
#pragma unroll
        for (int fe = 0; fe < 2 * RF; fe++) {   /* a row outside the call reads row 0's (unused) */
            int r = frag_row(fe / 2, fe % 2), rr = r < R ? r : 0;
            rpos[fe] = ra.pos[rr];
            rslot[fe] = ra.slot[rr];
        }
#pragma unroll
        for (int fe = 0; fe < 2 * RF; fe++) {
            int rf = fe / 2, e = fe % 2, r = frag_row(rf, e);
            if (r >= R) continue;
#pragma unroll
            for (int i = 0; i < MT_GROUPS; i++) {
                if (grp0 + i >= groups) break;
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    qkv_rope_in x = in[i][j];
                    x.pos = rpos[fe];
                    x.slot = rslot[fe];
                    qkv_rope_put(ra, r, rgs[i], 2 * tq + j, acc[rf][2 * i][2 * e + j], acc[rf][2 * i + 1][2 * e + j], x);
                }
            }
        }
    } else {   /* the others store only (SwiGLU, plain) or take atomics (argmax) */
#pragma unroll
        for (int fe = 0; fe < 2 * RF; fe++) {
            int rf = fe / 2, e = fe % 2, r = frag_row(rf, e);
            if (OUT == EPI_ARGMAX) {
                /* lanes 4g .. 4g + 3 hold row r's 64 outputs: their best, then one atomic */
                argmax_key_t best = 0ull;
#pragma unroll
                for (int nt = 0; nt < MT_COLS / 8; nt++)
#pragma unroll
                    for (int j = 0; j < 2; j++) {
                        int c = grp0 * 16 + 8 * nt + 2 * tq + j;
                        float v = acc[rf][nt][2 * e + j];
                        if (c < units && v == v) {   /* NaN is never a candidate */
                            argmax_key_t k = argmax_key(v, c);
                            if (k > best) best = k;
                        }
                    }
                argmax_key_t o = __shfl_xor_sync(0xffffffffu, best, 1);
                if (o > best) best = o;
                o = __shfl_xor_sync(0xffffffffu, best, 2);
                if (o > best) best = o;
                if (tq == 0 && r < R && best) atomicMax(&keys[r], best);
                continue;
            }
            if (r >= R) continue;
#pragma unroll
            for (int i = 0; i < MT_GROUPS; i++) {
                int grp = grp0 + i;
                if (grp >= groups) break;
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    int c = 2 * tq + j;
                    float d0 = acc[rf][2 * i][2 * e + j], d1 = acc[rf][2 * i + 1][2 * e + j];
                    if (OUT == EPI_SWIGLU) {
                        h[(size_t)r * units + grp * 8 + c] = __float2bfloat16(silu_mul(d0, d1));
                    } else {
                        int o0 = grp * 16 + c, o1 = o0 + 8;
                        float *y = out + (size_t)r * units;
                        if (o0 < units) y[o0] = d0;
                        if (o1 < units) y[o1] = d1;
                    }
                }
            }
        }
    }
}

static int mt_sms = 132;   /* the device's SMs (matmul_fixed_order_init), for the row tile by shape */
static unsigned long long mt_launches[2];   /* by row tile: 64, 128 (matmul_fixed_order_launches) */
static unsigned long long mt_split;         /* ... of them with K in slices */

/* The block's row tile for a call: rows (64, 128) if the caller fixed it,
 * else 128 when the call has at least two blocks of 128 rows for each SM
 * (the LM head and gate/up of a batch of windows), 64 when fewer (a layer's
 * smaller products, prompt chunks: more blocks keep more SMs busy). */
int matmul_fixed_order_rows(int R, int out_groups, int slices, int rows) {
    if (rows == 64 || rows == 128) return rows;
    long blocks128 = (long)ceil_div(R, 128) * ceil_div(out_groups, MT_GROUPS) * (slices > 1 ? slices : 1);
    return blocks128 >= 2L * mt_sms ? 128 : 64;
}

int matmul_fixed_order_slices(int K, int kslice) { return kslice > 0 && K > kslice ? ceil_div(K, kslice) : 1; }

/* w_rows W rows make at most ceil(w_rows / 64) tiles of 64 outputs (a plain product: 16-output
 * groups; SwiGLU: 8 gate + 8 up rows a group; qkv + RoPE: 16 W rows a group); 64 RF rows a tile */
size_t matmul_fixed_order_ws_floats(int rows, int w_rows, int K, int kslice) {
    int S = matmul_fixed_order_slices(K, kslice);
    if (S < 2 || rows < 1) return 0;
    return (size_t)ceil_div(rows, 128) * 128 * ((size_t)ceil_div(w_rows, MT_COLS) * MT_COLS) * S;
}

size_t matmul_fixed_order_tickets(int rows, int w_rows, int K, int kslice) {
    if (matmul_fixed_order_slices(K, kslice) < 2 || rows < 1) return 0;
    return (size_t)ceil_div(rows, 64) * ceil_div(w_rows, MT_COLS);
}

/* kernel1<OUT, RF> over rows r_begin .. R - 1, `groups` output groups and S K slices */
template <int OUT, int RF>
static int mt_launch_tile(const floatX *inp, const floatX *W, int r_begin, int R, int K, int units, float *out,
                          floatX *h, argmax_key_t *keys, const qkv_rope_args &ra, int groups, int S, int kslice,
                          float *ws, unsigned *tickets, int pdl, int ldsm, cudaStream_t stream) {
    return launch_kernel("matmul_forward_kernel1", matmul_forward_kernel1<OUT, RF>,
                         dim3(ceil_div(R - r_begin, mt_shape<RF>::rows), ceil_div(groups, MT_GROUPS), S),
                         dim3(32 * MT_WARPS), mt_shape<RF>::smem, stream, pdl, inp, W, r_begin, R, K, units, out, h,
                         keys, ra, kslice, ws, tickets, pdl, ldsm);
}

/* One fixed-order product with epilogue OUT */
template <int OUT>
static int mt_launch(const floatX *inp, const floatX *W, int R, int K, int units, float *out, floatX *h,
                     argmax_key_t *keys, const qkv_rope_args *ra, int pdl, const mt_cfg *mt, cudaStream_t stream) {
    if (K % 16 || K < 16) return cllm_error(CLLM_EUNSUP, "matmul: inner size %d is not a multiple of 16", K);
    if ((OUT == EPI_SWIGLU && units % 8) ||
        (OUT == EPI_QKV_ROPE && !qkv_rope_fusable(ra->NH, ra->NKV, ra->HS, ra->rope_dim)))
        return cllm_error(CLLM_EUNSUP, "matmul: %d outputs cannot take this epilogue", units);
    if (R < 1) return 0;
    qkv_rope_args rargs;
    if (ra) rargs = *ra;
    else memset(&rargs, 0, sizeof rargs);
    int groups = out_groups<OUT>(units, rargs);
    if (ceil_div(groups, MT_GROUPS) > 65535)
        return cllm_error(CLLM_EUNSUP, "matmul: %d outputs are too many for one launch", units);
    int S = OUT == EPI_ARGMAX || !mt ? 1 : matmul_fixed_order_slices(K, mt->kslice), kslice = S > 1 ? mt->kslice : 0;
    int piece = S > 1 ? mt->ws_rows : R, col_tiles = ceil_div(groups, MT_GROUPS);
    if (S > 1 && (!mt->ws || !mt->tickets || piece < 1))
        return cllm_error(CLLM_EINVAL, "matmul: K slices of %d without a workspace", kslice);
    /* a call of more rows than the workspace holds: pieces of rows, one launch each (a row's
     * sums do not depend on the piece it is in) */
    int rc = 0;
    for (int rb = 0; rb < R && !rc; rb += piece) {
        int re = R - rb > piece ? rb + piece : R, n = re - rb;
        int tile128 = matmul_fixed_order_rows(n, groups, S, mt ? mt->rows : 0) == 128, tr = tile128 ? 128 : 64;
        if (S > 1 && ((size_t)ceil_div(n, tr) * tr * col_tiles * MT_COLS * S > mt->ws_floats ||
                      (size_t)ceil_div(n, tr) * col_tiles > mt->n_tickets))
            return cllm_error(CLLM_EINVAL, "matmul: %d rows x %d outputs in %d K slices: the workspace is too small",
                              n, units, S);
        mt_launches[tile128]++;
        mt_split += S > 1;
        float *ws = S > 1 ? mt->ws : NULL;
        unsigned *tk = S > 1 ? mt->tickets : NULL;
        int ldsm = mt ? mt->ldsm : 1;
        rc = tile128 ? mt_launch_tile<OUT, 2>(inp, W, rb, re, K, units, out, h, keys, rargs, groups, S, kslice, ws, tk,
                                              pdl, ldsm, stream)
                     : mt_launch_tile<OUT, 1>(inp, W, rb, re, K, units, out, h, keys, rargs, groups, S, kslice, ws, tk,
                                              pdl, ldsm, stream);
    }
    return rc;
}

void matmul_fixed_order_launches(unsigned long long *tile64, unsigned long long *tile128) {
    *tile64 = mt_launches[0];
    *tile128 = mt_launches[1];
}

unsigned long long matmul_fixed_order_split_launches(void) { return mt_split; }

/* the shared memory above 48 KiB kernel1<OUT, RF> asks for */
template <int OUT, int RF>
static int mt_allow_smem_tile(void) {
    return CUDA_CHECK(cudaFuncSetAttribute(matmul_forward_kernel1<OUT, RF>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mt_shape<RF>::smem));
}
/* ... for both row tiles of epilogue OUT */
template <int OUT>
static int mt_allow_smem(void) {
    int rc = mt_allow_smem_tile<OUT, 1>();
    return rc ? rc : mt_allow_smem_tile<OUT, 2>();
}

int matmul_fixed_order_init(void) {
    int rc, dev = 0, sms = 0;
    if ((rc = CUDA_CHECK(cudaGetDevice(&dev))) ||
        (rc = CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev))))
        return rc;
    if (sms > 0) mt_sms = sms;
    if ((rc = mt_allow_smem<EPI_F32>()) || (rc = mt_allow_smem<EPI_ADD>()) || (rc = mt_allow_smem<EPI_SWIGLU>()) ||
        (rc = mt_allow_smem<EPI_QKV_ROPE>()) || (rc = mt_allow_smem<EPI_ARGMAX>()))
        return rc;
    return 0;
}

int matmul_argmax_forward(argmax_key_t *keys, const floatX *inp, const floatX *weight, int R, int C, int OC, int pdl,
                          const mt_cfg *mt, cudaStream_t stream) {
    return mt_launch<EPI_ARGMAX>(inp, weight, R, C, OC, NULL, NULL, keys, NULL, pdl, mt, stream);
}

int matmul_residual_forward(float *x, const floatX *inp, const floatX *weight, int R, int C, int OC, int pdl,
                            const mt_cfg *mt, cudaStream_t stream) {
    return mt_launch<EPI_ADD>(inp, weight, R, C, OC, x, NULL, NULL, NULL, pdl, mt, stream);
}

int matmul_swiglu_forward(floatX *h, const floatX *inp, const floatX *Wgu, int R, int C, int F, int pdl,
                          const mt_cfg *mt, cudaStream_t stream) {
    return mt_launch<EPI_SWIGLU>(inp, Wgu, R, C, F, NULL, h, NULL, NULL, pdl, mt, stream);
}

int matmul_qkv_rope_forward(const qkv_rope_args *ra, const floatX *inp, const floatX *Wqkv, int R, int C, int pdl,
                            const mt_cfg *mt, cudaStream_t stream) {
    int QKV = (ra->NH + 2 * ra->NKV) * ra->HS;
    return mt_launch<EPI_QKV_ROPE>(inp, Wqkv, R, C, QKV, NULL, NULL, NULL, ra, pdl, mt, stream);
}

/* out (R, OC) fp32; inp (R, C) bf16; weight (OC, C) bf16; with rows_per_call
 * G > 0, out and inp hold ceil(R/G)*G rows; MATMUL_FIXED_ORDER: kernel1 */
int matmul_forward(cublasHandle_t handle, float *out, const floatX *inp, const floatX *weight,
                   int R, int C, int OC, int rows_per_call, int pdl, const mt_cfg *mt, cudaStream_t stream) {
    if (rows_per_call == MATMUL_FIXED_ORDER)
        return mt_launch<EPI_F32>(inp, weight, R, C, OC, out, NULL, NULL, NULL, pdl, mt, stream);
    const float alpha = 1.0f, beta = 0.0f;
    /* The handle's stream only when it is not already this one: cublasSetStream
     * also puts cuBLAS back on its default workspace pool, dropping the
     * workspace the forward state gave it (cublasSetWorkspace) so that its
     * products can be captured: on the default pool every captured product
     * allocated its workspace inside the graph */
    cudaStream_t cur = NULL;
    int rc = CUBLAS_CHECK(cublasGetStream(handle, &cur));
    if (!rc && cur != stream) rc = CUBLAS_CHECK(cublasSetStream(handle, stream));
    int G = rows_per_call > 0 ? rows_per_call : R;
    for (int r0 = 0; !rc && r0 < R; r0 += G)
        rc = CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, OC, G, C, &alpha, weight,
                                       CUDA_R_16BF, C, inp + (size_t)r0 * C, CUDA_R_16BF, C, &beta,
                                       out + (size_t)r0 * OC, CUDA_R_32F, OC, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT));
    return rc;
}
