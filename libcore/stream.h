/* stream.h: the record stream of cllm-stream(5).
 *
 * A stream is zstd data (one or more concatenated frames, content checksums
 * on) whose decompressed bytes are a sequence of msgpack maps, one per record,
 * each with a string field "type". A stream opens with a "header" record and
 * closes with an "end" record that counts the records between them; several
 * header..end sections may follow each other (cat a.zst b.zst).
 *
 * Reader: delivers every complete record in order (header and end included),
 * then reports a missing end, a cut frame or a cut record as CLLM_ETRUNC, after
 * the records before the cut. An end record may be marked "interrupted" (its
 * producer stopped early on a signal): the section is then whole but short. Writer: compresses each record and flushes the
 * compressor after it (or after a batch of flush_bytes) so a pipe reader sees
 * it promptly; closing writes the end record and ends the frame.
 */
#ifndef CLLM_STREAM_H
#define CLLM_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "mpvalue.h"

#define CLLM_STREAM_FORMAT "cllm"
#define CLLM_STREAM_VERSION 1
#define CLLM_STREAM_MAX_RECORD_DEFAULT (64u << 20)

/* One decoded record; valid until the next cllm_reader_next() call. */
typedef struct cllm_record {
    const cllm_value *root;   /* a MAP */
    const char *type;         /* the "type" field, NUL-terminated copy */
    const uint8_t *raw;       /* its msgpack bytes */
    size_t raw_len;
    uint64_t index;           /* 0-based position in the input, all records counted */
} cllm_record;

typedef struct cllm_reader cllm_reader;

/* Open path ("-" or NULL: stdin). name is used in messages. */
int cllm_reader_open(cllm_reader **out, const char *path);
int cllm_reader_open_fd(cllm_reader **out, int fd, const char *name);
/* As cllm_reader_open_fd, for a caller that already read the first n (<= 16)
 * bytes of fd to tell what the input is: they are read first. */
int cllm_reader_open_fd_prefixed(cllm_reader **out, int fd, const char *name, const void *prefix, size_t n);
/* Read from memory (tests, fuzzing): the bytes must outlive the reader. */
int cllm_reader_open_mem(cllm_reader **out, const void *data, size_t len, const char *name);
void cllm_reader_close(cllm_reader *r);

/* Largest decompressed record accepted (default 64 MiB). */
void cllm_reader_set_max_record(cllm_reader *r, size_t bytes);
/* Largest zstd window accepted, the decoder's memory (default 2^27 = 128 MiB,
 * zstd's own default limit; a power of two from 2^10 to 2^31). A frame that
 * asks for more is refused with a message naming both sizes. 0 or CLLM_EINVAL. */
#define CLLM_STREAM_MAX_WINDOW_DEFAULT ((size_t)1 << 27)
int cllm_reader_set_max_window(cllm_reader *r, size_t bytes);
/* Called before each blocking read of the input (e.g. to flush a writer that
 * batches, so a pipeline never waits on data held back downstream). */
void cllm_reader_on_wait(cllm_reader *r, void (*fn)(void *), void *arg);

/* Next record: 0 and *rec filled; CLLM_EOF at the clean end of input; a
 * negative code on error (CLLM_ETRUNC for every kind of truncation), with a
 * message naming the input, the record index and the byte offset. After an
 * error the reader stays in error. */
int cllm_reader_next(cllm_reader *r, cllm_record *rec);

/* The header record of the current section (NULL before the first). */
const cllm_value *cllm_reader_header(const cllm_reader *r);
const char *cllm_reader_name(const cllm_reader *r);
/* Records seen so far, header and end records included. */
uint64_t cllm_reader_count(const cllm_reader *r);
/* The reason of the last end record marked "interrupted" (its producer was
 * stopped by a signal: the section is whole but short), NULL when none was;
 * *n_sections (may be NULL) gets how many sections were so marked. */
const char *cllm_reader_interrupted(const cllm_reader *r, uint64_t *n_sections);
/* For a consumer at the end of its input: a warning (err.h) when a section
 * was marked interrupted, since what it computes covers fewer records than
 * the producer was asked for. */
void cllm_reader_warn_interrupted(const cllm_reader *r);

typedef struct cllm_writer cllm_writer;

/* Open a writer on path ("-" or NULL: stdout). A regular file is written under
 * a temporary name and renamed at close; refuses a terminal unless force. */
int cllm_writer_open(cllm_writer **out, const char *path, int force_tty);
int cllm_writer_open_fd(cllm_writer **out, int fd, const char *name, int force_tty);
/* Flush after this many uncompressed bytes (0, the default: after every record). */
void cllm_writer_set_flush(cllm_writer *w, size_t bytes);
/* zstd level (default 3). */
int cllm_writer_set_level(cllm_writer *w, int level);

/* Start a section with a header record (complete msgpack bytes, built by
 * cllm_rec_header_pack()); ends an open section first. */
int cllm_writer_put_header(cllm_writer *w, const void *msgpack, size_t len);
/* Append one record given as complete msgpack bytes (a map with a "type",
 * never "header" or "end"). */
int cllm_writer_put(cllm_writer *w, const void *msgpack, size_t len);
/* Flush what is buffered to the output. */
int cllm_writer_flush(cllm_writer *w);
/* Write the end record, end the frame, flush, close (and rename a file).
 * Returns the first error seen, including delayed write errors. Frees w. */
int cllm_writer_close(cllm_writer *w);
/* Mark the section's end record "interrupted": why (e.g. "SIGINT"; at most
 * 31 bytes; NULL or "" clears it). cllm-cat uses it to pass on an input's mark. */
void cllm_writer_set_interrupted(cllm_writer *w, const char *why);
/* Stop after a failure: finishes the frame so the data written so far
 * decodes, removes a temporary file (a regular file is never left under its
 * final name), frees w. On a pipe or other non-file output the section then
 * lacks its end record (readers report it truncated) -- unless a signal
 * stopped the program (cllm_interrupted): then the records written are whole,
 * and the section is closed with an end record marked "interrupted": "SIGINT"
 * (or "SIGTERM"), which readers accept and report. */
void cllm_writer_abort(cllm_writer *w);
/* Records written since the last header, not counting it. */
uint64_t cllm_writer_count(const cllm_writer *w);
/* Uncompressed and compressed bytes written so far. */
void cllm_writer_bytes(const cllm_writer *w, uint64_t *raw, uint64_t *compressed);

#endif
