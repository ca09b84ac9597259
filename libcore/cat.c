/* cat.c: cllm-cat's engine (see cat.h).
 *
 * Every input yields records as msgpack bytes plus their decoded tree: from a
 * stream reader directly, or from JSONL through cllm_json_to_record(). A sink
 * then writes them. In stream output the first header is kept and later ones
 * are checked against it (same tokenizer) and dropped, and every end record is
 * dropped: the writer counts what it wrote and closes with one end record. A
 * failed input leaves the output without an end record, so the loss is
 * visible downstream; an input (or a run of cllm-cat) stopped by a signal
 * makes the output's end record say "interrupted".
 */
#include "cat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "json.h"
#include "records.h"
#include "stream.h"

typedef struct cat_state {
    const cllm_cat_opts *o;
    cllm_writer *w;
    int have_header;
    char *tokenizer;            /* the first tokenizer hash a header named */
    const char *input;          /* name of the input being read, for messages */
    int64_t next_id;            /* default ids of JSONL objects, across all inputs */
    uint64_t kept;              /* data records passed on */
    char **type_names;          /* --count */
    uint64_t *type_counts;
    size_t n_types, cap_types;
    cllm_strbuf line;           /* --jsonl */
    cllm_packbuf pack;
    cllm_value *nodes;
    size_t nodes_cap;
} cat_state;

static int wanted(const cllm_cat_opts *o, const char *type) {
    if (!o->types) return 1;
    for (const char *const *t = o->types; *t; t++)
        if (!strcmp(*t, type)) return 1;
    return 0;
}

static int is_frame_record(const char *type) { return !strcmp(type, "header") || !strcmp(type, "end"); }

static int count_type(cat_state *s, const char *type) {
    for (size_t i = 0; i < s->n_types; i++)
        if (!strcmp(s->type_names[i], type)) { s->type_counts[i]++; return 0; }
    size_t cap = s->cap_types;
    if (cllm_grow((void **)&s->type_names, &s->cap_types, s->n_types + 1, sizeof *s->type_names)) return CLLM_ENOMEM;
    if (cllm_grow((void **)&s->type_counts, &cap, s->n_types + 1, sizeof *s->type_counts)) return CLLM_ENOMEM;
    s->type_names[s->n_types] = cllm_strdup(type);
    if (!s->type_names[s->n_types]) return CLLM_ENOMEM;
    s->type_counts[s->n_types++] = 1;
    return 0;
}

/* Before the reader blocks: pass on what is buffered, so nothing waits
 * downstream while we wait upstream. */
static void flush_output(void *arg) {
    cat_state *s = arg;
    if (s->w) cllm_writer_flush(s->w);
    else if (s->o->mode == CLLM_CAT_JSONL) fflush(stdout);
}

static int open_writer(cat_state *s) {
    if (s->w || s->o->mode != CLLM_CAT_STREAM) return 0;
    int rc = cllm_writer_open(&s->w, s->o->output, s->o->force);
    if (rc) return rc;
    /* Batch the compressor's flushes; the reader's wait hook flushes before
     * any blocking read, so a slow producer's records still pass at once. */
    cllm_writer_set_flush(s->w, 1 << 16);
    return cllm_writer_set_level(s->w, s->o->level);
}

/* Write a header of our own for inputs that have none (JSONL). */
static int own_header(cat_state *s) {
    char producer[64];
    snprintf(producer, sizeof producer, "cllm-cat %s", CLLM_VERSION);
    cllm_header_rec h = { producer, "", 0, "", s->o->argc, s->o->argv };
    cllm_packbuf b = { 0 }; /* not s->pack: it may hold the record in hand */
    int rc = cllm_rec_header_pack(&b, &h);
    if (!rc) rc = cllm_writer_put_header(s->w, b.data, b.size);
    cllm_packbuf_free(&b);
    s->have_header = 1;
    return rc;
}

static int stream_sink(cat_state *s, const cllm_record *r) {
    if (!strcmp(r->type, "end")) return 0;
    if (!strcmp(r->type, "header")) {
        char *tok = NULL;
        int rc = cllm_rec_get_str(r->root, "tokenizer", &tok, 0);
        if (rc < 0) return rc;
        /* The first tokenizer named by any header is the one every later
         * header must name (headers that name none join anything). */
        int same = !tok || !*tok || !s->tokenizer || !strcmp(tok, s->tokenizer);
        if (!same) {
            rc = cllm_error(CLLM_EFORMAT, "%s: cannot join streams made with different tokenizers (%s, then %s)",
                            s->input, s->tokenizer, tok);
            free(tok);
            return rc;
        }
        if (tok && *tok && !s->tokenizer) s->tokenizer = tok;
        else free(tok);
        if (!s->have_header) {
            s->have_header = 1;
            return cllm_writer_put_header(s->w, r->raw, r->raw_len);
        }
        return 0;
    }
    if (!s->have_header) {
        int rc = own_header(s);
        if (rc) return rc;
    }
    return cllm_writer_put(s->w, r->raw, r->raw_len);
}

