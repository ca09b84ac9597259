/* test_decode.c: greedy Jacobi decoding equals greedy AR token for token.
 *
 *  - tiny random model: several prompts, block sizes 1..16, every initial
 *    guess, with and without an EOS, the trace's invariants;
 *  - SmolLM2-135M-Instruct on GSM8K test prompts (ids from
 *    tests/golden/gsm8k20_ids.txt): by default 3 prompts x 48 new tokens,
 *    n = 16 and 32; CLLM_LONG=1 runs the full check, 20 prompts x 256
 *    new tokens (minutes on 2 cores).
 * AR runs one token per pass (sgemv), Jacobi n at once (sgemm): the logits
 * differ in the last bits, so an argmax whose top-2 margin is that small can
 * flip. Such a flip is reported by prompt, position and margin (NEAR-TIE) and
 * not counted as a failure when the margin is below 1e-4 of the row's scale
 * (the forward's own tolerance); any other difference fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "decode.h"
#include "err.h"
#include "forward.h"
#include "fwd_testutil.h"
#include "kernels.h"
#include "model.h"

static int near_ties;

/* Top-2 margin (and the row's scale) of the AR logits after prompt + out[0..pos). */
static void ar_margin(cllm_fwd *f, cllm_kv *kv, const int *prompt, int P, const int *out, int pos,
                      float *margin, float *scale) {
    int n = P + pos;
    int *seq = malloc((size_t)n * sizeof(int));
    memcpy(seq, prompt, (size_t)P * sizeof(int));
    memcpy(seq + P, out, (size_t)pos * sizeof(int));
    int V = f->m->cfg.vocab;
    for (int s = 0; s < n; s += f->max_T) {
        int T = n - s < f->max_T ? n - s : f->max_T;
        CHECK_OK(cllm_forward(f, kv, 0, s, seq + s, T, s + T == n ? T - 1 : T));
        if (s + T == n) {
            const float *row = f->logits + (size_t)(T - 1) * V;
            float a = -INFINITY, b = -INFINITY, mx = 0;
            for (int v = 0; v < V; v++) {
                if (row[v] > a) { b = a; a = row[v]; } else if (row[v] > b) b = row[v];
                if (fabsf(row[v]) > mx) mx = fabsf(row[v]);
            }
            *margin = a - b;
            *scale = mx;
        }
    }
    free(seq);
}

/* Compare Jacobi's result with AR's; on a difference name it. */
static void compare(const char *what, cllm_fwd *f, cllm_kv *kv, const int *prompt, int P,
                    const cllm_decode_result *ar, const cllm_decode_result *ja) {
    int n = ar->n_tokens < ja->n_tokens ? ar->n_tokens : ja->n_tokens;
    int i = 0;
    while (i < n && ar->tokens[i] == ja->tokens[i]) i++;
    if (i == n && ar->n_tokens == ja->n_tokens && ar->eos == ja->eos) return;
    if (i == n) {
        CHECK_MSG(0, "%s: AR %d tokens (eos %d), Jacobi %d tokens (eos %d), equal prefix", what,
                  ar->n_tokens, ar->eos, ja->n_tokens, ja->eos);
        return;
    }
    float margin = 0, scale = 1;
    ar_margin(f, kv, prompt, P, ar->tokens, i, &margin, &scale);
    if (margin <= 1e-4f * scale) {
        near_ties++;
        printf("NEAR-TIE %s: position %d: AR %d vs Jacobi %d, top-2 margin %.3g (scale %.3g)\n",
               what, i, ar->tokens[i], ja->tokens[i], margin, scale);
    } else {
        CHECK_MSG(0, "%s: position %d: AR %d vs Jacobi %d, AR top-2 margin %.3g (scale %.3g)", what, i,
                  ar->tokens[i], ja->tokens[i], margin, scale);
    }
}

/* Trace invariants: per block, the accepted counts add up to the block
 * length (unless EOS ended it), and the tokens accepted by the block's last
 * pass (its state w_0..w_k, with everything before already final) are the
 * output tokens. Block b covers tokens[start_b .. start_b + len): its y_1 is
 * the token the previous pass made final. A block is shortened so that it
 * never runs past max_new_tokens (decode.h): the last token it makes final,
 * tokens[start_b + len], is at most the max_new-th. */
