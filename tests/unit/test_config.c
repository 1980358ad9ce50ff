/* Config loader tests: the shipped configs hold the paper's values (and the demo's), round trips
 * through config_to_yaml are exact, every class of bad input gives -1 with a
 * message naming file, line and key (never a crash, including random bytes and
 * random mutations of a valid file), overrides and diffs behave. */
#include "common/config/config.h"
#include "common/core/util.h"
#include "common/model/unet.h"
#include "tests/unit/test.h"

#include <glob.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_tmp[512];
static int g_tmp_made = 0;       /* we made g_tmp, so we remove it */
static char *g_written[256];
static int g_n_written = 0;

static void setup_tmp(void) {
    const char *t = getenv("DDPM_TEST_TMP");
    if (t && t[0]) {
        snprintf(g_tmp, sizeof g_tmp, "%s", t);
        return;
    }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/ddpm-config-test-XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        exit(1);
    }
    g_tmp_made = 1;
}

static void cleanup_tmp(void) {
    for (int i = 0; i < g_n_written; i++) {
        if (g_tmp_made) unlink(g_written[i]);
        free(g_written[i]);
    }
    if (g_tmp_made) rmdir(g_tmp);
}

static void write_file(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len) {
        perror(path);
        exit(1);
    }
    fclose(f);
    for (int i = 0; i < g_n_written; i++)
        if (!strcmp(g_written[i], path)) return;
    if (g_n_written < (int)(sizeof g_written / sizeof g_written[0])) {
        g_written[g_n_written] = malloc(strlen(path) + 1);
        strcpy(g_written[g_n_written++], path);
    }
}

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* ------------------------------------------------------------ shipped files */

static void test_fashion_mnist(void) {
    config c;
    int rc = config_load_file(&c, "configs/fashion_mnist.yaml");
    test_check(rc == 0, "fashion_mnist.yaml loads (%s)", rc ? err_msg() : "ok");
    if (rc) return;
    const model_config *m = &c.model;
    test_check(m->image_size == 28 && m->in_channels == 1 && m->ch == 32,
               "fashion_mnist: 28x28x1, ch 32");
    test_check(m->num_levels == 3 && m->ch_mult[0] == 1 && m->ch_mult[1] == 2 && m->ch_mult[2] == 2,
               "fashion_mnist: ch_mult [1,2,2]");
    test_check(m->num_res_blocks == 2 && m->num_attn == 1 && m->attn_resolutions[0] == 14,
               "fashion_mnist: 2 res blocks, attention at 14");
    test_check(m->dropout == 0.1 && m->resamp_with_conv == 1, "fashion_mnist: dropout 0.1, conv resample");
    const diffusion_config *d = &c.diffusion;
    test_check(d->timesteps == 1000 && d->schedule == BETA_SCHEDULE_LINEAR && d->beta_start == 1e-4 &&
                   d->beta_end == 0.02 && d->sampling_var == SAMPLING_VAR_BETA,
               "fashion_mnist: T 1000 linear 1e-4..0.02, variance beta");
    const training_config *t = &c.training;
    test_check(t->batch_size == 64 && t->micro_batch == 0 && t->lr == 2e-4 && t->warmup_steps == 100,
               "fashion_mnist: batch 64, lr 2e-4, warmup 100");
    test_check(t->grad_clip == 1.0 && t->ema_decay == 0.995, "fashion_mnist: clip 1.0, EMA 0.995");
    test_check(t->steps == 3000 && t->checkpoint_every == 500, "fashion_mnist: 3000 steps, checkpoint every 500");
    test_check(t->adam_beta1 == 0.9 && t->adam_beta2 == 0.999 && t->adam_eps == 1e-8 &&
                   t->t_sampler == TIMESTEP_UNIFORM && t->seed == 0,
               "fashion_mnist: Adam 0.9/0.999/1e-8, uniform t, seed 0");
    test_check(c.data.format == DATA_IDX && c.data.random_flip == 0 &&
                   !strcmp(c.data.path, "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") &&
                   !strcmp(c.data.eval_path, "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"),
               "fashion_mnist: idx data at the Debian paths, no flip");
    test_check(!strcmp(c.output.dir, "runs/fashion_mnist"), "fashion_mnist: output runs/fashion_mnist");
    test_check(c.distributed.servers == 1 && c.distributed.codec == CODEC_FP32, "fashion_mnist: 1 server, fp32");
    test_check(!strcmp(c.source, "configs/fashion_mnist.yaml"), "source records the file name");
}

static void test_cifar10(void) {
    config c;
    int rc = config_load_file(&c, "configs/cifar10.yaml");
    test_check(rc == 0, "cifar10.yaml loads (%s)", rc ? err_msg() : "ok");
    if (rc) return;
    const model_config *m = &c.model;
    test_check(m->image_size == 32 && m->in_channels == 3 && m->ch == 128 && m->num_res_blocks == 2,
               "cifar10: 32x32x3, ch 128, 2 res blocks");
    test_check(m->num_levels == 4 && m->ch_mult[0] == 1 && m->ch_mult[1] == 2 && m->ch_mult[2] == 2 &&
                   m->ch_mult[3] == 2,
               "cifar10: ch_mult [1,2,2,2]");
    test_check(m->num_attn == 1 && m->attn_resolutions[0] == 16 && m->dropout == 0.1,
               "cifar10: attention at 16, dropout 0.1");
    test_check(c.diffusion.timesteps == 1000 && c.diffusion.beta_start == 1e-4 &&
                   c.diffusion.beta_end == 0.02 && c.diffusion.sampling_var == SAMPLING_VAR_BETA,
               "cifar10: T 1000, variance beta");
    const training_config *t = &c.training;
    test_check(t->batch_size == 128 && t->lr == 2e-4 && t->warmup_steps == 5000 && t->ema_decay == 0.9999 &&
                   t->steps == 800000 && t->grad_clip == 1.0,
               "cifar10: batch 128, lr 2e-4, warmup 5000, EMA 0.9999, 800k steps");
    test_check(c.data.format == DATA_CIFAR10 && c.data.random_flip == 1 &&
                   !strcmp(c.data.path, "data/cifar-10-batches-bin"),
               "cifar10: cifar10 data, flips on");
}

