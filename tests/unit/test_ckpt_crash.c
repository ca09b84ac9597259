/* test_ckpt_crash.c: crash safety of the checkpoint writer (libcore/ckpt.c,
 * docs/RELIABILITY.md "Checkpoint crash safety").
 *
 * 1. kill -9 during saves, KILLS times: a forked child saves 6 MiB
 *    checkpoints (keep 2, step numbers advancing by 1 to 4) in a loop and
 *    tells the parent through a pipe where it is (save started, fsync,
 *    rename, unlink, save done: this file wraps write, fsync, rename and
 *    unlink, which libcllm calls); the parent kills it after a seeded random
 *    delay spanning about two saves. After every kill: loading the directory
 *    gives the newest checkpoint whose rename happened, bit for bit; every
 *    ckpt-*.cllmckpt left validates and holds exactly its step's content; the
 *    two newest complete ones are there; at most one temporary file is left,
 *    and only by a kill before the rename. The phase of each kill is counted
 *    and printed. No timing is asserted: only what must hold at any kill point.
 * 2. Disk full: RLIMIT_FSIZE (EFBIG, SIGXFSZ ignored) in a forked child, and
 *    ENOSPC from write or from fsync (injected by the wrappers), at several
 *    offsets: CLLM_EIO naming the checkpoint and strerror, no temporary file,
 *    the existing checkpoints byte-identical and loadable, none pruned.
 * 3. Short writes and EINTR (write, fsync) still give a valid checkpoint.
 * 4. A stale temporary file of a dead writer (unlocked) is removed by the next
 *    save; one held by a live writer (flock) is not; load ignores both.
 * 5. Permissions follow the umask (no 0600 temp-file mode leaks through).
 *
 * CLLM_TEST_SEED=N repeats a run's kill delays (the seed is printed). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "ckpt.h"
#include "clock.h"
#include "err.h"
#include "rng.h"

#define NP (512 * 1024)  /* floats per array: params, m, v = 6 MiB a file */
#define KEEP 2
#define KILLS 100
#define STEPS_PER_CHILD 400
#define FILE_SIZE (16 + 1024 + 12ull * NP + 8)

/* ---- wrappers of the calls libcllm makes (this executable's definitions win) ---- */

static struct {
    int report_fd;        /* child: phase bytes go here */
    int slow;             /* child: sleep in rename and unlink so kills land there too */
    long long enospc_at;  /* >= 0: write fails with ENOSPC once this many bytes are written */
    long long written;
    int short_writes;     /* writes of at most 4093 bytes */
    int eintr_every;      /* every Nth write or fsync fails with EINTR first */
    int fsync_errno;      /* fsync of a regular file fails with this */
    int dir_fsyncs;       /* fsync calls on a directory */
    unsigned calls;
} inj = { .report_fd = -1, .enospc_at = -1 };

static void report(char ch) {
    if (inj.report_fd >= 0) (void)!syscall(SYS_write, inj.report_fd, &ch, 1);
}

