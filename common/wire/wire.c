/* Wire codecs and message packing (wire.h, docs/wire.md).
 *
 * Byte shuffle: a gradient's float32 values share sign/exponent bytes far more
 * than mantissa bytes; storing byte k of every value together (plane k) puts
 * the compressible high bytes next to each other, which zstd then finds. */
#include "common/wire/wire.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "common/core/util.h"
#include "proto/wire.pb-c.h"

_Static_assert((int)DDPM__WIRE__CODEC__CODEC_FP32 == (int)CODEC_FP32, "codec values differ");
_Static_assert((int)DDPM__WIRE__CODEC__CODEC_FP32_ZSTD == (int)CODEC_FP32_ZSTD, "codec values differ");
_Static_assert((int)DDPM__WIRE__CODEC__CODEC_BF16_ZSTD == (int)CODEC_BF16_ZSTD, "codec values differ");
_Static_assert(sizeof(float) == 4, "float32 expected");

struct wire_ctx {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    uint8_t *enc; /* wire_encode's output */
    size_t enc_cap;
    uint8_t *tmp; /* shuffled planes before compression / after decompression */
    size_t tmp_cap;
};

/* ---------------------------------------------------------------- helpers */

static inline uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static inline int bits_finite(uint32_t u) { return (u & 0x7F800000u) != 0x7F800000u; }

static int codec_known(int codec) {
    return codec == CODEC_FP32 || codec == CODEC_FP32_ZSTD || codec == CODEC_BF16_ZSTD;
}

const char *const wire_codec_names[] = {"fp32", "fp32_zstd", "bf16_zstd", NULL};

const char *wire_codec_name(wire_codec codec) {
    return codec_known((int)codec) ? wire_codec_names[codec] : "unknown";
}

/* Grows *buf to at least need bytes (at least 1, so the pointer is never NULL). */
static uint8_t *scratch(uint8_t **buf, size_t *cap, size_t need) {
    if (need == 0) need = 1;
    if (*cap < need) {
        free(*buf);
        *buf = xmalloc(need);
        *cap = need;
    }
    return *buf;
}

uint16_t wire_bf16_round(float x) {
    uint32_t u = f32_bits(x);
    if (!bits_finite(u)) {
        if (u & 0x007FFFFFu) return (uint16_t)((u >> 16) | 0x0040u); /* NaN: keep it NaN */
        return (uint16_t)(u >> 16);                                  /* ±Inf */
    }
    /* Add just under half an ulp of bf16, plus one if the kept part is odd: the carry
     * then rounds up exactly when the dropped half is > 0x8000, or == 0x8000 and odd.
     * A carry out of the mantissa bumps the exponent, which is the right result
     * (also from subnormal to normal, and to Inf past the largest finite). */
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

uint16_t wire_bf16_round_sat(float x) {
    uint16_t b = wire_bf16_round(x);
    if ((b & 0x7FFFu) == 0x7F80u && bits_finite(f32_bits(x))) return (uint16_t)((b & 0x8000u) | 0x7F7Fu);
    return b;
}

float wire_bf16_to_float(uint16_t b) { return bits_f32((uint32_t)b << 16); }

/* ---------------------------------------------------------------- context */

wire_ctx *wire_ctx_create(void) {
    wire_ctx *c = xcalloc(1, sizeof *c);
    c->cctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    if (!c->cctx || !c->dctx) {
        wire_ctx_free(c);
        err_set("wire: cannot create zstd contexts (out of memory)");
        return NULL;
    }
    return c;
}

void wire_ctx_free(wire_ctx *c) {
    if (!c) return;
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    free(c->enc);
    free(c->tmp);
    free(c);
}

/* ---------------------------------------------------------------- encode */

static int compress_tmp(wire_ctx *c, int level, size_t src_len, const uint8_t **out,
                        size_t *out_len) {
    size_t bound = ZSTD_compressBound(src_len);
    if (ZSTD_isError(bound)) return err_set("wire_encode: %zu bytes is too large for zstd", src_len);
    uint8_t *dst = scratch(&c->enc, &c->enc_cap, bound);
    size_t r = ZSTD_CCtx_reset(c->cctx, ZSTD_reset_session_and_parameters);
    if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level);
    /* The transport is reliable; the checksum is for corruption elsewhere (bad memory,
     * a peer's bug) and costs about 1% of compression time. */
    if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(r)) r = ZSTD_compress2(c->cctx, dst, bound, c->tmp, src_len);
    if (ZSTD_isError(r)) return err_set("wire_encode: zstd failed: %s", ZSTD_getErrorName(r));
    *out = dst;
    *out_len = r;
    return 0;
}

