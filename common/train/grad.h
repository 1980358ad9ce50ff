/* Algorithm 1's per-sample work: load x0, draw eps (keyed on the sample id), form
 * x_t, run eps_theta forward and backward, and accumulate the gradient of
 * L = (1/B) sum_i L_i over the global batch B, L_i = mean_D (eps_theta(x_t, t) - eps)^2
 * (L_simple), or with model.learn_sigma the hybrid loss of improved DDPM (below).
 * A single process and a distributed worker run the same code on their share. */
#ifndef DDPM_GRAD_H
#define DDPM_GRAD_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"
#include "common/data/prefetch.h"
#include "common/diffusion/diffusion.h"
#include "common/model/unet.h"
#include "common/train/batch.h"

/* L_hybrid = L_simple + lambda L_vlb (Nichol & Dhariwal 2021), lambda = 0.001 fixed
 * as in the paper and improved-diffusion. L_vlb = sum_t L_t is estimated at the
 * sample's t as T L_t, so the term is lambda T L_t = (T / 1000) L_t with L_t in
 * bits/dim (improved-diffusion's RESCALED_MSE: vb * num_timesteps / 1000). */
#define GRAD_VLB_LAMBDA 0.001
/* lambda T: the weight of L_t in L_hybrid */
double grad_vlb_weight(const diffusion *d);

/* The hybrid loss of N samples of a learned-variance model (eps_theta and v_theta,
 * out: N * 2D floats, per sample [eps | v]); x0, xt and eps (the true noise): N*D.
 * L_t is vlb_terms's (common/diffusion/vlb.h) with x0 not clipped and the mean from
 * the eps output held fixed (improved-diffusion's frozen_out: L_vlb trains only v).
 * Writes loss[n] = mse[n] + lambda T vb[n] (mse, vb: may be NULL) and dout (N * 2D
 * floats) = scale * d loss[n] / d out[n]. */
void grad_hybrid_loss(const diffusion *d, const float *x0, const float *xt, const float *eps,
                      const float *out, const int *t, int N, size_t D, double scale, double *loss,
                      double *mse, double *vb, float *dout);

typedef struct {
    double loss_sum;      /* sum over samples of their loss (L_simple, or L_hybrid) */
    /* with learn_sigma, the sums of L_hybrid's two terms as they enter it: L_simple and
     * lambda T L_t (loss_sum = mse_sum + vb_sum up to rounding); 0 without */
    double mse_sum, vb_sum;
    double q_sum[4];      /* per timestep quartile (t * 4 / T) */
    long q_count[4];
    long n;
} loss_stats;

typedef struct {
    unet *model;             /* borrowed */
    const diffusion *diff;   /* borrowed */
    const dataset *ds;       /* borrowed */
    prefetcher *pf;          /* borrowed, optional: when set, x0 is read through it */
    uint64_t seed;
    int micro, channels, size;
    /* class-conditional models (grad_worker_set_labels): K > 0 classes, the label
     * dropout probability, and the labels of the micro-batch (owned) */
    int num_classes;
    double label_dropout;
    int *y;
    size_t D;
    size_t out_D;            /* the model's output per image: D, or 2D with learn_sigma */
    /* owned scratch, micro images each (pred, dpred: out_D floats per image) */
    uint8_t *u8, *flip;
    float *x0, *xt, *eps, *pred, *dpred;
    double *loss;
    double *mse, *vb;        /* learn_sigma: grad_hybrid_loss's parts, else NULL */
    int *t;
    uint64_t *ids;
    /* optional: installed on the model for the last micro-batch's backward only,
     * when the step's gradients become final (see unet_set_backward_hook) */
    unet_backward_hook final_hook;
    void *final_hook_ctx;
    uint32_t *pf_idx;        /* owned scratch for grad_worker_prefetch */
    size_t pf_cap;
} grad_worker;

/* micro: images per forward/backward (<= the model's max_batch). */
void grad_worker_init(grad_worker *w, unet *model, const diffusion *diff, const dataset *ds,
                      uint64_t seed, int micro, int channels, int size);
void grad_worker_free(grad_worker *w);
/* A class-conditional model (num_classes > 0; the dataset's labels checked with
 * dataset_check_labels): each sample's label is its record's, replaced by the null
 * label num_classes when a uniform draw keyed on (seed, step, sample id,
 * RNG_PURPOSE_LABEL_DROP) is below label_dropout, so the choice does not depend on
 * the worker count. */
void grad_worker_set_labels(grad_worker *w, int num_classes, double label_dropout);
/* The label sample `it` of step `step` trains with (the null label when dropped). */
int grad_worker_label(const grad_worker *w, uint64_t step, const batch_item *it);
/* Reads records through `pf` (borrowed, NULL to stop) from now on. */
void grad_worker_set_prefetcher(grad_worker *w, prefetcher *pf);
/* Asks the prefetcher (if set) to read the records of items[0..n-1] in the background:
 * call it with this worker's share of the next step before computing the current one. */
void grad_worker_prefetch(grad_worker *w, const batch_item *items, int n);
/* Accumulates into grads (n_params floats) for items[0..n-1] of step `step`, whose
 * global batch has total_batch samples. Adds to *st. Returns 0 or -1 (data error). */
int grad_worker_run(grad_worker *w, const float *params, float *grads, uint64_t step,
                    const batch_item *items, int n, int total_batch, loss_stats *st);
/* The same inputs grad_worker_run would build for items (x0 after flip, eps) —
 * for reference dumps. x0 and eps hold n * D floats. */
int grad_worker_inputs(grad_worker *w, uint64_t step, const batch_item *items, int n, float *x0,
                       float *eps);

#endif
