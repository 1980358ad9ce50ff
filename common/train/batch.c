#include "common/train/batch.h"

#include <stdlib.h>

#include "common/core/util.h"
#include "common/rng/rng.h"

int batch_planner_init(batch_planner *bp, uint64_t seed, uint64_t dataset_size, int batch, int T,
                       timestep_sampler sampler, int random_flip) {
    if (dataset_size == 0) return err_set("dataset is empty");
    if (dataset_size > UINT32_MAX) return err_set("dataset has more than 2^32 records");
    if (batch < 1 || T < 1) return err_set("batch size and timesteps must be positive");
    bp->seed = seed;
    bp->dataset_size = dataset_size;
    bp->batch = batch;
    bp->T = T;
    bp->sampler = sampler;
    bp->random_flip = random_flip;
    for (int i = 0; i < 2; i++) {
        bp->cached_epoch[i] = UINT64_MAX;
        bp->perm[i] = xmalloc(dataset_size * sizeof(uint32_t));
    }
    bp->next_slot = 0;
    return 0;
}

void batch_planner_free(batch_planner *bp) {
    for (int i = 0; i < 2; i++) {
        free(bp->perm[i]);
        bp->perm[i] = NULL;
    }
}

static const uint32_t *epoch_perm(batch_planner *bp, uint64_t epoch) {
    for (int i = 0; i < 2; i++)
        if (bp->cached_epoch[i] == epoch) return bp->perm[i];
    int s = bp->next_slot;
    bp->next_slot ^= 1;
    rng_key key = {bp->seed, epoch, 0, RNG_PURPOSE_PERMUTATION};
    rng_permutation(&key, bp->perm[s], (uint32_t)bp->dataset_size);
    bp->cached_epoch[s] = epoch;
    return bp->perm[s];
}

void batch_plan(batch_planner *bp, uint64_t step, batch_item *items) {
    uint64_t B = (uint64_t)bp->batch;
    for (uint64_t i = 0; i < B; i++) {
        uint64_t pos = step * B + i;
        uint64_t epoch = pos / bp->dataset_size;
        const uint32_t *perm = epoch_perm(bp, epoch);
        batch_item *it = &items[i];
        it->sample_id = pos;
        it->index = perm[pos % bp->dataset_size];
        rng_key kt = {bp->seed, step, pos, RNG_PURPOSE_TIMESTEP};
        if (bp->sampler == TIMESTEP_STRATIFIED) {
            /* one draw per equal stratum of 0..T-1 across the global batch */
            uint64_t lo = i * (uint64_t)bp->T / B, hi = (i + 1) * (uint64_t)bp->T / B;
            if (hi <= lo) hi = lo + 1;
            it->t = (int)(lo + rng_below(&kt, 0, (uint32_t)(hi - lo)));
        } else {
            it->t = (int)rng_below(&kt, 0, (uint32_t)bp->T);
        }
        if (bp->random_flip) {
            rng_key kf = {bp->seed, step, pos, RNG_PURPOSE_FLIP};
            it->flip = (uint8_t)(rng_u32(&kf, 0) & 1u);
        } else {
            it->flip = 0;
        }
    }
}

void batch_cursor(const batch_planner *bp, uint64_t steps, uint64_t *epoch, uint64_t *position) {
    uint64_t pos = steps * (uint64_t)bp->batch;
    *epoch = pos / bp->dataset_size;
    *position = pos % bp->dataset_size;
}
