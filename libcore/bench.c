/* bench.c: cllm-bench's engine (see bench.h). */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "clock.h"
#include "err.h"
#include "eval.h"
#include "forward.h"
#include "gen.h"
#include "records.h"
#include "stream.h"

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double cllm_median(double *v, int n) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct clock_ctx {
    double t_first;
    int seen;
} clock_ctx;

static int on_tokens(void *ctx, const int *t, int n) {
    clock_ctx *c = ctx;
    (void)t;
    if (!c->seen) c->t_first = cllm_now_s();
    c->seen += n;
    return cllm_interrupted ? CLLM_EINTR : 0;
}

/* One (model, method) line of results. */
typedef struct bres {
    int model, method;
    long tokens, steps;          /* all tokens, all passes (prompt's as one) */
    long dec_tokens, dec_passes; /* after the first token */
    double dec_s, e2e_s;         /* sums of per-prompt medians */
    int differ;                  /* prompts whose output differs from AR (Jacobi) */
} bres;

typedef struct one_run {
    int *tokens;
    int n_tokens, steps, prefill;
    double dec_s, e2e_s;
} one_run;

/* Decode prompt p once with method; fills out (tokens owned by out). */
static int decode_once(cllm_fwd *f, cllm_kv *kv, const cllm_prompt *p, const cllm_decode_opts *base, int method,
                       uint64_t seed, one_run *out) {
    cllm_decode_opts d = *base;
    d.method = method;
    if (method == CLLM_DECODE_AR) d.n = 1;
    d.seed = seed * 0x9E3779B97F4A7C15ull + (uint64_t)p->id;   /* as cllm-gen */
    clock_ctx c = { 0, 0 };
    d.on_tokens = on_tokens;
    d.cb_ctx = &c;
    d.trace = 0;
    cllm_decode_result r;
    double t0 = cllm_now_s();
    int rc = cllm_decode(f, kv, 0, p->tokens.ids, (int)p->tokens.n, &d, &r);
    double t1 = cllm_now_s();
    if (rc) {
        cllm_decode_result_free(&r);
        if (rc == CLLM_EINTR) return cllm_error(CLLM_EINTR, "interrupted");
        return rc;
    }
    memset(out, 0, sizeof *out);
    out->n_tokens = r.n_tokens;
    out->prefill = r.prompt_steps;
    out->steps = r.steps - (out->prefill - 1);
    out->e2e_s = t1 - t0;
    out->dec_s = c.seen ? t1 - c.t_first : 0;
    out->tokens = r.tokens;
    r.tokens = NULL;
    cllm_decode_result_free(&r);
    return 0;
}

static int ensure_kv(cllm_kv *kv, const cllm_fwd *f, int need) {
    if (kv->cap >= need) return 0;
    int cap = kv->cap ? kv->cap : 512;
    while (cap < need) cap *= 2;
    cllm_kv_free(kv);
    return cllm_kv_init_for(kv, f, 1, cap);
}

