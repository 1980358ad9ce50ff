/* Packed image shards (docs/shards.md): uint8 CHW records, one zstd frame per record,
 * an index of (offset, length, crc32, label) per record, and a text manifest listing the
 * shards. Written by ddpm-prep, read at random by the `shards` dataset.
 *
 * Identity (format 2): every shard's header names its dataset (an id written by
 * ddpm-prep for the whole preparation), its position in the shard list and its first
 * record; the manifest records the dataset id and each shard's size and header crc. So
 * a shard listed twice, a shard replaced by a copy of another or one from another
 * preparation is refused by name. Format 1 (no identity) is still read.
 *
 * A shard file is written to NAME.tmp and renamed when complete (header, frames,
 * index, all checksummed), then the manifest is rewritten atomically; so a killed
 * writer leaves complete shards plus a manifest that says how far it got. */
#ifndef DDPM_SHARDS_H
#define DDPM_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#define SHARD_MAGIC "DDPMSHRD"
#define SHARD_VERSION 2u        /* what the writer writes; the reader also reads 1 */
#define SHARD_V1_HEADER_BYTES 64
#define SHARD_V1_ENTRY_BYTES 16 /* v1 index entry: offset, length, crc */
#define SHARD_HEADER_BYTES 128  /* v2 */
#define SHARD_INDEX_ENTRY_BYTES 20 /* v2 index entry: offset, length, crc, label */
#define SHARD_ID_BYTES 16
#define SHARD_MANIFEST_NAME "manifest.txt"
/* Stated limits, checked before anything read from a shard or manifest is allocated. */
#define SHARD_MAX_RECORDS (1u << 24)       /* records in one shard (index: 320 MiB) */
#define SHARD_MAX_SHARDS (1u << 20)        /* shards in one manifest */
#define SHARD_MAX_MANIFEST_BYTES (256u << 20)
#define SHARD_MAX_LINE 65536               /* one manifest line (escaped keys are <= 3x) */
#define SHARD_LABEL_NONE (-1)

/* One record's place in its shard file (little-endian on disk: 16 bytes in v1, 20 in v2). */
typedef struct {
    uint64_t offset;  /* of its zstd frame, from the start of the file */
    uint32_t length;  /* of the frame in bytes */
    uint32_t crc;     /* crc32 (zlib) of the decompressed record */
    int32_t label;    /* class label, SHARD_LABEL_NONE (-1) when none; v1 files: always -1 */
} shard_index_entry;

/* What a shard file's header says about itself. v1 files carry no identity: shard,
 * dataset_id and first_record are 0 for them. */
typedef struct {
    unsigned version;
    uint64_t records;
    uint32_t shard;            /* v2: its position in the dataset's shard list */
    uint8_t dataset_id[SHARD_ID_BYTES]; /* v2: the preparation it belongs to */
    uint64_t first_record;     /* v2: dataset position of its first record */
    uint32_t header_crc;       /* crc32 stored in the header (it covers the index crc) */
    uint64_t file_bytes;
    uint64_t dev, ino;         /* to tell two names of one file apart */
} shard_file_info;

/* ---------- writing one shard file (always the current version, 2) ---------- */

typedef struct shard_writer shard_writer; /* opaque; owns its file and index */

/* Starts DIR/NAME.tmp for records of channels x size x size bytes. `name` is the final
 * file name inside `dir` (both borrowed). The header will say: shard number `shard`
 * of the dataset `id` (SHARD_ID_BYTES, copied), whose record `first_record` is this
 * shard's first. Returns 0 or -1 (err_msg names the file). */
int shard_writer_open(shard_writer **out, const char *dir, const char *name, int channels, int size,
                      const uint8_t *id, uint32_t shard, uint64_t first_record);
/* Appends one record's zstd frame (borrowed, `len` bytes); `crc` is crc32 of the record,
 * `label` its class (SHARD_LABEL_NONE: none). Returns 0 or -1 (write error, or more than
 * SHARD_MAX_RECORDS records). */
int shard_writer_add(shard_writer *w, const void *frame, size_t len, uint32_t crc, int32_t label);
uint64_t shard_writer_count(const shard_writer *w);
/* Writes the index and header, fsyncs, renames NAME.tmp to NAME and fsyncs the folder;
 * fills *info (may be NULL) with what the manifest records: size and header crc.
 * Frees w whatever the outcome. Returns 0 or -1. */
