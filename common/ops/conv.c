/* 2-D convolution as im2col + SGEMM (darknet's scheme), TF 'SAME' padding.
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
#include "ops.h"

#include "../core/prof.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops_internal.h"

/* Target number of GEMM columns per chunk: wide enough for good SGEMM speed,
 * small enough to keep the column buffer modest. */
#ifndef CONV_CHUNK_COLS
#define CONV_CHUNK_COLS 4096
#endif

conv_shape conv_shape_make(int N, int Cin, int H, int W, int Cout, int k, int stride) {
    conv_shape s = {.N = N, .Cin = Cin, .H = H, .W = W, .Cout = Cout, .k = k, .stride = stride};
    s.Ho = (H + stride - 1) / stride;
    s.Wo = (W + stride - 1) / stride;
    int pad_h = (s.Ho - 1) * stride + k - H;
    int pad_w = (s.Wo - 1) * stride + k - W;
    if (pad_h < 0) pad_h = 0;
    if (pad_w < 0) pad_w = 0;
    s.pad_top = pad_h / 2; /* TF 'SAME': the smaller half goes before */
    s.pad_left = pad_w / 2;
    return s;
}

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

static size_t shift_workspace_floats(const conv_shape *s);
static int conv_is_shift3(const conv_shape *s);

static conv_algo conv_algo_setting = CONV_ALGO_AUTO;

void conv_set_algo(conv_algo a) { conv_algo_setting = a; }

int conv_uses_winograd(const conv_shape *s) {
    if (!conv_is_shift3(s) || !conv_winograd_fits(s)) return 0;
    switch (conv_algo_setting) {
    case CONV_ALGO_SHIFT: return 0;
    case CONV_ALGO_WINOGRAD: return 1;
    default: return s->Cin >= CONV_WINOGRAD_MIN_CH && s->Cout >= CONV_WINOGRAD_MIN_CH;
    }
}

/* A 3x3 stride-1 workspace fits both formulations, so that conv_set_algo may
 * change between sizing and running (tests switch it on live models). */
