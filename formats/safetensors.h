/* safetensors.h: read and write safetensors files and HF model directories.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes of
 * JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {string: string}}), then the data buffer. The reader checks
 * the header against the file before trusting it: N at most 100 MB and inside
 * the file, valid UTF-8 JSON object, no duplicate names, known dtypes, shapes of
 * non-negative integers whose byte size (checked 64-bit math) equals
 * end - begin, and tensors that tile the data buffer exactly (first begin 0,
 * no gap, no overlap, last end = end of file). A directory is either one
 * model.safetensors or shards listed by model.safetensors.index.json (each
 * shard a plain file name inside the directory). Data is read with pread on
 * demand (no mmap, so a file truncated under us is an error, never SIGBUS).
 */
#ifndef CLLM_SAFETENSORS_H
#define CLLM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

enum cllm_st_dtype {
    CLLM_ST_F32 = 0, CLLM_ST_F16, CLLM_ST_BF16, CLLM_ST_F64, CLLM_ST_I64, CLLM_ST_I32,
    CLLM_ST_I16, CLLM_ST_I8, CLLM_ST_U8, CLLM_ST_BOOL, CLLM_ST_U16, CLLM_ST_U32, CLLM_ST_U64,
    CLLM_ST_F8_E4M3, CLLM_ST_F8_E5M2, CLLM_ST_NDTYPE
};

#define CLLM_ST_MAX_DIMS 8

typedef struct cllm_st_tensor {
    const char *name;
    int dtype;                        /* enum cllm_st_dtype */
    int n_dims;                       /* 0 (scalar) .. CLLM_ST_MAX_DIMS */
    int64_t shape[CLLM_ST_MAX_DIMS];  /* row-major, shape[0] slowest */
    uint64_t numel;
    uint64_t begin, end;              /* byte range in the file's data buffer */
    int file;                         /* which shard */
} cllm_st_tensor;

typedef struct cllm_st cllm_st;

/* Open one .safetensors file. */
int cllm_st_open(cllm_st **out, const char *path);
/* Open the weights of a HF directory: model.safetensors, or the shards named by
 * model.safetensors.index.json. */
int cllm_st_open_dir(cllm_st **out, const char *dir);
void cllm_st_close(cllm_st *st);

int cllm_st_n_tensors(const cllm_st *st);
const cllm_st_tensor *cllm_st_tensor_at(const cllm_st *st, int i);
const cllm_st_tensor *cllm_st_find(const cllm_st *st, const char *name);
/* Value of a __metadata__ key of the (first) file, or NULL. */
const char *cllm_st_metadata(const cllm_st *st, const char *key);

/* The __metadata__ entries of the first file, by index (0 or -1 past the end);
 * the strings live until cllm_st_close. */
size_t cllm_st_n_metadata(const cllm_st *st);
int cllm_st_metadata_at(const cllm_st *st, size_t i, const char **key, const char **val);

/* Read tensor t converted to fp32 (F32, F16, BF16 only). */
int cllm_st_read_f32(cllm_st *st, const cllm_st_tensor *t, float *dst, size_t numel);
/* Elements [first, first + n) of tensor t converted to fp32 into dst; raw:
 * scratch of cllm_st_part_bytes(t, n) bytes (unused for F32). Reads with
 * pread: threads may read parts of one open file at once. */
int cllm_st_read_part_f32(const cllm_st *st, const cllm_st_tensor *t, size_t first, size_t n, float *dst, void *raw);
size_t cllm_st_part_bytes(const cllm_st_tensor *t, size_t n);

const char *cllm_st_dtype_name(int dtype);

/* Writing: tensors given as fp32, stored as dtype (F32, F16 or BF16), in the
 * order given; metadata is n_meta key/value string pairs (may be 0). Written to
 * a temporary file, fsync'd and renamed into place. */
typedef struct cllm_st_wtensor {
    const char *name;
    int n_dims;
    const int64_t *shape;
    const float *data;
} cllm_st_wtensor;

int cllm_st_write(const char *path, const cllm_st_wtensor *ts, size_t n, int dtype,
                  const char *const *meta_keys, const char *const *meta_vals, size_t n_meta);

#endif
