/* eval.h: the work behind cllm-eval: what Jacobi decoding gained on a set of
 * gen records (cllm-stream(5)), measured against a baseline and references.
 *
 * Definitions (cllm-eval(1) has the long form). For a gen record with output
 * tokens T (EOS excluded), forward passes S (the prompt's counted as one),
 * block size n and eos e:
 *   tokens/step       T / S.
 *   blocks            B = ceil((T - 1 + e) / n): the tokens made final after the
 *                     prompt's pass, EOS included, come in blocks of n (the
 *                     last one may be shorter); exact, so it needs no trace.
 *   passes/block      (S - 1) / B, over all blocks of all records.
 *   fast-forwarded    (trace) per pass, accepted - 1 (the tokens it made final
 *                     beyond the one a pass always gains), summed over passes.
 *   stationary        (trace) per block, the window positions j >= 1 that hold
 *                     the fixed point's token from some pass i0 to the block's
 *                     last pass while, at a pass i >= i0, some position before
 *                     j is wrong; each position counts once per block.
 *   tokens/s          T / time_s.
 *   speedup           sum of baseline time_s / sum of time_s over the prompts
 *                     both streams hold (per prompt: the same ratio).
 *   exact match       share of those prompts whose outputs are equal;
 *   common prefix     mean length of the common prefix of the two outputs.
 *   accuracy (gsm8k)  share of prompts with a reference whose extracted answer
 *                     (cllm_gsm8k_answer) equals the reference's.
 * The fixed point of a traced block is read from the output: the block whose
 * first token y_1 is output[s] has fixed point output[s .. s+m); positions
 * past the output's end (cut by EOS) are unknown and never counted.
 */
#ifndef CLLM_EVAL_H
#define CLLM_EVAL_H

#include <stdint.h>
#include <stdio.h>

#include "records.h"
#include "tokenizer.h"

enum cllm_eval_task { CLLM_TASK_NONE = 0, CLLM_TASK_GSM8K = 1 };

/* ---- answers ------------------------------------------------------------- */

/* GSM8K answer of text: the first number after the last "####" when one
 * follows it, else the last number of the text. Numbers are -?d+(,ddd)*(.d+)?
 * (a '-' counts when no letter or digit precedes it; digits right after a
 * letter, x2, are no number, digits before one, 5kg, are); written to out
 * normalized: group commas dropped, fractional trailing zeros and a bare '.'
 * dropped, leading zeros dropped, "-0" as "0". Returns 1 when a number was
 * found, 0 when none (out ""), CLLM_EINVAL when out is too small. */
int cllm_gsm8k_answer(const char *text, char *out, size_t cap);

/* ---- one traced record --------------------------------------------------- */

/* What a window position is at one pass, for drawing. */
enum cllm_cell {
    CLLM_CELL_NONE = 0,     /* past the block's length */
    CLLM_CELL_FINAL,        /* made final by an earlier pass (y_1 included) */
    CLLM_CELL_CORRECT,      /* equals the fixed point, not yet final */
    CLLM_CELL_STATIONARY,   /* correct, stays so to the block's end, an earlier position is wrong now */
    CLLM_CELL_WRONG,        /* differs from the fixed point */
    CLLM_CELL_UNKNOWN,      /* the fixed point is not known there (after EOS) */
};

typedef struct cllm_eval_trace {
    size_t n_iter;          /* passes after the prompt's */
    int width;              /* row width of cells (the record's n) */
    int64_t blocks;
    int64_t fast_forward;
    int64_t stationary;
    int *block_passes;      /* (blocks) passes each block took */
    int *iter_block;        /* (n_iter) block of each pass */
    int *iter_start;        /* (n_iter) output index of the block's y_1 */
    int *iter_fixed;        /* (n_iter) tokens of the block final before the pass */
    unsigned char *cells;   /* (n_iter, width) enum cllm_cell */
} cllm_eval_trace;

/* Analyse the trace of g (accepted/states; an untraced record gives an empty
 * result). CLLM_ESCHEMA naming the record when the trace is inconsistent
 * (lengths, accepted counts, passes against steps, y_1 against the output). */
int cllm_eval_trace_analyse(const cllm_gen_rec *g, cllm_eval_trace *t);
void cllm_eval_trace_free(cllm_eval_trace *t);

/* ---- a whole evaluation -------------------------------------------------- */

