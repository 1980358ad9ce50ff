/* Runs the bits/dim evaluation (common/eval/bpd.h) of a config's model with random,
 * non-degenerate weights on random images and writes what the PyTorch reference
 * (tests/ref/bpd_ref.py) needs to recompute every term:
 *   bpd_ref_dump CONFIG OUT.tns N SEED KIND(beta|beta_tilde) CLIP(0|1) STRIDE [KEY=VALUE...]
 * (the KEY=VALUE overrides apply to the config, as ddpm-train's do)
 * Records: meta/model, meta/diffusion [T, beta_start, beta_end, kind, clip, stride],
 * param/NAME, x0 [N][C][S][S], noise [N][T][D] and eps [N][T][OD] (the model's output
 * on every x_t, OD = D, or 2D: [eps | v] for a model with learn_sigma; computed here
 * in one batch per image exactly as bpd_evaluate batches it), terms/mse [N][T] and prior/total [N] from bpd_evaluate (stride 1, one image
 * per call), and for the strided estimates total_unbiased/total_trapezoid [N] and
 * evaluated_unbiased/evaluated_trapezoid [N][T] (1 where the term was evaluated).
 * A class-conditional model (model.num_classes K > 0) is evaluated conditioned on
 * image n's label (2n + 1) mod K, written as labels [N]. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config/config.h"
#include "common/core/util.h"
#include "common/diffusion/diffusion.h"
#include "common/env/env_opts.h"
#include "common/eval/bpd.h"
#include "common/io/tensor_file.h"
#include "common/model/unet.h"
#include "common/rng/rng.h"

static void die(void) {
    fprintf(stderr, "bpd_ref_dump: %s\n", err_msg());
    exit(1);
}

static void add(tensor_file *tf, const char *name, int ndim, const int64_t *dims, const float *d) {
    if (tensor_file_add(tf, name, ndim, dims, d) != 0) die();
}

/* A double as two floats, NAME (hi) and NAME.lo (the rest): hi + lo keeps ~48 bits. */
static void add_doubles(tensor_file *tf, const char *name, int ndim, const int64_t *dims,
                        const double *d, size_t n) {
    float *hi = xfloats(n), *lo = xfloats(n);
    for (size_t i = 0; i < n; i++) {
        hi[i] = (float)d[i];
        lo[i] = (float)(d[i] - (double)hi[i]);
    }
    char lname[128];
    snprintf(lname, sizeof lname, "%s.lo", name);
    add(tf, name, ndim, dims, hi);
    add(tf, lname, ndim, dims, lo);
    free(hi);
    free(lo);
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s CONFIG OUT.tns N SEED beta|beta_tilde CLIP STRIDE [KEY=VALUE...]\n",
                argv[0]);
        return 2;
    }
    int N = atoi(argv[3]);
    uint64_t seed = strtoull(argv[4], NULL, 10);
    int kind = strcmp(argv[5], "beta_tilde") == 0 ? SAMPLING_VAR_BETA_TILDE : SAMPLING_VAR_BETA;
    int clip = atoi(argv[6]), stride = atoi(argv[7]);
    config cfg;
    if (config_load_file(&cfg, argv[1]) != 0) die();
    for (int a = 8; a < argc; a++)
        if (config_override(&cfg, argv[a]) != 0) die();
    if (config_validate(&cfg) != 0) die();
    const model_config *mc = &cfg.model;
    int T = cfg.diffusion.timesteps;
    unet_options opt = unet_options_default();
    unet *m = env_unet_options(&opt) == 0 ? unet_create(mc, T, 0, &opt) : NULL;
    if (!m) die();
    size_t P = unet_num_params(m);
    float *params = xfloats(P);
    const unet_tensor *tt = unet_tensors(m);
    for (int i = 0; i < unet_num_tensors(m); i++) { /* as tests/tools/unet_ref_dump.c */
        const unet_tensor *t = &tt[i];
        float *p = params + t->offset;
        rng_key key = {seed, 1, (uint64_t)i, RNG_PURPOSE_INIT};
        rng_uniform(&key, p, t->size);
        double lo, hi;
        if (t->ndim >= 2) {
            double rec = t->ndim == 4 ? (double)t->shape[2] * t->shape[3] : 1.0;
            hi = sqrt(3.0 / ((t->shape[0] * rec + t->shape[1] * rec) / 2.0));
            lo = -hi;
        } else if (t->init_scale < 0) {
            lo = 0.5, hi = 1.5;
        } else if (strstr(t->name, "norm")) {
            lo = -0.5, hi = 0.5;
        } else {
            lo = -0.1, hi = 0.1;
        }
        for (size_t j = 0; j < t->size; j++) p[j] = (float)(lo + (hi - lo) * p[j]);
    }
    diffusion d;
    if (diffusion_init(&d, cfg.diffusion.schedule, T, cfg.diffusion.beta_start,
                       cfg.diffusion.beta_end) != 0)
        die();
    int S = mc->image_size, C = mc->in_channels;
    size_t D = (size_t)C * S * S, OD = (size_t)unet_out_channels(m) * S * S;
    /* random images, with the edge values 0 and 255 present (the open-ended bins) */
    uint8_t *u8 = xmalloc((size_t)N * D);
    for (int n = 0; n < N; n++) {
        rng_key k = {seed, 2, (uint64_t)n, RNG_PURPOSE_NOISE};
        for (size_t i = 0; i < D; i++) u8[(size_t)n * D + i] = (uint8_t)rng_below(&k, i, 256);
        u8[(size_t)n * D] = 0;
        u8[(size_t)n * D + 1] = 255;
    }
    float *x0 = xfloats((size_t)N * D);
    for (size_t i = 0; i < (size_t)N * D; i++) x0[i] = (float)u8[i] / 127.5f - 1.0f;
    uint64_t *ids = xcalloc((size_t)N, sizeof *ids);
    for (int n = 0; n < N; n++) ids[n] = 100 + 7 * (uint64_t)n;
    const int K = mc->num_classes;
    int *labels = xcalloc((size_t)N, sizeof *labels), *yT = xcalloc((size_t)T, sizeof *yT);
    float *labels_f = xfloats((size_t)N);
    for (int n = 0; n < N; n++) labels_f[n] = (float)(labels[n] = K > 0 ? (2 * n + 1) % K : 0);

    size_t NTD = (size_t)N * T * D;
    float *noise = xfloats(NTD), *eps = xfloats((size_t)N * T * OD), *xt = xfloats((size_t)T * D);
    double *terms = xcalloc((size_t)N * T, sizeof *terms), *mse = xcalloc((size_t)N * T, sizeof *mse);
    double *prior = xcalloc((size_t)N, sizeof *prior), *total = xcalloc((size_t)N, sizeof *total);
    double *tot_s[2], *evald[2];
    int *ts = xcalloc((size_t)T, sizeof *ts), *tmap = xcalloc((size_t)T, sizeof *tmap);
    for (int e = 0; e < 2; e++) {
        tot_s[e] = xcalloc((size_t)N, sizeof(double));
        evald[e] = xcalloc((size_t)N * T, sizeof(double));
    }
    for (int n = 0; n < N; n++) {
        float *nz = noise + (size_t)n * T * D;
        for (int t = 0; t < T; t++) {
            rng_key k = {seed, (uint64_t)t, ids[n], RNG_PURPOSE_EVAL};
            rng_normal(&k, nz + (size_t)t * D, D);
            ts[t] = t;
            tmap[t] = d.timestep_map[t];
            diffusion_q_sample(&d, xt + (size_t)t * D, x0 + (size_t)n * D, nz + (size_t)t * D,
                               &ts[t], 1, D);
        }
        for (int t = 0; t < T; t++) yT[t] = labels[n];
        unet_forward(m, params, xt, tmap, K > 0 ? yT : NULL, T, NULL, eps + (size_t)n * T * OD);
        const int *yn = K > 0 ? &labels[n] : NULL;

        bpd_config bc = {&d, kind, clip, 1, BPD_ESTIMATE_UNBIASED, seed};
        bpd_result r;
        if (bpd_result_init(&r, T) != 0) die();
        if (bpd_evaluate(m, params, &bc, x0 + (size_t)n * D, &ids[n], yn, 1, C, S, &r, &total[n],
                         NULL, NULL) != 0)
            die();
        for (int t = 0; t < T; t++) {
            terms[(size_t)n * T + t] = r.term_sum[t];
            mse[(size_t)n * T + t] = r.mse_sum[t];
        }
        prior[n] = r.scalars[BPD_S_PRIOR];
        bpd_result_free(&r);
        for (int e = 0; e < 2; e++) {
            bc.stride = stride;
            bc.estimate = e == 0 ? BPD_ESTIMATE_UNBIASED : BPD_ESTIMATE_TRAPEZOID;
            if (bpd_result_init(&r, T) != 0) die();
            if (bpd_evaluate(m, params, &bc, x0 + (size_t)n * D, &ids[n], yn, 1, C, S, &r,
                             &tot_s[e][n], NULL, NULL) != 0)
                die();
            for (int t = 0; t < T; t++) evald[e][(size_t)n * T + t] = r.count[t];
            bpd_result_free(&r);
        }
    }

    tensor_file tf;
    if (tensor_file_create(&tf, argv[2]) != 0) die();
    float meta[32];
    int64_t dk[1] = {unet_describe(mc, meta)};
    add(&tf, "meta/model", 1, dk, meta);
    float dm[6] = {(float)T, 0, 0, (float)kind, (float)clip, (float)stride};
    int64_t d6[1] = {6};
    add(&tf, "meta/diffusion", 1, d6, dm);
    /* the betas as doubles would not survive float32; the reference rebuilds them from
     * the config's exact decimal values passed on its command line */
    int64_t dx[4] = {N, C, S, S}, dn[3] = {N, T, (int64_t)D}, dnt[2] = {N, T}, d1[1] = {N};
    int64_t dno[3] = {N, T, (int64_t)OD};
    add(&tf, "x0", 4, dx, x0);
    if (K > 0) add(&tf, "labels", 1, d1, labels_f);
    add(&tf, "noise", 3, dn, noise);
    add(&tf, "eps", 3, dno, eps);
    add_doubles(&tf, "terms", 2, dnt, terms, (size_t)N * T);
    add_doubles(&tf, "mse", 2, dnt, mse, (size_t)N * T);
    add_doubles(&tf, "prior", 1, d1, prior, (size_t)N);
    add_doubles(&tf, "total", 1, d1, total, (size_t)N);
    add_doubles(&tf, "total_unbiased", 1, d1, tot_s[0], (size_t)N);
    add_doubles(&tf, "total_trapezoid", 1, d1, tot_s[1], (size_t)N);
    add_doubles(&tf, "evaluated_unbiased", 2, dnt, evald[0], (size_t)N * T);
    add_doubles(&tf, "evaluated_trapezoid", 2, dnt, evald[1], (size_t)N * T);
    char name[256];
    for (int i = 0; i < unet_num_tensors(m); i++) {
        int64_t dims[4];
        for (int k = 0; k < tt[i].ndim; k++) dims[k] = tt[i].shape[k];
        snprintf(name, sizeof name, "param/%s", tt[i].name);
        add(&tf, name, tt[i].ndim, dims, params + tt[i].offset);
    }
    if (tensor_file_close(&tf) != 0) die();
    printf("wrote %s: %d images, T %d, mean total %.6f bits/dim\n", argv[2], N, T,
           (total[0] + total[N - 1]) / 2);
    for (int e = 0; e < 2; e++) {
        free(tot_s[e]);
        free(evald[e]);
    }
    free(params); free(u8); free(x0); free(ids); free(noise); free(eps); free(xt); free(terms);
    free(mse); free(prior); free(total); free(ts); free(tmap); free(labels); free(yT); free(labels_f);
    diffusion_free(&d);
    unet_free(m);
    return 0;
}
