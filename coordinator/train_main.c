/* ddpm-train: Algorithm 1 of Ho et al. (2020).
 *
 *   ddpm-train CONFIG [section.key=value ...] [--resume auto|none|PATH] [--init-from FILE]
 *              [--summary]
 *
 * One MPI program; a lone process (no mpirun) runs as an MPI singleton and does
 * every role: it plans each global batch, computes the gradients, applies
 * clip -> Adam -> EMA, logs metrics and writes checkpoints. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "common/ckpt/ckpt_model.h"
#include "common/config/config.h"
#include "common/core/blas_setup.h"
#include "common/core/util.h"
#include "common/data/dataset.h"
#include "common/diffusion/diffusion.h"
#include "common/dist/dist.h"
#include "common/env/env_opts.h"
#include "common/io/tensor_file.h"
#include "common/model/unet.h"
#include "common/wire/wire.h"
#include "coordinator/coordinator.h"
#include "coordinator/local.h"
#include "coordinator/server.h"
#include "coordinator/shard.h"
#include "worker/worker.h"

/* Slurm's KillWait default: SIGTERM to SIGKILL when nothing else is known. */
#define SLURM_DEFAULT_GRACE_S 30.0

/* Image folders are decoded at open: dataset_open_progress reports, we log. */
static void log_decode_progress(void *ctx, const char *path, size_t done, size_t total, double seconds) {
    (void)ctx;
    log_info("%s: decoded %zu/%zu images (%.0f/s)", path, done, total, (double)done / (seconds + 1e-9));
}

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
            "  --init-from FILE     start a new run (step 0, fresh Adam) from the weights of a\n"
            "                       checkpoint or a safetensors file (ddpm-export, PyTorch);\n"
            "                       everything but the model section may differ from the run\n"
            "                       that made them. With --resume auto, a run that has\n"
            "                       checkpoints of its own resumes instead (docs/export.md)\n"
            "  --init-weights W     ema (default) | params: which weights of a checkpoint\n"
            "  --summary            print the model's parameter table and exit\n"
            "  --force-unlock       take output.dir's run lock whatever holds it (only when\n"
            "                       the holder named in the refusal is certainly dead)\n"
            "  --grace-time SEC     seconds from SIGTERM to SIGKILL (Slurm: KillWait, plus\n"
            "                       the partition's GraceTime on preemption); a final\n"
            "                       checkpoint after SIGTERM is written only if it fits.\n"
            "                       Default %g inside a Slurm job, else no limit\n"
            "  --dump-batches FILE  write each step's x0, t, eps, loss and the final\n"
            "                       parameters and EMA to FILE (reference tests)\n"
            "  -h, --help           this text\n"
            "Signals take effect at the next step boundary: SIGINT checkpoints and exits 0\n"
            "(a second SIGINT ends the program at once);\n"
            "SIGTERM (or SIGUSR2, as mpirun relays it) checkpoints if that fits in the grace\n"
            "time and exits 0; SIGUSR1 checkpoints and exits %d (requeue me). A run that\n"
            "has reached training.steps exits 0. docs/slurm.md has the details.\n",
            SLURM_DEFAULT_GRACE_S, EXIT_PREEMPTED);
}

/* The command line. */
typedef struct {
    const char *cfg_path, *resume_mode, *dump_path, *init_from;
    int summary, force_unlock, init_which;
    double grace_s;
    const char **overrides;
    int n_over;
} train_args;

