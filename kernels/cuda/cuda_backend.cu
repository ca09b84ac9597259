/* cuda_backend.cu: the device model, the device KV cache and the forward of
 * libcore/cuda_backend.h (the host side; the kernels are in the other files
 * of kernels/cuda/).
 *
 * One call, a ragged batch of R rows (each sequence's tokens back to back,
 * forward.h), everything on one stream:
 *   meta  tokens (R), pos (R), slot (R), lm rows (N)   host -> device, one copy
 *   x = E[tokens]                                          (R, C) fp32
 *   xn = RMSNorm(x) * attn_norm[0]                         (R, C) bf16
 *   per layer l:
 *     qkv = xn Wqkv^T                                      (R, QKV) fp32
 *     q, cache rows <- bias + RoPE (+ v copy)              q (R, QD) fp32
 *     ao = attention(q, cache)                             (R, QD) bf16
 *     proj = ao Wo^T;  x += proj;  xn = RMSNorm(x) * ffn_norm
 *     gu = xn [Wg; Wu]^T                                   (R, 2F) fp32
 *     h = silu(gate) * up                                  (R, F) bf16
 *     proj = h Wd^T;  x += proj;  xn = RMSNorm(x) * (next attn_norm | out_norm)
 *   the last layer's norm gathers the LM head's N rows (t >= lm_from) only:
 *   logits = xn Wlm^T (N, V) fp32; argmax (N) -> host; logits -> host if asked;
 *   the host puts gathered row i back at its row lm[i]
 *   one stream synchronisation at the end.
 * Weights sit in one device allocation (256-byte aligned pieces), the
 * activations of a forward state in another.
 *
 * Set-up work (the cache and activation memsets, the cache copies of
 * kv_grow; the weight upload on a stream of its own) runs off the forward's
 * stream, and the forward on a
 * non-blocking stream, which is not ordered after the legacy stream: a
 * cudaMemcpy from pageable memory may return before its DMA lands, and
 * cudaMemset and device-to-device copies do not wait at all. So every
 * function that queues such work ends with cudaDeviceSynchronize (the upload:
 * with its stream's synchronization) before the forward can read what it
 * wrote (found by the CPU emulation, tests/cuemu/).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_cuda.h"

extern "C" {
#include "clock.h"
#include "cuda_backend.h"
#include "startup.h"   /* cllm_startup_f32_to_bf16 */
}

typedef struct cuda_layer {
    float *attn_norm, *ffn_norm;   /* (C) */
    floatX *wqkv;                  /* (QKV, C): rows of Wq, then Wk, then Wv */
    float *bqkv;                   /* (QKV) or NULL */
    floatX *wo;                    /* (C, QD) */
    floatX *wgu;                   /* (2F, C): rows of Wgate, then Wup */
    floatX *wdown;                 /* (C, F) */
} cuda_layer;

struct cllm_cuda_model {
    cllm_config cfg;
    int QD, KD, QKV;
    floatX *wte;                   /* (V, C) */
    floatX *lm_head;               /* (V, C); == wte when tied */
    float *out_norm;               /* (C) */
    float *inv_freq;               /* (rope_dim / 2) */
    cuda_layer *layers;            /* host array [L] of device pointers */
    void *mem;                     /* the one device allocation */
    size_t bytes;
    double upload_s;               /* CLLM_CUDA_STATS: the upload's wall time */
    double load_s;                 /* ... and the time from cllm_fwd_prepare to it (the model load) */
    int max_keys;                  /* attention's limit for this HS on this device */
};

/* A forward call captured as a CUDA graph, for one row layout (R rows, N
 * LM-head rows) over one device cache. Everything that changes from step to
 * step is read from meta_d, whose host->device copy is the graph's first
 * node, so a graph replays any call of its layout. */
enum { GRAPH_SLOTS = 64, CUBLAS_WS_BYTES = 32 << 20 };
typedef struct fwd_graph {
    int R, N;
    const void *k, *v;             /* the cache the graph's kernels address */
    int cap, n_seq;
    int seen;                      /* calls with this key; captured at the second */
    cudaGraphExec_t exec;          /* NULL until captured */
    unsigned long long last;       /* LRU */
} fwd_graph;

/* Diagnostics (docs/CUDA.md, "Where the time goes"): CLLM_CUDA_STATS=1 prints,
 * when a forward state is freed, where its calls' host time went (captures,
 * launches op by op, graph launches with the wait for them);
 * CLLM_CUDA_PROFILE=1 adds each op's device time, from an event recorded
 * after every op (graphs off, since per-op events need the ops launched one
 * by one; the events add a little time of their own). */
enum prof_op { P_META, P_EMBED, P_NORM, P_QKV, P_ROPE, P_ATT, P_WO, P_GU, P_SWIGLU, P_DOWN, P_LM, P_ARGMAX,
               P_COPY, P_N };
static const char *const prof_name[P_N] = {"meta-copy", "embedding", "rmsnorm", "qkv-matmul", "rope",
                                           "attention", "wo-matmul", "gate-up-matmul", "swiglu",
                                           "down-matmul", "lm-head", "argmax", "copy-out"};
enum { PROF_EVENTS = 1024 };
typedef struct fwd_stats {
    int on;
    unsigned long long calls, graph_runs, captures, plain_runs, rows, pad_rows;
    unsigned long long fused_enqueues;            /* counted even when not on (tests) */
    double t_capture, t_plain, t_graph, t_wait;   /* host seconds */
    double t_init;                                /* cllm_cuda_fwd_init's wall time */
    size_t bytes;                                 /* the activations' device memory */
    cuda_op_profile prof;                         /* CLLM_CUDA_PROFILE */
} fwd_stats;

/* The per-call ints copied to the device (meta_h -> meta_d) for M rows:
 * four (M) arrays and the attention segments (M + 1); a segment is at most
 * ATT_SEG_ROWS rows of one sequence (one mma tile). */
#define META_INTS(M) (5 * (M) + 1)
enum { ATT_SEG_ROWS = 16 };

struct cllm_cuda_state {
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *mem;                     /* device activations, one allocation */
    float *x, *qkv, *q, *proj, *gu, *logits;
    floatX *xn, *ao, *h;
    int *meta_d;                   /* META_INTS(max_rows): tokens, pos, slot, lm rows (max_rows
                                      each), then the attention segments (max_rows + 1) */
    argmax_key_t *argmax_d;        /* (max_rows) argmax_key per compact LM-head row */
    int *meta_h;                   /* pinned host mirrors */
    argmax_key_t *argmax_h;
    void *cublas_ws;               /* cuBLAS' workspace, fixed so calls can be captured */
    int use_graphs;                /* CLLM_CUDA_GRAPHS=0 turns graphs off */
    int gemm_rows;                 /* CLLM_CUDA_GEMM_ROWS=G: every cuBLAS product in
                                      G-row pieces (batch-invariant, matmul.cu; 0: one
                                      call); -1: call_gemm_rows decides. Unset: 0 in bulk
                                      states not fixed-order for every call (cllm-traj's
                                      default), else -1 */
    int mm16;                      /* calls of up to 16 decoding rows (all through the LM
                                      head) take matmul16.cu's fused tensor-core path
                                      (CLLM_CUDA_MM16=0: never) */
    int mm16_rope;                 /* ... with RoPE and the cache write fused into the
                                      QKV product (qkv_rope_fusable) */
    int att_threads;               /* attention.cu's kernel1 block (CLLM_CUDA_ATT_THREADS=128|256|512) */
    mt_cfg mt;                     /* the fixed-order kernel: its row tile (CLLM_CUDA_MT_ROWS=
                                      auto|64|128: 0 by shape, 64 (default), 128; the same bits), its K
                                      slices (CLLM_CUDA_MT_KSLICE, MT_KSLICE_DEFAULT; 0: K in one
                                      piece; other bits), their workspace (state_layout), its
                                      fragment loads (CLLM_CUDA_LDSM=0: 32-bit loads for
                                      ldmatrix; the same bits) */
    int att_tiled;                 /* the cuBLAS route's attention: attention.cu's tiled
                                      tensor-core kernel (CLLM_CUDA_ATTENTION=1: kernel1) */
    int fixed_order_ok;            /* matmul.cu's fixed-order kernel takes every product's
                                      inner size (for prompt calls: call_gemm_rows) */
    int fixed_order_all;           /* ... for decoding calls too: --batch-invariant states
                                      (CLLM_CUDA_FWD_INVARIANT); CLLM_CUDA_FIXED_ORDER=1 every
                                      state, =0 none */
    int lm_fixed;                  /* calls that want no logits take the LM head on the
                                      fixed-order kernel, the argmax in its epilogue, whatever
                                      route the layers take (CLLM_CUDA_LM_HEAD=fixed; cublas:
                                      on the layers' route, the default) */
    int fuse;                      /* on the fixed-order route, the residual adds and SwiGLU
                                      in the products' epilogues (CLLM_CUDA_FUSE=0: never) */
    int fuse_rope;                 /* ... and bias + RoPE + the cache write (qkv_rope_fusable) */
    int pdl;                       /* every kernel after a call's copies starts while its
                                      predecessor runs (programmatic dependent launch, sm_90;
                                      common.h): CLLM_CUDA_PDL=0 or CLLM_CUDA_FWD_NO_PDL: never */
    fwd_graph graphs[GRAPH_SLOTS];
    unsigned long long calls;      /* forward calls, the graphs' LRU clock */
    fwd_stats stats;
};

