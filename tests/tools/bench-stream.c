/* bench-stream: write and read N traj records of 16-token windows (a prompt of
 * 100 tokens, a prefix growing with the chunk, 4 states) through a file and
 * print records/s and MB/s (uncompressed) for each direction. Reading here
 * decodes every record into a cllm_traj_rec, as cllm-train will.
 * usage: bench-stream [N] [FILE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zstd.h>

#include "err.h"
#include "records.h"
#include "stream.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); /* CPU time: the machine may be shared */
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int die(void) { fprintf(stderr, "bench-stream: %s\n", cllm_errmsg()); return 1; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char *path = argc > 2 ? argv[2] : "/tmp/cllm-bench-stream.zst";
    enum { W = 16, P = 100, K = 4 };
    cllm_traj_rec t;
    memset(&t, 0, sizeof t);
    cllm_tokens states[K];
    memset(states, 0, sizeof states);
    uint32_t x = 12345;
    for (int i = 0; i < P; i++) { x = x * 1664525u + 1013904223u; cllm_tokens_push(&t.prompt, (int32_t)(x >> 17)); }
    for (int k = 0; k < K; k++)
        for (int i = 0; i < W; i++) { x = x * 1664525u + 1013904223u; cllm_tokens_push(&states[k], (int32_t)(x >> 17)); }
    for (int i = 0; i < W; i++) cllm_tokens_push(&t.fixed, states[K - 1].ids[i] + 1);
    t.states = states;
    t.n_states = K;

    cllm_writer *w;
    cllm_packbuf b = { 0 };
    cllm_header_rec h = { "bench-stream", "", 49152, "", argc, argv };
    if (cllm_writer_open(&w, path, 1) || cllm_rec_header_pack(&b, &h) || cllm_writer_put_header(w, b.data, b.size)) return die();
    /* Training data is written in bulk: flush every 64 KiB, not per record. */
    cllm_writer_set_flush(w, 1 << 16);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        t.id = i / 8;
        t.chunk = i % 8;
        t.prefix.n = 0;
        for (int c = 0; c < t.chunk * W; c++) cllm_tokens_push(&t.prefix, (int32_t)((i + c) % 49152));
        if (cllm_rec_traj_pack(&b, &t) || cllm_writer_put(w, b.data, b.size)) return die();
    }
    if (cllm_writer_close(w)) return die();
    double tw = now() - t0;
    uint64_t raw = 0;

    cllm_reader *r;
    if (cllm_reader_open(&r, path)) return die();
    cllm_record rec;
    cllm_traj_rec got;
    long count = 0;
    uint64_t check = 0;
    int rc;
    t0 = now();
    while ((rc = cllm_reader_next(r, &rec)) == 0) {
        raw += rec.raw_len;
        if (strcmp(rec.type, "traj")) continue;
        if (cllm_rec_traj_get(&rec, &got)) return die();
        check += (uint64_t)got.fixed.ids[0] + got.n_states;
        cllm_rec_traj_free(&got);
        count++;
    }
    double tr = now() - t0;
    if (rc != CLLM_EOF) return die();
    cllm_reader_close(r);
    /* Baseline in the same run: zstd alone decompressing the same file, so the
     * read rate can be judged against the floor set by decompression. */
    double zs = 0;
    {
        FILE *zf = fopen(path, "rb");
        ZSTD_DCtx *dc = ZSTD_createDCtx();
        size_t icap = ZSTD_DStreamInSize(), ocap = ZSTD_DStreamOutSize();
        char *ib = malloc(icap), *ob = malloc(ocap);
        if (!zf || !dc || !ib || !ob) return die();
        t0 = now();
        size_t nread;
        while ((nread = fread(ib, 1, icap, zf)) > 0) {
            ZSTD_inBuffer in = { ib, nread, 0 };
            while (in.pos < in.size) {
                ZSTD_outBuffer out = { ob, ocap, 0 };
                if (ZSTD_isError(ZSTD_decompressStream(dc, &out, &in))) return die();
            }
        }
        zs = now() - t0;
        fclose(zf);
        ZSTD_freeDCtx(dc);
        free(ib);
        free(ob);
    }
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long comp = ftell(f);
    fclose(f);
    remove(path);
    printf("records            %ld traj (16-token windows, 4 states, 100-token prompt)\n", count);
    printf("uncompressed       %.1f MB (%.0f bytes/record), compressed %.1f MB\n", raw / 1e6, (double)raw / count, comp / 1e6);
    printf("write              %.0f records/s  %.1f MB/s  (pack + zstd level 3, 1 core)\n", n / tw, raw / 1e6 / tw);
    printf("read               %.0f records/s  %.1f MB/s  (zstd + decode to structs, 1 core)\n", count / tr, raw / 1e6 / tr);
    printf("zstd alone         %.1f MB/s decompressing the same file: reading runs at %.2fx of it\n",
           raw / 1e6 / zs, zs / tr);
    printf("checksum           %llu\n", (unsigned long long)check);
    for (int k = 0; k < K; k++) cllm_tokens_free(&states[k]);
    cllm_tokens_free(&t.prompt); cllm_tokens_free(&t.fixed); cllm_tokens_free(&t.prefix);
    cllm_packbuf_free(&b);
    return count == n ? 0 : 1;
}
