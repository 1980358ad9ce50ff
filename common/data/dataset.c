/* Dataset front end: format dispatch, access and float conversion. */
#include "common/data/dataset_internal.h"

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
    if (ds->shards) dataset_shards_free(ds);
    free(ds->path);
    free(ds);
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
