/* json.c: JSON <-> msgpack conversion and the JSONL reader (see json.h). */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

void cllm_strbuf_add(cllm_strbuf *b, const char *s, size_t n) {
    if (b->error) return;
    if (cllm_grow((void **)&b->s, &b->cap, b->len + n + 1, 1)) { b->error = CLLM_ENOMEM; return; }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

void cllm_strbuf_addc(cllm_strbuf *b, char c) { cllm_strbuf_add(b, &c, 1); }

void cllm_strbuf_addf(cllm_strbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) { cllm_strbuf_add(b, tmp, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { b->error = CLLM_ENOMEM; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    cllm_strbuf_add(b, big, (size_t)n);
    free(big);
}

void cllm_strbuf_free(cllm_strbuf *b) { free(b->s); memset(b, 0, sizeof *b); }

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void cllm_json_quote(cllm_strbuf *out, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    cllm_strbuf_addc(out, '"');
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') { cllm_strbuf_addc(out, '\\'); cllm_strbuf_addc(out, (char)c); i++; continue; }
        if (c < 0x20) {
            switch (c) {
            case '\n': cllm_strbuf_add(out, "\\n", 2); break;
            case '\t': cllm_strbuf_add(out, "\\t", 2); break;
            case '\r': cllm_strbuf_add(out, "\\r", 2); break;
            case '\b': cllm_strbuf_add(out, "\\b", 2); break;
            case '\f': cllm_strbuf_add(out, "\\f", 2); break;
            default: cllm_strbuf_addf(out, "\\u%04x", c);
            }
            i++;
            continue;
        }
        size_t l = utf8_len(s + i, n - i);
        if (l == 0) { cllm_strbuf_add(out, "\\ufffd", 6); i++; continue; }
        cllm_strbuf_add(out, (const char *)s + i, l);
        i += l;
    }
    cllm_strbuf_addc(out, '"');
}

static void add_double(cllm_strbuf *out, double d) {
    if (!isfinite(d)) { cllm_strbuf_add(out, "null", 4); return; }
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d) break;
    }
    cllm_strbuf_add(out, tmp, strlen(tmp));
    if (!strpbrk(tmp, ".eE")) cllm_strbuf_add(out, ".0", 2);
}

static void add_hex(cllm_strbuf *out, const char *p, size_t n) {
    static const char hex[] = "0123456789abcdef";
    cllm_strbuf_addc(out, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char two[2] = { hex[c >> 4], hex[c & 15] };
        cllm_strbuf_add(out, two, 2);
    }
    cllm_strbuf_addc(out, '"');
}

void cllm_value_to_json(cllm_strbuf *out, const cllm_value *v) {
    switch (v->type) {
    case CLLM_MP_NIL: cllm_strbuf_add(out, "null", 4); break;
    case CLLM_MP_BOOL: if (v->v.b) cllm_strbuf_add(out, "true", 4); else cllm_strbuf_add(out, "false", 5); break;
    case CLLM_MP_INT: cllm_strbuf_addf(out, "%lld", (long long)v->v.i); break;
    case CLLM_MP_UINT: cllm_strbuf_addf(out, "%llu", (unsigned long long)v->v.u); break;
    case CLLM_MP_FLOAT: add_double(out, v->v.f); break;
    case CLLM_MP_STR: cllm_json_quote(out, v->v.s, v->n); break;
    case CLLM_MP_BIN:
        cllm_strbuf_add(out, "{\"$bin\":", 8);
        add_hex(out, v->v.s, v->n);
        cllm_strbuf_addc(out, '}');
        break;
    case CLLM_MP_EXT:
        cllm_strbuf_addf(out, "{\"$ext\":%d,\"data\":", v->ext_type);
        add_hex(out, v->v.s, v->n);
        cllm_strbuf_addc(out, '}');
        break;
    case CLLM_MP_ARRAY:
        cllm_strbuf_addc(out, '[');
        for (uint32_t i = 0; i < v->n; i++) {
            if (i) cllm_strbuf_addc(out, ',');
            cllm_value_to_json(out, &v->v.items[i]);
        }
        cllm_strbuf_addc(out, ']');
        break;
    case CLLM_MP_MAP:
        cllm_strbuf_addc(out, '{');
        for (uint32_t i = 0; i < v->n; i++) {
            const cllm_value *k = &v->v.items[2 * i];
            if (i) cllm_strbuf_addc(out, ',');
            if (k->type == CLLM_MP_STR) cllm_json_quote(out, k->v.s, k->n);
            else if (k->type <= CLLM_MP_FLOAT) { /* a scalar key: its JSON text, quoted */
                cllm_strbuf kb = { 0 };
                cllm_value_to_json(&kb, k);
                cllm_json_quote(out, kb.s ? kb.s : "", kb.len);
                cllm_strbuf_free(&kb);
            } else {
                /* A container or binary key has no JSON form; rendering it as
                 * quoted text would re-escape every nesting level (output
                 * growing 4x per level), so it gets a fixed placeholder. */
                static const char *const names[] = { [CLLM_MP_BIN] = "\"$bin-key\"", [CLLM_MP_ARRAY] = "\"$array-key\"",
                                                     [CLLM_MP_MAP] = "\"$map-key\"", [CLLM_MP_EXT] = "\"$ext-key\"" };
                cllm_strbuf_add(out, names[k->type], strlen(names[k->type]));
            }
            cllm_strbuf_addc(out, ':');
            cllm_value_to_json(out, &v->v.items[2 * i + 1]);
        }
        cllm_strbuf_addc(out, '}');
        break;
    }
}

