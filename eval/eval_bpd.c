/* ddpm-eval bpd: the variational bound in bits/dim (common/eval/bpd.h) over a
 * held-out set, images spread over MPI ranks (image i on rank i mod world), the
 * per-timestep sums added on rank 0 with MPI_Reduce. A lone process runs as an MPI
 * singleton. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

#include "common/ckpt/ckpt_model.h"
#include "common/config/config.h"
#include "common/core/blas_setup.h"
#include "common/core/progress.h"
#include "common/core/util.h"
#include "common/data/dataset.h"
#include "common/diffusion/diffusion.h"
#include "common/env/env_opts.h"
#include "common/eval/bpd.h"
#include "common/io/npz_array.h"
#include "common/model/unet.h"
#include "eval/eval.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ddpm-eval bpd CHECKPOINT [options]\n"
            "  --images N            images to evaluate (default: all of the set from --first)\n"
            "  --first I             first image index (default 0)\n"
            "  --stride K            evaluate every K-th timestep (default 1: all T terms, exact)\n"
            "  --estimate E          unbiased (default; random offset per image, weight K) |\n"
            "                        trapezoid (fixed grid, piecewise-linear sum)\n"
            "  --out PATH            per-timestep terms as CSV\n"
            "  --data PATH           images: a .npz (uint8 NHWC under arr_0) or a dataset of the\n"
            "                        checkpoint's data.format (default: its data.eval_path)\n"
            "  --labels FILE|set     class-conditional checkpoints: the bound of -log p(x | y)\n"
            "                        with each image's label, from an IDX label file (for IDX or\n"
            "                        .npz images) or 'set' (the labels CIFAR-10, image folders and\n"
            "                        shards carry); without it, the null label (the unconditional\n"
            "                        model that label dropout trained)\n"
            "  --batch B             (image, timestep) pairs per network evaluation (default 32)\n"
            "  --seed S              keys the noise and strided offsets (default 0)\n"
            "  --weights W           ema (default) | params\n"
            "  --variance V          beta | beta_tilde (default: the config's sampling_variance;\n"
            "                        ignored for a model with learned variances)\n"
            "  --no-clip             do not clip the predicted x0 (the authors clip)\n"
            "  --threads N           BLAS threads per rank (default: the cores given)\n"
            "  --precision P         fp32 | bf16 (mixed precision) | trained (default: the\n"
            "                        checkpoint's training.precision)\n"
            "  -q, --quiet           no progress line\n"
            "Run under mpirun to spread the images over ranks.\n");
}

static void show_progress(void *ctx, size_t done, size_t total) {
    progress *p = ctx;
    double frac = total ? (double)done / (double)total : 1;
    progress_update(p, frac, done == total, "bpd: %zu/%zu network evaluations (rank 0), %.0f s, ~%.0f s left",
                    done, total, progress_elapsed(p), progress_left(p, frac));
}

/* The labels of a .npz's `total` images from the IDX label file `path` (exactly
 * `total` of them, each in 0..K-1); *out is the caller's. */
static int npz_labels(const char *path, long total, int K, const char *npz, uint8_t **out) {
    size_t count = 0;
    if (idx_labels_read(path, out, &count) != 0) return -1;
    if ((long)count != total)
        return err_set("%s: holds %zu labels, %s holds %ld images", path, count, npz, total);
    for (size_t i = 0; i < count; i++)
        if ((*out)[i] >= K)
            return err_set("%s: record %zu: label %d is out of range for model.num_classes %d "
                           "(0..%d)", path, i, (*out)[i], K, K - 1);
    return 0;
}

/* Room for this rank's share of n images (every world-th): uint8 CHW, ids and,
 * when asked, labels. */
static void share_alloc(long n, int rank, int world, size_t D, int with_labels, uint8_t **out,
                        uint64_t **ids, int **labels) {
    long mine = (n - rank + world - 1) / world;
    size_t cap = (size_t)(mine > 0 ? mine : 1);
    *out = xmalloc(cap * D);
    *ids = xcalloc(cap, sizeof **ids);
    if (with_labels) *labels = xcalloc(cap, sizeof **labels);
}

