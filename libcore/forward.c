/* forward.c: LLaMA-family forward pass (HF LlamaForCausalLM / Qwen2ForCausalLM
 * semantics) in fp32 over a cllm_model, with a multi-sequence KV cache, and
 * the dispatch to the CUDA backend (cuda_backend.h) for states made on it.
 *
 * Per call, a ragged batch of B sequences, R = sum_b T_b rows; row r belongs
 * to sequence b(r) at position pos(r) = P_b + t:
 *   x = E[tokens]                                   (R, C)
 *   per layer l:
 *     xn = RMSNorm(x) * attn_norm                   (R, C)
 *     q = xn Wq^T (+bq)                             (R, NH*HS)
 *     k, v = xn Wk^T (+bk), xn Wv^T (+bv)           (R, KD)
 *     RoPE(q), RoPE(k) (half-split, positions pos(r))
 *     cache rows P_b..P_b+T_b-1 of sequence b <- its k, v rows
 *     ao = causal GQA attention, row r over its sequence's cache 0..pos(r)
 *     x += ao Wo^T                                  (R, C)
 *     xn = RMSNorm(x) * ffn_norm
 *     [g u] = xn [Wg; Wu]^T                         (R, 2F) one product
 *     x += (silu(g) * u) Wd^T                       (R, C)
 *   xn = RMSNorm(x[lm rows]) * out_norm; logits = xn E'^T  (n_lm, V), E' = lm_head,
 *   then moved to their row slots.
 * Every weight matrix is read once per call for all rows. No kernel mixes
 * rows except through the cache of the row's own sequence, so a sequence's
 * results do not depend on what else is in the batch (forward.h).
 * Invariant: after a successful call sequence s[b].seq has exactly P_b + T_b
 * valid positions; a failed argument check changes nothing.
 */
#include "forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "gguf.h"   /* cllm_f32_round_bf16 */
#include "kernels.h"
#if CLLM_CUDA
#include "cuda_backend.h"
#endif

/* ---- KV cache ----------------------------------------------------------- */

int cllm_kv_init(cllm_kv *kv, const cllm_config *cfg, int n_seq, int cap) {
    memset(kv, 0, sizeof *kv);
    if (n_seq < 1 || cap < 1)
        return cllm_error(CLLM_EINVAL, "KV cache: bad size (%d sequences of %d positions)", n_seq, cap);
    kv->n_layer = cfg->n_layer;
    kv->n_seq = n_seq;
    kv->cap = cap;
    kv->kv_dim = cfg->n_head_kv * cfg->head_dim;
    size_t n = 0;
    if (cllm_mul_size((size_t)kv->n_layer * n_seq, (size_t)cap, &n) ||
        cllm_mul_size(n, (size_t)kv->kv_dim, &n) || n > SIZE_MAX / sizeof(float))
        return cllm_error(CLLM_ELIMIT, "KV cache too large (%d sequences of %d positions)", n_seq, cap);
    kv->k = cllm_malloc(n * sizeof(float));
    kv->v = cllm_malloc(n * sizeof(float));
    kv->len = cllm_calloc((size_t)n_seq, sizeof(int));
    if (!kv->k || !kv->v || !kv->len) {
        cllm_kv_free(kv);
        return cllm_error(CLLM_ENOMEM, "KV cache: out of memory for %zu floats x 2", n);
    }
    return 0;
}

int cllm_kv_init_for(cllm_kv *kv, const cllm_fwd *f, int n_seq, int cap) {
    if (f->device != CLLM_DEVICE_CUDA) return cllm_kv_init(kv, &f->m->cfg, n_seq, cap);
    memset(kv, 0, sizeof *kv);
#if CLLM_CUDA
    cllm_cuda_kv *ck = cllm_calloc(1, sizeof *ck);
    if (!ck) return CLLM_ENOMEM;
    int rc = cllm_cuda_kv_init(ck, f->cuda_model, n_seq, cap);
    if (rc) {
        free(ck);
        return rc;
    }
    kv->n_layer = ck->n_layer;
    kv->n_seq = ck->n_seq;
    kv->cap = ck->cap;
    kv->kv_dim = ck->kv_dim;
    kv->len = ck->len;   /* one set of lengths: the device cache's (host memory) */
    kv->cuda = ck;
    return 0;
#else
    return cllm_error(CLLM_EUNSUP, "KV cache: this build has no CUDA backend");
#endif
}

