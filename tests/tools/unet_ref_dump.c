/* Builds the U-Net of a config with random, non-degenerate weights, runs one
 * L_simple forward/backward on random (x_t, t, noise) and writes everything the
 * PyTorch reference (tests/ref/unet_ref.py) needs to redo the computation:
 *   unet_ref_dump CONFIG OUT.tns [N] [SEED] [fp32|bf16] [KEY=VALUE...]
 * (fp32, the default, or bf16: unet_options.precision; the KEY=VALUE overrides
 * apply to the config, as ddpm-train's do)
 * Records: meta/model, x_t, t, noise, out, loss, param/NAME, grad/NAME, mask/BLOCK,
 * precision (0 fp32, 1 bf16). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config/config.h"
#include "common/core/util.h"
#include "common/env/env_opts.h"
#include "common/io/tensor_file.h"
#include "common/model/unet.h"
#include "common/ops/ops.h"
#include "common/rng/rng.h"

static int add(tensor_file *tf, const char *name, int ndim, const int64_t *dims, const float *d) {
    if (tensor_file_add(tf, name, ndim, dims, d) != 0) {
        fprintf(stderr, "unet_ref_dump: %s\n", err_msg());
        exit(1);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CONFIG OUT.tns [N] [SEED] [fp32|bf16] [KEY=VALUE...]\n", argv[0]);
        return 2;
    }
    int N = argc > 3 ? atoi(argv[3]) : 2;
    uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 1234;
    config cfg;
    int bad = config_load_file(&cfg, argv[1]) != 0;
    int first_kv = argc > 5 && (!strcmp(argv[5], "bf16") || !strcmp(argv[5], "fp32")) ? 6 : 5;
    for (int a = first_kv; a < argc && !bad; a++) bad = config_override(&cfg, argv[a]) != 0;
    if (bad || config_validate(&cfg) != 0) {
        fprintf(stderr, "unet_ref_dump: %s\n", err_msg());
        return 1;
    }
    const model_config *mc = &cfg.model;
    unet_options opt = unet_options_default();
    if (argc > 5 && strcmp(argv[5], "bf16") == 0) opt.precision = OPS_BF16;
    unet *m = env_unet_options(&opt) == 0 ? unet_create(mc, N, 1, &opt) : NULL;
    if (!m) {
        fprintf(stderr, "unet_ref_dump: %s\n", err_msg());
        return 1;
    }
    size_t P = unet_num_params(m);
    float *params = xfloats(P), *grads = xfloats(P);
    /* Non-degenerate weights: the authors' variance scaling at scale 1 everywhere
     * (no 1e-10 tensors), random GroupNorm affine and random biases. */
    const unet_tensor *tt = unet_tensors(m);
    for (int i = 0; i < unet_num_tensors(m); i++) {
        const unet_tensor *t = &tt[i];
        float *p = params + t->offset;
        rng_key key = {seed, 1, (uint64_t)i, RNG_PURPOSE_INIT};
        rng_uniform(&key, p, t->size);
        double lo, hi;
        if (t->ndim >= 2) {
            double rec = t->ndim == 4 ? (double)t->shape[2] * t->shape[3] : 1.0;
            double limit = sqrt(3.0 / ((t->shape[0] * rec + t->shape[1] * rec) / 2.0));
            lo = -limit;
            hi = limit;
        } else if (t->init_scale < 0) { /* GroupNorm gamma */
            lo = 0.5;
            hi = 1.5;
        } else if (strstr(t->name, "norm")) { /* GroupNorm beta */
            lo = -0.5;
            hi = 0.5;
        } else { /* biases */
            lo = -0.1;
            hi = 0.1;
        }
        for (size_t j = 0; j < t->size; j++) p[j] = (float)(lo + (hi - lo) * p[j]);
    }
    int S = mc->image_size, C = mc->in_channels, OC = unet_out_channels(m);
    size_t D = (size_t)C * S * S, ND = (size_t)N * D, OD = (size_t)OC * S * S, NOD = (size_t)N * OD;
    /* the loss is an MSE over the whole output: with learn_sigma, v's channels too
     * (this checks the network; the hybrid loss has its own test, test_hybrid_ref.sh) */
    float *xt = xfloats(ND), *noise = xfloats(NOD), *out = xfloats(NOD), *dout = xfloats(NOD);
    float *tf32 = xfloats((size_t)N);
    int *t = xcalloc((size_t)N, sizeof *t);
    uint64_t *ids = xcalloc((size_t)N, sizeof *ids);
    for (int n = 0; n < N; n++) {
        rng_key kx = {seed, 2, (uint64_t)n, RNG_PURPOSE_NOISE};
        rng_normal(&kx, xt + (size_t)n * D, D);
        rng_key ke = {seed, 3, (uint64_t)n, RNG_PURPOSE_NOISE};
        rng_normal(&ke, noise + (size_t)n * OD, OD);
        rng_key kt = {seed, 4, (uint64_t)n, RNG_PURPOSE_TIMESTEP};
        t[n] = (int)rng_below(&kt, 0, (uint32_t)cfg.diffusion.timesteps);
        tf32[n] = (float)t[n];
        ids[n] = 1000 + (uint64_t)n;
    }
    /* class labels (num_classes K > 0): image n gets n mod (K + 1), so the null
     * label K appears once N > K, and a label repeats once N > K + 1 (its gradient
     * row sums two images) */
    const int K = mc->num_classes;
    int *y = K > 0 ? xcalloc((size_t)N, sizeof *y) : NULL;
    float *yf = xfloats((size_t)N);
    for (int n = 0; K > 0 && n < N; n++) yf[n] = (float)(y[n] = n % (K + 1));
    unet_rng r = {seed, 7, ids};
    unet_forward(m, params, xt, t, y, N, &r, out);
    float loss = mse_forward(out, noise, NOD);
    mse_backward(dout, out, noise, NOD, 1.0f);
    unet_backward(m, params, grads, dout);

    tensor_file tf;
    if (tensor_file_create(&tf, argv[2]) != 0) {
        fprintf(stderr, "unet_ref_dump: %s\n", err_msg());
        return 1;
    }
    float meta[32];
    int k = unet_describe(mc, meta);
    int64_t dk[1] = {k};
    add(&tf, "meta/model", 1, dk, meta);
    int64_t dx[4] = {N, C, S, S}, dox[4] = {N, OC, S, S}, dn[1] = {N}, d1[1] = {1};
    add(&tf, "x_t", 4, dx, xt);
    add(&tf, "t", 1, dn, tf32);
    if (y) add(&tf, "y", 1, dn, yf);
    add(&tf, "noise", 4, dox, noise);
    add(&tf, "out", 4, dox, out);
    add(&tf, "loss", 1, d1, &loss);
    const float prec = opt.precision == OPS_BF16 ? 1.0f : 0.0f;
    add(&tf, "precision", 1, d1, &prec);
    char name[256];
    for (int i = 0; i < unet_num_tensors(m); i++) {
        const unet_tensor *te = &tt[i];
        int64_t dims[4];
        for (int d = 0; d < te->ndim; d++) dims[d] = te->shape[d];
        snprintf(name, sizeof name, "param/%s", te->name);
        add(&tf, name, te->ndim, dims, params + te->offset);
        snprintf(name, sizeof name, "grad/%s", te->name);
        add(&tf, name, te->ndim, dims, grads + te->offset);
    }
    for (int id = 0; id < unet_num_dropout(m); id++) {
        size_t n = 0;
        const char *bn = NULL;
        const float *mask = unet_dropout_mask(m, id, &n, &bn);
        if (!mask) continue;
        /* block name = tensor name without ".norm1.weight" */
        char block[96];
        snprintf(block, sizeof block, "%s", bn);
        char *cut = strstr(block, ".norm1.weight");
        if (cut) *cut = 0;
        snprintf(name, sizeof name, "mask/%s", block);
        int64_t dm[1] = {(int64_t)n};
        add(&tf, name, 1, dm, mask);
    }
    if (tensor_file_close(&tf) != 0) {
        fprintf(stderr, "unet_ref_dump: %s\n", err_msg());
        return 1;
    }
    printf("wrote %s: %zu params, loss %.6f\n", argv[2], P, loss);
    free(params); free(grads); free(xt); free(noise); free(out); free(dout); free(tf32);
    free(t); free(ids); free(y); free(yf);
    unet_free(m);
    return 0;
}
