/* The `shards` dataset: packed records read on demand (docs/shards.md). Memory holds
 * the per-record index (24 bytes each) and one decompression context + frame buffer
 * per concurrent reader, never the images, so it does not grow with image count
 * beyond the index. */
#include "common/data/dataset_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zstd.h>

#include "common/core/util.h"
#include "common/data/shards.h"

typedef struct reader_slot {
    ZSTD_DCtx *dctx;
    uint8_t *frame; /* max_frame bytes */
    struct reader_slot *next;
} reader_slot;

struct shard_set {
    size_t n;
    char **paths;
    int *fds;
    shard_index_entry **index;
    uint64_t *first; /* n + 1 cumulative record counts */
    size_t max_frame;
    unsigned version; /* of the manifest and every shard: 1 (no identity) or 2 */
    pthread_mutex_t lock;
    reader_slot *free_slots; /* a stack; grows to the number of concurrent readers */
};

void dataset_shards_free(struct dataset *ds) {
    struct shard_set *s = ds->shards;
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        if (s->fds[i] >= 0) close(s->fds[i]);
        free(s->paths[i]);
        free(s->index[i]);
    }
    while (s->free_slots) {
        reader_slot *r = s->free_slots;
        s->free_slots = r->next;
        ZSTD_freeDCtx(r->dctx);
        free(r->frame);
        free(r);
    }
    pthread_mutex_destroy(&s->lock);
    free(s->paths);
    free(s->fds);
    free(s->index);
    free(s->first);
    free(s);
    ds->shards = NULL;
}

/* Two entries naming one file (hard or symbolic links under two names), or, for v1
 * shards that carry no identity, two files with the same header (same record count,
 * layout and index checksum: one is a copy of the other). */
static int check_distinct(const struct shard_set *s, const shard_file_info *info, size_t i,
                          const char *mpath) {
    for (size_t j = 0; j < i; j++) {
        const shard_file_info *o = &info[j];
        if (o->dev == info[i].dev && o->ino == info[i].ino)
            return err_set("%s: is the same file as %s (shard %zu), both listed in %s", s->paths[i],
                           s->paths[j], j, mpath);
        if (info[i].version == 1 && o->header_crc == info[i].header_crc &&
            o->file_bytes == info[i].file_bytes && o->records == info[i].records)
            return err_set("%s: has the same header and index as %s (shard %zu): a copy of it; format 1 "
                           "shards carry no identity (prepare again with this ddpm-prep for format 2)",
                           s->paths[i], s->paths[j], j);
    }
    return 0;
}

/* The records' labels from the indexes (kept in memory with them), or none when
 * no record has one (format 1, or a source without labels). */
static void copy_labels(struct dataset *ds) {
    const struct shard_set *s = ds->shards;
    int any = 0;
    for (size_t i = 0; i < s->n && !any; i++)
        for (uint64_t r = 0; r < s->first[i + 1] - s->first[i]; r++)
            if (s->index[i][r].label >= 0) any = 1;
    if (!any) return;
    ds->labels = xmalloc(ds->count * sizeof *ds->labels);
    for (size_t i = 0; i < s->n; i++)
        for (uint64_t r = 0; r < s->first[i + 1] - s->first[i]; r++)
            ds->labels[s->first[i] + r] = s->index[i][r].label;
}

