/* replay.c: run a fuzz target's LLVMFuzzerTestOneInput once on each file named
 * (a directory: each regular file in it, in name order), without libFuzzer, so
 * the corpora are regression tests of the normal and sanitizer builds.
 * Prints "fuzz-replay: N inputs replayed" on stderr and exits 0; a crash or a
 * sanitizer report in the target is the failure. Exit 2 on a usage error, 1
 * when an input cannot be read.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "fuzz-replay: %s: %s\n", path, strerror(errno)); return -1; }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) { fclose(f); fprintf(stderr, "fuzz-replay: %s: out of memory\n", path); return -1; }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        uint8_t *p = realloc(buf, cap *= 2);
        if (!p) free(buf);
        buf = p;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); fprintf(stderr, "fuzz-replay: %s: read error\n", path); return -1; }
    /* An exact-size copy, so ASan sees reads past the end of the input. */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) { free(buf); return -1; }
    memcpy(exact, buf, n);
    free(buf);
    if (getenv("FUZZ_REPLAY_VERBOSE")) fprintf(stderr, "fuzz-replay: %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    long count = 0;
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st)) { fprintf(stderr, "fuzz-replay: %s: %s\n", argv[i], strerror(errno)); bad = 1; continue; }
        if (!S_ISDIR(st.st_mode)) { if (run_file(argv[i])) bad = 1; else count++; continue; }
        DIR *d = opendir(argv[i]);
        if (!d) { fprintf(stderr, "fuzz-replay: %s: %s\n", argv[i], strerror(errno)); bad = 1; continue; }
        char **names = NULL;
        size_t nn = 0, cap = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            if (nn == cap) {
                cap = cap ? 2 * cap : 64;
                char **p = realloc(names, cap * sizeof *p);
                if (!p) break;
                names = p;
            }
            size_t l = strlen(argv[i]) + strlen(e->d_name) + 2;
            names[nn] = malloc(l);
            if (!names[nn]) break;
            snprintf(names[nn], l, "%s/%s", argv[i], e->d_name);
            nn++;
        }
        closedir(d);
        qsort(names, nn, sizeof *names, by_name);
        for (size_t k = 0; k < nn; k++) {
            struct stat fs;
            if (!stat(names[k], &fs) && S_ISREG(fs.st_mode)) {
                if (run_file(names[k])) bad = 1;
                else count++;
            }
            free(names[k]);
        }
        free(names);
    }
    fprintf(stderr, "fuzz-replay: %ld inputs replayed\n", count);
    return bad;
}
