/* Checkpoint I/O: see checkpoint.h and docs/checkpoint-format.md.
 *
 * Writer: records are packed by protobuf-c straight into a ProtobufCBuffer that
 * feeds the zstd stream, so a 4 MiB chunk is never copied into a message
 * buffer. Reader: decompresses on demand into one reusable record buffer; every
 * length is bounded before it is used, and allocation grows only as data
 * actually arrives, so hostile input cannot make it allocate much. */
#include "common/ckpt/checkpoint.h"

#include "common/core/util.h"
#include "proto/checkpoint.pb-c.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#define CHUNK_BYTES (CKPT_CHUNK_FLOATS * sizeof(float))
/* Bounds on one record's encoded size: the header holds the config text and the
 * tensor table (a few hundred KiB for the largest U-Net); others are a chunk. */
#define MAX_HEADER_BYTES ((uint64_t)64 << 20)
#define MAX_RECORD_BYTES ((uint64_t)CHUNK_BYTES + 1024)
#define MAX_TENSORS (1 << 20)
/* Decoder window bound: 8 MiB, what levels up to 19 use (the writer clamps its
 * level there), so a hostile frame cannot make the reader allocate 128 MiB+. */
#define ZSTD_WINDOW_LOG_MAX 23
#define MAX_LEVEL 19

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define CKPT_BIG_ENDIAN 1
#else
#define CKPT_BIG_ENDIAN 0
#endif

static const int k_sections[4] = {CKPT_PARAMS, CKPT_EMA, CKPT_ADAM_M, CKPT_ADAM_V};

const char *ckpt_section_name(int section) {
    switch (section) {
    case CKPT_PARAMS: return "PARAMS";
    case CKPT_EMA: return "EMA";
    case CKPT_ADAM_M: return "ADAM_M";
    case CKPT_ADAM_V: return "ADAM_V";
    default: return "?";
    }
}

static int section_index(int section) {
    for (int i = 0; i < 4; i++)
        if (k_sections[i] == section) return i;
    return -1;
}

/* "EMA ADAM_M" for a mask, into buf. */
static const char *mask_names(int mask, char *buf, size_t len) {
    buf[0] = 0;
    size_t used = 0;
    for (int i = 0; i < 4; i++) {
        if (!(mask & k_sections[i])) continue;
        int n = snprintf(buf + used, len - used, "%s%s", used ? " " : "", ckpt_section_name(k_sections[i]));
        if (n < 0 || (size_t)n >= len - used) break;
        used += (size_t)n;
    }
    if (!buf[0]) snprintf(buf, len, "none");
    return buf;
}

