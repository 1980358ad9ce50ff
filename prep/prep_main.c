/* ddpm-prep: decode, resize and pack a dataset into shards (docs/shards.md).
 *
 *   ddpm-prep --input PATH --format lmdb|image_folder|idx|cifar10 --size N --out DIR
 *             [--channels 3] [--threads N] [--records-per-shard N] [--level L] [--quiet]
 *
 * The main thread reads the source in order into a ring of slots; worker threads
 * decode + resize (guided-diffusion's center_crop_arr) + compress the slots in any
 * order; the main thread commits them in source order, so the shards are the same
 * whatever the thread count. Each full shard is renamed into place and then the
 * manifest is rewritten atomically: a killed run continues from the last shard the
 * manifest lists when the same command is run again. Items that do not decode are
 * skipped, logged and listed in the manifest. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "common/core/progress.h"
#include "common/core/util.h"
#include "common/data/image_source.h"
#include "common/data/preprocess.h"
#include "common/data/shards.h"

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2 };
enum { SLOT_FREE, SLOT_FILLED, SLOT_BUSY, SLOT_DONE };
/* An LMDB value over IMAGE_SOURCE_MAX_ITEM_BYTES is skipped without being copied: each of
 * the 4 x threads + 4 ring slots could otherwise hold one. */
#define PREP_MAX_ITEM_BYTES IMAGE_SOURCE_MAX_ITEM_BYTES

typedef struct {
    const char *input, *format, *out, *labels;
    int size, channels, threads, level, delay_ms, quiet;
    long records_per_shard;
} options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: ddpm-prep --input PATH --format FORMAT --size N --out DIR [options]\n"
            "  --input PATH             the dataset to pack\n"
            "  --format FORMAT          lmdb (LSUN exports: WebP/JPEG values, key order),\n"
            "                           image_folder (png/jpg/jpeg, guided-diffusion's order),\n"
            "                           idx, cifar10 (already at their native size)\n"
            "  --size N                 output images are N x N (BOX halvings, BICUBIC, centre crop)\n"
            "  --out DIR                shard folder (created; a partial one is resumed)\n"
            "options:\n"
            "  --channels C             3 (RGB, default) or 1 (PIL's L)\n"
            "  --labels PATH            idx input: its IDX label file; each record keeps its\n"
            "                           class (cifar10 and image folders carry their labels)\n"
            "  --threads N              decode/compress threads (default: the CPU count)\n"
            "  --records-per-shard N    records per shard file (default 4096): at most this\n"
            "                           much work is redone after a kill\n"
            "  --level L                zstd level, 1..19 (default 3)\n"
            "  --quiet                  no progress bar\n"
            "  --test-delay-ms MS       sleep MS per record in each worker (tests only)\n"
            "  -h, --help               this text\n"
            "Running the same command again after a kill continues where it stopped; a\n"
            "finished folder is left as it is. Exit 0 when every item is packed or skipped.\n");
}

static int parse_int(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || !*s || *end || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->channels = 3;
    o->threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (o->threads < 1) o->threads = 1;
    o->level = 3;
    o->records_per_shard = 4096;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(EXIT_OK);
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "ddpm-prep: %s needs a value (or is unknown)\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--input")) o->input = v;
        else if (!strcmp(a, "--format")) o->format = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--labels")) o->labels = v;
        else if (!strcmp(a, "--size") && !parse_int(v, 1, 4096, &x)) o->size = (int)x;
        else if (!strcmp(a, "--channels") && !parse_int(v, 1, 3, &x) && x != 2) o->channels = (int)x;
        else if (!strcmp(a, "--threads") && !parse_int(v, 1, 1024, &x)) o->threads = (int)x;
        else if (!strcmp(a, "--records-per-shard") && !parse_int(v, 1, SHARD_MAX_RECORDS, &x)) o->records_per_shard = x;
        else if (!strcmp(a, "--level") && !parse_int(v, 1, 19, &x)) o->level = (int)x;
        else if (!strcmp(a, "--test-delay-ms") && !parse_int(v, 0, 60000, &x)) o->delay_ms = (int)x;
        else {
            fprintf(stderr, "ddpm-prep: bad option or value: %s %s\n", a, v);
            return -1;
        }
    }
    if (!o->input || !o->format || !o->out || !o->size) {
        fprintf(stderr, "ddpm-prep: --input, --format, --size and --out are required\n");
        return -1;
    }
    return 0;
}

