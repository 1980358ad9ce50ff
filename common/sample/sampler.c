#include "common/sample/sampler.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/rng/rng.h"

static const char *const kind_names[] = {"ancestral", "ddim", "dpm-solver++",
                                         "sde-dpm-solver++"};
enum { N_KINDS = sizeof kind_names / sizeof kind_names[0] };

const char *sampler_kind_name(sampler_kind k) {
    return (unsigned)k < N_KINDS ? kind_names[k] : "?";
}

int sampler_kind_parse(const char *name, sampler_kind *out) {
    for (int k = 0; k < N_KINDS; k++)
        if (strcmp(name, kind_names[k]) == 0) {
            *out = (sampler_kind)k;
            return 0;
        }
    return -1;
}

sampler_opts sampler_opts_default(void) {
    return (sampler_opts){.kind = SAMPLER_ANCESTRAL, .steps = "", .eta = 0.0,
                          .variance = SAMPLING_VAR_BETA, .clip = -1,
                          .spacing = SAMPLER_SOLVER_DEFAULT_SPACING, .seed = 0};
}

/* The solver's step count: a plain positive integer (default 20, at most T). */
static int solver_steps(const char *spec, const char *kind_name, int T, int *n) {
    if (!spec || !*spec) {
        *n = T < SAMPLER_SOLVER_DEFAULT_STEPS ? T : SAMPLER_SOLVER_DEFAULT_STEPS;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(spec, &end, 10);
    if (*end || errno || v < 1 || v > T)
        return err_set("steps '%s': %s takes one number of network evaluations in "
                       "1..%d (e.g. 20); respacing lists such as '10,15,20' and 'ddimN' are for "
                       "the ancestral and ddim samplers", spec, kind_name, T);
    *n = (int)v;
    return 0;
}

/* The process the sampler walks: all T steps or a respacing (ancestral, ddim),
 * all T steps with the solver's plan over them (dpm-solver++). */
static int init_steps(sampler *s, const diffusion *base, const char *steps) {
    const sampler_opts *o = &s->o;
    char full[32];
    const char *spec = steps;
    const int solver = sampler_kind_is_solver(o->kind);
    if (solver || !spec || !*spec) {
        snprintf(full, sizeof full, "%s%d", o->kind == SAMPLER_DDIM ? "ddim" : "", base->T);
        spec = full;
    }
    if (solver) {
        int n = 0;
        if (solver_steps(steps, sampler_kind_name(o->kind), base->T, &n) != 0) return -1;
        if (diffusion_init_respaced(&s->steps, base, spec) != 0) return -1;
        return dpm_plan_init(&s->plan, &s->steps, n, o->spacing);
    }
    if (o->kind == SAMPLER_DDIM && !(o->eta >= 0 && o->eta <= 1))
        return err_set("DDIM eta must be in [0, 1], got %g", o->eta);
    return diffusion_init_respaced(&s->steps, base, spec);
}

int sampler_init(sampler *s, const diffusion *base, const sampler_opts *o, int channels,
                 int size, int max_batch) {
    memset(s, 0, sizeof *s);
    if ((unsigned)o->kind >= N_KINDS)
        return err_set("unknown sampler kind %d", (int)o->kind);
    s->o = *o;
    s->o.steps = NULL; /* borrowed: not kept past the call */
    if (s->o.clip < 0) s->o.clip = 1; /* every sampler (docs/diffusion.md: measured) */
    if (init_steps(s, base, o->steps) != 0) {
        sampler_free(s);
        return -1;
    }
    s->channels = channels;
    s->size = size;
    s->D = (size_t)channels * size * size;
    s->max_batch = max_batch;
    s->out_channels = channels;
    size_t nd = (size_t)max_batch * s->D;
    s->eps = xfloats(nd);
    s->z = xfloats(nd);
    s->x0 = xfloats(nd);
    s->x0_prev = xfloats(nd);
    s->t_model = xcalloc((size_t)max_batch, sizeof(int));
    s->t_step = xcalloc((size_t)max_batch, sizeof(int));
    return 0;
}

void sampler_free(sampler *s) {
    diffusion_free(&s->steps);
    dpm_plan_free(&s->plan);
    free(s->eps); free(s->v); free(s->z); free(s->x0); free(s->x0_prev); free(s->out);
    free(s->t_model); free(s->t_step);
    free(s->x2); free(s->eps2); free(s->t2); free(s->y2);
    memset(s, 0, sizeof *s);
}

int sampler_num_steps(const sampler *s) {
    return sampler_kind_is_solver(s->o.kind) ? s->plan.n : s->steps.T;
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

/* One forward of n images with labels y (NULL allowed); epsilon into eps. A
 * learned-variance model's output is [eps | v] per image: the v of the first nv
 * images goes to s->v (for the ancestral step), the rest is not needed. */
static void net_eval(sampler *s, const sampler_net *net, const float *x, const int *t,
                     const int *y, int n, float *eps, int nv) {
    float *out = s->out ? s->out : eps;
    unet_forward(net->model, net->params, x, t, y, n, NULL, out);
    if (out == eps) return;
    diffusion_split_output(out, nv, s->D, eps, s->v);
    diffusion_split_output(out + (size_t)nv * 2 * s->D, n - nv, s->D, eps + (size_t)nv * s->D,
                           NULL);
}

void sampler_model_eps(void *ctx, const float *x, const int *t, int n, float *eps) {
    sampler_net *net = ctx;
    sampler *s = net->s;
    const int *labels = s->num_classes > 0 ? net->y : NULL;
    if (!labels || s->guidance <= 0) {
        net_eval(s, net, x, t, labels, n, eps, n);
        return;
    }
    /* guided: the conditional and the null-label predictions (a learned variance's
     * v from the conditional half) */
    const size_t nd = (size_t)n * s->D;
    for (int i = 0; i < n; i++) {
        s->t2[i] = s->t2[n + i] = t[i];
        s->y2[i] = labels[i];
        s->y2[n + i] = s->num_classes; /* the null label */
    }
    if (unet_max_batch(net->model) >= 2 * n) {
        memcpy(s->x2, x, nd * sizeof *x);
        memcpy(s->x2 + nd, x, nd * sizeof *x);
        net_eval(s, net, s->x2, s->t2, s->y2, 2 * n, s->eps2, n);
    } else {
        net_eval(s, net, x, s->t2, s->y2, n, s->eps2, n);
        net_eval(s, net, x, s->t2 + n, s->y2 + n, n, s->eps2 + nd, 0);
    }
    sampler_guide(eps, s->eps2, s->eps2 + nd, s->guidance, nd);
}

/* The model's whole output (out, room for a guided batch of 2 max_batch) and a
 * learned variance's v, sized for the model that runs: its output has channels
 * (epsilon: no scratch) or, with learn_sigma, 2 x channels ([eps | v]). */
static void set_out_channels(sampler *s, int oc) {
    if (oc == s->out_channels) return;
    free(s->out); free(s->v);
    s->out = s->v = NULL;
    s->out_channels = oc;
    if (oc == s->channels) return;
    s->out = xfloats(2 * (size_t)s->max_batch * oc * s->size * s->size);
    s->v = xfloats((size_t)s->max_batch * s->D);
}

void sampler_eps(sampler *s, unet *model, const float *params, const float *x, const int *y,
                 int n) {
    set_out_channels(s, unet_out_channels(model));
    sampler_net net = {s, model, params, y};
    sampler_model_eps(&net, x, s->t_model, n, s->eps);
}

/* Every image in the batch at the same step: its index in the walked process
 * and the model's timestep input. */
static void set_step(sampler *s, int n, int k) {
    for (int i = 0; i < n; i++) {
        s->t_step[i] = k;
        s->t_model[i] = s->steps.timestep_map[k];
    }
}

/* A step's noise for images first..first+n-1 into s->z: image i's keyed on
 * (seed, step, first + i), whatever the batch. */
static const float *step_noise(sampler *s, int step, uint64_t first, int n) {
    for (int i = 0; i < n; i++) {
        rng_key key = {s->o.seed, (uint64_t)step, first + (uint64_t)i, RNG_PURPOSE_SAMPLE_STEP};
        rng_normal(&key, s->z + (size_t)i * s->D, s->D);
    }
    return s->z;
}

/* Ancestral (Algorithm 2) or DDIM over the walked process. */
static void run_respaced(sampler *s, sampler_eps_fn eps_fn, void *eps_ctx, uint64_t first, int n,
                         float *x, sampler_progress progress, void *ctx) {
    const sampler_opts *o = &s->o;
    int K = s->steps.T;
    /* a learned-variance model (its v filled by sampler_model_eps): v interpolates
     * each step's log variance between the walked process's beta and beta-tilde
     * (o->variance unused); DDIM ignores it */
    const int learned = s->v != NULL;
    for (int k = K - 1; k >= 0; k--) {
        set_step(s, n, k);
        eps_fn(eps_ctx, x, s->t_model, n, s->eps);
        const float *z = NULL;
        if (k > 0 && (o->kind != SAMPLER_DDIM || o->eta > 0)) z = step_noise(s, k, first, n);
        if (o->kind == SAMPLER_DDIM)
            diffusion_ddim_step(&s->steps, o->eta, o->clip, x, s->x0, x, s->eps, z, s->t_step, n,
                                s->D);
        else if (learned)
            diffusion_p_sample_learned(&s->steps, o->clip, x, s->x0, x, s->eps, s->v, z, s->t_step,
                                       n, s->D);
        else
            diffusion_p_sample(&s->steps, o->variance, o->clip, x, s->x0, x, s->eps, z, s->t_step,
                               n, s->D);
        if (progress) progress(ctx, K - k, K);
    }
}

/* DPM-Solver++(2M) over the plan: one evaluation per step; no noise after x_T.
 * SDE-DPM-Solver++(2M): noise z into every step but the last (into the clean data),
 * image i's keyed on (seed, the step's index t_i, first + i) as ancestral's are. */
static void run_solver(sampler *s, sampler_eps_fn eps_fn, void *eps_ctx, uint64_t first, int n,
                       float *x, sampler_progress progress, void *ctx) {
    const dpm_plan *p = &s->plan;
    for (int i = 0; i < p->n; i++) {
        set_step(s, n, p->t[i]);
        eps_fn(eps_ctx, x, s->t_model, n, s->eps);
        dpm_solver_x0(p, i, s->o.clip, s->x0, x, s->eps, n, s->D);
        const float *z = NULL;
        if (s->o.kind == SAMPLER_SDE_DPM_SOLVER && i < p->n - 1) z = step_noise(s, p->t[i], first, n);
        dpm_solver_step(p, i, x, s->x0, s->x0_prev, z, n, s->D);
        float *tmp = s->x0_prev; /* this step's x0 is the next step's previous one */
        s->x0_prev = s->x0;
        s->x0 = tmp;
        if (progress) progress(ctx, i + 1, p->n);
    }
}

void sampler_run_eps(sampler *s, sampler_eps_fn eps_fn, void *eps_ctx, uint64_t first, int n,
                     float *x, sampler_progress progress, void *ctx) {
    for (int i = 0; i < n; i++) {
        rng_key k = {s->o.seed, 0, first + (uint64_t)i, RNG_PURPOSE_SAMPLE_INIT};
        rng_normal(&k, x + (size_t)i * s->D, s->D);
    }
    if (sampler_kind_is_solver(s->o.kind))
        run_solver(s, eps_fn, eps_ctx, first, n, x, progress, ctx);
    else
        run_respaced(s, eps_fn, eps_ctx, first, n, x, progress, ctx);
}

void sampler_run(sampler *s, unet *model, const float *params, uint64_t first, int n,
                 const int *y, float *x, sampler_progress progress, void *ctx) {
    /* the weights stay fixed for the whole run: their Winograd transforms are
     * computed once (without the memory for them, every step computes its own) */
    const int prepared = !unet_prepared(model, params) && unet_prepare(model, params) == 0;
    set_out_channels(s, unet_out_channels(model));
    sampler_net net = {s, model, params, y};
    sampler_run_eps(s, sampler_model_eps, &net, first, n, x, progress, ctx);
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
