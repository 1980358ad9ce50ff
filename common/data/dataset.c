/* Dataset front end: format dispatch, access and float conversion. */
#include "common/data/dataset_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"

int dataset_open(dataset **out, data_format format, const char *path, int image_size, int channels) {
    return dataset_open_progress(out, format, path, image_size, channels, NULL, NULL);
}

int dataset_open_progress(dataset **out, data_format format, const char *path, int image_size, int channels,
                          dataset_progress_fn progress, void *ctx) {
    *out = NULL;
    if (!path || !path[0]) return err_set("dataset: empty path");
    if (image_size < 1 || image_size > 65536) return err_set("dataset %s: invalid image size %d", path, image_size);
    if (channels < 1 || channels > 4) return err_set("dataset %s: invalid channel count %d", path, channels);
    dataset *ds = xcalloc(1, sizeof *ds);
    ds->format = format;
    ds->path = xstrdup(path);
    ds->size = image_size;
    ds->channels = channels;
    ds->image_bytes = (size_t)channels * image_size * image_size; /* <= 4 * 2^32: no overflow */
    ds->progress = progress;
    ds->progress_ctx = ctx;
    int rc;
    switch (format) {
    case DATA_IDX: rc = dataset_load_idx(ds); break;
    case DATA_CIFAR10: rc = dataset_load_cifar10(ds); break;
    case DATA_IMAGE_FOLDER: rc = dataset_load_folder(ds); break;
    case DATA_SHARDS: rc = dataset_load_shards(ds); break;
    default: rc = err_set("dataset %s: unknown format %d", path, (int)format); break;
    }
    if (rc != 0) {
        dataset_close(ds);
        return -1;
    }
    *out = ds;
    return 0;
}

size_t dataset_size(const dataset *ds) { return ds->count; }

size_t dataset_image_bytes(const dataset *ds) { return ds->image_bytes; }

int dataset_get(const dataset *ds, size_t index, uint8_t *out) {
    if (index >= ds->count)
        return err_set("dataset %s: index %zu out of range (size %zu)", ds->path, index, ds->count);
    if (ds->shards) return dataset_shards_get(ds, index, out);
    memcpy(out, ds->images + index * ds->image_bytes, ds->image_bytes);
    return 0;
}

void dataset_close(dataset *ds) {
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    free(ds->labels_path);
    for (size_t c = 0; c < ds->n_classes; c++) {
        free(ds->class_names[c]);
        free(ds->class_files[c]);
    }
    free(ds->class_names);
    free(ds->class_files);
    if (ds->shards) dataset_shards_free(ds);
    free(ds->path);
    free(ds);
}

int dataset_load_labels(dataset *ds, const char *path) {
    if (ds->format != DATA_IDX)
        return err_set("data.labels_path %s: only IDX datasets take a label file; %s carries its own "
                       "labels (docs/data.md)", path, ds->path);
    uint8_t *lab = NULL;
    size_t n = 0;
    if (idx_labels_read(path, &lab, &n) != 0) return -1;
    if (n != ds->count) {
        free(lab);
        return err_set("%s: holds %zu labels but the images %s hold %zu records", path, n, ds->path,
                       ds->count);
    }
    free(ds->labels);
    ds->labels = xmalloc(n * sizeof *ds->labels);
    for (size_t i = 0; i < n; i++) ds->labels[i] = lab[i];
    free(lab);
    free(ds->labels_path);
    ds->labels_path = xstrdup(path);
    return 0;
}

int dataset_has_labels(const dataset *ds) {
    if (!ds->labels) return 0;
    for (size_t i = 0; i < ds->count; i++)
        if (ds->labels[i] < 0) return 0;
    return 1;
}

int dataset_label(const dataset *ds, size_t index) {
    return ds->labels && index < ds->count ? ds->labels[index] : -1;
}

/* Where record `index`'s label comes from: its file and record there. */
static void label_where(const dataset *ds, size_t index, char *buf, size_t cap) {
    if (ds->shards) {
        dataset_shards_where(ds, index, buf, cap);
    } else if (ds->labels_path) {
        snprintf(buf, cap, "%s: record %zu", ds->labels_path, index);
    } else if (ds->class_names) {
        int c = ds->labels[index];
        snprintf(buf, cap, "%s: image %zu, class '%s' (class %d of the %zu file-name prefixes, "
                 "first file %s)", ds->path, index, ds->class_names[c], c, ds->n_classes,
                 ds->class_files[c]);
    } else {
        size_t start = 0;
        int b = 0;
        while (b + 1 < ds->n_parts && index >= ds->part_end[b]) start = ds->part_end[b++];
        if (ds->n_parts > 1) /* the folder of batch files */
            snprintf(buf, cap, "%s/data_batch_%d.bin: record %zu", ds->path, b + 1, index - start);
        else
            snprintf(buf, cap, "%s: record %zu", ds->path, index);
    }
}

int dataset_check_labels(const dataset *ds, int num_classes) {
    char where[1024];
    if (!ds->labels)
        return err_set("%s: this dataset has no class labels, but model.num_classes is %d; give "
                       "IDX images their label file in data.labels_path (docs/data.md)%s", ds->path,
                       num_classes, ds->shards ? "; prepare shards with labels (ddpm-prep --labels "
                       "for IDX input)" : "");
    for (size_t i = 0; i < ds->count; i++) {
        int l = ds->labels[i];
        if (l >= 0 && l < num_classes) continue;
        label_where(ds, i, where, sizeof where);
        if (l < 0) return err_set("%s: has no label (model.num_classes is %d)", where, num_classes);
        return err_set("%s: label %d is out of range for model.num_classes %d (0..%d)", where, l,
                       num_classes, num_classes - 1);
    }
    return 0;
}

const char *const *dataset_class_names(const dataset *ds, size_t *n_classes) {
    *n_classes = ds->n_classes;
    return (const char *const *)ds->class_names;
}

void dataset_to_float(float *x, const uint8_t *u8, int n, int channels, int size, const uint8_t *flip) {
    size_t plane = (size_t)size * size;
    for (int i = 0; i < n; i++) {
        int f = flip && flip[i];
        for (int c = 0; c < channels; c++) {
            size_t base = ((size_t)i * channels + c) * plane;
            for (int y = 0; y < size; y++) {
                const uint8_t *src = u8 + base + (size_t)y * size;
                float *dst = x + base + (size_t)y * size;
                for (int xx = 0; xx < size; xx++) {
                    uint8_t v = src[f ? size - 1 - xx : xx];
                    dst[xx] = (float)v / 127.5f - 1.0f;
                }
            }
        }
    }
}
