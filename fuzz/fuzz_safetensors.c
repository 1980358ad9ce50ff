/* Decoder target: safetensors files through st_open and st_read_f32, as ddpm-import
 * and ddpm-train --init-from read them. An accepted file's tensors must tile its
 * data area (sizes = product(shape) x dtype size, contiguous from 0 to the end),
 * every F32/F16/BF16 tensor must read and every other dtype be refused with a
 * message; a file written back by st_write_f32 from what was read (metadata and
 * the float tensors) must read back equal. A refusal must say why and name the
 * file. */
#include <string.h>

#include "common/io/safetensors.h"
#include "fuzz/fuzz.h"

static void check_tiling(const st_file *sf) {
    uint64_t total = 0;
    for (int i = 0; i < sf->n_tensors; i++) {
        const st_tensor *t = &sf->tensors[i];
        uint64_t count = 1;
        for (int d = 0; d < t->ndim; d++) count *= t->shape[d];
        if (count != t->count || t->end - t->begin != count * (uint64_t)st_dtype_size(t->dtype) ||
            t->end > sf->data_size)
            FUZZ_FAIL("safetensors: tensor '%s' accepted with inconsistent sizes", t->name);
        total += t->end - t->begin;
    }
    if (total != sf->data_size) FUZZ_FAIL("safetensors: tensors do not tile the data area");
}

/* Writes the float tensors back and reads them again. */
static void check_round_trip(const st_file *sf, float **vals, int n) {
    st_out_tensor *out = xcalloc((size_t)n + 1, sizeof *out);
    int (*shapes)[ST_MAX_NDIM] = xcalloc((size_t)n + 1, sizeof *shapes);
    int k = 0;
    for (int i = 0; i < sf->n_tensors; i++) {
        const st_tensor *t = &sf->tensors[i];
        int fits = vals[i] != NULL;
        for (int d = 0; d < t->ndim && fits; d++) fits = t->shape[d] <= 1u << 30;
        if (!fits) continue;
        for (int d = 0; d < t->ndim; d++) shapes[k][d] = (int)t->shape[d];
        out[k++] = (st_out_tensor){t->name, t->ndim, shapes[k - 1], vals[i]};
    }
    const char *path = fuzz_tmp_path("rt.safetensors");
    st_file back;
    if (st_write_f32(path, sf->meta, sf->n_meta, out, k) != 0 || st_open(&back, path) != 0)
        FUZZ_FAIL("safetensors: rewrite of an accepted file failed: %s", err_msg());
    if (back.n_tensors != k || back.n_meta != sf->n_meta)
        FUZZ_FAIL("safetensors: rewrite changed the tensor or metadata count");
    for (int i = 0; i < sf->n_meta; i++)
        if (strcmp(back.meta[i].key, sf->meta[i].key) || strcmp(back.meta[i].value, sf->meta[i].value))
            FUZZ_FAIL("safetensors: metadata '%s' changed in a rewrite", sf->meta[i].key);
    for (int i = 0; i < k; i++) {
        size_t c = (size_t)back.tensors[i].count;
        float *v = xfloats(c + 1);
        if (strcmp(back.tensors[i].name, out[i].name) || st_read_f32(&back, i, v) != 0 ||
            memcmp(v, out[i].data, c * sizeof *v) != 0)
            FUZZ_FAIL("safetensors: tensor '%s' changed in a rewrite", out[i].name);
        free(v);
    }
    st_close(&back);
    free(out);
    free(shapes);
}

int fuzz_check(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, "safetensors");
    st_file sf;
    fuzz_err_clear();
    if (st_open(&sf, path) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("safetensors: refused without a message");
        if (!strstr(err_msg(), path)) FUZZ_FAIL("safetensors: message does not name the file: %s", err_msg());
        return 0;
    }
    check_tiling(&sf);
    float **vals = xcalloc((size_t)sf.n_tensors + 1, sizeof *vals);
    for (int i = 0; i < sf.n_tensors; i++) {
        const st_tensor *t = &sf.tensors[i];
        int is_float = t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16;
        /* every element holds at least one byte of the file */
        if (t->count > size) FUZZ_FAIL("safetensors: %llu elements from %zu bytes",
                                                   (unsigned long long)t->count, size);
        vals[i] = xfloats((size_t)t->count + 1);
        fuzz_err_clear();
        int rc = st_read_f32(&sf, i, vals[i]);
        if (is_float && rc != 0) FUZZ_FAIL("safetensors: tensor '%s' unreadable: %s", t->name, err_msg());
        if (!is_float && (rc == 0 || fuzz_err_empty() || !strstr(err_msg(), t->name)))
            FUZZ_FAIL("safetensors: a %s tensor was not refused by name", st_dtype_name(t->dtype));
        if (!is_float) {
            free(vals[i]);
            vals[i] = NULL;
        }
    }
    check_round_trip(&sf, vals, sf.n_tensors);
    for (int i = 0; i < sf.n_tensors; i++) free(vals[i]);
    free(vals);
    st_close(&sf);
    return 1;
}
