/* traj-verify.c: check a cllm-traj stream against the model that made it.
 *
 *   build/tools/traj-verify -m MODEL [-t THREADS] [-n N] [--gen GEN] [--states] [--init HOW] TRAJ
 *
 * For every traj record:
 *   - the states are as long as fixed; fixed has n tokens (-n) unless eos, and
 *     then it ends with its only EOS;
 *   - the last state differs from fixed (an empty state list is reported);
 *   - fixed is a fixed point: one forward over prompt + prefix + fixed, and the
 *     argmax after each of context[L-1], fixed[0..len-1) gives fixed back;
 *   - with --states, every state steps to the next one (f(y(j)) = y(j+1),
 *     y(k) = fixed), i.e. the states are a Jacobi trajectory (no --aug);
 *   - the chunks of a prompt are numbered 0, 1, ..., each prefix is the
 *     earlier fixed points joined, only the last chunk may have eos.
 * With --gen GEN (cllm-gen --method ar records of the same prompts): each
 * prompt's chunks joined (its trailing EOS dropped) equal the AR output
 * (beyond it when AR stopped at max_new_tokens: the chunks round up), the
 * prompts are the same tokens and eos agrees.
 * With --aug-base BASE (the same run without --aug): every record's states
 * are BASE's states of the same chunk preceded by the augmented ones, one
 * per state j = 2..k-2 of BASE with w > 1 wrong tokens (in order of j), each
 * equal to that state with exactly floor(w/2) of its wrong tokens set to the
 * fixed point's.
 * With --init prompt|vocab|pad (the run's --init, no --aug): every record's
 * first state is y(0), the initial guess: with pad, the model's pad token
 * (config, tokenizer, else 0) everywhere; with prompt, every token one of
 * the chunk's context (prompt + prefix), and over the stream some drawn
 * from the prefix alone (the draws cover the whole context); with vocab,
 * over the stream some tokens that are nowhere in the context.
 * Prints a summary; exit 0 when every check holds, 1 otherwise.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "forward.h"
#include "model.h"
#include "records.h"
#include "stream.h"
#include "tokenizer.h"

static int failures;

/* memcmp that takes n = 0 with NULL pointers (empty token arrays). */
static int differ(const void *a, const void *b, size_t n) { return n && memcmp(a, b, n); }

#define FAIL(...) do { fprintf(stderr, "traj-verify: FAIL: " __VA_ARGS__); fputc('\n', stderr); failures++; } while (0)

typedef struct gen_out {
    int64_t id;
    cllm_tokens prompt, output;
    int eos;
} gen_out;

static cllm_traj_rec *bases;
static size_t n_bases;

static int load_bases(const char *path) {
    cllm_reader *r;
    int rc = cllm_reader_open(&r, path);
    if (rc) return rc;
    cllm_record rec;
    while ((rc = cllm_reader_next(r, &rec)) == 0) {
        if (strcmp(rec.type, "traj")) continue;
        cllm_traj_rec *p = realloc(bases, (n_bases + 1) * sizeof *bases);
        if (!p) { rc = CLLM_ENOMEM; break; }
        bases = p;
        if ((rc = cllm_rec_traj_get(&rec, &bases[n_bases]))) break;
        n_bases++;
    }
    cllm_reader_close(r);
    return rc == CLLM_EOF ? 0 : rc;
}

static long long n_aug_total;

