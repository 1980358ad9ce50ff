/* A worker: the model, its gradients and its data. Given a step's items (its share
 * of the global batch), it computes the gradients of L_simple; in a distributed run
 * it also takes its work from rank 0, pushes each parameter chunk to the chunk's
 * owner shard as soon as backward has finished it, and takes the new parameters by
 * broadcast. A single process runs the same worker on the whole batch, over the
 * shard's buffers. Nothing here knows the coordinator: the two speak through
 * common/dist. */
#ifndef DDPM_WORKER_H
#define DDPM_WORKER_H

#include <stdint.h>

#include "common/config/config.h"
#include "common/data/dataset.h"
#include "common/data/prefetch.h"
#include "common/diffusion/diffusion.h"
#include "common/dist/dist.h"
#include "common/model/unet.h"
#include "common/train/batch.h"
#include "common/train/grad.h"

typedef struct {
    const config *cfg;         /* borrowed */
    uint64_t dataset_size;
    unet *model;               /* borrowed (training model: micro-batch, with backward) */
    size_t P;
    float *params, *grads;     /* P floats; owned when own_buffers */
    int own_buffers;
    grad_worker gw;
    /* shards data: the next step's records are read ahead (prefetcher owned) with
     * a planner of its own, or the coordinator's in a single process */
    prefetcher *pf;
    batch_planner *bp, own_bp;
    batch_item *next_items;
    int primed;
    const char *timeline;      /* distributed: DDPM_TIMELINE's prefix, or NULL */
} worker;

/* ds and model are borrowed. params/grads: P floats to borrow (a single process
 * passes the shard's), or NULL to own them. bp: a planner to borrow for reading
 * ahead, or NULL to make one. 0, or -1 with err_msg(). */
int worker_init(worker *w, const config *cfg, dataset *ds, uint64_t dataset_size, unet *model,
                const diffusion *diff, int micro, float *params, float *grads,
                batch_planner *bp);
/* Step `step`'s gradients over items (n of the global batch of B, of which this
 * worker's share starts at share_start) into w->grads (zeroed first), and the loss
 * statistics into *st. Reads the next step's share ahead where the data is shards. */
int worker_compute(worker *w, uint64_t step, const batch_item *items, int n, int share_start,
                   loss_stats *st);
/* The distributed loop, from step `step` until rank 0 says stop (its exit code in
 * *exit_code); a failure aborts the job (dist_fail). */
int worker_run(worker *w, dist_layout *d, uint64_t step, int *exit_code);
void worker_free(worker *w);

#endif
