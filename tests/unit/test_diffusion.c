/* Property tests of common/diffusion: schedule ranges and monotonicity, the
 * posterior against its Gaussian-product derivation, respacing consistency,
 * sampler-step identities, DPM-Solver++'s time points and its first-order step
 * (DDIM), and refusal of bad arguments. Exact agreement with a
 * float64 reference is tests/ref/test_diffusion.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/diffusion/diffusion.h"
#include "common/diffusion/dpm_solver.h"
#include "tests/unit/test.h"

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

static void check_schedule(const diffusion *d, const char *name) {
    int T = d->T, ok_beta = 1, ok_mono = 1, ok_finite = 1, ok_post = 1, ok_large = 1;
    double worst_post = 0;
    for (int t = 0; t < T; t++) {
        if (!(d->betas[t] > 0 && d->betas[t] < 1)) ok_beta = 0;
        double prev = t ? d->alphas_cumprod[t - 1] : 1.0;
        if (!(d->alphas_cumprod[t] < prev && d->alphas_cumprod[t] > 0)) ok_mono = 0;
        if (d->alphas_cumprod_prev[t] != prev) ok_mono = 0;
        const double *all[] = {d->sqrt_alphas_cumprod, d->sqrt_one_minus_alphas_cumprod,
                               d->log_one_minus_alphas_cumprod, d->sqrt_recip_alphas_cumprod,
                               d->sqrt_recipm1_alphas_cumprod, d->posterior_log_variance_clipped,
                               d->posterior_mean_coef1, d->posterior_mean_coef2,
                               d->large_log_variance};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (!isfinite(all[i][t])) ok_finite = 0;
        if (t > 0) {
            /* q(x_{t-1} | x_t, x0) as the product of q(x_t | x_{t-1}) and q(x_{t-1} | x0):
             * precision alpha_t/beta_t + 1/(1 - abar_{t-1}). */
            double a = 1 - d->betas[t], b = d->betas[t], ap = prev;
            double var = 1 / (a / b + 1 / (1 - ap));
            double c1 = var * sqrt(ap) / (1 - ap), c2 = var * sqrt(a) / b;
            worst_post = fmax(worst_post, rel(d->posterior_variance[t], var));
            worst_post = fmax(worst_post, rel(d->posterior_mean_coef1[t], c1));
            worst_post = fmax(worst_post, rel(d->posterior_mean_coef2[t], c2));
            /* beta-tilde <= beta, and the "beta" kind is beta itself past index 0. */
            if (!(d->posterior_variance[t] <= d->betas[t])) ok_post = 0;
            if (d->large_variance[t] != d->betas[t] ||
                diffusion_variance(d, SAMPLING_VAR_BETA, t) != d->betas[t])
                ok_large = 0;
        }
    }
    test_check(ok_beta, "%s: betas in (0, 1)", name);
    test_check(ok_mono, "%s: alphas_cumprod strictly decreasing in (0, 1), prev shifted with 1 first", name);
    test_check(ok_finite, "%s: derived tables and clipped logs finite", name);
    test_check(d->posterior_variance[0] == 0.0 &&
                   d->posterior_log_variance_clipped[0] == d->posterior_log_variance_clipped[1] &&
                   d->posterior_log_variance_clipped[1] == log(d->posterior_variance[1]),
               "%s: posterior_variance[0] == 0, its clipped log uses index 1", name);
    test_check(worst_post < 1e-9 && ok_post,
               "%s: posterior variance and mean coefficients match the Gaussian product "
               "(worst rel %.2g), beta-tilde <= beta", name, worst_post);
    test_check(ok_large && d->large_variance[0] == d->posterior_variance[1] &&
                   d->large_log_variance[0] == d->posterior_log_variance_clipped[1] &&
                   diffusion_log_variance(d, SAMPLING_VAR_BETA_TILDE, 0) ==
                       d->posterior_log_variance_clipped[0],
               "%s: 'beta' variance is betas with index 0 = posterior_variance[1]", name);
    int ident = 1;
    for (int t = 0; t < T; t++) ident &= d->timestep_map[t] == t;
    test_check(ident && d->original_T == T, "%s: timestep map is the identity", name);
}

