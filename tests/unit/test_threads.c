/* The ops parallelise with OpenMP and split GEMMs over threads
 * (common/ops/ops_internal.h): a training forward + backward of the fashion_mnist
 * U-Net must give the same output and gradients with 1 thread and with 2 and 3
 * threads, up to float rounding. The 1-thread run is the reference: there every
 * loop is the plain serial one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/config/config.h"
#include "common/core/blas_setup.h"
#include "common/core/util.h"
#include "common/model/unet.h"
#include "common/ops/ops.h"
#include "common/rng/rng.h"
#include "test.h"

#define NB 6

static void run(unet *m, const float *params, const float *x, const float *eps, const int *t,
                const uint64_t *ids, size_t D, float *pred, float *grads, size_t P) {
    unet_rng r = {9, 3, ids};
    unet_forward(m, params, x, t, NB, &r, pred);
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
    unet *m = unet_create(&c.model, NB, 1);
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
    blas_set_threads(1, 1);
    run(m, params, x, eps, t, ids, D, pred1, g1, P);
    for (int threads = 2; threads <= 3; threads++) {
        blas_set_threads(threads, 1);
        run(m, params, x, eps, t, ids, D, pred, g, P);
        double eo = test_rel_err(pred, pred1, NB * D), eg = test_rel_err(g, g1, P);
        test_check(eo < 1e-5, "%d threads: output equals the 1-thread output (rel err %.2e)",
                   threads, eo);
        test_check(eg < 1e-5, "%d threads: gradients equal the 1-thread ones (rel err %.2e)",
                   threads, eg);
    }
    free(params); free(noise); free(x); free(eps); free(pred1); free(g1); free(pred); free(g);
    unet_free(m);
    return test_done();
}
