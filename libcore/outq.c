/* outq.c: in-order output of out-of-order work (see outq.h). */
#include "outq.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

int cllm_outq_init(cllm_outq *q, int cap) {
    memset(q, 0, sizeof *q);
    q->jobs = cllm_calloc((size_t)cap, sizeof *q->jobs);
    if (!q->jobs) return CLLM_ENOMEM;
    q->cap = cap;
    return 0;
}

void cllm_outq_free(cllm_outq *q) {
    for (int i = 0; q->jobs && i < q->cap; i++) {
        free(q->jobs[i].buf);
        free(q->jobs[i].ends);
    }
    free(q->jobs);
    memset(q, 0, sizeof *q);
}

cllm_outq_job *cllm_outq_push(cllm_outq *q) {
    if (q->len >= q->cap) return NULL;
    cllm_outq_job *j = &q->jobs[(q->head + q->len) % q->cap];
    q->len++;
    j->done = 0;
    j->size = j->n_rec = j->written = 0;
    return j;
}

int cllm_outq_add(cllm_outq_job *j, const void *data, size_t len) {
    void *p = j->buf;
    if (cllm_grow(&p, &j->cap, j->size + len, 1)) return CLLM_ENOMEM;
    j->buf = p;
    p = j->ends;
    if (cllm_grow(&p, &j->cap_rec, j->n_rec + 1, sizeof *j->ends)) return CLLM_ENOMEM;
    j->ends = p;
    memcpy(j->buf + j->size, data, len);
    j->size += len;
    j->ends[j->n_rec++] = j->size;
    return 0;
}

int cllm_outq_drain(cllm_outq *q, cllm_outq_sink sink, void *ctx) {
    while (q->len > 0) {
        cllm_outq_job *j = &q->jobs[q->head];
        for (; j->written < j->n_rec; j->written++) {
            size_t from = j->written ? j->ends[j->written - 1] : 0;
            int rc = sink(ctx, j->buf + from, j->ends[j->written] - from);
            if (rc) return rc;
        }
        if (!j->done) break;
        q->head = (q->head + 1) % q->cap;
        q->len--;
    }
    return 0;
}
