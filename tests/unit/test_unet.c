/* U-Net structure tests: the paper's parameter counts, the parameter table, the
 * authors' initialisation, and forward-pass consistency (forward-only model equals
 * the training model; a batch equals its images run one by one). Numerical
 * correctness against PyTorch is tests/ref/test_unet_ref.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/ckpt/checkpoint.h"
#include "common/config/config.h"
#include "common/core/util.h"
#include "common/env/env_opts.h"
#include "common/model/unet.h"
#include "common/ops/ops.h"
#include "common/rng/rng.h"
#include "tests/unit/test.h"

/* one lane: the model checks here need no threads */
static const unet_options one_lane = {.lanes = 1, .prepare_budget = UNET_PREPARE_AUTO};

static void check_count(const char *path, size_t expect) {
    config c;
    if (config_load_file(&c, path) != 0) {
        test_check(0, "load %s: %s", path, err_msg());
        return;
    }
    unet *m = unet_create(&c.model, 1, 0, NULL);
    if (!test_check(m != NULL, "build %s", path)) return;
    test_check(unet_num_params(m) == expect, "%s: %zu parameters (paper: %zu)", path,
               unet_num_params(m), expect);
    /* table: contiguous, unique names */
    const unet_tensor *t = unet_tensors(m);
    size_t off = 0;
    int ok = 1, unique = 1;
    for (int i = 0; i < unet_num_tensors(m); i++) {
        if (t[i].offset != off) ok = 0;
        off += t[i].size;
        for (int j = 0; j < i; j++)
            if (strcmp(t[i].name, t[j].name) == 0) unique = 0;
    }
    test_check(ok && off == expect, "%s: tensor table is contiguous", path);
    test_check(unique, "%s: tensor names are unique", path);
    unet_free(m);
}

static void check_init(void) {
    config c;
    config_load_file(&c, "configs/fashion_mnist.yaml");
    unet *m = unet_create(&c.model, 1, 0, NULL);
    size_t P = unet_num_params(m);
    float *p = xfloats(P), *q = xfloats(P);
    unet_init(m, p, 42);
    unet_init(m, q, 42);
    test_check(memcmp(p, q, P * sizeof *p) == 0, "init is deterministic in the seed");
    const unet_tensor *t = unet_tensors(m);
    int bad_ones = 0, bad_zero = 0, bad_limit = 0, n_tiny = 0;
    for (int i = 0; i < unet_num_tensors(m); i++) {
        const float *v = p + t[i].offset;
        const char *nm = t[i].name;
        size_t len = strlen(nm);
        int is_bias = len > 5 && strcmp(nm + len - 5, ".bias") == 0;
        int is_norm = strstr(nm, "norm") != NULL;
        int tiny = strstr(nm, ".conv2.weight") || strstr(nm, "proj_out.weight") ||
                   strcmp(nm, "conv_out.weight") == 0;
        double amax = 0;
        for (size_t j = 0; j < t[i].size; j++) amax = fmax(amax, fabs(v[j]));
        if (strcmp(nm, "label_emb.weight") == 0) {
            /* N(0, 1) as nn.Embedding: mean and variance of its 11 x 128 draws */
            double mean = 0, var = 0;
            for (size_t j = 0; j < t[i].size; j++) mean += v[j];
            mean /= (double)t[i].size;
            for (size_t j = 0; j < t[i].size; j++) var += (v[j] - mean) * (v[j] - mean);
            var /= (double)t[i].size;
            test_check(t[i].ndim == 2 && t[i].shape[0] == c.model.num_classes + 1 &&
                           t[i].shape[1] == 4 * c.model.ch && fabs(mean) < 0.1 && fabs(var - 1) < 0.1,
                       "label_emb.weight [%d x %d] starts N(0, 1): mean %.3f, variance %.3f",
                       t[i].shape[0], t[i].shape[1], mean, var);
        } else if (is_norm && !is_bias) {
            for (size_t j = 0; j < t[i].size; j++) bad_ones += v[j] != 1.0f;
        } else if (is_bias) {
            bad_zero += amax != 0;
        } else {
            double rec = t[i].ndim == 4 ? (double)t[i].shape[2] * t[i].shape[3] : 1.0;
            double scale = tiny ? 1e-10 : 1.0;
            double limit = sqrt(3.0 * scale / ((t[i].shape[0] + t[i].shape[1]) * rec / 2.0));
            if (amax > limit * (1 + 1e-6) || amax < 0.5 * limit) bad_limit++;
            n_tiny += tiny;
        }
    }
    test_check(bad_ones == 0, "GroupNorm gammas start at 1");
    test_check(bad_zero == 0, "biases and GroupNorm betas start at 0");
    test_check(bad_limit == 0, "weights are variance-scaling fan_avg uniform within their limit");
    /* fashion_mnist: 3 levels x (2 down + 3 up) + 2 mid = 17 conv2, 2+3 attn at 14 + mid = 6 proj_out, conv_out */
    test_check(n_tiny == 17 + 6 + 1, "1e-10 init on every conv2, proj_out and conv_out (%d)", n_tiny);
    free(p);
    free(q);
    unet_free(m);
}

