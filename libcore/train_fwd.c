/* train_fwd.c: the training forward pass (keeps activations) and its backward
 * pass, fp32 on the CPU kernels, over B sequences of up to T rows each.
 *
 * Rows: the caller's (B, T) layout is padded; here the sequences are packed
 * one after another, sequence b at rows row0[b] .. row0[b+1] - 1 (R =
 * row0[B] = sum of lens rows), so no product or element-wise pass computes a
 * padding row (CLLM records of one micro-batch differ in length by up to 6x).
 * Every kernel computes a row from that row alone, so the packed rows give
 * the padded layout's results (the products: BLAS with another M).
 *
 * The forward computes the same function as cllm_forward (forward.c) with an
 * empty KV cache, using the same kernels in the same order:
 *   x0 = E[tokens]                                         (R, C)
 *   per layer l:   x = xs[l]
 *     xn = RMSNorm(x) * attn_norm          (rstd1 saved)   (R, C)
 *     q, k, v = xn Wq^T (+bq), xn Wk^T (+bk), xn Wv^T (+bv), RoPE(q), RoPE(k)
 *     ao = causal GQA attention per sequence
 *     xm[l] = x + ao Wo^T
 *     xn = RMSNorm(xm) * ffn_norm          (rstd2 saved)
 *     xs[l+1] = xm + (silu(xn Wg^T) * (xn Wu^T)) Wd^T
 *   xnf = RMSNorm(xs[L]) * out_norm; logits = xnf E'^T     (every row, or each
 *                                    sequence's window: cllm_train_forward_lm)
 * Saved per layer: xs, xm, rstd1, rstd2, q, k (after RoPE), v, ao, gate, up
 * (pre-activation). The normed inputs and the SwiGLU output are recomputed in
 * the backward pass (bit for bit the same kernels), which saves about a third
 * of the memory; the attention probabilities are recomputed inside
 * attention_backward, so nothing (T, T) is stored.
 *
 * Backward, one buffer dx (R, C) for the residual stream's gradient
 * (x_out = x_in + f(x_in) => d x_in = d x_out + df^T d x_out, so the
 * residual backward is the identity on dx and each block adds its part):
 *   dxnf = dlogits E'; dE' += dlogits^T xnf; dx = RMSNorm'(...)
 *   per layer, last first: MLP block, then attention block, each ending
 *   in rmsnorm_backward which adds into dx
 *   dE += scatter(dx) by tokens (tied: the same tensor as dE')
 */
#include "train_fwd.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "kernels.h"

struct cllm_act {
    const cllm_model *m;
    int maxB, maxT;
    int B, T, R;           /* shape of the last forward (R rows); B = 0 before one */
    int E;                 /* packed sequences of the last forward: B, then its forks */
    /* per packed sequence e, (2 maxB (+ 1)): the B sequences, then the forks */
    int *row0;             /* first row of each, row0[E] = R */
    int *par, *pre;        /* a fork's sequence and the rows of it the fork sees (par -1: none) */
    int *lm_from, *lm_n;   /* the LM head's window of rows */
    size_t *lm_base;       /* logits row of the window's first row */
    int *tok;              /* (maxB*maxT) tokens of the packed rows */
    int *pos;              /* (maxB*maxT) position of each row in its sequence */
    /* saved activations; per-layer arrays are [L] of (R, ...) of the last
     * forward, allocated for BT = maxB*maxT rows */
    float *xs;             /* (L+1, BT, C) residual stream at each layer's input; xs[L] final */
    float *xm;             /* (L, BT, C) residual stream between attention and MLP */
    float *rstd1, *rstd2;  /* (L, BT) */
    float *q;              /* (L, BT, NH*HS) after RoPE */
    float *k, *v;          /* (L, BT, NKV*HS), k after RoPE */
    float *ao;             /* (L, BT, NH*HS) attention output */
    float *gate, *up;      /* (L, BT, F) pre-activation */
    float *xnf;            /* (BT, C) final normed stream */
    float *rstdf;          /* (BT) */
    /* scratch */
    float *xn;             /* (BT, C) */
    float *proj;           /* (BT, C) */
    float *hsw;            /* (BT, F) SwiGLU output */
    float *dx, *dxn;       /* (BT, C) */
    float *dq, *dao;       /* (BT, NH*HS) */
    float *dk, *dv;        /* (BT, NKV*HS) */
    float *dh, *dgate, *dup; /* (BT, F) */
    float *att;            /* attention scratch, att_cap floats */
    size_t att_cap;
};

