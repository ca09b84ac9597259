/* stream-drip: write N metric records to stdout, one every MS milliseconds, as
 * a slow producer would (the pipe test checks that a reader sees the first
 * record long before the writer ends).  usage: stream-drip N MS */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "err.h"
#include "records.h"
#include "stream.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: stream-drip N MS\n"); return 2; }
    int n = atoi(argv[1]), ms = atoi(argv[2]);
    cllm_writer *w;
    cllm_packbuf b = { 0 };
    cllm_header_rec h = { "stream-drip", "", 0, "", argc, argv };
    if (cllm_writer_open(&w, "-", 1) || cllm_rec_header_pack(&b, &h) || cllm_writer_put_header(w, b.data, b.size)) {
        fprintf(stderr, "stream-drip: %s\n", cllm_errmsg());
        return 1;
    }
    for (int i = 0; i < n; i++) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        cllm_metric_rec m = { "sent_at", (double)now.tv_sec + now.tv_nsec * 1e-9, i, "s" };
        if (cllm_rec_metric_pack(&b, &m) || cllm_writer_put(w, b.data, b.size)) {
            fprintf(stderr, "stream-drip: %s\n", cllm_errmsg());
            return 1;
        }
        struct timespec d = { ms / 1000, (long)(ms % 1000) * 1000000L };
        nanosleep(&d, NULL);
    }
    cllm_packbuf_free(&b);
    if (cllm_writer_close(w)) { fprintf(stderr, "stream-drip: %s\n", cllm_errmsg()); return 1; }
    return 0;
}
