/* The two ways the U-Net uses threads (docs/ARCHITECTURE.md, Threads) must give the
 * same results as one thread, up to float rounding: a training forward + backward of
 * the fashion_mnist U-Net (a) as one model whose ops split every loop and GEMM over
 * 2 and 3 threads (common/ops/ops_internal.h), and (b) in 2 and 3 lanes (sub-models
 * on slices of the batch, gradients summed per layer). The reference is one lane on
 * one thread, where every loop is the plain serial one. With lanes, the backward
 * hook must see each layer's gradients final: what it is shown never changes
 * afterwards, and its offsets fall to 0. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/config/config.h"
#include "common/core/blas_setup.h"
#include "common/core/util.h"
#include "common/model/unet.h"
#include "common/ops/ops.h"
#include "common/rng/rng.h"
#include "tests/unit/test.h"

#define NB 6

typedef struct {
    const float *grads;
    float *seen; /* the gradient as the hook saw each region */
    size_t prev;
    int calls, order_ok;
} hook_log;

static void hook(void *ctx, size_t done_from) {
    hook_log *h = ctx;
    h->calls++;
    if (done_from > h->prev) h->order_ok = 0;
    memcpy(h->seen + done_from, h->grads + done_from, (h->prev - done_from) * sizeof(float));
    h->prev = done_from;
}

static void run(unet *m, const float *params, const float *x, const float *eps, const int *t,
                const uint64_t *ids, size_t D, float *pred, float *grads, size_t P) {
    unet_rng r = {9, 3, ids};
    unet_forward(m, params, x, t, NULL, NB, &r, pred);
    float *dpred = xcalloc((size_t)NB * D, sizeof(float));
    mse_backward(dpred, pred, eps, (size_t)NB * D, 1.0f);
    memset(grads, 0, P * sizeof(float));
    unet_backward(m, params, grads, dpred);
    free(dpred);
}

int main(void) {
    config c;
    if (!test_check(config_load_file(&c, "configs/fashion_mnist.yaml") == 0, "load config"))
        return test_done();
    unet_options one = unet_options_default();
    one.lanes = 1;
    unet *m = unet_create(&c.model, NB, 1, &one);
    size_t P = unet_num_params(m);
    size_t D = (size_t)c.model.in_channels * c.model.image_size * c.model.image_size;
    float *params = xfloats(P), *noise = xfloats(P);
    unet_init(m, params, 1);
    /* move the 1e-10-initialised layers off zero so every path carries signal */
    rng_key kp = {2, 0, 0, 0};
    rng_normal(&kp, noise, P);
    for (size_t i = 0; i < P; i++) params[i] += 0.02f * noise[i];
    float *x = xfloats(NB * D), *eps = xfloats(NB * D);
    rng_key kx = {3, 0, 0, 0};
    rng_normal(&kx, x, NB * D);
    kx.sample = 1;
    rng_normal(&kx, eps, NB * D);
    int t[NB];
    uint64_t ids[NB];
    for (int i = 0; i < NB; i++) {
        t[i] = 100 * i + 7;
        ids[i] = (uint64_t)(40 + i);
    }
    float *pred1 = xfloats(NB * D), *g1 = xfloats(P), *pred = xfloats(NB * D), *g = xfloats(P);
    /* the model's 3x3 convs as shifted GEMMs, as Winograd, then every conv by
     * oneDNN (its primitives made per thread count: inside a lane, one): either
     * way, threads and lanes change nothing but rounding */
    static const conv_algo algos[3] = {CONV_ALGO_SHIFT, CONV_ALGO_WINOGRAD, CONV_ALGO_DNNL};
    static const char *const names[3] = {"", "winograd: ", "dnnl: "};
    for (int algo = 0; algo < 3; algo++) {
        unet_options o = one;
        o.conv.algo = algos[algo];
        const char *an = names[algo];
        blas_set_threads(1, 1);
        unet *mr = unet_create(&c.model, NB, 1, &o);
        run(mr, params, x, eps, t, ids, D, pred1, g1, P);
        unet_free(mr);
        for (int threads = 2; threads <= 3; threads++) {
            blas_set_threads(threads, 1);
            for (int lanes = 1; lanes <= threads; lanes += threads - 1) {
                o.lanes = lanes;
                unet *mt = unet_create(&c.model, NB, 1, &o);
                test_check(unet_num_lanes(mt) == lanes, "%smodel built with %d lane(s)", an, lanes);
                hook_log h = {g, xfloats(P), P, 0, 1};
                unet_set_backward_hook(mt, hook, &h);
                run(mt, params, x, eps, t, ids, D, pred, g, P);
                double eo = test_rel_err(pred, pred1, NB * D), eg = test_rel_err(g, g1, P);
                const char *how = lanes > 1 ? "lanes" : "threads in every op";
                test_check(eo < 1e-5, "%s%d %s: output equals the 1-thread output (rel err %.2e)",
                           an, threads, how, eo);
                test_check(eg < 1e-5, "%s%d %s: gradients equal the 1-thread ones (rel err %.2e)",
                           an, threads, how, eg);
                test_check(h.order_ok && h.prev == 0 && memcmp(h.seen, g, P * sizeof(float)) == 0,
                           "%s%d %s: the hook (%d calls, offsets falling to 0) saw every gradient "
                           "final", an, threads, how, h.calls);
                free(h.seen);
                unet_free(mt);
            }
        }
    }
    /* fewer images than lanes: the batch is split over as many lanes as images */
    blas_set_threads(3, 1);
    unet_options three = one;
    three.lanes = 3;
    unet *ml = unet_create(&c.model, NB, 1, &three);
    float *pred2 = xfloats(2 * D), *g2 = xfloats(P), *pred2r = xfloats(2 * D), *g2r = xfloats(P);
    unet_rng r2 = {9, 3, ids};
    unet_forward(ml, params, x, t, NULL, 2, &r2, pred2);
    unet_forward(m, params, x, t, NULL, 2, &r2, pred2r);
    float *dp2 = xcalloc(2 * D, sizeof(float));
    mse_backward(dp2, pred2r, eps, 2 * D, 1.0f);
    memset(g2, 0, P * sizeof(float));
    memset(g2r, 0, P * sizeof(float));
    unet_backward(ml, params, g2, dp2);
    unet_backward(m, params, g2r, dp2);
    test_check(test_rel_err(pred2, pred2r, 2 * D) < 1e-5 && test_rel_err(g2, g2r, P) < 1e-5,
               "3 lanes, batch of 2: output and gradients equal one lane's (%.2e, %.2e)",
               test_rel_err(pred2, pred2r, 2 * D), test_rel_err(g2, g2r, P));
    free(pred2); free(g2); free(pred2r); free(g2r); free(dp2);
    unet_free(ml);
    free(params); free(noise); free(x); free(eps); free(pred1); free(g1); free(pred); free(g);
    unet_free(m);
    return test_done();
}
