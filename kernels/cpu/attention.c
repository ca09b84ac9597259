/* attention.c: causal grouped-query attention of new tokens over a KV cache.
 *
 * For new token t (position P + t) and query head h (kv head h / (NH/NKV)):
 *   s[j] = q[t,h] . k[j] / sqrt(HS)          j = 0 .. P + t
 *   p = softmax(s) (fp32, max subtracted)
 *   out[t,h] = sum_j p[j] v[j]
 * The (row, head) pairs are independent, also across the sequences of a
 * batch; with several threads they are split into contiguous ranges, tasks on
 * the kernel pool, each running with its worker's row of scratch `att`.
 * Every output is computed by one thread in a fixed order, so the result does
 * not depend on the thread count nor on the other sequences of a batch.
 */
#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_PATH 1
#endif

#include "kernels.h"

/* q . k over HS dims: the one dot product of the attention scores, in one
 * fixed order per CPU (16-lane partial sums, then the lanes, then the tail
 * on AVX-512; a plain sum elsewhere), so a row's scores do not depend on
 * anything but that row. */
typedef float (*dot_fn)(const float *a, const float *b, int n);

static float dot_plain(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

#ifdef HAVE_AVX512_PATH
__attribute__((target("avx512f")))
static float dot_avx512(const float *a, const float *b, int n) {
    int n16 = n & ~15;
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n16; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    float s = _mm512_reduce_add_ps(acc);
    for (int i = n16; i < n; i++) s += a[i] * b[i];
    return s;
}
#endif

/* o (n) += p * v (n): the weighted sum of the values, one fixed order per lane. */
typedef void (*axpy_fn)(float *o, float p, const float *v, int n);

static void axpy_plain(float *o, float p, const float *v, int n) {
    for (int i = 0; i < n; i++) o[i] += p * v[i];
}

#ifdef HAVE_AVX512_PATH
__attribute__((target("avx512f")))
static void axpy_avx512(float *o, float p, const float *v, int n) {
    int n16 = n & ~15;
    __m512 vp = _mm512_set1_ps(p);
    for (int i = 0; i < n16; i += 16)
        _mm512_storeu_ps(o + i, _mm512_fmadd_ps(vp, _mm512_loadu_ps(v + i), _mm512_loadu_ps(o + i)));
    for (int i = n16; i < n; i++) o[i] += p * v[i];
}
#endif

static axpy_fn pick_axpy(void) {
#ifdef HAVE_AVX512_PATH
    if (__builtin_cpu_supports("avx512f")) return axpy_avx512;
#endif
    return axpy_plain;
}

static dot_fn pick_dot(void) {
#ifdef HAVE_AVX512_PATH
    if (__builtin_cpu_supports("avx512f")) return dot_avx512;
#endif
    return dot_plain;
}

typedef struct att_job {
    float *out;
    const float *q;
    /* inference: per-sequence caches, sequence b's row t sees cache rows
     * 0 .. past[b] + t */
    const float *const *kc, *const *vc;  /* (B) */
    const int *past;                     /* (B) */
    /* training (kc NULL): packed k, v (row0[B], NKV, HS); sequence b's row t
     * sees rows 0 .. pre[b] - 1 of sequence par[b] (par NULL or par[b] < 0:
     * none), then its own rows 0 .. t */
    const float *k, *v;
    const int *par, *pre;                /* (B), (B) or NULL */
    const int *row0;                     /* (B+1) */
    float *att;                          /* (threads, att_stride) */
    size_t att_stride;
    int B, NH, NKV, HS;
    int rows;                            /* row0[B] */
    int per_task;                        /* (row, head) pairs per task */
    dot_fn dot;
    axpy_fn axpy;
} att_job;

/* The softmax of query qv (HS) over n keys: np of a prefix (rows of stride
 * krow at kp) and then the sequence's own (at ko), in that order: e (n) =
 * exp(score - max); returns the sum of e. The forward and the backward's
 * recomputation both call it, so p is the same to the bit. */
static float att_softmax(dot_fn dot, const float *qv, const float *kp, int np, const float *ko, int n, size_t krow,
                         int HS, float *e) {
    float scale = 1.0f / sqrtf((float)HS);
    float mx = -INFINITY;
    for (int s = 0; s < n; s++) {
        const float *kv = s < np ? kp + (size_t)s * krow : ko + (size_t)(s - np) * krow;
        float d = dot(qv, kv, HS) * scale;
        e[s] = d;
        if (d > mx) mx = d;
    }
    float sum = 0.0f;
    for (int s = 0; s < n; s++) {
        e[s] = expf(e[s] - mx);
        sum += e[s];
    }
    return sum;
}

/* out (HS) for query qv (HS) over np keys/values of a prefix (rows of
 * stride krow at kp, vp) followed by no of the sequence's own (at ko, vo):
 * the scores in that order, so a sequence without a prefix computes exactly
 * what it computed before prefixes existed. */
static void att_row(const att_job *j, float *o, const float *qv, const float *kp, const float *vp, int np,
                    const float *ko, const float *vo, int no, float *att) {
    int HS = j->HS, n = np + no;
    size_t krow = (size_t)j->NKV * HS;
    float inv = 1.0f / att_softmax(j->dot, qv, kp, np, ko, n, krow, HS, att);
    memset(o, 0, (size_t)HS * sizeof(float));
    for (int s = 0; s < n; s++)
        j->axpy(o, att[s] * inv, s < np ? vp + (size_t)s * krow : vo + (size_t)(s - np) * krow, HS);
}

/* out[r,h] for one row r of sequence b. */
static void att_one(const att_job *j, int b, int r, int h, float *att) {
    int NH = j->NH, HS = j->HS, kvh = h / (NH / j->NKV);
    int t = r - j->row0[b];
    size_t krow = (size_t)j->NKV * HS, kvo = (size_t)kvh * HS;
    const float *qv = j->q + ((size_t)r * NH + h) * HS;
    float *o = j->out + ((size_t)r * NH + h) * HS;
    if (j->kc) {
        att_row(j, o, qv, NULL, NULL, 0, j->kc[b] + kvo, j->vc[b] + kvo, j->past[b] + t + 1, att);
        return;
    }
    size_t own = (size_t)j->row0[b] * krow + kvo;
    int p = j->par ? j->par[b] : -1, np = p >= 0 ? j->pre[b] : 0;
    size_t pre = p >= 0 ? (size_t)j->row0[p] * krow + kvo : 0;
    att_row(j, o, qv, j->k + pre, j->v + pre, np, j->k + own, j->v + own, t + 1, att);
}

/* A contiguous range of (row, head) pairs, w = r * NH + h. */
static void att_task(void *ctx, int task, int worker) {
    const att_job *j = ctx;
    float *att = j->att + (size_t)worker * j->att_stride;
    int end = (task + 1) * j->per_task, work = j->rows * j->NH;
    if (end > work) end = work;
    int b = 0;
    for (int w = task * j->per_task; w < end; w++) {
        int r = w / j->NH, h = w % j->NH;
        while (r >= j->row0[b + 1]) b++;
        att_one(j, b, r, h, att);
    }
}

/* The most keys a row of sequence b sees (its last row's). */
static int att_keys(const att_job *j, int b) {
    int T = j->row0[b + 1] - j->row0[b];
    if (j->kc) return j->past[b] + T;
    return (j->par && j->par[b] >= 0 ? j->pre[b] : 0) + T;
}

/* Split j's (row, head) pairs into tasks on the pool. The pool pays off only
 * past ~1 MFLOP: an AR step of a short context runs inline. */
static void att_run(att_job *j) {
    int work = j->rows * j->NH;
    double flops = 0;
    for (int b = 0; b < j->B; b++) {
        int T = j->row0[b + 1] - j->row0[b], keys = att_keys(j, b);
        if ((size_t)keys > j->att_stride) j->att_stride = (size_t)keys;
        flops += 4.0 * T * j->NH * keys * (double)j->HS;
    }
    if (work <= 0) return;
    int nt = kernels_threads(), tasks = 1;
    if (nt > 1 && flops >= 1e6) tasks = 4 * nt;
    if (tasks > work) tasks = work;
    j->per_task = (work + tasks - 1) / tasks;
    tasks = (work + j->per_task - 1) / j->per_task;
    kernels_parallel(tasks, att_task, j);
}

/* out, q (row0[B], NH, HS); kc, vc (B); row0 (B+1); past (B);
 * att (threads, max_b (past[b] + T_b)) */
void attention_forward_batch(float *out, const float *q, const float *const *kc,
                             const float *const *vc, const int *row0, const int *past,
                             float *att, int B, int NH, int NKV, int HS) {
    att_job j = {out, q, kc, vc, past, NULL, NULL, NULL, NULL, row0, att, 0, B, NH, NKV, HS, row0[B],
                 0, pick_dot(), pick_axpy()};
    att_run(&j);
}

/* out, q (row0[B], NH, HS); k, v (row0[B], NKV, HS); row0 (B+1); par, pre
 * (B) or NULL; att (threads, most keys of a row) */
void attention_forward_fork(float *out, const float *q, const float *k, const float *v, const int *row0,
                            const int *par, const int *pre, float *att, int B, int NH, int NKV, int HS) {
    att_job j = {out, q, NULL, NULL, NULL, k, v, par, pre, row0, att, 0, B, NH, NKV, HS, row0[B],
                 0, pick_dot(), pick_axpy()};
    att_run(&j);
}

/* out (T, NH, HS); q (T, NH, HS); kc, vc (S, NKV, HS); att (threads * (P + T)) */
void attention_forward(float *out, const float *q, const float *kc, const float *vc,
                       float *att, int T, int P, int NH, int NKV, int HS) {
    int row0[2] = {0, T};
    attention_forward_batch(out, q, &kc, &vc, row0, &P, att, 1, NH, NKV, HS);
}

/* ---- backward ------------------------------------------------------------ */

typedef struct attb_job {
    float *dq, *dk, *dv;
    const float *dout, *q, *k, *v;
    const int *row0;     /* (B + 1) first row of each sequence */
    const int *par, *pre;/* (B) each or NULL: the prefix each sequence sees */
    float *att;          /* 2 * T floats for this job: p, dp */
    int B, T, NH, NKV, HS;
    int begin, end;      /* range of b * NKV + kvh */
    dot_fn dot;          /* the forward's dot product, so p is recomputed exactly */
    axpy_fn axpy;
} attb_job;

/* Sequence b's query head h, row t: its dq row, and its part of dk, dv of the
 * np prefix rows (kp, vp; dkp, dvp) and own rows 0..t (ko, vo; dko, dvo). */
static void attb_row(const attb_job *j, int b, int h, int t, const float *kp, const float *vp, float *dkp,
                     float *dvp, int np, const float *ko, const float *vo, float *dko, float *dvo) {
    int HS = j->HS, n = np + t + 1;
    float scale = 1.0f / sqrtf((float)HS);
    size_t krow = (size_t)j->NKV * HS;
    float *p = j->att, *dp = j->att + j->T;
    size_t off = ((size_t)j->row0[b] + t) * j->NH * HS + (size_t)h * HS;
    float *dqv = j->dq + off;
    memset(dqv, 0, (size_t)HS * sizeof(float));
    const float *qv = j->q + off, *dov = j->dout + off;
#define KEY(base, s) ((s) < np ? (base##p) + (size_t)(s) * krow : (base##o) + (size_t)((s) - np) * krow)
    float inv = 1.0f / att_softmax(j->dot, qv, kp, np, ko, n, krow, HS, p);   /* as the forward */
    float pdp = 0.0f;
    for (int s = 0; s < n; s++) {
        p[s] *= inv;
        dp[s] = j->dot(dov, KEY(v, s), HS);
        j->axpy(KEY(dv, s), p[s], dov, HS);
        pdp += p[s] * dp[s];
    }
    for (int s = 0; s < n; s++) {
        float ds = p[s] * (dp[s] - pdp) * scale;
        j->axpy(dqv, ds, KEY(k, s), HS);
        j->axpy(KEY(dk, s), ds, qv, HS);
    }
#undef KEY
}

/* Whether packed sequence f is b itself or one of b's forks. */
static int in_family(const attb_job *j, int b, int f) { return f == b || (j->par && j->par[f] == b); }

/* One (sequence b, kv head g) pair, b without a parent: the dk, dv rows of b
 * and of every sequence forking from it, and the dq rows of their query heads
 * g*group .. g*group + group - 1. A family is one task, so the rows of b that
 * its forks see as a prefix are summed in one fixed order: b's queries, then
 * each fork's in order. */
static void attb_range(const attb_job *j) {
    int NH = j->NH, NKV = j->NKV, HS = j->HS;
    int group = NH / NKV;
    size_t krow = (size_t)NKV * HS;
    for (int w = j->begin; w < j->end; w++) {
        int b = w / NKV, g = w % NKV;
        if (j->par && j->par[b] >= 0) continue;   /* done with its parent */
        size_t gofs = (size_t)g * HS, base = (size_t)j->row0[b] * krow + gofs;
        for (int f = b; f < j->B; f++) {
            if (!in_family(j, b, f)) continue;
            for (int r = j->row0[f]; r < j->row0[f + 1]; r++) {
                memset(j->dk + (size_t)r * krow + gofs, 0, (size_t)HS * sizeof(float));
                memset(j->dv + (size_t)r * krow + gofs, 0, (size_t)HS * sizeof(float));
            }
        }
        for (int f = b; f < j->B; f++) {
            if (!in_family(j, b, f)) continue;
            int np = f != b ? j->pre[f] : 0;
            size_t own = (size_t)j->row0[f] * krow + gofs;
            for (int h = g * group; h < (g + 1) * group; h++)
                for (int t = 0; t < j->row0[f + 1] - j->row0[f]; t++)
                    attb_row(j, f, h, t, j->k + base, j->v + base, j->dk + base, j->dv + base, np, j->k + own,
                             j->v + own, j->dk + own, j->dv + own);
        }
    }
}

static void attb_task(void *ctx, int task, int worker) {
    const attb_job *all = ctx;
    attb_job j = all[task];
    j.att = all[0].att + (size_t)worker * 2 * j.T;
    attb_range(&j);
}

/* dq (R, NH, HS); dk, dv (R, NKV, HS); dout, q (R, NH, HS); k, v (R, NKV, HS);
 * R = row0[B]; row0 (B + 1); par, pre (B) or NULL; att (threads * 2 * T) */
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const int *row0, const int *par, const int *pre,
                        float *att, int B, int T, int NH, int NKV, int HS) {
    int work = B * NKV;
    int nt = kernels_threads();
    double flops = 0;   /* a bound: 8 NH HS n (n + prefix) for a sequence of n rows */
    for (int b = 0; b < B; b++) {
        double n = row0[b + 1] - row0[b], np = par && par[b] >= 0 ? pre[b] : 0;
        flops += 8.0 * NH * HS * n * (n + np);
    }
    if (nt > work) nt = work;
    if (flops < 1e6 || nt < 2) nt = 1;
    enum { MAXT = 64 };
    if (nt > MAXT) nt = MAXT;
    /* nt tasks of whole (sequence, kv head) pairs; scratch by worker (attb_task) */
    attb_job jobs[MAXT];
    for (int i = 0; i < nt; i++)
        jobs[i] = (attb_job){dq, dk, dv, dout, q, k, v, row0, par, pre, att, B, T, NH, NKV, HS,
                             (int)((long long)work * i / nt), (int)((long long)work * (i + 1) / nt),
                             pick_dot(), pick_axpy()};
    kernels_parallel(nt, attb_task, jobs);
}
