/* Shard files and the manifest (format: docs/shards.md). */
#include "common/data/shards.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "common/core/util.h"

/* ---------- little-endian fields ---------- */

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t crc_of(const void *p, size_t n) {
    uLong c = crc32(0L, Z_NULL, 0);
    const uint8_t *b = p;
    while (n > 0) { /* zlib takes uInt lengths */
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, b, k);
        b += k;
        n -= k;
    }
    return (uint32_t)c;
}

/* fsync a folder so that a rename inside it is durable. */
static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return err_set("%s: cannot open folder to sync: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0) return err_set("%s: fsync: %s", dir, strerror(errno));
    return 0;
}

void shard_file_name(char *buf, size_t cap, uint32_t number) {
    snprintf(buf, cap, "shard-%05u.ddsh", number);
}

/* A 128-bit id from a text: two FNV-1a 64 passes (different bases) through
 * splitmix64's finaliser. Identity against mix-ups, not a defence against forgery. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void shard_dataset_id(const char *text, uint8_t id[SHARD_ID_BYTES]) {
    uint64_t h[2] = {0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL};
    for (int k = 0; k < 2; k++) {
        for (const unsigned char *p = (const unsigned char *)text; *p; p++) h[k] = (h[k] ^ *p) * 0x100000001b3ULL;
        put_u64(id + 8 * k, mix64(h[k] + (uint64_t)k));
    }
}

/* ---------- writer ---------- */

struct shard_writer {
    char *dir, *path, *tmp;
    FILE *f;
    int channels, size;
    uint8_t id[SHARD_ID_BYTES];
    uint32_t shard;
    uint64_t first_record;
    uint64_t pos;
    shard_index_entry *index;
    size_t n, cap;
};

int shard_writer_open(shard_writer **out, const char *dir, const char *name, int channels, int size,
                      const uint8_t *id, uint32_t shard, uint64_t first_record) {
    *out = NULL;
    shard_writer *w = xcalloc(1, sizeof *w);
    size_t len = strlen(dir) + strlen(name) + 8;
    w->dir = xstrdup(dir);
    w->path = xmalloc(len);
    w->tmp = xmalloc(len);
    snprintf(w->path, len, "%s/%s", dir, name);
    snprintf(w->tmp, len, "%s/%s.tmp", dir, name);
    w->channels = channels;
    w->size = size;
    memcpy(w->id, id, SHARD_ID_BYTES);
    w->shard = shard;
    w->first_record = first_record;
    w->f = fopen(w->tmp, "wb");
    if (!w->f) {
        err_set("%s: cannot create: %s", w->tmp, strerror(errno));
        free(w->dir); free(w->path); free(w->tmp); free(w);
        return -1;
    }
    uint8_t zero[SHARD_HEADER_BYTES] = {0}; /* the header is written last */
    if (fwrite(zero, 1, sizeof zero, w->f) != sizeof zero) {
        err_set("%s: write error: %s", w->tmp, strerror(errno));
        shard_writer_abort(w);
        return -1;
    }
    w->pos = SHARD_HEADER_BYTES;
    *out = w;
    return 0;
}

int shard_writer_add(shard_writer *w, const void *frame, size_t len, uint32_t crc, int32_t label) {
    if (len == 0 || len > UINT32_MAX) return err_set("%s: record frame of %zu bytes", w->tmp, len);
    if (w->n >= SHARD_MAX_RECORDS) return err_set("%s: more than %u records in one shard", w->tmp, SHARD_MAX_RECORDS);
    if (label < SHARD_LABEL_NONE) return err_set("%s: record %zu: label %d (-1 is none)", w->tmp, w->n, (int)label);
    if (fwrite(frame, 1, len, w->f) != len) return err_set("%s: write error: %s", w->tmp, strerror(errno));
    if (w->n == w->cap) w->index = xrealloc(w->index, sizeof *w->index * (w->cap = w->cap ? 2 * w->cap : 1024));
    w->index[w->n++] = (shard_index_entry){w->pos, (uint32_t)len, crc, label};
    w->pos += len;
    return 0;
}

uint64_t shard_writer_count(const shard_writer *w) { return w->n; }

static void writer_free(shard_writer *w) {
    if (w->f) fclose(w->f);
    free(w->index);
    free(w->dir);
    free(w->path);
    free(w->tmp);
    free(w);
}

