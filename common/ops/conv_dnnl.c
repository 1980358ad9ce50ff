/* Direct convolutions by oneDNN (libdnnl, its C API), fp32 (a conv_formulation).
 *
 * oneDNN's JIT direct convolutions (forward, backward data, backward weights)
 * work on channel-blocked layouts (nChw16c and the like on AVX-512): the
 * primitives are created with format "any", and the plain NCHW / OIHW tensors
 * are reordered into the layouts they chose (and the results back) through
 * regions of the caller's workspace. Where a primitive takes plain layouts
 * there is no reorder.
 *
 * The primitives depend on the batch size and on the number of threads they
 * will run on (oneDNN splits the work at creation), so they are kept in a
 * conv_state per plan, owned by the caller (the model: conv_state_create at
 * plan time), a few entries keyed by (N, threads), each made at the first call
 * with that key and kept until the state is freed (a long run makes each once).
 * A plan without a state (tests, one-off calls) builds and frees them around
 * each call: correct, slow. Threads: inside a parallel region (the model's
 * lanes) oneDNN runs on the calling thread only, so the entry is keyed by 1 and
 * its primitives are created with the thread's OpenMP setting at 1 (created
 * for 2, a backward-weights kernel waited at its barrier for a second thread).
 *
 * Determinism: for a given shape, thread count and CPU, oneDNN picks the same
 * implementation and splits the work the same way, and its reductions
 * (backward weights over images) run in a fixed order: the results are
 * bit-for-bit repeatable. They differ from the other formulations' by rounding.
 *
 * Backward accumulates (the ops contract) where oneDNN overwrites: its results
 * land in the workspace and are added in (diff_src through the fused
 * activation's derivative, as conv_unpad_plane does for the shifted GEMMs).
 * The fused activation of silu_conv2d / gn_silu_conv2d is applied into the
 * workspace first (ops_silu_mask: the very values the other formulations copy).
 *
 * bf16 (a plan of precision OPS_BF16, issue 19): each primitive's two inputs
 * are bf16 in its inner layouts (the reorders round the fp32 tensors to bf16 on
 * the way in), its output stays fp32 (forward dst, diff_src, diff_weights):
 * oneDNN's bf16 kernels accumulate in fp32 and write fp32, so no rounding
 * happens after the accumulation and the weight gradient is fp32 as summed. */
#include <dnnl.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/ops/conv_internal.h"

/* The three primitives, and for each the roles of its three tensors: two
 * inputs and the output, in the plain layouts the ops use. */
enum { DK_FWD, DK_BWD_DATA, DK_BWD_WEIGHTS, DK_COUNT };
enum { T_IN0, T_IN1, T_OUT, T_COUNT };
enum { R_SRC, R_WEI, R_DST }; /* plain tensors: NCHW input, OIHW weight, NCHW output */

static const int dk_arg[DK_COUNT][T_COUNT] = {
    [DK_FWD] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST},
    [DK_BWD_DATA] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC},
    [DK_BWD_WEIGHTS] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS},
};
static const int dk_role[DK_COUNT][T_COUNT] = {
    [DK_FWD] = {R_SRC, R_WEI, R_DST},
    [DK_BWD_DATA] = {R_DST, R_WEI, R_SRC},
    [DK_BWD_WEIGHTS] = {R_SRC, R_DST, R_WEI},
};
/* The plain role each primitive kind writes (its output, fp32 in bf16 too). */
static const int dk_out_role[DK_COUNT] = {[DK_FWD] = R_DST, [DK_BWD_DATA] = R_SRC,
                                          [DK_BWD_WEIGHTS] = R_WEI};
static const dnnl_query_t dk_query[DK_COUNT][T_COUNT] = {
    [DK_FWD] = {dnnl_query_src_md, dnnl_query_weights_md, dnnl_query_dst_md},
    [DK_BWD_DATA] = {dnnl_query_diff_dst_md, dnnl_query_weights_md, dnnl_query_diff_src_md},
    [DK_BWD_WEIGHTS] = {dnnl_query_src_md, dnnl_query_diff_dst_md, dnnl_query_diff_weights_md},
};

typedef struct {
    dnnl_primitive_t prim;          /* NULL: not made yet */
    dnnl_primitive_t reo[T_COUNT];  /* plain <-> the primitive's layout; NULL: the same */
    /* an input activation (NCHW) whose inner layout conv_pack_block writes
     * (with the fused activation) in place of the reorder: its block width B,
     * 16 (nChw16c) or 1 (plain bf16); 0: reo[t] (or none). For the output, 16:
     * an activation (or its gradient) in nChw16c fp32 that the caller reads
     * back with conv_unpack_block */
    int pack[T_COUNT];
    dnnl_memory_t plain[T_COUNT], inner[T_COUNT], bias, scratch;
    size_t bytes[T_COUNT]; /* of the inner tensors */
    size_t scratch_bytes;  /* the primitive's scratchpad */
} dnnl_op;

typedef struct {
    int N, nthr; /* the key; N 0: free slot */
    dnnl_primitive_desc_t fwd_pd; /* the forward's, the hint of the backward ones */
    dnnl_op op[DK_COUNT];
} dnnl_entry;

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