/* ---------- the pipeline ---------- */

typedef struct {
    int state;
    uint64_t seq;
    uint8_t *in;
    size_t in_len, in_cap;
    int decoded, readable;
    char *key;
    size_t key_cap;
    uint8_t *frame;
    size_t frame_len;
    uint32_t crc;
    int32_t label; /* the item's class, SHARD_LABEL_NONE for none */
    int bad; /* 1: skip this item (reason), 2: fatal */
    char reason[512];
} slot;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    slot *ring;
    size_t R;
    uint64_t next_write, next_read;
    int stop;
    const options *o;
    size_t rb, frame_cap;
} pipeline;

static void set_reason(slot *s, const char *msg) {
    snprintf(s->reason, sizeof s->reason, "%s", msg);
}

static void process(pipeline *p, slot *s, ZSTD_CCtx *cc, uint8_t *chw) {
    s->bad = 0;
    if (!s->readable) {
        s->bad = 1;
        return;
    }
    if (s->decoded) {
        memcpy(chw, s->in, p->rb);
    } else if (image_preprocess(s->in, s->in_len, s->key, p->o->size, p->o->channels, chw) != 0) {
        s->bad = 1;
        set_reason(s, err_msg());
        return;
    }
    s->crc = shard_crc32(chw, p->rb);
    size_t z = ZSTD_compressCCtx(cc, s->frame, p->frame_cap, chw, p->rb, p->o->level);
    if (ZSTD_isError(z)) {
        s->bad = 2;
        snprintf(s->reason, sizeof s->reason, "%s: zstd: %s", s->key, ZSTD_getErrorName(z));
        return;
    }
    s->frame_len = z;
    if (p->o->delay_ms) usleep((useconds_t)p->o->delay_ms * 1000u);
}

static void *worker_main(void *arg) {
    pipeline *p = arg;
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    uint8_t *chw = xmalloc(p->rb);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        slot *s = NULL;
        for (uint64_t q = p->next_write; q < p->next_read && !s; q++)
            if (p->ring[q % p->R].state == SLOT_FILLED) s = &p->ring[q % p->R];
        if (!s) {
            if (p->stop) break;
            pthread_cond_wait(&p->work, &p->mu);
            continue;
        }
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&p->mu);
        if (cc) {
            process(p, s, cc, chw);
        } else {
            s->bad = 2;
            set_reason(s, "cannot create a zstd compression context");
        }
        pthread_mutex_lock(&p->mu);
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    ZSTD_freeCCtx(cc);
    free(chw);
    return NULL;
}

/* ---------- progress ---------- */

typedef struct {
    progress pg;
    uint64_t total, start;   /* items in all; done before this run */
} prep_progress;

static void progress_show(prep_progress *pp, uint64_t done, uint64_t records, uint64_t skipped, int final) {
    double rate = (double)(done - pp->start) / (progress_elapsed(&pp->pg) + 1e-9);
    double eta = rate > 0 ? (double)(pp->total - done) / rate : 0;
    progress_update(&pp->pg, pp->total ? (double)done / (double)pp->total : 1, final,
                    "%llu/%llu items, %llu packed, %llu skipped, %.0f img/s, ETA %.0f s",
                    (unsigned long long)done, (unsigned long long)pp->total,
                    (unsigned long long)records, (unsigned long long)skipped, rate, eta);
}

/* ---------- resume bookkeeping ---------- */

/* Removes what a killed run may have left beyond the manifest: temporary files and
 * shard files numbered from `first_unlisted` on. */
