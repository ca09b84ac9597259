/* test_eval: cllm-eval's numbers on hand-made gen records whose answers are
 * worked out by hand below; GSM8K answer extraction; the command's streams,
 * table, drawing and HTML report on files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "check.h"
#include "err.h"
#include "eval.h"
#include "records.h"
#include "stream.h"

#define NEAR(a, b) (fabs((double)(a) - (double)(b)) < 1e-9)
#define CHECK_NEAR(a, b) CHECK_MSG(NEAR(a, b), "%.12g vs %.12g", (double)(a), (double)(b))

/* ------------------------------------------------------------ GSM8K answers */

static void test_gsm8k(void) {
    static const struct { const char *text, *want; int found; } cases[] = {
        { "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\n#### 18", "18", 1 },
        { "The answer is 1,234.50 dollars", "1234.5", 1 },
        { "#### $1,000", "1000", 1 },
        { "5-3 = 2 apples", "2", 1 },          /* '-' after a digit is not a sign */
        { "so x = -5", "-5", 1 },
        { "It is -0.0 degrees", "0", 1 },
        { "no numbers here", "", 0 },
        { "", "", 0 },
        { "first 42, then ####", "42", 1 },    /* nothing after ####: the last number */
        { "#### 7 and later 9", "7", 1 },      /* the first number after the last #### */
        { "#### 3\n#### 4", "4", 1 },
        { "007 bond", "7", 1 },
        { "She has 3.", "3", 1 },              /* a sentence's full stop is not a decimal point */
        { "1,23 or 1,2345", "2345", 1 },       /* commas group exactly three digits */
        { "12,000,000 people", "12000000", 1 },
        { "x2 costs 5", "5", 1 },              /* digits glued to a word are not a number */
        { "####18", "18", 1 },
        { "3.1400 m", "3.14", 1 },
        { "The total is $18.00.", "18", 1 },
        { "It weighs 0.5 kg", "0.5", 1 },      /* the 0 before a decimal point stays */
        { "so x = -0.25", "-0.25", 1 },
        { "costs 5 for item x2", "5", 1 },    /* x2 is no number, even as the last digits */
        { "it costs 10-3", "3", 1 },           /* a '-' after a digit is not a sign */
        { "COVID-19 cases", "19", 1 },         /* nor after a letter */
        { "#### x2 then 5", "5", 1 },          /* the first number after ####, x2 skipped */
        { "she came 3rd", "3", 1 },            /* digits before a word are a number (5kg) */
        { "#### 18th place, or 20", "18", 1 },
    };
    char out[48];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = cllm_gsm8k_answer(cases[i].text, out, sizeof out);
        CHECK_MSG(rc == cases[i].found && !strcmp(out, cases[i].want), "case %zu \"%s\": got %d \"%s\", want %d \"%s\"", i,
                  cases[i].text, rc, out, cases[i].found, cases[i].want);
    }
    CHECK(cllm_gsm8k_answer("#### 1", out, 4) == CLLM_EINVAL);
    CHECK(cllm_gsm8k_answer(NULL, out, sizeof out) == 0 && out[0] == 0);
    TEST_OK("gsm8k answer extraction");
}

/* ------------------------------------------------------------ hand-made records */

static void toks(cllm_tokens *t, const int *ids, size_t n) {
    memset(t, 0, sizeof *t);
    CHECK_OK(cllm_tokens_append(t, (const int32_t *)ids, n));
}

/* Prompt 0: Jacobi, n = 4, traced, 14 output tokens 10..23, stopped at EOS.
 * The fixed point of a block starting at output index s is output[s..s+4).
 *
 *   block 0 (s = 0, y* = 10 11 12 13)
 *     pass 1: 10 90 12 13   first wrong at 1 -> accepts 1 (fixed 0 -> 1)
 *     pass 2: 10 11 12 13   all right        -> accepts 3 (fixed 1 -> 4)
 *     positions 2 and 3 hold 12, 13 from pass 1 to the end while position 1
 *     is wrong at pass 1: 2 stationary. Fast-forward (1-1) + (3-1) = 2.
 *   block 1 (s = 4, y* = 14 15 16 17)
 *     pass 1: 14 15 50 17   accepts 2        (fixed 0 -> 2)
 *     pass 2: 14 15 16 51   accepts 1        (fixed 2 -> 3)
 *     pass 3: 14 15 16 17   accepts 1        (fixed 3 -> 4)
 *     position 3 is right at pass 1 but replaced by 51 at pass 2: it holds 17
 *     only from pass 3, when nothing before it is wrong: not stationary.
 *     Position 2 holds 16 from pass 2, when position 1 is final: no. 0
 *     stationary. Fast-forward 1 + 0 + 0 = 1.
 *   block 2 (s = 8, y* = 18 19 20 21)
 *     pass 1: 18 60 61 21   accepts 1
 *     pass 2: 18 19 62 21   accepts 1
 *     pass 3: 18 19 20 21   accepts 2
 *     position 3 holds 21 throughout while position 1 is wrong at pass 1:
 *     1 stationary. Fast-forward 0 + 0 + 1 = 1.
 *   block 3 (s = 12, y* = 22 23 EOS ?; the output ends at 23)
 *     pass 1: 22 23 70 71   accepts 2 (23, then the EOS): the output ends.
 *     Positions 2, 3 are unknown (after EOS); position 1 has nothing wrong
 *     before it. 0 stationary. Fast-forward 1.
 *   passes 2 + 3 + 3 + 1 = 9, steps = 10 (the prompt's pass + 9)
 *   tokens/step 14/10 = 1.4; blocks ceil((14 - 1 + 1)/4) = 4; passes/block 9/4;
 *   fast-forward 2 + 1 + 1 + 1 = 5 (= 14 accepted - 9 passes);
 *   stationary 2 + 0 + 1 + 0 = 3; tokens/s 14 / 2.0 = 7.
 * Prompt 1: Jacobi, n = 4, untraced, output 5 6 7 8 9, no EOS, steps 4, 1.0 s:
 *   blocks ceil(4/4) = 1, passes/block 3, tokens/step 5/4.
 * Baseline (AR): prompt 0, the same 14 tokens, 3.0 s; prompt 1: 5 6 9 9 9 9,
 *   1.0 s; prompt 7 (not evaluated): ignored.
 *   speedup (3 + 1) / (2 + 1) = 4/3 (per prompt 1.5 and 1.0); exact match 1/2;
 *   common prefix (14 + 2) / 2 = 8; baseline tokens/s (14 + 6) / 4 = 5.
 * Overall: tokens 19, steps 14, tokens/step 19/14, passes/block 12/5 = 2.4,
 *   fast-forward per traced block 5/4, stationary per traced block 3/4,
 *   tokens/s 19/3.
 * GSM8K: prompt 0 says "#### 18" and its record carries answer "... #### 18":
 *   right; prompt 1 says 13 (its last number), the reference is 14: wrong.
 *   Accuracy 1/2. Baseline: 18 right, 13 wrong: 1/2.
 */
