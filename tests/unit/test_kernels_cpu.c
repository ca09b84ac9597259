/* test_kernels_cpu.c: the CPU kernels of the inference forward (kernels/cpu/)
 * against their definitions in kernels.h, each computed here in plain
 * double-precision loops, on shapes the models of the other tests never have:
 * odd widths (a matmul's C % 16 tail, OC % 4 leftover rows of W, T % 4
 * leftover rows of the input), partial RoPE (rope_dim < HS), GQA groups of 3,
 * a ragged batch of sequences with different pasts, scores large enough to
 * overflow expf without the max subtracted, ties in argmax, and the thread
 * pool's worker indices (one index per thread, the documented range).
 *
 * Tolerances (each check's comment gives its own): fp32 results against a
 * double reference differ by rounding only, bounded by a few ulps per
 * operation times the length of a sum; the bars sit 10-100x above those
 * bounds and 100x or more below the smallest error a wrong index, bound or
 * constant makes on these inputs.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "kernels.h"
#include "rng.h"

static cllm_rng g_rng;

static void fill(float *p, size_t n, float a) {
    for (size_t i = 0; i < n; i++) p[i] = a * (2.0f * cllm_rng_float(&g_rng) - 1.0f);
}

/* ---- argmax: the first maximum wins (kernels.h) ------------------------- */
static void test_argmax(void) {
    enum { V = 7 };
    const float l[][V] = {
        {1, 5, 5, 0, 5, 2, 1},       /* tie of three: 1 */
        {9, 1, 9, 0, 0, 0, 9},       /* tie including id 0: 0 */
        {0, 1, 2, 3, 4, 5, 6},       /* the last id */
        {-3, -1, -2, -5, -1, -9, -4},/* negative values, tie: 1 */
        {0, 7, 0, 0, 0, 0, 0},       /* id 1 */
    };
    const int want[] = {1, 0, 6, 1, 1};
    int out[5] = {-1, -1, -1, -1, -1};
    argmax_forward(out, &l[0][0], 5, V);
    for (int t = 0; t < 5; t++) CHECK_MSG(out[t] == want[t], "row %d: argmax %d, want %d", t, out[t], want[t]);
    TEST_OK("argmax: ties to the lowest id, first and last ids, every row");
}

/* ---- embedding, residual: exact copies and sums ------------------------- */
static void test_embedding_residual(void) {
    enum { V = 6, C = 5, T = 5 };
    float wte[V * C], out[T * C], dw[V * C], d[T * C];
    const int tok[T] = {3, 0, 3, 5, 1};
    fill(wte, V * C, 1.0f);
    fill(d, T * C, 1.0f);
    embedding_forward(out, tok, wte, T, C);
    for (int t = 0; t < T; t++)
        CHECK_MSG(!memcmp(out + t * C, wte + tok[t] * C, C * sizeof(float)), "embedding row %d", t);
    memset(dw, 0, sizeof dw);
    dw[2 * C] = 1.5f;   /* accumulates: an untouched row keeps its value */
    embedding_backward(dw, d, tok, T, C);
    for (int v = 0; v < V; v++)
        for (int c = 0; c < C; c++) {
            double want = v == 2 && c == 0 ? 1.5 : 0.0;
            for (int t = 0; t < T; t++) if (tok[t] == v) want += d[t * C + c];
            /* at most two fp32 additions: 2 ulps of |want| <= 2 */
            CHECK_MSG(fabs(dw[v * C + c] - want) <= 1e-6, "embedding_backward [%d][%d]", v, c);
        }
    float a[7], b[7], r[7], da[7], db[7];
    fill(a, 7, 1.0f);
    fill(b, 7, 1.0f);
    for (int i = 0; i < 7; i++) da[i] = db[i] = 0.25f;
    residual_forward(r, a, b, 7);
    residual_backward(da, db, b, 7);
    for (int i = 0; i < 7; i++) {
        CHECK(r[i] == a[i] + b[i]);                /* one fp32 addition each: exact */
        CHECK(da[i] == 0.25f + b[i] && db[i] == 0.25f + b[i]);
    }
    TEST_OK("embedding and residual: rows, accumulation");
}

/* ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w ------------------------- */
static void test_rmsnorm(void) {
    enum { T = 3, C = 37 };
    float x[T * C], w[C], y[T * C], rstd[T];
    fill(x, T * C, 1.0f);
    for (int i = 0; i < C; i++) x[C + i] *= 1e-3f;   /* row 1: mean(x^2) ~ 3e-7, below eps */
    fill(w, C, 1.0f);
    const float eps = 1e-6f;
    rmsnorm_forward(y, rstd, x, w, T, C, eps);
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int i = 0; i < C; i++) ss += (double)x[t * C + i] * x[t * C + i];
        double r = 1.0 / sqrt(ss / C + (double)eps);
        /* the kernel rounds mean + eps, the root and each product to fp32:
         * ~4 ulps (5e-7 relative); bar 1e-5. Dropping eps changes row 1's r
         * by ~80%, 10 eps by ~2x, a divisor C - 1 by 1.4%. */
        CHECK_MSG(fabs(rstd[t] - r) <= 1e-5 * r, "rstd row %d: %.9g vs %.9g", t, rstd[t], r);
        for (int i = 0; i < C; i++) {
            double want = x[t * C + i] * r * w[i];
            CHECK_MSG(fabs(y[t * C + i] - want) <= 1e-5 * fabs(x[t * C + i] * r) + 1e-30,
                      "rmsnorm [%d][%d]: %.9g vs %.9g", t, i, y[t * C + i], want);
        }
    }
    TEST_OK("rmsnorm: eps, mean over C, rstd, a row below eps");
}

/* ---- RoPE: kernels.h's definition, partial rotary ----------------------- */
static void test_rope(void) {
    enum { T = 3, NH = 3, HS = 10, D = 6 };   /* rope_dim 6 of a head of 10 */
    const int pos[T] = {0, 7, 93};
    const float theta = 10000.0f;
    float x[T * NH * HS], a[T * NH * HS], b[T * NH * HS], cs[T * D];
    fill(x, T * NH * HS, 1.0f);
    memcpy(a, x, sizeof x);
    memcpy(b, x, sizeof x);
    rope_table(cs, pos, T, D, theta);
    rope_apply(a, cs, T, NH, HS, D);
    rope_forward(b, pos, T, NH, HS, D, theta);
    CHECK_MSG(!memcmp(a, b, sizeof a), "rope_table + rope_apply differ from rope_forward");
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < D / 2; i++) {
            double ang = pos[t] * pow(theta, -2.0 * i / D);
            /* fp32 angles (HF's): inv_freq within 2 ulps, the product within
             * 1 ulp of ang <= 93, so |d ang| <= 93 * 3 * 6e-8 ~ 2e-5; cosf/sinf
             * add < 1e-7. Bar 1e-4; position + 1 moves cos by >= 1e-3 here. */
            CHECK_MSG(fabs(cs[t * D + i] - cos(ang)) <= 1e-4 && fabs(cs[t * D + D / 2 + i] - sin(ang)) <= 1e-4,
                      "rope_table row %d pair %d", t, i);
        }
        for (int h = 0; h < NH; h++) {
            const float *v = x + (t * NH + h) * HS;
            const float *o = a + (t * NH + h) * HS;
            for (int i = 0; i < HS; i++) {
                double want = v[i];
                if (i < D) {
                    int k = i % (D / 2);
                    double ang = pos[t] * pow(theta, -2.0 * k / D), c = cos(ang), s = sin(ang);
                    want = i < D / 2 ? v[i] * c - v[i + D / 2] * s : v[i] * c + v[i - D / 2] * s;
                }
                /* |v| <= 1: the angle's 2e-5 (above) plus the products' rounding */
                CHECK_MSG(fabs(o[i] - want) <= 1e-4, "rope row %d head %d dim %d: %.7g vs %.7g", t, h, i, o[i], want);
            }
        }
    }
    /* the backward is the transposed rotation: after forward, back to x */
    rope_backward(b, pos, T, NH, HS, D, theta);
    for (int i = 0; i < T * NH * HS; i++)
        CHECK_MSG(fabs(b[i] - x[i]) <= 1e-6, "rope_backward(rope_forward(x)) [%d]: %.7g vs %.7g", i, b[i], x[i]);
    TEST_OK("rope: table, apply, partial rotary, backward inverts forward");
}

