/* The DDPM U-Net of Ho et al. (2020), built from config exactly as the authors'
 * diffusion_tf/models/unet.py builds it: conv_in; per level num_res_blocks ResNet
 * blocks (GroupNorm-SiLU-conv, + dense(SiLU(temb)), GroupNorm-SiLU-dropout-conv,
 * 1x1 shortcut when channels change), self-attention at the configured
 * resolutions, stride-2 conv downsample; middle block-attn-block; the up path with
 * num_res_blocks+1 blocks per level on skip concatenations and nearest+conv
 * upsampling; GroupNorm-SiLU-conv_out. Output: epsilon, same shape as the input, and
 * with model.learn_sigma the variance output v after it (unet_out_channels).
 *
 * Ownership: the model (unet) owns its structure, the parameter table and the
 * activation/gradient scratch sized for max_batch images. Parameters, their
 * gradients and any copies (EMA, Adam moments) are flat float buffers of
 * unet_num_params() values owned by the caller; every function borrows them. */
#ifndef DDPM_UNET_H
#define DDPM_UNET_H

#include <stddef.h>
#include <stdint.h>

#include "common/ops/ops.h"
#include "common/model/model_config.h"

#define UNET_NAME_MAX 96

/* Why unet_check_config refused a config: the model_config field to blame, as its
 * YAML key name ("num_res_blocks", "ch_mult", ...), and the reason, without the key
 * ("65 is out of range (must be 1..64)"). */
typedef struct {
    const char *field;
    char why[256];
} unet_config_error;

/* The model's rules for a config, the same for every caller: every limit of
 * model_config.h (fields and list lengths read from the struct are checked before
 * they index anything), ch and each ch*mult multiple of 32, image_size divisible
 * by 2^(levels-1), attention resolutions that exist and are not repeated, dropout
 * in [0, 1), and the sizes the structure implies (parameters, each layer's floats
 * per image, activations for one image; built as a parameter table only, never
 * allocated). Returns 0, or -1 with err_msg() "model.<field>: <why>" and, when e is
 * not NULL, *e filled. The config validator calls it (common/config), and
 * unet_create before building anything. resamp_with_conv is not a limit: false is
 * a valid config that unet_create refuses as unsupported. */
int unet_check_config(const model_config *mc, unet_config_error *e);

/* One named tensor inside the flat parameter buffer. Names are stable (see
 * docs/model.md): checkpoints and exports use them. */
typedef struct {
    char name[UNET_NAME_MAX];
    int ndim;
    int shape[4];
    size_t offset; /* in floats */
    size_t size;   /* in floats */
    float init_scale; /* variance-scaling scale used by unet_init (0: zeros;
                         UNET_INIT_ONES, UNET_INIT_NORMAL: see unet_init) */
} unet_tensor;

#define UNET_INIT_ONES (-1.0f)   /* GroupNorm gamma */
#define UNET_INIT_NORMAL (-2.0f) /* N(0, 1): the label embedding */

typedef struct unet unet;

/* Randomness of one forward pass: dropout masks are keyed on
 * (seed, step, sample_ids[i], RNG_PURPOSE_DROPOUT + layer), so they do not depend on
 * how a batch is split. NULL (or dropout 0) disables dropout (evaluation). */
typedef struct {
    uint64_t seed;
    uint64_t step;
    const uint64_t *sample_ids; /* N global sample indices */
} unet_rng;

