/* train.c: cllm-train's engine (see train.h, docs/TRAINING.md).
 *
 * Data flow: a source turns input records into examples (context, fixed
 * point or answer, Jacobi states, labels); a pipeline runs passes (epochs)
 * over the source through a shuffle buffer driven by its own RNG; a step
 * takes batch * grad_accum examples (never across an epoch boundary), runs
 * the micro-batches forward and backward into one gradient buffer, clips,
 * and takes an AdamW step at the scheduled learning rate.
 *
 * Per CLLM example (prompt+prefix = x, fixed point y*, states y(0..k-1)):
 *   AR:          sequence x‖y* (x_prompt‖labels with use_labels), label-
 *                smoothed CE on the window, mean over its tokens, times w;
 *   consistency: state y = y(j), j uniform in [0, k) from the training RNG;
 *                teacher window t = y* (global) or y(j+1) (local, y* when
 *                j = k-1); soft CE of softmax(teacher logits on x‖t) against
 *                the student's log-softmax on x‖y, rows from the first
 *                position where y and t differ (sum, or mean with cons_mean).
 *   The teacher logits are the same weights without gradient. For global
 *   consistency without labels (the default) one pass does it all
 *   (one_pass): x‖y* carries the AR loss and its window's logits are the
 *   teacher's, and the student is a fork of it (cllm_train_forward_fork)
 *   from the first position where y(j) differs from y*, seeing x‖y*'s rows
 *   before it as its prefix: n_ctx + 2m - d rows instead of 2 (n_ctx + m),
 *   one backward. Otherwise (and with --separate-passes) a forward and
 *   backward per sequence, the teacher's a forward of its own where it is
 *   not the AR sequence.
 * The step's loss is the mean over its examples of (consistency + w * AR);
 * for SFT, the mean over examples of the answer tokens' mean CE.
 *
 * Exact resume: the checkpoint stores weights, Adam moments and step, the
 * training RNG, and the number of examples taken from the pipeline; resume
 * replays the pipeline (reading and shuffling, no compute) up to that point,
 * then checks that the replayed shuffle RNG and the hash of the examples
 * equal the checkpoint's, so a different input is an error.
 *
 * Data parallel (libcore/dist.h, docs/SCALING.md): with R ranks every rank
 * runs the same pipeline (same shuffle, same epochs) and a step takes
 * batch * grad_accum * R examples, the global batch; example j of the step
 * goes to rank j % R (input record i to rank i % R with --shuffle-buffer 1).
 * The Jacobi states are drawn for the whole global batch in its order, every
 * example's loss is divided by the global count, and the gradients (and the
 * loss sums) are summed over the ranks before clipping and AdamW, so R ranks
 * give the model one process gives with the same global batch. Rank 0 alone
 * writes metrics, checkpoints (with R in them) and the output model.
 * With shard_optimizer (ZeRO-1) each rank keeps the AdamW moments of its
 * slice of the parameters (cllm_dist_slice): the gradients are
 * reduce-scattered instead of all-reduced, the norm is the sum of the
 * slices' sums of squares, each rank clips and updates its slice, and the
 * weights are all-gathered; for a checkpoint rank 0 gathers the moments, so
 * the file is the same as without sharding and resumes either way.
 *
 * On a CUDA device (o->device, cuda_train.h, docs/CUDA-TRAINING.md) the same
 * pipeline, states, schedule and metrics drive the device's training step:
 * each forward above becomes one cllm_cuda_train_micro(_fork) call that names
 * its loss rows (the AR rows also save the teacher rows on the device, read
 * by the fork's rows of the same call or by a later call; or a separate
 * forward-only call saves them), the gradients, AdamW and the weights stay
 * on the device, and weights and moments come to the host only for a
 * checkpoint and the final save (m->params is stale in between). With R
 * ranks on CUDA each takes the device of its local rank, and the gradients
 * are summed on the devices by NCCL (cuda_nccl.h) or, with --allreduce mpi,
 * through host copies and MPI; the rest is as on the CPU.
 */
#include "train.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "adamw.h"
#include "ckpt.h"
#include "cli.h"
#include "clock.h"
#include "dist.h"
#include "err.h"
#include "forward.h"
#include "gen.h"
#include "loss.h"
#include "records.h"
#include "rng.h"
#include "stream.h"
#include "tokenizer.h"
#include "train_fwd.h"
#if CLLM_CUDA
#include "cuda_nccl.h"
#include "cuda_train.h"
#endif

void cllm_train_opts_init(cllm_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->objective = CLLM_OBJ_CLLM;
    o->loss = CLLM_CONS_GLOBAL;
    o->lr = 2e-5;
    o->warmup = 0.03;
    o->clip = 1.0;
    o->ar_weight = 10.0;
    o->label_smoothing = -1;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->batch = 1;
    o->grad_accum = 1;
    o->shuffle_buffer = 1024;
    o->keep = 3;
    o->dtype = "f32";
}

/* ---- examples ---------------------------------------------------------- */

typedef struct example {
    int32_t *ctx;      /* prompt + prefix */
    int n_ctx, n_prompt;
    int32_t *fixed;    /* y* (cllm), answer + EOS (sft) */
    int m;
    int32_t *states;   /* k states of n tokens */
    int k, n;
    int32_t *labels;
    int nl;
    int64_t id;
    int state;         /* the Jacobi state drawn for this step (cllm), -1: none */
} example;

static void example_free(example *e) {
    free(e->ctx);
    free(e->fixed);
    free(e->states);
    free(e->labels);
    memset(e, 0, sizeof *e);
}

static int32_t *dup_ids(const int32_t *p, size_t n) {
    int32_t *d = cllm_malloc(n ? n * sizeof *d : 1);
    if (d && n) memcpy(d, p, n * sizeof *d);
    return d;
}

static int check_ids(const int32_t *p, size_t n, int V, int64_t id, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0 || p[i] >= V)
            return cllm_error(CLLM_EINVAL, "example %lld: %s token %d is outside the vocabulary (%d)", (long long)id, what,
                              p[i], V);
    return 0;
}

/* ---- sources ----------------------------------------------------------- */

typedef struct source {
    const cllm_train_opts *o;
    const cllm_model *m;
    const char *path;         /* what to open: NULL (stdin), a file, /dev/stdin */
    cllm_reader *r;           /* cllm: traj records */
    cllm_prompts *p;          /* sft */
} source;

static int check_header(source *s, const cllm_value *h, const char *name) {
    if (!h) return 0;
    char *tokh = NULL;
    int64_t vocab = 0;
    /* Both fields are optional (cllm-stream(5)): absent (1) is not an error. */
    int rc = cllm_rec_get_str(h, "tokenizer", &tokh, 0);
    if (rc == 1) rc = 0;
    if (!rc && (rc = cllm_rec_get_i64(h, "vocab", &vocab, 0)) == 1) rc = 0;
    if (!rc && tokh && *tokh && s->m->tok) {
        const char *mine = cllm_tokenizer_hash(s->m->tok);
        if (strcmp(tokh, mine))
            rc = cllm_error(CLLM_EINVAL, "%s: made with another tokenizer (hash %s; the model's is %s)", name, tokh, mine);
    }
    if (!rc && vocab > 0 && vocab != s->m->cfg.vocab)
        rc = cllm_error(CLLM_EINVAL, "%s: made for a vocabulary of %lld tokens (the model has %d)", name, (long long)vocab,
                        s->m->cfg.vocab);
    free(tokh);
    return rc;
}

static int source_open(source *s) {
    if (s->o->objective == CLLM_OBJ_CLLM) return cllm_reader_open(&s->r, s->path);
    return cllm_prompts_open(&s->p, s->path, &s->o->prompt, s->m->tok);
}

static void source_close(source *s) {
    if (s->r) cllm_reader_close(s->r);
    if (s->p) cllm_prompts_close(s->p);
    s->r = NULL;
    s->p = NULL;
}

