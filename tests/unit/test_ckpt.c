/* Checkpoint format and I/O: round trips, partial reads, every corruption we can
 * think of, directory listing and pruning, and crash consistency of the writer.
 *
 * The format is checked independently of the reader too: the test decompresses
 * files with libzstd itself, walks the varint-delimited records and recomputes
 * the CRC-32s with zlib. Corrupt files are made both at the compressed level
 * (truncate, flip) and at the record level (decompress, edit, recompress), the
 * latter to reach the footer checks behind zstd's own checksum. */
#include "common/ckpt/checkpoint.h"
#include "common/core/util.h"
#include "proto/checkpoint.pb-c.h"
#include "tests/unit/test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

static char g_root[PATH_MAX];
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void) { /* xorshift64* */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}

/* Raw random bit patterns (NaNs, infinities and denormals included). */
static void fill_bits(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)(rnd() >> 32);
        memcpy(&p[i], &u, 4);
    }
}

/* Weight-like values: compressible, so zstd emits compressed blocks. */
static void fill_weights(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
}

static void make_dir(const char *path) {
    if (mkdir(path, 0755) && errno != EEXIST) {
        perror(path);
        exit(2);
    }
}

/* out = dir/name (PATH_MAX bytes); checks the length so paths are never cut. */
static void path_join(char *out, const char *dir, const char *name) {
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_MAX) {
        fprintf(stderr, "path too long: %s/%s\n", dir, name);
        exit(2);
    }
}

static void subdir(char *out, const char *name) {
    path_join(out, g_root, name);
    make_dir(out);
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = xmalloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    fclose(f);
    *len = got;
    return b;
}

static void spit(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static long long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Whole decompressed content of a zstd file (independent of the reader). */
static uint8_t *unzstd(const uint8_t *src, size_t n, size_t *out_len) {
    ZSTD_DCtx *d = ZSTD_createDCtx();
    size_t cap = 1 << 20, len = 0;
    uint8_t *out = xmalloc(cap);
    ZSTD_inBuffer in = {src, n, 0};
    for (;;) {
        if (len == cap) {
            cap *= 2;
            out = xrealloc(out, cap);
        }
        ZSTD_outBuffer o = {out + len, cap - len, 0};
        size_t r = ZSTD_decompressStream(d, &o, &in);
        if (ZSTD_isError(r)) {
            fprintf(stderr, "unzstd: %s\n", ZSTD_getErrorName(r));
            exit(2);
        }
        len += o.pos;
        if (r == 0 && in.pos == in.size) break;
        if (o.pos == 0 && in.pos == in.size) break;
    }
    ZSTD_freeDCtx(d);
    *out_len = len;
    return out;
}

/* Compress content into a file as one checksummed frame. */
static void zstd_spit(const char *path, const uint8_t *src, size_t n) {
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    size_t cap = ZSTD_compressBound(n);
    uint8_t *out = xmalloc(cap);
    size_t r = ZSTD_compress2(c, out, cap, src, n);
    if (ZSTD_isError(r)) {
        fprintf(stderr, "zstd_spit: %s\n", ZSTD_getErrorName(r));
        exit(2);
    }
    spit(path, out, r);
    free(out);
    ZSTD_freeCCtx(c);
}

/* Same, streamed with unknown size and a 32 MiB window declared in the frame. */
static void zstd_spit_big_window(const char *path, const uint8_t *src, size_t n) {
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, 25);
    size_t cap = ZSTD_compressBound(n) + 1024, len = 0;
    uint8_t *out = xmalloc(cap);
    ZSTD_inBuffer in = {src, n, 0};
    for (int mode = 0; mode < 2; mode++) {
        size_t r;
        do {
            ZSTD_outBuffer o = {out + len, cap - len, 0};
            r = ZSTD_compressStream2(c, &o, &in, mode ? ZSTD_e_end : ZSTD_e_continue);
            len += o.pos;
        } while (mode ? r != 0 && !ZSTD_isError(r) : in.pos < in.size);
    }
    spit(path, out, len);
    free(out);
    ZSTD_freeCCtx(c);
}

/* Offsets where records start in decompressed content (plus the end). */
static int record_starts(const uint8_t *b, size_t n, size_t *starts, int max) {
    size_t p = 0;
    int k = 0;
    while (p < n && k < max) {
        starts[k++] = p;
        uint64_t v = 0;
        int sh = 0;
        while (p < n) {
            uint8_t c = b[p++];
            v |= (uint64_t)(c & 0x7f) << sh;
            sh += 7;
            if (!(c & 0x80)) break;
        }
        p += v;
    }
    if (k < max) starts[k++] = p;
    return k;
}

/* ckpt_read must fail, naming the file, with `what` in the message. */
static void expect_fail(const char *label, const char *path, uint64_t expect_n, int want, const char *what) {
    uint64_t n = 1 << 21;
    float *bufs[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4; i++)
        if (want & (1 << i)) bufs[i] = xfloats(n * 2);
    ckpt_header h;
    int rc = ckpt_read(path, &h, expect_n, want, bufs[0], bufs[1], bufs[2], bufs[3]);
    const char *msg = err_msg();
    int names = strstr(msg, path) != NULL;
    int says = !what || strstr(msg, what) != NULL;
    test_check(rc == -1 && names && says && h.n_params == 0 && h.tensors == NULL,
               "%s: read fails naming the file%s%s (msg: %s)", label, what ? " and saying " : "", what ? what : "",
               rc == -1 ? msg : "read succeeded");
    for (int i = 0; i < 4; i++) free(bufs[i]);
}

static ckpt_tensor g_tensors[3];
static char g_name0[] = "down.0.conv.weight", g_name1[] = "down.0.conv.bias", g_name2[] = "out.scale";

