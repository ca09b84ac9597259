/* gguf.h: read and write GGUF v2/v3 model files.
 *
 * The reader parses the whole header (metadata of every value type, tensor
 * infos) with every count, size and offset checked against the file size before
 * anything is allocated; tensor data is read on demand and dequantized to fp32.
 * Strings are copied out with a terminating NUL added (lengths are kept, so an
 * embedded NUL is not lost).
 */
#ifndef CLLM_GGUF_H
#define CLLM_GGUF_H

#include <stddef.h>
#include <stdint.h>

enum cllm_gguf_vtype {
    GGUF_T_U8 = 0, GGUF_T_I8 = 1, GGUF_T_U16 = 2, GGUF_T_I16 = 3, GGUF_T_U32 = 4,
    GGUF_T_I32 = 5, GGUF_T_F32 = 6, GGUF_T_BOOL = 7, GGUF_T_STR = 8, GGUF_T_ARR = 9,
    GGUF_T_U64 = 10, GGUF_T_I64 = 11, GGUF_T_F64 = 12,
};

enum cllm_ggml_type {
    GGML_T_F32 = 0, GGML_T_F16 = 1, GGML_T_Q4_0 = 2, GGML_T_Q4_1 = 3,
    GGML_T_Q8_0 = 8, GGML_T_BF16 = 30,
};

typedef struct cllm_gguf_str {
    const char *s;   /* NUL-terminated copy */
    size_t len;      /* bytes, without the added NUL */
} cllm_gguf_str;

typedef struct cllm_gguf cllm_gguf;

typedef struct cllm_gguf_tensor {
    const char *name;
    int n_dims;
    int64_t ne[4];     /* ggml order: ne[0] fastest varying */
    int type;          /* enum cllm_ggml_type */
    uint64_t offset;   /* from the start of the data section */
    uint64_t nbytes;
} cllm_gguf_tensor;

/* Open and parse path. Returns 0 or a CLLM_E* code (message names the file). */
int cllm_gguf_open(cllm_gguf **out, const char *path);
void cllm_gguf_close(cllm_gguf *g);

uint32_t cllm_gguf_version(const cllm_gguf *g);
int cllm_gguf_n_kv(const cllm_gguf *g);
const char *cllm_gguf_key(const cllm_gguf *g, int i);
/* Index of key, or -1. */
int cllm_gguf_find(const cllm_gguf *g, const char *key);
/* Value type of entry i; for arrays also the element type and count. */
int cllm_gguf_kv_type(const cllm_gguf *g, int i);
int cllm_gguf_arr_info(const cllm_gguf *g, int i, int *elem_type, uint64_t *n);

/* Typed getters. Each returns 0, CLLM_EFORMAT when the key is absent or of
 * another type (message names key and types). Integer getters accept any
 * integer type whose value fits; float getters accept f32/f64. */
int cllm_gguf_get_int(const cllm_gguf *g, const char *key, int64_t *out);
int cllm_gguf_get_float(const cllm_gguf *g, const char *key, double *out);
int cllm_gguf_get_bool(const cllm_gguf *g, const char *key, int *out);
int cllm_gguf_get_str(const cllm_gguf *g, const char *key, cllm_gguf_str *out);
int cllm_gguf_get_arr_str(const cllm_gguf *g, const char *key, const cllm_gguf_str **out, size_t *n);
/* Integer arrays of any integer element type, widened to int32 (range checked). */
int cllm_gguf_get_arr_i32(const cllm_gguf *g, const char *key, const int32_t **out, size_t *n);
/* Float arrays (f32). */
int cllm_gguf_get_arr_f32(const cllm_gguf *g, const char *key, const float **out, size_t *n);

int cllm_gguf_n_tensors(const cllm_gguf *g);
const cllm_gguf_tensor *cllm_gguf_tensor_at(const cllm_gguf *g, int i);
const cllm_gguf_tensor *cllm_gguf_find_tensor(const cllm_gguf *g, const char *name);
/* Read tensor t and dequantize it to fp32 into dst (numel floats). */
int cllm_gguf_read_f32(cllm_gguf *g, const cllm_gguf_tensor *t, float *dst, size_t numel);

/* Dequantize n elements of type from src (n a multiple of the block size). */
int cllm_dequantize(int type, const void *src, float *dst, size_t n);

/* ---- additions beyond the first interface ---- */

