/* test_fileio: the whole-read and whole-write loops (libcore/fileio.h).
 *
 * Every reader and writer of the project goes through these three functions,
 * so their contract is checked where the kernel really splits transfers: a
 * pipe whose other end moves a few bytes at a time while a 1 ms interval
 * timer interrupts the calls (EINTR and short counts, checklist D), the end of
 * a file reached early (errno 0 and the count that came), /dev/full, a bad
 * descriptor. And cllm_create_unique: new names of mkstemp's form, never an
 * existing file, the umask's permissions (mkstemp's 0600 or a chmod would
 * not be).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "cli.h"
#include "fileio.h"

static volatile sig_atomic_t alarms;
static void on_alarm(int sig) { (void)sig; alarms++; }

/* A 1 ms interval timer whose handler does not restart calls: reads and
 * writes blocked on a pipe return EINTR or a short count. The handler is
 * installed before the timer starts and kept until it has stopped: a tick
 * that came between restoring SIG_DFL and stopping the timer would kill the
 * test ("Alarm clock"). */
static void interrupt_every_ms(int on) {
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART */
    if (on && sigaction(SIGALRM, &sa, NULL)) { perror("sigaction"); exit(2); }
    struct itimerval it = {{0, on ? 1000 : 0}, {0, on ? 1000 : 0}};
    if (setitimer(ITIMER_REAL, &it, NULL)) { perror("setitimer"); exit(2); }
    if (!on) {
        /* Stopped: a tick already sent has been handled by now (SIGALRM is
         * not blocked), so the default comes back with none pending. */
        sa.sa_handler = SIG_DFL;
        if (sigaction(SIGALRM, &sa, NULL)) { perror("sigaction"); exit(2); }
    }
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 131 + (i >> 9)); }

static void nap_us(long us) {
    struct timespec ts = {0, us * 1000};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* The child's end of a pipe: write n pattern bytes `piece` at a time with a
 * pause between pieces (so the parent's read sees many short counts). */
static void slow_writer(int fd, size_t n, size_t piece) {
    unsigned char buf[64];
    for (size_t at = 0; at < n;) {
        size_t k = n - at < piece ? n - at : piece;
        for (size_t i = 0; i < k; i++) buf[i] = pattern(at + i);
        ssize_t w = write(fd, buf, k);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) _exit(3);
        at += (size_t)w;
        if (at % 256 < piece) nap_us(1000);   /* the parent blocks, the timer fires */
    }
    _exit(0);
}

/* The child's end of a pipe: read n bytes `piece` at a time and check them;
 * exit 0 when all n came, as written, and then the end of the pipe. */
static void slow_reader(int fd, size_t n, size_t piece) {
    unsigned char buf[64];
    size_t at = 0;
    for (;;) {
        ssize_t r = read(fd, buf, piece);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) _exit(3);
        if (r == 0) break;
        for (ssize_t i = 0; i < r; i++)
            if (at + (size_t)i >= n || buf[i] != pattern(at + (size_t)i)) _exit(4);
        size_t before = at;
        at += (size_t)r;
        if (at / 2048 != before / 2048) nap_us(1000);   /* the pipe fills, the parent blocks */
    }
    _exit(at == n ? 0 : 5);
}

static int child_status(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A child on the other end of a pipe running child(its end, n, piece); the
 * parent's end (the read end when the child writes) in *fd. */
static pid_t spawn_on_pipe(int child_writes, void (*child)(int fd, size_t n, size_t piece), size_t n, size_t piece,
                           int *fd) {
    int p[2];
    *fd = -1;
    if (pipe(p)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[child_writes ? 0 : 1]);
        child(p[child_writes ? 1 : 0], n, piece);
    }
    close(p[child_writes ? 1 : 0]);
    *fd = p[child_writes ? 0 : 1];
    return pid;
}

/* The loops must have met the timer while they ran; without that the run
 * proves nothing about EINTR (at 1 ms, a run sees 100 or more). */
enum { MIN_INTERRUPTS = 20 };