/* A header whose tensor table tiles n = a*b + c + 1 floats. */
static ckpt_header make_header(uint64_t step, uint64_t a, uint64_t b, uint64_t c) {
    g_tensors[0] = (ckpt_tensor){g_name0, 2, {(int64_t)a, (int64_t)b, 0, 0}, 0, a * b};
    g_tensors[1] = (ckpt_tensor){g_name1, 1, {(int64_t)c, 0, 0, 0}, a * b, c};
    g_tensors[2] = (ckpt_tensor){g_name2, 0, {0, 0, 0, 0}, a * b + c, 1};
    ckpt_header h;
    memset(&h, 0, sizeof h);
    h.config_yaml = (char *)"model:\n  ch: 32\n  ch_mult: [1, 2, 2]\ntrain:\n  batch: 64\n";
    h.step = step;
    h.seed = 0xDEADBEEF12345ull;
    h.data_epoch = 7;
    h.data_position = 12345;
    h.permutation_seed = 99;
    h.world_size = 5;
    h.servers = 2;
    h.workers = 3;
    h.n_params = a * b + c + 1;
    h.n_tensors = 3;
    h.tensors = g_tensors;
    return h;
}

static int headers_equal(const ckpt_header *a, const ckpt_header *b, int sections) {
    if (a->format_version != CKPT_FORMAT_VERSION || strcmp(a->config_yaml, b->config_yaml) ||
        strcmp(a->rng_algorithm, CKPT_DEFAULT_RNG) || a->step != b->step || a->seed != b->seed ||
        a->data_epoch != b->data_epoch || a->data_position != b->data_position ||
        a->permutation_seed != b->permutation_seed || a->world_size != b->world_size || a->servers != b->servers ||
        a->workers != b->workers || a->n_params != b->n_params || a->n_tensors != b->n_tensors ||
        a->sections != sections)
        return 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const ckpt_tensor *x = &a->tensors[i], *y = &b->tensors[i];
        if (strcmp(x->name, y->name) || x->ndim != y->ndim || x->offset != y->offset || x->size != y->size) return 0;
        for (int d = 0; d < x->ndim; d++)
            if (x->shape[d] != y->shape[d]) return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- round trip */

static void test_round_trip(void) {
    char dir[PATH_MAX];
    subdir(dir, "rt");
    ckpt_header h = make_header(1234, 1000, 3000, 16); /* 3,000,017 floats */
    size_t n = (size_t)h.n_params;
    float *src[4], *dst[4];
    for (int i = 0; i < 4; i++) {
        src[i] = xfloats(n);
        dst[i] = xfloats(n);
        fill_bits(src[i], n);
    }
    char written[PATH_MAX], expect_path[PATH_MAX];
    path_join(expect_path, dir, "ckpt-0000001234.ddpm");
    double t0 = now_seconds();
    int rc = ckpt_write(dir, &h, src[0], src[1], src[2], src[3], written, sizeof written);
    double t1 = now_seconds();
    test_check(rc == 0, "round trip: write %s", rc ? err_msg() : "ok");
    test_check(strcmp(written, expect_path) == 0, "round trip: written path is %s (got %s)", expect_path, written);
    test_check(file_size(expect_path) > 0, "round trip: file exists");

    ckpt_header r;
    double t2 = now_seconds();
    rc = ckpt_read(written, &r, h.n_params, CKPT_ALL, dst[0], dst[1], dst[2], dst[3]);
    double t3 = now_seconds();
    test_check(rc == 0, "round trip: read %s", rc ? err_msg() : "ok");
    int same = 1;
    for (int i = 0; i < 4; i++) same &= memcmp(src[i], dst[i], n * sizeof(float)) == 0;
    test_check(same, "round trip: 4 sections of %zu random-bit floats are bit-exact", n);
    test_check(rc == 0 && headers_equal(&r, &h, CKPT_ALL), "round trip: header fields and tensor table survive");
    ckpt_header_free(&r);
    test_check(r.tensors == NULL && r.config_yaml == NULL, "ckpt_header_free zeroes the header");

    double mb = 4.0 * (double)n * 4 / 1e6;
    printf("# checkpoint %.1f MB of random-bit floats, file %lld bytes: write %.0f MB/s, read (all) %.0f MB/s\n", mb,
           file_size(written), mb / (t1 - t0), mb / (t3 - t2));

    rc = ckpt_read_header(written, &r);
    test_check(rc == 0 && headers_equal(&r, &h, CKPT_ALL), "read_header: fields match %s", rc ? err_msg() : "");
    ckpt_header_free(&r);

    /* Only EMA: the other buffers are NULL and must not be needed. */
    memset(dst[1], 0, n * sizeof(float));
    double t4 = now_seconds();
    rc = ckpt_read(written, &r, 0, CKPT_EMA, NULL, dst[1], NULL, NULL);
    double t5 = now_seconds();
    test_check(rc == 0 && memcmp(src[1], dst[1], n * sizeof(float)) == 0, "read EMA only: bit-exact %s",
               rc ? err_msg() : "");
    ckpt_header_free(&r);
    printf("# read EMA only (verifying all): %.0f MB/s of file content\n", mb / (t5 - t4));

    rc = ckpt_read(written, NULL, 0, 0, NULL, NULL, NULL, NULL);
    test_check(rc == 0, "verify-only read (want 0, h NULL) %s", rc ? err_msg() : "ok");

    rc = ckpt_read(written, &r, 0, CKPT_ADAM_M, NULL, NULL, NULL, NULL);
    test_check(rc == -1 && strstr(err_msg(), "NULL"), "wanted section with NULL buffer is refused (%s)", err_msg());

    /* Independent look at the layout: zstd frame with checksum flag, records
     * header / chunks <= 4 MiB in section order / footer, CRCs = zlib's. */
    size_t flen, clen;
    uint8_t *file = slurp(written, &flen);
    test_check(flen > 5 && file[0] == 0x28 && file[1] == 0xB5 && file[2] == 0x2F && file[3] == 0xFD &&
                   (file[4] & 0x04),
               "layout: zstd frame magic and content checksum flag set");
    uint8_t *content = unzstd(file, flen, &clen);
    size_t starts[64];
    int ns = record_starts(content, clen, starts, 64);
    int nrec = ns - 1;
    int expect_chunks = 4 * (int)((n + CKPT_CHUNK_FLOATS - 1) / CKPT_CHUNK_FLOATS);
    test_check(starts[ns - 1] == clen && nrec == expect_chunks + 2, "layout: %d records (expected %d)", nrec,
               expect_chunks + 2);
    int ok = 1;
    uint32_t crc[4] = {0};
    int sec_order = 0;
    Ddpm__Ckpt__Footer *foot = NULL;
    Ddpm__Ckpt__Record *last = NULL;
    for (int k = 0; k < nrec && ok; k++) {
        size_t p = starts[k];
        while (content[p] & 0x80) p++;
        p++;
        Ddpm__Ckpt__Record *rec = ddpm__ckpt__record__unpack(NULL, starts[k + 1] - p, content + p);
        if (!rec) { ok = 0; break; }
        if (k == 0) ok &= rec->kind_case == DDPM__CKPT__RECORD__KIND_HEADER && !strcmp(rec->header->magic, CKPT_MAGIC);
        else if (k == nrec - 1) ok &= rec->kind_case == DDPM__CKPT__RECORD__KIND_FOOTER;
        else {
            ok &= rec->kind_case == DDPM__CKPT__RECORD__KIND_CHUNK;
            if (ok) {
                int si = __builtin_ctz((unsigned)rec->chunk->section);
                ok &= si >= sec_order && rec->chunk->data.len <= 4u << 20;
                sec_order = si;
                const uint8_t *expect_bytes = (const uint8_t *)(src[si] + rec->chunk->offset);
                ok &= memcmp(expect_bytes, rec->chunk->data.data, rec->chunk->data.len) == 0;
                crc[si] = (uint32_t)crc32(crc[si], rec->chunk->data.data, (uInt)rec->chunk->data.len);
            }
        }
        if (k == nrec - 1 && ok) { foot = rec->footer; last = rec; }
        else ddpm__ckpt__record__free_unpacked(rec, NULL);
    }
    test_check(ok, "layout: header first, chunks in section order with the source bytes, footer last");
    int foot_ok = foot && foot->record_count == (uint64_t)nrec - 1 && foot->n_params == n && foot->n_sections == 4;
    for (size_t i = 0; foot_ok && i < foot->n_sections; i++) {
        int si = __builtin_ctz((unsigned)foot->sections[i]->section);
        uint32_t whole = (uint32_t)crc32_z(0, (const Bytef *)src[si], n * sizeof(float));
        foot_ok &= foot->sections[i]->n_floats == n && foot->sections[i]->crc32 == crc[si] && crc[si] == whole;
    }
    test_check(foot_ok, "layout: footer counts and CRC-32s match zlib over the source buffers");
    if (last) ddpm__ckpt__record__free_unpacked(last, NULL);
    free(content);
    free(file);
    for (int i = 0; i < 4; i++) {
        free(src[i]);
        free(dst[i]);
    }
}

/* Sizes at chunk boundaries, a single float, a subset of sections. */
static void test_edges(void) {
    char dir[PATH_MAX], path[PATH_MAX];
    subdir(dir, "edges");
    ckpt_header h = make_header(1, 2, CKPT_CHUNK_FLOATS - 1, 1); /* exactly 2 chunks */
    size_t n = (size_t)h.n_params;
    float *a = xfloats(n), *b = xfloats(n), *c = xfloats(n);
    fill_bits(a, n);
    fill_weights(b, n);
    int rc = ckpt_write(dir, &h, a, b, NULL, NULL, path, sizeof path);
    test_check(rc == 0 && n == 2 * CKPT_CHUNK_FLOATS, "edge: n = 2 chunks exactly, PARAMS+EMA: write %s",
               rc ? err_msg() : "ok");
    ckpt_header r;
    rc = ckpt_read(path, &r, n, CKPT_PARAMS | CKPT_EMA, c, NULL, NULL, NULL);
    test_check(rc == -1, "edge: EMA wanted with NULL buffer refused");
    float *d = xfloats(n);
    rc = ckpt_read(path, &r, n, CKPT_PARAMS | CKPT_EMA, c, d, NULL, NULL);
    test_check(rc == 0 && !memcmp(a, c, n * 4) && !memcmp(b, d, n * 4) && r.sections == (CKPT_PARAMS | CKPT_EMA),
               "edge: two-section file round trips, header lists PARAMS|EMA %s", rc ? err_msg() : "");
    ckpt_header_free(&r);
    expect_fail("edge: ADAM_M wanted from a PARAMS+EMA file", path, 0, CKPT_ADAM_M, "missing section");

    /* EMA only file (a sampler export): reading PARAMS is a missing section. */
    h.step = 2;
    rc = ckpt_write(dir, &h, NULL, b, NULL, NULL, path, sizeof path);
    memset(d, 0, n * 4);
    rc = rc ? rc : ckpt_read(path, &r, 0, CKPT_EMA, NULL, d, NULL, NULL);
    test_check(rc == 0 && !memcmp(b, d, n * 4), "edge: EMA-only file round trips %s", rc ? err_msg() : "");
    ckpt_header_free(&r);
    expect_fail("edge: PARAMS wanted from an EMA-only file", path, 0, CKPT_PARAMS, "missing section");

    /* Writer options: the highest level is clamped so readers can decode it;
     * worker threads produce an equivalent file. */
    ckpt_write_opts opts[2] = {{.level = 22}, {.level = 1, .threads = 2}};
    for (int i = 0; i < 2; i++) {
        h.step = 10 + (uint64_t)i;
        rc = ckpt_write_ex(dir, &h, a, NULL, NULL, NULL, &opts[i], path, sizeof path);
        memset(c, 0, n * 4);
        rc = rc ? rc : ckpt_read(path, NULL, n, CKPT_PARAMS, c, NULL, NULL, NULL);
        test_check(rc == 0 && !memcmp(a, c, n * 4), "write level %d threads %d: reads back bit-exact %s",
                   opts[i].level, opts[i].threads, rc ? err_msg() : "");
    }

    /* One float, no tensors, NULL config and rng name. */
    ckpt_header one;
    memset(&one, 0, sizeof one);
    one.n_params = 1;
    one.step = 3;
    float x = -0.0f, y = 1;
    rc = ckpt_write(dir, &one, &x, &x, &x, &x, path, sizeof path);
    rc = rc ? rc : ckpt_read(path, &r, 1, CKPT_ADAM_V, NULL, NULL, NULL, &y);
    test_check(rc == 0 && !memcmp(&x, &y, 4) && r.config_yaml && !r.config_yaml[0] && r.n_tensors == 0,
               "edge: n_params 1, empty config and table %s", rc ? err_msg() : "");
    ckpt_header_free(&r);

    /* Writer refuses an inconsistent header and leaves nothing behind. */
    ckpt_header bad = make_header(4, 10, 10, 5);
    ckpt_tensor t[3];
    memcpy(t, g_tensors, sizeof t);
    t[1].size = 6; /* shape says 5 */
    bad.tensors = t;
    rc = ckpt_write(dir, &bad, a, NULL, NULL, NULL, NULL, 0);
    test_check(rc == -1 && strstr(err_msg(), "down.0.conv.bias"), "write: bad tensor table refused (%s)", err_msg());
    t[1].size = 5;
    t[2].offset = bad.n_params; /* past the end */
    rc = ckpt_write(dir, &bad, a, NULL, NULL, NULL, NULL, 0);
    test_check(rc == -1 && strstr(err_msg(), "out.scale"), "write: tensor outside the buffer refused (%s)", err_msg());
    bad.n_params = 0;
    rc = ckpt_write(dir, &bad, a, NULL, NULL, NULL, NULL, 0);
    test_check(rc == -1 && strstr(err_msg(), "n_params"), "write: n_params 0 refused (%s)", err_msg());
    char small[8];
    rc = ckpt_write(dir, &h, a, NULL, NULL, NULL, small, sizeof small);
    test_check(rc == -1, "write: too small written_path buffer refused (%s)", err_msg());
    char p4[PATH_MAX];
    path_join(p4, dir, "ckpt-0000000004.ddpm");
    test_check(!file_exists(p4), "write: refused header leaves no file");
    rc = ckpt_write("/nonexistent-dir-ddpm", &h, a, NULL, NULL, NULL, NULL, 0);
    test_check(rc == -1 && strstr(err_msg(), "/nonexistent-dir-ddpm"), "write: missing directory names it (%s)",
               err_msg());
    free(a);
    free(b);
    free(c);
    free(d);
}

/* ---------------------------------------------------------------- corruption */

static void test_corruption(void) {
    char dir[PATH_MAX], good[PATH_MAX], bad[PATH_MAX];
    subdir(dir, "corrupt");
    /* 1.3M floats x 4 sections: 8 chunks, about 21 MB of content. */
    ckpt_header h = make_header(10, 1000, 1299, 999);
    size_t n = (size_t)h.n_params;
    float *s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = xfloats(n);
        fill_weights(s[i], n);
    }
    int rc = ckpt_write(dir, &h, s[0], s[1], s[2], s[3], good, sizeof good);
    test_check(rc == 0, "corrupt: reference file written %s", rc ? err_msg() : "");
    size_t flen;
    uint8_t *file = slurp(good, &flen);
    path_join(bad, dir, "bad.ddpm");

    char missing[PATH_MAX];
    path_join(missing, dir, "ckpt-9999999999.ddpm");
    expect_fail("missing file", missing, 0, CKPT_ALL, "not found");
    expect_fail("directory instead of file", dir, 0, CKPT_ALL, "directory");
    spit(bad, "", 0);
    expect_fail("empty file", bad, 0, CKPT_ALL, "empty");
    spit(bad, file, 3);
    expect_fail("3-byte file", bad, 0, CKPT_ALL, "not a checkpoint");

    uint8_t junk[4096];
    static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)rnd();
    memcpy(junk, png, 8);
    spit(bad, junk, sizeof junk);
    expect_fail("foreign file (PNG header)", bad, 0, CKPT_ALL, "not a checkpoint");
    junk[0] = 0x11;
    spit(bad, junk, sizeof junk);
    expect_fail("foreign file (random bytes)", bad, 0, CKPT_ALL, "not a checkpoint");
    const char *text = "model:\n  ch: 32\nthis is a config file, not a checkpoint\n";
    zstd_spit(bad, (const uint8_t *)text, strlen(text));
    expect_fail("valid zstd stream of text", bad, 0, CKPT_ALL, "not a checkpoint");
    zstd_spit(bad, (const uint8_t *)junk, sizeof junk);
    expect_fail("valid zstd stream of random bytes", bad, 0, CKPT_ALL, "not a checkpoint");
    zstd_spit(bad, (const uint8_t *)"", 0);
    expect_fail("valid zstd stream, empty content", bad, 0, CKPT_ALL, "not a checkpoint");
    {
        ckpt_header r;
        rc = ckpt_read_header(bad, &r);
        test_check(rc == -1 && strstr(err_msg(), bad), "read_header on a foreign zstd file fails (%s)", err_msg());
    }

    expect_fail("n_params mismatch", good, h.n_params + 1, CKPT_ALL, "n_params");

    /* Truncated compressed file: header region, mid-frame, just before the checksum. */
    size_t cuts[] = {4, 5, 9, 100, 1000, 100000, flen / 4, flen / 2, flen - 100, flen - 5, flen - 4, flen - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        spit(bad, file, cuts[i]);
        char label[64];
        snprintf(label, sizeof label, "truncated at byte %zu of %zu", cuts[i], flen);
        expect_fail(label, bad, 0, CKPT_EMA, "truncated");
    }
    {
        ckpt_header r;
        spit(bad, file, flen / 2);
        rc = ckpt_read_header(bad, &r);
        test_check(rc == 0 && r.step == 10, "read_header succeeds on a file truncated after the header (fast path)");
        ckpt_header_free(&r);
    }

    /* Flipped bytes in the compressed file. */
    size_t flips[] = {0, 4, 5, 8, 20, 200, 5000, flen / 3, flen / 2, flen - 200, flen - 10, flen - 3, flen - 1};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        uint8_t *c = xmalloc(flen);
        memcpy(c, file, flen);
        c[flips[i]] ^= 0x5a;
        spit(bad, c, flen);
        free(c);
        char label[64];
        snprintf(label, sizeof label, "flipped byte at %zu of %zu", flips[i], flen);
        expect_fail(label, bad, 0, CKPT_ALL, NULL);
    }
    /* Two copies back to back: two valid frames, data after the footer. */
    {
        uint8_t *c = xmalloc(2 * flen);
        memcpy(c, file, flen);
        memcpy(c + flen, file, flen);
        spit(bad, c, 2 * flen);
        free(c);
        expect_fail("two checkpoints concatenated", bad, 0, CKPT_ALL, "after the footer");
        uint8_t *g = xmalloc(flen + 7);
        memcpy(g, file, flen);
        memcpy(g + flen, "garbage", 7);
        spit(bad, g, flen + 7);
        free(g);
        expect_fail("garbage after the frame", bad, 0, CKPT_ALL, "corrupt");
    }

    /* Record-level damage, re-framed as valid zstd so only our checks can see it. */
    size_t clen;
    uint8_t *content = unzstd(file, flen, &clen);
    size_t st[64];
    int ns = record_starts(content, clen, st, 64);
    int nrec = ns - 1; /* header, 8 chunks, footer */
    test_check(nrec == 10, "corrupt: reference has 10 records (%d)", nrec);
    zstd_spit(bad, content, clen);
    {
        int r0 = ckpt_read(bad, NULL, 0, 0, NULL, NULL, NULL, NULL);
        test_check(r0 == 0, "re-framed intact content still reads %s", r0 ? err_msg() : "");
    }
    for (int k = 1; k < nrec; k++) { /* cut exactly at record boundaries */
        zstd_spit(bad, content, st[k]);
        char label[96], what[64];
        snprintf(label, sizeof label, "complete zstd stream cut at the start of record #%d", k);
        snprintf(what, sizeof what, "no footer after record #%d", k - 1);
        expect_fail(label, bad, 0, CKPT_EMA, what);
    }
    zstd_spit_big_window(bad, content, clen);
    expect_fail("zstd frame declaring a 32 MiB window", bad, 0, CKPT_ALL, "window");
    zstd_spit(bad, content, st[1] - 3);
    expect_fail("complete zstd stream cut inside the header", bad, 0, CKPT_ALL, "truncated inside the header");
    zstd_spit(bad, content, st[4] + 1000);
    expect_fail("complete zstd stream cut inside record #4", bad, 0, CKPT_ALL, "truncated inside record #4");
    zstd_spit(bad, content, st[nrec] - 2);
    expect_fail("complete zstd stream cut inside the footer", bad, 0, CKPT_ALL, "truncated inside record #9");

    {   /* A chunk dropped, chunks swapped, the footer dropped, the header repeated. */
        uint8_t *c = xmalloc(clen);
        size_t a = st[3], b = st[4];
        memcpy(c, content, a);
        memcpy(c + a, content + b, clen - b);
        zstd_spit(bad, c, clen - (b - a));
        expect_fail("chunk record #3 dropped", bad, 0, CKPT_ALL, "bad record #3");
        /* #3 and #4 are EMA's two chunks: swapped, offsets come out of order. */
        size_t l3 = st[4] - st[3], l4 = st[5] - st[4];
        memcpy(c, content, clen);
        memcpy(c + st[3], content + st[4], l4);
        memcpy(c + st[3] + l4, content + st[3], l3);
        zstd_spit(bad, c, clen);
        expect_fail("chunk records #3 and #4 swapped", bad, 0, CKPT_ALL, "bad record #3");
        /* Footer removed entirely. */
        zstd_spit(bad, content, st[nrec - 1]);
        expect_fail("missing footer", bad, 0, CKPT_ALL, "no footer");
        /* Header repeated. */
        size_t hl = st[1];
        uint8_t *d = xmalloc(clen + hl);
        memcpy(d, content, st[1]);
        memcpy(d + st[1], content, hl);
        memcpy(d + st[1] + hl, content + st[1], clen - st[1]);
        zstd_spit(bad, d, clen + hl);
        free(d);
        expect_fail("header repeated as record #1", bad, 0, CKPT_ALL, "second header");
        free(c);
    }
    {   /* Single byte changes inside the content at chosen places. */
        size_t spots[] = {40, st[1] - 2, st[2] + 2, st[2] + 5, st[2] + 100, st[5] + 777, st[nrec] - 6, st[nrec] - 1};
        const char *names[] = {"header", "header end", "chunk #2 tag area", "chunk #2 fields", "chunk #2 data",
                               "chunk #5 data", "footer", "footer end"};
        for (size_t i = 0; i < sizeof spots / sizeof spots[0]; i++) {
            uint8_t *c = xmalloc(clen);
            memcpy(c, content, clen);
            c[spots[i]] ^= 0x01;
            zstd_spit(bad, c, clen);
            free(c);
            char label[96];
            snprintf(label, sizeof label, "content byte flipped in the %s (offset %zu)", names[i], spots[i]);
            expect_fail(label, bad, 0, CKPT_EMA, NULL);
        }
        uint8_t *c = xmalloc(clen);
        memcpy(c, content, clen);
        c[st[6] + 5000] ^= 0x80;
        zstd_spit(bad, c, clen);
        expect_fail("content byte flipped in chunk data", bad, 0, CKPT_ALL, "checksum mismatch in section");
        memcpy(c, content, clen);
        char *cfg = memmem(c, st[1], "batch: 64", 9);
        if (cfg) cfg[7] = '9';
        zstd_spit(bad, c, clen);
        expect_fail("config text changed in the header", bad, 0, CKPT_ALL, "checksum mismatch in the header");
        free(c);
    }
    {   /* Hostile lengths: a record claiming 2^40 bytes, an overlong varint. */
        uint8_t tail[16];
        size_t hl = st[1];
        uint8_t *c = xmalloc(hl + sizeof tail);
        memcpy(c, content, hl);
        size_t tn = 0;
        uint64_t v = (uint64_t)1 << 40;
        while (v >= 0x80) { tail[tn++] = (uint8_t)(v | 0x80); v >>= 7; }
        tail[tn++] = (uint8_t)v;
        memcpy(c + hl, tail, tn);
        memcpy(c + hl + tn, "abcd", 4);
        zstd_spit(bad, c, hl + tn + 4);
        expect_fail("record claiming 2^40 bytes", bad, 0, CKPT_ALL, "exceeds the limit");
        memset(c + hl, 0xff, 12);
        zstd_spit(bad, c, hl + 12);
        expect_fail("overlong varint length", bad, 0, CKPT_ALL, "malformed length");
        uint8_t huge_first[6] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x00}; /* 4 GiB header claim */
        zstd_spit(bad, huge_first, sizeof huge_first);
        expect_fail("first record claiming 4 GiB", bad, 0, CKPT_ALL, "not a checkpoint");
        free(c);
    }
    free(content);
    free(file);
    for (int i = 0; i < 4; i++) free(s[i]);
}

