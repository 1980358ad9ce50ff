/* The coordinator (rank 0) and the server shards: plan and hand out each global
 * batch, sum the workers' gradient pushes, clip by the global norm, apply Adam and
 * the EMA to the owned chunks, broadcast them, log and checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/server.h"

#include "common/core/util.h"
#include "common/wire/wire.h"
#include "coordinator/cadence.h"

/* Rank 0: each worker's share of the global batch; the first B mod W get one more. */
static int send_assignments(coordinator *c, const dist_layout *d) {
    int B = c->cfg->training.batch_size, W = d->W;
    coordinator_plan(c);
    /* synchronous sends: each completes once that worker has taken its work */
    dist_reqs q;
    memset(&q, 0, sizeof q);
    uint8_t **bufs = xcalloc((size_t)W, sizeof *bufs);
    int rc = 0;
    for (int w = 0; w < W; w++) {
        int start, n;
        dist_share(B, W, w, &start, &n);
        wire_work wk;
        memset(&wk, 0, sizeof wk);
        wk.step = c->step;
        wk.seed = c->cfg->training.seed;
        wk.total_batch = (uint32_t)B;
        wk.n = n;
        wk.sample_ids = xcalloc((size_t)n + 1, sizeof *wk.sample_ids);
        wk.indices = xcalloc((size_t)n + 1, sizeof *wk.indices);
        wk.t = xcalloc((size_t)n + 1, sizeof *wk.t);
        wk.flip = xcalloc((size_t)n + 1, 1);
        for (int i = 0; i < n; i++) {
            const batch_item *it = &c->items[start + i];
            wk.sample_ids[i] = it->sample_id;
            wk.indices[i] = it->index;
            wk.t[i] = it->t;
            wk.flip[i] = it->flip;
        }
        size_t len = 0;
        rc = wire_work_pack(&wk, &bufs[w], &len);
        wire_work_free(&wk);
        if (rc != 0) break;
        MPI_Issend(bufs[w], (int)len, MPI_BYTE, dist_worker_rank(d, w), TAG_WORK, MPI_COMM_WORLD,
                   dist_reqs_add(&q, dist_worker_rank(d, w), -1));
    }
    if (rc == 0) rc = dist_reqs_wait(d, &q, "work assignment");
    dist_reqs_free(&q);
    for (int w = 0; w < W; w++) free(bufs[w]);
    free(bufs);
    return rc;
}

typedef struct {
    loss_stats st;
    double bytes_raw, bytes_sent;
    double t_decode;
} step_stats;

/* After a deadline: pings the workers that owe this shard a chunk; -1 names them. */
static int blame_missing(const dist_layout *d, const uint8_t *got, double start) {
    int *who = xcalloc((size_t)d->W * (size_t)d->n_chunks, sizeof *who);
    int *chunk = xcalloc((size_t)d->W * (size_t)d->n_chunks, sizeof *chunk);
    int m = 0;
    for (int w = 0; w < d->W; w++)
        for (int k = 0; k < d->n_chunks; k++)
            if (dist_chunk_owner(d, k) == d->shard && !got[w * d->n_chunks + k]) {
                who[m] = dist_worker_rank(d, w);
                chunk[m++] = k;
            }
    int rc = dist_blame(d, m, who, chunk, "gradient push", start);
    free(who);
    free(chunk);
    return rc;
}

/* The loss statistics ride on chunk 0 only, and count exactly the sender's share of
 * the batch; their sums are finite (a diverged worker is named, not averaged in). */
static int check_stats(const dist_layout *d, const server *sv, const wire_push *p, int from) {
    int start, n;
    dist_share(sv->cfg->training.batch_size, d->W, from - d->S, &start, &n);
    if (p->has_stats != (p->chunk == 0))
        return err_set("gradient push from rank %d, chunk %u: loss statistics %s", from,
                       (unsigned)p->chunk, p->has_stats ? "present (only chunk 0 carries them)"
                                                         : "missing (chunk 0 carries them)");
    if (!p->has_stats) return 0;
    int finite = isfinite(p->loss_sum) && isfinite(p->mse_sum) && isfinite(p->vb_sum);
    for (int q = 0; q < 4; q++) finite = finite && isfinite(p->q_sum[q]);
    if (p->n_samples != (uint64_t)n || !finite)
        return err_set("gradient push from rank %d, step %llu: loss statistics over %llu samples "
                       "(its share is %d), loss sum %g (mse %g, vb %g): %s", from,
                       (unsigned long long)sv->step + 1, (unsigned long long)p->n_samples, n,
                       p->loss_sum, p->mse_sum, p->vb_sum, finite ? "wrong count" : "not finite");
    return 0;
}

