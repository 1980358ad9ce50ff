/* libFuzzer's entry point for a decoder target (fuzz/fuzz.h). */
#include "fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_check(data, size);
    return 0;
}
