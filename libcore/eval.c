/* eval.c: cllm-eval's engine (see eval.h for the definitions of the numbers).
 *
 * The records are read once; each evaluated record is reduced to a row (its
 * trace analysed on the way, only the per-block pass counts kept), the
 * baseline to its output, time and prompt hash, the references to their
 * extracted answers. cllm_eval_finish() joins them by id. The record drawn by
 * --show (or, for --html, the first traced one) is kept whole.
 */
#include "eval.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli.h"
#include "err.h"
#include "gguf.h"
#include "json.h"
#include "stream.h"

/* ================================================================ answers */

/* The number starting at text[i] (a digit): its end, and its normalized form. */
static size_t scan_number(const char *t, size_t i, char *buf, size_t cap, int neg) {
    size_t o = 0;
    char tmp[256];
    if (neg) tmp[o++] = '-';
    size_t j = i;
    while (isdigit((unsigned char)t[j])) { if (o < sizeof tmp - 2) tmp[o++] = t[j]; j++; }
    /* group commas: ",ddd" not followed by another digit */
    while (t[j] == ',' && isdigit((unsigned char)t[j + 1]) && isdigit((unsigned char)t[j + 2]) &&
           isdigit((unsigned char)t[j + 3]) && !isdigit((unsigned char)t[j + 4])) {
        for (int k = 1; k <= 3; k++) if (o < sizeof tmp - 2) tmp[o++] = t[j + k];
        j += 4;
    }
    size_t frac_at = 0;
    if (t[j] == '.' && isdigit((unsigned char)t[j + 1])) {
        frac_at = o;
        if (o < sizeof tmp - 2) tmp[o++] = '.';
        j++;
        while (isdigit((unsigned char)t[j])) { if (o < sizeof tmp - 2) tmp[o++] = t[j]; j++; }
    }
    tmp[o] = 0;
    /* normalize: fractional trailing zeros, a bare '.', leading zeros, -0 */
    if (frac_at) {
        while (o > frac_at && tmp[o - 1] == '0') tmp[--o] = 0;
        if (o == frac_at + 1) tmp[--o] = 0;
    }
    char *digits = tmp + (neg ? 1 : 0);
    size_t lead = 0;
    while (digits[lead] == '0' && isdigit((unsigned char)digits[lead + 1])) lead++;
    memmove(digits, digits + lead, strlen(digits + lead) + 1);
    if (neg && !strcmp(digits, "0")) memmove(tmp, digits, 2);
    if (buf) snprintf(buf, cap, "%s", tmp);
    return j;
}

/* Find numbers in t[from..): the first (first = 1) or the last; 1 when found. */
static int find_number(const char *t, size_t from, int first, char *out, size_t cap) {
    int found = 0;
    size_t i = from;
    while (t[i]) {
        if (isdigit((unsigned char)t[i]) && (i == 0 || !isalnum((unsigned char)t[i - 1]) || i == from)) {
            int neg = i > from && t[i - 1] == '-' && (i - 1 == 0 || !isalnum((unsigned char)t[i - 2]));
            i = scan_number(t, i, out, cap, neg);
            found = 1;
            if (first) return 1;
        } else if (isdigit((unsigned char)t[i])) {
            /* digits glued to the word before them (x2): skip the run. Digits
             * followed by a word (5kg, 3rd) are a number, as the usual GSM8K
             * answer matchers read them. */
            while (isdigit((unsigned char)t[i])) i++;
        } else {
            i++;
        }
    }
    return found;
}

int cllm_gsm8k_answer(const char *text, char *out, size_t cap) {
    if (!out || cap < 32) return cllm_error(CLLM_EINVAL, "gsm8k answer: buffer of %zu bytes is too small", cap);
    out[0] = 0;
    if (!text) return 0;
    const char *last = NULL;
    for (const char *p = strstr(text, "####"); p; p = strstr(p + 4, "####")) last = p;
    if (last && find_number(text, (size_t)(last - text) + 4, 1, out, cap)) return 1;
    out[0] = 0;
    return find_number(text, 0, 0, out, cap) ? 1 : (out[0] = 0, 0);
}

/* ================================================================ traces */

void cllm_eval_trace_free(cllm_eval_trace *t) {
    if (!t) return;
    free(t->block_passes);
    free(t->iter_block);
    free(t->iter_start);
    free(t->iter_fixed);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

static int trace_error(const cllm_gen_rec *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int trace_error(const cllm_gen_rec *g, const char *fmt, ...) {
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return cllm_error(CLLM_ESCHEMA, "gen record id %lld: inconsistent trace: %s", (long long)g->id, what);
}

/* Classify the cells of the block made of passes [a, e] and count its
 * stationary positions. */
static void analyse_block(const cllm_gen_rec *g, cllm_eval_trace *t, size_t a, size_t e, int s, int m, int *fw) {
    const int W = t->width;
    const int32_t *out = g->output.ids;
    const int n_out = (int)g->output.n;
    /* first wrong known position of each pass (m when none) */
    for (size_t i = a; i <= e; i++) {
        fw[i - a] = m;
        for (int j = 1; j < m && s + j < n_out; j++)
            if (g->states[i].ids[j] != out[s + j]) { fw[i - a] = j; break; }
    }
    for (int j = 0; j < m; j++) {
        int known = s + j < n_out;
        /* i0: the first pass from which position j holds y*_j to the end */
        size_t i0 = e + 1;
        if (known)
            for (size_t i = e + 1; i-- > a;) {
                if (g->states[i].ids[j] != out[s + j]) break;
                i0 = i;
            }
        int stat = 0;
        for (size_t i = a; i <= e; i++) {
            unsigned char *c = &t->cells[i * (size_t)W + (size_t)j];
            int v = g->states[i].ids[j];
            if (!known) *c = CLLM_CELL_UNKNOWN;
            else if (v != out[s + j]) *c = CLLM_CELL_WRONG;
            else if (j <= t->iter_fixed[i]) *c = CLLM_CELL_FINAL;
            else if (j >= 1 && i >= i0 && fw[i - a] < j) { *c = CLLM_CELL_STATIONARY; stat = 1; }
            else *c = CLLM_CELL_CORRECT;
        }
        t->stationary += stat;
    }
}

int cllm_eval_trace_analyse(const cllm_gen_rec *g, cllm_eval_trace *t) {
    memset(t, 0, sizeof *t);
    size_t I = g->n_states;
    if (g->accepted.n != I) return trace_error(g, "%zu states but %zu accepted counts", I, g->accepted.n);
    if (I == 0) return 0;
    if (g->n < 1 || g->n > 1 << 20) return trace_error(g, "block size n = %lld out of range", (long long)g->n);
    if ((int64_t)I != g->steps - 1)
        return trace_error(g, "%zu passes traced but steps is %lld (the prompt's pass plus one per traced pass)", I,
                           (long long)g->steps);
    if (g->output.n < 1) return trace_error(g, "%zu passes traced but the output is empty", I);
    t->n_iter = I;
    t->width = (int)g->n;
    t->iter_block = cllm_malloc(I * sizeof(int));
    t->iter_start = cllm_malloc(I * sizeof(int));
    t->iter_fixed = cllm_malloc(I * sizeof(int));
    t->block_passes = cllm_malloc(I * sizeof(int));
    t->cells = cllm_calloc(I, (size_t)t->width);
    int *fw = cllm_malloc(I * sizeof(int));
    if (!t->iter_block || !t->iter_start || !t->iter_fixed || !t->block_passes || !t->cells || !fw) {
        free(fw);
        cllm_eval_trace_free(t);
        return CLLM_ENOMEM;
    }
    int rc = 0;
    size_t a = 0;            /* first pass of the current block */
    int s = 0, fixed = 0, m = 0, block = 0;
    for (size_t i = 0; i < I && !rc; i++) {
        int len = (int)g->states[i].n;
        if (len < 1 || len > t->width) { rc = trace_error(g, "state %zu has %d tokens (n = %d)", i, len, t->width); break; }
        if (fixed == 0) { a = i; m = len; }
        else if (len != m) { rc = trace_error(g, "state %zu changes the block length from %d to %d", i, m, len); break; }
        if (s >= (int)g->output.n || g->states[i].ids[0] != g->output.ids[s]) {
            rc = trace_error(g, "state %zu: y_1 is not output token %d", i, s);
            break;
        }
        int acc = g->accepted.ids[i];
        if (acc < 1 || acc > m - fixed) { rc = trace_error(g, "pass %zu accepts %d tokens, %d were left in the block", i, acc, m - fixed); break; }
        t->iter_block[i] = block;
        t->iter_start[i] = s;
        t->iter_fixed[i] = fixed;
        t->fast_forward += acc - 1;
        fixed += acc;
        if (fixed == m || i == I - 1) {
            analyse_block(g, t, a, i, s, m, fw);
            t->block_passes[block++] = (int)(i - a + 1);
            s += m;
            fixed = 0;
        }
    }
    free(fw);
    if (rc) { cllm_eval_trace_free(t); return rc; }
    t->blocks = block;
    return 0;
}

/* ================================================================ the evaluation */

typedef struct base_ent {
    int64_t id;
    cllm_tokens output;
    double time_s;
    uint64_t prompt_hash;
    char pred[48];
    int has_pred;
} base_ent;

typedef struct ref_ent {
    int64_t id;
    size_t order;
    char num[48];
    int has;
} ref_ent;

struct cllm_eval {
    int task;
    cllm_eval_row *rows;
    cllm_tokens *outs;
    uint64_t *phash;
    char (*own_ref)[48];
    int *has_own_ref;
    size_t n_rows, cap_rows;
    base_ent *base;
    size_t n_base, cap_base;
    ref_ent *refs;
    size_t n_refs, cap_refs;
    cllm_eval_summary sum;
};

static uint64_t hash_tokens(const cllm_tokens *t) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t v = (uint32_t)t->ids[i];
        for (int k = 0; k < 4; k++) { h ^= (v >> (8 * k)) & 0xff; h *= 1099511628211ull; }
    }
    return h ^ t->n;
}

