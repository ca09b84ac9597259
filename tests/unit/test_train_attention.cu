/* test_train_attention.cu: the training attention kernels' forks
 * (kernels/cuda/train/attention*.cu, train_kernels.h's seq_fork) against the
 * same sequences spelt out, kernel by kernel, on bf16 inputs both sides share.
 *
 * Layout with a fork (F): sequence 0 (150 rows), sequence 1 (30), and
 * sequence 2, a fork of sequence 0 at pre = 100 with 45 rows. Spelt out (S):
 * the same, with sequence 2 made of sequence 0's rows 0..99 (copies of their
 * q, k, v) and then the fork's 45 rows; no forks. Every output of F must
 * equal S's: out and lse of every row (the fork's rows against S's rows 100
 * onwards), dq of every row, dk and dv of every row, where a row of
 * sequence 0 below pre sums its gradient over sequence 0's queries and the
 * fork's, i.e. S's row of sequence 0 plus its copy in sequence 2 (whose own
 * queries, the copies, carry do = 0).
 *
 * Attention here is peaked on purpose (q and k ~ N(0, 2^2), scores ~ N(0,
 * 4^2)), and the fork's first rows aim at one key each (q = 3 k of key 0, 63,
 * 64, 98, 99 of the prefix, the tile edges and the prefix's end, and of the
 * fork's own row 0): a key dropped or let in by a mask off by one moves such
 * a row's output by its whole size. The two layouts differ only in how keys
 * fall into tiles (the online softmax's rescaling order, fp32) and so in
 * rounding: out within 1e-2 of its row's largest element (bf16 output,
 * 2^-8 relative, plus the flash kernels' P rounded to bf16), lse within
 * 1e-4 relative, dq, dk, dv within 1e-2 of the tensor's largest element
 * (fp32 sums of bf16 products in another order; P and dS rounded to bf16 in
 * the tensor-core kernels).
 * Three rows (sequence 0's row 120, sequence 1's last, the fork's row 6)
 * have q = 0: every score is 0, so by the definition lse = log(keys) (within
 * 1e-6 relative: exact sums) and out is the mean of the keys' v (1e-2 of the
 * row's largest): a key too many in a fork's prefix, or an lse off by 1e-3,
 * which the comparison of the two layouts cannot see.
 *
 * Kernels: variant 0 (tensor cores) at head size 64 and 128, 1 (a warp per
 * key) and 2 (a thread per key; falls back to 1 with forks) at 64.
 * Without a device (or a CUDA build) it prints "skip: no CUDA device".
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/train/train_kernels.h"

extern "C" {
#include "check.h"
#include "err.h"
#include "rng.h"
}

using namespace cllm_train;

enum { NH = 4, NKV = 2, N0 = 150, N1 = 30, PRE = 100, NF = 45, TMAX = 150 };
enum { RF = N0 + N1 + NF, RS = N0 + N1 + PRE + NF };

static uint16_t bf16_bits(float x) {   /* round to nearest even (finite inputs) */
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float bf16_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static double normal(cllm_rng *r) {   /* Box-Muller */
    double u = (cllm_rng_below(r, 1u << 30) + 0.5) / (double)(1u << 30);
    double v = (cllm_rng_below(r, 1u << 30) + 0.5) / (double)(1u << 30);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* row of S holding the same query as row r of F */
static int s_row(int r) { return r < N0 + N1 ? r : r + PRE; }

/* rows of F with q = 0 (sequence 0's row 120, sequence 1's last row, the
 * fork's row 6, position 106) and the keys each sees */
enum { NZ = 3 };
static const int zrow[NZ] = {120, N0 + N1 - 1, N0 + N1 + 6}, zkeys[NZ] = {121, N1, PRE + 7};

struct dev {
    floatX *qkv, *out, *dout;
    float *lse, *dqkv, *Dsum;
    int *row0;
    seq_fork *fork;
};

static int dev_alloc(dev *d, int R, int QKV, int QD) {
    memset(d, 0, sizeof *d);
    if (CUDA_MALLOC(&d->qkv, (size_t)R * QKV * 2, "qkv") || CUDA_MALLOC(&d->out, (size_t)R * QD * 2, "out") ||
        CUDA_MALLOC(&d->dout, (size_t)R * QD * 2, "dout") || CUDA_MALLOC(&d->lse, (size_t)R * NH * 4, "lse") ||
        CUDA_MALLOC(&d->dqkv, (size_t)R * QKV * 4, "dqkv") || CUDA_MALLOC(&d->Dsum, (size_t)R * NH * 4, "Dsum") ||
        CUDA_MALLOC(&d->row0, 4 * sizeof(int), "row0") || CUDA_MALLOC(&d->fork, 3 * sizeof(seq_fork), "fork"))
        return CLLM_ENOMEM;
    return 0;
}
static void dev_free(dev *d) {
    void *p[] = {d->qkv, d->out, d->dout, d->lse, d->dqkv, d->Dsum, d->row0, d->fork};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        if (p[i]) (void)cudaFree(p[i]);
}

/* max |a - b| over n floats, relative to max |b| */
static double err_vs(const float *a, const float *b, size_t n, size_t stride, size_t len) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < len; j++) {
            double d = fabs((double)a[i * stride + j] - b[i * stride + j]);
            if (!(d <= md)) md = isnan(d) ? INFINITY : d;
            if (fabs(b[i * stride + j]) > mb) mb = fabs(b[i * stride + j]);
        }
    return mb > 0 ? md / mb : md;
}

