/* Distributed plumbing shared by the coordinator, the shards and the workers. */
#include "common/dist/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "common/core/util.h"

int dist_check_servers(int S, int world) {
    if (S < 1 || S >= world)
        return err_set("distributed.servers is %d but %d ranks were started: ranks = server "
                       "shards + workers, with at least one server shard and at least one worker",
                       S, world);
    return 0;
}

int dist_layout_init(dist_layout *d, int S, size_t n_params, double timeout_s) {
    memset(d, 0, sizeof *d);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->world);
    if (dist_check_servers(S, d->world) != 0) return -1;
    d->S = S;
    d->W = d->world - S;
    d->faults = dist_faults_none();
    d->shard = dist_is_server(d->rank, S) ? d->rank : -1;
    d->worker = d->rank >= S ? d->rank - S : -1;
    d->timeout_s = timeout_s;
    d->grace_s = timeout_s < DIST_GRACE_S ? timeout_s : DIST_GRACE_S;
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
    free(d->chunk_off);
    free(d->chunk_cnt);
    memset(d, 0, sizeof *d);
}

void dist_fail(const dist_layout *d) {
    log_error("ddpm-train: rank %d: %s", d->rank, err_msg());
    MPI_Abort(MPI_COMM_WORLD, EXIT_ERROR);
    exit(EXIT_ERROR);
}

static void pause_briefly(void) {
    struct timespec ts = {0, 50000}; /* 50 us: keeps polling cheap */
    nanosleep(&ts, NULL);
}

void dist_serve_pings(void) {
    /* a ping needs an answer within the grace (seconds), so look every 5 ms: an
     * extra probe on every 50 us poll would double the pollers' CPU, which the
     * workers share on an oversubscribed node */
    static double last;
    double now = now_seconds();
    if (now - last < 0.005) return;
    last = now;
    for (;;) {
        int flag = 0;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_PING, MPI_COMM_WORLD, &flag, &st);
        if (!flag) return;
        uint64_t seq = 0;
        MPI_Recv(&seq, 1, MPI_UINT64_T, st.MPI_SOURCE, TAG_PING, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
        /* 8 bytes go eagerly: this returns even if the pinger has gone */
        MPI_Send(&seq, 1, MPI_UINT64_T, st.MPI_SOURCE, TAG_PONG, MPI_COMM_WORLD);
    }
}

const char *dist_role(const dist_layout *d, int rank, char *buf, size_t len) {
    if (rank == 0)
        snprintf(buf, len, "coordinator and server shard 0");
    else if (rank < d->S)
        snprintf(buf, len, "server shard %d", rank);
    else
        snprintf(buf, len, "worker %d", rank - d->S);
    return buf;
}

MPI_Request *dist_reqs_add(dist_reqs *q, int peer, int chunk) {
    if (q->n == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 16;
        q->reqs = xrealloc(q->reqs, (size_t)q->cap * sizeof *q->reqs);
        q->peer = xrealloc(q->peer, (size_t)q->cap * sizeof *q->peer);
        q->chunk = xrealloc(q->chunk, (size_t)q->cap * sizeof *q->chunk);
    }
    q->peer[q->n] = peer;
    q->chunk[q->n] = chunk;
    q->reqs[q->n] = MPI_REQUEST_NULL;
    return &q->reqs[q->n++];
}

void dist_reqs_free(dist_reqs *q) {
    free(q->reqs);
    free(q->peer);
    free(q->chunk);
    memset(q, 0, sizeof *q);
}

/* Pings every rank in ranks[] and waits up to the grace for the answers, answering
 * pings itself meanwhile (two ranks may ping each other). silent[i] is set for the
 * ranks that did not answer; returns how many. */
