/* dist-bench: time cllm_dist_sum_f32 (MPI_Allreduce) on N floats.
 *   mpirun -np R dist-bench [N] [REPEATS]
 * Prints, on rank 0, the median seconds per all-reduce and the bus bandwidth
 * 2(R-1)/R x bytes / seconds (what a ring all-reduce moves per rank). A
 * measurement tool, not a test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"
#include "dist.h"
#include "err.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 134515008;  /* SmolLM2-135M's parameters */
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (n == 0 || reps < 1 || reps > 1000) { fprintf(stderr, "usage: dist-bench [N] [REPEATS]\n"); return 2; }
    if (cllm_dist_init()) { fprintf(stderr, "dist-bench: %s\n", cllm_errmsg()); return 1; }
    float *buf = malloc(n * sizeof *buf);
    double *t = malloc((size_t)reps * sizeof *t);
    if (!buf || !t) { fprintf(stderr, "dist-bench: out of memory\n"); return 1; }
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i % 1000) * 1e-3f;
    int rc = cllm_dist_sum_f32(buf, n);  /* warm-up */
    for (int r = 0; r < reps && !rc; r++) {
        rc = cllm_dist_barrier();
        double t0 = cllm_now_s();
        if (!rc) rc = cllm_dist_sum_f32(buf, n);
        t[r] = cllm_now_s() - t0;
    }
    if (rc) { fprintf(stderr, "dist-bench: %s\n", cllm_errmsg()); cllm_dist_abort(1); return 1; }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    int R = cllm_dist_size();
    double bytes = (double)n * sizeof(float), med = t[reps / 2];
    if (cllm_dist_rank() == 0)
        printf("ranks %d  floats %zu (%.1f MB)  median %.4f s  min %.4f s  bus bandwidth %.2f GB/s\n", R, n, bytes / 1e6, med,
               t[0], R > 1 ? 2.0 * (R - 1) / R * bytes / med / 1e9 : 0.0);
    free(buf);
    free(t);
    cllm_dist_finalize();
    return 0;
}
