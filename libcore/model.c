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

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "err.h"
#include "gguf.h"
#include "safetensors.h"
#include "startup.h"
#include "tokenizer.h"
#include "tokenizer_int.h"

static void cllm_model_src_free(struct cllm_model_src *s);

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

/* cllm_model_alloc, refusing before the big allocation when the
 * hyperparameters need more than max_params parameters: a loader passes the
 * element count its file actually holds, so a few hostile header bytes cannot
 * ask for terabytes. zero: the parameters zeroed (a loader, which writes
 * every tensor, leaves them to its threads' first writes). */
static int model_alloc_max(cllm_model *m, const cllm_config *cfg, uint64_t max_params, const char *what, int zero);

int cllm_model_alloc(cllm_model *m, const cllm_config *cfg) {
    return model_alloc_max(m, cfg, UINT64_MAX, NULL, 1);
}

static int model_alloc_max(cllm_model *m, const cllm_config *cfg, uint64_t max_params, const char *what, int zero) {
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
    if ((uint64_t)off > max_params) {
        cllm_model_free(m);
        return cllm_error(CLLM_EFORMAT, "its hyperparameters need %zu parameters but %s %llu values",
                          off, what, (unsigned long long)max_params);
    }

    size_t bytes;
    if (cllm_mul_size(off, sizeof(float), &bytes)) {
        cllm_model_free(m);
        return cllm_error(CLLM_ELIMIT, "model too large (%zu parameters)", off);
    }
    m->params = zero ? cllm_calloc_huge(off, sizeof(float)) : cllm_malloc_huge(off, sizeof(float));
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

void cllm_model_round_bf16(cllm_model *m) {
    const cllm_config *c = &m->cfg;
    size_t C = c->d_model, QD = (size_t)c->n_head * c->head_dim, KD = (size_t)c->n_head_kv * c->head_dim;
    size_t F = c->d_ff, V = c->vocab;
    cllm_f32_round_bf16(m->tok_emb, V * C);
    if (m->lm_head != m->tok_emb) cllm_f32_round_bf16(m->lm_head, V * C);
    for (int l = 0; l < c->n_layer; l++) {
        cllm_layer_weights *w = &m->layers[l];
        cllm_f32_round_bf16(w->wq, QD * C);
        cllm_f32_round_bf16(w->wk, KD * C);
        cllm_f32_round_bf16(w->wv, KD * C);
        cllm_f32_round_bf16(w->wo, C * QD);
        cllm_f32_round_bf16(w->w_gate, F * C);
        cllm_f32_round_bf16(w->w_up, F * C);
        cllm_f32_round_bf16(w->w_down, C * F);
    }
}

int cllm_model_eos_id(const cllm_model *m) {
    if (m->cfg.eos_id >= 0) return m->cfg.eos_id;
    return m->tok ? cllm_tokenizer_eos(m->tok) : -1;
}

int cllm_model_pad_id(const cllm_model *m) {
    int pad = m->cfg.pad_id >= 0 ? m->cfg.pad_id : m->tok ? cllm_tokenizer_pad(m->tok) : -1;
    return pad >= 0 ? pad : 0;
}

void cllm_model_free(cllm_model *m) {
    if (!m) return;
    free(m->params);
    free(m->tensors);
    free(m->layers);
    if (m->tok) cllm_tokenizer_free(m->tok);
    cllm_model_src_free(m->src);
    memset(m, 0, sizeof *m);
}


/* ======================================================================
 * Loading and saving.
 *
 * GGUF <-> HF names: token_embd <-> model.embed_tokens, output_norm <-> model.norm,
 * output <-> lm_head, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output,
 * ffn_norm, ffn_gate, ffn_up, ffn_down} <-> model.layers.N.{input_layernorm,
 * self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}.
 * ggml shapes are reversed: an HF (rows, cols) matrix is ne = [cols, rows] with
 * the same bytes. For arch "llama" the converter permuted the Q and K rows
 * (and biases) of each head for adjacent-pair RoPE:
 *     W_gguf[h*HS + 2i + t] = W_hf[h*HS + t*HS/2 + i]   (i < HS/2, t in {0,1})
 * the loader applies the inverse and the GGUF writer applies it again, so the
 * model in memory is always in HF order. qwen2 files are not permuted.
 * ====================================================================== */

struct cllm_model_src {
    cllm_gguf *g;      /* metadata of a GGUF source (file closed), or NULL */
    char *hf_dir;      /* a HF source directory, or NULL */
    json_t *meta;      /* a HF source's safetensors __metadata__ (string values), or NULL */
};

static void cllm_model_src_free(struct cllm_model_src *s) {
    if (!s) return;
    cllm_gguf_close(s->g);
    free(s->hf_dir);
    json_decref(s->meta);
    free(s);
}

/* Does this architecture store Q/K permuted for adjacent-pair RoPE? */
static int arch_permuted(const char *arch) { return !strcmp(arch, "llama") || !strcmp(arch, "mistral"); }
static int arch_supported(const char *arch) { return arch_permuted(arch) || !strcmp(arch, "qwen2"); }

/* Map an HF tensor name to its GGUF name; *perm = 1 for Q, 2 for K rows (weights
 * and biases), 0 otherwise. Returns -1 for a name outside the layout. */
static int hf_to_gguf_name(const char *hf, char *out, size_t cap, int *perm) {
    static const char *const map[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"}, {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.k_proj.bias", "attn_k.bias"}, {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.v_proj.bias", "attn_v.bias"}, {"self_attn.o_proj.weight", "attn_output.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"}, {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"}, {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    *perm = 0;
    if (!strcmp(hf, "model.embed_tokens.weight")) return snprintf(out, cap, "token_embd.weight") < (int)cap ? 0 : -1;
    if (!strcmp(hf, "model.norm.weight")) return snprintf(out, cap, "output_norm.weight") < (int)cap ? 0 : -1;
    if (!strcmp(hf, "lm_head.weight")) return snprintf(out, cap, "output.weight") < (int)cap ? 0 : -1;
    int l, nch = 0;
    if (sscanf(hf, "model.layers.%d.%n", &l, &nch) != 1 || nch == 0) return -1;
    const char *rest = hf + nch;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(rest, map[i][0])) {
            if (strstr(rest, "q_proj")) *perm = 1;
            if (strstr(rest, "k_proj")) *perm = 2;
            return snprintf(out, cap, "blk.%d.%s", l, map[i][1]) < (int)cap ? 0 : -1;
        }
    return -1;
}

/* llama.cpp stores the Q and K rows of a llama model with each head's two
 * RoPE halves interleaved: GGUF row g = h*HS + 2i + t of a head holds HF row
 * h*HS + t*HS/2 + i (HS even: check_config). */
static size_t hf_row_of(size_t g, int hs) {
    size_t h = g / (size_t)hs, w = g % (size_t)hs;
    return h * (size_t)hs + (w % 2) * (size_t)(hs / 2) + w / 2;
}

/* Shape comment: rows = NHX*HS (NHX heads of HS rows each), cols per row.
 * to_hf: dst in HF order from src in GGUF order; else the inverse. */
static void permute_rows(float *dst, const float *src, int nhx, int hs, size_t cols, int to_hf) {
    for (size_t g = 0; g < (size_t)nhx * (size_t)hs; g++) {
        size_t f = hf_row_of(g, hs);
        if (to_hf) memcpy(dst + f * cols, src + g * cols, cols * sizeof(float));
        else memcpy(dst + g * cols, src + f * cols, cols * sizeof(float));
    }
}

/* ---- reading a model file's tensors: parts of about 1 MiB on the start-up threads ---- */

enum { LOAD_PART_ELEMS = 1 << 18 };

typedef struct load_part {
    const cllm_gguf_tensor *t;     /* a GGUF tensor, or */
    const cllm_st_tensor *st_t;    /* a safetensors one */
    float *dst;                    /* the whole tensor, HF order */
    size_t first, n;               /* elements of this part, in the file's order */
    size_t cols;                   /* elements per row (1 for a vector) */
    int hs;                        /* > 0: Q/K rows to put in HF order (hf_row_of) */
} load_part;

typedef struct load_job {
    const cllm_gguf *g;            /* the file the parts' tensors are in */
    const cllm_st *st;
    load_part *parts;
    int n_parts;
    size_t raw_bytes, part_elems; /* the largest part's bytes in the file and elements */
    void **raw;                    /* [threads] the file's bytes of a part */
    float **rows;                  /* [threads] a permuted part's rows before they go to their places */
    atomic_int first_fail;         /* the lowest failing part (n_parts: none) */
    int *fail_part, *fail_rc;      /* [threads] each thread's lowest failing part and its code */
    char (*fail_msg)[1024];        /* ... and its message (err.c keeps 1024 bytes) */
} load_job;

/* Elements per part of a tensor: a matrix in parts of whole rows (a row is
 * whole blocks: gguf.c's open checks), a vector in one part. */
static size_t load_step(const cllm_tensor_info *ti) {
    size_t cols = (size_t)ti->shape[1];
    if (ti->n_dims != 2) return ti->numel;
    return cols < LOAD_PART_ELEMS ? LOAD_PART_ELEMS / cols * cols : cols;
}

/* Room for every part of m's tensors (what: the file, for the message). */
static int parts_alloc(const cllm_model *m, const char *what, load_part **out) {
    size_t n = 0;
    for (int j = 0; j < m->n_tensors; j++) n += (m->tensors[j].numel - 1) / load_step(&m->tensors[j]) + 1;
    if (n > INT_MAX) return cllm_error(CLLM_ELIMIT, "%s: too many tensor parts to read", what);
    return (*out = cllm_malloc(n * sizeof **out)) ? 0 : CLLM_ENOMEM;
}

/* The parts of tensor ti, read from the GGUF tensor gt or the safetensors
 * one st_t; hs > 0: Q/K rows to put in HF order. */
static void parts_add(load_part *parts, int *n, const cllm_model *m, const cllm_tensor_info *ti,
                      const cllm_gguf_tensor *gt, const cllm_st_tensor *st_t, int hs) {
    size_t cols = ti->n_dims == 2 ? (size_t)ti->shape[1] : 1, step = load_step(ti);
    for (size_t e = 0; e < ti->numel; e += step)
        parts[(*n)++] = (load_part){gt, st_t, m->params + ti->offset, e, ti->numel - e < step ? ti->numel - e : step,
                                    cols, hs};
}

static size_t part_bytes(const load_part *p) {
    return p->t ? cllm_gguf_part_bytes(p->t, p->n) : cllm_st_part_bytes(p->st_t, p->n);
}

static int read_part(const load_job *j, const load_part *p, float *dst, void *raw) {
    return p->t ? cllm_gguf_read_part_f32(j->g, p->t, p->first, p->n, dst, raw)
                : cllm_st_read_part_f32(j->st, p->st_t, p->first, p->n, dst, raw);
}

static int load_one_part(load_job *j, const load_part *p, int worker) {
    if (!j->raw[worker] && !(j->raw[worker] = cllm_malloc(j->raw_bytes))) return CLLM_ENOMEM;
    if (!p->hs) return read_part(j, p, p->dst + p->first, j->raw[worker]);
    if (!j->rows[worker] && !(j->rows[worker] = cllm_malloc(j->part_elems * sizeof(float)))) return CLLM_ENOMEM;
    int rc = read_part(j, p, j->rows[worker], j->raw[worker]);
    for (size_t r = 0; !rc && r < p->n / p->cols; r++)
        memcpy(p->dst + hf_row_of(p->first / p->cols + r, p->hs) * p->cols, j->rows[worker] + r * p->cols,
               p->cols * sizeof(float));
    return rc;
}

/* One part; after a failure, only the parts before it still run, so the
 * error reported is the first part's to fail whatever the threads do. */
static void load_task(void *ctx, int task, int worker) {
    load_job *j = ctx;
    if (task > atomic_load(&j->first_fail)) return;
    int rc = load_one_part(j, &j->parts[task], worker);
    if (!rc) return;
    int cur = atomic_load(&j->first_fail);
    while (task < cur && !atomic_compare_exchange_weak(&j->first_fail, &cur, task)) {}
    if (j->fail_part[worker] < 0 || task < j->fail_part[worker]) {
        j->fail_part[worker] = task;
        j->fail_rc[worker] = rc;
        snprintf(j->fail_msg[worker], sizeof j->fail_msg[worker], "%s", cllm_errmsg());
    }
}

/* Read every part (the tensors of g or of st) on the start-up threads. */
static int load_parts(const cllm_gguf *g, const cllm_st *st, load_part *parts, int n_parts) {
    int threads = cllm_startup_threads(), rc = 0;
    load_job j = {.g = g, .st = st, .parts = parts, .n_parts = n_parts};
    for (int i = 0; i < n_parts; i++) {
        size_t b = part_bytes(&parts[i]);
        if (b > j.raw_bytes) j.raw_bytes = b;
        if (parts[i].hs && parts[i].n > j.part_elems) j.part_elems = parts[i].n;
    }
    atomic_init(&j.first_fail, n_parts);
    j.raw = cllm_calloc((size_t)threads, sizeof *j.raw);
    j.rows = cllm_calloc((size_t)threads, sizeof *j.rows);
    j.fail_part = cllm_malloc((size_t)threads * sizeof *j.fail_part);
    j.fail_rc = cllm_calloc((size_t)threads, sizeof *j.fail_rc);
    j.fail_msg = cllm_calloc((size_t)threads, sizeof *j.fail_msg);
    if (!j.raw || !j.rows || !j.fail_part || !j.fail_rc || !j.fail_msg) rc = CLLM_ENOMEM;
    if (!rc) {
        for (int w = 0; w < threads; w++) j.fail_part[w] = -1;
        cllm_startup_parallel(n_parts, load_task, &j);
        int first = -1;
        for (int w = 0; w < threads; w++)
            if (j.fail_part[w] >= 0 && (first < 0 || j.fail_part[w] < j.fail_part[first])) first = w;
        if (first >= 0) rc = cllm_error(j.fail_rc[first], "%s", j.fail_msg[first]);
    }
    for (int w = 0; j.raw && j.rows && w < threads; w++) { free(j.raw[w]); free(j.rows[w]); }
    free(j.raw);
    free(j.rows);
    free(j.fail_part);
    free(j.fail_rc);
    free(j.fail_msg);
    return rc;
}

static const char *base_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *b = path + n;
    while (b > path && b[-1] != '/') b--;
    return b;
}

