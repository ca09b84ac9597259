/* bench-decode.c: greedy AR vs Jacobi decoding speed on the CPU backend, with
 * the machine's memory-read bandwidth measured in the same run.
 *
 *   build/tools/bench-decode [-m MODEL] [-p IDS_FILE] [-k PROMPTS] [-t THREADS]
 *                            [-n BLOCK] [-N MAX_NEW_TOKENS]
 * Defaults: models/SmolLM2-135M-Instruct.Q4_1.gguf, tests/golden/gsm8k20_ids.txt
 * (GSM8K test questions in the chat template, one line of token ids each),
 * 20 prompts, 2 threads, n = 16, 64 new tokens.
 *
 * An AR step must read every weight once (fp32): its floor is
 * weight bytes / read bandwidth. Timings exclude the prompt (prefill): the
 * clock starts when the first token is out. Prints a table on stdout; it is a
 * benchmark, not a test (exit 0 unless something fails to run).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "decode.h"
#include "err.h"
#include "forward.h"
#include "kernels.h"
#include "model.h"

/* ---- memory-read bandwidth: threads summing disjoint parts of a 1 GiB buffer */

typedef struct { const uint64_t *a; size_t n; uint64_t s; } bw_job;

static void *bw_run(void *p) {
    bw_job *j = p;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= j->n; i += 4) {
        s0 += j->a[i]; s1 += j->a[i + 1]; s2 += j->a[i + 2]; s3 += j->a[i + 3];
    }
    j->s = s0 + s1 + s2 + s3;
    return NULL;
}

