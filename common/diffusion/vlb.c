/* Terms of the variational bound (see vlb.h). */
#include "common/diffusion/vlb.h"

#include <math.h>

#define SQRT_2_OVER_PI 0.7978845608028654 /* sqrt(2 / pi) */
#define CDF_CUBIC 0.044715

double vlb_normal_kl(double mean1, double logvar1, double mean2, double logvar2) {
    double dm = mean1 - mean2;
    return 0.5 * (-1.0 + logvar2 - logvar1 + exp(logvar1 - logvar2) + dm * dm * exp(-logvar2));
}

double vlb_approx_std_normal_cdf(double x) {
    return 0.5 * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + CDF_CUBIC * x * x * x)));
}

/* d/dx of vlb_approx_std_normal_cdf. */
static double approx_std_normal_pdf(double x) {
    double th = tanh(SQRT_2_OVER_PI * (x + CDF_CUBIC * x * x * x));
    return 0.5 * (1.0 - th * th) * SQRT_2_OVER_PI * (1.0 + 3.0 * CDF_CUBIC * x * x);
}

double vlb_discretized_gaussian_loglik(double x, double mean, double log_scale) {
    double c = x - mean, inv = exp(-log_scale);
    double cdf_plus = vlb_approx_std_normal_cdf(inv * (c + 1.0 / 255.0));
    double cdf_min = vlb_approx_std_normal_cdf(inv * (c - 1.0 / 255.0));
    if (x < -0.999) return log(fmax(cdf_plus, 1e-12));
    if (x > 0.999) return log(fmax(1.0 - cdf_min, 1e-12));
    return log(fmax(cdf_plus - cdf_min, 1e-12));
}

double vlb_discretized_gaussian_dlogscale(double x, double mean, double log_scale) {
    double c = x - mean, inv = exp(-log_scale);
    /* the bin edges in standard units; each moves by -itself per unit of log_scale */
    double zp = inv * (c + 1.0 / 255.0), zm = inv * (c - 1.0 / 255.0);
    double cdf_plus = vlb_approx_std_normal_cdf(zp), cdf_min = vlb_approx_std_normal_cdf(zm);
    double dplus = -zp * approx_std_normal_pdf(zp), dmin = -zm * approx_std_normal_pdf(zm);
    if (x < -0.999) return cdf_plus > 1e-12 ? dplus / cdf_plus : 0.0;
    if (x > 0.999) return 1.0 - cdf_min > 1e-12 ? -dmin / (1.0 - cdf_min) : 0.0;
    double p = cdf_plus - cdf_min;
    return p > 1e-12 ? (dplus - dmin) / p : 0.0;
}

/* The model's x0 = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps, clipped to [-1, 1] when clip. */
static inline double pred_x0(double sra, double srm1, int clip, float x, float e) {
    double p = sra * x - srm1 * e;
    return clip ? (p < -1 ? -1 : (p > 1 ? 1 : p)) : p;
}

/* One sample with the fixed log variance model_lv (the same for every value). */
static double term_fixed(const diffusion *d, int tn, int clip, double model_lv, const float *a,
                         const float *x, const float *e, size_t D, double *mse) {
    double sra = d->sqrt_recip_alphas_cumprod[tn], srm1 = d->sqrt_recipm1_alphas_cumprod[tn];
    double c1 = d->posterior_mean_coef1[tn], c2 = d->posterior_mean_coef2[tn];
    double true_lv = d->posterior_log_variance_clipped[tn];
    double sum = 0, se = 0;
    for (size_t i = 0; i < D; i++) {
        double p = pred_x0(sra, srm1, clip, x[i], e[i]);
        double err = p - a[i];
        se += err * err;
        if (tn == 0) {
            double mean = c1 * p + c2 * x[i];
            sum -= vlb_discretized_gaussian_loglik(a[i], mean, 0.5 * model_lv);
        } else {
            /* true mean - model mean = c1 (x0 - x0_pred): the c2 x_t parts cancel */
            sum += err * err;
        }
    }
    *mse = se / (double)D;
    if (tn == 0) return sum / (double)D;
    /* normal_kl per value, with the parts that do not depend on the value summed once */
    return 0.5 * (-1.0 + model_lv - true_lv + exp(true_lv - model_lv)) +
           0.5 * c1 * c1 * exp(-model_lv) * sum / (double)D;
}

/* One sample with a learned log variance per value; dv (may be NULL) receives
 * g * d(term)/dv, term in nats per dim. */
static double term_learned(const diffusion *d, int tn, int clip, const float *a, const float *x,
                           const float *e, const float *v, size_t D, double *mse, float *dv,
                           double g) {
    double sra = d->sqrt_recip_alphas_cumprod[tn], srm1 = d->sqrt_recipm1_alphas_cumprod[tn];
    double c1 = d->posterior_mean_coef1[tn], c2 = d->posterior_mean_coef2[tn];
    double true_lv = d->posterior_log_variance_clipped[tn], lo, hi;
    diffusion_learned_range(d, tn, &lo, &hi);
    /* d(log variance)/dv, and the mean over D */
    const double dlv = 0.5 * (hi - lo), gd = g * dlv / (double)D;
    double sum = 0, se = 0;
    for (size_t i = 0; i < D; i++) {
        double p = pred_x0(sra, srm1, clip, x[i], e[i]);
        double err = p - a[i];
        se += err * err;
        double lv = diffusion_learned_log_variance(v[i], lo, hi), dterm;
        if (tn == 0) {
            double mean = c1 * p + c2 * x[i];
            sum -= vlb_discretized_gaussian_loglik(a[i], mean, 0.5 * lv);
            dterm = -0.5 * vlb_discretized_gaussian_dlogscale(a[i], mean, 0.5 * lv);
        } else {
            double dm = c1 * err;
            sum += vlb_normal_kl(0.0, true_lv, dm, lv);
            dterm = 0.5 * (1.0 - exp(true_lv - lv) - dm * dm * exp(-lv));
        }
        if (dv) dv[i] = (float)(gd * dterm);
    }
    *mse = se / (double)D;
    return sum / (double)D;
}

void vlb_terms(const diffusion *d, int kind, int clip, const float *x0, const float *xt,
               const float *eps, const float *v, const int *t, int N, size_t D, double *vb,
               double *mse, float *dv, double dv_scale) {
    for (int n = 0; n < N; n++) {
        int tn = t[n];
        size_t o = (size_t)n * D;
        double se, term;
        if (v)
            term = term_learned(d, tn, clip, x0 + o, xt + o, eps + o, v + o, D, &se,
                                dv ? dv + o : NULL, dv_scale / M_LN2);
        else
            term = term_fixed(d, tn, clip, diffusion_log_variance(d, (sampling_variance)kind, tn),
                              x0 + o, xt + o, eps + o, D, &se);
        vb[n] = term / M_LN2;
        if (mse) mse[n] = se;
    }
}
