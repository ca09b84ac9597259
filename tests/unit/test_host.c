/* test_host: the small host modules every program shares, checked against
 * their headers' contracts:
 *   outq.h     the ring of jobs: capacity, input order whatever the finishing
 *              order, a job streamed before it is done, retirement and reuse
 *              across the ring's wrap, a sink's error;
 *   cli.h      option values at and past their bounds (integers, numbers,
 *              shards, devices; gen.h's decoding options), the messages and
 *              statuses (1, 2, 130, 143),
 *              a second SIGINT/SIGTERM ending the process, delayed write
 *              errors at exit, warnings printed once;
 *   startup.h  the thread count (set, reset, the affinity mask) and the
 *              parallel bf16 conversion across its task boundaries;
 *   dist.h     one rank without a launcher, the launcher variables refused
 *              with CLLM_MPI=0 (or without MPI), the mean's division.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "cli.h"
#include "dist.h"
#include "err.h"
#include "forward.h"
#include "gen.h"
#include "gguf.h"
#include "outq.h"
#include "startup.h"

/* ---- outq ---- */

typedef struct sink_log { char s[256]; int calls, fail_at; } sink_log;

/* Records joined with '|' ('<>' for an empty one); fails (CLLM_EIO) on call fail_at. */
static int sink(void *ctx, const void *data, size_t len) {
    sink_log *l = ctx;
    if (++l->calls == l->fail_at) return CLLM_EIO;
    size_t at = strlen(l->s);
    if (len == 0) { memcpy(l->s + at, "<>", 2); at += 2; }
    memcpy(l->s + at, data, len);
    l->s[at + len] = '|';
    l->s[at + len + 1] = 0;
    return 0;
}

static void add(cllm_outq_job *j, const char *s) { CHECK_OK(cllm_outq_add(j, s, strlen(s))); }

