/* safetensors files (the format of Hugging Face's safetensors library): an 8-byte
 * little-endian header length N, N bytes of JSON,
 *
 *   {"__metadata__": {"key": "value", ...},
 *    "NAME": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
 *
 * padded with spaces, then the raw little-endian tensor data; offsets are bytes
 * from the start of the data area. docs/export.md describes how ddpm-export and
 * ddpm-import use it.
 *
 * The reader is strict: the header length is checked against the file size and
 * ST_MAX_HEADER before anything is allocated; the JSON is parsed by a small parser
 * that takes only what the format needs (objects, strings with escapes, arrays of
 * non-negative integers) and refuses anything else (numbers with signs, fractions
 * or exponents, true/false/null, duplicate keys, unknown fields, invalid UTF-8);
 * each tensor's byte size must equal product(shape) x the dtype's size (overflow
 * checked), and the tensors must tile the data area exactly (sorted by offset:
 * contiguous from 0 to the file's end, no gaps, no overlaps), as the reference
 * implementation requires. Every error names the file, and the tensor where there
 * is one; the library never prints (common/core/util.h). */
#ifndef DDPM_SAFETENSORS_H
#define DDPM_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>

#define ST_MAX_HEADER ((uint64_t)100 << 20) /* header JSON bytes a reader accepts (100 MiB) */
#define ST_MAX_NDIM 8                       /* dimensions per tensor */
#define ST_MAX_NAME 4096                    /* bytes of a tensor name or metadata key */

/* Every dtype the format defines; a name outside this list is refused. */
typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_I16, ST_U16, ST_F16, ST_BF16,
    ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64, ST_NUM_DTYPES
} st_dtype;

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    uint64_t shape[ST_MAX_NDIM];
    uint64_t count;      /* product of shape (1 for a scalar) */
    uint64_t begin, end; /* bytes in the data area */
} st_tensor;

typedef struct {
    char *key, *value;
} st_meta;

/* An open file: its header parsed and checked, its data read on demand. */
typedef struct {
    char *path;               /* for messages */
    FILE *f;
    uint64_t file_size, data_start, data_size;
    int n_tensors;            /* in the header's order */
    st_tensor *tensors;
    int n_meta;               /* __metadata__, in the header's order */
    st_meta *meta;
} st_file;

/* Opens and validates path. 0, or -1 with err_msg() naming the file (and the
 * tensor); *sf is then empty (st_close is safe). */
int st_open(st_file *sf, const char *path);
void st_close(st_file *sf);
/* Index of the tensor `name`, or -1. */
int st_find(const st_file *sf, const char *name);
/* The metadata value of `key`, or NULL. */
const char *st_meta_get(const st_file *sf, const char *key);
/* Reads tensor i as count floats into dst: F32 as stored, F16 and BF16 converted
 * exactly (every value of both is a float32 value). Another dtype is refused
 * naming the tensor. 0 or -1. */
int st_read_f32(const st_file *sf, int i, float *dst);

const char *st_dtype_name(st_dtype d);
int st_dtype_size(st_dtype d);

/* One F32 tensor to write: shape[ndim] (ndim <= ST_MAX_NDIM), count floats. */
typedef struct {
    const char *name;
    int ndim;
    const int *shape;
    const float *data;
} st_out_tensor;

/* Writes path atomically (PATH.tmp, fsync, rename): the metadata in the given
 * order, then the tensors in the given order, their data contiguous in that order,
 * the header compact JSON padded with spaces to a multiple of 8 bytes (as the
 * reference writer does). The same inputs give the same bytes. 0 or -1. */
int st_write_f32(const char *path, const st_meta *meta, int n_meta, const st_out_tensor *t, int n);

#endif