/* ---- SwiGLU: silu(g) u, silu(z) = z / (1 + exp(-z)) --------------------- */
static void test_swiglu(void) {
    enum { T = 3, F = 11 };
    float g[T * F], u[T * F], gu[T * 2 * F], o1[T * F], o2[T * F], d[T * F], dg[T * F], du[T * F];
    fill(g, T * F, 6.0f);
    fill(u, T * F, 1.0f);
    fill(d, T * F, 1.0f);
    for (int t = 0; t < T; t++) {
        memcpy(gu + t * 2 * F, g + t * F, F * sizeof(float));
        memcpy(gu + t * 2 * F + F, u + t * F, F * sizeof(float));
    }
    swiglu_forward(o1, g, u, T, F);
    swiglu_forward_fused(o2, gu, T, F);
    swiglu_backward(dg, du, d, g, u, T, F);
    for (int i = 0; i < T * F; i++) {
        double s = 1.0 / (1.0 + exp(-(double)g[i])), want = g[i] * s * u[i];
        double wg = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s)), wu = d[i] * g[i] * s;
        /* expf within 1 ulp, then 3-4 fp32 operations: ~5e-7 relative of
         * each factor's magnitude; bar 1e-5 of |g| |u| (or |d| |u|, |d| |g|) */
        double sc = fabs(g[i] * u[i]) + 1e-30;
        CHECK_MSG(fabs(o1[i] - want) <= 1e-5 * sc, "swiglu_forward [%d]", i);
        CHECK_MSG(fabs(o2[i] - want) <= 1e-5 * sc, "swiglu_forward_fused [%d]", i);
        CHECK_MSG(fabs(dg[i] - wg) <= 1e-5 * (fabs(d[i] * u[i]) * (1 + fabs(g[i]))) + 1e-30, "swiglu_backward dgate [%d]", i);
        CHECK_MSG(fabs(du[i] - wu) <= 1e-5 * fabs(d[i] * g[i]) + 1e-30, "swiglu_backward dup [%d]", i);
    }
    TEST_OK("swiglu: forward, fused rows, backward");
}

/* ---- matmul: out = inp W^T + bias --------------------------------------- */
/* Every element against a double sum; bar 1e-5 * sum_c |x_c w_c| + 1e-30:
 * an fp32 sum of C terms is within C * 2^-24 ~ 8e-6 (C = 133) of that scale
 * in the worst case (~1e-7 typically). A missing or doubled term of the
 * C % 16 tail is ~1/C of the scale, a row of W left out or read from the
 * wrong place is of the order of the scale. */
static void check_matmul(const char *what, int T, int C, int OC, int threads) {
    float *x = malloc((size_t)T * C * sizeof(float)), *w = malloc((size_t)OC * C * sizeof(float));
    float *bias = malloc((size_t)OC * sizeof(float)), *out = malloc(((size_t)T * OC + 1) * sizeof(float));
    fill(x, (size_t)T * C, 1.0f);
    fill(w, (size_t)OC * C, 1.0f);
    fill(bias, (size_t)OC, 1.0f);
    out[(size_t)T * OC] = 1234.5f;   /* a guard after the output */
    kernels_set_threads(threads);
    matmul_forward(out, x, w, bias, T, C, OC);
    int bad = 0;
    for (int t = 0; t < T; t++)
        for (int o = 0; o < OC; o++) {
            double s = bias[o], sc = fabs(bias[o]);
            for (int c = 0; c < C; c++) {
                s += (double)x[(size_t)t * C + c] * w[(size_t)o * C + c];
                sc += fabs((double)x[(size_t)t * C + c] * w[(size_t)o * C + c]);
            }
            double got = out[(size_t)t * OC + o];
            if (!(fabs(got - s) <= 1e-5 * sc + 1e-30) && bad++ < 3)
                CHECK_MSG(0, "%s (T %d C %d OC %d, %d threads): out[%d][%d] = %.8g, want %.8g", what, T, C, OC,
                          threads, t, o, got, s);
        }
    CHECK_MSG(out[(size_t)T * OC] == 1234.5f, "%s: wrote past the output", what);
    /* row independence (matmul.c): row t alone gives the same bits */
    float *one = malloc((size_t)OC * sizeof(float));
    for (int t = 0; t < T; t += T > 1 ? T - 1 : 1) {
        matmul_forward(one, x + (size_t)t * C, w, bias, 1, C, OC);
        CHECK_MSG(!memcmp(one, out + (size_t)t * OC, (size_t)OC * sizeof(float)),
                  "%s: row %d alone differs from the row in a call of %d rows", what, t, T);
    }
    free(one);
    free(x); free(w); free(bias); free(out);
}