static int next_traj(source *s, example *e) {
    const int V = s->m->cfg.vocab;
    for (;;) {
        cllm_record rec;
        int rc = cllm_reader_next(s->r, &rec);
        if (rc == CLLM_EOF) cllm_reader_warn_interrupted(s->r);
        if (rc) return rc;
        if (!strcmp(rec.type, "header")) {
            if ((rc = check_header(s, rec.root, cllm_reader_name(s->r)))) return rc;
            continue;
        }
        if (strcmp(rec.type, "traj")) continue;
        cllm_traj_rec t;
        memset(&t, 0, sizeof t);
        if ((rc = cllm_rec_traj_get(&rec, &t))) return rc;
        memset(e, 0, sizeof *e);
        e->id = t.id;
        size_t nctx = t.prompt.n + t.prefix.n;
        size_t n = t.n_states ? t.states[0].n : t.fixed.n;
        if (nctx == 0) rc = cllm_error(CLLM_EINVAL, "traj record %lld: empty prompt", (long long)t.id);
        else if (t.fixed.n == 0) rc = 1;  /* nothing to learn: skip */
        else if (t.fixed.n > n) rc = cllm_error(CLLM_ESCHEMA, "traj record %lld: fixed point longer than its states", (long long)t.id);
        for (size_t j = 0; !rc && j < t.n_states; j++)
            if (t.states[j].n != n)
                rc = cllm_error(CLLM_ESCHEMA, "traj record %lld: states of different lengths", (long long)t.id);
        if (!rc && nctx + n > (size_t)1 << 30) rc = cllm_error(CLLM_ELIMIT, "traj record %lld too long", (long long)t.id);
        if (!rc) rc = check_ids(t.prompt.ids, t.prompt.n, V, t.id, "prompt");
        if (!rc) rc = check_ids(t.prefix.ids, t.prefix.n, V, t.id, "prefix");
        if (!rc) rc = check_ids(t.fixed.ids, t.fixed.n, V, t.id, "fixed");
        for (size_t j = 0; !rc && j < t.n_states; j++) rc = check_ids(t.states[j].ids, n, V, t.id, "state");
        if (!rc && t.has_labels) rc = check_ids(t.labels.ids, t.labels.n, V, t.id, "label");
        if (!rc && s->o->use_labels && (!t.has_labels || t.labels.n == 0))
            rc = cllm_error(CLLM_ESCHEMA, "traj record %lld: --use-labels but the record has no labels", (long long)t.id);
        /* the labels' AR sequence is prompt || labels: the first label is scored
         * after the prompt's last token, so there must be one */
        if (!rc && s->o->use_labels && t.prompt.n == 0)
            rc = cllm_error(CLLM_ESCHEMA, "traj record %lld: --use-labels but the record's prompt is empty", (long long)t.id);
        if (!rc) {
            e->ctx = cllm_malloc(nctx * sizeof *e->ctx);
            e->fixed = dup_ids(t.fixed.ids, t.fixed.n);
            e->states = cllm_malloc(t.n_states ? t.n_states * n * sizeof *e->states : 1);
            e->labels = dup_ids(t.labels.ids, t.has_labels ? t.labels.n : 0);
            if (!e->ctx || !e->fixed || !e->states || !e->labels) rc = CLLM_ENOMEM;
        }
        if (!rc) {
            if (t.prompt.n) memcpy(e->ctx, t.prompt.ids, t.prompt.n * sizeof *e->ctx);
            if (t.prefix.n) memcpy(e->ctx + t.prompt.n, t.prefix.ids, t.prefix.n * sizeof *e->ctx);
            for (size_t j = 0; j < t.n_states; j++) memcpy(e->states + j * n, t.states[j].ids, n * sizeof *e->states);
            e->n_ctx = (int)nctx;
            e->n_prompt = (int)t.prompt.n;
            e->m = (int)t.fixed.n;
            e->k = (int)t.n_states;
            e->n = (int)n;
            e->nl = t.has_labels ? (int)t.labels.n : 0;
        }
        cllm_rec_traj_free(&t);
        if (rc == 1) { example_free(e); continue; }
        if (rc) example_free(e);
        return rc;
    }
}

static int next_sft(source *s, example *e) {
    const int V = s->m->cfg.vocab;
    cllm_prompt p;
    memset(&p, 0, sizeof p);
    int rc = cllm_prompts_next(s->p, &p);
    if (rc) return rc;
    /* The header of the prompt's section, checked for every prompt: a new
     * section's header cannot be told by its address (the reader frees the
     * last one, and an allocation may land where an older one was). */
    const cllm_value *h = cllm_prompts_header(s->p);
    if (h && (rc = check_header(s, h, s->path ? s->path : "(stdin)"))) { cllm_prompt_free(&p); return rc; }
    memset(e, 0, sizeof *e);
    e->id = p.id;
    int eos = cllm_model_eos_id(s->m);   /* the token the decoders stop at */
    int32_t *ans = NULL;
    size_t na = 0;
    if (!p.answer) rc = cllm_error(CLLM_ESCHEMA, "prompt %lld has no answer (SFT needs one; see --answer-field)", (long long)p.id);
    else if (!s->m->tok) rc = cllm_error(CLLM_EINVAL, "SFT answers are text: the model has no tokenizer");
    else if (eos < 0 || eos >= V) rc = cllm_error(CLLM_EINVAL, "the model names no end-of-sequence token");
    else if (p.tokens.n == 0) rc = cllm_error(CLLM_EINVAL, "prompt %lld is empty", (long long)p.id);
    if (!rc) rc = cllm_tokenizer_encode(s->m->tok, p.answer, strlen(p.answer), 0, &ans, &na);
    if (!rc) rc = check_ids(p.tokens.ids, p.tokens.n, V, p.id, "prompt");
    if (!rc) rc = check_ids(ans, na, V, p.id, "answer");
    if (!rc) {
        e->ctx = dup_ids(p.tokens.ids, p.tokens.n);
        e->fixed = cllm_malloc((na + 1) * sizeof *e->fixed);
        if (!e->ctx || !e->fixed) rc = CLLM_ENOMEM;
    }
    if (!rc) {
        if (na) memcpy(e->fixed, ans, na * sizeof *ans);
        e->fixed[na] = eos;
        e->n_ctx = e->n_prompt = (int)p.tokens.n;
        e->m = (int)na + 1;
    }
    free(ans);
    cllm_prompt_free(&p);
    if (rc) example_free(e);
    return rc;
}

static int source_next(source *s, example *e) {
    return s->o->objective == CLLM_OBJ_CLLM ? next_traj(s, e) : next_sft(s, e);
}

/* ---- the pipeline: epochs and the shuffle buffer ------------------------ */

typedef struct pipeline {
    source src;
    int open, input_done;
    example *buf;
    int cap, n;
    cllm_rng rng;
    int64_t epoch, max_epochs;  /* max_epochs 0: unlimited */
    uint64_t delivered, in_epoch;
    uint64_t hash;
} pipeline;

enum { PIPE_EXAMPLE = 0, PIPE_EPOCH_END = 1 };

static uint64_t example_hash(uint64_t h, const example *e) {
    h = cllm_ckpt_hash(h, e->ctx, (size_t)e->n_ctx * sizeof(int32_t));
    h = cllm_ckpt_hash(h, e->fixed, (size_t)e->m * sizeof(int32_t));
    h = cllm_ckpt_hash(h, e->states, (size_t)e->k * e->n * sizeof(int32_t));
    return cllm_ckpt_hash(h, e->labels, (size_t)e->nl * sizeof(int32_t));
}

/* PIPE_EXAMPLE (*out filled, caller frees), PIPE_EPOCH_END, CLLM_EOF, or an error. */
static int pipe_next(pipeline *p, example *out) {
    for (;;) {
        if (!p->open) {
            if (p->max_epochs && p->epoch >= p->max_epochs) return CLLM_EOF;
            int rc = source_open(&p->src);
            if (rc) return rc;
            p->open = 1;
            p->input_done = 0;
            p->in_epoch = 0;
        }
        while (!p->input_done && p->n < p->cap) {
            int rc = source_next(&p->src, &p->buf[p->n]);
            if (rc == CLLM_EOF) { p->input_done = 1; break; }
            if (rc) return rc;
            p->n++;
        }
        if (p->n > 0) {
            int i = (int)cllm_rng_below(&p->rng, (uint64_t)p->n);
            *out = p->buf[i];
            p->buf[i] = p->buf[p->n - 1];
            memset(&p->buf[p->n - 1], 0, sizeof(example));
            p->n--;
            p->delivered++;
            p->in_epoch++;
            p->hash = example_hash(p->hash, out);
            return PIPE_EXAMPLE;
        }
        source_close(&p->src);
        p->open = 0;
        p->epoch++;
        if (p->in_epoch == 0) return cllm_error(CLLM_EINVAL, "no training examples in the input");
        return PIPE_EPOCH_END;
    }
}

static void pipe_free(pipeline *p) {
    source_close(&p->src);
    for (int i = 0; i < p->n; i++) example_free(&p->buf[i]);
    free(p->buf);
    p->buf = NULL;
}

/* An example longer than --max-len (or the model's context): an error naming it. */
static int check_example_len(const cllm_train_opts *o, const cllm_model *m, const example *e) {
    int maxlen = o->max_len > 0 ? o->max_len : m->cfg.max_ctx;
    int len = e->n_ctx + e->m;
    if (o->use_labels && e->n_prompt + e->nl > len) len = e->n_prompt + e->nl;
    if (maxlen > 0 && len > maxlen)
        return cllm_error(CLLM_ELIMIT, "example %lld: %d tokens, more than the limit of %d (--max-len)", (long long)e->id,
                          len, maxlen);
    return 0;
}

/* Count the examples of one pass (for the schedule's length). An example too
 * long is refused here, before the first step, not when its step comes
 * (possibly hours into the run). */
static int count_examples(const cllm_train_opts *o, const cllm_model *m, const char *path, uint64_t *n) {
    source s = { .o = o, .m = m, .path = path };
    *n = 0;
    int rc = source_open(&s);
    example e;
    while (!rc && (rc = source_next(&s, &e)) == 0) {
        (*n)++;
        rc = check_example_len(o, m, &e);
        example_free(&e);
    }
    source_close(&s);
    return rc == CLLM_EOF ? 0 : rc;
}

/* ---- the trainer ------------------------------------------------------- */

