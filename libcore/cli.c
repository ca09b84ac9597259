/* cli.c: shared command-line helpers (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "forward.h"
#include "model.h"
#include "prompts.h"

volatile sig_atomic_t cllm_interrupted = 0;
static const char *prog_name = "cllm";

static void on_signal(int sig) {
    if (cllm_interrupted) { /* a second signal: stop now */
        signal(sig, SIG_DFL);
        raise(sig);
    }
    cllm_interrupted = sig;
}

/* Library warnings (err.h) on stderr, each distinct line once: an input read
 * again per epoch, or by several readers, would repeat the same warning. */
static void print_warning(const char *line) {
    static uint64_t seen[32];
    static int n_seen;
    uint64_t h = 1469598103934665603ull;   /* FNV-1a of the line */
    for (const unsigned char *c = (const unsigned char *)line; *c; c++) h = (h ^ *c) * 1099511628211ull;
    for (int i = 0; i < n_seen; i++)
        if (seen[i] == h) return;
    if (n_seen < 32) seen[n_seen++] = h;
    fprintf(stderr, "%s: warning: %s\n", prog_name, line);
}

void cllm_cli_init(char **argv) {
    const char *slash = strrchr(argv[0], '/');
    prog_name = slash ? slash + 1 : argv[0];
    /* getopt names argv[0] in its messages: make that the bare name too, so
     * every diagnostic starts "cllm-cat:", however the program was invoked. */
    argv[0] = (char *)prog_name;
    cllm_set_warn_handler(print_warning);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

const char *cllm_cli_prog(void) { return prog_name; }

static void verror(const char *fmt, va_list ap) {
    fflush(stdout);
    fprintf(stderr, "%s: ", prog_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cllm_cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    verror(fmt, ap);
    va_end(ap);
}

int cllm_cli_fail(void) {
    const char *m = cllm_errmsg();
    cllm_cli_error("%s", *m ? m : "failed");
    return CLLM_EXIT_FAIL;
}

int cllm_cli_usage_error(const char *fmt, ...) {
    if (fmt) { /* NULL: getopt has already said what is wrong */
        va_list ap;
        va_start(ap, fmt);
        verror(fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "Try '%s --help' for more information.\n", prog_name);
    return CLLM_EXIT_USAGE;
}

/* Whether s starts as a number is written: a digit, or '-' then a digit (or a
 * '.' then a digit where fractions are allowed). strtoll and strtod also take
 * leading blanks and a '+', so " 8" and "+8" passed as 8: a value quoted with
 * a stray space in a script, or a typo, should be refused, not guessed at. */
static int plain_number_start(const char *s, int fraction) {
    if (*s == '-') s++;
    if (fraction && *s == '.') s++;
    return *s >= '0' && *s <= '9';
}

int cllm_cli_int(const char *opt, const char *s, long long min, long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || !plain_number_start(s, 0))
        return cllm_cli_usage_error("option %s: '%s' is not an integer", opt, s);
    if (v < min || v > max)
        return cllm_cli_usage_error("option %s: %lld is out of range [%lld, %lld]", opt, v, min, max);
    *out = v;
    return 0;
}

int cllm_cli_double(const char *opt, const char *s, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || !plain_number_start(s, 1))
        return cllm_cli_usage_error("option %s: '%s' is not a number", opt, s);
    if (v < min || v > max)
        return cllm_cli_usage_error("option %s: %g is out of range [%g, %g]", opt, v, min, max);
    *out = v;
    return 0;
}

int cllm_cli_shard(const char *opt, const char *s, long long *i, long long *n) {
    char *end;
    errno = 0;
    long long a = strtoll(s, &end, 10);
    if (errno || end == s || *end != '/' || !plain_number_start(s, 0)) return cllm_cli_usage_error("option %s: '%s' is not of the form i/N", opt, s);
    const char *q = end + 1;
    long long b = strtoll(q, &end, 10);
    if (errno || end == q || *end || !plain_number_start(q, 0)) return cllm_cli_usage_error("option %s: '%s' is not of the form i/N", opt, s);
    if (b < 1 || a < 0 || a >= b) return cllm_cli_usage_error("option %s: shard %lld/%lld needs 0 <= i < N", opt, a, b);
    *i = a;
    *n = b;
    return 0;
}

int cllm_cli_start(const char *model_path, int *device, int threads, cllm_model *m, const char *path,
                   const cllm_prompt_opts *po, cllm_prompts **src) {
    int status = cllm_cli_device_resolve(device);
    if (status) return status;
    cllm_fwd_prepare(*device);   /* the device's start beside the model load */
    cllm_set_threads(threads);
    if (cllm_model_load(m, model_path)) return cllm_cli_fail();
    if ((status = cllm_cli_status(cllm_interrupted ? CLLM_EINTR : cllm_prompts_open(src, path, po, m->tok))))
        cllm_model_free(m);
    return status;
}

int cllm_cli_device(const char *arg, int *device) {
    if (!strcmp(arg, "cpu")) *device = CLLM_DEVICE_CPU;
    else if (!strcmp(arg, "cuda")) *device = CLLM_DEVICE_CUDA;
    else if (!strcmp(arg, "auto")) *device = CLLM_CLI_DEVICE_AUTO;
    else return cllm_cli_usage_error("--device: '%s' is not cpu, cuda or auto", arg);
    return 0;
}

int cllm_cli_device_resolve(int *device) {
    if (*device == CLLM_DEVICE_CPU) return 0;
    char why[256];
    int driver = 0;
    if (cllm_cuda_usable(why, sizeof why, &driver)) {
        *device = CLLM_DEVICE_CUDA;
        return 0;
    }
    if (*device == CLLM_DEVICE_CUDA) {
        cllm_cli_error("--device cuda: no CUDA device: %s", why);
        return CLLM_EXIT_FAIL;
    }
    if (driver) cllm_cli_error("no usable CUDA device (%s); running on the CPU", why);
    *device = CLLM_DEVICE_CPU;
    return 0;
}

void cllm_cli_version(void) { printf("%s (cllm) %s\n", prog_name, CLLM_VERSION); }

/* A write error seen only now (the flush, an earlier failed write, the close)
 * is reported, EPIPE too (SIGPIPE ignored: the man pages say the failed write
 * is reported); after a failure that was already reported (status != 0) one
 * line is enough. */
int cllm_cli_finish(int status) {
    if (fflush(stdout) != 0 || ferror(stdout) || fclose(stdout) != 0) {
        if (!status) cllm_cli_error("write error: %s", strerror(errno));
        return status ? status : CLLM_EXIT_FAIL;
    }
    return status;
}

int cllm_cli_interrupted_status(void) { return 128 + (int)cllm_interrupted; }

int cllm_cli_status(int rc) {
    if (!rc) return 0;
    return rc == CLLM_EINTR ? cllm_cli_interrupted_status() : cllm_cli_fail();
}
