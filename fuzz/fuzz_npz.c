/* Decoder target: the .npz array reader as ddpm-eval uses it (npz_reader_open on
 * arr_0, then the whole array read in pieces). An accepted array has a shape whose
 * product is its element count, and exactly count x itemsize bytes are delivered
 * (one element more is refused); a refusal must say why and name the file. The
 * file's own checks keep allocations small: the array must be in the file. */
#include <string.h>

#include "common/io/npz_array.h"
#include "fuzz/fuzz.h"

int fuzz_check(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, "npz");
    npz_reader *r = NULL;
    fuzz_err_clear();
    if (npz_reader_open(&r, path, "arr_0") != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("npz: refused without a message");
        if (!strstr(err_msg(), path)) FUZZ_FAIL("npz: message does not name the file: %s", err_msg());
        if (r) FUZZ_FAIL("npz: refused but returned a reader");
        return 0;
    }
    int nd = npz_reader_ndim(r);
    uint64_t count = 1, isz = (uint64_t)npz_reader_dtype(r);
    for (int i = 0; i < nd; i++) {
        if (npz_reader_shape(r)[i] < 0) FUZZ_FAIL("npz: negative dimension");
        if (__builtin_mul_overflow(count, (uint64_t)npz_reader_shape(r)[i], &count))
            FUZZ_FAIL("npz: accepted a shape whose product overflows");
    }
    if (count != npz_reader_count(r)) FUZZ_FAIL("npz: count differs from the shape's product");
    /* the bytes of an accepted array are in the file: at most 1032:1 deflated */
    if (count * isz / 1032 > size) FUZZ_FAIL("npz: accepted %llu elements from %zu bytes",
                                             (unsigned long long)count, size);
    uint8_t buf[4096];
    uint64_t left = count;
    int rc = 0;
    while (left > 0 && rc == 0) {
        uint64_t k = left < sizeof buf / isz ? left : sizeof buf / isz;
        rc = npz_reader_read(r, buf, k);
        left -= k;
    }
    int accepted = rc == 0;
    if (accepted && npz_reader_read(r, buf, 1) == 0) FUZZ_FAIL("npz: read one element past the end");
    if (!accepted && fuzz_err_empty()) FUZZ_FAIL("npz: read refused without a message");
    npz_reader_close(r);
    return accepted;
}
