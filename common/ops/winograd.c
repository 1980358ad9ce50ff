/* 3x3 stride-1 convolutions (pad 1) by Winograd's minimal filtering F(2x2, 3x3)
 * (Lavin & Gray 2016), as 16 SGEMMs per chunk: another GEMM formulation of
 * the convolution, with 2.25x fewer multiplications than the nine shifted GEMMs
 * of conv.c. The forward uses F(4x4, 3x3) (36 SGEMMs, 4x fewer) on maps at
 * least WINO4_MIN_W wide (its transforms: the F(4x4) section below). Kernels
 * prepared by conv_prepare are transformed once and read by every forward
 * whose plan carries them. A conv_formulation (common/ops/conv_internal.h).
 *
 * The output is cut into 2x2 tiles; tile (i, j) reads the 4x4 input patch at
 * rows 2i-1..2i+2, columns 2j-1..2j+2 (zero outside the map). With
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 * a tile of the correlation of patch d with the 3x3 kernel g is
 *   Y = A^T [ (G g G^T) .* (B^T d B) ] A.
 * For a whole layer, element e (of 16) of the transformed tiles is one GEMM:
 *   M_e [Cout][T] = U_e [Cout][Cin] * V_e [Cin][T],
 * U = G g G^T per (co, ci), V = B^T d B per (ci, tile), T tiles in the chunk.
 *
 * backward:
 *   dweight: dU_e [Cout][Cin] += dM_e [Cout][T] * V_e^T, dM = A dY A^T per tile
 *            (the adjoint of the output transform), then dg = G^T dU G.
 *   dinp:    the forward convolution of dout with the flipped, transposed
 *            kernels (W'[ci][co] = rot180(W[co][ci])), accumulated into dinp;
 *            their transform is a permutation of U's (wino_flip_e), used
 *            transposed in the GEMMs.
 *
 * Chunks are runs of tile rows over the batch (an image may be split, or a
 * chunk may hold many images), T <= WINO_TILES(Cin + Cout) tiles. Workspace
 * (floats): 16 Cout Cin (U, dU or U') + 16 (Cin + Cout) T, the same for both
 * directions (F(4x4): 36 and 36, sized by the same chunk budget). The
 * transforms of one (channel, image) strip run in a stack buffer of WINO_BUF
 * floats, so maps up to 908 columns are supported (wider ones use the shifted
 * GEMMs), and F(4x4) up to 420 (wider ones F(2x2)).
 *
 * The transforms only add, subtract and halve, so F(2x2, 3x3) keeps the
 * accuracy of the direct sums (tests/unit/test_ops.c checks both paths against
 * the same direct reference and by finite differences). */
#include <string.h>

#include "common/ops/conv_internal.h"

#define WINO4_MIN_W 16 /* auto: F(4x4) for maps at least this wide */
#define WINO_BUF 8192 /* floats per stack buffer of a strip (32 KiB, in L1) */
#define WINO_WS_DEFAULT ((size_t)8 << 20) /* floats of V + M per chunk, about */

/* Transformed elements per tile: 16 for F(2x2), 36 for F(4x4). */
static int wino_ne(int t) { return (t + 2) * (t + 2); }

typedef struct {
    int t, ne;   /* output tile size (2 or 4) and transformed elements (16 or 36) */
    int th, tw;  /* tile rows and columns of one image */
    int tp;      /* tiles per tile row in the buffers: tw + 1 for F(2x2) (one virtual) */
    int rows;    /* tile rows per chunk */
    size_t tmax; /* rows * tp */
} wino_geom;

/* chunk: the plan's wino_chunk_floats (0: WINO_WS_DEFAULT) */
static wino_geom wino_geom_make(const conv_shape *s, int t, size_t chunk) {
    wino_geom g;
    g.t = t;
    g.ne = wino_ne(t);
    g.th = (s->H + t - 1) / t;
    g.tw = (s->W + t - 1) / t;
    g.tp = t == 4 ? g.tw : g.tw + 1; /* F(2x2) has a virtual tile per row, F(4x4) none */
    size_t cap = (chunk ? chunk : WINO_WS_DEFAULT) / ((size_t)g.ne * (size_t)(s->Cin + s->Cout));
    size_t rows = cap / (size_t)g.tp;
    if (rows < 1) rows = 1;
    if (rows > (size_t)s->N * g.th) rows = (size_t)s->N * g.th;
    g.rows = (int)rows;
    g.tmax = rows * (size_t)g.tp;
    return g;
}

/* The ne matrices of U, V and M sit WINO_PAD floats apart beyond their size:
 * at power-of-two sizes (256 x 256 kernels, 1024 tiles) the streams a
 * transform writes would otherwise share cache sets and evict each other. */
#define WINO_PAD 16

static size_t wino_floats(const conv_shape *s, const wino_geom *g) {
    return (size_t)g->ne * ((size_t)s->Cin * s->Cout + WINO_PAD) +
           (size_t)g->ne * ((size_t)(s->Cin + s->Cout) * g->tmax + 2 * WINO_PAD);
}

static int wino4_fits(const conv_shape *s);

/* The forward's tile size for shape s: forced 0 picks F(4x4, 3x3) where it fits
 * and the map is at least WINO4_MIN_W wide, 2 or 4 force one (F(2x2) where
 * F(4x4) does not fit). */
int conv_winograd_forward_tile(const conv_shape *s, int forced) {
    if (!wino4_fits(s) || forced == 2) return 2;
    return forced == 4 || s->W >= WINO4_MIN_W ? 4 : 2;
}

/* The same for the forward tile the plan chose and for the backward's F(2x2). */
static size_t wino_workspace_floats(const conv_shape *s, const conv_plan *p) {
    wino_geom g2 = wino_geom_make(s, 2, p->wino_chunk_floats);
    size_t a = wino_floats(s, &g2);
    if (wino4_fits(s)) {
        wino_geom g4 = wino_geom_make(s, 4, p->wino_chunk_floats);
        size_t b = wino_floats(s, &g4);
        if (b > a) a = b;
    }
    return a;
}

/* ---------- weight transforms ---------- */

