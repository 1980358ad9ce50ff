/* FID statistics and distance (LAPACK dsyevd, double), Inception Score. */
#include "common/eval/fid.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/io/npz_array.h"

/* LAPACK (shipped inside OpenBLAS); Fortran calling convention with the hidden
 * string lengths of gfortran. */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                    double *w, double *work, const int *lwork, int *iwork, const int *liwork,
                    int *info, size_t jobz_len, size_t uplo_len);

/* Eigen-decomposition of the symmetric matrix a (overwritten by the eigenvectors,
 * as columns in Fortran order = rows here, since a is symmetric). */
static int sym_eig(double *a, int d, double *w, int vectors) {
    /* LAPACK prints (xerbla) and returns garbage on NaN or infinite input: refuse it here */
    for (size_t i = 0; i < (size_t)d * d; i++)
        if (!isfinite(a[i])) return err_set("fid: a covariance matrix holds a non-finite value");
    int info = 0, lwork = -1, liwork = -1, iwq = 0;
    double wq = 0;
    const char *jobz = vectors ? "V" : "N";
    dsyevd_(jobz, "U", &d, a, &d, w, &wq, &lwork, &iwq, &liwork, &info, 1, 1);
    if (info != 0) return err_set("fid: LAPACK dsyevd workspace query failed (info %d)", info);
    lwork = (int)wq;
    liwork = iwq > 1 ? iwq : 1;
    double *work = xcalloc((size_t)lwork > 0 ? (size_t)lwork : 1, sizeof *work);
    int *iwork = xcalloc((size_t)liwork, sizeof *iwork);
    dsyevd_(jobz, "U", &d, a, &d, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    if (info != 0) return err_set("fid: LAPACK dsyevd did not converge (info %d)", info);
    return 0;
}

int fid_stats_compute(const float *feat, size_t N, int d, double *mu, double *sigma) {
    if (N < 2) return err_set("fid: statistics need at least 2 images (got %zu)", N);
    if (d < 1) return err_set("fid: feature dimension %d", d);
    memset(mu, 0, (size_t)d * sizeof *mu);
    for (size_t n = 0; n < N; n++)
        for (int j = 0; j < d; j++) mu[j] += feat[n * (size_t)d + j];
    for (int j = 0; j < d; j++) mu[j] /= (double)N;
    /* centred features in double, a block of rows at a time, accumulated with dsyrk */
    const size_t rows = 256;
    double *xc = xcalloc(rows * (size_t)d, sizeof *xc);
    memset(sigma, 0, (size_t)d * d * sizeof *sigma);
    for (size_t n0 = 0; n0 < N; n0 += rows) {
        size_t nb = N - n0 < rows ? N - n0 : rows;
        for (size_t r = 0; r < nb; r++)
            for (int j = 0; j < d; j++)
                xc[r * (size_t)d + j] = (double)feat[(n0 + r) * (size_t)d + j] - mu[j];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, (int)nb, 1.0, xc, d, 1.0, sigma, d);
    }
    free(xc);
    double inv = 1.0 / (double)(N - 1);
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) {
            double v = sigma[(size_t)i * d + j] * inv;
            sigma[(size_t)i * d + j] = v;
            sigma[(size_t)j * d + i] = v;
        }
    return 0;
}

/* Eigenvalues below d * DBL_EPSILON * (largest) are rounding noise of a singular
 * matrix (a covariance of fewer than d + 1 images): they count as zero, else the
 * square roots of ~d noise values would add up to a visible error. */
static double noise_floor(const double *w, int d) {
    double mx = 0;
    for (int i = 0; i < d; i++) mx = fabs(w[i]) > mx ? fabs(w[i]) : mx;
    return (double)d * DBL_EPSILON * mx;
}

int fid_trace_sqrt_product(const double *s1, const double *s2, int d, double *out) {
    size_t dd = (size_t)d * d;
    double *v = xcalloc(dd, sizeof *v), *w = xcalloc((size_t)d, sizeof *w);
    double *r = xcalloc(dd, sizeof *r), *m = xcalloc(dd, sizeof *m);
    int rc = -1;
    memcpy(v, s1, dd * sizeof *v);
    if (sym_eig(v, d, w, 1) != 0) goto out;
    /* v holds the eigenvectors as rows (row-major view of the column-major result):
     * sqrt(S1) = V^T diag(sqrt(w)) V. r = diag(w^1/4) V, so sqrt(S1) = r^T r. */
    double floor1 = noise_floor(w, d);
    for (int i = 0; i < d; i++) {
        double s = w[i] > floor1 ? sqrt(sqrt(w[i])) : 0.0;
        for (int j = 0; j < d; j++) r[(size_t)i * d + j] = s * v[(size_t)i * d + j];
    }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, d, 1.0, r, d, r, d, 0.0, m, d);
    /* m = sqrt(S1); v = sqrt(S1) S2; m = v sqrt(S1) */
    cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, d, d, 1.0, m, d, s2, d, 0.0, v, d);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, v, d, m, d, 0.0, r, d);
    for (int i = 0; i < d; i++) /* symmetrise away the rounding */
        for (int j = i + 1; j < d; j++) {
            double a = 0.5 * (r[(size_t)i * d + j] + r[(size_t)j * d + i]);
            r[(size_t)i * d + j] = r[(size_t)j * d + i] = a;
        }
    if (sym_eig(r, d, w, 0) != 0) goto out;
    double tr = 0, floor2 = noise_floor(w, d);
    for (int i = 0; i < d; i++) tr += w[i] > floor2 ? sqrt(w[i]) : 0.0;
    *out = tr;
    rc = 0;
