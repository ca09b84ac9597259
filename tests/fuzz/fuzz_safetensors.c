/* fuzz_safetensors.c: bytes as a .safetensors file (8-byte header length,
 * header JSON, data) -> cllm_st_open -> metadata and every tensor read as fp32
 * (up to a size cap).
 *
 * With the first byte 'D' the input is a HF model directory instead:
 * bytes 1..2 (little-endian) give the length L of config.json, the next L
 * bytes are config.json, the rest is model.safetensors; it goes through
 * cllm_model_load (config checks, then the safetensors reader). Written to a
 * private temporary directory.
 *
 * Properties: no out-of-bounds access, no allocation above -malloc_limit_mb,
 * accepted tensors tile the data buffer inside the file.
 */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fuzz.h"
#include "model.h"
#include "safetensors.h"

#define MAX_TENSOR_ELEMS ((size_t)1 << 22)

static char dir[64];

static void cleanup(void) {
    static const char *const files[] = { "config.json", "model.safetensors", NULL };
    fuzz_remove_dir(dir, files);
}

static void hf_dir(const uint8_t *data, size_t size) {
    if (!dir[0]) {
        if (fuzz_make_dir(dir, sizeof dir)) return;
        atexit(cleanup);
    }
    if (size < 3) return;
    size_t l = (size_t)data[1] | (size_t)data[2] << 8;
    data += 3;
    size -= 3;
    if (l > size) l = size;
    char p[128];
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (fuzz_write_file(p, data, l)) return;
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (fuzz_write_file(p, data + l, size - l)) return;
    cllm_model m;
    if (!cllm_model_load(&m, dir)) cllm_model_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 0 && data[0] == 'D') { hf_dir(data, size); return 0; }
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    cllm_st *st;
    if (cllm_st_open(&st, path)) {
        if (!*cllm_errmsg()) fuzz_fail("safetensors error without a message");
        close(fd);
        return 0;
    }
    const char *k, *v;
    for (size_t i = 0; i < cllm_st_n_metadata(st); i++)
        if (cllm_st_metadata_at(st, i, &k, &v) || !k || !v) fuzz_fail("metadata entry %zu unreadable", i);
    int n = cllm_st_n_tensors(st);
    uint64_t header = 0;
    for (int i = 0; i < 8 && (size_t)i < size; i++) header |= (uint64_t)data[i] << (8 * i);
    for (int i = 0; i < n; i++) {
        const cllm_st_tensor *t = cllm_st_tensor_at(st, i);
        if (cllm_st_find(st, t->name) != t) fuzz_fail("find(%s) is another tensor", t->name);
        if (t->end < t->begin || 8 + header + t->end > size) fuzz_fail("tensor %s accepted outside the file", t->name);
        if (t->numel > MAX_TENSOR_ELEMS) continue;
        float *dst = malloc(t->numel ? t->numel * sizeof *dst : 1);
        if (!dst) continue;
        cllm_st_read_f32(st, t, dst, (size_t)t->numel);
        free(dst);
    }
    cllm_st_close(st);
    close(fd);
    return 0;
}