int wire_encode(wire_ctx *c, wire_codec codec, int level, const float *g, float *residual,
                size_t n, const uint8_t **out, size_t *out_len) {
    if (!c || !out || !out_len || (n && !g)) return err_set("wire_encode: NULL argument");
    if (!codec_known((int)codec)) return err_set("wire_encode: unknown codec %d", (int)codec);
    if (n > SIZE_MAX / 8) return err_set("wire_encode: %zu values is too many", n);
    if (codec != CODEC_FP32 && (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()))
        return err_set("wire_encode: zstd level %d outside %d..%d", level, ZSTD_minCLevel(),
                       ZSTD_maxCLevel());
    *out = NULL;
    *out_len = 0;

    if (codec == CODEC_FP32 || codec == CODEC_FP32_ZSTD) {
        for (size_t i = 0; i < n; i++)
            if (!isfinite(g[i]))
                return err_set("wire_encode: gradient value %zu is not finite (%g)", i, (double)g[i]);
        if (codec == CODEC_FP32) {
            uint8_t *dst = scratch(&c->enc, &c->enc_cap, 4 * n);
            for (size_t i = 0; i < n; i++) {
                uint32_t u = f32_bits(g[i]);
                dst[4 * i] = (uint8_t)u;
                dst[4 * i + 1] = (uint8_t)(u >> 8);
                dst[4 * i + 2] = (uint8_t)(u >> 16);
                dst[4 * i + 3] = (uint8_t)(u >> 24);
            }
            *out = dst;
            *out_len = 4 * n;
            return 0;
        }
        uint8_t *p = scratch(&c->tmp, &c->tmp_cap, 4 * n);
        for (size_t i = 0; i < n; i++) {
            uint32_t u = f32_bits(g[i]);
            p[i] = (uint8_t)u;
            p[n + i] = (uint8_t)(u >> 8);
            p[2 * n + i] = (uint8_t)(u >> 16);
            p[3 * n + i] = (uint8_t)(u >> 24);
        }
        return compress_tmp(c, level, 4 * n, out, out_len);
    }

    /* CODEC_BF16_ZSTD */
    if (n && !residual) return err_set("wire_encode: bf16_zstd needs a residual buffer");
    /* Check first so that a refusal leaves the residual untouched. */
    for (size_t i = 0; i < n; i++) {
        float v = g[i] + residual[i];
        if (!isfinite(v))
            return err_set("wire_encode: gradient + residual at %zu is not finite (%g + %g)", i,
                           (double)g[i], (double)residual[i]);
    }
    uint8_t *p = scratch(&c->tmp, &c->tmp_cap, 2 * n);
    for (size_t i = 0; i < n; i++) {
        float v = g[i] + residual[i];
        uint16_t b = wire_bf16_round_sat(v);
        /* Exact: v and its rounding share the exponent range, so the difference has at
         * most 16 significant bits. */
        residual[i] = v - wire_bf16_to_float(b);
        p[i] = (uint8_t)b;
        p[n + i] = (uint8_t)(b >> 8);
    }
    return compress_tmp(c, level, 2 * n, out, out_len);
}

/* ---------------------------------------------------------------- decode */

