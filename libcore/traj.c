/* traj.c: cllm-traj's engine (see traj.h for what a trajectory is).
 *
 * Why the whole window is iterated here rather than decode.c's Jacobi: decode.c
 * commits the accepted prefix, feeds only the uncommitted tail and starts
 * every block with the token the previous pass already predicted (its y_1 is
 * correct from the start), so its blocks are shifted by one token against the
 * paper's chunks and its first state is not a random window. The paper's
 * states are the reference's full n-token windows y(0), y(1), ... with y(0)
 * random in every position, iterated by y <- f(y) over the whole window until
 * y = f(y). That is what this file does, so the states it writes are exactly
 * the reference's (the fixed point is the same either way: greedy AR).
 *
 * One iteration is one forward of the window's n rows (or of its last rows
 * only, below): the context's last token and y_1..y_{n-1} at positions
 * L-1..L+n-2 (L = context length; the cache holds the context minus its last
 * token); the argmax after row i is f(y)_{i+1}.
 * y_n never needs a forward (nothing in the window depends on it).
 *
 * Stopping without the reference's confirming pass: if z = f(y) agrees with y
 * on its first a tokens, then z_1..z_{a+1} are final (f(z)_i depends on z_<i
 * only, and z_<i = y_<i for i <= a+1, so f(z)_i = f(y)_i = z_i: those
 * positions are fixed for good). So z is the fixed point once a >= n-1, and a
 * chunk takes at most n forwards instead of the reference's n+1. The states
 * written are the same: y(0)..y(k-1) are the iterates that differ from y*
 * (once an iterate equals y* every later one does), exactly the reference's
 * trajectory[:-1] minus its fixed point. At EOS: when a final token of z is
 * the EOS, z up to and including it is final; the chunk ends there.
 *
 * Every iteration makes at least one more token final, so a chunk needs at
 * most n forwards; more means the forward is not deterministic, an error.
 *
 * Only the rows that can change are fed. With z = f(y) agreeing with y on
 * its first a tokens, the next iteration's rows 0..a have exactly the inputs
 * they had in this one (the context's last token and y_1..y_a = z_1..z_a),
 * so their cache rows are already in the cache, written by this iteration,
 * and their outputs are z_1..z_{a+1}, known. The next forward feeds rows
 * a+1..n-1 only, at positions L+a..L+n-2; the window's states and fixed
 * point are the same as with whole windows where the forward is
 * batch-invariant (a row's result depends on its inputs and context alone,
 * not on which rows share its call: the CPU, CUDA with batch_invariant; by
 * default CUDA's products go through cuBLAS, whose sums may change with the
 * call's rows, so a near-tie may fall the other way: docs/CUDA.md), for
 * about half the rows: the base model fixes ~1 token an
 * iteration, so the skipped part grows by ~1 row each time. full_windows
 * feeds the whole window every time, as the reference does (a baseline).
 *
 * Continuous batching: `batch` slots, each with its own KV cache sequence
 * (prompts of any length side by side). One tick advances every active slot
 * by one step (a prompt chunk of up to PREFILL_CHUNK tokens, or one Jacobi
 * iteration of its n-token window): the windows and prompt chunks of all
 * slots in one ragged forward call (cllm_forward_batch: every weight matrix is
 * read once per tick for the whole batch), or in a few calls when they exceed
 * the call's row limit, or the windows and the prompt chunks in calls of
 * their own where the forward's route depends on the call (slots.h); a slot
 * whose prompt is done takes the next prompt at once. Nothing a slot computes
 * depends on its neighbours (each has its own cache sequence and random
 * generators), so where the forward is batch-invariant (forward.h: the CPU;
 * CUDA with batch_invariant, CLLM_FWD_INVARIANT, where a window's products
 * take the same route at --batch 1 as at --batch 64) the records do not
 * depend on the batch size. By default CUDA sends every product through
 * cuBLAS (CLLM_FWD_BULK), which picks its algorithm by shape: records can
 * then part across batch sizes at near-ties. Records go out in input order: a
 * finished chunk of the oldest prompt in flight is written at once, later
 * prompts' chunks wait in their job until it is their turn. A slot takes no
 * new prompt while 4*batch prompts wait to be written, which bounds the
 * memory held back by one slow prompt.
 */
