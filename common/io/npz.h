/* NumPy .npz writer: a zip archive (entries stored, CRC-32 from zlib) holding one
 * KEY.npy array. np.load(path)[KEY] reads it back; guided-diffusion's evaluator reads
 * np.load(path)["arr_0"] as an (N, H, W, C) uint8 batch. Zip64 records are used when
 * the array reaches 4 GiB (e.g. 50k LSUN 256x256 samples). */
#ifndef DDPM_NPZ_H
#define DDPM_NPZ_H

#include <stdint.h>

#define NPZ_MAX_DIMS 8

/* Write `data` (borrowed, C order, uint8) of shape shape[0..ndim-1] as entry
 * "<key>.npy" of a new .npz at `path`. Written to a temporary file, flushed, then
 * renamed over `path`. Returns 0 or -1 (err_msg names the path). */
int npz_write_uint8(const char *path, const char *key, const uint8_t *data, const int *shape, int ndim);

/* As npz_write_uint8; force_zip64 != 0 writes Zip64 records even for small arrays
 * (lets tests exercise the large-file layout). */
int npz_write_uint8_ex(const char *path, const char *key, const uint8_t *data, const int *shape,
                       int ndim, int force_zip64);

#endif
