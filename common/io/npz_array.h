/* Reading arrays out of NumPy .npz files (np.savez and np.savez_compressed: stored
 * or deflated entries, Zip64 included) and writing float64 arrays into a new .npz.
 *
 * The reader streams one entry: the evaluation tools read 50k images in batches
 * without holding the whole archive. Supported .npy dtypes: uint8 ('|u1'),
 * float32 ('<f4'), float64 ('<f8'), C order. Errors name the file and the entry.
 *
 * Hostile input: every size is checked against the file before use (entry inside
 * the file, stored sizes equal, deflate at most 1032:1, shape product x item size
 * overflow-checked and equal to the entry's bytes after its header; a deflate stream
 * must end exactly there). So an opened array's bytes are in the file, and callers
 * may size buffers from its shape after applying their own limits. Only regular
 * files are opened. */
#ifndef DDPM_NPZ_ARRAY_H
#define DDPM_NPZ_ARRAY_H

#include <stddef.h>
#include <stdint.h>

#define NPZ_ARRAY_MAX_DIMS 8

typedef enum { NPZ_DTYPE_U8 = 1, NPZ_DTYPE_F32 = 4, NPZ_DTYPE_F64 = 8 } npz_dtype;

typedef struct npz_reader npz_reader; /* opaque; owns its FILE and buffers */

/* Opens entry KEY.npy of the archive at path (both borrowed). On success *out is
 * the caller's (npz_reader_close). Returns 0, or -1 with err_msg() naming the path
 * and key (missing entry, not a zip, unsupported dtype or compression, ...). */
int npz_reader_open(npz_reader **out, const char *path, const char *key);
npz_dtype npz_reader_dtype(const npz_reader *r);
int npz_reader_ndim(const npz_reader *r);
/* shape[0..ndim-1]; the pointer stays valid until close. */
const int64_t *npz_reader_shape(const npz_reader *r);
/* Elements in the array (product of the shape). */
uint64_t npz_reader_count(const npz_reader *r);
/* Reads the next `count` elements (in C order) into buf (caller's, count * dtype
 * bytes). Returns 0, or -1 (err_msg) when the entry is shorter, corrupt or the
 * CRC of a completely read entry does not match. */
int npz_reader_read(npz_reader *r, void *buf, uint64_t count);
void npz_reader_close(npz_reader *r);

/* 1 if the archive holds entry KEY.npy, 0 if not, -1 (err_msg) if it is not a
 * readable zip archive. */
int npz_has_key(const char *path, const char *key);

/* One float64 array to write; data borrowed. */
typedef struct {
    const char *key;
    const double *data;
    int ndim;
    int64_t shape[NPZ_ARRAY_MAX_DIMS];
} npz_f64_array;

/* Writes n arrays as stored entries KEY.npy of a new .npz at path (np.load reads
 * them as float64 arrays). Written to a temporary file, then renamed. Each array
 * must be under 4 GiB. Returns 0 or -1 (err_msg names the path). */
int npz_write_f64(const char *path, const npz_f64_array *arrays, int n);

#endif