#include "traj.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "err.h"
#include "forward.h"
#include "gen.h"
#include "outq.h"
#include "records.h"
#include "slots.h"
#include "stream.h"
#include "tokenizer.h"

/* Prompt tokens a slot feeds per step. */
enum { PREFILL_CHUNK = 128 };


void cllm_traj_opts_init(cllm_traj_opts *o) {
    memset(o, 0, sizeof *o);
    o->n = 16;
    o->max_new_tokens = 256;
    o->init = CLLM_TRAJ_INIT_PROMPT;
    o->batch = 1;
    o->eos_id = -1;
    o->pad_id = -1;
}

/* ---- augmentation ----------------------------------------------------- */

int cllm_traj_augment(const int *states, int k, int stride, const int *fixed, int len,
                      cllm_rng *rng, int *aug) {
    if (k < 4 || len < 2) return 0;            /* no j in 2..k-2 with w > 1 */
    int *wrong = cllm_malloc((size_t)len * sizeof *wrong);
    if (!wrong) return CLLM_ENOMEM;
    int count = 0;
    for (int j = 2; j <= k - 2; j++) {
        int w = 0;
        for (int i = 0; i < len; i++) w += states[(size_t)j * stride + i] != fixed[i];
        count += w > 1;
    }
    int slot = count;
    for (int j = k - 2; j >= 2; j--) {
        const int *s = states + (size_t)j * stride;
        int w = 0;
        for (int i = 0; i < len; i++)
            if (s[i] != fixed[i]) wrong[w++] = i;
        if (w <= 1) continue;
        int *a = aug + (size_t)(--slot) * stride;
        memcpy(a, s, (size_t)len * sizeof *a);
        int h = w / 2;                         /* a random half of the wrong tokens */
        for (int i = 0; i < h; i++) {
            int r = i + (int)cllm_rng_below(rng, (uint64_t)(w - i));
            int t = wrong[i]; wrong[i] = wrong[r]; wrong[r] = t;
            a[wrong[i]] = fixed[wrong[i]];
        }
    }
    free(wrong);
    return count;
}

typedef struct slot {
    cllm_slot c;              /* its prompt and its records' job (their turn) */
    int seq;                  /* KV cache sequence */
    int *ctx;                 /* prompt + prefix (the fixed points so far) */
    int n_ctx, cap_ctx, P;
    int fed;                  /* context tokens in the cache */
    int chunk, in_chunk, n_new;
    int *st;                  /* (n, n) this chunk's states; row k-1 is the current y */
    int k;
    int skip;                 /* leading window rows whose cache rows and outputs are
                                 current (y's first skip tokens are final): not fed */
    int *z;                   /* (n) f(y): the known part and the call's argmax */
    int *fixed;               /* (n) */
    int *aug;                 /* (n, n) augmented states */
    cllm_tokens *views;       /* (2n) states of a record, as token arrays */
    cllm_rng rinit, raug;
    cllm_tokens labels;
} slot;

typedef struct eng {
    const cllm_model *m;
    const cllm_traj_opts *o;
    int n, chunks, eos_id, pad_id;
    cllm_fwd f;
    cllm_kv kv;
    slot *slots;
    cllm_slots sl;            /* the slots' scheduler and output ring */
    cllm_writer *w;
    cllm_packbuf b;
    cllm_traj_stats st;
} eng;

static int put_record(void *w, const void *data, size_t len) { return cllm_writer_put(w, data, len); }

