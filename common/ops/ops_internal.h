/* Private helpers shared by the op files (not part of the public API).
 *
 * gcc -O3 without -ffast-math never vectorises a float reduction (it may not
 * reassociate). These helpers keep OPS_LANES independent float partial sums,
 * which gcc does vectorise, and fold them into a double every OPS_BLOCK
 * elements so that long sums (up to 4 x 65536 values in a GroupNorm group)
 * keep close to double accuracy. */
#ifndef DDPM_OPS_INTERNAL_H
#define DDPM_OPS_INTERNAL_H

#include <stddef.h>

#include <cblas.h>

#include "common/core/prof.h"

#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Threading model (see docs/performance.md): OpenBLAS runs single-threaded
 * (blas_set_threads) and every op parallelises with OpenMP itself, GEMMs
 * included: ops_sgemm splits C into one column (or row) slab per thread, each a
 * single-threaded cblas_sgemm. One thread pool then serves the whole step, so
 * BLAS worker threads never compete with OpenMP workers for the cores. Every
 * output element is still computed by one thread in a fixed order, so results do
 * not depend on the thread count beyond GEMM kernel rounding. */
static inline int ops_threads(void) {
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

/* Cloned kernels: DDPM_CLONES (common/core/clones.h). */
#include "common/core/clones.h"

/* Work (in floats touched) below which a loop is not worth a parallel region. */
#define OPS_PAR_MIN 32768

/* Row-major cblas_sgemm, split over threads, timed under PROF_GEMM. */
static inline void ops_sgemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N,
                             int K, float alpha, const float *A, int lda, const float *B,
                             int ldb, float beta, float *C, int ldc) {
    const double t0 = prof_begin();
    /* A program that left OpenBLAS multi-threaded (no blas_set_threads) gets its
     * threads instead of ours: never both at once. */
    int T = openblas_get_num_threads() == 1 ? ops_threads() : 1;
    const double flops = 2.0 * M * (double)N * K;
    if (T > 1 && flops < 2e6) T = 1; /* too small to share */
    if (T > 1 && N >= 32 * T) {
        /* column slabs, multiples of 16 columns (whole SIMD panels) */
        int per = ((N + T - 1) / T + 15) / 16 * 16;
#pragma omp parallel for num_threads(T) schedule(static, 1)
        for (int i = 0; i < T; i++) {
            int j0 = i * per, j1 = j0 + per < N ? j0 + per : N;
            if (j0 >= j1) continue;
            const float *Bi = tb == CblasNoTrans ? B + j0 : B + (size_t)j0 * ldb;
            cblas_sgemm(CblasRowMajor, ta, tb, M, j1 - j0, K, alpha, A, lda, Bi, ldb, beta,
                        C + j0, ldc);
        }
    } else if (T > 1 && M >= 16 * T) {
        int per = ((M + T - 1) / T + 7) / 8 * 8;
#pragma omp parallel for num_threads(T) schedule(static, 1)
        for (int i = 0; i < T; i++) {
            int i0 = i * per, i1 = i0 + per < M ? i0 + per : M;
            if (i0 >= i1) continue;
            const float *Ai = ta == CblasNoTrans ? A + (size_t)i0 * lda : A + i0;
            cblas_sgemm(CblasRowMajor, ta, tb, i1 - i0, N, K, alpha, Ai, lda, B, ldb, beta,
                        C + (size_t)i0 * ldc, ldc);
        }
    } else {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    }
    prof_end(PROF_GEMM, t0);
}

/* expf to about 2 ulp, written without branches or calls so that gcc
 * vectorises the loops that use it (libm's expf is a scalar call). It is
 * computed on x clamped to [-87, 88] (so 2^k stays a normal float); outside that
 * range it returns +inf above 88 and 0 below -87 (e^-87 = 1.6e-38, the edge of
 * the normal range), which is what SiLU and softmax need. NaN stays NaN (the
 * comparisons are false) and is never converted to an integer: the exponent comes
 * from the 1.5 * 2^23 rounding trick on the float bits. */
