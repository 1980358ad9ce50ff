/* Unit tests of the evaluation code: the bound's elementwise pieces against closed
 * forms, the strided plans, bpd_evaluate's independence of batching and of the split
 * of images (as over MPI ranks), the FID trace term on matrices with known square
 * roots, the rectangular convolution against a direct loop, and the .npz reader on
 * the project's own writers, Zip64, corruption and truncation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config/config.h"
#include "common/core/util.h"
#include "common/diffusion/diffusion.h"
#include "common/diffusion/vlb.h"
#include "common/eval/bpd.h"
#include "common/eval/fid.h"
#include "common/io/npz.h"
#include "common/io/npz_array.h"
#include "common/model/unet.h"
#include "common/ops/ops_extra.h"
#include "common/rng/rng.h"
#include "tests/unit/test.h"

static void test_pieces(void) {
    /* KL(N(0,1) || N(1,4)) = log 2 + (1 + 1)/8 - 1/2 */
    double kl = vlb_normal_kl(0, 0, 1, log(4.0));
    test_check(fabs(kl - (log(2.0) + 0.25 - 0.5)) < 1e-15, "normal_kl(N(0,1)||N(1,4)) = %.15f", kl);
    kl = vlb_normal_kl(0.3, -1.2, 0.3, -1.2);
    test_check(fabs(kl) < 1e-15, "normal_kl of equal Gaussians is 0 (%.2g)", kl);
    double worst = 0;
    for (double x = -6; x <= 6; x += 0.01) {
        double e = fabs(vlb_approx_std_normal_cdf(x) - 0.5 * erfc(-x / sqrt(2.0)));
        worst = e > worst ? e : worst;
    }
    test_check(worst < 2e-4, "tanh approximation of the normal CDF within 2e-4 of erfc (max %.2e)", worst);
    /* the 256 bins telescope: their probabilities sum to 1 for any mean/scale */
    double ms[3][2] = {{0.1, log(0.05)}, {-0.97, log(0.3)}, {0.5, log(0.002)}};
    for (int k = 0; k < 3; k++) {
        double s = 0;
        for (int v = 0; v < 256; v++)
            s += exp(vlb_discretized_gaussian_loglik(v / 127.5 - 1.0, ms[k][0], ms[k][1]));
        test_check(fabs(s - 1) < 1e-9, "discretized Gaussian: bin probabilities sum to 1 (mean %g, "
                   "scale %g): %.12f", ms[k][0], exp(ms[k][1]), s);
    }
    /* a narrow Gaussian centred on the value: the bin holds almost everything */
    double lp = vlb_discretized_gaussian_loglik(0.2, 0.2, log(1e-4));
    test_check(lp > -1e-9 && lp <= 0, "narrow Gaussian on the value: log p = %.3g ~ 0", lp);
    test_check(vlb_discretized_gaussian_loglik(-1, 5, log(0.01)) == log(1e-12),
               "probability floored at 1e-12 far in the tail");
}

static void test_plans(void) {
    const int T = 1000;
    int ts[1000];
    double w[1000];
    int n = bpd_plan(T, 1, BPD_ESTIMATE_UNBIASED, 0, 0, ts, w);
    int ok = n == T;
    for (int i = 0; i < n; i++) ok &= ts[i] == i && w[i] == 1;
    test_check(ok, "stride 1: all %d timesteps with weight 1", T);
    /* trapezoid: weights of t >= 1 sum to T-1, and integrate a linear L exactly */
    int strides[4] = {2, 7, 50, 998};
    for (int k = 0; k < 4; k++) {
        n = bpd_plan(T, strides[k], BPD_ESTIMATE_TRAPEZOID, 0, 0, ts, w);
        double ws = 0, lin = 0, exact = 0;
        for (int i = 1; i < n; i++) {
            ws += w[i];
            lin += w[i] * (3.0 + 0.25 * ts[i]);
        }
        for (int t = 1; t < T; t++) exact += 3.0 + 0.25 * t;
        test_check(ts[0] == 0 && w[0] == 1 && ts[n - 1] == T - 1 && fabs(ws - (T - 1)) < 1e-9 &&
                       fabs(lin - exact) < 1e-9 * exact,
                   "trapezoid stride %d: %d points, weights sum %.1f, linear L summed exactly "
                   "(%.6f vs %.6f)", strides[k], n, ws, lin, exact);
    }
    /* unbiased: t = 1 + r + jk; over many images every residue r appears, and the
     * average of k * (number of picks of t) is 1 for every t */
    const int k = 7, images = 7000;
    int count_r[7] = {0};
    double *picks = xcalloc(T, sizeof *picks);
    ok = 1;
    for (int img = 0; img < images; img++) {
        n = bpd_plan(T, k, BPD_ESTIMATE_UNBIASED, 5, (uint64_t)img, ts, w);
        int r = ts[1] - 1;
        ok &= ts[0] == 0 && w[0] == 1 && r >= 0 && r < k;
        for (int i = 1; i < n; i++) {
            ok &= ts[i] == 1 + r + (i - 1) * k && w[i] == k;
            picks[ts[i]] += 1;
        }
        ok &= ts[n - 1] + k > T - 1;
        if (r >= 0 && r < k) count_r[r]++;
    }
    double chi2 = 0;
    for (int r = 0; r < k; r++) chi2 += pow(count_r[r] - images / (double)k, 2) / (images / (double)k);
    double maxdev = 0;
    for (int t = 1; t < T; t++) {
        double dv = fabs(k * picks[t] / images - 1);
        maxdev = dv > maxdev ? dv : maxdev;
    }
    test_check(ok, "unbiased stride %d: t = 0 and 1 + r + jk up to T-1, weight k", k);
    /* 6 degrees of freedom: chi2 > 22.5 has probability 0.001 */
    test_check(chi2 < 22.5, "unbiased offsets uniform over 0..%d (chi2 %.2f, 6 dof)", k - 1, chi2);
    test_check(maxdev < 0.12, "every t >= 1 picked with probability 1/k (max deviation %.3f)", maxdev);
    free(picks);
}