/* The totals so far, the scheduler's counts included. */
static const cllm_traj_stats *totals(eng *e) {
    e->st.ticks = e->sl.ticks;
    e->st.calls = e->sl.calls;
    e->st.limit_calls = e->sl.limit_calls;
    return &e->st;
}

/* ---- one slot ----------------------------------------------------------- */

static uint64_t prompt_seed(uint64_t seed, int64_t id, uint64_t stream) {
    return (seed * 0x9E3779B97F4A7C15ull + (uint64_t)id) ^ (stream * 0xD1B54A32D192ED03ull);
}

/* Start the prompt in s->c.p in slot s (its job is already queued). */
static int slot_start(eng *e, slot *s) {
    const cllm_prompt *p = &s->c.p;
    int V = e->m->cfg.vocab;
    if (p->tokens.n < 1) return cllm_error(CLLM_EINVAL, "prompt %lld has no tokens", (long long)p->id);
    if (p->tokens.n > (size_t)(1 << 30))
        return cllm_error(CLLM_ELIMIT, "prompt %lld: %zu tokens is too long", (long long)p->id, p->tokens.n);
    for (size_t i = 0; i < p->tokens.n; i++)
        if (p->tokens.ids[i] < 0 || p->tokens.ids[i] >= V)
            return cllm_error(CLLM_EINVAL, "prompt %lld: token id %d is outside the vocabulary (%d)",
                              (long long)p->id, (int)p->tokens.ids[i], V);
    int P = (int)p->tokens.n;
    int total = P + e->chunks * e->n;
    if (total < P) return cllm_error(CLLM_ELIMIT, "prompt %lld is too long", (long long)p->id);
    cllm_tokens_free(&s->labels);
    if (e->o->labels) {
        if (!p->answer)
            return cllm_error(CLLM_EINVAL, "prompt %lld has no reference answer for --labels", (long long)p->id);
        if (!e->m->tok) return cllm_error(CLLM_EINVAL, "--labels needs a model with a tokenizer");
        int32_t *ids = NULL;
        size_t nid = 0;
        int rc = cllm_tokenizer_encode(e->m->tok, p->answer, strlen(p->answer), 0, &ids, &nid);
        if (!rc) rc = cllm_tokens_append(&s->labels, ids, nid);
        free(ids);
        if (rc) return rc;
    }
    int rc = cllm_kv_reserve(&e->kv, &e->f, e->o->batch, total);
    if (rc) return rc;
    if ((rc = cllm_kv_rollback(&e->kv, s->seq, 0))) return rc;
    if (total > s->cap_ctx) {
        int *c = cllm_realloc(s->ctx, (size_t)total * sizeof *c);
        if (!c) return CLLM_ENOMEM;
        s->ctx = c;
        s->cap_ctx = total;
    }
    for (int i = 0; i < P; i++) s->ctx[i] = p->tokens.ids[i];
    s->n_ctx = s->P = P;
    s->fed = 0;
    s->chunk = s->in_chunk = s->n_new = 0;
    s->k = 0;
    cllm_rng_seed(&s->rinit, prompt_seed(e->o->seed, p->id, 0));
    cllm_rng_seed(&s->raug, prompt_seed(e->o->seed, p->id, 1));
    return 0;
}

static void init_guess(eng *e, slot *s, int *y) {
    for (int i = 0; i < e->n; i++) {
        if (e->o->init == CLLM_TRAJ_INIT_PAD) y[i] = e->pad_id;
        else if (e->o->init == CLLM_TRAJ_INIT_VOCAB) y[i] = (int)cllm_rng_below(&s->rinit, (uint64_t)e->m->cfg.vocab);
        else y[i] = s->ctx[cllm_rng_below(&s->rinit, (uint64_t)s->n_ctx)];
    }
}

