/* ddpm-sample: draws images from a trained checkpoint (no MPI needed).
 *
 *   ddpm-sample CHECKPOINT [options]
 *
 * Loads the EMA weights by default, streaming past the optimizer records, and runs
 * Algorithm 2 over all T steps or a respaced subset, DDIM, or DPM-Solver++(2M)
 * (--sampler); a class-conditional model draws the classes asked for, with
 * classifier-free guidance. Writes a PNG grid, a
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
#include "common/core/progress.h"
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
            "  --sampler KIND        ancestral (default; Algorithm 2) | ddim | dpm-solver++\n"
            "                        (DPM-Solver++(2M), deterministic, 10-20 steps) |\n"
            "                        sde-dpm-solver++ (its stochastic form, 20-50 steps)\n"
            "  --steps SPEC          ancestral, ddim: respacing: all T steps (default), a count\n"
            "                        such as 100, or per-section counts such as 10,15,20\n"
            "                        (improved-diffusion); the solvers: the number of network\n"
            "                        evaluations N (default 20; a list is refused)\n"
            "  --ddim                the same as --sampler ddim (--steps defaults to T)\n"
            "  --eta E               DDIM eta in [0, 1] (default 0)\n"
            "  --spacing S           the solvers' time points: logsnr (default: uniform in\n"
            "                        log(alpha/sigma)) | time (uniform in the index)\n"
            "  --variance KIND       beta | beta_tilde (default: the config's\n"
            "                        diffusion.sampling_variance; ignored for a model\n"
            "                        with learned variances)\n"
            "  --clip, --no-clip     clip the predicted x0 to [-1, 1] or not (default: clip,\n"
            "                        for every sampler)\n"
            "  --seed S              noise seed (default 0)\n"
            "  --weights W           ema (default) | params (the raw trained weights)\n"
            "  --grid PATH           PNG grid (default samples.png; 'none' to skip)\n"
            "  --grid-scale K        draw each grid pixel as a KxK block (nearest neighbour,\n"
            "                        1..64, default 1): 28-pixel images at K 4 are easy to see\n"
            "  --npz PATH            .npz of uint8 NHWC images under arr_0 (default samples.npz;\n"
            "                        'none' to skip)\n"
            "  --png-dir DIR         also write one PNG per image into DIR\n"
            "  --class K|all         class-conditional models: draw class K (0..num_classes-1),\n"
            "                        or 'all': image i gets class i mod num_classes and the grid\n"
            "                        has one row per class (default: the null label, i.e.\n"
            "                        unconditional)\n"
            "  --guidance W          classifier-free guidance weight W >= 0 (with --class):\n"
            "                        eps = (1 + W) eps(x, class) - W eps(x, null); 0: plain\n"
            "                        conditional (default 0)\n"
            "  --threads N           BLAS threads (default: the CPUs given to the process)\n"
            "  --precision P         fp32 | bf16 (mixed precision) | trained (default: the\n"
            "                        checkpoint's training.precision)\n"
            "  -q, --quiet           no progress (on a terminal a redrawn line; in a file a\n"
            "                        line per 10%% or 30 s)\n");
}

typedef struct {
    progress pg;
    int done_images, total_images, batch_images;
} progress_state;

static void show_progress(void *ctx, int step_done, int steps_total) {
    progress_state *p = ctx;
    double frac = ((double)p->done_images + (double)p->batch_images * step_done / steps_total) /
                  (double)p->total_images;
    int final = step_done == steps_total && p->done_images + p->batch_images == p->total_images;
    progress_update(&p->pg, frac, final, "images %d-%d/%d  step %d/%d  %.0fs elapsed, ~%.0fs left",
                    p->done_images, p->done_images + p->batch_images, p->total_images, step_done,
                    steps_total, progress_elapsed(&p->pg), progress_left(&p->pg, frac));
}

typedef struct {
    const char *ckpt, *spec, *variance, *grid, *npz, *png_dir;
    int which; /* CKPT_EMA | CKPT_PARAMS */
    long n, batch, threads, grid_scale;
    int precision; /* ckpt_model_load's */
    unsigned long long first, seed;
    sampler_kind kind;
    int clip, quiet;      /* clip: -1 for the sampler's default */
    int spacing;          /* -1: the solver's default, else a dpm_spacing */
    int eta_given;
    double eta;
    long cls;        /* CLASS_NONE, CLASS_ALL or a class index */
    double guidance;
} sample_opts;

