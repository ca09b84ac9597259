/* cli.h: what every cllm binary shares: its name in messages, option value
 * parsing that rejects bad values instead of clamping, signal handling, and the
 * exit-status conventions.
 *
 * Exit status: 0 success, 1 runtime failure (bad input, I/O, out of memory),
 * 2 usage error, 130/143 after SIGINT/SIGTERM (the record in hand is finished
 * and the stream closed with an end record marked "interrupted", so readers
 * see it is whole but short; a regular output file is removed).
 */
#ifndef CLLM_CLI_H
#define CLLM_CLI_H

#include <signal.h>
#include <stdint.h>

enum { CLLM_EXIT_OK = 0, CLLM_EXIT_FAIL = 1, CLLM_EXIT_USAGE = 2 };

/* Set by the SIGINT/SIGTERM handler: the signal number, 0 while none came. */
extern volatile sig_atomic_t cllm_interrupted;

/* Remember the program name (argv[0]'s last component, which also replaces
 * argv[0], so getopt's messages start with it) and install the signal
 * handlers. */
void cllm_cli_init(char **argv);
const char *cllm_cli_prog(void);

/* "prog: message\n" on stderr (stdout flushed first so data and errors keep
 * their order). */
void cllm_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "prog: <libcllm's last error message>". Returns CLLM_EXIT_FAIL. */
int cllm_cli_fail(void);
/* Usage error: message (none when fmt is NULL, e.g. after getopt's own)
 * plus "Try 'prog --help'". Returns CLLM_EXIT_USAGE. */
int cllm_cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse option values: 0 on success, else a usage error is printed and
 * CLLM_EXIT_USAGE returned. */
int cllm_cli_int(const char *opt, const char *s, long long min, long long max, long long *out);
int cllm_cli_double(const char *opt, const char *s, double min, double max, double *out);
/* "i/N" with 0 <= i < N. */
int cllm_cli_shard(const char *opt, const char *s, long long *i, long long *n);

/* --device cpu|cuda|auto: *device = CLLM_DEVICE_CPU, CLLM_DEVICE_CUDA or
 * CLLM_CLI_DEVICE_AUTO. Returns 0, or a usage error's exit status. */
enum { CLLM_CLI_DEVICE_AUTO = -1 };
int cllm_cli_device(const char *arg, int *device);
/* Settle the device of an inference program (call after parsing, before
 * loading the model):
 *   auto  CUDA when the build has CUDA and a device answers, else the CPU,
 *         with one line on stderr when the build has CUDA and an NVIDIA
 *         driver but no usable device (a build without CUDA, or a machine
 *         without a driver, says nothing: the CPU is what it has);
 *   cuda  "prog: --device cuda: no CUDA device: <reason>" and
 *         CLLM_EXIT_FAIL when there is none.
 * Returns 0 with *device set to CLLM_DEVICE_CPU or CLLM_DEVICE_CUDA, or an
 * exit status. */
int cllm_cli_device_resolve(int *device);

/* The start of a program that decodes prompts (cllm-gen, cllm-traj), after
 * its options: the device settled (cllm_cli_device_resolve) and started
 * beside the model's load, the CPU threads, the model, then the prompts of
 * path (NULL: standard input). After a signal during the load the prompts
 * are not opened (a read begun then would wait for a pipe's writer): the
 * program ends 130/143 with no stream, as if signalled before it started.
 * Returns 0 with *m loaded and *src open (the caller frees both), or an exit
 * status with nothing to free. */
struct cllm_model;
struct cllm_prompts;
struct cllm_prompt_opts;
int cllm_cli_start(const char *model_path, int *device, int threads, struct cllm_model *m, const char *path,
                   const struct cllm_prompt_opts *po, struct cllm_prompts **src);

/* Print "prog (cllm) VERSION" to stdout. */
void cllm_cli_version(void);

/* Flush and close stdout, reporting delayed write errors: the status to exit
 * with (status unchanged when all is well). */
int cllm_cli_finish(int status);

/* Exit status for an interrupted run: 128 + signal. */
int cllm_cli_interrupted_status(void);
/* The exit status for a library call's result: 0, 128 + signal for
 * CLLM_EINTR (quietly: the program was told to stop), else the error's
 * message on stderr and CLLM_EXIT_FAIL. */
int cllm_cli_status(int rc);

#endif
