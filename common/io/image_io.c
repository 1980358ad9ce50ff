/* PNG (libpng), JPEG (libjpeg-turbo) and WebP (libwebp) decoding to RGB, PNG writing.
 * Every decoder checks the declared size against IMAGE_MAX_PIXELS and against the
 * bytes the file has (image_io.h) before allocating the image. */
#include "common/io/image_io.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <jerror.h>
#include <webp/decode.h>

#include "common/core/util.h"

/* ---------- reading whole files ---------- */

int image_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO named like an image must not hang the open */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return err_set("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set("%s: not a regular file", path);
    }
    if (max_bytes > IMAGE_MAX_FILE_BYTES) max_bytes = IMAGE_MAX_FILE_BYTES;
    if ((unsigned long long)st.st_size > max_bytes) {
        close(fd);
        return err_set("%s: %lld bytes is larger than any image file we decode (limit %zu bytes)", path,
                       (long long)st.st_size, max_bytes);
    }
    size_t cap = (size_t)st.st_size + 1, n = 0; /* +1: sees a file that grew */
    uint8_t *buf = xmalloc(cap);
    for (;;) {
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return err_set("%s: read error: %s", path, strerror(e));
        }
        if (got == 0) break;
        n += (size_t)got;
        if (n == cap) {
            free(buf);
            close(fd);
            return err_set("%s: the file grew while it was read", path);
        }
    }
    close(fd);
    *data = buf;
    *len = n;
    return 0;
}

/* ---------- limits shared by the decoders ---------- */

/* Declared dimensions against IMAGE_MAX_PIXELS, before anything is allocated. */
static int check_dims(const char *name, const char *fmt, size_t w, size_t h, size_t max_pixels) {
    size_t pixels;
    if (w < 1 || h < 1) return err_set("%s: corrupt %s: image size %zux%zu", name, fmt, w, h);
    if (size_mul(w, h, &pixels) != 0 || pixels > max_pixels)
        return err_set("%s: %s image %zux%zu is too large (limit %zu pixels)", name, fmt, w, h, max_pixels);
    return 0;
}

/* The smallest file that can hold the declared image (see image_io.h) against the
 * bytes there are: a small file declaring a huge image is truncated or a bomb. */
static int check_min_bytes(const char *name, const char *fmt, size_t w, size_t h, size_t need, size_t have,
                           const char *why) {
    if (have >= need) return 0;
    return err_set("%s: corrupt %s: a %zux%zu image needs at least %zu bytes of coded data (%s) but there are "
                   "only %zu: truncated file or decompression bomb",
                   name, fmt, w, h, need, why, have);
}

/* ---------- PNG decode ---------- */

typedef struct {
    const char *name;
    const uint8_t *data;
    size_t len, pos, max_pixels;
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

#define PNG_MAX_RATIO 1032

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
    /* Raw (filtered) data: a filter byte and ceil(w * bits / 8) bytes a row; deflate
     * expands a byte into at most 1032, so the file must hold raw / 1032 bytes. */
    size_t bits = (size_t)png_get_channels(png, info) * (size_t)depth, raw = 0;
    int bad = check_dims(c->name, "PNG", w, h, c->max_pixels);
    if (!bad) raw = ((size_t)w * bits + 7) / 8 + 1, raw *= h; /* w*h <= 2^27, bits <= 64: no overflow */
    if (!bad) bad = check_min_bytes(c->name, "PNG", w, h, raw / PNG_MAX_RATIO, c->len, "deflate's limit is 1032:1");
    if (bad) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
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
    char msg[JMSG_LENGTH_MAX];
} jpeg_err_ctx;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_err_ctx *e = (jpeg_err_ctx *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* libjpeg reports missing or damaged entropy data as warnings and fills the rest of
 * the image with grey: for us those are errors, raised at once (so that a cut file
 * stops the decode where it is cut). Other warnings (extraneous bytes between
 * markers, unknown JFIF versions, bad ICC markers) leave the pixels intact and are
 * ignored, as PIL ignores them. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;
    switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_BOGUS_PROGRESSION:
        jpeg_on_error(cinfo);
        break;
    default:
        break;
    }
}

typedef struct {
    struct jpeg_decompress_struct cinfo;
    jpeg_err_ctx err;
    uint8_t *pixels;
} jpeg_read_ctx;

