/* Strict YAML run configuration. One table (g_keys) describes every key: its
 * section, type, place in the struct, range and default-ness; the file loader,
 * the command-line overrides, config_validate, config_to_yaml and the diffs are
 * all driven by it, so the five cannot disagree about a key.
 *
 * Parsing uses libyaml's event API rather than its document API: events carry
 * the line of every key and value, let us reject anchors/aliases before they are
 * resolved (the document API would happily build self-referencing nodes), and
 * let us stop at the first wrong nesting instead of building the whole tree. */
#include "common/config/config.h"

#include "common/core/util.h"
#include "common/model/unet.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Enums are stored and read through int lvalues by the table code. */
_Static_assert(sizeof(beta_schedule) == sizeof(int), "enum size");
_Static_assert(sizeof(sampling_variance) == sizeof(int), "enum size");
_Static_assert(sizeof(timestep_sampler) == sizeof(int), "enum size");
_Static_assert(sizeof(data_format) == sizeof(int), "enum size");
_Static_assert(sizeof(wire_codec) == sizeof(int), "enum size");
_Static_assert(sizeof(sample_weights_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(ops_precision) == sizeof(int), "enum size");

#define CMDLINE_NAME "<command line>"
#define MAX_FILE_BYTES (1u << 20)

enum { SEC_MODEL, SEC_DIFFUSION, SEC_TRAINING, SEC_DATA, SEC_DISTRIBUTED, SEC_OUTPUT, NUM_SECTIONS };
static const char *const g_sections[NUM_SECTIONS] = {
    "model", "diffusion", "training", "data", "distributed", "output",
};

typedef enum { K_INT, K_LONG, K_U64, K_DOUBLE, K_BOOL, K_ENUM, K_STRING, K_INT_LIST } key_type;

typedef struct {
    int section;
    const char *name;
    key_type type;
    size_t offset;          /* of the value (the first entry for lists) in config */
    size_t count_offset;    /* K_INT_LIST: the int holding the list length */
    int min_count, max_count; /* K_INT_LIST */
    double lo, hi;          /* numeric range (per entry for lists) */
    unsigned char lo_open, hi_open, no_hi;
    int multiple;           /* value must be a multiple of this; 0: no rule */
    const char *const *choices; /* K_ENUM: names in enum order, NULL-terminated */
    unsigned char required;
    unsigned char allow_empty;  /* K_STRING: "" / null allowed */
} key_def;

static const char *const g_schedules[] = {"linear", "cosine", NULL};
static const char *const g_variances[] = {"beta", "beta_tilde", NULL};
static const char *const g_samplers[] = {"uniform", "stratified", NULL};
static const char *const g_sample_weights[] = {"ema", "params", NULL};
static const char *const g_formats[] = {"idx", "cifar10", "image_folder", "shards", NULL};

#define OFF(f) offsetof(config, f)
/* Initialiser helpers, one per kind of key; R marks required keys. */
#define INT_KEY(s, n, f, l, h, r) \
    {.section = s, .name = n, .type = K_INT, .offset = OFF(f), .lo = l, .hi = h, .required = r}
/* An int key with no upper bound of its own is still bounded by int. */
#define INT_MIN_KEY(s, n, f, l, r) \
    {.section = s, .name = n, .type = K_INT, .offset = OFF(f), .lo = l, .hi = INT_MAX, .required = r}
#define DBL_KEY(s, n, f, l, lo_o, h, hi_o, r) \
    {.section = s, .name = n, .type = K_DOUBLE, .offset = OFF(f), .lo = l, .hi = h, \
     .lo_open = lo_o, .hi_open = hi_o, .required = r}
#define BOOL_KEY(s, n, f) {.section = s, .name = n, .type = K_BOOL, .offset = OFF(f)}
#define ENUM_KEY(s, n, f, ch, r) \
    {.section = s, .name = n, .type = K_ENUM, .offset = OFF(f), .choices = ch, .required = r}
#define STR_KEY(s, n, f, r) \
    {.section = s, .name = n, .type = K_STRING, .offset = OFF(f), .required = r, \
     .allow_empty = !(r)}
#define LIST_KEY(s, n, f, cnt, mn, mx, l, h, r) \
    {.section = s, .name = n, .type = K_INT_LIST, .offset = OFF(f), .count_offset = OFF(cnt), \
     .min_count = mn, .max_count = mx, .lo = l, .hi = h, .required = r}

/* The order here is the canonical order of config_to_yaml and of the diffs.
 * The model's ranges are the model's limits (common/model/model_config.h);
 * config_validate adds the model's other rules through unet_check_config. */
static const key_def g_keys[] = {
    INT_KEY(SEC_MODEL, "image_size", model.image_size, UNET_MIN_IMAGE_SIZE, UNET_MAX_IMAGE_SIZE, 1),
    INT_KEY(SEC_MODEL, "in_channels", model.in_channels, 1, UNET_MAX_IN_CHANNELS, 1),
    {.section = SEC_MODEL, .name = "ch", .type = K_INT, .offset = OFF(model.ch), .lo = UNET_MIN_CH,
     .hi = UNET_MAX_CH, .multiple = UNET_GN_GROUPS, .required = 1},
    LIST_KEY(SEC_MODEL, "ch_mult", model.ch_mult, model.num_levels, 1, UNET_MAX_LEVELS, 1,
             UNET_MAX_CH_MULT, 1),
    INT_KEY(SEC_MODEL, "num_res_blocks", model.num_res_blocks, 1, UNET_MAX_RES_BLOCKS, 1),
    LIST_KEY(SEC_MODEL, "attn_resolutions", model.attn_resolutions, model.num_attn, 0,
             UNET_MAX_ATTN, 1, UNET_MAX_IMAGE_SIZE, 0),
    DBL_KEY(SEC_MODEL, "dropout", model.dropout, 0, 0, 1, 1, 0),
    BOOL_KEY(SEC_MODEL, "resamp_with_conv", model.resamp_with_conv),
    BOOL_KEY(SEC_MODEL, "learn_sigma", model.learn_sigma),
    INT_KEY(SEC_MODEL, "num_classes", model.num_classes, 0, UNET_MAX_CLASSES, 0),

    INT_KEY(SEC_DIFFUSION, "timesteps", diffusion.timesteps, 1, 100000, 1),
    ENUM_KEY(SEC_DIFFUSION, "schedule", diffusion.schedule, g_schedules, 0),
    DBL_KEY(SEC_DIFFUSION, "beta_start", diffusion.beta_start, 0, 1, 1, 1, 0),
    DBL_KEY(SEC_DIFFUSION, "beta_end", diffusion.beta_end, 0, 1, 1, 1, 0),
    ENUM_KEY(SEC_DIFFUSION, "sampling_variance", diffusion.sampling_var, g_variances, 0),

    {.section = SEC_TRAINING, .name = "seed", .type = K_U64, .offset = OFF(training.seed)},
    INT_KEY(SEC_TRAINING, "batch_size", training.batch_size, 1, 1048576, 1),
    INT_KEY(SEC_TRAINING, "micro_batch", training.micro_batch, 0, 1048576, 0),
    {.section = SEC_TRAINING, .name = "steps", .type = K_LONG, .offset = OFF(training.steps),
     .lo = 0, .hi = 1e12, .required = 1},
    DBL_KEY(SEC_TRAINING, "lr", training.lr, 0, 1, 1, 0, 1),
    INT_MIN_KEY(SEC_TRAINING, "warmup_steps", training.warmup_steps, 0, 0),
    DBL_KEY(SEC_TRAINING, "grad_clip", training.grad_clip, 0, 0, 1e6, 0, 0),
    DBL_KEY(SEC_TRAINING, "ema_decay", training.ema_decay, 0, 0, 1, 1, 0),
    DBL_KEY(SEC_TRAINING, "adam_beta1", training.adam_beta1, 0, 0, 1, 1, 0),
    DBL_KEY(SEC_TRAINING, "adam_beta2", training.adam_beta2, 0, 0, 1, 1, 0),
    DBL_KEY(SEC_TRAINING, "adam_eps", training.adam_eps, 0, 1, 1, 0, 0),
    ENUM_KEY(SEC_TRAINING, "timestep_sampler", training.t_sampler, g_samplers, 0),
    INT_MIN_KEY(SEC_TRAINING, "log_every", training.log_every, 1, 0),
    INT_MIN_KEY(SEC_TRAINING, "checkpoint_every", training.checkpoint_every, 0, 0),
    INT_KEY(SEC_TRAINING, "keep_checkpoints", training.keep_checkpoints, 1, 1000, 0),
    INT_KEY(SEC_TRAINING, "threads", training.threads, 0, 1024, 0),
    INT_MIN_KEY(SEC_TRAINING, "eval_every", training.eval_every, 0, 0),
    INT_KEY(SEC_TRAINING, "eval_images", training.eval_images, 1, 1000000, 0),
    INT_KEY(SEC_TRAINING, "eval_stride", training.eval_stride, 1, 100000, 0),
    DBL_KEY(SEC_TRAINING, "label_dropout", training.label_dropout, 0, 0, 1, 1, 0),
    INT_MIN_KEY(SEC_TRAINING, "sample_every", training.sample_every, 0, 0),
    INT_KEY(SEC_TRAINING, "sample_images", training.sample_images, 1, 256, 0),
    ENUM_KEY(SEC_TRAINING, "sample_weights", training.sample_weights, g_sample_weights, 0),
    ENUM_KEY(SEC_TRAINING, "precision", training.precision, ops_precision_names, 0),

    ENUM_KEY(SEC_DATA, "format", data.format, g_formats, 1),
    STR_KEY(SEC_DATA, "path", data.path, 1),
    STR_KEY(SEC_DATA, "eval_path", data.eval_path, 0),
    BOOL_KEY(SEC_DATA, "random_flip", data.random_flip),
    STR_KEY(SEC_DATA, "labels_path", data.labels_path, 0),

    INT_KEY(SEC_DISTRIBUTED, "servers", distributed.servers, 1, 4096, 0),
    ENUM_KEY(SEC_DISTRIBUTED, "codec", distributed.codec, wire_codec_names, 0),
    INT_KEY(SEC_DISTRIBUTED, "zstd_level", distributed.zstd_level, 1, 19, 0),
    DBL_KEY(SEC_DISTRIBUTED, "timeout_s", distributed.timeout_s, 0, 1, 1e6, 0, 0),

    STR_KEY(SEC_OUTPUT, "dir", output.dir, 1),
    BOOL_KEY(SEC_OUTPUT, "tensorboard", output.tensorboard),
};
#define NUM_KEYS ((int)(sizeof g_keys / sizeof g_keys[0]))
/* key_line slots: keys first, then sections. */
#define SECTION_SLOT(s) (NUM_KEYS + (s))
_Static_assert(sizeof g_keys / sizeof g_keys[0] + NUM_SECTIONS <= CONFIG_MAX_KEYS,
               "CONFIG_MAX_KEYS too small");

static int find_key(const char *name) {
    for (int k = 0; k < NUM_KEYS; k++) {
        char dotted[96];
        snprintf(dotted, sizeof dotted, "%s.%s", g_sections[g_keys[k].section], g_keys[k].name);
        if (strcmp(dotted, name) == 0) return k;
    }
    return -1;
}

#define FIELD(c, k, T) ((T *)((char *)(c) + g_keys[k].offset))
#define CFIELD(c, k, T) ((const T *)((const char *)(c) + g_keys[k].offset))
#define LIST_COUNT(c, k) ((int *)((char *)(c) + g_keys[k].count_offset))
#define CLIST_COUNT(c, k) ((const int *)((const char *)(c) + g_keys[k].count_offset))

void config_defaults(config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->source, sizeof c->source, "<string>");
    c->model.resamp_with_conv = 1;
    c->diffusion.schedule = BETA_SCHEDULE_LINEAR;
    c->diffusion.beta_start = 1e-4;
    c->diffusion.beta_end = 0.02;
    c->diffusion.sampling_var = SAMPLING_VAR_BETA;
    c->training.grad_clip = 1.0;
    c->training.ema_decay = 0.9999;
    c->training.adam_beta1 = 0.9;
    c->training.adam_beta2 = 0.999;
    c->training.adam_eps = 1e-8;
    c->training.t_sampler = TIMESTEP_UNIFORM;
    c->training.log_every = 10;
    c->training.checkpoint_every = 1000;
    c->training.keep_checkpoints = 3;
    c->training.eval_every = 0;
    c->training.eval_images = 64;
    c->training.eval_stride = 50;
    c->training.sample_images = 16;
    c->output.tensorboard = 1;
    c->data.format = DATA_IDX;
    c->distributed.servers = 1;
    c->distributed.codec = CODEC_FP32;
    c->distributed.zstd_level = 1;
    c->distributed.timeout_s = 60;
}