/* Kernels c0 .. c0 + nc - 1 (nc <= 64) of wrow[ci][3][3] transposed to g[tap][c],
 * so that the kernel transforms run vectorised over ci. */
static inline void wino_kernel_block(float g[9][64], const float *restrict wrow, int c0, int nc) {
    for (int c = 0; c < nc; c++)
        for (int k = 0; k < 9; k++) g[k][c] = wrow[(size_t)(c0 + c) * 9 + k];
}

/* F(2x2)'s U[e] = (G w G^T)[e] of the nc kernels g[tap][c], at o[e * eu + c]. */
static inline void wino2_kernels(float *restrict o, size_t eu, float g[9][64], int nc) {
#pragma omp simd
    for (int c = 0; c < nc; c++) {
        float t[4][3]; /* G w */
        for (int q = 0; q < 3; q++) {
            t[0][q] = g[q][c];
            t[1][q] = 0.5f * (g[q][c] + g[3 + q][c] + g[6 + q][c]);
            t[2][q] = 0.5f * (g[q][c] - g[3 + q][c] + g[6 + q][c]);
            t[3][q] = g[6 + q][c];
        }
        for (int r = 0; r < 4; r++) { /* (G w) G^T */
            o[(4 * r + 0) * eu + c] = t[r][0];
            o[(4 * r + 1) * eu + c] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
            o[(4 * r + 2) * eu + c] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
            o[(4 * r + 3) * eu + c] = t[r][2];
        }
    }
}

/* The transformed kernels of the flipped, transposed convolution (dinp) need no
 * transform of their own: rot180(w) = J w J with J the 3x3 reversal, and
 * G J = P G with P the 4x4 permutation swapping rows 0 and 3, so
 * G rot180(w) G^T = P (G w G^T) P^T: element (r, c) of the flipped kernel's
 * transform is element (P r, P c) of U, used transposed ([ci][co]). */
static int wino_flip_e(int e) {
    static const int P[4] = {3, 1, 2, 0};
    return 4 * P[e / 4] + P[e % 4];
}

/* dweight[co][ci] += G^T dU[co][ci] G */
static void wino_dweights(float *dweight, const float *dU, int Cout, int Cin) {
    const size_t ab = (size_t)Cout * Cin + WINO_PAD;
#pragma omp parallel for schedule(static) if (ab * 16 >= OPS_PAR_MIN)
    for (int co = 0; co < Cout; co++)
        for (int ci = 0; ci < Cin; ci++) {
            const float *u = dU + (size_t)co * Cin + ci;
            float d[16];
            for (int e = 0; e < 16; e++) d[e] = u[e * ab];
            float q[3][4]; /* G^T dU */
            for (int c = 0; c < 4; c++) {
                q[0][c] = d[c] + 0.5f * (d[4 + c] + d[8 + c]);
                q[1][c] = 0.5f * (d[4 + c] - d[8 + c]);
                q[2][c] = 0.5f * (d[4 + c] + d[8 + c]) + d[12 + c];
            }
            float *w = dweight + ((size_t)co * Cin + ci) * 9;
            for (int r = 0; r < 3; r++) {
                w[3 * r + 0] += q[r][0] + 0.5f * (q[r][1] + q[r][2]);
                w[3 * r + 1] += 0.5f * (q[r][1] - q[r][2]);
                w[3 * r + 2] += 0.5f * (q[r][1] + q[r][2]) + q[r][3];
            }
        }
}

/* ---------- per-strip transforms (tile rows i0..i1 of one plane) ---------- */

/* The transforms work on polyphase arrays: a strip of ni tile rows is split
 * into the four (row parity, column parity) phases of its padded map, each
 * stored with row pitch p = tw + 1. Tile (r, j)'s patch element (u, v) is then
 * phase (u & 1, v & 1) at flat index r p + j + (u >> 1) p + (v >> 1), so every
 * pass is one flat loop over all tiles of the strip (gcc vectorises them; the
 * maps are too small for loops over rows). Each tile row carries one virtual
 * tile j = tw: computed, never written out, and zero in dout's transform, so
 * it adds nothing to dweight. This costs 1 / (tw + 1) of the GEMM work. */

/* The input rows y0 .. y1 - 1 of a strip, clipped to the map (first row *va):
 * x itself, or their activation silu (and mk) computed into t when silu is set. */
static inline const float *wino_strip_rows(float *restrict t, const float *restrict x,
                                           const float *restrict mk, int silu,
                                           conv_plane_norm nm, int H, int W, int y0, int y1,
                                           int *va) {
    const int a = y0 < 0 ? 0 : y0, b = y1 < H ? y1 : H;
    *va = a;
    if (silu && b > a) {
        ops_silu_mask(t, x + (size_t)a * W, mk ? mk + (size_t)a * W : NULL, (size_t)(b - a) * W,
                      nm);
        return t;
    }
    return x + (size_t)a * W;
}

/* Floats a strip of ni tile rows needs in wino_in_strip's buffer. */
static size_t wino_in_need(int ni, int W, int p) {
    return (size_t)(2 * ni + 2) * W + 4 * ((size_t)(ni + 1) * p + 1) + 2 * ((size_t)ni * p + 1);
}

/* V[e * es + (i - i0) * p + j] = (B^T d B)[e] of tile (i, j) of the plane x,
 * seen through silu (and mk) when silu is set. */
