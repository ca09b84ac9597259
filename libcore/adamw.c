/* adamw.c: AdamW, gradient clipping and the warm-up + cosine schedule (see
 * adamw.h). Element updates follow torch's single-tensor AdamW in fp32 with
 * the scalars (step size, bias corrections) computed in double, as torch
 * computes Python-number scalars. */
#include "adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

int cllm_adamw_init(cllm_adamw *o, size_t n) {
    memset(o, 0, sizeof *o);
    o->n = n;
    o->m = cllm_calloc(n ? n : 1, sizeof(float));
    o->v = cllm_calloc(n ? n : 1, sizeof(float));
    if (!o->m || !o->v) {
        cllm_adamw_free(o);
        return CLLM_ENOMEM;
    }
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->weight_decay = 0.0;
    return 0;
}

void cllm_adamw_free(cllm_adamw *o) {
    free(o->m);
    free(o->v);
    free(o->no_decay);
    o->m = o->v = NULL;
    o->no_decay = NULL;
}

int cllm_adamw_no_decay(cllm_adamw *o, size_t off, size_t len) {
    if (off > o->n || len > o->n - off) return cllm_error(CLLM_EINVAL, "adamw: range %zu+%zu outside %zu parameters", off, len, o->n);
    if (!o->no_decay && !(o->no_decay = cllm_calloc(o->n ? o->n : 1, 1))) return CLLM_ENOMEM;
    memset(o->no_decay + off, 1, len);
    return 0;
}

void cllm_adamw_step(cllm_adamw *o, float *params, const float *grads, double lr) {
    o->t++;
    double bc1 = 1.0 - pow(o->beta1, (double)o->t);
    double bc2 = 1.0 - pow(o->beta2, (double)o->t);
    float step_size = (float)(lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - lr * o->weight_decay);
    float w1 = (float)(1.0 - o->beta1);
    float b2 = (float)o->beta2, w2 = (float)(1.0 - o->beta2);
    float eps = (float)o->eps;
    int wd = o->weight_decay != 0.0;
    const uint8_t *nd = o->no_decay;
    float *m = o->m, *v = o->v;
    for (size_t i = 0; i < o->n; i++) {
        float p = params[i], g = grads[i];
        if (wd && !(nd && nd[i])) p *= decay;
        m[i] = fmaf(w1, g - m[i], m[i]);        /* torch's lerp (weight < 0.5), fused */
        v[i] = v[i] * b2 + w2 * (g * g);
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p += -step_size * (m[i] / denom);
        params[i] = p;
    }
}

double cllm_grad_sumsq(const float *grads, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)grads[i] * grads[i];
    return s;
}

double cllm_grad_norm(const float *grads, size_t n) { return sqrt(cllm_grad_sumsq(grads, n)); }

double cllm_grad_clip(float *grads, size_t n, double norm, double max_norm) {
    if (max_norm <= 0) return 1.0;
    double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return 1.0;
    float c = (float)coef;
    for (size_t i = 0; i < n; i++) grads[i] *= c;
    return coef;
}

double cllm_lr_cosine(int64_t s, int64_t warmup, int64_t total) {
    if (s < warmup) return (double)s / (double)(warmup > 1 ? warmup : 1);
    int64_t span = total - warmup;
    double progress = (double)(s - warmup) / (double)(span > 1 ? span : 1);
    double f = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
    return f > 0 ? f : 0.0;
}

int64_t cllm_warmup_steps(double frac, int64_t total) {
    if (frac <= 0) return 0;
    return (int64_t)ceil(frac * (double)total);
}