static void test_matmul(void) {
    /* T % 4 = 1, 2, 3 and 0 with leftovers; C % 16 = 5 (a tail), 0; OC % 4 = 2, 1 */
    check_matmul("small", 1, 37, 10, 1);
    check_matmul("small", 5, 37, 10, 1);
    check_matmul("small", 6, 37, 9, 1);
    check_matmul("small", 8, 32, 10, 1);
    check_matmul("small", 7, 21, 3, 1);
    /* large enough for the pool (T OC C >= 5e5): 258 slabs in 12 tasks of 22
     * (3 threads) or 8 of 33 (2), the last task short; OC % 4 = 2 */
    check_matmul("pool", 7, 133, 1030, 3);
    check_matmul("pool", 7, 133, 1030, 2);
    check_matmul("pool", 3, 133, 1030, 1);
    kernels_set_threads(2);
    TEST_OK("matmul: C % 16 tails, leftover rows of inp and W, bias, task ranges");
}

/* ---- attention over KV caches, a ragged batch --------------------------- */
/* kernels.h: row t of sequence b (position past[b] + t) attends to its cache
 * rows 0..past[b] + t; query head h reads kv head h / (NH / NKV); scores
 * q.k / sqrt(HS), softmax, weighted sum of v. */
static void ref_attention(double *o, const float *q, const float *k, const float *v, int n, int NKV, int kvh,
                          int HS) {
    double *e = malloc((size_t)n * sizeof(double)), mx = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++) {
        double d = 0;
        for (int i = 0; i < HS; i++) d += (double)q[i] * k[((size_t)j * NKV + kvh) * HS + i];
        e[j] = d / sqrt((double)HS);
        if (e[j] > mx) mx = e[j];
    }
    for (int j = 0; j < n; j++) sum += (e[j] = exp(e[j] - mx));
    for (int i = 0; i < HS; i++) o[i] = 0;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < HS; i++) o[i] += e[j] / sum * v[((size_t)j * NKV + kvh) * HS + i];
    free(e);
}

static void check_attention(const char *what, float shift, int threads) {
    enum { B = 3, NH = 6, NKV = 2, HS = 19, S = 320 };
    /* 13 rows: (row, head) pairs 78, split in 8 tasks of 10 (2 threads) or
     * 12 of 7 (3): the last task short in both; 4 T NH keys HS > 1e6 flops */
    const int T[B] = {8, 4, 1}, past[B] = {300, 17, 0};
    int row0[B + 1] = {0};
    for (int b = 0; b < B; b++) row0[b + 1] = row0[b] + T[b];
    int R = row0[B];
    float *q = malloc((size_t)R * NH * HS * sizeof(float)), *out = malloc((size_t)R * NH * HS * sizeof(float));
    float *kc[B], *vc[B];
    for (int b = 0; b < B; b++) {
        kc[b] = malloc((size_t)S * NKV * HS * sizeof(float));
        vc[b] = malloc((size_t)S * NKV * HS * sizeof(float));
        fill(kc[b], (size_t)S * NKV * HS, 1.0f);
        fill(vc[b], (size_t)S * NKV * HS, 1.0f);
        if (shift != 0)   /* dim 0 of every key shift, of every query |shift| */
            for (size_t r = 0; r < (size_t)S * NKV; r++) kc[b][r * HS] = shift;
        /* rows past the causal bound hold huge values: reading one shows */
        for (size_t i = (size_t)(past[b] + T[b]) * NKV * HS; i < (size_t)S * NKV * HS; i++)
            kc[b][i] = vc[b][i] = 1e4f;
    }
    fill(q, (size_t)R * NH * HS, 1.0f);
    if (shift != 0)
        for (size_t r = 0; r < (size_t)R * NH; r++) q[r * HS] = fabsf(shift);
    for (size_t i = 0; i < (size_t)R * NH * HS; i++) out[i] = NAN;   /* every output is written */
    kernels_set_threads(threads);
    int keys = past[0] + T[0];
    float *att = malloc((size_t)threads * keys * sizeof(float));
    attention_forward_batch(out, q, (const float *const *)kc, (const float *const *)vc, row0, past, att, B, NH,
                            NKV, HS);
    double o[HS];
    int bad = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T[b]; t++)
            for (int h = 0; h < NH; h++) {
                size_t off = ((size_t)(row0[b] + t) * NH + h) * HS;
                ref_attention(o, q + off, kc[b], vc[b], past[b] + t + 1, NKV, h / (NH / NKV), HS);
                for (int i = 0; i < HS; i++) {
                    /* |v| <= 1, so |o| <= 1. fp32: a score has an absolute
                     * error of a few ulps of the largest partial sum of q.k
                     * (<= 19 without shift: ~1e-6; ~900 with shift 30: ~2e-4),
                     * exp turns it into that relative error of p, the sum of
                     * ~300 terms adds ~2e-5: bar 1e-4 without shift, 1e-3 with. */
                    double tol = shift != 0 ? 1e-3 : 1e-4;
                    if (!(fabs(out[off + i] - o[i]) <= tol) && bad++ < 3)
                        CHECK_MSG(0, "%s (%d threads): sequence %d row %d head %d dim %d: %.7g vs %.7g", what,
                                  threads, b, t, h, i, out[off + i], o[i]);
                }
            }
    free(att);
    for (int b = 0; b < B; b++) { free(kc[b]); free(vc[b]); }
    free(q);
    free(out);
}