void cllm_kv_free(cllm_kv *kv) {
    if (!kv) return;
#if CLLM_CUDA
    if (kv->cuda) {
        cllm_cuda_kv_free(kv->cuda);   /* frees len too */
        free(kv->cuda);
        memset(kv, 0, sizeof *kv);
        return;
    }
#endif
    free(kv->k);
    free(kv->v);
    free(kv->len);
    memset(kv, 0, sizeof *kv);
}

int cllm_kv_len(const cllm_kv *kv, int seq) {
    return (seq >= 0 && seq < kv->n_seq) ? kv->len[seq] : 0;
}

long long cllm_kv_next_cap(long long cap, long long need, long long limit) {
    if (need > limit) return -1;
    if (cap >= need) return cap;
    long long c = cap > 0 ? cap : 512;
    while (c < need) c *= 2;
    return c > limit ? limit : c;
}

int cllm_kv_reserve(cllm_kv *kv, const cllm_fwd *f, int n_seq, int need) {
    if (kv->len && kv->cap >= need) return 0;
    long long limit = 1 << 30;   /* the CPU's: a bound on the sizes' arithmetic */
    int cuda = 0;
#if CLLM_CUDA
    if (f->device == CLLM_DEVICE_CUDA) {
        limit = cllm_cuda_model_max_keys(f->cuda_model);
        cuda = 1;
    }
#endif
    long long cap = cllm_kv_next_cap(kv->len ? kv->cap : 0, need, limit);
    if (cap < 0)
        return cllm_error(CLLM_ELIMIT, "a context of %d tokens is too long (%s holds %lld)", need,
                          cuda ? "the CUDA attention kernel on this device" : "the KV cache", limit);
    if (!kv->len) return cllm_kv_init_for(kv, f, n_seq, (int)cap);
    return cllm_kv_grow(kv, (int)cap);
}

int cllm_kv_grow(cllm_kv *kv, int cap) {
    if (cap <= kv->cap) return 0;
#if CLLM_CUDA
    if (kv->cuda) {
        int rc = cllm_cuda_kv_grow(kv->cuda, cap);
        if (rc) return rc;
        kv->cap = kv->cuda->cap;
        kv->len = kv->cuda->len;
        return 0;
    }
#endif
    size_t n = 0, KD = (size_t)kv->kv_dim;
    if (cllm_mul_size((size_t)kv->n_layer * kv->n_seq, (size_t)cap, &n) ||
        cllm_mul_size(n, KD, &n) || n > SIZE_MAX / sizeof(float))
        return cllm_error(CLLM_ELIMIT, "KV cache too large (%d sequences of %d positions)", kv->n_seq, cap);
    float *k = cllm_malloc(n * sizeof(float)), *v = cllm_malloc(n * sizeof(float));
    if (!k || !v) {
        free(k);
        free(v);
        return cllm_error(CLLM_ENOMEM, "KV cache: out of memory for %zu floats x 2", n);
    }
    for (int l = 0; l < kv->n_layer; l++)
        for (int s = 0; s < kv->n_seq; s++) {
            size_t from = ((size_t)l * kv->n_seq + s) * kv->cap * KD;
            size_t to = ((size_t)l * kv->n_seq + s) * cap * KD;
            size_t cnt = (size_t)kv->len[s] * KD;
            memcpy(k + to, kv->k + from, cnt * sizeof(float));
            memcpy(v + to, kv->v + from, cnt * sizeof(float));
        }
    free(kv->k);
    free(kv->v);
    kv->k = k;
    kv->v = v;
    kv->cap = cap;
    return 0;
}

int cllm_kv_rollback(cllm_kv *kv, int seq, int len) {
    if (seq < 0 || seq >= kv->n_seq)
        return cllm_error(CLLM_EINVAL, "KV cache: no sequence %d (have %d)", seq, kv->n_seq);
    if (len < 0 || len > kv->len[seq])
        return cllm_error(CLLM_EINVAL, "KV cache: cannot roll sequence %d of length %d back to %d",
                          seq, kv->len[seq], len);
    kv->len[seq] = len;
    return 0;
}


/* ---- forward state ------------------------------------------------------ */

void cllm_set_threads(int n) { kernels_set_threads(n); }

