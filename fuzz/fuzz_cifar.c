/* Decoder target: a CIFAR-10 binary batch file through dataset_open, as a training
 * run opens it. An accepted file holds a positive whole number of 3073-byte
 * records, each with a label in 0..9, and every image is readable; a refusal must
 * say why and name the file. */
#include <string.h>

#include "common/data/dataset.h"
#include "fuzz/fuzz.h"

#define CIFAR_RECORD 3073
#define CIFAR_IMAGE 3072

int fuzz_check(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, "cifar.bin");
    dataset *ds = NULL;
    fuzz_err_clear();
    if (dataset_open(&ds, DATA_CIFAR10, path, 32, 3) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("cifar: refused without a message");
        if (ds) FUZZ_FAIL("cifar: refused but returned a dataset");
        if (!strstr(err_msg(), path)) FUZZ_FAIL("cifar: message does not name the file: %s", err_msg());
        return 0;
    }
    size_t n = dataset_size(ds);
    if (n == 0 || size % CIFAR_RECORD != 0 || n != size / CIFAR_RECORD)
        FUZZ_FAIL("cifar: accepted %zu records from %zu bytes", n, size);
    if (dataset_image_bytes(ds) != CIFAR_IMAGE) FUZZ_FAIL("cifar: wrong image size");
    uint8_t img[CIFAR_IMAGE];
    for (size_t i = 0; i < n; i++) {
        if (data[i * CIFAR_RECORD] > 9) FUZZ_FAIL("cifar: record %zu with label %u accepted", i, data[i * CIFAR_RECORD]);
        if (dataset_get(ds, i, img) != 0) FUZZ_FAIL("cifar: image %zu unreadable: %s", i, err_msg());
        if (memcmp(img, data + i * CIFAR_RECORD + 1, CIFAR_IMAGE) != 0) FUZZ_FAIL("cifar: image %zu differs", i);
    }
    if (dataset_get(ds, n, img) == 0) FUZZ_FAIL("cifar: image %zu past the end was returned", n);
    dataset_close(ds);
    return 1;
}
