/* Runs the learned-variance pieces on inputs that tests/ref/hybrid_ref.py wrote, and
 * writes the results for it to check against improved-diffusion's formulas:
 *
 *   hybrid_dump SCHEDULE T SPACING IN.tns OUT.tns
 *
 * SCHEDULE: linear (1e-4..0.02) | cosine, T steps (as tests/tools/diffusion_dump).
 * IN.tns: meta [N, D, scale], t [N] (indices of the T-step process), x0, eps [N][D]
 * (the true noise), out [N][2D] (a learned-variance model's output: eps | v), and
 * for one ancestral step on the process respaced by SPACING ("none": not
 * respaced): ts [N] (its indices), xs, z [N][D].
 * OUT.tns (doubles as NAME + NAME.lo, as tests/tools/bpd_ref_dump writes them):
 *   xt [N][D]           diffusion_q_sample(x0, eps, t)
 *   loss, mse, vb [N]   grad_hybrid_loss on (x0, xt, eps, out, t) (doubles)
 *   dout [N][2D]        its gradient, times scale
 *   logvar [N][D]       the learned log variance of (ts, v) on the respaced process (doubles)
 *   x_prev [N][D]       diffusion_p_sample_learned (clip) on the respaced process
 *   eps_split, v_split  diffusion_split_output(out) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/diffusion/diffusion.h"
#include "common/io/tensor_file.h"
#include "common/train/grad.h"

static void die(void) {
    fprintf(stderr, "hybrid_dump: %s\n", err_msg());
    exit(1);
}

static float *get(const char *path, const char *name, size_t want) {
    size_t n;
    float *p = tensor_file_read(path, name, &n);
    if (!p) die();
    if (n != want) {
        err_set("%s: %s has %zu values, expected %zu", path, name, n, want);
        die();
    }
    return p;
}

static int *indices(const char *path, const char *name, int N, int T) {
    float *f = get(path, name, (size_t)N);
    int *t = xcalloc((size_t)N, sizeof *t);
    for (int n = 0; n < N; n++) {
        t[n] = (int)f[n];
        if (t[n] < 0 || t[n] >= T || (float)t[n] != f[n]) {
            err_set("%s: %s[%d] = %g is not an index of 0..%d", path, name, n, f[n], T - 1);
            die();
        }
    }
    free(f);
    return t;
}

static void add(tensor_file *tf, const char *name, size_t n, const float *d) {
    int64_t dims[1] = {(int64_t)n};
    if (tensor_file_add(tf, name, 1, dims, d) != 0) die();
}

/* A double as NAME (float) and NAME.lo (the rest). */
static void add_doubles(tensor_file *tf, const char *name, size_t n, const double *d) {
    float *hi = xfloats(n), *lo = xfloats(n);
    for (size_t i = 0; i < n; i++) {
        hi[i] = (float)d[i];
        lo[i] = (float)(d[i] - (double)hi[i]);
    }
    char lname[128];
    snprintf(lname, sizeof lname, "%s.lo", name);
    add(tf, name, n, hi);
    add(tf, lname, n, lo);
    free(hi);
    free(lo);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s linear|cosine T SPACING IN.tns OUT.tns\n", argv[0]);
        return 2;
    }
    int T = atoi(argv[2]);
    beta_schedule sch = strcmp(argv[1], "cosine") == 0 ? BETA_SCHEDULE_COSINE : BETA_SCHEDULE_LINEAR;
    diffusion d, r;
    if (diffusion_init(&d, sch, T, 1e-4, 0.02) != 0) die();
    char spec[64];
    snprintf(spec, sizeof spec, "%s", argv[3]);
    if (strcmp(spec, "none") == 0) snprintf(spec, sizeof spec, "%d", T);
    if (diffusion_init_respaced(&r, &d, spec) != 0) die();
    const char *in = argv[4];
    float *meta = get(in, "meta", 3);
    int N = (int)meta[0];
    size_t D = (size_t)meta[1], ND = (size_t)N * D;
    double scale = meta[2];
    int *t = indices(in, "t", N, T), *ts = indices(in, "ts", N, r.T);
    float *x0 = get(in, "x0", ND), *eps = get(in, "eps", ND), *out = get(in, "out", 2 * ND);
    float *xs = get(in, "xs", ND), *z = get(in, "z", ND);

    float *xt = xfloats(ND), *dout = xfloats(2 * ND), *xp = xfloats(ND);
    float *es = xfloats(ND), *vs = xfloats(ND);
    double *loss = xcalloc((size_t)N, sizeof(double)), *mse = xcalloc((size_t)N, sizeof(double));
    double *vb = xcalloc((size_t)N, sizeof(double)), *lv = xcalloc(ND, sizeof(double));
    diffusion_q_sample(&d, xt, x0, eps, t, N, D);
    grad_hybrid_loss(&d, x0, xt, eps, out, t, N, D, scale, loss, mse, vb, dout);
    diffusion_split_output(out, N, D, es, vs);
    for (int n = 0; n < N; n++) {
        double lo, hi;
        diffusion_learned_range(&r, ts[n], &lo, &hi);
        for (size_t i = 0; i < D; i++)
            lv[(size_t)n * D + i] = diffusion_learned_log_variance(vs[(size_t)n * D + i], lo, hi);
    }
    diffusion_p_sample_learned(&r, 1, xp, NULL, xs, es, vs, z, ts, N, D);

    tensor_file tf;
    if (tensor_file_create(&tf, argv[5]) != 0) die();
    add(&tf, "xt", ND, xt);
    add_doubles(&tf, "loss", (size_t)N, loss);
    add_doubles(&tf, "mse", (size_t)N, mse);
    add_doubles(&tf, "vb", (size_t)N, vb);
    add(&tf, "dout", 2 * ND, dout);
    add_doubles(&tf, "logvar", ND, lv);
    add(&tf, "x_prev", ND, xp);
    add(&tf, "eps_split", ND, es);
    add(&tf, "v_split", ND, vs);
    if (tensor_file_close(&tf) != 0) die();
    free(meta); free(t); free(ts); free(x0); free(eps); free(out); free(xs); free(z);
    free(xt); free(dout); free(xp); free(es); free(vs); free(loss); free(mse); free(vb); free(lv);
    diffusion_free(&d);
    diffusion_free(&r);
    return 0;
}
