/* Per-image preprocessing (decode, grey, center_crop_arr, HWC -> CHW) and the
 * guided-diffusion folder order. */
#include "common/data/preprocess.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/core/util.h"
#include "common/data/resample.h"
#include "common/io/image_io.h"

#define FOLDER_MAX_DEPTH 64

static int preprocess_rgb(uint8_t *rgb, int w, int h, const char *name, int size, int channels,
                          uint8_t *chw) {
    if (channels != 1 && channels != 3) return err_set("%s: images give 1 or 3 channels, not %d", name, channels);
    uint8_t *src = rgb, *grey = NULL;
    if (channels == 1) { /* grey before resizing: Image.open(f).convert("RGB").convert("L") */
        grey = xmalloc((size_t)w * h);
        rgb_to_grey_u8(rgb, grey, (size_t)w * h);
        src = grey;
    }
    size_t plane = (size_t)size * size;
    uint8_t *hwc = xmalloc(plane * channels);
    int rc = center_crop_u8(src, w, h, channels, size, hwc);
    if (rc == 0) {
        for (size_t p = 0; p < plane; p++)
            for (int c = 0; c < channels; c++) chw[(size_t)c * plane + p] = hwc[p * channels + c];
    } else {
        err_prefix("%s: ", name);
    }
    free(hwc);
    free(grey);
    return rc;
}

int image_preprocess(const uint8_t *data, size_t len, const char *name, int size, int channels,
                     uint8_t *chw) {
    uint8_t *rgb;
    int w, h;
    if (image_decode_rgb(data, len, name, &rgb, &w, &h) != 0) return -1;
    int rc = preprocess_rgb(rgb, w, h, name, size, channels, chw);
    free(rgb);
    return rc;
}

int image_preprocess_file(const char *path, int size, int channels, uint8_t *chw) {
    uint8_t *rgb;
    int w, h;
    if (image_load_rgb(path, &rgb, &w, &h) != 0) return -1;
    int rc = preprocess_rgb(rgb, w, h, path, size, channels, chw);
    free(rgb);
    return rc;
}

typedef struct {
    char **paths;
    size_t n, cap;
} path_list;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    return !strcasecmp(dot + 1, "png") || !strcasecmp(dot + 1, "jpg") || !strcasecmp(dot + 1, "jpeg");
}

static int list_images(const char *dir, int depth, path_list *out) {
    if (depth > FOLDER_MAX_DEPTH) return err_set("%s: folders nested deeper than %d (symlink loop?)", dir, FOLDER_MAX_DEPTH);
    DIR *d = opendir(dir);
    if (!d) return err_set("%s: cannot open folder: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (n == cap) names = xrealloc(names, sizeof(char *) * (cap = cap ? 2 * cap : 64));
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(names, n, sizeof(char *), cmp_str);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0) {
            size_t len = strlen(dir) + strlen(names[i]) + 2;
            char *full = xmalloc(len);
            snprintf(full, len, "%s/%s", dir, names[i]);
            struct stat st;
            if (stat(full, &st) != 0) {
                rc = err_set("%s: cannot stat: %s", full, strerror(errno));
                free(full);
            } else if (S_ISDIR(st.st_mode)) {
                rc = list_images(full, depth + 1, out);
                free(full);
            } else if (S_ISREG(st.st_mode) && has_image_ext(names[i])) {
                if (out->n == out->cap) out->paths = xrealloc(out->paths, sizeof(char *) * (out->cap = out->cap ? 2 * out->cap : 256));
                out->paths[out->n++] = full;
            } else {
                free(full);
            }
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int image_folder_list(const char *dir, char ***paths, size_t *n) {
    *paths = NULL;
    *n = 0;
    struct stat st;
    if (stat(dir, &st) != 0) return err_set("%s: cannot open image folder: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return err_set("%s: not a folder", dir);
    path_list list = {0};
    if (list_images(dir, 0, &list) != 0) {
        image_folder_list_free(list.paths, list.n);
        return -1;
    }
    *paths = list.paths;
    *n = list.n;
    return 0;
}

void image_folder_list_free(char **paths, size_t n) {
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

/* The class name of a path: its base name up to the first '_'. */
static char *class_name_of(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strcspn(base, "_");
    char *name = xmalloc(len + 1);
    memcpy(name, base, len);
    name[len] = '\0';
    return name;
}

int image_folder_classes(char *const *paths, size_t n, int32_t **labels, char ***names,
                         size_t **first, size_t *n_names) {
    *labels = NULL;
    *names = NULL;
    *first = NULL;
    *n_names = 0;
    if (n > INT32_MAX) return err_set("image folder: %zu images is too many for class labels", n);
    char **all = xcalloc(n ? n : 1, sizeof *all), **sorted = xcalloc(n ? n : 1, sizeof *sorted);
    for (size_t i = 0; i < n; i++) sorted[i] = all[i] = class_name_of(paths[i]);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(sorted[k - 1], sorted[i]) != 0) sorted[k++] = sorted[i];
    char **out = xcalloc(k ? k : 1, sizeof *out);
    size_t *fst = xcalloc(k ? k : 1, sizeof *fst);
    int32_t *lab = xcalloc(n ? n : 1, sizeof *lab);
    for (size_t c = 0; c < k; c++) fst[c] = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        char **hit = bsearch(&all[i], sorted, k, sizeof *sorted, cmp_str);
        size_t c = (size_t)(hit - sorted);
        lab[i] = (int32_t)c;
        if (fst[c] == SIZE_MAX) {
            fst[c] = i;
            out[c] = xstrdup(all[i]);
        }
    }
    for (size_t i = 0; i < n; i++) free(all[i]);
    free(all);
    free(sorted);
    *labels = lab;
    *names = out;
    *first = fst;
    *n_names = k;
    return 0;
}

void image_folder_classes_free(int32_t *labels, char **names, size_t *first, size_t n_names) {
    for (size_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    free(first);
    free(labels);
}