/* depth: containers around v. A record is a map at depth 0; a stream reader
 * refuses nesting deeper than CLLM_MP_MAX_DEPTH, so refuse it here first,
 * as bad data. */
static int json_pack_at(cllm_packbuf *b, const json_t *v, int depth) {
    size_t n_children = json_is_object(v) ? json_object_size(v) : json_is_array(v) ? json_array_size(v) : 0;
    if (n_children > 0 && depth >= CLLM_MP_MAX_DEPTH)
        return cllm_error(CLLM_ELIMIT, "nesting deeper than %d levels (the stream's limit)", CLLM_MP_MAX_DEPTH);
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        cllm_pack_map(b, (uint32_t)json_object_size(v));
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            cllm_pack_cstr(b, k);
            int rc = json_pack_at(b, x, depth + 1);
            if (rc) return rc;
        }
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        cllm_pack_array(b, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            int rc = json_pack_at(b, json_array_get(v, i), depth + 1);
            if (rc) return rc;
        }
        break;
    }
    case JSON_STRING: cllm_pack_str(b, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: cllm_pack_int(b, json_integer_value(v)); break;
    case JSON_REAL: cllm_pack_double(b, json_real_value(v)); break;
    case JSON_TRUE: cllm_pack_bool(b, 1); break;
    case JSON_FALSE: cllm_pack_bool(b, 0); break;
    case JSON_NULL: cllm_pack_nil(b); break;
    }
    return b->error ? cllm_error(CLLM_ENOMEM, "out of memory packing a record") : 0;
}

int cllm_json_pack(cllm_packbuf *b, const json_t *v) { return json_pack_at(b, v, 0); }

struct cllm_jsonl {
    FILE *f;
    int own;
    char *name;
    char *line;
    size_t cap;
    uint64_t lineno;
    int allow_nul;            /* \u0000 in string values (not in keys: jansson refuses those) */
};

int cllm_jsonl_open(cllm_jsonl **out, const char *path) {
    cllm_jsonl *j = cllm_calloc(1, sizeof *j);
    if (!j) return CLLM_ENOMEM;
    if (!path || !strcmp(path, "-")) {
        j->f = stdin;
        j->name = cllm_strdup("(stdin)");
    } else {
        j->f = fopen(path, "rb");
        if (!j->f) { free(j); return cllm_error(CLLM_EIO, "%s: %s", path, strerror(errno)); }
        j->own = 1;
        j->name = cllm_strdup(path);
    }
    if (!j->name) { cllm_jsonl_close(j); return CLLM_ENOMEM; }
    *out = j;
    return 0;
}

int cllm_jsonl_open_file(cllm_jsonl **out, FILE *f, const char *name, int own) {
    cllm_jsonl *j = cllm_calloc(1, sizeof *j);
    if (!j) return CLLM_ENOMEM;
    j->f = f;
    j->own = own;
    j->name = cllm_strdup(name);
    if (!j->name) { free(j); return CLLM_ENOMEM; }
    *out = j;
    return 0;
}

