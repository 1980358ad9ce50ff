/* The DDPM U-Net: structure, parameter table, forward and backward.
 * See unet.h for the architecture and ownership rules, docs/model.md for names. */
#include "common/model/unet.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/prof.h"
#include "common/core/util.h"
#include "common/ops/ops.h"
#include "common/rng/rng.h"

#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_max_threads(void) { return 1; }
#endif

#define GN_GROUPS UNET_GN_GROUPS
#define GN_EPS 1e-6f
#define NSCRATCH 4
/* Lanes beyond the first each hold a gradient buffer; their total is capped here. */
#define UNET_LANE_GRAD_BYTES ((size_t)1 << 30)

typedef enum { L_CONV_IN, L_RES, L_ATTN, L_DOWN, L_UP, L_OUT } layer_kind;

/* Parameter slots per layer kind (indices into layer.p, values are tensor indices). */
enum { R_N1G, R_N1B, R_C1W, R_C1B, R_TW, R_TB, R_N2G, R_N2B, R_C2W, R_C2B, R_SW, R_SB };
enum { A_NG, A_NB, A_QW, A_QB, A_KW, A_KB, A_VW, A_VB, A_OW, A_OB };
enum { C_W, C_B };           /* conv_in, down, up */
enum { O_NG, O_NB, O_W, O_B }; /* output head */

/* Activation slots. A forward-only model shares one buffer per slot across layers
 * (sized for the largest). A training model keeps per layer only what backward
 * cannot cheaply redo (slot_kept()); the other slots point into the NSCRATCH shared
 * scratch buffers during forward, and backward recomputes them there (docs/memory.md). */
enum {
    S_CAT, S_G1, S_H1, S_MASK, S_XS, S_Q, S_K, S_V, S_ATT, S_O,
    S_UP, S_MEAN1, S_RSTD1, S_MEAN2, S_RSTD2, S_TP, S_COUNT
};

/* A layer's convolutions, indices into layer.plan: K_MAIN is its only one
 * (conv_in, attention's 1x1 projections, down, up, out) or a res block's conv1. */
enum { K_MAIN, K_CONV2, K_SHORTCUT, K_COUNT };

typedef struct {
    layer_kind kind;
    int cin, cout;      /* input channels (after concat for up blocks), output channels */
    int H, W;           /* input spatial size */
    int Ho, Wo;         /* output spatial size */
    int src;            /* layer index of the input, -1 = the network input x */
    int skip;           /* up res blocks: layer index concatenated after src, else -1 */
    int dropout_id;     /* res blocks: index of the dropout layer (RNG purpose) */
    int p[12];          /* parameter tensor indices */
    float *out, *dout;  /* output activation and its gradient (dout: in the pool) */
    int first_use;      /* training: highest layer index reading out (its dout is
                           zeroed when backward reaches that layer) */
    float *s[S_COUNT];  /* saved intermediates */
    conv_plan plan[K_COUNT]; /* its convolutions' plans (plan_convs), for any N; set
                                in the models that run (the lanes, not their parent) */
} layer;

struct unet {
    model_config mc;
    int max_batch, with_backward;
    int n_tensors, cap_tensors;
    unet_tensor *tensors;
    size_t n_params;
    int n_layers, cap_layers;
    layer *layers;
    int p_temb[4];      /* dense0 W, b, dense1 W, b */
    int p_label;        /* label_emb.weight, or -1 (num_classes 0) */
    int *y;             /* the last forward's labels (null label for NULL), max_batch */
    /* timestep embedding activations */
    float *emb, *d0, *a0, *d1, *ts, *dts;
    float *scratch[NSCRATCH]; /* forward transients and backward scratch, max_act floats each */
    float *dout_pool;   /* every layer's dout, placed by lifetime (plan_dout_pool) */
    uint64_t *ids;      /* copy of the last forward's sample ids (dropout masks) */
    size_t max_act;     /* largest layer activation (floats, max_batch images) */
    float *ws;          /* op workspace */
    size_t ws_floats;
    float *shared[S_COUNT];
    size_t act_bytes;
    size_t part_bytes[5]; /* act_bytes by part: outputs, kept, dout pool, scratch, workspace */
    const float *x;     /* input of the last forward (borrowed) */
    int last_N;
    int last_t_valid;
    double macs;
    /* dropout */
    unet_rng rng;
    int use_dropout;
    unet_backward_hook hook;
    void *hook_ctx;
    unet_forward_hook fwd_hook;
    void *fwd_hook_ctx;
    /* Lanes (nlanes > 1): the batch is split into nlanes contiguous slices, each run
     * by a complete sub-model (lane[l], built for ceil(max_batch / nlanes) images)
     * on its own thread; the parent holds only the tables. Lane 0 accumulates into
     * the caller's gradients, lanes 1.. into lane_grads[l], which backward adds in
     * after every layer (lane order fixed), before the hook sees that layer. */
    int nlanes, active_lanes;
    struct unet **lane;
    float **lane_grads;
    int *lane_start;    /* active_lanes + 1 image offsets of the last forward */
    float *mask_buf;    /* unet_dropout_mask's gathered mask (lanes only) */
    unet_options opt;   /* as given to unet_create, lanes resolved */
    /* unet_prepare: prep[2 i + k] the transformed kernels of conv k (K_MAIN,
     * K_CONV2) of layer i, or NULL; owned by the top model, lent to its lanes */
    const float *prep_params; /* the params buffer prepared (NULL: none) */
    size_t prep_bytes;
    float **prep;
};

/* ---------- construction ---------- */

static int add_tensor(unet *m, const char *name, int ndim, const int *shape, float init_scale) {
    if (m->n_tensors == m->cap_tensors) {
        m->cap_tensors = m->cap_tensors ? 2 * m->cap_tensors : 64;
        m->tensors = xrealloc(m->tensors, (size_t)m->cap_tensors * sizeof *m->tensors);
    }
    unet_tensor *t = &m->tensors[m->n_tensors];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->size = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->size *= (size_t)shape[i];
    }
    t->offset = m->n_params;
    t->init_scale = init_scale;
    m->n_params += t->size;
    return m->n_tensors++;
}

#define PREFIX_MAX 48 /* block prefixes ("up.7.block.63.nin_shortcut") */
/* Tensor names are "<prefix>.weight" / "<prefix>.bias"; prefixes are built by
 * unet_create and stay far below UNET_NAME_MAX - 8. */
static void add_conv(unet *m, const char *prefix, int cin, int cout, int k, float scale, int *pw, int *pb) {
    char name[UNET_NAME_MAX];
    int ws[4] = {cout, cin, k, k}, bs[1] = {cout};
    snprintf(name, sizeof name, "%s.weight", prefix);
    *pw = add_tensor(m, name, 4, ws, scale);
    snprintf(name, sizeof name, "%s.bias", prefix);
    *pb = add_tensor(m, name, 1, bs, 0.0f);
}

static void add_linear(unet *m, const char *prefix, int in, int out, float scale, int *pw, int *pb) {
    char name[UNET_NAME_MAX];
    int ws[2] = {out, in}, bs[1] = {out};
    snprintf(name, sizeof name, "%s.weight", prefix);
    *pw = add_tensor(m, name, 2, ws, scale);
    snprintf(name, sizeof name, "%s.bias", prefix);
    *pb = add_tensor(m, name, 1, bs, 0.0f);
}

/* GroupNorm affine: init_scale -1 marks gamma (init 1), 0 beta (init 0). */
static void add_norm(unet *m, const char *prefix, int c, int *pg, int *pb) {
    char name[UNET_NAME_MAX];
    int s[1] = {c};
    snprintf(name, sizeof name, "%s.weight", prefix);
    *pg = add_tensor(m, name, 1, s, UNET_INIT_ONES);
    snprintf(name, sizeof name, "%s.bias", prefix);
    *pb = add_tensor(m, name, 1, s, 0.0f);
}

static layer *new_layer(unet *m, layer_kind kind, int src, int cin, int cout, int H, int W) {
    if (m->n_layers == m->cap_layers) {
        m->cap_layers = m->cap_layers ? 2 * m->cap_layers : 32;
        m->layers = xrealloc(m->layers, (size_t)m->cap_layers * sizeof *m->layers);
    }
    layer *L = &m->layers[m->n_layers++];
    memset(L, 0, sizeof *L);
    L->kind = kind;
    L->src = src;
    L->skip = -1;
    L->cin = cin;
    L->cout = cout;
    L->H = L->Ho = H;
    L->W = L->Wo = W;
    return L;
}

static const float INIT_ZERO_SCALE = 1e-10f; /* the authors' init_scale=0 */

static int add_res(unet *m, const char *prefix, int src, int skip, int cin, int cout, int H, int W,
                   int *dropout_count) {
    layer *L = new_layer(m, L_RES, src, cin, cout, H, W);
    L->skip = skip;
    L->dropout_id = (*dropout_count)++;
    char name[UNET_NAME_MAX - 8]; /* prefix (< PREFIX_MAX) + ".nin_shortcut" */
    int tch = 4 * m->mc.ch;
    snprintf(name, sizeof name, "%s.norm1", prefix);
    add_norm(m, name, cin, &L->p[R_N1G], &L->p[R_N1B]);
    snprintf(name, sizeof name, "%s.conv1", prefix);
    add_conv(m, name, cin, cout, 3, 1.0f, &L->p[R_C1W], &L->p[R_C1B]);
    snprintf(name, sizeof name, "%s.temb_proj", prefix);
    add_linear(m, name, tch, cout, 1.0f, &L->p[R_TW], &L->p[R_TB]);
    snprintf(name, sizeof name, "%s.norm2", prefix);
    add_norm(m, name, cout, &L->p[R_N2G], &L->p[R_N2B]);
    snprintf(name, sizeof name, "%s.conv2", prefix);
    add_conv(m, name, cout, cout, 3, INIT_ZERO_SCALE, &L->p[R_C2W], &L->p[R_C2B]);
    if (cin != cout) {
        snprintf(name, sizeof name, "%s.nin_shortcut", prefix);
        add_conv(m, name, cin, cout, 1, 1.0f, &L->p[R_SW], &L->p[R_SB]);
    } else {
        L->p[R_SW] = L->p[R_SB] = -1;
    }
    return m->n_layers - 1;
}

