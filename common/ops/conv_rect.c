/* Rectangular-kernel convolution (forward only), im2col + SGEMM per image. */
#include <cblas.h>
#include <string.h>

#include "common/ops/ops_extra.h"

int window_out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

conv_rect_shape conv_rect_shape_make(int N, int Cin, int H, int W, int Cout, int kh, int kw, int sh,
                                     int sw, int ph, int pw) {
    conv_rect_shape s = {N, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw, 0, 0};
    s.Ho = window_out_size(H, kh, sh, ph);
    s.Wo = window_out_size(W, kw, sw, pw);
    return s;
}

static int is_pointwise(const conv_rect_shape *s) {
    return s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->ph == 0 && s->pw == 0;
}

size_t conv_rect_workspace_floats(const conv_rect_shape *s) {
    if (is_pointwise(s)) return 0;
    return (size_t)s->Cin * s->kh * s->kw * s->Ho * s->Wo;
}

/* cols[(c kh + i) kw + j][oh Wo + ow] = img[c][oh sh - ph + i][ow sw - pw + j], 0 outside. */
static void im2col_rect(float *cols, const float *img, const conv_rect_shape *s) {
    int H = s->H, W = s->W, Ho = s->Ho, Wo = s->Wo;
    size_t P = (size_t)Ho * Wo;
    for (int c = 0; c < s->Cin; c++) {
        const float *ic = img + (size_t)c * H * W;
        for (int i = 0; i < s->kh; i++) {
            for (int j = 0; j < s->kw; j++) {
                float *row = cols + ((size_t)(c * s->kh + i) * s->kw + j) * P;
                /* valid output columns: 0 <= ow sw - pw + j < W */
                int lo = 0, hi = Wo; /* [lo, hi) */
                while (lo < Wo && lo * s->sw - s->pw + j < 0) lo++;
                while (hi > lo && (hi - 1) * s->sw - s->pw + j >= W) hi--;
                for (int oh = 0; oh < Ho; oh++) {
                    float *dst = row + (size_t)oh * Wo;
                    int ih = oh * s->sh - s->ph + i;
                    if (ih < 0 || ih >= H) {
                        memset(dst, 0, (size_t)Wo * sizeof(float));
                        continue;
                    }
                    const float *src = ic + (size_t)ih * W;
                    for (int ow = 0; ow < lo; ow++) dst[ow] = 0;
                    if (s->sw == 1) {
                        if (hi > lo)
                            memcpy(dst + lo, src + lo - s->pw + j, (size_t)(hi - lo) * sizeof(float));
                    } else {
                        for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow * s->sw - s->pw + j];
                    }
                    for (int ow = hi; ow < Wo; ow++) dst[ow] = 0;
                }
            }
        }
    }
}

void conv_rect_forward(float *out, const float *inp, const float *weight, const float *bias,
                       const conv_rect_shape *s, int relu, size_t out_image_stride, float *ws) {
    size_t P = (size_t)s->Ho * s->Wo, K = (size_t)s->Cin * s->kh * s->kw;
    size_t in_stride = (size_t)s->Cin * s->H * s->W;
    if (out_image_stride == 0) out_image_stride = (size_t)s->Cout * P;
    int pointwise = is_pointwise(s);
    for (int n = 0; n < s->N; n++) {
        float *o = out + (size_t)n * out_image_stride;
        const float *cols = inp + (size_t)n * in_stride;
        if (!pointwise) {
            im2col_rect(ws, cols, s);
            cols = ws;
        }
        for (int co = 0; co < s->Cout; co++) {
            float b = bias ? bias[co] : 0.0f;
            float *oc = o + (size_t)co * P;
            for (size_t p = 0; p < P; p++) oc[p] = b;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->Cout, (int)P, (int)K, 1.0f, weight,
                    (int)K, cols, (int)P, 1.0f, o, (int)P);
        if (relu) {
            size_t total = (size_t)s->Cout * P;
            for (size_t i = 0; i < total; i++) o[i] = o[i] > 0 ? o[i] : 0.0f;
        }
    }
}