static void check_trace(const char *what, const cllm_decode_result *r, int n, int max_new) {
    CHECK_EQ_INT(r->trace_n, n);
    int i = 0, start = 0;
    while (i < r->n_iter) {
        int b = r->iter_block[i], len = r->iter_len[i], acc = 0, last = i;
        for (; i < r->n_iter && r->iter_block[i] == b; i++) {
            CHECK(r->iter_accepted[i] >= 1);
            CHECK(r->iter_len[i] == len);
            acc += r->iter_accepted[i];
            last = i;
        }
        CHECK_MSG(acc == len || (i == r->n_iter && r->eos), "%s: block %d accepted %d of %d", what,
                  b, acc, len);
        const int *y = r->iter_state + (size_t)last * n;
        for (int j = 0; j < acc && start + j < r->n_tokens; j++)
            CHECK_MSG(y[j] == r->tokens[start + j], "%s: block %d state[%d] %d vs output %d", what,
                      b, j, y[j], r->tokens[start + j]);
        for (int j = len; j < n; j++) CHECK(y[j] == -1);
        CHECK_MSG(start + len <= max_new - 1, "%s: block %d (tokens %d..%d) runs past max_new_tokens %d", what,
                  b, start, start + len, max_new);
        start += len;
    }
    {   /* the passes make final the tokens after the prompt's, the EOS included, and no more */
        int made = 0;
        for (int k = 0; k < r->n_iter; k++) made += r->iter_accepted[k];
        if (r->n_tokens > 0)
            CHECK_MSG(made == r->n_tokens - 1 + r->eos, "%s: the passes accepted %d tokens, but %d after the "
                      "first were made final (EOS included)", what, made, r->n_tokens - 1 + r->eos);
    }
    if (!r->eos) CHECK_MSG(start == max_new - 1, "%s: blocks end at token %d, not at max_new_tokens %d", what,
                           start, max_new);
}

/* Tokens handed to the token callback, in order. */
typedef struct cb_log { int tokens[64], n, calls, stop_after; } cb_log;

static int log_tokens(void *ctx, const int *t, int n) {
    cb_log *l = ctx;
    for (int i = 0; i < n && l->n < 64; i++) l->tokens[l->n++] = t[i];
    l->calls++;
    return l->stop_after && l->n >= l->stop_after ? 77 : 0;
}