/* ---------------------------------------------------------------- messages */

/* Copy user text into a message: at most 60 characters, non-printables as '?',
 * so that garbage input still gives a readable one-line error. */
static void quote_text(char *dst, size_t cap, const char *s, size_t len) {
    size_t n = 0, limit = cap > 8 ? cap - 4 : 0;
    if (limit > 60) limit = 60;
    for (size_t i = 0; i < len && n < limit; i++) {
        unsigned char ch = (unsigned char)s[i];
        dst[n++] = (ch >= 0x20 && ch != 0x7f) ? (char)ch : '?';
    }
    if (len > limit && n + 3 < cap) { memcpy(dst + n, "...", 3); n += 3; }
    dst[n < cap ? n : cap - 1] = '\0';
}

static void dotted_name(char *dst, size_t cap, int k) {
    snprintf(dst, cap, "%s.%s", g_sections[g_keys[k].section], g_keys[k].name);
}

/* "NAME:LINE: KEY: message" ("NAME: KEY: ..." when line is 0 and for the command
 * line, "NAME:LINE: message" when key is empty). */
__attribute__((format(printf, 4, 5)))
static int fail_at(const char *name, int line, const char *key, const char *fmt, ...) {
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char loc[200];
    if (line > 0) snprintf(loc, sizeof loc, "%.180s:%d", name, line);
    else snprintf(loc, sizeof loc, "%.180s", name);
    if (key && key[0]) return err_set("%s: %s: %s", loc, key, msg);
    return err_set("%s: %s", loc, msg);
}