/* ---- devices -------------------------------------------------------------- */

extern "C" int cllm_cuda_device_count(int *n, int *driver) {
    *n = 0;
    *driver = 0;
    cudaError_t e = cudaGetDeviceCount(n);
    /* No libcuda at all: the runtime says the driver is insufficient (or, in
     * some versions, that there is no device). */
    if (e == cudaErrorInsufficientDriver) {
        (void)cudaGetLastError();
        *n = 0;
        return 0;
    }
    int version = 0;
    if (cudaDriverGetVersion(&version) == cudaSuccess && version > 0) *driver = 1;
    if (e == cudaErrorNoDevice) {
        (void)cudaGetLastError();
        *n = 0;
        return 0;
    }
    if (e != cudaSuccess) *n = 0;
    return CUDA_CHECK(e);
}

/* ---- start-up ------------------------------------------------------------ */

/* Creating device 0's primary context (CUDA's own start: the driver, the
 * context, the module loads) needs nothing from the model, so
 * cllm_cuda_warm_start begins it on a thread while the caller loads the
 * model, and the model upload waits for it. The runtime is thread-safe and
 * the context is the process's, so the main thread's calls use it. What the
 * thread's call returns is not kept: a context that cannot be made fails
 * again at the upload's first call, which reports it (an error is the
 * calling thread's, so nothing is left for the main thread to trip on). If
 * the thread cannot be started, the context is made by the first call, as
 * without the warm-up. */
static pthread_t warm_thread;
static int warm_running, warm_atexit, warm_made;   /* warm_made: a thread made the context */
static double warm_make_s, warm_wait_s;   /* CLLM_CUDA_STATS: the context's making, the upload's wait for it */
static double warm_t0;                     /* when cllm_cuda_warm_start began (the model load, beside it) */

static void *warm_main(void *) {
    double t0 = cllm_now_s();
    (void)cudaFree(0);   /* the first runtime call that needs a context makes it */
    warm_make_s = cllm_now_s() - t0;
    return NULL;
}

static void warm_join(void) {
    if (!warm_running) return;
    double t0 = cllm_now_s();
    (void)pthread_join(warm_thread, NULL);   /* fails only for a thread that is not joinable */
    warm_wait_s += cllm_now_s() - t0;
    warm_running = 0;
    warm_made = 1;
}

extern "C" void cllm_cuda_warm_start(void) {
    if (warm_running) return;
    warm_t0 = cllm_now_s();
    if (!warm_atexit) warm_atexit = atexit(warm_join) == 0;   /* no exit while the thread is in the driver */
    if (warm_atexit && pthread_create(&warm_thread, NULL, warm_main, NULL) == 0) warm_running = 1;
}

extern "C" int cllm_cuda_device_name(char *buf, size_t size) {
    /* the device this thread uses (a rank's own under NCCL), not device 0 */
    cudaDeviceProp p;
    int dev = 0, rc = CUDA_CHECK(cudaGetDevice(&dev));
    if (!rc) rc = CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    if (rc) return rc;
    snprintf(buf, size, "%s (sm_%d%d, %d SMs, %zu MiB)", p.name, p.major, p.minor,
             p.multiProcessorCount, (size_t)(p.totalGlobalMem >> 20));
    return 0;
}

/* ---- model upload ------------------------------------------------------- */

typedef struct arena {
    char *base;                    /* NULL: only measure */
    size_t off;
} arena;

static void *take(arena *a, size_t bytes) {
    size_t at = (a->off + 255) & ~(size_t)255;
    a->off = at + bytes;
    return a->base ? a->base + at : NULL;
}

/* The bf16 weights go up through two pinned buffers of UPLOAD_CHUNK
 * elements: the host converts a chunk into one (on the start-up threads:
 * startup.h) while the other's copy runs (asynchronous on a stream of the
 * upload's own), where one pageable buffer had each conversion and each copy
 * wait for the other. */
enum { UPLOAD_CHUNK = 4 << 20 };
typedef struct uploader {
    uint16_t *buf[2];              /* pinned, UPLOAD_CHUNK elements each */
    cudaEvent_t copied[2];         /* buf[i]'s last copy is done */
    cudaStream_t stream;
    int cur;                       /* the buffer being filled */
    size_t fill;                   /* elements in it */
    floatX *dst;                   /* where they go */
} uploader;

static int uploader_init(uploader *u) {
    memset(u, 0, sizeof *u);
    int rc;
    for (int i = 0; i < 2; i++)
        if ((rc = CUDA_MALLOC_HOST(&u->buf[i], UPLOAD_CHUNK * sizeof(uint16_t), "the weights' upload")) ||
            (rc = CUDA_CHECK(cudaEventCreate(&u->copied[i]))))
            return rc;
    return CUDA_CHECK(cudaStreamCreateWithFlags(&u->stream, cudaStreamNonBlocking));
}

/* The filled buffer's copy on its way; the other buffer free to fill */
static int uploader_flush(uploader *u) {
    if (!u->fill) return 0;
    int b = u->cur, rc;
    if ((rc = CUDA_CHECK(cudaMemcpyAsync(u->dst, u->buf[b], u->fill * sizeof(uint16_t), cudaMemcpyHostToDevice,
                                         u->stream))) ||
        (rc = CUDA_CHECK(cudaEventRecord(u->copied[b], u->stream))))
        return rc;
    u->dst += u->fill;
    u->fill = 0;
    u->cur = 1 - b;
    return CUDA_CHECK(cudaEventSynchronize(u->copied[u->cur]));   /* not yet recorded: returns at once */
}

/* every copy done (rc: the upload's result so far), the buffers freed */
static int uploader_end(uploader *u, int rc) {
    if (u->stream) {
        int r2 = CUDA_CHECK(cudaStreamSynchronize(u->stream));
        if (!rc) rc = r2;
        (void)cudaStreamDestroy(u->stream);
    }
    for (int i = 0; i < 2; i++) {
        if (u->copied[i]) (void)cudaEventDestroy(u->copied[i]);
        if (u->buf[i]) (void)cudaFreeHost(u->buf[i]);
    }
    memset(u, 0, sizeof *u);
    return rc;
}

/* Upload n_parts host fp32 arrays (each numel[i]) end to end as bf16 into dst
 * (the buffer empty on entry: every call ends with a flush). */
static int put_bf16(uploader *u, floatX *dst, const float *const *parts, const size_t *numel, int n_parts) {
    int rc = 0;
    u->dst = dst;
    for (int p = 0; p < n_parts && !rc; p++)
        for (size_t i = 0; i < numel[p] && !rc;) {
            size_t n = numel[p] - i < UPLOAD_CHUNK - u->fill ? numel[p] - i : UPLOAD_CHUNK - u->fill;
            cllm_startup_f32_to_bf16(parts[p] + i, u->buf[u->cur] + u->fill, n);
            u->fill += n;
            i += n;
            if (u->fill == UPLOAD_CHUNK) rc = uploader_flush(u);
        }
    return rc ? rc : uploader_flush(u);
}

/* fp32 pieces (norms, biases) from the model's memory as they are, on the same stream (the
 * model, and inv, outlive the upload's last synchronization) */
static int put_f32(uploader *u, float *dst, const float *src, size_t n) {
    return CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyHostToDevice, u->stream));
}

/* Lay out (a->base NULL: measure) or fill the model's pieces. */
static void layout(cllm_cuda_model *dm, arena *a) {
    const cllm_config *c = &dm->cfg;
    size_t C = c->d_model, V = c->vocab, F = c->d_ff, QKV = dm->QKV, QD = dm->QD;
    dm->wte = (floatX *)take(a, V * C * 2);
    dm->lm_head = c->tied ? dm->wte : (floatX *)take(a, V * C * 2);
    dm->out_norm = (float *)take(a, C * 4);
    dm->inv_freq = (float *)take(a, (size_t)(c->rope_dim / 2 + 1) * 4);
    for (int l = 0; l < c->n_layer; l++) {
        cuda_layer *L = &dm->layers[l];
        L->attn_norm = (float *)take(a, C * 4);
        L->ffn_norm = (float *)take(a, C * 4);
        L->wqkv = (floatX *)take(a, QKV * C * 2);
        L->bqkv = c->qkv_bias ? (float *)take(a, QKV * 4) : NULL;
        L->wo = (floatX *)take(a, C * QD * 2);
        L->wgu = (floatX *)take(a, 2 * F * C * 2);
        L->wdown = (floatX *)take(a, C * F * 2);
    }
}

/* CLLM_CUDA_STATS (or CLLM_CUDA_PROFILE) asks for the diagnostics on stderr */
static int stats_wanted(void) {
    const char *st = getenv("CLLM_CUDA_STATS"), *pr = getenv("CLLM_CUDA_PROFILE");
    return (pr && strcmp(pr, "0") && *pr) || (st && strcmp(st, "0") && *st);
}

