/* Small shared helpers: error reporting for library code, checked allocation.
 *
 * Library code never prints or exits on bad input: it records a message with
 * err_set() and returns -1; the caller (a program's main) prints err_msg().
 * Allocation failure is the one fatal case (xmalloc prints file:line and exits 2). */
#ifndef DDPM_UTIL_H
#define DDPM_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Record an error message (printf-style); always returns -1 so that
 * `return err_set(...)` is the one-line error path. Thread-local. */
int err_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefix the current message with more context ("file x: " + old message); returns -1. */
int err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *err_msg(void);

void *xmalloc_at(size_t n, const char *file, int line);
void *xcalloc_at(size_t count, size_t size, const char *file, int line);
void *xrealloc_at(void *p, size_t n, const char *file, int line);
char *xstrdup_at(const char *s, const char *file, int line);
/* 64-byte aligned, zero-filled; free with free(). */
float *xfloats_at(size_t count, const char *file, int line);
#define xmalloc(n) xmalloc_at((n), __FILE__, __LINE__)
#define xcalloc(c, s) xcalloc_at((c), (s), __FILE__, __LINE__)
#define xrealloc(p, n) xrealloc_at((p), (n), __FILE__, __LINE__)
#define xstrdup(s) xstrdup_at((s), __FILE__, __LINE__)
#define xfloats(c) xfloats_at((c), __FILE__, __LINE__)

/* Checked size arithmetic for sizes that came from outside (file headers, wire
 * messages, configs): each stores the result and returns 0, or returns -1 (result
 * untouched) when it would overflow size_t. Callers turn -1 into an error naming
 * the file and field: `if (size_mul(a, b, &n)) return err_set("%s: ...", path);` */
static inline int size_mul(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) return -1;
    *out = r;
    return 0;
}
static inline int size_add(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) return -1;
    *out = r;
    return 0;
}
/* Product of n sizes (a shape's element count); -1 on overflow. */
int size_prod(const size_t *dims, int n, size_t *out);

/* Bytes of memory this process may still take: the smaller of /proc/meminfo's
 * MemAvailable and its memory cgroup's limit minus usage (v2 memory.max and
 * memory.current, or v1 memory.limit_in_bytes and memory.usage_in_bytes: where
 * Slurm puts a job's --mem). SIZE_MAX when neither can be read. */
size_t mem_available_bytes(void);

/* Opens path for reading ("rb") only if it is a regular file: opened O_NONBLOCK
 * first, so a FIFO named like a data file is refused instead of blocking the open,
 * and a directory or device (no size to check a header against) is refused too.
 * *size gets the file's size. NULL with err_msg() naming the path. */
FILE *fopen_regular(const char *path, uint64_t *size);

/* mkdir -p: creates path and its missing parents (mode 0755); 0, or -1 with
 * err_msg() naming the part that could not be made or a path over PATH_MAX. */
int mkdir_p(const char *path);

/* Monotonic wall clock in seconds. */
double now_seconds(void);

/* Logging to stderr with a timestamp prefix; only programs and the top of
 * long-running loops call these. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A fatal error line as the programs print theirs ("ddpm-train: rank 2: ..."): no
 * timestamp, flushed at once (the process is about to end). */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
