/* kernels_cuda.h: the CUDA kernels of cllm's inference forward, one op per
 * .cu file beside this header (llm.c style: <op>_forward_kernel<N> inside,
 * <op>_forward launchers here, the stream last). Launchers return 0 or a
 * cllm error code (the launch is checked; see common.h); they never
 * allocate and never synchronise.
 *
 * Precision: weights and the inputs of matrix products are bf16 (floatX);
 * the residual stream, matrix-product outputs, q, the norms' weights and all
 * accumulation are fp32. The KV cache is bf16.
 *
 * Letters in shape comments (as kernels/kernels.h, plus):
 *   R    rows of the call: a ragged batch, each sequence's new tokens back
 *        to back (forward.h); a kernel never needs to know which sequence
 *        a row belongs to beyond its cache slot and position
 *   N    rows the LM head runs for (gathered, N <= R)
 *   QKV  NH*HS + 2*NKV*HS (q, k, v side by side in one row)
 *   KD   NKV*HS;  CAP positions per cached sequence;  S sequences in the cache
 * pdl (the launchers' last argument before the stream): launch with
 * programmatic stream serialization (common.h): the kernel may be scheduled
 * while its predecessor runs, and waits for it before touching anything
 * the predecessor writes. Only for kernels whose predecessor is a kernel
 * (after a copy or memset: 0).
 *
 * Per-call data that changes from step to step (token ids, positions, cache
 * slots, gathered rows) is read from device arrays, never passed by value, so
 * a captured CUDA graph of one row layout stays valid from step to step:
 *   pos  (R)  the position of row r in its sequence; it attends to keys
 *             0..pos[r] of its slot
 *   slot (R)  the cache slot (0..S-1) of row r's sequence
 *   rows (N)  the rows gathered for the LM head
 */
#ifndef CLLM_KERNELS_CUDA_H
#define CLLM_KERNELS_CUDA_H

#include "common.h"

/* ---- embedding.cu: out[r] = wte[tokens[r]] ----------------------------- */
/* out (R, C) fp32; tokens (R) in [0, V) (the host checks); wte (V, C) bf16 */
int embedding_forward(float *out, const int *tokens, const floatX *wte, int R, int C,
                      cudaStream_t stream);

/* ---- rmsnorm.cu: xn = x * rsqrt(mean(x^2) + eps) * weight -------------- */
/* Output row i (of n) reads input row src(i) = rows ? rows[i] : i (rows: the
 * LM head's gather, NULL for every row in place).
 * xn (n, C) bf16; x (R, C) fp32; rows (n) or NULL; weight (C) fp32 */
int rmsnorm_forward(floatX *xn, const float *x, const float *weight, const int *rows, int n,
                    int C, float eps, int pdl, cudaStream_t stream);
/* Fused residual add: x[src] += proj[src], then xn[i] = RMSNorm(x[src]) * weight.
 * Rows that are not gathered are left alone (after the last layer only the LM
 * head's rows matter). xn (n, C) bf16; x (R, C) fp32 in place; proj (R, C) fp32 */
int residual_rmsnorm_forward(floatX *xn, float *x, const float *proj, const float *weight,
                             const int *rows, int n, int C, float eps, int pdl, cudaStream_t stream);

/* ---- rope.cu: bias, RoPE and the KV-cache write after the QKV product --- */
/* qkv (R, QKV) fp32, the output of xn Wqkv^T; bias (QKV) fp32 or NULL;
 * inv_freq (rope_dim/2) fp32, computed on the host exactly as the CPU's
 * rope_forward does (1 / powf(theta, (float)(2i) / (float)rope_dim)).
 * Writes q (R, NH, HS) fp32 rotated, and the rotated k and plain v of row r
 * into cache row (slot[r], pos[r]) of kc, vc (S, CAP, KD) bf16 (one layer's
 * slice). HF half-split pairs (x[i], x[i + D/2]), angle (float)pos[r] *
 * inv_freq[i] in fp32, dims >= rope_dim pass through. */
