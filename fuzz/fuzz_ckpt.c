/* Decoder target: checkpoint files, read as ddpm-sample and ddpm-eval read them:
 * the header alone first (ckpt_read_header, then the config text it carries
 * through config_load_string), then the whole file verified with the weights of
 * one section copied out (ckpt_read), and ckpt_verify, which pruning uses.
 *
 * An accepted checkpoint must be self-consistent: a supported format version,
 * n_params within its limit, section flags known, every tensor inside the flat
 * buffer with a shape that multiplies to its size, and the header read alone
 * equal to the header read with the data. A refusal must name the file. The
 * reader and ckpt_verify must agree. Seeds: tests/tools/ckpt_fuzz_seeds.c. */
#include <string.h>

#include "common/ckpt/checkpoint.h"
#include "common/config/config.h"
#include "fuzz/fuzz.h"

/* Buffers up to this many floats (16 MiB) are given to the reader; a larger
 * valid n_params is only verified (want 0), which allocates nothing that size. */
#define FUZZ_MAX_FLOATS ((uint64_t)1 << 22)
#define FUZZ_VERIFY_FLOATS ((uint64_t)1 << 16)

static void refused(const char *what, const char *path) {
    if (fuzz_err_empty()) FUZZ_FAIL("ckpt: %s refused without a message", what);
    if (!strstr(err_msg(), path)) FUZZ_FAIL("ckpt: %s refusal does not name the file: %s", what, err_msg());
}

static void check_header(const ckpt_header *h) {
    if (h->format_version < 1 || h->format_version > CKPT_FORMAT_VERSION)
        FUZZ_FAIL("ckpt: accepted format version %u", h->format_version);
    if (h->n_params < 1 || h->n_params > CKPT_MAX_PARAMS) FUZZ_FAIL("ckpt: accepted n_params %llu",
                                                                     (unsigned long long)h->n_params);
    if (h->sections & ~CKPT_ALL) FUZZ_FAIL("ckpt: accepted section flags 0x%x", h->sections);
    if (!h->config_yaml || !h->rng_algorithm) FUZZ_FAIL("ckpt: accepted header with NULL strings");
    if (h->n_tensors < 0 || (h->n_tensors > 0 && !h->tensors)) FUZZ_FAIL("ckpt: bad tensor table");
    for (int i = 0; i < h->n_tensors; i++) {
        const ckpt_tensor *t = &h->tensors[i];
        if (!t->name || t->ndim < 0 || t->ndim > CKPT_MAX_NDIM) FUZZ_FAIL("ckpt: tensor #%d malformed", i);
        if (t->offset > h->n_params || t->size > h->n_params - t->offset)
            FUZZ_FAIL("ckpt: tensor #%d outside the buffer", i);
        if (t->ndim > 0) {
            uint64_t p = 1;
            for (int d = 0; d < t->ndim; d++) {
                if (t->shape[d] < 0 || (uint64_t)t->shape[d] > h->n_params) FUZZ_FAIL("ckpt: tensor #%d dim", i);
                p *= (uint64_t)t->shape[d];
                if (p > h->n_params) FUZZ_FAIL("ckpt: tensor #%d shape too large", i);
            }
            if (p != t->size) FUZZ_FAIL("ckpt: tensor #%d shape product %llu != size", i, (unsigned long long)p);
        }
    }
}

static void same_header(const ckpt_header *a, const ckpt_header *b) {
    if (a->step != b->step || a->n_params != b->n_params || a->sections != b->sections ||
        a->n_tensors != b->n_tensors || strcmp(a->config_yaml, b->config_yaml) != 0)
        FUZZ_FAIL("ckpt: the header read alone differs from the one read with the data");
    for (int i = 0; i < a->n_tensors; i++)
        if (strcmp(a->tensors[i].name, b->tensors[i].name) || a->tensors[i].offset != b->tensors[i].offset ||
            a->tensors[i].size != b->tensors[i].size)
            FUZZ_FAIL("ckpt: tensor #%d differs between header and full read", i);
}

int fuzz_check(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, "ddpm");
    ckpt_header h0, h;
    fuzz_err_clear();
    int head_ok = ckpt_read_header(path, &h0) == 0;
    if (!head_ok) {
        refused("header", path);
        if (h0.n_params || h0.tensors || h0.config_yaml) FUZZ_FAIL("ckpt: refused header not zeroed");
    } else {
        check_header(&h0);
        config cfg; /* as ddpm-sample: the model comes from the header's config text */
        fuzz_err_clear();
        if (config_load_string(&cfg, h0.config_yaml, strlen(h0.config_yaml), path) != 0 && fuzz_err_empty())
            FUZZ_FAIL("ckpt: the header's config text refused without a message");
    }
    /* ddpm-sample's read: the EMA weights (or the parameters) into a buffer */
    int want = !head_ok ? CKPT_EMA : (h0.sections & CKPT_EMA) ? CKPT_EMA : (h0.sections & CKPT_PARAMS) ? CKPT_PARAMS : 0;
    uint64_t n = head_ok ? h0.n_params : 1;
    float *buf = NULL;
    if (n > FUZZ_MAX_FLOATS) want = 0;
    if (want) buf = xfloats((size_t)n);
    fuzz_err_clear();
    int ok = ckpt_read(path, &h, head_ok ? n : 0, want, want == CKPT_PARAMS ? buf : NULL,
                       want == CKPT_EMA ? buf : NULL, NULL, NULL) == 0;
    if (ok) {
        if (!head_ok) FUZZ_FAIL("ckpt: full read accepted a file whose header read refused");
        check_header(&h);
        same_header(&h0, &h);
        if (want && !(h.sections & want)) FUZZ_FAIL("ckpt: wanted section missing but accepted");
        ckpt_header_free(&h);
    } else {
        refused("full read", path);
        if (h.n_params || h.tensors) FUZZ_FAIL("ckpt: refused read left a header");
    }
    free(buf);
    /* pruning's notion of "verifies" is the same reader: all sections, nothing
     * kept (a third read; skipped for large files, to keep the fuzzer fast) */
    if (head_ok && n > FUZZ_VERIFY_FLOATS) {
        ckpt_header_free(&h0);
        return ok;
    }
    ckpt_known k = {0};
    fuzz_err_clear();
    int v = ckpt_verify(path, &k);
    if (!v) refused("verify", path);
    if (v != ok) FUZZ_FAIL("ckpt: ckpt_verify says %d, ckpt_read %d", v, ok);
    if (ckpt_verify(path, &k) != v) FUZZ_FAIL("ckpt: the cached answer differs");
    ckpt_known_free(&k);
    if (head_ok) ckpt_header_free(&h0);
    return ok;
}