/* Name of a ggml tensor type ("Q4_1"), or NULL when the id is unknown. */
const char *cllm_ggml_type_name(int type);
/* Name of a metadata value type ("u32", "string"), or "?" when unknown. */
const char *cllm_gguf_vtype_name(int vtype);
/* The path the file was opened with. */
const char *cllm_gguf_path(const cllm_gguf *g);
/* Bytes of the whole file; start of the tensor data section; alignment. */
uint64_t cllm_gguf_file_size(const cllm_gguf *g);
uint64_t cllm_gguf_data_offset(const cllm_gguf *g);
uint32_t cllm_gguf_alignment(const cllm_gguf *g);
/* Close the file but keep every parsed value (metadata, tensor infos): a
 * cllm_gguf_read_f32 afterwards fails with CLLM_EINVAL. */
void cllm_gguf_drop_file(cllm_gguf *g);
/* Elements per block of a ggml type (32 for Q4_1, 1 for F32), 0 when unknown. */
int cllm_ggml_block_elems(int type);
/* Bytes that n elements of t take in the file (n whole blocks). */
size_t cllm_gguf_part_bytes(const cllm_gguf_tensor *t, size_t n);
/* Elements [first, first + n) of tensor t, in the file's order, dequantized
 * to fp32 into dst: first and n whole blocks of t's type; raw, scratch of
 * cllm_gguf_part_bytes(t, n) bytes (unused for F32). The tensor readers use
 * pread, not a file position: threads may read one open file at once. */
int cllm_gguf_read_part_f32(const cllm_gguf *g, const cllm_gguf_tensor *t, size_t first, size_t n, float *dst,
                            void *raw);
/* Read a tensor's raw bytes (t->nbytes of them) as stored. */
int cllm_gguf_read_raw(cllm_gguf *g, const cllm_gguf_tensor *t, void *dst, size_t nbytes);
/* Convert n floats to F16 (IEEE binary16, round to nearest even) or BF16
 * (round to nearest even, NaN kept quiet) bit patterns. */
void cllm_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void cllm_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
/* Round n floats in place to the nearest bf16 value (as cllm_f32_to_bf16). */
void cllm_f32_round_bf16(float *x, size_t n);

/* Writer. Metadata entries are kept in insertion order; setting a key that is
 * already there replaces its value in place. Tensors are given as fp32 and are
 * converted on write to F32, F16 or BF16; the data pointer is borrowed until
 * cllm_gguf_writer_write returns. The file is written to a temporary name next
 * to path, fsync'd and renamed into place, GGUF v3, alignment 32 (or
 * general.alignment when set). */
typedef struct cllm_gguf_writer cllm_gguf_writer;
int cllm_gguf_writer_new(cllm_gguf_writer **out);
void cllm_gguf_writer_free(cllm_gguf_writer *w);
/* Copy entry i of g (any type) as is. */
int cllm_gguf_writer_copy_kv(cllm_gguf_writer *w, const cllm_gguf *g, int i);
int cllm_gguf_writer_set_u32(cllm_gguf_writer *w, const char *key, uint32_t v);
int cllm_gguf_writer_set_i32(cllm_gguf_writer *w, const char *key, int32_t v);
int cllm_gguf_writer_set_f32(cllm_gguf_writer *w, const char *key, float v);
int cllm_gguf_writer_set_bool(cllm_gguf_writer *w, const char *key, int v);
int cllm_gguf_writer_set_str(cllm_gguf_writer *w, const char *key, const char *s, size_t len);
int cllm_gguf_writer_set_arr_str(cllm_gguf_writer *w, const char *key, const char *const *s,
                                 const size_t *lens, size_t n);
int cllm_gguf_writer_set_arr_i32(cllm_gguf_writer *w, const char *key, const int32_t *v, size_t n);
int cllm_gguf_writer_set_arr_f32(cllm_gguf_writer *w, const char *key, const float *v, size_t n);
/* 1 when key is set, else 0. */
int cllm_gguf_writer_has(const cllm_gguf_writer *w, const char *key);
/* Remove a key if present (0 either way). */
int cllm_gguf_writer_remove(cllm_gguf_writer *w, const char *key);
/* ne in ggml order (ne[0] fastest), n_dims 1..4, type F32/F16/BF16. */
int cllm_gguf_writer_add_tensor(cllm_gguf_writer *w, const char *name, int n_dims,
                                const int64_t *ne, int type, const float *data);
int cllm_gguf_writer_write(cllm_gguf_writer *w, const char *path);

#endif