int shard_writer_finish(shard_writer *w, shard_file_info *info) {
    size_t ib = w->n * SHARD_INDEX_ENTRY_BYTES;
    uint8_t *idx = xmalloc(ib ? ib : 1);
    for (size_t i = 0; i < w->n; i++) {
        uint8_t *q = idx + i * SHARD_INDEX_ENTRY_BYTES;
        put_u64(q, w->index[i].offset);
        put_u32(q + 8, w->index[i].length);
        put_u32(q + 12, w->index[i].crc);
        put_u32(q + 16, (uint32_t)w->index[i].label);
    }
    uint8_t h[SHARD_HEADER_BYTES] = {0};
    memcpy(h, SHARD_MAGIC, 8);
    put_u32(h + 8, SHARD_VERSION);
    put_u32(h + 12, (uint32_t)w->channels);
    put_u32(h + 16, (uint32_t)w->size);
    put_u32(h + 20, 0); /* flags */
    put_u64(h + 24, w->n);
    put_u64(h + 32, w->pos);
    put_u32(h + 40, crc_of(idx, ib));
    put_u32(h + 44, w->shard);
    memcpy(h + 48, w->id, SHARD_ID_BYTES);
    put_u64(h + 64, w->first_record);
    uint32_t hcrc = crc_of(h, SHARD_HEADER_BYTES - 4);
    put_u32(h + SHARD_HEADER_BYTES - 4, hcrc);
    int rc = 0;
    if (fwrite(idx, 1, ib, w->f) != ib || fseek(w->f, 0, SEEK_SET) != 0 ||
        fwrite(h, 1, sizeof h, w->f) != sizeof h || fflush(w->f) != 0)
        rc = err_set("%s: write error: %s", w->tmp, strerror(errno));
    else if (fsync(fileno(w->f)) != 0)
        rc = err_set("%s: fsync: %s", w->tmp, strerror(errno));
    free(idx);
    if (fclose(w->f) != 0 && rc == 0) rc = err_set("%s: close: %s", w->tmp, strerror(errno));
    w->f = NULL;
    if (rc == 0 && rename(w->tmp, w->path) != 0)
        rc = err_set("%s: cannot rename to %s: %s", w->tmp, w->path, strerror(errno));
    if (rc == 0) rc = fsync_dir(w->dir);
    if (rc != 0) unlink(w->tmp);
    if (rc == 0 && info) {
        memset(info, 0, sizeof *info);
        info->version = SHARD_VERSION;
        info->records = w->n;
        info->shard = w->shard;
        memcpy(info->dataset_id, w->id, SHARD_ID_BYTES);
        info->first_record = w->first_record;
        info->header_crc = hcrc;
        info->file_bytes = w->pos + ib;
    }
    writer_free(w);
    return rc;
}

void shard_writer_abort(shard_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    w->f = NULL;
    unlink(w->tmp);
    writer_free(w);
}

/* ---------- reader ---------- */

