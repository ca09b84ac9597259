/* startup.c: start-up work on the CPUs (startup.h), on the kernels' pool. */
#include "startup.h"

#include <sched.h>
#include <unistd.h>

#include "gguf.h"
#include "kernels.h"

enum { STARTUP_MAX_THREADS = 16, CONVERT_TASK = 1 << 16 };

static int startup_threads_set;   /* 0: from the affinity mask */

void cllm_set_startup_threads(int n) { startup_threads_set = n > 0 ? n : 0; }

int cllm_startup_threads(void) {
    if (startup_threads_set) return startup_threads_set;
    long n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n < 1) n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n < STARTUP_MAX_THREADS ? (int)n : STARTUP_MAX_THREADS;
}

void cllm_startup_parallel(int n_tasks, void (*fn)(void *ctx, int task, int worker), void *ctx) {
    kernels_parallel_n(cllm_startup_threads(), n_tasks, fn, ctx);
}

typedef struct convert_job { const float *src; uint16_t *dst; size_t n; } convert_job;

static void convert_task(void *ctx, int task, int worker) {
    (void)worker;
    const convert_job *j = ctx;
    size_t at = (size_t)task * CONVERT_TASK, n = j->n - at < CONVERT_TASK ? j->n - at : CONVERT_TASK;
    cllm_f32_to_bf16(j->src + at, j->dst + at, n);
}

void cllm_startup_f32_to_bf16(const float *src, uint16_t *dst, size_t n) {
    convert_job j = {src, dst, n};
    size_t tasks = (n + CONVERT_TASK - 1) / CONVERT_TASK;
    if (tasks <= 1) { cllm_f32_to_bf16(src, dst, n); return; }
    cllm_startup_parallel((int)tasks, convert_task, &j);
}
