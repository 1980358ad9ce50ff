/* Diffusion math of Ho et al. (2020): beta schedules (computed in double), the
 * forward process, posterior coefficients and L_simple.
 * Timestep index t is 0..T-1 everywhere (the paper's t = index + 1). */
#ifndef DDPM_DIFFUSION_H
#define DDPM_DIFFUSION_H

#include <stddef.h>

#include "../config/config.h"

typedef struct {
    int T;
    /* Every table has T entries, double precision. */
    double *betas;
    double *alphas_cumprod;        /* prod_{s<=t} (1 - beta_s) */
    double *alphas_cumprod_prev;   /* alphas_cumprod[t-1], 1 at t = 0 */
    double *sqrt_alphas_cumprod;
    double *sqrt_one_minus_alphas_cumprod;
    double *log_one_minus_alphas_cumprod;
    double *sqrt_recip_alphas_cumprod;
    double *sqrt_recipm1_alphas_cumprod;
    double *posterior_variance;            /* beta-tilde */
    double *posterior_log_variance_clipped;/* log beta-tilde, index 0 uses index 1's value */
    double *posterior_mean_coef1;          /* times x0 */
    double *posterior_mean_coef2;          /* times x_t */
} diffusion;

/* Linear: betas = linspace(beta_start, beta_end, T). Cosine (Nichol & Dhariwal 2021):
 * alpha_bar(s) = cos((s/T + 0.008)/1.008 * pi/2)^2, beta_t = min(1 - abar(t+1)/abar(t), 0.999).
 * Returns 0 or -1 (err_msg) on bad arguments. diffusion_free releases the tables. */
int diffusion_init(diffusion *d, beta_schedule schedule, int T, double beta_start, double beta_end);
void diffusion_free(diffusion *d);

/* x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, per sample; D values per sample. */
void diffusion_q_sample(const diffusion *d, float *xt, const float *x0, const float *eps,
                        const int *t, int N, size_t D);
/* x0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps. */
void diffusion_predict_x0(const diffusion *d, float *x0, const float *xt, const float *eps,
                          const int *t, int N, size_t D);
/* Posterior q(x_{t-1} | x_t, x0): mean = coef1 x0 + coef2 x_t. */
void diffusion_posterior_mean(const diffusion *d, float *mean, const float *x0, const float *xt,
                              const int *t, int N, size_t D);

#endif
