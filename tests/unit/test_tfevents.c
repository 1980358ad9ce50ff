/* CRC-32C against published vectors, the TFRecord framing of event files, the
 * grid's nearest-neighbour scaling and the in-memory PNG encoder. The event
 * messages themselves are decoded by an independent Python reader
 * (tests/integration/test_tensorboard.sh, tests/tools/tfevents_read.py). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/core/crc32c.h"
#include "common/core/util.h"
#include "common/io/image_io.h"
#include "common/io/jsonl_steps.h"
#include "common/io/tfevents.h"
#include "test.h"

static void test_crc32c_vectors(void) {
    /* RFC 3720 (iSCSI) appendix B.4, and the "123456789" check value */
    uint8_t buf[32];
    test_check(crc32c(0, "123456789", 9) == 0xE3069283u, "crc32c(\"123456789\") = 0xE3069283");
    memset(buf, 0, sizeof buf);
    test_check(crc32c(0, buf, 32) == 0x8A9136AAu, "crc32c(32 zero bytes) = 0x8A9136AA");
    memset(buf, 0xff, sizeof buf);
    test_check(crc32c(0, buf, 32) == 0x62A8AB43u, "crc32c(32 0xFF bytes) = 0x62A8AB43");
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
    test_check(crc32c(0, buf, 32) == 0x46DD794Eu, "crc32c(0..31) = 0x46DD794E");
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)(31 - i);
    test_check(crc32c(0, buf, 32) == 0x113FDB5Cu, "crc32c(31..0) = 0x113FDB5C");
    test_check(crc32c(crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u,
               "crc32c continues over split input");
    test_check(crc32c(0, "", 0) == 0, "crc32c of nothing is 0");
    /* mask: rotate right by 15, add the constant */
    test_check(crc32c_mask(0) == 0xa282ead8u && crc32c_mask(1) == 0xa284ead8u,
               "masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8");
}

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void test_record_framing(void) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    const uint8_t data[5] = {1, 2, 3, 4, 5};
    int rc = tfevents_write_record(f, "mem", data, sizeof data);
    fclose(f);
    const uint8_t *p = (const uint8_t *)buf;
    uint8_t len_bytes[8] = {5, 0, 0, 0, 0, 0, 0, 0};
    test_check(rc == 0 && n == 8 + 4 + 5 + 4, "record of 5 bytes takes 21 bytes (%zu)", n);
    test_check(n == 21 && memcmp(p, len_bytes, 8) == 0 &&
                   get32(p + 8) == crc32c_mask(crc32c(0, len_bytes, 8)) &&
                   memcmp(p + 12, data, 5) == 0 && get32(p + 17) == crc32c_mask(crc32c(0, data, 5)),
               "record: length LE, masked CRC of the length, data, masked CRC of the data");
    free(buf);
}

static void test_open_names(void) {
    char dir[] = "/tmp/test_tfevents_XXXXXX";
    if (!mkdtemp(dir)) return;
    tfevents a, b;
    int ra = tfevents_open(&a, dir), rb = tfevents_open(&b, dir);
    test_check(ra == 0 && rb == 0 && strcmp(a.path, b.path) != 0 && strstr(a.path, "/events.out.tfevents."),
               "two writers in one folder and second get two files (%s, %s)", ra ? "" : a.path,
               rb ? "" : b.path);
    if (ra == 0) {
        test_check(tfevents_scalars(&a, 3, (const char *const[]){"loss"}, (double[]){0.5}, 1) == 0 &&
                       tfevents_session_start(&a, 4) == 0 && tfevents_flush(&a) == 0,
                   "scalars and a session start are written");
        unlink(a.path);
    }
    if (rb == 0) unlink(b.path);
    tfevents_close(&a);
    tfevents_close(&b);
    tfevents bad;
    int rbad = tfevents_open(&bad, "/nonexistent/dir");
    test_check(rbad != 0 && strstr(err_msg(), "/nonexistent/dir"),
               "a folder that does not exist is refused by name: %s", err_msg());
    rmdir(dir);
}

