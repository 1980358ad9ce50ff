/* Writes the seed corpus of fuzz/fuzz_ckpt.c (run from the repository root):
 *   ckpt_fuzz_seeds tests/fuzz_corpus/fuzz_ckpt
 * valid_* files are small real checkpoints from ckpt_write (the config text of
 * configs/tiny_fashion.yaml, a few tensors; one of two chunks of zeros); bad_* are
 * damaged copies: truncated, a flipped byte, header only, data after the end,
 * empty, not zstd. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common/ckpt/checkpoint.h"
#include "common/config/config.h"
#include "common/core/util.h"

static const char *g_dir;

static void put(const char *name, const void *b, size_t n) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f)) {
        perror(p);
        exit(1);
    }
}

static uint8_t *slurp(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) {
        perror(p);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = xmalloc(*n + 1);
    if (fread(b, 1, *n, f) != *n) exit(1);
    fclose(f);
    return b;
}

/* Writes a checkpoint with ckpt_write into g_dir and renames it to name. */
static void ckpt(const char *name, ckpt_header *h, const float *p, const float *e, const float *m, const float *v) {
    char path[4096], dst[4096];
    if (ckpt_write(g_dir, h, p, e, m, v, path, sizeof path)) {
        fprintf(stderr, "%s\n", err_msg());
        exit(1);
    }
    snprintf(dst, sizeof dst, "%s/%s", g_dir, name);
    if (rename(path, dst)) exit(1);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    config cfg;
    if (config_load_file(&cfg, "configs/tiny_fashion.yaml")) {
        fprintf(stderr, "%s\n", err_msg());
        return 1;
    }
    char *yaml = config_to_yaml(&cfg);
    ckpt_tensor t[3] = {{"in.w", 4, {2, 1, 3, 3}, 0, 18}, {"in.b", 1, {2}, 18, 2}, {"t", 0, {0}, 20, 1}};
    ckpt_header h;
    memset(&h, 0, sizeof h);
    h.config_yaml = yaml;
    h.step = 5;
    h.seed = 1;
    h.data_epoch = 0;
    h.data_position = 40;
    h.world_size = h.servers = h.workers = 1;
    h.n_params = 21;
    h.n_tensors = 3;
    h.tensors = t;
    float w[21];
    for (int i = 0; i < 21; i++) w[i] = (float)(i % 7 - 3) * 0.125f;
    ckpt("valid_train.ddpm", &h, w, w, w, w);
    ckpt("valid_ema.ddpm", &h, NULL, w, NULL, NULL);
    h.n_tensors = 0;
    h.config_yaml = NULL;
    ckpt("valid_params_no_tensors.ddpm", &h, w, NULL, NULL, NULL);
    /* two chunks (zeros compress to a few hundred bytes) */
    uint64_t big = CKPT_CHUNK_FLOATS + 3;
    float *z = calloc(big, sizeof *z);
    ckpt_tensor tb = {"all", 1, {(int64_t)big}, 0, big};
    h.n_params = big;
    h.n_tensors = 1;
    h.tensors = &tb;
    ckpt("valid_two_chunks.ddpm", &h, NULL, z, NULL, NULL);
    free(z);

    char p[4096];
    snprintf(p, sizeof p, "%s/valid_train.ddpm", g_dir);
    size_t n;
    uint8_t *b = slurp(p, &n);
    put("bad_truncated_half.ddpm", b, n / 2);
    put("bad_truncated_last_byte.ddpm", b, n - 1);
    uint8_t *c = xmalloc(n + 64);
    memcpy(c, b, n);
    c[n / 2] ^= 0x20;
    put("bad_flipped.ddpm", c, n);
    memcpy(c, b, n);
    size_t extra = ZSTD_compress(c + n, 64, "x", 1, 1);
    put("bad_trailing_frame.ddpm", c, n + extra);
    put("bad_empty.ddpm", "", 0);
    put("bad_not_zstd.ddpm", "ddpm-checkpoint\n", 16);
    /* the header record alone, in a complete zstd frame */
    size_t dn = (size_t)ZSTD_getFrameContentSize(b, n);
    if (dn == ZSTD_CONTENTSIZE_UNKNOWN || dn == ZSTD_CONTENTSIZE_ERROR) dn = 1 << 16;
    uint8_t *d = xmalloc(dn);
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    ZSTD_inBuffer in = {b, n, 0};
    ZSTD_outBuffer out = {d, dn, 0};
    ZSTD_decompressStream(dc, &out, &in);
    ZSTD_freeDCtx(dc);
    uint64_t len = 0;
    size_t k = 0;
    for (int s = 0; k < out.pos; s += 7) {
        len |= (uint64_t)(d[k] & 0x7f) << s;
        if (!(d[k++] & 0x80)) break;
    }
    size_t hn = k + (size_t)len;
    uint8_t *hz = xmalloc(ZSTD_compressBound(hn));
    size_t zn = ZSTD_compress(hz, ZSTD_compressBound(hn), d, hn, 3);
    put("bad_header_only.ddpm", hz, zn);
    /* a record length past the header's limit, right at the start */
    uint8_t lenbomb[] = {0xff, 0xff, 0xff, 0xff, 0x7f};
    zn = ZSTD_compress(hz, ZSTD_compressBound(hn), lenbomb, sizeof lenbomb, 3);
    put("bad_huge_record_length.ddpm", hz, zn);
    free(hz);
    free(d);
    free(c);
    free(b);
    free(yaml);
    printf("seeds written to %s\n", g_dir);
    return 0;
}