static void nap_us(long us) {
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

ssize_t write(int fd, const void *buf, size_t n) {
    if (inj.eintr_every && ++inj.calls % (unsigned)inj.eintr_every == 0) {
        errno = EINTR;
        return -1;
    }
    if (inj.short_writes && n > 4093) n = 4093;
    if (inj.enospc_at >= 0) {
        if (inj.written >= inj.enospc_at && n) {
            errno = ENOSPC;
            return -1;
        }
        if ((long long)n > inj.enospc_at - inj.written) n = (size_t)(inj.enospc_at - inj.written);
    }
    long r = syscall(SYS_write, fd, buf, n);
    if (r > 0) inj.written += r;
    return r;
}

int fsync(int fd) {
    if (inj.eintr_every && ++inj.calls % (unsigned)inj.eintr_every == 0) {
        errno = EINTR;
        return -1;
    }
    struct stat st;
    if (!fstat(fd, &st) && S_ISDIR(st.st_mode)) inj.dir_fsyncs++;
    if (inj.fsync_errno && !fstat(fd, &st) && S_ISREG(st.st_mode)) {
        errno = inj.fsync_errno;
        return -1;
    }
    report('F');
    int r = (int)syscall(SYS_fsync, fd);
    report('f');
    return r;
}

int rename(const char *a, const char *b) {
    report('R');
    if (inj.slow) nap_us(1500);
    int r = renameat(AT_FDCWD, a, AT_FDCWD, b);
    if (inj.slow) nap_us(1500);
    report('r');
    return r;
}

int unlink(const char *p) {
    report('U');
    if (inj.slow) nap_us(1500);
    int r = unlinkat(AT_FDCWD, p, 0);
    report('u');
    return r;
}

/* ---- checkpoints with known content ---- */

static float *bufs;   /* params, m, v of the checkpoint being made */
static float *expect; /* and of the one compared with */

static void fill(cllm_ckpt *c, float *b, uint64_t step) {
    memset(c, 0, sizeof *c);
    c->step = step;
    c->total_steps = 1ull << 40;
    c->consumed = step * 7;
    c->data_hash = step * 0x9E3779B97F4A7C15ull;
    c->adam_t = step;
    c->n_params = NP;
    for (int i = 0; i < 4; i++) c->rng[i] = step + (uint64_t)i, c->data_rng[i] = ~step - (uint64_t)i;
    for (int i = 0; i < 7; i++) c->shape[i] = i + 1;
    snprintf(c->opts, sizeof c->opts, "crash test, step %llu", (unsigned long long)step);
    c->world = 1;
    c->params = b;
    c->m = b + NP;
    c->v = b + 2 * NP;
    uint32_t x = (uint32_t)step * 2654435761u;
    for (uint32_t i = 0; i < NP; i++) {
        c->params[i] = (float)((x + i * 3u) & 0xffffff);
        c->m[i] = (float)((x ^ (i * 40503u)) & 0xffffff) * 0.5f;
        c->v[i] = (float)((x + i * 7u) & 0xfffff) * 0.25f;
    }
}

/* Does the loaded g equal step's checkpoint, every field and every bit? */
static int same_as(const cllm_ckpt *g, uint64_t step) {
    cllm_ckpt e;
    fill(&e, expect, step);
    return g->step == e.step && g->total_steps == e.total_steps && g->consumed == e.consumed &&
           g->data_hash == e.data_hash && g->adam_t == e.adam_t && g->n_params == e.n_params &&
           !memcmp(g->rng, e.rng, sizeof e.rng) && !memcmp(g->data_rng, e.data_rng, sizeof e.data_rng) &&
           !memcmp(g->shape, e.shape, sizeof e.shape) && !strcmp(g->opts, e.opts) && g->world == e.world &&
           !memcmp(g->params, e.params, sizeof(float) * NP) && !memcmp(g->m, e.m, sizeof(float) * NP) &&
           !memcmp(g->v, e.v, sizeof(float) * NP);
}

/* Load path (a file or the directory) and compare with want_step's content. */
static int check_load(const char *path, uint64_t want_step, const char *what) {
    cllm_ckpt g;
    char *got_path = NULL;
    int rc = cllm_ckpt_load(path, &g, &got_path);
    if (rc) {
        CHECK_MSG(0, "%s: loading %s: %s", what, path, cllm_errmsg());
        return 0;
    }
    int ok = g.step == want_step && same_as(&g, want_step);
    CHECK_MSG(ok, "%s: %s gave step %llu (%s), expected step %llu bit for bit", what, path,
              (unsigned long long)g.step, got_path, (unsigned long long)want_step);
    cllm_ckpt_free(&g);
    free(got_path);
    return ok;
}

/* ---- the directory ---- */

typedef struct {
    uint64_t steps[64];
    int n;
    char tmp[8][64];
    int n_tmp;
    long long tmp_size;
    int other;
} listing;

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void list_dir(const char *dir, listing *l) {
    memset(l, 0, sizeof *l);
    DIR *d = opendir(dir);
    if (!d) {
        CHECK_MSG(0, "opendir %s: %s", dir, strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned long long s;
        int len = 0;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (sscanf(de->d_name, "ckpt-%llu.cllmckpt%n", &s, &len) == 1 && de->d_name[len] == 0 && l->n < 64)
            l->steps[l->n++] = s;
        else if (!strncmp(de->d_name, ".ckpt-tmp-", 10) && l->n_tmp < 8) {
            struct stat st;
            if (!fstatat(dirfd(d), de->d_name, &st, 0)) l->tmp_size = st.st_size;
            snprintf(l->tmp[l->n_tmp++], 64, "%.63s", de->d_name);
        } else
            l->other++;
    }
    closedir(d);
    qsort(l->steps, (size_t)l->n, sizeof l->steps[0], cmp_u64);
}

static char *path_of(const char *dir, uint64_t step, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/ckpt-%08llu.cllmckpt", dir, (unsigned long long)step);
    return buf;
}

static void rm_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
    rmdir(dir);
}

/* ---- 1. kill -9 during saves ---- */

static void child_saves(const char *dir, const uint64_t *steps, int n, int wfd) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    inj.report_fd = wfd;
    inj.slow = 1;
    cllm_ckpt c;
    for (int k = 0; k < n; k++) {
        fill(&c, bufs, steps[k]);
        report('S');
        if (cllm_ckpt_save(dir, &c, KEEP, NULL)) {
            report('E');
            fprintf(stderr, "child: save of step %llu failed: %s\n", (unsigned long long)steps[k], cllm_errmsg());
            _exit(3);
        }
        report('D');
    }
    _exit(4);
}