static int add_attn(unet *m, const char *prefix, int src, int c, int H, int W) {
    layer *L = new_layer(m, L_ATTN, src, c, c, H, W);
    char name[UNET_NAME_MAX - 8];
    snprintf(name, sizeof name, "%s.norm", prefix);
    add_norm(m, name, c, &L->p[A_NG], &L->p[A_NB]);
    snprintf(name, sizeof name, "%s.q", prefix);
    add_conv(m, name, c, c, 1, 1.0f, &L->p[A_QW], &L->p[A_QB]);
    snprintf(name, sizeof name, "%s.k", prefix);
    add_conv(m, name, c, c, 1, 1.0f, &L->p[A_KW], &L->p[A_KB]);
    snprintf(name, sizeof name, "%s.v", prefix);
    add_conv(m, name, c, c, 1, 1.0f, &L->p[A_VW], &L->p[A_VB]);
    snprintf(name, sizeof name, "%s.proj_out", prefix);
    add_conv(m, name, c, c, 1, INIT_ZERO_SCALE, &L->p[A_OW], &L->p[A_OB]);
    return m->n_layers - 1;
}

static int is_attn_res(const model_config *mc, int res) {
    for (int i = 0; i < mc->num_attn; i++)
        if (mc->attn_resolutions[i] == res) return 1;
    return 0;
}

/* Sizes (floats) of each saved slot of a layer for N images. */
static void layer_slot_sizes(const layer *L, size_t N, size_t sz[S_COUNT]) {
    memset(sz, 0, S_COUNT * sizeof sz[0]);
    size_t in = N * (size_t)L->cin * (size_t)(L->H * L->W);
    size_t o = N * (size_t)L->cout * (size_t)(L->Ho * L->Wo);
    switch (L->kind) {
    case L_RES:
        if (L->skip >= 0) sz[S_CAT] = in;
        sz[S_H1] = sz[S_MASK] = o; /* GroupNorm outputs: never stored (gn_silu_conv2d) */
        if (L->cin != L->cout) sz[S_XS] = o;
        sz[S_MEAN1] = sz[S_RSTD1] = sz[S_MEAN2] = sz[S_RSTD2] = N * GN_GROUPS;
        sz[S_TP] = N * (size_t)L->cout;
        break;
    case L_ATTN:
        sz[S_G1] = sz[S_Q] = sz[S_K] = sz[S_V] = sz[S_O] = in;
        sz[S_ATT] = N * (size_t)(L->H * L->W) * (size_t)(L->H * L->W);
        sz[S_MEAN1] = sz[S_RSTD1] = N * GN_GROUPS;
        break;
    case L_UP:
        sz[S_UP] = o / (size_t)L->cout * (size_t)L->cin;
        break;
    case L_OUT:
        sz[S_MEAN1] = sz[S_RSTD1] = N * GN_GROUPS;
        break;
    default:
        break;
    }
}

static float *alloc_floats(unet *m, size_t n);

/* Training model: the slots a layer keeps from forward to backward. Everything else
 * is either recomputed by backward from what is kept (concat: a copy; GroupNorm
 * output: the same GroupNorm again; SiLU output; dropout mask: the counter-based
 * RNG; masked activation; upsampled input) or never read by backward (shortcut
 * output). Recomputing runs the same op on the same inputs, so it is bit-identical. */
static int slot_kept(const layer *L, int s) {
    switch (L->kind) {
    case L_RES:
        return s == S_H1 || s == S_MEAN1 || s == S_RSTD1 || s == S_MEAN2 || s == S_RSTD2 ||
               s == S_TP;
    case L_ATTN: /* 16x16 maps (or smaller): small, and kept whole */
        return 1;
    case L_OUT:
        return s == S_MEAN1 || s == S_RSTD1;
    default:
        return 0;
    }
}

/* Forward placement of a training layer's transient slots in the scratch buffers.
 * GroupNorm outputs, SiLU outputs and the masked activation of res blocks and the
 * output head are never stored (gn_silu_conv2d); the shortcut output (R1) is
 * written after both convs. The backward functions pick their own placement. */
static void point_transients(unet *m, layer *L) {
    float **R = m->scratch;
    switch (L->kind) {
    case L_RES:
        L->s[S_CAT] = R[0];
        L->s[S_MASK] = R[3];
        L->s[S_XS] = R[1];
        break;
    case L_UP:
        L->s[S_UP] = R[0];
        break;
    default:
        break;
    }
}

/* Places every layer's dout in one pool. Layer j's dout is live during backward
 * from the first consumer visited (the highest index reading j's output, first_use;
 * up blocks read skips from the down path, so those live long) down to layer j
 * itself. Intervals are placed first-fit in order of their start; two douts share
 * memory only if their intervals are disjoint. */
static void plan_dout_pool(unet *m) {
    int n = m->n_layers;
    size_t N = (size_t)m->max_batch;
    size_t *off = xcalloc((size_t)n, sizeof *off), *size = xcalloc((size_t)n, sizeof *size);
    int *placed = xcalloc((size_t)n, sizeof *placed), np = 0;
    size_t total = 0;
    for (int j = 0; j < n; j++) m->layers[j].first_use = -1;
    for (int i = 0; i < n; i++) {
        const layer *L = &m->layers[i];
        if (L->src >= 0 && m->layers[L->src].first_use < i) m->layers[L->src].first_use = i;
        if (L->skip >= 0 && m->layers[L->skip].first_use < i) m->layers[L->skip].first_use = i;
    }
    /* backward visits layers n-1..0: an interval [j, first_use] of layer indices */
    for (int c = n - 1; c >= 0; c--) {
        for (int j = 0; j < n; j++) {
            layer *L = &m->layers[j];
            if (L->first_use != c) continue;
            size[j] = (N * (size_t)L->cout * (size_t)(L->Ho * L->Wo) + 15) & ~(size_t)15;
            /* lowest offset not overlapping any placed dout whose interval meets [j, c] */
            size_t o = 0;
            for (int again = 1; again;) {
                again = 0;
                for (int k = 0; k < np; k++) {
                    int q = placed[k];
                    const layer *Q = &m->layers[q];
                    int meets = q <= c && j <= Q->first_use;
                    if (meets && o < off[q] + size[q] && off[q] < o + size[j]) {
                        o = off[q] + size[q];
                        again = 1;
                    }
                }
            }
            off[j] = o;
            placed[np++] = j;
            if (o + size[j] > total) total = o + size[j];
        }
    }
    m->dout_pool = alloc_floats(m, total ? total : 1);
    m->part_bytes[2] = (total ? total : 1) * sizeof(float);
    for (int k = 0; k < np; k++) m->layers[placed[k]].dout = m->dout_pool + off[placed[k]];
    free(off);
    free(size);
    free(placed);
}

static float *alloc_floats(unet *m, size_t n) {
    m->act_bytes += n * sizeof(float);
    return xfloats(n);
}

/* Convolutions per layer kind: a res block has a shortcut only when its
 * channel count changes. */
static int layer_n_convs(const layer *L) {
    return L->kind == L_RES ? (L->cin != L->cout ? 3 : 2) : 1;
}

/* The shape of conv k of layer L over N images. */
static conv_shape layer_conv_shape(const layer *L, int k, int N) {
    switch (L->kind) {
    case L_RES:
        if (k == K_CONV2) return conv_shape_make(N, L->cout, L->H, L->W, L->cout, 3, 1);
        if (k == K_SHORTCUT) return conv_shape_make(N, L->cin, L->H, L->W, L->cout, 1, 1);
        return conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 1);
    case L_ATTN: return conv_shape_make(N, L->cin, L->H, L->W, L->cout, 1, 1);
    case L_DOWN: return conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 2);
    case L_UP: return conv_shape_make(N, L->cin, L->Ho, L->Wo, L->cout, 3, 1);
    default: return conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 1); /* conv_in, out */
    }
}

/* Plans the convolutions of layer L from the model's options; returns the
 * workspace (floats) that they, and attention, need at max_batch images. */
static size_t plan_convs(unet *m, layer *L) {
    size_t w = 0;
    const ops_precision prec = m->opt.precision;
    conv_algo_opts co = m->opt.conv;
    co.precision = prec;
    for (int k = 0; k < layer_n_convs(L); k++) {
        const conv_shape cs = layer_conv_shape(L, k, m->max_batch);
        L->plan[k] = conv_plan_make(&cs, &co);
        L->plan[k].state = conv_state_create(&cs, &L->plan[k]);
        const size_t wk = conv_workspace_floats(&cs, &L->plan[k]);
        if (wk > w) w = wk;
    }
    if (L->kind == L_ATTN) {
        const size_t wa = attention_workspace_floats(L->cin, L->H * L->W, prec);
        if (wa > w) w = wa;
    }
    if (L->kind == L_RES) { /* temb_proj */
        const size_t wl = linear_workspace_floats(m->max_batch, 4 * m->mc.ch, L->cout, prec);
        if (wl > w) w = wl;
    }
    return w;
}