int cllm_eval_new(cllm_eval **out, int task) {
    if (task != CLLM_TASK_NONE && task != CLLM_TASK_GSM8K) return cllm_error(CLLM_EINVAL, "eval: unknown task %d", task);
    cllm_eval *e = cllm_calloc(1, sizeof *e);
    if (!e) return CLLM_ENOMEM;
    e->task = task;
    *out = e;
    return 0;
}

void cllm_eval_free(cllm_eval *e) {
    if (!e) return;
    for (size_t i = 0; i < e->n_rows; i++) {
        free(e->rows[i].block_passes);
        cllm_tokens_free(&e->outs[i]);
    }
    free(e->rows);
    free(e->outs);
    free(e->phash);
    free(e->own_ref);
    free(e->has_own_ref);
    for (size_t i = 0; i < e->n_base; i++) cllm_tokens_free(&e->base[i].output);
    free(e->base);
    free(e->refs);
    free(e);
}

static int check_gen(const cllm_gen_rec *g) {
    if (g->id < 0) return cllm_error(CLLM_ESCHEMA, "gen record id %lld: negative id", (long long)g->id);
    /* The limits keep the sums over records and ceil((T - 1 + eos) / n) in
     * int64 (a record's n near INT64_MAX overflowed the block count): a
     * decoder counts its passes in an int, and the trace takes n <= 2^20. */
    if (g->steps < 1 || g->steps > INT32_MAX)
        return cllm_error(CLLM_ESCHEMA, "gen record id %lld: steps %lld not in 1..%d", (long long)g->id,
                          (long long)g->steps, INT32_MAX);
    if (g->n < 1 || g->n > 1 << 20)
        return cllm_error(CLLM_ESCHEMA, "gen record id %lld: n %lld not in 1..%d", (long long)g->id, (long long)g->n,
                          1 << 20);
    if (!(g->time_s >= 0) || isinf(g->time_s))
        return cllm_error(CLLM_ESCHEMA, "gen record id %lld: time_s is not a time", (long long)g->id);
    return 0;
}

static double ratio(double a, double b) { return b > 0 ? a / b : NAN; }

int cllm_eval_add(cllm_eval *e, const cllm_gen_rec *g) {
    int rc = check_gen(g);
    if (rc) return rc;
    if (e->n_rows == e->cap_rows) {
        size_t cap = e->cap_rows ? 2 * e->cap_rows : 64;
        cllm_eval_row *r = cllm_realloc(e->rows, cap * sizeof *r);
        if (!r) return CLLM_ENOMEM;
        e->rows = r;
        cllm_tokens *o = cllm_realloc(e->outs, cap * sizeof *o);
        if (!o) return CLLM_ENOMEM;
        e->outs = o;
        uint64_t *h = cllm_realloc(e->phash, cap * sizeof *h);
        if (!h) return CLLM_ENOMEM;
        e->phash = h;
        char (*a)[48] = cllm_realloc(e->own_ref, cap * sizeof *a);
        if (!a) return CLLM_ENOMEM;
        e->own_ref = a;
        int *ha = cllm_realloc(e->has_own_ref, cap * sizeof *ha);
        if (!ha) return CLLM_ENOMEM;
        e->has_own_ref = ha;
        e->cap_rows = cap;
    }
    cllm_eval_row *r = &e->rows[e->n_rows];
    memset(r, 0, sizeof *r);
    r->id = g->id;
    snprintf(r->method, sizeof r->method, "%s", g->method ? g->method : "?");
    r->n = g->n;
    r->tokens = (int64_t)g->output.n;
    r->steps = g->steps;
    r->eos = g->eos;
    r->time_s = g->time_s;
    int64_t after = r->tokens - 1 + (g->eos ? 1 : 0);    /* final after the prompt's pass, EOS included */
    if (r->tokens == 0) after = 0;
    r->blocks = after > 0 ? (after + g->n - 1) / g->n : 0;
    r->iters = g->steps - 1;
    r->tokens_per_step = ratio((double)r->tokens, (double)r->steps);
    r->passes_per_block = r->blocks > 0 ? (double)r->iters / (double)r->blocks : NAN;
    r->tokens_per_s = ratio((double)r->tokens, r->time_s);
    r->fast_forward = r->stationary = -1;
    r->exact_match = -1;
    r->common_prefix = -1;
    r->correct = r->base_correct = -1;
    r->speedup = r->base_time_s = NAN;
    if (g->n_states > 0 || g->accepted.n > 0) {
        cllm_eval_trace t;
        if ((rc = cllm_eval_trace_analyse(g, &t))) return rc;
        if (t.blocks != r->blocks) {
            int64_t tb = t.blocks;
            cllm_eval_trace_free(&t);
            return cllm_error(CLLM_ESCHEMA, "gen record id %lld: inconsistent trace: %lld blocks traced, %lld expected from the output",
                              (long long)g->id, (long long)tb, (long long)r->blocks);
        }
        r->traced = 1;
        r->fast_forward = t.fast_forward;
        r->stationary = t.stationary;
        r->block_passes = t.block_passes;
        t.block_passes = NULL;
        cllm_eval_trace_free(&t);
    }
    cllm_tokens *o = &e->outs[e->n_rows];
    memset(o, 0, sizeof *o);
    if ((rc = cllm_tokens_copy(o, &g->output))) { free(r->block_passes); return rc; }
    e->phash[e->n_rows] = hash_tokens(&g->prompt);
    e->has_own_ref[e->n_rows] = 0;
    if (e->task == CLLM_TASK_GSM8K) {
        cllm_gsm8k_answer(g->text, r->pred, sizeof r->pred);
        if (g->answer) e->has_own_ref[e->n_rows] = cllm_gsm8k_answer(g->answer, e->own_ref[e->n_rows], 48) == 1;
    }
    e->n_rows++;
    return 0;
}

int cllm_eval_add_baseline(cllm_eval *e, const cllm_gen_rec *g) {
    int rc = check_gen(g);
    if (rc) return rc;
    if (cllm_grow((void **)&e->base, &e->cap_base, e->n_base + 1, sizeof *e->base)) return CLLM_ENOMEM;
    base_ent *b = &e->base[e->n_base];
    memset(b, 0, sizeof *b);
    b->id = g->id;
    b->time_s = g->time_s;
    b->prompt_hash = hash_tokens(&g->prompt);
    if ((rc = cllm_tokens_copy(&b->output, &g->output))) return rc;
    if (e->task == CLLM_TASK_GSM8K) b->has_pred = cllm_gsm8k_answer(g->text, b->pred, sizeof b->pred) == 1;
    e->n_base++;
    return 0;
}

int cllm_eval_add_ref(cllm_eval *e, int64_t id, const char *answer) {
    if (cllm_grow((void **)&e->refs, &e->cap_refs, e->n_refs + 1, sizeof *e->refs)) return CLLM_ENOMEM;
    ref_ent *r = &e->refs[e->n_refs];
    r->id = id;
    r->order = e->n_refs;
    r->has = cllm_gsm8k_answer(answer, r->num, sizeof r->num) == 1;
    e->n_refs++;
    return 0;
}

static int cmp_i64(int64_t a, int64_t b) { return a < b ? -1 : a > b; }
static int cmp_base(const void *a, const void *b) { return cmp_i64(((const base_ent *)a)->id, ((const base_ent *)b)->id); }
static int cmp_ref(const void *a, const void *b) {
    const ref_ent *x = a, *y = b;
    int c = cmp_i64(x->id, y->id);
    return c ? c : (x->order < y->order ? -1 : x->order > y->order);
}
static int cmp_id(const void *a, const void *b) { return cmp_i64(*(const int64_t *)a, *(const int64_t *)b); }

static const base_ent *find_base(const cllm_eval *e, int64_t id) {
    size_t lo = 0, hi = e->n_base;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (e->base[mid].id < id) lo = mid + 1; else hi = mid;
    }
    return lo < e->n_base && e->base[lo].id == id ? &e->base[lo] : NULL;
}

