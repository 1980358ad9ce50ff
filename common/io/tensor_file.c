#include "common/io/tensor_file.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/core/util.h"

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
    /* what the reader accepts: the same limits on names and ranks */
    if (ndim < 0 || ndim > TENSOR_FILE_MAX_DIMS || strlen(name) > TENSOR_FILE_MAX_NAME)
        return err_set("%s: tensor '%.64s': rank %d or name length out of range", tf->path, name, ndim);
    uint32_t len = (uint32_t)strlen(name), nd = (uint32_t)ndim;
    size_t count = 1;
    for (int i = 0; i < ndim; i++)
        if (dims[i] < 0 || size_mul(count, (size_t)dims[i], &count))
            return err_set("%s: tensor '%s': bad shape", tf->path, name);
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

void tensor_reader_close(tensor_file_reader *r) {
    if (r->f) fclose(r->f);
    r->f = NULL;
    for (size_t i = 0; i < r->n; i++) free(r->e[i].name);
    free(r->e);
    r->e = NULL;
    r->n = 0;
}

/* Reads n bytes at the current position, which must lie within the `left` bytes
 * still in the file. */
static int take(tensor_file_reader *r, void *dst, size_t n, uint64_t *left, uint64_t at) {
    if (n > *left || fread(dst, 1, n, r->f) != n)
        return err_set("%s: record at offset %llu is truncated", r->path, (unsigned long long)at);
    *left -= n;
    return 0;
}

/* One record header at offset `at` (left bytes remain); fills e (name owned). */
static int index_record(tensor_file_reader *r, uint64_t at, uint64_t *left, tensor_file_entry *e) {
    uint32_t len, nd;
    if (take(r, &len, 4, left, at) != 0) return -1;
    if (len > TENSOR_FILE_MAX_NAME)
        return err_set("%s: record at offset %llu: name of %u bytes (at most %d)", r->path,
                       (unsigned long long)at, len, TENSOR_FILE_MAX_NAME);
    if (len > *left) return err_set("%s: record at offset %llu is truncated", r->path, (unsigned long long)at);
    e->name = xmalloc((size_t)len + 1);
    if (take(r, e->name, len, left, at) != 0 || take(r, &nd, 4, left, at) != 0) return -1;
    e->name[len] = 0;
    if (nd > TENSOR_FILE_MAX_DIMS)
        return err_set("%s: tensor '%s' (offset %llu): %u dimensions (at most %d)", r->path, e->name,
                       (unsigned long long)at, nd, TENSOR_FILE_MAX_DIMS);
    size_t dims[TENSOR_FILE_MAX_DIMS], bytes;
    e->ndim = (int)nd;
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t d;
        if (take(r, &d, 8, left, at) != 0) return -1;
        if (d > (uint64_t)INT64_MAX || (uint64_t)(size_t)d != d)
            return err_set("%s: tensor '%s': dimension %u is %llu", r->path, e->name, i,
                           (unsigned long long)d);
        dims[i] = (size_t)d;
        e->dims[i] = (int64_t)d;
    }
    if (size_prod(dims, e->ndim, &e->count) || size_mul(e->count, sizeof(float), &bytes) ||
        bytes > *left)
        return err_set("%s: tensor '%s' (offset %llu): its shape needs more data than the %llu bytes "
                       "left in the file", r->path, e->name, (unsigned long long)at,
                       (unsigned long long)*left);
    e->offset = (uint64_t)ftello(r->f);
    *left -= bytes;
    if (bytes && fseeko(r->f, (off_t)bytes, SEEK_CUR) != 0)
        return err_set("%s: cannot seek past tensor '%s'", r->path, e->name);
    return 0;
}

int tensor_reader_open(tensor_file_reader *r, const char *path) {
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", path);
    uint64_t size = 0;
    r->f = fopen_regular(path, &size);
    if (!r->f) return -1;
    char magic[8];
    if (size < 8 || fread(magic, 1, 8, r->f) != 8 || memcmp(magic, "DDPMTNS1", 8) != 0) {
        tensor_reader_close(r);
        return err_set("%s: not a tensor file (bad magic)", path);
    }
    uint64_t left = size - 8;
    size_t cap = 0;
    while (left > 0) {
        if (r->n == TENSOR_FILE_MAX_RECORDS) {
            tensor_reader_close(r);
            return err_set("%s: more than %d tensors", path, TENSOR_FILE_MAX_RECORDS);
        }
        if (r->n == cap) {
            cap = cap ? 2 * cap : 64;
            r->e = xrealloc(r->e, cap * sizeof *r->e);
        }
        tensor_file_entry *e = &r->e[r->n++];
        memset(e, 0, sizeof *e);
        if (index_record(r, size - left, &left, e) != 0) {
            tensor_reader_close(r);
            return -1;
        }
    }
    return 0;
}

const tensor_file_entry *tensor_reader_find(const tensor_file_reader *r, const char *name) {
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->e[i].name, name) == 0) return &r->e[i];
    return NULL;
}

int tensor_reader_read(tensor_file_reader *r, const tensor_file_entry *e, float *out) {
    if (fseeko(r->f, (off_t)e->offset, SEEK_SET) != 0 ||
        fread(out, sizeof(float), e->count, r->f) != e->count)
        return err_set("%s: cannot read tensor '%s'", r->path, e->name);
    return 0;
}

float *tensor_file_read(const char *path, const char *name, size_t *n) {
    tensor_file_reader r;
    if (tensor_reader_open(&r, path) != 0) return NULL;
    const tensor_file_entry *e = tensor_reader_find(&r, name);
    float *out = NULL;
    if (!e) {
        err_set("%s: has no tensor '%s'", path, name);
    } else {
        out = xfloats(e->count ? e->count : 1);
        if (tensor_reader_read(&r, e, out) != 0) {
            free(out);
            out = NULL;
        } else {
            *n = e->count;
        }
    }
    tensor_reader_close(&r);
    return out;
}
