/* eps_theta of a checkpoint's network, loaded and run as ddpm-sample runs it (the
 * one loader, common/ckpt/ckpt_model.h, and unet_prepare), on random inputs, for
 * the export test (tests/ref/test_export_ref.sh compares it with PyTorch on the
 * exported file):
 *   ckpt_eps_dump CHECKPOINT ema|params N SEED OUT.tns
 * Records: x_t [N,C,S,S], t [N] (as floats; spread over 0..T-1), for a
 * class-conditional model y [N] (image n gets label n mod (K + 1), the null label
 * K included), out [N,OC,S,S] (OC = 2C with learned variances: eps and v). */
#include <stdio.h>
#include <stdlib.h>

#include "common/ckpt/ckpt_model.h"
#include "common/core/util.h"
#include "common/env/env_opts.h"
#include "common/io/tensor_file.h"
#include "common/rng/rng.h"

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s CHECKPOINT ema|params N SEED OUT.tns\n", argv[0]);
        return 2;
    }
    int which = ckpt_weights_parse(argv[2]), N = atoi(argv[3]);
    uint64_t seed = strtoull(argv[4], NULL, 10);
    unet_options opt = unet_options_default();
    ckpt_model cm;
    if (!which || N < 1 || env_unet_options(&opt) != 0 ||
        ckpt_model_load(&cm, argv[1], which, N, &opt, OPS_FP32) != 0) {
        fprintf(stderr, "ckpt_eps_dump: %s\n", which && N > 0 ? err_msg() : "bad arguments");
        return 1;
    }
    const model_config *mc = &cm.cfg.model;
    int S = mc->image_size, C = mc->in_channels, T = cm.cfg.diffusion.timesteps;
    int OC = unet_out_channels(cm.model), K = mc->num_classes;
    size_t D = (size_t)C * S * S, OD = (size_t)OC * S * S;
    float *x = xfloats((size_t)N * D), *out = xfloats((size_t)N * OD), *tf = xfloats((size_t)N);
    float *yf = xfloats((size_t)N);
    int *t = xcalloc((size_t)N, sizeof *t), *y = xcalloc((size_t)N, sizeof *y);
    for (int n = 0; n < N; n++) {
        rng_key k = {seed, 1, (uint64_t)n, RNG_PURPOSE_NOISE};
        rng_normal(&k, x + (size_t)n * D, D);
        t[n] = N > 1 ? (int)((long)(T - 1) * n / (N - 1)) : T / 2;
        tf[n] = (float)t[n];
        y[n] = n % (K + 1);
        yf[n] = (float)y[n];
    }
    if (unet_prepare(cm.model, cm.weights) != 0) fprintf(stderr, "ckpt_eps_dump: %s\n", err_msg());
    unet_forward(cm.model, cm.weights, x, t, K > 0 ? y : NULL, N, NULL, out);
    tensor_file f;
    int64_t dx[4] = {N, C, S, S}, dout[4] = {N, OC, S, S}, dn[1] = {N};
    if (tensor_file_create(&f, argv[5]) != 0 || tensor_file_add(&f, "x_t", 4, dx, x) != 0 ||
        tensor_file_add(&f, "t", 1, dn, tf) != 0 ||
        (K > 0 && tensor_file_add(&f, "y", 1, dn, yf) != 0) ||
        tensor_file_add(&f, "out", 4, dout, out) != 0 || tensor_file_close(&f) != 0) {
        fprintf(stderr, "ckpt_eps_dump: %s\n", err_msg());
        return 1;
    }
    free(x); free(out); free(tf); free(t); free(yf); free(y);
    ckpt_model_free(&cm);
    return 0;
}
