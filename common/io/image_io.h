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

/* Limits on what a file may declare, checked before the image is allocated:
 *  - at most IMAGE_MAX_PIXELS pixels: 2^27 = 134 million, above 100-megapixel
 *    photos (11648x8736) and far above LSUN/ImageNet (~256..500 px a side). The
 *    largest image costs about 400 MB of RGB plus, for a progressive JPEG, up to
 *    800 MB of libjpeg coefficients;
 *  - at least as many coded bytes as the format needs for that size, so that a small
 *    file cannot declare a huge image: PNG, raw rows / 1032 (deflate's largest
 *    expansion); JPEG with Huffman coding, 1 bit per 8x8 block in every scan that
 *    first codes the DC of its components (real photos use 50..1000 times that; a
 *    flat progressive grey image is at 2 bits); lossy WebP, 1 bit per 16x16
 *    macroblock (a flat image takes ~3.5). Lossless WebP and arithmetic-coded JPEG
 *    have no such floor: only the pixel limit applies;
 *  - JPEG: every component has data, at most 256 scans; premature end, bad Huffman
 *    or arithmetic codes and lost restart markers are errors (libjpeg would fill the
 *    rest of the image with grey and only warn). */
#define IMAGE_MAX_PIXELS ((size_t)1 << 27)

/* Largest image file read (2 GiB): above any file that holds an image within
 * IMAGE_MAX_PIXELS (an uncompressed 16-bit RGBA PNG of 2^27 pixels is 1 GiB). */
#define IMAGE_MAX_FILE_BYTES ((size_t)1 << 31)

/* Reads a whole regular file (not a FIFO or device) of at most max_bytes (capped at
 * IMAGE_MAX_FILE_BYTES) into *data (caller frees). Returns 0 or -1 (err_msg names
 * the file). */
int image_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len);

/* Decode a PNG, JPEG or WebP file (recognised by its magic bytes, not its name) into
 * *rgb (HWC, 3 bytes a pixel; caller owns and frees it). Returns 0, or -1 with
 * err_msg() naming the file (missing, unknown format, corrupt, truncated, too large). */
int image_load_rgb(const char *path, uint8_t **rgb, int *width, int *height);

/* Same, from a buffer already in memory (borrowed); `name` is used in messages. */
int image_decode_rgb(const uint8_t *data, size_t len, const char *name, uint8_t **rgb,
                     int *width, int *height);

/* Same, with a lower pixel limit (at most IMAGE_MAX_PIXELS): the fuzz target's,
 * which keeps each input cheap. */
int image_decode_rgb_limit(const uint8_t *data, size_t len, const char *name, size_t max_pixels, uint8_t **rgb,
                           int *width, int *height);

/* Write an 8-bit PNG from `hwc` (borrowed; channels 1 = grey, 3 = RGB). Written to a
 * temporary file beside `path`, then renamed. Returns 0 or -1 (err_msg names the path). */
int image_write_png(const char *path, const uint8_t *hwc, int width, int height, int channels);

/* A grid of n images (uint8 NHWC, size x size x channels, borrowed) in `cols` columns
 * (fewer if n < cols), ceil(n/cols) rows, 2 black pixels around and between images
 * (as torchvision's make_grid(padding=2)), written as a PNG. Returns 0 or -1. */
int image_write_grid_png(const char *path, const uint8_t *nhwc, int n, int size, int channels, int cols);

/* The largest --grid-scale: beyond it a pixel is no easier to see. */
#define IMAGE_MAX_GRID_SCALE 64

/* The same grid with every pixel drawn as a scale x scale block (nearest
 * neighbour: no pixel value is invented). Refused above IMAGE_MAX_PIXELS. */
int image_write_grid_png_scaled(const char *path, const uint8_t *nhwc, int n, int size,
                                int channels, int cols, int scale);
/* That grid in memory (caller frees; HWC, *width x *height), or NULL with err_msg()
 * (name names it in messages). */
uint8_t *image_grid_make(const char *name, const uint8_t *nhwc, int n, int size, int channels,
                         int cols, int scale, int *width, int *height);
/* out (width*k x height*k) = in with every pixel repeated k x k times. */
void image_upscale_nearest(const uint8_t *in, int width, int height, int channels, int k,
                           uint8_t *out);
/* The smallest scale (1..IMAGE_MAX_GRID_SCALE) that makes `width` at least min_width. */
int image_grid_scale_for(int width, int min_width);
/* A PNG file's bytes in memory (caller frees *png). 0 or -1. */
int image_encode_png(const uint8_t *hwc, int width, int height, int channels, uint8_t **png,
                     size_t *len);

/* Lay out the grid described above into `out` (caller-owned; see image_grid_dims). */
void image_grid_fill(uint8_t *out, const uint8_t *nhwc, int n, int size, int channels, int cols);
/* Width and height of that grid. */
void image_grid_dims(int n, int size, int cols, int *width, int *height);

#endif
