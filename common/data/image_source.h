/* The inputs ddpm-prep reads, one item after another in a fixed order:
 *   lmdb          an LMDB environment (LSUN's exports: key = image id, value = WebP or
 *                 JPEG bytes), in key order (LMDB's cursor order, as LSUN's and
 *                 guided-diffusion's scripts iterate it); a folder holding data.mdb
 *                 or the data file itself
 *   image_folder  .png/.jpg/.jpeg under a folder, in guided-diffusion's order
 *   idx, cifar10  the training formats of common/data/dataset.h (already at their
 *                 native size), handed out as decoded CHW records
 * Items are either encoded image bytes (decoded = 0) or ready uint8 CHW pixels. */
#ifndef DDPM_IMAGE_SOURCE_H
#define DDPM_IMAGE_SOURCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct image_source image_source; /* opaque; owns its handles and buffers */

/* One encoded image (an LMDB value or a folder file) larger than this is an item that
 * cannot be used (skipped by ddpm-prep, not copied): far above any real photograph's
 * encoding. */
#define IMAGE_SOURCE_MAX_ITEM_BYTES ((size_t)256 << 20)

typedef struct {
    const uint8_t *data; /* owned by the source, valid until the next call */
    size_t len;
    int decoded;         /* 1: data is channels*size*size CHW pixels */
    const char *key;     /* LMDB key (printable form) or file path; owned by the source */
    int32_t label;       /* class label (cifar10, idx with a label file, image_folder by
                            the file-name convention of docs/data.md), -1 = none (lmdb) */
} image_source_item;

/* Opens `path` (borrowed) as `format` ("lmdb", "image_folder", "idx", "cifar10").
 * size/channels are only used by idx/cifar10, which must match them. labels_path
 * (NULL or "": none) is an IDX label file for format idx (dataset_load_labels).
 * Returns 0 or -1 (err_msg names the path). */
int image_source_open(image_source **out, const char *format, const char *path, int size, int channels,
                      const char *labels_path);
/* An image folder's class names in class order (*n of them), else NULL; owned by s. */
const char *const *image_source_class_names(const image_source *s, size_t *n);
/* Items in the source. */
uint64_t image_source_count(const image_source *s);
/* Moves past the next n items without reading their values. Returns 0 or -1. */
int image_source_skip(image_source *s, uint64_t n);
/* The next item: returns 1 with *item filled, 0 at the end, -1 on a read error that
 * stops the source (a damaged LMDB; a folder image that cannot be read is an item
 * with data = NULL and the reason in err_msg, so that the caller can skip it). */
int image_source_next(image_source *s, image_source_item *item);
void image_source_close(image_source *s);

#endif
