/* 2-D convolution as im2col + SGEMM (darknet's scheme), TF 'SAME' padding: the
 * formulation for any kernel size and stride (a conv_formulation).
 *
 * The batch is processed in chunks of `nb` images. Small feature maps (7x7,
 * 14x14) make per-image GEMMs too narrow for OpenBLAS to run well, so the
 * columns of nb images sit side by side in one [K][nb*P] matrix (K = Cin*k*k,
 * P = Ho*Wo) and one GEMM serves the chunk; its [Cout][nb*P] result is then
 * scattered to NCHW. nb = min(N, max(1, CONV_CHUNK_COLS / P)), so large maps
 * (P >= CONV_CHUNK_COLS) go one image at a time and the GEMM writes straight
 * into `out` with no scatter.
 *
 * Workspace (floats), the same for forward and backward:
 *   cols : K * nb * P          (im2col of the chunk; backward reuses it for
 *                               the column gradient after dweight is done)
 *   tmp  : Cout * nb * P       (only when nb > 1: GEMM result / gathered dout)
 * A 1x1 stride-1 conv with nb == 1 needs no workspace at all: the input image
 * already is its column matrix. */
#include <string.h>

#include "common/ops/conv_internal.h"

/* Output maps of at least this many pixels get one forward GEMM per image. */
#ifndef CONV_DIRECT_P
#define CONV_DIRECT_P 256
#endif

static int conv_is_pointwise(const conv_shape *s) { return s->k == 1 && s->stride == 1; }

static int conv_chunk_images(const conv_shape *s) {
    size_t P = (size_t)s->Ho * (size_t)s->Wo;
    size_t nb = P >= CONV_CHUNK_COLS ? 1 : CONV_CHUNK_COLS / P;
    if (nb > (size_t)s->N) nb = (size_t)s->N;
    return nb < 1 ? 1 : (int)nb;
}

/* Valid output-column range [lo, hi) for kernel column kw: those ow whose input
 * column ow*stride - pad_left + kw lies inside [0, W). */