static void test_read_from_slow_pipe(void) {
    enum { N = 40000 };
    int fd;
    pid_t pid = spawn_on_pipe(1, slow_writer, N, 7, &fd);
    CHECK(pid > 0 && fd >= 0);
    if (pid <= 0) return;
    static unsigned char buf[N + 16];
    alarms = 0;
    interrupt_every_ms(1);
    size_t got = 0;
    int rc = cllm_read_full(fd, buf, N, &got);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(got, N);
    size_t bad = 0;
    for (size_t i = 0; i < N; i++) bad += buf[i] != pattern(i);
    CHECK_EQ_INT(bad, 0);
    /* The writer is done: asking for more meets the end of the pipe. */
    errno = EBADF;
    rc = cllm_read_full(fd, buf, 16, &got);
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_INT(errno, 0);
    CHECK_EQ_INT(got, 0);
    interrupt_every_ms(0);
    CHECK_EQ_INT(child_status(pid), 0);
    close(fd);
    CHECK_MSG(alarms >= MIN_INTERRUPTS, "only %d timer interrupts while reading", (int)alarms);
    printf("  read: %d bytes through a pipe 7 at a time, %d timer interrupts\n", N, (int)alarms);
    TEST_OK("read_full: short counts and EINTR from a slow pipe, then its end");
}

static void test_write_to_slow_pipe(void) {
    /* More than a pipe holds (64 KiB), so the writes block, are interrupted
     * and come back short. */
    enum { N = 300000 };
    int fd;
    pid_t pid = spawn_on_pipe(0, slow_reader, N, 61, &fd);
    CHECK(pid > 0 && fd >= 0);
    if (pid <= 0) return;
    static unsigned char buf[N];
    for (size_t i = 0; i < N; i++) buf[i] = pattern(i);
    alarms = 0;
    interrupt_every_ms(1);
    CHECK_EQ_INT(cllm_write_full(fd, buf, N), 0);
    interrupt_every_ms(0);
    close(fd);
    CHECK_EQ_INT(child_status(pid), 0);
    CHECK_MSG(alarms >= MIN_INTERRUPTS, "only %d timer interrupts while writing", (int)alarms);
    printf("  write: %d bytes to a reader taking 61 at a time, %d timer interrupts\n", N, (int)alarms);
    TEST_OK("write_full: every byte, in order, through short writes and EINTR");
}

/* A signal the program acts on (the handler sets cllm_interrupted, as
 * cllm_cli_init's does) stops a read blocked on a pipe: -1 with errno EINTR,
 * not a wait for the writer. The writer (a child) writes everything only
 * after 3 s, so a read that waits for it ends (and fails here) rather than
 * hang the suite. */
static void on_stop(int sig) { cllm_interrupted = sig; }

static void test_read_stops_when_interrupted(void) {
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t late = fork();
    if (late == 0) {
        close(p[0]);
        sleep(3);
        _exit(write(p[1], "12345678", 8) == 8 ? 0 : 1);
    }
    close(p[1]);
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGALRM, &sa, &old) == 0);
    /* a tick every 50 ms: one that came before read() blocked (a loaded
     * machine can deschedule the test that long) is followed by another */
    struct itimerval every = {{0, 50000}, {0, 50000}};
    CHECK(setitimer(ITIMER_REAL, &every, NULL) == 0);
    unsigned char buf[8];
    size_t got = 99;
    errno = 0;
    int rc = cllm_read_full(p[0], buf, sizeof buf, &got);
    int err = errno;
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_INT(err, EINTR);
    CHECK_EQ_INT(got, 0);
    CHECK_EQ_INT(cllm_interrupted, SIGALRM);
    struct itimerval stop = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &stop, NULL);   /* stopped before the old handler is back */
    cllm_interrupted = 0;
    sigaction(SIGALRM, &old, NULL);
    close(p[0]);
    if (late > 0) {
        kill(late, SIGKILL);
        child_status(late);
    }
    TEST_OK("read_full: a signal that sets cllm_interrupted stops a blocked read (EINTR)");
}