/* Many random single-byte changes on a small checkpoint, in the content and in
 * the compressed file: every one must be caught, none may crash. */
static void test_fuzz(void) {
    char dir[PATH_MAX], path[PATH_MAX], bad[PATH_MAX];
    subdir(dir, "fuzz");
    ckpt_header h = make_header(77, 30, 20, 9); /* 610 floats */
    size_t n = (size_t)h.n_params;
    float *s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = xfloats(n);
        fill_weights(s[i], n);
    }
    int rc = ckpt_write(dir, &h, s[0], s[1], s[2], s[3], path, sizeof path);
    test_check(rc == 0, "fuzz: small file written");
    path_join(bad, dir, "bad.ddpm");
    size_t flen, clen;
    uint8_t *file = slurp(path, &flen);
    uint8_t *content = unzstd(file, flen, &clen);
    uint8_t *c = xmalloc(clen > flen ? clen : flen);
    float *out = xfloats(n);
    int caught = 0, tries = 300;
    for (int t = 0; t < tries; t++) {
        memcpy(c, content, clen);
        size_t pos = (size_t)(rnd() % clen);
        c[pos] ^= (uint8_t)(1 + rnd() % 255);
        zstd_spit(bad, c, clen);
        if (ckpt_read(bad, NULL, 0, CKPT_EMA, NULL, out, NULL, NULL) == -1 && strstr(err_msg(), bad)) caught++;
        else printf("# content change at %zu not caught\n", pos);
    }
    test_check(caught == tries, "fuzz: %d of %d random content changes caught", caught, tries);
    caught = 0;
    for (int t = 0; t < tries; t++) {
        memcpy(c, file, flen);
        size_t pos = (size_t)(rnd() % flen);
        c[pos] ^= (uint8_t)(1 + rnd() % 255);
        spit(bad, c, flen);
        if (ckpt_read(bad, NULL, 0, 0, NULL, NULL, NULL, NULL) == -1 && strstr(err_msg(), bad))
            caught++;
        else printf("# compressed change at %zu not caught\n", pos);
    }
    test_check(caught == tries, "fuzz: %d of %d random compressed-file changes caught", caught, tries);
    caught = 0;
    for (int t = 0; t < 100; t++) {
        size_t cut = (size_t)(rnd() % flen);
        spit(bad, file, cut);
        if (ckpt_read(bad, NULL, 0, 0, NULL, NULL, NULL, NULL) == -1) caught++;
    }
    test_check(caught == 100, "fuzz: %d of 100 random truncations caught", caught);
    free(c);
    free(out);
    free(content);
    free(file);
    for (int i = 0; i < 4; i++) free(s[i]);
}

