/* pytorch-fid's Inception-v3 (FIDInceptionA/C/E on torchvision's Inception3),
 * forward only, BatchNorm folded into the convolutions (see inception.h). */
#include "common/eval/inception.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/io/tensor_file.h"
#include "common/ops/ops_extra.h"

/* ---------------------------------------------------------------- layer table */

static inception_conv_info g_layers[INCEPTION_CONVS];
static int g_nlayers;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void add(const char *prefix, const char *name, int cin, int cout, int kh, int kw, int stride,
                int ph, int pw) {
    inception_conv_info *l = &g_layers[g_nlayers++];
    snprintf(l->name, sizeof l->name, "%s%s%s", prefix, *prefix ? "." : "", name);
    l->cin = cin;
    l->cout = cout;
    l->kh = kh;
    l->kw = kw;
    l->stride = stride;
    l->ph = ph;
    l->pw = pw;
}

/* torchvision's InceptionA..E (pytorch-fid changes only pooling, not the convs) */
static void table_a(const char *p, int cin, int pool_features) {
    add(p, "branch1x1", cin, 64, 1, 1, 1, 0, 0);
    add(p, "branch5x5_1", cin, 48, 1, 1, 1, 0, 0);
    add(p, "branch5x5_2", 48, 64, 5, 5, 1, 2, 2);
    add(p, "branch3x3dbl_1", cin, 64, 1, 1, 1, 0, 0);
    add(p, "branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    add(p, "branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1);
    add(p, "branch_pool", cin, pool_features, 1, 1, 1, 0, 0);
}

