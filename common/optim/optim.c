#include "common/optim/optim.h"

#include <math.h>

double optim_lr(const optim_config *oc, uint64_t step) {
    if (oc->warmup_steps <= 0) return oc->lr;
    double f = (double)step / (double)oc->warmup_steps;
    return oc->lr * (f < 1.0 ? f : 1.0);
}

double optim_sum_squares(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

double optim_clip_scale(const optim_config *oc, double global_norm) {
    if (oc->grad_clip <= 0 || !(global_norm > oc->grad_clip)) return 1.0;
    return oc->grad_clip / global_norm;
}

void optim_adam(float *params, const float *grads, float *m, float *v, size_t n, double lr,
                double grad_scale, const optim_config *oc, uint64_t step_count) {
    const float b1 = (float)oc->beta1, b2 = (float)oc->beta2, gs = (float)grad_scale;
    const double bc1 = 1.0 - pow(oc->beta1, (double)step_count);
    const double bc2 = 1.0 - pow(oc->beta2, (double)step_count);
    const float step_size = (float)(lr / bc1);
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float eps = (float)oc->eps;
    /* elementwise, so threads change nothing but the speed */
#pragma omp parallel for simd schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] * gs;
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] -= step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}

void optim_ema(float *ema, const float *params, size_t n, double decay) {
    const float d = (float)decay, one_minus = (float)(1.0 - decay);
    for (size_t i = 0; i < n; i++) ema[i] = d * ema[i] + one_minus * params[i];
}

double optim_ranges_sum_squares(const float *grads, const optim_range *r, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += optim_sum_squares(grads + r[i].off, r[i].n);
    return sum;
}

void optim_ranges_update(float *params, const float *grads, float *m, float *v, float *ema,
                         const optim_range *r, int n, const optim_config *oc, uint64_t step,
                         double global_norm) {
    double lr = optim_lr(oc, step), scale = optim_clip_scale(oc, global_norm);
    for (int i = 0; i < n; i++) {
        size_t o = r[i].off;
        optim_adam(params + o, grads + o, m + o, v + o, r[i].n, lr, scale, oc, step + 1);
        optim_ema(ema + o, params + o, r[i].n, oc->ema_decay);
    }
}