/* Loads this rank's share of images [first, first+n) (every world-th) as uint8 CHW,
 * and with labels_src (an IDX label file, or "set": the set's own) their labels
 * (*labels, else NULL). */
static int load_images(const char *path, const char *labels_src, const config *cfg, long first,
                       long *n, int rank, int world, uint8_t **out, uint64_t **ids, int **labels,
                       int *count) {
    int C = cfg->model.in_channels, S = cfg->model.image_size, K = cfg->model.num_classes;
    size_t D = (size_t)C * S * S;
    size_t len = strlen(path);
    *out = NULL;
    *ids = NULL;
    *labels = NULL;
    *count = 0;
    if (len > 4 && strcmp(path + len - 4, ".npz") == 0) {
        if (labels_src && strcmp(labels_src, "set") == 0)
            return err_set("%s: a .npz carries no labels: pass --labels FILE (an IDX label file, "
                           "one label per image)", path);
        npz_reader *r;
        if (npz_reader_open(&r, path, "arr_0") != 0) return -1;
        const int64_t *sh = npz_reader_shape(r);
        int nd = npz_reader_ndim(r);
        int64_t cc = nd == 4 ? sh[3] : 1;
        if (npz_reader_dtype(r) != NPZ_DTYPE_U8 || (nd != 4 && nd != 3) || sh[1] != S ||
            sh[2] != S || cc != C) {
            npz_reader_close(r);
            return err_set("%s: arr_0 must be uint8 images [N][%d][%d][%d] for this model", path,
                           S, S, C);
        }
        /* the reader checked the shape against the file's bytes; counts are int below */
        long total = (long)sh[0];
        if (total > INT_MAX) {
            npz_reader_close(r);
            return err_set("%s: holds %ld images (at most %d)", path, total, INT_MAX);
        }
        if (*n < 0) *n = total - first;
        if (first < 0 || first > total || *n < 1 || *n > total - first) {
            npz_reader_close(r);
            return err_set("%s: holds %ld images; asked for %ld from index %ld", path, total, *n,
                           first);
        }
        uint8_t *lab = NULL;
        if (labels_src && npz_labels(labels_src, total, K, path, &lab) != 0) {
            free(lab);
            npz_reader_close(r);
            return -1;
        }
        share_alloc(*n, rank, world, D, lab != NULL, out, ids, labels);
        uint8_t *img = xmalloc(D);
        int k = 0, rc = 0;
        for (long i = 0; i < first + *n && rc == 0; i++) {
            rc = npz_reader_read(r, img, D);
            if (rc || i < first || (i - first) % world != rank) continue;
            for (int c = 0; c < C; c++)
                for (size_t p = 0; p < (size_t)S * S; p++)
                    (*out)[(size_t)k * D + (size_t)c * S * S + p] = img[p * C + c];
            if (lab) (*labels)[k] = lab[i];
            (*ids)[k++] = (uint64_t)i;
        }
        free(img);
        free(lab);
        npz_reader_close(r);
        *count = k;
        return rc;
    }
    dataset *ds;
    if (dataset_open(&ds, cfg->data.format, path, S, C) != 0) return -1;
    if (dataset_size(ds) > INT_MAX) {
        size_t have = dataset_size(ds);
        dataset_close(ds);
        return err_set("%s: holds %zu images (at most %d)", path, have, INT_MAX);
    }
    long total = (long)dataset_size(ds);
    if (*n < 0) *n = total - first;
    if (first < 0 || first > total || *n < 1 || *n > total - first) {
        dataset_close(ds);
        return err_set("%s: holds %ld images; asked for %ld from index %ld", path, total, *n, first);
    }
    if (labels_src) {
        int rc = strcmp(labels_src, "set") != 0 ? dataset_load_labels(ds, labels_src)
                 : dataset_has_labels(ds)
                     ? 0
                     : err_set("%s: the set carries no labels (IDX images: pass --labels FILE, "
                               "their IDX label file)", path);
        if (rc == 0) rc = dataset_check_labels(ds, K);
        if (rc != 0) {
            dataset_close(ds);
            return -1;
        }
    }
    share_alloc(*n, rank, world, D, labels_src != NULL, out, ids, labels);
    int k = 0;
    int rc = 0;
    for (long i = first + rank; i < first + *n && rc == 0; i += world) {
        rc = dataset_get(ds, (size_t)i, *out + (size_t)k * D);
        if (labels_src) (*labels)[k] = dataset_label(ds, (size_t)i);
        (*ids)[k++] = (uint64_t)i;
    }
    dataset_close(ds);
    *count = k;
    return rc;
}