/* The last reference given for id. */
static const ref_ent *find_ref(const cllm_eval *e, int64_t id) {
    size_t lo = 0, hi = e->n_refs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (e->refs[mid].id <= id) lo = mid + 1; else hi = mid;
    }
    return lo > 0 && e->refs[lo - 1].id == id ? &e->refs[lo - 1] : NULL;
}

int cllm_eval_finish(cllm_eval *e) {
    cllm_eval_summary *S = &e->sum;
    memset(S, 0, sizeof *S);
    /* duplicate ids */
    if (e->n_rows > 1) {
        int64_t *ids = cllm_malloc(e->n_rows * sizeof *ids);
        if (!ids) return CLLM_ENOMEM;
        for (size_t i = 0; i < e->n_rows; i++) ids[i] = e->rows[i].id;
        qsort(ids, e->n_rows, sizeof *ids, cmp_id);
        for (size_t i = 1; i < e->n_rows; i++)
            if (ids[i] == ids[i - 1]) {
                long long d = (long long)ids[i];
                free(ids);
                return cllm_error(CLLM_EINVAL, "two gen records for prompt id %lld", d);
            }
        free(ids);
    }
    if (e->n_base) qsort(e->base, e->n_base, sizeof *e->base, cmp_base);
    for (size_t i = 1; i < e->n_base; i++)
        if (e->base[i].id == e->base[i - 1].id)
            return cllm_error(CLLM_EINVAL, "baseline: two gen records for prompt id %lld", (long long)e->base[i].id);
    if (e->n_refs) qsort(e->refs, e->n_refs, sizeof *e->refs, cmp_ref);

    double sum_prefix = 0, time_matched = 0;
    int64_t matches = 0, correct = 0, base_correct = 0, base_answered = 0;
    const char *method = NULL;
    S->n = -1;
    for (size_t i = 0; i < e->n_rows; i++) {
        cllm_eval_row *r = &e->rows[i];
        S->prompts++;
        S->tokens += r->tokens;
        S->steps += r->steps;
        S->time_s += r->time_s;
        S->blocks += r->blocks;
        S->iters += r->iters;
        if (i == 0) { method = r->method; S->n = r->n; }
        else {
            if (method && strcmp(method, r->method)) method = NULL;
            if (S->n != r->n) S->n = -1;
        }
        if (r->traced) {
            S->traced++;
            S->traced_blocks += r->blocks;
            S->fast_forward += r->fast_forward;
            S->stationary += r->stationary;
        }
        const base_ent *b = find_base(e, r->id);
        r->has_base = b != NULL;
        if (b) {
            if (b->prompt_hash != e->phash[i])
                return cllm_error(CLLM_ESCHEMA, "baseline record id %lld has another prompt than the evaluated one",
                                  (long long)r->id);
            const cllm_tokens *o = &e->outs[i];
            size_t k = 0;
            while (k < o->n && k < b->output.n && o->ids[k] == b->output.ids[k]) k++;
            r->common_prefix = (int64_t)k;
            r->exact_match = k == o->n && k == b->output.n;
            r->base_time_s = b->time_s;
            r->base_tokens = (int64_t)b->output.n;
            r->speedup = ratio(b->time_s, r->time_s);
            S->matched++;
            S->base_time_s += b->time_s;
            S->base_tokens += r->base_tokens;
            time_matched += r->time_s;
            matches += r->exact_match;
            sum_prefix += (double)k;
        }
        if (e->task == CLLM_TASK_GSM8K) {
            const ref_ent *f = find_ref(e, r->id);
            const char *ref = f ? (f->has ? f->num : NULL) : (e->has_own_ref[i] ? e->own_ref[i] : NULL);
            r->has_ref = ref != NULL;
            if (ref) {
                snprintf(r->ref, sizeof r->ref, "%s", ref);
                r->correct = r->pred[0] && !strcmp(r->pred, ref);
                S->answered++;
                correct += r->correct;
                if (b) {
                    snprintf(r->base_pred, sizeof r->base_pred, "%s", b->pred);
                    r->base_correct = b->has_pred && !strcmp(b->pred, ref);
                    base_correct += r->base_correct;
                    base_answered++;
                }
            }
        }
    }
    S->method = e->n_rows == 0 ? "none" : method ? method : "mixed";
    S->tokens_per_step = ratio((double)S->tokens, (double)S->steps);
    S->passes_per_block = S->blocks > 0 ? (double)S->iters / (double)S->blocks : NAN;
    S->tokens_per_s = ratio((double)S->tokens, S->time_s);
    S->fast_forward_per_block = S->traced_blocks > 0 ? (double)S->fast_forward / (double)S->traced_blocks : NAN;
    S->stationary_per_block = S->traced_blocks > 0 ? (double)S->stationary / (double)S->traced_blocks : NAN;
    S->base_tokens_per_s = ratio((double)S->base_tokens, S->base_time_s);
    S->speedup = S->matched ? ratio(S->base_time_s, time_matched) : NAN;
    S->exact_match = S->matched ? (double)matches / (double)S->matched : NAN;
    S->common_prefix = S->matched ? sum_prefix / (double)S->matched : NAN;
    S->accuracy = S->answered ? (double)correct / (double)S->answered : NAN;
    S->base_accuracy = base_answered ? (double)base_correct / (double)base_answered : NAN;
    if (e->n_base && e->n_rows && !S->matched)
        return cllm_error(CLLM_EINVAL, "the baseline shares no prompt id with the evaluated records");
    if (e->task == CLLM_TASK_GSM8K && e->n_rows && !S->answered)
        return cllm_error(CLLM_EINVAL, "--task gsm8k: no reference answers (give --ref FILE, or gen records that carry "
                                       "an answer field: cllm-gen copies the prompt's)");
    return 0;
}

size_t cllm_eval_rows(const cllm_eval *e) { return e->n_rows; }
const cllm_eval_row *cllm_eval_row_at(const cllm_eval *e, size_t i) { return i < e->n_rows ? &e->rows[i] : NULL; }
const cllm_eval_summary *cllm_eval_get_summary(const cllm_eval *e) { return &e->sum; }

/* ================================================================ metric records */

int cllm_metric_pack_meta(cllm_packbuf *b, const cllm_metric_rec *m, const cllm_meta_kv *meta, int n_meta) {
    if (n_meta <= 0) return cllm_rec_metric_pack(b, m);
    cllm_packbuf_reset(b);
    cllm_pack_map(b, 4 + (m->step >= 0 ? 1 : 0) + (m->unit ? 1 : 0));
    cllm_pack_cstr(b, "type");
    cllm_pack_cstr(b, "metric");
    cllm_pack_cstr(b, "name");
    cllm_pack_cstr(b, m->name);
    cllm_pack_cstr(b, "value");
    cllm_pack_double(b, m->value);
    if (m->step >= 0) { cllm_pack_cstr(b, "step"); cllm_pack_int(b, m->step); }
    if (m->unit) { cllm_pack_cstr(b, "unit"); cllm_pack_cstr(b, m->unit); }
    cllm_pack_cstr(b, "meta");
    cllm_pack_map(b, (uint32_t)n_meta);
    for (int i = 0; i < n_meta; i++) {
        cllm_pack_cstr(b, meta[i].key);
        if (meta[i].str) cllm_pack_cstr(b, meta[i].str);
        else if (meta[i].num == floor(meta[i].num) && fabs(meta[i].num) < 9e15) cllm_pack_int(b, (int64_t)meta[i].num);
        else cllm_pack_double(b, meta[i].num);
    }
    return b->error ? CLLM_ENOMEM : 0;
}

typedef struct mout {
    cllm_writer *w;
    cllm_packbuf b;
} mout;

static int put_metric(mout *mo, const char *name, double v, const char *unit, const cllm_meta_kv *meta, int n_meta) {
    if (!mo->w || isnan(v)) return 0;
    cllm_metric_rec m = { name, v, -1, unit };
    int rc = cllm_metric_pack_meta(&mo->b, &m, meta, n_meta);
    if (!rc) rc = cllm_writer_put(mo->w, mo->b.data, mo->b.size);
    return rc;
}

