/* Datasets (IDX, CIFAR-10, image folders), float conversion and image-output errors.
 * References: Python's gzip+numpy for the real Fashion-MNIST files (tests/ref/idx_ref.py),
 * and byte patterns this test writes itself for the synthetic files. Pixel-exact
 * preprocessing against PIL is in tests/ref/test_images.sh. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>

#include "common/core/util.h"
#include "common/data/dataset.h"
#include "common/data/preprocess.h"
#include "common/io/image_io.h"
#include "tests/unit/test.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

static char g_tmp[512];

static const char *tmp_path(const char *name) {
    static char buf[8][1024];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, name);
    return buf[k];
}

static int msg_has(const char *a, const char *b) {
    const char *m = err_msg();
    return strstr(m, a) != NULL && (!b || strstr(m, b) != NULL);
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint8_t pattern(size_t image, size_t pixel) { return (uint8_t)(image * 31 + pixel * 7 + (pixel >> 5)); }

/* An IDX file: header (magic, n, rows, cols) then `data_images` images of the
 * pattern plus `extra` more bytes; gzip-compressed if gz. */
static void write_idx(const char *path, uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols,
                      double data_images, size_t extra, int gz) {
    size_t rec = (size_t)rows * cols, bytes = (size_t)(data_images * rec) + extra;
    uint8_t *buf = xmalloc(16 + bytes);
    put_be32(buf, magic);
    put_be32(buf + 4, n);
    put_be32(buf + 8, rows);
    put_be32(buf + 12, cols);
    for (size_t i = 0; i < bytes; i++) buf[16 + i] = pattern(i / rec, i % rec);
    if (gz) {
        gzFile g = gzopen(path, "wb");
        gzwrite(g, buf, (unsigned)(16 + bytes));
        gzclose(g);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(buf, 1, 16 + bytes, f);
        fclose(f);
    }
    free(buf);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = xmalloc(*n ? *n : 1);
    if (fread(p, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return p;
}

/* ---------- real Fashion-MNIST vs. Python ---------- */

static void check_real_idx(const char *file, size_t expect_n, const size_t *idx, int nidx) {
    char path[512], cmd[1024];
    snprintf(path, sizeof path, "%s/%s", FMNIST_DIR, file);
    dataset *ds;
    int rc = dataset_open(&ds, DATA_IDX, path, 28, 1);
    if (!test_check(rc == 0, "open %s (%s)", file, rc ? err_msg() : "ok")) return;
    test_check(dataset_size(ds) == expect_n, "%s holds %zu images (got %zu)", file, expect_n, dataset_size(ds));
    int len = snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/idx_ref.py %s", path);
    for (int i = 0; i < nidx; i++) len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %zu", idx[i]);
    FILE *p = popen(cmd, "r");
    char *line = xmalloc(4096);
    size_t py_n = 0;
    int ok_ref = p && fgets(line, 4096, p) && sscanf(line, "%zu", &py_n) == 1;
    test_check(ok_ref && py_n == dataset_size(ds), "%s: Python reads %zu images, we read %zu", file, py_n,
               dataset_size(ds));
    for (int i = 0; ok_ref && i < nidx; i++) {
        uint8_t img[784];
        int same = fgets(line, 4096, p) && strlen(line) >= 2 * 784 && dataset_get(ds, idx[i], img) == 0;
        for (int k = 0; same && k < 784; k++) {
            unsigned v;
            same = sscanf(line + 2 * k, "%2x", &v) == 1 && v == img[k];
        }
        test_check(same, "%s image %zu bytes equal Python's gzip+numpy read", file, idx[i]);
    }
    if (p) pclose(p);
    free(line);
    dataset_close(ds);
}

/* ---------- synthetic IDX ---------- */

static int idx_matches_pattern(const dataset *ds, size_t n, size_t rec) {
    uint8_t *img = xmalloc(rec);
    int ok = dataset_size(ds) == n;
    for (size_t i = 0; ok && i < n; i++) {
        ok = dataset_get(ds, i, img) == 0;
        for (size_t k = 0; ok && k < rec; k++) ok = img[k] == pattern(i, k);
    }
    free(img);
    return ok;
}

static void test_idx_synthetic(void) {
    dataset *ds = NULL;
    for (int gz = 0; gz <= 1; gz++) {
        const char *kind = gz ? "gzip" : "plain";
        const char *p = tmp_path(gz ? "valid.idx.gz" : "valid.idx");
        write_idx(p, 0x803, 9, 28, 28, 9, 0, gz);
        int rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
        test_check(rc == 0 && idx_matches_pattern(ds, 9, 784), "%s IDX: 9 images read back exactly (%s)", kind,
                   rc ? err_msg() : "ok");
        dataset_close(ds);
        ds = NULL;

        p = tmp_path(gz ? "trunc.idx.gz" : "trunc.idx");
        write_idx(p, 0x803, 5, 28, 28, 3.5, 0, gz);
        rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
        test_check(rc == -1 && ds == NULL && msg_has(p, "image 3 (byte offset 2368)"),
                   "%s IDX truncated in image 3: error names file and record: %s", kind, err_msg());

        p = tmp_path(gz ? "magic.idx.gz" : "magic.idx");
        write_idx(p, 0x0c03, 2, 28, 28, 2, 0, gz);
        rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
        test_check(rc == -1 && msg_has(p, "bad magic 0x00000c03"), "%s IDX bad magic: %s", kind, err_msg());

        p = tmp_path(gz ? "dims.idx.gz" : "dims.idx");
        write_idx(p, 0x803, 2, 32, 32, 2, 0, gz);
        rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
        test_check(rc == -1 && msg_has(p, "32x32x1, expected 28x28x1"), "%s IDX 32x32 when 28 expected: %s", kind,
                   err_msg());

        p = tmp_path(gz ? "trail.idx.gz" : "trail.idx");
        write_idx(p, 0x803, 4, 28, 28, 4, 3, gz);
        rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
        test_check(rc == -1 && msg_has(p, "trailing bytes") && msg_has("byte offset 3152", NULL),
                   "%s IDX trailing bytes: %s", kind, err_msg());
    }
    const char *p = tmp_path("valid.idx");
    int rc = dataset_open(&ds, DATA_IDX, p, 28, 3);
    test_check(rc == -1 && msg_has(p, "expected 28x28x3"), "IDX asked for 3 channels: %s", err_msg());

    p = tmp_path("labels.idx");
    write_idx(p, 0x801, 2, 28, 28, 0, 0, 0);
    rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
    test_check(rc == -1 && msg_has(p, "label file"), "IDX label file given as images: %s", err_msg());

    p = tmp_path("no-such-file.idx.gz");
    rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
    test_check(rc == -1 && msg_has(p, "cannot open"), "missing IDX file: %s", err_msg());

    p = tmp_path("empty.idx");
    write_bytes(p, "", 0);
    rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
    test_check(rc == -1 && msg_has(p, "too short"), "empty IDX file: %s", err_msg());

    /* A gzip stream cut in the middle (the compressed bytes themselves are short). */
    const char *full = tmp_path("valid.idx.gz");
    size_t n;
    uint8_t *bytes = read_bytes(full, &n);
    p = tmp_path("cut.idx.gz");
    write_bytes(p, bytes, n / 2);
    free(bytes);
    rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
    test_check(rc == -1 && msg_has(p, "image"), "gzip stream cut in half: %s", err_msg());

    /* A corrupted byte inside the deflate data (or its CRC) must not pass silently. */
    bytes = read_bytes(full, &n);
    bytes[n - 6] ^= 0x55; /* inside the CRC-32 trailer */
    p = tmp_path("crc.idx.gz");
    write_bytes(p, bytes, n);
    free(bytes);
    rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
    test_check(rc == -1 && msg_has(p, "incorrect data check"), "gzip CRC mismatch detected: %s", err_msg());

    /* Issue #14 row 4: a gzip file without its 8-byte CRC-32/size trailer and with a
     * flipped byte. Stored (level 0) deflate, so that the flip changes the pixels and
     * only the missing CRC could reveal it: gzread used to call this a clean end. */
    p = tmp_path("stored.idx.gz");
    uint8_t *raw = xmalloc(16 + 9 * 784);
    put_be32(raw, 0x803);
    put_be32(raw + 4, 9);
    put_be32(raw + 8, 28);
    put_be32(raw + 12, 28);
    for (size_t i = 0; i < 9 * 784; i++) raw[16 + i] = pattern(i / 784, i % 784);
    gzFile g = gzopen(p, "wb0");
    gzwrite(g, raw, 16 + 9 * 784);
    gzclose(g);
    bytes = read_bytes(p, &n);
    rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
    test_check(rc == 0 && idx_matches_pattern(ds, 9, 784), "stored gzip IDX reads back (%s)", rc ? err_msg() : "ok");
    dataset_close(ds);
    ds = NULL;
    const char *notrail = tmp_path("notrail.idx.gz");
    write_bytes(notrail, bytes, n - 8);
    rc = dataset_open(&ds, DATA_IDX, notrail, 28, 1);
    test_check(rc == -1 && ds == NULL && msg_has(notrail, "trailer"), "gzip without its CRC/size trailer refused: %s",
               err_msg());
    bytes[n - 100] ^= 0x01; /* a pixel of the last image */
    const char *flip = tmp_path("row4.idx.gz");
    write_bytes(flip, bytes, n - 8);
    rc = dataset_open(&ds, DATA_IDX, flip, 28, 1);
    test_check(rc == -1 && ds == NULL && msg_has(flip, "trailer"),
               "row 4: gzip without trailer and a flipped byte refused, naming the file: %s", err_msg());
    write_bytes(flip, bytes, n);
    rc = dataset_open(&ds, DATA_IDX, flip, 28, 1);
    test_check(rc == -1 && msg_has(flip, "incorrect data check"), "stored gzip with a flipped byte: CRC error: %s",
               err_msg());
    bytes[n - 100] ^= 0x01;
    /* Trailing garbage after the last member (gzread skipped it silently). */
    uint8_t *more = xmalloc(n + 5);
    memcpy(more, bytes, n);
    memcpy(more + n, "junk!", 5);
    const char *trail = tmp_path("garbage.idx.gz");
    write_bytes(trail, more, n + 5);
    rc = dataset_open(&ds, DATA_IDX, trail, 28, 1);
    test_check(rc == -1 && msg_has(trail, "trailing garbage after the gzip stream"), "gzip trailing garbage: %s",
               err_msg());
    free(more);
    free(bytes);
    /* Two members (gzip -c a b > c) are one valid stream, as gzip -d reads it. */
    const char *two = tmp_path("two.idx.gz");
    g = gzopen(two, "wb");
    gzwrite(g, raw, 16 + 4 * 784);
    gzclose(g);
    FILE *fa = fopen(two, "ab");
    g = gzdopen(fileno(fa), "ab");
    gzwrite(g, raw + 16 + 4 * 784, 5 * 784);
    gzclose(g);
    rc = dataset_open(&ds, DATA_IDX, two, 28, 1);
    test_check(rc == 0 && idx_matches_pattern(ds, 9, 784), "two concatenated gzip members read as one (%s)",
               rc ? err_msg() : "ok");
    dataset_close(ds);
    ds = NULL;
    free(raw);
    /* A header claiming more than deflate can expand the file to: refused before allocating. */
    p = tmp_path("claims.idx.gz");
    write_idx(p, 0x803, 4000000u, 28, 28, 1, 0, 1);
    rc = dataset_open(&ds, DATA_IDX, p, 28, 1);
    test_check(rc == -1 && msg_has(p, "1032:1"), "gzip IDX claiming 4M images in a tiny file: %s", err_msg());
}

/* ---------- CIFAR-10 ---------- */

#define CREC 3073

static void write_cifar(const char *path, size_t first, size_t n, size_t extra, int bad_record, int bad_label) {
    uint8_t *buf = xcalloc(n * CREC + extra + 1, 1);
    for (size_t i = 0; i < n; i++) {
        buf[i * CREC] = (uint8_t)((first + i) % 10);
        if ((int)i == bad_record) buf[i * CREC] = (uint8_t)bad_label;
        for (size_t k = 0; k < 3072; k++) buf[i * CREC + 1 + k] = pattern(first + i, k);
    }
    write_bytes(path, buf, n * CREC + extra);
    free(buf);
}

static void test_cifar(void) {
    dataset *ds = NULL;
    const char *p = tmp_path("one.bin");
    write_cifar(p, 0, 7, 0, -1, 0);
    int rc = dataset_open(&ds, DATA_CIFAR10, p, 32, 3);
    test_check(rc == 0 && idx_matches_pattern(ds, 7, 3072), "CIFAR-10 single file: 7 records read back exactly (%s)",
               rc ? err_msg() : "ok");
    dataset_close(ds);
    ds = NULL;

    char dir[600];
    snprintf(dir, sizeof dir, "%s/cifar", g_tmp);
    mkdir(dir, 0755);
    size_t total = 0;
    for (int b = 1; b <= 5; b++) {
        char f[700];
        snprintf(f, sizeof f, "%s/data_batch_%d.bin", dir, b);
        write_cifar(f, total, (size_t)b + 1, 0, -1, 0);
        total += (size_t)b + 1;
    }
    rc = dataset_open(&ds, DATA_CIFAR10, dir, 32, 3);
    test_check(rc == 0 && idx_matches_pattern(ds, total, 3072),
               "CIFAR-10 folder: batches 1..5 concatenated in order, %zu records (%s)", total, rc ? err_msg() : "ok");
    dataset_close(ds);
    ds = NULL;

    char f3[700];
    snprintf(f3, sizeof f3, "%s/data_batch_3.bin", dir);
    unlink(f3);
    rc = dataset_open(&ds, DATA_CIFAR10, dir, 32, 3);
    test_check(rc == -1 && msg_has(f3, "cannot open"), "CIFAR-10 folder missing batch 3: %s", err_msg());

    p = tmp_path("trunc.bin");
    write_cifar(p, 0, 7, 100, -1, 0);
    rc = dataset_open(&ds, DATA_CIFAR10, p, 32, 3);
    test_check(rc == -1 && msg_has(p, "record 7 (byte offset 21511)"), "CIFAR-10 truncated batch: %s", err_msg());

    p = tmp_path("label.bin");
    write_cifar(p, 0, 7, 0, 4, 10);
    rc = dataset_open(&ds, DATA_CIFAR10, p, 32, 3);
    test_check(rc == -1 && msg_has(p, "record 4 (byte offset 12292): label 10"), "CIFAR-10 bad label: %s", err_msg());

    p = tmp_path("one.bin");
    rc = dataset_open(&ds, DATA_CIFAR10, p, 28, 1);
    test_check(rc == -1 && msg_has(p, "32x32x3"), "CIFAR-10 with the wrong shape asked: %s", err_msg());

    p = tmp_path("empty.bin");
    write_bytes(p, "", 0);
    rc = dataset_open(&ds, DATA_CIFAR10, p, 32, 3);
    test_check(rc == -1 && msg_has(p, "empty"), "CIFAR-10 empty file: %s", err_msg());
}

/* ---------- image folders ---------- */

static int write_jpeg(const char *path, const uint8_t *rgb, int w, int h) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 90, TRUE);
    jpeg_start_compress(&c, TRUE);
    for (int y = 0; y < h; y++) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)y * w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
    return 0;
}