extern "C" void cllm_cuda_model_free(cllm_cuda_model *dm) {
    if (!dm) return;
    double t0 = cllm_now_s();
    if (dm->mem) (void)cudaFree(dm->mem);
    free(dm->layers);
    free(dm);
    if (stats_wanted()) fprintf(stderr, "cllm: CUDA model: freed in %.3f s\n", cllm_now_s() - t0);
}

extern "C" const cllm_config *cllm_cuda_model_config(const cllm_cuda_model *dm) { return &dm->cfg; }
extern "C" size_t cllm_cuda_model_bytes(const cllm_cuda_model *dm) { return dm->bytes; }
extern "C" int cllm_cuda_model_max_keys(const cllm_cuda_model *dm) { return dm->max_keys; }

extern "C" int cllm_cuda_model_upload(cllm_cuda_model **out, const cllm_model *m) {
    *out = NULL;
    warm_join();
    double t_upload = cllm_now_s(), load_s = warm_t0 > 0 ? t_upload - warm_t0 : 0;
    const cllm_config *c = &m->cfg;
    int C = c->d_model, HS = c->head_dim, NH = c->n_head, NKV = c->n_head_kv, F = c->d_ff;
    if (C % 2 || C > 8192 || HS % 8 || HS > 256 || NKV < 1 || NH % NKV || c->rope_dim % 2 || c->rope_dim > HS)
        return cllm_error(CLLM_EUNSUP,
                          "CUDA: model shape not supported (d_model %d must be even, at most 8192 (RMSNorm's "
                          "row); head size %d a multiple of 8 up to 256; %d heads over %d kv heads; rope_dim %d)",
                          C, HS, NH, NKV, c->rope_dim);
    cllm_cuda_model *dm = (cllm_cuda_model *)calloc(1, sizeof *dm);
    if (!dm) return cllm_error(CLLM_ENOMEM, "CUDA: out of host memory");
    dm->cfg = *c;
    dm->QD = NH * HS;
    dm->KD = NKV * HS;
    dm->QKV = dm->QD + 2 * dm->KD;
    dm->layers = (cuda_layer *)calloc((size_t)c->n_layer, sizeof(cuda_layer));
    float *inv = (float *)malloc((size_t)(c->rope_dim / 2 + 1) * sizeof(float));
    uploader up;
    int rc = uploader_init(&up);
    if (rc) goto out;
    if (!dm->layers || !inv) {
        rc = cllm_error(CLLM_ENOMEM, "CUDA: out of host memory for the upload");
        goto out;
    }
    if ((rc = attention_max_keys(HS, &dm->max_keys))) goto out;
    {
        arena a = {NULL, 0};
        layout(dm, &a);
        dm->bytes = a.off;
        if ((rc = CUDA_MALLOC(&dm->mem, dm->bytes, "the model's weights (bf16)"))) goto out;
        a.base = (char *)dm->mem;
        a.off = 0;
        layout(dm, &a);
    }
    {
        size_t nV = (size_t)c->vocab * C;
        if ((rc = put_bf16(&up, dm->wte, &m->tok_emb, &nV, 1))) goto out;
        if (!c->tied && (rc = put_bf16(&up, dm->lm_head, &m->lm_head, &nV, 1))) goto out;
        if ((rc = put_f32(&up, dm->out_norm, m->out_norm, (size_t)C))) goto out;
        /* RoPE's inverse frequencies exactly as kernels/cpu/rope.c computes them */
        int half = c->rope_dim / 2;
        for (int i = 0; i < half; i++) {
            float expo = (float)(2 * i) / (float)c->rope_dim;
            inv[i] = 1.0f / powf(c->rope_theta, expo);
        }
        inv[half] = 0.0f;
        if ((rc = put_f32(&up, dm->inv_freq, inv, (size_t)half + 1))) goto out;
        size_t QD = dm->QD, KD = dm->KD;
        for (int l = 0; l < c->n_layer; l++) {
            const cllm_layer_weights *w = &m->layers[l];
            cuda_layer *L = &dm->layers[l];
            const float *qkv[3] = {w->wq, w->wk, w->wv};
            size_t nqkv[3] = {QD * C, KD * C, KD * C};
            const float *gu[2] = {w->w_gate, w->w_up};
            size_t ngu[2] = {(size_t)F * C, (size_t)F * C};
            size_t no = (size_t)C * QD, nd = (size_t)C * F;
            if ((rc = put_f32(&up, L->attn_norm, w->attn_norm, (size_t)C)) ||
                (rc = put_f32(&up, L->ffn_norm, w->ffn_norm, (size_t)C)) ||
                (rc = put_bf16(&up, L->wqkv, qkv, nqkv, 3)) ||
                (rc = put_bf16(&up, L->wo, &w->wo, &no, 1)) ||
                (rc = put_bf16(&up, L->wgu, gu, ngu, 2)) ||
                (rc = put_bf16(&up, L->wdown, &w->w_down, &nd, 1)))
                goto out;
            if (L->bqkv) {
                if ((rc = put_f32(&up, L->bqkv, w->bq, QD)) || (rc = put_f32(&up, L->bqkv + QD, w->bk, KD)) ||
                    (rc = put_f32(&up, L->bqkv + QD + KD, w->bv, KD)))
                    goto out;
            }
        }
    }
out:
    rc = uploader_end(&up, rc);   /* its stream synchronized: every copy has landed (see the top) */
    free(inv);
    if (rc) {
        cllm_cuda_model_free(dm);
        return rc;
    }
    dm->upload_s = cllm_now_s() - t_upload;
    dm->load_s = load_s;
    *out = dm;
    return 0;
}

/* ---- KV cache ------------------------------------------------------------- */

extern "C" int cllm_cuda_kv_init(cllm_cuda_kv *kv, const cllm_cuda_model *dm, int n_seq, int cap) {
    memset(kv, 0, sizeof *kv);
    const cllm_config *c = &dm->cfg;
    if (n_seq < 1 || cap < 1)
        return cllm_error(CLLM_EINVAL, "CUDA KV cache: bad size (%d sequences of %d positions)", n_seq, cap);
    if (cap > dm->max_keys)
        return cllm_error(CLLM_ELIMIT, "CUDA KV cache: %d positions exceed the attention kernel's "
                          "%d on this device", cap, dm->max_keys);
    kv->n_layer = c->n_layer;
    kv->n_seq = n_seq;
    kv->cap = cap;
    kv->kv_dim = dm->KD;
    kv->max_cap = dm->max_keys;
    size_t n = 0;   /* n_seq + 1: the scratch sequence of padding rows */
    if (cllm_mul_size((size_t)kv->n_layer * (n_seq + 1), (size_t)cap, &n) ||
        cllm_mul_size(n, (size_t)kv->kv_dim * sizeof(floatX), &n))
        return cllm_error(CLLM_ELIMIT, "CUDA KV cache too large (%d sequences of %d positions)", n_seq, cap);
    int rc;
    kv->len = (int *)calloc((size_t)n_seq, sizeof(int));
    if (!kv->len) return cllm_error(CLLM_ENOMEM, "CUDA KV cache: out of host memory");
    if ((rc = CUDA_MALLOC(&kv->k, n, "the KV cache's keys")) ||
        (rc = CUDA_MALLOC(&kv->v, n, "the KV cache's values")) ||
        (rc = CUDA_CHECK(cudaMemset(kv->k, 0, n))) || (rc = CUDA_CHECK(cudaMemset(kv->v, 0, n))) ||
        (rc = CUDA_CHECK(cudaDeviceSynchronize()))) {   /* the memsets are done before any forward */
        cllm_cuda_kv_free(kv);
        return rc;
    }
    return 0;
}

extern "C" void cllm_cuda_kv_free(cllm_cuda_kv *kv) {
    if (!kv) return;
    double t0 = cllm_now_s();
    int had = kv->k != NULL;
    if (kv->k) (void)cudaFree(kv->k);
    if (kv->v) (void)cudaFree(kv->v);
    free(kv->len);
    memset(kv, 0, sizeof *kv);
    if (had && stats_wanted()) fprintf(stderr, "cllm: CUDA KV cache: freed in %.3f s\n", cllm_now_s() - t0);
}

extern "C" int cllm_cuda_kv_len(const cllm_cuda_kv *kv, int seq) {
    return (seq >= 0 && seq < kv->n_seq) ? kv->len[seq] : 0;
}

extern "C" int cllm_cuda_kv_rollback(cllm_cuda_kv *kv, int seq, int len) {
    if (seq < 0 || seq >= kv->n_seq)
        return cllm_error(CLLM_EINVAL, "CUDA KV cache: no sequence %d (have %d)", seq, kv->n_seq);
    if (len < 0 || len > kv->len[seq])
        return cllm_error(CLLM_EINVAL, "CUDA KV cache: cannot roll sequence %d of length %d back to %d",
                          seq, kv->len[seq], len);
    kv->len[seq] = len;
    return 0;
}

