/* bench.h: the work behind cllm-bench: greedy AR and Jacobi decoding of the
 * same prompts, on one machine in one run, for one model or two (the CLLM
 * against its base), with medians over repeated timings.
 *
 * Per model, after warm-up decodes (untimed), every prompt is decoded with AR
 * and with Jacobi, alternating, `repeat` times each; a prompt's time is the
 * median of its repeats. Batch 1, one KV-cache sequence. Numbers per model and
 * method, summed over the prompts:
 *   tokens/step   output tokens / forward passes (the prompt's pass counted
 *                 as one, as in gen records);
 *   tokens/s      tokens after the first / time from the first token to the
 *                 last (the decoding phase: the prompt's pass is left out, it
 *                 is the same work for both methods);
 *   ms/pass       that time / the passes after the prompt's;
 *   speedup       AR's decoding time / this method's, same model;
 *   vs base       the first model's AR decoding time / this one's (--vs);
 *   e2e           the whole decode call, prompt included, in the metrics.
 * Jacobi output is compared with AR output token for token (near-ties in
 * fp32 can differ; they are counted, not hidden).
 */
#ifndef CLLM_BENCH_H
#define CLLM_BENCH_H

#include <stdio.h>

#include "decode.h"
#include "model.h"
#include "prompts.h"

typedef struct cllm_bench_opts {
    cllm_decode_opts dec;     /* n, max_new_tokens, guess, seed (method is set per run) */
    int repeat;               /* timed decodes per prompt and method, >= 1 */
    int warmup;               /* untimed decodes of the first prompt per model and method, >= 0 */
    int max_prompts;          /* first N prompts (0: all) */
    FILE *table;              /* the table (NULL: none) */
    FILE *progress;           /* progress lines (NULL: none) */
    const char *output;       /* metric stream; NULL: stdout */
    int force;                /* write the stream to a terminal */
    int no_stream;            /* write no metric stream */
    int device;               /* enum cllm_device (forward.h) */
    int argc;                 /* the command line, for the header */
    char *const *argv;
} cllm_bench_opts;

/* Benchmark models[0..n_models) (names: for the table and metrics) on the
 * prompts of src. The models must share a vocabulary (and tokenizer, when
 * both carry one). Returns 0, CLLM_EINTR, or a CLLM_E* code. */
int cllm_bench_run(const cllm_model *const *models, const char *const *names, int n_models, cllm_prompts *src,
                   const cllm_bench_opts *o);

/* Median of v[0..n) (sorts v). */
double cllm_median(double *v, int n);

#endif