static void allocate(unet *m) {
    size_t N = (size_t)m->max_batch;
    size_t shared_sz[S_COUNT] = {0};
    m->max_act = 0;
    m->ws_floats = 0;
    for (int i = 0; i < m->n_layers; i++) {
        layer *L = &m->layers[i];
        size_t sz[S_COUNT];
        layer_slot_sizes(L, N, sz);
        size_t in = N * (size_t)L->cin * (size_t)(L->H * L->W);
        size_t o = N * (size_t)L->cout * (size_t)(L->Ho * L->Wo);
        if (in > m->max_act) m->max_act = in;
        if (o > m->max_act) m->max_act = o;
        if (sz[S_UP] > m->max_act) m->max_act = sz[S_UP];
        for (int s = 0; s < S_COUNT; s++) {
            if (m->with_backward) {
                if (sz[s] && slot_kept(L, s)) {
                    L->s[s] = alloc_floats(m, sz[s]);
                    m->part_bytes[1] += sz[s] * sizeof(float);
                }
            } else if (sz[s] > shared_sz[s]) {
                shared_sz[s] = sz[s];
            }
        }
        if (L->kind != L_OUT) {
            L->out = alloc_floats(m, o);
            m->part_bytes[0] += o * sizeof(float);
        }
        size_t w = plan_convs(m, L);
        if (w > m->ws_floats) m->ws_floats = w;
    }
    if (!m->with_backward) {
        for (int s = 0; s < S_COUNT; s++)
            if (shared_sz[s]) m->shared[s] = alloc_floats(m, shared_sz[s]);
        for (int i = 0; i < m->n_layers; i++)
            for (int s = 0; s < S_COUNT; s++) m->layers[i].s[s] = m->shared[s];
    }
    int ch = m->mc.ch;
    for (int k = 0; k < 2; k++) { /* the timestep MLP's dense0 (ch -> 4ch), dense1 */
        const size_t wl = linear_workspace_floats(m->max_batch, k ? 4 * ch : ch, 4 * ch,
                                                  m->opt.precision);
        if (wl > m->ws_floats) m->ws_floats = wl;
    }
    m->emb = alloc_floats(m, N * (size_t)ch);
    m->d0 = alloc_floats(m, N * 4 * (size_t)ch);
    m->a0 = alloc_floats(m, N * 4 * (size_t)ch);
    m->d1 = alloc_floats(m, N * 4 * (size_t)ch);
    m->ts = alloc_floats(m, N * 4 * (size_t)ch);
    m->y = xcalloc(N, sizeof *m->y);
    m->act_bytes += N * sizeof *m->y;
    if (m->with_backward) {
        m->dts = alloc_floats(m, N * 4 * (size_t)ch);
        for (int g = 0; g < NSCRATCH; g++) m->scratch[g] = alloc_floats(m, m->max_act);
        m->part_bytes[3] = NSCRATCH * m->max_act * sizeof(float);
        m->ids = xcalloc(N, sizeof *m->ids);
        m->act_bytes += N * sizeof *m->ids;
        for (int i = 0; i < m->n_layers; i++) point_transients(m, &m->layers[i]);
        plan_dout_pool(m);
    }
    m->ws = alloc_floats(m, m->ws_floats ? m->ws_floats : 1);
    m->part_bytes[4] = (m->ws_floats ? m->ws_floats : 1) * sizeof(float);
}

static double conv_macs(int cin, int cout, int k, int Ho, int Wo) {
    return (double)cin * cout * k * k * Ho * Wo;
}

static void count_macs(unet *m) {
    double macs = 0;
    int ch = m->mc.ch;
    macs += (double)ch * 4 * ch + 16.0 * ch * ch;
    for (int i = 0; i < m->n_layers; i++) {
        const layer *L = &m->layers[i];
        switch (L->kind) {
        case L_CONV_IN: case L_UP: case L_OUT:
            macs += conv_macs(L->cin, L->cout, 3, L->Ho, L->Wo);
            break;
        case L_DOWN:
            macs += conv_macs(L->cin, L->cout, 3, L->Ho, L->Wo);
            break;
        case L_RES:
            macs += conv_macs(L->cin, L->cout, 3, L->Ho, L->Wo);
            macs += conv_macs(L->cout, L->cout, 3, L->Ho, L->Wo);
            macs += 4.0 * ch * L->cout;
            if (L->cin != L->cout) macs += conv_macs(L->cin, L->cout, 1, L->Ho, L->Wo);
            break;
        case L_ATTN: {
            double hw = (double)L->H * L->W;
            macs += 4 * conv_macs(L->cin, L->cin, 1, L->H, L->W);
            macs += 2 * hw * hw * L->cin;
            break;
        }
        }
    }
    m->macs = macs;
}

/* ---------- the model's rules (unet_check_config) ---------- */

__attribute__((format(printf, 3, 4)))
static int cfg_fail(unet_config_error *e, const char *field, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->why, sizeof e->why, fmt, ap);
    va_end(ap);
    e->field = field;
    return err_set("model.%s: %s", field, e->why);
}

static int range_fail(unet_config_error *e, const char *field, long v, long lo, long hi) {
    return cfg_fail(e, field, "%ld is out of range (must be %ld..%ld)", v, lo, hi);
}

/* Every field on its own, then the rules between them. List lengths first: they
 * bound the loops over ch_mult and attn_resolutions. */
static int check_fields(const model_config *mc, unet_config_error *e) {
    if (mc->num_levels < 1 || mc->num_levels > UNET_MAX_LEVELS)
        return cfg_fail(e, "ch_mult", "has %d entries (must have 1..%d)", mc->num_levels,
                        UNET_MAX_LEVELS);
    if (mc->num_attn < 0 || mc->num_attn > UNET_MAX_ATTN)
        return cfg_fail(e, "attn_resolutions", "has %d entries (must have 0..%d)", mc->num_attn,
                        UNET_MAX_ATTN);
    if (mc->image_size < UNET_MIN_IMAGE_SIZE || mc->image_size > UNET_MAX_IMAGE_SIZE)
        return range_fail(e, "image_size", mc->image_size, UNET_MIN_IMAGE_SIZE, UNET_MAX_IMAGE_SIZE);
    if (mc->in_channels < 1 || mc->in_channels > UNET_MAX_IN_CHANNELS)
        return range_fail(e, "in_channels", mc->in_channels, 1, UNET_MAX_IN_CHANNELS);
    if (mc->ch < UNET_MIN_CH || mc->ch > UNET_MAX_CH)
        return range_fail(e, "ch", mc->ch, UNET_MIN_CH, UNET_MAX_CH);
    if (mc->ch % UNET_GN_GROUPS)
        return cfg_fail(e, "ch", "%d is not a multiple of %d (GroupNorm uses %d groups)", mc->ch,
                        UNET_GN_GROUPS, UNET_GN_GROUPS);
    for (int i = 0; i < mc->num_levels; i++)
        if (mc->ch_mult[i] < 1 || mc->ch_mult[i] > UNET_MAX_CH_MULT)
            return cfg_fail(e, "ch_mult", "entry %d: %d is out of range (must be 1..%d)", i + 1,
                            mc->ch_mult[i], UNET_MAX_CH_MULT);
    if (mc->num_res_blocks < 1 || mc->num_res_blocks > UNET_MAX_RES_BLOCKS)
        return range_fail(e, "num_res_blocks", mc->num_res_blocks, 1, UNET_MAX_RES_BLOCKS);
    if (mc->num_classes < 0 || mc->num_classes > UNET_MAX_CLASSES)
        return range_fail(e, "num_classes", mc->num_classes, 0, UNET_MAX_CLASSES);
    if (!(mc->dropout >= 0 && mc->dropout < 1))
        return cfg_fail(e, "dropout", "%g is out of range (must be [0, 1))", mc->dropout);
    int down = 1 << (mc->num_levels - 1);
    if (mc->image_size % down)
        return cfg_fail(e, "image_size", "image_size %d is not divisible by 2^(levels-1) = %d "
                        "(ch_mult has %d levels)", mc->image_size, down, mc->num_levels);
    for (int a = 0; a < mc->num_attn; a++) {
        int r = mc->attn_resolutions[a], found = 0;
        char have[128];
        size_t n = 0;
        have[0] = '\0';
        for (int i = 0; i < mc->num_levels; i++) {
            if (mc->image_size >> i == r) found = 1;
            if (n < sizeof have)
                n += (size_t)snprintf(have + n, sizeof have - n, "%s%d", i ? ", " : "",
                                      mc->image_size >> i);
        }
        if (!found)
            return cfg_fail(e, "attn_resolutions", "%d is not a resolution of this U-Net (it has %s)",
                            r, have);
        for (int b = 0; b < a; b++)
            if (mc->attn_resolutions[b] == r)
                return cfg_fail(e, "attn_resolutions", "%d is listed twice", r);
    }
    return 0;
}

/* Floats one layer holds per image: its input, its output, the attention matrix,
 * the upsampled input. Each is bounded by UNET_MAX_LAYER_FLOATS (check_sizes), so
 * the sums below cannot wrap. */
static void layer_floats(const layer *L, size_t f[4]) {
    size_t hw = (size_t)L->H * (size_t)L->W, hwo = (size_t)L->Ho * (size_t)L->Wo;
    f[0] = (size_t)L->cin * hw;
    f[1] = (size_t)L->cout * hwo;
    f[2] = L->kind == L_ATTN ? hw * hw : 0;
    f[3] = L->kind == L_UP ? (size_t)L->cin * hwo : 0;
}

/* A bound on the activation bytes of the model built for N images: every layer's
 * input, twice its output (output and gradient), its attention matrix and
 * upsampled input, 2 + NSCRATCH buffers of the largest layer, and the timestep
 * MLP. Above what allocate() takes, so that its sums (unchecked) cannot wrap
 * when this is below UNET_MAX_ACTIVATION_BYTES. -1 when it overflows size_t. */
static int activation_estimate(const unet *m, size_t N, size_t *bytes) {
    size_t per = 0, largest = 0, f[4];
    for (int i = 0; i < m->n_layers; i++) {
        layer_floats(&m->layers[i], f);
        for (int k = 0; k < 4; k++) {
            if (f[k] > largest) largest = f[k];
            if (size_add(per, k == 1 ? 2 * f[k] : f[k], &per)) return -1;
        }
    }
    size_t extra;
    if (size_mul(largest, 2 + NSCRATCH, &extra) || size_add(per, extra, &per) ||
        size_add(per, 24 * (size_t)m->mc.ch + 64, &per))
        return -1;
    return size_mul(per, N, &per) || size_mul(per, sizeof(float), bytes) ? -1 : 0;
}