extern "C" int cllm_cuda_kv_grow(cllm_cuda_kv *kv, int cap) {
    if (cap <= kv->cap) return 0;
    if (cap > kv->max_cap)
        return cllm_error(CLLM_ELIMIT, "CUDA KV cache: %d positions exceed the attention kernel's "
                          "%d on this device", cap, kv->max_cap);
    cllm_cuda_kv nk = *kv;
    nk.cap = cap;
    nk.k = nk.v = NULL;
    size_t n = 0, KD = (size_t)kv->kv_dim, S1 = (size_t)kv->n_seq + 1;   /* + scratch (not copied) */
    if (cllm_mul_size((size_t)kv->n_layer * S1, (size_t)cap, &n) ||
        cllm_mul_size(n, KD * sizeof(floatX), &n))
        return cllm_error(CLLM_ELIMIT, "CUDA KV cache too large (%d sequences of %d positions)", kv->n_seq, cap);
    int rc;
    if ((rc = CUDA_MALLOC(&nk.k, n, "the KV cache's keys")) || (rc = CUDA_MALLOC(&nk.v, n, "the KV cache's values")))
        goto fail;
    for (int l = 0; l < kv->n_layer; l++)
        for (int sq = 0; sq < kv->n_seq; sq++) {
            size_t from = ((size_t)l * S1 + sq) * kv->cap * KD;
            size_t to = ((size_t)l * S1 + sq) * cap * KD;
            size_t bytes = (size_t)kv->len[sq] * KD * sizeof(floatX);
            if (!bytes) continue;
            if ((rc = CUDA_CHECK(cudaMemcpy((floatX *)nk.k + to, (const floatX *)kv->k + from, bytes,
                                            cudaMemcpyDeviceToDevice))) ||
                (rc = CUDA_CHECK(cudaMemcpy((floatX *)nk.v + to, (const floatX *)kv->v + from, bytes,
                                            cudaMemcpyDeviceToDevice))))
                goto fail;
        }
    /* the copies (asynchronous: device to device) are done before the old
     * cache goes and the forward reads the new one */
    if ((rc = CUDA_CHECK(cudaDeviceSynchronize()))) goto fail;
    (void)cudaFree(kv->k);
    (void)cudaFree(kv->v);
    kv->k = nk.k;
    kv->v = nk.v;
    kv->cap = cap;
    return 0;
fail:
    if (nk.k) (void)cudaFree(nk.k);
    if (nk.v) (void)cudaFree(nk.v);
    return rc;
}

/* ---- forward state -------------------------------------------------------- */

static void stats_print(const fwd_stats *t, const cllm_cuda_model *dm) {
    if (!t->on) return;
    if (warm_made)
        fprintf(stderr,
                "cllm: CUDA start-up: context %.3f s (on a thread beside the model load, %.3f s; the upload waited "
                "%.3f s for it), model upload %.3f s\n",
                warm_make_s, dm->load_s, warm_wait_s, dm->upload_s);
    else   /* no cllm_fwd_prepare: the context came with the first call */
        fprintf(stderr, "cllm: CUDA start-up: context not made ahead, model upload %.3f s\n", dm->upload_s);
    fprintf(stderr, "cllm: CUDA forward state: made in %.3f s (%.0f MiB of activations, cuBLAS' handle)\n",
            t->t_init, (double)t->bytes / (1 << 20));
    if (!t->calls) return;
    fprintf(stderr,
            "cllm: CUDA forward: %llu calls, %llu rows (%llu of them padding): %llu graph launches (host "
            "%.3f s, launch and wait), %llu captures (%.3f s), %llu op by op (%.3f s enqueue, %.3f s wait)\n",
            t->calls, t->rows, t->pad_rows, t->graph_runs, t->t_graph, t->captures, t->t_capture,
            t->plain_runs, t->t_plain, t->t_wait);
    cuda_op_profile_print(&t->prof, "forward");
}

extern "C" unsigned long long cllm_cuda_fwd_pad_rows(const cllm_cuda_fwd *f) {
    return f && f->st ? f->st->stats.pad_rows : 0;
}

extern "C" int cllm_cuda_fwd_batch_invariant(const cllm_cuda_fwd *f) {
    const struct cllm_cuda_state *s = f->st;
    /* the few-row path and the bulk route sum differently: a state with both
     * gives a row other bits in a 16-row call than in a larger one */
    if (s->mm16) return 0;
    if (s->gemm_rows >= 0) return s->gemm_rows > 0;
    return s->fixed_order_ok && s->fixed_order_all;
}

extern "C" int cllm_cuda_fwd_one_route(const cllm_cuda_fwd *f) {
    const struct cllm_cuda_state *s = f->st;
    if (s->mm16) return 0;                     /* calls of up to 16 decoding rows take matmul16.cu */
    if (s->gemm_rows >= 0) return 1;           /* every product of every call through cuBLAS */
    return s->fixed_order_ok && s->fixed_order_all;
}

extern "C" unsigned long long cllm_cuda_fwd_fused_enqueues(const cllm_cuda_fwd *f) {
    return f && f->st ? f->st->stats.fused_enqueues : 0;
}

extern "C" unsigned long long cllm_cuda_fixed_order_split_launches(void) { return matmul_fixed_order_split_launches(); }

extern "C" void cllm_cuda_fixed_order_launches(unsigned long long *tile64, unsigned long long *tile128) {
    matmul_fixed_order_launches(tile64, tile128);
}

extern "C" void cllm_cuda_fwd_free(cllm_cuda_fwd *f) {
    if (!f) return;
    struct cllm_cuda_state *s = f->st;
    int stats_on = s && s->stats.on;
    double t0 = cllm_now_s();
    if (s) {
        stats_print(&s->stats, f->m);
        t0 = cllm_now_s();
        cuda_op_profile_free(&s->stats.prof);
        for (int i = 0; i < GRAPH_SLOTS; i++)
            if (s->graphs[i].exec) (void)cudaGraphExecDestroy(s->graphs[i].exec);
        if (s->cublas_ws) (void)cudaFree(s->cublas_ws);
        if (s->cublas) (void)cublasDestroy(s->cublas);
        if (s->stream) (void)cudaStreamDestroy(s->stream);
        if (s->mem) (void)cudaFree(s->mem);
        if (s->meta_h) (void)cudaFreeHost(s->meta_h);
        if (s->argmax_h) (void)cudaFreeHost(s->argmax_h);
        free(s);
    }
    if (f->argmax) (void)cudaFreeHost(f->argmax);
    if (f->logits) (void)cudaFreeHost(f->logits);
    memset(f, 0, sizeof *f);
    if (stats_on)   /* the teardown's share of a short run's time (docs/CUDA.md, "Start-up on the CPUs") */
        fprintf(stderr, "cllm: CUDA forward state: freed in %.3f s (its graphs, activations and cuBLAS' handle)\n",
                cllm_now_s() - t0);
}

enum { PROMPT_GEMM_ROWS = 64 };
/* K slices of the fixed-order products: SmolLM2's K of 576 in 2 (384 + 192),
 * its down product's 1,536 in 4 (6 chunks of 64 a block); the workspace
 * holds calls of up to MT_WS_ROWS rows (cllm-traj at --batch 64: 1,152),
 * larger ones go in pieces. Round 6 (H200, cllm-traj --batch 64, same run):
 * slices of 384 15.5-15.9k tokens/s, 192 14.6k, 96 11.9k, K in one piece
 * 14.8-15.2k. The row tile: 64 for every product (CLLM_CUDA_MT_ROWS=auto:
 * 128 for the large ones), 1.06x the tiles by shape there. */
enum { MT_KSLICE_DEFAULT = 384, MT_ROWS_DEFAULT = 64, MT_WS_ROWS = 2048 };

/* How the products of a call of R rows, N of them LM-head rows, are made
 * (matmul_forward's rows_per_call). A call with prompt rows (N < R: prompt
 * chunks, whose lengths depend on how the batch's row budget cut them) must
 * give each row what it would give in any other cut, so a prompt's cache and
 * first token do not depend on --batch (on an H200, one cuBLAS call per
 * chunk made cllm-gen --batch 8 part from --batch 1): matmul.cu's
 * fixed-order kernel, one launch whatever R (where the inner sizes are
 * multiples of 16; else cuBLAS in 64-row pieces, one shape, at the price of
 * R/64 launches a product). A call of decoding steps only (N == R: windows,
 * AR steps) is one cuBLAS product per matrix, except in states that take
 * the fixed-order kernel for every call (fixed_order_all: cllm-traj
 * --batch-invariant's, CLLM_CUDA_FWD_INVARIANT; any state with
 * CLLM_CUDA_FIXED_ORDER=1; none with =0): batch-invariant by construction,
 * so a window's results do not depend on --batch, on the rows fed beside it
 * or on the prompt rows sharing its call. gemm_rows overrides all of these:
 * cllm-traj's default state (bulk) sends every product through cuBLAS, one
 * call each (gemm_rows 0), as does CLLM_CUDA_GEMM_ROWS=0 anywhere. */
