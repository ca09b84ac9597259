/* train_fwd.h: the forward pass that keeps its activations, and its backward
 * pass, for training on the CPU backend (fp32).
 *
 * A micro-batch is B sequences of up to T tokens each (padded; lens[b] gives
 * the real length, rows past it are ignored and get zero gradient; inside, the
 * sequences are packed, so the padding costs no work). There is no
 * KV cache: each sequence attends causally to itself from position 0. Logits
 * come out for every row; the loss code turns them into dlogits (the gradient
 * of the loss with respect to each logit, zero for rows that carry no loss),
 * and cllm_train_backward accumulates parameter gradients (+=, so gradient
 * accumulation over micro-batches is a loop) into grads, which has the layout
 * of model->params (n_params floats).
 * Letters: B sequences, T rows per sequence, others as in model.h.
 *
 * The training forward computes the same function as cllm_forward with an
 * empty cache (same kernels; logits agree to ~1e-6 relative). The backward pass
 * leaves the saved activations alone, so it may run more than once per forward
 * (e.g. for two losses on the same logits). Threads: kernels_set_threads /
 * cllm_set_threads (OpenBLAS for the products, pthreads for attention); the
 * result does not depend on the thread count beyond BLAS rounding. Memory:
 * about (2C + 2 NH*HS + 2 NKV*HS + 2F) floats per token per layer, plus scratch.
 * Gradient checks and tolerances: docs/TRAINING.md, "Backward pass".
 */
#ifndef CLLM_TRAIN_FWD_H
#define CLLM_TRAIN_FWD_H

#include "model.h"

typedef struct cllm_act cllm_act;   /* saved activations, private */

/* Activations for micro-batches of up to B x T tokens of model m (later calls
 * may pass m or another model of the same config, e.g. a copy). 0 or CLLM_E*. */
int cllm_act_init(cllm_act **out, const cllm_model *m, int B, int T);
void cllm_act_free(cllm_act *a);

/* Forward: tokens (B, T) (each in [0, V) for rows < lens[b]), lens (B) with
 * 1 <= lens[b] <= T. logits (B, T, V) is written for rows < lens[b]. Saves
 * what the backward pass needs. 0 or CLLM_E*. */
int cllm_train_forward(cllm_act *a, const cllm_model *m, const int *tokens, const int *lens,
                       int B, int T, float *logits);

/* The same forward with the LM head on a window of rows per sequence only:
 * rows t in [lm_from[b], lm_from[b] + lm_n[b]) of sequence b (within lens[b];
 * lm_n[b] may be 0), their logits packed sequence after sequence into
 * logits (sum of lm_n, V). Losses usually sit on a few rows of a long
 * sequence (a CLLM window after its prompt): the LM head is ~20 % of a row's
 * work for SmolLM2, and the (B, T, V) logits and dlogits of the full layout
 * would be the largest buffers of a step. The backward pass then takes
 * dlogits in this packed layout. */
int cllm_train_forward_lm(cllm_act *a, const cllm_model *m, const int *tokens, const int *lens,
                          int B, int T, const int *lm_from, const int *lm_n, float *logits);

/* A fork of a sequence: n tokens (tokens, n ints) at positions at .. at + n - 1
 * that see the sequence's first `at` rows and then themselves (causally), as
 * the sequence of those `at` tokens followed by these n would, without those
 * rows computed again. n = 0: no fork. */
typedef struct cllm_fork { const int *tokens; int at, n; } cllm_fork;

/* cllm_train_forward_lm with forks (fork (B), or NULL: none): fork b of n
 * rows branches off sequence b at 0 <= at <= lens[b], at + n <= T. The LM
 * head runs on every row of every fork; their logits follow the windows'
 * ((B, T, V) without windows), fork after fork, in b order. The activations
 * must hold the rows of the sequences and the forks together (sum of lens
 * and of n <= the B x T of cllm_act_init). The CLLM step uses it to score
 * x || y* (the AR loss, the teacher) and x || y(j) (the student) in one
 * pass: the student forks off after x (docs/TRAINING.md, "One pass for
 * both"). The backward pass sums the gradients of both, also through the
 * shared rows. */
int cllm_train_forward_fork(cllm_act *a, const cllm_model *m, const int *tokens, const int *lens, int B, int T,
                            const int *lm_from, const int *lm_n, const cllm_fork *fork, float *logits);

/* Backward of the last forward: dlogits in that forward's layout, (B, T, V)
 * (rows >= lens[b] are ignored) or packed windows, then the forks' rows; grads (n_params) +=
 * d loss / d params. 0 or CLLM_E*. */
int cllm_train_backward(cllm_act *a, const cllm_model *m, const float *dlogits, float *grads);
/* What both trainers check of a call's rows: lens[b] in 1..T, the ids of
 * tokens (B, T) in [0, V) for rows < lens[b], forks (or NULL) as
 * cllm_train_forward_fork asks; *rows = the sum of lens and of the forks'
 * n. 0, or CLLM_EINVAL with a message starting with `what`. */
int cllm_check_rows(const int *tokens, const int *lens, int B, int T, const cllm_fork *fork, int V, const char *what,
                    size_t *rows);

/* The packed layout both trainers (CPU and CUDA) compute on: the real tokens
 * of the (B, T) padded rows one sequence after another into out (sum of lens
 * ints), row0 (B + 1) the first row of each sequence. Returns the rows,
 * row0[B]. lens must be valid (1..T). */
int cllm_pack_rows(const int *tokens, const int *lens, int B, int T, int *out, int *row0);

#endif
