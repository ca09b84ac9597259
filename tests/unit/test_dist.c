/* test_dist.c: the sharded vectors of dist.h (ZeRO-1, docs/SCALING.md).
 *
 * Everywhere: cllm_dist_slice's slices cover [0, n) in rank order, start on
 * CLLM_DIST_ALIGN boundaries and are equal but for the last ones, for many n
 * and world sizes. On the ranks this runs on (one without a launcher;
 * tests/sh/mpi.sh runs it under `mpirun -np 3`, where 100 elements leave
 * rank 2 an empty slice): reduce-scatter, all-gather and gather to a root
 * against values that are exact in fp32 at any summation order, with the
 * pieces MPI gets at their default size and cut small (cllm_dist_set_chunk:
 * pieces that split slices, the path of buffers over 2^30 elements), and the
 * all-reduce with small pieces too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dist.h"
#include "err.h"

static void test_slices(void) {
    const size_t ns[] = { 0, 1, 63, 64, 65, 100, 1000, 4099, 134515008 };
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
        for (int size = 1; size <= 9; size++) {
            size_t n = ns[a], next = 0, first_len = 0;
            for (int r = 0; r < size; r++) {
                size_t off, len;
                cllm_dist_slice(n, r, size, &off, &len);
                CHECK_MSG(off == next, "n %zu size %d rank %d: off %zu, want %zu", n, size, r, off, next);
                CHECK_MSG(off == n || off % CLLM_DIST_ALIGN == 0, "n %zu size %d rank %d: off %zu unaligned", n, size, r, off);
                if (r == 0) first_len = len;
                CHECK_MSG(len <= first_len, "n %zu size %d rank %d: len %zu > rank 0's %zu", n, size, r, len, first_len);
                CHECK_MSG(off + len == n || len == first_len, "n %zu size %d rank %d: a short slice before the end", n, size, r);
                next = off + len;
            }
            CHECK_MSG(next == n, "n %zu size %d: slices end at %zu", n, size, next);
            if (size == 1) CHECK_EQ_INT(first_len, n);
        }
    TEST_OK("dist_slices");
}

/* A rank's value at index i: small integers, exact in fp32 in any sum. */
static float val(int rank, size_t i) { return (float)((rank + 1) * (int)(i % 17) - (int)(i % 5)); }

static void test_collectives(size_t chunk) {
    const int R = cllm_dist_size(), rank = cllm_dist_rank();
    const size_t ns[] = { 0, 1, 100, 1000, 4099 };
    cllm_dist_set_chunk(chunk);
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++) {
        size_t n = ns[a], off, len;
        cllm_dist_slice(n, rank, R, &off, &len);
        float *buf = calloc(n + 1, sizeof *buf), *mine = calloc(len + 1, sizeof *mine), *full = calloc(n + 1, sizeof *full);
        CHECK(buf && mine && full);
        if (!buf || !mine || !full) { free(buf); free(mine); free(full); return; }
        /* Reduce-scatter: this rank's slice holds the sum over ranks. */
        for (size_t i = 0; i < n; i++) buf[i] = val(rank, i);
        CHECK_OK(cllm_dist_sum_slice_f32(buf, n));
        int bad = 0;
        for (size_t i = off; i < off + len; i++) {
            float want = 0;
            for (int r = 0; r < R; r++) want += val(r, i);
            bad += buf[i] != want;
        }
        CHECK_MSG(!bad, "reduce-scatter, n %zu, pieces of %zu: %d wrong in rank %d's slice", n, chunk, bad, rank);
        /* All-gather: every slice from its owner (the rest starts as garbage). */
        for (size_t i = 0; i < n; i++) buf[i] = i >= off && i < off + len ? val(0, i) * 3 : -1e30f;
        CHECK_OK(cllm_dist_allgather_f32(buf, n));
        bad = 0;
        for (size_t i = 0; i < n; i++) bad += buf[i] != val(0, i) * 3;
        CHECK_MSG(!bad, "allgather, n %zu, pieces of %zu: %d wrong on rank %d", n, chunk, bad, rank);
        /* Gather to the last rank (not 0: the root is a parameter). */
        for (size_t j = 0; j < len; j++) mine[j] = val(1, off + j);
        for (size_t i = 0; i < n; i++) full[i] = -1;
        CHECK_OK(cllm_dist_gather_f32(mine, full, n, R - 1));
        if (rank == R - 1) {
            bad = 0;
            for (size_t i = 0; i < n; i++) bad += full[i] != val(1, i);
            CHECK_MSG(!bad, "gather, n %zu, pieces of %zu: %d wrong on the root", n, chunk, bad);
        }
        /* The all-reduce in the same pieces. */
        for (size_t i = 0; i < n; i++) buf[i] = val(rank, i);
        CHECK_OK(cllm_dist_sum_f32(buf, n));
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            float want = 0;
            for (int r = 0; r < R; r++) want += val(r, i);
            bad += buf[i] != want;
        }
        CHECK_MSG(!bad, "allreduce, n %zu, pieces of %zu: %d wrong on rank %d", n, chunk, bad, rank);
        free(buf);
        free(mine);
        free(full);
    }
    cllm_dist_set_chunk(0);   /* back to 2^30 */
}

int main(void) {
    if (cllm_dist_init()) {
        fprintf(stderr, "dist init: %s\n", cllm_errmsg());
        return 1;
    }
    test_slices();
    const size_t chunks[] = { (size_t)1 << 30, 7, 64, 1000 };
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) test_collectives(chunks[c]);
    TEST_OK("dist_collectives");
    if (cllm_dist_rank() == 0) printf("%d rank(s)\n", cllm_dist_size());
    if (cllm_dist_finalize()) {
        fprintf(stderr, "dist finalize: %s\n", cllm_errmsg());
        return 1;
    }
    TEST_END();
}