/* The workspace, in floats, as regions in this order: act[N][Cin][H][W] (the
 * fused activation's values where the input is not packed), tmp (backward's
 * plain diff_weights, and diff_src where it is not unpacked, before they are
 * added in), the zero bias, then, for the primitive running, three inner
 * regions for its tensors in its layouts (two inputs and the output) and its
 * scratchpad. The three primitive kinds never run at once, so their inner
 * regions and scratchpads overlap: f[dk] is kind dk's layout, whose first
 * three regions are the same in all. */
enum { WS_ACT, WS_TMP, WS_BIAS, WS_IN0, WS_IN1, WS_OUT, WS_SCRATCH, WS_COUNT };
typedef struct {
    size_t f[DK_COUNT][WS_COUNT];
} dnnl_ws;

/* The regions without a state's plan (ws_plan): act and tmp the size of the
 * input, each inner region large enough for any tensor with channels padded
 * to 16 (AVX-512's blocks; a layout that needs more is refused and the plain
 * one used), no scratchpad (the state's spill buffer holds it). */
static dnnl_ws ws_default(const conv_shape *s) {
    const size_t N = (size_t)s->N, HW = (size_t)s->H * s->W, P = (size_t)s->Ho * s->Wo;
    const size_t ci = round16((size_t)s->Cin), co = round16((size_t)s->Cout);
    const size_t kk = (size_t)s->k * s->k;
    dnnl_ws w = {{{0}}};
    const size_t tmp = N * s->Cin * HW > (size_t)s->Cout * s->Cin * kk
                           ? N * s->Cin * HW
                           : (size_t)s->Cout * s->Cin * kk;
    size_t in = N * ci * HW, out = N * co * P, wei = co * ci * kk;
    size_t inner = in > out ? in : out;
    if (wei > inner) inner = wei;
    for (int dk = 0; dk < DK_COUNT; dk++) {
        w.f[dk][WS_ACT] = round16(N * s->Cin * HW);
        w.f[dk][WS_TMP] = round16(tmp);
        w.f[dk][WS_BIAS] = round16((size_t)s->Cout);
        w.f[dk][WS_IN0] = w.f[dk][WS_IN1] = w.f[dk][WS_OUT] = round16(inner);
    }
    return w;
}

/* The floats the workspace needs: the largest of the kinds' layouts. */
static size_t ws_total(const dnnl_ws *w) {
    size_t most = 0;
    for (int dk = 0; dk < DK_COUNT; dk++) {
        size_t t = 0;
        for (int r = 0; r < WS_COUNT; r++) t += w->f[dk][r];
        if (t > most) most = t;
    }
    return most;
}

#define DNNL_ENTRIES 4

struct conv_state {
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    conv_shape s; /* the plan's shape (any N) */
    ops_precision prec;
    dnnl_entry e[DNNL_ENTRIES];
    unsigned next; /* the slot to reuse when all are taken */
    /* sized: the caller sized its workspace with this state (cd_workspace_floats),
     * whose regions w then are, for up to s.N images: just what the primitives
     * made for s need, the scratchpad shared by all of them; otherwise
     * ws_default's. A region too small for what a call needs (another batch
     * size or thread count than planned) is replaced by spill[r], the state's
     * own buffer of spill_bytes[r]. */
    int sized;
    dnnl_ws w;
    /* a large image runs in chunks of rows (chunk_rows): the state of the
     * primitives for one chunk of one image (its s: N 1, the chunk's rows), or
     * NULL */
    struct conv_state *chunk;
    void *spill[WS_COUNT];
    size_t spill_bytes[WS_COUNT];
};

static void dnnl_ok(dnnl_status_t st, const char *what, const conv_shape *s) {
    if (st == dnnl_success) return;
    log_warn("conv_dnnl: %s failed (status %d) for N %d, %d->%d channels, %dx%d, k %d, stride %d",
             what, (int)st, s->N, s->Cin, s->Cout, s->H, s->W, s->k, s->stride);
    abort();
}

/* The descriptor of one tensor: plain layout (any 0) or oneDNN's choice, data
 * type dt. */
static void plain_md(dnnl_memory_desc_t *md, const conv_shape *s, int role, int any,
                     dnnl_data_type_t dt) {
    dnnl_dims_t d;
    switch (role) {
    case R_SRC: d[0] = s->N; d[1] = s->Cin; d[2] = s->H; d[3] = s->W; break;
    case R_WEI: d[0] = s->Cout; d[1] = s->Cin; d[2] = s->k; d[3] = s->k; break;
    default: d[0] = s->N; d[1] = s->Cout; d[2] = s->Ho; d[3] = s->Wo; break;
    }
    const dnnl_format_tag_t tag = any ? dnnl_format_tag_any : role == R_WEI ? dnnl_oihw : dnnl_nchw;
    dnnl_memory_desc_init_by_tag(md, 4, d, dt, tag);
}

/* The inner data type of role in primitive kind dk: bf16 for its inputs in a
 * bf16 state, else fp32. */
static dnnl_data_type_t inner_dt(ops_precision prec, int dk, int role) {
    return prec == OPS_BF16 && role != dk_out_role[dk] ? dnnl_bf16 : dnnl_f32;
}