static void test_lsun256(void) {
    config c;
    int rc = config_load_file(&c, "configs/lsun256.yaml");
    test_check(rc == 0, "lsun256.yaml loads (%s)", rc ? err_msg() : "ok");
    if (rc) return;
    const model_config *m = &c.model;
    static const int mult[6] = {1, 1, 2, 2, 4, 4};
    test_check(m->image_size == 256 && m->in_channels == 3 && m->ch == 128 && m->num_res_blocks == 2 &&
                   m->num_levels == 6 && !memcmp(m->ch_mult, mult, sizeof mult),
               "lsun256: 256x256x3, ch 128, ch_mult [1,1,2,2,4,4]");
    test_check(m->num_attn == 1 && m->attn_resolutions[0] == 16 && m->dropout == 0.0,
               "lsun256: attention at 16, dropout 0");
    test_check(c.diffusion.sampling_var == SAMPLING_VAR_BETA_TILDE, "lsun256: variance beta_tilde");
    const training_config *t = &c.training;
    test_check(t->batch_size == 64 && t->micro_batch == 1 && t->lr == 2e-5 && t->warmup_steps == 5000 &&
                   t->ema_decay == 0.9999 && t->steps == 2400000,
               "lsun256: batch 64 micro 1, lr 2e-5, warmup 5000, EMA 0.9999, 2.4M steps");
    test_check(c.data.format == DATA_SHARDS && c.data.random_flip == 1 &&
                   !strcmp(c.data.path, "data/lsun_bedroom_256"),
               "lsun256: shards data, flips on");
}