static void test_ends_early(void) {
    char path[] = "/tmp/cllm-test-fileio-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    unlink(path);
    unsigned char buf[128];
    for (int i = 0; i < 100; i++) buf[i] = pattern((size_t)i);
    CHECK_EQ_INT(cllm_write_full(fd, buf, 100), 0);

    unsigned char in[128];
    memset(in, 0, sizeof in);
    CHECK_EQ_INT(cllm_pread_full(fd, in, 10, 90), 0);
    CHECK(!memcmp(in, buf + 90, 10));
    errno = EBADF;
    CHECK_EQ_INT(cllm_pread_full(fd, in, 20, 90), -1);   /* 10 bytes short */
    CHECK_EQ_INT(errno, 0);
    errno = EBADF;
    CHECK_EQ_INT(cllm_pread_full(fd, in, 1, 100), -1);   /* at the end */
    CHECK_EQ_INT(errno, 0);
    CHECK_EQ_INT(cllm_pread_full(fd, in, 0, 1000), 0);   /* nothing asked, nothing read */

    /* pread leaves the position (at the end, after the write) alone. */
    CHECK_EQ_INT(lseek(fd, 0, SEEK_CUR), 100);
    CHECK_EQ_INT(lseek(fd, 40, SEEK_SET), 40);
    size_t got = 0;
    errno = EBADF;
    CHECK_EQ_INT(cllm_read_full(fd, in, 100, &got), -1);
    CHECK_EQ_INT(errno, 0);
    CHECK_EQ_INT(got, 60);
    CHECK(!memcmp(in, buf + 40, 60));
    CHECK_EQ_INT(lseek(fd, 0, SEEK_SET), 0);
    CHECK_EQ_INT(cllm_read_full(fd, in, 100, NULL), 0);
    CHECK(!memcmp(in, buf, 100));
    close(fd);
    TEST_OK("read_full and pread_full: the end of a file gives -1 with errno 0 and the count that came");
}

static void test_errors(void) {
    unsigned char buf[4096] = {0};
    int fd = open("/dev/full", O_WRONLY);
    if (fd >= 0) {
        errno = 0;
        CHECK_EQ_INT(cllm_write_full(fd, buf, sizeof buf), -1);
        CHECK_EQ_INT(errno, ENOSPC);
        close(fd);
    } else {
        printf("  (no /dev/full here: its case skipped)\n");
    }
    size_t got = 99;
    errno = 0;
    CHECK_EQ_INT(cllm_read_full(-1, buf, 1, &got), -1);
    CHECK_EQ_INT(errno, EBADF);
    CHECK_EQ_INT(got, 0);
    errno = 0;
    CHECK_EQ_INT(cllm_pread_full(-1, buf, 1, 0), -1);
    CHECK_EQ_INT(errno, EBADF);
    errno = 0;
    CHECK_EQ_INT(cllm_write_full(-1, buf, 1), -1);
    CHECK_EQ_INT(errno, EBADF);
    int dir = open(".", O_RDONLY | O_DIRECTORY);
    CHECK(dir >= 0);
    errno = 0;
    CHECK_EQ_INT(cllm_read_full(dir, buf, 1, NULL), -1);
    CHECK_EQ_INT(errno, EISDIR);
    close(dir);
    TEST_OK("errors: ENOSPC, EBADF and EISDIR come back in errno");
}

static void test_create_unique(void) {
    char dir[] = "/tmp/test_fileio.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s/out.tmp", dir);
    const mode_t masks[] = { 022, 077, 027, 0 };
    char *names[4] = { 0 };
    for (int i = 0; i < 4; i++) {
        mode_t old = umask(masks[i]);
        int fd = -1;
        int rc = cllm_create_unique(prefix, &names[i], &fd);
        umask(old);
        CHECK(rc == 0 && fd >= 0 && names[i]);
        if (rc) continue;
        struct stat st;
        CHECK(!fstat(fd, &st) && S_ISREG(st.st_mode) && st.st_size == 0);
        CHECK_MSG((st.st_mode & 0777) == (0666 & ~masks[i]), "umask %03o: mode %03o", (unsigned)masks[i],
                  (unsigned)(st.st_mode & 0777));
        CHECK(write(fd, "x", 1) == 1);   /* opened for writing */
        CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
        close(fd);
        /* prefix + 6 of [A-Za-z0-9] */
        size_t lp = strlen(prefix);
        CHECK(!strncmp(names[i], prefix, lp) && strlen(names[i]) == lp + 6 &&
              strspn(names[i] + lp, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") == 6);
        for (int j = 0; j < i; j++) CHECK(names[j] && strcmp(names[i], names[j]));
    }
    /* a prefix in a directory that is not there: -1 and the open's errno */
    char *none = NULL;
    int fd = -1;
    char bad[80];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x", dir);
    errno = 0;
    CHECK(cllm_create_unique(bad, &none, &fd) == -1 && errno == ENOENT && none == NULL);
    for (int i = 0; i < 4; i++) {
        if (names[i]) unlink(names[i]);
        free(names[i]);
    }
    CHECK(rmdir(dir) == 0);
    TEST_OK("create_unique: new names of mkstemp's form, the umask's permissions");
}

int main(void) {
    test_read_from_slow_pipe();
    test_write_to_slow_pipe();
    test_read_stops_when_interrupted();
    test_ends_early();
    test_errors();
    test_create_unique();
    TEST_END();
}
