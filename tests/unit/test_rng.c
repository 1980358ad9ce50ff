/* Tests of common/rng: Philox4x32-10 known answers (Random123 kat_vectors),
 * the documented stream mapping, statistics of uniforms and normals, stream
 * independence, unbiased bounded integers and permutations. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/rng/rng.h"
#include "tests/unit/test.h"

static void test_kat(void) {
    /* Published Philox4x32-10 known-answer vectors (Random123 kat_vectors). */
    static const struct {
        uint32_t ctr[4], key[2], out[4];
        const char *name;
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}, "zeros"},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}, "ones"},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}, "pi digits"},
    };
    for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
        uint32_t out[4];
        philox4x32_10(kat[k].ctr, kat[k].key, out);
        test_check(memcmp(out, kat[k].out, sizeof out) == 0,
                   "philox4x32_10 known answer (%s): got %08x %08x %08x %08x", kat[k].name,
                   out[0], out[1], out[2], out[3]);
    }
}

static void test_mapping(void) {
    rng_key k = {.seed = 0x0123456789abcdefULL, .step = 77, .sample = 5, .purpose = 3};
    uint32_t ctr[4], pk[2];
    rng_block_input(&k, 9, ctr, pk);
    test_check(ctr[0] == 9 && ctr[1] == 3 && ctr[2] == 5 && ctr[3] == 77 &&
                   pk[0] == 0x89abcdefu && pk[1] == 0x01234567u,
               "block input follows the documented mapping for small values");
    int ok = 1;
    for (uint64_t i = 0; i < 64; i++) {
        uint32_t w[4];
        rng_block_input(&k, i / 4, ctr, pk);
        philox4x32_10(ctr, pk, w);
        if (rng_u32(&k, i) != w[i % 4]) ok = 0;
    }
    test_check(ok, "rng_u32(i) is word i%%4 of block i/4");

    /* Distinct (step, sample, purpose, block) tuples must give distinct Philox inputs,
     * including tuples that swap values between fields. */
    const uint64_t vals[] = {0, 1, 2, 0xffffffffULL};
    enum { NV = 4, NT = NV * NV * NV * NV };
    uint32_t in[NT][6];
    int n = 0;
    for (int a = 0; a < NV; a++)
        for (int b = 0; b < NV; b++)
            for (int c = 0; c < NV; c++)
                for (int d = 0; d < NV; d++) {
                    rng_key kk = {.seed = 42, .step = vals[a], .sample = vals[b],
                                  .purpose = (uint32_t)vals[c]};
                    rng_block_input(&kk, vals[d], in[n], in[n] + 4);
                    n++;
                }
    int collisions = 0;
    for (int i = 0; i < NT; i++)
        for (int j = i + 1; j < NT; j++)
            if (memcmp(in[i], in[j], sizeof in[i]) == 0) collisions++;
    test_check(collisions == 0, "no two of %d (step, sample, purpose, block) tuples share a "
               "Philox input (%d collisions)", NT, collisions);

    /* Values past 2^32 must not alias the low half. */
    rng_key lo = {.seed = 1, .step = 5, .sample = 7, .purpose = 1};
    rng_key hs = lo, hm = lo;
    hs.step += 1ULL << 32;
    hm.sample += 1ULL << 32;
    test_check(rng_u32(&lo, 0) != rng_u32(&hs, 0) && rng_u32(&lo, 0) != rng_u32(&hm, 0) &&
                   rng_u32(&hs, 0) != rng_u32(&hm, 0) && rng_u32(&lo, 3) != rng_u32(&lo, 3 + (4ULL << 32)),
               "step, sample and block high halves change the stream");
}