enum { CLASS_NONE = -1, CLASS_ALL = -2 };

/* Options that only one sampler takes: -1 to go on, or 2 (reported). --eta with
 * ancestral sampling stays accepted (and unused), as before --sampler existed. */
static int check_sampler_options(const sample_opts *o) {
    if (o->spacing >= 0 && !sampler_kind_is_solver(o->kind)) {
        fprintf(stderr, "ddpm-sample: --spacing applies to --sampler dpm-solver++ and "
                        "sde-dpm-solver++ only\n");
        return 2;
    }
    if (o->eta_given && sampler_kind_is_solver(o->kind)) {
        fprintf(stderr, "ddpm-sample: --eta applies to --sampler ddim, not %s\n",
                sampler_kind_name(o->kind));
        return 2;
    }
    return -1;
}

/* Fills o from the command line. Returns -1 to go on, or the exit code: 0 after
 * --help, 2 for a bad command line (already reported). */
static int parse_args(int argc, char **argv, sample_opts *o) {
    *o = (sample_opts){.spec = "", .grid = "samples.png", .npz = "samples.npz",
                       .which = CKPT_EMA, .n = 64, .batch = 16, .clip = -1,
                       .spacing = -1, .kind = SAMPLER_ANCESTRAL, .cls = CLASS_NONE,
                       .grid_scale = 1, .precision = CKPT_PRECISION_TRAINED};
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
        } else if (!strcmp(a, "--sampler")) {
            NEED_VALUE();
            if (sampler_kind_parse(v, &o->kind) != 0) goto bad;
        } else if (!strcmp(a, "--ddim")) {
            o->kind = SAMPLER_DDIM;
        } else if (!strcmp(a, "--eta")) {
            NEED_VALUE();
            o->eta = strtod(v, &end);
            if (*end || !(o->eta >= 0 && o->eta <= 1)) goto bad;
            o->eta_given = 1;
        } else if (!strcmp(a, "--spacing")) {
            NEED_VALUE();
            dpm_spacing sp;
            if (dpm_spacing_parse(v, &sp) != 0) goto bad;
            o->spacing = (int)sp;
        } else if (!strcmp(a, "--variance")) {
            NEED_VALUE();
            o->variance = v;
            if (strcmp(v, "beta") && strcmp(v, "beta_tilde")) goto bad;
        } else if (!strcmp(a, "--no-clip")) {
            o->clip = 0;
        } else if (!strcmp(a, "--clip")) {
            o->clip = 1;
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
        } else if (!strcmp(a, "--grid-scale")) {
            NEED_VALUE();
            o->grid_scale = strtol(v, &end, 10);
            if (*end || o->grid_scale < 1 || o->grid_scale > IMAGE_MAX_GRID_SCALE) goto bad;
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
        } else if (!strcmp(a, "--class")) {
            NEED_VALUE();
            if (!strcmp(v, "all")) {
                o->cls = CLASS_ALL;
            } else {
                o->cls = strtol(v, &end, 10);
                if (*end || !*v || o->cls < 0) goto bad;
            }
        } else if (!strcmp(a, "--guidance")) {
            NEED_VALUE();
            o->guidance = strtod(v, &end);
            if (*end || !*v || !(o->guidance >= 0 && o->guidance <= 1e6)) goto bad;
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
    if (o->guidance > 0 && o->cls == CLASS_NONE) {
        fprintf(stderr, "ddpm-sample: --guidance needs --class K|all (guidance pushes each image "
                        "towards its class)\n");
        return 2;
    }
    return check_sampler_options(o);
}