/* Text describing what a key accepts, for "expected ..." messages. */
static void type_text(char *dst, size_t cap, int k) {
    const key_def *d = &g_keys[k];
    switch (d->type) {
    case K_INT: case K_LONG: snprintf(dst, cap, "an integer"); break;
    case K_U64: snprintf(dst, cap, "a non-negative integer"); break;
    case K_DOUBLE: snprintf(dst, cap, "a number"); break;
    case K_BOOL: snprintf(dst, cap, "true or false"); break;
    case K_STRING: snprintf(dst, cap, "a path"); break;
    case K_INT_LIST: snprintf(dst, cap, "a list of integers like [1, 2]"); break;
    case K_ENUM: {
        size_t n = (size_t)snprintf(dst, cap, "one of ");
        for (int i = 0; d->choices[i] && n < cap; i++)
            n += (size_t)snprintf(dst + n, cap - n, "%s%s", i ? ", " : "", d->choices[i]);
        break;
    }
    }
}

static void range_text(char *dst, size_t cap, int k) {
    const key_def *d = &g_keys[k];
    if (d->type == K_DOUBLE)
        snprintf(dst, cap, "%c%g, %g%c", d->lo_open ? '(' : '[', d->lo, d->hi, d->hi_open ? ')' : ']');
    else if (d->no_hi)
        snprintf(dst, cap, ">= %.0f", d->lo);
    else
        snprintf(dst, cap, "%.0f..%.0f", d->lo, d->hi);
}

/* Check one number against a key's range; writes the reason and returns -1. */
static int check_number(int k, double v, char *why, size_t cap) {
    const key_def *d = &g_keys[k];
    char range[64];
    range_text(range, sizeof range, k);
    int bad = !isfinite(v) || (d->lo_open ? v <= d->lo : v < d->lo) ||
              (!d->no_hi && (d->hi_open ? v >= d->hi : v > d->hi));
    if (bad) {
        snprintf(why, cap, "%.17g is out of range (must be %s)", v, range);
        return -1;
    }
    if (d->multiple && fmod(v, d->multiple) != 0) {
        snprintf(why, cap, "%.0f is not a multiple of %d%s", v, d->multiple,
                 d->multiple == 32 ? " (GroupNorm uses 32 groups)" : "");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ scalar parsing */

static int is_null_text(const char *s) {
    return !s[0] || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Decimal integer, optional sign; anything else (hex, floats, suffixes) fails
 * with -1, digits beyond long long with -2 (then *out is the saturated value, so
 * that the range check names the right bound). */
static int parse_integer(const char *s, long long *out) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!*p) return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end) return -1;
    *out = v;
    return errno == ERANGE ? -2 : errno ? -1 : 0;
}

