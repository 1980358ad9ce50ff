/* Packed shards: writer/reader round trip against the bytes this test generated,
 * every corruption the reader must catch (naming the file and record), the manifest's
 * escaping and strictness, the prefetcher (hits, misses, failed reads, concurrent
 * readers, shutdown with work pending), and WebP decoding against libwebp's lossless
 * encoder (exact). The whole ddpm-prep path against PIL is tests/integration/test_prep.sh. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <webp/encode.h>
#include <zstd.h>

#include "common/core/util.h"
#include "common/data/dataset.h"
#include "common/data/prefetch.h"
#include "common/data/shards.h"
#include "common/io/image_io.h"
#include "tests/unit/test.h"

#define SZ 8
#define CH 3
#define RB (CH * SZ * SZ)
#define N_REC 12
#define PER 5

static char g_dir[512];

static int msg_has(const char *a, const char *b) {
    const char *m = err_msg();
    return strstr(m, a) != NULL && (!b || strstr(m, b) != NULL);
}

static const char *path_in(const char *dir, const char *name) {
    static char buf[4][1100];
    static int k = 0;
    k = (k + 1) % 4;
    char d[1024]; /* dir may be an earlier result of this function */
    snprintf(d, sizeof d, "%s", dir);
    snprintf(buf[k], sizeof buf[k], "%s/%s", d, name);
    return buf[k];
}

/* record i: a pattern unique to i, partly compressible */
static void make_record(int i, uint8_t *out) {
    for (int b = 0; b < RB; b++) out[b] = (uint8_t)((b < RB / 2) ? i * 7 + 1 : (b * 13 + i * 29) ^ (b >> 3));
}

/* Writes N_REC records in shards of PER into dir; returns 0 on success. */
static int write_shards(const char *dir) {
    mkdir(dir, 0755);
    shard_manifest m;
    memset(&m, 0, sizeof m);
    m.channels = CH;
    m.size = SZ;
    m.records_per_shard = PER;
    m.zstd_level = 3;
    m.source_format = xstrdup("synthetic");
    m.source_path = xstrdup("/a path/with spaces");
    m.source_items = N_REC;
    uint8_t rec[RB];
    size_t cap = ZSTD_compressBound(RB);
    uint8_t *frame = xmalloc(cap);
    shard_writer *w = NULL;
    char name[64];
    int rc = 0;
    for (int i = 0; i < N_REC && rc == 0; i++) {
        make_record(i, rec);
        size_t z = ZSTD_compress(frame, cap, rec, RB, 3);
        if (!w) {
            shard_file_name(name, sizeof name, (unsigned)(i / PER));
            rc = shard_writer_open(&w, dir, name, CH, SZ);
        }
        if (rc == 0) rc = shard_writer_add(w, frame, z, shard_crc32(rec, RB));
        if (rc == 0 && (shard_writer_count(w) == PER || i + 1 == N_REC)) {
            uint64_t c = shard_writer_count(w);
            rc = shard_writer_finish(w);
            w = NULL;
            shard_manifest_add_shard(&m, name, c, (uint64_t)i + 1);
        }
    }
    m.complete = 1;
    if (rc == 0) rc = shard_manifest_write(&m, dir);
    shard_manifest_free(&m);
    free(frame);
    return rc;
}

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    fclose(a);
    fclose(b);
}

/* A fresh copy of the good shards in a new folder. */
static const char *fresh_copy(const char *name) {
    static char dir[4][600];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(dir[k], sizeof dir[k], "%s/%s", g_dir, name);
    mkdir(dir[k], 0755);
    const char *files[] = {"manifest.txt", "shard-00000.ddsh", "shard-00001.ddsh", "shard-00002.ddsh"};
    char good[600];
    snprintf(good, sizeof good, "%s/good", g_dir);
    for (int i = 0; i < 4; i++) {
        char from[700];
        snprintf(from, sizeof from, "%s/%s", good, files[i]);
        copy_file(from, path_in(dir[k], files[i]));
    }
    return dir[k];
}

static void poke(const char *path, long off, int whence, uint8_t x) {
    FILE *f = fopen(path, "r+b");
    fseek(f, off, whence);
    int c = fgetc(f);
    fseek(f, -1, SEEK_CUR);
    fputc((c ^ x) & 0xff, f);
    fclose(f);
}

static void replace_in_file(const char *path, const char *from, const char *to) {
    FILE *f = fopen(path, "rb");
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char out[8192 + 256];
    char *p = strstr(buf, from);
    if (!p) {
        snprintf(out, sizeof out, "%s", buf);
    } else {
        *p = 0;
        snprintf(out, sizeof out, "%s%s%s", buf, to, p + strlen(from));
    }
    f = fopen(path, "wb");
    fputs(out, f);
    fclose(f);
}

