/* Decoder target: the shards manifest (docs/shards.md) through shard_manifest_read and
 * then dataset_open, as a training run opens a shard folder. The input is the text of
 * manifest.txt, placed in a folder that holds fixed tiny shards (1x4x4 records):
 *   shard-00000.ddsh, shard-00001.ddsh, shard-00002.ddsh  format 2, 2 + 2 + 1 records,
 *       written by the library's writer (dataset id of "fuzz_manifest")
 *   v1-00000.ddsh, v1-00001.ddsh  format 1, 3 + 3 records: the bytes the format 1
 *       writer (shard_tool make DIR 6 4 1 3 7, before format 2) produced
 * so that a manifest can be accepted, and can name files that are absent (refused with
 * a message), listed twice or out of their place (refused by identity). An accepted
 * manifest must give a readable dataset whose size is the records it lists. */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "common/data/dataset.h"
#include "common/data/shards.h"
#include "fuzz/fuzz.h"

static const unsigned char v1_shard0[] = {
  0x44, 0x44, 0x50, 0x4d, 0x53, 0x48, 0x52, 0x44, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x8b, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x50, 0xd9, 0x8b, 0xa1, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0xa5, 0x64, 0x4b, 0xa4, 0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x10, 0x81, 0x00,
  0x00, 0xd7, 0x0d, 0x32, 0x59, 0xe4, 0xe1, 0xcb, 0x63, 0x1c, 0x66, 0x3c,
  0xf4, 0xd7, 0x3c, 0x4c, 0x04, 0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x10, 0x81,
  0x00, 0x00, 0x02, 0x2a, 0xb1, 0xba, 0x80, 0x40, 0x98, 0xe6, 0xcb, 0x29,
  0x3e, 0x67, 0x70, 0xeb, 0x3a, 0x95, 0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x10,
  0x81, 0x00, 0x00, 0xda, 0x21, 0x1e, 0x6a, 0x66, 0x3b, 0xd3, 0x73, 0x11,
  0xaa, 0xbe, 0xcb, 0x86, 0xbe, 0xda, 0x3f, 0x40, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, 0xcf, 0x60, 0xfb, 0x35, 0x59,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, 0x32,
  0x43, 0x27, 0x82, 0x72, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x19,
  0x00, 0x00, 0x00, 0xee, 0x06, 0xb7, 0xb2
};

static const unsigned char v1_shard1[] = {
  0x44, 0x44, 0x50, 0x4d, 0x53, 0x48, 0x52, 0x44, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x8b, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0xe4, 0x6d, 0x94, 0x9c, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0xb7, 0x5c, 0x42, 0xce, 0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x10, 0x81, 0x00,
  0x00, 0xf6, 0xd0, 0xc2, 0x33, 0xa1, 0xc4, 0xcb, 0x77, 0xfe, 0xbe, 0x02,
  0x3d, 0x51, 0xd6, 0xfc, 0x53, 0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x10, 0x81,
  0x00, 0x00, 0x61, 0x67, 0x50, 0x99, 0x7a, 0xc0, 0x5e, 0x22, 0x69, 0x53,
  0x79, 0x88, 0x76, 0xa2, 0xc3, 0x69, 0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x10,
  0x81, 0x00, 0x00, 0xeb, 0xfa, 0xb5, 0x05, 0x9b, 0xe7, 0x82, 0x1a, 0x2c,
  0x63, 0xdd, 0x28, 0xb7, 0x4e, 0xba, 0xf5, 0x40, 0x00, 0x00, 0x00, 0x00,
  0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, 0x46, 0xa9, 0x0a, 0xbd, 0x59,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, 0xe6,
  0xc2, 0x63, 0x42, 0x72, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x19,
  0x00, 0x00, 0x00, 0x4a, 0x7c, 0xb6, 0xe7
};

static const char *g_dir;
static const char *const g_files[] = {"shard-00000.ddsh", "shard-00001.ddsh", "shard-00002.ddsh",
                                      "v1-00000.ddsh", "v1-00001.ddsh", "manifest.txt"};

static void remove_fixture(void) {
    char p[600];
    for (size_t i = 0; i < sizeof g_files / sizeof *g_files; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, g_files[i]);
        unlink(p);
    }
    rmdir(g_dir);
}

static void put_file(const char *name, const unsigned char *b, size_t n) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) FUZZ_FAIL("harness: cannot write %s", p);
}

/* The fixture folder; with `m` non-NULL also the format 2 manifest of its three shards
 * (used once to make the valid_v2 seed). */
