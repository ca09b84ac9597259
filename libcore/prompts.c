/* prompts.c: the prompt source (see prompts.h). */
#include "prompts.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "err.h"
#include "fileio.h"
#include "json.h"
#include "stream.h"

struct cllm_prompts {
    cllm_prompt_opts o;
    const cllm_tokenizer *tok;
    int kind;                 /* CLLM_IN_STREAM, _JSONL or _LINES */
    char *name;
    cllm_reader *reader;
    cllm_jsonl *jsonl;
    FILE *lines;
    int own_lines;
    char *line;
    size_t line_cap;
    uint64_t index;           /* prompts seen (before sharding) */
    uint64_t lineno;
};

static int is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* The kind of input from its first bytes: the zstd frame magic 28 b5 2f fd or
 * a skippable frame 5? 2a 4d 18 is a stream, '{' after blanks is JSONL (the
 * JSONL reader skips blank lines and indentation), the rest text. */
static int detect(const unsigned char *b, size_t n) {
    if (n >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd) return CLLM_IN_STREAM;
    if (n >= 4 && (b[0] & 0xf0) == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18) return CLLM_IN_STREAM;
    size_t i = 0;
    while (i < n && is_blank(b[i])) i++;
    if (i < n && b[i] == '{') return CLLM_IN_JSONL;
    return CLLM_IN_LINES;
}

int cllm_prompts_open(cllm_prompts **out, const char *path, const cllm_prompt_opts *o,
                      const cllm_tokenizer *tok) {
    int is_stdin = !path || !strcmp(path, "-");
    const char *name = is_stdin ? "(stdin)" : path;
    /* open() of a FIFO with no writer yet is cut short by a signal: the
     * program's interruption. (A signal before this call is the caller's to
     * act on: cllm-gen stops, cllm-train finishes its step.) */
    int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == EINTR && cllm_interrupted) return cllm_error(CLLM_EINTR, "%s: interrupted", name);
    if (fd < 0) return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno));
    cllm_prompts *s = cllm_calloc(1, sizeof *s);
    if (!s) { if (!is_stdin) close(fd); return CLLM_ENOMEM; }
    s->o = *o;
    s->tok = tok;
    s->name = cllm_strdup(name);
    if (!s->name) { free(s); if (!is_stdin) close(fd); return CLLM_ENOMEM; }
    /* Read the first bytes to tell the kind, then hand them back to the reader. */
    /* Blanks before the first '{' are read on through (up to 4 KiB of them). */
    unsigned char head[4096];
    size_t got, more = 1, blanks = 0;
    int bad = cllm_read_full(fd, head, 4, &got) && errno;   /* errno 0: fewer bytes in all */
    /* A UTF-8 byte order mark (as some editors write) is no part of the text,
     * and would hide a JSONL file's first brace. */
    if (!bad && got >= 3 && head[0] == 0xef && head[1] == 0xbb && head[2] == 0xbf) {
        head[0] = head[3];
        got -= 3;
        size_t more4 = 0;
        bad = cllm_read_full(fd, head + got, 4 - got, &more4) && errno;
        got += more4;
    }
    while (blanks < got && is_blank(head[blanks])) blanks++;
    while (!bad && o->input == CLLM_IN_AUTO && more && blanks == got && got >= 4 && got < sizeof head) {
        bad = cllm_read_full(fd, head + got, 1, &more) && errno;
        got += more;
        if (more && is_blank(head[got - 1])) blanks++;
    }
    if (bad) {
        /* a SIGINT/SIGTERM while the first bytes are awaited on a pipe */
        int rc = errno == EINTR ? cllm_error(CLLM_EINTR, "%s: interrupted", name)
                                : cllm_error(CLLM_EIO, "%s: read error: %s", name, strerror(errno));
        if (!is_stdin) close(fd);
        cllm_prompts_close(s);
        return rc;
    }
    s->kind = o->input != CLLM_IN_AUTO ? o->input : detect(head, got);
    int rc = 0;
    if (s->kind == CLLM_IN_STREAM) {
        rc = cllm_reader_open_fd_prefixed(&s->reader, fd, name, head, got);
        if (rc && !is_stdin) close(fd);
        /* The reader does not own fd: close it ourselves at the end. */
        if (!rc && !is_stdin) s->own_lines = fd + 1;
    } else {
        FILE *f = is_stdin ? stdin : fdopen(fd, "rb");
        if (!f) { rc = cllm_error(CLLM_EIO, "%s: %s", name, strerror(errno)); if (!is_stdin) close(fd); }
        /* glibc keeps any number of pushed-back bytes; the last pushed is read first. */
        for (size_t i = got; f && !rc && i > 0; i--)
            if (ungetc(head[i - 1], f) == EOF) rc = cllm_error(CLLM_EIO, "%s: cannot push back a byte", name);
        if (!rc && s->kind == CLLM_IN_JSONL) rc = cllm_jsonl_open_file(&s->jsonl, f, name, !is_stdin);
        else if (!rc) { s->lines = f; s->own_lines = !is_stdin; }
        /* On failure f (and so fd) belongs to no one yet. */
        if (rc && f && !is_stdin) fclose(f);
    }
    if (rc) { cllm_prompts_close(s); return rc; }
    *out = s;
    return 0;
}

