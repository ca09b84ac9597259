/* cuda_train.cu: the device trainer of libcore/cuda_train.h: upload, the
 * micro-batch (forward keeping activations, losses over chunks of loss rows,
 * backward), gradient norm, AdamW, host copies. The kernels are in this
 * directory (train_kernels.h); this file only allocates, checks arguments and
 * launches, all on one stream, and synchronises once per API call.
 *
 * Layouts (R rows of the call: its B sequences packed one after another,
 * sequence b at rows row0[b] .. row0[b+1] - 1, so nothing is computed for
 * the caller's padding, then their forks: E packed sequences in all, a
 * fork's seq_fork naming its parent and prefix (train_kernels.h); RM rows
 * planned: max_tokens, at most 2 max_B*max_T (the sequences' rows and as many
 * again for their forks); a saved tensor of layer l starts
 * at l*RM rows):
 *   p, g, m, v (n_params) fp32, pb (n_params) bf16: the layout of model->params;
 *   sharded (ZeRO-1, opts shard_ranks > 1): m, v and no_decay hold this rank's
 *   slice [sh_off, sh_off + sh_len) only, p and g are padded to shard_ranks
 *   slices of sh_per (NCCL's reduce-scatter and all-gather take equal ones)
 *   xs  (L+1, RM, C) fp32  residual stream into each layer; xs[L] the last
 *   xm  (L, RM, C) fp32    residual stream between attention and MLP
 *   xn1, xn2 (L, RM, C) bf16  normed inputs of the attention and MLP blocks
 *   rstd1, rstd2 (L, RM) fp32; xnf (RM, C) bf16, rstdf (RM) the final norm
 *   qkv (L, RM, QKV) bf16  q, k after bias + RoPE, v after bias
 *   ao  (L, RM, QD) bf16   attention output;  lse (L, RM, NH) fp32
 *   gu  (L, RM, 2F) bf16   gate, up (pre-activation)
 * Scratch (RM rows, reused by every layer): fa (RM, max(QKV, 2F, C)) fp32,
 * fb (RM, max(QKV, C)) fp32, dx (RM, C) fp32, dxb (RM, C) bf16, h (RM, F)
 * bf16, dgu (RM, 2F) bf16, bq (RM, QKV) bf16, Dsum (RM, NH) fp32; LM head:
 * xg (N, C) bf16, dxg (N, C) fp32, logits (NC, V) fp32, dlogits (NC, V) bf16,
 * losses (N, 2), the row descriptors (N each), teacher (S, V) fp32.
 *
 * Forward, per layer (fusions: the residual add and the next RMSNorm are one
 * kernel; q, k, v are one product when their weights are adjacent in params,
 * i.e. without q/k/v biases; gate and up are always one product, written as
 * bf16 by cuBLAS):
 *   [xs[l] -> xn1, rstd1]  xn1 Wqkv^T -> fa;  bias+RoPE fa -> qkv;  attention -> ao, lse
 *   ao Wo^T -> fa;  xm = xs[l] + fa, xn2 = norm(xm);  xn2 Wgu^T -> gu;  h = swiglu(gu)
 *   h Wdown^T -> fa;  xs[l+1] = xm + fa, xn1' = norm(xs[l+1]) (the next layer's or the final norm)
 * LM head: gather the loss rows of xnf, then per chunk of NC rows: logits,
 * loss + dlogits, dxg = dlogits Wlm, dWlm += dlogits^T xg.
 * Backward, per layer, last first, dx = d xs[l+1] (fp32) with its bf16 copy dxb:
 *   h again from gu;  dWdown += dxb^T h;  dh = dxb Wdown -> fa;  dgu = swiglu'(fa)
 *   dWgu += dgu^T xn2;  dxn = dgu Wgu -> fb;  dx += norm'(fb) (dxb refreshed)
 *   dWo += dxb^T ao;  dao = dxb Wo -> bq (bf16);  attention' -> fa = [dq, dk, dv]
 *   RoPE'(fa) -> bq (bf16), fb (fp32, for bias grads);  dWqkv += bq^T xn1;
 *   dxn = bq Wqkv -> fb;  dx += norm'(fb)
 * then the embedding's scatter-add (the LM head's when tied: same tensor). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train_kernels.h"

extern "C" {
#include "cuda_nccl.h"
#include "dist.h"
#include "cuda_train.h"
#include "train_fwd.h"
}

using namespace cllm_train;

namespace {

struct layer_off {
    size_t attn_norm, wq, wk, wv, bq, bk, bv, wo, ffn_norm, w_gate, w_up, w_down;
};

}  // namespace

/* CLLM_CUDA_PROFILE=1: device time per kind of op (events; printed to
 * stderr when the trainer is freed) */
enum train_op { T_EMBED, T_NORM, T_QKV, T_ROPE, T_ATT, T_WO, T_GU, T_SWIGLU, T_DOWN, T_LM, T_LOSS, T_LM_BWD,
                T_NORM_BWD, T_DOWN_BWD, T_SWIGLU_BWD, T_GU_BWD, T_WO_BWD, T_ATT_BWD, T_ROPE_BWD, T_QKV_BWD,
                T_EMBED_BWD, T_OPT, T_COPY, T_N };
static const char *const train_op_name[T_N] = {
    "embedding", "rmsnorm", "qkv-matmul", "rope", "attention", "wo-matmul", "gate-up-matmul", "swiglu",
    "down-matmul", "lm-head", "loss", "lm-head-bwd", "rmsnorm-bwd", "down-bwd", "swiglu-bwd", "gate-up-bwd",
    "wo-bwd", "attention-bwd", "rope-bwd", "qkv-bwd", "embedding-bwd", "optimizer", "copies"};
enum { TRAIN_PROF_EVENTS = 4096 };

