/* The model's configuration and its limits, defined once, by the model (the config
 * layer only parses into model_config). The config validator takes every model
 * range from here and calls unet_check_config (common/model/unet.h) for the rest,
 * so a model built from a config file, an override or a checkpoint header meets
 * the same rules. */
#ifndef DDPM_MODEL_CONFIG_H
#define DDPM_MODEL_CONFIG_H

#include <stddef.h>

#define UNET_MIN_IMAGE_SIZE 4
#define UNET_MAX_IMAGE_SIZE 4096
#define UNET_MAX_IN_CHANNELS 4       /* grey, RGB, RGBA */
#define UNET_GN_GROUPS 32            /* GroupNorm groups: every width a multiple of 32 */
#define UNET_MIN_CH UNET_GN_GROUPS
#define UNET_MAX_CH 4096
#define UNET_MAX_CH_MULT 64          /* each entry of ch_mult, 1..64 */
#define UNET_MAX_LEVELS 8            /* entries of ch_mult */
#define UNET_MAX_RES_BLOCKS 64       /* res blocks per level (down path; up has one more) */
#define UNET_MAX_ATTN 8              /* entries of attn_resolutions */
#define UNET_MAX_CLASSES 100000      /* num_classes (ImageNet-21k has 21841) */
/* Sizes the structure implies, checked before anything is allocated. */
#define UNET_MAX_PARAMS ((size_t)1 << 32)        /* 16 GiB per float copy (paper's largest: 114M) */
#define UNET_MAX_LAYER_FLOATS ((size_t)1 << 32)  /* one layer's output or attention matrix, per image */
#define UNET_MAX_ACTIVATION_BYTES ((size_t)1 << 50) /* estimate for the batch a model is built for */

/* The YAML section `model` (docs/config.md): the ranges are the UNET_* above,
 * checked by unet_check_config in common/model/unet.h, which config_validate calls. */
typedef struct {
    int image_size;         /* required, 4..4096; divisible by 2^(num_levels-1) */
    int in_channels;        /* required, 1..4; 1 for data.format idx, 3 for cifar10. The
                               output has the same count (epsilon), twice it with learn_sigma */
    int ch;                 /* required, 32..4096, multiple of 32 (GroupNorm 32 groups) */
    int ch_mult[UNET_MAX_LEVELS]; /* required list, entries 1..64; ch*mult multiple of 32 */
    int num_levels;         /* length of ch_mult, 1..8 */
    int num_res_blocks;     /* required, 1..64 */
    int attn_resolutions[UNET_MAX_ATTN]; /* default []; each one of image_size/2^i,
                                              i < num_levels, no repeats */
    int num_attn;           /* length of attn_resolutions, 0..8 */
    /* and the whole: at most 2^32 parameters, no layer over 2^32 floats per image
     * (attention at 256x256 at most), activations estimated below 2^50 bytes */
    double dropout;         /* [0, 1), default 0.0 */
    int resamp_with_conv;   /* bool, default true */
    int learn_sigma;        /* bool, default false: the output also holds v, in_channels more
                               channels, whose (v+1)/2 interpolates the log variance of
                               p(x_{t-1}|x_t) between log beta_t and log beta-tilde_t
                               (improved DDPM; docs/diffusion.md) */
    int num_classes;        /* 0..100000, default 0 = unconditional; K > 0: a label
                               embedding label_emb.weight [K + 1][4 ch] whose row K is
                               the null label (classifier-free guidance) */
} model_config;

#endif
