/* One training step of a config's U-Net at one micro-batch, in a fresh process, for
 * bench/memory_bench.sh: peak resident memory and seconds per image.
 *
 *   mem_step CONFIG.yaml MICRO [--threads T] [--limit-mib L] [--precision fp32|bf16]
 *
 * Builds the training model for MICRO images, the caller-side buffers a worker holds
 * (parameters, gradients, Adam m and v: 4 x unet_num_params floats), runs one
 * forward + backward (dropout as the config says) + Adam update on random inputs and
 * prints "key value" lines: activation_mib (unet_activation_bytes), step_s,
 * s_per_image, peak_rss_mib (getrusage ru_maxrss of this process). Before allocating
 * it estimates the footprint (activations + 4 parameter copies) and refuses with
 * exit status 3 ("skip ...") when that exceeds L MiB, so a too-large micro-batch is
 * skipped instead of pushing the machine into swap. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/config/config.h"
#include "common/core/blas_setup.h"
#include "common/core/util.h"
#include "common/env/env_opts.h"
#include "common/model/unet.h"
#include "common/ops/ops.h"
#include "common/optim/optim.h"
#include "common/rng/rng.h"

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

int main(int argc, char **argv) {
    blas_setup(argv);
    int threads = 2, npos = 0;
    double limit_mib = 20480;
    ops_precision prec = OPS_FP32;
    const char *pos[2] = {0};
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) threads = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--limit-mib") == 0) limit_mib = atof(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--precision") == 0) {
            const char *a = argv[++i];
            if (strcmp(a, "fp32") == 0) prec = OPS_FP32;
            else if (strcmp(a, "bf16") == 0) prec = OPS_BF16;
            else npos = 99;
        }
        else if (argv[i][0] != '-' && npos < 2) pos[npos++] = argv[i];
        else npos = 99;
    }
    int N = npos == 2 ? atoi(pos[1]) : 0;
    if (npos != 2 || N < 1 || threads < 1) {
        fprintf(stderr, "usage: mem_step CONFIG.yaml MICRO [--threads T] [--limit-mib L] "
                        "[--precision fp32|bf16]\n");
        return 2;
    }
    blas_set_threads(threads, 1);
    config c;
    if (config_load_file(&c, pos[0]) != 0) {
        fprintf(stderr, "mem_step: %s\n", err_msg());
        return 1;
    }
    unet_options opt = unet_options_default();
    opt.precision = prec;
    unet *model = env_unet_options(&opt) == 0 ? unet_create(&c.model, N, 1, &opt) : NULL;
    if (!model) {
        fprintf(stderr, "mem_step: %s: %s\n", pos[0], err_msg());
        return 1;
    }
    size_t P = unet_num_params(model);
    size_t D = (size_t)c.model.in_channels * c.model.image_size * c.model.image_size;
    /* the output (and the random target of the step's MSE): twice D with learn_sigma */
    size_t out_D = (size_t)unet_out_channels(model) * c.model.image_size * c.model.image_size;
    double act_mib = (double)unet_activation_bytes(model) / 1048576.0;
    double est_mib = act_mib + 4.0 * (double)P * sizeof(float) / 1048576.0;
    printf("kernel %s\nmicro %d\nthreads %d\nprecision %s\nactivation_mib %.1f\n"
           "estimate_mib %.1f\n",
           blas_kernel_name(), N, threads, ops_precision_names[prec], act_mib, est_mib);
    fflush(stdout);
    if (est_mib > limit_mib) {
        printf("skip estimate %.0f MiB exceeds the limit %.0f MiB\n", est_mib, limit_mib);
        unet_free(model);
        return 3;
    }
    float *params = xfloats(P), *grads = xcalloc(P, sizeof(float));
    float *am = xcalloc(P, sizeof(float)), *av = xcalloc(P, sizeof(float));
    unet_init(model, params, 3);
    size_t nd = (size_t)N * D, nod = (size_t)N * out_D;
    float *x = xfloats(nd), *eps = xfloats(nod), *pred = xfloats(nod);
    float *dpred = xcalloc(nod, sizeof(float));
    int *t = xcalloc((size_t)N, sizeof *t);
    uint64_t *ids = xcalloc((size_t)N, sizeof *ids);
    rng_key k = {5, 0, 0, 0};
    rng_normal(&k, x, nd);
    k.sample = 1;
    rng_normal(&k, eps, nod);
    for (int i = 0; i < N; i++) {
        t[i] = (i * 997 + 13) % c.diffusion.timesteps;
        ids[i] = (uint64_t)i;
    }
    optim_config oc = {.lr = 2e-5, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    unet_rng r = {7, 1, ids};

    double t0 = now_seconds();
    unet_forward(model, params, x, t, NULL, N, &r, pred);
    mse_backward(dpred, pred, eps, nod, 1.0f);
    unet_backward(model, params, grads, dpred);
    optim_adam(params, grads, am, av, P, 2e-5, 1.0, &oc, 1);
    double s = now_seconds() - t0;

    printf("step_s %.3f\ns_per_image %.3f\npeak_rss_mib %.1f\n", s, s / N, peak_rss_mib());
    free(params); free(grads); free(am); free(av); free(x); free(eps); free(pred); free(dpred);
    free(t); free(ids);
    unet_free(model);
    return 0;
}