/* The descriptor of primitive kind dk for s, layouts "any" or plain. */
static void op_desc(dnnl_convolution_desc_t *cd, int dk, const conv_shape *s, int any,
                    ops_precision prec) {
    dnnl_memory_desc_t src, wei, dst, bias;
    plain_md(&src, s, R_SRC, any, inner_dt(prec, dk, R_SRC));
    plain_md(&wei, s, R_WEI, any, inner_dt(prec, dk, R_WEI));
    plain_md(&dst, s, R_DST, any, inner_dt(prec, dk, R_DST));
    dnnl_dims_t bd = {s->Cout};
    dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_x);
    const dnnl_dims_t strides = {s->stride, s->stride};
    const dnnl_dims_t pl = {s->pad_top, s->pad_left};
    const dnnl_dims_t pr = {(s->Ho - 1) * s->stride + s->k - s->H - s->pad_top,
                            (s->Wo - 1) * s->stride + s->k - s->W - s->pad_left};
    dnnl_status_t st;
    if (dk == DK_FWD)
        st = dnnl_convolution_forward_desc_init(cd, dnnl_forward_training, dnnl_convolution_direct,
                                                &src, &wei, &bias, &dst, strides, pl, pr);
    else if (dk == DK_BWD_DATA)
        st = dnnl_convolution_backward_data_desc_init(cd, dnnl_convolution_direct, &src, &wei, &dst,
                                                      strides, pl, pr);
    else
        st = dnnl_convolution_backward_weights_desc_init(cd, dnnl_convolution_direct, &src, &wei,
                                                         NULL, &dst, strides, pl, pr);
    dnnl_ok(st, "convolution descriptor", s);
}

/* The primitive descriptor of kind dk: the blocked layouts oneDNN prefers when
 * they fit the workspace's regions, else the plain ones. */
static dnnl_primitive_desc_t op_pd(int dk, const conv_shape *s, ops_precision prec,
                                   dnnl_engine_t eng, const_dnnl_primitive_desc_t hint) {
    dnnl_primitive_attr_t attr;
    dnnl_ok(dnnl_primitive_attr_create(&attr), "attr", s);
    dnnl_ok(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "attr", s);
    const size_t inner_bytes = ws_default(s).f[DK_FWD][WS_IN0] * sizeof(float);
    dnnl_primitive_desc_t pd = NULL;
    for (int any = 1; any >= 0 && !pd; any--) {
        dnnl_convolution_desc_t cd;
        op_desc(&cd, dk, s, any, prec);
        dnnl_ok(dnnl_primitive_desc_create(&pd, &cd, attr, eng, hint), "primitive descriptor", s);
        for (int t = 0; any && t < T_COUNT; t++)
            if (dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dk_query[dk][t], 0)) >
                inner_bytes) {
                dnnl_primitive_desc_destroy(pd);
                pd = NULL;
                break;
            }
    }
    dnnl_primitive_attr_destroy(attr);
    return pd;
}

/* The three primitive descriptors for s (the backward ones hinted by the
 * forward's), for the calling thread's OpenMP setting; pds_free frees them. */
static void pds_make(dnnl_primitive_desc_t pd[DK_COUNT], const conv_shape *s,
                     ops_precision prec, dnnl_engine_t eng) {
    pd[DK_FWD] = op_pd(DK_FWD, s, prec, eng, NULL);
    for (int dk = 0; dk < DK_COUNT; dk++)
        if (dk != DK_FWD) pd[dk] = op_pd(dk, s, prec, eng, pd[DK_FWD]);
}

static void pds_free(dnnl_primitive_desc_t pd[DK_COUNT]) {
    for (int dk = DK_COUNT - 1; dk >= 0; dk--) dnnl_primitive_desc_destroy(pd[dk]);
}

/* Whether conv_pack_block writes tensor t of primitive kind dk in the layout im
 * (an input activation: its block width 16 or 1) or conv_unpack_block reads it
 * (the output activation in nChw16c fp32: 16); 0: a reorder, or none where im
 * is the plain layout. */
static int pack_kind(const dnnl_memory_desc_t *im, const conv_shape *s, int dk, int t,
                     ops_precision prec) {
    const int role = dk_role[dk][t];
    dnnl_memory_desc_t pm;
    plain_md(&pm, s, role, 0, dnnl_f32);
    if (role == R_WEI || dnnl_memory_desc_equal(&pm, im)) return 0;
    const dnnl_data_type_t dt = inner_dt(prec, dk, role);
    dnnl_memory_desc_t b1, b16;
    plain_md(&b1, s, role, 0, dt);
    dnnl_memory_desc_init_by_tag(&b16, 4, b1.dims, dt, dnnl_nChw16c);
    if (dnnl_memory_desc_equal(&b16, im)) return 16;
    return t != T_OUT && dnnl_memory_desc_equal(&b1, im) ? 1 : 0;
}

/* The regions the primitives for s need, from their descriptors made for one
 * thread (the lanes) and for all of them (oneDNN sizes its scratchpad by the
 * threads it splits the work over): act only where an input with the fused
 * activation is not packed, tmp for the plain diff_weights (and diff_src where
 * it is not unpacked), each inner region the largest tensor it holds, one
 * scratchpad. */
