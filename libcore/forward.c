/* forward.c: LLaMA-family forward pass (HF LlamaForCausalLM / Qwen2ForCausalLM
 * semantics) in fp32 over a cllm_model, with a multi-sequence KV cache.
 *
 * Per call, for T new tokens of one sequence at positions P..P+T-1:
 *   x = E[tokens]                                   (T, C)
 *   per layer l:
 *     xn = RMSNorm(x) * attn_norm                   (T, C)
 *     q = xn Wq^T (+bq)                             (T, NH*HS)
 *     k, v = xn Wk^T (+bk), xn Wv^T (+bv)           (T, KD) straight into the
 *                                                   cache rows P..P+T-1
 *     RoPE(q), RoPE(k) (half-split, positions P+t)
 *     ao = causal GQA attention over cache 0..P+t   (T, NH*HS)
 *     x += ao Wo^T                                  (T, C)
 *     xn = RMSNorm(x) * ffn_norm
 *     x += (silu(xn Wg^T) * (xn Wu^T)) Wd^T         (T, C)
 *   xn = RMSNorm(x) * out_norm; logits = xn E'^T    (T, V), E' = lm_head
 * Invariant: after a successful call the cache of the sequence has exactly
 * P + T valid positions; a failed call changes nothing.
 */
#include "forward.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "kernels.h"

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

void cllm_kv_free(cllm_kv *kv) {
    if (!kv) return;
    free(kv->k);
    free(kv->v);
    free(kv->len);
    memset(kv, 0, sizeof *kv);
}

