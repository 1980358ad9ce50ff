/* Runs the evaluation ops (common/ops/ops_extra.h) on random inputs and writes inputs,
 * parameters and outputs for tests/ref/eval_ops_ref.py (PyTorch float64):
 *   eval_ops_dump OUT.tns
 * Records per case K: K/meta (op code and parameters), K/in, K/weight, K/bias, K/out. */
#include <stdio.h>
#include <stdlib.h>

#include "common/core/util.h"
#include "common/io/tensor_file.h"
#include "common/ops/ops_extra.h"
#include "common/rng/rng.h"

static tensor_file g_tf;
static int g_case;

static void put(const char *what, int ndim, const int64_t *dims, const float *d) {
    char name[64];
    snprintf(name, sizeof name, "case%02d/%s", g_case, what);
    if (tensor_file_add(&g_tf, name, ndim, dims, d) != 0) {
        fprintf(stderr, "eval_ops_dump: %s\n", err_msg());
        exit(1);
    }
}

static float *randn(size_t n, uint64_t salt) {
    float *p = xfloats(n);
    rng_key k = {42, salt, (uint64_t)g_case, RNG_PURPOSE_NOISE};
    rng_normal(&k, p, n);
    return p;
}

/* op codes: 1 conv, 2 maxpool, 3 avgpool, 4 resize, 5 global avgpool */
static void conv_case(int N, int Cin, int H, int W, int Cout, int kh, int kw, int s, int ph, int pw,
                      int relu) {
    conv_rect_shape sh = conv_rect_shape_make(N, Cin, H, W, Cout, kh, kw, s, s, ph, pw);
    float *x = randn((size_t)N * Cin * H * W, 1), *w = randn((size_t)Cout * Cin * kh * kw, 2);
    float *b = randn((size_t)Cout, 3), *y = xfloats((size_t)N * Cout * sh.Ho * sh.Wo);
    float *ws = xfloats(conv_rect_workspace_floats(&sh) + 1);
    conv_rect_forward(y, x, w, b, &sh, relu, 0, ws);
    float meta[10] = {1, (float)kh, (float)kw, (float)s, (float)ph, (float)pw, (float)relu};
    int64_t dm[1] = {10}, dx[4] = {N, Cin, H, W}, dw[4] = {Cout, Cin, kh, kw}, db[1] = {Cout};
    int64_t dy[4] = {N, Cout, sh.Ho, sh.Wo};
    put("meta", 1, dm, meta);
    put("in", 4, dx, x);
    put("weight", 4, dw, w);
    put("bias", 1, db, b);
    put("out", 4, dy, y);
    free(x); free(w); free(b); free(y); free(ws);
    g_case++;
}

static void pool_case(int op, int N, int C, int H, int W, int k, int s, int p, int cip) {
    int Ho = window_out_size(H, k, s, p), Wo = window_out_size(W, k, s, p);
    float *x = randn((size_t)N * C * H * W, 1), *y = xfloats((size_t)N * C * Ho * Wo);
    if (op == 2) maxpool2d_forward(y, x, N, C, H, W, k, s, p);
    else avgpool2d_forward(y, x, N, C, H, W, k, s, p, cip);
    float meta[10] = {(float)op, (float)k, (float)s, (float)p, (float)cip};
    int64_t dm[1] = {10}, dx[4] = {N, C, H, W}, dy[4] = {N, C, Ho, Wo};
    put("meta", 1, dm, meta);
    put("in", 4, dx, x);
    put("out", 4, dy, y);
    free(x); free(y);
    g_case++;
}

static void resize_case(int N, int C, int H, int W, int Ho, int Wo) {
    float *x = randn((size_t)N * C * H * W, 1), *y = xfloats((size_t)N * C * Ho * Wo);
    resize_bilinear_forward(y, x, N, C, H, W, Ho, Wo);
    float meta[10] = {4, (float)Ho, (float)Wo};
    int64_t dm[1] = {10}, dx[4] = {N, C, H, W}, dy[4] = {N, C, Ho, Wo};
    put("meta", 1, dm, meta);
    put("in", 4, dx, x);
    put("out", 4, dy, y);
    free(x); free(y);
    g_case++;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.tns\n", argv[0]);
        return 2;
    }
    if (tensor_file_create(&g_tf, argv[1]) != 0) {
        fprintf(stderr, "eval_ops_dump: %s\n", err_msg());
        return 1;
    }
    /* the kernel shapes of Inception-v3 and odd sizes */
    conv_case(2, 5, 17, 17, 6, 1, 7, 1, 0, 3, 1);
    conv_case(2, 5, 17, 13, 6, 7, 1, 1, 3, 0, 0);
    conv_case(1, 4, 8, 8, 7, 1, 3, 1, 0, 1, 1);
    conv_case(1, 4, 8, 8, 7, 3, 1, 1, 1, 0, 0);
    conv_case(2, 3, 35, 35, 8, 3, 3, 2, 0, 0, 1);
    conv_case(1, 3, 20, 23, 4, 3, 3, 2, 0, 0, 0);
    conv_case(1, 6, 12, 12, 5, 5, 5, 1, 2, 2, 1);
    conv_case(2, 6, 9, 11, 5, 3, 3, 1, 1, 1, 1);
    conv_case(2, 6, 9, 11, 5, 1, 1, 1, 0, 0, 1);
    conv_case(1, 6, 9, 11, 5, 3, 3, 1, 0, 0, 0);
    pool_case(2, 2, 3, 17, 17, 3, 2, 0, 0);
    pool_case(2, 1, 3, 12, 9, 3, 2, 0, 0);
    pool_case(2, 2, 3, 8, 8, 3, 1, 1, 0);
    pool_case(3, 2, 3, 8, 7, 3, 1, 1, 0);
    pool_case(3, 2, 3, 8, 7, 3, 1, 1, 1);
    pool_case(3, 1, 2, 10, 10, 3, 2, 1, 0);
    resize_case(1, 3, 32, 32, 299, 299);
    resize_case(1, 2, 28, 28, 299, 299);
    resize_case(1, 3, 320, 300, 299, 299);
    resize_case(2, 1, 5, 7, 11, 3);
    /* global average pool */
    {
        float *x = randn((size_t)2 * 7 * 64, 1), y[14];
        global_avgpool_forward(y, x, 2, 7, 64);
        float meta[10] = {5};
        int64_t dm[1] = {10}, dx[4] = {2, 7, 8, 8}, dy[2] = {2, 7};
        put("meta", 1, dm, meta);
        put("in", 4, dx, x);
        put("out", 2, dy, y);
        free(x);
        g_case++;
    }
    if (tensor_file_close(&g_tf) != 0) {
        fprintf(stderr, "eval_ops_dump: %s\n", err_msg());
        return 1;
    }
    printf("wrote %s: %d cases\n", argv[1], g_case);
    return 0;
}
