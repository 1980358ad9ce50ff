/* What the convolution formulations share on single planes (the bottom of the
 * conv layers, common/ops/conv_internal.h): the bordered copy of an input plane
 * through the fused activation, the unpadding of a computed plane back through
 * it, and the bias gradient. */
#include <string.h>

#include "common/ops/conv_internal.h"


/* The activations of the fused conv are computed over whole runs of rows at a
 * time, as flat arrays in a stack buffer of ACT_TMP floats (in L1): the rows
 * themselves are short (7..32 values in the small models), and a row-by-row
 * loop spent most of its time in scalar remainders. */
#define ACT_TMP 2048


/* One H x W plane x into its bordered (H+2) x Wp copy d, through silu (and
 * the mask mk, NULL for none) when silu is set. */
DDPM_CLONES
void conv_pad_plane(float *restrict d, const float *restrict x, const float *restrict mk,
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

/* Pixels per pass of conv_pack_block: 16 channels x PACK_PIX floats in L1. */
#define PACK_PIX 128

DDPM_CLONES
void conv_pack_block(void *restrict d, int bf16, int B, const float *restrict x,
                     const float *restrict mk, int silu, const conv_plane_norm *nm, int nc,
                     size_t HW) {
    float t[16][PACK_PIX];
    for (int c = nc; c < B; c++) memset(t[c], 0, sizeof t[c]);
    for (size_t p0 = 0; p0 < HW; p0 += PACK_PIX) {
        const size_t np = HW - p0 < PACK_PIX ? HW - p0 : PACK_PIX;
        for (int c = 0; c < nc; c++) {
            const float *src = x + (size_t)c * HW + p0;
            if (silu)
                ops_silu_mask(t[c], src, mk ? mk + (size_t)c * HW + p0 : NULL, np, nm[c]);
            else
                memcpy(t[c], src, sizeof(float) * np);
        }
        if (B == 16 && bf16) {
            uint16_t *restrict o = (uint16_t *)d + p0 * 16;
            for (size_t j = 0; j < np; j++)
#pragma omp simd
                for (int c = 0; c < 16; c++) o[j * 16 + c] = ops_bf16_rne(t[c][j]);
        } else if (B == 16) {
            float *restrict o = (float *)d + p0 * 16;
            for (size_t j = 0; j < np; j++)
#pragma omp simd
                for (int c = 0; c < 16; c++) o[j * 16 + c] = t[c][j];
        } else if (bf16) {
            uint16_t *restrict o = (uint16_t *)d + p0;
#pragma omp simd
            for (size_t j = 0; j < np; j++) o[j] = ops_bf16_rne(t[0][j]);
        } else {
            memcpy((float *)d + p0, t[0], sizeof(float) * np);
        }
    }
}

/* dbias[co] += sum of dout's channel co over every image: per channel, images in
 * order (the same sums as a serial loop). */
void conv_bias_grad(float *dbias, const float *dout, const conv_shape *s) {
    const size_t P = (size_t)s->Ho * s->Wo;
    const int Cout = s->Cout;
#pragma omp parallel for schedule(static) if ((size_t)s->N * Cout * P >= OPS_PAR_MIN)
    for (int co = 0; co < Cout; co++)
        for (int n = 0; n < s->N; n++)
            dbias[co] += (float)ops_sum(dout + ((size_t)n * Cout + co) * P, P);
}
