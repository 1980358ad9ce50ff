/* Benchmark of the C training step and sampling forward pass.
 *
 *   bench_step sgemm [--threads T] [--reps R]
 *       median GFLOP/s of cblas_sgemm 2048x2048x2048, then of oneDNN's bf16 GEMM
 *       (dnnl_gemm_bf16bf16f32, bf16 operands, fp32 accumulation and result) on
 *       the same shape: the two limits, fp32 and bf16
 *   bench_step train|forward CONFIG.yaml BATCH [--threads T] [--steps S] [--warmup W]
 *              [--conv auto|shift|winograd|dnnl]   (the 3x3 stride-1 formulation: conv_algo_opts.algo)
 *              [--wino-tile 0|2|4]             (the forward's Winograd tile: .wino_tile)
 *              [--precision fp32|bf16]         (unet_options.precision)
 *       The flags override DDPM_CONV; DDPM_LANES and DDPM_PREPARE_MIB apply as in
 *       the programs (common/env/env_opts.h).
 *       train: forward + backward + Adam update of one batch (dropout on, as in
 *       training); forward: eps_theta only, no dropout (a sampling step, over
 *       weights prepared once as sampler_run prepares them: unet_prepare).
 *       Prints the median seconds per step over S timed steps after W warm-up
 *       steps, then one profiled step set (per-op seconds, prof.h) that is not part
 *       of the timing.
 *       --layer-profile PATH (train): also times the training forward layer by layer
 *       through the forward hook (unet_set_forward_hook: called before each layer
 *       with the parameter offset it reads up to) and writes PATH as CSV rows
 *       "ready_to,seconds": each layer's median time over 5 passes, in forward
 *       order (bench/cluster_report.py spreads the forward's time with it).
 *
 * Output: one "key value" pair per line, read by bench/run_bench.sh. Inputs are
 * random (the data set is not needed); the model uses the config's architecture. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "common/config/config.h"
#include "common/core/blas_setup.h"
#include "common/core/prof.h"
#include "common/core/util.h"
#include "common/env/env_opts.h"
#include "common/model/unet.h"
#include "common/ops/ops.h"
#include "common/optim/optim.h"
#include "common/rng/rng.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int bench_sgemm(int reps, int threads) {
    const int n = 2048;
    /* the library's own threads: the peak one big GEMM reaches on these cores */
    openblas_set_num_threads(threads);
    size_t nn = (size_t)n * n;
    float *a = xfloats(nn), *b = xfloats(nn), *c = xfloats(nn);
    rng_key k = {1, 0, 0, 0};
    rng_uniform(&k, a, nn);
    k.sample = 1;
    rng_uniform(&k, b, nn);
    double *t = xcalloc((size_t)reps, sizeof *t);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    for (int r = 0; r < reps; r++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f,
                    c, n);
        t[r] = now_seconds() - t0;
    }
    double s = median(t, reps);
    printf("sgemm_gflops %.2f\n", 2.0 * n * (double)n * n / s / 1e9);
    /* bf16 on oneDNN's OpenMP threads (blas_set_threads gave OpenMP `threads`) */
    uint16_t *ah = xmalloc(nn * sizeof *ah), *bh = xmalloc(nn * sizeof *bh);
    ops_to_bf16_n(ah, a, nn);
    ops_to_bf16_n(bh, b, nn);
    int ok = ops_bf16_gemm(0, 0, n, n, n, 1.0f, ah, n, bh, n, 0.0f, c, n) == 0;
    for (int r = 0; ok && r < reps; r++) {
        double t0 = now_seconds();
        ops_bf16_gemm(0, 0, n, n, n, 1.0f, ah, n, bh, n, 0.0f, c, n);
        t[r] = now_seconds() - t0;
    }
    if (ok) printf("bf16gemm_gflops %.2f\n", 2.0 * n * (double)n * n / median(t, reps) / 1e9);
    free(a); free(b); free(c); free(t); free(ah); free(bh);
    return 0;
}