static void test_tiny(void) {
    cllm_config c;
    c = small_config("llama", 2, 48, 4, 2, 12, 96, 32, 1, 0);
    c.pad_id = 0;
    cllm_model m;
    if (random_model(&m, &c, 42)) { CHECK(0); return; }
    cllm_fwd f;
    cllm_kv kv;
    CHECK_OK(cllm_fwd_init(&f, &m, 16));
    CHECK_OK(cllm_kv_init(&kv, &c, 1, 128));
    cllm_rng r;
    cllm_rng_seed(&r, 5);
    int sizes[] = {1, 2, 3, 4, 7, 16};
    int total_steps = 0, total_tokens = 0, total_calls = 0;
    for (int p = 0; p < 4; p++) {
        int P = 3 + 9 * p, prompt[40];
        for (int i = 0; i < P; i++) prompt[i] = (int)cllm_rng_below(&r, (uint64_t)c.vocab);
        for (int e = 0; e < 2; e++) {
            cllm_decode_opts o;
            cllm_decode_opts_init(&o);
            o.max_new_tokens = 45;
            cllm_decode_result ar;
            CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &o, &ar));
            CHECK_EQ_INT(ar.steps, ar.n_tokens + (P + 15) / 16 - 1);
            if (e == 1) {   /* stop at the 20th token's value: its first occurrence */
                o.eos_id = ar.tokens[20];
                cllm_decode_result_free(&ar);
                CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &o, &ar));
                CHECK(ar.eos == 1 && ar.n_tokens <= 20);
            }
            for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
                for (int g = 0; g < 3; g++) {
                    o.method = CLLM_DECODE_JACOBI;
                    o.n = sizes[si];
                    o.guess = g;
                    o.seed = (uint64_t)(p * 100 + g);
                    o.trace = 1;
                    cllm_decode_result ja;
                    cb_log l;   /* the token callback sees the output, in order, never the EOS */
                    memset(&l, 0, sizeof l);
                    o.on_tokens = log_tokens;
                    o.cb_ctx = &l;
                    char what[96];
                    snprintf(what, sizeof what, "tiny prompt %d eos %d n %d guess %d", p, e, o.n, g);
                    CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &o, &ja));
                    compare(what, &f, &kv, prompt, P, &ar, &ja);
                    CHECK_MSG(ja.steps <= ar.steps, "%s: %d steps vs AR %d", what, ja.steps, ar.steps);
                    CHECK_EQ_INT(ja.n_iter, ja.steps - (P + 15) / 16);
                    CHECK_EQ_INT(ja.prompt_steps, (P + 15) / 16);
                    check_trace(what, &ja, o.n, o.max_new_tokens);
                    CHECK_MSG(l.n == ja.n_tokens && !memcmp(l.tokens, ja.tokens, (size_t)l.n * sizeof(int)),
                              "%s: the token callback saw %d tokens, not the output's %d", what, l.n, ja.n_tokens);
                    total_calls += l.calls;
                    total_steps += ja.steps;
                    total_tokens += ja.n_tokens;
                    cllm_decode_result_free(&ja);
                }
            }
            o.method = CLLM_DECODE_AR;
            o.on_tokens = NULL;
            cllm_decode_result_free(&ar);
        }
    }
    printf("tiny: Jacobi %.3f tokens/step overall\n", (double)total_tokens / total_steps);
    CHECK(total_calls < total_tokens);   /* some passes made several tokens final at once */

    /* argument errors */
    cllm_decode_opts o;
    cllm_decode_opts_init(&o);
    cllm_decode_result rr;
    int pr[2] = {1, 2};
    o.method = CLLM_DECODE_JACOBI;
    o.n = 17;   /* > max_T */
    CHECK_EQ_INT(cllm_decode(&f, &kv, 0, pr, 2, &o, &rr), CLLM_EINVAL);
    cllm_decode_result_free(&rr);
    o.n = 4;
    o.max_new_tokens = 127;   /* 2 + 127 > cap 128 */
    CHECK_EQ_INT(cllm_decode(&f, &kv, 0, pr, 2, &o, &rr), CLLM_ELIMIT);
    cllm_decode_result_free(&rr);
    o.max_new_tokens = 1;
    CHECK_OK(cllm_decode(&f, &kv, 0, pr, 2, &o, &rr));
    CHECK_EQ_INT(rr.n_tokens, 1);
    CHECK_EQ_INT(rr.steps, 1);
    cllm_decode_result_free(&rr);
    CHECK_EQ_INT(cllm_decode(&f, &kv, 0, pr, 0, &o, &rr), CLLM_EINVAL);
    cllm_decode_result_free(&rr);

    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    cllm_model_free(&m);
    TEST_OK("tiny_jacobi_equals_ar");
}

/* A pass that reaches the EOS makes final the tokens up to it and no more,
 * also when its guesses agree past it: the trace's accepted counts (and so
 * cllm-eval's fast-forwarded tokens) stop at the EOS. A guess of pad tokens
 * with the pad = the EOS (SmolLM2, the tiny test models) puts the EOS right
 * behind the token the model ends on, so some pass agrees past it. */