/* ---------------------------------------------------------------- directory */

static void test_list_prune(void) {
    char dir[PATH_MAX], p[PATH_MAX];
    subdir(dir, "list");
    ckpt_header h = make_header(0, 2, 3, 4);
    float v[11] = {0};
    uint64_t steps[] = {5, 100, 20, 3, 12345678901ull};
    for (size_t i = 0; i < 5; i++) {
        h.step = steps[i];
        ckpt_write(dir, &h, v, NULL, NULL, NULL, NULL, 0);
    }
    const char *decoys[] = {"ckpt-abc.ddpm", "notes.txt", "ckpt-7.ddpm.bak", ".ckpt-0000000099.tmp", "ckpt-.ddpm",
                            "xckpt-1.ddpm"};
    for (size_t i = 0; i < 6; i++) {
        path_join(p, dir, decoys[i]);
        spit(p, "x", 1);
    }
    path_join(p, dir, "ckpt-0000000050.ddpm");
    make_dir(p); /* a directory with a checkpoint's name is not one */
    char **paths;
    int n = ckpt_list(dir, &paths);
    int order = n == 5;
    const char *expect[] = {"ckpt-12345678901.ddpm", "ckpt-0000000100.ddpm", "ckpt-0000000020.ddpm",
                            "ckpt-0000000005.ddpm", "ckpt-0000000003.ddpm"};
    for (int i = 0; order && i < 5; i++) {
        char e[PATH_MAX];
        path_join(e, dir, expect[i]);
        order &= strcmp(paths[i], e) == 0;
    }
    test_check(order, "list: 5 checkpoints, newest step first, decoys and temp files ignored (got %d)", n);
    ckpt_list_free(paths, n);

    int removed = ckpt_prune(dir, 2);
    test_check(removed == 4, "prune keep 2: removed 3 old checkpoints + 1 temp file (%d)", removed);
    n = ckpt_list(dir, &paths);
    test_check(n == 2 && strstr(paths[0], expect[0]) && strstr(paths[1], expect[1]), "prune: the 2 newest remain");
    ckpt_list_free(paths, n);
    path_join(p, dir, ".ckpt-0000000099.tmp");
    int tmp_gone = !file_exists(p);
    path_join(p, dir, "notes.txt");
    test_check(tmp_gone && file_exists(p), "prune: stale temp removed, unrelated files kept");
    test_check(ckpt_prune(dir, 0) == -1, "prune keep 0 refused (%s)", err_msg());
    test_check(ckpt_prune(dir, 5) == 0, "prune with fewer than keep removes nothing");
    char empty[PATH_MAX];
    subdir(empty, "list-empty");
    n = ckpt_list(empty, &paths);
    test_check(n == 0 && paths == NULL, "list: empty dir gives 0");
    n = ckpt_list("/nonexistent-dir-ddpm", &paths);
    test_check(n == -1 && strstr(err_msg(), "/nonexistent-dir-ddpm"), "list: missing dir fails naming it (%s)",
               err_msg());
}


