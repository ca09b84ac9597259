/* test_nccl.c: the devices' gradient all-reduce (libcore/cuda_nccl.h).
 *
 * Everywhere: the local rank and size (dist.h; under mpirun on one machine
 * with CLLM_TEST_ONE_NODE set they equal the rank and size).
 * Everywhere with a CUDA build: the run-time loading of NCCL fails with a
 * clear message (and no leak) for a library that does not exist and for one
 * that is not NCCL; --allreduce nccl is refused on the CPU.
 * With a device (scripts/gpu-check.sh): the rank's device pick, a
 * communicator over the dist.h ranks (one without a launcher; under
 * `mpirun -np R` one per rank), and a trainer's gradients after
 * cllm_cuda_train_allreduce equal R times what each rank set (values that
 * are exact in fp32 at any summation order), then the trainer's own gradients
 * summed: a micro-batch on each rank, all-reduced, against the host sum of
 * the same micro-batches (within 1e-6 of the scale: one fp32 rounding per add);
 * and ZeRO-1: a trainer of the rank's slice holds the slice's moments only
 * (its device bytes, exactly), reduce-scatters exact sums into its slice,
 * and its step + all-gather equal the whole trainer's step bit for bit.
 * Without a build with CUDA or without a device it says "skip" for the
 * device part and exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dist.h"
#include "err.h"
#include "forward.h"
#include "fwd_testutil.h"
#include "model.h"
#include "train.h"

#if CLLM_CUDA
#include "cuda_nccl.h"
#include "cuda_train.h"

static void test_loader_errors(void) {
    cllm_nccl *c = (cllm_nccl *)1;
    const char *env = getenv("CLLM_NCCL_LIB");
    char *saved = env ? strdup(env) : NULL;   /* the library the device part is to use */
    setenv("CLLM_NCCL_LIB", "/nonexistent/libnccl.so.2", 1);
    int rc = cllm_nccl_init(&c, 0);
    CHECK_EQ_INT(rc, CLLM_EUNSUP);
    CHECK(c == NULL);
    CHECK_MSG(strstr(cllm_errmsg(), "cannot load /nonexistent/libnccl.so.2") != NULL, "%s", cllm_errmsg());
    /* A real library that is not NCCL. */
    setenv("CLLM_NCCL_LIB", "libm.so.6", 1);
    rc = cllm_nccl_init(&c, 0);
    CHECK_EQ_INT(rc, CLLM_EUNSUP);
    CHECK_MSG(strstr(cllm_errmsg(), "libm.so.6 has no ncclGetVersion") != NULL ||
              strstr(cllm_errmsg(), "no nccl.h") != NULL, "%s", cllm_errmsg());
    if (saved) setenv("CLLM_NCCL_LIB", saved, 1);
    else unsetenv("CLLM_NCCL_LIB");
    free(saved);
    TEST_OK("nccl_loader_errors");
}


/* 3. ZeRO-1: a trainer of this rank's slice (cllm_dist_slice) next to the
 * whole one t. Its device memory lacks the other slices' moments (and pads
 * weights and gradients to equal slices); from the same weights and
 * gradients whose sums are exact, reduce-scatter + step + all-gather give t's all-reduce + step
 * bit for bit, and its moments are t's for the slice. */
