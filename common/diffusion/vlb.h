/* Terms of the variational bound (Ho et al. 2020, eq. 5), as the authors' code
 * computes them (diffusion_tf/diffusion_utils_2.py: _vb_terms_bpd; utils.py:
 * normal_kl, approx_standard_normal_cdf, discretized_gaussian_log_likelihood) and
 * improved-diffusion's _vb_terms_bpd for learned variances. One implementation for
 * the bits/dim evaluation (common/eval/bpd) and the hybrid training loss
 * (common/train/grad). Index t is 0..T-1; docs/evaluation.md and docs/diffusion.md
 * give every formula. Everything is computed in double; nothing here prints. */
#ifndef DDPM_VLB_H
#define DDPM_VLB_H

#include <stddef.h>

#include "common/diffusion/diffusion.h"

/* Elementwise pieces (nats). */
double vlb_normal_kl(double mean1, double logvar1, double mean2, double logvar2);
/* The authors' tanh approximation of the standard normal CDF:
 * 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
double vlb_approx_std_normal_cdf(double x);
/* log of the probability of the bin of x (a value of {-1, -1 + 2/255, ..., 1}) under
 * N(mean, exp(log_scale)^2): bins [x - 1/255, x + 1/255], the first open to -inf
 * (x < -0.999) and the last to +inf (x > 0.999); each probability floored at 1e-12. */
double vlb_discretized_gaussian_loglik(double x, double mean, double log_scale);
/* Its derivative with respect to log_scale (0 where the probability is floored, as
 * the gradient of a clamp). */
double vlb_discretized_gaussian_dlogscale(double x, double mean, double log_scale);

/* The term of the bound at index t[n] for N samples, in bits/dim: the decoder NLL
 * -log p(x0 | x_1) at t = 0, KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) otherwise,
 * each a mean over the D values divided by log 2. p's mean is
 * diffusion_p_mean_variance's from eps (x0 clipped to [-1, 1] when clip). Its log
 * variance: the fixed one of `kind` (sampling_variance) when v is NULL, else the
 * learned one of each value from v (diffusion_learned_log_variance; kind unused).
 * x0, xt, eps, v: N*D floats; eps (and v) are the model's outputs. vb: N doubles.
 * mse (N doubles, may be NULL): mean over D of (x0_pred - x0)^2.
 * dv (N*D floats, may be NULL; needs v): written with dv_scale * d vb[n] / d v
 * (eps held fixed: the mean's gradient is not taken). */
void vlb_terms(const diffusion *d, int kind, int clip, const float *x0, const float *xt,
               const float *eps, const float *v, const int *t, int N, size_t D, double *vb,
               double *mse, float *dv, double dv_scale);

#endif