int shard_writer_finish(shard_writer *w, shard_file_info *info);
/* Deletes the temporary file and frees w; NULL is ignored. */
void shard_writer_abort(shard_writer *w);

/* ---------- reading one shard file ---------- */

/* Opens `path` (read-only; a regular file, so a FIFO cannot block), checks its header
 * (magic, version 1 or 2, shape, header crc, reserved bytes zero), reads and checks its
 * index (record count within SHARD_MAX_RECORDS and the file; index crc; frames
 * contiguous from the header to the index, each no longer than
 * ZSTD_compressBound(channels*size*size); the file ends with the index; v2 labels
 * >= -1). On success *fd, *index (info->records entries, caller frees) and *info belong
 * to the caller. Returns 0 or -1 (err_msg names the file). */
int shard_file_open(const char *path, int channels, int size, int *fd, shard_index_entry **index,
                    shard_file_info *info);

/* Reads record `rec` (entry `e`) of the open shard `fd`: pread of its frame into
 * `scratch` (caller-owned, at least e->length bytes), then checks that the frame is
 * one whole zstd frame of the indexed length declaring exactly record_bytes of content
 * (before decompressing), decompresses it with `dctx` (caller-owned) into `out`
 * (record_bytes, caller-owned) and checks its crc32. Thread-safe for distinct
 * scratch/dctx. Returns 0 or -1 with err_msg naming `path` and the record. */
struct ZSTD_DCtx_s;
int shard_record_read(int fd, const char *path, uint64_t rec, const shard_index_entry *e,
                      void *scratch, struct ZSTD_DCtx_s *dctx, uint8_t *out, size_t record_bytes);

/* crc32 (zlib's polynomial) of n bytes. */
uint32_t shard_crc32(const void *p, size_t n);

/* A dataset id derived from `text` (a description of the preparation: its settings and
 * its source), so that a rerun of the same preparation writes the same bytes. */
void shard_dataset_id(const char *text, uint8_t id[SHARD_ID_BYTES]);

/* ---------- the manifest ---------- */

typedef struct {
    char *name;          /* file name inside the folder */
    uint64_t records;    /* records in it */
    uint64_t source_end; /* source items consumed once it was complete */
    uint64_t bytes;      /* v2: its file size */
    uint32_t header_crc; /* v2: the crc32 its header carries (covers the index, so the content) */
} shard_entry;

typedef struct {
    uint64_t source_index; /* the item's position in the source */
    char *key;             /* LMDB key or file path */
    char *reason;          /* why it was skipped */
} shard_skip;

typedef struct {
    unsigned version;       /* 1 or 2 when read; the writer writes 2 (0 means 2) */
    uint8_t dataset_id[SHARD_ID_BYTES]; /* v2 */
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

/* Reads DIR/manifest.txt into *m (caller frees with shard_manifest_free). Checks the
 * syntax and what the manifest can check alone: limits, no shard file listed twice,
 * shards in input order with record counts within records_per_shard and the items
 * consumed, and for a complete one that every input item is packed or skipped and the
 * totals agree. Returns 0, or -1 with err_msg naming the file and line. */
int shard_manifest_read(shard_manifest *m, const char *dir);
/* Writes it (version 2) atomically (temporary file, fsync, rename, fsync of the folder). */
int shard_manifest_write(const shard_manifest *m, const char *dir);
void shard_manifest_free(shard_manifest *m);
/* Appends entries (strings copied); bytes/header_crc from shard_writer_finish (0 for v1). */
void shard_manifest_add_shard(shard_manifest *m, const char *name, uint64_t records, uint64_t source_end,
                              uint64_t bytes, uint32_t header_crc);
void shard_manifest_add_skip(shard_manifest *m, uint64_t source_index, const char *key, const char *reason);
/* Total records over the listed shards. */
uint64_t shard_manifest_records(const shard_manifest *m);

/* Checks that the shard file `path` (opened, described by `f`) is entry `i` of the
 * manifest `mpath` (m): the same version; the record count; and for v2 the dataset id,
 * its shard number i, its first record `first` (records of the entries before it), its
 * size and header crc as the manifest recorded them. Returns 0, or -1 naming the
 * manifest and the shard file (a shard from another dataset, or a copy of another
 * shard of this one). */
int shard_check_identity(const shard_manifest *m, const char *mpath, size_t i, const char *path,
                         const shard_file_info *f, uint64_t first);

/* "shard-%05u.ddsh" into buf. */
void shard_file_name(char *buf, size_t cap, uint32_t number);

#endif