static int call_gemm_rows(const struct cllm_cuda_state *s, int R, int N) {
    if (s->gemm_rows >= 0) return s->gemm_rows;
    if (N == R && !(s->fixed_order_ok && s->fixed_order_all)) return 0;
    return s->fixed_order_ok ? (int)MATMUL_FIXED_ORDER : (int)PROMPT_GEMM_ROWS;
}

/* Activations for R rows; the inputs and outputs of the products for R
 * rounded up to a multiple of the largest piece (the last piece runs past R). */
static void state_layout(struct cllm_cuda_state *s, const cllm_cuda_model *dm, int R, arena *a) {
    const cllm_config *c = &dm->cfg;
    size_t G = s->gemm_rows > 0 ? s->gemm_rows : s->gemm_rows == 0 || s->fixed_order_ok ? 1 : PROMPT_GEMM_ROWS;
    size_t n = ((size_t)R + G - 1) / G * G, C = c->d_model, F = c->d_ff, V = c->vocab;
    s->x = (float *)take(a, n * C * 4);
    s->xn = (floatX *)take(a, n * C * 2);
    s->qkv = (float *)take(a, n * dm->QKV * 4);
    s->q = (float *)take(a, n * dm->QD * 4);
    s->ao = (floatX *)take(a, n * dm->QD * 2);
    s->proj = (float *)take(a, n * C * 4);
    s->gu = (float *)take(a, n * 2 * F * 4);
    s->h = (floatX *)take(a, n * F * 2);
    s->logits = (float *)take(a, n * V * 4);
    s->meta_d = (int *)take(a, META_INTS((size_t)R) * 4);
    s->argmax_d = (argmax_key_t *)take(a, (size_t)R * 8);
    /* the fixed-order products' K slices: the largest workspace and ticket count of a layer's
     * four products (qkv, wo, gate/up, down) */
    size_t ws = 0, tk = 0;
    int wr = R < s->mt.ws_rows ? R : s->mt.ws_rows, ks = s->mt.kslice;   /* ws_rows: the cap (init) */
    if (s->fixed_order_ok && ks > 0) {
        const int prod[4][2] = {{dm->QKV, c->d_model}, {c->d_model, dm->QD}, {2 * c->d_ff, c->d_model},
                                {c->d_model, c->d_ff}};   /* W rows, K */
        for (int i = 0; i < 4; i++) {
            size_t w = matmul_fixed_order_ws_floats(wr, prod[i][0], prod[i][1], ks);
            size_t t = matmul_fixed_order_tickets(wr, prod[i][0], prod[i][1], ks);
            if (w > ws) ws = w;
            if (t > tk) tk = t;
        }
    }
    s->mt.ws = ws ? (float *)take(a, ws * 4) : NULL;
    s->mt.ws_floats = ws;
    s->mt.tickets = tk ? (unsigned *)take(a, tk * 4) : NULL;   /* zeroed with the rest at init */
    s->mt.n_tickets = tk;
    s->mt.ws_rows = wr;
}

/* A CLLM_CUDA_* switch: unset or empty leaves *v as it is (the default), "0"
 * and "1" set it, anything else is refused (CLLM_EINVAL). Read as "1 or
 * not", CLLM_CUDA_FIXED_ORDER=on turned --batch-invariant's fixed-order
 * route off without a word; read as "0 or not", CLLM_CUDA_GRAPHS=off left
 * graphs on. */
static int env_switch(const char *name, int *v) {
    const char *e = getenv(name);
    if (!e || !*e) return 0;
    if ((e[0] != '0' && e[0] != '1') || e[1]) return cllm_error(CLLM_EINVAL, "%s=%s: 0 or 1", name, e);
    *v = e[0] == '1';
    return 0;
}

/* A CLLM_CUDA_* number: *v = its value, or `bad` when it is not one whole
 * decimal number (atoi took "128x" as 128 and "16k" as 16) */
static void env_number(const char *e, long bad, long *v) {
    char *end = NULL;
    long x = strtol(e, &end, 10);
    *v = end == e || *end ? bad : x;
}

extern "C" int cllm_cuda_fwd_init(cllm_cuda_fwd *f, const cllm_cuda_model *dm, int max_rows, int flags) {
    int want_logits = (flags & CLLM_CUDA_FWD_LOGITS) != 0;
    double t_init = cllm_now_s();
    memset(f, 0, sizeof *f);
    if (max_rows < 1 || max_rows > 65535)
        return cllm_error(CLLM_EINVAL, "CUDA forward: bad maximum row count %d (1..65535)", max_rows);
    f->m = dm;
    f->max_rows = max_rows;
    f->want_logits = want_logits != 0;
    struct cllm_cuda_state *s = (struct cllm_cuda_state *)calloc(1, sizeof *s);
    if (!s) return cllm_error(CLLM_ENOMEM, "CUDA forward: out of host memory");
    f->st = s;
    size_t R = (size_t)max_rows, V = dm->cfg.vocab;
    /* the on/off switches (docs/CUDA.md, cllm(7)): 0 or 1 */
    int sw_mm16 = 1, sw_att1 = 0, sw_fixed = (flags & CLLM_CUDA_FWD_INVARIANT) != 0, sw_ldsm = 1, sw_fuse = 1,
        sw_pdl = 1, sw_graphs = 1, rc_sw;
    if ((rc_sw = env_switch("CLLM_CUDA_MM16", &sw_mm16)) || (rc_sw = env_switch("CLLM_CUDA_ATTENTION", &sw_att1)) ||
        (rc_sw = env_switch("CLLM_CUDA_FIXED_ORDER", &sw_fixed)) || (rc_sw = env_switch("CLLM_CUDA_LDSM", &sw_ldsm)) ||
        (rc_sw = env_switch("CLLM_CUDA_FUSE", &sw_fuse)) || (rc_sw = env_switch("CLLM_CUDA_PDL", &sw_pdl)) ||
        (rc_sw = env_switch("CLLM_CUDA_GRAPHS", &sw_graphs))) {
        cllm_cuda_fwd_free(f);
        return rc_sw;
    }
    {
        const cllm_config *c = &dm->cfg;
        s->mm16 = sw_mm16 && !(flags & (CLLM_CUDA_FWD_BULK | CLLM_CUDA_FWD_INVARIANT)) && mm16_supported(c->d_model) &&
                  mm16_supported(dm->QD) && mm16_supported(c->d_ff);
        s->mm16_rope = s->mm16 && qkv_rope_fusable(c->n_head, c->n_head_kv, c->head_dim, c->rope_dim);
        s->att_tiled = !sw_att1 && attention_tiled_supported(c->head_dim);
        const char *an = getenv("CLLM_CUDA_ATT_THREADS");
        long at_n = 256;
        if (an && *an) env_number(an, -1, &at_n);
        s->att_threads = at_n >= 0 && at_n <= 1024 ? (int)at_n : -1;
        if (!attention_threads_supported(s->att_threads)) {
            cllm_cuda_fwd_free(f);
            return cllm_error(CLLM_EINVAL, "CLLM_CUDA_ATT_THREADS=%s: 128, 256 or 512", an);
        }
        s->fixed_order_ok = c->d_model % 16 == 0 && dm->QD % 16 == 0 && c->d_ff % 16 == 0;
        const char *mr = getenv("CLLM_CUDA_MT_ROWS");
        s->mt.rows = !mr || !*mr            ? MT_ROWS_DEFAULT
                     : !strcmp(mr, "auto") ? 0
                     : !strcmp(mr, "64")   ? 64
                     : !strcmp(mr, "128")  ? 128
                                           : -1;
        if (s->mt.rows < 0) {
            cllm_cuda_fwd_free(f);
            return cllm_error(CLLM_EINVAL, "CLLM_CUDA_MT_ROWS=%s: auto, 64 or 128", mr);
        }
        const char *ks = getenv("CLLM_CUDA_MT_KSLICE");
        char *end = NULL;
        long kv = ks && *ks ? strtol(ks, &end, 10) : (long)MT_KSLICE_DEFAULT;
        if (ks && *ks && (*end || kv < 0 || kv > 65536 || kv % 16)) {
            cllm_cuda_fwd_free(f);
            return cllm_error(CLLM_EINVAL, "CLLM_CUDA_MT_KSLICE=%s: 0 (K in one piece) or a multiple of 16 up to 65536",
                              ks);
        }
        s->mt.kslice = (int)kv;
        /* tests: a smaller workspace, so that calls go in pieces of rows */
        const char *wr = getenv("CLLM_CUDA_MT_WS_ROWS");
        long ws_n = MT_WS_ROWS;
        if (wr && *wr) env_number(wr, -1, &ws_n);
        s->mt.ws_rows = ws_n >= 1 && ws_n <= 65535 ? (int)ws_n : -1;
        if (s->mt.ws_rows < 1) {
            cllm_cuda_fwd_free(f);
            return cllm_error(CLLM_EINVAL, "CLLM_CUDA_MT_WS_ROWS=%s: 1..65535", wr);
        }
        /* The LM head of a cuBLAS call wants no logits but writes them all (fp32, rows x
         * 49,152 for SmolLM2) for the argmax kernel to read back: round 7's profile (H200,
         * cllm-traj --batch 64, op by op) put it at 708 us + 69 us of argmax a call of 518
         * rows, where round 5's fixed-order LM head with the argmax in its epilogue took
         * 182 us at 555 rows. Not yet measured side by side: gpu-check 3c and test_cuda's
         * bench do, and then this is the candidate for the default. */
        const char *lh = getenv("CLLM_CUDA_LM_HEAD");
        if (lh && *lh && strcmp(lh, "fixed") && strcmp(lh, "cublas")) {
            cllm_cuda_fwd_free(f);
            return cllm_error(CLLM_EINVAL, "CLLM_CUDA_LM_HEAD=%s: fixed or cublas", lh);
        }
        s->lm_fixed = lh && !strcmp(lh, "fixed") && s->fixed_order_ok;
        s->fixed_order_all = sw_fixed;
        s->mt.ldsm = sw_ldsm;
        s->fuse = sw_fuse && c->d_ff % 8 == 0;
        s->fuse_rope = s->fuse && qkv_rope_fusable(c->n_head, c->n_head_kv, c->head_dim, c->rope_dim);
        s->pdl = sw_pdl && !(flags & CLLM_CUDA_FWD_NO_PDL);
    }
    if (s->pdl) {   /* programmatic dependent launch needs sm_90 */
        int dev = 0, major = 0, rc_cc = CUDA_CHECK(cudaGetDevice(&dev));
        if (!rc_cc) rc_cc = CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        if (rc_cc) {
            cllm_cuda_fwd_free(f);
            return rc_cc;
        }
        s->pdl = major >= 9;
    }
    if (s->fixed_order_ok) {
        int rc_mt = matmul_fixed_order_init();
        if (rc_mt) {
            cllm_cuda_fwd_free(f);
            return rc_mt;
        }
    }
    /* cllm-traj's state (bulk, not fixed-order for every call): every product of every
     * call through cuBLAS, so that a tick's prompt chunks share the windows' call
     * (cllm_cuda_fwd_one_route): 1.12x the tokens/s of fixed-order prompt calls of their
     * own on an H200, round 7 (docs/CUDA.md). CLLM_CUDA_GEMM_ROWS=-1 asks for those. */
    const char *gr = getenv("CLLM_CUDA_GEMM_ROWS");
    s->gemm_rows = (flags & CLLM_CUDA_FWD_BULK) && !s->fixed_order_all ? 0 : -1;
    if (gr && *gr) {
        char *gend = NULL;
        long g = strtol(gr, &gend, 10);
        if (*gend || g < -1 || g > 4096) {
            cllm_cuda_fwd_free(f);
            return cllm_error(CLLM_EINVAL, "CLLM_CUDA_GEMM_ROWS=%s: -1 (the route by call), 0 (one cuBLAS call a "
                              "product) or a piece of up to 4096 rows", gr);
        }
        s->gemm_rows = (int)g;
    }
    arena a = {NULL, 0};
    state_layout(s, dm, max_rows, &a);
    size_t bytes = a.off;
    int rc;
    if ((rc = CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking))) ||
        (rc = CUBLAS_CHECK(cublasCreate(&s->cublas))) ||
        (rc = CUBLAS_CHECK(cublasSetStream(s->cublas, s->stream))) ||
        (rc = CUDA_MALLOC(&s->mem, bytes, "the forward's activations")) ||
        (rc = CUDA_MALLOC(&s->cublas_ws, CUBLAS_WS_BYTES, "cuBLAS' workspace")) ||
        (rc = CUBLAS_CHECK(cublasSetWorkspace(s->cublas, s->cublas_ws, CUBLAS_WS_BYTES))) ||
        (rc = CUDA_MALLOC_HOST(&s->meta_h, META_INTS(R) * sizeof(int), "the calls' row tables")) ||
        (rc = CUDA_MALLOC_HOST(&s->argmax_h, R * sizeof *s->argmax_h, "the argmax keys")) ||
        (rc = CUDA_MALLOC_HOST(&f->argmax, R * sizeof(int), "the tokens out")) ||
        (f->want_logits && (rc = CUDA_MALLOC_HOST(&f->logits, R * V * sizeof(float), "the logits out")))) {
        cllm_cuda_fwd_free(f);
        return rc;
    }
    a.base = (char *)s->mem;
    a.off = 0;
    state_layout(s, dm, max_rows, &a);
    memset(s->meta_h, 0, META_INTS(R) * sizeof(int));
    /* padding rows are read by the products: finite from the start */
    if ((rc = CUDA_CHECK(cudaMemset(s->mem, 0, bytes))) || (rc = CUDA_CHECK(cudaDeviceSynchronize()))) {
        cllm_cuda_fwd_free(f);
        return rc;
    }
    s->use_graphs = sw_graphs;
    const char *pr = getenv("CLLM_CUDA_PROFILE");
    int profile = pr && strcmp(pr, "0") && *pr;
    s->stats.on = stats_wanted();
    if (profile) s->use_graphs = 0;
    if ((rc = cuda_op_profile_init(&s->stats.prof, profile, prof_name, P_N, PROF_EVENTS))) {
        cllm_cuda_fwd_free(f);
        return rc;
    }
    s->stats.bytes = bytes;
    s->stats.t_init = cllm_now_s() - t_init;
    return 0;
}

