/* ckpt.c: checkpoint files (see ckpt.h). */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "fileio.h"

#define HDR_SIZE 1024u
#define PRE_SIZE 16u   /* magic + version + header size */

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t cllm_ckpt_hash(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    const uint64_t K1 = 0x9E3779B185EBCA87ull, K2 = 0xC2B2AE3D27D4EB4Full;
    h ^= 0x27D4EB2F165667C5ull + n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = rotl64(h ^ (w * K2), 31) * K1;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)p[i] << (8 * i);
    h = rotl64(h ^ (w * K2), 31) * K1;
    h ^= h >> 33;
    h *= K2;
    h ^= h >> 29;
    return h;
}

/* Little-endian put/get (the files are little-endian on every host). */
static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static uint64_t get64(const unsigned char *p) { uint64_t v = 0; for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i); return v; }
static uint32_t get32(const unsigned char *p) { uint32_t v = 0; for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i); return v; }

static int host_le(void) { const uint16_t x = 1; return *(const unsigned char *)&x == 1; }

static void pack_header(unsigned char *b, const cllm_ckpt *c) {
    memset(b, 0, PRE_SIZE + HDR_SIZE);
    memcpy(b, CLLM_CKPT_MAGIC, 8);
    put32(b + 8, CLLM_CKPT_VERSION);
    put32(b + 12, HDR_SIZE);
    unsigned char *h = b + PRE_SIZE;
    put64(h + 0, c->step);
    put64(h + 8, c->total_steps);
    put64(h + 16, c->consumed);
    put64(h + 24, c->data_hash);
    put64(h + 32, c->adam_t);
    put64(h + 40, c->n_params);
    for (int i = 0; i < 4; i++) put64(h + 48 + 8 * i, c->rng[i]);
    for (int i = 0; i < 4; i++) put64(h + 80 + 8 * i, c->data_rng[i]);
    for (int i = 0; i < 7; i++) put32(h + 112 + 4 * i, (uint32_t)c->shape[i]);
    size_t ol = strnlen(c->opts, CLLM_CKPT_OPTS - 1);
    memcpy(h + 140, c->opts, ol);
    put32(h + 140 + CLLM_CKPT_OPTS, c->world);
}

static int write_all(int fd, const void *p, size_t n, const char *path) {
    if (cllm_write_full(fd, p, n))
        return cllm_error(CLLM_EIO, "%s: write: %s (checkpoint not saved)", path, strerror(errno));
    return 0;
}

static int read_all(int fd, void *p, size_t n, const char *path) {
    if (!cllm_read_full(fd, p, n, NULL)) return 0;
    if (!errno) return cllm_error(CLLM_ETRUNC, "%s: checkpoint ends early", path);
    return cllm_error(CLLM_EIO, "%s: read: %s", path, strerror(errno));
}

/* Parse "ckpt-<digits>.cllmckpt"; 1 and *step when it matches. */
static int ckpt_name(const char *name, uint64_t *step) {
    if (strncmp(name, "ckpt-", 5)) return 0;
    const char *p = name + 5;
    if (*p < '0' || *p > '9') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno || strcmp(end, ".cllmckpt")) return 0;
    *step = v;
    return 1;
}

typedef struct { uint64_t step; char *name; } entry;

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    return x->step < y->step ? -1 : x->step > y->step;
}

/* Checkpoint files of dir, sorted by step (oldest first). */
static int list_ckpts(const char *dir, entry **out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) return cllm_error(CLLM_EIO, "%s: %s", dir, strerror(errno));
    entry *e = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    for (;;) {
        errno = 0;
        if (!(de = readdir(d))) {
            if (errno) rc = cllm_error(CLLM_EIO, "%s: %s", dir, strerror(errno));
            break;
        }
        uint64_t st;
        if (!ckpt_name(de->d_name, &st)) continue;
        if ((rc = cllm_grow((void **)&e, &cap, n + 1, sizeof *e))) break;
        if (!(e[n].name = cllm_strdup(de->d_name))) { rc = CLLM_ENOMEM; break; }
        e[n++].step = st;
    }
    closedir(d);
    if (rc) {
        for (size_t i = 0; i < n; i++) free(e[i].name);
        free(e);
        return rc;
    }
    if (n) qsort(e, n, sizeof *e, cmp_entry);
    *out = e;
    *n_out = n;
    return 0;
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = cllm_malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    s[a] = '/';
    memcpy(s + a + 1, name, b + 1);
    return s;
}

/* Temporary files are DIR/.ckpt-tmp-XXXXXX (6 of [A-Za-z0-9]: cllm_create_unique's form). */
#define TMP_PREFIX ".ckpt-tmp-"
#define TMP_RAND 6
static const char tmp_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