static void test_attention(void) {
    check_attention("ragged batch", 0, 1);
    check_attention("ragged batch", 0, 2);
    check_attention("ragged batch", 0, 3);
    /* dim 0 of every q 30 and of every k +-30: every score of a row shifted
     * by +-900 / sqrt(19) ~ +-206 (softmax is shift-invariant, so p is as
     * without it): expf(206) overflows fp32 and expf(-206) underflows to 0
     * unless the row's max is subtracted first (kernels.h) */
    check_attention("large scores", 30.0f, 2);
    check_attention("large negative scores", -30.0f, 2);
    kernels_set_threads(2);
    TEST_OK("attention: ragged batch, GQA groups of 3, HS % 16 tail, task ranges, max subtracted");
}

/* ---- the pool: worker indices (kernels.h) ------------------------------- */
/* worker is in 0 .. n_threads - 1 and names one thread: two threads never
 * share an index (per-thread scratch depends on it). Every started worker
 * must take part: a worker's first task waits until all n_threads indices
 * have been seen (or WAIT_S has passed). A worker parked in that wait takes
 * no other task, so n_threads workers end up holding n_threads tasks at once,
 * whatever the scheduler does. (Each task used to sleep 0.5 ms and hope that
 * every worker came in time: on a loaded machine a newly started worker was
 * sometimes not run before the others had taken all 64 tasks, "5 threads:
 * 4 workers took tasks", 17 runs in 400 with two busy loops beside it.) A
 * pool that never starts a worker still fails, after WAIT_S. */
enum { WAIT_S = 30 };
typedef struct pool_log {
    pthread_mutex_t mu;
    pthread_t who[64];
    int seen[64], runs[64], bad, want, n_seen;
} pool_log;

static void log_task(void *ctx, int task, int worker) {
    pool_log *p = ctx;
    pthread_mutex_lock(&p->mu);
    p->runs[task]++;
    int first = 0;
    if (worker < 0 || worker >= 64) p->bad++;
    else if (!p->seen[worker]) { p->seen[worker] = 1; p->who[worker] = pthread_self(); p->n_seen++; first = 1; }
    else if (!pthread_equal(p->who[worker], pthread_self())) p->bad++;
    double until = cllm_now_s() + WAIT_S;
    while (first && p->n_seen < p->want && cllm_now_s() < until) {
        pthread_mutex_unlock(&p->mu);
        usleep(200);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}

static void check_pool(int n_threads, int wide) {
    pool_log p = {.mu = PTHREAD_MUTEX_INITIALIZER, .want = n_threads};
    if (wide) kernels_parallel_n(n_threads, 64, log_task, &p);
    else kernels_parallel(64, log_task, &p);
    int used = 0;
    for (int i = 0; i < 64; i++) {
        CHECK_MSG(p.runs[i] == 1, "%d threads: task %d ran %d times", n_threads, i, p.runs[i]);
        if (p.seen[i]) {
            used++;
            CHECK_MSG(i < n_threads, "%d threads: worker index %d", n_threads, i);
        }
    }
    CHECK_MSG(!p.bad, "%d threads: a worker index used by two threads", n_threads);
    CHECK_MSG(used == n_threads, "%d threads: %d workers took tasks", n_threads, used);
}

static void test_pool(void) {
    kernels_set_threads(0);   /* values < 1 mean 1 */
    CHECK_EQ_INT(kernels_threads(), 1);
    check_pool(1, 0);
    kernels_set_threads(3);
    CHECK_EQ_INT(kernels_threads(), 3);
    check_pool(3, 0);
    check_pool(5, 1);
    check_pool(3, 0);
    kernels_set_threads(2);
    TEST_OK("pool: one thread per worker index, every thread used");
}

int main(void) {
    cllm_rng_seed(&g_rng, 20261127);
    kernels_set_threads(2);
    test_argmax();
    test_embedding_residual();
    test_rmsnorm();
    test_rope();
    test_swiglu();
    test_matmul();
    test_attention();
    test_pool();
    TEST_END();
}
