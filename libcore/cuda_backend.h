/* cuda_backend.h: the CUDA backend of the inference forward (plain C API;
 * implemented in kernels/cuda/cuda_backend.cu, compiled when the build has
 * CUDA, i.e. CLLM_CUDA is defined as 1).
 *
 * It mirrors forward.h: a device copy of a model, a device KV cache with
 * rollback, and a forward with cllm_forward's contract. Weights live on the
 * device in bf16 (q/k/v as one (NH*HS + 2*KD, C) matrix, gate and up as one
 * (2F, C) matrix), activations are bf16 at the inputs of the matrix products
 * and fp32 elsewhere, every sum is fp32 (cuBLAS with CUBLAS_COMPUTE_32F), and
 * the argmax runs on the device: per step only token ids cross to the host,
 * plus the logits when asked for.
 *
 * Nothing here touches the CUDA driver until called; no function prints or
 * exits. Failures return a CLLM_E* code with a message (cllm_errmsg) naming
 * the CUDA/cuBLAS call and file:line: CLLM_ENOMEM for device memory (with the
 * bytes asked and the device's free/total), CLLM_EUNSUP for no device or
 * driver, CLLM_EIO for other device errors. After a device error the
 * CUDA context may be unusable (sticky errors): free everything and stop.
 *
 * Callers normally reach this through forward.h (cllm_fwd_init_on with
 * CLLM_DEVICE_CUDA, cllm_kv_init_for, cllm_forward_batch), which checks the
 * arguments once for both backends; the functions here check them again.
 *
 * Letters: as forward.h; B sequences in one call, R = sum of their T rows.
 */
#ifndef CLLM_CUDA_BACKEND_H
#define CLLM_CUDA_BACKEND_H

#include "forward.h"
#include "model.h"

/* Number of CUDA devices in *n (0 when there is no driver or no device; that
 * is not an error). *driver: whether an NVIDIA driver answered at all (0 when
 * the runtime found none: a machine without a GPU stack). Returns 0, or a
 * CLLM_E* code for any other failure. */
int cllm_cuda_device_count(int *n, int *driver);
/* One line naming the current device (name, compute capability, SMs, memory)
 * into buf: device 0, or the one a training rank set. */
int cllm_cuda_device_name(char *buf, size_t size);
/* Begin making device 0's context on a thread, so that it overlaps the
 * caller's model load; cllm_cuda_model_upload waits for it (and so does the
 * process's exit). Nothing to check: a failure shows at the upload. */
void cllm_cuda_warm_start(void);

/* A model on the device (opaque). */
typedef struct cllm_cuda_model cllm_cuda_model;

/* Copy m to the device (fp32 -> bf16 for matrices; norms, biases and the
 * RoPE table fp32). m may be freed afterwards. Needs even C <= 8192,
 * HS % 8 == 0, HS <= 256 (else CLLM_EUNSUP). Returns 0 or a CLLM_E* code
 * (*out = NULL then). */
int cllm_cuda_model_upload(cllm_cuda_model **out, const cllm_model *m);
void cllm_cuda_model_free(cllm_cuda_model *dm);
const cllm_config *cllm_cuda_model_config(const cllm_cuda_model *dm);
/* Device bytes held by the weights. */
size_t cllm_cuda_model_bytes(const cllm_cuda_model *dm);
/* The most positions a KV cache of this model may hold: the attention
 * kernel's limit for its head size on this device. */
int cllm_cuda_model_max_keys(const cllm_cuda_model *dm);

/* KV cache on the device: keys (after RoPE) and values in bf16, (L, S + 1,
 * CAP, KD) each: the caller's S sequences and a scratch one (index S, never
 * named by a caller), where the forward's padding rows put theirs (calls
 * padded to a few row counts so that they replay captured graphs). The
 * lengths live on the host (rollback is host-only: positions past a
 * sequence's length are never read). */
typedef struct cllm_cuda_kv {
    int n_layer;      /* L */
    int n_seq;        /* S */
    int cap;          /* CAP */
    int kv_dim;       /* KD */
    int max_cap;      /* the attention kernel's limit on CAP on this device */
    void *k, *v;      /* device, bf16 (L, S + 1, CAP, KD) */
    int *len;         /* host (S) valid positions per sequence */
} cllm_cuda_kv;

/* Returns 0 or CLLM_E* (CLLM_ELIMIT when cap exceeds what the attention
 * kernel's shared memory holds on this device). */