int cllm_jsonl_next(cllm_jsonl *j, json_t **obj, uint64_t *line) {
    for (;;) {
        errno = 0;
        ssize_t n = getline(&j->line, &j->cap, j->f);
        if (n < 0) {
            /* a signal's EINTR (no SA_RESTART) is the program's interruption */
            if (ferror(j->f) && errno == EINTR) return cllm_error(CLLM_EINTR, "%s: interrupted", j->name);
            if (ferror(j->f)) return cllm_error(CLLM_EIO, "%s: read error: %s", j->name, strerror(errno));
            return CLLM_EOF;
        }
        j->lineno++;
        size_t len = (size_t)n;
        while (len && (j->line[len - 1] == '\n' || j->line[len - 1] == '\r' || j->line[len - 1] == ' ' || j->line[len - 1] == '\t')) len--;
        size_t start = 0;
        /* A UTF-8 byte order mark before the first line is not JSON text. */
        if (j->lineno == 1 && len >= 3 && !memcmp(j->line, "\xef\xbb\xbf", 3)) start = 3;
        while (start < len && (j->line[start] == ' ' || j->line[start] == '\t')) start++;
        if (start == len) continue;
        json_error_t err;
        json_t *v = json_loadb(j->line + start, len - start, JSON_DECODE_ANY | (j->allow_nul ? JSON_ALLOW_NUL : 0), &err);
        if (!v) return cllm_error(CLLM_EFORMAT, "%s:%llu: invalid JSON: %s", j->name, (unsigned long long)j->lineno, err.text);
        if (!json_is_object(v)) {
            json_decref(v);
            return cllm_error(CLLM_EFORMAT, "%s:%llu: not a JSON object", j->name, (unsigned long long)j->lineno);
        }
        *obj = v;
        *line = j->lineno;
        return 0;
    }
}

void cllm_jsonl_allow_nul(cllm_jsonl *j) { j->allow_nul = 1; }

void cllm_jsonl_close(cllm_jsonl *j) {
    if (!j) return;
    if (j->own && j->f) fclose(j->f);
    free(j->line);
    free(j->name);
    free(j);
}

int cllm_json_to_record(cllm_packbuf *b, const json_t *obj, int64_t default_id, const char *text_field) {
    cllm_packbuf_reset(b);
    json_t *type = json_object_get(obj, "type");
    if (type) {
        /* cllm-stream(5): 1 to 63 bytes without a NUL, else no reader takes the stream */
        if (!json_is_string(type) || json_string_length(type) == 0 || json_string_length(type) > 63 ||
            memchr(json_string_value(type), 0, json_string_length(type)))
            return cllm_error(CLLM_ESCHEMA, "field \"type\" is not a string of 1 to 63 bytes without a NUL byte");
        return cllm_json_pack(b, obj);
    }
    json_t *id = json_object_get(obj, "id");
    int add_id = !(id && json_is_integer(id) && json_integer_value(id) >= 0);
    const json_t *text = NULL;
    if (!json_object_get(obj, "text") && !json_object_get(obj, "tokens")) {
        if (text_field) {
            text = json_object_get(obj, text_field);
            if (!text) return cllm_error(CLLM_ESCHEMA, "object has no field \"%s\"", text_field);
        } else {
            static const char *const fallbacks[] = { "prompt", "question" };
            for (size_t i = 0; i < 2 && !text; i++) text = json_object_get(obj, fallbacks[i]);
            if (!text) return cllm_error(CLLM_ESCHEMA, "object has no \"text\", \"tokens\", \"prompt\" or \"question\" field (choose one with --field)");
        }
        if (!json_is_string(text)) return cllm_error(CLLM_ESCHEMA, "the prompt field is not a string");
    }
    /* An existing non-integer id moves aside so the record's id is an integer. */
    size_t n = json_object_size(obj) + 1 + (add_id ? 1 : 0) + (text ? 1 : 0);
    cllm_pack_map(b, (uint32_t)n);
    cllm_pack_cstr(b, "type");
    cllm_pack_cstr(b, "prompt");
    if (add_id) {
        cllm_pack_cstr(b, "id");
        cllm_pack_int(b, default_id);
    }
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)obj, k, x) {
        if (add_id && !strcmp(k, "id")) cllm_pack_cstr(b, "source_id");
        else cllm_pack_cstr(b, k);
        int rc = cllm_json_pack(b, x);
        if (rc) return rc;
    }
    if (text) {
        cllm_pack_cstr(b, "text");
        cllm_pack_str(b, json_string_value(text), json_string_length(text));
    }
    return b->error ? cllm_error(CLLM_ENOMEM, "out of memory packing a record") : 0;
}
