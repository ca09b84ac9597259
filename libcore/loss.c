/* loss.c: cross-entropy, label smoothing and soft cross-entropy with their
 * logit gradients (see loss.h). */
#include "loss.h"

#include <math.h>
#include <stddef.h>

#include "err.h"

/* max and log-sum-exp of a row, in double. */
static double row_lse(const float *x, int V, double *mx_out) {
    double mx = x[0];
    for (int v = 1; v < V; v++)
        if (x[v] > mx) mx = x[v];
    double s = 0;
    for (int v = 0; v < V; v++) s += exp((double)x[v] - mx);
    *mx_out = mx;
    return mx + log(s);
}

double cllm_ce_row(const float *logits, int V, int target, double eps, float scale, float *dlogits) {
    double mx;
    double lse = row_lse(logits, V, &mx);
    double nll = lse - (double)logits[target];
    double loss = (1.0 - eps) * nll;
    if (eps != 0) {
        double sum_logit = 0;
        for (int v = 0; v < V; v++) sum_logit += (double)logits[v];
        loss += eps * (lse - sum_logit / V);
    }
    if (dlogits) {
        double off = eps / V;
        for (int v = 0; v < V; v++) dlogits[v] = (float)(scale * (exp((double)logits[v] - lse) - off));
        dlogits[target] -= (float)(scale * (1.0 - eps));
    }
    return loss;
}

double cllm_soft_ce_row(const float *student, const float *teacher, int V, float scale, float *dlogits) {
    double ms, mt;
    double lse_s = row_lse(student, V, &ms);
    double lse_t = row_lse(teacher, V, &mt);
    double loss = 0;
    for (int v = 0; v < V; v++) {
        double p = exp((double)teacher[v] - lse_t);
        double logq = (double)student[v] - lse_s;
        loss -= p * logq;
        if (dlogits) dlogits[v] = (float)(scale * (exp(logq) - p));
    }
    return loss;
}

int cllm_first_diff(const int32_t *a, const int32_t *b, int n) {
    int i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

int cllm_consistency_loss(const float *student, const float *teacher, int V, const int32_t *y,
                          const int32_t *yref, int m, int reduce, float scale, float *dstudent,
                          double *loss, int *n_rows) {
    if (V < 1 || m < 0 || (reduce != CLLM_REDUCE_SUM && reduce != CLLM_REDUCE_MEAN))
        return cllm_error(CLLM_EINVAL, "consistency loss: bad arguments (V %d, m %d)", V, m);
    int d = cllm_first_diff(y, yref, m);
    int kept = m - d;
    if (n_rows) *n_rows = kept;
    if (dstudent)
        for (int i = 0; i < d; i++)
            for (int v = 0; v < V; v++) dstudent[(size_t)i * V + v] = 0.0f;
    if (kept == 0) return 0;
    float s = reduce == CLLM_REDUCE_MEAN ? scale / (float)kept : scale;
    double sum = 0;
    for (int i = d; i < m; i++) {
        size_t off = (size_t)i * V;
        sum += cllm_soft_ce_row(student + off, teacher + off, V, s, dstudent ? dstudent + off : NULL);
    }
    *loss += (double)s * sum;
    return 0;
}

int cllm_ce_loss(const float *logits, int V, const int32_t *targets, int m, double eps, int reduce,
                 float scale, float *dlogits, double *loss) {
    if (V < 1 || m < 0 || !(eps >= 0 && eps < 1) || (reduce != CLLM_REDUCE_SUM && reduce != CLLM_REDUCE_MEAN))
        return cllm_error(CLLM_EINVAL, "cross-entropy: bad arguments (V %d, m %d, eps %g)", V, m, eps);
    for (int i = 0; i < m; i++)
        if (targets[i] < 0 || targets[i] >= V)
            return cllm_error(CLLM_EINVAL, "cross-entropy: target %d is outside the vocabulary (%d)", targets[i], V);
    if (m == 0) return 0;
    float s = reduce == CLLM_REDUCE_MEAN ? scale / (float)m : scale;
    double sum = 0;
    for (int i = 0; i < m; i++) {
        size_t off = (size_t)i * V;
        sum += cllm_ce_row(logits + off, V, targets[i], eps, s, dlogits ? dlogits + off : NULL);
    }
    *loss += (double)s * sum;
    return 0;
}
