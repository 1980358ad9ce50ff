/* Folders of PNG/JPEG images, preprocessed as guided-diffusion's ImageDataset. */
#include "common/data/dataset_internal.h"

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

/* Same order as guided-diffusion's _list_image_files_recursively: the entries of
 * each folder sorted by name (byte order = Python's str order for UTF-8), images
 * listed in place and sub-folders expanded where they sort. */
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

/* Decode one file into CHW `out` (ds->image_bytes). */
static int load_one(const struct dataset *ds, const char *path, uint8_t *out) {
    uint8_t *rgb;
    int w, h;
    if (image_load_rgb(path, &rgb, &w, &h) != 0) return -1;
    int ch = ds->channels, size = ds->size;
    uint8_t *src = rgb;
    uint8_t *grey = NULL;
    if (ch == 1) { /* grey before resizing: Image.open(f).convert("RGB").convert("L") */
        grey = xmalloc((size_t)w * h);
        rgb_to_grey_u8(rgb, grey, (size_t)w * h);
        src = grey;
    }
    uint8_t *hwc = xmalloc(ds->image_bytes);
    int rc = center_crop_u8(src, w, h, ch, size, hwc);
    if (rc == 0) {
        size_t plane = (size_t)size * size;
        for (size_t p = 0; p < plane; p++)
            for (int c = 0; c < ch; c++) out[(size_t)c * plane + p] = hwc[p * ch + c];
    } else {
        err_prefix("%s: ", path);
    }
    free(hwc);
    free(grey);
    free(rgb);
    return rc;
}

int dataset_load_folder(struct dataset *ds) {
    if (ds->channels != 1 && ds->channels != 3)
        return err_set("%s: image folders give 1 or 3 channels, not %d", ds->path, ds->channels);
    struct stat st;
    if (stat(ds->path, &st) != 0) return err_set("%s: cannot open image folder: %s", ds->path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return err_set("%s: not a folder", ds->path);
    path_list list = {0};
    int rc = list_images(ds->path, 0, &list);
    if (rc == 0 && list.n == 0) rc = err_set("%s: no .png/.jpg/.jpeg images found (searched recursively)", ds->path);
    if (rc == 0) {
        ds->images = xmalloc(list.n * ds->image_bytes);
        size_t every = list.n / 10 > 1000 ? list.n / 10 : 1000;
        double t0 = now_seconds();
        for (size_t i = 0; i < list.n && rc == 0; i++) {
            rc = load_one(ds, list.paths[i], ds->images + i * ds->image_bytes);
            if (rc != 0) err_prefix("image %zu: ", i);
            else if (list.n > 1000 && ((i + 1) % every == 0 || i + 1 == list.n))
                log_info("%s: decoded %zu/%zu images (%.0f/s)", ds->path, i + 1, list.n,
                         (double)(i + 1) / (now_seconds() - t0 + 1e-9));
        }
        if (rc == 0) ds->count = list.n;
    }
    for (size_t i = 0; i < list.n; i++) free(list.paths[i]);
    free(list.paths);
    return rc;
}