typedef struct trainer {
    cllm_model *m;
    const cllm_train_opts *o;
    cllm_act *act;
    int actB, actT;
    int *tokens, *lens;
    size_t tok_cap;
    float *logits, *dlogits;  /* the last forward's LM-head rows, packed (forward()) */
    size_t lg_cap;            /* floats */
    float *teacher;           /* per example of the micro-batch: m rows */
    size_t te_cap;
    int *ftok;                /* the forks' tokens (one_pass) */
    size_t ftok_cap;
    float *grads;
    cllm_adamw opt;           /* for params[off, off + len) */
    int shard;                /* ZeRO-1 over several ranks: opt holds this rank's slice only */
    size_t off, len;          /* the slice this rank updates (all of the parameters unless shard) */
    cllm_rng rng;
    double ar_eps;
    uint64_t tokens_fwd;      /* tokens through the model this step */
#if CLLM_CUDA
    cllm_cuda_train *cu;      /* o->device CUDA: the device's trainer (created at the first micro-batch) */
    cllm_cuda_train_opts cuo; /* what it was planned for */
    cllm_cuda_loss_row *rows; /* one call's loss rows */
    size_t rows_cap;
#endif
} trainer;

typedef struct seqspec { const int32_t *a; int na; const int32_t *b; int nb; } seqspec;

/* Rows per sequence of a call on s: its longest a‖b. */
static int seq_T(const seqspec *s, int B) {
    int T = 1;
    for (int b = 0; b < B; b++)
        if (s[b].na + s[b].nb > T) T = s[b].na + s[b].nb;
    return T;
}

/* The consistency student's inputs: x‖y(j) for the examples with a state j
 * (js[b] >= 0), the context alone for the others. Returns whether any has one. */
static int student_specs(seqspec *s, const example *ex, const int *js, int B) {
    int any = 0;
    for (int b = 0; b < B; b++) {
        if (js[b] < 0) s[b] = (seqspec){ ex[b].ctx, ex[b].n_ctx, NULL, 0 };
        else {
            s[b] = (seqspec){ ex[b].ctx, ex[b].n_ctx, ex[b].states + (size_t)js[b] * ex[b].n, ex[b].m };
            any = 1;
        }
    }
    return any;
}

static int grow_f(float **p, size_t *cap, size_t need) {
    if (*cap >= need) return 0;
    float *q = realloc(*p, need * sizeof *q);
    if (!q) return cllm_error(CLLM_ENOMEM, "out of memory (%zu floats)", need);
    *p = q;
    *cap = need;
    return 0;
}

/* The (B, T) token rows of B sequences a‖b, zero-padded, into t->tokens, and
 * their lengths into t->lens (both grown as needed). */
static int pack_tokens(trainer *t, const seqspec *s, int B, int T) {
    size_t bt = (size_t)B * T;
    if (t->tok_cap < bt) {
        int *a = realloc(t->tokens, bt * sizeof *a), *l;
        if (!a) return cllm_error(CLLM_ENOMEM, "out of memory");
        t->tokens = a;
        if (!(l = realloc(t->lens, bt * sizeof *l))) return cllm_error(CLLM_ENOMEM, "out of memory");
        t->lens = l;
        t->tok_cap = bt;
    }
    for (int b = 0; b < B; b++) {
        int *row = t->tokens + (size_t)b * T;
        for (int i = 0; i < s[b].na; i++) row[i] = s[b].a[i];
        for (int i = 0; i < s[b].nb; i++) row[s[b].na + i] = s[b].b[i];
        for (int i = s[b].na + s[b].nb; i < T; i++) row[i] = 0;
        t->lens[b] = s[b].na + s[b].nb;
        t->tokens_fwd += (uint64_t)t->lens[b];
    }
    return 0;
}

/* Forward B sequences a‖b with the LM head on the rows that predict b: the
 * window [na - 1, na - 1 + nb) of each (none when nb = 0), and fork (B, or
 * NULL) off them (cllm_train_forward_fork). The windows' logits land in
 * t->logits packed sequence after sequence, sequence b's from row base[b] =
 * nb[0] + ... + nb[b-1] (the teacher buffers use the same layout), then the
 * forks' rows; t->dlogits gets room for as many. */
static int forward(trainer *t, const seqspec *s, int B, const cllm_fork *fork, size_t *base, int *T_out) {
    const int V = t->m->cfg.vocab;
    int T = seq_T(s, B), fmax = 0;
    int lm_from[B > 0 ? B : 1], lm_n[B > 0 ? B : 1];
    size_t rows = 0;
    for (int b = 0; b < B; b++) {
        lm_from[b] = s[b].nb ? s[b].na - 1 : 0;
        lm_n[b] = s[b].nb;
        base[b] = rows;
        rows += (size_t)s[b].nb;
    }
    for (int b = 0; fork && b < B; b++) {
        rows += (size_t)fork[b].n;
        t->tokens_fwd += (uint64_t)fork[b].n;
        if (fork[b].n > fmax) fmax = fork[b].n;
    }
    /* B x (T + fmax) rows hold the sequences and their forks */
    if (!t->act || T + fmax > t->actT || B > t->actB) {
        int nT = t->actT > T + fmax ? t->actT : T + fmax, nB = t->actB > B ? t->actB : B;
        cllm_act_free(t->act);
        t->act = NULL;
        t->actT = t->actB = 0;
        int rc = cllm_act_init(&t->act, t->m, nB, nT);
        if (rc) return rc;
        t->actT = nT;
        t->actB = nB;
    }
    size_t lg_old = t->lg_cap;
    int rc = pack_tokens(t, s, B, T);
    if (!rc) rc = grow_f(&t->logits, &t->lg_cap, (rows ? rows : 1) * V);
    if (!rc && t->lg_cap != lg_old) {   /* dlogits: as large as logits */
        float *d = realloc(t->dlogits, t->lg_cap * sizeof *d);
        if (!d) return cllm_error(CLLM_ENOMEM, "out of memory (%zu floats)", t->lg_cap);
        t->dlogits = d;
    }
    if (rc) return rc;
    *T_out = T;
    return cllm_train_forward_fork(t->act, t->m, t->tokens, t->lens, B, T, lm_from, lm_n, fork, t->logits);
}

/* The CLLM step in one pass (the global consistency loss on y* without
 * labels): x‖y* carries the AR loss, and its window's logits are the
 * teacher's; the student x‖y(j) is a fork of it. Student and teacher agree up
 * to the first position d where y(j) differs from y*, and the loss skips the
 * rows before it, so the fork starts there: its rows are the student's rows
 * d .. m - 1, at positions n_ctx - 1 + d .., with tokens y(j)[d-1 .. m-2]
 * (x's last token for d = 0), seeing x‖y*'s first n_ctx - 1 + d rows, which
 * hold the tokens x‖y(j) has there. n_ctx + 2m - d rows instead of 2 (n_ctx +
 * m), the same losses and gradients (docs/TRAINING.md, "One pass for both"). */
/* one_pass's sequences x‖y* (s) and the students' forks: fork[b] (n = 0 for
 * an example without a state or whose state is y*), d[b] its first
 * difference; the forks' tokens in t->ftok. */
static int student_forks(trainer *t, const example *ex, const int *js, int B, seqspec *s, cllm_fork *fork, int *d) {
    size_t need = 0, at = 0;
    for (int b = 0; b < B; b++) need += (size_t)ex[b].m;
    if (t->ftok_cap < need) {
        int *p = realloc(t->ftok, need * sizeof *p);
        if (!p) return cllm_error(CLLM_ENOMEM, "out of memory");
        t->ftok = p;
        t->ftok_cap = need;
    }
    for (int b = 0; b < B; b++) {
        s[b] = (seqspec){ ex[b].ctx, ex[b].n_ctx, ex[b].fixed, ex[b].m };
        fork[b] = (cllm_fork){ NULL, 0, 0 };
        d[b] = ex[b].m;
        if (js[b] < 0) continue;
        const int32_t *y = ex[b].states + (size_t)js[b] * ex[b].n;
        d[b] = cllm_first_diff(y, ex[b].fixed, ex[b].m);
        int *ft = t->ftok + at;
        for (int i = d[b]; i < ex[b].m; i++) ft[i - d[b]] = i ? y[i - 1] : ex[b].ctx[ex[b].n_ctx - 1];
        fork[b] = (cllm_fork){ ft, ex[b].n_ctx - 1 + d[b], ex[b].m - d[b] };
        at += (size_t)fork[b].n;
    }
    return 0;
}

