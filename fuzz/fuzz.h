/* Shared by the decoder fuzz targets fuzz/fuzz_<name>.c (every target except the
 * wire ones, which keep fuzz/fuzz_wire.h). A target defines one function,
 *
 *     int fuzz_check(const uint8_t *data, size_t size);
 *
 * returning 1 when the decoder accepted the input and 0 when it refused it with a
 * message (err_msg()). Anything else is a defect and ends in FUZZ_FAIL (abort):
 * a refusal without a message, an accepted value that breaks the decoder's own
 * rules, a round trip that differs. The same target is linked two ways:
 *   - fuzz/entry_libfuzzer.c: libFuzzer's entry point, built with clang by
 *     `make fuzz` into build/fuzz/fuzz_<name>;
 *   - fuzz/replay_main.c: a main that replays a corpus folder, built with gcc
 *     and ASan+UBSan by `make test-build` into build-san/fuzz-replay/fuzz_<name>
 *     and run by the normal suite on tests/fuzz_corpus/fuzz_<name>/ (files named
 *     valid_* must be accepted).
 * Decoders that read a path get the bytes through fuzz_write_file(). */
#ifndef DDPM_FUZZ_H
#define DDPM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/core/util.h"

int fuzz_check(const uint8_t *data, size_t size);

#define FUZZ_FAIL(...)                                                                 \
    do {                                                                               \
        fprintf(stderr, "fuzz check failed: " __VA_ARGS__);                            \
        fprintf(stderr, "\n");                                                         \
        abort();                                                                       \
    } while (0)

/* err_msg() reads "unknown error" when nothing was recorded since fuzz_err_clear(). */
void fuzz_err_clear(void);
int fuzz_err_empty(void);

/* A path of this process's own (under $TMPDIR or /tmp) ending in `suffix`,
 * removed when the process exits; the same suffix gives the same path. */
const char *fuzz_tmp_path(const char *suffix);

/* Writes data to fuzz_tmp_path(suffix) and returns that path (FUZZ_FAIL on an
 * I/O error: that is the harness failing, not the decoder). */
const char *fuzz_write_file(const uint8_t *data, size_t size, const char *suffix);

#endif
