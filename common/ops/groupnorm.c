/* GroupNorm (Wu & He 2018) with per-channel affine.
 *
 * A group of sample n is the contiguous block of C/G channels x HW values.
 * Statistics use a two-pass method (mean, then sum of squared deviations)
 * with double accumulation (ops_internal.h), so a large mean does not cancel
 * the variance. The variance is the biased one (divide by the group size), as
 * in TF and PyTorch. forward saves mean and rstd [N][G] for backward. */
#include "ops.h"

#include "../core/prof.h"

#include <math.h>

#include "ops_internal.h"

void groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *gamma, const float *beta, int N, int C, int HW, int G,
                       float eps) {
    PROF_SCOPE(PROF_GROUPNORM);
    const int cpg = C / G;
    const size_t m = (size_t)cpg * HW;
    /* one task per (sample, group): independent, each summed in a fixed order */
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)N * C * HW >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const size_t base = ((size_t)n * C + (size_t)g * cpg) * HW;
            const float *x = inp + base;
            const float mu = (float)(ops_sum(x, m) / (double)m);
            const double var = ops_sum_sq_dev(x, m, mu) / (double)m;
            const float rs = (float)(1.0 / sqrt(var + (double)eps));
            mean[n * G + g] = mu;
            rstd[n * G + g] = rs;
            for (int cc = 0; cc < cpg; cc++) {
                const int c = g * cpg + cc;
                /* (x - mu) first: folding mu into the offset would cancel
                 * catastrophically when |mu| >> std. */
                const float a = rs * gamma[c], b = beta[c];
                const float *xc = x + (size_t)cc * HW;
                float *oc = out + base + (size_t)cc * HW;
                for (int i = 0; i < HW; i++) oc[i] = (xc[i] - mu) * a + b;
            }
        }
}

/* With xhat = (x - mu) rs and dy = dout * gamma, over the m values of a group:
 *   dx = rs * (dy - mean(dy) - xhat * mean(dy * xhat))
 * Per channel this is dx = A dout + B (x - mu) + Cst; (x - mu) keeps B's term
 * free of cancellation when |mu| >> std. */
void groupnorm_backward(float *dinp, float *dgamma, float *dbeta, const float *dout,
                        const float *inp, const float *mean, const float *rstd,
                        const float *gamma, int N, int C, int HW, int G) {
    PROF_SCOPE(PROF_GROUPNORM);
    const int cpg = C / G;
    const double m = (double)cpg * HW;
    /* Parallel over groups, samples in order inside: a group's dgamma/dbeta
     * entries belong to one thread and are accumulated in the same order as a
     * serial loop. */
#pragma omp parallel for schedule(static) if ((size_t)N * C * HW >= OPS_PAR_MIN)
    for (int g = 0; g < G; g++)
        for (int n = 0; n < N; n++) {
            const size_t base = ((size_t)n * C + (size_t)g * cpg) * HW;
            const float mu = mean[n * G + g], rs = rstd[n * G + g];
            double sum_dy = 0, sum_dy_xhat = 0;
            for (int cc = 0; cc < cpg; cc++) {
                const int c = g * cpg + cc;
                const float *dc = dout + base + (size_t)cc * HW;
                const float *xc = inp + base + (size_t)cc * HW;
                const double s_d = ops_sum(dc, (size_t)HW);
                const double s_dx = ops_dot_dev(dc, xc, (size_t)HW, mu) * rs; /* sum dout*xhat */
                if (dbeta) dbeta[c] += (float)s_d;
                if (dgamma) dgamma[c] += (float)s_dx;
                sum_dy += gamma[c] * s_d;
                sum_dy_xhat += gamma[c] * s_dx;
            }
            if (!dinp) continue;
            const float mean_dy = (float)(sum_dy / m);
            const float mean_dy_xhat = (float)(sum_dy_xhat / m);
            const float B = -rs * rs * mean_dy_xhat;
            const float Cst = -rs * mean_dy;
            for (int cc = 0; cc < cpg; cc++) {
                const float A = rs * gamma[g * cpg + cc];
                const float *dc = dout + base + (size_t)cc * HW;
                const float *xc = inp + base + (size_t)cc * HW;
                float *di = dinp + base + (size_t)cc * HW;
                for (int i = 0; i < HW; i++) di[i] += A * dc[i] + B * (xc[i] - mu) + Cst;
            }
        }
}