/* The small 3-channel model of the reference tests. */
static int load_small(config *c) {
    if (config_load_file(c, "tests/configs/ref_small.yaml") == 0) return 1;
    test_check(0, "load tests/configs/ref_small.yaml: %s", err_msg());
    return 0;
}

/* P parameters uniform in [-0.1, 0.1), keyed on seed. */
static float *random_params(size_t P, uint64_t seed) {
    float *p = xfloats(P);
    rng_key kp = {seed, 0, 0, RNG_PURPOSE_INIT};
    rng_uniform(&kp, p, P);
    for (size_t i = 0; i < P; i++) p[i] = 0.2f * (p[i] - 0.5f);
    return p;
}

static void check_forward_consistency(void) {
    config c;
    if (!load_small(&c)) return;
    const int N = 3;
    unet *train = unet_create(&c.model, N, 1, NULL), *eval = unet_create(&c.model, N, 0, NULL),
         *one = unet_create(&c.model, 1, 0, NULL);
    size_t P = unet_num_params(train);
    float *p = random_params(P, 5);
    size_t D = (size_t)c.model.in_channels * c.model.image_size * c.model.image_size;
    float *x = xfloats(N * D), *a = xfloats(N * D), *b = xfloats(N * D), *s = xfloats(N * D);
    rng_key kx = {5, 1, 0, RNG_PURPOSE_NOISE};
    rng_normal(&kx, x, N * D);
    int t[3] = {0, 17, 99};
    unet_forward(train, p, x, t, NULL, N, NULL, a);
    unet_forward(eval, p, x, t, NULL, N, NULL, b);
    for (int n = 0; n < N; n++) unet_forward(one, p, x + n * D, t + n, NULL, 1, NULL, s + n * D);
    test_check(memcmp(a, b, N * D * sizeof *a) == 0,
               "forward-only model gives bit-identical output to the training model");
    double e = test_rel_err(s, a, N * D);
    test_check(e < 1e-5, "a batch of 3 equals its images run one by one (rel err %.2e)", e);
    double amax = 0;
    for (size_t i = 0; i < N * D; i++) amax = fmax(amax, fabs(a[i]));
    test_check(amax > 1e-3 && isfinite(amax), "output is non-trivial (max |eps| %.3g)", amax);
    /* dropout masks depend on sample ids, not on batch position */
    uint64_t ids[3] = {10, 11, 12};
    unet_rng r = {9, 3, ids};
    unet_forward(train, p, x, t, NULL, N, &r, a);
    unet *train1 = unet_create(&c.model, 1, 1, NULL);
    unet_rng r1 = {9, 3, ids + 2};
    unet_forward(train1, p, x + 2 * D, t + 2, NULL, 1, &r1, s);
    e = test_rel_err(s, a + 2 * D, D);
    test_check(e < 1e-5, "dropout keyed on the sample id: image 2 alone equals image 2 in a batch (%.2e)", e);
    free(p); free(x); free(a); free(b); free(s);
    unet_free(train); unet_free(eval); unet_free(one); unet_free(train1);
}

/* unet_prepare: forward passes over prepared kernels are bit-identical to plain
 * ones, in lanes and per-op threading, with either forward tile; the prepared
 * kernels are what is read, and unet_unprepare ends that. Winograd forced on the
 * small model (auto takes it from 128 channels on). */
