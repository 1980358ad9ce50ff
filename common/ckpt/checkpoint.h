/* Checkpoint files: everything needed to resume a run, in one file.
 *
 * A checkpoint is a zstd stream (frame checksum on) of length-delimited
 * protobuf records (proto/checkpoint.proto): a Header (config text, step, seed,
 * data cursor, world layout, tensor table), the float32 sections as TensorChunk
 * records of at most 4 MiB, and a Footer with per-section counts and CRC-32s.
 * docs/checkpoint-format.md is the full description.
 *
 * Sections are the flat parameter buffer and its companions, each n_params
 * floats laid out by the same tensor table: parameters, EMA parameters, Adam
 * first and second moments. A reader may take any subset; a sampler reads only
 * EMA and skips the optimizer state without buffering it.
 *
 * All functions return -1 on failure after err_set() with a message naming the
 * file and what is wrong (see common/core/util.h); they never print or exit. */
#ifndef DDPM_CHECKPOINT_H
#define DDPM_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#define CKPT_FORMAT_VERSION 1u
#define CKPT_MAGIC "ddpm-checkpoint"
/* Floats per TensorChunk record (4 MiB of data). */
#define CKPT_CHUNK_FLOATS ((uint64_t)1 << 20)
/* Sanity bound on n_params a reader accepts (256 GiB per section). */
#define CKPT_MAX_PARAMS ((uint64_t)1 << 36)
#define CKPT_MAX_NDIM 4
/* Default rng_algorithm written when the header leaves it NULL. */
#define CKPT_DEFAULT_RNG "philox4x32-10"

/* Section flags (also the values of the proto enum Section). */
enum { CKPT_PARAMS = 1, CKPT_EMA = 2, CKPT_ADAM_M = 4, CKPT_ADAM_V = 8, CKPT_ALL = 15 };

typedef struct {
    char *name;           /* owned by the enclosing header */
    int ndim;             /* 0..4 */
    int64_t shape[4];
    uint64_t offset, size; /* in floats, into every section's flat buffer */
} ckpt_tensor;

/* What a run needs besides the float buffers. On write every pointer is
 * borrowed; on read every pointer is owned by the struct (ckpt_header_free). */
typedef struct {
    uint32_t format_version;   /* read: the file's; write: ignored (CKPT_FORMAT_VERSION) */
    char *config_yaml;         /* full config text; NULL writes "" */
    uint64_t step, seed;       /* seed: the counter-based RNG's key seed, its only state */
    uint64_t data_epoch, data_position, permutation_seed;
    uint32_t world_size, servers, workers;
    uint64_t n_params;         /* floats per section */
    int n_tensors;
    ckpt_tensor *tensors;
    /* Added fields (zero-initialise the struct when writing): */
    char *rng_algorithm;       /* NULL writes CKPT_DEFAULT_RNG */
    int sections;              /* read: CKPT_* flags present; write: ignored (from non-NULL buffers) */
} ckpt_header;

/* Frees the owned strings and arrays of a header returned by a reader and zeroes
 * it; safe on a zeroed header. Do not call it on a header whose pointers are
 * borrowed (as passed to ckpt_write). */
void ckpt_header_free(ckpt_header *h);

/* Writer tuning; zero fields take the defaults. */
typedef struct {
    int level;     /* zstd level, default 3; above 19 is clamped to 19 (readers bound the window to 8 MiB) */
    int threads;   /* zstd worker threads, default 0 (compress in the caller's thread) */
    /* Test-only crash point (the crash-consistency tests; never in production): with
     * kill_enabled, the writer writes exactly kill_at_byte bytes of the temp file and
     * then raises SIGKILL on its own process. ddpm-train fills it from
     * DDPM_TEST_KILL_AT_BYTE (common/env/env_opts.h). */
    int kill_enabled;
    uint64_t kill_at_byte;
} ckpt_write_opts;

/* Atomic write: writes DIR/.ckpt-STEP.tmp (STEP as %010llu), fsyncs it, renames
 * it to DIR/ckpt-%010llu.ddpm and fsyncs DIR, so a crash leaves either the old
 * set of checkpoints or the new complete file, never a partial ckpt-*.ddpm.
 * h and the buffers are borrowed; each buffer holds h->n_params floats and a
 * NULL buffer's section is not written. The path written is copied into
 * written_path (may be NULL) when it fits in path_len. On failure the temp file
 * is removed and -1 returned with err_msg naming the path. */
int ckpt_write(const char *dir, const ckpt_header *h, const float *params, const float *ema,
               const float *adam_m, const float *adam_v, char *written_path, size_t path_len);