/* What a run holds between loading and writing; sample_run_free releases it. */
typedef struct {
    ckpt_model cm;
    sampler s;
    int C, S;      /* channels, image side */
    size_t D;      /* values per image */
    float *x;      /* one batch as the sampler leaves it */
    uint8_t *u8;   /* all n images, uint8 NHWC */
    int *y;        /* all n images' class labels, or NULL (unconditional / null label) */
} sample_run;

/* The classes to draw (--class) for a model of K classes: refused clearly when the
 * model has none or K is out of range; none asked of a conditional model: the null
 * label, said so. */
static int set_classes(sample_run *r, const sample_opts *o) {
    const int K = r->cm.cfg.model.num_classes;
    if (o->cls == CLASS_NONE) {
        if (K > 0)
            log_info("class-conditional model (%d classes), no --class given: sampling with the "
                     "null label (unconditional)", K);
        return 0;
    }
    if (K == 0)
        return err_set("%s: --class needs a class-conditional model; this one is unconditional "
                       "(model.num_classes 0)", o->ckpt);
    if (o->cls != CLASS_ALL && o->cls >= K)
        return err_set("--class %ld is out of range: the model has %d classes (0..%d)", o->cls, K,
                       K - 1);
    r->y = xmalloc((size_t)o->n * sizeof *r->y);
    for (long i = 0; i < o->n; i++)
        r->y[i] = o->cls == CLASS_ALL ? (int)((o->first + (unsigned long long)i) % (unsigned)K)
                                      : (int)o->cls;
    if (o->cls == CLASS_ALL)
        log_info("classes: image i draws class i mod %d; the grid has one row per class", K);
    else
        log_info("class %ld", o->cls);
    if (o->guidance > 0)
        log_info("classifier-free guidance: eps = (1 + %g) eps(x, class) - %g eps(x, null)",
                 o->guidance, o->guidance);
    return 0;
}

/* Loads the model, sets up the sampler, says what will run, and allocates the
 * images. */
static int sample_run_open(sample_run *r, const sample_opts *o, int nthreads) {
    unet_options opt = unet_options_default();
    /* guidance evaluates the conditional and the null-label halves in one batch */
    int max_batch = (int)o->batch * (o->guidance > 0 ? 2 : 1);
    if (env_unet_options(&opt) != 0 ||
        ckpt_model_load(&r->cm, o->ckpt, o->which, max_batch, &opt, o->precision) != 0)
        return -1;
    const config *cfg = &r->cm.cfg;
    sampling_variance var = cfg->diffusion.sampling_var;
    if (o->variance)
        var = strcmp(o->variance, "beta") == 0 ? SAMPLING_VAR_BETA : SAMPLING_VAR_BETA_TILDE;
    const int learned = cfg->model.learn_sigma;
    if (learned && o->variance && o->kind == SAMPLER_ANCESTRAL)
        log_info("--variance %s ignored: %s has learned variances (model.learn_sigma)",
                 o->variance, o->ckpt);
    r->C = cfg->model.in_channels;
    r->S = cfg->model.image_size;
    sampler_opts so = sampler_opts_default();
    so.kind = o->kind;
    so.steps = o->spec;
    so.eta = o->eta;
    so.variance = var;
    so.clip = o->clip;
    if (o->spacing >= 0) so.spacing = (dpm_spacing)o->spacing;
    so.seed = o->seed;
    if (sampler_init(&r->s, &r->cm.diff, &so, r->C, r->S, (int)o->batch) != 0 ||
        sampler_set_guidance(&r->s, cfg->model.num_classes, o->guidance) != 0 ||
        set_classes(r, o) != 0)
        return -1;
    char detail[64] = "";
    if (o->kind == SAMPLER_ANCESTRAL)
        snprintf(detail, sizeof detail, " (sigma^2 = %s)",
                 learned ? "learned sigma^2" : var == SAMPLING_VAR_BETA ? "beta" : "beta-tilde");
    else if (sampler_kind_is_solver(o->kind))
        snprintf(detail, sizeof detail, " (%s spacing)", dpm_spacing_name(r->s.o.spacing));
    log_info("%s: step %llu, %s weights; %s over %d of %d steps%s, x0 %sclipped, %ld images from "
             "index %llu, batch %ld, OpenBLAS %s x%d, precision %s",
             o->ckpt, (unsigned long long)r->cm.h.step, ckpt_weights_name(o->which),
             sampler_kind_name(o->kind), sampler_num_steps(&r->s), cfg->diffusion.timesteps,
             detail, r->s.o.clip ? "" : "not ", o->n, o->first, o->batch, blas_kernel_name(),
             nthreads, ops_precision_names[unet_precision(r->cm.model)]);
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
    free(r->y);
}