static int tmp_name(const char *name) {
    size_t lp = sizeof TMP_PREFIX - 1;
    if (strncmp(name, TMP_PREFIX, lp) || strlen(name) != lp + TMP_RAND) return 0;
    for (size_t i = lp; name[i]; i++)
        if (!memchr(tmp_chars, name[i], sizeof tmp_chars - 1)) return 0;
    return 1;
}

/* Delete the temporary files of writers that are gone. A writer holds an
 * exclusive flock on its temporary file until it is renamed and closed, and
 * the kernel drops the lock when the writer dies (kill -9 included), so a file
 * we can lock belongs to nobody. Best effort: where the filesystem has no
 * locks (flock fails) nothing is deleted. */
static void remove_stale_tmps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    int dfd = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!tmp_name(de->d_name)) continue;
        /* Read-write: NFS emulates flock with fcntl locks, whose write lock needs it. */
        int fd = openat(dfd, de->d_name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat a, b;
        if (!fstat(fd, &a) && S_ISREG(a.st_mode) && !flock(fd, LOCK_EX | LOCK_NB) &&
            !fstatat(dfd, de->d_name, &b, AT_SYMLINK_NOFOLLOW) && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            unlinkat(dfd, de->d_name, 0);
        close(fd);
    }
    closedir(d);
}

/* Create and lock a new temporary file in dir (cllm_create_unique: the
 * umask gives it the permissions a plain create would). */
static int open_tmp(const char *dir, const char *final, char **tmp_out, int *fd_out) {
    char *prefix = join(dir, TMP_PREFIX);
    if (!prefix) return CLLM_ENOMEM;
    for (int attempt = 0; attempt < 1000; attempt++) {
        char *tmp = NULL;
        int fd = -1;
        if (cllm_create_unique(prefix, &tmp, &fd)) {
            int rc = errno == ENOMEM ? CLLM_ENOMEM
                                     : cllm_error(CLLM_EIO, "%s: cannot create a temporary file in %s: %s", final, dir,
                                                  strerror(errno));
            free(prefix);
            return rc;
        }
        /* Ours until renamed and closed (see remove_stale_tmps). No locks on
         * this filesystem: go on without. */
        while (flock(fd, LOCK_EX) && errno == EINTR) {}
        /* A concurrent remove_stale_tmps may have deleted it between the
         * open and the lock: start again with a new name. */
        struct stat st;
        if (!fstat(fd, &st) && st.st_nlink == 0) {
            close(fd);
            free(tmp);
            continue;
        }
        free(prefix);
        *tmp_out = tmp;
        *fd_out = fd;
        return 0;
    }
    free(prefix);
    return cllm_error(CLLM_EIO, "%s: cannot create a temporary file in %s", final, dir);
}

/* The rename is durable only once the directory is. EINVAL: a filesystem
 * that cannot fsync directories (nothing to wait for). */
static int fsync_dir(const char *dir, const char *final) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return cllm_error(CLLM_EIO, "%s: fsync of its directory: %s", final, strerror(errno));
    int rc = 0;
    if (cllm_fsync(fd) && errno != EINVAL)
        rc = cllm_error(CLLM_EIO, "%s: fsync of its directory: %s (written, but may not survive a power loss)", final,
                        strerror(errno));
    close(fd);
    return rc;
}