size_t conv_workspace_floats(const conv_shape *s) {
    if (conv_is_shift3(s)) {
        size_t a = shift_workspace_floats(s);
        size_t b = conv_winograd_fits(s) ? conv_winograd_workspace_floats(s) : 0;
        return a > b ? a : b;
    }
    size_t P = (size_t)s->Ho * (size_t)s->Wo;
    size_t K = (size_t)s->Cin * (size_t)s->k * (size_t)s->k;
    size_t nb = (size_t)conv_chunk_images(s);
    if (nb == 1) return conv_is_pointwise(s) ? 0 : K * P;
    return (K + (size_t)s->Cout) * nb * P;
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

/* ---------- 3x3 stride-1 convolution as nine shifted GEMMs ----------
 *
 * No im2col: a chunk of nb images is copied once into a zero-bordered layout
 * xp[Cin][nb*PP] (image j's plane at columns j*PP.., PP = (H+2)(W+2), row
 * length Wp = W+2). In that layout the input pixel under kernel tap (kh,kw) of
 * output position q is at q + off, off = (kh-1)*Wp + (kw-1), for every q, so
 * the nine taps are nine GEMMs over shifted column windows of the same matrix:
 *
 *   O[Cout][L] += W_tap[Cout][Cin] * xp[Cin][q0+off .. q0+off+L)
 *
 * with q0 = Wp+1 (image 0's first interior pixel) and L columns reaching image
 * nb-1's last interior pixel; the windows never leave [0, nb*PP). Columns that
 * land on a border position hold garbage and are never read out. Backward uses
 * the same layout for dout (zero borders, so the garbage columns contribute
 * nothing): dW_tap += dP[Cout][L] * xp_window^T, and dx = sum over taps of
 * W_tap^T * dP window shifted by -off (the transposed convolution).
 *
 * Per element the input is copied once (plus OpenBLAS's packing of each
 * window), against nine copies (im2col) plus packing; the workspace is a few
 * padded planes instead of a 9x column matrix. */

static int conv_is_shift3(const conv_shape *s) {
    return s->k == 3 && s->stride == 1 && s->pad_top == 1 && s->pad_left == 1;
}

typedef struct {
    int Wp, nb;
    size_t PP, ld, q0, L; /* ld = nb*PP; L computed columns from q0 */
} shift_geom;

static shift_geom shift_geom_make(const conv_shape *s, int cn) {
    shift_geom g;
    g.Wp = s->W + 2;
    g.PP = (size_t)(s->H + 2) * (size_t)g.Wp;
    g.nb = cn;
    g.ld = (size_t)cn * g.PP;
    g.q0 = (size_t)g.Wp + 1;
    g.L = (size_t)(cn - 1) * g.PP + (size_t)(s->H - 1) * g.Wp + (size_t)s->W;
    return g;
}

static int shift_chunk_images(const conv_shape *s) {
    size_t PP = (size_t)(s->H + 2) * (size_t)(s->W + 2);
    size_t nb = PP >= CONV_CHUNK_COLS ? 1 : CONV_CHUNK_COLS / PP;
    if (nb > (size_t)s->N) nb = (size_t)s->N;
    return nb < 1 ? 1 : (int)nb;
}

/* floats: xp[Cin][ld] + dp[Cout][ld] + dxl[Cin][ld] + Wt[9][Cout][Cin] + dWt */
static size_t shift_workspace_floats(const conv_shape *s) {
    size_t ld = (size_t)shift_chunk_images(s) * (size_t)(s->H + 2) * (size_t)(s->W + 2);
    size_t taps = 9 * (size_t)s->Cin * (size_t)s->Cout;
    return (2 * (size_t)s->Cin + (size_t)s->Cout) * ld + 2 * taps;
}


/* The activations of the fused conv are computed over whole runs of rows at a
 * time, as flat arrays in a stack buffer of ACT_TMP floats (in L1): the rows
 * themselves are short (7..32 values in the small models), and a row-by-row
 * loop spent most of its time in scalar remainders. */
#define ACT_TMP 2048

/* One H x W plane x into its bordered (H+2) x Wp copy d, through silu (and
 * the mask mk, NULL for none) when silu is set. */
DDPM_CLONES
static void pad_plane(float *restrict d, const float *restrict x, const float *restrict mk,
                      int silu, conv_plane_norm nm, int H, int W, int Wp) {
    float t[ACT_TMP];
    const int rows = W >= ACT_TMP ? 1 : ACT_TMP / W;
    memset(d, 0, sizeof(float) * (size_t)Wp);
    for (int h0 = 0; h0 < H; h0 += rows) {
        const int nr = H - h0 < rows ? H - h0 : rows;
        const float *src = x + (size_t)h0 * W;
        const size_t n = (size_t)nr * W;
        if (silu) {
            /* a row longer than the buffer (then nr = 1) goes straight to d */
            float *tt = W > ACT_TMP ? d + (size_t)(h0 + 1) * Wp + 1 : t;
            ops_silu_mask(tt, src, mk ? mk + (size_t)h0 * W : NULL, n, nm);
            if (W > ACT_TMP) {
                d[(size_t)(h0 + 1) * Wp] = 0;
                d[(size_t)(h0 + 1) * Wp + W + 1] = 0;
                continue;
            }
            src = t;
        }
        for (int h = 0; h < nr; h++) {
            float *r = d + (size_t)(h0 + h + 1) * Wp;
            r[0] = 0;
            memcpy(r + 1, src + (size_t)h * W, sizeof(float) * (size_t)W);
            r[W + 1] = 0;
        }
    }
    memset(d + (size_t)(H + 1) * Wp, 0, sizeof(float) * (size_t)Wp);
}

/* Planes c of images n0..n0+cn-1 of src[N][C][H][W] into the bordered layout
 * dst[C][ld], through the activation when act->silu; one task per (image, channel). */
static void shift_pad(float *dst, const float *src, const conv_act *act, int C, int n0,
                      const shift_geom *g, const conv_shape *s) {
    const int H = s->H, W = s->W, Wp = g->Wp;
    const size_t HW = (size_t)H * W;
    const int tasks = g->nb * C;
    const int silu = act && act->silu;
    const float *mask = act ? act->mask : NULL;
#pragma omp parallel for schedule(static) if ((size_t)tasks * g->PP >= OPS_PAR_MIN)
    for (int task = 0; task < tasks; task++) {
        const int j = task / C, c = task % C;
        const size_t plane = ((size_t)(n0 + j) * C + c) * HW;
        pad_plane(dst + (size_t)c * g->ld + (size_t)j * g->PP, src + plane,
                  mask ? mask + plane : NULL, silu, conv_act_norm(act, n0 + j, c, C), H, W, Wp);
    }
}

/* The interior of one computed plane r0 (row pitch Wp, q0 at its start) into
 * the H x W plane o: o = r + b (accumulate 0), o += r (accumulate, no g), or
 * o += r * (mk * silu'(g)) (accumulate through the fused activation, mk
 * optional; the factor is computed flat over runs of rows, see ACT_TMP). */
DDPM_CLONES
void conv_unpad_plane(float *restrict o, const float *restrict r0, float b, int accumulate,
                        const float *restrict g, const float *restrict mk, conv_plane_norm nm,
                        int H, int W, int Wp) {
    /* through silu': sg = sigmoid(g) and q = 1 + g (1 - sg) flat over the run of
     * rows, then d += r * mk * sg * q in silu_backward's and dropout_backward's
     * order, so the result is bit-identical to the unfused ops */
    float fs[ACT_TMP], fq[ACT_TMP];
    const int rows = W >= ACT_TMP ? 1 : ACT_TMP / W;
    for (int h0 = 0; h0 < H; h0 += rows) {
        const int nr = H - h0 < rows ? H - h0 : rows;
        for (int w0 = 0; w0 < W; w0 += ACT_TMP) { /* one pass unless W > ACT_TMP */
            const int nw = W - w0 < ACT_TMP ? W - w0 : ACT_TMP;
            const int wide = W > ACT_TMP; /* then nr = 1 and this is a piece of a row */
            if (accumulate && g) {
                const size_t n = wide ? (size_t)nw : (size_t)nr * W;
                const float *restrict gs = g + (size_t)h0 * W + w0;
                const float mu = nm.mu, a = nm.a, bb = nm.b;
                const int on = nm.on;
#pragma omp simd
                for (size_t i = 0; i < n; i++) {
                    const float x = on ? (gs[i] - mu) * a + bb : gs[i];
                    const float sg = 1.0f / (1.0f + ops_expf(-x));
                    fs[i] = sg;
                    fq[i] = 1.0f + x * (1.0f - sg);
                }
            }
            const int pw = wide ? nw : W; /* columns per row in this pass */
            for (int h = h0; h < h0 + nr; h++) {
                const size_t fo = wide ? 0 : (size_t)(h - h0) * W;
                const float *restrict r = r0 + (size_t)h * Wp + w0; /* q0: row 1, col 1 */
                float *restrict d = o + (size_t)h * W + w0;
                if (!accumulate) {
#pragma omp simd
                    for (int w = 0; w < pw; w++) d[w] = r[w] + b;
                } else if (!g) {
#pragma omp simd
                    for (int w = 0; w < pw; w++) d[w] += r[w];
                } else if (mk) {
                    const float *restrict mr = mk + (size_t)h * W + w0;
                    const float *restrict sr = fs + fo, *restrict qr = fq + fo;
#pragma omp simd
                    for (int w = 0; w < pw; w++) d[w] += r[w] * mr[w] * sr[w] * qr[w];
                } else {
                    const float *restrict sr = fs + fo, *restrict qr = fq + fo;
#pragma omp simd
                    for (int w = 0; w < pw; w++) d[w] += r[w] * sr[w] * qr[w];
                }
            }
            if (!wide) break;
        }
    }
}

/* dst[n0+j][c][h][w] (+)= src[c][j*PP + (h+1)*Wp + w+1 - q0] (+ bias[c]): the
 * interior of a computed [C][L] block back to NCHW. When accumulating through an
 * activation, the value added is src * mask * silu'(g) (the chain rule through
 * the fused silu and dropout, in silu_backward's and dropout_backward's order). */
static void shift_unpad(float *dst, const float *src, const float *bias, const conv_act *act,
                        int C, int n0, int accumulate, const shift_geom *g,
                        const conv_shape *s) {
    const int H = s->H, W = s->W, Wp = g->Wp;
    const size_t HW = (size_t)H * W;
    const int tasks = g->nb * C;
    const int silu = act && act->silu;
#pragma omp parallel for schedule(static) if ((size_t)tasks * HW >= OPS_PAR_MIN)
    for (int task = 0; task < tasks; task++) {
        const int j = task / C, c = task % C;
        const size_t plane = ((size_t)(n0 + j) * C + c) * HW;
        conv_unpad_plane(dst + plane, src + (size_t)c * g->L + (size_t)j * g->PP,
                         bias ? bias[c] : 0.0f, accumulate, silu ? act->g + plane : NULL,
                         silu && act->mask ? act->mask + plane : NULL,
                         conv_act_norm(silu ? act : NULL, n0 + j, c, C), H, W, Wp);
    }
}

/* Wt[tap][co][c] = weight[co][c][tap] */
static void shift_taps(float *Wt, const float *weight, int Cout, int Cin) {
#pragma omp parallel for schedule(static) if ((size_t)Cout * Cin * 9 >= OPS_PAR_MIN)
    for (int co = 0; co < Cout; co++)
        for (int c = 0; c < Cin; c++)
            for (int tap = 0; tap < 9; tap++)
                Wt[((size_t)tap * Cout + co) * Cin + c] = weight[((size_t)co * Cin + c) * 9 + tap];
}

static long shift_off(const shift_geom *g, int tap) {
    return (long)(tap / 3 - 1) * g->Wp + (tap % 3 - 1);
}

static void shift_forward(float *out, const float *inp, const conv_act *act,
                          const float *weight, const float *bias, const conv_shape *s,
                          float *ws) {
    const int Cin = s->Cin, Cout = s->Cout, nbmax = shift_chunk_images(s);
    const size_t ldmax = (size_t)nbmax * (size_t)(s->H + 2) * (size_t)(s->W + 2);
    float *xp = ws, *op = xp + (size_t)Cin * ldmax, *Wt = op + (size_t)Cout * ldmax;
    shift_taps(Wt, weight, Cout, Cin);
    for (int n0 = 0; n0 < s->N; n0 += nbmax) {
        const int cn = s->N - n0 < nbmax ? s->N - n0 : nbmax;
        const shift_geom g = shift_geom_make(s, cn);
        shift_pad(xp, inp, act, Cin, n0, &g, s);
        for (int tap = 0; tap < 9; tap++)
            ops_sgemm(CblasNoTrans, CblasNoTrans, Cout, (int)g.L, Cin, 1.0f,
                      Wt + (size_t)tap * Cout * Cin, Cin, xp + g.q0 + shift_off(&g, tap),
                      (int)g.ld, tap ? 1.0f : 0.0f, op, (int)g.L);
        shift_unpad(out, op, bias, NULL, Cout, n0, 0, &g, s);
    }
}

static void shift_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                           const conv_act *act, const float *weight, const conv_shape *s,
                           float *ws) {
    const int Cin = s->Cin, Cout = s->Cout, nbmax = shift_chunk_images(s);
    const size_t ldmax = (size_t)nbmax * (size_t)(s->H + 2) * (size_t)(s->W + 2);
    const size_t taps = 9 * (size_t)Cin * Cout;
    float *xp = ws, *dp = xp + (size_t)Cin * ldmax, *dxl = dp + (size_t)Cout * ldmax;
    float *Wt = dxl + (size_t)Cin * ldmax, *dWt = Wt + taps;
    shift_taps(Wt, weight, Cout, Cin);
    for (int n0 = 0; n0 < s->N; n0 += nbmax) {
        const int cn = s->N - n0 < nbmax ? s->N - n0 : nbmax;
        const shift_geom g = shift_geom_make(s, cn);
        shift_pad(dp, dout, NULL, Cout, n0, &g, s);
        if (dweight) {
            shift_pad(xp, inp, act, Cin, n0, &g, s);
            /* dWt[tap][Cout][Cin] (+)= dP[Cout][L] * xp_window[Cin][L]^T */
            for (int tap = 0; tap < 9; tap++)
                ops_sgemm(CblasNoTrans, CblasTrans, Cout, Cin, (int)g.L, 1.0f, dp + g.q0,
                          (int)g.ld, xp + g.q0 + shift_off(&g, tap), (int)g.ld,
                          n0 ? 1.0f : 0.0f, dWt + (size_t)tap * Cout * Cin, Cin);
        }
        if (dinp) {
            /* dx[c][q] = sum_tap sum_co W[co][c][tap] dP[co][q - off] */
            for (int tap = 0; tap < 9; tap++)
                ops_sgemm(CblasTrans, CblasNoTrans, Cin, (int)g.L, Cout, 1.0f,
                          Wt + (size_t)tap * Cout * Cin, Cin, dp + g.q0 - shift_off(&g, tap),
                          (int)g.ld, tap ? 1.0f : 0.0f, dxl, (int)g.L);
            shift_unpad(dinp, dxl, NULL, act, Cin, n0, 1, &g, s);
        }
    }
    if (dweight) {
#pragma omp parallel for schedule(static) if (taps >= OPS_PAR_MIN)
        for (int co = 0; co < Cout; co++)
            for (int c = 0; c < Cin; c++)
                for (int tap = 0; tap < 9; tap++)
                    dweight[((size_t)co * Cin + c) * 9 + tap] +=
                        dWt[((size_t)tap * Cout + co) * Cin + c];
    }
}

