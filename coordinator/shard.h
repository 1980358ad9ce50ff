/* A server shard: the optimizer's state of the chunks it owns (a single process
 * owns the whole model as one range) and the one optimizer step over them. The
 * buffers are whole-model sized (P floats, indexed by the chunks' offsets): a
 * shard's params also receive every other shard's chunks by broadcast, and rank 0's
 * EMA and Adam buffers collect the other shards' chunks for a checkpoint. */
#ifndef DDPM_SHARD_H
#define DDPM_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "common/dist/dist.h"
#include "common/optim/optim.h"

typedef struct {
    size_t P;
    optim_config oc;
    float *params, *grads, *adam_m, *adam_v, *ema;  /* P floats each (owned) */
    optim_range *owned;                               /* the ranges this shard updates */
    int n_owned;
} shard;

/* d NULL: a single process, owning [0, P) as one range; else the chunks of
 * d->shard. */
void shard_init(shard *s, size_t P, const optim_config *oc, const dist_layout *d);
/* The sum of squared gradients over the owned ranges. */
double shard_sum_squares(const shard *s);
/* Algorithm 1's update of the owned ranges after `step` updates: clip by
 * global_norm, Adam, EMA (optim_ranges_update). */
void shard_update(shard *s, uint64_t step, double global_norm);
/* The EMA and Adam buffers, in the order the state transfers use. */
static inline int shard_state_buffers(shard *s, float *bufs[3]) {
    bufs[0] = s->ema;
    bufs[1] = s->adam_m;
    bufs[2] = s->adam_v;
    return 3;
}
void shard_free(shard *s);

#endif
