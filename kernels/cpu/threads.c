/* threads.c: the thread count the CPU kernels may use.
 *
 * Matrix products run on OpenBLAS' own thread pool (openblas_set_num_threads);
 * attention_forward starts its own pthreads over (token, head) pairs when the
 * work is large enough to pay for them. Both read the count set here.
 */
#include <cblas.h>

#include "kernels.h"

static int g_threads = 1;

void kernels_set_threads(int n) {
    if (n < 1) n = 1;
    g_threads = n;
    openblas_set_num_threads(n);
}

int kernels_threads(void) { return g_threads; }
