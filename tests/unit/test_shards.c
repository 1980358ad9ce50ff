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

/* record i's class label in the test shards: -1 (none) and 0..2 */
static int32_t label_of(int i) { return (int32_t)(i % 4) - 1; }

/* Writes N_REC records in shards of PER into dir, as dataset `idtext`; returns 0 on success. */
static int write_shards_as(const char *dir, const char *idtext) {
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
    shard_dataset_id(idtext, m.dataset_id);
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
            rc = shard_writer_open(&w, dir, name, CH, SZ, m.dataset_id, (unsigned)(i / PER), (uint64_t)i);
        }
        if (rc == 0) rc = shard_writer_add(w, frame, z, shard_crc32(rec, RB), label_of(i));
        if (rc == 0 && (shard_writer_count(w) == PER || i + 1 == N_REC)) {
            uint64_t c = shard_writer_count(w);
            shard_file_info fi;
            rc = shard_writer_finish(w, &fi);
            w = NULL;
            if (rc == 0) shard_manifest_add_shard(&m, name, c, (uint64_t)i + 1, fi.file_bytes, fi.header_crc);
        }
    }
    m.complete = 1;
    if (rc == 0) rc = shard_manifest_write(&m, dir);
    shard_manifest_free(&m);
    free(frame);
    return rc;
}

static int write_shards(const char *dir) { return write_shards_as(dir, "test_shards dataset A"); }

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
    m.source_items = 8;
    shard_manifest_add_shard(&m, "shard-00000.ddsh", 3, 4, 1000, 0x1234abcd);
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
    test_check(rc == -1 && msg_has("manifest.txt", "disagree"), "manifest: wrong 'complete' totals: %s", err_msg());
    replace_in_file(mp, "complete 4 5 1", "complete 3 5 1\nbogus 1");
    rc = shard_manifest_read(&r, dir);
    test_check(rc == -1 && msg_has("manifest.txt:", "after the 'complete'"), "manifest: text after complete: %s", err_msg());
    replace_in_file(mp, "\nbogus 1", "");
    replace_in_file(mp, "shard shard-00000.ddsh 3 4", "shard ../etc/passwd 3 4");
    rc = shard_manifest_read(&r, dir);
    test_check(rc == -1 && msg_has("manifest.txt:10:", "SOURCE_END"), "manifest: a shard name with a '/': %s", err_msg());
    replace_in_file(mp, "shard ../etc/passwd 3 4", "frobnicate 3");
    rc = shard_manifest_read(&r, dir);
    test_check(rc == -1 && msg_has("manifest.txt:10:", "unknown line"), "manifest: unknown line: %s", err_msg());
    replace_in_file(mp, "ddpm-shards 2", "ddpm-shards 7");
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
    replace_in_file(path_in(d, "manifest.txt"), "complete 12 0 3\n", "");
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("incomplete", "ddpm-prep"), "unfinished preparation: %s", err_msg());

    /* one record fewer in the last shard, one more skip: a consistent manifest */
    d = fresh_copy("count");
    replace_in_file(path_in(d, "manifest.txt"), "shard shard-00002.ddsh 2 12", "shard shard-00002.ddsh 1 12");
    replace_in_file(path_in(d, "manifest.txt"), "complete 12 0 3", "skip 11 k r\ncomplete 11 1 3");
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("shard-00002.ddsh: holds 2 records", "manifest.txt says 1"),
               "record count differs from the manifest: %s", err_msg());

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

    d = fresh_copy("fifo");
    unlink(path_in(d, "shard-00001.ddsh"));
    mkfifo(path_in(d, "shard-00001.ddsh"), 0644);
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("shard-00001.ddsh", "not a regular file"), "a FIFO as a shard is refused, not waited on: %s", err_msg());
    d = fresh_copy("fifo_manifest");
    unlink(path_in(d, "manifest.txt"));
    mkfifo(path_in(d, "manifest.txt"), 0644);
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("manifest.txt", "not a regular file"), "a FIFO as the manifest is refused, not waited on: %s", err_msg());

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
    fseek(f, (long)(ioff + 2 * SHARD_INDEX_ENTRY_BYTES), SEEK_SET); /* record 2's index entry */
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