static int one_pass(trainer *t, example *ex, const int *js, int B, float inv_r, double *cons, double *ar) {
    const cllm_train_opts *o = t->o;
    const int V = t->m->cfg.vocab;
    seqspec s[B > 0 ? B : 1];
    size_t base[B > 0 ? B : 1], trunk = 0;
    cllm_fork fork[B > 0 ? B : 1];
    int d[B > 0 ? B : 1], T, rc;
    if ((rc = student_forks(t, ex, js, B, s, fork, d))) return rc;
    if ((rc = forward(t, s, B, fork, base, &T))) return rc;
    for (int b = 0; b < B; b++) trunk += (size_t)ex[b].m;
    double w = o->ar_weight;
    if (w <= 0) memset(t->dlogits, 0, trunk * V * sizeof(float));
    for (int b = 0; b < B && !rc; b++) {
        size_t off = base[b] * V;
        double l = 0;
        rc = cllm_ce_loss(t->logits + off, V, s[b].b, s[b].nb, t->ar_eps, CLLM_REDUCE_MEAN,
                          w > 0 ? (float)(w * inv_r) : inv_r, w > 0 ? t->dlogits + off : NULL, &l);
        *ar += w > 0 ? l / w : l;
    }
    size_t row = trunk;   /* the forks' logits follow the windows' */
    for (int b = 0; b < B && !rc; b++) {
        if (!fork[b].n) continue;
        const int32_t *y = ex[b].states + (size_t)js[b] * ex[b].n;
        rc = cllm_consistency_loss(t->logits + row * V, t->logits + (base[b] + d[b]) * V, V, y + d[b],
                                   ex[b].fixed + d[b], fork[b].n, o->cons_mean ? CLLM_REDUCE_MEAN : CLLM_REDUCE_SUM,
                                   inv_r, t->dlogits + row * V, cons, NULL);
        row += (size_t)fork[b].n;
    }
    if (!rc) rc = cllm_train_backward(t->act, t->m, t->dlogits, t->grads);
    return rc;
}

/* One micro-batch of B examples; adds to *cons and *ar (already divided by R). */
static int micro_batch(trainer *t, example *ex, int B, int R, double *cons, double *ar) {
    const cllm_train_opts *o = t->o;
    const int V = t->m->cfg.vocab;
    const float inv_r = 1.0f / (float)R;
    seqspec s[B > 0 ? B : 1];
    size_t base[B > 0 ? B : 1];   /* first logits row of each sequence's window */
    int T, rc;
    memset(s, 0, sizeof s);   /* B >= 1, but GCC's sanitizer build cannot tell */

    if (o->objective == CLLM_OBJ_SFT) {
        for (int b = 0; b < B; b++) s[b] = (seqspec){ ex[b].ctx, ex[b].n_ctx, ex[b].fixed, ex[b].m };
        if ((rc = forward(t, s, B, NULL, base, &T))) return rc;
        for (int b = 0; b < B && !rc; b++) {
            size_t off = base[b] * V;
            rc = cllm_ce_loss(t->logits + off, V, ex[b].fixed, ex[b].m, t->ar_eps, CLLM_REDUCE_MEAN, inv_r,
                              t->dlogits + off, ar);
        }
        if (!rc) rc = cllm_train_backward(t->act, t->m, t->dlogits, t->grads);
        return rc;
    }

    /* CLLM: pick the states, then teacher rows, AR loss, consistency loss. The
     * teacher rows of example b are its m rows that predict the window; they
     * sit at te_off[b] = (m[0] + ... + m[b-1]) * V, the layout of forward()'s
     * logits for windows of m rows, so a teacher pass copies them in one piece. */
    int js[B > 0 ? B : 1];
    const int32_t *tw[B > 0 ? B : 1];   /* the teacher's window */
    size_t te_off[B > 0 ? B : 1], te_need = 0;
    int separate = o->loss == CLLM_CONS_LOCAL || o->use_labels;
    for (int b = 0; b < B; b++) {
        js[b] = ex[b].state;  /* drawn for the global batch in cllm_train_run */
        tw[b] = ex[b].fixed;
        if (o->loss == CLLM_CONS_LOCAL && js[b] >= 0 && js[b] + 1 < ex[b].k) tw[b] = ex[b].states + (size_t)(js[b] + 1) * ex[b].n;
        te_off[b] = te_need;
        te_need += (size_t)ex[b].m * V;
    }
    if (!separate && !o->separate_passes) return one_pass(t, ex, js, B, inv_r, cons, ar);
    if ((rc = grow_f(&t->teacher, &t->te_cap, te_need ? te_need : 1))) return rc;
    if (separate) {
        for (int b = 0; b < B; b++) s[b] = (seqspec){ ex[b].ctx, ex[b].n_ctx, tw[b], ex[b].m };
        if ((rc = forward(t, s, B, NULL, base, &T))) return rc;
        memcpy(t->teacher, t->logits, te_need * sizeof(float));
    }
    /* AR */
    for (int b = 0; b < B; b++)
        s[b] = o->use_labels ? (seqspec){ ex[b].ctx, ex[b].n_prompt, ex[b].labels, ex[b].nl }
                             : (seqspec){ ex[b].ctx, ex[b].n_ctx, ex[b].fixed, ex[b].m };
    if ((rc = forward(t, s, B, NULL, base, &T))) return rc;
    if (!separate) memcpy(t->teacher, t->logits, te_need * sizeof(float));   /* the same windows */
    double w = o->ar_weight;
    for (int b = 0; b < B && !rc; b++) {
        size_t off = base[b] * V;
        double l = 0;
        if (w > 0) {
            rc = cllm_ce_loss(t->logits + off, V, s[b].b, s[b].nb, t->ar_eps, CLLM_REDUCE_MEAN, (float)(w * inv_r),
                              t->dlogits + off, &l);
            *ar += l / w;
        } else {
            rc = cllm_ce_loss(t->logits + off, V, s[b].b, s[b].nb, t->ar_eps, CLLM_REDUCE_MEAN, inv_r, NULL, &l);
            *ar += l;
        }
    }
    if (!rc && w > 0) rc = cllm_train_backward(t->act, t->m, t->dlogits, t->grads);
    if (rc) return rc;
    /* Consistency: student on x‖y(j) (its window: the m rows; none without a state). */
    if (!student_specs(s, ex, js, B)) return 0;
    if ((rc = forward(t, s, B, NULL, base, &T))) return rc;
    for (int b = 0; b < B && !rc; b++) {
        if (js[b] < 0) continue;
        size_t off = base[b] * V;
        rc = cllm_consistency_loss(t->logits + off, t->teacher + te_off[b], V, s[b].b, tw[b], ex[b].m,
                                   o->cons_mean ? CLLM_REDUCE_MEAN : CLLM_REDUCE_SUM, inv_r, t->dlogits + off, cons,
                                   NULL);
    }
    if (!rc) rc = cllm_train_backward(t->act, t->m, t->dlogits, t->grads);
    return rc;
}

#if CLLM_CUDA
/* ---- the same micro-batch on a CUDA device ------------------------------ */

/* The device trainer fits B sequences of T rows, `tokens` of them in all (its
 * activations are planned for the packed tokens, not B x T), and `slots`
 * teacher rows, or is made again, larger, with the weights, moments and the
 * gradients summed so far passing through the host (sizes grow by a quarter
 * at least, so this happens a few times per run; call it before a
 * micro-batch's first call: teacher rows do not survive it). */
static int cu_fit(trainer *t, int B, int T, int64_t tokens, int slots) {
    cllm_cuda_train_opts o = t->cuo;
    if (t->cu && B <= o.max_B && T <= o.max_T && tokens <= o.max_tokens && slots <= o.teacher_rows) return 0;
    if (B > o.max_B) o.max_B = B;
    if (tokens > o.max_tokens) {
        int64_t nk = (int64_t)o.max_tokens + o.max_tokens / 4;
        if (nk < tokens) nk = tokens;
        nk = (nk + 63) / 64 * 64;
        o.max_tokens = nk < INT_MAX ? (int)nk : INT_MAX;   /* init caps it at 2 max_B x max_T (sequences and forks) */
    }
    if (T > o.max_T) {
        int64_t nt = (int64_t)o.max_T + o.max_T / 4;
        if (nt < T) nt = T;
        nt = (nt + 63) / 64 * 64;
        int lim = t->o->max_len > 0 ? t->o->max_len : t->m->cfg.max_ctx;
        if (lim > 0 && nt > lim) nt = lim > T ? lim : T;
        o.max_T = (int)nt;
    }
    if (slots > o.teacher_rows) {
        int64_t ns = (int64_t)o.teacher_rows + o.teacher_rows / 4;
        if (ns < slots) ns = slots;
        o.teacher_rows = (int)((ns + 63) / 64 * 64);
    }
    int rc, had = t->cu != NULL;
    if (had) {
        if ((rc = cllm_cuda_train_get_params(t->cu, t->m->params)) || (rc = cllm_cuda_train_get_opt(t->cu, &t->opt)) ||
            (rc = cllm_cuda_train_get_grads(t->cu, t->grads)))
            return rc;
        cllm_cuda_train_free(t->cu);
        t->cu = NULL;
    }
    if ((rc = cllm_cuda_train_init(&t->cu, t->m, &o))) return rc;
    t->cuo = o;
    if ((rc = cllm_cuda_train_set_opt(t->cu, &t->opt))) return rc;
    if (had && (rc = cllm_cuda_train_set_grads(t->cu, t->grads))) return rc;
    return 0;
}

static int cu_rows(trainer *t, size_t n) {
    if (t->rows_cap >= n) return 0;
    cllm_cuda_loss_row *r = realloc(t->rows, n * sizeof *r);
    if (!r) return cllm_error(CLLM_ENOMEM, "out of memory (%zu loss rows)", n);
    t->rows = r;
    t->rows_cap = n;
    return 0;
}

