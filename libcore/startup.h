/* startup.h: the host's share of a program's start, spread over the CPUs.
 *
 * Reading and dequantizing a model file and converting its weights for a
 * device are memory-bound loops over the whole model, run once before any
 * compute (about 0.4 s of a GPU run's start with SmolLM2-135M on one thread).
 * They run on every CPU this process may use (its affinity mask, as nproc
 * counts; at most 16), whatever --threads says: --threads sizes the compute
 * (kernels_set_threads), which has not begun, and on a GPU the CPUs are idle
 * otherwise. The work is split so that every output is written by one task
 * in the same way whatever the thread count: results never depend on it.
 */
#ifndef CLLM_STARTUP_H
#define CLLM_STARTUP_H

#include <stddef.h>
#include <stdint.h>

/* Threads start-up work runs on: the CPUs of the affinity mask, 1..16, or
 * what cllm_set_startup_threads set. */
int cllm_startup_threads(void);
/* n >= 1: run start-up work on n threads (tests compare 1 with several);
 * 0: back to the CPUs of the affinity mask. Call it before any thread starts. */
void cllm_set_startup_threads(int n);

/* fn(ctx, task, worker) for every task in [0, n_tasks), on
 * cllm_startup_threads() threads; worker (0 .. cllm_startup_threads()-1)
 * names the thread, for scratch of its own. */
void cllm_startup_parallel(int n_tasks, void (*fn)(void *ctx, int task, int worker), void *ctx);

/* cllm_f32_to_bf16 (gguf.h) on the start-up threads */
void cllm_startup_f32_to_bf16(const float *src, uint16_t *dst, size_t n);

#endif
