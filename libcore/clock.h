/* clock.h: the one clock of the project's timings: monotonic wall seconds. */
#ifndef CLLM_CLOCK_H
#define CLLM_CLOCK_H

#include <time.h>

static inline double cllm_now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#endif