static const int P0_STATES[9][4] = {
    { 10, 90, 12, 13 }, { 10, 11, 12, 13 },
    { 14, 15, 50, 17 }, { 14, 15, 16, 51 }, { 14, 15, 16, 17 },
    { 18, 60, 61, 21 }, { 18, 19, 62, 21 }, { 18, 19, 20, 21 },
    { 22, 23, 70, 71 },
};
static const int P0_ACC[9] = { 1, 3, 2, 1, 1, 1, 1, 2, 2 };
static const int P0_OUT[14] = { 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23 };
static const int PROMPT0[3] = { 1, 2, 3 }, PROMPT1[2] = { 4, 5 };

typedef struct recs {
    cllm_gen_rec g0, g1, b0, b1, b7, ar;
    cllm_tokens states[9];
} recs;

static void make_recs(recs *r) {
    memset(r, 0, sizeof *r);
    cllm_gen_rec *g = &r->g0;
    g->id = 0;
    toks(&g->prompt, PROMPT0, 3);
    toks(&g->output, P0_OUT, 14);
    g->text = "She sells 9 eggs for $2 each.\n#### 18";
    g->method = "jacobi";
    g->n = 4;
    g->steps = 10;
    g->time_s = 2.0;
    g->eos = 1;
    toks(&g->accepted, P0_ACC, 9);
    for (int i = 0; i < 9; i++) toks(&r->states[i], P0_STATES[i], 4);
    g->states = r->states;
    g->n_states = 9;
    g->answer = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n#### 18";

    static const int out1[5] = { 5, 6, 7, 8, 9 };
    g = &r->g1;
    g->id = 1;
    toks(&g->prompt, PROMPT1, 2);
    toks(&g->output, out1, 5);
    g->text = "I think 12 then 13";
    g->method = "jacobi";
    g->n = 4;
    g->steps = 4;
    g->time_s = 1.0;

    g = &r->b0;
    g->id = 0;
    toks(&g->prompt, PROMPT0, 3);
    toks(&g->output, P0_OUT, 14);
    g->text = "#### 18";
    g->method = "ar";
    g->n = 1;
    g->steps = 15;
    g->time_s = 3.0;
    g->eos = 1;

    static const int bout1[6] = { 5, 6, 9, 9, 9, 9 };
    g = &r->b1;
    g->id = 1;
    toks(&g->prompt, PROMPT1, 2);
    toks(&g->output, bout1, 6);
    g->text = "13";
    g->method = "ar";
    g->n = 1;
    g->steps = 6;
    g->time_s = 1.0;

    g = &r->b7;
    g->id = 7;
    toks(&g->prompt, PROMPT1, 2);
    toks(&g->output, bout1, 6);
    g->text = "";
    g->method = "ar";
    g->n = 1;
    g->steps = 6;
    g->time_s = 100.0;
}

static void free_recs(recs *r) {
    cllm_gen_rec *all[5] = { &r->g0, &r->g1, &r->b0, &r->b1, &r->b7 };
    for (int i = 0; i < 5; i++) {
        cllm_tokens_free(&all[i]->prompt);
        cllm_tokens_free(&all[i]->output);
        cllm_tokens_free(&all[i]->accepted);
    }
    for (int i = 0; i < 9; i++) cllm_tokens_free(&r->states[i]);
}

