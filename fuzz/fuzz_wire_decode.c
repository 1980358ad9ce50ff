/* libFuzzer target for the codecs. Input: byte 0 = mode and codec, bytes 1-2 = n
 * (little endian, mod FUZZ_MAX_N + 1), the rest = payload.
 *   decode mode (bit 7 clear): wire_decode_add(codec = byte0 & 3, payload, n); codec 3
 *     is unknown and must be refused. Accepted payloads add only finite values, and
 *     on refusal acc is unchanged.
 *   encode mode (bit 7 set): the payload's floats (len / 4 of them) are encoded with
 *     codec (byte0 % 3) at level 1 + byte1 % 3, then decoded: fp32 codecs bit-exact,
 *     bf16 equal to the saturating RNE rounding with residual == g - sent exactly.
 *     Non-finite input must be refused. */
#include <math.h>

#include "fuzz/fuzz_wire.h"

static wire_ctx *fuzz_dec_ctx;
static float fuzz_dec_acc[FUZZ_MAX_N], fuzz_dec_g[FUZZ_MAX_N], fuzz_dec_res[FUZZ_MAX_N];

static uint32_t fuzz_dec_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static int fuzz_decode_check(const uint8_t *data, size_t size) {
    if (!fuzz_dec_ctx && !(fuzz_dec_ctx = wire_ctx_create())) FUZZ_FAIL("decode: no context");
    if (size < 3) return 0;
    const uint8_t *in = data + 3;
    size_t len = size - 3;

    if (!(data[0] & 0x80)) {
        wire_codec codec = (wire_codec)(data[0] & 3);
        size_t n = (size_t)(data[1] | data[2] << 8) % (FUZZ_MAX_N + 1);
        for (size_t i = 0; i < n; i++) fuzz_dec_acc[i] = 1.0f;
        fuzz_err_clear();
        if (wire_decode_add(fuzz_dec_ctx, codec, in, len, fuzz_dec_acc, n) != 0) {
            if (fuzz_err_empty()) FUZZ_FAIL("decode: refused without a message");
            for (size_t i = 0; i < n; i++)
                if (fuzz_dec_acc[i] != 1.0f) FUZZ_FAIL("decode: refused but acc[%zu] changed", i);
            return 0;
        }
        if ((int)codec == 3) FUZZ_FAIL("decode: unknown codec accepted");
        for (size_t i = 0; i < n; i++)
            if (!isfinite(fuzz_dec_acc[i])) FUZZ_FAIL("decode: non-finite value at %zu", i);
        return 1;
    }

    wire_codec codec = (wire_codec)((data[0] & 0x7F) % 3);
    int level = 1 + data[1] % 3;
    size_t n = len / 4;
    if (n > FUZZ_MAX_N) n = FUZZ_MAX_N;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        memcpy(&fuzz_dec_g[i], in + 4 * i, 4);
        fuzz_dec_res[i] = 0.0f;
        fuzz_dec_acc[i] = -0.0f; /* -0 + x == x bit for bit */
        if (!isfinite(fuzz_dec_g[i])) finite = 0;
    }
    const uint8_t *out;
    size_t olen;
    fuzz_err_clear();
    if (wire_encode(fuzz_dec_ctx, codec, level, fuzz_dec_g, fuzz_dec_res, n, &out, &olen) != 0) {
        if (finite) FUZZ_FAIL("encode: finite input refused: %s", err_msg());
        if (fuzz_err_empty()) FUZZ_FAIL("encode: refused without a message");
        return 0;
    }
    if (!finite) FUZZ_FAIL("encode: non-finite input accepted");
    if (wire_decode_add(fuzz_dec_ctx, codec, out, olen, fuzz_dec_acc, n) != 0)
        FUZZ_FAIL("encode: own output refused: %s", err_msg());
    for (size_t i = 0; i < n; i++) {
        if (codec == CODEC_BF16_ZSTD) {
            /* v = g + residual with residual 0 (which turns -0 into +0, as IEEE says) */
            float v = fuzz_dec_g[i] + 0.0f;
            float sent = wire_bf16_to_float(wire_bf16_round_sat(v));
            if (fuzz_dec_bits(fuzz_dec_acc[i]) != fuzz_dec_bits(sent)) FUZZ_FAIL("bf16: value %zu differs", i);
            if ((double)fuzz_dec_res[i] != (double)v - (double)sent)
                FUZZ_FAIL("bf16: residual %zu is not g - sent", i);
        } else if (fuzz_dec_bits(fuzz_dec_acc[i]) != fuzz_dec_bits(fuzz_dec_g[i])) {
            FUZZ_FAIL("%s: value %zu differs", wire_codec_name(codec), i);
        }
    }
    return 1;
}

#ifndef WIRE_FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_decode_check(data, size);
    return 0;
}
#endif
