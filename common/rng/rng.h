/* Counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
 *
 * Every random number in training and sampling is a pure function of
 * (seed, step, sample index, purpose, position), so results do not depend on how
 * the batch is split across workers or threads, and a resumed run continues
 * exactly. There is no generator state to save. */
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
    RNG_PURPOSE_DROPOUT = 1024  /* + layer index */
};

typedef struct {
    uint64_t seed;
    uint64_t step;
    uint64_t sample;
    uint32_t purpose;
} rng_key;

/* One Philox4x32-10 block. */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* The i-th 32-bit word of the stream named by key. */
uint32_t rng_u32(const rng_key *key, uint64_t i);
/* n uniforms in [0, 1) (24-bit resolution, never 1). */
void rng_uniform(const rng_key *key, float *out, size_t n);
/* n standard normals (Box-Muller in double). */
void rng_normal(const rng_key *key, float *out, size_t n);
/* Uniform integer in [0, bound) for the stream's i-th draw (rejection, unbiased). */
uint32_t rng_below(const rng_key *key, uint64_t i, uint32_t bound);
/* A permutation of 0..n-1 (Fisher-Yates driven by the stream). */
void rng_permutation(const rng_key *key, uint32_t *perm, uint32_t n);

#endif
