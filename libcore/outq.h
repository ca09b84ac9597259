/* outq.h: the outputs of work items that finish out of order (the prompts of
 * a continuous batch), written in input order.
 *
 * A ring of jobs, one per item in flight, oldest at the head. A job gathers
 * records (byte strings: packed stream records, or text) as its item
 * produces them; cllm_outq_drain passes the head job's records to a sink as
 * soon as they exist, so the oldest item streams while later ones wait, and
 * retires each job once it is done and written. Used by cllm-gen and
 * cllm-traj.
 */
#ifndef CLLM_OUTQ_H
#define CLLM_OUTQ_H

#include <stddef.h>

typedef struct cllm_outq_job {
    int done;          /* the item's last record is in */
    char *buf;         /* its records, back to back */
    size_t size, cap;
    size_t *ends;      /* (n_rec) end offset of each record in buf */
    size_t n_rec, cap_rec;
    size_t written;    /* records already passed to the sink */
} cllm_outq_job;

typedef struct cllm_outq {
    cllm_outq_job *jobs;  /* (cap) ring */
    int cap, head, len;
} cllm_outq;

/* A ring of cap jobs. 0 or CLLM_ENOMEM. */
int cllm_outq_init(cllm_outq *q, int cap);
void cllm_outq_free(cllm_outq *q);
/* The next job in input order, empty; NULL when all cap are in flight. */
cllm_outq_job *cllm_outq_push(cllm_outq *q);
/* Append one record to j. 0 or CLLM_ENOMEM. */
int cllm_outq_add(cllm_outq_job *j, const void *data, size_t len);

/* Where drained records go: 0 or a CLLM_E* code, which stops the drain. */
typedef int (*cllm_outq_sink)(void *ctx, const void *data, size_t len);
/* Pass every record the oldest jobs hold to sink, in order, retiring the
 * done ones; stops at the first job not done. 0 or the sink's error. */
int cllm_outq_drain(cllm_outq *q, cllm_outq_sink sink, void *ctx);

#endif
