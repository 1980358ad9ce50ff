/* Neural-network ops: one forward and one backward per op, same argument order.
 *
 * Conventions (every op):
 *  - Activations are float32, NCHW, contiguous. "HW" is H*W.
 *  - Weights use PyTorch's layouts: conv [Cout][Cin][k][k], linear [Out][In].
 *  - backward ACCUMULATES (+=) into every gradient it writes (dinp, dweight,
 *    dbias); callers zero gradient buffers first. A NULL gradient pointer means
 *    "not needed" and is skipped.
 *  - Buffers are borrowed: ops never allocate on the hot path. Scratch space comes
 *    from the caller (`ws`, sized by the matching *_workspace_floats()).
 *  - forward saves what backward needs into caller-owned buffers (GroupNorm
 *    mean/rstd, attention probabilities).
 *  - All GEMMs go through cblas_sgemm; the DNNL convolutions through oneDNN.
 *  - Precision (ops_precision): fp32, or bf16 mixed precision where an op takes a
 *    precision (convolutions through their plan, linear, attention): its matmul
 *    operands are rounded to bf16 and accumulated in fp32 by oneDNN; inputs,
 *    outputs, weights and gradients stay fp32 buffers. */
#ifndef DDPM_OPS_H
#define DDPM_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- precision (common/ops/bf16.c) ---- */
typedef enum { OPS_FP32 = 0, OPS_BF16 } ops_precision;
/* "fp32", "bf16", NULL: the names by value (config key training.precision). */
extern const char *const ops_precision_names[];
/* What this CPU offers for bf16, by oneDNN's effective ISA
 * (dnnl_get_effective_cpu_isa): NATIVE with avx512_bf16 or AMX, EMULATED on
 * AVX-512 without them (oneDNN's emulation: correct, slower than fp32), NONE
 * below AVX-512. *how (may be NULL) gets a sentence for the log or the error
 * that names the CPU features. */
typedef enum { OPS_BF16_NONE = 0, OPS_BF16_EMULATED, OPS_BF16_NATIVE } ops_bf16_level;
ops_bf16_level ops_bf16_support(const char **how);
/* fp32 -> bf16, round to nearest even (NaN stays NaN), and back (exact). */
uint16_t ops_to_bf16(float x);
float ops_from_bf16(uint16_t h);
void ops_to_bf16_n(uint16_t *d, const float *s, size_t n);
/* Row-major C = alpha op(A) op(B) + beta C (ta / tb: transpose A / B), C M x N,
 * K the inner size. OPS_FP32: ops_sgemm (ws unused, may be NULL). OPS_BF16: A and
 * B are rounded to bf16 into ws (ops_gemm_ws_floats(M, N, K) floats) and
 * multiplied by oneDNN with fp32 accumulation. */
size_t ops_gemm_ws_floats(int M, int N, int K);
/* The bf16 GEMM itself on operands already in bf16 (oneDNN's
 * dnnl_gemm_bf16bf16f32, row-major, lda / ldb the leading dimensions of A and B
 * as stored): 0, or -1 when oneDNN refuses (no AVX-512). */
int ops_bf16_gemm(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                  const uint16_t *B, int ldb, float beta, float *C, int ldc);
void ops_gemm(ops_precision prec, int ta, int tb, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc,
              float *ws);

/* ---- 2-D convolution (square kernel k, stride 1 or 2, TF 'SAME' padding) ----
 * Output size Ho = ceil(H / stride); total padding = max((Ho-1)*stride + k - H, 0),
 * split with the smaller half before (TF 'SAME'): k=3,s=1 pads 1/1; k=3,s=2 on an
 * even size pads 0 before and 1 after. k=1 skips im2col. bias may be NULL. */
typedef struct {
    int N, Cin, H, W, Cout, k, stride;
    int Ho, Wo, pad_top, pad_left;
} conv_shape;

conv_shape conv_shape_make(int N, int Cin, int H, int W, int Cout, int k, int stride);

