/* Pooling and bilinear resizing (forward only), for the evaluation networks. */
#include <math.h>

#include "common/ops/ops_extra.h"

void maxpool2d_forward(float *out, const float *inp, int N, int C, int H, int W, int k, int stride,
                       int pad) {
    int Ho = window_out_size(H, k, stride, pad), Wo = window_out_size(W, k, stride, pad);
    for (long nc = 0; nc < (long)N * C; nc++) {
        const float *x = inp + (size_t)nc * H * W;
        float *o = out + (size_t)nc * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++) {
            int h0 = oh * stride - pad, h1 = h0 + k;
            if (h0 < 0) h0 = 0;
            if (h1 > H) h1 = H;
            for (int ow = 0; ow < Wo; ow++) {
                int w0 = ow * stride - pad, w1 = w0 + k;
                if (w0 < 0) w0 = 0;
                if (w1 > W) w1 = W;
                float m = -INFINITY;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++) m = x[(size_t)h * W + w] > m ? x[(size_t)h * W + w] : m;
                o[(size_t)oh * Wo + ow] = m;
            }
        }
    }
}

void avgpool2d_forward(float *out, const float *inp, int N, int C, int H, int W, int k, int stride,
                       int pad, int count_include_pad) {
    int Ho = window_out_size(H, k, stride, pad), Wo = window_out_size(W, k, stride, pad);
    for (long nc = 0; nc < (long)N * C; nc++) {
        const float *x = inp + (size_t)nc * H * W;
        float *o = out + (size_t)nc * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++) {
            int h0 = oh * stride - pad, h1 = h0 + k;
            /* PyTorch counts padded positions only up to the padded border */
            int ph1 = h1 > H + pad ? H + pad : h1;
            int hc0 = h0 < 0 ? 0 : h0, hc1 = h1 > H ? H : h1;
            for (int ow = 0; ow < Wo; ow++) {
                int w0 = ow * stride - pad, w1 = w0 + k;
                int pw1 = w1 > W + pad ? W + pad : w1;
                int wc0 = w0 < 0 ? 0 : w0, wc1 = w1 > W ? W : w1;
                float s = 0;
                for (int h = hc0; h < hc1; h++)
                    for (int w = wc0; w < wc1; w++) s += x[(size_t)h * W + w];
                int cnt = count_include_pad ? (ph1 - h0) * (pw1 - w0) : (hc1 - hc0) * (wc1 - wc0);
                o[(size_t)oh * Wo + ow] = s / (float)cnt;
            }
        }
    }
}

void global_avgpool_forward(float *out, const float *inp, int N, int C, int HW) {
    for (long nc = 0; nc < (long)N * C; nc++) {
        const float *x = inp + (size_t)nc * HW;
        double s = 0;
        for (int i = 0; i < HW; i++) s += x[i];
        out[nc] = (float)(s / HW);
    }
}

/* Source index and weight of one output coordinate as PyTorch's CPU kernel computes
 * them for float tensors: scale = in/out in float, the source coordinate
 * scale * (dst + 0.5) - 0.5 (clamped at 0) in double (its acc_type), the weight
 * rounded to float. Computing the coordinate in float instead moves it by up to an
 * ulp (3e-5 px near 300), a 5e-5 relative change of the resized values. */
static void src_index(int dst, int in, int outn, int *i0, int *i1, float *l1) {
    float scale = (float)in / (float)outn;
    double src = (double)scale * ((double)dst + 0.5) - 0.5;
    if (src < 0) src = 0;
    int i = (int)src;
    if (i > in - 1) i = in - 1;
    *i0 = i;
    *i1 = i < in - 1 ? i + 1 : i;
    *l1 = (float)(src - (double)i);
}

void resize_bilinear_forward(float *out, const float *inp, int N, int C, int H, int W, int Ho,
                             int Wo) {
    for (long nc = 0; nc < (long)N * C; nc++) {
        const float *x = inp + (size_t)nc * H * W;
        float *o = out + (size_t)nc * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++) {
            int h0, h1;
            float lh;
            src_index(oh, H, Ho, &h0, &h1, &lh);
            for (int ow = 0; ow < Wo; ow++) {
                int w0, w1;
                float lw;
                src_index(ow, W, Wo, &w0, &w1, &lw);
                float top = (1 - lw) * x[(size_t)h0 * W + w0] + lw * x[(size_t)h0 * W + w1];
                float bot = (1 - lw) * x[(size_t)h1 * W + w0] + lw * x[(size_t)h1 * W + w1];
                o[(size_t)oh * Wo + ow] = (1 - lh) * top + lh * bot;
            }
        }
    }
}
