/* bf16 mixed precision (ops.h, docs/performance.md "bf16 mixed precision"):
 * the rounding, the bf16 GEMM of linear layers and attention (ops_gemm), and
 * oneDNN's bf16 convolutions forward, backward-data and backward-weights,
 * each against a float64 reference of the same contributions.
 *
 * The tolerances come from bf16's format, not from measurement. bf16 keeps 8
 * significant bits: rounding to nearest gives |bf16(x) - x| <= u |x| with
 * u = 2^-8. Every output here is a dot product y = sum_i a_i b_i of K terms.
 *  - Against the float64 sum of the ROUNDED operands (what bf16 computes
 *    exactly) only the fp32 accumulation differs: |y - y~| <= g_K S~ with
 *    g_K = K 2^-24 / (1 - K 2^-24) (Higham's bound, any summation order) and
 *    S~ = sum |bf16(a_i) bf16(b_i)|.
 *  - Against the float64 sum of the fp32 operands, each product carries
 *    |(1 + d1)(1 + d2) - 1| <= 2u + u^2: |y - y| <= (2u + u^2) S + g_K S~,
 *    S = sum |a_i b_i| (the worst case: every rounding error of one sign).
 *  - In the random-sign case the errors add in quadrature: a rounding error
 *    relative to a value with a uniformly placed mantissa has variance about
 *    u^2 / 6, a product's about u^2 / 3, so the root mean square of y's error
 *    is about (u / sqrt 3) sqrt(sum (a_i b_i)^2), i.e. ~ sqrt(K) u |a||b| / sqrt 3.
 *    The test requires the measured ratio r = rms(err) / rms(sqrt(sum (a b)^2))
 *    within [u / (4 sqrt 3), 2 u / sqrt 3]: above, the result would be less
 *    accurate than bf16 operands allow; below, the operands were not rounded
 *    to bf16 at all (an fp32 path would give r ~ 1e-7). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/ops/conv_internal.h"
#include "common/ops/ops.h"
#include "common/rng/rng.h"
#include "tests/unit/test.h"

static const double U = 1.0 / 256.0; /* bf16 unit roundoff, 2^-8 */

static float rb(float x) { return ops_from_bf16(ops_to_bf16(x)); }

/* Uniform in [-1, 1), keyed on seed. */
static float *rnd(size_t n, uint64_t seed) {
    float *p = xfloats(n);
    rng_key k = {seed, 5, 0, RNG_PURPOSE_INIT};
    rng_uniform(&k, p, n);
    for (size_t i = 0; i < n; i++) p[i] = 2.0f * p[i] - 1.0f;
    return p;
}

/* ---------- rounding ---------- */

/* The nearest bf16 of x found by comparing the two neighbours in double, ties
 * to the even one: an independent statement of round-to-nearest-even. */
static uint16_t nearest_bf16(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    const uint16_t lo = (uint16_t)(b >> 16), hi = (uint16_t)(lo + 1);
    /* past the largest bf16 the next step is 2^128 (IEEE rounding overflows to
     * inf beyond half an ulp past the largest finite value) */
    const double vh = isinf(ops_from_bf16(hi)) ? copysign(0x1p128, x) : ops_from_bf16(hi);
    const double dl = fabs((double)x - ops_from_bf16(lo)), dh = fabs(vh - x);
    if (dl < dh) return lo;
    if (dh < dl) return hi;
    return (lo & 1) ? hi : lo;
}

static void check_rounding(void) {
    const size_t n = 200000;
    float *x = xfloats(n);
    rng_key k = {7, 1, 0, RNG_PURPOSE_INIT};
    uint32_t *bits = (uint32_t *)x;
    rng_uniform(&k, x, n);
    for (size_t i = 0; i < n; i++) { /* random bit patterns, finite, many exact ties */
        uint32_t r = (uint32_t)(x[i] * 4294967040.0f);
        if ((r & 0x7f800000u) == 0x7f800000u) r &= 0xbfffffffu;
        if (i % 4 == 0) r = (r & 0xffff0000u) | 0x8000u;
        bits[i] = r;
    }
    size_t bad = 0;
    uint16_t *h = xmalloc(n * sizeof *h);
    ops_to_bf16_n(h, x, n);
    for (size_t i = 0; i < n; i++)
        if (ops_to_bf16(x[i]) != nearest_bf16(x[i]) || h[i] != ops_to_bf16(x[i])) bad++;
    test_check(bad == 0, "bf16 rounding: %zu values (a quarter exact ties) round to nearest even, "
               "the vector conversion equal to the scalar one (%zu differ)", n, bad);
    const float inf = INFINITY, nan = NAN;
    test_check(isinf(rb(inf)) && isnan(rb(nan)) && rb(-0.0f) == 0.0f && signbit(rb(-0.0f)) &&
                   isinf(rb(3.4e38f)),
               "bf16 rounding: inf, NaN, -0 kept; the largest floats round to inf");
    free(x);
    free(h);
}

