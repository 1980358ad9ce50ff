/* Distributed training over MPI (DESIGN §2, §4): rank 0 is the coordinator and
 * server shard 0, ranks 1..S-1 are further server shards, ranks S..N-1 workers.
 *
 * Per step, all ranks in lockstep:
 *   1. rank 0 broadcasts a control word (train one step / stop);
 *   2. rank 0 sends each worker a WorkAssignment (its sample ids, records,
 *      timesteps, flips); the first B mod W workers get one sample more;
 *   3. workers compute gradients and push each parameter chunk to its owner shard
 *      (chunk k belongs to shard k mod S) as soon as backward has finished it;
 *   4. shards sum the pushes, reduce the squared norm across shards, clip, apply
 *      Adam and the EMA to their chunks, and every chunk is broadcast from its owner;
 *   5. rank 0 logs; at checkpoint steps it gathers the EMA and Adam state from the
 *      shards and writes the checkpoint.
 * Every wait has a deadline (distributed.timeout_s): a rank that sends nothing in
 * time is named and the job is aborted, never left hanging. */
#ifndef DDPM_DIST_H
#define DDPM_DIST_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "trainer.h"

enum { TAG_WORK = 11, TAG_GRAD = 12, TAG_STATE = 13 };

/* The control word rank 0 broadcasts before each step: {step, action, exit code,
 * write a final checkpoint} (the last two matter with DIST_CTL_STOP only). */
enum { DIST_CTL_STEP = 1, DIST_CTL_STOP = 2, DIST_CTL_LEN = 4 };

typedef struct {
    int rank, world;
    int S, W;                 /* server shards, workers */
    int shard;                /* this rank's shard index, or -1 */
    int worker;               /* this rank's worker index, or -1 */
    MPI_Comm servers;         /* the server ranks' communicator (MPI_COMM_NULL elsewhere) */
    int n_chunks;
    uint64_t *chunk_off, *chunk_cnt;
    double timeout_s;
} dist_layout;

/* Chunks of the flat parameter buffer: DIST_CHUNK_FLOATS floats each (the last
 * shorter), so pushes can start while backward still runs. */
#define DIST_CHUNK_FLOATS ((size_t)1 << 18)

int dist_layout_init(dist_layout *d, int S, size_t n_params, double timeout_s);
void dist_layout_free(dist_layout *d);
static inline int dist_chunk_owner(const dist_layout *d, int k) { return k % d->S; }
static inline int dist_worker_rank(const dist_layout *d, int w) { return d->S + w; }
/* Worker w's share of a global batch of B: the first B mod W workers get one more. */
static inline void dist_share(int B, int W, int w, int *start, int *n) {
    int base = B / W, extra = B % W;
    *n = base + (w < extra ? 1 : 0);
    *start = w * base + (w < extra ? w : extra);
}

/* Prints "ddpm-train: rank R: <err_msg()>" and aborts the whole job (exit 1). */
void dist_fail(const dist_layout *d) __attribute__((noreturn));
/* Waits for one request until the deadline; 0, or -1 on time-out. */
int dist_wait(MPI_Request *req, double timeout_s);
/* Waits for all; 0, or -1 on time-out. */
int dist_wait_all(int n, MPI_Request *reqs, double timeout_s);
/* Receives one message of any size from `source` (or MPI_ANY_SOURCE) with `tag` before
 * the deadline into *buf (grown as needed). *from gets the sender. 0 or -1 (time-out). */
int dist_recv_any(int source, int tag, double deadline, uint8_t **buf, size_t *cap, int *len,
                  int *from);

/* Every rank: rank 0's control word (DIST_CTL_LEN values) for the next step; aborts
 * the job if it does not come within the deadline. */
void dist_bcast_control(const dist_layout *d, int64_t *ctl);
/* Every rank: the parameters of every chunk from its owner (root = owner shard),
 * or from rank 0 for all chunks when from_rank0 is set (start and resume). */
int dist_bcast_params(const dist_layout *d, float *params, int from_rank0);
/* Rank 0 sends each shard its chunks of EMA and Adam m/v (start and resume). */
int dist_scatter_state(const dist_layout *d, trainer *tr);
/* Shards send rank 0 their chunks of EMA and Adam m/v (before a checkpoint). */
int dist_gather_state(const dist_layout *d, trainer *tr);

/* The roles' loops. Return 0 when the run is over (exit code in *exit_code). */
int dist_serve(trainer *tr, dist_layout *d, int *exit_code);
int dist_work(trainer *tr, dist_layout *d, int *exit_code);
/* Every rank, after its loop: waits until rank 0 has finished its final checkpoint,
 * so that no rank exits (and makes mpirun end the job) while rank 0 still writes.
 * Waits at most wait_s; a rank that gives up says so and exits with its code. */
void dist_final_barrier(const dist_layout *d, double wait_s);

#endif