/* A 3x3 stride-1 pad-1 convolution (conv_is_shift3), with its fused input
 * activation: Winograd or the shifted GEMMs, as conv_uses_winograd says. */
static void conv3_forward(float *out, const float *inp, const conv_act *act,
                          const float *weight, const float *bias, const conv_shape *s,
                          float *ws) {
    if (conv_uses_winograd(s))
        conv_winograd_forward(out, inp, act, weight, bias, s, ws);
    else
        shift_forward(out, inp, act, weight, bias, s, ws);
}

static void conv3_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                           const conv_act *act, const float *weight, const conv_shape *s,
                           float *ws) {
    if (conv_uses_winograd(s))
        conv_winograd_backward(dinp, dweight, dout, inp, act, weight, s, ws);
    else
        shift_backward(dinp, dweight, dout, inp, act, weight, s, ws);
}

/* dbias[co] += sum of dout's channel co over every image: per channel, images in
 * order (the same sums as a serial loop). */
static void conv_dbias(float *dbias, const float *dout, const conv_shape *s) {
    const size_t P = (size_t)s->Ho * s->Wo;
    const int Cout = s->Cout;
#pragma omp parallel for schedule(static) if ((size_t)s->N * Cout * P >= OPS_PAR_MIN)
    for (int co = 0; co < Cout; co++)
        for (int n = 0; n < s->N; n++)
            dbias[co] += (float)ops_sum(dout + ((size_t)n * Cout + co) * P, P);
}

void conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    const conv_shape *s, float *ws) {
    PROF_SCOPE(PROF_CONV_FWD);
    if (conv_is_shift3(s)) {
        conv3_forward(out, inp, NULL, weight, bias, s, ws);
        return;
    }
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

void conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, const conv_shape *s, float *ws) {
    PROF_SCOPE(PROF_CONV_BWD);
    const size_t P = (size_t)s->Ho * s->Wo, HWin = (size_t)s->H * s->W;
    const int K = s->Cin * s->k * s->k, Cout = s->Cout, Cin = s->Cin;
    const int nb = conv_chunk_images(s);
    const int pointwise = conv_is_pointwise(s);

    if (dbias) conv_dbias(dbias, dout, s);
    if (!dinp && !dweight) return;
    if (conv_is_shift3(s)) {
        conv3_backward(dinp, dweight, dout, inp, NULL, weight, s, ws);
        return;
    }

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

/* ---------- SiLU (and dropout) fused into a 3x3 stride-1 convolution ---------- */

static void silu_conv_check(const conv_shape *s) {
    if (!conv_is_shift3(s)) {
        fprintf(stderr, "silu_conv2d: only 3x3 stride-1 convolutions (got k %d stride %d)\n",
                s->k, s->stride);
        abort();
    }
}

void silu_conv2d_forward(float *out, const float *inp, const float *mask, const float *weight,
                         const float *bias, const conv_shape *s, float *ws) {
    gn_silu_conv2d_forward(out, inp, NULL, mask, weight, bias, s, ws);
}

void silu_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *mask, const float *weight,
                          const conv_shape *s, float *ws) {
    gn_silu_conv2d_backward(dinp, dweight, dbias, dout, inp, NULL, mask, weight, s, ws);
}

