/* Philox4x32-10 and the stream helpers built on it (see rng.h for the mapping). */
#include "common/rng/rng.h"

#include "common/core/clones.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        /* The key bump between rounds; after the last one it would be unused. */
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void rng_block_input(const rng_key *key, uint64_t block, uint32_t ctr[4], uint32_t pkey[2]) {
    ctr[0] = (uint32_t)block;
    ctr[1] = key->purpose;
    ctr[2] = (uint32_t)key->sample;
    ctr[3] = (uint32_t)key->step;
    /* Odd multipliers keep a high half of 1 away from small seeds like 1 or 2. */
    pkey[0] = (uint32_t)key->seed ^ ((uint32_t)(key->step >> 32) * 0x9E3779B9u);
    pkey[1] = (uint32_t)(key->seed >> 32) ^ ((uint32_t)(key->sample >> 32) * 0x85EBCA6Bu) ^
              ((uint32_t)(block >> 32) * 0xC2B2AE35u);
}

static void stream_block(const rng_key *key, uint64_t block, uint32_t out[4]) {
    uint32_t ctr[4], pkey[2];
    rng_block_input(key, block, ctr, pkey);
    philox4x32_10(ctr, pkey, out);
}

uint32_t rng_u32(const rng_key *key, uint64_t i) {
    uint32_t w[4];
    stream_block(key, i / 4, w);
    return w[i % 4];
}

/* Blocks b0 .. b0+RNG_BATCH-1 of one stream at once, word j of block b0+l in
 * w[j][l]: the same arithmetic as philox4x32_10, one lane per block, which gcc
 * vectorises (widening 32x32 -> 64-bit multiplies). b0 is a multiple of
 * RNG_BATCH, so hi32(block), and with it the Philox key, is the same for the
 * whole batch. Cloned for AVX2 and AVX-512 (common/core/clones.h); integer
 * arithmetic, so every clone is exact. */
#define RNG_BATCH 16
DDPM_CLONES
static void stream_batch(const rng_key *key, uint64_t b0, uint32_t w[4][RNG_BATCH]) {
    uint32_t ctr[4], pkey[2];
    rng_block_input(key, b0, ctr, pkey);
    uint32_t c0[RNG_BATCH], c1[RNG_BATCH], c2[RNG_BATCH], c3[RNG_BATCH];
    for (int l = 0; l < RNG_BATCH; l++) {
        c0[l] = ctr[0] + (uint32_t)l;
        c1[l] = ctr[1];
        c2[l] = ctr[2];
        c3[l] = ctr[3];
    }
    uint32_t k0 = pkey[0], k1 = pkey[1];
    for (int r = 0; r < 10; r++) {
        for (int l = 0; l < RNG_BATCH; l++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * c0[l];
            uint64_t p1 = (uint64_t)PHILOX_M1 * c2[l];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0;
            uint32_t n1 = (uint32_t)p1;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
            uint32_t n3 = (uint32_t)p0;
            c0[l] = n0; c1[l] = n1; c2[l] = n2; c3[l] = n3;
        }
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    for (int l = 0; l < RNG_BATCH; l++) {
        w[0][l] = c0[l]; w[1][l] = c1[l]; w[2][l] = c2[l]; w[3][l] = c3[l];
    }
}

void rng_uniform(const rng_key *key, float *out, size_t n) {
    const size_t nb = (n + 3) / 4; /* blocks */
    size_t b = 0;
    uint32_t w[4][RNG_BATCH];
    for (; b + RNG_BATCH <= nb && (b + RNG_BATCH) * 4 <= n; b += RNG_BATCH) {
        stream_batch(key, b, w);
        float *o = out + b * 4;
        for (int l = 0; l < RNG_BATCH; l++)
            for (int j = 0; j < 4; j++)
                o[4 * l + j] = (float)(w[j][l] >> 8) * (1.0f / 16777216.0f);
    }
    uint32_t v[4];
    for (; b < nb; b++) {
        stream_block(key, b, v);
        for (size_t j = 0; j < 4 && b * 4 + j < n; j++)
            out[b * 4 + j] = (float)(v[j] >> 8) * (1.0f / 16777216.0f);
    }
}

void rng_normal(const rng_key *key, float *out, size_t n) {
    const double two_pi = 6.283185307179586476925286766559;
    uint32_t w[4];
    for (size_t b = 0; b * 2 < n; b++) {
        stream_block(key, b, w);
        uint64_t a = ((uint64_t)w[0] << 32 | w[1]) >> 11;
        uint64_t c = ((uint64_t)w[2] << 32 | w[3]) >> 11;
        /* The half-step offset keeps u1 strictly positive: log(u1) is finite. */
        double u1 = ((double)a + 0.5) * 0x1p-53;
        double u2 = (double)c * 0x1p-53;
        double r = sqrt(-2.0 * log(u1));
        double th = two_pi * u2;
        out[2 * b] = (float)(r * cos(th));
        if (2 * b + 1 < n) out[2 * b + 1] = (float)(r * sin(th));
    }
}

uint32_t rng_below(const rng_key *key, uint64_t i, uint32_t bound) {
    if (bound <= 1) return 0;
    /* Reject the low products that would make some results one count more likely. */
    uint32_t threshold = (uint32_t)(-bound) % bound;
    uint32_t w[4];
    for (uint64_t attempt = 0;; attempt++) {
        stream_block(key, i + (attempt << 32), w);
        for (int j = 0; j < 4; j++) {
            uint64_t m = (uint64_t)w[j] * bound;
            if ((uint32_t)m >= threshold) return (uint32_t)(m >> 32);
        }
    }
}

void rng_permutation(const rng_key *key, uint32_t *perm, uint32_t n) {
    for (uint32_t j = 0; j < n; j++) perm[j] = j;
    for (uint32_t j = n; j-- > 1;) {
        uint32_t k = rng_below(key, j, j + 1);
        uint32_t tmp = perm[j];
        perm[j] = perm[k];
        perm[k] = tmp;
    }
}
