/* test_cuda.c: the CUDA forward (libcore/cuda_backend.h) against the CPU
 * forward, and greedy Jacobi == greedy AR on the GPU.
 *
 * Without a CUDA build or without a device (cudaGetDeviceCount fails or
 * finds none) it prints "skip: ..." and exits 0: CI and this project's
 * development machines have no GPU; scripts/gpu-check.sh runs it on one.
 *
 *  - tiny random models (cllm_model_alloc + seeded weights; one Qwen2-like
 *    with q/k/v biases, separate LM head and RoPE on half of each head's
 *    dims, one LLaMA-like tied model with HS = 64 and GQA 3:1): prefill in
 *    chunks, AR steps, 16-token Jacobi blocks after a rollback, and a batch
 *    of sequences of different lengths in one call, every logits row
 *    compared with the CPU's, and every device argmax with the argmax of
 *    the device's own logits row (exactly); a 16-row call against 16
 *    one-row calls (the few-row path, and with CLLM_CUDA_FIXED_ORDER=1 the
 *    fixed-order products, each shown to be taken), the few-row path with
 *    programmatic dependent launch against it without, a 30-token prompt in
 *    one call against the same cut 13 + 17, and calls padded to a graph's
 *    row count against the same unpadded (bit for bit: these routes are
 *    batch-invariant);
 *  - the same models through forward.h's device dispatch (cllm_fwd_init_on
 *    with CLLM_DEVICE_CUDA): one ragged call (a Jacobi window, an AR step,
 *    a prompt chunk with only its last row through the LM head, a fresh
 *    prompt with none) against each sequence alone on the CPU, and cllm-traj's
 *    engine at --batch 8 against --batch 1 on the GPU (records equal);
 *  - SmolLM2-135M-Instruct ($CLLM_MODEL; skipped if it does not load): the
 *    logits of GSM8K prompts (tests/golden/gsm8k20_ids.txt) against the CPU
 *    (fp32, and with the GPU's bf16 roundings; --logits-only stops after
 *    these and the ragged batch: the emulation's quick look),
 *    a ragged batch against the CPU, greedy AR on the GPU vs the CPU (the
 *    GPU's greedy token equals the CPU's on >= 95 % of positions given the
 *    CPU's answer so far; free-running, they may part only at a near-tie, and
 *    the share of equal positions is printed), Jacobi (n = 16) vs AR on the GPU token for token, both
 *    through decode.c's cllm_decode unchanged on the device, and the
 *    trajectories of 8 prompts at --batch 8 vs --batch 1 on the GPU;
 *  - the argmax's rules (ties: the lowest id; all-negative rows; the
 *    products' partial last tiles; a matmul16 block with two output groups)
 *    on every route, expected ids from the definition (test_argmax_rules);
 *    a 10:2 head group with partial RoPE in two layers against the CPU,
 *    through a grown cache, a graph replayed on it, rollback's and the
 *    capacity's bounds (test_wide_gqa); in the tiny models an embedding row
 *    below RMSNorm's eps and attention scores past expf's range;
 *  - CLLM_TEST_CUDA_QUICK=1 skips the tiny models' cllm-traj engine runs
 *    (under the emulation they take most of the time: a quick look for
 *    mutation testing; every other check still runs);
 *  - with --bench: AR step and 16-token Jacobi step times on SmolLM2, their
 *    ratio (and without programmatic dependent launch, the same run's
 *    baseline), a 256-token AR run, 64-sequence x 16- and 9-token batched
 *    steps on the cuBLAS and fixed-order routes (fused epilogues or not, PDL
 *    or not), and cllm-traj's engine on the GPU at --batch 64 (trajectory
 *    tokens/s).
 * Tolerance: relative error <= 2e-2 per logits row (row_relerr: max abs
 * difference over the row's largest magnitude), for bf16 weights and
 * activations against fp32; 5e-2 for SmolLM2, whose 30 layers add more
 * rounding: under the CPU emulation (tests/cuemu, the GPU's algorithm with
 * its bf16 roundings) its first 3 prompts reach 2.7e-2 (3 rows of 239 over
 * 2e-2), of which bf16 weights alone make 1.2e-2; the CPU itself, rounding
 * to bf16 where the GPU does (CLLM_FWD_BF16), parts from its fp32 by 2.2e-2
 * (test_forward), so 2e-2 is under bf16's own floor on this model. The
 * SmolLM2 logits are also compared with that bf16 CPU (same bar; the
 * emulation: 2.6e-2). A token difference between Jacobi and AR (or
 * GPU and CPU) is a near-tie, reported but not failed, when the reference's
 * top-2 logit margin is <= 2e-2 of the row's scale.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "decode.h"
#include "err.h"
#include "forward.h"
#include "fwd_testutil.h"
#include "kernels.h"
#include "model.h"
#include "prompts.h"
#include "rng.h"
#include "stream.h"
#include "traj.h"

#if CLLM_CUDA
#include "cuda_backend.h"

#define TOL 2e-2
#define TOL_SMOLLM2 5e-2
/* the logits rows' tolerance of the model under test */
static double row_tol = TOL;

/* The device of the forward.h-dispatch checks: CUDA, or the CPU when the
 * harness checks itself without a GPU (--harness). */
static int test_device = CLLM_DEVICE_CUDA;
/* CLLM_TEST_CUDA_QUICK=1: skip the tiny models' cllm-traj engine runs (most of
 * the emulation's time) */
static int quick;
#define DEV_NAME (test_device == CLLM_DEVICE_CUDA ? "GPU" : "CPU")

/* B sequences of T tokens each through the ragged API. */
static int cuda_rect(cllm_cuda_fwd *f, cllm_cuda_kv *kv, int B, const int *seqs, const int *pos,
                     const int *tokens, int T, int lm_from) {
    cllm_fwd_seq s[64];
    if (B > 64) return CLLM_EINVAL;
    for (int b = 0; b < B; b++) s[b] = (cllm_fwd_seq){seqs[b], pos[b], T, lm_from};
    return cllm_cuda_forward_seqs(f, kv, s, B, tokens);
}

/* cllm_cuda_fwd_init with some CLLM_CUDA_* switches ("NAME=VALUE" strings,
 * NULL-terminated) set for this state alone: the environment's own values
 * (gpu-check exports some to run everything without a change) are put back
 * afterwards, so a switch set from outside holds for the whole run. */
static int fwd_init_with(cllm_cuda_fwd *f, const cllm_cuda_model *dm, int rows, int flags, const char *const *env) {
    enum { MAXV = 4 };
    char name[MAXV][64], *old[MAXV] = {NULL};
    int n = 0, rc = 0;
    for (; env[n]; n++) {
        if (n == MAXV) {   /* more than this helper keeps: a test's mistake */
            rc = CLLM_EINVAL;
            break;
        }
        const char *eq = strchr(env[n], '=');
        if (!eq) {
            rc = CLLM_EINVAL;
            break;
        }
        snprintf(name[n], sizeof name[n], "%.*s", (int)(eq - env[n]), env[n]);
        const char *v = getenv(name[n]);
        old[n] = v ? strdup(v) : NULL;
        if (setenv(name[n], eq + 1, 1)) rc = CLLM_EINVAL;
    }
    if (!rc) rc = cllm_cuda_fwd_init(f, dm, rows, flags);
    for (int i = n - 1; i >= 0; i--) {
        if (old[i]) setenv(name[i], old[i], 1);
        else unsetenv(name[i]);
        free(old[i]);
    }
    return rc;
}
#define ENV(...) ((const char *const[]){__VA_ARGS__, NULL})

/* CLLM_CUDA_GEMM_ROWS as the backend reads it: G >= 0 when set (every
 * cuBLAS product in G-row pieces; 0: one call), else -1 */
static int env_gemm_rows(void) {
    const char *gr = getenv("CLLM_CUDA_GEMM_ROWS");
    int g = gr && *gr ? atoi(gr) : -1;
    return g >= 0 && g <= 4096 ? g : -1;
}

/* Compare rows [from, T) of GPU and CPU logits; returns the worst relerr.
 * The GPU's argmax (argmax.cu, or the LM head's fused one on the few-row
 * path) must be exactly the CPU's argmax rule applied to the GPU's logits;
 * against the CPU's own argmax only the count of differences is reported
 * (near-ties may part within the logits' tolerance). */
static double cmp_rows(const char *what, const float *gpu, const int *gam, const float *cpu,
                       const int *cam, int from, int T, int V, int *argmax_diff) {
    double worst = 0;
    for (int t = from; t < T; t++) {
        double e = row_relerr(gpu + (size_t)t * V, cpu + (size_t)t * V, V);
        if (e > worst) worst = e;
        CHECK_MSG(e <= row_tol, "%s: row %d: relerr %.3g", what, t, e);
        int own;
        argmax_forward(&own, gpu + (size_t)t * V, 1, V);
        CHECK_MSG(gam[t] == own, "%s: row %d: device argmax %d, its logits' argmax %d", what, t, gam[t], own);
        if (gam[t] != cam[t]) (*argmax_diff)++;
    }
    return worst;
}

/* One step on both backends, compared. */
static double step_both(const char *what, cllm_fwd *cf, cllm_kv *ck, cllm_cuda_fwd *gf,
                        cllm_cuda_kv *gk, int seq, int pos, const int *tok, int T, int lm_from,
                        int *diff) {
    int V = cf->m->cfg.vocab;
    CHECK_OK(cllm_forward(cf, ck, seq, pos, tok, T, lm_from));
    CHECK_OK(cllm_cuda_forward(gf, gk, seq, pos, tok, T, lm_from));
    CHECK_EQ_INT(cllm_cuda_kv_len(gk, seq), cllm_kv_len(ck, seq));
    return cmp_rows(what, gf->logits, gf->argmax, cf->logits, cf->argmax, lm_from, T, V, diff);
}

/* A ragged batch through forward.h on the device against each sequence alone
 * on the CPU: a 16-token Jacobi window, an AR step, a prompt chunk whose last
 * row alone goes through the LM head, and a fresh prompt with no LM rows. */
static void test_ragged(const char *name, const cllm_model *m) {
    int V = m->cfg.vocab;
    enum { NS = 4 };
    const int hist[NS] = {40, 9, 30, 0}, newT[NS] = {16, 1, 12, 7}, lmf[NS] = {0, 0, 11, 7};
    const int seqs[NS] = {2, 0, 3, 1};
    int tok[NS][64];
    for (int b = 0; b < NS; b++)
        for (int i = 0; i < 64; i++) tok[b][i] = (i * 31 + b * 17 + 3) % V;
    cllm_fwd gf, cf;
    cllm_kv gk, ck;
    CHECK_OK(cllm_fwd_init_on(&gf, m, 64, test_device, CLLM_FWD_LOGITS));
    CHECK_OK(cllm_fwd_init(&cf, m, 64));
    CHECK_OK(cllm_kv_init_for(&gk, &gf, NS, 128));
    CHECK_OK(cllm_kv_init(&ck, &m->cfg, NS, 128));
    if (check_failures) goto out;
    for (int b = 0; b < NS; b++)
        if (hist[b]) {
            CHECK_OK(cllm_forward(&gf, &gk, seqs[b], 0, tok[b], hist[b], hist[b]));
            CHECK_OK(cllm_forward(&cf, &ck, seqs[b], 0, tok[b], hist[b], hist[b]));
        }
    cllm_fwd_seq s[NS];
    int in[64], R = 0, row0[NS], diff = 0;
    for (int b = 0; b < NS; b++) {
        s[b] = (cllm_fwd_seq){seqs[b], hist[b], newT[b], lmf[b]};
        row0[b] = R;
        memcpy(in + R, tok[b] + hist[b], (size_t)newT[b] * sizeof(int));
        R += newT[b];
    }
    CHECK_OK(cllm_forward_batch(&gf, &gk, s, NS, in));
    double worst = 0;
    for (int b = 0; b < NS && !check_failures; b++) {
        CHECK_OK(cllm_forward(&cf, &ck, seqs[b], hist[b], tok[b] + hist[b], newT[b], lmf[b]));
        CHECK_EQ_INT(cllm_kv_len(&gk, seqs[b]), hist[b] + newT[b]);
        for (int t = lmf[b]; t < newT[b]; t++) {
            double e = row_relerr(gf.logits + (size_t)(row0[b] + t) * V, cf.logits + (size_t)t * V, V);
            if (e > worst) worst = e;
            CHECK_MSG(e <= row_tol, "%s ragged: sequence %d row %d: relerr %.3g", name, b, t, e);
            diff += gf.argmax[row0[b] + t] != cf.argmax[t];
        }
    }
    printf("%s: ragged batch (%d rows) on the %s vs each sequence alone on the CPU: worst row relerr %.3g, "
           "%d argmax differences\n", name, R, DEV_NAME, worst, diff);
out:
    cllm_kv_free(&gk);
    cllm_kv_free(&ck);
    cllm_fwd_free(&gf);
    cllm_fwd_free(&cf);
    TEST_OK("ragged");
}

