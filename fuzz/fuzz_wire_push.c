/* libFuzzer target: wire_push_unpack on arbitrary bytes, then the payload of an
 * accepted push through wire_decode_add. An accepted push must match the chunk
 * table and survive pack -> unpack unchanged; accepted payloads add only finite
 * values. */
#include <math.h>

#include "fuzz/fuzz_wire.h"

static wire_ctx *fuzz_push_ctx;
static float fuzz_push_acc[2000];

static int fuzz_push_check(const uint8_t *data, size_t size) {
    if (!fuzz_push_ctx && !(fuzz_push_ctx = wire_ctx_create())) FUZZ_FAIL("push: no context");
    wire_push p, p2;
    fuzz_err_clear();
    if (wire_push_unpack(data, size, FUZZ_STEP, 3, fuzz_chunk_off, fuzz_chunk_cnt, &p) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("push: refused without a message");
        if (p.msg_ || p.data) FUZZ_FAIL("push: refused but not zeroed");
        return 0;
    }
    if (p.step != FUZZ_STEP || p.chunk >= 3 || p.offset != fuzz_chunk_off[p.chunk] ||
        p.count != fuzz_chunk_cnt[p.chunk] || p.raw_bytes != 4 * p.count || (int)p.codec < 0 || (int)p.codec > 2)
        FUZZ_FAIL("push: accepted fields break the rules");
    if (p.has_stats && p.q_count[0] + p.q_count[1] + p.q_count[2] + p.q_count[3] != p.n_samples)
        FUZZ_FAIL("push: accepted inconsistent stats");
    uint8_t *buf;
    size_t len;
    if (wire_push_pack(&p, &buf, &len) != 0) FUZZ_FAIL("push: accepted but cannot re-pack: %s", err_msg());
    if (wire_push_unpack(buf, len, FUZZ_STEP, 3, fuzz_chunk_off, fuzz_chunk_cnt, &p2) != 0)
        FUZZ_FAIL("push: re-packed message refused: %s", err_msg());
    int same = p2.worker == p.worker && p2.chunk == p.chunk && p2.codec == p.codec &&
               p2.data_len == p.data_len && (p.data_len == 0 || memcmp(p2.data, p.data, p.data_len) == 0) &&
               p2.has_stats == p.has_stats && p2.n_samples == p.n_samples &&
               p2.bytes_raw_total == p.bytes_raw_total && p2.bytes_sent_total == p.bytes_sent_total &&
               memcmp(p2.q_count, p.q_count, sizeof p.q_count) == 0 &&
               memcmp(&p2.loss_sum, &p.loss_sum, sizeof p.loss_sum) == 0 && /* bitwise: NaN allowed */
               memcmp(&p2.mse_sum, &p.mse_sum, sizeof p.mse_sum) == 0 &&
               memcmp(&p2.vb_sum, &p.vb_sum, sizeof p.vb_sum) == 0 &&
               memcmp(p2.q_sum, p.q_sum, sizeof p.q_sum) == 0;
    if (!same) FUZZ_FAIL("push: round trip differs");
    free(buf);
    wire_push_free(&p2);

    for (size_t i = 0; i < p.count; i++) fuzz_push_acc[i] = 0.0f;
    fuzz_err_clear();
    if (wire_decode_add(fuzz_push_ctx, p.codec, p.data, p.data_len, fuzz_push_acc, p.count) == 0) {
        for (size_t i = 0; i < p.count; i++)
            if (!isfinite(fuzz_push_acc[i])) FUZZ_FAIL("push: decoded a non-finite value at %zu", i);
    } else if (fuzz_err_empty()) {
        FUZZ_FAIL("push: payload refused without a message");
    }
    wire_push_free(&p);
    return 1;
}

#ifndef WIRE_FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_push_check(data, size);
    return 0;
}
#endif