/* Integer hyperparameter {arch}.key, required or with a default (def >= 0). */
static int gguf_hparam(const cllm_gguf *g, const char *arch, const char *key, int64_t def, int *out) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int64_t v;
    if (cllm_gguf_find(g, full) < 0) {
        if (def < 0) return cllm_error(CLLM_EFORMAT, "%s: missing metadata key %s", cllm_gguf_path(g), full);
        *out = (int)def;
        return 0;
    }
    int rc = cllm_gguf_get_int(g, full, &v);
    if (rc) return rc;
    if (v <= 0 || v > (1 << 24))
        return cllm_error(CLLM_EFORMAT, "%s: %s = %lld is out of range", cllm_gguf_path(g), full, (long long)v);
    *out = (int)v;
    return 0;
}

static int gguf_fparam(const cllm_gguf *g, const char *arch, const char *key, double def, float *out) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    double v = def;
    if (cllm_gguf_find(g, full) >= 0) {
        int rc = cllm_gguf_get_float(g, full, &v);
        if (rc) return rc;
    }
    if (!(v > 0) || v > 1e12)
        return cllm_error(CLLM_EFORMAT, "%s: %s = %g is out of range", cllm_gguf_path(g), full, v);
    *out = (float)v;
    return 0;
}

static int gguf_token_id(const cllm_gguf *g, const char *key, int vocab, int *out) {
    *out = -1;
    if (cllm_gguf_find(g, key) < 0) return 0;
    int64_t v;
    int rc = cllm_gguf_get_int(g, key, &v);
    if (rc) return rc;
    if (v < 0 || v >= vocab)
        return cllm_error(CLLM_EFORMAT, "%s: %s = %lld is not a token id (vocab %d)", cllm_gguf_path(g), key,
                          (long long)v, vocab);
    *out = (int)v;
    return 0;
}

