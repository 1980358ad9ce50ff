/* The run configuration: a strict YAML file (libyaml) with sections model,
 * diffusion, training, data, distributed and output, plus dotted command-line
 * overrides (`training.steps=200`) validated exactly like the file.
 *
 * Errors name the file, line and key: "configs/x.yaml:12: model.ch: expected an
 * integer, got 'abc'". Unknown sections or keys, wrong types, out-of-range values,
 * duplicate keys, malformed YAML and missing required keys are all errors.
 * docs/config.md lists every key with its type, default, range and meaning.
 *
 * YAML key names equal the field names, except diffusion.sampling_variance
 * (field sampling_var) and training.timestep_sampler (field t_sampler).
 * Ranges below are inclusive unless written with a parenthesis. Numbers must be
 * plain YAML scalars (a quoted "32" is a string, not an integer); booleans are
 * true/false. A section may be left out only if none of its keys is required
 * (distributed). */
#ifndef DDPM_CONFIG_H
#define DDPM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"
#include "common/diffusion/diffusion.h"
#include "common/model/model_config.h"
#include "common/ops/ops.h"
#include "common/train/batch.h"
#include "common/wire/wire.h"

/* The model's limits (common/model/model_config.h) size the lists. */
#define CONFIG_MAX_LEVELS UNET_MAX_LEVELS
#define CONFIG_MAX_ATTN UNET_MAX_ATTN
#define CONFIG_PATH_MAX 1024
/* Size of config.key_line: every key and every section has a slot. */
#define CONFIG_MAX_KEYS 64



/* Which weights training.sample_every draws with. */
typedef enum { SAMPLE_WEIGHTS_EMA = 0, SAMPLE_WEIGHTS_PARAMS = 1 } sample_weights_kind;

typedef struct {
    int timesteps;                /* T, required, 1..100000 */
    beta_schedule schedule;       /* "linear" | "cosine", default linear */
    double beta_start, beta_end;  /* linear schedule, default 1e-4, 0.02; each in (0, 1),
                                     beta_start <= beta_end */
    sampling_variance sampling_var; /* key sampling_variance: "beta" | "beta_tilde",
                                       default beta */
} diffusion_config;

typedef struct {
    uint64_t seed;          /* default 0, 0..2^64-1 */
    int batch_size;         /* global batch, required, 1..1048576 */
    int micro_batch;        /* per forward/backward, default 0 = the whole local batch;
                               0..batch_size */
    long steps;             /* required, 0..10^12 */
    double lr;              /* required, (0, 1] */
    int warmup_steps;       /* default 0, >= 0 */
    double grad_clip;       /* global-norm clip, default 1.0; 0 disables; [0, 1e6] */
    double ema_decay;       /* default 0.9999, [0,1) */
    double adam_beta1, adam_beta2, adam_eps; /* 0.9, 0.999, 1e-8; betas [0,1), eps (0,1] */
    timestep_sampler t_sampler; /* key timestep_sampler: "uniform" | "stratified",
                                   default uniform */
    int log_every;          /* default 10, >= 1 */
    int checkpoint_every;   /* default 1000, >= 0; 0 = only at the end */
    int keep_checkpoints;   /* default 3, 1..1000 */
    int threads;            /* default 0 = the cores given to the process; 0..1024 */
    int eval_every;         /* default 0 = off; >= 0: bits/dim on data.eval_path every K steps
                               (needs data.eval_path) */
    int eval_images;        /* default 64, 1..10^6: first images of data.eval_path evaluated */
    int eval_stride;        /* default 50, 1..100000: every K-th timestep (common/eval/bpd.h,
                               unbiased strided estimate) */
    double label_dropout;   /* default 0, [0, 1): probability that a sample's class label is
                               replaced by the null label (classifier-free guidance); needs
                               model.num_classes > 0; may change at a resume */
    int sample_every;       /* default 0 = off; >= 0: a grid of samples every K steps
                               (output.dir/samples/step-<step>.png, TensorBoard) */
    int sample_images;      /* default 16, 1..256: images in that grid */
    sample_weights_kind sample_weights; /* "ema" (default) | "params" */
    ops_precision precision; /* "fp32" | "bf16" (mixed precision, ops.h), default fp32; not
                               a model key: may change at a resume */
} training_config;