static int parse_unsigned(const char *s, unsigned long long *out) {
    const char *p = s;
    if (*p == '+') p++;
    if (!*p) return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

/* The reason an integer entry is refused: not an integer, or out of range
 * (overflowing text included). Returns 0 when v is a valid value of key k. */
static int integer_problem(int k, const char *val, int parsed, long long v, char *why,
                           size_t cap) {
    const key_def *d = &g_keys[k];
    char range[64], shown[80];
    if (parsed == -1) {
        snprintf(why, cap, "not an integer");
        return -1;
    }
    if (parsed == -2) {
        range_text(range, sizeof range, k);
        quote_text(shown, sizeof shown, val, strlen(val));
        snprintf(why, cap, "%s is out of range (must be %s)", shown, range);
        return -1;
    }
    if (check_number(k, (double)v, why, cap)) {
        /* the integer as written, not its nearest double */
        if (strstr(why, "out of range")) {
            range_text(range, sizeof range, k);
            snprintf(why, cap, "%lld is out of range (must be %s)", v, range);
        }
        return -1;
    }
    /* every int key's range lies within int (INT_MIN_KEY); kept for safety */
    if ((d->type == K_INT || d->type == K_INT_LIST) && (v < INT_MIN || v > INT_MAX)) {
        range_text(range, sizeof range, k);
        snprintf(why, cap, "%lld is out of range (must be %s)", v, range);
        return -1;
    }
    return 0;
}

/* YAML 1.2 core-schema style float (digits, '.', exponent); no inf/nan/hex. */
static int parse_real(const char *s, double *out) {
    int digits = 0;
    for (const char *q = s; *q; q++) {
        if (*q >= '0' && *q <= '9') digits++;
        else if (!strchr("+-.eE", *q)) return -1;
    }
    if (!digits) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (*end || !isfinite(v)) return -1;
    /* "1e-400" is not 0: a tiny grad_clip must not silently become "off" */
    if (errno == ERANGE && v == 0) return -2;
    *out = v;
    return 0;
}

/* Where messages go: a file name with lines, or the command line without. */
typedef struct {
    const char *name;
    int cmdline;
} origin;

static int origin_line(const origin *o, int line) { return o->cmdline ? 0 : line; }

/* Parse scalar text for key k and store it into c. plain: YAML plain style (a
 * quoted scalar is a string and never a number or boolean). */
static int apply_scalar(config *c, int k, const char *val, size_t len, int plain, int line,
                        const origin *o) {
    const key_def *d = &g_keys[k];
    char key[96], shown[80], expected[160], why[200];
    dotted_name(key, sizeof key, k);
    quote_text(shown, sizeof shown, val, len);
    type_text(expected, sizeof expected, k);
    line = origin_line(o, line);
    if (strlen(val) != len)
        return fail_at(o->name, line, key, "value contains a NUL character");
    if (plain && is_null_text(val) && !(d->type == K_STRING && d->allow_empty)) {
        if (d->type == K_STRING)
            return fail_at(o->name, line, key, "missing value: expected a non-empty path");
        return fail_at(o->name, line, key, "missing value: expected %s", expected);
    }
    int numeric = d->type == K_INT || d->type == K_LONG || d->type == K_U64 ||
                  d->type == K_DOUBLE || d->type == K_BOOL;
    if (numeric && !plain)
        return fail_at(o->name, line, key, "expected %s, got the quoted string \"%s\"", expected,
                       shown);
    switch (d->type) {
    case K_INT:
    case K_LONG: {
        long long v = 0;
        int parsed = parse_integer(val, &v);
        if (parsed == -1)
            return fail_at(o->name, line, key, "expected %s, got '%s'", expected, shown);
        if (integer_problem(k, val, parsed, v, why, sizeof why))
            return fail_at(o->name, line, key, "%s", why);
        if (d->type == K_INT) *FIELD(c, k, int) = (int)v;
        else *FIELD(c, k, long) = (long)v;
        return 0;
    }
    case K_U64: {
        unsigned long long v;
        if (parse_unsigned(val, &v))
            return fail_at(o->name, line, key, "expected %s below 2^64, got '%s'", expected, shown);
        *FIELD(c, k, uint64_t) = (uint64_t)v;
        return 0;
    }
    case K_DOUBLE: {
        double v = 0;
        int parsed = parse_real(val, &v);
        if (parsed == -2)
            return fail_at(o->name, line, key, "'%s' is too small to represent (it would read "
                           "as 0)", shown);
        if (parsed)
            return fail_at(o->name, line, key, "expected %s, got '%s'", expected, shown);
        if (check_number(k, v, why, sizeof why)) return fail_at(o->name, line, key, "%s", why);
        *FIELD(c, k, double) = v;
        return 0;
    }
    case K_BOOL: {
        int v;
        if (!strcmp(val, "true") || !strcmp(val, "True") || !strcmp(val, "TRUE")) v = 1;
        else if (!strcmp(val, "false") || !strcmp(val, "False") || !strcmp(val, "FALSE")) v = 0;
        else return fail_at(o->name, line, key, "expected %s, got '%s'", expected, shown);
        *FIELD(c, k, int) = v;
        return 0;
    }
    case K_ENUM:
        for (int i = 0; d->choices[i]; i++)
            if (!strcmp(val, d->choices[i])) {
                *FIELD(c, k, int) = i;
                return 0;
            }
        return fail_at(o->name, line, key, "expected %s, got '%s'", expected, shown);
    case K_STRING:
        if (plain && is_null_text(val)) len = 0;
        if (len >= CONFIG_PATH_MAX)
            return fail_at(o->name, line, key, "path is %zu bytes long (at most %d)", len,
                           CONFIG_PATH_MAX - 1);
        if (!len && !d->allow_empty)
            return fail_at(o->name, line, key, "expected a non-empty path");
        memcpy(FIELD(c, k, char), val, len);
        FIELD(c, k, char)[len] = '\0';
        return 0;
    case K_INT_LIST:
        return fail_at(o->name, line, key, "expected %s, got '%s'", expected, shown);
    }
    return 0;
}

/* -------------------------------------------------------------- the reader */

typedef struct {
    yaml_parser_t parser;
    yaml_event_t ev;
    int has_ev;
    origin o;
    const char *text;
    size_t len;
    char where[160];   /* dotted key being read, named in syntax errors */
} reader;

static int reader_syntax_error(reader *r) {
    yaml_parser_t *p = &r->parser;
    int line;
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors carry a byte offset, not a mark: count the lines. */
        size_t off = p->problem_offset < r->len ? p->problem_offset : r->len;
        line = 1;
        for (size_t i = 0; i < off; i++)
            if (r->text[i] == '\n') line++;
    } else {
        line = (int)p->problem_mark.line + 1;
    }
    if (p->error == YAML_MEMORY_ERROR)
        return fail_at(r->o.name, 0, r->where, "out of memory while parsing YAML");
    char ctx[160] = "";
    if (p->context) snprintf(ctx, sizeof ctx, " (%s)", p->context);
    return fail_at(r->o.name, origin_line(&r->o, line), r->where, "invalid YAML: %s%s",
                   p->problem ? p->problem : "unknown error", ctx);
}

static int reader_next(reader *r) {
    if (r->has_ev) {
        yaml_event_delete(&r->ev);
        r->has_ev = 0;
    }
    if (!yaml_parser_parse(&r->parser, &r->ev)) return reader_syntax_error(r);
    r->has_ev = 1;
    return 0;
}

static int ev_line(const reader *r) { return origin_line(&r->o, (int)r->ev.start_mark.line + 1); }

static const char *ev_kind(const yaml_event_t *e) {
    switch (e->type) {
    case YAML_SEQUENCE_START_EVENT: return "a list";
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_ALIAS_EVENT: return "an alias";
    case YAML_SCALAR_EVENT: return "a scalar";
    default: return "nothing";
    }
}

/* Anchors, aliases and tags have no use in a config and would let a value mean
 * something other than what it reads as; reject them. */
static int reject_props(reader *r, const char *key) {
    const yaml_event_t *e = &r->ev;
    const yaml_char_t *anchor = NULL, *tag = NULL;
    if (e->type == YAML_ALIAS_EVENT)
        return fail_at(r->o.name, ev_line(r), key, "YAML aliases are not supported");
    if (e->type == YAML_SCALAR_EVENT) { anchor = e->data.scalar.anchor; tag = e->data.scalar.tag; }
    if (e->type == YAML_SEQUENCE_START_EVENT) {
        anchor = e->data.sequence_start.anchor;
        tag = e->data.sequence_start.tag;
    }
    if (e->type == YAML_MAPPING_START_EVENT) {
        anchor = e->data.mapping_start.anchor;
        tag = e->data.mapping_start.tag;
    }
    if (anchor) return fail_at(r->o.name, ev_line(r), key, "YAML anchors are not supported");
    if (tag) return fail_at(r->o.name, ev_line(r), key, "YAML tags are not supported");
    return 0;
}

static int ev_is_plain_null(const yaml_event_t *e) {
    return e->type == YAML_SCALAR_EVENT && e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           is_null_text((const char *)e->data.scalar.value);
}

/* The value of key k starts at the current event; consume it (the whole list for
 * a sequence) and store it. */