static size_t dim_qd(const cllm_config *c) { return (size_t)c->n_head * c->head_dim; }
static size_t dim_kd(const cllm_config *c) { return (size_t)c->n_head_kv * c->head_dim; }

void cllm_act_free(cllm_act *a) {
    if (!a) return;
    free(a->row0); free(a->par); free(a->pre); free(a->lm_from); free(a->lm_n); free(a->lm_base); free(a->tok); free(a->pos);
    free(a->xs); free(a->xm); free(a->rstd1); free(a->rstd2); free(a->q); free(a->k); free(a->v);
    free(a->ao); free(a->gate); free(a->up); free(a->xnf); free(a->rstdf);
    free(a->xn); free(a->proj); free(a->hsw); free(a->dx); free(a->dxn); free(a->dq); free(a->dao);
    free(a->dk); free(a->dv); free(a->dh); free(a->dgate); free(a->dup); free(a->att);
    free(a);
}

/* n1 * n2 * n3 floats, or NULL (overflow or out of memory) */
static float *falloc(size_t n1, size_t n2, size_t n3) {
    size_t n;
    if (cllm_mul_size(n1, n2, &n) || cllm_mul_size(n, n3, &n) || cllm_mul_size(n, sizeof(float), &n))
        return NULL;
    return cllm_malloc(n ? n : 1);
}

int cllm_act_init(cllm_act **out, const cllm_model *m, int B, int T) {
    *out = NULL;
    const cllm_config *c = &m->cfg;
    if (B < 1 || T < 1)
        return cllm_error(CLLM_EINVAL, "training activations: bad size %d x %d", B, T);
    if (c->n_head < 1 || c->n_head_kv < 1 || c->n_head % c->n_head_kv || c->head_dim < 1 ||
        c->rope_dim < 2 || c->rope_dim > c->head_dim || c->rope_dim % 2)
        return cllm_error(CLLM_EINVAL, "training activations: unsupported head layout "
                          "(%d heads, %d kv heads, head size %d, rope dims %d)",
                          c->n_head, c->n_head_kv, c->head_dim, c->rope_dim);
    size_t BT;
    if (cllm_mul_size((size_t)B, (size_t)T, &BT) || BT > (size_t)1 << 30)
        return cllm_error(CLLM_ELIMIT, "training activations: %d x %d tokens is too many", B, T);
    cllm_act *a = cllm_calloc(1, sizeof *a);
    if (!a) return cllm_error(CLLM_ENOMEM, "training activations: out of memory");
    size_t L = c->n_layer, C = c->d_model, QD = dim_qd(c), KD = dim_kd(c), F = c->d_ff;
    a->m = m;
    a->maxB = B;
    a->maxT = T;
    a->row0 = cllm_calloc((size_t)2 * B + 1, sizeof(int));
    a->par = cllm_calloc((size_t)2 * B, sizeof(int));
    a->pre = cllm_calloc((size_t)2 * B, sizeof(int));
    a->lm_from = cllm_calloc((size_t)2 * B, sizeof(int));
    a->lm_n = cllm_calloc((size_t)2 * B, sizeof(int));
    a->lm_base = cllm_calloc((size_t)2 * B, sizeof(size_t));
    a->tok = cllm_calloc(BT, sizeof(int));
    a->pos = cllm_calloc(BT, sizeof(int));
    a->xs = falloc(L + 1, BT, C);
    a->xm = falloc(L, BT, C);
    a->rstd1 = falloc(L, BT, 1);
    a->rstd2 = falloc(L, BT, 1);
    a->q = falloc(L, BT, QD);
    a->k = falloc(L, BT, KD);
    a->v = falloc(L, BT, KD);
    a->ao = falloc(L, BT, QD);
    a->gate = falloc(L, BT, F);
    a->up = falloc(L, BT, F);
    a->xnf = falloc(BT, C, 1);
    a->rstdf = falloc(BT, 1, 1);
    a->xn = falloc(BT, C, 1);
    a->proj = falloc(BT, C, 1);
    a->hsw = falloc(BT, F, 1);
    a->dx = falloc(BT, C, 1);
    a->dxn = falloc(BT, C, 1);
    a->dq = falloc(BT, QD, 1);
    a->dao = falloc(BT, QD, 1);
    a->dk = falloc(BT, KD, 1);
    a->dv = falloc(BT, KD, 1);
    a->dh = falloc(BT, F, 1);
    a->dgate = falloc(BT, F, 1);
    a->dup = falloc(BT, F, 1);
    if (!a->row0 || !a->par || !a->pre || !a->lm_from || !a->lm_n || !a->lm_base || !a->tok || !a->pos || !a->xs || !a->xm || !a->rstd1 || !a->rstd2 || !a->q ||
        !a->k || !a->v || !a->ao || !a->gate || !a->up || !a->xnf || !a->rstdf || !a->xn ||
        !a->proj || !a->hsw || !a->dx || !a->dxn || !a->dq || !a->dao || !a->dk || !a->dv ||
        !a->dh || !a->dgate || !a->dup) {
        cllm_act_free(a);
        return cllm_error(CLLM_ENOMEM, "training activations: out of memory for %d x %d tokens "
                          "of a %d-layer, %d-wide model", B, T, c->n_layer, c->d_model);
    }
    *out = a;
    return 0;
}

