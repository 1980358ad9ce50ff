/* A tiny named-tensor file for exchanging tensors with reference scripts
 * (tests/ref/ scripts read it with numpy) and for debugging dumps.
 * Layout (little endian): "DDPMTNS1", then records of
 *   u32 name_len, name bytes, u32 ndim, u64 dims[ndim], float32 data[prod(dims)]. */
#ifndef DDPM_TENSOR_FILE_H
#define DDPM_TENSOR_FILE_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    char path[1024];
} tensor_file;

int tensor_file_create(tensor_file *tf, const char *path);
/* data is borrowed; dims has ndim entries. */
int tensor_file_add(tensor_file *tf, const char *name, int ndim, const int64_t *dims,
                    const float *data);
int tensor_file_close(tensor_file *tf);

/* Reads the tensor `name` of a file into a new buffer (caller frees); *n gets its
 * length. Returns NULL with err_msg() if missing or malformed. */
float *tensor_file_read(const char *path, const char *name, size_t *n);

#endif