static int apply_value(reader *r, config *c, int k) {
    const key_def *d = &g_keys[k];
    char key[96], expected[160];
    dotted_name(key, sizeof key, k);
    type_text(expected, sizeof expected, k);
    if (reject_props(r, key)) return -1;
    if (r->ev.type == YAML_SCALAR_EVENT) {
        const yaml_event_t *e = &r->ev;
        return apply_scalar(c, k, (const char *)e->data.scalar.value, e->data.scalar.length,
                            e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE, ev_line(r), &r->o);
    }
    if (r->ev.type != YAML_SEQUENCE_START_EVENT || d->type != K_INT_LIST)
        return fail_at(r->o.name, ev_line(r), key, "expected %s, got %s", expected, ev_kind(&r->ev));
    int start_line = ev_line(r);
    int vals[CONFIG_MAX_LEVELS > CONFIG_MAX_ATTN ? CONFIG_MAX_LEVELS : CONFIG_MAX_ATTN];
    int n = 0;
    for (;;) {
        if (reader_next(r)) return -1;
        if (r->ev.type == YAML_SEQUENCE_END_EVENT) break;
        if (reject_props(r, key)) return -1;
        int line = ev_line(r);
        if (r->ev.type != YAML_SCALAR_EVENT)
            return fail_at(r->o.name, line, key, "expected %s, got %s inside the list", expected,
                           ev_kind(&r->ev));
        const yaml_event_t *e = &r->ev;
        const char *val = (const char *)e->data.scalar.value;
        char shown[80], why[200];
        quote_text(shown, sizeof shown, val, e->data.scalar.length);
        long long v = 0;
        int parsed = -1;
        if (e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && strlen(val) == e->data.scalar.length)
            parsed = parse_integer(val, &v);
        if (parsed == -1)
            return fail_at(r->o.name, line, key, "entry %d: expected an integer, got '%s'", n + 1,
                           shown);
        if (integer_problem(k, val, parsed, v, why, sizeof why))
            return fail_at(r->o.name, line, key, "entry %d: %s", n + 1, why);
        if (n >= d->max_count)
            return fail_at(r->o.name, line, key, "too many entries (at most %d)", d->max_count);
        vals[n++] = (int)v;
    }
    if (n < d->min_count)
        return fail_at(r->o.name, start_line, key, "needs at least %d entr%s", d->min_count,
                       d->min_count == 1 ? "y" : "ies");
    memcpy(FIELD(c, k, int), vals, (size_t)n * sizeof(int));
    for (int i = n; i < d->max_count; i++) FIELD(c, k, int)[i] = 0;
    *LIST_COUNT(c, k) = n;
    return 0;
}

static void list_keys(char *dst, size_t cap, int section) {
    size_t n = 0;
    dst[0] = '\0';
    for (int k = 0; k < NUM_KEYS && n < cap; k++)
        if (g_keys[k].section == section)
            n += (size_t)snprintf(dst + n, cap - n, "%s%s", n ? ", " : "", g_keys[k].name);
}

static void list_sections(char *dst, size_t cap) {
    size_t n = 0;
    dst[0] = '\0';
    for (int s = 0; s < NUM_SECTIONS && n < cap; s++)
        n += (size_t)snprintf(dst + n, cap - n, "%s%s", s ? ", " : "", g_sections[s]);
}

static int find_in_section(int section, const char *name) {
    for (int k = 0; k < NUM_KEYS; k++)
        if (g_keys[k].section == section && !strcmp(g_keys[k].name, name)) return k;
    return -1;
}

static int find_section(const char *name) {
    for (int s = 0; s < NUM_SECTIONS; s++)
        if (!strcmp(g_sections[s], name)) return s;
    return -1;
}

/* The current event is the MAPPING_START of section s. */
static int read_section(reader *r, config *c, int s) {
    for (;;) {
        if (reader_next(r)) return -1;
        if (r->ev.type == YAML_MAPPING_END_EVENT) return 0;
        if (reject_props(r, g_sections[s])) return -1;
        int line = ev_line(r);
        if (r->ev.type != YAML_SCALAR_EVENT)
            return fail_at(r->o.name, line, g_sections[s], "expected a key name, got %s",
                           ev_kind(&r->ev));
        const char *name = (const char *)r->ev.data.scalar.value;
        char shown[80], dotted[160];
        quote_text(shown, sizeof shown, name, r->ev.data.scalar.length);
        snprintf(dotted, sizeof dotted, "%s.%s", g_sections[s], shown);
        int k = strlen(name) == r->ev.data.scalar.length ? find_in_section(s, name) : -1;
        if (k < 0) {
            char keys[400];
            list_keys(keys, sizeof keys, s);
            return fail_at(r->o.name, line, dotted, "unknown key (%s keys: %s)", g_sections[s], keys);
        }
        if (c->key_line[k] > 0)
            return fail_at(r->o.name, line, dotted, "duplicate key (first given at line %d)",
                           c->key_line[k]);
        c->key_line[k] = line;
        snprintf(r->where, sizeof r->where, "%s", dotted);
        if (reader_next(r)) return -1;
        if (apply_value(r, c, k)) return -1;
        snprintf(r->where, sizeof r->where, "%s", g_sections[s]);
    }
}

static int read_document(reader *r, config *c) {
    char sections[200];
    list_sections(sections, sizeof sections);
    if (reader_next(r)) return -1; /* stream start */
    if (reader_next(r)) return -1;
    if (r->ev.type == YAML_STREAM_END_EVENT)
        return fail_at(r->o.name, 1, NULL, "empty config: expected the sections %s", sections);
    if (reader_next(r)) return -1; /* past document start */
    if (ev_is_plain_null(&r->ev))
        return fail_at(r->o.name, ev_line(r), NULL, "empty config: expected the sections %s",
                       sections);
    if (reject_props(r, NULL)) return -1;
    if (r->ev.type != YAML_MAPPING_START_EVENT)
        return fail_at(r->o.name, ev_line(r), NULL,
                       "the top level must be a mapping of sections (%s), got %s", sections,
                       ev_kind(&r->ev));
    for (;;) {
        if (reader_next(r)) return -1;
        if (r->ev.type == YAML_MAPPING_END_EVENT) break;
        if (reject_props(r, NULL)) return -1;
        int line = ev_line(r);
        if (r->ev.type != YAML_SCALAR_EVENT)
            return fail_at(r->o.name, line, NULL, "expected a section name, got %s",
                           ev_kind(&r->ev));
        const char *name = (const char *)r->ev.data.scalar.value;
        char shown[80];
        quote_text(shown, sizeof shown, name, r->ev.data.scalar.length);
        int s = strlen(name) == r->ev.data.scalar.length ? find_section(name) : -1;
        if (s < 0)
            return fail_at(r->o.name, line, shown, "unknown section (expected one of %s)", sections);
        if (c->key_line[SECTION_SLOT(s)] > 0)
            return fail_at(r->o.name, line, shown, "duplicate section (first given at line %d)",
                           c->key_line[SECTION_SLOT(s)]);
        c->key_line[SECTION_SLOT(s)] = line;
        snprintf(r->where, sizeof r->where, "%s", shown);
        if (reader_next(r)) return -1;
        if (reject_props(r, shown)) return -1;
        if (r->ev.type != YAML_MAPPING_START_EVENT) {
            char keys[400];
            list_keys(keys, sizeof keys, s);
            return fail_at(r->o.name, ev_line(r), shown,
                           "expected a mapping of keys (%s), got %s", keys,
                           ev_is_plain_null(&r->ev) ? "nothing" : ev_kind(&r->ev));
        }
        if (read_section(r, c, s)) return -1;
        r->where[0] = '\0';
    }
    if (reader_next(r)) return -1; /* document end */
    if (reader_next(r)) return -1;
    if (r->ev.type != YAML_STREAM_END_EVENT)
        return fail_at(r->o.name, ev_line(r), NULL, "only one YAML document is allowed");
    return 0;
}

