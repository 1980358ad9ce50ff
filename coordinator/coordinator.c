/* The coordinator's pieces: checkpoints, resume, metrics and the run's cadence
 * (no MPI here). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/ckpt/weights_io.h"
#include "common/core/util.h"
#include "common/eval/bpd.h"
#include "common/io/jsonl_steps.h"
#include "coordinator/cadence.h"
#include "coordinator/coordinator.h"

static void fill_header(const coordinator *tr, ckpt_header *h, ckpt_tensor *tens) {
    memset(h, 0, sizeof *h);
    h->config_yaml = tr->cfg_yaml;
    h->step = tr->step;
    h->seed = tr->cfg->training.seed;
    batch_cursor(&tr->bp, tr->step, &h->data_epoch, &h->data_position);
    h->permutation_seed = tr->cfg->training.seed;
    h->world_size = tr->world_size;
    h->servers = tr->servers;
    h->workers = tr->workers;
    h->n_params = tr->state->P;
    weights_header_tensors(h, tr->model, tens);
}

static void log_set_aside(void *arg, const char *path, const char *aside, const char *why) {
    (void)arg;
    log_warn("checkpoint %s does not verify; renamed to %s and not counted among the kept "
             "checkpoints (%s)", path, aside, why);
}

int coordinator_save_checkpoint(coordinator *tr) {
    ckpt_header h;
    ckpt_tensor *tens = xcalloc((size_t)unet_num_tensors(tr->model), sizeof *tens);
    fill_header(tr, &h, tens);
    char path[CONFIG_PATH_MAX + 64];
    double t0 = now_seconds();
    const shard *st = tr->state;
    int rc = ckpt_write_ex(tr->cfg->output.dir, &h, st->params, st->ema, st->adam_m, st->adam_v,
                           &tr->write_opts, path, sizeof path);
    free(tens);
    if (rc != 0) return -1;
    /* written, fsynced and renamed by this process: known to verify */
    ckpt_known_mark(&tr->ckpt_known, path, 1);
    ckpt_prune_opts po = {&tr->ckpt_known, log_set_aside, NULL};
    if (ckpt_prune_ex(tr->cfg->output.dir, tr->cfg->training.keep_checkpoints, &po) < 0)
        log_warn("pruning old checkpoints: %s", err_msg());
    tr->ckpt_step = tr->step;
    tr->t_ckpt = now_seconds();
    tr->ckpt_seconds = tr->t_ckpt - t0;
    log_info("checkpoint step %llu -> %s (%.1f s)", (unsigned long long)tr->step, path,
             tr->ckpt_seconds);
    return 0;
}

int coordinator_want_final_checkpoint(const coordinator *tr, int stopping) {
    if (tr->ckpt_step == tr->step) {
        if (stopping)
            log_info("no step done since the last checkpoint or the start (step %llu); "
                     "nothing to write", (unsigned long long)tr->step);
        return 0;
    }
    if (!stopping) return 1;
    /* Before the first checkpoint of this process: 16 bytes per parameter (four
     * sections) at an assumed 100 MB/s of compression and disk. */
    double est = tr->ckpt_seconds > 0 ? tr->ckpt_seconds : (double)tr->state->P * 16.0 / 1e8;
    double since = 0;
    if (stop_should_checkpoint(tr->grace_s, est, &since)) return 1;
    log_warn("SIGTERM came %.1f s ago, a checkpoint takes about %.1f s and the grace time is "
             "%g s (--grace-time): leaving without a final checkpoint; the next run resumes "
             "from the newest checkpoint (step %llu)",
             since, est, tr->grace_s, (unsigned long long)tr->ckpt_step);
    return 0;
}

void coordinator_log_end(const coordinator *tr, int stopping, int wrote) {
    if (!stopping) {
        log_info("finished %llu steps", (unsigned long long)tr->step);
        return;
    }
    char names[64];
    log_info("stopped at step %llu on %s; %s; exit code %d", (unsigned long long)tr->step,
             stop_signal_names(names, sizeof names),
             wrote ? "checkpoint written"
             : tr->ckpt_step == tr->step ? "nothing new to checkpoint"
                                         : "no final checkpoint",
             stop_exit_code());
}