/* ---------------------------------------------------------------- pruning keeps what verifies */

typedef struct {
    int n;
    char last_aside[PATH_MAX + 32];
} aside_log;

static void on_aside(void *arg, const char *path, const char *aside, const char *why) {
    aside_log *a = arg;
    (void)path;
    (void)why;
    a->n++;
    snprintf(a->last_aside, sizeof a->last_aside, "%s", aside);
}

/* Flips one byte in the middle of a file (same size). */
static void flip_middle(const char *path) {
    size_t n;
    uint8_t *b = slurp(path, &n);
    b[n / 2] ^= 0x5a;
    spit(path, b, n);
    free(b);
}

/* Issue #14 row 3: keep_checkpoints=1, newest corrupt. Pruning by step alone kept
 * the corrupt one and deleted the good one. */
static void test_prune_verifies(void) {
    char dir[PATH_MAX], p1[PATH_MAX], p2[PATH_MAX], p3[PATH_MAX], aside[PATH_MAX + 16];
    subdir(dir, "prune-verify");
    ckpt_header h = make_header(1, 2, 3, 4);
    float v[11] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    h.step = 1;
    ckpt_write(dir, &h, v, v, NULL, NULL, p1, sizeof p1);
    h.step = 2;
    ckpt_write(dir, &h, v, v, NULL, NULL, p2, sizeof p2);
    flip_middle(p2);
    ckpt_known known = {0};
    aside_log log = {0};
    ckpt_prune_opts o = {&known, on_aside, &log};
    int removed = ckpt_prune_ex(dir, 1, &o);
    snprintf(aside, sizeof aside, "%s.corrupt", p2);
    char **paths;
    int n = ckpt_list(dir, &paths);
    test_check(removed == 0 && n == 1 && strcmp(paths[0], p1) == 0 && file_exists(aside) && log.n == 1 &&
                   strcmp(log.last_aside, aside) == 0,
               "prune keep 1, newest corrupt: the good older one stays, the corrupt one is renamed to "
               "*.corrupt and reported (removed %d, listed %d, aside %d)", removed, n, log.n);
    ckpt_list_free(paths, n);
    /* keep 2 with the middle one corrupt: the newest and the oldest good ones stay */
    h.step = 2;
    ckpt_write(dir, &h, v, v, NULL, NULL, p2, sizeof p2);
    h.step = 3;
    ckpt_write(dir, &h, v, v, NULL, NULL, p3, sizeof p3);
    flip_middle(p2);
    log.n = 0;
    removed = ckpt_prune_ex(dir, 2, &o);
    n = ckpt_list(dir, &paths);
    snprintf(aside, sizeof aside, "%s.corrupt.1", p2);
    test_check(removed == 0 && n == 2 && strcmp(paths[0], p3) == 0 && strcmp(paths[1], p1) == 0 &&
                   file_exists(aside) && log.n == 1,
               "prune keep 2, middle corrupt: steps 3 and 1 stay, step 2 goes aside as .corrupt.1 (the name "
               ".corrupt was taken)");
    ckpt_list_free(paths, n);
    /* a third good one: now the oldest good one goes (two newer ones verify) */
    h.step = 4;
    char p4[PATH_MAX];
    ckpt_write(dir, &h, v, v, NULL, NULL, p4, sizeof p4);
    removed = ckpt_prune_ex(dir, 2, &o);
    test_check(removed == 1 && !file_exists(p1) && file_exists(p3) && file_exists(p4),
               "prune keep 2 with 3 good: the oldest is deleted");
    /* only corrupt ones: nothing deleted, all set aside */
    char dir2[PATH_MAX];
    subdir(dir2, "prune-allbad");
    h.step = 7;
    ckpt_write(dir2, &h, v, v, NULL, NULL, p1, sizeof p1);
    flip_middle(p1);
    log.n = 0;
    removed = ckpt_prune_ex(dir2, 1, &o);
    n = ckpt_list(dir2, &paths);
    ckpt_list_free(paths, n);
    test_check(removed == 0 && n == 0 && log.n == 1, "prune with only a corrupt checkpoint sets it aside, "
                                                      "deletes nothing");
    ckpt_known_free(&known);
}