/* Records of two streams, byte for byte; 1 when equal (a message otherwise). */
static int streams_equal(const char *a, const char *b) {
    cllm_reader *ra = NULL, *rb = NULL;
    int eq = 0;
    if (cllm_reader_open(&ra, a) || cllm_reader_open(&rb, b)) {
        printf("streams_equal: %s\n", cllm_errmsg());
        goto out;
    }
    for (uint64_t i = 0;; i++) {
        cllm_record x, y;
        int ea = cllm_reader_next(ra, &x);
        uint8_t *keep = NULL;
        size_t klen = 0;
        if (!ea) {
            klen = x.raw_len;
            keep = malloc(klen ? klen : 1);
            if (keep) memcpy(keep, x.raw, klen);
        }
        int eb = cllm_reader_next(rb, &y);
        if (ea || eb) {
            eq = ea == CLLM_EOF && eb == CLLM_EOF;
            if (!eq) printf("streams_equal: record %llu: %s\n", (unsigned long long)i,
                            ea == CLLM_EOF || eb == CLLM_EOF ? "one stream is shorter" : cllm_errmsg());
            free(keep);
            break;
        }
        int same = keep && klen == y.raw_len && !memcmp(keep, y.raw, klen);
        free(keep);
        if (!same) {
            printf("streams_equal: record %llu differs\n", (unsigned long long)i);
            break;
        }
    }
out:
    cllm_reader_close(ra);
    cllm_reader_close(rb);
    return eq;
}

/* cllm-traj's engine on the GPU: prompts (JSONL of token ids) at batch 1 and
 * at batch_b. With `invariant` (--batch-invariant) the records must be equal;
 * without it (every product through cuBLAS) whether they are is printed
 * (cuBLAS picks its sums by shape: near-ties may fall the other way). Returns
 * the trajectory tokens/s of the batched run (0 on failure). */
/* route: 0 cllm-traj's default (every product through cuBLAS: one route, so
 * the prompt chunks share the windows' calls), 1 --batch-invariant (the
 * fixed-order kernel for every call: one route), 2 the route by call
 * (CLLM_CUDA_GEMM_ROWS=-1: the windows through cuBLAS, the prompt chunks in
 * calls of their own through the fixed-order kernel) */
enum { ROUTE_DEFAULT, ROUTE_INVARIANT, ROUTE_SPLIT };
static const char *const route_name[] = {"", " (batch-invariant)", " (CLLM_CUDA_GEMM_ROWS=-1: prompt calls of their own)"};

static double traj_batches(const char *name, const cllm_model *m, const char *jsonl, int n, int new_tokens,
                           int batch_b, int route, int compare) {
    int invariant = route == ROUTE_INVARIANT, one_route = route != ROUTE_SPLIT;
    char out1[64], outb[64];
    snprintf(out1, sizeof out1, "/tmp/test_cuda_traj1.%d", (int)getpid());
    snprintf(outb, sizeof outb, "/tmp/test_cuda_trajb.%d", (int)getpid());
    char *argv[] = {"test_cuda", NULL};
    double rate = 0;
    /* the route by call: only the batch's run (its calls a tick); its records may part from
     * --batch 1's at near-ties on a GPU, as the default's may. !compare: the batch's run alone */
    int k0 = route == ROUTE_SPLIT || !compare;
    for (int k = k0; k < 2; k++) {
        cllm_prompt_opts po;
        memset(&po, 0, sizeof po);
        cllm_prompts *src = NULL;
        int rc = cllm_prompts_open(&src, jsonl, &po, m->tok);
        CHECK_OK(rc);
        if (rc) return 0;
        cllm_traj_opts o;
        cllm_traj_opts_init(&o);
        o.n = n;
        o.max_new_tokens = new_tokens;
        o.batch = k ? batch_b : 1;
        o.batch_invariant = invariant;
        o.device = test_device;
        /* the route by call, whatever CLLM_CUDA_GEMM_ROWS the run was given (restored below) */
        const char *outer = getenv("CLLM_CUDA_GEMM_ROWS");
        char *kept = outer ? strdup(outer) : NULL;
        if (route == ROUTE_SPLIT) setenv("CLLM_CUDA_GEMM_ROWS", "-1", 1);
        o.output = k ? outb : out1;
        o.force = 1;
        o.argc = 1;
        o.argv = argv;
        cllm_traj_stats st;
        double t0 = cllm_now_s();
        CHECK_OK(cllm_traj_run(m, src, &o, &st));
        double dt = cllm_now_s() - t0;
        if (route == ROUTE_SPLIT) {
            if (kept) setenv("CLLM_CUDA_GEMM_ROWS", kept, 1);
            else unsetenv("CLLM_CUDA_GEMM_ROWS");
        }
        free(kept);
        cllm_prompts_close(src);
        printf("%s: cllm-traj engine on the %s%s, batch %d: %llu prompts, %llu tokens, %llu forwards in %llu "
               "calls (%llu for the row limit) over %llu ticks, %.3f s = %.0f trajectory tokens/s\n", name, DEV_NAME,
               route_name[route], o.batch, (unsigned long long)st.prompts, (unsigned long long)st.tokens,
               (unsigned long long)st.forwards, (unsigned long long)st.calls, (unsigned long long)st.limit_calls,
               (unsigned long long)st.ticks, dt, st.tokens / dt);
        if (k) rate = st.tokens / dt;
        /* the route taken: one route for every call (the default's cuBLAS, or the fixed-order
         * kernel) lets a tick's prompt chunks share the windows' call: one call a tick, and one
         * more for each time its rows exceeded the call's limit (limit_calls); the route by
         * call gives them calls of their own, so a batch whose prompts start while others
         * iterate makes more (traj.c made to ignore cllm_fwd_one_route fails one or the other).
         * Exact counts: on a GPU, a 40th of the ticks as the margin failed on SmolLM2 (284
         * calls over 273 ticks on the fixed-order route, round 7: the
         * other 11 were the row limit's). (On the CPU, one route always.) */
        if (k && (one_route || test_device != CLLM_DEVICE_CUDA))
            CHECK_MSG(st.calls == st.ticks + st.limit_calls, "%s: one route%s: %llu calls (%llu for the row limit) "
                      "over %llu ticks", name, route_name[route], (unsigned long long)st.calls,
                      (unsigned long long)st.limit_calls, (unsigned long long)st.ticks);
        if (k && !one_route && test_device == CLLM_DEVICE_CUDA)
            CHECK_MSG(st.calls > st.ticks + st.limit_calls, "%s: the route by call shared a tick's calls: %llu calls "
                      "(%llu for the row limit) over %llu ticks", name, (unsigned long long)st.calls,
                      (unsigned long long)st.limit_calls, (unsigned long long)st.ticks);
    }
    if (k0) {
        unlink(outb);
        return rate;
    }
    int eq = streams_equal(out1, outb);
    if (invariant)
        CHECK_MSG(eq, "%s: cllm-traj --batch-invariant --batch %d records differ from --batch 1 on the %s", name,
                  batch_b, DEV_NAME);
    else
        printf("%s: cllm-traj engine%s, --batch %d records %s --batch 1's\n", name, route_name[route], batch_b,
               eq ? "equal" : "differ from");
    unlink(out1);
    unlink(outb);
    return rate;
}

/* prompts (n, lens) as a JSONL file of token ids; returns its path (static). */
static const char *ids_jsonl(int **ids, const int *lens, int n, int repeat) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_cuda_prompts.%d.jsonl", (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    for (int r = 0; r < repeat; r++)
        for (int i = 0; i < n; i++) {
            fputs("{\"tokens\":[", f);
            for (int j = 0; j < lens[i]; j++) fprintf(f, "%s%d", j ? "," : "", ids[i][j]);
            fputs("]}\n", f);
        }
    return fclose(f) ? NULL : path;
}

