/* gen.c: cllm-gen's engine (see gen.h).
 *
 * One KV cache sequence and one forward state serve every prompt in turn; the
 * cache grows when a longer prompt comes. steps in a gen record counts the
 * prompt's forward as one pass (it yields the first token) plus one pass per
 * decoding iteration, so tokens/step is 1.0 for AR up to EOS effects.
 */
#include "gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "err.h"
#include "records.h"
#include "stream.h"

/* Rows per forward call: the Jacobi window, and prompt chunks of this size. */
static int fwd_rows(int n) { return n > 128 ? n : 128; }

void cllm_header_for_model(cllm_header_rec *h, const cllm_model *m, const char *producer, int argc,
                           char *const *argv) {
    h->producer = producer;
    h->model = m->cfg.name;
    h->vocab = m->cfg.vocab;
    h->tokenizer = m->tok ? cllm_tokenizer_hash(m->tok) : "";
    h->argc = argc;
    h->argv = argv;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct text_ctx {
    const cllm_tokenizer *tok;
} text_ctx;

/* --text: print tokens as they become final. */
static int print_tokens(void *ctx, const int *tokens, int n) {
    text_ctx *c = ctx;
    char buf[256];
    for (int i = 0; i < n; i++) {
        size_t len;
        if (cllm_tokenizer_token_bytes(c->tok, tokens[i], buf, sizeof buf, &len) == 0) fwrite(buf, 1, len, stdout);
    }
    fflush(stdout);
    if (ferror(stdout)) return cllm_error(CLLM_EIO, "write error on standard output");
    return cllm_interrupted ? CLLM_EINTR : 0;
}

static int ensure_kv(cllm_kv *kv, const cllm_model *m, int need) {
    if (kv->cap >= need) return 0;
    int cap = kv->cap ? kv->cap : 512;
    while (cap < need) cap *= 2;
    cllm_kv_free(kv);
    return cllm_kv_init(kv, &m->cfg, 1, cap);
}

int cllm_gen_run(const cllm_model *m, cllm_prompts *src, const cllm_gen_opts *o) {
    cllm_fwd f;
    cllm_kv kv;
    memset(&f, 0, sizeof f);
    memset(&kv, 0, sizeof kv);
    cllm_writer *w = NULL;
    cllm_packbuf b = { 0 };
    cllm_prompt p;
    memset(&p, 0, sizeof p);
    cllm_decode_result r;
    memset(&r, 0, sizeof r);
    cllm_decode_opts dec = o->dec;
    text_ctx tc = { m->tok };
    char producer[64];
    snprintf(producer, sizeof producer, "cllm-gen %s", CLLM_VERSION);

    if (o->text && !m->tok) return cllm_error(CLLM_EINVAL, "--text needs a model with a tokenizer");
    if (dec.eos_id < 0) dec.eos_id = m->cfg.eos_id;
    if (m->tok && dec.eos_id < 0) dec.eos_id = cllm_tokenizer_eos(m->tok);
    if (dec.guess == CLLM_GUESS_PAD && m->cfg.pad_id >= 0) dec.pad_id = m->cfg.pad_id;
    if (dec.method == CLLM_DECODE_AR) dec.n = 1;
    if (o->text) { dec.on_tokens = print_tokens; dec.cb_ctx = &tc; }

    int rc = cllm_fwd_init(&f, m, fwd_rows(dec.n));
    if (!rc && !o->text) {
        rc = cllm_writer_open(&w, o->output, o->force);
        cllm_header_rec h;
        cllm_header_for_model(&h, m, producer, o->argc, o->argv);
        if (!rc) rc = cllm_rec_header_pack(&b, &h);
        if (!rc) rc = cllm_writer_put_header(w, b.data, b.size);
    }
    while (!rc && !cllm_interrupted && (rc = cllm_prompts_next(src, &p)) == 0) {
        for (size_t i = 0; i < p.tokens.n && !rc; i++)
            if (p.tokens.ids[i] >= m->cfg.vocab)
                rc = cllm_error(CLLM_EINVAL, "prompt %lld: token id %d is outside the vocabulary (%d)",
                                (long long)p.id, p.tokens.ids[i], m->cfg.vocab);
        if (rc) break;
        rc = ensure_kv(&kv, m, (int)p.tokens.n + dec.max_new_tokens + dec.n);
        if (rc) break;
        /* Same seed, same output: each prompt's guesses come from the seed and its id. */
        dec.seed = o->dec.seed * 0x9E3779B97F4A7C15ull + (uint64_t)p.id;
        cllm_decode_result_free(&r);
        double t0 = now_s();
        rc = cllm_decode(&f, &kv, 0, p.tokens.ids, (int)p.tokens.n, &dec, &r);
        double dt = now_s() - t0;
        if (rc) break;
        if (o->text) {
            fputc('\n', stdout);
            fflush(stdout);
            continue;
        }
        cllm_gen_rec g;
        memset(&g, 0, sizeof g);
        g.id = p.id;
        g.prompt = p.tokens;
        g.output.ids = r.tokens;
        g.output.n = (size_t)r.n_tokens;
        size_t tlen = 0;
        char *text = NULL;
        if (m->tok) rc = cllm_tokenizer_decode(m->tok, r.tokens, (size_t)r.n_tokens, &text, &tlen);
        if (rc) break;
        g.text = text ? text : "";
        g.method = dec.method == CLLM_DECODE_JACOBI ? "jacobi" : "ar";
        g.n = dec.n;
        int chunks = ((int)p.tokens.n + f.max_T - 1) / f.max_T;
        g.steps = r.steps - (chunks - 1);
        g.time_s = dt;
        g.eos = r.eos;
        g.answer = p.answer;   /* the reference travels with the output (cllm-eval --task) */
        cllm_tokens *states = NULL;
        if (dec.trace && r.n_iter > 0) {
            states = cllm_calloc((size_t)r.n_iter, sizeof *states);
            if (!states) { free(text); rc = CLLM_ENOMEM; break; }
            for (int i = 0; i < r.n_iter && !rc; i++) {
                rc = cllm_tokens_append(&states[i], r.iter_state + (size_t)i * r.trace_n, (size_t)r.iter_len[i]);
                if (!rc) rc = cllm_tokens_push(&g.accepted, r.iter_accepted[i]);
            }
            g.states = states;
            g.n_states = (size_t)r.n_iter;
        }
        if (!rc) rc = cllm_rec_gen_pack(&b, &g);
        if (!rc) rc = cllm_writer_put(w, b.data, b.size);
        free(text);
        cllm_tokens_free(&g.accepted);
        for (int i = 0; states && i < r.n_iter; i++) cllm_tokens_free(&states[i]);
        free(states);
    }
    if (rc == CLLM_EOF) rc = 0;
    if (!rc && cllm_interrupted) rc = cllm_error(CLLM_EINTR, "interrupted");
    if (w) {
        if (rc) cllm_writer_abort(w);
        else rc = cllm_writer_close(w);
    }
    cllm_prompt_free(&p);
    cllm_decode_result_free(&r);
    cllm_packbuf_free(&b);
    cllm_fwd_free(&f);
    cllm_kv_free(&kv);
    return rc;
}
