/* Writes the valid seed inputs of the wire fuzz targets (valid_* files) into
 * DIR/fuzz_wire_{work,push,decode}/ (default DIR: tests/fuzz_corpus). The corpus
 * replay test requires every valid_* file to be accepted. Usage: gen_seeds [DIR] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"
#include "common/wire/wire.h"

static const char *root = "tests/fuzz_corpus";

static void put(const char *target, const char *name, const uint8_t *b, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "gen_seeds: cannot write %s\n", path);
        exit(1);
    }
}

static void work_seed(const char *name, int n, uint32_t total, int stop) {
    uint64_t ids[64];
    uint32_t idx[64];
    int t[64];
    uint8_t fl[64];
    for (int i = 0; i < n; i++) {
        ids[i] = 5000 + (uint64_t)i * 7;
        idx[i] = (uint32_t)(i * 937) % 60000u;
        t[i] = (i * 61) % 1000;
        fl[i] = (uint8_t)(i & 1);
    }
    wire_work w = {.step = 9, .seed = 1234, .total_batch = total, .stop = stop, .n = n,
                   .sample_ids = n ? ids : NULL, .indices = n ? idx : NULL, .t = n ? t : NULL, .flip = n ? fl : NULL};
    uint8_t *buf;
    size_t len;
    if (wire_work_pack(&w, &buf, &len)) { fprintf(stderr, "gen_seeds: %s\n", err_msg()); exit(1); }
    put("fuzz_wire_work", name, buf, len);
    free(buf);
}

static void fill(float *g, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = (float)(1e-3 * sin(0.37 * (double)i) * (1 + (double)(i % 5)));
}

int main(int argc, char **argv) {
    if (argc > 1) root = argv[1];
    wire_ctx *c = wire_ctx_create();
    if (!c) { fprintf(stderr, "gen_seeds: %s\n", err_msg()); return 1; }

    work_seed("valid_16", 16, 64, 0);
    work_seed("valid_64", 64, 64, 0);
    work_seed("valid_empty_share", 0, 8, 0);
    work_seed("valid_stop", 0, 0, 1);

    static const uint32_t chunk[3] = {0, 2, 2};
    static const uint64_t count[3] = {1000, 500, 500};
    static const uint64_t offset[3] = {0, 3000, 3000};
    static const char *push_names[3] = {"valid_fp32", "valid_fp32_zstd", "valid_bf16_stats"};
    float g[1000], res[1000];
    for (int codec = 0; codec < 3; codec++) {
        fill(g, count[codec]);
        memset(res, 0, sizeof res);
        const uint8_t *out;
        size_t olen;
        if (wire_encode(c, codec, 1, g, res, count[codec], &out, &olen)) { fprintf(stderr, "%s\n", err_msg()); return 1; }
        wire_push p = {.step = 9, .worker = 3, .chunk = chunk[codec], .offset = offset[codec], .count = count[codec],
                       .codec = codec, .data = out, .data_len = olen, .raw_bytes = 4 * count[codec],
                       .bytes_raw_total = 4000, .bytes_sent_total = olen};
        if (codec == CODEC_BF16_ZSTD) {
            p.has_stats = 1;
            p.loss_sum = 2.5;
            p.mse_sum = 2.25;
            p.vb_sum = 0.25;
            for (int q = 0; q < 4; q++) { p.q_sum[q] = 0.5 + q; p.q_count[q] = (uint64_t)q; }
            p.n_samples = 6;
        }
        uint8_t *buf;
        size_t len;
        if (wire_push_pack(&p, &buf, &len)) { fprintf(stderr, "%s\n", err_msg()); return 1; }
        put("fuzz_wire_push", push_names[codec], buf, len);
        free(buf);
    }

    /* decode mode: [codec][n lo][n hi][payload]; encode mode: [0x80|codec][level][0][floats] */
    static const char *dec_names[3] = {"valid_dec_fp32", "valid_dec_fp32_zstd", "valid_dec_bf16"};
    static const char *enc_names[3] = {"valid_enc_fp32", "valid_enc_fp32_zstd", "valid_enc_bf16"};
    uint8_t buf[3 + 4 * 1000 + 64];
    for (int codec = 0; codec < 3; codec++) {
        size_t n = 100;
        fill(g, n);
        memset(res, 0, sizeof res);
        const uint8_t *out;
        size_t olen;
        if (wire_encode(c, codec, 1, g, res, n, &out, &olen)) { fprintf(stderr, "%s\n", err_msg()); return 1; }
        buf[0] = (uint8_t)codec; buf[1] = (uint8_t)n; buf[2] = 0;
        memcpy(buf + 3, out, olen);
        put("fuzz_wire_decode", dec_names[codec], buf, 3 + olen);
        buf[0] = (uint8_t)(0x80 | codec); buf[1] = 0; buf[2] = 0;
        memcpy(buf + 3, g, 4 * 16);
        put("fuzz_wire_decode", enc_names[codec], buf, 3 + 4 * 16);
    }
    wire_ctx_free(c);
    return 0;
}