static void test_random(const char *name, const cllm_config *c, uint64_t seed) {
    cllm_model m;
    if (random_model(&m, c, seed)) { CHECK_MSG(0, "%s: alloc: %s", name, cllm_errmsg()); return; }
    /* RMSNorm's eps where it is not negligible: token SMALL_TOK's embedding
     * scaled by 1e-2 (mean square ~2e-7, against eps 1e-6 or 1e-5), the
     * first token of the prompt (the bulk route's rmsnorm.cu) and the AR step
     * at 60 (the few-row path's fused norm) */
    enum { SMALL_TOK = 3 };
    for (int k = 0; k < c->d_model; k++) m.tok_emb[(size_t)SMALL_TOK * c->d_model + k] *= 1e-2f;
    /* Softmax's max subtraction: with q/k biases and dims RoPE leaves alone
     * (the Qwen2-like model), the last dim of every head gets q = k = 64
     * exactly (zero weight rows, bias 64): every score gains 64 * 64 /
     * sqrt(HS) (724 at HS = 32), past expf's range (88), and the softmax is
     * the same (a constant per row cancels) */
    if (c->qkv_bias && c->rope_dim < c->head_dim)
        for (int l = 0; l < c->n_layer; l++) {
            cllm_layer_weights *lw = &m.layers[l];
            for (int h = 0; h < c->n_head + c->n_head_kv; h++) {   /* q's heads, then k's */
                int q = h < c->n_head, d = (q ? h : h - c->n_head) * c->head_dim + c->head_dim - 1;
                memset((q ? lw->wq : lw->wk) + (size_t)d * c->d_model, 0, (size_t)c->d_model * sizeof(float));
                (q ? lw->bq : lw->bk)[d] = 64.0f;
            }
        }
    cllm_cuda_model *dm = NULL;
    int rc = cllm_cuda_model_upload(&dm, &m);
    CHECK_OK(rc);
    if (rc) { cllm_model_free(&m); return; }
    int V = c->vocab, N = 120;
    cllm_fwd cf;
    cllm_kv ck;
    cllm_cuda_fwd gf;
    cllm_cuda_kv gk;
    CHECK_OK(cllm_fwd_init(&cf, &m, 64));
    CHECK_OK(cllm_kv_init(&ck, c, 3, 256));
    CHECK_OK(cllm_cuda_fwd_init(&gf, dm, 64, 1));
    CHECK_OK(cllm_cuda_kv_init(&gk, dm, 3, 256));
    if (check_failures) goto out;
    int tok[128];
    cllm_rng r;
    cllm_rng_seed(&r, seed + 1);
    for (int i = 0; i < N; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    tok[0] = tok[60] = SMALL_TOK;
    double worst = 0, e;
    int diff = 0;
    /* prefill in two chunks (all rows, then the last only), sequence 1 */
    e = step_both("prefill a", &cf, &ck, &gf, &gk, 1, 0, tok, 37, 0, &diff); if (e > worst) worst = e;
    e = step_both("prefill b", &cf, &ck, &gf, &gk, 1, 37, tok + 37, 23, 22, &diff); if (e > worst) worst = e;
    /* AR steps */
    for (int p = 60; p < 66; p++) {
        e = step_both("ar", &cf, &ck, &gf, &gk, 1, p, tok + p, 1, 0, &diff); if (e > worst) worst = e;
    }
    /* a 16-token block, a rollback into it, another block (Jacobi's pattern) */
    e = step_both("block", &cf, &ck, &gf, &gk, 1, 66, tok + 66, 16, 0, &diff); if (e > worst) worst = e;
    CHECK_OK(cllm_kv_rollback(&ck, 1, 70));
    CHECK_OK(cllm_cuda_kv_rollback(&gk, 1, 70));
    e = step_both("block after rollback", &cf, &ck, &gf, &gk, 1, 70, tok + 90, 16, 0, &diff); if (e > worst) worst = e;
    /* the decode attention's other block sizes (CLLM_CUDA_ATT_THREADS), the same block again */
    for (int k = 0; k < 2 && !check_failures; k++) {
        cllm_cuda_fwd xf;
        int rc_x = fwd_init_with(&xf, dm, 64, 1, ENV(k ? "CLLM_CUDA_ATT_THREADS=512" : "CLLM_CUDA_ATT_THREADS=128"));
        CHECK_OK(rc_x);
        if (rc_x) break;
        CHECK_OK(cllm_kv_rollback(&ck, 1, 70));
        CHECK_OK(cllm_cuda_kv_rollback(&gk, 1, 70));
        e = step_both(k ? "block, attention 512 threads" : "block, attention 128 threads", &cf, &ck, &xf, &gk, 1, 70,
                      tok + 90, 16, 0, &diff);
        if (e > worst) worst = e;
        cllm_cuda_fwd_free(&xf);
    }
    {   /* pinned host memory that runs out (the emulator's fault injection; a GPU has
         * none, so there the state is made and freed): the message names the call, the
         * bytes asked and what for, as for device memory */
        char dev[128] = "";
        cllm_cuda_fwd xf;
        int emulated = !cllm_cuda_device_name(dev, sizeof dev) && strstr(dev, "cuemu") != NULL;
        int rc_p = fwd_init_with(&xf, dm, 64, 1, ENV("CUEMU_PINNED_FAIL=1"));
        if (emulated)
            CHECK_MSG(rc_p == CLLM_ENOMEM && strstr(cllm_errmsg(), "cudaMallocHost(") &&
                          strstr(cllm_errmsg(), " bytes) for ") && strstr(cllm_errmsg(), "pinned host memory"),
                      "%d: %s", rc_p, rc_p ? cllm_errmsg() : "made");
        else if (!rc_p)
            cllm_cuda_fwd_free(&xf);
    }
    {
        cllm_cuda_fwd xf;   /* not a block size: refused */
        CHECK(fwd_init_with(&xf, dm, 64, 1, ENV("CLLM_CUDA_ATT_THREADS=100")) == CLLM_EINVAL);
        CHECK(fwd_init_with(&xf, dm, 64, 1, ENV("CLLM_CUDA_MT_ROWS=96")) == CLLM_EINVAL);   /* not a row tile */
        /* K slices: a multiple of 16 (the mma's k-step), 0..65536; a workspace of 1..65535 rows */
        CHECK(fwd_init_with(&xf, dm, 64, 1, ENV("CLLM_CUDA_MT_KSLICE=100")) == CLLM_EINVAL);
        CHECK(fwd_init_with(&xf, dm, 64, 1, ENV("CLLM_CUDA_MT_KSLICE=-16")) == CLLM_EINVAL);
        CHECK(fwd_init_with(&xf, dm, 64, 1, ENV("CLLM_CUDA_MT_KSLICE=64x")) == CLLM_EINVAL);
        CHECK(fwd_init_with(&xf, dm, 64, 1, ENV("CLLM_CUDA_MT_WS_ROWS=0")) == CLLM_EINVAL);
        /* numbers are whole numbers (atoi read "128x" as 128, "16k" as 16), switches 0 or 1:
         * read as "1 or not", CLLM_CUDA_FIXED_ORDER=on turned --batch-invariant's route off,
         * read as "0 or not", CLLM_CUDA_GRAPHS=off left graphs on */
        const char *bad_env[] = {"CLLM_CUDA_ATT_THREADS=128x", "CLLM_CUDA_MT_WS_ROWS=16k", "CLLM_CUDA_FIXED_ORDER=on",
                                 "CLLM_CUDA_FIXED_ORDER=true", "CLLM_CUDA_GRAPHS=off", "CLLM_CUDA_MM16=false",
                                 "CLLM_CUDA_PDL=no", "CLLM_CUDA_FUSE=2", "CLLM_CUDA_LDSM= 0", "CLLM_CUDA_ATTENTION=yes"};
        for (size_t i = 0; i < sizeof bad_env / sizeof bad_env[0]; i++) {
            int rc_e = fwd_init_with(&xf, dm, 64, CLLM_CUDA_FWD_INVARIANT, ENV(bad_env[i]));
            const char *eq = strchr(bad_env[i], '=');
            CHECK_MSG(rc_e == CLLM_EINVAL && !strncmp(cllm_errmsg(), bad_env[i], (size_t)(eq - bad_env[i])),
                      "%s: %d (%s)", bad_env[i], rc_e, rc_e ? cllm_errmsg() : "taken");
            if (!rc_e) cllm_cuda_fwd_free(&xf);
        }
        /* ... and 0, 1 and empty (the default) still mean what they did */
        const char *fo_env[] = {"CLLM_CUDA_FIXED_ORDER=0", "CLLM_CUDA_FIXED_ORDER=1", "CLLM_CUDA_FIXED_ORDER="};
        for (int i = 0; i < 3 && !check_failures && env_gemm_rows() < 0; i++) {
            CHECK_OK(fwd_init_with(&xf, dm, 64, CLLM_CUDA_FWD_INVARIANT, ENV(fo_env[i])));
            if (check_failures) break;
            CHECK_MSG(cllm_cuda_fwd_batch_invariant(&xf) == (i > 0), "%s: batch-invariant %d", fo_env[i],
                      cllm_cuda_fwd_batch_invariant(&xf));
            cllm_cuda_fwd_free(&xf);
        }
    }
    CHECK_OK(cllm_kv_rollback(&ck, 1, 70));   /* the cache as the default state writes it, for what follows */
    CHECK_OK(cllm_cuda_kv_rollback(&gk, 1, 70));
    e = step_both("block again", &cf, &ck, &gf, &gk, 1, 70, tok + 90, 16, 0, &diff); if (e > worst) worst = e;
    /* a full 64-row call, sequence 2 */
    e = step_both("64 rows", &cf, &ck, &gf, &gk, 2, 0, tok + 10, 64, 0, &diff); if (e > worst) worst = e;

    /* batch: sequences 0, 1, 2 at different lengths, 4 tokens each, in one call */
    {
        CHECK_OK(cllm_cuda_forward(&gf, &gk, 0, 0, tok + 5, 9, 9));   /* sequence 0: 9 cached */
        CHECK_OK(cllm_forward(&cf, &ck, 0, 0, tok + 5, 9, 9));
        int seqs[3] = {2, 0, 1}, pos[3] = {64, 9, 86}, bt[12];
        for (int i = 0; i < 12; i++) bt[i] = tok[100 + i];
        CHECK_OK(cuda_rect(&gf, &gk, 3, seqs, pos, bt, 4, 0));
        for (int b = 0; b < 3; b++) {
            CHECK_OK(cllm_forward(&cf, &ck, seqs[b], pos[b], bt + 4 * b, 4, 0));
            CHECK_EQ_INT(cllm_cuda_kv_len(&gk, seqs[b]), pos[b] + 4);
            e = cmp_rows("batch", gf.logits + (size_t)4 * b * V, gf.argmax + 4 * b, cf.logits, cf.argmax,
                         0, 4, V, &diff);
            if (e > worst) worst = e;
        }
    }
    /* The few-row path (matmul16.cu, calls of up to 16 rows) is
     * batch-invariant by construction: a 16-row call (a Jacobi window) gives
     * each row exactly, bit for bit, what 16 one-row calls (AR steps) give,
     * logits and cache alike (checked again by the next call reading it). */
    {
        const char *mm = getenv("CLLM_CUDA_MM16");
        int few = !(mm && !strcmp(mm, "0"));
        /* the cuBLAS route is batch-invariant too when its products go in
         * fixed G-row pieces: every other kernel of it (attention included)
         * computes a row from that row alone */
        int invariant = few || env_gemm_rows() > 0;
        size_t n = (size_t)16 * V;
        float *block = malloc(n * sizeof(float)), *steps = malloc(n * sizeof(float));
        float *next_a = malloc((size_t)V * sizeof(float));
        CHECK(block && steps && next_a);
        if (block && steps && next_a) {
            CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 40));
            CHECK_OK(cllm_cuda_forward(&gf, &gk, 2, 40, tok + 20, 16, 0));
            memcpy(block, gf.logits, n * sizeof(float));
            CHECK_OK(cllm_cuda_forward(&gf, &gk, 2, 56, tok + 3, 1, 0));
            memcpy(next_a, gf.logits, (size_t)V * sizeof(float));
            CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 40));
            for (int t = 0; t < 16; t++) {
                CHECK_OK(cllm_cuda_forward(&gf, &gk, 2, 40 + t, tok + 20 + t, 1, 0));
                memcpy(steps + (size_t)t * V, gf.logits, (size_t)V * sizeof(float));
            }
            CHECK_OK(cllm_cuda_forward(&gf, &gk, 2, 56, tok + 3, 1, 0));
            int same = !memcmp(block, steps, n * sizeof(float)) && !memcmp(next_a, gf.logits, (size_t)V * sizeof(float));
            printf("%s: a 16-row call vs 16 one-row calls: %s%s\n", name, same ? "bit-identical" : "differ",
                   invariant ? "" : " (cuBLAS route in one piece: not required)");
            if (invariant) CHECK_MSG(same, "%s: the %s route is not batch-invariant", name, few ? "few-row" : "cuBLAS");
            /* The few-row path's kernels start while their predecessor runs
             * (programmatic dependent launch, on unless CLLM_CUDA_PDL=0); a
             * kernel touching its predecessor's output before its wait would
             * show here as other bits than the same calls launched one after
             * another (on a GPU: the emulation runs grids in turn and only
             * checks that every thread waits) */
            if (few) {
                cllm_cuda_fwd pf;
                int rc_p = cllm_cuda_fwd_init(&pf, dm, 64, CLLM_CUDA_FWD_LOGITS | CLLM_CUDA_FWD_NO_PDL);
                CHECK_OK(rc_p);
                if (!rc_p) {
                    CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 40));
                    CHECK_OK(cllm_cuda_forward(&pf, &gk, 2, 40, tok + 20, 16, 0));
                    int same_p = !memcmp(block, pf.logits, n * sizeof(float));
                    CHECK_OK(cllm_cuda_forward(&pf, &gk, 2, 56, tok + 3, 1, 0));
                    same_p = same_p && !memcmp(next_a, pf.logits, (size_t)V * sizeof(float));
                    printf("%s: the few-row path without programmatic dependent launch: %s\n", name,
                           same_p ? "bit-identical" : "differs");
                    CHECK_MSG(same_p, "%s: the few-row path gives other bits with programmatic dependent launch "
                              "than without", name);
                    cllm_cuda_fwd_free(&pf);
                }
            }
            /* ... and it is a route of its own: the same call through cuBLAS
             * (CLLM_CUDA_MM16=0) sums in another order, so its bits differ;
             * equal bits would mean the default never took the few-row path */
            cllm_cuda_fwd bf;
            if (few) {
                int rc_b = fwd_init_with(&bf, dm, 64, CLLM_CUDA_FWD_LOGITS, ENV("CLLM_CUDA_MM16=0"));
                CHECK_OK(rc_b);
                if (!rc_b) {
                    CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 40));
                    CHECK_OK(cllm_cuda_forward(&bf, &gk, 2, 40, tok + 20, 16, 0));
                    CHECK_MSG(memcmp(block, bf.logits, n * sizeof(float)) != 0,
                              "%s: a 16-row call gives cuBLAS' bits: the few-row path was not taken", name);
                    memcpy(steps, bf.logits, n * sizeof(float));   /* cuBLAS' bits, for below */
                    cllm_cuda_fwd_free(&bf);
                }
            }
            /* CLLM_CUDA_FIXED_ORDER=1 with the few-row path off: decoding calls
             * through matmul.cu's fixed-order product, batch-invariant by
             * construction (a 16-row call == 16 one-row calls) and a route of
             * its own (not cuBLAS' bits, which steps holds now) */
            if (few) {
                int rc_f = fwd_init_with(&bf, dm, 64, CLLM_CUDA_FWD_LOGITS, ENV("CLLM_CUDA_MM16=0", "CLLM_CUDA_FIXED_ORDER=1"));
                CHECK_OK(rc_f);
                if (!rc_f) {
                    unsigned long long l64, l128, m64, m128;
                    cllm_cuda_fixed_order_launches(&l64, &l128);
                    CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 40));
                    CHECK_OK(cllm_cuda_forward(&bf, &gk, 2, 40, tok + 20, 16, 0));
                    memcpy(block, bf.logits, n * sizeof(float));
                    cllm_cuda_fixed_order_launches(&m64, &m128);
                    /* the launch counter, not the bits, says the route was taken: on
                     * an H200 cuBLAS summed tiny_qwen2_like's narrow products in the
                     * same order as the fixed-order kernel (the same bits) */
                    CHECK_MSG(m64 + m128 > l64 + l128,
                              "%s: CLLM_CUDA_FIXED_ORDER=1 launched no fixed-order product: the path was not taken", name);
                    printf("%s: CLLM_CUDA_FIXED_ORDER=1 vs cuBLAS, a 16-row call: %s\n", name,
                           memcmp(block, steps, n * sizeof(float)) ? "other bits" : "the same bits");
                    CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 40));
                    for (int t = 0; t < 16; t++) {
                        CHECK_OK(cllm_cuda_forward(&bf, &gk, 2, 40 + t, tok + 20 + t, 1, 0));
                        memcpy(steps + (size_t)t * V, bf.logits, (size_t)V * sizeof(float));
                    }
                    int same_f = !memcmp(block, steps, n * sizeof(float));
                    printf("%s: CLLM_CUDA_FIXED_ORDER=1, a 16-row call vs 16 one-row calls: %s\n", name,
                           same_f ? "bit-identical" : "differ");
                    CHECK_MSG(same_f, "%s: the fixed-order route is not batch-invariant", name);
                    cllm_cuda_fwd_free(&bf);
                }
            }
        }
        free(block);
        free(steps);
        free(next_a);
    }
    /* Prompt calls (some rows without the LM head) take matmul.cu's
     * fixed-order products and the tiled attention: a prompt's last logits
     * and its cache must not depend on how it was cut into calls (one call
     * of 30 rows, or 13 + 17), so a prompt's answer does not depend on the
     * batch that cut it. Required unless CLLM_CUDA_GEMM_ROWS=0 asks for one
     * cuBLAS call per product. */
    {
        int required = env_gemm_rows() != 0;
        float *one = malloc(2 * (size_t)V * sizeof(float)), *cut = malloc(2 * (size_t)V * sizeof(float));
        CHECK(one && cut);
        if (one && cut) {
            CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 0));
            CHECK_OK(cllm_cuda_forward(&gf, &gk, 2, 0, tok, 30, 29));
            memcpy(one, gf.logits + (size_t)29 * V, (size_t)V * sizeof(float));
            CHECK_OK(cllm_cuda_forward(&gf, &gk, 2, 30, tok + 30, 1, 0));
            memcpy(one + V, gf.logits, (size_t)V * sizeof(float));
            CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 0));
            CHECK_OK(cllm_cuda_forward(&gf, &gk, 2, 0, tok, 13, 13));
            CHECK_OK(cllm_cuda_forward(&gf, &gk, 2, 13, tok + 13, 17, 16));
            memcpy(cut, gf.logits + (size_t)16 * V, (size_t)V * sizeof(float));
            CHECK_OK(cllm_cuda_forward(&gf, &gk, 2, 30, tok + 30, 1, 0));
            memcpy(cut + V, gf.logits, (size_t)V * sizeof(float));
            int same = !memcmp(one, cut, 2 * (size_t)V * sizeof(float));
            printf("%s: a 30-token prompt in one call vs cut 13 + 17: %s%s\n", name,
                   same ? "bit-identical" : "differ", required ? "" : " (one cuBLAS call: not required)");
            if (required) CHECK_MSG(same, "%s: a prompt's logits or cache depend on how it was cut", name);
        }
        free(one);
        free(cut);
    }
    /* Calls that replay graphs are padded to a few row counts (padding rows
     * in the cache's scratch sequence, through the same kernels); on the
     * batch-invariant routes a padded call gives its real rows, and their
     * cache rows, what the unpadded call gives, bit for bit: a 30-row prompt
     * call (fixed-order products), and with CLLM_CUDA_FIXED_ORDER=1 a call
     * of 20 rows all through the LM head (a window call, padded with LM-head
     * rows), and a 20-row call whose last 10 rows go through the LM head (a
     * window and a prompt chunk in one call: the first 6 padding rows bring
     * the LM-head rows to 16); each followed by a step of the unpadded state
     * reading the cache.
     * The states without logits pad (graphs) and, on the fixed-order route,
     * take the argmax in the LM head's epilogue; those with logits never do
     * either, so this also checks that argmax against the separate one. */
    {
        int graphs = !(getenv("CLLM_CUDA_GRAPHS") && !strcmp(getenv("CLLM_CUDA_GRAPHS"), "0"));
        int required = env_gemm_rows() != 0;
        float *ref = malloc((size_t)V * sizeof(float));
        CHECK(ref != NULL);
        for (int kind = 0; ref && kind < 3 && !check_failures; kind++) {
            int T = kind ? 20 : 30, lm_from = kind == 0 ? 29 : kind == 1 ? 0 : 10, am_pad[20], am_ref[20];
            cllm_cuda_fwd pf, uf;   /* padded (no logits), unpadded (logits) */
            const char *const *fo = kind ? ENV("CLLM_CUDA_FIXED_ORDER=1") : (const char *const[]){NULL};
            int rc_p = fwd_init_with(&pf, dm, 64, 0, fo), rc_u = fwd_init_with(&uf, dm, 64, CLLM_CUDA_FWD_LOGITS, fo);
            CHECK_OK(rc_p);
            CHECK_OK(rc_u);
            if (!rc_p && !rc_u) {
                for (int rep = 0; rep < 3; rep++) {   /* the third replays the graph captured at the second */
                    CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 0));
                    CHECK_OK(cllm_cuda_forward(&pf, &gk, 2, 0, tok, T, lm_from));
                }
                memcpy(am_pad, pf.argmax + lm_from, (size_t)(T - lm_from) * sizeof(int));
                CHECK_OK(cllm_cuda_forward(&uf, &gk, 2, T, tok + T, 1, 0));
                memcpy(ref, uf.logits, (size_t)V * sizeof(float));
                CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 0));
                CHECK_OK(cllm_cuda_forward(&uf, &gk, 2, 0, tok, T, lm_from));
                memcpy(am_ref, uf.argmax + lm_from, (size_t)(T - lm_from) * sizeof(int));
                CHECK_OK(cllm_cuda_forward(&uf, &gk, 2, T, tok + T, 1, 0));
                unsigned long long pad = cllm_cuda_fwd_pad_rows(&pf);
                int same = !memcmp(am_pad, am_ref, (size_t)(T - lm_from) * sizeof(int)) &&
                           !memcmp(ref, uf.logits, (size_t)V * sizeof(float));
                printf("%s: a %d-row %s call padded with %llu rows in 3 calls vs unpadded: %s\n", name, T,
                       kind == 0 ? "prompt" : kind == 1 ? "window (CLLM_CUDA_FIXED_ORDER=1)" : "mixed (LM head from row 10)",
                       pad, same ? "bit-identical" : "differ");
                if (graphs) CHECK_MSG(pad == 3ull * (64 - T), "%s: %llu padding rows, expected %d", name, pad, 3 * (64 - T));
                if (required)
                    CHECK_MSG(same, "%s: a %d-row call, padded and without logits (argmax in the LM head's "
                              "epilogue), differs from it unpadded with logits", name, T);
            }
            if (!rc_p) cllm_cuda_fwd_free(&pf);
            if (!rc_u) cllm_cuda_fwd_free(&uf);
        }
        free(ref);
    }
    /* CLLM_CUDA_LM_HEAD=fixed: a call off the fixed-order route that wants no
     * logits (30 rows, each through the LM head) takes its LM head on the
     * fixed-order kernel, the argmax in its epilogue. Its sums are not
     * cuBLAS', so each row's id must be an argmax of the same call's cuBLAS
     * logits up to a near-tie (within 1e-4 of the row's largest magnitude: the
     * two sum the same bf16 products in fp32 in other orders, ~1e-6 apart), and
     * cuBLAS' own id where the row's top two are further apart than that. The
     * fixed-order kernel must have run (else this compares cuBLAS with
     * itself); other values of the variable are refused. */
    {
        enum { T = 30 };
        int am_fix[T], am_cub[T];
        cllm_cuda_fwd lf, bf;
        int rc_l = fwd_init_with(&lf, dm, 64, 0, ENV("CLLM_CUDA_LM_HEAD=fixed"));
        int rc_b2 = fwd_init_with(&bf, dm, 64, CLLM_CUDA_FWD_LOGITS, ENV("CLLM_CUDA_LM_HEAD=cublas"));
        CHECK_OK(rc_l);
        CHECK_OK(rc_b2);
        if (!rc_l && !rc_b2) {
            unsigned long long t64, t128, u64, u128;
            cllm_cuda_fixed_order_launches(&t64, &t128);
            CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 0));
            CHECK_OK(cllm_cuda_forward(&lf, &gk, 2, 0, tok, T, 0));
            cllm_cuda_fixed_order_launches(&u64, &u128);
            memcpy(am_fix, lf.argmax, sizeof am_fix);
            CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 0));
            CHECK_OK(cllm_cuda_forward(&bf, &gk, 2, 0, tok, T, 0));
            memcpy(am_cub, bf.argmax, sizeof am_cub);
            CHECK_MSG(u64 + u128 > t64 + t128, "%s: CLLM_CUDA_LM_HEAD=fixed launched no fixed-order product", name);
            int same = 0;
            for (int row_i = 0; row_i < T && !check_failures; row_i++) {
                const float *row = bf.logits + (size_t)row_i * V;
                float best = -INFINITY, second = -INFINITY, scale = 0;
                for (int v = 0; v < V; v++) {
                    if (fabsf(row[v]) > scale) scale = fabsf(row[v]);
                    if (row[v] > best) {
                        second = best;
                        best = row[v];
                    } else if (row[v] > second) second = row[v];
                }
                float tol = 1e-4f * scale;
                CHECK_MSG(am_fix[row_i] >= 0 && am_fix[row_i] < V && row[am_fix[row_i]] >= best - tol,
                          "%s: CLLM_CUDA_LM_HEAD=fixed row %d: id %d, logit %g against the best %g", name, row_i, am_fix[row_i],
                          am_fix[row_i] >= 0 && am_fix[row_i] < V ? row[am_fix[row_i]] : 0.0f, best);
                if (best - second > tol)
                    CHECK_MSG(am_fix[row_i] == am_cub[row_i], "%s: CLLM_CUDA_LM_HEAD=fixed row %d: id %d, cuBLAS %d (gap %g)",
                              name, row_i, am_fix[row_i], am_cub[row_i], best - second);
                same += am_fix[row_i] == am_cub[row_i];
            }
            printf("%s: the LM head on the fixed-order kernel (CLLM_CUDA_LM_HEAD=fixed) vs cuBLAS, a %d-row call: "
                   "%d of %d rows the same id\n", name, T, same, T);
        }
        if (!rc_l) cllm_cuda_fwd_free(&lf);
        if (!rc_b2) cllm_cuda_fwd_free(&bf);
        cllm_cuda_fwd bad;
        int rc_b = fwd_init_with(&bad, dm, 64, 0, ENV("CLLM_CUDA_LM_HEAD=fast"));
        CHECK_MSG(rc_b == CLLM_EINVAL, "%s: CLLM_CUDA_LM_HEAD=fast: %d, expected CLLM_EINVAL", name, rc_b);
        if (!rc_b) cllm_cuda_fwd_free(&bad);
    }
    /* The bulk routes' other launch modes give the same bits: on the
     * fixed-order route (CLLM_CUDA_FIXED_ORDER=1, CLLM_CUDA_MM16=0, so every
     * call goes through matmul.cu) the products' fused epilogues (residual
     * add, SwiGLU, bias + RoPE + cache write) against CLLM_CUDA_FUSE=0's
     * separate kernels, and programmatic dependent launch against none; on
     * the cuBLAS route, with and without it; the fixed-order kernel's
     * fragments by ldmatrix against 32-bit shared loads (CLLM_CUDA_LDSM=0:
     * on a GPU this checks ldsm_x4's lane layout). A 30-row prompt call, a 20-row
     * window call and a step reading the cache both wrote: 22 logits rows. */
    {
        size_t n = (size_t)22 * V;
        float *ref = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
        CHECK(ref && got);
        /* 0 and CUBLAS_REF are the references of the two routes */
        enum { VARIANTS = 7, CUBLAS_REF = 5 };
        const char *what[VARIANTS] = {"fixed-order, fused, PDL", "fixed-order, CLLM_CUDA_FUSE=0",
                                      "fixed-order, fused, no PDL", "fixed-order, 128-row tiles (CLLM_CUDA_MT_ROWS=128)",
                                      "fixed-order, 32-bit fragment loads (CLLM_CUDA_LDSM=0)", "cuBLAS, PDL",
                                      "cuBLAS, no PDL"};
        for (int k = 0; ref && got && k < VARIANTS && !check_failures; k++) {
            int fixed = k < CUBLAS_REF;
            cllm_cuda_fwd xf;
            const char *env[4] = {"CLLM_CUDA_MM16=0", fixed ? "CLLM_CUDA_FIXED_ORDER=1" : "CLLM_CUDA_FIXED_ORDER=0",
                                  k == 1   ? "CLLM_CUDA_FUSE=0"
                                  : k == 3 ? "CLLM_CUDA_MT_ROWS=128"
                                  : k == 4 ? "CLLM_CUDA_LDSM=0"
                                           : NULL,
                                  NULL};
            unsigned long long t64, t128, u64, u128, split0 = cllm_cuda_fixed_order_split_launches();
            cllm_cuda_fixed_order_launches(&t64, &t128);
            int rc_x = fwd_init_with(&xf, dm, 64, CLLM_CUDA_FWD_LOGITS | (k == 2 || k == 6 ? CLLM_CUDA_FWD_NO_PDL : 0), env);
            CHECK_OK(rc_x);
            if (rc_x) continue;
            float *dst = k == 0 || k == CUBLAS_REF ? ref : got;
            CHECK_OK(cllm_cuda_kv_rollback(&gk, 2, 0));
            CHECK_OK(cllm_cuda_forward(&xf, &gk, 2, 0, tok, 30, 29));
            memcpy(dst, xf.logits + (size_t)29 * V, (size_t)V * sizeof(float));
            CHECK_OK(cllm_cuda_forward(&xf, &gk, 2, 30, tok + 40, 20, 0));
            memcpy(dst + V, xf.logits, (size_t)20 * V * sizeof(float));
            CHECK_OK(cllm_cuda_forward(&xf, &gk, 2, 50, tok + 3, 1, 0));
            memcpy(dst + (size_t)21 * V, xf.logits, (size_t)V * sizeof(float));
            unsigned long long fused = cllm_cuda_fwd_fused_enqueues(&xf);
            int invariant = cllm_cuda_fwd_batch_invariant(&xf);
            cllm_cuda_fwd_free(&xf);
            /* every call fused on the fixed-order route; on the cuBLAS route the prompt call (fixed-order
             * products: call_gemm_rows) */
            const char *fu = getenv("CLLM_CUDA_FUSE");
            int G = env_gemm_rows(), pieces = G >= 0;   /* cuBLAS (pieces) for every call */
            /* the fixed-order route launched matmul.cu's kernel for every product; with
             * CLLM_CUDA_MT_ROWS=128 every launch took the 128-row tile (else this
             * loop would compare 64-row tiles with themselves) */
            cllm_cuda_fixed_order_launches(&u64, &u128);
            if (fixed && !pieces) CHECK_MSG(u64 + u128 > t64 + t128, "%s: %s: no fixed-order launch", name, what[k]);
            if (k == 3 && !pieces)
                CHECK_MSG(u128 > t128 && u64 == t64, "%s: %s: %llu launches with 64-row tiles, %llu with 128", name,
                          what[k], u64 - t64, u128 - t128);
            /* K slices (CLLM_CUDA_MT_KSLICE, else cuda_backend.cu's MT_KSLICE_DEFAULT, 384): the
             * products whose inner size is larger took them (else the bit-identities above
             * compare K in one piece with itself) */
            const char *ks = getenv("CLLM_CUDA_MT_KSLICE");
            int ksl = ks && *ks ? atoi(ks) : 384, QD = c->n_head * c->head_dim;
            int want_split = ksl > 0 && (c->d_model > ksl || QD > ksl || c->d_ff > ksl);
            unsigned long long split = cllm_cuda_fixed_order_split_launches() - split0;
            if (fixed && !pieces)
                CHECK_MSG(want_split ? split > 0 : split == 0, "%s: %s: %llu launches with K in slices of %d", name,
                          what[k], split, ksl);
            int off = fu && !strcmp(fu, "0");   /* switched off from outside (gpu-check 1b) */
            /* what cllm-traj's mixing of prompt chunks and windows rests on: one batch-invariant route for
             * every call (fixed-order, or cuBLAS in fixed G-row pieces), never cuBLAS in one call */
            int want_inv = pieces ? G > 0 : fixed;
            CHECK_MSG(invariant == want_inv, "%s: %s: batch-invariant %d, expected %d", name, what[k], invariant,
                      want_inv);
            unsigned long long want = k == 1 || pieces || off ? 0 : fixed ? 3 : 1;
            CHECK_MSG(fused == want, "%s: %s: %llu calls with fused epilogues, expected %llu", name, what[k], fused,
                      want);
            if (k == 0 || k == CUBLAS_REF) continue;
            int same = !memcmp(ref, got, n * sizeof(float));
            printf("%s: bulk route, %s vs %s: %s\n", name, what[k], what[fixed ? 0 : CUBLAS_REF],
                   same ? "bit-identical" : "differ");
            CHECK_MSG(same, "%s: %s gives other bits than %s", name, what[k], what[fixed ? 0 : CUBLAS_REF]);
        }
        free(ref);
        free(got);
    }
    /* the few-row path and the bulk route sum differently: never batch-invariant across call sizes */
    CHECK(cllm_cuda_fwd_batch_invariant(&gf) == 0 || (getenv("CLLM_CUDA_MM16") && !strcmp(getenv("CLLM_CUDA_MM16"), "0")));
    for (int k = 0; k < 2; k++) {
        /* a bulk state (cllm-traj's) sends every product through cuBLAS unless told otherwise (one
         * route, not batch-invariant); an invariant one (--batch-invariant) takes one invariant
         * route for every call */
        cllm_cuda_fwd bf;
        const char *fo = getenv("CLLM_CUDA_FIXED_ORDER"), *gr = getenv("CLLM_CUDA_GEMM_ROWS");
        int fixed = fo && *fo ? !strcmp(fo, "1") : k == 1;
        int G = gr && *gr ? env_gemm_rows() : k == 0 && !fixed ? 0 : -1;   /* the state's gemm_rows */
        int want = G >= 0 ? G > 0 : fixed, want_one = G >= 0 || fixed;
        CHECK_OK(cllm_cuda_fwd_init(&bf, dm, 64, k ? CLLM_CUDA_FWD_INVARIANT : CLLM_CUDA_FWD_BULK));
        if (!check_failures) {
            CHECK_MSG(cllm_cuda_fwd_batch_invariant(&bf) == want, "%s: a %s state is batch-invariant: %d, expected %d",
                      name, k ? "batch-invariant" : "bulk", cllm_cuda_fwd_batch_invariant(&bf), want);
            CHECK_MSG(cllm_cuda_fwd_one_route(&bf) == want_one, "%s: a %s state takes one route: %d, expected %d",
                      name, k ? "batch-invariant" : "bulk", cllm_cuda_fwd_one_route(&bf), want_one);
            cllm_cuda_fwd_free(&bf);
        }
    }
    {
        /* CLLM_CUDA_GEMM_ROWS out of -1..4096, or not a number: refused */
        static const char *const bad_rows[] = {"CLLM_CUDA_GEMM_ROWS=-2", "CLLM_CUDA_GEMM_ROWS=4097",
                                               "CLLM_CUDA_GEMM_ROWS=64x", "CLLM_CUDA_GEMM_ROWS=x"};
        for (int i = 0; i < 4; i++) {
            cllm_cuda_fwd bf;
            int rc_g = fwd_init_with(&bf, dm, 64, CLLM_CUDA_FWD_BULK, ENV(bad_rows[i]));
            CHECK_MSG(rc_g == CLLM_EINVAL, "%s: %s: %d, expected CLLM_EINVAL", name, bad_rows[i], rc_g);
            if (!rc_g) cllm_cuda_fwd_free(&bf);
        }
    }
    /* argument errors change nothing */
    {
        int len = cllm_cuda_kv_len(&gk, 1), bad = V;
        CHECK(cllm_cuda_forward(&gf, &gk, 1, 0, &bad, 1, 0) == CLLM_EINVAL);
        CHECK(cllm_cuda_forward(&gf, &gk, 1, len + 1, tok, 1, 0) == CLLM_EINVAL);
        CHECK(cllm_cuda_forward(&gf, &gk, 1, 250, tok, 16, 0) != 0);
        CHECK(cllm_cuda_forward(&gf, &gk, 7, 0, tok, 1, 0) == CLLM_EINVAL);
        CHECK(cllm_cuda_forward(&gf, &gk, 1, 0, tok, 65, 0) == CLLM_EINVAL);
        int s2[2] = {1, 1}, p2[2] = {0, 0};
        CHECK(cuda_rect(&gf, &gk, 2, s2, p2, tok, 2, 0) == CLLM_EINVAL);
        CHECK_EQ_INT(cllm_cuda_kv_len(&gk, 1), len);
    }
    printf("%s: worst row relerr %.3g, %d argmax differences\n", name, worst, diff);
    test_ragged(name, &m);
    if (!quick) {
        /* 12 prompts of 1..90 random ids, batch 8 vs 1 (continuous batching refills slots) */
        int *pids[12], plens[12];
        for (int i = 0; i < 12; i++) {
            plens[i] = 1 + (i * 37) % 90;
            pids[i] = malloc((size_t)plens[i] * sizeof(int));
            for (int j = 0; j < plens[i]; j++) pids[i][j] = (int)cllm_rng_below(&r, (uint64_t)V);
        }
        const char *jl = ids_jsonl(pids, plens, 12, 1);
        CHECK(jl != NULL);
        if (jl) traj_batches(name, &m, jl, 8, 40, 8, ROUTE_INVARIANT, 1);
        if (jl) traj_batches(name, &m, jl, 8, 40, 8, ROUTE_DEFAULT, 1);
        if (jl) traj_batches(name, &m, jl, 8, 40, 8, ROUTE_SPLIT, 1);
        if (jl) unlink(jl);
        for (int i = 0; i < 12; i++) free(pids[i]);
    }