struct cllm_cuda_train {
    cllm_config cfg;
    size_t n_params;
    size_t off_emb, off_norm, off_lm;
    layer_off *lay;            /* host (L) */
    int qkv_adjacent;          /* wq, wk, wv adjacent in params, every layer */
    int maxB, maxT, RM, max_rows, S, NC;
    int BT;                    /* maxB*maxT: the caller's (B, T) layout, where loss rows are named */
    int att_variant;           /* attention kernels: 0 tensor cores (default), 1 kernel1, 2 kernel2 */
    size_t bytes;
    cudaStream_t stream;
    cublasHandle_t blas;
    /* parameters, gradients, optimizer */
    size_t sh_off, sh_len, sh_per, n_pad;   /* this rank's slice (all: not sharded); p and g hold n_pad */
    int sharded;
    float *p, *g, *m, *v;
    floatX *pb;
    unsigned char *no_decay;
    double beta1, beta2, eps, wd;
    int64_t step;
    float *inv_freq;
    double *dnorm;
    /* activations */
    float *xs, *xm, *rstd1, *rstd2, *rstdf, *lse;
    floatX *xn1, *xn2, *xnf, *qkv, *ao, *gu;
    /* scratch */
    float *fa, *fb, *dx, *Dsum;
    floatX *dxb, *h, *dgu, *bq;
    int *tok, *row0;           /* (RM) packed token ids, (2 maxB + 1) first row of each sequence */
    seq_fork *fork;            /* (2 maxB) the packed sequences' forks */
    /* LM head */
    floatX *xg, *dlogits;
    float *dxg, *logits, *losses, *teacher;
    int *r_row, *r_target, *r_teacher, *r_save;
    float *r_ce, *r_soft;
    /* host staging */
    int *h_tok, *h_ints;       /* (RM), (4 * max_rows) */
    int *h_row0;               /* (2 maxB + 1) */
    seq_fork *h_fork;          /* (2 maxB) */
    float *h_floats;           /* (2 * max_rows) as scales, then (2 * max_rows) losses */
    unsigned char *h_mark;     /* (max(2 BT, S) + 1) */
    cuda_op_profile prof;      /* CLLM_CUDA_PROFILE */
};

#define TRY(x) do { if ((rc = (x))) return rc; } while (0)
/* TRY, then the op's CLLM_CUDA_PROFILE mark */
#define OP(kind, x) do { TRY(x); cuda_op_profile_mark(&t->prof, (kind), t->stream); } while (0)

static int dalloc(cllm_cuda_train *t, void **p, size_t n1, size_t n2, size_t elem, const char *what) {
    size_t n;
    *p = NULL;
    if (cllm_mul_size(n1, n2, &n) || cllm_mul_size(n, elem, &n))
        return cllm_error(CLLM_ELIMIT, "CUDA training: %s: size overflows (%zu x %zu x %zu)", what,
                          n1, n2, elem);
    int rc = CUDA_MALLOC(p, n ? n : 1, what);
    if (!rc) t->bytes += n;
    return rc;
}

int cllm_cuda_train_devices(int *n) {
    *n = 0;
    int c = 0;
    cudaError_t e = cudaGetDeviceCount(&c);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
        (void)cudaGetLastError();
        return 0;
    }
    int rc = CUDA_CHECK(e);
    if (rc) return rc;
    *n = c;
    return 0;
}

void cllm_cuda_train_free(cllm_cuda_train *t) {
    if (!t) return;
    void *dev[] = {t->p, t->g, t->m, t->v, t->pb, t->no_decay, t->inv_freq, t->dnorm, t->xs, t->xm,
                   t->rstd1, t->rstd2, t->rstdf, t->lse, t->xn1, t->xn2, t->xnf, t->qkv, t->ao,
                   t->gu, t->fa, t->fb, t->dx, t->Dsum, t->dxb, t->h, t->dgu, t->bq, t->tok,
                   t->row0, t->fork, t->xg, t->dlogits, t->dxg, t->logits, t->losses, t->teacher, t->r_row,
                   t->r_target, t->r_teacher, t->r_save, t->r_ce, t->r_soft};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) (void)cudaFree(dev[i]);   /* nothing to report from a free */
    cuda_op_profile_print(&t->prof, "training");
    cuda_op_profile_free(&t->prof);
    if (t->blas) (void)cublasDestroy(t->blas);
    if (t->stream) (void)cudaStreamDestroy(t->stream);
    free(t->lay);
    free(t->h_tok);
    free(t->h_row0);
    free(t->h_fork);
    free(t->h_ints);
    free(t->h_floats);
    free(t->h_mark);
    free(t);
}

size_t cllm_cuda_train_bytes(const cllm_cuda_train *t) { return t->bytes; }
const cllm_config *cllm_cuda_train_config(const cllm_cuda_train *t) { return &t->cfg; }

static size_t off_of(const cllm_model *m, const float *w) { return w ? (size_t)(w - m->params) : 0; }

/* the stream's work done (and, with CLLM_CUDA_PROFILE, its op times added up) */
static int sync(cllm_cuda_train *t) {
    int rc = CUDA_CHECK(cudaStreamSynchronize(t->stream));
    if (!rc) cuda_op_profile_collect(&t->prof);
    return rc;
}
static void mark_start(cllm_cuda_train *t) { cuda_op_profile_mark(&t->prof, -1, t->stream); }

/* n bytes on t->stream, waited for (host buffers may be reused at once). */
static int copy(cllm_cuda_train *t, void *dst, const void *src, size_t n, cudaMemcpyKind k) {
    int rc;
    TRY(CUDA_CHECK(cudaMemcpyAsync(dst, src, n, k, t->stream)));
    return sync(t);
}

static int upload_all(cllm_cuda_train *t, const float *params) {
    int rc;
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->p, params, t->n_params * sizeof(float),
                                   cudaMemcpyHostToDevice, t->stream)));
    TRY(cast_bf16(t->pb, t->p, t->n_params, t->stream));
    return sync(t);
}

