/* fuzz_ckpt.c: bytes as cllm-train checkpoint files (libcore/ckpt.h) ->
 * cllm_ckpt_load, as --resume reads them.
 *
 * Byte 0 = flags, then:
 *   bit 0 clear: the rest is one checkpoint file (a memfd), loaded by path;
 *   bit 0 set: a checkpoint directory (a private temporary one): the rest is
 *     up to 6 entries, each u8 name, u16 length (little-endian), that many
 *     bytes. Name bits 0..5 are the step n, bits 6..7 the kind: 0 the file
 *     ckpt-<n, 8 digits>.cllmckpt, 1 ckpt-<n>.cllmckpt (the same step under
 *     another name), 2 ckpt-<n>.cllmckpt.bak (not a checkpoint name: never
 *     read), 3 a directory ckpt-<n, 8 digits>.cllmckpt (not a regular file).
 *   bit 1 set: the harness writes the right checksum into each file's last 8
 *     bytes, so that mutations of the header and the data reach the checks
 *     behind the checksum instead of all failing there.
 *
 * Properties. One file: refused with a message, CLLM_EFORMAT, ETRUNC or
 * EUNSUP and nothing left allocated; or accepted with the exact size for
 * n_params, every header field and array as the file's bytes, options
 * NUL-terminated, world 0 read as 1, adam_t <= step <= total_steps, the
 * checksum right; and saved again (cllm_ckpt_save) it loads back the same.
 * Directory: the file chosen is a valid one of the highest step among the
 * valid ones (each entry is first loaded alone), with one warning per newer
 * entry passed over; when none is valid the error is the one of a newest
 * entry alone, and every entry but the oldest gave a warning.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt.h"
#include "err.h"
#include "fuzz.h"

#define PRE 16
#define HDR 1024
#define MAX_ENTRIES 6

static char dir[64];      /* the directory case's files */
static char save_dir[80]; /* the round trip's save */

static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Remove every entry of d (files and the empty directories of kind 3). */
static void empty_dir(const char *d) {
    char p[160];
    for (int k = 0; k < 4; k++)
        for (int n = 0; n < 64; n++) {
            static const char *const fmt[] = { "%s/ckpt-%08d.cllmckpt", "%s/ckpt-%d.cllmckpt",
                                               "%s/ckpt-%d.cllmckpt.bak", "%s/ckpt-%08d.cllmckpt" };
            snprintf(p, sizeof p, fmt[k], d, n);
            if (unlink(p) && errno == EISDIR) rmdir(p);
        }
}

static void cleanup(void) {
    empty_dir(dir);
    rmdir(dir);
    rmdir(save_dir);
}

static int make_dirs(void) {
    if (dir[0]) return 0;
    if (fuzz_make_dir(dir, sizeof dir)) return -1;
    /* Saves go to their own directory: a save rotates the checkpoints of
     * the directory it writes into. */
    snprintf(save_dir, sizeof save_dir, "%s.save", dir);
    if (mkdir(save_dir, 0700)) { rmdir(dir); dir[0] = 0; return -1; }
    atexit(cleanup);
    return 0;
}

/* The file's checksum as ckpt.c computes it: the header, then params, m and
 * v, chained (n_params taken from the size; a size that fits none is refused
 * before the checksum is looked at). */
static uint64_t checksum(const uint8_t *p, size_t n) {
    if (n < PRE + HDR + 8 || (n - PRE - HDR - 8) % 12) return cllm_ckpt_hash(0, p, n < 8 ? 0 : n - 8);
    size_t nb = (n - PRE - HDR - 8) / 3;
    uint64_t h = cllm_ckpt_hash(0, p, PRE + HDR);
    for (int i = 0; i < 3; i++) h = cllm_ckpt_hash(h, p + PRE + HDR + (size_t)i * nb, nb);
    return h;
}

static void fix_checksum(uint8_t *p, size_t n) {
    if (n < 8) return;
    uint64_t h = checksum(p, n);
    for (int i = 0; i < 8; i++) p[n - 8 + i] = (uint8_t)(h >> (8 * i));
}

static void check_refused(int rc, const cllm_ckpt *c, const char *what) {
    if (!*cllm_errmsg()) fuzz_fail("%s: refused (%d) without a message", what, rc);
    if (rc != CLLM_EFORMAT && rc != CLLM_ETRUNC && rc != CLLM_EUNSUP)
        fuzz_fail("%s: refused with code %d: %s", what, rc, cllm_errmsg());
    if (c->params || c->m || c->v) fuzz_fail("%s: refused but arrays left allocated", what);
}