/* gate and up as one (2F, C) matrix: true for every model cllm_model_alloc
 * lays out (w_up follows w_gate), checked rather than assumed. */
static int gate_up_fused(const cllm_model *m) {
    size_t FC = (size_t)m->cfg.d_ff * m->cfg.d_model;
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (m->layers[l].w_up != m->layers[l].w_gate + FC) return 0;
    return 1;
}

void cllm_fwd_prepare(int device) {
#if CLLM_CUDA
    if (device == CLLM_DEVICE_CUDA) cllm_cuda_warm_start();
#else
    (void)device;
#endif
}

int cllm_fwd_init(cllm_fwd *f, const cllm_model *m, int max_T) {
    return cllm_fwd_init_on(f, m, max_T, CLLM_DEVICE_CPU, 0);
}

static int fwd_init_cuda(cllm_fwd *f, const cllm_model *m, int max_T, int flags) {
#if CLLM_CUDA
    int rc = cllm_cuda_model_upload(&f->cuda_model, m);
    if (rc) return rc;
    f->cuda = cllm_calloc(1, sizeof *f->cuda);
    if (!f->cuda) return CLLM_ENOMEM;
    if ((rc = cllm_cuda_fwd_init(f->cuda, f->cuda_model, max_T,
                                 ((flags & CLLM_FWD_LOGITS) ? CLLM_CUDA_FWD_LOGITS : 0) |
                                     ((flags & CLLM_FWD_BULK) ? CLLM_CUDA_FWD_BULK : 0) |
                                     ((flags & CLLM_FWD_INVARIANT) ? CLLM_CUDA_FWD_INVARIANT : 0)))) {
        free(f->cuda);
        f->cuda = NULL;
        return rc;
    }
    f->argmax = f->cuda->argmax;   /* pinned host memory of the CUDA state */
    f->logits = f->cuda->logits;
    return 0;
#else
    (void)m; (void)max_T; (void)flags;
    return cllm_error(CLLM_EUNSUP, "forward: this build has no CUDA backend (make CUDA=1)");
#endif
}

int cllm_fwd_call_rows(int device, int n, int batch, int chunk) {
    long long want = (long long)batch * n + chunk, floor = (long long)n + chunk;
    long long cap = device == CLLM_DEVICE_CUDA ? 16384 + (long long)chunk : 512;
    if (want > cap) want = cap;
    return (int)(want > floor ? want : floor);
}

int cllm_fwd_init_on(cllm_fwd *f, const cllm_model *m, int max_T, int device, int flags) {
    memset(f, 0, sizeof *f);
    const cllm_config *c = &m->cfg;
    if (max_T < 1 || max_T > (1 << 20)) return cllm_error(CLLM_EINVAL, "forward: bad maximum row count %d", max_T);
    if (device != CLLM_DEVICE_CPU && device != CLLM_DEVICE_CUDA)
        return cllm_error(CLLM_EINVAL, "forward: unknown device %d", device);
    f->m = m;
    f->max_T = max_T;
    f->device = device;
    int rc = 0;
    size_t T = (size_t)max_T;
    f->row0 = cllm_malloc((T + 1) * sizeof(int));
    f->past = cllm_malloc(T * sizeof(int));
    if (!f->row0 || !f->past) rc = CLLM_ENOMEM;
    if (!rc && device == CLLM_DEVICE_CUDA) rc = fwd_init_cuda(f, m, max_T, flags);
    if (!rc && device == CLLM_DEVICE_CPU) {
        size_t C = c->d_model, QD = (size_t)c->n_head * c->head_dim, KD = (size_t)c->n_head_kv * c->head_dim;
        size_t F = c->d_ff, V = c->vocab;
        f->x = cllm_malloc(T * C * sizeof(float));
        f->xn = cllm_malloc(T * C * sizeof(float));
        f->q = cllm_malloc(T * QD * sizeof(float));
        f->k = cllm_malloc(T * KD * sizeof(float));
        f->v = cllm_malloc(T * KD * sizeof(float));
        f->ao = cllm_malloc(T * QD * sizeof(float));
        f->proj = cllm_malloc(T * C * sizeof(float));
        f->gu = cllm_malloc(T * 2 * F * sizeof(float));
        f->h = cllm_malloc(T * F * sizeof(float));
        f->logits = cllm_malloc(T * V * sizeof(float));
        f->pos = cllm_malloc(T * sizeof(int));
        f->rope = cllm_malloc(T * (size_t)(c->rope_dim > 0 ? c->rope_dim : 1) * sizeof(float));
        f->argmax = cllm_malloc(T * sizeof(int));
        f->kc = cllm_malloc(T * sizeof *f->kc);
        f->vc = cllm_malloc(T * sizeof *f->vc);
        f->lm_rows = cllm_malloc(T * sizeof(int));
        f->gate_up_fused = gate_up_fused(m);
        f->bf16 = (flags & CLLM_FWD_BF16) != 0;
        if (!f->x || !f->xn || !f->q || !f->k || !f->v || !f->ao || !f->proj || !f->gu || !f->h ||
            !f->logits || !f->pos || !f->rope || !f->argmax || !f->kc || !f->vc || !f->lm_rows)
            rc = cllm_error(CLLM_ENOMEM, "forward: out of memory for scratch of %d rows", max_T);
    }
    if (rc) cllm_fwd_free(f);
    return rc;
}

