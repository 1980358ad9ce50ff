/* Decoder target: metrics.jsonl as a resumed run rewrites it
 * (common/io/jsonl_steps.h), keeping the lines of steps <= 5. Accepted: the file
 * that remains holds only whole lines (each ending in a newline), none with a
 * leading step above 5, and exactly the original's line count minus those
 * reported dropped; a refusal must say why. */
#include <string.h>

#include "common/io/jsonl_steps.h"
#include "fuzz/fuzz.h"

#define FUZZ_MAX_STEP 5

/* Whole lines (ending in '\n') and a torn last one in data[0..size). */
static long count_lines(const uint8_t *data, size_t size, int *torn) {
    long n = 0;
    for (size_t i = 0; i < size; i++) n += data[i] == '\n';
    *torn = size > 0 && data[size - 1] != '\n';
    return n;
}

int fuzz_check(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, "jsonl");
    long dropped = -1;
    fuzz_err_clear();
    if (jsonl_drop_after_step(path, FUZZ_MAX_STEP, &dropped) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("jsonl: refused without a message");
        return 0;
    }
    int torn;
    long before = count_lines(data, size, &torn) + torn;
    FILE *f = fopen(path, "rb");
    if (!f) FUZZ_FAIL("jsonl: the file is gone after an accepted rewrite");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long after = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        uint64_t step;
        after++;
        if (line[n - 1] != '\n') FUZZ_FAIL("jsonl: a torn line was kept");
        if (jsonl_line_step(line, &step) && step > FUZZ_MAX_STEP)
            FUZZ_FAIL("jsonl: a line of step %llu was kept", (unsigned long long)step);
    }
    free(line);
    fclose(f);
    if (after != before - dropped)
        FUZZ_FAIL("jsonl: %ld lines before, %ld dropped, %ld after", before, dropped, after);
    return 1;
}