static void test_folder(void) {
    dataset *ds = NULL;
    char dir[600], sub[700];
    snprintf(dir, sizeof dir, "%s/folder", g_tmp);
    mkdir(dir, 0755);
    int rc = dataset_open(&ds, DATA_IMAGE_FOLDER, dir, 16, 3);
    test_check(rc == -1 && msg_has(dir, "no .png/.jpg/.jpeg images"), "empty folder: %s", err_msg());

    snprintf(sub, sizeof sub, "%s/readme.txt", dir);
    write_bytes(sub, "hello\n", 6);
    rc = dataset_open(&ds, DATA_IMAGE_FOLDER, dir, 16, 3);
    test_check(rc == -1 && msg_has(dir, "no .png/.jpg/.jpeg images"), "folder with only a text file: %s", err_msg());

    /* Images already at the target size pass through untouched: compare to what we wrote. */
    uint8_t rgb[16 * 16 * 3], grey[16 * 16];
    for (int i = 0; i < 16 * 16 * 3; i++) rgb[i] = pattern(1, (size_t)i);
    for (int i = 0; i < 16 * 16; i++) grey[i] = pattern(2, (size_t)i);
    snprintf(sub, sizeof sub, "%s/b_rgb.png", dir);
    test_check(image_write_png(sub, rgb, 16, 16, 3) == 0, "write RGB PNG");
    mkdir(tmp_path("folder/a_sub"), 0755);
    test_check(image_write_png(tmp_path("folder/a_sub/grey.PNG"), grey, 16, 16, 1) == 0, "write grey PNG");
    rc = dataset_open(&ds, DATA_IMAGE_FOLDER, dir, 16, 3);
    int ok = rc == 0 && dataset_size(ds) == 2;
    uint8_t img[16 * 16 * 3];
    /* order: "a_sub" sorts before "b_rgb.png", so the grey image comes first */
    if (ok) ok = dataset_get(ds, 0, img) == 0;
    for (int c = 0; ok && c < 3; c++)
        for (int p = 0; p < 256; p++) ok &= img[c * 256 + p] == grey[p];
    if (ok) ok = dataset_get(ds, 1, img) == 0;
    for (int c = 0; ok && c < 3; c++)
        for (int p = 0; p < 256; p++) ok &= img[c * 256 + p] == rgb[p * 3 + c];
    test_check(ok, "folder at target size: 2 images in sorted order, CHW bytes equal the written pixels (%s)",
               rc ? err_msg() : "ok");
    ok = ds && dataset_get(ds, 2, img) == -1 && msg_has("index 2 out of range", NULL);
    test_check(ok, "dataset_get out of range: %s", err_msg());
    dataset_close(ds);
    ds = NULL;

    rc = dataset_open(&ds, DATA_IMAGE_FOLDER, dir, 16, 2);
    test_check(rc == -1 && msg_has(dir, "1 or 3 channels"), "folder with 2 channels asked: %s", err_msg());

    /* A PNG cut short, a PNG signature followed by garbage, a JPEG cut short and
     * JPEG garbage: each must be reported with its file name. */
    size_t n;
    uint8_t *png = read_bytes(sub, &n);
    const char *bad = tmp_path("folder/c_trunc.png");
    write_bytes(bad, png, n / 2);
    rc = dataset_open(&ds, DATA_IMAGE_FOLDER, dir, 16, 3);
    test_check(rc == -1 && msg_has(bad, "corrupt PNG") && msg_has("image 2", NULL), "truncated PNG: %s", err_msg());
    unlink(bad);
    memset(png + 8, 0xA5, n - 8);
    bad = tmp_path("folder/c_garbage.png");
    write_bytes(bad, png, n);
    rc = dataset_open(&ds, DATA_IMAGE_FOLDER, dir, 16, 3);
    test_check(rc == -1 && msg_has(bad, "corrupt PNG"), "corrupt PNG: %s", err_msg());
    unlink(bad);
    free(png);

    uint8_t photo[40 * 30 * 3];
    for (int i = 0; i < 40 * 30 * 3; i++) photo[i] = pattern(3, (size_t)i);
    const char *jp = tmp_path("folder/d_photo.jpg");
    write_jpeg(jp, photo, 40, 30);
    rc = dataset_open(&ds, DATA_IMAGE_FOLDER, dir, 16, 3);
    test_check(rc == 0 && dataset_size(ds) == 3, "valid JPEG decodes (%s)", rc ? err_msg() : "ok");
    dataset_close(ds);
    ds = NULL;
    uint8_t *jpg = read_bytes(jp, &n);
    write_bytes(jp, jpg, n * 2 / 3);
    rc = dataset_open(&ds, DATA_IMAGE_FOLDER, dir, 16, 3);
    test_check(rc == -1 && msg_has(jp, "corrupt JPEG"), "truncated JPEG: %s", err_msg());
    memset(jpg + 3, 0x00, n - 3);
    write_bytes(jp, jpg, n);
    rc = dataset_open(&ds, DATA_IMAGE_FOLDER, dir, 16, 3);
    test_check(rc == -1 && msg_has(jp, "corrupt JPEG"), "corrupt JPEG: %s", err_msg());
    write_bytes(jp, "just text", 9);
    rc = dataset_open(&ds, DATA_IMAGE_FOLDER, dir, 16, 3);
    test_check(rc == -1 && msg_has(jp, "not a PNG, JPEG or WebP"), "text file named .jpg: %s", err_msg());
    free(jpg);
    unlink(jp);

    const char *missing = tmp_path("no-such-folder");
    rc = dataset_open(&ds, DATA_IMAGE_FOLDER, missing, 16, 3);
    test_check(rc == -1 && msg_has(missing, NULL), "missing folder: %s", err_msg());
    rc = dataset_open(&ds, DATA_SHARDS, dir, 16, 3);
    test_check(rc == -1 && msg_has("manifest.txt", "ddpm-prep"), "shards format on a folder without a manifest: %s", err_msg());
}

