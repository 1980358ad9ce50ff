/* Decoder target: PNG, JPEG and WebP (sniffed by their magic bytes) through
 * image_decode_rgb, the decoder the image_folder dataset and ddpm-prep call, then
 * guided-diffusion's preprocessing (grey, center_crop_arr to 8x8) as
 * image_preprocess runs it. The pixel limit is lowered to 2^16 so that every input
 * stays cheap; the checks before that limit (header, coded-size floor, scans) are
 * the same. An accepted image must have sane dimensions within the limit, a
 * buffer of exactly width*height*3 bytes (the last byte is read: ASan sees a short
 * one) and decode to the same bytes twice (no uninitialised pixels left grey). */
#include <string.h>

#include "common/data/resample.h"
#include "common/io/image_io.h"
#include "fuzz/fuzz.h"

#define FUZZ_IMAGE_MAX_PIXELS ((size_t)1 << 16)
#define FUZZ_CROP 8

int fuzz_check(const uint8_t *data, size_t size) {
    uint8_t *rgb = NULL, *again = NULL;
    int w = -1, h = -1;
    fuzz_err_clear();
    if (image_decode_rgb_limit(data, size, "fuzz.img", FUZZ_IMAGE_MAX_PIXELS, &rgb, &w, &h) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("image: refused without a message");
        if (!strstr(err_msg(), "fuzz.img")) FUZZ_FAIL("image: message does not name the file: %s", err_msg());
        return 0;
    }
    if (!rgb) FUZZ_FAIL("image: accepted without pixels");
    if (w < 1 || h < 1 || (size_t)w * (size_t)h > FUZZ_IMAGE_MAX_PIXELS)
        FUZZ_FAIL("image: accepted a %dx%d image (limit %zu pixels)", w, h, FUZZ_IMAGE_MAX_PIXELS);
    size_t bytes = (size_t)w * h * 3;
    volatile uint8_t last = rgb[bytes - 1];
    (void)last;
    int w2, h2;
    if (image_decode_rgb_limit(data, size, "fuzz.img", FUZZ_IMAGE_MAX_PIXELS, &again, &w2, &h2) != 0)
        FUZZ_FAIL("image: the second decode failed: %s", err_msg());
    if (w2 != w || h2 != h || memcmp(rgb, again, bytes) != 0) FUZZ_FAIL("image: two decodes differ");
    free(again);
    /* The preprocessing: grey (channels 1) and center_crop_arr; a refusal (an
     * extreme aspect ratio) must say why. */
    uint8_t *grey = xmalloc((size_t)w * h), out[FUZZ_CROP * FUZZ_CROP * 3];
    rgb_to_grey_u8(rgb, grey, (size_t)w * h);
    fuzz_err_clear();
    if (center_crop_u8(rgb, w, h, 3, FUZZ_CROP, out) != 0 && fuzz_err_empty())
        FUZZ_FAIL("image: center crop refused without a message");
    fuzz_err_clear();
    if (center_crop_u8(grey, w, h, 1, FUZZ_CROP, out) != 0 && fuzz_err_empty())
        FUZZ_FAIL("image: grey center crop refused without a message");
    free(grey);
    free(rgb);
    return 1;
}
