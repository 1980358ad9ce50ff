/* ddpm-sample: draws images from a trained checkpoint (no MPI needed).
 *
 *   ddpm-sample CHECKPOINT [options]
 *
 * Loads the EMA weights by default, streaming past the optimizer records, and runs
 * Algorithm 2 over all T steps, a respaced subset, or DDIM. Writes a PNG grid, a
 * .npz (uint8 NHWC under arr_0, the guided-diffusion evaluator's format) and, on
 * request, one PNG per image. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/ckpt/ckpt_model.h"
#include "common/config/config.h"
#include "common/core/blas_setup.h"
#include "common/core/util.h"
#include "common/diffusion/diffusion.h"
#include "common/env/env_opts.h"
#include "common/io/image_io.h"
#include "common/io/npz.h"
#include "common/model/unet.h"
#include "common/sample/sampler.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ddpm-sample CHECKPOINT [options]\n"
            "  -n, --num N           images to draw (default 64)\n"
            "  --first I             index of the first image (default 0); image i depends only\n"
            "                        on (seed, i), so ranges can be drawn on different machines\n"
            "  -b, --batch B         images per network evaluation (default 16)\n"
            "  --steps SPEC          respacing: all T steps (default), a count such as 100, or\n"
            "                        per-section counts such as 10,15,20 (improved-diffusion)\n"
            "  --ddim                DDIM instead of ancestral sampling (--steps defaults to T)\n"
            "  --eta E               DDIM eta in [0, 1] (default 0)\n"
            "  --variance KIND       beta | beta_tilde (default: the config's\n"
            "                        diffusion.sampling_variance)\n"
            "  --no-clip             do not clip the predicted x0 to [-1, 1]\n"
            "  --seed S              noise seed (default 0)\n"
            "  --weights W           ema (default) | params (the raw trained weights)\n"
            "  --grid PATH           PNG grid (default samples.png; 'none' to skip)\n"
            "  --npz PATH            .npz of uint8 NHWC images under arr_0 (default samples.npz;\n"
            "                        'none' to skip)\n"
            "  --png-dir DIR         also write one PNG per image into DIR\n"
            "  --threads N           BLAS threads (default: the CPUs given to the process)\n"
            "  -q, --quiet           no progress bar\n");
}

typedef struct {
    double t0;
    int done_images, total_images, batch_images;
    int quiet;
} progress_state;

static void show_progress(void *ctx, int step_done, int steps_total) {
    progress_state *p = ctx;
    if (p->quiet) return;
    double frac = ((double)p->done_images + (double)p->batch_images * step_done / steps_total) /
                  (double)p->total_images;
    double el = now_seconds() - p->t0;
    double eta = frac > 0 ? el / frac - el : 0;
    int bar = (int)(frac * 30);
    char b[31];
    for (int i = 0; i < 30; i++) b[i] = i < bar ? '#' : '.';
    b[30] = 0;
    fprintf(stderr, "\r[%s] %5.1f%%  images %d-%d/%d  step %d/%d  %.0fs elapsed, ~%.0fs left  ", b,
            100 * frac, p->done_images, p->done_images + p->batch_images, p->total_images,
            step_done, steps_total, el, eta);
    if (step_done == steps_total && p->done_images + p->batch_images == p->total_images)
        fputc('\n', stderr);
    fflush(stderr);
}

int main(int argc, char **argv) {
    blas_setup(argv);
    const char *ckpt = NULL, *spec = "", *variance = NULL, *weights = "ema";
    const char *grid = "samples.png", *npz = "samples.npz", *png_dir = NULL;
    long n = 64, batch = 16, threads = 0;
    unsigned long long first = 0, seed = 0;
    int ddim = 0, clip = 1, quiet = 0;
    double eta = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                            \
    do {                                                                        \
        if (!v) {                                                               \
            fprintf(stderr, "ddpm-sample: option %s needs a value\n", a);       \
            return 2;                                                           \
        }                                                                       \
        i++;                                                                    \
    } while (0)
        char *end = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--num")) {
            NEED_VALUE();
            n = strtol(v, &end, 10);
            if (*end || n < 1) goto bad;
        } else if (!strcmp(a, "--first")) {
            NEED_VALUE();
            first = strtoull(v, &end, 10);
            if (*end) goto bad;
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) {
            NEED_VALUE();
            batch = strtol(v, &end, 10);
            if (*end || batch < 1 || batch > 4096) goto bad;
        } else if (!strcmp(a, "--steps")) {
            NEED_VALUE();
            spec = v;
        } else if (!strcmp(a, "--ddim")) {
            ddim = 1;
        } else if (!strcmp(a, "--eta")) {
            NEED_VALUE();
            eta = strtod(v, &end);
            if (*end || !(eta >= 0 && eta <= 1)) goto bad;
        } else if (!strcmp(a, "--variance")) {
            NEED_VALUE();
            variance = v;
            if (strcmp(v, "beta") && strcmp(v, "beta_tilde")) goto bad;
        } else if (!strcmp(a, "--no-clip")) {
            clip = 0;
        } else if (!strcmp(a, "--seed")) {
            NEED_VALUE();
            seed = strtoull(v, &end, 10);
            if (*end) goto bad;
        } else if (!strcmp(a, "--weights")) {
            NEED_VALUE();
            weights = v;
            if (strcmp(v, "ema") && strcmp(v, "params")) goto bad;
        } else if (!strcmp(a, "--grid")) {
            NEED_VALUE();
            grid = v;
        } else if (!strcmp(a, "--npz")) {
            NEED_VALUE();
            npz = v;
        } else if (!strcmp(a, "--png-dir")) {
            NEED_VALUE();
            png_dir = v;
        } else if (!strcmp(a, "--threads")) {
            NEED_VALUE();
            threads = strtol(v, &end, 10);
            if (*end || threads < 0) goto bad;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "ddpm-sample: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!ckpt) {
            ckpt = a;
        } else {
            fprintf(stderr, "ddpm-sample: unexpected argument '%s'\n", a);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, "ddpm-sample: invalid value '%s' for %s\n", v, a);
        return 2;
    }
    if (!ckpt) {
        usage(stderr);
        return 2;
    }
    int nthreads = blas_set_threads((int)threads, 1);

    ckpt_model cm;
    memset(&cm, 0, sizeof cm);
    float *x = NULL;
    uint8_t *u8 = NULL;
    sampler s;
    memset(&s, 0, sizeof s);
    int rc = 1;
    if (batch > n) batch = n;
    unet_options opt = unet_options_default();
    if (env_unet_options(&opt) != 0 ||
        ckpt_model_load(&cm, ckpt, strcmp(weights, "ema") == 0 ? CKPT_EMA : CKPT_PARAMS,
                        (int)batch, &opt) != 0)
        goto fail;
    const config *cfg = &cm.cfg;
    sampling_variance var = cfg->diffusion.sampling_var;
    if (variance) var = strcmp(variance, "beta") == 0 ? SAMPLING_VAR_BETA : SAMPLING_VAR_BETA_TILDE;
    int C = cfg->model.in_channels, S = cfg->model.image_size;
    if (sampler_init(&s, &cm.diff, spec, ddim, eta, var, clip, seed, C, S, (int)batch) != 0) goto fail;
    log_info("%s: step %llu, %s weights; %s over %d of %d steps%s, %ld images from index %llu, "
             "batch %ld, OpenBLAS %s x%d",
             ckpt, (unsigned long long)cm.h.step, weights, ddim ? "DDIM" : "ancestral sampling",
             sampler_num_steps(&s), cfg->diffusion.timesteps,
             ddim ? "" : (var == SAMPLING_VAR_BETA ? " (sigma^2 = beta)" : " (sigma^2 = beta-tilde)"),
             n, first, batch, blas_kernel_name(), nthreads);
    size_t D = (size_t)C * S * S;
    x = xfloats((size_t)batch * D);
    u8 = xmalloc((size_t)n * D);
    if (png_dir && mkdir(png_dir, 0755) != 0 && errno != EEXIST) {
        err_set("%s: cannot create: %m", png_dir);
        goto fail;
    }
    progress_state ps = {now_seconds(), 0, (int)n, 0, quiet};
    for (long i = 0; i < n; i += batch) {
        int nb = (int)(n - i < batch ? n - i : batch);
        ps.done_images = (int)i;
        ps.batch_images = nb;
        sampler_run(&s, cm.model, cm.weights, first + (uint64_t)i, nb, x, show_progress, &ps);
        sampler_to_uint8_nhwc(x, nb, C, S, u8 + (size_t)i * D);
    }
    double secs = now_seconds() - ps.t0;
    log_info("sampled %ld images in %.1f s (%.3f images/s, %.1f network evaluations/s)", n, secs,
             (double)n / secs, (double)n * sampler_num_steps(&s) / secs);
    if (strcmp(grid, "none") != 0) {
        int cols = (int)ceil(sqrt((double)n));
        if (image_write_grid_png(grid, u8, (int)n, S, C, cols) != 0) goto fail;
        log_info("wrote %s", grid);
    }
    if (strcmp(npz, "none") != 0) {
        int shape[4] = {(int)n, S, S, C};
        if (npz_write_uint8(npz, "arr_0", u8, shape, 4) != 0) goto fail;
        log_info("wrote %s", npz);
    }
    if (png_dir) {
        for (long i = 0; i < n; i++) {
            char path[2048];
            snprintf(path, sizeof path, "%s/%06llu.png", png_dir, first + (unsigned long long)i);
            if (image_write_png(path, u8 + (size_t)i * D, S, S, C) != 0) goto fail;
        }
        log_info("wrote %ld PNGs to %s", n, png_dir);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "ddpm-sample: %s\n", err_msg());
out:
    sampler_free(&s);
    ckpt_model_free(&cm);
    free(x);
    free(u8);
    return rc;
}