void cllm_fwd_free(cllm_fwd *f) {
    if (!f) return;
#if CLLM_CUDA
    if (f->cuda) {
        cllm_cuda_fwd_free(f->cuda);   /* frees argmax and logits (pinned) */
        free(f->cuda);
        f->argmax = NULL;
        f->logits = NULL;
    }
    cllm_cuda_model_free(f->cuda_model);
#endif
    free(f->x); free(f->xn); free(f->q); free(f->k); free(f->v); free(f->ao); free(f->proj);
    free(f->gu); free(f->h); free(f->att); free(f->logits); free(f->pos); free(f->rope); free(f->argmax);
    free(f->row0); free(f->past); free(f->kc); free(f->vc); free(f->lm_rows);
    memset(f, 0, sizeof *f);
}

/* ---- forward ------------------------------------------------------------- */

/* Rows of layer l, sequence seq: (CAP, KD). */
static float *kv_rows(const cllm_kv *kv, float *base, int l, int seq) {
    return base + ((size_t)l * kv->n_seq + seq) * kv->cap * kv->kv_dim;
}

/* Everything a call can get wrong, checked before anything changes. */
static int check_batch(const cllm_fwd *f, const cllm_kv *kv, const cllm_fwd_seq *s, int B,
                       const int *tokens) {
    const cllm_config *c = &f->m->cfg;
    if (B < 1 || B > f->max_T)
        return cllm_error(CLLM_EINVAL, "forward: %d sequences in one call (1..%d allowed)", B, f->max_T);
    if (kv->n_layer != c->n_layer || kv->kv_dim != c->n_head_kv * c->head_dim)
        return cllm_error(CLLM_EINVAL, "forward: KV cache shape does not match the model");
    if ((kv->cuda != NULL) != (f->device == CLLM_DEVICE_CUDA))
        return cllm_error(CLLM_EINVAL, "forward: the KV cache is on another device than the forward state");
    long long rows = 0;
    for (int b = 0; b < B; b++) {
        int seq = s[b].seq, pos = s[b].pos, T = s[b].T;
        if (T < 1 || T > f->max_T)
            return cllm_error(CLLM_EINVAL, "forward: %d tokens (1..%d allowed)", T, f->max_T);
        rows += T;
        if (seq < 0 || seq >= kv->n_seq)
            return cllm_error(CLLM_EINVAL, "forward: no sequence %d in the KV cache", seq);
        for (int b2 = 0; b2 < b; b2++)
            if (s[b2].seq == seq) return cllm_error(CLLM_EINVAL, "forward: sequence %d twice in one call", seq);
        if (pos < 0 || pos > kv->len[seq])
            return cllm_error(CLLM_EINVAL, "forward: position %d beyond the cached %d", pos, kv->len[seq]);
        if (pos > kv->cap - T)
            return cllm_error(CLLM_ELIMIT, "forward: context of %d tokens exceeds the KV cache's %d",
                              pos + T, kv->cap);
        if (s[b].lm_from < 0 || s[b].lm_from > T)
            return cllm_error(CLLM_EINVAL, "forward: bad lm_from %d for %d tokens", s[b].lm_from, T);
    }
    if (rows > f->max_T)
        return cllm_error(CLLM_EINVAL, "forward: %lld rows in one call (at most %d)", rows, f->max_T);
    for (long long r = 0; r < rows; r++)
        if (tokens[r] < 0 || tokens[r] >= c->vocab)
            return cllm_error(CLLM_EINVAL, "forward: token id %d out of range [0, %d)", tokens[r], c->vocab);
    return 0;
}

