#include "common/core/blas_setup.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define REEXEC_MARK "DDPM_BLAS_REEXEC"

static const char *g_origin = "detected";

static const char *better_core(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

/* libgomp's idle threads spin 300000 times before sleeping when neither
 * OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set. On a machine shared with other
 * processes that spinning takes the core the other ops thread needs, and a step
 * became 3-8x slower (docs/performance.md); 10000 spins (tens of microseconds)
 * still bridge the short serial gaps between the ops' parallel regions. */
#define SPIN_DEFAULT "10000"

static int spin_needs_setting(void) {
#ifdef _OPENMP
    return !getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT");
#else
    return 0;
#endif
}

void blas_setup(char **argv) {
    const char *mark = getenv(REEXEC_MARK);
    if (mark) {
        if (strchr(mark, 'c'))
            g_origin = "corrected from Prescott (OPENBLAS_CORETYPE set at start-up)";
        else if (getenv("OPENBLAS_CORETYPE"))
            g_origin = "OPENBLAS_CORETYPE from the environment";
        unsetenv(REEXEC_MARK);
        /* keep OPENBLAS_CORETYPE and GOMP_SPINCOUNT for child processes: they are
         * what the user would set */
        return;
    }
    /* Both variables are read only when the libraries load, hence one re-exec
     * that sets whichever is needed. */
    const char *want = NULL;
    if (getenv("OPENBLAS_CORETYPE")) {
        g_origin = "OPENBLAS_CORETYPE from the environment";
    } else {
        const char *core = openblas_get_corename();
        if (core && strcasecmp(core, "prescott") == 0) want = better_core();
    }
    int spin = spin_needs_setting();
    if (!want && !spin) return;
    if (want) setenv("OPENBLAS_CORETYPE", want, 1);
    if (spin) setenv("GOMP_SPINCOUNT", SPIN_DEFAULT, 1);
    setenv(REEXEC_MARK, want ? "c" : "s", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slow kernel and the default spinning, say so */
    unsetenv(REEXEC_MARK);
    if (want) unsetenv("OPENBLAS_CORETYPE");
    if (spin) unsetenv("GOMP_SPINCOUNT");
    if (want) g_origin = "detected (re-exec to correct the Prescott fallback failed)";
}

int cpu_count_available(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int blas_set_threads(int threads, int ranks_per_node) {
    int n = threads;
    if (n <= 0) {
        n = cpu_count_available() / (ranks_per_node > 0 ? ranks_per_node : 1);
        if (n < 1) n = 1;
    }
    /* The ops run their own threads (OpenMP) and call OpenBLAS from them, one
     * single-threaded GEMM per thread (common/ops/ops_internal.h): two thread
     * pools spinning on the same cores would slow each other down. */
#ifdef _OPENMP
    omp_set_num_threads(n);
    openblas_set_num_threads(1);
#else
    openblas_set_num_threads(n);
#endif
    return n;
}

const char *blas_kernel_name(void) {
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

const char *blas_kernel_origin(void) { return g_origin; }
