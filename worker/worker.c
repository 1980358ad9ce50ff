/* A worker rank: for each step, its share of the global batch -> gradients ->
 * one push per parameter chunk to the chunk's owner shard, sent as soon as backward
 * has finished the layers in that chunk, then the new parameters by broadcast. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "worker/worker.h"

#include "common/core/util.h"
#include "common/wire/wire.h"

typedef struct {
    worker *w;
    const dist_layout *d;
    uint64_t step;
    wire_ctx *wc;
    float *residual;          /* bf16 error feedback (P floats) or NULL */
    int next;                 /* highest chunk not pushed yet */
    const loss_stats *st;
    dist_reqs q;              /* this step's pushes, each tagged with its chunk and shard */
    uint8_t **bufs;
    double bytes_raw, bytes_sent;
    int failed;
    FILE *timeline;
    double t_step;
    double t_encode;          /* seconds spent encoding, this run */
} pusher;

static void push_chunk(pusher *ps, int k) {
    const dist_layout *d = ps->d;
    worker *w = ps->w;
    const distributed_config *dc = &w->cfg->distributed;
    size_t off = d->chunk_off[k], n = d->chunk_cnt[k];
    const uint8_t *data = NULL;
    size_t len = 0;
    double t0 = now_seconds();
    if (wire_encode(ps->wc, dc->codec, dc->zstd_level, w->grads + off, ps->residual ? ps->residual + off : NULL, n, &data,
                    &len) != 0) {
        ps->failed = 1;
        return;
    }
    ps->bytes_raw += (double)n * sizeof(float);
    ps->bytes_sent += (double)len;
    wire_push p;
    memset(&p, 0, sizeof p);
    p.step = ps->step;
    p.worker = (uint32_t)d->worker;
    p.chunk = (uint32_t)k;
    p.offset = off;
    p.count = n;
    p.codec = dc->codec;
    p.data = data;
    p.data_len = len;
    p.raw_bytes = n * sizeof(float);
    if (k == 0) { /* chunk 0 is always last and owned by rank 0: it carries the stats */
        p.has_stats = 1;
        p.loss_sum = ps->st->loss_sum;
        p.mse_sum = ps->st->mse_sum;
        p.vb_sum = ps->st->vb_sum;
        for (int q = 0; q < 4; q++) {
            p.q_sum[q] = ps->st->q_sum[q];
            p.q_count[q] = (uint64_t)ps->st->q_count[q];
        }
        p.n_samples = (uint64_t)ps->st->n;
        if (d->faults.bad_stats_rank == d->rank) { /* test-only: over-reports its samples */
            p.n_samples++;
            p.q_count[0]++;
        }
        p.bytes_raw_total = (uint64_t)ps->bytes_raw;
        p.bytes_sent_total = (uint64_t)ps->bytes_sent;
    }
    size_t plen = 0;
    if (wire_push_pack(&p, &ps->bufs[k], &plen) != 0) {
        ps->failed = 1;
        return;
    }
    /* synchronous: complete once the owner shard has taken the push */
    MPI_Issend(ps->bufs[k], (int)plen, MPI_BYTE, dist_chunk_owner(d, k), TAG_GRAD, MPI_COMM_WORLD,
               dist_reqs_add(&ps->q, dist_chunk_owner(d, k), k));
    ps->t_encode += now_seconds() - t0;
    if (ps->timeline)
        fprintf(ps->timeline, "{\"rank\": %d, \"step\": %llu, \"event\": \"push\", \"chunk\": %d, "
                "\"t\": %.6f, \"bytes\": %zu}\n", d->rank, (unsigned long long)ps->step, k,
                now_seconds() - ps->t_step, plen);
}

/* Backward hook: push every chunk that backward has finished. */
static void on_backward(void *ctx, size_t done_from) {
    pusher *ps = ctx;
    while (ps->next >= 0 && ps->d->chunk_off[ps->next] >= done_from && !ps->failed)
        push_chunk(ps, ps->next--);
    int flag;
    MPI_Testall(ps->q.n, ps->q.reqs, &flag, MPI_STATUSES_IGNORE); /* progress sends */
}

/* The parameter broadcast after a step's update, still arriving while the next
 * step starts: the forward hook waits for the chunks the next layer reads. */
