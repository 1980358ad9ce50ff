/* GroupNorm (Wu & He 2018) with per-channel affine.
 *
 * A group of sample n is the contiguous block of C/G channels x HW values.
 * Statistics use a two-pass method (mean, then sum of squared deviations)
 * with double accumulation (ops_internal.h), so a large mean does not cancel
 * the variance. The variance is the biased one (divide by the group size), as
 * in TF and PyTorch. forward saves mean and rstd [N][G] for backward. */
#include "common/ops/ops.h"

#include "common/core/prof.h"

#include <math.h>

#include "common/ops/ops_internal.h"

/* One group: m = cpg * HW values from x, statistics to *mean and *rstd, the
 * normalised and scaled values to out. */
DDPM_CLONES
static void gn_forward_group(float *restrict out, float *mean, float *rstd,
                             const float *restrict x, const float *gamma, const float *beta,
                             int cpg, int HW, float eps) {
    const size_t m = (size_t)cpg * HW;
    const float mu = (float)(ops_sum(x, m) / (double)m);
    const double var = ops_sum_sq_dev(x, m, mu) / (double)m;
    const float rs = (float)(1.0 / sqrt(var + (double)eps));
    *mean = mu;
    *rstd = rs;
    if (!out) return; /* statistics only */
    for (int cc = 0; cc < cpg; cc++) {
        /* (x - mu) first: folding mu into the offset would cancel
         * catastrophically when |mu| >> std. */
        const float a = rs * gamma[cc], b = beta[cc];
        const float *restrict xc = x + (size_t)cc * HW;
        float *restrict oc = out + (size_t)cc * HW;
#pragma omp simd
        for (int i = 0; i < HW; i++) oc[i] = (xc[i] - mu) * a + b;
    }
}

void groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *gamma, const float *beta, int N, int C, int HW, int G,
                       float eps) {
    PROF_SCOPE(PROF_GROUPNORM);
    const int cpg = C / G;
    /* one task per (sample, group): independent, each summed in a fixed order */
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)N * C * HW >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const size_t base = ((size_t)n * C + (size_t)g * cpg) * HW;
            /* out NULL (groupnorm_stats): statistics only, gamma and beta unused */
            gn_forward_group(out ? out + base : NULL, mean + n * G + g, rstd + n * G + g,
                             inp + base, out ? gamma + g * cpg : NULL,
                             out ? beta + g * cpg : NULL, cpg, HW, eps);
        }
}

/* With xhat = (x - mu) rs and dy = dout * gamma, over the m values of a group:
 *   dx = rs * (dy - mean(dy) - xhat * mean(dy * xhat))
 * Per channel this is dx = A dout + B (x - mu) + Cst; (x - mu) keeps B's term
 * free of cancellation when |mu| >> std. */
/* One group of one sample: the cpg channels' dgamma/dbeta terms are added to
 * dgamma[0..cpg) and dbeta[0..cpg) (either NULL to skip), and dx to dinp (NULL
 * to skip). */
DDPM_CLONES
static void gn_backward_group(float *restrict dinp, float *dgamma, float *dbeta,
                              const float *restrict dout, const float *restrict x, float mu,
                              float rs, const float *gamma, int cpg, int HW) {
    const double m = (double)cpg * HW;
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int cc = 0; cc < cpg; cc++) {
        const float *dc = dout + (size_t)cc * HW;
        const float *xc = x + (size_t)cc * HW;
        const double s_d = ops_sum(dc, (size_t)HW);
        const double s_dx = ops_dot_dev(dc, xc, (size_t)HW, mu) * rs; /* sum dout*xhat */
        if (dbeta) dbeta[cc] += (float)s_d;
        if (dgamma) dgamma[cc] += (float)s_dx;
        sum_dy += gamma[cc] * s_d;
        sum_dy_xhat += gamma[cc] * s_dx;
    }
    if (!dinp) return;
    const float mean_dy = (float)(sum_dy / m);
    const float mean_dy_xhat = (float)(sum_dy_xhat / m);
    const float B = -rs * rs * mean_dy_xhat;
    const float Cst = -rs * mean_dy;
    for (int cc = 0; cc < cpg; cc++) {
        const float A = rs * gamma[cc];
        const float *restrict dc = dout + (size_t)cc * HW;
        const float *restrict xc = x + (size_t)cc * HW;
        float *restrict di = dinp + (size_t)cc * HW;
#pragma omp simd
        for (int i = 0; i < HW; i++) di[i] += A * dc[i] + B * (xc[i] - mu) + Cst;
    }
}

void groupnorm_backward(float *dinp, float *dgamma, float *dbeta, const float *dout,
                        const float *inp, const float *mean, const float *rstd,
                        const float *gamma, int N, int C, int HW, int G) {
    PROF_SCOPE(PROF_GROUPNORM);
    const int cpg = C / G;
    /* Parallel over groups, samples in order inside: a group's dgamma/dbeta
     * entries belong to one thread and are accumulated in the same order as a
     * serial loop. */
#pragma omp parallel for schedule(static) if ((size_t)N * C * HW >= OPS_PAR_MIN)
    for (int g = 0; g < G; g++)
        for (int n = 0; n < N; n++) {
            const size_t base = ((size_t)n * C + (size_t)g * cpg) * HW;
            gn_backward_group(dinp ? dinp + base : NULL, dgamma ? dgamma + g * cpg : NULL,
                              dbeta ? dbeta + g * cpg : NULL, dout + base, inp + base,
                              mean[n * G + g], rstd[n * G + g], gamma + g * cpg, cpg, HW);
        }
}

void groupnorm_stats(float *mean, float *rstd, const float *inp, int N, int C, int HW, int G,
                     float eps) {
    groupnorm_forward(NULL, mean, rstd, inp, NULL, NULL, N, C, HW, G, eps);
}
