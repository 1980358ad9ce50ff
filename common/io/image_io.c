/* PNG (libpng) and JPEG (libjpeg-turbo) decoding to RGB, PNG writing. */
#include "common/io/image_io.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jpeglib.h>
#include <jerror.h>
#include <webp/decode.h>

#include "common/core/util.h"

/* ---------- reading whole files ---------- */

static int read_file(const char *path, uint8_t **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set("%s: read error", path);
    }
    *data = buf;
    *len = n;
    return 0;
}

/* ---------- PNG decode ---------- */

typedef struct {
    const char *name;
    const uint8_t *data;
    size_t len, pos;
    char msg[256];
    uint8_t *pixels;     /* owned until handed to the caller */
    png_bytep *rows;
} png_read_ctx;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_read_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* benign (e.g. an ancillary chunk's CRC); PIL ignores these too */
}

static void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
    png_read_ctx *c = png_get_io_ptr(png);
    if (n > c->len - c->pos) png_error(png, "truncated file (unexpected end of data)");
    memcpy(out, c->data + c->pos, n);
    c->pos += n;
}

static int png_decode(png_read_ctx *c, int *width, int *height) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, png_on_error, png_on_warning);
    if (!png) return err_set("%s: libpng init failed", c->name);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return err_set("%s: libpng init failed", c->name);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(c->pixels);
        free(c->rows);
        c->pixels = NULL;
        c->rows = NULL;
        return err_set("%s: corrupt PNG: %s", c->name, c->msg);
    }
    png_set_read_fn(png, c, png_read_mem);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if ((size_t)w * h > IMAGE_MAX_PIXELS) {
        png_destroy_read_struct(&png, &info, NULL);
        return err_set("%s: image %ux%u is too large (limit %zu pixels)", c->name, (unsigned)w,
                       (unsigned)h, IMAGE_MAX_PIXELS);
    }
    /* Normalise every PNG flavour to 8-bit RGB the way PIL's convert("RGB") does. */
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png); /* high byte, as PIL's "RGB;16B" unpacker */
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8)
        png_error(png, "unsupported pixel layout");
    size_t stride = png_get_rowbytes(png, info);
    if (stride != (size_t)w * 3) png_error(png, "unexpected row size");
    c->pixels = xmalloc(stride * h);
    c->rows = xmalloc(sizeof(png_bytep) * h);
    for (png_uint_32 y = 0; y < h; y++) c->rows[y] = c->pixels + y * stride;
    png_read_image(png, c->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(c->rows);
    c->rows = NULL;
    *width = (int)w;
    *height = (int)h;
    return 0;
}

/* ---------- JPEG decode ---------- */

typedef struct {
    struct jpeg_error_mgr mgr; /* first: libjpeg hands us a pointer to it */
    jmp_buf jump;
    int premature_eof;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err_ctx;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_err_ctx *e = (jpeg_err_ctx *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_on_message(j_common_ptr cinfo, int level) {
    /* Warnings are otherwise ignored (PIL decodes such files too), but a file that
     * ends early is an error for PIL ("image file is truncated"), so it is for us. */
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) ((jpeg_err_ctx *)cinfo->err)->premature_eof = 1;
}

typedef struct {
    struct jpeg_decompress_struct cinfo;
    jpeg_err_ctx err;
    uint8_t *pixels;
} jpeg_read_ctx;

static int jpeg_decode(jpeg_read_ctx *c, const char *name, const uint8_t *data, size_t len,
                       int *width, int *height) {
    c->cinfo.err = jpeg_std_error(&c->err.mgr);
    c->err.mgr.error_exit = jpeg_on_error;
    c->err.mgr.emit_message = jpeg_on_message;
    c->err.premature_eof = 0;
    c->pixels = NULL;
    if (setjmp(c->err.jump)) {
        jpeg_destroy_decompress(&c->cinfo);
        free(c->pixels);
        c->pixels = NULL;
        return err_set("%s: corrupt JPEG: %s", name, c->err.msg);
    }
    jpeg_create_decompress(&c->cinfo);
    jpeg_mem_src(&c->cinfo, data, (unsigned long)len);
    jpeg_read_header(&c->cinfo, TRUE);
    if (c->cinfo.jpeg_color_space == JCS_CMYK || c->cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&c->cinfo);
        return err_set("%s: CMYK JPEG is not supported", name);
    }
    /* libjpeg's defaults (islow DCT, fancy upsampling) are what PIL uses. */
    c->cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&c->cinfo);
    size_t w = c->cinfo.output_width, h = c->cinfo.output_height;
    if (w * h > IMAGE_MAX_PIXELS) {
        jpeg_destroy_decompress(&c->cinfo);
        return err_set("%s: image %zux%zu is too large (limit %zu pixels)", name, w, h, IMAGE_MAX_PIXELS);
    }
    if (c->cinfo.output_components != 3) {
        jpeg_destroy_decompress(&c->cinfo);
        return err_set("%s: unexpected JPEG output with %d components", name, c->cinfo.output_components);
    }
    c->pixels = xmalloc(w * h * 3);
    while (c->cinfo.output_scanline < c->cinfo.output_height) {
        JSAMPROW row = c->pixels + (size_t)c->cinfo.output_scanline * w * 3;
        jpeg_read_scanlines(&c->cinfo, &row, 1);
    }
    jpeg_finish_decompress(&c->cinfo);
    jpeg_destroy_decompress(&c->cinfo);
    if (c->err.premature_eof) {
        free(c->pixels);
        c->pixels = NULL;
        return err_set("%s: corrupt JPEG: truncated file (premature end of data)", name);
    }
    *width = (int)w;
    *height = (int)h;
    return 0;
}

/* ---------- WebP decode ---------- */