/* The sizes the structure implies (m holds the parameter table and layers only). */
static int check_sizes(const unet *m, unet_config_error *e) {
    if (m->n_params > UNET_MAX_PARAMS)
        return cfg_fail(e, "ch", "the model would have %zu parameters, more than the model's "
                        "limit of %zu (ch, ch_mult and num_res_blocks set its size)",
                        m->n_params, UNET_MAX_PARAMS);
    for (int i = 0; i < m->n_layers; i++) {
        const layer *L = &m->layers[i];
        size_t f[4];
        layer_floats(L, f);
        if (f[2] > UNET_MAX_LAYER_FLOATS)
            return cfg_fail(e, "attn_resolutions", "attention at %dx%d needs a %zu-float matrix "
                            "per image, more than the model's limit of %zu", L->H, L->W, f[2],
                            UNET_MAX_LAYER_FLOATS);
        for (int k = 0; k < 4; k++)
            if (f[k] > UNET_MAX_LAYER_FLOATS)
                return cfg_fail(e, "image_size", "a %dx%d layer of %d channels holds %zu floats per "
                                "image, more than the model's limit of %zu", L->Ho, L->Wo,
                                k == 1 ? L->cout : L->cin, f[k], UNET_MAX_LAYER_FLOATS);
    }
    size_t bytes;
    if (activation_estimate(m, 1, &bytes) || bytes > UNET_MAX_ACTIVATION_BYTES)
        return cfg_fail(e, "image_size", "the activations of one image would take more than "
                        "%zu bytes (the model's limit)", UNET_MAX_ACTIVATION_BYTES);
    return 0;
}

/* The parameter table and layer list of m->mc (checked by check_fields): no
 * activation is allocated here. The skip stack is sized from the config. */
static int build_tables(unet *m) {
    const model_config *mc = &m->mc;
    int ch = mc->ch, dropout_count = 0;
    char name[PREFIX_MAX];

    add_linear(m, "temb.dense0", ch, 4 * ch, 1.0f, &m->p_temb[0], &m->p_temb[1]);
    add_linear(m, "temb.dense1", 4 * ch, 4 * ch, 1.0f, &m->p_temb[2], &m->p_temb[3]);
    m->p_label = -1;
    if (mc->num_classes > 0) { /* K classes and the null label, added after the time MLP */
        int ls[2] = {mc->num_classes + 1, 4 * ch};
        m->p_label = add_tensor(m, "label_emb.weight", 2, ls, UNET_INIT_NORMAL);
    }

    int S = mc->image_size;
    layer *L = new_layer(m, L_CONV_IN, -1, mc->in_channels, ch, S, S);
    add_conv(m, "conv_in", mc->in_channels, ch, 3, 1.0f, &L->p[C_W], &L->p[C_B]);
    /* conv_in, every down res block (or its attention) and every downsample */
    int cap_hs = 1 + mc->num_levels * mc->num_res_blocks + mc->num_levels - 1, nhs = 0;
    int *hs = xmalloc((size_t)cap_hs * sizeof *hs);
    hs[nhs++] = 0;
    int cur = 0, cur_ch = ch, res = S;

    for (int lvl = 0; lvl < mc->num_levels; lvl++) {
        int out_ch = ch * mc->ch_mult[lvl];
        for (int b = 0; b < mc->num_res_blocks; b++) {
            snprintf(name, sizeof name, "down.%d.block.%d", lvl, b);
            cur = add_res(m, name, cur, -1, cur_ch, out_ch, res, res, &dropout_count);
            cur_ch = out_ch;
            if (is_attn_res(mc, res)) {
                snprintf(name, sizeof name, "down.%d.attn.%d", lvl, b);
                cur = add_attn(m, name, cur, cur_ch, res, res);
            }
            hs[nhs++] = cur;
        }
        if (lvl != mc->num_levels - 1) {
            L = new_layer(m, L_DOWN, cur, cur_ch, cur_ch, res, res);
            L->Ho = L->Wo = (res + 1) / 2;
            snprintf(name, sizeof name, "down.%d.downsample.conv", lvl);
            add_conv(m, name, cur_ch, cur_ch, 3, 1.0f, &L->p[C_W], &L->p[C_B]);
            cur = m->n_layers - 1;
            res = (res + 1) / 2;
            hs[nhs++] = cur;
        }
    }
    cur = add_res(m, "mid.block_1", cur, -1, cur_ch, cur_ch, res, res, &dropout_count);
    cur = add_attn(m, "mid.attn_1", cur, cur_ch, res, res);
    cur = add_res(m, "mid.block_2", cur, -1, cur_ch, cur_ch, res, res, &dropout_count);

    for (int lvl = mc->num_levels - 1; lvl >= 0; lvl--) {
        int out_ch = ch * mc->ch_mult[lvl];
        for (int b = 0; b < mc->num_res_blocks + 1; b++) {
            int skip = hs[--nhs];
            int skip_ch = m->layers[skip].cout;
            snprintf(name, sizeof name, "up.%d.block.%d", lvl, b);
            cur = add_res(m, name, cur, skip, cur_ch + skip_ch, out_ch, res, res, &dropout_count);
            cur_ch = out_ch;
            if (is_attn_res(mc, res)) {
                snprintf(name, sizeof name, "up.%d.attn.%d", lvl, b);
                cur = add_attn(m, name, cur, cur_ch, res, res);
            }
        }
        if (lvl != 0) {
            L = new_layer(m, L_UP, cur, cur_ch, cur_ch, res, res);
            L->Ho = L->Wo = 2 * res;
            snprintf(name, sizeof name, "up.%d.upsample.conv", lvl);
            add_conv(m, name, cur_ch, cur_ch, 3, 1.0f, &L->p[C_W], &L->p[C_B]);
            cur = m->n_layers - 1;
            res *= 2;
        }
    }
    free(hs);
    if (nhs != 0 || res != S)
        return err_set("model.image_size: %d does not halve evenly through %d levels", S,
                       mc->num_levels);
    const int out_ch = mc->in_channels * (mc->learn_sigma ? 2 : 1); /* eps, then v */
    L = new_layer(m, L_OUT, cur, cur_ch, out_ch, res, res);
    add_norm(m, "norm_out", cur_ch, &L->p[O_NG], &L->p[O_NB]);
    add_conv(m, "conv_out", cur_ch, out_ch, 3, INIT_ZERO_SCALE, &L->p[O_W], &L->p[O_B]);
    return 0;
}

int unet_check_config(const model_config *mc, unet_config_error *e) {
    unet_config_error local;
    if (!e) e = &local;
    if (!mc) return cfg_fail(e, "ch", "no model config given");
    if (check_fields(mc, e)) return -1;
    unet *m = xcalloc(1, sizeof *m);
    m->mc = *mc;
    m->max_batch = 1;
    int rc = build_tables(m);
    if (rc) {
        e->field = "image_size";
        snprintf(e->why, sizeof e->why, "%s", err_msg());
    } else {
        rc = check_sizes(m, e);
    }
    unet_free(m);
    return rc;
}

static unet *create(const model_config *mc, int max_batch, int with_backward,
                    const unet_options *opt) {
    if (max_batch < 1) {
        err_set("unet: max_batch must be >= 1, got %d", max_batch);
        return NULL;
    }
    unet_config_error e;
    if (check_fields(mc, &e)) return NULL;
    if (!mc->resamp_with_conv) {
        err_set("model.resamp_with_conv: false (average-pool resampling) is not supported; "
                "the paper's models use true");
        return NULL;
    }
    unet *m = xcalloc(1, sizeof *m);
    m->mc = *mc;
    m->max_batch = max_batch;
    m->with_backward = with_backward;
    m->opt = *opt;
    size_t bytes;
    if (build_tables(m) || check_sizes(m, &e)) {
        unet_free(m);
        return NULL;
    }
    if (activation_estimate(m, (size_t)max_batch, &bytes) || bytes > UNET_MAX_ACTIVATION_BYTES) {
        err_set("unet: the activations for a batch of %d images would take more than %zu bytes "
                "(the model's limit); use a smaller batch", max_batch, UNET_MAX_ACTIVATION_BYTES);
        unet_free(m);
        return NULL;
    }

    count_macs(m);
    /* Lanes only when every thread gets one: with fewer lanes than threads the
     * other threads would idle, where one model with every op split over all the
     * threads keeps them busy. Every lane but the first holds a gradient buffer. */
    int lanes = opt->lanes;
    if (lanes > max_batch ||
        (with_backward && (size_t)(lanes - 1) * m->n_params * sizeof(float) > UNET_LANE_GRAD_BYTES))
        lanes = 1;
    if (lanes <= 1) {
        m->nlanes = 1;
        allocate(m);
        return m;
    }
    m->nlanes = lanes;
    m->lane = xcalloc((size_t)lanes, sizeof *m->lane);
    m->lane_grads = xcalloc((size_t)lanes, sizeof *m->lane_grads);
    m->lane_start = xcalloc((size_t)lanes + 1, sizeof *m->lane_start);
    int per = (max_batch + lanes - 1) / lanes;
    for (int l = 0; l < lanes; l++) {
        unet_options one = *opt;
        one.lanes = 1;
        m->lane[l] = create(mc, per, with_backward, &one);
        if (!m->lane[l]) {
            unet_free(m);
            return NULL;
        }
        m->act_bytes += m->lane[l]->act_bytes;
        for (int k = 0; k < 5; k++) m->part_bytes[k] += m->lane[l]->part_bytes[k];
        if (with_backward && l > 0) {
            m->lane_grads[l] = alloc_floats(m, m->n_params);
            m->part_bytes[4] += m->n_params * sizeof(float);
        }
    }
    return m;
}

unet_options unet_options_default(void) {
    return (unet_options){.lanes = 0, .prepare_budget = UNET_PREPARE_AUTO};
}

unet *unet_create(const model_config *mc, int max_batch, int with_backward,
                  const unet_options *opt) {
    unet_options o = opt ? *opt : unet_options_default();
    if (o.lanes < 0) {
        err_set("unet: lanes must be >= 0 (0: one per OpenMP thread), got %d", o.lanes);
        return NULL;
    }
    if (o.lanes == 0) o.lanes = omp_get_max_threads() < 1 ? 1 : omp_get_max_threads();
    const char *how;
    if (o.precision == OPS_BF16 && ops_bf16_support(&how) == OPS_BF16_NONE) {
        err_set("unet: precision bf16 is %s; use precision fp32", how);
        return NULL;
    }
    return create(mc, max_batch, with_backward, &o);
}