/* The cache is what lets pruning skip rereading: a file marked good is taken on
 * trust while it is the same file, and read again once it changes. */
static void test_known_cache(void) {
    char dir[PATH_MAX], p[PATH_MAX];
    subdir(dir, "known");
    ckpt_header h = make_header(5, 2, 3, 4);
    float v[11] = {0};
    ckpt_write(dir, &h, v, NULL, NULL, NULL, p, sizeof p);
    ckpt_known k = {0};
    test_check(ckpt_verify(p, &k) == 1 && k.n == 1, "verify: a good checkpoint verifies and is recorded");
    struct stat st0;
    stat(p, &st0);
    /* corrupt it in place, then restore its identity (size and mtime) */
    flip_middle(p);
    struct timespec ts[2] = {st0.st_atim, st0.st_mtim};
    utimensat(AT_FDCWD, p, ts, 0);
    test_check(ckpt_verify(p, &k) == 1, "verify: the same file (device, inode, size, mtime) is not read again");
    ts[1].tv_nsec = (ts[1].tv_nsec + 1) % 1000000000L;
    utimensat(AT_FDCWD, p, ts, 0);
    test_check(ckpt_verify(p, &k) == 0 && strstr(err_msg(), p), "verify: once the file changed it is read again "
               "and fails (%s)", err_msg());
    test_check(ckpt_verify(p, &k) == 0 && strstr(err_msg(), "earlier"), "verify: a known-bad file is refused "
               "from the cache (%s)", err_msg());
    ckpt_known_mark(&k, p, 1);
    test_check(ckpt_verify(p, &k) == 1 && k.n == 1, "mark: a path marked again replaces its entry");
    ckpt_known_free(&k);
}

