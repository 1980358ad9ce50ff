/* Pillow-compatible 8-bit resampling; see resample.h for the algorithm. */
#include "common/data/resample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"

/* Fixed-point weights: 32 bits less 8 for the pixel value and 2 of headroom. */
#define RS_PRECISION_BITS 22

static double filter_box(double x) {
    /* Half-open so that a tap on the boundary belongs to exactly one output. */
    return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
}

static double filter_bicubic(double x) {
    const double a = -0.5; /* Keys' cubic convolution with a = -0.5 */
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

typedef struct {
    int ksize;      /* taps stored per output pixel */
    int *first;     /* first input index per output pixel */
    int *count;     /* taps used per output pixel */
    int32_t *k;     /* out_size * ksize fixed-point weights */
} coeffs;

static void coeffs_free(coeffs *c) {
    free(c->first);
    free(c->count);
    free(c->k);
}

/* Weights for resizing one axis from in_size to out_size (whole-image box). */
static void coeffs_build(coeffs *c, int in_size, int out_size, resample_filter filter) {
    double (*fn)(double) = filter == RESAMPLE_BOX ? filter_box : filter_bicubic;
    double base_support = filter == RESAMPLE_BOX ? 0.5 : 2.0;
    /* The box is float in Pillow (in1 - in0 computed in float). */
    double scale = (double)((float)in_size - 0.0f) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = base_support * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->first = xmalloc(sizeof(int) * (size_t)out_size);
    c->count = xmalloc(sizeof(int) * (size_t)out_size);
    c->k = xcalloc((size_t)out_size * (size_t)c->ksize, sizeof(int32_t));
    double *w = xmalloc(sizeof(double) * (size_t)c->ksize);
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale;
        double ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double sum = 0.0;
        for (int x = 0; x < xmax; x++) {
            w[x] = fn((x + xmin - center + 0.5) * ss);
            sum += w[x];
        }
        for (int x = 0; x < xmax; x++) {
            double v = sum != 0.0 ? w[x] / sum : w[x];
            double f = v * (double)(1 << RS_PRECISION_BITS);
            /* Round half away from zero, the way Pillow converts its weights. */
            c->k[(size_t)o * c->ksize + x] = v < 0 ? (int32_t)(-0.5 + f) : (int32_t)(0.5 + f);
        }
        c->first[o] = xmin;
        c->count[o] = xmax;
    }
    free(w);
}

static inline uint8_t clip_fixed(int64_t acc) {
    if (acc < 0) return 0;
    acc >>= RS_PRECISION_BITS;
    return acc > 255 ? 255 : (uint8_t)acc;
}

/* Horizontal pass: rows stay, columns in_w -> out_w. */
static void pass_horizontal(const uint8_t *in, int in_w, int h, int ch, uint8_t *out, int out_w,
                            const coeffs *c) {
    for (int y = 0; y < h; y++) {
        const uint8_t *row = in + (size_t)y * in_w * ch;
        uint8_t *orow = out + (size_t)y * out_w * ch;
        for (int x = 0; x < out_w; x++) {
            const int32_t *k = c->k + (size_t)x * c->ksize;
            const uint8_t *src = row + (size_t)c->first[x] * ch;
            for (int b = 0; b < ch; b++) {
                int64_t acc = 1 << (RS_PRECISION_BITS - 1);
                for (int t = 0; t < c->count[x]; t++) acc += (int64_t)src[(size_t)t * ch + b] * k[t];
                orow[(size_t)x * ch + b] = clip_fixed(acc);
            }
        }
    }
}

/* Vertical pass: columns stay, rows in_h -> out_h. */
static void pass_vertical(const uint8_t *in, int w, int ch, uint8_t *out, int out_h, const coeffs *c) {
    size_t stride = (size_t)w * ch;
    for (int y = 0; y < out_h; y++) {
        const int32_t *k = c->k + (size_t)y * c->ksize;
        const uint8_t *src = in + (size_t)c->first[y] * stride;
        uint8_t *orow = out + (size_t)y * stride;
        for (size_t i = 0; i < stride; i++) {
            int64_t acc = 1 << (RS_PRECISION_BITS - 1);
            for (int t = 0; t < c->count[y]; t++) acc += (int64_t)src[(size_t)t * stride + i] * k[t];
            orow[i] = clip_fixed(acc);
        }
    }
}

