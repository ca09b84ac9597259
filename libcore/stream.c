/* stream.c: reader and writer of record streams (see stream.h, cllm-stream(5)).
 *
 * Reader invariants: `out` holds decompressed bytes [out_pos, out_len) not yet
 * consumed; a record is parsed only once its scan (cllm_mp_scan_more, resumed
 * as its bytes arrive, so each byte is scanned about once and the record is
 * taken the moment its last byte is decompressed) says it is complete;
 * `frame_open` is true while the zstd decoder is inside a frame (its last
 * return value was non-zero), which is how a cut frame is told from a clean
 * end. The end record's count is checked against the records actually seen.
 */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msgpack.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "cli.h"
#include "err.h"
#include "fileio.h"

/* ---------------------------------------------------------------- reader */

struct cllm_reader {
    char *name;
    int fd;                 /* -1 when reading from memory */
    int own_fd;
    const uint8_t *mem;     /* memory input */
    size_t mem_len, mem_pos;
    ZSTD_DCtx *dctx;
    uint8_t *in;            /* compressed input buffer */
    size_t in_cap, in_len, in_pos;
    int in_eof;
    int frame_open;         /* inside a zstd frame */
    uint64_t in_total;      /* compressed bytes consumed (for offsets in messages) */
    uint8_t *out;           /* decompressed bytes */
    size_t out_cap, out_len, out_pos;
    cllm_mp_scanner scan;   /* the record at out_pos, scanned as far as its bytes go */
    size_t scanned;         /* bytes after out_pos the scan has seen (0: not begun) */
    uint64_t out_total;     /* decompressed bytes consumed before out[0] */
    size_t max_record;
    size_t max_window;      /* the decoder's window limit, for messages */
    cllm_value *nodes;
    size_t nodes_cap;
    char type[64];
    uint64_t count;         /* records delivered */
    uint64_t since_header;  /* records delivered since the last header (not counting it) */
    int in_section;         /* a header was seen without its end */
    char interrupted[32];   /* the last end record's "interrupted" field, "" if none */
    uint64_t n_interrupted; /* sections closed by an interrupted producer */
    uint8_t *header_raw;    /* copy of the current header record */
    size_t header_len;
    cllm_value *header_nodes;
    int error;              /* sticky error code */
    int any_input;          /* saw at least one byte */
    int out_eof;            /* the decoder can give no more bytes */
    uint8_t prefix[16];     /* bytes the caller read from fd before us */
    size_t prefix_len;
    void (*on_wait)(void *);
    void *on_wait_arg;
};

static int reader_init(cllm_reader **out, const char *name) {
    cllm_reader *r = cllm_calloc(1, sizeof *r);
    if (!r) return CLLM_ENOMEM;
    r->fd = -1;
    r->name = cllm_strdup(name);
    r->dctx = ZSTD_createDCtx();
    r->in_cap = ZSTD_DStreamInSize();
    r->in = cllm_malloc(r->in_cap);
    r->out_cap = 1 << 17;
    r->out = cllm_malloc(r->out_cap);
    r->max_record = CLLM_STREAM_MAX_RECORD_DEFAULT;
    r->max_window = CLLM_STREAM_MAX_WINDOW_DEFAULT;
    if (!r->name || !r->dctx || !r->in || !r->out ||
        ZSTD_isError(ZSTD_DCtx_setParameter(r->dctx, ZSTD_d_windowLogMax, 27))) {
        cllm_reader_close(r);
        return cllm_error(CLLM_ENOMEM, "out of memory opening a stream reader");
    }
    *out = r;
    return 0;
}

int cllm_reader_open_fd(cllm_reader **out, int fd, const char *name) {
    int rc = reader_init(out, name);
    if (rc) return rc;
    (*out)->fd = fd;
    return 0;
}

int cllm_reader_open_fd_prefixed(cllm_reader **out, int fd, const char *name, const void *prefix, size_t n) {
    if (n > sizeof (*out)->prefix) return cllm_error(CLLM_EINVAL, "reader prefix of %zu bytes is too long", n);
    int rc = cllm_reader_open_fd(out, fd, name);
    if (rc) return rc;
    memcpy((*out)->prefix, prefix, n);
    (*out)->prefix_len = n;
    return 0;
}