void cllm_prompts_close(cllm_prompts *s) {
    if (!s) return;
    if (s->reader) {
        cllm_reader_close(s->reader);
        if (s->own_lines) close(s->own_lines - 1);
    }
    cllm_jsonl_close(s->jsonl);
    if (s->lines && s->own_lines) fclose(s->lines);
    free(s->line);
    free(s->name);
    free(s);
}

const cllm_value *cllm_prompts_header(const cllm_prompts *s) {
    return s->reader ? cllm_reader_header(s->reader) : NULL;
}

void cllm_prompt_free(cllm_prompt *p) {
    cllm_tokens_free(&p->tokens);
    free(p->text);
    free(p->answer);
    memset(p, 0, sizeof *p);
}

/* String fields of an object, for {field} placeholders. At most 64 fields. */
typedef struct fields {
    const char *k[64];
    const char *v[64];
    size_t n;
    char *owned[64];          /* copies made from msgpack strings */
    size_t n_owned;
} fields;

static void fields_free(fields *f) {
    for (size_t i = 0; i < f->n_owned; i++) free(f->owned[i]);
    memset(f, 0, sizeof *f);
}

static int fields_add(fields *f, const char *k, size_t klen, const char *v, size_t vlen) {
    /* The text goes on as a C string: a NUL byte would cut it short unseen. */
    if (memchr(v, 0, vlen)) return cllm_error(CLLM_ESCHEMA, "field \"%.*s\" holds a NUL byte", (int)klen, k);
    if (f->n == 64 || f->n_owned + 2 > 64) return 0; /* placeholders beyond 64 fields are not filled */
    char *kc = cllm_strndup(k, klen), *vc = cllm_strndup(v, vlen);
    if (!kc || !vc) { free(kc); free(vc); return CLLM_ENOMEM; }
    f->owned[f->n_owned++] = kc;
    f->owned[f->n_owned++] = vc;
    f->k[f->n] = kc;
    f->v[f->n++] = vc;
    return 0;
}

static const char *fields_get(const fields *f, const char *k) {
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->k[i], k)) return f->v[i];
    return NULL;
}

/* Render text (the field's value) through the template and chat, then tokenize. */
static int render(cllm_prompts *s, const fields *f, const char *text, cllm_prompt *p) {
    char *t = NULL;
    int rc;
    if (s->o.template) {
        /* Named templates (no '{' in them) read the field "question": give
         * them the chosen text under that name, in place of the object's own
         * question when --field chose another field. Template strings name
         * their fields themselves. */
        fields g = *f;
        g.n_owned = 0;
        int named = !strchr(s->o.template, '{');
        size_t q = 0;
        while (q < g.n && strcmp(g.k[q], "question")) q++;
        if (text && q < g.n && named && s->o.field) g.v[q] = text;
        else if (text && q == g.n && g.n < 64) { g.k[g.n] = "question"; g.v[g.n++] = text; }
        rc = cllm_template_apply(s->tok, s->o.template, g.k, g.v, g.n, &t);
        if (rc) return rc;
    } else {
        if (!text) return cllm_error(CLLM_ESCHEMA, "no prompt text");
        t = cllm_strdup(text);
        if (!t) return CLLM_ENOMEM;
    }
    if (s->o.chat) {
        char *c = NULL;
        rc = cllm_chat_apply(s->tok, t, &c);
        free(t);
        if (rc) return rc;
        t = c;
    }
    if (!s->tok) { free(t); return cllm_error(CLLM_EINVAL, "a text prompt needs a model with a tokenizer"); }
    int32_t *ids = NULL;
    size_t n = 0;
    /* Special tokens are parsed: the chat template's markers must become
     * their control tokens. */
    rc = cllm_tokenizer_encode(s->tok, t, strlen(t), 1, &ids, &n);
    if (rc) { free(t); return rc; }
    /* A model that starts every text with BOS (Llama 3) gets it as HF's
     * encode and llama.cpp give it, once: a text that already begins with the
     * BOS token's text (a template that writes it) keeps just that one. */
    int32_t bos = cllm_tokenizer_bos(s->tok);
    if (cllm_tokenizer_add_bos(s->tok) && (n == 0 || ids[0] != bos)) {
        int32_t *w = cllm_realloc(ids, (n + 1) * sizeof *ids);
        if (!w) { free(ids); free(t); return CLLM_ENOMEM; }
        memmove(w + 1, w, n * sizeof *w);
        w[0] = bos;
        ids = w;
        n++;
    }
    p->tokens.ids = ids;
    p->tokens.n = p->tokens.cap = n;
    p->text = t;
    if (n == 0) return cllm_error(CLLM_ESCHEMA, "the prompt is empty after tokenization");
    return 0;
}

