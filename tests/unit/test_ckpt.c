/* test_ckpt.c: what cllm_ckpt_load accepts and refuses, and what a save does
 * to the directory around it (libcore/ckpt.h, docs/TRAINING.md "Checkpoints
 * and exact resume"). test_ckpt_crash covers kills and full disks; this one
 * covers the validation of a file's contents, one field at a time, and the
 * naming and rotation rules:
 *   1. a round trip keeps every field; a parameter count whose byte count is
 *      not a multiple of 8 (5 floats) so the checksum's last partial word is
 *      exercised: flipping the file's last data byte is caught;
 *   2. every header check of ckpt.h, each on a file whose checksum is made
 *      right again (so that the check itself, not the checksum, must refuse
 *      it): magic, version, header size, unterminated options, world 0 (an old
 *      file: reads as 1), parameter count 0 or so large that its byte count
 *      wraps, one byte more or less than the exact size, an Adam step past the
 *      step, a step past the schedule (the step equal to it is the last
 *      checkpoint of a run and loads), something not a regular file;
 *   3. a directory: none in it is an error; the newest that validates is
 *      taken, an older one when the newest is damaged; names that are not
 *      ckpt-<digits>.cllmckpt are neither loaded nor rotated away;
 *   4. rotation: --keep 0 keeps all; the file just written is never deleted,
 *      even when it is older than those kept;
 *   5. stale temporary files: only names of the form .ckpt-tmp-XXXXXX (6 of
 *      [A-Za-z0-9]) that are regular files are removed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "ckpt.h"
#include "err.h"

#define NP 5                       /* 20 bytes per array: not a multiple of 8 */
#define PRE 16                     /* magic, version, header size */
#define HDR 1024
#define BODY (NP * 4)
#define FSIZE (PRE + HDR + 3 * BODY + 8)

/* Warnings (cllm_warn) caught here, joined by '|'. */
static char warned[1024];
static void on_warn(const char *line) {
    size_t at = strlen(warned);
    snprintf(warned + at, sizeof warned - at, "%s|", line);
}

static float arrays[3 * NP];

static void fill(cllm_ckpt *c, uint64_t step) {
    memset(c, 0, sizeof *c);
    c->step = step;
    c->total_steps = 100;
    c->consumed = step * 3;
    c->data_hash = 0x1234567890abcdefull ^ step;
    c->adam_t = step ? step - 1 : 0;   /* not the step: each field its own */
    c->n_params = NP;
    for (int i = 0; i < 4; i++) c->rng[i] = 11 + (uint64_t)i, c->data_rng[i] = 101 + (uint64_t)i;
    for (int i = 0; i < 7; i++) c->shape[i] = 2 * i + 1;
    snprintf(c->opts, sizeof c->opts, "lr=0.001 step=%llu", (unsigned long long)step);
    c->world = 2;
    for (int i = 0; i < 3 * NP; i++) arrays[i] = (float)(step * 100 + (uint64_t)i) + 0.25f;
    c->params = arrays;
    c->m = arrays + NP;
    c->v = arrays + 2 * NP;
}

static char dir[64];

static void path_in(char *buf, size_t cap, const char *d, const char *name) { snprintf(buf, cap, "%s/%s", d, name); }