/* The full "shard NAME ..." line of the manifest in dir (without the newline). */
static void shard_line(const char *dir, const char *name, char *out, size_t cap) {
    FILE *f = fopen(path_in(dir, "manifest.txt"), "r");
    char line[512], want[128];
    snprintf(want, sizeof want, "shard %s ", name);
    out[0] = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, want, strlen(want))) {
            line[strcspn(line, "\n")] = 0;
            snprintf(out, cap, "%s", line);
        }
    if (f) fclose(f);
}

/* Row 9 of issue 14: shards carry an identity (format 2). */
static void test_identity(void) {
    char good[700];
    snprintf(good, sizeof good, "%s", path_in(g_dir, "good"));
    shard_manifest m;
    int rc = shard_manifest_read(&m, good);
    test_check(rc == 0 && m.version == 2 && m.shards[1].bytes > 0, "format 2 manifest: version, sizes and header crcs (%s)",
               rc ? err_msg() : "ok");
    if (rc) return;
    int ok = 1, labels = 1;
    uint64_t first = 0;
    for (size_t i = 0; i < m.n_shards; i++) {
        int fd;
        shard_index_entry *e;
        shard_file_info fi;
        if (shard_file_open(path_in(good, m.shards[i].name), CH, SZ, &fd, &e, &fi) != 0) {
            ok = 0;
            continue;
        }
        ok &= fi.version == 2 && fi.shard == i && fi.first_record == first && fi.records == m.shards[i].records &&
              !memcmp(fi.dataset_id, m.dataset_id, SHARD_ID_BYTES) && fi.file_bytes == m.shards[i].bytes &&
              fi.header_crc == m.shards[i].header_crc;
        for (uint64_t r = 0; r < fi.records; r++) labels &= e[r].label == label_of((int)(first + r));
        first += fi.records;
        free(e);
        close(fd);
    }
    test_check(ok, "format 2 identity round trip: each shard's header names the dataset id, its number and first "
               "record, and matches the manifest's size and header crc");
    test_check(labels, "format 2: per-record labels (-1 = none, 0..2) round trip through the index");
    shard_manifest_free(&m);
    dataset *ds = NULL;
    rc = dataset_open(&ds, DATA_SHARDS, good, SZ, CH);
    test_check(rc == 0 && dataset_warning(ds) == NULL, "format 2 shards open without a warning");
    dataset_close(ds);

    /* a manifest listing the same shard twice (in place of another) */
    const char *d = fresh_copy("dup_listing");
    char l0[512], l1[512], l2[512];
    shard_line(d, "shard-00000.ddsh", l0, sizeof l0);
    shard_line(d, "shard-00001.ddsh", l1, sizeof l1);
    char dup[600];
    snprintf(dup, sizeof dup, "shard shard-00000.ddsh%s", l1 + strlen("shard shard-00001.ddsh"));
    replace_in_file(path_in(d, "manifest.txt"), l1, dup);
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("manifest.txt:11:", "shard-00000.ddsh is listed twice"),
               "a manifest listing the same shard twice is refused, naming the manifest and the shard: %s", err_msg());

    /* a shard file replaced by a copy of another (same record count) */
    d = fresh_copy("copy");
    copy_file(path_in(d, "shard-00000.ddsh"), path_in(d, "shard-00001.ddsh"));
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("copy/shard-00001.ddsh: is shard 0", "manifest.txt lists it as shard 1"),
               "a shard replaced by a copy of another is refused, naming the shard file and the manifest: %s", err_msg());

    /* two shards swapped (renamed into each other's place) */
    d = fresh_copy("swap");
    rename(path_in(d, "shard-00000.ddsh"), path_in(d, "tmp"));
    rename(path_in(d, "shard-00001.ddsh"), path_in(d, "shard-00000.ddsh"));
    rename(path_in(d, "tmp"), path_in(d, "shard-00001.ddsh"));
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("swap/shard-00000.ddsh: is shard 1", "lists it as shard 0"), "swapped shards: %s", err_msg());

    /* shard 1 of another preparation, same shape and counts */
    char other[700]; /* path_in's buffers rotate */
    snprintf(other, sizeof other, "%s", path_in(g_dir, "other"));
    write_shards_as(other, "test_shards dataset B");
    d = fresh_copy("foreign");
    copy_file(path_in(other, "shard-00001.ddsh"), path_in(d, "shard-00001.ddsh"));
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("foreign/shard-00001.ddsh: belongs to dataset", "another preparation"),
               "a shard from another preparation is refused: %s", err_msg());

    /* the manifest's record of the file (size, header crc) differs */
    d = fresh_copy("header_crc");
    shard_line(d, "shard-00002.ddsh", l2, sizeof l2);
    char other_crc[600];
    snprintf(other_crc, sizeof other_crc, "%.*s00000000", (int)strlen(l2) - 8, l2);
    replace_in_file(path_in(d, "manifest.txt"), l2, other_crc);
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("shard-00002.ddsh", "not the file this preparation wrote"),
               "a header crc other than the manifest recorded: %s", err_msg());

    /* the manifest's own consistency: the complete line's shard count */
    d = fresh_copy("nshards");
    replace_in_file(path_in(d, "manifest.txt"), "complete 12 0 3", "complete 12 0 4");
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("manifest.txt", "3 shards listed"), "a complete line with another shard count: %s", err_msg());
    d = fresh_copy("noid");
    FILE *f = fopen(path_in(d, "manifest.txt"), "r");
    char text[4096], *idl;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    idl = strstr(text, "dataset_id ");
    if (idl) {
        char line[80];
        snprintf(line, sizeof line, "%.*s\n", (int)(strchr(idl, '\n') - idl), idl);
        replace_in_file(path_in(d, "manifest.txt"), line, "");
    }
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(idl && rc == -1 && msg_has("manifest.txt", "lacks some of dataset_id"), "a format 2 manifest without its dataset id: %s", err_msg());
    d = fresh_copy("order");
    replace_in_file(path_in(d, "manifest.txt"), "shard shard-00001.ddsh 5 10", "shard shard-00001.ddsh 5 7");
    rc = dataset_open(&ds, DATA_SHARDS, d, SZ, CH);
    test_check(rc == -1 && msg_has("manifest.txt:11:", "inconsistent"), "5 records from 2 input items: %s", err_msg());
    (void)l0;
}