static void test_eos_mid_pass(void) {
    cllm_config c = small_config("llama", 2, 48, 4, 2, 12, 96, 32, 1, 0);
    cllm_model m;
    if (random_model(&m, &c, 1)) { CHECK(0); return; }
    cllm_fwd f;
    cllm_kv kv;
    CHECK_OK(cllm_fwd_init(&f, &m, 16));
    CHECK_OK(cllm_kv_init(&kv, &c, 1, 128));
    cllm_rng r;
    cllm_rng_seed(&r, 1);
    int runs = 0;
    for (int p = 0; p < 3; p++) {
        int P = 3 + p, prompt[8];
        for (int i = 0; i < P; i++) prompt[i] = (int)cllm_rng_below(&r, (uint64_t)c.vocab);
        for (int e = 0; e < c.vocab; e++)
            for (int g = 0; g < 2; g++) {
                cllm_decode_opts o;
                cllm_decode_opts_init(&o);
                o.method = CLLM_DECODE_JACOBI;
                o.n = 16;
                o.max_new_tokens = 40;
                o.guess = g;
                o.eos_id = o.pad_id = e;
                o.seed = (uint64_t)p;
                o.trace = 1;
                cllm_decode_result ja;
                char what[96];
                snprintf(what, sizeof what, "eos mid-pass: prompt %d eos %d guess %d", p, e, g);
                CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &o, &ja));
                check_trace(what, &ja, o.n, o.max_new_tokens);
                runs += ja.eos;
                cllm_decode_result_free(&ja);
            }
    }
    CHECK(runs > 0);
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    cllm_model_free(&m);
    TEST_OK("eos_mid_pass");
}

/* Index of the first pass of block b in the trace, or -1. */
static int first_pass(const cllm_decode_result *r, int b) {
    for (int i = 0; i < r->n_iter; i++)
        if (r->iter_block[i] == b) return i;
    return -1;
}

/* The initial guesses (decode.h: y_1 the pending token, y_2..y_n from the
 * prompt, pad_id or the previous block's fixed point), the seed, the token
 * callback, and the argument checks of cllm_decoder_init. */