/* Receives every worker's push of every chunk this shard owns and sums them into
 * the shard's grads. Names the sender of anything malformed and a worker that is late. */
static int receive_pushes(server *sv, const dist_layout *d, wire_ctx *wc, uint8_t **buf,
                          size_t *cap, uint8_t *got, step_stats *ss) {
    float *grads = sv->sh->grads;
    int owned = 0;
    for (int k = 0; k < d->n_chunks; k++) {
        if (dist_chunk_owner(d, k) != d->shard) continue;
        owned++;
        memset(grads + d->chunk_off[k], 0, d->chunk_cnt[k] * sizeof(float));
    }
    memset(got, 0, (size_t)d->W * (size_t)d->n_chunks);
    int expected = owned * d->W;
    double start = now_seconds(), deadline = start + d->timeout_s;
    for (int received = 0; received < expected; received++) {
        int len = 0, from = -1;
        int got_msg;
        while ((got_msg = dist_recv_any(MPI_ANY_SOURCE, TAG_GRAD, deadline,
                                        dist_push_max_bytes(DIST_CHUNK_FLOATS), buf, cap, &len,
                                        &from)) != 0) {
            if (got_msg < 0) return err_prefix("gradient push: ");
            if (blame_missing(d, got, start) != 0) return -1;
            deadline = now_seconds() + d->timeout_s; /* all alive: they wait for someone */
        }
        wire_push p;
        if (wire_push_unpack(*buf, (size_t)len, sv->step, d->n_chunks, d->chunk_off, d->chunk_cnt,
                             &p) != 0)
            return err_prefix("gradient push from rank %d: ", from);
        int rc = 0, w = from - d->S;
        if (w < 0 || (int)p.worker != w)
            rc = err_set("gradient push from rank %d claims to come from worker %u", from,
                         (unsigned)p.worker);
        else if (dist_chunk_owner(d, (int)p.chunk) != d->shard)
            rc = err_set("gradient push from rank %d: chunk %u belongs to shard %d, not %d", from,
                         (unsigned)p.chunk, dist_chunk_owner(d, (int)p.chunk), d->shard);
        else if (got[w * d->n_chunks + (int)p.chunk])
            rc = err_set("gradient push from rank %d: chunk %u of step %llu sent twice", from,
                         (unsigned)p.chunk, (unsigned long long)sv->step);
        else if (p.codec != sv->cfg->distributed.codec)
            rc = err_set("gradient push from rank %d: codec %d, the run uses %d", from,
                         (int)p.codec, (int)sv->cfg->distributed.codec);
        else {
            double t0 = now_seconds();
            if (wire_decode_add(wc, p.codec, p.data, p.data_len, grads + p.offset,
                                (size_t)p.count) != 0)
                rc = err_prefix("gradient push from rank %d, chunk %u: ", from, (unsigned)p.chunk);
            ss->t_decode += now_seconds() - t0;
        }
        if (rc == 0) rc = check_stats(d, sv, &p, from);
        if (rc == 0) {
            got[w * d->n_chunks + (int)p.chunk] = 1;
            if (p.has_stats) {
                ss->st.loss_sum += p.loss_sum;
                ss->st.mse_sum += p.mse_sum;
                ss->st.vb_sum += p.vb_sum;
                for (int q = 0; q < 4; q++) {
                    ss->st.q_sum[q] += p.q_sum[q];
                    ss->st.q_count[q] += (long)p.q_count[q];
                }
                ss->st.n += (long)p.n_samples;
                ss->bytes_raw += (double)p.bytes_raw_total;
                ss->bytes_sent += (double)p.bytes_sent_total;
            }
        }
        wire_push_free(&p);
        if (rc != 0) return -1;
    }
    return 0;
}

