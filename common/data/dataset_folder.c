/* Folders of PNG/JPEG images, preprocessed as guided-diffusion's ImageDataset and
 * decoded once into memory (large folders: pack them with ddpm-prep instead).
 * An image that cannot be decoded stops the open with an error naming the file and
 * its index: training never goes on with a grey or partial image. (ddpm-prep skips
 * such images, counts and lists them.) */
#include "common/data/dataset_internal.h"

#include <stdlib.h>

#include "common/core/util.h"
#include "common/data/preprocess.h"

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
    image_folder_list_free(paths, n);
    return rc;
}
