/* Negative log-likelihood bound in bits/dim, as the authors' code computes it
 * (diffusion_tf/diffusion_utils_2.py: calc_bpd_loop, _vb_terms_bpd, _prior_bpd and
 * utils.discretized_gaussian_log_likelihood). Index t is 0..T-1; docs/evaluation.md
 * gives every formula.
 *
 *   total = sum_{t=0}^{T-1} L_t + L_prior
 *   L_0   = -log p(x0 | x_1) under the discretized Gaussian decoder (bins of
 *           +-1/255, open-ended edge bins at -1 and 1)
 *   L_t   = KL(q(x_{t-1} | x_t, x0) || p_theta(x_{t-1} | x_t)), t >= 1
 *   L_prior = KL(q(x_{T-1} | x0) || N(0, I))
 * each a mean over the D values of an image divided by log 2.
 *
 * The terms are common/diffusion/vlb.h's. p_theta uses the model's fixed variance
 * of the given kind (SAMPLING_VAR_BETA: the authors' 'fixedlarge',
 * SAMPLING_VAR_BETA_TILDE: 'fixedsmall'), or, for a model with learned variances
 * (model.learn_sigma: unet_out_channels is twice C), the learned one of each
 * value (improved-diffusion's LEARNED_RANGE; kind is then unused), and the mean
 * of diffusion_p_mean_variance, x0 clipped to [-1, 1] when clip is set (the
 * authors' calc_bpd_loop default). x_t = q_sample(x0, t, eps) with eps keyed on
 * (seed, image id, t) (RNG_PURPOSE_EVAL), so a result depends on the image, not on
 * the batch or the rank it was computed in.
 *
 * Buffers are the caller's unless stated; nothing here prints. */
#ifndef DDPM_BPD_H
#define DDPM_BPD_H

#include <stddef.h>
#include <stdint.h>

#include "common/diffusion/diffusion.h"
#include "common/model/unet.h"

/* L_prior per image (bits/dim): KL(N(sqrt(abar_{T-1}) x0, 1 - abar_{T-1}) || N(0, 1)). */
void bpd_prior(const diffusion *d, const float *x0, int N, size_t D, double *prior);

/* ---- which timesteps are evaluated (docs/evaluation.md, "Strided estimate") ----
 * stride 1: every t in 0..T-1, weight 1 (the exact bound).
 * stride k > 1: t = 0 (weight 1) always, and among t = 1..T-1:
 *   BPD_ESTIMATE_UNBIASED: t = 1 + r + j k with an offset r in 0..k-1 drawn per
 *     image (keyed on seed and image id), weight k. Every t >= 1 is taken with
 *     probability 1/k, so the weighted sum is an unbiased estimate of sum L_t.
 *   BPD_ESTIMATE_TRAPEZOID: the grid 1, 1+k, 1+2k, ... plus T-1, the same for every
 *     image; weights make the weighted sum equal the sum over t = 1..T-1 of the
 *     piecewise-linear interpolation of L between grid points (deterministic,
 *     biased where L_t curves). */
typedef enum { BPD_ESTIMATE_UNBIASED = 0, BPD_ESTIMATE_TRAPEZOID = 1 } bpd_estimate;

/* Writes the evaluated indices (ascending) and their weights for one image; ts and
 * w need room for T entries. Returns the count. */
int bpd_plan(int T, int stride, bpd_estimate estimate, uint64_t seed, uint64_t image_id, int *ts,
             double *w);

typedef struct {
    const diffusion *diff; /* borrowed; the model receives diff->timestep_map[t] */
    int kind;              /* sampling_variance */
    int clip;              /* clip predicted x0 to [-1, 1] (authors: yes) */
    int stride;            /* >= 1 */
    bpd_estimate estimate;
    uint64_t seed;         /* keys the noise and the strided offsets */
} bpd_config;

/* Sums over images, so that ranks can add them (MPI_Reduce with MPI_SUM over the
 * whole struct's doubles: use bpd_result_doubles / bpd_result_count).
 * Every array has T entries, owned by the struct (bpd_result_free). */
typedef struct {
    int T;
    double *buf;        /* one allocation: term_sum | mse_sum | count | scalars */
    double *term_sum;   /* sum over images that evaluated t of L_t (bits/dim) */
    double *mse_sum;    /* same for the x0 prediction MSE */
    double *count;      /* images that evaluated t */
    double *scalars;    /* see BPD_S_* */
} bpd_result;

enum {
    BPD_S_IMAGES = 0,   /* images evaluated */
    BPD_S_PRIOR,        /* sum of L_prior */
    BPD_S_TOTAL,        /* sum of each image's (estimated) total bpd */
    BPD_S_TOTAL_SQ,     /* sum of squares of the same (for the standard error) */
    BPD_S_DECODER,      /* sum of L_0 */
    BPD_S_COUNT
};

int bpd_result_init(bpd_result *r, int T);
void bpd_result_free(bpd_result *r);
/* Number of doubles in r->buf (3T + BPD_S_COUNT). */
size_t bpd_result_doubles(const bpd_result *r);
/* Mean total bits/dim over the images, and its standard error (0 for one image). */
double bpd_result_mean(const bpd_result *r);
double bpd_result_stderr(const bpd_result *r);

/* Progress callback: pairs (image, timestep) done so far and in all. */
typedef void (*bpd_progress_fn)(void *ctx, size_t done, size_t total);

/* Evaluates N images x0 (N*C*S*S floats in [-1, 1], borrowed), whose ids (keys of
 * their noise) are image_ids[n], with the model m (forward only; batches of
 * unet_max_batch(m) (image, t) pairs) and params (borrowed), and ADDS the sums to
 * r. labels (N class labels, borrowed, may be NULL): for a class-conditional model
 * (unet_num_classes K > 0), image n's p_theta is conditioned on labels[n] in
 * 0..K-1, so the bound is that of -log p(x0 | y); NULL gives every image the null
 * label (the bound of the unconditional model that label dropout trained; for
 * K = 0 labels must be NULL). per_image_total (N doubles, may be NULL) receives
 * each image's estimated total. Returns 0, or -1 (err_msg) on bad arguments (a
 * label out of range names the image), or a non-finite term. */
int bpd_evaluate(unet *m, const float *params, const bpd_config *cfg, const float *x0,
                 const uint64_t *image_ids, const int *labels, int N, int C, int S, bpd_result *r,
                 double *per_image_total, bpd_progress_fn progress, void *ctx);

/* The same from uint8 CHW images (C*S*S bytes each, borrowed), converted to [-1, 1]
 * as training does (v/127.5 - 1), a chunk at a time. */
int bpd_evaluate_u8(unet *m, const float *params, const bpd_config *cfg, const uint8_t *chw,
                    const uint64_t *image_ids, const int *labels, int N, int C, int S, bpd_result *r,
                    double *per_image_total, bpd_progress_fn progress, void *ctx);

#endif
