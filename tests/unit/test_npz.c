/* Hostile .npz, FID statistics and tensor (Inception weights) files (issue #14,
 * rows 2, 10 and 11): every size is checked against the file before anything is
 * allocated, errors name the file and the array, FID statistics are validated and
 * the distance is never negative. Each input is built here byte by byte. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/core/util.h"
#include "common/eval/fid.h"
#include "common/eval/inception.h"
#include "common/io/npz_array.h"
#include "common/io/tensor_file.h"
#include "tests/unit/test.h"

static char g_dir[] = "/tmp/ddpm-test-npz2.XXXXXX";

static const char *tmp(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v & 0xffff); put16(p + 2, v >> 16); }

/* A .npy v1.0 array: header dict with descr and shape, padded to 64 bytes, then data. */
static size_t make_npy(uint8_t *out, const char *descr, const char *shape, const void *data, size_t n) {
    char dict[256];
    int dn = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    size_t total = (10 + (size_t)dn + 1 + 63) / 64 * 64;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    put16(out + 8, (uint32_t)(total - 10));
    memcpy(out + 10, dict, (size_t)dn);
    memset(out + 10 + dn, ' ', total - 11 - (size_t)dn);
    out[total - 1] = '\n';
    if (n) memcpy(out + total, data, n);
    return total + n;
}

/* A one-entry zip holding `npy` as NAME, stored or raw-deflated. usize / csize,
 * when not 0, replace the true sizes in both headers (a lying directory). */
