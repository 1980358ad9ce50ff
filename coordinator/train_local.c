/* Algorithm 1 on a single process: it plans, computes and updates. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/ckpt/checkpoint.h"
#include "common/core/util.h"
#include "trainer.h"

static int dump_step(trainer *tr, uint64_t step, float loss) {
    int B = tr->cfg.training.batch_size;
    size_t D = tr->gw.D;
    float *x0 = xfloats((size_t)B * D), *eps = xfloats((size_t)B * D), *t = xfloats((size_t)B);
    int rc = grad_worker_inputs(&tr->gw, step, tr->items, B, x0, eps);
    for (int i = 0; i < B; i++) t[i] = (float)tr->items[i].t;
    char name[64];
    int S = tr->cfg.model.image_size;
    int64_t dx[4] = {B, tr->cfg.model.in_channels, S, S}, dt[1] = {B}, d1[1] = {1};
    if (rc == 0) {
        snprintf(name, sizeof name, "step%llu/x0", (unsigned long long)step);
        rc = tensor_file_add(&tr->dump, name, 4, dx, x0);
        snprintf(name, sizeof name, "step%llu/t", (unsigned long long)step);
        if (!rc) rc = tensor_file_add(&tr->dump, name, 1, dt, t);
        snprintf(name, sizeof name, "step%llu/eps", (unsigned long long)step);
        if (!rc) rc = tensor_file_add(&tr->dump, name, 4, dx, eps);
        snprintf(name, sizeof name, "step%llu/loss", (unsigned long long)step);
        if (!rc) rc = tensor_file_add(&tr->dump, name, 1, d1, &loss);
    }
    free(x0);
    free(eps);
    free(t);
    return rc;
}

static int dump_params(trainer *tr, const char *prefix, const float *buf) {
    const unet_tensor *t = unet_tensors(tr->model);
    char name[128];
    for (int i = 0; i < unet_num_tensors(tr->model); i++) {
        int64_t dims[4];
        for (int d = 0; d < t[i].ndim; d++) dims[d] = t[i].shape[d];
        snprintf(name, sizeof name, "%s/%s", prefix, t[i].name);
        if (tensor_file_add(&tr->dump, name, t[i].ndim, dims, buf + t[i].offset) != 0) return -1;
    }
    return 0;
}

int train_local(trainer *tr, int *exit_code) {
    const training_config *tc = &tr->cfg.training;
    int B = tc->batch_size;
    double t_start = now_seconds(), t_window = t_start;
    uint64_t window_images = 0;
    if (tr->dumping) {
        float meta[32];
        int64_t dk[1] = {unet_describe(&tr->cfg.model, meta)};
        if (tensor_file_add(&tr->dump, "meta/model", 1, dk, meta) != 0 ||
            dump_params(tr, "init", tr->params) != 0)
            return -1;
    }
    int primed = 0;
    while ((long)tr->step < tc->steps) {
        if (stop_requested()) break; /* the step boundary is where a signal takes effect */
        batch_plan(&tr->bp, tr->step, tr->items);
        if (tr->pf) { /* read step+1's records while this step computes */
            if (!primed) grad_worker_prefetch(&tr->gw, tr->items, B);
            primed = 1;
            batch_plan(&tr->bp, tr->step + 1, tr->next_items);
            grad_worker_prefetch(&tr->gw, tr->next_items, B);
        }
        memset(tr->grads, 0, tr->P * sizeof(float));
        loss_stats st;
        memset(&st, 0, sizeof st);
        if (grad_worker_run(&tr->gw, tr->params, tr->grads, tr->step, tr->items, B, B, &st) != 0)
            return -1;
        double loss = st.loss_sum / (double)st.n;
        if (!isfinite(loss))
            return err_set("step %llu: loss is %g; stopping (the last checkpoint is intact)",
                           (unsigned long long)tr->step, loss);
        if (tr->dumping && dump_step(tr, tr->step, (float)loss) != 0) return -1;
        double gnorm = sqrt(optim_sum_squares(tr->grads, tr->P));
        double lr = optim_lr(&tr->oc, tr->step);
        optim_adam(tr->params, tr->grads, tr->adam_m, tr->adam_v, tr->P, lr,
                   optim_clip_scale(&tr->oc, gnorm), &tr->oc, tr->step + 1);
        optim_ema(tr->ema, tr->params, tr->P, tr->oc.ema_decay);
        tr->step++;
        window_images += (uint64_t)B;
        if (tc->log_every > 0 && (tr->step % (uint64_t)tc->log_every == 0 ||
                                  (long)tr->step == tc->steps)) {
            double now = now_seconds();
            trainer_log_metrics(tr, &st, gnorm, lr, (double)window_images / (now - t_window),
                                now - t_start, -1, -1);
            t_window = now;
            window_images = 0;
        }
        if (tc->checkpoint_every > 0 && tr->step % (uint64_t)tc->checkpoint_every == 0 &&
            (long)tr->step != tc->steps) {
            if (trainer_save_checkpoint(tr) != 0) return -1;
        }
        if (tc->eval_every > 0 && tr->step % (uint64_t)tc->eval_every == 0 &&
            trainer_eval_bpd(tr) != 0)
            return -1;
    }
    if (tr->dumping) {
        if (dump_params(tr, "final", tr->params) != 0 || dump_params(tr, "ema", tr->ema) != 0)
            return -1;
    }
    /* a run that has reached its last step is finished, whatever signal came */
    int stopping = stop_requested() && (long)tr->step < tc->steps;
    int wrote = trainer_want_final_checkpoint(tr, stopping);
    if (wrote && trainer_save_checkpoint(tr) != 0) return -1;
    trainer_log_end(tr, stopping, wrote);
    *exit_code = stopping ? stop_exit_code() : EXIT_OK;
    return 0;
}

