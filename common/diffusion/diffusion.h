/* Diffusion math of Ho et al. (2020): beta schedules (computed in double), the
 * forward process, posterior coefficients, the sampler steps (ancestral, as in
 * Algorithm 2, and DDIM), timestep respacing and L_simple.
 * Timestep index t is 0..T-1 everywhere (the paper's t = index + 1).
 * docs/diffusion.md gives every formula.
 *
 * Array conventions for the per-sample functions: N samples of D floats each,
 * sample n at offset n*D; t holds N indices (each in 0..T-1, not checked: the
 * caller's indices come from its own sampler). All arrays are the caller's;
 * the functions compute in double and round only the final result to float.
 * An output may be the same array as an input only where stated. */
#ifndef DDPM_DIFFUSION_H
#define DDPM_DIFFUSION_H

#include <stddef.h>

typedef enum { SAMPLING_VAR_BETA = 0, SAMPLING_VAR_BETA_TILDE = 1 } sampling_variance;

typedef enum { BETA_SCHEDULE_LINEAR = 0, BETA_SCHEDULE_COSINE = 1 } beta_schedule;


typedef struct {
    int T;
    /* Every table has T entries, double precision, owned by the struct. */
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
    /* sigma^2 = beta_t ("beta", fixedlarge): betas with index 0 replaced by
     * posterior_variance[1], as the authors do so that the decoder step is not
     * wider than beta-tilde there; and its log. */
    double *large_variance;
    double *large_log_variance;
    /* Index of each step in the original process: the model's timestep input.
     * The identity unless built by diffusion_init_respaced. original_T is the
     * length of the original process. */
    int *timestep_map;
    int original_T;
} diffusion;

/* Linear: betas = linspace(beta_start, beta_end, T) (numpy's: start + i*step,
 * last = beta_end). Cosine (Nichol & Dhariwal 2021), beta_start/end unused:
 * alpha_bar(s) = cos((s/T + 0.008)/1.008 * pi/2)^2, beta_t = min(1 - abar(t+1)/abar(t), 0.999).
 * Needs T >= 2 (the clipped log variance reads index 1) and betas in (0, 1).
 * Returns 0, or -1 (err_msg) on bad arguments leaving d empty.
 * diffusion_free releases the tables (and is safe on a zeroed or freed struct). */
int diffusion_init(diffusion *d, beta_schedule schedule, int T, double beta_start, double beta_end);
/* Tables from explicit betas (copied; the caller keeps its array). Same checks. */
int diffusion_init_betas(diffusion *d, const double *betas, int T);
void diffusion_free(diffusion *d);

/* improved-diffusion's space_timesteps. spec is "ddimN" (the first integer stride
 * s = 1..T-1 with ceil(T/s) == N, keeping 0, s, 2s, ...) or comma-separated
 * section counts "c1,c2,..." (T split into equal sections, the first T % k one
 * step longer; section i keeps c_i steps at round(j * (size-1)/(c_i-1)), round
 * half to even, or its first step when c_i = 1). Writes the kept original
 * indices, ascending, to a new array *kept (the caller frees it) and their count
 * to *n_kept. Returns 0, or -1 (err_msg names the spec) on a bad spec. */
int diffusion_space_timesteps(int T, const char *spec, int **kept, int *n_kept);
/* A respaced process (improved-diffusion's SpacedDiffusion): keeps the steps that
 * diffusion_space_timesteps(base->T, spec) selects, with betas
 * new_beta_j = 1 - abar[kept_j] / abar[kept_{j-1}] (abar before the first kept = 1),
 * and every other table recomputed from these betas. out->timestep_map[j] =
 * base->timestep_map[kept_j]. Needs at least 2 kept steps. base is borrowed;
 * out is a new diffusion the caller frees. Returns 0 or -1 (err_msg). */
int diffusion_init_respaced(diffusion *out, const diffusion *base, const char *spec);

/* Variance of p(x_{t-1} | x_t) at index t: large_variance[t] for SAMPLING_VAR_BETA,
 * posterior_variance[t] for SAMPLING_VAR_BETA_TILDE; and the matching log
 * (large_log_variance / posterior_log_variance_clipped, finite at t = 0). */
double diffusion_variance(const diffusion *d, sampling_variance kind, int t);
double diffusion_log_variance(const diffusion *d, sampling_variance kind, int t);

/* x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, per sample; D values per sample. */
void diffusion_q_sample(const diffusion *d, float *xt, const float *x0, const float *eps,
                        const int *t, int N, size_t D);
