/* adamw.h: AdamW as torch.optim.AdamW computes it (decoupled weight decay,
 * bias correction, amsgrad off), global-norm gradient clipping as
 * torch.nn.utils.clip_grad_norm_, and the linear warm-up + cosine learning
 * rate schedule of HF transformers' get_cosine_schedule_with_warmup.
 *
 * One optimizer step with torch's arithmetic, per element, in fp32:
 *   t += 1
 *   p *= 1 - lr * wd                          (decayed elements only)
 *   m = lerp(m, g, 1 - b1);  v = b2 * v + (1 - b2) * g * g
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 */
#ifndef CLLM_ADAMW_H
#define CLLM_ADAMW_H

#include <stddef.h>
#include <stdint.h>

typedef struct cllm_adamw {
    size_t n;              /* parameters */
    float *m, *v;          /* first and second moments (n each) */
    uint8_t *no_decay;     /* (n) 1: skip weight decay for this element; NULL: decay all */
    int64_t t;             /* steps taken */
    double beta1, beta2, eps, weight_decay;
} cllm_adamw;

/* Zero moments for n parameters; betas (0.9, 0.999), eps 1e-8, weight decay 0
 * (set the fields to change them). 0 or CLLM_ENOMEM. */
int cllm_adamw_init(cllm_adamw *o, size_t n);
void cllm_adamw_free(cllm_adamw *o);

/* Exempt elements [off, off + len) from weight decay (allocates no_decay). */
int cllm_adamw_no_decay(cllm_adamw *o, size_t off, size_t len);

/* One step with learning rate lr on params given grads (both n floats). */
void cllm_adamw_step(cllm_adamw *o, float *params, const float *grads, double lr);

/* The L2 norm of grads (n floats), summed in double: sqrt(cllm_grad_sumsq). */
double cllm_grad_norm(const float *grads, size_t n);
/* The sum of squares of grads (n floats) in double, in index order: a slice's
 * part of the norm when the gradient is sharded over ranks. */
double cllm_grad_sumsq(const float *grads, size_t n);

/* torch.nn.utils.clip_grad_norm_(max_norm): given the total norm, multiply
 * grads by min(1, max_norm / (norm + 1e-6)). max_norm <= 0: no clipping.
 * Returns the factor applied. */
double cllm_grad_clip(float *grads, size_t n, double norm, double max_norm);

/* Learning-rate multiplier at step index s (0-based: the first optimizer step
 * uses s = 0) of a schedule of total steps with warmup warm-up steps: linear
 * s / warmup during warm-up, then 0.5 * (1 + cos(pi * progress)) down to 0 at
 * s = total. As HF's get_cosine_schedule_with_warmup under torch LambdaLR. */
double cllm_lr_cosine(int64_t s, int64_t warmup, int64_t total);

/* Warm-up steps for a fraction of total: ceil(frac * total), as HF Trainer's
 * get_warmup_steps. */
int64_t cllm_warmup_steps(double frac, int64_t total);

#endif