void unet_describe_plans(const unet *m, char *buf, size_t cap) {
    if (!cap) return;
    buf[0] = '\0';
    const unet *r = m->nlanes > 1 ? m->lane[0] : m; /* the lanes hold the plans */
    const char *how = "";
    if (m->opt.precision == OPS_BF16) ops_bf16_support(&how);
    int n0 = snprintf(buf, cap, "precision %s%s%s%s; linear and attention GEMMs by %s; "
                      "convolutions: ", ops_precision_names[m->opt.precision], *how ? " (" : "",
                      how, *how ? ")" : "",
                      m->opt.precision == OPS_BF16 ? "oneDNN bf16 (fp32 accumulation)"
                                                   : "OpenBLAS sgemm");
    if (n0 < 0 || (size_t)n0 >= cap) return;
    size_t len = (size_t)n0;
    for (int i = 0; i < r->n_layers; i++) {
        const layer *L = &r->layers[i];
        for (int k = 0; k < layer_n_convs(L); k++) {
            const conv_shape cs = layer_conv_shape(L, k, 1);
            char e[128], rows[40] = "";
            const int cr = conv_plan_chunk_rows(&L->plan[k]);
            if (cr) snprintf(rows, sizeof rows, " in chunks of %d rows", cr);
            snprintf(e, sizeof e, "%d->%d %dx%d k%d s%d: %s%s", cs.Cin, cs.Cout, cs.H, cs.W, cs.k,
                     cs.stride, conv_plan_name(&L->plan[k]), rows);
            if (strstr(buf + n0, e)) continue; /* listed already */
            const int n = snprintf(buf + len, cap - len, "%s%s", len > (size_t)n0 ? "; " : "",
                                   e);
            if (n < 0 || (size_t)n >= cap - len) {
                if (cap > 4) snprintf(buf + cap - 4, 4, "...");
                return;
            }
            len += (size_t)n;
        }
    }
}

int unet_num_lanes(const unet *m) { return m->nlanes; }
ops_precision unet_precision(const unet *m) { return m->opt.precision; }

void unet_free(unet *m) {
    if (!m) return;
    unet_unprepare(m);
    if (m->lane) {
        for (int l = 0; l < m->nlanes; l++) {
            unet_free(m->lane[l]);
            free(m->lane_grads[l]);
        }
        free(m->lane);
        free(m->lane_grads);
        free(m->lane_start);
        free(m->mask_buf);
    }
    for (int i = 0; i < m->n_layers; i++) {
        layer *L = &m->layers[i];
        for (int k = 0; k < K_COUNT; k++) conv_state_free(&L->plan[k]);
        free(L->out);
        if (m->with_backward)
            for (int s = 0; s < S_COUNT; s++)
                if (slot_kept(L, s)) free(L->s[s]);
    }
    free(m->dout_pool);
    free(m->ids);
    for (int s = 0; s < S_COUNT; s++) free(m->shared[s]);
    free(m->y);
    free(m->emb); free(m->d0); free(m->a0); free(m->d1); free(m->ts); free(m->dts);
    for (int g = 0; g < NSCRATCH; g++) free(m->scratch[g]);
    free(m->ws);
    free(m->layers);
    free(m->tensors);
    free(m);
}

size_t unet_num_params(const unet *m) { return m->n_params; }
int unet_num_tensors(const unet *m) { return m->n_tensors; }
const unet_tensor *unet_tensors(const unet *m) { return m->tensors; }
int unet_max_batch(const unet *m) { return m->max_batch; }
int unet_out_channels(const unet *m) { return m->mc.in_channels * (m->mc.learn_sigma ? 2 : 1); }
int unet_num_classes(const unet *m) { return m->mc.num_classes; }
size_t unet_activation_bytes(const unet *m) { return m->act_bytes; }
double unet_forward_macs(const unet *m) { return m->macs; }

int unet_find_tensor(const unet *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return i;
    return -1;
}

/* ---------- initialisation ---------- */

void unet_init(const unet *m, float *params, uint64_t seed) {
    for (int i = 0; i < m->n_tensors; i++) {
        const unet_tensor *t = &m->tensors[i];
        float *p = params + t->offset;
        if (t->init_scale == UNET_INIT_ONES) {
            for (size_t j = 0; j < t->size; j++) p[j] = 1.0f;
        } else if (t->init_scale == UNET_INIT_NORMAL) {
            rng_key key = {seed, 0, (uint64_t)i, RNG_PURPOSE_INIT};
            rng_normal(&key, p, t->size);
        } else if (t->init_scale == 0) {
            memset(p, 0, t->size * sizeof *p);
        } else {
            /* variance_scaling(scale, 'fan_avg', 'uniform'): limit = sqrt(3 scale / fan_avg),
             * fans include the receptive field (k*k) for convolutions. */
            double receptive = t->ndim == 4 ? (double)t->shape[2] * t->shape[3] : 1.0;
            double fan_in = t->shape[1] * receptive, fan_out = t->shape[0] * receptive;
            double limit = sqrt(3.0 * t->init_scale / ((fan_in + fan_out) / 2.0));
            rng_key key = {seed, 0, (uint64_t)i, RNG_PURPOSE_INIT};
            rng_uniform(&key, p, t->size);
            for (size_t j = 0; j < t->size; j++) p[j] = (float)((2.0 * p[j] - 1.0) * limit);
        }
    }
}

/* ---------- forward ---------- */

#define PW(L, slot) (params + m->tensors[(L)->p[slot]].offset)
#define GW(L, slot) (grads + m->tensors[(L)->p[slot]].offset)

static const float *layer_input(const unet *m, const layer *L) {
    return L->src < 0 ? m->x : m->layers[L->src].out;
}

static void make_dropout_mask(unet *m, const layer *L, float *mask, int N, size_t per_sample) {
    PROF_SCOPE(PROF_OTHER);
    double p = m->mc.dropout;
    float keep = (float)(1.0 / (1.0 - p));
    /* each image has its own RNG stream: parallel and independent of the split */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        rng_key key = {m->rng.seed, m->rng.step, m->rng.sample_ids[n],
                       (uint32_t)(RNG_PURPOSE_DROPOUT + L->dropout_id)};
        float *mk = mask + (size_t)n * per_sample;
        rng_uniform(&key, mk, per_sample);
        for (size_t j = 0; j < per_sample; j++) mk[j] = mk[j] < p ? 0.0f : keep;
    }
}

/* Plan k of layer L for a forward over params: with its prepared kernels when
 * the model is prepared over this params buffer (unet_prepare). */
static conv_plan fwd_plan(const unet *m, const layer *L, int k, const float *params) {
    conv_plan p = L->plan[k];
    if (m->prep && m->prep_params == params && k <= K_CONV2)
        p.prep = m->prep[2 * (L - m->layers) + k];
    return p;
}

static void res_forward(unet *m, layer *L, const float *params, int N) {
    int HW = L->H * L->W;
    const float *x = layer_input(m, L);
    if (L->skip >= 0) {
        const layer *A = &m->layers[L->src], *B = &m->layers[L->skip];
        concat_forward(L->s[S_CAT], A->out, B->out, N, A->cout, B->cout, HW);
        x = L->s[S_CAT];
    }
    size_t o = (size_t)N * L->cout * HW;
    /* GroupNorm -> SiLU -> conv fused: the normalised values are never stored */
    groupnorm_stats(L->s[S_MEAN1], L->s[S_RSTD1], x, N, L->cin, HW, GN_GROUPS, GN_EPS);
    const gn_apply gn1 = {L->s[S_MEAN1], L->s[S_RSTD1], PW(L, R_N1G), PW(L, R_N1B), GN_GROUPS};
    conv_shape c1 = conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 1);
    const conv_plan p1 = fwd_plan(m, L, K_MAIN, params);
    gn_silu_conv2d_forward(L->s[S_H1], x, &gn1, NULL, PW(L, R_C1W), PW(L, R_C1B), &c1, &p1,
                           m->ws);
    linear_forward(L->s[S_TP], m->ts, PW(L, R_TW), PW(L, R_TB), N, 4 * m->mc.ch, L->cout,
                   m->opt.precision, m->ws);
    add_channel_forward(L->s[S_H1], L->s[S_H1], L->s[S_TP], N, L->cout, HW);
    groupnorm_stats(L->s[S_MEAN2], L->s[S_RSTD2], L->s[S_H1], N, L->cout, HW, GN_GROUPS, GN_EPS);
    const gn_apply gn2 = {L->s[S_MEAN2], L->s[S_RSTD2], PW(L, R_N2G), PW(L, R_N2B), GN_GROUPS};
    const float *mask = NULL;
    if (m->use_dropout) {
        make_dropout_mask(m, L, L->s[S_MASK], N, (size_t)L->cout * HW);
        mask = L->s[S_MASK];
    }
    conv_shape c2 = conv_shape_make(N, L->cout, L->H, L->W, L->cout, 3, 1);
    const conv_plan p2 = fwd_plan(m, L, K_CONV2, params);
    gn_silu_conv2d_forward(L->out, L->s[S_H1], &gn2, mask, PW(L, R_C2W), PW(L, R_C2B), &c2,
                           &p2, m->ws);
    if (L->cin != L->cout) {
        conv_shape cs = conv_shape_make(N, L->cin, L->H, L->W, L->cout, 1, 1);
        conv2d_forward(L->s[S_XS], x, PW(L, R_SW), PW(L, R_SB), &cs, &L->plan[K_SHORTCUT],
                       m->ws);
        add_forward(L->out, L->out, L->s[S_XS], o);
    } else {
        add_forward(L->out, L->out, x, o);
    }
}

