/* DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided
 * Sampling of Diffusion Probabilistic Models", Algorithm 2: multistep, second
 * order, data prediction) on the discrete schedule of a trained model.
 *
 * The model is a discrete-time one: it is evaluated only at integer indices
 * 0..T-1, so the solver's time points are indices, and alpha_t = sqrt(abar_t),
 * sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t) come from the
 * schedule's alphas_cumprod at those indices. A plan of n network evaluations
 * visits n indices t_0 = T-1 > t_1 > ... > t_{n-1} and ends at the clean data
 * (alpha = 1, sigma = 0, lambda = +inf), as DDIM's last step and diffusers'
 * final_sigmas_type "zero" do. Step i goes from t_i to t_{i+1} with the data
 * prediction x0_i = (x - sigma_i eps) / alpha_i:
 *
 *   h_i = lambda_{i+1} - lambda_i
 *   order 1: x <- (sigma_{i+1}/sigma_i) x - alpha_{i+1} (e^{-h_i} - 1) x0_i
 *   order 2: r = h_{i-1} / h_i,
 *            D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1},
 *            x <- (sigma_{i+1}/sigma_i) x - alpha_{i+1} (e^{-h_i} - 1) D
 *
 * The first step is first order (no earlier x0), and so is the last, into the
 * clean data (lambda = +inf: it returns x0_{n-1}), as in diffusers'
 * lower_order_final. docs/diffusion.md gives the spacings. */
#ifndef DDPM_DPM_SOLVER_H
#define DDPM_DPM_SOLVER_H

#include <stddef.h>

#include "common/diffusion/diffusion.h"

typedef enum {
    DPM_SPACING_TIME = 0,   /* indices round(linspace(T-1, 0, n)) */
    DPM_SPACING_LOGSNR = 1  /* lambda uniform from lambda_{T-1} to lambda_0, nearest index */
} dpm_spacing;

/* "time" or "logsnr"; the parser returns -1 for any other name. */
const char *dpm_spacing_name(dpm_spacing sp);
int dpm_spacing_parse(const char *name, dpm_spacing *out);

typedef struct {
    int n;            /* network evaluations = steps */
    int *t;           /* n indices into the schedule, strictly decreasing, t[0] = T-1 */
    int *order;       /* n: 1 or 2, the order of step i (from t_i to t_{i+1}) */
    /* n + 1 entries; entry n is the clean end: alpha 1, sigma 0, lambda +inf */
    double *alpha, *sigma, *lambda;
} dpm_plan;

/* The n indices of a spacing (n in 1..T; n = 1 gives T-1 alone), strictly
 * decreasing: after rounding, index i is lowered to at most t_{i-1} - 1 and then
 * raised to at least t_{i+1} + 1 (t_{n-1} >= 0), so that n evaluations stay n
 * distinct indices where rounding to the nearest index would repeat one. t: n
 * ints, the caller's. Returns 0 or -1 (err_msg) for n outside 1..T. */
int dpm_solver_timesteps(const diffusion *d, int n, dpm_spacing sp, int *t);

/* A plan for n evaluations over d (borrowed during the call). 0 or -1 (err_msg);
 * dpm_plan_free is safe on a zeroed or freed plan. */
int dpm_plan_init(dpm_plan *p, const diffusion *d, int n, dpm_spacing sp);
void dpm_plan_free(dpm_plan *p);

/* x0_i = (x - sigma_i eps) / alpha_i per value (in double, rounded once),
 * clipped to [-1, 1] when clip is set. N images of D values. */
void dpm_solver_x0(const dpm_plan *p, int i, int clip, float *x0, const float *x,
                   const float *eps, int N, size_t D);

/* Step i of the plan, in place on x (N images of D values): from t_i to t_{i+1}
 * with x0 = x0_i and, for a second-order step, x0_prev = x0_{i-1} (may be NULL
 * for a first-order step). z NULL: DPM-Solver++(2M), the ODE step
 *   x' = (sigma'/sigma) x - alpha' (e^{-h} - 1) D;
 * z (N x D standard normal values): SDE-DPM-Solver++(2M) (Lu et al. 2022, sec. 5;
 * diffusers' "sde-dpmsolver++", midpoint), the same D in the SDE's exact step
 *   x' = (sigma'/sigma) e^{-h} x + alpha' (1 - e^{-2h}) D + sigma' sqrt(1 - e^{-2h}) z
 * with h = lambda_{i+1} - lambda_i and D = x0 (first order) or
 * (1 + 1/(2r)) x0 - 1/(2r) x0_prev, r = (lambda_i - lambda_{i-1}) / h. The last step
 * (into the clean data) is x' = x0 for both, z unused. Each value is computed in
 * double and rounded once. */
void dpm_solver_step(const dpm_plan *p, int i, float *x, const float *x0, const float *x0_prev,
                     const float *z, int N, size_t D);

#endif