/* Loads a checkpoint into the coordinator's state after checking it belongs to this run.
 * *corrupt: set when the file does not verify (as opposed to verifying but not
 * belonging to this run); the outcome is recorded in tr->ckpt_known. */
static int load_checkpoint(coordinator *tr, const char *path, int *corrupt) {
    ckpt_header h;
    memset(&h, 0, sizeof h);
    *corrupt = 0;
    /* The header first: a checkpoint of another model is refused by name before
     * its tensors are read. */
    if (ckpt_read_header(path, &h) != 0) {
        *corrupt = 1;
        ckpt_known_mark(&tr->ckpt_known, path, 0);
        return -1;
    }
    config saved;
    int rc = 0;
    char diff[2048];
    /* the noise stream of every step comes from this generator */
    if (h.rng_algorithm[0] && strcmp(h.rng_algorithm, CKPT_DEFAULT_RNG) != 0) {
        rc = err_set("%s: written with random generator '%s'; this build uses '%s'", path,
                     h.rng_algorithm, CKPT_DEFAULT_RNG);
        goto done;
    }
    if (config_load_string(&saved, h.config_yaml, strlen(h.config_yaml), path) != 0) {
        rc = err_prefix("%s: its config text does not parse: ", path);
        goto done;
    }
    if (config_diff_model(&saved, tr->cfg, diff, sizeof diff) > 0) {
        rc = err_set("%s: the checkpoint's model/diffusion settings differ from the config: %s",
                     path, diff);
        goto done;
    }
    ckpt_header_free(&h);
    shard *st = tr->state;
    if (ckpt_read(path, &h, st->P, CKPT_ALL, st->params, st->ema, st->adam_m, st->adam_v) != 0) {
        *corrupt = 1;
        ckpt_known_mark(&tr->ckpt_known, path, 0);
        return -1;
    }
    ckpt_known_mark(&tr->ckpt_known, path, 1); /* read whole: it verifies */
    if (h.sections != CKPT_ALL) {
        rc = err_set("%s: training state incomplete (sections 0x%x); cannot resume", path,
                     (unsigned)h.sections);
        goto done;
    }
    /* The data cursor must describe the same stream. */
    uint64_t ep, pos;
    batch_cursor(&tr->bp, h.step, &ep, &pos);
    if (saved.data.format != tr->cfg->data.format || ep != h.data_epoch || pos != h.data_position) {
        rc = err_set("%s: the dataset differs from the one the checkpoint was trained on "
                     "(checkpoint cursor epoch %llu position %llu; with this dataset of %zu "
                     "records and batch %d it would be epoch %llu position %llu)",
                     path, (unsigned long long)h.data_epoch, (unsigned long long)h.data_position,
                     (size_t)tr->dataset_size, tr->cfg->training.batch_size, (unsigned long long)ep,
                     (unsigned long long)pos);
        goto done;
    }
    if (saved.training.batch_size != tr->cfg->training.batch_size ||
        saved.training.seed != tr->cfg->training.seed) {
        rc = err_set("%s: training.batch_size and training.seed must stay the same on resume "
                     "(checkpoint: %d, %llu)", path, saved.training.batch_size,
                     (unsigned long long)saved.training.seed);
        goto done;
    }
    if (config_diff_all(&saved, tr->cfg, diff, sizeof diff) > 0)
        log_info("resume: settings changed since the checkpoint: %s", diff);
    tr->step = h.step;
    tr->ckpt_step = h.step;
    tr->resumed = 1;
    log_info("resumed from %s at step %llu (written by %u rank(s))", path,
             (unsigned long long)h.step, h.world_size);
done:
    ckpt_header_free(&h);
    return rc;
}