int cllm_reader_open(cllm_reader **out, const char *path) {
    if (!path || !strcmp(path, "-")) return cllm_reader_open_fd(out, STDIN_FILENO, "(stdin)");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    int rc = cllm_reader_open_fd(out, fd, path);
    if (rc) { close(fd); return rc; }
    (*out)->own_fd = 1;
    return 0;
}

int cllm_reader_open_mem(cllm_reader **out, const void *data, size_t len, const char *name) {
    int rc = reader_init(out, name);
    if (rc) return rc;
    (*out)->mem = data;
    (*out)->mem_len = len;
    return 0;
}

void cllm_reader_close(cllm_reader *r) {
    if (!r) return;
    if (r->own_fd) close(r->fd);
    ZSTD_freeDCtx(r->dctx);
    free(r->name);
    free(r->in);
    free(r->out);
    free(r->nodes);
    free(r->header_raw);
    free(r->header_nodes);
    free(r);
}

void cllm_reader_set_max_record(cllm_reader *r, size_t bytes) { r->max_record = bytes; }

int cllm_reader_set_max_window(cllm_reader *r, size_t bytes) {
    int log = 10;
    while (log < 31 && ((size_t)1 << log) < bytes) log++;
    if (((size_t)1 << log) != bytes)
        return cllm_error(CLLM_EINVAL, "zstd window limit %zu is not a power of two from 1 KiB to 2 GiB", bytes);
    size_t ret = ZSTD_DCtx_setParameter(r->dctx, ZSTD_d_windowLogMax, log);
    if (ZSTD_isError(ret)) return cllm_error(CLLM_EINVAL, "zstd window limit 2^%d: %s", log, ZSTD_getErrorName(ret));
    r->max_window = bytes;
    return 0;
}

void cllm_reader_on_wait(cllm_reader *r, void (*fn)(void *), void *arg) {
    r->on_wait = fn;
    r->on_wait_arg = arg;
}

const char *cllm_reader_name(const cllm_reader *r) { return r->name; }
uint64_t cllm_reader_count(const cllm_reader *r) { return r->count; }

const char *cllm_reader_interrupted(const cllm_reader *r, uint64_t *n_sections) {
    if (n_sections) *n_sections = r->n_interrupted;
    return r->n_interrupted ? r->interrupted : NULL;
}

void cllm_reader_warn_interrupted(const cllm_reader *r) {
    if (!r->n_interrupted) return;
    cllm_warn("%s: %llu section%s of this stream %s stopped by %s: its records are whole but fewer than were asked for",
              r->name, (unsigned long long)r->n_interrupted, r->n_interrupted == 1 ? "" : "s",
              r->n_interrupted == 1 ? "was" : "were", r->interrupted);
}

const cllm_value *cllm_reader_header(const cllm_reader *r) {
    return r->header_len ? r->header_nodes : NULL;
}

static int fail(cllm_reader *r, int code) {
    r->error = code;
    return code;
}

/* Read more compressed input. Returns 0 (maybe at EOF) or an error. */
static int fill_input(cllm_reader *r) {
    if (r->in_pos < r->in_len || r->in_eof) return 0;
    r->in_pos = r->in_len = 0;
    if (r->mem) {
        size_t n = r->mem_len - r->mem_pos;
        if (n > r->in_cap) n = r->in_cap;
        memcpy(r->in, r->mem + r->mem_pos, n);
        r->mem_pos += n;
        r->in_len = n;
        if (n == 0) r->in_eof = 1;
        return 0;
    }
    if (r->prefix_len) {
        memcpy(r->in, r->prefix, r->prefix_len);
        r->in_len = r->prefix_len;
        r->prefix_len = 0;
        return 0;
    }
    if (r->on_wait) r->on_wait(r->on_wait_arg);
    for (;;) {
        ssize_t n = read(r->fd, r->in, r->in_cap);
        if (n < 0 && errno == EINTR) {
            /* A signal the program handles (SIGINT/SIGTERM) stops a blocked read. */
            if (cllm_interrupted) return cllm_error(CLLM_EINTR, "%s: interrupted", r->name);
            continue;
        }
        if (n < 0) return fail(r, cllm_error(CLLM_EIO, "%s: read error: %s", r->name, strerror(errno)));
        if (n == 0) r->in_eof = 1;
        r->in_len = (size_t)n;
        return 0;
    }
}