out:
    cllm_cuda_kv_free(&gk);
    cllm_cuda_fwd_free(&gf);
    cllm_kv_free(&ck);
    cllm_fwd_free(&cf);
    cllm_cuda_model_free(dm);
    cllm_model_free(&m);
    TEST_OK(name);
}

/* ---- greedy decoding on the GPU (decode.c's algorithm, no EOS) ---------- */

/* Top-2 margin and scale of a logits row. */
static void margin_of(const float *row, int V, float *margin, float *scale) {
    float a = -INFINITY, b = -INFINITY, mx = 0;
    for (int v = 0; v < V; v++) {
        if (row[v] > a) { b = a; a = row[v]; } else if (row[v] > b) b = row[v];
        if (fabsf(row[v]) > mx) mx = fabsf(row[v]);
    }
    *margin = a - b;
    *scale = mx;
}

/* Greedy AR through forward.h on f's device (no EOS), keeping each chosen
 * token's top-2 margin over its row's scale (f needs logits): out[0..n),
 * rel_margin[0..n) (NULL to skip). Returns forward passes or < 0. */
static int ar_margins(cllm_fwd *f, cllm_kv *kv, const int *prompt, int P, int n, int *out, float *rel_margin) {
    int V = f->m->cfg.vocab, rc, steps = 0;
    if ((rc = cllm_kv_rollback(kv, 0, 0))) return rc;
    for (int s = 0; s < P; s += f->max_T, steps++) {
        int T = P - s < f->max_T ? P - s : f->max_T;
        if ((rc = cllm_forward(f, kv, 0, s, prompt + s, T, T - 1))) return rc;
        if (s + T == P) {
            out[0] = f->argmax[T - 1];
            if (rel_margin) { float mg, sc; margin_of(f->logits + (size_t)(T - 1) * V, V, &mg, &sc); rel_margin[0] = mg / sc; }
        }
    }
    for (int i = 1; i < n; i++, steps++) {
        if ((rc = cllm_forward(f, kv, 0, P + i - 1, &out[i - 1], 1, 0))) return rc;
        out[i] = f->argmax[0];
        if (rel_margin) { float mg, sc; margin_of(f->logits, V, &mg, &sc); rel_margin[i] = mg / sc; }
    }
    return steps;
}