static void test_round_trip(void) {
    const char *dir = path_in(g_dir, "good");
    int wr = write_shards(dir);
    test_check(wr == 0, "writer: %d records in shards of %d written (%s)", N_REC, PER, wr ? err_msg() : "ok");
    struct stat st;
    test_check(stat(path_in(dir, "shard-00002.ddsh"), &st) == 0 && stat(path_in(dir, "shard-00002.ddsh.tmp"), &st) != 0,
               "writer: the last shard is renamed into place and no .tmp is left");
    dataset *ds;
    int rc = dataset_open(&ds, DATA_SHARDS, dir, SZ, CH);
    test_check(rc == 0, "shards dataset opens: %s", rc ? err_msg() : "ok");
    if (rc) return;
    test_check(dataset_size(ds) == N_REC && dataset_image_bytes(ds) == RB, "size %zu records of %zu bytes",
               dataset_size(ds), dataset_image_bytes(ds));
    int same = 1;
    uint8_t want[RB], got[RB];
    for (int pass = 0; pass < 2; pass++) /* reverse order too: random access */
        for (int j = 0; j < N_REC; j++) {
            int i = pass ? N_REC - 1 - j : j;
            make_record(i, want);
            if (dataset_get(ds, (size_t)i, got) != 0 || memcmp(want, got, RB) != 0) same = 0;
        }
    test_check(same, "every record reads back byte for byte, in order and in reverse (across 3 shards)");
    rc = dataset_get(ds, N_REC, got);
    test_check(rc == -1 && msg_has("out of range", NULL), "index past the end: %s", err_msg());
    dataset_close(ds);

    shard_manifest m;
    rc = shard_manifest_read(&m, dir);
    test_check(rc == 0 && m.complete && m.n_shards == 3 && m.shards[2].records == 2 &&
                   m.shards[1].source_end == 10 && !strcmp(m.source_path, "/a path/with spaces"),
               "manifest reads back: 3 shards, counts, source_end, a path with spaces");
    if (rc == 0) shard_manifest_free(&m);
}

static void test_manifest_escaping(void) {
    const char *dir = path_in(g_dir, "escape");
    mkdir(dir, 0755);
    shard_manifest m;
    memset(&m, 0, sizeof m);
    m.channels = 1;
    m.size = 4;
    m.records_per_shard = 3;
    m.zstd_level = 1;
    m.source_format = xstrdup("lmdb");
    m.source_path = xstrdup("/x/%20 y\tz");
    m.source_items = 9;
    shard_manifest_add_shard(&m, "shard-00000.ddsh", 3, 4);
    const char *keys[] = {"plain", "a key with spaces", "100%\nnewline", "", "\xc3\xa9t\xc3\xa9"};
    for (int i = 0; i < 5; i++) shard_manifest_add_skip(&m, (uint64_t)i, keys[i], i == 2 ? "why: because\nso" : "bad");
    m.complete = 1;
    int rc = shard_manifest_write(&m, dir);
    shard_manifest r;
    if (rc == 0) rc = shard_manifest_read(&r, dir);
    int same = rc == 0 && r.n_skips == 5 && !strcmp(r.source_path, m.source_path) && r.complete;
    for (int i = 0; same && i < 5; i++)
        same = !strcmp(r.skips[i].key, keys[i]) && !strcmp(r.skips[i].reason, m.skips[i].reason) &&
               r.skips[i].source_index == (uint64_t)i;
    test_check(same, "manifest: keys and reasons with spaces, %%, newlines, empty and UTF-8 survive a round trip (%s)",
               rc ? err_msg() : "ok");
    if (rc == 0) shard_manifest_free(&r);
    shard_manifest_free(&m);

    const char *mp = path_in(dir, "manifest.txt");
    replace_in_file(mp, "complete 3 5", "complete 4 5");
    rc = shard_manifest_read(&r, dir);
    test_check(rc == -1 && msg_has("manifest.txt", "disagrees"), "manifest: wrong 'complete' totals: %s", err_msg());
    replace_in_file(mp, "complete 4 5", "complete 3 5\nbogus 1");
    rc = shard_manifest_read(&r, dir);
    test_check(rc == -1 && msg_has("manifest.txt:", "after the 'complete'"), "manifest: text after complete: %s", err_msg());
    replace_in_file(mp, "\nbogus 1", "");
    replace_in_file(mp, "shard shard-00000.ddsh 3 4", "shard ../etc/passwd 3 4");
    rc = shard_manifest_read(&r, dir);
    test_check(rc == -1 && msg_has("manifest.txt:9:", "SOURCE_END"), "manifest: a shard name with a '/': %s", err_msg());
    replace_in_file(mp, "shard ../etc/passwd 3 4", "frobnicate 3");
    rc = shard_manifest_read(&r, dir);
    test_check(rc == -1 && msg_has("manifest.txt:9:", "unknown line"), "manifest: unknown line: %s", err_msg());
    replace_in_file(mp, "ddpm-shards 1", "ddpm-shards 7");
    rc = shard_manifest_read(&r, dir);
    test_check(rc == -1 && msg_has("manifest.txt:1:", "version 7"), "manifest: future version: %s", err_msg());
}