static void check_prepare(void) {
    config c;
    if (!load_small(&c)) return;
    const int N = 3;
    for (int tile = 2; tile <= 4; tile += 2)
        for (int lanes = 1; lanes <= 2; lanes++) {
            unet_options o = unet_options_default();
            o.lanes = lanes;
            o.conv = (conv_algo_opts){.algo = CONV_ALGO_WINOGRAD, .wino_tile = tile};
            unet *m = unet_create(&c.model, N, 0, &o);
            float *p = random_params(unet_num_params(m), 6);
            size_t D = (size_t)c.model.in_channels * c.model.image_size * c.model.image_size;
            float *x = xfloats(N * D), *a = xfloats(N * D), *b = xfloats(N * D);
            rng_key kx = {6, 1, 0, RNG_PURPOSE_NOISE};
            rng_normal(&kx, x, N * D);
            int t[3] = {3, 500, 999};
            unet_forward(m, p, x, t, NULL, N, NULL, a);
            test_check(!unet_prepared(m, p) && unet_prepare(m, p) == 0 && unet_prepared(m, p),
                       "tile %d, %d lane(s): unet_prepare", tile, lanes);
            unet_forward(m, p, x, t, NULL, N, NULL, b);
            test_check(memcmp(a, b, N * D * sizeof *a) == 0,
                       "tile %d, %d lane(s): forward over prepared kernels is bit-identical",
                       tile, lanes);
            const int w = unet_find_tensor(m, "down.0.block.0.conv1.weight");
            float *w0 = p + unet_tensors(m)[w].offset + 4; /* a centre tap */
            const float w0_was = *w0;
            *w0 += 1.0f; /* not allowed while prepared: shows which is read */
            unet_forward(m, p, x, t, NULL, N, NULL, b);
            test_check(memcmp(a, b, N * D * sizeof *a) == 0,
                       "tile %d, %d lane(s): the prepared kernels are read", tile, lanes);
            const size_t bytes = unet_prepared_bytes(m);
            unet_unprepare(m);
            unet_forward(m, p, x, t, NULL, N, NULL, b);
            test_check(!unet_prepared(m, p) && memcmp(a, b, N * D * sizeof *a) != 0 &&
                           unet_prepared_bytes(m) == 0,
                       "tile %d, %d lane(s): unprepared, the weights are read again", tile,
                       lanes);
            *w0 = w0_was;
            /* the budget: $DDPM_PREPARE_MIB refuses (0: the model's budget, the
             * others: env_unet_options), and the forward is unchanged */
            const char *bad[] = {"0", "-1", "1.5", "lots"};
            for (int i = 0; i < 4 && tile == 4 && lanes == 2; i++) {
                setenv("DDPM_PREPARE_MIB", bad[i], 1);
                unet_options ob = o;
                unet *mb = env_unet_options(&ob) == 0 ? unet_create(&c.model, N, 0, &ob) : NULL;
                const int rc = mb ? unet_prepare(mb, p) : -1;
                test_check(rc == -1 && !(mb && unet_prepared(mb, p)) &&
                               strstr(err_msg(), "DDPM_PREPARE_MIB") != NULL,
                           "DDPM_PREPARE_MIB='%s': nothing prepared (%s)", bad[i], err_msg());
                if (mb) unet_forward(mb, p, x, t, NULL, N, NULL, b);
                test_check(mb == NULL || memcmp(a, b, N * D * sizeof *a) == 0,
                           "DDPM_PREPARE_MIB='%s': the forward is unchanged", bad[i]);
                unet_free(mb);
            }
            if (tile == 4 && lanes == 2) {
                setenv("DDPM_PREPARE_MIB", "64", 1);
                unet_options ob = o;
                unet *mb = env_unet_options(&ob) == 0 ? unet_create(&c.model, N, 0, &ob) : NULL;
                test_check(mb && bytes > 0 && bytes < (64u << 20) && unet_prepare(mb, p) == 0 &&
                               unet_prepared_bytes(mb) == bytes,
                           "DDPM_PREPARE_MIB=64: prepared within it (%zu bytes)", bytes);
                unsetenv("DDPM_PREPARE_MIB");
                unet_free(mb);
            }
            free(p); free(x); free(a); free(b);
            unet_free(m);
        }
    /* the default budget's source: at most /proc/meminfo's MemAvailable */
    unsigned long long kb = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    if (f) fclose(f);
    const size_t avail = mem_available_bytes();
    test_check(avail > 0 && (kb == 0 || avail <= (size_t)kb * 1024 + (64u << 20)),
               "mem_available_bytes: %zu MiB (MemAvailable %llu MiB)", avail >> 20, kb >> 10);
}