static void reader_init(reader *r, const char *text, size_t len, const char *name, int cmdline) {
    memset(r, 0, sizeof *r);
    yaml_parser_initialize(&r->parser);
    static const unsigned char empty[1] = {0};
    yaml_parser_set_input_string(&r->parser, text ? (const unsigned char *)text : empty, len);
    r->text = text;
    r->len = len;
    r->o.name = name;
    r->o.cmdline = cmdline;
}

static void reader_free(reader *r) {
    if (r->has_ev) yaml_event_delete(&r->ev);
    yaml_parser_delete(&r->parser);
}

/* Keys required in the file; steps = 0 is valid, so presence cannot be read
 * from the values and is checked here, with the section's line. */
static int check_required(const config *c, const char *name) {
    for (int k = 0; k < NUM_KEYS; k++) {
        if (!g_keys[k].required || c->key_line[k] > 0) continue;
        char key[96];
        dotted_name(key, sizeof key, k);
        int sline = c->key_line[SECTION_SLOT(g_keys[k].section)];
        if (sline > 0) return fail_at(name, sline, key, "required key missing");
        return fail_at(name, 1, key, "required key missing (no %s section)",
                       g_sections[g_keys[k].section]);
    }
    return 0;
}

int config_load_string(config *out, const char *text, size_t len, const char *name) {
    if (!name) name = "<string>";
    if (!text && len) return fail_at(name, 0, NULL, "no text given");
    config *c = xmalloc(sizeof *c);
    config_defaults(c);
    snprintf(c->source, sizeof c->source, "%s", name);
    if (strlen(name) >= sizeof c->source) name = c->source; /* messages match source */
    reader r;
    reader_init(&r, text, len, name, 0);
    int rc = read_document(&r, c);
    reader_free(&r);
    if (!rc) rc = check_required(c, name);
    if (!rc) rc = config_validate(c);
    if (!rc) *out = *c;
    free(c);
    return rc;
}

int config_load_file(config *c, const char *path) {
    if (!path) return err_set("config: no file name given");
    FILE *f = fopen(path, "rb");
    if (!f) return fail_at(path, 0, NULL, "cannot open config: %s", strerror(errno));
    char *buf = xmalloc(MAX_FILE_BYTES + 1);
    size_t n = fread(buf, 1, MAX_FILE_BYTES + 1, f);
    int read_err = ferror(f) ? errno : 0;
    fclose(f);
    int rc;
    if (read_err) rc = fail_at(path, 0, NULL, "cannot read config: %s", strerror(read_err));
    else if (n > MAX_FILE_BYTES)
        rc = fail_at(path, 0, NULL, "config is larger than %u bytes", MAX_FILE_BYTES);
    else rc = config_load_string(c, buf, n, path);
    free(buf);
    return rc;
}

/* -------------------------------------------------------------- overrides */

int config_override(config *c, const char *assignment) {
    if (!assignment) return err_set(CMDLINE_NAME ": no override given");
    const char *eq = strchr(assignment, '=');
    size_t klen = eq ? (size_t)(eq - assignment) : strlen(assignment);
    while (klen && (assignment[klen - 1] == ' ' || assignment[klen - 1] == '\t')) klen--;
    const char *kstart = assignment;
    while (klen && (*kstart == ' ' || *kstart == '\t')) { kstart++; klen--; }
    char shown[80];
    quote_text(shown, sizeof shown, kstart, klen);
    if (!eq)
        return fail_at(CMDLINE_NAME, 0, shown, "missing '=' (expected section.key=value)");
    char keyname[96];
    int k = -1;
    if (klen < sizeof keyname) {
        memcpy(keyname, kstart, klen);
        keyname[klen] = '\0';
        k = find_key(keyname);
    }
    if (k < 0) {
        const char *dot = memchr(kstart, '.', klen);
        char sec[32] = "";
        if (dot && (size_t)(dot - kstart) < sizeof sec) {
            memcpy(sec, kstart, (size_t)(dot - kstart));
            sec[dot - kstart] = '\0';
        }
        int s = find_section(sec);
        char list[400];
        if (s < 0) {
            list_sections(list, sizeof list);
            return fail_at(CMDLINE_NAME, 0, shown,
                           "unknown key (expected section.key=value; sections: %s)", list);
        }
        list_keys(list, sizeof list, s);
        return fail_at(CMDLINE_NAME, 0, shown, "unknown key (%s keys: %s)", g_sections[s], list);
    }
    const char *val = eq + 1;
    config *tmp = xmalloc(sizeof *tmp);
    *tmp = *c;
    reader r;
    reader_init(&r, val, strlen(val), CMDLINE_NAME, 1);
    dotted_name(r.where, sizeof r.where, k);
    int rc = reader_next(&r); /* stream start */
    if (!rc) rc = reader_next(&r);
    if (!rc && r.ev.type == YAML_STREAM_END_EVENT) {
        /* "key=" (or only a comment): an empty plain scalar, as in a file. */
        rc = apply_scalar(tmp, k, "", 0, 1, 0, &r.o);
    } else if (!rc) {
        rc = reader_next(&r); /* past document start */
        if (!rc) rc = apply_value(&r, tmp, k);
        if (!rc) rc = reader_next(&r); /* document end */
        if (!rc) rc = reader_next(&r);
        if (!rc && r.ev.type != YAML_STREAM_END_EVENT)
            rc = fail_at(CMDLINE_NAME, 0, r.where, "value holds more than one YAML document");
    }
    reader_free(&r);
    if (!rc) {
        tmp->key_line[k] = -1;
        *c = *tmp;
    }
    free(tmp);
    return rc;
}

/* ------------------------------------------------------------- validation */