typedef struct {
    dist_layout *d;
    dist_reqs q;              /* one Ibcast per chunk, in chunk (= forward) order */
    int done;                 /* chunks 0..done-1 have arrived */
    uint64_t step;            /* the step whose update is broadcast (counted from 1) */
    double t_posted;          /* when it was posted */
    double t_wait;            /* seconds waited for the broadcasts in forwards (exposed) */
    double t_full;            /* seconds from posting to the last chunk, summed */
    int n_waited;             /* broadcasts waited for in a forward */
    double arrived;           /* sum over forwards of the share of chunks in at its start */
    int n_started;            /* forwards started with a broadcast in flight */
} bcast_in;

/* Waits for chunks 0..n-1; a late rank aborts the job, named as a rank of the
 * broadcast of b->step (not of the step now running). */
static void bcast_wait(bcast_in *b, int n) {
    if (b->q.n == 0) return;
    double t0 = now_seconds();
    if (n > b->done) {
        uint64_t running = b->d->step;
        b->d->step = b->step;
        if (dist_reqs_wait_first(b->d, &b->q, n, "parameter broadcast") != 0) dist_fail(b->d);
        b->d->step = running;
        b->done = n;
    } else if (b->done < b->q.n) { /* nothing to wait for: let the later chunks move on */
        int flag;
        MPI_Test(&b->q.reqs[b->done], &flag, MPI_STATUS_IGNORE);
    }
    double t1 = now_seconds();
    b->t_wait += t1 - t0;
    if (b->done >= b->q.n) {
        b->q.n = b->done = 0;
        b->t_full += t1 - b->t_posted;
        b->n_waited++;
    }
}

/* At a forward's start: how much of the broadcast has arrived already (the chunks
 * in order; it moved while this rank waited for its work), for the log. */
static void bcast_count_arrived(bcast_in *b) {
    if (b->q.n == 0) return;
    int flag = 1;
    while (b->done < b->q.n && flag) {
        MPI_Test(&b->q.reqs[b->done], &flag, MPI_STATUS_IGNORE);
        if (flag) b->done++;
    }
    b->arrived += (double)b->done / b->q.n;
    b->n_started++;
}

/* Forward hook: the next layer reads the parameters below ready_to. */
static void on_forward(void *ctx, size_t ready_to) {
    bcast_in *b = ctx;
    bcast_wait(b, dist_bcast_chunks_below(b->d, ready_to));
}

int worker_init(worker *w, const config *cfg, dataset *ds, uint64_t dataset_size, unet *model,
                const diffusion *diff, int micro, float *params, float *grads,
                batch_planner *bp) {
    memset(w, 0, sizeof *w);
    const training_config *tc = &cfg->training;
    w->cfg = cfg;
    w->dataset_size = dataset_size;
    w->model = model;
    w->P = unet_num_params(model);
    w->own_buffers = !params;
    w->params = params ? params : xfloats(w->P);
    w->grads = grads ? grads : xfloats(w->P);
    grad_worker_init(&w->gw, model, diff, ds, tc->seed, micro, cfg->model.in_channels,
                     cfg->model.image_size);
    grad_worker_set_labels(&w->gw, cfg->model.num_classes, tc->label_dropout);
    if (cfg->data.format != DATA_SHARDS) return 0;
    /* read the next step's records while this one computes; a distributed worker
     * plans the next batch itself to know its next share */
    if (prefetcher_create(&w->pf, ds) != 0) return -1;
    grad_worker_set_prefetcher(&w->gw, w->pf);
    w->next_items = xcalloc((size_t)tc->batch_size, sizeof *w->next_items);
    w->bp = bp;
    if (!bp) {
        if (batch_planner_init(&w->own_bp, tc->seed, dataset_size, tc->batch_size,
                               cfg->diffusion.timesteps, tc->t_sampler,
                               cfg->data.random_flip) != 0)
            return -1;
        w->bp = &w->own_bp;
    }
    return 0;
}

