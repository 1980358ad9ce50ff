/* Helpers of fuzz/fuzz.h, linked into every decoder target (libFuzzer and replay). */
#include <string.h>
#include <unistd.h>

#include "fuzz/fuzz.h"

void fuzz_err_clear(void) { err_set("%s", ""); }
int fuzz_err_empty(void) { return strcmp(err_msg(), "unknown error") == 0 || err_msg()[0] == '\0'; }

#define FUZZ_MAX_TMP 8
static char fuzz_paths[FUZZ_MAX_TMP][512];
static int fuzz_npaths;

static void fuzz_cleanup(void) {
    for (int i = 0; i < fuzz_npaths; i++) unlink(fuzz_paths[i]);
}

const char *fuzz_tmp_path(const char *suffix) {
    char want[512];
    const char *dir = getenv("TMPDIR");
    snprintf(want, sizeof want, "%s/ddpm-fuzz-%ld-%s", dir && *dir ? dir : "/tmp", (long)getpid(), suffix);
    for (int i = 0; i < fuzz_npaths; i++)
        if (strcmp(fuzz_paths[i], want) == 0) return fuzz_paths[i];
    if (fuzz_npaths == FUZZ_MAX_TMP) FUZZ_FAIL("harness: more than %d temporary paths", FUZZ_MAX_TMP);
    if (fuzz_npaths == 0) atexit(fuzz_cleanup);
    snprintf(fuzz_paths[fuzz_npaths], sizeof fuzz_paths[0], "%s", want);
    return fuzz_paths[fuzz_npaths++];
}

const char *fuzz_write_file(const uint8_t *data, size_t size, const char *suffix) {
    const char *path = fuzz_tmp_path(suffix);
    FILE *f = fopen(path, "wb");
    if (!f) FUZZ_FAIL("harness: cannot create %s", path);
    if (size && fwrite(data, 1, size, f) != size) FUZZ_FAIL("harness: cannot write %s", path);
    if (fclose(f) != 0) FUZZ_FAIL("harness: cannot write %s", path);
    return path;
}