static void test_uniform(void) {
    /* not a multiple of 4 or of the 16-block batches: the tail is exercised */
    const size_t n = 1000003;
    float *u = xfloats(n);
    rng_key k = {.seed = 12345, .step = 3, .sample = 1, .purpose = RNG_PURPOSE_FLIP};
    rng_uniform(&k, u, n);
    double s = 0, s2 = 0;
    float lo = 1, hi = 0;
    int exact = 1;
    for (size_t i = 0; i < n; i++) {
        s += u[i];
        s2 += (double)u[i] * u[i];
        if (u[i] < lo) lo = u[i];
        if (u[i] > hi) hi = u[i];
        if ((i < 1000 || i + 1000 >= n) && u[i] != (float)(rng_u32(&k, i) >> 8) / 16777216.0f)
            exact = 0;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    test_check(lo >= 0.0f && hi < 1.0f, "uniforms in [0, 1): min %g max %.9g", lo, hi);
    /* sd of the mean: sqrt(1/12 / n) = 2.9e-4; of the variance: sqrt(1/180 / n) = 7.5e-5. */
    test_check(fabs(mean - 0.5) < 5 * 2.9e-4, "uniform mean %.6f near 0.5", mean);
    test_check(fabs(var - 1.0 / 12) < 5 * 7.5e-5, "uniform variance %.6f near 1/12", var);
    test_check(exact, "uniform j is (word j >> 8) * 2^-24 (first and last 1000)");
    /* short streams, and lengths around the batch of 64 words */
    const size_t lens[] = {1, 3, 7, 63, 64, 65, 130};
    int short_exact = 1;
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        float v[130];
        rng_uniform(&k, v, lens[li]);
        for (size_t i = 0; i < lens[li]; i++)
            if (v[i] != u[i]) short_exact = 0;
    }
    test_check(short_exact, "a shorter draw is a prefix of the longer one (1..130 words)");
    free(u);
}

static void test_normal(void) {
    const size_t n = 1000000;
    float *z = xfloats(n);
    rng_key k = {.seed = 7, .step = 100, .sample = 9, .purpose = RNG_PURPOSE_NOISE};
    rng_normal(&k, z, n);
    double s = 0, s2 = 0, s4 = 0, zmax = 0;
    size_t within1 = 0, finite = 0;
    for (size_t i = 0; i < n; i++) {
        double v = z[i];
        if (isfinite(v)) finite++;
        s += v;
        s2 += v * v;
        s4 += v * v * v * v;
        if (fabs(v) < 1) within1++;
        if (fabs(v) > zmax) zmax = fabs(v);
    }
    double mean = s / n, var = s2 / n - mean * mean, kurt = s4 / n;
    double p1 = (double)within1 / n;
    test_check(finite == n, "all %zu normals finite (max |z| %.3f)", n, zmax);
    /* sd of the mean 1e-3, of the variance sqrt(2/n) = 1.41e-3, of E z^4 sqrt(96/n) = 9.8e-3. */
    test_check(fabs(mean) < 5e-3, "normal mean %.5f near 0", mean);
    test_check(fabs(var - 1) < 5 * 1.41e-3, "normal variance %.5f near 1", var);
    test_check(fabs(kurt - 3) < 5 * 9.8e-3, "normal fourth moment %.4f near 3", kurt);
    /* P(|z| < 1) = erf(1/sqrt 2) = 0.682689; sd sqrt(p(1-p)/n) = 4.65e-4. */
    test_check(fabs(p1 - erf(1 / sqrt(2.0))) < 5 * 4.65e-4, "P(|z|<1) = %.5f near 0.68269", p1);

    float again[1001];
    rng_normal(&k, again, 1001);
    test_check(memcmp(again, z, sizeof again) == 0,
               "normals are deterministic and normal j does not depend on n (odd n)");

    /* Box-Muller from block m, written out independently here. */
    int ok = 1;
    for (size_t m = 0; m < 50; m++) {
        uint32_t w[4];
        for (int j = 0; j < 4; j++) w[j] = rng_u32(&k, 4 * m + (uint64_t)j);
        double u1 = ((double)((((uint64_t)w[0] << 32) | w[1]) >> 11) + 0.5) / 9007199254740992.0;
        double u2 = (double)((((uint64_t)w[2] << 32) | w[3]) >> 11) / 9007199254740992.0;
        double r = sqrt(-2 * log(u1));
        if (fabs(z[2 * m] - r * cos(2 * M_PI * u2)) > 1e-6 * (1 + r) ||
            fabs(z[2 * m + 1] - r * sin(2 * M_PI * u2)) > 1e-6 * (1 + r))
            ok = 0;
    }
    test_check(ok, "normals 2m, 2m+1 are Box-Muller of block m");
    /* The smallest u1 the scheme can produce keeps the radius finite. */
    double rmax = sqrt(-2 * log(0.5 * 0x1p-53));
    test_check(isfinite(rmax) && rmax < 8.7, "largest possible |z| %.3f is finite", rmax);
    free(z);
}

