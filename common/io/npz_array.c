/* .npz reading (stored or deflated entries, Zip64) and float64 writing. */
#include "common/io/npz_array.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/core/util.h"

#define IN_CHUNK (1u << 16)
/* Deflate's best case is a 258-byte match per code of at least 2 bits: an entry
 * inflates to at most 1032 times its compressed size (plus a few bytes). A declared
 * uncompressed size beyond that cannot be in the file. */
#define DEFLATE_MAX_RATIO 1032u
/* Stated limits: a .npy header of at most 64 KiB; a central directory of at most 1 GiB. */
#define NPY_MAX_HEADER 65536u
#define ZIP_MAX_CD (1u << 30)

struct npz_reader {
    FILE *f;
    char *path, *key;
    int method;            /* 0 stored, 8 deflate */
    uint64_t comp_left;    /* compressed bytes of the entry not yet read from the file */
    uint64_t usize;        /* the entry's declared uncompressed size (.npy header + data) */
    uint64_t data_left;    /* array bytes not yet delivered */
    uint32_t crc_expect;
    uLong crc;
    z_stream zs;
    int zs_live;
    uint8_t *in;
    npz_dtype dtype;
    int ndim;
    int64_t shape[NPZ_ARRAY_MAX_DIMS];
    uint64_t count;
};

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const uint8_t *p) { return rd16(p) | rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

typedef struct {
    int method;
    uint32_t crc;
    uint64_t csize, usize, offset;
    uint64_t cd_off; /* where the central directory starts: entry data must end before it */
} zip_entry;

/* Reads the Zip64 end of central directory record that the locator before the
 * classic record (at file offset eocd_pos) points to. */
static int zip64_dir(FILE *f, const char *path, uint64_t fsize, const uint8_t *loc,
                     uint64_t *entries, uint64_t *cd_size, uint64_t *cd_off) {
    if (rd32(loc) != 0x07064b50u) return err_set("%s: Zip64 archive without a Zip64 locator", path);
    uint64_t z64 = rd64(loc + 8);
    uint8_t rec[56];
    if (fsize < 56 || z64 > fsize - 56 || fseeko(f, (off_t)z64, SEEK_SET) != 0 ||
        fread(rec, 1, 56, f) != 56 || rd32(rec) != 0x06064b50u)
        return err_set("%s: bad Zip64 end of central directory record", path);
    *entries = rd64(rec + 32);
    *cd_size = rd64(rec + 40);
    *cd_off = rd64(rec + 48);
    return 0;
}

/* Fills e from central directory record h (fn name bytes, ex extra bytes). */
static void cd_entry(const uint8_t *h, size_t fn, size_t ex, zip_entry *e) {
    e->method = (int)rd16(h + 10);
    e->crc = rd32(h + 16);
    e->csize = rd32(h + 20);
    e->usize = rd32(h + 24);
    e->offset = rd32(h + 42);
    /* Zip64 extra field: the 64-bit values of the fields set to 0xffffffff, in order */
    const uint8_t *x = h + 46 + fn, *xend = x + ex;
    while (xend - x >= 4) {
        uint32_t id = rd16(x), sz = rd16(x + 2);
        if (sz > (size_t)(xend - x) - 4) break;
        if (id == 0x0001) {
            const uint8_t *v = x + 4, *vend = x + 4 + sz;
            if (e->usize == 0xffffffffu && vend - v >= 8) { e->usize = rd64(v); v += 8; }
            if (e->csize == 0xffffffffu && vend - v >= 8) { e->csize = rd64(v); v += 8; }
            if (e->offset == 0xffffffffu && vend - v >= 8) { e->offset = rd64(v); v += 8; }
        }
        x += 4 + sz;
    }
}

/* Finds entry `name` through the central directory of the fsize-byte file f.
 * Returns 1 found, 0 not found, -1 error (err_msg). Every offset and size read is
 * checked against the file before it is used. */
static int zip_find(FILE *f, const char *path, uint64_t fsize, const char *name, zip_entry *e) {
    if (fsize < 22) return err_set("%s: not a zip archive (%llu bytes)", path, (unsigned long long)fsize);
    size_t tail = fsize < 65557 ? (size_t)fsize : 65557;
    uint8_t *buf = xmalloc(tail);
    int rc = -1;
    if (fseeko(f, (off_t)(fsize - tail), SEEK_SET) != 0 || fread(buf, 1, tail, f) != tail) {
        err_set("%s: cannot read: %m", path);
        goto out;
    }
    long eocd = -1;
    for (long i = (long)tail - 22; i >= 0; i--)
        if (rd32(buf + i) == 0x06054b50u) { eocd = i; break; }
    if (eocd < 0) {
        err_set("%s: not a zip archive (no end of central directory record)", path);
        goto out;
    }
    uint64_t entries = rd16(buf + eocd + 10), cd_size = rd32(buf + eocd + 12);
    uint64_t cd_off = rd32(buf + eocd + 16);
    if (entries == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
        /* Zip64: the locator sits just before the classic record */
        if (eocd < 20) {
            err_set("%s: Zip64 archive without a Zip64 locator", path);
            goto out;
        }
        if (zip64_dir(f, path, fsize, buf + eocd - 20, &entries, &cd_size, &cd_off) != 0) goto out;
    }
    if (cd_size > fsize || cd_off > fsize - cd_size || cd_size > ZIP_MAX_CD) {
        err_set("%s: central directory out of bounds (%llu bytes at offset %llu of a %llu-byte file)",
                path, (unsigned long long)cd_size, (unsigned long long)cd_off, (unsigned long long)fsize);
        goto out;
    }
    free(buf);
    buf = xmalloc(cd_size ? (size_t)cd_size : 1);
    if (fseeko(f, (off_t)cd_off, SEEK_SET) != 0 || fread(buf, 1, (size_t)cd_size, f) != cd_size) {
        err_set("%s: cannot read the central directory", path);
        goto out;
    }
    size_t pos = 0, nlen = strlen(name);
    rc = 0;
    for (uint64_t k = 0; k < entries; k++) {
        if (cd_size - pos < 46 || rd32(buf + pos) != 0x02014b50u) {
            rc = err_set("%s: corrupt central directory (entry %llu)", path, (unsigned long long)k);
            break;
        }
        const uint8_t *h = buf + pos;
        size_t fn = rd16(h + 28), ex = rd16(h + 30), cm = rd16(h + 32);
        if (46 + fn + ex + cm > cd_size - pos) {
            rc = err_set("%s: corrupt central directory (entry %llu)", path, (unsigned long long)k);
            break;
        }
        if (fn == nlen && memcmp(h + 46, name, nlen) == 0) {
            cd_entry(h, fn, ex, e);
            e->cd_off = cd_off;
            rc = 1;
            break;
        }
        pos += 46 + fn + ex + cm;
    }
out:
    free(buf);
    return rc;
}

/* A deflated entry's next compressed bytes, when inflate has used up the last. */
static int refill_input(npz_reader *r) {
    if (r->zs.avail_in != 0 || r->comp_left == 0) return 0;
    size_t want = r->comp_left < IN_CHUNK ? (size_t)r->comp_left : IN_CHUNK;
    if (fread(r->in, 1, want, r->f) != want)
        return err_set("%s: entry %s.npy is truncated", r->path, r->key);
    r->comp_left -= want;
    r->zs.next_in = r->in;
    r->zs.avail_in = (uInt)want;
    return 0;
}

/* Pulls up to n bytes of the entry's uncompressed stream into dst. */
static int entry_read(npz_reader *r, uint8_t *dst, size_t n) {
    if (r->method == 0) {
        if (n > r->comp_left || fread(dst, 1, n, r->f) != n)
            return err_set("%s: entry %s.npy is truncated", r->path, r->key);
        r->comp_left -= n;
    } else {
        r->zs.next_out = dst;
        r->zs.avail_out = (uInt)n;
        while (r->zs.avail_out > 0) {
            if (refill_input(r) != 0) return -1;
            int zr = inflate(&r->zs, Z_NO_FLUSH);
            if (zr == Z_STREAM_END && r->zs.avail_out > 0)
                return err_set("%s: entry %s.npy inflates to fewer bytes than its declared size %llu",
                               r->path, r->key, (unsigned long long)r->usize);
            if (zr == Z_BUF_ERROR && r->zs.avail_in == 0 && r->comp_left == 0)
                return err_set("%s: entry %s.npy is truncated", r->path, r->key);
            if (zr != Z_OK && zr != Z_STREAM_END)
                return err_set("%s: entry %s.npy: corrupt deflate data (zlib %d)", r->path, r->key, zr);
            if (zr == Z_OK && r->zs.avail_in == 0 && r->comp_left == 0 && r->zs.avail_out > 0)
                return err_set("%s: entry %s.npy is truncated", r->path, r->key);
        }
    }
    r->crc = crc32(r->crc, dst, (uInt)n);
    return 0;
}

/* Once every declared byte was delivered: a deflate stream must end there, with
 * nothing after it (the inflated size equals the declared size and the header's
 * shape), and the CRC-32 must match. */
static int entry_finish(npz_reader *r) {
    if (r->method == 8) {
        uint8_t scratch[64];
        int zr = Z_OK;
        while (zr != Z_STREAM_END) {
            if (refill_input(r) != 0) return -1;
            r->zs.next_out = scratch;
            r->zs.avail_out = sizeof scratch;
            zr = inflate(&r->zs, Z_NO_FLUSH);
            if (r->zs.avail_out != sizeof scratch)
                return err_set("%s: entry %s.npy inflates to more than its declared %llu bytes",
                               r->path, r->key, (unsigned long long)r->usize);
            if (zr != Z_OK && zr != Z_STREAM_END) {
                if (r->zs.avail_in == 0 && r->comp_left == 0)
                    return err_set("%s: entry %s.npy is truncated", r->path, r->key);
                return err_set("%s: entry %s.npy: corrupt deflate data (zlib %d)", r->path, r->key, zr);
            }
        }
        if (r->zs.avail_in != 0 || r->comp_left != 0)
            return err_set("%s: entry %s.npy: %llu bytes after the end of its deflate stream", r->path,
                           r->key, (unsigned long long)(r->zs.avail_in + r->comp_left));
    } else if (r->comp_left != 0) {
        return err_set("%s: entry %s.npy: %llu bytes after its array data", r->path, r->key,
                       (unsigned long long)r->comp_left);
    }
    if ((uint32_t)r->crc != r->crc_expect)
        return err_set("%s: array %s: CRC-32 mismatch (corrupt archive)", r->path, r->key);
    return 0;
}

/* The value of 'name': ... in a .npy header dict, copied (without quotes) into out. */
static int dict_value(const char *dict, const char *name, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "'%s':", name);
    const char *p = strstr(dict, pat);
    if (!p) return -1;
    p += strlen(pat);
    while (*p == ' ') p++;
    size_t n = 0;
    if (*p == '\'') {
        p++;
        while (*p && *p != '\'' && n + 1 < cap) out[n++] = *p++;
    } else if (*p == '(') {
        while (*p && *p != ')' && n + 1 < cap) out[n++] = *p++;
        if (*p == ')' && n + 1 < cap) out[n++] = ')';
    } else {
        while (*p && *p != ',' && *p != '}' && n + 1 < cap) out[n++] = *p++;
    }
    out[n] = 0;
    return 0;
}

