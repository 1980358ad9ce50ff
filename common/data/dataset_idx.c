/* IDX image files (MNIST, Fashion-MNIST): plain, or gzip read with zlib's inflate.
 *
 * Why inflate and not zlib's gz API: gzread reports a stream cut before its
 * CRC-32/ISIZE trailer as a quiet end of file (the error only shows in gzerror)
 * and skips non-gzip bytes after the last member without a word. Here every gzip
 * member must end with a verified trailer, and anything after the last member
 * that is not another member is an error. */
#include "common/data/dataset_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/core/util.h"

#define IDX_HEADER 16
#define IDX_MAGIC_U8_3D 0x00000803u
#define IDX_MAGIC_U8_1D 0x00000801u
/* Deflate cannot expand one byte into more than 1032 (a 258-byte match in 2 bits):
 * a gzip file of n bytes holds at most 1032*n bytes of data. */
#define GZ_MAX_RATIO 1032u
#define IDX_CHUNK ((size_t)1 << 16)

typedef struct {
    FILE *f;
    const char *path;
    int gz;
    size_t file_bytes;
    /* gzip only */
    z_stream zs;
    int zinit, file_eof, member_end, early_end;
    size_t in_read;  /* compressed bytes read from the file so far */
    uint8_t in[IDX_CHUNK];
} idx_reader;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Byte offset in the compressed file of the next byte inflate will look at. */
static size_t gz_offset(const idx_reader *r) { return r->in_read - r->zs.avail_in; }

static int gz_refill(idx_reader *r) {
    if (r->zs.avail_in > 0 || r->file_eof) return 0;
    size_t n = fread(r->in, 1, IDX_CHUNK, r->f);
    if (n == 0) {
        if (ferror(r->f)) return err_set("%s: read error: %s", r->path, strerror(errno));
        r->file_eof = 1;
    }
    r->zs.next_in = r->in;
    r->zs.avail_in = (uInt)n;
    r->in_read += n;
    return 0;
}

/* After a member's trailer: nothing more, or another gzip member (gzip -c a b
 * concatenates them); any other byte is trailing garbage. */
static int gz_next_member(idx_reader *r) {
    if (gz_refill(r) != 0) return -1;
    if (r->zs.avail_in == 0) return 0; /* clean end of file */
    const uint8_t *p = r->zs.next_in;
    if (p[0] != 0x1f || (r->zs.avail_in >= 2 && p[1] != 0x8b))
        return err_set("%s: trailing garbage after the gzip stream (from compressed byte offset %zu)", r->path,
                       gz_offset(r));
    inflateReset(&r->zs); /* inflate checks the rest of the member's header */
    r->member_end = 0;
    return 0;
}

/* Up to n bytes of decompressed data; fewer only at the end (early_end set when the
 * gzip stream stopped before its trailer). Returns the count or -1 (err_msg). */
static long long gz_read(idx_reader *r, uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        if (r->member_end) {
            if (gz_next_member(r) != 0) return -1;
            if (r->member_end) break; /* nothing after the last member */
        }
        if (gz_refill(r) != 0) return -1;
        if (r->zs.avail_in == 0) { /* the file ended inside a member */
            r->early_end = 1;
            break;
        }
        size_t want = n - got > (1u << 30) ? (1u << 30) : n - got;
        r->zs.next_out = buf + got;
        r->zs.avail_out = (uInt)want;
        int ret = inflate(&r->zs, Z_NO_FLUSH);
        got += want - r->zs.avail_out;
        if (ret == Z_STREAM_END) r->member_end = 1;
        else if (ret != Z_OK && ret != Z_BUF_ERROR)
            return err_set("%s: corrupt gzip data near compressed byte offset %zu: %s", r->path, gz_offset(r),
                           r->zs.msg ? r->zs.msg : "inflate failed");
    }
    return (long long)got;
}

static long long idx_read(idx_reader *r, uint8_t *buf, size_t n) {
    if (r->gz) return gz_read(r, buf, n);
    size_t got = fread(buf, 1, n, r->f);
    if (got < n && ferror(r->f)) return err_set("%s: read error: %s", r->path, strerror(errno));
    return (long long)got;
}