int cllm_cuda_kv_init(cllm_cuda_kv *kv, const cllm_cuda_model *dm, int n_seq, int cap);
void cllm_cuda_kv_free(cllm_cuda_kv *kv);
int cllm_cuda_kv_len(const cllm_cuda_kv *kv, int seq);
/* Keep the first len positions of seq (0 <= len <= its length); 0 or CLLM_EINVAL. */
int cllm_cuda_kv_rollback(cllm_cuda_kv *kv, int seq, int len);
/* Grow every sequence to cap positions, keeping what is cached (a new
 * allocation and one device copy per layer and sequence). CLLM_ELIMIT past
 * max_cap. On failure the cache is unchanged. */
int cllm_cuda_kv_grow(cllm_cuda_kv *kv, int cap);

/* Forward state: device activations for up to max_rows = B*T rows per call,
 * a CUDA stream and a cuBLAS handle of its own. */
typedef struct cllm_cuda_fwd {
    const cllm_cuda_model *m;
    int max_rows;
    int want_logits;  /* copy logits to the host after each call */
    int *argmax;      /* host (max_rows): row r in call order (forward.h), for the
                         rows the LM head ran for */
    float *logits;    /* host (max_rows, V), rows as argmax; NULL unless want_logits */
    struct cllm_cuda_state *st; /* device side (opaque) */
} cllm_cuda_fwd;

/* Flags of cllm_cuda_fwd_init. */
enum {
    CLLM_CUDA_FWD_LOGITS = 1,  /* copy the logits to the host after each call */
    CLLM_CUDA_FWD_BULK = 2,    /* never the few-row path (matmul16.cu): calls of decoding
                                  rows through cuBLAS (one product a matrix), calls with
                                  prompt rows through matmul.cu's fixed-order kernel */
    CLLM_CUDA_FWD_NO_PDL = 4,  /* launch every kernel after its predecessor (no programmatic
                                  dependent launch; as CLLM_CUDA_PDL=0) */
    CLLM_CUDA_FWD_INVARIANT = 8, /* never the few-row path, every call's products through the
                                    fixed-order kernel: batch-invariant by construction
                                    (CLLM_CUDA_FIXED_ORDER=1|0 overrides; docs/CUDA.md,
                                    "Batch invariance") */
};
/* Returns 0 or a CLLM_E* code. */
int cllm_cuda_fwd_init(cllm_cuda_fwd *f, const cllm_cuda_model *dm, int max_rows, int flags);
void cllm_cuda_fwd_free(cllm_cuda_fwd *f);
/* Padding rows the state's calls have carried so far (graph-replayed calls
 * are padded to a few row counts; diagnostics and tests). */
unsigned long long cllm_cuda_fwd_pad_rows(const cllm_cuda_fwd *f);
/* 1 when a row's results never depend on the other rows of its call, nor
 * on the call's size or its mix of prompt and decoding rows (cllm_fwd_batch_invariant) */
int cllm_cuda_fwd_batch_invariant(const cllm_cuda_fwd *f);
/* 1 when every call's products take one route whatever the call holds
 * (cllm_fwd_one_route): the fixed-order kernel for every call, or cuBLAS
 * for every call (CLLM_CUDA_GEMM_ROWS set); never with the few-row path */
int cllm_cuda_fwd_one_route(const cllm_cuda_fwd *f);
/* Calls enqueued (op by op or into a graph) with the fixed-order route's
 * fused epilogues (matmul.cu; tests). */
unsigned long long cllm_cuda_fwd_fused_enqueues(const cllm_cuda_fwd *f);
/* The fixed-order kernel's launches so far in this process (enqueued op by
 * op or captured into a graph), by row tile: 64 and 128 (tests: that
 * CLLM_CUDA_MT_ROWS is honoured). */
void cllm_cuda_fixed_order_launches(unsigned long long *tile64, unsigned long long *tile128);
/* ... and how many of them had K in slices (CLLM_CUDA_MT_KSLICE; tests) */
unsigned long long cllm_cuda_fixed_order_split_launches(void);

/* cllm_forward_batch's contract on the device: the ragged batch s[0..B)
 * (distinct sequences; sequence b's T tokens at positions pos..pos+T-1, pos
 * <= its length, pos + T <= cap), tokens back to back in row order, sum of T
 * <= max_rows. Afterwards each sequence has length pos + T; the LM head runs
 * for each sequence's rows lm_from..T-1 (f->argmax[r], and f->logits row r
 * when want_logits). One launch per op for all sequences. Argument errors
 * change nothing; after a device error each sequence is rolled back to
 * min(its length, pos). Returns when the results are on the host. */
int cllm_cuda_forward_seqs(cllm_cuda_fwd *f, cllm_cuda_kv *kv, const cllm_fwd_seq *s, int B,
                           const int *tokens);

/* The one-sequence case. */
int cllm_cuda_forward(cllm_cuda_fwd *f, cllm_cuda_kv *kv, int seq, int pos, const int *tokens,
                      int T, int lm_from);

#endif