out:
    free(v);
    free(w);
    free(r);
    free(m);
    return rc;
}

int fid_distance(const double *mu1, const double *s1, const double *mu2, const double *s2, int d,
                 double *fid) {
    double diff = 0, tr = 0, trc = 0;
    for (int i = 0; i < d; i++) {
        double e = mu1[i] - mu2[i];
        diff += e * e;
        tr += s1[(size_t)i * d + i] + s2[(size_t)i * d + i];
    }
    if (d < 1) return err_set("fid: feature dimension %d", d);
    if (!isfinite(diff)) return err_set("fid: the means are not finite");
    if (fid_trace_sqrt_product(s1, s2, d, &trc) != 0) return -1;
    double f = diff + tr - 2.0 * trc, scale = diff + fabs(tr);
    if (!isfinite(f)) return err_set("fid: the distance is not finite (%g)", f);
    if (f < 0) {
        if (f < -FID_NEG_TOL * scale)
            return err_set("fid: the distance came out negative (%.6g, beyond the rounding tolerance "
                           "%g x %.6g): the covariances are not positive semi-definite", f,
                           FID_NEG_TOL, scale);
        f = 0; /* rounding */
    }
    *fid = f;
    return 0;
}

void fid_stats_free(fid_stats *st) {
    if (!st) return;
    free(st->mu);
    free(st->sigma);
    st->mu = st->sigma = NULL;
    st->d = 0;
}

static int check_values(const char *path, const char *key, const double *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]) || fabs(v[i]) > FID_MAX_ABS)
            return err_set("%s: '%s' holds %g at index %zu (values must be finite, of magnitude "
                           "at most %g)", path, key, v[i], i, FID_MAX_ABS);
    return 0;
}

int fid_stats_check(const char *path, int d, const double *mu, double *sigma) {
    if (d < 1 || d > FID_MAX_DIM)
        return err_set("%s: statistics of dimension %d (1..%d)", path, d, FID_MAX_DIM);
    size_t dd = (size_t)d * d;
    if (check_values(path, "mu", mu, (size_t)d) || check_values(path, "sigma", sigma, dd)) return -1;
    double mx = 0, worst = 0;
    size_t wi = 0, wj = 0;
    for (size_t k = 0; k < dd; k++) mx = fabs(sigma[k]) > mx ? fabs(sigma[k]) : mx;
    for (size_t i = 0; i < (size_t)d; i++)
        for (size_t j = i + 1; j < (size_t)d; j++) {
            double e = fabs(sigma[i * d + j] - sigma[j * d + i]);
            if (e > worst) { worst = e; wi = i; wj = j; }
        }
    if (worst > FID_SYM_TOL * mx)
        return err_set("%s: 'sigma' is not symmetric: sigma[%zu][%zu] = %.17g but sigma[%zu][%zu] = "
                       "%.17g (tolerance %g x the largest magnitude %g)", path, wi, wj,
                       sigma[wi * d + wj], wj, wi, sigma[wj * d + wi], FID_SYM_TOL, mx);
    for (size_t i = 0; i < (size_t)d; i++)
        for (size_t j = i + 1; j < (size_t)d; j++)
            sigma[i * d + j] = sigma[j * d + i] = 0.5 * (sigma[i * d + j] + sigma[j * d + i]);
    double *a = xcalloc(dd, sizeof *a), *w = xcalloc((size_t)d, sizeof *w);
    memcpy(a, sigma, dd * sizeof *a);
    int rc = sym_eig(a, d, w, 0);
    if (rc != 0) {
        err_prefix("%s: 'sigma': ", path);
    } else {
        double neg = 0, top = w[d - 1]; /* ascending */
        for (int i = 0; i < d; i++) neg += w[i] < 0 ? w[i] : 0;
        if (neg < -FID_PSD_TOL * (top > 0 ? top : 0))
            rc = err_set("%s: 'sigma' is not positive semi-definite: eigenvalues from %.6g to %.6g; "
                         "the negative ones add up to %.6g, beyond the tolerance %g x the largest",
                         path, w[0], top, neg, FID_PSD_TOL);
    }
    free(a);
    free(w);
    return rc;
}

