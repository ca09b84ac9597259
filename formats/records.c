/* records.c: packing (through msgpack-c's packer), decoding and validation of
 * the stream's record types (see records.h for the schemas). */
#include "records.h"

#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "err.h"

/* ------------------------------------------------------------- tokens */

int cllm_tokens_push(cllm_tokens *t, int32_t id) {
    if (t->n == t->cap && cllm_grow((void **)&t->ids, &t->cap, t->n + 1, sizeof *t->ids)) return CLLM_ENOMEM;
    t->ids[t->n++] = id;
    return 0;
}

int cllm_tokens_append(cllm_tokens *t, const int32_t *ids, size_t n) {
    if (cllm_grow((void **)&t->ids, &t->cap, t->n + n, sizeof *t->ids)) return CLLM_ENOMEM;
    if (n) memcpy(t->ids + t->n, ids, n * sizeof *ids);
    t->n += n;
    return 0;
}

int cllm_tokens_copy(cllm_tokens *dst, const cllm_tokens *src) {
    dst->n = 0;
    return cllm_tokens_append(dst, src->ids, src->n);
}

void cllm_tokens_free(cllm_tokens *t) {
    free(t->ids);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------- packing */

static int packbuf_write(void *data, const char *buf, size_t len) {
    cllm_packbuf *b = data;
    if (b->error) return -1;
    if (cllm_grow((void **)&b->data, &b->cap, b->size + len, 1)) {
        b->error = CLLM_ENOMEM;
        return -1;
    }
    memcpy(b->data + b->size, buf, len);
    b->size += len;
    return 0;
}

#define PK(b) msgpack_packer pk_; msgpack_packer_init(&pk_, (b), packbuf_write); msgpack_packer *pk = &pk_

void cllm_packbuf_reset(cllm_packbuf *b) { b->size = 0; b->error = 0; }
void cllm_packbuf_free(cllm_packbuf *b) { free(b->data); memset(b, 0, sizeof *b); }

void cllm_pack_map(cllm_packbuf *b, uint32_t n) { PK(b); msgpack_pack_map(pk, n); }
void cllm_pack_array(cllm_packbuf *b, uint32_t n) { PK(b); msgpack_pack_array(pk, n); }
void cllm_pack_str(cllm_packbuf *b, const char *s, size_t len) { PK(b); msgpack_pack_str_with_body(pk, s, len); }
void cllm_pack_cstr(cllm_packbuf *b, const char *s) { cllm_pack_str(b, s, strlen(s)); }
void cllm_pack_int(cllm_packbuf *b, int64_t v) { PK(b); msgpack_pack_int64(pk, v); }
void cllm_pack_uint(cllm_packbuf *b, uint64_t v) { PK(b); msgpack_pack_uint64(pk, v); }
void cllm_pack_double(cllm_packbuf *b, double v) { PK(b); msgpack_pack_double(pk, v); }
void cllm_pack_bool(cllm_packbuf *b, int v) { PK(b); if (v) msgpack_pack_true(pk); else msgpack_pack_false(pk); }
void cllm_pack_nil(cllm_packbuf *b) { PK(b); msgpack_pack_nil(pk); }
void cllm_pack_raw(cllm_packbuf *b, const void *p, size_t n) { packbuf_write(b, p, n); }

void cllm_pack_tokens(cllm_packbuf *b, const int32_t *ids, size_t n) {
    PK(b);
    msgpack_pack_array(pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++) msgpack_pack_uint32(pk, (uint32_t)ids[i]);
}

void cllm_pack_value(cllm_packbuf *b, const cllm_value *v) {
    PK(b);
    switch (v->type) {
    case CLLM_MP_NIL: msgpack_pack_nil(pk); break;
    case CLLM_MP_BOOL: if (v->v.b) msgpack_pack_true(pk); else msgpack_pack_false(pk); break;
    case CLLM_MP_INT: msgpack_pack_int64(pk, v->v.i); break;
    case CLLM_MP_UINT: msgpack_pack_uint64(pk, v->v.u); break;
    case CLLM_MP_FLOAT: msgpack_pack_double(pk, v->v.f); break;
    case CLLM_MP_STR: msgpack_pack_str_with_body(pk, v->v.s, v->n); break;
    case CLLM_MP_BIN: msgpack_pack_bin_with_body(pk, v->v.s, v->n); break;
    case CLLM_MP_EXT: msgpack_pack_ext_with_body(pk, v->v.s, v->n, v->ext_type); break;
    case CLLM_MP_ARRAY:
        msgpack_pack_array(pk, v->n);
        for (uint32_t i = 0; i < v->n; i++) cllm_pack_value(b, &v->v.items[i]);
        break;
    case CLLM_MP_MAP:
        msgpack_pack_map(pk, v->n);
        for (uint32_t i = 0; i < 2 * v->n; i++) cllm_pack_value(b, &v->v.items[i]);
        break;
    }
}

static int pack_done(cllm_packbuf *b) {
    return b->error ? cllm_error(CLLM_ENOMEM, "out of memory packing a record") : 0;
}

static void kv_str(cllm_packbuf *b, const char *k, const char *v) { cllm_pack_cstr(b, k); cllm_pack_cstr(b, v ? v : ""); }
static void kv_int(cllm_packbuf *b, const char *k, int64_t v) { cllm_pack_cstr(b, k); cllm_pack_int(b, v); }
static void kv_tokens(cllm_packbuf *b, const char *k, const cllm_tokens *t) {
    cllm_pack_cstr(b, k);
    cllm_pack_tokens(b, t->ids, t->n);
}

int cllm_rec_header_pack(cllm_packbuf *b, const cllm_header_rec *h) {
    cllm_packbuf_reset(b);
    cllm_pack_map(b, 8);
    kv_str(b, "type", "header");
    kv_str(b, "format", CLLM_STREAM_FORMAT);
    kv_int(b, "version", CLLM_STREAM_VERSION);
    kv_str(b, "producer", h->producer);
    kv_str(b, "model", h->model);
    kv_int(b, "vocab", h->vocab);
    kv_str(b, "tokenizer", h->tokenizer);
    cllm_pack_cstr(b, "command");
    cllm_pack_array(b, (uint32_t)(h->argc > 0 ? h->argc : 0));
    for (int i = 0; i < h->argc; i++) cllm_pack_cstr(b, h->argv[i]);
    return pack_done(b);
}

int cllm_rec_prompt_pack(cllm_packbuf *b, const cllm_prompt_rec *p) {
    cllm_packbuf_reset(b);
    cllm_pack_map(b, 2 + (p->has_tokens ? 1 : 0) + (p->text ? 1 : 0) + (p->answer ? 1 : 0));
    kv_str(b, "type", "prompt");
    kv_int(b, "id", p->id);
    if (p->has_tokens) kv_tokens(b, "tokens", &p->tokens);
    if (p->text) kv_str(b, "text", p->text);
    if (p->answer) kv_str(b, "answer", p->answer);
    return pack_done(b);
}

int cllm_rec_gen_pack(cllm_packbuf *b, const cllm_gen_rec *g) {
    int trace = g->states != NULL || g->accepted.n > 0;
    cllm_packbuf_reset(b);
    cllm_pack_map(b, 10 + (trace ? 2 : 0) + (g->answer ? 1 : 0));
    kv_str(b, "type", "gen");
    kv_int(b, "id", g->id);
    kv_tokens(b, "prompt", &g->prompt);
    kv_tokens(b, "output", &g->output);
    kv_str(b, "text", g->text);
    kv_str(b, "method", g->method);
    kv_int(b, "n", g->n);
    kv_int(b, "steps", g->steps);
    cllm_pack_cstr(b, "time_s");
    cllm_pack_double(b, g->time_s);
    cllm_pack_cstr(b, "eos");
    cllm_pack_bool(b, g->eos);
    if (trace) {
        kv_tokens(b, "accepted", &g->accepted);
        cllm_pack_cstr(b, "states");
        cllm_pack_array(b, (uint32_t)g->n_states);
        for (size_t i = 0; i < g->n_states; i++) cllm_pack_tokens(b, g->states[i].ids, g->states[i].n);
    }
    if (g->answer) kv_str(b, "answer", g->answer);
    return pack_done(b);
}

int cllm_rec_traj_pack(cllm_packbuf *b, const cllm_traj_rec *t) {
    cllm_packbuf_reset(b);
    cllm_pack_map(b, 8 + (t->has_labels ? 1 : 0));
    kv_str(b, "type", "traj");
    kv_int(b, "id", t->id);
    kv_int(b, "chunk", t->chunk);
    kv_tokens(b, "prompt", &t->prompt);
    kv_tokens(b, "prefix", &t->prefix);
    cllm_pack_cstr(b, "states");
    cllm_pack_array(b, (uint32_t)t->n_states);
    for (size_t i = 0; i < t->n_states; i++) cllm_pack_tokens(b, t->states[i].ids, t->states[i].n);
    kv_tokens(b, "fixed", &t->fixed);
    cllm_pack_cstr(b, "eos");
    cllm_pack_bool(b, t->eos);
    if (t->has_labels) kv_tokens(b, "labels", &t->labels);
    return pack_done(b);
}

int cllm_rec_metric_pack(cllm_packbuf *b, const cllm_metric_rec *m) {
    cllm_packbuf_reset(b);
    cllm_pack_map(b, 3 + (m->step >= 0 ? 1 : 0) + (m->unit ? 1 : 0));
    kv_str(b, "type", "metric");
    kv_str(b, "name", m->name);
    cllm_pack_cstr(b, "value");
    cllm_pack_double(b, m->value);
    if (m->step >= 0) kv_int(b, "step", m->step);
    if (m->unit) kv_str(b, "unit", m->unit);
    return pack_done(b);
}

/* ------------------------------------------------------------- decoding */

/* The record being decoded, for messages: set by the *_get functions. */
static _Thread_local const cllm_record *cur;

static int field_error(const char *field, const char *what) {
    if (cur)
        return cllm_error(CLLM_ESCHEMA, "record %llu (%s): field \"%s\" %s", (unsigned long long)cur->index,
                          cur->type, field, what);
    return cllm_error(CLLM_ESCHEMA, "field \"%s\" %s", field, what);
}

static int tokens_from(const cllm_value *v, const char *field, cllm_tokens *out) {
    if (v->type != CLLM_MP_ARRAY) return field_error(field, "is not an array of token ids");
    out->n = 0;
    if (cllm_grow((void **)&out->ids, &out->cap, v->n, sizeof *out->ids)) return CLLM_ENOMEM;
    for (uint32_t i = 0; i < v->n; i++) {
        const cllm_value *e = &v->v.items[i];
        if (e->type != CLLM_MP_UINT || e->v.u > INT32_MAX)
            return field_error(field, "holds a value that is not a token id (non-negative integer below 2^31)");
        out->ids[i] = (int32_t)e->v.u;
    }
    out->n = v->n;
    return 0;
}

int cllm_rec_get_tokens(const cllm_value *map, const char *field, cllm_tokens *out, int required) {
    const cllm_value *v = cllm_mp_get(map, field);
    if (!v) return required ? field_error(field, "is missing") : 1;
    return tokens_from(v, field, out);
}

int cllm_rec_get_i64(const cllm_value *map, const char *field, int64_t *out, int required) {
    const cllm_value *v = cllm_mp_get(map, field);
    if (!v) return required ? field_error(field, "is missing") : 1;
    if (cllm_mp_as_i64(v, out)) return field_error(field, "is not an integer");
    return 0;
}

int cllm_rec_get_double(const cllm_value *map, const char *field, double *out, int required) {
    const cllm_value *v = cllm_mp_get(map, field);
    if (!v) return required ? field_error(field, "is missing") : 1;
    if (cllm_mp_as_double(v, out)) return field_error(field, "is not a number");
    return 0;
}

int cllm_rec_get_bool(const cllm_value *map, const char *field, int *out, int required) {
    const cllm_value *v = cllm_mp_get(map, field);
    if (!v) return required ? field_error(field, "is missing") : 1;
    if (v->type != CLLM_MP_BOOL) return field_error(field, "is not a boolean");
    *out = v->v.b;
    return 0;
}

int cllm_rec_get_str(const cllm_value *map, const char *field, char **out, int required) {
    const cllm_value *v = cllm_mp_get(map, field);
    *out = NULL;
    if (!v) return required ? field_error(field, "is missing") : 1;
    if (v->type != CLLM_MP_STR) return field_error(field, "is not a string");
    *out = cllm_strndup(v->v.s, v->n);
    return *out ? 0 : CLLM_ENOMEM;
}

static int states_from(const cllm_value *map, const char *field, cllm_tokens **states, size_t *n, int required) {
    const cllm_value *v = cllm_mp_get(map, field);
    *states = NULL;
    *n = 0;
    if (!v) return required ? field_error(field, "is missing") : 1;
    if (v->type != CLLM_MP_ARRAY) return field_error(field, "is not an array of token arrays");
    *states = cllm_calloc(v->n ? v->n : 1, sizeof **states);
    if (!*states) return CLLM_ENOMEM;
    *n = v->n;
    for (uint32_t i = 0; i < v->n; i++) {
        int rc = tokens_from(&v->v.items[i], field, &(*states)[i]);
        if (rc) return rc;
    }
    return 0;
}

static int neg(int rc) { return rc < 0 ? rc : 0; } /* "absent" (1) is fine for optional fields */

static int want_type(const cllm_record *r, const char *type) {
    cur = r;
    if (strcmp(r->type, type))
        return cllm_error(CLLM_ESCHEMA, "record %llu is a %s record, expected %s", (unsigned long long)r->index, r->type, type);
    return 0;
}

int cllm_rec_prompt_get(const cllm_record *r, cllm_prompt_rec *p) {
    memset(p, 0, sizeof *p);
    int rc = want_type(r, "prompt");
    const cllm_value *m = r->root;
    if (!rc) rc = cllm_rec_get_i64(m, "id", &p->id, 1);
    if (!rc) { rc = cllm_rec_get_tokens(m, "tokens", &p->tokens, 0); p->has_tokens = (rc == 0); rc = neg(rc); }
    if (!rc) rc = neg(cllm_rec_get_str(m, "text", &p->text, 0));
    if (!rc) rc = neg(cllm_rec_get_str(m, "answer", &p->answer, 0));
    if (!rc && !p->has_tokens && !p->text) rc = field_error("tokens", "and \"text\" are both missing");
    if (rc) cllm_rec_prompt_free(p);
    cur = NULL;
    return rc;
}

void cllm_rec_prompt_free(cllm_prompt_rec *p) {
    cllm_tokens_free(&p->tokens);
    free(p->text);
    free(p->answer);
    memset(p, 0, sizeof *p);
}

int cllm_rec_gen_get(const cllm_record *r, cllm_gen_rec *g) {
    memset(g, 0, sizeof *g);
    int rc = want_type(r, "gen");
    const cllm_value *m = r->root;
    if (!rc) rc = cllm_rec_get_i64(m, "id", &g->id, 1);
    if (!rc) rc = cllm_rec_get_tokens(m, "prompt", &g->prompt, 1);
    if (!rc) rc = cllm_rec_get_tokens(m, "output", &g->output, 1);
    if (!rc) rc = cllm_rec_get_str(m, "text", &g->text, 1);
    if (!rc) rc = cllm_rec_get_str(m, "method", &g->method, 1);
    if (!rc) rc = cllm_rec_get_i64(m, "n", &g->n, 1);
    if (!rc) rc = cllm_rec_get_i64(m, "steps", &g->steps, 1);
    if (!rc) rc = cllm_rec_get_double(m, "time_s", &g->time_s, 1);
    if (!rc) rc = cllm_rec_get_bool(m, "eos", &g->eos, 1);
    if (!rc) rc = neg(cllm_rec_get_tokens(m, "accepted", &g->accepted, 0));
    if (!rc) rc = neg(states_from(m, "states", &g->states, &g->n_states, 0));
    if (!rc) rc = neg(cllm_rec_get_str(m, "answer", &g->answer, 0));
    if (rc) cllm_rec_gen_free(g);
    cur = NULL;
    return rc;
}

void cllm_rec_gen_free(cllm_gen_rec *g) {
    cllm_tokens_free(&g->prompt);
    cllm_tokens_free(&g->output);
    cllm_tokens_free(&g->accepted);
    for (size_t i = 0; i < g->n_states; i++) cllm_tokens_free(&g->states[i]);
    free(g->states);
    free(g->text);
    free(g->method);
    free(g->answer);
    memset(g, 0, sizeof *g);
}

int cllm_rec_traj_get(const cllm_record *r, cllm_traj_rec *t) {
    memset(t, 0, sizeof *t);
    int rc = want_type(r, "traj");
    const cllm_value *m = r->root;
    if (!rc) rc = cllm_rec_get_i64(m, "id", &t->id, 1);
    if (!rc) rc = cllm_rec_get_i64(m, "chunk", &t->chunk, 1);
    if (!rc) rc = cllm_rec_get_tokens(m, "prompt", &t->prompt, 1);
    if (!rc) rc = cllm_rec_get_tokens(m, "prefix", &t->prefix, 1);
    if (!rc) rc = states_from(m, "states", &t->states, &t->n_states, 1);
    if (!rc) rc = cllm_rec_get_tokens(m, "fixed", &t->fixed, 1);
    if (!rc) rc = cllm_rec_get_bool(m, "eos", &t->eos, 1);
    if (!rc) { rc = cllm_rec_get_tokens(m, "labels", &t->labels, 0); t->has_labels = (rc == 0); rc = neg(rc); }
    if (!rc) {
        for (size_t i = 0; i < t->n_states; i++)
            if (t->states[i].n != t->fixed.n) { rc = field_error("states", "holds a window whose length differs from \"fixed\""); break; }
    }
    if (rc) cllm_rec_traj_free(t);
    cur = NULL;
    return rc;
}

void cllm_rec_traj_free(cllm_traj_rec *t) {
    cllm_tokens_free(&t->prompt);
    cllm_tokens_free(&t->prefix);
    cllm_tokens_free(&t->fixed);
    cllm_tokens_free(&t->labels);
    for (size_t i = 0; i < t->n_states; i++) cllm_tokens_free(&t->states[i]);
    free(t->states);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------- validation */

static int check_str(const cllm_value *m, const char *f, int required) {
    const cllm_value *v = cllm_mp_get(m, f);
    if (!v) return required ? field_error(f, "is missing") : 0;
    return v->type == CLLM_MP_STR ? 0 : field_error(f, "is not a string");
}

static int check_num(const cllm_value *m, const char *f, int required) {
    double d;
    return neg(cllm_rec_get_double(m, f, &d, required));
}

static int check_int(const cllm_value *m, const char *f, int required) {
    int64_t i;
    return neg(cllm_rec_get_i64(m, f, &i, required));
}

int cllm_rec_validate(const cllm_record *r) {
    cur = r;
    const cllm_value *m = r->root;
    int rc = 0;
    if (!strcmp(r->type, "header")) {
        rc = check_str(m, "format", 1);
        if (!rc) rc = check_int(m, "version", 1);
        if (!rc) rc = check_str(m, "producer", 1);
        if (!rc) rc = check_str(m, "model", 0);
        if (!rc) rc = check_int(m, "vocab", 0);
        if (!rc) rc = check_str(m, "tokenizer", 0);
    } else if (!strcmp(r->type, "end")) {
        rc = check_int(m, "records", 1);
        if (!rc) rc = check_str(m, "interrupted", 0);
    } else if (!strcmp(r->type, "prompt")) {
        cllm_prompt_rec p;
        rc = cllm_rec_prompt_get(r, &p);
        if (!rc) cllm_rec_prompt_free(&p);
    } else if (!strcmp(r->type, "gen")) {
        cllm_gen_rec g;
        rc = cllm_rec_gen_get(r, &g);
        if (!rc) cllm_rec_gen_free(&g);
    } else if (!strcmp(r->type, "traj")) {
        cllm_traj_rec t;
        rc = cllm_rec_traj_get(r, &t);
        if (!rc) cllm_rec_traj_free(&t);
    } else if (!strcmp(r->type, "metric")) {
        rc = check_str(m, "name", 1);
        if (!rc) rc = check_num(m, "value", 1);
        if (!rc) rc = check_int(m, "step", 0);
        if (!rc) rc = check_str(m, "unit", 0);
    }
    cur = NULL;
    return rc;
}