/* How a convolution runs: its formulation, chosen by conv_plan_make from the
 * shape and the caller's conv_algo_opts (common/ops/conv.c dispatches on it).
 * GEMM: im2col (or the input itself for 1x1) + SGEMM, any k and stride. SHIFT:
 * 3x3 stride-1 as nine shifted GEMMs (conv_shift.c). WINOGRAD: 3x3 stride-1 as
 * Winograd F(2x2, 3x3) (16 GEMMs), the forward F(4x4, 3x3) (36) where it fits
 * (winograd.c). DNNL: oneDNN's direct convolutions (libdnnl), fp32, any k and
 * stride, with the input and output reordered to its channel-blocked layouts
 * (conv_dnnl.c). SHIFT, WINOGRAD and DNNL take the fused input activation of
 * silu_conv2d / gn_silu_conv2d. */
typedef enum {
    CONV_FORM_GEMM = 0,
    CONV_FORM_SHIFT,
    CONV_FORM_WINOGRAD,
    CONV_FORM_DNNL,
    CONV_FORM_COUNT
} conv_form;

/* The caller's request for 3x3 stride-1 convolutions. algo: AUTO takes Winograd
 * when both channel counts are at least CONV_WINOGRAD_MIN_CH and the map is at
 * most 908 wide, oneDNN for the other convolutions of CONV_DNNL_MIN_CIN to
 * CONV_WINOGRAD_MIN_CH input and fewer than CONV_WINOGRAD_MIN_CH output
 * channels (conv.c, wants_dnnl), SHIFT neither,
 * WINOGRAD wherever it fits; DNNL takes oneDNN for every convolution (any k and
 * stride: tests and benchmarks). wino_tile: the
 * forward's Winograd tile, 0 for F(4x4, 3x3) on maps at least 16 wide and
 * F(2x2, 3x3) below, 2 or 4 to force one (F(4x4) only up to maps 420 wide;
 * backward always uses F(2x2)). wino_chunk_floats: Winograd works on chunks of
 * about that many floats of transformed tiles (0: the default, 8 Mi); tests
 * make it small to exercise the chunk boundaries. All zero: the defaults. */
typedef enum { CONV_ALGO_AUTO = 0, CONV_ALGO_SHIFT, CONV_ALGO_WINOGRAD, CONV_ALGO_DNNL } conv_algo;
#define CONV_WINOGRAD_MIN_CH 128
#define CONV_DNNL_MIN_CIN 16
typedef struct {
    conv_algo algo;
    int wino_tile;
    size_t wino_chunk_floats;
    /* OPS_BF16: every convolution by oneDNN in bf16 (conv.c, wants_dnnl),
     * whatever algo says */
    ops_precision precision;
    /* oneDNN: an image above this many bytes (fp32, the larger of input and
     * output) runs in chunks of rows of about this size (conv_dnnl.c); 0: the
     * default, 16 MiB. Tests make it small to exercise the chunks. */
    size_t dnnl_chunk_bytes;
} conv_algo_opts;

/* A plan's long-lived state (conv_state_create): what a formulation builds once
 * per layer rather than at every call (oneDNN's primitives, per batch size and
 * thread count), owned by the caller. */
typedef struct conv_state conv_state;

/* A plan: what conv_plan_make chose for a shape. It holds no pointer to global
 * state, so a model keeps one per layer and two models never disturb each
 * other. A plan made for shape s serves every shape that differs from s only in
 * N. prep: the forward's prepared kernels of the weight passed with the plan
 * (conv_prepare), or NULL to transform the kernels at each call. Every function
 * below takes a plan p; p NULL means conv_plan_make(s, NULL). */
typedef struct {
    conv_form form;
    int wino_tile;            /* the forward's Winograd tile, 2 or 4; 0 unless WINOGRAD */
    size_t wino_chunk_floats; /* as in conv_algo_opts (0: the default) */
    const float *prep;        /* NULL: not prepared */
    conv_state *state;        /* NULL: none (a DNNL plan then builds its primitives at
                                 each call: correct, slow) */
    ops_precision precision;  /* OPS_BF16 only with DNNL */
    size_t dnnl_chunk_bytes;  /* as in conv_algo_opts (0: the default) */
} conv_plan;

/* The plan's formulation for logs: "im2col", "shifted GEMMs", "Winograd F(4x4)",
 * "Winograd F(2x2)", "oneDNN fp32", "oneDNN bf16". */
const char *conv_plan_name(const conv_plan *p);

