/* Packed image shards (docs/shards.md): uint8 CHW records, one zstd frame per record,
 * an index of (offset, length, crc32) per record, and a text manifest listing the
 * shards. Written by ddpm-prep, read at random by the `shards` dataset.
 *
 * A shard file is written to NAME.tmp and renamed when complete (header, frames,
 * index, all checksummed), then the manifest is rewritten atomically; so a killed
 * writer leaves complete shards plus a manifest that says how far it got. */
#ifndef DDPM_SHARDS_H
#define DDPM_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#define SHARD_MAGIC "DDPMSHRD"
#define SHARD_VERSION 1u
#define SHARD_HEADER_BYTES 64
#define SHARD_INDEX_ENTRY_BYTES 16
#define SHARD_MANIFEST_NAME "manifest.txt"

/* One record's place in its shard file (16 bytes on disk, little-endian). */
typedef struct {
    uint64_t offset;  /* of its zstd frame, from the start of the file */
    uint32_t length;  /* of the frame in bytes */
    uint32_t crc;     /* crc32 (zlib) of the decompressed record */
} shard_index_entry;

/* ---------- writing one shard file ---------- */

typedef struct shard_writer shard_writer; /* opaque; owns its file and index */

/* Starts DIR/NAME.tmp for records of channels x size x size bytes. `name` is the final
 * file name inside `dir` (both borrowed). Returns 0 or -1 (err_msg names the file). */
int shard_writer_open(shard_writer **out, const char *dir, const char *name, int channels, int size);
/* Appends one record's zstd frame (borrowed, `len` bytes); `crc` is crc32 of the record.
 * Returns 0 or -1 (write error). */
int shard_writer_add(shard_writer *w, const void *frame, size_t len, uint32_t crc);
uint64_t shard_writer_count(const shard_writer *w);
/* Writes the index and header, fsyncs, renames NAME.tmp to NAME and fsyncs the folder.
 * Frees w whatever the outcome. Returns 0 or -1. */
int shard_writer_finish(shard_writer *w);
/* Deletes the temporary file and frees w; NULL is ignored. */
void shard_writer_abort(shard_writer *w);

/* ---------- reading one shard file ---------- */

/* Opens `path` (read-only), checks its header (magic, version, shape, header crc),
 * reads and checks its index (index crc; frames contiguous from the header to the
 * index, the file ends with the index). On success *fd and *index (n entries, caller
 * frees) belong to the caller. Returns 0 or -1 (err_msg names the file). */
int shard_file_open(const char *path, int channels, int size, int *fd, shard_index_entry **index,
                    uint64_t *n);

/* Reads record `rec` (entry `e`) of the open shard `fd`: pread of its frame into
 * `scratch` (caller-owned, at least e->length bytes), decompression with `dctx`
 * (caller-owned) into `out` (record_bytes, caller-owned), then checks that the frame is
 * one whole zstd frame of exactly record_bytes and its crc32. Thread-safe for distinct
 * scratch/dctx. Returns 0 or -1 with err_msg naming `path` and the record. */
struct ZSTD_DCtx_s;
int shard_record_read(int fd, const char *path, uint64_t rec, const shard_index_entry *e,
                      void *scratch, struct ZSTD_DCtx_s *dctx, uint8_t *out, size_t record_bytes);

/* crc32 (zlib's polynomial) of n bytes. */
uint32_t shard_crc32(const void *p, size_t n);

/* ---------- the manifest ---------- */

typedef struct {
    char *name;          /* file name inside the folder */
    uint64_t records;    /* records in it */
    uint64_t source_end; /* source items consumed once it was complete */
} shard_entry;

typedef struct {
    uint64_t source_index; /* the item's position in the source */
    char *key;             /* LMDB key or file path */
    char *reason;          /* why it was skipped */
} shard_skip;

typedef struct {
    int channels, size;
    uint32_t records_per_shard;
    int zstd_level;
    char *source_format;    /* lmdb | image_folder | idx | cifar10 */
    char *source_path;
    uint64_t source_items;  /* items the source held when preparation started */
    shard_entry *shards;
    size_t n_shards;
    shard_skip *skips;
    size_t n_skips;
    int complete;           /* every source item is packed or skipped */
} shard_manifest;

/* Reads DIR/manifest.txt into *m (caller frees with shard_manifest_free). Returns 0, or
 * -1 with err_msg naming the file and line. */
int shard_manifest_read(shard_manifest *m, const char *dir);
/* Writes it atomically (temporary file, fsync, rename, fsync of the folder). */
int shard_manifest_write(const shard_manifest *m, const char *dir);
void shard_manifest_free(shard_manifest *m);
/* Appends entries (strings copied). */
void shard_manifest_add_shard(shard_manifest *m, const char *name, uint64_t records, uint64_t source_end);
void shard_manifest_add_skip(shard_manifest *m, uint64_t source_index, const char *key, const char *reason);
/* Total records over the listed shards. */
uint64_t shard_manifest_records(const shard_manifest *m);

/* "shard-%05u.ddsh" into buf. */
void shard_file_name(char *buf, size_t cap, uint32_t number);

#endif
