/* Bits/dim of the variational bound (see bpd.h and docs/evaluation.md). */
#include "common/eval/bpd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/data/dataset.h"
#include "common/diffusion/vlb.h"
#include "common/rng/rng.h"

/* The strided offsets use their own stream: the noise streams use step = t < 2^32. */
#define BPD_OFFSET_STEP (UINT64_C(1) << 40)

void bpd_prior(const diffusion *d, const float *x0, int N, size_t D, double *prior) {
    int T = d->T;
    double s = d->sqrt_alphas_cumprod[T - 1], lv = d->log_one_minus_alphas_cumprod[T - 1];
    for (int n = 0; n < N; n++) {
        const float *a = x0 + (size_t)n * D;
        double sq = 0;
        for (size_t i = 0; i < D; i++) sq += (s * a[i]) * (s * a[i]);
        prior[n] = (0.5 * (-1.0 - lv + exp(lv)) + 0.5 * sq / (double)D) / M_LN2;
    }
}

int bpd_plan(int T, int stride, bpd_estimate estimate, uint64_t seed, uint64_t image_id, int *ts,
             double *w) {
    int n = 0;
    if (stride <= 1 || T <= 2) {
        for (int t = 0; t < T; t++) {
            ts[n] = t;
            w[n++] = 1.0;
        }
        return n;
    }
    ts[n] = 0;
    w[n++] = 1.0;
    if (estimate == BPD_ESTIMATE_UNBIASED) {
        rng_key key = {seed, BPD_OFFSET_STEP, image_id, RNG_PURPOSE_EVAL};
        int r = (int)rng_below(&key, 0, (uint32_t)stride);
        for (int t = 1 + r; t <= T - 1; t += stride) {
            ts[n] = t;
            w[n++] = (double)stride;
        }
        return n;
    }
    /* Trapezoid: grid 1, 1+k, ..., and T-1. Summing the linear interpolation over
     * the integers a..b-1 of an interval [a, b] of length m gives L_a (m+1)/2 +
     * L_b (m-1)/2; the last grid point adds its own value once. */
    int first = n;
    for (int t = 1; t < T - 1; t += stride) {
        ts[n] = t;
        w[n++] = 0.0;
    }
    ts[n] = T - 1;
    w[n++] = 0.0;
    for (int i = first; i + 1 < n; i++) {
        double m = (double)(ts[i + 1] - ts[i]);
        w[i] += (m + 1) / 2;
        w[i + 1] += (m - 1) / 2;
    }
    w[n - 1] += 1.0;
    return n;
}

int bpd_result_init(bpd_result *r, int T) {
    memset(r, 0, sizeof *r);
    if (T < 1) return err_set("bpd: T must be at least 1 (got %d)", T);
    r->T = T;
    r->buf = xcalloc(3 * (size_t)T + BPD_S_COUNT, sizeof(double));
    r->term_sum = r->buf;
    r->mse_sum = r->buf + T;
    r->count = r->buf + 2 * (size_t)T;
    r->scalars = r->buf + 3 * (size_t)T;
    return 0;
}

void bpd_result_free(bpd_result *r) {
    free(r->buf);
    memset(r, 0, sizeof *r);
}

size_t bpd_result_doubles(const bpd_result *r) { return 3 * (size_t)r->T + BPD_S_COUNT; }

double bpd_result_mean(const bpd_result *r) {
    double n = r->scalars[BPD_S_IMAGES];
    return n > 0 ? r->scalars[BPD_S_TOTAL] / n : 0;
}

double bpd_result_stderr(const bpd_result *r) {
    double n = r->scalars[BPD_S_IMAGES];
    if (n < 2) return 0;
    double mean = r->scalars[BPD_S_TOTAL] / n;
    double var = (r->scalars[BPD_S_TOTAL_SQ] - n * mean * mean) / (n - 1);
    return var > 0 ? sqrt(var / n) : 0;
}

