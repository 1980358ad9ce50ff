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

/* sum (a[i] - b[i])^2 */
static inline double ops_sum_sq_diff(const float *a, const float *b, size_t n) {
    double total_ = 0;
    OPS_LANE_SUM(n, (a[i] - b[i]) * (a[i] - b[i]));
    return total_;
}

#endif
