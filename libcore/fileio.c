/* fileio.c: see fileio.h. */
#include "fileio.h"

#include <errno.h>
#include <unistd.h>

/* At most this many bytes a call: Linux moves at most 0x7ffff000 anyway. */
#define IO_STEP ((size_t)1 << 30)

static size_t step(size_t n) { return n < IO_STEP ? n : IO_STEP; }

int cllm_write_full(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, step(n));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -1;
        if (k == 0) { errno = EIO; return -1; }   /* no progress: not to loop for ever */
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int cllm_read_full(int fd, void *buf, size_t n, size_t *got) {
    char *p = buf;
    size_t done = 0;
    int rc = 0;
    while (done < n) {
        ssize_t k = read(fd, p + done, step(n - done));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = 0;
            rc = -1;
            break;
        }
        done += (size_t)k;
    }
    if (got) *got = done;
    return rc;
}

int cllm_pread_full(int fd, void *buf, size_t n, uint64_t off) {
    char *p = buf;
    while (n) {
        ssize_t k = pread(fd, p, step(n), (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = 0;
            return -1;
        }
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}