DDPM_CLONES
static void wino_in_strip(float *restrict V, size_t es, const float *restrict x,
                          const float *restrict mk, int silu, conv_plane_norm nm, int H, int W,
                          int p, int i0, int i1) {
    float buf[WINO_BUF];
    int nimax = 1;
    while (nimax < i1 - i0 && wino_in_need(nimax + 1, W, p) <= WINO_BUF) nimax++;
    const int ne = W / 2, tw = p - 1; /* odd columns 1..2ne-1 and even 0..2tw-2 exist */
    for (int ia = i0; ia < i1; ia += nimax) {
        const int ni = i1 - ia < nimax ? i1 - ia : nimax;
        const size_t np = (size_t)(ni + 1) * p + 1, nq = (size_t)ni * p + 1;
        float *restrict t = buf;
        float *restrict P = t + (size_t)(2 * ni + 2) * W; /* P[ph][np], ph = 2 a + b */
        float *restrict Q0 = P + 4 * np, *restrict Q1 = Q0 + nq;
        /* bordered row R = 2 (ia + r) + a is input row y = R - 1 */
        const int y0 = 2 * ia - 1, y1 = 2 * (ia + ni) + 1;
        int va;
        const float *src = wino_strip_rows(t, x, mk, silu, nm, H, W, y0, y1, &va);
        for (int y = y0; y < y1; y++) {
            const int R = y + 1 - 2 * ia, a = R & 1, r = R >> 1;
            float *restrict E = P + (size_t)(2 * a) * np + (size_t)r * p; /* column 2c */
            float *restrict O = E + np;                                    /* column 2c + 1 */
            if (y < 0 || y >= H) {
                memset(E, 0, sizeof(float) * (size_t)p);
                memset(O, 0, sizeof(float) * (size_t)p);
                continue;
            }
            /* bordered column c holds x[c - 1]: E[m] = x[2m - 1], O[m] = x[2m] */
            const float *restrict xr = src + (size_t)(y - va) * W;
            E[0] = 0;
            for (int m = 1; m <= ne; m++) E[m] = xr[2 * m - 1];
            for (int m = ne + 1; m < p; m++) E[m] = 0;
            for (int m = 0; m < tw; m++) O[m] = xr[2 * m];
            O[tw] = 0;
        }
        for (int ph = 0; ph < 4; ph++) P[(size_t)ph * np + np - 1] = 0; /* read by j = tw */
        const float *restrict P00 = P, *restrict P01 = P + np, *restrict P10 = P + 2 * np;
        const float *restrict P11 = P + 3 * np;
        float *restrict v = V;
        const int n = ni * p;
        for (int k = 0; k < 4; k++) {
            /* row k of B^T d, at column phases 0 and 1: d0 = P0b[f], d1 = P1b[f],
             * d2 = P0b[f + p], d3 = P1b[f + p] */
#pragma omp simd
            for (int f = 0; f < n + 1; f++) {
                const float a0 = P00[f], a1 = P10[f], a2 = P00[f + p], a3 = P10[f + p];
                const float b0 = P01[f], b1 = P11[f], b2 = P01[f + p], b3 = P11[f + p];
                Q0[f] = k == 0 ? a0 - a2 : k == 1 ? a1 + a2 : k == 2 ? a2 - a1 : a1 - a3;
                Q1[f] = k == 0 ? b0 - b2 : k == 1 ? b1 + b2 : k == 2 ? b2 - b1 : b1 - b3;
            }
            /* (B^T d) B along the row: columns 2j .. 2j+3 are Q0[f], Q1[f], Q0[f+1], Q1[f+1] */
            float *restrict o0 = v + (size_t)(4 * k) * es, *restrict o1 = o0 + es;
            float *restrict o2 = o1 + es, *restrict o3 = o2 + es;
#pragma omp simd
            for (int f = 0; f < n; f++) {
                o0[f] = Q0[f] - Q0[f + 1];
                o1[f] = Q1[f] + Q0[f + 1];
                o2[f] = Q0[f + 1] - Q1[f];
                o3[f] = Q1[f] - Q1[f + 1];
            }
        }
        V += (size_t)n;
    }
}

/* The 2x2 tiles A^T M A of tile rows i0..i1 into the plane o (rows 2 i0 ..
 * min(2 i1, H)), with conv_unpad_plane's modes: o = y + b, o += y, or
 * o += y * mk * silu'(g). */
DDPM_CLONES
static void wino_out_strip(float *restrict o, const float *restrict M, size_t es, int H, int W,
                           int p, int i0, int i1, float b, int accumulate,
                           const float *restrict g, const float *restrict mk,
                           conv_plane_norm nm) {
    float buf[WINO_BUF];
    const int Wo = 2 * p; /* a row of the buffer: 2 tw columns and 2 virtual ones */
    const int nimax = WINO_BUF / (2 * Wo);
    for (int ia = i0; ia < i1; ia += nimax) {
        const int ni = i1 - ia < nimax ? i1 - ia : nimax;
        const float *restrict m0 = M, *restrict m1 = M + es, *restrict m2 = M + 2 * es;
        const float *restrict m3 = M + 3 * es, *restrict m4 = M + 4 * es;
        const float *restrict m5 = M + 5 * es, *restrict m6 = M + 6 * es;
        const float *restrict m7 = M + 7 * es, *restrict m8 = M + 8 * es;
        const float *restrict m9 = M + 9 * es, *restrict m10 = M + 10 * es;
        const float *restrict m11 = M + 11 * es, *restrict m12 = M + 12 * es;
        const float *restrict m13 = M + 13 * es, *restrict m14 = M + 14 * es;
        const float *restrict m15 = M + 15 * es;
        /* tile f = r p + j: its outputs at buffer rows 2r, 2r + 1, columns 2j, 2j + 1 */
        for (int r = 0; r < ni; r++) {
            float *restrict y0 = buf + (size_t)(2 * r) * Wo, *restrict y1 = y0 + Wo;
            const int f0 = r * p;
#pragma omp simd
            for (int j = 0; j < p; j++) {
                const int f = f0 + j;
                /* A^T m: s0 = rows 0 + 1 + 2, s1 = rows 1 - 2 - 3 */
                const float s00 = m0[f] + m4[f] + m8[f], s01 = m1[f] + m5[f] + m9[f];
                const float s02 = m2[f] + m6[f] + m10[f], s03 = m3[f] + m7[f] + m11[f];
                const float s10 = m4[f] - m8[f] - m12[f], s11 = m5[f] - m9[f] - m13[f];
                const float s12 = m6[f] - m10[f] - m14[f], s13 = m7[f] - m11[f] - m15[f];
                y0[2 * j] = s00 + s01 + s02;
                y0[2 * j + 1] = s01 - s02 - s03;
                y1[2 * j] = s10 + s11 + s12;
                y1[2 * j + 1] = s11 - s12 - s13;
            }
        }
        const int h0 = 2 * ia, h1 = 2 * (ia + ni) < H ? 2 * (ia + ni) : H;
        const size_t off = (size_t)h0 * W;
        conv_unpad_plane(o + off, buf, b, accumulate, g ? g + off : NULL, mk ? mk + off : NULL,
                         nm, h1 - h0, W, Wo);
        M += (size_t)ni * p;
    }
}

