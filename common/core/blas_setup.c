#include "blas_setup.h"

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

void blas_setup(char **argv) {
    const char *mark = getenv(REEXEC_MARK);
    if (mark) {
        g_origin = "corrected from Prescott (OPENBLAS_CORETYPE set at start-up)";
        unsetenv(REEXEC_MARK);
        /* keep OPENBLAS_CORETYPE for child processes: it is what the user would set */
        return;
    }
    if (getenv("OPENBLAS_CORETYPE")) {
        g_origin = "OPENBLAS_CORETYPE from the environment";
        return;
    }
    const char *core = openblas_get_corename();
    if (!core || strcasecmp(core, "prescott") != 0) return;
    const char *want = better_core();
    if (!want) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv(REEXEC_MARK, "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slow kernel, say so */
    unsetenv(REEXEC_MARK);
    unsetenv("OPENBLAS_CORETYPE");
    g_origin = "detected (re-exec to correct the Prescott fallback failed)";
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