/* decode.c's greedy decoding, unchanged, on f's device (no EOS): exactly n
 * tokens into out. Returns forward passes or < 0. */
static int decode_n(cllm_fwd *f, cllm_kv *kv, const int *prompt, int P, int n, int method, int nb, int *out) {
    cllm_decode_opts o;
    cllm_decode_opts_init(&o);
    o.method = method;
    o.n = method == CLLM_DECODE_JACOBI ? nb : 1;
    o.max_new_tokens = n;
    o.seed = 7;
    cllm_decode_result r;
    int rc = cllm_decode(f, kv, 0, prompt, P, &o, &r);
    if (!rc && r.n_tokens != n) rc = cllm_error(CLLM_EINVAL, "decode: %d tokens, expected %d", r.n_tokens, n);
    if (!rc) memcpy(out, r.tokens, (size_t)n * sizeof(int));
    int steps = r.steps;
    cllm_decode_result_free(&r);
    return rc ? rc : steps;
}

/* The device's greedy choice at each of the n positions of a reference
 * answer ref, given the prompt and ref's own earlier tokens (teacher
 * forcing): how many of the n equal ref, or < 0. This is the per-token
 * measure of GPU vs CPU decoding: in a free-running comparison one near-tie
 * makes every later token differ, here it costs one position. */
static int forced_agree(cllm_fwd *f, cllm_kv *kv, const int *prompt, int P, const int *ref, int n) {
    int rc, same = 0;
    if ((rc = cllm_kv_rollback(kv, 0, 0))) return rc;
    for (int s = 0; s < P; s += f->max_T) {
        int T = P - s < f->max_T ? P - s : f->max_T;
        if ((rc = cllm_forward(f, kv, 0, s, prompt + s, T, T - 1))) return rc;
        if (s + T == P) same += f->argmax[T - 1] == ref[0];
    }
    for (int s = 0; s + 1 < n; s += f->max_T) {   /* ref[s..] at positions P + s.., predicting ref[s + 1..] */
        int T = n - 1 - s < f->max_T ? n - 1 - s : f->max_T;
        if ((rc = cllm_forward(f, kv, 0, P + s, ref + s, T, 0))) return rc;
        for (int k = 0; k < T; k++) same += f->argmax[k] == ref[s + k + 1];
    }
    return same;
}

static int first_diff(const int *a, const int *b, int n) {
    for (int i = 0; i < n; i++) if (a[i] != b[i]) return i;
    return -1;
}

/* Seconds per call of 64 sequences x T rows at positions 16.. (the cache
 * holds 16 tokens of each), through a state of its own: the fixed-order
 * route or cuBLAS', PDL or not, and up to two more switches (set1, set2:
 * "CLLM_CUDA_...=..." or NULL); a call that replays a graph (after
 * warm-up). */
static double batch_step_s(const cllm_cuda_model *dm, cllm_cuda_kv *kv, const int *bt, int T, int fixed, int no_pdl,
                           const char *set1, const char *set2) {
    cllm_cuda_fwd f;
    const char *env[4] = {fixed ? "CLLM_CUDA_FIXED_ORDER=1" : "CLLM_CUDA_FIXED_ORDER=0", set1, set1 ? set2 : NULL,
                          NULL};
    int rc = fwd_init_with(&f, dm, 64 * 16, no_pdl ? CLLM_CUDA_FWD_NO_PDL : 0, env);
    CHECK_OK(rc);
    if (rc) return 0.0;
    int seqs[64], pos[64];
    for (int b = 0; b < 64; b++) {
        seqs[b] = b;
        pos[b] = 16;
    }
    for (int i = 0; i < 3; i++) CHECK_OK(cuda_rect(&f, kv, 64, seqs, pos, bt, T, 0));
    double t0 = cllm_now_s();
    for (int i = 0; i < 20; i++) CHECK_OK(cuda_rect(&f, kv, 64, seqs, pos, bt, T, 0));
    double t = (cllm_now_s() - t0) / 20;
    cllm_cuda_fwd_free(&f);
    return t;
}

