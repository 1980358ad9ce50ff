/* Lightweight per-op-kind timer for benchmarks.
 *
 * Off by default: every probe is then one load and one predictable branch.
 * When prof_enabled is set (by a benchmark, single-threaded caller), ops add the
 * wall time of each call to prof_seconds[kind]. PROF_GEMM overlaps the others: it
 * is the time spent inside cblas_sgemm calls, whichever op made them, so
 * "outside GEMM" = total - PROF_GEMM. Probes sit outside OpenMP worksharing
 * regions; when a U-Net runs in lanes (one thread per slice of the batch), only
 * lane 0's thread updates the table (prof_owner). */
#ifndef DDPM_PROF_H
#define DDPM_PROF_H

typedef enum {
    PROF_CONV_FWD,
    PROF_CONV_BWD,
    PROF_GROUPNORM,
    PROF_SILU,
    PROF_ATTENTION,
    PROF_LINEAR,
    PROF_ELEMENTWISE, /* add, concat, upsample, dropout, mse, per-channel add */
    PROF_OTHER,       /* instrumented odds and ends (gradient zeroing, dropout masks) */
    PROF_GEMM,        /* overlaps the kinds above */
    PROF_COUNT
} prof_kind;

extern int prof_enabled;
extern double prof_seconds[PROF_COUNT];

double prof_now(void);
static inline double prof_begin(void) { return prof_enabled ? prof_now() : 0.0; }
/* Whether the calling thread records: the program's main thread, or lane 0 of a
 * U-Net run in lanes (unet.h), whose op times stand for the parallel step. */
int prof_owner(void);
static inline void prof_end(prof_kind k, double t0) {
    if (prof_enabled && prof_owner()) prof_seconds[k] += prof_now() - t0;
}
/* PROF_SCOPE(kind); at the top of a function times the whole call (GNU cleanup
 * attribute, so early returns are covered). */
typedef struct {
    prof_kind kind;
    double t0;
} prof_scope_t;
static inline void prof_scope_end(prof_scope_t *s) { prof_end(s->kind, s->t0); }
#define PROF_SCOPE(k) \
    prof_scope_t prof_scope_ __attribute__((cleanup(prof_scope_end))) = {(k), prof_begin()}

void prof_reset(void);
const char *prof_kind_name(prof_kind k);

#endif
