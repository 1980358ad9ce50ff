#include "common/train/grad.h"

#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/diffusion/vlb.h"
#include "common/ops/ops.h"
#include "common/rng/rng.h"

void grad_worker_init(grad_worker *w, unet *model, const diffusion *diff, const dataset *ds,
                      uint64_t seed, int micro, int channels, int size) {
    memset(w, 0, sizeof *w);
    w->model = model;
    w->diff = diff;
    w->ds = ds;
    w->seed = seed;
    w->micro = micro;
    w->channels = channels;
    w->size = size;
    w->D = (size_t)channels * size * size;
    w->out_D = (size_t)unet_out_channels(model) * size * size;
    size_t nd = (size_t)micro * w->D;
    w->u8 = xmalloc(nd);
    w->flip = xmalloc((size_t)micro);
    w->x0 = xfloats(nd);
    w->xt = xfloats(nd);
    w->eps = xfloats(nd);
    w->pred = xfloats((size_t)micro * w->out_D);
    w->dpred = xfloats((size_t)micro * w->out_D);
    w->loss = xcalloc((size_t)micro, sizeof *w->loss);
    if (w->out_D != w->D) {
        w->mse = xcalloc((size_t)micro, sizeof *w->mse);
        w->vb = xcalloc((size_t)micro, sizeof *w->vb);
    }
    w->t = xcalloc((size_t)micro, sizeof *w->t);
    w->ids = xcalloc((size_t)micro, sizeof *w->ids);
}

void grad_worker_free(grad_worker *w) {
    free(w->u8); free(w->flip); free(w->x0); free(w->xt); free(w->eps); free(w->pred);
    free(w->dpred); free(w->loss); free(w->mse); free(w->vb); free(w->t); free(w->ids);
    free(w->pf_idx); free(w->y);
    memset(w, 0, sizeof *w);
}

void grad_worker_set_labels(grad_worker *w, int num_classes, double label_dropout) {
    w->num_classes = num_classes;
    w->label_dropout = label_dropout;
    free(w->y);
    w->y = num_classes > 0 ? xcalloc((size_t)w->micro, sizeof *w->y) : NULL;
}

int grad_worker_label(const grad_worker *w, uint64_t step, const batch_item *it) {
    if (w->label_dropout > 0) {
        rng_key k = {w->seed, step, it->sample_id, RNG_PURPOSE_LABEL_DROP};
        float u;
        rng_uniform(&k, &u, 1);
        if (u < w->label_dropout) return w->num_classes;
    }
    return dataset_label(w->ds, it->index);
}

void grad_worker_set_prefetcher(grad_worker *w, prefetcher *pf) { w->pf = pf; }

void grad_worker_prefetch(grad_worker *w, const batch_item *items, int n) {
    if (!w->pf || n <= 0) return;
    if ((size_t)n > w->pf_cap) {
        free(w->pf_idx);
        w->pf_idx = xmalloc((size_t)n * sizeof *w->pf_idx);
        w->pf_cap = (size_t)n;
    }
    for (int i = 0; i < n; i++) w->pf_idx[i] = items[i].index;
    prefetcher_request(w->pf, w->pf_idx, (size_t)n);
}

/* x0 (flipped), eps, t and ids of a chunk of at most micro items. */
static int load_chunk(grad_worker *w, uint64_t step, const batch_item *items, int n) {
    for (int i = 0; i < n; i++) {
        uint8_t *dst = w->u8 + (size_t)i * w->D;
        int rc = w->pf ? prefetcher_get(w->pf, items[i].index, dst) : dataset_get(w->ds, items[i].index, dst);
        if (rc != 0)
            return err_prefix("step %llu, sample %llu: ", (unsigned long long)step,
                              (unsigned long long)items[i].sample_id);
        w->flip[i] = items[i].flip;
        w->t[i] = items[i].t;
        w->ids[i] = items[i].sample_id;
        if (w->y) {
            w->y[i] = grad_worker_label(w, step, &items[i]);
            if (w->y[i] < 0 || w->y[i] > w->num_classes)
                return err_set("step %llu, sample %llu: record %u has no label in 0..%d",
                               (unsigned long long)step, (unsigned long long)items[i].sample_id,
                               items[i].index, w->num_classes - 1);
        }
        rng_key ke = {w->seed, step, items[i].sample_id, RNG_PURPOSE_NOISE};
        rng_normal(&ke, w->eps + (size_t)i * w->D, w->D);
    }
    dataset_to_float(w->x0, w->u8, n, w->channels, w->size, w->flip);
    return 0;
}

