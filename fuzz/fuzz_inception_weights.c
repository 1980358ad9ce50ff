/* Decoder target: the tensor file reader under the Inception weights
 * (tensor_reader_open indexes every record against the file's size; then
 * inception_load checks names and exact shapes). Kept cheap: every record's data
 * must be in the file, so nothing large is allocated from a header, and a full
 * network (95 MB) is never reached from fuzzed bytes. Accepted indexes have every
 * record inside the file; a refusal names the file. */
#include <string.h>

#include "common/eval/inception.h"
#include "common/io/tensor_file.h"
#include "fuzz/fuzz.h"

int fuzz_check(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, "tns");
    tensor_file_reader r;
    fuzz_err_clear();
    if (tensor_reader_open(&r, path) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("tensor file: refused without a message");
        if (!strstr(err_msg(), path)) FUZZ_FAIL("tensor file: message does not name the file: %s", err_msg());
        return 0;
    }
    for (size_t i = 0; i < r.n; i++) {
        const tensor_file_entry *e = &r.e[i];
        if (e->offset > size || e->count > (size - e->offset) / 4)
            FUZZ_FAIL("tensor file: record %zu (%zu floats at %llu) outside the %zu-byte file", i, e->count,
                      (unsigned long long)e->offset, size);
        float buf[256];
        if (e->count <= 256 && tensor_reader_read(&r, e, buf) != 0)
            FUZZ_FAIL("tensor file: indexed record %zu unreadable: %s", i, err_msg());
    }
    tensor_reader_close(&r);
    inception *net = NULL;
    fuzz_err_clear();
    if (inception_load(&net, path) == 0) FUZZ_FAIL("inception: fuzzed weights accepted");
    if (fuzz_err_empty() || net) FUZZ_FAIL("inception: refused without a message");
    return 1;
}
