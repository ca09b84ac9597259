/* matmul.c: out = inp W^T (+ bias), the Linear layer.
 *
 * Two paths:
 *   1 <= T <= MATMUL_STREAM_MAX_T on CPUs with AVX-512F: a kernel of our own
 *     that streams W from memory once, each 4-row slab of W meeting every row
 *     of inp while the slab is in L1 (4x4 register blocks: 16 accumulators).
 *     OpenBLAS packs W for thin products and ran them at a third of the
 *     bandwidth, and its sgemv (T = 1) and sgemm (T > 1) round differently;
 *   otherwise cblas_sgemm (training's large products, CPUs without AVX-512F).
 *
 * Row invariance. In the AVX-512 path every output out[t][o] is computed by
 * the same arithmetic whatever T is and whichever block t falls in: one
 * 16-lane accumulator chain acc = fma(x[c..c+15], w[c..c+15], acc) over the
 * C/16 full chunks in order, _mm512_reduce_add_ps, then the C % 16 tail added
 * in order. So a row's result does not depend on the other rows of the call:
 * a batched forward (several sequences' rows in one product) gives each
 * sequence bit for bit the logits it gets alone. (The register blocks only
 * decide which outputs share loads, not how an output is summed.)
 *
 * Threads: W's rows are split into tasks of whole 4-row slabs on the kernel
 * pool (threads.c) once the product is large enough to pay for it; a task
 * computes fixed outputs, so results do not depend on the thread count.
 */
#include <cblas.h>
#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_PATH 1
#endif

#include "kernels.h"

/* Rows up to which the AVX-512 path is used (the inference forward's calls:
 * a batch of Jacobi windows plus a prompt chunk stays below it). */
enum { MATMUL_STREAM_MAX_T = 512 };

#ifdef HAVE_AVX512_PATH
/* out (T, OC) = inp (T, C) W (OC, C)^T, for rows o in [o0, o1). */
__attribute__((target("avx512f")))
static void matmul_thin_avx512(float *out, const float *inp, const float *weight, int T, int C,
                               int OC, int o0, int o1) {
    int C16 = C & ~15;
    int o = o0;
    for (; o + 4 <= o1; o += 4) {
        const float *w0 = weight + (size_t)o * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
        int t = 0;
        for (; t + 4 <= T; t += 4) {
            const float *x0 = inp + (size_t)t * C, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
            __m512 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
            __m512 a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            for (int c = 0; c < C16; c += 16) {
                __m512 vw0 = _mm512_loadu_ps(w0 + c), vw1 = _mm512_loadu_ps(w1 + c);
                __m512 vw2 = _mm512_loadu_ps(w2 + c), vw3 = _mm512_loadu_ps(w3 + c);
                __m512 vx = _mm512_loadu_ps(x0 + c);
                a00 = _mm512_fmadd_ps(vx, vw0, a00); a01 = _mm512_fmadd_ps(vx, vw1, a01);
                a02 = _mm512_fmadd_ps(vx, vw2, a02); a03 = _mm512_fmadd_ps(vx, vw3, a03);
                vx = _mm512_loadu_ps(x1 + c);
                a10 = _mm512_fmadd_ps(vx, vw0, a10); a11 = _mm512_fmadd_ps(vx, vw1, a11);
                a12 = _mm512_fmadd_ps(vx, vw2, a12); a13 = _mm512_fmadd_ps(vx, vw3, a13);
                vx = _mm512_loadu_ps(x2 + c);
                a20 = _mm512_fmadd_ps(vx, vw0, a20); a21 = _mm512_fmadd_ps(vx, vw1, a21);
                a22 = _mm512_fmadd_ps(vx, vw2, a22); a23 = _mm512_fmadd_ps(vx, vw3, a23);
                vx = _mm512_loadu_ps(x3 + c);
                a30 = _mm512_fmadd_ps(vx, vw0, a30); a31 = _mm512_fmadd_ps(vx, vw1, a31);
                a32 = _mm512_fmadd_ps(vx, vw2, a32); a33 = _mm512_fmadd_ps(vx, vw3, a33);
            }
            float r[4][4] = {
                {_mm512_reduce_add_ps(a00), _mm512_reduce_add_ps(a01), _mm512_reduce_add_ps(a02), _mm512_reduce_add_ps(a03)},
                {_mm512_reduce_add_ps(a10), _mm512_reduce_add_ps(a11), _mm512_reduce_add_ps(a12), _mm512_reduce_add_ps(a13)},
                {_mm512_reduce_add_ps(a20), _mm512_reduce_add_ps(a21), _mm512_reduce_add_ps(a22), _mm512_reduce_add_ps(a23)},
                {_mm512_reduce_add_ps(a30), _mm512_reduce_add_ps(a31), _mm512_reduce_add_ps(a32), _mm512_reduce_add_ps(a33)}};
            const float *xs[4] = {x0, x1, x2, x3};
            const float *ws[4] = {w0, w1, w2, w3};
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) {
                    float s = r[i][j];
                    for (int c = C16; c < C; c++) s += xs[i][c] * ws[j][c];
                    out[(size_t)(t + i) * OC + o + j] = s;
                }
        }
        for (; t < T; t++) {   /* leftover rows of inp: the 4 slab rows as 4 chains */
            const float *x = inp + (size_t)t * C;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int c = 0; c < C16; c += 16) {
                __m512 vx = _mm512_loadu_ps(x + c);
                a0 = _mm512_fmadd_ps(vx, _mm512_loadu_ps(w0 + c), a0);
                a1 = _mm512_fmadd_ps(vx, _mm512_loadu_ps(w1 + c), a1);
                a2 = _mm512_fmadd_ps(vx, _mm512_loadu_ps(w2 + c), a2);
                a3 = _mm512_fmadd_ps(vx, _mm512_loadu_ps(w3 + c), a3);
            }
            float r[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1),
                          _mm512_reduce_add_ps(a2), _mm512_reduce_add_ps(a3)};
            const float *ws[4] = {w0, w1, w2, w3};
            for (int j = 0; j < 4; j++) {
                float sum = r[j];
                for (int c = C16; c < C; c++) sum += x[c] * ws[j][c];
                out[(size_t)t * OC + o + j] = sum;
            }
        }
    }
    for (; o < o1; o++) {      /* leftover rows of W */
        const float *w = weight + (size_t)o * C;
        for (int t = 0; t < T; t++) {
            const float *x = inp + (size_t)t * C;
            __m512 a = _mm512_setzero_ps();
            for (int c = 0; c < C16; c += 16)
                a = _mm512_fmadd_ps(_mm512_loadu_ps(x + c), _mm512_loadu_ps(w + c), a);
            float s = _mm512_reduce_add_ps(a);
            for (int c = C16; c < C; c++) s += x[c] * w[c];
            out[(size_t)t * OC + o] = s;
        }
    }
}