/* bpd_evaluate's results depend on the images (their ids and, for a class-conditional
 * model, their labels), not on how they are batched or split over calls (ranks).
 * K > 0: the model has K classes and image n the label n mod K. */
static void test_evaluate_invariance(int K) {
    config cfg;
    char key[64];
    snprintf(key, sizeof key, "model.num_classes=%d", K);
    if (config_load_file(&cfg, "tests/configs/bpd_tiny.yaml") != 0 ||
        config_override(&cfg, key) != 0) {
        test_check(0, "load tests/configs/bpd_tiny.yaml (%s): %s", key, err_msg());
        return;
    }
    const model_config *mc = &cfg.model;
    unet *m1 = unet_create(mc, 1, 0, NULL), *m7 = unet_create(mc, 7, 0, NULL);
    size_t P = unet_num_params(m1);
    float *params = xfloats(P);
    unet_init(m1, params, 3);
    /* the authors' init leaves the output at ~0; perturb every weight so eps matters */
    rng_key k = {3, 9, 0, RNG_PURPOSE_INIT};
    float *noise = xfloats(P);
    rng_normal(&k, noise, P);
    for (size_t i = 0; i < P; i++) params[i] += 0.02f * noise[i];
    diffusion d;
    diffusion_init(&d, cfg.diffusion.schedule, cfg.diffusion.timesteps, cfg.diffusion.beta_start,
                   cfg.diffusion.beta_end);
    int N = 5, C = mc->in_channels, S = mc->image_size;
    size_t D = (size_t)C * S * S;
    uint8_t *u8 = xmalloc((size_t)N * D);
    rng_key ki = {3, 10, 0, RNG_PURPOSE_NOISE};
    for (size_t i = 0; i < (size_t)N * D; i++) u8[i] = (uint8_t)rng_below(&ki, i, 256);
    uint64_t ids[5] = {10, 11, 12, 13, 14};
    int lab[5], lab_e[3], lab_o[2];
    for (int n = 0; n < N; n++) lab[n] = K > 0 ? n % K : 0;
    const int *y = K > 0 ? lab : NULL;
    for (int i = 0; i < 3; i++) lab_e[i] = lab[2 * i];
    for (int i = 0; i < 2; i++) lab_o[i] = lab[2 * i + 1];
    bpd_config bc = {&d, SAMPLING_VAR_BETA, 1, 3, BPD_ESTIMATE_UNBIASED, 77};
    bpd_result a, b, c;
    bpd_result_init(&a, d.T);
    bpd_result_init(&b, d.T);
    bpd_result_init(&c, d.T);
    double ta[5], tb[5];
    int rc = bpd_evaluate_u8(m1, params, &bc, u8, ids, y, N, C, S, &a, ta, NULL, NULL);
    rc |= bpd_evaluate_u8(m7, params, &bc, u8, ids, y, N, C, S, &b, tb, NULL, NULL);
    /* "ranks": images 0, 2, 4 and 1, 3 evaluated separately, sums added */
    uint8_t *even = xmalloc(3 * D), *odd = xmalloc(2 * D);
    uint64_t ide[3] = {10, 12, 14}, ido[2] = {11, 13};
    for (int i = 0; i < 3; i++) memcpy(even + i * D, u8 + (size_t)(2 * i) * D, D);
    for (int i = 0; i < 2; i++) memcpy(odd + i * D, u8 + (size_t)(2 * i + 1) * D, D);
    rc |= bpd_evaluate_u8(m1, params, &bc, even, ide, y ? lab_e : NULL, 3, C, S, &c, NULL, NULL, NULL);
    rc |= bpd_evaluate_u8(m1, params, &bc, odd, ido, y ? lab_o : NULL, 2, C, S, &c, NULL, NULL, NULL);
    test_check(rc == 0, "K %d: bpd_evaluate runs%s%s", K, rc ? ": " : "", rc ? err_msg() : "");
    double worst = 0;
    for (int i = 0; i < N; i++) worst = fmax(worst, fabs(ta[i] - tb[i]) / fabs(ta[i]));
    test_check(worst < 1e-5, "K %d: per-image totals with batches of 1 and 7 pairs agree (max rel "
               "%.2e; only the GEMM shapes differ)", K, worst);
    double split = fabs(bpd_result_mean(&a) - bpd_result_mean(&c)) / bpd_result_mean(&a);
    int same_counts = 1;
    for (int t = 0; t < d.T; t++) same_counts &= a.count[t] == c.count[t];
    test_check(split < 1e-12 && same_counts && c.scalars[BPD_S_IMAGES] == N,
               "K %d: images split over two calls (as over ranks): same timesteps and total %.9f "
               "vs %.9f", K, bpd_result_mean(&a), bpd_result_mean(&c));
    double mean = 0;
    for (int i = 0; i < N; i++) mean += ta[i] / N;
    test_check(fabs(mean - bpd_result_mean(&a)) < 1e-12 * mean && bpd_result_stderr(&a) > 0,
               "K %d: mean of per-image totals = result mean (%.6f bits/dim, stderr %.4f)", K, mean,
               bpd_result_stderr(&a));
    if (K > 0) {
        /* the labels reach the network: the null label (NULL) and other labels differ,
         * and image 1 alone with its label gives its total from the batch */
        bpd_result e;
        bpd_result_init(&e, d.T);
        double tn[5], t1;
        int other[5];
        for (int n = 0; n < N; n++) other[n] = (lab[n] + 1) % K;
        rc = bpd_evaluate_u8(m7, params, &bc, u8, ids, NULL, N, C, S, &e, tn, NULL, NULL);
        double dnull = 0, dother = 0;
        for (int i = 0; i < N; i++) dnull = fmax(dnull, fabs(tn[i] - tb[i]) / fabs(tb[i]));
        rc |= bpd_evaluate_u8(m7, params, &bc, u8, ids, other, N, C, S, &e, tn, NULL, NULL);
        for (int i = 0; i < N; i++) dother = fmax(dother, fabs(tn[i] - tb[i]) / fabs(tb[i]));
        rc |= bpd_evaluate_u8(m1, params, &bc, u8 + D, ids + 1, lab + 1, 1, C, S, &e, &t1, NULL,
                              NULL);
        test_check(rc == 0 && dnull > 1e-4 && dother > 1e-4 && t1 == ta[1],
                   "K %d: the null label and shifted labels change the totals (max rel %.2e, "
                   "%.2e); image 1 alone with label %d: %.9f vs %.9f in the batch", K, dnull,
                   dother, lab[1], t1, ta[1]);
        int badl[5] = {0, 1, K, 0, 1};
        rc = bpd_evaluate_u8(m1, params, &bc, u8, ids, badl, N, C, S, &e, NULL, NULL, NULL);
        test_check(rc == -1 && strstr(err_msg(), "image 12: label") &&
                       strstr(err_msg(), "outside 0.."),
                   "K %d: a label out of range is refused naming the image: %s", K, err_msg());
        badl[2] = -1;
        rc = bpd_evaluate_u8(m1, params, &bc, u8, ids, badl, N, C, S, &e, NULL, NULL, NULL);
        test_check(rc == -1 && strstr(err_msg(), "label -1"), "K %d: label -1 refused: %s", K,
                   err_msg());
        bpd_result_free(&e);
    } else {
        rc = bpd_evaluate_u8(m1, params, &bc, u8, ids, lab, N, C, S, &a, NULL, NULL, NULL);
        test_check(rc == -1 && strstr(err_msg(), "without classes"),
                   "labels for an unconditional model refused: %s", err_msg());
    }
    bc.stride = 0;
    rc = bpd_evaluate_u8(m1, params, &bc, u8, ids, y, N, C, S, &a, NULL, NULL, NULL);
    test_check(rc == -1 && strstr(err_msg(), "stride"), "stride 0 refused: %s", err_msg());
    bpd_result_free(&a);
    bpd_result_free(&b);
    bpd_result_free(&c);
    free(even); free(odd); free(u8); free(params); free(noise);
    diffusion_free(&d);
    unet_free(m1);
    unet_free(m7);
}