static void test_outq(void) {
    cllm_outq q;
    CHECK_OK(cllm_outq_init(&q, 3));
    cllm_outq_job *a = cllm_outq_push(&q), *b = cllm_outq_push(&q), *c = cllm_outq_push(&q);
    CHECK(a && b && c && a != b && b != c && a != c);
    CHECK(cllm_outq_push(&q) == NULL);   /* all 3 in flight */
    sink_log l = {{0}, 0, 0};
    add(b, "b1");
    b->done = 1;
    add(c, "c1");
    CHECK_OK(cllm_outq_drain(&q, sink, &l));
    CHECK_STR(l.s, "");                   /* the head (a) has nothing yet */
    add(a, "a1");
    CHECK_OK(cllm_outq_add(a, "", 0));
    add(a, "a3");
    CHECK_OK(cllm_outq_drain(&q, sink, &l));
    CHECK_STR(l.s, "a1|<>|a3|");          /* the head streams before it is done */
    CHECK(cllm_outq_push(&q) == NULL);
    add(a, "a4");
    a->done = 1;
    CHECK_OK(cllm_outq_drain(&q, sink, &l));
    CHECK_STR(l.s, "a1|<>|a3|a4|b1|c1|"); /* a and b retired, c (not done) streamed */
    CHECK_EQ_INT(q.len, 1);
    /* Two slots free again: the ring wraps, the order stays. */
    cllm_outq_job *d = cllm_outq_push(&q), *e = cllm_outq_push(&q);
    CHECK(d == a && e == b);
    CHECK(cllm_outq_push(&q) == NULL);
    CHECK(d && d->done == 0 && d->n_rec == 0 && d->size == 0 && d->written == 0);
    add(e, "e1");
    e->done = 1;
    add(d, "d1");
    d->done = 1;
    add(c, "c2");
    l.s[0] = 0;
    CHECK_OK(cllm_outq_drain(&q, sink, &l));
    CHECK_STR(l.s, "c2|");
    c->done = 1;
    CHECK_OK(cllm_outq_drain(&q, sink, &l));
    CHECK_STR(l.s, "c2|d1|e1|");
    CHECK_EQ_INT(q.len, 0);
    CHECK_OK(cllm_outq_drain(&q, sink, &l));   /* empty: nothing */
    CHECK_STR(l.s, "c2|d1|e1|");
    /* Three more around the ring, a big record that makes the buffer grow. */
    cllm_outq_job *f = cllm_outq_push(&q), *g = cllm_outq_push(&q), *h = cllm_outq_push(&q);
    CHECK(f == c && g == a && h == b && cllm_outq_push(&q) == NULL);
    char big[200];
    memset(big, 'x', 199);
    big[199] = 0;
    add(g, "g1");
    add(g, big);
    g->done = h->done = 1;
    add(f, "f1");
    f->done = 1;
    l.s[0] = 0;
    l.calls = 0;
    l.fail_at = 2;   /* the sink fails on g1: drain says so and stops there */
    CHECK_EQ_INT(cllm_outq_drain(&q, sink, &l), CLLM_EIO);
    CHECK_STR(l.s, "f1|");
    CHECK_EQ_INT(l.calls, 2);
    l.fail_at = 0;
    l.s[0] = 0;
    CHECK_OK(cllm_outq_drain(&q, sink, &l));
    CHECK(strncmp(l.s, "g1|xxx", 6) == 0 && strlen(l.s) == 3 + 200);
    CHECK_EQ_INT(q.len, 0);
    cllm_outq_free(&q);
    CHECK(q.jobs == NULL && q.cap == 0);
    CHECK_OK(cllm_outq_init(&q, 1));
    cllm_outq_job *k = cllm_outq_push(&q);
    CHECK(k != NULL && cllm_outq_push(&q) == NULL);
    /* 17 bytes into an empty job: a buffer grown one byte short would get
     * cllm_grow's first capacity, 16, and the copy would run past it (ASan,
     * in make check's run of the unit tests, sees that). */
    add(k, "0123456789abcdefg");
    k->done = 1;
    l.s[0] = 0;
    CHECK_OK(cllm_outq_drain(&q, sink, &l));
    CHECK_STR(l.s, "0123456789abcdefg|");
    cllm_outq_free(&q);
    TEST_OK("outq: capacity, input order, streaming the head, retiring, the wrap, a sink's error");
}

/* ---- cli ---- */

static char errfile[] = "/tmp/cllm-test-host-XXXXXX";
static int saved_stderr = -1;