/* One record from any input. Returns 0, 1 to stop early (--head reached), or an error. */
static int sink(cat_state *s, const cllm_record *r) {
    const cllm_cat_opts *o = s->o;
    if (o->mode == CLLM_CAT_CHECK) return cllm_rec_validate(r);
    int frame = is_frame_record(r->type);
    if (!frame) {
        if (!wanted(o, r->type)) return 0;
        if (o->head >= 0 && s->kept >= (uint64_t)o->head) return 1;   /* --head 0 */
        s->kept++;
    } else if (o->mode != CLLM_CAT_STREAM && !wanted(o, r->type)) {
        return 0; /* a type filter shows only the asked-for types */
    }
    int rc;
    switch (o->mode) {
    case CLLM_CAT_COUNT: rc = count_type(s, r->type); break;
    case CLLM_CAT_JSONL:
        s->line.len = 0;
        cllm_value_to_json(&s->line, r->root);
        cllm_strbuf_addc(&s->line, '\n');
        if (s->line.error) return cllm_error(CLLM_ENOMEM, "out of memory formatting a record");
        if (fwrite(s->line.s, 1, s->line.len, stdout) != s->line.len)
            return cllm_error(CLLM_EIO, "write error: %s", strerror(errno));
        rc = 0;
        break;
    default: rc = stream_sink(s, r); break;
    }
    /* The Nth data record passed on: stop now. Waiting for the next one would
     * block on a producer that is slow or never sends more, would read (and
     * --count or -j show) the end record only when the input has no more
     * data records, and would open the next input: cllm-cat(1) says input
     * after the Nth record is not read. */
    if (!rc && !frame && o->head >= 0 && s->kept >= (uint64_t)o->head) return 1;
    return rc;
}

static int cat_stream(cat_state *s, const char *path) {
    cllm_reader *r;
    int rc = cllm_reader_open(&r, path);
    if (rc) return rc;
    s->input = cllm_reader_name(r);
    cllm_reader_set_max_record(r, s->o->max_record);
    if (s->o->max_window && (rc = cllm_reader_set_max_window(r, s->o->max_window))) {
        cllm_reader_close(r);
        return rc;
    }
    cllm_reader_on_wait(r, flush_output, s);
    cllm_record rec;
    while (!cllm_interrupted && (rc = cllm_reader_next(r, &rec)) == 0) {
        if (s->o->mode == CLLM_CAT_CHECK) {
            rc = cllm_rec_validate(&rec);
            if (rc) { cllm_error_prefix(rc, "%s: ", cllm_reader_name(r)); break; }
            continue;
        }
        rc = sink(s, &rec);
        if (rc) break;
    }
    if (rc == CLLM_EOF) rc = 0;
    uint64_t n_short;
    const char *why = cllm_reader_interrupted(r, &n_short);
    /* An input whose producer was stopped early makes the output short too. */
    if (why && s->w) cllm_writer_set_interrupted(s->w, why);
    if (rc == 0 && s->o->mode == CLLM_CAT_CHECK && !s->o->quiet) {
        if (why)
            fprintf(stderr, "%s: %s: ok, %llu records; %llu section%s interrupted (%s): the producer stopped early\n",
                    cllm_cli_prog(), cllm_reader_name(r), (unsigned long long)cllm_reader_count(r),
                    (unsigned long long)n_short, n_short == 1 ? "" : "s", why);
        else
            fprintf(stderr, "%s: %s: ok, %llu records\n", cllm_cli_prog(), cllm_reader_name(r),
                    (unsigned long long)cllm_reader_count(r));
    }
    cllm_reader_close(r);
    return rc;
}

