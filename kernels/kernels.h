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
 * Backward passes (<op>_backward, beside each forward) follow llm.c's rule:
 * gradients of parameters and of the residual stream are accumulated (+=),
 * gradients of other activations are written (=), except where a comment
 * says otherwise (matmul_backward accumulates into dinp, because one input
 * feeds several products: q/k/v, gate/up). "dX" is d loss / d X.
 *
 * Threads: kernels_set_threads(n) sets how many threads the kernels may use:
 * OpenBLAS' own threads for BLAS products, a persistent pool of our own
 * (kernels_parallel) for the AVX-512 matmul and attention. Results do not
 * depend on the thread count (every output element is reduced by one thread,
 * in a fixed order).
 */
#ifndef CLLM_KERNELS_H
#define CLLM_KERNELS_H

#include <stddef.h>

/* Use up to n threads (n >= 1; values < 1 mean 1). Not thread-safe: call it
 * once before the kernels run. */
void kernels_set_threads(int n);
int kernels_threads(void);

/* Run fn(ctx, task, worker) for every task in [0, n_tasks) on the pool, the
 * caller included; returns when all are done. worker (0 .. kernels_threads()-1)
 * names the thread running the task, for per-thread scratch; which worker runs
 * which task varies, so a task must compute the same outputs whoever runs it.
 * Calls from a second thread while a job runs execute inline. */
typedef void (*kernels_task_fn)(void *ctx, int task, int worker);
void kernels_parallel(int n_tasks, kernels_task_fn fn, void *ctx);
/* The same on n_threads (worker 0 .. n_threads-1) instead of kernels_threads():
 * the pool grows for it, and goes back to its size at the next smaller job
 * (for start-up work, libcore/startup.h). */
void kernels_parallel_n(int n_threads, int n_tasks, kernels_task_fn fn, void *ctx);

/* ---- embedding: out[t] = wte[tokens[t]] -------------------------------- */
/* out (T, C); tokens (T), each in [0, V) (the caller checks); wte (V, C) */
void embedding_forward(float *out, const int *tokens, const float *wte, int T, int C);
/* dwte (V, C) += scatter of dout (T, C) by tokens (T): dwte[tokens[t]] += dout[t].
 * With tied embeddings the LM head's dweight goes into the same tensor. */
void embedding_backward(float *dwte, const float *dout, const int *tokens, int T, int C);

/* ---- RMSNorm: out = x * rsqrt(mean(x^2) + eps) * weight, fp32 ---------- */
/* out (T, C); inp (T, C); weight (C). out may equal inp.
 * rstd (T) receives 1/rms per row for the backward pass; may be NULL. */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                     int T, int C, float eps);
/* dinp (T, C) += (residual stream); dweight (C) += (or NULL); dout (T, C);
 * inp (T, C) and rstd (T) as the forward saw and wrote them; weight (C).
 * With r = rstd[t], y = x r w:
 *   dweight[i] += sum_t dout[t,i] x[t,i] r
 *   dinp[t,i]  += r (dout[t,i] w[i] - x[t,i] r^2 / C * sum_k dout[t,k] w[k] x[t,k]) */
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                      const float *weight, const float *rstd, int T, int C);

/* ---- matmul: out = inp W^T (+ bias) ------------------------------------ */
/* out (T, OC); inp (T, C); weight (OC, C) (HF/PyTorch Linear layout);
 * bias (OC) or NULL. out must not alias inp or weight. On AVX-512 CPUs and
 * T <= 512 each output row is bit for bit independent of the other rows
 * (matmul.c), so a batch of sequences gets each the result it gets alone. */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int T, int C, int OC);
/* dinp (T, C) += dout W (accumulates, see above); dweight (OC, C) += dout^T inp;
 * dbias (OC) += sum_t dout[t]. Any of dinp, dweight, dbias may be NULL (skipped).
 * dout (T, OC); inp (T, C); weight (OC, C). cblas_sgemm with beta = 1. */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int T, int C, int OC);

/* ---- RoPE, HF half-split ("rotate_half"), in place --------------------- */
/* x (T, NH, HS) with NH any head count (query or key heads); pos (T) the
 * absolute position of each row. The first D = rope_dim dims of each head are
 * rotated as pairs (x[i], x[i + D/2]), i < D/2, by angle pos * inv_freq[i],
 * inv_freq[i] = 1 / theta^(2i/D), every step in fp32 exactly as HF computes it:
 *   out[i]       = x[i] cos - x[i + D/2] sin
 *   out[i + D/2] = x[i + D/2] cos + x[i] sin.
 * Dims D..HS-1 (partial rotary) are left alone. */
void rope_forward(float *x, const int *pos, int T, int NH, int HS, int rope_dim, float theta);
/* dx (T, NH, HS) in place: d(out) -> d(x), the inverse (transposed) rotation
 *   dx[i]       =  d[i] cos + d[i + D/2] sin
 *   dx[i + D/2] = -d[i] sin + d[i + D/2] cos
 * with the same fp32 angles as the forward; dims D..HS-1 pass through. */