static void test_tiny(void) {
    config c;
    int rc = config_load_file(&c, "configs/tiny.yaml");
    test_check(rc == 0, "tiny.yaml loads (%s)", rc ? err_msg() : "ok");
    if (!rc) {
        const model_config *m = &c.model;
        test_check(m->image_size == 8 && m->in_channels == 1 && m->ch == 32 && m->num_levels == 2 &&
                       m->ch_mult[0] == 1 && m->ch_mult[1] == 2 && m->num_res_blocks == 1 &&
                       m->num_attn == 1 && m->attn_resolutions[0] == 4 && m->dropout == 0.1,
                   "tiny: 8x8x1, ch 32, [1,2], 1 block, attention at 4, dropout 0.1");
        test_check(c.diffusion.timesteps == 100 && c.training.batch_size == 4 && c.training.steps == 20 &&
                       c.data.format == DATA_IDX && !strncmp(c.data.path, "/tmp/", 5),
                   "tiny: T 100, batch 4, 20 steps, idx data under /tmp");
    }
    rc = config_load_file(&c, "configs/tiny_fashion.yaml");
    test_check(rc == 0, "tiny_fashion.yaml loads (%s)", rc ? err_msg() : "ok");
    if (!rc) {
        const model_config *m = &c.model;
        test_check(m->image_size == 28 && m->in_channels == 1 && m->ch == 32 && m->num_levels == 2 &&
                       m->ch_mult[0] == 1 && m->ch_mult[1] == 2 && m->num_res_blocks == 1 &&
                       m->num_attn == 1 && m->attn_resolutions[0] == 14,
                   "tiny_fashion: 28x28x1, ch 32, [1,2], 1 block, attention at 14");
        test_check(c.diffusion.timesteps == 1000 && c.training.batch_size == 8 && c.training.steps == 10 &&
                       c.data.format == DATA_IDX &&
                       !strcmp(c.data.path, "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
                   "tiny_fashion: T 1000, batch 8, 10 steps, Fashion-MNIST data");
    }
}

/* -------------------------------------------------------------- round trip */

/* Zero what is not part of the value: list slots past the count and bytes
 * after a path's NUL. */
static void normalise(config *c) {
    if (c->model.num_levels >= 0 && c->model.num_levels <= CONFIG_MAX_LEVELS)
        for (int i = c->model.num_levels; i < CONFIG_MAX_LEVELS; i++) c->model.ch_mult[i] = 0;
    if (c->model.num_attn >= 0 && c->model.num_attn <= CONFIG_MAX_ATTN)
        for (int i = c->model.num_attn; i < CONFIG_MAX_ATTN; i++) c->model.attn_resolutions[i] = 0;
    char *paths[3] = {c->data.path, c->data.eval_path, c->output.dir};
    for (int i = 0; i < 3; i++) {
        size_t n = strnlen(paths[i], CONFIG_PATH_MAX);
        if (n < CONFIG_PATH_MAX) memset(paths[i] + n, 0, CONFIG_PATH_MAX - n);
    }
}

/* Equality of every section, compared as bytes: independent of config_diff_all.
 * Both sides start from config_defaults' zeroed memory, so padding agrees. */
static int sections_equal(const config *a0, const config *b0) {
    config *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    *a = *a0;
    *b = *b0;
    normalise(a);
    normalise(b);
    int eq = !memcmp(&a->model, &b->model, sizeof a->model) &&
           !memcmp(&a->diffusion, &b->diffusion, sizeof a->diffusion) &&
           !memcmp(&a->training, &b->training, sizeof a->training) &&
           !memcmp(&a->data, &b->data, sizeof a->data) &&
           !memcmp(&a->distributed, &b->distributed, sizeof a->distributed) &&
           !memcmp(&a->output, &b->output, sizeof a->output);
    free(a);
    free(b);
    return eq;
}

static void round_trip(const config *c, const char *label) {
    char *text = config_to_yaml(c);
    config back;
    int rc = config_load_string(&back, text, strlen(text), "roundtrip.yaml");
    test_check(rc == 0, "%s: to_yaml output loads (%s)", label, rc ? err_msg() : "ok");
    if (!rc) {
        char diff[512];
        test_check(sections_equal(c, &back), "%s: load(to_yaml(c)) equals c byte for byte", label);
        test_check(config_diff_all(c, &back, diff, sizeof diff) == 0, "%s: no diff after round trip (%s)",
                   label, diff);
        char *again = config_to_yaml(&back);
        test_check(!strcmp(text, again), "%s: to_yaml is stable", label);
        free(again);
    }
    free(text);
}

static void test_round_trips(void) {
    static const char *const files[] = {"configs/fashion_mnist.yaml", "configs/cifar10.yaml",
                                        "configs/lsun256.yaml", "configs/tiny.yaml",
                                        "configs/tiny_fashion.yaml"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        config c;
        if (config_load_file(&c, files[i])) {
            test_check(0, "%s loads for round trip: %s", files[i], err_msg());
            continue;
        }
        round_trip(&c, files[i]);
    }
    /* Awkward values: extreme seed, doubles without a short decimal form,
     * paths with quotes, backslashes, tabs, '#', ': ' and UTF-8. */
    config c;
    if (config_load_file(&c, "configs/tiny.yaml")) return;
    c.training.seed = UINT64_MAX;
    c.training.lr = 0.1 + 0.2;
    c.training.adam_eps = 1e-300;
    c.training.grad_clip = 0;
    c.training.steps = 1000000000000L;
    c.model.dropout = 0.123456789012345678;
    c.diffusion.beta_start = 1.0 / 3.0;
    c.diffusion.beta_end = 2.0 / 3.0;
    c.diffusion.schedule = BETA_SCHEDULE_COSINE;
    c.diffusion.sampling_var = SAMPLING_VAR_BETA_TILDE;
    c.training.t_sampler = TIMESTEP_STRATIFIED;
    c.model.num_attn = 0;
    c.model.resamp_with_conv = 0;
    c.data.random_flip = 1;
    c.data.format = DATA_IMAGE_FOLDER;
    c.distributed.codec = CODEC_BF16_ZSTD;
    c.distributed.timeout_s = 0.5;
    c.distributed.servers = 3;
    snprintf(c.data.path, sizeof c.data.path, "dir with \"quotes\" \\ back\tslash #not: a comment");
    snprintf(c.data.eval_path, sizeof c.data.eval_path, "caf\xc3\xa9/\xe2\x82\xac.bin");
    snprintf(c.output.dir, sizeof c.output.dir, "- [not, a, list]");
    test_check(config_validate(&c) == 0, "awkward config is valid (%s)", err_msg());
    round_trip(&c, "awkward values");
}

/* ------------------------------------------------------------ error classes */

/* A valid config; error cases replace numbered lines of it. */
static const char *const g_base[] = {
    "# base config for the error tests",  /* 1 */
    "model:",                              /* 2 */
    "  image_size: 8",                     /* 3 */
    "  in_channels: 1",                    /* 4 (IDX images are grey) */
    "  ch: 32",                            /* 5 */
    "  ch_mult: [1, 2]",                   /* 6 */
    "  num_res_blocks: 1",                 /* 7 */
    "  attn_resolutions: [4]",             /* 8 */
    "  dropout: 0.1",                      /* 9 */
    "diffusion:",                          /* 10 */
    "  timesteps: 100",                    /* 11 */
    "training:",                           /* 12 */
    "  batch_size: 4",                     /* 13 */
    "  steps: 20",                         /* 14 */
    "  lr: 0.0002",                        /* 15 */
    "data:",                               /* 16 */
    "  format: idx",                       /* 17 */
    "  path: /tmp/x.idx",                  /* 18 */
    "output:",                             /* 19 */
    "  dir: /tmp/run",                     /* 20 */
};
#define BASE_LINES ((int)(sizeof g_base / sizeof g_base[0]))

/* Base text with line `line` (1-based) replaced by `repl` (NULL deletes it;
 * repl may hold several lines). line 0 appends repl. Caller frees. */
static char *base_with(int line, const char *repl) {
    size_t cap = 4096 + (repl ? strlen(repl) : 0);
    char *s = malloc(cap);
    size_t n = 0;
    for (int i = 1; i <= BASE_LINES; i++) {
        const char *l = i == line ? repl : g_base[i - 1];
        if (l) n += (size_t)snprintf(s + n, cap - n, "%s\n", l);
    }
    if (line == 0 && repl) n += (size_t)snprintf(s + n, cap - n, "%s\n", repl);
    return s;
}

static int g_case = 0;

/* Write text to a file, load it, expect -1 and every needle in the message. */
static void expect_error(const char *label, const char *text, size_t len, const char *n1,
                         const char *n2, const char *n3) {
    char path[700];
    snprintf(path, sizeof path, "%s/case%03d.yaml", g_tmp, g_case++);
    write_file(path, text, len);
    config c;
    config_defaults(&c);
    config before = c;
    int rc = config_load_file(&c, path);
    const char *msg = err_msg();
    int ok = rc == -1 && contains(msg, path) && (!n1 || contains(msg, n1)) &&
             (!n2 || contains(msg, n2)) && (!n3 || contains(msg, n3));
    test_check(ok, "%s: rc %d, message: %s", label, rc, rc ? msg : "(none)");
    test_check(!memcmp(&c, &before, sizeof c), "%s: config left unchanged", label);
}

static void expect_error_line(const char *label, int line, const char *repl, const char *n1,
                              const char *n2, const char *n3) {
    char *text = base_with(line, repl);
    expect_error(label, text, strlen(text), n1, n2, n3);
    free(text);
}

static void test_errors(void) {
    char *base = base_with(-1, NULL);
    char path[700];
    snprintf(path, sizeof path, "%s/base.yaml", g_tmp);
    write_file(path, base, strlen(base));
    config c;
    int rc = config_load_file(&c, path);
    test_check(rc == 0, "the base config of the error tests is valid (%s)", rc ? err_msg() : "ok");
    test_check(rc == 0 && c.key_line[0] == 3, "key_line records where image_size was set");
    free(base);

    /* Block-style lists and flow-style sections are YAML too. */
    {
        char *text = base_with(6, "  ch_mult:\n    - 1\n    - 2");
        rc = config_load_string(&c, text, strlen(text), "block.yaml");
        test_check(rc == 0 && c.model.num_levels == 2 && c.model.ch_mult[1] == 2,
                   "block-style list accepted (%s)", rc ? err_msg() : "ok");
        free(text);
        text = base_with(20, "  dir: /tmp/run\ndistributed: {servers: 2, codec: bf16_zstd}");
        rc = config_load_string(&c, text, strlen(text), "flow.yaml");
        test_check(rc == 0 && c.distributed.servers == 2 && c.distributed.codec == CODEC_BF16_ZSTD &&
                       c.distributed.zstd_level == 1,
                   "flow-style section accepted, other keys default (%s)", rc ? err_msg() : "ok");
        free(text);
        rc = config_load_string(&c, NULL, 0, NULL);
        test_check(rc == -1 && contains(err_msg(), "<string>:1:") && contains(err_msg(), "empty config"),
                   "NULL text: %s", err_msg());
    }

    /* unknown key / section */
    expect_error_line("unknown key", 5, "  chx: 32", ":5:", "model.chx", "unknown key");
    expect_error_line("unknown section", 10, "diffusionn:", ":10:", "diffusionn", "unknown section");
    /* wrong types */
    expect_error_line("string for an int", 5, "  ch: abc", ":5:", "model.ch", "expected an integer");
    expect_error_line("quoted number for an int", 5, "  ch: \"32\"", ":5:", "model.ch", "quoted string");
    expect_error_line("list for an int", 5, "  ch: [32]", ":5:", "model.ch", "got a list");
    expect_error_line("mapping for a number", 9, "  dropout: {a: 1}", ":9:", "model.dropout", "got a mapping");
    expect_error_line("float for an int", 11, "  timesteps: 100.5", ":11:", "diffusion.timesteps",
                      "expected an integer");
    expect_error_line("scalar for a list", 6, "  ch_mult: 3", ":6:", "model.ch_mult", "expected a list");
    expect_error_line("string inside a list", 6, "  ch_mult: [1, two]", ":6:", "model.ch_mult", "entry 2");
    expect_error_line("nested list", 6, "  ch_mult: [1, [2]]", ":6:", "model.ch_mult", "got a list");
    expect_error_line("string for a number", 15, "  lr: fast", ":15:", "training.lr", "expected a number");
    expect_error_line("yes is not a boolean", 18, "  path: /tmp/x.idx\n  random_flip: yes", ":19:",
                      "data.random_flip", "true or false");
    expect_error_line("unknown enum value", 17, "  format: jpeg", ":17:", "data.format", "image_folder");
    expect_error_line("missing value", 5, "  ch:", ":5:", "model.ch", "missing value");
    expect_error_line("empty path", 18, "  path: \"\"", ":18:", "data.path", "non-empty");
    /* out of range */
    expect_error_line("in_channels too large", 4, "  in_channels: 5", ":4:", "model.in_channels", "out of range");
    expect_error_line("dropout 1.0", 9, "  dropout: 1.0", ":9:", "model.dropout", "out of range");
    expect_error_line("ch not a multiple of 32", 5, "  ch: 48", ":5:", "model.ch", "multiple of 32");
    expect_error_line("ch_mult entry 0", 6, "  ch_mult: [1, 0]", ":6:", "model.ch_mult", "entry 2");
    expect_error_line("too many levels", 6, "  ch_mult: [1, 1, 1, 1, 1, 1, 1, 1, 1]", ":6:", "model.ch_mult",
                      "at most 8");
    expect_error_line("empty ch_mult", 6, "  ch_mult: []", ":6:", "model.ch_mult", "at least 1");
    expect_error_line("lr 0", 15, "  lr: 0", ":15:", "training.lr", "out of range");
    expect_error_line("batch 0", 13, "  batch_size: 0", ":13:", "training.batch_size", "out of range");
    expect_error_line("negative steps", 14, "  steps: -1", ":14:", "training.steps", "out of range");
    expect_error_line("int overflow", 14, "  steps: 99999999999999999999999", ":14:", "training.steps",
                      "99999999999999999999999 is out of range (must be 0..1000000000000)");
    expect_error_line("int beyond int range", 11, "  timesteps: 4294967296", ":11:", "diffusion.timesteps",
                      "out of range");
    expect_error_line("nan", 9, "  dropout: .nan", ":9:", "model.dropout", NULL);
    expect_error_line("zstd level 20", 20, "  dir: /tmp/run\ndistributed:\n  zstd_level: 20", ":22:",
                      "distributed.zstd_level", "1..19");
    /* cross-field rules */
    expect_error_line("image size not divisible", 3, "  image_size: 9", ":3:", "model.image_size", "divisible");
    expect_error_line("attention at a missing resolution", 8, "  attn_resolutions: [2]", ":8:",
                      "model.attn_resolutions", "not a resolution");
    expect_error_line("attention listed twice", 8, "  attn_resolutions: [4, 4]", ":8:",
                      "model.attn_resolutions", "twice");
    expect_error_line("micro batch above batch", 14, "  steps: 20\n  micro_batch: 5", ":15:",
                      "training.micro_batch", "batch_size");
    expect_error_line("beta_end below beta_start", 11,
                      "  timesteps: 100\n  beta_start: 0.02\n  beta_end: 0.01", ":13:", "diffusion.beta_end",
                      "beta_start");
    /* missing required keys: the line of the section, or 1 without one */
    expect_error_line("missing ch", 5, NULL, ":2:", "model.ch", "required key missing");
    expect_error_line("missing steps", 14, NULL, ":12:", "training.steps", "required key missing");
    {
        char *text = base_with(19, NULL); /* drop "output:" and its key */
        char *cut = strstr(text, "  dir: /tmp/run\n");
        if (cut) *cut = '\0';
        expect_error("missing section", text, strlen(text), ":1:", "output.dir", "required key missing");
        free(text);
    }
    /* duplicates */
    expect_error_line("duplicate key", 7, "  num_res_blocks: 1\n  ch: 64", ":8:", "model.ch", "line 5");
    expect_error_line("duplicate section", 0, "model:\n  ch: 32", ":21:", "model", "duplicate section");
    /* malformed YAML (libyaml's message and line) */
    expect_error_line("unclosed flow list", 6, "  ch_mult: [1, 2}", ":6:", "model.ch_mult", "invalid YAML");
    expect_error_line("tab indentation", 4, "\tin_channels: 3", ":4:", "model", "invalid YAML");
    expect_error_line("mapping value in a scalar", 18, "  path: /tmp/x: y", ":18:", "data",
                      "invalid YAML");
    /* A quoted scalar may span lines, so libyaml reports the end of the text. */
    expect_error_line("unterminated quote", 18, "  path: \"/tmp/x", ":21:", "data.path", "invalid YAML");
    expect_error_line("anchor", 6, "  ch_mult: &m [1, 2]", ":6:", "model.ch_mult", "anchors");
    expect_error_line("alias", 8, "  attn_resolutions: *m", ":8:", "model.attn_resolutions", NULL);
    expect_error_line("tag", 5, "  ch: !!int 32", ":5:", "model.ch", "tags");
    expect_error_line("second document", 0, "---\nmodel: {}", ":21:", "one YAML document", NULL);
    expect_error_line("section is a scalar", 12, "training: 5", ":12:", "training", "mapping of keys");
    {
        const char *t = "- model\n- data\n";
        expect_error("top level is a list", t, strlen(t), ":1:", "mapping of sections", NULL);
        char nul[] = "model:\n  ch: 3\0002\n";
        expect_error("NUL byte", nul, sizeof nul - 1, ":2:", "invalid YAML", NULL);
    }
    {
        char big[1400];
        int n = snprintf(big, sizeof big, "  path: /");
        memset(big + n, 'a', 1100);
        big[n + 1100] = '\0';
        expect_error_line("path too long", 18, big, ":18:", "data.path", "at most");
    }
    /* empty, comments only, missing file */
    expect_error("empty file", "", 0, ":1:", "empty config", NULL);
    expect_error("comments only", "# nothing\n\n", 11, ":1:", "empty config", NULL);
    snprintf(path, sizeof path, "%s/no-such-dir/missing.yaml", g_tmp);
    rc = config_load_file(&c, path);
    test_check(rc == -1 && contains(err_msg(), path) && contains(err_msg(), "cannot open"),
               "missing file: %s", err_msg());
    rc = config_load_file(&c, g_tmp);
    test_check(rc == -1 && contains(err_msg(), g_tmp), "a directory: %s", err_msg());
}

/* Deterministic random bytes (xorshift64*), so failures reproduce. */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 2685821657736338717ull;
}