static void attn_forward(unet *m, layer *L, const float *params, int N) {
    int C = L->cin, HW = L->H * L->W;
    const float *x = layer_input(m, L);
    groupnorm_forward(L->s[S_G1], L->s[S_MEAN1], L->s[S_RSTD1], x, PW(L, A_NG), PW(L, A_NB), N, C,
                      HW, GN_GROUPS, GN_EPS);
    conv_shape cs = conv_shape_make(N, C, L->H, L->W, C, 1, 1);
    conv2d_forward(L->s[S_Q], L->s[S_G1], PW(L, A_QW), PW(L, A_QB), &cs, &L->plan[K_MAIN],
                   m->ws);
    conv2d_forward(L->s[S_K], L->s[S_G1], PW(L, A_KW), PW(L, A_KB), &cs, &L->plan[K_MAIN],
                   m->ws);
    conv2d_forward(L->s[S_V], L->s[S_G1], PW(L, A_VW), PW(L, A_VB), &cs, &L->plan[K_MAIN],
                   m->ws);
    attention_forward(L->s[S_O], L->s[S_ATT], L->s[S_Q], L->s[S_K], L->s[S_V], N, C, HW,
                      m->opt.precision, m->ws);
    conv2d_forward(L->out, L->s[S_O], PW(L, A_OW), PW(L, A_OB), &cs, &L->plan[K_MAIN], m->ws);
    add_forward(L->out, L->out, x, (size_t)N * C * HW);
}

/* The slices of a batch of N over the lanes: as even as possible, at most nlanes. */
static void split_lanes(unet *m, int N) {
    int k = N < m->nlanes ? N : m->nlanes;
    m->active_lanes = k;
    for (int l = 0; l <= k; l++) m->lane_start[l] = (int)((long)N * l / k);
}

/* The end of layer i's parameters (layers add their tensors in forward order):
 * the forward hook's "ready up to" before layer i runs; i = -1 is the timestep MLP. */
static size_t layer_params_end(const unet *m, int i) {
    return i + 1 < m->n_layers ? m->tensors[m->layers[i + 1].p[0]].offset : m->n_params;
}

/* The labels of a forward into m->y: y, or the null label everywhere for NULL. */
static void set_labels(unet *m, const int *y, int N) {
    const int K = m->mc.num_classes;
    for (int n = 0; n < N; n++) {
        int v = y ? y[n] : K;
        if (v < 0 || v > K || (K == 0 && y)) {
            log_warn("unet_forward: label %d of image %d is out of range (num_classes %d: "
                     "0..%d, %d the null label)", v, n, K, K, K);
            abort();
        }
        m->y[n] = v;
    }
}

void unet_forward(unet *m, const float *params, const float *x, const int *t, const int *y,
                  int N, const unet_rng *rng, float *out) {
    if (m->nlanes > 1) {
        /* the lanes run every layer on their own threads: all parameters first */
        if (m->fwd_hook) m->fwd_hook(m->fwd_hook_ctx, m->n_params);
        m->last_N = N;
        split_lanes(m, N);
        const size_t hw = (size_t)m->mc.image_size * m->mc.image_size;
        const size_t img = (size_t)m->mc.in_channels * hw, oimg = (size_t)unet_out_channels(m) * hw;
#pragma omp parallel for num_threads(m->active_lanes) schedule(static, 1)
        for (int l = 0; l < m->active_lanes; l++) {
            const int n0 = m->lane_start[l], n = m->lane_start[l + 1] - n0;
            unet_rng r;
            if (rng) {
                r = *rng;
                r.sample_ids = rng->sample_ids + n0;
            }
            unet_forward(m->lane[l], params, x + (size_t)n0 * img, t + n0, y ? y + n0 : NULL, n,
                         rng ? &r : NULL, out + (size_t)n0 * oimg);
        }
        return;
    }
    m->x = x;
    m->last_N = N;
    m->use_dropout = rng != NULL && m->mc.dropout > 0;
    if (rng) m->rng = *rng;
    if (m->use_dropout && m->ids) {
        /* backward regenerates the masks: keep the ids, not the caller's pointer */
        memcpy(m->ids, rng->sample_ids, (size_t)N * sizeof *m->ids);
        m->rng.sample_ids = m->ids;
    }
    int ch = m->mc.ch;
    if (m->fwd_hook) m->fwd_hook(m->fwd_hook_ctx, layer_params_end(m, -1));
    timestep_embedding_forward(m->emb, t, N, ch);
    linear_forward(m->d0, m->emb, params + m->tensors[m->p_temb[0]].offset,
                   params + m->tensors[m->p_temb[1]].offset, N, ch, 4 * ch, m->opt.precision,
                   m->ws);
    silu_forward(m->a0, m->d0, (size_t)N * 4 * ch);
    linear_forward(m->d1, m->a0, params + m->tensors[m->p_temb[2]].offset,
                   params + m->tensors[m->p_temb[3]].offset, N, 4 * ch, 4 * ch,
                   m->opt.precision, m->ws);
    set_labels(m, y, N);
    if (m->p_label >= 0)
        label_embedding_forward(m->d1, m->d1, params + m->tensors[m->p_label].offset, m->y, N,
                                4 * ch);

    silu_forward(m->ts, m->d1, (size_t)N * 4 * ch);

    for (int i = 0; i < m->n_layers; i++) {
        layer *L = &m->layers[i];
        if (m->fwd_hook) m->fwd_hook(m->fwd_hook_ctx, layer_params_end(m, i));
        switch (L->kind) {
        case L_CONV_IN: {
            conv_shape cs = conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 1);
            const conv_plan p = fwd_plan(m, L, K_MAIN, params);
            conv2d_forward(L->out, x, PW(L, C_W), PW(L, C_B), &cs, &p, m->ws);
            break;
        }
        case L_RES:
            res_forward(m, L, params, N);
            break;
        case L_ATTN:
            attn_forward(m, L, params, N);
            break;
        case L_DOWN: {
            conv_shape cs = conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 2);
            conv2d_forward(L->out, layer_input(m, L), PW(L, C_W), PW(L, C_B), &cs,
                           &L->plan[K_MAIN], m->ws);
            break;
        }
        case L_UP: {
            upsample2x_forward(L->s[S_UP], layer_input(m, L), N, L->cin, L->H, L->W);
            conv_shape cs = conv_shape_make(N, L->cin, L->Ho, L->Wo, L->cout, 3, 1);
            const conv_plan p = fwd_plan(m, L, K_MAIN, params);
            conv2d_forward(L->out, L->s[S_UP], PW(L, C_W), PW(L, C_B), &cs, &p, m->ws);
            break;
        }
        case L_OUT: {
            int HW = L->H * L->W;
            groupnorm_stats(L->s[S_MEAN1], L->s[S_RSTD1], layer_input(m, L), N, L->cin, HW,
                            GN_GROUPS, GN_EPS);
            const gn_apply gn = {L->s[S_MEAN1], L->s[S_RSTD1], PW(L, O_NG), PW(L, O_NB),
                                 GN_GROUPS};
            conv_shape cs = conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 1);
            const conv_plan p = fwd_plan(m, L, K_MAIN, params);
            gn_silu_conv2d_forward(out, layer_input(m, L), &gn, NULL, PW(L, O_W), PW(L, O_B), &cs,
                                   &p, m->ws);
            break;
        }
        }
    }
}

/* ---------- prepared kernels ---------- */

/* The weight slot of conv k (K_MAIN or K_CONV2) of layer L, -1 for none. */
static int layer_conv_weight(const layer *L, int k) {
    switch (L->kind) {
    case L_CONV_IN: case L_UP: case L_DOWN: return k == K_MAIN ? C_W : -1;
    case L_RES: return k == K_MAIN ? R_C1W : R_C2W;
    case L_OUT: return k == K_MAIN ? O_W : -1;
    default: return -1;
    }
}

/* Layer i of the model that runs m's convolutions (lane 0 for a model with
 * lanes: the lanes share the layer table and the plans). */
static const layer *run_layer(const unet *m, int i) {
    return m->nlanes > 1 ? &m->lane[0]->layers[i] : &m->layers[i];
}

/* Floats of conv k of layer i's prepared kernels (0: nothing to prepare). */
static size_t prep_floats(const unet *m, int i, int k) {
    const layer *L = run_layer(m, i);
    if (layer_conv_weight(L, k) < 0) return 0;
    const conv_shape cs = layer_conv_shape(L, k, 1);
    return conv_prepared_floats(&cs, &L->plan[k]);
}

/* Lends the kernels (or none) to the lanes, which run over the same params. */
static void lend_prep(unet *m) {
    for (int l = 0; m->lane && l < m->nlanes; l++) {
        if (!m->lane[l]) continue; /* (a create that failed part way) */
        m->lane[l]->prep = m->prep;
        m->lane[l]->prep_params = m->prep_params;
    }
}

int unet_prepare(unet *m, const float *params) {
    unet_unprepare(m);
    const int auto_budget = m->opt.prepare_budget == UNET_PREPARE_AUTO;
    const size_t budget = auto_budget ? mem_available_bytes() / 2 : m->opt.prepare_budget;
    size_t need = 0;
    for (int i = 0; i < m->n_layers; i++)
        for (int k = K_MAIN; k <= K_CONV2; k++) need += prep_floats(m, i, k) * sizeof(float);
    if (need > budget)
        return err_set("unet_prepare: the transformed kernels need %zu MiB, over the %zu MiB "
                       "budget (%s)", need >> 20, budget >> 20,
                       auto_budget ? "half the memory available" : "DDPM_PREPARE_MIB");
    m->prep = xcalloc((size_t)2 * m->n_layers, sizeof *m->prep);
    for (int i = 0; i < m->n_layers; i++)
        for (int k = K_MAIN; k <= K_CONV2; k++) {
            const size_t f = prep_floats(m, i, k);
            if (!f) continue;
            float *p = malloc(f * sizeof(float));
            if (!p) {
                unet_unprepare(m);
                return err_set("unet_prepare: out of memory for the transformed kernels (%zu "
                               "MiB more)", f * sizeof(float) >> 20);
            }
            const layer *L = run_layer(m, i);
            const conv_shape cs = layer_conv_shape(L, k, 1);
            conv_prepare(p, PW(L, layer_conv_weight(L, k)), &cs, &L->plan[k]);
            m->prep[2 * i + k] = p;
            m->prep_bytes += f * sizeof(float);
        }
    m->prep_params = params;
    lend_prep(m);
    return 0;
}

