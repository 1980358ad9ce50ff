#include "tensor_file.h"

#include <stdlib.h>
#include <string.h>

#include "../core/util.h"

int tensor_file_create(tensor_file *tf, const char *path) {
    snprintf(tf->path, sizeof tf->path, "%s", path);
    tf->f = fopen(path, "wb");
    if (!tf->f) return err_set("%s: cannot create: %m", path);
    if (fwrite("DDPMTNS1", 1, 8, tf->f) != 8) {
        fclose(tf->f);
        tf->f = NULL;
        return err_set("%s: write failed", path);
    }
    return 0;
}

int tensor_file_add(tensor_file *tf, const char *name, int ndim, const int64_t *dims,
                    const float *data) {
    uint32_t len = (uint32_t)strlen(name), nd = (uint32_t)ndim;
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) count *= (uint64_t)dims[i];
    int ok = fwrite(&len, 4, 1, tf->f) == 1 && fwrite(name, 1, len, tf->f) == len &&
             fwrite(&nd, 4, 1, tf->f) == 1;
    for (int i = 0; ok && i < ndim; i++) {
        uint64_t d = (uint64_t)dims[i];
        ok = fwrite(&d, 8, 1, tf->f) == 1;
    }
    if (ok && count) ok = fwrite(data, sizeof(float), count, tf->f) == count;
    if (!ok) return err_set("%s: write of tensor %s failed", tf->path, name);
    return 0;
}

int tensor_file_close(tensor_file *tf) {
    if (!tf->f) return 0;
    int bad = fclose(tf->f) != 0;
    tf->f = NULL;
    if (bad) return err_set("%s: close failed: %m", tf->path);
    return 0;
}

float *tensor_file_read(const char *path, const char *name, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set("%s: cannot open: %m", path);
        return NULL;
    }
    char magic[8];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "DDPMTNS1", 8) != 0) {
        fclose(f);
        err_set("%s: not a tensor file (bad magic)", path);
        return NULL;
    }
    for (;;) {
        uint32_t len, nd;
        if (fread(&len, 4, 1, f) != 1) break;
        if (len > 4096) break;
        char nm[4097];
        if (fread(nm, 1, len, f) != len || fread(&nd, 4, 1, f) != 1 || nd > 8) break;
        nm[len] = 0;
        uint64_t count = 1;
        int ok = 1;
        for (uint32_t i = 0; i < nd; i++) {
            uint64_t d;
            if (fread(&d, 8, 1, f) != 1 || d > (1ull << 34)) { ok = 0; break; }
            count *= d;
        }
        if (!ok || count > (1ull << 34)) break;
        if (strcmp(nm, name) == 0) {
            float *out = xfloats(count);
            if (fread(out, sizeof(float), count, f) != count) {
                free(out);
                break;
            }
            fclose(f);
            *n = count;
            return out;
        }
        if (fseeko(f, (off_t)(count * sizeof(float)), SEEK_CUR) != 0) break;
    }
    fclose(f);
    err_set("%s: tensor '%s' not found or file truncated", path, name);
    return NULL;
}
