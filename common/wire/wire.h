/* The wire layer of distributed training: gradient codecs and the two
 * messages (proto/wire.proto, docs/wire.md).
 *
 *   coordinator --WorkAssignment--> worker --GradientPush (one per chunk)--> server shard
 *
 * Every decoder treats its input as hostile: it validates sizes and fields
 * against what the receiver expects and returns -1 with err_msg() naming the
 * field, never crashes, and never allocates more than the receiver's own sizes
 * allow (decompression is bounded by n * 4 bytes).
 *
 * Threads: a wire_ctx is used by one thread at a time; the pack/unpack
 * functions keep no state. Errors go through err_set (thread-local). */
#ifndef DDPM_WIRE_H
#define DDPM_WIRE_H

#include <stddef.h>
#include <stdint.h>


/* The gradient codecs (distributed.codec). */
typedef enum { CODEC_FP32 = 0, CODEC_FP32_ZSTD = 1, CODEC_BF16_ZSTD = 2 } wire_codec;

/* ---------------------------------------------------------------- codecs */

/* Owns one zstd compression and one decompression context and the scratch
 * buffers that wire_encode's output lives in. Scratch grows to the largest
 * chunk seen and is then reused: steady state allocates nothing. One per thread. */
typedef struct wire_ctx wire_ctx;

/* NULL (err_msg set) if zstd cannot create its contexts. */
wire_ctx *wire_ctx_create(void);
void wire_ctx_free(wire_ctx *c); /* NULL is a no-op */

/* Encodes g[0..n) (borrowed, read only) with `codec`.
 *   CODEC_FP32      raw little-endian float32 (4n bytes).
 *   CODEC_FP32_ZSTD 4-way byte shuffle (all bytes 0, then all bytes 1, ...), zstd at `level`.
 *   CODEC_BF16_ZSTD error feedback: v = g + residual; sent = bf16 round-to-nearest-even of v
 *                   (saturating to the largest finite bf16 instead of overflowing to Inf);
 *                   residual = v - sent (exact). The top 16 bits of sent, 2-way byte
 *                   shuffled, then zstd at `level`.
 * residual (n floats, borrowed, updated in place) is required for CODEC_BF16_ZSTD and
 * ignored by the others (may be NULL). Zstd frames carry a content checksum.
 * `level` must lie in zstd's range (ZSTD_minCLevel()..ZSTD_maxCLevel(); 0 = zstd's default);
 * it is ignored by CODEC_FP32.
 * Non-finite values (g, or g + residual for bf16) are refused: -1 naming the first index,
 * nothing encoded and residual unchanged.
 * *out points into c's scratch (owned by c), valid until the next wire_encode on c.
 * Returns 0, or -1 with err_msg set. */
int wire_encode(wire_ctx *c, wire_codec codec, int level, const float *g, float *residual,
                size_t n, const uint8_t **out, size_t *out_len);

/* Decodes in[0..len) (borrowed), which must hold exactly n values of `codec`, and ADDS
 * them into acc[0..n) (borrowed). Refused, with err_msg saying what is wrong: an unknown
 * codec, a size that does not match n (fp32: len != 4n), anything but exactly one standard
 * zstd frame (no skippable/legacy frames, no trailing bytes), a corrupt/truncated frame, a frame declaring or decompressing to a size other than 4n (bf16: 2n) bytes,
 * a checksum mismatch, or any non-finite decoded value. Decompression writes into a
 * buffer of exactly the expected size, so a "zstd bomb" fails without allocating.
 * On error acc is left unchanged (values are checked before any is added).
 * Returns 0 or -1. */
int wire_decode_add(wire_ctx *c, wire_codec codec, const uint8_t *in, size_t len, float *acc,
                    size_t n);

/* bfloat16 helpers (the top 16 bits of an IEEE float32).
 * wire_bf16_round: IEEE round-to-nearest-even; ties go to the even bf16. ±Inf stays ±Inf;
 * finite values beyond the largest bf16 (3.3895314e38) round to ±Inf as IEEE says; NaN
 * stays NaN (sign kept, quiet bit set, so a NaN never rounds into Inf).
 * wire_bf16_round_sat: the same for finite input, but saturates at ±3.3895314e38 instead
 * of overflowing; wire_encode uses it so that a finite input is always sent finite. */
uint16_t wire_bf16_round(float x);
uint16_t wire_bf16_round_sat(float x);
float wire_bf16_to_float(uint16_t b);

