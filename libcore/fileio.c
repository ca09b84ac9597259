/* fileio.c: see fileio.h. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"   /* cllm_interrupted */

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
        if (k < 0 && errno == EINTR && !cllm_interrupted) continue;
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
        if (k < 0 && errno == EINTR && !cllm_interrupted) continue;
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

int cllm_fsync(int fd) {
    int r;
    while ((r = fsync(fd)) && errno == EINTR) {}
    return r;
}

int cllm_create_unique(const char *prefix, char **path, int *fd) {
    static const char chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static unsigned counter;
    size_t lp = strlen(prefix);
    char *p = malloc(lp + 7);
    if (!p) return -1;   /* errno ENOMEM */
    memcpy(p, prefix, lp);
    for (int attempt = 0; attempt < 1000; attempt++) {
        /* splitmix64 of the pid, the time and a counter: names differ between
         * processes and between calls of one process */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t h = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^
                     ((uint64_t)__atomic_fetch_add(&counter, 1u, __ATOMIC_RELAXED) << 40);
        h += 0x9e3779b97f4a7c15ull;
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
        h ^= h >> 31;
        for (int i = 0; i < 6; i++, h /= sizeof chars - 1) p[lp + i] = chars[h % (sizeof chars - 1)];
        p[lp + 6] = 0;
        int f = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f >= 0) {
            *path = p;
            *fd = f;
            return 0;
        }
        if (errno != EEXIST && errno != EINTR) break;
    }
    int e = errno;
    free(p);
    errno = e;
    return -1;
}