typedef struct thin_job {
    float *out;
    const float *inp, *weight;
    int T, C, OC;
    int slabs_per_task;  /* 4-row slabs of W per task */
} thin_job;

static void thin_task(void *ctx, int task, int worker) {
    const thin_job *j = ctx;
    (void)worker;
    int o0 = 4 * task * j->slabs_per_task, o1 = o0 + 4 * j->slabs_per_task;
    if (o1 > j->OC) o1 = j->OC;
    matmul_thin_avx512(j->out, j->inp, j->weight, j->T, j->C, j->OC, o0, o1);
}

/* Split W's rows into tasks of whole 4-row slabs: one task when the product
 * is small (below ~1 MFLOP the pool's wake-up costs more than it saves),
 * else about 4 tasks per thread, so a thread slowed by another process on
 * the core does not hold the others up. */
static void matmul_thin(float *out, const float *inp, const float *weight, int T, int C, int OC) {
    int slabs = (OC + 3) / 4, nt = kernels_threads();
    int tasks = 1;
    if (nt > 1 && (double)T * OC * C >= 5e5) tasks = 4 * nt;
    if (tasks > slabs / 4) tasks = slabs / 4 > 0 ? slabs / 4 : 1;   /* >= 16 rows of W a task */
    thin_job j = {out, inp, weight, T, C, OC, (slabs + tasks - 1) / tasks};
    tasks = (slabs + j.slabs_per_task - 1) / j.slabs_per_task;
    kernels_parallel(tasks, thin_task, &j);
}

static int have_avx512(void) {
    static int v = -1;
    if (v < 0) v = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return v;
}
#endif

/* out (T, OC); inp (T, C); weight (OC, C); bias (OC) or NULL */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int T, int C, int OC) {
#ifdef HAVE_AVX512_PATH
    if (T <= MATMUL_STREAM_MAX_T && have_avx512()) matmul_thin(out, inp, weight, T, C, OC);
    else
#endif
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, OC, C,
                    1.0f, inp, C, weight, C, 0.0f, out, OC);
    if (bias) {
        for (int t = 0; t < T; t++) {
            float *o = out + (size_t)t * OC;
            for (int j = 0; j < OC; j++) o[j] += bias[j];
        }
    }
}

/* dinp (T, C) +=; dweight (OC, C) +=; dbias (OC) +=; any may be NULL.
 * dout (T, OC); inp (T, C); weight (OC, C). */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int T, int C, int OC) {
    if (T < 1) return;
    if (dinp)     /* (T, C) += (T, OC) (OC, C) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, C, OC,
                    1.0f, dout, OC, weight, C, 1.0f, dinp, C);
    if (dweight)  /* (OC, C) += (T, OC)^T (T, C) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, T,
                    1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    if (dbias) {
        for (int t = 0; t < T; t++) {
            const float *d = dout + (size_t)t * OC;
            for (int o = 0; o < OC; o++) dbias[o] += d[o];
        }
    }
}