/* dM[e * es + (i - i0) * p + j] = (A dY A^T)[e] of the 2x2 tile (i, j) of the
 * plane dy (zero outside the map, and for the virtual tile j = tw). */
DDPM_CLONES
static void wino_dout_strip(float *restrict dM, size_t es, const float *restrict dy, int H,
                            int W, int p, int i0, int i1) {
    float buf[WINO_BUF];
    const int nimax = WINO_BUF / (4 * p);
    const int tw = p - 1, no = W / 2; /* even columns 0..2tw-2, odd 1..2no-1 */
    for (int ia = i0; ia < i1; ia += nimax) {
        const int ni = i1 - ia < nimax ? i1 - ia : nimax;
        const int n = ni * p;
        float *restrict D = buf; /* D[2 a + b][n]: dY[2 (ia + r) + a][2 j + b] at r p + j */
        for (int h = 2 * ia; h < 2 * (ia + ni); h++) {
            const int a = h & 1, r = (h - 2 * ia) >> 1;
            float *restrict E = D + (size_t)(2 * a) * n + (size_t)r * p, *restrict O = E + n;
            if (h >= H) {
                memset(E, 0, sizeof(float) * (size_t)p);
                memset(O, 0, sizeof(float) * (size_t)p);
                continue;
            }
            const float *restrict row = dy + (size_t)h * W;
            for (int m = 0; m < tw; m++) E[m] = row[2 * m];
            E[tw] = 0;
            for (int m = 0; m < no; m++) O[m] = row[2 * m + 1];
            for (int m = no; m < p; m++) O[m] = 0;
        }
        const float *restrict a0 = D, *restrict b0 = D + n, *restrict a1 = D + 2 * n;
        const float *restrict b1 = D + 3 * n;
        for (int k = 0; k < 4; k++) {
            /* row k of A Y: y0, y0 + y1, y0 - y1, -y1 (2-vectors of the tile) */
            float *restrict o0 = dM + (size_t)(4 * k) * es, *restrict o1 = o0 + es;
            float *restrict o2 = o1 + es, *restrict o3 = o2 + es;
#pragma omp simd
            for (int f = 0; f < n; f++) {
                const float pv = k == 0 ? a0[f] : k == 1 ? a0[f] + a1[f] : k == 2 ? a0[f] - a1[f] : -a1[f];
                const float qv = k == 0 ? b0[f] : k == 1 ? b0[f] + b1[f] : k == 2 ? b0[f] - b1[f] : -b1[f];
                /* (A Y) A^T: p, p + q, p - q, -q */
                o0[f] = pv;
                o1[f] = pv + qv;
                o2[f] = pv - qv;
                o3[f] = -qv;
            }
        }
        dM += (size_t)n;
    }
}

/* ---------- F(4x4, 3x3): the forward's larger tiles ---------- */

/* With output tiles of 4x4 the patch is 6x6. The Toom-Cook construction over
 * the points 0, 1, -1, 2, -1/2 and infinity gives
 *   B^T = [2 3 -4 -3 2 0; 0 -2 -5 -1 2 0; 0 2 1 -5 2 0;
 *          0 -1 -2 1 2 0; 0 2 -1 -2 1 0; 0 2 3 -4 -3 2]
 *   G   = [1/2 0 0; -1/6 -1/6 -1/6; 1/6 -1/6 1/6;
 *          1/30 1/15 2/15; -16/15 8/15 -4/15; 0 0 1/2]
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -1/2 0; 0 1 1 4 1/4 0; 0 1 -1 8 -1/8 1]
 * (B^T's rows scaled by 2, G's by 1/2, except the point -1/2's). That is 36 GEMMs
 * for 16 outputs: 2.25 multiplications per output and kernel tap pair against
 * F(2x2)'s 4 and the direct sum's 9, and 2.25 transformed floats per input
 * float against 4. The transforms scale values by up to 8, so the rounding
 * errors are about ten times F(2x2)'s: in tests/unit/test_ops.c, 1.9e-6 and
 * 3.5e-6 of the output's scale at 64 and 256 channels (F(2x2): about 2e-7).
 * Lavin & Gray's points 0, +-1, +-2 gave 5.2e-6 and 6.6e-6 there; these were the
 * best of the 5-point sets from 0, +-1, +-2, +-1/2 in a float32 simulation of a
 * 256-channel layer (docs/ops.md). Only the forward uses F(4x4); backward keeps
 * F(2x2). The
 * strips are polyphase arrays as F(2x2)'s, with four row phases: patch row u of
 * tile row r is row phase u & 3 at tile row r + (u >> 2). */

/* (y0 .. y5) = G (a, b, d) */
#define WINO4_G(y0, y1, y2, y3, y4, y5, a, b, d)                                               \
    do {                                                                                       \
        y0 = 0.5f * (a);                                                                       \
        y1 = (-1.0f / 6) * ((a) + (b) + (d));                                                  \
        y2 = (1.0f / 6) * ((a) - (b) + (d));                                                   \
        y3 = (1.0f / 30) * ((a) + 2.0f * (b) + 4.0f * (d));                                    \
        y4 = (-4.0f / 15) * (4.0f * (a) - 2.0f * (b) + (d));                                   \
        y5 = 0.5f * (d);                                                                       \
    } while (0)

