/* decode.h: greedy decoding on top of cllm_forward: autoregressive (AR) and
 * Jacobi with a KV cache, as in the CLLM reference (Kou et al., 2024).
 *
 * Jacobi, one block of n tokens y_1..y_n after the committed prefix x:
 *   y_1 is the token the previous pass predicted after x, so it is already
 *   correct; y_2..y_n start as a guess. Each iteration feeds the uncommitted
 *   tail w = y_f..y_n (w_0 = y_f correct) at its positions and takes the
 *   argmax o_j after each w_j. The longest prefix with w_{j+1} == o_j (j < k)
 *   is accepted: w_0..w_k are final, their KV entries are kept, the rest of
 *   the cache is rolled back; o_k is the next correct token and the tail
 *   becomes o_k..o_{R-2} (the Jacobi update y_{i+1} <- o_i). The block is
 *   done when a whole tail agrees (the fixed point); its last output o starts
 *   the next block. Every pass fixes at least one token, so Jacobi never needs
 *   more passes than AR, and its output equals AR's token for token (up to
 *   fp32 near-ties between the two shapes of computation).
 * Decoding stops at the first EOS that becomes final (it is not part of the
 * output; eos = 1) or after max_new_tokens tokens; a block is shortened so it
 * never runs past max_new_tokens.
 */
#ifndef CLLM_DECODE_H
#define CLLM_DECODE_H

#include <stdint.h>

#include "forward.h"
#include "rng.h"

enum cllm_decode_method { CLLM_DECODE_AR = 0, CLLM_DECODE_JACOBI = 1 };

/* The initial guess y_2..y_n of a Jacobi block. */
enum cllm_guess {
    CLLM_GUESS_PROMPT = 0,  /* tokens drawn uniformly from the prompt (the reference's) */
    CLLM_GUESS_PAD = 1,     /* pad_id everywhere */
    CLLM_GUESS_LAST = 2,    /* the previous block's fixed point y*_2..y*_n (the first
                               block: drawn from the prompt, as CLLM_GUESS_PROMPT) */
};

/* Called with tokens as they become final (never the EOS); a non-zero return
 * stops decoding and cllm_decode returns that value. */
typedef int (*cllm_token_cb)(void *ctx, const int *tokens, int n);

typedef struct cllm_decode_opts {
    int method;            /* enum cllm_decode_method */
    int n;                 /* Jacobi block size, >= 1 (default 16) */
    int max_new_tokens;    /* >= 1 (default 256) */
    int guess;             /* enum cllm_guess */
    int pad_id;            /* token of CLLM_GUESS_PAD */
    int eos_id;            /* stop token; -1: none */
    uint64_t seed;         /* for CLLM_GUESS_PROMPT */
    int trace;             /* record every Jacobi iteration */
    cllm_token_cb on_tokens; /* optional */
    void *cb_ctx;
} cllm_decode_opts;

typedef struct cllm_decode_result {
    int *tokens;           /* (n_tokens) generated tokens, EOS excluded */
    int n_tokens;
    int steps;             /* forward passes, the prompt's (prefill) included */
    int prompt_steps;      /* of which the prompt took (one per chunk) */
    int eos;               /* stopped at EOS */
    /* trace (Jacobi with opts.trace), one entry per pass after the prefill */
    int n_iter;
    int trace_n;           /* row width of iter_state (= opts.n) */
    int *iter_block;       /* (n_iter) block index, from 0 */
    int *iter_len;         /* (n_iter) tokens in that block (n, fewer for a last short one) */
    int *iter_state;       /* (n_iter, trace_n) the whole block y as fed, committed part
                              included; -1 past iter_len */
    int *iter_accepted;    /* (n_iter) tokens of the block made final by this pass (at an EOS:
                              up to it, whatever the guess agreed on behind it) */
} cllm_decode_result;

void cllm_decode_opts_init(cllm_decode_opts *o);

/* Decode after prompt (n_prompt >= 1 tokens) in sequence seq of kv (which is
 * reset first). Needs f->max_T >= opts.n (the prompt is fed in chunks of
 * max_T) and kv->cap >= n_prompt + max_new_tokens. Fills r (free it with
 * cllm_decode_result_free, also after a failure). Returns 0 or a CLLM_E* code
 * (or the callback's non-zero value). */
int cllm_decode(cllm_fwd *f, cllm_kv *kv, int seq, const int *prompt, int n_prompt,
                const cllm_decode_opts *o, cllm_decode_result *r);

/* ---- step by step: several sequences in one forward call -----------------
 * cllm_decode is this loop for one sequence:
 *   cllm_decoder_init(&d, kv, seq, prompt, P, o, r, f);
 *   while (!d.done) {
 *       T = cllm_decoder_next(&d, f->max_T, &s, tokens);   // its next step
 *       cllm_forward_batch(f, kv, &s, 1, tokens);
 *       cllm_decoder_take(&d, kv, f->argmax);              // its rows' argmax
 *   }
 * A caller with B decoders (cllm-gen --batch) puts every decoder's step into
 * one cllm_forward_batch call and hands each its own rows' argmax. A step is
 * a prompt chunk of up to `budget` tokens, one AR token, or one Jacobi
 * iteration (all its rows or none). The result of each sequence is the one
 * cllm_decode gives it alone (the forward is batch-invariant: forward.h). */
typedef struct cllm_decoder {
    const cllm_decode_opts *o;
    cllm_decode_result *r;
    const int *prompt;
    int P, seq, vocab;
    int done;              /* nothing left to feed */
    int fed;               /* prompt tokens in the cache */
    int step_T;            /* rows of the step handed out by cllm_decoder_next */
    /* Jacobi */
    int *y, *prev;         /* (n) the block as fed, the previous block's fixed point */
    int have_prev, block, m, base, fixed;
    cllm_rng rng;          /* the initial guesses (CLLM_GUESS_PROMPT) */
    size_t cap_iter;
} cllm_decoder;

/* Start decoding prompt (n_prompt >= 1) in sequence seq of kv (reset first)
 * with f's limits (f->max_T >= o->n for Jacobi, the vocabulary). Fills r as
 * cllm_decode does (free it with cllm_decode_result_free, also after a
 * failure). Returns 0 or a CLLM_E* code. */
int cllm_decoder_init(cllm_decoder *d, cllm_kv *kv, int seq, const int *prompt, int n_prompt,
                      const cllm_decode_opts *o, cllm_decode_result *r, const cllm_fwd *f);
/* Whether the next step is a prompt chunk (else a decoding step). */
static inline int cllm_decoder_in_prompt(const cllm_decoder *d) { return d->fed < d->P; }
/* The next step as one sequence of a call: fills *s and tokens (s->T ids)
 * and returns s->T, or 0 when the step needs more than budget rows (a Jacobi
 * iteration or an AR token is never split; a prompt chunk is cut to budget). */
int cllm_decoder_next(cllm_decoder *d, int budget, cllm_fwd_seq *s, int *tokens);
/* Take the step's results: argmax of its rows (row 0 = its first row).
 * Returns 0, a CLLM_E* code, or the token callback's non-zero value. */
int cllm_decoder_take(cllm_decoder *d, cllm_kv *kv, const int *argmax);
void cllm_decoder_free(cllm_decoder *d);

void cllm_decode_result_free(cllm_decode_result *r);

#endif