static void test_case(const char *name, int HS, int variant) {
    int QD = NH * HS, KD = NKV * HS, QKV = QD + 2 * KD;
    cllm_rng r;
    cllm_rng_seed(&r, (uint64_t)(HS * 10 + variant));
    /* F's rows: q, k ~ N(0, 2^2), v ~ N(0, 1) */
    float *x = (float *)malloc((size_t)RF * QKV * sizeof(float));
    float *dof = (float *)malloc((size_t)RF * QD * sizeof(float));
    uint16_t *qf = (uint16_t *)malloc((size_t)RF * QKV * 2), *qs = (uint16_t *)malloc((size_t)RS * QKV * 2);
    uint16_t *df = (uint16_t *)malloc((size_t)RF * QD * 2), *ds = (uint16_t *)malloc((size_t)RS * QD * 2);
    uint16_t *of = (uint16_t *)malloc((size_t)RF * QD * 2), *os = (uint16_t *)malloc((size_t)RS * QD * 2);
    float *lf = (float *)malloc((size_t)RF * NH * 4), *ls = (float *)malloc((size_t)RS * NH * 4);
    float *gf = (float *)malloc((size_t)RF * QKV * 4), *gs = (float *)malloc((size_t)RS * QKV * 4);
    float *a = (float *)malloc((size_t)RF * QKV * 4), *b = (float *)malloc((size_t)RF * QKV * 4);
    dev F, S;
    cudaStream_t st = 0;
    memset(&F, 0, sizeof F);
    memset(&S, 0, sizeof S);
    if (!x || !dof || !qf || !qs || !df || !ds || !of || !os || !lf || !ls || !gf || !gs || !a || !b) {
        CHECK_MSG(0, "%s: out of memory", name);
        goto out;
    }
    for (int i = 0; i < RF; i++)
        for (int c = 0; c < QKV; c++) x[(size_t)i * QKV + c] = (float)(normal(&r) * (c < QD + KD ? 2.0 : 1.0));
    /* the fork's rows 0..5 aim at one key each: q of every head = 3 k of
     * its kv head at sequence 0's rows 0, 63, 64, 98, 99, or the fork's row 0 */
    {
        const int aim[6] = {0, 63, 64, 98, 99, N0 + N1};
        for (int t = 0; t < 6; t++)
            for (int h = 0; h < NH; h++)
                for (int d = 0; d < HS; d++)
                    x[(size_t)(N0 + N1 + t) * QKV + h * HS + d] =
                        3.0f * bf16_float(bf16_bits(x[(size_t)aim[t] * QKV + QD + (h / (NH / NKV)) * HS + d]));
    }
    /* rows whose q is 0 in every head (ZROW): every score is 0, so by the
     * definition lse = log(keys) and out = the mean of the keys' v */
    for (int z = 0; z < NZ; z++)
        for (int d = 0; d < QD; d++) x[(size_t)zrow[z] * QKV + d] = 0.0f;
    for (size_t i = 0; i < (size_t)RF * QD; i++) dof[i] = (float)normal(&r);
    for (int i = 0; i < RF; i++)
        for (int c = 0; c < QKV; c++) qf[(size_t)i * QKV + c] = bf16_bits(x[(size_t)i * QKV + c]);
    for (int i = 0; i < RF; i++)
        for (int c = 0; c < QD; c++) df[(size_t)i * QD + c] = bf16_bits(dof[(size_t)i * QD + c]);
    /* S: F's rows, with sequence 0's rows 0..99 copied before the fork's */
    for (int i = 0; i < RF; i++) {
        memcpy(qs + (size_t)s_row(i) * QKV, qf + (size_t)i * QKV, (size_t)QKV * 2);
        memcpy(ds + (size_t)s_row(i) * QD, df + (size_t)i * QD, (size_t)QD * 2);
    }
    /* the copies' queries carry do = 0: they add nothing to dk, dv (sequence
     * 0's own rows carry those terms) */
    for (int i = 0; i < PRE; i++) {
        memcpy(qs + (size_t)(N0 + N1 + i) * QKV, qf + (size_t)i * QKV, (size_t)QKV * 2);
        memset(ds + (size_t)(N0 + N1 + i) * QD, 0, (size_t)QD * 2);
    }
    {
        int row0f[4] = {0, N0, N0 + N1, RF}, row0s[4] = {0, N0, N0 + N1, RS};
        seq_fork fk[3] = {{-1, 0, 2}, {-1, 0, -1}, {0, PRE, -1}};
        if (dev_alloc(&F, RF, QKV, QD) || dev_alloc(&S, RS, QKV, QD) ||
            CUDA_CHECK(cudaStreamCreate(&st)) ||
            CUDA_CHECK(cudaMemcpy(F.qkv, qf, (size_t)RF * QKV * 2, cudaMemcpyHostToDevice)) ||
            CUDA_CHECK(cudaMemcpy(S.qkv, qs, (size_t)RS * QKV * 2, cudaMemcpyHostToDevice)) ||
            CUDA_CHECK(cudaMemcpy(F.dout, df, (size_t)RF * QD * 2, cudaMemcpyHostToDevice)) ||
            CUDA_CHECK(cudaMemcpy(S.dout, ds, (size_t)RS * QD * 2, cudaMemcpyHostToDevice)) ||
            CUDA_CHECK(cudaMemcpy(F.row0, row0f, sizeof row0f, cudaMemcpyHostToDevice)) ||
            CUDA_CHECK(cudaMemcpy(S.row0, row0s, sizeof row0s, cudaMemcpyHostToDevice)) ||
            CUDA_CHECK(cudaMemcpy(F.fork, fk, sizeof fk, cudaMemcpyHostToDevice)))
            goto fail;
    }
    if (attention_forward(F.out, F.lse, F.qkv, F.row0, F.fork, 3, TMAX, NH, NKV, HS, variant, st) ||
        attention_forward(S.out, S.lse, S.qkv, S.row0, NULL, 3, TMAX, NH, NKV, HS, variant, st) ||
        attention_backward(F.dqkv, F.Dsum, F.dout, F.out, F.qkv, F.lse, F.row0, F.fork, 3, TMAX, NH, NKV, HS,
                           variant, st) ||
        attention_backward(S.dqkv, S.Dsum, S.dout, S.out, S.qkv, S.lse, S.row0, NULL, 3, TMAX, NH, NKV, HS,
                           variant, st) ||
        CUDA_CHECK(cudaStreamSynchronize(st)) ||
        CUDA_CHECK(cudaMemcpy(of, F.out, (size_t)RF * QD * 2, cudaMemcpyDeviceToHost)) ||
        CUDA_CHECK(cudaMemcpy(os, S.out, (size_t)RS * QD * 2, cudaMemcpyDeviceToHost)) ||
        CUDA_CHECK(cudaMemcpy(lf, F.lse, (size_t)RF * NH * 4, cudaMemcpyDeviceToHost)) ||
        CUDA_CHECK(cudaMemcpy(ls, S.lse, (size_t)RS * NH * 4, cudaMemcpyDeviceToHost)) ||
        CUDA_CHECK(cudaMemcpy(gf, F.dqkv, (size_t)RF * QKV * 4, cudaMemcpyDeviceToHost)) ||
        CUDA_CHECK(cudaMemcpy(gs, S.dqkv, (size_t)RS * QKV * 4, cudaMemcpyDeviceToHost)))
        goto fail;
    {
        /* forward: out per row (relative to the row's largest), lse */
        double eo = 0, el = 0;
        int worst_row = -1;
        for (int i = 0; i < RF; i++) {
            double md = 0, mb = 0;
            for (int c = 0; c < QD; c++) {
                double u = bf16_float(of[(size_t)i * QD + c]), v = bf16_float(os[(size_t)s_row(i) * QD + c]);
                if (!(fabs(u - v) <= md)) md = isnan(u - v) ? INFINITY : fabs(u - v);
                if (fabs(v) > mb) mb = fabs(v);
            }
            double e = mb > 0 ? md / mb : md;
            if (e > eo) { eo = e; worst_row = i; }
            for (int h = 0; h < NH; h++) {
                double u = lf[i * NH + h], v = ls[s_row(i) * NH + h];
                double e2 = fabs(u - v) / fmax(1.0, fabs(v));
                if (!(e2 <= el)) el = isnan(e2) ? INFINITY : e2;
            }
        }
        /* backward: dq of every row; dk, dv of F against S's, sequence 0's
         * prefix rows summed with their copies */
        for (int i = 0; i < RF; i++)
            for (int c = 0; c < QKV; c++) {
                float v = gs[(size_t)s_row(i) * QKV + c];
                if (c >= QD && i < PRE) v += gs[(size_t)(N0 + N1 + i) * QKV + c];
                a[(size_t)i * QKV + c] = gf[(size_t)i * QKV + c];
                b[(size_t)i * QKV + c] = v;
            }
        double eq = err_vs(a, b, RF, QKV, QD), ek = err_vs(a + QD, b + QD, RF, QKV, KD);
        double ev = err_vs(a + QD + KD, b + QD + KD, RF, QKV, KD);
        printf("%s: fork vs spelt out: out %.3g (worst row %d), lse %.3g; dq %.3g, dk %.3g, dv %.3g\n", name, eo,
               worst_row, el, eq, ek, ev);
        CHECK_MSG(eo <= 1e-2, "%s: out differs: %.3g at row %d", name, eo, worst_row);
        CHECK_MSG(el <= 1e-4, "%s: lse differs: %.3g", name, el);
        CHECK_MSG(eq <= 1e-2 && ek <= 1e-2 && ev <= 1e-2, "%s: gradients differ: dq %.3g, dk %.3g, dv %.3g", name,
                  eq, ek, ev);
        /* the q = 0 rows against the definition: lse = log(keys) within 1e-6
         * relative (every score is exactly 0, the sum an exact integer);
         * out = mean of the bf16 v rows (the prefix's rows of sequence 0,
         * then the row's own sequence up to it) within 1e-2 of the row's
         * largest, as above */
        double ezl = 0, ezo = 0;
        for (int z = 0; z < NZ; z++) {
            int i = zrow[z], first = i < N0 ? 0 : i < N0 + N1 ? N0 : N0 + N1;
            for (int h = 0; h < NH; h++) {
                double e = fabs(lf[i * NH + h] - log((double)zkeys[z])) / log((double)zkeys[z]);
                if (!(e <= ezl)) ezl = isnan(e) ? INFINITY : e;
                double md = 0, mb = 0;
                for (int d = 0; d < HS; d++) {
                    double s = 0;
                    int vc = QD + KD + (h / (NH / NKV)) * HS + d;
                    for (int j = 0; j < (first == N0 + N1 ? PRE : 0); j++) s += bf16_float(qf[(size_t)j * QKV + vc]);
                    for (int j = first; j <= i; j++) s += bf16_float(qf[(size_t)j * QKV + vc]);
                    s /= zkeys[z];
                    double u = bf16_float(of[(size_t)i * QD + h * HS + d]);
                    if (!(fabs(u - s) <= md)) md = isnan(u - s) ? INFINITY : fabs(u - s);
                    if (fabs(s) > mb) mb = fabs(s);
                }
                e = mb > 0 ? md / mb : md;
                if (!(e <= ezo)) ezo = isnan(e) ? INFINITY : e;
            }
        }
        printf("%s: q = 0 rows against the definition: lse %.3g, out %.3g\n", name, ezl, ezo);
        CHECK_MSG(ezl <= 1e-6 && ezo <= 1e-2, "%s: q = 0 rows: lse %.3g, out %.3g", name, ezl, ezo);
    }
    goto out;
fail:
    CHECK_MSG(0, "%s: %s", name, cllm_errmsg());
out:
    dev_free(&F);
    dev_free(&S);
    if (st) (void)cudaStreamDestroy(st);
    free(x); free(dof); free(qf); free(qs); free(df); free(ds); free(of); free(os);
    free(lf); free(ls); free(gf); free(gs); free(a); free(b);
    TEST_OK(name);
}

int main(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        (void)cudaGetLastError();
        printf("skip: no CUDA device\n");
        return 0;
    }
    test_case("forks_flash_hs64", 64, 0);
    test_case("forks_flash_hs128", 128, 0);
    test_case("forks_warp_per_key", 64, 1);
    test_case("forks_thread_per_key_fallback", 64, 2);
    TEST_END();
}
