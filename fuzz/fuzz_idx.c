/* Decoder target: IDX image files (plain or gzip) through dataset_open, as a
 * training run opens them, for 4x4 grey images (small, so that the fuzzer reaches
 * whole files), and the same bytes as an IDX label file (idx_labels_read, as
 * data.labels_path and ddpm-prep --labels read it). An accepted file must hold a
 * positive number of images (labels), each readable; a refusal must say why. */
#include "common/data/dataset.h"
#include "fuzz/fuzz.h"

#define FUZZ_IDX_SIZE 4

/* The label reader: an accepted file holds 1.. labels, fewer than its bytes. */
static int check_labels(const char *path, const uint8_t *data, size_t size) {
    const int gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    uint8_t *labels = NULL;
    size_t n = 0;
    fuzz_err_clear();
    if (idx_labels_read(path, &labels, &n) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("idx labels: refused without a message");
        if (labels || n) FUZZ_FAIL("idx labels: refused but returned labels");
        return 0;
    }
    if (n == 0 || !labels) FUZZ_FAIL("idx labels: accepted an empty file");
    if (!gz && n + 8 != size)
        FUZZ_FAIL("idx labels: %zu labels from a %zu-byte file", n, size);
    volatile uint8_t sum = 0;
    for (size_t i = 0; i < n; i++) sum ^= labels[i]; /* every label is readable */
    free(labels);
    return 1;
}

int fuzz_check(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, "idx");
    int labels_ok = check_labels(path, data, size);
    dataset *ds = NULL;
    fuzz_err_clear();
    if (dataset_open(&ds, DATA_IDX, path, FUZZ_IDX_SIZE, 1) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("idx: refused without a message");
        if (ds) FUZZ_FAIL("idx: refused but returned a dataset");
        return labels_ok;
    }
    size_t n = dataset_size(ds);
    if (n == 0) FUZZ_FAIL("idx: accepted an empty dataset");
    if (dataset_image_bytes(ds) != FUZZ_IDX_SIZE * FUZZ_IDX_SIZE) FUZZ_FAIL("idx: wrong image size");
    uint8_t img[FUZZ_IDX_SIZE * FUZZ_IDX_SIZE];
    if (dataset_get(ds, n - 1, img) != 0) FUZZ_FAIL("idx: last image unreadable: %s", err_msg());
    if (dataset_get(ds, n, img) == 0) FUZZ_FAIL("idx: image %zu past the end was returned", n);
    dataset_close(ds);
    return 1;
}