static int ping(const dist_layout *d, int n, const int *ranks, uint8_t *silent) {
    static uint64_t seq;
    seq++;
    MPI_Request *reqs = xcalloc((size_t)n, sizeof *reqs);
    uint64_t *got = xcalloc((size_t)n, sizeof *got);
    for (int i = 0; i < n; i++) {
        MPI_Irecv(&got[i], 1, MPI_UINT64_T, ranks[i], TAG_PONG, MPI_COMM_WORLD, &reqs[i]);
        MPI_Send(&seq, 1, MPI_UINT64_T, ranks[i], TAG_PING, MPI_COMM_WORLD);
    }
    double deadline = now_seconds() + d->grace_s;
    int left = n;
    for (int i = 0; i < n; i++) silent[i] = 1;
    while (left > 0 && now_seconds() <= deadline) {
        dist_serve_pings();
        for (int i = 0; i < n; i++) {
            int done = 0;
            if (!silent[i]) continue;
            MPI_Test(&reqs[i], &done, MPI_STATUS_IGNORE);
            if (done) {
                silent[i] = 0;
                left--;
            }
        }
        if (left > 0) pause_briefly();
    }
    for (int i = 0; i < n; i++)
        if (silent[i]) { /* the job is about to be aborted; leave nothing posted */
            MPI_Cancel(&reqs[i]);
            MPI_Request_free(&reqs[i]);
        }
    free(reqs);
    if (left == 0) free(got); /* else a cancelled receive might still own it */
    return left;
}

int dist_blame(const dist_layout *d, int n, const int *ranks, const int *chunk,
               const char *phase, double since) {
    /* each rank once; its first chunk names what it owes */
    int *uniq = xcalloc((size_t)n + 1, sizeof *uniq), *what = xcalloc((size_t)n + 1, sizeof *what);
    int m = 0;
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < m && uniq[j] != ranks[i]) j++;
        if (j == m) {
            uniq[m] = ranks[i];
            what[m++] = chunk ? chunk[i] : -1;
        }
    }
    uint8_t *silent = xcalloc((size_t)m + 1, 1);
    double waited = now_seconds() - since;
    int n_silent = ping(d, m, uniq, silent);
    int rounds_over = waited >= DIST_MAX_ROUNDS * d->timeout_s;
    int rc = 0;
    if (n_silent > 0 || rounds_over) {
        char list[512] = "", role[64];
        size_t used = 0;
        int listed = 0;
        for (int j = 0; j < m && used < sizeof list - 96; j++) {
            if (n_silent > 0 && !silent[j]) continue;
            char it[32] = "";
            if (what[j] >= 0) snprintf(it, sizeof it, "; chunk %d", what[j]);
            used += (size_t)snprintf(list + used, sizeof list - used, "%srank %d (%s%s)",
                                     listed ? ", " : "", uniq[j],
                                     dist_role(d, uniq[j], role, sizeof role), it);
            listed++;
        }
        char at[48] = "";
        if (d->step > 0) snprintf(at, sizeof at, " of step %llu", (unsigned long long)d->step);
        if (n_silent > 0)
            rc = err_set("%s%s: %s did not take part within %.1f s (distributed.timeout_s) and "
                         "did not answer a liveness check within %.1f s: stopped, dead or too "
                         "slow", phase, at, list, waited, d->grace_s);
        else
            rc = err_set("%s%s: %s answer(s) liveness checks but did not take part within "
                         "%.1f s (%d x distributed.timeout_s)", phase, at, list, waited,
                         DIST_MAX_ROUNDS);
    }
    free(uniq);
    free(what);
    free(silent);
    return rc;
}

int dist_reqs_wait(const dist_layout *d, dist_reqs *q, const char *phase) {
    if (dist_reqs_wait_first(d, q, q->n, phase) != 0) return -1;
    q->n = 0;
    return 0;
}

