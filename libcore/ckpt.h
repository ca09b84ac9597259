/* ckpt.h: cllm-train's checkpoint files (docs/TRAINING.md, "Checkpoints").
 *
 * One self-contained file per checkpoint, little-endian:
 *   "CLLMCKPT" magic (8 bytes), u32 version (1), u32 header size (1024),
 *   the header: u64 step, total_steps, consumed (training examples taken from
 *   the input), data_hash (running hash of those examples), adam_t, n_params,
 *   u64 rng[4] (training RNG), u64 data_rng[4] (shuffle RNG), i32 model shape
 *   (layers, d_model, heads, kv heads, head dim, d_ff, vocab), char opts[512]
 *   (the options that shape the run, NUL-padded), u32 world (the number of
 *   data-parallel ranks; 0 in files written before it existed means 1), zero
 *   padding;
 *   then params, Adam m, Adam v (n_params floats each), then u64 checksum of
 *   every byte before it.
 * Loading checks the magic, version, header size, the exact file size for
 * n_params, the checksum, and (the caller) shape and options, so truncated,
 * flipped or foreign files give a clear error and nothing is half-loaded.
 * Saving is atomic: a temporary file in the same directory (.ckpt-tmp-XXXXXX,
 * flock'd by its writer), written, fsync'd, renamed to ckpt-<step:08>.cllmckpt,
 * then the directory fsync'd; older checkpoints beyond the newest `keep` are
 * deleted only after that. A writer killed before its rename leaves its
 * temporary file: load never looks at it, and the next save deletes every
 * temporary file no live process holds locked (docs/RELIABILITY.md,
 * "Checkpoint crash safety"; tests/unit/test_ckpt_crash.c).
 */
#ifndef CLLM_CKPT_H
#define CLLM_CKPT_H

#include <stddef.h>
#include <stdint.h>

#define CLLM_CKPT_MAGIC "CLLMCKPT"
#define CLLM_CKPT_VERSION 1u
#define CLLM_CKPT_OPTS 512

typedef struct cllm_ckpt {
    uint64_t step, total_steps, consumed, data_hash, adam_t, n_params;
    uint64_t rng[4], data_rng[4];
    int32_t shape[7];            /* n_layer, d_model, n_head, n_head_kv, head_dim, d_ff, vocab */
    char opts[CLLM_CKPT_OPTS];   /* NUL-terminated */
    uint32_t world;              /* ranks that trained it (load: 0 in the file reads as 1) */
    float *params, *m, *v;       /* n_params each: borrowed when saving, malloc'd by load */
} cllm_ckpt;

/* Write c into dir as ckpt-<step>.cllmckpt (atomically, see above), then keep
 * only the newest keep checkpoints of dir (keep <= 0: keep all). *path_out
 * (may be NULL) gets the file's path (malloc'd). 0 or CLLM_E*; on failure
 * (ENOSPC, EFBIG, EDQUOT from write or fsync...) the message names the
 * checkpoint file and the errno text, the temporary file is removed and
 * existing checkpoints are untouched. */
int cllm_ckpt_save(const char *dir, const cllm_ckpt *c, int keep, char **path_out);

/* Load and validate path (a checkpoint file, or a directory: its newest
 * checkpoint that validates). Allocates c->params/m/v. 0 or CLLM_E*.
 * *path_out (may be NULL) gets the file chosen (malloc'd). */
int cllm_ckpt_load(const char *path, cllm_ckpt *c, char **path_out);
void cllm_ckpt_free(cllm_ckpt *c);

/* The 64-bit checksum the files use, continued from h (start: 0). */
uint64_t cllm_ckpt_hash(uint64_t h, const void *data, size_t n);

#endif