static void test_schedules(void) {
    diffusion d;
    test_check(diffusion_init(&d, BETA_SCHEDULE_LINEAR, 1000, 1e-4, 0.02) == 0, "linear T=1000 init");
    check_schedule(&d, "linear T=1000");
    test_check(d.betas[0] == 1e-4 && d.betas[999] == 0.02 &&
                   rel(d.betas[500], 1e-4 + 500 * (0.02 - 1e-4) / 999) < 1e-14,
               "linear: endpoints exact, linear in between");
    /* The paper's figure: abar_T is about 4e-5 for this schedule. */
    test_check(d.alphas_cumprod[999] > 3e-5 && d.alphas_cumprod[999] < 5e-5,
               "linear T=1000: abar at the end %.3g (about 4e-5)", d.alphas_cumprod[999]);
    diffusion_free(&d);

    test_check(diffusion_init(&d, BETA_SCHEDULE_COSINE, 1000, 0, 0) == 0, "cosine T=1000 init");
    check_schedule(&d, "cosine T=1000");
    double f0 = cos(0.008 / 1.008 * M_PI / 2);
    f0 *= f0;
    double worst = 0;
    int clipped = 0;
    for (int t = 0; t < 1000; t++) {
        if (d.betas[t] == 0.999) { clipped++; continue; }
        if (clipped) break;
        double f = cos(((t + 1) / 1000.0 + 0.008) / 1.008 * M_PI / 2);
        worst = fmax(worst, rel(d.alphas_cumprod[t], f * f / f0));
    }
    test_check(worst < 1e-9, "cosine: abar_t = f(t+1)/f(0) until betas clip (worst rel %.2g)", worst);
    test_check(d.betas[999] == 0.999 && clipped >= 1, "cosine: last beta clipped to 0.999");
    diffusion_free(&d);

    const int small[] = {2, 10};
    for (int i = 0; i < 2; i++) {
        char name[64];
        snprintf(name, sizeof name, "linear T=%d", small[i]);
        test_check(diffusion_init(&d, BETA_SCHEDULE_LINEAR, small[i], 1e-4, 0.02) == 0, "%s init", name);
        check_schedule(&d, name);
        diffusion_free(&d);
        snprintf(name, sizeof name, "cosine T=%d", small[i]);
        test_check(diffusion_init(&d, BETA_SCHEDULE_COSINE, small[i], 0, 0) == 0, "%s init", name);
        check_schedule(&d, name);
        diffusion_free(&d);
    }
}