static size_t varint_encode(uint64_t v, uint8_t out[10]) {
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* zlib's crc32_z takes z_size_t, so no 4 GiB limit on one call. */
static uint32_t crc_update(uint32_t crc, const void *p, size_t n) {
    return (uint32_t)crc32_z(crc, (const Bytef *)p, n);
}

static void swap_floats(uint8_t *dst, const uint8_t *src, size_t n_floats) {
    for (size_t i = 0; i < n_floats; i++) {
        dst[4 * i + 0] = src[4 * i + 3];
        dst[4 * i + 1] = src[4 * i + 2];
        dst[4 * i + 2] = src[4 * i + 1];
        dst[4 * i + 3] = src[4 * i + 0];
    }
}

void ckpt_header_free(ckpt_header *h) {
    if (!h) return;
    free(h->config_yaml);
    free(h->rng_algorithm);
    if (h->tensors)
        for (int i = 0; i < h->n_tensors; i++) free(h->tensors[i].name);
    free(h->tensors);
    memset(h, 0, sizeof *h);
}

/* Consistency of the size and the tensor table; shared by writer and reader so
 * that nothing the writer accepts is refused on read. Sets err, no prefix. */
static int header_check(const ckpt_header *h) {
    if (h->n_params == 0 || h->n_params > CKPT_MAX_PARAMS)
        return err_set("n_params %" PRIu64 " out of range (1..%" PRIu64 ")", h->n_params, CKPT_MAX_PARAMS);
    /* Programs compare the step with signed limits (training.steps is a long). */
    if (h->step > (uint64_t)INT64_MAX) return err_set("step %" PRIu64 " out of range (0..2^63-1)", h->step);
    if (h->n_tensors < 0 || h->n_tensors > MAX_TENSORS)
        return err_set("tensor count %d out of range (0..%d)", h->n_tensors, MAX_TENSORS);
    if (h->n_tensors > 0 && !h->tensors) return err_set("tensor table is NULL but n_tensors is %d", h->n_tensors);
    for (int i = 0; i < h->n_tensors; i++) {
        const ckpt_tensor *t = &h->tensors[i];
        const char *name = t->name ? t->name : "(null)";
        if (!t->name) return err_set("tensor #%d has no name", i);
        if (t->ndim < 0 || t->ndim > CKPT_MAX_NDIM)
            return err_set("tensor #%d '%s': ndim %d out of range (0..%d)", i, name, t->ndim, CKPT_MAX_NDIM);
        if (t->offset > h->n_params || t->size > h->n_params - t->offset)
            return err_set("tensor #%d '%s': [%" PRIu64 ", +%" PRIu64 ") lies outside the %" PRIu64
                           " parameters", i, name, t->offset, t->size, h->n_params);
        if (t->ndim > 0) {
            uint64_t prod = 1;
            for (int d = 0; d < t->ndim; d++) {
                if (t->shape[d] < 0) return err_set("tensor #%d '%s': negative dimension", i, name);
                /* Every factor is at most n_params (< 2^37), so stopping once
                 * the product passes n_params keeps it far from overflow. */
                if ((uint64_t)t->shape[d] > h->n_params) { prod = UINT64_MAX; break; }
                prod *= (uint64_t)t->shape[d];
                if (prod > h->n_params) { prod = UINT64_MAX; break; }
            }
            if (prod != t->size)
                return err_set("tensor #%d '%s': shape does not multiply to its size %" PRIu64, i, name, t->size);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    ProtobufCBuffer base; /* first member: protobuf-c calls base.append(&base, ...) */
    ZSTD_CCtx *cctx;
    int fd;
    const char *path; /* for messages */
    uint8_t *out;
    size_t out_cap;
    uint64_t written; /* bytes in the temp file so far */
    int64_t kill_at;  /* ckpt_write_opts.kill_at_byte, or -1 */
    int failed;
} zsink;

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int sink_write_file(zsink *s, const uint8_t *p, size_t n) {
    if (s->kill_at >= 0 && s->written + n >= (uint64_t)s->kill_at) {
        /* Test-only crash point: leave exactly kill_at bytes in the file. */
        (void)write_all(s->fd, p, (size_t)((uint64_t)s->kill_at - s->written));
        raise(SIGKILL);
    }
    if (write_all(s->fd, p, n))
        return err_set("checkpoint %s: write failed after %" PRIu64 " bytes: %s", s->path, s->written, strerror(errno));
    s->written += n;
    return 0;
}

static int sink_feed(zsink *s, const uint8_t *p, size_t n, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in = {p, n, 0};
    for (;;) {
        ZSTD_outBuffer out = {s->out, s->out_cap, 0};
        size_t rem = ZSTD_compressStream2(s->cctx, &out, &in, mode);
        if (ZSTD_isError(rem)) return err_set("checkpoint %s: zstd compression failed: %s", s->path, ZSTD_getErrorName(rem));
        if (out.pos && sink_write_file(s, s->out, out.pos)) return -1;
        if (mode == ZSTD_e_end ? rem == 0 : in.pos == in.size) return 0;
    }
}

static void sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
    zsink *s = (zsink *)b;
    if (s->failed || len == 0) return;
    if (sink_feed(s, data, len, ZSTD_e_continue)) s->failed = 1;
}

/* varint length + record, packed straight into the stream. */
static int sink_record(zsink *s, const Ddpm__Ckpt__Record *r) {
    uint8_t vb[10];
    size_t vn = varint_encode(ddpm__ckpt__record__get_packed_size(r), vb);
    sink_append(&s->base, vn, vb);
    ddpm__ckpt__record__pack_to_buffer(r, &s->base);
    return s->failed ? -1 : 0;
}

static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return err_set("checkpoint dir %s: cannot open to fsync: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* Some filesystems cannot fsync a directory (EINVAL); the rename stands. */
    if (rc && e != EINVAL) return err_set("checkpoint dir %s: fsync failed: %s", dir, strerror(e));
    return 0;
}

int ckpt_write(const char *dir, const ckpt_header *h, const float *params, const float *ema,
               const float *adam_m, const float *adam_v, char *written_path, size_t path_len) {
    return ckpt_write_ex(dir, h, params, ema, adam_m, adam_v, NULL, written_path, path_len);
}

/* DIR/ckpt-STEP.ddpm and DIR/.ckpt-STEP.tmp into the PATH_MAX buffers, and a
 * check that the caller's written_path buffer can take the final name. */
static int write_paths(const char *dir, uint64_t step64, char *final_path, char *tmp_path,
                       const char *written_path, size_t path_len) {
    unsigned long long step = (unsigned long long)step64;
    int n1 = snprintf(final_path, PATH_MAX, "%s/ckpt-%010llu.ddpm", dir, step);
    int n2 = snprintf(tmp_path, PATH_MAX, "%s/.ckpt-%010llu.tmp", dir, step);
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= PATH_MAX || (size_t)n2 >= PATH_MAX)
        return err_set("checkpoint dir %s: path too long", dir);
    if (written_path && path_len < (size_t)n1 + 1)
        return err_set("checkpoint %s: written_path buffer of %zu bytes is too small", final_path, path_len);
    return 0;
}

/* The header record, packed into a new buffer (*len bytes). The message borrows
 * h's strings and shapes, so it lives only here; the bytes are what the stream
 * carries and what the footer's header_crc32 covers. */
static uint8_t *pack_header(const ckpt_header *h, int sections, size_t *len) {
    size_t nt = (size_t)h->n_tensors;
    Ddpm__Ckpt__TensorEntry *entries = xcalloc(nt ? nt : 1, sizeof *entries);
    Ddpm__Ckpt__TensorEntry **entry_ptrs = xcalloc(nt ? nt : 1, sizeof *entry_ptrs);
    for (size_t i = 0; i < nt; i++) {
        ddpm__ckpt__tensor_entry__init(&entries[i]);
        entries[i].name = h->tensors[i].name;
        entries[i].n_shape = (size_t)h->tensors[i].ndim;
        entries[i].shape = (int64_t *)h->tensors[i].shape; /* pack only reads it */
        entries[i].offset = h->tensors[i].offset;
        entries[i].size = h->tensors[i].size;
        entry_ptrs[i] = &entries[i];
    }
    Ddpm__Ckpt__DataCursor cursor = DDPM__CKPT__DATA_CURSOR__INIT;
    cursor.epoch = h->data_epoch;
    cursor.position = h->data_position;
    cursor.permutation_seed = h->permutation_seed;
    Ddpm__Ckpt__Header hdr = DDPM__CKPT__HEADER__INIT;
    hdr.magic = (char *)CKPT_MAGIC;
    hdr.format_version = CKPT_FORMAT_VERSION;
    hdr.config_yaml = h->config_yaml ? h->config_yaml : (char *)"";
    hdr.step = h->step;
    hdr.seed = h->seed;
    hdr.rng_algorithm = h->rng_algorithm ? h->rng_algorithm : (char *)CKPT_DEFAULT_RNG;
    hdr.data = &cursor;
    hdr.world_size = h->world_size;
    hdr.servers = h->servers;
    hdr.workers = h->workers;
    hdr.n_params = h->n_params;
    hdr.sections = (uint32_t)sections;
    hdr.n_tensors = nt;
    hdr.tensors = entry_ptrs;
    Ddpm__Ckpt__Record rec = DDPM__CKPT__RECORD__INIT;
    rec.kind_case = DDPM__CKPT__RECORD__KIND_HEADER;
    rec.header = &hdr;
    *len = ddpm__ckpt__record__get_packed_size(&rec);
    uint8_t *bytes = xmalloc(*len);
    ddpm__ckpt__record__pack(&rec, bytes);
    free(entries);
    free(entry_ptrs);
    return bytes;
}

/* A sink with no zstd context and no file yet; kill_at arms the test-only crash
 * point (ckpt_write_opts.kill_at_byte). */
static void sink_init(zsink *s, const char *tmp_path, const ckpt_write_opts *opts) {
    memset(s, 0, sizeof *s);
    s->base.append = sink_append;
    s->path = tmp_path;
    s->fd = -1;
    s->kill_at = opts && opts->kill_enabled && opts->kill_at_byte <= INT64_MAX
                     ? (int64_t)opts->kill_at_byte : -1;
    s->out_cap = ZSTD_CStreamOutSize();
    s->out = xmalloc(s->out_cap);
}

/* The zstd context (level, frame checksum, workers) and the temp file. What is
 * made before a failure is released by the caller's cleanup. */
static int sink_start(zsink *s, const char *final_path, const ckpt_write_opts *opts) {
    int level = opts && opts->level ? opts->level : 3;
    if (level > MAX_LEVEL) level = MAX_LEVEL;
    int threads = opts && opts->threads > 0 ? opts->threads : 0;
    s->cctx = ZSTD_createCCtx();
    if (!s->cctx) return err_set("checkpoint %s: cannot create zstd context", final_path);
    size_t zr = ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(zr)) zr = ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_checksumFlag, 1);
    if (ZSTD_isError(zr)) return err_set("checkpoint %s: zstd setup: %s", final_path, ZSTD_getErrorName(zr));
    /* A libzstd built without threads refuses workers; compress inline then. */
    if (threads) (void)ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_nbWorkers, threads);
    s->fd = open(s->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s->fd < 0) return err_set("checkpoint %s: cannot create: %s", s->path, strerror(errno));
    return 0;
}