static dnnl_ws ws_plan(conv_state *st, const conv_shape *s) {
    const size_t N = (size_t)s->N, HW = (size_t)s->H * s->W;
    dnnl_ws w = {{{0}}};
    size_t b[DK_COUNT][WS_COUNT] = {{0}}; /* bytes */
    size_t fixed[WS_IN0] = {0};
    fixed[WS_TMP] = (size_t)s->Cout * s->Cin * s->k * s->k * sizeof(float);
    fixed[WS_BIAS] = (size_t)s->Cout * sizeof(float);
    const int was = omp_get_max_threads();
    for (int one = 1; one >= 0; one--) {
        if (!one && was == 1) break;
        omp_set_num_threads(one ? 1 : was);
        dnnl_primitive_desc_t pds[DK_COUNT];
        pds_make(pds, s, st->prec, st->eng);
        for (int dk = 0; dk < DK_COUNT; dk++) {
            for (int t = 0; t < T_COUNT; t++) {
                const dnnl_memory_desc_t *im =
                    dnnl_primitive_desc_query_md(pds[dk], dk_query[dk][t], 0);
                dnnl_memory_desc_t pm;
                plain_md(&pm, s, dk_role[dk][t], 0, dnnl_f32);
                const int plain = dnnl_memory_desc_equal(&pm, im),
                          pk = pack_kind(im, s, dk, t, st->prec);
                const size_t sz = dnnl_memory_desc_get_size(im);
                if (!plain && sz > b[dk][WS_IN0 + t]) b[dk][WS_IN0 + t] = sz;
                if (dk_role[dk][t] == R_SRC && t != T_OUT && !pk)
                    fixed[WS_ACT] = N * s->Cin * HW * sizeof(float);
                if (dk == DK_BWD_DATA && t == T_OUT && pk != 16 &&
                    N * s->Cin * HW * sizeof(float) > fixed[WS_TMP])
                    fixed[WS_TMP] = N * s->Cin * HW * sizeof(float);
            }
            const size_t sb = dnnl_memory_desc_get_size(
                dnnl_primitive_desc_query_md(pds[dk], dnnl_query_scratchpad_md, 0));
            if (sb > b[dk][WS_SCRATCH]) b[dk][WS_SCRATCH] = sb;
        }
        pds_free(pds);
    }
    omp_set_num_threads(was);
    for (int dk = 0; dk < DK_COUNT; dk++)
        for (int r = 0; r < WS_COUNT; r++)
            w.f[dk][r] = round16(((r < WS_IN0 ? fixed[r] : b[dk][r]) + sizeof(float) - 1) /
                                 sizeof(float));
    return w;
}

/* With the plan's state, the workspace holds just the regions its primitives
 * need (ws_plan), and one scratchpad that they share instead of each holding
 * its own (1.5 GiB in all at lsun256 in bf16; docs/performance.md, seventh
 * round); the state remembers it. Without a state, ws_default's. */
static size_t cd_workspace_floats(const conv_shape *s, const conv_plan *p) {
    if (!p || !p->state) {
        const dnnl_ws w = ws_default(s);
        return ws_total(&w);
    }
    conv_state *st = p->state;
    if (st->chunk) { /* the chunk's regions, for one chunk of one image */
        if (!st->chunk->sized) {
            st->chunk->w = ws_plan(st->chunk, &st->chunk->s);
            st->chunk->sized = 1;
        }
        return ws_total(&st->chunk->w);
    }
    if (!st->sized || s->N > st->s.N) {
        st->w = ws_plan(st, s);
        st->s = *s;
        st->sized = 1;
    }
    return ws_total(&st->w);
}

static void op_make(dnnl_op *o, int dk, const conv_shape *s, ops_precision prec,
                    dnnl_engine_t eng, const_dnnl_primitive_desc_t fwd_pd) {
    dnnl_primitive_desc_t pd = dk == DK_FWD ? (dnnl_primitive_desc_t)fwd_pd
                                            : op_pd(dk, s, prec, eng, fwd_pd);
    for (int t = 0; t < T_COUNT; t++) {
        dnnl_memory_desc_t pm;
        plain_md(&pm, s, dk_role[dk][t], 0, dnnl_f32);
        const dnnl_memory_desc_t *im = dnnl_primitive_desc_query_md(pd, dk_query[dk][t], 0);
        dnnl_ok(dnnl_memory_create(&o->plain[t], &pm, eng, DNNL_MEMORY_NONE), "memory", s);
        dnnl_ok(dnnl_memory_create(&o->inner[t], im, eng, DNNL_MEMORY_NONE), "memory", s);
        o->reo[t] = NULL;
        o->pack[t] = pack_kind(im, s, dk, t, prec);
        o->bytes[t] = dnnl_memory_desc_get_size(im);
        if (!o->pack[t] && !dnnl_memory_desc_equal(&pm, im)) {
            dnnl_primitive_desc_t rpd;
            const int in = t != T_OUT;
            dnnl_ok(dnnl_reorder_primitive_desc_create(&rpd, in ? &pm : im, eng, in ? im : &pm,
                                                       eng, NULL),
                    "reorder descriptor", s);
            dnnl_ok(dnnl_primitive_create(&o->reo[t], rpd), "reorder", s);
            dnnl_primitive_desc_destroy(rpd);
        }
    }
    o->bias = NULL;
    if (dk == DK_FWD) {
        const dnnl_memory_desc_t *bm = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
        dnnl_ok(dnnl_memory_create(&o->bias, bm, eng, DNNL_MEMORY_NONE), "memory", s);
    }
    const dnnl_memory_desc_t *sm = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    const size_t sb = dnnl_memory_desc_get_size(sm);
    o->scratch_bytes = sb;
    dnnl_ok(dnnl_memory_create(&o->scratch, sm, eng, DNNL_MEMORY_NONE), "memory", s);
    dnnl_ok(dnnl_primitive_create(&o->prim, pd), "primitive", s);
    if (dk != DK_FWD) dnnl_primitive_desc_destroy(pd);
}