/* attention scratch for the current thread count: n floats per thread */
static int att_scratch(cllm_act *a, size_t per_thread) {
    size_t need = (size_t)kernels_threads() * per_thread;
    if (need <= a->att_cap) return 0;
    float *p = cllm_realloc(a->att, need * sizeof(float));
    if (!p) return cllm_error(CLLM_ENOMEM, "training: out of memory for attention scratch");
    a->att = p;
    a->att_cap = need;
    return 0;
}

int cllm_check_rows(const int *tokens, const int *lens, int B, int T, const cllm_fork *fork, int V, const char *what,
                    size_t *rows) {
    *rows = 0;
    for (int b = 0; b < B; b++) {
        if (lens[b] < 1 || lens[b] > T)
            return cllm_error(CLLM_EINVAL, "%s: sequence %d has length %d (1..%d allowed)", what, b, lens[b], T);
        for (int t = 0; t < lens[b]; t++) {
            int id = tokens[(size_t)b * T + t];
            if (id < 0 || id >= V) return cllm_error(CLLM_EINVAL, "%s: token id %d out of range [0, %d)", what, id, V);
        }
        *rows += (size_t)lens[b];
        if (!fork || !fork[b].n) continue;
        const cllm_fork *f = &fork[b];
        if (f->n < 0 || f->at < 0 || f->at > lens[b] || f->n > T - f->at)
            return cllm_error(CLLM_EINVAL, "%s: fork of sequence %d (length %d) at %d, %d rows (positions must "
                              "stay below %d)", what, b, lens[b], f->at, f->n, T);
        for (int i = 0; i < f->n; i++)
            if (f->tokens[i] < 0 || f->tokens[i] >= V)
                return cllm_error(CLLM_EINVAL, "%s: token id %d out of range [0, %d)", what, f->tokens[i], V);
        *rows += (size_t)f->n;
    }
    return 0;
}

int cllm_pack_rows(const int *tokens, const int *lens, int B, int T, int *out, int *row0) {
    int R = 0;
    for (int b = 0; b < B; b++) {
        row0[b] = R;
        memcpy(out + R, tokens + (size_t)b * T, (size_t)lens[b] * sizeof(int));
        R += lens[b];
    }
    row0[B] = R;
    return R;
}

