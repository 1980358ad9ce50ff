/* Replays the wire fuzz corpus (tests/fuzz_corpus/<target>/, seeds plus inputs
 * the fuzzer found, merged with -merge=1) through the very checks the libFuzzer
 * targets run: the targets' sources are included here with their entry point
 * left out and FUZZ_FAIL turned into a test failure. This runs in the normal
 * suite, so the ASan+UBSan build replays every file without needing clang.
 * Every valid_* file must be accepted. Usage: test_wire_corpus [CORPUS_DIR] */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/test.h"

static int corpus_failures;
static char corpus_current[512];

#define WIRE_FUZZ_NO_ENTRY
#define FUZZ_FAIL(...)                                                                 \
    do {                                                                               \
        printf("# %s: ", corpus_current);                                              \
        printf(__VA_ARGS__);                                                           \
        printf("\n");                                                                  \
        corpus_failures++;                                                             \
        return 0;                                                                      \
    } while (0)

#include "fuzz/fuzz_wire_decode.c"
#include "fuzz/fuzz_wire_push.c"
#include "fuzz/fuzz_wire_work.c"

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void replay(const char *root, const char *target, int (*check)(const uint8_t *, size_t)) {
    char dir[400];
    snprintf(dir, sizeof dir, "%s/%s", root, target);
    DIR *d = opendir(dir);
    if (!d) {
        test_check(0, "%s: cannot open corpus directory %s", target, dir);
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) names = xrealloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, name_cmp);

    int before = corpus_failures, accepted = 0, valid = 0, valid_ok = 0, unreadable = 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(corpus_current, sizeof corpus_current, "%s/%s", dir, names[i]);
        FILE *f = fopen(corpus_current, "rb");
        uint8_t *buf = xmalloc(1 << 20);
        size_t len = f ? fread(buf, 1, 1 << 20, f) : 0;
        if (!f || ferror(f) || !feof(f)) {
            printf("# %s: unreadable or larger than 1 MiB\n", corpus_current);
            unreadable++;
        } else {
            /* A copy of exactly len bytes, so ASan sees any read past the input. */
            uint8_t *exact = xmalloc(len ? len : 1);
            memcpy(exact, buf, len);
            int ok = check(exact, len);
            free(exact);
            accepted += ok;
            if (strncmp(names[i], "valid_", 6) == 0) {
                valid++;
                valid_ok += ok;
                if (!ok) printf("# %s: valid seed refused: %s\n", corpus_current, err_msg());
            }
        }
        if (f) fclose(f);
        free(buf);
        free(names[i]);
    }
    free(names);
    test_check(n > 0 && unreadable == 0 && corpus_failures == before,
               "%s: replayed %zu corpus files (%d accepted), no check failed", target, n, accepted);
    test_check(valid > 0 && valid_ok == valid, "%s: all %d valid_* seeds accepted", target, valid);
}

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : getenv("DDPM_WIRE_CORPUS");
    if (!root) root = "tests/fuzz_corpus"; /* tests run from the repository root */
    replay(root, "fuzz_wire_work", fuzz_work_check);
    replay(root, "fuzz_wire_push", fuzz_push_check);
    replay(root, "fuzz_wire_decode", fuzz_decode_check);
    wire_ctx_free(fuzz_push_ctx);
    wire_ctx_free(fuzz_dec_ctx);
    return test_done();
}