static int write_csv(const char *path, const bpd_result *r) {
    FILE *f = fopen(path, "w");
    if (!f) return err_set("%s: cannot create: %m", path);
    double n = r->scalars[BPD_S_IMAGES];
    fprintf(f, "term,t,images,mean_bpd,mean_mse_x0\n");
    for (int t = 0; t < r->T; t++) {
        if (r->count[t] == 0) continue;
        fprintf(f, "%s,%d,%.0f,%.10g,%.10g\n", t == 0 ? "decoder" : "kl", t, r->count[t],
                r->term_sum[t] / r->count[t], r->mse_sum[t] / r->count[t]);
    }
    fprintf(f, "prior,%d,%.0f,%.10g,\n", r->T, n, r->scalars[BPD_S_PRIOR] / n);
    fprintf(f, "total,,%.0f,%.10g,\n", n, bpd_result_mean(r));
    if (fclose(f) != 0) return err_set("%s: write failed: %m", path);
    return 0;
}

typedef struct {
    const char *ckpt, *out_csv, *data, *variance, *labels;
    int which; /* CKPT_EMA | CKPT_PARAMS */
    int precision; /* ckpt_model_load's */
    long n, first, stride, batch, threads; /* n < 0: all of the set from first */
    unsigned long long seed;
    int clip, quiet;
    bpd_estimate est;
} bpd_opts;

/* Fills o from the command line. Returns -1 to go on, or the exit code: 0 after
 * --help, 2 for a bad command line (already reported). */
static int parse_args(int argc, char **argv, bpd_opts *o) {
    *o = (bpd_opts){.which = CKPT_EMA, .n = -1, .stride = 1, .batch = 32, .clip = 1,
                    .est = BPD_ESTIMATE_UNBIASED, .precision = CKPT_PRECISION_TRAINED};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        int needs = !strcmp(a, "--images") || !strcmp(a, "--first") || !strcmp(a, "--stride") ||
                    !strcmp(a, "--estimate") || !strcmp(a, "--out") || !strcmp(a, "--data") ||
                    !strcmp(a, "--batch") || !strcmp(a, "--seed") || !strcmp(a, "--weights") ||
                    !strcmp(a, "--variance") || !strcmp(a, "--threads") ||
                    !strcmp(a, "--precision") || !strcmp(a, "--labels");
        if (needs && !v) {
            fprintf(stderr, "ddpm-eval bpd: option %s needs a value\n", a);
            return 2;
        }
        if (needs) i++;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--images")) {
            o->n = strtol(v, &end, 10);
            if (*end || o->n < 1) goto bad;
        } else if (!strcmp(a, "--first")) {
            o->first = strtol(v, &end, 10);
            if (*end || o->first < 0) goto bad;
        } else if (!strcmp(a, "--stride")) {
            o->stride = strtol(v, &end, 10);
            if (*end || o->stride < 1 || o->stride > 100000) goto bad;
        } else if (!strcmp(a, "--estimate")) {
            if (!strcmp(v, "unbiased")) o->est = BPD_ESTIMATE_UNBIASED;
            else if (!strcmp(v, "trapezoid")) o->est = BPD_ESTIMATE_TRAPEZOID;
            else goto bad;
        } else if (!strcmp(a, "--out")) {
            o->out_csv = v;
        } else if (!strcmp(a, "--data")) {
            o->data = v;
        } else if (!strcmp(a, "--labels")) {
            o->labels = v;
        } else if (!strcmp(a, "--batch")) {
            o->batch = strtol(v, &end, 10);
            if (*end || o->batch < 1 || o->batch > 4096) goto bad;
        } else if (!strcmp(a, "--seed")) {
            o->seed = strtoull(v, &end, 10);
            if (*end) goto bad;
        } else if (!strcmp(a, "--weights")) {
            if (!(o->which = ckpt_weights_parse(v))) goto bad;
        } else if (!strcmp(a, "--variance")) {
            o->variance = v;
            if (strcmp(v, "beta") && strcmp(v, "beta_tilde")) goto bad;
        } else if (!strcmp(a, "--threads")) {
            o->threads = strtol(v, &end, 10);
            if (*end || o->threads < 0) goto bad;
        } else if (!strcmp(a, "--precision")) {
            if ((o->precision = ckpt_precision_parse(v)) == -2) goto bad;
        } else if (!strcmp(a, "--no-clip")) {
            o->clip = 0;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "ddpm-eval bpd: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!o->ckpt) {
            o->ckpt = a;
        } else {
            fprintf(stderr, "ddpm-eval bpd: unexpected argument '%s'\n", a);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, "ddpm-eval bpd: invalid value '%s' for %s\n", v, a);
        return 2;
    }
    if (!o->ckpt) {
        usage(stderr);
        return 2;
    }
    return -1;
}

