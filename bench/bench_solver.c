/* Error of the few-step samplers against the ODE's solution, on a trained model.
 *
 *   bench_solver CHECKPOINT [--n N] [--batch B] [--ref-steps R] [--threads T]
 *                [--steps LIST]
 *
 * Draws images 0..N-1 (default 32; seed 0, EMA weights, x_T as ddpm-sample keys
 * it) with DPM-Solver++(2M) at R steps (default 500, time spacing): the
 * reference, "the true ODE solution". Then, for each step count in LIST
 * (default 10,20), DPM-Solver++ with time and with logSNR spacing and DDIM
 * (eta 0, "ddimN", no clipping: the same ODE, first order), and prints one
 * Markdown row each: the mean squared distance of the final images to the
 * reference (values clamped to [-1, 1], as written to images; also as an RMS in
 * 8-bit grey levels) and the wall time per image. A first row checks the
 * reference: DPM-Solver++ at R/2 steps with logSNR spacing against it.
 * The samplers are the library's (sampler_run), as ddpm-sample runs them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ckpt/ckpt_model.h"
#include "common/core/blas_setup.h"
#include "common/core/util.h"
#include "common/env/env_opts.h"
#include "common/sample/sampler.h"

typedef struct {
    ckpt_model cm;
    int n, batch;
    size_t D;
} bench;

/* Draws all n images with o into x (n * D floats); returns the seconds. */
static double draw(bench *b, const sampler_opts *o, float *x) {
    const config *cfg = &b->cm.cfg;
    sampler s;
    if (sampler_init(&s, &b->cm.diff, o, cfg->model.in_channels, cfg->model.image_size,
                     b->batch) != 0) {
        fprintf(stderr, "bench_solver: %s\n", err_msg());
        exit(1);
    }
    double t0 = now_seconds();
    for (int i = 0; i < b->n; i += b->batch) {
        int nb = b->n - i < b->batch ? b->n - i : b->batch;
        sampler_run(&s, b->cm.model, b->cm.weights, (uint64_t)i, nb, NULL, x + (size_t)i * b->D,
                    NULL, NULL);
    }
    double secs = now_seconds() - t0;
    sampler_free(&s);
    return secs;
}

static double clamp1(double v) { return v < -1 ? -1 : v > 1 ? 1 : v; }

static double msd(const float *a, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = clamp1(a[i]) - clamp1(r[i]);
        s += d * d;
    }
    return s / (double)n;
}

static void row(bench *b, const char *name, const char *spacing, int steps,
                const sampler_opts *o, const float *ref, float *x) {
    double secs = draw(b, o, x);
    double m = msd(x, ref, (size_t)b->n * b->D);
    printf("| %s | %s | %d | %.3e | %.2f | %.3f |\n", name, spacing, steps, m,
           sqrt(m) * 127.5, secs / b->n);
    fflush(stdout);
}

int main(int argc, char **argv) {
    blas_setup(argv);
    const char *ckpt = NULL, *list = "10,20";
    int n = 32, batch = 16, ref_steps = 500, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--n") && v) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && v) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ref-steps") && v) ref_steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && v) list = argv[++i];
        else if (argv[i][0] != '-' && !ckpt) ckpt = argv[i];
        else {
            fprintf(stderr, "usage: bench_solver CHECKPOINT [--n N] [--batch B] "
                            "[--ref-steps R] [--threads T] [--steps LIST]\n");
            return 2;
        }
    }
    if (!ckpt || n < 1 || batch < 1 || ref_steps < 2) {
        fprintf(stderr, "bench_solver: a checkpoint and positive --n, --batch, --ref-steps >= 2\n");
        return 2;
    }
    if (batch > n) batch = n;
    int nthreads = blas_set_threads(threads, 1);
    bench b = {.n = n, .batch = batch};
    unet_options opt = unet_options_default();
    if (env_unet_options(&opt) != 0 || ckpt_model_load(&b.cm, ckpt, CKPT_EMA, batch, &opt, CKPT_PRECISION_TRAINED) != 0) {
        fprintf(stderr, "bench_solver: %s\n", err_msg());
        return 1;
    }
    b.D = (size_t)b.cm.cfg.model.in_channels * b.cm.cfg.model.image_size *
          b.cm.cfg.model.image_size;
    float *ref = xfloats((size_t)n * b.D), *x = xfloats((size_t)n * b.D);
    char steps_buf[32];

    sampler_opts o = sampler_opts_default();
    o.kind = SAMPLER_DPM_SOLVER;
    o.spacing = DPM_SPACING_TIME;
    snprintf(steps_buf, sizeof steps_buf, "%d", ref_steps);
    o.steps = steps_buf;
    double ref_secs = draw(&b, &o, ref);
    printf("# %s: step %llu; %d images, batch %d, %d thread(s); reference: dpm-solver++ %d "
           "steps, time spacing (%.2f s/image)\n",
           ckpt, (unsigned long long)b.cm.h.step, n, batch, nthreads, ref_steps, ref_secs / n);
    printf("| sampler | spacing | steps | MSD to reference | RMS (grey levels) | s/image |\n"
           "| --- | --- | --- | --- | --- | --- |\n");
    o.spacing = DPM_SPACING_LOGSNR;
    snprintf(steps_buf, sizeof steps_buf, "%d", ref_steps / 2);
    row(&b, "dpm-solver++ (reference check)", "logsnr", ref_steps / 2, &o, ref, x);

    for (const char *p = list; *p;) {
        int steps = (int)strtol(p, (char **)&p, 10);
        if (*p == ',') p++;
        if (steps < 1) break;
        snprintf(steps_buf, sizeof steps_buf, "%d", steps);
        o.kind = SAMPLER_DPM_SOLVER;
        o.steps = steps_buf;
        o.spacing = DPM_SPACING_TIME;
        row(&b, "dpm-solver++", "time", steps, &o, ref, x);
        o.spacing = DPM_SPACING_LOGSNR;
        row(&b, "dpm-solver++", "logsnr", steps, &o, ref, x);
        char ddim[32];
        snprintf(ddim, sizeof ddim, "ddim%d", steps);
        sampler_opts d = sampler_opts_default();
        d.kind = SAMPLER_DDIM;
        d.steps = ddim;
        d.clip = 0;
        row(&b, "ddim (eta 0, no clip)", ddim, steps, &d, ref, x);
    }
    free(ref);
    free(x);
    ckpt_model_free(&b.cm);
    return 0;
}
