/* matmul.c: out = inp W^T (+ bias), the Linear layer.
 *
 * Three paths, chosen by the number of rows T:
 *   T == 1          cblas_sgemv: streams W once at memory bandwidth (AR step);
 *   2 <= T <= 32    an AVX-512 kernel of our own when the CPU has AVX-512F
 *                   (Jacobi windows): W is still streamed from memory once, each
 *                   4-row slab of W meeting every 4-row slab of inp while it is
 *                   in L1, because OpenBLAS' sgemm packs W for such thin
 *                   products and then runs at a third of the bandwidth;
 *   otherwise       cblas_sgemm (prefill, and CPUs without AVX-512F).
 * The AVX-512 path splits W's rows over pthreads started per call (about
 * 30 us, against milliseconds of work per call at these sizes). Every path
 * sums each output in one fixed order for a given T, so results do not depend
 * on the thread count. The paths round differently (FMA, order),
 * which is far inside the forward's 1e-4 tolerance.
 */
#include <cblas.h>
#include <pthread.h>
#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_PATH 1
#endif

#include "kernels.h"

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
        for (; t < T; t++) {   /* leftover rows of inp */
            const float *x = inp + (size_t)t * C;
            const float *ws[4] = {w0, w1, w2, w3};
            for (int j = 0; j < 4; j++) {
                __m512 a = _mm512_setzero_ps();
                for (int c = 0; c < C16; c += 16)
                    a = _mm512_fmadd_ps(_mm512_loadu_ps(x + c), _mm512_loadu_ps(ws[j] + c), a);
                float s = _mm512_reduce_add_ps(a);
                for (int c = C16; c < C; c++) s += x[c] * ws[j][c];
                out[(size_t)t * OC + o + j] = s;
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
    int T, C, OC, o0, o1;
} thin_job;

static void *thin_thread(void *arg) {
    thin_job *j = arg;
    matmul_thin_avx512(j->out, j->inp, j->weight, j->T, j->C, j->OC, j->o0, j->o1);
    return NULL;
}

/* Split the rows of W (in multiples of 4) over kernels_threads() threads,
 * the caller being one of them. Each output element is still computed by one
 * thread in the same order, so the split does not change any result. */
static void matmul_thin(float *out, const float *inp, const float *weight, int T, int C, int OC) {
    enum { MAXT = 64 };
    int nt = kernels_threads();
    if (nt > MAXT) nt = MAXT;
    if (nt > OC / 64) nt = OC / 64 > 0 ? OC / 64 : 1;   /* not worth a thread below 64 rows */
    if (T < 8) nt = 1;   /* memory-bound: one thread already reads W at full bandwidth */
    thin_job jobs[MAXT];
    pthread_t tid[MAXT];
    int started[MAXT] = {0};
    int blocks = (OC + 3) / 4;
    for (int i = 0; i < nt; i++) {
        int b0 = (int)((long long)blocks * i / nt), b1 = (int)((long long)blocks * (i + 1) / nt);
        int o0 = 4 * b0, o1 = 4 * b1 < OC ? 4 * b1 : OC;
        jobs[i] = (thin_job){out, inp, weight, T, C, OC, o0, o1};
    }
    for (int i = 1; i < nt; i++) started[i] = pthread_create(&tid[i], NULL, thin_thread, &jobs[i]) == 0;
    thin_thread(&jobs[0]);
    for (int i = 1; i < nt; i++) {
        if (started[i]) pthread_join(tid[i], NULL);
        else thin_thread(&jobs[i]);
    }
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
    if (T == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, C, 1.0f, weight, C, inp, 1, 0.0f, out, 1);
    }
#ifdef HAVE_AVX512_PATH
    else if (T <= 32 && have_avx512()) {
        matmul_thin(out, inp, weight, T, C, OC);
    }
#endif
    else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, OC, C,
                    1.0f, inp, C, weight, C, 0.0f, out, OC);
    }
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