/* Decompress more bytes into out (at least one, unless input is exhausted).
 * Returns 0, or an error. Sets *eof when no more output can come. */
static int fill_output(cllm_reader *r, int *eof) {
    *eof = 0;
    /* Compact: drop consumed bytes. */
    if (r->out_pos > 0) {
        memmove(r->out, r->out + r->out_pos, r->out_len - r->out_pos);
        r->out_total += r->out_pos;
        r->out_len -= r->out_pos;
        r->out_pos = 0;
    }
    if (r->out_cap - r->out_len < (1 << 16)) {
        size_t ncap = r->out_cap * 2;
        if (r->out_len > r->max_record + (1 << 17))
            return fail(r, cllm_error(CLLM_ELIMIT, "%s: record %llu is larger than %zu bytes (the record size limit)",
                                      r->name, (unsigned long long)r->count, r->max_record));
        uint8_t *p = cllm_realloc(r->out, ncap);
        if (!p) return fail(r, CLLM_ENOMEM);
        r->out = p;
        r->out_cap = ncap;
    }
    size_t before = r->out_len;
    while (r->out_len == before) {
        int rc = fill_input(r);
        if (rc) return rc;
        int drained = (r->in_pos == r->in_len && r->in_eof);
        /* At end of input the decoder may still hold output: ask once more. */
        if (drained && !r->frame_open) { *eof = 1; return 0; }
        ZSTD_inBuffer ib = { r->in, r->in_len, r->in_pos };
        ZSTD_outBuffer ob = { r->out, r->out_cap, r->out_len };
        size_t ret = ZSTD_decompressStream(r->dctx, &ob, &ib);
        r->in_total += ib.pos - r->in_pos;
        r->in_pos = ib.pos;
        r->out_len = ob.pos;
        if (ib.pos > 0 || r->in_len > 0) r->any_input = 1;
        if (ZSTD_isError(ret)) {
            ZSTD_ErrorCode ec = ZSTD_getErrorCode(ret);
            /* Asked to flush at end of input inside a frame: the frame is cut. */
            if (drained && ec == ZSTD_error_noForwardProgress_inputEmpty) { *eof = 1; return 0; }
            const char *what = ZSTD_getErrorName(ret);
            if (ec == ZSTD_error_prefix_unknown)
                return fail(r, cllm_error(CLLM_EFORMAT, "%s: not a cllm stream (not zstd data) at byte %llu",
                                          r->name, (unsigned long long)r->in_total));
            if (ec == ZSTD_error_frameParameter_windowTooLarge)
                /* the limit is a power of two of at least 1 KiB (set_max_window) */
                return fail(r, cllm_error(CLLM_ELIMIT, "%s: a zstd frame near byte %llu needs a window above the limit of %zu %s (cllm-cat --max-window raises it)",
                                          r->name, (unsigned long long)r->in_total,
                                          r->max_window >= (1u << 20) ? r->max_window >> 20 : r->max_window >> 10,
                                          r->max_window >= (1u << 20) ? "MiB" : "KiB"));
            if (ec == ZSTD_error_checksum_wrong)
                return fail(r, cllm_error(CLLM_EFORMAT, "%s: corrupted stream: zstd checksum mismatch near byte %llu",
                                          r->name, (unsigned long long)r->in_total));
            return fail(r, cllm_error(CLLM_EFORMAT, "%s: corrupted stream near byte %llu: zstd: %s",
                                      r->name, (unsigned long long)r->in_total, what));
        }
        r->frame_open = (ret != 0);
        if (drained && r->out_len == before) { *eof = 1; return 0; }
    }
    return 0;
}

static int grow_nodes(cllm_value **nodes, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t ncap = need + need / 2 + 64;
    cllm_value *p = cllm_realloc(*nodes, ncap * sizeof *p);
    if (!p) return CLLM_ENOMEM;
    *nodes = p;
    *cap = ncap;
    return 0;
}