static void op_free(dnnl_op *o) {
    if (!o->prim) return;
    dnnl_primitive_destroy(o->prim);
    for (int t = 0; t < T_COUNT; t++) {
        if (o->reo[t]) dnnl_primitive_destroy(o->reo[t]);
        dnnl_memory_destroy(o->plain[t]);
        dnnl_memory_destroy(o->inner[t]);
    }
    if (o->bias) dnnl_memory_destroy(o->bias);
    dnnl_memory_destroy(o->scratch);
    memset(o, 0, sizeof *o);
}

static void entry_free(dnnl_entry *e) {
    for (int k = 0; k < DK_COUNT; k++) op_free(&e->op[k]);
    if (e->fwd_pd) dnnl_primitive_desc_destroy(e->fwd_pd);
    memset(e, 0, sizeof *e);
}

/* An image (the larger of input and output, fp32) above this runs in chunks of
 * rows, each about this size. */
#define DNNL_CHUNK_BYTES ((size_t)16 << 20)

/* Output rows per chunk for s, or 0 for the whole image: a stride-1
 * convolution keeping the image size, whose image exceeds limit (0:
 * DNNL_CHUNK_BYTES),
 * runs image by image in chunks of rows (the last one padded with zero rows),
 * each with the k - 1 rows of input around it, so that the workspace's regions
 * and oneDNN's scratchpad grow with the chunk, not the image (lsun256's 256x256
 * layers: 4 chunks of 64 rows at 256 channels). A function of the shape alone,
 * not of the batch: the same image gives the same result in any batch. */
static int chunk_rows(const conv_shape *s, size_t limit) {
    if (s->stride != 1 || s->Ho != s->H || s->Wo != s->W) return 0;
    const size_t c = (size_t)(s->Cin > s->Cout ? s->Cin : s->Cout);
    const size_t img = c * (size_t)s->H * s->W * sizeof(float);
    if (!limit) limit = DNNL_CHUNK_BYTES;
    if (img <= limit) return 0;
    const size_t parts = (img + limit - 1) / limit;
    const int h = (int)(((size_t)s->Ho + parts - 1) / parts);
    return h + s->k - 1 <= s->H && h < s->Ho ? h : 0;
}

static conv_state *state_alloc(const conv_shape *s, ops_precision prec);
static void state_free(conv_state *st);

/* The state for one chunk of s's rows (h output rows), or NULL where oneDNN
 * does not take the chunk's activations in the layouts conv_pack_block and
 * conv_unpack_block write and read (the chunked path has no other). */
static conv_state *chunk_state(const conv_shape *s, ops_precision prec, int h) {
    conv_shape c = *s;
    c.N = 1;
    c.H = h + s->k - 1;
    c.Ho = h;
    c.pad_top = 0;
    conv_state *st = state_alloc(&c, prec);
    int ok = 1;
    dnnl_primitive_desc_t pds[DK_COUNT];
    pds_make(pds, &c, prec, st->eng);
    for (int dk = 0; dk < DK_COUNT; dk++)
        for (int t = 0; t < T_COUNT; t++) {
            if (dk_role[dk][t] == R_WEI) continue;
            const int pk = pack_kind(dnnl_primitive_desc_query_md(pds[dk], dk_query[dk][t], 0),
                                     &c, dk, t, prec);
            ok &= t == T_OUT ? pk == 16 : pk != 0;
        }
    pds_free(pds);
    if (!ok) {
        state_free(st);
        return NULL;
    }
    return st;
}

/* A state for s, never chunked. */
static conv_state *state_alloc(const conv_shape *s, ops_precision prec) {
    conv_state *st = xcalloc(1, sizeof *st);
    st->s = *s;
    st->prec = prec;
    dnnl_ok(dnnl_engine_create(&st->eng, dnnl_cpu, 0), "engine", s);
    dnnl_ok(dnnl_stream_create(&st->strm, st->eng, dnnl_stream_default_flags), "stream", s);
    return st;
}

/* A state for s, with its chunk's state where chunk_rows says so. */
static conv_state *state_new(const conv_shape *s, ops_precision prec, size_t chunk_bytes) {
    conv_state *st = state_alloc(s, prec);
    const int h = chunk_rows(s, chunk_bytes);
    if (h) st->chunk = chunk_state(s, prec, h);
    return st;
}

static void state_free(conv_state *st) {
    if (!st) return;
    for (int i = 0; i < DNNL_ENTRIES; i++) entry_free(&st->e[i]);
    for (int r = 0; r < WS_COUNT; r++) free(st->spill[r]);
    state_free(st->chunk);
    dnnl_stream_destroy(st->strm);
    dnnl_engine_destroy(st->eng);
    free(st);
}

/* The workspace's regions for a call on s. */
static dnnl_ws ws_layout(const conv_state *st, const conv_shape *s) {
    return st->sized && s->N <= st->s.N ? st->w : ws_default(s);
}

/* Region r of the workspace ws (regions w) in primitive kind dk's layout for a
 * tensor of bytes, or the state's spill buffer where the region is smaller. */