static void test_bad_args(void) {
    diffusion d;
    struct { int T; double b0, b1; int sched; const char *want; } bad[] = {
        {1, 1e-4, 0.02, BETA_SCHEDULE_LINEAR, "timesteps"},
        {0, 1e-4, 0.02, BETA_SCHEDULE_LINEAR, "timesteps"},
        {-5, 1e-4, 0.02, BETA_SCHEDULE_COSINE, "timesteps"},
        {100, 0.0, 0.02, BETA_SCHEDULE_LINEAR, "beta_start"},
        {100, 1e-4, 1.0, BETA_SCHEDULE_LINEAR, "beta_end"},
        {100, NAN, 0.02, BETA_SCHEDULE_LINEAR, "beta_start"},
        {100, 1e-4, 0.02, 7, "schedule"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = diffusion_init(&d, bad[i].sched, bad[i].T, bad[i].b0, bad[i].b1);
        test_check(rc == -1 && strstr(err_msg(), bad[i].want) && d.betas == NULL,
                   "bad init %zu refused: %s", i, err_msg());
        diffusion_free(&d);
    }
    double betas[3] = {0.1, 1.0, 0.2};
    test_check(diffusion_init_betas(&d, betas, 3) == -1 && strstr(err_msg(), "beta[1]"),
               "beta of 1 refused naming its index: %s", err_msg());
    diffusion_free(&d);
    test_check(diffusion_init(&d, BETA_SCHEDULE_LINEAR, 100, 1e-4, 0.02) == 0, "init for eta check");
    float x[4] = {0}, e[4] = {0};
    int t[1] = {5};
    test_check(diffusion_ddim_step(&d, 1.5, 1, x, NULL, x, e, NULL, t, 1, 4) == -1 &&
                   strstr(err_msg(), "eta"), "ddim eta 1.5 refused: %s", err_msg());
    test_check(diffusion_ddim_step(&d, NAN, 1, x, NULL, x, e, NULL, t, 1, 4) == -1,
               "ddim eta NaN refused");
    diffusion r;
    const char *specs[] = {"", "ddim", "ddim0", "x10", "10,,5", "-3", "1", "ddim1", "101"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        int rc = diffusion_init_respaced(&r, &d, specs[i]);
        char quoted[32];
        snprintf(quoted, sizeof quoted, "'%s'", specs[i]);
        test_check(rc == -1 && strstr(err_msg(), quoted) && r.betas == NULL,
                   "respacing %s refused: %s", quoted, err_msg());
        diffusion_free(&r);
    }
    diffusion_free(&d);
    diffusion_free(&d); /* twice is safe */
}

static void test_respacing(void) {
    int *k, n;
    test_check(diffusion_space_timesteps(1000, "10", &k, &n) == 0 && n == 10 && k[0] == 0 &&
                   k[1] == 111 && k[9] == 999, "space_timesteps(1000, \"10\") = 0, 111, ..., 999");
    free(k);
    test_check(diffusion_space_timesteps(1000, "ddim100", &k, &n) == 0 && n == 100 && k[1] == 10 &&
                   k[99] == 990, "space_timesteps(1000, \"ddim100\") = 0, 10, ..., 990");
    free(k);
    /* improved-diffusion's docstring example: 300 steps, sections [10, 15, 20]. */
    test_check(diffusion_space_timesteps(300, "10,15,20", &k, &n) == 0 && n == 45 && k[0] == 0 &&
                   k[9] == 99 && k[10] == 100 && k[24] == 199 && k[25] == 200 && k[44] == 299,
               "space_timesteps(300, \"10,15,20\") spans each section end to end");
    int asc = 1;
    for (int i = 1; i < n; i++) asc &= k[i] > k[i - 1];
    test_check(asc, "kept steps strictly ascending");
    free(k);

    diffusion base, r, rr, full;
    diffusion_init(&base, BETA_SCHEDULE_LINEAR, 1000, 1e-4, 0.02);
    test_check(diffusion_init_respaced(&r, &base, "100") == 0 && r.T == 100 && r.original_T == 1000,
               "respaced to 100 steps");
    double worst = 0;
    int map_ok = r.timestep_map[0] == 0 && r.timestep_map[99] == 999;
    for (int j = 0; j < r.T; j++) {
        int m = r.timestep_map[j];
        worst = fmax(worst, rel(r.alphas_cumprod[j], base.alphas_cumprod[m]));
        if (j) {
            worst = fmax(worst, rel(r.alphas_cumprod_prev[j], base.alphas_cumprod[r.timestep_map[j - 1]]));
            map_ok &= m > r.timestep_map[j - 1];
        }
    }
    test_check(worst < 1e-12 && map_ok,
               "respaced abar and abar_prev equal the base at the kept steps (worst rel %.2g)", worst);
    test_check(r.posterior_variance[0] == 0 && isfinite(r.posterior_log_variance_clipped[0]) &&
                   r.large_variance[0] == r.posterior_variance[1],
               "respaced: posterior_variance[0] == 0, clipped log finite, large[0] rule");
    int bigger = 1;
    for (int j = 1; j < r.T; j++) bigger &= r.betas[j] > base.betas[r.timestep_map[j]];
    test_check(bigger, "respaced betas exceed the base betas at the same steps");

    /* Respacing a respaced process composes the maps. */
    test_check(diffusion_init_respaced(&rr, &r, "ddim10") == 0 && rr.T == 10, "respaced twice");
    int comp = 1;
    for (int j = 0; j < rr.T; j++) comp &= rr.timestep_map[j] == r.timestep_map[j * 10];
    worst = 0;
    for (int j = 0; j < rr.T; j++)
        worst = fmax(worst, rel(rr.alphas_cumprod[j], base.alphas_cumprod[rr.timestep_map[j]]));
    test_check(comp && worst < 1e-12 && rr.original_T == 1000,
               "maps compose to original indices (abar worst rel %.2g)", worst);

    /* Keeping every step rebuilds the same process. */
    test_check(diffusion_init_respaced(&full, &base, "1000") == 0, "respaced to all 1000 steps");
    worst = 0;
    for (int t = 0; t < 1000; t++) {
        worst = fmax(worst, rel(full.betas[t], base.betas[t]));
        worst = fmax(worst, rel(full.posterior_variance[t] + 1e-300, base.posterior_variance[t] + 1e-300));
    }
    test_check(worst < 1e-9, "respacing to every step gives back the tables (worst rel %.2g)", worst);
    diffusion_free(&full);
    diffusion_free(&rr);
    diffusion_free(&r);
    diffusion_free(&base);
}

static void fill_normal(float *x, size_t n, unsigned seed) {
    /* A small deterministic generator; statistics do not matter here. */
    unsigned s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        double acc = 0;
        for (int j = 0; j < 4; j++) {
            s = s * 1664525u + 1013904223u;
            acc += (s >> 8) / 16777216.0 - 0.5;
        }
        x[i] = (float)(acc * 1.7);
    }
}

