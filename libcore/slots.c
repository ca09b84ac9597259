/* slots.c: continuous batching (see slots.h). */
#include "slots.h"

#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "err.h"

int cllm_slots_init(cllm_slots *sl, int batch, cllm_fwd *f, cllm_kv *kv, const cllm_slots_ops *ops, void *eng) {
    memset(sl, 0, sizeof *sl);
    sl->batch = batch;
    sl->f = f;
    sl->kv = kv;
    sl->ops = ops;
    sl->eng = eng;
    sl->slot = cllm_calloc((size_t)batch, sizeof *sl->slot);
    sl->seqs = cllm_calloc((size_t)batch, sizeof *sl->seqs);
    sl->in_call = cllm_calloc((size_t)batch, sizeof *sl->in_call);
    sl->tokens = cllm_calloc((size_t)f->max_T, sizeof *sl->tokens);
    if (!sl->slot || !sl->seqs || !sl->in_call || !sl->tokens || cllm_outq_init(&sl->q, 4 * batch + 1))
        return CLLM_ENOMEM;
    return 0;
}

void cllm_slots_free(cllm_slots *sl) {
    free(sl->slot);
    free(sl->seqs);
    free(sl->in_call);
    free(sl->tokens);
    cllm_outq_free(&sl->q);
    memset(sl, 0, sizeof *sl);
}

/* One tick: every busy slot one step, in as few calls as the row limit
 * allows: one pass over the slots where mixed, else the decoding steps' pass
 * first, then the prompt chunks'. A pass fills a call with the slots' steps
 * in slot order until one does not fit, runs it, and goes on from that slot
 * with the next call. *active: the slots busy at the start. */
static int tick(cllm_slots *sl, int *active) {
    const cllm_slots_ops *ops = sl->ops;
    int rc = 0, max_T = sl->f->max_T;
    *active = 0;
    for (int i = 0; i < sl->batch; i++) *active += sl->slot[i]->active;
    if (*active) sl->ticks++;
    for (int pass = CLLM_SLOT_DECODE; pass <= (sl->mixed ? CLLM_SLOT_DECODE : CLLM_SLOT_PROMPT) && !rc; pass++) {
        int next = 0, pass_calls = 0;
        while (!rc) {
            int B = 0, rows = 0;
            for (; next < sl->batch; next++) {
                if (!sl->slot[next]->active) continue;
                int step = ops->step(sl->eng, next);
                if (step == CLLM_SLOT_IDLE || (!sl->mixed && step != pass)) continue;
                int T = ops->feed(sl->eng, next, max_T - rows, &sl->seqs[B], sl->tokens + rows);
                if (T == 0) break;          /* no room left in this call */
                sl->in_call[B++] = next;
                rows += T;
            }
            if (B == 0) break;
            sl->calls++;
            if (pass_calls++) sl->limit_calls++;
            if ((rc = cllm_forward_batch(sl->f, sl->kv, sl->seqs, B, sl->tokens))) break;
            for (int b = 0, r = 0; b < B && !rc; r += sl->seqs[b].T, b++)
                rc = ops->take(sl->eng, sl->in_call[b], &sl->seqs[b], sl->f->argmax + r);
        }
    }
    return rc;
}

int cllm_slots_run(cllm_slots *sl, cllm_prompts *src, cllm_outq_sink put, void *put_ctx) {
    int rc = 0, eof = 0;
    while (!rc) {
        int stop = cllm_interrupted != 0;
        if (stop && !sl->finish) break;
        /* Fill the free slots with the next prompts, in input order. */
        for (int i = 0; i < sl->batch && !rc && !eof && !stop; i++) {
            cllm_slot *s = sl->slot[i];
            if (s->active || sl->q.len >= sl->q.cap) continue;
            rc = cllm_prompts_next(src, &s->p);
            if (rc == CLLM_EOF) { rc = 0; eof = 1; break; }
            if (rc) break;
            s->j = cllm_outq_push(&sl->q);
            rc = sl->ops->start(sl->eng, i);
            if (!rc) s->active = 1;
        }
        if (rc) break;
        int active = 0;
        rc = tick(sl, &active);
        if (!rc) rc = cllm_outq_drain(&sl->q, put, put_ctx);
        if (!active && (eof || stop)) break;
    }
    if (!rc && cllm_interrupted) rc = cllm_error(CLLM_EINTR, "interrupted");
    return rc;
}