static int forward_cpu(cllm_fwd *f, cllm_kv *kv, const cllm_fwd_seq *s, int B, const int *tokens) {
    const cllm_model *m = f->m;
    const cllm_config *c = &m->cfg;
    int C = c->d_model, NH = c->n_head, NKV = c->n_head_kv, HS = c->head_dim;
    int F = c->d_ff, V = c->vocab, QD = NH * HS, KD = NKV * HS;

    /* row layout, LM-head rows, attention scratch */
    int R = 0, n_lm = 0;
    size_t att_row = 0;
    for (int b = 0; b < B; b++) {
        f->row0[b] = R;
        f->past[b] = s[b].pos;
        for (int t = 0; t < s[b].T; t++) {
            f->pos[R + t] = s[b].pos + t;
            if (t >= s[b].lm_from) f->lm_rows[n_lm++] = R + t;
        }
        R += s[b].T;
        if ((size_t)(s[b].pos + s[b].T) > att_row) att_row = (size_t)(s[b].pos + s[b].T);
    }
    f->row0[B] = R;
    size_t att_need = (size_t)kernels_threads() * att_row;
    if (att_need > f->att_cap) {
        float *a = cllm_realloc(f->att, att_need * sizeof(float));
        if (!a) return CLLM_ENOMEM;
        f->att = a;
        f->att_cap = att_need;
    }

    for (int b = 0; b < B; b++) kv->len[s[b].seq] = s[b].pos + s[b].T;
    float *x = f->x, *xn = f->xn;
    int fused = f->gate_up_fused;
    float *gate = f->gu, *up = fused ? NULL : f->gu + (size_t)R * F;

    embedding_forward(x, tokens, m->tok_emb, R, C);
    rope_table(f->rope, f->pos, R, c->rope_dim, c->rope_theta);
    for (int l = 0; l < c->n_layer; l++) {
        const cllm_layer_weights *w = &m->layers[l];

        /* attention block */
        rmsnorm_forward(xn, NULL, x, w->attn_norm, R, C, c->rms_eps);
        if (f->bf16) cllm_f32_round_bf16(xn, (size_t)R * C);
        matmul_forward(f->q, xn, w->wq, w->bq, R, C, QD);
        matmul_forward(f->k, xn, w->wk, w->bk, R, C, KD);
        matmul_forward(f->v, xn, w->wv, w->bv, R, C, KD);
        rope_apply(f->q, f->rope, R, NH, HS, c->rope_dim);
        rope_apply(f->k, f->rope, R, NKV, HS, c->rope_dim);
        if (f->bf16) {   /* the device's cache rows */
            cllm_f32_round_bf16(f->k, (size_t)R * KD);
            cllm_f32_round_bf16(f->v, (size_t)R * KD);
        }
        for (int b = 0; b < B; b++) {   /* new k, v rows into each sequence's cache */
            float *kc = kv_rows(kv, kv->k, l, s[b].seq), *vc = kv_rows(kv, kv->v, l, s[b].seq);
            size_t off = (size_t)s[b].pos * KD, n = (size_t)s[b].T * KD;
            memcpy(kc + off, f->k + (size_t)f->row0[b] * KD, n * sizeof(float));
            memcpy(vc + off, f->v + (size_t)f->row0[b] * KD, n * sizeof(float));
            f->kc[b] = kc;
            f->vc[b] = vc;
        }
        attention_forward_batch(f->ao, f->q, f->kc, f->vc, f->row0, f->past, f->att, B, NH, NKV, HS);
        if (f->bf16) cllm_f32_round_bf16(f->ao, (size_t)R * QD);
        matmul_forward(f->proj, f->ao, w->wo, NULL, R, QD, C);
        residual_forward(x, x, f->proj, (size_t)R * C);

        /* MLP block */
        rmsnorm_forward(xn, NULL, x, w->ffn_norm, R, C, c->rms_eps);
        if (f->bf16) cllm_f32_round_bf16(xn, (size_t)R * C);
        if (fused) {
            matmul_forward(f->gu, xn, w->w_gate, NULL, R, C, 2 * F);
            swiglu_forward_fused(f->h, f->gu, R, F);
        } else {
            matmul_forward(gate, xn, w->w_gate, NULL, R, C, F);
            matmul_forward(up, xn, w->w_up, NULL, R, C, F);
            swiglu_forward(f->h, gate, up, R, F);
        }
        if (f->bf16) cllm_f32_round_bf16(f->h, (size_t)R * F);
        matmul_forward(f->proj, f->h, w->w_down, NULL, R, F, C);
        residual_forward(x, x, f->proj, (size_t)R * C);
    }
    if (n_lm > 0) {
        /* the LM head on the gathered rows, results compact at the front ... */
        for (int i = 0; i < n_lm; i++)
            rmsnorm_forward(xn + (size_t)i * C, NULL, x + (size_t)f->lm_rows[i] * C, m->out_norm, 1, C,
                            c->rms_eps);
        if (f->bf16) cllm_f32_round_bf16(xn, (size_t)n_lm * C);
        matmul_forward(f->logits, xn, m->lm_head, NULL, n_lm, C, V);
        argmax_forward(f->argmax, f->logits, n_lm, V);
        /* ... then moved to their rows, last first: lm_rows[i] >= i, so no
         * row is overwritten before it has moved */
        for (int i = n_lm - 1; i >= 0; i--) {
            int r = f->lm_rows[i];
            if (r == i) continue;
            memcpy(f->logits + (size_t)r * V, f->logits + (size_t)i * V, (size_t)V * sizeof(float));
            f->argmax[r] = f->argmax[i];
        }
    }
    return 0;
}