static void test_trace(void) {
    recs r;
    make_recs(&r);
    cllm_eval_trace t;
    CHECK_OK(cllm_eval_trace_analyse(&r.g0, &t));
    CHECK_EQ_INT(t.n_iter, 9);
    CHECK_EQ_INT(t.blocks, 4);
    CHECK_EQ_INT(t.fast_forward, 5);
    CHECK_EQ_INT(t.stationary, 3);
    static const int passes[4] = { 2, 3, 3, 1 };
    for (int b = 0; b < 4; b++) CHECK_EQ_INT(t.block_passes[b], passes[b]);
    enum { F = CLLM_CELL_FINAL, C = CLLM_CELL_CORRECT, S = CLLM_CELL_STATIONARY, W = CLLM_CELL_WRONG, U = CLLM_CELL_UNKNOWN };
    static const unsigned char want[9][4] = {
        { F, W, S, S }, { F, F, C, C },
        { F, C, W, C }, { F, F, F, W }, { F, F, F, F },
        { F, W, W, S }, { F, F, W, S }, { F, F, F, C },
        { F, C, U, U },
    };
    for (int i = 0; i < 9; i++)
        for (int j = 0; j < 4; j++)
            CHECK_MSG(t.cells[i * 4 + j] == want[i][j], "pass %d position %d: cell %d, want %d", i, j, t.cells[i * 4 + j],
                      want[i][j]);
    static const int start[9] = { 0, 0, 4, 4, 4, 8, 8, 8, 12 }, fixed[9] = { 0, 1, 0, 2, 3, 0, 1, 2, 0 };
    for (int i = 0; i < 9; i++) {
        CHECK_EQ_INT(t.iter_start[i], start[i]);
        CHECK_EQ_INT(t.iter_fixed[i], fixed[i]);
    }
    cllm_eval_trace_free(&t);

    /* inconsistent traces are refused */
    r.g0.accepted.ids[1] = 4;            /* more than the 3 left in block 0 */
    CHECK(cllm_eval_trace_analyse(&r.g0, &t) == CLLM_ESCHEMA);
    r.g0.accepted.ids[1] = 3;
    r.g0.steps = 11;                     /* 9 passes traced, steps says 10 after the prompt's */
    CHECK(cllm_eval_trace_analyse(&r.g0, &t) == CLLM_ESCHEMA);
    r.g0.steps = 10;
    r.states[2].ids[0] = 99;             /* y_1 of block 1 is not output[4] */
    CHECK(cllm_eval_trace_analyse(&r.g0, &t) == CLLM_ESCHEMA);
    r.states[2].ids[0] = 14;
    r.g0.accepted.n = 8;
    CHECK(cllm_eval_trace_analyse(&r.g0, &t) == CLLM_ESCHEMA);
    r.g0.accepted.n = 9;
    r.g0.accepted.ids[8] = 5;            /* the trace's last pass: more than the 4 left in block 3 */
    CHECK(cllm_eval_trace_analyse(&r.g0, &t) == CLLM_ESCHEMA);
    r.g0.accepted.ids[8] = 0;            /* every pass makes at least one token final */
    CHECK(cllm_eval_trace_analyse(&r.g0, &t) == CLLM_ESCHEMA);
    r.g0.accepted.ids[8] = 2;
    r.g0.accepted.ids[0] = 0;
    CHECK(cllm_eval_trace_analyse(&r.g0, &t) == CLLM_ESCHEMA);
    r.g0.accepted.ids[0] = 1;
    r.g0.n = 3;                          /* states of 4 tokens with n = 3 */
    CHECK(cllm_eval_trace_analyse(&r.g0, &t) == CLLM_ESCHEMA);
    r.g0.n = 4;
    r.states[1].n = 3;                   /* block 0's second pass is one token shorter */
    CHECK(cllm_eval_trace_analyse(&r.g0, &t) == CLLM_ESCHEMA);
    r.states[1].n = 4;
    CHECK_OK(cllm_eval_trace_analyse(&r.g0, &t));
    cllm_eval_trace_free(&t);
    free_recs(&r);
    TEST_OK("trace: passes per block, fast-forwarded, stationary, cells");
}