static int same_ckpt(const cllm_ckpt *a, const cllm_ckpt *b) {
    size_t nb = (size_t)a->n_params * sizeof(float);
    return a->step == b->step && a->total_steps == b->total_steps && a->consumed == b->consumed &&
           a->data_hash == b->data_hash && a->adam_t == b->adam_t && a->n_params == b->n_params &&
           !memcmp(a->rng, b->rng, sizeof a->rng) && !memcmp(a->data_rng, b->data_rng, sizeof a->data_rng) &&
           !memcmp(a->shape, b->shape, sizeof a->shape) && !strcmp(a->opts, b->opts) && a->world == b->world &&
           !memcmp(a->params, b->params, nb) && !memcmp(a->m, b->m, nb) && !memcmp(a->v, b->v, nb);
}

/* An accepted checkpoint c against the bytes f[0..n) it was read from. */
static void check_accepted(const cllm_ckpt *c, const uint8_t *f, size_t n) {
    const uint8_t *h = f + PRE;
    if (c->n_params == 0 || n != PRE + HDR + 12 * c->n_params + 8)
        fuzz_fail("accepted %zu bytes for %llu parameters", n, (unsigned long long)c->n_params);
    if (memcmp(f, CLLM_CKPT_MAGIC, 8) || get32(f + 8) != CLLM_CKPT_VERSION || get32(f + 12) != HDR)
        fuzz_fail("accepted a bad magic, version or header size");
    if (c->step != get64(h) || c->total_steps != get64(h + 8) || c->consumed != get64(h + 16) ||
        c->data_hash != get64(h + 24) || c->adam_t != get64(h + 32) || c->n_params != get64(h + 40))
        fuzz_fail("header fields differ from the file");
    for (int i = 0; i < 4; i++)
        if (c->rng[i] != get64(h + 48 + 8 * i) || c->data_rng[i] != get64(h + 80 + 8 * i))
            fuzz_fail("RNG states differ from the file");
    for (int i = 0; i < 7; i++)
        if ((uint32_t)c->shape[i] != get32(h + 112 + 4 * i)) fuzz_fail("shape[%d] differs from the file", i);
    if (strnlen(c->opts, CLLM_CKPT_OPTS) == CLLM_CKPT_OPTS || memcmp(c->opts, h + 140, CLLM_CKPT_OPTS))
        fuzz_fail("options unterminated or not the file's");
    uint32_t w = get32(h + 140 + CLLM_CKPT_OPTS);
    if (c->world != (w ? w : 1)) fuzz_fail("world %u read as %u", w, c->world);
    if (c->adam_t > c->step || c->step > c->total_steps) fuzz_fail("accepted adam_t > step or step > total_steps");
    size_t nb = (size_t)c->n_params * sizeof(float);
    const uint8_t *d = f + PRE + HDR;
    if (!c->params || !c->m || !c->v || memcmp(c->params, d, nb) || memcmp(c->m, d + nb, nb) ||
        memcmp(c->v, d + 2 * nb, nb))
        fuzz_fail("arrays differ from the file");
    if (checksum(f, n) != get64(f + n - 8)) fuzz_fail("accepted a wrong checksum");
}

/* Saved again and reloaded, c must come back unchanged (what --resume of a
 * checkpoint written by a resumed run relies on). */
static void round_trip(const cllm_ckpt *c, size_t n) {
    char *path = NULL;
    if (cllm_ckpt_save(save_dir, c, 1, &path)) {
        if (!*cllm_errmsg()) fuzz_fail("save failed without a message");
        return; /* a full disk: not the loader's business */
    }
    struct stat st;
    if (stat(path, &st) || (size_t)st.st_size != n) fuzz_fail("saved %lld bytes, read %zu", (long long)st.st_size, n);
    cllm_ckpt b;
    char *p2 = NULL;
    int rc = cllm_ckpt_load(path, &b, &p2);
    if (rc) fuzz_fail("a saved checkpoint does not load: %s", cllm_errmsg());
    if (!p2 || strcmp(p2, path)) fuzz_fail("path_out is not the file loaded");
    if (!same_ckpt(c, &b)) fuzz_fail("a saved checkpoint loads back different");
    cllm_ckpt_free(&b);
    unlink(path);
    free(path);
    free(p2);
}

static void one_file(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return;
    cllm_ckpt c;
    char *got = NULL;
    int rc = cllm_ckpt_load(path, &c, &got);
    if (rc) {
        check_refused(rc, &c, "file");
        if (got) fuzz_fail("path_out set on failure");
    } else {
        if (!got || strcmp(got, path)) fuzz_fail("path_out is not the file loaded");
        check_accepted(&c, data, size);
        round_trip(&c, size);
        cllm_ckpt_free(&c);
        free(got);
    }
    close(fd);
}

typedef struct ent {
    char name[48];
    int step, kind, ok; /* ok: loads alone */
    char err[512];      /* its error alone */
} ent;

static int warnings;
static void count_warning(const char *line) { (void)line; warnings++; }