/* o NULL: all defaults. */
conv_plan conv_plan_make(const conv_shape *s, const conv_algo_opts *o);
/* The output rows per chunk that the plan's state runs an image in (oneDNN
 * beyond conv_algo_opts.dnnl_chunk_bytes), 0 for whole images. */
int conv_plan_chunk_rows(const conv_plan *p);
/* Prepared kernels, for many forward passes over weights that do not change (a
 * sampling run). conv_prepared_floats(s, p) is the size of the forward's
 * transformed kernels (0 when plan p has nothing to prepare: not Winograd).
 * conv_prepare computes them from `weight` into prep (that many floats, owned by
 * the caller); a forward given a copy of p with .prep = prep then reads them
 * instead of transforming the kernels at every call. The caller must not change
 * `weight` nor free `prep` while plans point at it. */
size_t conv_prepared_floats(const conv_shape *s, const conv_plan *p);
void conv_prepare(float *prep, const float *weight, const conv_shape *s, const conv_plan *p);
/* The state of plan p for shape s (any N), or NULL when its formulation keeps
 * none (all but DNNL): a model sets plan.state to it and, when the plan goes,
 * frees it with conv_state_free(&plan) (which clears plan.state; none: nothing
 * to do). A state serves one thread at a time: every lane of a model has its
 * own. */
conv_state *conv_state_create(const conv_shape *s, const conv_plan *p);
void conv_state_free(conv_plan *p);
size_t conv_workspace_floats(const conv_shape *s, const conv_plan *p);
void conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    const conv_shape *s, const conv_plan *p, float *ws);
void conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, const conv_shape *s,
                     const conv_plan *p, float *ws);

/* SiLU, an optional dropout mask, then a 3x3 stride-1 convolution, fused: out =
 * conv(silu(inp) * mask) (mask NULL: no dropout), with the activation applied
 * while the conv copies its input, so silu(inp) is never stored. backward adds
 * d/d inp (through mask and silu') into dinp and the weight/bias gradients into
 * dweight/dbias; any of them may be NULL. Same workspace as conv2d_* for s.
 * Only k = 3, stride 1 and a SHIFT, WINOGRAD or DNNL plan (aborts otherwise: a
 * programming error). */
void silu_conv2d_forward(float *out, const float *inp, const float *mask, const float *weight,
                         const float *bias, const conv_shape *s, const conv_plan *p, float *ws);
void silu_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *mask, const float *weight,
                          const conv_shape *s, const conv_plan *p, float *ws);

/* GroupNorm, then SiLU and the optional dropout mask, then a 3x3 stride-1
 * convolution, fused: out = conv(silu(GN(inp)) * mask), GN with the statistics
 * mean/rstd [N][G] (from groupnorm_stats) and gamma/beta [C]. The normalised
 * values are computed while the conv copies its input and never stored.
 * backward adds d/d GN(inp) (through mask and silu', not through the
 * GroupNorm: the caller passes it to groupnorm_backward) into dgn, and the
 * weight/bias gradients; any may be NULL. Bit-identical to groupnorm_forward
 * followed by silu_conv2d. Same workspace as conv2d_* for s. */
typedef struct {
    const float *mean, *rstd, *gamma, *beta;
    int groups;
} gn_apply;
void gn_silu_conv2d_forward(float *out, const float *inp, const gn_apply *gn, const float *mask,
                            const float *weight, const float *bias, const conv_shape *s,
                            const conv_plan *p, float *ws);
void gn_silu_conv2d_backward(float *dgn, float *dweight, float *dbias, const float *dout,
                             const float *inp, const gn_apply *gn, const float *mask,
                             const float *weight, const conv_shape *s, const conv_plan *p,
                             float *ws);

/* ---- linear: out[N][Out] = inp[N][In] * weight[Out][In]^T + bias ----
 * prec: the GEMMs' operand precision; ws: linear_workspace_floats() (0 for
 * fp32: ws may then be NULL). */
size_t linear_workspace_floats(int N, int In, int Out, ops_precision prec);
void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int In, int Out, ops_precision prec, float *ws);
void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int In, int Out,
                     ops_precision prec, float *ws);

/* ---- GroupNorm over (C/G channels x HW) per sample and group, then affine ----
 * mean and rstd are [N][G], written by forward and read by backward. */
void groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *gamma, const float *beta, int N, int C, int HW, int G,
                       float eps);