static double correlation(const float *a, const float *b, size_t n) {
    double sa = 0, sb = 0, sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) {
        sa += a[i]; sb += b[i];
        sab += (double)a[i] * b[i];
        saa += (double)a[i] * a[i];
        sbb += (double)b[i] * b[i];
    }
    double ca = saa - sa * sa / n, cb = sbb - sb * sb / n, cab = sab - sa * sb / n;
    return cab / sqrt(ca * cb);
}

static void test_independence(void) {
    const size_t n = 200000;
    float *a = xfloats(n), *b = xfloats(n);
    rng_key base = {.seed = 99, .step = 10, .sample = 4, .purpose = RNG_PURPOSE_NOISE};
    rng_normal(&base, a, n);
    const struct { const char *what; rng_key k; } other[] = {
        {"purpose", {.seed = 99, .step = 10, .sample = 4, .purpose = RNG_PURPOSE_SAMPLE_STEP}},
        {"sample", {.seed = 99, .step = 10, .sample = 5, .purpose = RNG_PURPOSE_NOISE}},
        {"step", {.seed = 99, .step = 11, .sample = 4, .purpose = RNG_PURPOSE_NOISE}},
        {"seed", {.seed = 100, .step = 10, .sample = 4, .purpose = RNG_PURPOSE_NOISE}},
        {"swapped step/sample", {.seed = 99, .step = 4, .sample = 10, .purpose = RNG_PURPOSE_NOISE}},
    };
    /* |r| of independent streams has sd 1/sqrt(n) = 2.2e-3. */
    double bound = 5 / sqrt((double)n);
    for (size_t j = 0; j < sizeof other / sizeof other[0]; j++) {
        rng_normal(&other[j].k, b, n);
        double r = correlation(a, b, n);
        size_t same = 0;
        for (size_t i = 0; i < n; i++) same += a[i] == b[i];
        test_check(fabs(r) < bound && same < 10,
                   "streams differing in %s uncorrelated (r = %.5f, %zu equal values)",
                   other[j].what, r, same);
    }
    double lag = correlation(a, a + 1, n - 1), lag2 = correlation(a, a + 2, n - 2);
    test_check(fabs(lag) < bound && fabs(lag2) < bound,
               "lag-1 and lag-2 autocorrelation small (%.5f, %.5f)", lag, lag2);
    rng_normal(&base, b, n);
    test_check(memcmp(a, b, n * sizeof *a) == 0, "same key gives the same stream");
    free(a);
    free(b);
}