/* varint length + an already packed record. */
static int sink_packed(zsink *s, const uint8_t *bytes, size_t len) {
    uint8_t vb[10];
    size_t vn = varint_encode(len, vb);
    sink_append(&s->base, vn, vb);
    sink_append(&s->base, len, bytes);
    return s->failed ? -1 : 0;
}

/* One chunk record per CKPT_CHUNK_FLOATS of each present section, in section
 * order; crcs[i] gets the CRC-32 of section i's little-endian bytes and
 * *records counts the records written. */
static int write_sections(zsink *s, const ckpt_header *h, const float *const bufs[4], uint32_t crcs[4],
                          uint64_t *records) {
    uint8_t *swap = CKPT_BIG_ENDIAN ? xmalloc(CHUNK_BYTES) : NULL;
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++) {
        if (!bufs[i]) continue;
        for (uint64_t off = 0; off < h->n_params && rc == 0; off += CKPT_CHUNK_FLOATS) {
            uint64_t nf = h->n_params - off < CKPT_CHUNK_FLOATS ? h->n_params - off : CKPT_CHUNK_FLOATS;
            const uint8_t *bytes = (const uint8_t *)(bufs[i] + off);
            if (CKPT_BIG_ENDIAN) {
                swap_floats(swap, bytes, (size_t)nf);
                bytes = swap;
            }
            crcs[i] = crc_update(crcs[i], bytes, (size_t)nf * sizeof(float));
            Ddpm__Ckpt__TensorChunk ch = DDPM__CKPT__TENSOR_CHUNK__INIT;
            ch.section = (Ddpm__Ckpt__Section)k_sections[i];
            ch.offset = off;
            ch.data.len = (size_t)nf * sizeof(float);
            ch.data.data = (uint8_t *)bytes; /* pack only reads it */
            Ddpm__Ckpt__Record cr = DDPM__CKPT__RECORD__INIT;
            cr.kind_case = DDPM__CKPT__RECORD__KIND_CHUNK;
            cr.chunk = &ch;
            rc = sink_record(s, &cr);
            if (rc == 0) (*records)++;
        }
    }
    free(swap);
    return rc;
}

/* The footer record (record count, per-section CRCs, header CRC), then the end
 * of the zstd frame. */
static int write_footer(zsink *s, const ckpt_header *h, const float *const bufs[4], const uint32_t crcs[4],
                        uint64_t records, uint32_t header_crc) {
    Ddpm__Ckpt__SectionSummary sums[4];
    Ddpm__Ckpt__SectionSummary *sum_ptrs[4];
    size_t n_sums = 0;
    for (int i = 0; i < 4; i++) {
        if (!bufs[i]) continue;
        ddpm__ckpt__section_summary__init(&sums[n_sums]);
        sums[n_sums].section = (Ddpm__Ckpt__Section)k_sections[i];
        sums[n_sums].n_floats = h->n_params;
        sums[n_sums].crc32 = crcs[i];
        sum_ptrs[n_sums] = &sums[n_sums];
        n_sums++;
    }
    Ddpm__Ckpt__Footer foot = DDPM__CKPT__FOOTER__INIT;
    foot.record_count = records;
    foot.n_params = h->n_params;
    foot.n_sections = n_sums;
    foot.sections = sum_ptrs;
    foot.header_crc32 = header_crc;
    Ddpm__Ckpt__Record fr = DDPM__CKPT__RECORD__INIT;
    fr.kind_case = DDPM__CKPT__RECORD__KIND_FOOTER;
    fr.footer = &foot;
    if (sink_record(s, &fr)) return -1;
    return sink_feed(s, NULL, 0, ZSTD_e_end);
}

/* The atomic part: fsync the temp file, close it, rename it to the final name,
 * fsync the directory. s->fd is -1 once closed, so the cleanup does not close it
 * twice. */
static int commit_file(zsink *s, const char *final_path, const char *dir) {
    if (fsync(s->fd)) return err_set("checkpoint %s: fsync failed: %s", s->path, strerror(errno));
    int fd = s->fd;
    s->fd = -1;
    if (close(fd)) return err_set("checkpoint %s: close failed: %s", s->path, strerror(errno));
    if (rename(s->path, final_path))
        return err_set("checkpoint %s: rename from %s failed: %s", final_path, s->path, strerror(errno));
    return fsync_dir(dir);
}

