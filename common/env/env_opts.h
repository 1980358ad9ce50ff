/* The options that programs take from the environment, read in this one place
 * (the library itself reads none: it takes them as arguments). Every program
 * (ddpm-train, ddpm-sample, ddpm-eval, the benchmarks, test tools) calls
 * env_unet_options before it builds a model. The one other reader of the
 * environment under common/ is the process start-up in common/core/blas_setup.c.
 *
 * Each reader leaves its field as it is when the variable is unset or empty, and
 * returns -1 with err_msg() naming the variable and its value when it is
 * malformed, so that a program stops at start: "DDPM_LANES='x': expected ...".
 *   DDPM_LANES        lanes, a whole number in 1..1024 (1: no lanes)
 *   DDPM_CONV         auto, shift, winograd, winograd2, winograd4 or dnnl
 *                     (winograd2/4 force the forward's Winograd tile; dnnl runs
 *                     every convolution by oneDNN)
 *   DDPM_PREPARE_MIB  the prepare budget in whole MiB (0: never prepare) */
#ifndef DDPM_ENV_OPTS_H
#define DDPM_ENV_OPTS_H

#include <stddef.h>

#include "common/ckpt/checkpoint.h"
#include "common/dist/faults.h"
#include "common/model/unet.h"
#include "common/ops/ops.h"

int env_lanes(int *lanes);
int env_conv(conv_algo_opts *conv);
int env_prepare_budget(size_t *bytes);
/* All three into o (fill o with unet_options_default() first); 0 or -1 with
 * err_msg() for the first malformed one, in the order above. */
int env_unet_options(unet_options *o);

/* The Slurm job this process runs in (NULL fields outside Slurm, or where Slurm
 * did not set them): logged by ddpm-train, written into the run folder's lock. */
typedef struct {
    const char *job_id;         /* SLURM_JOB_ID */
    const char *restart_count;  /* SLURM_RESTART_COUNT */
    const char *ntasks;         /* SLURM_NTASKS */
    const char *cpus_per_task;  /* SLURM_CPUS_PER_TASK */
} env_slurm;
env_slurm env_slurm_job(void);

/* Before MPI_Init in a program that may run without mpirun: a lone process runs
 * as an MPI singleton, and Open MPI refuses root unless told (the variables are
 * set only for root and only outside mpirun, which has its own flag). */
void env_mpi_singleton_as_root(void);
/* The ranks mpirun started on this node (OMPI_COMM_WORLD_LOCAL_SIZE; 1 outside
 * mpirun or when malformed): they share its cores. */
int env_ranks_on_node(void);

/* Test-only hooks of ddpm-train (the crash and fault tests), read here and passed
 * down as options:
 *   DDPM_TEST_KILL_AT_BYTE=N            the checkpoint writer dies N bytes into its file
 *   DDPM_TEST_HANG_RANK/STEP[/PHASE]    a rank stops itself (dist_faults)
 *   DDPM_TEST_CRASH_RANK/STEP           a rank kills itself
 *   DDPM_TEST_BAD_STATS_RANK            a worker over-reports its sample count
 * and DDPM_TIMELINE=PREFIX, each worker's per-chunk push times in PREFIX.rankR
 * (bench/dist_bench.sh). A malformed value is refused by name (-1, err_msg()). */
int env_ckpt_test_hook(ckpt_write_opts *o);
int env_dist_faults(dist_faults *f);
const char *env_timeline(void);

/* DDPM_INCEPTION_WEIGHTS: ddpm-eval's Inception weights when --inception is not
 * given, or NULL. */
const char *env_inception_weights(void);

#endif
