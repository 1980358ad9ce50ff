/* safetensors reader and writer (safetensors.h). The JSON parser below takes only
 * what the header needs; anything else is refused with the byte offset. */
#include "common/io/safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/core/util.h"

static const char *const k_dtype_names[ST_NUM_DTYPES] = {
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
    "I32", "U32", "F32", "F64", "I64", "U64"};
static const int k_dtype_sizes[ST_NUM_DTYPES] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};

const char *st_dtype_name(st_dtype d) { return (unsigned)d < ST_NUM_DTYPES ? k_dtype_names[d] : "?"; }
int st_dtype_size(st_dtype d) { return (unsigned)d < ST_NUM_DTYPES ? k_dtype_sizes[d] : 0; }

/* ------------------------------------------------------------ JSON parsing */

typedef struct {
    const char *path;
    const uint8_t *s;
    size_t n, i;
    char ctx[256];      /* "tensor 'NAME': " or "__metadata__: " while inside one (messages) */
} jp;

/* Errors say where: "PATH: tensor 'NAME': safetensors header byte K: ..." */
#define JP_ERR(j, ...) jp_err((j), __VA_ARGS__)
__attribute__((format(printf, 2, 3)))
static int jp_err(const jp *j, const char *fmt, ...) {
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return err_set("%s: %ssafetensors header byte %zu: %s", j->path, j->ctx, j->i, why);
}

static void jp_ws(jp *j) {
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' ||
                           j->s[j->i] == '\r'))
        j->i++;
}

/* Skips whitespace, then takes c or fails. */
static int jp_expect(jp *j, char c) {
    jp_ws(j);
    if (j->i >= j->n) return JP_ERR(j, "expected '%c', found the end of the header", c);
    if (j->s[j->i] != (uint8_t)c) return JP_ERR(j, "expected '%c', found '%c'", c, j->s[j->i]);
    j->i++;
    return 0;
}

/* Skips whitespace; 1 and takes c when it comes next, else 0. */
static int jp_accept(jp *j, char c) {
    jp_ws(j);
    if (j->i < j->n && j->s[j->i] == (uint8_t)c) {
        j->i++;
        return 1;
    }
    return 0;
}

static int hex4(const uint8_t *p, unsigned *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned c = p[k], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        *v = *v * 16 + d;
    }
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at p (at most left bytes), 0 if none
 * (overlong forms, surrogates and code points above U+10FFFF are not). */