static void test_errors(void) {
    dataset *ds = NULL;
    int rc = dataset_open(&ds, DATA_SHARDS, g_dir, SZ, CH);
    test_check(rc == -1 && msg_has("manifest.txt", "ddpm-prep"), "folder without a manifest: %s", err_msg());

    const char *d = fresh_copy("size");
    rc = dataset_open(&ds, DATA_SHARDS, d, 16, CH);
    test_check(rc == -1 && msg_has("3x8x8", "--size 16"), "config asks another size: %s", err_msg());

    d = fresh_copy("incomplete");
    replace_in_file(path_in(d, "manifest.txt"), "complete 12 0\n", "");
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("incomplete", "ddpm-prep"), "unfinished preparation: %s", err_msg());

    d = fresh_copy("count");
    replace_in_file(path_in(d, "manifest.txt"), "shard shard-00001.ddsh 5 10\nshard shard-00002.ddsh 2 12\ncomplete 12",
                    "shard shard-00001.ddsh 6 10\nshard shard-00002.ddsh 2 12\ncomplete 13");
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("shard-00001.ddsh", "manifest says 6"), "record count differs from the manifest: %s", err_msg());

    d = fresh_copy("missing");
    unlink(path_in(d, "shard-00002.ddsh"));
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("shard-00002.ddsh", "cannot open"), "missing shard file: %s", err_msg());

    d = fresh_copy("header");
    poke(path_in(d, "shard-00001.ddsh"), 25, SEEK_SET, 0x01); /* record count */
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("shard-00001.ddsh", "header checksum"), "damaged header: %s", err_msg());

    d = fresh_copy("magic");
    poke(path_in(d, "shard-00000.ddsh"), 0, SEEK_SET, 0x20);
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("shard-00000.ddsh", "bad magic"), "not a shard file: %s", err_msg());

    d = fresh_copy("index");
    poke(path_in(d, "shard-00002.ddsh"), -3, SEEK_END, 0x40); /* a stored crc in the index */
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("shard-00002.ddsh", "index checksum"), "damaged index: %s", err_msg());

    d = fresh_copy("truncated");
    const char *p = path_in(d, "shard-00001.ddsh");
    struct stat st;
    stat(p, &st);
    rc = truncate(p, st.st_size - 7);
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("shard-00001.ddsh", "truncated or damaged"), "truncated shard: %s", err_msg());

    /* a damaged record: the index is intact, so the dataset opens, and only that record fails */
    d = fresh_copy("record");
    p = path_in(d, "shard-00001.ddsh");
    FILE *f = fopen(p, "rb");
    uint8_t h[64];
    size_t got = fread(h, 1, 64, f);
    uint64_t ioff = 0;
    for (int i = 7; i >= 0; i--) ioff = (ioff << 8) | h[32 + i];
    uint8_t e[16];
    fseek(f, (long)(ioff + 2 * 16), SEEK_SET); /* record 2's index entry */
    got += fread(e, 1, 16, f);
    fclose(f);
    uint64_t off = 0;
    for (int i = 7; i >= 0; i--) off = (off << 8) | e[i];
    uint32_t len = (uint32_t)e[8] | (uint32_t)e[9] << 8 | (uint32_t)e[10] << 16 | (uint32_t)e[11] << 24;
    poke(p, (long)(off + len - 5), SEEK_SET, 0x10); /* inside the frame's compressed data */
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == 0 && got == 80, "a damaged record does not stop the dataset from opening (%s)", rc ? err_msg() : "ok");
    if (rc == 0) {
        uint8_t img[RB], want[RB];
        rc = dataset_get(ds, 7, img);
        test_check(rc == -1 && msg_has("shard-00001.ddsh: record 2", "dataset image 7"),
                   "the damaged record is reported by shard file and record: %s", err_msg());
        make_record(8, want);
        test_check(dataset_get(ds, 8, img) == 0 && memcmp(img, want, RB) == 0, "its neighbour still reads correctly");

        /* the prefetcher hands the same error back in the caller's thread */
        prefetcher *pf;
        prefetcher_create(&pf, ds);
        uint32_t idx[3] = {6, 7, 8};
        prefetcher_request(pf, idx, 3);
        int r6 = prefetcher_get(pf, 6, img);
        rc = prefetcher_get(pf, 7, img);
        test_check(r6 == 0 && rc == -1 && msg_has("shard-00001.ddsh: record 2", NULL),
                   "prefetcher: a record whose background read failed reports the dataset's error: %s", err_msg());
        prefetcher_free(pf);
        dataset_close(ds);
    }
}

