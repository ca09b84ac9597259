/* train_kernels.h: the CUDA kernels of cllm's training step, one op per .cu
 * file beside this header, forward and backward side by side (llm.c style:
 * <op>_forward / <op>_backward launchers, <op>_..._kernel1 inside, the stream
 * last). Everything lives in namespace cllm_train so that no name meets the
 * inference kernels of kernels/cuda/kernels_cuda.h. The host side that
 * strings them together is cuda_train.cu (API: libcore/cuda_train.h).
 *
 * Launchers return 0 or a cllm error code (the launch is checked, common.h);
 * they never allocate and never synchronise.
 *
 * Precision: inputs of matrix products are bf16 (floatX), every product
 * accumulates in fp32 (CUBLAS_COMPUTE_32F); the residual stream, its
 * gradient, rstd, the log-sum-exps, the parameter gradients, the master
 * weights and the AdamW moments are fp32. Saved activations that only feed
 * products or attention (normed inputs, q/k/v, attention output, gate/up)
 * are bf16.
 *
 * Backward rule (as kernels/kernels.h): parameter gradients and the
 * residual-stream gradient dx are accumulated (+=), other activation
 * gradients are written (=) unless a comment says otherwise.
 *
 * Letters (as kernels/kernels.h, plus):
 *   B   sequences of the micro-batch, packed one after another (no padding:
 *       a product or an element-wise pass costs the real rows only)
 *   row0 (B + 1) device array: sequence b is rows row0[b] ..
 *       row0[b+1] - 1, position t at row row0[b] + t; row0[0] = 0,
 *       every sequence has 1 .. T rows
 *   fork (B) device array or NULL (no forks): sequence b may fork off an
 *       earlier one (cllm_train_forward_fork of train_fwd.h): fork[b].par
 *       >= 0 is that sequence, whose first fork[b].pre rows b's rows see as
 *       their prefix (b's row t sits at position pre + t); a sequence has at
 *       most one fork, fork[b].child (-1: none), and a fork none of its own
 *   T   the longest sequence (sizes the grids of the per-sequence kernels)
 *   R   rows, R = row0[B]
 *   QD  NH*HS;  KD  NKV*HS;  QKV  QD + 2*KD (q, k, v side by side in a row)
 *   N   loss rows (rows whose logits are computed), NC of them per chunk
 */
#ifndef CLLM_CUDA_TRAIN_KERNELS_H
#define CLLM_CUDA_TRAIN_KERNELS_H

#include "../common.h"