static int write_metrics(mout *mo, const cllm_eval *e, int summary) {
    const cllm_eval_summary *S = &e->sum;
    int rc = 0;
    for (size_t i = 0; !summary && i < e->n_rows && !rc; i++) {
        const cllm_eval_row *r = &e->rows[i];
        cllm_meta_kv id = { "id", NULL, (double)r->id };
        rc = put_metric(mo, "tokens", (double)r->tokens, "tokens", &id, 1);
        if (!rc) rc = put_metric(mo, "steps", (double)r->steps, "passes", &id, 1);
        if (!rc) rc = put_metric(mo, "tokens_per_step", r->tokens_per_step, "tokens/pass", &id, 1);
        if (!rc) rc = put_metric(mo, "passes_per_block", r->passes_per_block, "passes/block", &id, 1);
        if (!rc && r->traced) rc = put_metric(mo, "fast_forward", (double)r->fast_forward, "tokens", &id, 1);
        if (!rc && r->traced) rc = put_metric(mo, "stationary", (double)r->stationary, "tokens", &id, 1);
        if (!rc) rc = put_metric(mo, "tokens_per_s", r->tokens_per_s, "tokens/s", &id, 1);
        if (!rc && r->has_base) rc = put_metric(mo, "speedup", r->speedup, "x", &id, 1);
        if (!rc && r->has_base) rc = put_metric(mo, "exact_match", (double)r->exact_match, "fraction", &id, 1);
        if (!rc && r->has_base) rc = put_metric(mo, "common_prefix", (double)r->common_prefix, "tokens", &id, 1);
        if (!rc && r->correct >= 0) rc = put_metric(mo, "correct", (double)r->correct, "fraction", &id, 1);
    }
    if (rc) return rc;
    cllm_meta_kv all[2] = { { "scope", "all", 0 }, { "method", S->method, 0 } };
    struct { const char *name; double v; const char *unit; int on; } M[] = {
        { "prompts", (double)S->prompts, "prompts", 1 },
        { "tokens", (double)S->tokens, "tokens", 1 },
        { "steps", (double)S->steps, "passes", 1 },
        { "time_s", S->time_s, "s", 1 },
        { "tokens_per_step", S->tokens_per_step, "tokens/pass", 1 },
        { "blocks", (double)S->blocks, "blocks", 1 },
        { "passes_per_block", S->passes_per_block, "passes/block", 1 },
        { "traced_prompts", (double)S->traced, "prompts", S->traced > 0 },
        { "fast_forward", (double)S->fast_forward, "tokens", S->traced > 0 },
        { "fast_forward_per_block", S->fast_forward_per_block, "tokens/block", S->traced > 0 },
        { "stationary", (double)S->stationary, "tokens", S->traced > 0 },
        { "stationary_per_block", S->stationary_per_block, "tokens/block", S->traced > 0 },
        { "tokens_per_s", S->tokens_per_s, "tokens/s", 1 },
        { "baseline_prompts", (double)S->matched, "prompts", S->matched > 0 },
        { "baseline_tokens_per_s", S->base_tokens_per_s, "tokens/s", S->matched > 0 },
        { "speedup", S->speedup, "x", S->matched > 0 },
        { "exact_match", S->exact_match, "fraction", S->matched > 0 },
        { "common_prefix", S->common_prefix, "tokens", S->matched > 0 },
        { "answered", (double)S->answered, "prompts", e->task != CLLM_TASK_NONE },
        { "accuracy", S->accuracy, "fraction", e->task != CLLM_TASK_NONE },
        { "baseline_accuracy", S->base_accuracy, "fraction", e->task != CLLM_TASK_NONE && S->matched > 0 },
    };
    for (size_t i = 0; i < sizeof M / sizeof M[0] && !rc; i++)
        if (M[i].on) rc = put_metric(mo, M[i].name, M[i].v, M[i].unit, all, 2);
    return rc;
}

/* ================================================================ the table */

#define NCOL 16

typedef struct table {
    char cell[NCOL][64];
} trow;

static void fmt_num(char *b, size_t cap, double v, const char *f) {
    if (isnan(v)) snprintf(b, cap, "-");
    else snprintf(b, cap, f, v);
}

static void fmt_i64(char *b, size_t cap, int64_t v) {
    if (v < 0) snprintf(b, cap, "-");
    else snprintf(b, cap, "%lld", (long long)v);
}

/* Which columns apply. */
typedef struct cols {
    int trace, base, task;
} cols;

static const char *col_name[NCOL] = { "id", "method", "n", "tokens", "steps", "tok/step", "pass/blk", "ff", "stat",
                                      "tok/s", "speedup", "match", "prefix", "answer", "ref", "ok" };

static int col_on(const cols *c, int k) {
    if (k == 7 || k == 8) return c->trace;
    if (k >= 10 && k <= 12) return c->base;
    if (k >= 13) return c->task;
    return 1;
}

static void row_cells(trow *t, const cllm_eval_row *r) {
    memset(t, 0, sizeof *t);
    snprintf(t->cell[0], 64, "%lld", (long long)r->id);
    snprintf(t->cell[1], 64, "%s", r->method);
    snprintf(t->cell[2], 64, "%lld", (long long)r->n);
    fmt_i64(t->cell[3], 64, r->tokens);
    fmt_i64(t->cell[4], 64, r->steps);
    fmt_num(t->cell[5], 64, r->tokens_per_step, "%.3f");
    fmt_num(t->cell[6], 64, r->passes_per_block, "%.2f");
    fmt_i64(t->cell[7], 64, r->fast_forward);
    fmt_i64(t->cell[8], 64, r->stationary);
    fmt_num(t->cell[9], 64, r->tokens_per_s, "%.2f");
    fmt_num(t->cell[10], 64, r->speedup, "%.2fx");
    snprintf(t->cell[11], 64, "%s", r->exact_match < 0 ? "-" : r->exact_match ? "yes" : "no");
    fmt_i64(t->cell[12], 64, r->common_prefix);
    snprintf(t->cell[13], 64, "%s", r->pred[0] ? r->pred : "-");
    snprintf(t->cell[14], 64, "%s", r->has_ref ? r->ref : "-");
    snprintf(t->cell[15], 64, "%s", r->correct < 0 ? "-" : r->correct ? "yes" : "no");
}

static void summary_cells(trow *t, const cllm_eval_summary *S) {
    memset(t, 0, sizeof *t);
    snprintf(t->cell[0], 64, "all");
    snprintf(t->cell[1], 64, "%s", S->method);
    if (S->n >= 0) snprintf(t->cell[2], 64, "%lld", (long long)S->n); else snprintf(t->cell[2], 64, "-");
    fmt_i64(t->cell[3], 64, S->tokens);
    fmt_i64(t->cell[4], 64, S->steps);
    fmt_num(t->cell[5], 64, S->tokens_per_step, "%.3f");
    fmt_num(t->cell[6], 64, S->passes_per_block, "%.2f");
    fmt_i64(t->cell[7], 64, S->traced ? S->fast_forward : -1);
    fmt_i64(t->cell[8], 64, S->traced ? S->stationary : -1);
    fmt_num(t->cell[9], 64, S->tokens_per_s, "%.2f");
    fmt_num(t->cell[10], 64, S->speedup, "%.2fx");
    fmt_num(t->cell[11], 64, S->exact_match * 100, "%.0f%%");
    fmt_num(t->cell[12], 64, S->common_prefix, "%.1f");
    snprintf(t->cell[13], 64, "%s", S->answered ? "" : "-");
    snprintf(t->cell[14], 64, "n=%lld", (long long)S->answered);
    fmt_num(t->cell[15], 64, S->accuracy * 100, "%.1f%%");
}

static void print_table(FILE *f, const cllm_eval *e, int summary) {
    const cllm_eval_summary *S = &e->sum;
    cols c = { S->traced > 0, S->matched > 0, e->task != CLLM_TASK_NONE };
    size_t nr = summary ? 0 : e->n_rows;
    trow *rows = cllm_calloc(nr + 2, sizeof *rows);
    if (!rows) return;
    for (int k = 0; k < NCOL; k++) snprintf(rows[0].cell[k], 64, "%s", col_name[k]);
    for (size_t i = 0; i < nr; i++) row_cells(&rows[i + 1], &e->rows[i]);
    summary_cells(&rows[nr + 1], S);
    int w[NCOL] = { 0 };
    for (size_t i = 0; i < nr + 2; i++)
        for (int k = 0; k < NCOL; k++) {
            int l = (int)strlen(rows[i].cell[k]);
            if (l > w[k]) w[k] = l;
        }
    int total = 0;
    for (size_t i = 0; i < nr + 2; i++) {
        if (i == nr + 1) {
            for (int k = 0; k < total; k++) fputc('-', f);
            fputc('\n', f);
        }
        int len = 0;
        for (int k = 0; k < NCOL; k++) {
            if (!col_on(&c, k)) continue;
            int left = k == 1;
            len += fprintf(f, "%s%*s%s", len ? "  " : "", left ? -w[k] : w[k], rows[i].cell[k], "");
        }
        fputc('\n', f);
        if (len > total) total = len;
    }
    free(rows);
    if (S->matched) {
        fprintf(f, "baseline: %lld of %lld prompts, %.2f tokens/s", (long long)S->matched, (long long)S->prompts,
                S->base_tokens_per_s);
        if (!isnan(S->base_accuracy)) fprintf(f, ", accuracy %.1f%%", S->base_accuracy * 100);
        fputc('\n', f);
    }
    if (S->traced)
        fprintf(f, "traces: %lld prompts, %lld blocks: %.2f fast-forwarded, %.2f stationary tokens per block\n",
                (long long)S->traced, (long long)S->traced_blocks, S->fast_forward_per_block, S->stationary_per_block);
}

/* ================================================================ token text */

/* Printable form of a token: its bytes, valid UTF-8 kept, newlines and other
 * control or invalid bytes escaped. */
