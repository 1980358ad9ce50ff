/* FID statistics, distances and Inception Scores of features given in a tensor file,
 * for tests/ref/fid_ref.py (numpy / scipy.linalg.sqrtm):
 *   fid_dump IN.tns OUT.tns
 * IN: a [N1][d], b [N2][d], logits [N][K]. OUT (each double as NAME + NAME.lo):
 * mu_a, sigma_a, mu_b, sigma_b, fid_ab, fid_aa, is10 and is3 (mean, std). */
#include <stdio.h>
#include <stdlib.h>

#include "common/core/util.h"
#include "common/eval/fid.h"
#include "common/io/tensor_file.h"

static void die(void) {
    fprintf(stderr, "fid_dump: %s\n", err_msg());
    exit(1);
}

static float *get(const char *path, const char *name, size_t *n) {
    float *p = tensor_file_read(path, name, n);
    if (!p) die();
    return p;
}

static void put(tensor_file *tf, const char *name, int ndim, const int64_t *dims, const double *d,
                size_t n) {
    float *hi = xfloats(n), *lo = xfloats(n);
    for (size_t i = 0; i < n; i++) {
        hi[i] = (float)d[i];
        lo[i] = (float)(d[i] - (double)hi[i]);
    }
    char lname[64];
    snprintf(lname, sizeof lname, "%s.lo", name);
    if (tensor_file_add(tf, name, ndim, dims, hi) != 0 || tensor_file_add(tf, lname, ndim, dims, lo) != 0)
        die();
    free(hi);
    free(lo);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN.tns OUT.tns\n", argv[0]);
        return 2;
    }
    size_t na, nb, nl, nd;
    float *dim = get(argv[1], "dims", &nd); /* d, N1, N2, N, K */
    int d = (int)dim[0], N1 = (int)dim[1], N2 = (int)dim[2], N = (int)dim[3], K = (int)dim[4];
    float *a = get(argv[1], "a", &na), *b = get(argv[1], "b", &nb), *l = get(argv[1], "logits", &nl);
    if (na != (size_t)N1 * d || nb != (size_t)N2 * d || nl != (size_t)N * K) {
        fprintf(stderr, "fid_dump: sizes do not match dims\n");
        return 1;
    }
    double *mua = xcalloc((size_t)d, sizeof(double)), *mub = xcalloc((size_t)d, sizeof(double));
    double *sa = xcalloc((size_t)d * d, sizeof(double)), *sb = xcalloc((size_t)d * d, sizeof(double));
    double fab, faa, is10[2], is3[2];
    if (fid_stats_compute(a, (size_t)N1, d, mua, sa) != 0 ||
        fid_stats_compute(b, (size_t)N2, d, mub, sb) != 0 ||
        fid_distance(mua, sa, mub, sb, d, &fab) != 0 || fid_distance(mua, sa, mua, sa, d, &faa) != 0 ||
        inception_score(l, (size_t)N, K, 10, &is10[0], &is10[1]) != 0 ||
        inception_score(l, (size_t)N, K, 3, &is3[0], &is3[1]) != 0)
        die();
    tensor_file tf;
    if (tensor_file_create(&tf, argv[2]) != 0) die();
    int64_t dv[1] = {d}, dm[2] = {d, d}, d1[1] = {1}, d2[1] = {2};
    put(&tf, "mu_a", 1, dv, mua, (size_t)d);
    put(&tf, "sigma_a", 2, dm, sa, (size_t)d * d);
    put(&tf, "mu_b", 1, dv, mub, (size_t)d);
    put(&tf, "sigma_b", 2, dm, sb, (size_t)d * d);
    put(&tf, "fid_ab", 1, d1, &fab, 1);
    put(&tf, "fid_aa", 1, d1, &faa, 1);
    put(&tf, "is10", 1, d2, is10, 2);
    put(&tf, "is3", 1, d2, is3, 2);
    if (tensor_file_close(&tf) != 0) die();
    printf("wrote %s: FID(a, b) %.6f, FID(a, a) %.3g, IS %.4f +- %.4f\n", argv[2], fab, faa, is10[0],
           is10[1]);
    free(dim); free(a); free(b); free(l); free(mua); free(mub); free(sa); free(sb);
    return 0;
}
