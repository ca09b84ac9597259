/* gen.c: cllm-gen's engine (see gen.h).
 *
 * `batch` slots decode prompts side by side, one KV-cache sequence each; one
 * tick gives every active slot one decoding step (cllm_decoder_next: a
 * prompt chunk, an AR token or a Jacobi iteration): the decoding steps in one
 * ragged forward call (cllm_forward_batch), the prompt chunks in another, or a
 * few each when they exceed the call's row limit. A slot whose prompt is done takes the next one
 * at once (continuous batching, slots.h). Outputs go out in input order: a finished
 * prompt's record waits in its job until every earlier one is out, and a slot
 * takes no new prompt while 4*batch jobs wait. A prompt's output is what
 * batch 1 gives it: its own cache sequence, its own seed, and a
 * batch-invariant forward (forward.h; on CUDA exactly so while a tick's
 * decoding steps fit in 16 rows, up to near-ties beyond: docs/CUDA.md).
 *
 * steps in a gen record counts the prompt's forwards as one pass (it yields
 * the first token) plus one pass per decoding step, so tokens/step is 1.0
 * for AR up to EOS effects. time_s is the prompt's wall time from its first
 * step to its last (shared with the other slots when batch > 1).
 * --text prints tokens as they become final at batch 1, and each answer when
 * it is done (in input order) at larger batches.
 */
#include "gen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "clock.h"
#include "err.h"
#include "outq.h"
#include "records.h"
#include "slots.h"
#include "stream.h"

/* Prompt tokens a slot feeds per step (a step budget, forward.h rows). */
enum { PREFILL_CHUNK = 128 };


int cllm_writer_open_for_model(cllm_writer **w, cllm_packbuf *b, const char *path, int force, const cllm_model *m,
                               const char *prog, int argc, char *const *argv) {
    char producer[64];
    snprintf(producer, sizeof producer, "%s %s", prog, CLLM_VERSION);
    cllm_header_rec h = { .producer = producer, .model = m->cfg.name, .vocab = m->cfg.vocab,
                          .tokenizer = m->tok ? cllm_tokenizer_hash(m->tok) : "", .argc = argc, .argv = argv };
    int rc = cllm_writer_open(w, path, force);
    if (!rc) rc = cllm_rec_header_pack(b, &h);
    if (!rc) rc = cllm_writer_put_header(*w, b->data, b->size);
    return rc;
}

typedef struct text_ctx {
    const cllm_tokenizer *tok;
} text_ctx;

/* --text: print tokens as they become final. */
static int print_tokens(void *ctx, const int *tokens, int n) {
    text_ctx *c = ctx;
    /* The tokens' bytes whatever their length (a fixed buffer skipped a
     * long added token's text) and an id out of range is an error, not a gap. */
    char *text;
    size_t len;
    int rc = cllm_tokenizer_decode(c->tok, (const int32_t *)tokens, (size_t)n, &text, &len);
    if (rc) return rc;
    fwrite(text, 1, len, stdout);
    free(text);
    if (fflush(stdout) || ferror(stdout)) return cllm_error(CLLM_EIO, "write error: %s", strerror(errno));
    return cllm_interrupted ? CLLM_EINTR : 0;
}

/* One prompt in flight. */
typedef struct gen_slot {
    cllm_slot c;               /* its prompt and its output's job (input order) */
    cllm_decode_opts dec;      /* the run's options with this prompt's seed */
    cllm_decoder d;
    cllm_decode_result r;
    double t0;
} gen_slot;

typedef struct gen_eng {
    const cllm_model *m;
    const cllm_gen_opts *o;
    cllm_decode_opts dec;      /* the run's decoding options */
    int batch;
    cllm_fwd f;
    cllm_kv kv;
    gen_slot *slots;
    cllm_slots sl;             /* the slots' scheduler and output ring */
    cllm_writer *w;
    cllm_packbuf b;
    text_ctx tc;
} gen_eng;

/* Where finished outputs go: text to stdout, records to the stream. */
static int put_output(void *arg, const void *data, size_t len) {
    gen_eng *e = arg;
    if (!e->o->text) return cllm_writer_put(e->w, data, len);
    if ((len && fwrite(data, 1, len, stdout) != len) || fflush(stdout))
        return cllm_error(CLLM_EIO, "write error: %s", strerror(errno));
    return 0;
}