/* All prompts of one model: AR and Jacobi results into res[0], res[1]. */
static int bench_model(const cllm_model *m, int mi, const char *name, cllm_prompt *P, int np, const cllm_bench_opts *o,
                       bres *res) {
    cllm_fwd f;
    cllm_kv kv;
    memset(&f, 0, sizeof f);
    memset(&kv, 0, sizeof kv);
    cllm_decode_opts dec = o->dec;
    if (dec.eos_id < 0) dec.eos_id = cllm_model_eos_id(m);
    if (dec.guess == CLLM_GUESS_PAD) dec.pad_id = cllm_model_pad_id(m);
    int R = o->repeat;
    double *ts = cllm_malloc((size_t)R * 4 * sizeof *ts);   /* [dec AR, dec Jacobi, e2e AR, e2e Jacobi][R] */
    if (!ts) return CLLM_ENOMEM;
    int rc = cllm_fwd_init_on(&f, m, dec.n > 128 ? dec.n : 128, o->device, 0);
    int maxlen = 0;
    for (int p = 0; p < np; p++) if ((int)P[p].tokens.n > maxlen) maxlen = (int)P[p].tokens.n;
    if (!rc) rc = ensure_kv(&kv, &f, maxlen + dec.max_new_tokens + dec.n);
    for (int k = 0; k < 2; k++) {
        memset(&res[k], 0, sizeof res[k]);
        res[k].model = mi;
        res[k].method = k;
    }
    one_run run[2];
    memset(run, 0, sizeof run);
    /* warm-up: the first prompt, both methods */
    for (int w = 0; !rc && w < o->warmup; w++)
        for (int k = 0; !rc && k < 2; k++) {
            rc = decode_once(&f, &kv, &P[0], &dec, k, dec.seed, &run[k]);
            free(run[k].tokens);
            run[k].tokens = NULL;
        }
    for (int p = 0; !rc && p < np; p++) {
        if (o->progress) {
            fprintf(o->progress, "\r%s: prompt %d/%d", name, p + 1, np);
            fflush(o->progress);
        }
        int *first[2] = { NULL, NULL };
        int first_n[2] = { 0, 0 }, first_steps[2] = { 0, 0 };
        for (int r = 0; !rc && r < R; r++)
            for (int k = 0; !rc && k < 2; k++) {   /* AR and Jacobi alternate */
                rc = decode_once(&f, &kv, &P[p], &dec, k, dec.seed, &run[k]);
                if (rc) break;
                ts[k * R + r] = run[k].dec_s;
                ts[(2 + k) * R + r] = run[k].e2e_s;
                if (r == 0) {
                    first[k] = run[k].tokens;
                    first_n[k] = run[k].n_tokens;
                    first_steps[k] = run[k].steps;
                } else {
                    if (run[k].n_tokens != first_n[k] || run[k].steps != first_steps[k] ||
                        memcmp(run[k].tokens, first[k], (size_t)first_n[k] * sizeof(int)))
                        rc = cllm_error(CLLM_EINVAL, "%s: prompt %lld: %s decoding is not deterministic across repeats",
                                        name, (long long)P[p].id, k ? "Jacobi" : "AR");
                    free(run[k].tokens);
                }
                run[k].tokens = NULL;
            }
        if (!rc) {
            for (int k = 0; k < 2; k++) {
                res[k].tokens += first_n[k];
                res[k].steps += first_steps[k];
                res[k].dec_tokens += first_n[k] > 0 ? first_n[k] - 1 : 0;
                res[k].dec_passes += first_steps[k] - 1;
                res[k].dec_s += cllm_median(ts + k * R, R);
                res[k].e2e_s += cllm_median(ts + (2 + k) * R, R);
            }
            if (first_n[0] != first_n[1] || memcmp(first[0], first[1], (size_t)first_n[0] * sizeof(int))) res[1].differ++;
        }
        free(first[0]);
        free(first[1]);
    }
    if (o->progress) { fprintf(o->progress, "\r\033[K"); fflush(o->progress); }
    free(ts);
    cllm_fwd_free(&f);
    cllm_kv_free(&kv);
    return rc;
}

static double ratio(double a, double b) { return b > 0 ? a / b : NAN; }