typedef struct {
    unet *model;
    float *params, *grads, *m, *v, *x, *eps, *pred, *dpred;
    int *t;
    uint64_t *ids;
    int N, train;
    size_t D, out_D, P; /* values per input and per output image, parameters */
    optim_config oc;
    uint64_t step;
} bench_state;

static void run_step(bench_state *b) {
    if (!b->train) {
        unet_forward(b->model, b->params, b->x, b->t, NULL, b->N, NULL, b->pred);
        return;
    }
    b->step++;
    unet_rng r = {7, b->step, b->ids};
    memset(b->grads, 0, b->P * sizeof(float));
    unet_forward(b->model, b->params, b->x, b->t, NULL, b->N, &r, b->pred);
    memset(b->dpred, 0, (size_t)b->N * b->out_D * sizeof(float));
    mse_backward(b->dpred, b->pred, b->eps, (size_t)b->N * b->out_D, 1.0f);
    unet_backward(b->model, b->params, b->grads, b->dpred);
    double t0 = prof_begin();
    optim_adam(b->params, b->grads, b->m, b->v, b->P, 2e-4, 1.0, &b->oc, b->step);
    prof_end(PROF_OTHER, t0);
}

/* The forward hook's trace of one pass: when each layer began and what it reads. */
#define TRACE_CAP 4096
typedef struct {
    size_t ready[TRACE_CAP];
    double at[TRACE_CAP];
    int n;
} layer_trace;

static void trace_hook(void *ctx, size_t ready_to) {
    layer_trace *lt = ctx;
    if (lt->n < TRACE_CAP) {
        lt->ready[lt->n] = ready_to;
        lt->at[lt->n++] = now_seconds();
    }
}

/* Per-layer seconds of the training forward (dropout on), median over passes. */
static int layer_profile(bench_state *b, const char *path) {
    enum { PASSES = 5 };
    layer_trace *lt = xcalloc(1, sizeof *lt);
    double *dt = NULL;
    int n = -1, rc = 0;
    unet_set_forward_hook(b->model, trace_hook, lt);
    for (int pass = 0; pass < PASSES && rc == 0; pass++) {
        unet_rng r = {7, b->step + 1, b->ids};
        lt->n = 0;
        unet_forward(b->model, b->params, b->x, b->t, NULL, b->N, &r, b->pred);
        double end = now_seconds();
        if (n < 0) {
            n = lt->n;
            dt = xcalloc((size_t)n * PASSES, sizeof *dt);
        }
        if (lt->n != n || n == 0 || n == TRACE_CAP) {
            rc = -1;
            break;
        }
        for (int k = 0; k < n; k++)
            dt[(size_t)k * PASSES + pass] = (k + 1 < n ? lt->at[k + 1] : end) - lt->at[k];
    }
    unet_set_forward_hook(b->model, NULL, NULL);
    const char *why = rc != 0 ? "unexpected number of hook calls" : NULL;
    FILE *f = why ? NULL : fopen(path, "w");
    if (!why && !f) why = "cannot create";
    for (int k = 0; f && k < n; k++)
        fprintf(f, "%s%zu,%.9f\n", k ? "" : "ready_to,seconds\n", lt->ready[k],
                median(dt + (size_t)k * PASSES, PASSES));
    if (f && fclose(f) != 0) why = "write failed";
    if (why)
        fprintf(stderr, "bench_step: layer profile %s: %s\n", path, why);
    else
        printf("layer_profile %s %d layers\n", path, n);
    free(dt);
    free(lt);
    return why ? 1 : 0;
}