int worker_compute(worker *w, uint64_t step, const batch_item *items, int n, int share_start,
                   loss_stats *st) {
    if (w->pf) { /* the next step's share is read while this step computes */
        if (!w->primed) grad_worker_prefetch(&w->gw, items, n);
        w->primed = 1;
        batch_plan(w->bp, step + 1, w->next_items);
        grad_worker_prefetch(&w->gw, w->next_items + share_start, n);
    }
    memset(st, 0, sizeof *st);
    memset(w->grads, 0, w->P * sizeof(float));
    return grad_worker_run(&w->gw, w->params, w->grads, step, items, n,
                           w->cfg->training.batch_size, st);
}

void worker_free(worker *w) {
    if (w->pf) {
        uint64_t hits, misses;
        prefetcher_stats(w->pf, &hits, &misses);
        log_info("prefetch: %llu records read ahead, %llu read on demand",
                 (unsigned long long)hits, (unsigned long long)misses);
        prefetcher_free(w->pf);
    }
    if (w->bp == &w->own_bp) batch_planner_free(&w->own_bp);
    free(w->next_items);
    grad_worker_free(&w->gw);
    if (w->own_buffers) {
        free(w->params);
        free(w->grads);
    }
    memset(w, 0, sizeof *w);
}

/* Step `step`'s work assignment from rank 0 into items; checks that it is this
 * worker's share. Aborts the job (naming rank 0) when it does not come in time or
 * is malformed. Returns the share's size. */
static int take_work(worker *w, const dist_layout *d, uint64_t step, uint8_t **buf, size_t *cap,
                     batch_item *items) {
    const training_config *tc = &w->cfg->training;
    int len = 0, from = 0, zero = 0, got;
    double start = now_seconds(), deadline = start + d->timeout_s;
    while ((got = dist_recv_any(0, TAG_WORK, deadline, dist_work_max_bytes((size_t)tc->batch_size),
                                buf, cap, &len, &from)) != 0) {
        if (got < 0) {
            err_prefix("work assignment: ");
            dist_fail(d);
        }
        if (dist_blame(d, 1, &zero, NULL, "work assignment", start) != 0) dist_fail(d);
        deadline = now_seconds() + d->timeout_s; /* rank 0 is alive: it waits for someone */
    }
    wire_work wk;
    if (wire_work_unpack(*buf, (size_t)len, tc->batch_size, w->cfg->diffusion.timesteps,
                         w->dataset_size, &wk) != 0) {
        err_prefix("work assignment from rank 0: ");
        dist_fail(d);
    }
    int share_start, share_n;
    dist_share(tc->batch_size, d->W, d->worker, &share_start, &share_n);
    if (wk.step != step || wk.total_batch != (uint32_t)tc->batch_size || wk.seed != tc->seed ||
        wk.n != share_n || wk.stop) {
        err_set("work assignment from rank 0: step %llu, batch %u, seed %llu, %d items, stop %d; "
                "expected step %llu, batch %d, seed %llu, %d items (this worker's share), "
                "stop 0", (unsigned long long)wk.step, (unsigned)wk.total_batch,
                (unsigned long long)wk.seed, wk.n, wk.stop, (unsigned long long)step,
                tc->batch_size, (unsigned long long)tc->seed, share_n);
        dist_fail(d);
    }
    for (int i = 0; i < wk.n; i++) {
        items[i].sample_id = wk.sample_ids[i];
        items[i].index = wk.indices[i];
        items[i].t = wk.t[i];
        items[i].flip = wk.flip[i];
    }
    wire_work_free(&wk);
    return share_n;
}

static void timeline_event(const pusher *ps, const char *event, double t) {
    if (ps->timeline)
        fprintf(ps->timeline, "{\"rank\": %d, \"step\": %llu, \"event\": \"%s\", \"t\": %.6f}\n",
                ps->d->rank, (unsigned long long)ps->step, event, t);
}

