/* training.sample_every: a grid of samples from the weights being trained
 * (coordinator.h, coordinator_sample). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/io/image_io.h"
#include "common/sample/sampler.h"
#include "coordinator/coordinator.h"

/* The grid is drawn at least this wide (nearest-neighbour scaling). */
#define SAMPLE_GRID_MIN_WIDTH 512
/* DDIM over this many respaced steps (all T when T is smaller). */
#define SAMPLE_DDIM_STEPS 50

typedef struct {
    void (*serve)(void);
} sample_progress;

static void on_step(void *ctx, int done, int total) {
    (void)done;
    (void)total;
    const sample_progress *p = ctx;
    if (p->serve) p->serve();
}

/* The grid of the n images: written to `path` (output.dir/samples/step-<step>.png)
 * and into the event file. */
static int write_grid(coordinator *c, const uint8_t *u8, int n, char *path, size_t cap) {
    const config *cfg = c->cfg;
    int S = cfg->model.image_size, C = cfg->model.in_channels;
    int cols = (int)ceil(sqrt((double)n)), gw, gh;
    image_grid_dims(n, S, cols, &gw, &gh);
    int scale = image_grid_scale_for(gw, SAMPLE_GRID_MIN_WIDTH);
    char dir[CONFIG_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/samples", cfg->output.dir);
    snprintf(path, cap, "%s/step-%llu.png", dir, (unsigned long long)c->step);
    uint8_t *grid = mkdir_p(dir) == 0 ? image_grid_make(path, u8, n, S, C, cols, scale, &gw, &gh) : NULL;
    if (!grid) return -1;
    int rc = image_write_png(path, grid, gw, gh, C);
    uint8_t *png = NULL;
    size_t len = 0;
    if (rc == 0 && c->tb_on) {
        if (image_encode_png(grid, gw, gh, C, &png, &len) != 0 ||
            tfevents_image_png(&c->tb, (int64_t)c->step, "samples", png, len, gw, gh, C) != 0 ||
            tfevents_flush(&c->tb) != 0)
            coordinator_tb_failed(c);
    }
    free(png);
    free(grid);
    return rc;
}

int coordinator_sample(coordinator *c, const diffusion *diff, const float *weights,
                       void (*serve)(void)) {
    const config *cfg = c->cfg;
    int n = cfg->training.sample_images, S = cfg->model.image_size, C = cfg->model.in_channels;
    double t0 = now_seconds();
    if (!c->sample_model && !(c->sample_model = unet_create(&cfg->model, n, 0, &c->unet_opt)))
        return err_prefix("training.sample_every: ");
    char spec[32] = "";
    if (diff->T > SAMPLE_DDIM_STEPS) snprintf(spec, sizeof spec, "%d", SAMPLE_DDIM_STEPS);
    sampler s;
    sampler_opts so = sampler_opts_default();
    so.kind = SAMPLER_DDIM;
    so.steps = spec;
    so.clip = 1;
    /* a class-conditional model draws with the null label (as ddpm-sample without
     * --class): the unconditional model that label dropout trains */
    if (sampler_init(&s, diff, &so, C, S, n) != 0)
        return err_prefix("training.sample_every: ");
    size_t D = (size_t)C * S * S;
    float *x = xfloats((size_t)n * D);
    uint8_t *u8 = xmalloc((size_t)n * D);
    sample_progress sp = {serve};
    sampler_run(&s, c->sample_model, weights, 0, n, NULL, x, on_step, &sp);
    sampler_to_uint8_nhwc(x, n, C, S, u8);
    int steps = sampler_num_steps(&s);
    sampler_free(&s);
    free(x);
    char path[CONFIG_PATH_MAX + 64];
    int rc = write_grid(c, u8, n, path, sizeof path);
    free(u8);
    /* the next metrics line's images/s counts training time only */
    c->t_window += now_seconds() - t0;
    if (rc == 0)
        log_info("step %llu: samples -> %s (%d images, DDIM %d steps, %s weights, %.1f s)",
                 (unsigned long long)c->step, path, n, steps,
                 cfg->training.sample_weights == SAMPLE_WEIGHTS_EMA ? "EMA" : "trained",
                 now_seconds() - t0);
    return rc;
}
