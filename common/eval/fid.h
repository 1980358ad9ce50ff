/* Frechet Inception Distance and Inception Score from features (docs/evaluation.md).
 *
 * FID (Heusel et al. 2017, as pytorch-fid computes it):
 *   |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)
 * with S the unbiased covariance (divided by N - 1). tr sqrt(S1 S2) is the sum of the
 * square roots of the eigenvalues of the symmetric matrix sqrt(S1) S2 sqrt(S1)
 * (similar to S1 S2 when S1 is positive definite; both have the same non-zero
 * eigenvalues in general), from two LAPACK dsyevd eigendecompositions in double;
 * eigenvalues below d * DBL_EPSILON * (largest eigenvalue) are rounding noise and
 * count as zero (this matters only for singular covariances, N <= d).
 *
 * Inception Score (Salimans et al. 2016, their code's split rule): the N softmax
 * rows p(y|x) are cut into `splits` consecutive parts [i N/splits, (i+1) N/splits);
 * per part exp(mean_x KL(p(y|x) || mean_x p(y|x))); the result is the mean and
 * the population standard deviation over the parts.
 *
 * All arrays are the caller's; functions return 0 or -1 with err_msg(). */
#ifndef DDPM_FID_H
#define DDPM_FID_H

#include <stddef.h>

/* mu[d] = mean of feat[N][d]; sigma[d][d] = sum (x - mu)(x - mu)^T / (N - 1). N >= 2. */
int fid_stats_compute(const float *feat, size_t N, int d, double *mu, double *sigma);

/* tr sqrt(S1 S2) for symmetric positive semi-definite d x d matrices (not modified). */
int fid_trace_sqrt_product(const double *s1, const double *s2, int d, double *out);

/* The Frechet distance between N(mu1, s1) and N(mu2, s2): never negative (see
 * FID_NEG_TOL); non-finite input is refused before LAPACK sees it. */
int fid_distance(const double *mu1, const double *s1, const double *mu2, const double *s2, int d,
                 double *fid);

/* Statistics files (pytorch-fid's format: an .npz holding 'mu' [D] and 'sigma'
 * [D][D], float32 or float64) come from outside, so they are checked when loaded,
 * before any LAPACK call sees them (stated limits and tolerances):
 *   - 1 <= D <= FID_MAX_DIM; every value finite and of magnitude <= FID_MAX_ABS
 *     (so that sums of squares cannot overflow);
 *   - sigma symmetric: |s_ij - s_ji| <= FID_SYM_TOL * max |s| (then replaced by
 *     (s + s^T) / 2, so both triangles agree);
 *   - sigma positive semi-definite: its negative eigenvalues add up to at least
 *     -FID_PSD_TOL * (largest eigenvalue); so the smallest is >= -FID_PSD_TOL * largest.
 * A distance below zero is rounding only within FID_NEG_TOL * (|mu1 - mu2|^2 +
 * tr S1 + tr S2) (it then reads 0: with both covariances checked as above it is at
 * least -FID_PSD_TOL times that scale, up to rounding); below that it is an error. */
#define FID_MAX_DIM 4096
#define FID_MAX_ABS 1e100
#define FID_SYM_TOL 1e-6
#define FID_PSD_TOL 1e-6
#define FID_NEG_TOL 1e-5

typedef struct {
    int d;
    double *mu, *sigma; /* [d], [d][d]; owned */
} fid_stats;

/* Reads and checks path's 'mu' and 'sigma'. On success *st is the caller's
 * (fid_stats_free). Errors name the file and the array. */
int fid_stats_load(const char *path, fid_stats *st);

/* The checks above on mu[d] and sigma[d][d] (sigma symmetrised in place); errors
 * begin with `path`. */
int fid_stats_check(const char *path, int d, const double *mu, double *sigma);

void fid_stats_free(fid_stats *st);

/* Inception Score of logits[N][classes] (softmax taken here, in double). splits in
 * 1..N. */
int inception_score(const float *logits, size_t N, int classes, int splits, double *mean,
                    double *std);

#endif
