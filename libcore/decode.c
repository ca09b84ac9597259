/* decode.c: greedy AR and Jacobi decoding (see decode.h for the algorithm).
 *
 * Invariants while decoding (P = prompt length, out = r->tokens):
 *   - out[0..n_tokens) are final (equal to greedy AR) and none is the EOS;
 *   - the KV cache of the sequence holds the prompt plus out[0..n_tokens-1),
 *     i.e. everything but the last final token, which is the next input
 *     ("pending": y_1 of the next block).
 */
#include "decode.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "rng.h"

void cllm_decode_opts_init(cllm_decode_opts *o) {
    memset(o, 0, sizeof *o);
    o->method = CLLM_DECODE_AR;
    o->n = 16;
    o->max_new_tokens = 256;
    o->guess = CLLM_GUESS_PROMPT;
    o->pad_id = 0;
    o->eos_id = -1;
    o->seed = 0;
}

void cllm_decode_result_free(cllm_decode_result *r) {
    if (!r) return;
    free(r->tokens);
    free(r->iter_block);
    free(r->iter_len);
    free(r->iter_state);
    free(r->iter_accepted);
    memset(r, 0, sizeof *r);
}

/* Make tokens t[0..n) final, in order; stop at EOS or max_new_tokens. */
static int emit(cllm_decoder *d, const int *t, int n) {
    cllm_decode_result *r = d->r;
    int k = 0, stop = 0;
    for (; k < n && !stop; k++) {
        if (t[k] == d->o->eos_id) { r->eos = 1; stop = 1; break; }
        r->tokens[r->n_tokens++] = t[k];
        if (r->n_tokens >= d->o->max_new_tokens) stop = 1;
    }
    if (stop) d->done = 1;
    if (k > 0 && d->o->on_tokens) {
        int rc = d->o->on_tokens(d->o->cb_ctx, r->tokens + r->n_tokens - k, k);
        if (rc) { d->done = 1; return rc; }
    }
    return 0;
}

static int trace_add(cllm_decoder *d, int block, const int *y, int len, int accepted) {
    cllm_decode_result *r = d->r;
    int n = r->trace_n;
    if ((size_t)r->n_iter + 1 > d->cap_iter) {
        size_t cap = d->cap_iter ? 2 * d->cap_iter : 64;
        int *b = cllm_realloc(r->iter_block, cap * sizeof(int));
        if (!b) return CLLM_ENOMEM;
        r->iter_block = b;
        int *l = cllm_realloc(r->iter_len, cap * sizeof(int));
        if (!l) return CLLM_ENOMEM;
        r->iter_len = l;
        int *a = cllm_realloc(r->iter_accepted, cap * sizeof(int));
        if (!a) return CLLM_ENOMEM;
        r->iter_accepted = a;
        int *s = cllm_realloc(r->iter_state, cap * (size_t)n * sizeof(int));
        if (!s) return CLLM_ENOMEM;
        r->iter_state = s;
        d->cap_iter = cap;
    }
    int i = r->n_iter++;
    r->iter_block[i] = block;
    r->iter_len[i] = len;
    r->iter_accepted[i] = accepted;
    for (int j = 0; j < n; j++) r->iter_state[(size_t)i * n + j] = j < len ? y[j] : -1;
    return 0;
}

/* Open the next Jacobi block: y_1 is the pending final token, y_2..y_m the guess. */
static void block_start(cllm_decoder *d) {
    const cllm_decode_opts *o = d->o;
    cllm_decode_result *r = d->r;
    int m = o->max_new_tokens - r->n_tokens;   /* tokens this block will make final */
    if (m > o->n) m = o->n;
    d->m = m;
    d->base = d->P + r->n_tokens - 1;          /* position of y_1 */
    d->fixed = 0;                              /* y[0..fixed) final and cached */
    d->y[0] = r->tokens[r->n_tokens - 1];
    for (int i = 1; i < m; i++) {
        if (o->guess == CLLM_GUESS_PAD) d->y[i] = o->pad_id;
        else if (o->guess == CLLM_GUESS_LAST && d->have_prev) d->y[i] = d->prev[i];
        else d->y[i] = d->prompt[cllm_rng_below(&d->rng, (uint64_t)d->P)];
    }
}