/* A shape tuple "(a, b, c)" / "(a,)" / "()": each dimension a decimal number, the
 * element count their product, checked for overflow. */
static int parse_shape(npz_reader *r, const char *s) {
    const char *p = s + 1;
    size_t dims[NPZ_ARRAY_MAX_DIMS];
    r->ndim = 0;
    if (*s != '(') goto bad;
    for (;;) {
        while (*p == ' ') p++;
        if (*p == ')') break;
        if (*p < '0' || *p > '9' || r->ndim == NPZ_ARRAY_MAX_DIMS) goto bad;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno == ERANGE || v > (unsigned long long)INT64_MAX || (unsigned long long)(size_t)v != v)
            goto bad;
        dims[r->ndim] = (size_t)v;
        r->shape[r->ndim++] = (int64_t)v;
        p = end;
        if (*p == 'L') p++; /* Python 2's long literals */
        while (*p == ' ') p++;
        if (*p == ',') p++;
        else if (*p != ')') goto bad;
    }
    if (p[1] != 0) goto bad;
    size_t count, bytes;
    if (size_prod(dims, r->ndim, &count) || size_mul(count, (size_t)r->dtype, &bytes))
        return err_set("%s: entry %s.npy: shape %s: its size overflows", r->path, r->key, s);
    r->count = count;
    r->data_left = bytes;
    return 0;