/* Clip by the global norm (the shards' sums of squares exchanged), Adam and EMA on
 * the owned chunks. *gnorm: the global gradient norm. */
static int update_owned(server *sv, const dist_layout *d, double *gnorm) {
    double local = shard_sum_squares(sv->sh);
    /* every shard sends its sum to every shard, and each adds them in shard order:
     * the same total everywhere, and a shard that does not send is named */
    double *parts = xcalloc((size_t)d->S, sizeof *parts);
    dist_reqs q;
    memset(&q, 0, sizeof q);
    parts[d->shard] = local;
    for (int j = 0; j < d->S; j++) {
        if (j == d->shard) continue;
        MPI_Isend(&local, 1, MPI_DOUBLE, j, TAG_NORM, MPI_COMM_WORLD, dist_reqs_add(&q, j, -1));
        MPI_Irecv(&parts[j], 1, MPI_DOUBLE, j, TAG_NORM, MPI_COMM_WORLD, dist_reqs_add(&q, j, -1));
    }
    int rc = dist_reqs_wait(d, &q, "gradient norm across server shards");
    dist_reqs_free(&q);
    double total = parts[0];
    for (int j = 1; j < d->S; j++) total += parts[j];
    free(parts);
    if (rc != 0) return -1;
    *gnorm = sqrt(total);
    shard_update(sv->sh, sv->step, *gnorm);
    return 0;
}

static int checkpoint(server *sv, const dist_layout *d) {
    double t0 = now_seconds();
    dist_test_hook(d, "gather");
    float *bufs[3];
    if (dist_gather_state(d, bufs, shard_state_buffers(sv->sh, bufs)) != 0) return -1;
    if (sv->coord && d->S > 1)
        log_info("checkpoint of step %llu: optimizer state of shards 1..%d gathered in %.1f s",
                 (unsigned long long)sv->step, d->S - 1, now_seconds() - t0);
    if (sv->coord && coordinator_save_checkpoint(sv->coord) != 0) return -1;
    /* the gather counts towards a grace time */
    if (sv->coord) sv->coord->ckpt_seconds = now_seconds() - t0;
    return 0;
}

/* training.sample_every: every shard sends rank 0 its EMA chunks (unless a
 * checkpoint just did), and rank 0 draws the grid, answering liveness checks
 * between sampling steps (the workers wait for its next control message). */
static int draw_samples(server *sv, const dist_layout *d, int gathered) {
    int ema = sv->cfg->training.sample_weights == SAMPLE_WEIGHTS_EMA;
    if (ema && !gathered &&
        dist_gather_buffers(d, &sv->sh->ema, 1, "EMA gather for the sample grid") != 0)
        return -1;
    if (!sv->coord) return 0;
    return coordinator_sample(sv->coord, sv->diff, ema ? sv->sh->ema : sv->sh->params,
                              dist_serve_pings);
}

/* Rank 0: the control message for the step about to run (stop when the run is done). */
static dist_control next_control(const server *sv) {
    dist_control c = {sv->step, DIST_CTL_STEP, EXIT_OK, 0};
    int stopping;
    if (sv->coord && cadence_done(&sv->cfg->training, sv->step, stop_requested(), &stopping)) {
        c.action = DIST_CTL_STOP;
        c.exit_code = stopping ? stop_exit_code() : EXIT_OK;
        c.final_checkpoint = coordinator_want_final_checkpoint(sv->coord, stopping);
    }
    return c;
}

typedef struct {
    double busy, wait, plan, recv, update, bcast;
    uint64_t steps;
} server_times;

static void log_times(const dist_layout *d, const server_times *t) {
    if (!t->steps) return;
    double n = (double)t->steps, total = t->busy + t->wait;
    log_info("%s rank %d: busy %.1f%% of step time; per step: planning and sending work %.4f s, "
             "receiving and decoding pushes %.4f s (decoding %.4f s of it), "
             "update %.4f s, parameter broadcast %.4f s",
             d->rank == 0 ? "coordinator" : "server shard", d->rank,
             total > 0 ? 100 * t->busy / total : 0, t->plan / n, t->recv / n,
             (t->busy - t->plan - t->update - t->bcast) / n, t->update / n, t->bcast / n);
}