/* ---- forward -------------------------------------------------------------- */

/* CLLM_CUDA_PROFILE: an event after op `op` (op -1 marks the call's start). */
static void mark(struct cllm_cuda_state *s, int op) { cuda_op_profile_mark(&s->stats.prof, op, s->stream); }

/* the op, then its profiling mark */
#define STEP(op, call)              \
    do {                            \
        if ((rc = (call))) return rc; \
        mark(s, (op));              \
    } while (0)

static int finish_forward(cllm_cuda_fwd *f, int N, int fused, cudaStream_t st);

/* Where layer l's bias + RoPE + cache write go (q, the cache slices, and
 * the per-row positions and slots): rope.cu's arguments, or the fused QKV
 * epilogue's (matmul16.cu). */
static qkv_rope_args layer_rope_args(cllm_cuda_fwd *f, cllm_cuda_kv *kv, int l) {
    const cllm_cuda_model *dm = f->m;
    const cllm_config *c = &dm->cfg;
    struct cllm_cuda_state *s = f->st;
    int M = f->max_rows;
    size_t layer_elems = ((size_t)kv->n_seq + 1) * kv->cap * kv->kv_dim;   /* + the scratch sequence */
    qkv_rope_args ra = {s->q, (floatX *)kv->k + (size_t)l * layer_elems, (floatX *)kv->v + (size_t)l * layer_elems,
                         dm->layers[l].bqkv, dm->inv_freq, s->meta_d + M, s->meta_d + 2 * M,
                         c->n_head, c->n_head_kv, c->head_dim, c->rope_dim, kv->cap};
    return ra;
}

/* Layer ra's bias, RoPE and cache write (unless the QKV product did them:
 * roped), then attention (tiled: attention.cu's kernel2 over the call's
 * segments, at most max_segs of them; else kernel1, a block per (head,
 * row)): qkv in, ao out. */
static int rope_attention(cllm_cuda_fwd *f, const qkv_rope_args *ra, int R, int max_keys, int roped, int tiled,
                          int max_segs) {
    struct cllm_cuda_state *s = f->st;
    int rc;
    if (!roped)
        STEP(P_ROPE, qkv_rope_forward(ra->q, ra->kc, ra->vc, s->qkv, ra->bias, ra->inv_freq, ra->pos, ra->slot, R,
                                      ra->NH, ra->NKV, ra->HS, ra->rope_dim, ra->cap, s->pdl, s->stream));
    if (tiled)
        STEP(P_ATT, attention_tiled_forward(s->ao, ra->q, ra->kc, ra->vc, ra->pos, ra->slot,
                                            s->meta_d + 4 * f->max_rows, max_segs, R, ra->NH, ra->NKV, ra->HS,
                                            ra->cap, s->pdl, s->stream));
    else
        STEP(P_ATT, attention_forward(s->ao, ra->q, ra->kc, ra->vc, ra->pos, ra->slot, R, ra->NH, ra->NKV, ra->HS,
                                      ra->cap, max_keys, s->att_threads, s->pdl, s->stream));
    return 0;
}

/* A call of up to 16 rows all through the LM head (a decode step, a Jacobi
 * window) takes matmul16.cu's few-row path, when the state has it. */
static int few_row_call(const struct cllm_cuda_state *s, int R, int N) { return s->mm16 && R <= 16 && N == R; }

/* The stream work of one call, no synchronisation (so it can be captured):
 * meta_h holds tokens, pos, slot, lm rows, attention segments; argmax (N) lands in argmax_h. */