static void test_fid_trace(void) {
    const int d = 6;
    double a[36] = {0}, b[36] = {0}, tr = 0, want = 0;
    double da[6] = {1, 2, 0.5, 3, 0.1, 7}, db[6] = {4, 0.3, 2, 1, 9, 0.7};
    for (int i = 0; i < d; i++) {
        a[i * d + i] = da[i];
        b[i * d + i] = db[i];
        want += sqrt(da[i] * db[i]);
    }
    int rc = fid_trace_sqrt_product(a, b, d, &tr);
    test_check(rc == 0 && fabs(tr - want) < 1e-12 * want, "tr sqrt(A B) of diagonal matrices %.12f vs %.12f",
               tr, want);
    /* rotate both by the same orthogonal Q (they commute): the trace is unchanged */
    double q[36], qa[36], ra[36] = {0}, rb[36] = {0};
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) q[i * d + j] = (i == j) - 2.0 * (i + 1) * (j + 1) / 91.0; /* Householder */
    for (int pass = 0; pass < 2; pass++) {
        const double *src = pass ? b : a;
        double *dst = pass ? rb : ra;
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                qa[i * d + j] = 0;
                for (int k = 0; k < d; k++) qa[i * d + j] += q[i * d + k] * src[k * d + j];
            }
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                for (int k = 0; k < d; k++) dst[i * d + j] += qa[i * d + k] * q[j * d + k];
    }
    rc = fid_trace_sqrt_product(ra, rb, d, &tr);
    test_check(rc == 0 && fabs(tr - want) < 1e-12 * want, "rotated: %.12f vs %.12f", tr, want);
    /* singular (rank 1) covariances: FID of a set with itself is 0 */
    double v[6] = {1, -2, 0.5, 3, 0, 1}, s[36], mu[6] = {0};
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) s[i * d + j] = v[i] * v[j];
    double fid = 1;
    rc = fid_distance(mu, s, mu, s, d, &fid);
    test_check(rc == 0 && fabs(fid) < 1e-12, "FID of a rank-1 covariance with itself: %.3g", fid);
    double m1 = 0, sd = 0;
    float one[4] = {1, 2, 3, 4};
    test_check(inception_score(one, 1, 4, 2, &m1, &sd) == -1, "IS with more splits than images refused");
    rc = fid_stats_compute(one, 1, 4, mu, s);
    test_check(rc == -1, "statistics of one image refused: %s", err_msg());
}