#define JPEG_MAX_SCANS 256

/* Walks the scans of a JPEG (after jpeg_read_header has parsed the frame) without
 * decoding them, before libjpeg allocates anything image-sized:
 *  - every component must have a first scan of its DC coefficients (sequential
 *    scans, or progressive Ss = 0, Ah = 0): without one it would decode as grey;
 *  - such a scan codes each 8x8 block of its components with a Huffman code of at
 *    least 1 bit, so its entropy-coded data is at least blocks/8 bytes (not for
 *    arithmetic coding, which has no such floor);
 *  - at most JPEG_MAX_SCANS scans (each one is a pass over the whole image).
 * Markers: FF xx with a 2-byte length, except SOI, EOI, RSTn and TEM; entropy-coded
 * data runs to the next FF not followed by 00 (stuffing) or D0..D7 (restarts). */
static int jpeg_check_scans(const struct jpeg_decompress_struct *ci, const uint8_t *d, size_t len,
                            const char *name) {
    int covered[MAX_COMPONENTS] = {0}, scans = 0;
    size_t pos = 2;
    while (pos + 1 < len) {
        if (d[pos] != 0xff) { /* stray bytes between markers: libjpeg skips them too */
            pos++;
            continue;
        }
        uint8_t m = d[pos + 1];
        pos += 2;
        if (m == 0xff) { /* fill byte */
            pos--;
            continue;
        }
        if (m == 0xd9) break; /* EOI */
        if (m == 0xd8 || m == 0x01 || (m >= 0xd0 && m <= 0xd7)) continue;
        if (pos + 2 > len) break;
        size_t seg = (size_t)d[pos] << 8 | d[pos + 1];
        if (seg < 2 || seg > len - pos) break; /* libjpeg reports the cut */
        if (m != 0xda) {
            pos += seg;
            continue;
        }
        /* SOS: Ns, Ns x (id, tables), Ss, Se, Ah/Al */
        const uint8_t *h = d + pos + 2;
        size_t ns = seg >= 3 ? h[0] : 0;
        if (ns < 1 || ns > MAX_COMPS_IN_SCAN || seg != 6 + 2 * ns)
            return err_set("%s: corrupt JPEG: bad SOS marker (scan %d)", name, scans + 1);
        int ss = h[1 + 2 * ns], ah = h[3 + 2 * ns] >> 4;
        pos += seg;
        size_t start = pos;
        while (pos + 1 < len && !(d[pos] == 0xff && d[pos + 1] != 0 && !(d[pos + 1] >= 0xd0 && d[pos + 1] <= 0xd7)))
            pos++;
        if (pos + 1 >= len) pos = len;
        if (++scans > JPEG_MAX_SCANS)
            return err_set("%s: JPEG has more than %d scans (each is a pass over the image): refused", name,
                           JPEG_MAX_SCANS);
        if (ss != 0 || ah != 0) continue; /* AC bands and refinements may be tiny */
        size_t blocks = 0;
        for (size_t k = 0; k < ns; k++) {
            for (int c = 0; c < ci->num_components; c++) {
                const jpeg_component_info *comp = ci->comp_info + c;
                if (comp->component_id != h[1 + 2 * k]) continue;
                covered[c] = 1;
                blocks += (size_t)comp->width_in_blocks * comp->height_in_blocks;
                break;
            }
        }
        if (!ci->arith_code && pos - start < (blocks + 7) / 8)
            return err_set("%s: corrupt JPEG: a %ux%u image whose scan %d codes %zu 8x8 blocks needs at least %zu "
                           "bytes of coded data (1 bit a block) but has %zu: truncated file or decompression bomb",
                           name, (unsigned)ci->image_width, (unsigned)ci->image_height, scans, blocks,
                           (blocks + 7) / 8, pos - start);
    }
    for (int c = 0; c < ci->num_components; c++)
        if (!covered[c])
            return err_set("%s: corrupt JPEG: no data for component %d (id %d) of %d: truncated or damaged file",
                           name, c, ci->comp_info[c].component_id, ci->num_components);
    return 0;
}

