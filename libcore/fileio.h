/* fileio.h: whole reads and writes on file descriptors.
 *
 * read(2), write(2) and pread(2) may move fewer bytes than asked (pipes,
 * signals, the 2 GiB a call Linux allows) and fail with EINTR; every reader
 * and writer of the project needs the same loop around them, so it is here
 * once. Each function returns 0 when all n bytes moved, or -1 with errno
 * set; for the reads, -1 with errno 0 means the file ended first (*got, when
 * asked, says how many bytes came). The callers word the error: they know
 * the file's name and what a short file means for it.
 *
 * EINTR is retried, except by the reads once the program has been told to
 * stop (cllm_interrupted, cli.h: SIGINT/SIGTERM): a read blocked on a pipe
 * then returns -1 with errno EINTR, so that the program stops rather than
 * wait for the pipe's writer. Writes always finish (an interrupted program
 * still writes its end record).
 */
#ifndef CLLM_FILEIO_H
#define CLLM_FILEIO_H

#include <stddef.h>
#include <stdint.h>

int cllm_write_full(int fd, const void *buf, size_t n);
int cllm_read_full(int fd, void *buf, size_t n, size_t *got);
/* At offset off, leaving the file position alone (safe from several threads). */
int cllm_pread_full(int fd, void *buf, size_t n, uint64_t off);

/* fsync(2), retried on EINTR: 0, or -1 with errno set. */
int cllm_fsync(int fd);

/* Create a new file named prefix followed by 6 characters of [A-Za-z0-9]
 * (mkstemp's form), opened for writing with O_CREAT | O_EXCL | O_CLOEXEC and
 * mode 0666: the umask (and a default ACL) then give it the permissions a
 * plain create would, where mkstemp gives 0600 and a later chmod would
 * override the umask. On success *path (malloc'd) and *fd are set; else -1
 * with errno set (EEXIST only after many names were taken). */
int cllm_create_unique(const char *prefix, char **path, int *fd);

#endif