static void test_grid_scale(void) {
    /* 3 grey 2x2 images in 2 columns: grid 10 x 10; scaled 3 times: 30 x 30 */
    uint8_t imgs[12];
    for (int i = 0; i < 12; i++) imgs[i] = (uint8_t)(20 * i + 1);
    int w1, h1, w3, h3;
    uint8_t *g1 = image_grid_make("g", imgs, 3, 2, 1, 2, 1, &w1, &h1);
    uint8_t *g3 = image_grid_make("g", imgs, 3, 2, 1, 2, 3, &w3, &h3);
    int same = g1 && g3 && w3 == 3 * w1 && h3 == 3 * h1;
    for (int y = 0; same && y < h3; y++)
        for (int x = 0; x < w3; x++) same = same && g3[y * w3 + x] == g1[(y / 3) * w1 + x / 3];
    test_check(same, "grid scaled 3x is the grid with each pixel a 3x3 block (%dx%d -> %dx%d)", w1,
               h1, w3, h3);
    free(g1);
    free(g3);
    int w, h;
    test_check(!image_grid_make("g", imgs, 3, 2, 1, 2, 0, &w, &h) &&
                   !image_grid_make("g", imgs, 3, 2, 1, 2, IMAGE_MAX_GRID_SCALE + 1, &w, &h),
               "scale 0 and scale above the maximum are refused");
    test_check(image_grid_scale_for(122, 512) == 5 && image_grid_scale_for(138, 512) == 4 &&
                   image_grid_scale_for(1034, 512) == 1 && image_grid_scale_for(512, 512) == 1,
               "smallest scale reaching 512 px: 122 -> 5, 138 -> 4, 1034 -> 1");
}

static void test_png_memory(void) {
    uint8_t rgb[2 * 3 * 3];
    for (int i = 0; i < 18; i++) rgb[i] = (uint8_t)(i * 13);
    uint8_t *png = NULL, *back = NULL;
    size_t len = 0;
    int w = 0, h = 0;
    int ok = image_encode_png(rgb, 3, 2, 3, &png, &len) == 0 && len > 8 &&
             memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0 &&
             image_decode_rgb(png, len, "mem", &back, &w, &h) == 0 && w == 3 && h == 2 &&
             memcmp(back, rgb, sizeof rgb) == 0;
    test_check(ok, "PNG encoded in memory decodes back to the same pixels");
    free(png);
    free(back);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 4096);
    size_t n = fread(buf, 1, 4095, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void test_jsonl_resume(void) {
    char path[] = "/tmp/test_jsonl_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return;
    const char *in = "{\"step\": 1, \"loss\": 1}\n{\"step\": 2, \"loss\": 0.9}\n"
                     "{\"step\": 2, \"eval_bpd\": 7}\nnot a metrics line\n"
                     "{\"step\": 3, \"loss\": 0.8}\n{\"step\":12}\n{\"step\": 4, \"lo";
    if (write(fd, in, strlen(in)) != (ssize_t)strlen(in)) return;
    close(fd);
    long dropped = -1;
    int rc = jsonl_drop_after_step(path, 2, &dropped);
    char *out = slurp(path);
    test_check(rc == 0 && dropped == 3 && out &&
                   strcmp(out, "{\"step\": 1, \"loss\": 1}\n{\"step\": 2, \"loss\": 0.9}\n"
                               "{\"step\": 2, \"eval_bpd\": 7}\nnot a metrics line\n") == 0,
               "metrics.jsonl from step 2: steps 3 and 12 and the torn last line removed, other lines kept "
               "(dropped %ld)", dropped);
    free(out);
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *stale = fopen(tmp, "wb");
    if (stale) fclose(stale);
    rc = jsonl_drop_after_step(path, 2, &dropped);
    test_check(rc == 0 && dropped == 0 && access(tmp, F_OK) != 0,
               "nothing more to remove: the file is left as it is, a stale .tmp of a killed rewrite removed");
    unlink(path);
    test_check(jsonl_drop_after_step(path, 0, &dropped) == 0 && dropped == 0,
               "a missing metrics.jsonl is no error (a fresh run)");
    uint64_t st = 99;
    test_check(jsonl_line_step("{\"step\": 18446744073709551615}", &st) && st == UINT64_MAX &&
                   !jsonl_line_step("{\"step\": 18446744073709551616}", &st) &&
                   !jsonl_line_step("{\"step\": -1}", &st) && !jsonl_line_step("{\"steps\": 1}", &st),
               "a line's step: up to 2^64-1; overflow, negative and other keys are no step");
}

int main(void) {
    test_crc32c_vectors();
    test_record_framing();
    test_open_names();
    test_grid_scale();
    test_png_memory();
    test_jsonl_resume();
    return test_done();
}