int cllm_train_forward(cllm_act *a, const cllm_model *m, const int *tokens, const int *lens,
                       int B, int T, float *logits) {
    return cllm_train_forward_lm(a, m, tokens, lens, B, T, NULL, NULL, logits);
}

int cllm_train_forward_lm(cllm_act *a, const cllm_model *m, const int *tokens, const int *lens,
                          int B, int T, const int *lm_from, const int *lm_n, float *logits) {
    return cllm_train_forward_fork(a, m, tokens, lens, B, T, lm_from, lm_n, NULL, logits);
}

int cllm_train_forward_fork(cllm_act *a, const cllm_model *m, const int *tokens, const int *lens, int B, int T,
                            const int *lm_from, const int *lm_n, const cllm_fork *fork, float *logits) {
    const cllm_config *c = &m->cfg;
    if (a->m != m && memcmp(&a->m->cfg, c, sizeof *c))
        return cllm_error(CLLM_EINVAL, "training forward: activations were made for another model");
    if (B < 1 || T < 1 || B > a->maxB || T > a->maxT)
        return cllm_error(CLLM_EINVAL, "training forward: batch %d x %d exceeds the activations' %d x %d",
                          B, T, a->maxB, a->maxT);
    int L = c->n_layer, C = c->d_model, NH = c->n_head, NKV = c->n_head_kv, HS = c->head_dim;
    int F = c->d_ff, V = c->vocab, QD = NH * HS, KD = NKV * HS;
    size_t rows;   /* packed rows, forks included */
    int rc = cllm_check_rows(tokens, lens, B, T, fork, V, "training forward", &rows);
    if (rc) return rc;
    for (int b = 0; lm_from && b < B; b++)
        if (lm_from[b] < 0 || lm_n[b] < 0 || lm_n[b] > lens[b] - lm_from[b])
            return cllm_error(CLLM_EINVAL, "training forward: LM rows %d..%d of sequence %d (length %d)", lm_from[b],
                              lm_from[b] + lm_n[b], b, lens[b]);
    if (rows > (size_t)a->maxB * a->maxT)
        return cllm_error(CLLM_EINVAL, "training forward: %zu rows exceed the activations' %d x %d", rows,
                          a->maxB, a->maxT);
    if ((rc = att_scratch(a, (size_t)2 * T))) return rc;   /* forward needs T, backward 2T per thread */
    a->B = 0;   /* until this forward has finished */
    size_t base = 0;
    int R = cllm_pack_rows(tokens, lens, B, T, a->tok, a->row0);
    for (int b = 0; b < B; b++) {
        a->par[b] = -1;
        a->pre[b] = 0;
        a->lm_from[b] = lm_from ? lm_from[b] : 0;   /* without windows: every real row, in (B, T, V) */
        a->lm_n[b] = lm_from ? lm_n[b] : lens[b];
        a->lm_base[b] = lm_from ? base : (size_t)b * T;
        base += (size_t)a->lm_n[b];
        for (int t = 0; t < lens[b]; t++) a->pos[a->row0[b] + t] = t;
    }
    if (!lm_from) base = (size_t)B * T;
    int E = B;   /* the forks, packed after the sequences; the LM head on every row of each */
    for (int b = 0; fork && b < B; b++) {
        const cllm_fork *f = &fork[b];
        if (!f->n) continue;
        a->row0[E] = R;
        a->par[E] = b;
        a->pre[E] = f->at;
        a->lm_from[E] = 0;
        a->lm_n[E] = f->n;
        a->lm_base[E] = base;
        base += (size_t)f->n;
        for (int i = 0; i < f->n; i++) {
            a->tok[R + i] = f->tokens[i];
            a->pos[R + i] = f->at + i;
        }
        R += f->n;
        a->row0[++E] = R;
    }
    size_t BT = (size_t)R;   /* the per-layer stride of this forward's saved arrays */

    embedding_forward(a->xs, a->tok, m->tok_emb, R, C);
    for (int l = 0; l < L; l++) {
        const cllm_layer_weights *w = &m->layers[l];
        float *x = a->xs + (size_t)l * BT * C, *xm = a->xm + (size_t)l * BT * C;
        float *xo = a->xs + (size_t)(l + 1) * BT * C;
        float *q = a->q + (size_t)l * BT * QD, *k = a->k + (size_t)l * BT * KD;
        float *v = a->v + (size_t)l * BT * KD, *ao = a->ao + (size_t)l * BT * QD;
        float *gate = a->gate + (size_t)l * BT * F, *up = a->up + (size_t)l * BT * F;

        /* attention block */
        rmsnorm_forward(a->xn, a->rstd1 + (size_t)l * BT, x, w->attn_norm, R, C, c->rms_eps);
        matmul_forward(q, a->xn, w->wq, w->bq, R, C, QD);
        matmul_forward(k, a->xn, w->wk, w->bk, R, C, KD);
        matmul_forward(v, a->xn, w->wv, w->bv, R, C, KD);
        rope_forward(q, a->pos, R, NH, HS, c->rope_dim, c->rope_theta);
        rope_forward(k, a->pos, R, NKV, HS, c->rope_dim, c->rope_theta);
        attention_forward_fork(ao, q, k, v, a->row0, a->par, a->pre, a->att, E, NH, NKV, HS);
        matmul_forward(a->proj, ao, w->wo, NULL, R, QD, C);
        residual_forward(xm, x, a->proj, BT * C);

        /* MLP block */
        rmsnorm_forward(a->xn, a->rstd2 + (size_t)l * BT, xm, w->ffn_norm, R, C, c->rms_eps);
        matmul_forward(gate, a->xn, w->w_gate, NULL, R, C, F);
        matmul_forward(up, a->xn, w->w_up, NULL, R, C, F);
        swiglu_forward(a->hsw, gate, up, R, F);
        matmul_forward(a->proj, a->hsw, w->w_down, NULL, R, F, C);
        residual_forward(xo, xm, a->proj, BT * C);
    }
    rmsnorm_forward(a->xnf, a->rstdf, a->xs + (size_t)L * BT * C, m->out_norm, R, C, c->rms_eps);
    for (int e = 0; e < E; e++) {
        size_t r0 = (size_t)a->row0[e] + (size_t)a->lm_from[e];
        if (a->lm_n[e]) matmul_forward(logits + a->lm_base[e] * V, a->xnf + r0 * C, m->lm_head, NULL, a->lm_n[e], C, V);
    }
    a->B = B;
    a->E = E;
    a->T = T;
    a->R = R;
    return 0;
}