static void check_aug(const cllm_traj_rec *t) {
    long long id = (long long)t->id, ch = (long long)t->chunk;
    const cllm_traj_rec *b = NULL;
    for (size_t i = 0; i < n_bases && !b; i++)
        if (bases[i].id == t->id && bases[i].chunk == t->chunk) b = &bases[i];
    if (!b) { FAIL("prompt %lld chunk %lld: not in the base stream", id, ch); return; }
    size_t len = b->fixed.n;
    if (t->fixed.n != len || differ(t->fixed.ids, b->fixed.ids, len * sizeof(int32_t)))
        { FAIL("prompt %lld chunk %lld: fixed differs from the base's", id, ch); return; }
    size_t k = b->n_states, want = 0;
    for (size_t j = 2; j + 2 <= k; j++) {
        size_t w = 0;
        for (size_t i = 0; i < len; i++) w += b->states[j].ids[i] != b->fixed.ids[i];
        want += w > 1;
    }
    if (t->n_states != want + k) { FAIL("prompt %lld chunk %lld: %zu states, want %zu augmented + %zu", id, ch, t->n_states, want, k); return; }
    for (size_t j = 0; j < k; j++)
        if (differ(t->states[want + j].ids, b->states[j].ids, len * sizeof(int32_t)))
            { FAIL("prompt %lld chunk %lld: state %zu differs from the base's", id, ch, j); return; }
    size_t a = 0;
    for (size_t j = 2; j + 2 <= k; j++) {
        const int32_t *y = b->states[j].ids, *f = b->fixed.ids, *g = t->states[a].ids;
        size_t w = 0, changed = 0;
        for (size_t i = 0; i < len; i++) w += y[i] != f[i];
        if (w <= 1) continue;
        for (size_t i = 0; i < len; i++) {
            if (g[i] == y[i]) continue;
            if (y[i] == f[i] || g[i] != f[i]) { FAIL("prompt %lld chunk %lld: augmented state %zu changes position %zu wrongly", id, ch, a, i); return; }
            changed++;
        }
        if (changed != w / 2) FAIL("prompt %lld chunk %lld: augmented state %zu fixes %zu of %zu wrong tokens", id, ch, a, changed, w);
        a++;
    }
    n_aug_total += (long long)want;
}

static gen_out *gens;
static size_t n_gens;

/* --init: the first state y(0) against the chunk's context ctx (L tokens). */
enum { Y0_NONE, Y0_PROMPT, Y0_VOCAB, Y0_PAD };
static long long y0_prefix_only, y0_outside;

static void check_y0(int how, const cllm_traj_rec *t, const int *ctx, int L, int pad) {
    if (how == Y0_NONE || t->n_states == 0) return;
    long long id = (long long)t->id, ch = (long long)t->chunk;
    const int32_t *y = t->states[0].ids;
    for (size_t i = 0; i < t->fixed.n; i++) {
        int in_prompt = 0, in_ctx = 0;
        for (int q = 0; q < L; q++)
            if (ctx[q] == y[i]) { in_ctx = 1; in_prompt |= q < (int)t->prompt.n; }
        if (how == Y0_PAD && y[i] != pad) { FAIL("prompt %lld chunk %lld: y(0)[%zu] = %d, not the pad token %d", id, ch, i, y[i], pad); return; }
        if (how == Y0_PROMPT && !in_ctx) { FAIL("prompt %lld chunk %lld: y(0)[%zu] = %d is not in the context", id, ch, i, y[i]); return; }
        y0_prefix_only += in_ctx && !in_prompt;
        y0_outside += !in_ctx;
    }
}

static int load_gens(const char *path) {
    cllm_reader *r;
    int rc = cllm_reader_open(&r, path);
    if (rc) return rc;
    cllm_record rec;
    while ((rc = cllm_reader_next(r, &rec)) == 0) {
        if (strcmp(rec.type, "gen")) continue;
        cllm_gen_rec g;
        if ((rc = cllm_rec_gen_get(&rec, &g))) break;
        gen_out *p = realloc(gens, (n_gens + 1) * sizeof *gens);
        if (!p) { cllm_rec_gen_free(&g); rc = CLLM_ENOMEM; break; }
        gens = p;
        gen_out *o = &gens[n_gens++];
        memset(o, 0, sizeof *o);
        o->id = g.id;
        o->eos = g.eos;
        if (!rc) rc = cllm_tokens_copy(&o->prompt, &g.prompt);
        if (!rc) rc = cllm_tokens_copy(&o->output, &g.output);
        cllm_rec_gen_free(&g);
        if (rc) break;
    }
    cllm_reader_close(r);
    return rc == CLLM_EOF ? 0 : rc;
}

static gen_out *find_gen(int64_t id) {
    for (size_t i = 0; i < n_gens; i++)
        if (gens[i].id == id) return &gens[i];
    return NULL;
}

