/* Function multi-versioning for hot element-wise kernels (common/ops, the
 * Philox batch in common/rng).
 *
 * The library is built for baseline x86-64 (4-wide SSE) so that one binary runs
 * on every node; a function marked DDPM_CLONES is also compiled for x86-64-v3
 * (AVX2, 8-wide) and x86-64-v4 (AVX-512, 16-wide), and the loader picks the
 * widest the CPU has (an ifunc). The build uses ISO C (-std=c11), so gcc never
 * contracts a*b+c into an FMA, and float sums keep explicit partial-sum lanes
 * (common/ops/ops_internal.h): every clone computes bit-identical results, only
 * faster. OpenMP outlines the bodies of parallel loops into functions of their
 * own that would not be cloned, so a cloned kernel is called from inside the
 * parallel loop, one task at a time. Other compilers (clang builds the
 * fuzzers), or -DDDPM_NO_CLONES, get the baseline function only. */
#ifndef DDPM_CLONES_H
#define DDPM_CLONES_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DDPM_NO_CLONES)
#define DDPM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DDPM_CLONES
#endif

#endif