int qkv_rope_forward(float *q, floatX *kc, floatX *vc, const float *qkv, const float *bias,
                     const float *inv_freq, const int *pos, const int *slot, int R, int NH,
                     int NKV, int HS, int rope_dim, int cap, int pdl, cudaStream_t stream);
/* The same work in a product's epilogue (matmul16.cu, matmul.cu): where q
 * and the cache slices go, the bias, the table, the row tables. Needs
 * rope_dim % 16 == 0, (HS - rope_dim) % 16 == 0 (qkv_rope_fusable; KD is
 * then a multiple of 16 too). */
typedef struct qkv_rope_args {
    float *q;
    floatX *kc, *vc;
    const float *bias, *inv_freq;
    const int *pos, *slot;
    int NH, NKV, HS, rope_dim, cap;
} qkv_rope_args;
int qkv_rope_fusable(int NH, int NKV, int HS, int rope_dim);

/* ---- attention.cu: causal GQA attention over the KV cache -------------- */
/* out (R, NH, HS) bf16; q (R, NH, HS) fp32 after RoPE; kc, vc (S, CAP, KD)
 * bf16, one layer. Row r, head h reads kv head h / (NH/NKV) of slot slot[r],
 * keys 0..pos[r]; scores scaled by 1/sqrt(HS), fp32 softmax with the max
 * subtracted. max_keys >= max_r pos[r] + 1 sizes the shared memory (one
 * float per key; a graph captures it, so pass a fixed bound such as CAP).
 * Needs HS % 8 == 0 and HS <= 256. pdl: launched with programmatic stream
 * serialization (common.h): the keys before each row's own are asked into
 * L2 while the previous kernel (which writes q and the row's own key) runs.
 * threads: a block's (attention_threads_supported: 128, 256, 512); the
 * bits depend on it. */
int attention_threads_supported(int threads);
int attention_forward(floatX *out, const float *q, const floatX *kc, const floatX *vc,
                      const int *pos, const int *slot, int R, int NH, int NKV, int HS, int cap,
                      int max_keys, int threads, int pdl, cudaStream_t stream);
/* The same on the tensor cores (attention.cu's kernel2), for HS in {16, 32,
 * 64, 128} (attention_tiled_supported): the rows come in segments, segment
 * s = rows segs[s] .. segs[s + 1] - 1, each up to 16 rows of one slot;
 * segs (R + 1) device ints, segs[s] = R past the last segment; max_segs
 * (<= R) bounds their count (a graph captures it: pass a bound that holds
 * for every call of this shape). q is rounded to bf16 for the products, p
 * too; no max_keys limit. A row's result does not depend on the other rows
 * of its segment. */
int attention_tiled_supported(int HS);
int attention_tiled_forward(floatX *out, const float *q, const floatX *kc, const floatX *vc, const int *pos,
                            const int *slot, const int *segs, int max_segs, int R, int NH, int NKV, int HS,
                            int cap, int pdl, cudaStream_t stream);
/* Largest max_keys attention_forward accepts for head size HS on this device
 * (shared memory per block, at any thread count); 0 with an error recorded
 * when it cannot ask. */
int attention_max_keys(int HS, int *max_keys);

/* ---- swiglu.cu: h = silu(gate) * up ------------------------------------ */
/* h (R, F) bf16; gu (R, 2F) fp32: row r holds gate (F) then up (F), the
 * output of one product with [Wgate; Wup] (2F, C) */
int swiglu_forward(floatX *h, const float *gu, int R, int F, int pdl, cudaStream_t stream);

/* ---- argmax.cu: per row, the lowest id wins a tie ---------------------- */
/* The result travels as a 64-bit key, so that partial results (blocks of the
 * LM head's fused epilogue) combine with one atomicMax: the value's bits
 * ordered as unsigned (high half) and ~id (low half): a larger key is the
 * larger value, or the equal value with the lower id. NaN is never a
 * candidate; key 0 (no candidate: a row of NaN) reads as id 0, as does a row
 * of -inf (id 0 wins the tie), as on the CPU. */
