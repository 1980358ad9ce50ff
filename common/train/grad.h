/* Algorithm 1's per-sample work: load x0, draw eps (keyed on the sample id), form
 * x_t, run eps_theta forward and backward, and accumulate the gradient of
 * L = (1/B) sum_i mean_D (eps_theta(x_t, t) - eps)^2 over the global batch B.
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

typedef struct {
    double loss_sum;      /* sum over samples of their L_simple */
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
    /* owned scratch, micro images each */
    uint8_t *u8, *flip;
    float *x0, *xt, *eps, *pred, *dpred;
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
