/* dist.h: data-parallel ranks for cllm-train (docs/SCALING.md).
 *
 * Built with MPI (make MPI=1, the default when mpicc is found: dist.c is then
 * compiled with -DCLLM_MPI=1), the process joins MPI_COMM_WORLD when an MPI
 * launcher started it (mpirun/mpiexec or srun: OMPI_COMM_WORLD_SIZE,
 * PMIX_RANK, PMI_RANK or PMI_SIZE in the environment, or CLLM_MPI=1); a
 * process started on its own stays a single rank and never calls MPI_Init.
 * Built without MPI every call is a no-op for one rank (rank 0, size 1), and
 * cllm_dist_init refuses to run when a launcher started several processes,
 * so that they cannot train N independent copies into the same output; so
 * does either build under srun with several tasks but no MPI process manager
 * (SLURM_STEP_NUM_TASKS > 1 and none of the variables above: srun without
 * --mpi=pmix where the site's default is none).
 *
 * Every function except rank/size/active is collective: all ranks call it, in
 * the same order, with the same sizes. Buffers of any length (chunks of 2^30
 * elements go to MPI). Calls are made from one thread (MPI_THREAD_FUNNELED).
 * Errors: a CLLM_E* code with the MPI error string in the message.
 */
#ifndef CLLM_DIST_H
#define CLLM_DIST_H

#include <stddef.h>
#include <stdint.h>

/* Join MPI_COMM_WORLD when started by a launcher (see above). Idempotent. */
int cllm_dist_init(void);
/* This process's rank (0 when not distributed) and the number of ranks (1). */
int cllm_dist_rank(void);
int cllm_dist_size(void);
/* This process's rank among the ranks on its own machine (MPI_COMM_TYPE_SHARED)
 * and their number: 0 and 1 when not distributed. Picks a rank's GPU. */
int cllm_dist_local_rank(void);
int cllm_dist_local_size(void);
/* 1 when this build has MPI compiled in. */
int cllm_dist_compiled(void);

/* In place over all ranks: buf = the elementwise sum. Results are identical on
 * every rank (Open MPI's reduction order does not depend on the rank). */
int cllm_dist_sum_f32(float *buf, size_t n);
int cllm_dist_sum_f64(double *buf, size_t n);
/* buf = the elementwise maximum. */
int cllm_dist_max_i64(int64_t *buf, size_t n);
/* buf = sum over ranks / count: the average of contributions that were each
 * normalised by nothing (sum of per-example gradients over `count` examples).
 * The division happens once, after the sum, so the result does not depend on
 * how the examples were split among the ranks. */
int cllm_dist_mean_f32(float *buf, size_t n, double count);
/* Sharded vectors (ZeRO-1, docs/SCALING.md): rank r of `size` owns the slice
 * [*off, *off + *len) of a vector of n elements. The slices follow from n and
 * size alone: ceil(n / size) rounded up to CLLM_DIST_ALIGN elements each
 * (whole cache lines, and aligned device buffers), the last ones shorter or
 * empty; together they cover [0, n) in rank order. */
enum { CLLM_DIST_ALIGN = 64 };
void cllm_dist_slice(size_t n, int rank, int size, size_t *off, size_t *len);
/* Reduce-scatter, in place: afterwards this rank's slice of buf holds the
 * elementwise sum over ranks of that slice (with 2 ranks bit for bit what
 * cllm_dist_sum_f32 gives: a sum of two floats does not depend on order); the
 * rest of buf is left undefined. */
int cllm_dist_sum_slice_f32(float *buf, size_t n);
/* All-gather, in place: every rank's slice of buf (n elements) from its owner. */
int cllm_dist_allgather_f32(float *buf, size_t n);
/* Gather to root: mine (this rank's slice of a vector of n, its len elements)
 * into full (n elements; read only on root, may be NULL elsewhere). */
int cllm_dist_gather_f32(const float *mine, float *full, size_t n, int root);
/* For tests: the most elements one MPI call carries (default and maximum
 * 2^30; smaller makes small buffers go in several pieces). */
void cllm_dist_set_chunk(size_t elems);
/* Wait for every rank. */
int cllm_dist_barrier(void);
/* Copy `bytes` bytes of root's buf to every rank. */
int cllm_dist_bcast(void *buf, size_t bytes, int root);
/* Check that buf (bytes) is the same on every rank: 0, or CLLM_EINVAL with
 * "ranks disagree on WHAT" (a 64-bit hash is compared). */
int cllm_dist_check_same(const void *buf, size_t bytes, const char *what);

/* Leave MPI (MPI_Finalize) when cllm_dist_init joined it. Returns 0 or an error. */
int cllm_dist_finalize(void);
/* For binaries only (never the library's own error path): end every rank of
 * the job after a failure on this one, so the others do not wait forever in a
 * collective call. Returns only when not distributed. */
void cllm_dist_abort(int status);

#endif