/* ---------- a float64 reference of dot products ---------- */

typedef struct {
    size_t n;
    double *ex, *em, *s, *se, *sq; /* exact sum, of rounded operands, S, S~, sum (ab)^2 */
    int K;                         /* the largest term count */
} dots;

static dots dots_new(size_t n) {
    dots d = {n, xcalloc(n, sizeof(double)), xcalloc(n, sizeof(double)),
              xcalloc(n, sizeof(double)), xcalloc(n, sizeof(double)),
              xcalloc(n, sizeof(double)), 0};
    return d;
}

static void dots_free(dots *d) {
    free(d->ex); free(d->em); free(d->s); free(d->se); free(d->sq);
}

static inline void dot_add(dots *d, size_t i, float a, float b) {
    const double p = (double)a * b, pe = (double)rb(a) * rb(b);
    d->ex[i] += p;
    d->em[i] += pe;
    d->s[i] += fabs(p);
    d->se[i] += fabs(pe);
    d->sq[i] += p * p;
}

/* y (n values) against d under the bounds of the header; extra: terms added
 * to each value besides the products (the GEMM's beta C). */
static void check_dots(const char *name, const float *y, const dots *d) {
    const double gK = d->K * 0x1p-24 / (1.0 - d->K * 0x1p-24);
    size_t bad_em = 0, bad_ex = 0;
    double e2 = 0, q2 = 0, worst_em = 0;
    for (size_t i = 0; i < d->n; i++) {
        const double eem = fabs(y[i] - d->em[i]), eex = fabs(y[i] - d->ex[i]);
        if (!(eem <= gK * d->se[i] + 1e-30)) bad_em++;
        if (!(eex <= (2 * U + U * U) * d->s[i] + gK * d->se[i] + 1e-30)) bad_ex++;
        if (d->se[i] > 0 && eem / (gK * d->se[i]) > worst_em) worst_em = eem / (gK * d->se[i]);
        e2 += eex * eex;
        q2 += d->sq[i];
    }
    const double r = sqrt(e2 / q2), lo = U / (4 * sqrt(3.0)), hi = 2 * U / sqrt(3.0);
    test_check(bad_em == 0,
               "%s: |y - sum bf16(a) bf16(b)| <= g_K S~ (fp32 accumulation, K %d) at all %zu "
               "values (%zu over; worst %.3f of the bound)", name, d->K, d->n, bad_em, worst_em);
    test_check(bad_ex == 0, "%s: |y - sum a b| <= (2u + u^2) S + g_K S~ at all %zu values (%zu over)",
               name, d->n, bad_ex);
    test_check(r >= lo && r <= hi,
               "%s: rms error / rms sqrt(sum (ab)^2) = %.3e in [u/(4 sqrt 3), 2u/sqrt 3] = "
               "[%.2e, %.2e] (u/sqrt 3 = %.2e expected for random signs)", name, r, lo, hi,
               U / sqrt(3.0));
}

/* ---------- ops_gemm ---------- */