/* The write itself: tmp_path, then renamed to final_path in dir. */
static int write_to(const char *final_path, const char *tmp_path, const char *dir, const ckpt_header *h,
                    const float *const bufs[4], const ckpt_write_opts *opts) {
    if (header_check(h)) return err_prefix("checkpoint %s: bad header: ", final_path);
    int sections = 0;
    for (int i = 0; i < 4; i++)
        if (bufs[i]) sections |= k_sections[i];
    size_t hdr_len;
    uint8_t *hdr_bytes = pack_header(h, sections, &hdr_len);
    uint32_t header_crc = crc_update(0, hdr_bytes, hdr_len);

    zsink s;
    sink_init(&s, tmp_path, opts);
    uint64_t records = 1; /* the header */
    uint32_t crcs[4] = {0};
    int rc = -1;
    if (!sink_start(&s, final_path, opts) && !sink_packed(&s, hdr_bytes, hdr_len) &&
        !write_sections(&s, h, bufs, crcs, &records) && !write_footer(&s, h, bufs, crcs, records, header_crc) &&
        !commit_file(&s, final_path, dir))
        rc = 0;
    if (s.fd >= 0) close(s.fd);
    if (rc) unlink(tmp_path); /* ENOENT (ignored) if the rename already happened */
    ZSTD_freeCCtx(s.cctx);
    free(s.out);
    free(hdr_bytes);
    return rc;
}

int ckpt_write_ex(const char *dir, const ckpt_header *h, const float *params, const float *ema,
                  const float *adam_m, const float *adam_v, const ckpt_write_opts *opts,
                  char *written_path, size_t path_len) {
    if (!dir || !h) return err_set("checkpoint write: NULL directory or header");
    char final_path[PATH_MAX], tmp_path[PATH_MAX];
    if (write_paths(dir, h->step, final_path, tmp_path, written_path, path_len)) return -1;
    const float *const bufs[4] = {params, ema, adam_m, adam_v};
    if (write_to(final_path, tmp_path, dir, h, bufs, opts)) return -1;
    if (written_path) snprintf(written_path, path_len, "%s", final_path);
    return 0;
}

int ckpt_write_file(const char *path, const ckpt_header *h, const float *params, const float *ema,
                    const float *adam_m, const float *adam_v) {
    if (!path || !h) return err_set("checkpoint write: NULL path or header");
    char dir[PATH_MAX], tmp_path[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int n1 = slash ? snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path)
                   : snprintf(dir, sizeof dir, ".");
    if (slash == path) snprintf(dir, sizeof dir, "/");
    int n2 = snprintf(tmp_path, sizeof tmp_path, "%s/.%s.tmp", dir, slash ? slash + 1 : path);
    if (n1 < 0 || n2 < 0 || (size_t)n2 >= sizeof tmp_path)
        return err_set("checkpoint %s: path too long", path);
    const float *const bufs[4] = {params, ema, adam_m, adam_v};
    return write_to(path, tmp_path, dir, h, bufs, NULL);
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    const char *path;
    int fd;
    uint64_t file_size;
    ZSTD_DCtx *dctx;
    uint8_t *ibuf;
    size_t icap;
    ZSTD_inBuffer in;
    int eof;        /* the file is read to its end */
    int frame_done; /* the last decoder call that progressed completed a frame */
    uint8_t *rec;   /* current record's bytes */
    size_t rec_cap, rec_got;
} zsrc;

enum { NR_END = 0, NR_OK = 1, NR_ERR = -1, NR_CUT = -2, NR_BADLEN = -3 };

