/* The convolution layers' private interface (not part of the public API).
 *
 * Arrows point one way, down:
 *   conv.c         shapes, the plan (the formulation chosen for a shape) and the
 *                  dispatch of conv2d / silu_conv2d / gn_silu_conv2d to it;
 *   conv_gemm.c    im2col + SGEMM (any k and stride; 1x1 with no copy),
 *   conv_shift.c   3x3 stride-1 as nine shifted GEMMs,
 *   winograd.c     3x3 stride-1 by Winograd F(2x2) / F(4x4),
 *   conv_dnnl.c    oneDNN's direct convolutions (any k, stride):
 *                  the formulations, each a conv_formulation, which know
 *                  nothing of each other nor of the dispatcher;
 *   conv_plane.c   what they share on single planes: bordered copies and the
 *                  output unpadding through the fused activation, the bias
 *                  gradient;
 *   ops_internal.h threads, ops_sgemm, the vectorised expf.
 * A new formulation is a new file defining a conv_formulation, a conv_form
 * value (ops.h) and its entry and rule in conv.c's table and conv_plan_make. */
#ifndef DDPM_CONV_INTERNAL_H
#define DDPM_CONV_INTERNAL_H

#include <stddef.h>

#include "common/ops/ops.h"
#include "common/ops/ops_internal.h"

/* Target number of GEMM columns per chunk of images (conv_gemm.c, conv_shift.c):
 * wide enough for good SGEMM speed, small enough to keep the column buffer
 * modest. */
#ifndef CONV_CHUNK_COLS
#define CONV_CHUNK_COLS 4096
#endif

/* A GroupNorm applied on the fly to one plane (image n, channel c) of a fused
 * conv input: v = (x - mu) * a + b with a = rstd * gamma[c], b = beta[c], in
 * groupnorm_forward's arithmetic. on = 0: v = x. */
typedef struct {
    int on;
    float mu, a, b;
} conv_plane_norm;

/* out[i] = silu(v[i]) * mk[i] (mk NULL: no mask) with v = x or its plane's
 * GroupNorm: the fused conv input's activation, inlined into the cloned
 * kernels that use it. */
static inline void ops_silu_mask(float *restrict out, const float *restrict x,
                                 const float *restrict mk, size_t n, conv_plane_norm nm) {
    /* no "mk ? mk[i] : 1" inside a loop: gcc vectorises it as a masked load
     * from mk, and AMD's CPUs take a microcode assist on each masked load whose
     * masked-off lanes point at an unmapped page (mk NULL): 10x slower */
    if (nm.on && mk) {
        const float mu = nm.mu, a = nm.a, b = nm.b;
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            const float v = (x[i] - mu) * a + b;
            out[i] = v / (1.0f + ops_expf(-v)) * mk[i];
        }
    } else if (nm.on) {
        const float mu = nm.mu, a = nm.a, b = nm.b;
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            const float v = (x[i] - mu) * a + b;
            out[i] = v / (1.0f + ops_expf(-v));
        }
    } else if (mk) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + ops_expf(-x[i])) * mk[i];
    } else {
#pragma omp simd
        for (size_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + ops_expf(-x[i]));
    }
}

/* The fused input activation of silu_conv2d: the conv sees silu(g) * mask
 * (mask optional), computed while the conv copies its input; backward multiplies
 * the input gradient by mask * silu'(g) as it leaves. */
typedef struct {
    int silu;          /* 0: plain conv */
    const float *g;    /* the pre-activation input [N][C][H][W] (backward); with
                        * gn_groups, the GroupNorm's input */
    const float *mask; /* NULL or [N][C][H][W] */
    /* gn_groups > 0: the activation is silu(GroupNorm(g)) with these statistics
     * ([N][groups]) and affine parameters ([C]) */
    int gn_groups;
    const float *gn_mean, *gn_rstd, *gn_gamma, *gn_beta;
} conv_act;

/* The plane (n, c) of a C-channel input's GroupNorm under act (off when none). */
static inline conv_plane_norm conv_act_norm(const conv_act *act, int n, int c, int C) {
    conv_plane_norm nm = {0, 0.0f, 1.0f, 0.0f};
    if (act && act->gn_groups > 0) {
        const int G = act->gn_groups, g = c / (C / G);
        nm.on = 1;
        nm.mu = act->gn_mean[n * G + g];
        nm.a = act->gn_rstd[n * G + g] * act->gn_gamma[c];
        nm.b = act->gn_beta[c];
    }
    return nm;
}

/* The interior of one computed plane r0 (rows of pitch Wp) into the H x W plane
 * o: o = r + b (accumulate 0), o += r (accumulate, g NULL), or
 * o += r * (mk * silu'(v)) (accumulate through the fused activation; mk may be
 * NULL; v = g, or g's GroupNorm under nm). conv_plane.c. */
