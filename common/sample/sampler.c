#include "common/sample/sampler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/rng/rng.h"

int sampler_init(sampler *s, const diffusion *base, const char *spec, int ddim, double eta,
                 sampling_variance variance, int clip, uint64_t seed, int channels, int size,
                 int max_batch) {
    memset(s, 0, sizeof *s);
    char full[32];
    if (!spec || !*spec) {
        snprintf(full, sizeof full, "%s%d", ddim ? "ddim" : "", base->T);
        spec = full;
    }
    if (diffusion_init_respaced(&s->steps, base, spec) != 0) return -1;
    if (ddim && (eta < 0 || eta > 1)) {
        diffusion_free(&s->steps);
        return err_set("DDIM eta must be in [0, 1], got %g", eta);
    }
    s->ddim = ddim;
    s->eta = eta;
    s->variance = variance;
    s->clip = clip;
    s->seed = seed;
    s->channels = channels;
    s->size = size;
    s->D = (size_t)channels * size * size;
    s->max_batch = max_batch;
    size_t nd = (size_t)max_batch * s->D;
    s->eps = xfloats(nd);
    s->z = xfloats(nd);
    s->x0 = xfloats(nd);
    s->t_model = xcalloc((size_t)max_batch, sizeof(int));
    s->t_step = xcalloc((size_t)max_batch, sizeof(int));
    return 0;
}

void sampler_free(sampler *s) {
    diffusion_free(&s->steps);
    free(s->eps); free(s->z); free(s->x0); free(s->t_model); free(s->t_step);
    free(s->x2); free(s->eps2); free(s->t2); free(s->y2);
    memset(s, 0, sizeof *s);
}

int sampler_set_guidance(sampler *s, int num_classes, double guidance) {
    if (!(guidance >= 0 && guidance <= 1e6))
        return err_set("guidance weight %g is out of range (must be 0..1e6)", guidance);
    if (guidance > 0 && num_classes <= 0)
        return err_set("guidance needs a class-conditional model (model.num_classes > 0); "
                       "this one is unconditional");
    s->num_classes = num_classes;
    s->guidance = guidance;
    if (guidance > 0 && !s->x2) {
        size_t n2 = 2 * (size_t)s->max_batch;
        s->x2 = xfloats(n2 * s->D);
        s->eps2 = xfloats(n2 * s->D);
        s->t2 = xcalloc(n2, sizeof *s->t2);
        s->y2 = xcalloc(n2, sizeof *s->y2);
    }
    return 0;
}

void sampler_guide(float *out, const float *eps_cond, const float *eps_uncond, double w, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = (float)((1.0 + w) * (double)eps_cond[i] - w * (double)eps_uncond[i]);
}

void sampler_eps(sampler *s, unet *model, const float *params, const float *x, const int *y,
                 int n) {
    const int *labels = s->num_classes > 0 ? y : NULL;
    if (!labels || s->guidance <= 0) {
        unet_forward(model, params, x, s->t_model, labels, n, NULL, s->eps);
        return;
    }
    const size_t nd = (size_t)n * s->D;
    for (int i = 0; i < n; i++) {
        s->t2[i] = s->t2[n + i] = s->t_model[i];
        s->y2[i] = labels[i];
        s->y2[n + i] = s->num_classes; /* the null label */
    }
    if (unet_max_batch(model) >= 2 * n) {
        memcpy(s->x2, x, nd * sizeof *x);
        memcpy(s->x2 + nd, x, nd * sizeof *x);
        unet_forward(model, params, s->x2, s->t2, s->y2, 2 * n, NULL, s->eps2);
    } else {
        unet_forward(model, params, x, s->t2, s->y2, n, NULL, s->eps2);
        unet_forward(model, params, x, s->t2 + n, s->y2 + n, n, NULL, s->eps2 + nd);
    }
    sampler_guide(s->eps, s->eps2, s->eps2 + nd, s->guidance, nd);
}

int sampler_num_steps(const sampler *s) { return s->steps.T; }

void sampler_run(sampler *s, unet *model, const float *params, uint64_t first, int n,
                 const int *y, float *x, sampler_progress progress, void *ctx) {
    int K = s->steps.T;
    /* the weights stay fixed for the whole run: their Winograd transforms are
     * computed once (without the memory for them, every step computes its own) */
    const int prepared = !unet_prepared(model, params) && unet_prepare(model, params) == 0;
    for (int i = 0; i < n; i++) {
        rng_key k = {s->seed, 0, first + (uint64_t)i, RNG_PURPOSE_SAMPLE_INIT};
        rng_normal(&k, x + (size_t)i * s->D, s->D);
    }
    for (int k = K - 1; k >= 0; k--) {
        for (int i = 0; i < n; i++) {
            s->t_step[i] = k;
            s->t_model[i] = s->steps.timestep_map[k];
        }
        sampler_eps(s, model, params, x, y, n);
        const float *z = NULL;
        if (k > 0 && (!s->ddim || s->eta > 0)) {
            for (int i = 0; i < n; i++) {
                rng_key key = {s->seed, (uint64_t)k, first + (uint64_t)i, RNG_PURPOSE_SAMPLE_STEP};
                rng_normal(&key, s->z + (size_t)i * s->D, s->D);
            }
            z = s->z;
        }
        if (s->ddim)
            diffusion_ddim_step(&s->steps, s->eta, s->clip, x, s->x0, x, s->eps, z, s->t_step, n,
                                s->D);
        else
            diffusion_p_sample(&s->steps, s->variance, s->clip, x, s->x0, x, s->eps, z, s->t_step,
                               n, s->D);
        if (progress) progress(ctx, K - k, K);
    }
    if (prepared) unet_unprepare(model);
}

void sampler_to_uint8_nhwc(const float *x, int n, int channels, int size, uint8_t *out) {
    size_t hw = (size_t)size * size;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < channels; c++)
            for (size_t p = 0; p < hw; p++) {
                float v = (x[((size_t)i * channels + c) * hw + p] + 1.0f) * 127.5f;
                if (!(v > 0)) v = 0; /* also maps NaN to 0 */
                if (v > 255) v = 255;
                out[((size_t)i * hw + p) * channels + c] = (uint8_t)v;
            }
}
