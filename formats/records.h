/* records.h: the record types of the stream (cllm-stream(5)): schemas,
 * constructors that pack a record, typed accessors that read one, validation.
 *
 * No binary parses or packs msgpack by hand: it fills a struct and calls
 * cllm_rec_*_pack(), or reads a cllm_record with cllm_rec_*_get(). Decoded
 * structs own their memory (free with the matching *_free). Token arrays are
 * msgpack arrays of non-negative integers below 2^31.
 *
 *   header: format "cllm", version 1, producer, model, vocab, tokenizer, command
 *   end:    records
 *   prompt: id, tokens | text; optional answer, meta (and any other fields)
 *   gen:    id, prompt, output, text, method, n, steps, time_s, eos;
 *           optional accepted, states (with --trace), answer (the prompt's
 *           reference answer, when it had one)
 *   traj:   id, chunk, prompt, prefix, states, fixed, eos; optional labels
 *   metric: name, value; optional step, unit, meta
 */
#ifndef CLLM_RECORDS_H
#define CLLM_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "mpvalue.h"
#include "stream.h"

/* A growable array of token ids. */
typedef struct cllm_tokens {
    int32_t *ids;
    size_t n, cap;
} cllm_tokens;

int cllm_tokens_push(cllm_tokens *t, int32_t id);
int cllm_tokens_append(cllm_tokens *t, const int32_t *ids, size_t n);
int cllm_tokens_copy(cllm_tokens *dst, const cllm_tokens *src);
void cllm_tokens_free(cllm_tokens *t);

/* A packed record under construction (msgpack bytes). */
typedef struct cllm_packbuf {
    char *data;
    size_t size, cap;
    int error;            /* CLLM_ENOMEM once an append failed */
} cllm_packbuf;

void cllm_packbuf_reset(cllm_packbuf *b);
void cllm_packbuf_free(cllm_packbuf *b);

/* Low-level packing, for the few callers that build generic records (cllm-cat
 * --from-jsonl): each appends one msgpack item. */
void cllm_pack_map(cllm_packbuf *b, uint32_t n);
void cllm_pack_array(cllm_packbuf *b, uint32_t n);
void cllm_pack_str(cllm_packbuf *b, const char *s, size_t len);
void cllm_pack_cstr(cllm_packbuf *b, const char *s);
void cllm_pack_int(cllm_packbuf *b, int64_t v);
void cllm_pack_uint(cllm_packbuf *b, uint64_t v);
void cllm_pack_double(cllm_packbuf *b, double v);
void cllm_pack_bool(cllm_packbuf *b, int v);
void cllm_pack_nil(cllm_packbuf *b);
void cllm_pack_tokens(cllm_packbuf *b, const int32_t *ids, size_t n);
/* Append an already packed value (e.g. a field copied from another record). */
void cllm_pack_raw(cllm_packbuf *b, const void *p, size_t n);
/* Re-pack a decoded value (and its children). */
void cllm_pack_value(cllm_packbuf *b, const cllm_value *v);

typedef struct cllm_header_rec {
    const char *producer;      /* "cllm-traj 0.1.0" */
    const char *model;         /* model name ("" when none) */
    int64_t vocab;             /* vocabulary size (0 when none) */
    const char *tokenizer;     /* tokenizer content hash ("" when none) */
    int argc;                  /* the producing command line */
    char *const *argv;
} cllm_header_rec;

typedef struct cllm_prompt_rec {
    int64_t id;
    cllm_tokens tokens;        /* n == 0 when the record carries text */
    int has_tokens;
    char *text;                /* NULL when absent */
    char *answer;              /* NULL when absent */
} cllm_prompt_rec;

typedef struct cllm_gen_rec {
    int64_t id;
    cllm_tokens prompt, output;
    char *text;
    char *method;              /* "ar" | "jacobi" */
    int64_t n;                 /* block size (1 for ar) */
    int64_t steps;             /* forward passes */
    double time_s;
    int eos;
    cllm_tokens accepted;      /* per step (trace only) */
    cllm_tokens *states;       /* per step window (trace only) */
    size_t n_states;
    char *answer;              /* reference answer of the prompt (NULL: absent) */
} cllm_gen_rec;

typedef struct cllm_traj_rec {
    int64_t id;
    int64_t chunk;
    cllm_tokens prompt, prefix;
    cllm_tokens *states;       /* y(0)..y(k-1), each n tokens */
    size_t n_states;
    cllm_tokens fixed;         /* y*, n tokens (fewer when EOS cut the block) */
    int eos;
    cllm_tokens labels;
    int has_labels;
} cllm_traj_rec;

typedef struct cllm_metric_rec {
    const char *name;
    double value;
    int64_t step;              /* -1: absent */
    const char *unit;          /* NULL: absent */
} cllm_metric_rec;

/* Constructors: reset b and pack the record into it. Return 0 or CLLM_ENOMEM. */
int cllm_rec_header_pack(cllm_packbuf *b, const cllm_header_rec *h);
int cllm_rec_prompt_pack(cllm_packbuf *b, const cllm_prompt_rec *p);
int cllm_rec_gen_pack(cllm_packbuf *b, const cllm_gen_rec *g);
int cllm_rec_traj_pack(cllm_packbuf *b, const cllm_traj_rec *t);
int cllm_rec_metric_pack(cllm_packbuf *b, const cllm_metric_rec *m);

/* Accessors: decode a record of the right type into a struct the caller frees.
 * CLLM_ESCHEMA (message names the record and field) when a required field is
 * missing or of the wrong type. */
int cllm_rec_prompt_get(const cllm_record *r, cllm_prompt_rec *p);
int cllm_rec_gen_get(const cllm_record *r, cllm_gen_rec *g);
int cllm_rec_traj_get(const cllm_record *r, cllm_traj_rec *t);
void cllm_rec_prompt_free(cllm_prompt_rec *p);
void cllm_rec_gen_free(cllm_gen_rec *g);
void cllm_rec_traj_free(cllm_traj_rec *t);

/* Field access on any record. */
int cllm_rec_get_tokens(const cllm_value *map, const char *field, cllm_tokens *out, int required);
int cllm_rec_get_i64(const cllm_value *map, const char *field, int64_t *out, int required);
int cllm_rec_get_double(const cllm_value *map, const char *field, double *out, int required);
int cllm_rec_get_bool(const cllm_value *map, const char *field, int *out, int required);
/* Copy of a string field (malloc'd) or NULL when absent and not required. */
int cllm_rec_get_str(const cllm_value *map, const char *field, char **out, int required);

/* Validate a record of a known type against its schema (unknown types pass).
 * 0 or CLLM_ESCHEMA with a message naming the record index and the field. */
int cllm_rec_validate(const cllm_record *r);

#endif