static int load_gguf(cllm_model *m, const char *path) {
    cllm_gguf *g;
    int rc = cllm_gguf_open(&g, path);
    if (rc) return rc;
    cllm_config c;
    memset(&c, 0, sizeof c);
    cllm_gguf_str s;
    load_part *parts = NULL;
    if ((rc = cllm_gguf_get_str(g, "general.architecture", &s))) goto fail;
    if (!arch_supported(s.s)) {
        rc = cllm_error(CLLM_EUNSUP, "%s: architecture \"%.40s\" is not supported (llama, mistral, qwen2)", path, s.s);
        goto fail;
    }
    snprintf(c.arch, sizeof c.arch, "%s", s.s);
    if (cllm_gguf_find(g, "general.name") >= 0 && !cllm_gguf_get_str(g, "general.name", &s))
        snprintf(c.name, sizeof c.name, "%s", s.s);
    else
        snprintf(c.name, sizeof c.name, "%s", base_name(path));
    const char *A = c.arch;
    if ((rc = gguf_hparam(g, A, "block_count", -1, &c.n_layer)) ||
        (rc = gguf_hparam(g, A, "embedding_length", -1, &c.d_model)) ||
        (rc = gguf_hparam(g, A, "feed_forward_length", -1, &c.d_ff)) ||
        (rc = gguf_hparam(g, A, "attention.head_count", -1, &c.n_head)) ||
        (rc = gguf_hparam(g, A, "attention.head_count_kv", c.n_head, &c.n_head_kv)) ||
        (rc = gguf_hparam(g, A, "context_length", 2048, &c.max_ctx)) ||
        (rc = gguf_hparam(g, A, "attention.key_length", c.d_model / c.n_head, &c.head_dim)) ||
        (rc = gguf_hparam(g, A, "rope.dimension_count", c.head_dim, &c.rope_dim)) ||
        (rc = gguf_fparam(g, A, "rope.freq_base", 10000.0, &c.rope_theta)) ||
        (rc = gguf_fparam(g, A, "attention.layer_norm_rms_epsilon", 1e-5, &c.rms_eps)))
        goto fail;
    {
        char k[160];
        snprintf(k, sizeof k, "%s.rope.scaling.type", A);
        cllm_gguf_str st;
        if (cllm_gguf_find(g, k) >= 0 && !cllm_gguf_get_str(g, k, &st) && strcmp(st.s, "none")) {
            rc = cllm_error(CLLM_EUNSUP, "%s: RoPE scaling \"%.40s\" is not supported", path, st.s);
            goto fail;
        }
    }
    const cllm_gguf_tensor *emb = cllm_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) {
        rc = cllm_error(CLLM_EFORMAT, "%s: no 2-D tensor token_embd.weight", path);
        goto fail;
    }
    if (emb->ne[1] > (1 << 24)) { rc = cllm_error(CLLM_EFORMAT, "%s: vocabulary of %lld tokens is too large", path, (long long)emb->ne[1]); goto fail; }
    c.vocab = (int)emb->ne[1];
    {
        int v2;
        if ((rc = gguf_hparam(g, A, "vocab_size", c.vocab, &v2))) goto fail;
        if (v2 != c.vocab) {
            rc = cllm_error(CLLM_EFORMAT, "%s: %s.vocab_size %d disagrees with token_embd.weight rows %d", path, A, v2, c.vocab);
            goto fail;
        }
    }
    c.tied = cllm_gguf_find_tensor(g, "output.weight") == NULL;
    c.qkv_bias = cllm_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    if ((rc = gguf_token_id(g, "tokenizer.ggml.bos_token_id", c.vocab, &c.bos_id)) ||
        (rc = gguf_token_id(g, "tokenizer.ggml.eos_token_id", c.vocab, &c.eos_id)) ||
        (rc = gguf_token_id(g, "tokenizer.ggml.padding_token_id", c.vocab, &c.pad_id)))
        goto fail;
    uint64_t held = 0;
    for (int i = 0; i < cllm_gguf_n_tensors(g); i++) {
        const cllm_gguf_tensor *t = cllm_gguf_tensor_at(g, i);
        uint64_t ne = 1;
        for (int d = 0; d < t->n_dims; d++) ne = ne * (uint64_t)t->ne[d]; /* bounded by the file size */
        held += ne;
    }
    if ((rc = model_alloc_max(m, &c, held, "the file holds", 0))) { cllm_error_prefix(rc, "%s: ", path); goto fail; }

    /* Every GGUF tensor must be one of the model's, and every model tensor present. */
    int permuted = arch_permuted(A);
    char gname[96];
    int perm;
    for (int i = 0; i < cllm_gguf_n_tensors(g); i++) {
        const cllm_gguf_tensor *t = cllm_gguf_tensor_at(g, i);
        int found = 0;
        for (int j = 0; j < m->n_tensors && !found; j++)
            found = !hf_to_gguf_name(m->tensors[j].name, gname, sizeof gname, &perm) && !strcmp(gname, t->name);
        if (!found) { rc = cllm_error(CLLM_EUNSUP, "%s: unexpected tensor %s for a %s model", path, t->name, A); goto fail; }
    }
    /* every tensor checked, then read in parts on the start-up threads */
    int n_parts = 0;
    if ((rc = parts_alloc(m, path, &parts))) goto fail;
    for (int j = 0; j < m->n_tensors; j++) {
        const cllm_tensor_info *ti = &m->tensors[j];
        if (hf_to_gguf_name(ti->name, gname, sizeof gname, &perm)) { rc = cllm_error(CLLM_EINVAL, "no GGUF name for %s", ti->name); goto fail; }
        const cllm_gguf_tensor *t = cllm_gguf_find_tensor(g, gname);
        if (!t) { rc = cllm_error(CLLM_EFORMAT, "%s: missing tensor %s", path, gname); goto fail; }
        /* ggml ne = [cols, rows] for a matrix, [n] for a vector. */
        int ok = ti->n_dims == 2 ? (t->n_dims == 2 && t->ne[0] == ti->shape[1] && t->ne[1] == ti->shape[0])
                                 : (t->n_dims == 1 && t->ne[0] == ti->shape[0]);
        if (!ok) {
            rc = cllm_error(CLLM_EFORMAT, "%s: tensor %s has shape [%lld, %lld], expected [%lld, %lld] (ggml order)", path,
                            gname, (long long)t->ne[0], (long long)t->ne[1],
                            (long long)(ti->n_dims == 2 ? ti->shape[1] : ti->shape[0]), (long long)(ti->n_dims == 2 ? ti->shape[0] : 1));
            goto fail;
        }
        parts_add(parts, &n_parts, m, ti, t, NULL, perm && permuted ? c.head_dim : 0);
    }
    if ((rc = load_parts(g, NULL, parts, n_parts))) goto fail;
    free(parts);
    parts = NULL;
    cllm_gguf_drop_file(g);
    if (cllm_gguf_find(g, "tokenizer.ggml.tokens") >= 0) {
        if ((rc = cllm_tokenizer_from_gguf(&m->tok, g))) { cllm_error_prefix(rc, "%s: ", path); goto fail; }
    }
    m->src = cllm_calloc(1, sizeof *m->src);
    if (!m->src) { rc = CLLM_ENOMEM; goto fail; }
    m->src->g = g;
    return 0;
fail:
    free(parts);
    cllm_gguf_close(g);
    cllm_model_free(m);
    return rc;
}

/* ---- HF directory ---- */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = cllm_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int json_int_field(json_t *cfg, const char *path, const char *key, int64_t def, int *out) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) {
        if (def < 0) return cllm_error(CLLM_EFORMAT, "%s: missing %s", path, key);
        *out = (int)def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 24))
        return cllm_error(CLLM_EFORMAT, "%s: %s is not an integer in 1..2^24", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int json_float_field(json_t *cfg, const char *path, const char *key, double def, float *out) {
    json_t *v = json_object_get(cfg, key);
    double d = def;
    if (v && !json_is_null(v)) {
        if (!json_is_number(v)) return cllm_error(CLLM_EFORMAT, "%s: %s is not a number", path, key);
        d = json_number_value(v);
    }
    if (!(d > 0) || d > 1e12) return cllm_error(CLLM_EFORMAT, "%s: %s = %g is out of range", path, key, d);
    *out = (float)d;
    return 0;
}

static int json_token_field(json_t *cfg, const char *key, int *out) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_array(v)) v = json_array_get(v, 0);  /* eos_token_id may be a list */
    *out = json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < INT32_MAX
               ? (int)json_integer_value(v) : -1;
    return 0;
}

