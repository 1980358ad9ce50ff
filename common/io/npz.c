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

int npz_write_uint8_ex(const char *path, const char *key, const uint8_t *data, const int *shape,
                       int ndim, int force_zip64) {
    if (ndim < 1 || ndim > NPZ_MAX_DIMS) return err_set("%s: npz: ndim %d out of range 1..%d", path, ndim, NPZ_MAX_DIMS);
    if (!key || !key[0] || strlen(key) > 200 || strchr(key, '/'))
        return err_set("%s: npz: invalid array name '%s'", path, key ? key : "(null)");
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return err_set("%s: npz: negative dimension %d", path, shape[i]);
        count *= (uint64_t)shape[i];
    }
    char header[1024];
    size_t hlen = npy_header(header, sizeof header, shape, ndim);
    if (hlen == 0) return err_set("%s: npz: header too long", path);

    char name[256];
    int name_len = snprintf(name, sizeof name, "%s.npy", key);
    uint64_t size = hlen + count;
    int zip64 = force_zip64 || size >= 0xffffffffu;
    uint32_t crc = (uint32_t)crc_of(crc_of(crc32(0, Z_NULL, 0), (const uint8_t *)header, hlen), data, count);
    const uint32_t dos_time = 0, dos_date = (0 << 9) | (1 << 5) | 1; /* fixed 1980-01-01: reproducible files */
    uint32_t version = zip64 ? 45 : 20;
    uint32_t size32 = zip64 ? 0xffffffffu : (uint32_t)size;

    uint8_t local_buf[512];
    bytes loc = {local_buf, 0};
    put32(&loc, 0x04034b50);
    put16(&loc, version);
    put16(&loc, 0);          /* flags */
    put16(&loc, 0);          /* stored */
    put16(&loc, dos_time);
    put16(&loc, dos_date);
    put32(&loc, crc);
    put32(&loc, size32);     /* compressed size */
    put32(&loc, size32);     /* uncompressed size */
    put16(&loc, (uint32_t)name_len);
    put16(&loc, zip64 ? 20 : 0);
    putstr(&loc, name, (size_t)name_len);
    if (zip64) {
        put16(&loc, 0x0001);
        put16(&loc, 16);
        put64(&loc, size);   /* original size first, then compressed (APPNOTE 4.5.3) */
        put64(&loc, size);
    }
    uint64_t cd_offset = loc.n + size;

    uint8_t central_buf[1024];
    bytes cen = {central_buf, 0};
    put32(&cen, 0x02014b50);
    put16(&cen, (3 << 8) | version); /* made by: Unix */
    put16(&cen, version);
    put16(&cen, 0);
    put16(&cen, 0);
    put16(&cen, dos_time);
    put16(&cen, dos_date);
    put32(&cen, crc);
    put32(&cen, size32);
    put32(&cen, size32);
    put16(&cen, (uint32_t)name_len);
    put16(&cen, zip64 ? 20 : 0);
    put16(&cen, 0);          /* comment */
    put16(&cen, 0);          /* disk */
    put16(&cen, 0);          /* internal attributes */
    put32(&cen, 0644u << 16); /* external attributes: -rw-r--r-- */
    put32(&cen, 0);          /* local header offset */
    putstr(&cen, name, (size_t)name_len);
    if (zip64) {
        put16(&cen, 0x0001);
        put16(&cen, 16);
        put64(&cen, size);
        put64(&cen, size);
    }
    uint64_t cd_size = cen.n;
    if (zip64) {
        put32(&cen, 0x06064b50); /* zip64 end of central directory */
        put64(&cen, 44);
        put16(&cen, (3 << 8) | 45);
        put16(&cen, 45);
        put32(&cen, 0);
        put32(&cen, 0);
        put64(&cen, 1);
        put64(&cen, 1);
        put64(&cen, cd_size);
        put64(&cen, cd_offset);
        put32(&cen, 0x07064b50); /* its locator */
        put32(&cen, 0);
        put64(&cen, cd_offset + cd_size);
        put32(&cen, 1);
    }
    put32(&cen, 0x06054b50);
    put16(&cen, 0);
    put16(&cen, 0);
    put16(&cen, 1);
    put16(&cen, 1);
    put32(&cen, cd_size >= 0xffffffffu ? 0xffffffffu : (uint32_t)cd_size);
    put32(&cen, cd_offset >= 0xffffffffu ? 0xffffffffu : (uint32_t)cd_offset);
    put16(&cen, 0);

    size_t tn = strlen(path) + 32;
    char *tmp = xmalloc(tn);
    snprintf(tmp, tn, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        err_set("%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int ok = fwrite(loc.p, 1, loc.n, f) == loc.n && fwrite(header, 1, hlen, f) == hlen;
    for (uint64_t off = 0; ok && off < count;) {
        size_t chunk = count - off > (1u << 26) ? (1u << 26) : (size_t)(count - off);
        ok = fwrite(data + off, 1, chunk, f) == chunk;
        off += chunk;
    }
    ok = ok && fwrite(cen.p, 1, cen.n, f) == cen.n;
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