static int jpeg_decode(jpeg_read_ctx *c, const char *name, const uint8_t *data, size_t len, size_t max_pixels,
                       int *width, int *height) {
    c->cinfo.err = jpeg_std_error(&c->err.mgr);
    c->err.mgr.error_exit = jpeg_on_error;
    c->err.mgr.emit_message = jpeg_on_message;
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
    int bad = 0;
    if (c->cinfo.jpeg_color_space == JCS_CMYK || c->cinfo.jpeg_color_space == JCS_YCCK)
        bad = err_set("%s: CMYK JPEG is not supported", name);
    if (!bad) bad = check_dims(name, "JPEG", c->cinfo.image_width, c->cinfo.image_height, max_pixels);
    if (!bad) bad = jpeg_check_scans(&c->cinfo, data, len, name);
    if (bad) {
        jpeg_destroy_decompress(&c->cinfo);
        return -1;
    }
    /* libjpeg's defaults (islow DCT, fancy upsampling) are what PIL uses. */
    c->cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&c->cinfo);
    size_t w = c->cinfo.output_width, h = c->cinfo.output_height;
    if (c->cinfo.output_components != 3 || w != c->cinfo.image_width || h != c->cinfo.image_height) {
        jpeg_destroy_decompress(&c->cinfo);
        return err_set("%s: unexpected JPEG output (%zux%zu, %d components)", name, w, h,
                       c->cinfo.output_components);
    }
    c->pixels = xmalloc(w * h * 3);
    while (c->cinfo.output_scanline < c->cinfo.output_height) {
        JSAMPROW row = c->pixels + (size_t)c->cinfo.output_scanline * w * 3;
        jpeg_read_scanlines(&c->cinfo, &row, 1);
    }
    jpeg_finish_decompress(&c->cinfo);
    jpeg_destroy_decompress(&c->cinfo);
    *width = (int)w;
    *height = (int)h;
    return 0;
}

/* ---------- WebP decode ---------- */

/* libwebp's simple decoder (fancy upsampling on, as PIL's WebP plugin uses it).
 * Alpha is dropped without compositing, as PIL's convert("RGB"); animations are refused. */
static int webp_decode(const uint8_t *data, size_t len, const char *name, size_t max_pixels, uint8_t **rgb,
                       int *width, int *height) {
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, len, &f);
    if (st != VP8_STATUS_OK) return err_set("%s: corrupt WebP: bad header (libwebp status %d)", name, (int)st);
    if (f.has_animation) return err_set("%s: animated WebP is not supported", name);
    if (f.width < 1 || f.height < 1) return err_set("%s: corrupt WebP: size %dx%d", name, f.width, f.height);
    if (check_dims(name, "WebP", (size_t)f.width, (size_t)f.height, max_pixels) != 0) return -1;
    size_t pixels = (size_t)f.width * (size_t)f.height;
    /* Lossy (VP8): a key frame codes each 16x16 macroblock's intra modes with fixed
     * probabilities, well over 1 bit a macroblock. Lossless (VP8L) can code a flat
     * image in a few bytes: only the pixel limit applies to it. */
    size_t mbs = (size_t)((f.width + 15) / 16) * (size_t)((f.height + 15) / 16);
    if (f.format == 1 && check_min_bytes(name, "WebP", (size_t)f.width, (size_t)f.height, (mbs + 7) / 8, len,
                                         "at least 1 bit for each 16x16 macroblock") != 0)
        return -1;
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
    return image_decode_rgb_limit(data, len, name, IMAGE_MAX_PIXELS, rgb, width, height);
}

int image_decode_rgb_limit(const uint8_t *data, size_t len, const char *name, size_t max_pixels, uint8_t **rgb,
                           int *width, int *height) {
    if (max_pixels > IMAGE_MAX_PIXELS) max_pixels = IMAGE_MAX_PIXELS;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && memcmp(data, png_sig, 8) == 0) {
        png_read_ctx c = {.name = name, .data = data, .len = len, .max_pixels = max_pixels};
        if (png_decode(&c, width, height) != 0) return -1;
        *rgb = c.pixels;
        return 0;
    }
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) {
        jpeg_read_ctx *c = xcalloc(1, sizeof *c); /* large; keep it off the stack */
        int rc = jpeg_decode(c, name, data, len, max_pixels, width, height);
        if (rc == 0) *rgb = c->pixels;
        free(c);
        return rc;
    }
    if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
        return webp_decode(data, len, name, max_pixels, rgb, width, height);
    return err_set("%s: not a PNG, JPEG or WebP file (unrecognised magic bytes)", name);
}