int dist_reqs_wait_first(const dist_layout *d, dist_reqs *q, int n, const char *phase) {
    if (n > q->n) n = q->n;
    double start = now_seconds(), deadline = start + d->timeout_s;
    for (;;) {
        int done = 0;
        MPI_Testall(n, q->reqs, &done, MPI_STATUSES_IGNORE);
        if (done) break;
        dist_serve_pings();
        if (now_seconds() > deadline) {
            /* which are still pending: MPI_Test sets completed ones to NULL */
            size_t cap = (size_t)n + (size_t)d->world;
            int *who = xcalloc(cap, sizeof *who), *chunk = xcalloc(cap, sizeof *chunk);
            int m = 0, all = 0;
            for (int i = 0; i < n; i++) {
                int flag = 0;
                MPI_Test(&q->reqs[i], &flag, MPI_STATUS_IGNORE);
                if (flag) continue;
                if (q->peer[i] == DIST_ALL_RANKS) {
                    all = 1;
                    continue;
                }
                who[m] = q->peer[i];
                chunk[m++] = q->chunk[i];
            }
            for (int r = 0; all && r < d->world; r++) /* a collective: any rank may be it */
                if (r != d->rank) {
                    who[m] = r;
                    chunk[m++] = -1;
                }
            int rc = m ? dist_blame(d, m, who, chunk, phase, start) : 0;
            free(who);
            free(chunk);
            if (rc != 0) return -1;
            deadline = now_seconds() + d->timeout_s;
            continue;
        }
        pause_briefly();
    }
    return 0;
}

int dist_wait(MPI_Request *req, double timeout_s) {
    double deadline = now_seconds() + timeout_s;
    for (;;) {
        int done = 0;
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) return 0;
        dist_serve_pings();
        if (now_seconds() > deadline) return -1;
        pause_briefly();
    }
}

int dist_recv_any(int source, int tag, double deadline, size_t max_len, uint8_t **buf,
                  size_t *cap, int *len, int *from) {
    MPI_Status st;
    for (;;) {
        int flag = 0;
        MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, &st);
        if (flag) break;
        dist_serve_pings();
        if (now_seconds() > deadline) return 1;
        pause_briefly();
    }
    int n = 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    if (n < 0 || (size_t)n > max_len)
        return err_set("a message (tag %d) from rank %d of %d bytes, at most %zu expected", tag,
                       st.MPI_SOURCE, n, max_len);
    if ((size_t)n > *cap) {
        *cap = (size_t)n;
        *buf = xrealloc(*buf, *cap);
    }
    /* non-blocking, answering pings: a large message trickling in over a slow link
     * must not make this rank look dead to the ranks that wait for it */
    MPI_Request r;
    MPI_Irecv(*buf, n, MPI_BYTE, st.MPI_SOURCE, tag, MPI_COMM_WORLD, &r);
    for (;;) {
        int done = 0;
        MPI_Test(&r, &done, MPI_STATUS_IGNORE);
        if (done) break;
        dist_serve_pings();
        pause_briefly();
    }
    *len = n;
    *from = st.MPI_SOURCE;
    return 0;
}

void dist_exchange_control(const dist_layout *d, dist_control *c) {
    int64_t w[4] = {(int64_t)c->step, c->action, c->exit_code, c->final_checkpoint};
    dist_reqs q;
    memset(&q, 0, sizeof q);
    if (d->rank == 0) {
        for (int r = 1; r < d->world; r++)
            MPI_Isend(w, 4, MPI_INT64_T, r, TAG_CTL, MPI_COMM_WORLD, dist_reqs_add(&q, r, -1));
    } else {
        MPI_Irecv(w, 4, MPI_INT64_T, 0, TAG_CTL, MPI_COMM_WORLD, dist_reqs_add(&q, 0, -1));
    }
    int rc = dist_reqs_wait(d, &q, "step control from the coordinator");
    dist_reqs_free(&q);
    if (rc != 0) dist_fail(d);
    if (d->rank == 0) return;
    /* the step about to run is d->step (counted from 1), so the message carries d->step - 1 */
    if ((uint64_t)w[0] + 1 != d->step || (w[1] != DIST_CTL_STEP && w[1] != DIST_CTL_STOP) ||
        w[2] < 0 || w[2] > 255 || (w[3] != 0 && w[3] != 1)) {
        err_set("control message from rank 0: {%lld, %lld, %lld, %lld}; expected {step %llu, 1 "
                "(step) or 2 (stop), exit code 0..255, 0 or 1}", (long long)w[0], (long long)w[1],
                (long long)w[2], (long long)w[3], (unsigned long long)(d->step - 1));
        dist_fail(d);
    }
    c->step = (uint64_t)w[0];
    c->action = (int)w[1];
    c->exit_code = (int)w[2];
    c->final_checkpoint = (int)w[3];
}

