/* The run-folder lock (common/ckpt/runlock.h): the fcntl lock and its release on
 * death, and the contents rule that decides when the lock is held by a dead
 * holder or the file system has no locks (issue #14 row 7). */
#include "common/ckpt/runlock.h"
#include "common/core/util.h"
#include "tests/unit/test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_root[PATH_MAX];

static void subdir(char *out, const char *name) {
    int n = snprintf(out, PATH_MAX, "%s/%s", g_root, name);
    if (n < 0 || n >= PATH_MAX || (mkdir(out, 0755) && errno != EEXIST)) {
        perror(out);
        exit(2);
    }
}

static void write_lock_file(const char *dir, long pid, const char *host, const char *job) {
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/%s", dir, RUNLOCK_FILE);
    FILE *f = fopen(p, "w");
    if (!f) {
        perror(p);
        exit(2);
    }
    fprintf(f, "pid=%ld\nhost=%s\njob=%s\nsince=2024-01-01T00:00:00Z\n", pid, host, job);
    fclose(f);
}

/* A pid that is certainly not alive: a child that has exited and been reaped. */
static long dead_pid(void) {
    pid_t p = fork();
    if (p == 0) _exit(0);
    waitpid(p, NULL, 0);
    return (long)p;
}

static int msg_has(const char *a, const char *b, const char *c) {
    const char *m = err_msg();
    return strstr(m, a) && (!b || strstr(m, b)) && (!c || strstr(m, c));
}

static void test_fcntl_lock(void) {
    char dir[PATH_MAX], me[32];
    subdir(dir, "fcntl");
    snprintf(me, sizeof me, "pid %ld", (long)getpid());
    runlock a, b;
    runlock_opts oa = {.job_id = "4242", .host = "node-a"};
    test_check(runlock_acquire(&a, dir, &oa) == 0 && a.kernel && a.note[0] == 0,
               "acquire: a fresh folder's lock is taken with the fcntl lock");
    runlock_holder h;
    char lp[PATH_MAX + 16];
    snprintf(lp, sizeof lp, "%s/%s", dir, RUNLOCK_FILE);
    runlock_read_holder(lp, &h);
    char pid[24];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    test_check(!strcmp(h.pid, pid) && !strcmp(h.host, "node-a") && !strcmp(h.job, "4242") && h.since[0],
               "the lock file names pid, host, job and start time (%s %s %s %s)", h.pid, h.host, h.job, h.since);
    /* An OFD lock conflicts with another open of the same file, even in this
     * process; this pid is alive on this host, so the contents rule refuses too. */
    runlock_opts ob = {.job_id = "4343", .host = "node-a"};
    int rc = runlock_acquire(&b, dir, &ob);
    test_check(rc == -1 && msg_has(me, "node-a", "4242") && msg_has(dir, "force", NULL),
               "a second run is refused, naming the holder's pid, host and job (%s)", err_msg());
    /* Same job, same host, holder alive: still refused (a sibling step, not a
     * dead predecessor). */
    ob.job_id = "4242";
    test_check(runlock_acquire(&b, dir, &ob) == -1, "same job on the same host with the holder alive is refused");
    /* Another host, same job id: a requeued job whose predecessor's lock lingers. */
    ob.host = "node-b";
    test_check(runlock_acquire(&b, dir, &ob) == 0 && !b.kernel && strstr(b.note, "same Slurm job"),
               "another host with the same Slurm job id takes the lock over (%s)", b.note);
    runlock_release(&b);
    runlock_release(&a);
    runlock_release(&a); /* twice is harmless */
    test_check(runlock_acquire(&b, dir, &ob) == 0 && b.kernel, "after release the lock is free again");
    runlock_release(&b);
    runlock_read_holder(lp, &h);
    test_check(!strcmp(h.state, "released"), "release marks the file released");
}

static void test_force_and_other_host(void) {
    char dir[PATH_MAX];
    subdir(dir, "force");
    runlock a, b;
    runlock_opts oa = {.job_id = "1", .host = "node-a"};
    runlock_opts ob = {.job_id = "2", .host = "node-b"};
    runlock_acquire(&a, dir, &oa);
    test_check(runlock_acquire(&b, dir, &ob) == -1 && msg_has("node-a", "job 1", NULL),
               "another host, another job: refused (%s)", err_msg());
    ob.force = 1;
    test_check(runlock_acquire(&b, dir, &ob) == 0 && strstr(b.note, "force"), "--force-unlock takes it over (%s)",
               b.note);
    runlock_release(&b);
    runlock_release(&a);
}