/* "fp32" | "fp32_zstd" | "bf16_zstd", or "unknown". */
/* The codecs' names, indexed by wire_codec, NULL-terminated (the config parses
 * distributed.codec with them). */
extern const char *const wire_codec_names[];
const char *wire_codec_name(wire_codec codec);

/* ---------------------------------------------------------------- WorkAssignment */

/* One worker's share of one step. After wire_work_unpack the arrays are owned by the
 * struct (free with wire_work_free); for wire_work_pack the caller's arrays are borrowed.
 * Arrays are NULL when n == 0. */
typedef struct {
    uint64_t step, seed;
    uint32_t total_batch; /* global batch B; >= 1 and >= n unless stop */
    int stop;             /* 1: no more work, the worker exits */
    int n;                /* items in this assignment */
    uint64_t *sample_ids; /* n: positions in the global sample stream */
    uint32_t *indices;    /* n: dataset records */
    int *t;               /* n: timestep indices 0..T-1 */
    uint8_t *flip;        /* n: 0 or 1 */
} wire_work;

/* Packs w into a malloc'd buffer (*buf, owned by the caller: free()). Refuses n < 0,
 * missing arrays, t < 0, flips other than 0/1, stop == 0 with total_batch < max(n, 1).
 * Returns 0 or -1. */
int wire_work_pack(const wire_work *w, uint8_t **buf, size_t *len);
/* Unpacks buf[0..len) (borrowed) into *out and validates it: a protobuf WorkAssignment;
 * n = number of sample_ids <= max_items; indices, timesteps and flips each exactly n
 * entries; every timestep < T; every index < dataset_size; flips 0/1; unless stop,
 * 1 <= total_batch and n <= total_batch. -1 with err_msg naming the field on any
 * violation, *out then zeroed (nothing to free). */
int wire_work_unpack(const uint8_t *buf, size_t len, int max_items, int T,
                     uint64_t dataset_size, wire_work *out);
void wire_work_free(wire_work *w); /* frees the arrays and zeroes *w; zeroed w is a no-op */

/* ---------------------------------------------------------------- GradientPush */

/* One chunk of a worker's gradient, plus (has_stats) its loss statistics for the step.
 * raw_bytes must equal count * 4. With has_stats, q_count[0..3] must sum to n_samples
 * (quartiles of t: t * 4 / T). Loss values are not range-checked: a NaN loss is news the
 * coordinator must report, not a framing error (the gradient itself is checked by
 * wire_decode_add).
 * For wire_push_pack, data is borrowed from the caller. After wire_push_unpack, data
 * points into the unpacked message held in msg_: valid until wire_push_free. */
typedef struct {
    uint64_t step;
    uint32_t worker, chunk;
    uint64_t offset, count; /* in floats */
    wire_codec codec;
    const uint8_t *data;
    size_t data_len;
    uint64_t raw_bytes;
    int has_stats;
    double loss_sum, q_sum[4];
    double mse_sum, vb_sum; /* learn_sigma: loss_sum's two terms (loss_stats), else 0 */
    uint64_t q_count[4], n_samples;
    uint64_t bytes_raw_total, bytes_sent_total; /* the sender's running totals (any chunk) */
    void *msg_; /* private: the unpacked message */
} wire_push;

/* Packs p into a malloc'd buffer (*buf, owned by the caller: free()). Refuses an unknown
 * codec, data == NULL with data_len > 0, raw_bytes != count * 4, q_count not summing to
 * n_samples. Returns 0 or -1. */
int wire_push_pack(const wire_push *p, uint8_t **buf, size_t *len);
/* Unpacks buf[0..len) (borrowed) and validates it against what the receiver expects:
 * step == expect_step; chunk < n_chunks; offset == chunk_offsets[chunk] and
 * count == chunk_counts[chunk] (tables borrowed, n_chunks entries); a known codec;
 * raw_bytes == count * 4; CODEC_FP32 data of exactly count * 4 bytes; q_sum and q_count
 * with 4 entries each if has_stats and none otherwise, q_count summing to n_samples.
 * The payload itself is checked by wire_decode_add. -1 with err_msg naming the field,
 * *out then zeroed (nothing to free). The worker rank is not checked here: the caller
 * knows which ranks may send. */
int wire_push_unpack(const uint8_t *buf, size_t len, uint64_t expect_step, int n_chunks,
                     const uint64_t *chunk_offsets, const uint64_t *chunk_counts,
                     wire_push *out);
void wire_push_free(wire_push *p); /* frees the message, zeroes *p; zeroed p is a no-op */

#endif
