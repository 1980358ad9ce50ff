/* Optimizer pieces of Algorithm 1's update, each a loop over flat buffers (a whole
 * model or one server shard's chunk): learning-rate warmup, global-norm clipping,
 * Adam and the EMA of the parameters. All buffers are borrowed. */
#ifndef DDPM_OPTIM_H
#define DDPM_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double lr, beta1, beta2, eps;
    int warmup_steps;
    double grad_clip;  /* 0 disables clipping */
    double ema_decay;
} optim_config;

/* The authors' warmup: lr * min(step / warmup, 1) with step counted from 0 before
 * the update (so the very first update uses lr 0 when warmup > 0, as in
 * diffusion_tf); warmup 0 means no warmup. */
double optim_lr(const optim_config *oc, uint64_t step);
/* Sum of squares in double (for the global norm; shards add theirs up). */
double optim_sum_squares(const float *x, size_t n);
/* The factor that clip_by_global_norm applies: clip / max(norm, clip), or 1. */
double optim_clip_scale(const optim_config *oc, double global_norm);
/* PyTorch's Adam (bias-corrected, eps added to sqrt(v_hat)) on one buffer, with the
 * gradient multiplied by grad_scale first; step_count is the 1-based update count. */
void optim_adam(float *params, const float *grads, float *m, float *v, size_t n, double lr,
                double grad_scale, const optim_config *oc, uint64_t step_count);
/* ema = decay * ema + (1 - decay) * params (TensorFlow's ExponentialMovingAverage
 * without num_updates, as the authors use it). */
void optim_ema(float *ema, const float *params, size_t n, double decay);

/* The ranges of the flat buffers that one updater owns: [off, off + n) each. The
 * single process owns one range (the whole model), a server shard its chunks. */
typedef struct {
    size_t off, n;
} optim_range;

/* Algorithm 1's update over a set of ranges, in two halves so that shards can add
 * up their sums of squares in between (the global norm):
 *   optim_ranges_sum_squares: the sum of squared gradients over the ranges, one
 *     optim_sum_squares per range, added in range order;
 *   optim_ranges_update: with lr = optim_lr(oc, step) and the clip scale of
 *     global_norm, Adam (update count step + 1) then the EMA on every range.
 * Buffers are the whole model's (indexed by the ranges' offsets), borrowed. */
double optim_ranges_sum_squares(const float *grads, const optim_range *r, int n);
void optim_ranges_update(float *params, const float *grads, float *m, float *v, float *ema,
                         const optim_range *r, int n, const optim_config *oc, uint64_t step,
                         double global_norm);

#endif
