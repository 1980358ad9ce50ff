/* The distributed run's test-only faults, apart from common/dist/dist.h so that
 * programs can fill them without MPI's headers (common/env/env_opts.h). */
#ifndef DDPM_DIST_FAULTS_H
#define DDPM_DIST_FAULTS_H

#include <stdint.h>
#include <string.h>

/* Test-only faults (the distributed tests; never in production), passed in by the
 * program (ddpm-train reads DDPM_TEST_HANG_RANK/STEP/PHASE, DDPM_TEST_CRASH_RANK/
 * STEP and DDPM_TEST_BAD_STATS_RANK through common/env/env_opts.h): rank
 * hang_rank stops itself with SIGSTOP when it reaches phase hang_phase ("work"
 * when empty; also "push", "norm" (shards), "broadcast", "gather" (shards, at a
 * checkpoint)) of step hang_step (= d->step); crash_rank kills itself with SIGKILL at
 * "work" of crash_step; bad_stats_rank over-reports its sample count. -1: none. */
typedef struct {
    int hang_rank;
    uint64_t hang_step;
    char hang_phase[16];
    int crash_rank;
    uint64_t crash_step;
    int bad_stats_rank;
} dist_faults;
/* No faults (every rank -1). */
static inline dist_faults dist_faults_none(void) {
    dist_faults f;
    memset(&f, 0, sizeof f);
    f.hang_rank = f.crash_rank = f.bad_stats_rank = -1;
    return f;
}

#endif
