/* The run's cadence, one rule for the single-process loop and the distributed
 * coordinator: after the update that brings the run to `step` (counted from 1),
 * what is due. A run ends at training.steps (its last checkpoint is the final
 * one, written by the loop's end) or at a stop request. */
#ifndef DDPM_CADENCE_H
#define DDPM_CADENCE_H

#include <stdint.h>

#include "common/config/config.h"

typedef struct {
    int log;          /* a metrics.jsonl line and the progress line */
    int checkpoint;   /* a periodic checkpoint (not at the last step: the end writes it) */
    int eval;         /* training.eval_every: bits/dim of the EMA weights */
    int sample;       /* training.sample_every: a grid of samples */
} cadence;

static inline cadence cadence_after_step(const training_config *tc, uint64_t step) {
    cadence c;
    int last = (long)step == tc->steps;
    c.log = tc->log_every > 0 && (step % (uint64_t)tc->log_every == 0 || last);
    c.checkpoint = tc->checkpoint_every > 0 && step % (uint64_t)tc->checkpoint_every == 0 && !last;
    c.eval = tc->eval_every > 0 && step % (uint64_t)tc->eval_every == 0;
    c.sample = tc->sample_every > 0 && step % (uint64_t)tc->sample_every == 0;
    return c;
}

/* Whether the run trains no further from `step`: its steps are done or a stop was
 * requested. *stopping says it stops early (a signal before training.steps). */
static inline int cadence_done(const training_config *tc, uint64_t step, int stop_requested,
                               int *stopping) {
    *stopping = stop_requested && (long)step < tc->steps;
    return (long)step >= tc->steps || stop_requested;
}

#endif