/* stderr into errfile until captured() returns what was written. */
static void capture(void) {
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(errfile, O_WRONLY | O_TRUNC);
    dup2(fd, 2);
    close(fd);
}
static const char *captured(void) {
    static char buf[4096];
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    int fd = open(errfile, O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

static void int_case(const char *s, long long min, long long max, int want_rc, long long want, const char *msg) {
    long long v = -777;
    capture();
    int rc = cllm_cli_int("-n", s, min, max, &v);
    const char *e = captured();
    CHECK_MSG(rc == want_rc && v == (want_rc ? -777 : want), "'%s' in [%lld, %lld]: rc %d, value %lld", s, min, max,
              rc, v);
    if (want_rc)
        CHECK_MSG(strstr(e, msg) && strstr(e, "Try 'cllm-test --help' for more information.\n"), "'%s': %s", s, e);
    else
        CHECK_MSG(!*e, "'%s' printed %s", s, e);
}

static void double_case(const char *s, double min, double max, int want_rc, double want, const char *msg) {
    double v = -777;
    capture();
    int rc = cllm_cli_double("--x", s, min, max, &v);
    const char *e = captured();
    CHECK_MSG(rc == want_rc && v == (want_rc ? -777 : want), "'%s' in [%g, %g]: rc %d, value %g", s, min, max, rc,
              v);
    if (want_rc) CHECK_MSG(strstr(e, msg) && strstr(e, "Try 'cllm-test --help'"), "'%s': %s", s, e);
}

static void shard_case(const char *s, int want_rc, long long wi, long long wn, const char *msg) {
    long long i = -7, n = -7;
    capture();
    int rc = cllm_cli_shard("--shard", s, &i, &n);
    const char *e = captured();
    CHECK_MSG(rc == want_rc && i == (want_rc ? -7 : wi) && n == (want_rc ? -7 : wn), "'%s': rc %d, %lld/%lld", s, rc,
              i, n);
    if (want_rc) CHECK_MSG(strstr(e, msg), "'%s': %s", s, e);
}

static void test_cli_values(void) {
    const char *E = "is not an integer", *R = "is out of range";
    int_case("5", 5, 5, 0, 5, NULL);
    int_case("4", 5, 5, 2, 0, "option -n: 4 is out of range [5, 5]");
    int_case("6", 5, 5, 2, 0, "option -n: 6 is out of range [5, 5]");
    int_case("-3", -3, 0, 0, -3, NULL);
    int_case("-4", -3, 0, 2, 0, R);
    int_case("1", -3, 0, 2, 0, R);
    int_case("9223372036854775807", 0, INT64_MAX, 0, INT64_MAX, NULL);
    int_case("9223372036854775808", 0, INT64_MAX, 2, 0, E);   /* ERANGE, not clamped */
    int_case("-9223372036854775809", INT64_MIN, 0, 2, 0, E);
    int_case("12x", 0, 100, 2, 0, "option -n: '12x' is not an integer");
    int_case("", 0, 100, 2, 0, E);
    int_case("x", 0, 100, 2, 0, E);
    int_case("1.5", 0, 100, 2, 0, E);
    int_case("0x10", 0, 100, 2, 0, E);   /* base 10 */
    int_case("010", 0, 100, 0, 10, NULL);

    const char *N = "is not a number";
    double_case("0.5", 0, 1, 0, 0.5, NULL);
    double_case("0", 0, 1, 0, 0, NULL);
    double_case("1", 0, 1, 0, 1, NULL);
    double_case("1.0000001", 0, 1, 2, 0, "option --x: 1 is out of range [0, 1]");
    double_case("-1e-300", 0, 1, 2, 0, R);
    double_case("nan", 0, 1, 2, 0, "option --x: 'nan' is not a number");
    double_case("inf", -INFINITY, INFINITY, 2, 0, N);
    double_case("-inf", -INFINITY, INFINITY, 2, 0, N);
    double_case("1e999", 0, INFINITY, 2, 0, N);
    double_case("1x", 0, 1, 2, 0, N);
    double_case("", 0, 1, 2, 0, N);
    double_case("2.5e-1", 0, 1, 0, 0.25, NULL);

    const char *F = "is not of the form i/N", *B = "needs 0 <= i < N";
    shard_case("0/1", 0, 0, 1, NULL);
    shard_case("2/3", 0, 2, 3, NULL);
    shard_case("3/3", 2, 0, 0, "option --shard: shard 3/3 needs 0 <= i < N");
    shard_case("-1/3", 2, 0, 0, B);
    shard_case("0/0", 2, 0, 0, B);
    shard_case("1/0", 2, 0, 0, B);
    shard_case("0/-2", 2, 0, 0, B);
    shard_case("1/", 2, 0, 0, F);
    shard_case("/3", 2, 0, 0, F);
    shard_case("1/3x", 2, 0, 0, F);
    shard_case("1-3", 2, 0, 0, F);
    shard_case("1", 2, 0, 0, F);
    shard_case("99999999999999999999/3", 2, 0, 0, F);
    shard_case("0/99999999999999999999", 2, 0, 0, F);

    int dev = 99;
    CHECK(cllm_cli_device("cpu", &dev) == 0 && dev == CLLM_DEVICE_CPU);
    CHECK(cllm_cli_device("cuda", &dev) == 0 && dev == CLLM_DEVICE_CUDA);
    CHECK(cllm_cli_device("auto", &dev) == 0 && dev == CLLM_CLI_DEVICE_AUTO);
    dev = 99;
    capture();
    int rc = cllm_cli_device("gpu", &dev);
    const char *e = captured();
    CHECK(rc == CLLM_EXIT_USAGE && dev == 99 && strstr(e, "cllm-test: --device: 'gpu' is not cpu, cuda or auto\n"));
    dev = CLLM_DEVICE_CPU;
    CHECK(cllm_cli_device_resolve(&dev) == 0 && dev == CLLM_DEVICE_CPU);

    /* gen.h's decoding options (cllm-gen, cllm-bench): each sets its field,
     * a bad value is a usage error that leaves the field as it was, any other
     * option code is not theirs (-1). */
    cllm_decode_opts d;
    cllm_decode_opts_init(&d);
    cllm_decode_opts d0 = d;
    CHECK(cllm_decode_opt(&d, 'n', "1024") == 0 && d.n == 1024);
    CHECK(cllm_decode_opt(&d, CLLM_OPT_MAX_NEW, "7") == 0 && d.max_new_tokens == 7);
    CHECK(cllm_decode_opt(&d, CLLM_OPT_INIT, "pad") == 0 && d.guess == CLLM_GUESS_PAD);
    CHECK(cllm_decode_opt(&d, CLLM_OPT_INIT, "last") == 0 && d.guess == CLLM_GUESS_LAST);
    CHECK(cllm_decode_opt(&d, CLLM_OPT_INIT, "prompt") == 0 && d.guess == CLLM_GUESS_PROMPT);
    CHECK(cllm_decode_opt(&d, CLLM_OPT_SEED, "9223372036854775807") == 0 && d.seed == (uint64_t)INT64_MAX);
    d = d0;
    const struct { int c; const char *arg, *msg; } bad[] = {
        { 'n', "0", "option --block: 0 is out of range [1, 1024]" },
        { 'n', "1025", "option --block: 1025 is out of range [1, 1024]" },
        { CLLM_OPT_MAX_NEW, "0", "option --max-new-tokens: 0 is out of range [1, 1048576]" },
        { CLLM_OPT_MAX_NEW, "1048577", "out of range" },
        { CLLM_OPT_INIT, "vocab", "--init: 'vocab' is not prompt, pad or last" },
        { CLLM_OPT_SEED, "-1", "option --seed: -1 is out of range" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        capture();
        rc = cllm_decode_opt(&d, bad[i].c, bad[i].arg);
        e = captured();
        CHECK_MSG(rc == CLLM_EXIT_USAGE && strstr(e, bad[i].msg), "%s: %d %s", bad[i].arg, rc, e);
    }
    CHECK(cllm_decode_opt(&d, CLLM_OPT_SHARD, "0/2") == -1 && cllm_decode_opt(&d, 't', "2") == -1);
    CHECK(d.n == d0.n && d.max_new_tokens == d0.max_new_tokens && d.guess == d0.guess && d.seed == d0.seed &&
          d.method == d0.method);

    capture();
    rc = cllm_cli_usage_error(NULL);
    e = captured();
    CHECK(rc == CLLM_EXIT_USAGE && !strcmp(e, "Try 'cllm-test --help' for more information.\n"));
    capture();
    cllm_error(CLLM_EINVAL, "no such %s", "thing");
    rc = cllm_cli_fail();
    e = captured();
    CHECK_MSG(rc == CLLM_EXIT_FAIL && !strcmp(e, "cllm-test: no such thing\n"), "%d %s", rc, e);
    /* Warnings: "prog: warning: line", each distinct line once. */
    capture();
    cllm_warn("odd %d", 1);
    cllm_warn("odd %d", 2);
    cllm_warn("odd %d", 1);
    cllm_warn("odd %d", 2);
    e = captured();
    CHECK_MSG(!strcmp(e, "cllm-test: warning: odd 1\ncllm-test: warning: odd 2\n"), "%s", e);
    TEST_OK("cli: integers, numbers, shards and devices at their bounds; usage, failure and warning lines");
}

/* Run fn in a child with stdout on out_fd (when >= 0); its exit status, or
 * 128 + the signal that ended it. */
static int in_child(int (*fn)(void), int out_fd) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (out_fd >= 0) dup2(out_fd, 1);
        _exit(fn());
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st) + 1000;
}

static int one_int(void) {
    raise(SIGINT);
    return cllm_interrupted == SIGINT ? cllm_cli_interrupted_status() : 3;
}
static int one_term(void) {
    raise(SIGTERM);
    return cllm_interrupted == SIGTERM ? cllm_cli_interrupted_status() : 3;
}
static int two_signals(void) {   /* the second one ends the process by that signal */
    raise(SIGTERM);
    if (cllm_interrupted != SIGTERM) return 3;
    raise(SIGINT);
    return 4;
}
static int write_then_finish(void) { printf("some output\n"); return cllm_cli_finish(0); }
static int write_then_finish_failed(void) { printf("some output\n"); return cllm_cli_finish(7); }

static void test_cli_exits(void) {
    CHECK_EQ_INT(in_child(one_int, -1), 130);
    CHECK_EQ_INT(in_child(one_term, -1), 143);
    CHECK_EQ_INT(in_child(two_signals, -1), 1000 + 128 + SIGINT);
    cllm_interrupted = SIGINT;
    CHECK_EQ_INT(cllm_cli_interrupted_status(), 130);
    cllm_interrupted = SIGTERM;
    CHECK_EQ_INT(cllm_cli_interrupted_status(), 143);
    cllm_interrupted = 0;
    int full = open("/dev/full", O_WRONLY);
    if (full >= 0) {
        capture();
        int rc = in_child(write_then_finish, full);
        const char *e = captured();
        CHECK_MSG(rc == CLLM_EXIT_FAIL && !strcmp(e, "cllm-test: write error: No space left on device\n"), "%d %s", rc,
                  e);
        capture();
        rc = in_child(write_then_finish_failed, full);   /* already reported: the status stays, no line */
        e = captured();
        CHECK_MSG(rc == 7 && !*e, "%d %s", rc, e);
        close(full);
    }
    /* SIGPIPE ignored, the reader gone: cllm-cat(1) says the failed write is
     * reported and the status is 1, also when it shows only at exit. */
    int p[2];
    CHECK(pipe(p) == 0);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    capture();
    int rc0 = in_child(write_then_finish, p[1]);
    const char *e0 = captured();
    signal(SIGPIPE, SIG_DFL);
    close(p[1]);
    CHECK_MSG(rc0 == CLLM_EXIT_FAIL && !strcmp(e0, "cllm-test: write error: Broken pipe\n"), "%d %s", rc0, e0);
    int null = open("/dev/null", O_WRONLY);
    capture();
    int rc = in_child(write_then_finish, null);
    const char *e = captured();
    CHECK_MSG(rc == 0 && !*e, "%d %s", rc, e);
    rc = in_child(write_then_finish_failed, null);
    CHECK_EQ_INT(rc, 7);
    close(null);
    TEST_OK("cli: 130 and 143 after SIGINT and SIGTERM, a second signal ends the process, write errors at exit");
}

/* ---- startup ---- */

static int counts[1000], bad_worker, worker_seen[16];

/* Each task takes 50 us, sleeping: the other threads get their share. */
static void count_task(void *ctx, int task, int worker) {
    (void)ctx;
    __atomic_fetch_add(&counts[task], 1, __ATOMIC_RELAXED);
    if (worker < 0 || worker >= cllm_startup_threads() || worker >= 16)
        __atomic_store_n(&bad_worker, 1, __ATOMIC_RELAXED);
    else
        __atomic_store_n(&worker_seen[worker], 1, __ATOMIC_RELAXED);
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
}

static int one_cpu_threads(void) {   /* the first CPU of the mask only */
    cpu_set_t set, one;
    if (sched_getaffinity(0, sizeof set, &set)) return 98;
    int cpu = 0;
    while (cpu < CPU_SETSIZE - 1 && !CPU_ISSET(cpu, &set)) cpu++;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one)) return 99;
    return cllm_startup_threads();
}