static cllm_cuda_loss_row cu_row(int row, int target, float ce_scale, int teacher, float soft_scale, int save) {
    cllm_cuda_loss_row r = { row, target, ce_scale, teacher, soft_scale, save };
    return r;
}

/* One device call on B sequences a‖b (T = seq_T) and their forks (or NULL)
 * with the n_rows in t->rows. */
static int cu_call(trainer *t, const seqspec *s, int B, int T, const cllm_fork *fork, int n_rows, double eps,
                   int backward, double *ce, double *soft) {
    int rc = pack_tokens(t, s, B, T);
    if (rc) return rc;
    for (int b = 0; fork && b < B; b++) t->tokens_fwd += (uint64_t)fork[b].n;
    return cllm_cuda_train_micro_fork(t->cu, t->tokens, t->lens, B, T, fork, t->rows, n_rows, eps, backward, ce,
                                      soft);
}

/* one_pass's twin on the device, one call: the AR rows save the teacher
 * slots, the forks' rows (after them) read them. With --ar-weight 0 the AR
 * rows would still carry a gradient: cu_micro_batch keeps separate passes. */
static int cu_one_pass(trainer *t, example *ex, int B, float inv_r, double *cons, double *ar) {
    const cllm_train_opts *o = t->o;
    seqspec s[B > 0 ? B : 1];
    cllm_fork fork[B > 0 ? B : 1];
    int js[B > 0 ? B : 1], d[B > 0 ? B : 1], te_off[B > 0 ? B : 1], slots = 0, n = 0, rc;
    int64_t tokens = 0;
    size_t need = 0;
    for (int b = 0; b < B; b++) js[b] = ex[b].state;
    if ((rc = student_forks(t, ex, js, B, s, fork, d))) return rc;
    for (int b = 0; b < B; b++) {
        te_off[b] = slots;
        slots += ex[b].m;
        tokens += ex[b].n_ctx + ex[b].m + fork[b].n;
        need += (size_t)(ex[b].m + fork[b].n);
    }
    int T = seq_T(s, B);
    if ((rc = cu_fit(t, B, T, tokens, slots)) || (rc = cu_rows(t, need))) return rc;
    double w = o->ar_weight, ce = 0, soft = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < ex[b].m; i++)
            t->rows[n++] = cu_row(b * T + ex[b].n_ctx - 1 + i, ex[b].fixed[i], (float)(w * inv_r) / (float)ex[b].m, -1,
                                  0, te_off[b] + i);
    for (int b = 0; b < B; b++) {
        float sc = o->cons_mean && fork[b].n ? inv_r / (float)fork[b].n : inv_r;
        for (int i = 0; i < fork[b].n; i++) t->rows[n++] = cu_row((B + b) * T + i, -1, 0, te_off[b] + d[b] + i, sc, -1);
    }
    if ((rc = cu_call(t, s, B, T, fork, n, t->ar_eps, 1, &ce, &soft))) return rc;
    *ar += ce / w;
    *cons += soft;
    return 0;
}

/* micro_batch's twin: the same losses, scales and sums, as loss rows. */
static int cu_micro_batch(trainer *t, example *ex, int B, int R, double *cons, double *ar) {
    const cllm_train_opts *o = t->o;
    const float inv_r = 1.0f / (float)R;
    seqspec s[B > 0 ? B : 1];
    int T, rc, n = 0;
    double l = 0;

    if (o->objective == CLLM_OBJ_SFT) {
        size_t need = 0;
        int64_t tokens = 0;
        for (int b = 0; b < B; b++) {
            s[b] = (seqspec){ ex[b].ctx, ex[b].n_ctx, ex[b].fixed, ex[b].m };
            need += (size_t)ex[b].m;
            tokens += ex[b].n_ctx + ex[b].m;
        }
        T = seq_T(s, B);
        if ((rc = cu_fit(t, B, T, tokens, 0)) || (rc = cu_rows(t, need))) return rc;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < ex[b].m; i++)
                t->rows[n++] = cu_row(b * T + ex[b].n_ctx - 1 + i, ex[b].fixed[i], inv_r / (float)ex[b].m, -1, 0, -1);
        if ((rc = cu_call(t, s, B, T, NULL, n, t->ar_eps, 1, &l, NULL))) return rc;
        *ar += l;
        return 0;
    }

    int js[B > 0 ? B : 1];
    const int32_t *tw[B > 0 ? B : 1];
    int te_off[B > 0 ? B : 1], slots = 0, Tmax = 1;
    size_t need = 0;
    int64_t tokens = 0;   /* the most any of the calls below packs */
    int separate = o->loss == CLLM_CONS_LOCAL || o->use_labels;
    if (!separate && !o->separate_passes && o->ar_weight > 0) return cu_one_pass(t, ex, B, inv_r, cons, ar);
    for (int b = 0; b < B; b++) {
        js[b] = ex[b].state;
        tw[b] = ex[b].fixed;
        if (o->loss == CLLM_CONS_LOCAL && js[b] >= 0 && js[b] + 1 < ex[b].k) tw[b] = ex[b].states + (size_t)(js[b] + 1) * ex[b].n;
        te_off[b] = slots;
        slots += ex[b].m;
        int len = ex[b].n_ctx + ex[b].m;
        if (o->use_labels && ex[b].n_prompt + ex[b].nl > len) len = ex[b].n_prompt + ex[b].nl;
        if (len > Tmax) Tmax = len;
        tokens += len;
        need += (size_t)(ex[b].m > ex[b].nl ? ex[b].m : ex[b].nl);
    }
    if ((rc = cu_fit(t, B, Tmax, tokens, slots)) || (rc = cu_rows(t, need))) return rc;
    if (separate) {  /* the teacher rows, forward only */
        for (int b = 0; b < B; b++) s[b] = (seqspec){ ex[b].ctx, ex[b].n_ctx, tw[b], ex[b].m };
        T = seq_T(s, B);
        n = 0;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < ex[b].m; i++) t->rows[n++] = cu_row(b * T + ex[b].n_ctx - 1 + i, -1, 0, -1, 0, te_off[b] + i);
        if ((rc = cu_call(t, s, B, T, NULL, n, t->ar_eps, 0, NULL, NULL))) return rc;
    }
    /* AR (and the teacher rows when they are its rows) */
    double w = o->ar_weight;
    for (int b = 0; b < B; b++)
        s[b] = o->use_labels ? (seqspec){ ex[b].ctx, ex[b].n_prompt, ex[b].labels, ex[b].nl }
                             : (seqspec){ ex[b].ctx, ex[b].n_ctx, ex[b].fixed, ex[b].m };
    T = seq_T(s, B);
    n = 0;
    for (int b = 0; b < B; b++) {
        float sc = (w > 0 ? (float)(w * inv_r) : inv_r) / (float)s[b].nb;
        for (int i = 0; i < s[b].nb; i++)
            t->rows[n++] = cu_row(b * T + s[b].na - 1 + i, s[b].b[i], sc, -1, 0, separate ? -1 : te_off[b] + i);
    }
    if ((rc = cu_call(t, s, B, T, NULL, n, t->ar_eps, w > 0, &l, NULL))) return rc;
    *ar += w > 0 ? l / w : l;
    /* Consistency: student on x‖y(j), rows from the first difference. */
    if (!student_specs(s, ex, js, B)) return 0;
    T = seq_T(s, B);
    n = 0;
    for (int b = 0; b < B; b++) {
        if (js[b] < 0) continue;
        int d = cllm_first_diff(s[b].b, tw[b], ex[b].m), kept = ex[b].m - d;
        if (kept == 0) continue;
        float sc = o->cons_mean ? inv_r / (float)kept : inv_r;
        for (int i = d; i < ex[b].m; i++) t->rows[n++] = cu_row(b * T + ex[b].n_ctx - 1 + i, -1, 0, te_off[b] + i, sc, -1);
    }
    l = 0;
    if ((rc = cu_call(t, s, B, T, NULL, n, t->ar_eps, 1, NULL, &l))) return rc;
    *cons += l;
    return 0;
}

/* The device's weights and moments into m->params and t->opt (checkpoints,
 * the final save). */
static int cu_to_host(trainer *t) {
    int rc = 0;
    if (t->cu && !(rc = cllm_cuda_train_get_params(t->cu, t->m->params))) rc = cllm_cuda_train_get_opt(t->cu, &t->opt);
    return rc;
}
#endif

static void trainer_free(trainer *t) {
    cllm_act_free(t->act);
    free(t->tokens);
    free(t->lens);
    free(t->logits);
    free(t->dlogits);
    free(t->teacher);
    free(t->ftok);
    free(t->grads);
    cllm_adamw_free(&t->opt);
#if CLLM_CUDA
    cllm_cuda_train_free(t->cu);
    free(t->rows);
#endif
}

static int put_metric(cllm_writer *w, cllm_packbuf *b, const char *name, double v, int64_t step, const char *unit) {
    cllm_metric_rec r = { name, v, step, unit };
    int rc = cllm_rec_metric_pack(b, &r);
    if (!rc) rc = cllm_writer_put(w, b->data, b->size);
    return rc;
}