static inline float ops_expf(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    xc = xc > 88.0f ? 88.0f : xc;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float kf = xc * 1.44269504088896341f + shifter;
    uint32_t kbits;
    memcpy(&kbits, &kf, sizeof kbits);
    kf -= shifter; /* k = round(x / ln 2) */
    /* r = x - k ln2 in two steps (Cody-Waite), |r| <= ln2 / 2 */
    float r = xc - kf * 0.693145751953125f;
    r = r - kf * 1.428606765330187045e-06f;
    /* e^r = 1 + r + r^2 P(r), P a degree-5 minimax fit on [-ln2/2, ln2/2]
     * (the Cephes expf coefficients) */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* 2^k with k in [-126, 127]: the low mantissa bits of kbits hold k + 2^22 */
    uint32_t bits = (kbits + 127u - 0x400000u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = p * scale;
    e = x > 88.0f ? __builtin_inff() : e;
    e = x < -87.0f ? 0.0f : e;
    return e;
}

/* fp32 -> bf16 bits, rounded to nearest even; NaN stays a (quiet) NaN: the
 * rounding of ops_to_bf16 and of oneDNN's reorders, inlined for the loops that
 * write bf16 operands (bf16.c, conv_plane.c). */
static inline uint16_t ops_bf16_rne(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    const int nan = (u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu);
    return nan ? (uint16_t)((u >> 16) | 0x40) : (uint16_t)(r >> 16);
}

#define OPS_LANES 16
#define OPS_BLOCK 1024 /* multiple of OPS_LANES */

/* One generic body for all lane sums: TERM(i) is the value summed at index i. */
#define OPS_LANE_SUM(n, TERM)                                                   \
    do {                                                                        \
        size_t i_ = 0;                                                          \
        while (i_ + OPS_LANES <= (n)) {                                         \
            size_t left_ = ((n) - i_) / OPS_LANES * OPS_LANES;                  \
            size_t end_ = i_ + (left_ < OPS_BLOCK ? left_ : OPS_BLOCK);         \
            float acc_[OPS_LANES] = {0};                                        \
            for (; i_ < end_; i_ += OPS_LANES)                                  \
                for (int l_ = 0; l_ < OPS_LANES; l_++) {                        \
                    size_t i = i_ + (size_t)l_;                                 \
                    acc_[l_] += (TERM);                                         \
                }                                                               \
            for (int l_ = 0; l_ < OPS_LANES; l_++) total_ += (double)acc_[l_];  \
        }                                                                       \
        for (size_t i = i_; i < (n); i++) total_ += (double)(TERM);             \
    } while (0)

/* sum x[i] */
static inline double ops_sum(const float *x, size_t n) {
    double total_ = 0;
    OPS_LANE_SUM(n, x[i]);
    return total_;
}

/* sum (x[i] - m)^2 : the second pass of a two-pass variance. */
static inline double ops_sum_sq_dev(const float *x, size_t n, float m) {
    double total_ = 0;
    OPS_LANE_SUM(n, (x[i] - m) * (x[i] - m));
    return total_;
}

/* sum a[i] * (x[i] - m) */
static inline double ops_dot_dev(const float *a, const float *x, size_t n, float m) {
    double total_ = 0;
    OPS_LANE_SUM(n, a[i] * (x[i] - m));
    return total_;
}

/* sum a[i] * b[i] */
static inline double ops_dot(const float *a, const float *b, size_t n) {
    double total_ = 0;
    OPS_LANE_SUM(n, a[i] * b[i]);
    return total_;
}

/* sum (a[i] - b[i])^2 */
static inline double ops_sum_sq_diff(const float *a, const float *b, size_t n) {
    double total_ = 0;
    OPS_LANE_SUM(n, (a[i] - b[i]) * (a[i] - b[i]));
    return total_;
}

#endif