static int enqueue_forward(cllm_cuda_fwd *f, cllm_cuda_kv *kv, int R, int N, int max_keys) {
    const cllm_cuda_model *dm = f->m;
    const cllm_config *c = &dm->cfg;
    struct cllm_cuda_state *s = f->st;
    cudaStream_t st = s->stream;
    int C = c->d_model, F = c->d_ff;
    int V = c->vocab, L = c->n_layer, M = f->max_rows, G = call_gemm_rows(s, R, N), rc;
    float eps = c->rms_eps;
    const int *tok_d = s->meta_d, *lm_d = s->meta_d + 3 * M;

    mark(s, -1);
    STEP(P_META, CUDA_CHECK(cudaMemcpyAsync(s->meta_d, s->meta_h, META_INTS((size_t)M) * sizeof(int),
                                            cudaMemcpyHostToDevice, st)));
    /* the LM head's argmax keys, where its epilogue takes the argmax
     * (atomicMax): zeroed here, so that every kernel after the copies can
     * be launched with pdl */
    int few = few_row_call(s, R, N);
    int fused_head = N > 0 && (few || ((G == MATMUL_FIXED_ORDER || s->lm_fixed) && !f->want_logits));
    if (fused_head)
        STEP(P_ARGMAX, CUDA_CHECK(cudaMemsetAsync(s->argmax_d, 0, (size_t)N * sizeof *s->argmax_d, st)));
    STEP(P_EMBED, embedding_forward(s->x, tok_d, dm->wte, R, C, st));
    int pdl = s->pdl;
    if (few) {
        /* a decode step: matmul16.cu's fused products, five launches a layer
         * (six when RoPE cannot be fused) */
        for (int l = 0; l < L; l++) {
            const cuda_layer *w = &dm->layers[l];
            qkv_rope_args ra = layer_rope_args(f, kv, l);
            if (s->mm16_rope)
                STEP(P_QKV, mm16_norm_qkv_rope_forward(&ra, s->x, w->attn_norm, eps, w->wqkv, R, C, pdl, st));
            else
                STEP(P_QKV, mm16_norm_forward(s->qkv, NULL, s->x, w->attn_norm, NULL, eps, w->wqkv, R, C, dm->QKV,
                                              pdl, st));
            if ((rc = rope_attention(f, &ra, R, max_keys, s->mm16_rope, 0, 0))) return rc;
            STEP(P_WO, mm16_residual_forward(s->x, s->ao, w->wo, R, dm->QD, C, pdl, st));
            STEP(P_GU, mm16_norm_swiglu_forward(s->h, s->x, w->ffn_norm, eps, w->wgu, R, C, F, pdl, st));
            STEP(P_DOWN, mm16_residual_forward(s->x, s->h, w->wdown, R, F, C, pdl, st));
        }
        if (N > 0)   /* the argmax in the LM head's epilogue */
            STEP(P_LM, mm16_norm_forward(s->logits, s->argmax_d, s->x, dm->out_norm, lm_d, eps, dm->lm_head, N, C, V,
                                         pdl, st));
        return finish_forward(f, N, 1, st);
    }
    /* the tiled attention's segments: each sequence's rows in runs of
     * ATT_SEG_ROWS, so at most R / ATT_SEG_ROWS plus one per sequence (the
     * cache's slots and the scratch one bound those; they are part of a
     * graph's key) */
    int max_segs = R / ATT_SEG_ROWS + kv->n_seq + 1;   /* + the scratch sequence's padding rows */
    if (max_segs > R) max_segs = R;
    /* On the fixed-order route the ops after the products go into their
     * epilogues (matmul.cu; same bits): a layer is norm, qkv + RoPE,
     * attention, wo + residual, norm, gate/up + SwiGLU, down + residual */
    int fuse = G == MATMUL_FIXED_ORDER && s->fuse, fuse_rope = fuse && s->fuse_rope;
    const mt_cfg *mt = &s->mt;
    mt_cfg head = s->mt;   /* the LM head: K in one piece (thousands of blocks without slices) */
    head.kslice = 0;
    s->stats.fused_enqueues += (unsigned long long)fuse;
    STEP(P_NORM, rmsnorm_forward(s->xn, s->x, dm->layers[0].attn_norm, NULL, R, C, eps, pdl, st));
    for (int l = 0; l < L; l++) {
        const cuda_layer *w = &dm->layers[l];
        const float *next_norm = l + 1 < L ? dm->layers[l + 1].attn_norm : dm->out_norm;
        const int *next_rows = l + 1 < L ? NULL : lm_d;
        int next_n = l + 1 < L ? R : N;
        qkv_rope_args ra = layer_rope_args(f, kv, l);
        if (fuse_rope) STEP(P_QKV, matmul_qkv_rope_forward(&ra, s->xn, w->wqkv, R, C, pdl, mt, st));
        else STEP(P_QKV, matmul_forward(s->cublas, s->qkv, s->xn, w->wqkv, R, C, dm->QKV, G, pdl, mt, st));
        if ((rc = rope_attention(f, &ra, R, max_keys, fuse_rope, s->att_tiled, max_segs))) return rc;
        if (fuse) {
            STEP(P_WO, matmul_residual_forward(s->x, s->ao, w->wo, R, dm->QD, C, pdl, mt, st));
            STEP(P_NORM, rmsnorm_forward(s->xn, s->x, w->ffn_norm, NULL, R, C, eps, pdl, st));
            STEP(P_GU, matmul_swiglu_forward(s->h, s->xn, w->wgu, R, C, F, pdl, mt, st));
            STEP(P_DOWN, matmul_residual_forward(s->x, s->h, w->wdown, R, F, C, pdl, mt, st));
            if (next_n > 0) STEP(P_NORM, rmsnorm_forward(s->xn, s->x, next_norm, next_rows, next_n, C, eps, pdl, st));
            continue;
        }
        STEP(P_WO, matmul_forward(s->cublas, s->proj, s->ao, w->wo, R, dm->QD, C, G, pdl, mt, st));
        STEP(P_NORM, residual_rmsnorm_forward(s->xn, s->x, s->proj, w->ffn_norm, NULL, R, C, eps, pdl, st));
        STEP(P_GU, matmul_forward(s->cublas, s->gu, s->xn, w->wgu, R, C, 2 * F, G, pdl, mt, st));
        STEP(P_SWIGLU, swiglu_forward(s->h, s->gu, R, F, pdl, st));
        STEP(P_DOWN, matmul_forward(s->cublas, s->proj, s->h, w->wdown, R, F, C, G, pdl, mt, st));
        if (next_n > 0)
            STEP(P_NORM, residual_rmsnorm_forward(s->xn, s->x, s->proj, next_norm, next_rows, next_n, C, eps, pdl, st));
    }
    /* no logits wanted and the fixed-order route (or lm_fixed): the argmax in
     * the product's epilogue (keys zeroed above; the logits are never written) */
    if (fused_head)
        STEP(P_LM, matmul_argmax_forward(s->argmax_d, s->xn, dm->lm_head, N, C, V, pdl, &head, st));
    else if (N > 0)
        STEP(P_LM, matmul_forward(s->cublas, s->logits, s->xn, dm->lm_head, N, C, V, G, pdl, &head, st));
    return finish_forward(f, N, fused_head, st);
}

/* After the LM head: argmax on the device (unless the LM head did it:
 * fused), the ids (and the logits, if wanted) to the host. */
static int finish_forward(cllm_cuda_fwd *f, int N, int fused, cudaStream_t st) {
    struct cllm_cuda_state *s = f->st;
    int V = f->m->cfg.vocab, M = f->max_rows, rc;
    if (N > 0) {
        if (!fused) STEP(P_ARGMAX, argmax_forward(s->argmax_d, s->logits, N, V, s->pdl, st));
        STEP(P_COPY, CUDA_CHECK(cudaMemcpyAsync(s->argmax_h, s->argmax_d, (size_t)N * sizeof *s->argmax_d,
                                                cudaMemcpyDeviceToHost, st)));
        /* logits: one copy per run of consecutive rows (one run per sequence) */
        const int *lm = s->meta_h + 3 * M;
        for (int i = 0; f->want_logits && i < N;) {
            int j = i + 1;
            while (j < N && lm[j] == lm[j - 1] + 1) j++;
            STEP(P_COPY, CUDA_CHECK(cudaMemcpyAsync(f->logits + (size_t)lm[i] * V, s->logits + (size_t)i * V,
                                                    (size_t)(j - i) * V * sizeof(float), cudaMemcpyDeviceToHost,
                                                    st)));
            i = j;
        }
    }
    return 0;
}
#undef STEP


/* The graph slot for this call's key: a hit, else a free or the least
 * recently used slot (its graph destroyed), reset to the key. */
static fwd_graph *graph_slot(struct cllm_cuda_state *s, const cllm_cuda_kv *kv, int R, int N) {
    fwd_graph *lru = &s->graphs[0];
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        fwd_graph *g = &s->graphs[i];
        if (g->seen && g->R == R && g->N == N && g->k == kv->k && g->v == kv->v && g->cap == kv->cap &&
            g->n_seq == kv->n_seq)
            return g;
        if (g->last < lru->last) lru = g;
    }
    if (lru->exec) (void)cudaGraphExecDestroy(lru->exec);
    memset(lru, 0, sizeof *lru);
    lru->R = R;
    lru->N = N;
    lru->k = kv->k;
    lru->v = kv->v;
    lru->cap = kv->cap;
    lru->n_seq = kv->n_seq;
    return lru;
}