/* Where a kill landed, from the events after the last 'S' ("" = still in the
 * data writes, before the first fsync). */
enum { PH_WRITE, PH_FSYNC, PH_RENAME, PH_DIRSYNC, PH_PRUNE, PH_BETWEEN, PH_N };
static const char *ph_name[PH_N] = {
    "writing the temp file", "fsync of the temp file", "around the rename",
    "fsync of the directory", "pruning old checkpoints", "between saves",
};

static void kill_test(const char *dir, uint64_t seed) {
    cllm_rng rng;
    cllm_rng_seed(&rng, seed);
    cllm_ckpt c;
    /* Two checkpoints to start from. */
    /* The steps whose rename happened, in order. */
    enum { MAX_DONE = 16 + KILLS * STEPS_PER_CHILD };
    uint64_t *done = malloc(MAX_DONE * sizeof *done);
    int n_done = 0;
    if (!done) { CHECK(0); return; }
    for (uint64_t s = 1; s <= 2; s++) {
        fill(&c, bufs, s);
        CHECK_OK(cllm_ckpt_save(dir, &c, KEEP, NULL));
        done[n_done++] = s;
    }

    /* Calibration: how long one save takes here (fsync speeds vary a lot). */
    double t_save;
    {
        uint64_t steps[8];
        for (int k = 0; k < 8; k++) steps[k] = 3 + (uint64_t)k;
        int p[2];
        if (pipe(p)) { CHECK(0); free(done); return; }
        pid_t pid = fork();
        if (pid == 0) { close(p[0]); child_saves(dir, steps, 8, p[1]); }
        close(p[1]);
        char ch;
        double t0 = 0;
        int nd = 0;
        while (read(p[0], &ch, 1) == 1) {
            if (ch == 'S' && !t0) t0 = cllm_now_s();
            if (ch == 'D') nd++;
        }
        t_save = (cllm_now_s() - t0) / (nd ? nd : 1);
        close(p[0]);
        int st;
        waitpid(pid, &st, 0);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 4 && nd == 8, "calibration child: status %d, %d saves", st, nd);
        for (int k = 0; k < 8; k++) done[n_done++] = steps[k];
    }
    printf("kill test: seed %llu, one save of %llu bytes takes %.1f ms here\n", (unsigned long long)seed,
           (unsigned long long)FILE_SIZE, t_save * 1e3);

    int phase_n[PH_N] = { 0 }, in_rename_before = 0, in_rename_after = 0, tmp_left = 0, tmp_distinct = 0, tmp_partial = 0, tmp_removed = 0, prune_partial = 0;
    char last_tmp[64] = "";
    double t_start = cllm_now_s();
    for (int kill_i = 0; kill_i < KILLS && !check_failures; kill_i++) {
        uint64_t steps[STEPS_PER_CHILD];
        uint64_t s = done[n_done - 1] + 1 + cllm_rng_below(&rng, 3);
        for (int k = 0; k < STEPS_PER_CHILD; k++) {
            steps[k] = s;
            s += 1 + cllm_rng_below(&rng, 4);
        }
        /* The delay after the child's first save begins: anywhere in about two saves. */
        long delay_us = (long)cllm_rng_below(&rng, (uint64_t)(2 * t_save * 1e6) + 1);
        int p[2];
        if (pipe(p)) { CHECK(0); free(done); return; }
        pid_t pid = fork();
        if (pid == 0) { close(p[0]); child_saves(dir, steps, STEPS_PER_CHILD, p[1]); }
        close(p[1]);
        char ev[4096];
        int n_ev = 0;
        if (read(p[0], ev, 1) == 1) n_ev = 1;
        nap_us(delay_us);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        ssize_t r;
        while (n_ev < (int)sizeof ev && (r = read(p[0], ev + n_ev, sizeof ev - (size_t)n_ev)) > 0) n_ev += (int)r;
        close(p[0]);
        CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "kill %d: the child was not killed (status %#x)", kill_i, st);
        CHECK_MSG(n_ev < (int)sizeof ev && memchr(ev, 'E', (size_t)n_ev) == NULL, "kill %d: bad event stream", kill_i);

        /* Replay the events: which saves got renamed, and where the kill hit. */
        int cur = -1, tok_len = 0;
        char tok[32] = "";
        for (int i = 0; i < n_ev; i++) {
            if (ev[i] == 'S') {
                cur++;
                tok_len = 0;
            } else if (tok_len < 31)
                tok[tok_len++] = ev[i];
            tok[tok_len] = 0;
            if (ev[i] == 'r' && cur >= 0) done[n_done++] = steps[cur];
        }
        char buf[4096];
        int ph;
        if (tok_len && tok[tok_len - 1] == 'D') ph = PH_BETWEEN;
        else if (tok_len == 0) ph = PH_WRITE;
        else if (!strcmp(tok, "F")) ph = PH_FSYNC;
        else if (!strcmp(tok, "Ff") || !strcmp(tok, "FfR")) ph = PH_RENAME;
        else if (!strcmp(tok, "FfRr") || !strcmp(tok, "FfRrF")) ph = PH_DIRSYNC;
        else ph = PH_PRUNE;
        phase_n[ph]++;
        /* Killed inside rename(): done or not, the file says which. */
        if (!strcmp(tok, "FfR")) {
            if (!access(path_of(dir, steps[cur], buf, sizeof buf), F_OK)) {
                done[n_done++] = steps[cur];
                in_rename_after++;
            } else
                in_rename_before++;
        }
        uint64_t newest = done[n_done - 1], prev = done[n_done - 2];

        listing l;
        list_dir(dir, &l);
        CHECK_MSG(l.other == 0, "kill %d: %d unexpected files", kill_i, l.other);
        CHECK_MSG(l.n_tmp <= 1, "kill %d: %d temporary files", kill_i, l.n_tmp);
        if (l.n_tmp) {
            CHECK_MSG(ph <= PH_RENAME, "kill %d (%s): temporary file %s left after the rename", kill_i, ph_name[ph], l.tmp[0]);
            tmp_left++;
            if (strcmp(l.tmp[0], last_tmp)) {
                tmp_distinct++;
                if (l.tmp_size < (long long)FILE_SIZE) tmp_partial++;
            }
        }
        if (last_tmp[0] && (!l.n_tmp || strcmp(l.tmp[0], last_tmp))) tmp_removed++;
        snprintf(last_tmp, sizeof last_tmp, "%s", l.n_tmp ? l.tmp[0] : "");
        if (ph == PH_PRUNE && l.n > KEEP) prune_partial++;

        /* The newest complete checkpoint loads; the one before it is intact. */
        check_load(dir, newest, "directory");
        CHECK_MSG(l.n >= 2 && l.steps[l.n - 1] == newest && l.steps[l.n - 2] == prev,
                  "kill %d (%s): the two newest files are %llu, %llu; expected %llu, %llu", kill_i, ph_name[ph],
                  (unsigned long long)(l.n >= 2 ? l.steps[l.n - 2] : 0),
                  (unsigned long long)(l.n >= 1 ? l.steps[l.n - 1] : 0), (unsigned long long)prev,
                  (unsigned long long)newest);
        /* Every checkpoint file left validates and is its step, bit for bit. */
        for (int i = 0; i < l.n; i++) {
            int known = 0;
            for (int k = 0; k < n_done; k++) known |= done[k] == l.steps[i];
            CHECK_MSG(known, "kill %d: file for step %llu that was never completed", kill_i, (unsigned long long)l.steps[i]);
            check_load(path_of(dir, l.steps[i], buf, sizeof buf), l.steps[i], "file");
        }
    }
    double t_kills = cllm_now_s() - t_start;

    /* A save after the last kill removes the dead writer's temp file and prunes to KEEP. */
    uint64_t s = done[n_done - 1] + 1;
    fill(&c, bufs, s);
    CHECK_OK(cllm_ckpt_save(dir, &c, KEEP, NULL));
    listing l;
    list_dir(dir, &l);
    CHECK_MSG(l.n == KEEP && l.n_tmp == 0 && l.other == 0, "after a clean save: %d checkpoints, %d temp files", l.n, l.n_tmp);
    if (last_tmp[0] && !l.n_tmp) tmp_removed++;
    CHECK_EQ_INT(tmp_removed, tmp_distinct);
    check_load(dir, s, "directory after a clean save");

    printf("kill test: %d kills in %.1f s; during %s %d, %s %d, %s %d, %s %d, %s %d, %s %d\n", KILLS, t_kills,
           ph_name[0], phase_n[0], ph_name[1], phase_n[1], ph_name[2], phase_n[2], ph_name[3], phase_n[3], ph_name[4],
           phase_n[4], ph_name[5], phase_n[5]);
    printf("kill test: %d kills inside rename(), %d before the new name appeared and %d after\n",
           in_rename_before + in_rename_after, in_rename_before, in_rename_after);
    printf("kill test: %d kills found a temp file: %d different ones (%d partly written), %d removed by a later save; "
           "%d kills in pruning left more than %d checkpoints; %d saves completed\n",
           tmp_left, tmp_distinct, tmp_partial, tmp_removed, prune_partial, KEEP, n_done);
    free(done);
    TEST_OK("kill -9 during saves");
}