/* How a model runs, chosen by the program (the library reads no environment;
 * programs fill this with common/env/env_opts.h from DDPM_LANES, DDPM_CONV and
 * DDPM_PREPARE_MIB). The choices are the model's own: two models in one
 * process (EMA evaluation beside training, tests) never disturb each other.
 *
 * lanes: with lanes > 1 the model is lanes complete sub-models, each for
 * ceil(max_batch / lanes) images, and a batch is split into contiguous slices that
 * run on one thread each (forward whole, backward layer by layer with the lanes'
 * parameter gradients summed in lane order after each layer, before the hook).
 * Small models run much faster this way than with every op split over the threads
 * (docs/performance.md); the results equal a single lane's up to the order of the
 * gradient sums. The model falls back to one lane (every op split over the
 * threads) when lanes > max_batch, or when the lanes' extra gradient buffers
 * (lanes - 1 of n_params floats) would exceed 1 GiB. 0: the OpenMP thread count
 * at unet_create (call it after blas_set_threads); 1: no lanes.
 * conv: the formulation of the 3x3 stride-1 convolutions and the forced
 * Winograd tile (ops.h's conv_algo_opts), planned per layer at unet_create.
 * prepare_budget: the bytes unet_prepare may take; UNET_PREPARE_AUTO: half the
 * memory the process may still take (mem_available_bytes: MemAvailable, and
 * the cgroup limit Slurm sets), read when unet_prepare runs; 0: never prepare.
 * precision: OPS_FP32, or OPS_BF16 mixed precision (training.precision,
 * --precision): every convolution by oneDNN in bf16, the linear layers and the
 * attention matmuls with bf16 operands, all with fp32 accumulation; the
 * parameters, gradients, activations between ops, GroupNorm, softmax and the
 * loss stay fp32 (docs/performance.md). unet_create refuses it on a CPU without
 * AVX-512 (ops_bf16_support). */
#define UNET_PREPARE_AUTO SIZE_MAX
typedef struct {
    int lanes;
    conv_algo_opts conv;
    size_t prepare_budget;
    ops_precision precision;
} unet_options;

/* lanes 0, the default conv_algo_opts (all zero: AUTO), UNET_PREPARE_AUTO. */
unet_options unet_options_default(void);

/* Builds the model for batches of at most max_batch images. with_backward = 0 keeps
 * only what a forward pass needs (sampling). opt NULL: unet_options_default().
 * Returns NULL with err_msg() on a config unet_check_config refuses, an
 * unsupported one or unsupported options, or a batch whose activations would
 * exceed UNET_MAX_ACTIVATION_BYTES (checked before allocating). */
unet *unet_create(const model_config *mc, int max_batch, int with_backward,
                  const unet_options *opt);
int unet_num_lanes(const unet *m);
/* The model's arithmetic for the log, into buf (cap bytes, truncated with
 * "..."): "precision bf16 (<ops_bf16_support's sentence>); linear and attention
 * GEMMs <how>; convolutions: " then one "Cin->Cout HxW kK sS: <conv_plan_name>"
 * entry per distinct (shape, formulation), joined by "; ". */
void unet_describe_plans(const unet *m, char *buf, size_t cap);
ops_precision unet_precision(const unet *m);
void unet_free(unet *m);

size_t unet_num_params(const unet *m);
int unet_num_tensors(const unet *m);
const unet_tensor *unet_tensors(const unet *m);
/* Index of the tensor named `name`, or -1. */
int unet_find_tensor(const unet *m, const char *name);
int unet_max_batch(const unet *m);
/* Channels of the output: in_channels (epsilon), and with learn_sigma as many more
 * (v, docs/diffusion.md): per image [eps (in_channels planes) | v]. Callers size
 * and read the output with this. */
int unet_out_channels(const unet *m);
/* model.num_classes: K > 0 for a class-conditional model (labels 0..K-1, K the null
 * label), 0 for an unconditional one. */
int unet_num_classes(const unet *m);
/* Bytes of activation and scratch memory the model holds. */
size_t unet_activation_bytes(const unet *m);
/* Forward multiply-accumulates per image (convolutions, linears, attention GEMMs). */
double unet_forward_macs(const unet *m);

/* The authors' initialisation: variance scaling (fan_avg, uniform) for every conv
 * and dense weight, scale 1e-10 for each block's conv2, attention proj_out and
 * conv_out; biases 0; GroupNorm gamma 1, beta 0; the label embedding (num_classes
 * > 0) N(0, 1), as PyTorch's nn.Embedding in guided-diffusion. Deterministic in
 * seed. */
void unet_init(const unet *m, float *params, uint64_t seed);

