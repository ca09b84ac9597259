/* mpvalue.h: a bounded msgpack decoder into a tree of values.
 *
 * Why not msgpack-c's unpacker: it preallocates count x 24 bytes for a declared
 * array or map length before checking that the bytes exist (a 5-byte record can
 * ask for 96 GB) and reports deep nesting as out-of-memory. This decoder first
 * scans a record (no allocation) to find where it ends and how many values it
 * holds, checking every length against the bytes present and the nesting depth
 * against CLLM_MP_MAX_DEPTH; only then does it build the tree, with exactly that
 * many nodes. Strings and binaries point into the caller's buffer (no copy, not
 * NUL-terminated).
 */
#ifndef CLLM_MPVALUE_H
#define CLLM_MPVALUE_H

#include <stddef.h>
#include <stdint.h>

#define CLLM_MP_MAX_DEPTH 32

enum cllm_mp_type {
    CLLM_MP_NIL, CLLM_MP_BOOL, CLLM_MP_INT, /* signed, negative */ CLLM_MP_UINT,
    CLLM_MP_FLOAT, CLLM_MP_STR, CLLM_MP_BIN, CLLM_MP_ARRAY, CLLM_MP_MAP, CLLM_MP_EXT,
};

typedef struct cllm_value {
    uint8_t type;          /* enum cllm_mp_type */
    int8_t ext_type;       /* CLLM_MP_EXT only */
    uint32_t n;            /* bytes (STR, BIN, EXT) or elements (ARRAY) or pairs (MAP) */
    union {
        int b;
        int64_t i;         /* INT: always < 0 */
        uint64_t u;        /* UINT */
        double f;          /* FLOAT (float32 widened) */
        const char *s;     /* STR, BIN, EXT */
        struct cllm_value *items; /* ARRAY: n values; MAP: 2n values, key then value */
    } v;
} cllm_value;

/* Result of scanning: the record is complete, needs more bytes, or is malformed. */
enum { CLLM_MP_COMPLETE = 0, CLLM_MP_NEED_MORE = 1 };

/* Scan one msgpack value at buf[0..len). Returns CLLM_MP_COMPLETE with *used
 * (its bytes) and *n_values (nodes needed to hold it), CLLM_MP_NEED_MORE when
 * len ends inside it, or a negative CLLM_E* code (message says what and at
 * which byte offset). */
int cllm_mp_scan(const uint8_t *buf, size_t len, size_t *used, size_t *n_values);

/* The same scan in steps, for a value whose bytes arrive in pieces (a record
 * coming down a pipe): after CLLM_MP_NEED_MORE the scanner remembers where it
 * stopped (the start of the first incomplete element and the counts still open
 * above it), and the next call with the same value's bytes, now longer, goes
 * on from there. So every byte is scanned about once however many pieces the
 * value comes in, and a value can be taken the moment its last byte is there.
 * Offsets are from the value's first byte, so the bytes may move between calls
 * (buf is the value's start each time). Init before the first call and after
 * each complete value. */
typedef struct cllm_mp_scanner {
    uint64_t stack[CLLM_MP_MAX_DEPTH + 1];   /* values still to come at each depth */
    int depth;
    size_t off, nodes;                       /* where the next element starts, nodes before it */
} cllm_mp_scanner;

void cllm_mp_scanner_init(cllm_mp_scanner *s);
int cllm_mp_scan_more(cllm_mp_scanner *s, const uint8_t *buf, size_t len, size_t *used, size_t *n_values);

/* Build the tree of a value already scanned as complete, using nodes[0..n_values):
 * nodes[0] is the root. Cannot fail. */
void cllm_mp_build(const uint8_t *buf, cllm_value *nodes);

/* Map lookup by key (string keys only); NULL when absent. */
const cllm_value *cllm_mp_get(const cllm_value *map, const char *key);
/* True when v is a STR equal to s. */
int cllm_mp_str_eq(const cllm_value *v, const char *s);
/* Unsigned/signed integer of v, range-checked; 0 or -1. */
int cllm_mp_as_i64(const cllm_value *v, int64_t *out);
/* Integer or float as double; 0 or -1. */
int cllm_mp_as_double(const cllm_value *v, double *out);

#endif