/* One prompt's numbers. Values that do not apply are NAN (doubles) or -1. */
typedef struct cllm_eval_row {
    int64_t id;
    char method[16];
    int64_t n, tokens, steps, blocks, iters;
    int eos;
    double time_s;
    double tokens_per_step, passes_per_block, tokens_per_s;
    int traced;
    int64_t fast_forward, stationary;  /* -1 when untraced */
    int *block_passes;                 /* (blocks) when traced */
    /* baseline */
    int has_base;
    double base_time_s, speedup;
    int64_t base_tokens;
    int exact_match;                   /* -1 without baseline */
    int64_t common_prefix;             /* -1 without baseline */
    /* task */
    int has_ref;
    char pred[48], ref[48], base_pred[48];
    int correct, base_correct;         /* -1 when unknown */
} cllm_eval_row;

typedef struct cllm_eval_summary {
    int64_t prompts, tokens, steps, blocks, iters;
    double time_s;
    double tokens_per_step, passes_per_block, tokens_per_s;
    int64_t traced, traced_blocks, fast_forward, stationary;   /* over traced records */
    double fast_forward_per_block, stationary_per_block;
    int64_t matched;                   /* prompts with a baseline record */
    double base_time_s, base_tokens_per_s, speedup, exact_match, common_prefix;
    int64_t base_tokens;
    int64_t answered;                  /* prompts with a reference (task) */
    double accuracy, base_accuracy;
    const char *method;                /* the records' method, or "mixed" */
    int64_t n;                         /* the records' n, or -1 when mixed */
} cllm_eval_summary;

typedef struct cllm_eval cllm_eval;

int cllm_eval_new(cllm_eval **out, int task);
void cllm_eval_free(cllm_eval *e);
/* Add a record of the evaluated stream (its id must be new). */
int cllm_eval_add(cllm_eval *e, const cllm_gen_rec *g);
/* Add a record of the baseline stream (its id must be new there). */
int cllm_eval_add_baseline(cllm_eval *e, const cllm_gen_rec *g);
/* Reference answer of prompt id (its text: "... #### 18", or "18"); a later
 * one for the same id replaces it. Records' own answer fields are used for the
 * ids that get none. */
int cllm_eval_add_ref(cllm_eval *e, int64_t id, const char *answer);
/* Join and compute: fills the rows and the summary. CLLM_EINVAL when a task
 * has no reference at all or a baseline shares no id; CLLM_ESCHEMA when a
 * baseline record's prompt differs from the evaluated one's. */
int cllm_eval_finish(cllm_eval *e);
size_t cllm_eval_rows(const cllm_eval *e);
const cllm_eval_row *cllm_eval_row_at(const cllm_eval *e, size_t i);
const cllm_eval_summary *cllm_eval_get_summary(const cllm_eval *e);

/* ---- metric records with meta -------------------------------------------- */

typedef struct cllm_meta_kv {
    const char *key;
    const char *str;        /* a string value, or NULL for num */
    double num;             /* packed as an integer when integral */
} cllm_meta_kv;

/* A metric record with an optional meta map (n_meta 0: none). */
int cllm_metric_pack_meta(cllm_packbuf *b, const cllm_metric_rec *m, const cllm_meta_kv *meta, int n_meta);

/* ---- the command --------------------------------------------------------- */

typedef struct cllm_eval_opts {
    const char *input;        /* gen stream; NULL or "-": stdin */
    const char *ref;          /* references: JSONL or a stream (NULL: the records' answer) */
    const char *answer_field; /* reference field (NULL: "target" when present, else "answer") */
    const char *baseline;     /* a gen stream of the same prompts (NULL: none) */
    int task;                 /* enum cllm_eval_task */
    const char *output;       /* metric stream; NULL: stdout */
    int force;                /* write the stream to a terminal */
    int no_stream;            /* write no metric stream */
    int summary;              /* overall numbers only (no per-prompt rows/records) */
    FILE *table;              /* the aligned table (NULL: none) */
    int show;                 /* draw the trajectory of show_id on show_out */
    int64_t show_id;
    FILE *show_out;
    int color;                /* ANSI colours in the drawing */
    const char *html;         /* write the HTML report there (NULL: none) */
    const cllm_tokenizer *tok;/* token text in drawings (NULL: ids) */
    int argc;                 /* the command line, for the header */
    char *const *argv;
} cllm_eval_opts;

/* Read, compute, write. 0, CLLM_EINTR, or a CLLM_E* code. */
int cllm_eval_run(const cllm_eval_opts *o);

/* A tokenizer from a .gguf file or a HF directory (no weights loaded). */
int cllm_eval_load_tokenizer(const char *path, cllm_tokenizer **out);

/* Draw g's Jacobi trajectory (one line per pass, Figure 7 of the CLLM blog)
 * on f; tok NULL prints ids. */
int cllm_eval_draw(FILE *f, const cllm_gen_rec *g, const cllm_tokenizer *tok, int color);

#endif