/* ---------- hostile images (issue #14 row 6) ---------- */

static void put_be16(uint8_t *p, unsigned v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Offset of the first FF `m` marker (0 if none). */
static size_t find_marker(const uint8_t *d, size_t n, uint8_t m, size_t from) {
    for (size_t i = from; i + 1 < n; i++)
        if (d[i] == 0xff && d[i + 1] == m) return i;
    return 0;
}

/* A JPEG written with one scan per component (non-interleaved sequential). */
static int write_jpeg_scans(const char *path, const uint8_t *rgb, int w, int h) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    static jpeg_scan_info scans[3];
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    for (int k = 0; k < 3; k++) {
        scans[k].comps_in_scan = 1;
        scans[k].component_index[0] = k;
        scans[k].Ss = 0;
        scans[k].Se = 63;
        scans[k].Ah = scans[k].Al = 0;
    }
    c.scan_info = scans;
    c.num_scans = 3;
    jpeg_start_compress(&c, TRUE);
    for (int y = 0; y < h; y++) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)y * w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(f);
    return 0;
}

/* Decodes `path`; returns 1 when it is refused with a message holding `want`,
 * within a second (the declared image is never decoded or allocated). */
static int refused_fast(const char *path, const char *want) {
    uint8_t *rgb = NULL;
    int w, h;
    double t0 = now_seconds();
    int rc = image_load_rgb(path, &rgb, &w, &h);
    double dt = now_seconds() - t0;
    if (rc == 0) free(rgb);
    return rc == -1 && msg_has(path, want) && dt < 1.0;
}

