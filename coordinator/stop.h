/* Signals that stop a training run, and whether a final checkpoint still fits.
 *
 *   SIGUSR1  "checkpoint and leave, requeue me" (Slurm's --signal=B:USR1@N relayed
 *            by ops/ddpm.sbatch, or scancel --signal=USR1): always checkpoint, exit
 *            EXIT_PREEMPTED.
 *   SIGTERM  "the job is being killed" (preemption, scontrol requeue, scancel, time
 *   SIGUSR2  limit; USR2 is the same, relayed through mpirun, which does not forward
 *            TERM): checkpoint only if it can finish before SIGKILL, i.e. within the
 *            grace time counted from the first SIGTERM; otherwise leave at once and
 *            the newest periodic checkpoint is where the next run resumes. Exit 0.
 *   SIGINT   interactive stop: always checkpoint, exit 0; a second SIGINT ends the
 *            process at once (default action).
 * A run that has already reached training.steps exits 0 whatever it received.
 *
 * The handler only records flags and the time of the first SIGTERM; the training
 * loops act on them at the next step boundary. */
#ifndef DDPM_STOP_H
#define DDPM_STOP_H

#include <signal.h>
#include <stddef.h>

/* The last stopping signal received (0: none); for logs. */
extern volatile sig_atomic_t g_signal;

/* Installs the handler for SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 (SA_RESTART); may be
 * called again (after MPI_Init) without losing what arrived before. */
void stop_install(void);
/* The names of the stopping signals received so far, "SIGTERM+SIGUSR2" (buf). */
const char *stop_signal_names(char *buf, size_t len);
/* Non-zero once any stopping signal has arrived. */
int stop_requested(void);
/* EXIT_PREEMPTED if SIGUSR1 was among the signals (the launcher should requeue),
 * else EXIT_OK. */
int stop_exit_code(void);
/* Whether a final checkpoint that takes about est_s seconds should be written now.
 * Yes for SIGUSR1 and SIGINT; after SIGTERM/SIGUSR2 only if the seconds since the
 * first of them, plus 1.5 est_s, plus 1 s to exit, fit in grace_s (grace_s <= 0:
 * no deadline known, always yes). *since_s gets the seconds since that signal
 * (0 when there was none). */
int stop_should_checkpoint(double grace_s, double est_s, double *since_s);

#endif