int cllm_decoder_init(cllm_decoder *d, cllm_kv *kv, int seq, const int *prompt, int n_prompt,
                      const cllm_decode_opts *o, cllm_decode_result *r, const cllm_fwd *f) {
    memset(d, 0, sizeof *d);
    memset(r, 0, sizeof *r);
    d->o = o;
    d->r = r;
    d->done = 1;
    if (n_prompt < 1) return cllm_error(CLLM_EINVAL, "decode: empty prompt");
    if (o->max_new_tokens < 1) return cllm_error(CLLM_EINVAL, "decode: max_new_tokens %d < 1", o->max_new_tokens);
    if (o->method != CLLM_DECODE_AR && o->method != CLLM_DECODE_JACOBI)
        return cllm_error(CLLM_EINVAL, "decode: unknown method %d", o->method);
    int jac = o->method == CLLM_DECODE_JACOBI;
    if (jac && (o->n < 1 || o->n > f->max_T))
        return cllm_error(CLLM_EINVAL, "decode: block size %d not in 1..%d", o->n, f->max_T);
    if (jac && o->guess == CLLM_GUESS_PAD && (o->pad_id < 0 || o->pad_id >= f->m->cfg.vocab))
        return cllm_error(CLLM_EINVAL, "decode: pad id %d out of range", o->pad_id);
    if (jac && o->guess != CLLM_GUESS_PROMPT && o->guess != CLLM_GUESS_PAD && o->guess != CLLM_GUESS_LAST)
        return cllm_error(CLLM_EINVAL, "decode: unknown initial guess %d", o->guess);
    if (n_prompt > kv->cap - o->max_new_tokens)
        return cllm_error(CLLM_ELIMIT, "decode: prompt (%d) + max new tokens (%d) exceed the context of %d",
                          n_prompt, o->max_new_tokens, kv->cap);
    int rc = cllm_kv_rollback(kv, seq, 0);
    if (rc) return rc;
    r->tokens = cllm_malloc((size_t)o->max_new_tokens * sizeof(int));
    if (!r->tokens) return CLLM_ENOMEM;
    r->trace_n = jac ? o->n : 0;
    if (jac) {
        d->y = cllm_malloc((size_t)o->n * 2 * sizeof(int));
        if (!d->y) return CLLM_ENOMEM;
        d->prev = d->y + o->n;
    }
    cllm_rng_seed(&d->rng, o->seed);
    d->prompt = prompt;
    d->P = n_prompt;
    d->seq = seq;
    d->vocab = f->m->cfg.vocab;
    d->done = 0;
    return 0;
}

void cllm_decoder_free(cllm_decoder *d) {
    if (!d) return;
    free(d->y);
    d->y = d->prev = NULL;
}

int cllm_decoder_next(cllm_decoder *d, int budget, cllm_fwd_seq *s, int *tokens) {
    if (d->done || budget < 1) return 0;
    cllm_decode_result *r = d->r;
    if (d->fed < d->P) {                           /* a prompt chunk */
        int T = d->P - d->fed < budget ? d->P - d->fed : budget;
        int last = d->fed + T == d->P;
        *s = (cllm_fwd_seq){ d->seq, d->fed, T, last ? T - 1 : T };
        memcpy(tokens, d->prompt + d->fed, (size_t)T * sizeof(int));
        return d->step_T = T;
    }
    if (d->o->method == CLLM_DECODE_AR) {          /* the pending token */
        *s = (cllm_fwd_seq){ d->seq, d->P + r->n_tokens - 1, 1, 0 };
        tokens[0] = r->tokens[r->n_tokens - 1];
        return d->step_T = 1;
    }
    int R = d->m - d->fixed;                       /* the uncommitted tail */
    if (R > budget) return 0;
    *s = (cllm_fwd_seq){ d->seq, d->base + d->fixed, R, 0 };
    memcpy(tokens, d->y + d->fixed, (size_t)R * sizeof(int));
    return d->step_T = R;
}

