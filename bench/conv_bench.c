/* One convolution layer's time per formulation (docs/performance.md, "oneDNN
 * direct convolutions"): forward and backward (data and weights), median of
 * reps calls after warmup, each formulation through a plan with its state as
 * the model keeps them, the formulations alternated call by call.
 *
 *   conv_bench N Cin H W Cout [k stride] [--threads T] [--reps R]
 *              [--forms shift,winograd,dnnl,gemm] [--fused]
 *
 * --fused: the 3x3 convolutions as the model runs them (gn_silu_conv2d). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/blas_setup.h"
#include "common/core/util.h"
#include "common/ops/ops.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float *rnd(size_t n) {
    float *p = xmalloc(n * sizeof *p);
    unsigned s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1103515245u + 12345u;
        p[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    return p;
}

int main(int argc, char **argv) {
    int pos[7] = {0, 0, 0, 0, 0, 3, 1}, np = 0, threads = 0, reps = 15, fused = 0;
    const char *forms = "shift,winograd,dnnl";
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) threads = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--reps") == 0) reps = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--forms") == 0) forms = argv[++i];
        else if (strcmp(argv[i], "--fused") == 0) fused = 1;
        else if (np < 7) pos[np++] = atoi(argv[i]);
    }
    if (np < 5 || reps < 1) {
        fprintf(stderr, "usage: conv_bench N Cin H W Cout [k stride] [--threads T] [--reps R] "
                        "[--forms shift,winograd,dnnl,gemm] [--fused]\n");
        return 2;
    }
    if (threads > 0) blas_set_threads(threads, 1);
    const conv_shape s = conv_shape_make(pos[0], pos[1], pos[2], pos[3], pos[4], pos[5], pos[6]);
    if (fused && !(s.k == 3 && s.stride == 1)) fused = 0;
    const size_t nx = (size_t)s.N * s.Cin * s.H * s.W, nw = (size_t)s.Cout * s.Cin * s.k * s.k;
    const size_t no = (size_t)s.N * s.Cout * s.Ho * s.Wo;
    float *x = rnd(nx), *w = rnd(nw), *b = rnd((size_t)s.Cout), *dout = rnd(no);
    float *out = xmalloc(no * sizeof(float)), *dx = xcalloc(nx, sizeof(float));
    float *dw = xcalloc(nw, sizeof(float)), *db = xcalloc((size_t)s.Cout, sizeof(float));
    const int G = s.Cin >= 32 ? 32 : 1;
    float *mean = xcalloc((size_t)s.N * G, sizeof(float)), *rstd = xmalloc((size_t)s.N * G * 4);
    float *gamma = rnd((size_t)s.Cin), *beta = rnd((size_t)s.Cin);
    for (int i = 0; i < s.N * G; i++) rstd[i] = 1.0f;
    const gn_apply gn = {mean, rstd, gamma, beta, G};

    const char *names[4] = {"shift", "winograd", "dnnl", "gemm"};
    const conv_algo algos[4] = {CONV_ALGO_SHIFT, CONV_ALGO_WINOGRAD, CONV_ALGO_DNNL, CONV_ALGO_SHIFT};
    conv_plan plan[4];
    float *ws[4];
    int use[4] = {0}, nf = 0;
    for (int f = 0; f < 4; f++) {
        if (!strstr(forms, names[f])) continue;
        conv_algo_opts o = {.algo = algos[f]};
        plan[f] = conv_plan_make(&s, &o);
        if (f == 3) plan[f].form = CONV_FORM_GEMM;
        if ((f == 1 && plan[f].form != CONV_FORM_WINOGRAD) || (fused && f == 3)) continue;
        plan[f].state = conv_state_create(&s, &plan[f]);
        ws[f] = xmalloc((conv_workspace_floats(&s, &plan[f]) + 1) * sizeof(float));
        use[f] = 1;
        nf++;
    }
    double *tf[4], *tb[4];
    for (int f = 0; f < 4; f++) {
        tf[f] = xcalloc((size_t)reps, sizeof(double));
        tb[f] = xcalloc((size_t)reps, sizeof(double));
    }
    const int warm = 2;
    for (int r = -warm; r < reps; r++)
        for (int f = 0; f < 4; f++) {
            if (!use[f]) continue;
            double t0 = omp_get_wtime();
            if (fused) gn_silu_conv2d_forward(out, x, &gn, NULL, w, b, &s, &plan[f], ws[f]);
            else conv2d_forward(out, x, w, b, &s, &plan[f], ws[f]);
            double t1 = omp_get_wtime();
            if (fused) gn_silu_conv2d_backward(dx, dw, db, dout, x, &gn, NULL, w, &s, &plan[f], ws[f]);
            else conv2d_backward(dx, dw, db, dout, x, w, &s, &plan[f], ws[f]);
            double t2 = omp_get_wtime();
            if (r >= 0) {
                tf[f][r] = t1 - t0;
                tb[f][r] = t2 - t1;
            }
        }
    const double flop = 2.0 * (double)no * s.Cin * s.k * s.k;
    printf("# N %d, %d->%d ch, %dx%d, k %d stride %d, %d threads, %s, median of %d\n", s.N, s.Cin,
           s.Cout, s.H, s.W, s.k, s.stride, omp_get_max_threads(), fused ? "gn_silu fused" : "plain",
           reps);
    for (int f = 0; f < 4; f++) {
        if (!use[f]) continue;
        qsort(tf[f], (size_t)reps, sizeof(double), cmp_d);
        qsort(tb[f], (size_t)reps, sizeof(double), cmp_d);
        const double mf = tf[f][reps / 2], mb = tb[f][reps / 2];
        printf("%-9s fwd %8.3f ms (%6.1f GFLOP/s)  bwd %8.3f ms (%6.1f GFLOP/s)  total %8.3f ms\n",
               names[f], mf * 1e3, flop / mf * 1e-9, mb * 1e3, 2 * flop / mb * 1e-9,
               (mf + mb) * 1e3);
    }
    for (int f = 0; f < 4; f++) {
        if (use[f]) {
            conv_state_free(&plan[f]);
            free(ws[f]);
        }
        free(tf[f]);
        free(tb[f]);
    }
    (void)nf;
    free(x); free(w); free(b); free(dout); free(out); free(dx); free(dw); free(db);
    free(mean); free(rstd); free(gamma); free(beta);
    return 0;
}