static void test_garbage(void) {
    int bad = 0;
    char buf[512];
    for (int i = 0; i < 200; i++) {
        size_t len = (size_t)(rnd() % sizeof buf);
        for (size_t j = 0; j < len; j++) buf[j] = (char)(rnd() & 0xff);
        config c;
        int rc = config_load_string(&c, buf, len, "garbage.bin");
        if (rc != -1 || strncmp(err_msg(), "garbage.bin", 11)) {
            if (!bad) printf("# garbage case %d: rc %d, %s\n", i, rc, err_msg());
            bad++;
        }
    }
    test_check(bad == 0, "200 random binary buffers: all -1 with the name in the message (%d not)", bad);
    /* Random text made of YAML's special characters. */
    static const char alphabet[] = "ab:_ -[]{},#&*!|>'\"%@`\n\t.0123456789model";
    bad = 0;
    for (int i = 0; i < 300; i++) {
        size_t len = (size_t)(rnd() % sizeof buf);
        for (size_t j = 0; j < len; j++) buf[j] = alphabet[rnd() % (sizeof alphabet - 1)];
        config c;
        int rc = config_load_string(&c, buf, len, "noise.yaml");
        if (rc != -1 || strncmp(err_msg(), "noise.yaml", 10)) bad++;
    }
    test_check(bad == 0, "300 random YAML-alphabet texts: all -1 with the name (%d not)", bad);
    /* Random mutations of a valid file: anything may result, but never a crash
     * (ASan watches), only 0 or -1, and a 0 must be a valid, round-trippable config. */
    char *base = base_with(-1, NULL);
    size_t blen = strlen(base);
    int n_ok = 0, n_err = 0, weird = 0;
    for (int i = 0; i < 3000; i++) {
        char text[2048];
        size_t len = blen;
        memcpy(text, base, blen);
        int edits = 1 + (int)(rnd() % 3);
        for (int e = 0; e < edits && len > 0; e++) {
            size_t at = (size_t)(rnd() % len);
            switch (rnd() % 4) {
            case 0: text[at] = alphabet[rnd() % (sizeof alphabet - 1)]; break;
            case 1: text[at] = (char)(rnd() & 0xff); break;
            case 2: { /* delete a span */
                size_t n = 1 + (size_t)(rnd() % 20);
                if (at + n > len) n = len - at;
                memmove(text + at, text + at + n, len - at - n);
                len -= n;
                break;
            }
            default: /* duplicate a span */
                if (len + 40 < sizeof text) {
                    size_t n = 1 + (size_t)(rnd() % 30);
                    if (at + n > len) n = len - at;
                    memmove(text + at + n, text + at, len - at);
                    len += n;
                }
            }
        }
        config c;
        int rc = config_load_string(&c, text, len, "mutant.yaml");
        if (rc == 0) {
            n_ok++;
            char *y = config_to_yaml(&c);
            config back;
            if (config_validate(&c) || config_load_string(&back, y, strlen(y), "m2") ||
                !sections_equal(&c, &back))
                weird++;
            free(y);
        } else if (rc == -1 && !strncmp(err_msg(), "mutant.yaml:", 12)) {
            n_err++;
        } else {
            if (!weird) printf("# mutant: rc %d, %s\n", rc, err_msg());
            weird++;
        }
    }
    free(base);
    printf("# mutations: %d loaded, %d rejected\n", n_ok, n_err);
    test_check(weird == 0 && n_err > 0, "3000 mutated configs: each 0 (valid) or -1 naming file:line (%d odd)",
               weird);
}