/* A step above INT64_MAX turned negative where programs compare it with
 * training.steps (a long); writer and reader share the check. */
static void test_step_limit(void) {
    char dir[PATH_MAX];
    subdir(dir, "steplimit");
    ckpt_header h = make_header((uint64_t)INT64_MAX + 1, 2, 3, 4);
    float v[11] = {0};
    test_check(ckpt_write(dir, &h, v, NULL, NULL, NULL, NULL, 0) == -1 && strstr(err_msg(), "step"),
               "a step above 2^63-1 is refused (%s)", err_msg());
    h.step = (uint64_t)INT64_MAX;
    test_check(ckpt_write(dir, &h, v, NULL, NULL, NULL, NULL, 0) == 0, "step 2^63-1 is accepted");
}

/* Issue #14 row 8: a FIFO given as a checkpoint hung in open(). */
static void test_fifo(void) {
    char dir[PATH_MAX], p[PATH_MAX];
    subdir(dir, "fifo");
    path_join(p, dir, "ckpt-0000000001.ddpm");
    if (mkfifo(p, 0644) != 0) {
        test_check(0, "mkfifo %s: %s", p, strerror(errno));
        return;
    }
    alarm(10); /* a hang fails the test instead of stalling the suite */
    ckpt_header h;
    int rc = ckpt_read_header(p, &h);
    test_check(rc == -1 && strstr(err_msg(), p) && strstr(err_msg(), "FIFO"),
               "a FIFO as a checkpoint is refused at once, naming it (%s)", err_msg());
    expect_fail("FIFO, full read", p, 0, CKPT_EMA, "not a regular file");
    test_check(ckpt_verify(p, NULL) == 0, "a FIFO does not verify");
    char **paths;
    int n = ckpt_list(dir, &paths);
    ckpt_list_free(paths, n);
    test_check(n == 0, "list: a FIFO with a checkpoint's name is not listed");
    expect_fail("character device", "/dev/zero", 0, CKPT_EMA, "device");
    alarm(0);
}

