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