/* Start slot s on the prompt in s->c.p (its job is queued). */
static int slot_start(gen_eng *e, gen_slot *s) {
    const cllm_prompt *p = &s->c.p;
    int V = e->m->cfg.vocab;
    if (p->tokens.n > (size_t)(1 << 30))
        return cllm_error(CLLM_ELIMIT, "prompt %lld: %zu tokens is too long", (long long)p->id, p->tokens.n);
    for (size_t i = 0; i < p->tokens.n; i++)
        if (p->tokens.ids[i] < 0 || p->tokens.ids[i] >= V)
            return cllm_error(CLLM_EINVAL, "prompt %lld: token id %d is outside the vocabulary (%d)",
                              (long long)p->id, p->tokens.ids[i], V);
    int rc = cllm_kv_reserve(&e->kv, &e->f, e->batch, (int)p->tokens.n + e->dec.max_new_tokens + e->dec.n);
    if (rc) return rc;
    s->dec = e->dec;
    /* Same seed, same output: each prompt's guesses come from the seed and its id. */
    s->dec.seed = e->o->dec.seed * 0x9E3779B97F4A7C15ull + (uint64_t)p->id;
    cllm_decode_result_free(&s->r);
    cllm_decoder_free(&s->d);
    s->t0 = cllm_now_s();
    return cllm_decoder_init(&s->d, &e->kv, (int)(s - e->slots), p->tokens.ids, (int)p->tokens.n, &s->dec, &s->r,
                             &e->f);
}

/* Slot s's prompt is decoded: its output into its job. */
static int slot_finish(gen_eng *e, gen_slot *s) {
    const cllm_model *m = e->m;
    const cllm_decode_result *r = &s->r;
    const cllm_decode_opts *dec = &s->dec;
    double dt = cllm_now_s() - s->t0;
    int rc = 0;
    cllm_outq_job *j = s->c.j;
    s->c.active = 0;
    j->done = 1;
    if (e->o->text) {
        if (e->batch == 1) return cllm_outq_add(j, "\n", 1);   /* the tokens are out already */
        char *text = NULL;
        size_t tlen = 0;
        rc = cllm_tokenizer_decode(m->tok, r->tokens, (size_t)r->n_tokens, &text, &tlen);
        if (!rc) rc = cllm_outq_add(j, text, tlen);
        if (!rc) rc = cllm_outq_add(j, "\n", 1);
        free(text);
        return rc;
    }
    cllm_gen_rec g;
    memset(&g, 0, sizeof g);
    g.id = s->c.p.id;
    g.prompt = s->c.p.tokens;
    g.output.ids = r->tokens;
    g.output.n = (size_t)r->n_tokens;
    size_t tlen = 0;
    char *text = NULL;
    if (m->tok && (rc = cllm_tokenizer_decode(m->tok, r->tokens, (size_t)r->n_tokens, &text, &tlen))) return rc;
    g.text = text ? text : "";
    g.method = dec->method == CLLM_DECODE_JACOBI ? "jacobi" : "ar";
    g.n = dec->n;
    g.steps = r->steps - (r->prompt_steps - 1);
    g.time_s = dt;
    g.eos = r->eos;
    g.answer = s->c.p.answer;   /* the reference travels with the output (cllm-eval --task) */
    cllm_tokens *states = NULL;
    if (dec->trace && r->n_iter > 0) {
        states = cllm_calloc((size_t)r->n_iter, sizeof *states);
        if (!states) { free(text); return CLLM_ENOMEM; }
        for (int i = 0; i < r->n_iter && !rc; i++) {
            rc = cllm_tokens_append(&states[i], r->iter_state + (size_t)i * r->trace_n, (size_t)r->iter_len[i]);
            if (!rc) rc = cllm_tokens_push(&g.accepted, r->iter_accepted[i]);
        }
        g.states = states;
        g.n_states = (size_t)r->n_iter;
    }
    if (!rc) rc = cllm_rec_gen_pack(&e->b, &g);
    if (!rc) rc = cllm_outq_add(j, e->b.data, e->b.size);
    free(text);
    cllm_tokens_free(&g.accepted);
    for (int i = 0; states && i < r->n_iter; i++) cllm_tokens_free(&states[i]);
    free(states);
    return rc;
}

/* The slots' side of a tick (slots.h). Where every call takes one route
 * (cllm_fwd_one_route: the CPU, CUDA's fixed-order route) the prompt chunks
 * share the decoding steps' calls (sl.mixed, as in cllm-traj): one pass over
 * the weights a tick instead of two. Else the decoding steps have calls of
 * their own: a sequence's decoding steps never share a call with another's
 * prompt, so on CUDA a step of up to 16 rows takes the same route
 * (matmul16.cu) at --batch 1 as at --batch 8, and the decode calls' layouts
 * repeat from tick to tick, which replays their CUDA graphs. */
static int ops_start(void *arg, int i) {
    gen_eng *e = arg;
    return slot_start(e, &e->slots[i]);
}

static int ops_step(void *arg, int i) {
    const cllm_decoder *d = &((gen_eng *)arg)->slots[i].d;
    if (d->done) return CLLM_SLOT_IDLE;
    return cllm_decoder_in_prompt(d) ? CLLM_SLOT_PROMPT : CLLM_SLOT_DECODE;
}