int cllm_ckpt_save(const char *dir, const cllm_ckpt *c, int keep, char **path_out) {
    if (path_out) *path_out = NULL;
    if (!host_le()) return cllm_error(CLLM_EUNSUP, "checkpoints need a little-endian host");
    if (mkdir(dir, 0777) && errno != EEXIST) return cllm_error(CLLM_EIO, "%s: %s", dir, strerror(errno));
    char name[64];
    snprintf(name, sizeof name, "ckpt-%08llu.cllmckpt", (unsigned long long)c->step);
    char *final = join(dir, name), *tmp = NULL;
    if (!final) return CLLM_ENOMEM;
    /* Temporary files of a save killed before its rename would otherwise pile
     * up (each as big as a checkpoint); they go first, freeing their space. */
    remove_stale_tmps(dir);
    int fd = -1, rc = open_tmp(dir, final, &tmp, &fd);
    if (rc) {
        free(final);
        return rc;
    }
    unsigned char hdr[PRE_SIZE + HDR_SIZE];
    pack_header(hdr, c);
    size_t nb = (size_t)c->n_params * sizeof(float);
    uint64_t h = cllm_ckpt_hash(0, hdr, sizeof hdr);
    h = cllm_ckpt_hash(h, c->params, nb);
    h = cllm_ckpt_hash(h, c->m, nb);
    h = cllm_ckpt_hash(h, c->v, nb);
    unsigned char tail[8];
    put64(tail, h);
    if (!rc) rc = write_all(fd, hdr, sizeof hdr, final);
    if (!rc) rc = write_all(fd, c->params, nb, final);
    if (!rc) rc = write_all(fd, c->m, nb, final);
    if (!rc) rc = write_all(fd, c->v, nb, final);
    if (!rc) rc = write_all(fd, tail, 8, final);
    /* fsync is where a filesystem that delays allocation (NFS, some quotas)
     * reports ENOSPC or EDQUOT. */
    if (!rc && cllm_fsync(fd))
        rc = cllm_error(CLLM_EIO, "%s: fsync: %s (checkpoint not saved)", final, strerror(errno));
    /* Renamed while still open and locked, so that no remove_stale_tmps can
     * take it between our close and the rename. */
    if (!rc && rename(tmp, final)) rc = cllm_error(CLLM_EIO, "%s: rename: %s (checkpoint not saved)", final, strerror(errno));
    if (rc) unlink(tmp);
    /* Linux releases the descriptor even when close fails with EINTR. After
     * a successful fsync a close error is not expected; if one comes, the
     * new file is not trusted. */
    if (close(fd) && errno != EINTR && !rc) {
        rc = cllm_error(CLLM_EIO, "%s: close: %s (checkpoint not saved)", final, strerror(errno));
        unlink(final);
    }
    free(tmp);
    if (!rc) rc = fsync_dir(dir, final);
    /* Rotation, only once the new checkpoint is on disk. A kill in the middle
     * leaves more than keep files; the next save deletes the rest. */
    if (!rc && keep > 0) {
        entry *e;
        size_t n;
        if (!(rc = list_ckpts(dir, &e, &n))) {
            for (size_t i = 0; i + (size_t)keep < n; i++) {
                char *p = join(dir, e[i].name);
                if (p && strcmp(p, final)) unlink(p);
                free(p);
            }
            for (size_t i = 0; i < n; i++) free(e[i].name);
            free(e);
        }
    }
    if (!rc && path_out) *path_out = final;
    else free(final);
    return rc;
}

void cllm_ckpt_free(cllm_ckpt *c) {
    free(c->params);
    free(c->m);
    free(c->v);
    c->params = c->m = c->v = NULL;
}

