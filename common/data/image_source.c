/* ddpm-prep's inputs: LMDB (liblmdb), image folders, and the in-memory datasets. */
#include "common/data/image_source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "common/core/util.h"
#include "common/data/dataset.h"
#include "common/data/preprocess.h"
#include "common/io/image_io.h"

typedef enum { SRC_LMDB, SRC_FOLDER, SRC_DATASET } source_kind;

struct image_source {
    source_kind kind;
    char *path;
    uint64_t count, pos;
    char *key;          /* current item's key */
    size_t key_cap;
    uint8_t *buf;       /* current item's bytes (folder, dataset) */
    /* lmdb */
    MDB_env *env;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_dbi dbi;
    /* folder */
    char **paths;
    size_t n_paths;
    int32_t *labels;    /* guided-diffusion's classes of the paths */
    char **class_names;
    size_t *class_first, n_classes;
    /* idx / cifar10 */
    dataset *ds;
};

static void set_key(image_source *s, const uint8_t *k, size_t n) {
    /* printable: bytes outside 0x21..0x7e as \xHH */
    size_t need = 4 * n + 1;
    if (need > s->key_cap) s->key = xrealloc(s->key, s->key_cap = need);
    char *o = s->key;
    for (size_t i = 0; i < n; i++) {
        if (k[i] > 0x20 && k[i] < 0x7f && k[i] != '\\') *o++ = (char)k[i];
        else o += sprintf(o, "\\x%02x", k[i]);
    }
    *o = 0;
}

static int open_lmdb(image_source *s) {
    struct stat st;
    if (stat(s->path, &st) != 0) return err_set("%s: cannot open LMDB: %s", s->path, strerror(errno));
    /* read-only without the lock file: works on read-only copies of the export */
    if (S_ISDIR(st.st_mode)) {
        size_t len = strlen(s->path) + 16;
        char *dm = xmalloc(len);
        snprintf(dm, len, "%s/data.mdb", s->path);
        int has = access(dm, R_OK) == 0;
        free(dm);
        if (!has) return err_set("%s: cannot open LMDB: no readable data.mdb in this folder", s->path);
    }
    unsigned flags = MDB_RDONLY | MDB_NOLOCK | MDB_NORDAHEAD | (S_ISDIR(st.st_mode) ? 0 : MDB_NOSUBDIR);
    int rc = mdb_env_create(&s->env);
    if (rc == 0) rc = mdb_env_open(s->env, s->path, flags, 0644);
    if (rc == 0) rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->txn);
    if (rc == 0) rc = mdb_dbi_open(s->txn, NULL, 0, &s->dbi);
    MDB_stat ms;
    if (rc == 0) rc = mdb_stat(s->txn, s->dbi, &ms);
    if (rc == 0) rc = mdb_cursor_open(s->txn, s->dbi, &s->cur);
    if (rc != 0) return err_set("%s: cannot open LMDB: %s", s->path, mdb_strerror(rc));
    s->count = ms.ms_entries;
    return 0;
}