int dataset_load_shards(struct dataset *ds) {
    shard_manifest m;
    if (shard_manifest_read(&m, ds->path) != 0) return -1;
    int rc = 0;
    if (!m.complete)
        rc = err_set("%s: shard preparation is incomplete (%llu records so far); finish it by "
                     "running the same ddpm-prep command again", ds->path,
                     (unsigned long long)shard_manifest_records(&m));
    else if (m.channels != ds->channels || m.size != ds->size)
        rc = err_set("%s: the shards hold %dx%dx%d images, the config asks for %dx%dx%d (prepare "
                     "them again with --size %d --channels %d)", ds->path, m.channels, m.size, m.size,
                     ds->channels, ds->size, ds->size, ds->size, ds->channels);
    else if (m.n_shards == 0)
        rc = err_set("%s: the manifest lists no shards", ds->path);
    if (rc != 0) {
        shard_manifest_free(&m);
        return -1;
    }
    size_t mlen = strlen(ds->path) + sizeof SHARD_MANIFEST_NAME + 2;
    char *mpath = xmalloc(mlen);
    snprintf(mpath, mlen, "%s/%s", ds->path, SHARD_MANIFEST_NAME);
    struct shard_set *s = xcalloc(1, sizeof *s);
    ds->shards = s;
    pthread_mutex_init(&s->lock, NULL);
    /* n_shards <= SHARD_MAX_SHARDS (the manifest reader's limit), so these sizes are small */
    s->paths = xcalloc(m.n_shards, sizeof *s->paths);
    s->fds = xmalloc(m.n_shards * sizeof *s->fds);
    s->index = xcalloc(m.n_shards, sizeof *s->index);
    s->first = xcalloc(m.n_shards + 1, sizeof *s->first);
    shard_file_info *info = xcalloc(m.n_shards, sizeof *info);
    for (size_t i = 0; i < m.n_shards; i++) s->fds[i] = -1;
    s->n = m.n_shards;
    s->version = m.version;
    for (size_t i = 0; i < m.n_shards && rc == 0; i++) {
        size_t len = strlen(ds->path) + strlen(m.shards[i].name) + 2;
        s->paths[i] = xmalloc(len);
        snprintf(s->paths[i], len, "%s/%s", ds->path, m.shards[i].name);
        rc = shard_file_open(s->paths[i], ds->channels, ds->size, &s->fds[i], &s->index[i], &info[i]);
        if (rc == 0) rc = shard_check_identity(&m, mpath, i, s->paths[i], &info[i], s->first[i]);
        if (rc == 0) rc = check_distinct(s, info, i, mpath);
        s->first[i + 1] = s->first[i] + info[i].records; /* each <= SHARD_MAX_RECORDS: no wrap */
        for (uint64_t r = 0; rc == 0 && r < info[i].records; r++)
            if (s->index[i][r].length > s->max_frame) s->max_frame = s->index[i][r].length;
    }
    if (rc == 0 && s->first[s->n] > SIZE_MAX / 2)
        rc = err_set("%s: %llu records is too many", mpath, (unsigned long long)s->first[s->n]);
    if (rc == 0) ds->count = (size_t)s->first[s->n];
    if (rc == 0) copy_labels(ds);
    free(info);
    free(mpath);
    shard_manifest_free(&m);
    return rc; /* on error dataset_close frees the partial set */
}

const char *dataset_warning(const dataset *ds) {
    if (ds->shards && ds->shards->version == 1)
        return "the shards are format 1, which carries no identity: duplicates and exact copies are "
               "refused, but shards swapped or taken from another preparation cannot be detected; "
               "prepare them again with this ddpm-prep for format 2";
    return NULL;
}

/* The shard holding dataset record `index`: the last i with first[i] <= index. */
static size_t shard_of(const struct shard_set *s, size_t index) {
    size_t lo = 0, hi = s->n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        if (s->first[mid] <= index) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

void dataset_shards_where(const struct dataset *ds, size_t index, char *buf, size_t cap) {
    size_t i = shard_of(ds->shards, index);
    snprintf(buf, cap, "%s: record %llu (dataset record %zu)", ds->shards->paths[i],
             (unsigned long long)(index - ds->shards->first[i]), index);
}

int dataset_shards_get(const struct dataset *ds, size_t index, uint8_t *out) {
    struct shard_set *s = ds->shards;
    size_t lo = shard_of(s, index);
    uint64_t rec = index - s->first[lo];
    pthread_mutex_lock(&s->lock);
    reader_slot *r = s->free_slots;
    if (r) s->free_slots = r->next;
    pthread_mutex_unlock(&s->lock);
    if (!r) { /* first use by one more concurrent reader */
        r = xcalloc(1, sizeof *r);
        r->dctx = ZSTD_createDCtx();
        if (!r->dctx) {
            free(r);
            return err_set("%s: cannot create a zstd decompression context", ds->path);
        }
        r->frame = xmalloc(s->max_frame);
    }
    int rc = shard_record_read(s->fds[lo], s->paths[lo], rec, &s->index[lo][rec], r->frame, r->dctx,
                               out, ds->image_bytes);
    if (rc != 0) err_prefix("dataset image %zu: ", index);
    pthread_mutex_lock(&s->lock);
    r->next = s->free_slots;
    s->free_slots = r;
    pthread_mutex_unlock(&s->lock);
    return rc;
}
