/* ddpm-train: Algorithm 1 of Ho et al. (2020).
 *
 *   ddpm-train CONFIG [section.key=value ...] [--resume auto|none|PATH] [--summary]
 *
 * One MPI program; a lone process (no mpirun) runs as an MPI singleton and does
 * every role: it plans each global batch, computes the gradients, applies
 * clip -> Adam -> EMA, logs metrics and writes checkpoints. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpi.h>

#include "common/ckpt/checkpoint.h"
#include "common/config/config.h"
#include "common/core/blas_setup.h"
#include "common/core/util.h"
#include "common/data/dataset.h"
#include "common/diffusion/diffusion.h"
#include "common/eval/bpd.h"
#include "common/io/tensor_file.h"
#include "common/model/unet.h"
#include "common/optim/optim.h"
#include "common/train/batch.h"
#include "common/train/grad.h"

/* Exit codes a launcher can act on. */
enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_PREEMPTED = 3 };

static volatile sig_atomic_t g_signal = 0;
static void on_signal(int sig) { g_signal = sig; }

static void usage(FILE *f) {
    fprintf(f,
            "usage: ddpm-train CONFIG [section.key=value ...] [options]\n"
            "  CONFIG               YAML run configuration (see docs/config.md)\n"
            "  section.key=value    override one setting, validated like the file\n"
            "                       (e.g. training.steps=200, model.ch_mult=[1,2,2])\n"
            "options:\n"
            "  --resume auto        continue from the newest valid checkpoint in output.dir\n"
            "                       (start fresh if there is none)\n"
            "  --resume PATH        continue from this checkpoint file\n"
            "  --resume none        start fresh (refused if output.dir has checkpoints)\n"
            "  --summary            print the model's parameter table and exit\n"
            "  --dump-batches FILE  write each step's x0, t, eps, loss and the final\n"
            "                       parameters and EMA to FILE (reference tests)\n"
            "  -h, --help           this text\n"
            "On SIGINT/SIGTERM the run checkpoints at the next step boundary and exits 0;\n"
            "on SIGUSR1 it checkpoints and exits %d (requeue me).\n",
            EXIT_PREEMPTED);
}

