/* Forward-only ops for the evaluation networks (Inception-v3 for FID/IS): a
 * convolution with rectangular kernels, strides and explicit (PyTorch-style,
 * symmetric) zero padding, max and average pooling, global average pooling and
 * bilinear resizing with PyTorch's align_corners=False rule.
 *
 * Conventions as in ops.h: float32 NCHW contiguous, PyTorch weight layouts,
 * buffers borrowed, nothing allocated, scratch from the caller. These ops have no
 * backward: nothing trains through them. */
#ifndef DDPM_OPS_EXTRA_H
#define DDPM_OPS_EXTRA_H

#include <stddef.h>

/* Output size of a window op along one axis: floor((in + 2 pad - k) / stride) + 1. */
int window_out_size(int in, int k, int stride, int pad);

/* ---- convolution, kernel kh x kw, stride (sh, sw), zero padding (ph, pw) on both sides ---- */
typedef struct {
    int N, Cin, H, W, Cout, kh, kw, sh, sw, ph, pw;
    int Ho, Wo;
} conv_rect_shape;

conv_rect_shape conv_rect_shape_make(int N, int Cin, int H, int W, int Cout, int kh, int kw, int sh,
                                     int sw, int ph, int pw);
/* Scratch floats for conv_rect_forward: Cin*kh*kw*Ho*Wo (0 for 1x1, stride 1, no pad). */
size_t conv_rect_workspace_floats(const conv_rect_shape *s);
/* out = conv(inp, weight[Cout][Cin][kh][kw]) + bias[Cout] (bias may be NULL), then
 * max(out, 0) when relu is set. Image n of the output starts at out + n *
 * out_image_stride (0 means Cout*Ho*Wo), so a convolution can write straight into
 * its channel slice of a concatenation. One im2col + one SGEMM per image. */
void conv_rect_forward(float *out, const float *inp, const float *weight, const float *bias,
                       const conv_rect_shape *s, int relu, size_t out_image_stride, float *ws);

/* ---- pooling over k x k windows, stride s, padding p; [N][C][H][W] -> [N][C][Ho][Wo] ----
 * max: padded positions never win (as -inf). avg: count_include_pad = 0 divides by
 * the number of real positions in the window (pytorch-fid's Inception blocks),
 * 1 by k*k. */
void maxpool2d_forward(float *out, const float *inp, int N, int C, int H, int W, int k, int stride,
                       int pad);
void avgpool2d_forward(float *out, const float *inp, int N, int C, int H, int W, int k, int stride,
                       int pad, int count_include_pad);
/* out[N][C] = mean over HW of inp[N][C][HW] (summed in double). */
void global_avgpool_forward(float *out, const float *inp, int N, int C, int HW);

/* ---- bilinear resize [N][C][H][W] -> [N][C][Ho][Wo] as torch.nn.functional.interpolate(
 * mode='bilinear', align_corners=False) with an explicit size: source coordinate
 * (dst + 0.5) * (in/out) - 0.5, clamped at 0; the upper neighbour clamped to in-1;
 * rounded exactly as PyTorch's CPU kernel does for float32 (pool.c). */
void resize_bilinear_forward(float *out, const float *inp, int N, int C, int H, int W, int Ho,
                             int Wo);

#endif
