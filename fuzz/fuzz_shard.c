/* Decoder target: one shard file (docs/shards.md, format 1 or 2) opened with
 * shard_file_open and every record read with shard_record_read, as the shards dataset
 * does, for 1x4x4 records (small, so that the fuzzer reaches whole files). An accepted
 * shard must have a consistent index (frames contiguous inside the file, labels >= -1)
 * and every record readable; a refusal, of the file or of one record, must say why. */
#include <string.h>
#include <unistd.h>

#include <zstd.h>

#include "common/data/shards.h"
#include "fuzz/fuzz.h"

#define FUZZ_SHARD_C 1
#define FUZZ_SHARD_S 4
#define FUZZ_SHARD_RB (FUZZ_SHARD_C * FUZZ_SHARD_S * FUZZ_SHARD_S)

int fuzz_check(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, "shard.ddsh");
    int fd = -1;
    shard_index_entry *e = NULL;
    shard_file_info info;
    fuzz_err_clear();
    if (shard_file_open(path, FUZZ_SHARD_C, FUZZ_SHARD_S, &fd, &e, &info) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("shard: refused without a message");
        if (fd >= 0 || e) FUZZ_FAIL("shard: refused but returned a descriptor or an index");
        return 0;
    }
    if (info.version != 1 && info.version != 2) FUZZ_FAIL("shard: accepted version %u", info.version);
    if (info.records > SHARD_MAX_RECORDS || info.file_bytes != size) FUZZ_FAIL("shard: records or size wrong");
    uint64_t pos = info.version == 1 ? SHARD_V1_HEADER_BYTES : SHARD_HEADER_BYTES;
    size_t max_len = 0;
    for (uint64_t r = 0; r < info.records; r++) {
        if (e[r].offset != pos || e[r].length == 0 || e[r].offset + e[r].length > size || e[r].label < -1)
            FUZZ_FAIL("shard: accepted an inconsistent index entry %llu", (unsigned long long)r);
        pos += e[r].length;
        if (e[r].length > max_len) max_len = e[r].length;
    }
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    uint8_t *scratch = xmalloc(max_len ? max_len : 1), out[FUZZ_SHARD_RB];
    int all = 1;
    for (uint64_t r = 0; r < info.records; r++) {
        fuzz_err_clear();
        if (shard_record_read(fd, path, r, &e[r], scratch, dctx, out, FUZZ_SHARD_RB) != 0) {
            if (fuzz_err_empty() || !strstr(err_msg(), "record")) FUZZ_FAIL("shard: a record refused without naming it");
            all = 0;
        } else if (shard_crc32(out, FUZZ_SHARD_RB) != e[r].crc) {
            FUZZ_FAIL("shard: record %llu returned with another crc", (unsigned long long)r);
        }
    }
    ZSTD_freeDCtx(dctx);
    free(scratch);
    free(e);
    close(fd);
    return all;
}