static void test_sharded(cllm_cuda_train *t, const cllm_model *m, const cllm_cuda_train_opts *o, cllm_nccl *c,
                         float *g, float *back) {
    const int R = cllm_dist_size(), rank = cllm_dist_rank();
    const size_t n = m->n_params;
    size_t off, len, off0, per;
    cllm_dist_slice(n, rank, R, &off, &len);
    cllm_dist_slice(n, 0, R, &off0, &per);
    cllm_cuda_train_opts so = *o;
    so.shard_rank = rank;
    so.shard_ranks = R;
    cllm_cuda_train *ts = NULL;
    cllm_adamw whole, part;
    memset(&whole, 0, sizeof whole);
    memset(&part, 0, sizeof part);
    CHECK_OK(cllm_cuda_train_init(&ts, m, &so));
    if (!ts) return;
    size_t want = cllm_cuda_train_bytes(t) - 8 * (n - len) + (R > 1 ? 8 * (per * (size_t)R - n) : 0);
    CHECK_MSG(cllm_cuda_train_bytes(ts) == want, "sharded trainer: %zu device bytes, want %zu (whole: %zu)",
              cllm_cuda_train_bytes(ts), want, cllm_cuda_train_bytes(t));
    CHECK_OK(cllm_cuda_train_set_params(t, m->params));
    for (size_t i = 0; i < n; i++) g[i] = (float)(i % 1000) + (float)rank;   /* sums exact in any order */
    CHECK_OK(cllm_cuda_train_set_grads(t, g));
    CHECK_OK(cllm_cuda_train_set_grads(ts, g));
    CHECK_OK(cllm_cuda_train_allreduce(t, c));
    CHECK_OK(cllm_cuda_train_allreduce(ts, c));
    CHECK_OK(cllm_cuda_train_get_grads(ts, back));
    size_t bad = 0;
    for (size_t i = off; i < off + len; i++)
        if (back[i] != (float)R * (float)(i % 1000) + (float)(R * (R - 1) / 2)) bad++;
    CHECK_MSG(bad == 0, "reduce-scatter: %zu of the slice's %zu sums differ", bad, len);
    double n1 = 0, n2 = 0;
    CHECK_OK(cllm_cuda_train_step(t, 1e-3, 0, &n1, NULL));
    CHECK_OK(cllm_cuda_train_step(ts, 1e-3, 0, &n2, NULL));
    CHECK_OK(cllm_cuda_train_gather(ts, c));
    CHECK_MSG(fabs(n1 - n2) <= 1e-12 * n1, "norm %.17g vs sharded %.17g", n1, n2);
    CHECK_OK(cllm_cuda_train_get_params(t, g));
    CHECK_OK(cllm_cuda_train_get_params(ts, back));
    CHECK_MSG(!memcmp(g, back, n * sizeof *g), "sharded step + all-gather differ from the whole step");
    CHECK_OK(cllm_adamw_init(&whole, n));
    CHECK_OK(cllm_adamw_init(&part, len));
    CHECK_OK(cllm_cuda_train_get_opt(t, &whole));
    CHECK_OK(cllm_cuda_train_get_opt(ts, &part));
    CHECK(!memcmp(whole.m + off, part.m, len * sizeof(float)) && !memcmp(whole.v + off, part.v, len * sizeof(float)));
    CHECK_EQ_INT(part.t, whole.t);
    printf("sharded trainer, rank %d: slice %zu+%zu of %zu, %zu device bytes (whole: %zu), step == whole step\n", rank,
           off, len, n, cllm_cuda_train_bytes(ts), cllm_cuda_train_bytes(t));
    cllm_adamw_free(&whole);
    cllm_adamw_free(&part);
    cllm_cuda_train_free(ts);
}

