/* Shared between the dataset loaders (not a public header). */
#ifndef DDPM_DATASET_INTERNAL_H
#define DDPM_DATASET_INTERNAL_H

#include "common/data/dataset.h"

struct dataset {
    data_format format;
    char *path;
    int size, channels;
    size_t image_bytes;  /* channels * size * size */
    size_t count;
    uint8_t *images;     /* count * image_bytes, CHW per image (NULL for shards) */
    struct shard_set *shards; /* format shards: open files and their indexes, no images */
    dataset_progress_fn progress; /* image folders: see dataset_open_progress */
    void *progress_ctx;
    /* class labels: count entries (-1: none), or NULL when the dataset has none */
    int32_t *labels;
    char *labels_path;   /* IDX: the label file */
    size_t part_end[8];  /* CIFAR-10: records after each batch file, n_parts of them */
    int n_parts;
    char **class_names;  /* image folders: the class names and one file of each */
    char **class_files;
    size_t n_classes;
};

/* Each loader fills ds->count and ds->images (ds->size/channels/path already set).
 * Return 0 or -1 with err_msg(). */
int dataset_load_idx(struct dataset *ds);
int dataset_load_cifar10(struct dataset *ds);
int dataset_load_folder(struct dataset *ds);
/* Shards (dataset_shards.c): opens the manifest and every shard, keeps only the index. */
int dataset_load_shards(struct dataset *ds);
int dataset_shards_get(const struct dataset *ds, size_t index, uint8_t *out);
/* "SHARD_FILE record R" of dataset record `index` into buf. */
void dataset_shards_where(const struct dataset *ds, size_t index, char *buf, size_t cap);
void dataset_shards_free(struct dataset *ds);

#endif
