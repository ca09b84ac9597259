/* forward.h: the LLaMA-family inference forward pass and its KV cache, on the
 * CPU (fp32, the reference) or on a CUDA device (bf16, cuda_backend.h).
 *
 * The KV cache holds several sequences at once; each sequence s has a length
 * len[s] (positions 0..len[s]-1 are valid) and can be rolled back to any
 * shorter length (Jacobi decoding keeps the accepted prefix, drops the rest).
 *
 * One forward call runs a ragged batch: B distinct sequences, sequence b
 * bringing T_b new tokens at positions pos_b..pos_b+T_b-1 (one sequence may
 * be in a prompt chunk while others run Jacobi windows or AR steps). The
 * rows of all sequences go through every weight matrix together (one product
 * per matrix per call), attention runs per row over its own sequence's cache.
 * Rows are numbered in call order: sequence b's token t is row
 * r = T_0 + ... + T_{b-1} + t; f->logits row r and f->argmax[r] hold its
 * results when t >= lm_from_b. cllm_forward is the one-sequence case.
 *
 * Batch invariance: on the CPU every row's result is bit for bit what that
 * sequence gets alone (each kernel computes a row without reading other rows,
 * and the AVX-512 matmul sums each output in a fixed order whatever the row
 * count: kernels/cpu/matmul.c). On CPUs without AVX-512 the products go to
 * BLAS and may round differently with the row count (fp32 reassociation);
 * CUDA's cuBLAS likewise.
 *
 * The device travels with the state: a cllm_fwd made by cllm_fwd_init_on
 * with CLLM_DEVICE_CUDA holds the model's device copy, and a cache made for it
 * by cllm_kv_init_for lives in device memory. Everything that takes a
 * cllm_fwd/cllm_kv pair (decode.c, traj.c, gen.c, bench.c) then runs on
 * either backend unchanged. Scratch is allocated once per maximum row count;
 * a CPU call allocates only when the attention scratch must grow.
 *
 * Letters: L layers, S sequences in the cache, CAP positions per sequence,
 * KD = NKV*HS, R rows in a call, others as in model.h.
 */
#ifndef CLLM_FORWARD_H
#define CLLM_FORWARD_H

#include "model.h"

/* Compute devices. */
enum cllm_device {
    CLLM_DEVICE_CPU = 0,
    CLLM_DEVICE_CUDA = 1,
};

typedef struct cllm_kv {
    int n_layer;      /* L */
    int n_seq;        /* S */
    int cap;          /* CAP: positions per sequence */
    int kv_dim;       /* KD */
    float *k;         /* CPU: (L, S, CAP, KD), keys after RoPE; NULL on CUDA */
    float *v;         /* CPU: (L, S, CAP, KD); NULL on CUDA */
    int *len;         /* (S) valid positions per sequence (host memory on any device) */
    struct cllm_cuda_kv *cuda; /* the device cache, or NULL on the CPU */
} cllm_kv;

/* A CPU cache for n_seq sequences of up to cap positions of model config
 * cfg, every sequence empty. Returns 0 or a CLLM_E* code. */
int cllm_kv_init(cllm_kv *kv, const cllm_config *cfg, int n_seq, int cap);
/* A cache on f's device (cllm_kv_init on the CPU). */
struct cllm_fwd;
int cllm_kv_init_for(cllm_kv *kv, const struct cllm_fwd *f, int n_seq, int cap);
void cllm_kv_free(cllm_kv *kv);
/* Valid positions of sequence seq. */
int cllm_kv_len(const cllm_kv *kv, int seq);
/* Keep the first len positions of seq (0 <= len <= its length); 0 or CLLM_EINVAL. */
int cllm_kv_rollback(cllm_kv *kv, int seq, int len);
/* Grow every sequence to cap positions (no-op when it already has them),
 * keeping what is cached. On failure the cache is unchanged. */
int cllm_kv_grow(cllm_kv *kv, int cap);
/* The capacity to give a cache of capacity cap (0: none yet) that must hold
 * need positions, where the device holds at most limit: doubled from 512 (a
 * context grown a token at a time is copied O(log n) times), but clamped to
 * limit when need fits under it, so no context that fits is refused for
 * the doubling's sake. -1 when need exceeds limit. */
