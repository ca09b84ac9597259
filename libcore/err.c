/* err.c: the per-thread error message and checked allocation. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static _Thread_local char errbuf[1024];

int cllm_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return code;
}

static void (*warn_handler)(const char *line);

void cllm_set_warn_handler(void (*handler)(const char *line)) { warn_handler = handler; }

void cllm_warn(const char *fmt, ...) {
    if (!warn_handler) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    warn_handler(line);
}

int cllm_error_prefix(int code, const char *fmt, ...) {
    char prefix[512], old[sizeof errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errbuf, sizeof old);
    /* prefix + old message, cut to the buffer (the message's tail is the least useful part) */
    size_t np = strlen(prefix), no = strlen(old);
    if (np > sizeof errbuf - 1) np = sizeof errbuf - 1;
    if (no > sizeof errbuf - 1 - np) no = sizeof errbuf - 1 - np;
    memcpy(errbuf, prefix, np);
    memcpy(errbuf + np, old, no);
    errbuf[np + no] = 0;
    return code;
}

const char *cllm_errmsg(void) { return errbuf; }

const char *cllm_strerror(int code) {
    switch (code) {
    case CLLM_OK: return "success";
    case CLLM_EIO: return "input/output error";
    case CLLM_ENOMEM: return "out of memory";
    case CLLM_EFORMAT: return "malformed input";
    case CLLM_ETRUNC: return "truncated input";
    case CLLM_ESCHEMA: return "record does not match its schema";
    case CLLM_EINVAL: return "invalid argument";
    case CLLM_ELIMIT: return "input exceeds a size limit";
    case CLLM_EUNSUP: return "unsupported";
    case CLLM_EOF: return "end of input";
    case CLLM_EINTR: return "interrupted";
    default: return "unknown error";
    }
}

void *cllm_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) cllm_error(CLLM_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *cllm_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) cllm_error(CLLM_ENOMEM, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *cllm_malloc_huge(size_t n, size_t size) {
    size_t bytes, huge = (size_t)2 << 20;
    if (cllm_mul_size(n, size, &bytes)) {
        cllm_error(CLLM_ENOMEM, "out of memory allocating %zu x %zu bytes", n, size);
        return NULL;
    }
    if (bytes < 4 * huge) return cllm_malloc(bytes);
    size_t whole = (bytes + huge - 1) / huge * huge;
    void *p = NULL;
    if (posix_memalign(&p, huge, whole)) {
        cllm_error(CLLM_ENOMEM, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    /* a hint: where the system offers no huge pages the memory is the same, in 4 KiB pages */
    (void)madvise(p, whole, MADV_HUGEPAGE);
#endif
    return p;
}

void *cllm_calloc_huge(size_t n, size_t size) {
    void *p = cllm_malloc_huge(n, size);
    if (p) memset(p, 0, n * size);
    return p;
}

void *cllm_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) cllm_error(CLLM_ENOMEM, "out of memory allocating %zu bytes", n);
    return q;
}

char *cllm_strdup(const char *s) { return cllm_strndup(s, strlen(s)); }

char *cllm_strndup(const char *s, size_t n) {
    char *p = cllm_malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

int cllm_grow(void **p, size_t *cap, size_t need, size_t elem_size) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (cllm_mul_size(ncap, 2, &ncap)) return cllm_error(CLLM_ENOMEM, "array size overflow");
    }
    size_t bytes;
    if (cllm_mul_size(ncap, elem_size, &bytes)) return cllm_error(CLLM_ENOMEM, "array size overflow");
    void *q = cllm_realloc(*p, bytes);
    if (!q) return CLLM_ENOMEM;
    *p = q;
    *cap = ncap;
    return 0;
}