void rope_backward(float *dx, const int *pos, int T, int NH, int HS, int rope_dim, float theta);
/* rope_forward in two halves, for a forward that rotates q and k of every
 * layer at the same positions: the angles' cos and sin once per call, then
 * the rotation per tensor; bit for bit rope_forward's results.
 * cs (T, rope_dim): row t = cos(pos[t] inv_freq[0..D/2)), then the sines. */
void rope_table(float *cs, const int *pos, int T, int rope_dim, float theta);
/* x (T, NH, HS) in place; cs (T, rope_dim) from rope_table. */
void rope_apply(float *x, const float *cs, int T, int NH, int HS, int rope_dim);

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
/* Several sequences in one call (a ragged batch): sequence b owns rows
 * row0[b] .. row0[b+1]-1 of q and out (T_b = row0[b+1] - row0[b] rows, at
 * positions past[b] .. past[b] + T_b - 1) and its own cache kc[b], vc[b]
 * (S, NKV, HS), rows 0..past[b]+T_b-1 valid. Each (row, head) is computed as
 * attention_forward computes it for that sequence alone.
 * out, q (row0[B], NH, HS); kc, vc (B) pointers; row0 (B+1); past (B);
 * att: scratch of kernels_threads() * max_b (past[b] + T_b) floats. */
void attention_forward_batch(float *out, const float *q, const float *const *kc,
                             const float *const *vc, const int *row0, const int *past,
                             float *att, int B, int NH, int NKV, int HS);
/* Training attention over B packed sequences (no cache), some of which may
 * fork from another: sequence b owns rows row0[b] .. row0[b+1] - 1 of q, k,
 * v and out; its row t attends to the first pre[b] rows of sequence par[b]
 * and then to its own rows 0..t, in that order: exactly what a sequence made
 * of those pre[b] rows followed by b's own computes for these rows, without
 * computing the shared rows twice (a CLLM student x || y(j) forking from
 * x || y* after x). par[b] < 0 (or par NULL): no prefix, row t attends to
 * rows 0..t of b, as attention_forward with P = 0. A fork's parent comes
 * before it and has no parent itself (par[b] < b, par[par[b]] < 0), and
 * pre[b] <= the parent's length.
 * out, q (row0[B], NH, HS); k, v (row0[B], NKV, HS), after RoPE; row0 (B+1);
 * par, pre (B) or NULL; att: kernels_threads() * (most keys of a row) floats. */
void attention_forward_fork(float *out, const float *q, const float *k, const float *v, const int *row0,
                            const int *par, const int *pre, float *att, int B, int NH, int NKV, int HS);
/* Backward of attention_forward_fork (par, pre as there; NULL: no forks).
 * Every row of a sequence is packed: sequence b is rows row0[b] .. row0[b+1]
 * - 1 (row0 (B + 1), R = row0[B] rows in all); a row sees at most T keys.
 * dq (R, NH, HS) =; dk, dv (R, NKV, HS) = (GQA: summed over the NH/NKV
 * query heads sharing a kv head, and over the forks that see a row as their
 * prefix); dout (R, NH, HS); q (R, NH, HS), after RoPE; k, v (R, NKV, HS), k
 * after RoPE. The softmax probabilities are recomputed in the forward's exact
 * arithmetic (nothing (T, T) is stored):
 *   dv[j] += p[j] do;  dp[j] = do . v[j];  ds[j] = p[j] (dp[j] - sum_k p[k] dp[k])
 *   dq    += ds[j] k[j] / sqrt(HS);  dk[j] += ds[j] q / sqrt(HS).
 * att: scratch of kernels_threads() * 2 * T floats. Work is split over
 * (sequence without a parent, kv head) pairs, each owning the dk/dv rows of
 * its sequence and its forks and their query heads' dq rows, so results do
 * not depend on the thread count. */
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const int *row0, const int *par, const int *pre,
                        float *att, int B, int T, int NH, int NKV, int HS);

/* ---- SwiGLU: out = silu(gate) * up, silu(z) = z / (1 + exp(-z)) -------- */
/* out (T, F); gate (T, F); up (T, F). out may equal gate or up. */
void swiglu_forward(float *out, const float *gate, const float *up, int T, int F);
/* The same from one product with [Wgate; Wup]: out (T, F); gu (T, 2F), row t
 * holding gate (F) then up (F). */
void swiglu_forward_fused(float *out, const float *gu, int T, int F);
/* dgate, dup (T, F) =; dout, gate, up (T, F). With s = sigmoid(g):
 *   dgate = dout * up * s (1 + g (1 - s)),  dup = dout * g s.
 * dgate may equal dout (each element is read before it is written). */
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, int T, int F);

/* ---- residual: out = a + b --------------------------------------------- */
/* out, a, b (N). out may equal a or b. */
void residual_forward(float *out, const float *a, const float *b, size_t N);
/* da, db (N) += dout (N). (The training backward keeps one residual-stream
 * gradient buffer, for which this is the identity; kept for other callers.) */
void residual_backward(float *da, float *db, const float *dout, size_t N);

/* ---- argmax over the last axis ----------------------------------------- */
/* out (T); logits (T, V). Ties go to the lowest id (torch.argmax on CPU). */
void argmax_forward(int *out, const float *logits, int T, int V);

#endif
