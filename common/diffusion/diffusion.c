/* Diffusion tables and sampler steps; formulas in docs/diffusion.md. The table
 * expressions keep numpy's operation order of the authors' code so that a float64
 * reference agrees to rounding. */
#include "common/diffusion/diffusion.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"

#define DIFFUSION_MAX_T 10000000
#define N_TABLES 14

void diffusion_free(diffusion *d) {
    free(d->betas); /* every table lives in the one block that betas starts */
    free(d->timestep_map);
    memset(d, 0, sizeof *d);
}

static int check_T(int T) {
    if (T < 2 || T > DIFFUSION_MAX_T)
        return err_set("diffusion: timesteps must be in 2..%d, got %d", DIFFUSION_MAX_T, T);
    return 0;
}

/* Fill every table from d->betas (already set). */
static void fill_tables(diffusion *d) {
    int T = d->T;
    double cum = 1.0;
    for (int t = 0; t < T; t++) {
        double beta = d->betas[t];
        double alpha = 1.0 - beta;
        double prev = cum;
        cum *= alpha;
        d->alphas_cumprod[t] = cum;
        d->alphas_cumprod_prev[t] = prev;
        d->sqrt_alphas_cumprod[t] = sqrt(cum);
        d->sqrt_one_minus_alphas_cumprod[t] = sqrt(1.0 - cum);
        d->log_one_minus_alphas_cumprod[t] = log(1.0 - cum);
        d->sqrt_recip_alphas_cumprod[t] = sqrt(1.0 / cum);
        d->sqrt_recipm1_alphas_cumprod[t] = sqrt(1.0 / cum - 1.0);
        d->posterior_variance[t] = beta * (1.0 - prev) / (1.0 - cum);
        d->posterior_mean_coef1[t] = beta * sqrt(prev) / (1.0 - cum);
        d->posterior_mean_coef2[t] = (1.0 - prev) * sqrt(alpha) / (1.0 - cum);
    }
    /* posterior_variance[0] is 0; index 0 borrows index 1 so the log stays finite. */
    for (int t = 0; t < T; t++) {
        d->posterior_log_variance_clipped[t] = log(d->posterior_variance[t == 0 ? 1 : t]);
        d->large_variance[t] = t == 0 ? d->posterior_variance[1] : d->betas[t];
        d->large_log_variance[t] = log(d->large_variance[t]);
    }
}