/* F(4x4)'s U[e] = (G w G^T)[e], e < 36, of the nc kernels g[tap][c], at o[e * eu + c]. */
static inline void wino4_kernels(float *restrict o, size_t eu, float g[9][64], int nc) {
#pragma omp simd
    for (int c = 0; c < nc; c++) {
        float t[6][3]; /* G w */
        for (int q = 0; q < 3; q++) {
            const float a = g[q][c], b = g[3 + q][c], d = g[6 + q][c];
            WINO4_G(t[0][q], t[1][q], t[2][q], t[3][q], t[4][q], t[5][q], a, b, d);
        }
        for (int r = 0; r < 6; r++) { /* (G w) G^T */
            const float a = t[r][0], b = t[r][1], d = t[r][2];
            WINO4_G(o[(6 * r + 0) * eu + c], o[(6 * r + 1) * eu + c], o[(6 * r + 2) * eu + c],
                    o[(6 * r + 3) * eu + c], o[(6 * r + 4) * eu + c], o[(6 * r + 5) * eu + c],
                    a, b, d);
        }
    }
}

/* U[e][co][ci] = (G w G^T)[e] for one co and tile size t: w = wrow[ci][3][3],
 * ci < Cin, written at u[e * eu + ci], in blocks of 64 kernels. */
DDPM_CLONES
static void wino_weights_row(float *restrict u, size_t eu, const float *restrict wrow, int Cin,
                             int t) {
    float g[9][64];
    for (int c0 = 0; c0 < Cin; c0 += 64) {
        const int nc = Cin - c0 < 64 ? Cin - c0 : 64;
        wino_kernel_block(g, wrow, c0, nc);
        if (t == 4)
            wino4_kernels(u + c0, eu, g, nc);
        else
            wino2_kernels(u + c0, eu, g, nc);
    }
}

/* U[e][co][ci] = (G w G^T)[e] for the kernel w = weight[co][ci], tile size t. */
static void wino_weights(float *U, const float *weight, int Cout, int Cin, int t) {
    const size_t eu = (size_t)Cout * Cin + WINO_PAD;
#pragma omp parallel for schedule(static) if ((size_t)Cout * Cin * 16 >= OPS_PAR_MIN)
    for (int co = 0; co < Cout; co++)
        wino_weights_row(U + (size_t)co * Cin, eu, weight + (size_t)co * Cin * 9, Cin, t);
}

/* Floats a strip of ni tile rows needs in wino4_in_strip's buffer. */
static size_t wino4_in_need(int ni, int W, int tw) {
    return (size_t)(4 * ni + 2) * W + 24 * (size_t)(ni + 1) * tw + 6 * (size_t)ni * tw;
}

/* Row l of B^T applied to (e0 .. e5). */
#define WINO4_BT(l, e0, e1, e2, e3, e4, e5)                                                  \
    ((l) == 0   ? 2.0f * ((e0) + (e4)) - 4.0f * (e2) + 3.0f * ((e1) - (e3))                  \
     : (l) == 1 ? 2.0f * ((e4) - (e1)) - 5.0f * (e2) - (e3)                                  \
     : (l) == 2 ? 2.0f * ((e1) + (e4)) + (e2) - 5.0f * (e3)                                  \
     : (l) == 3 ? ((e3) - (e1)) + 2.0f * ((e4) - (e2))                                       \
     : (l) == 4 ? 2.0f * ((e1) - (e3)) + ((e4) - (e2))                                       \
                : 2.0f * ((e1) + (e5)) + 3.0f * ((e2) - (e4)) - 4.0f * (e3))

/* Row k of the patches' B^T d B: Q[v] is row k of B^T d at patch column v, then
 * each of the six outputs combines the six Q's at the same tile. */
#define WINO4_ROW_PASS(k)                                                                      \
    do {                                                                                       \
        for (int v = 0; v < 6; v++) {                                                          \
            const float *restrict p0 = P[0][v], *restrict p1 = P[1][v];                        \
            const float *restrict p2 = P[2][v], *restrict p3 = P[3][v];                        \
            float *restrict q = Q[v];                                                          \
            _Pragma("omp simd") for (size_t f = 0; f < n; f++) q[f] =                          \
                WINO4_BT(k, p0[f], p1[f], p2[f], p3[f], p0[f + tw], p1[f + tw]);               \
        }                                                                                      \
        float *restrict o0 = V + (size_t)(6 * (k)) * es, *restrict o1 = o0 + es;              \
        float *restrict o2 = o1 + es, *restrict o3 = o2 + es, *restrict o4 = o3 + es;          \
        float *restrict o5 = o4 + es;                                                          \
        const float *restrict q0 = Q[0], *restrict q1 = Q[1], *restrict q2 = Q[2];             \
        const float *restrict q3 = Q[3], *restrict q4 = Q[4], *restrict q5 = Q[5];             \
        _Pragma("omp simd") for (size_t f = 0; f < n; f++) {                                   \
            const float e0 = q0[f], e1 = q1[f], e2 = q2[f], e3 = q3[f], e4 = q4[f], e5 = q5[f]; \
            o0[f] = WINO4_BT(0, e0, e1, e2, e3, e4, e5);                                       \
            o1[f] = WINO4_BT(1, e0, e1, e2, e3, e4, e5);                                       \
            o2[f] = WINO4_BT(2, e0, e1, e2, e3, e4, e5);                                       \
            o3[f] = WINO4_BT(3, e0, e1, e2, e3, e4, e5);                                       \
            o4[f] = WINO4_BT(4, e0, e1, e2, e3, e4, e5);                                       \
            o5[f] = WINO4_BT(5, e0, e1, e2, e3, e4, e5);                                       \
        }                                                                                      \
    } while (0)

/* V[e * es + (i - i0) * tw + j] = (B^T d B)[e], e < 36, of the 4x4 tile (i, j)
 * of the plane x, seen through silu (and mk) when silu is set. No virtual
 * tiles: the patch's six columns are six arrays, column v of tile j being
 * bordered column 4 j + v, so every pass reads them at the tile's own index. */
