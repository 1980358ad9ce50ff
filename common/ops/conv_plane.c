/* What the convolution formulations share on single planes (the bottom of the
 * conv layers, common/ops/conv_internal.h): the bordered copy of an input plane
 * through the fused activation, the unpadding of a computed plane back through
 * it, and the bias gradient. */
#include <stdint.h>
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

/* The rows of one pass: channel c's PACK_PIX values (or fewer) at row[c],
 * through the fused activation into t when silu is set; channels past nc read
 * zeros. */
static void pack_rows(const float *row[16], float t[16][PACK_PIX], const float *restrict x,
                      const float *restrict mk, int silu, const conv_plane_norm *nm, int nc,
                      int B, size_t pitch, size_t p0, size_t np) {
    static const float zero[PACK_PIX];
    for (int c = 0; c < B; c++) {
        if (c >= nc) {
            row[c] = zero;
        } else if (silu) {
            ops_silu_mask(t[c], x + (size_t)c * pitch + p0,
                          mk ? mk + (size_t)c * pitch + p0 : NULL, np, nm[c]);
            row[c] = t[c];
        } else {
            row[c] = x + (size_t)c * pitch + p0;
        }
    }
}

/* Pixels j0 .. np - 1 of one pass (rows as pack_rows left them) into the
 * block d, element by element. */
static inline void pack_cols(void *restrict d, int bf16, int B, const float *const row[16],
                             size_t p0, size_t j0, size_t np) {
    for (size_t j = j0; j < np; j++)
        for (int c = 0; c < B; c++) {
            const size_t i = (p0 + j) * (size_t)B + (size_t)c;
            if (bf16)
                ((uint16_t *)d)[i] = ops_bf16_rne(row[c][j]);
            else
                ((float *)d)[i] = row[c][j];
        }
}

/* Pixels j0 .. np - 1 of one pass of the block s into the channels' rows t. */
static inline void unpack_cols(float t[16][PACK_PIX], const float *restrict s, int nc,
                               size_t p0, size_t j0, size_t np) {
    for (size_t j = j0; j < np; j++)
        for (int c = 0; c < nc; c++) t[c][j] = s[(p0 + j) * 16 + (size_t)c];
}

DDPM_CLONES
void conv_pack_block_portable(void *restrict d, int bf16, int B, const float *restrict x,
                              const float *restrict mk, int silu, const conv_plane_norm *nm,
                              int nc, size_t HW, size_t pitch) {
    float t[16][PACK_PIX];
    const float *row[16];
    for (size_t p0 = 0; p0 < HW; p0 += PACK_PIX) {
        const size_t np = HW - p0 < PACK_PIX ? HW - p0 : PACK_PIX;
        pack_rows(row, t, x, mk, silu, nm, nc, B, pitch, p0, np);
        pack_cols(d, bf16, B, row, p0, 0, np);
    }
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DDPM_NO_CLONES)
#define PACK_AVX512 1
#include <immintrin.h>

/* r[0..15] (16 rows of 16 floats) transposed in place: r[j] = column j. */
__attribute__((target("avx512f"))) static inline void tr16x16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[g][k]: columns k, k + 4, k + 8, k + 12 (one per 128-bit lane) of rows
     * 4g .. 4g + 3 */
    __m512 u[4][4];
    for (int g = 0; g < 4; g++) {
        const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]),
                      c = _mm512_castps_pd(t[4 * g + 2]), e = _mm512_castps_pd(t[4 * g + 3]);
        u[g][0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[g][1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[g][2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
        u[g][3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
    }
    for (int k = 0; k < 4; k++) {
        const __m512 l01 = _mm512_shuffle_f32x4(u[0][k], u[1][k], 0x44),
                     h01 = _mm512_shuffle_f32x4(u[0][k], u[1][k], 0xEE),
                     l23 = _mm512_shuffle_f32x4(u[2][k], u[3][k], 0x44),
                     h23 = _mm512_shuffle_f32x4(u[2][k], u[3][k], 0xEE);
        r[k] = _mm512_shuffle_f32x4(l01, l23, 0x88);
        r[k + 4] = _mm512_shuffle_f32x4(l01, l23, 0xDD);
        r[k + 8] = _mm512_shuffle_f32x4(h01, h23, 0x88);
        r[k + 12] = _mm512_shuffle_f32x4(h01, h23, 0xDD);
    }
}

/* 16 floats to bf16, ops_bf16_rne's rounding lane by lane. */
__attribute__((target("avx512f"))) static inline __m256i bf16x16(__m512 v) {
    const __m512i u = _mm512_castps_si512(v), hi = _mm512_srli_epi32(u, 16);
    const __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
                         _mm512_and_si512(hi, _mm512_set1_epi32(1))),
        16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    return _mm512_cvtepi32_epi16(
        _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40))));
}