typedef unsigned long long argmax_key_t;
__device__ static inline argmax_key_t argmax_key(float v, int id) {
    unsigned u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((argmax_key_t)u << 32) | (unsigned)~(unsigned)id;
}
__host__ __device__ static inline int argmax_key_id(argmax_key_t key) {
    return key ? (int)~(unsigned)key : 0;
}
/* keys (R); logits (R, V) fp32 */
int argmax_forward(argmax_key_t *keys, const float *logits, int R, int V, int pdl, cudaStream_t stream);

/* ---- matmul.cu: out = inp W^T via cublasGemmEx ------------------------- */
/* out (R, OC) fp32; inp (R, C) bf16; weight (OC, C) bf16 (PyTorch Linear
 * layout). bf16 inputs, fp32 accumulation (CUBLAS_COMPUTE_32F), fp32 out.
 * rows_per_call G > 0: in pieces of exactly G rows, one cuBLAS shape for
 * every R (batch-invariant; out and inp padded to a multiple of G rows);
 * 0: one call. Sets the handle's stream. MATMUL_FIXED_ORDER: matmul.cu's own
 * tensor-core kernel, one launch, batch-invariant by construction (C % 16
 * == 0; no padding). */
enum { MATMUL_FIXED_ORDER = -1 };
/* How a forward state runs the fixed-order kernel. K slices: with kslice >
 * 0 and K > kslice, ceil(K / kslice) blocks share each output tile, each
 * summing its slice of K in order (an mma chain), and the tile's last block
 * adds the slices' sums in slice order and runs the epilogue; so a product
 * of few rows has that many times the blocks and a chain that many times
 * shorter (at 555 rows, SmolLM2's down product was 81 blocks of 24 chained
 * K chunks). The slices fix the order of every output's sum whatever R is:
 * still batch-invariant, but other bits than K in one piece (kslice 0).
 * The LM head's argmax epilogue always takes K in one piece. */
typedef struct {
    int rows;            /* row tile: 0 by shape, 64 or 128 (the same bits) */
    int kslice;          /* K per slice, a multiple of 16; 0: K in one piece */
    float *ws;           /* (ws_floats) the slices' partial tiles */
    size_t ws_floats;
    int ws_rows;         /* a call of more rows is launched in pieces of ws_rows (same bits) */
    unsigned *tickets;   /* (n_tickets) per output tile, its slices done; zero between launches */
    size_t n_tickets;
    int ldsm;            /* fragments by ldmatrix (1) or 32-bit shared loads (0): the same registers,
                            so the same bits (common.h ldsm_x4) */
} mt_cfg;
/* Once per device before the fixed-order kernel's first launch (its 54 or
 * 81 KiB of shared memory are above the default limit); 0 or the recorded
 * error. */
int matmul_fixed_order_init(void);
/* The fixed-order kernel's row tile for R rows, out_groups groups of 16
 * outputs and `slices` K slices: rows if it is 64 or 128, else (0) by
 * shape. The tile changes no bit of any output (the same mma chain per
 * output either way). */
int matmul_fixed_order_rows(int R, int out_groups, int slices, int rows);
/* K slices of a product with inner size K (1: K in one piece) */
int matmul_fixed_order_slices(int K, int kslice);
/* The workspace (floats) and tickets a product of up to `rows` rows with
 * w_rows rows of W (OC; 2F for gate/up) and inner size K needs (0, 0 when
 * K is in one piece). */
size_t matmul_fixed_order_ws_floats(int rows, int w_rows, int K, int kslice);
size_t matmul_fixed_order_tickets(int rows, int w_rows, int K, int kslice);
/* Launches of the fixed-order kernel so far in this process, by row tile,
 * and how many of them had K in slices (counted when enqueued or captured;
 * tests). */
void matmul_fixed_order_launches(unsigned long long *tile64, unsigned long long *tile128);
unsigned long long matmul_fixed_order_split_launches(void);
/* mt: the fixed-order kernel's configuration (ignored on cuBLAS' route;
 * NULL: tiles by shape, K in one piece) */
