/* .npz writer: one stored (uncompressed) zip entry holding a .npy v1.0 array. */
#include "common/io/npz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "common/core/util.h"

typedef struct {
    uint8_t *p;
    size_t n;
} bytes;

static void put16(bytes *b, uint32_t v) {
    b->p[b->n++] = (uint8_t)v;
    b->p[b->n++] = (uint8_t)(v >> 8);
}
static void put32(bytes *b, uint32_t v) {
    put16(b, v & 0xffff);
    put16(b, v >> 16);
}
static void put64(bytes *b, uint64_t v) {
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}
static void putstr(bytes *b, const char *s, size_t n) {
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

/* .npy v1.0 header: magic, version, little-endian length, a Python dict literal
 * padded with spaces to a multiple of 64 bytes and ended by '\n' (numpy's layout). */
static size_t npy_header(char *out, size_t cap, const int *shape, int ndim) {
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '|u1', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%d", i ? ", " : "", shape[i]);
    /* a 1-tuple is written "(5,)" */
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    size_t total = 10 + (size_t)n + 1;
    total = (total + 63) / 64 * 64;
    if (total > cap) return 0;
    size_t hlen = total - 10;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    out[8] = (char)(hlen & 0xff);
    out[9] = (char)(hlen >> 8);
    memcpy(out + 10, dict, (size_t)n);
    memset(out + 10 + n, ' ', total - 10 - (size_t)n - 1);
    out[total - 1] = '\n';
    return total;
}

static uLong crc_of(uLong crc, const uint8_t *p, uint64_t n) {
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return crc;
}

int npz_write_uint8(const char *path, const char *key, const uint8_t *data, const int *shape, int ndim) {
    return npz_write_uint8_ex(path, key, data, shape, ndim, 0);
}

/* What the local header and the central directory both say about the one entry. */
typedef struct {
    char name[256]; /* KEY.npy */
    size_t name_len;
    uint64_t size;  /* the .npy: header + data; stored, so also the compressed size */
    uint32_t crc;
    int zip64;
} zip_entry;

#define DOS_TIME 0u
#define DOS_DATE ((0u << 9) | (1u << 5) | 1u) /* fixed 1980-01-01: reproducible files */

static int check_args(const char *path, const char *key, const int *shape, int ndim, uint64_t *count) {
    if (ndim < 1 || ndim > NPZ_MAX_DIMS) return err_set("%s: npz: ndim %d out of range 1..%d", path, ndim, NPZ_MAX_DIMS);
    if (!key || !key[0] || strlen(key) > 200 || strchr(key, '/'))
        return err_set("%s: npz: invalid array name '%s'", path, key ? key : "(null)");
    *count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return err_set("%s: npz: negative dimension %d", path, shape[i]);
        *count *= (uint64_t)shape[i];
    }
    return 0;
}

static uint32_t zip_version(const zip_entry *e) { return e->zip64 ? 45 : 20; }

/* The fields the local header and the central directory share, from "version
 * needed to extract" to "extra field length" (APPNOTE 4.3.7 / 4.3.12). */
static void put_entry_fields(bytes *b, const zip_entry *e) {
    uint32_t size32 = e->zip64 ? 0xffffffffu : (uint32_t)e->size;
    put16(b, zip_version(e));
    put16(b, 0);          /* flags */
    put16(b, 0);          /* stored */
    put16(b, DOS_TIME);
    put16(b, DOS_DATE);
    put32(b, e->crc);
    put32(b, size32);     /* compressed size */
    put32(b, size32);     /* uncompressed size */
    put16(b, (uint32_t)e->name_len);
    put16(b, e->zip64 ? 20 : 0);
}

/* The name, then the Zip64 extra field when the sizes do not fit 32 bits. */
static void put_name_extra(bytes *b, const zip_entry *e) {
    putstr(b, e->name, e->name_len);
    if (e->zip64) {
        put16(b, 0x0001);
        put16(b, 16);
        put64(b, e->size); /* original size first, then compressed (APPNOTE 4.5.3) */
        put64(b, e->size);
    }
}