static int load_file(const char *path, cllm_ckpt *c) {
    memset(c, 0, sizeof *c);
    if (!host_le()) return cllm_error(CLLM_EUNSUP, "checkpoints need a little-endian host");
    /* O_NONBLOCK: a FIFO opens at once (to be refused below as not a regular
     * file) instead of waiting for a writer; reads of a regular file ignore it */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    unsigned char hdr[PRE_SIZE + HDR_SIZE];
    if (fstat(fd, &st)) rc = cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode)) rc = cllm_error(CLLM_EFORMAT, "%s: not a regular file", path);
    else if ((uint64_t)st.st_size < sizeof hdr + 8) rc = cllm_error(CLLM_ETRUNC, "%s: checkpoint ends early (%lld bytes)", path, (long long)st.st_size);
    if (!rc) rc = read_all(fd, hdr, PRE_SIZE, path);
    if (!rc && memcmp(hdr, CLLM_CKPT_MAGIC, 8)) rc = cllm_error(CLLM_EFORMAT, "%s: not a cllm checkpoint (bad magic)", path);
    if (!rc && get32(hdr + 8) != CLLM_CKPT_VERSION)
        rc = cllm_error(CLLM_EUNSUP, "%s: checkpoint version %u (this build reads %u)", path, get32(hdr + 8), CLLM_CKPT_VERSION);
    if (!rc && get32(hdr + 12) != HDR_SIZE) rc = cllm_error(CLLM_EFORMAT, "%s: bad checkpoint header size %u", path, get32(hdr + 12));
    if (!rc) rc = read_all(fd, hdr + PRE_SIZE, HDR_SIZE, path);
    const unsigned char *h = hdr + PRE_SIZE;
    if (!rc) {
        c->step = get64(h);
        c->total_steps = get64(h + 8);
        c->consumed = get64(h + 16);
        c->data_hash = get64(h + 24);
        c->adam_t = get64(h + 32);
        c->n_params = get64(h + 40);
        for (int i = 0; i < 4; i++) c->rng[i] = get64(h + 48 + 8 * i);
        for (int i = 0; i < 4; i++) c->data_rng[i] = get64(h + 80 + 8 * i);
        for (int i = 0; i < 7; i++) c->shape[i] = (int32_t)get32(h + 112 + 4 * i);
        memcpy(c->opts, h + 140, CLLM_CKPT_OPTS);
        c->world = get32(h + 140 + CLLM_CKPT_OPTS);
        if (!c->world) c->world = 1;
        if (c->opts[CLLM_CKPT_OPTS - 1]) rc = cllm_error(CLLM_EFORMAT, "%s: checkpoint options are not terminated", path);
    }
    /* The exact size for n_params, with overflow checks, before any allocation. */
    uint64_t want = 0;
    if (!rc) {
        uint64_t body;
        if (c->n_params == 0 || c->n_params > (UINT64_MAX - sizeof hdr - 8) / 12 ||
            c->n_params > SIZE_MAX / sizeof(float))
            rc = cllm_error(CLLM_EFORMAT, "%s: bad parameter count %llu", path, (unsigned long long)c->n_params);
        else {
            body = c->n_params * 12;
            want = sizeof hdr + body + 8;
            if ((uint64_t)st.st_size < want)
                rc = cllm_error(CLLM_ETRUNC, "%s: checkpoint ends early (%lld of %llu bytes)", path,
                                (long long)st.st_size, (unsigned long long)want);
            else if ((uint64_t)st.st_size > want)
                rc = cllm_error(CLLM_EFORMAT, "%s: %llu bytes of trailing data", path,
                                (unsigned long long)((uint64_t)st.st_size - want));
        }
    }
    size_t nb = (size_t)c->n_params * sizeof(float);
    if (!rc) {
        c->params = cllm_malloc(nb);
        c->m = cllm_malloc(nb);
        c->v = cllm_malloc(nb);
        if (!c->params || !c->m || !c->v) rc = CLLM_ENOMEM;
    }
    unsigned char tail[8];
    if (!rc) rc = read_all(fd, c->params, nb, path);
    if (!rc) rc = read_all(fd, c->m, nb, path);
    if (!rc) rc = read_all(fd, c->v, nb, path);
    if (!rc) rc = read_all(fd, tail, 8, path);
    if (!rc) {
        uint64_t hh = cllm_ckpt_hash(0, hdr, sizeof hdr);
        hh = cllm_ckpt_hash(hh, c->params, nb);
        hh = cllm_ckpt_hash(hh, c->m, nb);
        hh = cllm_ckpt_hash(hh, c->v, nb);
        if (hh != get64(tail)) rc = cllm_error(CLLM_EFORMAT, "%s: checkpoint checksum mismatch (corrupt file)", path);
    }
    if (!rc && (c->adam_t > c->step || c->step > c->total_steps))
        rc = cllm_error(CLLM_EFORMAT, "%s: inconsistent checkpoint (step %llu of %llu, optimizer step %llu)", path,
                        (unsigned long long)c->step, (unsigned long long)c->total_steps, (unsigned long long)c->adam_t);
    close(fd);
    if (rc) cllm_ckpt_free(c);
    return rc;
}

int cllm_ckpt_load(const char *path, cllm_ckpt *c, char **path_out) {
    if (path_out) *path_out = NULL;
    struct stat st;
    if (stat(path, &st)) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        int rc = load_file(path, c);
        if (!rc && path_out && !(*path_out = cllm_strdup(path))) { cllm_ckpt_free(c); return CLLM_ENOMEM; }
        return rc;
    }
    entry *e;
    size_t n;
    int rc = list_ckpts(path, &e, &n);
    if (rc) return rc;
    if (n == 0) rc = cllm_error(CLLM_EINVAL, "%s: no checkpoint (ckpt-*.cllmckpt) in this directory", path);
    /* The newest that validates; an older one when the newest is damaged,
     * with a warning for each one passed over (the work since the older one
     * is lost: not silently). When none validates, the error is the
     * newest's. */
    char newest_err[512] = "";
    int newest_rc = 0;
    for (size_t i = n; i-- > 0;) {
        char *p = join(path, e[i].name);
        if (!p) { rc = CLLM_ENOMEM; break; }
        rc = load_file(p, c);
        free(p);
        if (!rc) {
            if (path_out && !(*path_out = join(path, e[i].name))) { cllm_ckpt_free(c); rc = CLLM_ENOMEM; }
            break;
        }
        if (rc == CLLM_ENOMEM) break;
        if (!newest_rc) {
            newest_rc = rc;
            snprintf(newest_err, sizeof newest_err, "%s", cllm_errmsg());
        }
        if (i > 0) cllm_warn("%s; trying an older checkpoint", cllm_errmsg());
    }
    if (rc && rc != CLLM_ENOMEM && newest_rc) rc = cllm_error(newest_rc, "%s", newest_err);
    for (size_t i = 0; i < n; i++) free(e[i].name);
    free(e);
    return rc;
}
