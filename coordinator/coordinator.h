/* The coordinator (rank 0, or the single process): the global batch plan, the
 * run's cadence, metrics, checkpoints (writing, pruning, resume) and the run-folder
 * lock. The optimizer state it checkpoints is rank 0's shard's (borrowed); the
 * other shards' chunks are gathered into it first (coordinator/server.c). */
#ifndef DDPM_COORDINATOR_H
#define DDPM_COORDINATOR_H

#include <stdint.h>
#include <stdio.h>

#include "common/ckpt/checkpoint.h"
#include "common/ckpt/runlock.h"
#include "common/config/config.h"
#include "common/diffusion/diffusion.h"
#include "common/io/tfevents.h"
#include "common/model/unet.h"
#include "common/train/batch.h"
#include "common/train/grad.h"
#include "coordinator/shard.h"
#include "coordinator/stop.h"

typedef struct {
    const config *cfg;          /* borrowed */
    char *cfg_yaml;             /* canonical config text (owned) */
    const unet *model;          /* its tensor table names the checkpoint's tensors (borrowed) */
    shard *state;               /* rank 0's shard: params, EMA, Adam (borrowed) */
    uint64_t dataset_size;
    batch_planner bp;
    batch_item *items;          /* the current step's global batch */
    uint64_t step;              /* updates done */
    int resumed;                /* the state came from a checkpoint of this run */
    /* the layout the run uses (recorded in checkpoints) */
    uint32_t world_size, servers, workers;
    FILE *metrics;
    runlock lock;
    ckpt_write_opts write_opts; /* the writer's test hook (env_ckpt_test_hook) */
    /* the step of the newest checkpoint on disk that this state equals (written or
     * resumed from; the start step of a fresh run, which the seed reproduces), so
     * that no checkpoint is written twice */
    uint64_t ckpt_step;
    double ckpt_seconds;        /* how long the last checkpoint took (0: none yet) */
    double grace_s;             /* seconds from SIGTERM to SIGKILL (<= 0: unknown) */
    /* checkpoints known to verify (written or resumed from) or not (skipped at
     * resume), so that pruning agrees with resume without rereading */
    ckpt_known ckpt_known;
    /* the log window: images since the last metrics line */
    double t_start, t_window;
    uint64_t window_images;
    uint64_t step0;             /* the step this process started from (ETA) */
    double t_ckpt;              /* now_seconds() of this process's last checkpoint (0: none) */
    /* output.tensorboard: this process's event file (rank 0 only) */
    tfevents tb;
    int tb_on;
    /* training.sample_every: a forward-only model of training.sample_images
     * images, made at the first grid (owned) */
    unet_options unet_opt;
    unet *sample_model;
} coordinator;

/* What the coordinator is given: the run folder's lock options come from the program. */
typedef struct {
    const char *job_id;         /* the Slurm job id written into the lock, or NULL */
    int force_unlock;           /* --force-unlock */
    double grace_s;
    ckpt_write_opts write_opts;
    uint32_t world_size, servers, workers;
    unet_options unet_opt;      /* for the sampling model of training.sample_every */
    /* --init-from: a new run starts from these weights (a checkpoint's init_which
     * weights, CKPT_EMA or CKPT_PARAMS, or a safetensors file; common/ckpt/weights_io.h)
     * instead of the authors' initialisation; NULL: none. Ignored when the run
     * resumes (--resume auto found a checkpoint of its own). */
    const char *init_from;
    int init_which;
} coordinator_opts;

/* Creates output.dir, takes its lock (one run at a time), plans batches over
 * dataset_size records, initialises the state's params (the authors' init,
 * seeded) and EMA, resumes as `resume_mode` says ("none": refuse a folder with
 * checkpoints; "auto"; or a path), or, for a run that does not resume, takes
 * params and EMA from o->init_from; opens metrics.jsonl. 0, or -1 with err_msg(). */
int coordinator_init(coordinator *c, const config *cfg, const unet *model, shard *state,
                     uint64_t dataset_size, const char *resume_mode, const coordinator_opts *o);
void coordinator_free(coordinator *c);

/* Plans step c->step's global batch into c->items. */
void coordinator_plan(coordinator *c);
/* After an update: the loss statistics of the whole batch must count every sample
 * and be finite; -1 with err_msg() (the run stops, its last checkpoint intact). */
int coordinator_check_loss(const coordinator *c, const loss_stats *st);
/* After the update that brought the run to c->step: counts the batch's images and,
 * when the cadence says so, writes a metrics.jsonl line and the progress line.
 * bytes_sent/bytes_raw < 0: no wire. */
void coordinator_log_step(coordinator *c, const loss_stats *st, double gnorm, double bytes_sent,
                          double bytes_raw);
/* Writes a checkpoint of params/EMA/Adam and prunes; sets ckpt_step and ckpt_seconds. */
int coordinator_save_checkpoint(coordinator *c);
/* At the end of a run (stopping: on a signal before training.steps) decides whether
 * a final checkpoint is to be written now and logs why not when it is not: not when
 * this step is already on disk, not after SIGTERM when it would not finish within
 * the grace time (stop.h). Uses ckpt_seconds, or a size-based guess before the
 * first checkpoint. */
int coordinator_want_final_checkpoint(const coordinator *c, int stopping);
/* The closing log line of a run. */
void coordinator_log_end(const coordinator *c, int stopping, int wrote);
/* training.eval_every: strided bits/dim of the EMA weights on data.eval_path with
 * `model` (a single process's training model), one more metrics.jsonl line. */
int coordinator_eval_bpd(coordinator *c, unet *model, const diffusion *diff);
/* training.sample_every: draws training.sample_images images (seed 0, DDIM over 50
 * steps, or all T when T <= 50) with `weights` (P floats: the EMA or the params,
 * as training.sample_weights says) into output.dir/samples/step-<step>.png,
 * scaled to at least 512 pixels wide, and into TensorBoard. `serve` (may be NULL)
 * is called after each sampling step (a distributed rank 0 answers liveness
 * checks there). The same pixels as `ddpm-sample CKPT --ddim --steps 50 -n N -b N
 * --seed 0 --weights W --grid-scale K` on this step's checkpoint. */
/* After an event file write failed: warns with err_msg() and writes no further
 * events (metrics.jsonl keeps everything; training goes on). */
void coordinator_tb_failed(coordinator *c);
int coordinator_sample(coordinator *c, const diffusion *diff, const float *weights,
                       void (*serve)(void));

#endif