/* What shard_tool make (the writer of format 1, before identities) put in record i. */
static void v1_fixture_records(uint8_t *out, int n, int rb, uint64_t seed) {
    for (int i = 0; i < n; i++)
        for (int b = 0; b < rb; b += 8) {
            uint64_t z = (seed += 0x9e3779b97f4a7c15ULL);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            z ^= z >> 31;
            memcpy(out + (size_t)i * rb + b, &z, rb - b < 8 ? (size_t)(rb - b) : 8);
        }
}

/* Format 1 (tests/data/shards_v1: written by shard_tool make before format 2, 6 records
 * of 1x4x4 in 2 shards, seed 7) is still read; duplicates are refused. */
static void test_v1(void) {
    const char *fx = "tests/data/shards_v1";
    char d[700];
    snprintf(d, sizeof d, "%s/v1", g_dir);
    mkdir(d, 0755);
    const char *files[] = {"manifest.txt", "shard-00000.ddsh", "shard-00001.ddsh"};
    for (int i = 0; i < 3; i++) copy_file(path_in(fx, files[i]), path_in(d, files[i]));
    dataset *ds = NULL;
    int rc = dataset_open(&ds, DATA_SHARDS, d, 4, 1);
    test_check(rc == 0, "format 1 shards still open (%s)", rc ? err_msg() : "ok");
    if (rc) return;
    uint8_t want[6 * 16], got[16];
    v1_fixture_records(want, 6, 16, 7);
    int same = dataset_size(ds) == 6;
    for (int i = 0; same && i < 6; i++) same = dataset_get(ds, (size_t)i, got) == 0 && !memcmp(got, want + 16 * i, 16);
    test_check(same, "format 1: the 6 records read back byte for byte");
    const char *w = dataset_warning(ds);
    test_check(w && strstr(w, "format 1") && strstr(w, "no identity"), "format 1: the library returns a warning for the log: %s", w ? w : "none");
    dataset_close(ds);

    char d2[700];
    snprintf(d2, sizeof d2, "%s/v1dup", g_dir);
    mkdir(d2, 0755);
    for (int i = 0; i < 3; i++) copy_file(path_in(fx, files[i]), path_in(d2, files[i]));
    replace_in_file(path_in(d2, "manifest.txt"), "shard shard-00001.ddsh 3 6", "shard shard-00000.ddsh 3 6");
    rc = dataset_open(&ds, DATA_SHARDS, d2, 4, 1);
    test_check(rc == -1 && msg_has("manifest.txt:10:", "shard-00000.ddsh is listed twice"), "format 1: a shard listed twice: %s", err_msg());
    replace_in_file(path_in(d2, "manifest.txt"), "shard shard-00000.ddsh 3 6", "shard shard-00001.ddsh 3 6");
    copy_file(path_in(d2, "shard-00000.ddsh"), path_in(d2, "shard-00001.ddsh"));
    rc = dataset_open(&ds, DATA_SHARDS, d2, 4, 1);
    test_check(rc == -1 && msg_has("v1dup/shard-00001.ddsh: has the same header and index as", "shard-00000.ddsh"),
               "format 1: a shard replaced by a copy of another: %s", err_msg());
    unlink(path_in(d2, "shard-00001.ddsh"));
    rc = symlink("shard-00000.ddsh", path_in(d2, "shard-00001.ddsh"));
    rc = dataset_open(&ds, DATA_SHARDS, d2, 4, 1);
    test_check(rc == -1 && msg_has("shard-00001.ddsh: is the same file as", "shard-00000.ddsh"),
               "format 1: a symbolic link to another listed shard: %s", err_msg());
    /* a format 2 shard of the same shape and count listed by a format 1 manifest */
    shard_writer *sw = NULL;
    uint8_t id[SHARD_ID_BYTES] = {1}, rec[16] = {0}, frame[64];
    size_t z = ZSTD_compress(frame, sizeof frame, rec, 16, 1);
    rc = shard_writer_open(&sw, d2, "v2.ddsh", 1, 4, id, 0, 0);
    for (int i = 0; i < 3 && rc == 0; i++) rc = shard_writer_add(sw, frame, z, shard_crc32(rec, 16), -1);
    if (rc == 0) rc = shard_writer_finish(sw, NULL);
    unlink(path_in(d2, "shard-00001.ddsh"));
    copy_file(path_in(fx, "shard-00001.ddsh"), path_in(d2, "shard-00001.ddsh"));
    replace_in_file(path_in(d2, "manifest.txt"), "shard shard-00000.ddsh 3 3", "shard v2.ddsh 3 3");
    rc = dataset_open(&ds, DATA_SHARDS, d2, 4, 1);
    test_check(rc == -1 && msg_has("v2.ddsh: shard format 2, but", "manifest.txt is format 1"),
               "format 1 manifest listing a format 2 shard: %s", err_msg());
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
    test_identity();
    test_v1();
    test_prefetch();
    test_webp();
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return test_done();
}