/* Two models in one process keep their own convolution choices and prepared
 * kernels: a Winograd model, prepared, and a shifted-GEMM model over the same
 * params buffer, built and run in turn, each give what they gave alone. */
static void check_two_models(void) {
    config c;
    if (!load_small(&c)) return;
    const int N = 2;
    unet_options ow = unet_options_default(), os = unet_options_default();
    ow.conv.algo = CONV_ALGO_WINOGRAD;
    os.conv.algo = CONV_ALGO_SHIFT;
    unet *mw = unet_create(&c.model, N, 0, &ow);
    float *p = random_params(unet_num_params(mw), 7);
    size_t D = (size_t)c.model.in_channels * c.model.image_size * c.model.image_size;
    float *x = xfloats(N * D), *a = xfloats(N * D), *b = xfloats(N * D), *e = xfloats(N * D);
    rng_key kx = {7, 1, 0, RNG_PURPOSE_NOISE};
    rng_normal(&kx, x, N * D);
    int t[2] = {5, 700};
    unet_forward(mw, p, x, t, NULL, N, NULL, a);
    unet *ms = unet_create(&c.model, N, 0, &os);
    unet_forward(ms, p, x, t, NULL, N, NULL, e);
    test_check(unet_prepare(mw, p) == 0, "two models: the Winograd one prepared");
    unet_forward(mw, p, x, t, NULL, N, NULL, b);
    test_check(memcmp(a, b, N * D * sizeof *a) == 0,
               "two models: the Winograd model is unchanged by the other's creation");
    unet_forward(ms, p, x, t, NULL, N, NULL, b);
    test_check(memcmp(e, b, N * D * sizeof *e) == 0,
               "two models: the shifted-GEMM model ignores the other's prepared kernels");
    free(p); free(x); free(a); free(b); free(e);
    unet_free(mw);
    unet_free(ms);
}

/* A batch whose last conv chunk holds one image (fashion_mnist at 28x28: chunks of
 * 5 images, N = 6) equals its images run one by one. */
static void check_tail_chunk(void) {
    config c;
    if (config_load_file(&c, "configs/fashion_mnist.yaml") != 0) {
        test_check(0, "load configs/fashion_mnist.yaml: %s", err_msg());
        return;
    }
    const int N = 6;
    unet *m = unet_create(&c.model, N, 0, NULL), *one = unet_create(&c.model, 1, 0, NULL);
    size_t P = unet_num_params(m), D = 28 * 28;
    float *p = xfloats(P), *x = xfloats(N * D), *a = xfloats(N * D), *b = xfloats(N * D);
    rng_key kp = {6, 0, 0, RNG_PURPOSE_INIT};
    rng_uniform(&kp, p, P);
    for (size_t i = 0; i < P; i++) p[i] = 0.2f * (p[i] - 0.5f);
    rng_key kx = {6, 1, 0, RNG_PURPOSE_NOISE};
    rng_normal(&kx, x, N * D);
    int t[6] = {0, 100, 200, 300, 400, 999};
    unet_forward(m, p, x, t, NULL, N, NULL, a);
    for (int n = 0; n < N; n++) unet_forward(one, p, x + n * D, t + n, NULL, 1, NULL, b + n * D);
    double e = test_rel_err(a + 5 * D, b + 5 * D, D);
    test_check(e < 1e-5, "fashion_mnist batch of 6 (last conv chunk of 1 image): image 5 equals "
               "its lone run (rel err %.2e)", e);
    free(p); free(x); free(a); free(b);
    unet_free(m);
    unet_free(one);
}

/* model.learn_sigma: conv_out (and only it) has 2 x in_channels outputs, the
 * parameter count grows by its extra weights and biases, and a batch run in lanes
 * places each image's [eps | v] output where its lone run does. */
