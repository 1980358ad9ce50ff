/* The run-folder lock: one run at a time owns an output.dir (its checkpoints,
 * metrics.jsonl, pruning). docs/slurm.md states the rule for users.
 *
 * The lock is the file DIR/run.lock, holding the owner's identity as text
 * (pid, host, job id, start time) so that a refused run can name who holds it.
 * Ownership, in order:
 *   1. An fcntl write lock on the whole file (an open-file-description lock,
 *      F_OFD_SETLK, else F_SETLK): the kernel releases it when the process dies,
 *      so a kill -9 leaves no stale lock; NFSv4 and Lustre (flock mount) honour
 *      it across nodes. Got it: the run owns the folder, whatever the file says.
 *   2. The lock is held, or the file system has no locks (ENOLCK, EOPNOTSUPP,
 *      ENOSYS): the file's contents decide, because a lock can outlive its
 *      holder (NFS, a crashed node) or not exist:
 *        - same host, the pid not alive: stale, taken over;
 *        - same host, the pid alive: refused;
 *        - another host, the same non-empty job id: taken over (a requeued
 *          Slurm job keeps its id; its predecessor is dead, whatever its node's
 *          lock says);
 *        - another host, another job: refused;
 *        - no identity (a lock held with an empty file for over a second, or
 *          an empty file without locks): taken over.
 *      opts->force takes over in every case (ddpm-train --force-unlock).
 * The caller reads the job id etc. and passes them in: no environment reads
 * here. Returns -1 with err_msg naming the folder and the holder's pid, host and
 * job id when refused. */
#ifndef DDPM_RUNLOCK_H
#define DDPM_RUNLOCK_H

#define RUNLOCK_FILE "run.lock"

typedef struct {
    const char *job_id; /* the scheduler's job id (Slurm: SLURM_JOB_ID); NULL or "" outside a job */
    const char *host;   /* this host's name; NULL: gethostname() */
    int force;          /* take over whatever holds the lock */
    int no_fcntl;       /* skip step 1 (tests; a file system whose locks are not coherent) */
} runlock_opts;

typedef struct {
    int fd;          /* -1 when not held */
    int kernel;      /* holds the fcntl lock (else owns the folder by rule 2) */
    char path[4096];
    char note[1024]; /* "" or how it was taken (a takeover, locks unsupported): for the log */
} runlock;

/* Takes DIR's lock (DIR must exist); on success l holds it until
 * runlock_release or the process's end. */
int runlock_acquire(runlock *l, const char *dir, const runlock_opts *opts);
/* Marks the lock file released and closes it (the kernel lock goes with it).
 * Safe on a zeroed or already released lock. */
void runlock_release(runlock *l);

/* The identity in a lock file, as parsed (for messages and tests). Each field is
 * "" when absent; characters outside [A-Za-z0-9._:@+-] are replaced by '?'. */
typedef struct {
    char pid[24], host[256], job[128], since[40], state[16];
} runlock_holder;
/* Reads PATH (at most 4 KiB); 0 and a zeroed *h when absent or empty, -1 on a
 * read error. */
int runlock_read_holder(const char *path, runlock_holder *h);

#endif