void dist_bcast_start(const dist_layout *d, float *params, int from_rank0, dist_reqs *q) {
    /* a collective per chunk (Open MPI moves each chunk over every link about once,
     * where sends from the owner to each rank would cost the owner N - 1 copies); it
     * cannot say who is missing, so a time-out checks every rank's liveness. Posted
     * in chunk order, which is the forward's order of the parameters. */
    for (int k = 0; k < d->n_chunks; k++)
        MPI_Ibcast(params + d->chunk_off[k], (int)d->chunk_cnt[k], MPI_FLOAT,
                   from_rank0 ? 0 : dist_chunk_owner(d, k), MPI_COMM_WORLD,
                   dist_reqs_add(q, DIST_ALL_RANKS, k));
}

int dist_bcast_chunks_below(const dist_layout *d, size_t offset) {
    if (offset == 0) return 0;
    size_t k = (offset - 1) / DIST_CHUNK_FLOATS + 1;
    return k > (size_t)d->n_chunks ? d->n_chunks : (int)k;
}

int dist_bcast_params(const dist_layout *d, float *params, int from_rank0) {
    dist_reqs q;
    memset(&q, 0, sizeof q);
    dist_bcast_start(d, params, from_rank0, &q);
    int rc = dist_reqs_wait(d, &q, from_rank0 ? "parameters at start-up" : "parameter broadcast");
    dist_reqs_free(&q);
    return rc;
}

static int move_state(const dist_layout *d, float *const *bufs, int n_bufs, int to_shards,
                      const char *phase) {
    dist_reqs q;
    memset(&q, 0, sizeof q);
    for (int k = 0; k < d->n_chunks; k++) {
        int owner = dist_chunk_owner(d, k);
        if (owner == 0 || (d->rank != 0 && d->rank != owner)) continue;
        for (int b = 0; b < n_bufs; b++) {
            float *p = bufs[b] + d->chunk_off[k];
            int cnt = (int)d->chunk_cnt[k];
            int sending = (d->rank == 0) == to_shards, peer = d->rank == 0 ? owner : 0;
            MPI_Request *r = dist_reqs_add(&q, peer, k);
            if (sending)
                MPI_Issend(p, cnt, MPI_FLOAT, peer, TAG_STATE, MPI_COMM_WORLD, r);
            else
                MPI_Irecv(p, cnt, MPI_FLOAT, peer, TAG_STATE, MPI_COMM_WORLD, r);
        }
    }
    int rc = dist_reqs_wait(d, &q, phase);
    dist_reqs_free(&q);
    return rc;
}

int dist_scatter_state(const dist_layout *d, float *const *bufs, int n_bufs) {
    return move_state(d, bufs, n_bufs, 1, "optimizer state scatter at start-up");
}

int dist_gather_state(const dist_layout *d, float *const *bufs, int n_bufs) {
    return move_state(d, bufs, n_bufs, 0, "optimizer state gather for the checkpoint");
}

int dist_gather_buffers(const dist_layout *d, float *const *bufs, int n_bufs, const char *phase) {
    return move_state(d, bufs, n_bufs, 0, phase);
}

void dist_final_barrier(const dist_layout *d, double wait_s) {
    MPI_Request r;
    MPI_Ibarrier(MPI_COMM_WORLD, &r);
    if (dist_wait(&r, wait_s) != 0)
        log_warn("rank %d: rank 0 did not finish its final checkpoint within %g s; leaving "
                 "without waiting for it", d->rank, wait_s);
}

void dist_test_hook(const dist_layout *d, const char *phase) {
    const dist_faults *f = &d->faults;
    const char *want = f->hang_phase[0] ? f->hang_phase : "work";
    if (f->hang_rank == d->rank && f->hang_step == d->step && strcmp(want, phase) == 0) {
        log_error("ddpm-train: rank %d: test hook: stopping (SIGSTOP) at %s, step %llu", d->rank,
                  phase, (unsigned long long)d->step);
        raise(SIGSTOP);
    }
    if (f->crash_rank == d->rank && f->crash_step == d->step && strcmp(phase, "work") == 0)
        raise(SIGKILL);
}
