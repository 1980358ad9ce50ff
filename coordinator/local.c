/* Algorithm 1 on a single process (local.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coordinator/local.h"

#include "common/core/util.h"
#include "coordinator/cadence.h"

static int dump_step(tensor_file *dump, const coordinator *c, worker *w, float loss) {
    int B = c->cfg->training.batch_size;
    uint64_t step = c->step;
    size_t D = w->gw.D;
    float *x0 = xfloats((size_t)B * D), *eps = xfloats((size_t)B * D), *t = xfloats((size_t)B);
    int rc = grad_worker_inputs(&w->gw, step, c->items, B, x0, eps);
    for (int i = 0; i < B; i++) t[i] = (float)c->items[i].t;
    char name[64];
    int S = c->cfg->model.image_size;
    int64_t dx[4] = {B, c->cfg->model.in_channels, S, S}, dt[1] = {B}, d1[1] = {1};
    if (rc == 0) {
        snprintf(name, sizeof name, "step%llu/x0", (unsigned long long)step);
        rc = tensor_file_add(dump, name, 4, dx, x0);
        snprintf(name, sizeof name, "step%llu/t", (unsigned long long)step);
        if (!rc) rc = tensor_file_add(dump, name, 1, dt, t);
        snprintf(name, sizeof name, "step%llu/eps", (unsigned long long)step);
        if (!rc) rc = tensor_file_add(dump, name, 4, dx, eps);
        snprintf(name, sizeof name, "step%llu/loss", (unsigned long long)step);
        if (!rc) rc = tensor_file_add(dump, name, 1, d1, &loss);
    }
    free(x0);
    free(eps);
    free(t);
    return rc;
}

static int dump_params(tensor_file *dump, const unet *model, const char *prefix,
                       const float *buf) {
    const unet_tensor *t = unet_tensors(model);
    char name[128];
    for (int i = 0; i < unet_num_tensors(model); i++) {
        int64_t dims[4];
        for (int d = 0; d < t[i].ndim; d++) dims[d] = t[i].shape[d];
        snprintf(name, sizeof name, "%s/%s", prefix, t[i].name);
        if (tensor_file_add(dump, name, t[i].ndim, dims, buf + t[i].offset) != 0) return -1;
    }
    return 0;
}

int local_run(coordinator *c, worker *w, const diffusion *diff, tensor_file *dump,
              int *exit_code) {
    const training_config *tc = &c->cfg->training;
    shard *sh = c->state;
    int B = tc->batch_size;
    if (dump) {
        float meta[32];
        int64_t dk[1] = {unet_describe(&c->cfg->model, meta)};
        if (tensor_file_add(dump, "meta/model", 1, dk, meta) != 0 ||
            dump_params(dump, w->model, "init", sh->params) != 0)
            return -1;
    }
    int stopping;
    while (!cadence_done(tc, c->step, stop_requested(), &stopping)) {
        /* the step boundary is where a signal takes effect */
        coordinator_plan(c);
        loss_stats st;
        if (worker_compute(w, c->step, c->items, B, 0, &st) != 0) return -1;
        if (coordinator_check_loss(c, &st) != 0) return -1;
        if (dump && dump_step(dump, c, w, (float)(st.loss_sum / (double)st.n)) != 0) return -1;
        double gnorm = sqrt(shard_sum_squares(sh));
        shard_update(sh, c->step, gnorm);
        c->step++;
        coordinator_log_step(c, &st, gnorm, -1, -1);
        cadence due = cadence_after_step(tc, c->step);
        if (due.checkpoint && coordinator_save_checkpoint(c) != 0) return -1;
        if (due.eval && coordinator_eval_bpd(c, w->model, diff) != 0) return -1;
        if (due.sample && coordinator_sample(c, diff, tc->sample_weights == SAMPLE_WEIGHTS_EMA
                                                          ? sh->ema : sh->params, NULL) != 0)
            return -1;
    }
    if (dump && (dump_params(dump, w->model, "final", sh->params) != 0 ||
                 dump_params(dump, w->model, "ema", sh->ema) != 0))
        return -1;
    /* a run that has reached its last step is finished, whatever signal came */
    int wrote = coordinator_want_final_checkpoint(c, stopping);
    if (wrote && coordinator_save_checkpoint(c) != 0) return -1;
    coordinator_log_end(c, stopping, wrote);
    *exit_code = stopping ? stop_exit_code() : EXIT_OK;
    return 0;
}