/* Capture the call into g (attention sized for the whole cache, so one
 * graph serves every context length). */
static int capture(cllm_cuda_fwd *f, cllm_cuda_kv *kv, int R, int N, fwd_graph *g) {
    cudaStream_t st = f->st->stream;
    cudaGraph_t graph = NULL;
    int rc = CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
    if (rc) return rc;
    int rc_work = enqueue_forward(f, kv, R, N, kv->cap);
    /* After a failed enqueue the capture is invalidated: that is no news, and
     * its message must not replace the one that says what failed. */
    cudaError_t end = cudaStreamEndCapture(st, &graph);
    if (rc_work) (void)cudaGetLastError();
    else rc = CUDA_CHECK(end);
    if (!rc && !rc_work) rc = CUDA_CHECK(cudaGraphInstantiate(&g->exec, graph, 0));
    if (graph) (void)cudaGraphDestroy(graph);
    if (rc_work || rc) g->exec = NULL;
    return rc_work ? rc_work : rc;
}

/* One call: replayed from its graph once its layout has been seen before
 * (decode steps repeat a handful of layouts), else launched one by one. The
 * logits copies depend on the rows, so calls that want logits never use a
 * graph. */
static int run_forward(cllm_cuda_fwd *f, cllm_cuda_kv *kv, int R, int N, int n_out, int max_keys) {
    struct cllm_cuda_state *s = f->st;
    int M = f->max_rows, rc;
    s->calls++;
    fwd_graph *g = NULL;
    if (s->use_graphs && !f->want_logits) {
        g = graph_slot(s, kv, R, N);
        g->last = s->calls;
        if (++g->seen < 2) g = NULL;   /* seen once: run it plainly */
    }
    fwd_stats *t = &s->stats;
    double t0 = t->on ? cllm_now_s() : 0.0;
    if (g && !g->exec) {
        if ((rc = capture(f, kv, R, N, g))) return rc;
        if (t->on) {
            double t1 = cllm_now_s();
            t->captures++;
            t->t_capture += t1 - t0;
            t0 = t1;
        }
    }
    if (g) rc = CUDA_CHECK(cudaGraphLaunch(g->exec, s->stream));
    else rc = enqueue_forward(f, kv, R, N, max_keys);
    double t1 = t->on ? cllm_now_s() : 0.0;
    if (!rc) rc = CUDA_CHECK(cudaStreamSynchronize(s->stream));
    if (rc) return rc;
    if (t->on) {
        double t2 = cllm_now_s();
        t->calls++;
        t->rows += (unsigned long long)R;
        if (g) {
            t->graph_runs++;
            t->t_graph += t2 - t0;
        } else {
            t->plain_runs++;
            t->t_plain += t1 - t0;
            t->t_wait += t2 - t1;
        }
        cuda_op_profile_collect(&t->prof);
    }
    for (int i = 0; i < n_out; i++) f->argmax[s->meta_h[3 * M + i]] = argmax_key_id(s->argmax_h[i]);
    return 0;
}

/* The row count a graph-replayed call of R rows is padded to: 16 up to 16
 * rows, then multiples of 64 up to 1024, of 256 up to 4096, of 1024 beyond;
 * at most M. A batch whose rows vary from tick to tick (Jacobi windows
 * feeding only their rows that can change, prompt chunks) so replays a few
 * dozen graphs instead of launching op by op, for at most 1/16 more rows
 * (1/4 under 1024), and its cuBLAS products see a few row counts only (the
 * one at 16 rows is what a --batch 1 window call always had). Calls that
 * take the few-row path are not padded (its cost does not depend on R, nor
 * do its results). */
static int row_bucket(int R, int M) {
    int g = R <= 16 ? 16 : R <= 1024 ? 64 : R <= 4096 ? 256 : 1024;
    int b = (R + g - 1) / g * g;
    return b < M ? b : M;
}

extern "C" int cllm_cuda_forward_seqs(cllm_cuda_fwd *f, cllm_cuda_kv *kv, const cllm_fwd_seq *sq, int B,
                                      const int *tokens) {
    const cllm_config *c = &f->m->cfg;
    int V = c->vocab, M = f->max_rows;
    if (B < 1 || B > M) return cllm_error(CLLM_EINVAL, "CUDA forward: %d sequences in one call", B);
    if (kv->n_layer != c->n_layer || kv->kv_dim != f->m->KD)
        return cllm_error(CLLM_EINVAL, "CUDA forward: KV cache shape does not match the model");
    long long rows = 0;
    int max_keys = 0;
    for (int b = 0; b < B; b++) {
        int z = sq[b].seq, p = sq[b].pos, T = sq[b].T;
        if (T < 1 || T > M) return cllm_error(CLLM_EINVAL, "CUDA forward: %d tokens (1..%d allowed)", T, M);
        rows += T;
        if (z < 0 || z >= kv->n_seq)
            return cllm_error(CLLM_EINVAL, "CUDA forward: no sequence %d in the KV cache", z);
        for (int b2 = 0; b2 < b; b2++)
            if (sq[b2].seq == z) return cllm_error(CLLM_EINVAL, "CUDA forward: sequence %d twice in one call", z);
        if (p < 0 || p > kv->len[z])
            return cllm_error(CLLM_EINVAL, "CUDA forward: position %d beyond the cached %d", p, kv->len[z]);
        if (p > kv->cap - T)
            return cllm_error(CLLM_ELIMIT, "CUDA forward: context of %d tokens exceeds the KV cache's %d",
                              p + T, kv->cap);
        if (sq[b].lm_from < 0 || sq[b].lm_from > T)
            return cllm_error(CLLM_EINVAL, "CUDA forward: bad lm_from %d for %d tokens", sq[b].lm_from, T);
        if (p + T > max_keys) max_keys = p + T;
    }
    if (rows > M) return cllm_error(CLLM_EINVAL, "CUDA forward: %lld rows in one call (at most %d)", rows, M);
    for (long long r = 0; r < rows; r++)
        if (tokens[r] < 0 || tokens[r] >= V)
            return cllm_error(CLLM_EINVAL, "CUDA forward: token id %d out of range [0, %d)", tokens[r], V);

    struct cllm_cuda_state *s = f->st;
    int R = (int)rows, N = 0;
    int *tok_h = s->meta_h, *pos_h = s->meta_h + M, *slot_h = s->meta_h + 2 * M, *lm_h = s->meta_h + 3 * M;
    int *seg_h = s->meta_h + 4 * M, nseg = 0;
    memcpy(tok_h, tokens, (size_t)R * sizeof(int));
    for (int b = 0, r = 0; b < B; b++)
        for (int t = 0; t < sq[b].T; t++, r++) {
            pos_h[r] = sq[b].pos + t;
            slot_h[r] = sq[b].seq;
            if (t >= sq[b].lm_from) lm_h[N++] = r;
            if (t % ATT_SEG_ROWS == 0) seg_h[nseg++] = r;   /* a sequence's rows, 16 at a time */
        }
    /* Padding rows, for calls that replay graphs: token 0 at positions 0.. of
     * the scratch sequence (kv->n_seq); their results are dropped. Through
     * the LM head when every real row is (so a window call's key stays
     * (R, R)); in a call that mixes LM-head rows with others (windows and
     * prompt chunks together), the first pad rows bring the LM-head rows to
     * a bucket too (the key is (row_bucket, row_bucket)). Every route
     * computes a row from its own inputs and cache alone, so they change
     * nothing else (test_cuda). */
    int n_out = N, Rp = R;
    if (s->use_graphs && !f->want_logits && !few_row_call(s, R, N)) {
        int all_lm = N == R, lm_pad = all_lm || N == 0 ? 0 : row_bucket(N, M) - N;
        Rp = row_bucket(R + lm_pad, M);
        if (Rp - R > kv->cap || Rp - R < lm_pad) Rp = R;
        for (int r = R; r < Rp; r++) {
            tok_h[r] = 0;
            pos_h[r] = r - R;
            slot_h[r] = kv->n_seq;
            if (all_lm || r - R < lm_pad) lm_h[N++] = r;
            if ((r - R) % ATT_SEG_ROWS == 0) seg_h[nseg++] = r;
        }
        s->stats.pad_rows += (unsigned long long)(Rp - R);
        if (Rp - R > max_keys) max_keys = Rp - R;
    }
    for (int i = nseg; i <= Rp; i++) seg_h[i] = Rp;
    int rc = run_forward(f, kv, Rp, N, n_out, max_keys);
    for (int b = 0; b < B; b++) {
        int z = sq[b].seq;
        if (!rc) kv->len[z] = sq[b].pos + sq[b].T;
        else if (kv->len[z] > sq[b].pos) kv->len[z] = sq[b].pos;  /* rows from pos on may be overwritten */
    }
    return rc;
}

extern "C" int cllm_cuda_forward(cllm_cuda_fwd *f, cllm_cuda_kv *kv, int seq, int pos, const int *tokens,
                                 int T, int lm_from) {
    cllm_fwd_seq s = {seq, pos, T, lm_from};
    return cllm_cuda_forward_seqs(f, kv, &s, 1, tokens);
}