static void test_hostile_images(void) {
    uint8_t photo[40 * 32 * 3];
    for (int i = 0; i < 40 * 32 * 3; i++) photo[i] = pattern(5, (size_t)i) ^ (uint8_t)(i * i);
    const char *jp = tmp_path("small.jpg");
    write_jpeg(jp, photo, 40, 32);
    size_t n;
    uint8_t *jpg = read_bytes(jp, &n);
    size_t sof = find_marker(jpg, n, 0xc0, 2);
    test_check(sof > 0, "test JPEG has a baseline SOF");

    /* Row 6: a small JPEG whose SOF says 16384x16384 (2^28 pixels) and whose data
     * ends early but with an EOI: it used to allocate 790 MB, decode for 5-12 s and
     * return a grey image. */
    put_be16(jpg + sof + 5, 16384);
    put_be16(jpg + sof + 7, 16384);
    const char *p = tmp_path("row6.jpg");
    write_bytes(p, jpg, n);
    test_check(refused_fast(p, "JPEG image 16384x16384 is too large"), "row 6: 16384x16384 JPEG of %zu bytes: %s", n,
               err_msg());
    /* Under the pixel limit, the coded-size floor refuses it. */
    put_be16(jpg + sof + 5, 8192);
    put_be16(jpg + sof + 7, 8192);
    p = tmp_path("floor.jpg");
    write_bytes(p, jpg, n);
    test_check(refused_fast(p, "needs at least 196608 bytes"), "8192x8192 JPEG of %zu bytes: %s", n, err_msg());
    free(jpg);

    /* Entropy data cut, EOI kept: libjpeg only warns and fills grey. */
    jpg = read_bytes(jp, &n);
    size_t sos = find_marker(jpg, n, 0xda, 2);
    size_t cut = sos + (n - sos) / 2;
    jpg[cut] = 0xff;
    jpg[cut + 1] = 0xd9;
    p = tmp_path("grey.jpg");
    write_bytes(p, jpg, cut + 2);
    test_check(refused_fast(p, "premature end of data segment"), "JPEG with cut data and an EOI refused: %s",
               err_msg());
    free(jpg);

    /* One scan per component; the last scan removed: component 2 would be grey. */
    p = tmp_path("scans.jpg");
    write_jpeg_scans(p, photo, 40, 32);
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    int rc = image_load_rgb(p, &rgb, &w, &h);
    test_check(rc == 0 && w == 40 && h == 32, "JPEG with one scan per component decodes (%s)", rc ? err_msg() : "ok");
    free(rgb);
    jpg = read_bytes(p, &n);
    size_t s3 = find_marker(jpg, n, 0xda, find_marker(jpg, n, 0xda, find_marker(jpg, n, 0xda, 2) + 2) + 2);
    test_check(s3 > 0, "three scans found");
    jpg[s3 + 1] = 0xd9;
    p = tmp_path("two_scans.jpg");
    write_bytes(p, jpg, s3 + 2);
    test_check(refused_fast(p, "no data for component 2"), "JPEG missing its last component's scan: %s", err_msg());
    free(jpg);

    /* PNG: IHDR declaring more than the limit, and more than deflate can expand the file to. */
    uint8_t grey[16 * 16];
    memset(grey, 7, sizeof grey);
    const char *pp = tmp_path("small.png");
    image_write_png(pp, grey, 16, 16, 1);
    uint8_t *png = read_bytes(pp, &n);
    const uint32_t dims[2][2] = {{20000, 20000}, {8000, 8000}};
    const char *want[2] = {"PNG image 20000x20000 is too large", "deflate's limit is 1032:1"};
    for (int k = 0; k < 2; k++) {
        put_be32(png + 16, dims[k][0]);
        put_be32(png + 20, dims[k][1]);
        put_be32(png + 29, (uint32_t)crc32(0, png + 12, 17)); /* IHDR's CRC over type and data */
        p = tmp_path(k ? "floor.png" : "huge.png");
        write_bytes(p, png, n);
        test_check(refused_fast(p, want[k]), "PNG declaring %ux%u in %zu bytes: %s", dims[k][0], dims[k][1], n,
                   err_msg());
    }
    free(png);

    /* A 65535x1 PNG of ~100 bytes: center_crop to 64 would build a 4194240x64 image. */
    uint8_t *row = xcalloc(65535, 1);
    p = tmp_path("thin.png");
    image_write_png(p, row, 65535, 1, 1);
    free(row);
    uint8_t chw[64 * 64 * 3];
    double t0 = now_seconds();
    rc = image_preprocess_file(p, 64, 3, chw);
    test_check(rc == -1 && msg_has(p, "aspect ratio") && now_seconds() - t0 < 1.0, "65535x1 PNG to 64x64: %s",
               err_msg());

    /* A FIFO named like an image is refused, not waited on. */
    p = tmp_path("fifo.png");
    if (mkfifo(p, 0600) == 0)
        test_check(refused_fast(p, "not a regular file"), "FIFO given as an image: %s", err_msg());
}

