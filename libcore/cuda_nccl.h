/* cuda_nccl.h: sums of device buffers over the ranks of dist.h with NCCL
 * (implemented in kernels/cuda/train/nccl.cu, compiled when the build has
 * CUDA; docs/SCALING.md).
 *
 * NCCL is loaded at run time (dlopen of libnccl.so.2, or the file named by
 * CLLM_NCCL_LIB), not linked: the binaries run on machines without it, and
 * only a run that asks for NCCL needs it, getting a clear error otherwise.
 * Once loaded it stays for the life of the process (its threads may outlive
 * a communicator).
 * The communicator is bootstrapped over dist.h: rank 0 makes the unique id,
 * cllm_dist_bcast hands it to the others, every rank joins with its dist.h
 * rank. Without MPI (one process) it is a communicator of one rank, which
 * runs the same all-reduce path on the device (a copy).
 *
 * Every function but cllm_nccl_free is collective over the dist.h ranks.
 * Errors: CLLM_EUNSUP when NCCL cannot be loaded or this build has none,
 * CLLM_EIO for NCCL or CUDA failures (the NCCL error string in the message).
 */
#ifndef CLLM_CUDA_NCCL_H
#define CLLM_CUDA_NCCL_H

#include <stddef.h>

typedef struct cllm_nccl cllm_nccl;   /* opaque */

/* The CUDA device for this rank: its local rank (dist.h) modulo the visible
 * devices, in *device (a scheduler that gives each rank its own
 * CUDA_VISIBLE_DEVICES makes that 0). exclusive: collective over the ranks,
 * which compare their picks' UUIDs; two ranks on one device is CLLM_EINVAL
 * (NCCL needs one device per rank). */
int cllm_nccl_pick_device(int *device, int exclusive);

/* A communicator over all dist.h ranks on CUDA device `device` (made the
 * current device). *out = NULL on failure. */
int cllm_nccl_init(cllm_nccl **out, int device);
void cllm_nccl_free(cllm_nccl *c);

/* In place over all ranks: buf (n floats in device memory) = the elementwise
 * sum. stream: the cudaStream_t the buffer was written on (NULL: the default
 * stream); returns after the stream has finished the sum. */
int cllm_nccl_sum_f32(cllm_nccl *c, float *buf, size_t n, void *stream);

/* ZeRO-1 (docs/SCALING.md): buf (device memory) holds size * per floats, rank
 * r's slice at r * per (dist.h's cllm_dist_slice: per is rank 0's length,
 * the buffer padded to equal slices, as NCCL's collectives want them). In
 * place, returning after the stream has finished: sum_scatter leaves in rank
 * r's slice the sum over ranks of that slice (the rest undefined);
 * allgather gives every rank every slice from its owner. */
int cllm_nccl_sum_scatter_f32(cllm_nccl *c, float *buf, size_t per, void *stream);
int cllm_nccl_allgather_f32(cllm_nccl *c, float *buf, size_t per, void *stream);

/* "NCCL 2.x.y (path)" of the library in use, for logs. */
const char *cllm_nccl_describe(const cllm_nccl *c);

#endif