static long write_zip(const char *path, const char *name, const uint8_t *npy, size_t len, int z,
                      uint32_t usize, uint32_t csize) {
    uint8_t *comp = malloc(len + 1024);
    size_t clen = len;
    if (z) {
        z_stream zs = {0};
        deflateInit2(&zs, 9, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
        zs.next_in = (Bytef *)npy;
        zs.avail_in = (uInt)len;
        zs.next_out = comp;
        zs.avail_out = (uInt)(len + 1024);
        deflate(&zs, Z_FINISH);
        clen = zs.total_out;
        deflateEnd(&zs);
    } else {
        memcpy(comp, npy, len);
    }
    uint32_t crc = (uint32_t)crc32(0, npy, (uInt)len), nl = (uint32_t)strlen(name);
    uint32_t us = usize ? usize : (uint32_t)len, cs = csize ? csize : (uint32_t)clen;
    uint8_t lh[30] = {0}, cd[46] = {0}, eo[22] = {0};
    put32(lh, 0x04034b50u); put16(lh + 4, 20); put16(lh + 8, z ? 8 : 0);
    put32(lh + 14, crc); put32(lh + 18, cs); put32(lh + 22, us); put16(lh + 26, nl);
    put32(cd, 0x02014b50u); put16(cd + 4, 20); put16(cd + 6, 20); put16(cd + 10, z ? 8 : 0);
    put32(cd + 16, crc); put32(cd + 20, cs); put32(cd + 24, us); put16(cd + 28, nl);
    put32(eo, 0x06054b50u); put16(eo + 8, 1); put16(eo + 10, 1); put32(eo + 12, 46 + nl);
    put32(eo + 16, (uint32_t)(30 + nl + clen));
    FILE *f = fopen(path, "wb");
    fwrite(lh, 1, 30, f); fwrite(name, 1, nl, f); fwrite(comp, 1, clen, f);
    fwrite(cd, 1, 46, f); fwrite(name, 1, nl, f); fwrite(eo, 1, 22, f);
    long size = ftell(f);
    fclose(f);
    free(comp);
    return size;
}

/* Opens path's key and reads the whole array: 0 accepted, -1 refused. */
static int read_all(const char *path, const char *key) {
    npz_reader *r;
    if (npz_reader_open(&r, path, key) != 0) return -1;
    size_t bytes = (size_t)npz_reader_count(r) * (size_t)npz_reader_dtype(r);
    void *buf = malloc(bytes ? bytes : 1);
    int rc = npz_reader_read(r, buf, npz_reader_count(r));
    free(buf);
    npz_reader_close(r);
    return rc;
}

static int refused(const char *path, const char *key, const char *want) {
    return read_all(path, key) == -1 && strstr(err_msg(), path) && strstr(err_msg(), want);
}

static void test_rows_2_11(void) {
    uint8_t npy[4096], data[2048];
    memset(data, 7, sizeof data);
    /* row 2: the 248-byte file with shape (2^53, 1, 1) */
    size_t n = make_npy(npy, "|u1", "(9007199254740992, 1, 1)", data, 4);
    const char *p = tmp("row2.npz");
    long size = write_zip(p, "arr_0.npy", npy, n, 0, 0, 0);
    int no = refused(p, "arr_0", "arr_0.npy: its header's shape (9007199254740992, 1, 1) needs "
                                 "9007199254740992 data bytes, the entry holds 4");
    test_check(size == 248 && no,
               "row 2: %ld-byte npz of shape (2^53, 1, 1) refused: %s", size, err_msg());
    /* shapes whose product overflows 64 bits */
    n = make_npy(npy, "|u1", "(4294967296, 4294967296, 2)", data, 4);
    write_zip(p, "arr_0.npy", npy, n, 0, 0, 0);
    test_check(refused(p, "arr_0", "its size overflows"), "shape product overflow refused: %s", err_msg());
    n = make_npy(npy, "<f8", "(2305843009213693952,)", data, 8); /* 2^61 x 8 bytes wraps */
    write_zip(p, "arr_0.npy", npy, n, 0, 0, 0);
    test_check(refused(p, "arr_0", "its size overflows"), "shape x itemsize overflow refused: %s", err_msg());
    n = make_npy(npy, "|u1", "(99999999999999999999999,)", data, 4);
    write_zip(p, "arr_0.npy", npy, n, 0, 0, 0);
    test_check(refused(p, "arr_0", "bad shape"), "dimension beyond 64 bits refused: %s", err_msg());
    /* row 11: N = 10^12 in the header, stored and deflated */
    for (int z = 0; z < 2; z++) {
        n = make_npy(npy, "|u1", "(1000000000000, 32, 32, 3)", data, 2048);
        write_zip(p, "arr_0.npy", npy, n, z, 0, 0);
        test_check(refused(p, "arr_0", "needs 3072000000000000 data bytes, the entry holds 2048"),
                   "row 11: N = 10^12 header refused (%s): %s", z ? "deflated" : "stored", err_msg());
    }
    /* ... and with the directory lying about the entry's size: the file does not hold it */
    n = make_npy(npy, "|u1", "(3, 2)", data, 6);
    write_zip(p, "arr_0.npy", npy, n, 0, 0xfffffff0u, 0xfffffff0u);
    test_check(refused(p, "arr_0", "run past the end"), "declared stored size beyond the file refused: %s",
               err_msg());
    write_zip(p, "arr_0.npy", npy, n, 0, (uint32_t)n + 6, 0);
    test_check(refused(p, "arr_0", "is stored but declares"), "stored entry with usize != csize refused: %s",
               err_msg());
    write_zip(p, "arr_0.npy", npy, n, 1, 0x7ffffff0u, 0);
    test_check(refused(p, "arr_0", "deflate expands at most 1032:1"),
               "deflated entry declaring more than its bytes can inflate to refused: %s", err_msg());
    /* deflate streams that inflate to more or fewer bytes than declared */
    n = make_npy(npy, "|u1", "(16,)", data, 16);
    write_zip(p, "arr_0.npy", npy, n + 8, 1, (uint32_t)n, 0); /* 8 bytes more in the stream */
    test_check(refused(p, "arr_0", "inflates to more than its declared"), "deflate stream longer than declared refused: %s",
               err_msg());
    n = make_npy(npy, "|u1", "(24,)", data, 16);
    write_zip(p, "arr_0.npy", npy, n, 1, (uint32_t)n + 8, 0); /* header and directory say 8 more */
    test_check(refused(p, "arr_0", "inflates to fewer bytes"), "deflate stream shorter than declared refused: %s",
               err_msg());
    /* header longer than the entry */
    n = make_npy(npy, "|u1", "(4,)", data, 4);
    write_zip(p, "arr_0.npy", npy, 40, 0, 0, 0);
    test_check(refused(p, "arr_0", "header is longer than the entry"), "truncated .npy header refused: %s",
               err_msg());
    /* valid files: stored, deflated, empty */
    for (int z = 0; z < 2; z++) {
        n = make_npy(npy, "|u1", "(2, 4, 4, 3)", data, 96);
        write_zip(p, "arr_0.npy", npy, n, z, 0, 0);
        int ok = read_all(p, "arr_0") == 0;
        test_check(ok, "valid %s uint8 array accepted%s%s", z ? "deflated" : "stored", ok ? "" : ": ",
                   ok ? "" : err_msg());
    }
    n = make_npy(npy, "<f4", "(0, 3)", data, 0);
    write_zip(p, "arr_0.npy", npy, n, 1, 0, 0);
    int ok0 = read_all(p, "arr_0") == 0;
    test_check(ok0, "empty array accepted%s%s", ok0 ? "" : ": ", ok0 ? "" : err_msg());
    /* a FIFO is not opened (fopen would block) */
    const char *fifo = tmp("fifo.npz");
    mkfifo(fifo, 0600);
    test_check(refused(fifo, "arr_0", "not a regular file"), "a FIFO refused: %s", err_msg());
    unlink(fifo);
    unlink(p);
}

static void sym_psd(double *s, int d, unsigned seed) {
    /* s = A A^T / d with A pseudo-random: symmetric positive semi-definite */
    double *a = calloc((size_t)d * d, sizeof *a);
    for (int i = 0; i < d * d; i++) {
        seed = seed * 1103515245u + 12345u;
        a[i] = ((seed >> 8) & 0xffff) / 65536.0 - 0.5;
    }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double v = 0;
            for (int k = 0; k < d; k++) v += a[i * d + k] * a[j * d + k];
            s[i * d + j] = v / d;
        }
    free(a);
}