static void test_smollm2(int bench, int logits_only) {
    cllm_model m;
    const char *path = test_model_path();
    if (cllm_model_load(&m, path)) {
        printf("skip smollm2: %s\n", cllm_errmsg());
        return;
    }
    enum { NP = 20, NEW = 64, NB = 16 };
    int *ids[NP], lens[NP];
    int np = read_id_lines("tests/golden/gsm8k20_ids.txt", NP, ids, lens);
    CHECK(np > 0);
    int V = m.cfg.vocab;
    row_tol = TOL_SMOLLM2;
    cllm_cuda_model *dm = NULL;
    CHECK_OK(cllm_cuda_model_upload(&dm, &m));
    cllm_fwd cf;
    cllm_kv ck;
    cllm_cuda_fwd gf;
    cllm_cuda_kv gk;
    CHECK_OK(cllm_fwd_init(&cf, &m, 64));
    CHECK_OK(cllm_kv_init(&ck, &m.cfg, 1, 1024));
    CHECK_OK(cllm_cuda_fwd_init(&gf, dm, 64, 1));
    CHECK_OK(cllm_cuda_kv_init(&gk, dm, 1, 1024));
    if (check_failures) goto out;
    printf("smollm2: %zu MiB of bf16 weights on the device\n", cllm_cuda_model_bytes(dm) >> 20);

    /* logits of the first 3 prompts, in 64-token chunks, every row, against
     * the fp32 CPU and against the CPU with the device's bf16 roundings
     * (cllm_model_round_bf16, CLLM_FWD_BF16): two bf16 computations of the
     * model part by as much as bf16 from fp32 (under the emulation 2.6e-2
     * against 2.8e-2; the CPU's bf16 from its fp32, test_forward: 2.2e-2), so
     * both are held to TOL_SMOLLM2 and printed */
    {
        cllm_model m16;
        cllm_fwd cf16;
        cllm_kv ck16;
        int loaded = !cllm_model_load(&m16, path);
        CHECK_MSG(loaded, "smollm2: second load: %s", cllm_errmsg());
        if (loaded) {
            cllm_model_round_bf16(&m16);
            CHECK_OK(cllm_fwd_init_on(&cf16, &m16, 64, CLLM_DEVICE_CPU, CLLM_FWD_BF16));
            CHECK_OK(cllm_kv_init(&ck16, &m16.cfg, 1, 1024));
        }
        double worst = 0, worst16 = 0, worst_l2 = 0, sum = 0;
        int diff = 0, diff16 = 0, rows = 0;
        for (int i = 0; i < np && i < 3 && !check_failures; i++)
            for (int s = 0; s < lens[i]; s += 64) {
                int T = lens[i] - s < 64 ? lens[i] - s : 64;
                double e = step_both("smollm2 prompt", &cf, &ck, &gf, &gk, 0, s, ids[i] + s, T, 0, &diff);
                if (e > worst) worst = e;
                for (int t = 0; t < T; t++) {
                    double e2 = row_l2relerr(gf.logits + (size_t)t * V, cf.logits + (size_t)t * V, V);
                    if (e2 > worst_l2) worst_l2 = e2;
                    sum += row_relerr(gf.logits + (size_t)t * V, cf.logits + (size_t)t * V, V);
                    rows++;
                }
                CHECK_OK(cllm_forward(&cf16, &ck16, 0, s, ids[i] + s, T, 0));
                for (int t = 0; t < T; t++) {
                    double e16 = row_relerr(gf.logits + (size_t)t * V, cf16.logits + (size_t)t * V, V);
                    if (e16 > worst16) worst16 = e16;
                    CHECK_MSG(e16 <= row_tol, "smollm2 prompt %d row %d: relerr %.3g against the CPU's bf16 roundings",
                              i, s + t, e16);
                    diff16 += gf.argmax[t] != cf16.argmax[t];
                }
            }
        printf("smollm2 logits: worst row relerr %.3g against the fp32 CPU, %d argmax differences; %.3g against "
               "the CPU with the GPU's bf16 roundings, %d argmax differences (bar %.0e); against the fp32 CPU "
               "over %d rows: mean row relerr %.3g, norm-wise (||a - b|| / ||b||) worst row %.3g\n",
               worst, diff, worst16, diff16, TOL_SMOLLM2, rows, rows ? sum / rows : 0.0, worst_l2);
        if (loaded) {
            cllm_kv_free(&ck16);
            cllm_fwd_free(&cf16);
            cllm_model_free(&m16);
        }
        TEST_OK("smollm2_logits");
    }

    test_ragged("smollm2", &m);
    if (logits_only) goto out;

    /* greedy AR GPU vs CPU; Jacobi vs AR on the GPU, all through decode.c on a
     * forward state made on the device (forward.h's dispatch) */
    cllm_fwd df;
    cllm_kv dk;
    CHECK_OK(cllm_fwd_init_on(&df, &m, 64, CLLM_DEVICE_CUDA, CLLM_FWD_LOGITS));
    CHECK_OK(cllm_kv_init_for(&dk, &df, 1, 1024));
    if (!check_failures) {
        int ar[NEW], ja[NEW], ca[NEW], same = 0, prefix = 0, total = 0, ties = 0, steps_ar = 0, steps_ja = 0;
        int cpu_ties = 0, forced = 0;
        float marg[NEW];
        int nprompts = getenv("CLLM_LONG") ? np : (np < 5 ? np : 5);
        for (int i = 0; i < nprompts; i++) {
            int P = lens[i];
            int sa = ar_margins(&df, &dk, ids[i], P, NEW, ar, marg);
            int sd = decode_n(&df, &dk, ids[i], P, NEW, CLLM_DECODE_AR, 1, ca);   /* decode.c's AR on the GPU */
            int sj = decode_n(&df, &dk, ids[i], P, NEW, CLLM_DECODE_JACOBI, NB, ja);
            CHECK_OK(sa < 0 ? sa : 0);
            CHECK_OK(sd < 0 ? sd : 0);
            CHECK_OK(sj < 0 ? sj : 0);
            if (sa < 0 || sd < 0 || sj < 0) break;
            CHECK_MSG(!memcmp(ar, ca, sizeof ar), "prompt %d: cllm_decode AR on the GPU differs from plain AR steps", i);
            steps_ar += sd;
            steps_ja += sj;
            int d = first_diff(ar, ja, NEW);
            if (d >= 0) {
                if (marg[d] <= TOL) {
                    ties++;
                    printf("NEAR-TIE prompt %d position %d: AR %d vs Jacobi %d (margin %.3g of scale)\n", i, d,
                           ar[d], ja[d], marg[d]);
                } else {
                    CHECK_MSG(0, "prompt %d position %d: GPU AR %d vs GPU Jacobi %d (margin %.3g of scale)", i, d,
                              ar[d], ja[d], marg[d]);
                }
            }
            /* GPU vs CPU AR. Checked: the GPU's greedy token equals the CPU's on >= 95 %
             * of positions given the CPU's answer so far (teacher forcing: issue 7's
             * "equal on >= 95 % of tokens" per token, so that one near-tie costs one
             * position), and the free-running answers part only where the CPU's top-2
             * margin is within the logits tolerance. Printed: free-running equality
             * position by position and the common prefix (once the two part at a
             * near-tie the answers run apart: under the CPU emulation, tests/cuemu,
             * the GPU's algorithm gives 68 % on these 5 prompts, every parting at a
             * margin below 4e-3 of the row's scale). */
            float cmarg[NEW];
            int cs = ar_margins(&cf, &ck, ids[i], P, NEW, ca, cmarg);
            CHECK_OK(cs < 0 ? cs : 0);
            if (cs < 0) break;
            for (int j = 0; j < NEW; j++) same += ar[j] == ca[j];
            if (i == 0)   /* the measure itself: the CPU on its own answer agrees everywhere */
                CHECK_EQ_INT(forced_agree(&cf, &ck, ids[i], P, ca, NEW), NEW);
            int fa = forced_agree(&df, &dk, ids[i], P, ca, NEW);   /* the GPU on the CPU's answer */
            CHECK_OK(fa < 0 ? fa : 0);
            if (fa < 0) break;
            forced += fa;
            int dc = first_diff(ar, ca, NEW);
            prefix += dc < 0 ? NEW : dc;
            total += NEW;
            if (dc >= 0 && cmarg[dc] <= row_tol) {
                cpu_ties++;
                printf("NEAR-TIE prompt %d position %d: GPU AR %d vs CPU AR %d (CPU margin %.3g of scale)\n", i, dc,
                       ar[dc], ca[dc], cmarg[dc]);
            } else if (dc >= 0) {
                CHECK_MSG(0, "prompt %d position %d: GPU AR %d vs CPU AR %d (CPU margin %.3g of scale)", i, dc,
                          ar[dc], ca[dc], cmarg[dc]);
            }
        }
        double frac = total ? (double)same / total : 0, ffrac = total ? (double)forced / total : 0;
        printf("smollm2 decode: %d prompts x %d tokens: GPU greedy token == CPU's on %.1f %% of positions given "
               "the CPU's answer so far (bar 95 %%); free-running GPU AR == CPU AR on %.1f %% of positions "
               "(%.1f %% in common prefixes; %d parted at near-ties); Jacobi n=%d: %d passes vs AR %d; %d near-ties\n",
               nprompts, NEW, 100 * ffrac, 100 * frac, total ? 100.0 * prefix / total : 0.0, cpu_ties, NB, steps_ja,
               steps_ar, ties);
        CHECK_MSG(ffrac >= 0.95, "GPU greedy tokens equal the CPU's on %.1f %% of positions given the CPU's answer "
                  "(bar 95 %%)", 100 * ffrac);
        TEST_OK("smollm2_decode");
    }
    cllm_kv_free(&dk);
    cllm_fwd_free(&df);

    /* trajectories of 8 GSM8K prompts, batch 8 vs batch 1, on the GPU */
    {
        const char *jl = ids_jsonl(ids, lens, np < 8 ? np : 8, 1);
        CHECK(jl != NULL);
        if (jl) traj_batches("smollm2", &m, jl, 16, 64, 8, ROUTE_INVARIANT, 1);
        if (jl) unlink(jl);
        TEST_OK("smollm2_traj_batch");
    }

    if (bench) {
        /* AR step and 16-token step at the same context length (after a prompt of ~100 tokens) */
        cllm_cuda_fwd bf;
        CHECK_OK(cllm_cuda_fwd_init(&bf, dm, 64 * 16, 0));
        cllm_cuda_kv bk;
        CHECK_OK(cllm_cuda_kv_init(&bk, dm, 64, 1024));
        if (!check_failures) {
            int P = lens[0] < 256 ? lens[0] : 256, next = 0;
            CHECK_OK(cllm_cuda_forward(&bf, &bk, 0, 0, ids[0], P, P - 1));
            next = bf.argmax[P - 1];
            int blk[16];
            for (int i = 0; i < 16; i++) blk[i] = ids[0][i % P];
            blk[0] = next;
            for (int w = 0; w < 20; w++) CHECK_OK(cllm_cuda_forward(&bf, &bk, 0, P, blk, 16, 0));
            int reps = 200;
            double t0 = cllm_now_s();
            for (int i = 0; i < reps; i++) CHECK_OK(cllm_cuda_forward(&bf, &bk, 0, P, blk, 1, 0));
            double t_ar = (cllm_now_s() - t0) / reps;
            t0 = cllm_now_s();
            for (int i = 0; i < reps; i++) CHECK_OK(cllm_cuda_forward(&bf, &bk, 0, P, blk, 16, 0));
            double t_j = (cllm_now_s() - t0) / reps;
            int am_j[16];
            memcpy(am_j, bf.argmax, sizeof am_j);
            /* the baseline: the same steps with every kernel launched after its
             * predecessor (no programmatic dependent launch); the same row
             * capacity, so each call copies the same row tables */
            double t_ar0 = 0, t_j0 = 0;
            cllm_cuda_fwd nf;
            int rc_n = cllm_cuda_fwd_init(&nf, dm, 64 * 16, CLLM_CUDA_FWD_NO_PDL);
            CHECK_OK(rc_n);
            if (!rc_n) {
                for (int w = 0; w < 20; w++) CHECK_OK(cllm_cuda_forward(&nf, &bk, 0, P, blk, 16, 0));
                CHECK_MSG(!memcmp(am_j, nf.argmax, sizeof am_j), "16-token step: other tokens without PDL");
                t0 = cllm_now_s();
                for (int i = 0; i < reps; i++) CHECK_OK(cllm_cuda_forward(&nf, &bk, 0, P, blk, 1, 0));
                t_ar0 = (cllm_now_s() - t0) / reps;
                t0 = cllm_now_s();
                for (int i = 0; i < reps; i++) CHECK_OK(cllm_cuda_forward(&nf, &bk, 0, P, blk, 16, 0));
                t_j0 = (cllm_now_s() - t0) / reps;
                cllm_cuda_fwd_free(&nf);
            }
            /* the decode attention's block size (CLLM_CUDA_ATT_THREADS; 256 by default), same run */
            double t_att[2][2] = {{0, 0}, {0, 0}};
            for (int k = 0; k < 2 && !check_failures; k++) {
                cllm_cuda_fwd af;
                int rc_a = fwd_init_with(&af, dm, 64 * 16, 0,
                                         ENV(k ? "CLLM_CUDA_ATT_THREADS=512" : "CLLM_CUDA_ATT_THREADS=128"));
                CHECK_OK(rc_a);
                if (rc_a) break;
                for (int w = 0; w < 20; w++) CHECK_OK(cllm_cuda_forward(&af, &bk, 0, P, blk, 16, 0));
                for (int T = 1; T <= 16; T += 15) {
                    t0 = cllm_now_s();
                    for (int i = 0; i < reps; i++) CHECK_OK(cllm_cuda_forward(&af, &bk, 0, P, blk, T, 0));
                    t_att[k][T > 1] = (cllm_now_s() - t0) / reps;
                }
                cllm_cuda_fwd_free(&af);
            }
            /* 64 sequences x 16 tokens in one call (trajectory collection's shape) */
            int seqs[64], pos[64];
            int *bt = malloc(64 * 16 * sizeof(int));
            for (int b = 0; b < 64; b++) {
                seqs[b] = b;
                pos[b] = 0;
                for (int t = 0; t < 16; t++) bt[b * 16 + t] = ids[b % np][t % lens[b % np]];
            }
            CHECK_OK(cuda_rect(&bf, &bk, 64, seqs, pos, bt, 16, 0));
            for (int b = 0; b < 64; b++) pos[b] = 16;
            t0 = cllm_now_s();
            for (int i = 0; i < 20; i++) CHECK_OK(cuda_rect(&bf, &bk, 64, seqs, pos, bt, 16, 0));
            double t_b = (cllm_now_s() - t0) / 20;
            /* the bulk routes' launch modes, same run: 64 windows of 16 rows,
             * and of 9 (what cllm-traj feeds on average when it skips the
             * rows that cannot change) */
            for (int T = 16; T >= 9 && !check_failures; T -= 7) {
                /* the fixed-order kernel's switches against its defaults (each gives the same
                 * bits but K slices'), the slices and row tiles it had before round 6 last */
                static const struct {
                    int fixed, no_pdl;
                    const char *set1, *set2, *what;
                } v[] = {
                    {0, 0, NULL, NULL, "cuBLAS"},
                    {0, 1, NULL, NULL, "cuBLAS without PDL"},
                    {0, 0, "CLLM_CUDA_LM_HEAD=fixed", NULL, "cuBLAS, the LM head fixed-order"},
                    {1, 0, NULL, NULL, "fixed-order, defaults"},
                    {1, 0, "CLLM_CUDA_FUSE=0", NULL, "unfused"},
                    {1, 1, NULL, NULL, "without PDL"},
                    {1, 0, "CLLM_CUDA_MT_ROWS=auto", NULL, "row tiles by shape"},
                    {1, 0, "CLLM_CUDA_MT_ROWS=128", NULL, "rows 128"},
                    {1, 0, "CLLM_CUDA_MT_KSLICE=0", NULL, "K in one piece"},
                    {1, 0, "CLLM_CUDA_MT_KSLICE=192", NULL, "K slices of 192"},
                    {1, 0, "CLLM_CUDA_MT_KSLICE=192", "CLLM_CUDA_MT_ROWS=auto", "K slices of 192, row tiles by shape"},
                };
                enum { NV = sizeof v / sizeof v[0] };
                char line[2048];
                int at = snprintf(line, sizeof line, "BENCH smollm2 batch 64 x %d rows, one call, ms (same run):", T);
                for (int k = 0; k < NV && !check_failures && at < (int)sizeof line; k++) {
                    double ms = 1e3 * batch_step_s(dm, &bk, bt, T, v[k].fixed, v[k].no_pdl, v[k].set1, v[k].set2);
                    at += snprintf(line + at, sizeof line - at, "%s %s %.3f", k ? ";" : "", v[k].what, ms);
                }
                printf("%s\n", line);
            }
            free(bt);
            printf("BENCH smollm2 context %d: AR step %.3f ms, 16-token step %.3f ms, ratio %.2f\n", P,
                   1e3 * t_ar, 1e3 * t_j, t_j / t_ar);
            if (t_ar0 > 0)
                printf("BENCH smollm2 context %d without programmatic dependent launch (baseline, same run): AR step "
                       "%.3f ms, 16-token step %.3f ms; PDL speed-up %.2fx (AR), %.2fx (16-token)\n",
                       P, 1e3 * t_ar0, 1e3 * t_j0, t_ar0 / t_ar, t_j0 / t_j);
            if (t_att[1][1] > 0)
                printf("BENCH smollm2 context %d, attention blocks of 128 / 256 (default) / 512 threads, same run: AR "
                       "step %.3f / %.3f / %.3f ms, 16-token step %.3f / %.3f / %.3f ms\n", P, 1e3 * t_att[0][0],
                       1e3 * t_ar, 1e3 * t_att[1][0], 1e3 * t_att[0][1], 1e3 * t_j, 1e3 * t_att[1][1]);
            printf("BENCH smollm2 batch 64 x 16 tokens: %.3f ms per step = %.0f token-positions/s\n", 1e3 * t_b,
                   64 * 16 / t_b);
        }
        cllm_cuda_kv_free(&bk);
        cllm_cuda_fwd_free(&bf);
        /* a 256-token AR run through decode.c on the device, prompt included */
        cllm_fwd ef;
        cllm_kv ek;
        CHECK_OK(cllm_fwd_init_on(&ef, &m, 128, CLLM_DEVICE_CUDA, 0));
        CHECK_OK(cllm_kv_init_for(&ek, &ef, 1, 1024));
        if (!check_failures) {
            int *ar = malloc(256 * sizeof(int));
            double t0 = cllm_now_s();
            int sa = decode_n(&ef, &ek, ids[0], lens[0], 256, CLLM_DECODE_AR, 1, ar);
            double t_run = cllm_now_s() - t0;
            CHECK_OK(sa < 0 ? sa : 0);
            free(ar);
            printf("BENCH smollm2 AR run: 256 tokens in %.3f s = %.0f tokens/s (prefill included)\n", t_run,
                   256 / t_run);
        }
        cllm_kv_free(&ek);
        cllm_fwd_free(&ef);
        /* trajectory collection at --batch 64 on 256 prompts (the 20 GSM8K prompts, repeated) */
        const char *jl = ids_jsonl(ids, lens, np, (256 + np - 1) / np);
        if (jl) {
            /* two passes over the routes, the figures the second's: in one pass the route run last
             * came out fastest whichever it was (round 7 on the H200: 1.43x, then 0.83x, for the
             * same pair in the other order), the first runs paying for warming up */
            double rate = 0, inv = 0, split = 0;
            for (int pass = 0; pass < 2 && !check_failures; pass++) {
                const char *what = pass ? "smollm2 bench" : "smollm2 bench (warm-up)";
                rate = traj_batches(what, &m, jl, 16, 64, 64, ROUTE_DEFAULT, !pass);
                inv = traj_batches(what, &m, jl, 16, 64, 64, ROUTE_INVARIANT, !pass);
                split = traj_batches(what, &m, jl, 16, 64, 64, ROUTE_SPLIT, !pass);
            }
            printf("BENCH smollm2 cllm-traj --batch 64: %.0f trajectory tokens/s (--batch-invariant, the baseline in "
                   "the same run: %.0f; %.2fx; second pass)\n", rate, inv, inv > 0 ? rate / inv : 0.0);
            printf("BENCH smollm2 cllm-traj --batch 64 with prompt calls of their own (CLLM_CUDA_GEMM_ROWS=-1, the "
                   "default until round 7): %.0f trajectory tokens/s; the default %.2fx it (second pass)\n", split,
                   split > 0 ? rate / split : 0.0);
            unlink(jl);
        }
    }
out:
    for (int i = 0; i < np; i++) free(ids[i]);
    cllm_cuda_kv_free(&gk);
    cllm_cuda_fwd_free(&gf);
    cllm_kv_free(&ck);
    cllm_fwd_free(&cf);
    cllm_cuda_model_free(dm);
    cllm_model_free(&m);
    row_tol = TOL;
    (void)V;
}