/* The chunk converged to fixed[0..len): write its record, extend the context. */
static int finish_chunk(eng *e, slot *s, int len, int eos) {
    int n = e->n;
    /* States whose first len tokens already equal the (cut) fixed point are
     * not states before it: they form a suffix of the iterates. */
    int k = s->k;
    while (k > 0 && !memcmp(s->st + (size_t)(k - 1) * n, s->fixed, (size_t)len * sizeof(int))) k--;
    int n_aug = 0;
    if (e->o->aug) {
        n_aug = cllm_traj_augment(s->st, k, n, s->fixed, len, &s->raug, s->aug);
        if (n_aug < 0) return n_aug;
    }
    for (int i = 0; i < n_aug; i++)
        s->views[i] = (cllm_tokens){ s->aug + (size_t)i * n, (size_t)len, 0 };
    for (int i = 0; i < k; i++)
        s->views[n_aug + i] = (cllm_tokens){ s->st + (size_t)i * n, (size_t)len, 0 };
    cllm_traj_rec t;
    memset(&t, 0, sizeof t);
    t.id = s->c.p.id;
    t.chunk = s->chunk;
    t.prompt = s->c.p.tokens;
    t.prefix = (cllm_tokens){ s->ctx + s->P, (size_t)(s->n_ctx - s->P), 0 };
    t.states = s->views;
    t.n_states = (size_t)(n_aug + k);
    t.fixed = (cllm_tokens){ s->fixed, (size_t)len, 0 };
    t.eos = eos;
    if (e->o->labels) { t.labels = s->labels; t.has_labels = 1; }
    int rc = cllm_rec_traj_pack(&e->b, &t);
    if (!rc) rc = cllm_outq_add(s->c.j, e->b.data, e->b.size);
    if (rc) return rc;
    e->st.records++;
    e->st.tokens += (uint64_t)len;
    e->st.states += (uint64_t)(n_aug + k);
    /* The cache holds the context minus its last token plus the window as fed
     * (its first n-1 tokens agree with the final part of fixed), so it is
     * already right for the next chunk. */
    memcpy(s->ctx + s->n_ctx, s->fixed, (size_t)len * sizeof(int));
    s->n_ctx += len;
    s->fed = s->n_ctx - 1;
    s->n_new += len;
    s->chunk++;
    s->in_chunk = 0;
    if (eos || s->n_new >= e->o->max_new_tokens) {
        s->c.j->done = 1;
        s->c.active = 0;
        e->st.prompts++;
    }
    return 0;
}

/* Whether slot s's next step is its Jacobi window (else a prompt chunk). */
static int in_window(const slot *s) { return s->fed >= s->n_ctx - 1; }

/* Rows slot s feeds in its next step: a prompt chunk or its Jacobi window. */
static int slot_want(const eng *e, const slot *s) {
    int rest = s->n_ctx - 1 - s->fed;   /* context tokens not yet cached (the last one is
                                           fed as the window's first row) */
    if (rest > 0) return rest < PREFILL_CHUNK ? rest : PREFILL_CHUNK;
    return e->n - (s->in_chunk ? s->skip : 0);
}

/* Slot s's next step as sequence d of a call with room rows left, its
 * tokens to in: returns its rows T, or 0 when it does not fit (a window is
 * never split; a prompt chunk is shortened to the room left). */
static int slot_feed(eng *e, slot *s, int room, cllm_fwd_seq *d, int *in) {
    int n = e->n, L = s->n_ctx, T = slot_want(e, s);
    if (T > room) {
        if (in_window(s) || room < 1) return 0;
        T = room;
    }
    if (!in_window(s)) {                        /* prompt chunk: no LM head */
        *d = (cllm_fwd_seq){ s->seq, s->fed, T, T };
        memcpy(in, s->ctx + s->fed, (size_t)T * sizeof(int));
        return T;
    }
    if (!s->in_chunk) {
        init_guess(e, s, s->st);
        s->k = 1;
        s->in_chunk = 1;
        s->skip = 0;
    }
    /* window row i: the token before y_i (the context's last, then y_{i-1}) at L-1+i */
    const int *y = s->st + (size_t)(s->k - 1) * n;
    int i0 = s->skip;
    for (int i = i0; i < n; i++) in[i - i0] = i ? y[i - 1] : s->ctx[L - 1];
    *d = (cllm_fwd_seq){ s->seq, L - 1 + i0, n - i0, 0 };
    return n - i0;
}

