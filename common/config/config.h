/* The run configuration: a strict YAML file (libyaml) with sections model,
 * diffusion, training, data, distributed and output, plus dotted command-line
 * overrides (`training.steps=200`) validated exactly like the file.
 *
 * Errors name the file, line and key: "configs/x.yaml:12: model.ch: expected a
 * positive integer, got 'abc'". Unknown keys, wrong types, out-of-range values and
 * missing required keys are all errors. */
#ifndef DDPM_CONFIG_H
#define DDPM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_LEVELS 8
#define CONFIG_MAX_ATTN 8
#define CONFIG_PATH_MAX 1024

typedef enum { BETA_SCHEDULE_LINEAR = 0, BETA_SCHEDULE_COSINE = 1 } beta_schedule;
typedef enum { SAMPLING_VAR_BETA = 0, SAMPLING_VAR_BETA_TILDE = 1 } sampling_variance;
typedef enum { TIMESTEP_UNIFORM = 0, TIMESTEP_STRATIFIED = 1 } timestep_sampler;
typedef enum { DATA_IDX = 0, DATA_CIFAR10 = 1, DATA_IMAGE_FOLDER = 2, DATA_SHARDS = 3 } data_format;
typedef enum { CODEC_FP32 = 0, CODEC_FP32_ZSTD = 1, CODEC_BF16_ZSTD = 2 } wire_codec;

typedef struct {
    int image_size;         /* required, >= 4 */
    int in_channels;        /* required, 1..4; the output has the same count (epsilon) */
    int ch;                 /* required, multiple of 32 (GroupNorm 32 groups) */
    int ch_mult[CONFIG_MAX_LEVELS];
    int num_levels;         /* length of ch_mult, 1..8 */
    int num_res_blocks;     /* required, >= 1 */
    int attn_resolutions[CONFIG_MAX_ATTN];
    int num_attn;           /* length of attn_resolutions, may be 0 */
    double dropout;         /* [0, 1) */
    int resamp_with_conv;   /* bool, default true */
} model_config;

typedef struct {
    int timesteps;                /* T, required, >= 1 */
    beta_schedule schedule;       /* "linear" | "cosine", default linear */
    double beta_start, beta_end;  /* linear schedule, default 1e-4, 0.02 */
    sampling_variance sampling_var; /* "beta" | "beta_tilde", default beta */
} diffusion_config;

typedef struct {
    uint64_t seed;          /* default 0 */
    int batch_size;         /* global batch, required */
    int micro_batch;        /* per forward/backward; 0 = the whole local batch */
    long steps;             /* required, >= 0 */
    double lr;              /* required, > 0 */
    int warmup_steps;       /* default 0 */
    double grad_clip;       /* global-norm clip, default 1.0; 0 disables */
    double ema_decay;       /* default 0.9999, [0,1) */
    double adam_beta1, adam_beta2, adam_eps; /* 0.9, 0.999, 1e-8 */
    timestep_sampler t_sampler; /* "uniform" | "stratified", default uniform */
    int log_every;          /* default 10 */
    int checkpoint_every;   /* default 1000; 0 = only at the end */
    int keep_checkpoints;   /* default 3, >= 1 */
    int threads;            /* 0 = the cores given to the process */
} training_config;

typedef struct {
    data_format format;      /* "idx" | "cifar10" | "image_folder" | "shards", required */
    char path[CONFIG_PATH_MAX];      /* required: file or folder */
    char eval_path[CONFIG_PATH_MAX]; /* optional held-out set, "" if none */
    int random_flip;         /* bool, default false */
} data_config;

typedef struct {
    int servers;             /* S, default 1 */
    wire_codec codec;        /* "fp32" | "fp32_zstd" | "bf16_zstd", default fp32 */
    int zstd_level;          /* default 1, 1..19 */
    double timeout_s;        /* default 60 */
} distributed_config;

typedef struct {
    char dir[CONFIG_PATH_MAX]; /* required: run folder (checkpoints, metrics.jsonl) */
} output_config;

typedef struct {
    char source[CONFIG_PATH_MAX]; /* the file it came from ("<string>" otherwise) */
    model_config model;
    diffusion_config diffusion;
    training_config training;
    data_config data;
    distributed_config distributed;
    output_config output;
} config;

/* Fill every field with its default (required fields zero). */
void config_defaults(config *c);
/* Parse a YAML file. Returns 0, or -1 with err_msg() naming file:line: key. */
int config_load_file(config *c, const char *path);
/* Parse YAML text (name is used in messages, e.g. a checkpoint's path). */
int config_load_string(config *c, const char *text, size_t len, const char *name);
/* Apply one "section.key=value" override, validated like the file. Lists use
 * YAML flow syntax: model.ch_mult=[1,2,2]. Must be followed by config_validate(). */
int config_override(config *c, const char *assignment);
/* Cross-field checks (required keys present, ch multiple of 32, image size divisible
 * by 2^(levels-1), ...). config_load_* call it; call it again after overrides. */
int config_validate(const config *c);
/* Canonical YAML text of the whole config (every key, fixed order); caller frees.
 * config_load_string(config_to_yaml(c)) gives back an equal config. */
char *config_to_yaml(const config *c);
/* Compare the sections a checkpoint must match on resume (model, diffusion).
 * Writes a comma-separated list of differing dotted keys into out; returns the count. */
int config_diff_model(const config *a, const config *b, char *out, size_t out_len);
/* Dotted keys that differ anywhere (for the resume log). Same conventions. */
int config_diff_all(const config *a, const config *b, char *out, size_t out_len);

#endif
