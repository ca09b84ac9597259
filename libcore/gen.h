/* gen.h: the work behind cllm-gen: decode every prompt of a source with AR or
 * Jacobi decoding and write one gen record per prompt (or plain text). */
#ifndef CLLM_GEN_H
#define CLLM_GEN_H

#include "decode.h"
#include "model.h"
#include "prompts.h"
#include "records.h"
#include "stream.h"

typedef struct cllm_gen_opts {
    cllm_decode_opts dec;     /* method, n, max_new_tokens, guess, seed, trace */
    int text;                 /* plain text on stdout instead of a stream */
    int batch;                /* prompts decoded at once, one forward call per step (0 or 1: one) */
    int device;               /* enum cllm_device (forward.h) */
    const char *output;       /* NULL: stdout */
    int force;                /* write a stream to a terminal */
    int argc;                 /* the command line, for the header */
    char *const *argv;
} cllm_gen_opts;

/* Returns 0, CLLM_EINTR when a signal stopped it (the stream is then closed
 * with an end record marked "interrupted"), or a CLLM_E* code. */
int cllm_gen_run(const cllm_model *m, cllm_prompts *src, const cllm_gen_opts *o);

/* The decoding options cllm-gen and cllm-bench share (-n/--block,
 * --max-new-tokens, --init prompt|pad|last, --seed): splice
 * CLLM_DECODE_LONGOPTS into a getopt_long table ("n:" in its short options)
 * and hand each option code to cllm_decode_opt(), as with the prompt options
 * (prompts.h). */
enum { CLLM_OPT_MAX_NEW = 0x1100, CLLM_OPT_INIT, CLLM_OPT_SEED };
#define CLLM_DECODE_LONGOPTS                                              \
    { "block", required_argument, 0, 'n' },                               \
    { "max-new-tokens", required_argument, 0, CLLM_OPT_MAX_NEW },         \
    { "init", required_argument, 0, CLLM_OPT_INIT },                      \
    { "seed", required_argument, 0, CLLM_OPT_SEED }

/* Apply option c (with its argument) to o: 0 when handled, CLLM_EXIT_USAGE
 * (message printed) for a bad value, -1 when c is none of these. */
int cllm_decode_opt(cllm_decode_opts *o, int c, const char *arg);

/* Opens the output stream of program prog's run on model m (cllm_writer_open:
 * path NULL or "-" is stdout) and writes its header record: producer
 * "prog VERSION", the model's name, vocabulary and tokenizer hash, the command
 * line. b is the caller's pack buffer. On a failure after the open, *w is set
 * and the caller aborts it (cllm_writer_abort) as on any later failure. */
int cllm_writer_open_for_model(cllm_writer **w, cllm_packbuf *b, const char *path, int force, const cllm_model *m,
                               const char *prog, int argc, char *const *argv);

#endif