static const char *default_fields[] = { "text", "prompt", "question" };

static int next_stream(cllm_prompts *s, cllm_prompt *p) {
    cllm_record rec;
    int rc;
    for (;;) {
        rc = cllm_reader_next(s->reader, &rec);
        if (rc == CLLM_EOF) cllm_reader_warn_interrupted(s->reader);
        if (rc) return rc;
        if (strcmp(rec.type, "prompt")) continue; /* other record types pass by */
        uint64_t idx = s->index++;
        if (s->o.shard_n && idx % s->o.shard_n != s->o.shard_i) continue;
        p->index = idx;
        rc = cllm_rec_get_i64(rec.root, "id", &p->id, 1);
        if (rc) return rc;
        if (p->id < 0) return cllm_error(CLLM_ESCHEMA, "%s: record %llu: negative id", s->name, (unsigned long long)rec.index);
        const char *af = s->o.answer_field ? s->o.answer_field : "answer";
        rc = cllm_rec_get_str(rec.root, af, &p->answer, 0);
        if (rc < 0) return rc;
        if (rc == 0 && strlen(p->answer) != cllm_mp_get(rec.root, af)->n)
            return cllm_error(CLLM_ESCHEMA, "%s: record %llu: field \"%s\" holds a NUL byte", s->name,
                              (unsigned long long)rec.index, af);
        /* tokens are used as they are, unless --field names the text to use */
        rc = s->o.field ? 1 : cllm_rec_get_tokens(rec.root, "tokens", &p->tokens, 0);
        if (rc < 0) return rc;
        if (rc == 0) {
            if (p->tokens.n == 0) return cllm_error(CLLM_ESCHEMA, "%s: record %llu: empty tokens", s->name, (unsigned long long)rec.index);
            return 0;
        }
        fields f = { 0 };
        const cllm_value *m = rec.root;
        for (uint32_t i = 0; i < m->n && rc >= 0; i++) {
            const cllm_value *k = &m->v.items[2 * i], *v = &m->v.items[2 * i + 1];
            if (k->type == CLLM_MP_STR && v->type == CLLM_MP_STR) rc = fields_add(&f, k->v.s, k->n, v->v.s, v->n);
        }
        const char *text = NULL;
        if (s->o.field) text = fields_get(&f, s->o.field);
        for (size_t i = 0; !s->o.field && !text && i < 3; i++) text = fields_get(&f, default_fields[i]);
        if (rc >= 0) rc = render(s, &f, text, p);
        fields_free(&f);
        if (rc) return cllm_error_prefix(rc, "%s: record %llu: ", s->name, (unsigned long long)rec.index);
        return 0;
    }
}

