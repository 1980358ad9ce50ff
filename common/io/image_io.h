/* Image files: decode PNG/JPEG/WebP to 8-bit RGB, write PNG images and image grids.
 * (The .npz writer lives in common/io/npz.h and is included here for convenience.)
 *
 * Decoding matches what PIL's Image.open(f).convert("RGB") returns: 16-bit samples
 * keep their high byte, palettes and grey are expanded, alpha (and tRNS) is dropped
 * without compositing, no gamma or colour management is applied. Errors name the file. */
#ifndef DDPM_IMAGE_IO_H
#define DDPM_IMAGE_IO_H

#include <stddef.h>
#include <stdint.h>

#include "common/io/npz.h"

/* Largest image (in pixels) we agree to decode: guards against decompression bombs. */
#define IMAGE_MAX_PIXELS ((size_t)1 << 28)

/* Decode a PNG, JPEG or WebP file (recognised by its magic bytes, not its name) into
 * *rgb (HWC, 3 bytes a pixel; caller owns and frees it). Returns 0, or -1 with
 * err_msg() naming the file (missing, unknown format, corrupt, truncated, too large). */
int image_load_rgb(const char *path, uint8_t **rgb, int *width, int *height);

/* Same, from a buffer already in memory (borrowed); `name` is used in messages. */
int image_decode_rgb(const uint8_t *data, size_t len, const char *name, uint8_t **rgb,
                     int *width, int *height);

/* Write an 8-bit PNG from `hwc` (borrowed; channels 1 = grey, 3 = RGB). Written to a
 * temporary file beside `path`, then renamed. Returns 0 or -1 (err_msg names the path). */
int image_write_png(const char *path, const uint8_t *hwc, int width, int height, int channels);

/* A grid of n images (uint8 NHWC, size x size x channels, borrowed) in `cols` columns
 * (fewer if n < cols), ceil(n/cols) rows, 2 black pixels around and between images
 * (as torchvision's make_grid(padding=2)), written as a PNG. Returns 0 or -1. */
int image_write_grid_png(const char *path, const uint8_t *nhwc, int n, int size, int channels, int cols);

/* Lay out the grid described above into `out` (caller-owned; see image_grid_dims). */
void image_grid_fill(uint8_t *out, const uint8_t *nhwc, int n, int size, int channels, int cols);
/* Width and height of that grid. */
void image_grid_dims(int n, int size, int cols, int *width, int *height);

#endif