static int clean_leftovers(const char *dir, unsigned first_unlisted) {
    DIR *d = opendir(dir);
    if (!d) return err_set("%s: cannot open: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        unsigned num;
        char tail[16];
        int stale = 0;
        if (sscanf(e->d_name, "shard-%u.ddsh%15s", &num, tail) == 2 && !strcmp(tail, ".tmp")) stale = 1;
        else if (sscanf(e->d_name, "shard-%u.ddsh%15s", &num, tail) == 1 && num >= first_unlisted) stale = 1;
        else if (!strcmp(e->d_name, SHARD_MANIFEST_NAME ".tmp")) stale = 1;
        if (!stale) continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0) rc = err_set("%s: cannot remove: %s", path, strerror(errno));
        else log_info("removed %s (left by an interrupted run)", path);
    }
    closedir(d);
    return rc;
}

static int check_same(const shard_manifest *m, const options *o, const char *input, uint64_t count,
                      const char *dir) {
    char what[512] = "";
    size_t n = 0;
#define DIFF(cond, ...) \
    if (cond) n += (size_t)snprintf(what + n, n < sizeof what ? sizeof what - n : 0, __VA_ARGS__)
    DIFF(m->size != o->size, " size %d (now %d)", m->size, o->size);
    DIFF(m->channels != o->channels, " channels %d (now %d)", m->channels, o->channels);
    DIFF(m->records_per_shard != (uint32_t)o->records_per_shard, " records_per_shard %u (now %ld)",
         m->records_per_shard, o->records_per_shard);
    DIFF(m->zstd_level != o->level, " level %d (now %d)", m->zstd_level, o->level);
    DIFF(strcmp(m->source_format, o->format) != 0, " format %s (now %s)", m->source_format, o->format);
    DIFF(strcmp(m->source_path, input) != 0, " input %s (now %s)", m->source_path, input);
    DIFF(m->source_items != count, " input items %llu (now %llu)", (unsigned long long)m->source_items,
         (unsigned long long)count);
#undef DIFF
    if (n == 0) return 0;
    return err_set("%s holds a preparation with other settings:%s; run the original command to "
                   "finish it, or choose another --out", dir, what);
}

/* ---------- main ---------- */

/* One preparation: the source, the manifest being built and the shard being
 * filled. */
typedef struct {
    const options *o;
    const char *input; /* realpath of o->input */
    image_source *src;
    uint64_t total;    /* items the source announces */
    shard_manifest m;
    shard_writer *w;   /* the shard being filled, or NULL */
    unsigned shard_no;
    uint64_t records, skipped;
} packer;

/* Reads the manifest of an earlier run and checks that it can be continued.
 * Returns 0 to go on, 1 when it is already complete (nothing to do), -1 on
 * error; k->m is freed unless 0 is returned. */
static int resume_manifest(packer *k) {
    const options *o = k->o;
    if (shard_manifest_read(&k->m, o->out) != 0)
        return err_prefix("cannot resume (remove %s to start over): ", o->out);
    if (!k->m.complete && k->m.version != SHARD_VERSION) {
        err_set("%s: an unfinished preparation in shard format %u, which this ddpm-prep cannot "
                "continue (it writes format %u); remove the folder and run again", o->out,
                k->m.version, SHARD_VERSION);
        shard_manifest_free(&k->m);
        return -1;
    }
    if (check_same(&k->m, o, k->input, k->total, o->out) != 0) {
        shard_manifest_free(&k->m);
        return -1;
    }
    if (k->m.complete) {
        log_info("%s is already complete: %llu records in %zu shard(s), %zu skipped; nothing to do",
                 o->out, (unsigned long long)shard_manifest_records(&k->m), k->m.n_shards, k->m.n_skips);
        shard_manifest_free(&k->m);
        return 1;
    }
    return 0;
}

/* Starts a new preparation: an empty manifest with the settings, written at
 * once so that a kill before the first shard still leaves a resumable folder. */