static void test_eval_numbers(void) {
    recs r;
    make_recs(&r);
    cllm_eval *e;
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_GSM8K));
    CHECK_OK(cllm_eval_add(e, &r.g0));
    CHECK_OK(cllm_eval_add(e, &r.g1));
    CHECK_OK(cllm_eval_add_baseline(e, &r.b1));
    CHECK_OK(cllm_eval_add_baseline(e, &r.b7));
    CHECK_OK(cllm_eval_add_baseline(e, &r.b0));
    CHECK_OK(cllm_eval_add_ref(e, 1, "99"));
    CHECK_OK(cllm_eval_add_ref(e, 1, "so the answer is\n#### 14"));   /* the later one counts */
    CHECK_OK(cllm_eval_finish(e));
    CHECK_EQ_INT(cllm_eval_rows(e), 2);
    const cllm_eval_row *a = cllm_eval_row_at(e, 0), *b = cllm_eval_row_at(e, 1);
    CHECK_EQ_INT(a->id, 0);
    CHECK_EQ_INT(a->tokens, 14);
    CHECK_EQ_INT(a->steps, 10);
    CHECK_NEAR(a->tokens_per_step, 1.4);
    CHECK_EQ_INT(a->blocks, 4);
    CHECK_NEAR(a->passes_per_block, 2.25);
    CHECK_EQ_INT(a->traced, 1);
    CHECK_EQ_INT(a->fast_forward, 5);
    CHECK_EQ_INT(a->stationary, 3);
    CHECK_NEAR(a->tokens_per_s, 7.0);
    CHECK_NEAR(a->speedup, 1.5);
    CHECK_EQ_INT(a->exact_match, 1);
    CHECK_EQ_INT(a->common_prefix, 14);
    CHECK_STR(a->pred, "18");
    CHECK_STR(a->ref, "18");
    CHECK_EQ_INT(a->correct, 1);
    CHECK_EQ_INT(a->base_correct, 1);

    CHECK_EQ_INT(b->traced, 0);
    CHECK_EQ_INT(b->fast_forward, -1);
    CHECK_EQ_INT(b->blocks, 1);
    CHECK_NEAR(b->passes_per_block, 3.0);
    CHECK_NEAR(b->tokens_per_step, 1.25);
    CHECK_NEAR(b->speedup, 1.0);
    CHECK_EQ_INT(b->exact_match, 0);
    CHECK_EQ_INT(b->common_prefix, 2);
    CHECK_STR(b->pred, "13");
    CHECK_STR(b->ref, "14");
    CHECK_EQ_INT(b->correct, 0);
    CHECK_EQ_INT(b->base_correct, 0);

    const cllm_eval_summary *S = cllm_eval_get_summary(e);
    CHECK_EQ_INT(S->prompts, 2);
    CHECK_EQ_INT(S->tokens, 19);
    CHECK_EQ_INT(S->steps, 14);
    CHECK_NEAR(S->tokens_per_step, 19.0 / 14);
    CHECK_EQ_INT(S->blocks, 5);
    CHECK_NEAR(S->passes_per_block, 2.4);
    CHECK_EQ_INT(S->traced, 1);
    CHECK_EQ_INT(S->traced_blocks, 4);
    CHECK_EQ_INT(S->fast_forward, 5);
    CHECK_EQ_INT(S->stationary, 3);
    CHECK_NEAR(S->fast_forward_per_block, 1.25);
    CHECK_NEAR(S->stationary_per_block, 0.75);
    CHECK_NEAR(S->tokens_per_s, 19.0 / 3);
    CHECK_EQ_INT(S->matched, 2);
    CHECK_NEAR(S->speedup, 4.0 / 3);
    CHECK_NEAR(S->exact_match, 0.5);
    CHECK_NEAR(S->common_prefix, 8.0);
    CHECK_NEAR(S->base_tokens_per_s, 5.0);
    CHECK_EQ_INT(S->answered, 2);
    CHECK_NEAR(S->accuracy, 0.5);
    CHECK_NEAR(S->base_accuracy, 0.5);
    CHECK_STR(S->method, "jacobi");
    CHECK_EQ_INT(S->n, 4);
    cllm_eval_free(e);

    /* AR: one pass per token, EOS pass included: passes/block 1 */
    cllm_gen_rec ar = r.b0;
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_NONE));
    CHECK_OK(cllm_eval_add(e, &ar));
    CHECK_OK(cllm_eval_finish(e));
    CHECK_EQ_INT(cllm_eval_row_at(e, 0)->blocks, 14);
    CHECK_NEAR(cllm_eval_row_at(e, 0)->passes_per_block, 1.0);
    CHECK_NEAR(cllm_eval_get_summary(e)->tokens_per_step, 14.0 / 15);
    CHECK(isnan(cllm_eval_get_summary(e)->speedup));
    cllm_eval_free(e);

    /* refusals */
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_NONE));
    CHECK_OK(cllm_eval_add(e, &r.g1));
    CHECK_OK(cllm_eval_add(e, &r.g1));
    CHECK(cllm_eval_finish(e) == CLLM_EINVAL);             /* two records for id 1 */
    cllm_eval_free(e);
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_NONE));
    CHECK_OK(cllm_eval_add(e, &r.g1));
    cllm_gen_rec other = r.b0;
    other.id = 1;                                           /* prompt 0's tokens under id 1 */
    CHECK_OK(cllm_eval_add_baseline(e, &other));
    CHECK(cllm_eval_finish(e) == CLLM_ESCHEMA);
    cllm_eval_free(e);
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_NONE));
    CHECK_OK(cllm_eval_add(e, &r.g1));
    CHECK_OK(cllm_eval_add_baseline(e, &r.b7));
    CHECK(cllm_eval_finish(e) == CLLM_EINVAL);             /* no id in common */
    cllm_eval_free(e);
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_GSM8K));
    CHECK_OK(cllm_eval_add(e, &r.g1));
    CHECK(cllm_eval_finish(e) == CLLM_EINVAL);             /* a task without references */
    cllm_eval_free(e);
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_NONE));
    CHECK_OK(cllm_eval_add(e, &r.g1));
    CHECK_OK(cllm_eval_add_baseline(e, &r.b1));
    CHECK_OK(cllm_eval_add_baseline(e, &r.b1));
    CHECK(cllm_eval_finish(e) == CLLM_EINVAL);             /* two baseline records for id 1 */
    cllm_eval_free(e);
    /* records that are not records of a run, in either stream */
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_NONE));
    for (int k = 0; k < 8; k++) {
        cllm_gen_rec bad = r.g1;
        if (k == 0) bad.steps = 0;
        if (k == 6) bad.n = INT64_MAX;          /* ceil((T - 1 + eos) / n) overflowed: -1 blocks */
        if (k == 7) bad.steps = INT64_MAX;      /* the sum over records would overflow */
        if (k == 1) bad.id = -1;
        if (k == 2) bad.n = 0;
        if (k == 3) bad.time_s = NAN;
        if (k == 4) bad.time_s = INFINITY;
        if (k == 5) bad.time_s = -1.0;
        CHECK_MSG(cllm_eval_add(e, &bad) == CLLM_ESCHEMA, "bad record %d accepted", k);
        CHECK_MSG(cllm_eval_add_baseline(e, &bad) == CLLM_ESCHEMA, "bad baseline record %d accepted", k);
    }
    CHECK_EQ_INT(cllm_eval_rows(e), 0);
    /* a trace whose blocks disagree with ceil((T - 1 + eos) / n): prompt 0's
     * trace (4 blocks) on its first 13 tokens without EOS (ceil(12/4) = 3) */
    cllm_gen_rec cut = r.g0;
    cut.output.n = 13;
    cut.eos = 0;
    cllm_eval_trace t;
    CHECK_OK(cllm_eval_trace_analyse(&cut, &t));            /* consistent on its own */
    CHECK_EQ_INT(t.blocks, 4);
    cllm_eval_trace_free(&t);
    CHECK(cllm_eval_add(e, &cut) == CLLM_ESCHEMA);
    /* accepted counts without states */
    cllm_gen_rec half = r.g1;
    static const int one[1] = { 1 };
    toks(&half.accepted, one, 1);
    CHECK(cllm_eval_add(e, &half) == CLLM_ESCHEMA);
    cllm_tokens_free(&half.accepted);
    CHECK_EQ_INT(cllm_eval_rows(e), 0);
    cllm_eval_free(e);
    free_recs(&r);
    TEST_OK("eval: every metric on hand-made records");
}