static int pread_full(int fd, void *buf, size_t n, uint64_t off) {
    uint8_t *b = buf;
    while (n > 0) {
        ssize_t got = pread(fd, b, n, (off_t)off);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (got == 0) {
            errno = 0;
            return -1;
        }
        b += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return 0;
}

/* Opens a regular file read-only: O_NONBLOCK so that a FIFO or device put in place of a
 * shard or manifest is refused instead of blocking the open. */
static int open_regular(const char *path, const char *what, const char *enoent_hint, struct stat *st) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        err_set("%s: cannot open %s: %s%s", path, what, strerror(e), e == ENOENT ? enoent_hint : "");
        return -1;
    }
    if (fstat(fd, st) != 0) {
        err_set("%s: stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        err_set("%s: the %s is not a regular file", path, what);
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

static int all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* The header: fills *f, and *ioff / *icrc / *hb (header bytes) / *eb (entry bytes). */
static int parse_header(const char *path, const uint8_t *h, uint64_t fsize, int channels, int size,
                        shard_file_info *f, uint64_t *ioff, uint32_t *icrc, size_t *eb) {
    if (memcmp(h, SHARD_MAGIC, 8) != 0) return err_set("%s: not a shard file (bad magic)", path);
    unsigned v = get_u32(h + 8);
    /* the version is checked before the crc, whose place depends on it */
    if (v != 1 && v != 2)
        return err_set("%s: shard format version %u, this build reads 1 and 2", path, v);
    size_t hb = v == 1 ? SHARD_V1_HEADER_BYTES : SHARD_HEADER_BYTES;
    if (fsize < hb)
        return err_set("%s: truncated shard: %llu bytes, shorter than the %zu-byte header", path,
                       (unsigned long long)fsize, hb);
    if (get_u32(h + hb - 4) != crc_of(h, hb - 4))
        return err_set("%s: shard header checksum mismatch (corrupt header)", path);
    if (get_u32(h + 12) != (uint32_t)channels || get_u32(h + 16) != (uint32_t)size)
        return err_set("%s: shard holds %ux%ux%u images, %dx%dx%d expected", path, get_u32(h + 12),
                       get_u32(h + 16), get_u32(h + 16), channels, size, size);
    if (get_u32(h + 20) != 0) return err_set("%s: unknown shard flags 0x%x", path, get_u32(h + 20));
    if (!all_zero(h + (v == 1 ? 44 : 72), v == 1 ? 16 : 52))
        return err_set("%s: reserved header bytes are not zero (damaged, or written by a newer build)", path);
    memset(f, 0, sizeof *f);
    f->version = v;
    f->records = get_u64(h + 24);
    f->header_crc = get_u32(h + hb - 4);
    f->file_bytes = fsize;
    if (v == 2) {
        f->shard = get_u32(h + 44);
        memcpy(f->dataset_id, h + 48, SHARD_ID_BYTES);
        f->first_record = get_u64(h + 64);
    }
    *ioff = get_u64(h + 32);
    *icrc = get_u32(h + 40);
    *eb = v == 1 ? SHARD_V1_ENTRY_BYTES : SHARD_INDEX_ENTRY_BYTES;
    uint64_t n = f->records;
    /* n first (bounded, so n * eb cannot wrap), then the layout against the file */
    if (n > SHARD_MAX_RECORDS)
        return err_set("%s: header says %llu records, over the limit of %u per shard", path,
                       (unsigned long long)n, SHARD_MAX_RECORDS);
    if (*ioff < hb || *ioff > fsize || fsize - *ioff != n * *eb)
        return err_set("%s: shard size %llu bytes does not match its header (%llu records, index at "
                       "byte %llu): truncated or damaged", path, (unsigned long long)fsize,
                       (unsigned long long)n, (unsigned long long)*ioff);
    return 0;
}

int shard_file_open(const char *path, int channels, int size, int *fd_out, shard_index_entry **index,
                    shard_file_info *info) {
    *fd_out = -1;
    *index = NULL;
    memset(info, 0, sizeof *info);
    size_t rec_bytes;
    if (channels < 1 || size < 1 || size_mul((size_t)channels, (size_t)size, &rec_bytes) ||
        size_mul(rec_bytes, (size_t)size, &rec_bytes) || rec_bytes > (size_t)UINT32_MAX)
        return err_set("%s: invalid record shape %dx%dx%d", path, channels, size, size);
    struct stat st;
    int fd = open_regular(path, "shard", "", &st);
    if (fd < 0) return -1;
    uint8_t h[SHARD_HEADER_BYTES];
    uint8_t *raw = NULL;
    shard_index_entry *e = NULL;
    shard_file_info f = {0};
    int rc = 0;
    uint64_t fsize = (uint64_t)st.st_size, ioff = 0;
    uint32_t icrc = 0;
    size_t eb = 0;
    size_t hread = fsize < SHARD_HEADER_BYTES ? (size_t)fsize : SHARD_HEADER_BYTES;
    memset(h, 0, sizeof h);
    if (fsize < SHARD_V1_HEADER_BYTES || pread_full(fd, h, hread, 0) != 0) {
        rc = err_set("%s: truncated shard: %llu bytes, shorter than a shard header", path,
                     (unsigned long long)fsize);
        goto done;
    }
    if ((rc = parse_header(path, h, fsize, channels, size, &f, &ioff, &icrc, &eb)) != 0) goto done;
    f.dev = (uint64_t)st.st_dev;
    f.ino = (uint64_t)st.st_ino;
    uint64_t n = f.records;
    size_t ib = (size_t)n * eb; /* bounded by the file size, checked above */
    raw = xmalloc(ib ? ib : 1);
    if (pread_full(fd, raw, ib, ioff) != 0) {
        rc = err_set("%s: cannot read the index: %s", path, errno ? strerror(errno) : "short read");
        goto done;
    }
    if (crc_of(raw, ib) != icrc) {
        rc = err_set("%s: shard index checksum mismatch (corrupt index)", path);
        goto done;
    }
    uint64_t max_frame = ZSTD_compressBound(rec_bytes);
    e = xmalloc(sizeof *e * (n ? n : 1));
    uint64_t expect = f.version == 1 ? SHARD_V1_HEADER_BYTES : SHARD_HEADER_BYTES;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *q = raw + i * eb;
        e[i].offset = get_u64(q);
        e[i].length = get_u32(q + 8);
        e[i].crc = get_u32(q + 12);
        e[i].label = eb == SHARD_INDEX_ENTRY_BYTES ? (int32_t)get_u32(q + 16) : SHARD_LABEL_NONE;
        /* expect <= ioff <= fsize here, so expect + length cannot wrap */
        if (e[i].offset != expect || e[i].length == 0 || e[i].length > max_frame ||
            e[i].length > ioff - expect) {
            rc = err_set("%s: index entry %llu (offset %llu, length %u) is inconsistent", path,
                         (unsigned long long)i, (unsigned long long)e[i].offset, e[i].length);
            goto done;
        }
        if (e[i].label < SHARD_LABEL_NONE) {
            rc = err_set("%s: record %llu: label %d (-1 is none, classes are >= 0)", path,
                         (unsigned long long)i, (int)e[i].label);
            goto done;
        }
        expect += e[i].length;
    }
    if (expect != ioff) {
        rc = err_set("%s: the records end at byte %llu but the index starts at %llu", path,
                     (unsigned long long)expect, (unsigned long long)ioff);
        goto done;
    }
    *fd_out = fd;
    *index = e;
    *info = f;
    e = NULL;
done:
    free(raw);
    free(e);
    if (rc != 0) close(fd);
    return rc;
}

uint32_t shard_crc32(const void *p, size_t n) { return crc_of(p, n); }

int shard_record_read(int fd, const char *path, uint64_t rec, const shard_index_entry *e,
                      void *scratch, struct ZSTD_DCtx_s *dctx, uint8_t *out, size_t record_bytes) {
    if (pread_full(fd, scratch, e->length, e->offset) != 0)
        return err_set("%s: record %llu: cannot read %u bytes at offset %llu: %s", path,
                       (unsigned long long)rec, e->length, (unsigned long long)e->offset,
                       errno ? strerror(errno) : "file shorter than its index says");
    if (ZSTD_findFrameCompressedSize(scratch, e->length) != e->length)
        return err_set("%s: record %llu: not one whole zstd frame of %u bytes (corrupt)", path,
                       (unsigned long long)rec, e->length);
    /* the frame's declared size first: nothing is decompressed into `out` unless it
     * says exactly one record (a skippable or size-less frame is refused here) */
    unsigned long long declared = ZSTD_getFrameContentSize(scratch, e->length);
    if (declared == ZSTD_CONTENTSIZE_UNKNOWN || declared == ZSTD_CONTENTSIZE_ERROR)
        return err_set("%s: record %llu: the zstd frame does not declare its content size (corrupt)", path,
                       (unsigned long long)rec);
    if (declared != (unsigned long long)record_bytes)
        return err_set("%s: record %llu: the zstd frame declares %llu bytes, a record is %zu (corrupt)", path,
                       (unsigned long long)rec, declared, record_bytes);
    size_t got = ZSTD_decompressDCtx(dctx, out, record_bytes, scratch, e->length);
    if (ZSTD_isError(got))
        return err_set("%s: record %llu: zstd: %s (corrupt record)", path, (unsigned long long)rec,
                       ZSTD_getErrorName(got));
    if (got != record_bytes)
        return err_set("%s: record %llu: %zu bytes after decompression, %zu expected", path,
                       (unsigned long long)rec, got, record_bytes);
    if (crc_of(out, record_bytes) != e->crc)
        return err_set("%s: record %llu: checksum mismatch (corrupt record)", path, (unsigned long long)rec);
    return 0;
}

static void id_hex(const uint8_t *id, char *out) {
    for (int i = 0; i < SHARD_ID_BYTES; i++) sprintf(out + 2 * i, "%02x", id[i]);
}

int shard_check_identity(const shard_manifest *m, const char *mpath, size_t i, const char *path,
                         const shard_file_info *f, uint64_t first) {
    const shard_entry *s = &m->shards[i];
    if (f->version != m->version)
        return err_set("%s: shard format %u, but %s is format %u: not a shard of this preparation",
                       path, f->version, mpath, m->version);
    if (f->records != s->records)
        return err_set("%s: holds %llu records, the manifest %s says %llu", path,
                       (unsigned long long)f->records, mpath, (unsigned long long)s->records);
    if (m->version < 2) return 0; /* v1 carries nothing more to compare */
    if (memcmp(f->dataset_id, m->dataset_id, SHARD_ID_BYTES) != 0) {
        char a[2 * SHARD_ID_BYTES + 1], b[2 * SHARD_ID_BYTES + 1];
        id_hex(f->dataset_id, a);
        id_hex(m->dataset_id, b);
        return err_set("%s: belongs to dataset %s, but %s is dataset %s: a shard from another "
                       "preparation", path, a, mpath, b);
    }
    if (f->shard != i || f->first_record != first)
        return err_set("%s: is shard %u of its dataset (records from %llu on), but %s lists it as "
                       "shard %zu (records from %llu on): a copy of another shard, or shards renamed",
                       path, f->shard, (unsigned long long)f->first_record, mpath, i,
                       (unsigned long long)first);
    if (f->file_bytes != s->bytes || f->header_crc != s->header_crc)
        return err_set("%s: %llu bytes with header crc %08x, but %s recorded %llu bytes and %08x: "
                       "not the file this preparation wrote", path, (unsigned long long)f->file_bytes,
                       f->header_crc, mpath, (unsigned long long)s->bytes, s->header_crc);
    return 0;
}

/* ---------- manifest ---------- */

/* Keys and reasons may hold spaces or any byte: write them %XX-escaped. */
static void put_escaped(FILE *f, const char *s) {
    if (!*s) {
        fputs("%", f); /* a lone % stands for the empty string */
        return;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '%') fprintf(f, "%%%02X", *p);
        else fputc(*p, f);
    }
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static char *unescape(const char *s) {
    if (!strcmp(s, "%")) return xstrdup("");
    size_t n = strlen(s);
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int a = i + 2 < n ? hexval(s[i + 1]) : -1;
            int b = a >= 0 ? hexval(s[i + 2]) : -1;
            if (a < 0 || b < 0 || (a == 0 && b == 0)) {
                free(out);
                return NULL;
            }
            *o++ = (char)(a * 16 + b);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = 0;
    return out;
}

void shard_manifest_add_shard(shard_manifest *m, const char *name, uint64_t records, uint64_t source_end,
                              uint64_t bytes, uint32_t header_crc) {
    m->shards = xrealloc(m->shards, sizeof *m->shards * (m->n_shards + 1));
    m->shards[m->n_shards++] = (shard_entry){xstrdup(name), records, source_end, bytes, header_crc};
}

void shard_manifest_add_skip(shard_manifest *m, uint64_t source_index, const char *key, const char *reason) {
    m->skips = xrealloc(m->skips, sizeof *m->skips * (m->n_skips + 1));
    m->skips[m->n_skips++] = (shard_skip){source_index, xstrdup(key), xstrdup(reason)};
}

uint64_t shard_manifest_records(const shard_manifest *m) {
    uint64_t t = 0; /* the reader bounds every count, so this cannot wrap */
    for (size_t i = 0; i < m->n_shards; i++) t += m->shards[i].records;
    return t;
}

void shard_manifest_free(shard_manifest *m) {
    for (size_t i = 0; i < m->n_shards; i++) free(m->shards[i].name);
    for (size_t i = 0; i < m->n_skips; i++) {
        free(m->skips[i].key);
        free(m->skips[i].reason);
    }
    free(m->shards);
    free(m->skips);
    free(m->source_format);
    free(m->source_path);
    memset(m, 0, sizeof *m);
}

int shard_manifest_write(const shard_manifest *m, const char *dir) {
    if (m->version != 0 && m->version != SHARD_VERSION)
        return err_set("%s: cannot write a format %u manifest (this build writes %u)", dir, m->version, SHARD_VERSION);
    size_t len = strlen(dir) + 64;
    char *path = xmalloc(len), *tmp = xmalloc(len);
    snprintf(path, len, "%s/%s", dir, SHARD_MANIFEST_NAME);
    snprintf(tmp, len, "%s/%s.tmp", dir, SHARD_MANIFEST_NAME);
    int rc = 0;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        rc = err_set("%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    char id[2 * SHARD_ID_BYTES + 1];
    id_hex(m->dataset_id, id);
    fprintf(f, "ddpm-shards %u\ndataset_id %s\nchannels %d\nsize %d\nrecords_per_shard %u\nzstd_level %d\n",
            SHARD_VERSION, id, m->channels, m->size, m->records_per_shard, m->zstd_level);
    fputs("source_format ", f);
    put_escaped(f, m->source_format ? m->source_format : "");
    fputs("\nsource_path ", f);
    put_escaped(f, m->source_path ? m->source_path : "");
    fprintf(f, "\nsource_items %llu\n", (unsigned long long)m->source_items);
    for (size_t i = 0; i < m->n_shards; i++)
        fprintf(f, "shard %s %llu %llu %llu %08x\n", m->shards[i].name, (unsigned long long)m->shards[i].records,
                (unsigned long long)m->shards[i].source_end, (unsigned long long)m->shards[i].bytes,
                m->shards[i].header_crc);
    for (size_t i = 0; i < m->n_skips; i++) {
        fprintf(f, "skip %llu ", (unsigned long long)m->skips[i].source_index);
        put_escaped(f, m->skips[i].key);
        fputc(' ', f);
        put_escaped(f, m->skips[i].reason);
        fputc('\n', f);
    }
    if (m->complete)
        fprintf(f, "complete %llu %zu %zu\n", (unsigned long long)shard_manifest_records(m), m->n_skips,
                m->n_shards);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) rc = err_set("%s: write error: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && rc == 0) rc = err_set("%s: close: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0) rc = err_set("%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (rc == 0) rc = fsync_dir(dir);
    if (rc != 0) unlink(tmp);
done:
    free(path);
    free(tmp);
    return rc;
}

static int parse_u64(const char *s, uint64_t *v) {
    if (!s || !*s || *s < '0' || *s > '9') return -1; /* strtoull would take "-1", " 1", "+1" */
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *v = x;
    return 0;
}

static int parse_hex32(const char *s, uint32_t *v) {
    if (strlen(s) != 8) return -1;
    uint32_t x = 0;
    for (int i = 0; i < 8; i++) {
        int d = hexval(s[i]);
        if (d < 0) return -1;
        x = x << 4 | (uint32_t)d;
    }
    *v = x;
    return 0;
}

static int parse_id(const char *s, uint8_t *id) {
    if (strlen(s) != 2 * SHARD_ID_BYTES) return -1;
    for (int i = 0; i < SHARD_ID_BYTES; i++) {
        int a = hexval(s[2 * i]), b = hexval(s[2 * i + 1]);
        if (a < 0 || b < 0) return -1;
        id[i] = (uint8_t)(a * 16 + b);
    }
    return 0;
}

/* Reads one line of at most SHARD_MAX_LINE bytes into *buf (grown), without the '\n'.
 * Returns 1, 0 at the end, -1 for a line too long or not terminated. */
static int read_line(FILE *f, char **buf, size_t *cap) {
    size_t n = 0;
    int c;
    while ((c = getc(f)) != EOF) {
        if (c == '\n') {
            (*buf)[n] = 0;
            return 1;
        }
        if (c == 0 || n + 1 >= SHARD_MAX_LINE) return -1;
        if (n + 1 >= *cap) *buf = xrealloc(*buf, *cap *= 2);
        (*buf)[n++] = (char)c;
    }
    return n == 0 ? 0 : -1;
}

enum { MAX_TOK = 7 };

/* One "shard ..." line: v1 NAME RECORDS SOURCE_END, v2 adds BYTES HEADER_CRC. */
static int parse_shard_line(shard_manifest *m, const char *path, int lineno, char **tok, int nt) {
    uint64_t a = 0, b = 0, bytes = 0;
    uint32_t hcrc = 0;
    int want = m->version == 1 ? 4 : 6;
    if (nt != want || parse_u64(tok[2], &a) || parse_u64(tok[3], &b) || strchr(tok[1], '/') ||
        !strcmp(tok[1], ".") || !strcmp(tok[1], "..") ||
        (want == 6 && (parse_u64(tok[4], &bytes) || parse_hex32(tok[5], &hcrc))))
        return err_set("%s:%d: expected 'shard NAME RECORDS SOURCE_END%s'", path, lineno,
                       want == 6 ? " BYTES HEADER_CRC" : "");
    if (m->n_shards >= SHARD_MAX_SHARDS)
        return err_set("%s:%d: more than %u shards", path, lineno, SHARD_MAX_SHARDS);
    for (size_t i = 0; i < m->n_shards; i++)
        if (!strcmp(m->shards[i].name, tok[1]))
            return err_set("%s:%d: shard %s is listed twice (also as shard %zu): the records would be "
                           "trained on twice", path, lineno, tok[1], i);
    uint64_t prev_end = m->n_shards ? m->shards[m->n_shards - 1].source_end : 0;
    if (a == 0 || a > SHARD_MAX_RECORDS || (m->records_per_shard && a > m->records_per_shard))
        return err_set("%s:%d: shard %s: %llu records (1 to records_per_shard %u)", path, lineno, tok[1],
                       (unsigned long long)a, m->records_per_shard);
    if (b <= prev_end || b - prev_end < a || b > m->source_items)
        return err_set("%s:%d: shard %s: %llu records ending at input item %llu, after the previous "
                       "shard's %llu, of %llu input items: out of order or inconsistent", path, lineno,
                       tok[1], (unsigned long long)a, (unsigned long long)b, (unsigned long long)prev_end,
                       (unsigned long long)m->source_items);
    if (want == 6) {
        uint64_t hb = SHARD_HEADER_BYTES + a * SHARD_INDEX_ENTRY_BYTES; /* a is bounded */
        if (bytes <= hb) return err_set("%s:%d: shard %s: %llu bytes cannot hold %llu records", path,
                                        lineno, tok[1], (unsigned long long)bytes, (unsigned long long)a);
    }
    shard_manifest_add_shard(m, tok[1], a, b, bytes, hcrc);
    return 0;
}

/* A "skip SOURCE_INDEX KEY REASON" line: input positions strictly increasing. */
static int parse_skip_line(shard_manifest *m, const char *path, int lineno, char **tok, int nt) {
    uint64_t a = 0;
    char *key = nt == 4 ? unescape(tok[2]) : NULL, *why = nt == 4 ? unescape(tok[3]) : NULL;
    int rc = 0;
    if (!key || !why || parse_u64(tok[1], &a))
        rc = err_set("%s:%d: expected 'skip SOURCE_INDEX KEY REASON'", path, lineno);
    else if (a >= m->source_items || (m->n_skips && a <= m->skips[m->n_skips - 1].source_index))
        rc = err_set("%s:%d: skipped input item %llu: out of order or past the %llu input items", path,
                     lineno, (unsigned long long)a, (unsigned long long)m->source_items);
    else
        shard_manifest_add_skip(m, a, key, why);
    free(key);
    free(why);
    return rc;
}

/* The header lines (before any shard line) set fields; `seen` has a bit per key. */
static int parse_field(shard_manifest *m, const char *path, int lineno, char **tok, int nt, int *seen) {
    static const char *const keys[] = {"channels", "size", "records_per_shard", "zstd_level",
                                       "source_items", "source_format", "source_path", "dataset_id"};
    int k = -1;
    for (int i = 0; i < 8; i++)
        if (!strcmp(tok[0], keys[i])) k = i;
    if (k < 0 || nt != 2) return err_set("%s:%d: unknown line '%s'", path, lineno, tok[0]);
    if (*seen & (1 << k)) return err_set("%s:%d: %s given twice", path, lineno, keys[k]);
    if (m->n_shards || m->n_skips) return err_set("%s:%d: %s after the shard lines", path, lineno, keys[k]);
    *seen |= 1 << k;
    uint64_t a = 0;
    if (k <= 4) {
        /* channels 1..4 and size 1..65536 as dataset_open allows; the rest fit 32 bits */
        uint64_t hi = k == 0 ? 4 : k == 1 ? 65536 : k == 2 ? SHARD_MAX_RECORDS : k == 3 ? 22 : UINT64_MAX;
        if (parse_u64(tok[1], &a) || a > hi || (k != 4 && k != 3 && a == 0))
            return err_set("%s:%d: %s: bad number '%s'", path, lineno, keys[k], tok[1]);
        if (k == 0) m->channels = (int)a;
        else if (k == 1) m->size = (int)a;
        else if (k == 2) m->records_per_shard = (uint32_t)a;
        else if (k == 3) m->zstd_level = (int)a;
        else m->source_items = a;
        return 0;
    }
    if (k == 7) {
        if (m->version < 2 || parse_id(tok[1], m->dataset_id))
            return err_set("%s:%d: dataset_id: expected %d hex digits in a format 2 manifest", path, lineno,
                           2 * SHARD_ID_BYTES);
        return 0;
    }
    char *v = unescape(tok[1]);
    if (!v) return err_set("%s:%d: %s: bad escape in '%s'", path, lineno, keys[k], tok[1]);
    if (k == 5) m->source_format = v;
    else m->source_path = v;
    return 0;
}

/* The checks that need the whole file. */
static int manifest_final_checks(const shard_manifest *m, const char *path, int seen, uint64_t cr,
                                 uint64_t cs, uint64_t cn) {
    int need = m->version == 1 ? 127 : 255;
    if (seen != need)
        return err_set("%s: manifest lacks some of %schannels, size, records_per_shard, zstd_level, "
                       "source_format, source_path, source_items", path, m->version == 1 ? "" : "dataset_id, ");
    if (!m->complete) return 0;
    uint64_t records = shard_manifest_records(m);
    if (cr != records || cs != m->n_skips || (m->version >= 2 && cn != m->n_shards))
        return err_set("%s: 'complete' totals disagree with the %llu records, %zu skips and %zu shards listed",
                       path, (unsigned long long)records, m->n_skips, m->n_shards);
    if (records + m->n_skips != m->source_items)
        return err_set("%s: complete, but %llu records + %zu skipped is not the %llu input items", path,
                       (unsigned long long)records, m->n_skips, (unsigned long long)m->source_items);
    return 0;
}

int shard_manifest_read(shard_manifest *m, const char *dir) {
    memset(m, 0, sizeof *m);
    size_t len = strlen(dir) + 64;
    char *path = xmalloc(len);
    snprintf(path, len, "%s/%s", dir, SHARD_MANIFEST_NAME);
    struct stat st;
    int fd = open_regular(path, "shard manifest", " (prepare the shards with ddpm-prep)", &st);
    if (fd < 0) {
        free(path);
        return -1;
    }
    if ((uint64_t)st.st_size > SHARD_MAX_MANIFEST_BYTES) {
        err_set("%s: %llu bytes, over the %u-byte limit for a shard manifest", path,
                (unsigned long long)st.st_size, SHARD_MAX_MANIFEST_BYTES);
        close(fd);
        free(path);
        return -1;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        err_set("%s: %s", path, strerror(errno));
        close(fd);
        free(path);
        return -1;
    }
    size_t cap = 256;
    char *line = xmalloc(cap);
    int lineno = 0, rc = 0, seen = 0; /* seen: bit per header key */
    uint64_t cr = 0, cs = 0, cn = 0;  /* the 'complete' line's totals */
    for (;;) {
        int r = read_line(f, &line, &cap);
        if (r == 0) break;
        lineno++;
        if (r < 0) {
            rc = err_set("%s:%d: line too long, holding a NUL byte or not terminated (truncated manifest?)",
                         path, lineno);
            break;
        }
        char *save = NULL, *tok[MAX_TOK] = {0};
        int nt = 0;
        for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
            if (nt == MAX_TOK) { nt = MAX_TOK + 1; break; }
            tok[nt++] = t;
        }
        const char *k = nt ? tok[0] : "";
        uint64_t a = 0;
        if (m->complete) {
            rc = err_set("%s:%d: text after the 'complete' line", path, lineno);
        } else if (lineno == 1) {
            if (nt != 2 || strcmp(k, "ddpm-shards") || parse_u64(tok[1], &a))
                rc = err_set("%s:1: not a ddpm-shards manifest", path);
            else if (a != 1 && a != 2)
                rc = err_set("%s:1: manifest version %llu, this build reads 1 and 2", path, (unsigned long long)a);
            else
                m->version = (unsigned)a;
        } else if (!strcmp(k, "shard")) {
            if (!(seen & 4) || !(seen & 16))
                rc = err_set("%s:%d: a shard line before records_per_shard and source_items", path, lineno);
            else
                rc = parse_shard_line(m, path, lineno, tok, nt);
        } else if (!strcmp(k, "skip")) {
            rc = (seen & 16) ? parse_skip_line(m, path, lineno, tok, nt)
                             : err_set("%s:%d: a skip line before source_items", path, lineno);
        } else if (!strcmp(k, "complete")) {
            int want = m->version == 1 ? 3 : 4;
            if (nt != want || parse_u64(tok[1], &cr) || parse_u64(tok[2], &cs) ||
                (want == 4 && parse_u64(tok[3], &cn)))
                rc = err_set("%s:%d: expected 'complete RECORDS SKIPPED%s'", path, lineno, want == 4 ? " SHARDS" : "");
            else
                m->complete = 1;
        } else if (nt > 0) {
            rc = parse_field(m, path, lineno, tok, nt, &seen);
        } else {
            rc = err_set("%s:%d: empty line", path, lineno);
        }
        if (rc != 0) break;
    }
    if (rc == 0 && ferror(f)) rc = err_set("%s: read error", path);
    if (rc == 0 && lineno == 0) rc = err_set("%s: empty shard manifest", path);
    if (rc == 0) rc = manifest_final_checks(m, path, seen, cr, cs, cn);
    free(line);
    fclose(f);
    free(path);
    if (rc != 0) shard_manifest_free(m);
    return rc;
}
