/* A U-Net's weights to and from safetensors files (common/io/safetensors.h), for
 * PyTorch users (export/ddpm_unet.py builds the module from the metadata and loads
 * the tensors by name), and as the start of a new run (ddpm-train --init-from).
 *
 * Everything is generic over the model's parameter table (unet_tensors: name,
 * shape, offset) and the config's key table, so every model option, present or
 * future, travels without change here: the tensors are the table's, named as the
 * C parameters (= the PyTorch module's state_dict keys), in the flat buffer's
 * order (so the data area is the flat float buffer, little-endian); the metadata
 * (WEIGHTS_META_*) carries the whole config and its model and diffusion sections
 * as JSON. docs/export.md describes the file. */
#ifndef DDPM_WEIGHTS_IO_H
#define DDPM_WEIGHTS_IO_H

#include <stdint.h>

#include "common/ckpt/checkpoint.h"
#include "common/config/config.h"
#include "common/model/unet.h"

#define WEIGHTS_FORMAT "ddpm-cluster-unet/1" /* metadata "format" */

/* Writes w (unet_num_params(m) floats) to path: tensors F32 in table order, and
 * the metadata "format", "config" (cfg's canonical YAML), "model" and "diffusion"
 * (JSON objects of those sections), "step", "weights" (which: ema or params).
 * The same inputs give the same bytes. 0 or -1 (err_msg names path). */
int weights_export(const char *path, const unet *m, const float *w, const config *cfg,
                   uint64_t step, const char *which);

/* Reads path's tensors into w for the model m built from cfg: every tensor of m's
 * table must be there with its shape, and no other; dtype F32, or F16/BF16
 * (converted exactly). When the file says it is ours (metadata "format"), its
 * config's model section must equal cfg's (the refusal names the keys). 0, or -1
 * with err_msg() naming the file and the tensor or key. */
int weights_import(const char *path, const unet *m, const config *cfg, float *w);

/* The weights a new run starts from (ddpm-train --init-from): a checkpoint (its
 * `which` weights: CKPT_EMA or CKPT_PARAMS, through ckpt_model_load; its model
 * section must equal cfg's) or a safetensors file (weights_import). Told apart by
 * the checkpoint's zstd magic. 0 or -1. */
int weights_init_from(const char *path, int which, const unet *m, const config *cfg, float *w);

/* ddpm-import's checkpoint: step 0, params and EMA = w, Adam moments zero, cfg's
 * canonical text, data cursor at the start, one rank; written atomically to path
 * by the checkpoint writer. A run resumes from it like from any step-0
 * checkpoint, and ddpm-sample reads its EMA. 0 or -1. */
int weights_write_checkpoint(const char *path, const unet *m, const float *w, const config *cfg);

/* m's tensor table into h (n_tensors, tensors = tens, unet_num_tensors(m)
 * entries; names borrowed from m), for a checkpoint header. */
void weights_header_tensors(ckpt_header *h, const unet *m, ckpt_tensor *tens);

#endif