/* Checks that need the whole stream's history: header first, end counts. */
static int track_section(cllm_reader *r, const cllm_value *root, const uint8_t *raw, size_t len) {
    unsigned long long idx = (unsigned long long)r->count;
    if (!strcmp(r->type, "header")) {
        const cllm_value *fmt = cllm_mp_get(root, "format");
        int64_t ver;
        if (!cllm_mp_str_eq(fmt, CLLM_STREAM_FORMAT))
            return fail(r, cllm_error(CLLM_EFORMAT, "%s: record %llu: header is not a cllm header (format field)", r->name, idx));
        if (cllm_mp_as_i64(cllm_mp_get(root, "version"), &ver))
            return fail(r, cllm_error(CLLM_ESCHEMA, "%s: record %llu: header lacks an integer version", r->name, idx));
        if (ver > CLLM_STREAM_VERSION || ver < 1)
            return fail(r, cllm_error(CLLM_EUNSUP, "%s: stream version %lld is not supported (this reader: %d)",
                                      r->name, (long long)ver, CLLM_STREAM_VERSION));
        if (r->in_section)
            return fail(r, cllm_error(CLLM_ETRUNC, "%s: truncated: a section ended after %llu records without its end record",
                                      r->name, (unsigned long long)r->since_header));
        /* Keep a private copy of the header: callers may look at it later. */
        size_t used, n;
        uint8_t *copy = cllm_malloc(len);
        if (!copy) return fail(r, CLLM_ENOMEM);
        memcpy(copy, raw, len);
        cllm_mp_scan(copy, len, &used, &n);
        cllm_value *hn = cllm_malloc(n * sizeof *hn);
        if (!hn) { free(copy); return fail(r, CLLM_ENOMEM); }
        cllm_mp_build(copy, hn);
        free(r->header_raw);
        free(r->header_nodes);
        r->header_raw = copy;
        r->header_len = len;
        r->header_nodes = hn;
        r->in_section = 1;
        r->since_header = 0;
        return 0;
    }
    if (!r->in_section) {
        if (r->count == 0)
            return fail(r, cllm_error(CLLM_EFORMAT, "%s: stream does not start with a header record (first record: %s)", r->name, r->type));
        return fail(r, cllm_error(CLLM_EFORMAT, "%s: record %llu (%s) follows an end record without a new header", r->name, idx, r->type));
    }
    if (!strcmp(r->type, "end")) {
        int64_t n;
        if (cllm_mp_as_i64(cllm_mp_get(root, "records"), &n) || n < 0)
            return fail(r, cllm_error(CLLM_ESCHEMA, "%s: record %llu: end record lacks a records count", r->name, idx));
        if ((uint64_t)n != r->since_header)
            return fail(r, cllm_error(CLLM_EFORMAT, "%s: end record says %lld records but the section holds %llu (records lost)",
                                      r->name, (long long)n, (unsigned long long)r->since_header));
        /* A producer stopped by a signal closes its section with the reason;
         * the stream is whole, but holds less than was asked for. */
        const cllm_value *why = cllm_mp_get(root, "interrupted");
        if (why) {
            if (why->type != CLLM_MP_STR || why->n == 0 || why->n >= sizeof r->interrupted)
                return fail(r, cllm_error(CLLM_ESCHEMA, "%s: record %llu: end record's interrupted field is not a short string",
                                          r->name, idx));
            memcpy(r->interrupted, why->v.s, why->n);
            r->interrupted[why->n] = 0;
            r->n_interrupted++;
        }
        r->in_section = 0;
        return 0;
    }
    r->since_header++;
    return 0;
}

