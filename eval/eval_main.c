/* ddpm-eval: evaluation of trained models and their samples.
 *
 *   ddpm-eval bpd CHECKPOINT [--images N] [--stride K] [--out terms.csv] ...
 *   ddpm-eval stats A.npz OUT.stats
 *   ddpm-eval fid A.npz B.npz|B.stats
 *   ddpm-eval is A.npz [--splits 10]
 *   ddpm-eval features A.npz OUT.tns
 *
 * bpd is the only MPI part (eval/eval_bpd.c). The Inception subcommands read
 * uint8 NHWC images from arr_0 of an .npz (what ddpm-sample writes) and need the
 * converted pytorch-fid weights (--inception PATH or $DDPM_INCEPTION_WEIGHTS). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/blas_setup.h"
#include "common/core/progress.h"
#include "common/core/util.h"
#include "common/env/env_opts.h"
#include "common/eval/fid.h"
#include "common/eval/inception.h"
#include "common/io/npz_array.h"
#include "common/io/tensor_file.h"
#include "eval/eval.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ddpm-eval COMMAND ...\n"
            "  bpd CHECKPOINT [--images N] [--stride K] [--out terms.csv] [...]\n"
            "                        negative log-likelihood bound in bits/dim (MPI: images\n"
            "                        spread over ranks); ddpm-eval bpd --help for all options\n"
            "  stats A.npz OUT.stats Inception pool3 mean and covariance of A's images, saved as\n"
            "                        an .npz with float64 'mu' and 'sigma' (pytorch-fid's format)\n"
            "  fid A.npz B           FID between A's images and B (images, or statistics: any .npz\n"
            "                        holding 'mu' and 'sigma', e.g. from `stats` or pytorch-fid)\n"
            "  is A.npz              Inception Score of A's images (mean and std over splits)\n"
            "  features A.npz OUT.tns  pool3 features and logits of every image (tensor file)\n"
            "options of the Inception commands:\n"
            "  --inception PATH      weights from ops/convert_inception.py (default:\n"
            "                        $DDPM_INCEPTION_WEIGHTS)\n"
            "  --splits N            Inception Score splits (default 10)\n"
            "  --threads N           BLAS threads (default: the cores given)\n"
            "  -q, --quiet           no progress line\n"
            "Images: uint8 under arr_0, shape [N][H][W][C] with C = 1 or 3 (or [N][H][W]);\n"
            "they are resized to 299x299 as pytorch-fid does.\n");
}

typedef struct {
    const char *inception;
    int splits, quiet;
    long threads;
} inc_opts;

static int need_net(inception **net, const inc_opts *o) {
    if (*net) return 0;
    if (!o->inception)
        return err_set("no Inception weights: pass --inception PATH or set DDPM_INCEPTION_WEIGHTS "
                       "(convert pytorch-fid's weights with ops/convert_inception.py)");
    return inception_load(net, o->inception);
}

/* Stated limits of the image commands: at most INT_MAX images (Inception Score
 * splits count them in int), each side at most 8192 pixels, and the features of
 * all images held at once must fit in the memory available (checked before any
 * allocation; the reader has already checked that the file holds the images). */
#define EVAL_MAX_SIDE 8192

/* pool3 (and logits, when wanted) of every image of path's arr_0; caller frees.
 * The array is opened and its size checked before the network is loaded. */