static void src_close(zsrc *s) {
    if (s->fd >= 0) close(s->fd);
    ZSTD_freeDCtx(s->dctx);
    free(s->ibuf);
    free(s->rec);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

static int src_open(zsrc *s, const char *path) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->path = path;
    if (!path) return err_set("checkpoint: NULL path");
    /* O_NONBLOCK: opening a FIFO for reading blocks until a writer comes, and a
     * device may block too; nothing is read before the regular-file check. */
    s->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (s->fd < 0) {
        if (errno == ENOENT) return err_set("checkpoint %s: not found", path);
        return err_set("checkpoint %s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(s->fd, &st)) return err_set("checkpoint %s: cannot stat: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return err_set("checkpoint %s: is a directory, not a checkpoint", path);
    if (!S_ISREG(st.st_mode))
        return err_set("checkpoint %s: not a regular file (%s), not a checkpoint", path,
                       S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                       : S_ISSOCK(st.st_mode) ? "a socket" : "a special file");
    int fl = fcntl(s->fd, F_GETFL);
    if (fl < 0 || fcntl(s->fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return err_set("checkpoint %s: cannot clear O_NONBLOCK: %s", path, strerror(errno));
    s->file_size = (uint64_t)st.st_size;
    if (s->file_size == 0) return err_set("checkpoint %s: empty file (0 bytes), not a checkpoint", path);
    uint8_t m[4];
    ssize_t got = pread(s->fd, m, 4, 0);
    if (got < 0) return err_set("checkpoint %s: read failed: %s", path, strerror(errno));
    if (got < 4)
        return err_set("checkpoint %s: not a checkpoint (only %" PRIu64 " bytes)", path, s->file_size);
    uint32_t magic = (uint32_t)m[0] | (uint32_t)m[1] << 8 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 24;
    if (magic != ZSTD_MAGICNUMBER && (magic & ZSTD_MAGIC_SKIPPABLE_MASK) != ZSTD_MAGIC_SKIPPABLE_START)
        return err_set("checkpoint %s: not a checkpoint (not a zstd stream: starts with %02x %02x %02x %02x)", path,
                       m[0], m[1], m[2], m[3]);
    s->dctx = ZSTD_createDCtx();
    if (!s->dctx) return err_set("checkpoint %s: cannot create zstd context", path);
    ZSTD_DCtx_setParameter(s->dctx, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX);
    s->icap = ZSTD_DStreamInSize();
    s->ibuf = xmalloc(s->icap);
    s->in.src = s->ibuf;
    return 0;
}

/* Up to n decompressed bytes into dst; *got < n only at the end of the data. */
static int src_read(zsrc *s, uint8_t *dst, size_t n, size_t *got) {
    ZSTD_outBuffer out = {dst, n, 0};
    int stalls = 0;
    while (out.pos < n) {
        if (s->in.pos == s->in.size && !s->eof) {
            ssize_t r;
            do r = read(s->fd, s->ibuf, s->icap);
            while (r < 0 && errno == EINTR);
            if (r < 0) return err_set("checkpoint %s: read failed: %s", s->path, strerror(errno));
            if (r == 0) s->eof = 1;
            s->in.size = (size_t)r;
            s->in.pos = 0;
        }
        size_t in0 = s->in.pos, out0 = out.pos;
        size_t ret = ZSTD_decompressStream(s->dctx, &out, &s->in);
        if (ZSTD_isError(ret)) {
            ZSTD_ErrorCode code = ZSTD_getErrorCode(ret);
            if (code == ZSTD_error_checksum_wrong)
                return err_set("checkpoint %s: checksum mismatch (zstd frame checksum): the file is corrupt", s->path);
            if (code == ZSTD_error_frameParameter_windowTooLarge)
                return err_set("checkpoint %s: zstd frame asks for a window above %d MiB (not written by ckpt_write)",
                               s->path, 1 << (ZSTD_WINDOW_LOG_MAX - 20));
            if (code == ZSTD_error_prefix_unknown)
                return err_set("checkpoint %s: corrupt data: bytes after a zstd frame are not a zstd frame", s->path);
            return err_set("checkpoint %s: corrupt compressed data (zstd: %s)", s->path, ZSTD_getErrorName(ret));
        }
        if (s->in.pos != in0 || out.pos != out0) {
            s->frame_done = ret == 0;
            stalls = 0;
        } else if (s->in.pos == s->in.size && s->eof) {
            break; /* nothing left to decode */
        } else if (++stalls > 2) {
            return err_set("checkpoint %s: zstd decoder made no progress", s->path);
        }
    }
    *got = out.pos;
    return 0;
}

/* Why the data ended early: a frame cut short, or a complete stream that lacks
 * the rest of the checkpoint. */
static const char *cut_reason(const zsrc *s) {
    return s->frame_done ? "the zstd stream is complete but the checkpoint is not"
                         : "the compressed data ends mid-frame";
}

/* Next record into s->rec[0..*len). NR_END: no byte left; NR_CUT: data ended
 * inside the record (*len = claimed length, s->rec_got = bytes seen);
 * NR_BADLEN: bad varint or *len > limit (*len = UINT64_MAX for bad varint). */
static int src_next_record(zsrc *s, uint64_t limit, uint64_t *len) {
    uint64_t v = 0;
    s->rec_got = 0;
    *len = 0;
    for (int i = 0;; i++) {
        uint8_t b;
        size_t got;
        if (src_read(s, &b, 1, &got)) return NR_ERR;
        if (!got) return i == 0 ? NR_END : NR_CUT;
        if (i == 9 && b > 1) { *len = UINT64_MAX; return NR_BADLEN; }
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) break;
    }
    *len = v;
    if (v > limit) return NR_BADLEN;
    /* Grow with the data actually decoded, not with the claimed length. */
    while (s->rec_got < v) {
        uint64_t want = v - s->rec_got;
        uint64_t step = s->rec_got > ((uint64_t)1 << 16) ? s->rec_got : ((uint64_t)1 << 16);
        if (want > step) want = step;
        if (s->rec_got + want > s->rec_cap) {
            s->rec_cap = (size_t)(s->rec_got + want);
            s->rec = xrealloc(s->rec, s->rec_cap);
        }
        size_t got;
        if (src_read(s, s->rec + s->rec_got, (size_t)want, &got)) return NR_ERR;
        s->rec_got += got;
        if (got < want) return NR_CUT;
    }
    return NR_OK;
}

static char *dup_or_empty(const char *s) { return xstrdup(s ? s : ""); }

/* Whether the bytes of record #0 seen so far carry our magic: then a failure is
 * a damaged checkpoint rather than some other zstd file. */
static int has_magic(const zsrc *s) {
    size_t look = s->rec_got < 64 ? s->rec_got : 64;
    return look && memmem(s->rec, look, CKPT_MAGIC, strlen(CKPT_MAGIC)) != NULL;
}

/* Reads and validates record #0 into *h; *header_crc covers its bytes. */
static int read_header_record(zsrc *s, ckpt_header *h, uint32_t *header_crc) {
    memset(h, 0, sizeof *h);
    uint64_t len;
    int r = src_next_record(s, MAX_HEADER_BYTES, &len);
    switch (r) {
    case NR_ERR: return -1;
    case NR_END:
        if (!s->frame_done) return err_set("checkpoint %s: truncated before the header (%s)", s->path, cut_reason(s));
        return err_set("checkpoint %s: not a checkpoint (empty zstd stream)", s->path);
    case NR_CUT:
        if (!s->frame_done || has_magic(s))
            return err_set("checkpoint %s: truncated inside the header record #0 (%s)", s->path, cut_reason(s));
        return err_set("checkpoint %s: not a checkpoint (zstd data does not start with a header record)", s->path);
    case NR_BADLEN:
        return err_set("checkpoint %s: not a checkpoint (zstd data does not start with a header record: "
                       "implausible record length)", s->path);
    default: break;
    }
    Ddpm__Ckpt__Record *rec = ddpm__ckpt__record__unpack(NULL, (size_t)len, s->rec);
    if (!rec || rec->kind_case != DDPM__CKPT__RECORD__KIND_HEADER || !rec->header->magic ||
        strcmp(rec->header->magic, CKPT_MAGIC) != 0) {
        if (rec) ddpm__ckpt__record__free_unpacked(rec, NULL);
        if (has_magic(s))
            return err_set("checkpoint %s: bad record #0: damaged header (%" PRIu64 " bytes)", s->path, len);
        return err_set("checkpoint %s: not a checkpoint (zstd data does not start with a '%s' header)", s->path,
                       CKPT_MAGIC);
    }
    *header_crc = crc_update(0, s->rec, (size_t)len);
    const Ddpm__Ckpt__Header *p = rec->header;
    int rc = -1;
    if (p->format_version == 0 || p->format_version > CKPT_FORMAT_VERSION) {
        err_set("checkpoint %s: format version %u is not supported (this reader handles 1..%u)", s->path,
                p->format_version, CKPT_FORMAT_VERSION);
        goto out;
    }
    if (p->sections & ~(uint32_t)CKPT_ALL) {
        err_set("checkpoint %s: bad header: unknown section flags 0x%x", s->path, p->sections);
        goto out;
    }
    if (p->n_tensors > MAX_TENSORS) {
        err_set("checkpoint %s: bad header: %zu tensors (limit %d)", s->path, p->n_tensors, MAX_TENSORS);
        goto out;
    }
    h->format_version = p->format_version;
    h->config_yaml = dup_or_empty(p->config_yaml);
    h->rng_algorithm = dup_or_empty(p->rng_algorithm);
    h->step = p->step;
    h->seed = p->seed;
    if (p->data) {
        h->data_epoch = p->data->epoch;
        h->data_position = p->data->position;
        h->permutation_seed = p->data->permutation_seed;
    }
    h->world_size = p->world_size;
    h->servers = p->servers;
    h->workers = p->workers;
    h->n_params = p->n_params;
    h->sections = (int)p->sections;
    h->n_tensors = (int)p->n_tensors;
    h->tensors = xcalloc(p->n_tensors ? p->n_tensors : 1, sizeof *h->tensors);
    for (size_t i = 0; i < p->n_tensors; i++) {
        const Ddpm__Ckpt__TensorEntry *e = p->tensors[i];
        ckpt_tensor *t = &h->tensors[i];
        t->name = dup_or_empty(e->name);
        if (e->n_shape > CKPT_MAX_NDIM) {
            err_set("checkpoint %s: bad header: tensor #%zu '%s' has %zu dims (at most %d)", s->path, i, t->name,
                    e->n_shape, CKPT_MAX_NDIM);
            goto out;
        }
        t->ndim = (int)e->n_shape;
        for (size_t d = 0; d < e->n_shape; d++) t->shape[d] = e->shape[d];
        t->offset = e->offset;
        t->size = e->size;
    }
    if (header_check(h)) {
        err_prefix("checkpoint %s: bad header: ", s->path);
        goto out;
    }
    rc = 0;
out:
    ddpm__ckpt__record__free_unpacked(rec, NULL);
    if (rc) ckpt_header_free(h);
    return rc;
}

int ckpt_read_header(const char *path, ckpt_header *h) {
    if (!h) return err_set("checkpoint %s: NULL header", path ? path : "(null)");
    memset(h, 0, sizeof *h);
    zsrc s;
    uint32_t crc;
    int rc = src_open(&s, path);
    if (rc == 0) rc = read_header_record(&s, h, &crc);
    src_close(&s);
    return rc;
}

/* Stream state while verifying the chunks. */
typedef struct {
    uint64_t next_off[4]; /* floats seen per section */
    uint32_t crc[4];
    int cur;              /* index of the section being read, -1 before any */
    int seen;             /* mask of sections with chunks */
} chunk_state;

static int section_complete(zsrc *s, const chunk_state *st, uint64_t n, uint64_t recno) {
    if (st->cur >= 0 && st->next_off[st->cur] != n)
        return err_set("checkpoint %s: size mismatch: section %s has %" PRIu64 " of %" PRIu64
                       " floats when record #%" PRIu64 " starts another part", s->path,
                       ckpt_section_name(k_sections[st->cur]), st->next_off[st->cur], n, recno);
    return 0;
}

static int take_chunk(zsrc *s, const Ddpm__Ckpt__TensorChunk *ch, uint64_t recno, const ckpt_header *h,
                      chunk_state *st, int want, float *const dst[4]) {
    int sec = (int)ch->section;
    int idx = section_index(sec);
    uint64_t n = h->n_params;
    if (idx < 0) return err_set("checkpoint %s: bad record #%" PRIu64 ": unknown section %d", s->path, recno, sec);
    if (!(h->sections & sec))
        return err_set("checkpoint %s: bad record #%" PRIu64 ": chunk of section %s, which the header does not list",
                       s->path, recno, ckpt_section_name(sec));
    if (idx < st->cur)
        return err_set("checkpoint %s: bad record #%" PRIu64 ": section %s after section %s (out of order)", s->path,
                       recno, ckpt_section_name(sec), ckpt_section_name(k_sections[st->cur]));
    if (idx > st->cur) {
        if (section_complete(s, st, n, recno)) return -1;
        st->cur = idx;
        st->seen |= sec;
    }
    size_t len = ch->data.len;
    if (len == 0 || len % sizeof(float) || len > CHUNK_BYTES || !ch->data.data)
        return err_set("checkpoint %s: bad record #%" PRIu64 ": chunk of %zu bytes (must be a positive multiple of "
                       "4, at most %" PRIu64 ")", s->path, recno, len, (uint64_t)CHUNK_BYTES);
    uint64_t nf = len / sizeof(float);
    if (ch->offset != st->next_off[idx])
        return err_set("checkpoint %s: bad record #%" PRIu64 ": section %s chunk at offset %" PRIu64
                       ", expected %" PRIu64, s->path, recno, ckpt_section_name(sec), ch->offset, st->next_off[idx]);
    if (nf > n - ch->offset)
        return err_set("checkpoint %s: size mismatch at record #%" PRIu64 ": section %s chunk [%" PRIu64 ", +%" PRIu64
                       ") runs past n_params %" PRIu64, s->path, recno, ckpt_section_name(sec), ch->offset, nf, n);
    st->crc[idx] = crc_update(st->crc[idx], ch->data.data, len);
    if (want & sec) {
        uint8_t *out = (uint8_t *)(dst[idx] + ch->offset);
        if (CKPT_BIG_ENDIAN) swap_floats(out, ch->data.data, (size_t)nf);
        else memcpy(out, ch->data.data, len);
    }
    st->next_off[idx] += nf;
    return 0;
}

static int check_footer(zsrc *s, const Ddpm__Ckpt__Footer *f, uint64_t recno, const ckpt_header *h,
                        const chunk_state *st, uint32_t header_crc) {
    char a[64], b[64];
    if (section_complete(s, st, h->n_params, recno)) return -1;
    if (st->seen != h->sections)
        return err_set("checkpoint %s: missing section(s): header lists %s, the stream holds %s", s->path,
                       mask_names(h->sections, a, sizeof a), mask_names(st->seen, b, sizeof b));
    if (f->record_count != recno)
        return err_set("checkpoint %s: bad footer (record #%" PRIu64 "): it counts %" PRIu64
                       " records, but %" PRIu64 " precede it", s->path, recno, f->record_count, recno);
    if (f->n_params != h->n_params)
        return err_set("checkpoint %s: size mismatch: footer n_params %" PRIu64 ", header %" PRIu64, s->path,
                       f->n_params, h->n_params);
    if (f->header_crc32 != header_crc)
        return err_set("checkpoint %s: checksum mismatch in the header (crc32 %08x, footer says %08x)", s->path,
                       header_crc, f->header_crc32);
    int listed = 0;
    for (size_t i = 0; i < f->n_sections; i++) {
        const Ddpm__Ckpt__SectionSummary *e = f->sections[i];
        int sec = (int)e->section;
        int idx = section_index(sec);
        if (idx < 0 || (listed & sec) || !(st->seen & sec))
            return err_set("checkpoint %s: bad footer (record #%" PRIu64 "): unexpected summary of section %d", s->path,
                           recno, sec);
        listed |= sec;
        if (e->n_floats != h->n_params)
            return err_set("checkpoint %s: size mismatch: footer says section %s has %" PRIu64 " floats, expected %"
                           PRIu64, s->path, ckpt_section_name(sec), e->n_floats, h->n_params);
        if (e->crc32 != st->crc[idx])
            return err_set("checkpoint %s: checksum mismatch in section %s (crc32 of data %08x, footer says %08x)",
                           s->path, ckpt_section_name(sec), st->crc[idx], e->crc32);
    }
    if (listed != st->seen)
        return err_set("checkpoint %s: bad footer (record #%" PRIu64 "): summarises %s but the stream holds %s",
                       s->path, recno, mask_names(listed, a, sizeof a), mask_names(st->seen, b, sizeof b));
    return 0;
}

int ckpt_read(const char *path, ckpt_header *h_out, uint64_t expect_n_params, int want, float *params, float *ema,
              float *adam_m, float *adam_v) {
    ckpt_header hl;
    ckpt_header *h = h_out ? h_out : &hl;
    memset(h, 0, sizeof *h);
    const char *name = path ? path : "(null)";
    if (want & ~CKPT_ALL) return err_set("checkpoint %s: bad section flags 0x%x", name, want);
    float *const dst[4] = {params, ema, adam_m, adam_v};
    for (int i = 0; i < 4; i++)
        if ((want & k_sections[i]) && !dst[i])
            return err_set("checkpoint %s: section %s wanted but its buffer is NULL", name,
                           ckpt_section_name(k_sections[i]));

    zsrc s;
    uint32_t header_crc = 0;
    Ddpm__Ckpt__Record *rec = NULL;
    int rc = -1;
    if (src_open(&s, path) || read_header_record(&s, h, &header_crc)) goto out;
    if (expect_n_params && h->n_params != expect_n_params) {
        err_set("checkpoint %s: size mismatch: n_params is %" PRIu64 ", expected %" PRIu64, s.path, h->n_params,
                expect_n_params);
        goto out;
    }
    if (want & ~h->sections) {
        char a[64], b[64];
        err_set("checkpoint %s: missing section(s) %s (the file holds %s)", s.path,
                mask_names(want & ~h->sections, a, sizeof a), mask_names(h->sections, b, sizeof b));
        goto out;
    }

    chunk_state st;
    memset(&st, 0, sizeof st);
    st.cur = -1;
    for (uint64_t recno = 1;; recno++) {
        uint64_t len;
        int r = src_next_record(&s, MAX_RECORD_BYTES, &len);
        if (r == NR_ERR) goto out;
        if (r == NR_END) {
            err_set("checkpoint %s: truncated: no footer after record #%" PRIu64 " (%s)", s.path, recno - 1,
                    cut_reason(&s));
            goto out;
        }
        if (r == NR_CUT) {
            err_set("checkpoint %s: truncated inside record #%" PRIu64 " (%zu of %" PRIu64 " bytes; %s)", s.path,
                    recno, s.rec_got, len, cut_reason(&s));
            goto out;
        }
        if (r == NR_BADLEN) {
            if (len == UINT64_MAX) err_set("checkpoint %s: bad record #%" PRIu64 ": malformed length", s.path, recno);
            else err_set("checkpoint %s: bad record #%" PRIu64 ": length %" PRIu64 " exceeds the limit %" PRIu64,
                         s.path, recno, len, MAX_RECORD_BYTES);
            goto out;
        }
        rec = ddpm__ckpt__record__unpack(NULL, (size_t)len, s.rec);
        if (!rec) {
            err_set("checkpoint %s: bad record #%" PRIu64 ": not a valid protobuf record (%" PRIu64 " bytes)", s.path,
                    recno, len);
            goto out;
        }
        if (rec->kind_case == DDPM__CKPT__RECORD__KIND_CHUNK) {
            if (take_chunk(&s, rec->chunk, recno, h, &st, want, dst)) goto out;
        } else if (rec->kind_case == DDPM__CKPT__RECORD__KIND_FOOTER) {
            if (check_footer(&s, rec->footer, recno, h, &st, header_crc)) goto out;
            break;
        } else {
            err_set("checkpoint %s: bad record #%" PRIu64 ": %s where a chunk or the footer belongs", s.path, recno,
                    rec->kind_case == DDPM__CKPT__RECORD__KIND_HEADER ? "a second header" : "an empty record");
            goto out;
        }
        ddpm__ckpt__record__free_unpacked(rec, NULL);
        rec = NULL;
    }

    /* Drive the decoder to the end: this verifies the frame checksum and that
     * nothing follows the footer. */
    uint8_t extra;
    size_t got;
    if (src_read(&s, &extra, 1, &got)) goto out;
    if (got) {
        err_set("checkpoint %s: unexpected data after the footer", s.path);
        goto out;
    }
    if (!s.frame_done) {
        err_set("checkpoint %s: truncated after the footer (%s)", s.path, cut_reason(&s));
        goto out;
    }
    rc = 0;
out:
    if (rec) ddpm__ckpt__record__free_unpacked(rec, NULL);
    src_close(&s);
    if (rc || !h_out) ckpt_header_free(h);
    return rc;
}

/* ---------------------------------------------------------------- directory */

/* Step of "ckpt-<digits>.ddpm", or -1 if the name is not a checkpoint's. */
static int parse_ckpt_name(const char *name, uint64_t *step) {
    if (strncmp(name, "ckpt-", 5) != 0) return -1;
    const char *p = name + 5;
    uint64_t v = 0;
    int nd = 0;
    while (*p >= '0' && *p <= '9') {
        if (v > (UINT64_MAX - 9) / 10) return -1;
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
        nd++;
    }
    if (nd == 0 || strcmp(p, ".ddpm") != 0) return -1;
    *step = v;
    return 0;
}

typedef struct {
    uint64_t step;
    char *path;
} list_entry;

static int entry_cmp(const void *a, const void *b) {
    const list_entry *x = a, *y = b;
    if (x->step != y->step) return x->step > y->step ? -1 : 1;
    return -strcmp(x->path, y->path);
}

int ckpt_list(const char *dir, char ***paths) {
    *paths = NULL;
    DIR *d = opendir(dir);
    if (!d) return err_set("checkpoint dir %s: cannot list: %s", dir, strerror(errno));
    list_entry *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t step;
        if (parse_ckpt_name(e->d_name, &step)) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) || !S_ISREG(st.st_mode)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            v = xrealloc(v, cap * sizeof *v);
        }
        size_t len = strlen(dir) + 1 + strlen(e->d_name) + 1;
        v[n].path = xmalloc(len);
        snprintf(v[n].path, len, "%s/%s", dir, e->d_name);
        v[n].step = step;
        n++;
    }
    closedir(d);
    if (n > INT_MAX) n = INT_MAX; /* unreachable in practice */
    if (n) qsort(v, n, sizeof *v, entry_cmp); /* qsort(NULL, 0) is UB */
    if (n) {
        *paths = xmalloc(n * sizeof **paths);
        for (size_t i = 0; i < n; i++) (*paths)[i] = v[i].path;
    }
    free(v);
    return (int)n;
}

