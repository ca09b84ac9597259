/* attention.c: causal grouped-query attention of new tokens over a KV cache.
 *
 * For new token t (position P + t) and query head h (kv head h / (NH/NKV)):
 *   s[j] = q[t,h] . k[j] / sqrt(HS)          j = 0 .. P + t
 *   p = softmax(s) (fp32, max subtracted)
 *   out[t,h] = sum_j p[j] v[j]
 * The (t, h) pairs are independent; with several threads they are split into
 * contiguous ranges, one per thread, each with its own row of scratch `att`.
 * Every output is computed by one thread in a fixed order, so the result does
 * not depend on the thread count.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "kernels.h"

typedef struct att_job {
    float *out;
    const float *q, *kc, *vc;
    float *att;          /* (P + T) floats for this job */
    int T, P, NH, NKV, HS;
    int begin, end;      /* range of t * NH + h */
} att_job;

static void att_range(const att_job *j) {
    int NH = j->NH, NKV = j->NKV, HS = j->HS, P = j->P;
    int group = NH / NKV;
    float scale = 1.0f / sqrtf((float)HS);
    size_t krow = (size_t)NKV * HS;
    for (int w = j->begin; w < j->end; w++) {
        int t = w / NH, h = w % NH, kvh = h / group;
        const float *qv = j->q + ((size_t)t * NH + h) * HS;
        float *o = j->out + ((size_t)t * NH + h) * HS;
        int n = P + t + 1;   /* keys 0 .. P + t */
        float mx = -INFINITY;
        for (int s = 0; s < n; s++) {
            const float *kv = j->kc + (size_t)s * krow + (size_t)kvh * HS;
            float dot = 0.0f;
            for (int i = 0; i < HS; i++) dot += qv[i] * kv[i];
            dot *= scale;
            j->att[s] = dot;
            if (dot > mx) mx = dot;
        }
        float sum = 0.0f;
        for (int s = 0; s < n; s++) {
            float e = expf(j->att[s] - mx);
            j->att[s] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        memset(o, 0, (size_t)HS * sizeof(float));
        for (int s = 0; s < n; s++) {
            const float *vv = j->vc + (size_t)s * krow + (size_t)kvh * HS;
            float p = j->att[s] * inv;
            for (int i = 0; i < HS; i++) o[i] += p * vv[i];
        }
    }
}

static void *att_thread(void *arg) {
    att_range(arg);
    return NULL;
}

/* out (T, NH, HS); q (T, NH, HS); kc, vc (S, NKV, HS); att (threads * (P + T)) */
void attention_forward(float *out, const float *q, const float *kc, const float *vc,
                       float *att, int T, int P, int NH, int NKV, int HS) {
    int work = T * NH;
    int nt = kernels_threads();
    /* Threads pay off only past ~1 MFLOP: AR steps (T = 1) run inline. */
    double flops = 4.0 * work * (P + T) * (double)HS;
    if (nt > work) nt = work;
    if (flops < 1e6 || nt < 2) nt = 1;
    enum { MAXT = 64 };
    if (nt > MAXT) nt = MAXT;
    att_job jobs[MAXT];
    pthread_t tid[MAXT];
    int started[MAXT] = {0};
    for (int i = 0; i < nt; i++) {
        jobs[i] = (att_job){out, q, kc, vc, att + (size_t)i * (P + T), T, P, NH, NKV, HS,
                            (int)((long long)work * i / nt), (int)((long long)work * (i + 1) / nt)};
    }
    /* Thread 0 is the caller; if a thread cannot start, its range runs inline. */
    for (int i = 1; i < nt; i++)
        started[i] = pthread_create(&tid[i], NULL, att_thread, &jobs[i]) == 0;
    att_range(&jobs[0]);
    for (int i = 1; i < nt; i++) {
        if (started[i]) pthread_join(tid[i], NULL);
        else att_range(&jobs[i]);
    }
}

/* ---- backward ------------------------------------------------------------ */

typedef struct attb_job {
    float *dq, *dk, *dv;
    const float *dout, *q, *k, *v;
    const int *lens;
    float *att;          /* 2 * T floats for this job: p, dp */
    int T, NH, NKV, HS;
    int begin, end;      /* range of b * NKV + kvh */
} attb_job;

/* One (sequence b, kv head g) pair: its dk, dv rows and the dq rows of the
 * query heads g*group .. g*group + group - 1. */
static void attb_range(const attb_job *j) {
    int T = j->T, NH = j->NH, NKV = j->NKV, HS = j->HS;
    int group = NH / NKV;
    float scale = 1.0f / sqrtf((float)HS);
    size_t qrow = (size_t)NH * HS, krow = (size_t)NKV * HS;
    float *p = j->att, *dp = j->att + T;
    for (int w = j->begin; w < j->end; w++) {
        int b = w / NKV, g = w % NKV;
        int n = j->lens ? j->lens[b] : T;
        const float *kb = j->k + (size_t)b * T * krow + (size_t)g * HS;   /* row s at + s*krow */
        const float *vb = j->v + (size_t)b * T * krow + (size_t)g * HS;
        float *dkb = j->dk + (size_t)b * T * krow + (size_t)g * HS;
        float *dvb = j->dv + (size_t)b * T * krow + (size_t)g * HS;
        for (int s = 0; s < T; s++) {
            memset(dkb + (size_t)s * krow, 0, (size_t)HS * sizeof(float));
            memset(dvb + (size_t)s * krow, 0, (size_t)HS * sizeof(float));
        }
        for (int h = g * group; h < (g + 1) * group; h++) {
            for (int t = 0; t < T; t++) {
                size_t off = ((size_t)b * T + t) * qrow + (size_t)h * HS;
                float *dqv = j->dq + off;
                memset(dqv, 0, (size_t)HS * sizeof(float));
                if (t >= n) continue;
                const float *qv = j->q + off, *dov = j->dout + off;
                /* recompute p exactly as attention_forward does */
                float mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const float *kv = kb + (size_t)s * krow;
                    float dot = 0.0f;
                    for (int i = 0; i < HS; i++) dot += qv[i] * kv[i];
                    dot *= scale;
                    p[s] = dot;
                    if (dot > mx) mx = dot;
                }
                float sum = 0.0f;
                for (int s = 0; s <= t; s++) {
                    float e = expf(p[s] - mx);
                    p[s] = e;
                    sum += e;
                }
                float inv = 1.0f / sum;
                float pdp = 0.0f;
                for (int s = 0; s <= t; s++) {
                    p[s] *= inv;
                    const float *vv = vb + (size_t)s * krow;
                    float *dvv = dvb + (size_t)s * krow;
                    float d = 0.0f;
                    for (int i = 0; i < HS; i++) {
                        d += dov[i] * vv[i];
                        dvv[i] += p[s] * dov[i];
                    }
                    dp[s] = d;
                    pdp += p[s] * d;
                }
                for (int s = 0; s <= t; s++) {
                    float ds = p[s] * (dp[s] - pdp) * scale;
                    const float *kv = kb + (size_t)s * krow;
                    float *dkv = dkb + (size_t)s * krow;
                    for (int i = 0; i < HS; i++) {
                        dqv[i] += ds * kv[i];
                        dkv[i] += ds * qv[i];
                    }
                }
            }
        }
    }
}