/* After the call: d was slot s's part, z its rows' argmax. */
static int slot_take(eng *e, slot *s, const cllm_fwd_seq *d, const int *z) {
    int n = e->n;
    e->st.forwards++;
    if (d->lm_from == d->T) {                   /* a prompt chunk */
        s->fed += d->T;
        return 0;
    }
    e->st.iterations++;
    e->st.rows += (uint64_t)d->T;
    const int *y = s->st + (size_t)(s->k - 1) * n;
    int i0 = n - d->T;   /* the rows before were not fed: their outputs are y's */
    memcpy(s->z, y, (size_t)i0 * sizeof(int));
    memcpy(s->z + i0, z, (size_t)d->T * sizeof(int));
    z = s->z;
    int a = 0;
    while (a < n && z[a] == y[a]) a++;
    int fin = a + 1 < n ? a + 1 : n;          /* z[0..fin) are final */
    int eos_at = -1;
    for (int i = 0; i < fin && eos_at < 0; i++)
        if (z[i] == e->eos_id) eos_at = i;
    if (eos_at >= 0 || fin == n) {
        int len = eos_at >= 0 ? eos_at + 1 : n;
        memcpy(s->fixed, z, (size_t)len * sizeof(int));
        return finish_chunk(e, s, len, eos_at >= 0);
    }
    if (s->k >= n)
        return cllm_error(CLLM_EINVAL, "prompt %lld, chunk %d: no fixed point after %d iterations "
                          "(the forward pass is not deterministic)", (long long)s->c.p.id, s->chunk, n);
    memcpy(s->st + (size_t)s->k * n, z, (size_t)n * sizeof(int));
    s->k++;
    /* rows 0..a of the next window have this window's inputs (y_<=a = z_<=a) */
    if (!e->o->full_windows) s->skip = fin;
    return 0;
}

/* The slots' side of a tick (slots.h). Where every call takes one route
 * (cllm_fwd_one_route: the CPU, CUDA's fixed-order route, CUDA with every
 * product through cuBLAS) the Jacobi windows and the prompt chunks share the
 * calls (sl.mixed): one call a tick, where prompt chunks would otherwise cost
 * a forward pass of their own. Else the windows go first, in calls of their
 * own (CUDA with CLLM_CUDA_GEMM_ROWS=-1: a call with prompt rows takes the
 * fixed-order products, and a window must not change route from tick to
 * tick), then the prompt chunks. (The backend pads a call to one of a few
 * row counts, so that it replays a captured graph.) */
static int ops_start(void *arg, int i) {
    eng *e = arg;
    return slot_start(e, &e->slots[i]);
}

static int ops_step(void *arg, int i) {
    return in_window(&((eng *)arg)->slots[i]) ? CLLM_SLOT_DECODE : CLLM_SLOT_PROMPT;
}

static int ops_feed(void *arg, int i, int room, cllm_fwd_seq *d, int *in) {
    eng *e = arg;
    return slot_feed(e, &e->slots[i], room, d, in);
}

static int ops_take(void *arg, int i, const cllm_fwd_seq *d, const int *z) {
    eng *e = arg;
    slot *s = &e->slots[i];
    int rc = slot_take(e, s, d, z);
    if (!rc && !s->c.active && e->o->on_progress) e->o->on_progress(e->o->progress_ctx, totals(e));
    return rc;
}

static const cllm_slots_ops traj_ops = { ops_start, ops_step, ops_feed, ops_take };

