/* Test helper for tests/ref/test_images.sh: exposes the data and image I/O code to
 * the Python reference (PIL/numpy) through raw files.
 *   image_dump dataset FORMAT PATH SIZE CHANNELS OUT.raw [FIRST COUNT]
 *       FORMAT idx|cifar10|folder; writes images FIRST.. as uint8 CHW, prints "size N"
 *   image_dump decode FILE OUT.raw       decoded RGB HWC; prints "W H"
 *   image_dump write SEED N SIZE CHANNELS COLS PREFIX
 *       pseudo-random NHWC data -> PREFIX.raw, PREFIX_grid.png, PREFIX.npz,
 *       PREFIX_z64.npz (forced Zip64), PREFIX_wide.png (one (SIZE) x (N*SIZE) image) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/data/dataset.h"
#include "common/io/image_io.h"

static int write_raw(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) {
        fprintf(stderr, "image_dump: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

static int cmd_dataset(int argc, char **argv) {
    if (argc != 7 && argc != 9) return 2;
    data_format fmt;
    if (!strcmp(argv[2], "idx")) fmt = DATA_IDX;
    else if (!strcmp(argv[2], "cifar10")) fmt = DATA_CIFAR10;
    else if (!strcmp(argv[2], "folder")) fmt = DATA_IMAGE_FOLDER;
    else return 2;
    dataset *ds;
    if (dataset_open(&ds, fmt, argv[3], atoi(argv[4]), atoi(argv[5])) != 0) {
        fprintf(stderr, "image_dump: %s\n", err_msg());
        return 1;
    }
    size_t n = dataset_size(ds), first = 0, count = n;
    if (argc == 9) {
        first = strtoull(argv[7], NULL, 10);
        count = strtoull(argv[8], NULL, 10);
    }
    size_t ib = dataset_image_bytes(ds);
    uint8_t *buf = xmalloc(count * ib);
    for (size_t i = 0; i < count; i++) {
        if (dataset_get(ds, first + i, buf + i * ib) != 0) {
            fprintf(stderr, "image_dump: %s\n", err_msg());
            free(buf);
            dataset_close(ds);
            return 1;
        }
    }
    int rc = write_raw(argv[6], buf, count * ib);
    printf("size %zu\n", n);
    free(buf);
    dataset_close(ds);
    return rc;
}

static int cmd_decode(int argc, char **argv) {
    if (argc != 4) return 2;
    uint8_t *rgb;
    int w, h;
    if (image_load_rgb(argv[2], &rgb, &w, &h) != 0) {
        fprintf(stderr, "image_dump: %s\n", err_msg());
        return 1;
    }
    int rc = write_raw(argv[3], rgb, (size_t)w * h * 3);
    printf("%d %d\n", w, h);
    free(rgb);
    return rc;
}

static int cmd_write(int argc, char **argv) {
    if (argc != 8) return 2;
    unsigned long long s = strtoull(argv[2], NULL, 10);
    int n = atoi(argv[3]), size = atoi(argv[4]), ch = atoi(argv[5]), cols = atoi(argv[6]);
    const char *prefix = argv[7];
    size_t bytes = (size_t)n * size * size * ch;
    uint8_t *data = xmalloc(bytes);
    for (size_t i = 0; i < bytes; i++) { /* 64-bit LCG, high byte */
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        data[i] = (uint8_t)(s >> 56);
    }
    char path[4096];
    int rc = 0;
    snprintf(path, sizeof path, "%s.raw", prefix);
    rc |= write_raw(path, data, bytes);
    int shape[4] = {n, size, size, ch};
    snprintf(path, sizeof path, "%s_grid.png", prefix);
    if (image_write_grid_png(path, data, n, size, ch, cols) != 0) rc = 1, fprintf(stderr, "%s\n", err_msg());
    snprintf(path, sizeof path, "%s.npz", prefix);
    if (npz_write_uint8(path, "arr_0", data, shape, 4) != 0) rc = 1, fprintf(stderr, "%s\n", err_msg());
    snprintf(path, sizeof path, "%s_z64.npz", prefix);
    if (npz_write_uint8_ex(path, "arr_0", data, shape, 4, 1) != 0) rc = 1, fprintf(stderr, "%s\n", err_msg());
    snprintf(path, sizeof path, "%s_wide.png", prefix);
    if (image_write_png(path, data, size, n * size, ch) != 0) rc = 1, fprintf(stderr, "%s\n", err_msg());
    free(data);
    return rc;
}

int main(int argc, char **argv) {
    int rc = 2;
    if (argc >= 2 && !strcmp(argv[1], "dataset")) rc = cmd_dataset(argc, argv);
    else if (argc >= 2 && !strcmp(argv[1], "decode")) rc = cmd_decode(argc, argv);
    else if (argc >= 2 && !strcmp(argv[1], "write")) rc = cmd_write(argc, argv);
    if (rc == 2) fprintf(stderr, "usage: see the comment at the top of tests/tools/image_dump.c\n");
    return rc;
}