static int bench_model(const char *mode, const char *path, int N, int steps, int warmup,
                       const unet_options *opt, const char *layer_csv) {
    config c;
    if (config_load_file(&c, path) != 0) {
        fprintf(stderr, "bench_step: %s\n", err_msg());
        return 1;
    }
    bench_state b;
    memset(&b, 0, sizeof b);
    b.train = strcmp(mode, "train") == 0;
    b.N = N;
    b.model = unet_create(&c.model, N, b.train, opt);
    if (!b.model) {
        fprintf(stderr, "bench_step: %s: %s\n", path, err_msg());
        return 1;
    }
    b.P = unet_num_params(b.model);
    b.D = (size_t)c.model.in_channels * c.model.image_size * c.model.image_size;
    /* the output (and the random target a step's MSE takes) has twice D with learn_sigma */
    b.out_D = (size_t)unet_out_channels(b.model) * c.model.image_size * c.model.image_size;
    b.params = xfloats(b.P);
    unet_init(b.model, b.params, 3);
    /* The authors' init makes conv2/proj_out ~0; perturb every weight a little so
     * no branch is trivially zero (timing does not depend on values, but NaN-free
     * realistic magnitudes keep expf and friends on their normal paths). */
    {
        float *noise = xfloats(b.P);
        rng_key k = {11, 0, 0, 0};
        rng_normal(&k, noise, b.P);
        for (size_t i = 0; i < b.P; i++) b.params[i] += 0.01f * noise[i];
        free(noise);
    }
    size_t nd = (size_t)N * b.D, nod = (size_t)N * b.out_D;
    b.x = xfloats(nd);
    b.eps = xfloats(nod);
    b.pred = xfloats(nod);
    b.t = xcalloc((size_t)N, sizeof *b.t);
    b.ids = xcalloc((size_t)N, sizeof *b.ids);
    rng_key kx = {5, 0, 0, 0};
    rng_normal(&kx, b.x, nd);
    kx.sample = 1;
    rng_normal(&kx, b.eps, nod);
    for (int i = 0; i < N; i++) {
        b.t[i] = (i * 997 + 13) % c.diffusion.timesteps;
        b.ids[i] = (uint64_t)i;
    }
    if (b.train) {
        b.grads = xfloats(b.P);
        b.m = xcalloc(b.P, sizeof(float));
        b.v = xcalloc(b.P, sizeof(float));
        b.dpred = xfloats(nod);
        b.oc = (optim_config){.lr = 2e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    }

    /* a sampling run prepares its fixed weights once (sampler_run): so does this */
    if (!b.train && unet_prepare(b.model, b.params) != 0)
        fprintf(stderr, "bench_step: %s (forward passes transform their kernels)\n", err_msg());
    if (!b.train) printf("prepared_mib %.1f\n", (double)unet_prepared_bytes(b.model) / (1 << 20));
    for (int i = 0; i < warmup; i++) run_step(&b);
    double *t = xcalloc((size_t)steps, sizeof *t);
    for (int i = 0; i < steps; i++) {
        double t0 = now_seconds();
        run_step(&b);
        t[i] = now_seconds() - t0;
    }
    double s = median(t, steps);
    double macs = unet_forward_macs(b.model);
    printf("params %zu\n", b.P);
    printf("forward_gmac_per_image %.4f\n", macs / 1e9);
    printf("step_s %.5f\n", s);
    printf("step_min_s %.5f\n", t[0]);
    printf("images_per_s %.3f\n", N / s);
    printf("gflops %.2f\n", (b.train ? 6.0 : 2.0) * macs * N / s / 1e9);

    /* Per-op shares from separate profiled steps (probes add a little time). */
    int prof_steps = steps < 3 ? steps : 3;
    prof_reset();
    prof_enabled = 1;
    double t0 = now_seconds();
    for (int i = 0; i < prof_steps; i++) run_step(&b);
    double total = now_seconds() - t0;
    prof_enabled = 0;
    double known = 0;
    for (int k = 0; k < PROF_GEMM; k++) known += prof_seconds[k];
    for (int k = 0; k < PROF_COUNT; k++) {
        char key[64];
        snprintf(key, sizeof key, "%s", prof_kind_name((prof_kind)k));
        for (char *p = key; *p; p++)
            if (*p == ' ') *p = '_';
        char *paren = strchr(key, '(');
        if (paren) paren[-1] = 0; /* "gemm (inside the above)" -> "gemm" */
        printf("share_%s %.4f\n", key, prof_seconds[k] / total);
    }
    printf("share_unaccounted %.4f\n", (total - known) / total);
    printf("share_outside_gemm %.4f\n", (total - prof_seconds[PROF_GEMM]) / total);
    int rc = layer_csv && b.train ? layer_profile(&b, layer_csv) : 0;

    free(t);
    free(b.params); free(b.grads); free(b.m); free(b.v); free(b.x); free(b.eps);
    free(b.pred); free(b.dpred); free(b.t); free(b.ids);
    unet_free(b.model);
    return rc;
}

static int usage(void) {
    fprintf(stderr,
            "usage: bench_step sgemm [--threads T] [--reps R]\n"
            "       bench_step train|forward CONFIG.yaml BATCH [--threads T] [--steps S] "
            "[--warmup W] [--conv auto|shift|winograd|dnnl] [--wino-tile 0|2|4] "
            "[--precision fp32|bf16] [--layer-profile OUT.csv]\n");
    return 2;
}

int main(int argc, char **argv) {
    blas_setup(argv);
    int threads = 2, steps = 7, warmup = 2, reps = 7;
    int npos = 0;
    const char *pos[3] = {0}, *layer_csv = NULL;
    unet_options opt = unet_options_default();
    if (env_unet_options(&opt) != 0) {
        fprintf(stderr, "bench_step: %s\n", err_msg());
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) threads = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--steps") == 0) steps = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--warmup") == 0) warmup = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--reps") == 0) reps = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--layer-profile") == 0) layer_csv = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--conv") == 0) {
            const char *a = argv[++i];
            if (strcmp(a, "auto") == 0) opt.conv.algo = CONV_ALGO_AUTO;
            else if (strcmp(a, "shift") == 0) opt.conv.algo = CONV_ALGO_SHIFT;
            else if (strcmp(a, "winograd") == 0) opt.conv.algo = CONV_ALGO_WINOGRAD;
            else if (strcmp(a, "dnnl") == 0) opt.conv.algo = CONV_ALGO_DNNL;
            else return usage();
        }
        else if (i + 1 < argc && strcmp(argv[i], "--wino-tile") == 0) {
            const char *a = argv[++i];
            if (strcmp(a, "0") != 0 && strcmp(a, "2") != 0 && strcmp(a, "4") != 0) return usage();
            opt.conv.wino_tile = atoi(a);
        }
        else if (i + 1 < argc && strcmp(argv[i], "--precision") == 0) {
            const char *a = argv[++i];
            if (strcmp(a, "fp32") == 0) opt.precision = OPS_FP32;
            else if (strcmp(a, "bf16") == 0) opt.precision = OPS_BF16;
            else return usage();
        }
        else if (argv[i][0] == '-') return usage();
        else if (npos < 3) pos[npos++] = argv[i];
        else return usage();
    }
    if (npos < 1 || threads < 1 || steps < 1 || warmup < 0 || reps < 1) return usage();
    blas_set_threads(threads, 1);
    const char *spin = getenv("GOMP_SPINCOUNT"), *wait = getenv("OMP_WAIT_POLICY");
    printf("threads %d\nkernel %s\nomp_wait %s\nprecision %s\n", threads, blas_kernel_name(),
           wait ? wait : spin ? spin : "default", ops_precision_names[opt.precision]);
    if (strcmp(pos[0], "sgemm") == 0) return npos == 1 ? bench_sgemm(reps, threads) : usage();
    if (npos != 3 || (strcmp(pos[0], "train") != 0 && strcmp(pos[0], "forward") != 0))
        return usage();
    int N = atoi(pos[2]);
    if (N < 1) return usage();
    return bench_model(pos[0], pos[1], N, steps, warmup, &opt, layer_csv);
}