static void test_guesses_and_api(void) {
    /* tests/golden/tiny-qwen2 (vocabulary 256): unlike the random model of
     * test_tiny, whose answers soon repeat one token, its answer here has
     * many different tokens, so a guess taken from the wrong place shows */
    cllm_model m;
    CHECK_OK(cllm_model_load(&m, "tests/golden/tiny-qwen2"));
    const cllm_config c = m.cfg;
    cllm_fwd f;
    cllm_kv kv;
    CHECK_OK(cllm_fwd_init(&f, &m, 16));
    CHECK_OK(cllm_kv_init(&kv, &c, 1, 128));
    int prompt[5] = {24, 92, 49, 137, 133}, P = 5;
    cllm_decode_opts o;
    cllm_decode_opts_init(&o);
    o.method = CLLM_DECODE_JACOBI;
    o.n = 8;
    o.max_new_tokens = 30;
    o.trace = 1;
    cllm_decode_result ar, r, r2;
    {
        cllm_decode_opts a = o;
        a.method = CLLM_DECODE_AR;
        CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &a, &ar));
    }
    /* Every block's first state starts with the pending token (the output
     * token before the block's first new one). */
    for (int g = 0; g < 3; g++) {
        o.guess = g;
        o.pad_id = 5;   /* not 0: a pad guess must show pad_id, not a default */
        o.seed = 11;
        CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &o, &r));
        CHECK_EQ_INT(r.n_tokens, ar.n_tokens);
        CHECK(r.n_tokens == ar.n_tokens && !memcmp(r.tokens, ar.tokens, (size_t)r.n_tokens * sizeof(int)));
        int start = 0, blocks = 0;
        for (int b = 0;; b++) {
            int i = first_pass(&r, b);
            if (i < 0) break;
            blocks++;
            const int *y = r.iter_state + (size_t)i * o.n;
            int len = r.iter_len[i];
            CHECK_MSG(y[0] == r.tokens[start], "guess %d block %d: y_1 %d is not the pending token %d", g, b, y[0],
                      r.tokens[start]);
            for (int j = 1; j < len; j++) {
                if (g == CLLM_GUESS_PAD) {
                    CHECK_MSG(y[j] == 5, "guess pad block %d: y_%d = %d, not pad_id 5", b, j + 1, y[j]);
                } else if (g == CLLM_GUESS_LAST && b > 0) {
                    /* the previous block's fixed point y*_2..: output tokens start_{b-1} + j */
                    int prev_start = start - r.iter_len[first_pass(&r, b - 1)];
                    CHECK_MSG(y[j] == r.tokens[prev_start + j], "guess last block %d: y_%d = %d, not y*_%d = %d", b,
                              j + 1, y[j], j + 1, r.tokens[prev_start + j]);
                } else {
                    int in = 0;
                    for (int q = 0; q < P; q++) in |= y[j] == prompt[q];
                    CHECK_MSG(in, "guess %d block %d: y_%d = %d is not a prompt token", g, b, j + 1, y[j]);
                }
            }
            start += len;
        }
        CHECK_EQ_INT(blocks, 4);   /* 29 tokens after the prefill's: 8 + 8 + 8 + 5 */
        cllm_decode_result_free(&r);
    }
    /* The prompt guess: drawn from the whole prompt (both tokens of a
     * 2-token prompt appear among 15 draws); the same seed gives the same
     * states, another seed other states (and the same output). */
    int two[2] = {7, 19};   /* neither is in the answer */
    o.guess = CLLM_GUESS_PROMPT;
    o.n = 16;
    o.seed = 3;
    CHECK_OK(cllm_decode(&f, &kv, 0, two, 2, &o, &r));
    int seen7 = 0, seen19 = 0;
    for (int j = 1; j < r.iter_len[0]; j++) { seen7 |= r.iter_state[j] == 7; seen19 |= r.iter_state[j] == 19; }
    CHECK_MSG(seen7 && seen19, "prompt guess from {7, 19}: 7 %s, 19 %s", seen7 ? "drawn" : "never drawn",
              seen19 ? "drawn" : "never drawn");
    CHECK_OK(cllm_decode(&f, &kv, 0, two, 2, &o, &r2));
    CHECK(r.n_iter == r2.n_iter && !memcmp(r.iter_state, r2.iter_state, (size_t)r.n_iter * o.n * sizeof(int)));
    cllm_decode_result_free(&r2);
    o.seed = 4;
    CHECK_OK(cllm_decode(&f, &kv, 0, two, 2, &o, &r2));
    CHECK_MSG(memcmp(r.iter_state, r2.iter_state, (size_t)o.n * sizeof(int)), "seeds 3 and 4 give the same first guess");
    CHECK(r.n_tokens == r2.n_tokens && !memcmp(r.tokens, r2.tokens, (size_t)r.n_tokens * sizeof(int)));
    cllm_decode_result_free(&r);
    cllm_decode_result_free(&r2);

    /* The token callback sees the output, in order, never the EOS; a non-zero
     * return stops decoding and is returned. */
    o.n = 8;
    o.trace = 0;
    for (int e = 0; e < 2; e++) {
        cb_log l;
        memset(&l, 0, sizeof l);
        o.on_tokens = log_tokens;
        o.cb_ctx = &l;
        o.eos_id = e ? ar.tokens[12] : -1;
        CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &o, &r));
        CHECK_EQ_INT(l.n, r.n_tokens);
        CHECK_MSG(l.n == r.n_tokens && !memcmp(l.tokens, r.tokens, (size_t)l.n * sizeof(int)),
                  "eos %d: the callback's tokens differ from the output", e);
        CHECK_EQ_INT(r.eos, e);
        cllm_decode_result_free(&r);
    }
    cb_log l;
    memset(&l, 0, sizeof l);
    l.stop_after = 5;
    o.cb_ctx = &l;
    o.eos_id = -1;
    CHECK_EQ_INT(cllm_decode(&f, &kv, 0, prompt, P, &o, &r), 77);
    CHECK(r.n_tokens >= 5 && r.n_tokens < 30);
    cllm_decode_result_free(&r);
    o.on_tokens = NULL;
    o.cb_ctx = NULL;

    /* The EOS is never part of the output, also as the very first token. */
    o.eos_id = ar.tokens[0];
    CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &o, &r));
    CHECK(r.eos == 1 && r.n_tokens == 0);
    cllm_decode_result_free(&r);
    o.eos_id = ar.tokens[12];
    CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &o, &r));
    CHECK(r.eos == 1 && r.n_tokens <= 12);
    for (int i = 0; i < r.n_tokens; i++) CHECK_MSG(r.tokens[i] != o.eos_id, "the EOS %d is output token %d", o.eos_id, i);
    cllm_decode_result_free(&r);
    o.eos_id = -1;

    /* Prompts fed in chunks of max_T: 17 and 32 tokens take 2 chunks at
     * max_T 16 and one at max_T 32, and the first token is the argmax after
     * the whole prompt (one forward of it) either way. */
    cllm_fwd f32;
    CHECK_OK(cllm_fwd_init(&f32, &m, 32));
    int longp[32];
    for (int i = 0; i < 32; i++) longp[i] = (7 * i + 3) % c.vocab;
    for (int L = 17; L <= 32; L += 15) {
        CHECK_OK(cllm_forward(&f32, &kv, 0, 0, longp, L, L - 1));
        int first = f32.argmax[L - 1];
        for (int meth = 0; meth < 2; meth++) {
            cllm_decode_opts a = o;
            a.method = meth;
            a.max_new_tokens = 6;
            cllm_decode_result r16, r32;
            CHECK_OK(cllm_decode(&f, &kv, 0, longp, L, &a, &r16));
            CHECK_OK(cllm_decode(&f32, &kv, 0, longp, L, &a, &r32));
            CHECK_EQ_INT(r16.prompt_steps, 2);
            CHECK_EQ_INT(r32.prompt_steps, 1);
            CHECK_MSG(r16.n_tokens == 6 && r16.tokens[0] == first, "prompt of %d, max_T 16, method %d: first token %d, not %d",
                      L, meth, r16.tokens[0], first);
            CHECK_MSG(r32.n_tokens == 6 && r32.tokens[0] == first, "prompt of %d, max_T 32, method %d: first token %d, not %d",
                      L, meth, r32.tokens[0], first);
            CHECK(!memcmp(r16.tokens, r32.tokens, 6 * sizeof(int)));
            cllm_decode_result_free(&r16);
            cllm_decode_result_free(&r32);
        }
    }
    cllm_fwd_free(&f32);

    /* cllm_decoder_init's checks, before any forward */
    cllm_decoder d;
    CHECK_EQ_INT(cllm_decoder_init(&d, &kv, 0, prompt, 0, &o, &r, &f), CLLM_EINVAL);
    cllm_decoder_free(&d);
    cllm_decode_result_free(&r);
    cllm_decode_opts b = o;
    b.max_new_tokens = 0;
    CHECK_EQ_INT(cllm_decoder_init(&d, &kv, 0, prompt, P, &b, &r, &f), CLLM_EINVAL);
    cllm_decoder_free(&d);
    cllm_decode_result_free(&r);
    b = o;
    b.n = 0;
    CHECK_EQ_INT(cllm_decoder_init(&d, &kv, 0, prompt, P, &b, &r, &f), CLLM_EINVAL);
    cllm_decoder_free(&d);
    cllm_decode_result_free(&r);
    b = o;
    b.guess = CLLM_GUESS_PAD;
    b.pad_id = c.vocab;
    CHECK_EQ_INT(cllm_decoder_init(&d, &kv, 0, prompt, P, &b, &r, &f), CLLM_EINVAL);
    cllm_decoder_free(&d);
    cllm_decode_result_free(&r);
    b.pad_id = c.vocab - 1;
    CHECK_OK(cllm_decoder_init(&d, &kv, 0, prompt, P, &b, &r, &f));
    cllm_decoder_free(&d);
    cllm_decode_result_free(&r);
    b = o;
    b.guess = CLLM_GUESS_LAST + 1;
    CHECK_EQ_INT(cllm_decoder_init(&d, &kv, 0, prompt, P, &b, &r, &f), CLLM_EINVAL);
    cllm_decoder_free(&d);
    cllm_decode_result_free(&r);
    /* results taken for no step */
    CHECK_OK(cllm_decoder_init(&d, &kv, 0, prompt, P, &o, &r, &f));
    CHECK_EQ_INT(cllm_decoder_take(&d, &kv, f.argmax), CLLM_EINVAL);
    CHECK_EQ_INT(r.steps, 0);
    cllm_decoder_free(&d);
    cllm_decode_result_free(&r);
    /* the prompt and max_new_tokens exactly fill the cache (128) */
    b = o;
    b.max_new_tokens = 128 - P;
    CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &b, &r));
    CHECK_EQ_INT(r.n_tokens, 128 - P);
    cllm_decode_result_free(&r);

    cllm_decode_result_free(&ar);
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    cllm_model_free(&m);
    TEST_OK("guesses_callback_and_checks");
}