/* What this rank holds of a run; bpd_run_free releases it. */
typedef struct {
    ckpt_model cm;
    bpd_result res; /* this rank's sums; after sum_to_root, rank 0's are the totals */
    uint8_t *imgs;  /* this rank's images, uint8 CHW */
    uint64_t *ids;  /* their indices in the set (they key the noise) */
    int *labels;    /* their class labels (--labels), or NULL: the null label */
    int count;
} bpd_run;

static void bpd_run_free(bpd_run *r) {
    bpd_result_free(&r->res);
    ckpt_model_free(&r->cm);
    free(r->imgs);
    free(r->ids);
    free(r->labels);
}

/* Loads the model and this rank's images, says what will run (rank 0) and adds
 * up this rank's terms. Fills in o->data (default: the config's eval_path) and
 * o->n (default: the rest of the set). */
static int run_bpd(bpd_run *r, bpd_opts *o, int rank, int world, int nthreads) {
    unet_options opt = unet_options_default();
    if (env_unet_options(&opt) != 0 ||
        ckpt_model_load(&r->cm, o->ckpt, o->which, (int)o->batch, &opt, o->precision) != 0)
        return -1;
    const config *cfg = &r->cm.cfg;
    if (!o->data) {
        if (!cfg->data.eval_path[0])
            return err_set("%s: its config has no data.eval_path; pass --data PATH", o->ckpt);
        o->data = cfg->data.eval_path;
    }
    if (o->labels && cfg->model.num_classes == 0)
        return err_set("%s is unconditional (model.num_classes 0): --labels needs a "
                       "class-conditional checkpoint", o->ckpt);
    if (bpd_result_init(&r->res, r->cm.diff.T) != 0) return -1;
    if (load_images(o->data, o->labels, cfg, o->first, &o->n, rank, world, &r->imgs, &r->ids,
                    &r->labels, &r->count) != 0)
        return -1;
    sampling_variance var = cfg->diffusion.sampling_var;
    if (o->variance)
        var = strcmp(o->variance, "beta") == 0 ? SAMPLING_VAR_BETA : SAMPLING_VAR_BETA_TILDE;
    const int learned = cfg->model.learn_sigma;
    if (rank == 0 && learned && o->variance)
        log_info("--variance %s ignored: %s has learned variances (model.learn_sigma)",
                 o->variance, o->ckpt);
    if (rank == 0)
        log_info("%s: step %llu, %s weights; %ld images of %s from %ld over %d rank(s), T %d, "
                 "stride %ld (%s), sigma^2 = %s, %sclipped x0, batch %ld, OpenBLAS %s x%d, "
                 "precision %s",
                 o->ckpt, (unsigned long long)r->cm.h.step, ckpt_weights_name(o->which), o->n,
                 o->data, o->first, world, r->cm.diff.T, o->stride,
                 o->stride > 1 ? (o->est == BPD_ESTIMATE_UNBIASED ? "unbiased" : "trapezoid")
                               : "exact",
                 learned ? "learned" : var == SAMPLING_VAR_BETA ? "beta" : "beta-tilde",
                 o->clip ? "" : "un", o->batch, blas_kernel_name(), nthreads,
                 ops_precision_names[unet_precision(r->cm.model)]);
    if (rank == 0 && cfg->model.num_classes > 0 && o->labels)
        log_info("class-conditional model (%d classes): the bound of -log p(x | y), each image "
                 "with its label from %s", cfg->model.num_classes,
                 strcmp(o->labels, "set") ? o->labels : o->data);
    else if (rank == 0 && cfg->model.num_classes > 0)
        log_info("class-conditional model (%d classes): the bound is that of its unconditional "
                 "model, evaluated with the null label (--labels: the class-conditional bound)",
                 cfg->model.num_classes);
    char plans[2048];
    unet_describe_plans(r->cm.model, plans, sizeof plans);
    if (rank == 0) log_info("%s", plans);
    bpd_config bc = {&r->cm.diff, (int)var, o->clip, (int)o->stride, o->est, o->seed};
    progress pg;
    progress_start(&pg, o->quiet || rank != 0 ? NULL : stderr);
    return bpd_evaluate_u8(r->cm.model, r->cm.weights, &bc, r->imgs, r->ids, r->labels, r->count,
                           cfg->model.in_channels, cfg->model.image_size, &r->res, NULL,
                           show_progress, &pg);
}

