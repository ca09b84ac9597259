/* model.c: the in-memory model (allocation, tensor table, lookup, free) and the
 * dispatch of cllm_model_load / cllm_model_save to the GGUF and HF loaders.
 *
 * Invariants (see model.h): every parameter lives in the one array m->params;
 * m->tensors lists them in a fixed order (embed, then per layer attn_norm, q,
 * [q bias], k, [k bias], v, [v bias], o, ffn_norm, gate, up, down, then the
 * final norm, then lm_head when not tied), each with its HF name, shape and
 * float offset; the typed pointers (tok_emb, layers[l].wq, ...) point into
 * params. A tied model has no lm_head entry and lm_head == tok_emb.
 */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* Add one tensor to the table being built; *off advances by its size. */
static int add_tensor(cllm_model *m, int *i, size_t *off, const char *name, int n_dims,
                      int64_t rows, int64_t cols) {
    cllm_tensor_info *t = &m->tensors[*i];
    if (snprintf(t->name, sizeof t->name, "%s", name) >= (int)sizeof t->name)
        return cllm_error(CLLM_EINVAL, "tensor name %s too long", name);
    t->n_dims = n_dims;
    t->shape[0] = rows;
    t->shape[1] = n_dims == 2 ? cols : 1;
    size_t numel;
    if (rows <= 0 || cols <= 0 || cllm_mul_size((size_t)rows, (size_t)cols, &numel))
        return cllm_error(CLLM_EINVAL, "tensor %s: bad shape %lld x %lld", name,
                          (long long)rows, (long long)cols);
    t->numel = numel;
    t->offset = *off;
    if (cllm_add_size(*off, numel, off))
        return cllm_error(CLLM_ELIMIT, "model too large (parameter count overflows)");
    (*i)++;
    return 0;
}

static int check_config(const cllm_config *c) {
    if (c->n_layer <= 0 || c->n_layer > 10000) return cllm_error(CLLM_EINVAL, "bad layer count %d", c->n_layer);
    if (c->d_model <= 0) return cllm_error(CLLM_EINVAL, "bad model width %d", c->d_model);
    if (c->n_head <= 0 || c->n_head_kv <= 0) return cllm_error(CLLM_EINVAL, "bad head counts %d/%d", c->n_head, c->n_head_kv);
    if (c->n_head % c->n_head_kv) return cllm_error(CLLM_EINVAL, "head count %d is not a multiple of kv head count %d", c->n_head, c->n_head_kv);
    if (c->head_dim <= 0 || c->head_dim % 2) return cllm_error(CLLM_EINVAL, "bad head size %d (must be even)", c->head_dim);
    if (c->rope_dim <= 0 || c->rope_dim > c->head_dim || c->rope_dim % 2)
        return cllm_error(CLLM_EINVAL, "bad rope dimension %d for head size %d", c->rope_dim, c->head_dim);
    if (c->d_ff <= 0) return cllm_error(CLLM_EINVAL, "bad feed-forward width %d", c->d_ff);
    if (c->vocab <= 0) return cllm_error(CLLM_EINVAL, "bad vocabulary size %d", c->vocab);
    return 0;
}