/* Reads array key of path into a new double array of n values (float32 or float64
 * in the file), its shape already checked by the caller through ndim/dims. */
static double *read_f64(const char *path, const char *key, int ndim, const int64_t *dims) {
    npz_reader *r;
    if (npz_reader_open(&r, path, key) != 0) return NULL;
    int ok = npz_reader_ndim(r) == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = npz_reader_shape(r)[i] == dims[i];
    if (!ok) {
        err_set(ndim == 1 ? "%s: '%s' must have shape [D] with D in 1..%d"
                          : "%s: '%s' must have shape [D][D] with D the length of 'mu' (%d)",
                path, key, ndim == 1 ? FID_MAX_DIM : (int)dims[0]);
        npz_reader_close(r);
        return NULL;
    }
    size_t n = (size_t)npz_reader_count(r);
    double *out = xcalloc(n ? n : 1, sizeof *out);
    if (npz_reader_dtype(r) == NPZ_DTYPE_F64) {
        ok = npz_reader_read(r, out, n) == 0;
    } else if (npz_reader_dtype(r) == NPZ_DTYPE_F32) {
        float *tmp = xcalloc(n ? n : 1, sizeof *tmp);
        ok = npz_reader_read(r, tmp, n) == 0;
        for (size_t i = 0; ok && i < n; i++) out[i] = tmp[i];
        free(tmp);
    } else {
        ok = 0;
        err_set("%s: '%s' must be float32 or float64", path, key);
    }
    npz_reader_close(r);
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

int fid_stats_load(const char *path, fid_stats *st) {
    memset(st, 0, sizeof *st);
    npz_reader *r;
    /* D from mu's shape, checked against the stated limit before anything is allocated */
    if (npz_reader_open(&r, path, "mu") != 0) return -1;
    int64_t D = npz_reader_ndim(r) == 1 ? npz_reader_shape(r)[0] : -1;
    npz_reader_close(r);
    if (D < 1 || D > FID_MAX_DIM)
        return err_set("%s: 'mu' must have shape [D] with D in 1..%d", path, FID_MAX_DIM);
    int64_t dims[2] = {D, D};
    st->d = (int)D;
    st->mu = read_f64(path, "mu", 1, dims);
    if (st->mu) st->sigma = read_f64(path, "sigma", 2, dims);
    if (!st->mu || !st->sigma || fid_stats_check(path, st->d, st->mu, st->sigma) != 0) {
        fid_stats_free(st);
        return -1;
    }
    return 0;
}

int inception_score(const float *logits, size_t N, int classes, int splits, double *mean,
                    double *std) {
    if (splits < 1 || (size_t)splits > N)
        return err_set("inception score: %d splits for %zu images (need 1..N)", splits, N);
    double *p = xcalloc(N * (size_t)classes, sizeof *p), *py = xcalloc((size_t)classes, sizeof *py);
    for (size_t n = 0; n < N; n++) {
        const float *l = logits + n * (size_t)classes;
        double mx = l[0], s = 0;
        for (int c = 1; c < classes; c++) mx = l[c] > mx ? l[c] : mx;
        double *pn = p + n * (size_t)classes;
        for (int c = 0; c < classes; c++) s += (pn[c] = exp((double)l[c] - mx));
        for (int c = 0; c < classes; c++) pn[c] /= s;
    }
    double sum = 0, sumsq = 0;
    for (int k = 0; k < splits; k++) {
        size_t a = (size_t)k * N / (size_t)splits, b = (size_t)(k + 1) * N / (size_t)splits;
        memset(py, 0, (size_t)classes * sizeof *py);
        for (size_t n = a; n < b; n++)
            for (int c = 0; c < classes; c++) py[c] += p[n * (size_t)classes + c];
        for (int c = 0; c < classes; c++) py[c] /= (double)(b - a);
        double kl = 0;
        for (size_t n = a; n < b; n++)
            for (int c = 0; c < classes; c++) {
                double q = p[n * (size_t)classes + c];
                if (q > 0) kl += q * (log(q) - log(py[c]));
            }
        double score = exp(kl / (double)(b - a));
        sum += score;
        sumsq += score * score;
    }
    *mean = sum / splits;
    double var = sumsq / splits - (*mean) * (*mean);
    *std = var > 0 ? sqrt(var) : 0;
    free(p);
    free(py);
    return 0;
}
