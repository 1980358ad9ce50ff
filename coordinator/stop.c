/* Signal flags for ddpm-train (see stop.h). */
#include "coordinator/stop.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/dist/dist.h"

volatile sig_atomic_t g_signal = 0;
static volatile sig_atomic_t g_usr1 = 0, g_term = 0;
static volatile sig_atomic_t g_seen = 0; /* bit i: kStopSignals[i] arrived */
static const int kStopSignals[4] = {SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
static const char *const kStopNames[4] = {"SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2"};
/* Monotonic time of the first SIGTERM/SIGUSR2 in tenths of a second after g_base:
 * sig_atomic_t is an int, which holds years of tenths (milliseconds would wrap
 * within a long run). */
static volatile sig_atomic_t g_term_ds = 0;
static struct timespec g_base;

static long ds_since_base(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* async-signal-safe */
    return (long)(ts.tv_sec - g_base.tv_sec) * 10 + (ts.tv_nsec - g_base.tv_nsec) / 100000000;
}

static void on_signal(int sig) {
    int saved = errno;
    if (sig == SIGINT && (g_seen & 1)) {
        /* a second Ctrl-C: the user does not want to wait for the step boundary */
        signal(SIGINT, SIG_DFL);
        raise(SIGINT);
    }
    if (sig == SIGUSR1) {
        g_usr1 = 1;
    } else if (sig == SIGTERM || sig == SIGUSR2) {
        if (!g_term) g_term_ds = (sig_atomic_t)ds_since_base();
        g_term = 1;
    }
    for (int i = 0; i < 4; i++)
        if (kStopSignals[i] == sig) g_seen |= 1 << i; /* sa_mask: no nesting */
    g_signal = sig;
    errno = saved;
}

void stop_install(void) {
    static int based = 0;
    if (!based) clock_gettime(CLOCK_MONOTONIC, &g_base); /* a second call keeps the base */
    based = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART; /* file writes and MPI calls carry on; the loop polls */
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 4; i++) sigaddset(&sa.sa_mask, kStopSignals[i]);
    for (int i = 0; i < 4; i++) sigaction(kStopSignals[i], &sa, NULL);
}

const char *stop_signal_names(char *buf, size_t len) {
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < 4; i++) {
        if (!(g_seen & (1 << i))) continue;
        int w = snprintf(buf + n, len - n, "%s%s", n ? "+" : "", kStopNames[i]);
        if (w < 0 || (size_t)w >= len - n) break;
        n += (size_t)w;
    }
    return buf;
}

int stop_requested(void) { return g_signal != 0; }

int stop_exit_code(void) { return g_usr1 ? EXIT_PREEMPTED : EXIT_OK; }

int stop_should_checkpoint(double grace_s, double est_s, double *since_s) {
    *since_s = 0;
    if (!g_term) return 1;
    *since_s = (double)(ds_since_base() - g_term_ds) / 10.0;
    if (*since_s < 0) *since_s = 0;
    if (grace_s <= 0) return 1;
    return *since_s + 1.5 * est_s + 1.0 <= grace_s;
}