static void *ws_region(conv_state *st, float *ws, const dnnl_ws *w, int dk, int r,
                       size_t bytes) {
    if (bytes <= w->f[dk][r] * sizeof(float)) {
        size_t off = 0;
        for (int q = 0; q < r; q++) off += w->f[dk][q];
        return ws + off;
    }
    if (bytes > st->spill_bytes[r]) {
        free(st->spill[r]);
        st->spill[r] = xmalloc(bytes);
        st->spill_bytes[r] = bytes;
    }
    return st->spill[r];
}

static conv_state *cd_state_create(const conv_shape *s, const conv_plan *p) {
    return state_new(s, p->precision, p->dnnl_chunk_bytes);
}

/* The entry for s->N on this many threads, with primitive kind dk made. */
static dnnl_op *state_op(conv_state *st, const conv_shape *s, int dk) {
    const int inpar = omp_in_parallel(), nthr = inpar ? 1 : omp_get_max_threads();
    dnnl_entry *e = NULL;
    for (int i = 0; i < DNNL_ENTRIES && !e; i++)
        if (st->e[i].N == s->N && st->e[i].nthr == nthr) e = &st->e[i];
    if (!e) {
        for (int i = 0; i < DNNL_ENTRIES && !e; i++)
            if (!st->e[i].N) e = &st->e[i];
        if (!e) {
            e = &st->e[st->next++ % DNNL_ENTRIES];
            entry_free(e);
        }
        e->N = s->N;
        e->nthr = nthr;
    }
    if (e->op[dk].prim) return &e->op[dk];
    /* oneDNN sizes its split of the work (and its barriers) by
     * omp_get_max_threads() at creation, but runs on one thread inside a
     * parallel region: there, create for one (this thread's setting only) */
    const int was = omp_get_max_threads();
    if (inpar) omp_set_num_threads(1);
    if (!e->fwd_pd) e->fwd_pd = op_pd(DK_FWD, s, st->prec, st->eng, NULL);
    op_make(&e->op[dk], dk, s, st->prec, st->eng, e->fwd_pd);
    if (inpar) omp_set_num_threads(was);
    return &e->op[dk];
}

/* Which part of the plain tensors a primitive works on: images n0 .. n0 + N - 1,
 * and of each the rows row0 .. row0 + nrows - 1 of an H x W plane (rows
 * outside 0 .. H - 1 are zeros going in and dropped coming out): the whole
 * tensor, or one chunk of rows (cd_rows). */
typedef struct {
    int n0, N, H, W, row0, nrows;
} dnnl_part;

static dnnl_part part_whole(int N, int H, int W) { return (dnnl_part){0, N, H, W, 0, H}; }

/* The rows of part q inside the plane: a .. b - 1. */
static void part_rows(const dnnl_part *q, int *a, int *b) {
    *a = q->row0 < 0 ? 0 : q->row0;
    *b = q->row0 + q->nrows > q->H ? q->H : q->row0 + q->nrows;
    if (*b < *a) *b = *a;
}

/* Part q of the plain NCHW activation x (C channels) through the fused
 * activation act (NULL or off: as it is) into d in the block layout B of
 * conv_pack_block, fp32 or bf16, rows outside the plane zero: one task per
 * image and block of channels. */
static void pack_input(void *d, int bf16, int B, const float *x, const conv_act *act,
                       const dnnl_part *q, int C) {
    const int CB = (C + B - 1) / B, tasks = q->N * CB, silu = act && act->silu;
    const size_t esz = bf16 ? sizeof(uint16_t) : sizeof(float), W = (size_t)q->W;
    const size_t HW = (size_t)q->H * W, blk = (size_t)B * q->nrows * W * esz;
    int a, b;
    part_rows(q, &a, &b);
#pragma omp parallel for schedule(static) if ((size_t)tasks * B * q->nrows * W >= OPS_PAR_MIN)
    for (int task = 0; task < tasks; task++) {
        const int n = q->n0 + task / CB, c0 = task % CB * B, nc = C - c0 < B ? C - c0 : B;
        conv_plane_norm nm[16];
        for (int c = 0; c < nc; c++) nm[c] = conv_act_norm(silu ? act : NULL, n, c0 + c, C);
        const size_t off = ((size_t)n * C + c0) * HW + (size_t)a * W;
        char *db = (char *)d + (size_t)task * blk;
        const size_t head = (size_t)(a - q->row0) * W * B * esz,
                     body = (size_t)(b - a) * W * B * esz;
        memset(db, 0, head);
        conv_pack_block(db + head, bf16, B, x + off, silu && act->mask ? act->mask + off : NULL,
                        silu, nm, nc, (size_t)(b - a) * W, HW);
        memset(db + head + body, 0, blk - head - body);
    }
}

static const float *act_input(const float *inp, const conv_act *act, const conv_shape *s,
                              float *ws);

/* Runs primitive kind dk: the inputs in0, in1 and the output out in the plain
 * layouts, act the fused activation of the input in the source's role (NULL:
 * none); the reorders (or conv_pack_block) go through the workspace's inner
 * regions. Returns NULL when the result is in out, or the output in nChw16c
 * fp32 (in the workspace) for the caller's conv_unpack_block. */