void ckpt_list_free(char **paths, int n) {
    if (!paths) return;
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

/* ---------------------------------------------------------------- verified cache */

struct ckpt_known_entry {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    int good;
};

void ckpt_known_free(ckpt_known *k) {
    if (!k) return;
    for (int i = 0; i < k->n; i++) free(k->v[i].path);
    free(k->v);
    memset(k, 0, sizeof *k);
}

static struct ckpt_known_entry *known_find(ckpt_known *k, const char *path) {
    for (int i = 0; k && i < k->n; i++)
        if (strcmp(k->v[i].path, path) == 0) return &k->v[i];
    return NULL;
}

static int same_file(const struct ckpt_known_entry *e, const struct stat *st) {
    return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
           e->mtime.tv_sec == st->st_mtim.tv_sec && e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static void known_put(ckpt_known *k, const char *path, const struct stat *st, int good) {
    struct ckpt_known_entry *e = known_find(k, path);
    if (!e) {
        if (k->n == k->cap) {
            k->cap = k->cap ? 2 * k->cap : 8;
            k->v = xrealloc(k->v, (size_t)k->cap * sizeof *k->v);
        }
        e = &k->v[k->n++];
        e->path = xstrdup(path);
    }
    e->dev = st->st_dev;
    e->ino = st->st_ino;
    e->size = st->st_size;
    e->mtime = st->st_mtim;
    e->good = good;
}

void ckpt_known_mark(ckpt_known *k, const char *path, int good) {
    struct stat st;
    if (!k || !path || stat(path, &st) != 0) return;
    known_put(k, path, &st, good ? 1 : 0);
}

int ckpt_verify(const char *path, ckpt_known *k) {
    struct stat st;
    if (!path) return err_set("checkpoint: NULL path"), 0;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) err_set("checkpoint %s: not found", path);
        else err_set("checkpoint %s: cannot stat: %s", path, strerror(errno));
        return 0;
    }
    struct ckpt_known_entry *e = known_find(k, path);
    if (e && same_file(e, &st)) {
        if (!e->good) err_set("checkpoint %s: failed to verify earlier in this process", path);
        return e->good;
    }
    /* want 0: every record decoded and checksummed, nothing kept. */
    int good = ckpt_read(path, NULL, 0, 0, NULL, NULL, NULL, NULL) == 0;
    if (k) known_put(k, path, &st, good);
    return good;
}