static void check_gemm(int ta, int tb, int beta1) {
    const int M = 37, N = 29, K = 300, pad = 3;
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const int ar = ta ? K : M, br = tb ? N : K;
    float *A = rnd((size_t)ar * lda, 1), *B = rnd((size_t)br * ldb, 2), *C = rnd((size_t)M * ldc, 3);
    dots d = dots_new((size_t)M * N);
    d.K = K + beta1;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            const size_t o = (size_t)i * N + j;
            if (beta1) { /* C's old value is an exact fp32 term */
                const double c0 = C[(size_t)i * ldc + j];
                d.ex[o] = d.em[o] = c0;
                d.s[o] = d.se[o] = fabs(c0);
            }
            for (int k = 0; k < K; k++)
                dot_add(&d, o, ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k],
                        tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
        }
    float *ws = xfloats(ops_gemm_ws_floats(M, N, K));
    ops_gemm(OPS_BF16, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta1 ? 1.0f : 0.0f, C, ldc, ws);
    float *y = xfloats((size_t)M * N);
    for (int i = 0; i < M; i++) memcpy(y + (size_t)i * N, C + (size_t)i * ldc, sizeof(float) * N);
    char name[64];
    snprintf(name, sizeof name, "ops_gemm bf16 %c%c beta %d", ta ? 'T' : 'N', tb ? 'T' : 'N', beta1);
    check_dots(name, y, &d);
    dots_free(&d);
    free(A); free(B); free(C); free(ws); free(y);
}

/* ---------- convolutions ---------- */

/* chunk: conv_algo_opts.dnnl_chunk_bytes (0: the default, whole images here). */
static void check_conv(int N, int Cin, int H, int W, int Cout, int k, int stride, size_t chunk) {
    const conv_shape s = conv_shape_make(N, Cin, H, W, Cout, k, stride);
    const conv_algo_opts o = {.precision = OPS_BF16, .dnnl_chunk_bytes = chunk};
    conv_plan p = conv_plan_make(&s, &o);
    char name[96];
    snprintf(name, sizeof name, "conv bf16 %d->%d %dx%d k%d s%d%s", Cin, Cout, H, W, k, stride,
             chunk ? " in chunks of rows" : "");
    test_check(p.form == CONV_FORM_DNNL && p.precision == OPS_BF16 &&
                   strcmp(conv_plan_name(&p), "oneDNN bf16") == 0,
               "%s: planned as oneDNN bf16", name);
    p.state = conv_state_create(&s, &p);
    if (chunk)
        test_check(conv_plan_chunk_rows(&p) > 0, "%s: the state runs chunks of %d rows", name,
                   conv_plan_chunk_rows(&p));
    const size_t nx = (size_t)N * Cin * H * W, nw = (size_t)Cout * Cin * k * k,
                 ny = (size_t)N * Cout * s.Ho * s.Wo;
    float *x = rnd(nx, 11), *w = rnd(nw, 12), *g = rnd(ny, 13);
    dots fwd = dots_new(ny), bd = dots_new(nx), bw = dots_new(nw);
    fwd.K = Cin * k * k;
    bd.K = Cout * k * k; /* at most, over the taps that reach an input */
    bw.K = N * s.Ho * s.Wo;
    for (int n = 0; n < N; n++)
        for (int co = 0; co < Cout; co++)
            for (int oh = 0; oh < s.Ho; oh++)
                for (int ow = 0; ow < s.Wo; ow++) {
                    const size_t yi = (((size_t)n * Cout + co) * s.Ho + oh) * s.Wo + ow;
                    for (int ci = 0; ci < Cin; ci++)
                        for (int kh = 0; kh < k; kh++)
                            for (int kw = 0; kw < k; kw++) {
                                const int ih = oh * stride - s.pad_top + kh,
                                          iw = ow * stride - s.pad_left + kw;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                const size_t xi = (((size_t)n * Cin + ci) * H + ih) * W + iw;
                                const size_t wi = (((size_t)co * Cin + ci) * k + kh) * k + kw;
                                dot_add(&fwd, yi, x[xi], w[wi]);
                                dot_add(&bd, xi, g[yi], w[wi]);
                                dot_add(&bw, wi, g[yi], x[xi]);
                            }
                }
    float *ws = xfloats(conv_workspace_floats(&s, &p));
    float *y = xfloats(ny), *dx = xcalloc(nx, sizeof(float)), *dw = xcalloc(nw, sizeof(float));
    conv2d_forward(y, x, w, NULL, &s, &p, ws);
    conv2d_backward(dx, dw, NULL, g, x, w, &s, &p, ws);
    char part[128];
    snprintf(part, sizeof part, "%s forward", name);
    check_dots(part, y, &fwd);
    snprintf(part, sizeof part, "%s backward data", name);
    check_dots(part, dx, &bd);
    snprintf(part, sizeof part, "%s backward weights", name);
    check_dots(part, dw, &bw);
    /* the same call again: bit-identical (a resume repeats a step exactly) */
    float *y2 = xfloats(ny), *dw2 = xcalloc(nw, sizeof(float));
    conv2d_forward(y2, x, w, NULL, &s, &p, ws);
    conv2d_backward(NULL, dw2, NULL, g, x, w, &s, &p, ws);
    test_check(!memcmp(y, y2, ny * sizeof *y) && !memcmp(dw, dw2, nw * sizeof *dw),
               "%s: repeated calls bit-identical", name);
    conv_state_free(&p);
    dots_free(&fwd); dots_free(&bd); dots_free(&bw);
    free(x); free(w); free(g); free(ws); free(y); free(dx); free(dw); free(y2); free(dw2);
}