static void test_startup(void) {
    cpu_set_t set;
    CHECK(sched_getaffinity(0, sizeof set, &set) == 0);
    int mask = CPU_COUNT(&set), want = mask < 16 ? mask : 16;
    CHECK_EQ_INT(cllm_startup_threads(), want);
    cllm_set_startup_threads(5);
    CHECK_EQ_INT(cllm_startup_threads(), 5);
    cllm_set_startup_threads(1);
    CHECK_EQ_INT(cllm_startup_threads(), 1);
    cllm_set_startup_threads(-3);   /* not >= 1: back to the mask */
    CHECK_EQ_INT(cllm_startup_threads(), want);
    cllm_set_startup_threads(0);
    CHECK_EQ_INT(cllm_startup_threads(), want);
    CHECK_EQ_INT(in_child(one_cpu_threads, -1), 1);

    cllm_set_startup_threads(3);
    cllm_startup_parallel(1000, count_task, NULL);
    int wrong = 0;
    for (int i = 0; i < 1000; i++) wrong += counts[i] != 1;
    int workers = 0;
    for (int w = 0; w < 16; w++) workers += worker_seen[w];
    CHECK_MSG(!wrong && !bad_worker, "%d tasks not run once, bad worker %d", wrong, bad_worker);
    CHECK_MSG(workers >= 2, "1000 tasks of 50 us on 3 threads ran on %d", workers);   /* not on one thread */

    /* bf16 of values with at most 8 significant bits is exact: the float's
     * upper 16 bits. Sizes around the conversion's tasks (2^16 elements). */
    const size_t sizes[] = {0, 1, 65535, 65536, 65537, 2 * 65536, 3 * 65536 + 5};
    size_t max = 3 * 65536 + 5;
    float *src = malloc(max * sizeof *src);
    uint16_t *dst = malloc((max + 1) * sizeof *dst);
    for (size_t i = 0; i < max; i++) src[i] = (float)((int)(i % 251) - 125) * 0.25f;
    for (int th = 1; th <= 4; th += 3) {
        cllm_set_startup_threads(th);
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            size_t n = sizes[k];
            for (size_t i = 0; i <= max; i++) dst[i] = 0xdead;
            cllm_startup_f32_to_bf16(src, dst, n);
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                uint32_t x;
                memcpy(&x, &src[i], 4);
                bad += dst[i] != (uint16_t)(x >> 16);
            }
            CHECK_MSG(!bad && dst[n] == 0xdead, "%d threads, n %zu: %zu wrong, dst[n] %04x", th, n, bad, dst[n]);
        }
    }
    cllm_set_startup_threads(0);
    free(src);
    free(dst);
    TEST_OK("startup: thread counts, each task once, bf16 conversion across task boundaries");
}