static size_t max3(size_t a, size_t b, size_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

static int init_inner(cllm_cuda_train *t, const cllm_model *mod, const cllm_cuda_train_opts *o) {
    const cllm_config *c = &mod->cfg;
    int rc;
    size_t L = c->n_layer, C = c->d_model, NH = c->n_head, HS = c->head_dim, F = c->d_ff;
    size_t V = c->vocab, QD = NH * HS, KD = (size_t)c->n_head_kv * HS, QKV = QD + 2 * KD;
    size_t RM = (size_t)t->RM, N = (size_t)t->max_rows;

    t->lay = (layer_off *)calloc(L, sizeof *t->lay);
    t->h_tok = (int *)malloc(RM * sizeof(int));
    t->h_row0 = (int *)malloc((2 * (size_t)t->maxB + 1) * sizeof(int));
    t->h_fork = (seq_fork *)malloc(2 * (size_t)t->maxB * sizeof(seq_fork));
    t->h_ints = (int *)malloc(4 * N * sizeof(int));
    t->h_floats = (float *)malloc(4 * N * sizeof(float));
    t->h_mark = (unsigned char *)malloc((2 * (size_t)t->BT > (size_t)t->S ? 2 * (size_t)t->BT : (size_t)t->S) + 1);
    if (!t->lay || !t->h_tok || !t->h_row0 || !t->h_fork || !t->h_ints || !t->h_floats ||
        !t->h_mark)
        return cllm_error(CLLM_ENOMEM, "CUDA training: out of host memory");
    t->off_emb = off_of(mod, mod->tok_emb);
    t->off_norm = off_of(mod, mod->out_norm);
    t->off_lm = off_of(mod, mod->lm_head);
    t->qkv_adjacent = 1;
    for (size_t l = 0; l < L; l++) {
        const cllm_layer_weights *w = &mod->layers[l];
        layer_off *lo = &t->lay[l];
        lo->attn_norm = off_of(mod, w->attn_norm);
        lo->wq = off_of(mod, w->wq);
        lo->wk = off_of(mod, w->wk);
        lo->wv = off_of(mod, w->wv);
        lo->bq = off_of(mod, w->bq);
        lo->bk = off_of(mod, w->bk);
        lo->bv = off_of(mod, w->bv);
        lo->wo = off_of(mod, w->wo);
        lo->ffn_norm = off_of(mod, w->ffn_norm);
        lo->w_gate = off_of(mod, w->w_gate);
        lo->w_up = off_of(mod, w->w_up);
        lo->w_down = off_of(mod, w->w_down);
        if (lo->wk != lo->wq + QD * C || lo->wv != lo->wk + KD * C) t->qkv_adjacent = 0;
        if (lo->w_up != lo->w_gate + F * C)
            return cllm_error(CLLM_EUNSUP, "CUDA training: gate and up weights are not adjacent");
    }

    TRY(CUDA_CHECK(cudaStreamCreateWithFlags(&t->stream, cudaStreamNonBlocking)));
    TRY(CUBLAS_CHECK(cublasCreate(&t->blas)));
    TRY(CUBLAS_CHECK(cublasSetStream(t->blas, t->stream)));

    size_t np = t->n_params;
#define A(ptr, n1, n2, what) TRY(dalloc(t, (void **)&t->ptr, (n1), (n2), sizeof(*t->ptr), what))
    A(p, t->n_pad, 1, "master weights");
    A(pb, np, 1, "bf16 weights");
    A(g, t->n_pad, 1, "gradients");
    A(m, t->sh_len, 1, "AdamW first moments");
    A(v, t->sh_len, 1, "AdamW second moments");
    A(inv_freq, c->rope_dim / 2, 1, "RoPE table");
    A(dnorm, 1, 1, "gradient norm");
    A(xs, (L + 1) * RM, C, "activations (residual stream)");
    A(xm, L * RM, C, "activations (mid residual)");
    A(xn1, L * RM, C, "activations (attention norm)");
    A(xn2, L * RM, C, "activations (MLP norm)");
    A(rstd1, L, RM, "activations (rstd)");
    A(rstd2, L, RM, "activations (rstd)");
    A(xnf, RM, C, "activations (final norm)");
    A(rstdf, RM, 1, "activations (final rstd)");
    A(qkv, L * RM, QKV, "activations (q, k, v)");
    A(ao, L * RM, QD, "activations (attention output)");
    A(lse, L * RM, NH, "activations (attention log-sum-exp)");
    A(gu, L * RM, 2 * F, "activations (gate, up)");
    A(fa, RM, max3(QKV, 2 * F, C), "scratch");
    A(fb, RM, QKV > C ? QKV : C, "scratch");
    A(dx, RM, C, "residual gradient");
    A(dxb, RM, C, "residual gradient (bf16)");
    A(h, RM, F, "scratch (SwiGLU)");
    A(dgu, RM, 2 * F, "scratch (gate/up gradient)");
    A(bq, RM, QKV, "scratch (q/k/v gradient)");
    A(Dsum, RM, NH, "scratch (attention)");
    A(tok, RM, 1, "token ids");
    A(row0, 2 * (size_t)t->maxB + 1, 1, "sequence row0");
    A(fork, 2 * (size_t)t->maxB, 1, "sequence forks");
    A(xg, N, C, "loss rows");
    A(dxg, N, C, "loss rows' gradient");
    A(logits, t->NC, V, "logits chunk");
    A(dlogits, t->NC, V, "logits gradient chunk");
    A(losses, N, 2, "row losses");
    A(teacher, t->S > 0 ? t->S : 1, V, "teacher logits");
    A(r_row, N, 1, "loss rows");
    A(r_target, N, 1, "loss rows");
    A(r_teacher, N, 1, "loss rows");
    A(r_save, N, 1, "loss rows");
    A(r_ce, N, 1, "loss rows");
    A(r_soft, N, 1, "loss rows");
#undef A

    /* the RoPE table exactly as kernels/cpu/rope.c computes it */
    float *inv = (float *)malloc((size_t)(c->rope_dim / 2) * sizeof(float));
    if (!inv) return cllm_error(CLLM_ENOMEM, "CUDA training: out of host memory");
    for (int i = 0; i < c->rope_dim / 2; i++)
        inv[i] = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->rope_dim);
    /* on t->stream: a cudaMemcpy on the legacy stream may return before its DMA
     * lands, and the non-blocking t->stream does not wait for it (found by the
     * CPU emulation, tests/cuemu) */
    rc = copy(t, t->inv_freq, inv, (size_t)(c->rope_dim / 2) * sizeof(float), cudaMemcpyHostToDevice);
    free(inv);
    if (rc) return rc;
    TRY(CUDA_CHECK(cudaMemsetAsync(t->p, 0, t->n_pad * sizeof(float), t->stream)));   /* the padding */
    TRY(CUDA_CHECK(cudaMemsetAsync(t->g, 0, t->n_pad * sizeof(float), t->stream)));
    TRY(CUDA_CHECK(cudaMemsetAsync(t->m, 0, t->sh_len * sizeof(float), t->stream)));
    TRY(CUDA_CHECK(cudaMemsetAsync(t->v, 0, t->sh_len * sizeof(float), t->stream)));
    return upload_all(t, mod->params);
}