static void put_local_header(bytes *b, const zip_entry *e) {
    put32(b, 0x04034b50);
    put_entry_fields(b, e);
    put_name_extra(b, e);
}

/* The central directory entry, then (Zip64) the zip64 end record and its
 * locator, then the end of central directory record. cd_offset: where the
 * directory starts, i.e. the local header's size plus the entry's. */
static void put_central_dir(bytes *b, const zip_entry *e, uint64_t cd_offset) {
    put32(b, 0x02014b50);
    put16(b, (3 << 8) | zip_version(e)); /* made by: Unix */
    put_entry_fields(b, e);
    put16(b, 0);          /* comment */
    put16(b, 0);          /* disk */
    put16(b, 0);          /* internal attributes */
    put32(b, 0644u << 16); /* external attributes: -rw-r--r-- */
    put32(b, 0);          /* local header offset */
    put_name_extra(b, e);
    uint64_t cd_size = b->n;
    if (e->zip64) {
        put32(b, 0x06064b50); /* zip64 end of central directory */
        put64(b, 44);
        put16(b, (3 << 8) | 45);
        put16(b, 45);
        put32(b, 0);
        put32(b, 0);
        put64(b, 1);
        put64(b, 1);
        put64(b, cd_size);
        put64(b, cd_offset);
        put32(b, 0x07064b50); /* its locator */
        put32(b, 0);
        put64(b, cd_offset + cd_size);
        put32(b, 1);
    }
    put32(b, 0x06054b50);
    put16(b, 0);
    put16(b, 0);
    put16(b, 1);
    put16(b, 1);
    put32(b, cd_size >= 0xffffffffu ? 0xffffffffu : (uint32_t)cd_size);
    put32(b, cd_offset >= 0xffffffffu ? 0xffffffffu : (uint32_t)cd_offset);
    put16(b, 0);
}

/* Writes local header, .npy header, data and central directory to PATH.tmp.PID,
 * flushes and fsyncs it and renames it over path; the temp file is removed on
 * failure. */
static int write_file(const char *path, const bytes *loc, const char *header, size_t hlen, const uint8_t *data,
                      uint64_t count, const bytes *cen) {
    size_t tn = strlen(path) + 32;
    char *tmp = xmalloc(tn);
    snprintf(tmp, tn, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        err_set("%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int ok = fwrite(loc->p, 1, loc->n, f) == loc->n && fwrite(header, 1, hlen, f) == hlen;
    for (uint64_t off = 0; ok && off < count;) {
        size_t chunk = count - off > (1u << 26) ? (1u << 26) : (size_t)(count - off);
        ok = fwrite(data + off, 1, chunk, f) == chunk;
        off += chunk;
    }
    ok = ok && fwrite(cen->p, 1, cen->n, f) == cen->n;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    int rc = 0;
    if (!ok) rc = err_set("%s: write failed: %s", tmp, strerror(saved));
    else if (rename(tmp, path) != 0) rc = err_set("%s: rename from %s failed: %s", path, tmp, strerror(errno));
    if (rc != 0) unlink(tmp);
    free(tmp);
    return rc;
}

int npz_write_uint8_ex(const char *path, const char *key, const uint8_t *data, const int *shape,
                       int ndim, int force_zip64) {
    uint64_t count = 0;
    if (check_args(path, key, shape, ndim, &count)) return -1;
    char header[1024];
    size_t hlen = npy_header(header, sizeof header, shape, ndim);
    if (hlen == 0) return err_set("%s: npz: header too long", path);

    zip_entry e;
    e.name_len = (size_t)snprintf(e.name, sizeof e.name, "%s.npy", key);
    e.size = hlen + count;
    e.zip64 = force_zip64 || e.size >= 0xffffffffu;
    e.crc = (uint32_t)crc_of(crc_of(crc32(0, Z_NULL, 0), (const uint8_t *)header, hlen), data, count);

    uint8_t local_buf[512], central_buf[1024];
    bytes loc = {local_buf, 0}, cen = {central_buf, 0};
    put_local_header(&loc, &e);
    put_central_dir(&cen, &e, loc.n + e.size);
    return write_file(path, &loc, header, hlen, data, count, &cen);
}