static void opts_string(char *s, size_t cap, const cllm_train_opts *o, int64_t total, int64_t max_epochs) {
    snprintf(s, cap,
             "objective=%s loss=%s cons=%s lr=%.9g warmup=%.9g clip=%.9g ar_weight=%.9g smoothing=%.9g wd=%.9g "
             "betas=%.9g,%.9g eps=%.9g epochs=%lld steps=%lld batch=%d accum=%d labels=%d shuffle=%d seed=%llu "
             "max_len=%d",
             o->objective == CLLM_OBJ_SFT ? "sft" : "cllm", o->loss == CLLM_CONS_LOCAL ? "local" : "global",
             o->cons_mean ? "mean" : "sum", o->lr, o->warmup, o->clip, o->ar_weight, o->label_smoothing,
             o->weight_decay, o->beta1, o->beta2, o->eps, (long long)max_epochs, (long long)total, o->batch,
             o->grad_accum, o->use_labels, o->shuffle_buffer, (unsigned long long)o->seed, o->max_len);
}

/* The settings of two opts_string texts that differ, as "k=OLD (now k=NEW)"
 * joined by ", ", for a one-line message; both texts whole when their keys do
 * not line up (a checkpoint of another version). */
static void opts_diff(char *out, size_t cap, const char *was, const char *now) {
    size_t len = 0;
    int same_keys = 1;
    out[0] = 0;
    for (const char *p = was, *q = now; *p || *q;) {
        size_t n = strcspn(p, " "), m = strcspn(q, " ");
        const char *e = memchr(p, '=', n), *f = memchr(q, '=', m);
        if (!e || !f || e - p != f - q || memcmp(p, q, (size_t)(e - p))) { same_keys = 0; break; }
        if ((n != m || memcmp(p, q, n)) && len < cap) {
            int w = snprintf(out + len, cap - len, "%s%.*s (now %.*s)", len ? ", " : "", (int)n, p, (int)m, q);
            len = w < 0 ? cap : len + (size_t)w;
        }
        p += n + (p[n] == ' ');
        q += m + (q[m] == ' ');
    }
    if (!same_keys || !len) snprintf(out, cap, "%s (now %s)", was, now);
}

/* The checkpoint to resume from (a file, or a directory's newest valid
 * one). With several ranks rank 0 picks it and the others load the file it
 * picked: each picking for itself could choose differently where a shared
 * filesystem shows a new file late on some nodes (NFS caches directory
 * listings), and the run then stopped with "ranks disagree on the starting
 * weights" (tests/sh/mpi.sh 3a). Rank 0's failure returns before the
 * broadcast; cllm-train's cllm_dist_abort then ends the others. */
static int load_resume_ckpt(const char *from, int rank, int nranks, cllm_ckpt *k, char **kp) {
    *kp = NULL;
    if (nranks == 1) return cllm_ckpt_load(from, k, kp);
    int64_t len = 0;
    int rc = 0;
    if (rank == 0) {
        if ((rc = cllm_ckpt_load(from, k, kp))) return rc;
        len = (int64_t)strlen(*kp);
    }
    char *path = NULL;
    if (!(rc = cllm_dist_bcast(&len, sizeof len, 0))) {
        path = rank == 0 ? *kp : cllm_malloc((size_t)len + 1);
        if (!path) rc = CLLM_ENOMEM;
    }
    if (!rc) rc = cllm_dist_bcast(path, (size_t)len + 1, 0);
    if (rank == 0) {
        if (rc) { cllm_ckpt_free(k); free(*kp); *kp = NULL; }
        return rc;
    }
    if (!rc) {
        rc = cllm_ckpt_load(path, k, kp);
        if (rc) cllm_error_prefix(rc, "rank %d, loading rank 0's choice: ", rank);
    }
    free(path);
    return rc;
}

/* Rank 0's copy of the whole moments, sent by every rank's slice (the file
 * holds them whole, so that it resumes with or without sharding). Called by
 * every rank; *m and *v are malloc'd on rank 0 only. A failed allocation on
 * rank 0 returns before the gather: cllm-train's cllm_dist_abort then ends
 * the ranks that wait in it. */
static int gather_moments(trainer *t, float **m, float **v) {
    const size_t n = t->m->n_params;
    *m = *v = NULL;
    if (cllm_dist_rank() == 0 && (!(*m = cllm_malloc(n * sizeof(float))) || !(*v = cllm_malloc(n * sizeof(float))))) {
        free(*m);
        *m = NULL;
        return cllm_error(CLLM_ENOMEM, "out of memory gathering the optimizer state for a checkpoint (%zu parameters)", n);
    }
    int rc = cllm_dist_gather_f32(t->opt.m, *m, n, 0);
    if (!rc) rc = cllm_dist_gather_f32(t->opt.v, *v, n, 0);
    if (rc) { free(*m); free(*v); *m = *v = NULL; }
    return rc;
}

/* Rank 0 writes a checkpoint. Every rank calls this: with sharded moments
 * the others send their slices first. */
static int save_ckpt(trainer *t, const pipeline *p, const char *dir, int64_t step, int64_t total, const char *opts,
                     char **path) {
    const cllm_config *c = &t->m->cfg;
    float *fm = NULL, *fv = NULL;   /* the gathered moments (shard) */
    int rc = 0;
    if (!t->shard && cllm_dist_rank() != 0) return 0;
#if CLLM_CUDA
    if ((rc = cu_to_host(t))) return rc;   /* on CUDA the weights and moments (or the slice's) live on the device */
#endif
    if (t->shard && (rc = gather_moments(t, &fm, &fv))) return rc;
    if (cllm_dist_rank() != 0) return 0;
    cllm_ckpt k;
    memset(&k, 0, sizeof k);
    k.step = (uint64_t)step;
    k.total_steps = (uint64_t)total;
    k.consumed = p->delivered;
    k.data_hash = p->hash;
    k.adam_t = (uint64_t)t->opt.t;
    k.n_params = t->m->n_params;
    memcpy(k.rng, t->rng.s, sizeof k.rng);
    k.world = (uint32_t)cllm_dist_size();
    memcpy(k.data_rng, p->rng.s, sizeof k.data_rng);
    int32_t shape[7] = { c->n_layer, c->d_model, c->n_head, c->n_head_kv, c->head_dim, c->d_ff, c->vocab };
    memcpy(k.shape, shape, sizeof shape);
    snprintf(k.opts, sizeof k.opts, "%s", opts);
    k.params = t->m->params;
    k.m = fm ? fm : t->opt.m;
    k.v = fv ? fv : t->opt.v;
    rc = cllm_ckpt_save(dir, &k, t->o->keep, path);
    free(fm);
    free(fv);
    return rc;
}

/* Is the input one we can read again (a file, or standard input redirected
 * from a file)? Sets *path to what to open each pass. */
static int input_path(const char *in, const char **path, int *again) {
    struct stat st;
    if (!in || !strcmp(in, "-")) {
        if (fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode)) {
            *path = "/dev/stdin";
            *again = 1;
        } else {
            *path = NULL;
            *again = 0;
        }
        return 0;
    }
    if (stat(in, &st)) return cllm_error(CLLM_EIO, "%s: cannot open: %s", in, strerror(errno));
    *path = in;
    *again = S_ISREG(st.st_mode);
    return 0;
}