static void check_learn_sigma(void) {
    config c;
    if (config_load_file(&c, "configs/fashion_mnist.yaml") != 0) {
        test_check(0, "load configs/fashion_mnist.yaml: %s", err_msg());
        return;
    }
    unet *plain = unet_create(&c.model, 1, 0, &one_lane);
    c.model.learn_sigma = 1;
    const unet_options two = {.lanes = 2, .prepare_budget = UNET_PREPARE_AUTO};
    const int N = 3;
    unet *m = unet_create(&c.model, N, 1, &two), *one = unet_create(&c.model, 1, 0, &one_lane);
    if (!test_check(plain && m && one, "build fashion_mnist with learn_sigma")) return;
    const unet_tensor *a = unet_tensors(plain), *b = unet_tensors(m);
    int same = unet_num_tensors(plain) == unet_num_tensors(m);
    for (int i = 0; same && i < unet_num_tensors(m); i++)
        if (strncmp(b[i].name, "conv_out.", 9) != 0)
            same = a[i].size == b[i].size && strcmp(a[i].name, b[i].name) == 0;
    const unet_tensor *w = &b[unet_find_tensor(m, "conv_out.weight")];
    size_t extra = (size_t)w->shape[1] * 3 * 3 + 1; /* one more output channel's kernel, bias */
    test_check(same && w->shape[0] == 2 && unet_out_channels(m) == 2 &&
                   unet_out_channels(plain) == 1 &&
                   unet_num_params(m) == unet_num_params(plain) + extra,
               "learn_sigma: conv_out has %d outputs, every other tensor unchanged, %zu = %zu + %zu "
               "parameters", w->shape[0], unet_num_params(m), unet_num_params(plain), extra);
    size_t P = unet_num_params(m), D = 28 * 28;
    float *p = xfloats(P), *x = xfloats(N * D), *o = xfloats(2 * N * D), *s = xfloats(2 * N * D);
    rng_key kp = {8, 0, 0, RNG_PURPOSE_INIT};
    rng_uniform(&kp, p, P);
    for (size_t i = 0; i < P; i++) p[i] = 0.2f * (p[i] - 0.5f);
    rng_key kx = {8, 1, 0, RNG_PURPOSE_NOISE};
    rng_normal(&kx, x, N * D);
    int t[3] = {0, 500, 999};
    unet_forward(m, p, x, t, NULL, N, NULL, o);
    for (int n = 0; n < N; n++) unet_forward(one, p, x + n * D, t + n, NULL, 1, NULL, s + 2 * n * D);
    double e = test_rel_err(o, s, 2 * N * D);
    test_check(unet_num_lanes(m) == 2 && e < 1e-5,
               "learn_sigma: a batch of 3 in 2 lanes equals each image's lone run, eps and v "
               "(rel err %.2e)", e);
    free(p); free(x); free(o); free(s);
    unet_free(plain);
    unet_free(m);
    unet_free(one);
}

/* DDPM_LANES is read strictly: a malformed value fails env_unet_options with a
 * message naming the variable; a valid one sets the lane count. */
/* A model built as the programs build theirs: options from the environment
 * (env_unet_options), NULL with err_msg() when they are malformed; *o receives
 * them. */
static unet *env_model(const model_config *mc, int max_batch, int with_backward,
                       unet_options *o) {
    unet_options tmp = unet_options_default();
    if (!o) o = &tmp;
    *o = unet_options_default();
    return env_unet_options(o) == 0 ? unet_create(mc, max_batch, with_backward, o) : NULL;
}

static void check_lanes_env(void) {
    config c;
    if (!test_check(config_load_file(&c, "configs/tiny.yaml") == 0, "load tiny")) return;
    const char *bad[] = {"abc", "0", "-2", "3x", "5000"};
    for (int i = 0; i < 5; i++) {
        setenv("DDPM_LANES", bad[i], 1);
        unet *m = env_model(&c.model, 4, 1, NULL);
        test_check(m == NULL && strstr(err_msg(), "DDPM_LANES") != NULL,
                   "DDPM_LANES=%s refused: %s", bad[i], m ? "(built)" : err_msg());
        unet_free(m);
    }
    setenv("DDPM_LANES", "2", 1);
    unet *m = env_model(&c.model, 4, 1, NULL);
    test_check(m && unet_num_lanes(m) == 2, "DDPM_LANES=2: two lanes");
    unet_free(m);
    unsetenv("DDPM_LANES");
}