static void token_text(const cllm_tokenizer *tok, int id, char *out, size_t cap) {
    if (!tok) { snprintf(out, cap, "%d", id); return; }
    char raw[256];
    size_t len = 0;
    if (cllm_tokenizer_token_bytes(tok, id, raw, sizeof raw, &len)) { snprintf(out, cap, "<%d>", id); return; }
    size_t o = 0;
    for (size_t i = 0; i < len && o + 8 < cap;) {
        unsigned char c = (unsigned char)raw[i];
        int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = n > 0 && i + (size_t)n <= len;
        for (int k = 1; ok && k < n; k++) ok = ((unsigned char)raw[i + k] >> 6) == 2;
        if (ok && n == 1 && c == '\n') { memcpy(out + o, "\\n", 2); o += 2; i++; }
        else if (ok && n == 1 && c == '\t') { memcpy(out + o, "\\t", 2); o += 2; i++; }
        else if (ok && n == 1 && (c < 0x20 || c == 0x7f)) { o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c); i++; }
        else if (ok) { memcpy(out + o, raw + i, (size_t)n); o += (size_t)n; i += (size_t)n; }
        else { o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c); i++; }
    }
    out[o] = 0;
}

/* ================================================================ --show */

int cllm_eval_draw(FILE *f, const cllm_gen_rec *g, const cllm_tokenizer *tok, int color) {
    cllm_eval_trace t;
    int rc = cllm_eval_trace_analyse(g, &t);
    if (rc) return rc;
    fprintf(f, "prompt %lld: %s, n = %lld, %zu tokens, %lld passes (%.3f tokens/pass)%s\n", (long long)g->id,
            g->method ? g->method : "?", (long long)g->n, g->output.n, (long long)g->steps,
            g->steps > 0 ? (double)g->output.n / (double)g->steps : 0.0, g->eos ? ", stopped at EOS" : "");
    if (t.n_iter == 0) {
        fprintf(f, "(no trace: generate with cllm-gen --method jacobi --trace)\n");
        cllm_eval_trace_free(&t);
        return 0;
    }
    static const char *ansi[] = { "", "\033[90m", "\033[1;34m", "\033[1;4;36m", "\033[1;31m", "\033[33m" };
    static const char *open_m[] = { "", "", "", "{", "[", "(" }, *close_m[] = { "", "", "", "}", "]", ")" };
    fprintf(f, "%lld blocks, %lld fast-forwarded, %lld stationary tokens; ", (long long)t.blocks,
            (long long)t.fast_forward, (long long)t.stationary);
    if (color)
        fprintf(f, "%sfinal\033[0m %scorrect\033[0m %sstationary\033[0m %swrong\033[0m %safter EOS\033[0m\n", ansi[1],
                ansi[2], ansi[3], ansi[4], ansi[5]);
    else
        fprintf(f, "final, correct, {stationary}, [wrong], (after EOS)\n");
    char txt[1024];
    for (size_t i = 0; i < t.n_iter; i++) {
        if (i == 0 || t.iter_block[i] != t.iter_block[i - 1])
            fprintf(f, "block %d (output tokens %d..):\n", t.iter_block[i], t.iter_start[i]);
        int pass = 1;
        for (size_t k = i; k > 0 && t.iter_block[k - 1] == t.iter_block[i]; k--) pass++;
        fprintf(f, "  %3d +%-2d ", pass, g->accepted.ids[i]);
        for (size_t j = 0; j < g->states[i].n; j++) {
            int c = t.cells[i * (size_t)t.width + j];
            token_text(tok, g->states[i].ids[j], txt, sizeof txt);
            if (color) fprintf(f, "%s%s%s\033[0m", j ? "\033[2m|\033[0m" : "", ansi[c], txt);
            else fprintf(f, "%s%s%s%s", j ? "|" : "", open_m[c], txt, close_m[c]);
        }
        fputc('\n', f);
    }
    cllm_eval_trace_free(&t);
    return ferror(f) ? cllm_error(CLLM_EIO, "write error") : 0;
}

/* ================================================================ HTML report */

static void html_esc(cllm_strbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': cllm_strbuf_add(b, "&lt;", 4); break;
        case '>': cllm_strbuf_add(b, "&gt;", 4); break;
        case '&': cllm_strbuf_add(b, "&amp;", 5); break;
        case '"': cllm_strbuf_add(b, "&quot;", 6); break;
        default: cllm_strbuf_addc(b, *s);
        }
    }
}

#define SVG_W 600
#define SVG_H 280
#define ML 56
#define MR 20
#define MT 34
#define MB 48

static double nice_step(double raw) {
    if (!(raw > 0)) return 1;
    double p = pow(10, floor(log10(raw)));
    double m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

static void svg_open(cllm_strbuf *b, const char *title) {
    cllm_strbuf_addf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
                        "class=\"plot\"><rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>"
                        "<text x=\"%d\" y=\"16\" class=\"t\">", SVG_W, SVG_H, SVG_W, SVG_H, SVG_W / 2);
    html_esc(b, title);
    cllm_strbuf_addf(b, "</text>");
}

/* Axes with y ticks from 0 to ymax; x label. Returns the y scale. */
static void svg_axes(cllm_strbuf *b, double ymax, const char *xlabel, const char *ylabel, const char *yfmt) {
    int x0 = ML, y0 = SVG_H - MB, x1 = SVG_W - MR, y1 = MT;
    double st = nice_step(ymax / 5);
    if (!strcmp(yfmt, "%.0f") && st < 1) st = 1;   /* counts */
    for (double v = 0; v <= ymax + 1e-9; v += st) {
        double y = y0 - (y0 - y1) * v / ymax;
        cllm_strbuf_addf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" class=\"g\"/>", x0, x1, y, y);
        char lab[32];
        snprintf(lab, sizeof lab, yfmt, v);
        cllm_strbuf_addf(b, "<text x=\"%d\" y=\"%.1f\" class=\"yl\">%s</text>", x0 - 6, y + 4, lab);
    }
    cllm_strbuf_addf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" class=\"ax\"/>", x0, x1, y0, y0);
    cllm_strbuf_addf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" class=\"ax\"/>", x0, x0, y0, y1);
    cllm_strbuf_addf(b, "<text x=\"%d\" y=\"%d\" class=\"xt\">", (x0 + x1) / 2, SVG_H - 8);
    html_esc(b, xlabel);
    cllm_strbuf_addf(b, "</text><text transform=\"translate(14 %d) rotate(-90)\" class=\"xt\">", (y0 + y1) / 2);
    html_esc(b, ylabel);
    cllm_strbuf_addf(b, "</text>");
}

/* Histogram of v[0..n) in nbins bins of width w from lo; integer bins label
 * their centre. mark: a dashed vertical line at that x (NAN: none). */
static void svg_hist(cllm_strbuf *b, const char *title, const char *xlabel, const double *v, size_t n, double lo,
                     double w, int nbins, int integer, double mark, const char *mark_label, const char *fill) {
    svg_open(b, title);
    int *cnt = calloc((size_t)nbins, sizeof *cnt);
    if (!cnt) { b->error = 1; return; }
    int cmax = 1;
    for (size_t i = 0; i < n; i++) {
        if (isnan(v[i])) continue;
        int k = (int)floor((v[i] - lo) / w + 1e-9);
        if (k < 0) k = 0;
        if (k >= nbins) k = nbins - 1;
        if (++cnt[k] > cmax) cmax = cnt[k];
    }
    double yst = nice_step(cmax / 5.0);
    if (yst < 1) yst = 1;
    double ymax = yst * ceil(cmax / yst);
    if (ymax < cmax) ymax = cmax;
    svg_axes(b, ymax, xlabel, "count", "%.0f");
    int x0 = ML, y0 = SVG_H - MB, x1 = SVG_W - MR, y1 = MT;
    double bw = (double)(x1 - x0) / nbins;
    for (int k = 0; k < nbins; k++) {
        double h = (y0 - y1) * cnt[k] / ymax;
        if (cnt[k])
            cllm_strbuf_addf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%d</title></rect>",
                             x0 + k * bw + 1, y0 - h, bw > 3 ? bw - 2 : bw, h, fill, cnt[k]);
    }
    int every = nbins > 12 ? (nbins + 11) / 12 : 1;
    for (int k = 0; k <= nbins; k++) {
        if (integer && k == nbins) break;
        if (k % every) continue;
        char lab[32];
        double x = integer ? x0 + (k + 0.5) * bw : x0 + k * bw;
        snprintf(lab, sizeof lab, integer ? "%.0f" : (w < 0.1 ? "%.2f" : "%.1f"), lo + k * w);
        cllm_strbuf_addf(b, "<text x=\"%.1f\" y=\"%d\" class=\"xl\">%s</text>", x, y0 + 16, lab);
    }
    if (!isnan(mark)) {
        double x = x0 + (mark - lo + (integer ? 0.5 : 0)) / w * bw;
        if (x >= x0 && x <= x1) {
            cllm_strbuf_addf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" class=\"mk\"/>", x, x, y0, y1);
            cllm_strbuf_addf(b, "<text x=\"%.1f\" y=\"%d\" class=\"ml\">", x - 4, y1 - 4);
            html_esc(b, mark_label);
            cllm_strbuf_addf(b, "</text>");
        }
    }
    free(cnt);
    cllm_strbuf_addf(b, "</svg>\n");
}

