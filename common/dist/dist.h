/* What the roles of distributed training speak, below both sides (coordinator/
 * and worker/ include this, never each other): the layout of ranks and parameter
 * chunks, the named control message, deadlines, liveness checks and the
 * parameter and state transfers. Rank 0 is the coordinator and server shard 0,
 * ranks 1..S-1 are further server shards, ranks S..N-1 workers.
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
 * The small messages are point-to-point, so that a wait knows which rank it waits
 * for (a collective cannot say who is missing): the control word and the work go
 * from rank 0 to each rank (the work and the pushes by MPI_Issend, complete only
 * once that rank has taken them), the shards' squared norms from each shard to
 * each shard. The parameters stay a per-chunk MPI_Ibcast from the owner: a tree or
 * scatter + allgather moves each chunk over every link about once, where sends to
 * each rank would cost the owner N - 1 copies; a broadcast's time-out checks the
 * liveness of every rank instead.
 *
 * Every wait has a deadline (distributed.timeout_s). When it passes, the waiting
 * rank pings the ranks it still waits for (every wait loop answers pings): a rank
 * that does not answer within the grace (DIST_GRACE_S, at most timeout_s) is
 * stopped, dead or too slow, and is named with its role, the phase and the step,
 * and the job is aborted; a rank that answers is alive and itself waits for
 * someone (whose own deadline names the culprit), so the wait goes on, up to
 * DIST_MAX_ROUNDS deadlines. A silent rank is thus named within
 * timeout_s + grace of the phase it should have taken part in. */
#ifndef DDPM_DIST_H
#define DDPM_DIST_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dist/faults.h"

/* Exit codes a launcher can act on (ddpm-train's; the control message carries them). */
enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_PREEMPTED = 3 };

enum {
    TAG_WORK = 11, TAG_GRAD = 12, TAG_STATE = 13,
    TAG_CTL = 14,   /* control word, rank 0 -> each rank */
    TAG_NORM = 16,  /* a shard's sum of squared gradients, shard -> each shard */
    TAG_PING = 17, TAG_PONG = 18 /* liveness check on a time-out */
};

/* Seconds a rank has to answer a ping once a deadline has passed (at most
 * timeout_s), and how many deadlines a wait on live ranks may last. */
#define DIST_GRACE_S 2.0
#define DIST_MAX_ROUNDS 4

/* The control message rank 0 sends every rank before each step: train step `step`
 * (counted from 0, the updates done so far) or stop; a stop carries the exit code
 * and whether rank 0 writes a final checkpoint (the ranks then wait for it). */
enum { DIST_CTL_STEP = 1, DIST_CTL_STOP = 2 };
typedef struct {
    uint64_t step;
    int action;            /* DIST_CTL_STEP or DIST_CTL_STOP */
    int exit_code;         /* with DIST_CTL_STOP: 0..255 */
    int final_checkpoint;  /* with DIST_CTL_STOP: 0 or 1 */
} dist_control;


typedef struct {
    int rank, world;
    int S, W;                 /* server shards, workers */
    int shard;                /* this rank's shard index, or -1 */
    int worker;               /* this rank's worker index, or -1 */
    int n_chunks;
    uint64_t *chunk_off, *chunk_cnt;
    double timeout_s;
    double grace_s;           /* min(DIST_GRACE_S, timeout_s) */
    uint64_t step;            /* for messages: the step in progress, counted from 1 as
                               * the log does (at a checkpoint: its step); 0 at start-up */
    dist_faults faults;       /* test-only (dist_faults_none() by dist_layout_init) */
} dist_layout;

/* Requests that each complete when one named rank has done its part (sent or taken
 * one message), so that a wait that times out can name the ranks. */
typedef struct {
    MPI_Request *reqs;
    int *peer;                /* the rank reqs[i] waits for */
    int *chunk;               /* the chunk reqs[i] carries, or -1 */
    int n, cap;
} dist_reqs;

/* The peer of a collective's request: on a time-out every other rank is checked. */
#define DIST_ALL_RANKS (-1)
/* A new request slot for `peer` (a rank or DIST_ALL_RANKS; and chunk, or -1), to be
 * filled by MPI_I*. */
MPI_Request *dist_reqs_add(dist_reqs *q, int peer, int chunk);
/* Waits for every request (see the top: deadline, ping, name). On success the set
 * is empty again. -1 with err_msg() naming the rank(s), the phase and d->step. */
int dist_reqs_wait(const dist_layout *d, dist_reqs *q, const char *phase);
/* The same for the first n requests only (the rest stay posted; completed ones
 * become MPI_REQUEST_NULL, so a later wait skips them); the set keeps its size. */