static size_t utf8_len(const uint8_t *p, size_t left) {
    unsigned c = p[0], cp, need, min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { need = 2; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 3; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (left < need + 1) return 0;
    for (unsigned k = 1; k <= need; k++) {
        if ((p[k] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return need + 1;
}

/* One \u escape (and its low surrogate) at j->i (just after the 'u'). */
static int jp_unicode(jp *j, unsigned *cp) {
    if (j->n - j->i < 4 || hex4(j->s + j->i, cp)) return JP_ERR(j, "bad \\u escape");
    j->i += 4;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF) return JP_ERR(j, "lone low surrogate in a \\u escape");
    if (*cp >= 0xD800 && *cp <= 0xDBFF) {
        unsigned lo;
        if (j->n - j->i < 6 || j->s[j->i] != '\\' || j->s[j->i + 1] != 'u' ||
            hex4(j->s + j->i + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
            return JP_ERR(j, "high surrogate without its low surrogate in a \\u escape");
        j->i += 6;
        *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (*cp == 0) return JP_ERR(j, "\\u0000 in a string");
    return 0;
}

/* A string, decoded into a new NUL-terminated buffer (*out, at most max bytes). */
static int jp_string(jp *j, char **out, size_t max) {
    if (jp_expect(j, '"')) return -1;
    /* decoded text is never longer than its JSON form */
    size_t start = j->i, cap = 0;
    while (start + cap < j->n && j->s[start + cap] != '"') cap += j->s[start + cap] == '\\' ? 2 : 1;
    char *o = xmalloc(cap + 1);
    size_t k = 0;
    while (1) {
        if (j->i >= j->n) { free(o); return JP_ERR(j, "unterminated string"); }
        uint8_t c = j->s[j->i];
        if (c == '"') break;
        if (c < 0x20) { free(o); return JP_ERR(j, "control character 0x%02x in a string", c); }
        if (c == '\\') {
            if (++j->i >= j->n) { free(o); return JP_ERR(j, "unterminated string"); }
            char e = (char)j->s[j->i++];
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *p = strchr(from, e);
            unsigned cp = 0;
            if (e && p) o[k++] = to[p - from];
            else if (e == 'u' && jp_unicode(j, &cp) == 0) k += put_utf8(o + k, cp);
            else { free(o); return e == 'u' ? -1 : JP_ERR(j, "bad escape '\\%c'", e); }
            continue;
        }
        size_t L = utf8_len(j->s + j->i, j->n - j->i);
        if (!L) { free(o); return JP_ERR(j, "invalid UTF-8 in a string"); }
        memcpy(o + k, j->s + j->i, L);
        k += L;
        j->i += L;
    }
    j->i++;
    o[k] = '\0';
    if (k > max) { free(o); return JP_ERR(j, "string of %zu bytes (at most %zu)", k, max); }
    *out = o;
    return 0;
}

/* A non-negative integer below 2^63 (no sign, fraction or exponent). */
static int jp_uint(jp *j, uint64_t *v) {
    jp_ws(j);
    size_t s = j->i;
    *v = 0;
    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') {
        if (*v > ((uint64_t)INT64_MAX - 9) / 10) return JP_ERR(j, "integer too large");
        *v = *v * 10 + (j->s[j->i++] - '0');
    }
    if (j->i == s) return JP_ERR(j, "expected a non-negative integer");
    if (j->s[s] == '0' && j->i - s > 1) return JP_ERR(j, "integer with a leading zero");
    if (j->i < j->n && strchr(".eE", j->s[j->i])) return JP_ERR(j, "expected an integer, found a fraction or exponent");
    return 0;
}

/* [a, b, ...] of at most max integers into v; *count gets their number. */
static int jp_uint_array(jp *j, uint64_t *v, int max, int *count) {
    *count = 0;
    if (jp_expect(j, '[')) return -1;
    if (jp_accept(j, ']')) return 0;
    do {
        if (*count == max) return JP_ERR(j, "array longer than %d", max);
        if (jp_uint(j, &v[(*count)++])) return -1;
    } while (jp_accept(j, ','));
    return jp_expect(j, ']');
}

/* ------------------------------------------------------------ header */

static int parse_dtype(jp *j, st_dtype *d, const char *tname) {
    char *s;
    if (jp_string(j, &s, 32)) return -1;
    for (int k = 0; k < ST_NUM_DTYPES; k++)
        if (strcmp(s, k_dtype_names[k]) == 0) {
            *d = (st_dtype)k;
            free(s);
            return 0;
        }
    int rc = err_set("%s: tensor '%s': unknown dtype '%.32s'", j->path, tname, s);
    free(s);
    return rc;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]} in any order, each once. */
static int parse_tensor(jp *j, st_tensor *t) {
    int seen = 0;
    snprintf(j->ctx, sizeof j->ctx, "tensor '%.200s': ", t->name);
    if (jp_expect(j, '{')) return -1;
    if (jp_accept(j, '}')) return err_set("%s: tensor '%s': missing dtype", j->path, t->name);
    do {
        char *key;
        if (jp_string(j, &key, 64)) return -1;
        int bit = !strcmp(key, "dtype") ? 1 : !strcmp(key, "shape") ? 2 : !strcmp(key, "data_offsets") ? 4 : 0;
        int rc = jp_expect(j, ':'), n = 0;
        uint64_t off[2];
        if (rc) {
        } else if (!bit || (seen & bit)) {
            rc = err_set("%s: tensor '%s': %s field '%.64s'", j->path, t->name,
                         bit ? "repeated" : "unknown", key);
        } else if (bit == 1) {
            rc = parse_dtype(j, &t->dtype, t->name);
        } else if (bit == 2) {
            rc = jp_uint_array(j, t->shape, ST_MAX_NDIM, &t->ndim);
        } else if ((rc = jp_uint_array(j, off, 2, &n)) == 0) {
            if (n != 2) rc = err_set("%s: tensor '%s': data_offsets has %d entries (must be 2)", j->path, t->name, n);
            t->begin = off[0];
            t->end = off[1];
        }
        free(key);
        if (rc) return -1;
        seen |= bit;
    } while (jp_accept(j, ','));
    if (jp_expect(j, '}')) return -1;
    j->ctx[0] = '\0';
    if (seen != 7)
        return err_set("%s: tensor '%s': missing %s", j->path, t->name,
                       !(seen & 1) ? "dtype" : !(seen & 2) ? "shape" : "data_offsets");
    return 0;
}

static int parse_metadata(jp *j, st_file *sf) {
    if (sf->meta) return JP_ERR(j, "__metadata__ appears twice");
    sf->meta = xcalloc(1, sizeof *sf->meta);
    snprintf(j->ctx, sizeof j->ctx, "__metadata__: ");
    if (jp_expect(j, '{')) return -1;
    int cap = 1;
    if (jp_accept(j, '}')) {
        j->ctx[0] = '\0';
        return 0;
    }
    do {
        if (sf->n_meta == cap) {
            cap *= 2;
            sf->meta = xrealloc(sf->meta, (size_t)cap * sizeof *sf->meta);
        }
        st_meta *m = &sf->meta[sf->n_meta];
        m->key = m->value = NULL;
        sf->n_meta++;
        if (jp_string(j, &m->key, ST_MAX_NAME) || jp_expect(j, ':')) return -1;
        for (int k = 0; k < sf->n_meta - 1; k++)
            if (!strcmp(sf->meta[k].key, m->key))
                return err_set("%s: __metadata__: key '%.64s' appears twice", j->path, m->key);
        snprintf(j->ctx, sizeof j->ctx, "__metadata__ '%.64s' (values are strings): ", m->key);
        if (jp_string(j, &m->value, ST_MAX_HEADER)) return -1;
        snprintf(j->ctx, sizeof j->ctx, "__metadata__: ");
    } while (jp_accept(j, ','));
    if (jp_expect(j, '}')) return -1;
    j->ctx[0] = '\0';
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}
static int cmp_begin(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Per tensor: count = product(shape), bytes = count x size = end - begin. */
static int check_sizes(const st_file *sf, st_tensor *t) {
    uint64_t count = 1, bytes;
    for (int d = 0; d < t->ndim; d++)
        if (__builtin_mul_overflow(count, t->shape[d], &count))
            return err_set("%s: tensor '%s': shape's element count overflows", sf->path, t->name);
    if (__builtin_mul_overflow(count, (uint64_t)st_dtype_size(t->dtype), &bytes))
        return err_set("%s: tensor '%s': byte size overflows", sf->path, t->name);
    if (t->end < t->begin)
        return err_set("%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", sf->path,
                       t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > sf->data_size)
        return err_set("%s: tensor '%s': data_offsets [%llu, %llu] lie outside the data area "
                       "(%llu bytes)", sf->path, t->name, (unsigned long long)t->begin,
                       (unsigned long long)t->end, (unsigned long long)sf->data_size);
    if (t->end - t->begin != bytes)
        return err_set("%s: tensor '%s': shape and dtype %s need %llu bytes but data_offsets [%llu, "
                       "%llu] hold %llu", sf->path, t->name, st_dtype_name(t->dtype),
                       (unsigned long long)bytes, (unsigned long long)t->begin,
                       (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
    t->count = count;
    return 0;
}

/* Names unique; tensors tile [0, data_size) in offset order. */
static int check_layout(st_file *sf) {
    int n = sf->n_tensors;
    st_tensor **v = xcalloc((size_t)n + 1, sizeof *v);
    int rc = 0;
    for (int i = 0; i < n; i++) v[i] = &sf->tensors[i];
    qsort(v, (size_t)n, sizeof *v, cmp_name);
    for (int i = 1; i < n && !rc; i++)
        if (!strcmp(v[i]->name, v[i - 1]->name))
            rc = err_set("%s: tensor '%s' appears twice", sf->path, v[i]->name);
    qsort(v, (size_t)n, sizeof *v, cmp_begin);
    uint64_t at = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (v[i]->begin != at)
            rc = err_set("%s: tensor '%s': data_offsets begin at %llu, but the data before it ends at "
                         "%llu (tensors must be contiguous, without gaps or overlaps)", sf->path,
                         v[i]->name, (unsigned long long)v[i]->begin, (unsigned long long)at);
        at = v[i]->end;
    }
    if (!rc && at != sf->data_size)
        rc = err_set("%s: the tensors' data ends at byte %llu of a %llu-byte data area", sf->path,
                     (unsigned long long)at, (unsigned long long)sf->data_size);
    free(v);
    return rc;
}

static int parse_header(st_file *sf, const uint8_t *s, size_t n) {
    jp j = {sf->path, s, n, 0, ""};
    int cap = 0;
    if (jp_expect(&j, '{')) return -1;
    if (jp_accept(&j, '}')) goto end;
    do {
        char *name;
        if (jp_string(&j, &name, ST_MAX_NAME)) return -1;
        if (jp_expect(&j, ':')) {
            free(name);
            return -1;
        }
        if (!strcmp(name, "__metadata__")) {
            free(name);
            if (parse_metadata(&j, sf)) return -1;
            continue;
        }
        if (sf->n_tensors == cap) {
            cap = cap ? 2 * cap : 64;
            sf->tensors = xrealloc(sf->tensors, (size_t)cap * sizeof *sf->tensors);
        }
        st_tensor *t = &sf->tensors[sf->n_tensors++];
        memset(t, 0, sizeof *t);
        t->name = name;
        if (parse_tensor(&j, t) || check_sizes(sf, t)) return -1;
    } while (jp_accept(&j, ','));
    if (jp_expect(&j, '}')) return -1;
end:
    jp_ws(&j);
    if (j.i != n) return JP_ERR(&j, "text after the header object");
    return check_layout(sf);
}

static int read_header(st_file *sf) {
    uint8_t lb[8];
    if (sf->file_size < 8 || fread(lb, 1, 8, sf->f) != 8)
        return err_set("%s: %llu bytes: too short for a safetensors header length", sf->path,
                       (unsigned long long)sf->file_size);
    uint64_t N = 0;
    for (int k = 7; k >= 0; k--) N = N << 8 | lb[k];
    if (N > ST_MAX_HEADER)
        return err_set("%s: header length %llu exceeds the limit of %llu bytes", sf->path,
                       (unsigned long long)N, (unsigned long long)ST_MAX_HEADER);
    if (N > sf->file_size - 8)
        return err_set("%s: header length %llu exceeds the %llu bytes after the length field",
                       sf->path, (unsigned long long)N, (unsigned long long)(sf->file_size - 8));
    uint8_t *buf = xmalloc((size_t)N + 1);
    int rc = fread(buf, 1, (size_t)N, sf->f) == (size_t)N ? 0
             : err_set("%s: cannot read the %llu-byte header", sf->path, (unsigned long long)N);
    sf->data_start = 8 + N;
    sf->data_size = sf->file_size - sf->data_start;
    if (rc == 0) rc = parse_header(sf, buf, (size_t)N);
    free(buf);
    return rc;
}

int st_open(st_file *sf, const char *path) {
    memset(sf, 0, sizeof *sf);
    sf->path = xstrdup(path);
    sf->f = fopen_regular(path, &sf->file_size);
    if (!sf->f || read_header(sf) != 0) {
        st_close(sf);
        return -1;
    }
    return 0;
}

void st_close(st_file *sf) {
    if (sf->f) fclose(sf->f);
    for (int i = 0; i < sf->n_tensors; i++) free(sf->tensors[i].name);
    for (int i = 0; i < sf->n_meta; i++) {
        free(sf->meta[i].key);
        free(sf->meta[i].value);
    }
    free(sf->tensors);
    free(sf->meta);
    free(sf->path);
    memset(sf, 0, sizeof *sf);
}

int st_find(const st_file *sf, const char *name) {
    for (int i = 0; i < sf->n_tensors; i++)
        if (!strcmp(sf->tensors[i].name, name)) return i;
    return -1;
}

const char *st_meta_get(const st_file *sf, const char *key) {
    for (int i = 0; i < sf->n_meta; i++)
        if (sf->meta[i].key && !strcmp(sf->meta[i].key, key)) return sf->meta[i].value;
    return NULL;
}

/* ------------------------------------------------------------ data */

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = h >> 10 & 0x1F, m = h & 0x3FF, bits;
    if (e == 0x1F) {
        bits = sign | 0x7F800000u | m << 13; /* inf, NaN (payload kept) */
    } else if (e) {
        bits = sign | (e + 112) << 23 | m << 13;
    } else if (m) { /* subnormal: m x 2^-24, normalised */
        int sh = 0;
        while (!(m & 0x400)) { m <<= 1; sh++; }
        bits = sign | (uint32_t)(113 - sh) << 23 | (m & 0x3FF) << 13;
    } else {
        bits = sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int st_read_f32(const st_file *sf, int i, float *dst) {
    const st_tensor *t = &sf->tensors[i];
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return err_set("%s: tensor '%s': dtype %s is not supported (F32, F16, BF16)", sf->path,
                       t->name, st_dtype_name(t->dtype));
    if (fseeko(sf->f, (off_t)(sf->data_start + t->begin), SEEK_SET) != 0)
        return err_set("%s: tensor '%s': cannot seek: %s", sf->path, t->name, strerror(errno));
    int size = st_dtype_size(t->dtype);
    uint8_t buf[1 << 14];
    for (uint64_t done = 0; done < t->count;) {
        size_t k = t->count - done < sizeof buf / (size_t)size ? (size_t)(t->count - done)
                                                               : sizeof buf / (size_t)size;
        if (fread(buf, (size_t)size, k, sf->f) != k)
            return err_set("%s: tensor '%s': file ends inside its data", sf->path, t->name);
        for (size_t e = 0; e < k; e++) {
            const uint8_t *p = buf + e * (size_t)size;
            if (size == 4) {
                uint32_t b = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
                memcpy(&dst[done + e], &b, 4);
            } else {
                uint16_t h = (uint16_t)(p[0] | p[1] << 8);
                dst[done + e] = t->dtype == ST_F16 ? half_to_float(h) : bf16_to_float(h);
            }
        }
        done += k;
    }
    return 0;
}

/* ------------------------------------------------------------ writer */

static void json_string(FILE *o, const char *s) {
    fputc('"', o);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(o, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", o);
        else if (*p == '\t') fputs("\\t", o);
        else if (*p == '\r') fputs("\\r", o);
        else if (*p < 0x20) fprintf(o, "\\u%04x", *p);
        else fputc(*p, o);
    }
    fputc('"', o);
}

/* The header JSON, padded with spaces to a multiple of 8 (with the length field). */
static char *build_header(const st_meta *meta, int n_meta, const st_out_tensor *t, int n, size_t *len) {
    char *text = NULL;
    size_t size = 0;
    FILE *o = open_memstream(&text, &size);
    if (!o) return NULL;
    fputc('{', o);
    if (n_meta > 0) {
        fputs("\"__metadata__\":{", o);
        for (int i = 0; i < n_meta; i++) {
            if (i) fputc(',', o);
            json_string(o, meta[i].key);
            fputc(':', o);
            json_string(o, meta[i].value);
        }
        fputc('}', o);
    }
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        if (i || n_meta > 0) fputc(',', o);
        json_string(o, t[i].name);
        fputs(":{\"dtype\":\"F32\",\"shape\":[", o);
        uint64_t count = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            fprintf(o, "%s%d", d ? "," : "", t[i].shape[d]);
            count *= (uint64_t)t[i].shape[d];
        }
        fprintf(o, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
                (unsigned long long)(at + 4 * count));
        at += 4 * count;
    }
    fputc('}', o);
    while ((ftello(o) + 8) % 8) fputc(' ', o);
    if (fclose(o) != 0) { free(text); return NULL; }
    *len = size;
    return text;
}

static int write_floats(FILE *f, const float *v, uint64_t count) {
    uint8_t buf[1 << 14];
    for (uint64_t done = 0; done < count;) {
        size_t k = count - done < sizeof buf / 4 ? (size_t)(count - done) : sizeof buf / 4;
        for (size_t e = 0; e < k; e++) {
            uint32_t b;
            memcpy(&b, &v[done + e], 4);
            for (int q = 0; q < 4; q++) buf[4 * e + (size_t)q] = (uint8_t)(b >> (8 * q));
        }
        if (fwrite(buf, 4, k, f) != k) return -1;
        done += k;
    }
    return 0;
}

int st_write_f32(const char *path, const st_meta *meta, int n_meta, const st_out_tensor *t, int n) {
    for (int i = 0; i < n; i++)
        if (t[i].ndim < 0 || t[i].ndim > ST_MAX_NDIM)
            return err_set("%s: tensor '%s': %d dimensions (at most %d)", path, t[i].name, t[i].ndim,
                           ST_MAX_NDIM);
    size_t hlen;
    char *hdr = build_header(meta, n_meta, t, n, &hlen);
    if (!hdr) return err_set("%s: cannot build the header", path);
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        free(hdr);
        return err_set("%s: path too long", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(hdr);
        return err_set("%s: cannot create: %s", tmp, strerror(errno));
    }
    uint8_t lb[8];
    for (int q = 0; q < 8; q++) lb[q] = (uint8_t)((uint64_t)hlen >> (8 * q));
    int bad = fwrite(lb, 1, 8, f) != 8 || fwrite(hdr, 1, hlen, f) != hlen;
    for (int i = 0; i < n && !bad; i++) {
        uint64_t count = 1;
        for (int d = 0; d < t[i].ndim; d++) count *= (uint64_t)t[i].shape[d];
        bad = write_floats(f, t[i].data, count) != 0;
    }
    bad = fflush(f) != 0 || bad || fsync(fileno(f)) != 0;
    bad = fclose(f) != 0 || bad;
    free(hdr);
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return err_set("%s: write failed: %s", path, strerror(e));
    }
    return 0;
}