/* Prompts 0 and 1 against a baseline that holds only them, and prompt 2
 * without a baseline record:
 *   prompt 0: as above (14 tokens, steps 10, 2.0 s); baseline b0 (same
 *     output, 3.0 s, "#### 18");
 *   prompt 1: as above (5 6 7 8 9, steps 4, 1.0 s, says 13); its baseline
 *     5 6 7 8 9 9 (1.0 s, says 13): the evaluated output is a proper prefix of
 *     the baseline's, so not an exact match, common prefix 5;
 *   prompt 2: 30 31 32, no EOS, n = 4, steps 2, 5.0 s, says "#### 4", its
 *     answer field "#### 3": wrong; no baseline.
 * Over the matched prompts 0 and 1 only: speedup (3 + 1) / (2 + 1) = 4/3
 * (not over the 8 s of all three), exact match 1/2, common prefix
 * (14 + 5) / 2 = 9.5, baseline tokens/s (14 + 6) / 4 = 5.
 * References: 0 from its answer field (18: right), 1 from add_ref (13:
 * right), 2 from its answer field (3: wrong): accuracy 2/3. The baseline's
 * accuracy is over the matched prompts: 18 and 13, both right: 1.
 * Over all three: tokens 22, steps 16, tokens/step 22/16, blocks
 * 4 + 1 + ceil(2/4) = 6, passes after the prompts' 9 + 3 + 1 = 13,
 * passes/block 13/6, tokens/s 22/8.
 */