/* DDPM_CONV likewise: auto, shift, winograd or dnnl, anything else refused. */
static void check_conv_env(void) {
    config c;
    if (!test_check(config_load_file(&c, "configs/tiny.yaml") == 0, "load tiny")) return;
    const char *bad[] = {"Winograd", "fast", "shift ", "1", "winograd3", "winograd44", "DNNL",
                         "onednn"};
    for (int i = 0; i < 8; i++) {
        setenv("DDPM_CONV", bad[i], 1);
        unet *m = env_model(&c.model, 2, 1, NULL);
        test_check(m == NULL && strstr(err_msg(), "DDPM_CONV") != NULL,
                   "DDPM_CONV='%s' refused: %s", bad[i], m ? "(built)" : err_msg());
        unet_free(m);
    }
    /* the formulation the options give (plans, as unet_create makes them per layer) */
    conv_shape s = conv_shape_make(1, 32, 8, 8, 32, 3, 1);
    conv_shape s16 = conv_shape_make(1, 32, 16, 16, 32, 3, 1);
    unet_options o;
#define PLAN(sh) conv_plan_make(&(sh), &o.conv)
    setenv("DDPM_CONV", "winograd", 1);
    unet *m = env_model(&c.model, 2, 1, &o);
    test_check(m && PLAN(s).form == CONV_FORM_WINOGRAD,
               "DDPM_CONV=winograd: 3x3 convs of 32 channels use it");
    unet_free(m);
    test_check(PLAN(s).wino_tile == 2 && PLAN(s16).wino_tile == 4,
               "DDPM_CONV=winograd: forward tile F(2x2) on 8x8 maps, F(4x4) from 16 wide (%d, %d)",
               PLAN(s).wino_tile, PLAN(s16).wino_tile);
    for (int t = 2; t <= 4; t += 2) {
        setenv("DDPM_CONV", t == 2 ? "winograd2" : "winograd4", 1);
        m = env_model(&c.model, 2, 1, &o);
        test_check(m && PLAN(s).wino_tile == t && PLAN(s16).wino_tile == t,
                   "DDPM_CONV=winograd%d: forward tile %d on 8x8 and 16x16 maps", t, t);
        unet_free(m);
    }
    setenv("DDPM_CONV", "dnnl", 1);
    m = env_model(&c.model, 2, 1, &o);
    conv_shape s2 = conv_shape_make(1, 32, 8, 8, 32, 3, 2);
    conv_shape s1x1 = conv_shape_make(1, 32, 8, 8, 64, 1, 1);
    test_check(m && PLAN(s).form == CONV_FORM_DNNL && PLAN(s2).form == CONV_FORM_DNNL &&
                   PLAN(s1x1).form == CONV_FORM_DNNL,
               "DDPM_CONV=dnnl: every convolution (3x3, stride 2, 1x1) by oneDNN");
    unet_free(m);
    setenv("DDPM_CONV", "auto", 1);
    m = env_model(&c.model, 2, 1, &o);
    test_check(m && PLAN(s).form != CONV_FORM_WINOGRAD && PLAN(s).wino_tile == 0,
               "DDPM_CONV=auto: not below %d channels", CONV_WINOGRAD_MIN_CH);
#undef PLAN
    unet_free(m);
    unsetenv("DDPM_CONV");
    /* a malformed DDPM_PREPARE_MIB stops the program when it builds its model */
    setenv("DDPM_PREPARE_MIB", "lots", 1);
    m = env_model(&c.model, 2, 0, NULL);
    test_check(m == NULL && strstr(err_msg(), "DDPM_PREPARE_MIB") != NULL,
               "DDPM_PREPARE_MIB='lots' refused by env_unet_options: %s",
               m ? "(built)" : err_msg());
    unet_free(m);
    unsetenv("DDPM_PREPARE_MIB");
}

/* ---------- the model's limits (issue #14 row 1) ---------- */

/* A model config with L levels of multiplier 1, B res blocks, no attention. */
static model_config deep_config(int image, int levels, int blocks) {
    model_config mc;
    memset(&mc, 0, sizeof mc);
    mc.image_size = image;
    mc.in_channels = 1;
    mc.ch = 32;
    mc.num_levels = levels;
    for (int i = 0; i < levels; i++) mc.ch_mult[i] = 1;
    mc.num_res_blocks = blocks;
    mc.resamp_with_conv = 1;
    return mc;
}