/* groupnorm_forward's statistics only (mean, rstd), for gn_silu_conv2d; the same
 * as groupnorm_forward with out, gamma and beta NULL. */
void groupnorm_stats(float *mean, float *rstd, const float *inp, int N, int C, int HW, int G,
                     float eps);
void groupnorm_backward(float *dinp, float *dgamma, float *dbeta, const float *dout,
                        const float *inp, const float *mean, const float *rstd,
                        const float *gamma, int N, int C, int HW, int G);

/* ---- SiLU (swish): out = x * sigmoid(x); out may alias inp in forward ---- */
void silu_forward(float *out, const float *inp, size_t n);
void silu_backward(float *dinp, const float *dout, const float *inp, size_t n);

/* ---- single-head self-attention over HW positions ----
 * q, k, v, out are [N][C][HW] (the outputs of the 1x1 q/k/v projections).
 * att[N][HW][HW] = softmax_j( sum_c q[c][i] k[c][j] / sqrt(C) ); out[c][i] = sum_j att[i][j] v[c][j].
 * att is saved for backward. prec: the GEMMs' operand precision (scores,
 * softmax and att stay fp32). ws: attention_workspace_floats(). */
size_t attention_workspace_floats(int C, int HW, ops_precision prec);
void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       int N, int C, int HW, ops_precision prec, float *ws);
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *att, int N, int C,
                        int HW, ops_precision prec, float *ws);

/* ---- nearest-neighbour 2x upsample: [N][C][H][W] -> [N][C][2H][2W] ---- */
void upsample2x_forward(float *out, const float *inp, int N, int C, int H, int W);
void upsample2x_backward(float *dinp, const float *dout, int N, int C, int H, int W);

/* ---- channel concat: out[N][Ca+Cb][HW] = [a ; b] ---- */
void concat_forward(float *out, const float *a, const float *b, int N, int Ca, int Cb, int HW);
void concat_backward(float *da, float *db, const float *dout, int N, int Ca, int Cb, int HW);

/* ---- dropout with a precomputed mask (values 0 or 1/(1-p)) ----
 * The mask comes from dropout_mask() with the counter-based RNG, so it is the same
 * whatever the batch split; out may alias inp. */
void dropout_forward(float *out, const float *inp, const float *mask, size_t n);
void dropout_backward(float *dinp, const float *dout, const float *mask, size_t n);

/* ---- residual add: out = a + b (out may alias a or b) ---- */
void add_forward(float *out, const float *a, const float *b, size_t n);
void add_backward(float *da, float *db, const float *dout, size_t n);

/* ---- per-(sample, channel) broadcast add: out[n][c][hw] = inp[n][c][hw] + bias[n][c]
 * (the timestep projection added inside every res block); out may alias inp. */
void add_channel_forward(float *out, const float *inp, const float *bias, int N, int C, int HW);
void add_channel_backward(float *dinp, float *dbias, const float *dout, int N, int C, int HW);

/* ---- sinusoidal timestep embedding (authors' get_timestep_embedding) ----
 * out[N][dim] = [sin(t f_i), cos(t f_i)], f_i = exp(-log(10000) i / (half-1)),
 * half = dim/2, computed in double. t is the integer index 0..T-1. It has no
 * backward: its input is an integer and it has no parameters. */
void timestep_embedding_forward(float *out, const int *t, int N, int dim);

/* ---- label embedding, added: out[n][:] = inp[n][:] + table[y[n]][:] (out may alias
 * inp); table is [rows][dim], every y[n] in 0..rows-1 (the caller's check).
 * backward: dinp += dout (when dinp is not NULL), dtable[y[n]] += dout[n]
 * (images in order, so that a repeated label sums in a fixed order). */
void label_embedding_forward(float *out, const float *inp, const float *table, const int *y,
                             int N, int dim);
void label_embedding_backward(float *dinp, float *dtable, const float *dout, const int *y,
                              int N, int dim);

/* ---- mean squared error, L_simple: loss = mean((pred - target)^2) over n values ----
 * backward: dpred += scale * 2 (pred - target) / n, where scale is dloss. */
float mse_forward(const float *pred, const float *target, size_t n);
void mse_backward(float *dpred, const float *pred, const float *target, size_t n, float scale);

#endif
