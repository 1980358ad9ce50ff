/* Algorithm 1 on a single process: the coordinator plans each global batch, the
 * worker computes its gradients over the shard's buffers, the shard (the whole
 * model as one range) updates; the same pieces as a distributed run, in one
 * process. */
#ifndef DDPM_LOCAL_H
#define DDPM_LOCAL_H

#include "common/diffusion/diffusion.h"
#include "common/io/tensor_file.h"
#include "coordinator/coordinator.h"
#include "worker/worker.h"

/* dump: --dump-batches (each step's x0, t, eps, loss; the initial, final and EMA
 * parameters), or NULL. diff: for training.eval_every. Returns 0 when the run is
 * over (exit code in *exit_code), -1 with err_msg(). */
int local_run(coordinator *c, worker *w, const diffusion *diff, tensor_file *dump,
              int *exit_code);

#endif