/* Range and bin width for a continuous histogram. */
static void hist_range(const double *v, size_t n, double *lo, double *w, int *nbins) {
    double mn = INFINITY, mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (isnan(v[i])) continue;
        if (v[i] < mn) mn = v[i];
        if (v[i] > mx) mx = v[i];
    }
    if (!(mn <= mx)) { mn = 0; mx = 1; }
    double st = nice_step((mx - mn) / 20);
    if (st < 0.01) st = 0.01;
    *lo = floor(mn / st) * st;
    int nb = (int)floor((mx - *lo) / st + 1e-9) + 1;
    if (nb < 5) nb = 5;
    if (nb > 60) nb = 60;
    *w = st;
    *nbins = nb;
}

/* Bars of v per prompt (input order), with dashed lines at 1 and at overall. */
static void svg_bars(cllm_strbuf *b, const char *title, const cllm_eval *e, double overall) {
    svg_open(b, title);
    double vmax = 1.2;
    for (size_t i = 0; i < e->n_rows; i++)
        if (!isnan(e->rows[i].speedup) && e->rows[i].speedup * 1.1 > vmax) vmax = e->rows[i].speedup * 1.1;
    double st = nice_step(vmax / 5);
    double ymax = ceil(vmax / st) * st;
    svg_axes(b, ymax, "prompt id (input order)", "speedup over baseline", "%.1f");
    int x0 = ML, y0 = SVG_H - MB, x1 = SVG_W - MR, y1 = MT;
    size_t n = e->n_rows ? e->n_rows : 1;
    double bw = (double)(x1 - x0) / (double)n;
    size_t every = n > 20 ? (n + 19) / 20 : 1;
    for (size_t i = 0; i < e->n_rows; i++) {
        const cllm_eval_row *r = &e->rows[i];
        if (i % every == 0)
            cllm_strbuf_addf(b, "<text x=\"%.1f\" y=\"%d\" class=\"xl\">%lld</text>", x0 + (i + 0.5) * bw, y0 + 16,
                             (long long)r->id);
        if (isnan(r->speedup)) continue;
        double h = (y0 - y1) * r->speedup / ymax;
        cllm_strbuf_addf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>id %lld: %.2fx</title></rect>",
                         x0 + i * bw + (bw > 4 ? 1 : 0), y0 - h, bw > 4 ? bw - 2 : bw, h,
                         r->speedup >= 1 ? "#3a7bd5" : "#d9534f", (long long)r->id, r->speedup);
    }
    double lines[2] = { 1.0, overall };
    const char *labs[2] = { "1x", "overall" };
    for (int k = 0; k < 2; k++) {
        if (isnan(lines[k])) continue;
        double y = y0 - (y0 - y1) * lines[k] / ymax;
        cllm_strbuf_addf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" class=\"%s\"/>", x0, x1, y, y, k ? "mk" : "one");
        cllm_strbuf_addf(b, "<text x=\"%d\" y=\"%.1f\" class=\"ml\">%s %.2fx</text>", x1 - 2, y - 4, labs[k], lines[k]);
    }
    cllm_strbuf_addf(b, "</svg>\n");
}

static void html_trajectory(cllm_strbuf *b, const cllm_gen_rec *g, const cllm_tokenizer *tok) {
    cllm_eval_trace t;
    if (cllm_eval_trace_analyse(g, &t)) return;
    static const char *cls[] = { "", "f", "c", "s", "w", "u" };
    cllm_strbuf_addf(b, "<p>Prompt %lld: %zu passes after the prompt's, %lld blocks, %lld fast-forwarded and %lld "
                        "stationary tokens. <span class=\"tk f\">final</span> <span class=\"tk c\">correct</span> "
                        "<span class=\"tk s\">stationary</span> <span class=\"tk w\">wrong</span> "
                        "<span class=\"tk u\">after EOS</span>; +k: tokens the pass made final.</p>\n<div class=\"traj\">",
                     (long long)g->id, t.n_iter, (long long)t.blocks, (long long)t.fast_forward, (long long)t.stationary);
    char txt[1024];
    int pass = 0;
    for (size_t i = 0; i < t.n_iter; i++) {
        if (i == 0 || t.iter_block[i] != t.iter_block[i - 1]) {
            cllm_strbuf_addf(b, "<div class=\"blk\">block %d</div>", t.iter_block[i]);
            pass = 0;
        }
        cllm_strbuf_addf(b, "<div class=\"it\"><span class=\"pn\">%d +%d</span>", ++pass, g->accepted.ids[i]);
        for (size_t j = 0; j < g->states[i].n; j++) {
            token_text(tok, g->states[i].ids[j], txt, sizeof txt);
            cllm_strbuf_addf(b, "<span class=\"tk %s\">", cls[t.cells[i * (size_t)t.width + j]]);
            html_esc(b, txt);
            cllm_strbuf_addf(b, "</span>");
        }
        cllm_strbuf_addf(b, "</div>\n");
    }
    cllm_strbuf_addf(b, "</div>\n");
    cllm_eval_trace_free(&t);
}

static const char *css =
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1240px;color:#222;padding:0 16px}"
    "h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}"
    "table{border-collapse:collapse;font-variant-numeric:tabular-nums}td,th{padding:2px 10px;text-align:right;"
    "border-bottom:1px solid #eee}th{background:#f5f5f5}td.l,th.l{text-align:left}"
    ".plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:12px}"
    ".plot{border:1px solid #ddd;width:100%;height:auto}"
    ".t{font-size:14px;font-weight:600;text-anchor:middle}.xl{font-size:11px;text-anchor:middle;fill:#444}"
    ".yl{font-size:11px;text-anchor:end;fill:#444}.xt{font-size:12px;text-anchor:middle;fill:#222}"
    ".g{stroke:#eee}.ax{stroke:#444}.mk{stroke:#e67e22;stroke-dasharray:5 4;stroke-width:1.5}"
    ".one{stroke:#555;stroke-dasharray:2 3}.ml{font-size:11px;text-anchor:end;fill:#c0600f;paint-order:stroke;"
    "stroke:#fff;stroke-width:3px}"
    ".traj{font:12px/1.9 ui-monospace,monospace;overflow-x:auto}.it{white-space:nowrap}"
    ".blk{margin-top:6px;color:#666;font-weight:600}.pn{display:inline-block;width:56px;color:#888}"
    ".tk{white-space:pre;padding:1px 3px;margin-right:2px;border-radius:3px}"
    ".tk.f{background:#e4ecf7;color:#555}.tk.c{background:#3a7bd5;color:#fff}"
    ".tk.s{background:#1b9e9e;color:#fff;text-decoration:underline}.tk.w{background:#d9534f;color:#fff}"
    ".tk.u{background:#f0e0a0;color:#555}.note{color:#666}";

static void html_summary_row(cllm_strbuf *b, const char *name, double v, const char *fmt, const char *def) {
    char val[64];
    fmt_num(val, sizeof val, v, fmt);
    cllm_strbuf_addf(b, "<tr><td class=\"l\">%s</td><td>%s</td><td class=\"l\">", name, val);
    html_esc(b, def);
    cllm_strbuf_addf(b, "</td></tr>\n");
}