int cllm_cuda_train_init(cllm_cuda_train **out, const cllm_model *m, const cllm_cuda_train_opts *o) {
    *out = NULL;
    const cllm_config *c = &m->cfg;
    if (!o || o->max_B < 1 || o->max_T < 1 || o->max_rows < 0 || o->teacher_rows < 0 ||
        o->chunk_rows < 0 || o->max_tokens < 0)
        return cllm_error(CLLM_EINVAL, "CUDA training: bad sizes");
    if (c->n_head < 1 || c->n_head_kv < 1 || c->n_head % c->n_head_kv || c->head_dim < 2 ||
        c->head_dim % 2 || c->head_dim > 256 || c->rope_dim < 2 || c->rope_dim > c->head_dim || c->rope_dim % 2)
        return cllm_error(CLLM_EUNSUP, "CUDA training: unsupported head layout (%d heads, %d kv "
                          "heads, head size %d (even, <= 256), rope dims %d)", c->n_head, c->n_head_kv,
                          c->head_dim, c->rope_dim);
    size_t RM;
    if (cllm_mul_size((size_t)o->max_B, (size_t)o->max_T, &RM) || RM > ((size_t)1 << 30))
        return cllm_error(CLLM_ELIMIT, "CUDA training: %d x %d rows is too many", o->max_B, o->max_T);
    int ndev = 0, rc = cllm_cuda_train_devices(&ndev);
    if (rc) return rc;
    if (ndev < 1) return cllm_error(CLLM_EUNSUP, "CUDA training: no CUDA device");
    if (o->device < 0 || o->device >= ndev)
        return cllm_error(CLLM_EINVAL, "CUDA training: device %d, but %d device%s visible", o->device, ndev,
                          ndev == 1 ? " is" : "s are");
    if ((rc = CUDA_CHECK(cudaSetDevice(o->device)))) return rc;
    cllm_cuda_train *t = (cllm_cuda_train *)calloc(1, sizeof *t);
    if (!t) return cllm_error(CLLM_ENOMEM, "CUDA training: out of host memory");
    t->cfg = *c;
    t->n_params = m->n_params;
    {   /* the slice this rank updates: dist.h's, so that the host's agrees */
        int R = o->shard_ranks > 1 ? o->shard_ranks : 1, r = R > 1 ? o->shard_rank : 0;
        size_t off0, per;
        cllm_dist_slice(t->n_params, 0, R, &off0, &per);
        cllm_dist_slice(t->n_params, r, R, &t->sh_off, &t->sh_len);
        t->sharded = R > 1;
        t->sh_per = per;
        t->n_pad = per * (size_t)R > t->n_params ? per * (size_t)R : t->n_params;
    }
    t->maxB = o->max_B;
    t->maxT = o->max_T;
    t->BT = (int)RM;
    /* The packed rows are the sequences' (at most max_B x max_T) and their
     * forks' (a fork's rows stay below max_T: as many again), so max_tokens
     * may exceed max_B x max_T: cllm-train's one-pass step plans the sum of
     * lens and forks with max_T its longest sequence, and a micro-batch of
     * full-length sequences that fork holds more rows than max_B x max_T
     * (capped there, such a call was refused as more tokens than planned,
     * and cu_fit saw no reason to plan again). */
    if (o->max_tokens > 0) RM = (size_t)o->max_tokens < 2 * RM ? (size_t)o->max_tokens : 2 * RM;
    t->RM = (int)RM;
    t->max_rows = o->max_rows ? o->max_rows : (int)RM;
    if (t->max_rows > (int)RM) t->max_rows = (int)RM;
    t->S = o->teacher_rows;
    size_t nc = o->chunk_rows ? (size_t)o->chunk_rows : ((size_t)256 << 20) / ((size_t)c->vocab * 4);
    if (nc < 1) nc = 1;
    if (nc > (size_t)t->max_rows) nc = (size_t)t->max_rows;
    t->NC = (int)nc;
    t->att_variant = o->attention;
    {
        const char *pr = getenv("CLLM_CUDA_PROFILE");
        if ((rc = cuda_op_profile_init(&t->prof, pr && *pr && strcmp(pr, "0"), train_op_name, T_N,
                                       TRAIN_PROF_EVENTS))) {
            cllm_cuda_train_free(t);
            return rc;
        }
    }
    {   /* CLLM_CUDA_TRAIN_ATTENTION=1 or 2 picks other kernels (docs/CUDA-TRAINING.md) */
        const char *a = getenv("CLLM_CUDA_TRAIN_ATTENTION");
        if (a && *a) {
            if ((a[0] != '0' && a[0] != '1' && a[0] != '2') || a[1]) {
                cllm_cuda_train_free(t);
                return cllm_error(CLLM_EINVAL, "CLLM_CUDA_TRAIN_ATTENTION=%s: 0, 1 or 2", a);
            }
            t->att_variant = a[0] - '0';
        }
    }
    t->beta1 = 0.9;
    t->beta2 = 0.999;
    t->eps = 1e-8;
    t->wd = 0.0;
    rc = init_inner(t, m, o);
    if (rc) {
        cllm_cuda_train_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int cllm_cuda_train_allreduce(cllm_cuda_train *t, cllm_nccl *c) {
    if (t->sharded) return cllm_nccl_sum_scatter_f32(c, t->g, t->sh_per, t->stream);
    return cllm_nccl_sum_f32(c, t->g, t->n_params, t->stream);
}

int cllm_cuda_train_gather(cllm_cuda_train *t, cllm_nccl *c) {
    int rc;
    if (!t->sharded) return 0;
    TRY(cllm_nccl_allgather_f32(c, t->p, t->sh_per, t->stream));
    mark_start(t);
    OP(T_OPT, cast_bf16(t->pb, t->p, t->n_params, t->stream));   /* the other slices' bf16 copy */
    return sync(t);
}

int cllm_cuda_train_zero_grad(cllm_cuda_train *t) {
    int rc;
    TRY(CUDA_CHECK(cudaMemsetAsync(t->g, 0, t->n_params * sizeof(float), t->stream)));
    return sync(t);
}

/* ---- the micro-batch ------------------------------------------------------ */

/* The call's arguments; *split: the loss rows [0, split) run before the
 * rest (their chunks first), so that rows after it may read teacher slots
 * that rows before it save. */
static int check_micro(cllm_cuda_train *t, const int *tokens, const int *lens, int B, int T, const cllm_fork *fork,
                       const cllm_cuda_loss_row *rows, int n_rows, double eps, int *split) {
    int V = t->cfg.vocab;
    if (B < 1 || T < 1 || B > t->maxB || T > t->maxT)
        return cllm_error(CLLM_EINVAL, "CUDA training: batch %d x %d exceeds the planned %d x %d",
                          B, T, t->maxB, t->maxT);
    if (n_rows < 0 || n_rows > t->max_rows)
        return cllm_error(CLLM_EINVAL, "CUDA training: %d loss rows (at most %d planned)", n_rows,
                          t->max_rows);
    if (!(eps >= 0 && eps < 1))
        return cllm_error(CLLM_EINVAL, "CUDA training: label smoothing %g outside [0, 1)", eps);
    size_t n_tok;
    int rc = cllm_check_rows(tokens, lens, B, T, fork, V, "CUDA training", &n_tok);
    if (rc) return rc;
    if (n_tok > (size_t)t->RM)
        return cllm_error(CLLM_EINVAL, "CUDA training: %zu tokens exceed the planned %d", n_tok, t->RM);
    size_t R = (size_t)B * T;   /* sequences' rows b*T + i, then forks' (B + b)*T + i */
    memset(t->h_mark, 0, 2 * R > (size_t)t->S ? 2 * R : (size_t)t->S + 1);
    for (int i = 0; i < n_rows; i++) {
        const cllm_cuda_loss_row *r = &rows[i];
        int real = r->row >= 0 && (size_t)r->row < 2 * R;
        if (real && (size_t)r->row < R) real = r->row % T < lens[r->row / T];
        else if (real) real = fork && r->row % T < fork[r->row / T - B].n;
        if (!real) return cllm_error(CLLM_EINVAL, "CUDA training: loss row %d is not a real row", r->row);
        if (t->h_mark[r->row])
            return cllm_error(CLLM_EINVAL, "CUDA training: loss row %d named twice", r->row);
        t->h_mark[r->row] = 1;
        if (r->target < -1 || r->target >= V)
            return cllm_error(CLLM_EINVAL, "CUDA training: target %d outside the vocabulary (%d)",
                              r->target, V);
        if (r->teacher < -1 || r->teacher >= t->S || r->save < -1 || r->save >= t->S)
            return cllm_error(CLLM_EINVAL, "CUDA training: teacher slot %d / save slot %d outside "
                              "[0, %d)", r->teacher, r->save, t->S);
    }
    /* a slot read in the call it is saved in: every row saving such a slot
     * must come before every row reading one (h_mark: 1 saved, 2 also read) */
    memset(t->h_mark, 0, (size_t)t->S + 1);
    for (int i = 0; i < n_rows; i++)
        if (rows[i].save >= 0) {
            if (t->h_mark[rows[i].save])
                return cllm_error(CLLM_EINVAL, "CUDA training: teacher slot %d saved twice", rows[i].save);
            t->h_mark[rows[i].save] = 1;
        }
    int last_save = -1, first_read = n_rows;
    for (int i = 0; i < n_rows; i++)
        if (rows[i].teacher >= 0 && t->h_mark[rows[i].teacher]) {
            t->h_mark[rows[i].teacher] = 2;
            if (i < first_read) first_read = i;
        }
    for (int i = 0; i < n_rows; i++)
        if (rows[i].save >= 0 && t->h_mark[rows[i].save] == 2) last_save = i;
    if (last_save >= first_read)
        return cllm_error(CLLM_EINVAL, "CUDA training: loss row %d reads a teacher slot that row %d saves "
                          "after it", first_read, last_save);
    *split = last_save >= 0 ? last_save + 1 : n_rows;
    return 0;
}

/* B packed sequences of up to T rows, R rows in all (t->row0), forks (fork:
 * t->fork or NULL) */
static int forward(cllm_cuda_train *t, int B, int T, int R, const seq_fork *fork) {
    const cllm_config *c = &t->cfg;
    int rc, L = c->n_layer, C = c->d_model, NH = c->n_head, NKV = c->n_head_kv, HS = c->head_dim;
    int F = c->d_ff, QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD;
    size_t RM = (size_t)t->RM;
    cudaStream_t s = t->stream;
    float eps = c->rms_eps;

    OP(T_EMBED, embedding_forward(t->xs, t->tok, t->p + t->off_emb, R, C, s));
    OP(T_NORM, rmsnorm_forward(t->xn1, t->rstd1, NULL, t->xs, NULL, t->p + t->lay[0].attn_norm, R, C, eps, s));
    for (int l = 0; l < L; l++) {
        const layer_off *w = &t->lay[l];
        float *xm = t->xm + l * RM * C, *xo = t->xs + (l + 1) * RM * C;
        floatX *xn1 = t->xn1 + l * RM * C, *xn2 = t->xn2 + l * RM * C;
        floatX *qkv = t->qkv + l * RM * QKV, *ao = t->ao + l * RM * QD, *gu = t->gu + l * RM * 2 * F;
        float *lse = t->lse + l * RM * NH;
        /* attention block */
        if (t->qkv_adjacent) {
            OP(T_QKV, matmul_forward(t->blas, t->fa, 0, QKV, xn1, t->pb + w->wq, R, C, QKV, s));
        } else {
            OP(T_QKV, matmul_forward(t->blas, t->fa, 0, QKV, xn1, t->pb + w->wq, R, C, QD, s));
            OP(T_QKV, matmul_forward(t->blas, t->fa + QD, 0, QKV, xn1, t->pb + w->wk, R, C, KD, s));
            OP(T_QKV, matmul_forward(t->blas, t->fa + QD + KD, 0, QKV, xn1, t->pb + w->wv, R, C, KD, s));
        }
        int bias = c->qkv_bias;
        OP(T_ROPE, rope_forward(qkv, t->fa, bias ? t->p + w->bq : NULL, bias ? t->p + w->bk : NULL,
                                bias ? t->p + w->bv : NULL, t->inv_freq, t->row0, fork, B, T, NH, NKV,
                                HS, c->rope_dim, s));
        OP(T_ATT, attention_forward(ao, lse, qkv, t->row0, fork, B, T, NH, NKV, HS, t->att_variant, s));
        OP(T_WO, matmul_forward(t->blas, t->fa, 0, C, ao, t->pb + w->wo, R, QD, C, s));
        OP(T_NORM, rmsnorm_forward(xn2, t->rstd2 + l * RM, xm, t->xs + l * RM * C, t->fa,
                                   t->p + w->ffn_norm, R, C, eps, s));
        /* MLP block */
        OP(T_GU, matmul_forward(t->blas, gu, 1, 2 * F, xn2, t->pb + w->w_gate, R, C, 2 * F, s));
        OP(T_SWIGLU, swiglu_forward(t->h, gu, R, F, s));
        OP(T_DOWN, matmul_forward(t->blas, t->fa, 0, C, t->h, t->pb + w->w_down, R, F, C, s));
        if (l + 1 < L)
            OP(T_NORM, rmsnorm_forward(t->xn1 + (l + 1) * RM * C, t->rstd1 + (l + 1) * RM, xo, xm, t->fa,
                                       t->p + t->lay[l + 1].attn_norm, R, C, eps, s));
        else
            OP(T_NORM, rmsnorm_forward(t->xnf, t->rstdf, xo, xm, t->fa, t->p + t->off_norm, R, C, eps, s));
    }
    return 0;
}

/* LM head and losses over chunks of loss rows, those of [0, split) first
 * (no chunk holds rows of both sides); with backward, the LM head's
 * gradients and dxg. */
static int head(cllm_cuda_train *t, int N, int split, float eps, int backward) {
    const cllm_config *c = &t->cfg;
    int rc, C = c->d_model, V = c->vocab;
    cudaStream_t s = t->stream;
    OP(T_COPY, rows_gather(t->xg, t->xnf, t->r_row, N, C, s));
    for (int i0 = 0; i0 < N;) {
        int end = i0 < split ? split : N, nc = end - i0 < t->NC ? end - i0 : t->NC;
        const floatX *xg = t->xg + (size_t)i0 * C;
        OP(T_LM, matmul_forward(t->blas, t->logits, 0, V, xg, t->pb + t->off_lm, nc, C, V, s));
        OP(T_LOSS, loss_forward_backward(backward ? t->dlogits : NULL, t->losses, t->teacher, t->logits,
                                         t->r_target, t->r_ce, t->r_teacher, t->r_soft, t->r_save, eps,
                                         i0, nc, V, s));
        if (backward) {
            OP(T_LM_BWD, matmul_backward_dinp(t->blas, t->dxg + (size_t)i0 * C, 0, 0.0f, t->dlogits, V,
                                              t->pb + t->off_lm, nc, C, V, s));
            OP(T_LM_BWD, matmul_backward_dweight(t->blas, t->g + t->off_lm, t->dlogits, V, xg, nc, C, V, s));
        }
        i0 += nc;
    }
    return 0;
}

static int backward(cllm_cuda_train *t, int B, int T, int R, int N, const seq_fork *fork) {
    const cllm_config *c = &t->cfg;
    int rc, L = c->n_layer, C = c->d_model, NH = c->n_head, NKV = c->n_head_kv, HS = c->head_dim;
    int F = c->d_ff, QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD;
    size_t RM = (size_t)t->RM;
    cudaStream_t s = t->stream;
    float *g = t->g;

    /* final norm: dxnf (fb) is dxg at the loss rows, 0 elsewhere */
    OP(T_COPY, CUDA_CHECK(cudaMemsetAsync(t->fb, 0, (size_t)R * C * sizeof(float), s)));
    OP(T_COPY, CUDA_CHECK(cudaMemsetAsync(t->dx, 0, (size_t)R * C * sizeof(float), s)));
    OP(T_COPY, rows_scatter(t->fb, t->dxg, t->r_row, N, C, s));
    OP(T_NORM_BWD, rmsnorm_backward(t->dx, t->dxb, g + t->off_norm, t->fb, t->xs + (size_t)L * RM * C,
                                    t->p + t->off_norm, t->rstdf, R, C, s));
    for (int l = L - 1; l >= 0; l--) {
        const layer_off *w = &t->lay[l];
        const float *x = t->xs + l * RM * C, *xm = t->xm + l * RM * C;
        const floatX *xn1 = t->xn1 + l * RM * C, *xn2 = t->xn2 + l * RM * C;
        const floatX *qkv = t->qkv + l * RM * QKV, *ao = t->ao + l * RM * QD;
        const floatX *gu = t->gu + l * RM * 2 * F;
        const float *lse = t->lse + l * RM * NH;

        /* MLP block */
        OP(T_SWIGLU, swiglu_forward(t->h, gu, R, F, s));
        OP(T_DOWN_BWD, matmul_backward_dweight(t->blas, g + w->w_down, t->dxb, C, t->h, R, F, C, s));
        OP(T_DOWN_BWD, matmul_backward_dinp(t->blas, t->fa, 0, 0.0f, t->dxb, C, t->pb + w->w_down, R, F, C, s));
        OP(T_SWIGLU_BWD, swiglu_backward(t->dgu, t->fa, gu, R, F, s));
        OP(T_GU_BWD, matmul_backward_dweight(t->blas, g + w->w_gate, t->dgu, 2 * F, xn2, R, C, 2 * F, s));
        OP(T_GU_BWD, matmul_backward_dinp(t->blas, t->fb, 0, 0.0f, t->dgu, 2 * F, t->pb + w->w_gate, R, C,
                                          2 * F, s));
        OP(T_NORM_BWD, rmsnorm_backward(t->dx, t->dxb, g + w->ffn_norm, t->fb, xm, t->p + w->ffn_norm,
                                        t->rstd2 + l * RM, R, C, s));

        /* attention block */
        OP(T_WO_BWD, matmul_backward_dweight(t->blas, g + w->wo, t->dxb, C, ao, R, QD, C, s));
        OP(T_WO_BWD, matmul_backward_dinp(t->blas, t->bq, 1, 0.0f, t->dxb, C, t->pb + w->wo, R, QD, C, s));
        OP(T_ATT_BWD, attention_backward(t->fa, t->Dsum, t->bq, ao, qkv, lse, t->row0, fork, B, T, NH, NKV,
                                         HS, t->att_variant, s));
        int bias = c->qkv_bias;
        OP(T_ROPE_BWD, rope_backward(t->bq, bias ? t->fb : NULL, t->fa, t->inv_freq, t->row0, fork, B, T, NH,
                                     NKV, HS, c->rope_dim, s));
        if (bias) {
            OP(T_QKV_BWD, bias_backward(g + w->bq, t->fb, QKV, R, QD, s));
            OP(T_QKV_BWD, bias_backward(g + w->bk, t->fb + QD, QKV, R, KD, s));
            OP(T_QKV_BWD, bias_backward(g + w->bv, t->fb + QD + KD, QKV, R, KD, s));
        }
        if (t->qkv_adjacent) {
            OP(T_QKV_BWD, matmul_backward_dweight(t->blas, g + w->wq, t->bq, QKV, xn1, R, C, QKV, s));
            OP(T_QKV_BWD, matmul_backward_dinp(t->blas, t->fb, 0, 0.0f, t->bq, QKV, t->pb + w->wq, R, C, QKV, s));
        } else {
            OP(T_QKV_BWD, matmul_backward_dweight(t->blas, g + w->wq, t->bq, QKV, xn1, R, C, QD, s));
            OP(T_QKV_BWD, matmul_backward_dweight(t->blas, g + w->wk, t->bq + QD, QKV, xn1, R, C, KD, s));
            OP(T_QKV_BWD, matmul_backward_dweight(t->blas, g + w->wv, t->bq + QD + KD, QKV, xn1, R, C, KD, s));
            OP(T_QKV_BWD, matmul_backward_dinp(t->blas, t->fb, 0, 0.0f, t->bq, QKV, t->pb + w->wq, R, C, QD, s));
            OP(T_QKV_BWD, matmul_backward_dinp(t->blas, t->fb, 0, 1.0f, t->bq + QD, QKV, t->pb + w->wk, R, C,
                                               KD, s));
            OP(T_QKV_BWD, matmul_backward_dinp(t->blas, t->fb, 0, 1.0f, t->bq + QD + KD, QKV, t->pb + w->wv,
                                               R, C, KD, s));
        }
        OP(T_NORM_BWD, rmsnorm_backward(t->dx, l > 0 ? t->dxb : NULL, g + w->attn_norm, t->fb, x,
                                        t->p + w->attn_norm, t->rstd1 + l * RM, R, C, s));
    }
    OP(T_EMBED_BWD, embedding_backward(g + t->off_emb, t->dx, t->tok, R, C, s));
    return 0;
}

int cllm_cuda_train_micro(cllm_cuda_train *t, const int *tokens, const int *lens, int B, int T,
                          const cllm_cuda_loss_row *rows, int n_rows, double eps, int do_backward,
                          double *ce_loss, double *soft_loss) {
    return cllm_cuda_train_micro_fork(t, tokens, lens, B, T, NULL, rows, n_rows, eps, do_backward, ce_loss,
                                      soft_loss);
}

int cllm_cuda_train_micro_fork(cllm_cuda_train *t, const int *tokens, const int *lens, int B, int T,
                               const cllm_fork *fork, const cllm_cuda_loss_row *rows, int n_rows, double eps,
                               int do_backward, double *ce_loss, double *soft_loss) {
    int split = n_rows, rc = check_micro(t, tokens, lens, B, T, fork, rows, n_rows, eps, &split);
    if (rc) return rc;
    if (ce_loss) *ce_loss = 0;
    if (soft_loss) *soft_loss = 0;
    if (n_rows == 0) return 0;   /* no loss: no logits, no gradient */
    cudaStream_t s = t->stream;
    size_t N = (size_t)n_rows;
    /* pack: the caller's (B, T) rows without their padding, then the forks */
    int *st = t->h_row0, R = cllm_pack_rows(tokens, lens, B, T, t->h_tok, st), E = B;
    seq_fork *hf = t->h_fork;
    for (int b = 0; b < B; b++) {
        hf[b] = (seq_fork){ -1, 0, -1 };
        if (!fork || !fork[b].n) continue;
        hf[b].child = E;
        hf[E] = (seq_fork){ b, fork[b].at, -1 };
        memcpy(t->h_tok + R, fork[b].tokens, (size_t)fork[b].n * sizeof(int));
        R += fork[b].n;
        st[++E] = R;
    }
    int *hr = t->h_ints, *ht = hr + N, *hte = ht + N, *hs = hte + N;
    float *hce = t->h_floats, *hso = hce + N;
    for (size_t i = 0; i < N; i++) {
        int q = rows[i].row / T;   /* sequence q, or the fork of sequence q - B */
        hr[i] = st[q < B ? q : hf[q - B].child] + rows[i].row % T;
        ht[i] = rows[i].target;
        hte[i] = rows[i].teacher;
        hs[i] = rows[i].save;
        hce[i] = rows[i].ce_scale;
        hso[i] = rows[i].soft_scale;
    }
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->tok, t->h_tok, (size_t)R * sizeof(int), cudaMemcpyHostToDevice, s)));
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->row0, st, ((size_t)E + 1) * sizeof(int), cudaMemcpyHostToDevice, s)));
    if (E > B)
        TRY(CUDA_CHECK(cudaMemcpyAsync(t->fork, hf, (size_t)E * sizeof(seq_fork), cudaMemcpyHostToDevice, s)));
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->r_row, hr, N * sizeof(int), cudaMemcpyHostToDevice, s)));
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->r_target, ht, N * sizeof(int), cudaMemcpyHostToDevice, s)));
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->r_teacher, hte, N * sizeof(int), cudaMemcpyHostToDevice, s)));
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->r_save, hs, N * sizeof(int), cudaMemcpyHostToDevice, s)));
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->r_ce, hce, N * sizeof(float), cudaMemcpyHostToDevice, s)));
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->r_soft, hso, N * sizeof(float), cudaMemcpyHostToDevice, s)));
    /* the pageable copies above are staged before they return, but the
     * staging arrays are rewritten by the next call: synchronise first */
    TRY(sync(t));

    mark_start(t);
    const seq_fork *df = E > B ? t->fork : NULL;
    TRY(forward(t, E, T, R, df));
    TRY(head(t, n_rows, split, (float)eps, do_backward));
    if (do_backward) TRY(backward(t, E, T, R, n_rows, df));
    float *hl = t->h_floats + 2 * N;   /* (N, 2) losses */
    OP(T_COPY, CUDA_CHECK(cudaMemcpyAsync(hl, t->losses, 2 * N * sizeof(float), cudaMemcpyDeviceToHost, s)));
    TRY(sync(t));
    double ce = 0, soft = 0;
    for (size_t i = 0; i < N; i++) {
        if (rows[i].target >= 0) ce += (double)rows[i].ce_scale * hl[2 * i];
        if (rows[i].teacher >= 0) soft += (double)rows[i].soft_scale * hl[2 * i + 1];
    }
    if (ce_loss) *ce_loss = ce;
    if (soft_loss) *soft_loss = soft;
    return 0;
}