static int load_hf(cllm_model *m, const char *dir) {
    char *cfgp = path_join(dir, "config.json");
    if (!cfgp) return CLLM_ENOMEM;
    json_error_t je;
    json_t *cfg = json_load_file(cfgp, 0, &je);
    cllm_st *st = NULL;
    load_part *parts = NULL;
    int rc = 0;
    if (!cfg) { rc = cllm_error(CLLM_EFORMAT, "%s: %s (line %d)", cfgp, je.text, je.line); goto out; }
    if (!json_is_object(cfg)) { rc = cllm_error(CLLM_EFORMAT, "%s: not a JSON object", cfgp); goto out; }
    cllm_config c;
    memset(&c, 0, sizeof c);
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    if (!mt) { rc = cllm_error(CLLM_EFORMAT, "%s: no model_type", cfgp); goto out; }
    if (!arch_supported(mt)) { rc = cllm_error(CLLM_EUNSUP, "%s: model_type \"%.40s\" is not supported (llama, mistral, qwen2)", cfgp, mt); goto out; }
    snprintf(c.arch, sizeof c.arch, "%s", mt);
    snprintf(c.name, sizeof c.name, "%s", base_name(dir));
    if ((rc = json_int_field(cfg, cfgp, "num_hidden_layers", -1, &c.n_layer)) ||
        (rc = json_int_field(cfg, cfgp, "hidden_size", -1, &c.d_model)) ||
        (rc = json_int_field(cfg, cfgp, "intermediate_size", -1, &c.d_ff)) ||
        (rc = json_int_field(cfg, cfgp, "num_attention_heads", -1, &c.n_head)) ||
        (rc = json_int_field(cfg, cfgp, "num_key_value_heads", c.n_head, &c.n_head_kv)) ||
        (rc = json_int_field(cfg, cfgp, "vocab_size", -1, &c.vocab)) ||
        (rc = json_int_field(cfg, cfgp, "max_position_embeddings", 2048, &c.max_ctx)) ||
        (rc = json_int_field(cfg, cfgp, "head_dim", c.d_model / c.n_head, &c.head_dim)) ||
        (rc = json_float_field(cfg, cfgp, "rms_norm_eps", 1e-6, &c.rms_eps)))
        goto out;
    /* rope_theta at the top (transformers 4) or in rope_parameters (transformers 5). */
    json_t *rp = json_object_get(cfg, "rope_parameters");
    if (rp && !json_is_null(rp)) {
        if (!json_is_object(rp)) { rc = cllm_error(CLLM_EFORMAT, "%s: rope_parameters is not an object", cfgp); goto out; }
        const char *rt = json_string_value(json_object_get(rp, "rope_type"));
        if (rt && strcmp(rt, "default")) { rc = cllm_error(CLLM_EUNSUP, "%s: rope_type \"%.40s\" is not supported", cfgp, rt); goto out; }
    }
    if (json_is_object(rp) && json_object_get(rp, "rope_theta")) {
        if ((rc = json_float_field(rp, cfgp, "rope_theta", 10000.0, &c.rope_theta))) goto out;
    } else if ((rc = json_float_field(cfg, cfgp, "rope_theta", 10000.0, &c.rope_theta))) goto out;
    json_t *rs = json_object_get(cfg, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        const char *rt = json_string_value(json_object_get(rs, "rope_type"));
        if (!rt) rt = json_string_value(json_object_get(rs, "type"));
        if (!rt || strcmp(rt, "default")) {
            rc = cllm_error(CLLM_EUNSUP, "%s: rope_scaling \"%.40s\" is not supported (RoPE without scaling only)", cfgp,
                            rt ? rt : "(no type)");
            goto out;
        }
    }
    /* partial RoPE (transformers' partial_rotary_factor, at the top or in
     * rope_parameters / rope_scaling): the rotation would cover part of each
     * head, which this loader cannot say (rope_dim is the whole head) */
    json_t *const rope_in[] = { cfg, json_is_object(rp) ? rp : NULL, json_is_object(rs) ? rs : NULL };
    for (size_t i = 0; i < sizeof rope_in / sizeof rope_in[0]; i++) {
        json_t *f = rope_in[i] ? json_object_get(rope_in[i], "partial_rotary_factor") : NULL;
        if (!f || json_is_null(f)) continue;
        if (!json_is_number(f)) { rc = cllm_error(CLLM_EFORMAT, "%s: partial_rotary_factor is not a number", cfgp); goto out; }
        if (json_number_value(f) != 1.0) {
            rc = cllm_error(CLLM_EUNSUP, "%s: partial_rotary_factor %g is not supported (RoPE over the whole head only)",
                            cfgp, json_number_value(f));
            goto out;
        }
    }
    c.rope_dim = c.head_dim;
    json_token_field(cfg, "bos_token_id", &c.bos_id);
    json_token_field(cfg, "eos_token_id", &c.eos_id);
    json_token_field(cfg, "pad_token_id", &c.pad_id);
    const char *act = json_string_value(json_object_get(cfg, "hidden_act"));
    if (act && strcmp(act, "silu")) { rc = cllm_error(CLLM_EUNSUP, "%s: hidden_act \"%.40s\" is not supported (silu)", cfgp, act); goto out; }

    if ((rc = cllm_st_open_dir(&st, dir))) goto out;
    json_t *tie = json_object_get(cfg, "tie_word_embeddings");
    int has_head = cllm_st_find(st, "lm_head.weight") != NULL;
    c.tied = tie ? json_is_true(tie) : !has_head;
    if (c.tied && has_head) c.tied = 0;  /* an explicit lm_head wins; it may equal the embedding */
    c.qkv_bias = cllm_st_find(st, "model.layers.0.self_attn.q_proj.bias") != NULL;
    uint64_t held = 0;
    for (int i = 0; i < cllm_st_n_tensors(st); i++) held += cllm_st_tensor_at(st, i)->numel; /* bounded by the file size */
    if ((rc = model_alloc_max(m, &c, held, "the safetensors files hold", 0))) { cllm_error_prefix(rc, "%s: ", cfgp); goto out; }
    for (int i = 0; i < cllm_st_n_tensors(st); i++) {
        const cllm_st_tensor *t = cllm_st_tensor_at(st, i);
        if (!cllm_model_tensor(m, t->name) && !strstr(t->name, "rotary_emb.inv_freq")) {
            rc = cllm_error(CLLM_EUNSUP, "%s: unexpected tensor %s for a %s model", dir, t->name, c.arch);
            goto out;
        }
    }
    /* every tensor checked, then read in parts on the start-up threads */
    int n_parts = 0;
    if ((rc = parts_alloc(m, dir, &parts))) goto out;
    for (int j = 0; j < m->n_tensors; j++) {
        const cllm_tensor_info *ti = &m->tensors[j];
        const cllm_st_tensor *t = cllm_st_find(st, ti->name);
        if (!t) { rc = cllm_error(CLLM_EFORMAT, "%s: missing tensor %s", dir, ti->name); goto out; }
        int ok = t->n_dims == ti->n_dims && t->shape[0] == ti->shape[0] && (ti->n_dims == 1 || t->shape[1] == ti->shape[1]);
        if (!ok) {
            rc = cllm_error(CLLM_EFORMAT, "%s: tensor %s has the wrong shape (expected [%lld, %lld])", dir, ti->name,
                            (long long)ti->shape[0], (long long)ti->shape[1]);
            goto out;
        }
        parts_add(parts, &n_parts, m, ti, NULL, t, 0);
    }
    if ((rc = load_parts(NULL, st, parts, n_parts))) goto out;
    char *tokp = path_join(dir, "tokenizer.json");
    if (!tokp) { rc = CLLM_ENOMEM; goto out; }
    int has_tok = access(tokp, R_OK) == 0;
    free(tokp);
    if (has_tok) {
        if ((rc = cllm_tokenizer_from_hf_dir(&m->tok, dir))) { cllm_error_prefix(rc, "%s: ", dir); goto out; }
    }
    m->src = cllm_calloc(1, sizeof *m->src);
    if (!m->src || !(m->src->hf_dir = cllm_strdup(dir)) || !(m->src->meta = json_object())) { rc = CLLM_ENOMEM; goto out; }
    for (size_t i = 0; i < cllm_st_n_metadata(st); i++) {
        const char *k, *v;
        if (!cllm_st_metadata_at(st, i, &k, &v)) json_object_set_new(m->src->meta, k, json_string(v));
    }
out:
    free(parts);
    cllm_st_close(st);
    json_decref(cfg);
    free(cfgp);
    if (rc) cllm_model_free(m);
    return rc;
}