static void directory(uint8_t *data, size_t size, int fix) {
    if (make_dirs()) return;
    empty_dir(dir);
    ent e[MAX_ENTRIES];
    int ne = 0;
    size_t off = 0;
    while (ne < MAX_ENTRIES && off + 3 <= size) {
        int nm = data[off];
        size_t l = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
        off += 3;
        if (l > size - off) l = size - off;
        ent y = { .step = nm & 63, .kind = nm >> 6 };
        static const char *const fmt[] = { "ckpt-%08d.cllmckpt", "ckpt-%d.cllmckpt", "ckpt-%d.cllmckpt.bak",
                                           "ckpt-%08d.cllmckpt" };
        snprintf(y.name, sizeof y.name, fmt[y.kind], y.step);
        /* A name given twice: the later entry replaces the earlier. */
        for (int i = 0; i < ne; i++)
            if (!strcmp(e[i].name, y.name)) {
                memmove(&e[i], &e[i + 1], (size_t)(ne - i - 1) * sizeof *e);
                ne--;
                break;
            }
        ent *x = &e[ne];
        *x = y;
        char p[160];
        snprintf(p, sizeof p, "%s/%.47s", dir, x->name);
        if (unlink(p) && errno == EISDIR) rmdir(p);
        if (fix) fix_checksum(data + off, l);
        if (x->kind == 3 ? mkdir(p, 0700) : fuzz_write_file(p, data + off, l)) return;
        if (x->kind == 0 || x->kind == 1) {
            cllm_ckpt c;
            int rc = cllm_ckpt_load(p, &c, NULL);
            x->ok = rc == 0;
            if (rc) check_refused(rc, &c, x->name);
            else {
                check_accepted(&c, data + off, l);
                cllm_ckpt_free(&c);
            }
            snprintf(x->err, sizeof x->err, "%s", rc ? cllm_errmsg() : "");
        }
        off += l;
        ne++;
    }
    /* What the directory load must give. */
    int n_ck = 0, best = -1, newest = -1;
    for (int i = 0; i < ne; i++) {
        if (e[i].kind == 2) continue;
        n_ck++;
        if (e[i].ok && e[i].step > best) best = e[i].step;
        if (e[i].step > newest) newest = e[i].step;
    }
    cllm_ckpt c;
    char *got = NULL;
    warnings = 0;
    cllm_set_warn_handler(count_warning);
    int rc = cllm_ckpt_load(dir, &c, &got);
    cllm_set_warn_handler(NULL);
    if (n_ck == 0) {
        if (rc != CLLM_EINVAL || got) fuzz_fail("a directory without checkpoints gave %d", rc);
        return;
    }
    if (best >= 0) {
        if (rc) fuzz_fail("directory refused though %d loads: %s", best, cllm_errmsg());
        int chosen = -1;
        for (int i = 0; i < ne; i++) {
            char p[160];
            snprintf(p, sizeof p, "%s/%.47s", dir, e[i].name);
            if (got && !strcmp(got, p)) chosen = i;
        }
        if (chosen < 0 || !e[chosen].ok || e[chosen].step != best)
            fuzz_fail("directory load chose %s, not a valid step %d", got ? got : "(null)", best);
        int newer = 0, ties = 0;
        for (int i = 0; i < ne; i++)
            if (e[i].kind != 2 && !e[i].ok) newer += e[i].step > best, ties += e[i].step == best;
        if (warnings < newer || warnings > newer + ties)
            fuzz_fail("%d warnings for %d newer damaged checkpoints (%d of the same step)", warnings, newer, ties);
        cllm_ckpt_free(&c);
        free(got);
        return;
    }
    if (!rc || got) fuzz_fail("directory of damaged checkpoints accepted");
    if (c.params || c.m || c.v) fuzz_fail("directory refused but arrays left allocated");
    if (warnings != n_ck - 1) fuzz_fail("%d warnings for %d damaged checkpoints", warnings, n_ck);
    /* The error is the newest's (a directory entry's error is unknown here). */
    int match = 0, has_dir = 0;
    for (int i = 0; i < ne; i++)
        if (e[i].kind != 2 && e[i].step == newest) {
            has_dir |= e[i].kind == 3;
            match |= e[i].kind != 3 && !strcmp(e[i].err, cllm_errmsg());
        }
    if (!match && !has_dir) fuzz_fail("directory error \"%s\" is not the newest checkpoint's", cllm_errmsg());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (make_dirs()) return 0;
    /* A copy the checksum fix may write, of the exact size for ASan. */
    uint8_t *rest = malloc(size > 1 ? size - 1 : 1);
    if (!rest) return 0;
    memcpy(rest, data + 1, size - 1);
    if (data[0] & 1) directory(rest, size - 1, data[0] & 2);
    else {
        if (data[0] & 2) fix_checksum(rest, size - 1);
        one_file(rest, size - 1);
    }
    free(rest);
    return 0;
}