void conv_unpad_plane(float *restrict o, const float *restrict r0, float b, int accumulate,
                      const float *restrict g, const float *restrict mk, conv_plane_norm nm,
                      int H, int W, int Wp);
/* One H x W plane x into its bordered (H+2) x Wp copy d (zero border of one),
 * through silu (and the mask mk, NULL for none) when silu is set, GroupNorm'd
 * first under nm. conv_plane.c. */
void conv_pad_plane(float *restrict d, const float *restrict x, const float *restrict mk,
                    int silu, conv_plane_norm nm, int H, int W, int Wp);
/* Image n's channels c0 .. c0 + nc - 1 (nc <= B) of a plain fp32 tensor, x at
 * channel c0 (HW values of each plane, the planes pitch floats apart: a plane,
 * or a run of its rows), through the fused activation when silu is
 * set (nm[c], the mask mk at channel c0 or NULL), into one block d of a
 * channel-blocked layout: d[p][B] for pixel p, B = 16 (oneDNN's nChw16c) or 1
 * (one plain plane), fp32 or bf16 (rounded to nearest even); channels past nc
 * are zero. The one pass that replaces the activation's copy plus oneDNN's
 * reorder in conv_dnnl.c. conv_plane.c. */
void conv_pack_block(void *restrict d, int bf16, int B, const float *restrict x,
                     const float *restrict mk, int silu, const conv_plane_norm *nm, int nc,
                     size_t HW, size_t pitch);
/* The same in plain C, element by element (conv_pack_block runs it where the
 * CPU lacks AVX-512; the tests compare the two bit for bit). */
void conv_pack_block_portable(void *restrict d, int bf16, int B, const float *restrict x,
                              const float *restrict mk, int silu, const conv_plane_norm *nm,
                              int nc, size_t HW, size_t pitch);
/* The reverse for an fp32 output in nChw16c: one block s (s[p][16], image n's
 * channels c0 .. c0 + nc - 1, HW pixels) into the plain planes o (at channel
 * c0, pitch floats apart): stored
 * (accumulate 0), or added as conv_unpad_plane adds (o += s, or through the
 * fused activation's derivative when g is given: g, mk at channel c0, nm[c]).
 * In place of oneDNN's reorder plus the pass that adds. conv_plane.c. */
void conv_unpack_block(float *restrict o, const float *restrict s, int accumulate,
                       const float *restrict g, const float *restrict mk,
                       const conv_plane_norm *nm, int nc, size_t HW, size_t pitch);
void conv_unpack_block_portable(float *restrict o, const float *restrict s, int accumulate,
                                const float *restrict g, const float *restrict mk,
                                const conv_plane_norm *nm, int nc, size_t HW, size_t pitch);
/* dbias[co] += the sum of dout's channel co over every image. conv_plane.c. */
void conv_bias_grad(float *dbias, const float *dout, const conv_shape *s);

/* One formulation. fits: it can run shape s. fused: forward and backward take
 * a conv_act (else act is always NULL). prepared_floats / prepare: NULL when
 * it has nothing to prepare. state_create / state_free: NULL when it keeps no
 * state per plan (conv_state_create). backward adds into dinp and dweight (either may
 * be NULL, not both); the dispatcher does the bias gradient. */
typedef struct {
    int (*fits)(const conv_shape *s);
    int fused;
    size_t (*workspace_floats)(const conv_shape *s, const conv_plan *p);
    size_t (*prepared_floats)(const conv_shape *s, const conv_plan *p);
    void (*prepare)(float *prep, const float *weight, const conv_shape *s, const conv_plan *p);
    conv_state *(*state_create)(const conv_shape *s, const conv_plan *p);
    void (*state_free)(conv_state *st);
    /* NULL or the output rows per chunk the plan's state runs (0: whole images) */
    int (*chunk_rows)(const conv_plan *p);
    void (*forward)(float *out, const float *inp, const conv_act *act, const float *weight,
                    const float *bias, const conv_shape *s, const conv_plan *p, float *ws);
    void (*backward)(float *dinp, float *dweight, const float *dout, const float *inp,
                     const conv_act *act, const float *weight, const conv_shape *s,
                     const conv_plan *p, float *ws);
} conv_formulation;

extern const conv_formulation conv_gemm_formulation;     /* conv_gemm.c */
extern const conv_formulation conv_shift_formulation;    /* conv_shift.c */
extern const conv_formulation conv_winograd_formulation; /* winograd.c */
extern const conv_formulation conv_dnnl_formulation;     /* conv_dnnl.c */

/* winograd.c: the forward's tile for shape s (which it fits) given the forced
 * tile (0, 2 or 4): F(2x2) where F(4x4) does not fit. */
int conv_winograd_forward_tile(const conv_shape *s, int forced);

#endif