static float *copy_f(const float *x, size_t n) {
    float *p = xfloats(n);
    memcpy(p, x, n * sizeof *p);
    return p;
}

/* conv_pack_block (AVX-512 tiles where the CPU has them) against its portable
 * form bit for bit, and that against the definition: block d[p][16] holds
 * channel c's pixel p (rounded to bf16 when asked), zeros past nc. The input
 * carries NaN, infinities, a denormal and exact ties of the rounding; sizes
 * leave tails of 16-pixel tiles and of PACK_PIX passes. */
static void check_pack(void) {
    const size_t sizes[] = {5, 16, 49, 130, 300};
    int bad_def = 0, bad_same = 0, cases = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const size_t HW = sizes[si];
        float *x = rnd(16 * HW, 31 + si), *mk = rnd(16 * HW, 41 + si);
        const uint32_t special[] = {0x7fc00001u, 0x7f800001u, 0x7f800000u, 0xff800000u,
                                    0x00000123u, 0x3f808000u, 0x3f818000u, 0xbf808000u};
        for (size_t i = 0; i < sizeof special / sizeof *special && i < 16 * HW; i++)
            memcpy(&x[(i * 37) % (16 * HW)], &special[i], sizeof(float));
        for (size_t i = 0; i < 16 * HW; i++) mk[i] = mk[i] < 0 ? 0.0f : 2.0f;
        conv_plane_norm nm[16];
        for (int c = 0; c < 16; c++) nm[c] = (conv_plane_norm){c % 2, 0.1f * c, 1.5f, -0.25f};
        for (int nc = 7; nc <= 16; nc += 9)
            for (int silu = 0; silu < 2; silu++)
                for (int bf = 0; bf < 2; bf++) {
                    const float *m = silu && nc == 16 ? mk : NULL;
                    const size_t bytes = 16 * HW * (bf ? 2 : 4);
                    unsigned char *a = xmalloc(bytes), *b = xmalloc(bytes);
                    memset(a, 0xab, bytes);
                    memset(b, 0xcd, bytes);
                    conv_pack_block(a, bf, 16, x, m, silu, nm, nc, HW, HW);
                    conv_pack_block_portable(b, bf, 16, x, m, silu, nm, nc, HW, HW);
                    bad_same += memcmp(a, b, bytes) != 0;
                    float *act = xfloats(HW);
                    for (int c = 0; c < 16; c++) {
                        if (c < nc && silu)
                            ops_silu_mask(act, x + c * HW, m ? m + c * HW : NULL, HW, nm[c]);
                        for (size_t p = 0; p < HW; p++) {
                            const float v = c >= nc ? 0.0f : silu ? act[p] : x[c * HW + p];
                            const size_t i = p * 16 + (size_t)c;
                            if (bf) {
                                uint16_t h;
                                memcpy(&h, b + 2 * i, 2);
                                bad_def += h != ops_to_bf16(v);
                            } else {
                                bad_def += memcmp(b + 4 * i, &v, 4) != 0;
                            }
                        }
                    }
                    cases++;
                    free(act); free(a); free(b);
                }
        free(x); free(mk);
    }
    /* the way back: conv_unpack_block, stored, added, and added through the
     * activation's derivative */
    int ubad_same = 0, ubad_def = 0, ucases = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const size_t HW = sizes[si];
        float *blk = rnd(16 * HW, 51 + si), *o0 = rnd(16 * HW, 61 + si);
        float *g = rnd(16 * HW, 71 + si), *mk = rnd(16 * HW, 81 + si);
        for (size_t i = 0; i < 16 * HW; i++) mk[i] = mk[i] < 0 ? 0.0f : 2.0f;
        conv_plane_norm nm[16];
        for (int c = 0; c < 16; c++) nm[c] = (conv_plane_norm){c % 2, 0.1f * c, 1.5f, -0.25f};
        for (int nc = 7; nc <= 16; nc += 9)
            for (int mode = 0; mode < 3; mode++) {
                float *a = copy_f(o0, 16 * HW), *b = copy_f(o0, 16 * HW);
                const float *gg = mode == 2 ? g : NULL, *mm = mode == 2 && nc == 16 ? mk : NULL;
                conv_unpack_block(a, blk, mode > 0, gg, mm, nm, nc, HW, HW);
                conv_unpack_block_portable(b, blk, mode > 0, gg, mm, nm, nc, HW, HW);
                ubad_same += memcmp(a, b, sizeof(float) * 16 * HW) != 0;
                for (int c = 0; c < 16; c++)
                    for (size_t p = 0; p < HW; p++) {
                        const size_t i = (size_t)c * HW + p;
                        const float v = blk[p * 16 + (size_t)c];
                        if (c >= nc) ubad_def += memcmp(&b[i], &o0[i], 4) != 0;
                        else if (mode == 0) ubad_def += b[i] != v;
                        else if (mode == 1) ubad_def += b[i] != o0[i] + v;
                    }
                ucases++;
                free(a); free(b);
            }
        free(blk); free(o0); free(g); free(mk);
    }
    test_check(ubad_same == 0, "conv_unpack_block: the AVX-512 tiles equal the portable form "
               "bit for bit (%d of %d cases differ)", ubad_same, ucases);
    test_check(ubad_def == 0, "conv_unpack_block: every element stored or added as defined, "
               "planes past the channels untouched (%d differ)", ubad_def);
    test_check(bad_same == 0, "conv_pack_block: the AVX-512 tiles equal the portable form bit "
               "for bit (%d of %d cases differ)", bad_same, cases);
    test_check(bad_def == 0, "conv_pack_block: every element as defined (channel-blocked, "
               "rounded to nearest even, zeros past the channels; %d differ)", bad_def);
}