bad:
    return err_set("%s: entry %s.npy: bad shape %s", r->path, r->key, s);
}

static int parse_npy_header(npz_reader *r) {
    uint8_t pre[12];
    if (r->usize < 10) return err_set("%s: entry %s.npy is too short for a .npy array", r->path, r->key);
    if (entry_read(r, pre, 10) != 0) return -1;
    if (memcmp(pre, "\x93NUMPY", 6) != 0)
        return err_set("%s: entry %s.npy is not a .npy array (bad magic)", r->path, r->key);
    size_t hlen, used = 10;
    if (pre[6] == 1) {
        hlen = rd16(pre + 8);
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (r->usize < 12) return err_set("%s: entry %s.npy is too short for a .npy array", r->path, r->key);
        if (entry_read(r, pre + 10, 2) != 0) return -1;
        hlen = rd32(pre + 8);
        used = 12;
    } else {
        return err_set("%s: entry %s.npy: unsupported .npy version %d", r->path, r->key, pre[6]);
    }
    if (hlen > NPY_MAX_HEADER)
        return err_set("%s: entry %s.npy: header of %zu bytes (at most %u)", r->path, r->key, hlen,
                       NPY_MAX_HEADER);
    if (hlen > r->usize - used)
        return err_set("%s: entry %s.npy: its %zu-byte header is longer than the entry (%llu bytes)",
                       r->path, r->key, hlen, (unsigned long long)r->usize);
    char *dict = xmalloc(hlen + 1);
    if (entry_read(r, (uint8_t *)dict, hlen) != 0) {
        free(dict);
        return -1;
    }
    dict[hlen] = 0;
    char descr[32], fortran[16], shape[256];
    int rc = 0;
    if (dict_value(dict, "descr", descr, sizeof descr) || dict_value(dict, "fortran_order", fortran, sizeof fortran) ||
        dict_value(dict, "shape", shape, sizeof shape)) {
        rc = err_set("%s: entry %s.npy: malformed header", r->path, r->key);
        goto out;
    }
    if (!strcmp(descr, "|u1") || !strcmp(descr, "<u1") || !strcmp(descr, "u1")) r->dtype = NPZ_DTYPE_U8;
    else if (!strcmp(descr, "<f4")) r->dtype = NPZ_DTYPE_F32;
    else if (!strcmp(descr, "<f8")) r->dtype = NPZ_DTYPE_F64;
    else {
        rc = err_set("%s: entry %s.npy: dtype '%s' is not supported (uint8, <f4, <f8)", r->path,
                     r->key, descr);
        goto out;
    }
    if (strcmp(fortran, "False") != 0) {
        rc = err_set("%s: entry %s.npy: Fortran order is not supported", r->path, r->key);
        goto out;
    }
    if ((rc = parse_shape(r, shape)) != 0) goto out;
    /* the shape must account for exactly the bytes the entry declares (and the
     * declared size was checked against the file by the caller) */
    uint64_t held = r->usize - used - hlen;
    if (r->data_left != held)
        rc = err_set("%s: entry %s.npy: its header's shape %s needs %llu data bytes, the entry "
                     "holds %llu", r->path, r->key, shape, (unsigned long long)r->data_left,
                     (unsigned long long)held);
out:
    free(dict);
    return rc;
}