namespace cllm_train {

struct seq_fork { int par, pre, child; };

/* The position of sequence b's row 0: its prefix's length for a fork, else 0. */
__device__ __forceinline__ int seq_pos0(const seq_fork *fork, int b) {
    return fork && fork[b].par >= 0 ? fork[b].pre : 0;
}

/* Keys of a row of sequence b: for a fork, the first np rows of its parent
 * (pkb: column kofs of its row 0, e.g. the k of kv head g) come first, then the sequence's own rows
 * (kb); key j's k row is key_row(...), its v row KD further. */
__device__ __forceinline__ int fork_prefix(const seq_fork *fork, const int *row0, int b, const floatX *qkv,
                                           size_t QKV, size_t kofs, const floatX **pkb) {
    if (!fork || fork[b].par < 0) {
        *pkb = nullptr;
        return 0;
    }
    *pkb = qkv + (size_t)row0[fork[b].par] * QKV + kofs;
    return fork[b].pre;
}
__device__ __forceinline__ const floatX *key_row(const floatX *pkb, const floatX *kb, int np, int j, size_t QKV) {
    return j < np ? pkb + (size_t)j * QKV : kb + (size_t)(j - np) * QKV;
}

/* A grid over (B, T) in x (x = b*T + t, as the per-row kernels launch) to
 * the packed layout: sequence b, position t, its length n and its first row;
 * 0 when t is past the sequence's end (the block has nothing to do). */
__device__ __forceinline__ int packed_row(const int *row0, int x, int T, int *b, int *t, int *n,
                                          size_t *base) {
    *b = x / T;
    *t = x % T;
    *base = (size_t)row0[*b];
    *n = row0[*b + 1] - row0[*b];
    return *t < *n;
}

/* ---- embedding.cu ------------------------------------------------------- */
/* out (R, C) fp32 = wte[tok[r]] from the fp32 master table wte (V, C);
 * tok (R); a row with tok -1 reads row 0 (as the CPU's padding does). */
int embedding_forward(float *out, const int *tok, const float *wte, int R, int C,
                      cudaStream_t stream);
/* dwte (V, C) += dout[r] at row tok[r] for every r with tok[r] >= 0 (atomic
 * adds: repeated tokens accumulate in no fixed order). dout (R, C) fp32. */
int embedding_backward(float *dwte, const float *dout, const int *tok, int R, int C,
                       cudaStream_t stream);

/* ---- rmsnorm.cu --------------------------------------------------------- */
/* With b: res = a + b (fp32, written to res), then y = res; without: y = a.
 * xn (R, C) bf16 = y * rstd * weight, rstd (R) = 1/sqrt(mean(y^2) + eps).
 * res (R, C) may be NULL when b is NULL. weight (C) fp32. */
int rmsnorm_forward(floatX *xn, float *rstd, float *res, const float *a, const float *b,
                    const float *weight, int R, int C, float eps, cudaStream_t stream);
/* dx (R, C) += r (dout w - x r^2/C sum_k dout_k w_k x_k), r = rstd[row];
 * dxb (R, C) bf16 = the new dx (the next products' input), or NULL;
 * dweight (C) += sum_rows dout x r (a second kernel, atomic column sums).
 * dout (R, C) fp32; x (R, C) fp32 the forward's input; weight (C); rstd (R). */
int rmsnorm_backward(float *dx, floatX *dxb, float *dweight, const float *dout, const float *x,
                     const float *weight, const float *rstd, int R, int C, cudaStream_t stream);

/* ---- matmul.cu: cuBLAS, bf16 inputs, fp32 accumulation ------------------ */
/* out (R, OC) row stride ldo = inp (R, C) W^T; W (OC, C) bf16 (PyTorch Linear
 * layout). out is fp32 (out_bf16 = 0) or bf16 (out_bf16 = 1). */
int matmul_forward(cublasHandle_t h, void *out, int out_bf16, int ldo, const floatX *inp,
                   const floatX *W, int R, int C, int OC, cudaStream_t stream);
/* dinp (R, C) (= when beta 0, += when beta 1) = dout W; dinp fp32, or bf16
 * (out_bf16 = 1, beta 0 only); dout (R, OC) bf16 with row stride ldd;
 * W (OC, C) bf16. */
int matmul_backward_dinp(cublasHandle_t h, void *dinp, int out_bf16, float beta, const floatX *dout,
                         int ldd, const floatX *W, int R, int C, int OC, cudaStream_t stream);
/* dW (OC, C) fp32 += dout^T inp; dout (R, OC) bf16 row stride ldd; inp (R, C) bf16. */
int matmul_backward_dweight(cublasHandle_t h, float *dW, const floatX *dout, int ldd,
                            const floatX *inp, int R, int C, int OC, cudaStream_t stream);
/* dbias (OC) += sum_r dout[r]; dout (R, OC) fp32 with row stride ldd. */
int bias_backward(float *dbias, const float *dout, int ldd, int R, int OC, cudaStream_t stream);

/* ---- rope.cu: bias + HF half-split RoPE on q and k ----------------------- */
/* qkv (R, QKV) bf16 = [RoPE(z_q), RoPE(z_k), z_v], z = y + bias, y (R, QKV)
 * fp32 the product's output; bq (QD), bk, bv (KD) fp32 or all NULL;
 * inv_freq (rope_dim/2) fp32 (the CPU's table); row row0[b] + t at
 * position seq_pos0(fork, b) + t. */
int rope_forward(floatX *qkv, const float *y, const float *bq, const float *bk, const float *bv,
                 const float *inv_freq, const int *row0, const seq_fork *fork, int B, int T, int NH, int NKV,
                 int HS, int rope_dim, cudaStream_t stream);
/* The transposed rotation of dq, dk: dz = RoPE^T(d) for the q and k parts,
 * v passes. d (R, QKV) fp32; dzb (R, QKV) bf16 =; dz32 (R, QKV) fp32 = or NULL
 * (needed for the bias gradients). */
int rope_backward(floatX *dzb, float *dz32, const float *d, const float *inv_freq, const int *row0,
                  const seq_fork *fork, int B, int T, int NH, int NKV, int HS, int rope_dim, cudaStream_t stream);

/* ---- attention.cu, attention_flash.cu: causal GQA self-attention, no cache */
/* out (R, QD) bf16; lse (R, NH) fp32, the softmax's log-sum-exp of the
 * scaled scores (saved for the backward); qkv (R, QKV) bf16 after RoPE.
 * Row (b, t), head h reads kv head h / (NH/NKV) of rows row0[b] ..
 * row0[b] + t, after those of the first fork[b].pre rows of sequence
 * fork[b].par for a fork (train_fwd.h's attention_forward_fork: the same
 * keys in the same order). Needs even HS <= 256.
 * variant 0 (the default): the tensor-core kernels of attention_flash.cu
 * where attention_flash_supported(HS), else kernel1; 1: kernel1 (a warp per
 * key), the reference; 2: kernel2 (a thread per key, scores in shared
 * memory) when its shared memory fits the default 48 KiB and there are no
 * forks, else kernel1. All compute the same sums (the tensor-core ones round
 * p and ds to bf16). */
int attention_forward(floatX *out, float *lse, const floatX *qkv, const int *row0, const seq_fork *fork,
                      int B, int T, int NH, int NKV, int HS, int variant, cudaStream_t stream);
/* dqkv (R, QKV) fp32 = [dq, dk, dv]; Dsum (R, NH) fp32
 * scratch (D of each (row, head), written by the first kernel, read by the
 * second: sum_j p_j dp_j in kernels 1 and 2, do . out in the tensor-core
 * ones); dout (R, QD) bf16; out, qkv, lse as the forward saved them. */
int attention_backward(float *dqkv, float *Dsum, const floatX *dout, const floatX *out,
                       const floatX *qkv, const float *lse, const int *row0, const seq_fork *fork, int B,
                       int T, int NH, int NKV, int HS, int variant, cudaStream_t stream);
/* attention_flash.cu: 1 when the tensor-core kernels take head size HS (16,
 * 32, 64, 128); their launchers (arguments as above). */
int attention_flash_supported(int HS);
int attention_forward_flash_launch(floatX *out, float *lse, const floatX *qkv, const int *row0,
                                   const seq_fork *fork, int B, int T, int NH, int NKV, int HS,
                                   cudaStream_t stream);
int attention_backward_flash_launch(float *dqkv, float *Dsum, const floatX *dout, const floatX *out,
                                    const floatX *qkv, const float *lse, const int *row0, const seq_fork *fork,
                                    int B, int T, int NH, int NKV, int HS, cudaStream_t stream);

/* ---- swiglu.cu ---------------------------------------------------------- */
/* h (R, F) bf16 = silu(gate) * up; gu (R, 2F) bf16, row = [gate (F), up (F)]. */
int swiglu_forward(floatX *h, const floatX *gu, int R, int F, cudaStream_t stream);
/* dgu (R, 2F) bf16 = [dgate, dup]; dh (R, F) fp32; gu as the forward read it. */
int swiglu_backward(floatX *dgu, const float *dh, const floatX *gu, int R, int F,
                    cudaStream_t stream);

/* ---- loss.cu: the LM head's loss rows ----------------------------------- */
/* xg (N, C) bf16 = xn[rows[i]]; xn (R, C) bf16. */
int rows_gather(floatX *xg, const floatX *xn, const int *rows, int N, int C, cudaStream_t stream);
/* dx[rows[i]] = dxg[i] (dx (R, C) fp32, zeroed by the caller); dxg (N, C) fp32. */
int rows_scatter(float *dx, const float *dxg, const int *rows, int N, int C, cudaStream_t stream);
/* Loss rows i0 .. i0+NC-1 of a micro-batch, logits (NC, V) fp32 (chunk row
 * k is loss row i0 + k). Per loss row i, with q = softmax(logits):
 *   target[i] >= 0: cross-entropy with label smoothing eps (loss.h's
 *     cllm_ce_row): loss = (1-eps)(lse - x[target]) + eps (lse - mean x),
 *     d += ce_scale[i] (q - eps/V - (1-eps) [v == target]);
 *   teacher[i] >= 0: soft cross-entropy against p = softmax(tlogits[teacher])
 *     (cllm_soft_ce_row): loss = -sum p (x - lse), d += soft_scale[i] (q - p);
 *   save[i] >= 0: tlogits[save[i]] = logits (fp32 copy, for a later call).
 * dlogits (NC, V) bf16 = d (NULL: no gradient, forward only); losses (N, 2)
 * fp32 = the unscaled [cross-entropy, soft cross-entropy] of each row (0 for
 * a part the row does not have). tlogits (S, V) fp32. */
int loss_forward_backward(floatX *dlogits, float *losses, float *tlogits, const float *logits,
                          const int *target, const float *ce_scale, const int *teacher,
                          const float *soft_scale, const int *save, float eps, int i0, int NC,
                          int V, cudaStream_t stream);

/* ---- adamw.cu ----------------------------------------------------------- */
/* One AdamW step over n fp32 parameters with adamw.c's per-element
 * arithmetic (torch's): g = grads * gscale (gscale 1: as is; else the clip
 * factor, applied as one fp32 product as cllm_grad_clip does),
 * p *= decay (unless no_decay[i]; wd 0: never), m = fma(w1, g - m, m),
 * v = v b2 + w2 g^2, p -= step_size (m / (sqrt(v) / bc2_sqrt + eps)),
 * and the bf16 compute copy pb = bf16(p). no_decay (n) or NULL. */
int adamw_update(float *p, floatX *pb, float *m, float *v, const float *grads,
                 const unsigned char *no_decay, size_t n, float gscale, int wd, float decay,
                 float w1, float b2, float w2, float step_size, float bc2_sqrt, float eps,
                 cudaStream_t stream);
/* *out (one device double, zeroed by the caller) += sum g^2 over n floats
 * (double per thread and per block, one atomic add per block). */
int grad_sumsq(double *out, const float *g, size_t n, cudaStream_t stream);
/* dst (n) bf16 = src (n) fp32, round to nearest even. */
int cast_bf16(floatX *dst, const float *src, size_t n, cudaStream_t stream);

}  // namespace cllm_train

#endif