int cllm_model_alloc(cllm_model *m, const cllm_config *cfg) {
    memset(m, 0, sizeof *m);
    cllm_config c0 = *cfg;
    if (c0.rope_dim == 0) c0.rope_dim = c0.head_dim;  /* 0 means "the whole head" */
    int rc = check_config(&c0);
    if (rc) return rc;
    m->cfg = c0;
    const cllm_config *c = &m->cfg;
    int64_t C = c->d_model, F = c->d_ff, V = c->vocab;
    int64_t QD = (int64_t)c->n_head * c->head_dim, KD = (int64_t)c->n_head_kv * c->head_dim;
    int per_layer = 9 + (c->qkv_bias ? 3 : 0);
    int n = 2 + c->n_layer * per_layer + (c->tied ? 0 : 1);
    m->tensors = cllm_calloc((size_t)n, sizeof *m->tensors);
    m->layers = cllm_calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->tensors || !m->layers) { cllm_model_free(m); return CLLM_ENOMEM; }

    int i = 0;
    size_t off = 0;
    char nm[96];
    /* Shapes (HF order, rows x cols): embed (V, C); per layer norms (C), q (NH*HS, C),
     * k/v (NKV*HS, C), o (C, NH*HS), gate/up (F, C), down (C, F); final norm (C). */
    rc = add_tensor(m, &i, &off, "model.embed_tokens.weight", 2, V, C);
    for (int l = 0; !rc && l < c->n_layer; l++) {
#define T(suffix, nd, r, co) if (!rc) { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
                                       rc = add_tensor(m, &i, &off, nm, nd, r, co); }
        T("input_layernorm.weight", 1, C, 1);
        T("self_attn.q_proj.weight", 2, QD, C);
        if (c->qkv_bias) T("self_attn.q_proj.bias", 1, QD, 1);
        T("self_attn.k_proj.weight", 2, KD, C);
        if (c->qkv_bias) T("self_attn.k_proj.bias", 1, KD, 1);
        T("self_attn.v_proj.weight", 2, KD, C);
        if (c->qkv_bias) T("self_attn.v_proj.bias", 1, KD, 1);
        T("self_attn.o_proj.weight", 2, C, QD);
        T("post_attention_layernorm.weight", 1, C, 1);
        T("mlp.gate_proj.weight", 2, F, C);
        T("mlp.up_proj.weight", 2, F, C);
        T("mlp.down_proj.weight", 2, C, F);
#undef T
    }
    if (!rc) rc = add_tensor(m, &i, &off, "model.norm.weight", 1, C, 1);
    if (!rc && !c->tied) rc = add_tensor(m, &i, &off, "lm_head.weight", 2, V, C);
    if (rc) { cllm_model_free(m); return rc; }
    m->n_tensors = i;
    m->n_params = off;

    size_t bytes;
    if (cllm_mul_size(off, sizeof(float), &bytes)) {
        cllm_model_free(m);
        return cllm_error(CLLM_ELIMIT, "model too large (%zu parameters)", off);
    }
    m->params = cllm_calloc(off, sizeof(float));
    if (!m->params) { cllm_model_free(m); return CLLM_ENOMEM; }

    /* Point the typed views into params, in table order. */
    float *p = m->params;
    int k = 0;
#define NEXT() (p + m->tensors[k++].offset)
    m->tok_emb = NEXT();
    for (int l = 0; l < c->n_layer; l++) {
        cllm_layer_weights *L = &m->layers[l];
        L->attn_norm = NEXT();
        L->wq = NEXT();
        if (c->qkv_bias) L->bq = NEXT();
        L->wk = NEXT();
        if (c->qkv_bias) L->bk = NEXT();
        L->wv = NEXT();
        if (c->qkv_bias) L->bv = NEXT();
        L->wo = NEXT();
        L->ffn_norm = NEXT();
        L->w_gate = NEXT();
        L->w_up = NEXT();
        L->w_down = NEXT();
    }
    m->out_norm = NEXT();
    m->lm_head = c->tied ? m->tok_emb : NEXT();
#undef NEXT
    return 0;
}

const cllm_tensor_info *cllm_model_tensor(const cllm_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

void cllm_model_free(cllm_model *m) {
    if (!m) return;
    free(m->params);
    free(m->tensors);
    free(m->layers);
    memset(m, 0, sizeof *m);
}

int cllm_model_load(cllm_model *m, const char *path) {
    memset(m, 0, sizeof *m);
    return cllm_error(CLLM_EUNSUP, "%s: model loading not implemented yet", path);
}

int cllm_model_save(const cllm_model *m, const char *path, const char *dtype) {
    (void)m; (void)dtype;
    return cllm_error(CLLM_EUNSUP, "%s: model saving not implemented yet", path);
}
