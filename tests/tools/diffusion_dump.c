/* Writes diffusion tables and sampler-step results for tests/ref/diffusion_ref.py.
 *
 *   diffusion_dump tables SCHEDULE T SPACING OUTDIR
 *   diffusion_dump ops    SCHEDULE T SPACING N D INDIR OUTDIR
 *
 * SCHEDULE: linear (1e-4..0.02) | cosine. SPACING: "none" or a respacing spec
 * ("100", "10,15,20", "ddim50"); the ops then run on the respaced process.
 * Files are raw little-endian arrays:
 *   tables: OUTDIR/tables.f64 (the 14 tables of diffusion.h, in declaration order,
 *           T' doubles each), OUTDIR/map.i32 (timestep_map, T' int32).
 *   ops inputs (INDIR): t.i32 (N), x0.f32, eps.f32, xt.f32, eps_pred.f32, z.f32 (N*D).
 *   ops outputs (OUTDIR), float32 N*D unless noted:
 *     q_sample        q_sample(x0, eps, t)
 *     predict_x0      predict_x0(xt, eps_pred, t)
 *     posterior_mean  posterior_mean(x0, xt, t)
 *     pmv_mean, pmv_x0, pmv_var.f64, pmv_logvar.f64   p_mean_variance(beta, clip 1)
 *     pmv_mean_noclip  p_mean_variance(beta_tilde, clip 0)
 *     sample_beta, sample_beta_tilde, sample_beta_noclip  p_sample (clip 1, 1, 0)
 *     sample_inplace  p_sample(beta_tilde, clip 1) with x_prev == xt
 *     ddim_eta0, ddim_eta1  DDIM step (clip 1; eta 0 gets z = NULL)
 *     ddim_x0         x0 output of the eta 1 step
 *     loss.f64        loss_simple(eps_pred, eps) (N doubles)
 *     quartile.i32    diffusion_t_quartile per sample (N)
 * Prints an error and exits 1 on bad arguments or files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/diffusion/diffusion.h"

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "diffusion_dump: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(1);
}

static void write_file(const char *dir, const char *name, const void *p, size_t bytes) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot create %s", path);
    if (fwrite(p, 1, bytes, f) != bytes || fclose(f) != 0) die("cannot write %s", path);
}

static void *read_file(const char *dir, const char *name, size_t bytes) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s", path);
    void *p = xmalloc(bytes);
    if (fread(p, 1, bytes, f) != bytes) die("%s is shorter than expected", path);
    if (fgetc(f) != EOF) die("%s is longer than expected", path);
    fclose(f);
    return p;
}

static long parse_long(const char *s, const char *what) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1 || v > 100000000) die("bad %s", what);
    return v;
}

static void build(diffusion *d, const char *sched, const char *T, const char *spacing) {
    beta_schedule s;
    if (strcmp(sched, "linear") == 0) s = BETA_SCHEDULE_LINEAR;
    else if (strcmp(sched, "cosine") == 0) s = BETA_SCHEDULE_COSINE;
    else die("unknown schedule '%s'", sched);
    diffusion base;
    if (diffusion_init(&base, s, (int)parse_long(T, "T"), 1e-4, 0.02)) die("%s", err_msg());
    if (strcmp(spacing, "none") == 0) {
        *d = base;
        return;
    }
    if (diffusion_init_respaced(d, &base, spacing)) die("%s", err_msg());
    diffusion_free(&base);
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "tables") == 0) {
        diffusion d;
        build(&d, argv[2], argv[3], argv[4]);
        const double *tabs[14] = {
            d.betas, d.alphas_cumprod, d.alphas_cumprod_prev, d.sqrt_alphas_cumprod,
            d.sqrt_one_minus_alphas_cumprod, d.log_one_minus_alphas_cumprod,
            d.sqrt_recip_alphas_cumprod, d.sqrt_recipm1_alphas_cumprod, d.posterior_variance,
            d.posterior_log_variance_clipped, d.posterior_mean_coef1, d.posterior_mean_coef2,
            d.large_variance, d.large_log_variance,
        };
        size_t tb = (size_t)d.T * sizeof(double);
        double *all = xmalloc(14 * tb);
        for (int i = 0; i < 14; i++) memcpy((char *)all + i * tb, tabs[i], tb);
        write_file(argv[5], "tables.f64", all, 14 * tb);
        free(all);
        write_file(argv[5], "map.i32", d.timestep_map, (size_t)d.T * sizeof(int));
        diffusion_free(&d);
        return 0;
    }
    if (argc == 9 && strcmp(argv[1], "ops") == 0) {
        diffusion d;
        build(&d, argv[2], argv[3], argv[4]);
        int N = (int)parse_long(argv[5], "N");
        size_t D = (size_t)parse_long(argv[6], "D"), ND = (size_t)N * D;
        const char *in = argv[7], *out = argv[8];
        int *t = read_file(in, "t.i32", (size_t)N * sizeof(int));
        for (int n = 0; n < N; n++)
            if (t[n] < 0 || t[n] >= d.T) die("t.i32 has an index outside 0..T-1%s", "");
        float *x0 = read_file(in, "x0.f32", ND * sizeof(float));
        float *eps = read_file(in, "eps.f32", ND * sizeof(float));
        float *xt = read_file(in, "xt.f32", ND * sizeof(float));
        float *eps_pred = read_file(in, "eps_pred.f32", ND * sizeof(float));
        float *z = read_file(in, "z.f32", ND * sizeof(float));
        float *o = xfloats(ND), *o2 = xfloats(ND);
        double *v = xmalloc((size_t)N * sizeof(double)), *lv = xmalloc((size_t)N * sizeof(double));
        size_t fb = ND * sizeof(float);

        diffusion_q_sample(&d, o, x0, eps, t, N, D);
        write_file(out, "q_sample.f32", o, fb);
        diffusion_predict_x0(&d, o, xt, eps_pred, t, N, D);
        write_file(out, "predict_x0.f32", o, fb);
        diffusion_posterior_mean(&d, o, x0, xt, t, N, D);
        write_file(out, "posterior_mean.f32", o, fb);
        diffusion_p_mean_variance(&d, SAMPLING_VAR_BETA, 1, o, o2, v, lv, xt, eps_pred, t, N, D);
        write_file(out, "pmv_mean.f32", o, fb);
        write_file(out, "pmv_x0.f32", o2, fb);
        write_file(out, "pmv_var.f64", v, (size_t)N * sizeof(double));
        write_file(out, "pmv_logvar.f64", lv, (size_t)N * sizeof(double));
        diffusion_p_mean_variance(&d, SAMPLING_VAR_BETA_TILDE, 0, o, NULL, NULL, NULL, xt, eps_pred,
                                  t, N, D);
        write_file(out, "pmv_mean_noclip.f32", o, fb);
        diffusion_p_sample(&d, SAMPLING_VAR_BETA, 1, o, NULL, xt, eps_pred, z, t, N, D);
        write_file(out, "sample_beta.f32", o, fb);
        diffusion_p_sample(&d, SAMPLING_VAR_BETA_TILDE, 1, o, NULL, xt, eps_pred, z, t, N, D);
        write_file(out, "sample_beta_tilde.f32", o, fb);
        diffusion_p_sample(&d, SAMPLING_VAR_BETA, 0, o, NULL, xt, eps_pred, z, t, N, D);
        write_file(out, "sample_beta_noclip.f32", o, fb);
        memcpy(o, xt, fb);
        diffusion_p_sample(&d, SAMPLING_VAR_BETA_TILDE, 1, o, NULL, o, eps_pred, z, t, N, D);
        write_file(out, "sample_inplace.f32", o, fb);
        if (diffusion_ddim_step(&d, 0.0, 1, o, NULL, xt, eps_pred, NULL, t, N, D)) die("%s", err_msg());
        write_file(out, "ddim_eta0.f32", o, fb);
        if (diffusion_ddim_step(&d, 1.0, 1, o, o2, xt, eps_pred, z, t, N, D)) die("%s", err_msg());
        write_file(out, "ddim_eta1.f32", o, fb);
        write_file(out, "ddim_x0.f32", o2, fb);
        diffusion_loss_simple(v, eps_pred, eps, N, D);
        write_file(out, "loss.f64", v, (size_t)N * sizeof(double));
        int *q = xmalloc((size_t)N * sizeof(int));
        for (int n = 0; n < N; n++) q[n] = diffusion_t_quartile(&d, t[n]);
        write_file(out, "quartile.i32", q, (size_t)N * sizeof(int));

        free(q); free(t); free(x0); free(eps); free(xt); free(eps_pred); free(z);
        free(o); free(o2); free(v); free(lv);
        diffusion_free(&d);
        return 0;
    }
    fprintf(stderr, "usage: diffusion_dump tables SCHEDULE T SPACING OUTDIR\n"
                    "       diffusion_dump ops SCHEDULE T SPACING N D INDIR OUTDIR\n");
    return 1;
}
