/* 3x3 stride-1 convolutions as nine shifted GEMMs (a conv_formulation).
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

#include <string.h>

#include "common/ops/conv_internal.h"

static int shift_fits(const conv_shape *s) {
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
static size_t shift_workspace_floats(const conv_shape *s, const conv_plan *p) {
    (void)p;
    size_t ld = (size_t)shift_chunk_images(s) * (size_t)(s->H + 2) * (size_t)(s->W + 2);
    size_t taps = 9 * (size_t)s->Cin * (size_t)s->Cout;
    return (2 * (size_t)s->Cin + (size_t)s->Cout) * ld + 2 * taps;
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
        conv_pad_plane(dst + (size_t)c * g->ld + (size_t)j * g->PP, src + plane,
                  mask ? mask + plane : NULL, silu, conv_act_norm(act, n0 + j, c, C), H, W, Wp);
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
                          const conv_plan *p, float *ws) {
    (void)p;
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
                           const conv_plan *p, float *ws) {
    (void)p;
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

const conv_formulation conv_shift_formulation = {
    .fits = shift_fits,
    .fused = 1,
    .workspace_floats = shift_workspace_floats,
    .forward = shift_forward,
    .backward = shift_backward,
};
