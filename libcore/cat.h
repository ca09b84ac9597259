/* cat.h: the work behind cllm-cat: read streams or JSONL, filter, and write a
 * stream, JSONL, per-type counts or a validation verdict. */
#ifndef CLLM_CAT_H
#define CLLM_CAT_H

#include <stddef.h>
#include <stdint.h>

enum cllm_cat_mode { CLLM_CAT_STREAM, CLLM_CAT_JSONL, CLLM_CAT_COUNT, CLLM_CAT_CHECK };

typedef struct cllm_cat_opts {
    int mode;               /* enum cllm_cat_mode */
    int from_jsonl;         /* inputs are JSONL, not streams */
    const char *field;      /* --field: text of prompt records from JSONL */
    const char *output;     /* -o (NULL: stdout) */
    int force;              /* -f: write a stream to a terminal */
    int level;              /* zstd level */
    int64_t head;           /* keep at most this many data records (-1: all) */
    const char *const *types; /* --type filters (NULL-terminated), NULL: all */
    size_t max_record;      /* reader's record size limit */
    size_t max_window;      /* reader's zstd window limit (0: the default) */
    int quiet;
    int argc;               /* the command line, for the header of JSONL-made streams */
    char *const *argv;
} cllm_cat_opts;

/* Process inputs (n == 0: stdin). Returns a process exit status (0, 1, or
 * 128+signal) after printing any error through cllm_cli_error(). */
int cllm_cat_run(const cllm_cat_opts *o, char *const *inputs, int n);

#endif