static void table_b(const char *p, int cin) {
    add(p, "branch3x3", cin, 384, 3, 3, 2, 0, 0);
    add(p, "branch3x3dbl_1", cin, 64, 1, 1, 1, 0, 0);
    add(p, "branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1);
    add(p, "branch3x3dbl_3", 96, 96, 3, 3, 2, 0, 0);
}

static void table_c(const char *p, int c7) {
    add(p, "branch1x1", 768, 192, 1, 1, 1, 0, 0);
    add(p, "branch7x7_1", 768, c7, 1, 1, 1, 0, 0);
    add(p, "branch7x7_2", c7, c7, 1, 7, 1, 0, 3);
    add(p, "branch7x7_3", c7, 192, 7, 1, 1, 3, 0);
    add(p, "branch7x7dbl_1", 768, c7, 1, 1, 1, 0, 0);
    add(p, "branch7x7dbl_2", c7, c7, 7, 1, 1, 3, 0);
    add(p, "branch7x7dbl_3", c7, c7, 1, 7, 1, 0, 3);
    add(p, "branch7x7dbl_4", c7, c7, 7, 1, 1, 3, 0);
    add(p, "branch7x7dbl_5", c7, 192, 1, 7, 1, 0, 3);
    add(p, "branch_pool", 768, 192, 1, 1, 1, 0, 0);
}

static void table_d(const char *p) {
    add(p, "branch3x3_1", 768, 192, 1, 1, 1, 0, 0);
    add(p, "branch3x3_2", 192, 320, 3, 3, 2, 0, 0);
    add(p, "branch7x7x3_1", 768, 192, 1, 1, 1, 0, 0);
    add(p, "branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3);
    add(p, "branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0);
    add(p, "branch7x7x3_4", 192, 192, 3, 3, 2, 0, 0);
}

static void table_e(const char *p, int cin) {
    add(p, "branch1x1", cin, 320, 1, 1, 1, 0, 0);
    add(p, "branch3x3_1", cin, 384, 1, 1, 1, 0, 0);
    add(p, "branch3x3_2a", 384, 384, 1, 3, 1, 0, 1);
    add(p, "branch3x3_2b", 384, 384, 3, 1, 1, 1, 0);
    add(p, "branch3x3dbl_1", cin, 448, 1, 1, 1, 0, 0);
    add(p, "branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1);
    add(p, "branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1);
    add(p, "branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0);
    add(p, "branch_pool", cin, 192, 1, 1, 1, 0, 0);
}

static void build_table(void) {
    add("", "Conv2d_1a_3x3", 3, 32, 3, 3, 2, 0, 0);
    add("", "Conv2d_2a_3x3", 32, 32, 3, 3, 1, 0, 0);
    add("", "Conv2d_2b_3x3", 32, 64, 3, 3, 1, 1, 1);
    add("", "Conv2d_3b_1x1", 64, 80, 1, 1, 1, 0, 0);
    add("", "Conv2d_4a_3x3", 80, 192, 3, 3, 1, 0, 0);
    table_a("Mixed_5b", 192, 32);
    table_a("Mixed_5c", 256, 64);
    table_a("Mixed_5d", 288, 64);
    table_b("Mixed_6a", 288);
    table_c("Mixed_6b", 128);
    table_c("Mixed_6c", 160);
    table_c("Mixed_6d", 160);
    table_c("Mixed_6e", 192);
    table_d("Mixed_7a");
    table_e("Mixed_7b", 1280);
    table_e("Mixed_7c", 2048);
}

const inception_conv_info *inception_conv_layer(int i) {
    pthread_once(&g_once, build_table);
    return i >= 0 && i < g_nlayers ? &g_layers[i] : NULL;
}

/* ---------------------------------------------------------------- the network */

/* Largest activation: Conv2d_2b_3x3's output, 64 x 147 x 147. */
#define ACT_FLOATS ((size_t)64 * 147 * 147)

struct inception {
    float *w[INCEPTION_CONVS], *b[INCEPTION_CONVS];
    float *fc_w, *fc_b;
    float *buf[2], *t[3];
    float *ws;
    size_t ws_cap;
    int bad; /* an internal error was recorded during a forward pass */
};

void inception_free(inception *net) {
    if (!net) return;
    for (int i = 0; i < INCEPTION_CONVS; i++) {
        free(net->w[i]);
        free(net->b[i]);
    }
    free(net->fc_w);
    free(net->fc_b);
    for (int i = 0; i < 2; i++) free(net->buf[i]);
    for (int i = 0; i < 3; i++) free(net->t[i]);
    free(net->ws);
    free(net);
}

/* Reads tensor `name` of shape dims[0..nd-1] exactly (the network's), its values finite. */
static float *load_tensor(tensor_file_reader *r, const char *name, int nd, const int64_t *dims) {
    const tensor_file_entry *e = tensor_reader_find(r, name);
    if (!e) {
        err_set("%s: has no tensor '%s'", r->path, name);
        return NULL;
    }
    int ok = e->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = e->dims[i] == dims[i];
    if (!ok) {
        char got[160] = "", want[160] = "";
        for (int i = 0; i < e->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "[%lld]", (long long)e->dims[i]);
        for (int i = 0; i < nd; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "[%lld]", (long long)dims[i]);
        err_set("%s: tensor '%s' has shape %s, the network needs %s", r->path, name,
                e->ndim ? got : "[]", want);
        return NULL;
    }
    float *p = xfloats(e->count);
    if (tensor_reader_read(r, e, p) != 0) {
        free(p);
        return NULL;
    }
    for (size_t i = 0; i < e->count; i++)
        if (!isfinite(p[i])) {
            err_set("%s: tensor '%s' holds %g at index %zu", r->path, name, (double)p[i], i);
            free(p);
            return NULL;
        }
    return p;
}

int inception_load(inception **out, const char *path) {
    pthread_once(&g_once, build_table);
    *out = NULL;
    tensor_file_reader r;
    if (tensor_reader_open(&r, path) != 0) {
        err_prefix("Inception weights (convert pytorch-fid's with ops/convert_inception.py): ");
        return -1;
    }
    inception *net = xcalloc(1, sizeof *net);
    char name[80];
    for (int i = 0; i < INCEPTION_CONVS; i++) {
        const inception_conv_info *l = &g_layers[i];
        int64_t wd[4] = {l->cout, l->cin, l->kh, l->kw};
        snprintf(name, sizeof name, "%.60s.weight", l->name);
        net->w[i] = load_tensor(&r, name, 4, wd);
        snprintf(name, sizeof name, "%.60s.bias", l->name);
        if (net->w[i]) net->b[i] = load_tensor(&r, name, 1, wd);
        if (!net->w[i] || !net->b[i]) goto fail;
    }
    int64_t fd[2] = {INCEPTION_CLASSES, INCEPTION_FEATURES};
    net->fc_w = load_tensor(&r, "fc.weight", 2, fd);
    if (!net->fc_w) goto fail;
    net->fc_b = load_tensor(&r, "fc.bias", 1, fd);
    if (!net->fc_b) goto fail;
    tensor_reader_close(&r);
    for (int i = 0; i < 2; i++) net->buf[i] = xfloats(ACT_FLOATS);
    for (int i = 0; i < 3; i++) net->t[i] = xfloats(ACT_FLOATS);
    *out = net;
    return 0;
fail:
    tensor_reader_close(&r);
    err_prefix("Inception weights (convert pytorch-fid's with ops/convert_inception.py): ");
    inception_free(net);
    return -1;
}

/* A name missing from the table is an internal error: recorded (the forward pass
 * then returns -1), never printed from here. */
static int find_layer(inception *net, const char *prefix, const char *name) {
    char full[64];
    snprintf(full, sizeof full, "%s%s%s", prefix, *prefix ? "." : "", name);
    for (int i = 0; i < g_nlayers; i++)
        if (strcmp(g_layers[i].name, full) == 0) return i;
    if (!net->bad) err_set("inception: internal error: no layer %s", full);
    net->bad = 1;
    return -1;
}

/* BasicConv2d (conv + folded BN + ReLU) on one image; returns the output channels. */
static int conv(inception *net, const char *prefix, const char *name, const float *in, int H, int W,
                float *out, int *Ho, int *Wo) {
    int i = find_layer(net, prefix, name);
    if (i < 0) { /* nothing computed; the caller sees net->bad */
        if (Ho) *Ho = H;
        if (Wo) *Wo = W;
        return 0;
    }
    const inception_conv_info *l = &g_layers[i];
    conv_rect_shape s = conv_rect_shape_make(1, l->cin, H, W, l->cout, l->kh, l->kw, l->stride,
                                             l->stride, l->ph, l->pw);
    size_t need = conv_rect_workspace_floats(&s);
    if (need > net->ws_cap) { /* grows during the first image only */
        free(net->ws);
        net->ws = xfloats(need);
        net->ws_cap = need;
    }
    conv_rect_forward(out, in, net->w[i], net->b[i], &s, 1, 0, net->ws);
    if (Ho) *Ho = s.Ho;
    if (Wo) *Wo = s.Wo;
    return l->cout;
}

/* FIDInceptionA: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool(count_include_pad=False)-1x1 */
static int block_a(inception *net, const char *p, const float *in, int Cin, int H, int W, float *out) {
    size_t HW = (size_t)H * W;
    float *t1 = net->t[0], *t2 = net->t[1];
    int off = conv(net, p, "branch1x1", in, H, W, out, NULL, NULL);
    conv(net, p, "branch5x5_1", in, H, W, t1, NULL, NULL);
    off += conv(net, p, "branch5x5_2", t1, H, W, out + off * HW, NULL, NULL);
    conv(net, p, "branch3x3dbl_1", in, H, W, t1, NULL, NULL);
    conv(net, p, "branch3x3dbl_2", t1, H, W, t2, NULL, NULL);
    off += conv(net, p, "branch3x3dbl_3", t2, H, W, out + off * HW, NULL, NULL);
    avgpool2d_forward(t1, in, 1, Cin, H, W, 3, 1, 1, 0);
    off += conv(net, p, "branch_pool", t1, H, W, out + off * HW, NULL, NULL);
    return off;
}

/* InceptionB (torchvision's): 3x3/2 | 1x1-3x3-3x3/2 | maxpool 3/2 */
static int block_b(inception *net, const char *p, const float *in, int Cin, int H, int W, float *out,
                   int *Ho, int *Wo) {
    float *t1 = net->t[0], *t2 = net->t[1];
    int off = conv(net, p, "branch3x3", in, H, W, out, Ho, Wo);
    size_t HWo = (size_t)*Ho * *Wo;
    conv(net, p, "branch3x3dbl_1", in, H, W, t1, NULL, NULL);
    conv(net, p, "branch3x3dbl_2", t1, H, W, t2, NULL, NULL);
    off += conv(net, p, "branch3x3dbl_3", t2, H, W, out + off * HWo, NULL, NULL);
    maxpool2d_forward(out + off * HWo, in, 1, Cin, H, W, 3, 2, 0);
    return off + Cin;
}

/* FIDInceptionC: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool(count_include_pad=False)-1x1 */
static int block_c(inception *net, const char *p, const float *in, int Cin, int H, int W, float *out) {
    size_t HW = (size_t)H * W;
    float *t1 = net->t[0], *t2 = net->t[1];
    int off = conv(net, p, "branch1x1", in, H, W, out, NULL, NULL);
    conv(net, p, "branch7x7_1", in, H, W, t1, NULL, NULL);
    conv(net, p, "branch7x7_2", t1, H, W, t2, NULL, NULL);
    off += conv(net, p, "branch7x7_3", t2, H, W, out + off * HW, NULL, NULL);
    conv(net, p, "branch7x7dbl_1", in, H, W, t1, NULL, NULL);
    conv(net, p, "branch7x7dbl_2", t1, H, W, t2, NULL, NULL);
    conv(net, p, "branch7x7dbl_3", t2, H, W, t1, NULL, NULL);
    conv(net, p, "branch7x7dbl_4", t1, H, W, t2, NULL, NULL);
    off += conv(net, p, "branch7x7dbl_5", t2, H, W, out + off * HW, NULL, NULL);
    avgpool2d_forward(t1, in, 1, Cin, H, W, 3, 1, 1, 0);
    off += conv(net, p, "branch_pool", t1, H, W, out + off * HW, NULL, NULL);
    return off;
}

/* InceptionD (torchvision's): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool 3/2 */
static int block_d(inception *net, const char *p, const float *in, int Cin, int H, int W, float *out,
                   int *Ho, int *Wo) {
    float *t1 = net->t[0], *t2 = net->t[1];
    conv(net, p, "branch3x3_1", in, H, W, t1, NULL, NULL);
    int off = conv(net, p, "branch3x3_2", t1, H, W, out, Ho, Wo);
    size_t HWo = (size_t)*Ho * *Wo;
    conv(net, p, "branch7x7x3_1", in, H, W, t1, NULL, NULL);
    conv(net, p, "branch7x7x3_2", t1, H, W, t2, NULL, NULL);
    conv(net, p, "branch7x7x3_3", t2, H, W, t1, NULL, NULL);
    off += conv(net, p, "branch7x7x3_4", t1, H, W, out + off * HWo, NULL, NULL);
    maxpool2d_forward(out + off * HWo, in, 1, Cin, H, W, 3, 2, 0);
    return off + Cin;
}

/* FIDInceptionE_1 (avg_pool, count_include_pad=False) and FIDInceptionE_2 (max_pool 3/1 pad 1):
 * 1x1 | 1x1-[1x3, 3x1] | 1x1-3x3-[1x3, 3x1] | pool-1x1 */
static int block_e(inception *net, const char *p, const float *in, int Cin, int H, int W, float *out,
                   int max_pool) {
    size_t HW = (size_t)H * W;
    float *t1 = net->t[0], *t2 = net->t[1];
    int off = conv(net, p, "branch1x1", in, H, W, out, NULL, NULL);
    conv(net, p, "branch3x3_1", in, H, W, t1, NULL, NULL);
    off += conv(net, p, "branch3x3_2a", t1, H, W, out + off * HW, NULL, NULL);
    off += conv(net, p, "branch3x3_2b", t1, H, W, out + off * HW, NULL, NULL);
    conv(net, p, "branch3x3dbl_1", in, H, W, t1, NULL, NULL);
    conv(net, p, "branch3x3dbl_2", t1, H, W, t2, NULL, NULL);
    off += conv(net, p, "branch3x3dbl_3a", t2, H, W, out + off * HW, NULL, NULL);
    off += conv(net, p, "branch3x3dbl_3b", t2, H, W, out + off * HW, NULL, NULL);
    if (max_pool) maxpool2d_forward(t1, in, 1, Cin, H, W, 3, 1, 1);
    else avgpool2d_forward(t1, in, 1, Cin, H, W, 3, 1, 1, 0);
    off += conv(net, p, "branch_pool", t1, H, W, out + off * HW, NULL, NULL);
    return off;
}

static void forward_one(inception *net, const float *x, int H, int W, float *pool3, float *logits) {
    float *a = net->buf[0], *b = net->buf[1];
    const int S = INCEPTION_SIZE;
    resize_bilinear_forward(a, x, 1, 3, H, W, S, S);
    for (size_t i = 0; i < (size_t)3 * S * S; i++) a[i] = 2.0f * a[i] - 1.0f;
    int h = S, w = S, c;
    conv(net, "", "Conv2d_1a_3x3", a, h, w, b, &h, &w);
    conv(net, "", "Conv2d_2a_3x3", b, h, w, a, &h, &w);
    c = conv(net, "", "Conv2d_2b_3x3", a, h, w, b, &h, &w);
    maxpool2d_forward(a, b, 1, c, h, w, 3, 2, 0);
    h = window_out_size(h, 3, 2, 0);
    w = window_out_size(w, 3, 2, 0);
    conv(net, "", "Conv2d_3b_1x1", a, h, w, b, &h, &w);
    c = conv(net, "", "Conv2d_4a_3x3", b, h, w, a, &h, &w);
    maxpool2d_forward(b, a, 1, c, h, w, 3, 2, 0);
    h = window_out_size(h, 3, 2, 0);
    w = window_out_size(w, 3, 2, 0);
    c = block_a(net, "Mixed_5b", b, c, h, w, a);
    c = block_a(net, "Mixed_5c", a, c, h, w, b);
    c = block_a(net, "Mixed_5d", b, c, h, w, a);
    c = block_b(net, "Mixed_6a", a, c, h, w, b, &h, &w);
    c = block_c(net, "Mixed_6b", b, c, h, w, a);
    c = block_c(net, "Mixed_6c", a, c, h, w, b);
    c = block_c(net, "Mixed_6d", b, c, h, w, a);
    c = block_c(net, "Mixed_6e", a, c, h, w, b);
    c = block_d(net, "Mixed_7a", b, c, h, w, a, &h, &w);
    c = block_e(net, "Mixed_7b", a, c, h, w, b, 0);
    c = block_e(net, "Mixed_7c", b, c, h, w, a, 1);
    global_avgpool_forward(pool3, a, 1, c, h * w);
    if (logits)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, INCEPTION_CLASSES, INCEPTION_FEATURES, 1.0f,
                    net->fc_w, INCEPTION_FEATURES, pool3, 1, 0.0f, logits, 1);
}

int inception_forward(inception *net, const float *x, int N, int H, int W, float *pool3,
                      float *logits) {
    for (int n = 0; n < N && !net->bad; n++)
        forward_one(net, x + (size_t)n * 3 * H * W, H, W, pool3 + (size_t)n * INCEPTION_FEATURES,
                    logits ? logits + (size_t)n * INCEPTION_CLASSES : NULL);
    return net->bad ? -1 : 0;
}

int inception_forward_u8(inception *net, const uint8_t *nhwc, int N, int H, int W, int C,
                         float *pool3, float *logits) {
    if (C != 1 && C != 3)
        return err_set("inception: images have %d channels (1 or 3 supported)", C);
    size_t HW = (size_t)H * W;
    float *x = xfloats(3 * HW);
    for (int n = 0; n < N; n++) {
        const uint8_t *img = nhwc + (size_t)n * HW * C;
        for (int ch = 0; ch < 3; ch++)
            for (size_t i = 0; i < HW; i++)
                x[ch * HW + i] = (float)img[i * C + (C == 3 ? ch : 0)] / 255.0f;
        forward_one(net, x, H, W, pool3 + (size_t)n * INCEPTION_FEATURES,
                    logits ? logits + (size_t)n * INCEPTION_CLASSES : NULL);
    }
    free(x);
    return net->bad ? -1 : 0;
}