static int ops_feed(void *arg, int i, int room, cllm_fwd_seq *d, int *tokens) {
    return cllm_decoder_next(&((gen_eng *)arg)->slots[i].d, room, d, tokens);
}

static int ops_take(void *arg, int i, const cllm_fwd_seq *d, const int *argmax) {
    gen_eng *e = arg;
    gen_slot *s = &e->slots[i];
    int rc = cllm_decoder_take(&s->d, &e->kv, argmax);
    if (!rc && s->d.done) rc = slot_finish(e, s);
    return rc;
}

static const cllm_slots_ops gen_ops = { ops_start, ops_step, ops_feed, ops_take };

static void eng_free(gen_eng *e) {
    for (int i = 0; e->slots && i < e->batch; i++) {
        gen_slot *s = &e->slots[i];
        cllm_prompt_free(&s->c.p);
        cllm_decoder_free(&s->d);
        cllm_decode_result_free(&s->r);
    }
    free(e->slots);
    cllm_slots_free(&e->sl);
    cllm_packbuf_free(&e->b);
    cllm_fwd_free(&e->f);
    cllm_kv_free(&e->kv);
}

int cllm_decode_opt(cllm_decode_opts *o, int c, const char *arg) {
    long long v;
    switch (c) {
    case 'n':
        if (cllm_cli_int("--block", arg, 1, 1024, &v)) return CLLM_EXIT_USAGE;
        o->n = (int)v;
        return 0;
    case CLLM_OPT_MAX_NEW:
        if (cllm_cli_int("--max-new-tokens", arg, 1, 1 << 20, &v)) return CLLM_EXIT_USAGE;
        o->max_new_tokens = (int)v;
        return 0;
    case CLLM_OPT_INIT:
        if (!strcmp(arg, "prompt")) o->guess = CLLM_GUESS_PROMPT;
        else if (!strcmp(arg, "pad")) o->guess = CLLM_GUESS_PAD;
        else if (!strcmp(arg, "last")) o->guess = CLLM_GUESS_LAST;
        else return cllm_cli_usage_error("--init: '%s' is not prompt, pad or last", arg);
        return 0;
    case CLLM_OPT_SEED:
        if (cllm_cli_int("--seed", arg, 0, INT64_MAX, &v)) return CLLM_EXIT_USAGE;
        o->seed = (uint64_t)v;
        return 0;
    default: return -1;
    }
}

int cllm_gen_run(const cllm_model *m, cllm_prompts *src, const cllm_gen_opts *o) {
    gen_eng e;
    memset(&e, 0, sizeof e);
    e.m = m;
    e.o = o;
    e.batch = o->batch > 0 ? o->batch : 1;
    e.dec = o->dec;
    e.tc.tok = m->tok;

    if (o->text && !m->tok) return cllm_error(CLLM_EINVAL, "--text needs a model with a tokenizer");
    if (e.batch > 4096) return cllm_error(CLLM_EINVAL, "batch %d out of range", e.batch);
    cllm_decode_opts *dec = &e.dec;
    if (dec->eos_id < 0) dec->eos_id = cllm_model_eos_id(m);
    if (dec->guess == CLLM_GUESS_PAD) dec->pad_id = cllm_model_pad_id(m);
    if (dec->method == CLLM_DECODE_AR) dec->n = 1;
    if (o->text && e.batch == 1) { dec->on_tokens = print_tokens; dec->cb_ctx = &e.tc; }

    int rc = cllm_fwd_init_on(&e.f, m, cllm_fwd_call_rows(o->device, dec->n, e.batch, PREFILL_CHUNK), o->device, 0);
    if (!rc) {
        e.slots = cllm_calloc((size_t)e.batch, sizeof *e.slots);
        rc = e.slots ? cllm_slots_init(&e.sl, e.batch, &e.f, &e.kv, &gen_ops, &e) : CLLM_ENOMEM;
        for (int i = 0; !rc && i < e.batch; i++) e.sl.slot[i] = &e.slots[i].c;
        /* A signal: no new prompt, but the prompts in hand are finished and
         * written (cllm-gen(1)); a second signal ends the program at once. */
        e.sl.finish = 1;
        e.sl.mixed = cllm_fwd_one_route(&e.f);
    }
    if (!rc && !o->text) {
        rc = cllm_writer_open_for_model(&e.w, &e.b, o->output, o->force, m, "cllm-gen", o->argc, o->argv);
    }
    if (!rc) rc = cllm_slots_run(&e.sl, src, put_output, &e);
    if (e.w) {
        if (rc) cllm_writer_abort(e.w);
        else rc = cllm_writer_close(e.w);
    }
    eng_free(&e);
    return rc;
}
