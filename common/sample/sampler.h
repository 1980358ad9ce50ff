/* Algorithm 2 (ancestral sampling), strided (respaced) sampling and DDIM over a
 * trained eps_theta. Image i's initial noise and every step's noise are keyed on
 * (seed, i, step), so image i is the same whatever the batch size or thread count.
 * A class-conditional model samples with its labels, with classifier-free
 * guidance (Ho & Salimans 2022) when a guidance weight is set. */
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
    sampling_variance variance; /* ancestral only */
    int clip;            /* clip predicted x0 to [-1, 1] */
    uint64_t seed;
    int channels, size;
    size_t D;
    int max_batch;
    /* owned scratch, max_batch images */
    float *eps, *z, *x0;
    int *t_model, *t_step;
    /* classifier-free guidance (sampler_set_guidance): the model's class count, the
     * weight W, and scratch for the 2n-image batch [conditional; null label] */
    int num_classes;
    double guidance;
    float *x2, *eps2;
    int *t2, *y2;
} sampler;

/* spec: "" or NULL for all T steps, else improved-diffusion's respacing ("100",
 * "ddim50", "10,15,20"). base is borrowed only during the call. 0 or -1 (err_msg). */
int sampler_init(sampler *s, const diffusion *base, const char *spec, int ddim, double eta,
                 sampling_variance variance, int clip, uint64_t seed, int channels, int size,
                 int max_batch);
void sampler_free(sampler *s);
int sampler_num_steps(const sampler *s);

/* A class-conditional model (num_classes K > 0) and the guidance weight W >= 0:
 * with labels, each step's epsilon is the guided one (sampler_guide) of the
 * conditional and the null-label predictions, both from one forward over 2n images
 * when the model accepts batches of 2n (else two forwards of n). W = 0: plain
 * conditional sampling, one forward. Returns 0, or -1 (err_msg) for W < 0 or not
 * finite, or W > 0 on an unconditional model (K = 0). */
int sampler_set_guidance(sampler *s, int num_classes, double guidance);

typedef void (*sampler_progress)(void *ctx, int step_done, int steps_total);

/* Generates images first .. first+n-1 (n <= max_batch) into x (n * D floats, values
 * in about [-1, 1]). y: the n images' class labels (0..K-1; K, the null label, also
 * allowed), borrowed; NULL: unconditional (a conditional model gets the null label).
 * The model must accept batches of n. */
void sampler_run(sampler *s, unet *model, const float *params, uint64_t first, int n,
                 const int *y, float *x, sampler_progress progress, void *ctx);

/* s->eps (n images) = the network's epsilon for x at timesteps s->t_model, as every
 * sampler step uses it: conditional on y (NULL: the null label / unconditional),
 * guided when a guidance weight is set and there are labels (the conditional and
 * the null-label halves in one forward of 2n images when the model takes them,
 * else two forwards of n). */
void sampler_eps(sampler *s, unet *model, const float *params, const float *x, const int *y,
                 int n);

/* Classifier-free guidance (Ho & Salimans 2022, eq. 6):
 * out = (1 + w) * eps_cond - w * eps_uncond over n values, computed in double and
 * rounded once. out may alias either input. */
void sampler_guide(float *out, const float *eps_cond, const float *eps_uncond, double w, size_t n);

/* [-1, 1] NCHW floats to uint8 NHWC as guided-diffusion does:
 * ((x + 1) * 127.5) clamped to [0, 255], then truncated. */
void sampler_to_uint8_nhwc(const float *x, int n, int channels, int size, uint8_t *out);

#endif