/* ---------- concurrent readers ---------- */

typedef struct {
    const dataset *ds;
    int ok;
} reader_arg;

static void *reader(void *p) {
    reader_arg *a = p;
    uint8_t img[784];
    a->ok = 1;
    for (int round = 0; round < 50; round++)
        for (size_t i = 0; i < dataset_size(a->ds); i++) {
            if (dataset_get(a->ds, i, img) != 0) a->ok = 0;
            for (size_t k = 0; k < 784; k++) a->ok &= img[k] == pattern(i, k);
        }
    return NULL;
}

static void test_threads(void) {
    dataset *ds;
    if (dataset_open(&ds, DATA_IDX, tmp_path("valid.idx.gz"), 28, 1) != 0) {
        test_check(0, "reopen valid.idx.gz: %s", err_msg());
        return;
    }
    pthread_t t[4];
    reader_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i].ds = ds;
        pthread_create(&t[i], NULL, reader, &a[i]);
    }
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ok &= a[i].ok;
    }
    test_check(ok, "4 concurrent readers see the right bytes");
    dataset_close(ds);
}

/* ---------- float conversion ---------- */

static void test_to_float(void) {
    uint8_t v[256];
    float x[256];
    for (int i = 0; i < 256; i++) v[i] = (uint8_t)i;
    dataset_to_float(x, v, 1, 1, 16, NULL);
    double maxerr = 0;
    for (int i = 0; i < 256; i++) {
        double e = fabs((double)x[i] - (i / 127.5 - 1.0));
        if (e > maxerr) maxerr = e;
    }
    test_check(maxerr < 2e-7 && x[0] == -1.0f && x[255] == 1.0f,
               "to_float: all 256 values within %.1e of v/127.5-1, endpoints exactly -1 and 1", maxerr);

    enum { N = 3, C = 2, S = 5 };
    uint8_t u[N * C * S * S];
    float y[N * C * S * S];
    for (int i = 0; i < N * C * S * S; i++) u[i] = (uint8_t)(i * 37 + 11);
    const uint8_t flip[N] = {0, 1, 0};
    dataset_to_float(y, u, N, C, S, flip);
    int ok = 1;
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++)
            for (int r = 0; r < S; r++)
                for (int q = 0; q < S; q++) {
                    int src = flip[i] ? S - 1 - q : q;
                    double want = u[((i * C + c) * S + r) * S + src] / 127.5 - 1.0;
                    ok &= fabs(y[((i * C + c) * S + r) * S + q] - want) < 2e-7;
                }
    test_check(ok, "to_float flips exactly the images with flip[i] != 0, along the width");
}