static void test_eval_partial(void) {
    recs r;
    make_recs(&r);
    static const int out1b[6] = { 5, 6, 7, 8, 9, 9 }, out2[3] = { 30, 31, 32 }, prompt2[2] = { 6, 7 };
    cllm_gen_rec b1 = r.b1, g2;
    toks(&b1.output, out1b, 6);
    memset(&g2, 0, sizeof g2);
    g2.id = 2;
    toks(&g2.prompt, prompt2, 2);
    toks(&g2.output, out2, 3);
    g2.text = "#### 4";
    g2.answer = "#### 3";
    g2.method = "jacobi";
    g2.n = 4;
    g2.steps = 2;
    g2.time_s = 5.0;
    cllm_eval *e;
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_GSM8K));
    CHECK_OK(cllm_eval_add(e, &r.g0));
    CHECK_OK(cllm_eval_add(e, &r.g1));
    CHECK_OK(cllm_eval_add(e, &g2));
    CHECK_OK(cllm_eval_add_baseline(e, &r.b0));
    CHECK_OK(cllm_eval_add_baseline(e, &b1));
    CHECK_OK(cllm_eval_add_ref(e, 1, "13"));
    CHECK_OK(cllm_eval_finish(e));
    const cllm_eval_row *b = cllm_eval_row_at(e, 1), *c = cllm_eval_row_at(e, 2);
    CHECK_EQ_INT(b->has_base, 1);
    CHECK_EQ_INT(b->exact_match, 0);
    CHECK_EQ_INT(b->common_prefix, 5);
    CHECK_EQ_INT(b->base_tokens, 6);
    CHECK_EQ_INT(b->correct, 1);
    CHECK_EQ_INT(b->base_correct, 1);
    CHECK_EQ_INT(c->has_base, 0);
    CHECK(isnan(c->speedup));
    CHECK_EQ_INT(c->exact_match, -1);
    CHECK_EQ_INT(c->common_prefix, -1);
    CHECK_EQ_INT(c->blocks, 1);
    CHECK_STR(c->pred, "4");
    CHECK_STR(c->ref, "3");
    CHECK_EQ_INT(c->correct, 0);
    CHECK_EQ_INT(c->base_correct, -1);
    const cllm_eval_summary *S = cllm_eval_get_summary(e);
    CHECK_EQ_INT(S->prompts, 3);
    CHECK_EQ_INT(S->matched, 2);
    CHECK_NEAR(S->speedup, 4.0 / 3);
    CHECK_NEAR(S->exact_match, 0.5);
    CHECK_NEAR(S->common_prefix, 9.5);
    CHECK_NEAR(S->base_tokens_per_s, 5.0);
    CHECK_EQ_INT(S->answered, 3);
    CHECK_NEAR(S->accuracy, 2.0 / 3);
    CHECK_NEAR(S->base_accuracy, 1.0);
    CHECK_EQ_INT(S->tokens, 22);
    CHECK_EQ_INT(S->steps, 16);
    CHECK_NEAR(S->tokens_per_step, 22.0 / 16);
    CHECK_EQ_INT(S->blocks, 6);
    CHECK_NEAR(S->passes_per_block, 13.0 / 6);
    CHECK_NEAR(S->tokens_per_s, 22.0 / 8);
    CHECK_EQ_INT(S->traced, 1);
    CHECK_EQ_INT(S->traced_blocks, 4);
    cllm_eval_free(e);

    /* A reference given for an id replaces the record's own answer even when
     * it holds no number: prompt 0 (answer field 18) then has no reference. */
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_GSM8K));
    CHECK_OK(cllm_eval_add(e, &r.g0));
    CHECK_OK(cllm_eval_add(e, &r.g1));
    CHECK_OK(cllm_eval_add_ref(e, 0, "not known"));
    CHECK_OK(cllm_eval_add_ref(e, 1, "#### 13"));
    CHECK_OK(cllm_eval_finish(e));
    CHECK_EQ_INT(cllm_eval_row_at(e, 0)->has_ref, 0);
    CHECK_EQ_INT(cllm_eval_row_at(e, 0)->correct, -1);
    CHECK_EQ_INT(cllm_eval_get_summary(e)->answered, 1);
    CHECK_NEAR(cllm_eval_get_summary(e)->accuracy, 1.0);
    cllm_eval_free(e);

    /* Mixed methods and block sizes: prompt 1 by Jacobi (n = 4), prompt 0 by
     * AR (n = 1), then prompt 2 by Jacobi (n = 4) again. */
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_NONE));
    CHECK_OK(cllm_eval_add(e, &r.g1));
    CHECK_OK(cllm_eval_add(e, &r.b0));
    CHECK_OK(cllm_eval_add(e, &g2));
    CHECK_OK(cllm_eval_finish(e));
    CHECK_STR(cllm_eval_get_summary(e)->method, "mixed");
    CHECK_EQ_INT(cllm_eval_get_summary(e)->n, -1);
    CHECK_EQ_INT(cllm_eval_get_summary(e)->traced, 0);
    CHECK(isnan(cllm_eval_get_summary(e)->fast_forward_per_block));
    cllm_eval_free(e);

    /* No time measured (time_s 0): rates that do not apply are NaN. */
    cllm_gen_rec z = r.g1;
    z.time_s = 0;
    CHECK_OK(cllm_eval_new(&e, CLLM_TASK_NONE));
    CHECK_OK(cllm_eval_add(e, &z));
    CHECK_OK(cllm_eval_finish(e));
    CHECK(isnan(cllm_eval_row_at(e, 0)->tokens_per_s));
    CHECK(isnan(cllm_eval_get_summary(e)->tokens_per_s));
    CHECK_NEAR(cllm_eval_row_at(e, 0)->tokens_per_step, 1.25);
    cllm_eval_free(e);

    cllm_tokens_free(&b1.output);
    cllm_tokens_free(&g2.prompt);
    cllm_tokens_free(&g2.output);
    free_recs(&r);
    TEST_OK("eval: a baseline for part of the prompts, references, mixed records, refusals");
}

/* ------------------------------------------------------------ the command, on files */

static void write_stream(const char *path, const cllm_gen_rec *const *g, int n) {
    cllm_writer *w;
    cllm_packbuf b = { 0 };
    CHECK_OK(cllm_writer_open(&w, path, 1));
    char *argv[1] = { "test_eval" };
    cllm_header_rec h = { "test_eval", "hand-made", 100, "", 1, argv };
    CHECK_OK(cllm_rec_header_pack(&b, &h));
    CHECK_OK(cllm_writer_put_header(w, b.data, b.size));
    for (int i = 0; i < n; i++) {
        CHECK_OK(cllm_rec_gen_pack(&b, g[i]));
        CHECK_OK(cllm_writer_put(w, b.data, b.size));
    }
    CHECK_OK(cllm_writer_close(w));
    cllm_packbuf_free(&b);
}

