/* CIFAR-10 binary version: records of 1 label byte + 3072 bytes (R, G, B planes of 32x32). */
#include "common/data/dataset_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/core/util.h"

#define CIFAR_SIDE 32
#define CIFAR_IMAGE (3 * CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_RECORD (1 + CIFAR_IMAGE)
#define CIFAR_BATCHES 5

/* Append the records of one batch file to ds->images. */
static int load_batch(struct dataset *ds, const char *file) {
    /* O_NONBLOCK: a FIFO must not hang the open (it is refused below) */
    int fd = open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        if (fd >= 0) close(fd);
        return err_set("%s: cannot open CIFAR-10 batch: %s", file, strerror(e));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set("%s: not a regular file", file);
    }
    size_t bytes = (size_t)st.st_size;
    if (bytes == 0) {
        fclose(f);
        return err_set("%s: empty CIFAR-10 batch", file);
    }
    size_t records = bytes / CIFAR_RECORD;
    if (bytes % CIFAR_RECORD != 0) {
        fclose(f);
        return err_set("%s: truncated: %zu bytes is not a whole number of %d-byte records; "
                       "record %zu (byte offset %zu) is incomplete",
                       file, bytes, CIFAR_RECORD, records, records * CIFAR_RECORD);
    }
    size_t total, bytes_all;
    if (size_add(ds->count, records, &total) != 0 || size_mul(total, CIFAR_IMAGE, &bytes_all) != 0) {
        fclose(f);
        return err_set("%s: %zu records do not fit in memory", file, records);
    }
    ds->images = xrealloc(ds->images, bytes_all);
    ds->labels = xrealloc(ds->labels, total * sizeof *ds->labels);
    uint8_t rec[CIFAR_RECORD];
    for (size_t i = 0; i < records; i++) {
        if (fread(rec, 1, CIFAR_RECORD, f) != CIFAR_RECORD) {
            int e = ferror(f);
            fclose(f);
            return err_set("%s: record %zu (byte offset %zu): %s", file, i, i * CIFAR_RECORD,
                           e ? "read error" : "unexpected end of file");
        }
        if (rec[0] > 9) {
            fclose(f);
            return err_set("%s: record %zu (byte offset %zu): label %u out of range 0..9", file, i,
                           i * CIFAR_RECORD, rec[0]);
        }
        memcpy(ds->images + (ds->count + i) * CIFAR_IMAGE, rec + 1, CIFAR_IMAGE); /* already CHW */
        ds->labels[ds->count + i] = rec[0];
    }
    fclose(f);
    ds->count += records;
    ds->part_end[ds->n_parts++] = ds->count; /* at most CIFAR_BATCHES files */
    return 0;
}

int dataset_load_cifar10(struct dataset *ds) {
    if (ds->size != CIFAR_SIDE || ds->channels != 3)
        return err_set("%s: CIFAR-10 images are %dx%dx3, expected %dx%dx%d", ds->path, CIFAR_SIDE, CIFAR_SIDE,
                       ds->size, ds->size, ds->channels);
    struct stat st;
    if (stat(ds->path, &st) != 0) return err_set("%s: cannot open CIFAR-10 data: %s", ds->path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return load_batch(ds, ds->path);
    /* A folder: the five training batches, in order. */
    size_t n = strlen(ds->path) + 32;
    char *file = xmalloc(n);
    int rc = 0;
    for (int b = 1; b <= CIFAR_BATCHES && rc == 0; b++) {
        snprintf(file, n, "%s/data_batch_%d.bin", ds->path, b);
        rc = load_batch(ds, file);
    }
    free(file);
    return rc;
}