int cllm_reader_next(cllm_reader *r, cllm_record *rec) {
    if (r->error) return r->error;
    for (;;) {
        size_t avail = r->out_len - r->out_pos;
        /* Scan on from where the last scan stopped, once new bytes came: each
         * byte is scanned about once, and a record is taken as soon as its
         * last byte is here, even if the producer then pauses. */
        if (avail > r->scanned) {
            size_t used, nvals;
            const uint8_t *p = r->out + r->out_pos;
            if (!r->scanned) cllm_mp_scanner_init(&r->scan);
            r->scanned = avail;
            int rc = cllm_mp_scan_more(&r->scan, p, avail, &used, &nvals);
            if (rc < 0)
                return fail(r, cllm_error_prefix(rc, "%s: record %llu at decompressed byte %llu: ", r->name,
                                                 (unsigned long long)r->count, (unsigned long long)(r->out_total + r->out_pos)));
            if (rc == CLLM_MP_COMPLETE) {
                r->scanned = 0;
                if (used > r->max_record)
                    return fail(r, cllm_error(CLLM_ELIMIT, "%s: record %llu is %zu bytes, larger than the limit of %zu",
                                              r->name, (unsigned long long)r->count, used, r->max_record));
                if (grow_nodes(&r->nodes, &r->nodes_cap, nvals)) return fail(r, CLLM_ENOMEM);
                cllm_mp_build(p, r->nodes);
                const cllm_value *root = r->nodes;
                unsigned long long idx = (unsigned long long)r->count;
                if (root->type != CLLM_MP_MAP)
                    return fail(r, cllm_error(CLLM_ESCHEMA, "%s: record %llu is not a map", r->name, idx));
                const cllm_value *t = cllm_mp_get(root, "type");
                if (!t || t->type != CLLM_MP_STR)
                    return fail(r, cllm_error(CLLM_ESCHEMA, "%s: record %llu has no string field \"type\"", r->name, idx));
                if (t->n == 0 || t->n >= sizeof r->type || memchr(t->v.s, 0, t->n))
                    return fail(r, cllm_error(CLLM_ESCHEMA, "%s: record %llu has an invalid type name", r->name, idx));
                memcpy(r->type, t->v.s, t->n);
                r->type[t->n] = 0;
                int trc = track_section(r, root, p, used);
                if (trc) return trc;
                r->out_pos += used;
                rec->root = root;
                rec->type = r->type;
                rec->raw = p;
                rec->raw_len = used;
                rec->index = r->count++;
                return 0;
            }
            if (r->out_eof) break; /* incomplete, and nothing more will come */
        }
        if (r->out_eof) break;
        int eof;
        int rc = fill_output(r, &eof);
        if (rc) return rc;
        if (eof) r->out_eof = 1;
    }
    /* End of input. */
    if (!r->any_input) return fail(r, cllm_error(CLLM_EFORMAT, "%s: empty input (not a cllm stream)", r->name));
    if (r->frame_open)
        return fail(r, cllm_error(CLLM_ETRUNC, "%s: truncated: input ends inside a zstd frame after %llu records",
                                  r->name, (unsigned long long)r->count));
    if (r->out_len > r->out_pos)
        return fail(r, cllm_error(CLLM_ETRUNC, "%s: truncated: input ends inside record %llu (%zu bytes of it present)",
                                  r->name, (unsigned long long)r->count, r->out_len - r->out_pos));
    if (r->count == 0) return fail(r, cllm_error(CLLM_EFORMAT, "%s: empty stream: no header record", r->name));
    if (r->in_section)
        return fail(r, cllm_error(CLLM_ETRUNC, "%s: truncated: no end record after %llu records",
                                  r->name, (unsigned long long)r->since_header));
    return CLLM_EOF;
}

/* ---------------------------------------------------------------- writer */

struct cllm_writer {
    char *name;        /* output name for messages */
    char *final_path;  /* regular file: rename target */
    char *tmp_path;
    int fd, own_fd;
    ZSTD_CCtx *cctx;
    uint8_t *buf;      /* compressed output buffer */
    size_t buf_cap;
    size_t flush_bytes, pending;
    int in_section;
    char interrupted[32];  /* written into the end record when not "" */
    uint64_t count;
    uint64_t raw_bytes, comp_bytes;
    int error;
};

static int write_all(cllm_writer *w, const uint8_t *p, size_t n) {
    if (cllm_write_full(w->fd, p, n)) {
        w->error = cllm_error(CLLM_EIO, "%s: write error: %s", w->name, strerror(errno));
        return w->error;
    }
    w->comp_bytes += n;
    return 0;
}