/* ---------- GroupNorm, SiLU (and dropout) fused into a 3x3 stride-1 convolution ---------- */

static conv_act gn_act(const float *inp, const gn_apply *gn, const float *mask) {
    conv_act act = {.silu = 1, .g = inp, .mask = mask};
    if (gn) {
        act.gn_groups = gn->groups;
        act.gn_mean = gn->mean;
        act.gn_rstd = gn->rstd;
        act.gn_gamma = gn->gamma;
        act.gn_beta = gn->beta;
    }
    return act;
}

void gn_silu_conv2d_forward(float *out, const float *inp, const gn_apply *gn, const float *mask,
                            const float *weight, const float *bias, const conv_shape *s,
                            float *ws) {
    PROF_SCOPE(PROF_CONV_FWD);
    silu_conv_check(s);
    const conv_act act = gn_act(inp, gn, mask);
    conv3_forward(out, inp, &act, weight, bias, s, ws);
}

void gn_silu_conv2d_backward(float *dgn, float *dweight, float *dbias, const float *dout,
                             const float *inp, const gn_apply *gn, const float *mask,
                             const float *weight, const conv_shape *s, float *ws) {
    PROF_SCOPE(PROF_CONV_BWD);
    silu_conv_check(s);
    if (dbias) conv_dbias(dbias, dout, s);
    if (!dgn && !dweight) return;
    const conv_act act = gn_act(inp, gn, mask);
    conv3_backward(dgn, dweight, dout, inp, &act, weight, s, ws);
}
