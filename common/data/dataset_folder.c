/* Folders of PNG/JPEG images, preprocessed as guided-diffusion's ImageDataset and
 * decoded once into memory (large folders: pack them with ddpm-prep instead).
 * An image that cannot be decoded stops the open with an error naming the file and
 * its index: training never goes on with a grey or partial image. (ddpm-prep skips
 * such images, counts and lists them.) */
#include "common/data/dataset_internal.h"

#include <stdlib.h>

#include "common/core/util.h"
#include "common/data/preprocess.h"

/* The classes by guided-diffusion's file-name convention (docs/data.md): every
 * image has one; the names and one file of each are kept for messages and logs. */
static int folder_labels(struct dataset *ds, char **paths, size_t n) {
    size_t *first = NULL;
    if (image_folder_classes(paths, n, &ds->labels, &ds->class_names, &first, &ds->n_classes) != 0)
        return -1;
    ds->class_files = xcalloc(ds->n_classes ? ds->n_classes : 1, sizeof *ds->class_files);
    for (size_t c = 0; c < ds->n_classes; c++) ds->class_files[c] = xstrdup(paths[first[c]]);
    free(first);
    return 0;
}

int dataset_load_folder(struct dataset *ds) {
    if (ds->channels != 1 && ds->channels != 3)
        return err_set("%s: image folders give 1 or 3 channels, not %d", ds->path, ds->channels);
    char **paths = NULL;
    size_t n = 0, bytes = 0;
    int rc = image_folder_list(ds->path, &paths, &n);
    if (rc == 0 && n == 0) rc = err_set("%s: no .png/.jpg/.jpeg images found (searched recursively)", ds->path);
    if (rc == 0 && size_mul(n, ds->image_bytes, &bytes) != 0)
        rc = err_set("%s: %zu images of %zu bytes do not fit in memory", ds->path, n, ds->image_bytes);
    if (rc == 0) {
        ds->images = xmalloc(bytes);
        size_t every = n / 10 > 1000 ? n / 10 : 1000;
        double t0 = now_seconds();
        for (size_t i = 0; i < n && rc == 0; i++) {
            rc = image_preprocess_file(paths[i], ds->size, ds->channels, ds->images + i * ds->image_bytes);
            if (rc != 0) err_prefix("image %zu: ", i);
            else if (ds->progress && n > 1000 && ((i + 1) % every == 0 || i + 1 == n))
                ds->progress(ds->progress_ctx, ds->path, i + 1, n, now_seconds() - t0);
        }
        if (rc == 0) ds->count = n;
    }
    if (rc == 0) rc = folder_labels(ds, paths, n);
    image_folder_list_free(paths, n);
    return rc;
}