/* conv_pack_block for B = 16 on AVX-512: 16 x 16 tiles transposed in registers. */
__attribute__((target("avx512f"))) static void pack16_avx512(
    void *restrict d, int bf16, const float *restrict x, const float *restrict mk, int silu,
    const conv_plane_norm *nm, int nc, size_t HW, size_t pitch) {
    float t[16][PACK_PIX] __attribute__((aligned(64)));
    const float *row[16];
    for (size_t p0 = 0; p0 < HW; p0 += PACK_PIX) {
        const size_t np = HW - p0 < PACK_PIX ? HW - p0 : PACK_PIX;
        pack_rows(row, t, x, mk, silu, nm, nc, 16, pitch, p0, np);
        size_t j = 0;
        for (; j + 16 <= np; j += 16) {
            __m512 r[16];
            for (int c = 0; c < 16; c++) r[c] = _mm512_loadu_ps(row[c] + j);
            tr16x16(r);
            if (bf16) {
                __m256i *o = (__m256i *)((uint16_t *)d + (p0 + j) * 16);
                for (int q = 0; q < 16; q++) _mm256_storeu_si256(o + q, bf16x16(r[q]));
            } else {
                float *o = (float *)d + (p0 + j) * 16;
                for (int q = 0; q < 16; q++) _mm512_storeu_ps(o + q * 16, r[q]);
            }
        }
        pack_cols(d, bf16, 16, row, p0, j, np); /* the pixels past the last tile */
    }
}
#endif

/* The channels of one pass of conv_unpack_block, t[c] (np pixels), into the
 * plain planes o: stored, or added through the fused activation's derivative. */
static void unpack_rows(float *restrict o, float t[16][PACK_PIX], int accumulate,
                        const float *restrict g, const float *restrict mk,
                        const conv_plane_norm *nm, int nc, size_t pitch, size_t p0, size_t np) {
    for (int c = 0; c < nc; c++) {
        const size_t off = (size_t)c * pitch + p0;
        if (!accumulate)
            memcpy(o + off, t[c], sizeof(float) * np);
        else
            conv_unpad_plane(o + off, t[c], 0.0f, 1, g ? g + off : NULL, mk ? mk + off : NULL,
                             nm[c], 1, (int)np, (int)np);
    }
}

DDPM_CLONES
void conv_unpack_block_portable(float *restrict o, const float *restrict s, int accumulate,
                                const float *restrict g, const float *restrict mk,
                                const conv_plane_norm *nm, int nc, size_t HW, size_t pitch) {
    float t[16][PACK_PIX];
    for (size_t p0 = 0; p0 < HW; p0 += PACK_PIX) {
        const size_t np = HW - p0 < PACK_PIX ? HW - p0 : PACK_PIX;
        unpack_cols(t, s, nc, p0, 0, np);
        unpack_rows(o, t, accumulate, g, mk, nm, nc, pitch, p0, np);
    }
}

#ifdef PACK_AVX512
__attribute__((target("avx512f"))) static void unpack16_avx512(
    float *restrict o, const float *restrict s, int accumulate, const float *restrict g,
    const float *restrict mk, const conv_plane_norm *nm, int nc, size_t HW, size_t pitch) {
    float t[16][PACK_PIX] __attribute__((aligned(64)));
    for (size_t p0 = 0; p0 < HW; p0 += PACK_PIX) {
        const size_t np = HW - p0 < PACK_PIX ? HW - p0 : PACK_PIX;
        size_t j = 0;
        for (; j + 16 <= np; j += 16) {
            __m512 r[16];
            for (int q = 0; q < 16; q++) r[q] = _mm512_loadu_ps(s + (p0 + j + (size_t)q) * 16);
            tr16x16(r);
            for (int c = 0; c < 16; c++) _mm512_store_ps(&t[c][j], r[c]);
        }
        unpack_cols(t, s, nc, p0, j, np); /* the pixels past the last tile */
        unpack_rows(o, t, accumulate, g, mk, nm, nc, pitch, p0, np);
    }
}
#endif

void conv_unpack_block(float *restrict o, const float *restrict s, int accumulate,
                       const float *restrict g, const float *restrict mk,
                       const conv_plane_norm *nm, int nc, size_t HW, size_t pitch) {
#ifdef PACK_AVX512
    if (__builtin_cpu_supports("avx512f")) {
        unpack16_avx512(o, s, accumulate, g, mk, nm, nc, HW, pitch);
        return;
    }
#endif
    conv_unpack_block_portable(o, s, accumulate, g, mk, nm, nc, HW, pitch);
}

void conv_pack_block(void *restrict d, int bf16, int B, const float *restrict x,
                     const float *restrict mk, int silu, const conv_plane_norm *nm, int nc,
                     size_t HW, size_t pitch) {
#ifdef PACK_AVX512
    if (B == 16 && __builtin_cpu_supports("avx512f")) {
        pack16_avx512(d, bf16, x, mk, silu, nm, nc, HW, pitch);
        return;
    }
#endif
    conv_pack_block_portable(d, bf16, B, x, mk, silu, nm, nc, HW, pitch);
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
