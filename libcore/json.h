/* json.h: JSON <-> record conversion and the JSONL reader.
 *
 * JSON -> msgpack keeps types: integers stay integers (arrays of integers stay
 * arrays of integers, so token ids survive), reals become float64, strings,
 * booleans, null, arrays and objects map one to one, object key order kept.
 * msgpack -> JSON writes floats in the shortest form that reads back to the
 * same double (always with a '.' or exponent so they stay floats), NaN and
 * infinities as null (JSON has none), bytes that are not valid UTF-8 as
 * U+FFFD, and bin/ext values as {"$bin": "<hex>"} / {"$ext": T, "data": "<hex>"}.
 * Map keys that are not strings: scalars as their JSON text in quotes, arrays,
 * maps, bin and ext as the placeholders "$array-key", "$map-key", ...
 */
#ifndef CLLM_JSON_H
#define CLLM_JSON_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "mpvalue.h"
#include "records.h"

/* A growable text buffer. */
typedef struct cllm_strbuf {
    char *s;
    size_t len, cap;
    int error;
} cllm_strbuf;

void cllm_strbuf_add(cllm_strbuf *b, const char *s, size_t n);
void cllm_strbuf_addc(cllm_strbuf *b, char c);
void cllm_strbuf_addf(cllm_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cllm_strbuf_free(cllm_strbuf *b);

/* Append v as JSON text (no newline). */
void cllm_value_to_json(cllm_strbuf *out, const cllm_value *v);
/* Append a JSON string literal of n bytes (invalid UTF-8 becomes U+FFFD). */
void cllm_json_quote(cllm_strbuf *out, const char *s, size_t n);

/* Pack a JSON value as msgpack. */
int cllm_json_pack(cllm_packbuf *b, const json_t *v);

/* JSONL reading: one JSON object per line; blank lines are skipped. */
typedef struct cllm_jsonl cllm_jsonl;
int cllm_jsonl_open(cllm_jsonl **out, const char *path); /* "-"/NULL: stdin */
/* Read from an open FILE (closed by cllm_jsonl_close when own). */
int cllm_jsonl_open_file(cllm_jsonl **out, FILE *f, const char *name, int own);
/* Next object (caller json_decref's it) and its 1-based line number:
 * 0, CLLM_EOF, or CLLM_EFORMAT naming file:line and jansson's reason. */
int cllm_jsonl_next(cllm_jsonl *j, json_t **obj, uint64_t *line);
/* Accept \u0000 in string values (their length is json_string_length, not
 * strlen): for readers that pack strings whole. Others get jansson's refusal. */
void cllm_jsonl_allow_nul(cllm_jsonl *j);
void cllm_jsonl_close(cllm_jsonl *j);

/* Pack a JSONL object as a record: an object with a string "type" becomes that
 * record as is; one without becomes a "prompt" record carrying all its fields,
 * with "id" set to default_id when it has no integer id, and "text" copied
 * from text_field when it has neither "text" nor "tokens" (text_field NULL:
 * "text", "prompt", "question", the first present). */
int cllm_json_to_record(cllm_packbuf *b, const json_t *obj, int64_t default_id, const char *text_field);

#endif