static int resume(coordinator *tr, const char *mode) {
    if (strcmp(mode, "none") == 0) {
        char **paths = NULL;
        int n = ckpt_list(tr->cfg->output.dir, &paths);
        ckpt_list_free(paths, n > 0 ? n : 0);
        if (n > 0)
            return err_set("%s already holds %d checkpoint(s); pass --resume auto to continue "
                           "that run, or choose another output.dir",
                           tr->cfg->output.dir, n);
        return 0;
    }
    int corrupt;
    if (strcmp(mode, "auto") != 0) return load_checkpoint(tr, mode, &corrupt);
    char **paths = NULL;
    int n = ckpt_list(tr->cfg->output.dir, &paths);
    if (n < 0) return -1;
    if (n == 0) {
        log_info("resume auto: no checkpoint in %s, starting fresh", tr->cfg->output.dir);
        return 0;
    }
    int rc = -1;
    int foreign = 0;
    for (int i = 0; i < n; i++) {
        if (load_checkpoint(tr, paths[i], &corrupt) == 0) {
            rc = 0;
            break;
        }
        if (!corrupt) {
            /* It verifies, so pruning would keep it, newest by step, and delete
             * this run's checkpoints in its favour: stop instead. */
            err_prefix("resume auto: the newest checkpoint that verifies does not belong to "
                       "this run (choose another output.dir, or resume it with the config it "
                       "was written with): ");
            foreign = 1;
            break;
        }
        log_warn("skipping checkpoint: %s", err_msg());
    }
    if (rc != 0 && !foreign)
        err_set("resume auto: none of the %d checkpoint(s) in %s is usable", n,
                tr->cfg->output.dir);
    ckpt_list_free(paths, n);
    return rc;
}

/* One metrics.jsonl line: each field's JSON text as printed; TensorBoard gets
 * every numeric field as a scalar of the same name, parsed back from that text, so
 * the two files hold the same values. */
#define METRIC_MAX_FIELDS 24
typedef struct {
    int n;
    const char *name[METRIC_MAX_FIELDS];
    char text[METRIC_MAX_FIELDS][40];
} metric_line;

__attribute__((format(printf, 3, 4)))
static void metric_add(metric_line *m, const char *name, const char *fmt, ...) {
    if (m->n == METRIC_MAX_FIELDS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->text[m->n], sizeof m->text[m->n], fmt, ap);
    va_end(ap);
    m->name[m->n++] = name;
}

/* After a failed write the event file is closed; training goes on (metrics.jsonl
 * still has everything). */
void coordinator_tb_failed(coordinator *tr) {
    log_warn("TensorBoard event file %s: %s; no further events are written", tr->tb.path,
             err_msg());
    tfevents_close(&tr->tb);
    tr->tb_on = 0;
}

static void metrics_write(coordinator *tr, const metric_line *m) {
    fprintf(tr->metrics, "{\"step\": %llu", (unsigned long long)tr->step);
    for (int i = 0; i < m->n; i++) fprintf(tr->metrics, ", \"%s\": %s", m->name[i], m->text[i]);
    fprintf(tr->metrics, "}\n");
    fflush(tr->metrics);
    if (!tr->tb_on) return;
    const char *tags[METRIC_MAX_FIELDS];
    double vals[METRIC_MAX_FIELDS];
    int n = 0;
    for (int i = 0; i < m->n; i++) {
        char *end = NULL;
        double v = strtod(m->text[i], &end);
        if (end == m->text[i] || *end) continue; /* null, strings */
        tags[n] = m->name[i];
        vals[n++] = v;
    }
    if (tfevents_scalars(&tr->tb, (int64_t)tr->step, tags, vals, n) != 0 ||
        tfevents_flush(&tr->tb) != 0)
        coordinator_tb_failed(tr);
}