static void test_conv_rect(void) {
    /* direct loop reference on a 7x1 and a 3x3/2 convolution */
    int shapes[2][7] = {{7, 1, 1, 3, 0, 5, 9}, {3, 3, 2, 0, 0, 11, 10}}; /* kh kw s ph pw H W */
    for (int c = 0; c < 2; c++) {
        int kh = shapes[c][0], kw = shapes[c][1], st = shapes[c][2], ph = shapes[c][3], pw = shapes[c][4];
        int H = shapes[c][5], W = shapes[c][6], N = 2, Ci = 3, Co = 4;
        conv_rect_shape s = conv_rect_shape_make(N, Ci, H, W, Co, kh, kw, st, st, ph, pw);
        size_t nx = (size_t)N * Ci * H * W, nw = (size_t)Co * Ci * kh * kw;
        float *x = xfloats(nx), *w = xfloats(nw), *b = xfloats(Co);
        size_t ny = (size_t)N * Co * s.Ho * s.Wo;
        float *y = xfloats(ny), *r = xfloats(ny), *ws = xfloats(conv_rect_workspace_floats(&s) + 1);
        rng_key k = {1, 2, (uint64_t)c, RNG_PURPOSE_NOISE};
        rng_normal(&k, x, nx);
        k.step = 3;
        rng_normal(&k, w, nw);
        k.step = 4;
        rng_normal(&k, b, Co);
        conv_rect_forward(y, x, w, b, &s, 1, 0, ws);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < Co; o++)
                for (int i = 0; i < s.Ho; i++)
                    for (int j = 0; j < s.Wo; j++) {
                        double acc = b[o];
                        for (int ci = 0; ci < Ci; ci++)
                            for (int u = 0; u < kh; u++)
                                for (int v = 0; v < kw; v++) {
                                    int ih = i * st - ph + u, iw = j * st - pw + v;
                                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                    acc += (double)w[((o * Ci + ci) * kh + u) * kw + v] *
                                           x[((size_t)(n * Ci + ci) * H + ih) * W + iw];
                                }
                        r[((size_t)(n * Co + o) * s.Ho + i) * s.Wo + j] = (float)(acc > 0 ? acc : 0);
                    }
        double e = test_rel_err(y, r, ny);
        test_check(e < 1e-5, "conv %dx%d stride %d pad (%d,%d) + ReLU vs direct loop: rel err %.2e",
                   kh, kw, st, ph, pw, e);
        free(x); free(w); free(b); free(y); free(r); free(ws);
    }
}