/* Decompresses in[0..len) into c->tmp, which must come out exactly `expect` bytes. */
static int decompress_exact(wire_ctx *c, const char *codec, const uint8_t *in, size_t len,
                            size_t expect) {
    if (len == 0)
        return err_set("wire: %s payload is empty, expected a zstd frame of %zu bytes", codec, expect);
    /* Exactly one standard frame: no skippable or legacy-format frames (we never write
     * them, and the legacy decoders are attack surface we do not need), no trailing bytes. */
    if (len < 4 || ((uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24) !=
                       ZSTD_MAGICNUMBER)
        return err_set("wire: %s payload (%zu bytes) is not a zstd frame (bad magic)", codec, len);
    size_t frame = ZSTD_findFrameCompressedSize(in, len);
    if (ZSTD_isError(frame))
        return err_set("wire: corrupt %s payload (%zu bytes): zstd: %s", codec, len, ZSTD_getErrorName(frame));
    if (frame != len)
        return err_set("wire: %s payload has %zu bytes after its zstd frame", codec, len - frame);
    unsigned long long declared = ZSTD_getFrameContentSize(in, len);
    if (declared == ZSTD_CONTENTSIZE_ERROR)
        return err_set("wire: %s payload (%zu bytes) has a truncated or invalid zstd frame header",
                       codec, len);
    if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != (unsigned long long)expect)
        return err_set("wire: %s payload declares %llu decompressed bytes, expected %zu", codec,
                       declared, expect);
    /* The destination has exactly the expected size: a frame that decompresses to more
     * fails with dstSize_tooSmall instead of growing anything. */
    uint8_t *dst = scratch(&c->tmp, &c->tmp_cap, expect);
    size_t r = ZSTD_decompressDCtx(c->dctx, dst, expect, in, len);
    if (ZSTD_isError(r)) {
        if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall)
            return err_set("wire: %s payload decompresses to more than the expected %zu bytes",
                           codec, expect);
        return err_set("wire: corrupt %s payload (%zu bytes): zstd: %s", codec, len,
                       ZSTD_getErrorName(r));
    }
    if (r != expect)
        return err_set("wire: %s payload decompresses to %zu bytes, expected %zu", codec, r, expect);
    return 0;
}

int wire_decode_add(wire_ctx *c, wire_codec codec, const uint8_t *in, size_t len, float *acc,
                    size_t n) {
    if (!c || (n && !acc) || (len && !in)) return err_set("wire_decode_add: NULL argument");
    if (!codec_known((int)codec)) return err_set("wire_decode_add: unknown codec %d", (int)codec);
    if (n > SIZE_MAX / 8) return err_set("wire_decode_add: %zu values is too many", n);
    const char *name = wire_codec_name(codec);

    if (codec == CODEC_FP32) {
        if (len != 4 * n)
            return err_set("wire: fp32 payload has %zu bytes, expected %zu (%zu values)", len, 4 * n, n);
        for (size_t i = 0; i < n; i++) {
            const uint8_t *q = in + 4 * i;
            uint32_t u = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
            if (!bits_finite(u)) return err_set("wire: fp32 payload value %zu is not finite", i);
        }
        for (size_t i = 0; i < n; i++) {
            const uint8_t *q = in + 4 * i;
            uint32_t u = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
            acc[i] += bits_f32(u);
        }
        return 0;
    }

    if (codec == CODEC_FP32_ZSTD) {
        if (decompress_exact(c, name, in, len, 4 * n)) return -1;
        const uint8_t *p = c->tmp;
        for (size_t i = 0; i < n; i++) /* plane 3 holds the exponent's top bits */
            if ((p[3 * n + i] & 0x7Fu) == 0x7Fu && (p[2 * n + i] & 0x80u))
                return err_set("wire: fp32_zstd payload value %zu is not finite", i);
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)p[i] | (uint32_t)p[n + i] << 8 | (uint32_t)p[2 * n + i] << 16 |
                         (uint32_t)p[3 * n + i] << 24;
            acc[i] += bits_f32(u);
        }
        return 0;
    }

    /* CODEC_BF16_ZSTD */
    if (decompress_exact(c, name, in, len, 2 * n)) return -1;
    const uint8_t *p = c->tmp;
    for (size_t i = 0; i < n; i++) {
        uint16_t b = (uint16_t)(p[i] | p[n + i] << 8);
        if ((b & 0x7F80u) == 0x7F80u) return err_set("wire: bf16_zstd payload value %zu is not finite", i);
    }
    for (size_t i = 0; i < n; i++) acc[i] += wire_bf16_to_float((uint16_t)(p[i] | p[n + i] << 8));
    return 0;
}

/* ---------------------------------------------------------------- WorkAssignment */

