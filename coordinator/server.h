/* The server ranks of a distributed run: rank 0 (the coordinator and server shard
 * 0) and the further shards. Each step: rank 0 sends the control message and the
 * workers' shares; every shard sums the workers' pushes of its chunks, takes part in
 * the global norm, updates its chunks and broadcasts them; rank 0 logs, and at
 * checkpoint steps gathers the shards' state and writes it. */
#ifndef DDPM_SERVER_H
#define DDPM_SERVER_H

#include <stdint.h>

#include "common/config/config.h"
#include "common/diffusion/diffusion.h"
#include "common/dist/dist.h"
#include "coordinator/coordinator.h"
#include "coordinator/shard.h"

typedef struct {
    const config *cfg;     /* borrowed */
    shard *sh;             /* this rank's shard (borrowed) */
    coordinator *coord;    /* rank 0's coordinator (borrowed), NULL on other shards */
    uint64_t step;         /* updates done */
    const diffusion *diff; /* the schedule (training.sample_every's sampler) */
} server;

/* The loop, from sv->step until the run ends (exit code in *exit_code); a failure
 * aborts the job (dist_fail). */
int server_run(server *sv, dist_layout *d, int *exit_code);

#endif