/* ---- optimizer ------------------------------------------------------------ */

int cllm_cuda_train_grad_norm(cllm_cuda_train *t, double *norm) {
    int rc;
    double ss = 0;
    mark_start(t);
    TRY(CUDA_CHECK(cudaMemsetAsync(t->dnorm, 0, sizeof(double), t->stream)));
    OP(T_OPT, grad_sumsq(t->dnorm, t->g + t->sh_off, t->sh_len, t->stream));
    OP(T_COPY, CUDA_CHECK(cudaMemcpyAsync(&ss, t->dnorm, sizeof(double), cudaMemcpyDeviceToHost, t->stream)));
    TRY(sync(t));
    if (t->sharded) TRY(cllm_dist_sum_f64(&ss, 1));   /* the slices' parts of the global norm */
    *norm = sqrt(ss);
    return 0;
}

int cllm_cuda_train_step(cllm_cuda_train *t, double lr, double max_norm, double *norm_out,
                         double *coef_out) {
    int rc;
    double norm = 0, coef = 1.0;
    float gscale = 1.0f;
    if (norm_out || max_norm > 0) TRY(cllm_cuda_train_grad_norm(t, &norm));
    if (max_norm > 0) {   /* as cllm_grad_clip */
        double cf = max_norm / (norm + 1e-6);
        if (cf < 1.0) {
            coef = cf;
            gscale = (float)cf;
        }
    }
    /* the scalars exactly as cllm_adamw_step computes them */
    int64_t step = t->step + 1;
    double bc1 = 1.0 - pow(t->beta1, (double)step);
    double bc2 = 1.0 - pow(t->beta2, (double)step);
    float step_size = (float)(lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - lr * t->wd);
    float w1 = (float)(1.0 - t->beta1);
    float b2 = (float)t->beta2, w2 = (float)(1.0 - t->beta2);
    mark_start(t);
    OP(T_OPT, adamw_update(t->p + t->sh_off, t->pb + t->sh_off, t->m, t->v, t->g + t->sh_off, t->no_decay, t->sh_len, gscale,
                                 t->wd != 0.0, decay, w1, b2, w2, step_size, bc2_sqrt, (float)t->eps, t->stream));
    TRY(sync(t));
    t->step = step;
    if (norm_out) *norm_out = norm;
    if (coef_out) *coef_out = coef;
    return 0;
}

