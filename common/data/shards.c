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

/* ---------- writer ---------- */

struct shard_writer {
    char *dir, *path, *tmp;
    FILE *f;
    int channels, size;
    uint64_t pos;
    shard_index_entry *index;
    size_t n, cap;
};

int shard_writer_open(shard_writer **out, const char *dir, const char *name, int channels, int size) {
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

int shard_writer_add(shard_writer *w, const void *frame, size_t len, uint32_t crc) {
    if (len == 0 || len > UINT32_MAX) return err_set("%s: record frame of %zu bytes", w->tmp, len);
    if (fwrite(frame, 1, len, w->f) != len) return err_set("%s: write error: %s", w->tmp, strerror(errno));
    if (w->n == w->cap) w->index = xrealloc(w->index, sizeof *w->index * (w->cap = w->cap ? 2 * w->cap : 1024));
    w->index[w->n++] = (shard_index_entry){w->pos, (uint32_t)len, crc};
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

int shard_writer_finish(shard_writer *w) {
    size_t ib = w->n * SHARD_INDEX_ENTRY_BYTES;
    uint8_t *idx = xmalloc(ib ? ib : 1);
    for (size_t i = 0; i < w->n; i++) {
        put_u64(idx + i * 16, w->index[i].offset);
        put_u32(idx + i * 16 + 8, w->index[i].length);
        put_u32(idx + i * 16 + 12, w->index[i].crc);
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
    put_u32(h + 60, crc_of(h, 60));
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

int shard_file_open(const char *path, int channels, int size, int *fd_out, shard_index_entry **index,
                    uint64_t *n_out) {
    *fd_out = -1;
    *index = NULL;
    *n_out = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set("%s: cannot open shard: %s", path, strerror(errno));
    struct stat st;
    uint8_t h[SHARD_HEADER_BYTES];
    uint8_t *raw = NULL;
    shard_index_entry *e = NULL;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = err_set("%s: stat: %s", path, strerror(errno));
        goto done;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    if (fsize < SHARD_HEADER_BYTES || pread_full(fd, h, sizeof h, 0) != 0) {
        rc = err_set("%s: truncated shard: %llu bytes, shorter than the %d-byte header", path,
                     (unsigned long long)fsize, SHARD_HEADER_BYTES);
        goto done;
    }
    if (memcmp(h, SHARD_MAGIC, 8) != 0) {
        rc = err_set("%s: not a shard file (bad magic)", path);
        goto done;
    }
    if (get_u32(h + 60) != crc_of(h, 60)) {
        rc = err_set("%s: shard header checksum mismatch (corrupt header)", path);
        goto done;
    }
    if (get_u32(h + 8) != SHARD_VERSION) {
        rc = err_set("%s: shard format version %u, this build reads %u", path, get_u32(h + 8), SHARD_VERSION);
        goto done;
    }
    if (get_u32(h + 12) != (uint32_t)channels || get_u32(h + 16) != (uint32_t)size) {
        rc = err_set("%s: shard holds %ux%ux%u images, %dx%dx%d expected", path, get_u32(h + 12),
                     get_u32(h + 16), get_u32(h + 16), channels, size, size);
        goto done;
    }
    uint64_t n = get_u64(h + 24), ioff = get_u64(h + 32);
    if (n > (fsize / SHARD_INDEX_ENTRY_BYTES) || ioff < SHARD_HEADER_BYTES ||
        ioff + n * SHARD_INDEX_ENTRY_BYTES != fsize) {
        rc = err_set("%s: shard size %llu bytes does not match its header (%llu records, index at "
                     "byte %llu): truncated or damaged", path, (unsigned long long)fsize,
                     (unsigned long long)n, (unsigned long long)ioff);
        goto done;
    }
    size_t ib = (size_t)n * SHARD_INDEX_ENTRY_BYTES;
    raw = xmalloc(ib ? ib : 1);
    if (pread_full(fd, raw, ib, ioff) != 0) {
        rc = err_set("%s: cannot read the index: %s", path, errno ? strerror(errno) : "short read");
        goto done;
    }
    if (crc_of(raw, ib) != get_u32(h + 40)) {
        rc = err_set("%s: shard index checksum mismatch (corrupt index)", path);
        goto done;
    }
    size_t rec_bytes = (size_t)channels * size * size;
    uint64_t max_frame = ZSTD_compressBound(rec_bytes);
    e = xmalloc(sizeof *e * (n ? n : 1));
    uint64_t expect = SHARD_HEADER_BYTES;
    for (uint64_t i = 0; i < n; i++) {
        e[i].offset = get_u64(raw + i * 16);
        e[i].length = get_u32(raw + i * 16 + 8);
        e[i].crc = get_u32(raw + i * 16 + 12);
        if (e[i].offset != expect || e[i].length == 0 || e[i].length > max_frame) {
            rc = err_set("%s: index entry %llu (offset %llu, length %u) is inconsistent", path,
                         (unsigned long long)i, (unsigned long long)e[i].offset, e[i].length);
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
    *n_out = n;
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

void shard_manifest_add_shard(shard_manifest *m, const char *name, uint64_t records, uint64_t source_end) {
    m->shards = xrealloc(m->shards, sizeof *m->shards * (m->n_shards + 1));
    m->shards[m->n_shards++] = (shard_entry){xstrdup(name), records, source_end};
}

void shard_manifest_add_skip(shard_manifest *m, uint64_t source_index, const char *key, const char *reason) {
    m->skips = xrealloc(m->skips, sizeof *m->skips * (m->n_skips + 1));
    m->skips[m->n_skips++] = (shard_skip){source_index, xstrdup(key), xstrdup(reason)};
}

uint64_t shard_manifest_records(const shard_manifest *m) {
    uint64_t t = 0;
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
    fprintf(f, "ddpm-shards %u\nchannels %d\nsize %d\nrecords_per_shard %u\nzstd_level %d\n",
            SHARD_VERSION, m->channels, m->size, m->records_per_shard, m->zstd_level);
    fputs("source_format ", f);
    put_escaped(f, m->source_format ? m->source_format : "");
    fputs("\nsource_path ", f);
    put_escaped(f, m->source_path ? m->source_path : "");
    fprintf(f, "\nsource_items %llu\n", (unsigned long long)m->source_items);
    for (size_t i = 0; i < m->n_shards; i++)
        fprintf(f, "shard %s %llu %llu\n", m->shards[i].name, (unsigned long long)m->shards[i].records,
                (unsigned long long)m->shards[i].source_end);
    for (size_t i = 0; i < m->n_skips; i++) {
        fprintf(f, "skip %llu ", (unsigned long long)m->skips[i].source_index);
        put_escaped(f, m->skips[i].key);
        fputc(' ', f);
        put_escaped(f, m->skips[i].reason);
        fputc('\n', f);
    }
    if (m->complete)
        fprintf(f, "complete %llu %zu\n", (unsigned long long)shard_manifest_records(m), m->n_skips);
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
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-') return -1;
    *v = x;
    return 0;
}

int shard_manifest_read(shard_manifest *m, const char *dir) {
    memset(m, 0, sizeof *m);
    size_t len = strlen(dir) + 64;
    char *path = xmalloc(len);
    snprintf(path, len, "%s/%s", dir, SHARD_MANIFEST_NAME);
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        err_set("%s: cannot open shard manifest: %s%s", path, strerror(e),
                e == ENOENT ? " (prepare the shards with ddpm-prep)" : "");
        free(path);
        return -1;
    }
    char line[8192];
    int lineno = 0, rc = 0, seen = 0; /* seen: bit per header key */
    uint64_t complete_records = 0, complete_skips = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == 0 || line[n - 1] != '\n') {
            rc = err_set("%s:%d: line too long or not terminated (truncated manifest?)", path, lineno);
            break;
        }
        line[n - 1] = 0;
        char *save = NULL, *tok[5] = {0};
        int nt = 0;
        for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
            if (nt == 5) { nt = 6; break; }
            tok[nt++] = t;
        }
        uint64_t a = 0, b = 0;
        const char *k = nt ? tok[0] : "";
        if (m->complete) {
            rc = err_set("%s:%d: text after the 'complete' line", path, lineno);
        } else if (lineno == 1) {
            if (nt != 2 || strcmp(k, "ddpm-shards") || parse_u64(tok[1], &a))
                rc = err_set("%s:1: not a ddpm-shards manifest", path);
            else if (a != SHARD_VERSION)
                rc = err_set("%s:1: manifest version %llu, this build reads %u", path, (unsigned long long)a, SHARD_VERSION);
        } else if (nt == 2 && (!strcmp(k, "channels") || !strcmp(k, "size") ||
                               !strcmp(k, "records_per_shard") || !strcmp(k, "zstd_level") ||
                               !strcmp(k, "source_items"))) {
            int small = strcmp(k, "source_items") != 0; /* the others fit 32 bits */
            if (parse_u64(tok[1], &a) || (small && a > INT32_MAX))
                rc = err_set("%s:%d: %s: bad number '%s'", path, lineno, k, tok[1]);
            if (rc == 0) {
                if (!strcmp(k, "channels")) m->channels = (int)a, seen |= 1;
                else if (!strcmp(k, "size")) m->size = (int)a, seen |= 2;
                else if (!strcmp(k, "records_per_shard")) m->records_per_shard = (uint32_t)a, seen |= 4;
                else if (!strcmp(k, "zstd_level")) m->zstd_level = (int)a, seen |= 8;
                else m->source_items = a, seen |= 16;
            }
        } else if (nt == 2 && (!strcmp(k, "source_format") || !strcmp(k, "source_path"))) {
            char *v = unescape(tok[1]);
            if (!v) rc = err_set("%s:%d: %s: bad escape in '%s'", path, lineno, k, tok[1]);
            else if (!strcmp(k, "source_format")) free(m->source_format), m->source_format = v, seen |= 32;
            else free(m->source_path), m->source_path = v, seen |= 64;
        } else if (!strcmp(k, "shard")) {
            if (nt != 4 || parse_u64(tok[2], &a) || parse_u64(tok[3], &b) || strchr(tok[1], '/') || a == 0)
                rc = err_set("%s:%d: expected 'shard NAME RECORDS SOURCE_END'", path, lineno);
            else
                shard_manifest_add_shard(m, tok[1], a, b);
        } else if (!strcmp(k, "skip")) {
            char *key = nt == 4 ? unescape(tok[2]) : NULL, *why = nt == 4 ? unescape(tok[3]) : NULL;
            if (!key || !why || parse_u64(tok[1], &a))
                rc = err_set("%s:%d: expected 'skip SOURCE_INDEX KEY REASON'", path, lineno);
            else
                shard_manifest_add_skip(m, a, key, why);
            free(key);
            free(why);
        } else if (!strcmp(k, "complete")) {
            if (nt != 3 || parse_u64(tok[1], &complete_records) || parse_u64(tok[2], &complete_skips))
                rc = err_set("%s:%d: expected 'complete RECORDS SKIPPED'", path, lineno);
            else
                m->complete = 1;
        } else {
            rc = err_set("%s:%d: unknown line '%s'", path, lineno, k);
        }
    }
    if (rc == 0 && ferror(f)) rc = err_set("%s: read error", path);
    if (rc == 0 && seen != 127)
        rc = err_set("%s: manifest lacks some of channels, size, records_per_shard, zstd_level, "
                     "source_format, source_path, source_items", path);
    if (rc == 0 && m->complete &&
        (complete_records != shard_manifest_records(m) || complete_skips != m->n_skips))
        rc = err_set("%s: 'complete %llu %llu' disagrees with the %llu records and %zu skips listed",
                     path, (unsigned long long)complete_records, (unsigned long long)complete_skips,
                     (unsigned long long)shard_manifest_records(m), m->n_skips);
    fclose(f);
    free(path);
    if (rc != 0) shard_manifest_free(m);
    return rc;
}