/* Every rank learns whether any failed before the reduction, so none hangs. */
static int any_rank_failed(int rc, int rank) {
    int bad = rc != 0, any_bad = 0;
    if (bad) fprintf(stderr, "ddpm-eval bpd (rank %d): %s\n", rank, err_msg());
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any_bad;
}

/* Adds every rank's sums into rank 0's res. */
static void sum_to_root(bpd_result *res, int rank) {
    size_t nd = bpd_result_doubles(res);
    double *sum = rank == 0 ? xcalloc(nd, sizeof *sum) : NULL;
    MPI_Reduce(res->buf, sum, (int)nd, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        memcpy(res->buf, sum, nd * sizeof *sum);
        free(sum);
    }
}

/* Rank 0: the bound and its parts on stdout, the per-timestep CSV when asked.
 * Returns the exit code. */
static int report(const bpd_result *res, const bpd_opts *o, int world, double t0) {
    double ni = res->scalars[BPD_S_IMAGES], secs = now_seconds() - t0;
    double kl = bpd_result_mean(res) - (res->scalars[BPD_S_DECODER] + res->scalars[BPD_S_PRIOR]) / ni;
    printf("bpd %.6f +- %.6f (standard error; %.0f images, stride %ld%s%s)\n", bpd_result_mean(res),
           bpd_result_stderr(res), ni, o->stride,
           o->stride > 1 ? (o->est == BPD_ESTIMATE_UNBIASED ? ", unbiased estimate"
                                                           : ", trapezoid estimate")
                         : "",
           o->labels ? ", given the class labels" : "");
    printf("  decoder L_0 %.6f, sum of KL terms L_1..L_%d %.6f, prior L_T %.6f bits/dim\n",
           res->scalars[BPD_S_DECODER] / ni, res->T - 1, kl, res->scalars[BPD_S_PRIOR] / ni);
    log_info("%.1f s (%d rank(s))", secs, world);
    if (!o->out_csv) return 0;
    if (write_csv(o->out_csv, res) != 0) {
        fprintf(stderr, "ddpm-eval bpd: %s\n", err_msg());
        return 1;
    }
    log_info("wrote %s", o->out_csv);
    return 0;
}

int eval_bpd_main(int argc, char **argv) {
    bpd_opts o;
    int code = parse_args(argc, argv, &o);
    if (code >= 0) return code;
    env_mpi_singleton_as_root();
    MPI_Init(&argc, &argv);
    int rank = 0, world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int nthreads = blas_set_threads((int)o.threads, env_ranks_on_node());

    bpd_run r;
    memset(&r, 0, sizeof r);
    double t0 = now_seconds();
    int rc = run_bpd(&r, &o, rank, world, nthreads);
    code = 1;
    if (!any_rank_failed(rc, rank)) {
        sum_to_root(&r.res, rank);
        code = rank == 0 ? report(&r.res, &o, world, t0) : 0;
    }
    bpd_run_free(&r);
    MPI_Finalize();
    return code;
}