int image_load_rgb(const char *path, uint8_t **rgb, int *width, int *height) {
    uint8_t *data = NULL;
    size_t len = 0;
    if (image_read_file(path, IMAGE_MAX_FILE_BYTES, &data, &len) != 0) return -1;
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

int image_encode_png(const uint8_t *hwc, int width, int height, int channels, uint8_t **png,
                     size_t *len) {
    *png = NULL;
    *len = 0;
    if (channels != 1 && channels != 3) return err_set("PNG channels must be 1 or 3, got %d", channels);
    if (width <= 0 || height <= 0) return err_set("invalid image size %dx%d", width, height);
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return err_set("PNG in memory: %m");
    int rc = png_encode(f, "PNG in memory", hwc, width, height, channels);
    if (fclose(f) != 0 && rc == 0) rc = err_set("PNG in memory: %m");
    if (rc != 0) {
        free(buf);
        return -1;
    }
    *png = (uint8_t *)buf;
    *len = n;
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

void image_upscale_nearest(const uint8_t *in, int width, int height, int channels, int k,
                           uint8_t *out) {
    size_t row = (size_t)width * k * channels;
    for (int y = 0; y < height; y++) {
        uint8_t *o = out + (size_t)y * k * row;
        const uint8_t *src = in + (size_t)y * width * channels;
        for (int x = 0; x < width; x++)
            for (int r = 0; r < k; r++)
                memcpy(o + ((size_t)x * k + r) * channels, src + (size_t)x * channels, (size_t)channels);
        for (int r = 1; r < k; r++) memcpy(o + (size_t)r * row, o, row);
    }
}

uint8_t *image_grid_make(const char *name, const uint8_t *nhwc, int n, int size, int channels,
                         int cols, int scale, int *width, int *height) {
    if (n <= 0 || size <= 0 || cols <= 0 || scale < 1 || scale > IMAGE_MAX_GRID_SCALE) {
        err_set("%s: invalid grid (n %d, size %d, cols %d, scale %d)", name, n, size, cols, scale);
        return NULL;
    }
    if (channels != 1 && channels != 3) {
        err_set("%s: PNG channels must be 1 or 3, got %d", name, channels);
        return NULL;
    }
    int gw, gh;
    image_grid_dims(n, size, cols, &gw, &gh);
    size_t dims[4] = {(size_t)gw, (size_t)gh, (size_t)scale * scale, (size_t)channels}, bytes;
    if (size_prod(dims, 4, &bytes) != 0 || bytes / (size_t)channels > IMAGE_MAX_PIXELS) {
        err_set("%s: a grid of %dx%d pixels scaled %d times is over the limit of %zu pixels", name,
                gw, gh, scale, IMAGE_MAX_PIXELS);
        return NULL;
    }
    uint8_t *grid = xmalloc((size_t)gw * gh * channels);
    image_grid_fill(grid, nhwc, n, size, channels, cols);
    *width = gw * scale;
    *height = gh * scale;
    if (scale == 1) return grid;
    uint8_t *big = xmalloc(bytes);
    image_upscale_nearest(grid, gw, gh, channels, scale, big);
    free(grid);
    return big;
}

int image_write_grid_png_scaled(const char *path, const uint8_t *nhwc, int n, int size,
                                int channels, int cols, int scale) {
    int gw, gh;
    uint8_t *grid = image_grid_make(path, nhwc, n, size, channels, cols, scale, &gw, &gh);
    if (!grid) return -1;
    int rc = image_write_png(path, grid, gw, gh, channels);
    free(grid);
    return rc;
}

int image_write_grid_png(const char *path, const uint8_t *nhwc, int n, int size, int channels, int cols) {
    return image_write_grid_png_scaled(path, nhwc, n, size, channels, cols, 1);
}

int image_grid_scale_for(int width, int min_width) {
    int k = width >= min_width ? 1 : (min_width + width - 1) / width;
    return k > IMAGE_MAX_GRID_SCALE ? IMAGE_MAX_GRID_SCALE : k;
}
