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
            "  --precision P         fp32 | bf16 (mixed precision) | trained (default: the\n"
            "                        checkpoint's training.precision)\n"
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

typedef struct {
    const char *ckpt, *spec, *variance, *grid, *npz, *png_dir;
    int which; /* CKPT_EMA | CKPT_PARAMS */
    long n, batch, threads;
    int precision; /* ckpt_model_load's */
    unsigned long long first, seed;
    int ddim, clip, quiet;
    double eta;
} sample_opts;

/* Fills o from the command line. Returns -1 to go on, or the exit code: 0 after
 * --help, 2 for a bad command line (already reported). */
static int parse_args(int argc, char **argv, sample_opts *o) {
    *o = (sample_opts){.spec = "", .grid = "samples.png", .npz = "samples.npz",
                       .which = CKPT_EMA, .n = 64, .batch = 16, .clip = 1,
                       .precision = CKPT_PRECISION_TRAINED};
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
            o->n = strtol(v, &end, 10);
            if (*end || o->n < 1) goto bad;
        } else if (!strcmp(a, "--first")) {
            NEED_VALUE();
            o->first = strtoull(v, &end, 10);
            if (*end) goto bad;
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) {
            NEED_VALUE();
            o->batch = strtol(v, &end, 10);
            if (*end || o->batch < 1 || o->batch > 4096) goto bad;
        } else if (!strcmp(a, "--steps")) {
            NEED_VALUE();
            o->spec = v;
        } else if (!strcmp(a, "--ddim")) {
            o->ddim = 1;
        } else if (!strcmp(a, "--eta")) {
            NEED_VALUE();
            o->eta = strtod(v, &end);
            if (*end || !(o->eta >= 0 && o->eta <= 1)) goto bad;
        } else if (!strcmp(a, "--variance")) {
            NEED_VALUE();
            o->variance = v;
            if (strcmp(v, "beta") && strcmp(v, "beta_tilde")) goto bad;
        } else if (!strcmp(a, "--no-clip")) {
            o->clip = 0;
        } else if (!strcmp(a, "--seed")) {
            NEED_VALUE();
            o->seed = strtoull(v, &end, 10);
            if (*end) goto bad;
        } else if (!strcmp(a, "--weights")) {
            NEED_VALUE();
            if (!(o->which = ckpt_weights_parse(v))) goto bad;
        } else if (!strcmp(a, "--grid")) {
            NEED_VALUE();
            o->grid = v;
        } else if (!strcmp(a, "--npz")) {
            NEED_VALUE();
            o->npz = v;
        } else if (!strcmp(a, "--png-dir")) {
            NEED_VALUE();
            o->png_dir = v;
        } else if (!strcmp(a, "--threads")) {
            NEED_VALUE();
            o->threads = strtol(v, &end, 10);
            if (*end || o->threads < 0) goto bad;
        } else if (!strcmp(a, "--precision")) {
            NEED_VALUE();
            if ((o->precision = ckpt_precision_parse(v)) == -2) goto bad;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "ddpm-sample: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!o->ckpt) {
            o->ckpt = a;
        } else {
            fprintf(stderr, "ddpm-sample: unexpected argument '%s'\n", a);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, "ddpm-sample: invalid value '%s' for %s\n", v, a);
        return 2;
#undef NEED_VALUE
    }
    if (!o->ckpt) {
        usage(stderr);
        return 2;
    }
    return -1;
}

/* What a run holds between loading and writing; sample_run_free releases it. */
typedef struct {
    ckpt_model cm;
    sampler s;
    int C, S;      /* channels, image side */
    size_t D;      /* values per image */
    float *x;      /* one batch as the sampler leaves it */
    uint8_t *u8;   /* all n images, uint8 NHWC */
} sample_run;

/* Loads the model, sets up the sampler, says what will run, and allocates the
 * images. */