int grad_worker_inputs(grad_worker *w, uint64_t step, const batch_item *items, int n, float *x0,
                       float *eps) {
    for (int s = 0; s < n; s += w->micro) {
        int c = n - s < w->micro ? n - s : w->micro;
        if (load_chunk(w, step, items + s, c) != 0) return -1;
        memcpy(x0 + (size_t)s * w->D, w->x0, (size_t)c * w->D * sizeof(float));
        memcpy(eps + (size_t)s * w->D, w->eps, (size_t)c * w->D * sizeof(float));
    }
    return 0;
}

double grad_vlb_weight(const diffusion *d) { return GRAD_VLB_LAMBDA * d->T; }

void grad_hybrid_loss(const diffusion *d, const float *x0, const float *xt, const float *eps,
                      const float *out, const int *t, int N, size_t D, double scale, double *loss,
                      double *mse, double *vb, float *dout) {
    const double w = grad_vlb_weight(d);
    for (int n = 0; n < N; n++) {
        const size_t o = (size_t)n * D, oo = 2 * o;
        const float *e = out + oo, *v = out + oo + D;
        double l, term;
        diffusion_loss_simple(&l, e, eps + o, 1, D);
        memset(dout + oo, 0, D * sizeof(float));
        mse_backward(dout + oo, e, eps + o, D, (float)scale);
        /* the mean comes from e, fixed here: only v receives L_vlb's gradient */
        vlb_terms(d, 0, 0, x0 + o, xt + o, e, v, &t[n], 1, D, &term, NULL, dout + oo + D,
                  scale * w);
        loss[n] = l + w * term;
        if (mse) mse[n] = l;
        if (vb) vb[n] = term;
    }
}

/* L_simple of c samples and dpred = (c / total_batch) d(mean of L_simple)/d pred. */
static void simple_loss(grad_worker *w, int c, int total_batch) {
    diffusion_loss_simple(w->loss, w->pred, w->eps, c, w->D);
    memset(w->dpred, 0, (size_t)c * w->D * sizeof(float));
    mse_backward(w->dpred, w->pred, w->eps, (size_t)c * w->D, (float)c / (float)total_batch);
}

int grad_worker_run(grad_worker *w, const float *params, float *grads, uint64_t step,
                    const batch_item *items, int n, int total_batch, loss_stats *st) {
    int T = w->diff->T;
    double vlb_w = grad_vlb_weight(w->diff);
    for (int s = 0; s < n; s += w->micro) {
        int c = n - s < w->micro ? n - s : w->micro;
        if (load_chunk(w, step, items + s, c) != 0) return -1;
        diffusion_q_sample(w->diff, w->xt, w->x0, w->eps, w->t, c, w->D);
        unet_rng r = {w->seed, step, w->ids};
        unet_forward(w->model, params, w->xt, w->t, w->y, c, &r, w->pred);
        if (w->out_D != w->D)
            grad_hybrid_loss(w->diff, w->x0, w->xt, w->eps, w->pred, w->t, c, w->D,
                             1.0 / total_batch, w->loss, w->mse, w->vb, w->dpred);
        else
            simple_loss(w, c, total_batch);
        for (int i = 0; i < c; i++) {
            int q = (int)((long)w->t[i] * 4 / T);
            st->loss_sum += w->loss[i];
            if (w->mse) {
                st->mse_sum += w->mse[i];
                st->vb_sum += vlb_w * w->vb[i];
            }
            st->q_sum[q] += w->loss[i];
            st->q_count[q]++;
            st->n++;
        }
        int last = s + c >= n;
        if (last && w->final_hook) unet_set_backward_hook(w->model, w->final_hook, w->final_hook_ctx);
        unet_backward(w->model, params, grads, w->dpred);
        if (last && w->final_hook) unet_set_backward_hook(w->model, NULL, NULL);
    }
    return 0;
}