/* ---- host copies ------------------------------------------------------------ */

int cllm_cuda_train_get_params(cllm_cuda_train *t, float *params) {
    return copy(t, params, t->p, t->n_params * sizeof(float), cudaMemcpyDeviceToHost);
}
int cllm_cuda_train_set_params(cllm_cuda_train *t, const float *params) { return upload_all(t, params); }
int cllm_cuda_train_get_grads(cllm_cuda_train *t, float *grads) {
    return copy(t, grads, t->g, t->n_params * sizeof(float), cudaMemcpyDeviceToHost);
}
int cllm_cuda_train_set_grads(cllm_cuda_train *t, const float *grads) {
    return copy(t, t->g, grads, t->n_params * sizeof(float), cudaMemcpyHostToDevice);
}

int cllm_cuda_train_set_opt(cllm_cuda_train *t, const cllm_adamw *o) {
    int rc;
    if (o->n != t->sh_len)
        return cllm_error(CLLM_EINVAL, "CUDA training: optimizer state for %zu parameters, the trainer updates %zu",
                          o->n, t->sh_len);
    size_t nb = t->sh_len * sizeof(float);
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->m, o->m, nb, cudaMemcpyHostToDevice, t->stream)));
    TRY(CUDA_CHECK(cudaMemcpyAsync(t->v, o->v, nb, cudaMemcpyHostToDevice, t->stream)));
    if (o->no_decay) {
        if (!t->no_decay)
            TRY(dalloc(t, (void **)&t->no_decay, t->sh_len, 1, 1, "AdamW no-decay mask"));
        TRY(CUDA_CHECK(cudaMemcpyAsync(t->no_decay, o->no_decay, t->sh_len, cudaMemcpyHostToDevice,
                                       t->stream)));
    } else if (t->no_decay) {
        TRY(CUDA_CHECK(cudaMemsetAsync(t->no_decay, 0, t->sh_len, t->stream)));
    }
    TRY(sync(t));
    t->beta1 = o->beta1;
    t->beta2 = o->beta2;
    t->eps = o->eps;
    t->wd = o->weight_decay;
    t->step = o->t;
    return 0;
}

int cllm_cuda_train_get_opt(cllm_cuda_train *t, cllm_adamw *o) {
    int rc;
    if (o->n != t->sh_len)
        return cllm_error(CLLM_EINVAL, "CUDA training: optimizer state for %zu parameters, the trainer updates %zu",
                          o->n, t->sh_len);
    size_t nb = t->sh_len * sizeof(float);
    TRY(CUDA_CHECK(cudaMemcpyAsync(o->m, t->m, nb, cudaMemcpyDeviceToHost, t->stream)));
    TRY(CUDA_CHECK(cudaMemcpyAsync(o->v, t->v, nb, cudaMemcpyDeviceToHost, t->stream)));
    TRY(sync(t));
    o->t = t->step;
    return 0;
}
