/* Minimal test harness: each check prints "ok - name" or "not ok - name: why";
 * test_done() returns the exit status (non-zero if anything failed).
 * tests/run_tests.sh counts these lines across every test program. */
#ifndef DDPM_TEST_H
#define DDPM_TEST_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int test_failures_ = 0;
static int test_count_ = 0;

__attribute__((format(printf, 2, 3), unused))
static int test_check(int cond, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    test_count_++;
    printf(cond ? "ok - " : "not ok - ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    if (!cond) test_failures_++;
    return cond;
}

/* Relative error as the project measures it: max|a - b| / max|b| (max|b| floored). */
__attribute__((unused))
static double test_rel_err(const float *a, const float *b, size_t n) {
    double dmax = 0, bmax = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > dmax || d != d) dmax = d;
        if (fabs((double)b[i]) > bmax) bmax = fabs((double)b[i]);
    }
    if (bmax < 1e-30) bmax = 1e-30;
    return dmax / bmax;
}

__attribute__((unused))
static int test_done(void) {
    printf("# %d checks, %d failed\n", test_count_, test_failures_);
    return test_failures_ ? 1 : 0;
}

#endif