/* --------------------------------------------------------------- overrides */

static void expect_override_error(config *c, const char *assign, const char *n1, const char *n2) {
    config before = *c;
    int rc = config_override(c, assign);
    const char *msg = err_msg();
    char label[200];
    snprintf(label, sizeof label, "%s", assign);
    for (char *p = label; *p; p++)
        if (*p == '\n') *p = '|'; /* one output line per check */
    test_check(rc == -1 && contains(msg, "<command line>") && contains(msg, n1) && (!n2 || contains(msg, n2)),
               "override '%s' rejected: %s", label, rc ? msg : "(accepted)");
    test_check(!memcmp(c, &before, sizeof *c), "override '%s' left the config unchanged", label);
}

static void test_overrides(void) {
    config c;
    if (config_load_file(&c, "configs/fashion_mnist.yaml")) {
        test_check(0, "fashion_mnist loads for overrides: %s", err_msg());
        return;
    }
    int rc = config_override(&c, "training.steps=200") | config_override(&c, "model.ch_mult=[1, 2]") |
             config_override(&c, "model.attn_resolutions=[]") | config_override(&c, "data.eval_path=") |
             config_override(&c, "output.dir=/x/y z") | config_override(&c, "diffusion.schedule=cosine") |
             config_override(&c, "training.seed=18446744073709551615") |
             config_override(&c, "data.random_flip=true") | config_override(&c, " training.lr = 1e-3") |
             config_override(&c, "model.dropout=0") | config_override(&c, "data.path='/a b/#c'");
    test_check(rc == 0, "valid overrides accepted (%s)", rc ? err_msg() : "ok");
    test_check(c.training.steps == 200 && c.model.num_levels == 2 && c.model.ch_mult[1] == 2 &&
                   c.model.num_attn == 0 && c.data.eval_path[0] == '\0' && !strcmp(c.output.dir, "/x/y z") &&
                   c.diffusion.schedule == BETA_SCHEDULE_COSINE && c.training.seed == UINT64_MAX &&
                   c.data.random_flip == 1 && c.training.lr == 1e-3 && c.model.dropout == 0 &&
                   !strcmp(c.data.path, "/a b/#c"),
               "overrides changed exactly the values given");
    test_check(c.model.image_size == 28 && c.training.batch_size == 64, "other values kept");
    test_check(config_validate(&c) == 0, "overridden config validates (%s)", err_msg());
    test_check(c.key_line[3] == -1 && c.key_line[0] > 0, "key_line marks overridden keys with -1");

    expect_override_error(&c, "training.stepz=1", "training.stepz", "unknown key");
    expect_override_error(&c, "trainin.steps=1", "trainin.steps", "unknown key");
    expect_override_error(&c, "steps=1", "steps", "unknown key");
    expect_override_error(&c, "training.steps=abc", "training.steps", "expected an integer");
    expect_override_error(&c, "training.steps=\"5\"", "training.steps", "quoted");
    expect_override_error(&c, "model.in_channels=9", "model.in_channels", "out of range");
    expect_override_error(&c, "model.ch=48", "model.ch", "multiple of 32");
    expect_override_error(&c, "training.steps", "training.steps", "missing '='");
    expect_override_error(&c, "model.ch_mult=[1,2", "model.ch_mult", "invalid YAML");
    expect_override_error(&c, "model.ch_mult=5", "model.ch_mult", "expected a list");
    expect_override_error(&c, "model.ch=", "model.ch", "missing value");
    expect_override_error(&c, "model.dropout={a: 1}", "model.dropout", "mapping");
    expect_override_error(&c, "data.format=png", "data.format", "expected one of");
    expect_override_error(&c, "training.steps=1\n---\n2", "training.steps", "more than one");

    /* Cross-field rules are checked by config_validate and blame the override. */
    config f;
    if (config_load_file(&f, "configs/fashion_mnist.yaml")) return;
    rc = config_override(&f, "model.ch_mult=[1,2,2,2]");
    test_check(rc == 0, "override to 4 levels accepted alone");
    rc = config_validate(&f);
    test_check(rc == -1 && contains(err_msg(), "<command line>") && contains(err_msg(), "model.ch_mult") &&
                   contains(err_msg(), "divisible"),
               "28 not divisible by 8 after override: %s", err_msg());
    if (config_load_file(&f, "configs/fashion_mnist.yaml")) return;
    config_override(&f, "training.micro_batch=100");
    rc = config_validate(&f);
    test_check(rc == -1 && contains(err_msg(), "<command line>: training.micro_batch"),
               "micro batch above batch after override: %s", err_msg());
    if (config_load_file(&f, "configs/fashion_mnist.yaml")) return;
    config_override(&f, "model.image_size=32");
    rc = config_validate(&f);
    test_check(rc == -1 && contains(err_msg(), "configs/fashion_mnist.yaml:") &&
                   contains(err_msg(), "model.attn_resolutions") && contains(err_msg(), "32, 16, 8"),
               "attention at 14 with image 32 names the file's key: %s", err_msg());
}

