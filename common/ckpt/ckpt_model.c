#include "common/ckpt/ckpt_model.h"

#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"

const char *ckpt_weights_name(int which) { return which == CKPT_EMA ? "ema" : "params"; }

int ckpt_weights_parse(const char *name) {
    if (strcmp(name, "ema") == 0) return CKPT_EMA;
    if (strcmp(name, "params") == 0) return CKPT_PARAMS;
    return 0;
}

int ckpt_precision_parse(const char *name) {
    if (strcmp(name, "trained") == 0) return CKPT_PRECISION_TRAINED;
    for (int i = 0; ops_precision_names[i]; i++)
        if (strcmp(name, ops_precision_names[i]) == 0) return i;
    return -2;
}

int ckpt_model_load(ckpt_model *cm, const char *path, int which, int max_batch,
                    const unet_options *opt, int precision) {
    memset(cm, 0, sizeof *cm);
    if (which != CKPT_EMA && which != CKPT_PARAMS)
        return err_set("%s: weights must be ema or params", path);
    if (ckpt_read_header(path, &cm->h) != 0) goto fail;
    if (config_load_string(&cm->cfg, cm->h.config_yaml, strlen(cm->h.config_yaml), path) != 0)
        goto fail;
    unet_options o = opt ? *opt : unet_options_default();
    o.precision = precision == CKPT_PRECISION_TRAINED ? cm->cfg.training.precision
                                                      : (ops_precision)precision;
    cm->model = unet_create(&cm->cfg.model, max_batch, 0, &o);
    if (!cm->model) goto fail;
    size_t P = unet_num_params(cm->model);
    cm->weights = xfloats(P);
    ckpt_header_free(&cm->h);
    if (ckpt_read(path, &cm->h, P, which, which == CKPT_PARAMS ? cm->weights : NULL,
                  which == CKPT_EMA ? cm->weights : NULL, NULL, NULL) != 0)
        goto fail;
    if (!(cm->h.sections & which)) {
        err_set("%s: holds no %s weights", path, ckpt_weights_name(which));
        goto fail;
    }
    const diffusion_config *dc = &cm->cfg.diffusion;
    if (diffusion_init(&cm->diff, dc->schedule, dc->timesteps, dc->beta_start, dc->beta_end) != 0)
        goto fail;
    return 0;
fail:
    ckpt_model_free(cm);
    return -1;
}

void ckpt_model_free(ckpt_model *cm) {
    ckpt_header_free(&cm->h);
    unet_free(cm->model);
    free(cm->weights);
    if (cm->diff.betas) diffusion_free(&cm->diff);
    memset(cm, 0, sizeof *cm);
}