/* Checks entry e's sizes against the file (its data lies between its local header
 * and the central directory) and positions r->f at its data. */
static int entry_locate(npz_reader *r, const zip_entry *e, const char *name) {
    uint8_t lh[30];
    if (e->cd_off < 30 || e->offset > e->cd_off - 30 || fseeko(r->f, (off_t)e->offset, SEEK_SET) != 0 ||
        fread(lh, 1, 30, r->f) != 30 || rd32(lh) != 0x04034b50u)
        return err_set("%s: entry %s: bad local header", r->path, name);
    if (rd16(lh + 6) & 1) return err_set("%s: entry %s is encrypted", r->path, name);
    uint64_t start = e->offset + 30 + rd16(lh + 26) + rd16(lh + 28);
    if (start > e->cd_off || e->csize > e->cd_off - start)
        return err_set("%s: entry %s: its %llu compressed bytes run past the end of the archive's data",
                       r->path, name, (unsigned long long)e->csize);
    if (e->method == 0 && e->csize != e->usize)
        return err_set("%s: entry %s is stored but declares %llu bytes uncompressed and %llu in the file",
                       r->path, name, (unsigned long long)e->usize, (unsigned long long)e->csize);
    if (e->method == 8 && e->usize / DEFLATE_MAX_RATIO > e->csize)
        return err_set("%s: entry %s declares %llu uncompressed bytes, more than its %llu compressed "
                       "bytes can hold (deflate expands at most %u:1)", r->path, name,
                       (unsigned long long)e->usize, (unsigned long long)e->csize, DEFLATE_MAX_RATIO);
    if (e->method != 0 && e->method != 8)
        return err_set("%s: entry %s uses compression method %d (only stored and deflate are supported)",
                       r->path, name, e->method);
    if (fseeko(r->f, (off_t)start, SEEK_SET) != 0)
        return err_set("%s: entry %s: cannot seek to its data", r->path, name);
    return 0;
}

