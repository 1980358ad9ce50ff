/* Counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
 *
 * Every random number in training and sampling is a pure function of
 * (seed, step, sample index, purpose, position), so results do not depend on how
 * the batch is split across workers or threads, and a resumed run continues
 * exactly. There is no generator state to save; every function is thread-safe
 * and reads only its arguments.
 *
 * Mapping of a stream position onto Philox (normative: changing it changes every
 * run's numbers). Word i of the stream named by key k lives in block b = i / 4,
 * word i % 4 of Philox4x32-10(counter, pkey) with
 *     counter[0] = lo32(b)
 *     counter[1] = k.purpose
 *     counter[2] = lo32(k.sample)
 *     counter[3] = lo32(k.step)
 *     pkey[0]    = lo32(k.seed) ^ (hi32(k.step) * 0x9E3779B9)
 *     pkey[1]    = hi32(k.seed) ^ (hi32(k.sample) * 0x85EBCA6B) ^ (hi32(b) * 0xC2B2AE35)
 * (products mod 2^32). For step, sample and block below 2^32 the high halves are
 * zero, pkey is the seed itself and the counter is a bijection of
 * (block, purpose, sample, step): distinct tuples never share a block. The high
 * halves are folded into the key only so that larger values still give different
 * (not aliased) streams for typical seeds.
 *
 * One stream (one rng_key) should be used for one kind of draw: rng_uniform,
 * rng_normal and rng_below read the same words in different ways. */
#ifndef DDPM_RNG_H
#define DDPM_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Purposes keep streams apart. Dropout layers use RNG_DROPOUT + layer index. */
enum {
    RNG_PURPOSE_NOISE = 1,      /* epsilon of Algorithm 1 */
    RNG_PURPOSE_TIMESTEP = 2,   /* t of Algorithm 1 */
    RNG_PURPOSE_FLIP = 3,       /* random horizontal flip */
    RNG_PURPOSE_PERMUTATION = 4,/* per-epoch data order */
    RNG_PURPOSE_SAMPLE_INIT = 5,/* x_T of the sampler */
    RNG_PURPOSE_SAMPLE_STEP = 6,/* z of each sampler step */
    RNG_PURPOSE_INIT = 7,       /* weight initialisation */
    RNG_PURPOSE_EVAL = 8,       /* evaluation (bits/dim) noise */
    RNG_PURPOSE_LABEL_DROP = 9, /* label dropout (null label for guidance) */
    RNG_PURPOSE_DROPOUT = 1024  /* + layer index */
};

typedef struct {
    uint64_t seed;
    uint64_t step;
    uint64_t sample;
    uint32_t purpose;
} rng_key;

/* One Philox4x32-10 block (10 rounds, multipliers 0xD2511F53 / 0xCD9E8D57,
 * Weyl key increments 0x9E3779B9 / 0xBB67AE85). All arrays are the caller's. */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* The Philox counter and key of block `block` of the stream (the mapping above);
 * exposed so that tests can check it is collision-free. */
void rng_block_input(const rng_key *key, uint64_t block, uint32_t ctr[4], uint32_t pkey[2]);

/* The i-th 32-bit word of the stream named by key. */
uint32_t rng_u32(const rng_key *key, uint64_t i);

/* n uniforms in [0, 1): out[j] = (word j >> 8) * 2^-24 (24-bit resolution, never 1).
 * out is the caller's, n floats. */
void rng_uniform(const rng_key *key, float *out, size_t n);

/* n standard normals, out the caller's. Normals 2m and 2m+1 come from block m:
 * u1 = (((w0 << 32 | w1) >> 11) + 0.5) * 2^-53 in (0, 1) (never 0, so log is
 * finite; |z| <= 8.6), u2 = ((w2 << 32 | w3) >> 11) * 2^-53 in [0, 1), and
 * Box-Muller in double: r = sqrt(-2 ln u1), out[2m] = r cos(2 pi u2),
 * out[2m+1] = r sin(2 pi u2). Normal j does not depend on n. */
void rng_normal(const rng_key *key, float *out, size_t n);

/* Uniform integer in [0, bound) for the stream's i-th draw, unbiased: Lemire's
 * multiply-shift with rejection. Draw i tries the words of block i, then of
 * blocks i + 2^32, i + 2*2^32, ... until one is accepted (rejection probability
 * per word < bound / 2^32). Needs i < 2^32 for draws not to overlap.
 * bound 0 or 1 returns 0. */
uint32_t rng_below(const rng_key *key, uint64_t i, uint32_t bound);

/* A uniformly random permutation of 0..n-1 into perm (caller's, n entries):
 * Fisher-Yates from the top, position j (n-1 down to 1) swapped with
 * rng_below(key, j, j + 1). */
void rng_permutation(const rng_key *key, uint32_t *perm, uint32_t n);

#endif