static void rm_dir(const char *d) {
    DIR *dd = opendir(d);
    if (!dd) return;
    struct dirent *de;
    while ((de = readdir(dd)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) unlinkat(dirfd(dd), de->d_name, 0);
    closedir(dd);
    rmdir(d);
}

static void fresh_dir(void) {
    rm_dir(dir);
    CHECK(mkdir(dir, 0777) == 0);
}

static int exists(const char *d, const char *name) {
    char p[256];
    struct stat st;
    path_in(p, sizeof p, d, name);
    return lstat(p, &st) == 0;
}

static int count_files(const char *d) {
    DIR *dd = opendir(d);
    int n = 0;
    struct dirent *de;
    if (!dd) return -1;
    while ((de = readdir(dd))) n += de->d_name[0] != '.';
    closedir(dd);
    return n;
}

/* A checkpoint file's bytes, read back whole. */
static unsigned char *slurp(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    unsigned char *b = malloc(FSIZE + 64);
    *n = b ? fread(b, 1, FSIZE + 64, f) : 0;
    fclose(f);
    return b;
}

static void spit(const char *p, const unsigned char *b, size_t n) {
    FILE *f = fopen(p, "wb");
    CHECK(f && fwrite(b, 1, n, f) == n);
    if (f) fclose(f);
}

static void put_le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* The checksum of ckpt.h (every byte before it, in the writer's pieces:
 * magic+header, params, m, v) written again after a header edit. */
static void reseal(unsigned char *b) {
    uint64_t h = cllm_ckpt_hash(0, b, PRE + HDR);
    for (int a = 0; a < 3; a++) h = cllm_ckpt_hash(h, b + PRE + HDR + a * BODY, BODY);
    put_le(b + PRE + HDR + 3 * BODY, h, 8);
}

/* Header field offsets (ckpt.h): in the file, after the 16-byte preamble. */
enum { O_STEP = PRE + 0, O_TOTAL = PRE + 8, O_ADAM = PRE + 32, O_NPARAMS = PRE + 40, O_OPTS = PRE + 140,
       O_WORLD = PRE + 140 + CLLM_CKPT_OPTS };

/* Load the good file with one edit (resealed unless raw): the error code, and
 * the message must contain frag. */
static unsigned char good[FSIZE + 64];
static size_t good_n;

typedef void (*edit_fn)(unsigned char *b, size_t *n);

static void expect_refused(const char *what, edit_fn edit, int reseal_it, int want_rc, const char *frag) {
    unsigned char b[FSIZE + 64];
    size_t n = good_n;
    memcpy(b, good, good_n);
    edit(b, &n);
    if (reseal_it) reseal(b);
    char p[256];
    path_in(p, sizeof p, dir, "edited.cllmckpt");
    spit(p, b, n);
    cllm_ckpt c;
    int rc = cllm_ckpt_load(p, &c, NULL);
    CHECK_MSG(rc == want_rc, "%s: load returned %d (%s), expected %d", what, rc, rc ? cllm_errmsg() : "loaded", want_rc);
    if (rc) CHECK_MSG(strstr(cllm_errmsg(), frag) != NULL, "%s: message '%s' lacks '%s'", what, cllm_errmsg(), frag);
    else cllm_ckpt_free(&c);
    unlink(p);
}

static void e_magic(unsigned char *b, size_t *n) { (void)n; memcpy(b, "CLLMCKPX", 8); }
static void e_version(unsigned char *b, size_t *n) { (void)n; put_le(b + 8, 2, 4); }
static void e_hdrsize(unsigned char *b, size_t *n) { (void)n; put_le(b + 12, 512, 4); }
static void e_opts(unsigned char *b, size_t *n) { (void)n; memset(b + O_OPTS, 'x', CLLM_CKPT_OPTS); }
static void e_np0(unsigned char *b, size_t *n) { (void)n; put_le(b + O_NPARAMS, 0, 8); }
/* 12 * n_params wraps to 8 in 64 bits (n = ceil(2^64 / 12)), so a file of
 * 16 + 1024 + 8 + 8 bytes would have "the exact size" for it. */
static void e_npwrap(unsigned char *b, size_t *n) {
    put_le(b + O_NPARAMS, 1537228672809129302ull, 8);
    *n = PRE + HDR + 8 + 8;
}
static void e_short(unsigned char *b, size_t *n) { (void)b; (*n)--; }
static void e_long(unsigned char *b, size_t *n) { b[*n] = 0; (*n)++; }
static void e_adam(unsigned char *b, size_t *n) { (void)n; put_le(b + O_ADAM, 8, 8); }   /* step 7 */
static void e_steps(unsigned char *b, size_t *n) { (void)n; put_le(b + O_TOTAL, 6, 8); } /* step 7 */
static void e_lastbyte(unsigned char *b, size_t *n) { b[*n - 9] ^= 0x01; }              /* v's last byte */

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/test_ckpt.%d", (int)getpid());
    rm_dir(dir);
    cllm_ckpt c, g;
    char *got = NULL, p[256];

    /* 1. Round trip, every field; path_out names the file. */
    fill(&c, 7);
    CHECK_OK(cllm_ckpt_save(dir, &c, 0, &got));
    path_in(p, sizeof p, dir, "ckpt-00000007.cllmckpt");
    CHECK_STR(got, p);
    free(got);
    got = NULL;
    CHECK_OK(cllm_ckpt_load(p, &g, &got));
    CHECK_STR(got, p);
    free(got);
    got = NULL;
    CHECK(g.step == 7 && g.total_steps == 100 && g.consumed == 21 && g.data_hash == c.data_hash && g.adam_t == 6 &&
          g.n_params == NP && g.world == 2);
    CHECK(!memcmp(g.rng, c.rng, sizeof c.rng) && !memcmp(g.data_rng, c.data_rng, sizeof c.data_rng));
    CHECK(!memcmp(g.shape, c.shape, sizeof c.shape) && !strcmp(g.opts, c.opts));
    CHECK(g.params && !memcmp(g.params, c.params, BODY) && !memcmp(g.m, c.m, BODY) && !memcmp(g.v, c.v, BODY));
    cllm_ckpt_free(&g);
    unsigned char *b = slurp(p, &good_n);
    CHECK(b && good_n == FSIZE);
    if (!b || good_n != FSIZE) TEST_END();
    memcpy(good, b, good_n);
    free(b);
    expect_refused("last byte of v flipped", e_lastbyte, 0, CLLM_EFORMAT, "checksum");
    TEST_OK("round_trip");

    /* 2. Each check of the header on its own (the checksum made right). */
    expect_refused("magic", e_magic, 1, CLLM_EFORMAT, "bad magic");
    expect_refused("version 2", e_version, 1, CLLM_EUNSUP, "version 2");
    expect_refused("header size", e_hdrsize, 1, CLLM_EFORMAT, "header size");
    expect_refused("unterminated options", e_opts, 1, CLLM_EFORMAT, "not terminated");
    expect_refused("0 parameters", e_np0, 1, CLLM_EFORMAT, "bad parameter count");
    expect_refused("parameter count wrapping", e_npwrap, 0, CLLM_EFORMAT, "bad parameter count");
    expect_refused("one byte short", e_short, 0, CLLM_ETRUNC, "ends early");
    expect_refused("one byte of trailing data", e_long, 0, CLLM_EFORMAT, "trailing data");
    expect_refused("Adam step past the step", e_adam, 1, CLLM_EFORMAT, "inconsistent");
    expect_refused("step past the schedule", e_steps, 1, CLLM_EFORMAT, "inconsistent");
    {   /* world 0: a file from before the field existed, one rank */
        unsigned char w0[FSIZE];
        memcpy(w0, good, FSIZE);
        put_le(w0 + O_WORLD, 0, 4);
        reseal(w0);
        path_in(p, sizeof p, dir, "w0.cllmckpt");
        spit(p, w0, FSIZE);
        CHECK_OK(cllm_ckpt_load(p, &g, NULL));
        CHECK_EQ_INT(g.world, 1);
        cllm_ckpt_free(&g);
        /* step == total_steps: the checkpoint at a run's last step */
        memcpy(w0, good, FSIZE);
        put_le(w0 + O_TOTAL, 7, 8);
        reseal(w0);
        spit(p, w0, FSIZE);
        CHECK_OK(cllm_ckpt_load(p, &g, NULL));
        CHECK_EQ_INT(g.total_steps, 7);
        cllm_ckpt_free(&g);
        unlink(p);
    }
    CHECK_EQ_INT(cllm_ckpt_load("/dev/null", &g, NULL), CLLM_EFORMAT);
    CHECK(strstr(cllm_errmsg(), "not a regular file") != NULL);
    /* a FIFO with no writer: refused at once (an open that waits for a writer would
     * hang --resume; the alarm turns such a hang into a failure) */
    {
        char fifo[256];
        snprintf(fifo, sizeof fifo, "%s/fifo", dir);
        CHECK(mkfifo(fifo, 0600) == 0);
        alarm(10);
        CHECK_EQ_INT(cllm_ckpt_load(fifo, &g, NULL), CLLM_EFORMAT);
        alarm(0);
        CHECK(strstr(cllm_errmsg(), "not a regular file") != NULL);
        unlink(fifo);
    }
    TEST_OK("header_checks");

    /* 3. Directories. */
    fresh_dir();
    CHECK_EQ_INT(cllm_ckpt_load(dir, &g, NULL), CLLM_EINVAL);
    CHECK(strstr(cllm_errmsg(), "no checkpoint") != NULL);
    fill(&c, 3);
    CHECK_OK(cllm_ckpt_save(dir, &c, 0, NULL));
    fill(&c, 4);
    CHECK_OK(cllm_ckpt_save(dir, &c, 0, NULL));
    /* valid checkpoints (of step 9) under names that are not checkpoint names */
    fill(&c, 9);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/other", dir);
    CHECK_OK(cllm_ckpt_save(sub, &c, 0, NULL));
    const char *aliens[] = { "ckpt--1.cllmckpt", "ckpt-+9.cllmckpt", "ckpt-.cllmckpt", "ckpt-00000009.cllmckpt.bak" };
    for (int i = 0; i < 4; i++) {
        char from[256];
        path_in(from, sizeof from, sub, "ckpt-00000009.cllmckpt");
        path_in(p, sizeof p, dir, aliens[i]);
        CHECK(link(from, p) == 0);
    }
    CHECK_OK(cllm_ckpt_load(dir, &g, &got));
    CHECK_EQ_INT(g.step, 4);
    cllm_ckpt_free(&g);
    free(got);
    got = NULL;
    /* the newest damaged: the one before it, with a warning that names the
     * one passed over and why */
    path_in(p, sizeof p, dir, "ckpt-00000004.cllmckpt");
    CHECK(truncate(p, FSIZE - 1) == 0);
    warned[0] = 0;
    cllm_set_warn_handler(on_warn);
    CHECK_OK(cllm_ckpt_load(dir, &g, &got));
    CHECK_EQ_INT(g.step, 3);
    CHECK_MSG(strstr(warned, "ckpt-00000004.cllmckpt") && strstr(warned, "trying an older checkpoint"), "warned: '%s'",
              warned);
    cllm_ckpt_free(&g);
    free(got);
    got = NULL;
    /* all damaged: the error is the newest's */
    path_in(p, sizeof p, dir, "ckpt-00000003.cllmckpt");
    char keep3[300];
    snprintf(keep3, sizeof keep3, "%s.keep", p);
    CHECK(link(p, keep3) == 0 && unlink(p) == 0);
    {   /* a damaged copy in its place, the good one kept aside */
        FILE *f = fopen(p, "wb");
        CHECK(f && fputs("not a checkpoint", f) >= 0 && fclose(f) == 0);
    }
    CHECK(cllm_ckpt_load(dir, &g, &got) != 0 && got == NULL);
    CHECK_MSG(strstr(cllm_errmsg(), "ckpt-00000004.cllmckpt"), "all damaged: %s", cllm_errmsg());
    cllm_set_warn_handler(NULL);
    CHECK(rename(keep3, p) == 0);
    /* rotation with keep 1 leaves the other names alone */
    fill(&c, 5);
    CHECK_OK(cllm_ckpt_save(dir, &c, 1, NULL));
    for (int i = 0; i < 4; i++) CHECK_MSG(exists(dir, aliens[i]), "%s was deleted by the rotation", aliens[i]);
    CHECK(exists(dir, "ckpt-00000005.cllmckpt") && !exists(dir, "ckpt-00000004.cllmckpt") &&
          !exists(dir, "ckpt-00000003.cllmckpt"));
    rm_dir(sub);
    TEST_OK("directories");

    /* 4. Rotation: keep 0 keeps all; the new file survives its own rotation. */
    fresh_dir();
    for (uint64_t s = 1; s <= 4; s++) {
        fill(&c, s);
        CHECK_OK(cllm_ckpt_save(dir, &c, 0, NULL));
    }
    CHECK_EQ_INT(count_files(dir), 4);
    fill(&c, 0);   /* older than 1..4, with keep 1 */
    CHECK_OK(cllm_ckpt_save(dir, &c, 1, &got));
    path_in(p, sizeof p, dir, "ckpt-00000000.cllmckpt");
    CHECK_STR(got, p);
    free(got);
    got = NULL;
    CHECK_MSG(exists(dir, "ckpt-00000000.cllmckpt"), "the checkpoint just written was rotated away");
    CHECK(exists(dir, "ckpt-00000004.cllmckpt") && !exists(dir, "ckpt-00000003.cllmckpt"));
    TEST_OK("rotation");

    /* 5. Stale temporary files: the form is exact, and only regular files go. */
    fresh_dir();
    const char *keep_names[] = { ".ckpt-tmp-ABCDEFG", ".ckpt-tmp-ABCDE", ".ckpt-tmp-AB.DEF" };
    for (int i = 0; i < 3; i++) {
        path_in(p, sizeof p, dir, keep_names[i]);
        spit(p, (const unsigned char *)"x", 1);
    }
    path_in(p, sizeof p, dir, ".ckpt-tmp-Fifo01");
    CHECK(mkfifo(p, 0600) == 0);
    path_in(p, sizeof p, dir, ".ckpt-tmp-Stale1");
    spit(p, (const unsigned char *)"x", 1);
    fill(&c, 1);
    CHECK_OK(cllm_ckpt_save(dir, &c, 0, NULL));
    CHECK_MSG(!exists(dir, ".ckpt-tmp-Stale1"), "a stale temporary file was left");
    for (int i = 0; i < 3; i++) CHECK_MSG(exists(dir, keep_names[i]), "%s (not a temporary name) was deleted", keep_names[i]);
    CHECK_MSG(exists(dir, ".ckpt-tmp-Fifo01"), "a FIFO with a temporary name was deleted");
    TEST_OK("temporary_files");

    rm_dir(dir);
    TEST_END();
}