/* ---------------------------------------------------------------- pruning */

/* Renames a corrupt checkpoint to PATH.corrupt (PATH.corrupt.N if taken): out of
 * ckpt_list's sight, but kept for inspection. */
static int set_aside(const char *path, char *aside, size_t len) {
    struct stat st;
    for (int i = 0; i < 1000; i++) {
        if (i == 0) snprintf(aside, len, "%s.corrupt", path);
        else snprintf(aside, len, "%s.corrupt.%d", path, i);
        if (lstat(aside, &st) != 0 && errno == ENOENT) {
            if (rename(path, aside) == 0) return 0;
            return err_set("checkpoint %s: cannot rename the corrupt file to %s: %s", path, aside, strerror(errno));
        }
    }
    return err_set("checkpoint %s: cannot set it aside: %s.corrupt .. .corrupt.999 all exist", path, path);
}

static int prune_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return err_set("checkpoint dir %s: cannot list: %s", dir, strerror(errno));
    int removed = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, ".ckpt-", 6) != 0 || len < 10 || strcmp(e->d_name + len - 4, ".tmp") != 0) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0) removed++;
        else if (errno != ENOENT && rc == 0)
            rc = err_set("checkpoint %s/%s: cannot delete stale temp file: %s", dir, e->d_name, strerror(errno));
    }
    closedir(d);
    return rc ? -1 : removed;
}

