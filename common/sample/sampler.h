/* Algorithm 2 (ancestral sampling), strided (respaced) sampling and DDIM over a
 * trained eps_theta. Image i's initial noise and every step's noise are keyed on
 * (seed, i, step), so image i is the same whatever the batch size or thread count. */
#ifndef DDPM_SAMPLER_H
#define DDPM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "common/diffusion/diffusion.h"
#include "common/model/unet.h"

typedef struct {
    diffusion steps;     /* the (possibly respaced) process that is walked; owned */
    int ddim;            /* 0: ancestral p_sample, 1: DDIM */
    double eta;          /* DDIM only */
    sampling_variance variance; /* ancestral only; unused for a learned-variance model */
    int clip;            /* clip predicted x0 to [-1, 1] */
    uint64_t seed;
    int channels, size;
    size_t D;
    int max_batch;
    /* owned scratch, max_batch images */
    float *eps, *v, *z, *x0; /* eps: room for 2 D per image (a learn_sigma output) */
    int *t_model, *t_step;
} sampler;

/* spec: "" or NULL for all T steps, else improved-diffusion's respacing ("100",
 * "ddim50", "10,15,20"). base is borrowed only during the call. 0 or -1 (err_msg). */
int sampler_init(sampler *s, const diffusion *base, const char *spec, int ddim, double eta,
                 sampling_variance variance, int clip, uint64_t seed, int channels, int size,
                 int max_batch);
void sampler_free(sampler *s);
int sampler_num_steps(const sampler *s);

typedef void (*sampler_progress)(void *ctx, int step_done, int steps_total);

/* Generates images first .. first+n-1 (n <= max_batch) into x (n * D floats, values
 * in about [-1, 1]). The model must accept batches of n. A model with learned
 * variances (unet_out_channels twice channels) sets each ancestral step's variance
 * from its v output, on the walked (respaced) process's betas, as improved-diffusion
 * does; DDIM uses only eps. */
void sampler_run(sampler *s, unet *model, const float *params, uint64_t first, int n, float *x,
                 sampler_progress progress, void *ctx);

/* [-1, 1] NCHW floats to uint8 NHWC as guided-diffusion does:
 * ((x + 1) * 127.5) clamped to [0, 255], then truncated. */
void sampler_to_uint8_nhwc(const float *x, int n, int channels, int size, uint8_t *out);

#endif
