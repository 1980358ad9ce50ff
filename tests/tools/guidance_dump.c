/* Classifier-free guidance as the sampler computes it, for tests/ref/guidance_ref.py:
 *   guidance_dump CONFIG OUT.tns W [N]
 * Builds the (class-conditional) U-Net of CONFIG with random non-degenerate weights,
 * draws N fixed inputs x, timesteps t and labels y (image n: class n mod K), and
 * writes: x, t, y, W, eps_cond = eps(x, t, y) and eps_null = eps(x, t, null label),
 * each from its own forward of N images; guided = sampler_eps with guidance W over
 * a model that takes 2N images (one batched forward of [cond; null]); guided_split =
 * the same over a model of N images (two forwards). */
#include <stdio.h>
#include <stdlib.h>

#include "common/config/config.h"
#include "common/core/util.h"
#include "common/diffusion/diffusion.h"
#include "common/io/tensor_file.h"
#include "common/model/unet.h"
#include "common/rng/rng.h"
#include "common/sample/sampler.h"

static void check(int rc) {
    if (rc != 0) {
        fprintf(stderr, "guidance_dump: %s\n", err_msg());
        exit(1);
    }
}

static unet *make(const model_config *mc, int batch) {
    unet_options opt = unet_options_default();
    unet *m = unet_create(mc, batch, 0, &opt);
    if (!m) check(-1);
    return m;
}

/* sampler_eps over a model built for `batch` images. */
static void guided(const config *cfg, const diffusion *diff, const float *params, int batch,
                   double w, const float *x, const int *t, const int *y, int N, float *out) {
    unet *m = make(&cfg->model, batch);
    sampler s;
    sampler_opts so = sampler_opts_default();
    check(sampler_init(&s, diff, &so, cfg->model.in_channels, cfg->model.image_size, N));
    check(sampler_set_guidance(&s, cfg->model.num_classes, w));
    for (int n = 0; n < N; n++) s.t_model[n] = t[n];
    sampler_eps(&s, m, params, x, y, N);
    for (size_t i = 0; i < (size_t)N * s.D; i++) out[i] = s.eps[i];
    sampler_free(&s);
    unet_free(m);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CONFIG OUT.tns W [N]\n", argv[0]);
        return 2;
    }
    double w = atof(argv[3]);
    int N = argc > 4 ? atoi(argv[4]) : 3;
    config cfg;
    check(config_load_file(&cfg, argv[1]));
    const model_config *mc = &cfg.model;
    const int K = mc->num_classes;
    diffusion diff;
    check(diffusion_init(&diff, cfg.diffusion.schedule, cfg.diffusion.timesteps,
                         cfg.diffusion.beta_start, cfg.diffusion.beta_end));
    unet *m = make(mc, N);
    size_t P = unet_num_params(m), D = (size_t)mc->in_channels * mc->image_size * mc->image_size;
    float *params = xfloats(P);
    /* every weight random in [-0.2, 0.2]: conv_out's authors' init (1e-10) would make
     * every epsilon zero */
    rng_key kp = {99, 0, 0, RNG_PURPOSE_INIT};
    rng_uniform(&kp, params, P);
    for (size_t i = 0; i < P; i++) params[i] = 0.4f * params[i] - 0.2f;
    float *x = xfloats((size_t)N * D), *ec = xfloats((size_t)N * D), *eu = xfloats((size_t)N * D);
    float *g = xfloats((size_t)N * D), *gs = xfloats((size_t)N * D), *tf = xfloats((size_t)N);
    float *yf = xfloats((size_t)N);
    int *t = xcalloc((size_t)N, sizeof *t), *y = xcalloc((size_t)N, sizeof *y);
    rng_key kx = {99, 1, 0, RNG_PURPOSE_NOISE};
    rng_normal(&kx, x, (size_t)N * D);
    for (int n = 0; n < N; n++) {
        tf[n] = (float)(t[n] = (137 * n + 11) % cfg.diffusion.timesteps);
        yf[n] = (float)(y[n] = K > 0 ? n % K : 0);
    }
    unet_forward(m, params, x, t, y, N, NULL, ec);
    unet_forward(m, params, x, t, NULL, N, NULL, eu);
    guided(&cfg, &diff, params, 2 * N, w, x, t, y, N, g);
    guided(&cfg, &diff, params, N, w, x, t, y, N, gs);

    tensor_file f;
    check(tensor_file_create(&f, argv[2]));
    int64_t dx[4] = {N, mc->in_channels, mc->image_size, mc->image_size}, dn[1] = {N}, d1[1] = {1};
    float wf = (float)w;
    check(tensor_file_add(&f, "x", 4, dx, x));
    check(tensor_file_add(&f, "t", 1, dn, tf));
    check(tensor_file_add(&f, "y", 1, dn, yf));
    check(tensor_file_add(&f, "W", 1, d1, &wf));
    check(tensor_file_add(&f, "eps_cond", 4, dx, ec));
    check(tensor_file_add(&f, "eps_null", 4, dx, eu));
    check(tensor_file_add(&f, "guided", 4, dx, g));
    check(tensor_file_add(&f, "guided_split", 4, dx, gs));
    check(tensor_file_close(&f));
    free(params); free(x); free(ec); free(eu); free(g); free(gs); free(tf); free(yf); free(t);
    free(y);
    unet_free(m);
    diffusion_free(&diff);
    return 0;
}
