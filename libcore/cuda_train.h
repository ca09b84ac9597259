/* cuda_train.h: the training step on a CUDA device (plain C API; implemented
 * in kernels/cuda/train/cuda_train.cu, compiled when the build has CUDA,
 * i.e. CLLM_CUDA is defined as 1). Design and precision: docs/CUDA-TRAINING.md.
 *
 * A trainer holds one model on the device: fp32 master weights in the layout
 * of model->params (n_params floats), their bf16 copy (the compute weights,
 * same layout), fp32 gradients (same layout: a host copy is a gradient
 * buffer of cllm_train_backward's kind, so the CPU's checkpoint, MPI and
 * comparison code apply), AdamW's fp32 moments, and activations for
 * micro-batches of up to max_B sequences of max_T rows.
 *
 * One micro-batch (cllm_cuda_train_micro) is the training forward of
 * train_fwd.h (B padded sequences, lens[b] real rows each, causal from
 * position 0, no cache), the losses of loss.h on the rows the caller names,
 * and the backward, adding every parameter's gradient into the device's
 * gradient buffer (+=, so accumulation over micro-batches is a loop). Only
 * the named loss rows get logits, computed in chunks of rows; no (B*T, V)
 * tensor exists on the device or the host. The caller's padding costs
 * nothing: on the device the B sequences are packed one after another
 * (sum of lens[b] rows), so products and element-wise passes run over real
 * rows only.
 *
 * A loss row r = b*T + t (t < lens[b]) may carry, added together:
 *   - a cross-entropy against target with label smoothing eps (the call's),
 *     times ce_scale (cllm_ce_row; the AR and SFT losses; for MEAN over m
 *     rows the caller passes scale/m, as cllm_ce_loss does);
 *   - a soft cross-entropy against the teacher logits kept in slot teacher
 *     (cllm_soft_ce_row), times soft_scale (the consistency loss);
 *   - save: keep this row's logits in slot save as a later call's teacher
 *     (fp32, the V logits as computed). Teacher logits therefore come from
 *     the same weights, before the optimizer step, with no second model.
 * A call may read a slot it also saves when every row saving such a slot
 * comes before every row reading one in `rows` (the saving rows' chunks run
 * first). The loss values come back as
 * sum over rows of scale * loss (double), per part, as loss.c adds them.
 *
 * Nothing prints or exits. Failures return a CLLM_E* code with a message
 * (cllm_errmsg) naming the CUDA/cuBLAS call and file:line: CLLM_ENOMEM for
 * device memory (with the bytes asked and the device's free/total),
 * CLLM_EUNSUP for no device or driver or an unsupported shape, CLLM_EINVAL
 * for bad arguments (checked before anything runs), CLLM_EIO for other
 * device errors; after a device error the trainer may be unusable (sticky
 * CUDA errors): free it and stop. Every call returns with the device idle
 * (it synchronises its stream), so host buffers may be reused at once.
 */
#ifndef CLLM_CUDA_TRAIN_H
#define CLLM_CUDA_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "adamw.h"
#include "model.h"
#include "train_fwd.h"

/* Number of usable CUDA devices in *n (0, and return 0, when there is no
 * driver or no device). Returns 0 or a CLLM_E* code for other failures. */
int cllm_cuda_train_devices(int *n);

typedef struct cllm_cuda_train cllm_cuda_train;   /* opaque */

typedef struct cllm_cuda_train_opts {
    int max_B, max_T;     /* largest micro-batch: activations are planned for max_B*max_T rows */
    int max_rows;         /* loss rows per micro-batch (0: max_B*max_T) */
    int teacher_rows;     /* teacher slots kept between calls (0: none) */
    int chunk_rows;       /* logits rows per chunk (0: as many as fit 256 MiB of fp32 logits) */
    int attention;        /* attention kernels (kernels/cuda/train/attention*.cu): 0, the
                             tiled tensor-core ones where the head size allows (16, 32,
                             64, 128), else 1; 1, kernel1 (a warp per key); 2, kernel2 (a
                             thread per key) where its shared memory fits */
    int device;           /* CUDA device ordinal (made current by init; 0: the first) */
    int max_tokens;       /* activations are planned for this many rows: the largest sum
                             of lens (and fork rows) of a call (its sequences and forks
                             are packed), at most 2 max_B*max_T (0: max_B*max_T) */
    int shard_rank, shard_ranks;   /* ZeRO-1 (docs/SCALING.md) when shard_ranks > 1: this
                             rank's slice of the parameters is cllm_dist_slice(n_params,
                             shard_rank, shard_ranks); the moments and no-decay mask are
                             the slice's only, the weight and gradient buffers padded to
                             shard_ranks equal slices (NCCL's layout) [0, 0: none] */
} cllm_cuda_train_opts;

typedef struct cllm_cuda_loss_row {
    int row;              /* b*T + t of the call's (B, T) layout, t < lens[b]; with forks,
                             (B + b)*T + i is row i < fork[b].n of sequence b's fork; distinct */
    int target;           /* cross-entropy target in [0, V), or -1 */
    float ce_scale;
    int teacher;          /* teacher slot in [0, teacher_rows), or -1 */
    float soft_scale;
    int save;             /* slot to keep this row's logits in, or -1 */
} cllm_cuda_loss_row;