/* The fused GroupNorm + SiLU + dropout input of a bf16 convolution, packed
 * straight into oneDNN's blocked bf16 layout (conv_pack_block), against the
 * unfused chain groupnorm_forward -> silu -> dropout -> conv2d (whose input is
 * packed without an activation): both round the same fp32 values to bf16, so
 * forward and every gradient are bit-identical. C = 24 leaves a block of 16
 * half filled (its channels past 24 must be zeros). */
static void check_fused(int N, int C, int H, int W, int Cout, int with_mask, size_t chunk) {
    const int G = C / 2;
    const conv_shape s = conv_shape_make(N, C, H, W, Cout, 3, 1);
    const conv_algo_opts o = {.precision = OPS_BF16, .dnnl_chunk_bytes = chunk};
    conv_plan p = conv_plan_make(&s, &o);
    p.state = conv_state_create(&s, &p);
    const size_t nx = (size_t)N * C * H * W, nw = (size_t)Cout * C * 9,
                 ny = (size_t)N * Cout * H * W;
    float *x = rnd(nx, 21), *w = rnd(nw, 22), *b = rnd((size_t)Cout, 23), *R = rnd(ny, 24);
    for (size_t i = 0; i < nx; i++) x[i] = 3.0f * x[i] + (float)((i / ((size_t)H * W)) % 5);
    float *gamma = rnd((size_t)C, 25), *beta = rnd((size_t)C, 26), *mask = NULL;
    if (with_mask) {
        mask = rnd(nx, 27);
        for (size_t i = 0; i < nx; i++) mask[i] = mask[i] < -0.4f ? 0.0f : 1.0f / 0.7f;
    }
    float *mean = xfloats((size_t)N * G), *rstd = xfloats((size_t)N * G);
    float *g = xfloats(nx), *a = xfloats(nx), *d = xfloats(nx);
    groupnorm_forward(g, mean, rstd, x, gamma, beta, N, C, H * W, G, 1e-6f);
    silu_forward(a, g, nx);
    const float *cin = a;
    if (mask) {
        dropout_forward(d, a, mask, nx);
        cin = d;
    }
    float *ws = xfloats(conv_workspace_floats(&s, &p));
    float *ref = xfloats(ny), *out = xfloats(ny);
    conv2d_forward(ref, cin, w, b, &s, &p, ws);
    const gn_apply gn = {mean, rstd, gamma, beta, G};
    gn_silu_conv2d_forward(out, x, &gn, mask, w, b, &s, &p, ws);
    float *dcin = xfloats(nx), *dd = xfloats(nx), *rdg = xfloats(nx), *rdw = xfloats(nw);
    float *rdb = xfloats((size_t)Cout);
    conv2d_backward(dcin, rdw, rdb, R, cin, w, &s, &p, ws);
    const float *da = dcin;
    if (mask) {
        dropout_backward(dd, dcin, mask, nx);
        da = dd;
    }
    silu_backward(rdg, da, g, nx);
    float *dg = xfloats(nx), *dw = xfloats(nw), *db = xfloats((size_t)Cout);
    gn_silu_conv2d_backward(dg, dw, db, R, x, &gn, mask, w, &s, &p, ws);
    /* in chunks of rows, the input gradient of a row reached by two chunks is
     * added through SiLU' once per chunk (a (x + y) against a x + a y): equal
     * to fp32 rounding, not bit for bit */
    double e = 0, r = 0;
    for (size_t i = 0; i < nx; i++) {
        e += ((double)dg[i] - rdg[i]) * ((double)dg[i] - rdg[i]);
        r += (double)rdg[i] * rdg[i];
    }
    const int dg_ok = chunk ? sqrt(e / r) < 1e-6 : !memcmp(dg, rdg, nx * sizeof *dg);
    test_check(!memcmp(out, ref, ny * sizeof *out) && dg_ok &&
                   !memcmp(dw, rdw, nw * sizeof *dw) && !memcmp(db, rdb, Cout * sizeof *db),
               "conv bf16 %d->%d %dx%d, GroupNorm + SiLU%s fused into the packed input%s: "
               "output and weight gradient bit-identical to the unfused ops, the input "
               "gradient %s (rel %.1e)",
               C, Cout, H, W, mask ? " + dropout" : "", chunk ? ", in chunks of rows" : "",
               chunk ? "to 1e-6" : "too", sqrt(e / (r > 0 ? r : 1)));
    conv_state_free(&p);
    free(x); free(w); free(b); free(R); free(gamma); free(beta); free(mask); free(mean);
    free(rstd); free(g); free(a); free(d); free(ws); free(ref); free(out); free(dcin);
    free(dd); free(rdg); free(rdw); free(rdb); free(dg); free(dw); free(db);
}