int unet_prepared(const unet *m, const float *params) {
    return m->prep_params && m->prep_params == params;
}

void unet_unprepare(unet *m) {
    for (int i = 0; m->prep && i < 2 * m->n_layers; i++) free(m->prep[i]);
    free(m->prep);
    m->prep = NULL;
    m->prep_params = NULL;
    m->prep_bytes = 0;
    lend_prep(m);
}

size_t unet_prepared_bytes(const unet *m) { return m->prep_bytes; }

/* ---------- backward ---------- */

static float *zeroed(float *buf, size_t n) {
    PROF_SCOPE(PROF_OTHER);
    /* blocks of 64 Ki floats, spread over the threads: a single thread does not
     * saturate the memory bandwidth */
    const size_t blk = 65536, nblk = (n + blk - 1) / blk;
#pragma omp parallel for schedule(static) if (nblk > 1)
    for (size_t b = 0; b < nblk; b++) {
        size_t len = n - b * blk < blk ? n - b * blk : blk;
        memset(buf + b * blk, 0, len * sizeof *buf);
    }
    return buf;
}

/* Gradient destination of a layer's input: its source's dout (NULL for x). */
static float *input_grad(unet *m, const layer *L) {
    return L->src < 0 ? NULL : m->layers[L->src].dout;
}

/* Backward of a res block. Kept from forward: the input (the source layers' outputs),
 * H1 (conv1 + temb), both GroupNorms' statistics. The GroupNorm outputs are
 * recomputed inside the fused convs (gn_silu_conv2d); recomputed here, in the
 * scratch buffers R[0..3]: the dropout mask for conv2, then the concat for conv1.
 * Buffer use (each live interval in one):
 *   R3 mask | R0 dg2 | R3 dh1 | R0 concat | R2 dg1 | R1 dx (concat) */
static void res_backward(unet *m, layer *L, const float *params, float *grads, int N) {
    int HW = L->H * L->W;
    size_t in = (size_t)N * L->cin * HW, o = (size_t)N * L->cout * HW;
    float **R = m->scratch;
    const float *dout = L->dout;

    const gn_apply gn2 = {L->s[S_MEAN2], L->s[S_RSTD2], PW(L, R_N2G), PW(L, R_N2B), GN_GROUPS};
    const float *mask = NULL;
    if (m->use_dropout) {
        make_dropout_mask(m, L, R[3], N, (size_t)L->cout * HW);
        mask = R[3];
    }
    conv_shape c2 = conv_shape_make(N, L->cout, L->H, L->W, L->cout, 3, 1);
    float *dg2 = zeroed(R[0], o);
    gn_silu_conv2d_backward(dg2, GW(L, R_C2W), GW(L, R_C2B), dout, L->s[S_H1], &gn2, mask,
                            PW(L, R_C2W), &c2, &L->plan[K_CONV2], m->ws);
    float *dh1 = zeroed(R[3], o); /* the mask is dead */
    groupnorm_backward(dh1, GW(L, R_N2G), GW(L, R_N2B), dg2, L->s[S_H1], L->s[S_MEAN2],
                       L->s[S_RSTD2], PW(L, R_N2G), N, L->cout, HW, GN_GROUPS);
    float *dtp = zeroed(L->s[S_TP], (size_t)N * L->cout); /* tp is no longer needed */
    add_channel_backward(NULL, dtp, dh1, N, L->cout, HW);
    linear_backward(m->dts, GW(L, R_TW), GW(L, R_TB), dtp, m->ts, PW(L, R_TW), N, 4 * m->mc.ch,
                    L->cout, m->opt.precision, m->ws);

    const float *x = layer_input(m, L);
    if (L->skip >= 0) {
        const layer *A = &m->layers[L->src], *B = &m->layers[L->skip];
        concat_forward(R[0], A->out, B->out, N, A->cout, B->cout, HW);
        x = R[0];
    }
    const gn_apply gn1 = {L->s[S_MEAN1], L->s[S_RSTD1], PW(L, R_N1G), PW(L, R_N1B), GN_GROUPS};
    conv_shape c1 = conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 1);
    float *dg1 = zeroed(R[2], in);
    gn_silu_conv2d_backward(dg1, GW(L, R_C1W), GW(L, R_C1B), dh1, x, &gn1, NULL, PW(L, R_C1W),
                            &c1, &L->plan[K_MAIN], m->ws);
    float *dx = L->skip >= 0 ? zeroed(R[1], in) : input_grad(m, L);
    groupnorm_backward(dx, GW(L, R_N1G), GW(L, R_N1B), dg1, x, L->s[S_MEAN1], L->s[S_RSTD1],
                       PW(L, R_N1G), N, L->cin, HW, GN_GROUPS);
    if (L->cin != L->cout) {
        conv_shape cs = conv_shape_make(N, L->cin, L->H, L->W, L->cout, 1, 1);
        conv2d_backward(dx, GW(L, R_SW), GW(L, R_SB), dout, x, PW(L, R_SW), &cs,
                        &L->plan[K_SHORTCUT], m->ws);
    } else {
        add_backward(dx, NULL, dout, o);
    }
    if (L->skip >= 0) {
        layer *A = &m->layers[L->src], *B = &m->layers[L->skip];
        concat_backward(A->dout, B->dout, dx, N, A->cout, B->cout, HW);
    }
}

static void attn_backward(unet *m, layer *L, const float *params, float *grads, int N) {
    int C = L->cin, HW = L->H * L->W;
    size_t n = (size_t)N * C * HW;
    float **G = m->scratch;
    float *dx = input_grad(m, L);
    conv_shape cs = conv_shape_make(N, C, L->H, L->W, C, 1, 1);
    float *dov = zeroed(G[0], n);
    conv2d_backward(dov, GW(L, A_OW), GW(L, A_OB), L->dout, L->s[S_O], PW(L, A_OW), &cs,
                    &L->plan[K_MAIN], m->ws);
    float *dq = zeroed(G[1], n), *dk = zeroed(G[2], n), *dv = zeroed(G[3], n);
    attention_backward(dq, dk, dv, dov, L->s[S_Q], L->s[S_K], L->s[S_V], L->s[S_ATT], N, C, HW,
                       m->opt.precision, m->ws);
    float *dg = zeroed(G[0], n);
    conv2d_backward(dg, GW(L, A_QW), GW(L, A_QB), dq, L->s[S_G1], PW(L, A_QW), &cs,
                    &L->plan[K_MAIN], m->ws);
    conv2d_backward(dg, GW(L, A_KW), GW(L, A_KB), dk, L->s[S_G1], PW(L, A_KW), &cs,
                    &L->plan[K_MAIN], m->ws);
    conv2d_backward(dg, GW(L, A_VW), GW(L, A_VB), dv, L->s[S_G1], PW(L, A_VW), &cs,
                    &L->plan[K_MAIN], m->ws);
    groupnorm_backward(dx, GW(L, A_NG), GW(L, A_NB), dg, layer_input(m, L), L->s[S_MEAN1],
                       L->s[S_RSTD1], PW(L, A_NG), N, C, HW, GN_GROUPS);
    add_backward(dx, NULL, L->dout, n);
}

/* Backward of layer i (layers are visited n_layers-1 .. 0 after backward_begin). */
static void backward_layer(unet *m, int i, const float *params, float *grads, const float *dout) {
    int N = m->last_N;
    float **G = m->scratch;
    {
        layer *L = &m->layers[i];
        /* douts whose first consumer is this layer come alive now (plan_dout_pool) */
        for (int j = 0; j < i; j++) {
            const layer *J = &m->layers[j];
            if (J->first_use == i) zeroed(J->dout, (size_t)N * J->cout * J->Ho * J->Wo);
        }
        switch (L->kind) {
        case L_OUT: {
            int HW = L->H * L->W;
            size_t in = (size_t)N * L->cin * HW;
            /* GroupNorm -> SiLU recomputed inside the conv from the kept statistics */
            const gn_apply gn = {L->s[S_MEAN1], L->s[S_RSTD1], PW(L, O_NG), PW(L, O_NB),
                                 GN_GROUPS};
            conv_shape cs = conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 1);
            float *dg = zeroed(G[3], in);
            gn_silu_conv2d_backward(dg, GW(L, O_W), GW(L, O_B), dout, layer_input(m, L), &gn, NULL,
                                    PW(L, O_W), &cs, &L->plan[K_MAIN], m->ws);
            groupnorm_backward(input_grad(m, L), GW(L, O_NG), GW(L, O_NB), dg, layer_input(m, L),
                               L->s[S_MEAN1], L->s[S_RSTD1], PW(L, O_NG), N, L->cin, HW,
                               GN_GROUPS);
            break;
        }
        case L_UP: {
            conv_shape cs = conv_shape_make(N, L->cin, L->Ho, L->Wo, L->cout, 3, 1);
            float *up = G[1]; /* the upsampled input again: a copy */
            upsample2x_forward(up, layer_input(m, L), N, L->cin, L->H, L->W);
            float *du = zeroed(G[0], (size_t)N * L->cin * L->Ho * L->Wo);
            conv2d_backward(du, GW(L, C_W), GW(L, C_B), L->dout, up, PW(L, C_W), &cs,
                            &L->plan[K_MAIN], m->ws);
            upsample2x_backward(input_grad(m, L), du, N, L->cin, L->H, L->W);
            break;
        }
        case L_DOWN: {
            conv_shape cs = conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 2);
            conv2d_backward(input_grad(m, L), GW(L, C_W), GW(L, C_B), L->dout, layer_input(m, L),
                            PW(L, C_W), &cs, &L->plan[K_MAIN], m->ws);
            break;
        }
        case L_ATTN:
            attn_backward(m, L, params, grads, N);
            break;
        case L_RES:
            res_backward(m, L, params, grads, N);
            break;
        case L_CONV_IN: {
            conv_shape cs = conv_shape_make(N, L->cin, L->H, L->W, L->cout, 3, 1);
            conv2d_backward(NULL, GW(L, C_W), GW(L, C_B), L->dout, m->x, PW(L, C_W), &cs,
                            &L->plan[K_MAIN], m->ws);
            break;
        }
        }
    }
}