/* The value of the overall metric name (meta.scope "all") in a metric stream. */
static double overall(const char *path, const char *name) {
    cllm_reader *r;
    double v = NAN;
    if (cllm_reader_open(&r, path)) return v;
    cllm_record rec;
    while (cllm_reader_next(r, &rec) == 0) {
        if (strcmp(rec.type, "metric")) continue;
        const cllm_value *n = cllm_mp_get(rec.root, "name"), *m = cllm_mp_get(rec.root, "meta");
        const cllm_value *s = m ? cllm_mp_get(m, "scope") : NULL;
        if (n && cllm_mp_str_eq(n, name) && s && cllm_mp_str_eq(s, "all"))
            cllm_mp_as_double(cllm_mp_get(rec.root, "value"), &v);
    }
    cllm_reader_close(r);
    return v;
}

static int count_per_prompt(const char *path, const char *name) {
    cllm_reader *r;
    int k = 0;
    if (cllm_reader_open(&r, path)) return -1;
    cllm_record rec;
    while (cllm_reader_next(r, &rec) == 0) {
        if (strcmp(rec.type, "metric")) continue;
        const cllm_value *n = cllm_mp_get(rec.root, "name"), *m = cllm_mp_get(rec.root, "meta");
        if (n && cllm_mp_str_eq(n, name) && m && cllm_mp_get(m, "id")) k++;
    }
    cllm_reader_close(r);
    return k;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) { free(s); s = NULL; }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