int matmul_forward(cublasHandle_t handle, float *out, const floatX *inp, const floatX *weight,
                   int R, int C, int OC, int rows_per_call, int pdl, const mt_cfg *mt, cudaStream_t stream);
/* The fixed-order product with the op after it in its epilogue
 * (epilogue.h); each one's sums are matmul_forward's with
 * MATMUL_FIXED_ORDER and the same mt, bit for bit, and the fused op's
 * elements those of its own kernel, so fusing changes no result. C % 16 == 0.
 * argmax: keys (R) get each row of inp W^T's argmax_key (atomicMax: the
 * caller zeroes keys first); no (R, OC) output is written (the LM head when
 * no logits are wanted); K in one piece whatever mt says. */
int matmul_argmax_forward(argmax_key_t *keys, const floatX *inp, const floatX *weight, int R, int C, int OC,
                          int pdl, const mt_cfg *mt, cudaStream_t stream);
/* residual: x (R, OC) fp32 += inp W^T */
int matmul_residual_forward(float *x, const floatX *inp, const floatX *weight, int R, int C, int OC, int pdl,
                            const mt_cfg *mt, cudaStream_t stream);
/* swiglu: h (R, F) bf16 = silu(g) u, [g u] = inp [Wgate; Wup]^T (swiglu_forward's
 * elements); Wgu (2F, C), F % 8 == 0 */
int matmul_swiglu_forward(floatX *h, const floatX *inp, const floatX *Wgu, int R, int C, int F, int pdl,
                          const mt_cfg *mt, cudaStream_t stream);
/* qkv + RoPE: inp Wqkv^T, then qkv_rope_forward's work (ra; qkv_rope_fusable) */
int matmul_qkv_rope_forward(const qkv_rope_args *ra, const floatX *inp, const floatX *Wqkv, int R, int C, int pdl,
                            const mt_cfg *mt, cudaStream_t stream);

/* ---- matmul16.cu: products of up to 16 rows on the tensor cores ------- */
/* With the ops around them fused; batch-invariant by construction (a row's
 * result never depends on the other rows or on R). R in 1..16, K % 16 == 0,
 * K <= 2048 (mm16_supported); W (OC, K) bf16 as matmul_forward's. pdl:
 * launched with programmatic stream serialization (common.h): the kernel
 * asks for its first weights while the previous kernel still runs. */
enum { MM16_IN_ROWS, MM16_IN_NORM };
int mm16_supported(int K);
/* out (R, OC) fp32 = bf16(RMSNorm(x[src(i)]) * nw) W^T; x (*, K) fp32; rows (R) or NULL.
 * keys (R) or NULL: also the argmax of each out row into keys (atomicMax of
 * argmax_key; the caller zeroes keys first) */
int mm16_norm_forward(float *out, argmax_key_t *keys, const float *x, const float *nw, const int *rows,
                      float eps, const floatX *W, int R, int K, int OC, int pdl, cudaStream_t stream);
/* x (R, OC) fp32 += inp W^T; inp (R, K) bf16 */
int mm16_residual_forward(float *x, const floatX *inp, const floatX *W, int R, int K, int OC, int pdl,
                          cudaStream_t stream);
/* h (R, F) bf16 = silu(g) * u, [g u] = bf16(RMSNorm(x) * nw) [Wgate; Wup]^T; Wgu (2F, K), F % 8 == 0 */
int mm16_norm_swiglu_forward(floatX *h, const float *x, const float *nw, float eps, const floatX *Wgu,
                             int R, int K, int F, int pdl, cudaStream_t stream);
/* qkv_rope_forward's work fused into the QKV product's epilogue: the
 * product of bf16(RMSNorm(x) * nw) with Wqkv (QKV, K), then bias, RoPE, q
 * and the cache writes exactly as qkv_rope_forward (its arguments in ra;
 * qkv_rope_fusable). */
int mm16_norm_qkv_rope_forward(const qkv_rope_args *ra, const float *x, const float *nw, float eps,
                               const floatX *Wqkv, int R, int K, int pdl, cudaStream_t stream);

#endif
