/* U-Net weights to and from safetensors files (weights_io.h). */
#include "common/ckpt/weights_io.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ckpt/ckpt_model.h"
#include "common/core/util.h"
#include "common/io/safetensors.h"

void weights_header_tensors(ckpt_header *h, const unet *m, ckpt_tensor *tens) {
    const unet_tensor *t = unet_tensors(m);
    h->n_tensors = unet_num_tensors(m);
    for (int i = 0; i < h->n_tensors; i++) {
        memset(&tens[i], 0, sizeof tens[i]);
        tens[i].name = (char *)t[i].name;
        tens[i].ndim = t[i].ndim;
        for (int d = 0; d < t[i].ndim; d++) tens[i].shape[d] = t[i].shape[d];
        tens[i].offset = t[i].offset;
        tens[i].size = t[i].size;
    }
    h->tensors = tens;
}

int weights_export(const char *path, const unet *m, const float *w, const config *cfg,
                   uint64_t step, const char *which) {
    char step_s[32];
    snprintf(step_s, sizeof step_s, "%" PRIu64, step);
    char *yaml = config_to_yaml(cfg);
    char *model = config_section_json(cfg, "model");
    char *diff = config_section_json(cfg, "diffusion");
    /* sorted by key, so that the header is the same whatever the order here */
    st_meta meta[] = {{(char *)"config", yaml},      {(char *)"diffusion", diff},
                      {(char *)"format", (char *)WEIGHTS_FORMAT}, {(char *)"model", model},
                      {(char *)"step", step_s},      {(char *)"weights", (char *)which}};
    int n = unet_num_tensors(m);
    const unet_tensor *t = unet_tensors(m);
    st_out_tensor *out = xcalloc((size_t)n, sizeof *out);
    for (int i = 0; i < n; i++)
        out[i] = (st_out_tensor){t[i].name, t[i].ndim, t[i].shape, w + t[i].offset};
    int rc = st_write_f32(path, meta, (int)(sizeof meta / sizeof meta[0]), out, n);
    free(out);
    free(yaml);
    free(model);
    free(diff);
    return rc;
}

/* The model section of the config a weights file or checkpoint was made with
 * must equal cfg's: the refusal names the differing keys. */
static int same_model(const char *path, const config *saved, const config *cfg) {
    char diff[1024];
    if (config_diff_section(saved, cfg, "model", diff, sizeof diff) > 0)
        return err_set("%s: its model section differs from %s's: %s (the model section must "
                       "be the same; everything else may change)", path, cfg->source, diff);
    return 0;
}

/* Our own files carry their config: its model section must be cfg's. */
static int check_metadata(const st_file *sf, const config *cfg) {
    const char *fmt = st_meta_get(sf, "format");
    if (!fmt || strcmp(fmt, WEIGHTS_FORMAT) != 0) return 0; /* a foreign file: tensors only */
    const char *text = st_meta_get(sf, "config");
    config saved;
    if (!text) return err_set("%s: metadata format %s without its config", sf->path, fmt);
    if (config_load_string(&saved, text, strlen(text), sf->path) != 0)
        return err_prefix("%s: its metadata config: ", sf->path);
    return same_model(sf->path, &saved, cfg);
}

static void shape_text(char *b, size_t cap, int nd, const int *si, const uint64_t *su) {
    size_t k = (size_t)snprintf(b, cap, "[");
    for (int d = 0; d < nd && k < cap; d++)
        k += (size_t)snprintf(b + k, cap - k, "%s%" PRIu64, d ? ", " : "",
                              si ? (uint64_t)si[d] : su[d]);
    if (k < cap) snprintf(b + k, cap - k, "]");
}