/* Allocate the tables of a T-step process (betas left for the caller to fill). */
static void alloc_tables(diffusion *d, int T) {
    memset(d, 0, sizeof *d);
    d->T = T;
    double *block = xcalloc((size_t)N_TABLES * (size_t)T, sizeof(double));
    double **tables[N_TABLES] = {
        &d->betas, &d->alphas_cumprod, &d->alphas_cumprod_prev, &d->sqrt_alphas_cumprod,
        &d->sqrt_one_minus_alphas_cumprod, &d->log_one_minus_alphas_cumprod,
        &d->sqrt_recip_alphas_cumprod, &d->sqrt_recipm1_alphas_cumprod,
        &d->posterior_variance, &d->posterior_log_variance_clipped,
        &d->posterior_mean_coef1, &d->posterior_mean_coef2,
        &d->large_variance, &d->large_log_variance,
    };
    for (int i = 0; i < N_TABLES; i++) *tables[i] = block + (size_t)i * (size_t)T;
    d->timestep_map = xmalloc((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++) d->timestep_map[t] = t;
    d->original_T = T;
}

static int check_betas(const double *betas, int T) {
    for (int t = 0; t < T; t++)
        if (!(betas[t] > 0.0 && betas[t] < 1.0))
            return err_set("diffusion: beta[%d] = %g is not in (0, 1)", t, betas[t]);
    return 0;
}

int diffusion_init_betas(diffusion *d, const double *betas, int T) {
    memset(d, 0, sizeof *d);
    if (check_T(T) || check_betas(betas, T)) return -1;
    alloc_tables(d, T);
    memcpy(d->betas, betas, (size_t)T * sizeof(double));
    fill_tables(d);
    return 0;
}

/* Same operation order as improved-diffusion's lambda: the smallest betas are
 * differences of nearby ratios, so one rounding more shifts them by ~1e-12. */
static double cosine_alpha_bar(double s) {
    double c = cos((s + 0.008) / 1.008 * M_PI / 2);
    return c * c;
}

int diffusion_init(diffusion *d, beta_schedule schedule, int T, double beta_start, double beta_end) {
    memset(d, 0, sizeof *d);
    if (check_T(T)) return -1;
    double *betas = xmalloc((size_t)T * sizeof(double));
    if (schedule == BETA_SCHEDULE_LINEAR) {
        if (!(beta_start > 0.0 && beta_start < 1.0 && beta_end > 0.0 && beta_end < 1.0)) {
            free(betas);
            return err_set("diffusion: linear schedule needs beta_start and beta_end in (0, 1), "
                           "got %g and %g", beta_start, beta_end);
        }
        double step = (beta_end - beta_start) / (double)(T - 1);
        for (int t = 0; t < T; t++) betas[t] = (double)t * step + beta_start;
        betas[T - 1] = beta_end;
    } else if (schedule == BETA_SCHEDULE_COSINE) {
        for (int t = 0; t < T; t++) {
            double b = 1.0 - cosine_alpha_bar((double)(t + 1) / T) / cosine_alpha_bar((double)t / T);
            betas[t] = b < 0.999 ? b : 0.999;
        }
    } else {
        free(betas);
        return err_set("diffusion: unknown beta schedule %d", (int)schedule);
    }
    int rc = diffusion_init_betas(d, betas, T);
    free(betas);
    return rc;
}

/* Parse a positive decimal integer occupying exactly [s, end). */
static int parse_count(const char *s, const char *end, long *out) {
    if (s == end) return -1;
    long v = 0;
    for (const char *p = s; p < end; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
        if (v > INT_MAX) return -1;
    }
    *out = v;
    return 0;
}

int diffusion_space_timesteps(int T, const char *spec, int **kept, int *n_kept) {
    *kept = NULL;
    *n_kept = 0;
    if (T < 1) return err_set("timestep respacing '%s': process has %d steps", spec, T);
    if (strncmp(spec, "ddim", 4) == 0) {
        long want;
        if (parse_count(spec + 4, spec + strlen(spec), &want) || want < 1)
            return err_set("timestep respacing '%s': expected ddimN with a positive integer N", spec);
        for (int s = 1; s < T; s++) {
            if ((T + s - 1) / s == want) {
                int *k = xmalloc((size_t)want * sizeof(int));
                for (long j = 0; j < want; j++) k[j] = (int)(j * s);
                *kept = k;
                *n_kept = (int)want;
                return 0;
            }
        }
        return err_set("timestep respacing '%s': no integer stride gives exactly %ld of %d steps",
                       spec, want, T);
    }
    /* Section counts. */
    int n_sec = 1;
    for (const char *p = spec; *p; p++) n_sec += *p == ',';
    long *counts = xmalloc((size_t)n_sec * sizeof(long));
    long total = 0;
    const char *s = spec;
    for (int i = 0; i < n_sec; i++) {
        const char *e = strchr(s, ',');
        if (!e) e = s + strlen(s);
        if (parse_count(s, e, &counts[i]) || counts[i] < 1) {
            free(counts);
            return err_set("timestep respacing '%s': section %d is not a positive integer "
                           "(expected \"N\", \"N1,N2,...\" or \"ddimN\")", spec, i + 1);
        }
        total += counts[i];
        s = e + 1;
    }
    if (n_sec > T) {
        free(counts);
        return err_set("timestep respacing '%s': %d sections for %d steps", spec, n_sec, T);
    }
    int size_per = T / n_sec, extra = T % n_sec;
    int *k = xmalloc((size_t)total * sizeof(int));
    int n = 0, start = 0;
    for (int i = 0; i < n_sec; i++) {
        int size = size_per + (i < extra ? 1 : 0);
        if (size < counts[i]) {
            err_set("timestep respacing '%s': cannot take %ld steps from a section of %d",
                    spec, counts[i], size);
            free(counts);
            free(k);
            return -1;
        }
        double stride = counts[i] <= 1 ? 1.0 : (double)(size - 1) / (double)(counts[i] - 1);
        double cur = 0.0;
        for (long j = 0; j < counts[i]; j++) {
            /* rint rounds half to even, like Python's round. */
            k[n++] = start + (int)rint(cur);
            cur += stride;
        }
        start += size;
    }
    free(counts);
    *kept = k;
    *n_kept = n;
    return 0;
}

int diffusion_init_respaced(diffusion *out, const diffusion *base, const char *spec) {
    memset(out, 0, sizeof *out);
    int *kept, n;
    if (diffusion_space_timesteps(base->T, spec, &kept, &n)) return -1;
    if (n < 2) {
        free(kept);
        return err_set("timestep respacing '%s': keeps %d step(s), at least 2 are needed", spec, n);
    }
    double *betas = xmalloc((size_t)n * sizeof(double));
    double last = 1.0;
    for (int j = 0; j < n; j++) {
        double abar = base->alphas_cumprod[kept[j]];
        betas[j] = 1.0 - abar / last;
        last = abar;
    }
    int rc = diffusion_init_betas(out, betas, n);
    free(betas);
    if (rc) {
        free(kept);
        return err_prefix("timestep respacing '%s': ", spec);
    }
    for (int j = 0; j < n; j++) out->timestep_map[j] = base->timestep_map[kept[j]];
    out->original_T = base->original_T;
    free(kept);
    return 0;
}

double diffusion_variance(const diffusion *d, sampling_variance kind, int t) {
    return kind == SAMPLING_VAR_BETA_TILDE ? d->posterior_variance[t] : d->large_variance[t];
}

double diffusion_log_variance(const diffusion *d, sampling_variance kind, int t) {
    return kind == SAMPLING_VAR_BETA_TILDE ? d->posterior_log_variance_clipped[t]
                                           : d->large_log_variance[t];
}

void diffusion_q_sample(const diffusion *d, float *xt, const float *x0, const float *eps,
                        const int *t, int N, size_t D) {
    for (int n = 0; n < N; n++) {
        double a = d->sqrt_alphas_cumprod[t[n]], b = d->sqrt_one_minus_alphas_cumprod[t[n]];
        size_t o = (size_t)n * D;
        for (size_t i = 0; i < D; i++) xt[o + i] = (float)(a * x0[o + i] + b * eps[o + i]);
    }
}

void diffusion_predict_x0(const diffusion *d, float *x0, const float *xt, const float *eps,
                          const int *t, int N, size_t D) {
    for (int n = 0; n < N; n++) {
        double a = d->sqrt_recip_alphas_cumprod[t[n]], b = d->sqrt_recipm1_alphas_cumprod[t[n]];
        size_t o = (size_t)n * D;
        for (size_t i = 0; i < D; i++) x0[o + i] = (float)(a * xt[o + i] - b * eps[o + i]);
    }
}

void diffusion_posterior_mean(const diffusion *d, float *mean, const float *x0, const float *xt,
                              const int *t, int N, size_t D) {
    for (int n = 0; n < N; n++) {
        double c1 = d->posterior_mean_coef1[t[n]], c2 = d->posterior_mean_coef2[t[n]];
        size_t o = (size_t)n * D;
        for (size_t i = 0; i < D; i++) mean[o + i] = (float)(c1 * x0[o + i] + c2 * xt[o + i]);
    }
}

/* x0 prediction of one value in double, clipped when asked. */
static inline double x0_of(const diffusion *d, int t, double xt, double eps, int clip) {
    double x0 = d->sqrt_recip_alphas_cumprod[t] * xt - d->sqrt_recipm1_alphas_cumprod[t] * eps;
    if (clip) x0 = x0 < -1.0 ? -1.0 : x0 > 1.0 ? 1.0 : x0;
    return x0;
}

void diffusion_p_mean_variance(const diffusion *d, sampling_variance kind, int clip,
                               float *mean, float *x0, double *variance, double *log_variance,
                               const float *xt, const float *eps, const int *t, int N, size_t D) {
    for (int n = 0; n < N; n++) {
        int tn = t[n];
        double c1 = d->posterior_mean_coef1[tn], c2 = d->posterior_mean_coef2[tn];
        size_t o = (size_t)n * D;
        for (size_t i = 0; i < D; i++) {
            double x = xt[o + i];
            double x0v = x0_of(d, tn, x, eps[o + i], clip);
            if (x0) x0[o + i] = (float)x0v;
            mean[o + i] = (float)(c1 * x0v + c2 * x);
        }
        if (variance) variance[n] = diffusion_variance(d, kind, tn);
        if (log_variance) log_variance[n] = diffusion_log_variance(d, kind, tn);
    }
}

void diffusion_learned_range(const diffusion *d, int t, double *min_log, double *max_log) {
    *min_log = d->posterior_log_variance_clipped[t];
    *max_log = log(d->betas[t]);
}

/* One ancestral step; the log variance is the fixed one of `kind`, or per value
 * from v (learned range) when v is not NULL. */
static void p_sample(const diffusion *d, sampling_variance kind, int clip, float *x_prev,
                     float *x0_out, const float *xt, const float *eps, const float *v,
                     const float *z, const int *t, int N, size_t D) {
    for (int n = 0; n < N; n++) {
        int tn = t[n];
        double c1 = d->posterior_mean_coef1[tn], c2 = d->posterior_mean_coef2[tn];
        /* No noise on the last step (index 0): it outputs the mean. */
        int noisy = tn > 0 && z;
        double sd = noisy && !v ? exp(0.5 * diffusion_log_variance(d, kind, tn)) : 0.0;
        double lo = 0, hi = 0;
        if (v) diffusion_learned_range(d, tn, &lo, &hi);
        size_t o = (size_t)n * D;
        for (size_t i = 0; i < D; i++) {
            double x = xt[o + i];
            double x0v = x0_of(d, tn, x, eps[o + i], clip);
            double mean = c1 * x0v + c2 * x;
            if (v && noisy) sd = exp(0.5 * diffusion_learned_log_variance(v[o + i], lo, hi));
            double noise = sd != 0.0 ? sd * z[o + i] : 0.0;
            if (x0_out) x0_out[o + i] = (float)x0v;
            x_prev[o + i] = (float)(mean + noise);
        }
    }
}

void diffusion_p_sample(const diffusion *d, sampling_variance kind, int clip, float *x_prev,
                        float *x0_out, const float *xt, const float *eps, const float *z,
                        const int *t, int N, size_t D) {
    p_sample(d, kind, clip, x_prev, x0_out, xt, eps, NULL, z, t, N, D);
}

void diffusion_p_sample_learned(const diffusion *d, int clip, float *x_prev, float *x0_out,
                                const float *xt, const float *eps, const float *v, const float *z,
                                const int *t, int N, size_t D) {
    p_sample(d, SAMPLING_VAR_BETA, clip, x_prev, x0_out, xt, eps, v, z, t, N, D);
}

void diffusion_split_output(const float *out, int N, size_t D, float *eps, float *v) {
    for (int n = 0; n < N; n++) {
        memmove(eps + (size_t)n * D, out + (size_t)n * 2 * D, D * sizeof(float));
        if (v) memcpy(v + (size_t)n * D, out + ((size_t)n * 2 + 1) * D, D * sizeof(float));
    }
}

int diffusion_ddim_step(const diffusion *d, double eta, int clip, float *x_prev, float *x0_out,
                        const float *xt, const float *eps, const float *z, const int *t, int N,
                        size_t D) {
    if (!(eta >= 0.0 && eta <= 1.0))
        return err_set("ddim: eta must be in [0, 1], got %g", eta);
    for (int n = 0; n < N; n++) {
        int tn = t[n];
        double abar = d->alphas_cumprod[tn], abar_prev = d->alphas_cumprod_prev[tn];
        double sigma = eta * sqrt((1.0 - abar_prev) / (1.0 - abar)) * sqrt(1.0 - abar / abar_prev);
        double dir2 = 1.0 - abar_prev - sigma * sigma;
        double dir = sqrt(dir2 > 0.0 ? dir2 : 0.0);
        double sa_prev = sqrt(abar_prev);
        double noise_sd = (tn > 0 && z) ? sigma : 0.0;
        double ra = d->sqrt_recip_alphas_cumprod[tn], rm1 = d->sqrt_recipm1_alphas_cumprod[tn];
        size_t o = (size_t)n * D;
        for (size_t i = 0; i < D; i++) {
            double x = xt[o + i];
            double x0v = x0_of(d, tn, x, eps[o + i], clip);
            /* eps consistent with the (clipped) x0, as improved-diffusion does. */
            double e = (ra * x - x0v) / rm1;
            double v = x0v * sa_prev + dir * e;
            if (noise_sd != 0.0) v += noise_sd * z[o + i];
            if (x0_out) x0_out[o + i] = (float)x0v;
            x_prev[o + i] = (float)v;
        }
    }
    return 0;
}

void diffusion_loss_simple(double *loss, const float *eps_pred, const float *eps, int N, size_t D) {
    for (int n = 0; n < N; n++) {
        double s = 0.0;
        size_t o = (size_t)n * D;
        for (size_t i = 0; i < D; i++) {
            double r = (double)eps_pred[o + i] - (double)eps[o + i];
            s += r * r;
        }
        loss[n] = D ? s / (double)D : 0.0;
    }
}

int diffusion_t_quartile(const diffusion *d, int t) {
    long q = (long)t * 4 / d->T;
    return q < 0 ? 0 : q > 3 ? 3 : (int)q;
}