/* argmax after each of seq[from..to) (positions), one forward in chunks of max_T. */
static int run_argmax(cllm_fwd *f, cllm_kv *kv, const int *seq, int len, int from, int *out) {
    for (int s = 0; s < len; s += f->max_T) {
        int T = len - s < f->max_T ? len - s : f->max_T;
        int lm = from > s ? from - s : 0;
        if (lm > T) lm = T;
        int rc = cllm_forward(f, kv, 0, s, seq + s, T, lm);
        if (rc) return rc;
        for (int t = lm; t < T; t++) out[s + t - from] = f->argmax[t];
    }
    return 0;
}

/* f(y) for window y (len tokens) after context ctx (L tokens): out[0..len). */
static int step(cllm_fwd *f, cllm_kv *kv, const int *ctx, int L, const int32_t *y, int len, int *buf, int *out) {
    memcpy(buf, ctx, (size_t)L * sizeof(int));
    for (int i = 0; i < len - 1; i++) buf[L + i] = y[i];
    return run_argmax(f, kv, buf, L + len - 1, L - 1, out);
}

static void finish_prompt(int64_t id, const cllm_tokens *prompt, const cllm_tokens *joined, int eos, int eos_id) {
    gen_out *g = find_gen(id);
    if (!g) { FAIL("prompt %lld: no gen record", (long long)id); return; }
    if (g->prompt.n != prompt->n || differ(g->prompt.ids, prompt->ids, prompt->n * sizeof(int32_t)))
        FAIL("prompt %lld: the gen record's prompt differs", (long long)id);
    size_t J = joined->n;
    if (eos) {
        if (J == 0 || joined->ids[J - 1] != eos_id) FAIL("prompt %lld: eos but the last token is not the EOS", (long long)id);
        else J--;
    }
    if (eos != g->eos) FAIL("prompt %lld: eos %d, AR eos %d", (long long)id, eos, g->eos);
    if (J < g->output.n || (eos && J != g->output.n))
        FAIL("prompt %lld: %zu tokens, AR made %zu", (long long)id, J, g->output.n);
    size_t cmp = J < g->output.n ? J : g->output.n;
    for (size_t i = 0; i < cmp; i++)
        if (joined->ids[i] != g->output.ids[i]) {
            FAIL("prompt %lld: token %zu is %d, AR's is %d", (long long)id, i, joined->ids[i], g->output.ids[i]);
            break;
        }
}