/* Error about key k of a loaded or overridden config, at the line it was set. */
__attribute__((format(printf, 3, 4)))
static int fail_key(const config *c, int k, const char *fmt, ...) {
    char msg[700], key[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dotted_name(key, sizeof key, k);
    char source[CONFIG_PATH_MAX];
    snprintf(source, sizeof source, "%.*s", (int)(sizeof source - 1), c->source);
    int line = c->key_line[k];
    if (line < 0) return fail_at(CMDLINE_NAME, 0, key, "%s", msg);
    if (line == 0) line = c->key_line[SECTION_SLOT(g_keys[k].section)];
    if (line <= 0) line = 1;
    return fail_at(source, line, key, "%s", msg);
}

/* Range of one key's stored value (the same rules the parser applies). */
static int validate_key(const config *c, int k) {
    const key_def *d = &g_keys[k];
    char why[200];
    switch (d->type) {
    case K_INT:
    case K_LONG: {
        long v = d->type == K_INT ? *CFIELD(c, k, int) : *CFIELD(c, k, long);
        if (!check_number(k, (double)v, why, sizeof why)) return 0;
        if (d->required && v == 0 && c->key_line[k] == 0)
            return fail_key(c, k, "required key missing");
        return fail_key(c, k, "%s", why);
    }
    case K_U64: return 0;
    case K_DOUBLE: {
        double v = *CFIELD(c, k, double);
        if (!check_number(k, v, why, sizeof why)) return 0;
        if (d->required && v == 0 && c->key_line[k] == 0)
            return fail_key(c, k, "required key missing");
        return fail_key(c, k, "%s", why);
    }
    case K_BOOL: {
        int v = *CFIELD(c, k, int);
        if (v != 0 && v != 1) return fail_key(c, k, "boolean holds %d (must be 0 or 1)", v);
        return 0;
    }
    case K_ENUM: {
        int v = *CFIELD(c, k, int), n = 0;
        while (d->choices[n]) n++;
        if (v < 0 || v >= n) return fail_key(c, k, "enum value %d out of range 0..%d", v, n - 1);
        return 0;
    }
    case K_STRING: {
        const char *s = CFIELD(c, k, char);
        if (!memchr(s, '\0', CONFIG_PATH_MAX))
            return fail_key(c, k, "path is not NUL-terminated within %d bytes", CONFIG_PATH_MAX);
        if (!s[0] && !d->allow_empty) return fail_key(c, k, "required key missing (empty path)");
        return 0;
    }
    case K_INT_LIST: {
        int n = *CLIST_COUNT(c, k);
        if (n < d->min_count || n > d->max_count) {
            if (n == 0 && d->required) return fail_key(c, k, "required key missing");
            return fail_key(c, k, "has %d entries (must have %d..%d)", n, d->min_count,
                            d->max_count);
        }
        for (int i = 0; i < n; i++)
            if (check_number(k, CFIELD(c, k, int)[i], why, sizeof why))
                return fail_key(c, k, "entry %d: %s", i + 1, why);
        return 0;
    }
    }
    return 0;
}

/* The model's own rules (common/model/unet.h), at the key it blames. Where it
 * blames image_size for levels that do not divide it and ch_mult was changed on
 * the command line (image_size was not), the override is blamed instead. */
static int validate_model(const config *c) {
    unet_config_error e;
    if (unet_check_config(&c->model, &e) == 0) return 0;
    char name[64];
    snprintf(name, sizeof name, "model.%s", e.field ? e.field : "ch_mult");
    int k = find_key(name), k_mult = find_key("model.ch_mult"), k_img = find_key("model.image_size");
    if (k < 0) k = k_mult;
    if (k == k_img && strstr(e.why, "divisible") && c->key_line[k_mult] < 0 &&
        c->key_line[k_img] >= 0)
        k = k_mult;
    return fail_key(c, k, "%s", e.why);
}

/* Data formats that fix the images' channels (and size): IDX files are grey,
 * CIFAR-10 is 32x32 RGB. The model must match before a run starts, not when the
 * data loader refuses the first file (or a checkpoint's config cannot train). */
static int validate_data_fit(const config *c) {
    static const struct {
        data_format format;
        int channels, size; /* 0: any */
        const char *why;
    } fixed[] = {
        {DATA_IDX, 1, 0, "IDX images are grey"},
        {DATA_CIFAR10, 3, 32, "CIFAR-10 images are 32x32 RGB"},
    };
    int k_fmt = find_key("data.format"), k_ch = find_key("model.in_channels");
    int k_img = find_key("model.image_size");
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (c->data.format != fixed[i].format) continue;
        const char *fmt = g_formats[fixed[i].format];
        /* blame the key given on the command line, if only one of the two was */
        int blame_fmt = c->key_line[k_fmt] < 0;
        if (c->model.in_channels != fixed[i].channels)
            return fail_key(c, blame_fmt && c->key_line[k_ch] >= 0 ? k_fmt : k_ch,
                            "%d does not fit data.format %s (%s: in_channels must be %d)", c->model.in_channels, fmt, fixed[i].why,
                            fixed[i].channels);
        if (fixed[i].size && c->model.image_size != fixed[i].size)
            return fail_key(c, blame_fmt && c->key_line[k_img] >= 0 ? k_fmt : k_img,
                            "%d does not fit data.format %s (%s: image_size must be %d)", c->model.image_size, fmt, fixed[i].why, fixed[i].size);
    }
    return 0;
}

int config_validate(const config *c) {
    for (int k = 0; k < NUM_KEYS; k++)
        if (validate_key(c, k)) return -1;
    if (validate_model(c)) return -1;
    if (validate_data_fit(c)) return -1;
    const diffusion_config *df = &c->diffusion;
    if (df->schedule == BETA_SCHEDULE_LINEAR && df->beta_start > df->beta_end)
        return fail_key(c, find_key("diffusion.beta_end"), "%g is below beta_start %g",
                        df->beta_end, df->beta_start);
    const training_config *t = &c->training;
    if (t->micro_batch > t->batch_size)
        return fail_key(c, find_key("training.micro_batch"), "%d is larger than batch_size %d",
                        t->micro_batch, t->batch_size);
    if (t->eval_every > 0 && !c->data.eval_path[0])
        return fail_key(c, find_key("training.eval_every"),
                        "%d needs a held-out set in data.eval_path", t->eval_every);
    if (t->label_dropout > 0 && c->model.num_classes == 0)
        return fail_key(c, find_key("training.label_dropout"),
                        "%g needs a class-conditional model (model.num_classes > 0)",
                        t->label_dropout);
    if (c->data.labels_path[0] && c->data.format != DATA_IDX)
        return fail_key(c, find_key("data.labels_path"),
                        "is for format idx; %s carries its own labels (docs/data.md)",
                        g_formats[c->data.format]);
    return 0;
}

/* ----------------------------------------------------------------- output */

typedef struct {
    char *p;
    size_t n, cap;
} strbuf;

__attribute__((format(printf, 2, 3)))
static void sb_printf(strbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (w < 0) return;
        if ((size_t)w < b->cap - b->n) {
            b->n += (size_t)w;
            return;
        }
        b->cap = 2 * b->cap + (size_t)w + 1;
        b->p = xrealloc(b->p, b->cap);
    }
}

/* Shortest text that reads back as the same double; ".0" keeps it looking real. */
static void format_double(char *dst, size_t cap, double v) {
    /* Starting at the count of integer digits keeps 60 from printing as 6e+01. */
    int prec = 1;
    if (fabs(v) >= 1 && fabs(v) < 1e15) prec = (int)floor(log10(fabs(v))) + 1;
    for (; prec <= 17; prec++) {
        snprintf(dst, cap, "%.*g", prec, v);
        if (strtod(dst, NULL) == v) break;
    }
    /* A '.' in the mantissa ("1.0e-08", "60.0") makes YAML 1.1 readers such as
     * PyYAML see a float too. */
    if (strpbrk(dst, "ni") || strchr(dst, '.')) return;
    char *e = strpbrk(dst, "eE");
    size_t n = strlen(dst);
    if (n + 3 > cap) return;
    if (e) {
        memmove(e + 2, e, strlen(e) + 1);
        e[0] = '.';
        e[1] = '0';
    } else {
        memcpy(dst + n, ".0", 3);
    }
}