/* Row 1: create() kept its skip connections in int hs[256], while the config
 * allows 8 levels x 64 blocks (520 skips): the 5 x 64 model smashed the
 * stack. The deepest model the limits allow passes the model's check, and the
 * issue's builds (a forward pass of it costs seconds under ASan: not run). */
static void check_deep_models(void) {
    model_config mc = deep_config(16, 5, 64);
    unet_config_error e;
    int rc = unet_check_config(&mc, &e);
    test_check(rc == 0, "5 levels x 64 blocks passes the model's check (%s)", rc ? err_msg() : "ok");
    unet *m = unet_create(&mc, 1, 0, &one_lane);
    test_check(m != NULL, "5 levels x 64 blocks builds (was: stack overflow in create) %s",
               m ? "" : err_msg());
    if (m) {
        /* 1 + 5*64 + 4 skips; up path 5*65 res blocks */
        test_check(unet_find_tensor(m, "up.0.block.64.conv2.weight") >= 0 &&
                       unet_find_tensor(m, "down.4.block.63.conv2.weight") >= 0 &&
                       unet_find_tensor(m, "up.0.block.65.conv2.weight") < 0,
                   "5 x 64: every block's tensors present, %d tensors", unet_num_tensors(m));
        unet_free(m);
    }
    mc = deep_config(128, UNET_MAX_LEVELS, UNET_MAX_RES_BLOCKS);
    rc = unet_check_config(&mc, &e);
    test_check(rc == 0, "8 levels x 64 blocks (the limits) passes (%s)", rc ? err_msg() : "ok");
}

/* The model's check refuses every out-of-limit or absurd field with the field and
 * a reason, whatever the struct holds (a config built in code, or by a caller
 * that skipped config_validate); unet_create refuses the same before allocating. */
static void check_model_limits(void) {
    model_config base = deep_config(32, 2, 1), mc;
    unet_config_error e;
#define REFUSED(label, field_, what, stmt)                                                          \
    do {                                                                                            \
        mc = base;                                                                                  \
        stmt;                                                                                       \
        memset(&e, 0, sizeof e);                                                                    \
        int rc_ = unet_check_config(&mc, &e);                                                       \
        unet *m_ = rc_ ? unet_create(&mc, 1, 1, &one_lane) : NULL;                                    \
        test_check(rc_ == -1 && e.field && !strcmp(e.field, field_) && strstr(e.why, what) &&      \
                       strstr(err_msg(), "model." field_) && !m_,                                   \
                   "%s refused: model.%s: %s", label, e.field ? e.field : "(none)", e.why);        \
        unet_free(m_);                                                                              \
    } while (0)
    REFUSED("9 levels", "ch_mult", "has 9 entries", mc.num_levels = 9);
    REFUSED("-1 levels", "ch_mult", "has -1 entries", mc.num_levels = -1);
    REFUSED("1000 attention entries", "attn_resolutions", "has 1000", mc.num_attn = 1000);
    REFUSED("image 2^30", "image_size", "out of range", mc.image_size = 1 << 30);
    REFUSED("image 2", "image_size", "out of range", mc.image_size = 2);
    REFUSED("0 channels", "in_channels", "out of range", mc.in_channels = 0);
    REFUSED("ch 48", "ch", "multiple of 32", mc.ch = 48);
    REFUSED("ch 2^20", "ch", "out of range", mc.ch = 1 << 20);
    REFUSED("mult 0", "ch_mult", "entry 2", mc.ch_mult[1] = 0);
    REFUSED("mult 65", "ch_mult", "entry 1", mc.ch_mult[0] = 65);
    REFUSED("65 blocks", "num_res_blocks", "out of range", mc.num_res_blocks = 65);
    REFUSED("NaN dropout", "dropout", "out of range", mc.dropout = NAN);
    REFUSED("dropout 1", "dropout", "out of range", mc.dropout = 1.0);
    REFUSED("image 36 over 4 levels", "image_size", "divisible",
            (mc.image_size = 36, mc.num_levels = 4, mc.ch_mult[2] = mc.ch_mult[3] = 1));
    REFUSED("attention at 5", "attn_resolutions", "not a resolution",
            (mc.num_attn = 1, mc.attn_resolutions[0] = 5));
    REFUSED("attention twice", "attn_resolutions", "twice",
            (mc.num_attn = 2, mc.attn_resolutions[0] = mc.attn_resolutions[1] = 16));
    /* sizes: 4096 x 64 channels (4e14 parameters), attention on a 512x512 map
     * (2^36 floats per image; the middle block's attention is on the smallest
     * map), 4096x4096 maps of 256 channels (512 after a skip concatenation) */
    REFUSED("4e14 parameters", "ch", "parameters",
            (mc.ch = 4096, mc.ch_mult[0] = mc.ch_mult[1] = 64, mc.num_res_blocks = 64));
    REFUSED("attention at 512", "attn_resolutions", "attention at 512x512",
            (mc.image_size = 512, mc.num_attn = 1, mc.attn_resolutions[0] = 512));
    REFUSED("4096^2 x 256 channels", "image_size", "floats per image",
            (mc.image_size = 4096, mc.ch = 256, mc.num_levels = 8,
             mc.ch_mult[2] = mc.ch_mult[3] = mc.ch_mult[4] = mc.ch_mult[5] = mc.ch_mult[6] =
                 mc.ch_mult[7] = 1));
#undef REFUSED
    /* within the limits, but not for this batch: refused before allocating */
    config c;
    if (!test_check(config_load_file(&c, "configs/fashion_mnist.yaml") == 0, "load fashion_mnist"))
        return;
    unet *m = unet_create(&c.model, 2147483647, 1, &one_lane);
    test_check(!m && strstr(err_msg(), "batch of 2147483647"),
               "a batch of 2^31-1 is refused before allocating: %s", m ? "(built)" : err_msg());
    unet_free(m);
}

