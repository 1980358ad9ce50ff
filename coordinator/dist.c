/* Distributed plumbing shared by the coordinator, the shards and the workers. */
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/core/util.h"

int dist_layout_init(dist_layout *d, int S, size_t n_params, double timeout_s) {
    memset(d, 0, sizeof *d);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->world);
    d->servers = MPI_COMM_NULL;
    if (S < 1 || S >= d->world)
        return err_set("distributed.servers is %d but %d ranks were started: there must be at "
                       "least one server shard and one worker (ranks = servers + workers)",
                       S, d->world);
    d->S = S;
    d->W = d->world - S;
    d->shard = d->rank < S ? d->rank : -1;
    d->worker = d->rank >= S ? d->rank - S : -1;
    d->timeout_s = timeout_s;
    MPI_Comm_split(MPI_COMM_WORLD, d->shard >= 0 ? 0 : MPI_UNDEFINED, d->rank, &d->servers);
    d->n_chunks = (int)((n_params + DIST_CHUNK_FLOATS - 1) / DIST_CHUNK_FLOATS);
    d->chunk_off = xcalloc((size_t)d->n_chunks, sizeof *d->chunk_off);
    d->chunk_cnt = xcalloc((size_t)d->n_chunks, sizeof *d->chunk_cnt);
    for (int k = 0; k < d->n_chunks; k++) {
        d->chunk_off[k] = (uint64_t)k * DIST_CHUNK_FLOATS;
        uint64_t end = d->chunk_off[k] + DIST_CHUNK_FLOATS;
        d->chunk_cnt[k] = (end > n_params ? n_params : end) - d->chunk_off[k];
    }
    return 0;
}

void dist_layout_free(dist_layout *d) {
    if (d->n_chunks == 0) return; /* never initialised (single process) */
    if (d->servers != MPI_COMM_NULL) MPI_Comm_free(&d->servers);
    free(d->chunk_off);
    free(d->chunk_cnt);
    memset(d, 0, sizeof *d);
}

void dist_fail(const dist_layout *d) {
    fprintf(stderr, "ddpm-train: rank %d: %s\n", d->rank, err_msg());
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, EXIT_ERROR);
    exit(EXIT_ERROR);
}

static void pause_briefly(void) {
    struct timespec ts = {0, 50000}; /* 50 us: keeps polling cheap */
    nanosleep(&ts, NULL);
}

int dist_wait(MPI_Request *req, double timeout_s) {
    double deadline = now_seconds() + timeout_s;
    for (;;) {
        int done = 0;
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) return 0;
        if (now_seconds() > deadline) return -1;
        pause_briefly();
    }
}

int dist_wait_all(int n, MPI_Request *reqs, double timeout_s) {
    double deadline = now_seconds() + timeout_s;
    for (;;) {
        int done = 0;
        MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
        if (done) return 0;
        if (now_seconds() > deadline) return -1;
        pause_briefly();
    }
}

int dist_recv_any(int source, int tag, double deadline, uint8_t **buf, size_t *cap, int *len,
                  int *from) {
    MPI_Status st;
    for (;;) {
        int flag = 0;
        MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, &st);
        if (flag) break;
        if (now_seconds() > deadline) return -1;
        pause_briefly();
    }
    int n = 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    if ((size_t)n > *cap) {
        *cap = (size_t)n;
        *buf = xrealloc(*buf, *cap);
    }
    MPI_Recv(*buf, n, MPI_BYTE, st.MPI_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    *len = n;
    *from = st.MPI_SOURCE;
    return 0;
}

void dist_bcast_control(const dist_layout *d, int64_t *ctl) {
    MPI_Request r;
    MPI_Ibcast(ctl, DIST_CTL_LEN, MPI_INT64_T, 0, MPI_COMM_WORLD, &r);
    if (dist_wait(&r, d->timeout_s) != 0) {
        err_set("no step control from rank 0 within %g s", d->timeout_s);
        dist_fail(d);
    }
}

int dist_bcast_params(const dist_layout *d, float *params, int from_rank0) {
    MPI_Request *reqs = xcalloc((size_t)d->n_chunks, sizeof *reqs);
    for (int k = 0; k < d->n_chunks; k++)
        MPI_Ibcast(params + d->chunk_off[k], (int)d->chunk_cnt[k], MPI_FLOAT,
                   from_rank0 ? 0 : dist_chunk_owner(d, k), MPI_COMM_WORLD, &reqs[k]);
    int rc = dist_wait_all(d->n_chunks, reqs, d->timeout_s);
    free(reqs);
    if (rc != 0)
        return err_set("the parameter broadcast did not complete within %g s "
                       "(distributed.timeout_s): a rank died or hangs", d->timeout_s);
    return 0;
}

/* The three per-shard state buffers, in a fixed order. */
static float **state_buffers(trainer *tr, float *bufs[3]) {
    bufs[0] = tr->ema;
    bufs[1] = tr->adam_m;
    bufs[2] = tr->adam_v;
    return bufs;
}

int dist_scatter_state(const dist_layout *d, trainer *tr) {
    float *bufs[3];
    state_buffers(tr, bufs);
    for (int k = 0; k < d->n_chunks; k++) {
        int owner = dist_chunk_owner(d, k);
        if (owner == 0) continue;
        for (int b = 0; b < 3; b++) {
            if (d->rank == 0) {
                MPI_Send(bufs[b] + d->chunk_off[k], (int)d->chunk_cnt[k], MPI_FLOAT, owner,
                         TAG_STATE, MPI_COMM_WORLD);
            } else if (d->rank == owner) {
                MPI_Request r;
                MPI_Irecv(bufs[b] + d->chunk_off[k], (int)d->chunk_cnt[k], MPI_FLOAT, 0,
                          TAG_STATE, MPI_COMM_WORLD, &r);
                if (dist_wait(&r, d->timeout_s) != 0)
                    return err_set("rank 0 sent no optimizer state within %g s", d->timeout_s);
            }
        }
    }
    return 0;
}

int dist_gather_state(const dist_layout *d, trainer *tr) {
    float *bufs[3];
    state_buffers(tr, bufs);
    for (int k = 0; k < d->n_chunks; k++) {
        int owner = dist_chunk_owner(d, k);
        if (owner == 0) continue;
        for (int b = 0; b < 3; b++) {
            if (d->rank == owner) {
                MPI_Send(bufs[b] + d->chunk_off[k], (int)d->chunk_cnt[k], MPI_FLOAT, 0,
                         TAG_STATE, MPI_COMM_WORLD);
            } else if (d->rank == 0) {
                MPI_Request r;
                MPI_Irecv(bufs[b] + d->chunk_off[k], (int)d->chunk_cnt[k], MPI_FLOAT, owner,
                          TAG_STATE, MPI_COMM_WORLD, &r);
                if (dist_wait(&r, d->timeout_s) != 0)
                    return err_set("server shard rank %d sent no optimizer state for the "
                                   "checkpoint within %g s", owner, d->timeout_s);
            }
        }
    }
    return 0;
}

void dist_final_barrier(const dist_layout *d, double wait_s) {
    MPI_Request r;
    MPI_Ibarrier(MPI_COMM_WORLD, &r);
    if (dist_wait(&r, wait_s) != 0)
        log_warn("rank %d: rank 0 did not finish its final checkpoint within %g s; leaving "
                 "without waiting for it", d->rank, wait_s);
}
