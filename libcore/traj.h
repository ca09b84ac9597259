/* traj.h: the work behind cllm-traj: collect Jacobi trajectories (the training
 * data of consistency training, Kou et al. 2024, §3.2 "Jacobi trajectory
 * collection") and write one traj record per chunk.
 *
 * For a prompt x the answer is produced in chunks of n tokens. Chunk c has the
 * context ctx = x ‖ y*_0 ‖ … ‖ y*_{c-1} (the prompt plus every earlier fixed
 * point: the record's prompt and prefix) and is solved by plain Jacobi
 * iteration of the whole n-token window, as the reference does:
 *
 *   y(0)        the initial guess: n tokens drawn at random (--init)
 *   y(j+1)      f(y(j)), f(y)_1 = argmax p(. | ctx), f(y)_i = argmax p(. | ctx, y_<i)
 *   y* = y(k)   the first state with f(y) = y (greedy AR's next n tokens)
 *
 * The record keeps every state y(0)..y(k-1) (each a full n-token window, as
 * fed to the model) and the fixed point y*. If y* holds the end-of-sequence
 * token, the chunk is cut after its first EOS (the EOS is the last token of
 * `fixed`, eos = true), every state is cut to the same length, and states
 * that already equal the cut fixed point are dropped (the cut window
 * converged there). Collection of a prompt stops after an EOS chunk or once
 * max_new_tokens tokens were made (rounded up to whole chunks, like the
 * reference's `itr * n < max_new_seq_len`).
 *
 * Results do not depend on the batch size: every prompt's random draws come
 * from its own generator seeded by (seed, prompt id), each sequence has its
 * own KV cache rows, and records are written in input order.
 */
#ifndef CLLM_TRAJ_H
#define CLLM_TRAJ_H

#include <stdint.h>

#include "model.h"
#include "prompts.h"
#include "rng.h"

/* The initial guess y(0) of every chunk. */
enum cllm_traj_init {
    CLLM_TRAJ_INIT_PROMPT = 0, /* tokens drawn uniformly, with replacement, from the
                                  chunk's context (prompt + prefix): the reference's */
    CLLM_TRAJ_INIT_VOCAB = 1,  /* tokens drawn uniformly from the vocabulary */
    CLLM_TRAJ_INIT_PAD = 2,    /* the pad token everywhere */
};

typedef struct cllm_traj_stats {
    uint64_t prompts;          /* prompts finished */
    uint64_t records;          /* traj records written */
    uint64_t forwards;         /* forward passes, prefill chunks included */
    uint64_t ticks;            /* steps of the whole batch (every active slot one forward) */
    uint64_t calls;            /* forward calls (a tick's slots share them: 1 a tick where
                                  the rows fit and cllm_fwd_one_route allows mixing) */
    uint64_t limit_calls;      /* those of them a tick made because its rows exceeded the
                                  call's row limit (a route's calls after its first) */
    uint64_t iterations;       /* Jacobi iterations (window forwards) */
    uint64_t rows;             /* window rows fed (n per iteration with full_windows) */
    uint64_t tokens;           /* fixed-point tokens produced */
    uint64_t states;           /* states written (augmented ones included) */
} cllm_traj_stats;

typedef struct cllm_traj_opts {
    int n;                     /* block size, >= 1 (16) */
    int max_new_tokens;        /* >= 1 (256) */
    int init;                  /* enum cllm_traj_init */
    int aug;                   /* add the reference's augmented states */
    int labels;                /* attach the prompt's reference answer, tokenized */
    int full_windows;          /* feed the whole window every iteration, as the
                                  reference does, instead of only the rows after its
                                  final part (a baseline; the same records where the
                                  forward is batch-invariant) */
    int batch_invariant;       /* CUDA: every call through the fixed-order products, so
                                  records do not depend on --batch (CLLM_FWD_INVARIANT) */
    uint64_t seed;
    int batch;                 /* sequences in flight, >= 1 (1); one forward call per
                                  step for all of them */
    int device;                /* enum cllm_device (forward.h) */
    int eos_id;                /* -1: the model's (config, then tokenizer) */
    int pad_id;                /* -1: the model's pad token (config, tokenizer), else 0 */
    const char *output;        /* NULL: stdout */
    int force;                 /* write a stream to a terminal */
    int argc;                  /* the command line, for the header */
    char *const *argv;
    /* Called after every finished prompt (optional). */
    void (*on_progress)(void *ctx, const cllm_traj_stats *s);
    void *progress_ctx;
} cllm_traj_opts;

void cllm_traj_opts_init(cllm_traj_opts *o);

/* Collect the trajectories of every prompt of src and write them as a stream.
 * stats (may be NULL) receives the totals. Returns 0, CLLM_EINTR when a signal
 * stopped it (the stream is then closed
 * with an end record marked "interrupted"), or a CLLM_E*
 * code. */
int cllm_traj_run(const cllm_model *m, cllm_prompts *src, const cllm_traj_opts *o,
                  cllm_traj_stats *stats);

/* The reference's augmentation of one chunk's states (exposed for tests).
 * states holds k rows of len tokens, row j at states + j*stride; fixed holds
 * len tokens. For every state j = k-2, k-3, ..., 2 (the reference's loop)
 * with w > 1 tokens that differ from fixed, a copy with floor(w/2) of those
 * tokens, chosen at random with rng, replaced by the fixed point's is made.
 * The copies go to aug (room for k rows of stride tokens) in the order
 * j = 2, 3, ... (the reference prepends each to the list as it loops down).
 * Returns how many were made (>= 0) or CLLM_ENOMEM. */
int cllm_traj_augment(const int *states, int k, int stride, const int *fixed, int len,
                      cllm_rng *rng, int *aug);

#endif