/* The device argmax's rules on each of its routes, with expected ids from
 * their definition (argmax.cu, kernels_cuda.h's argmax_key): the lowest id of
 * a tie wins, and negative values order as values. A one-layer model whose
 * final norm keeps dim 0 alone (weight 1 there, 0 elsewhere) and whose LM
 * head's column 0 is w_i = -(1 + ((i + 5) % 12) / 8) (exact in bf16): logit
 * i = w_i xn_0 exactly on both backends, each value shared by the ids of one
 * residue mod 12, in every block, tile and thread. xn_0 > 0: every logit
 * negative, the largest at the ids = 7 mod 12, so 7 wins; xn_0 < 0: 6.
 * V = 16392 is no multiple of the products' 16- and 64-output tiles: the last
 * tile's missing outputs (zero W rows, logit 0 above every real one when
 * xn_0 > 0) are no candidates; and it makes 1025 groups of 16 outputs for
 * matmul16.cu's grid of at most 1024 blocks, so its block 0 takes two (ids
 * 0..15 and 16384..16391: a thread's best over its groups, 7 and 6 against
 * 16391 and 16390). Routes: 40-row calls wanting logits (cuBLAS, then
 * argmax.cu), 16- and 1-row calls (the few-row path's fused argmax,
 * matmul16.cu), and 40-, 16- and 1-row calls on the bulk route without
 * logits (cuBLAS and argmax.cu; with CLLM_CUDA_FIXED_ORDER=1 the fixed-order
 * LM head's fused argmax, matmul.cu). The sign of xn_0 is the CPU's (its
 * logit 7 is -xn_0); a row with |xn_0| < 0.1 is skipped: the GPU's x_0 may
 * differ from the CPU's as its logits do, by up to TOL of the row's largest
 * element (about 3 in an RMS-1 row: 0.06), so beyond 0.1 the sign is the
 * CPU's. */
static void test_argmax_rules(void) {
    cllm_config c = small_config("qwen2", 1, 64, 2, 1, 32, 64, 16392, 0, 0);
    cllm_model m;
    if (random_model(&m, &c, 21)) { CHECK_MSG(0, "argmax rules: alloc: %s", cllm_errmsg()); return; }
    const cllm_tensor_info *tn = cllm_model_tensor(&m, "model.norm.weight"), *th = cllm_model_tensor(&m, "lm_head.weight");
    CHECK(tn && th);
    if (!tn || !th) { cllm_model_free(&m); return; }
    float *nw = m.params + tn->offset, *head = m.params + th->offset;
    int V = c.vocab, C = c.d_model, T = 57;
    for (int k = 0; k < C; k++) nw[k] = k == 0 ? 1.0f : 0.0f;
    for (int i = 0; i < V; i++) head[(size_t)i * C] = -(1.0f + (float)((i + 5) % 12) / 8.0f);
    cllm_cuda_model *dm = NULL;
    cllm_fwd cf;
    cllm_kv ck;
    cllm_cuda_kv gk;
    int rc = cllm_cuda_model_upload(&dm, &m);
    CHECK_OK(rc);
    CHECK_OK(cllm_fwd_init(&cf, &m, 64));
    CHECK_OK(cllm_kv_init(&ck, &c, 1, 64));
    if (!rc) CHECK_OK(cllm_cuda_kv_init(&gk, dm, 1, 64));
    int tok[57], want[57], calls[3][2] = {{0, 40}, {40, 16}, {56, 1}}, pos_rows = 0, neg_rows = 0;
    cllm_rng r;
    cllm_rng_seed(&r, 22);
    for (int i = 0; i < T; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)V);
    for (int k = 0; k < 3 && !check_failures; k++) {   /* the CPU's sign of xn_0 per row */
        CHECK_OK(cllm_forward(&cf, &ck, 0, calls[k][0], tok + calls[k][0], calls[k][1], 0));
        for (int t = 0; t < calls[k][1]; t++) {
            float l7 = cf.logits[(size_t)t * V + 7];   /* -xn_0 */
            int row = calls[k][0] + t;
            want[row] = fabsf(l7) < 0.1f ? -1 : l7 < 0.0f ? 7 : 6;
            if (want[row] >= 0) CHECK_EQ_INT(cf.argmax[t], want[row]);   /* the CPU keeps the rules too */
            pos_rows += want[row] == 7;
            neg_rows += want[row] == 6;
        }
    }
    CHECK(pos_rows >= 10 && neg_rows >= 10);   /* both signs (this seed) */
    printf("argmax rules: %d rows with xn_0 > 0 (all logits negative), %d with xn_0 < 0, %d skipped\n", pos_rows,
           neg_rows, T - pos_rows - neg_rows);
    static const char *const route[3] = {"logits (cuBLAS + argmax.cu, the few-row path)", "bulk, cuBLAS + argmax.cu",
                                         "bulk, fixed-order LM head"};
    for (int s = 0; s < 3 && !check_failures; s++) {
        cllm_cuda_fwd gf;
        int flags = s == 0 ? CLLM_CUDA_FWD_LOGITS : CLLM_CUDA_FWD_BULK;
        CHECK_OK(s == 2 ? fwd_init_with(&gf, dm, 64, flags, ENV("CLLM_CUDA_FIXED_ORDER=1"))
                        : fwd_init_with(&gf, dm, 64, flags, ENV("CLLM_CUDA_FIXED_ORDER=0")));
        if (check_failures) break;
        CHECK_OK(cllm_cuda_kv_rollback(&gk, 0, 0));
        for (int k = 0; k < 3; k++) {
            CHECK_OK(cllm_cuda_forward(&gf, &gk, 0, calls[k][0], tok + calls[k][0], calls[k][1], 0));
            for (int t = 0; t < calls[k][1]; t++) {
                int row = calls[k][0] + t;
                if (want[row] >= 0)
                    CHECK_MSG(gf.argmax[t] == want[row], "argmax rules, %s: row %d: %d, want %d", route[s], row,
                              gf.argmax[t], want[row]);
            }
        }
        cllm_cuda_fwd_free(&gf);
    }
    if (!rc) cllm_cuda_kv_free(&gk);
    cllm_kv_free(&ck);
    cllm_fwd_free(&cf);
    cllm_cuda_model_free(dm);
    cllm_model_free(&m);
    TEST_OK("argmax rules");
}