int cllm_model_load(cllm_model *m, const char *path) {
    memset(m, 0, sizeof *m);
    struct stat sb;
    if (!*path) return cllm_error(CLLM_EINVAL, "the model's name is empty");
    if (stat(path, &sb)) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return load_hf(m, path);
    return load_gguf(m, path);
}

/* ---- saving ---- */

/* dtype string -> ggml type; -1 when unknown. */
static int parse_dtype(const char *dtype) {
    if (!dtype || !strcmp(dtype, "f32")) return GGML_T_F32;
    if (!strcmp(dtype, "f16")) return GGML_T_F16;
    if (!strcmp(dtype, "bf16")) return GGML_T_BF16;
    return -1;
}

/* Shortest decimal that reads back as the same float. */
static json_t *json_float(float f) {
    char buf[32];
    for (int p = 6; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

/* Text of a special-token entry of tokenizer_config.json ("<x>" or {"content": "<x>"}). */
static const char *tok_text(json_t *v) {
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_string_value(v);
}

/* GGUF tokenizer keys from a HF directory's tokenizer.json (byte-level BPE)
 * and tokenizer_config.json: tokens by id, token types (added special tokens
 * control, other added tokens user-defined), merges, the pre-tokenizer name
 * of tok's pipeline (cllm_tokenizer_pre_name; none is an error: another name
 * would split text differently), special ids, add_bos_token and the chat
 * template. Ids without a token up to the model's vocab rows are filled
 * with "[PAD<id>]" tokens of type UNUSED, as llama.cpp's converter does:
 * llama.cpp sizes token_embd by the token count. Nothing is written without
 * tokenizer.json. */
static int gguf_tokenizer_from_hf(cllm_gguf_writer *w, const char *dir, const cllm_tokenizer *tok, int vocab_rows) {
    char *tp = path_join(dir, "tokenizer.json"), *cp = path_join(dir, "tokenizer_config.json");
    json_t *tj = NULL, *tc = NULL;
    char **toks = NULL;
    size_t *lens = NULL;
    int32_t *types = NULL;
    char **merges = NULL;
    size_t n_tok = 0, n_merges = 0;
    int rc = 0;
    json_error_t je;
    if (!tp || !cp) { rc = CLLM_ENOMEM; goto out; }
    if (access(tp, R_OK)) goto out;
    if (!(tj = json_load_file(tp, 0, &je))) { rc = cllm_error(CLLM_EFORMAT, "%s: %s (line %d)", tp, je.text, je.line); goto out; }
    if (!access(cp, R_OK) && !(tc = json_load_file(cp, 0, &je))) { rc = cllm_error(CLLM_EFORMAT, "%s: %s (line %d)", cp, je.text, je.line); goto out; }
    json_t *model = json_object_get(tj, "model"), *vocab = json_object_get(model, "vocab"), *jm = json_object_get(model, "merges");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!mtype || strcmp(mtype, "BPE") || !json_is_object(vocab)) goto out;  /* not byte-level BPE: no keys */
    json_t *added = json_object_get(tj, "added_tokens");
    /* n_tok = 1 + the largest id of vocab and added tokens; every id must be filled. */
    const char *k;
    json_t *v;
    json_int_t maxid = -1;
    json_object_foreach(vocab, k, v) if (json_is_integer(v) && json_integer_value(v) > maxid) maxid = json_integer_value(v);
    size_t ai;
    json_array_foreach(added, ai, v) {
        json_t *id = json_object_get(v, "id");
        if (json_is_integer(id) && json_integer_value(id) > maxid) maxid = json_integer_value(id);
    }
    if (maxid < 0 || maxid >= (1 << 24)) { rc = cllm_error(CLLM_EFORMAT, "%s: bad vocabulary ids", tp); goto out; }
    n_tok = (size_t)maxid + 1;
    if (n_tok < (size_t)vocab_rows) n_tok = (size_t)vocab_rows;
    toks = cllm_calloc(n_tok, sizeof *toks);
    lens = cllm_calloc(n_tok, sizeof *lens);
    types = cllm_calloc(n_tok, sizeof *types);
    if (!toks || !lens || !types) { rc = CLLM_ENOMEM; goto out; }
    size_t klen;
    json_object_keylen_foreach(vocab, k, klen, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0) { rc = cllm_error(CLLM_EFORMAT, "%s: vocab entry has a bad id", tp); goto out; }
        if (toks[id]) continue;
        if (!(toks[id] = cllm_strndup(k, klen))) { rc = CLLM_ENOMEM; goto out; }
        lens[id] = klen;
        types[id] = CLLM_TOK_NORMAL;
    }
    json_array_foreach(added, ai, v) {
        json_t *id = json_object_get(v, "id"), *content = json_object_get(v, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || !json_is_string(content)) {
            rc = cllm_error(CLLM_EFORMAT, "%s: added token %zu lacks id or content", tp, ai);
            goto out;
        }
        json_int_t i = json_integer_value(id);
        if (!toks[i]) {
            if (!(toks[i] = cllm_strndup(json_string_value(content), json_string_length(content)))) { rc = CLLM_ENOMEM; goto out; }
            lens[i] = json_string_length(content);
        }
        types[i] = json_is_true(json_object_get(v, "special")) ? CLLM_TOK_CONTROL : CLLM_TOK_USER_DEFINED;
    }
    for (size_t i = 0; i < n_tok; i++)
        if (!toks[i]) {
            char pad[32];
            lens[i] = (size_t)snprintf(pad, sizeof pad, "[PAD%zu]", i);
            if (!(toks[i] = cllm_strdup(pad))) { rc = CLLM_ENOMEM; goto out; }
            types[i] = CLLM_TOK_UNUSED;
        }
    n_merges = json_array_size(jm);
    merges = cllm_calloc(n_merges ? n_merges : 1, sizeof *merges);
    if (!merges) { rc = CLLM_ENOMEM; goto out; }
    json_array_foreach(jm, ai, v) {
        if (json_is_string(v)) merges[ai] = cllm_strdup(json_string_value(v));
        else if (json_is_array(v) && json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) && json_is_string(json_array_get(v, 1))) {
            const char *a = json_string_value(json_array_get(v, 0)), *b = json_string_value(json_array_get(v, 1));
            size_t n = strlen(a) + strlen(b) + 2;
            if ((merges[ai] = cllm_malloc(n))) snprintf(merges[ai], n, "%s %s", a, b);
        } else { rc = cllm_error(CLLM_EFORMAT, "%s: merge %zu is neither \"a b\" nor [a, b]", tp, ai); goto out; }
        if (!merges[ai]) { rc = CLLM_ENOMEM; goto out; }
    }
    const char *pre = tok ? cllm_tokenizer_pre_name(tok) : NULL;
    if (!pre) {
        rc = cllm_error(CLLM_EUNSUP, "%s: its pre_tokenizer is none that a GGUF tokenizer.ggml.pre names (gpt2, smollm, "
                        "qwen2, llama-bpe); the GGUF would split text differently", tp);
        goto out;
    }
    if ((rc = cllm_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", 4)) ||
        (rc = cllm_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre, strlen(pre))) ||
        (rc = cllm_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, lens, n_tok)) ||
        (rc = cllm_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, n_tok)) ||
        (rc = cllm_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, n_merges)) ||
        (rc = cllm_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", 0)))
        goto out;
    static const char *const ids[][2] = {{"bos_token", "tokenizer.ggml.bos_token_id"}, {"eos_token", "tokenizer.ggml.eos_token_id"},
                                         {"unk_token", "tokenizer.ggml.unknown_token_id"}, {"pad_token", "tokenizer.ggml.padding_token_id"}};
    /* BOS as tok reads it (a post-processor's prefix may name it where the
     * config has no bos_token, or another one): the GGUF must prepend the
     * same token its HF source does */
    int32_t bos = tok ? cllm_tokenizer_bos(tok) : -1;
    if (bos >= 0) rc = cllm_gguf_writer_set_u32(w, ids[0][1], (uint32_t)bos);
    for (size_t i = bos >= 0 ? 1 : 0; tc && i < 4 && !rc; i++) {
        const char *t = tok_text(json_object_get(tc, ids[i][0]));
        for (size_t j = 0; t && j < n_tok; j++)
            if (lens[j] == strlen(t) && !memcmp(toks[j], t, lens[j])) { rc = cllm_gguf_writer_set_u32(w, ids[i][1], (uint32_t)j); break; }
    }
    /* as tok reads it: tokenizer_config's add_bos_token, else a post-processor
     * that prepends BOS (Llama 3's tokenizer.json, which has no such key) */
    json_t *ab = tc ? json_object_get(tc, "add_bos_token") : NULL;
    int add_bos = tok ? cllm_tokenizer_add_bos(tok) : json_is_true(ab);
    if (!rc && (json_is_boolean(ab) || add_bos)) rc = cllm_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    json_t *ct = tc ? json_object_get(tc, "chat_template") : NULL;
    if (!rc && json_is_string(ct)) rc = cllm_gguf_writer_set_str(w, "tokenizer.chat_template", json_string_value(ct), json_string_length(ct));
out:
    for (size_t i = 0; toks && i < n_tok; i++) free(toks[i]);
    for (size_t i = 0; merges && i < n_merges; i++) free(merges[i]);
    free(toks); free(lens); free(types); free(merges);
    json_decref(tj); json_decref(tc);
    free(tp); free(cp);
    return rc;
}