/* Gradients through the device all-reduce against the same sums on the host. */
static void test_allreduce(void) {
    const int R = cllm_dist_size(), rank = cllm_dist_rank();
    int dev = -1;
    CHECK_OK(cllm_nccl_pick_device(&dev, 1));
    if (check_failures) return;
    cllm_nccl *c = NULL;
    if (cllm_nccl_init(&c, dev)) {
        fprintf(stderr, "nccl: %s\n", cllm_errmsg());
        check_failures++;
        return;
    }
    printf("%s, rank %d of %d on device %d\n", cllm_nccl_describe(c), rank, R, dev);
    cllm_config cfg = small_config("llama", 2, 64, 2, 1, 32, 128, 100, 1, 0);
    cllm_model m;
    CHECK_OK(random_model(&m, &cfg, 5));
    cllm_cuda_train_opts o = {2, 16, 0, 0, 0, 0, dev, 0, 0, 0};
    cllm_cuda_train *t = NULL;
    CHECK_OK(cllm_cuda_train_init(&t, &m, &o));
    float *g = malloc(m.n_params * sizeof *g), *back = malloc(m.n_params * sizeof *back);
    if (!t || !g || !back) { check_failures++; goto out; }

    /* 1. Exact values: rank r sets element i to (i % 1000) + r; the sum is R*(i%1000) + R(R-1)/2. */
    for (size_t i = 0; i < m.n_params; i++) g[i] = (float)(i % 1000) + (float)rank;
    CHECK_OK(cllm_cuda_train_set_grads(t, g));
    CHECK_OK(cllm_cuda_train_allreduce(t, c));
    CHECK_OK(cllm_cuda_train_get_grads(t, back));
    size_t bad = 0;
    for (size_t i = 0; i < m.n_params; i++)
        if (back[i] != (float)R * (float)(i % 1000) + (float)(R * (R - 1) / 2)) bad++;
    CHECK_MSG(bad == 0, "%zu of %zu summed gradients differ", bad, m.n_params);

    /* 2. A micro-batch's gradients (different tokens per rank), summed on the devices vs on the host. */
    int tok[2 * 16], lens[2] = { 16, 11 };
    for (int i = 0; i < 32; i++) tok[i] = (i * 7 + rank * 13 + 3) % cfg.vocab;
    cllm_cuda_loss_row rows[8];
    for (int i = 0; i < 8; i++) rows[i] = (cllm_cuda_loss_row){ i < 4 ? 2 + i : 16 + 3 + i, tok[(i + 5) % 32], 0.125f, -1, 0, -1 };
    double ce = 0;
    CHECK_OK(cllm_cuda_train_zero_grad(t));
    CHECK_OK(cllm_cuda_train_micro(t, tok, lens, 2, 16, rows, 8, 0.0, 1, &ce, NULL));
    CHECK_OK(cllm_cuda_train_get_grads(t, g));
    CHECK_OK(cllm_dist_sum_f32(g, m.n_params));          /* the host's sum (MPI; a no-op for one rank) */
    CHECK_OK(cllm_cuda_train_allreduce(t, c));
    CHECK_OK(cllm_cuda_train_get_grads(t, back));
    double md = 0, mg = 0;
    for (size_t i = 0; i < m.n_params; i++) {
        double d = fabs((double)back[i] - g[i]);
        if (d > md) md = d;
        if (fabs(g[i]) > mg) mg = fabs(g[i]);
    }
    printf("micro-batch gradients summed over %d rank(s): NCCL vs host max error %.3g of scale %.3g\n", R, md, mg);
    CHECK(mg > 0);
    CHECK_MSG(md <= 1e-6 * mg * (R > 1 ? R : 1), "%.3g > 1e-6 x %.3g", md, mg);
    test_sharded(t, &m, &o, c, g, back);
out:
    free(g);
    free(back);
    cllm_cuda_train_free(t);
    cllm_model_free(&m);
    cllm_nccl_free(c);
    TEST_OK("nccl_allreduce");
}
#endif

int main(void) {
    CHECK_OK(cllm_dist_init());
    /* The local rank picks a rank's GPU: under `mpirun -np R` on one machine
     * (tests/sh/mpi.sh) it is the rank, and the local size is R. */
    CHECK(cllm_dist_local_size() >= 1 && cllm_dist_local_size() <= cllm_dist_size());
    CHECK(cllm_dist_local_rank() >= 0 && cllm_dist_local_rank() < cllm_dist_local_size());
    if (getenv("CLLM_TEST_ONE_NODE")) {
        CHECK_EQ_INT(cllm_dist_local_size(), cllm_dist_size());
        CHECK_EQ_INT(cllm_dist_local_rank(), cllm_dist_rank());
    }
    printf("rank %d of %d, local rank %d of %d\n", cllm_dist_rank(), cllm_dist_size(), cllm_dist_local_rank(),
           cllm_dist_local_size());
    /* --allreduce nccl needs a CUDA device (checked before anything loads). */
    cllm_train_opts o;
    cllm_train_opts_init(&o);
    o.output = "/nonexistent/out.gguf";
    o.allreduce = CLLM_ALLREDUCE_NCCL;
    o.device = CLLM_DEVICE_CPU;
    o.input = "/dev/null";
    cllm_model dummy;
    memset(&dummy, 0, sizeof dummy);
    CHECK_EQ_INT(cllm_train_run(&dummy, &o), CLLM_EINVAL);
    CHECK_MSG(strstr(cllm_errmsg(), "needs --device cuda") != NULL, "%s", cllm_errmsg());
    TEST_OK("nccl_needs_cuda");
#if !CLLM_CUDA
    printf("skip: NCCL and its device checks (built without CUDA)\n");
#else
    test_loader_errors();   /* collective: every rank tries, they agree on the failure */
    int n = 0;
    int rc = cllm_cuda_train_devices(&n);
    if (rc || n < 1) printf("skip: the all-reduce on devices: no CUDA device%s%s\n", rc ? ": " : "", rc ? cllm_errmsg() : "");
    else test_allreduce();
#endif
    CHECK_OK(cllm_dist_finalize());
    TEST_END();
}
