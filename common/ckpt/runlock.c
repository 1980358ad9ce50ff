/* The run-folder lock: see runlock.h (the rule) and docs/slurm.md. */
#include "common/ckpt/runlock.h"

#include "common/core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HOLDER_MAX_BYTES 4096
/* A holder writes its identity right after taking the fcntl lock; a lock held
 * with no identity for this long has no live ddpm-train behind it. */
#define IDENTITY_WAIT_MS 1000
#define IDENTITY_POLL_MS 50

static void sanitize(char *dst, size_t cap, const char *src, size_t n) {
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < cap; i++) {
        char c = src[i];
        int okc = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("._:@+-", c) != NULL;
        dst[j++] = okc && c ? c : '?';
    }
    dst[j] = 0;
}

static void parse_holder(const char *buf, size_t len, runlock_holder *h) {
    memset(h, 0, sizeof *h);
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        const char *line = buf + i;
        size_t n = e - i;
        const char *eq = memchr(line, '=', n);
        if (eq) {
            size_t k = (size_t)(eq - line), vn = n - k - 1;
            const char *v = eq + 1;
            if (k == 3 && !memcmp(line, "pid", 3)) sanitize(h->pid, sizeof h->pid, v, vn);
            else if (k == 4 && !memcmp(line, "host", 4)) sanitize(h->host, sizeof h->host, v, vn);
            else if (k == 3 && !memcmp(line, "job", 3)) sanitize(h->job, sizeof h->job, v, vn);
            else if (k == 5 && !memcmp(line, "since", 5)) sanitize(h->since, sizeof h->since, v, vn);
            else if (k == 5 && !memcmp(line, "state", 5)) sanitize(h->state, sizeof h->state, v, vn);
        }
        i = e + 1;
    }
}

static int read_holder_fd(int fd, const char *path, runlock_holder *h) {
    char buf[HOLDER_MAX_BYTES];
    ssize_t n;
    do n = pread(fd, buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) return err_set("run lock %s: cannot read: %s", path, strerror(errno));
    parse_holder(buf, (size_t)n, h);
    return 0;
}

int runlock_read_holder(const char *path, runlock_holder *h) {
    memset(h, 0, sizeof *h);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0) return errno == ENOENT ? 0 : err_set("run lock %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read_holder_fd(fd, path, h)
                                                          : err_set("run lock %s: not a regular file", path);
    close(fd);
    return rc;
}

/* A holder that names itself; "released" and empty files name nobody. */
static int holder_named(const runlock_holder *h) { return h->pid[0] && strcmp(h->state, "released") != 0; }

static int pid_alive(const char *pid_text) {
    char *end;
    errno = 0;
    long pid = strtol(pid_text, &end, 10);
    if (errno || *end || pid <= 0 || pid > 0x3fffffff) return 0;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* 0: locked; 1: held by someone else; 2: this file system has no fcntl locks. */
static int try_fcntl_lock(int fd, const char *path, int *err) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
#ifdef F_OFD_SETLK
    /* Tied to this open file description, not to the process: no other close()
     * of the same file drops it. */
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0) return 0;
    if (errno == EINVAL) /* kernel without OFD locks */
#endif
    {
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (fcntl(fd, F_SETLK, &fl) == 0) return 0;
    }
    *err = errno;
    if (errno == EAGAIN || errno == EACCES) return 1;
    if (errno == ENOLCK || errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) return 2;
    return err_set("run lock %s: fcntl lock failed: %s", path, strerror(errno));
}

static int write_identity(runlock *l, const char *host, const char *job) {
    char since[40] = "";
    time_t now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv)) strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    char buf[HOLDER_MAX_BYTES];
    int n = snprintf(buf, sizeof buf, "# ddpm-train run-folder lock (docs/slurm.md)\npid=%ld\nhost=%s\njob=%s\nsince=%s\n",
                     (long)getpid(), host, job, since);
    if (n < 0 || (size_t)n >= sizeof buf) return err_set("run lock %s: identity too long", l->path);
    if (ftruncate(l->fd, 0) != 0 || pwrite(l->fd, buf, (size_t)n, 0) != n || fsync(l->fd) != 0)
        return err_set("run lock %s: cannot write: %s", l->path, strerror(errno));
    return 0;
}

/* vsnprintf: a note that does not fit is cut, which is fine for a log line. */
static void note_set(runlock *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_set(runlock *l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->note, sizeof l->note, fmt, ap);
    va_end(ap);
}

static const char *or_none(const char *s) { return s && *s ? s : "none"; }

static int refuse(const runlock *l, const char *dir, const runlock_holder *h, const char *why) {
    return err_set("output.dir %s is in use by another run: pid %s on host %s, Slurm job %s, since %s "
                   "(%s; lock file %s). Wait for it to end or choose another output.dir; if that run "
                   "is certainly dead, override with ddpm-train --force-unlock",
                   dir, or_none(h->pid), or_none(h->host), or_none(h->job), or_none(h->since), why, l->path);
}