/* out[N][unet_out_channels][H][W] = eps_theta(x, t, y) (and v with learn_sigma). x, y and out are borrowed; N <= max_batch.
 * y: N class labels for a class-conditional model (num_classes K > 0), each in
 * 0..K, K the null label; row y[n] of label_emb.weight is added to the timestep
 * embedding after its MLP (before the SiLU that feeds every res block), as
 * guided-diffusion's emb = time_embed(t) + label_emb(y). NULL: every image gets
 * the null label (K > 0), or no label at all (K = 0, where y must be NULL).
 * A label out of range is a programming error (callers check their inputs):
 * logged, then abort. Keeps the activations that unet_backward needs (if built
 * with_backward). */
void unet_forward(unet *m, const float *params, const float *x, const int *t, const int *y,
                  int N, const unet_rng *rng, float *out);
/* Prepares the forward passes of a run over weights that stay unchanged (a
 * sampling run, a bits/dim evaluation): the Winograd-transformed kernels of every
 * 3x3 convolution that uses Winograd are computed once, from params, and every
 * unet_forward over this params buffer reads them instead of transforming the
 * kernels at each call in each lane (conv_prepare; the model owns them and
 * hands each layer's to its convolution). They take up to 4x the
 * memory of those convolutions' weights (36 floats per 3x3 kernel where the map
 * is at least 16 wide, 16 below). Until unet_unprepare (or unet_free) the caller
 * must not change params. They are kept within the options' prepare_budget.
 * Returns 0, or -1 with err_msg() when over the budget or out of memory (then
 * nothing is prepared and forward passes transform the kernels at each call, as
 * without this call: same results, slower). */
int unet_prepare(unet *m, const float *params);
/* Whether m is prepared over this params buffer. */
int unet_prepared(const unet *m, const float *params);
/* Bytes the prepared kernels take (0 when not prepared). */
size_t unet_prepared_bytes(const unet *m);
void unet_unprepare(unet *m);

/* Accumulates d(loss)/d(params) into grads given dout = d(loss)/d(out) of the last
 * forward pass. No gradient w.r.t. x is produced. */
void unet_backward(unet *m, const float *params, float *grads, const float *dout);

/* Called during unet_backward after each layer: every parameter at flat offset >=
 * done_from now holds its final gradient of this backward pass (parameters are laid
 * out in forward order and backward visits layers in reverse; the timestep MLP at
 * offset 0 is finished last, with done_from = 0). Lets a distributed worker push
 * gradient chunks while the rest of backward runs. NULL removes the hook. */
typedef void (*unet_backward_hook)(void *ctx, size_t done_from);
void unet_set_backward_hook(unet *m, unet_backward_hook hook, void *ctx);

/* Called during unet_forward before each layer (and before the timestep MLP): the
 * layer about to run reads parameters at flat offsets below ready_to only (the
 * table is in forward order, so ready_to only grows within a pass; a model with
 * lanes asks for all n_params once). The hook returns once those are in place,
 * which lets a distributed worker start the next forward while the later parameter
 * chunks still arrive. NULL removes the hook. */
typedef void (*unet_forward_hook)(void *ctx, size_t ready_to);
void unet_set_forward_hook(unet *m, unet_forward_hook hook, void *ctx);

/* The dropout mask (values 0 or 1/(1-p), [N][C][H][W]) that res block number `id`
 * used in the last training forward pass, or NULL (no dropout, id out of range, or
 * a forward-only model). *n receives its length. The model does not keep masks: it
 * regenerates this one (counter-based RNG) into its scratch, which the model owns and
 * the next unet_forward/unet_backward/unet_dropout_mask call overwrites. For
 * reference tests and debugging. */
const float *unet_dropout_mask(unet *m, int id, size_t *n, const char **block_name);
int unet_num_dropout(const unet *m);

/* The model's hyper-parameters as a float vector for reference scripts
 * (export/ddpm_unet.py from_meta): image_size, in_channels, ch, num_res_blocks,
 * dropout, num_levels, ch_mult..., num_attn, attn_resolutions..., learn_sigma,
 * num_classes. Returns the count (at most 32). */
int unet_describe(const model_config *mc, float *meta);

/* Prints the parameter table and total to f (the `--summary` of the programs). */
void unet_print_summary(const unet *m, const model_config *mc, void *file);

#endif
