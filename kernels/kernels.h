/* kernels.h: the compute kernels of cllm, one header for every backend.
 *
 * kernels/cpu/ implements these in portable C plus OpenBLAS (the reference);
 * kernels/cuda/ will implement the same names. Layers are named <op>_forward,
 * and each will get an <op>_backward beside it (llm.c style). Kernels never
 * allocate, never fail and never print: callers check shapes and hand in
 * scratch space.
 *
 * Letters in shape comments:
 *   T   tokens in the call (positions of one sequence, or rows of a batch)
 *   C   model width (d_model)          V   vocabulary size
 *   NH  query heads                    NKV key/value heads (GQA: query head h
 *   HS  head size                          reads kv head h / (NH/NKV))
 *   F   feed-forward width             OC  output channels of a matmul
 *   P   past tokens already in the KV cache (the new tokens sit at P..P+T-1)
 *   S   capacity of a KV cache slice (rows), S >= P + T
 * Every tensor is row-major fp32 with the last letter varying fastest.
 *
 * Threads: kernels_set_threads(n) sets how many threads the kernels may use:
 * OpenBLAS' own threads for the matrix products, pthreads for attention over
 * (token, head) pairs. Results do not depend on the thread count (every output
 * element is reduced by one thread, in a fixed order).
 */
#ifndef CLLM_KERNELS_H
#define CLLM_KERNELS_H

#include <stddef.h>

/* Use up to n threads (n >= 1; values < 1 mean 1). Not thread-safe: call it
 * once before the kernels run. */
void kernels_set_threads(int n);
int kernels_threads(void);

/* ---- embedding: out[t] = wte[tokens[t]] -------------------------------- */
/* out (T, C); tokens (T), each in [0, V) (the caller checks); wte (V, C) */
void embedding_forward(float *out, const int *tokens, const float *wte, int T, int C);

/* ---- RMSNorm: out = x * rsqrt(mean(x^2) + eps) * weight, fp32 ---------- */
/* out (T, C); inp (T, C); weight (C). out may equal inp.
 * rstd (T) receives 1/rms per row for the backward pass; may be NULL. */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                     int T, int C, float eps);

/* ---- matmul: out = inp W^T (+ bias) via cblas_sgemm ------------------- */
/* out (T, OC); inp (T, C); weight (OC, C) (HF/PyTorch Linear layout);
 * bias (OC) or NULL. out must not alias inp or weight. */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int T, int C, int OC);

/* ---- RoPE, HF half-split ("rotate_half"), in place --------------------- */
/* x (T, NH, HS) with NH any head count (query or key heads); pos (T) the
 * absolute position of each row. The first D = rope_dim dims of each head are
 * rotated as pairs (x[i], x[i + D/2]), i < D/2, by angle pos * inv_freq[i],
 * inv_freq[i] = 1 / theta^(2i/D), every step in fp32 exactly as HF computes it:
 *   out[i]       = x[i] cos - x[i + D/2] sin
 *   out[i + D/2] = x[i + D/2] cos + x[i] sin.
 * Dims D..HS-1 (partial rotary) are left alone. */
void rope_forward(float *x, const int *pos, int T, int NH, int HS, int rope_dim, float theta);

/* ---- causal attention over a KV cache (GQA) ---------------------------- */
/* out (T, NH, HS); q (T, NH, HS), already RoPE'd;
 * kc, vc (S, NKV, HS): rows 0..P+T-1 are valid (the new tokens' k and v
 * already written at rows P..P+T-1). New token t sits at position P + t and
 * attends to cache rows 0..P+t. Scores are scaled by 1/sqrt(HS); the softmax
 * is fp32 with the max subtracted.
 * att: scratch of kernels_threads() * (P + T) floats.
 * preatt/probabilities are not kept: the backward pass recomputes them. */
void attention_forward(float *out, const float *q, const float *kc, const float *vc,
                       float *att, int T, int P, int NH, int NKV, int HS);

/* ---- SwiGLU: out = silu(gate) * up, silu(z) = z / (1 + exp(-z)) -------- */
/* out (T, F); gate (T, F); up (T, F). out may equal gate or up. */
void swiglu_forward(float *out, const float *gate, const float *up, int T, int F);

/* ---- residual: out = a + b --------------------------------------------- */
/* out, a, b (N). out may equal a or b. */
void residual_forward(float *out, const float *a, const float *b, size_t N);

/* ---- argmax over the last axis ----------------------------------------- */
/* out (T); logits (T, V). Ties go to the lowest id (torch.argmax on CPU). */
void argmax_forward(int *out, const float *logits, int T, int V);

#endif