int worker_run(worker *w, dist_layout *d, uint64_t step, int *exit_code) {
    const training_config *tc = &w->cfg->training;
    pusher ps;
    memset(&ps, 0, sizeof ps);
    ps.w = w;
    ps.d = d;
    ps.wc = wire_ctx_create();
    if (w->cfg->distributed.codec == CODEC_BF16_ZSTD) ps.residual = xfloats(w->P);
    ps.bufs = xcalloc((size_t)d->n_chunks, sizeof *ps.bufs);
    if (w->timeline) {
        char path[1024];
        snprintf(path, sizeof path, "%s.rank%d", w->timeline, d->rank);
        ps.timeline = fopen(path, "w");
    }
    uint8_t *buf = NULL;
    size_t cap = 0;
    batch_item *items = xcalloc((size_t)tc->batch_size, sizeof *items);
    double t_wait_work = 0, t_compute = 0, t_send = 0;
    uint64_t steps_done = 0;
    int share_start, share_n;
    dist_share(tc->batch_size, d->W, d->worker, &share_start, &share_n);
    bcast_in bi;
    memset(&bi, 0, sizeof bi);
    bi.d = d;
    unet_set_forward_hook(w->model, on_forward, &bi);
    for (;;) {
        double ta = now_seconds();
        dist_control ctl;
        d->step = step + 1;
        dist_exchange_control(d, &ctl);
        if (ctl.action == DIST_CTL_STOP) {
            bcast_in last = bi; /* not part of a step: kept out of the timings */
            bcast_wait(&bi, d->n_chunks);
            bi.t_wait = last.t_wait;
            bi.t_full = last.t_full;
            bi.n_waited = last.n_waited;
            *exit_code = ctl.exit_code;
            break;
        }
        dist_test_hook(d, "work");
        int n = take_work(w, d, step, &buf, &cap, items);
        ps.t_step = now_seconds();
        ps.step = step;
        t_wait_work += ps.t_step - ta;
        double enc0 = ps.t_encode;
        loss_stats st;
        ps.st = &st;
        ps.next = d->n_chunks - 1;
        ps.bytes_raw = ps.bytes_sent = 0;
        ps.q.n = 0;
        w->gw.final_hook = on_backward;
        w->gw.final_hook_ctx = &ps;
        timeline_event(&ps, "compute_start", 0);
        double bw0 = bi.t_wait;
        bcast_count_arrived(&bi);
        if (worker_compute(w, step, items, n, share_start, &st) != 0) dist_fail(d);
        bcast_wait(&bi, d->n_chunks); /* all arrived in the forward, unless it did not run */
        timeline_event(&ps, "backward_end", now_seconds() - ps.t_step);
        while (ps.next >= 0 && !ps.failed) push_chunk(&ps, ps.next--); /* e.g. an empty share */
        if (ps.failed) dist_fail(d);
        double tb = now_seconds();
        t_compute += (tb - ps.t_step) - (ps.t_encode - enc0) - (bi.t_wait - bw0);
        dist_test_hook(d, "push");
        if (dist_reqs_wait(d, &ps.q, "gradient push (taken by the owner shard)") != 0)
            dist_fail(d);
        for (int k = 0; k < d->n_chunks; k++) {
            free(ps.bufs[k]);
            ps.bufs[k] = NULL;
        }
        t_send += now_seconds() - tb;
        dist_test_hook(d, "broadcast");
        /* the new parameters arrive while the next step's control, work and first
         * layers go ahead (on_forward waits for each layer's chunks) */
        bi.t_posted = now_seconds();
        dist_bcast_start(d, w->params, 0, &bi.q);
        bi.step = d->step;
        steps_done++;
        step++;
    }
    unet_set_forward_hook(w->model, NULL, NULL);
    if (steps_done) {
        double n = (double)steps_done;
        double nb = bi.n_waited ? (double)bi.n_waited : 1;
        log_info("worker rank %d, per step: compute %.3f s, encode %.3f s, sending %.3f s, "
                 "parameter broadcast (exposed: waited for in the next forward) %.3f s, "
                 "waiting for work %.3f s; per broadcast: %.3f s from posting to the last "
                 "chunk, %.3f s of it exposed, %.1f%% of its chunks in before the forward "
                 "began", d->rank, t_compute / n, ps.t_encode / n, t_send / n, bi.t_wait / n,
                 t_wait_work / n, bi.t_full / nb, bi.t_wait / nb,
                 bi.n_started ? 100 * bi.arrived / bi.n_started : 0.0);
    }
    dist_reqs_free(&bi.q);
    if (ps.timeline) fclose(ps.timeline);
    free(items);
    free(buf);
    dist_reqs_free(&ps.q);
    free(ps.bufs);
    free(ps.residual);
    wire_ctx_free(ps.wc);
    return 0;
}