typedef struct {
    data_format format;      /* "idx" | "cifar10" | "image_folder" | "shards", required */
    char path[CONFIG_PATH_MAX];      /* required, non-empty: file or folder */
    char eval_path[CONFIG_PATH_MAX]; /* optional held-out set, "" (or null) if none */
    int random_flip;         /* bool, default false */
    char labels_path[CONFIG_PATH_MAX]; /* optional: IDX label file of format idx's images
                                          (class-conditional models), "" if none */
} data_config;

typedef struct {
    int servers;             /* S, default 1, 1..4096 */
    wire_codec codec;        /* "fp32" | "fp32_zstd" | "bf16_zstd", default fp32 */
    int zstd_level;          /* default 1, 1..19 */
    double timeout_s;        /* default 60, (0, 1e6] */
} distributed_config;

typedef struct {
    char dir[CONFIG_PATH_MAX]; /* required, non-empty: run folder (checkpoints, metrics.jsonl) */
    int tensorboard;           /* bool, default true: TensorBoard event files in dir */
} output_config;

typedef struct {
    char source[CONFIG_PATH_MAX]; /* the file it came from ("<string>" otherwise) */
    model_config model;
    diffusion_config diffusion;
    training_config training;
    data_config data;
    distributed_config distributed;
    output_config output;
    /* Where each key and section was set, for error messages only: its line in
     * source (> 0), 0 = default / set in code, -1 = command line override.
     * Indexed internally by config.c; ignored by config_diff_* and round trips. */
    int key_line[CONFIG_MAX_KEYS];
} config;

/* Fill every field with its default (required fields zero), source "<string>". */
void config_defaults(config *c);
/* Parse a YAML file (at most 1 MiB). Returns 0, or -1 with err_msg() naming
 * file:line: key. On error *c is left unchanged. */
int config_load_file(config *c, const char *path);
/* Parse YAML text of len bytes (need not be NUL-terminated; borrowed). name is used
 * in messages and stored as source (NULL gives "<string>"). *c unchanged on error. */
int config_load_string(config *c, const char *text, size_t len, const char *name);
/* Apply one "section.key=value" override, validated like the file. Lists use
 * YAML flow syntax: model.ch_mult=[1,2,2]. Must be followed by config_validate().
 * Errors read "<command line>: section.key: ..."; *c unchanged on error. */
int config_override(config *c, const char *assignment);
/* Every key's range plus cross-field checks (required keys set, the model's own
 * rules through unet_check_config: ch multiple of 32, image size divisible by
 * 2^(levels-1), attention resolutions that exist, sizes within the model's
 * limits; in_channels and image_size that the data format fixes; micro batch <=
 * batch, ...). config_load_* call it (so a checkpoint header's config, loaded
 * with config_load_string, is checked before any model is built from it); call
 * it again after overrides. */
int config_validate(const config *c);
/* Canonical YAML text of the whole config (every key, fixed order); caller frees.
 * config_load_string(config_to_yaml(c)) gives back an equal config. */
char *config_to_yaml(const config *c);
/* Compare the sections a checkpoint must match on resume (model, diffusion).
 * Writes a comma-separated list of differing dotted keys into out (truncated to
 * out_len, always NUL-terminated; out may be NULL when out_len is 0); returns the
 * count of differing keys. */
int config_diff_model(const config *a, const config *b, char *out, size_t out_len);
/* The same for one section ("model", "training", ...); -1 for an unknown name. */
int config_diff_section(const config *a, const config *b, const char *section, char *out,
                        size_t out_len);
/* One section ("model", "diffusion", ...) as a JSON object, every key in the
 * canonical order: numbers, booleans, integer lists, and enums and strings as JSON
 * strings. Caller frees; NULL for an unknown section. Every key of the section is
 * in it, so a new model key travels without change (docs/export.md). */
char *config_section_json(const config *c, const char *section);
/* Dotted keys that differ anywhere (for the resume log). Same conventions. */
int config_diff_all(const config *a, const config *b, char *out, size_t out_len);

#endif
