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

/* Reading. The whole file is indexed first: every record's name length, rank,
 * dimensions and data size are checked against the bytes left in the file and
 * against the stated limits below (overflow-checked) before anything is allocated
 * from them; a truncated or trailing partial record is an error naming the file
 * and the record's offset. Only regular files are opened. */
#define TENSOR_FILE_MAX_DIMS 8
#define TENSOR_FILE_MAX_NAME 4096
#define TENSOR_FILE_MAX_RECORDS 65536

typedef struct {
    char *name;
    int ndim;
    int64_t dims[TENSOR_FILE_MAX_DIMS];
    size_t count;    /* product of dims */
    uint64_t offset; /* of the float data in the file */
} tensor_file_entry;

typedef struct {
    FILE *f;
    char path[1024];
    tensor_file_entry *e;
    size_t n;
} tensor_file_reader;

/* Returns 0, or -1 with err_msg() (the reader is then closed). */
int tensor_reader_open(tensor_file_reader *r, const char *path);
/* The first record named `name`, or NULL. */
const tensor_file_entry *tensor_reader_find(const tensor_file_reader *r, const char *name);
/* Reads e's e->count floats into out (caller's). Returns 0 or -1 (err_msg). */
int tensor_reader_read(tensor_file_reader *r, const tensor_file_entry *e, float *out);
void tensor_reader_close(tensor_file_reader *r);

/* Reads the tensor `name` of a file into a new buffer (caller frees); *n gets its
 * length. Returns NULL with err_msg() if missing or malformed. */
float *tensor_file_read(const char *path, const char *name, size_t *n);

#endif