static int save_gguf(const cllm_model *m, const char *path, int type) {
    const cllm_config *c = &m->cfg;
    cllm_gguf_writer *w;
    int rc = cllm_gguf_writer_new(&w);
    if (rc) return rc;
    float **perm_bufs = cllm_calloc((size_t)m->n_tensors, sizeof *perm_bufs);
    if (!perm_bufs) { cllm_gguf_writer_free(w); return CLLM_ENOMEM; }
    const cllm_gguf *src = m->src ? m->src->g : NULL;
    /* Metadata: everything the source GGUF had (tokenizer keys included), then the
     * architecture keys set from cfg; quantization keys dropped (tensors are not
     * quantized any more). */
    if (src)
        for (int i = 0; i < cllm_gguf_n_kv(src) && !rc; i++) {
            const char *k = cllm_gguf_key(src, i);
            if (!strcmp(k, "general.alignment") || !strcmp(k, "general.quantization_version")) continue;
            rc = cllm_gguf_writer_copy_kv(w, src, i);
        }
    char key[160];
    /* llama.cpp has no "mistral" architecture: its converter writes Mistral
     * models as "llama" (same tensors, same permuted Q/K), and so do we. */
    const char *A = !strcmp(c->arch, "mistral") ? "llama" : c->arch;
#define SETU(name, v) if (!rc) { snprintf(key, sizeof key, "%s.%s", A, name); rc = cllm_gguf_writer_set_u32(w, key, (uint32_t)(v)); }
#define SETF(name, v) if (!rc) { snprintf(key, sizeof key, "%s.%s", A, name); rc = cllm_gguf_writer_set_f32(w, key, (v)); }
    if (!rc) rc = cllm_gguf_writer_set_str(w, "general.architecture", A, strlen(A));
    if (!rc && !src) rc = cllm_gguf_writer_set_str(w, "general.name", c->name, strlen(c->name));
    SETU("block_count", c->n_layer);
    SETU("context_length", c->max_ctx > 0 ? c->max_ctx : 2048);
    SETU("embedding_length", c->d_model);
    SETU("feed_forward_length", c->d_ff);
    SETU("attention.head_count", c->n_head);
    SETU("attention.head_count_kv", c->n_head_kv);
    SETF("rope.freq_base", c->rope_theta);
    SETF("attention.layer_norm_rms_epsilon", c->rms_eps);
    SETU("rope.dimension_count", c->rope_dim);
    SETU("vocab_size", c->vocab);
    if (c->head_dim * c->n_head != c->d_model) {
        SETU("attention.key_length", c->head_dim);
        SETU("attention.value_length", c->head_dim);
    }
#undef SETU
#undef SETF
    /* llama.cpp file types: ALL_F32 0, MOSTLY_F16 1, MOSTLY_BF16 32. */
    if (!rc) rc = cllm_gguf_writer_set_u32(w, "general.file_type", type == GGML_T_F32 ? 0 : type == GGML_T_F16 ? 1 : 32);
    if (!src && !rc && m->src && m->src->meta) {
        const char *k;
        json_t *v;
        json_object_foreach(m->src->meta, k, v)
            if (!rc && !strncmp(k, "general.", 8) && json_is_string(v) && strcmp(k, "general.architecture"))
                rc = cllm_gguf_writer_set_str(w, k, json_string_value(v), json_string_length(v));
    }
    if (!src && !rc && m->src && m->src->hf_dir) rc = gguf_tokenizer_from_hf(w, m->src->hf_dir, m->tok, c->vocab);
    if (!src && !rc) {
        if (c->bos_id >= 0) rc = cllm_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_id);
        if (!rc && c->eos_id >= 0) rc = cllm_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_id);
        if (!rc && c->pad_id >= 0 && cllm_gguf_writer_has(w, "tokenizer.ggml.padding_token_id") == 0)
            rc = cllm_gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)c->pad_id);
    }
    /* Tensors: vectors (norms, biases) stay F32 as llama.cpp expects; matrices take
     * the asked type. Q/K rows are permuted back for llama-style archs. */
    int permuted = arch_permuted(A);
    for (int j = 0; j < m->n_tensors && !rc; j++) {
        const cllm_tensor_info *ti = &m->tensors[j];
        char gname[96];
        int perm;
        if (hf_to_gguf_name(ti->name, gname, sizeof gname, &perm)) { rc = cllm_error(CLLM_EINVAL, "no GGUF name for %s", ti->name); break; }
        const float *data = m->params + ti->offset;
        if (perm && permuted) {
            if (!(perm_bufs[j] = cllm_malloc(ti->numel * sizeof(float)))) { rc = CLLM_ENOMEM; break; }
            permute_rows(perm_bufs[j], data, perm == 1 ? c->n_head : c->n_head_kv, c->head_dim,
                         ti->n_dims == 2 ? (size_t)ti->shape[1] : 1, 0);
            data = perm_bufs[j];
        }
        int64_t ne[2] = {ti->n_dims == 2 ? ti->shape[1] : ti->shape[0], ti->shape[0]};
        rc = cllm_gguf_writer_add_tensor(w, gname, ti->n_dims, ne, ti->n_dims == 2 ? type : GGML_T_F32, data);
    }
    if (!rc) rc = cllm_gguf_writer_write(w, path);
    for (int j = 0; j < m->n_tensors; j++) free(perm_bufs[j]);
    free(perm_bufs);
    cllm_gguf_writer_free(w);
    return rc;
}

static int write_json(json_t *j, const char *path) {
    if (!j) return cllm_error(CLLM_ENOMEM, "%s: out of memory building JSON", path);
    int rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) ? cllm_error(CLLM_EIO, "%s: cannot write: %s", path, strerror(errno)) : 0;
    json_decref(j);
    return rc;
}

/* The same file under two names (the source directory given as the output,
 * spelt another way: ./dir, an absolute path, a link): copying it onto itself
 * would truncate it first. */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (!strcmp(a, b)) return 1;
    return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    if (!in) return cllm_error(CLLM_EIO, "%s: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) { fclose(in); return cllm_error(CLLM_EIO, "%s: %s", to, strerror(errno)); }
    char buf[1 << 16];
    size_t n;
    int rc = 0;
    while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) rc = cllm_error(CLLM_EIO, "%s: write error: %s", to, strerror(errno));
    if (!rc && ferror(in)) rc = cllm_error(CLLM_EIO, "%s: read error", from);
    fclose(in);
    if (fclose(out) && !rc) rc = cllm_error(CLLM_EIO, "%s: write error: %s", to, strerror(errno));
    return rc;
}