/* Made before sampling, so that a bad --png-dir fails before the long part. */
static int make_png_dir(const char *dir) {
    if (dir && mkdir(dir, 0755) != 0 && errno != EEXIST)
        return err_set("%s: cannot create: %m", dir);
    return 0;
}

/* Draws images first .. first+n-1, batch by batch, into r->u8. */
static void draw_images(sample_run *r, const sample_opts *o) {
    progress_state ps = {.total_images = (int)o->n};
    progress_start(&ps.pg, o->quiet ? NULL : stderr);
    for (long i = 0; i < o->n; i += o->batch) {
        int nb = (int)(o->n - i < o->batch ? o->n - i : o->batch);
        ps.done_images = (int)i;
        ps.batch_images = nb;
        sampler_run(&r->s, r->cm.model, r->cm.weights, o->first + (uint64_t)i, nb,
                    r->y ? r->y + i : NULL, r->x, show_progress, &ps);
        sampler_to_uint8_nhwc(r->x, nb, r->C, r->S, r->u8 + (size_t)i * r->D);
    }
    double secs = progress_elapsed(&ps.pg);
    int evals = (r->y && o->guidance > 0) ? 2 : 1; /* guided: two epsilons per step */
    log_info("sampled %ld images in %.1f s (%.3f images/s, %.1f network evaluations/s)", o->n,
             secs, (double)o->n / secs, (double)o->n * evals * sampler_num_steps(&r->s) / secs);
}

/* --class all: the grid with one row per class, row c holding the images of class c
 * in index order (cells past the last image of a class stay black). */
static int write_class_grid(const sample_run *r, const sample_opts *o) {
    const int K = r->cm.cfg.model.num_classes;
    int *count = xcalloc((size_t)K, sizeof *count), cols = 0;
    for (long i = 0; i < o->n; i++)
        if (++count[r->y[i]] > cols) cols = count[r->y[i]];
    uint8_t *grid = xcalloc((size_t)K * cols, r->D);
    memset(count, 0, (size_t)K * sizeof *count);
    for (long i = 0; i < o->n; i++) {
        int c = r->y[i];
        memcpy(grid + ((size_t)c * cols + count[c]++) * r->D, r->u8 + (size_t)i * r->D, r->D);
    }
    int rc = image_write_grid_png_scaled(o->grid, grid, K * cols, r->S, r->C, cols, (int)o->grid_scale);
    free(grid);
    free(count);
    return rc;
}

/* The grid, the .npz and the per-image PNGs, each as asked for. */
static int write_outputs(const sample_run *r, const sample_opts *o) {
    int n = (int)o->n, S = r->S, C = r->C;
    if (strcmp(o->grid, "none") != 0) {
        int cols = (int)ceil(sqrt((double)o->n));
        if (o->cls == CLASS_ALL ? write_class_grid(r, o) != 0
                                : image_write_grid_png_scaled(o->grid, r->u8, n, S, C, cols,
                                                              (int)o->grid_scale) != 0)
            return -1;
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
