/* dist.c: ranks over MPI, or one rank without it (see dist.h). */
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "err.h"

static int g_rank = 0, g_size = 1, g_local_rank = 0, g_local_size = 1;
/* The most elements one MPI call carries: its counts are ints. */
enum { CHUNK = 1 << 30 };
static size_t g_chunk = CHUNK;

void cllm_dist_set_chunk(size_t elems) { g_chunk = elems >= 1 && elems <= CHUNK ? elems : CHUNK; }

/* The next piece of a buffer with `left` elements to go. */
static int chunk_len(size_t left) { return (int)(left > g_chunk ? g_chunk : left); }

void cllm_dist_slice(size_t n, int rank, int size, size_t *off, size_t *len) {
    size_t per = n;
    if (size > 1) per = ((n + (size_t)size - 1) / (size_t)size + CLLM_DIST_ALIGN - 1) / CLLM_DIST_ALIGN * CLLM_DIST_ALIGN;
    size_t lo = per * (size_t)rank, hi = lo + per;
    if (lo > n) lo = n;
    if (hi > n) hi = n;
    *off = lo;
    *len = hi - lo;
}

int cllm_dist_rank(void) { return g_rank; }
int cllm_dist_size(void) { return g_size; }
int cllm_dist_local_rank(void) { return g_local_rank; }
int cllm_dist_local_size(void) { return g_local_size; }

/* How many processes a launcher says it started (0: no launcher seen). */
static long launcher_size(void) {
    const char *vars[] = { "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS" };
    const char *v;
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && !getenv("PMI_RANK") && !getenv("PMI_SIZE")) return 0;
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if ((v = getenv(vars[i])) && atol(v) > 0) return atol(v);
    return 1;
}

/* srun's tasks of a step (SLURM_STEP_NUM_TASKS, a whole number; 0 when unset
 * or 1). srun starts them with an MPI process manager interface only when its
 * MPI plugin says so (--mpi=pmix, or the site's MpiDefault); without one
 * none of the variables above is set, and each task would train alone into
 * the same output. The batch script itself has no step count. */
static long srun_tasks(void) {
    const char *v = getenv("SLURM_STEP_NUM_TASKS");
    char *end;
    if (!v || !*v) return 0;
    long n = strtol(v, &end, 10);
    return *end || n < 2 ? 0 : n;
}

static int check_srun(void) {
    long n = launcher_size() ? 0 : srun_tasks();
    if (n > 1)
        return cllm_error(CLLM_EINVAL, "started by srun as one of %ld tasks, but with no MPI process manager (no "
                          "PMIX_RANK or PMI_RANK): each would train alone into the same output; run srun --mpi=pmix "
                          "(srun --mpi=list shows what the site has) or mpirun", n);
    return 0;
}

static uint64_t hash_u64(const void *buf, size_t bytes) { return cllm_ckpt_hash(0, buf, bytes); }

#if CLLM_MPI
#include <mpi.h>

static int g_joined = 0;   /* we called MPI_Init */
static int g_adopted = 0;  /* the caller did, and we took its world */

static int mpi_err(int e, const char *what) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(e, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "error %d", e);
    return cllm_error(CLLM_EIO, "MPI %s: %s", what, s);
}

int cllm_dist_compiled(void) { return 1; }

/* The ranks that share this machine (one GPU each when training on CUDA). */
static int find_local_ranks(void) {
    MPI_Comm node;
    int e = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node);
    if (e != MPI_SUCCESS) return mpi_err(e, "split by node");
    MPI_Comm_rank(node, &g_local_rank);
    MPI_Comm_size(node, &g_local_size);
    e = MPI_Comm_free(&node);
    return e == MPI_SUCCESS ? 0 : mpi_err(e, "free the node communicator");
}