static int idx_reader_open(idx_reader *r, const char *path) {
    memset(r, 0, offsetof(idx_reader, in));
    r->path = path;
    /* O_NONBLOCK: a FIFO must not hang the open (it is refused below) */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    r->f = fd < 0 ? NULL : fdopen(fd, "rb");
    if (!r->f) {
        int e = errno;
        if (fd >= 0) close(fd);
        return err_set("%s: cannot open IDX file: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fileno(r->f), &st) != 0 || !S_ISREG(st.st_mode))
        return err_set("%s: not a regular file", path);
    r->file_bytes = (size_t)st.st_size;
    int c0 = getc(r->f), c1 = getc(r->f);
    r->gz = c0 == 0x1f && c1 == 0x8b;
    rewind(r->f);
    if (!r->gz) return 0;
    if (inflateInit2(&r->zs, 16 + MAX_WBITS) != Z_OK) return err_set("%s: zlib init failed", path);
    r->zinit = 1;
    return 0;
}

static void idx_reader_close(idx_reader *r) {
    if (r->zinit) inflateEnd(&r->zs);
    if (r->f) fclose(r->f);
}

/* The magic of an IDX header (h bytes read into hdr): 3-D images when images,
 * else 1-D labels; the other kind is named, so a label file given as the images
 * (or the reverse) says so. */
static int idx_check_magic(const idx_reader *r, const uint8_t *hdr, long long h, int images) {
    const char *kind = r->gz ? "gzip IDX" : "IDX";
    if (h < 4)
        return err_set("%s: %s file too short (%lld bytes) for an IDX header", r->path, kind, h);
    uint32_t magic = be32(hdr);
    uint32_t want = images ? IDX_MAGIC_U8_3D : IDX_MAGIC_U8_1D;
    uint32_t other = images ? IDX_MAGIC_U8_1D : IDX_MAGIC_U8_3D;
    if (magic == other)
        return err_set("%s: bad magic 0x%08x: this is an IDX %s file, expected %s (0x%08x)", r->path,
                       magic, images ? "label" : "image", images ? "images" : "labels", want);
    if (magic != want)
        return err_set("%s: bad magic 0x%08x, expected 0x%08x (IDX unsigned-byte %s)", r->path, magic,
                       want, images ? "3-D images" : "1-D labels");
    return 0;
}

/* The header: magic, count and dims checked against the config, the file and the
 * format's limits before anything is allocated. *want = count * rows * cols. */
static int idx_header(idx_reader *r, const struct dataset *ds, uint32_t *count, size_t *want) {
    const char *path = r->path;
    uint8_t hdr[IDX_HEADER];
    long long h = idx_read(r, hdr, IDX_HEADER);
    if (h < 0) return -1;
    if (idx_check_magic(r, hdr, h, 1) != 0) return -1;
    if (h < IDX_HEADER) return err_set("%s: truncated IDX header (%lld of %d bytes)", path, h, IDX_HEADER);
    uint32_t n = be32(hdr + 4), rows = be32(hdr + 8), cols = be32(hdr + 12);
    if (rows != (uint32_t)ds->size || cols != (uint32_t)ds->size || ds->channels != 1)
        return err_set("%s: images are %ux%ux1, expected %dx%dx%d", path, rows, cols, ds->size, ds->size,
                       ds->channels);
    if (n == 0) return err_set("%s: IDX header says 0 images", path);
    size_t rec = (size_t)rows * cols, total;
    if (size_mul(n, rec, want) != 0 || size_add(*want, IDX_HEADER, &total) != 0)
        return err_set("%s: IDX header declares an impossible size (%u images of %ux%u)", path, n, rows, cols);
    /* A plain file holds exactly what it declares; a gzip file at most 1032 times
     * its size. Either way a lying header is refused before the allocation. */
    if (!r->gz && total > r->file_bytes) {
        size_t first_missing = (r->file_bytes - IDX_HEADER) / rec;
        return err_set("%s: truncated: header says %u images of %zu bytes but the data ends at byte offset %zu; "
                       "first missing record is image %zu (byte offset %zu)",
                       path, n, rec, r->file_bytes, first_missing, IDX_HEADER + first_missing * rec);
    }
    if (r->gz && total / GZ_MAX_RATIO > r->file_bytes)
        return err_set("%s: header says %u images (%zu bytes) but a %zu-byte gzip file cannot hold more than "
                       "%zu bytes (deflate's limit is %u:1): truncated or corrupt",
                       path, n, total, r->file_bytes, r->file_bytes * GZ_MAX_RATIO, GZ_MAX_RATIO);
    *count = n;
    return 0;
}

static int idx_load(idx_reader *r, struct dataset *ds) {
    const char *path = r->path;
    uint32_t n = 0;
    size_t want = 0;
    if (idx_header(r, ds, &n, &want) != 0) return -1;
    size_t rec = (size_t)ds->size * ds->size;
    /* gzip: grow the buffer as data arrives, so that a count that passes the ratio
     * bound but not the data still cannot make us allocate it all at once. */
    size_t cap = r->gz && want > ((size_t)64 << 20) ? (size_t)64 << 20 : want, got = 0;
    uint8_t *buf = xmalloc(cap);
    for (;;) {
        long long got_now = idx_read(r, buf + got, cap - got);
        if (got_now < 0) {
            err_prefix("image %zu: ", (got) / rec);
            free(buf);
            return -1;
        }
        got += (size_t)got_now;
        if (got < cap || cap == want) break;
        cap = cap * 2 < want ? cap * 2 : want;
        buf = xrealloc(buf, cap);
    }
    if (got < want) {
        size_t first_missing = got / rec;
        free(buf);
        return err_set("%s: truncated%s: header says %u images of %zu bytes but the data ends at byte offset %zu; "
                       "first missing record is image %zu (byte offset %zu)",
                       path, r->early_end ? " (gzip stream ends early)" : "", n, rec, IDX_HEADER + got,
                       first_missing, IDX_HEADER + first_missing * rec);
    }
    uint8_t extra;
    long long t = idx_read(r, &extra, 1);
    if (t != 0) {
        if (t > 0)
            err_set("%s: trailing bytes after the %u images declared in the header (from byte offset %zu)", path, n,
                    IDX_HEADER + want);
        free(buf);
        return -1;
    }
    if (r->early_end) {
        free(buf);
        return err_set("%s: gzip stream ends early after the last image (compressed byte offset %zu): the "
                       "end of the deflate stream or its CRC-32/size trailer is missing, so the data cannot be "
                       "verified (truncated file?)",
                       path, gz_offset(r));
    }
    ds->count = n;
    ds->images = buf; /* IDX is row-major 1-channel: already CHW */
    return 0;
}

int dataset_load_idx(struct dataset *ds) {
    idx_reader *r = xmalloc(sizeof *r);
    int rc = idx_reader_open(r, ds->path);
    if (rc == 0) rc = idx_load(r, ds);
    idx_reader_close(r);
    free(r);
    return rc;
}

/* ---------- IDX label files (magic 0x00000801: a count, then one byte a record) ---------- */

#define IDX_LABEL_HEADER 8

static int idx_labels_load(idx_reader *r, uint8_t **labels, size_t *count) {
    const char *path = r->path;
    uint8_t hdr[IDX_LABEL_HEADER];
    long long h = idx_read(r, hdr, IDX_LABEL_HEADER);
    if (h < 0) return -1;
    if (idx_check_magic(r, hdr, h, 0) != 0) return -1;
    if (h < IDX_LABEL_HEADER)
        return err_set("%s: truncated IDX label header (%lld of %d bytes)", path, h, IDX_LABEL_HEADER);
    size_t n = be32(hdr + 4);
    if (n == 0) return err_set("%s: IDX header says 0 labels", path);
    /* the header's count checked against what the file can hold, before allocating */
    if (!r->gz && n + IDX_LABEL_HEADER > r->file_bytes)
        return err_set("%s: truncated: header says %zu labels but the data ends at byte offset %zu; "
                       "first missing record is label %zu", path, n, r->file_bytes,
                       r->file_bytes - IDX_LABEL_HEADER);
    if (r->gz && (n + IDX_LABEL_HEADER) / GZ_MAX_RATIO > r->file_bytes)
        return err_set("%s: header says %zu labels but a %zu-byte gzip file cannot hold them "
                       "(deflate's limit is %u:1): truncated or corrupt", path, n, r->file_bytes,
                       GZ_MAX_RATIO);
    uint8_t *buf = xmalloc(n);
    long long got = idx_read(r, buf, n);
    uint8_t extra;
    long long t = got == (long long)n ? idx_read(r, &extra, 1) : 0;
    int rc = 0;
    if (got < 0 || t < 0)
        rc = -1;
    else if ((size_t)got < n)
        rc = err_set("%s: truncated%s: header says %zu labels but the data ends at byte offset %zu; "
                     "first missing record is label %lld", path,
                     r->early_end ? " (gzip stream ends early)" : "", n, IDX_LABEL_HEADER + (size_t)got,
                     got);
    else if (t > 0)
        rc = err_set("%s: trailing bytes after the %zu labels declared in the header (from byte "
                     "offset %zu)", path, n, IDX_LABEL_HEADER + n);
    else if (r->early_end)
        rc = err_set("%s: gzip stream ends early after the last label: its CRC-32/size trailer "
                     "is missing (truncated file?)", path);
    if (rc != 0) {
        free(buf);
        return -1;
    }
    *labels = buf;
    *count = n;
    return 0;
}

int idx_labels_read(const char *path, uint8_t **labels, size_t *count) {
    *labels = NULL;
    *count = 0;
    idx_reader *r = xmalloc(sizeof *r);
    int rc = idx_reader_open(r, path);
    if (rc == 0) rc = idx_labels_load(r, labels, count);
    idx_reader_close(r);
    free(r);
    return rc;
}