/* ---- 2. disk full ---- */

typedef struct {
    char names[8][64];
    unsigned char *data[8];
    size_t size[8];
    int n;
} snapshot;

static void snap(const char *dir, snapshot *sn) {
    memset(sn, 0, sizeof *sn);
    listing l;
    list_dir(dir, &l);
    char p[4096];
    for (int i = 0; i < l.n && i < 8; i++) {
        path_of(dir, l.steps[i], p, sizeof p);
        snprintf(sn->names[i], 64, "%s", strrchr(p, '/') + 1);
        FILE *f = fopen(p, "rb");
        if (!f) { CHECK(0); continue; }
        sn->data[i] = malloc(FILE_SIZE);
        sn->size[i] = sn->data[i] ? fread(sn->data[i], 1, FILE_SIZE + 1, f) : 0;
        fclose(f);
    }
    sn->n = l.n < 8 ? l.n : 8;
}

static int same_snapshot(const snapshot *a, const snapshot *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->names[i], b->names[i]) || a->size[i] != b->size[i] || !a->data[i] || !b->data[i] ||
            memcmp(a->data[i], b->data[i], a->size[i]))
            return 0;
    return 1;
}

static void free_snapshot(snapshot *sn) {
    for (int i = 0; i < sn->n; i++) free(sn->data[i]);
}