int cllm_dist_init(void) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited) {
        if (!g_joined && !g_adopted) {  /* the caller's own MPI_Init: use its world */
            g_adopted = 1;
            MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
            MPI_Comm_size(MPI_COMM_WORLD, &g_size);
            return find_local_ranks();
        }
        return 0;
    }
    const char *force = getenv("CLLM_MPI");
    if (check_srun()) return CLLM_EINVAL;
    if (force && !strcmp(force, "0")) return launcher_size() > 1 ? cllm_error(CLLM_EINVAL, "CLLM_MPI=0 but a launcher started several processes") : 0;
    if (!launcher_size() && !(force && !strcmp(force, "1"))) return 0;
    int provided = 0, e = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (e != MPI_SUCCESS) return mpi_err(e, "init");
    g_joined = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    return find_local_ranks();
}

static int allreduce(void *buf, size_t n, MPI_Datatype t, size_t elem, MPI_Op op, const char *what) {
    if (g_size == 1) return 0;
    char *p = buf;
    while (n) {
        int c = chunk_len(n);
        int e = MPI_Allreduce(MPI_IN_PLACE, p, c, t, op, MPI_COMM_WORLD);
        if (e != MPI_SUCCESS) return mpi_err(e, what);
        p += (size_t)c * elem;
        n -= (size_t)c;
    }
    return 0;
}

int cllm_dist_sum_f32(float *buf, size_t n) { return allreduce(buf, n, MPI_FLOAT, sizeof(float), MPI_SUM, "allreduce"); }
int cllm_dist_sum_f64(double *buf, size_t n) { return allreduce(buf, n, MPI_DOUBLE, sizeof(double), MPI_SUM, "allreduce"); }
int cllm_dist_max_i64(int64_t *buf, size_t n) { return allreduce(buf, n, MPI_INT64_T, sizeof(int64_t), MPI_MAX, "allreduce"); }

/* Each rank's part of the piece [c0, c0 + c) of a sliced vector of n:
 * element counts and displacements from c0 (0 where its slice misses it). */
static void piece_slices(size_t n, size_t c0, int c, int *counts, int *displs) {
    const size_t end = c0 + (size_t)c;
    for (int r = 0; r < g_size; r++) {
        size_t off, len;
        cllm_dist_slice(n, r, g_size, &off, &len);
        size_t lo = off < c0 ? c0 : off > end ? end : off, hi = off + len < lo ? lo : off + len > end ? end : off + len;
        counts[r] = (int)(hi - lo);
        displs[r] = (int)(lo - c0);
    }
}

enum { REDUCE_SCATTER, ALLGATHER, GATHER };

/* The collectives on sliced vectors, piece by piece as allreduce: buf is
 * the whole vector (GATHER: the root's result), mine this rank's slice
 * (GATHER only). */