void fuzz_manifest_fixture(const char *dir, shard_manifest *m);
void fuzz_manifest_fixture(const char *dir, shard_manifest *m) {
    mkdir(dir, 0755);
    g_dir = dir;
    uint8_t id[SHARD_ID_BYTES], rec[16], frame[64];
    shard_dataset_id("fuzz_manifest", id);
    if (m) {
        memset(m, 0, sizeof *m);
        memcpy(m->dataset_id, id, SHARD_ID_BYTES);
        m->channels = 1, m->size = 4, m->records_per_shard = 2, m->zstd_level = 1, m->source_items = 5;
        m->source_format = xstrdup("synthetic");
        m->source_path = xstrdup("fuzz_manifest");
        m->complete = 1;
    }
    for (int s = 0, r = 0; s < 3; s++) {
        char name[32];
        shard_file_name(name, sizeof name, (unsigned)s);
        shard_writer *w;
        if (shard_writer_open(&w, dir, name, 1, 4, id, (unsigned)s, (uint64_t)r) != 0) FUZZ_FAIL("harness: %s", err_msg());
        for (int k = 0; k < (s < 2 ? 2 : 1); k++, r++) {
            for (int b = 0; b < 16; b++) rec[b] = (uint8_t)(r * 16 + b);
            size_t z = ZSTD_compress(frame, sizeof frame, rec, 16, 1);
            if (shard_writer_add(w, frame, z, shard_crc32(rec, 16), r % 2 ? r : -1) != 0) FUZZ_FAIL("harness: %s", err_msg());
        }
        shard_file_info fi;
        if (shard_writer_finish(w, &fi) != 0) FUZZ_FAIL("harness: %s", err_msg());
        if (m) shard_manifest_add_shard(m, name, fi.records, (uint64_t)r, fi.file_bytes, fi.header_crc);
    }
    put_file("v1-00000.ddsh", v1_shard0, sizeof v1_shard0);
    put_file("v1-00001.ddsh", v1_shard1, sizeof v1_shard1);
}

int fuzz_check(const uint8_t *data, size_t size) {
    if (!g_dir) {
        fuzz_manifest_fixture(fuzz_tmp_path("manifest-dir"), NULL);
        atexit(remove_fixture);
    }
    char mp[600];
    snprintf(mp, sizeof mp, "%s/manifest.txt", g_dir);
    FILE *f = fopen(mp, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) FUZZ_FAIL("harness: cannot write %s", mp);
    shard_manifest m;
    fuzz_err_clear();
    int parsed = shard_manifest_read(&m, g_dir) == 0;
    if (!parsed && fuzz_err_empty()) FUZZ_FAIL("manifest: refused without a message");
    if (parsed) {
        if (m.version != 1 && m.version != 2) FUZZ_FAIL("manifest: accepted version %u", m.version);
        if (m.n_shards > SHARD_MAX_SHARDS) FUZZ_FAIL("manifest: over the shard limit");
        for (size_t i = 0; i < m.n_shards; i++) {
            if (strchr(m.shards[i].name, '/') || !m.shards[i].records || m.shards[i].records > SHARD_MAX_RECORDS)
                FUZZ_FAIL("manifest: accepted shard line %zu", i);
            for (size_t j = 0; j < i; j++)
                if (!strcmp(m.shards[i].name, m.shards[j].name)) FUZZ_FAIL("manifest: accepted a shard listed twice");
        }
        if (m.complete && shard_manifest_records(&m) + m.n_skips != m.source_items)
            FUZZ_FAIL("manifest: accepted complete totals that do not add up");
    }
    uint64_t listed = parsed ? shard_manifest_records(&m) : 0;
    if (parsed) shard_manifest_free(&m);
    dataset *ds = NULL;
    fuzz_err_clear();
    if (dataset_open(&ds, DATA_SHARDS, g_dir, 4, 1) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("manifest: dataset refused without a message");
        if (ds) FUZZ_FAIL("manifest: refused but returned a dataset");
        return 0;
    }
    if (!parsed) FUZZ_FAIL("manifest: the dataset opened a manifest the parser refused");
    if (dataset_size(ds) != listed || listed == 0) FUZZ_FAIL("manifest: dataset size differs from the manifest");
    uint8_t img[16];
    for (size_t i = 0; i < dataset_size(ds); i++)
        if (dataset_get(ds, i, img) != 0) FUZZ_FAIL("manifest: record %zu unreadable: %s", i, err_msg());
    dataset_close(ds);
    return 1;
}