static int eng_init(eng *e) {
    const cllm_traj_opts *o = e->o;
    int n = o->n;
    if (n < 1 || n > (1 << 16)) return cllm_error(CLLM_EINVAL, "block size %d out of range", n);
    if (o->max_new_tokens < 1) return cllm_error(CLLM_EINVAL, "max new tokens %d < 1", o->max_new_tokens);
    if (o->batch < 1 || o->batch > 4096) return cllm_error(CLLM_EINVAL, "batch %d out of range", o->batch);
    if (o->init != CLLM_TRAJ_INIT_PROMPT && o->init != CLLM_TRAJ_INIT_VOCAB && o->init != CLLM_TRAJ_INIT_PAD)
        return cllm_error(CLLM_EINVAL, "unknown initial guess %d", o->init);
    const cllm_config *cfg = &e->m->cfg;
    const cllm_tokenizer *tok = e->m->tok;
    e->n = n;
    e->chunks = (o->max_new_tokens + n - 1) / n;
    e->eos_id = o->eos_id >= 0 ? o->eos_id : cllm_model_eos_id(e->m);
    e->pad_id = o->pad_id >= 0 ? o->pad_id : cllm_model_pad_id(e->m);
    if (e->pad_id >= cfg->vocab) return cllm_error(CLLM_EINVAL, "pad id %d is outside the vocabulary (%d)", e->pad_id, cfg->vocab);
    if (o->labels && !tok) return cllm_error(CLLM_EINVAL, "--labels needs a model with a tokenizer");
    int rc = cllm_fwd_init_on(&e->f, e->m, cllm_fwd_call_rows(o->device, n, o->batch, PREFILL_CHUNK), o->device,
                            o->batch_invariant ? CLLM_FWD_INVARIANT : CLLM_FWD_BULK);
    if (rc) return rc;
    e->slots = cllm_calloc((size_t)o->batch, sizeof *e->slots);
    if (!e->slots) return CLLM_ENOMEM;
    if ((rc = cllm_slots_init(&e->sl, o->batch, &e->f, &e->kv, &traj_ops, e))) return rc;
    e->sl.mixed = cllm_fwd_one_route(&e->f);
    for (int i = 0; i < o->batch; i++) {
        slot *s = &e->slots[i];
        e->sl.slot[i] = &s->c;
        s->seq = i;
        s->st = cllm_malloc((size_t)n * n * sizeof(int));
        s->aug = cllm_malloc((size_t)n * n * sizeof(int));
        s->fixed = cllm_malloc((size_t)n * sizeof(int));
        s->z = cllm_malloc((size_t)n * sizeof(int));
        s->views = cllm_calloc((size_t)2 * n, sizeof *s->views);
        if (!s->st || !s->aug || !s->fixed || !s->z || !s->views) return CLLM_ENOMEM;
    }
    return 0;
}

static void eng_free(eng *e) {
    for (int i = 0; e->slots && i < e->o->batch; i++) {
        slot *s = &e->slots[i];
        cllm_prompt_free(&s->c.p);
        cllm_tokens_free(&s->labels);
        free(s->ctx); free(s->st); free(s->aug); free(s->fixed); free(s->z); free(s->views);
    }
    free(e->slots);
    cllm_slots_free(&e->sl);
    cllm_packbuf_free(&e->b);
    cllm_fwd_free(&e->f);
    cllm_kv_free(&e->kv);
}

int cllm_traj_run(const cllm_model *m, cllm_prompts *src, const cllm_traj_opts *o,
                  cllm_traj_stats *stats) {
    eng e;
    memset(&e, 0, sizeof e);
    e.m = m;
    e.o = o;
    int rc = eng_init(&e);
    if (!rc) rc = cllm_writer_open_for_model(&e.w, &e.b, o->output, o->force, m, "cllm-traj", o->argc, o->argv);
    if (!rc) rc = cllm_slots_run(&e.sl, src, put_record, e.w);
    if (e.w) {
        if (rc) cllm_writer_abort(e.w);
        else rc = cllm_writer_close(e.w);
    }
    if (stats) *stats = *totals(&e);
    eng_free(&e);
    return rc;
}