/* Waits for this rank's part in the last step's parameter broadcast (as the owner
 * of its chunks, until it may change them; for the others, until they arrived). */
static void bcast_finish(dist_layout *d, dist_reqs *bq, uint64_t of_step) {
    if (bq->n == 0) return;
    uint64_t running = d->step;
    d->step = of_step;
    if (dist_reqs_wait(d, bq, "parameter broadcast") != 0) dist_fail(d);
    d->step = running;
}

int server_run(server *sv, dist_layout *d, int *exit_code) {
    coordinator *coord = sv->coord;
    wire_ctx *wc = wire_ctx_create();
    uint8_t *buf = NULL;
    size_t cap = 0;
    uint8_t *got = xcalloc((size_t)d->W * (size_t)d->n_chunks, 1);
    server_times tm;
    memset(&tm, 0, sizeof tm);
    dist_control ctl;
    dist_reqs bq; /* the last step's broadcast, still in flight */
    memset(&bq, 0, sizeof bq);
    for (;;) {
        ctl = next_control(sv);
        d->step = sv->step + 1;
        dist_exchange_control(d, &ctl);
        if (ctl.action == DIST_CTL_STOP) break;
        double t0 = now_seconds();
        dist_test_hook(d, "work");
        if (coord && send_assignments(coord, d) != 0) dist_fail(d);
        step_stats ss;
        memset(&ss, 0, sizeof ss);
        double t1 = now_seconds();
        dist_test_hook(d, "push");
        if (receive_pushes(sv, d, wc, &buf, &cap, got, &ss) != 0) dist_fail(d);
        double t2 = now_seconds();
        /* the owned chunks were the roots of the last broadcast: Adam changes them */
        bcast_finish(d, &bq, sv->step);
        double t2a = now_seconds();
        double gnorm = 0;
        dist_test_hook(d, "norm");
        if (update_owned(sv, d, &gnorm) != 0) dist_fail(d);
        double t2b = now_seconds();
        dist_test_hook(d, "broadcast");
        /* not waited for here: it goes on while the workers start the next step */
        dist_bcast_start(d, sv->sh->params, 0, &bq);
        double t3 = now_seconds();
        /* time blocked in receive is waiting, except the decoding inside it */
        tm.wait += (t2 - t1) - ss.t_decode;
        tm.busy += (t1 - t0) + ss.t_decode + (t3 - t2);
        tm.plan += t1 - t0;
        tm.recv += t2 - t1;
        tm.update += t2b - t2a;
        tm.bcast += (t3 - t2b) + (t2a - t2);
        tm.steps++;
        if (coord && coordinator_check_loss(coord, &ss.st) != 0) dist_fail(d);
        sv->step++;
        d->step = sv->step; /* a checkpoint's gather names the checkpoint's step */
        if (coord) {
            coord->step = sv->step;
            coordinator_log_step(coord, &ss.st, gnorm, ss.bytes_sent, ss.bytes_raw);
        }
        cadence due = cadence_after_step(&sv->cfg->training, sv->step);
        /* rank 0 saves (or samples with) every chunk's parameters */
        if (due.checkpoint || due.sample) bcast_finish(d, &bq, sv->step);
        if (due.checkpoint && checkpoint(sv, d) != 0) dist_fail(d);
        if (due.sample && draw_samples(sv, d, due.checkpoint) != 0) dist_fail(d);
    }
    *exit_code = ctl.exit_code;
    bcast_finish(d, &bq, sv->step);
    dist_reqs_free(&bq);
    if (ctl.final_checkpoint && checkpoint(sv, d) != 0) dist_fail(d);
    log_times(d, &tm);
    /* the loop ends at training.steps, or earlier on a stop request */
    if (coord) coordinator_log_end(coord, (long)sv->step < sv->cfg->training.steps, ctl.final_checkpoint);
    free(got);
    free(buf);
    wire_ctx_free(wc);
    return 0;
}