DDPM_CLONES
static void wino4_in_strip(float *restrict V, size_t es, const float *restrict x,
                           const float *restrict mk, int silu, conv_plane_norm nm, int H, int W,
                           int tw, int i0, int i1) {
    float buf[WINO_BUF];
    int nimax = 1;
    while (nimax < i1 - i0 && wino4_in_need(nimax + 1, W, tw) <= WINO_BUF) nimax++;
    int lo[6], hi[6]; /* tiles j whose patch column v lies inside the map */
    for (int v = 0; v < 6; v++) {
        lo[v] = v == 0 ? 1 : 0;
        hi[v] = W - v >= 0 ? (W - v) / 4 + 1 : 0;
        if (hi[v] > tw) hi[v] = tw;
        if (hi[v] < lo[v]) hi[v] = lo[v];
    }
    /* tiles 1 .. jf - 1 have patch columns 0..3 inside the map: 4 j + 2 < W */
    int jf = W >= 3 ? (W - 3) / 4 + 1 : 1;
    if (jf > tw) jf = tw;
    for (int ia = i0; ia < i1; ia += nimax) {
        const int ni = i1 - ia < nimax ? i1 - ia : nimax;
        const size_t np = (size_t)(ni + 1) * tw, n = (size_t)ni * tw;
        float *restrict t = buf;
        float *restrict Pb = t + (size_t)(4 * ni + 2) * W; /* row phase a, column v at (6a+v) np */
        float *restrict Qb = Pb + 24 * np;
        /* bordered row R = 4 (ia + r) + a is input row y = R - 1 */
        const int y0 = 4 * ia - 1, y1 = 4 * (ia + ni) + 1;
        int va;
        const float *src = wino_strip_rows(t, x, mk, silu, nm, H, W, y0, y1, &va);
        for (int y = y0; y < y1; y++) {
            const int R = y + 1 - 4 * ia, a = R & 3, r = R >> 2;
            float *restrict row = Pb + (size_t)(6 * a) * np + (size_t)r * tw;
            if (y < 0 || y >= H) {
                for (int v = 0; v < 6; v++) memset(row + v * np, 0, sizeof(float) * (size_t)tw);
                continue;
            }
            /* column v of tile j holds x[4 j + v - 1]: tiles 1 .. jf - 1 have columns
             * 0..3 inside the map (one 4-way split), columns 4 and 5 are columns 0
             * and 1 of the next tile; the edges are done one by one */
            const float *restrict xr = src + (size_t)(y - va) * W;
            float *restrict d0 = row, *restrict d1 = d0 + np, *restrict d2 = d1 + np;
            float *restrict d3 = d2 + np, *restrict d4 = d3 + np, *restrict d5 = d4 + np;
            const float *restrict xs = xr + 3; /* x[4 (j - 1) + 3 + c] = x[4 j + c - 1] */
#pragma omp simd
            for (int j = 1; j < jf; j++) {
                d0[j] = xs[4 * (j - 1) + 0];
                d1[j] = xs[4 * (j - 1) + 1];
                d2[j] = xs[4 * (j - 1) + 2];
                d3[j] = xs[4 * (j - 1) + 3];
            }
            for (int v = 0; v < 4; v++) {
                float *restrict d = row + v * np;
                d[0] = lo[v] == 0 && hi[v] > 0 ? xr[v - 1] : 0;
                for (int j = jf > 1 ? jf : 1; j < tw; j++) d[j] = j < hi[v] ? xr[4 * j + v - 1] : 0;
            }
            memcpy(d4, d0 + 1, sizeof(float) * (size_t)(tw - 1));
            memcpy(d5, d1 + 1, sizeof(float) * (size_t)(tw - 1));
            d4[tw - 1] = hi[4] == tw ? xr[4 * tw - 1] : 0;
            d5[tw - 1] = hi[5] == tw ? xr[4 * tw] : 0;
        }
        const float *P[4][6];
        float *Q[6];
        for (int a = 0; a < 4; a++)
            for (int v = 0; v < 6; v++) P[a][v] = Pb + (size_t)(6 * a + v) * np;
        for (int v = 0; v < 6; v++) Q[v] = Qb + (size_t)v * n;
        WINO4_ROW_PASS(0);
        WINO4_ROW_PASS(1);
        WINO4_ROW_PASS(2);
        WINO4_ROW_PASS(3);
        WINO4_ROW_PASS(4);
        WINO4_ROW_PASS(5);
        V += n;
    }
}

/* Row r of A^T applied to (m0 .. m5). */
#define WINO4_AT(r, m0, m1, m2, m3, m4, m5)                                                  \
    ((r) == 0   ? (m0) + ((m1) + (m2)) + ((m3) + (m4))                                       \
     : (r) == 1 ? ((m1) - (m2)) + (2.0f * (m3) - 0.5f * (m4))                                \
     : (r) == 2 ? ((m1) + (m2)) + (4.0f * (m3) + 0.25f * (m4))                               \
                : ((m1) - (m2)) + (8.0f * (m3) - 0.125f * (m4)) + (m5))

/* The 4x4 tiles A^T M A of tile rows i0..i1 into the plane o (rows 4 i0 ..
 * min(4 i1, H)), with conv_unpad_plane's modes (as wino_out_strip). */