static void print_table(FILE *t, const bres *res, int nres, const char *const *names, int n_models, const cllm_bench_opts *o,
                        int np) {
    char cell[16][12][48];
    const char *head[12] = { "model", "method", "tokens", "passes", "tok/step", "tok/s", "ms/pass", "speedup", "vs base",
                             "agree", "", "" };
    int ncol = n_models > 1 ? 10 : 9;
    int nrow = nres + 1;
    if (nrow > 16) nrow = 16;
    for (int c = 0; c < ncol; c++) snprintf(cell[0][c], 48, "%s", c == 8 && ncol == 9 ? "agree" : head[c]);
    for (int i = 0; i + 1 < nrow; i++) {
        const bres *r = &res[i];
        const bres *ar = &res[r->model * 2], *base_ar = &res[0];
        char (*c)[48] = cell[i + 1];
        snprintf(c[0], 48, "%s", names[r->model]);
        if (r->method) snprintf(c[1], 48, "jacobi n=%d", o->dec.n);
        else snprintf(c[1], 48, "ar");
        snprintf(c[2], 48, "%ld", r->tokens);
        snprintf(c[3], 48, "%ld", r->steps);
        snprintf(c[4], 48, "%.3f", ratio((double)r->tokens, (double)r->steps));
        snprintf(c[5], 48, "%.2f", ratio((double)r->dec_tokens, r->dec_s));
        snprintf(c[6], 48, "%.1f", 1000 * ratio(r->dec_s, (double)r->dec_passes));
        snprintf(c[7], 48, "%.2fx", ratio(ar->dec_s, r->dec_s));
        int k = 8;
        if (n_models > 1) snprintf(c[k++], 48, "%.2fx", ratio(base_ar->dec_s, r->dec_s));
        if (r->method) snprintf(c[k], 48, "%d/%d", np - r->differ, np);
        else snprintf(c[k], 48, "-");
    }
    if (n_models > 1) snprintf(cell[0][8], 48, "vs base"), snprintf(cell[0][9], 48, "agree");
    int w[12] = { 0 };
    for (int i = 0; i < nrow; i++)
        for (int c = 0; c < ncol; c++) {
            int l = (int)strlen(cell[i][c]);
            if (l > w[c]) w[c] = l;
        }
    for (int i = 0; i < nrow; i++) {
        for (int c = 0; c < ncol; c++)
            fprintf(t, "%s%*s", c ? "  " : "", c < 2 ? -w[c] : w[c], cell[i][c]);
        fputc('\n', t);
    }
}

/* The metric records of nres results into w (opened by the caller). */
static int write_metrics(cllm_writer *w, cllm_packbuf *b, const bres *res, int nres, const char *const *names,
                         const cllm_bench_opts *o, int np) {
    int rc = 0;
    for (int i = 0; !rc && i < nres; i++) {
        const bres *r = &res[i];
        const bres *ar = &res[r->model * 2];
        cllm_meta_kv meta[5] = { { "model", names[r->model], 0 }, { "method", r->method ? "jacobi" : "ar", 0 },
                                 { "n", NULL, r->method ? o->dec.n : 1 }, { "prompts", NULL, np },
                                 { "repeat", NULL, o->repeat } };
        struct { const char *name; double v; const char *unit; } M[] = {
            { "tokens", (double)r->tokens, "tokens" },
            { "steps", (double)r->steps, "passes" },
            { "tokens_per_step", ratio((double)r->tokens, (double)r->steps), "tokens/pass" },
            { "tokens_per_s", ratio((double)r->dec_tokens, r->dec_s), "tokens/s" },
            { "ms_per_pass", 1000 * ratio(r->dec_s, (double)r->dec_passes), "ms" },
            { "decode_s", r->dec_s, "s" },
            { "e2e_s", r->e2e_s, "s" },
            { "speedup", ratio(ar->dec_s, r->dec_s), "x" },
            { "speedup_vs_base_ar", ratio(res[0].dec_s, r->dec_s), "x" },
            { "differ_from_ar", (double)r->differ, "prompts" },
        };
        for (size_t k = 0; !rc && k < sizeof M / sizeof M[0]; k++) {
            if (isnan(M[k].v)) continue;
            cllm_metric_rec mr = { M[k].name, M[k].v, -1, M[k].unit };
            rc = cllm_metric_pack_meta(b, &mr, meta, 5);
            if (!rc) rc = cllm_writer_put(w, b->data, b->size);
        }
    }
    return rc;
}