/* -1: go on; else the exit code (help, or a usage error already printed). */
static int parse_args(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    a->resume_mode = "none";
    a->init_which = CKPT_EMA;
    a->grace_s = env_slurm_job().job_id ? SLURM_DEFAULT_GRACE_S : 0;
    a->overrides = xcalloc((size_t)argc, sizeof *a->overrides);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(s, "--summary")) {
            a->summary = 1;
        } else if (!strcmp(s, "--force-unlock")) {
            a->force_unlock = 1;
        } else if (!strcmp(s, "--resume") && i + 1 < argc) {
            a->resume_mode = argv[++i];
        } else if (!strcmp(s, "--init-from") && i + 1 < argc) {
            a->init_from = argv[++i];
        } else if (!strcmp(s, "--init-weights") && i + 1 < argc) {
            if (!(a->init_which = ckpt_weights_parse(argv[++i]))) {
                fprintf(stderr, "ddpm-train: --init-weights: '%s' is not ema or params\n", argv[i]);
                return EXIT_USAGE;
            }
        } else if (!strcmp(s, "--grace-time") && i + 1 < argc) {
            char *end = NULL;
            a->grace_s = strtod(argv[++i], &end);
            if (!end || *end || end == argv[i] || !(a->grace_s >= 0) || a->grace_s > 1e7) {
                fprintf(stderr, "ddpm-train: --grace-time: '%s' is not a number of seconds "
                                "(0 or more)\n", argv[i]);
                return EXIT_USAGE;
            }
        } else if (!strcmp(s, "--dump-batches") && i + 1 < argc) {
            a->dump_path = argv[++i];
        } else if (s[0] == '-') {
            fprintf(stderr, "ddpm-train: unknown option '%s'\n", s);
            usage(stderr);
            return EXIT_USAGE;
        } else if (strchr(s, '=')) {
            a->overrides[a->n_over++] = s;
        } else if (!a->cfg_path) {
            a->cfg_path = s;
        } else {
            fprintf(stderr, "ddpm-train: unexpected argument '%s'\n", s);
            return EXIT_USAGE;
        }
    }
    if (a->init_from && strcmp(a->resume_mode, "auto") && strcmp(a->resume_mode, "none")) {
        fprintf(stderr, "ddpm-train: --init-from starts a new run; it goes with --resume auto or "
                        "none, not with --resume PATH\n");
        return EXIT_USAGE;
    }
    if (a->cfg_path) return -1;
    usage(stderr);
    return EXIT_USAGE;
}

/* The config file, its overrides, validated. */
static int load_config(const train_args *a, config *cfg) {
    if (config_load_file(cfg, a->cfg_path) != 0) return -1;
    for (int i = 0; i < a->n_over; i++)
        if (config_override(cfg, a->overrides[i]) != 0) return -1;
    return config_validate(cfg);
}

static int print_summary(const config *cfg, int micro) {
    unet_options opt = unet_options_default();
    unet *m = env_unet_options(&opt) == 0 ? unet_create(&cfg->model, micro, 1, &opt) : NULL;
    if (!m) return -1;
    unet_print_summary(m, &cfg->model, stdout);
    unet_free(m);
    return 0;
}

/* Everything this process runs: the roles it has, each with its own state. */
typedef struct {
    config cfg;
    int rank, world, distributed, micro;
    int is_coord, is_worker, is_server;
    dataset *ds;               /* coordinator and workers */
    uint64_t dataset_size;
    diffusion diff;
    unet *model;               /* workers: the training model; servers: its parameter table */
    dist_layout d;
    shard sh;                  /* servers */
    coordinator coord;         /* rank 0 */
    worker wk;                 /* workers */
    tensor_file dump;
    int dumping, have_shard, have_coord, have_worker;
} train_proc;

/* Roles: one process does everything; otherwise rank 0 coordinates and is server
 * shard 0, ranks below distributed.servers are server shards, the rest workers. */
static void assign_roles(train_proc *p) {
    MPI_Comm_size(MPI_COMM_WORLD, &p->world);
    MPI_Comm_rank(MPI_COMM_WORLD, &p->rank);
    p->distributed = p->world > 1;
    int serves = dist_is_server(p->rank, p->cfg.distributed.servers);
    p->is_coord = p->rank == 0;
    p->is_worker = !p->distributed || !serves;
    p->is_server = !p->distributed || serves;
    const training_config *tc = &p->cfg.training;
    p->micro = tc->micro_batch > 0 ? tc->micro_batch : tc->batch_size;
}