/* ---------- output errors ---------- */

static void test_output_errors(void) {
    uint8_t px[12] = {0};
    int shape[2] = {3, 4}, rc;
    const char *p = tmp_path("no-dir/x.png");
    test_check(image_write_png(p, px, 2, 2, 3) == -1 && msg_has("no-dir/x.png", NULL), "PNG into a missing folder: %s",
               err_msg());
    test_check(image_write_png(tmp_path("x.png"), px, 2, 2, 2) == -1 && msg_has("channels", NULL),
               "PNG with 2 channels refused: %s", err_msg());
    p = tmp_path("no-dir/x.npz");
    test_check(npz_write_uint8(p, "arr_0", px, shape, 2) == -1 && msg_has("no-dir/x.npz", NULL),
               "npz into a missing folder: %s", err_msg());
    p = tmp_path("ok.npz");
    rc = npz_write_uint8(p, "arr_0", px, shape, 2);
    test_check(rc == 0 && access(p, F_OK) == 0, "npz written where asked (%s)", rc ? err_msg() : "ok");
}

/* Class labels: IDX label files (plain and gzip, the count against the images,
 * refusals), CIFAR-10's bytes with the batch file named in a range error, and the
 * image-folder convention (prefix before the first '_', sorted). */
static void test_labels(void) {
    uint8_t lab[8 + 5] = {0, 0, 8, 1, 0, 0, 0, 5, 3, 0, 9, 1, 4};
    const char *lp = tmp_path("labels5"), *ip = tmp_path("images5");
    write_bytes(lp, lab, sizeof lab);
    write_idx(ip, 0x803, 5, 28, 28, 5, 0, 0);
    dataset *ds = NULL;
    int rc = dataset_open(&ds, DATA_IDX, ip, 28, 1);
    test_check(rc == 0 && !dataset_has_labels(ds) && dataset_label(ds, 0) == -1,
               "IDX images alone have no labels");
    rc = rc ? rc : dataset_load_labels(ds, lp);
    test_check(rc == 0 && dataset_has_labels(ds) && dataset_label(ds, 0) == 3 &&
                   dataset_label(ds, 2) == 9 && dataset_label(ds, 4) == 4,
               "IDX label file read (%s)", rc ? err_msg() : "ok");
    test_check(dataset_check_labels(ds, 10) == 0, "labels within 10 classes pass");
    test_check(dataset_check_labels(ds, 9) != 0 && msg_has(err_msg(), "labels5: record 2: label 9") &&
                   msg_has(err_msg(), "out of range for model.num_classes 9"),
               "label 9 of 9 classes refused naming file and record: %s", err_msg());
    /* gzip, and a count that differs from the images' */
    uint8_t gz[256];
    uLongf gl = sizeof gz;
    compress2(gz, &gl, lab, sizeof lab, 9); /* zlib, not gzip: must be refused */
    const char *zp = tmp_path("labels_zlib");
    write_bytes(zp, gz, gl);
    test_check(dataset_load_labels(ds, zp) != 0 && msg_has(err_msg(), "labels_zlib: bad magic"),
               "a non-IDX label file refused: %s", err_msg());
    const char *gp = tmp_path("labels5.gz");
    gzFile g = gzopen(gp, "wb");
    gzwrite(g, lab, sizeof lab);
    gzclose(g);
    test_check(dataset_load_labels(ds, gp) == 0 && dataset_label(ds, 2) == 9,
               "a gzip IDX label file read (%s)", err_msg());
    uint8_t lab3[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3};
    const char *l3 = tmp_path("labels3");
    write_bytes(l3, lab3, sizeof lab3);
    test_check(dataset_load_labels(ds, l3) != 0 && msg_has(err_msg(), "holds 3 labels but the images"),
               "a label file of another count refused: %s", err_msg());
    uint8_t lab_short[8 + 2] = {0, 0, 8, 1, 0, 0, 0, 5, 1, 2};
    const char *ls = tmp_path("labels_short");
    write_bytes(ls, lab_short, sizeof lab_short);
    test_check(dataset_load_labels(ds, ls) != 0 && msg_has(err_msg(), "truncated"),
               "a truncated label file refused: %s", err_msg());
    dataset_close(ds);
    ds = NULL;

    /* CIFAR-10: record i has label i % 10 (write_cifar); a folder's batch 2 named */
    char dir[600];
    snprintf(dir, sizeof dir, "%s/cifar_lab", g_tmp);
    mkdir(dir, 0755);
    for (int b = 1; b <= 5; b++) {
        char f[700];
        snprintf(f, sizeof f, "%s/data_batch_%d.bin", dir, b);
        write_cifar(f, (size_t)(b - 1) * 3, 3, 0, -1, 0);
    }
    rc = dataset_open(&ds, DATA_CIFAR10, dir, 32, 3);
    test_check(rc == 0 && dataset_has_labels(ds) && dataset_label(ds, 4) == 4 &&
                   dataset_label(ds, 14) == 4, "CIFAR-10 labels are the record bytes");
    test_check(rc == 0 && dataset_check_labels(ds, 5) != 0 &&
                   msg_has(err_msg(), "data_batch_2.bin: record 2: label 5"),
               "CIFAR-10 label out of range names the batch file and record: %s", err_msg());
    test_check(rc == 0 && dataset_load_labels(ds, lp) != 0 && msg_has(err_msg(), "only IDX"),
               "a label file for CIFAR-10 refused: %s", err_msg());
    dataset_close(ds);

    /* the folder convention, as guided-diffusion's class_cond */
    char *paths[] = {"a/dog_1.png", "b/cat_x_y.jpg", "c/ant.png", "dog_2.png", "cat_.png"};
    int32_t *labels = NULL;
    char **names = NULL;
    size_t *first = NULL, nn = 0;
    rc = image_folder_classes(paths, 5, &labels, &names, &first, &nn);
    test_check(rc == 0 && nn == 3 && !strcmp(names[0], "ant.png") && !strcmp(names[1], "cat") &&
                   !strcmp(names[2], "dog") && labels[0] == 2 && labels[1] == 1 && labels[2] == 0 &&
                   labels[3] == 2 && labels[4] == 1 && first[2] == 0 && first[1] == 1,
               "folder classes: prefix before the first '_', sorted (ant.png, cat, dog)");
    image_folder_classes_free(labels, names, first, nn);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/test_data.XXXXXX", getenv("DDPM_TEST_TMP") ? getenv("DDPM_TEST_TMP") : "/tmp");
    if (!mkdtemp(g_tmp)) {
        printf("not ok - mkdtemp %s: %s\n", g_tmp, strerror(errno));
        return 1;
    }
    size_t train_idx[] = {0, 1, 12345, 59999}, test_idx[] = {0, 9999};
    check_real_idx("train-images-idx3-ubyte.gz", 60000, train_idx, 4);
    check_real_idx("t10k-images-idx3-ubyte.gz", 10000, test_idx, 2);
    test_idx_synthetic();
    test_cifar();
    test_folder();
    test_hostile_images();
    test_threads();
    test_to_float();
    test_output_errors();
    test_labels();
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) printf("# could not remove %s\n", g_tmp);
    return test_done();
}