static void test_below(void) {
    rng_key k = {.seed = 5, .step = 0, .sample = 0, .purpose = RNG_PURPOSE_TIMESTEP};
    test_check(rng_below(&k, 3, 0) == 0 && rng_below(&k, 3, 1) == 0, "bound 0 and 1 give 0");

    /* Small bound: every value within 5 sd of n/bound. */
    enum { B = 10 };
    const uint32_t n = 1000000;
    uint32_t count[B] = {0};
    int in_range = 1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t v = rng_below(&k, i, B);
        if (v >= B) in_range = 0; else count[v]++;
    }
    double sd = sqrt(n * 0.1 * 0.9);
    int flat = 1;
    for (int v = 0; v < B; v++)
        if (fabs(count[v] - n / 10.0) > 5 * sd) flat = 0;
    test_check(in_range && flat, "rng_below(10): in range, counts flat (%u .. %u)", count[0], count[9]);

    /* bound = 3 * 2^30 rejects 1/4 of words: a modulo-biased draw would put half of the
     * mass below 2^30 (unbiased: 1/3); an unrejected multiply-shift would make
     * multiples of 3 half of all results (unbiased: 1/3). */
    const uint32_t big = 3u << 30;
    uint32_t below = 0, mult3 = 0;
    in_range = 1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t v = rng_below(&k, i, big);
        if (v >= big) in_range = 0;
        below += v < (1u << 30);
        mult3 += v % 3 == 0;
    }
    double sd3 = sqrt(n * (1.0 / 3) * (2.0 / 3)) / n;
    test_check(in_range, "rng_below(3*2^30) in range");
    test_check(fabs((double)below / n - 1.0 / 3) < 5 * sd3,
               "rng_below(3*2^30): P(v < 2^30) = %.5f near 1/3", (double)below / n);
    test_check(fabs((double)mult3 / n - 1.0 / 3) < 5 * sd3,
               "rng_below(3*2^30): P(v %% 3 == 0) = %.5f near 1/3", (double)mult3 / n);

    /* A power of two never rejects: the draw is the top bits of the block's first word. */
    int ok = 1;
    for (uint32_t i = 0; i < 100; i++)
        if (rng_below(&k, i, 1u << 31) != rng_u32(&k, 4 * (uint64_t)i) >> 1) ok = 0;
    test_check(ok, "rng_below(2^31, i) is word 0 of block i shifted by 1");
}

static void test_permutation(void) {
    enum { N = 1000 };
    uint32_t *p = xmalloc(N * sizeof *p), *q = xmalloc(N * sizeof *q);
    char seen[N] = {0};
    rng_key k = {.seed = 3, .step = 1, .sample = 0, .purpose = RNG_PURPOSE_PERMUTATION};
    rng_permutation(&k, p, N);
    int ok = 1, fixed = 0;
    for (int i = 0; i < N; i++) {
        if (p[i] >= N || seen[p[i]]) ok = 0; else seen[p[i]] = 1;
        fixed += p[i] == (uint32_t)i;
    }
    test_check(ok, "rng_permutation(1000) is a permutation");
    test_check(fixed < 10, "rng_permutation(1000) is shuffled (%d fixed points)", fixed);
    rng_permutation(&k, q, N);
    test_check(memcmp(p, q, N * sizeof *p) == 0, "rng_permutation is deterministic");
    k.step = 2;
    rng_permutation(&k, q, N);
    test_check(memcmp(p, q, N * sizeof *p) != 0, "another key gives another permutation");
    uint32_t one = 99;
    rng_permutation(&k, &one, 1);
    rng_permutation(&k, NULL, 0);
    test_check(one == 0, "permutation of 1 element, and of 0, work");

    /* All 6 orders of 3 elements equally likely over many keys. */
    const int trials = 60000;
    int count[6] = {0};
    for (int s = 0; s < trials; s++) {
        rng_key kk = {.seed = 11, .step = 0, .sample = (uint64_t)s, .purpose = RNG_PURPOSE_PERMUTATION};
        uint32_t r[3];
        rng_permutation(&kk, r, 3);
        count[r[0] * 2 + (r[1] > r[2])]++;
    }
    double sd = sqrt(trials * (1.0 / 6) * (5.0 / 6));
    int flat = 1;
    for (int i = 0; i < 6; i++)
        if (fabs(count[i] - trials / 6.0) > 5 * sd) flat = 0;
    test_check(flat, "the 6 permutations of 3 are equally likely (%d %d %d %d %d %d)", count[0],
               count[1], count[2], count[3], count[4], count[5]);
    free(p);
    free(q);
}

int main(void) {
    test_kat();
    test_mapping();
    test_uniform();
    test_normal();
    test_independence();
    test_below();
    test_permutation();
    return test_done();
}