static int npz_features(const char *path, inception **net, const inc_opts *o, float **pool3,
                        float **logits, size_t *count) {
    *pool3 = NULL;
    if (logits) *logits = NULL;
    npz_reader *r;
    if (npz_reader_open(&r, path, "arr_0") != 0) return -1;
    const int64_t *sh = npz_reader_shape(r);
    int nd = npz_reader_ndim(r);
    if (npz_reader_dtype(r) != NPZ_DTYPE_U8 || (nd != 3 && nd != 4) || sh[0] < 1 || sh[1] < 1 ||
        sh[2] < 1 || sh[1] > EVAL_MAX_SIDE || sh[2] > EVAL_MAX_SIDE) {
        npz_reader_close(r);
        return err_set("%s: arr_0 must be uint8 images [N][H][W][C] (or [N][H][W]) with H and W "
                       "in 1..%d", path, EVAL_MAX_SIDE);
    }
    if (sh[0] > INT_MAX) {
        npz_reader_close(r);
        return err_set("%s: arr_0 holds %lld images (at most %d)", path, (long long)sh[0], INT_MAX);
    }
    size_t N = (size_t)sh[0];
    int H = (int)sh[1], W = (int)sh[2], C = nd == 4 ? (int)sh[3] : 1;
    if (C != 1 && C != 3) {
        npz_reader_close(r);
        return err_set("%s: images have %d channels (1 or 3 supported)", path, C);
    }
    /* per image: pool3 floats, and with logits the float logits and the Inception
     * Score's double probabilities */
    size_t per = INCEPTION_FEATURES * sizeof(float) +
                 (logits ? INCEPTION_CLASSES * (sizeof(float) + sizeof(double)) : 0);
    size_t need, avail = mem_available_bytes();
    if (size_mul(N, per, &need) || need > avail) {
        npz_reader_close(r);
        return err_set("%s: arr_0 holds %zu images of %dx%dx%d: their features need %zu bytes per "
                       "image, more than the %zu bytes of memory available in all", path, N, H, W,
                       C, per, avail);
    }
    if (need_net(net, o) != 0) {
        npz_reader_close(r);
        return -1;
    }
    size_t D = (size_t)H * W * C;
    uint8_t *img = xmalloc(D);
    float *p = xfloats(N * INCEPTION_FEATURES);
    float *l = logits ? xfloats(N * INCEPTION_CLASSES) : NULL;
    progress pg;
    progress_start(&pg, o->quiet ? NULL : stderr);
    int rc = 0;
    for (size_t i = 0; i < N && rc == 0; i++) {
        if ((rc = npz_reader_read(r, img, D)) != 0) break;
        rc = inception_forward_u8(*net, img, 1, H, W, C, p + i * INCEPTION_FEATURES,
                                  l ? l + i * INCEPTION_CLASSES : NULL);
        progress_update(&pg, (double)(i + 1) / (double)N, i + 1 == N, "%s: %zu/%zu images, %.2f images/s",
                        path, i + 1, N, (double)(i + 1) / progress_elapsed(&pg));
    }
    free(img);
    npz_reader_close(r);
    if (rc != 0) {
        free(p);
        free(l);
        return -1;
    }
    *pool3 = p;
    if (logits) *logits = l;
    *count = N;
    return 0;
}

/* Statistics of path: read from an .npz with 'mu' and 'sigma' (checked by
 * fid_stats_load: shapes, finite, symmetric, positive semi-definite), or
 * computed from its images. */
static int load_or_compute_stats(const char *path, inception **net, const inc_opts *o, fid_stats *st) {
    const int d = INCEPTION_FEATURES;
    memset(st, 0, sizeof *st);
    int has_mu = npz_has_key(path, "mu");
    if (has_mu < 0) return -1;
    int has_sigma = has_mu ? npz_has_key(path, "sigma") : 0;
    if (has_sigma < 0) return -1;
    if (has_mu && has_sigma) return fid_stats_load(path, st);
    float *feat;
    size_t N;
    if (npz_features(path, net, o, &feat, NULL, &N) != 0) return -1;
    st->d = d;
    st->mu = xcalloc((size_t)d, sizeof *st->mu);
    st->sigma = xcalloc((size_t)d * d, sizeof *st->sigma);
    int rc = fid_stats_compute(feat, N, d, st->mu, st->sigma);
    free(feat);
    if (rc != 0) {
        err_prefix("%s: ", path);
        fid_stats_free(st);
    }
    return rc;
}

/* Reads the options and file arguments after `ddpm-eval CMD` into o and pos
 * (want of them). Returns -1 to go on, or the exit code 2 for a bad command line
 * (already reported). */
static int parse_args(int argc, char **argv, int want, inc_opts *o, const char *pos[2]) {
    const char *cmd = argv[1];
    *o = (inc_opts){env_inception_weights(), 10, 0, 0};
    pos[0] = pos[1] = NULL;
    int npos = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "--inception") || !strcmp(a, "--splits") || !strcmp(a, "--threads")) {
            if (!v) {
                fprintf(stderr, "ddpm-eval %s: option %s needs a value\n", cmd, a);
                return 2;
            }
            i++;
            if (!strcmp(a, "--inception")) {
                o->inception = v;
            } else if (!strcmp(a, "--splits")) {
                o->splits = (int)strtol(v, &end, 10);
                if (*end || o->splits < 1) goto bad;
            } else {
                o->threads = strtol(v, &end, 10);
                if (*end || o->threads < 0) goto bad;
            }
            continue;
        bad:
            fprintf(stderr, "ddpm-eval %s: invalid value '%s' for %s\n", cmd, v, a);
            return 2;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "ddpm-eval %s: unknown option '%s'\n", cmd, a);
            return 2;
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            fprintf(stderr, "ddpm-eval %s: unexpected argument '%s'\n", cmd, a);
            return 2;
        }
    }
    if (npos != want) {
        fprintf(stderr, "ddpm-eval %s: expected %d file argument(s)\n", cmd, want);
        usage(stderr);
        return 2;
    }
    return -1;
}

