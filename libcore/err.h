/* err.h: error codes and the per-thread error message of libcllm.
 *
 * Every library function that can fail returns an int: 0 on success, a negative
 * CLLM_E* code on failure. Before returning the code it records a one-line
 * message with cllm_error(), which the caller (a binary in cmd/) prints as
 * "prog: message". The library never prints errors itself and never exits.
 */
#ifndef CLLM_ERR_H
#define CLLM_ERR_H

#include <stddef.h>

enum cllm_err {
    CLLM_OK = 0,
    CLLM_EIO = -1,        /* read/write failure (errno in the message) */
    CLLM_ENOMEM = -2,     /* allocation failed */
    CLLM_EFORMAT = -3,    /* input is not what it claims to be (bad bytes) */
    CLLM_ETRUNC = -4,     /* input ends early */
    CLLM_ESCHEMA = -5,    /* a record lacks a field or has the wrong type */
    CLLM_EINVAL = -6,     /* a caller passed a bad argument or option value */
    CLLM_ELIMIT = -7,     /* input exceeds a size limit of this reader */
    CLLM_EUNSUP = -8,     /* valid input using a feature this build lacks */
    CLLM_EOF = -9,        /* no more records (not an error for readers) */
    CLLM_EINTR = -10,     /* interrupted by a signal the caller asked to honour */
};

/* Record the message for the error being returned; returns code, so that a
 * function can write `return cllm_error(CLLM_EFORMAT, "bad magic %x", m);`. */
int cllm_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the current message with context ("file.gguf: " + message). */
int cllm_error_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message of the last error recorded on this thread ("" if none). */
const char *cllm_errmsg(void);

/* Warnings: things the user should hear of that are not failures (an input
 * stream whose producer was stopped by a signal, so it is whole but short).
 * The library calls cllm_warn; the handler gets the formatted line. The
 * binaries install one (cli.c: "prog: warning: line" on stderr, each distinct
 * line once); without a handler warnings are dropped, so the library itself
 * never prints. The handler is process-wide; set it before starting threads. */
void cllm_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cllm_set_warn_handler(void (*handler)(const char *line));

/* A fixed description of a code. */
const char *cllm_strerror(int code);

/* Checked size arithmetic: return 0 and store the result, or -1 on overflow. */
static inline int cllm_mul_size(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}
static inline int cllm_add_size(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

/* malloc/realloc/calloc that record CLLM_ENOMEM with the size asked. */
void *cllm_malloc(size_t n);
void *cllm_calloc(size_t n, size_t size);
/* cllm_calloc for a large block (a model's parameters): from 8 MiB up,
 * 2 MiB-aligned with transparent huge pages asked for (MADV_HUGEPAGE), so
 * that its first writes fault a page per 2 MiB instead of per 4 KiB (a
 * 540 MB model took 138k faults, most of its load). Freed with free(). */
void *cllm_calloc_huge(size_t n, size_t size);
/* The same not zeroed, for a block its caller writes whole: its pages are
 * then first touched by the writers (start-up threads: startup.h). */
void *cllm_malloc_huge(size_t n, size_t size);
void *cllm_realloc(void *p, size_t n);
char *cllm_strdup(const char *s);
char *cllm_strndup(const char *s, size_t n);

/* Grow an array of elem_size elements to hold at least need elements:
 * doubles *cap, returns 0 or CLLM_ENOMEM. */
int cllm_grow(void **p, size_t *cap, size_t need, size_t elem_size);

#endif
