/* Convolution dispatch (the top of the conv layers, common/ops/conv_internal.h):
 * TF 'SAME' shapes, the plan (which formulation runs a shape, chosen from the
 * caller's conv_algo_opts) and conv2d / silu_conv2d / gn_silu_conv2d, which
 * hand each call to the plan's formulation. Nothing here is process-wide: the
 * choice and any prepared kernels travel in the plan the caller passes. */
#include <stdlib.h>

#include "common/core/prof.h"
#include "common/core/util.h"
#include "common/ops/conv_internal.h"

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

/* The formulations, by conv_form. */
static const conv_formulation *const conv_forms[CONV_FORM_COUNT] = {
    [CONV_FORM_GEMM] = &conv_gemm_formulation,
    [CONV_FORM_SHIFT] = &conv_shift_formulation,
    [CONV_FORM_WINOGRAD] = &conv_winograd_formulation,
    [CONV_FORM_DNNL] = &conv_dnnl_formulation,
};

/* The rule of conv_algo_opts.algo for a 3x3 stride-1 shape (the shifted GEMMs
 * fit it): Winograd where it fits and the request or, for AUTO, the channel
 * counts ask for it. */
static int wants_winograd(const conv_shape *s, const conv_algo_opts *o) {
    if (!conv_winograd_formulation.fits(s)) return 0;
    switch (o->algo) {
    case CONV_ALGO_SHIFT: return 0;
    case CONV_ALGO_WINOGRAD: return 1;
    default: return s->Cin >= CONV_WINOGRAD_MIN_CH && s->Cout >= CONV_WINOGRAD_MIN_CH;
    }
}

/* The rule for oneDNN's direct convolutions under AUTO (docs/performance.md,
 * "oneDNN direct convolutions", has the timings behind it): the small models'
 * convolutions, CONV_DNNL_MIN_CIN to CONV_WINOGRAD_MIN_CH input channels and
 * fewer than CONV_WINOGRAD_MIN_CH output channels, any k and stride, where its
 * blocked JIT kernels ran 1.4-3x the shifted GEMMs and im2col on one core and
 * fashion_mnist's steps 1.5-2x; not the first layer (1-3 channels: its weight
 * gradient was slower than im2col's GEMM), and not cifar10's 128-256 channels
 * (Winograd there; its 1x1 and stride-2 layers were faster alone by oneDNN but
 * the training step measured slower with them: left for later). */
static int wants_dnnl(const conv_shape *s, const conv_algo_opts *o) {
    if (!conv_dnnl_formulation.fits(s)) return 0;
    /* bf16: oneDNN is the one formulation with bf16 kernels (fp32 Winograd
     * with bf16 GEMMs is not built), so it takes every convolution */
    if (o->precision == OPS_BF16) return 1;
    switch (o->algo) {
    case CONV_ALGO_DNNL: return 1;
    case CONV_ALGO_AUTO:
        return s->Cin >= CONV_DNNL_MIN_CIN && s->Cin <= CONV_WINOGRAD_MIN_CH &&
               s->Cout < CONV_WINOGRAD_MIN_CH && !wants_winograd(s, o);
    default: return 0;
    }
}

conv_plan conv_plan_make(const conv_shape *s, const conv_algo_opts *o) {
    static const conv_algo_opts defaults = {.algo = CONV_ALGO_AUTO};
    if (!o) o = &defaults;
    conv_plan p = {.form = CONV_FORM_GEMM, .wino_chunk_floats = o->wino_chunk_floats};
    if (wants_dnnl(s, o)) {
        p.form = CONV_FORM_DNNL;
        p.precision = o->precision;
        p.dnnl_chunk_bytes = o->dnnl_chunk_bytes;
        return p;
    }
    if (!conv_shift_formulation.fits(s)) return p;
    p.form = CONV_FORM_SHIFT;
    if (wants_winograd(s, o)) {
        p.form = CONV_FORM_WINOGRAD;
        p.wino_tile = conv_winograd_forward_tile(s, o->wino_tile);
    }
    return p;
}

int conv_plan_chunk_rows(const conv_plan *p) {
    const conv_formulation *f = p ? conv_forms[p->form] : NULL;
    return f && f->chunk_rows ? f->chunk_rows(p) : 0;
}

const char *conv_plan_name(const conv_plan *p) {
    switch (p->form) {
    case CONV_FORM_SHIFT: return "shifted GEMMs";
    case CONV_FORM_WINOGRAD: return p->wino_tile == 4 ? "Winograd F(4x4)" : "Winograd F(2x2)";
    case CONV_FORM_DNNL: return p->precision == OPS_BF16 ? "oneDNN bf16" : "oneDNN fp32";
    default: return "im2col";
    }
}

