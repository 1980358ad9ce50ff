/* The U-Net's limits, defined once, by the model. Part of common/model/unet.h;
 * a header of its own only because model_config (still in common/config/config.h,
 * which sizes its lists with these) must see them before unet.h can see
 * model_config. The config validator takes every model range from here and
 * calls unet_check_config (unet.h) for the rest, so a model built from a config
 * file, an override or a checkpoint header meets the same rules. */
#ifndef DDPM_UNET_LIMITS_H
#define DDPM_UNET_LIMITS_H

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
/* Sizes the structure implies, checked before anything is allocated. */
#define UNET_MAX_PARAMS ((size_t)1 << 32)        /* 16 GiB per float copy (paper's largest: 114M) */
#define UNET_MAX_LAYER_FLOATS ((size_t)1 << 32)  /* one layer's output or attention matrix, per image */
#define UNET_MAX_ACTIVATION_BYTES ((size_t)1 << 50) /* estimate for the batch a model is built for */

#endif
