#include "common/diffusion/dpm_solver.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"

const char *dpm_spacing_name(dpm_spacing sp) {
    return sp == DPM_SPACING_LOGSNR ? "logsnr" : "time";
}

int dpm_spacing_parse(const char *name, dpm_spacing *out) {
    if (strcmp(name, "time") == 0) *out = DPM_SPACING_TIME;
    else if (strcmp(name, "logsnr") == 0) *out = DPM_SPACING_LOGSNR;
    else return -1;
    return 0;
}

/* lambda_t = log(alpha_t / sigma_t) = 0.5 log(abar / (1 - abar)). */
static double lambda_of(const diffusion *d, int t) {
    double abar = d->alphas_cumprod[t];
    return 0.5 * (log(abar) - log1p(-abar));
}

/* numpy's linspace(start, stop, n)[i]: start + i * ((stop - start) / (n - 1)),
 * the last value exactly stop. */
static double linspace_at(double start, double stop, int n, int i) {
    if (n == 1) return start;
    if (i == n - 1) return stop;
    return (double)i * ((stop - start) / (double)(n - 1)) + start;
}

/* The index whose lambda is nearest to lam (lambda decreases with the index);
 * the lower index on a tie. */
static int nearest_index(const diffusion *d, double lam) {
    int best = 0;
    double bd = fabs(lambda_of(d, 0) - lam);
    for (int k = 1; k < d->T; k++) {
        double dk = fabs(lambda_of(d, k) - lam);
        if (dk < bd) best = k, bd = dk;
    }
    return best;
}

static int check_n(const diffusion *d, int n) {
    if (n < 1 || n > d->T)
        return err_set("dpm-solver++: %d steps: the number of network evaluations must be in "
                       "1..%d (the schedule's timesteps)", n, d->T);
    return 0;
}

int dpm_solver_timesteps(const diffusion *d, int n, dpm_spacing sp, int *t) {
    int T = d->T;
    if (check_n(d, n) != 0) return -1;
    double l_hi = lambda_of(d, T - 1), l_lo = lambda_of(d, 0);
    for (int i = 0; i < n; i++) {
        if (sp == DPM_SPACING_TIME)
            t[i] = (int)rint(linspace_at(T - 1, 0, n, i)); /* half to even, as numpy */
        else
            t[i] = nearest_index(d, linspace_at(l_hi, l_lo, n, i));
    }
    /* n distinct indices: lower each below its predecessor, then lift each above
     * its successor (t_{n-1} >= 0); with n <= T this keeps t_0 <= T-1. */
    for (int i = 1; i < n; i++)
        if (t[i] > t[i - 1] - 1) t[i] = t[i - 1] - 1;
    if (t[n - 1] < 0) t[n - 1] = 0;
    for (int i = n - 2; i >= 0; i--)
        if (t[i] < t[i + 1] + 1) t[i] = t[i + 1] + 1;
    return 0;
}

void dpm_plan_free(dpm_plan *p) {
    free(p->t);
    free(p->order);
    free(p->alpha);
    free(p->sigma);
    free(p->lambda);
    memset(p, 0, sizeof *p);
}

int dpm_plan_init(dpm_plan *p, const diffusion *d, int n, dpm_spacing sp) {
    memset(p, 0, sizeof *p);
    if (check_n(d, n) != 0) return -1;
    p->n = n;
    p->t = xcalloc((size_t)n, sizeof(int));
    p->order = xcalloc((size_t)n, sizeof(int));
    p->alpha = xcalloc((size_t)n + 1, sizeof(double));
    p->sigma = xcalloc((size_t)n + 1, sizeof(double));
    p->lambda = xcalloc((size_t)n + 1, sizeof(double));
    dpm_solver_timesteps(d, n, sp, p->t);
    for (int i = 0; i < n; i++) {
        double abar = d->alphas_cumprod[p->t[i]];
        p->alpha[i] = sqrt(abar);
        p->sigma[i] = sqrt(1.0 - abar);
        p->lambda[i] = lambda_of(d, p->t[i]);
        /* first order where there is no earlier x0, and into the clean data */
        p->order[i] = (i == 0 || i == n - 1) ? 1 : 2;
    }
    p->alpha[n] = 1.0;
    p->sigma[n] = 0.0;
    p->lambda[n] = INFINITY;
    return 0;
}

void dpm_solver_x0(const dpm_plan *p, int i, int clip, float *x0, const float *x,
                   const float *eps, int N, size_t D) {
    double a = p->alpha[i], s = p->sigma[i];
    size_t nd = (size_t)N * D;
    for (size_t k = 0; k < nd; k++) {
        double v = ((double)x[k] - s * (double)eps[k]) / a;
        if (clip) v = v < -1.0 ? -1.0 : v > 1.0 ? 1.0 : v;
        x0[k] = (float)v;
    }
}

void dpm_solver_step(const dpm_plan *p, int i, float *x, const float *x0, const float *x0_prev,
                     const float *z, int N, size_t D) {
    size_t nd = (size_t)N * D;
    if (i == p->n - 1) { /* into the clean data: sigma 0, e^{-h} = 0 */
        memcpy(x, x0, nd * sizeof(float));
        return;
    }
    double h = p->lambda[i + 1] - p->lambda[i];
    double cx = p->sigma[i + 1] / p->sigma[i], c0, cz = 0.0;
    if (z) {
        double one_m_e2h = -expm1(-2.0 * h); /* 1 - e^{-2h} */
        cx *= exp(-h);
        c0 = p->alpha[i + 1] * one_m_e2h;
        cz = p->sigma[i + 1] * sqrt(one_m_e2h);
    } else {
        c0 = -p->alpha[i + 1] * expm1(-h);
    }
    double w = 0.0; /* first order: D = x0 */
    if (p->order[i] == 2) w = 1.0 / (2.0 * ((p->lambda[i] - p->lambda[i - 1]) / h));
    for (size_t k = 0; k < nd; k++) {
        double dk = (double)x0[k];
        if (w != 0.0) dk = (1.0 + w) * dk - w * (double)x0_prev[k];
        double v = cx * (double)x[k] + c0 * dk;
        if (z) v += cz * (double)z[k];
        x[k] = (float)v;
    }
}