static int next_jsonl(cllm_prompts *s, cllm_prompt *p) {
    json_t *obj;
    uint64_t line;
    int rc;
    for (;;) {
        rc = cllm_jsonl_next(s->jsonl, &obj, &line);
        if (rc) return rc;
        uint64_t idx = s->index++;
        if (s->o.shard_n && idx % s->o.shard_n != s->o.shard_i) { json_decref(obj); continue; }
        break;
    }
    p->index = s->index - 1;
    json_t *id = json_object_get(obj, "id");
    p->id = (id && json_is_integer(id) && json_integer_value(id) >= 0) ? json_integer_value(id) : (int64_t)p->index;
    json_t *ans = json_object_get(obj, s->o.answer_field ? s->o.answer_field : "answer");
    if (ans && json_is_string(ans)) p->answer = cllm_strdup(json_string_value(ans));
    json_t *toks = json_object_get(obj, "tokens");
    if (toks && json_is_array(toks) && !s->o.field) {
        for (size_t i = 0; i < json_array_size(toks) && rc == 0; i++) {
            json_t *e = json_array_get(toks, i);
            if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX)
                rc = cllm_error(CLLM_ESCHEMA, "\"tokens\" holds a value that is not a token id");
            else rc = cllm_tokens_push(&p->tokens, (int32_t)json_integer_value(e));
        }
        if (!rc && p->tokens.n == 0) rc = cllm_error(CLLM_ESCHEMA, "empty tokens");   /* as in a stream's prompt */
    } else {
        fields f = { 0 };
        const char *k;
        json_t *v;
        json_object_foreach(obj, k, v) {
            if (json_is_string(v) && rc >= 0) rc = fields_add(&f, k, strlen(k), json_string_value(v), json_string_length(v));
        }
        const char *text = NULL;
        if (s->o.field) {
            text = fields_get(&f, s->o.field);
            if (!text && rc >= 0 && !s->o.template) rc = cllm_error(CLLM_ESCHEMA, "no string field \"%s\"", s->o.field);
        }
        for (size_t i = 0; !s->o.field && !text && i < 3; i++) text = fields_get(&f, default_fields[i]);
        if (rc >= 0) rc = render(s, &f, text, p);
        fields_free(&f);
    }
    json_decref(obj);
    if (rc) return cllm_error_prefix(rc, "%s:%llu: ", s->name, (unsigned long long)line);
    return 0;
}

static int next_line(cllm_prompts *s, cllm_prompt *p) {
    for (;;) {
        errno = 0;
        ssize_t n = getline(&s->line, &s->line_cap, s->lines);
        if (n < 0) {
            /* SIGINT/SIGTERM stop a read blocked on a pipe (no SA_RESTART):
             * the program's interruption, not a read error (exit 130/143) */
            if (ferror(s->lines) && errno == EINTR) return cllm_error(CLLM_EINTR, "%s: interrupted", s->name);
            if (ferror(s->lines)) return cllm_error(CLLM_EIO, "%s: read error: %s", s->name, strerror(errno));
            return CLLM_EOF;
        }
        s->lineno++;
        size_t len = (size_t)n;
        while (len && (s->line[len - 1] == '\n' || s->line[len - 1] == '\r')) len--;
        s->line[len] = 0;
        size_t first = 0;
        while (first < len && is_blank((unsigned char)s->line[first])) first++;
        if (first == len) continue; /* blank lines (empty or only blanks) are not prompts */
        if (memchr(s->line, 0, len))
            return cllm_error(CLLM_ESCHEMA, "%s:%llu: the line holds a NUL byte", s->name, (unsigned long long)s->lineno);
        uint64_t idx = s->index++;
        if (s->o.shard_n && idx % s->o.shard_n != s->o.shard_i) continue;
        p->index = idx;
        p->id = (int64_t)idx;
        fields f = { 0 };
        int rc = fields_add(&f, "text", 4, s->line, len);
        if (!rc) rc = render(s, &f, s->line, p);
        fields_free(&f);
        if (rc) return cllm_error_prefix(rc, "%s:%llu: ", s->name, (unsigned long long)s->lineno);
        return 0;
    }
}

int cllm_prompts_next(cllm_prompts *s, cllm_prompt *p) {
    cllm_prompt_free(p);
    switch (s->kind) {
    case CLLM_IN_STREAM: return next_stream(s, p);
    case CLLM_IN_JSONL: return next_jsonl(s, p);
    default: return next_line(s, p);
    }
}

int cllm_prompt_opt(cllm_prompt_opts *o, int c, const char *arg) {
    long long i, n;
    switch (c) {
    case CLLM_OPT_FIELD: o->field = arg; return 0;
    case CLLM_OPT_ANSWER_FIELD: o->answer_field = arg; return 0;
    case CLLM_OPT_TEMPLATE:
        if (cllm_template_check(arg)) return cllm_cli_usage_error("--template: %s", cllm_errmsg());
        o->template = arg;
        return 0;
    case CLLM_OPT_CHAT: o->chat = 1; return 0;
    case CLLM_OPT_LINES: o->input = CLLM_IN_LINES; return 0;
    case CLLM_OPT_SHARD:
        if (cllm_cli_shard("--shard", arg, &i, &n)) return CLLM_EXIT_USAGE;
        o->shard_i = (uint64_t)i;
        o->shard_n = (uint64_t)n;
        return 0;
    default: return cllm_cli_usage_error(NULL); /* getopt has said what was wrong */
    }
}