int npz_reader_open(npz_reader **out, const char *path, const char *key) {
    *out = NULL;
    npz_reader *r = xcalloc(1, sizeof *r);
    r->path = xstrdup(path);
    r->key = xstrdup(key);
    r->crc = crc32(0, Z_NULL, 0);
    uint64_t fsize = 0;
    char name[512];
    zip_entry e;
    r->f = fopen_regular(path, &fsize);
    if (!r->f) goto fail;
    snprintf(name, sizeof name, "%s.npy", key);
    int found = zip_find(r->f, path, fsize, name, &e);
    if (found < 0) goto fail;
    if (found == 0) {
        err_set("%s: has no array '%s'", path, key);
        goto fail;
    }
    if (entry_locate(r, &e, name) != 0) goto fail;
    r->method = e.method;
    r->comp_left = e.csize;
    r->usize = e.usize;
    r->crc_expect = e.crc;
    if (e.method == 8) {
        r->in = xmalloc(IN_CHUNK);
        if (inflateInit2(&r->zs, -MAX_WBITS) != Z_OK) {
            err_set("%s: zlib init failed", path);
            goto fail;
        }
        r->zs_live = 1;
    }
    if (parse_npy_header(r) != 0) goto fail;
    /* an empty array: nothing more to read, the entry is complete */
    if (r->data_left == 0 && entry_finish(r) != 0) goto fail;
    *out = r;
    return 0;
fail:
    npz_reader_close(r);
    return -1;
}

npz_dtype npz_reader_dtype(const npz_reader *r) { return r->dtype; }
int npz_reader_ndim(const npz_reader *r) { return r->ndim; }
const int64_t *npz_reader_shape(const npz_reader *r) { return r->shape; }
uint64_t npz_reader_count(const npz_reader *r) { return r->count; }

int npz_reader_read(npz_reader *r, void *buf, uint64_t count) {
    if (count > r->data_left / (uint64_t)r->dtype)
        return err_set("%s: array %s: asked for %llu more elements, %llu left", r->path, r->key,
                       (unsigned long long)count,
                       (unsigned long long)(r->data_left / (uint64_t)r->dtype));
    uint64_t bytes = count * (uint64_t)r->dtype;
    if (bytes == 0) return 0;
    uint8_t *p = buf;
    while (bytes > 0) {
        size_t n = bytes > (1u << 30) ? (1u << 30) : (size_t)bytes;
        if (entry_read(r, p, n) != 0) return -1;
        p += n;
        bytes -= n;
        r->data_left -= n;
    }
    if (r->data_left == 0) return entry_finish(r);
    return 0;
}

void npz_reader_close(npz_reader *r) {
    if (!r) return;
    if (r->zs_live) inflateEnd(&r->zs);
    if (r->f) fclose(r->f);
    free(r->in);
    free(r->path);
    free(r->key);
    free(r);
}

int npz_has_key(const char *path, const char *key) {
    uint64_t fsize = 0;
    FILE *f = fopen_regular(path, &fsize);
    if (!f) return -1;
    char name[512];
    snprintf(name, sizeof name, "%s.npy", key);
    zip_entry e;
    int rc = zip_find(f, path, fsize, name, &e);
    fclose(f);
    return rc;
}

/* ---------------------------------------------------------------- writer */

static void put16(uint8_t **p, uint32_t v) {
    (*p)[0] = (uint8_t)v;
    (*p)[1] = (uint8_t)(v >> 8);
    *p += 2;
}
static void put32(uint8_t **p, uint32_t v) {
    put16(p, v & 0xffff);
    put16(p, v >> 16);
}