static void *attb_thread(void *arg) {
    attb_range(arg);
    return NULL;
}

/* dq (B, T, NH, HS); dk, dv (B, T, NKV, HS); dout, q (B, T, NH, HS);
 * k, v (B, T, NKV, HS); lens (B) or NULL; att (threads * 2 * T) */
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const int *lens, float *att,
                        int B, int T, int NH, int NKV, int HS) {
    int work = B * NKV;
    int nt = kernels_threads();
    double flops = 8.0 * B * NH * (double)T * T * HS;
    if (nt > work) nt = work;
    if (flops < 1e6 || nt < 2) nt = 1;
    enum { MAXT = 64 };
    if (nt > MAXT) nt = MAXT;
    attb_job jobs[MAXT];
    pthread_t tid[MAXT];
    int started[MAXT] = {0};
    for (int i = 0; i < nt; i++)
        jobs[i] = (attb_job){dq, dk, dv, dout, q, k, v, lens, att + (size_t)i * 2 * T, T, NH, NKV, HS,
                             (int)((long long)work * i / nt), (int)((long long)work * (i + 1) / nt)};
    for (int i = 1; i < nt; i++)
        started[i] = pthread_create(&tid[i], NULL, attb_thread, &jobs[i]) == 0;
    attb_range(&jobs[0]);
    for (int i = 1; i < nt; i++) {
        if (started[i]) pthread_join(tid[i], NULL);
        else attb_range(&jobs[i]);
    }
}