DDPM_CLONES
static void wino4_out_strip(float *restrict o, const float *restrict M, size_t es, int H, int W,
                            int tw, int i0, int i1, float b, int accumulate,
                            const float *restrict g, const float *restrict mk,
                            conv_plane_norm nm) {
    float buf[WINO_BUF];
    const int Wo = 4 * tw; /* a row of the output buffer: 4 tw columns */
    /* per tile row: 16 tw floats of output and 24 tw of S */
    const int nimax = WINO_BUF / (40 * tw);
    for (int ia = i0; ia < i1; ia += nimax) {
        const int ni = i1 - ia < nimax ? i1 - ia : nimax;
        const size_t n = (size_t)ni * tw;
        float *restrict Y = buf, *restrict S = buf + 16 * n;
        /* S[q][l] = (A^T m)[q][l]: flat over the strip's tiles, rows of M read whole */
        for (int l = 0; l < 6; l++) {
            const float *restrict a0 = M + (size_t)l * es, *restrict a1 = a0 + 6 * es;
            const float *restrict a2 = a1 + 6 * es, *restrict a3 = a2 + 6 * es;
            const float *restrict a4 = a3 + 6 * es, *restrict a5 = a4 + 6 * es;
            float *restrict s0 = S + (size_t)l * n, *restrict s1 = s0 + 6 * n;
            float *restrict s2 = s1 + 6 * n, *restrict s3 = s2 + 6 * n;
#pragma omp simd
            for (size_t f = 0; f < n; f++) {
                s0[f] = WINO4_AT(0, a0[f], a1[f], a2[f], a3[f], a4[f], a5[f]);
                s1[f] = WINO4_AT(1, a0[f], a1[f], a2[f], a3[f], a4[f], a5[f]);
                s2[f] = WINO4_AT(2, a0[f], a1[f], a2[f], a3[f], a4[f], a5[f]);
                s3[f] = WINO4_AT(3, a0[f], a1[f], a2[f], a3[f], a4[f], a5[f]);
            }
        }
        /* y[q][c] = (S A)[q][c] into output row 4 r + q, columns 4 j + c */
        for (int q = 0; q < 4; q++)
            for (int r = 0; r < ni; r++) {
                const float *restrict t0 = S + (size_t)(6 * q) * n + (size_t)r * tw;
                const float *restrict t1 = t0 + n, *restrict t2 = t1 + n, *restrict t3 = t2 + n;
                const float *restrict t4 = t3 + n, *restrict t5 = t4 + n;
                float *restrict y = Y + (size_t)(4 * r + q) * Wo;
#pragma omp simd
                for (int j = 0; j < tw; j++) {
                    y[4 * j + 0] = WINO4_AT(0, t0[j], t1[j], t2[j], t3[j], t4[j], t5[j]);
                    y[4 * j + 1] = WINO4_AT(1, t0[j], t1[j], t2[j], t3[j], t4[j], t5[j]);
                    y[4 * j + 2] = WINO4_AT(2, t0[j], t1[j], t2[j], t3[j], t4[j], t5[j]);
                    y[4 * j + 3] = WINO4_AT(3, t0[j], t1[j], t2[j], t3[j], t4[j], t5[j]);
                }
            }
        const int h0 = 4 * ia, h1 = 4 * (ia + ni) < H ? 4 * (ia + ni) : H;
        const size_t off = (size_t)h0 * W;
        conv_unpad_plane(o + off, Y, b, accumulate, g ? g + off : NULL, mk ? mk + off : NULL,
                         nm, h1 - h0, W, Wo);
        M += n;
    }
}

static int wino4_fits(const conv_shape *s) {
    const int tw = (s->W + 3) / 4;
    return s->k == 3 && s->stride == 1 && s->pad_top == 1 && s->pad_left == 1 &&
           wino4_in_need(1, s->W, tw) <= WINO_BUF && 40 * (size_t)tw <= WINO_BUF;
}

static int wino_fits(const conv_shape *s) {
    const int p = (s->W + 1) / 2 + 1;
    return s->k == 3 && s->stride == 1 && s->pad_top == 1 && s->pad_left == 1 &&
           wino_in_need(1, s->W, p) <= WINO_BUF && 4 * (size_t)p <= WINO_BUF;
}

/* ---------- chunks ---------- */

/* One chunk: tile rows r0..r1 of the batch (r = image * th + tile row). A task
 * is one (channel, image) strip; seg counts the images the chunk touches. */
typedef struct {
    int r0, r1, j0, nseg;
    size_t T;
} wino_chunk;

static wino_chunk wino_chunk_make(const wino_geom *g, int r0, int R) {
    wino_chunk k;
    k.r0 = r0;
    k.r1 = r0 + g->rows < R ? r0 + g->rows : R;
    k.j0 = r0 / g->th;
    k.nseg = (k.r1 - 1) / g->th - k.j0 + 1;
    k.T = (size_t)(k.r1 - k.r0) * g->tp;
    return k;
}

/* Segment `seg` of the chunk: image j, its tile rows i0..i1, and the offset of
 * its first tile in the chunk. */
static void wino_seg(const wino_geom *g, const wino_chunk *k, int seg, int *j, int *i0, int *i1,
                     size_t *off) {
    const int jj = k->j0 + seg;
    const int a = jj * g->th > k->r0 ? jj * g->th : k->r0;
    const int b = (jj + 1) * g->th < k->r1 ? (jj + 1) * g->th : k->r1;
    *j = jj;
    *i0 = a - jj * g->th;
    *i1 = b - jj * g->th;
    *off = (size_t)(a - k->r0) * g->tp;
}

/* One pass of a chunk, one task per (channel, image) strip:
 *   WINO_IN:   V[16][C][T] from x[N][C][H][W] (through act when it has silu);
 *   WINO_OUT:  out[N][C][H][W] from M[16][C][T] (wino_out_strip's modes, bias);
 *   WINO_DOUT: dM[16][C][T] from dy = x. */
enum { WINO_IN, WINO_OUT, WINO_DOUT };

static void wino_pass(int kind, float *T16, float *out, const float *x, const float *bias,
                      int accumulate, const conv_act *act, int C, const wino_geom *g,
                      const wino_chunk *k, const conv_shape *s) {
    const size_t HW = (size_t)s->H * s->W, es = (size_t)C * k->T + WINO_PAD;
    const int tasks = C * k->nseg;
    const int silu = act && act->silu;
#pragma omp parallel for schedule(static) if ((size_t)tasks * 4 * g->tw * g->th >= OPS_PAR_MIN)
    for (int task = 0; task < tasks; task++) {
        const int c = task % C, seg = task / C;
        int j, i0, i1;
        size_t off;
        wino_seg(g, k, seg, &j, &i0, &i1, &off);
        const size_t plane = ((size_t)j * C + c) * HW;
        float *t16 = T16 + (size_t)c * k->T + off;
        const float *mk = silu && act->mask ? act->mask + plane : NULL;
        const conv_plane_norm nm = conv_act_norm(silu ? act : NULL, j, c, C);
        if (kind == WINO_IN && g->t == 4)
            wino4_in_strip(t16, es, x + plane, mk, silu, nm, s->H, s->W, g->tp, i0, i1);
        else if (kind == WINO_IN)
            wino_in_strip(t16, es, x + plane, mk, silu, nm, s->H, s->W, g->tp, i0, i1);
        else if (kind == WINO_OUT && g->t == 4)
            wino4_out_strip(out + plane, t16, es, s->H, s->W, g->tp, i0, i1,
                            bias ? bias[c] : 0.0f, accumulate, silu ? act->g + plane : NULL, mk,
                            nm);
        else if (kind == WINO_OUT)
            wino_out_strip(out + plane, t16, es, s->H, s->W, g->tp, i0, i1,
                           bias ? bias[c] : 0.0f, accumulate, silu ? act->g + plane : NULL, mk,
                           nm);
        else
            wino_dout_strip(t16, es, x + plane, s->H, s->W, g->tp, i0, i1);
    }
}