static void log_start(const train_proc *p, double grace_s) {
    int ranks_on_node = 1;
    if (p->distributed) {
        MPI_Comm node;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, p->rank, MPI_INFO_NULL, &node);
        MPI_Comm_size(node, &ranks_on_node);
        MPI_Comm_free(&node);
    }
    int threads = blas_set_threads(p->cfg.training.threads, ranks_on_node);
    if (!p->is_coord) return;
    log_info("OpenBLAS kernel %s (%s), %d thread(s) per rank, %d rank(s) on this node",
             blas_kernel_name(), blas_kernel_origin(), threads, ranks_on_node);
    env_slurm job = env_slurm_job();
    if (job.job_id)
        log_info("Slurm job %s, restart count %s, %s task(s), %s CPU(s) per task; grace time "
                 "after SIGTERM %g s", job.job_id, job.restart_count ? job.restart_count : "0",
                 job.ntasks ? job.ntasks : "?", job.cpus_per_task ? job.cpus_per_task : "?",
                 grace_s);
}

/* Checks that need no set-up: EXIT_USAGE (printed by rank 0) or -1. */
static int check_layout(const train_proc *p) {
    if (p->distributed && p->cfg.training.eval_every > 0) {
        if (p->is_coord)
            fprintf(stderr, "ddpm-train: training.eval_every runs on a single process only; in a "
                            "distributed run evaluate the checkpoints with `mpirun ddpm-eval bpd`, "
                            "which spreads the images over the ranks\n");
        return EXIT_USAGE;
    }
    if (p->distributed && dist_check_servers(p->cfg.distributed.servers, p->world) != 0) {
        if (p->is_coord) fprintf(stderr, "ddpm-train: %s\n", err_msg());
        return EXIT_USAGE;
    }
    return -1;
}

static int open_data(train_proc *p) {
    const config *c = &p->cfg;
    if (dataset_open_progress(&p->ds, c->data.format, c->data.path, c->model.image_size,
                              c->model.in_channels, log_decode_progress, NULL) != 0)
        return -1;
    p->dataset_size = dataset_size(p->ds);
    if (p->is_coord) {
        log_info("dataset %s: %llu images", c->data.path, (unsigned long long)p->dataset_size);
        if (dataset_warning(p->ds)) log_warn("dataset %s: %s", c->data.path, dataset_warning(p->ds));
    }
    if (c->data.labels_path[0] && dataset_load_labels(p->ds, c->data.labels_path) != 0) return -1;
    if (c->model.num_classes > 0 && dataset_check_labels(p->ds, c->model.num_classes) != 0)
        return -1;
    if (p->is_coord && c->model.num_classes > 0)
        log_info("class-conditional: %d classes, label dropout %g (null label %d)",
                 c->model.num_classes, c->training.label_dropout, c->model.num_classes);
    return 0;
}

/* An image folder's classes (file-name prefixes): logged, and recorded in the run
 * folder as classes.txt, line k the name of class k (what ddpm-sample --class K draws). */
