/* threads.c: the thread count the CPU kernels may use, and the persistent
 * pool that runs their parallel loops.
 *
 * Matrix products through BLAS run on OpenBLAS' own thread pool
 * (openblas_set_num_threads). Our own kernels (the AVX-512 matmul, attention)
 * run on the pool here: kernels_threads() - 1 workers started on first use and
 * kept, the caller being worker 0. A forward pass makes ~200 parallel calls;
 * starting and joining pthreads per call cost ~30 us each, waking parked
 * workers costs a few us.
 *
 * One job at a time: tasks 0..n-1 are handed out through an atomic counter,
 * so which worker runs a task varies from run to run. Kernels therefore make
 * every task compute a fixed set of outputs in a fixed order (results never
 * depend on the thread count or on scheduling); the worker index only picks
 * a scratch row. Start-up work (libcore/startup.h) runs on the same pool,
 * grown past the --threads size for it (kernels_parallel_n); the next
 * compute job stops the surplus workers, once. If the pool is busy (a kernel called from two threads at
 * once) or a worker cannot be started, the tasks run on the caller.
 */
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>

#include "kernels.h"

enum { POOL_MAX = 64 };

typedef struct pool {
    pthread_mutex_t busy;           /* held by the caller for the whole job */
    pthread_mutex_t mu;             /* guards everything below */
    pthread_cond_t go, done;
    pthread_t tid[POOL_MAX];
    int n_workers;                  /* started workers, not counting the caller */
    unsigned gen;                   /* bumped for every job */
    int active;                     /* workers still inside the current job */
    int stop;
    kernels_task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next;                /* next task to hand out */
} pool;

static pool g_pool = { .busy = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER,
                       .go = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER };
static int g_threads = 1;

static void run_tasks(pool *p, kernels_task_fn fn, void *ctx, int n, int worker) {
    for (int i; (i = atomic_fetch_add(&p->next, 1)) < n;) fn(ctx, i, worker);
}

typedef struct worker_arg {
    pool *p;
    int index;                      /* 1..n_workers */
    unsigned gen;                   /* the job count when it was started */
} worker_arg;

static worker_arg g_args[POOL_MAX];

static void *worker_main(void *arg) {
    worker_arg *a = arg;
    pool *p = a->p;
    /* Not p->gen read here: a job may already have been posted for it. */
    unsigned seen = a->gen;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->stop) pthread_cond_wait(&p->go, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        kernels_task_fn fn = p->fn;
        void *ctx = p->ctx;
        int n = p->n_tasks;
        pthread_mutex_unlock(&p->mu);
        run_tasks(p, fn, ctx, n, a->index);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Stop and join every worker (under busy). */
static void pool_stop(pool *p) {
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->tid[i], NULL);
    p->n_workers = 0;
    p->stop = 0;
}

/* Start workers up to want (under busy); stops at the first that fails. */
static void pool_grow(pool *p, int want) {
    while (p->n_workers < want && p->n_workers < POOL_MAX - 1) {
        int i = p->n_workers;
        g_args[i] = (worker_arg){ p, i + 1, p->gen };
        if (pthread_create(&p->tid[i], NULL, worker_main, &g_args[i]) != 0) break;
        p->n_workers++;
    }
}

void kernels_set_threads(int n) {
    if (n < 1) n = 1;
    if (n > POOL_MAX) n = POOL_MAX;
    pthread_mutex_lock(&g_pool.busy);
    if (g_pool.n_workers > n - 1) pool_stop(&g_pool);
    g_threads = n;
    pthread_mutex_unlock(&g_pool.busy);
    openblas_set_num_threads(n);
}

int kernels_threads(void) { return g_threads; }

void kernels_parallel(int n_tasks, kernels_task_fn fn, void *ctx) { kernels_parallel_n(g_threads, n_tasks, fn, ctx); }

void kernels_parallel_n(int n_threads, int n_tasks, kernels_task_fn fn, void *ctx) {
    pool *p = &g_pool;
    if (n_tasks <= 0) return;
    if (n_threads > POOL_MAX) n_threads = POOL_MAX;
    if (n_tasks == 1 || n_threads < 2 || pthread_mutex_trylock(&p->busy) != 0) {
        for (int i = 0; i < n_tasks; i++) fn(ctx, i, 0);
        return;
    }
    /* every started worker takes part in a job, so a pool grown for a wider
     * job (start-up work) goes back to this job's size first */
    if (p->n_workers > n_threads - 1) pool_stop(p);
    pool_grow(p, n_threads - 1);
    int workers = p->n_workers;
    atomic_store(&p->next, 0);
    if (workers > 0) {
        pthread_mutex_lock(&p->mu);
        p->fn = fn;
        p->ctx = ctx;
        p->n_tasks = n_tasks;
        p->active = workers;
        p->gen++;
        pthread_cond_broadcast(&p->go);
        pthread_mutex_unlock(&p->mu);
    }
    run_tasks(p, fn, ctx, n_tasks, 0);
    if (workers > 0) {
        pthread_mutex_lock(&p->mu);
        while (p->active > 0) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&p->busy);
}