int cllm_forward_batch(cllm_fwd *f, cllm_kv *kv, const cllm_fwd_seq *s, int B, const int *tokens) {
    int rc = check_batch(f, kv, s, B, tokens);
    if (rc) return rc;
    /* Positions past the context the model was trained for are computed (RoPE
     * has no end), but what comes out there is extrapolation, and cllm-train
     * refuses such sequences by default: say so (once per program, as every
     * warning), as llama.cpp does past n_ctx_train. */
    int ctx = f->m->cfg.max_ctx;
    for (int b = 0; b < B && ctx > 0; b++)
        if (s[b].pos + s[b].T > ctx) {
            cllm_warn("decoding past the model's context length of %d tokens: outputs there are extrapolated, "
                      "and cllm-train refuses such sequences (--max-len)", ctx);
            break;
        }
#if CLLM_CUDA
    if (f->device == CLLM_DEVICE_CUDA) return cllm_cuda_forward_seqs(f->cuda, kv->cuda, s, B, tokens);
#endif
    return forward_cpu(f, kv, s, B, tokens);
}

int cllm_fwd_batch_invariant(const cllm_fwd *f) {
#if CLLM_CUDA
    if (f->device == CLLM_DEVICE_CUDA) return cllm_cuda_fwd_batch_invariant(f->cuda);
#endif
    return 1;
}

int cllm_fwd_one_route(const cllm_fwd *f) {
#if CLLM_CUDA
    if (f->device == CLLM_DEVICE_CUDA) return cllm_cuda_fwd_one_route(f->cuda);
#endif
    return 1;
}

int cllm_forward(cllm_fwd *f, cllm_kv *kv, int seq, int pos, const int *tokens, int T,
                 int lm_from) {
    cllm_fwd_seq s = {seq, pos, T, lm_from};
    return cllm_forward_batch(f, kv, &s, 1, tokens);
}

/* ---- device choice ------------------------------------------------------- */

int cllm_cuda_usable(char *info, size_t size, int *driver) {
    *driver = 0;
#if CLLM_CUDA
    int n = 0;
    int rc = cllm_cuda_device_count(&n, driver);
    if (rc) {
        if (info) snprintf(info, size, "%s", cllm_errmsg());
        return 0;
    }
    if (n < 1) {
        if (info) snprintf(info, size, "%s", *driver ? "the driver sees no device" : "no NVIDIA driver");
        return 0;
    }
    if (info && cllm_cuda_device_name(info, size)) snprintf(info, size, "%s", cllm_errmsg());
    return 1;
#else
    if (info) snprintf(info, size, "this build has no CUDA backend (make CUDA=1)");
    return 0;
#endif
}