int wire_work_pack(const wire_work *w, uint8_t **buf, size_t *len) {
    if (!w || !buf || !len) return err_set("wire_work_pack: NULL argument");
    *buf = NULL;
    *len = 0;
    if (w->n < 0) return err_set("wire_work_pack: n = %d is negative", w->n);
    if (w->n > 0 && (!w->sample_ids || !w->indices || !w->t || !w->flip))
        return err_set("wire_work_pack: n = %d but an item array is NULL", w->n);
    if (!w->stop && (w->total_batch < 1 || (uint64_t)w->n > w->total_batch))
        return err_set("wire_work_pack: total_batch %u must be >= 1 and >= n = %d", w->total_batch, w->n);
    size_t n = (size_t)w->n;
    for (size_t i = 0; i < n; i++) {
        if (w->t[i] < 0) return err_set("wire_work_pack: t[%zu] = %d is negative", i, w->t[i]);
        if (w->flip[i] > 1) return err_set("wire_work_pack: flip[%zu] = %u is not 0 or 1", i, w->flip[i]);
    }
    uint32_t *ts = n ? xmalloc(n * sizeof *ts) : NULL;
    for (size_t i = 0; i < n; i++) ts[i] = (uint32_t)w->t[i];

    Ddpm__Wire__WorkAssignment m = DDPM__WIRE__WORK_ASSIGNMENT__INIT;
    m.step = w->step;
    m.seed = w->seed;
    m.total_batch = w->total_batch;
    m.stop = w->stop ? 1 : 0;
    m.n_sample_ids = n;
    m.sample_ids = w->sample_ids;
    m.n_indices = n;
    m.indices = w->indices;
    m.n_timesteps = n;
    m.timesteps = ts;
    m.flips.len = n;
    m.flips.data = w->flip;
    size_t size = ddpm__wire__work_assignment__get_packed_size(&m);
    *buf = xmalloc(size ? size : 1);
    *len = ddpm__wire__work_assignment__pack(&m, *buf);
    free(ts);
    return 0;
}