/* The plan to run: p, or the default plan for s (in *tmp) when p is NULL. */
static const conv_plan *plan_or_default(const conv_shape *s, const conv_plan *p, conv_plan *tmp) {
    if (p) return p;
    *tmp = conv_plan_make(s, NULL);
    return tmp;
}

conv_state *conv_state_create(const conv_shape *s, const conv_plan *p) {
    const conv_formulation *f = conv_forms[p->form];
    return f->state_create ? f->state_create(s, p) : NULL;
}

void conv_state_free(conv_plan *p) {
    if (!p->state) return;
    conv_forms[p->form]->state_free(p->state);
    p->state = NULL;
}

size_t conv_workspace_floats(const conv_shape *s, const conv_plan *p) {
    conv_plan tmp;
    p = plan_or_default(s, p, &tmp);
    return conv_forms[p->form]->workspace_floats(s, p);
}

size_t conv_prepared_floats(const conv_shape *s, const conv_plan *p) {
    conv_plan tmp;
    p = plan_or_default(s, p, &tmp);
    const conv_formulation *f = conv_forms[p->form];
    return f->prepared_floats ? f->prepared_floats(s, p) : 0;
}

void conv_prepare(float *prep, const float *weight, const conv_shape *s, const conv_plan *p) {
    conv_plan tmp;
    p = plan_or_default(s, p, &tmp);
    const conv_formulation *f = conv_forms[p->form];
    if (f->prepare) f->prepare(prep, weight, s, p);
}

void conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                    const conv_shape *s, const conv_plan *p, float *ws) {
    PROF_SCOPE(PROF_CONV_FWD);
    conv_plan tmp;
    p = plan_or_default(s, p, &tmp);
    conv_forms[p->form]->forward(out, inp, NULL, weight, bias, s, p, ws);
}

void conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, const conv_shape *s,
                     const conv_plan *p, float *ws) {
    PROF_SCOPE(PROF_CONV_BWD);
    conv_plan tmp;
    p = plan_or_default(s, p, &tmp);
    if (dbias) conv_bias_grad(dbias, dout, s);
    if (!dinp && !dweight) return;
    conv_forms[p->form]->backward(dinp, dweight, dout, inp, NULL, weight, s, p, ws);
}

/* ---------- SiLU (and dropout) fused into a 3x3 stride-1 convolution ---------- */

void silu_conv2d_forward(float *out, const float *inp, const float *mask, const float *weight,
                         const float *bias, const conv_shape *s, const conv_plan *p, float *ws) {
    gn_silu_conv2d_forward(out, inp, NULL, mask, weight, bias, s, p, ws);
}

void silu_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *mask, const float *weight,
                          const conv_shape *s, const conv_plan *p, float *ws) {
    gn_silu_conv2d_backward(dinp, dweight, dbias, dout, inp, NULL, mask, weight, s, p, ws);
}

/* ---------- GroupNorm, SiLU (and dropout) fused into a 3x3 stride-1 convolution ---------- */

/* The fused ops need a formulation that takes the activation (3x3 stride 1).
 * Anything else is a programming error: logged, then abort. */
static const conv_plan *fused_plan(const conv_shape *s, const conv_plan *p, conv_plan *tmp) {
    p = plan_or_default(s, p, tmp);
    if (!conv_shift_formulation.fits(s) || !conv_forms[p->form]->fused) {
        log_warn("silu_conv2d: only 3x3 stride-1 convolutions (got k %d stride %d)", s->k,
                 s->stride);
        abort();
    }
    return p;
}

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
                            const conv_plan *p, float *ws) {
    PROF_SCOPE(PROF_CONV_FWD);
    conv_plan tmp;
    p = fused_plan(s, p, &tmp);
    const conv_act act = gn_act(inp, gn, mask);
    conv_forms[p->form]->forward(out, inp, &act, weight, bias, s, p, ws);
}

void gn_silu_conv2d_backward(float *dgn, float *dweight, float *dbias, const float *dout,
                             const float *inp, const gn_apply *gn, const float *mask,
                             const float *weight, const conv_shape *s, const conv_plan *p,
                             float *ws) {
    PROF_SCOPE(PROF_CONV_BWD);
    conv_plan tmp;
    p = fused_plan(s, p, &tmp);
    if (dbias) conv_bias_grad(dbias, dout, s);
    if (!dgn && !dweight) return;
    const conv_act act = gn_act(inp, gn, mask);
    conv_forms[p->form]->backward(dgn, dweight, dout, inp, &act, weight, s, p, ws);
}