/* ------------------------------------------------------------------- diffs */

static void test_diffs(void) {
    config a, b;
    if (config_load_file(&a, "configs/fashion_mnist.yaml")) return;
    b = a;
    char out[512];
    test_check(config_diff_model(&a, &b, out, sizeof out) == 0 && out[0] == '\0', "equal configs: no diff");
    b.model.ch = 64;
    b.model.dropout = 0.2;
    b.diffusion.timesteps = 500;
    b.training.steps = 10;
    b.distributed.codec = CODEC_BF16_ZSTD;
    int n = config_diff_model(&a, &b, out, sizeof out);
    test_check(n == 3 && !strcmp(out, "model.ch,model.dropout,diffusion.timesteps"),
               "diff_model names the model/diffusion keys: %d '%s'", n, out);
    n = config_diff_all(&a, &b, out, sizeof out);
    test_check(n == 5 && contains(out, "training.steps") && contains(out, "distributed.codec") &&
                   contains(out, "model.ch"),
               "diff_all names every differing key: %d '%s'", n, out);
    char small[6];
    memset(small, 'x', sizeof small);
    n = config_diff_model(&a, &b, small, sizeof small);
    test_check(n == 3 && memchr(small, '\0', sizeof small), "diff into a small buffer: count 3, terminated");
    test_check(config_diff_all(&a, &b, NULL, 0) == 5, "diff with no buffer still counts");
    b = a;
    b.model.num_levels = 2; /* [1,2] vs [1,2,2]: same prefix, different length */
    n = config_diff_model(&a, &b, out, sizeof out);
    test_check(n == 1 && !strcmp(out, "model.ch_mult"), "list length difference: '%s'", out);
    b = a;
    b.model.ch_mult[5] = 7; /* beyond num_levels: not part of the config */
    b.key_line[3] = 99;
    snprintf(b.source, sizeof b.source, "elsewhere.yaml");
    test_check(config_diff_all(&a, &b, out, sizeof out) == 0, "unused list slots, lines and source are ignored");
    /* learned variances: off by default (a config or checkpoint text without the key),
     * a model key (must match on resume), written canonically */
    test_check(a.model.learn_sigma == 0, "model.learn_sigma defaults to false");
    b = a;
    test_check(config_override(&b, "model.learn_sigma=true") == 0 && config_validate(&b) == 0 &&
                   b.model.learn_sigma == 1, "model.learn_sigma=true overrides");
    n = config_diff_model(&a, &b, out, sizeof out);
    test_check(n == 1 && !strcmp(out, "model.learn_sigma"), "learn_sigma is a model key: '%s'", out);
    char *y = config_to_yaml(&b);
    config c;
    test_check(y && contains(y, "learn_sigma: true") &&
                   config_load_string(&c, y, strlen(y), "canonical") == 0 && c.model.learn_sigma == 1,
               "learn_sigma round-trips through the canonical YAML");
    free(y);
}

static void test_validate_in_code(void) {
    config c;
    config_defaults(&c);
    test_check(config_validate(&c) == -1 && contains(err_msg(), "model.image_size") &&
                   contains(err_msg(), "required key missing"),
               "defaults alone miss required keys: %s", err_msg());
    c.model.image_size = 16;
    c.model.in_channels = 3;
    c.data.format = DATA_IMAGE_FOLDER; /* any channel count */
    c.model.ch = 64;
    c.model.ch_mult[0] = 1;
    c.model.ch_mult[1] = 2;
    c.model.num_levels = 2;
    c.model.num_res_blocks = 1;
    c.diffusion.timesteps = 10;
    c.training.batch_size = 2;
    c.training.lr = 1e-3;
    snprintf(c.data.path, sizeof c.data.path, "x");
    snprintf(c.output.dir, sizeof c.output.dir, "y");
    test_check(config_validate(&c) == 0, "a config built in code validates (%s)", err_msg());
    c.model.resamp_with_conv = 2;
    test_check(config_validate(&c) == -1 && contains(err_msg(), "model.resamp_with_conv"),
               "bad boolean in code: %s", err_msg());
    c.model.resamp_with_conv = 1;
    c.distributed.codec = (wire_codec)7;
    test_check(config_validate(&c) == -1 && contains(err_msg(), "distributed.codec"), "bad enum in code: %s",
               err_msg());
    c.distributed.codec = CODEC_FP32;
    c.model.num_levels = 9;
    test_check(config_validate(&c) == -1 && contains(err_msg(), "model.ch_mult"), "bad level count in code: %s",
               err_msg());
    c.model.num_levels = 2;
    memset(c.output.dir, 'a', sizeof c.output.dir);
    test_check(config_validate(&c) == -1 && contains(err_msg(), "output.dir"), "unterminated path in code: %s",
               err_msg());
}

/* ------------------------------------------------- hostile numbers (#14) */

static int printable(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) return 0;
    return 1;
}

/* An override refused with a printable message holding `want`. */
static void expect_refused(const char *base, const char *assignment, const char *want) {
    config c;
    if (config_load_file(&c, base)) {
        test_check(0, "load %s: %s", base, err_msg());
        return;
    }
    int rc = config_override(&c, assignment);
    if (rc == 0) rc = config_validate(&c);
    test_check(rc == -1 && printable(err_msg()) && contains(err_msg(), want),
               "%s refused with '%s': %s", assignment, want, rc ? err_msg() : "(accepted)");
}

/* Row 5: an int key without an upper bound of its own (checkpoint_every,
 * warmup_steps, log_every, eval_every) above INT_MAX printed uninitialised memory
 * as its message. Every integer, float and list entry is now refused with its
 * range, whatever the magnitude, in files and overrides alike. */
