/* Training datasets: IDX (MNIST / Fashion-MNIST), CIFAR-10 binary batches and
 * folders of PNG/JPEG images, all decoded once at open time into memory as uint8
 * CHW images of a fixed channels x size x size shape; and packed shards written by
 * ddpm-prep (docs/shards.md), of which only the index (24 bytes a record) is kept in
 * memory: each dataset_get reads and decompresses one record with pread.
 *
 * Image folders are preprocessed exactly as guided-diffusion's image_datasets.py
 * (convert("RGB"), optional PIL "L" grey conversion, center_crop_arr with PIL's BOX
 * and BICUBIC filters); see docs/data.md. */
#ifndef DDPM_DATASET_H
#define DDPM_DATASET_H

#include <stddef.h>
#include <stdint.h>

typedef enum { DATA_IDX = 0, DATA_CIFAR10 = 1, DATA_IMAGE_FOLDER = 2, DATA_SHARDS = 3 } data_format;


typedef struct dataset dataset; /* opaque, owns its memory (images, path) */

/* Opens the dataset described by format/path (borrowed) and checks it yields
 * channels x size x size images (IDX: 28x28x1 must match; CIFAR-10: 32x32x3;
 * image folder: resized to size, channels 1 or 3). On success *out is owned by
 * the caller (dataset_close). Returns 0, or -1 with err_msg() naming the file and
 * the record (image index / byte offset). */
int dataset_open(dataset **out, data_format format, const char *path, int image_size, int channels);
/* Decoding an image folder at open can take minutes: dataset_open_progress calls
 * `progress` (when not NULL) about ten times for a folder of more than 1000 images,
 * with the images decoded so far and the seconds since the start, so that the
 * program can log it (library code does not print). */
typedef void (*dataset_progress_fn)(void *ctx, const char *path, size_t done, size_t total, double seconds);
int dataset_open_progress(dataset **out, data_format format, const char *path, int image_size, int channels,
                          dataset_progress_fn progress, void *ctx);
size_t dataset_size(const dataset *ds);
/* Bytes per image: channels * size * size. */
size_t dataset_image_bytes(const dataset *ds);
/* Copies image `index` as uint8 CHW (channels*size*size bytes) into caller-owned `out`.
 * Returns 0, or -1 if index is out of range or (shards) the record cannot be read or
 * fails its checksum (err_msg names the shard file and record). Thread-safe for
 * concurrent readers (in-memory images are immutable after open; shards use pread and
 * a locked pool of decompression contexts). */
int dataset_get(const dataset *ds, size_t index, uint8_t *out);
/* Frees everything; NULL is ignored. */
void dataset_close(dataset *ds);
/* A warning for the program to log after opening, or NULL: format 1 shards, which carry
 * no identity (docs/shards.md). */
const char *dataset_warning(const dataset *ds);

/* ---- class labels (class-conditional models, docs/data.md) ----
 * CIFAR-10 has its label bytes, image folders the class of guided-diffusion's
 * convention (the file name's prefix before the first '_', classes numbered in the
 * sorted order of the prefixes), shards the label of each record (written by
 * ddpm-prep, -1 = none); IDX images get theirs from an IDX label file
 * (dataset_load_labels). */

/* Reads the IDX label file `path` (magic 0x00000801, unsigned bytes; plain or gzip)
 * for an IDX dataset: it must hold exactly dataset_size(ds) labels. Other formats
 * carry their own labels and are refused. Returns 0, or -1 with err_msg() naming
 * the file (and the record where it ends early). */
int dataset_load_labels(dataset *ds, const char *path);
/* 1 when every record has a label (>= 0), else 0. */
int dataset_has_labels(const dataset *ds);
/* The label of record `index` (< dataset_size), or -1 (none). */
int dataset_label(const dataset *ds, size_t index);
/* For a model of num_classes classes: every record has a label in
 * 0..num_classes-1. Returns 0, or -1 with err_msg() naming the file and the record
 * (a dataset without labels: how to give them). */
int dataset_check_labels(const dataset *ds, int num_classes);
/* Image folders: the class names, in class order (n_classes of them); NULL for the
 * other formats. Owned by the dataset. */
const char *const *dataset_class_names(const dataset *ds, size_t *n_classes);

/* The IDX label file reader alone (for ddpm-prep and the fuzz target): on success
 * *labels (*count bytes, each the label of one record) is the caller's (free).
 * Checks the header against the file's size before allocating. 0 or -1 (err_msg). */
int idx_labels_read(const char *path, uint8_t **labels, size_t *count);

/* Fill x (float CHW, n images, caller-owned) from u8 (borrowed): x = v/127.5 - 1 in
 * float arithmetic (as numpy's float32 does), i.e. data in [-1, 1]; image i is
 * flipped horizontally where flip[i] != 0 (flip may be NULL: no flips). */
void dataset_to_float(float *x, const uint8_t *u8, int n, int channels, int size, const uint8_t *flip);

#endif
