#include "common/core/prof.h"

#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

int prof_enabled;
double prof_seconds[PROF_COUNT];

double prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int prof_owner(void) {
#ifdef _OPENMP
    /* thread 0 of the outermost team (or no team at all) */
    return omp_get_level() == 0 || omp_get_ancestor_thread_num(1) == 0;
#else
    return 1;
#endif
}

void prof_reset(void) { memset(prof_seconds, 0, sizeof prof_seconds); }

const char *prof_kind_name(prof_kind k) {
    static const char *names[PROF_COUNT] = {"conv fwd", "conv bwd", "groupnorm", "silu",
                                            "attention", "linear", "elementwise", "other",
                                            "gemm (inside the above)"};
    return (unsigned)k < PROF_COUNT ? names[k] : "?";
}
