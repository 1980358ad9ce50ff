/* Replays a decoder target's regression corpus through its fuzz_check (fuzz/fuzz.h)
 * in the normal suite, under ASan+UBSan, without clang. Usage:
 *     fuzz_<name> NAME CORPUS_DIR
 * Prints one "ok - " / "not ok - " line per file named valid_* (which must be
 * accepted) and one for the whole folder. A defect aborts the program; the file
 * it was reading is named on stderr first, so tests/run_tests.sh shows it. */
#include <dirent.h>
#include <string.h>

#include "fuzz/fuzz.h"

#define REPLAY_MAX_BYTES (16u << 20)

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME CORPUS_DIR\n", argv[0]);
        return 2;
    }
    const char *name = argv[1], *dir = argv[2];
    DIR *d = opendir(dir);
    if (!d) {
        printf("not ok - %s: cannot open corpus folder %s\n", name, dir);
        return 1;
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

    uint8_t *buf = xmalloc(REPLAY_MAX_BYTES);
    int bad = 0, accepted = 0, valid = 0;
    for (size_t i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        size_t len = f ? fread(buf, 1, REPLAY_MAX_BYTES, f) : 0;
        int readable = f && !ferror(f) && feof(f);
        if (f) fclose(f);
        if (!readable) {
            printf("not ok - %s: cannot read %s (or it is over %u bytes)\n", name, path, REPLAY_MAX_BYTES);
            bad++;
            continue;
        }
        fprintf(stderr, "# replaying %s\n", path);
        /* a private copy, so that an over-read past len is ASan's to see */
        uint8_t *in = xmalloc(len ? len : 1);
        memcpy(in, buf, len);
        int ok = fuzz_check(in, len);
        free(in);
        accepted += ok;
        if (strncmp(names[i], "valid_", 6) == 0) {
            valid++;
            if (!ok) bad++;
            printf("%s - %s: %s accepted%s%s\n", ok ? "ok" : "not ok", name, names[i], ok ? "" : ": ",
                   ok ? "" : err_msg());
        }
    }
    printf("%s - %s: %zu corpus files replayed (%d accepted, %d of them valid_* seeds)\n",
           n && !bad ? "ok" : "not ok", name, n, accepted, valid);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(buf);
    return bad || !n;
}
