/* ddpm-export: a checkpoint's weights as a safetensors file for PyTorch users.
 *
 *   ddpm-export CHECKPOINT [--weights ema|params] --out model.safetensors
 *
 * Loads the checkpoint through the one model loader (common/ckpt/ckpt_model.h)
 * and writes its tensors under the C parameter names, which are the state_dict
 * keys of the shipped PyTorch module (export/ddpm_unet.py), with the config in
 * the metadata (common/ckpt/weights_io.h, docs/export.md). No MPI. */
#include <stdio.h>
#include <string.h>

#include "common/ckpt/ckpt_model.h"
#include "common/ckpt/weights_io.h"
#include "common/core/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ddpm-export CHECKPOINT --out FILE.safetensors [--weights ema|params]\n"
            "  --out FILE      the safetensors file to write (atomically)\n"
            "  --weights W     ema (default: what ddpm-sample uses) | params (the raw\n"
            "                  trained weights)\n"
            "The tensors are named as export/ddpm_unet.py's state_dict keys; its\n"
            "load_safetensors(FILE) builds the module from the metadata (docs/export.md).\n");
}

int main(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL;
    int which = CKPT_EMA;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(a, "--weights") && i + 1 < argc) {
            if (!(which = ckpt_weights_parse(argv[++i]))) {
                fprintf(stderr, "ddpm-export: --weights: '%s' is not ema or params\n", argv[i]);
                return 2;
            }
        } else if (a[0] == '-' || ckpt) {
            fprintf(stderr, "ddpm-export: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        } else {
            ckpt = a;
        }
    }
    if (!ckpt || !out) {
        usage(stderr);
        return 2;
    }
    ckpt_model cm;
    if (ckpt_model_load(&cm, ckpt, which, 1, NULL, OPS_FP32) != 0 ||
        weights_export(out, cm.model, cm.weights, &cm.cfg, cm.h.step, ckpt_weights_name(which)) != 0) {
        fprintf(stderr, "ddpm-export: %s\n", err_msg());
        ckpt_model_free(&cm);
        return 1;
    }
    fprintf(stderr, "ddpm-export: %s weights of %s (step %llu, %zu parameters in %d tensors) -> %s\n",
            ckpt_weights_name(which), ckpt, (unsigned long long)cm.h.step,
            unet_num_params(cm.model), unet_num_tensors(cm.model), out);
    ckpt_model_free(&cm);
    return 0;
}