static int write_html(const char *path, const cllm_eval *e, const cllm_eval_opts *o, const char *model,
                      const cllm_gen_rec *shown) {
    const cllm_eval_summary *S = &e->sum;
    cllm_strbuf b = { 0 };
    cllm_strbuf_addf(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>cllm-eval report</title>"
                         "<style>%s</style></head><body>\n<h1>cllm-eval report</h1>\n<p class=\"note\">Input: ", css);
    html_esc(&b, o->input && strcmp(o->input, "-") ? o->input : "(stdin)");
    if (model && *model) { cllm_strbuf_addf(&b, " &middot; model: "); html_esc(&b, model); }
    if (o->baseline) { cllm_strbuf_addf(&b, " &middot; baseline: "); html_esc(&b, o->baseline); }
    if (o->ref) { cllm_strbuf_addf(&b, " &middot; references: "); html_esc(&b, o->ref); }
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
    cllm_strbuf_addf(&b, " &middot; %s &middot; cllm %s</p>\n<h2>Summary</h2>\n<table><tr><th class=\"l\">metric</th>"
                         "<th>value</th><th class=\"l\">definition</th></tr>\n", when, CLLM_VERSION);
    char desc[128];
    snprintf(desc, sizeof desc, "gen records (method %s%s)", S->method, S->n >= 0 ? "" : ", block sizes differ");
    html_summary_row(&b, "prompts", (double)S->prompts, "%.0f", desc);
    if (S->n >= 0) html_summary_row(&b, "block size n", (double)S->n, "%.0f", "tokens per Jacobi block");
    html_summary_row(&b, "tokens", (double)S->tokens, "%.0f", "output tokens, EOS excluded");
    html_summary_row(&b, "forward passes", (double)S->steps, "%.0f", "the prompt's pass counted as one");
    html_summary_row(&b, "tokens/step", S->tokens_per_step, "%.3f", "output tokens / forward passes (AR: 1)");
    html_summary_row(&b, "passes/block", S->passes_per_block, "%.2f",
                     "passes after the prompt's / blocks of n tokens (plain Jacobi: about n; one-step convergence: 1)");
    if (S->traced) {
        html_summary_row(&b, "fast-forwarded/block", S->fast_forward_per_block, "%.2f",
                         "sum over passes of (tokens made final - 1), per block (traced records)");
        html_summary_row(&b, "stationary/block", S->stationary_per_block, "%.2f",
                         "positions holding the fixed point's token to the block's end while an earlier one is wrong");
    }
    html_summary_row(&b, "tokens/s", S->tokens_per_s, "%.2f", "output tokens / wall-clock time_s");
    if (S->matched) {
        html_summary_row(&b, "baseline tokens/s", S->base_tokens_per_s, "%.2f", "the baseline's, same prompts");
        html_summary_row(&b, "speedup", S->speedup, "%.3fx", "sum of baseline time / sum of time, same prompts");
        html_summary_row(&b, "exact match", S->exact_match * 100, "%.1f%%", "outputs equal to the baseline's");
        html_summary_row(&b, "common prefix", S->common_prefix, "%.1f", "mean tokens in common with the baseline's output");
    }
    if (e->task != CLLM_TASK_NONE) {
        html_summary_row(&b, "accuracy", S->accuracy * 100, "%.1f%%", "GSM8K final answer equals the reference's");
        html_summary_row(&b, "references", (double)S->answered, "%.0f", "prompts with a reference answer");
        if (S->matched) html_summary_row(&b, "baseline accuracy", S->base_accuracy * 100, "%.1f%%", "the baseline's");
    }
    cllm_strbuf_addf(&b, "</table>\n<h2>Plots</h2>\n<div class=\"plots\">\n");

    /* tokens/step histogram */
    size_t n = e->n_rows;
    double *v = cllm_calloc(n ? n : 1, sizeof *v);
    if (!v) { cllm_strbuf_free(&b); return CLLM_ENOMEM; }
    for (size_t i = 0; i < n; i++) v[i] = e->rows[i].tokens_per_step;
    double lo, w;
    int nb;
    hist_range(v, n, &lo, &w, &nb);
    svg_hist(&b, "Tokens per forward pass, per prompt", "tokens/step", v, n, lo, w, nb, 0, S->tokens_per_step, "overall",
             "#3a7bd5");
    /* passes per block */
    if (S->traced) {
        size_t nbk = 0;
        int pmax = S->n > 0 ? (int)S->n : 1;
        for (size_t i = 0; i < n; i++) if (e->rows[i].traced) nbk += (size_t)e->rows[i].blocks;
        double *pv = cllm_calloc(nbk ? nbk : 1, sizeof *pv);
        if (!pv) { free(v); cllm_strbuf_free(&b); return CLLM_ENOMEM; }
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            for (int64_t j = 0; e->rows[i].traced && j < e->rows[i].blocks; j++) {
                pv[k++] = e->rows[i].block_passes[j];
                if (e->rows[i].block_passes[j] > pmax) pmax = e->rows[i].block_passes[j];
            }
        char mlab[32];
        snprintf(mlab, sizeof mlab, "n = %lld (AR)", (long long)S->n);
        svg_hist(&b, "Forward passes per block (traced blocks)", "passes to reach the fixed point", pv, nbk, 1, 1, pmax, 1,
                 S->n > 0 ? (double)S->n : NAN, mlab, "#1b9e9e");
        free(pv);
    } else {
        for (size_t i = 0; i < n; i++) v[i] = e->rows[i].passes_per_block;
        hist_range(v, n, &lo, &w, &nb);
        svg_hist(&b, "Forward passes per block, mean per prompt", "passes/block", v, n, lo, w, nb, 0, NAN, "", "#1b9e9e");
    }
    free(v);
    if (S->matched) svg_bars(&b, "Speedup over the baseline, per prompt", e, S->speedup);
    else cllm_strbuf_addf(&b, "<p class=\"note\">No speedup plot: no baseline given (--baseline FILE).</p>");
    cllm_strbuf_addf(&b, "</div>\n");

    if (shown) {
        cllm_strbuf_addf(&b, "<h2>Jacobi trajectory</h2>\n");
        html_trajectory(&b, shown, o->tok);
    }
    cllm_strbuf_addf(&b, "<h2>Per prompt</h2>\n<table><tr>");
    cols c = { S->traced > 0, S->matched > 0, e->task != CLLM_TASK_NONE };
    for (int k = 0; k < NCOL; k++)
        if (col_on(&c, k)) cllm_strbuf_addf(&b, "<th%s>%s</th>", k == 1 ? " class=\"l\"" : "", col_name[k]);
    cllm_strbuf_addf(&b, "</tr>\n");
    for (size_t i = 0; i <= n; i++) {
        trow t;
        if (i < n) row_cells(&t, &e->rows[i]);
        else summary_cells(&t, S);
        cllm_strbuf_addf(&b, "<tr>");
        for (int k = 0; k < NCOL; k++) {
            if (!col_on(&c, k)) continue;
            cllm_strbuf_addf(&b, "<td%s>", k == 1 ? " class=\"l\"" : "");
            if (i == n) cllm_strbuf_addf(&b, "<b>");
            html_esc(&b, t.cell[k]);
            if (i == n) cllm_strbuf_addf(&b, "</b>");
            cllm_strbuf_addf(&b, "</td>");
        }
        cllm_strbuf_addf(&b, "</tr>\n");
    }
    cllm_strbuf_addf(&b, "</table>\n<p class=\"note\">Definitions: cllm-eval(1).</p>\n</body></html>\n");
    if (b.error) { cllm_strbuf_free(&b); return cllm_error(CLLM_ENOMEM, "out of memory building the HTML report"); }
    FILE *f = fopen(path, "w");
    if (!f) { int rc = cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno)); cllm_strbuf_free(&b); return rc; }
    size_t wr = fwrite(b.s, 1, b.len, f);
    int bad = wr != b.len || ferror(f);
    if (fclose(f)) bad = 1;
    cllm_strbuf_free(&b);
    return bad ? cllm_error(CLLM_EIO, "%s: write error", path) : 0;
}

/* ================================================================ reading */

static int read_all(const char *path, char **out, size_t *len) {
    int is_stdin = !path || !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = cllm_malloc(cap);
    int rc = buf ? 0 : CLLM_ENOMEM;
    while (!rc) {
        if (n + 1 >= cap && cllm_grow((void **)&buf, &cap, n + 2, 1)) { rc = CLLM_ENOMEM; break; }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        /* SIGINT/SIGTERM stop a blocked read (no SA_RESTART): not a read
         * error. Checked after every fread, not only an empty one: a read cut
         * short after some bytes came returns them with the error set, and
         * the next fread blocked again, until the pipe's writer closed it. */
        if (ferror(f)) {
            if (cllm_interrupted) rc = cllm_error(CLLM_EINTR, "%s: interrupted", is_stdin ? "(stdin)" : path);
            else rc = cllm_error(CLLM_EIO, "%s: read error", is_stdin ? "(stdin)" : path);
            break;
        }
        if (k == 0) break;
    }
    if (!is_stdin) fclose(f);
    if (rc) { free(buf); return rc; }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

/* A reference field's value as text (strings as they are, numbers printed). */
static char *json_field_text(const json_t *v) {
    char tmp[64];
    if (json_is_string(v)) return cllm_strdup(json_string_value(v));
    if (json_is_integer(v)) { snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v)); return cllm_strdup(tmp); }
    if (json_is_real(v)) { snprintf(tmp, sizeof tmp, "%.17g", json_real_value(v)); return cllm_strdup(tmp); }
    return NULL;
}

static char *mp_field_text(const cllm_value *v) {
    char tmp[64];
    if (v->type == CLLM_MP_STR) return cllm_strndup(v->v.s, v->n);
    int64_t i;
    double d;
    if ((v->type == CLLM_MP_UINT || v->type == CLLM_MP_INT) && !cllm_mp_as_i64(v, &i)) {
        snprintf(tmp, sizeof tmp, "%lld", (long long)i);
        return cllm_strdup(tmp);
    }
    if (v->type == CLLM_MP_FLOAT && !cllm_mp_as_double(v, &d)) { snprintf(tmp, sizeof tmp, "%.17g", d); return cllm_strdup(tmp); }
    return NULL;
}

static int is_stream(const char *b, size_t n) {
    const unsigned char *u = (const unsigned char *)b;
    if (n >= 4 && u[0] == 0x28 && u[1] == 0xb5 && u[2] == 0x2f && u[3] == 0xfd) return 1;
    return n >= 4 && (u[0] & 0xf0) == 0x50 && u[1] == 0x2a && u[2] == 0x4d && u[3] == 0x18;
}