static int new_manifest(packer *k) {
    const options *o = k->o;
    shard_manifest *m = &k->m;
    memset(m, 0, sizeof *m);
    m->channels = o->channels;
    m->size = o->size;
    m->records_per_shard = (uint32_t)o->records_per_shard;
    m->zstd_level = o->level;
    m->source_format = xstrdup(o->format);
    m->source_path = xstrdup(k->input);
    m->source_items = k->total;
    m->version = SHARD_VERSION;
    /* derived from the settings and the source, so that the output is the same bytes
     * whatever the threads and interruptions (docs/shards.md) */
    char desc[PATH_MAX + 256];
    snprintf(desc, sizeof desc, "ddpm-prep|%s|%s|%llu|%d|%d|%ld|%d", o->format, k->input,
             (unsigned long long)k->total, o->size, o->channels, o->records_per_shard, o->level);
    shard_dataset_id(desc, m->dataset_id);
    if (shard_manifest_write(m, o->out) != 0) {
        shard_manifest_free(m);
        return -1;
    }
    return 0;
}

/* Where packing starts: after the last shard the manifest lists. Drops the
 * skips past it, removes leftovers of a killed run and skips the source to it.
 * Returns the input index to continue at in *consumed. */
static int resume_point(packer *k, uint64_t *consumed) {
    const options *o = k->o;
    shard_manifest *m = &k->m;
    *consumed = m->n_shards ? m->shards[m->n_shards - 1].source_end : 0;
    /* skips past the last committed shard belong to work that will be redone */
    while (m->n_skips && m->skips[m->n_skips - 1].source_index >= *consumed) {
        m->n_skips--;
        free(m->skips[m->n_skips].key);
        free(m->skips[m->n_skips].reason);
    }
    k->records = shard_manifest_records(m);
    k->skipped = m->n_skips;
    k->shard_no = (unsigned)m->n_shards;
    if (clean_leftovers(o->out, k->shard_no) != 0 || image_source_skip(k->src, *consumed) != 0) return -1;
    if (*consumed)
        log_info("resuming %s: %zu shard(s) with %llu records done, continuing at input item %llu of %llu",
                 o->out, m->n_shards, (unsigned long long)k->records, (unsigned long long)*consumed,
                 (unsigned long long)k->total);
    log_info("packing %llu %s item(s) from %s into %s: %dx%dx%d, %ld per shard, zstd %d, %d thread(s)",
             (unsigned long long)(k->total - *consumed), o->format, k->input, o->out, o->channels, o->size,
             o->size, o->records_per_shard, o->level, o->threads);
    return 0;
}

static void pipeline_init(pipeline *p, const options *o, uint64_t consumed) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->o = o;
    p->rb = (size_t)o->channels * o->size * o->size;
    p->frame_cap = ZSTD_compressBound(p->rb);
    p->R = (size_t)o->threads * 4 + 4;
    p->ring = xcalloc(p->R, sizeof *p->ring);
    for (size_t i = 0; i < p->R; i++) p->ring[i].frame = xmalloc(p->frame_cap);
    p->next_write = p->next_read = consumed;
}

static void pipeline_free(pipeline *p) {
    for (size_t i = 0; i < p->R; i++) {
        free(p->ring[i].in);
        free(p->ring[i].key);
        free(p->ring[i].frame);
    }
    free(p->ring);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
}

/* Copies a source item into a slot; an unreadable or oversized item is kept as
 * its key and a reason, for the worker to mark it skipped. */
static void fill_slot(slot *s, const image_source_item *it) {
    size_t len = it->len;
    s->readable = it->data != NULL;
    s->decoded = it->decoded;
    s->label = it->label;
    if (!s->readable) set_reason(s, err_msg());
    if (s->readable && len > PREP_MAX_ITEM_BYTES) {
        s->readable = 0;
        snprintf(s->reason, sizeof s->reason, "%zu bytes, over the %zu MiB limit for one image",
                 len, PREP_MAX_ITEM_BYTES >> 20);
    }
    if (!s->readable) len = 0;
    if (len > s->in_cap) s->in = xrealloc(s->in, s->in_cap = len);
    if (len) memcpy(s->in, it->data, len);
    s->in_len = len;
    size_t kl = strlen(it->key) + 1;
    if (kl > s->key_cap) s->key = xrealloc(s->key, s->key_cap = kl);
    memcpy(s->key, it->key, kl);
}