static void sb_quoted(strbuf *b, const char *s) {
    sb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') sb_printf(b, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f) sb_printf(b, "\\x%02x", ch);
        else sb_printf(b, "%c", ch);
    }
    sb_printf(b, "\"");
}

static void sb_value(strbuf *b, const config *c, int k) {
    const key_def *d = &g_keys[k];
    char num[40];
    switch (d->type) {
    case K_INT: sb_printf(b, "%d", *CFIELD(c, k, int)); break;
    case K_LONG: sb_printf(b, "%ld", *CFIELD(c, k, long)); break;
    case K_U64: sb_printf(b, "%llu", (unsigned long long)*CFIELD(c, k, uint64_t)); break;
    case K_DOUBLE:
        format_double(num, sizeof num, *CFIELD(c, k, double));
        sb_printf(b, "%s", num);
        break;
    case K_BOOL: sb_printf(b, "%s", *CFIELD(c, k, int) ? "true" : "false"); break;
    case K_ENUM: {
        int v = *CFIELD(c, k, int), n = 0;
        while (d->choices[n]) n++;
        sb_printf(b, "%s", v >= 0 && v < n ? d->choices[v] : "invalid");
        break;
    }
    case K_STRING: {
        char tmp[CONFIG_PATH_MAX];
        snprintf(tmp, sizeof tmp, "%.*s", CONFIG_PATH_MAX - 1, CFIELD(c, k, char));
        sb_quoted(b, tmp);
        break;
    }
    case K_INT_LIST: {
        int n = *CLIST_COUNT(c, k);
        if (n < 0) n = 0;
        if (n > d->max_count) n = d->max_count;
        sb_printf(b, "[");
        for (int i = 0; i < n; i++) sb_printf(b, "%s%d", i ? ", " : "", CFIELD(c, k, int)[i]);
        sb_printf(b, "]");
        break;
    }
    }
}

char *config_to_yaml(const config *c) {
    strbuf b = {xmalloc(4096), 0, 4096};
    b.p[0] = '\0';
    sb_printf(&b, "# ddpm-cluster configuration (canonical form; docs/config.md explains each key)\n");
    for (int s = 0; s < NUM_SECTIONS; s++) {
        sb_printf(&b, "%s:\n", g_sections[s]);
        for (int k = 0; k < NUM_KEYS; k++) {
            if (g_keys[k].section != s) continue;
            sb_printf(&b, "  %s: ", g_keys[k].name);
            sb_value(&b, c, k);
            sb_printf(&b, "\n");
        }
    }
    return b.p;
}

/* One section as a JSON object, keys in table order: numbers, booleans, integer
 * lists, enums and strings as JSON strings (the export metadata, docs/export.md). */
static int section_index(const char *section) {
    for (int s = 0; s < NUM_SECTIONS; s++)
        if (!strcmp(g_sections[s], section)) return s;
    return -1;
}

char *config_section_json(const config *c, const char *section) {
    int s = section_index(section);
    if (s < 0) return NULL;
    strbuf b = {xmalloc(1024), 0, 1024};
    b.p[0] = '\0';
    int first = 1;
    sb_printf(&b, "{");
    for (int k = 0; k < NUM_KEYS; k++) {
        const key_def *d = &g_keys[k];
        if (d->section != s) continue;
        sb_printf(&b, "%s\"%s\": ", first ? "" : ", ", d->name);
        first = 0;
        if (d->type == K_ENUM || d->type == K_STRING) {
            strbuf v = {xmalloc(256), 0, 256};
            v.p[0] = '\0';
            sb_value(&v, c, k);
            const char *t = v.p + (v.p[0] == '"'), *end = v.p + v.n - (v.p[0] == '"');
            /* sb_value's string escapes are \" \\ and \xHH; JSON spells the last \u00HH */
            sb_printf(&b, "\"");
            for (; t < end; t++) {
                if (t[0] == '\\' && t[1] == 'x') { sb_printf(&b, "\\u00%.2s", t + 2); t += 3; }
                else if (t[0] == '\\') { sb_printf(&b, "\\%c", t[1]); t++; }
                else sb_printf(&b, "%c", *t);
            }
            sb_printf(&b, "\"");
            free(v.p);
        } else {
            sb_value(&b, c, k);
        }
    }
    sb_printf(&b, "}");
    return b.p;
}

/* ------------------------------------------------------------------ diffs */

static int key_equal(const config *a, const config *b, int k) {
    const key_def *d = &g_keys[k];
    switch (d->type) {
    case K_INT: case K_BOOL: case K_ENUM: return *CFIELD(a, k, int) == *CFIELD(b, k, int);
    case K_LONG: return *CFIELD(a, k, long) == *CFIELD(b, k, long);
    case K_U64: return *CFIELD(a, k, uint64_t) == *CFIELD(b, k, uint64_t);
    case K_DOUBLE: {
        double x = *CFIELD(a, k, double), y = *CFIELD(b, k, double);
        return x == y || (x != x && y != y);
    }
    case K_STRING: return strncmp(CFIELD(a, k, char), CFIELD(b, k, char), CONFIG_PATH_MAX) == 0;
    case K_INT_LIST: {
        int n = *CLIST_COUNT(a, k);
        if (n != *CLIST_COUNT(b, k)) return 0;
        if (n < 0 || n > d->max_count) return 1; /* both equally invalid */
        return memcmp(CFIELD(a, k, int), CFIELD(b, k, int), (size_t)n * sizeof(int)) == 0;
    }
    }
    return 1;
}

static int diff_sections(const config *a, const config *b, unsigned mask, char *out, size_t out_len) {
    int count = 0;
    size_t n = 0;
    if (out && out_len) out[0] = '\0';
    for (int k = 0; k < NUM_KEYS; k++) {
        if (!(mask & (1u << g_keys[k].section)) || key_equal(a, b, k)) continue;
        if (out && n < out_len) {
            char key[96];
            dotted_name(key, sizeof key, k);
            int w = snprintf(out + n, out_len - n, "%s%s", count ? "," : "", key);
            if (w > 0) n += (size_t)w;
        }
        count++;
    }
    return count;
}

int config_diff_model(const config *a, const config *b, char *out, size_t out_len) {
    return diff_sections(a, b, (1u << SEC_MODEL) | (1u << SEC_DIFFUSION), out, out_len);
}

int config_diff_section(const config *a, const config *b, const char *section, char *out,
                        size_t out_len) {
    int s = section_index(section);
    return s < 0 ? -1 : diff_sections(a, b, 1u << s, out, out_len);
}

int config_diff_all(const config *a, const config *b, char *out, size_t out_len) {
    return diff_sections(a, b, ~0u, out, out_len);
}
