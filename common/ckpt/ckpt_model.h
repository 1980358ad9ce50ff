/* A trained model from a checkpoint: the one loader that ddpm-sample, ddpm-eval
 * and any later exporter use. It reads the checkpoint's header, builds the config
 * it was trained with (validated as a config file is, named after the
 * checkpoint), the U-Net for batches of at most max_batch images (forward only),
 * the diffusion schedule, and one set of weights (EMA or raw parameters). */
#ifndef DDPM_CKPT_MODEL_H
#define DDPM_CKPT_MODEL_H

#include "common/ckpt/checkpoint.h"
#include "common/config/config.h"
#include "common/diffusion/diffusion.h"
#include "common/model/unet.h"

typedef struct {
    ckpt_header h;     /* the checkpoint's header: step, layout, config text (owned) */
    config cfg;        /* the config it was trained with */
    unet *model;       /* forward-only, for max_batch images (owned) */
    float *weights;    /* unet_num_params(model) floats (owned) */
    diffusion diff;    /* the training schedule (owned) */
} ckpt_model;

/* which: CKPT_EMA or CKPT_PARAMS. opt: as for unet_create (NULL: defaults).
 * precision: the model's arithmetic (OPS_FP32 or OPS_BF16, replacing opt's), or
 * CKPT_PRECISION_TRAINED for the training.precision of the checkpoint's config
 * (fp32 for checkpoints written before the key existed). The weights are fp32
 * whatever the precision. Returns 0, or -1 with err_msg() naming the checkpoint
 * (then *cm holds nothing: ckpt_model_free is still safe). */
#define CKPT_PRECISION_TRAINED (-1)
int ckpt_model_load(ckpt_model *cm, const char *path, int which, int max_batch,
                    const unet_options *opt, int precision);
/* The programs' --precision: "fp32", "bf16", or "trained" (CKPT_PRECISION_TRAINED);
 * -2 for any other name. */
int ckpt_precision_parse(const char *name);
/* "ema" or "params" for CKPT_EMA / CKPT_PARAMS. */
const char *ckpt_weights_name(int which);
/* The inverse, for the programs' --weights: CKPT_EMA, CKPT_PARAMS, or 0 for any
 * other name. */
int ckpt_weights_parse(const char *name);
void ckpt_model_free(ckpt_model *cm);

#endif