/* Rule 2 of runlock.h. 1: take over (note says why); 0: refused (err set). */
static int decide(runlock *l, const char *dir, const runlock_holder *h, const char *host, const char *job,
                  int busy, int force) {
    char who[512];
    snprintf(who, sizeof who, "pid %s on host %s, Slurm job %s", or_none(h->pid), or_none(h->host),
             or_none(h->job));
    if (force) {
        note_set(l, "forced (--force-unlock): took the lock over from %s", who);
        return 1;
    }
    if (!holder_named(h)) {
        if (busy)
            note_set(l,
                     "the lock is held but names no holder after %d ms: taken over as stale", IDENTITY_WAIT_MS);
        return 1;
    }
    char sh_host[256];
    sanitize(sh_host, sizeof sh_host, host, strlen(host));
    if (strcmp(h->host, sh_host) == 0) {
        if (pid_alive(h->pid)) return refuse(l, dir, h, "that process is alive on this host") + 1;
        note_set(l, "took over the stale lock of %s: that process is no longer alive", who);
        return 1;
    }
    char sh_job[128];
    sanitize(sh_job, sizeof sh_job, job ? job : "", job ? strlen(job) : 0);
    if (sh_job[0] && strcmp(h->job, sh_job) == 0) {
        note_set(l,
                 "took over the lock of %s: the same Slurm job (a requeued run's predecessor)", who);
        return 1;
    }
    return refuse(l, dir, h, busy ? "it holds the lock" : "this file system has no locks; its lock file names it") + 1;
}

int runlock_acquire(runlock *l, const char *dir, const runlock_opts *o) {
    runlock_opts none = {0};
    if (!o) o = &none;
    memset(l, 0, sizeof *l);
    l->fd = -1;
    if (!dir) return err_set("run lock: NULL folder");
    if ((size_t)snprintf(l->path, sizeof l->path, "%s/%s", dir, RUNLOCK_FILE) >= sizeof l->path)
        return err_set("run lock: folder name too long: %s", dir);
    char host[256] = "";
    if (o->host) snprintf(host, sizeof host, "%s", o->host);
    else if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "unknown");
    /* O_NONBLOCK: a FIFO put in its place must not hang the run; O_NOFOLLOW: a
     * symlink planted there is not followed into someone else's file. */
    int fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0644);
    if (fd < 0) return err_set("run lock %s: cannot open: %s", l->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set("run lock %s: not a regular file", l->path);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    l->fd = fd;
    int state = 2, err = 0;
    if (!o->no_fcntl) {
        state = try_fcntl_lock(fd, l->path, &err);
        if (state < 0) goto fail;
    }
    runlock_holder h;
    if (read_holder_fd(fd, l->path, &h)) goto fail;
    if (state == 0) {
        l->kernel = 1;
        if (holder_named(&h))
            note_set(l,
                     "the lock file named pid %s on host %s, Slurm job %s, which no longer holds the lock",
                     or_none(h.pid), or_none(h.host), or_none(h.job));
    } else {
        /* Between taking the lock and writing its name a holder's file is empty. */
        for (int waited = 0; state == 1 && !holder_named(&h) && waited < IDENTITY_WAIT_MS;
             waited += IDENTITY_POLL_MS) {
            struct timespec ts = {0, IDENTITY_POLL_MS * 1000000L};
            nanosleep(&ts, NULL);
            if (read_holder_fd(fd, l->path, &h)) goto fail;
        }
        if (!decide(l, dir, &h, host, o->job_id, state == 1, o->force)) goto fail;
        if (state == 2 && !o->no_fcntl) {
            char prev[sizeof l->note];
            snprintf(prev, sizeof prev, "%s", l->note);
            note_set(l, "file system without fcntl locks (%s): the lock file's contents alone "
                     "guard %s%s%s", strerror(err), dir, prev[0] ? "; " : "", prev);
        }
    }
    if (write_identity(l, host, o->job_id ? o->job_id : "")) goto fail;
    return 0;
fail:
    close(l->fd);
    l->fd = -1;
    l->kernel = 0;
    return -1;
}

void runlock_release(runlock *l) {
    if (!l || l->fd < 0) return;
    /* Say so in the file for the contents rule; the kernel lock goes with close. */
    static const char msg[] = "# ddpm-train run-folder lock (docs/slurm.md)\nstate=released\n";
    if (ftruncate(l->fd, 0) == 0) (void)!pwrite(l->fd, msg, sizeof msg - 1, 0);
    close(l->fd);
    l->fd = -1;
    l->kernel = 0;
}
