/* Image resampling that reproduces Pillow 9.x's Image.resize for 8-bit images
 * (BOX and BICUBIC filters), and guided-diffusion's center_crop_arr built on it.
 *
 * Why bit-compatible: FID references and pretrained models were made with PIL's
 * preprocessing; matching it (to 1 LSB) keeps our data distribution identical.
 *
 * Algorithm (Pillow's, re-implemented): separable, horizontal pass then vertical
 * pass; for each output pixel the filter is centred at in0 + (i + 0.5) * scale,
 * its support is widened by the downscale factor, the weights are normalised to
 * sum 1, converted to 22-bit fixed point, and every pass rounds back to uint8. */
#ifndef DDPM_RESAMPLE_H
#define DDPM_RESAMPLE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { RESAMPLE_BOX = 0, RESAMPLE_BICUBIC = 1 } resample_filter;

/* Resize an interleaved uint8 image (HWC, `channels` 1..4) from in_w x in_h to
 * out_w x out_h. Borrows `in`; writes into caller-owned `out` (out_w*out_h*channels).
 * Returns 0, or -1 (err_msg) on invalid sizes. */
int resample_u8(const uint8_t *in, int in_w, int in_h, int channels,
                uint8_t *out, int out_w, int out_h, resample_filter filter);

/* Largest intermediate center_crop_u8 builds (the image resized so that its short
 * side is `size`): 256 MiB, i.e. aspect ratios up to 1365:1 for 256x256 RGB crops
 * (85:1 at 1024). Without it a 65535x1 PNG of 100 bytes became 800 MB at size 64. */
#define RESAMPLE_MAX_BYTES ((size_t)1 << 28)

/* guided-diffusion's center_crop_arr: halve with BOX while min(w,h) >= 2*size,
 * BICUBIC to round(w*scale) x round(h*scale) with scale = size/min(w,h), then the
 * centred size x size crop. Borrows `in` (HWC); writes size*size*channels bytes
 * (HWC) into caller-owned `out`. Returns 0 or -1 (err_msg: invalid sizes, or an
 * intermediate over RESAMPLE_MAX_BYTES). */
int center_crop_u8(const uint8_t *in, int w, int h, int channels, int size, uint8_t *out);

/* RGB (HWC) -> grey as PIL's convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16,
 * i.e. ITU-R 601-2 luma in 16-bit fixed point. `out` may not alias `rgb`. */
void rgb_to_grey_u8(const uint8_t *rgb, uint8_t *out, size_t pixels);

#endif
