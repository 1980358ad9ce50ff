/* libFuzzer target: wire_work_unpack on arbitrary bytes. An accepted message must
 * satisfy every validation rule and survive pack -> unpack unchanged. */
#include "fuzz/fuzz_wire.h"

static int fuzz_work_check(const uint8_t *data, size_t size) {
    wire_work w, w2;
    fuzz_err_clear();
    if (wire_work_unpack(data, size, FUZZ_MAX_ITEMS, FUZZ_T, FUZZ_DATASET, &w) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("work: refused without a message");
        if (w.n != 0 || w.sample_ids || w.indices || w.t || w.flip) FUZZ_FAIL("work: refused but not zeroed");
        return 0;
    }
    if (w.n < 0 || w.n > FUZZ_MAX_ITEMS) FUZZ_FAIL("work: accepted n = %d", w.n);
    if (!w.stop && (w.total_batch < 1 || (uint32_t)w.n > w.total_batch))
        FUZZ_FAIL("work: accepted total_batch %u with n %d", w.total_batch, w.n);
    for (int i = 0; i < w.n; i++)
        if (w.t[i] < 0 || w.t[i] >= FUZZ_T || w.indices[i] >= FUZZ_DATASET || w.flip[i] > 1)
            FUZZ_FAIL("work: accepted item %d out of range", i);
    uint8_t *buf;
    size_t len;
    if (wire_work_pack(&w, &buf, &len) != 0) FUZZ_FAIL("work: accepted but cannot re-pack: %s", err_msg());
    if (wire_work_unpack(buf, len, FUZZ_MAX_ITEMS, FUZZ_T, FUZZ_DATASET, &w2) != 0)
        FUZZ_FAIL("work: re-packed message refused: %s", err_msg());
    int same = w2.step == w.step && w2.seed == w.seed && w2.total_batch == w.total_batch &&
               w2.stop == w.stop && w2.n == w.n;
    for (int i = 0; same && i < w.n; i++)
        same = w2.sample_ids[i] == w.sample_ids[i] && w2.indices[i] == w.indices[i] &&
               w2.t[i] == w.t[i] && w2.flip[i] == w.flip[i];
    if (!same) FUZZ_FAIL("work: round trip differs");
    free(buf);
    wire_work_free(&w);
    wire_work_free(&w2);
    return 1;
}

#ifndef WIRE_FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_work_check(data, size);
    return 0;
}
#endif
