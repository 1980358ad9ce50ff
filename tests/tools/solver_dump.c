/* Runs the sampler (common/sample/sampler.c, the loop ddpm-sample runs) with a
 * closed-form epsilon instead of the network, for tests/ref/solver_ref.py.
 *
 *   solver_dump SAMPLER SPACING SCHEDULE T STEPS N BATCH CLIP SEED OUTDIR
 *
 * SAMPLER: ancestral | ddim | dpm-solver++ | sde-dpm-solver++; SPACING: time | logsnr (the
 * solver's; "-" for its default); SCHEDULE: linear (1e-4..0.02) | cosine; STEPS: the --steps spec ("",
 * written "-", for the default); N images of 1x4x4 drawn in batches of BATCH
 * (images first = 0..N-1); CLIP: 0 | 1 | -1 (the sampler's default).
 *
 * The closed-form epsilon of image value j (0..15) at model index t, with
 * a = sqrt(abar_t), s = sqrt(1 - abar_t) of the schedule, m_j = 0.5 sin(j + 1):
 *   eps = s (x - a m_j) / (0.25 a^2 + s^2) + 0.05 sin(3 x) (t + 1) / T
 * (the exact epsilon of Gaussian data N(m, 0.25 I), plus a nonlinear term),
 * computed in double from the float x and rounded once.
 * Writes raw little-endian arrays to OUTDIR:
 *   t.i32      the model timestep of each evaluation of the first batch (K)
 *   calls.i32  the number of evaluations of each batch
 *   traj.f32   [K][N][16]: the x passed to each evaluation (x_T first)
 *   final.f32  [N][16]: the sampler's output
 *   z.f32      sde-dpm-solver++ only, [K-1][N][16]: the noise docs/diffusion.md says
 *              step k of image i gets, drawn here from its key (seed, t_k, i,
 *              RNG_PURPOSE_SAMPLE_STEP), not taken from the sampler
 * Prints an error and exits 1 on bad arguments. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/diffusion/diffusion.h"
#include "common/rng/rng.h"
#include "common/sample/sampler.h"

#define SIDE 4
#define DIM (SIDE * SIDE)

static void die(const char *what, const char *arg) {
    fprintf(stderr, "solver_dump: %s%s\n", what, arg);
    exit(1);
}

static void write_file(const char *dir, const char *name, const void *p, size_t bytes) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot create ", path);
    if (fwrite(p, 1, bytes, f) != bytes || fclose(f) != 0) die("cannot write ", path);
}

static long parse_long(const char *s, long lo, long hi, const char *what) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) die("bad ", what);
    return v;
}

typedef struct {
    const diffusion *d;
    int n, batch0;      /* images in this batch, index of its first */
    int n_total, k_max; /* all images; room for evaluations in traj */
    int calls;          /* evaluations of this batch */
    int *t_log;         /* model timesteps of the first batch */
    float *traj;        /* [k_max][n_total][DIM] */
} eps_ctx;

static void closed_form_eps(void *ctx, const float *x, const int *t, int n, float *eps) {
    eps_ctx *c = ctx;
    if (c->calls >= c->k_max) die("more evaluations than steps", "");
    if (c->batch0 == 0) c->t_log[c->calls] = t[0];
    for (int i = 0; i < n; i++) {
        if (t[i] != t[0]) die("images of one batch at different timesteps", "");
        double abar = c->d->alphas_cumprod[t[i]];
        double a = sqrt(abar), s = sqrt(1.0 - abar);
        const float *xi = x + (size_t)i * DIM;
        memcpy(c->traj + ((size_t)c->calls * c->n_total + c->batch0 + i) * DIM, xi,
               DIM * sizeof(float));
        for (int j = 0; j < DIM; j++) {
            double xv = xi[j], m = 0.5 * sin(j + 1.0);
            double e = s * (xv - a * m) / (0.25 * a * a + s * s) +
                       0.05 * sin(3.0 * xv) * (t[i] + 1.0) / c->d->T;
            eps[(size_t)i * DIM + j] = (float)e;
        }
    }
    c->calls++;
}

int main(int argc, char **argv) {
    if (argc != 11) die("usage: solver_dump SAMPLER SPACING SCHEDULE T STEPS N BATCH CLIP SEED "
                        "OUTDIR", "");
    sampler_opts o = sampler_opts_default();
    if (sampler_kind_parse(argv[1], &o.kind) != 0) die("unknown sampler ", argv[1]);
    if (strcmp(argv[2], "-") != 0 && dpm_spacing_parse(argv[2], &o.spacing) != 0)
        die("unknown spacing ", argv[2]);
    beta_schedule sched = BETA_SCHEDULE_LINEAR;
    if (strcmp(argv[3], "cosine") == 0) sched = BETA_SCHEDULE_COSINE;
    else if (strcmp(argv[3], "linear") != 0) die("unknown schedule ", argv[3]);
    int T = (int)parse_long(argv[4], 2, 100000, "T");
    o.steps = strcmp(argv[5], "-") == 0 ? "" : argv[5];
    int N = (int)parse_long(argv[6], 1, 1000, "N");
    int B = (int)parse_long(argv[7], 1, 1000, "BATCH");
    o.clip = (int)parse_long(argv[8], -1, 1, "CLIP");
    o.seed = (uint64_t)parse_long(argv[9], 0, 1000000000, "SEED");
    const char *out = argv[10];

    diffusion d;
    if (diffusion_init(&d, sched, T, 1e-4, 0.02) != 0) die(err_msg(), "");
    sampler s;
    if (sampler_init(&s, &d, &o, 1, SIDE, B) != 0) die(err_msg(), "");
    int K = sampler_num_steps(&s);
    int nb = (N + B - 1) / B;
    eps_ctx c = {.d = &d, .n_total = N, .k_max = K};
    c.t_log = xcalloc((size_t)K, sizeof(int));
    c.traj = xfloats((size_t)K * N * DIM);
    int *calls = xcalloc((size_t)nb, sizeof(int));
    float *final = xfloats((size_t)N * DIM);
    for (int b = 0; b < nb; b++) {
        c.batch0 = b * B;
        c.n = N - c.batch0 < B ? N - c.batch0 : B;
        c.calls = 0;
        sampler_run_eps(&s, closed_form_eps, &c, (uint64_t)c.batch0, c.n,
                        final + (size_t)c.batch0 * DIM, NULL, NULL);
        calls[b] = c.calls;
    }
    write_file(out, "t.i32", c.t_log, (size_t)K * sizeof(int));
    write_file(out, "calls.i32", calls, (size_t)nb * sizeof(int));
    write_file(out, "traj.f32", c.traj, (size_t)K * N * DIM * sizeof(float));
    write_file(out, "final.f32", final, (size_t)N * DIM * sizeof(float));
    if (o.kind == SAMPLER_SDE_DPM_SOLVER && K > 1) {
        float *z = xfloats((size_t)(K - 1) * N * DIM);
        for (int k = 0; k < K - 1; k++)
            for (int i = 0; i < N; i++) {
                rng_key key = {o.seed, (uint64_t)c.t_log[k], (uint64_t)i, RNG_PURPOSE_SAMPLE_STEP};
                rng_normal(&key, z + ((size_t)k * N + i) * DIM, DIM);
            }
        write_file(out, "z.f32", z, (size_t)(K - 1) * N * DIM * sizeof(float));
        free(z);
    }
    free(c.t_log); free(c.traj); free(calls); free(final);
    sampler_free(&s);
    diffusion_free(&d);
    return 0;
}