/* After a failed save of step s: the error, the message, no temp file, old files as they were. */
static void check_failed_save(const char *dir, int rc, const char *msg, uint64_t s, const char *want_err,
                              const snapshot *before, const char *what) {
    char name[64];
    snprintf(name, sizeof name, "ckpt-%08llu.cllmckpt", (unsigned long long)s);
    CHECK_MSG(rc == CLLM_EIO, "%s: save returned %d (%s)", what, rc, msg);
    CHECK_MSG(strstr(msg, name) && strstr(msg, want_err), "%s: message \"%s\" should name %s and say \"%s\"", what,
              msg, name, want_err);
    listing l;
    list_dir(dir, &l);
    CHECK_MSG(l.n_tmp == 0, "%s: temporary file %s left", what, l.tmp[0]);
    snapshot after;
    snap(dir, &after);
    CHECK_MSG(same_snapshot(before, &after), "%s: the existing checkpoints changed", what);
    free_snapshot(&after);
    for (int i = 0; i < l.n; i++) {
        char p[4096];
        check_load(path_of(dir, l.steps[i], p, sizeof p), l.steps[i], what);
    }
}

static void disk_full_test(const char *base) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/full", base);
    cllm_ckpt c;
    for (uint64_t s = 10; s <= 11; s++) {
        fill(&c, bufs, s);
        CHECK_OK(cllm_ckpt_save(dir, &c, KEEP, NULL));
    }
    snapshot before;
    snap(dir, &before);
    CHECK(before.n == 2);

    /* EFBIG from RLIMIT_FSIZE: at the first byte, in the header, in params,
     * in v, in the checksum, one byte short. */
    const long long limits[] = { 0, 100, 1040 + 5000, 1040 + 8ll * NP + 12345, (long long)FILE_SIZE - 5,
                                 (long long)FILE_SIZE - 1 };
    char first_msg[1024] = "";
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        int p[2];
        if (pipe(p)) { CHECK(0); return; }
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = { (rlim_t)limits[i], (rlim_t)limits[i] };
            if (setrlimit(RLIMIT_FSIZE, &rl)) _exit(5);
            fill(&c, bufs, 12);
            int rc = cllm_ckpt_save(dir, &c, KEEP, NULL);
            char out[1100];
            int n = snprintf(out, sizeof out, "%d %s", rc, cllm_errmsg());
            (void)!syscall(SYS_write, p[1], out, (size_t)(n < (int)sizeof out ? n : (int)sizeof out - 1));
            _exit(0);
        }
        close(p[1]);
        char out[1100];
        ssize_t n = read(p[0], out, sizeof out - 1);
        close(p[0]);
        int st;
        waitpid(pid, &st, 0);
        out[n > 0 ? n : 0] = 0;
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "RLIMIT_FSIZE child: status %#x", st);
        int rc = 0, off = 0;
        sscanf(out, "%d %n", &rc, &off);
        char what[64];
        snprintf(what, sizeof what, "RLIMIT_FSIZE %lld", limits[i]);
        check_failed_save(dir, rc, out + off, 12, strerror(EFBIG), &before, what);
        if (!first_msg[0]) snprintf(first_msg, sizeof first_msg, "%s", out + off);
    }
    printf("disk full: RLIMIT_FSIZE (EFBIG) at %zu offsets: \"%s\"\n", sizeof limits / sizeof limits[0], first_msg);

    /* ENOSPC from write (a partial write first, as the kernel does). */
    const long long at[] = { 0, 1, 1039, 1041, 1040 + 4ll * NP, (long long)FILE_SIZE - 8, (long long)FILE_SIZE - 1 };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        inj.enospc_at = at[i];
        inj.written = 0;
        fill(&c, bufs, 12);
        int rc = cllm_ckpt_save(dir, &c, KEEP, NULL);
        inj.enospc_at = -1;
        char what[64];
        snprintf(what, sizeof what, "ENOSPC at byte %lld", at[i]);
        check_failed_save(dir, rc, cllm_errmsg(), 12, strerror(ENOSPC), &before, what);
        if (i == 0) printf("disk full: ENOSPC from write at %zu offsets: \"%s\"\n", sizeof at / sizeof at[0], cllm_errmsg());
    }

    /* ENOSPC and EDQUOT reported only by fsync (NFS, delayed allocation). */
    const int fe[] = { ENOSPC, EDQUOT, EIO };
    for (size_t i = 0; i < sizeof fe / sizeof fe[0]; i++) {
        inj.fsync_errno = fe[i];
        fill(&c, bufs, 12);
        char *fp = (char *)"unset";
        int rc = cllm_ckpt_save(dir, &c, KEEP, &fp);
        inj.fsync_errno = 0;
        /* no file, so no path: a caller must not be handed one to free or print */
        CHECK_MSG(rc == 0 || fp == NULL, "fsync failed but path_out is %s", fp);
        if (!rc) free(fp);
        char what[64];
        snprintf(what, sizeof what, "fsync %s", strerror(fe[i]));
        check_failed_save(dir, rc, cllm_errmsg(), 12, strerror(fe[i]), &before, what);
        if (i == 0) printf("disk full: ENOSPC from fsync: \"%s\"\n", cllm_errmsg());
    }
    free_snapshot(&before);

    /* After all that, a save works and prunes as usual; the rename is made
     * durable by an fsync of the directory (a power loss could undo it). */
    fill(&c, bufs, 12);
    int dir_fsyncs = inj.dir_fsyncs;
    CHECK_OK(cllm_ckpt_save(dir, &c, KEEP, NULL));
    CHECK_MSG(inj.dir_fsyncs > dir_fsyncs, "the save did not fsync its directory");
    listing l;
    list_dir(dir, &l);
    CHECK(l.n == 2 && l.steps[0] == 11 && l.steps[1] == 12 && l.n_tmp == 0);
    rm_dir(dir);
    TEST_OK("disk full");
}

