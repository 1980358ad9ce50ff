#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common/core/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <limits.h>
#include <sys/stat.h>

static _Thread_local char g_err[1024];

int err_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return -1;
}

int err_prefix(const char *fmt, ...) {
    char old[sizeof g_err];
    memcpy(old, g_err, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof g_err)
        snprintf(g_err + n, sizeof g_err - (size_t)n, "%s", old);
    return -1;
}

const char *err_msg(void) { return g_err[0] ? g_err : "unknown error"; }

FILE *fopen_regular(const char *path, uint64_t *size) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        err_set("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    int fl;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        err_set("%s: not a regular file", path);
    } else if ((fl = fcntl(fd, F_GETFL)) == -1 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
        err_set("%s: cannot open: %s", path, strerror(errno));
    } else {
        FILE *f = fdopen(fd, "rb");
        if (f) {
            *size = (uint64_t)st.st_size;
            return f;
        }
        err_set("%s: cannot open: %s", path, strerror(errno));
    }
    close(fd);
    return NULL;
}

int mkdir_p(const char *path) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return err_set("%s: path too long", path);
    for (char *q = tmp + 1; *q; q++) {
        if (*q != '/') continue;
        *q = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return err_set("%s: cannot create: %s", tmp, strerror(errno));
        *q = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return err_set("%s: cannot create: %s", tmp, strerror(errno));
    return 0;
}

int size_prod(const size_t *dims, int n, size_t *out) {
    size_t r = 1;
    for (int i = 0; i < n; i++)
        if (size_mul(r, dims[i], &r)) return -1;
    *out = r;
    return 0;
}

static void oom(size_t n, const char *file, int line) {
    fprintf(stderr, "fatal: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
    exit(2);
}

void *xmalloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n, file, line);
    return p;
}

void *xcalloc_at(size_t count, size_t size, const char *file, int line) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom(count * size, file, line);
    return p;
}

void *xrealloc_at(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n, file, line);
    return q;
}

char *xstrdup_at(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc_at(n, file, line);
    memcpy(p, s, n);
    return p;
}

float *xfloats_at(size_t count, const char *file, int line) {
    size_t bytes = count * sizeof(float);
    if (count && bytes / sizeof(float) != count) oom(SIZE_MAX, file, line);
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = NULL;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) oom(bytes, file, line);
    memset(p, 0, rounded ? rounded : 64);
    return p;
}

/* The first unsigned number in file `path` (1), 0 when it says "max" or holds
 * none (unlimited or unreadable). */
static int read_u64_file(const char *path, unsigned long long *v) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fscanf(f, "%llu", v) == 1;
    fclose(f);
    return ok;
}

static void cgroup_limit(size_t *avail) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        if (!b) continue;
        *b = 0;
        const char *ctrl = a + 1, *path = b + 1;
        char lim[4400], use[4400];
        if (strcmp(ctrl, "") == 0 && line[0] == '0') { /* v2 */
            snprintf(lim, sizeof lim, "/sys/fs/cgroup%s/memory.max", path);
            snprintf(use, sizeof use, "/sys/fs/cgroup%s/memory.current", path);
        } else if (strcmp(ctrl, "memory") == 0) { /* v1 */
            snprintf(lim, sizeof lim, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", path);
            snprintf(use, sizeof use, "/sys/fs/cgroup/memory%s/memory.usage_in_bytes", path);
        } else {
            continue;
        }
        unsigned long long l, u;
        if (read_u64_file(lim, &l) && read_u64_file(use, &u) && l < (1ull << 60)) {
            size_t left = u < l ? (size_t)(l - u) : 0;
            if (left < *avail) *avail = left;
        }
    }
    fclose(f);
}

size_t mem_available_bytes(void) {
    size_t avail = SIZE_MAX;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                avail = (size_t)kb * 1024;
                break;
            }
        fclose(f);
    }
    cgroup_limit(&avail);
    return avail;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void vlog(const char *level, const char *fmt, va_list ap) {
    char stamp[32];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "[%s] %s", stamp, level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void log_info(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog("", fmt, ap);
    va_end(ap);
}

void log_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

void log_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog("warning: ", fmt, ap);
    va_end(ap);
}