/* the gradient of parameter tensor w inside grads (same layout as params) */
static float *gslot(const cllm_model *m, float *grads, const float *w) {
    return w ? grads + (w - m->params) : NULL;
}

int cllm_train_backward(cllm_act *a, const cllm_model *m, const float *dlogits, float *grads) {
    const cllm_config *c = &m->cfg;
    if (a->B < 1)
        return cllm_error(CLLM_EINVAL, "training backward: no forward pass to go back through");
    if (a->m != m && memcmp(&a->m->cfg, c, sizeof *c))
        return cllm_error(CLLM_EINVAL, "training backward: activations were made for another model");
    int E = a->E, T = a->T, R = a->R;
    int L = c->n_layer, C = c->d_model, NH = c->n_head, NKV = c->n_head_kv, HS = c->head_dim;
    int F = c->d_ff, V = c->vocab, QD = NH * HS, KD = NKV * HS;
    int rc = att_scratch(a, (size_t)2 * T);
    if (rc) return rc;
    size_t BT = (size_t)R;   /* the forward's per-layer stride */
    float *dx = a->dx, *dxn = a->dxn;

    /* LM head and final norm; rows without logits get dxn = 0 */
    memset(dx, 0, BT * C * sizeof(float));
    memset(dxn, 0, BT * C * sizeof(float));
    float *dlm = gslot(m, grads, m->lm_head);
    for (int e = 0; e < E; e++) {
        size_t r0 = (size_t)a->row0[e] + (size_t)a->lm_from[e];
        if (a->lm_n[e])
            matmul_backward(dxn + r0 * C, dlm, NULL, dlogits + a->lm_base[e] * V, a->xnf + r0 * C, m->lm_head,
                            a->lm_n[e], C, V);
    }
    rmsnorm_backward(dx, gslot(m, grads, m->out_norm), dxn, a->xs + (size_t)L * BT * C, m->out_norm,
                     a->rstdf, R, C);

    for (int l = L - 1; l >= 0; l--) {
        const cllm_layer_weights *w = &m->layers[l];
        const float *x = a->xs + (size_t)l * BT * C, *xm = a->xm + (size_t)l * BT * C;
        const float *q = a->q + (size_t)l * BT * QD, *k = a->k + (size_t)l * BT * KD;
        const float *v = a->v + (size_t)l * BT * KD, *ao = a->ao + (size_t)l * BT * QD;
        const float *gate = a->gate + (size_t)l * BT * F, *up = a->up + (size_t)l * BT * F;
        const float *rstd1 = a->rstd1 + (size_t)l * BT, *rstd2 = a->rstd2 + (size_t)l * BT;

        /* MLP block: xo = xm + down(swiglu(gate(xn), up(xn))), xn = RMSNorm(xm); dxo = dx */
        rmsnorm_forward(a->xn, NULL, xm, w->ffn_norm, R, C, c->rms_eps);
        swiglu_forward(a->hsw, gate, up, R, F);
        memset(a->dh, 0, BT * F * sizeof(float));
        matmul_backward(a->dh, gslot(m, grads, w->w_down), NULL, dx, a->hsw, w->w_down, R, F, C);
        swiglu_backward(a->dgate, a->dup, a->dh, gate, up, R, F);
        memset(dxn, 0, BT * C * sizeof(float));
        matmul_backward(dxn, gslot(m, grads, w->w_gate), NULL, a->dgate, a->xn, w->w_gate, R, C, F);
        matmul_backward(dxn, gslot(m, grads, w->w_up), NULL, a->dup, a->xn, w->w_up, R, C, F);
        rmsnorm_backward(dx, gslot(m, grads, w->ffn_norm), dxn, xm, w->ffn_norm, rstd2, R, C);

        /* attention block: xm = x + o(attn(RoPE(q(xn)), RoPE(k(xn)), v(xn))), xn = RMSNorm(x) */
        rmsnorm_forward(a->xn, NULL, x, w->attn_norm, R, C, c->rms_eps);
        memset(a->dao, 0, BT * QD * sizeof(float));
        matmul_backward(a->dao, gslot(m, grads, w->wo), NULL, dx, ao, w->wo, R, QD, C);
        attention_backward(a->dq, a->dk, a->dv, a->dao, q, k, v, a->row0, a->par, a->pre, a->att, E, T, NH,
                           NKV, HS);
        rope_backward(a->dq, a->pos, R, NH, HS, c->rope_dim, c->rope_theta);
        rope_backward(a->dk, a->pos, R, NKV, HS, c->rope_dim, c->rope_theta);
        memset(dxn, 0, BT * C * sizeof(float));
        matmul_backward(dxn, gslot(m, grads, w->wq), gslot(m, grads, w->bq), a->dq, a->xn, w->wq,
                        R, C, QD);
        matmul_backward(dxn, gslot(m, grads, w->wk), gslot(m, grads, w->bk), a->dk, a->xn, w->wk,
                        R, C, KD);
        matmul_backward(dxn, gslot(m, grads, w->wv), gslot(m, grads, w->bv), a->dv, a->xn, w->wv,
                        R, C, KD);
        rmsnorm_backward(dx, gslot(m, grads, w->attn_norm), dxn, x, w->attn_norm, rstd1, R, C);
    }
    embedding_backward(gslot(m, grads, m->tok_emb), dx, a->tok, R, C);
    return 0;
}