static void test_steps(void) {
    enum { N = 4, D = 64 };
    diffusion d;
    diffusion_init(&d, BETA_SCHEDULE_LINEAR, 1000, 1e-4, 0.02);
    float x0[N * D], eps[N * D], xt[N * D], z[N * D], a[N * D], b[N * D], c[N * D];
    fill_normal(eps, N * D, 1);
    fill_normal(z, N * D, 2);
    fill_normal(x0, N * D, 3);
    for (int i = 0; i < N * D; i++) x0[i] = tanhf(x0[i]); /* inside [-1, 1] */
    int t[N] = {0, 1, 400, 999};
    diffusion_q_sample(&d, xt, x0, eps, t, N, D);

    /* With the true eps, the predicted x0 is x0 and the model mean is the posterior mean. */
    diffusion_predict_x0(&d, a, xt, eps, t, N, D);
    double e1 = 0;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < D; i++)
            e1 = fmax(e1, fabs(a[n * D + i] - x0[n * D + i]) / d.sqrt_recip_alphas_cumprod[t[n]]);
    test_check(e1 < 1e-6, "predict_x0 inverts q_sample (err %.2g in units of x_t)", e1);
    double var[N], lv[N];
    diffusion_p_mean_variance(&d, SAMPLING_VAR_BETA_TILDE, 0, a, NULL, var, lv, xt, eps, t, N, D);
    diffusion_posterior_mean(&d, b, x0, xt, t, N, D);
    test_check(test_rel_err(a, b, N * D) < 1e-5 && var[2] == d.posterior_variance[400] &&
                   lv[0] == d.posterior_log_variance_clipped[1],
               "p_mean_variance with the true eps gives the posterior mean (rel %.2g)",
               test_rel_err(a, b, N * D));

    /* The step adds exp(0.5 logvar) z except at index 0; z = NULL gives the mean. */
    diffusion_p_sample(&d, SAMPLING_VAR_BETA, 1, a, NULL, xt, eps, z, t, N, D);
    diffusion_p_sample(&d, SAMPLING_VAR_BETA, 1, b, c, xt, eps, NULL, t, N, D);
    double worst = 0;
    int t0_same = 1;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < D; i++) {
            int k = n * D + i;
            if (t[n] == 0) { t0_same &= a[k] == b[k]; continue; }
            double sd = sqrt(d.betas[t[n]]);
            worst = fmax(worst, fabs((a[k] - b[k]) - sd * z[k]) / (sd * fabs(z[k]) + 1e-3));
        }
    test_check(t0_same, "ancestral step adds no noise at index 0");
    test_check(worst < 1e-4, "ancestral step adds sqrt(beta_t) z (rel %.2g)", worst);
    float ip[N * D];
    memcpy(ip, xt, sizeof ip);
    diffusion_p_sample(&d, SAMPLING_VAR_BETA, 1, ip, NULL, ip, eps, z, t, N, D);
    test_check(memcmp(ip, a, sizeof ip) == 0, "ancestral step in place equals out of place");
    int inside = 1;
    for (int i = 0; i < N * D; i++) inside &= c[i] >= -1 && c[i] <= 1;
    test_check(inside, "clipped x0 output within [-1, 1]");

    /* DDIM eta 0 with the true eps and unclipped x0 lands on q_sample at abar_prev. */
    diffusion_ddim_step(&d, 0.0, 0, a, NULL, xt, eps, z, t, N, D);
    worst = 0;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < D; i++) {
            int k = n * D + i;
            double ap = d.alphas_cumprod_prev[t[n]];
            double want = sqrt(ap) * x0[k] + sqrt(1 - ap) * eps[k];
            worst = fmax(worst, fabs(a[k] - want));
        }
    test_check(worst < 2e-4, "DDIM eta 0 is the deterministic reparameterisation (max err %.2g)", worst);
    /* DDIM eta 1: the noise scale is sqrt(beta-tilde). */
    diffusion_ddim_step(&d, 1.0, 1, a, NULL, xt, eps, z, t, N, D);
    diffusion_ddim_step(&d, 1.0, 1, b, NULL, xt, eps, NULL, t, N, D);
    worst = 0;
    for (int n = 1; n < N; n++) {
        double sd = sqrt(d.posterior_variance[t[n]]);
        for (int i = 0; i < D; i++) {
            int k = n * D + i;
            worst = fmax(worst, fabs((a[k] - b[k]) - sd * z[k]) / (sd * fabs(z[k]) + 1e-3));
        }
    }
    test_check(worst < 1e-3, "DDIM eta 1 noise scale is sqrt(beta-tilde) (rel %.2g)", worst);

    double loss[N];
    for (int i = 0; i < N * D; i++) a[i] = eps[i] + (i / D + 1) * 0.5f;
    diffusion_loss_simple(loss, a, eps, N, D);
    test_check(rel(loss[0], 0.25) < 1e-6 && rel(loss[3], 4.0) < 1e-6,
               "L_simple is the per-sample mean squared error (%.6f, %.6f)", loss[0], loss[3]);
    test_check(diffusion_t_quartile(&d, 0) == 0 && diffusion_t_quartile(&d, 249) == 0 &&
                   diffusion_t_quartile(&d, 250) == 1 && diffusion_t_quartile(&d, 999) == 3,
               "t quartiles 0 | 249 | 250 | 999 -> 0, 0, 1, 3");
    diffusion_free(&d);
}

