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
 * the token the previous pass made final. */
static void check_trace(const char *what, const cllm_decode_result *r, int n) {
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
        start += len;
    }
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
    int total_steps = 0, total_tokens = 0;
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
                    char what[96];
                    snprintf(what, sizeof what, "tiny prompt %d eos %d n %d guess %d", p, e, o.n, g);
                    CHECK_OK(cllm_decode(&f, &kv, 0, prompt, P, &o, &ja));
                    compare(what, &f, &kv, prompt, P, &ar, &ja);
                    CHECK_MSG(ja.steps <= ar.steps, "%s: %d steps vs AR %d", what, ja.steps, ar.steps);
                    CHECK_EQ_INT(ja.n_iter, ja.steps - (P + 15) / 16);
                    check_trace(what, &ja, o.n);
                    total_steps += ja.steps;
                    total_tokens += ja.n_tokens;
                    cllm_decode_result_free(&ja);
                }
            }
            o.method = CLLM_DECODE_AR;
            cllm_decode_result_free(&ar);
        }
    }
    printf("tiny: Jacobi %.3f tokens/step overall\n", (double)total_tokens / total_steps);

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
    test_smollm2();
    TEST_END();
}