/* Write tokenizer.json and tokenizer_config.json for HF from a GGUF file's
 * tokenizer.ggml.* metadata (byte-level BPE only): vocab and merges as they are,
 * control / user-defined tokens as added tokens, the pre-tokenizer the file
 * names ("smollm": Digits(individual) then ByteLevel; others: ByteLevel). */
static int cllm_hf_tokenizer_from_gguf(const cllm_gguf *g, const char *dir) {
    const char *path = cllm_gguf_path(g);
    cllm_gguf_str model, pre = {"", 0}, tmpl = {NULL, 0};
    const cllm_gguf_str *toks, *merges = NULL;
    size_t n_tok, n_merges = 0, n_types = 0;
    const int32_t *types = NULL;
    int rc;
    if ((rc = cllm_gguf_get_str(g, "tokenizer.ggml.model", &model))) return rc;
    if (strcmp(model.s, "gpt2")) return 0;  /* nothing to write for other tokenizers */
    if (cllm_gguf_find(g, "tokenizer.ggml.pre") >= 0 && (rc = cllm_gguf_get_str(g, "tokenizer.ggml.pre", &pre))) return rc;
    if (cllm_gguf_find(g, "tokenizer.chat_template") >= 0 && (rc = cllm_gguf_get_str(g, "tokenizer.chat_template", &tmpl))) return rc;
    if ((rc = cllm_gguf_get_arr_str(g, "tokenizer.ggml.tokens", &toks, &n_tok))) return rc;
    if (cllm_gguf_find(g, "tokenizer.ggml.merges") >= 0 && (rc = cllm_gguf_get_arr_str(g, "tokenizer.ggml.merges", &merges, &n_merges))) return rc;
    if (cllm_gguf_find(g, "tokenizer.ggml.token_type") >= 0) {
        if ((rc = cllm_gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &types, &n_types))) return rc;
        if (n_types != n_tok) return cllm_error(CLLM_EFORMAT, "%s: token_type has %zu entries for %zu tokens", path, n_types, n_tok);
    }
    json_t *added = json_array(), *vocab = json_object(), *jm = json_array();
    if (!added || !vocab || !jm) { rc = cllm_error(CLLM_ENOMEM, "out of memory building tokenizer.json"); goto fail; }
    for (size_t i = 0; i < n_tok; i++) {
        if (json_object_setn_new(vocab, toks[i].s, toks[i].len, json_integer((json_int_t)i))) {
            rc = cllm_error(CLLM_EFORMAT, "%s: token %zu is not valid UTF-8 or repeats an earlier token", path, i);
            goto fail;
        }
        if (types && (types[i] == CLLM_TOK_CONTROL || types[i] == CLLM_TOK_USER_DEFINED))
            json_array_append_new(added, json_pack("{s:I, s:s%, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i, "content",
                                                   toks[i].s, toks[i].len, "single_word", 0, "lstrip", 0, "rstrip", 0,
                                                   "normalized", types[i] != CLLM_TOK_CONTROL, "special", types[i] == CLLM_TOK_CONTROL));
    }
    for (size_t i = 0; i < n_merges; i++) json_array_append_new(jm, json_stringn(merges[i].s, merges[i].len));
    /* The pipeline the file names, in the form HF reads (Qwen2's and Llama 3's
     * Split regex too: a plain ByteLevel would split text as GPT-2 does). */
    int ignore_merges = 0;
    json_t *pt;
    if ((rc = cllm_hf_pre_tokenizer(pre.s, &pt, &ignore_merges))) { cllm_error_prefix(rc, "%s: ", path); goto fail; }
    json_t *bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1);
    /* BOS before every text (Llama 3): HF's fast tokenizers prepend what
     * tokenizer.json's post-processor says (transformers 4's
     * PreTrainedTokenizerFast and GPT2TokenizerFast ignore
     * tokenizer_config's add_bos_token; the tokenizers library reads only
     * tokenizer.json), so say it there, as Llama 3's file does: a Sequence of
     * ByteLevel and a TemplateProcessing "BOS $A" ("BOS $A BOS $B" for a
     * pair). Without add_bos_token or a BOS id: ByteLevel alone. */
    json_t *pp = NULL;
    int add_bos = 0;
    int64_t bos = -1;
    if (cllm_gguf_find(g, "tokenizer.ggml.add_bos_token") >= 0 && (rc = cllm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos))) {
        json_decref(pt);
        json_decref(bl);
        goto fail;
    }
    if (add_bos && cllm_gguf_find(g, "tokenizer.ggml.bos_token_id") >= 0 &&
        !cllm_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &bos) && bos >= 0 && (uint64_t)bos < n_tok) {
        const cllm_gguf_str *b = &toks[bos];
        json_t *st = json_object();
        if (st) json_object_setn_new(st, b->s, b->len, json_pack("{s:s%, s:[I], s:[s%]}", "id", b->s, b->len, "ids", (json_int_t)bos,
                                                                  "tokens", b->s, b->len));
        json_t *tp = json_pack("{s:s, s:[{s:{s:s%, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s%, s:i}}, {s:{s:s, s:i}}, {s:{s:s%, s:i}}, "
                               "{s:{s:s, s:i}}], s:o}",
                               "type", "TemplateProcessing",
                               "single", "SpecialToken", "id", b->s, b->len, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                               "pair", "SpecialToken", "id", b->s, b->len, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                               "SpecialToken", "id", b->s, b->len, "type_id", 1, "Sequence", "id", "B", "type_id", 1,
                               "special_tokens", st);
        pp = tp ? json_pack("{s:s, s:[O, o]}", "type", "Sequence", "processors", bl, tp) : NULL;
        if (!pp) {
            json_decref(pt);
            json_decref(bl);
            rc = cllm_error(CLLM_ENOMEM, "out of memory building tokenizer.json");
            goto fail;
        }
    } else
        pp = json_incref(bl);
    json_t *tj = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:O, s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer", "pre_tokenizer", pt,
        "post_processor", pp, "decoder", bl,
        "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
        "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", ignore_merges, "vocab", vocab, "merges", jm);
    added = vocab = jm = NULL;  /* these and pt are stolen by json_pack ("o"), even on failure */
    json_decref(bl);
    char *p = path_join(dir, "tokenizer.json");
    if (!p) { json_decref(tj); return CLLM_ENOMEM; }
    rc = write_json(tj, p);
    free(p);
    if (rc) return rc;

    json_t *tc = json_pack("{s:s, s:b}", "tokenizer_class", "GPT2Tokenizer", "clean_up_tokenization_spaces", 0);
    static const char *const ids[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token"}, {"tokenizer.ggml.eos_token_id", "eos_token"},
                                         {"tokenizer.ggml.unknown_token_id", "unk_token"}, {"tokenizer.ggml.padding_token_id", "pad_token"}};
    for (size_t i = 0; tc && i < 4; i++) {
        int64_t id;
        if (cllm_gguf_find(g, ids[i][0]) >= 0 && !cllm_gguf_get_int(g, ids[i][0], &id) && id >= 0 && (uint64_t)id < n_tok)
            json_object_set_new(tc, ids[i][1], json_stringn(toks[id].s, toks[id].len));
    }
    int b;
    if (tc && cllm_gguf_find(g, "tokenizer.ggml.add_bos_token") >= 0 && !cllm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b))
        json_object_set_new(tc, "add_bos_token", json_boolean(b));
    if (tc && tmpl.s) json_object_set_new(tc, "chat_template", json_stringn(tmpl.s, tmpl.len));
    p = path_join(dir, "tokenizer_config.json");
    if (!p) { json_decref(tc); return CLLM_ENOMEM; }
    rc = write_json(tc, p);
    free(p);
    return rc;
fail:
    json_decref(added);
    json_decref(vocab);
    json_decref(jm);
    return rc;
}

/* What a HF config.json cannot say of m, as an error naming path: partial
 * RoPE (rope_dim < head_dim, GGUF's rope.dimension_count): transformers'
 * Llama, Mistral and Qwen2 rotate the whole head, so the saved model would
 * compute something else. 0 when m can be saved as HF. */
