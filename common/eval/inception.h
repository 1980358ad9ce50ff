/* Inception-v3 feature extractor compatible with pytorch-fid (its FIDInceptionA/C/E
 * blocks on torchvision's Inception3), forward only, for FID and Inception Score.
 *
 * Input handling as pytorch-fid: images in [0, 1] (uint8 / 255; one grey channel is
 * repeated to RGB as PIL's convert('RGB') does), resized to 299x299 bilinear
 * (align_corners=False), scaled to [-1, 1]. Output per image: the 2048 pool3
 * features (after the global average pool) and, on request, the 1008 logits of the
 * 2015 graph's softmax layer as the Inception Score uses them: pool3 x fc.weight^T
 * WITHOUT fc.bias (Salimans et al.'s code multiplies by the weights only).
 *
 * Weights: a tensor file (common/io/tensor_file.h) written by ops/convert_inception.py
 * from pytorch-fid's pt_inception-2015-12-05-6726825d.pth, with BatchNorm (eps 1e-3)
 * folded into each convolution: NAME.weight [Cout][Cin][kh][kw], NAME.bias [Cout]
 * for the 94 BasicConv2d layers (NAME = torchvision's, e.g. Mixed_6b.branch7x7_2),
 * fc.weight [1008][2048] and fc.bias [1008]. docs/evaluation.md lists the layers. */
#ifndef DDPM_INCEPTION_H
#define DDPM_INCEPTION_H

#include <stddef.h>
#include <stdint.h>

#define INCEPTION_FEATURES 2048
#define INCEPTION_CLASSES 1008
#define INCEPTION_SIZE 299
#define INCEPTION_CONVS 94

typedef struct inception inception; /* opaque; owns weights and activation buffers */

/* Loads every tensor from path and checks its shape against the network's (exactly)
 * and its values (finite); the file's records are checked against its size first
 * (tensor_reader_open), so nothing is allocated from a size the file cannot hold. On success *out is the
 * caller's (inception_free). Returns 0, or -1 with err_msg() naming the file and
 * the missing or misshapen tensor. */
int inception_load(inception **out, const char *path);
void inception_free(inception *net);

/* Name, shape and padding of conv layer i (0..INCEPTION_CONVS-1), in forward order. */
typedef struct {
    char name[48];
    int cin, cout, kh, kw, stride, ph, pw;
} inception_conv_info;
const inception_conv_info *inception_conv_layer(int i);

/* x: N images [3][H][W] with values in [0, 1] (borrowed). Writes pool3[N][2048]
 * and, when logits is not NULL, logits[N][1008] (caller's). Images are run one at
 * a time; the BLAS threads do the work. The net's buffers are reused: one caller
 * at a time per inception object. Returns 0, or -1 (err_msg) on an internal error. */
int inception_forward(inception *net, const float *x, int N, int H, int W, float *pool3,
                      float *logits);

/* The same from uint8 images in NHWC order (an .npz's arr_0) with C = 1 or 3
 * channels. Returns 0, or -1 (err_msg) on a channel count other than 1 or 3. */
int inception_forward_u8(inception *net, const uint8_t *nhwc, int N, int H, int W, int C,
                         float *pool3, float *logits);

#endif
