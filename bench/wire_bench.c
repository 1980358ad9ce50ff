/* Single-core costs that the scaling model (bench/scaling_model.py) builds on:
 * encode and decode-and-add throughput of each wire codec, and Adam + EMA per
 * parameter, on a gradient-like vector (medians over repeats).
 *   build/bench/wire_bench [N_FLOATS] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/optim/optim.h"
#include "common/rng/rng.h"
#include "common/wire/wire.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 4u << 20;
    enum { REPS = 7 };
    float *g = xfloats(n), *res = xfloats(n), *acc = xfloats(n);
    /* gradient-like: normal values with per-"tensor" scales spanning 4 decades */
    rng_key k = {1, 0, 0, RNG_PURPOSE_NOISE};
    rng_normal(&k, g, n);
    for (size_t i = 0; i < n; i++) g[i] *= (float)pow(10.0, -3.0 - (double)((i >> 14) % 5));
    wire_ctx *c = wire_ctx_create();
    printf("# %zu floats (%.1f MB fp32), one core, median of %d\n", n, n * 4 / 1e6, REPS);
    printf("%-10s %8s %12s %12s\n", "codec", "ratio", "encode GB/s", "decode GB/s");
    wire_codec codecs[3] = {CODEC_FP32, CODEC_FP32_ZSTD, CODEC_BF16_ZSTD};
    for (int ci = 0; ci < 3; ci++) {
        double te[REPS], td[REPS];
        size_t len = 0;
        uint8_t *copy = NULL;
        for (int r = 0; r < REPS; r++) {
            memset(res, 0, n * sizeof *res);
            const uint8_t *out = NULL;
            double t0 = now_seconds();
            if (wire_encode(c, codecs[ci], 1, g, res, n, &out, &len) != 0) {
                fprintf(stderr, "wire_bench: %s\n", err_msg());
                return 1;
            }
            te[r] = now_seconds() - t0;
            free(copy);
            copy = xmalloc(len);
            memcpy(copy, out, len);
            t0 = now_seconds();
            if (wire_decode_add(c, codecs[ci], copy, len, acc, n) != 0) {
                fprintf(stderr, "wire_bench: %s\n", err_msg());
                return 1;
            }
            td[r] = now_seconds() - t0;
        }
        free(copy);
        printf("%-10s %8.2f %12.3f %12.3f\n", wire_codec_name(codecs[ci]), n * 4.0 / (double)len,
               n * 4 / median(te, REPS) / 1e9, n * 4 / median(td, REPS) / 1e9);
    }
    float *p = xfloats(n), *m = xfloats(n), *v = xfloats(n), *ema = xfloats(n);
    optim_config oc = {2e-4, 0.9, 0.999, 1e-8, 0, 1.0, 0.9999};
    double tu[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = now_seconds();
        optim_adam(p, g, m, v, n, 2e-4, 1.0, &oc, (uint64_t)r + 1);
        optim_ema(ema, p, n, oc.ema_decay);
        tu[r] = now_seconds() - t0;
    }
    printf("adam+ema   %.2f ns/param\n", median(tu, REPS) / (double)n * 1e9);
    wire_ctx_free(c);
    free(g); free(res); free(acc); free(p); free(m); free(v); free(ema);
    return 0;
}