static void test_npz(void) {
    char dir[] = "/tmp/ddpm-test-npz.XXXXXX";
    if (!mkdtemp(dir)) return;
    char p1[128], p2[128], p3[128];
    snprintf(p1, sizeof p1, "%s/a.npz", dir);
    snprintf(p2, sizeof p2, "%s/b.npz", dir);
    snprintf(p3, sizeof p3, "%s/c.npz", dir);
    double mu[3] = {1.5, -2, 1e-300}, sig[6] = {1, 2, 3, 4, 5, 6};
    npz_f64_array arr[2] = {{"mu", mu, 1, {3}}, {"sigma", sig, 2, {2, 3}}};
    test_check(npz_write_f64(p1, arr, 2) == 0, "npz_write_f64 writes two arrays");
    npz_reader *r = NULL;
    int rc;
    double got[6];
    int ok = npz_reader_open(&r, p1, "sigma") == 0 && npz_reader_dtype(r) == NPZ_DTYPE_F64 &&
             npz_reader_ndim(r) == 2 && npz_reader_shape(r)[0] == 2 && npz_reader_shape(r)[1] == 3 &&
             npz_reader_read(r, got, 6) == 0 && memcmp(got, sig, sizeof sig) == 0;
    npz_reader_close(r);
    test_check(ok, "read back 'sigma' [2][3] float64 exactly");
    test_check(npz_has_key(p1, "mu") == 1 && npz_has_key(p1, "arr_0") == 0, "npz_has_key");
    rc = npz_reader_open(&r, p1, "arr_0");
    test_check(rc == -1 && strstr(err_msg(), "has no array 'arr_0'"), "missing array named: %s", err_msg());
    /* the project's uint8 writer, classic and Zip64 layouts */
    uint8_t img[2 * 4 * 5 * 3], back[sizeof img];
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)(i * 7);
    int shape[4] = {2, 4, 5, 3};
    for (int z = 0; z < 2; z++) {
        npz_write_uint8_ex(p2, "arr_0", img, shape, 4, z);
        ok = npz_reader_open(&r, p2, "arr_0") == 0 && npz_reader_dtype(r) == NPZ_DTYPE_U8 &&
             npz_reader_count(r) == sizeof img && npz_reader_read(r, back, 60) == 0 &&
             npz_reader_read(r, back + 60, sizeof img - 60) == 0 && !memcmp(img, back, sizeof img);
        test_check(ok, "reads npz_write_uint8%s output in two pieces", z ? " (Zip64)" : "");
        rc = npz_reader_read(r, back, 1);
        test_check(rc == -1 && strstr(err_msg(), "0 left"), "reading past the end refused: %s", err_msg());
        npz_reader_close(r);
    }
    /* a flipped data byte: CRC mismatch once the whole entry is read */
    FILE *f = fopen(p2, "r+b");
    fseek(f, 200, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 200, SEEK_SET);
    fputc(ch ^ 0x40, f);
    fclose(f);
    ok = npz_reader_open(&r, p2, "arr_0") == 0 && npz_reader_read(r, back, sizeof img) == -1 &&
         strstr(err_msg(), "CRC-32 mismatch");
    test_check(ok, "corrupted byte detected: %s", err_msg());
    npz_reader_close(r);
    /* truncation: the end of the archive is gone */
    f = fopen(p1, "rb");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    f = fopen(p3, "wb");
    fwrite(buf, 1, n - 30, f);
    fclose(f);
    rc = npz_reader_open(&r, p3, "mu");
    test_check(rc == -1 && strstr(err_msg(), "not a zip archive"), "truncated archive refused: %s", err_msg());
    unlink(p1);
    unlink(p2);
    unlink(p3);
    rmdir(dir);
}

int main(void) {
    test_pieces();
    test_plans();
    test_evaluate_invariance(0);
    test_evaluate_invariance(3);
    test_fid_trace();
    test_conv_rect();
    test_npz();
    return test_done();
}