static int sliced(int kind, float *buf, const float *mine, size_t n, int root) {
    static const char *what[] = { "reduce-scatter", "allgather", "gather" };
    int *counts = cllm_malloc(2 * (size_t)g_size * sizeof *counts), *displs = counts + g_size;
    if (!counts) return CLLM_ENOMEM;
    size_t off, len;
    cllm_dist_slice(n, g_rank, g_size, &off, &len);
    int rc = 0;
    for (size_t c0 = 0; c0 < n && !rc;) {
        int c = chunk_len(n - c0), e = MPI_SUCCESS;
        piece_slices(n, c0, c, counts, displs);
        const int k = counts[g_rank], at = displs[g_rank];
        if (kind == REDUCE_SCATTER) {
            /* In place the sum of rank r's part lands at the start of the piece on rank r. */
            e = MPI_Reduce_scatter(MPI_IN_PLACE, buf + c0, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if (e == MPI_SUCCESS && k && at) memmove(buf + c0 + at, buf + c0, (size_t)k * sizeof *buf);
        } else if (kind == ALLGATHER) {
            e = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf + c0, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
        } else {
            const float *from = k ? mine + (c0 + (size_t)at - off) : mine;
            e = MPI_Gatherv(from, k, MPI_FLOAT, g_rank == root ? buf + c0 : NULL, counts, displs, MPI_FLOAT, root,
                            MPI_COMM_WORLD);
        }
        if (e != MPI_SUCCESS) rc = mpi_err(e, what[kind]);
        c0 += (size_t)c;
    }
    free(counts);
    return rc;
}

int cllm_dist_barrier(void) {
    if (g_size == 1) return 0;
    int e = MPI_Barrier(MPI_COMM_WORLD);
    return e == MPI_SUCCESS ? 0 : mpi_err(e, "barrier");
}

int cllm_dist_bcast(void *buf, size_t bytes, int root) {
    if (g_size == 1) return 0;
    char *p = buf;
    while (bytes) {
        int c = chunk_len(bytes);
        int e = MPI_Bcast(p, c, MPI_BYTE, root, MPI_COMM_WORLD);
        if (e != MPI_SUCCESS) return mpi_err(e, "broadcast");
        p += c;
        bytes -= (size_t)c;
    }
    return 0;
}

int cllm_dist_check_same(const void *buf, size_t bytes, const char *what) {
    if (g_size == 1) return 0;
    uint64_t h = hash_u64(buf, bytes), lo = h, hi = h;
    int e = MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    if (e == MPI_SUCCESS) e = MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (e != MPI_SUCCESS) return mpi_err(e, "allreduce");
    if (lo != hi) return cllm_error(CLLM_EINVAL, "the %d ranks disagree on %s (rank %d: hash %016llx)", g_size, what, g_rank, (unsigned long long)h);
    return 0;
}

int cllm_dist_finalize(void) {
    if (!g_joined) return 0;
    g_joined = 0;
    int e = MPI_Finalize();
    return e == MPI_SUCCESS ? 0 : mpi_err(e, "finalize");
}

void cllm_dist_abort(int status) {
    if (g_size > 1) MPI_Abort(MPI_COMM_WORLD, status ? status : 1);
}

#else /* no MPI: one rank */

int cllm_dist_compiled(void) { return 0; }

enum { REDUCE_SCATTER, ALLGATHER, GATHER };
/* One rank: the slice is the whole vector, and the callers below never get here. */
static int sliced(int kind, float *buf, const float *mine, size_t n, int root) {
    (void)kind; (void)buf; (void)mine; (void)n; (void)root; (void)chunk_len;
    return cllm_error(CLLM_EINVAL, "sliced collective without MPI");
}

int cllm_dist_init(void) {
    long n = launcher_size();
    if (check_srun()) return CLLM_EINVAL;
    if (n > 1)
        return cllm_error(CLLM_EUNSUP, "started as one of %ld MPI processes, but this build has no MPI (rebuild with make MPI=1)", n);
    return 0;
}

int cllm_dist_sum_f32(float *buf, size_t n) { (void)buf; (void)n; return 0; }
int cllm_dist_sum_f64(double *buf, size_t n) { (void)buf; (void)n; return 0; }
int cllm_dist_max_i64(int64_t *buf, size_t n) { (void)buf; (void)n; return 0; }
int cllm_dist_barrier(void) { return 0; }
int cllm_dist_bcast(void *buf, size_t bytes, int root) { (void)buf; (void)bytes; (void)root; return 0; }
int cllm_dist_check_same(const void *buf, size_t bytes, const char *what) { (void)buf; (void)bytes; (void)what; (void)hash_u64; return 0; }
int cllm_dist_finalize(void) { return 0; }
void cllm_dist_abort(int status) { (void)status; }

#endif

int cllm_dist_mean_f32(float *buf, size_t n, double count) {
    int rc = cllm_dist_sum_f32(buf, n);
    if (rc || count == 1) return rc;
    if (!(count > 0)) return cllm_error(CLLM_EINVAL, "average over %g items", count);
    const float s = (float)(1.0 / count);
    for (size_t i = 0; i < n; i++) buf[i] *= s;
    return 0;
}

int cllm_dist_sum_slice_f32(float *buf, size_t n) { return g_size == 1 ? 0 : sliced(REDUCE_SCATTER, buf, NULL, n, 0); }
int cllm_dist_allgather_f32(float *buf, size_t n) { return g_size == 1 ? 0 : sliced(ALLGATHER, buf, NULL, n, 0); }

int cllm_dist_gather_f32(const float *mine, float *full, size_t n, int root) {
    if (g_size > 1) return sliced(GATHER, full, mine, n, root);
    if (full != mine && n) memcpy(full, mine, n * sizeof *full);
    return 0;
}