long long cllm_kv_next_cap(long long cap, long long need, long long limit);
/* Make sure kv (made by cllm_kv_init_for with n_seq sequences on first use:
 * kv zeroed before) holds need positions per sequence, keeping what is
 * cached; a context above the device's limit is CLLM_ELIMIT, naming both. */
int cllm_kv_reserve(cllm_kv *kv, const struct cllm_fwd *f, int n_seq, int need);

typedef struct cllm_fwd {
    const cllm_model *m;
    int device;       /* enum cllm_device */
    int max_T;        /* rows per call, all sequences together */
    int gate_up_fused; /* CPU: w_up follows w_gate, so [g u] is one (2F, C) product */
    int bf16;         /* CPU: CLLM_FWD_BF16 */
    /* CPU activations of the last call, R rows each (NULL on CUDA) */
    float *x;         /* (max_T, C) residual stream */
    float *xn;        /* (max_T, C) normed input of a block */
    float *q;         /* (max_T, NH*HS) */
    float *k, *v;     /* (max_T, KD) new keys (after RoPE) and values, before the cache */
    float *ao;        /* (max_T, NH*HS) attention output before o_proj */
    float *proj;      /* (max_T, C) output of o_proj / down_proj */
    float *gu;        /* (max_T, 2F) gate and up: rows of [g u] when gate_up_fused,
                         else gate (max_T, F) then up (max_T, F) */
    float *h;         /* (max_T, F) silu(gate) * up */
    float *att;       /* attention scratch, att_cap floats */
    size_t att_cap;
    int *pos;         /* (max_T) positions of the rows */
    float *rope;      /* (max_T, rope_dim) the rows' RoPE cos and sin (rope_table) */
    int *row0;        /* (max_T + 1) first row of each sequence of the call */
    int *past;        /* (max_T) first position of each sequence */
    const float **kc, **vc; /* (max_T) each sequence's cache of the current layer */
    int *lm_rows;     /* (max_T) the rows the LM head runs for, in order */
    /* results, on any device */
    float *logits;    /* (max_T, V): row r at logits + r*V; NULL on CUDA unless
                         CLLM_FWD_LOGITS was asked for */
    int *argmax;      /* (max_T): argmax of row r */
    /* CUDA */
    struct cllm_cuda_model *cuda_model;  /* owned */
    struct cllm_cuda_fwd *cuda;          /* owned */
} cllm_fwd;

/* Flags of cllm_fwd_init_on. */
enum {
    CLLM_FWD_LOGITS = 1,  /* CUDA: copy the logits to the host too (the CPU always has them) */
    CLLM_FWD_BULK = 2,    /* CUDA: no few-row path for decode steps (kernels/cuda/matmul16.cu):
                             every product of every call through cuBLAS, one call each, so
                             prompt chunks may share the windows' calls (cllm-traj;
                             CLLM_CUDA_GEMM_ROWS=-1: calls with prompt rows through
                             matmul.cu's fixed-order kernel) */
    CLLM_FWD_BF16 = 4,    /* CPU: round to bf16 what the CUDA backend keeps in bf16
                             between ops (the normed rows, attention outputs and
                             SwiGLU outputs that enter the products; the cache's
                             keys and values); with a model through
                             cllm_model_round_bf16, the GPU's roundings on the CPU
                             (test_cuda's reference for the GPU's arithmetic).
                             CUDA: bf16 always, the flag changes nothing */
    CLLM_FWD_INVARIANT = 8,  /* CUDA: as CLLM_FWD_BULK, but every call's products through
                                the fixed-order kernel, so a sequence's results do not
                                change with the rows beside it (cllm-traj --batch-invariant:
                                records that do not depend on --batch; 1.38x slower than
                                cuBLAS at --batch 64 on an H200, docs/CUDA.md). The CPU is
                                batch-invariant always */
};

/* Start the device's own set-up (CUDA: its context, on a thread) so that it
 * overlaps the model load; a program calls it once it knows the device and
 * before cllm_model_load. Nothing on the CPU. */
void cllm_fwd_prepare(int device);

