/* forward.h: the LLaMA-family forward pass on the CPU backend (fp32), and its
 * KV cache.
 *
 * The KV cache holds several sequences at once; each sequence s has a length
 * len[s] (positions 0..len[s]-1 are valid) and can be rolled back to any
 * shorter length (Jacobi decoding keeps the accepted prefix, drops the rest).
 * cllm_forward runs T new tokens of one sequence at positions pos..pos+T-1,
 * writes their keys and values into the cache, and leaves logits (and their
 * argmax) in the forward state's buffers. Scratch is allocated once per
 * maximum T by cllm_fwd_init; a forward call allocates only when the attention
 * scratch must grow to a longer context than before.
 *
 * Letters: L layers, S sequences in the cache, CAP positions per sequence,
 * KD = NKV*HS, others as in model.h.
 */
#ifndef CLLM_FORWARD_H
#define CLLM_FORWARD_H

#include "model.h"

typedef struct cllm_kv {
    int n_layer;      /* L */
    int n_seq;        /* S */
    int cap;          /* CAP: positions per sequence */
    int kv_dim;       /* KD */
    float *k;         /* (L, S, CAP, KD), keys after RoPE */
    float *v;         /* (L, S, CAP, KD) */
    int *len;         /* (S) valid positions per sequence */
} cllm_kv;

/* A cache for n_seq sequences of up to cap positions of model config cfg,
 * every sequence empty. Returns 0 or a CLLM_E* code. */
int cllm_kv_init(cllm_kv *kv, const cllm_config *cfg, int n_seq, int cap);
void cllm_kv_free(cllm_kv *kv);
/* Valid positions of sequence seq. */
int cllm_kv_len(const cllm_kv *kv, int seq);
/* Keep the first len positions of seq (0 <= len <= its length); 0 or CLLM_EINVAL. */
int cllm_kv_rollback(cllm_kv *kv, int seq, int len);

typedef struct cllm_fwd {
    const cllm_model *m;
    int max_T;
    /* activations of the last call, T rows each */
    float *x;         /* (max_T, C) residual stream */
    float *xn;        /* (max_T, C) normed input of a block */
    float *q;         /* (max_T, NH*HS) */
    float *ao;        /* (max_T, NH*HS) attention output before o_proj */
    float *proj;      /* (max_T, C) output of o_proj / down_proj */
    float *gate;      /* (max_T, F) */
    float *up;        /* (max_T, F) */
    float *att;       /* attention scratch, att_cap floats */
    size_t att_cap;
    int *pos;         /* (max_T) positions of the rows */
    float *logits;    /* (max_T, V): row t at logits + t*V, for t >= lm_from */
    int *argmax;      /* (max_T): argmax of row t, for t >= lm_from */
} cllm_fwd;

/* Scratch for forwards of up to max_T tokens per call. Returns 0 or CLLM_E*. */
int cllm_fwd_init(cllm_fwd *f, const cllm_model *m, int max_T);
void cllm_fwd_free(cllm_fwd *f);

/* How many threads the kernels use (BLAS and attention); n >= 1. */
void cllm_set_threads(int n);

/* Run tokens (T, each in [0, V)) of sequence seq at positions pos..pos+T-1.
 * pos must be <= cllm_kv_len(kv, seq) (a smaller pos rolls the cache back
 * first) and pos + T <= kv->cap, 1 <= T <= f->max_T. Afterwards the sequence
 * has length pos + T. The LM head runs for rows lm_from..T-1 only
 * (0 <= lm_from <= T; lm_from = T skips it): f->logits row t and f->argmax[t]
 * hold their results. Returns 0 or a CLLM_E* code (nothing is changed then). */
int cllm_forward(cllm_fwd *f, cllm_kv *kv, int seq, int pos, const int *tokens, int T,
                 int lm_from);

#endif