static void conv_valid_range(int n_out, int n_in, int stride, int pad, int kk, int *lo, int *hi) {
    int a = pad - kk;           /* need ow*stride >= a */
    int b = n_in - 1 + pad - kk; /* need ow*stride <= b */
    int l = a <= 0 ? 0 : (a + stride - 1) / stride;
    int h = b < 0 ? 0 : b / stride + 1;
    if (h > n_out) h = n_out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* Stride 1 ('SAME' keeps H x W): the plane of row (c,kh,kw) is the input
 * plane shifted by off = (kh-pt)*W + (kw-pl) in flat index, so it is copied
 * with one contiguous memcpy; only the rows that fall in the vertical padding
 * and the |kw-pl| columns that wrap around a row edge are then zeroed. This
 * turns ~H short copies per plane into one long one. */
typedef struct {
    int row_lo, row_hi, col_lo, col_hi; /* valid output rows / columns */
    long i_lo, i_hi;                    /* flat output range whose source is in bounds */
    long off;                           /* source index = output index + off */
} conv_plane;

static conv_plane conv_plane_make(const conv_shape *s, int kh, int kw) {
    conv_plane p;
    conv_valid_range(s->H, s->H, 1, s->pad_top, kh, &p.row_lo, &p.row_hi);
    conv_valid_range(s->W, s->W, 1, s->pad_left, kw, &p.col_lo, &p.col_hi);
    const long W = s->W, HW = (long)s->H * W;
    p.off = (long)(kh - s->pad_top) * W + (kw - s->pad_left);
    p.i_lo = (long)p.row_lo * W;
    p.i_hi = (long)p.row_hi * W;
    if (p.i_lo + p.off < 0) p.i_lo = -p.off;
    if (p.i_hi + p.off > HW) p.i_hi = HW - p.off;
    if (p.i_hi < p.i_lo) p.i_hi = p.i_lo;
    return p;
}

/* Zero the padded columns of the valid rows of one plane d[H][W]. */
static void conv_plane_zero_cols(float *d, const conv_plane *p, int W) {
    for (int r = p->row_lo; r < p->row_hi; r++) {
        float *row = d + (size_t)r * W;
        for (int c = 0; c < p->col_lo; c++) row[c] = 0;
        for (int c = p->col_hi; c < W; c++) row[c] = 0;
    }
}

static void im2col_s1(float *cols, size_t ld, size_t off, const float *x, const conv_shape *s,
                      int c0, int c1) {
    const int k = s->k, W = s->W;
    const size_t HW = (size_t)s->H * W;
    for (int kh = 0; kh < k; kh++)
        for (int kw = 0; kw < k; kw++) {
            const conv_plane p = conv_plane_make(s, kh, kw);
            for (int c = c0; c < c1; c++) {
                float *d = cols + ((size_t)(c * k + kh) * k + kw) * ld + off;
                const float *xc = x + (size_t)c * HW;
                memset(d, 0, sizeof(float) * (size_t)p.row_lo * W);
                memset(d + (size_t)p.row_hi * W, 0, sizeof(float) * (HW - (size_t)p.row_hi * W));
                if (p.i_hi > p.i_lo)
                    memcpy(d + p.i_lo, xc + p.i_lo + p.off, sizeof(float) * (size_t)(p.i_hi - p.i_lo));
                conv_plane_zero_cols(d, &p, W);
            }
        }
}

/* Adjoint of im2col_s1. Zeroing the padded columns of the column gradient
 * first (it is scratch) lets one contiguous loop add the whole plane. */
static void col2im_add_s1(float *dx, float *cols, size_t ld, size_t off, const conv_shape *s,
                          int c0, int c1) {
    const int k = s->k, W = s->W;
    const size_t HW = (size_t)s->H * W;
    for (int kh = 0; kh < k; kh++)
        for (int kw = 0; kw < k; kw++) {
            const conv_plane p = conv_plane_make(s, kh, kw);
            for (int c = c0; c < c1; c++) {
                float *d = cols + ((size_t)(c * k + kh) * k + kw) * ld + off;
                float *xc = dx + (size_t)c * HW; /* xc[i + off] is in bounds for i in [i_lo, i_hi) */
                conv_plane_zero_cols(d, &p, W);
                for (long i = p.i_lo; i < p.i_hi; i++) xc[i + p.off] += d[i];
            }
        }
}

/* Columns of one image x[Cin][H][W] into cols (rows of length ld, starting at
 * column `off`): row (c,kh,kw), column (oh,ow) holds x[c][oh*s-pt+kh][ow*s-pl+kw]
 * or 0 in the padding. */
static void im2col(float *cols, size_t ld, size_t off, const float *x, const conv_shape *s,
                   int c0, int c1) {
    if (s->stride == 1) {
        im2col_s1(cols, ld, off, x, s, c0, c1);
        return;
    }
    const int k = s->k, st = s->stride, H = s->H, W = s->W, Ho = s->Ho, Wo = s->Wo;
    for (int c = c0; c < c1; c++) {
        const float *xc = x + (size_t)c * H * W;
        for (int kh = 0; kh < k; kh++) {
            for (int kw = 0; kw < k; kw++) {
                float *dst = cols + ((size_t)(c * k + kh) * k + kw) * ld + off;
                int lo, hi;
                conv_valid_range(Wo, W, st, s->pad_left, kw, &lo, &hi);
                for (int oh = 0; oh < Ho; oh++) {
                    float *d = dst + (size_t)oh * Wo;
                    int ih = oh * st - s->pad_top + kh;
                    if (ih < 0 || ih >= H) {
                        memset(d, 0, sizeof(float) * (size_t)Wo);
                        continue;
                    }
                    /* src[ow*st + base] is in bounds for ow in [lo, hi) */
                    const float *src = xc + (size_t)ih * W;
                    const int base = kw - s->pad_left;
                    for (int ow = 0; ow < lo; ow++) d[ow] = 0;
                    if (st == 1) {
                        if (hi > lo)
                            memcpy(d + lo, src + lo + base, sizeof(float) * (size_t)(hi - lo));
                    } else if (st == 2) { /* a constant stride lets gcc vectorise */
                        for (int ow = lo; ow < hi; ow++) d[ow] = src[2 * ow + base];
                    } else {
                        for (int ow = lo; ow < hi; ow++) d[ow] = src[ow * st + base];
                    }
                    for (int ow = hi; ow < Wo; ow++) d[ow] = 0;
                }
            }
        }
    }
}

/* The adjoint of im2col: adds the column gradient back into dx[Cin][H][W].
 * cols is scratch and may be modified (the stride-1 path zeroes padding). */
static void col2im_add(float *dx, float *cols, size_t ld, size_t off, const conv_shape *s,
                       int c0, int c1) {
    if (s->stride == 1) {
        col2im_add_s1(dx, cols, ld, off, s, c0, c1);
        return;
    }
    const int k = s->k, st = s->stride, H = s->H, W = s->W, Ho = s->Ho, Wo = s->Wo;
    for (int c = c0; c < c1; c++) {
        float *xc = dx + (size_t)c * H * W;
        for (int kh = 0; kh < k; kh++) {
            for (int kw = 0; kw < k; kw++) {
                const float *srcrow = cols + ((size_t)(c * k + kh) * k + kw) * ld + off;
                int lo, hi;
                conv_valid_range(Wo, W, st, s->pad_left, kw, &lo, &hi);
                for (int oh = 0; oh < Ho; oh++) {
                    int ih = oh * st - s->pad_top + kh;
                    if (ih < 0 || ih >= H) continue;
                    const float *d = srcrow + (size_t)oh * Wo;
                    float *dst = xc + (size_t)ih * W;
                    const int base = kw - s->pad_left;
                    if (st == 1) {
                        for (int ow = lo; ow < hi; ow++) dst[ow + base] += d[ow];
                    } else if (st == 2) {
                        for (int ow = lo; ow < hi; ow++) dst[2 * ow + base] += d[ow];
                    } else {
                        for (int ow = lo; ow < hi; ow++) dst[ow * st + base] += d[ow];
                    }
                }
            }
        }
    }
}

/* The column matrix of images n0..n0+cn-1, one task per (image, channel) so that
 * even a chunk of one or two images spreads over all threads. */
static void im2col_chunk(float *cols, size_t ld, size_t P, const float *inp, int n0, int cn,
                         const conv_shape *s) {
    const size_t HWin = (size_t)s->H * s->W;
    const int tasks = cn * s->Cin;
#pragma omp parallel for schedule(static) if ((size_t)tasks * HWin * s->k * s->k >= OPS_PAR_MIN)
    for (int task = 0; task < tasks; task++) {
        const int j = task / s->Cin, c = task % s->Cin;
        im2col(cols, ld, (size_t)j * P, inp + (size_t)(n0 + j) * s->Cin * HWin, s, c, c + 1);
    }
}

/* col2im of the chunk; each task adds into its own (image, channel) plane of dinp. */
static void col2im_chunk(float *dinp, float *cols, size_t ld, size_t P, int n0, int cn,
                         const conv_shape *s) {
    const size_t HWin = (size_t)s->H * s->W;
    const int tasks = cn * s->Cin;
#pragma omp parallel for schedule(static) if ((size_t)tasks * HWin * s->k * s->k >= OPS_PAR_MIN)
    for (int task = 0; task < tasks; task++) {
        const int j = task / s->Cin, c = task % s->Cin;
        col2im_add(dinp + (size_t)(n0 + j) * s->Cin * HWin, cols, ld, (size_t)j * P, s, c, c + 1);
    }
}

static int gemm_fits(const conv_shape *s) {
    (void)s;
    return 1;
}

static size_t gemm_workspace_floats(const conv_shape *s, const conv_plan *p) {
    (void)p;
    size_t P = (size_t)s->Ho * (size_t)s->Wo;
    size_t K = (size_t)s->Cin * (size_t)s->k * (size_t)s->k;
    size_t nb = (size_t)conv_chunk_images(s);
    if (nb == 1) return conv_is_pointwise(s) ? 0 : K * P;
    return (K + (size_t)s->Cout) * nb * P;
}

static void gemm_forward(float *out, const float *inp, const conv_act *act, const float *weight,
                         const float *bias, const conv_shape *s, const conv_plan *plan,
                         float *ws) {
    (void)act; /* not fused */
    (void)plan;
    const size_t P = (size_t)s->Ho * s->Wo, HWin = (size_t)s->H * s->W;
    const int K = s->Cin * s->k * s->k, Cout = s->Cout;
    const int nb = conv_chunk_images(s);
    for (int n0 = 0; n0 < s->N; n0 += nb) {
        const int cn = s->N - n0 < nb ? s->N - n0 : nb;
        const size_t ld = (size_t)cn * P;
        const float *cols;
        if (conv_is_pointwise(s) && cn == 1) {
            cols = inp + (size_t)n0 * s->Cin * HWin;
        } else {
            im2col_chunk(ws, ld, P, inp, n0, cn, s);
            cols = ws;
        }
        if (nb == 1) {
            /* Write straight into out; the bias pre-fill makes GEMM's beta=1 add it. */
            float *o = out + (size_t)n0 * Cout * P;
            if (bias) {
#pragma omp parallel for schedule(static) if ((size_t)Cout * P >= OPS_PAR_MIN)
                for (int co = 0; co < Cout; co++)
                    for (size_t p = 0; p < P; p++) o[co * P + p] = bias[co];
            }
            ops_sgemm(CblasNoTrans, CblasNoTrans, Cout, (int)ld, K, 1.0f,
                        weight, K, cols, (int)ld, bias ? 1.0f : 0.0f, o, (int)ld);
        } else if (P >= CONV_DIRECT_P) {
            /* Maps big enough for a good GEMM each: one GEMM per image straight
             * into out (columns j*P.. of the chunk), which saves the scatter pass
             * and GEMM's zeroing of tmp. */
            for (int j = 0; j < cn; j++) {
                float *o = out + (size_t)(n0 + j) * Cout * P;
                if (bias) {
#pragma omp parallel for schedule(static) if ((size_t)Cout * P >= OPS_PAR_MIN)
                    for (int co = 0; co < Cout; co++)
                        for (size_t p = 0; p < P; p++) o[co * P + p] = bias[co];
                }
                /* cols, not ws: a pointwise conv's single-image tail chunk reads
                 * the input directly (no im2col) */
                ops_sgemm(CblasNoTrans, CblasNoTrans, Cout, (int)P, K, 1.0f, weight, K,
                          cols + (size_t)j * P, (int)ld, bias ? 1.0f : 0.0f, o, (int)P);
            }
        } else {
            float *tmp = ws + (size_t)K * nb * P;
            ops_sgemm(CblasNoTrans, CblasNoTrans, Cout, (int)ld, K, 1.0f,
                        weight, K, cols, (int)ld, 0.0f, tmp, (int)ld);
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)cn * Cout * P >= OPS_PAR_MIN)
            for (int j = 0; j < cn; j++)
                for (int co = 0; co < Cout; co++) {
                    float *o = out + ((size_t)(n0 + j) * Cout + co) * P;
                    const float *t = tmp + (size_t)co * ld + (size_t)j * P;
                    const float b = bias ? bias[co] : 0.0f;
                    for (size_t p = 0; p < P; p++) o[p] = t[p] + b;
                }
        }
    }
}