int resample_u8(const uint8_t *in, int in_w, int in_h, int channels,
                uint8_t *out, int out_w, int out_h, resample_filter filter) {
    if (in_w <= 0 || in_h <= 0 || out_w <= 0 || out_h <= 0)
        return err_set("resample: invalid size %dx%d -> %dx%d", in_w, in_h, out_w, out_h);
    if (channels < 1 || channels > 4) return err_set("resample: invalid channel count %d", channels);
    if (filter != RESAMPLE_BOX && filter != RESAMPLE_BICUBIC)
        return err_set("resample: unknown filter %d", (int)filter);
    int need_h = out_w != in_w, need_v = out_h != in_h;
    if (!need_h && !need_v) {
        /* Pillow returns a copy when the size does not change. */
        memcpy(out, in, (size_t)in_w * in_h * channels);
        return 0;
    }
    const uint8_t *src = in;
    uint8_t *tmp = NULL;
    if (need_h) {
        coeffs c;
        coeffs_build(&c, in_w, out_w, filter);
        uint8_t *dst = need_v ? (tmp = xmalloc((size_t)out_w * in_h * channels)) : out;
        pass_horizontal(in, in_w, in_h, channels, dst, out_w, &c);
        coeffs_free(&c);
        src = dst;
    }
    if (need_v) {
        coeffs c;
        coeffs_build(&c, in_h, out_h, filter);
        pass_vertical(src, out_w, channels, out, out_h, &c);
        coeffs_free(&c);
    }
    free(tmp);
    return 0;
}

int center_crop_u8(const uint8_t *in, int w, int h, int channels, int size, uint8_t *out) {
    if (size <= 0 || w <= 0 || h <= 0) return err_set("center crop: invalid size %dx%d -> %d", w, h, size);
    uint8_t *cur = NULL; /* owned intermediate, NULL while still reading `in` */
    const uint8_t *src = in;
    while ((w < h ? w : h) >= 2 * size) {
        int nw = w / 2, nh = h / 2;
        uint8_t *next = xmalloc((size_t)nw * nh * channels);
        resample_u8(src, w, h, channels, next, nw, nh, RESAMPLE_BOX);
        free(cur);
        src = cur = next;
        w = nw;
        h = nh;
    }
    /* Python: scale = size / min(w, h); round() is round-half-even, as nearbyint. */
    double scale = (double)size / (double)(w < h ? w : h);
    double dw = nearbyint((double)w * scale), dh = nearbyint((double)h * scale);
    /* A long thin image is scaled up along its long side too: refuse one whose
     * resized copy would be huge (and whose size would overflow an int). */
    if (dw * dh * channels > (double)RESAMPLE_MAX_BYTES) {
        free(cur);
        return err_set("center crop: %dx%d resized to %.0fx%.0f for a %d crop would take more than %zu bytes "
                       "(aspect ratio too extreme)", w, h, dw, dh, size, (size_t)RESAMPLE_MAX_BYTES);
    }
    int nw = (int)dw, nh = (int)dh;
    if (nw < size || nh < size) {
        free(cur);
        return err_set("center crop: resized %dx%d is smaller than %d", nw, nh, size);
    }
    uint8_t *scaled = xmalloc((size_t)nw * nh * channels);
    resample_u8(src, w, h, channels, scaled, nw, nh, RESAMPLE_BICUBIC);
    free(cur);
    int cy = (nh - size) / 2, cx = (nw - size) / 2;
    size_t row = (size_t)size * channels;
    for (int y = 0; y < size; y++)
        memcpy(out + (size_t)y * row, scaled + ((size_t)(y + cy) * nw + cx) * channels, row);
    free(scaled);
    return 0;
}

void rgb_to_grey_u8(const uint8_t *rgb, uint8_t *out, size_t pixels) {
    for (size_t i = 0; i < pixels; i++) {
        const uint8_t *p = rgb + 3 * i;
        out[i] = (uint8_t)(((uint32_t)p[0] * 19595u + (uint32_t)p[1] * 38470u + (uint32_t)p[2] * 7471u + 0x8000u) >> 16);
    }
}