/* ---- 3. short writes and EINTR ---- */

static void eintr_test(const char *base) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/eintr", base);
    cllm_ckpt c;
    fill(&c, bufs, 77);
    inj.short_writes = 1;
    inj.eintr_every = 3;
    inj.calls = 0;
    CHECK_OK(cllm_ckpt_save(dir, &c, KEEP, NULL));
    inj.short_writes = 0;
    inj.eintr_every = 0;
    check_load(dir, 77, "short writes and EINTR");
    listing l;
    list_dir(dir, &l);
    CHECK(l.n == 1 && l.n_tmp == 0);
    rm_dir(dir);
    TEST_OK("short writes and EINTR");
}

/* ---- 4. stale temporary files ---- */

static void stale_tmp_test(const char *base) {
    char dir[1100], p[1200];
    snprintf(dir, sizeof dir, "%s/stale", base);
    cllm_ckpt c;
    fill(&c, bufs, 5);
    CHECK_OK(cllm_ckpt_save(dir, &c, KEEP, NULL));
    /* A dead writer's file (no lock), a live writer's (locked through its
     * own open file description), and names that are not ours. */
    const char *dead = ".ckpt-tmp-Dead01", *live = ".ckpt-tmp-Live01", *odd = ".ckpt-tmp-keep.me";
    snprintf(p, sizeof p, "%s/%s", dir, dead);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    CHECK(fd >= 0 && syscall(SYS_write, fd, "partial", 7) == 7);
    close(fd);
    snprintf(p, sizeof p, "%s/%s", dir, odd);
    fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    CHECK(fd >= 0);
    close(fd);
    snprintf(p, sizeof p, "%s/%s", dir, live);
    int lfd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    CHECK(lfd >= 0 && flock(lfd, LOCK_EX) == 0);
    check_load(dir, 5, "load with temporary files present");
    fill(&c, bufs, 6);
    CHECK_OK(cllm_ckpt_save(dir, &c, KEEP, NULL));
    snprintf(p, sizeof p, "%s/%s", dir, dead);
    CHECK_MSG(access(p, F_OK) != 0, "a dead writer's temporary file is still there");
    snprintf(p, sizeof p, "%s/%s", dir, live);
    CHECK_MSG(access(p, F_OK) == 0, "a live writer's temporary file was deleted");
    snprintf(p, sizeof p, "%s/%s", dir, odd);
    CHECK_MSG(access(p, F_OK) == 0, "a file not named like a temporary file was deleted");
    close(lfd); /* the writer dies */
    fill(&c, bufs, 7);
    CHECK_OK(cllm_ckpt_save(dir, &c, KEEP, NULL));
    snprintf(p, sizeof p, "%s/%s", dir, live);
    CHECK_MSG(access(p, F_OK) != 0, "a temporary file whose writer is gone is still there");
    check_load(dir, 7, "after stale temp cleanup");
    rm_dir(dir);
    TEST_OK("stale temporary files");
}