typedef struct {
    prefetcher *pf;
    const dataset *ds;
    int ok;
} reader_arg;

static void *reader(void *p) {
    reader_arg *a = p;
    uint8_t img[RB], want[RB];
    a->ok = 1;
    for (int round = 0; round < 200; round++)
        for (int i = 0; i < N_REC; i++) {
            int r = a->pf ? prefetcher_get(a->pf, (uint32_t)i, img) : dataset_get(a->ds, (size_t)i, img);
            make_record(i, want);
            if (r != 0 || memcmp(img, want, RB) != 0) a->ok = 0;
        }
    return NULL;
}

static void test_prefetch(void) {
    dataset *ds;
    if (dataset_open(&ds, DATA_SHARDS, path_in(g_dir, "good"), SZ, CH) != 0) {
        test_check(0, "open: %s", err_msg());
        return;
    }
    prefetcher *pf;
    test_check(prefetcher_create(&pf, ds) == 0, "prefetcher starts");
    uint8_t img[RB], want[RB];
    /* the training pattern: request(s0); then per step request(s+1) and get(s) */
    uint32_t steps[4][3] = {{3, 11, 0}, {5, 5, 9}, {1, 2, 10}, {4, 7, 6}};
    prefetcher_request(pf, steps[0], 3);
    int ok = 1;
    for (int s = 0; s < 4; s++) {
        if (s + 1 < 4) prefetcher_request(pf, steps[s + 1], 3);
        for (int i = 0; i < 3; i++) {
            make_record((int)steps[s][i], want);
            if (prefetcher_get(pf, steps[s][i], img) != 0 || memcmp(img, want, RB) != 0) ok = 0;
        }
    }
    uint64_t hits, misses;
    prefetcher_stats(pf, &hits, &misses);
    test_check(ok && hits == 12 && misses == 0, "prefetcher: 4 steps of 3 records (a duplicate included) all "
               "served from the read-ahead, byte for byte (hits %llu, misses %llu)",
               (unsigned long long)hits, (unsigned long long)misses);
    make_record(8, want);
    ok = prefetcher_get(pf, 8, img) == 0 && memcmp(img, want, RB) == 0;
    prefetcher_stats(pf, &hits, &misses);
    test_check(ok && misses == 1, "prefetcher: a record not requested is read directly (misses %llu)", (unsigned long long)misses);

    /* several threads reading the same request, and the plain dataset concurrently */
    uint32_t all[N_REC];
    for (int i = 0; i < N_REC; i++) all[i] = (uint32_t)i;
    prefetcher_request(pf, all, N_REC);
    pthread_t th[4];
    reader_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (reader_arg){t < 2 ? pf : NULL, ds, 0};
        pthread_create(&th[t], NULL, reader, &args[t]);
    }
    ok = 1;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        ok &= args[t].ok;
    }
    test_check(ok, "2 threads through the prefetcher and 2 through dataset_get at once read correct records");
    /* shutting down with reads still queued must neither hang nor leak */
    prefetcher_request(pf, all, N_REC);
    prefetcher_request(pf, all, N_REC);
    prefetcher_free(pf);
    test_check(1, "prefetcher_free with requests pending returns");
    dataset_close(ds);
}

static void test_webp(void) {
    int w = 37, h = 23;
    uint8_t *rgb = xmalloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)((i * 7919) ^ (i >> 4));
    uint8_t *enc = NULL;
    size_t n = WebPEncodeLosslessRGB(rgb, w, h, w * 3, &enc);
    uint8_t *dec = NULL;
    int dw = 0, dh = 0;
    int rc = n ? image_decode_rgb(enc, n, "lossless.webp", &dec, &dw, &dh) : -1;
    test_check(rc == 0 && dw == w && dh == h && memcmp(dec, rgb, (size_t)w * h * 3) == 0,
               "WebP: a lossless 37x23 image decodes to exactly the pixels libwebp encoded (%s)", rc ? err_msg() : "ok");
    free(dec);
    rc = image_decode_rgb(enc, n / 2, "half.webp", &dec, &dw, &dh);
    test_check(rc == -1 && msg_has("half.webp", "corrupt WebP"), "WebP cut in half: %s", err_msg());
    WebPFree(enc);
    free(rgb);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/shards-unit-%d", getenv("DDPM_TEST_TMP") ? getenv("DDPM_TEST_TMP") : "/tmp", (int)getpid());
    mkdir(g_dir, 0755);
    test_round_trip();
    test_manifest_escaping();
    test_errors();
    test_prefetch();
    test_webp();
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return test_done();
}