static int write_stats(const char *path, const double *mu, const double *sigma, int d) {
    npz_f64_array arr[2] = {{"mu", mu, 1, {d}}, {"sigma", sigma, 2, {d, d}}};
    return npz_write_f64(path, arr, 2);
}

static void test_row_10(void) {
    enum { D = 8 };
    double mu[D], s1[D * D], s2[D * D], bad[D * D];
    for (int i = 0; i < D; i++) mu[i] = 0.1 * i;
    sym_psd(s1, D, 1);
    sym_psd(s2, D, 2);
    const char *p = tmp("stats.npz");
    fid_stats st;
    write_stats(p, mu, s1, D);
    test_check(fid_stats_load(p, &st) == 0 && st.d == D, "valid statistics accepted: %s", err_msg());
    fid_stats_free(&st);
    /* asymmetric */
    memcpy(bad, s1, sizeof bad);
    bad[0 * D + 1] += 0.25;
    write_stats(p, mu, bad, D);
    test_check(fid_stats_load(p, &st) == -1 && strstr(err_msg(), p) && strstr(err_msg(), "'sigma' is not symmetric"),
               "row 10: asymmetric sigma refused: %s", err_msg());
    /* within the stated symmetry tolerance: accepted and symmetrised */
    memcpy(bad, s1, sizeof bad);
    bad[0 * D + 1] += 1e-9 * fabs(bad[0]);
    write_stats(p, mu, bad, D);
    int ok = fid_stats_load(p, &st) == 0 && st.sigma[1] == st.sigma[D];
    test_check(ok, "rounding-level asymmetry accepted and symmetrised: %s", err_msg());
    if (ok) fid_stats_free(&st);
    /* not positive semi-definite: diagonal flipped */
    memcpy(bad, s1, sizeof bad);
    bad[3 * D + 3] = -2.0;
    write_stats(p, mu, bad, D);
    test_check(fid_stats_load(p, &st) == -1 && strstr(err_msg(), p) &&
                   strstr(err_msg(), "'sigma' is not positive semi-definite"),
               "row 10: non-PSD sigma refused: %s", err_msg());
    /* NaN and infinity: refused before LAPACK sees them */
    memcpy(bad, s1, sizeof bad);
    bad[2 * D + 5] = bad[5 * D + 2] = NAN;
    write_stats(p, mu, bad, D);
    test_check(fid_stats_load(p, &st) == -1 && strstr(err_msg(), p) && strstr(err_msg(), "'sigma' holds nan"),
               "row 10: NaN sigma refused: %s", err_msg());
    double mbad[D];
    memcpy(mbad, mu, sizeof mbad);
    mbad[1] = INFINITY;
    write_stats(p, mbad, s1, D);
    test_check(fid_stats_load(p, &st) == -1 && strstr(err_msg(), "'mu' holds inf"), "infinite mu refused: %s",
               err_msg());
    /* shapes: sigma not [D][D] */
    npz_f64_array arr[2] = {{"mu", mu, 1, {D}}, {"sigma", s1, 2, {D / 2, 2 * D}}};
    npz_write_f64(p, arr, 2);
    test_check(fid_stats_load(p, &st) == -1 && strstr(err_msg(), "must have shape [D][D]"),
               "sigma of the wrong shape refused: %s", err_msg());
    /* the distance itself: never negative. Unchecked non-PSD input is an error ... */
    double fid = 1;
    for (int i = 0; i < D * D; i++) bad[i] = -s1[i];
    int rc = fid_distance(mu, bad, mu, bad, D, &fid);
    test_check(rc == -1 && strstr(err_msg(), "negative"), "FID of non-PSD covariances is an error, not %g: %s",
               fid, err_msg());
    memcpy(bad, s1, sizeof bad);
    bad[9] = NAN;
    rc = fid_distance(mu, s1, mu, bad, D, &fid);
    test_check(rc == -1 && strstr(err_msg(), "non-finite"), "NaN covariance refused before LAPACK: %s", err_msg());
    /* ... and a set against itself reads 0 (rounding clamps), against another > 0 */
    rc = fid_distance(mu, s1, mu, s1, D, &fid);
    test_check(rc == 0 && fid >= 0 && fid < 1e-12, "FID of a set with itself: %g", fid);
    rc = fid_distance(mu, s1, mu, s2, D, &fid);
    test_check(rc == 0 && fid > 0, "FID of two sets: %g", fid);
    unlink(p);
}