static int cat_jsonl(cat_state *s, const char *path) {
    cllm_jsonl *j;
    s->input = (!path || !strcmp(path, "-")) ? "(stdin)" : path;
    int rc = cllm_jsonl_open(&j, path);
    if (rc) return rc;
    cllm_jsonl_allow_nul(j);   /* -j writes a string's NUL bytes as \u0000: read them back */
    /* A pipe or terminal may make the next line wait: pass on what is
     * buffered before each read, as the stream reader's wait hook does (stdio
     * cannot tell when its read will block). A regular file never waits, so
     * its output stays batched. */
    struct stat st;
    int is_stdin = !path || !strcmp(path, "-");
    int may_wait = (is_stdin ? fstat(STDIN_FILENO, &st) : stat(path, &st)) || !S_ISREG(st.st_mode);
    json_t *obj;
    uint64_t line;
    uint64_t section = 0; /* data records of this input since its last header or end */
    for (;;) {
        if (cllm_interrupted) break;
        if (may_wait) flush_output(s);
        if ((rc = cllm_jsonl_next(j, &obj, &line))) break;
        rc = cllm_json_to_record(&s->pack, obj, s->next_id++, s->o->field);
        json_decref(obj);
        if (rc) { cllm_error_prefix(rc, "%s:%llu: ", s->input, (unsigned long long)line); break; }
        /* Decode our own bytes back into a tree: sinks see one kind of record. */
        size_t used, nvals;
        rc = cllm_mp_scan((const uint8_t *)s->pack.data, s->pack.size, &used, &nvals);
        if (rc != CLLM_MP_COMPLETE) { rc = cllm_error(CLLM_EFORMAT, "internal: packed record does not scan"); break; }
        if (cllm_grow((void **)&s->nodes, &s->nodes_cap, nvals, sizeof *s->nodes)) { rc = CLLM_ENOMEM; break; }
        cllm_mp_build((const uint8_t *)s->pack.data, s->nodes);
        const cllm_value *t = cllm_mp_get(s->nodes, "type");
        char type[64];
        snprintf(type, sizeof type, "%.*s", (int)(t->n < 63 ? t->n : 63), t->v.s);
        cllm_record rec = { s->nodes, type, (const uint8_t *)s->pack.data, s->pack.size, line - 1 };
        /* Checked in every mode, --check included: an end record that the
         * conversion to a stream refuses must not pass --check. */
        if (!strcmp(type, "end")) {
            int64_t n;
            const cllm_value *why = cllm_mp_get(rec.root, "interrupted");
            if (why) {
                if (why->type != CLLM_MP_STR || why->n == 0 || why->n >= 32) {
                    rc = cllm_error(CLLM_ESCHEMA, "%s:%llu: end record's interrupted field is not a short string",
                                    s->input, (unsigned long long)line);
                    break;
                }
                char reason[32];
                snprintf(reason, sizeof reason, "%.*s", (int)why->n, why->v.s);
                if (s->w) cllm_writer_set_interrupted(s->w, reason);
            }
            /* The count is of the section this end record closes, in this
             * input, whatever --type dropped and whatever came before. */
            if (cllm_rec_get_i64(rec.root, "records", &n, 1) == 0 && (uint64_t)n != section) {
                rc = cllm_error(CLLM_EFORMAT, "%s:%llu: end record says %lld records, %llu precede it",
                                s->input, (unsigned long long)line, (long long)n, (unsigned long long)section);
                break;
            }
        }
        if (is_frame_record(type)) section = 0;
        else section++;
        /* A header made from JSON must be one a reader accepts. */
        if (!strcmp(type, "header")) {
            int64_t ver;
            if (!cllm_mp_str_eq(cllm_mp_get(rec.root, "format"), CLLM_STREAM_FORMAT) ||
                cllm_rec_get_i64(rec.root, "version", &ver, 0) != 0 || ver != CLLM_STREAM_VERSION) {
                rc = cllm_error(CLLM_ESCHEMA, "%s:%llu: a header record needs \"format\": \"%s\" and \"version\": %d",
                                s->input, (unsigned long long)line, CLLM_STREAM_FORMAT, CLLM_STREAM_VERSION);
                break;
            }
        }
        rc = (s->o->mode == CLLM_CAT_CHECK) ? cllm_rec_validate(&rec) : sink(s, &rec);
        if (rc) {
            if (rc < 0 && s->o->mode == CLLM_CAT_CHECK) cllm_error_prefix(rc, "%s:%llu: ", s->input, (unsigned long long)line);
            break;
        }
    }
    if (rc == CLLM_EOF) rc = 0;
    cllm_jsonl_close(j);
    return rc;
}

int cllm_cat_run(const cllm_cat_opts *o, char *const *inputs, int n) {
    cat_state s;
    memset(&s, 0, sizeof s);
    s.o = o;
    int rc = open_writer(&s);
    if (rc) return cllm_cli_fail();
    static char *const stdin_only[] = { "-" };
    if (n == 0) { inputs = stdin_only; n = 1; }
    for (int i = 0; i < n && rc == 0 && !cllm_interrupted; i++)
        rc = o->from_jsonl ? cat_jsonl(&s, inputs[i]) : cat_stream(&s, inputs[i]);
    int status = 0;
    if (cllm_interrupted) status = cllm_cli_interrupted_status();
    else if (rc < 0) status = cllm_cli_fail();
    if (s.w) {
        if (status == 0) {
            if (!s.have_header) rc = own_header(&s); /* an empty JSONL file still makes a whole stream */
            if (rc >= 0) rc = cllm_writer_close(s.w);
            else cllm_writer_abort(s.w);
            if (rc < 0) status = cllm_cli_fail();
        } else {
            cllm_writer_abort(s.w);
        }
    }
    if (o->mode == CLLM_CAT_COUNT && status == 0)
        for (size_t i = 0; i < s.n_types; i++) printf("%s\t%llu\n", s.type_names[i], (unsigned long long)s.type_counts[i]);
    for (size_t i = 0; i < s.n_types; i++) free(s.type_names[i]);
    free(s.type_names);
    free(s.type_counts);
    free(s.tokenizer);
    free(s.nodes);
    cllm_strbuf_free(&s.line);
    cllm_packbuf_free(&s.pack);
    return status;
}