static double read_bandwidth(int threads) {
    size_t bytes = (size_t)1 << 30, n = bytes / 8;
    uint64_t *a = malloc(bytes);
    if (!a) return 0;
    for (size_t i = 0; i < n; i++) a[i] = i;
    double best = 0;
    uint64_t sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        bw_job J[64];
        pthread_t tid[64];
        int nt = threads < 64 ? threads : 64;
        double t0 = cllm_now_s();
        for (int i = 0; i < nt; i++) {
            J[i] = (bw_job){a + n / nt * i, n / nt, 0};
            if (pthread_create(&tid[i], NULL, bw_run, &J[i])) bw_run(&J[i]), tid[i] = 0;
        }
        for (int i = 0; i < nt; i++) {
            if (tid[i]) pthread_join(tid[i], NULL);
            sink += J[i].s;
        }
        double gbs = (double)bytes / (cllm_now_s() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(a);
    if (sink == 42) printf(" ");   /* keep the sums alive */
    return best;
}

/* ---- decoding ------------------------------------------------------------ */

typedef struct { double t_first; int seen; } clock_ctx;

static int on_tokens(void *ctx, const int *t, int n) {
    clock_ctx *c = ctx;
    (void)t;
    if (!c->seen) c->t_first = cllm_now_s();
    c->seen += n;
    return 0;
}

typedef struct { long tokens, steps; double secs; } totals;

static int run(cllm_fwd *f, cllm_kv *kv, int **ids, int *lens, int np, cllm_decode_opts *o,
               totals *tot, int **out, int *out_n) {
    memset(tot, 0, sizeof *tot);
    for (int p = 0; p < np; p++) {
        clock_ctx c = {0, 0};
        o->on_tokens = on_tokens;
        o->cb_ctx = &c;
        cllm_decode_result r;
        int rc = cllm_decode(f, kv, 0, ids[p], lens[p], o, &r);
        double t1 = cllm_now_s();
        if (rc) { cllm_decode_result_free(&r); return rc; }
        /* after the first token: tokens 2.., passes 2.. (the prefill chunks excluded) */
        int prefill = (lens[p] + f->max_T - 1) / f->max_T;
        tot->tokens += r.n_tokens - 1;
        tot->steps += r.steps - prefill;
        tot->secs += c.seen ? t1 - c.t_first : 0;
        if (out) {
            if (!out[p]) {
                out[p] = malloc((size_t)(r.n_tokens + 1) * sizeof(int));
                memcpy(out[p], r.tokens, (size_t)r.n_tokens * sizeof(int));
                out_n[p] = r.n_tokens;
            } else if (out_n[p] != r.n_tokens ||
                       memcmp(out[p], r.tokens, (size_t)r.n_tokens * sizeof(int))) {
                printf("note: prompt %d: Jacobi output differs from AR (near-tie?)\n", p);
            }
        }
        cllm_decode_result_free(&r);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    const char *ids_file = "tests/golden/gsm8k20_ids.txt";
    int k = 20, threads = 2, n = 16, max_new = 64, opt;
    while ((opt = getopt(argc, argv, "m:p:k:t:n:N:h")) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 'p': ids_file = optarg; break;
        case 'k': k = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'n': n = atoi(optarg); break;
        case 'N': max_new = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: bench-decode [-m MODEL] [-p IDS] [-k PROMPTS] [-t THREADS] "
                            "[-n BLOCK] [-N MAX_NEW]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (k < 1 || k > 1000 || threads < 1 || n < 1 || n > 64 || max_new < 2) {
        fprintf(stderr, "bench-decode: bad option value\n");
        return 2;
    }
    kernels_set_threads(threads);
    cllm_model m;
    if (cllm_model_load(&m, model)) {
        fprintf(stderr, "bench-decode: %s\n", cllm_errmsg());
        return 1;
    }
    int **ids = calloc((size_t)k, sizeof(int *)), *lens = calloc((size_t)k, sizeof(int));
    int **out = calloc((size_t)k, sizeof(int *)), *out_n = calloc((size_t)k, sizeof(int));
    FILE *fp = fopen(ids_file, "r");
    if (!fp) { fprintf(stderr, "bench-decode: cannot open %s\n", ids_file); return 1; }
    static char line[1 << 16];
    int np = 0, maxlen = 0;
    while (np < k && fgets(line, sizeof line, fp)) {
        int cap = 256, len = 0;
        int *v = malloc((size_t)cap * sizeof(int));
        for (char *s = line, *e;; s = e) {
            long x = strtol(s, &e, 10);
            if (e == s) break;
            if (len == cap) v = realloc(v, (size_t)(cap *= 2) * sizeof(int));
            v[len++] = (int)x;
        }
        if (len > maxlen) maxlen = len;
        ids[np] = v;
        lens[np++] = len;
    }
    fclose(fp);

    double bw = read_bandwidth(threads);
    /* every matrix is read once per AR step (the tied embedding once, as the LM head) */
    double weight_bytes = 4.0 * (double)m.n_params;
    double floor_ms = weight_bytes / (bw * 1e9) * 1e3;

    cllm_fwd f;
    cllm_kv kv;
    int max_T = n > 32 ? n : 32;
    if (cllm_fwd_init(&f, &m, max_T) || cllm_kv_init(&kv, &m.cfg, 1, maxlen + max_new + 1)) {
        fprintf(stderr, "bench-decode: %s\n", cllm_errmsg());
        return 1;
    }
    cllm_decode_opts o;
    cllm_decode_opts_init(&o);
    o.max_new_tokens = max_new;
    o.eos_id = m.cfg.eos_id;
    totals ar, ja;
    if (run(&f, &kv, ids, lens, np, &o, &ar, out, out_n)) goto fail;
    o.method = CLLM_DECODE_JACOBI;
    o.n = n;
    if (run(&f, &kv, ids, lens, np, &o, &ja, out, out_n)) goto fail;

    double ar_ms = ar.secs / ar.tokens * 1e3;
    printf("bench-decode: %s, %d prompts, <= %d new tokens, %d threads, n = %d\n", m.cfg.name, np,
           max_new, threads, n);
    printf("memory read bandwidth      %8.2f GB/s (%d threads, 1 GiB sum)\n", bw, threads);
    printf("fp32 weight bytes          %8.1f MB -> floor %.2f ms/token\n", weight_bytes / 1e6, floor_ms);
    printf("AR                         %8.2f tokens/s  %7.2f ms/token  %.2fx floor  (%ld tokens)\n",
           ar.tokens / ar.secs, ar_ms, ar_ms / floor_ms, ar.tokens);
    printf("Jacobi n=%-3d               %8.2f tokens/s  %7.2f ms/step   %.3f tokens/step  "
           "%.2fx AR speed\n", n, ja.tokens / ja.secs, ja.secs / ja.steps * 1e3,
           (double)ja.tokens / ja.steps, (ja.tokens / ja.secs) / (ar.tokens / ar.secs));
    cllm_kv_free(&kv);
    cllm_fwd_free(&f);
    cllm_model_free(&m);
    for (int p = 0; p < np; p++) { free(ids[p]); free(out[p]); }
    free(ids); free(lens); free(out); free(out_n);
    return 0;
fail:
    fprintf(stderr, "bench-decode: %s\n", cllm_errmsg());
    return 1;
}