int cllm_bench_run(const cllm_model *const *models, const char *const *names, int n_models, cllm_prompts *src,
                   const cllm_bench_opts *o) {
    if (n_models < 1 || n_models > 4) return cllm_error(CLLM_EINVAL, "bench: 1 to 4 models, not %d", n_models);
    if (o->repeat < 1) return cllm_error(CLLM_EINVAL, "bench: repeat %d < 1", o->repeat);
    if (o->dec.n < 1 || o->dec.max_new_tokens < 1) return cllm_error(CLLM_EINVAL, "bench: bad block size or token limit");
    for (int i = 1; i < n_models; i++) {
        if (models[i]->cfg.vocab != models[0]->cfg.vocab)
            return cllm_error(CLLM_EINVAL, "%s and %s have different vocabularies (%d, %d)", names[0], names[i],
                              models[0]->cfg.vocab, models[i]->cfg.vocab);
        if (models[0]->tok && models[i]->tok &&
            strcmp(cllm_tokenizer_hash(models[0]->tok), cllm_tokenizer_hash(models[i]->tok)))
            return cllm_error(CLLM_EINVAL, "%s and %s have different tokenizers", names[0], names[i]);
    }
    /* The output is opened (and its header written) before the measurements,
     * so that one that cannot be written fails now, not after the run. */
    cllm_writer *w = NULL;
    cllm_packbuf b = { 0 };
    int rc = o->no_stream ? 0
                          : cllm_writer_open_for_model(&w, &b, o->output, o->force, models[0], "cllm-bench", o->argc,
                                                       o->argv);
    cllm_prompt *P = NULL;
    size_t np = 0, cap = 0;
    for (; !rc;) {
        if (o->max_prompts > 0 && np >= (size_t)o->max_prompts) break;
        if (cllm_grow((void **)&P, &cap, np + 1, sizeof *P)) { rc = CLLM_ENOMEM; break; }
        memset(&P[np], 0, sizeof P[np]);
        rc = cllm_prompts_next(src, &P[np]);
        if (rc) { cllm_prompt_free(&P[np]); break; }
        for (size_t i = 0; i < P[np].tokens.n && !rc; i++)
            if (P[np].tokens.ids[i] >= models[0]->cfg.vocab)
                rc = cllm_error(CLLM_EINVAL, "prompt %lld: token id %d is outside the vocabulary (%d)",
                                (long long)P[np].id, P[np].tokens.ids[i], models[0]->cfg.vocab);
        np++;
        if (rc) break;
    }
    if (rc == CLLM_EOF) rc = 0;
    if (!rc && np == 0) rc = cllm_error(CLLM_EINVAL, "no prompts");
    bres res[8];
    memset(res, 0, sizeof res);
    for (int i = 0; !rc && i < n_models; i++) rc = bench_model(models[i], i, names[i], P, (int)np, o, &res[2 * i]);
    if (!rc && o->table) {
        fprintf(o->table, "cllm-bench: %zu prompt%s, <= %d new tokens, n = %d, %d repeat%s (median), %d warm-up\n", np, np == 1 ? "" : "s",
                o->dec.max_new_tokens, o->dec.n, o->repeat, o->repeat > 1 ? "s" : "", o->warmup);
        print_table(o->table, res, 2 * n_models, names, n_models, o, (int)np);
        fflush(o->table);
    }
    if (!rc && w) rc = write_metrics(w, &b, res, 2 * n_models, names, o, (int)np);
    /* A benchmark stopped half-way has no result worth reporting (AR may be
     * measured and Jacobi not): no metrics, the stream whole and marked
     * interrupted (cllm_writer_abort on a signal). */
    if (w) {
        if (rc) cllm_writer_abort(w);
        else rc = cllm_writer_close(w);
    }
    if (rc == CLLM_EINTR) rc = cllm_error(CLLM_EINTR, "interrupted");
    cllm_packbuf_free(&b);
    for (size_t i = 0; i < np; i++) cllm_prompt_free(&P[i]);
    free(P);
    return rc;
}