static int mkdir_p(const char *path) {
    char tmp[CONFIG_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return err_set("%s: cannot create: %m", tmp);
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return err_set("%s: cannot create: %m", tmp);
    return 0;
}

typedef struct {
    config cfg;
    char *cfg_yaml;
    dataset *ds;
    diffusion diff;
    unet *model;
    size_t P;
    float *params, *grads, *adam_m, *adam_v, *ema;
    uint64_t step;
    optim_config oc;
    batch_planner bp;
    grad_worker gw;
    batch_item *items;
    FILE *metrics;
    tensor_file dump;
    int dumping;
} trainer;

static void fill_header(const trainer *tr, ckpt_header *h, ckpt_tensor *tens) {
    memset(h, 0, sizeof *h);
    h->config_yaml = tr->cfg_yaml;
    h->step = tr->step;
    h->seed = tr->cfg.training.seed;
    batch_cursor(&tr->bp, tr->step, &h->data_epoch, &h->data_position);
    h->permutation_seed = tr->cfg.training.seed;
    h->world_size = 1;
    h->servers = 1;
    h->workers = 1;
    h->n_params = tr->P;
    const unet_tensor *t = unet_tensors(tr->model);
    h->n_tensors = unet_num_tensors(tr->model);
    for (int i = 0; i < h->n_tensors; i++) {
        tens[i].name = (char *)t[i].name;
        tens[i].ndim = t[i].ndim;
        for (int d = 0; d < t[i].ndim; d++) tens[i].shape[d] = t[i].shape[d];
        tens[i].offset = t[i].offset;
        tens[i].size = t[i].size;
    }
    h->tensors = tens;
}

static int save_checkpoint(trainer *tr) {
    ckpt_header h;
    ckpt_tensor *tens = xcalloc((size_t)unet_num_tensors(tr->model), sizeof *tens);
    fill_header(tr, &h, tens);
    char path[CONFIG_PATH_MAX + 64];
    double t0 = now_seconds();
    int rc = ckpt_write(tr->cfg.output.dir, &h, tr->params, tr->ema, tr->adam_m, tr->adam_v, path,
                        sizeof path);
    free(tens);
    if (rc != 0) return -1;
    if (ckpt_prune(tr->cfg.output.dir, tr->cfg.training.keep_checkpoints) != 0)
        log_warn("pruning old checkpoints: %s", err_msg());
    log_info("checkpoint step %llu -> %s (%.1f s)", (unsigned long long)tr->step, path,
             now_seconds() - t0);
    return 0;
}

/* Loads a checkpoint into the trainer after checking it belongs to this run. */
static int load_checkpoint(trainer *tr, const char *path) {
    ckpt_header h;
    memset(&h, 0, sizeof h);
    /* The header first: a checkpoint of another model is refused by name before
     * its tensors are read. */
    if (ckpt_read_header(path, &h) != 0) return -1;
    config saved;
    int rc = 0;
    char diff[2048];
    if (config_load_string(&saved, h.config_yaml, strlen(h.config_yaml), path) != 0) {
        rc = err_prefix("%s: its config text does not parse: ", path);
        goto done;
    }
    if (config_diff_model(&saved, &tr->cfg, diff, sizeof diff) > 0) {
        rc = err_set("%s: the checkpoint's model/diffusion settings differ from the config: %s",
                     path, diff);
        goto done;
    }
    ckpt_header_free(&h);
    if (ckpt_read(path, &h, tr->P, CKPT_ALL, tr->params, tr->ema, tr->adam_m, tr->adam_v) != 0)
        return -1;
    if (h.sections != CKPT_ALL) {
        rc = err_set("%s: training state incomplete (sections 0x%x); cannot resume", path,
                     (unsigned)h.sections);
        goto done;
    }
    /* The data cursor must describe the same stream. */
    uint64_t ep, pos;
    batch_cursor(&tr->bp, h.step, &ep, &pos);
    if (saved.data.format != tr->cfg.data.format || ep != h.data_epoch || pos != h.data_position) {
        rc = err_set("%s: the dataset differs from the one the checkpoint was trained on "
                     "(checkpoint cursor epoch %llu position %llu; with this dataset of %zu "
                     "records and batch %d it would be epoch %llu position %llu)",
                     path, (unsigned long long)h.data_epoch, (unsigned long long)h.data_position,
                     dataset_size(tr->ds), tr->cfg.training.batch_size, (unsigned long long)ep,
                     (unsigned long long)pos);
        goto done;
    }
    if (saved.training.batch_size != tr->cfg.training.batch_size ||
        saved.training.seed != tr->cfg.training.seed) {
        rc = err_set("%s: training.batch_size and training.seed must stay the same on resume "
                     "(checkpoint: %d, %llu)", path, saved.training.batch_size,
                     (unsigned long long)saved.training.seed);
        goto done;
    }
    if (config_diff_all(&saved, &tr->cfg, diff, sizeof diff) > 0)
        log_info("resume: settings changed since the checkpoint: %s", diff);
    tr->step = h.step;
    log_info("resumed from %s at step %llu (written by %u rank(s))", path,
             (unsigned long long)h.step, h.world_size);
done:
    ckpt_header_free(&h);
    return rc;
}

static int resume(trainer *tr, const char *mode) {
    if (strcmp(mode, "none") == 0) {
        char **paths = NULL;
        int n = ckpt_list(tr->cfg.output.dir, &paths);
        ckpt_list_free(paths, n > 0 ? n : 0);
        if (n > 0)
            return err_set("%s already holds %d checkpoint(s); pass --resume auto to continue "
                           "that run, or choose another output.dir",
                           tr->cfg.output.dir, n);
        return 0;
    }
    if (strcmp(mode, "auto") != 0) return load_checkpoint(tr, mode);
    char **paths = NULL;
    int n = ckpt_list(tr->cfg.output.dir, &paths);
    if (n < 0) return -1;
    if (n == 0) {
        log_info("resume auto: no checkpoint in %s, starting fresh", tr->cfg.output.dir);
        return 0;
    }
    int rc = -1;
    for (int i = 0; i < n; i++) {
        if (load_checkpoint(tr, paths[i]) == 0) {
            rc = 0;
            break;
        }
        log_warn("skipping checkpoint: %s", err_msg());
    }
    if (rc != 0) err_set("resume auto: none of the %d checkpoint(s) in %s is usable", n,
                         tr->cfg.output.dir);
    ckpt_list_free(paths, n);
    return rc;
}

static void log_metrics(trainer *tr, const loss_stats *st, double gnorm, double lr, double ips,
                        double elapsed) {
    double pnorm = sqrt(optim_sum_squares(tr->params, tr->P));
    double loss = st->n ? st->loss_sum / (double)st->n : 0;
    char q[4][32];
    for (int i = 0; i < 4; i++) {
        if (st->q_count[i])
            snprintf(q[i], sizeof q[i], "%.9g", st->q_sum[i] / (double)st->q_count[i]);
        else
            snprintf(q[i], sizeof q[i], "null");
    }
    fprintf(tr->metrics,
            "{\"step\": %llu, \"loss\": %.9g, \"q0\": %s, \"q1\": %s, \"q2\": %s, \"q3\": %s, "
            "\"grad_norm\": %.9g, \"param_norm\": %.9g, \"lr\": %.9g, \"images_per_s\": %.4g, "
            "\"elapsed\": %.3f}\n",
            (unsigned long long)tr->step, loss, q[0], q[1], q[2], q[3], gnorm, pnorm, lr, ips,
            elapsed);
    fflush(tr->metrics);
    fprintf(stderr, "step %llu/%ld  loss %.5f  grad_norm %.3f  lr %.3g  %.1f img/s  %.0f s\n",
            (unsigned long long)tr->step, tr->cfg.training.steps, loss, gnorm, lr, ips, elapsed);
}

/* training.eval_every: bits/dim of the EMA weights on the first training.eval_images
 * images of data.eval_path, the unbiased strided estimate (training.eval_stride) with
 * offsets and noise keyed on training.seed, so every evaluation sees the same
 * images, timesteps and noise and `ddpm-eval bpd CKPT --images N --stride K --seed
 * SEED` reproduces it. The set is reopened each time (no state kept between calls);
 * the training model runs it without dropout. One more line in metrics.jsonl. */
static int eval_bpd(trainer *tr) {
    const training_config *tc = &tr->cfg.training;
    int C = tr->cfg.model.in_channels, S = tr->cfg.model.image_size;
    double t0 = now_seconds();
    dataset *ds;
    if (dataset_open(&ds, tr->cfg.data.format, tr->cfg.data.eval_path, S, C) != 0)
        return err_prefix("data.eval_path: ");
    size_t n = dataset_size(ds) < (size_t)tc->eval_images ? dataset_size(ds) : (size_t)tc->eval_images;
    size_t D = (size_t)C * S * S;
    uint8_t *u8 = xmalloc(n * D + 1);
    uint64_t *ids = xcalloc(n + 1, sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        dataset_get(ds, i, u8 + i * D);
        ids[i] = i;
    }
    dataset_close(ds);
    bpd_result r;
    bpd_config bc = {&tr->diff, (int)tr->cfg.diffusion.sampling_var, 1, tc->eval_stride,
                     BPD_ESTIMATE_UNBIASED, tc->seed};
    int rc = n == 0 ? err_set("data.eval_path %s holds no images", tr->cfg.data.eval_path)
                    : bpd_result_init(&r, tr->diff.T);
    if (rc == 0) {
        rc = bpd_evaluate_u8(tr->model, tr->ema, &bc, u8, ids, (int)n, C, S, &r, NULL, NULL, NULL);
        if (rc == 0) {
            double ni = r.scalars[BPD_S_IMAGES], secs = now_seconds() - t0;
            fprintf(tr->metrics,
                    "{\"step\": %llu, \"eval_bpd\": %.9g, \"eval_bpd_stderr\": %.9g, "
                    "\"eval_decoder\": %.9g, \"eval_prior\": %.9g, \"eval_images\": %zu, "
                    "\"eval_stride\": %d, \"eval_weights\": \"ema\", \"eval_seconds\": %.3f}\n",
                    (unsigned long long)tr->step, bpd_result_mean(&r), bpd_result_stderr(&r),
                    r.scalars[BPD_S_DECODER] / ni, r.scalars[BPD_S_PRIOR] / ni, n, tc->eval_stride,
                    secs);
            fflush(tr->metrics);
            fprintf(stderr, "step %llu  eval bits/dim %.4f +- %.4f (EMA, %zu images, stride %d, %.1f s)\n",
                    (unsigned long long)tr->step, bpd_result_mean(&r), bpd_result_stderr(&r), n,
                    tc->eval_stride, secs);
        }
        bpd_result_free(&r);
    }
    free(u8);
    free(ids);
    return rc;
}

static int dump_step(trainer *tr, uint64_t step, float loss) {
    int B = tr->cfg.training.batch_size;
    size_t D = tr->gw.D;
    float *x0 = xfloats((size_t)B * D), *eps = xfloats((size_t)B * D), *t = xfloats((size_t)B);
    int rc = grad_worker_inputs(&tr->gw, step, tr->items, B, x0, eps);
    for (int i = 0; i < B; i++) t[i] = (float)tr->items[i].t;
    char name[64];
    int S = tr->cfg.model.image_size;
    int64_t dx[4] = {B, tr->cfg.model.in_channels, S, S}, dt[1] = {B}, d1[1] = {1};
    if (rc == 0) {
        snprintf(name, sizeof name, "step%llu/x0", (unsigned long long)step);
        rc = tensor_file_add(&tr->dump, name, 4, dx, x0);
        snprintf(name, sizeof name, "step%llu/t", (unsigned long long)step);
        if (!rc) rc = tensor_file_add(&tr->dump, name, 1, dt, t);
        snprintf(name, sizeof name, "step%llu/eps", (unsigned long long)step);
        if (!rc) rc = tensor_file_add(&tr->dump, name, 4, dx, eps);
        snprintf(name, sizeof name, "step%llu/loss", (unsigned long long)step);
        if (!rc) rc = tensor_file_add(&tr->dump, name, 1, d1, &loss);
    }
    free(x0);
    free(eps);
    free(t);
    return rc;
}

static int dump_params(trainer *tr, const char *prefix, const float *buf) {
    const unet_tensor *t = unet_tensors(tr->model);
    char name[128];
    for (int i = 0; i < unet_num_tensors(tr->model); i++) {
        int64_t dims[4];
        for (int d = 0; d < t[i].ndim; d++) dims[d] = t[i].shape[d];
        snprintf(name, sizeof name, "%s/%s", prefix, t[i].name);
        if (tensor_file_add(&tr->dump, name, t[i].ndim, dims, buf + t[i].offset) != 0) return -1;
    }
    return 0;
}

static int train(trainer *tr, int *exit_code) {
    const training_config *tc = &tr->cfg.training;
    int B = tc->batch_size;
    double t_start = now_seconds(), t_window = t_start;
    uint64_t window_images = 0;
    if (tr->dumping) {
        float meta[32];
        int64_t dk[1] = {unet_describe(&tr->cfg.model, meta)};
        if (tensor_file_add(&tr->dump, "meta/model", 1, dk, meta) != 0 ||
            dump_params(tr, "init", tr->params) != 0)
            return -1;
    }
    while ((long)tr->step < tc->steps) {
        if (g_signal) break;
        batch_plan(&tr->bp, tr->step, tr->items);
        memset(tr->grads, 0, tr->P * sizeof(float));
        loss_stats st;
        memset(&st, 0, sizeof st);
        if (grad_worker_run(&tr->gw, tr->params, tr->grads, tr->step, tr->items, B, B, &st) != 0)
            return -1;
        double loss = st.loss_sum / (double)st.n;
        if (!isfinite(loss))
            return err_set("step %llu: loss is %g; stopping (the last checkpoint is intact)",
                           (unsigned long long)tr->step, loss);
        if (tr->dumping && dump_step(tr, tr->step, (float)loss) != 0) return -1;
        double gnorm = sqrt(optim_sum_squares(tr->grads, tr->P));
        double lr = optim_lr(&tr->oc, tr->step);
        optim_adam(tr->params, tr->grads, tr->adam_m, tr->adam_v, tr->P, lr,
                   optim_clip_scale(&tr->oc, gnorm), &tr->oc, tr->step + 1);
        optim_ema(tr->ema, tr->params, tr->P, tr->oc.ema_decay);
        tr->step++;
        window_images += (uint64_t)B;
        if (tc->log_every > 0 && (tr->step % (uint64_t)tc->log_every == 0 ||
                                  (long)tr->step == tc->steps)) {
            double now = now_seconds();
            log_metrics(tr, &st, gnorm, lr, (double)window_images / (now - t_window),
                        now - t_start);
            t_window = now;
            window_images = 0;
        }
        if (tc->checkpoint_every > 0 && tr->step % (uint64_t)tc->checkpoint_every == 0 &&
            (long)tr->step != tc->steps) {
            if (save_checkpoint(tr) != 0) return -1;
        }
        if (tc->eval_every > 0 && tr->step % (uint64_t)tc->eval_every == 0 && eval_bpd(tr) != 0)
            return -1;
    }
    if (tr->dumping) {
        if (dump_params(tr, "final", tr->params) != 0 || dump_params(tr, "ema", tr->ema) != 0)
            return -1;
    }
    if (save_checkpoint(tr) != 0) return -1;
    if (g_signal) {
        log_info("stopped by signal %d at step %llu; checkpoint written", (int)g_signal,
                 (unsigned long long)tr->step);
        *exit_code = g_signal == SIGUSR1 ? EXIT_PREEMPTED : EXIT_OK;
    } else {
        log_info("finished %llu steps", (unsigned long long)tr->step);
    }
    return 0;
}

int main(int argc, char **argv) {
    blas_setup(argv);
    const char *cfg_path = NULL, *resume_mode = "none", *dump_path = NULL;
    int summary = 0, n_over = 0;
    const char **overrides = xcalloc((size_t)argc, sizeof *overrides);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--summary")) {
            summary = 1;
        } else if (!strcmp(a, "--resume") && i + 1 < argc) {
            resume_mode = argv[++i];
        } else if (!strcmp(a, "--dump-batches") && i + 1 < argc) {
            dump_path = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "ddpm-train: unknown option '%s'\n", a);
            usage(stderr);
            return EXIT_USAGE;
        } else if (strchr(a, '=')) {
            overrides[n_over++] = a;
        } else if (!cfg_path) {
            cfg_path = a;
        } else {
            fprintf(stderr, "ddpm-train: unexpected argument '%s'\n", a);
            return EXIT_USAGE;
        }
    }
    if (!cfg_path) {
        usage(stderr);
        return EXIT_USAGE;
    }
    trainer tr;
    memset(&tr, 0, sizeof tr);
    if (config_load_file(&tr.cfg, cfg_path) != 0) {
        fprintf(stderr, "ddpm-train: %s\n", err_msg());
        return EXIT_ERROR;
    }
    for (int i = 0; i < n_over; i++) {
        if (config_override(&tr.cfg, overrides[i]) != 0) {
            fprintf(stderr, "ddpm-train: %s\n", err_msg());
            return EXIT_ERROR;
        }
    }
    free(overrides);
    if (config_validate(&tr.cfg) != 0) {
        fprintf(stderr, "ddpm-train: %s\n", err_msg());
        return EXIT_ERROR;
    }
    const training_config *tc = &tr.cfg.training;
    int micro = tc->micro_batch > 0 ? tc->micro_batch : tc->batch_size;
    if (summary) {
        unet *m = unet_create(&tr.cfg.model, micro, 1);
        if (!m) {
            fprintf(stderr, "ddpm-train: %s\n", err_msg());
            return EXIT_ERROR;
        }
        unet_print_summary(m, &tr.cfg.model, stdout);
        unet_free(m);
        return EXIT_OK;
    }

    /* A lone process runs as an MPI singleton. Open MPI refuses root unless told. */
    if (geteuid() == 0 && !getenv("OMPI_COMM_WORLD_SIZE")) {
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    }
    MPI_Init(&argc, &argv);
    int world = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (world != 1) {
        fprintf(stderr, "ddpm-train: %d ranks given, but this build trains on one process only "
                        "(distributed training is not implemented yet)\n", world);
        MPI_Finalize();
        return EXIT_USAGE;
    }
    int code = EXIT_OK;
    int threads = blas_set_threads(tc->threads, 1);
    log_info("OpenBLAS kernel %s (%s), %d thread(s)", blas_kernel_name(), blas_kernel_origin(),
             threads);
    tr.cfg_yaml = config_to_yaml(&tr.cfg);
    if (mkdir_p(tr.cfg.output.dir) != 0) goto fail;
    if (dataset_open(&tr.ds, tr.cfg.data.format, tr.cfg.data.path, tr.cfg.model.image_size,
                     tr.cfg.model.in_channels) != 0)
        goto fail;
    log_info("dataset %s: %zu images", tr.cfg.data.path, dataset_size(tr.ds));
    if (diffusion_init(&tr.diff, tr.cfg.diffusion.schedule, tr.cfg.diffusion.timesteps,
                       tr.cfg.diffusion.beta_start, tr.cfg.diffusion.beta_end) != 0)
        goto fail;
    tr.model = unet_create(&tr.cfg.model, micro, 1);
    if (!tr.model) goto fail;
    tr.P = unet_num_params(tr.model);
    log_info("model: %zu parameters, %.3f GMAC/image forward, activations %.1f MiB (micro-batch %d)",
             tr.P, unet_forward_macs(tr.model) / 1e9,
             (double)unet_activation_bytes(tr.model) / 1048576.0, micro);
    tr.params = xfloats(tr.P);
    tr.grads = xfloats(tr.P);
    tr.adam_m = xfloats(tr.P);
    tr.adam_v = xfloats(tr.P);
    tr.ema = xfloats(tr.P);
    tr.oc = (optim_config){tc->lr, tc->adam_beta1, tc->adam_beta2, tc->adam_eps,
                           tc->warmup_steps, tc->grad_clip, tc->ema_decay};
    if (batch_planner_init(&tr.bp, tc->seed, dataset_size(tr.ds), tc->batch_size,
                           tr.cfg.diffusion.timesteps, tc->t_sampler, tr.cfg.data.random_flip) != 0)
        goto fail;
    tr.items = xcalloc((size_t)tc->batch_size, sizeof *tr.items);
    grad_worker_init(&tr.gw, tr.model, &tr.diff, tr.ds, tc->seed, micro, tr.cfg.model.in_channels,
                     tr.cfg.model.image_size);
    unet_init(tr.model, tr.params, tc->seed);
    memcpy(tr.ema, tr.params, tr.P * sizeof(float));
    if (resume(&tr, resume_mode) != 0) goto fail;
    char mpath[CONFIG_PATH_MAX + 32];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", tr.cfg.output.dir);
    tr.metrics = fopen(mpath, "a");
    if (!tr.metrics) {
        err_set("%s: cannot open for appending: %m", mpath);
        goto fail;
    }
    if (dump_path) {
        if (tensor_file_create(&tr.dump, dump_path) != 0) goto fail;
        tr.dumping = 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    log_info("training %s from step %llu to %ld, batch %d, lr %g, output %s", cfg_path,
             (unsigned long long)tr.step, tc->steps, tc->batch_size, tc->lr, tr.cfg.output.dir);
    if (train(&tr, &code) != 0) goto fail;
    if (tr.dumping && tensor_file_close(&tr.dump) != 0) goto fail;
    goto out;
fail:
    fprintf(stderr, "ddpm-train: %s\n", err_msg());
    code = EXIT_ERROR;
out:
    if (tr.metrics) fclose(tr.metrics);
    grad_worker_free(&tr.gw);
    batch_planner_free(&tr.bp);
    free(tr.items);
    free(tr.params); free(tr.grads); free(tr.adam_m); free(tr.adam_v); free(tr.ema);
    unet_free(tr.model);
    if (tr.diff.betas) diffusion_free(&tr.diff);
    if (tr.ds) dataset_close(tr.ds);
    free(tr.cfg_yaml);
    MPI_Finalize();
    return code;
}