int ckpt_prune_ex(const char *dir, int keep, const ckpt_prune_opts *o) {
    if (keep < 1) return err_set("checkpoint dir %s: prune must keep at least 1 checkpoint (asked %d)", dir, keep);
    ckpt_known *known = o ? o->known : NULL;
    char **paths;
    int n = ckpt_list(dir, &paths);
    if (n < 0) return -1;
    /* Newest first: the first `keep` that verify stay; a corrupt one met on the
     * way is set aside and not counted; only once `keep` good ones are counted
     * are the older ones deleted. So a good checkpoint is never deleted while a
     * corrupt one newer than it stays. */
    int removed = 0, kept = 0, rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (kept < keep) {
            if (ckpt_verify(paths[i], known)) {
                kept++;
                continue;
            }
            char why[512], aside[PATH_MAX + 32];
            snprintf(why, sizeof why, "%s", err_msg());
            if (set_aside(paths[i], aside, sizeof aside) != 0) {
                rc = -1;
                break;
            }
            if (o && o->on_aside) o->on_aside(o->arg, paths[i], aside, why);
            continue;
        }
        if (unlink(paths[i]) == 0) removed++;
        else if (errno != ENOENT)
            rc = err_set("checkpoint %s: cannot delete: %s", paths[i], strerror(errno));
    }
    ckpt_list_free(paths, n);
    if (rc) return -1;
    int t = prune_temp_files(dir);
    return t < 0 ? -1 : removed + t;
}

int ckpt_prune(const char *dir, int keep) { return ckpt_prune_ex(dir, keep, NULL); }
