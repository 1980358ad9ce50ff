/* What each global batch of Algorithm 1 holds, as a pure function of (seed, step):
 * which dataset records, their timesteps, flips, and the sample ids that key every
 * random number drawn for them, so that results do not depend on how a batch is
 * split over workers and a resumed run continues exactly where it stopped.
 *
 * The sample stream is the concatenation of per-epoch permutations of the dataset
 * (epoch e's permutation keyed on (seed, e)); global batch s takes stream positions
 * s*B .. s*B+B-1, crossing epoch ends without dropping or padding. A sample's id is
 * its stream position, so noise, timestep, flip and dropout for it are the same
 * whichever rank computes it and however the batch is split. */
#ifndef DDPM_BATCH_H
#define DDPM_BATCH_H

#include <stddef.h>
#include <stdint.h>

typedef enum { TIMESTEP_UNIFORM = 0, TIMESTEP_STRATIFIED = 1 } timestep_sampler;


typedef struct {
    uint64_t seed;
    uint64_t dataset_size;
    int batch;
    int T;
    timestep_sampler sampler;
    int random_flip;
    /* two cached epoch permutations (a batch spans at most two epochs when B <= size) */
    uint64_t cached_epoch[2];
    uint32_t *perm[2];
    int next_slot;
} batch_planner;

typedef struct {
    uint64_t sample_id; /* stream position */
    uint32_t index;     /* dataset record */
    int t;              /* timestep index 0..T-1 */
    uint8_t flip;
} batch_item;

/* Returns 0, or -1 (err_msg) if the dataset is empty or too large for 32-bit indices. */
int batch_planner_init(batch_planner *bp, uint64_t seed, uint64_t dataset_size, int batch, int T,
                       timestep_sampler sampler, int random_flip);
void batch_planner_free(batch_planner *bp);
/* Fills items[0..batch-1] for global step `step`. */
void batch_plan(batch_planner *bp, uint64_t step, batch_item *items);
/* Data cursor after `steps` completed steps: epoch and position inside it. */
void batch_cursor(const batch_planner *bp, uint64_t steps, uint64_t *epoch, uint64_t *position);

#endif
