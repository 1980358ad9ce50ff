#include "common/io/jsonl_steps.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/core/util.h"

int jsonl_line_step(const char *line, uint64_t *step) {
    const char *p = line;
    while (*p == ' ') p++;
    if (strncmp(p, "{\"step\"", 7) != 0) return 0;
    p += 7;
    while (*p == ' ') p++;
    if (*p++ != ':') return 0;
    while (*p == ' ') p++;
    if (!isdigit((unsigned char)*p)) return 0;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    if (*p != ',' && *p != '}' && *p != ' ') return 0;
    *step = v;
    return 1;
}

/* Copies the kept lines of in to out; counts the dropped ones. */
static int copy_kept(FILE *in, FILE *out, const char *path, uint64_t max_step, long *dropped) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, in)) > 0) {
        uint64_t s;
        if ((size_t)n > JSONL_MAX_LINE) {
            rc = err_set("%s: a line of more than %u bytes", path, JSONL_MAX_LINE);
            break;
        }
        int torn = line[n - 1] != '\n';
        if (torn || (jsonl_line_step(line, &s) && s > max_step)) {
            (*dropped)++;
            continue;
        }
        if (out && fwrite(line, 1, (size_t)n, out) != (size_t)n) {
            rc = err_set("%s: write failed: %m", path);
            break;
        }
    }
    if (rc == 0 && ferror(in)) rc = err_set("%s: read failed: %m", path);
    free(line);
    return rc;
}

int jsonl_drop_after_step(const char *path, uint64_t max_step, long *dropped) {
    *dropped = 0;
    size_t tn = strlen(path) + 16;
    char *tmp = xmalloc(tn);
    snprintf(tmp, tn, "%s.tmp", path);
    /* a rewrite killed before its rename left this; the caller owns the folder */
    if (unlink(tmp) != 0 && errno != ENOENT) {
        err_set("%s: cannot remove: %m", tmp);
        free(tmp);
        return -1;
    }
    FILE *in = fopen(path, "rb");
    if (!in) {
        free(tmp);
        return errno == ENOENT ? 0 : err_set("%s: cannot open: %m", path);
    }
    /* a first pass only counts: most starts have nothing to remove */
    int rc = copy_kept(in, NULL, path, max_step, dropped);
    if (rc != 0 || *dropped == 0) {
        fclose(in);
        free(tmp);
        return rc;
    }
    FILE *out = fopen(tmp, "wb");
    if (!out) {
        rc = err_set("%s: cannot create: %m", tmp);
    } else {
        *dropped = 0;
        rewind(in);
        rc = copy_kept(in, out, path, max_step, dropped);
        if (rc == 0 && (fflush(out) != 0 || fsync(fileno(out)) != 0))
            rc = err_set("%s: write failed: %m", tmp);
        if (fclose(out) != 0 && rc == 0) rc = err_set("%s: write failed: %m", tmp);
        if (rc == 0 && rename(tmp, path) != 0) rc = err_set("%s: rename from %s: %m", path, tmp);
        if (rc != 0) unlink(tmp);
    }
    fclose(in);
    free(tmp);
    return rc;
}