/* libwebp's simple decoder (fancy upsampling on, as PIL's WebP plugin uses it).
 * Alpha is dropped without compositing, as PIL's convert("RGB"); animations are refused. */
static int webp_decode(const uint8_t *data, size_t len, const char *name, uint8_t **rgb,
                       int *width, int *height) {
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, len, &f);
    if (st != VP8_STATUS_OK) return err_set("%s: corrupt WebP: bad header (libwebp status %d)", name, (int)st);
    if (f.has_animation) return err_set("%s: animated WebP is not supported", name);
    if (f.width < 1 || f.height < 1) return err_set("%s: corrupt WebP: size %dx%d", name, f.width, f.height);
    size_t pixels = (size_t)f.width * (size_t)f.height;
    if (pixels > IMAGE_MAX_PIXELS)
        return err_set("%s: image %dx%d is too large (limit %zu pixels)", name, f.width, f.height, IMAGE_MAX_PIXELS);
    uint8_t *out = xmalloc(pixels * 3);
    if (!WebPDecodeRGBInto(data, len, out, pixels * 3, f.width * 3)) {
        free(out);
        return err_set("%s: corrupt WebP: the bitstream does not decode (truncated or damaged)", name);
    }
    *rgb = out;
    *width = f.width;
    *height = f.height;
    return 0;
}

/* ---------- public decode ---------- */

int image_decode_rgb(const uint8_t *data, size_t len, const char *name, uint8_t **rgb,
                     int *width, int *height) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && memcmp(data, png_sig, 8) == 0) {
        png_read_ctx c = {.name = name, .data = data, .len = len};
        if (png_decode(&c, width, height) != 0) return -1;
        *rgb = c.pixels;
        return 0;
    }
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) {
        jpeg_read_ctx *c = xcalloc(1, sizeof *c); /* large; keep it off the stack */
        int rc = jpeg_decode(c, name, data, len, width, height);
        if (rc == 0) *rgb = c->pixels;
        free(c);
        return rc;
    }
    if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
        return webp_decode(data, len, name, rgb, width, height);
    return err_set("%s: not a PNG, JPEG or WebP file (unrecognised magic bytes)", name);
}

int image_load_rgb(const char *path, uint8_t **rgb, int *width, int *height) {
    uint8_t *data = NULL;
    size_t len = 0;
    if (read_file(path, &data, &len) != 0) return -1;
    int rc = image_decode_rgb(data, len, path, rgb, width, height);
    free(data);
    return rc;
}

/* ---------- PNG write ---------- */

typedef struct {
    char msg[256];
} png_write_ctx;

static void png_on_write_error(png_structp png, png_const_charp msg) {
    png_write_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static int png_encode(FILE *f, const char *path, const uint8_t *hwc, int width, int height, int channels) {
    png_write_ctx c = {{0}};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &c, png_on_write_error, png_on_warning);
    if (!png) return err_set("%s: libpng init failed", path);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return err_set("%s: libpng init failed", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return err_set("%s: PNG write failed: %s", path, c.msg);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)width * channels;
    for (int y = 0; y < height; y++) png_write_row(png, hwc + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int image_write_png(const char *path, const uint8_t *hwc, int width, int height, int channels) {
    if (channels != 1 && channels != 3) return err_set("%s: PNG channels must be 1 or 3, got %d", path, channels);
    if (width <= 0 || height <= 0) return err_set("%s: invalid image size %dx%d", path, width, height);
    size_t n = strlen(path) + 32;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        err_set("%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int rc = png_encode(f, path, hwc, width, height, channels);
    if (fflush(f) != 0 || ferror(f)) rc = rc ? rc : err_set("%s: write error: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && rc == 0) rc = err_set("%s: close failed: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0) rc = err_set("%s: rename from %s failed: %s", path, tmp, strerror(errno));
    if (rc != 0) unlink(tmp);
    free(tmp);
    return rc;
}

/* ---------- grid ---------- */

#define GRID_PAD 2

void image_grid_dims(int n, int size, int cols, int *width, int *height) {
    int c = n < cols ? n : cols;
    if (c < 1) c = 1;
    int r = (n + c - 1) / c;
    *width = c * (size + GRID_PAD) + GRID_PAD;
    *height = r * (size + GRID_PAD) + GRID_PAD;
}

void image_grid_fill(uint8_t *out, const uint8_t *nhwc, int n, int size, int channels, int cols) {
    int gw, gh;
    image_grid_dims(n, size, cols, &gw, &gh);
    int c = n < cols ? n : cols;
    memset(out, 0, (size_t)gw * gh * channels);
    size_t img_row = (size_t)size * channels;
    for (int i = 0; i < n; i++) {
        int oy = GRID_PAD + (i / c) * (size + GRID_PAD), ox = GRID_PAD + (i % c) * (size + GRID_PAD);
        const uint8_t *img = nhwc + (size_t)i * size * img_row;
        for (int y = 0; y < size; y++)
            memcpy(out + ((size_t)(oy + y) * gw + ox) * channels, img + (size_t)y * img_row, img_row);
    }
}

int image_write_grid_png(const char *path, const uint8_t *nhwc, int n, int size, int channels, int cols) {
    if (n <= 0 || size <= 0 || cols <= 0)
        return err_set("%s: invalid grid (n %d, size %d, cols %d)", path, n, size, cols);
    if (channels != 1 && channels != 3) return err_set("%s: PNG channels must be 1 or 3, got %d", path, channels);
    int gw, gh;
    image_grid_dims(n, size, cols, &gw, &gh);
    uint8_t *grid = xmalloc((size_t)gw * gh * channels);
    image_grid_fill(grid, nhwc, n, size, channels, cols);
    int rc = image_write_png(path, grid, gw, gh, channels);
    free(grid);
    return rc;
}