int image_source_open(image_source **out, const char *format, const char *path, int size, int channels,
                      const char *labels_path) {
    *out = NULL;
    image_source *s = xcalloc(1, sizeof *s);
    s->path = xstrdup(path);
    int rc;
    if (!strcmp(format, "lmdb")) {
        s->kind = SRC_LMDB;
        rc = open_lmdb(s);
    } else if (!strcmp(format, "image_folder")) {
        s->kind = SRC_FOLDER;
        rc = image_folder_list(path, &s->paths, &s->n_paths);
        s->count = s->n_paths;
        if (rc == 0)
            rc = image_folder_classes(s->paths, s->n_paths, &s->labels, &s->class_names,
                                      &s->class_first, &s->n_classes);
    } else if (!strcmp(format, "idx") || !strcmp(format, "cifar10")) {
        s->kind = SRC_DATASET;
        rc = dataset_open(&s->ds, format[0] == 'i' ? DATA_IDX : DATA_CIFAR10, path, size, channels);
        if (rc == 0 && labels_path && labels_path[0]) rc = dataset_load_labels(s->ds, labels_path);
        if (rc == 0) {
            s->count = dataset_size(s->ds);
            s->buf = xmalloc(dataset_image_bytes(s->ds));
        }
    } else {
        rc = err_set("unknown input format '%s' (lmdb, image_folder, idx, cifar10)", format);
    }
    if (rc == 0 && labels_path && labels_path[0] && s->kind != SRC_DATASET)
        rc = err_set("--labels %s: only idx input takes a label file (cifar10 and image folders "
                     "carry their labels)", labels_path);
    if (rc != 0) {
        image_source_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

const char *const *image_source_class_names(const image_source *s, size_t *n) {
    *n = s->n_classes;
    return (const char *const *)s->class_names;
}

uint64_t image_source_count(const image_source *s) { return s->count; }

int image_source_skip(image_source *s, uint64_t n) {
    if (s->kind == SRC_LMDB) {
        for (uint64_t i = 0; i < n; i++) {
            MDB_val k, v;
            int rc = mdb_cursor_get(s->cur, &k, &v, s->pos == 0 ? MDB_FIRST : MDB_NEXT);
            if (rc == MDB_NOTFOUND)
                return err_set("%s: holds only %llu entries, %llu to skip", s->path,
                               (unsigned long long)s->pos, (unsigned long long)n);
            if (rc != 0) return err_set("%s: LMDB entry %llu: %s", s->path, (unsigned long long)s->pos, mdb_strerror(rc));
            s->pos++;
        }
        return 0;
    }
    if (s->pos + n > s->count)
        return err_set("%s: holds only %llu items, %llu to skip", s->path, (unsigned long long)s->count,
                       (unsigned long long)(s->pos + n));
    s->pos += n;
    return 0;
}

int image_source_next(image_source *s, image_source_item *item) {
    memset(item, 0, sizeof *item);
    item->label = -1;
    if (s->kind == SRC_LMDB) {
        MDB_val k, v;
        int rc = mdb_cursor_get(s->cur, &k, &v, s->pos == 0 ? MDB_FIRST : MDB_NEXT);
        if (rc == MDB_NOTFOUND) return 0;
        if (rc != 0) return err_set("%s: LMDB entry %llu: %s", s->path, (unsigned long long)s->pos, mdb_strerror(rc));
        s->pos++;
        set_key(s, k.mv_data, k.mv_size);
        item->data = v.mv_data; /* in the read-only map, valid while the transaction lives */
        item->len = v.mv_size;
        item->key = s->key;
        return 1;
    }
    if (s->pos >= s->count) return 0;
    uint64_t i = s->pos++;
    if (s->kind == SRC_FOLDER) {
        free(s->buf);
        s->buf = NULL;
        const char *p = s->paths[i];
        size_t n = strlen(p);
        if (n + 1 > s->key_cap) s->key = xrealloc(s->key, s->key_cap = n + 1);
        memcpy(s->key, p, n + 1);
        item->key = s->key;
        item->label = s->labels[i];
        size_t len = 0;
        if (image_read_file(p, IMAGE_SOURCE_MAX_ITEM_BYTES, &s->buf, &len) == 0) {
            item->data = s->buf;
            item->len = len;
        }
        return 1;
    }
    char name[32];
    snprintf(name, sizeof name, "%llu", (unsigned long long)i);
    set_key(s, (const uint8_t *)name, strlen(name));
    if (dataset_get(s->ds, (size_t)i, s->buf) != 0) return -1;
    item->data = s->buf;
    item->len = dataset_image_bytes(s->ds);
    item->decoded = 1;
    item->key = s->key;
    item->label = dataset_label(s->ds, (size_t)i);
    return 1;
}

void image_source_close(image_source *s) {
    if (!s) return;
    if (s->cur) mdb_cursor_close(s->cur);
    if (s->txn) mdb_txn_abort(s->txn);
    if (s->env) mdb_env_close(s->env);
    image_folder_list_free(s->paths, s->n_paths);
    image_folder_classes_free(s->labels, s->class_names, s->class_first, s->n_classes);
    if (s->ds) dataset_close(s->ds);
    free(s->buf);
    free(s->key);
    free(s->path);
    free(s);
}
