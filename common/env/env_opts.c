/* Program options from the environment (env_opts.h): strict parsing, a
 * malformed value refused by name. */
#include "common/env/env_opts.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "common/core/util.h"

int env_lanes(int *lanes) {
    const char *e = getenv("DDPM_LANES");
    if (!e || !*e) return 0;
    char *end;
    long v = strtol(e, &end, 10);
    if (*end || v < 1 || v > 1024)
        return err_set("DDPM_LANES='%s': expected a whole number of lanes in 1..1024 (1: no "
                       "lanes)", e);
    *lanes = (int)v;
    return 0;
}

int env_conv(conv_algo_opts *conv) {
    const char *e = getenv("DDPM_CONV");
    if (!e || !*e) return 0;
    int tile = 0;
    conv_algo algo;
    if (strcmp(e, "auto") == 0) algo = CONV_ALGO_AUTO;
    else if (strcmp(e, "shift") == 0) algo = CONV_ALGO_SHIFT;
    else if (strcmp(e, "winograd") == 0) algo = CONV_ALGO_WINOGRAD;
    else if (strcmp(e, "dnnl") == 0) algo = CONV_ALGO_DNNL;
    else if (strcmp(e, "winograd2") == 0 || strcmp(e, "winograd4") == 0) {
        algo = CONV_ALGO_WINOGRAD;
        tile = e[8] - '0';
    } else {
        return err_set("DDPM_CONV='%s': expected auto, shift, winograd, winograd2, winograd4 "
                       "or dnnl",
                       e);
    }
    conv->algo = algo;
    conv->wino_tile = tile;
    return 0;
}

int env_prepare_budget(size_t *bytes) {
    const char *e = getenv("DDPM_PREPARE_MIB");
    if (!e || !*e) return 0;
    char *end;
    long long v = strtoll(e, &end, 10);
    if (*end || v < 0 || v > (1ll << 40))
        return err_set("DDPM_PREPARE_MIB='%s': expected a whole number of MiB (0: never prepare)",
                       e);
    *bytes = (size_t)v << 20;
    return 0;
}

int env_unet_options(unet_options *o) {
    if (env_lanes(&o->lanes) < 0 || env_conv(&o->conv) < 0 ||
        env_prepare_budget(&o->prepare_budget) < 0)
        return -1;
    return 0;
}

env_slurm env_slurm_job(void) {
    env_slurm s = {getenv("SLURM_JOB_ID"), getenv("SLURM_RESTART_COUNT"), getenv("SLURM_NTASKS"),
                   getenv("SLURM_CPUS_PER_TASK")};
    return s;
}

void env_mpi_singleton_as_root(void) {
    if (geteuid() == 0 && !getenv("OMPI_COMM_WORLD_SIZE")) {
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    }
}

int env_ranks_on_node(void) {
    const char *e = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!e || !*e) return 1;
    char *end;
    long v = strtol(e, &end, 10);
    return *end || v < 1 || v > 1 << 20 ? 1 : (int)v;
}

/* A whole number in lo..hi from variable `name`: 1 and *v when set, 0 when unset,
 * -1 with err_msg() when malformed. */
static int env_number(const char *name, long long lo, long long hi, long long *v) {
    const char *e = getenv(name);
    if (!e || !*e) return 0;
    char *end;
    errno = 0;
    long long x = strtoll(e, &end, 10);
    if (errno || *end || x < lo || x > hi)
        return err_set("%s='%s': expected a whole number in %lld..%lld", name, e, lo, hi);
    *v = x;
    return 1;
}

int env_ckpt_test_hook(ckpt_write_opts *o) {
    long long v = 0;
    int rc = env_number("DDPM_TEST_KILL_AT_BYTE", 0, INT64_MAX, &v);
    if (rc > 0) {
        o->kill_enabled = 1;
        o->kill_at_byte = (uint64_t)v;
    }
    return rc < 0 ? -1 : 0;
}

/* rank and step variables: both set, or the hook is off */
static int env_rank_step(const char *rank_var, const char *step_var, int *rank, uint64_t *step) {
    long long r = -1, s = 0;
    int a = env_number(rank_var, 0, 1 << 20, &r), b = env_number(step_var, 0, INT64_MAX, &s);
    if (a < 0 || b < 0) return -1;
    if (a > 0 && b > 0) {
        *rank = (int)r;
        *step = (uint64_t)s;
    }
    return 0;
}

int env_dist_faults(dist_faults *f) {
    if (env_rank_step("DDPM_TEST_HANG_RANK", "DDPM_TEST_HANG_STEP", &f->hang_rank,
                      &f->hang_step) != 0 ||
        env_rank_step("DDPM_TEST_CRASH_RANK", "DDPM_TEST_CRASH_STEP", &f->crash_rank,
                      &f->crash_step) != 0)
        return -1;
    const char *p = getenv("DDPM_TEST_HANG_PHASE");
    if (p && *p) {
        if (strlen(p) >= sizeof f->hang_phase)
            return err_set("DDPM_TEST_HANG_PHASE='%s': expected work, push, norm, broadcast or "
                           "gather", p);
        snprintf(f->hang_phase, sizeof f->hang_phase, "%s", p);
    }
    long long r = -1;
    int rc = env_number("DDPM_TEST_BAD_STATS_RANK", 0, 1 << 20, &r);
    if (rc > 0) f->bad_stats_rank = (int)r;
    return rc < 0 ? -1 : 0;
}

const char *env_timeline(void) {
    const char *e = getenv("DDPM_TIMELINE");
    return e && *e ? e : NULL;
}

const char *env_inception_weights(void) {
    const char *e = getenv("DDPM_INCEPTION_WEIGHTS");
    return e && *e ? e : NULL;
}