/* As ckpt_write, with compression options (opts may be NULL). */
int ckpt_write_ex(const char *dir, const ckpt_header *h, const float *params, const float *ema,
                  const float *adam_m, const float *adam_v, const ckpt_write_opts *opts,
                  char *written_path, size_t path_len);

/* The same format and atomicity (PATH's folder/.NAME.tmp, fsync, rename, fsync of
 * the folder) at a path of the caller's choosing (ddpm-import's --out). */
int ckpt_write_file(const char *path, const ckpt_header *h, const float *params, const float *ema,
                    const float *adam_m, const float *adam_v);

/* Reads and fully verifies a checkpoint while streaming it: the sections named
 * in `want` are copied into the caller's buffers (each n_params floats, NULL for
 * sections not wanted); other sections are decoded, checksummed and dropped
 * without an n_params-sized allocation. On success *h receives the header
 * (owned by the caller: ckpt_header_free); h may be NULL if not needed. If
 * expect_n_params != 0 and the file's differs, that is an error. On failure -1,
 * *h is zeroed, and the wanted buffers may hold partial data; err_msg names the
 * path and the problem (not found, not a checkpoint, truncated, checksum
 * mismatch, missing section, bad record #k, size mismatch). */
int ckpt_read(const char *path, ckpt_header *h, uint64_t expect_n_params, int want, float *params,
              float *ema, float *adam_m, float *adam_v);

/* Reads and validates only the header record (fast; the rest is not verified).
 * *h is owned by the caller (ckpt_header_free); zeroed on failure. */
int ckpt_read_header(const char *path, ckpt_header *h);

/* Lists DIR's checkpoints (files named ckpt-<digits>.ddpm, temp files excluded)
 * newest (highest step) first. Returns the count and sets *paths to a malloc'd
 * array of malloc'd "DIR/name" strings (free with ckpt_list_free; NULL when the
 * count is 0), or -1 if DIR cannot be read. */
int ckpt_list(const char *dir, char ***paths);
void ckpt_list_free(char **paths, int n);

/* What this process knows about checkpoint files, so that pruning need not read
 * gigabytes again: one it wrote (fsynced) or read whole is good, one that failed
 * to read is bad. Each entry holds the file's identity (device, inode, size,
 * mtime), so a file replaced since is read afresh. A zeroed struct is empty. */
struct ckpt_known_entry;
typedef struct {
    struct ckpt_known_entry *v;
    int n, cap;
} ckpt_known;

void ckpt_known_free(ckpt_known *k);
/* Records path as good (nonzero) or bad; a path that cannot be stat'ed is not
 * recorded (k NULL: nothing). */
void ckpt_known_mark(ckpt_known *k, const char *path, int good);
/* "Verifies": ckpt_read of every section succeeds (header, every record, the
 * footer's counts and CRCs, the zstd frame checksum). Returns 1 if path
 * verifies, 0 if not (err_msg says why). The answer comes from k when it holds
 * the same file; otherwise the file is read whole (no n_params-sized buffer) and
 * the answer recorded in k (k may be NULL). */
int ckpt_verify(const char *path, ckpt_known *k);

/* Pruning options; a NULL opts is all zero. */
typedef struct {
    ckpt_known *known; /* what is known to verify; NULL: each candidate is read whole */
    /* told of each corrupt checkpoint set aside: its path, the new name, why */
    void (*on_aside)(void *arg, const char *path, const char *aside, const char *why);
    void *arg;
} ckpt_prune_opts;

/* Keeps the newest `keep` (>= 1) checkpoints in DIR that verify (ckpt_verify)
 * and deletes the older ones; a checkpoint that does not verify, met before
 * `keep` good ones are counted, is renamed to PATH.corrupt (PATH.corrupt.N if
 * that exists), reported through opts->on_aside and not counted. So a good
 * checkpoint is never deleted while a corrupt one newer than it stays. Also
 * deletes stale .ckpt-*.tmp files. Call it from the one process that writes
 * checkpoints (the run-folder lock's holder, runlock.h). Returns the number of
 * files deleted, or -1. */
int ckpt_prune_ex(const char *dir, int keep, const ckpt_prune_opts *opts);
/* ckpt_prune_ex with no cache (every checkpoint kept is read whole) and no report. */
int ckpt_prune(const char *dir, int keep);

/* "PARAMS", "EMA", "ADAM_M", "ADAM_V" for a single flag, else "?". */
const char *ckpt_section_name(int section);

#endif