/* x0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps. */
void diffusion_predict_x0(const diffusion *d, float *x0, const float *xt, const float *eps,
                          const int *t, int N, size_t D);
/* Posterior q(x_{t-1} | x_t, x0): mean = coef1 x0 + coef2 x_t. */
void diffusion_posterior_mean(const diffusion *d, float *mean, const float *x0, const float *xt,
                              const int *t, int N, size_t D);

/* The authors' p_mean_variance for an epsilon-predicting model: x0 from (x_t, eps),
 * clipped to [-1, 1] when clip is non-zero, then mean = posterior mean of (x0, x_t).
 * Writes mean and x0 (N*D floats; x0 may be NULL), and per sample the variance and
 * log variance of the chosen kind (N doubles each; either may be NULL). */
void diffusion_p_mean_variance(const diffusion *d, sampling_variance kind, int clip,
                               float *mean, float *x0, double *variance, double *log_variance,
                               const float *xt, const float *eps, const int *t, int N, size_t D);

/* One ancestral step of Algorithm 2:
 * x_{t-1} = mean + [t > 0] exp(0.5 log_variance_t) z, mean as in
 * diffusion_p_mean_variance (computed in double, not rounded in between).
 * z: N*D standard normals, or NULL for no noise. x0_out (N*D, may be NULL) receives
 * the (clipped) x0 prediction. x_prev may be the same array as xt (in place). */
void diffusion_p_sample(const diffusion *d, sampling_variance kind, int clip, float *x_prev,
                        float *x0_out, const float *xt, const float *eps, const float *z,
                        const int *t, int N, size_t D);

/* Learned variances (improved DDPM, model.learn_sigma; improved-diffusion's
 * LEARNED_RANGE): the model's second output v gives, per value,
 *   frac = (v + 1) / 2,  log sigma^2 = frac log(beta_t) + (1 - frac) log(beta-tilde_t)
 * with log beta-tilde_t = posterior_log_variance_clipped[t] (index 0 takes index
 * 1's value) and log(beta_t) = log(betas[t]) (not large_variance's clipped one).
 * v is not clamped: frac outside [0, 1] extrapolates, as in improved-diffusion.
 * diffusion_learned_range gives the two ends at index t: min_log (beta-tilde),
 * max_log (beta). */
void diffusion_learned_range(const diffusion *d, int t, double *min_log, double *max_log);
static inline double diffusion_learned_log_variance(double v, double min_log, double max_log) {
    double frac = (v + 1.0) / 2.0;
    return frac * max_log + (1.0 - frac) * min_log;
}

/* diffusion_p_sample with the learned log variance of each value from v (N*D,
 * the model's second output) in place of a fixed kind. */
void diffusion_p_sample_learned(const diffusion *d, int clip, float *x_prev, float *x0_out,
                                const float *xt, const float *eps, const float *v, const float *z,
                                const int *t, int N, size_t D);

/* A learned-variance model's output, per sample [eps (D) | v (D)], split into
 * eps (N*D) and v (N*D; NULL: eps only). eps may be out itself (compacted in
 * place); v must not overlap out. */
void diffusion_split_output(const float *out, int N, size_t D, float *eps, float *v);

/* One DDIM step (Song et al. 2021, as improved-diffusion's ddim_sample): x0 as above
 * (clipped when clip), eps' = (sqrt(1/abar_t) x_t - x0) / sqrt(1/abar_t - 1),
 * sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev),
 * x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps' + [t > 0] sigma z.
 * eta in [0, 1] (rounding can make 1 - abar_prev - sigma^2 a hair below 0 at eta 1;
 * it is clamped to 0). z may be NULL (no noise; what eta = 0 needs). x0_out may be
 * NULL; x_prev may be xt. Returns 0, or -1 (err_msg) when eta is outside [0, 1]. */
int diffusion_ddim_step(const diffusion *d, double eta, int clip, float *x_prev, float *x0_out,
                        const float *xt, const float *eps, const float *z, const int *t, int N,
                        size_t D);

/* L_simple per sample: loss[n] = mean over D of (eps_pred - eps)^2, in double
 * (loss: N doubles, the caller's). */
void diffusion_loss_simple(double *loss, const float *eps_pred, const float *eps, int N, size_t D);

/* The quartile 0..3 of index t (t * 4 / T), for per-quartile loss logging. */
int diffusion_t_quartile(const diffusion *d, int t);

#endif