/* ---------------------------------------------------------------- crash consistency */

/* Fork a writer that kills itself after `at` bytes; returns 1 if it died by SIGKILL. */
static int killed_write(const char *dir, const ckpt_header *h, const float *buf, long long at) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        ckpt_write_opts o = {.kill_enabled = 1, .kill_at_byte = (uint64_t)at};
        ckpt_write_ex(dir, h, buf, buf, buf, NULL, &o, NULL, 0);
        _exit(3); /* the hook did not fire */
    }
    int status;
    if (waitpid(pid, &status, 0) != pid) return 0;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

static void test_kill(void) {
    char dir[PATH_MAX], tmp[PATH_MAX], fin[PATH_MAX], old[PATH_MAX];
    subdir(dir, "kill");
    ckpt_header h = make_header(1, 300, 1000, 10); /* 300,011 floats */
    size_t n = (size_t)h.n_params;
    float *buf = xfloats(n), *out = xfloats(n);
    fill_weights(buf, n);
    int rc = ckpt_write(dir, &h, buf, buf, buf, NULL, old, sizeof old);
    test_check(rc == 0, "kill: previous checkpoint (step 1) written");
    long long full = file_size(old);
    h.step = 2;
    path_join(tmp, dir, ".ckpt-0000000002.tmp");
    path_join(fin, dir, "ckpt-0000000002.ddpm");
    long long ats[] = {0, 1, 5000, full / 2, full - 1};
    for (size_t i = 0; i < sizeof ats / sizeof ats[0]; i++) {
        int died = killed_write(dir, &h, buf, ats[i]);
        char **paths;
        int nl = ckpt_list(dir, &paths);
        int only_old = nl == 1 && strcmp(paths[0], old) == 0;
        ckpt_list_free(paths, nl);
        test_check(died && file_size(tmp) == ats[i] && !file_exists(fin) && only_old,
                   "kill at byte %lld of %lld: writer died, %lld-byte .tmp left, no ckpt-2, list shows only step 1",
                   ats[i], full, file_size(tmp));
        if (ats[i] > 0) expect_fail("reading the killed writer's temp file", tmp, 0, CKPT_PARAMS, NULL);
    }
    rc = ckpt_read(old, NULL, n, CKPT_PARAMS, out, NULL, NULL, NULL);
    test_check(rc == 0 && !memcmp(out, buf, n * 4), "kill: previous checkpoint still reads %s", rc ? err_msg() : "");
    test_check(ckpt_prune(dir, 3) == 1 && !file_exists(tmp), "kill: prune removes the stale temp file");
    /* Hook past the end of the file: never fires, the write completes. */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        char v[32];
        snprintf(v, sizeof v, "%lld", full * 10);
        setenv("DDPM_TEST_KILL_AT_BYTE", v, 1);
        _exit(ckpt_write(dir, &h, buf, buf, buf, NULL, NULL, 0) == 0 ? 0 : 4);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    test_check(WIFEXITED(status) && WEXITSTATUS(status) == 0 && file_exists(fin) && !file_exists(tmp),
               "kill hook beyond the file size: write completes and renames");
    free(buf);
    free(out);
}

int main(void) {
    const char *base = getenv("DDPM_TEST_TMP");
    snprintf(g_root, sizeof g_root, "%s/ckpt-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_root)) {
        perror(g_root);
        return 2;
    }
    test_round_trip();
    test_edges();
    test_corruption();
    test_fuzz();
    test_list_prune();
    test_prune_verifies();
    test_known_cache();
    test_fifo();
    test_step_limit();
    test_kill();
    int rc = test_done();
    if (!getenv("DDPM_TEST_KEEP")) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    }
    return rc;
}