/* Feed bytes to the compressor with the given directive, writing what comes out. */
static int compress_feed(cllm_writer *w, const void *src, size_t len, ZSTD_EndDirective mode) {
    if (w->error) return w->error;
    ZSTD_inBuffer ib = { src, len, 0 };
    for (;;) {
        ZSTD_outBuffer ob = { w->buf, w->buf_cap, 0 };
        size_t rem = ZSTD_compressStream2(w->cctx, &ob, &ib, mode);
        if (ZSTD_isError(rem)) {
            w->error = cllm_error(CLLM_EIO, "%s: zstd: %s", w->name, ZSTD_getErrorName(rem));
            return w->error;
        }
        if (ob.pos && write_all(w, w->buf, ob.pos)) return w->error;
        if (mode == ZSTD_e_continue ? ib.pos == ib.size : rem == 0) return 0;
    }
}

int cllm_writer_open_fd(cllm_writer **out, int fd, const char *name, int force_tty) {
    if (!force_tty && isatty(fd))
        return cllm_error(CLLM_EINVAL, "%s: refusing to write a binary stream to a terminal (use -f to force, or redirect)", name);
    cllm_writer *w = cllm_calloc(1, sizeof *w);
    if (!w) return CLLM_ENOMEM;
    w->fd = fd;
    w->name = cllm_strdup(name);
    w->cctx = ZSTD_createCCtx();
    w->buf_cap = ZSTD_CStreamOutSize();
    w->buf = cllm_malloc(w->buf_cap);
    if (!w->name || !w->cctx || !w->buf) {
        ZSTD_freeCCtx(w->cctx);
        free(w->name);
        free(w->buf);
        free(w);
        return cllm_error(CLLM_ENOMEM, "out of memory opening a stream writer");
    }
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, 3);
    *out = w;
    return 0;
}

int cllm_writer_open(cllm_writer **out, const char *path, int force_tty) {
    if (!path || !strcmp(path, "-")) return cllm_writer_open_fd(out, STDOUT_FILENO, "(stdout)", force_tty);
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (exists && !S_ISREG(st.st_mode)) { /* a FIFO or device: write in place */
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
        int rc = cllm_writer_open_fd(out, fd, path, force_tty);
        if (rc) { close(fd); return rc; }
        (*out)->own_fd = 1;
        return 0;
    }
    /* PATH.tmpXXXXXX, renamed over PATH when the stream is whole: created
     * with the mode a plain create under the umask gives (mkstemp's 0600,
     * then a fixed 0644, ignored the umask), and replacing an existing file
     * keeps that file's permissions rather than widening them, as "> FILE"
     * would. */
    size_t n = strlen(path) + 8;
    char *prefix = cllm_malloc(n), *tmp = NULL;
    if (!prefix) return CLLM_ENOMEM;
    snprintf(prefix, n, "%s.tmp", path);
    int fd = -1;
    int bad = cllm_create_unique(prefix, &tmp, &fd);
    free(prefix);
    if (bad) return cllm_error(CLLM_EIO, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
    int rc = 0;
    if (exists && fchmod(fd, st.st_mode & 0777) != 0) {
        rc = cllm_error(CLLM_EIO, "%s: cannot give the temporary file beside it this file's mode: %s", path,
                        strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return rc;
    }
    rc = cllm_writer_open_fd(out, fd, path, 1);
    if (rc) { close(fd); unlink(tmp); free(tmp); return rc; }
    (*out)->own_fd = 1;
    (*out)->tmp_path = tmp;
    (*out)->final_path = cllm_strdup(path);
    if (!(*out)->final_path) { cllm_writer_abort(*out); return CLLM_ENOMEM; }
    return 0;
}

void cllm_writer_set_flush(cllm_writer *w, size_t bytes) { w->flush_bytes = bytes; }

int cllm_writer_set_level(cllm_writer *w, int level) {
    size_t r = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, level);
    if (ZSTD_isError(r)) return cllm_error(CLLM_EINVAL, "zstd level %d: %s", level, ZSTD_getErrorName(r));
    return 0;
}

uint64_t cllm_writer_count(const cllm_writer *w) { return w->count; }

void cllm_writer_bytes(const cllm_writer *w, uint64_t *raw, uint64_t *compressed) {
    if (raw) *raw = w->raw_bytes;
    if (compressed) *compressed = w->comp_bytes;
}

int cllm_writer_flush(cllm_writer *w) {
    if (w->pending == 0) return w->error;
    w->pending = 0;
    return compress_feed(w, NULL, 0, ZSTD_e_flush);
}

static int put_bytes(cllm_writer *w, const void *p, size_t len) {
    int rc = compress_feed(w, p, len, ZSTD_e_continue);
    if (rc) return rc;
    w->raw_bytes += len;
    w->pending += len;
    if (w->pending > w->flush_bytes) return cllm_writer_flush(w);
    return 0;
}

static int put_end(cllm_writer *w) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    size_t why = strlen(w->interrupted);
    msgpack_pack_map(&pk, why ? 3 : 2);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "end", 3);
    msgpack_pack_str_with_body(&pk, "records", 7);
    msgpack_pack_uint64(&pk, w->count);
    if (why) {
        msgpack_pack_str_with_body(&pk, "interrupted", 11);
        msgpack_pack_str_with_body(&pk, w->interrupted, why);
    }
    int rc = sb.data ? put_bytes(w, sb.data, sb.size) : cllm_error(CLLM_ENOMEM, "out of memory packing a record");
    msgpack_sbuffer_destroy(&sb);
    w->in_section = 0;
    return rc;
}