/* out (+)= conv(in) with transformed kernels U of geometry g: in has Ci
 * channels, out Co, both s->H x s->W. !flip: U[ne][Co][Ci] (the forward). flip
 * (t = 2 only): U[16][Ci][Co] of the forward kernels, giving the flipped,
 * transposed convolution (dinp). */
static void wino_conv(float *out, int accumulate, const conv_act *out_act, const float *in,
                      const conv_act *in_act, const float *U, int flip, const float *bias,
                      int Ci, int Co, const conv_shape *s, const wino_geom *gp, float *V,
                      float *M) {
    const wino_geom g = *gp;
    const int R = s->N * g.th;
    const size_t eu = (size_t)Co * Ci + WINO_PAD;
    for (int r0 = 0; r0 < R; r0 += g.rows) {
        const wino_chunk k = wino_chunk_make(&g, r0, R);
        wino_pass(WINO_IN, V, NULL, in, NULL, 0, in_act, Ci, &g, &k, s);
        const size_t ev = (size_t)Ci * k.T + WINO_PAD, em = (size_t)Co * k.T + WINO_PAD;
        for (int e = 0; e < g.ne; e++) {
            if (flip) /* M_e [Co][T] = U_{P e}^T V_e, U_{P e} stored [Ci][Co] */
                ops_sgemm(CblasTrans, CblasNoTrans, Co, (int)k.T, Ci, 1.0f,
                          U + wino_flip_e(e) * eu, Co, V + e * ev, (int)k.T, 0.0f, M + e * em,
                          (int)k.T);
            else
                ops_sgemm(CblasNoTrans, CblasNoTrans, Co, (int)k.T, Ci, 1.0f, U + e * eu, Ci,
                          V + e * ev, (int)k.T, 0.0f, M + e * em, (int)k.T);
        }
        wino_pass(WINO_OUT, M, out, NULL, bias, accumulate, out_act, Co, &g, &k, s);
    }
}

/* The workspace: U (16 Cout Cin), then V (16 Cin T) and M (16 Cout T). */
static void wino_ws_split(const conv_shape *s, const wino_geom *g, float *ws, float **U,
                          float **V, float **M) {
    *U = ws;
    *V = *U + (size_t)g->ne * ((size_t)s->Cout * s->Cin + WINO_PAD);
    *M = *V + (size_t)g->ne * ((size_t)s->Cin * g->tmax + WINO_PAD);
}

/* ---------- prepared kernels ---------- */

static size_t wino_prepared_floats(const conv_shape *s, const conv_plan *p) {
    return (size_t)wino_ne(p->wino_tile) * ((size_t)s->Cin * s->Cout + WINO_PAD);
}

static void wino_prepare(float *prep, const float *weight, const conv_shape *s,
                         const conv_plan *p) {
    wino_weights(prep, weight, s->Cout, s->Cin, p->wino_tile);
}

static void wino_forward(float *out, const float *inp, const conv_act *act, const float *weight,
                         const float *bias, const conv_shape *s, const conv_plan *p, float *ws) {
    const int t = p->wino_tile;
    const wino_geom g = wino_geom_make(s, t, p->wino_chunk_floats);
    float *U, *V, *M;
    wino_ws_split(s, &g, ws, &U, &V, &M);
    const float *Up = p->prep;
    if (!Up) {
        wino_weights(U, weight, s->Cout, s->Cin, t);
        Up = U;
    }
    wino_conv(out, 0, NULL, inp, act, Up, 0, bias, s->Cin, s->Cout, s, &g, V, M);
}

static void wino_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const conv_act *act, const float *weight, const conv_shape *s,
                          const conv_plan *p, float *ws) {
    const int Cin = s->Cin, Cout = s->Cout;
    const wino_geom g = wino_geom_make(s, 2, p->wino_chunk_floats);
    float *U, *V, *M;
    wino_ws_split(s, &g, ws, &U, &V, &M);
    if (dinp) {
        /* the dout channels play the input: V holds 16 Cout T, M 16 Cin T, and
         * the workspace is symmetric in Cin and Cout */
        float *Vd = V, *Md = V + 16 * ((size_t)Cout * g.tmax + WINO_PAD);
        wino_weights(U, weight, Cout, Cin, 2);
        wino_conv(dinp, 1, act, dout, NULL, U, 1, NULL, Cout, Cin, s, &g, Vd, Md);
    }
    if (dweight) { /* U's space now holds dU */
        const int R = s->N * g.th;
        for (int r0 = 0; r0 < R; r0 += g.rows) {
            const wino_chunk k = wino_chunk_make(&g, r0, R);
            wino_pass(WINO_IN, V, NULL, inp, NULL, 0, act, Cin, &g, &k, s);
            wino_pass(WINO_DOUT, M, NULL, dout, NULL, 0, NULL, Cout, &g, &k, s);
            const size_t eu = (size_t)Cout * Cin + WINO_PAD, ev = (size_t)Cin * k.T + WINO_PAD;
            const size_t em = (size_t)Cout * k.T + WINO_PAD;
            for (int e = 0; e < 16; e++)
                ops_sgemm(CblasNoTrans, CblasTrans, Cout, Cin, (int)k.T, 1.0f, M + e * em,
                          (int)k.T, V + e * ev, (int)k.T, r0 ? 1.0f : 0.0f, U + e * eu, Cin);
        }
        wino_dweights(dweight, U, Cout, Cin);
    }
}

const conv_formulation conv_winograd_formulation = {
    .fits = wino_fits,
    .fused = 1,
    .workspace_floats = wino_workspace_floats,
    .prepared_floats = wino_prepared_floats,
    .prepare = wino_prepare,
    .forward = wino_forward,
    .backward = wino_backward,
};