static int read_refs(cllm_eval *e, const char *path, const char *field) {
    char *data = NULL;
    size_t len = 0;
    int rc = read_all(path, &data, &len);
    if (rc) return rc;
    const char *name = !path || !strcmp(path, "-") ? "(stdin)" : path;
    const char *fields[2] = { field ? field : "target", field ? NULL : "answer" };
    uint64_t count = 0, index = 0;
    if (is_stream(data, len)) {
        cllm_reader *r;
        if ((rc = cllm_reader_open_mem(&r, data, len, name))) { free(data); return rc; }
        cllm_record rec;
        while (!rc && (rc = cllm_reader_next(r, &rec)) == 0) {
            if (strcmp(rec.type, "prompt") && strcmp(rec.type, "gen")) continue;
            /* an id-less prompt gets its place among the prompts, as cllm-gen gives it */
            int64_t id = strcmp(rec.type, "prompt") ? -1 : (int64_t)index++;
            if ((rc = cllm_rec_get_i64(rec.root, "id", &id, 0)) < 0) break;
            rc = 0;
            const cllm_value *v = NULL;
            for (int k = 0; k < 2 && !v && fields[k]; k++) v = cllm_mp_get(rec.root, fields[k]);
            if (!v) continue;
            char *txt = mp_field_text(v);
            if (!txt) continue;
            rc = cllm_eval_add_ref(e, id, txt);
            free(txt);
            count++;
        }
        if (rc == CLLM_EOF) {
            cllm_reader_warn_interrupted(r);
            rc = 0;
        }
        cllm_reader_close(r);
    } else {
        FILE *f = fmemopen(data, len ? len : 1, "rb");
        cllm_jsonl *j = NULL;
        if (!f) rc = cllm_error(CLLM_EIO, "%s: %s", name, strerror(errno));
        else rc = cllm_jsonl_open_file(&j, f, name, 1);
        json_t *obj;
        uint64_t line;
        while (!rc && len && (rc = cllm_jsonl_next(j, &obj, &line)) == 0) {
            uint64_t idx = index++;
            json_t *idv = json_object_get(obj, "id");
            int64_t id = idv && json_is_integer(idv) && json_integer_value(idv) >= 0 ? json_integer_value(idv) : (int64_t)idx;
            json_t *v = NULL;
            for (int k = 0; k < 2 && !v && fields[k]; k++) v = json_object_get(obj, fields[k]);
            char *txt = v ? json_field_text(v) : NULL;
            if (txt) { rc = cllm_eval_add_ref(e, id, txt); count++; }
            free(txt);
            json_decref(obj);
        }
        if (rc == CLLM_EOF) rc = 0;
        if (j) cllm_jsonl_close(j);
    }
    free(data);
    if (!rc && count == 0)
        rc = cllm_error(CLLM_EINVAL, "%s: no reference answers (no \"%s\"%s%s%s field)", name, fields[0],
                        fields[1] ? " or \"" : "", fields[1] ? fields[1] : "", fields[1] ? "\"" : "");
    return rc;
}

typedef struct hdr_info {
    char model[256];
    char tokenizer[64];
    int64_t vocab;
    int have;
} hdr_info;

static void take_header(hdr_info *h, const cllm_value *hv) {
    if (!hv || h->have) return;
    const cllm_value *v = cllm_mp_get(hv, "model");
    if (v && v->type == CLLM_MP_STR) snprintf(h->model, sizeof h->model, "%.*s", (int)v->n, v->v.s);
    v = cllm_mp_get(hv, "tokenizer");
    if (v && v->type == CLLM_MP_STR) snprintf(h->tokenizer, sizeof h->tokenizer, "%.*s", (int)v->n, v->v.s);
    v = cllm_mp_get(hv, "vocab");
    if (v) cllm_mp_as_i64(v, &h->vocab);
    h->have = 1;
}

/* Read the gen records of path; keep (in *keep) the one with id keep_id
 * (keep_id < 0: the first traced one) when keep is not NULL. */
static int read_gens(cllm_eval *e, const char *path, int baseline, hdr_info *h, cllm_gen_rec *keep, int64_t keep_id,
                     int *kept) {
    cllm_reader *r;
    int rc = cllm_reader_open(&r, path);
    if (rc) return rc;
    cllm_record rec;
    while ((rc = cllm_reader_next(r, &rec)) == 0) {
        if (cllm_interrupted) { rc = cllm_error(CLLM_EINTR, "interrupted"); break; }
        if (strcmp(rec.type, "gen")) continue;
        if (h) take_header(h, cllm_reader_header(r));
        cllm_gen_rec g;
        if ((rc = cllm_rec_gen_get(&rec, &g))) break;
        rc = baseline ? cllm_eval_add_baseline(e, &g) : cllm_eval_add(e, &g);
        if (rc) {
            cllm_error_prefix(rc, "%s: ", cllm_reader_name(r));
        } else if (keep && !*kept && (keep_id >= 0 ? g.id == keep_id : g.n_states > 0)) {
            *keep = g;
            *kept = 1;
            continue;
        }
        cllm_rec_gen_free(&g);
        if (rc) break;
    }
    if (rc == CLLM_EOF) cllm_reader_warn_interrupted(r);
    cllm_reader_close(r);
    return rc == CLLM_EOF ? 0 : rc;
}

int cllm_eval_load_tokenizer(const char *path, cllm_tokenizer **out) {
    *out = NULL;
    size_t l = strlen(path);
    if (l >= 5 && !strcmp(path + l - 5, ".gguf")) {
        cllm_gguf *g;
        int rc = cllm_gguf_open(&g, path);
        if (rc) return rc;
        rc = cllm_tokenizer_from_gguf(out, g);
        cllm_gguf_close(g);
        return rc ? cllm_error_prefix(rc, "%s: ", path) : 0;
    }
    return cllm_tokenizer_from_hf_dir(out, path);
}

int cllm_eval_run(const cllm_eval_opts *o) {
    cllm_eval *e = NULL;
    int rc = cllm_eval_new(&e, o->task);
    if (rc) return rc;
    hdr_info h;
    memset(&h, 0, sizeof h);
    cllm_gen_rec keep;
    memset(&keep, 0, sizeof keep);
    int kept = 0;
    int want_keep = o->show || o->html;
    rc = read_gens(e, o->input, 0, &h, want_keep ? &keep : NULL, o->show ? o->show_id : -1, &kept);
    if (!rc && o->baseline) rc = read_gens(e, o->baseline, 1, NULL, NULL, -1, NULL);
    if (!rc && o->ref && o->task != CLLM_TASK_NONE) rc = read_refs(e, o->ref, o->answer_field);
    /* Stopped by a signal while waiting for its input, the baseline or the
     * references (pipes): the metrics of the records read so far are still
     * written (stderr table, metric stream), and the stream's end record says
     * they are partial. --show and --html need the whole input and are
     * skipped. */
    int interrupted = rc == CLLM_EINTR && !want_keep;
    if (interrupted) rc = 0;
    if (!rc && cllm_eval_rows(e) == 0 && !interrupted)
        rc = cllm_error(CLLM_EINVAL, "%s: no gen records", o->input && strcmp(o->input, "-") ? o->input : "(stdin)");
    int have_rows = cllm_eval_rows(e) > 0;
    if (!rc && have_rows) rc = cllm_eval_finish(e);
    if (!rc && o->show && !kept) rc = cllm_error(CLLM_EINVAL, "--show %lld: no gen record with that id", (long long)o->show_id);
    if (!rc && o->show) rc = cllm_eval_draw(o->show_out ? o->show_out : stdout, &keep, o->tok, o->color);
    if (!rc && o->html) rc = write_html(o->html, e, o, h.model, kept ? &keep : NULL);
    if (!rc && o->table && !o->show && have_rows) {
        print_table(o->table, e, o->summary);
        if (interrupted) fprintf(o->table, "(interrupted: %zu gen records read)\n", cllm_eval_rows(e));
        fflush(o->table);
    }
    if (!rc && !o->no_stream && !o->show) {
        mout mo = { 0 };
        char producer[64];
        snprintf(producer, sizeof producer, "cllm-eval %s", CLLM_VERSION);
        cllm_header_rec hr = { producer, h.model, h.vocab, h.tokenizer, o->argc, o->argv };
        rc = cllm_writer_open(&mo.w, o->output, o->force);
        if (!rc) rc = cllm_rec_header_pack(&mo.b, &hr);
        if (!rc) rc = cllm_writer_put_header(mo.w, mo.b.data, mo.b.size);
        if (!rc && have_rows) rc = write_metrics(&mo, e, o->summary);
        if (mo.w) {
            /* after a signal, abort closes the section marked "interrupted" */
            if (rc || interrupted) cllm_writer_abort(mo.w);
            else rc = cllm_writer_close(mo.w);
        }
        cllm_packbuf_free(&mo.b);
    }
    if (kept) cllm_rec_gen_free(&keep);
    cllm_eval_free(e);
    return !rc && interrupted ? cllm_error(CLLM_EINTR, "interrupted") : rc;
}