static size_t f64_header(char *out, const npz_f64_array *a) {
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f8', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < a->ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld", i ? ", " : "",
                      (long long)a->shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", a->ndim == 1 ? "," : "");
    size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64, hlen = total - 10;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    out[8] = (char)(hlen & 0xff);
    out[9] = (char)(hlen >> 8);
    memcpy(out + 10, dict, (size_t)n);
    memset(out + 10 + n, ' ', total - 11 - (size_t)n);
    out[total - 1] = '\n';
    return total;
}

int npz_write_f64(const char *path, const npz_f64_array *arrays, int n) {
    if (n < 1 || n > 64) return err_set("%s: npz_write_f64: %d arrays (1..64)", path, n);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return err_set("%s: cannot create: %m", tmp);
    uint8_t *cd = xmalloc((size_t)n * (46 + 300));
    uint8_t *c = cd;
    uint64_t offset = 0;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        const npz_f64_array *a = &arrays[i];
        char hdr[640];
        size_t hl = f64_header(hdr, a);
        uint64_t count = 1;
        for (int d = 0; d < a->ndim; d++) count *= (uint64_t)a->shape[d];
        uint64_t size = hl + count * 8;
        char name[260];
        int nl = snprintf(name, sizeof name, "%s.npy", a->key);
        if (size >= 0xffffffffu || offset >= 0xffffffffu || nl >= (int)sizeof name) {
            ok = 0;
            err_set("%s: array '%s' too large for this writer", path, a->key);
            break;
        }
        uLong crc = crc32(0, (const Bytef *)hdr, (uInt)hl);
        const uint8_t *dp = (const uint8_t *)a->data;
        for (uint64_t left = count * 8; left > 0;) {
            uInt ch = left > (1u << 30) ? (1u << 30) : (uInt)left;
            crc = crc32(crc, dp, ch);
            dp += ch;
            left -= ch;
        }
        uint8_t lh[30], *p = lh;
        put32(&p, 0x04034b50u);
        put16(&p, 20); put16(&p, 0); put16(&p, 0); put16(&p, 0); put16(&p, 0x21);
        put32(&p, (uint32_t)crc); put32(&p, (uint32_t)size); put32(&p, (uint32_t)size);
        put16(&p, (uint32_t)nl); put16(&p, 0);
        if (fwrite(lh, 1, 30, f) != 30 || fwrite(name, 1, (size_t)nl, f) != (size_t)nl ||
            fwrite(hdr, 1, hl, f) != hl || fwrite(a->data, 8, count, f) != count) {
            ok = 0;
            err_set("%s: write failed: %m", tmp);
            break;
        }
        put32(&c, 0x02014b50u);
        put16(&c, 20); put16(&c, 20); put16(&c, 0); put16(&c, 0); put16(&c, 0); put16(&c, 0x21);
        put32(&c, (uint32_t)crc); put32(&c, (uint32_t)size); put32(&c, (uint32_t)size);
        put16(&c, (uint32_t)nl); put16(&c, 0); put16(&c, 0); put16(&c, 0); put16(&c, 0);
        put32(&c, 0644u << 16);
        put32(&c, (uint32_t)offset);
        memcpy(c, name, (size_t)nl);
        c += nl;
        offset += 30 + (uint64_t)nl + size;
    }
    if (ok) {
        size_t cd_size = (size_t)(c - cd);
        uint8_t eocd[22], *p = eocd;
        put32(&p, 0x06054b50u);
        put16(&p, 0); put16(&p, 0); put16(&p, (uint32_t)n); put16(&p, (uint32_t)n);
        put32(&p, (uint32_t)cd_size); put32(&p, (uint32_t)offset); put16(&p, 0);
        if (offset >= 0xffffffffu || fwrite(cd, 1, cd_size, f) != cd_size ||
            fwrite(eocd, 1, 22, f) != 22) {
            ok = 0;
            err_set("%s: write failed: %m", tmp);
        }
    }
    free(cd);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        if (ok) err_set("%s: write failed: %m", tmp);
        ok = 0;
    }
    if (fclose(f) != 0 && ok) {
        ok = 0;
        err_set("%s: write failed: %m", tmp);
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        err_set("%s: cannot rename %s over it: %m", path, tmp);
    }
    if (!ok) unlink(tmp);
    return ok ? 0 : -1;
}