int cllm_kv_len(const cllm_kv *kv, int seq) {
    return (seq >= 0 && seq < kv->n_seq) ? kv->len[seq] : 0;
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

/* Rows of layer l, sequence seq: (CAP, KD). */
static float *kv_rows(const cllm_kv *kv, float *base, int l, int seq) {
    return base + ((size_t)l * kv->n_seq + seq) * kv->cap * kv->kv_dim;
}

/* ---- forward state ------------------------------------------------------ */

void cllm_set_threads(int n) { kernels_set_threads(n); }

int cllm_fwd_init(cllm_fwd *f, const cllm_model *m, int max_T) {
    memset(f, 0, sizeof *f);
    const cllm_config *c = &m->cfg;
    if (max_T < 1) return cllm_error(CLLM_EINVAL, "forward: bad maximum token count %d", max_T);
    f->m = m;
    f->max_T = max_T;
    size_t T = (size_t)max_T, C = c->d_model, QD = (size_t)c->n_head * c->head_dim;
    size_t F = c->d_ff, V = c->vocab;
    f->x = cllm_malloc(T * C * sizeof(float));
    f->xn = cllm_malloc(T * C * sizeof(float));
    f->q = cllm_malloc(T * QD * sizeof(float));
    f->ao = cllm_malloc(T * QD * sizeof(float));
    f->proj = cllm_malloc(T * C * sizeof(float));
    f->gate = cllm_malloc(T * F * sizeof(float));
    f->up = cllm_malloc(T * F * sizeof(float));
    f->logits = cllm_malloc(T * V * sizeof(float));
    f->pos = cllm_malloc(T * sizeof(int));
    f->argmax = cllm_malloc(T * sizeof(int));
    if (!f->x || !f->xn || !f->q || !f->ao || !f->proj || !f->gate || !f->up || !f->logits ||
        !f->pos || !f->argmax) {
        cllm_fwd_free(f);
        return cllm_error(CLLM_ENOMEM, "forward: out of memory for scratch of %d tokens", max_T);
    }
    return 0;
}

void cllm_fwd_free(cllm_fwd *f) {
    if (!f) return;
    free(f->x); free(f->xn); free(f->q); free(f->ao); free(f->proj);
    free(f->gate); free(f->up); free(f->att); free(f->logits); free(f->pos); free(f->argmax);
    memset(f, 0, sizeof *f);
}

int cllm_forward(cllm_fwd *f, cllm_kv *kv, int seq, int pos, const int *tokens, int T,
                 int lm_from) {
    const cllm_model *m = f->m;
    const cllm_config *c = &m->cfg;
    int C = c->d_model, NH = c->n_head, NKV = c->n_head_kv, HS = c->head_dim;
    int F = c->d_ff, V = c->vocab, QD = NH * HS, KD = NKV * HS;

    if (T < 1 || T > f->max_T)
        return cllm_error(CLLM_EINVAL, "forward: %d tokens (1..%d allowed)", T, f->max_T);
    if (seq < 0 || seq >= kv->n_seq)
        return cllm_error(CLLM_EINVAL, "forward: no sequence %d in the KV cache", seq);
    if (kv->n_layer != c->n_layer || kv->kv_dim != KD)
        return cllm_error(CLLM_EINVAL, "forward: KV cache shape does not match the model");
    if (pos < 0 || pos > kv->len[seq])
        return cllm_error(CLLM_EINVAL, "forward: position %d beyond the cached %d", pos, kv->len[seq]);
    if (pos > kv->cap - T)
        return cllm_error(CLLM_ELIMIT, "forward: context of %d tokens exceeds the KV cache's %d",
                          pos + T, kv->cap);
    if (lm_from < 0 || lm_from > T)
        return cllm_error(CLLM_EINVAL, "forward: bad lm_from %d for %d tokens", lm_from, T);
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= V)
            return cllm_error(CLLM_EINVAL, "forward: token id %d out of range [0, %d)", tokens[t], V);
    size_t att_need = (size_t)kernels_threads() * (size_t)(pos + T);
    if (att_need > f->att_cap) {
        float *a = cllm_realloc(f->att, att_need * sizeof(float));
        if (!a) return CLLM_ENOMEM;
        f->att = a;
        f->att_cap = att_need;
    }

    kv->len[seq] = pos + T;
    for (int t = 0; t < T; t++) f->pos[t] = pos + t;
    float *x = f->x, *xn = f->xn;

    embedding_forward(x, tokens, m->tok_emb, T, C);
    for (int l = 0; l < c->n_layer; l++) {
        const cllm_layer_weights *w = &m->layers[l];
        float *kc = kv_rows(kv, kv->k, l, seq);          /* (CAP, KD) */
        float *vc = kv_rows(kv, kv->v, l, seq);
        float *knew = kc + (size_t)pos * KD;             /* (T, KD) */
        float *vnew = vc + (size_t)pos * KD;

        /* attention block */
        rmsnorm_forward(xn, NULL, x, w->attn_norm, T, C, c->rms_eps);
        matmul_forward(f->q, xn, w->wq, w->bq, T, C, QD);
        matmul_forward(knew, xn, w->wk, w->bk, T, C, KD);
        matmul_forward(vnew, xn, w->wv, w->bv, T, C, KD);
        rope_forward(f->q, f->pos, T, NH, HS, c->rope_dim, c->rope_theta);
        rope_forward(knew, f->pos, T, NKV, HS, c->rope_dim, c->rope_theta);
        attention_forward(f->ao, f->q, kc, vc, f->att, T, pos, NH, NKV, HS);
        matmul_forward(f->proj, f->ao, w->wo, NULL, T, QD, C);
        residual_forward(x, x, f->proj, (size_t)T * C);

        /* MLP block */
        rmsnorm_forward(xn, NULL, x, w->ffn_norm, T, C, c->rms_eps);
        matmul_forward(f->gate, xn, w->w_gate, NULL, T, C, F);
        matmul_forward(f->up, xn, w->w_up, NULL, T, C, F);
        swiglu_forward(f->gate, f->gate, f->up, T, F);
        matmul_forward(f->proj, f->gate, w->w_down, NULL, T, F, C);
        residual_forward(x, x, f->proj, (size_t)T * C);
    }
    int n = T - lm_from;
    if (n > 0) {
        rmsnorm_forward(xn, NULL, x + (size_t)lm_from * C, m->out_norm, n, C, c->rms_eps);
        matmul_forward(f->logits + (size_t)lm_from * V, xn, m->lm_head, NULL, n, C, V);
        argmax_forward(f->argmax + lm_from, f->logits + (size_t)lm_from * V, n, V);
    }
    return 0;
}
