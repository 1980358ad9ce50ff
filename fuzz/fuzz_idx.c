/* Decoder target: IDX image files (plain or gzip) through dataset_open, as a
 * training run opens them, for 4x4 grey images (small, so that the fuzzer reaches
 * whole files). An accepted file must hold a positive number of images, each
 * readable; a refusal must say why. */
#include "common/data/dataset.h"
#include "fuzz/fuzz.h"

#define FUZZ_IDX_SIZE 4

int fuzz_check(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, "idx");
    dataset *ds = NULL;
    fuzz_err_clear();
    if (dataset_open(&ds, DATA_IDX, path, FUZZ_IDX_SIZE, 1) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("idx: refused without a message");
        if (ds) FUZZ_FAIL("idx: refused but returned a dataset");
        return 0;
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