int wire_work_unpack(const uint8_t *buf, size_t len, int max_items, int T, uint64_t dataset_size,
                     wire_work *out) {
    if (!out) return err_set("wire_work_unpack: NULL argument");
    memset(out, 0, sizeof *out);
    if (!buf && len) return err_set("wire_work_unpack: NULL buffer");
    static const uint8_t empty[1];
    Ddpm__Wire__WorkAssignment *m = ddpm__wire__work_assignment__unpack(NULL, len, buf ? buf : empty);
    if (!m) return err_set("WorkAssignment: %zu bytes are not a valid protobuf message", len);

    int rc = -1;
    size_t n = m->n_sample_ids;
    if (max_items < 0 || n > (size_t)max_items) {
        err_set("WorkAssignment.sample_ids: %zu items, at most %d allowed", n, max_items);
        goto done;
    }
    if (m->n_indices != n) {
        err_set("WorkAssignment.indices: %zu entries, expected %zu (one per sample_id)", m->n_indices, n);
        goto done;
    }
    if (m->n_timesteps != n) {
        err_set("WorkAssignment.timesteps: %zu entries, expected %zu (one per sample_id)", m->n_timesteps, n);
        goto done;
    }
    if (m->flips.len != n) {
        err_set("WorkAssignment.flips: %zu bytes, expected %zu (one per sample_id)", m->flips.len, n);
        goto done;
    }
    if (!m->stop && (m->total_batch < 1 || n > m->total_batch)) {
        err_set("WorkAssignment.total_batch: %u, must be >= 1 and >= the %zu items", m->total_batch, n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (T < 1 || m->timesteps[i] >= (uint32_t)T) {
            err_set("WorkAssignment.timesteps[%zu]: %u, must be < T = %d", i, m->timesteps[i], T);
            goto done;
        }
        if (m->indices[i] >= dataset_size) {
            err_set("WorkAssignment.indices[%zu]: %u, must be < dataset size %llu", i, m->indices[i],
                    (unsigned long long)dataset_size);
            goto done;
        }
        if (m->flips.data[i] > 1) {
            err_set("WorkAssignment.flips[%zu]: %u, must be 0 or 1", i, m->flips.data[i]);
            goto done;
        }
    }
    out->step = m->step;
    out->seed = m->seed;
    out->total_batch = m->total_batch;
    out->stop = m->stop ? 1 : 0;
    out->n = (int)n;
    if (n) {
        out->sample_ids = xmalloc(n * sizeof *out->sample_ids);
        out->indices = xmalloc(n * sizeof *out->indices);
        out->t = xmalloc(n * sizeof *out->t);
        out->flip = xmalloc(n);
        memcpy(out->sample_ids, m->sample_ids, n * sizeof *out->sample_ids);
        memcpy(out->indices, m->indices, n * sizeof *out->indices);
        for (size_t i = 0; i < n; i++) out->t[i] = (int)m->timesteps[i];
        memcpy(out->flip, m->flips.data, n);
    }
    rc = 0;
done:
    ddpm__wire__work_assignment__free_unpacked(m, NULL);
    return rc;
}

void wire_work_free(wire_work *w) {
    if (!w) return;
    free(w->sample_ids);
    free(w->indices);
    free(w->t);
    free(w->flip);
    memset(w, 0, sizeof *w);
}

/* ---------------------------------------------------------------- GradientPush */

/* Sum of q_count must equal n_samples (each sample falls in one quartile). */
static int stats_consistent(const uint64_t q_count[4], uint64_t n_samples) {
    uint64_t s = 0;
    for (int q = 0; q < 4; q++) {
        if (q_count[q] > n_samples - s) return 0; /* also catches wrap-around */
        s += q_count[q];
    }
    return s == n_samples;
}

int wire_push_pack(const wire_push *p, uint8_t **buf, size_t *len) {
    if (!p || !buf || !len) return err_set("wire_push_pack: NULL argument");
    *buf = NULL;
    *len = 0;
    if (!codec_known((int)p->codec)) return err_set("wire_push_pack: unknown codec %d", (int)p->codec);
    if (p->data_len && !p->data) return err_set("wire_push_pack: data is NULL with data_len %zu", p->data_len);
    if (p->count > UINT64_MAX / 4 || p->raw_bytes != p->count * 4)
        return err_set("wire_push_pack: raw_bytes %llu, expected count * 4 = %llu * 4",
                       (unsigned long long)p->raw_bytes, (unsigned long long)p->count);
    if (p->has_stats && !stats_consistent(p->q_count, p->n_samples))
        return err_set("wire_push_pack: q_count does not sum to n_samples %llu",
                       (unsigned long long)p->n_samples);

    Ddpm__Wire__GradientPush m = DDPM__WIRE__GRADIENT_PUSH__INIT;
    m.step = p->step;
    m.worker = p->worker;
    m.chunk = p->chunk;
    m.offset = p->offset;
    m.count = p->count;
    m.codec = (Ddpm__Wire__Codec)p->codec;
    m.data.len = p->data_len;
    m.data.data = (uint8_t *)p->data; /* pack only reads it */
    m.raw_bytes = p->raw_bytes;
    double q_sum[4];
    uint64_t q_count[4];
    if (p->has_stats) {
        m.has_stats = 1;
        m.loss_sum = p->loss_sum;
        m.mse_sum = p->mse_sum;
        m.vb_sum = p->vb_sum;
        memcpy(q_sum, p->q_sum, sizeof q_sum);
        memcpy(q_count, p->q_count, sizeof q_count);
        m.n_q_sum = 4;
        m.q_sum = q_sum;
        m.n_q_count = 4;
        m.q_count = q_count;
        m.n_samples = p->n_samples;
    }
    m.bytes_raw_total = p->bytes_raw_total;
    m.bytes_sent_total = p->bytes_sent_total;
    size_t size = ddpm__wire__gradient_push__get_packed_size(&m);
    *buf = xmalloc(size ? size : 1);
    *len = ddpm__wire__gradient_push__pack(&m, *buf);
    return 0;
}

int wire_push_unpack(const uint8_t *buf, size_t len, uint64_t expect_step, int n_chunks,
                     const uint64_t *chunk_offsets, const uint64_t *chunk_counts, wire_push *out) {
    if (!out) return err_set("wire_push_unpack: NULL argument");
    memset(out, 0, sizeof *out);
    if ((!buf && len) || (n_chunks > 0 && (!chunk_offsets || !chunk_counts)))
        return err_set("wire_push_unpack: NULL argument");
    static const uint8_t empty[1];
    Ddpm__Wire__GradientPush *m = ddpm__wire__gradient_push__unpack(NULL, len, buf ? buf : empty);
    if (!m) return err_set("GradientPush: %zu bytes are not a valid protobuf message", len);

    if (m->step != expect_step) {
        err_set("GradientPush.step: %llu, expected %llu (worker %u)", (unsigned long long)m->step,
                (unsigned long long)expect_step, m->worker);
        goto fail;
    }
    if (n_chunks < 0 || m->chunk >= (uint32_t)n_chunks) {
        err_set("GradientPush.chunk: %u, must be < %d chunks (worker %u)", m->chunk, n_chunks, m->worker);
        goto fail;
    }
    if (m->offset != chunk_offsets[m->chunk]) {
        err_set("GradientPush.offset: %llu, chunk %u starts at %llu (worker %u)",
                (unsigned long long)m->offset, m->chunk, (unsigned long long)chunk_offsets[m->chunk],
                m->worker);
        goto fail;
    }
    if (m->count != chunk_counts[m->chunk]) {
        err_set("GradientPush.count: %llu, chunk %u holds %llu values (worker %u)",
                (unsigned long long)m->count, m->chunk, (unsigned long long)chunk_counts[m->chunk],
                m->worker);
        goto fail;
    }
    if (!codec_known((int)m->codec)) {
        err_set("GradientPush.codec: unknown value %d (worker %u)", (int)m->codec, m->worker);
        goto fail;
    }
    if (m->count > UINT64_MAX / 4 || m->raw_bytes != m->count * 4) {
        err_set("GradientPush.raw_bytes: %llu, expected count * 4 = %llu (worker %u)",
                (unsigned long long)m->raw_bytes, (unsigned long long)(m->count * 4), m->worker);
        goto fail;
    }
    if (m->codec == DDPM__WIRE__CODEC__CODEC_FP32 && m->data.len != m->count * 4) {
        err_set("GradientPush.data: %zu bytes of fp32, expected %llu (worker %u)", m->data.len,
                (unsigned long long)(m->count * 4), m->worker);
        goto fail;
    }
    size_t want = m->has_stats ? 4 : 0;
    if (m->n_q_sum != want || m->n_q_count != want) {
        err_set("GradientPush.q_sum/q_count: %zu and %zu entries, expected %zu (has_stats %d, worker %u)",
                m->n_q_sum, m->n_q_count, want, (int)m->has_stats, m->worker);
        goto fail;
    }
    if (m->has_stats && !stats_consistent(m->q_count, m->n_samples)) {
        err_set("GradientPush.q_count: does not sum to n_samples %llu (worker %u)",
                (unsigned long long)m->n_samples, m->worker);
        goto fail;
    }

    out->step = m->step;
    out->worker = m->worker;
    out->chunk = m->chunk;
    out->offset = m->offset;
    out->count = m->count;
    out->codec = (wire_codec)m->codec;
    out->data = m->data.data;
    out->data_len = m->data.len;
    out->raw_bytes = m->raw_bytes;
    out->has_stats = m->has_stats ? 1 : 0;
    if (m->has_stats) {
        out->loss_sum = m->loss_sum;
        out->mse_sum = m->mse_sum;
        out->vb_sum = m->vb_sum;
        memcpy(out->q_sum, m->q_sum, sizeof out->q_sum);
        memcpy(out->q_count, m->q_count, sizeof out->q_count);
        out->n_samples = m->n_samples;
    }
    out->bytes_raw_total = m->bytes_raw_total;
    out->bytes_sent_total = m->bytes_sent_total;
    out->msg_ = m;
    return 0;
fail:
    ddpm__wire__gradient_push__free_unpacked(m, NULL);
    return -1;
}

void wire_push_free(wire_push *p) {
    if (!p) return;
    if (p->msg_) ddpm__wire__gradient_push__free_unpacked(p->msg_, NULL);
    memset(p, 0, sizeof *p);
}
