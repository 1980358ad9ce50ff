/* IDX image files (MNIST, Fashion-MNIST): plain or gzip, read through zlib's gz API. */
#include "common/data/dataset_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/core/util.h"

#define IDX_HEADER 16
#define IDX_MAGIC_U8_3D 0x00000803u

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Read up to n bytes; returns bytes read, or -1 on a decompression/read error. */
static long long gz_read_all(gzFile g, uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got > (1u << 20) ? (1u << 20) : n - got;
        int r = gzread(g, buf + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long long)got;
}

static int gz_fail(gzFile g, const char *path, const char *what) {
    int code;
    const char *m = gzerror(g, &code);
    if (!m || !m[0]) m = "read error";
    size_t pl = strlen(path); /* zlib prefixes its message with the path: drop it */
    if (!strncmp(m, path, pl) && !strncmp(m + pl, ": ", 2)) m += pl + 2;
    return err_set("%s: %s: %s", path, what, m);
}

int dataset_load_idx(struct dataset *ds) {
    const char *path = ds->path;
    FILE *probe = fopen(path, "rb");
    if (!probe) return err_set("%s: cannot open IDX file: %s", path, strerror(errno));
    uint8_t magic2[2] = {0, 0};
    size_t m = fread(magic2, 1, 2, probe);
    fclose(probe);
    int gz = m == 2 && magic2[0] == 0x1f && magic2[1] == 0x8b;
    const char *kind = gz ? "gzip IDX" : "IDX";

    gzFile g = gzopen(path, "rb"); /* reads plain files unchanged */
    if (!g) return err_set("%s: cannot open %s file: %s", path, kind, strerror(errno));
    uint8_t hdr[IDX_HEADER];
    long long h = gz_read_all(g, hdr, IDX_HEADER);
    if (h < 0) {
        gz_fail(g, path, "corrupt gzip data");
        gzclose(g);
        return -1;
    }
    if (h < 4 || be32(hdr) != IDX_MAGIC_U8_3D) {
        uint32_t magic = h >= 4 ? be32(hdr) : 0;
        gzclose(g);
        if (h < 4) return err_set("%s: %s file too short (%lld bytes) for an IDX header", path, kind, h);
        if (magic == 0x00000801u)
            return err_set("%s: bad magic 0x%08x: this is an IDX label file, expected images (0x%08x)", path,
                           magic, IDX_MAGIC_U8_3D);
        return err_set("%s: bad magic 0x%08x, expected 0x%08x (IDX unsigned-byte 3-D images)", path, magic,
                       IDX_MAGIC_U8_3D);
    }
    if (h < IDX_HEADER) {
        gzclose(g);
        return err_set("%s: truncated IDX header (%lld of %d bytes)", path, h, IDX_HEADER);
    }
    uint32_t n = be32(hdr + 4), rows = be32(hdr + 8), cols = be32(hdr + 12);
    if (rows != (uint32_t)ds->size || cols != (uint32_t)ds->size || ds->channels != 1) {
        gzclose(g);
        return err_set("%s: images are %ux%ux1, expected %dx%dx%d", path, rows, cols, ds->size, ds->size,
                       ds->channels);
    }
    if (n == 0) {
        gzclose(g);
        return err_set("%s: IDX header says 0 images", path);
    }
    size_t rec = (size_t)rows * cols;
    if (rec == 0 || (size_t)n > SIZE_MAX / rec) {
        gzclose(g);
        return err_set("%s: IDX header declares an impossible size (%u images of %ux%u)", path, n, rows, cols);
    }
    size_t want = (size_t)n * rec;
    /* Grow the buffer as data arrives, so that a corrupt count in the header of a
     * short file cannot make us allocate gigabytes. */
    size_t cap = want < (64u << 20) ? want : (64u << 20), got = 0;
    uint8_t *buf = xmalloc(cap);
    for (;;) {
        long long r = gz_read_all(g, buf + got, cap - got);
        if (r < 0) {
            gz_fail(g, path, "corrupt gzip data");
            free(buf);
            gzclose(g);
            return -1;
        }
        got += (size_t)r;
        if (got < cap || cap == want) break;
        cap = cap * 2 < want ? cap * 2 : want;
        buf = xrealloc(buf, cap);
    }
    if (got < want) {
        size_t first_missing = got / rec;
        int code = Z_OK;
        gzerror(g, &code);
        free(buf);
        gzclose(g);
        return err_set("%s: truncated%s: header says %u images of %zu bytes but the data ends at byte offset %zu; "
                       "first missing record is image %zu (byte offset %zu)",
                       path, code == Z_BUF_ERROR ? " (gzip stream ends early)" : "", n, rec, IDX_HEADER + got,
                       first_missing, IDX_HEADER + first_missing * rec);
    }
    uint8_t extra;
    long long t = gz_read_all(g, &extra, 1);
    if (t != 0) {
        if (t < 0) gz_fail(g, path, "corrupt gzip data after the last image");
        else
            err_set("%s: trailing bytes after the %u images declared in the header (from byte offset %zu)", path,
                    n, IDX_HEADER + want);
        free(buf);
        gzclose(g);
        return -1;
    }
    gzclose(g);
    ds->count = n;
    ds->images = buf; /* IDX is row-major 1-channel: already CHW */
    return 0;
}