/* ---- dist ---- */

static void test_dist(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMIX_SIZE",
                                 "SLURM_NTASKS", "CLLM_MPI"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
    /* A launcher's variables with CLLM_MPI=0 (with MPI) or without MPI: one
     * process is fine, several are refused. */
    int mpi = cllm_dist_compiled();
    if (mpi) setenv("CLLM_MPI", "0", 1);
    int refused = mpi ? CLLM_EINVAL : CLLM_EUNSUP;
    static const struct { const char *set[2][2]; int several; } cases[] = {
        {{{"OMPI_COMM_WORLD_SIZE", "2"}, {NULL, NULL}}, 1},
        {{{"OMPI_COMM_WORLD_SIZE", "1"}, {NULL, NULL}}, 0},
        {{{"PMI_SIZE", "3"}, {NULL, NULL}}, 1},
        {{{"PMI_RANK", "0"}, {"PMIX_SIZE", "4"}}, 1},
        {{{"PMIX_RANK", "0"}, {"SLURM_NTASKS", "2"}}, 1},
        {{{"PMIX_RANK", "1"}, {NULL, NULL}}, 0},   /* no size given: one */
        {{{"PMI_RANK", "0"}, {"PMI_SIZE", "0"}}, 0},
        {{{"SLURM_NTASKS", "8"}, {NULL, NULL}}, 0},   /* no launcher variable: not launched */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        for (int k = 0; k < 2; k++)
            if (cases[c].set[k][0]) setenv(cases[c].set[k][0], cases[c].set[k][1], 1);
        int rc = cllm_dist_init();
        CHECK_MSG(rc == (cases[c].several ? refused : 0), "case %zu: %d %s", c, rc, cllm_errmsg());
        for (int k = 0; k < 2; k++)
            if (cases[c].set[k][0]) unsetenv(cases[c].set[k][0]);
    }
    unsetenv("CLLM_MPI");
    CHECK_OK(cllm_dist_init());
    CHECK(cllm_dist_rank() == 0 && cllm_dist_size() == 1 && cllm_dist_local_rank() == 0 &&
          cllm_dist_local_size() == 1);
    float b[3] = {2, 4, -6};
    CHECK_OK(cllm_dist_sum_f32(b, 3));
    CHECK(b[0] == 2 && b[1] == 4 && b[2] == -6);
    CHECK_OK(cllm_dist_mean_f32(b, 3, 1));
    CHECK(b[0] == 2 && b[1] == 4 && b[2] == -6);
    CHECK_OK(cllm_dist_mean_f32(b, 3, 2));
    CHECK(b[0] == 1 && b[1] == 2 && b[2] == -3);
    CHECK_OK(cllm_dist_mean_f32(b, 2, 4));
    CHECK(b[0] == 0.25f && b[1] == 0.5f && b[2] == -3);
    CHECK_EQ_INT(cllm_dist_mean_f32(b, 3, 0), CLLM_EINVAL);
    CHECK_EQ_INT(cllm_dist_mean_f32(b, 3, -2), CLLM_EINVAL);
    CHECK_EQ_INT(cllm_dist_mean_f32(b, 3, NAN), CLLM_EINVAL);
    CHECK(b[0] == 0.25f && b[1] == 0.5f && b[2] == -3);
    double d[2] = {1.5, 2};
    int64_t m[2] = {-3, 9};
    uint8_t bytes[4] = {1, 2, 3, 4};
    CHECK_OK(cllm_dist_sum_f64(d, 2));
    CHECK_OK(cllm_dist_max_i64(m, 2));
    CHECK_OK(cllm_dist_bcast(bytes, 4, 0));
    CHECK_OK(cllm_dist_check_same(bytes, 4, "bytes"));
    CHECK_OK(cllm_dist_barrier());
    CHECK(d[0] == 1.5 && d[1] == 2 && m[0] == -3 && m[1] == 9 && bytes[3] == 4);
    CHECK_OK(cllm_dist_finalize());
    TEST_OK("dist: one rank without a launcher, launchers refused with CLLM_MPI=0 or without MPI, the mean");
}

int main(int argc, char **argv) {
    (void)argc;
    int fd = mkstemp(errfile);
    CHECK(fd >= 0);
    close(fd);
    char name[] = "/some/dir/cllm-test", *args[] = {name, NULL};
    cllm_cli_init(args);
    CHECK_STR(cllm_cli_prog(), "cllm-test");
    CHECK_STR(args[0], "cllm-test");
    (void)argv;
    test_outq();
    test_cli_values();
    test_cli_exits();
    test_startup();
    test_dist();
    unlink(errfile);
    TEST_END();
}