/* "1h02m", "3m05s", "42s" */
static void fmt_duration(char *out, size_t cap, double s) {
    long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(out, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(out, cap, "%lds", t);
}

/* The progress line's tail: time left at this process's pace so far, and the
 * last checkpoint (this process's, or the one it resumed from). */
static void progress_tail(const coordinator *tr, double elapsed, char *out, size_t cap) {
    char eta[32], ago[32];
    uint64_t done = tr->step - tr->step0;
    long left = tr->cfg->training.steps - (long)tr->step;
    fmt_duration(eta, sizeof eta, done && left > 0 ? elapsed / (double)done * (double)left : 0);
    if (tr->t_ckpt > 0) {
        fmt_duration(ago, sizeof ago, now_seconds() - tr->t_ckpt);
        snprintf(out, cap, "  ETA %s  ckpt step %llu %s ago", eta, (unsigned long long)tr->ckpt_step,
                 ago);
    } else if (tr->ckpt_step > 0) {
        snprintf(out, cap, "  ETA %s  ckpt step %llu (resumed)", eta,
                 (unsigned long long)tr->ckpt_step);
    } else {
        snprintf(out, cap, "  ETA %s  no ckpt yet", eta);
    }
}

static void log_metrics(coordinator *tr, const loss_stats *st, double gnorm, double lr, double ips,
                        double elapsed, double bytes_sent, double bytes_raw) {
    double pnorm = sqrt(optim_sum_squares(tr->state->params, tr->state->P));
    double loss = st->n ? st->loss_sum / (double)st->n : 0;
    static const char *const qn[4] = {"q0", "q1", "q2", "q3"};
    metric_line m = {0};
    metric_add(&m, "loss", "%.9g", loss);
    char parts[64] = "";
    if (tr->cfg->model.learn_sigma) { /* L_hybrid's two terms, as they enter it */
        double mse = st->n ? st->mse_sum / (double)st->n : 0;
        double vb = st->n ? st->vb_sum / (double)st->n : 0;
        metric_add(&m, "mse", "%.9g", mse);
        metric_add(&m, "vb", "%.9g", vb);
        snprintf(parts, sizeof parts, " (mse %.5f vb %.5f)", mse, vb);
    }
    for (int i = 0; i < 4; i++) {
        if (st->q_count[i])
            metric_add(&m, qn[i], "%.9g", st->q_sum[i] / (double)st->q_count[i]);
        else
            metric_add(&m, qn[i], "null");
    }
    metric_add(&m, "grad_norm", "%.9g", gnorm);
    metric_add(&m, "param_norm", "%.9g", pnorm);
    metric_add(&m, "lr", "%.9g", lr);
    metric_add(&m, "images_per_s", "%.4g", ips);
    metric_add(&m, "elapsed", "%.3f", elapsed);
    char wire[96] = "", tail[128];
    if (bytes_raw > 0) {
        metric_add(&m, "bytes_per_step", "%.0f", bytes_sent);
        metric_add(&m, "compression", "%.4g", bytes_raw / bytes_sent);
        snprintf(wire, sizeof wire, "  %.2f MB/step sent (%.2fx)", bytes_sent / 1e6,
                 bytes_raw / bytes_sent);
    }
    metrics_write(tr, &m);
    progress_tail(tr, now_seconds() - tr->t_start, tail, sizeof tail);
    fprintf(stderr, "step %llu/%ld  loss %.5f%s  grad_norm %.3f  lr %.3g  %.1f img/s  %.0f s%s%s\n",
            (unsigned long long)tr->step, tr->cfg->training.steps, loss, parts, gnorm, lr, ips,
            elapsed, wire, tail);
}

/* training.eval_every: bits/dim of the EMA weights on the first training.eval_images
 * images of data.eval_path, the unbiased strided estimate (training.eval_stride) with
 * offsets and noise keyed on training.seed, so every evaluation sees the same
 * images, timesteps and noise and `ddpm-eval bpd CKPT --images N --stride K --seed
 * SEED` reproduces it. The set is reopened each time (no state kept between calls);
 * the training model runs it without dropout. One more line in metrics.jsonl. */
int coordinator_eval_bpd(coordinator *tr, unet *model, const diffusion *diff) {
    const training_config *tc = &tr->cfg->training;
    int C = tr->cfg->model.in_channels, S = tr->cfg->model.image_size;
    double t0 = now_seconds();
    dataset *ds;
    if (dataset_open(&ds, tr->cfg->data.format, tr->cfg->data.eval_path, S, C) != 0)
        return err_prefix("data.eval_path: ");
    size_t n = dataset_size(ds) < (size_t)tc->eval_images ? dataset_size(ds) : (size_t)tc->eval_images;
    size_t D = (size_t)C * S * S;
    uint8_t *u8 = xmalloc(n * D + 1);
    uint64_t *ids = xcalloc(n + 1, sizeof *ids);
    int bad = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        bad = dataset_get(ds, i, u8 + i * D) != 0;
        ids[i] = i;
    }
    dataset_close(ds);
    if (bad) {
        free(u8);
        free(ids);
        return err_prefix("data.eval_path: ");
    }
    bpd_result r;
    bpd_config bc = {diff, (int)tr->cfg->diffusion.sampling_var, 1, tc->eval_stride,
                     BPD_ESTIMATE_UNBIASED, tc->seed};
    int rc = n == 0 ? err_set("data.eval_path %s holds no images", tr->cfg->data.eval_path)
                    : bpd_result_init(&r, diff->T);
    if (rc == 0) {
        rc = bpd_evaluate_u8(model, tr->state->ema, &bc, u8, ids, NULL, (int)n, C, S, &r, NULL, NULL,
                             NULL);
        if (rc == 0) {
            double ni = r.scalars[BPD_S_IMAGES], secs = now_seconds() - t0;
            metric_line m = {0};
            metric_add(&m, "eval_bpd", "%.9g", bpd_result_mean(&r));
            metric_add(&m, "eval_bpd_stderr", "%.9g", bpd_result_stderr(&r));
            metric_add(&m, "eval_decoder", "%.9g", r.scalars[BPD_S_DECODER] / ni);
            metric_add(&m, "eval_prior", "%.9g", r.scalars[BPD_S_PRIOR] / ni);
            metric_add(&m, "eval_images", "%zu", n);
            metric_add(&m, "eval_stride", "%d", tc->eval_stride);
            metric_add(&m, "eval_weights", "\"ema\"");
            metric_add(&m, "eval_seconds", "%.3f", secs);
            metrics_write(tr, &m);
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

/* --init-from: a new run (step 0, fresh Adam, its own data order) from given
 * weights; the model section must be the config's (weights_init_from). */
static int init_from(coordinator *c, const coordinator_opts *o) {
    if (!o->init_from) return 0;
    if (c->resumed) {
        log_info("--init-from %s ignored: resuming this run from its own checkpoint (step %llu)",
                 o->init_from, (unsigned long long)c->step);
        return 0;
    }
    shard *st = c->state;
    if (weights_init_from(o->init_from, o->init_which, c->model, c->cfg, st->params) != 0)
        return err_prefix("--init-from: ");
    memcpy(st->ema, st->params, st->P * sizeof(float));
    log_info("initialised from %s (params and EMA; a new run: step 0, fresh Adam, data order "
             "and schedule from the config)", o->init_from);
    return 0;
}

/* metrics.jsonl (without the lines of steps after the one this run starts from:
 * it logs them again) and a new TensorBoard event file that starts with a
 * SessionLog START at this run's first step, for the same reason, and the config. */
static int open_logs(coordinator *c) {
    const config *cfg = c->cfg;
    char mpath[CONFIG_PATH_MAX + 32];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", cfg->output.dir);
    long dropped = 0;
    if (jsonl_drop_after_step(mpath, c->step, &dropped) != 0) return -1;
    if (dropped)
        log_info("%s: removed %ld line(s) after step %llu (logged after the checkpoint this run "
                 "starts from; they are logged again)", mpath, dropped,
                 (unsigned long long)c->step);
    c->metrics = fopen(mpath, "a");
    if (!c->metrics) return err_set("%s: cannot open for appending: %m", mpath);
    if (!cfg->output.tensorboard) return 0;
    if (tfevents_open(&c->tb, cfg->output.dir) != 0) return -1;
    c->tb_on = 1;
    /* indented by four spaces: a markdown code block, so the text plugin keeps
     * the YAML's lines */
    size_t n = strlen(c->cfg_yaml), lines = 1;
    for (size_t i = 0; i < n; i++) lines += c->cfg_yaml[i] == '\n';
    char *md = xmalloc(n + 4 * lines + 1), *q = md;
    for (const char *p = c->cfg_yaml; *p; p++) {
        if (p == c->cfg_yaml || p[-1] == '\n') q += sprintf(q, "    ");
        *q++ = *p;
    }
    *q = 0;
    int64_t first = (int64_t)c->step + 1;
    if (tfevents_session_start(&c->tb, first) != 0 || tfevents_text(&c->tb, first, "config", md) != 0 ||
        tfevents_flush(&c->tb) != 0)
        coordinator_tb_failed(c);
    free(md);
    log_info("TensorBoard events: %s", c->tb_on ? c->tb.path : "off");
    return 0;
}

int coordinator_init(coordinator *c, const config *cfg, const unet *model, shard *state,
                     uint64_t dataset_size, const char *resume_mode, const coordinator_opts *o) {
    memset(c, 0, sizeof *c);
    const training_config *tc = &cfg->training;
    c->cfg = cfg;
    c->cfg_yaml = config_to_yaml(cfg);
    c->model = model;
    c->state = state;
    c->dataset_size = dataset_size;
    c->lock.fd = -1;
    c->world_size = o->world_size;
    c->servers = o->servers;
    c->workers = o->workers;
    c->grace_s = o->grace_s;
    c->write_opts = o->write_opts;
    c->items = xcalloc((size_t)tc->batch_size, sizeof *c->items);
    if (mkdir_p(cfg->output.dir) != 0) return -1;
    /* One run owns output.dir, for the whole run: docs/slurm.md */
    runlock_opts lo = {.job_id = o->job_id, .force = o->force_unlock};
    if (runlock_acquire(&c->lock, cfg->output.dir, &lo) != 0) return -1;
    if (c->lock.note[0]) log_warn("run lock %s: %s", c->lock.path, c->lock.note);
    if (batch_planner_init(&c->bp, tc->seed, dataset_size, tc->batch_size, cfg->diffusion.timesteps,
                           tc->t_sampler, cfg->data.random_flip) != 0)
        return -1;
    unet_init(model, state->params, tc->seed);
    memcpy(state->ema, state->params, state->P * sizeof(float));
    if (resume(c, resume_mode) != 0 || init_from(c, o) != 0) return -1;
    c->step0 = c->step;
    c->unet_opt = o->unet_opt;
    if (open_logs(c) != 0) return -1;
    c->t_start = c->t_window = now_seconds();
    return 0;
}

void coordinator_free(coordinator *c) {
    if (c->metrics) fclose(c->metrics);
    if (c->tb_on) tfevents_close(&c->tb);
    unet_free(c->sample_model);
    runlock_release(&c->lock);
    batch_planner_free(&c->bp);
    ckpt_known_free(&c->ckpt_known);
    free(c->items);
    free(c->cfg_yaml);
    memset(c, 0, sizeof *c);
}

void coordinator_plan(coordinator *c) { batch_plan(&c->bp, c->step, c->items); }

int coordinator_check_loss(const coordinator *c, const loss_stats *st) {
    double loss = st->n ? st->loss_sum / (double)st->n : NAN;
    if (!isfinite(loss) || st->n != c->cfg->training.batch_size)
        return err_set("step %llu: loss %g over %ld samples (expected %d); stopping, the last "
                       "checkpoint is intact",
                       (unsigned long long)c->step, loss, st->n, c->cfg->training.batch_size);
    return 0;
}

void coordinator_log_step(coordinator *c, const loss_stats *st, double gnorm, double bytes_sent,
                          double bytes_raw) {
    c->window_images += (uint64_t)c->cfg->training.batch_size;
    if (!cadence_after_step(&c->cfg->training, c->step).log) return;
    double now = now_seconds();
    /* the learning rate of the update just made (step counted before it) */
    double lr = optim_lr(&c->state->oc, c->step - 1);
    log_metrics(c, st, gnorm, lr, (double)c->window_images / (now - c->t_window),
                now - c->t_start, bytes_sent, bytes_raw);
    c->t_window = now;
    c->window_images = 0;
}
