/* Test and benchmark helper for packed shards.
 *   shard_tool dump DIR SIZE CHANNELS OUT.raw
 *       every record through the `shards` dataset, in order, as uint8 CHW; prints "records N"
 *   shard_tool labels DIR SIZE CHANNELS
 *       every record's class label through the `shards` dataset, one a line (-1: none)
 *   shard_tool make DIR N SIZE CHANNELS PER_SHARD SEED
 *       N pseudo-random (incompressible) records packed with the library's writer
 *   shard_tool read DIR SIZE CHANNELS STEPS BATCH [direct|inmemory]
 *       reads STEPS batches in the training order (batch_plan, seed 0) through the
 *       prefetcher (or dataset_get with "direct"; "inmemory" first copies every record
 *       into memory, as the in-memory formats do: the RSS test's negative control); prints records, seconds, images/s,
 *       peak RSS (getrusage ru_maxrss, KiB), prefetch hits and misses and a checksum */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <zstd.h>

#include "common/core/util.h"
#include "common/data/dataset.h"
#include "common/data/prefetch.h"
#include "common/data/shards.h"
#include "common/train/batch.h"

static int die(const char *what) {
    fprintf(stderr, "shard_tool: %s: %s\n", what, err_msg());
    return 1;
}

static int cmd_dump(char **argv) {
    dataset *ds;
    if (dataset_open(&ds, DATA_SHARDS, argv[2], atoi(argv[3]), atoi(argv[4])) != 0) return die("open");
    if (dataset_warning(ds)) fprintf(stderr, "shard_tool: warning: %s\n", dataset_warning(ds));
    FILE *f = fopen(argv[5], "wb");
    if (!f) return die(argv[5]);
    size_t rb = dataset_image_bytes(ds);
    uint8_t *img = xmalloc(rb);
    int rc = 0;
    for (size_t i = 0; i < dataset_size(ds) && rc == 0; i++) {
        if (dataset_get(ds, i, img) != 0) rc = die("get");
        else if (fwrite(img, 1, rb, f) != rb) rc = 1;
    }
    if (fclose(f) != 0) rc = 1;
    if (rc == 0) printf("records %zu\n", dataset_size(ds));
    free(img);
    dataset_close(ds);
    return rc;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int cmd_make(char **argv) {
    const char *dir = argv[2];
    long n = atol(argv[3]), per = atol(argv[6]);
    int size = atoi(argv[4]), ch = atoi(argv[5]);
    uint64_t seed = strtoull(argv[7], NULL, 10);
    mkdir(dir, 0755);
    size_t rb = (size_t)ch * size * size, cap = ZSTD_compressBound(rb);
    uint8_t *img = xmalloc(rb), *frame = xmalloc(cap);
    shard_manifest m;
    memset(&m, 0, sizeof m);
    m.channels = ch;
    m.size = size;
    m.records_per_shard = (uint32_t)per;
    m.zstd_level = 1;
    m.source_format = xstrdup("synthetic");
    m.source_path = xstrdup("shard_tool");
    m.source_items = (uint64_t)n;
    char desc[64];
    snprintf(desc, sizeof desc, "shard_tool %llu", (unsigned long long)seed);
    shard_dataset_id(desc, m.dataset_id);
    shard_writer *w = NULL;
    uint64_t first = 0;
    char name[64];
    unsigned shard = 0;
    for (long i = 0; i < n; i++) {
        for (size_t b = 0; b < rb; b += 8) {
            uint64_t r = splitmix(&seed);
            memcpy(img + b, &r, rb - b < 8 ? rb - b : 8);
        }
        size_t z = ZSTD_compress(frame, cap, img, rb, 1);
        if (!w) {
            shard_file_name(name, sizeof name, shard);
            if (shard_writer_open(&w, dir, name, ch, size, m.dataset_id, shard, first) != 0) return die("open shard");
        }
        if (shard_writer_add(w, frame, z, shard_crc32(img, rb), SHARD_LABEL_NONE) != 0) return die("add");
        if ((long)shard_writer_count(w) == per || i + 1 == n) {
            uint64_t c = shard_writer_count(w);
            shard_file_info fi;
            if (shard_writer_finish(w, &fi) != 0) return die("finish");
            w = NULL;
            shard_manifest_add_shard(&m, name, c, (uint64_t)i + 1, fi.file_bytes, fi.header_crc);
            first += c;
            shard++;
        }
    }
    m.complete = 1;
    if (shard_manifest_write(&m, dir) != 0) return die("manifest");
    shard_manifest_free(&m);
    free(img);
    free(frame);
    printf("made %ld records in %u shard(s)\n", n, shard);
    return 0;
}

static int cmd_read(int argc, char **argv) {
    dataset *ds;
    if (dataset_open(&ds, DATA_SHARDS, argv[2], atoi(argv[3]), atoi(argv[4])) != 0) return die("open");
    if (dataset_warning(ds)) fprintf(stderr, "shard_tool: warning: %s\n", dataset_warning(ds));
    long steps = atol(argv[5]);
    int B = atoi(argv[6]), direct = argc > 7 && !strcmp(argv[7], "direct");
    int inmem = argc > 7 && !strcmp(argv[7], "inmemory");
    direct |= inmem;
    batch_planner bp;
    if (batch_planner_init(&bp, 0, dataset_size(ds), B, 1000, TIMESTEP_UNIFORM, 1) != 0) return die("planner");
    batch_item *cur = xcalloc((size_t)B, sizeof *cur), *next = xcalloc((size_t)B, sizeof *next);
    uint32_t *idx = xcalloc((size_t)B, sizeof *idx);
    size_t rb = dataset_image_bytes(ds);
    uint8_t *img = xmalloc(rb);
    prefetcher *pf = NULL;
    if (!direct && prefetcher_create(&pf, ds) != 0) return die("prefetcher");
    uint8_t *all = NULL;
    if (inmem) {
        all = xmalloc(dataset_size(ds) * rb);
        for (size_t i = 0; i < dataset_size(ds); i++)
            if (dataset_get(ds, i, all + i * rb) != 0) return die("read");
    }
    uint64_t sum = 0;
    double t0 = now_seconds();
    batch_plan(&bp, 0, cur);
    for (int i = 0; i < B; i++) idx[i] = cur[i].index;
    if (pf) prefetcher_request(pf, idx, (size_t)B);
    int rc = 0;
    for (long s = 0; s < steps && rc == 0; s++) {
        batch_plan(&bp, (uint64_t)s + 1, next);
        for (int i = 0; i < B; i++) idx[i] = next[i].index;
        if (pf) prefetcher_request(pf, idx, (size_t)B);
        for (int i = 0; i < B && rc == 0; i++) {
            int r = 0;
            if (all) memcpy(img, all + (size_t)cur[i].index * rb, rb);
            else r = pf ? prefetcher_get(pf, cur[i].index, img) : dataset_get(ds, cur[i].index, img);
            if (r != 0) rc = die("read");
            for (size_t b = 0; b < rb; b += 61) sum = sum * 31 + img[b];
        }
        batch_item *t = cur;
        cur = next;
        next = t;
    }
    double sec = now_seconds() - t0;
    uint64_t hits = 0, misses = 0;
    if (pf) prefetcher_stats(pf, &hits, &misses);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (rc == 0)
        printf("records %ld seconds %.3f images_per_s %.1f maxrss_kb %ld hits %llu misses %llu checksum %016llx dataset %zu\n",
               steps * B, sec, (double)(steps * B) / sec, ru.ru_maxrss, (unsigned long long)hits,
               (unsigned long long)misses, (unsigned long long)sum, dataset_size(ds));
    prefetcher_free(pf);
    free(cur); free(next); free(idx); free(img); free(all);
    batch_planner_free(&bp);
    dataset_close(ds);
    return rc;
}

static int cmd_labels(char **argv) {
    dataset *ds = NULL;
    if (dataset_open(&ds, DATA_SHARDS, argv[2], atoi(argv[3]), atoi(argv[4])) != 0) return die("open");
    for (size_t i = 0; i < dataset_size(ds); i++) printf("%d\n", dataset_label(ds, i));
    dataset_close(ds);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "dump")) return cmd_dump(argv);
    if (argc == 5 && !strcmp(argv[1], "labels")) return cmd_labels(argv);
    if (argc == 8 && !strcmp(argv[1], "make")) return cmd_make(argv);
    if ((argc == 7 || argc == 8) && !strcmp(argv[1], "read")) return cmd_read(argc, argv);
    fprintf(stderr, "usage: shard_tool dump DIR SIZE CH OUT.raw | labels DIR SIZE CH | make DIR N SIZE CH PER_SHARD SEED | "
                    "read DIR SIZE CH STEPS BATCH [direct]\n");
    return 2;
}