static const float *op_run(conv_state *st, const conv_shape *s, int dk, const float *in0,
                           const conv_act *act, const float *in1, float *out,
                           const float *bias, float *ws, const dnnl_part *src_part,
                           const dnnl_part *dst_part) {
    dnnl_op *o = state_op(st, s, dk);
    const dnnl_ws w = ws_layout(st, s);
    const void *ptr[T_COUNT] = {in0, in1, out};
    dnnl_exec_arg_t args[5];
    int na = 0;
    for (int t = 0; t < T_COUNT; t++) {
        const int role = dk_role[dk][t];
        const conv_act *a = role == R_SRC && act && act->silu ? act : NULL;
        if (o->pack[t]) {
            void *d = ws_region(st, ws, &w, dk, WS_IN0 + t, o->bytes[t]);
            const int src = role == R_SRC;
            if (t != T_OUT) /* the output is read back by the caller */
                pack_input(d, inner_dt(st->prec, dk, role) == dnnl_bf16, o->pack[t], ptr[t], a,
                           src ? src_part : dst_part, src ? s->Cin : s->Cout);
            dnnl_memory_set_data_handle(o->inner[t], d);
            args[na++] = (dnnl_exec_arg_t){dk_arg[dk][t], o->inner[t]};
            continue;
        }
        if (a)
            ptr[t] = act_input(ptr[t], a, s,
                               ws_region(st, ws, &w, dk, WS_ACT,
                                         (size_t)s->N * s->Cin * s->H * s->W * sizeof(float)));
        dnnl_memory_set_data_handle(o->plain[t], (void *)ptr[t]);
        dnnl_memory_t use = o->plain[t];
        if (o->reo[t]) {
            dnnl_memory_set_data_handle(o->inner[t],
                                        ws_region(st, ws, &w, dk, WS_IN0 + t, o->bytes[t]));
            use = o->inner[t];
            if (t != T_OUT) {
                dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, o->plain[t]}, {DNNL_ARG_TO, use}};
                dnnl_ok(dnnl_primitive_execute(o->reo[t], st->strm, 2, ra), "reorder", s);
            }
        }
        args[na++] = (dnnl_exec_arg_t){dk_arg[dk][t], use};
    }
    if (o->bias) {
        dnnl_memory_set_data_handle(o->bias, (void *)bias);
        args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, o->bias};
    }
    if (o->scratch_bytes)
        dnnl_memory_set_data_handle(o->scratch,
                                    ws_region(st, ws, &w, dk, WS_SCRATCH, o->scratch_bytes));
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, o->scratch};
    dnnl_ok(dnnl_primitive_execute(o->prim, st->strm, na, args), "convolution", s);
    if (o->pack[T_OUT]) {
        dnnl_ok(dnnl_stream_wait(st->strm), "stream wait", s);
        return ws_region(st, ws, &w, dk, WS_OUT, o->bytes[T_OUT]);
    }
    if (o->reo[T_OUT]) {
        dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, o->inner[T_OUT]}, {DNNL_ARG_TO, o->plain[T_OUT]}};
        dnnl_ok(dnnl_primitive_execute(o->reo[T_OUT], st->strm, 2, ra), "reorder", s);
    }
    dnnl_ok(dnnl_stream_wait(st->strm), "stream wait", s);
    return NULL;
}

/* The blocked output blk (nChw16c fp32, C channels, part q of the plain o)
 * into o: stored (accumulate 0) or added through the fused activation act
 * (NULL: none; o's values are then the activation's input gradient); rows
 * outside the plane dropped. */
static void unpack_output(float *o, const float *blk, int accumulate, const conv_act *act,
                          const dnnl_part *q, int C) {
    const int CB = (C + 15) / 16, tasks = q->N * CB, silu = act && act->silu;
    const size_t W = (size_t)q->W, HW = (size_t)q->H * W, bsz = (size_t)16 * q->nrows * W;
    int a, b;
    part_rows(q, &a, &b);
#pragma omp parallel for schedule(static) if ((size_t)tasks * bsz >= OPS_PAR_MIN)
    for (int task = 0; task < tasks; task++) {
        const int n = q->n0 + task / CB, c0 = task % CB * 16, nc = C - c0 < 16 ? C - c0 : 16;
        conv_plane_norm nm[16];
        for (int c = 0; c < nc; c++) nm[c] = conv_act_norm(silu ? act : NULL, n, c0 + c, C);
        const size_t off = ((size_t)n * C + c0) * HW + (size_t)a * W;
        conv_unpack_block(o + off, blk + (size_t)task * bsz + (size_t)(a - q->row0) * W * 16,
                          accumulate, silu ? act->g + off : NULL,
                          silu && act->mask ? act->mask + off : NULL, nm, nc,
                          (size_t)(b - a) * W, HW);
    }
}

/* The plan's state, or a temporary one (*tmp, freed by the caller) for a plan
 * without one. */
static conv_state *use_state(const conv_shape *s, const conv_plan *p, conv_state **tmp) {
    *tmp = NULL;
    if (p && p->state) return p->state;
    return *tmp = state_new(s, p ? p->precision : OPS_FP32, p ? p->dnnl_chunk_bytes : 0);
}

/* The conv's input: inp itself, or its fused activation in ws (the act
 * region). */