/* A CPU forward state for up to max_T rows per call. Returns 0 or CLLM_E*. */
int cllm_fwd_init(cllm_fwd *f, const cllm_model *m, int max_T);
/* A forward state on device (enum cllm_device). On CUDA this uploads the
 * model (bf16); m must outlive f all the same (its config and tokenizer are
 * read). Returns 0, CLLM_EUNSUP when the build has no CUDA, or a CLLM_E* code
 * from the device. */
int cllm_fwd_init_on(cllm_fwd *f, const cllm_model *m, int max_T, int device, int flags);
void cllm_fwd_free(cllm_fwd *f);

/* Rows per call for a batched engine (gen.c, traj.c) whose `batch` sequences
 * step n rows each, plus one prompt chunk of `chunk` rows: on CUDA all of them
 * (a tick is one call of a layout that repeats, which replays its CUDA graph;
 * at most 16384 + chunk), on the CPU at most 512 (the products are
 * compute-bound long before; ~100 MB of logits at a 49k vocabulary); never
 * fewer than one step plus one chunk. */
int cllm_fwd_call_rows(int device, int n, int batch, int chunk);

/* How many threads the CPU kernels use (BLAS and our own pool); n >= 1. */
void cllm_set_threads(int n);

/* One sequence of a batched call: T tokens of KV-cache sequence seq at
 * positions pos..pos+T-1; the LM head runs for its tokens lm_from..T-1. */
typedef struct cllm_fwd_seq {
    int seq;          /* 0 <= seq < kv->n_seq, distinct within a call */
    int pos;          /* <= cllm_kv_len(kv, seq); a smaller pos rolls back first */
    int T;            /* >= 1, pos + T <= kv->cap */
    int lm_from;      /* 0 <= lm_from <= T; T skips the LM head */
} cllm_fwd_seq;

/* Run the ragged batch s[0..B) whose tokens lie back to back in tokens
 * (row order, sum of T <= f->max_T, each id in [0, V)). Afterwards sequence
 * s[b].seq has length s[b].pos + s[b].T. Returns 0 or a CLLM_E* code;
 * argument errors change nothing; after a device error a sequence's length
 * is at most its pos. */
int cllm_forward_batch(cllm_fwd *f, cllm_kv *kv, const cllm_fwd_seq *s, int B, const int *tokens);
/* 1 when a sequence's results never depend on what else is in the call: its
 * size, the other sequences, their mix of prompt chunks and decoding rows
 * (the CPU always; CUDA states on one batch-invariant route, such as
 * CLLM_FWD_INVARIANT's), so a caller may put prompt chunks and decoding steps in
 * one call without changing any result. */
int cllm_fwd_batch_invariant(const cllm_fwd *f);
/* 1 when every call's products take one route whatever the call holds, so
 * a caller may put prompt chunks in its decoding steps' calls without a
 * decoding sequence changing route from call to call: every batch-invariant
 * forward, and CUDA states that send every product through cuBLAS
 * (CLLM_FWD_BULK's by default, CLLM_CUDA_GEMM_ROWS=0: a row's bits may then
 * depend on the call's size, whichever rows it holds). Else (CUDA's other
 * states: cuBLAS or the few-row path for calls of decoding rows only, the
 * fixed-order kernel for calls with prompt rows) prompt chunks need calls of
 * their own. */
int cllm_fwd_one_route(const cllm_fwd *f);

/* The one-sequence case: tokens (T) of sequence seq at positions
 * pos..pos+T-1, LM head for rows lm_from..T-1 (row t of f->logits and
 * f->argmax[t]). */
int cllm_forward(cllm_fwd *f, cllm_kv *kv, int seq, int pos, const int *tokens, int T,
                 int lm_from);

/* ---- device choice ------------------------------------------------------- */

/* Whether a CUDA device can be used: 1 with its name in info (when info is
 * not NULL), 0 with the reason in info ("this build has no CUDA backend",
 * "no NVIDIA driver", the driver's error...). *driver is set to whether an
 * NVIDIA driver answered at all (0 for builds without CUDA). Never fails. */
int cllm_cuda_usable(char *info, size_t size, int *driver);

#endif