/* Every n in 1..T (a sample of them for T = 1000) gives n strictly decreasing
 * indices from T-1 (to 0 for n >= 2), for both spacings and schedules. */
static void test_dpm_timesteps(void) {
    static const int ns[] = {1, 2, 3, 7, 10, 20, 50, 100, 200, 500, 999, 1000};
    struct { beta_schedule s; int T; const char *name; } cases[] = {
        {BETA_SCHEDULE_LINEAR, 10, "linear T=10"}, {BETA_SCHEDULE_COSINE, 37, "cosine T=37"},
        {BETA_SCHEDULE_LINEAR, 1000, "linear T=1000"}, {BETA_SCHEDULE_COSINE, 1000, "cosine T=1000"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        diffusion d;
        diffusion_init(&d, cases[c].s, cases[c].T, 1e-4, 0.02);
        int T = d.T, *t = xcalloc((size_t)T, sizeof(int));
        for (int sp = 0; sp < 2; sp++) {
            int ok = 1, tried = 0;
            for (int k = 0; T == 1000 ? k < 12 : k < T; k++) {
                int n = T == 1000 ? ns[k] : k + 1;
                if (dpm_solver_timesteps(&d, n, (dpm_spacing)sp, t) != 0) ok = 0;
                if (t[0] != T - 1 || (n >= 2 && t[n - 1] != 0)) ok = 0;
                for (int i = 1; i < n; i++)
                    if (t[i] >= t[i - 1]) ok = 0;
                tried++;
            }
            test_check(ok, "dpm-solver++ %s, %s spacing: %d step counts give strictly decreasing "
                       "indices from T-1 to 0", cases[c].name, dpm_spacing_name((dpm_spacing)sp),
                       tried);
        }
        int refused = dpm_solver_timesteps(&d, 0, DPM_SPACING_TIME, t) == -1 &&
                      dpm_solver_timesteps(&d, T + 1, DPM_SPACING_LOGSNR, t) == -1;
        test_check(refused, "dpm-solver++ %s refuses 0 and T+1 steps (%s)", cases[c].name,
                   err_msg());
        free(t);
        diffusion_free(&d);
    }
}

/* The first-order step is DDIM with eta 0 (Lu et al. 2022): from t_0 to t_1,
 * x' = sqrt(abar_1) x0 + sqrt(1 - abar_1) eps; the last step returns x0. */
static void test_dpm_steps(void) {
    enum { N = 2, D = 5 };
    diffusion d;
    diffusion_init(&d, BETA_SCHEDULE_LINEAR, 1000, 1e-4, 0.02);
    dpm_plan p;
    dpm_plan_init(&p, &d, 10, DPM_SPACING_LOGSNR);
    float x[N * D], eps[N * D], x0[N * D], want[N * D];
    for (int i = 0; i < N * D; i++) {
        x[i] = (float)sin(i + 1.0);
        eps[i] = (float)cos(2.0 * i);
    }
    dpm_solver_x0(&p, 0, 0, x0, x, eps, N, D);
    double ab = d.alphas_cumprod[p.t[1]];
    for (int i = 0; i < N * D; i++) {
        want[i] = (float)(sqrt(ab) * x0[i] + sqrt(1 - ab) * eps[i]);
    }
    dpm_solver_step(&p, 0, x, x0, NULL, NULL, N, D);
    double err = test_rel_err(x, want, N * D);
    test_check(p.order[0] == 1 && p.order[1] == 2 && p.order[9] == 1 && err < 1e-5,
               "dpm-solver++: orders 1, 2, ..., 2, 1; the first step is DDIM eta 0 (rel err %.1e)",
               err);
    float x0b[N * D];
    for (int i = 0; i < N * D; i++) x0b[i] = 0.25f * (float)i;
    dpm_solver_step(&p, 9, x, x0b, x0, NULL, N, D);
    test_check(memcmp(x, x0b, sizeof x) == 0, "dpm-solver++: the last step returns x0");
    dpm_plan_free(&p);
    diffusion_free(&d);
}

int main(void) {
    test_schedules();
    test_dpm_timesteps();
    test_dpm_steps();
    test_bad_args();
    test_respacing();
    test_steps();
    return test_done();
}