/* The timestep MLP, after every layer. */
static void backward_temb(unet *m, const float *params, float *grads) {
    int N = m->last_N, ch = m->mc.ch;
    float **G = m->scratch;
    size_t nt = (size_t)N * 4 * ch;
    float *dd1 = zeroed(G[0], nt);
    silu_backward(dd1, m->dts, m->d1, nt);
    if (m->p_label >= 0)
        label_embedding_backward(NULL, grads + m->tensors[m->p_label].offset, dd1, m->y, N, 4 * ch);
    float *da0 = zeroed(G[1], nt);
    linear_backward(da0, grads + m->tensors[m->p_temb[2]].offset,
                    grads + m->tensors[m->p_temb[3]].offset, dd1, m->a0,
                    params + m->tensors[m->p_temb[2]].offset, N, 4 * ch, 4 * ch,
                    m->opt.precision, m->ws);
    float *dd0 = zeroed(G[2], nt);
    silu_backward(dd0, da0, m->d0, nt);
    linear_backward(NULL, grads + m->tensors[m->p_temb[0]].offset,
                    grads + m->tensors[m->p_temb[1]].offset, dd0, m->emb,
                    params + m->tensors[m->p_temb[0]].offset, N, ch, 4 * ch,
                    m->opt.precision, m->ws);
}

/* grads[lo, hi) += the lanes' private gradients there, lanes in order. */
static void reduce_lanes(unet *m, float *grads, size_t lo, size_t hi) {
    PROF_SCOPE(PROF_OTHER);
    const size_t blk = 16384, nblk = (hi - lo + blk - 1) / blk;
#pragma omp parallel for schedule(static) if (nblk > 1)
    for (size_t b = 0; b < nblk; b++) {
        size_t a = lo + b * blk, e = a + blk < hi ? a + blk : hi;
        for (int l = 1; l < m->active_lanes; l++) {
            const float *g = m->lane_grads[l];
            for (size_t j = a; j < e; j++) grads[j] += g[j];
        }
    }
}

void unet_backward(unet *m, const float *params, float *grads, const float *dout) {
    if (!m->with_backward) return;
    if (m->nlanes > 1) {
        const int k = m->active_lanes;
        const size_t img = (size_t)unet_out_channels(m) * m->mc.image_size * m->mc.image_size;
#pragma omp parallel for num_threads(k) schedule(static, 1)
        for (int l = 0; l < k; l++) {
            if (l > 0) zeroed(m->lane_grads[l], m->n_params);
            zeroed(m->lane[l]->dts, (size_t)m->lane[l]->last_N * 4 * m->mc.ch);
        }
        size_t done = m->n_params;
        for (int i = m->n_layers - 1; i >= 0; i--) {
#pragma omp parallel for num_threads(k) schedule(static, 1)
            for (int l = 0; l < k; l++)
                backward_layer(m->lane[l], i, params, l ? m->lane_grads[l] : grads,
                               dout + (size_t)m->lane_start[l] * img);
            size_t from = m->tensors[m->layers[i].p[0]].offset;
            reduce_lanes(m, grads, from, done);
            done = from;
            if (m->hook) m->hook(m->hook_ctx, from);
        }
#pragma omp parallel for num_threads(k) schedule(static, 1)
        for (int l = 0; l < k; l++) backward_temb(m->lane[l], params, l ? m->lane_grads[l] : grads);
        reduce_lanes(m, grads, 0, done);
        if (m->hook) m->hook(m->hook_ctx, 0);
        return;
    }
    zeroed(m->dts, (size_t)m->last_N * 4 * m->mc.ch);
    for (int i = m->n_layers - 1; i >= 0; i--) {
        backward_layer(m, i, params, grads, dout);
        if (m->hook) m->hook(m->hook_ctx, m->tensors[m->layers[i].p[0]].offset);
    }
    backward_temb(m, params, grads);
    if (m->hook) m->hook(m->hook_ctx, 0);
}

void unet_set_backward_hook(unet *m, unet_backward_hook hook, void *ctx) {
    m->hook = hook;
    m->hook_ctx = ctx;
}

void unet_set_forward_hook(unet *m, unet_forward_hook hook, void *ctx) {
    m->fwd_hook = hook;
    m->fwd_hook_ctx = ctx;
}

int unet_num_dropout(const unet *m) {
    int n = 0;
    for (int i = 0; i < m->n_layers; i++) n += m->layers[i].kind == L_RES;
    return n;
}

const float *unet_dropout_mask(unet *m, int id, size_t *n, const char **block_name) {
    if (m->nlanes > 1) {
        /* each lane's slice, gathered in image order into a buffer of the parent */
        size_t total = 0;
        for (int l = 0; l < m->active_lanes; l++) {
            size_t nl = 0;
            const float *mk = unet_dropout_mask(m->lane[l], id, &nl, block_name);
            if (!mk) return NULL;
            if (l == 0) {
                free(m->mask_buf);
                m->mask_buf = xfloats(nl / (size_t)m->lane[0]->last_N * (size_t)m->last_N);
            }
            memcpy(m->mask_buf + total, mk, nl * sizeof *mk);
            total += nl;
        }
        *n = total;
        return m->mask_buf;
    }
    if (!m->with_backward || !m->use_dropout) return NULL;
    for (int i = 0; i < m->n_layers; i++) {
        const layer *L = &m->layers[i];
        if (L->kind != L_RES || L->dropout_id != id) continue;
        *n = (size_t)m->last_N * L->cout * L->Ho * L->Wo;
        /* the block's name is its first tensor's name up to ".norm1.weight" */
        if (block_name) *block_name = m->tensors[L->p[R_N1G]].name;
        /* not kept: regenerated from the counter-based RNG into a scratch buffer */
        make_dropout_mask(m, L, m->scratch[3], m->last_N, (size_t)L->cout * L->Ho * L->Wo);
        return m->scratch[3];
    }
    return NULL;
}

_Static_assert(8 + UNET_MAX_LEVELS + UNET_MAX_ATTN <= 32, "unet_describe writes at most 32");
int unet_describe(const model_config *mc, float *meta) {
    int k = 0;
    meta[k++] = (float)mc->image_size;
    meta[k++] = (float)mc->in_channels;
    meta[k++] = (float)mc->ch;
    meta[k++] = (float)mc->num_res_blocks;
    meta[k++] = (float)mc->dropout;
    /* list lengths clamped to the arrays (and to meta's 32): a config that
     * unet_check_config would refuse still cannot write past them */
    int levels = mc->num_levels < 0 ? 0 : mc->num_levels > UNET_MAX_LEVELS ? UNET_MAX_LEVELS
                                                                            : mc->num_levels;
    int attn = mc->num_attn < 0 ? 0 : mc->num_attn > UNET_MAX_ATTN ? UNET_MAX_ATTN : mc->num_attn;
    meta[k++] = (float)levels;
    for (int i = 0; i < levels; i++) meta[k++] = (float)mc->ch_mult[i];
    meta[k++] = (float)attn;
    for (int i = 0; i < attn; i++) meta[k++] = (float)mc->attn_resolutions[i];
    meta[k++] = (float)(mc->learn_sigma != 0);
    meta[k++] = (float)mc->num_classes;
    return k;
}

/* ---------- summary ---------- */

void unet_print_summary(const unet *m, const model_config *mc, void *file) {
    FILE *f = file;
    fprintf(f, "DDPM U-Net: image %dx%dx%d, ch %d, ch_mult [", mc->image_size, mc->image_size,
            mc->in_channels, mc->ch);
    for (int i = 0; i < mc->num_levels; i++) fprintf(f, "%s%d", i ? "," : "", mc->ch_mult[i]);
    fprintf(f, "], %d res blocks, attention at [", mc->num_res_blocks);
    for (int i = 0; i < mc->num_attn; i++) fprintf(f, "%s%d", i ? "," : "", mc->attn_resolutions[i]);
    fprintf(f, "], dropout %g%s", mc->dropout,
            mc->learn_sigma ? ", learned variances (output: eps and v)" : "");
    if (mc->num_classes > 0) fprintf(f, ", %d classes (+ the null label)", mc->num_classes);
    fprintf(f, "\n");
    fprintf(f, "%-4s %-44s %-20s %12s %12s\n", "#", "tensor", "shape", "params", "offset");
    for (int i = 0; i < m->n_tensors; i++) {
        const unet_tensor *t = &m->tensors[i];
        char shape[64];
        int n = 0;
        shape[0] = 0;
        for (int d = 0; d < t->ndim; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%d", d ? "x" : "", t->shape[d]);
        fprintf(f, "%-4d %-44s %-20s %12zu %12zu\n", i, t->name, shape, t->size, t->offset);
    }
    fprintf(f, "total parameters: %zu (%.2f M) in %d tensors\n", m->n_params,
            (double)m->n_params / 1e6, m->n_tensors);
    fprintf(f, "forward: %.3f GMAC per image; activations for batch %d: %.1f MiB\n", m->macs / 1e9,
            m->max_batch, (double)m->act_bytes / (1024.0 * 1024.0));
    const double mib = 1024.0 * 1024.0;
    fprintf(f, "  layer outputs %.1f MiB, kept for backward %.1f MiB, gradient pool %.1f MiB, "
            "scratch %.1f MiB, op workspace %.1f MiB\n", (double)m->part_bytes[0] / mib,
            (double)m->part_bytes[1] / mib, (double)m->part_bytes[2] / mib,
            (double)m->part_bytes[3] / mib, (double)m->part_bytes[4] / mib);
    if (m->nlanes > 1)
        fprintf(f, "  in %d lanes of %d images (one per thread; the op workspace figure "
                "includes lanes 2..%d's gradient buffers)\n", m->nlanes, m->lane[0]->max_batch,
                m->nlanes);
}
