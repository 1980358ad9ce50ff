/* ddpm-import: weights from a safetensors file (made by ddpm-export, or by
 * PyTorch from export/ddpm_unet.py's state_dict) as a checkpoint.
 *
 *   ddpm-import model.safetensors CONFIG [section.key=value ...] --out ckpt.ddpm
 *
 * The file's tensors must be exactly the parameters of CONFIG's model (every name,
 * each shape; F32, or F16/BF16 converted exactly). The checkpoint is at step 0
 * with params and EMA = the imported weights and fresh Adam moments (zeros):
 * ddpm-sample draws from it, `ddpm-train CONFIG --resume PATH` continues from it
 * (docs/export.md). No MPI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ckpt/weights_io.h"
#include "common/config/config.h"
#include "common/core/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ddpm-import FILE.safetensors CONFIG [section.key=value ...] --out CKPT\n"
            "  CONFIG          the run configuration whose model section the weights fit\n"
            "                  (its other sections are recorded in the checkpoint)\n"
            "  --out CKPT      the checkpoint to write (atomically): step 0, params and EMA\n"
            "                  = the imported weights, Adam moments zero\n");
}

static int load_config(config *cfg, const char *path, const char **over, int n_over) {
    if (config_load_file(cfg, path) != 0) return -1;
    for (int i = 0; i < n_over; i++)
        if (config_override(cfg, over[i]) != 0) return -1;
    return config_validate(cfg);
}

int main(int argc, char **argv) {
    const char *in = NULL, *cfg_path = NULL, *out = NULL;
    const char **over = xcalloc((size_t)argc, sizeof *over);
    int n_over = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (a[0] != '-' && strchr(a, '=') && cfg_path) {
            over[n_over++] = a;
        } else if (a[0] != '-' && !in) {
            in = a;
        } else if (a[0] != '-' && !cfg_path) {
            cfg_path = a;
        } else {
            fprintf(stderr, "ddpm-import: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!in || !cfg_path || !out) {
        usage(stderr);
        return 2;
    }
    static config cfg;
    unet *m = NULL;
    float *w = NULL;
    int rc = load_config(&cfg, cfg_path, over, n_over);
    if (rc == 0) rc = (m = unet_create(&cfg.model, 1, 0, NULL)) ? 0 : -1;
    if (rc == 0) {
        w = xfloats(unet_num_params(m));
        rc = weights_import(in, m, &cfg, w);
    }
    if (rc == 0) rc = weights_write_checkpoint(out, m, w, &cfg);
    if (rc == 0)
        fprintf(stderr, "ddpm-import: %s (%zu parameters in %d tensors) -> %s (step 0)\n", in,
                unet_num_params(m), unet_num_tensors(m), out);
    else
        fprintf(stderr, "ddpm-import: %s\n", err_msg());
    free(w);
    unet_free(m);
    free(over);
    return rc == 0 ? 0 : 1;
}