/* The Inception commands: each returns 0, or -1 with err_msg() set. net is loaded
 * on first need (not at all when fid is given two statistics files). */

static int cmd_stats(const char *const pos[2], inception **net, const inc_opts *o) {
    fid_stats st;
    if (load_or_compute_stats(pos[0], net, o, &st) != 0) return -1;
    npz_f64_array arr[2] = {{"mu", st.mu, 1, {st.d}}, {"sigma", st.sigma, 2, {st.d, st.d}}};
    int D = st.d;
    int rc = npz_write_f64(pos[1], arr, 2);
    fid_stats_free(&st);
    if (rc != 0) return -1;
    log_info("wrote %s (mu [%d], sigma [%d][%d], float64)", pos[1], D, D, D);
    return 0;
}

static int cmd_fid(const char *const pos[2], inception **net, const inc_opts *o) {
    fid_stats a, b;
    double fid;
    if (load_or_compute_stats(pos[0], net, o, &a) != 0) return -1;
    if (load_or_compute_stats(pos[1], net, o, &b) != 0) {
        fid_stats_free(&a);
        return -1;
    }
    int rc;
    if (a.d != b.d) {
        rc = err_set("%s has %d-dimensional statistics, %s has %d", pos[0], a.d, pos[1], b.d);
    } else if ((rc = fid_distance(a.mu, a.sigma, b.mu, b.sigma, a.d, &fid)) != 0) {
        err_prefix("FID of %s and %s: ", pos[0], pos[1]);
    }
    fid_stats_free(&a);
    fid_stats_free(&b);
    if (rc != 0) return -1;
    printf("FID %.10g\n", fid);
    return 0;
}

static int cmd_is(const char *const pos[2], inception **net, const inc_opts *o) {
    float *p, *l;
    size_t N;
    double mean, sd;
    if (npz_features(pos[0], net, o, &p, &l, &N) != 0) return -1;
    int splits = o->splits > (int)N ? (int)N : o->splits;
    int rc = inception_score(l, N, INCEPTION_CLASSES, splits, &mean, &sd);
    free(p);
    free(l);
    if (rc != 0) return -1;
    printf("IS %.6f +- %.6f (%zu images, %d splits)\n", mean, sd, N, splits);
    return 0;
}

static int cmd_features(const char *const pos[2], inception **net, const inc_opts *o) {
    float *p, *l;
    size_t N;
    if (npz_features(pos[0], net, o, &p, &l, &N) != 0) return -1;
    tensor_file tf;
    int64_t dp[2] = {(int64_t)N, INCEPTION_FEATURES}, dl[2] = {(int64_t)N, INCEPTION_CLASSES};
    int rc = tensor_file_create(&tf, pos[1]);
    if (rc == 0) rc = tensor_file_add(&tf, "pool3", 2, dp, p);
    if (rc == 0) rc = tensor_file_add(&tf, "logits", 2, dl, l);
    if (rc == 0) rc = tensor_file_close(&tf);
    free(p);
    free(l);
    return rc != 0 ? -1 : 0;
}

typedef struct {
    const char *name;
    int files; /* file arguments it takes */
    int (*run)(const char *const pos[2], inception **net, const inc_opts *o);
} inc_command;

static const inc_command k_commands[] = {
    {"stats", 2, cmd_stats},
    {"fid", 2, cmd_fid},
    {"is", 1, cmd_is},
    {"features", 2, cmd_features},
};

int main(int argc, char **argv) {
    blas_setup(argv);
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "bpd")) return eval_bpd_main(argc - 1, argv + 1);
    const inc_command *c = NULL;
    for (size_t k = 0; k < sizeof k_commands / sizeof k_commands[0]; k++)
        if (!strcmp(cmd, k_commands[k].name)) c = &k_commands[k];
    if (!c) {
        fprintf(stderr, "ddpm-eval: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    inc_opts o;
    const char *pos[2];
    int code = parse_args(argc, argv, c->files, &o, pos);
    if (code >= 0) return code;
    blas_set_threads((int)o.threads, 1);
    inception *net = NULL;
    int rc = c->run(pos, &net, &o);
    if (rc != 0) fprintf(stderr, "ddpm-eval %s: %s\n", cmd, err_msg());
    inception_free(net);
    return rc != 0 ? 1 : 0;
}
