/* The training state every role of ddpm-train shares, and the pieces of the
 * coordinator that do not depend on MPI: checkpoints, resume, metrics, and the
 * single-process training loop. */
#ifndef DDPM_TRAINER_H
#define DDPM_TRAINER_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "common/ckpt/checkpoint.h"
#include "common/config/config.h"
#include "common/data/dataset.h"
#include "common/data/prefetch.h"
#include "common/diffusion/diffusion.h"
#include "common/io/tensor_file.h"
#include "common/model/unet.h"
#include "common/optim/optim.h"
#include "common/train/batch.h"
#include "common/train/grad.h"

/* Exit codes a launcher can act on. */
enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_PREEMPTED = 3 };

#include "stop.h"

typedef struct {
    config cfg;
    char *cfg_yaml;            /* canonical config text (owned) */
    dataset *ds;               /* NULL on ranks that read no data */
    uint64_t dataset_size;
    diffusion diff;
    unet *model;
    size_t P;
    /* flat buffers of P floats (owned; NULL where a role needs none) */
    float *params, *grads, *adam_m, *adam_v, *ema;
    uint64_t step;
    optim_config oc;
    batch_planner bp;          /* coordinator */
    grad_worker gw;            /* ranks that compute gradients */
    batch_item *items;
    prefetcher *pf;            /* shards only: reads the next step's records ahead */
    batch_item *next_items;
    FILE *metrics;
    tensor_file dump;
    int dumping;
    /* the layout the run uses (recorded in checkpoints) */
    uint32_t world_size, servers, workers;
    /* coordinator: the step of the newest checkpoint on disk that this state equals
     * (written or resumed from; the start step of a fresh run, which the seed
     * reproduces), so that no checkpoint is written twice */
    uint64_t ckpt_step;
    double ckpt_seconds;       /* how long the last checkpoint took (0: none yet) */
    double grace_s;            /* seconds from SIGTERM to SIGKILL (<= 0: unknown) */
    /* coordinator: checkpoints known to verify (written or resumed from) or not
     * (skipped at resume), so that pruning agrees with resume without rereading */
    ckpt_known ckpt_known;
} trainer;

/* Writes a checkpoint of params/EMA/Adam (all P floats present in tr) and prunes:
 * the newest training.keep_checkpoints that verify stay, a corrupt one is renamed
 * to *.corrupt and logged (ckpt_prune_ex); sets ckpt_step and ckpt_seconds. */
int trainer_save_checkpoint(trainer *tr);
/* At the end of a run (stopping: on a signal before training.steps) decides whether
 * a final checkpoint is to be written now and logs why not when it is not: not when
 * this step is already on disk, not after SIGTERM when it would not finish within
 * the grace time (stop.h). Uses ckpt_seconds, or a size-based guess before the
 * first checkpoint. */
int trainer_want_final_checkpoint(const trainer *tr, int stopping);
/* The closing log line of a run. */
void trainer_log_end(const trainer *tr, int stopping, int wrote);
/* mode: "none" (refuse a folder with checkpoints), "auto", or a path. Fills params,
 * EMA, Adam m/v and step. "auto" takes the newest checkpoint that verifies and
 * skips (logs, and remembers for pruning) those that do not; one that verifies
 * but belongs to another run (model, data, batch size or seed differ) stops the
 * run, since continuing would let pruning delete one run's checkpoints for the
 * other's. */
int trainer_resume(trainer *tr, const char *mode);
/* One metrics.jsonl line and the progress line. bytes_sent/bytes_raw < 0: no wire. */
void trainer_log_metrics(trainer *tr, const loss_stats *st, double gnorm, double lr, double ips,
                         double elapsed, double bytes_sent, double bytes_raw);
/* training.eval_every: strided bits/dim of the EMA weights on data.eval_path, one
 * more metrics.jsonl line (single process). */
int trainer_eval_bpd(trainer *tr);
/* Algorithm 1 on one process. */
int train_local(trainer *tr, int *exit_code);

#endif