static void test_hostile_numbers(void) {
    static const char *const unbounded[] = {"training.checkpoint_every", "training.warmup_steps",
                                            "training.log_every", "training.eval_every"};
    char a[128], want[128];
    for (size_t i = 0; i < sizeof unbounded / sizeof unbounded[0]; i++) {
        snprintf(a, sizeof a, "%s=2147483648", unbounded[i]);
        snprintf(want, sizeof want, "%s: 2147483648 is out of range (must be", unbounded[i]);
        expect_refused("configs/tiny.yaml", a, want);
        snprintf(a, sizeof a, "%s=99999999999999999999999", unbounded[i]);
        expect_refused("configs/tiny.yaml", a, "99999999999999999999999 is out of range");
    }
    expect_refused("configs/tiny.yaml", "training.checkpoint_every=2147483648",
                   "<command line>: training.checkpoint_every: 2147483648 is out of range (must be "
                   "0..2147483647)");
    config c;
    test_check(config_load_file(&c, "configs/tiny.yaml") == 0 &&
                   config_override(&c, "training.checkpoint_every=2147483647") == 0 &&
                   config_validate(&c) == 0 && c.training.checkpoint_every == 2147483647,
               "checkpoint_every=2147483647 (INT_MAX) accepted");
    /* every int key, both ends and beyond long long */
    static const char *const ints[] = {
        "model.image_size", "model.in_channels", "model.ch", "model.num_res_blocks",
        "diffusion.timesteps", "training.batch_size", "training.micro_batch",
        "training.warmup_steps", "training.log_every", "training.checkpoint_every",
        "training.keep_checkpoints", "training.threads", "training.eval_every",
        "training.eval_images", "training.eval_stride", "training.sample_every",
        "training.sample_images", "distributed.servers",
        "distributed.zstd_level"};
    static const char *const huge[] = {"2147483648", "-2147483649", "4294967296",
                                       "9223372036854775807", "9223372036854775808",
                                       "-9223372036854775809", "1000000000000000000000000000000"};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        for (size_t j = 0; j < sizeof huge / sizeof huge[0]; j++) {
            snprintf(a, sizeof a, "%s=%s", ints[i], huge[j]);
            snprintf(want, sizeof want, "%s: %s is out of range", ints[i], huge[j]);
            expect_refused("configs/tiny.yaml", a, want);
        }
    expect_refused("configs/tiny.yaml", "training.steps=1000000000001",
                   "training.steps: 1000000000001 is out of range (must be 0..1000000000000)");
    expect_refused("configs/tiny.yaml", "training.steps=-9223372036854775809",
                   "training.steps: -9223372036854775809 is out of range");
    /* lists: entries beyond int and long long, too many entries */
    expect_refused("configs/tiny.yaml", "model.ch_mult=[1, 4294967297]",
                   "model.ch_mult: entry 2: 4294967297 is out of range (must be 1..64)");
    expect_refused("configs/tiny.yaml", "model.ch_mult=[1, 99999999999999999999999]",
                   "entry 2: 99999999999999999999999 is out of range");
    expect_refused("configs/tiny.yaml", "model.attn_resolutions=[-9223372036854775809]",
                   "entry 1: -9223372036854775809 is out of range");
    expect_refused("configs/tiny.yaml", "model.ch_mult=[1,1,1,1,1,1,1,1,1]", "at most 8");
    expect_refused("configs/tiny.yaml", "model.ch_mult=[1, 2.0]", "entry 2: expected an integer");
    expect_refused("configs/tiny.yaml", "model.ch_mult=[1, 0x2]", "entry 2: expected an integer");
    /* floats: NaN, infinities, hex, junk, and values that overflow or underflow */
    static const char *const bad_reals[] = {".nan", "nan", ".inf", "-.inf", "inf", "1e400",
                                            "-1e400", "0x1p-3", "1e", "1.5.2", "1e-3x", "1,5",
                                            "--1", "+.e3"};
    for (size_t i = 0; i < sizeof bad_reals / sizeof bad_reals[0]; i++) {
        snprintf(a, sizeof a, "training.grad_clip=%s", bad_reals[i]);
        expect_refused("configs/tiny.yaml", a, "training.grad_clip");
    }
    /* 1e-400 reads as 0, which would turn clipping off: refused, not rounded */
    expect_refused("configs/tiny.yaml", "training.grad_clip=1e-400", "too small to represent");
    test_check(config_load_file(&c, "configs/tiny.yaml") == 0 &&
                   config_override(&c, "training.grad_clip=0e-400") == 0 && c.training.grad_clip == 0,
               "grad_clip=0e-400 is 0");
    /* seeds: the whole uint64 range, nothing beyond, no sign */
    test_check(config_load_file(&c, "configs/tiny.yaml") == 0 &&
                   config_override(&c, "training.seed=18446744073709551615") == 0 &&
                   c.training.seed == UINT64_MAX,
               "seed 2^64-1 accepted");
    expect_refused("configs/tiny.yaml", "training.seed=18446744073709551616", "below 2^64");
    expect_refused("configs/tiny.yaml", "training.seed=-1", "below 2^64");
    /* the same in a file: line and key named */
    expect_error_line("int key above INT_MAX in a file", 14, "  steps: 20\n  checkpoint_every: 2147483648",
                      ":15:", "training.checkpoint_every", "2147483648 is out of range (must be 0..2147483647)");
}

/* ------------------------------------------------ shipped configs (#14) */

/* Row 12: configs/tiny.yaml said in_channels 3 with IDX data (grey): it could not
 * train. Every shipped config (and every test config) loads, passes the model's
 * check, and has the channels and size its data format fixes; the validator
 * refuses a mismatch naming both keys. */