int main(int argc, char **argv) {
    static const struct option lo[] = {
        { "model", required_argument, 0, 'm' }, { "threads", required_argument, 0, 't' },
        { "block", required_argument, 0, 'n' }, { "gen", required_argument, 0, 'g' },
        { "states", no_argument, 0, 's' }, { "aug-base", required_argument, 0, 'a' },
        { "init", required_argument, 0, 'i' }, { 0, 0, 0, 0 },
    };
    const char *model = NULL, *gen = NULL, *aug_base = NULL;
    int threads = 1, n = 0, check_states = 0, y0 = Y0_NONE, c;
    while ((c = getopt_long(argc, argv, "m:t:n:g:sa:i:", lo, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': threads = atoi(optarg); break;
        case 'n': n = atoi(optarg); break;
        case 'g': gen = optarg; break;
        case 's': check_states = 1; break;
        case 'a': aug_base = optarg; break;
        case 'i':
            y0 = !strcmp(optarg, "prompt") ? Y0_PROMPT : !strcmp(optarg, "vocab") ? Y0_VOCAB : !strcmp(optarg, "pad") ? Y0_PAD : -1;
            if (y0 < 0) { fprintf(stderr, "traj-verify: --init %s: not prompt, vocab or pad\n", optarg); return 2; }
            break;
        default: fprintf(stderr, "usage: traj-verify -m MODEL [-t N] [-n N] [--gen GEN] [--states] [--aug-base BASE] TRAJ\n"); return 2;
        }
    }
    if (!model || optind != argc - 1) { fprintf(stderr, "usage: traj-verify -m MODEL [-t N] [-n N] [--gen GEN] [--states] [--aug-base BASE] TRAJ\n"); return 2; }
    cllm_set_threads(threads > 0 ? threads : 1);
    cllm_model m;
    if (cllm_model_load(&m, model)) { fprintf(stderr, "traj-verify: %s\n", cllm_errmsg()); return 1; }
    int eos_id = m.cfg.eos_id >= 0 ? m.cfg.eos_id : (m.tok ? cllm_tokenizer_eos(m.tok) : -1);
    int pad_id = m.cfg.pad_id >= 0 ? m.cfg.pad_id : (m.tok ? cllm_tokenizer_pad(m.tok) : -1);
    if (pad_id < 0) pad_id = 0;
    if (aug_base && load_bases(aug_base)) { fprintf(stderr, "traj-verify: %s\n", cllm_errmsg()); return 1; }
    if (gen && load_gens(gen)) { fprintf(stderr, "traj-verify: %s\n", cllm_errmsg()); return 1; }
    cllm_fwd f;
    cllm_kv kv;
    memset(&kv, 0, sizeof kv);
    if (cllm_fwd_init(&f, &m, 256)) { fprintf(stderr, "traj-verify: %s\n", cllm_errmsg()); return 1; }
    cllm_reader *r;
    if (cllm_reader_open(&r, argv[optind])) { fprintf(stderr, "traj-verify: %s\n", cllm_errmsg()); return 1; }

    cllm_record rec;
    cllm_traj_rec t;
    int rc;
    long long n_rec = 0, n_prompts = 0, n_states = 0, n_steps = 0, n_empty = 0, n_eos = 0;
    int64_t cur = -1;
    int cur_eos = 0;
    long long cur_chunks = 0;
    cllm_tokens prompt = { 0 }, joined = { 0 };
    int *buf = NULL, *out = NULL;
    size_t buf_cap = 0;
    while ((rc = cllm_reader_next(r, &rec)) == 0) {
        if (strcmp(rec.type, "traj")) continue;
        if ((rc = cllm_rec_traj_get(&rec, &t))) break;
        n_rec++;
        if (t.id != cur) {
            if (cur >= 0 && gen) finish_prompt(cur, &prompt, &joined, cur_eos, eos_id);
            cur = t.id;
            cur_eos = 0;
            cur_chunks = 0;
            n_prompts++;
            joined.n = 0;
            prompt.n = 0;
            if (cllm_tokens_append(&prompt, t.prompt.ids, t.prompt.n)) return 1;
        }
        long long id = (long long)t.id;
        size_t len = t.fixed.n;
        if (t.chunk != cur_chunks) FAIL("prompt %lld: chunk %lld where %lld was due", id, (long long)t.chunk, cur_chunks);
        if (cur_eos) FAIL("prompt %lld: a chunk after the eos chunk", id);
        if (t.prompt.n != prompt.n || differ(t.prompt.ids, prompt.ids, prompt.n * sizeof(int32_t)))
            FAIL("prompt %lld chunk %lld: prompt differs from chunk 0's", id, (long long)t.chunk);
        if (t.prefix.n != joined.n || differ(t.prefix.ids, joined.ids, joined.n * sizeof(int32_t)))
            FAIL("prompt %lld chunk %lld: prefix is not the earlier fixed points", id, (long long)t.chunk);
        if (len == 0) FAIL("prompt %lld chunk %lld: empty fixed point", id, (long long)t.chunk);
        for (size_t i = 0; i + 1 < len; i++)
            if (t.fixed.ids[i] == eos_id) FAIL("prompt %lld chunk %lld: EOS inside fixed", id, (long long)t.chunk);
        if (t.eos && (len == 0 || t.fixed.ids[len - 1] != eos_id)) FAIL("prompt %lld chunk %lld: eos but fixed does not end with the EOS", id, (long long)t.chunk);
        if (!t.eos && len > 0 && t.fixed.ids[len - 1] == eos_id) FAIL("prompt %lld chunk %lld: fixed ends with the EOS but eos is false", id, (long long)t.chunk);
        if (n > 0 && !t.eos && len != (size_t)n) FAIL("prompt %lld chunk %lld: fixed has %zu tokens, not %d", id, (long long)t.chunk, len, n);
        if (n > 0 && len > (size_t)n) FAIL("prompt %lld chunk %lld: fixed longer than n", id, (long long)t.chunk);
        if (aug_base) check_aug(&t);
        if (t.n_states == 0) n_empty++;
        else if (!differ(t.states[t.n_states - 1].ids, t.fixed.ids, len * sizeof(int32_t)))
            FAIL("prompt %lld chunk %lld: the last state equals fixed", id, (long long)t.chunk);
        n_states += (long long)t.n_states;
        n_eos += t.eos;

        /* Forwards: the context is prompt + prefix. */
        int L = (int)(t.prompt.n + t.prefix.n);
        size_t need = (size_t)L + len + 1;
        if (need > buf_cap) {
            buf_cap = need * 2;
            buf = realloc(buf, buf_cap * sizeof *buf);
            out = realloc(out, buf_cap * sizeof *out);
            if (!buf || !out) return 1;
        }
        if (kv.cap < (int)need) {
            cllm_kv_free(&kv);
            if (cllm_kv_init(&kv, &m.cfg, 1, (int)need * 2)) { fprintf(stderr, "traj-verify: %s\n", cllm_errmsg()); return 1; }
        }
        int *ctx = cllm_malloc((size_t)L * sizeof(int));
        if (!ctx) return 1;
        for (size_t i = 0; i < t.prompt.n; i++) ctx[i] = t.prompt.ids[i];
        for (size_t i = 0; i < t.prefix.n; i++) ctx[t.prompt.n + i] = t.prefix.ids[i];
        check_y0(y0, &t, ctx, L, pad_id);
        if (step(&f, &kv, ctx, L, t.fixed.ids, (int)len, buf, out)) { fprintf(stderr, "traj-verify: %s\n", cllm_errmsg()); return 1; }
        n_steps++;
        for (size_t i = 0; i < len; i++)
            if (out[i] != t.fixed.ids[i]) {
                FAIL("prompt %lld chunk %lld: fixed is not a fixed point (position %zu: %d -> %d)", id, (long long)t.chunk, i,
                     t.fixed.ids[i], out[i]);
                break;
            }
        for (size_t j = 0; check_states && j < t.n_states; j++) {
            const int32_t *next = j + 1 < t.n_states ? t.states[j + 1].ids : t.fixed.ids;
            if (step(&f, &kv, ctx, L, t.states[j].ids, (int)len, buf, out)) { fprintf(stderr, "traj-verify: %s\n", cllm_errmsg()); return 1; }
            n_steps++;
            for (size_t i = 0; i < len; i++)
                if (out[i] != next[i]) {
                    FAIL("prompt %lld chunk %lld: state %zu does not step to the next (position %zu)", id, (long long)t.chunk, j, i);
                    break;
                }
        }
        free(ctx);
        if (cllm_tokens_append(&joined, t.fixed.ids, len)) return 1;
        cur_eos = t.eos;
        cur_chunks++;
        cllm_rec_traj_free(&t);
    }
    if (rc != CLLM_EOF) { fprintf(stderr, "traj-verify: %s\n", cllm_errmsg()); return 1; }
    if (cur >= 0 && gen) finish_prompt(cur, &prompt, &joined, cur_eos, eos_id);
    if (gen && (size_t)n_prompts != n_gens) FAIL("%lld prompts in the traj stream, %zu gen records", n_prompts, n_gens);
    if (y0 == Y0_PROMPT && n_rec > n_prompts && !y0_prefix_only)
        FAIL("--init prompt: no y(0) token of a later chunk was drawn from its prefix");
    if (y0 == Y0_VOCAB && !y0_outside) FAIL("--init vocab: every y(0) token is in its context");
    printf("traj-verify: %lld records, %lld prompts, %lld states (%.2f per record), %lld eos, %lld with no state, "
           "%lld forwards checked%s, %lld augmented states checked: %s\n",
           n_rec, n_prompts, n_states, n_rec ? (double)n_states / (double)n_rec : 0.0, n_eos, n_empty, n_steps,
           gen ? ", AR outputs compared" : "", n_aug_total, failures ? "FAILED" : "ok");
    cllm_reader_close(r);
    cllm_tokens_free(&prompt);
    cllm_tokens_free(&joined);
    free(buf);
    free(out);
    for (size_t i = 0; i < n_gens; i++) { cllm_tokens_free(&gens[i].prompt); cllm_tokens_free(&gens[i].output); }
    free(gens);
    for (size_t i = 0; i < n_bases; i++) cllm_rec_traj_free(&bases[i]);
    free(bases);
    cllm_fwd_free(&f);
    cllm_kv_free(&kv);
    cllm_model_free(&m);
    return failures ? 1 : 0;
}