int bpd_evaluate(unet *m, const float *params, const bpd_config *cfg, const float *x0,
                 const uint64_t *image_ids, const int *labels, int N, int C, int S, bpd_result *r,
                 double *per_image_total, bpd_progress_fn progress, void *ctx) {
    const diffusion *d = cfg->diff;
    int T = d->T;
    if (cfg->stride < 1) return err_set("bpd: stride must be at least 1 (got %d)", cfg->stride);
    if (r->T != T) return err_set("bpd: result has %d timesteps, the process %d", r->T, T);
    if (N <= 0) return 0;
    const int K = unet_num_classes(m);
    for (int n = 0; labels && n < N; n++)
        if (labels[n] < 0 || labels[n] >= K)
            return K == 0 ? err_set("bpd: labels given for a model without classes (num_classes 0)")
                          : err_set("bpd: image %llu: label %d outside 0..%d (num_classes %d)",
                                    (unsigned long long)image_ids[n], labels[n], K - 1, K);
    int B = unet_max_batch(m);
    size_t D = (size_t)C * S * S;
    int *ts = xcalloc((size_t)T, sizeof *ts);
    double *w = xcalloc((size_t)T, sizeof *w);
    size_t total_pairs = 0;
    for (int n = 0; n < N; n++)
        total_pairs += (size_t)bpd_plan(T, cfg->stride, cfg->estimate, cfg->seed, image_ids[n], ts, w);
    /* a learned-variance model's output holds v after eps: pred takes both, then
     * eps is compacted in place and v copied out */
    const int learned = unet_out_channels(m) != C;
    float *xb = xfloats((size_t)B * D), *xt = xfloats((size_t)B * D);
    float *pred = xfloats((size_t)B * D * (learned ? 2 : 1));
    float *v = learned ? xfloats((size_t)B * D) : NULL;
    int *tb = xcalloc((size_t)B, sizeof *tb), *tm = xcalloc((size_t)B, sizeof *tm);
    int *img = xcalloc((size_t)B, sizeof *img), *yb = xcalloc((size_t)B, sizeof *yb);
    double *wb = xcalloc((size_t)B, sizeof *wb), *vb = xcalloc((size_t)B, sizeof *vb);
    double *mse = xcalloc((size_t)B, sizeof *mse);
    double *tot = xcalloc((size_t)N, sizeof *tot);
    bpd_prior(d, x0, N, D, tot); /* each total starts from its prior term */
    double prior_sum = 0;
    for (int n = 0; n < N; n++) prior_sum += tot[n];
    int rc = 0, nb = 0;
    size_t done = 0;
    /* fixed weights for the whole evaluation: transform the kernels once */
    const int prepared = !unet_prepared(m, params) && unet_prepare(m, params) == 0;
    for (int n = 0; n < N && rc == 0; n++) {
        int np = bpd_plan(T, cfg->stride, cfg->estimate, cfg->seed, image_ids[n], ts, w);
        for (int j = 0; j < np && rc == 0; j++) {
            const float *src = x0 + (size_t)n * D;
            memcpy(xb + (size_t)nb * D, src, D * sizeof(float));
            rng_key key = {cfg->seed, (uint64_t)ts[j], image_ids[n], RNG_PURPOSE_EVAL};
            rng_normal(&key, pred, D); /* pred holds the noise until the forward pass */
            diffusion_q_sample(d, xt + (size_t)nb * D, src, pred, &ts[j], 1, D);
            tb[nb] = ts[j];
            tm[nb] = d->timestep_map[ts[j]];
            img[nb] = n;
            yb[nb] = labels ? labels[n] : 0;
            wb[nb] = w[j];
            nb++;
            if (nb < B && !(n == N - 1 && j == np - 1)) continue;
            unet_forward(m, params, xt, tm, labels ? yb : NULL, nb, NULL, pred);
            if (learned) diffusion_split_output(pred, nb, D, pred, v);
            vlb_terms(d, cfg->kind, cfg->clip, xb, xt, pred, v, tb, nb, D, vb, mse, NULL, 0);
            for (int k = 0; k < nb; k++) {
                if (!isfinite(vb[k])) {
                    rc = err_set("bpd: image %llu, t %d: the term is %g",
                                 (unsigned long long)image_ids[img[k]], tb[k], vb[k]);
                    break;
                }
                r->term_sum[tb[k]] += vb[k];
                r->mse_sum[tb[k]] += mse[k];
                r->count[tb[k]] += 1;
                if (tb[k] == 0) r->scalars[BPD_S_DECODER] += vb[k];
                tot[img[k]] += wb[k] * vb[k];
            }
            done += (size_t)nb;
            nb = 0;
            if (progress) progress(ctx, done, total_pairs);
        }
    }
    if (rc == 0) {
        r->scalars[BPD_S_IMAGES] += N;
        r->scalars[BPD_S_PRIOR] += prior_sum;
        for (int n = 0; n < N; n++) {
            r->scalars[BPD_S_TOTAL] += tot[n];
            r->scalars[BPD_S_TOTAL_SQ] += tot[n] * tot[n];
        }
        if (per_image_total) memcpy(per_image_total, tot, (size_t)N * sizeof *tot);
    }
    if (prepared) unet_unprepare(m);
    free(ts); free(w); free(xb); free(xt); free(pred); free(v); free(tb); free(tm); free(img); free(yb);
    free(wb); free(vb); free(mse); free(tot);
    return rc;
}

typedef struct {
    bpd_progress_fn fn;
    void *ctx;
    size_t before, total;
} chunk_progress;

static void chunk_progress_fn(void *ctx, size_t done, size_t total) {
    (void)total;
    chunk_progress *c = ctx;
    c->fn(c->ctx, c->before + done, c->total);
}

int bpd_evaluate_u8(unet *m, const float *params, const bpd_config *cfg, const uint8_t *chw,
                    const uint64_t *image_ids, const int *labels, int N, int C, int S, bpd_result *r,
                    double *per_image_total, bpd_progress_fn progress, void *ctx) {
    const int chunk = 64;
    size_t D = (size_t)C * S * S;
    int T = cfg->diff->T;
    int *ts = xcalloc((size_t)T, sizeof *ts);
    double *w = xcalloc((size_t)T, sizeof *w);
    chunk_progress cp = {progress, ctx, 0, 0};
    for (int n = 0; n < N; n++)
        cp.total += (size_t)bpd_plan(T, cfg->stride, cfg->estimate, cfg->seed, image_ids[n], ts, w);
    float *x = xfloats((size_t)chunk * D);
    int rc = 0;
    for (int n0 = 0; n0 < N && rc == 0; n0 += chunk) {
        int nb = N - n0 < chunk ? N - n0 : chunk;
        dataset_to_float(x, chw + (size_t)n0 * D, nb, C, S, NULL);
        rc = bpd_evaluate(m, params, cfg, x, image_ids + n0, labels ? labels + n0 : NULL, nb, C, S, r,
                          per_image_total ? per_image_total + n0 : NULL,
                          progress ? chunk_progress_fn : NULL, &cp);
        for (int n = n0; n < n0 + nb; n++)
            cp.before += (size_t)bpd_plan(T, cfg->stride, cfg->estimate, cfg->seed, image_ids[n], ts, w);
    }
    free(ts);
    free(w);
    free(x);
    return rc;
}
