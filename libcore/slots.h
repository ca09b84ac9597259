/* slots.h: continuous batching for the batched engines (gen.c: cllm-gen,
 * traj.c: cllm-traj).
 *
 * `batch` slots decode prompts side by side, slot s in KV-cache sequence s.
 * A free slot takes the next prompt in input order, at once (continuous
 * batching), unless 4*batch prompts' outputs wait in the output ring (outq.h:
 * outputs go out in input order, so one slow prompt holds the later ones
 * back). One tick gives every busy slot one step (a prompt chunk or a
 * decoding step, whatever the engine's slot says) in as few ragged forward
 * calls (cllm_forward_batch) as the row limit f->max_T allows. A decoding
 * step is never split; a prompt chunk may be cut to the room a call has left.
 *
 * Where the forward's route depends on what a call holds (cllm_fwd_one_route
 * is 0: on CUDA the few-row path or cuBLAS for calls of decoding rows only,
 * the fixed-order kernel for calls with prompt rows) the decoding steps go
 * first, in calls of their own, then the prompt chunks: a sequence's decoding
 * step then takes the same route at --batch 1 as at --batch 64 and from tick
 * to tick, and the decoding calls' layouts repeat from tick to tick, which
 * replays their CUDA graphs. Where every call takes one route, `mixed` lets
 * the prompt chunks share the decoding steps' calls (one call a tick where
 * the rows fit). Within a call the slots keep their order, s = 0..batch-1.
 *
 * The engine keeps its own slots, each with a cllm_slot in it
 * (sl->slot[s] points there), and answers for them through cllm_slots_ops.
 */
#ifndef CLLM_SLOTS_H
#define CLLM_SLOTS_H

#include <stdint.h>

#include "forward.h"
#include "outq.h"
#include "prompts.h"

/* What every slot has. */
typedef struct cllm_slot {
    int active;            /* a prompt in hand (set once ops->start took it; the
                              engine clears it when the prompt is done) */
    cllm_prompt p;         /* the prompt (the engine frees it at the end) */
    cllm_outq_job *j;      /* its outputs, waiting for their turn; the engine
                              sets j->done with its last one */
} cllm_slot;

/* What a step is (cllm_slots_ops.step). */
enum { CLLM_SLOT_IDLE = -1, CLLM_SLOT_DECODE = 0, CLLM_SLOT_PROMPT = 1 };

/* The engine's side, for its slot s (0 <= s < batch); eng is the engine. */
typedef struct cllm_slots_ops {
    /* Start on the prompt in slot[s]->p (its job is queued). 0 or CLLM_E*. */
    int (*start)(void *eng, int s);
    /* The busy slot's next step: CLLM_SLOT_DECODE, CLLM_SLOT_PROMPT, or
     * CLLM_SLOT_IDLE (none this tick). */
    int (*step)(void *eng, int s);
    /* That step as sequence d of a call with room rows left (room may be
     * 0), its tokens to tokens: returns its rows, or 0 when it does not fit
     * (a decoding step is never split; a prompt chunk is cut to room). */
    int (*feed)(void *eng, int s, int room, cllm_fwd_seq *d, int *tokens);
    /* After the call: d was the slot's part, argmax its rows' argmax.
     * 0 or CLLM_E*. */
    int (*take)(void *eng, int s, const cllm_fwd_seq *d, const int *argmax);
} cllm_slots_ops;

typedef struct cllm_slots {
    int batch;
    int mixed;                /* prompt chunks may share the decoding steps' calls
                                 (where cllm_fwd_one_route; 0 after init) */
    int finish;               /* a signal: finish the prompts in hand (else stop at
                                 once; 0 after init) */
    cllm_slot **slot;         /* (batch) each slot's shared part: the engine sets them */
    cllm_outq q;              /* outputs of the prompts in flight, in input order */
    uint64_t ticks;           /* ticks with a busy slot */
    uint64_t calls;           /* forward calls */
    uint64_t limit_calls;     /* those of them a tick made because its rows exceeded
                                 the row limit (a route's calls after its first) */
    /* internal */
    cllm_fwd *f;
    cllm_kv *kv;
    const cllm_slots_ops *ops;
    void *eng;
    cllm_fwd_seq *seqs;       /* (batch) one call's sequences */
    int *in_call;             /* (batch) their slots */
    int *tokens;              /* (f->max_T) one call's tokens, row order */
} cllm_slots;

/* batch slots that run their calls through f and kv (they must outlive sl).
 * 0 or CLLM_ENOMEM (free sl all the same). */
int cllm_slots_init(cllm_slots *sl, int batch, cllm_fwd *f, cllm_kv *kv, const cllm_slots_ops *ops, void *eng);
void cllm_slots_free(cllm_slots *sl);

/* Decode every prompt of src: fill the free slots, tick, pass the finished
 * outputs to put (in input order), until src is at its end and every slot
 * idle. On a signal (cllm_interrupted) no prompt is started; with finish the
 * prompts in hand are decoded and written first. Returns 0, CLLM_EINTR after
 * a signal, or the first error of src, ops, the forward or put. */
int cllm_slots_run(cllm_slots *sl, cllm_prompts *src, cllm_outq_sink put, void *put_ctx);

#endif
