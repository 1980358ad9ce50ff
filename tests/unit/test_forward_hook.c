/* The forward hook (unet_set_forward_hook) lets a distributed worker start the next
 * forward while later parameter chunks still arrive: before each layer it names how
 * far the parameters must be in place. Simulated here: the parameter buffer starts
 * as NaN and the hook copies the real parameters in only up to what it is asked
 * for. If any layer read a parameter beyond what its hook call asked for, the NaN
 * would reach the output; the output must instead equal, bit for bit, the forward
 * over the whole buffer, the asks must only grow, and the last must be n_params.
 * With lanes the hook is asked once for everything. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/config/config.h"
#include "common/core/blas_setup.h"
#include "common/core/util.h"
#include "common/model/unet.h"
#include "common/rng/rng.h"
#include "tests/unit/test.h"

#define NB 2

typedef struct {
    const float *real;
    float *buf;
    size_t have;
    int calls, order_ok;
} arrival;

static void arrive(void *ctx, size_t ready_to) {
    arrival *a = ctx;
    a->calls++;
    if (ready_to < a->have) a->order_ok = 0;
    if (ready_to > a->have) {
        memcpy(a->buf + a->have, a->real + a->have, (ready_to - a->have) * sizeof(float));
        a->have = ready_to;
    }
}

static void check(const config *c, int lanes, const float *params, const float *x, const int *t,
                  const uint64_t *ids, size_t P, size_t D) {
    unet_options o = unet_options_default();
    o.lanes = lanes;
    unet *m = unet_create(&c->model, NB, 1, &o);
    test_check(unet_num_lanes(m) == lanes, "model built with %d lane(s)", lanes);
    float *buf = xfloats(P), *out = xfloats(NB * D), *ref = xfloats(NB * D);
    unet_rng r = {9, 3, ids};
    unet_forward(m, params, x, t, NULL, NB, &r, ref);
    for (size_t i = 0; i < P; i++) buf[i] = NAN;
    arrival a = {params, buf, 0, 0, 1};
    unet_set_forward_hook(m, arrive, &a);
    unet_forward(m, buf, x, t, NULL, NB, &r, out);
    test_check(memcmp(out, ref, NB * D * sizeof(float)) == 0,
               "%d lane(s): forward with parameters arriving as the hook asks equals the forward "
               "over all of them, bit for bit", lanes);
    test_check(a.order_ok && a.have == P, "%d lane(s): %d hook calls, asks only grow, the last "
               "is n_params (%zu of %zu)", lanes, a.calls, a.have, P);
    if (lanes == 1)
        test_check(a.calls > 10, "one lane: asked before every layer (%d calls)", a.calls);
    /* removed: the next forward does not call it */
    unet_set_forward_hook(m, NULL, NULL);
    int before = a.calls;
    unet_forward(m, params, x, t, NULL, NB, &r, out);
    test_check(a.calls == before, "%d lane(s): a removed hook is not called", lanes);
    free(buf);
    free(out);
    free(ref);
    unet_free(m);
}

int main(void) {
    config c;
    if (!test_check(config_load_file(&c, "configs/tiny_fashion.yaml") == 0, "load config"))
        return test_done();
    blas_set_threads(2, 1);
    unet_options one = unet_options_default();
    one.lanes = 1;
    unet *m = unet_create(&c.model, NB, 1, &one);
    size_t P = unet_num_params(m);
    size_t D = (size_t)c.model.in_channels * c.model.image_size * c.model.image_size;
    float *params = xfloats(P), *x = xfloats(NB * D);
    unet_init(m, params, 1);
    unet_free(m);
    rng_key k = {5, 0, 0, 0};
    rng_normal(&k, x, NB * D);
    int t[NB] = {17, 640};
    uint64_t ids[NB] = {3, 4};
    check(&c, 1, params, x, t, ids, P, D);
    check(&c, 2, params, x, t, ids, P, D);
    free(params);
    free(x);
    return test_done();
}