/* ---- 5. permissions ---- */

static void perm_test(const char *base) {
    char dir[1100], p[1200];
    snprintf(dir, sizeof dir, "%s/perm", base);
    cllm_ckpt c;
    const mode_t masks[] = { 022, 027, 077 };
    for (int i = 0; i < 3; i++) {
        mode_t old = umask(masks[i]);
        fill(&c, bufs, (uint64_t)i + 1);
        char *got = NULL;
        CHECK_OK(cllm_ckpt_save(dir, &c, 0, &got));
        umask(old);
        struct stat st;
        snprintf(p, sizeof p, "%s", got ? got : "");
        CHECK(got && !stat(p, &st) && (st.st_mode & 0777) == (0666 & ~masks[i]));
        free(got);
    }
    rm_dir(dir);
    TEST_OK("permissions follow the umask");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    uint64_t seed;
    const char *e = getenv("CLLM_TEST_SEED");
    if (e && *e) seed = strtoull(e, NULL, 10);
    else {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        seed = (uint64_t)t.tv_sec * 1000003u ^ (uint64_t)t.tv_nsec ^ (uint64_t)getpid();
    }
    bufs = malloc(3 * sizeof(float) * NP);
    expect = malloc(3 * sizeof(float) * NP);
    if (!bufs || !expect) return 1;
    const char *td = getenv("TMPDIR");
    char base[1024];
    snprintf(base, sizeof base, "%s/cllm-ckpt-crash-XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(base)) { perror(base); return 1; }
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/kill", base);

    kill_test(dir, seed);
    rm_dir(dir);
    disk_full_test(base);
    eintr_test(base);
    stale_tmp_test(base);
    perm_test(base);

    if (!check_failures) rmdir(base);
    else fprintf(stderr, "files kept in %s (seed %llu)\n", base, (unsigned long long)seed);
    free(bufs);
    free(expect);
    TEST_END();
}