/* Tensor table against the model's: each present with its shape, none other. */
static int match_tensors(const st_file *sf, const unet *m, const config *cfg) {
    const unet_tensor *t = unet_tensors(m);
    for (int i = 0; i < unet_num_tensors(m); i++) {
        int k = st_find(sf, t[i].name);
        if (k < 0)
            return err_set("%s: tensor '%s' is missing (the model of %s has it)", sf->path,
                           t[i].name, cfg->source);
        const st_tensor *s = &sf->tensors[k];
        int same = s->ndim == t[i].ndim;
        for (int d = 0; same && d < t[i].ndim; d++) same = s->shape[d] == (uint64_t)t[i].shape[d];
        if (!same) {
            char a[128], b[128];
            shape_text(a, sizeof a, s->ndim, NULL, s->shape);
            shape_text(b, sizeof b, t[i].ndim, t[i].shape, NULL);
            return err_set("%s: tensor '%s' has shape %s; the model of %s needs %s", sf->path,
                           t[i].name, a, cfg->source, b);
        }
    }
    for (int k = 0; k < sf->n_tensors; k++)
        if (unet_find_tensor(m, sf->tensors[k].name) < 0)
            return err_set("%s: tensor '%s' is not a parameter of the model of %s", sf->path,
                           sf->tensors[k].name, cfg->source);
    return 0;
}

int weights_import(const char *path, const unet *m, const config *cfg, float *w) {
    st_file sf;
    if (st_open(&sf, path) != 0) return -1;
    int rc = check_metadata(&sf, cfg) || match_tensors(&sf, m, cfg) ? -1 : 0;
    const unet_tensor *t = unet_tensors(m);
    for (int i = 0; i < unet_num_tensors(m) && rc == 0; i++)
        rc = st_read_f32(&sf, st_find(&sf, t[i].name), w + t[i].offset);
    st_close(&sf);
    return rc;
}

/* Whether path starts with the zstd frame magic (a checkpoint). */
static int is_checkpoint(const char *path, int *yes) {
    uint64_t size;
    FILE *f = fopen_regular(path, &size);
    if (!f) return -1;
    unsigned char b[4] = {0};
    *yes = fread(b, 1, 4, f) == 4 && b[0] == 0x28 && b[1] == 0xB5 && b[2] == 0x2F && b[3] == 0xFD;
    fclose(f);
    return 0;
}

int weights_init_from(const char *path, int which, const unet *m, const config *cfg, float *w) {
    int ckpt;
    if (is_checkpoint(path, &ckpt) != 0) return -1;
    if (!ckpt) return weights_import(path, m, cfg, w);
    ckpt_model cm;
    if (ckpt_model_load(&cm, path, which, 1, NULL, OPS_FP32) != 0) return -1;
    int rc = same_model(path, &cm.cfg, cfg);
    if (rc == 0 && unet_num_params(cm.model) != unet_num_params(m))
        rc = err_set("%s: %zu parameters; the model of %s has %zu", path,
                     unet_num_params(cm.model), cfg->source, unet_num_params(m));
    if (rc == 0) memcpy(w, cm.weights, unet_num_params(m) * sizeof *w);
    ckpt_model_free(&cm);
    return rc;
}

int weights_write_checkpoint(const char *path, const unet *m, const float *w, const config *cfg) {
    size_t P = unet_num_params(m);
    ckpt_header h;
    memset(&h, 0, sizeof h);
    ckpt_tensor *tens = xcalloc((size_t)unet_num_tensors(m), sizeof *tens);
    weights_header_tensors(&h, m, tens);
    h.config_yaml = config_to_yaml(cfg);
    h.step = 0;
    h.seed = cfg->training.seed;
    h.permutation_seed = cfg->training.seed; /* the data cursor at step 0 is (0, 0) */
    h.world_size = h.servers = h.workers = 1;
    h.n_params = P;
    float *zeros = xcalloc(P, sizeof *zeros);
    int rc = ckpt_write_file(path, &h, w, w, zeros, zeros);
    free(zeros);
    free(h.config_yaml);
    free(tens);
    return rc;
}