static const float *act_input(const float *inp, const conv_act *act, const conv_shape *s,
                              float *ws) {
    if (!act || !act->silu) return inp;
    const int C = s->Cin, tasks = s->N * C;
    const size_t HW = (size_t)s->H * s->W;
#pragma omp parallel for schedule(static) if ((size_t)tasks * HW >= OPS_PAR_MIN)
    for (int task = 0; task < tasks; task++) {
        const size_t plane = (size_t)task * HW;
        ops_silu_mask(ws + plane, inp + plane, act->mask ? act->mask + plane : NULL, HW,
                      conv_act_norm(act, task / C, task % C, C));
    }
    return ws;
}

static int cd_fits(const conv_shape *s) {
    return s->k >= 1 && s->stride >= 1;
}

/* The parts a call on s runs in: the whole batch at once, or (chunked) image by
 * image, chunk by chunk of output rows. */
static int parts_of(const conv_state *st, const conv_shape *s) {
    return st->chunk ? s->N * ((s->Ho + st->chunk->s.Ho - 1) / st->chunk->s.Ho) : 1;
}

/* Part i: the input rows it reads (*in: a chunk's with the rows around it) and
 * the output rows it writes (*o). */
static void part_at(const conv_state *st, const conv_shape *s, int i, dnnl_part *in,
                    dnnl_part *o) {
    if (!st->chunk) {
        *in = part_whole(s->N, s->H, s->W);
        *o = part_whole(s->N, s->Ho, s->Wo);
        return;
    }
    const int h = st->chunk->s.Ho, per = (s->Ho + h - 1) / h, n = i / per, r0 = i % per * h;
    *in = (dnnl_part){n, 1, s->H, s->W, r0 - s->pad_top, st->chunk->s.H};
    *o = (dnnl_part){n, 1, s->Ho, s->Wo, r0, h};
}

static void cd_forward(float *out, const float *inp, const conv_act *act, const float *weight,
                       const float *bias, const conv_shape *s, const conv_plan *p, float *ws) {
    conv_state *tmp, *st = use_state(s, p, &tmp);
    conv_state *run = st->chunk ? st->chunk : st;
    const conv_shape *rs = st->chunk ? &st->chunk->s : s;
    const dnnl_ws w = ws_layout(run, rs);
    float *zb = ws_region(run, ws, &w, DK_FWD, WS_BIAS, sizeof(float) * (size_t)s->Cout);
    if (!bias) {
        memset(zb, 0, sizeof(float) * (size_t)s->Cout);
        bias = zb;
    }
    for (int i = 0; i < parts_of(st, s); i++) {
        dnnl_part in, o;
        part_at(st, s, i, &in, &o);
        const float *blk = op_run(run, rs, DK_FWD, inp, act, weight, out, bias, ws, &in, &o);
        if (blk) unpack_output(out, blk, 0, NULL, &o, s->Cout);
    }
    state_free(tmp);
}

static void cd_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                        const conv_act *act, const float *weight, const conv_shape *s,
                        const conv_plan *p, float *ws) {
    conv_state *tmp, *st = use_state(s, p, &tmp);
    conv_state *run = st->chunk ? st->chunk : st;
    const conv_shape *rs = st->chunk ? &st->chunk->s : s;
    const dnnl_ws w = ws_layout(run, rs);
    const size_t nw = (size_t)s->Cout * s->Cin * s->k * s->k;
    const int C = s->Cin, tasks = s->N * C, silu = act && act->silu;
    const size_t HW = (size_t)s->H * s->W;
    for (int part = 0; part < parts_of(st, s); part++) {
        dnnl_part in, o;
        part_at(st, s, part, &in, &o);
        if (dweight) {
            float *t = ws_region(run, ws, &w, DK_BWD_WEIGHTS, WS_TMP, nw * sizeof(float));
            op_run(run, rs, DK_BWD_WEIGHTS, inp, act, dout, t, NULL, ws, &in, &o);
#pragma omp parallel for schedule(static) if (nw >= OPS_PAR_MIN)
            for (size_t i = 0; i < nw; i++) dweight[i] += t[i];
        }
        if (dinp) {
            float *t = ws_region(run, ws, &w, DK_BWD_DATA, WS_TMP,
                                 (size_t)tasks * HW * sizeof(float));
            const float *blk = op_run(run, rs, DK_BWD_DATA, dout, NULL, weight, t, NULL, ws,
                                      &in, &o);
            if (blk) {
                unpack_output(dinp, blk, 1, act, &in, C);
                continue;
            }
#pragma omp parallel for schedule(static) if ((size_t)tasks * HW >= OPS_PAR_MIN)
            for (int task = 0; task < tasks; task++) {
                const size_t plane = (size_t)task * HW;
                conv_unpad_plane(dinp + plane, t + plane, 0.0f, 1, silu ? act->g + plane : NULL,
                                 silu && act->mask ? act->mask + plane : NULL,
                                 conv_act_norm(silu ? act : NULL, task / C, task % C, C), s->H,
                                 s->W, s->W);
            }
        }
    }
    state_free(tmp);
}

static int cd_chunk_rows(const conv_plan *p) {
    return p && p->state && p->state->chunk ? p->state->chunk->s.Ho : 0;
}

const conv_formulation conv_dnnl_formulation = {
    .fits = cd_fits,
    .fused = 1,
    .workspace_floats = cd_workspace_floats,
    .state_create = cd_state_create,
    .state_free = state_free,
    .chunk_rows = cd_chunk_rows,
    .forward = cd_forward,
    .backward = cd_backward,
};