static void test_shipped_configs(void) {
    static const char *const patterns[] = {"configs/*.yaml", "tests/configs/*.yaml"};
    int n = 0;
    for (int p = 0; p < 2; p++) {
        glob_t g;
        if (glob(patterns[p], 0, NULL, &g) != 0) {
            test_check(0, "no files match %s", patterns[p]);
            continue;
        }
        for (size_t i = 0; i < g.gl_pathc; i++, n++) {
            config c;
            const char *f = g.gl_pathv[i];
            int rc = config_load_file(&c, f);
            test_check(rc == 0, "%s loads (%s)", f, rc ? err_msg() : "ok");
            if (rc) continue;
            test_check(unet_check_config(&c.model, NULL) == 0, "%s: the model's check passes", f);
            int fixed_ch = c.data.format == DATA_IDX ? 1 : c.data.format == DATA_CIFAR10 ? 3 : 0;
            test_check(!fixed_ch || c.model.in_channels == fixed_ch,
                       "%s: in_channels %d fits data.format", f, c.model.in_channels);
            test_check(c.data.format != DATA_CIFAR10 || c.model.image_size == 32,
                       "%s: image_size fits data.format", f);
            char *text = config_to_yaml(&c);
            config back;
            rc = config_load_string(&back, text, strlen(text), f);
            test_check(rc == 0 && config_diff_all(&c, &back, NULL, 0) == 0, "%s: round trip", f);
            free(text);
        }
        globfree(&g);
    }
    test_check(n >= 8, "%d shipped and test configs checked", n);
    /* mismatches, blaming the key given on the command line */
    expect_refused("configs/tiny_fashion.yaml", "model.in_channels=3",
                   "<command line>: model.in_channels: 3 does not fit data.format idx");
    expect_refused("configs/tiny_fashion.yaml", "data.format=cifar10",
                   "<command line>: data.format: 1 does not fit data.format cifar10");
    expect_refused("configs/cifar10.yaml", "model.in_channels=1",
                   "model.in_channels: 1 does not fit data.format cifar10 (CIFAR-10 images are 32x32 "
                   "RGB: in_channels must be 3)");
    expect_refused("configs/cifar10.yaml", "model.image_size=64", "model.image_size: 64 does not fit "
                   "data.format cifar10");
    /* in a file: the key and line of in_channels */
    expect_error_line("RGB with IDX data", 4, "  in_channels: 3", ":4:", "model.in_channels",
                      "does not fit data.format idx");
    config c;
    test_check(config_load_file(&c, "configs/tiny_fashion.yaml") == 0 &&
                   config_override(&c, "data.format=image_folder") == 0 &&
                   config_override(&c, "model.in_channels=3") == 0 && config_validate(&c) == 0,
               "image folders take any channel count");
}

/* Row 1: the model's limits are the validator's. The deepest model they allow
 * loads; an absurd one (4e14 parameters, attention on 512x512) is refused at the
 * key, from a file, an override or a checkpoint's header (loaded by name). */
static void test_model_limits(void) {
    config c;
    if (config_load_file(&c, "configs/tiny_fashion.yaml")) return;
    const char *deep[] = {"model.image_size=128", "model.ch_mult=[1,1,1,1,1,1,1,1]",
                          "model.num_res_blocks=64", "model.attn_resolutions=[]",
                          "data.format=image_folder"};
    int rc = 0;
    for (int i = 0; i < 5 && !rc; i++) rc = config_override(&c, deep[i]);
    if (!rc) rc = config_validate(&c);
    test_check(rc == 0, "8 levels x 64 blocks (the model's limits) validates (%s)", rc ? err_msg() : "ok");
    expect_refused("configs/tiny_fashion.yaml", "model.num_res_blocks=65",
                   "model.num_res_blocks: 65 is out of range (must be 1..64)");
    char *base = base_with(5, "  ch: 4096\n  ch_mult: [64, 64]\n  num_res_blocks: 64");
    /* line 6 and 7 now repeat ch_mult and num_res_blocks: drop them */
    char *dup = strstr(base, "  ch_mult: [1, 2]\n");
    if (dup) memmove(dup, dup + 18, strlen(dup + 18) + 1);
    dup = strstr(base, "  num_res_blocks: 1\n");
    if (dup) memmove(dup, dup + 20, strlen(dup + 20) + 1);
    rc = config_load_string(&c, base, strlen(base), "run/ckpt-0000000001.ddpm");
    test_check(rc == -1 && contains(err_msg(), "run/ckpt-0000000001.ddpm:5: model.ch: the model would "
                                               "have ") && contains(err_msg(), "parameters"),
               "an absurd model in a checkpoint's config is refused naming it: %s", err_msg());
    free(base);
    if (config_load_file(&c, "configs/tiny_fashion.yaml")) return;
    rc = config_override(&c, "model.image_size=512");
    if (!rc) rc = config_override(&c, "model.attn_resolutions=[512]");
    if (!rc) rc = config_validate(&c);
    test_check(rc == -1 && contains(err_msg(), "<command line>: model.attn_resolutions: attention at "
                                               "512x512 needs a 68719476736-float matrix"),
               "attention on a 512x512 map is refused: %s", err_msg());
    expect_refused("configs/tiny_fashion.yaml", "model.image_size=512",
                   "model.attn_resolutions: 14 is not a resolution");
}

/* Class conditioning: the demo's keys, the defaults, the ranges and the rules
 * between keys; num_classes is a model key (resume must match), label_dropout not. */
static void test_class_keys(void) {
    config c, d;
    if (!test_check(config_load_file(&c, "configs/fashion_mnist.yaml") == 0, "fashion_mnist loads"))
        return;
    test_check(c.model.num_classes == 10 && c.training.label_dropout == 0.1 &&
                   !strcmp(c.data.labels_path,
                           "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"),
               "fashion_mnist: 10 classes, label dropout 0.1, Debian's train labels");
    config_defaults(&d);
    test_check(d.model.num_classes == 0 && d.training.label_dropout == 0 && !d.data.labels_path[0],
               "defaults: unconditional, no label dropout, no label file");
    test_check(config_load_file(&d, "configs/cifar10.yaml") == 0 && d.model.num_classes == 0,
               "a config without num_classes (as an old checkpoint's) is unconditional");
    expect_override_error(&c, "model.num_classes=100001", "model.num_classes", "0..100000");
    expect_override_error(&c, "model.num_classes=-1", "model.num_classes", NULL);
    expect_override_error(&c, "training.label_dropout=1", "training.label_dropout", NULL);
    config u = c;
    int rc = config_override(&u, "model.num_classes=0") || config_validate(&u);
    test_check(rc != 0 && contains(err_msg(), "training.label_dropout") &&
                   contains(err_msg(), "class-conditional"),
               "label_dropout without classes refused: %s", err_msg());
    u = c;
    rc = config_override(&u, "data.format=shards") || config_validate(&u);
    test_check(rc != 0 && contains(err_msg(), "data.labels_path"),
               "labels_path with shards refused: %s", err_msg());
    u = c;
    char diff[256];
    config_override(&u, "model.num_classes=12");
    config_override(&u, "training.label_dropout=0.2");
    test_check(config_diff_model(&c, &u, diff, sizeof diff) == 1 && !strcmp(diff, "model.num_classes"),
               "num_classes must match on resume, label_dropout may change (%s)", diff);
    char *y = config_to_yaml(&c);
    test_check(y && config_load_string(&d, y, strlen(y), NULL) == 0 && d.model.num_classes == 10 &&
                   d.training.label_dropout == 0.1 && !strcmp(d.data.labels_path, c.data.labels_path),
               "canonical YAML carries the class keys");
    free(y);
}

int main(void) {
    setup_tmp();
    test_class_keys();
    test_fashion_mnist();
    test_cifar10();
    test_lsun256();
    test_tiny();
    test_hostile_numbers();
    test_shipped_configs();
    test_model_limits();
    test_round_trips();
    test_errors();
    test_garbage();
    test_overrides();
    test_diffs();
    test_validate_in_code();
    cleanup_tmp();
    return test_done();
}