static int sample_run_open(sample_run *r, const sample_opts *o, int nthreads) {
    unet_options opt = unet_options_default();
    if (env_unet_options(&opt) != 0 ||
        ckpt_model_load(&r->cm, o->ckpt, o->which, (int)o->batch, &opt, o->precision) != 0)
        return -1;
    const config *cfg = &r->cm.cfg;
    sampling_variance var = cfg->diffusion.sampling_var;
    if (o->variance)
        var = strcmp(o->variance, "beta") == 0 ? SAMPLING_VAR_BETA : SAMPLING_VAR_BETA_TILDE;
    r->C = cfg->model.in_channels;
    r->S = cfg->model.image_size;
    if (sampler_init(&r->s, &r->cm.diff, o->spec, o->ddim, o->eta, var, o->clip, o->seed, r->C,
                     r->S, (int)o->batch) != 0)
        return -1;
    log_info("%s: step %llu, %s weights; %s over %d of %d steps%s, %ld images from index %llu, "
             "batch %ld, OpenBLAS %s x%d, precision %s",
             o->ckpt, (unsigned long long)r->cm.h.step, ckpt_weights_name(o->which),
             o->ddim ? "DDIM" : "ancestral sampling", sampler_num_steps(&r->s),
             cfg->diffusion.timesteps,
             o->ddim ? "" : (var == SAMPLING_VAR_BETA ? " (sigma^2 = beta)" : " (sigma^2 = beta-tilde)"),
             o->n, o->first, o->batch, blas_kernel_name(), nthreads,
             ops_precision_names[unet_precision(r->cm.model)]);
    char plans[2048];
    unet_describe_plans(r->cm.model, plans, sizeof plans);
    log_info("%s", plans);
    r->D = (size_t)r->C * r->S * r->S;
    r->x = xfloats((size_t)o->batch * r->D);
    r->u8 = xmalloc((size_t)o->n * r->D);
    return 0;
}

static void sample_run_free(sample_run *r) {
    sampler_free(&r->s);
    ckpt_model_free(&r->cm);
    free(r->x);
    free(r->u8);
}

/* Made before sampling, so that a bad --png-dir fails before the long part. */
static int make_png_dir(const char *dir) {
    if (dir && mkdir(dir, 0755) != 0 && errno != EEXIST)
        return err_set("%s: cannot create: %m", dir);
    return 0;
}

/* Draws images first .. first+n-1, batch by batch, into r->u8. */
static void draw_images(sample_run *r, const sample_opts *o) {
    progress_state ps = {now_seconds(), 0, (int)o->n, 0, o->quiet};
    for (long i = 0; i < o->n; i += o->batch) {
        int nb = (int)(o->n - i < o->batch ? o->n - i : o->batch);
        ps.done_images = (int)i;
        ps.batch_images = nb;
        sampler_run(&r->s, r->cm.model, r->cm.weights, o->first + (uint64_t)i, nb, r->x,
                    show_progress, &ps);
        sampler_to_uint8_nhwc(r->x, nb, r->C, r->S, r->u8 + (size_t)i * r->D);
    }
    double secs = now_seconds() - ps.t0;
    log_info("sampled %ld images in %.1f s (%.3f images/s, %.1f network evaluations/s)", o->n,
             secs, (double)o->n / secs, (double)o->n * sampler_num_steps(&r->s) / secs);
}

/* The grid, the .npz and the per-image PNGs, each as asked for. */
static int write_outputs(const sample_run *r, const sample_opts *o) {
    int n = (int)o->n, S = r->S, C = r->C;
    if (strcmp(o->grid, "none") != 0) {
        int cols = (int)ceil(sqrt((double)o->n));
        if (image_write_grid_png(o->grid, r->u8, n, S, C, cols) != 0) return -1;
        log_info("wrote %s", o->grid);
    }
    if (strcmp(o->npz, "none") != 0) {
        int shape[4] = {n, S, S, C};
        if (npz_write_uint8(o->npz, "arr_0", r->u8, shape, 4) != 0) return -1;
        log_info("wrote %s", o->npz);
    }
    if (o->png_dir) {
        for (long i = 0; i < o->n; i++) {
            char path[2048];
            snprintf(path, sizeof path, "%s/%06llu.png", o->png_dir,
                     o->first + (unsigned long long)i);
            if (image_write_png(path, r->u8 + (size_t)i * r->D, S, S, C) != 0) return -1;
        }
        log_info("wrote %ld PNGs to %s", o->n, o->png_dir);
    }
    return 0;
}

int main(int argc, char **argv) {
    blas_setup(argv);
    sample_opts o;
    int code = parse_args(argc, argv, &o);
    if (code >= 0) return code;
    int nthreads = blas_set_threads((int)o.threads, 1);
    if (o.batch > o.n) o.batch = o.n;

    sample_run r;
    memset(&r, 0, sizeof r);
    int rc = sample_run_open(&r, &o, nthreads);
    if (rc == 0) rc = make_png_dir(o.png_dir);
    if (rc == 0) {
        draw_images(&r, &o);
        rc = write_outputs(&r, &o);
    }
    if (rc != 0) fprintf(stderr, "ddpm-sample: %s\n", err_msg());
    sample_run_free(&r);
    return rc != 0 ? 1 : 0;
}
