/* loss.h: the training losses of cllm-train and their gradients with respect
 * to the logits (docs/TRAINING.md, "Losses").
 *
 * Every function reads rows of V logits (row-major, V floats per row), adds
 * the loss value to a double accumulator, and writes dlogits = scale * d loss
 * / d logits for the rows it reads (dlogits NULL: value only). All softmaxes
 * subtract the row maximum and sum in double, so any finite logits work.
 *
 * Conventions for a sequence s = context ‖ window: the logits row that
 * predicts window token i is the row of position len(context) - 1 + i, so a
 * caller passes `logits + (row of context's last token) * V` and the window.
 */
#ifndef CLLM_LOSS_H
#define CLLM_LOSS_H

#include <stdint.h>

/* Cross-entropy of one row against target with label smoothing eps in [0, 1)
 * (as torch's cross_entropy(label_smoothing=eps) and HF's LabelSmoother):
 *   loss = (1 - eps) * -log q[target] + eps * mean_v(-log q[v]),
 *   dlogits[v] = scale * (q[v] - (1 - eps) [v == target] - eps / V).
 * Returns the unscaled loss. target must be in [0, V). */
double cllm_ce_row(const float *logits, int V, int target, double eps, float scale, float *dlogits);

/* Soft cross-entropy of the teacher's distribution p = softmax(teacher)
 * (no gradient) against the student's log-softmax q:
 *   loss = -sum_v p[v] log q[v]  (= KL(p || q) + H(p)),
 *   dlogits[v] = scale * (q[v] - p[v]).
 * Returns the unscaled loss. */
double cllm_soft_ce_row(const float *student, const float *teacher, int V, float scale, float *dlogits);

/* Index of the first i in [0, n) with a[i] != b[i], or n when they agree. */
int cllm_first_diff(const int32_t *a, const int32_t *b, int n);

/* How a span's row losses are combined. */
enum { CLLM_REDUCE_SUM = 0, CLLM_REDUCE_MEAN = 1 };

/* Consistency loss of one window of m tokens: the student's rows (student,
 * m rows from the row predicting window token 0) against the teacher's rows
 * (teacher, likewise), for rows i >= cllm_first_diff(y, yref, m) only (as the
 * CLLM reference: rows before the first token where the student's state y
 * and the teacher's yref differ are skipped). reduce SUM adds the rows' soft
 * cross-entropies, MEAN divides by the number of rows kept. The loss times
 * scale is added to *loss; dstudent gets the gradient of scale * loss for the
 * m rows (zero for skipped rows). *n_rows (may be NULL): rows kept.
 * 0, or CLLM_EINVAL for a bad argument. */
int cllm_consistency_loss(const float *student, const float *teacher, int V, const int32_t *y,
                          const int32_t *yref, int m, int reduce, float scale, float *dstudent,
                          double *loss, int *n_rows);

/* Cross-entropy of m target tokens (label smoothing eps), logits starting at
 * the row that predicts targets[0]; SUM or MEAN over the m rows; scale, loss,
 * dlogits as above. 0, or CLLM_EINVAL (a target outside [0, V), bad sizes). */
int cllm_ce_loss(const float *logits, int V, const int32_t *targets, int m, double eps, int reduce,
                 float scale, float *dlogits, double *loss);

#endif