int cllm_decoder_take(cllm_decoder *d, cllm_kv *kv, const int *out) {
    const cllm_decode_opts *o = d->o;
    cllm_decode_result *r = d->r;
    int rc;
    if (d->step_T < 1) return cllm_error(CLLM_EINVAL, "decode: results taken for no step");
    r->steps++;
    if (d->fed < d->P) {
        int got = d->step_T;
        d->step_T = 0;
        d->fed += got;
        r->prompt_steps++;
        if (d->fed < d->P) return 0;
        /* The prompt is in: the argmax after its last token is the first final one. */
        if ((rc = emit(d, &out[got - 1], 1))) return rc;
        if (!d->done && o->method == CLLM_DECODE_JACOBI) block_start(d);
        return 0;
    }
    d->step_T = 0;
    if (o->method == CLLM_DECODE_AR) return emit(d, &out[0], 1);

    int R = d->m - d->fixed, k = 0;                /* w_1..w_k agree with o_0..o_{k-1} */
    int *y = d->y + d->fixed;
    while (k < R - 1 && y[k + 1] == out[k]) k++;
    /* The pass makes o_0..o_k final, but decoding ends at the first EOS
     * among them: the tokens the guess agreed on behind it are no output, so
     * the trace counts up to the EOS (cllm-eval's fast-forwarded tokens). */
    int made = k + 1;
    for (int j = 0; j < made; j++)
        if (out[j] == o->eos_id) { made = j + 1; break; }
    if (o->trace && (rc = trace_add(d, d->block, d->y, d->m, made))) return rc;
    /* Jacobi update of the tail: y_{i+1} <- o_i (o_0..o_{k-1} change nothing). */
    for (int j = k; j < R - 1; j++) y[j + 1] = out[j];
    /* w_0..w_k are final and cached; o_k is the next final token. */
    if ((rc = cllm_kv_rollback(kv, d->seq, d->base + d->fixed + k + 1))) return rc;
    d->fixed += k + 1;
    if ((rc = emit(d, out, k + 1))) return rc;
    if (d->fixed >= d->m) {                        /* the block reached its fixed point */
        memcpy(d->prev, d->y, (size_t)d->m * sizeof(int));
        for (int i = d->m; i < o->n; i++) d->prev[i] = d->prev[d->m - 1];
        d->have_prev = 1;
        d->block++;
        if (!d->done) block_start(d);
    }
    return 0;
}

int cllm_decode(cllm_fwd *f, cllm_kv *kv, int seq, const int *prompt, int n_prompt,
                const cllm_decode_opts *o, cllm_decode_result *r) {
    cllm_decoder d;
    int rc = cllm_decoder_init(&d, kv, seq, prompt, n_prompt, o, r, f);
    int *tokens = rc ? NULL : cllm_malloc((size_t)f->max_T * sizeof(int));
    if (!rc && !tokens) rc = CLLM_ENOMEM;
    while (!rc && !d.done) {
        cllm_fwd_seq s;
        if (!cllm_decoder_next(&d, f->max_T, &s, tokens)) {
            rc = cllm_error(CLLM_EINVAL, "decode: a step needs more than %d rows", f->max_T);
            break;
        }
        rc = cllm_forward_batch(f, kv, &s, 1, tokens);
        if (!rc) rc = cllm_decoder_take(&d, kv, f->argmax);
    }
    free(tokens);
    cllm_decoder_free(&d);
    return rc;
}