/* Reads source items into the free slots until the ring is full or the source
 * ends (*eof). Called and returns with p->mu held; the reading runs unlocked.
 * Returns -1 if the source failed. */
static int fill_ring(pipeline *p, image_source *src, int *eof) {
    while (!*eof && p->next_read - p->next_write < p->R) {
        slot *s = &p->ring[p->next_read % p->R];
        pthread_mutex_unlock(&p->mu);
        image_source_item it;
        int r = image_source_next(src, &it);
        if (r > 0) fill_slot(s, &it);
        pthread_mutex_lock(&p->mu);
        if (r <= 0) {
            *eof = 1;
            return r < 0 ? -1 : 0;
        }
        s->seq = p->next_read++;
        s->state = SLOT_FILLED;
        pthread_cond_signal(&p->work);
    }
    return 0;
}

/* Adds a compressed record to the current shard (opened on demand); a shard
 * that reaches records_per_shard is finished and listed in the manifest, which
 * is rewritten, so a kill after this point does not redo it. */
static int add_record(packer *k, const slot *s) {
    const options *o = k->o;
    char name[64];
    shard_file_name(name, sizeof name, k->shard_no);
    if (!k->w && shard_writer_open(&k->w, o->out, name, o->channels, o->size, k->m.dataset_id, k->shard_no,
                                   k->records) != 0)
        return -1;
    int rc = shard_writer_add(k->w, s->frame, s->frame_len, s->crc, s->label);
    if (rc != 0) return rc;
    k->records++;
    if (shard_writer_count(k->w) != (uint64_t)o->records_per_shard) return 0;
    shard_writer *full = k->w;
    k->w = NULL;
    shard_file_info fi;
    rc = shard_writer_finish(full, &fi);
    if (rc == 0) {
        shard_manifest_add_shard(&k->m, name, (uint64_t)o->records_per_shard, s->seq + 1, fi.file_bytes,
                                 fi.header_crc);
        rc = shard_manifest_write(&k->m, o->out);
        k->shard_no++;
    }
    return rc;
}

/* Commits a processed slot, in source order: a fatal error, a skip (logged and
 * listed in the manifest) or a record. */
static int commit_slot(packer *k, const slot *s) {
    if (s->bad == 2) return err_set("input item %llu: %s", (unsigned long long)s->seq, s->reason);
    if (s->bad) {
        log_warn("skipping input item %llu (%s): %s", (unsigned long long)s->seq, s->key, s->reason);
        shard_manifest_add_skip(&k->m, s->seq, s->key, s->reason);
        k->skipped++;
        return 0;
    }
    return add_record(k, s);
}

/* The main thread's loop: keep the ring filled, and commit the oldest slot once
 * a worker is done with it. Returns with the workers told to stop. */