static void gemm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const conv_act *act, const float *weight, const conv_shape *s,
                          const conv_plan *plan, float *ws) {
    (void)act;
    (void)plan;
    const size_t P = (size_t)s->Ho * s->Wo, HWin = (size_t)s->H * s->W;
    const int K = s->Cin * s->k * s->k, Cout = s->Cout, Cin = s->Cin;
    const int nb = conv_chunk_images(s);
    const int pointwise = conv_is_pointwise(s);

    for (int n0 = 0; n0 < s->N; n0 += nb) {
        const int cn = s->N - n0 < nb ? s->N - n0 : nb;
        const size_t ld = (size_t)cn * P;
        /* dout of the chunk as one [Cout][cn*P] matrix. */
        const float *D;
        if (nb == 1) {
            D = dout + (size_t)n0 * Cout * P;
        } else {
            float *tmp = ws + (size_t)K * nb * P;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)cn * Cout * P >= OPS_PAR_MIN)
            for (int j = 0; j < cn; j++)
                for (int co = 0; co < Cout; co++)
                    memcpy(tmp + (size_t)co * ld + (size_t)j * P,
                           dout + ((size_t)(n0 + j) * Cout + co) * P, sizeof(float) * P);
            D = tmp;
        }
        const int direct = pointwise && cn == 1; /* the input image is its own column matrix */
        if (dweight) {
            const float *cols;
            if (direct) {
                cols = inp + (size_t)n0 * Cin * HWin;
            } else {
                im2col_chunk(ws, ld, P, inp, n0, cn, s);
                cols = ws;
            }
            /* dW[Cout][K] += D[Cout][ld] * cols[K][ld]^T */
            ops_sgemm(CblasNoTrans, CblasTrans, Cout, K, (int)ld, 1.0f, D,
                        (int)ld, cols, (int)ld, 1.0f, dweight, K);
        }
        if (dinp) {
            if (direct) {
                /* dinp[Cin][P] += W^T[Cin][Cout] * D[Cout][P] */
                ops_sgemm(CblasTrans, CblasNoTrans, Cin, (int)P, Cout, 1.0f,
                            weight, K, D, (int)ld, 1.0f, dinp + (size_t)n0 * Cin * HWin,
                            (int)P);
            } else {
                /* dcols[K][ld] = W^T * D, overwriting the (finished) columns. */
                ops_sgemm(CblasTrans, CblasNoTrans, K, (int)ld, Cout, 1.0f,
                            weight, K, D, (int)ld, 0.0f, ws, (int)ld);
                col2im_chunk(dinp, ws, ld, P, n0, cn, s);
            }
        }
    }
}

const conv_formulation conv_gemm_formulation = {
    .fits = gemm_fits,
    .fused = 0,
    .workspace_floats = gemm_workspace_floats,
    .forward = gemm_forward,
    .backward = gemm_backward,
};