/* Upload m (fp32 master + bf16 copy), zero gradients and moments, AdamW
 * hyperparameters as cllm_adamw_init sets them. Needs an even HS <= 256. On
 * device o->device, which becomes the thread's current device. 0 or CLLM_E*
 * (*out = NULL then). */
int cllm_cuda_train_init(cllm_cuda_train **out, const cllm_model *m, const cllm_cuda_train_opts *o);
void cllm_cuda_train_free(cllm_cuda_train *t);
/* Device bytes held (weights, gradients, moments, activations, scratch). */
size_t cllm_cuda_train_bytes(const cllm_cuda_train *t);
const cllm_config *cllm_cuda_train_config(const cllm_cuda_train *t);

/* Gradients = 0. */
int cllm_cuda_train_zero_grad(cllm_cuda_train *t);

/* One micro-batch: tokens (B, T) host ints (each in [0, V) for t < lens[b];
 * rows past lens[b] are not read), lens (B), rows (n_rows) as above, eps the
 * label smoothing in [0, 1). backward 0: forward and losses only (e.g. a
 * teacher pass that only saves rows); 1: gradients += d(sum of the scaled
 * losses)/d params. *ce_loss, *soft_loss (either may be NULL) = the scaled
 * loss sums of this call. 0 or CLLM_E*. */
int cllm_cuda_train_micro(cllm_cuda_train *t, const int *tokens, const int *lens, int B, int T,
                          const cllm_cuda_loss_row *rows, int n_rows, double eps, int backward,
                          double *ce_loss, double *soft_loss);

/* The same with forks (train_fwd.h's cllm_fork; fork (B) or NULL): fork b
 * of n rows branches off sequence b at at (0 <= at <= lens[b], at + n <= T)
 * and sees its first `at` rows as its prefix, as cllm_train_forward_fork;
 * its rows are named (B + b)*T + i in rows. The activations must hold the
 * sequences' and the forks' rows (max_tokens). The CLLM step scores x‖y*
 * (AR rows saving the teacher slots) and x‖y(j) (a fork whose rows read
 * them) in one call. */
int cllm_cuda_train_micro_fork(cllm_cuda_train *t, const int *tokens, const int *lens, int B, int T,
                               const cllm_fork *fork, const cllm_cuda_loss_row *rows, int n_rows, double eps,
                               int do_backward, double *ce_loss, double *soft_loss);

/* Data parallel (cuda_nccl.h): the gradients summed over the communicator's
 * ranks, in place on the device (collective). Sharded: a reduce-scatter,
 * only this rank's slice summed (the rest of the gradients undefined). */
struct cllm_nccl;
int cllm_cuda_train_allreduce(cllm_cuda_train *t, struct cllm_nccl *c);
/* Sharded: every rank's slice of the weights from its owner after a step
 * (NCCL all-gather, collective), and their bf16 copy. Else nothing. */
int cllm_cuda_train_gather(cllm_cuda_train *t, struct cllm_nccl *c);

/* The L2 norm of the gradients (summed in double). Sharded: of the whole
 * gradient, the slices' sums of squares summed over the dist.h ranks
 * (collective). */
int cllm_cuda_train_grad_norm(cllm_cuda_train *t, double *norm);

/* One optimizer step: the gradient norm (*norm, before clipping; may be
 * NULL), clipping to max_norm (<= 0: none; *coef the factor, may be NULL) as
 * cllm_grad_clip, AdamW with learning rate lr as cllm_adamw_step (step count
 * +1), and the bf16 copy of the new weights. Sharded: of this rank's slice
 * (the norm collective as above; cllm_cuda_train_gather next). Gradients
 * are left as they were (unclipped); zero them before the next accumulation. */
int cllm_cuda_train_step(cllm_cuda_train *t, double lr, double max_norm, double *norm,
                         double *coef);

/* Host <-> device copies, n_params floats each, layout of model->params.
 * set_params also rewrites the bf16 copy; set_grads is for an all-reduce
 * done on the host (MPI) or a test. */
int cllm_cuda_train_get_params(cllm_cuda_train *t, float *params);
int cllm_cuda_train_set_params(cllm_cuda_train *t, const float *params);
int cllm_cuda_train_get_grads(cllm_cuda_train *t, float *grads);
int cllm_cuda_train_set_grads(cllm_cuda_train *t, const float *grads);

/* The optimizer state. set_opt copies o's hyperparameters (betas, eps,
 * weight decay), step count, moments and no_decay mask (o->n must equal
 * n_params; sharded, the slice's length, o holding the slice); get_opt
 * writes the moments and step count into o (allocated by cllm_adamw_init
 * for as many), e.g. for ckpt.c. */
int cllm_cuda_train_set_opt(cllm_cuda_train *t, const cllm_adamw *o);
int cllm_cuda_train_get_opt(cllm_cuda_train *t, cllm_adamw *o);

#endif