int cllm_train_run(cllm_model *m, const cllm_train_opts *o) {
    const cllm_config *c = &m->cfg;
    if (!o->output) return cllm_error(CLLM_EINVAL, "no output model");
    if (o->batch < 1 || o->grad_accum < 1 || o->shuffle_buffer < 1 || !(o->lr >= 0) || !(o->warmup >= 0 && o->warmup <= 1))
        return cllm_error(CLLM_EINVAL, "bad training options");
    const char *path = NULL;
    int again = 0;
    int rc = input_path(o->input, &path, &again);
    if (rc) return rc;
    const int rank = cllm_dist_rank(), nranks = cllm_dist_size();
    const int on_cuda = o->device == CLLM_DEVICE_CUDA;
#if !CLLM_CUDA
    if (on_cuda) return cllm_error(CLLM_EUNSUP, "training on CUDA: this build has no CUDA backend (make CUDA=1)");
#endif
    if (o->allreduce == CLLM_ALLREDUCE_NCCL && !on_cuda)
        return cllm_error(CLLM_EINVAL, "--allreduce nccl sums gradients on CUDA devices: it needs --device cuda");
    {   /* every rank on the same kind of device, summing and updating the same way (else some wait forever) */
        int32_t how[3] = { o->device, o->allreduce, o->shard_optimizer };
        if ((rc = cllm_dist_check_same(how, sizeof how,
                                       "the device, --allreduce and --shard-optimizer (is a GPU missing on a node?)")))
            return rc;
    }
    if (nranks > 1 && (!o->input || !strcmp(o->input, "-") || !again))
        return cllm_error(CLLM_EINVAL, "with %d ranks the input must be a file named on the command line (every rank reads it)", nranks);
    /* that the model can be written is otherwise found out only after the last step */
    if (rank == 0 && (rc = cllm_model_save_check(m, o->output))) return rc;

    /* The schedule's length. */
    int64_t max_epochs = o->epochs;
    int64_t total = o->max_steps;
    const int64_t per_step = (int64_t)o->batch * o->grad_accum * nranks;  /* the global batch */
    if (!again && (o->epochs > 1 || (o->max_steps && !o->epochs) || o->resume)) {
        if (o->epochs > 1) return cllm_error(CLLM_EINVAL, "--epochs %d needs an input that can be read again (a file, not a pipe)", o->epochs);
        max_epochs = 1;
    }
    if (!total) {
        if (!again)
            return cllm_error(CLLM_EINVAL, "the input is a pipe: give --max-steps (the schedule needs its length) or read a file");
        if (!max_epochs) max_epochs = 1;
        uint64_t n;
        if ((rc = count_examples(o, m, path, &n))) return rc;
        if (n == 0) return cllm_error(CLLM_EINVAL, "no training examples in the input");
        total = max_epochs * (int64_t)((n + (uint64_t)per_step - 1) / (uint64_t)per_step);
    }
    {
        int64_t len[2] = { total, max_epochs };
        if ((rc = cllm_dist_check_same(len, sizeof len, "the schedule's length (is the input the same file?)"))) return rc;
    }
    int64_t warm = cllm_warmup_steps(o->warmup, total);
    char opts[CLLM_CKPT_OPTS];
    opts_string(opts, sizeof opts, o, total, max_epochs);

    trainer t;
    memset(&t, 0, sizeof t);
    t.m = m;
    t.o = o;
    t.ar_eps = o->label_smoothing >= 0 ? o->label_smoothing : (o->objective == CLLM_OBJ_SFT ? 0.0 : 0.1);
    if (!(t.ar_eps >= 0 && t.ar_eps < 1)) return cllm_error(CLLM_EINVAL, "label smoothing must be in [0, 1)");
    cllm_rng_seed(&t.rng, o->seed);
    pipeline p;
    memset(&p, 0, sizeof p);
    p.src = (source){ .o = o, .m = m, .path = path };
    p.cap = o->shuffle_buffer;
    p.max_epochs = max_epochs;
    cllm_rng_seed(&p.rng, o->seed ^ 0x53485546464c45ull);
    cllm_writer *w = NULL;
    cllm_packbuf pb = { 0 };
    char *ckdir = NULL;
#if CLLM_CUDA
    cllm_nccl *nccl = NULL;   /* the devices' all-reduce, when the gradients are summed there */
#endif
    example *ex = NULL;
    int n_ex = 0;
    int64_t step = 0;

    if (!(p.buf = cllm_calloc((size_t)p.cap, sizeof *p.buf)) || !(ex = cllm_calloc((size_t)per_step, sizeof *ex)) ||
        !(t.grads = cllm_calloc(m->n_params, sizeof(float)))) {
        rc = CLLM_ENOMEM;
        goto out;
    }
    /* The optimizer state for this rank's slice (ZeRO-1), or for all of it. */
    t.shard = o->shard_optimizer && nranks > 1;
    cllm_dist_slice(m->n_params, t.shard ? rank : 0, t.shard ? nranks : 1, &t.off, &t.len);
    if ((rc = cllm_adamw_init(&t.opt, t.len))) goto out;
    t.opt.beta1 = o->beta1;
    t.opt.beta2 = o->beta2;
    t.opt.eps = o->eps;
    t.opt.weight_decay = o->weight_decay;
    for (int i = 0; i < m->n_tensors && !rc && o->weight_decay != 0; i++) {   /* norms: the part in the slice */
        size_t lo = m->tensors[i].offset, hi = lo + m->tensors[i].numel;
        if (lo < t.off) lo = t.off;
        if (hi > t.off + t.len) hi = t.off + t.len;
        if (m->tensors[i].n_dims == 1 && lo < hi) rc = cllm_adamw_no_decay(&t.opt, lo - t.off, hi - lo);
    }
    if (rc) goto out;
#if CLLM_CUDA
    if (on_cuda) {  /* this rank's device; NCCL on it when the gradients are summed on the devices */
        int use_nccl = o->allreduce == CLLM_ALLREDUCE_NCCL || (o->allreduce == CLLM_ALLREDUCE_AUTO && nranks > 1);
        if (t.shard && !use_nccl) {   /* every rank: --allreduce is the same on all */
            rc = cllm_error(CLLM_EUNSUP, "--shard-optimizer on CUDA: NCCL reduce-scatters the gradients and gathers the "
                            "weights (not --allreduce mpi)");
            goto out;
        }
        t.cuo.shard_rank = rank;   /* the device trainer's slice: the host's (cllm_dist_slice) */
        t.cuo.shard_ranks = t.shard ? nranks : 0;
        if ((rc = cllm_nccl_pick_device(&t.cuo.device, use_nccl))) goto out;
        if (use_nccl && (rc = cllm_nccl_init(&nccl, t.cuo.device))) goto out;
    }
#endif
    if (o->checkpoint_every > 0 || o->resume) {
        if (o->checkpoint_dir) ckdir = cllm_strdup(o->checkpoint_dir);
        else {
            size_t l = strlen(o->output);
            while (l > 1 && o->output[l - 1] == '/') l--;
            if ((ckdir = cllm_malloc(l + 6))) { memcpy(ckdir, o->output, l); memcpy(ckdir + l, ".ckpt", 6); }
        }
        if (!ckdir) { rc = CLLM_ENOMEM; goto out; }
    }

    /* Resume: state from the checkpoint, then replay the input up to it. */
    if (o->resume) {
        cllm_ckpt k;
        char *kp = NULL;
        if ((rc = load_resume_ckpt(o->resume, rank, nranks, &k, &kp))) goto out;
        int32_t shape[7] = { c->n_layer, c->d_model, c->n_head, c->n_head_kv, c->head_dim, c->d_ff, c->vocab };
        if (k.n_params != m->n_params || memcmp(shape, k.shape, sizeof shape))
            rc = cllm_error(CLLM_EINVAL, "%s: checkpoint of another model shape (%llu parameters; this model has %zu)", kp,
                            (unsigned long long)k.n_params, m->n_params);
        else if (strcmp(k.opts, opts)) {
            char diff[2 * CLLM_CKPT_OPTS + 16];
            opts_diff(diff, sizeof diff, k.opts, opts);
            rc = cllm_error(CLLM_EINVAL, "%s: checkpoint made with other options: %s", kp, diff);
        } else if (k.world != (uint32_t)nranks)
            rc = cllm_error(CLLM_EINVAL, "%s: checkpoint of a run on %u ranks (this one has %d): resume with as many", kp,
                            k.world, nranks);
        else if (k.total_steps != (uint64_t)total)
            rc = cllm_error(CLLM_EINVAL, "%s: checkpoint of a %llu-step run (this one has %lld)", kp,
                            (unsigned long long)k.total_steps, (long long)total);
        if (!rc) {
            memcpy(m->params, k.params, m->n_params * sizeof(float));
            memcpy(t.opt.m, k.m + t.off, t.len * sizeof(float));   /* this rank's slice (all: not sharded) */
            memcpy(t.opt.v, k.v + t.off, t.len * sizeof(float));
            t.opt.t = (int64_t)k.adam_t;
            memcpy(t.rng.s, k.rng, sizeof k.rng);
            step = (int64_t)k.step;
            while (!rc && p.delivered < k.consumed) {
                example e;
                int r = pipe_next(&p, &e);
                if (r == PIPE_EXAMPLE) example_free(&e);
                else if (r == CLLM_EOF) rc = cllm_error(CLLM_EINVAL, "%s: the input ends before the checkpoint's position (%llu examples)", kp, (unsigned long long)k.consumed);
                else if (r < 0) rc = r;
            }
            if (!rc && (p.hash != k.data_hash || memcmp(p.rng.s, k.data_rng, sizeof k.data_rng)))
                rc = cllm_error(CLLM_EINVAL, "%s: the input differs from the one this checkpoint was trained on", kp);
        }
        cllm_ckpt_free(&k);
        free(kp);
        if (rc) goto out;
    }

    if ((rc = cllm_dist_check_same(m->params, m->n_params * sizeof(float), "the starting weights"))) goto out;
    /* The metric stream (rank 0). */
    if (rank == 0) {
        if ((rc = cllm_writer_open_for_model(&w, &pb, o->metrics, o->force, m, "cllm-train", o->argc, o->argv)))
            goto out;
    }

    int ended = 0;
    while (step < total && !ended) {
        double t0 = cllm_now_s();
        /* Gather the step's examples (never across an epoch boundary). */
        for (int i = 0; i < n_ex; i++) example_free(&ex[i]);
        n_ex = 0;
        const uint64_t delivered0 = p.delivered, hash0 = p.hash;   /* the position before them */
        const cllm_rng rng0 = p.rng;
        while (n_ex < per_step) {
            int r = pipe_next(&p, &ex[n_ex]);
            if (r == PIPE_EXAMPLE) { n_ex++; continue; }
            if (r == PIPE_EPOCH_END) { if (n_ex) break; continue; }
            if (r == CLLM_EOF) { ended = 1; break; }
            rc = r;
            if (cllm_interrupted) {
                /* A signal stopped a read that waited for input (a pipe):
                 * between steps, so the steps done are checkpointed as after
                 * a step, at the position before this step's examples (what
                 * a resume replays up to). Without this the run ended as a
                 * read error (exit 1), its last steps lost. */
                p.delivered = delivered0;
                p.hash = hash0;
                p.rng = rng0;
                rc = 0;
                /* Not with sharded moments: gathering them needs every rank, and
                 * only this one is here. (With several ranks the input is a
                 * file, whose reads a signal does not interrupt.) */
                if (o->checkpoint_every > 0 && step > 0 && step % o->checkpoint_every && rank == 0 && !t.shard)
                    rc = save_ckpt(&t, &p, ckdir, step, total, opts, NULL);
                if (!rc) rc = cllm_error(CLLM_EINTR, "interrupted after step %lld", (long long)step);
            }
            goto out;
        }
        if (n_ex == 0) break;
        for (int i = 0; i < n_ex; i++)   /* a pipe, or a file with --max-steps, had no counting pass */
            if ((rc = check_example_len(o, m, &ex[i]))) goto out;
        /* States for the global batch in its order, then this rank's share. */
        int n_loc = 0;
        for (int i = 0; i < n_ex; i++) {
            ex[i].state = o->objective == CLLM_OBJ_CLLM && ex[i].k ? (int)cllm_rng_below(&t.rng, (uint64_t)ex[i].k) : -1;
            if (i % nranks != rank) example_free(&ex[i]);
            else if (n_loc++ != i) { ex[n_loc - 1] = ex[i]; memset(&ex[i], 0, sizeof ex[i]); }
        }
        t.tokens_fwd = 0;
        double cons = 0, ar = 0;
#if CLLM_CUDA
        if (on_cuda) {
            if (t.cu && (rc = cllm_cuda_train_zero_grad(t.cu))) goto out;
            for (int i = 0; i < n_loc && !rc; i += o->batch) {
                int B = n_loc - i < o->batch ? n_loc - i : o->batch;
                rc = cu_micro_batch(&t, ex + i, B, n_ex, &cons, &ar);
            }
            if (rc) goto out;
        } else
#endif
        {
            memset(t.grads, 0, m->n_params * sizeof(float));
            for (int i = 0; i < n_loc && !rc; i += o->batch) {
                int B = n_loc - i < o->batch ? n_loc - i : o->batch;
                rc = micro_batch(&t, ex + i, B, n_ex, &cons, &ar);
            }
            if (rc) goto out;
        }
        /* The gradients summed over the ranks: on the devices (NCCL), through
         * host copies (CUDA with --allreduce mpi), or on the host. */
#if CLLM_CUDA
        if (on_cuda && (nccl || nranks > 1)) {
            if (!t.cu && (rc = cu_fit(&t, 1, 1, 1, 0))) goto out;   /* a rank with no example yet: zero gradients */
            if (nccl) rc = cllm_cuda_train_allreduce(t.cu, nccl);
            else if (!(rc = cllm_cuda_train_get_grads(t.cu, t.grads)) && !(rc = cllm_dist_sum_f32(t.grads, m->n_params)))
                rc = cllm_cuda_train_set_grads(t.cu, t.grads);
            if (rc) goto out;
        } else
#endif
        if (nranks > 1 &&   /* sharded: each rank gets the sum of its slice only */
            (rc = t.shard ? cllm_dist_sum_slice_f32(t.grads, m->n_params) : cllm_dist_sum_f32(t.grads, m->n_params)))
            goto out;
        /* Whether to stop after this step. With several ranks only the signal
         * shared here counts: one that arrives later (say while rank 0 writes
         * a checkpoint and the others already compute the next step) is
         * shared at the next step's sum. Acted on where it landed, it sent
         * that rank to the barrier below while the others summed the next
         * step's gradients, and the job hung (tests/sh/mpi.sh 5). */
        int64_t stop_sig = 0;
        if (nranks > 1) {  /* loss sums over the ranks; a signal on any rank stops all after this step */
            double sums[3] = { cons, ar, (double)t.tokens_fwd };
            stop_sig = cllm_interrupted;
            if ((rc = cllm_dist_sum_f64(sums, 3)) || (rc = cllm_dist_max_i64(&stop_sig, 1))) goto out;
            cons = sums[0];
            ar = sums[1];
            t.tokens_fwd = (uint64_t)sums[2];
            if (stop_sig && !cllm_interrupted) cllm_interrupted = (sig_atomic_t)stop_sig;
        }
        double gn, lr = o->lr * cllm_lr_cosine(step, warm, total);
#if CLLM_CUDA
        if (on_cuda) {  /* norm, clipping, AdamW on the device; a non-finite norm ends the run unsaved */
            if ((rc = cllm_cuda_train_step(t.cu, lr, o->clip, &gn, NULL))) goto out;
            if (!isfinite(gn)) { rc = cllm_error(CLLM_EINVAL, "step %lld: the gradient is not finite", (long long)step + 1); goto out; }
            if (t.shard && (rc = cllm_cuda_train_gather(t.cu, nccl))) goto out;   /* the other ranks' slices */
        } else
#endif
        {   /* Sharded: the norm from the slices' sums of squares (the same value up to
             * the order of the double sum, so clipping may differ in the last bit),
             * each rank updates its slice, and all take the others' from them. */
            double ss = cllm_grad_sumsq(t.grads + t.off, t.len);
            if (t.shard && (rc = cllm_dist_sum_f64(&ss, 1))) goto out;
            gn = sqrt(ss);
            if (!isfinite(gn)) { rc = cllm_error(CLLM_EINVAL, "step %lld: the gradient is not finite", (long long)step + 1); goto out; }
            cllm_grad_clip(t.grads + t.off, t.len, gn, o->clip);
            cllm_adamw_step(&t.opt, m->params + t.off, t.grads + t.off, lr);
            if (t.shard && (rc = cllm_dist_allgather_f32(m->params, m->n_params))) goto out;
        }
        step++;
        double dt = cllm_now_s() - t0;
        double loss = o->objective == CLLM_OBJ_SFT ? ar : cons + o->ar_weight * ar;
        double tps = dt > 0 ? (double)t.tokens_fwd / dt : 0, eps = dt > 0 ? (double)n_ex / dt : 0;
        if (w && (rc = put_metric(w, &pb, "loss", loss, step, NULL))) goto out;
        if (w && o->objective == CLLM_OBJ_CLLM &&
            ((rc = put_metric(w, &pb, "consistency", cons, step, NULL)) || (rc = put_metric(w, &pb, "ar", ar, step, NULL))))
            goto out;
        if (w && ((rc = put_metric(w, &pb, "lr", lr, step, NULL)) || (rc = put_metric(w, &pb, "grad_norm", gn, step, NULL)) ||
            (rc = put_metric(w, &pb, "tokens_per_s", tps, step, "tokens/s")) ||
            (rc = put_metric(w, &pb, "examples_per_s", eps, step, "examples/s"))))
            goto out;
        char *ck = NULL;
        /* A signal during the last step checkpoints it too: the run ends without
         * its model (cllm-train(1)), and a resume from here only writes it. */
        int want_ck = o->checkpoint_every > 0 &&
                      (step % o->checkpoint_every == 0 || (nranks > 1 ? stop_sig != 0 : cllm_interrupted != 0));
        if (want_ck && (rc = save_ckpt(&t, &p, ckdir, step, total, opts, &ck))) goto out;   /* every rank: see save_ckpt */
        if (o->on_step) {
            cllm_train_progress pr = { step, total, loss, cons, ar, lr, gn, tps, n_ex, ck };
            o->on_step(o->cb_ctx, &pr);
        }
        free(ck);
        if (nranks > 1 ? stop_sig != 0 : cllm_interrupted != 0) {
            if ((rc = cllm_dist_barrier())) goto out;  /* rank 0's checkpoint is written */
            rc = cllm_error(CLLM_EINTR, "interrupted after step %lld", (long long)step);
            goto out;
        }
    }
    if (step < total)   /* a pipe, read once, ran out before --max-steps */
        cllm_warn("the input ended after step %lld of %lld (--max-steps): the learning-rate schedule was cut short",
                  (long long)step, (long long)total);
#if CLLM_CUDA
    if (on_cuda && (rc = cu_to_host(&t))) goto out;
#endif
    if ((rc = cllm_dist_check_same(m->params, m->n_params * sizeof(float), "the trained weights"))) goto out;
    if (rank == 0 && (rc = cllm_model_save(m, o->output, o->dtype))) goto out;
    if ((rc = cllm_dist_barrier())) goto out;

out:
    if (w) {
        if (rc) cllm_writer_abort(w);
        else rc = cllm_writer_close(w);
    }
    for (int i = 0; ex && i < per_step; i++) example_free(&ex[i]);
    free(ex);
    pipe_free(&p);
    trainer_free(&t);
#if CLLM_CUDA
    cllm_nccl_free(nccl);
#endif
    cllm_packbuf_free(&pb);
    free(ckdir);
    return rc;
}