/* A tensor file record by hand: name, dims, then `floats` data values. */
static void tns_record(FILE *f, const char *name, int nd, const uint64_t *dims, size_t floats) {
    uint32_t len = (uint32_t)strlen(name), n32 = (uint32_t)nd;
    fwrite(&len, 4, 1, f);
    fwrite(name, 1, len, f);
    fwrite(&n32, 4, 1, f);
    fwrite(dims, 8, (size_t)nd, f);
    float z = 0.5f;
    for (size_t i = 0; i < floats; i++) fwrite(&z, 4, 1, f);
}

static void test_tensor_file(void) {
    const char *p = tmp("w.tns");
    FILE *f = fopen(p, "wb");
    fwrite("DDPMTNS1", 1, 8, f);
    uint64_t huge[3] = {1ull << 40, 1ull << 40, 1ull << 40}; /* product wraps 64 bits */
    tns_record(f, "x", 3, huge, 4);
    fclose(f);
    tensor_file_reader r;
    test_check(tensor_reader_open(&r, p) == -1 && strstr(err_msg(), p) && strstr(err_msg(), "tensor 'x'"),
               "tensor whose shape product overflows refused: %s", err_msg());
    f = fopen(p, "wb");
    fwrite("DDPMTNS1", 1, 8, f);
    uint64_t big[2] = {1ull << 30, 16}; /* 64 GiB of floats, 64 bytes in the file */
    tns_record(f, "x", 2, big, 16);
    fclose(f);
    test_check(tensor_reader_open(&r, p) == -1 && strstr(err_msg(), "needs more data than the"),
               "tensor larger than the file refused before allocating: %s", err_msg());
    /* Inception weights: right names, a wrong shape, named in the error */
    f = fopen(p, "wb");
    fwrite("DDPMTNS1", 1, 8, f);
    uint64_t w[4] = {32, 3, 3, 2}; /* Conv2d_1a_3x3.weight is [32][3][3][3] */
    tns_record(f, "Conv2d_1a_3x3.weight", 4, w, 32 * 3 * 3 * 2);
    fclose(f);
    inception *net = NULL;
    test_check(inception_load(&net, p) == -1 && !net && strstr(err_msg(), p) &&
                   strstr(err_msg(), "'Conv2d_1a_3x3.weight' has shape [32][3][3][2], the network needs [32][3][3][3]"),
               "Inception weights of the wrong shape refused: %s", err_msg());
    /* a partial record at the end */
    f = fopen(p, "ab");
    fwrite("\x05\0\0\0ab", 1, 6, f);
    fclose(f);
    test_check(tensor_reader_open(&r, p) == -1 && strstr(err_msg(), "is truncated"),
               "partial trailing record refused: %s", err_msg());
    unlink(p);
}

int main(void) {
    if (!mkdtemp(g_dir)) return 1;
    test_rows_2_11();
    test_row_10();
    test_tensor_file();
    rmdir(g_dir);
    return test_done();
}