/* A query-head group wider than the tiled attention's 4 warps (10 heads of
 * 64 over 2 kv heads: groups of 5, so a kv head's heads take two blocks, the
 * second with one of its 4 warps at work), RoPE on 32 of the 64 dims (two
 * groups of 16 pass-through dims a head in the fused QKV epilogue), two
 * layers, against the CPU, in sequence 1 of 2: a prompt of 40 rows in a cache
 * of 64 positions, the cache grown to 128 (cllm_cuda_kv_grow: sequence 1's
 * 40 positions copied), 60 more rows (tiled, attention.cu's kernel2, keys
 * across two 64-key tiles), a 16-row window at 100 and an AR step (the
 * few-row path, kernel1 at 256 threads: 32 key slices, so its loop of four
 * keys in flight runs from 97 keys on, and with the window's 101..116 keys
 * its bound is met exactly in slices 5..20); rollback's bounds (0 <= len <= the length) and
 * a call one position past the cache refused (cuda_backend.h); a fresh bulk
 * state whose first call has one row in each of sequences 0 and 1 (two
 * one-row attention segments: the segment list's end is written by that
 * call, not left from an earlier one); a padded call (its padding rows
 * write the scratch sequence's cache, which must not be another layer's
 * sequence 0), then sequence 0 read again. And a graph replayed across a
 * cache grown under it (a new cache must not replay a graph made for the
 * old one): one-row calls on a bulk state without logits (padded to 16 rows,
 * replayed from a graph from their second call on), the cache grown, one
 * more such call, then a step with logits against the CPU. TOL as
 * test_random. */
static void test_wide_gqa(void) {
    cllm_config c = small_config("llama", 2, 64, 10, 2, 64, 64, 256, 0, 0);
    c.rope_dim = 32;
    cllm_model m;
    if (random_model(&m, &c, 31)) { CHECK_MSG(0, "wide GQA: alloc: %s", cllm_errmsg()); return; }
    cllm_cuda_model *dm = NULL;
    int rc = cllm_cuda_model_upload(&dm, &m);
    CHECK_OK(rc);
    if (rc) { cllm_model_free(&m); return; }
    cllm_fwd cf;
    cllm_kv ck, hck;
    cllm_cuda_fwd gf, bf, pf;
    cllm_cuda_kv gk, hk;
    CHECK_OK(cllm_fwd_init(&cf, &m, 64));
    CHECK_OK(cllm_kv_init(&ck, &c, 2, 128));
    CHECK_OK(cllm_kv_init(&hck, &c, 1, 32));
    CHECK_OK(cllm_cuda_fwd_init(&gf, dm, 64, CLLM_CUDA_FWD_LOGITS));
    CHECK_OK(cllm_cuda_fwd_init(&bf, dm, 64, CLLM_CUDA_FWD_LOGITS | CLLM_CUDA_FWD_BULK));
    CHECK_OK(cllm_cuda_fwd_init(&pf, dm, 64, CLLM_CUDA_FWD_BULK));
    CHECK_OK(cllm_cuda_kv_init(&gk, dm, 2, 64));
    CHECK_OK(cllm_cuda_kv_init(&hk, dm, 1, 16));
    if (!check_failures) {
        int tok[124], diff = 0;
        double worst = 0, e;
        cllm_rng r;
        cllm_rng_seed(&r, 32);
        for (int i = 0; i < 124; i++) tok[i] = (int)cllm_rng_below(&r, (uint64_t)c.vocab);
        e = step_both("wide GQA: prompt", &cf, &ck, &gf, &gk, 1, 0, tok, 40, 0, &diff); if (e > worst) worst = e;
        CHECK_OK(cllm_cuda_kv_grow(&gk, 128));
        e = step_both("wide GQA: prompt b", &cf, &ck, &gf, &gk, 1, 40, tok + 40, 60, 0, &diff); if (e > worst) worst = e;
        e = step_both("wide GQA: window", &cf, &ck, &gf, &gk, 1, 100, tok + 100, 16, 0, &diff); if (e > worst) worst = e;
        e = step_both("wide GQA: ar", &cf, &ck, &gf, &gk, 1, 116, tok + 116, 1, 0, &diff); if (e > worst) worst = e;
        CHECK(cllm_cuda_kv_rollback(&gk, 1, 118) == CLLM_EINVAL);
        CHECK(cllm_cuda_kv_rollback(&gk, 1, -1) == CLLM_EINVAL);
        CHECK(cllm_cuda_kv_rollback(&gk, 2, 0) == CLLM_EINVAL);
        CHECK_OK(cllm_cuda_kv_rollback(&gk, 1, 117));
        CHECK(cllm_cuda_forward(&gf, &gk, 1, 117, tok, 12, 0) == CLLM_ELIMIT);   /* 129 > 128 positions */
        CHECK_EQ_INT(cllm_cuda_kv_len(&gk, 1), 117);
        {   /* the first call of a bulk state: one row in each sequence */
            cllm_fwd_seq sq[2] = {{0, 0, 1, 0}, {1, 117, 1, 0}};
            int bt[2] = {tok[117], tok[118]};
            CHECK_OK(cllm_cuda_forward_seqs(&bf, &gk, sq, 2, bt));
            for (int b = 0; b < 2; b++) {
                CHECK_OK(cllm_forward(&cf, &ck, sq[b].seq, sq[b].pos, bt + b, 1, 0));
                e = cmp_rows("wide GQA: first bulk call", bf.logits + (size_t)b * c.vocab, bf.argmax + b, cf.logits,
                             cf.argmax, 0, 1, c.vocab, &diff);
                if (e > worst) worst = e;
            }
        }
        /* a padded call in sequence 1 (its padding rows: the scratch sequence's positions 0..14), then
         * sequence 0 (one cached position) read again */
        CHECK_OK(cllm_cuda_forward(&pf, &gk, 1, 118, tok + 119, 1, 0));
        CHECK_OK(cllm_forward(&cf, &ck, 1, 118, tok + 119, 1, 0));
        e = step_both("wide GQA: after a padded call", &cf, &ck, &gf, &gk, 0, 1, tok + 120, 1, 0, &diff);
        if (e > worst) worst = e;
        /* a graph across a grown cache: positions 0, 1 (captured), grow, 2, then 3 with logits */
        for (int p = 0; p < 3 && !check_failures; p++) {
            if (p == 2) CHECK_OK(cllm_cuda_kv_grow(&hk, 32));
            CHECK_OK(cllm_cuda_forward(&pf, &hk, 0, p, tok + p, 1, 0));
        }
        CHECK_OK(cllm_forward(&cf, &hck, 0, 0, tok, 3, 3));
        e = step_both("wide GQA: after a graph replay on a grown cache", &cf, &hck, &gf, &hk, 0, 3, tok + 3, 1, 0,
                      &diff);
        if (e > worst) worst = e;
        printf("wide GQA (10:2): worst row relerr %.3g, %d argmax differences\n", worst, diff);
    }
    cllm_cuda_kv_free(&hk);
    cllm_cuda_kv_free(&gk);
    cllm_cuda_fwd_free(&pf);
    cllm_cuda_fwd_free(&bf);
    cllm_cuda_fwd_free(&gf);
    cllm_kv_free(&hck);
    cllm_kv_free(&ck);
    cllm_fwd_free(&cf);
    cllm_cuda_model_free(dm);
    cllm_model_free(&m);
    TEST_OK("wide GQA");
}

/* Shapes the device cannot run are refused at the upload, before any device
 * memory, with CLLM_EUNSUP and a message: a head size that is not a multiple
 * of 8, a model width past the RMSNorm's 8,192. */
static void test_refused_shapes(void) {
    const cllm_config bad[2] = {small_config("llama", 1, 64, 4, 2, 12, 128, 64, 1, 0),
                                small_config("llama", 1, 8194, 2, 1, 16, 16, 16, 1, 0)};
    for (int i = 0; i < 2; i++) {
        cllm_model m;
        cllm_cuda_model *dm = NULL;
        CHECK_OK(cllm_model_alloc(&m, &bad[i]));
        if (check_failures) return;
        int rc = cllm_cuda_model_upload(&dm, &m);
        CHECK_MSG(rc == CLLM_EUNSUP && !dm && strstr(cllm_errmsg(), "not supported"),
                  "shape %d: upload returned %d (%s)", i, rc, rc ? cllm_errmsg() : "no error");
        cllm_cuda_model_free(dm);
        cllm_model_free(&m);
    }
    TEST_OK("refused shapes");
}

/* --harness: the dispatch checks (ragged batch, cllm-traj batch 8 == 1) with
 * the CPU standing in for the device, so the test's own code runs in CI. */
static void harness(void) {
    test_device = CLLM_DEVICE_CPU;
    cllm_config c = small_config("llama", 2, 64, 4, 2, 16, 128, 300, 1, 0);
    cllm_model m;
    if (random_model(&m, &c, 5)) { CHECK_MSG(0, "alloc: %s", cllm_errmsg()); return; }
    test_ragged("harness (CPU)", &m);
    int *pids[12], plens[12];
    cllm_rng r;
    cllm_rng_seed(&r, 6);
    for (int i = 0; i < 12; i++) {
        plens[i] = 1 + (i * 37) % 90;
        pids[i] = malloc((size_t)plens[i] * sizeof(int));
        for (int j = 0; j < plens[i]; j++) pids[i][j] = (int)cllm_rng_below(&r, (uint64_t)c.vocab);
    }
    const char *jl = ids_jsonl(pids, plens, 12, 1);
    CHECK(jl != NULL);
    if (jl) traj_batches("harness (CPU)", &m, jl, 8, 40, 8, ROUTE_INVARIANT, 1);
    if (jl) unlink(jl);
    for (int i = 0; i < 12; i++) free(pids[i]);
    cllm_model_free(&m);
    TEST_OK("harness");
}

int main(int argc, char **argv) {
    int bench = argc > 1 && !strcmp(argv[1], "--bench");
    int logits_only = argc > 1 && !strcmp(argv[1], "--logits-only");   /* SmolLM2: logits and ragged batch only */
    if (argc > 1 && !strcmp(argv[1], "--harness")) {
        harness();
        TEST_END();
    }
    int n = 0, driver = 0, rc = cllm_cuda_device_count(&n, &driver);
    if (rc || n < 1) {
        printf("skip: no CUDA device%s%s (the harness runs on the CPU instead)\n", rc ? ": " : "",
               rc ? cllm_errmsg() : "");
        harness();
        TEST_END();
    }
    char name[256];
    CHECK_OK(cllm_cuda_device_name(name, sizeof name));
    printf("device: %s\n", name);
    {   /* the CPU reference on the machine's cores (16 at most; its results do not depend on the count) */
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        kernels_set_threads(nc < 1 ? 1 : nc > 16 ? 16 : (int)nc);
    }
    quick = getenv("CLLM_TEST_CUDA_QUICK") && atoi(getenv("CLLM_TEST_CUDA_QUICK")) > 0;
    test_refused_shapes();
    cllm_config c = small_config("qwen2", 2, 128, 4, 2, 32, 256, 512, 0, 1);
    c.rms_eps = 1e-6f;
    c.rope_dim = 16;   /* partial rotary: dims 16..31 of each head pass through */
    test_random("tiny_qwen2_like", &c, 11);
    c = small_config("llama", 3, 192, 3 * 2, 2, 64, 320, 1000, 1, 0);
    c.rope_theta = 100000.0f;
    test_random("tiny_llama_like", &c, 12);
    test_argmax_rules();
    test_wide_gqa();
    if (!check_failures) test_smollm2(bench, logits_only);
    TEST_END();
}

#else /* !CLLM_CUDA */

int main(void) {
    (void)check_failures;
    printf("skip: no CUDA device (built without CUDA)\n");
    return 0;
}

#endif