static int hf_can_say(const cllm_model *m, const char *path) {
    const cllm_config *c = &m->cfg;
    if (c->rope_dim > 0 && c->rope_dim < c->head_dim)
        return cllm_error(CLLM_EUNSUP, "%s: the model cannot be saved as a HF directory: its RoPE is partial (%d of each "
                          "head's %d dimensions) and HF %s rotates the whole head (save it as GGUF: a name ending in .gguf)",
                          path, c->rope_dim, c->head_dim, !strcmp(c->arch, "qwen2") ? "Qwen2" : !strcmp(c->arch, "mistral") ? "Mistral" : "Llama");
    return 0;
}

static int save_hf(const cllm_model *m, const char *dir, int type) {
    const cllm_config *c = &m->cfg;
    int crc = hf_can_say(m, dir);  /* before anything is written */
    if (crc) return crc;
    if (mkdir(dir, 0777) && errno != EEXIST) return cllm_error(CLLM_EIO, "%s: cannot create directory: %s", dir, strerror(errno));
    int rc = 0;
    cllm_st_wtensor *ts = cllm_calloc((size_t)m->n_tensors, sizeof *ts);
    if (!ts) return CLLM_ENOMEM;
    for (int j = 0; j < m->n_tensors; j++)
        ts[j] = (cllm_st_wtensor){m->tensors[j].name, m->tensors[j].n_dims, m->tensors[j].shape, m->params + m->tensors[j].offset};
    int st_type = type == GGML_T_F32 ? CLLM_ST_F32 : type == GGML_T_F16 ? CLLM_ST_F16 : CLLM_ST_BF16;
    /* __metadata__: "format": "pt" (what HF writes) plus the source's general.*
     * strings, so GGUF -> HF -> GGUF keeps the model's name, license, ... */
    enum { MAXM = 64 };
    const char *mk[MAXM] = {"format"}, *mv[MAXM] = {"pt"};
    size_t nm = 1;
    const cllm_gguf *sg = m->src ? m->src->g : NULL;
    for (int i = 0; sg && i < cllm_gguf_n_kv(sg) && nm < MAXM; i++) {
        const char *k = cllm_gguf_key(sg, i);
        cllm_gguf_str sv;
        if (!strncmp(k, "general.", 8) && strcmp(k, "general.architecture") &&
            cllm_gguf_kv_type(sg, i) == GGUF_T_STR && !cllm_gguf_get_str(sg, k, &sv) && strlen(sv.s) == sv.len) {
            mk[nm] = k;
            mv[nm++] = sv.s;
        }
    }
    if (m->src && m->src->meta) {
        const char *k;
        json_t *v;
        json_object_foreach(m->src->meta, k, v)
            if (nm < MAXM && strcmp(k, "format") && json_is_string(v)) { mk[nm] = k; mv[nm++] = json_string_value(v); }
    }
    char *p = path_join(dir, "model.safetensors");
    if (!p) { free(ts); return CLLM_ENOMEM; }
    rc = cllm_st_write(p, ts, (size_t)m->n_tensors, st_type, mk, mv, nm);
    free(p);
    free(ts);
    if (rc) return rc;

    int qwen = !strcmp(c->arch, "qwen2");
    json_t *j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", qwen ? "Qwen2ForCausalLM" : !strcmp(c->arch, "mistral") ? "MistralForCausalLM" : "LlamaForCausalLM"));
    json_object_set_new(j, "model_type", json_string(c->arch));
    json_object_set_new(j, "hidden_size", json_integer(c->d_model));
    json_object_set_new(j, "intermediate_size", json_integer(c->d_ff));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layer));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_head));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_head_kv));
    json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_ctx > 0 ? c->max_ctx : 2048));
    json_object_set_new(j, "rms_norm_eps", json_float(c->rms_eps));
    json_object_set_new(j, "rope_theta", json_float(c->rope_theta));
    json_object_set_new(j, "rope_scaling", json_null());
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tied));
    if (!qwen) {
        json_object_set_new(j, "attention_bias", json_boolean(c->qkv_bias));
        json_object_set_new(j, "mlp_bias", json_false());
    }
    /* MistralConfig's default is a 4096-token sliding window; the model here
     * attends to the whole context, so HF must not use one. */
    if (!strcmp(c->arch, "mistral")) json_object_set_new(j, "sliding_window", json_null());
    json_object_set_new(j, "bos_token_id", c->bos_id >= 0 ? json_integer(c->bos_id) : json_null());
    json_object_set_new(j, "eos_token_id", c->eos_id >= 0 ? json_integer(c->eos_id) : json_null());
    if (c->pad_id >= 0) json_object_set_new(j, "pad_token_id", json_integer(c->pad_id));
    json_object_set_new(j, "torch_dtype", json_string(type == GGML_T_F32 ? "float32" : type == GGML_T_F16 ? "float16" : "bfloat16"));
    json_object_set_new(j, "initializer_range", json_real(0.02));
    json_object_set_new(j, "use_cache", json_true());
    p = path_join(dir, "config.json");
    if (!p) { json_decref(j); return CLLM_ENOMEM; }
    rc = write_json(j, p);
    free(p);
    if (rc) return rc;

    /* Tokenizer files: copied from a HF source; written from a GGUF source's metadata. */
    if (m->src && m->src->hf_dir) {
        static const char *const files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                            "generation_config.json", "vocab.json", "merges.txt"};
        for (size_t i = 0; i < sizeof files / sizeof files[0] && !rc; i++) {
            char *from = path_join(m->src->hf_dir, files[i]), *to = path_join(dir, files[i]);
            if (!from || !to) rc = CLLM_ENOMEM;
            else if (access(from, R_OK) == 0 && !same_file(from, to)) rc = copy_file(from, to);
            free(from);
            free(to);
        }
    } else if (m->src && m->src->g && cllm_gguf_find(m->src->g, "tokenizer.ggml.tokens") >= 0) {
        rc = cllm_hf_tokenizer_from_gguf(m->src->g, dir);
    }
    return rc;
}

/* The one rule for the output's format: a name ending in .gguf is a GGUF
 * file, anything else a HF directory. */
static int is_gguf_name(const char *path) {
    size_t n = strlen(path);
    return n >= 5 && !strcmp(path + n - 5, ".gguf");
}

int cllm_model_save(const cllm_model *m, const char *path, const char *dtype) {
    int type = parse_dtype(dtype);
    if (type < 0) return cllm_error(CLLM_EINVAL, "unknown dtype \"%s\" (f32, f16 or bf16)", dtype);
    return is_gguf_name(path) ? save_gguf(m, path, type) : save_hf(m, path, type);
}

int cllm_model_save_check(const cllm_model *m, const char *path) {
    struct stat st;
    size_t n = strlen(path);
    if (!n) return cllm_error(CLLM_EINVAL, "the output name is empty");
    int gguf = is_gguf_name(path);
    int rc = m && !gguf ? hf_can_say(m, path) : 0;
    if (rc) return rc;
    if (!stat(path, &st)) {
        if (gguf && S_ISDIR(st.st_mode))
            return cllm_error(CLLM_EINVAL, "%s: is a directory (the output model is a .gguf file)", path);
        if (!gguf && !S_ISDIR(st.st_mode))
            return cllm_error(CLLM_EINVAL, "%s: exists and is not a directory (a HF model is a directory; "
                              "a GGUF file's name ends in .gguf)", path);
        return 0;
    }
    if (errno != ENOENT) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    /* A new name: the directory it goes into must be there. */
    while (n > 1 && path[n - 1] == '/') n--;
    while (n > 0 && path[n - 1] != '/') n--;
    if (n > 1) n--;   /* "a/b" -> "a", "/b" -> "/" */
    char *dir = n ? cllm_strndup(path, n) : cllm_strdup(".");
    if (!dir) return CLLM_ENOMEM;
    if (stat(dir, &st)) rc = cllm_error(CLLM_EIO, "%s: %s", dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode)) rc = cllm_error(CLLM_EIO, "%s: Not a directory", dir);
    free(dir);
    return rc ? cllm_error_prefix(rc, "%s: cannot be written: ", path) : 0;
}
