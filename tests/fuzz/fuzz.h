/* fuzz.h: shared helpers of the libFuzzer targets in tests/fuzz/.
 *
 * Each target defines LLVMFuzzerTestOneInput (and may define
 * LLVMFuzzerInitialize). Built two ways: with clang -fsanitize=fuzzer into
 * build-fuzz/ (make fuzz), and with the normal compiler linked to replay.c into
 * BUILD/tools/fuzz-replay-<target>, which feeds every file of a corpus
 * directory once (make check, tests/sh/fuzz_replay.sh).
 *
 * A target never prints on success; a broken property (a library invariant the
 * fuzzer checked) calls fuzz_fail(), which prints and aborts so both drivers
 * report it as a crash.
 */
#ifndef CLLM_FUZZ_H
#define CLLM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((noreturn, format(printf, 1, 2))) static inline void fuzz_fail(const char *fmt, ...);

#include <stdarg.h>
static inline void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: property violated: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* A file at path holding the n bytes at p: 0, or -1. */
static inline int fuzz_write_file(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(p, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* A new private directory under $TMPDIR (/tmp when unset or long) named into
 * dir (at least 64 bytes), for the targets whose parsers read a directory:
 * 0, or -1 with dir[0] = 0. */
static inline int fuzz_make_dir(char *dir, size_t cap) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, cap, "%s/cllm-fuzz-XXXXXX", tmp && strlen(tmp) < 32 ? tmp : "/tmp");
    if (!mkdtemp(dir)) { dir[0] = 0; return -1; }
    return 0;
}

/* Remove dir/NAME for each NAME of names (NULL-terminated), then dir. */
static inline void fuzz_remove_dir(const char *dir, const char *const *names) {
    char p[160];
    for (; *names; names++) {
        snprintf(p, sizeof p, "%s/%s", dir, *names);
        unlink(p);
    }
    rmdir(dir);
}

/* The bytes as a file the parsers can open by path: a memfd, named through
 * /proc/self/fd (a regular, seekable file that never touches the disk).
 * Returns the fd (close it when done) and fills path, or -1. */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t cap) {
    int fd = memfd_create("cllm-fuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t k = write(fd, data + off, size - off);
        if (k <= 0) { close(fd); return -1; }
        off += (size_t)k;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