static int pack_loop(packer *k, pipeline *p, prep_progress *pg, int rc) {
    int eof = 0;
    pthread_mutex_lock(&p->mu);
    while (rc == 0) {
        if (fill_ring(p, k->src, &eof) != 0) rc = -1;
        if (rc != 0 || (eof && p->next_write == p->next_read)) break;
        slot *s = &p->ring[p->next_write % p->R];
        while (s->state != SLOT_DONE) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
        /* only this thread touches a DONE slot */
        rc = commit_slot(k, s);
        progress_show(pg, s->seq + 1, k->records, k->skipped, 0);
        pthread_mutex_lock(&p->mu);
        s->state = SLOT_FREE;
        p->next_write++;
    }
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* After the last item: the partial last shard, the end-of-input checks and the
 * manifest marked complete. `consumed`: the input items read. */
static int finish(packer *k, uint64_t consumed) {
    int rc = 0;
    if (k->w) {
        char name[64];
        shard_file_name(name, sizeof name, k->shard_no);
        uint64_t n = shard_writer_count(k->w);
        shard_file_info fi;
        rc = shard_writer_finish(k->w, &fi);
        k->w = NULL;
        if (rc == 0) shard_manifest_add_shard(&k->m, name, n, consumed, fi.file_bytes, fi.header_crc);
    }
    if (rc == 0 && k->records == 0)
        rc = err_set("%s: none of the %llu input items could be used (%llu skipped; see the log)", k->input,
                     (unsigned long long)k->total, (unsigned long long)k->skipped);
    if (rc == 0 && consumed != k->total)
        rc = err_set("%s: the input ended after %llu items, it announced %llu", k->input,
                     (unsigned long long)consumed, (unsigned long long)k->total);
    if (rc == 0) {
        k->m.complete = 1;
        rc = shard_manifest_write(&k->m, k->o->out);
    }
    return rc;
}

/* Starts the workers, packs from `consumed` to the end of the source and
 * finishes the manifest. */
static int pack(packer *k, uint64_t consumed) {
    const options *o = k->o;
    pipeline p;
    pipeline_init(&p, o, consumed);
    pthread_t *th = xcalloc((size_t)o->threads, sizeof *th);
    int started = 0, rc = 0;
    for (; started < o->threads; started++)
        if (pthread_create(&th[started], NULL, worker_main, &p) != 0) break;
    if (started == 0) rc = err_set("cannot start worker threads");

    prep_progress pg = {.total = k->total, .start = consumed};
    progress_start(&pg.pg, o->quiet ? NULL : stderr);
    rc = pack_loop(k, &p, &pg, rc);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    if (rc == 0) rc = finish(k, p.next_write);
    shard_writer_abort(k->w);
    if (rc == 0) {
        progress_show(&pg, k->total, k->records, k->skipped, 1);
        log_info("done: %llu records in %zu shard(s) under %s; %llu bad item(s) skipped%s",
                 (unsigned long long)k->records, k->m.n_shards, o->out, (unsigned long long)k->skipped,
                 k->skipped ? " (listed as 'skip' lines in the manifest)" : "");
    } else if (pg.pg.out && pg.pg.tty) {
        fputc('\n', stderr);
    }
    pipeline_free(&p);
    free(th);
    return rc;
}

/* An image folder's classes (file-name prefixes, docs/data.md): OUT/classes.txt,
 * line k the name of class k, the label its records carry. */
static int write_classes(const image_source *src, const char *dir) {
    size_t n = 0;
    const char *const *names = image_source_class_names(src, &n);
    if (!names) return 0;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/classes.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) return err_set("%s: cannot write: %s", path, strerror(errno));
    for (size_t i = 0; i < n; i++) fprintf(f, "%s\n", names[i]);
    if (fclose(f) != 0) return err_set("%s: write error", path);
    log_info("%zu classes (file-name prefixes, sorted; each record carries its class): %s", n, path);
    return 0;
}

static int run(const options *o) {
    char input[PATH_MAX];
    if (!realpath(o->input, input)) return err_set("%s: %s", o->input, strerror(errno));
    if (mkdir_p(o->out) != 0) return -1;
    packer k;
    memset(&k, 0, sizeof k);
    k.o = o;
    k.input = input;
    if (image_source_open(&k.src, o->format, input, o->size, o->channels, o->labels) != 0 ||
        (k.src && write_classes(k.src, o->out) != 0)) {
        image_source_close(k.src);
        return -1;
    }
    k.total = image_source_count(k.src);
    char mpath[PATH_MAX];
    snprintf(mpath, sizeof mpath, "%s/%s", o->out, SHARD_MANIFEST_NAME);
    int r = access(mpath, F_OK) == 0 ? resume_manifest(&k) : new_manifest(&k);
    if (r != 0) { /* k.m already freed */
        image_source_close(k.src);
        return r < 0 ? -1 : 0;
    }
    uint64_t consumed;
    int rc = resume_point(&k, &consumed);
    if (rc == 0) rc = pack(&k, consumed);
    shard_manifest_free(&k.m);
    image_source_close(k.src);
    return rc;
}

int main(int argc, char **argv) {
    options o;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (run(&o) != 0) {
        fprintf(stderr, "ddpm-prep: %s\n", err_msg());
        return EXIT_ERROR;
    }
    return EXIT_OK;
}
