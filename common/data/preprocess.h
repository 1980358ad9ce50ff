/* guided-diffusion's per-image preprocessing and folder listing, shared by the
 * image-folder dataset (decoded at open) and ddpm-prep (decoded into shards).
 * See docs/data.md for the exact steps and how they match PIL. */
#ifndef DDPM_PREPROCESS_H
#define DDPM_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

/* Decode an encoded PNG, JPEG or WebP image (`data`, borrowed) as PIL's
 * Image.open(f).convert("RGB") (then convert("L") when channels == 1), apply
 * center_crop_arr to size x size and write it as uint8 CHW (channels*size*size
 * bytes) into caller-owned `chw`. `name` only labels error messages.
 * Returns 0, or -1 with err_msg() naming `name`. Thread-safe. */
int image_preprocess(const uint8_t *data, size_t len, const char *name, int size, int channels,
                     uint8_t *chw);

/* The same for a file. */
int image_preprocess_file(const char *path, int size, int channels, uint8_t *chw);

/* The .png/.jpg/.jpeg files under `dir` in guided-diffusion's order
 * (_list_image_files_recursively: each folder's entries sorted by name, sub-folders
 * expanded where they sort). On success *paths (n strings "dir/.../name") is owned by
 * the caller: image_folder_list_free. Returns 0 (possibly n == 0) or -1 (err_msg). */
int image_folder_list(const char *dir, char ***paths, size_t *n);
void image_folder_list_free(char **paths, size_t n);

/* guided-diffusion's class convention (image_datasets.py with class_cond): an image's
 * class name is its file name up to the first '_' (the whole name when it has none);
 * the classes are numbered in the sorted (byte) order of the distinct names. On
 * success *labels (n entries), *names (*n_names, in class order) and *first (for each
 * class the index of its first path) are the caller's (image_folder_classes_free). */
int image_folder_classes(char *const *paths, size_t n, int32_t **labels, char ***names,
                         size_t **first, size_t *n_names);
void image_folder_classes_free(int32_t *labels, char **names, size_t *first, size_t n_names);

#endif
