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

typedef struct dec {
    const cllm_decode_opts *o;
    cllm_decode_result *r;
    int done;
    size_t cap_iter;
} dec;

/* Make tokens t[0..n) final, in order; stop at EOS or max_new_tokens. */
static int emit(dec *d, const int *t, int n) {
    cllm_decode_result *r = d->r;
    int k = 0;
    for (; k < n && !d->done; k++) {
        if (t[k] == d->o->eos_id) { r->eos = 1; d->done = 1; break; }
        r->tokens[r->n_tokens++] = t[k];
        if (r->n_tokens >= d->o->max_new_tokens) d->done = 1;
    }
    if (k > 0 && d->o->on_tokens) {
        int rc = d->o->on_tokens(d->o->cb_ctx, r->tokens + r->n_tokens - k, k);
        if (rc) return rc;
    }
    return 0;
}

static int trace_add(dec *d, int block, const int *y, int len, int accepted) {
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

/* Feed the prompt in chunks of max_T; leaves the argmax after its last token
 * in *next. */
static int prefill(cllm_fwd *f, cllm_kv *kv, int seq, const int *prompt, int P, int *next,
                   cllm_decode_result *r) {
    for (int s = 0; s < P; s += f->max_T) {
        int T = P - s < f->max_T ? P - s : f->max_T;
        int last = s + T == P;
        int rc = cllm_forward(f, kv, seq, s, prompt + s, T, last ? T - 1 : T);
        if (rc) return rc;
        r->steps++;
        if (last) *next = f->argmax[T - 1];
    }
    return 0;
}

static int decode_ar(dec *d, cllm_fwd *f, cllm_kv *kv, int seq, int P) {
    cllm_decode_result *r = d->r;
    while (!d->done) {
        int pos = P + r->n_tokens - 1;
        int rc = cllm_forward(f, kv, seq, pos, &r->tokens[r->n_tokens - 1], 1, 0);
        if (rc) return rc;
        r->steps++;
        if ((rc = emit(d, &f->argmax[0], 1))) return rc;
    }
    return 0;
}

static int decode_jacobi(dec *d, cllm_fwd *f, cllm_kv *kv, int seq, const int *prompt, int P,
                         int *y, int *prev) {
    const cllm_decode_opts *o = d->o;
    cllm_decode_result *r = d->r;
    cllm_rng rng;
    cllm_rng_seed(&rng, o->seed);
    int have_prev = 0;
    for (int block = 0; !d->done; block++) {
        int m = o->max_new_tokens - r->n_tokens;   /* tokens this block will make final */
        if (m > o->n) m = o->n;
        int base = P + r->n_tokens - 1;            /* position of y_1 */
        y[0] = r->tokens[r->n_tokens - 1];
        for (int i = 1; i < m; i++) {
            if (o->guess == CLLM_GUESS_PAD) y[i] = o->pad_id;
            else if (o->guess == CLLM_GUESS_LAST && have_prev) y[i] = prev[i];
            else y[i] = prompt[cllm_rng_below(&rng, (uint64_t)P)];
        }
        int fixed = 0;                             /* y[0..fixed) final and cached */
        while (fixed < m && !d->done) {
            int R = m - fixed;
            int rc = cllm_forward(f, kv, seq, base + fixed, y + fixed, R, 0);
            if (rc) return rc;
            r->steps++;
            const int *out = f->argmax;
            int k = 0;                             /* w_1..w_k agree with o_0..o_{k-1} */
            while (k < R - 1 && y[fixed + k + 1] == out[k]) k++;
            if (o->trace && (rc = trace_add(d, block, y, m, k + 1))) return rc;
            /* Jacobi update of the tail: y_{i+1} <- o_i (o_0..o_{k-1} change nothing). */
            for (int j = k; j < R - 1; j++) y[fixed + j + 1] = out[j];
            /* w_0..w_k are final and cached; o_k is the next final token. */
            int keep = base + fixed + k + 1;
            if ((rc = cllm_kv_rollback(kv, seq, keep))) return rc;
            if ((rc = emit(d, out, k + 1))) return rc;
            fixed += k + 1;
        }
        memcpy(prev, y, (size_t)m * sizeof(int));
        for (int i = m; i < o->n; i++) prev[i] = prev[m - 1];
        have_prev = 1;
    }
    return 0;
}

int cllm_decode(cllm_fwd *f, cllm_kv *kv, int seq, const int *prompt, int n_prompt,
                const cllm_decode_opts *o, cllm_decode_result *r) {
    memset(r, 0, sizeof *r);
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
    dec d = {o, r, 0, 0};

    int next;
    if ((rc = prefill(f, kv, seq, prompt, n_prompt, &next, r))) return rc;
    if ((rc = emit(&d, &next, 1))) return rc;
    if (d.done) return 0;
    if (!jac) return decode_ar(&d, f, kv, seq, n_prompt);

    int *y = cllm_malloc((size_t)o->n * 2 * sizeof(int));
    if (!y) return CLLM_ENOMEM;
    rc = decode_jacobi(&d, f, kv, seq, prompt, n_prompt, y, y + o->n);
    free(y);
    return rc;
}
