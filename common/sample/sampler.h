/* The samplers over a trained eps_theta: Algorithm 2 (ancestral) over all or a
 * respaced subset of the steps, DDIM, and DPM-Solver++(2M) (dpm_solver.h). Every
 * sampler gets its epsilon from one function per network evaluation (the model's
 * forward pass, first `channels` channels of its output: sampler_model_eps), so
 * whatever changes that epsilon changes it for all of them. Image i's initial
 * noise and every step's noise are keyed on (seed, i, step), so image i is the
 * same whatever the batch size or thread count. A class-conditional model samples
 * with its labels, with classifier-free guidance (Ho & Salimans 2022) when a
 * guidance weight is set (in that one function, so every sampler guides). */
#ifndef DDPM_SAMPLER_H
#define DDPM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "common/diffusion/diffusion.h"
#include "common/diffusion/dpm_solver.h"
#include "common/model/unet.h"

typedef enum {
    SAMPLER_ANCESTRAL = 0,
    SAMPLER_DDIM = 1,
    SAMPLER_DPM_SOLVER = 2,     /* DPM-Solver++(2M), the ODE */
    SAMPLER_SDE_DPM_SOLVER = 3  /* SDE-DPM-Solver++(2M): the same plan, noise each step */
} sampler_kind;

/* Both DPM-Solver++ kinds: a plan of N network evaluations (dpm_solver.h). */
static inline int sampler_kind_is_solver(sampler_kind k) {
    return k == SAMPLER_DPM_SOLVER || k == SAMPLER_SDE_DPM_SOLVER;
}

/* "ancestral", "ddim", "dpm-solver++", "sde-dpm-solver++"; the parser returns -1
 * for any other name. */
const char *sampler_kind_name(sampler_kind k);
int sampler_kind_parse(const char *name, sampler_kind *out);

/* How to sample. sampler_opts_default(): ancestral over all T steps, beta
 * variance, clip -1, the solver's default spacing, seed 0. */
typedef struct {
    sampler_kind kind;
    /* ancestral, ddim: "" or NULL for all T steps, else improved-diffusion's
     * respacing ("100", "ddim50", "10,15,20"). The solvers: the number of
     * network evaluations N ("" or NULL: 20); anything else is refused. */
    const char *steps;
    double eta;                  /* ddim only, in [0, 1] */
    sampling_variance variance;  /* ancestral only; unused for a learned-variance model */
    int clip;                    /* clip the predicted x0 to [-1, 1]: 1, 0, or -1 for the
                                    sampler's default (on for every sampler) */
    dpm_spacing spacing;         /* the solvers only */
    uint64_t seed;
} sampler_opts;

/* The solver's default step count and spacing (measured: docs/diffusion.md). */
#define SAMPLER_SOLVER_DEFAULT_STEPS 20
#define SAMPLER_SOLVER_DEFAULT_SPACING DPM_SPACING_LOGSNR

sampler_opts sampler_opts_default(void);

/* epsilon for n images x (n * D floats) at model timestep indices t (n ints, all
 * equal within a call), into eps (n * D floats). */
typedef void (*sampler_eps_fn)(void *ctx, const float *x, const int *t, int n, float *eps);

typedef struct {
    sampler_opts o;
    diffusion steps;     /* the (possibly respaced) process walked; dpm-solver++: all T
                            steps, which its plan's indices point into; owned */
    dpm_plan plan;       /* dpm-solver++: its time points; owned */
    int channels, size;
    size_t D;
    int max_batch;
    int out_channels;    /* channels of the model's output (channels: epsilon only;
                            2 x channels: a learn_sigma model's [eps | v]) */
    /* owned scratch, max_batch images; out (the model's whole output) only when it
     * has more channels than epsilon, v (a learned variance's v) only for a
     * learn_sigma model, else NULL; sized by sampler_run for its model */
    float *eps, *z, *x0, *x0_prev, *out, *v;
    int *t_model, *t_step;
    /* classifier-free guidance (sampler_set_guidance): the model's class count, the
     * weight W, and scratch for the 2n-image batch [conditional; null label] */
    int num_classes;
    double guidance;
    float *x2, *eps2;
    int *t2, *y2;
} sampler;

/* base is borrowed only during the call. 0 or -1 (err_msg naming the option). */
int sampler_init(sampler *s, const diffusion *base, const sampler_opts *o, int channels,
                 int size, int max_batch);
void sampler_free(sampler *s);
/* Network evaluations per image (= steps). */
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
 * allowed), borrowed; NULL: unconditional (a conditional model gets the null label;
 * with a guidance weight, sampler_set_guidance, the guided epsilon). The model must accept batches of n. A model with learned
 * variances (unet_out_channels twice channels) sets each ancestral step's variance
 * from its v output, on the walked (respaced) process's betas, as improved-diffusion
 * does; DDIM uses only eps. */
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

/* The same loop with epsilon from eps_fn (what sampler_run passes is
 * sampler_model_eps over the model); reference tests plug in a closed-form
 * epsilon. Calls eps_fn exactly sampler_num_steps(s) times. */
void sampler_run_eps(sampler *s, sampler_eps_fn eps_fn, void *eps_ctx, uint64_t first, int n,
                     float *x, sampler_progress progress, void *ctx);

/* What sampler_model_eps evaluates: the sampler (its scratch) and the network. */
typedef struct {
    sampler *s;
    unet *model;
    const float *params;
    const int *y;        /* the images' labels, or NULL */
} sampler_net;

/* The one network evaluation of every sampler (ctx: a sampler_net): the forward
 * pass, then the first `channels` channels of each image's output. */
void sampler_model_eps(void *ctx, const float *x, const int *t, int n, float *eps);

/* [-1, 1] NCHW floats to uint8 NHWC as guided-diffusion does:
 * ((x + 1) * 127.5) clamped to [0, 255], then truncated. */
void sampler_to_uint8_nhwc(const float *x, int n, int channels, int size, uint8_t *out);

#endif