/* kill -9 of the holder: the kernel drops the lock; the file's stale identity
 * does not stop the next run. */
static void test_kill9(void) {
    char dir[PATH_MAX];
    subdir(dir, "kill9");
    int pfd[2];
    if (pipe(pfd)) exit(2);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        runlock l;
        runlock_opts o = {.job_id = "9", .host = "node-a"};
        char c = runlock_acquire(&l, dir, &o) == 0 ? 'y' : 'n';
        if (write(pfd[1], &c, 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    char c = 0;
    if (read(pfd[0], &c, 1) != 1) c = 0;
    runlock b;
    runlock_opts o = {.job_id = "10", .host = "node-b"};
    int refused = runlock_acquire(&b, dir, &o) == -1;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    test_check(c == 'y' && refused, "a live holder in another process refuses another host's run");
    test_check(runlock_acquire(&b, dir, &o) == 0 && b.kernel && strstr(b.note, "no longer holds"),
               "after kill -9 of the holder the lock is taken at once (%s)", b.note);
    runlock_release(&b);
    close(pfd[0]);
    close(pfd[1]);
}

/* File systems without locks: the contents rule alone. */
static void test_contents_rule(void) {
    char dir[PATH_MAX];
    subdir(dir, "nolocks");
    runlock l;
    runlock_opts o = {.job_id = "77", .host = "node-a", .no_fcntl = 1};
    write_lock_file(dir, dead_pid(), "node-a", "55");
    test_check(runlock_acquire(&l, dir, &o) == 0 && strstr(l.note, "no longer alive"),
               "no locks: a lock file left by a dead pid on this host is taken over (%s)", l.note);
    runlock_release(&l);
    write_lock_file(dir, (long)getpid(), "node-a", "55");
    test_check(runlock_acquire(&l, dir, &o) == -1 && msg_has("node-a", "job 55", NULL),
               "no locks: a live pid on this host holds it (%s)", err_msg());
    write_lock_file(dir, 12345, "node-z", "77");
    test_check(runlock_acquire(&l, dir, &o) == 0 && strstr(l.note, "same Slurm job"),
               "no locks: another host with the same Slurm job id is taken over (requeue)");
    runlock_release(&l);
    write_lock_file(dir, 12345, "node-z", "78");
    test_check(runlock_acquire(&l, dir, &o) == -1 && msg_has("12345", "node-z", "78"),
               "no locks: another host and job refuses, naming them (%s)", err_msg());
    o.job_id = NULL;
    write_lock_file(dir, 12345, "node-z", "");
    test_check(runlock_acquire(&l, dir, &o) == -1, "no locks: outside a job, another host's lock refuses");
    runlock_release(&l);
    /* a released file, and hostile contents: the message carries no raw bytes */
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/%s", dir, RUNLOCK_FILE);
    FILE *f = fopen(p, "w");
    fprintf(f, "pid=1\nhost=\x1b[31mevil\nhost2=x\njob=\n");
    fclose(f);
    int rc = runlock_acquire(&l, dir, &o);
    test_check(rc == -1 && !strchr(err_msg(), 0x1b) && strstr(err_msg(), "??31mevil"),
               "no locks: control bytes in the lock file are not echoed (%s)", err_msg());
    unlink(p);
    if (mkfifo(p, 0644) == 0) {
        alarm(10);
        test_check(runlock_acquire(&l, dir, &o) == -1 && strstr(err_msg(), "not a regular file"),
                   "a FIFO in place of the lock file is refused without blocking (%s)", err_msg());
        alarm(0);
    }
    test_check(runlock_acquire(&l, "/nonexistent-ddpm-dir", &o) == -1 && strstr(err_msg(), "/nonexistent-ddpm-dir"),
               "a missing folder fails naming it");
}

int main(void) {
    const char *base = getenv("DDPM_TEST_TMP");
    snprintf(g_root, sizeof g_root, "%s/runlock-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_root)) {
        perror(g_root);
        return 2;
    }
    test_fcntl_lock();
    test_force_and_other_host();
    test_kill9();
    test_contents_rule();
    int rc = test_done();
    if (!getenv("DDPM_TEST_KEEP")) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    }
    return rc;
}