int main(void) {
    const char *how;
    const ops_bf16_level lvl = ops_bf16_support(&how);
    printf("# bf16 on this CPU: %s\n", how);
    check_rounding();
    check_pack();
    if (lvl == OPS_BF16_NONE) {
        printf("skip - bf16 arithmetic: %s\n", how);
        return test_done();
    }
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) check_gemm(ta, tb, ta == tb);
    check_conv(2, 32, 9, 9, 16, 3, 1, 0);
    check_conv(2, 16, 10, 9, 24, 3, 2, 0);
    check_conv(2, 48, 7, 7, 16, 1, 1, 0);
    check_conv(2, 1, 8, 8, 32, 3, 1, 0); /* conv_in: one input channel */
    check_conv(2, 24, 6, 7, 20, 3, 1, 0); /* a block of 16 channels half filled */
    check_fused(2, 24, 6, 7, 20, 1, 0);
    check_fused(3, 32, 9, 9, 16, 0, 0);
    /* images above 2 KiB in chunks of rows (lsun256's 256x256 layers) */
    check_conv(2, 24, 13, 9, 20, 3, 1, 2048);
    check_conv(2, 20, 11, 7, 24, 1, 1, 2048);
    check_fused(2, 24, 13, 9, 20, 1, 2048);
    return test_done();
}
