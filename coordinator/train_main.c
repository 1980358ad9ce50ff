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
#include "common/ckpt/runlock.h"
#include "common/config/config.h"
#include "common/core/blas_setup.h"
#include "common/core/util.h"
#include "common/data/dataset.h"
#include "common/diffusion/diffusion.h"
#include "common/env/env_opts.h"
#include "common/io/tensor_file.h"
#include "common/model/unet.h"
#include "common/optim/optim.h"
#include "common/train/batch.h"
#include "common/train/grad.h"
#include "dist.h"
#include "trainer.h"

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

int main(int argc, char **argv) {
    blas_setup(argv); /* may re-exec, which resets handlers: install them after it */
    stop_install();
    const char *cfg_path = NULL, *resume_mode = "none", *dump_path = NULL;
    int summary = 0, n_over = 0, force_unlock = 0;
    double grace_s = getenv("SLURM_JOB_ID") ? SLURM_DEFAULT_GRACE_S : 0;
    const char **overrides = xcalloc((size_t)argc, sizeof *overrides);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--summary")) {
            summary = 1;
        } else if (!strcmp(a, "--force-unlock")) {
            force_unlock = 1;
        } else if (!strcmp(a, "--resume") && i + 1 < argc) {
            resume_mode = argv[++i];
        } else if (!strcmp(a, "--grace-time") && i + 1 < argc) {
            char *end = NULL;
            grace_s = strtod(argv[++i], &end);
            if (!end || *end || end == argv[i] || !(grace_s >= 0) || grace_s > 1e7) {
                fprintf(stderr, "ddpm-train: --grace-time: '%s' is not a number of seconds "
                                "(0 or more)\n", argv[i]);
                return EXIT_USAGE;
            }
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
        unet_options opt = unet_options_default();
        unet *m = env_unet_options(&opt) == 0 ? unet_create(&tr.cfg.model, micro, 1, &opt) : NULL;
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
    /* Again, in case MPI_Init replaced a handler. A signal never kills the run
     * outright: it stops at a step boundary (one that comes during set-up stops the
     * run before its first step). */
    stop_install();
    int world = 1, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int code = EXIT_OK;
    dist_layout d;
    memset(&d, 0, sizeof d);
    int distributed = world > 1;
    /* Roles: one process does everything; otherwise rank 0 coordinates, ranks below
     * distributed.servers are server shards and the rest are workers. */
    int is_coord = rank == 0;
    int is_worker = !distributed || rank >= tr.cfg.distributed.servers;
    int is_server = !distributed || rank < tr.cfg.distributed.servers;
    tr.cfg_yaml = config_to_yaml(&tr.cfg);
    tr.world_size = (uint32_t)world;
    tr.servers = distributed ? (uint32_t)tr.cfg.distributed.servers : 1;
    tr.workers = distributed ? (uint32_t)(world - tr.cfg.distributed.servers) : 1;
    int ranks_on_node = 1;
    if (distributed) {
        MPI_Comm node;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
        MPI_Comm_size(node, &ranks_on_node);
        MPI_Comm_free(&node);
    }
    int threads = blas_set_threads(tc->threads, ranks_on_node);
    if (is_coord)
        log_info("OpenBLAS kernel %s (%s), %d thread(s) per rank, %d rank(s) on this node",
                 blas_kernel_name(), blas_kernel_origin(), threads, ranks_on_node);
    if (distributed && tc->eval_every > 0) {
        if (is_coord)
            fprintf(stderr, "ddpm-train: training.eval_every runs on a single process only; in a "
                            "distributed run evaluate the checkpoints with `mpirun ddpm-eval bpd`, "
                            "which spreads the images over the ranks\n");
        MPI_Finalize();
        return EXIT_USAGE;
    }
    tr.grace_s = grace_s;
    if (is_coord && getenv("SLURM_JOB_ID")) {
        const char *rc = getenv("SLURM_RESTART_COUNT");
        log_info("Slurm job %s, restart count %s, %s task(s), %s CPU(s) per task; grace time "
                 "after SIGTERM %g s",
                 getenv("SLURM_JOB_ID"), rc ? rc : "0",
                 getenv("SLURM_NTASKS") ? getenv("SLURM_NTASKS") : "?",
                 getenv("SLURM_CPUS_PER_TASK") ? getenv("SLURM_CPUS_PER_TASK") : "?", grace_s);
    }
    if (distributed && tr.cfg.distributed.servers >= world) {
        if (is_coord)
            fprintf(stderr, "ddpm-train: distributed.servers is %d but only %d ranks were "
                            "started: ranks = server shards + workers, with at least one worker\n",
                    tr.cfg.distributed.servers, world);
        MPI_Finalize();
        return EXIT_USAGE;
    }
    /* Set-up; any rank's failure stops every rank (no rank waits forever). */
    int ok = 1;
    if (is_coord && mkdir_p(tr.cfg.output.dir) != 0) ok = 0;
    /* One run owns output.dir (rank 0, for the whole run): docs/slurm.md */
    runlock lock = {.fd = -1};
    if (ok && is_coord) {
        runlock_opts lo = {.job_id = getenv("SLURM_JOB_ID"), .force = force_unlock};
        if (runlock_acquire(&lock, tr.cfg.output.dir, &lo) != 0) ok = 0;
        else if (lock.note[0]) log_warn("run lock %s: %s", lock.path, lock.note);
    }
    if (ok && (is_coord || is_worker)) {
        if (dataset_open_progress(&tr.ds, tr.cfg.data.format, tr.cfg.data.path, tr.cfg.model.image_size,
                                  tr.cfg.model.in_channels, log_decode_progress, NULL) != 0)
            ok = 0;
        else
            tr.dataset_size = dataset_size(tr.ds);
        if (ok && is_coord)
            log_info("dataset %s: %llu images", tr.cfg.data.path,
                     (unsigned long long)tr.dataset_size);
        if (ok && is_coord && dataset_warning(tr.ds))
            log_warn("dataset %s: %s", tr.cfg.data.path, dataset_warning(tr.ds));
    }
    if (ok && diffusion_init(&tr.diff, tr.cfg.diffusion.schedule, tr.cfg.diffusion.timesteps,
                             tr.cfg.diffusion.beta_start, tr.cfg.diffusion.beta_end) != 0)
        ok = 0;
    if (ok) {
        /* servers only need the parameter table: a one-image forward-only model */
        unet_options opt = unet_options_default();
        if (env_unet_options(&opt) != 0) tr.model = NULL;
        else tr.model = is_worker ? unet_create(&tr.cfg.model, micro, 1, &opt)
                                  : unet_create(&tr.cfg.model, 1, 0, &opt);
        if (!tr.model) ok = 0;
    }
    if (ok) {
        tr.P = unet_num_params(tr.model);
        if (is_coord)
            log_info("model: %zu parameters, %.3f GMAC/image forward; %d rank(s): %u server "
                     "shard(s), %u worker(s), codec %s",
                     tr.P, unet_forward_macs(tr.model) / 1e9, world, tr.servers, tr.workers,
                     tr.cfg.distributed.codec == CODEC_FP32        ? "fp32"
                     : tr.cfg.distributed.codec == CODEC_FP32_ZSTD ? "fp32_zstd"
                                                                   : "bf16_zstd");
        if (is_worker)
            log_info("rank %d: activations %.1f MiB (micro-batch %d)", rank,
                     (double)unet_activation_bytes(tr.model) / 1048576.0, micro);
        tr.params = xfloats(tr.P);
        tr.grads = xfloats(tr.P);
        if (is_server) {
            tr.adam_m = xfloats(tr.P);
            tr.adam_v = xfloats(tr.P);
            tr.ema = xfloats(tr.P);
        }
        tr.oc = (optim_config){tc->lr, tc->adam_beta1, tc->adam_beta2, tc->adam_eps,
                               tc->warmup_steps, tc->grad_clip, tc->ema_decay};
    }
    if (ok && is_coord) {
        if (batch_planner_init(&tr.bp, tc->seed, tr.dataset_size, tc->batch_size,
                               tr.cfg.diffusion.timesteps, tc->t_sampler,
                               tr.cfg.data.random_flip) != 0)
            ok = 0;
        tr.items = xcalloc((size_t)tc->batch_size, sizeof *tr.items);
    }
    if (ok && is_worker) {
        grad_worker_init(&tr.gw, tr.model, &tr.diff, tr.ds, tc->seed, micro,
                         tr.cfg.model.in_channels, tr.cfg.model.image_size);
        if (tr.cfg.data.format == DATA_SHARDS) {
            /* read the next step's records while this one computes; a distributed
             * worker plans the next batch itself to know its next share */
            if (prefetcher_create(&tr.pf, tr.ds) != 0) ok = 0;
            else grad_worker_set_prefetcher(&tr.gw, tr.pf);
            tr.next_items = xcalloc((size_t)tc->batch_size, sizeof *tr.next_items);
            if (ok && !is_coord &&
                batch_planner_init(&tr.bp, tc->seed, tr.dataset_size, tc->batch_size,
                                   tr.cfg.diffusion.timesteps, tc->t_sampler,
                                   tr.cfg.data.random_flip) != 0)
                ok = 0;
        }
    }
    if (ok && is_coord) {
        unet_init(tr.model, tr.params, tc->seed);
        memcpy(tr.ema, tr.params, tr.P * sizeof(float));
        if (trainer_resume(&tr, resume_mode) != 0) ok = 0;
    }
    if (ok && is_coord) {
        char mpath[CONFIG_PATH_MAX + 32];
        snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", tr.cfg.output.dir);
        tr.metrics = fopen(mpath, "a");
        if (!tr.metrics) ok = err_set("%s: cannot open for appending: %m", mpath) + 1;
    }
    if (ok && dump_path) {
        if (distributed) {
            ok = err_set("--dump-batches works on a single process only") + 1;
        } else if (tensor_file_create(&tr.dump, dump_path) != 0) {
            ok = 0;
        } else {
            tr.dumping = 1;
        }
    }
    if (!ok) fprintf(stderr, "ddpm-train: %s%s\n", distributed ? "" : "", err_msg());
    if (distributed) {
        int all_ok = 0;
        MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (!all_ok) {
            code = EXIT_ERROR;
            goto out;
        }
    } else if (!ok) {
        code = EXIT_ERROR;
        goto out;
    }
    if (is_coord)
        log_info("training %s from step %llu to %ld, batch %d, lr %g, output %s", cfg_path,
                 (unsigned long long)tr.step, tc->steps, tc->batch_size, tc->lr,
                 tr.cfg.output.dir);
    if (!distributed) {
        if (train_local(&tr, &code) != 0) goto fail;
        if (tr.dumping && tensor_file_close(&tr.dump) != 0) goto fail;
        goto out;
    }
    if (dist_layout_init(&d, tr.cfg.distributed.servers, tr.P, tr.cfg.distributed.timeout_s) != 0)
        dist_fail(&d);
    /* start or resume: the step and every parameter from rank 0, the shards' state */
    int64_t step0 = (int64_t)tr.step;
    MPI_Bcast(&step0, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    tr.step = (uint64_t)step0;
    if (dist_bcast_params(&d, tr.params, 1) != 0) dist_fail(&d);
    if (is_server && dist_scatter_state(&d, &tr) != 0) dist_fail(&d);
    if (is_server) {
        if (dist_serve(&tr, &d, &code) != 0) dist_fail(&d);
    } else {
        if (dist_work(&tr, &d, &code) != 0) dist_fail(&d);
    }
    /* mpirun ends the whole job when one rank exits non-zero (EXIT_PREEMPTED): no
     * rank may leave before rank 0's final checkpoint is on disk. A checkpoint takes
     * seconds to minutes; past an hour something else is wrong. */
    dist_final_barrier(&d, tr.cfg.distributed.timeout_s > 3600 ? tr.cfg.distributed.timeout_s
                                                               : 3600);
    goto out;
fail:
    fprintf(stderr, "ddpm-train: %s\n", err_msg());
    code = EXIT_ERROR;
out:
    if (tr.metrics) fclose(tr.metrics);
    if (tr.pf) {
        uint64_t hits, misses;
        prefetcher_stats(tr.pf, &hits, &misses);
        log_info("prefetch: %llu records read ahead, %llu read on demand",
                 (unsigned long long)hits, (unsigned long long)misses);
        prefetcher_free(tr.pf);
    }
    free(tr.next_items);
    grad_worker_free(&tr.gw);
    batch_planner_free(&tr.bp);
    free(tr.items);
    free(tr.params); free(tr.grads); free(tr.adam_m); free(tr.adam_v); free(tr.ema);
    unet_free(tr.model);
    if (tr.diff.betas) diffusion_free(&tr.diff);
    if (tr.ds) dataset_close(tr.ds);
    free(tr.cfg_yaml);
    dist_layout_free(&d);
    ckpt_known_free(&tr.ckpt_known);
    runlock_release(&lock);
    MPI_Finalize();
    return code;
}