static void test_run(void) {
    char dir[] = "/tmp/test_eval.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char in[256], base[256], ref[256], met[256], html[256];
    snprintf(in, sizeof in, "%s/in.zst", dir);
    snprintf(base, sizeof base, "%s/base.zst", dir);
    snprintf(ref, sizeof ref, "%s/ref.jsonl", dir);
    snprintf(met, sizeof met, "%s/metrics.zst", dir);
    snprintf(html, sizeof html, "%s/r.html", dir);
    recs r;
    make_recs(&r);
    const cllm_gen_rec *ins[2] = { &r.g0, &r.g1 }, *bs[3] = { &r.b0, &r.b1, &r.b7 };
    write_stream(in, ins, 2);
    write_stream(base, bs, 3);
    /* JSONL references: line 0 (id 0 by its index) says 17; a blank line; id 1
     * has a numeric target 14, which counts before its answer 13; an explicit
     * id 0 then replaces the 17 with 18. So prompt 0 is right and prompt 1
     * (which says 13) wrong, as above. */
    FILE *f = fopen(ref, "w");
    CHECK(f != NULL);
    if (f) {
        fprintf(f, "{\"question\": \"q0\", \"answer\": \"... #### 17\"}\n\n"
                   "{\"id\": 1, \"target\": 14, \"answer\": \"#### 13\"}\n{\"id\": 0, \"answer\": \"#### 18\"}\n");
        fclose(f);
    }
    cllm_eval_opts o;
    memset(&o, 0, sizeof o);
    o.input = in;
    o.baseline = base;
    o.ref = ref;
    o.task = CLLM_TASK_GSM8K;
    o.output = met;
    o.html = html;
    FILE *table = tmpfile();
    o.table = table;
    CHECK_OK(cllm_eval_run(&o));
    CHECK_NEAR(overall(met, "tokens_per_step"), 19.0 / 14);
    CHECK_NEAR(overall(met, "passes_per_block"), 2.4);
    CHECK_NEAR(overall(met, "fast_forward"), 5);
    CHECK_NEAR(overall(met, "stationary"), 3);
    CHECK_NEAR(overall(met, "speedup"), 4.0 / 3);
    CHECK_NEAR(overall(met, "exact_match"), 0.5);
    CHECK_NEAR(overall(met, "common_prefix"), 8);
    CHECK_NEAR(overall(met, "accuracy"), 0.5);
    CHECK_NEAR(overall(met, "baseline_accuracy"), 0.5);
    CHECK_EQ_INT(count_per_prompt(met, "tokens_per_step"), 2);
    CHECK_EQ_INT(count_per_prompt(met, "stationary"), 1);   /* only the traced prompt */
    CHECK_EQ_INT(count_per_prompt(met, "fast_forward"), 1);
    CHECK_EQ_INT(count_per_prompt(met, "correct"), 2);
    CHECK_NEAR(overall(met, "baseline_prompts"), 2);
    char line[512];
    int rows = 0, has_all = 0;
    rewind(table);
    while (fgets(line, sizeof line, table)) {
        rows++;
        if (!strncmp(line, "all ", 4) && strstr(line, "1.357") && strstr(line, "1.33x")) has_all = 1;
    }
    CHECK_MSG(has_all, "table has no overall row with 1.357 tokens/step and 1.33x");
    CHECK(rows >= 5);
    fclose(table);
    char *h = slurp(html);
    CHECK(h && strstr(h, "<svg") && strstr(h, "Speedup over the baseline") && strstr(h, "</html>") &&
          strstr(h, "class=\"tk s\">12<"));
    /* passes are numbered within their block: block 3's only pass is pass 1 */
    CHECK(h && strstr(h, "<span class=\"pn\">1 +2</span><span class=\"tk f\">22</span>"));
    free(h);

    /* --summary: no per-prompt records */
    o.summary = 1;
    o.table = NULL;
    o.html = NULL;
    CHECK_OK(cllm_eval_run(&o));
    CHECK_EQ_INT(count_per_prompt(met, "tokens_per_step"), 0);
    CHECK_NEAR(overall(met, "tokens_per_step"), 19.0 / 14);

    /* --show 0 without colour: stationary tokens in {}, wrong ones in [] */
    char *buf = NULL;
    size_t len = 0;
    FILE *ms = open_memstream(&buf, &len);
    o.show = 1;
    o.show_id = 0;
    o.show_out = ms;
    o.color = 0;
    CHECK_OK(cllm_eval_run(&o));
    fclose(ms);
    CHECK(buf && strstr(buf, "    1 +1  10|[90]|{12}|{13}\n") && strstr(buf, "    1 +2  22|23|(70)|(71)\n"));
    CHECK(buf && strstr(buf, "    2 +3  10|11|12|13\n") && strstr(buf, "    3 +2  18|19|20|21\n"));
    free(buf);
    o.show_id = 5;
    ms = open_memstream(&buf, &len);
    o.show_out = ms;
    CHECK(cllm_eval_run(&o) == CLLM_EINVAL);               /* no such prompt */
    fclose(ms);
    free(buf);

    /* References from a stream: the gen records themselves (prompt 0's answer
     * field says 18; prompt 1 has none, and no answer of its own). */
    o.show = 0;
    o.show_out = NULL;
    o.ref = in;
    CHECK_OK(cllm_eval_run(&o));
    CHECK_NEAR(overall(met, "answered"), 1);
    CHECK_NEAR(overall(met, "accuracy"), 1);
    /* A reference stream mixing gen and prompt records: an id-less prompt is
     * numbered among the prompts alone (as cllm-gen numbers it), so the prompt
     * after a gen record of id 1 is prompt 0 (18), and prompt 1 keeps the gen
     * record's 13: both right. Numbered among all records it would be id 1. */
    {
        char refs[256];
        snprintf(refs, sizeof refs, "%s/refs.zst", dir);
        cllm_writer *w;
        cllm_packbuf b = { 0 };
        CHECK_OK(cllm_writer_open(&w, refs, 1));
        char *argv[1] = { "test_eval" };
        cllm_header_rec hdr = { "test_eval", "hand-made", 100, "", 1, argv };
        CHECK_OK(cllm_rec_header_pack(&b, &hdr));
        CHECK_OK(cllm_writer_put_header(w, b.data, b.size));
        cllm_gen_rec g = r.g1;
        g.answer = "#### 13";
        CHECK_OK(cllm_rec_gen_pack(&b, &g));
        CHECK_OK(cllm_writer_put(w, b.data, b.size));
        cllm_packbuf_reset(&b);
        cllm_pack_map(&b, 3);
        cllm_pack_cstr(&b, "type");
        cllm_pack_cstr(&b, "prompt");
        cllm_pack_cstr(&b, "text");
        cllm_pack_cstr(&b, "q0");
        cllm_pack_cstr(&b, "answer");
        cllm_pack_cstr(&b, "#### 18");
        CHECK_OK(cllm_writer_put(w, b.data, b.size));
        CHECK_OK(cllm_writer_close(w));
        cllm_packbuf_free(&b);
        o.ref = refs;
        CHECK_OK(cllm_eval_run(&o));
        CHECK_NEAR(overall(met, "answered"), 2);
        CHECK_NEAR(overall(met, "accuracy"), 1);
    }
    /* references without an answer field are refused */
    f = fopen(ref, "w");
    CHECK(f != NULL);
    if (f) {
        fprintf(f, "{\"question\": \"q0\"}\n");
        fclose(f);
    }
    o.ref = ref;
    CHECK(cllm_eval_run(&o) == CLLM_EINVAL);

    /* No baseline, no task, prompt 1 without a time: metrics that do not
     * apply (tokens/s of prompt 1, baseline, answers) are left out. */
    cllm_gen_rec z = r.g1;
    z.time_s = 0;
    const cllm_gen_rec *zs[2] = { &r.g0, &z };
    write_stream(in, zs, 2);
    memset(&o, 0, sizeof o);
    o.input = in;
    o.output = met;
    CHECK_OK(cllm_eval_run(&o));
    CHECK_EQ_INT(count_per_prompt(met, "tokens_per_step"), 2);
    CHECK_EQ_INT(count_per_prompt(met, "tokens_per_s"), 1);
    CHECK_NEAR(overall(met, "tokens_per_s"), 19.0 / 2);   /* a ratio of sums: (14 + 5) / (2 + 0) */
    CHECK_EQ_INT(count_per_prompt(met, "correct"), 0);
    CHECK_EQ_INT(count_per_prompt(met, "speedup"), 0);
    CHECK(isnan(overall(met, "baseline_prompts")));
    CHECK(isnan(overall(met, "speedup")));
    CHECK(isnan(overall(met, "accuracy")));

    free_recs(&r);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    TEST_OK("eval run: metric stream, table, HTML, drawing");
}

static void test_median(void);

int main(void) {
    test_gsm8k();
    test_trace();
    test_eval_numbers();
    test_eval_partial();
    test_run();
    test_median();
    TEST_END();
}

static void test_median(void) {
    double a[] = { 3, 1, 2 }, b[] = { 4, 1, 3, 2 }, c[] = { 5 };
    CHECK_NEAR(cllm_median(a, 3), 2);
    CHECK_NEAR(cllm_median(b, 4), 2.5);
    CHECK_NEAR(cllm_median(c, 1), 5);
    CHECK(isnan(cllm_median(c, 0)));
    TEST_OK("bench median");
}