int cllm_writer_put_header(cllm_writer *w, const void *msgpack, size_t len) {
    if (w->in_section) {
        int rc = put_end(w);
        if (rc) return rc;
    }
    w->count = 0;
    w->in_section = 1;
    return put_bytes(w, msgpack, len);
}

int cllm_writer_put(cllm_writer *w, const void *msgpack, size_t len) {
    if (!w->in_section) return cllm_error(CLLM_EINVAL, "%s: record written before the header", w->name);
    int rc = put_bytes(w, msgpack, len);
    if (rc == 0) w->count++;
    return rc;
}

static void writer_free(cllm_writer *w) {
    if (w->own_fd && w->fd >= 0) close(w->fd);
    ZSTD_freeCCtx(w->cctx);
    free(w->buf);
    free(w->name);
    free(w->final_path);
    free(w->tmp_path);
    free(w);
}

int cllm_writer_close(cllm_writer *w) {
    int rc = w->error;
    if (!rc && w->in_section) rc = put_end(w);
    if (!rc) rc = compress_feed(w, NULL, 0, ZSTD_e_end);
    if (!rc && w->tmp_path && cllm_fsync(w->fd) != 0)
        rc = cllm_error(CLLM_EIO, "%s: fsync: %s", w->name, strerror(errno));
    if (w->own_fd) {
        if (close(w->fd) != 0 && !rc) rc = cllm_error(CLLM_EIO, "%s: close: %s", w->name, strerror(errno));
        w->fd = -1;
    }
    if (w->tmp_path) {
        if (!rc && rename(w->tmp_path, w->final_path) != 0)
            rc = cllm_error(CLLM_EIO, "%s: rename: %s", w->name, strerror(errno));
        if (rc) unlink(w->tmp_path);
    }
    writer_free(w);
    return rc;
}

void cllm_writer_set_interrupted(cllm_writer *w, const char *why) {
    snprintf(w->interrupted, sizeof w->interrupted, "%s", why ? why : "");
}

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "signal";
    }
}

void cllm_writer_abort(cllm_writer *w) {
    if (!w) return;
    /* Stopped by a signal: the records written are whole and in order, so
     * close the section with an end record that says why it is short. A
     * file is removed all the same: no partial output under its final name. */
    if (!w->error && cllm_interrupted && w->in_section && !w->tmp_path) {
        if (!w->interrupted[0]) cllm_writer_set_interrupted(w, signal_name((int)cllm_interrupted));
        put_end(w);
    }
    if (!w->error) compress_feed(w, NULL, 0, ZSTD_e_end);
    if (w->tmp_path) unlink(w->tmp_path);
    writer_free(w);
}
