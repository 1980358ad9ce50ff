/* Shared by the libFuzzer targets fuzz/fuzz_wire_*.c and by the corpus replay
 * test (tests/unit/test_wire_corpus.c), which includes the targets with
 * WIRE_FUZZ_NO_ENTRY defined and its own FUZZ_FAIL, so that the regression
 * corpus goes through exactly the checks the fuzzer ran.
 *
 * Each target has a check function returning 1 if the input was accepted, 0 if
 * it was refused with a message; anything else (a refusal without a message, an
 * accepted message breaking the rules, a round trip that differs) is FUZZ_FAIL. */
#ifndef DDPM_FUZZ_WIRE_H
#define DDPM_FUZZ_WIRE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/wire/wire.h"

#ifndef FUZZ_FAIL
#define FUZZ_FAIL(...) do { fprintf(stderr, "fuzz check failed: " __VA_ARGS__); fprintf(stderr, "\n"); abort(); } while (0)
#endif

/* err_msg() reads "unknown error" when nothing was recorded since fuzz_err_clear(). */
static inline void fuzz_err_clear(void) { err_set("%s", ""); }
static inline int fuzz_err_empty(void) { return strcmp(err_msg(), "unknown error") == 0; }

/* The receiver every target pretends to be. */
#define FUZZ_MAX_ITEMS 64
#define FUZZ_T 1000
#define FUZZ_DATASET 60000u
#define FUZZ_STEP 9u
#define FUZZ_MAX_N 4096 /* values per decode */
static const uint64_t fuzz_chunk_off[3] = {0, 1000, 3000};
static const uint64_t fuzz_chunk_cnt[3] = {1000, 2000, 500};

#endif