static int record_classes(const train_proc *p) {
    size_t n = 0;
    const char *const *names = dataset_class_names(p->ds, &n);
    if (!names || p->cfg.model.num_classes == 0) return 0;
    char path[CONFIG_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/classes.txt", p->cfg.output.dir);
    FILE *f = fopen(path, "w");
    if (!f) return err_set("%s: cannot write: %s", path, strerror(errno));
    for (size_t k = 0; k < n; k++) {
        log_info("class %zu: '%s'", k, names[k]);
        fprintf(f, "%s\n", names[k]);
    }
    if (fclose(f) != 0) return err_set("%s: write error", path);
    log_info("class names (file-name prefixes, sorted) recorded in %s", path);
    return 0;
}

/* The model: workers train it; servers only need its parameter table (a
 * one-image forward-only model). */
static int build_model(train_proc *p) {
    const config *c = &p->cfg;
    unet_options opt = unet_options_default();
    if (env_unet_options(&opt) != 0) return -1;
    opt.precision = c->training.precision;
    p->model = p->is_worker ? unet_create(&c->model, p->micro, 1, &opt)
                            : unet_create(&c->model, 1, 0, &opt);
    if (!p->model) return -1;
    size_t P = unet_num_params(p->model);
    if (p->is_coord)
        log_info("model: %zu parameters, %.3f GMAC/image forward; %d rank(s): %u server "
                 "shard(s), %u worker(s), codec %s",
                 P, unet_forward_macs(p->model) / 1e9, p->world,
                 p->distributed ? (unsigned)c->distributed.servers : 1u,
                 p->distributed ? (unsigned)(p->world - c->distributed.servers) : 1u,
                 wire_codec_name(c->distributed.codec));
    if (p->is_worker)
        log_info("rank %d: activations %.1f MiB (micro-batch %d)", p->rank,
                 (double)unet_activation_bytes(p->model) / 1048576.0, p->micro);
    if (p->is_coord && p->is_worker) {
        char plans[2048];
        unet_describe_plans(p->model, plans, sizeof plans);
        log_info("%s", plans);
    }
    if (!p->distributed) return 0;
    if (dist_layout_init(&p->d, c->distributed.servers, P, c->distributed.timeout_s) != 0)
        return -1;
    return env_dist_faults(&p->d.faults);
}

static int start_roles(train_proc *p, const train_args *a) {
    const config *c = &p->cfg;
    const training_config *tc = &c->training;
    size_t P = unet_num_params(p->model);
    if (p->is_server) {
        optim_config oc = {tc->lr, tc->adam_beta1, tc->adam_beta2, tc->adam_eps, tc->warmup_steps,
                           tc->grad_clip, tc->ema_decay};
        shard_init(&p->sh, P, &oc, p->distributed ? &p->d : NULL);
        p->have_shard = 1;
    }
    if (p->is_coord) {
        coordinator_opts o = {.job_id = env_slurm_job().job_id, .force_unlock = a->force_unlock,
                              .grace_s = a->grace_s, .world_size = (uint32_t)p->world,
                              .servers = p->distributed ? (uint32_t)c->distributed.servers : 1,
                              .workers = p->distributed ? (uint32_t)(p->world - c->distributed.servers) : 1,
                              .init_from = a->init_from, .init_which = a->init_which};
        if (env_ckpt_test_hook(&o.write_opts) != 0) return -1;
        o.unet_opt = unet_options_default();
        if (env_unet_options(&o.unet_opt) != 0) return -1;
        p->have_coord = 1;
        if (coordinator_init(&p->coord, c, p->model, &p->sh, p->dataset_size, a->resume_mode, &o) != 0)
            return -1;
    }
    if (p->is_worker) {
        /* a single process's worker computes over the shard's buffers */
        p->have_worker = 1;
        if (worker_init(&p->wk, c, p->ds, p->dataset_size, p->model, &p->diff, p->micro,
                        p->distributed ? NULL : p->sh.params, p->distributed ? NULL : p->sh.grads,
                        p->distributed ? NULL : &p->coord.bp) != 0)
            return -1;
        p->wk.timeline = env_timeline();
    }
    if (a->dump_path) {
        if (p->distributed) return err_set("--dump-batches works on a single process only");
        if (tensor_file_create(&p->dump, a->dump_path) != 0) return -1;
        p->dumping = 1;
    }
    return 0;
}

/* Set-up on every rank; any rank's failure stops every rank (none waits forever). */
static int set_up(train_proc *p, const train_args *a) {
    int ok = (!(p->is_coord || p->is_worker) || open_data(p) == 0) &&
             diffusion_init(&p->diff, p->cfg.diffusion.schedule, p->cfg.diffusion.timesteps,
                            p->cfg.diffusion.beta_start, p->cfg.diffusion.beta_end) == 0 &&
             build_model(p) == 0 && start_roles(p, a) == 0 &&
             (!p->is_coord || record_classes(p) == 0);
    if (!ok) fprintf(stderr, "ddpm-train: %s\n", err_msg());
    int all_ok = ok;
    if (p->distributed) MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all_ok ? 0 : -1;
}

/* Start or resume: the step and every parameter from rank 0, the shards' state;
 * then each role's loop, and a wait for rank 0's final checkpoint. */
static int run_distributed(train_proc *p) {
    dist_layout *d = &p->d;
    int64_t step0 = p->is_coord ? (int64_t)p->coord.step : 0;
    /* within distributed.timeout_s, naming a rank that is gone, like every later wait */
    dist_reqs q;
    memset(&q, 0, sizeof q);
    MPI_Ibcast(&step0, 1, MPI_INT64_T, 0, MPI_COMM_WORLD, dist_reqs_add(&q, DIST_ALL_RANKS, -1));
    if (dist_reqs_wait(d, &q, "start step") != 0) dist_fail(d);
    dist_reqs_free(&q);
    float *params = p->is_server ? p->sh.params : p->wk.params;
    if (dist_bcast_params(d, params, 1) != 0) dist_fail(d);
    int code = EXIT_OK;
    if (p->is_server) {
        float *bufs[3];
        if (dist_scatter_state(d, bufs, shard_state_buffers(&p->sh, bufs)) != 0) dist_fail(d);
        server sv = {&p->cfg, &p->sh, p->is_coord ? &p->coord : NULL, (uint64_t)step0, &p->diff};
        server_run(&sv, d, &code);
    } else {
        worker_run(&p->wk, d, (uint64_t)step0, &code);
    }
    /* mpirun ends the whole job when one rank exits non-zero (EXIT_PREEMPTED): no
     * rank may leave before rank 0's final checkpoint is on disk. A checkpoint takes
     * seconds to minutes; past an hour something else is wrong. */
    double t = p->cfg.distributed.timeout_s;
    dist_final_barrier(d, t > 3600 ? t : 3600);
    return code;
}

static void tear_down(train_proc *p) {
    if (p->have_worker) worker_free(&p->wk);
    if (p->have_coord) coordinator_free(&p->coord);
    if (p->have_shard) shard_free(&p->sh);
    unet_free(p->model);
    if (p->diff.betas) diffusion_free(&p->diff);
    if (p->ds) dataset_close(p->ds);
    dist_layout_free(&p->d);
}

int main(int argc, char **argv) {
    blas_setup(argv); /* may re-exec, which resets handlers: install them after it */
    stop_install();
    train_args a;
    int code = parse_args(argc, argv, &a);
    if (code >= 0) return code;
    static train_proc p;
    if (load_config(&a, &p.cfg) != 0) {
        fprintf(stderr, "ddpm-train: %s\n", err_msg());
        return EXIT_ERROR;
    }
    free(a.overrides);
    if (a.summary) {
        const training_config *tc = &p.cfg.training;
        if (print_summary(&p.cfg, tc->micro_batch > 0 ? tc->micro_batch : tc->batch_size) == 0)
            return EXIT_OK;
        fprintf(stderr, "ddpm-train: %s\n", err_msg());
        return EXIT_ERROR;
    }
    env_mpi_singleton_as_root();
    MPI_Init(&argc, &argv);
    /* Again, in case MPI_Init replaced a handler. A signal never kills the run
     * outright: it stops at a step boundary (one that comes during set-up stops the
     * run before its first step). */
    stop_install();
    assign_roles(&p);
    log_start(&p, a.grace_s);
    code = check_layout(&p);
    if (code < 0 && set_up(&p, &a) != 0) code = EXIT_ERROR;
    if (code < 0) {
        if (p.is_coord)
            log_info("training %s from step %llu to %ld, batch %d, lr %g, output %s", a.cfg_path,
                     (unsigned long long)p.coord.step, p.cfg.training.steps,
                     p.cfg.training.batch_size, p.cfg.training.lr, p.cfg.output.dir);
        if (p.is_coord) p.coord.t_start = p.coord.t_window = now_seconds();
        if (p.distributed) {
            code = run_distributed(&p);
        } else if (local_run(&p.coord, &p.wk, &p.diff, p.dumping ? &p.dump : NULL, &code) != 0 ||
                   (p.dumping && tensor_file_close(&p.dump) != 0)) {
            fprintf(stderr, "ddpm-train: %s\n", err_msg());
            code = EXIT_ERROR;
        }
    }
    tear_down(&p);
    MPI_Finalize();
    return code;
}