static void test_smollm2(void) {
    int longrun = getenv("CLLM_LONG") && atoi(getenv("CLLM_LONG")) > 0;
    int n_prompts = longrun ? 20 : 3, max_new = longrun ? 256 : 48;
    if (getenv("CLLM_SAN") && !longrun) { n_prompts = 2; max_new = 32; }
    cllm_model m;
    int rc = cllm_model_load(&m, test_model_path());
    if (rc == CLLM_EUNSUP) {
        printf("skip smollm2_jacobi: %s\n", cllm_errmsg());
        return;
    }
    CHECK_OK(rc);
    if (rc) return;
    int *ids[20], lens[20];
    int np = read_id_lines("tests/golden/gsm8k20_ids.txt", n_prompts, ids, lens);
    CHECK_EQ_INT(np, n_prompts);
    cllm_fwd f;
    cllm_kv kv;
    CHECK_OK(cllm_fwd_init(&f, &m, 32));
    CHECK_OK(cllm_kv_init(&kv, &m.cfg, 1, 512 + max_new));
    int sizes[2] = {16, 32};
    long ar_tokens = 0, ar_steps = 0, ja_tokens[2] = {0, 0}, ja_steps[2] = {0, 0};
    for (int p = 0; p < np; p++) {
        cllm_decode_opts o;
        cllm_decode_opts_init(&o);
        o.max_new_tokens = max_new;
        o.eos_id = m.cfg.eos_id;
        cllm_decode_result ar;
        CHECK_OK(cllm_decode(&f, &kv, 0, ids[p], lens[p], &o, &ar));
        ar_tokens += ar.n_tokens;
        ar_steps += ar.steps;
        for (int s = 0; s < 2; s++) {
            o.method = CLLM_DECODE_JACOBI;
            o.n = sizes[s];
            o.seed = (uint64_t)p;
            cllm_decode_result ja;
            char what[64];
            snprintf(what, sizeof what, "gsm8k prompt %d n %d", p, o.n);
            CHECK_OK(cllm_decode(&f, &kv, 0, ids[p], lens[p], &o, &ja));
            compare(what, &f, &kv, ids[p], lens[p], &ar, &ja);
            if (longrun)
                printf("%s: %d tokens (eos %d), AR %d steps, Jacobi %d steps\n", what, ja.n_tokens,
                       ja.eos, ar.steps, ja.steps), fflush(stdout);
            ja_tokens[s] += ja.n_tokens;
            ja_steps[s] += ja.steps;
            cllm_decode_result_free(&ja);
        }
        cllm_decode_result_free(&ar);
        free(ids[p]);
    }
    printf("smollm2: %d prompts x %d new tokens: AR %.3f tokens/step; Jacobi n=16 %.3f, n=32 %.3f "
           "tokens/step (prefill passes included); near-ties %d\n", np, max_new,
           (double)ar_tokens / ar_steps, (double)ja_tokens[0] / ja_steps[0],
           (double)ja_tokens[1] / ja_steps[1], near_ties);
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    cllm_model_free(&m);
    TEST_OK("smollm2_jacobi_equals_ar");
}

int main(void) {
    kernels_set_threads(2);
    test_tiny();
    test_guesses_and_api();
    test_eos_mid_pass();
    test_smollm2();
    TEST_END();
}
