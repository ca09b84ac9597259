/* train.h: the work behind cllm-train: consistency (CLLM) or supervised
 * (SFT) fine-tuning on the CPU or a CUDA device (docs/CUDA-TRAINING.md),
 * with AdamW, a warm-up + cosine schedule, metric records on a stream,
 * checkpoints and exact resume (docs/TRAINING.md).
 *
 * Data: for --objective cllm, traj records (their header's tokenizer hash
 * must equal the model's); for sft, prompts with answers from a stream of
 * prompt records, JSONL (--field/--answer-field/--template/--chat) or
 * whatever libcore/prompts.h reads. Each training example is a context
 * (prompt + prefix) and a target window; micro-batches of `batch` examples
 * are padded to a common length, `grad_accum` of them make one step.
 */
#ifndef CLLM_TRAIN_H
#define CLLM_TRAIN_H

#include <stdint.h>

#include "model.h"
#include "prompts.h"

enum { CLLM_OBJ_CLLM = 0, CLLM_OBJ_SFT = 1 };
enum { CLLM_CONS_GLOBAL = 0, CLLM_CONS_LOCAL = 1 };
/* How the ranks' gradients are summed (dist.h, cuda_nccl.h). AUTO: NCCL on
 * CUDA with several ranks, MPI on the host otherwise. NCCL: on the devices
 * (CUDA only; also with one rank, a communicator of one). MPI: on the host
 * (on CUDA through host copies of the gradients). */
enum { CLLM_ALLREDUCE_AUTO = 0, CLLM_ALLREDUCE_NCCL = 1, CLLM_ALLREDUCE_MPI = 2 };

/* What a step reports (to the caller's progress callback). */
typedef struct cllm_train_progress {
    int64_t step, total_steps;  /* step just finished (1-based), schedule length */
    double loss, consistency, ar, lr, grad_norm, tokens_per_s;
    int64_t examples;           /* examples in this step */
    const char *checkpoint;     /* path written after this step, or NULL */
} cllm_train_progress;

typedef struct cllm_train_opts {
    int objective;              /* CLLM_OBJ_* [cllm] */
    int loss;                   /* CLLM_CONS_* [global] */
    int cons_mean;              /* average the consistency rows instead of summing them [0] */
    int separate_passes;        /* cllm, global loss without labels: the student x‖y(j) in a
                                   forward and backward pass of its own instead of a fork of
                                   x‖y* (the same losses and gradients up to rounding, ~1.8x
                                   the rows; for checking the fork) [0] */
    double lr;                  /* peak learning rate [2e-5] */
    double warmup;              /* warm-up fraction of the steps [0.03] */
    double clip;                /* global gradient norm limit, 0 off [1.0] */
    double ar_weight;           /* AR loss weight (cllm) [10] */
    double label_smoothing;     /* AR label smoothing; < 0: 0.1 for cllm, 0 for sft [-1] */
    double weight_decay;        /* AdamW decoupled weight decay, not on norms/biases [0] */
    double beta1, beta2, eps;   /* AdamW [0.9, 0.999, 1e-8] */
    int epochs;                 /* passes over the input; 0: 1, or unlimited with max_steps [0] */
    int64_t max_steps;          /* 0: epochs decide [0] */
    int batch;                  /* examples per micro-batch [1] */
    int grad_accum;             /* micro-batches per step [1] */
    int use_labels;             /* AR loss on traj labels instead of the fixed point [0] */
    int shuffle_buffer;         /* examples held for shuffling, 1: input order [1024] */
    int max_len;                /* longest sequence (tokens) accepted, 0: the model's context [0] */
    int64_t checkpoint_every;   /* steps between checkpoints, 0 off [0] */
    int keep;                   /* checkpoints kept, 0 all [3] */
    const char *checkpoint_dir; /* NULL: OUTPUT.ckpt */
    const char *resume;         /* checkpoint file or directory to resume from */
    uint64_t seed;              /* shuffle and state sampling [0] */
    const char *input;          /* NULL or "-": standard input */
    const char *output;         /* the trained model (.gguf or a HF directory) */
    const char *dtype;          /* output dtype: f32 f16 bf16 [f32] */
    const char *metrics;        /* metric stream path, NULL: standard output */
    int force;                  /* metric stream to a terminal */
    cllm_prompt_opts prompt;    /* SFT input options */
    int device;                 /* CLLM_DEVICE_CPU or CLLM_DEVICE_CUDA (forward.h: the training
                                   step of cuda_train.h, in a build with CUDA; with several
                                   ranks each takes the device of cllm_nccl_pick_device) [CPU] */
    int allreduce;              /* CLLM_ALLREDUCE_* [AUTO] */
    int shard_optimizer;        /* ZeRO-1 (docs/SCALING.md): each rank keeps AdamW's moments
                                   for its slice of the parameters only; the gradients are
                                   reduce-scattered, each rank updates its slice, the weights
                                   are all-gathered. The same weights as without it (bit for
                                   bit with 2 ranks when clipping does not act), checkpoints
                                   unchanged. One rank: no effect. On CUDA with NCCL
                                   (ncclReduceScatter, ncclAllGather) [0] */
    int argc;                   /* the command line, for the header */
    char *const *argv;
    void (*on_step)(void *ctx, const cllm_train_progress *p);
    void *cb_ctx;
} cllm_train_opts;

void cllm_train_opts_init(cllm_train_opts *o);

/* Train m in place and save it to o->output. Returns 0, CLLM_EINTR when a
 * signal stopped it (after the step in hand; a checkpoint is written when
 * checkpointing is on; the metric stream's end record is marked "interrupted"),
 * or a CLLM_E* code. */
int cllm_train_run(cllm_model *m, const cllm_train_opts *o);

#endif