int dist_reqs_wait_first(const dist_layout *d, dist_reqs *q, int n, const char *phase);
void dist_reqs_free(dist_reqs *q);
/* "worker 1", "server shard 1", "coordinator and server shard 0". */
const char *dist_role(const dist_layout *d, int rank, char *buf, size_t len);
/* After a deadline passed while waiting for `ranks` (n of them; chunk[i] or -1 says
 * what each owes, chunk may be NULL) in `phase` since `since`: pings them. 0 when
 * all answer (keep waiting, with a new deadline), -1 with err_msg() naming the
 * silent ones, or all of them once DIST_MAX_ROUNDS deadlines have passed. */
int dist_blame(const dist_layout *d, int n, const int *ranks, const int *chunk,
               const char *phase, double since);
/* Answers any pending ping (every wait loop calls it; it looks at most every 5 ms). */
void dist_serve_pings(void);
/* Test-only: acts on d->faults at `phase` (see dist_faults). */
void dist_test_hook(const dist_layout *d, const char *phase);

/* Chunks of the flat parameter buffer: DIST_CHUNK_FLOATS floats each (the last
 * shorter), so pushes can start while backward still runs. */
#define DIST_CHUNK_FLOATS ((size_t)1 << 18)

/* The roles of rank `rank` of `world` with S server shards (S >= world: no worker). */
static inline int dist_is_server(int rank, int S) { return rank < S; }
/* 0 when S server shards leave at least one worker among `world` ranks, else -1
 * with err_msg() saying so (ranks = server shards + workers). */
int dist_check_servers(int S, int world);
/* d->rank, d->world from MPI_COMM_WORLD; -1 with err_msg() unless dist_check_servers. */
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

/* Logs "ddpm-train: rank R: <err_msg()>" and aborts the whole job (exit 1). */
void dist_fail(const dist_layout *d) __attribute__((noreturn));
/* Waits for one request until the deadline (answering pings); 0, or -1 on time-out. */
int dist_wait(MPI_Request *req, double timeout_s);
/* Receives one message of up to max_len bytes from `source` (or MPI_ANY_SOURCE) with
 * `tag` before the deadline into *buf (grown as needed), answering pings. *from gets
 * the sender. 0; 1 on time-out; -1 (err_msg() names the sender) when the message is
 * larger than max_len, checked before anything is allocated. */
int dist_recv_any(int source, int tag, double deadline, size_t max_len, uint8_t **buf,
                  size_t *cap, int *len, int *from);
/* The largest GradientPush of a chunk of n floats: the payload (fp32: 4n; zstd frames
 * are at most 4n + 4n/256 + a few hundred bytes) and the message's fields. */
static inline size_t dist_push_max_bytes(size_t n) { return 4 * n + n / 8 + 4096; }
/* The largest WorkAssignment of a batch of B items (at most 21 bytes an item). */
static inline size_t dist_work_max_bytes(size_t B) { return 32 * B + 256; }

/* Every rank: rank 0's control message for the next step (rank 0 sends *c, the
 * others receive into it); aborts the job naming the rank that did not take part
 * in time, or, on the receivers, a message that is not {d->step - 1, STEP or STOP,
 * exit code 0..255, 0 or 1}. */
void dist_exchange_control(const dist_layout *d, dist_control *c);
/* Every rank: the parameters of every chunk from its owner (owner shard), or from
 * rank 0 for all chunks when from_rank0 is set (start and resume): one MPI_Ibcast
 * per chunk, each request tagged with its chunk. dist_bcast_params waits for all;
 * dist_bcast_start only posts them (request k = chunk k, appended to q), so that a
 * worker can wait for the first chunks only (dist_reqs_wait_first with
 * dist_bcast_chunks_below) and start the next forward while later chunks arrive.
 * Every rank must post the broadcasts of a step at the same point of its sequence
 * of collectives, and must not touch params (as root: change; else: read) in a
 * chunk before its request has completed. */
void dist_bcast_start(const dist_layout *d, float *params, int from_rank0, dist_reqs *q);
int dist_bcast_params(const dist_layout *d, float *params, int from_rank0);
/* How many chunks (from chunk 0) cover the parameters at offsets below `offset`. */
int dist_bcast_chunks_below(const dist_layout *d, size_t offset);
/* The optimizer state of the shards' chunks, n_bufs whole-model buffers (EMA, Adam
 * m, Adam v) on rank 0 and on each shard: scatter sends rank 0's chunks of shards
 * 1..S-1 to their owners (start and resume), gather brings them to rank 0 (before a
 * checkpoint). Server ranks only. */
int dist_scatter_state(const dist_layout *d, float *const *bufs, int n_bufs);
int dist_gather_state(const dist_layout *d, float *const *bufs, int n_bufs);
/* The same gather for another purpose, named `phase` in its errors (the EMA
 * before rank 0 draws training.sample_every's grid). */
int dist_gather_buffers(const dist_layout *d, float *const *bufs, int n_bufs, const char *phase);
/* Every rank, after its loop: waits until rank 0 has finished its final checkpoint,
 * so that no rank exits (and makes mpirun end the job) while rank 0 still writes.
 * Waits at most wait_s; a rank that gives up says so and exits with its code. */
void dist_final_barrier(const dist_layout *d, double wait_s);

#endif