/* A checkpoint's header carries its config: ddpm-sample and ddpm-eval bpd read the
 * header, load its config (config_load_string, named after the file) and build the
 * model from it. An absurd config must stop there with the file's name; the
 * issue's deep one builds. */
static void check_checkpoint_config(void) {
    char dir[] = "/tmp/ddpm-unet-test-XXXXXX";
    if (!test_check(mkdtemp(dir) != NULL, "temp dir")) return;
    config c;
    if (!test_check(config_load_file(&c, "configs/tiny_fashion.yaml") == 0, "load tiny_fashion"))
        return;
    for (int absurd = 0; absurd < 2; absurd++) {
        config w = c;
        w.model = absurd ? deep_config(512, 2, 64) : deep_config(16, 5, 64);
        if (absurd) w.model.ch = 4096, w.model.ch_mult[0] = w.model.ch_mult[1] = 64;
        char *yaml = config_to_yaml(&w);
        ckpt_header h;
        memset(&h, 0, sizeof h);
        h.config_yaml = yaml;
        h.step = (uint64_t)absurd + 1;
        h.n_params = 1;
        float one = 0;
        char path[256];
        int rc = ckpt_write(dir, &h, &one, NULL, NULL, NULL, path, sizeof path);
        free(yaml);
        if (!test_check(rc == 0, "write a checkpoint (%s)", rc ? err_msg() : "ok")) continue;
        ckpt_header r;
        config got;
        rc = ckpt_read_header(path, &r);
        if (rc == 0) rc = config_load_string(&got, r.config_yaml, strlen(r.config_yaml), path);
        ckpt_header_free(&r);
        if (absurd) {
            test_check(rc == -1 && strstr(err_msg(), path) && strstr(err_msg(), "model.ch") &&
                           strstr(err_msg(), "parameters"),
                       "a checkpoint with 4e14 parameters is refused naming the file: %s", err_msg());
        } else {
            unet *m = rc == 0 ? unet_create(&got.model, 2, 0, &one_lane) : NULL;
            test_check(m != NULL, "a checkpoint with 5 levels x 64 blocks gives its model (%s)",
                       m ? "ok" : err_msg());
            unet_free(m);
        }
        unlink(path);
    }
    rmdir(dir);
}

int main(void) {
    check_deep_models();
    check_model_limits();
    check_checkpoint_config();
    check_lanes_env();
    check_conv_env();
    check_tail_chunk();
    check_learn_sigma();
    check_count("configs/fashion_mnist.yaml", 1624577); /* 1,623,169 + label_emb 11 x 128 */
    check_count("configs/cifar10.yaml", 35746307);
    check_count("configs/lsun256.yaml", 113673219);
    check_init();
    check_forward_consistency();
    check_prepare();
    check_two_models();
    return test_done();
}
