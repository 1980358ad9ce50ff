/* The safetensors reader and writer (common/io/safetensors.h): a written file reads
 * back (names, shapes, metadata with escapes, data) and is padded as the reference
 * writer pads; the same inputs give the same bytes; F16/BF16 convert exactly; and
 * every malformed header is refused with a message naming the file (and the
 * tensor): lengths, offsets, sizes, dtypes, and JSON outside the subset the format
 * needs. Each hostile file is built here byte by byte. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/core/util.h"
#include "common/io/safetensors.h"
#include "tests/unit/test.h"

static char g_dir[] = "/tmp/ddpm-test-st.XXXXXX";

static const char *tmp(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

/* An 8-byte length (len_override, or the JSON's), the JSON, data_len bytes of data. */
static const char *make(const char *name, const char *json, size_t data_len, uint64_t len_override) {
    const char *path = tmp(name);
    FILE *f = fopen(path, "wb");
    uint64_t n = len_override ? len_override : strlen(json);
    uint8_t lb[8];
    for (int q = 0; q < 8; q++) lb[q] = (uint8_t)(n >> (8 * q));
    fwrite(lb, 1, 8, f);
    fwrite(json, 1, strlen(json), f);
    for (size_t i = 0; i < data_len; i++) fputc((int)(i * 37 % 251), f);
    fclose(f);
    return path;
}

static void round_trip(void) {
    float a[6] = {1, -2, 3.5f, 0, 1e-30f, -0.0f}, b[2] = {7, 8};
    int sa[2] = {2, 3}, sb[1] = {2};
    st_out_tensor t[2] = {{"w.weight", 2, sa, a}, {"b \"q\"", 1, sb, b}};
    st_meta meta[2] = {{(char *)"config", (char *)"a: 1\n\tb: \"x\" \\ \x01 caf\xc3\xa9"},
                       {(char *)"step", (char *)"3"}};
    const char *p1 = tmp("rt1.safetensors"), *p2 = tmp("rt2.safetensors");
    test_check(st_write_f32(p1, meta, 2, t, 2) == 0 && st_write_f32(p2, meta, 2, t, 2) == 0,
               "st_write_f32 writes: %s", err_msg());
    st_file sf;
    if (!test_check(st_open(&sf, p1) == 0, "the written file reads back: %s", err_msg())) return;
    float ra[6], rb[2];
    int ia = st_find(&sf, "w.weight"), ib = st_find(&sf, "b \"q\"");
    test_check(sf.n_tensors == 2 && ia == 0 && ib == 1 && sf.tensors[0].ndim == 2 &&
                   sf.tensors[0].shape[0] == 2 && sf.tensors[0].shape[1] == 3 && sf.tensors[1].count == 2 &&
                   sf.tensors[0].dtype == ST_F32,
               "names (one with quotes), order, shapes and dtype read back");
    test_check(st_read_f32(&sf, ia, ra) == 0 && st_read_f32(&sf, ib, rb) == 0 &&
                   memcmp(ra, a, sizeof a) == 0 && memcmp(rb, b, sizeof b) == 0,
               "data read back bit for bit (-0, 1e-30 included)");
    const char *cv = st_meta_get(&sf, "config");
    test_check(cv && strcmp(cv, meta[0].value) == 0 && st_meta_get(&sf, "step") &&
                   !st_meta_get(&sf, "nope"),
               "metadata read back with newline, tab, quotes, backslash, control byte and UTF-8");
    test_check(sf.data_start % 8 == 0 && sf.data_size == sizeof a + sizeof b,
               "the header is padded to a multiple of 8 bytes (data at %llu)",
               (unsigned long long)sf.data_start);
    st_close(&sf);
    FILE *f1 = fopen(p1, "rb"), *f2 = fopen(p2, "rb");
    int same = 1, c1, c2;
    do { c1 = fgetc(f1); c2 = fgetc(f2); same &= c1 == c2; } while (c1 != EOF && c2 != EOF);
    fclose(f1); fclose(f2);
    test_check(same, "the same inputs give the same bytes");
}

static void half_precision(void) {
    /* F16: 1, -2, 65504, smallest subnormal 2^-24, largest subnormal, inf, -0;
     * BF16: 1, -3.5 (0xC060), 1e-38-ish (0x006D) */
    const char *j = "{\"h\":{\"dtype\":\"F16\",\"shape\":[7],\"data_offsets\":[0,14]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[14,20]}}";
    const char *path = make("half.safetensors", j, 0, 0);
    FILE *f = fopen(path, "ab");
    uint16_t h[7] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x7C00, 0x8000}, bf[3] = {0x3F80, 0xC060, 0x006D};
    for (int i = 0; i < 7; i++) { fputc(h[i] & 0xFF, f); fputc(h[i] >> 8, f); }
    for (int i = 0; i < 3; i++) { fputc(bf[i] & 0xFF, f); fputc(bf[i] >> 8, f); }
    fclose(f);
    st_file sf;
    float vh[7], vb[3];
    if (!test_check(st_open(&sf, path) == 0 && st_read_f32(&sf, 0, vh) == 0 && st_read_f32(&sf, 1, vb) == 0,
                    "F16 and BF16 tensors read: %s", err_msg()))
        return;
    uint32_t bits_b2;
    float b2 = vb[2];
    memcpy(&bits_b2, &b2, 4);
    test_check(vh[0] == 1.0f && vh[1] == -2.0f && vh[2] == 65504.0f && vh[3] == 0x1p-24f &&
                   vh[4] == 1023 * 0x1p-24f && isinf(vh[5]) && vh[5] > 0 && vh[6] == 0 && signbit(vh[6]),
               "F16 converts exactly (normal, max, subnormals, inf, -0)");
    test_check(vb[0] == 1.0f && vb[1] == -3.5f && bits_b2 == 0x006D0000u, "BF16 converts exactly");
    st_close(&sf);
}

typedef struct {
    const char *name, *json;
    size_t data;
    const char *want; /* substring of the message */
} bad_case;

#define T1 "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

static const bad_case k_bad[] = {
    {"unknown_dtype", "{\"t\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 't': unknown dtype 'F33'"},
    {"offsets_outside", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8, "tensor 't': data_offsets [4, 12] lie outside"},
    {"end_before_begin", "{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, "end before they begin"},
    {"shape_vs_bytes", "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "tensor 't': shape and dtype F32 need 12 bytes"},
    {"shape_overflow", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, "tensor 't': shape's element count overflows"},
    {"gap", T1 ",\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", 16, "tensor 'u': data_offsets begin at 12"},
    {"overlap", T1 ",\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "begin at 4, but the data before it ends at 8"},
    {"trailing_data", T1 "}", 12, "data ends at byte 8 of a 12-byte data area"},
    {"dup_tensor", T1 ",\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, "tensor 't' appears twice"},
    {"dup_field", "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 't': repeated field 'dtype'"},
    {"unknown_field", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":[1]}}", 8, "tensor 't': unknown field 'x'"},
    {"missing_offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "tensor 't': missing data_offsets"},
    {"three_offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8, "tensor 't': safetensors header byte"},
    {"negative", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "expected a non-negative integer"},
    {"fraction", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "fraction or exponent"},
    {"leading_zero", "{\"t\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 8, "leading zero"},
    {"huge_int", "{\"t\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}", 8, "integer too large"},
    {"ndim9", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, "array longer than 8"},
    {"null_value", "{\"t\":null}", 0, "expected '{'"},
    {"bool_meta", "{\"__metadata__\":{\"a\":true}}", 0, "__metadata__ 'a' (values are strings)"},
    {"dup_meta", "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, "key 'a' appears twice"},
    {"two_meta", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice"},
    {"bad_escape", "{\"__metadata__\":{\"a\":\"\\q\"}}", 0, "bad escape"},
    {"lone_surrogate", "{\"__metadata__\":{\"a\":\"\\udc00\"}}", 0, "lone low surrogate"},
    {"nul_escape", "{\"__metadata__\":{\"a\":\"\\u0000\"}}", 0, "\\u0000 in a string"},
    {"bad_utf8", "{\"__metadata__\":{\"a\":\"\xc0\x80\"}}", 0, "invalid UTF-8"},
    {"control_char", "{\"__metadata__\":{\"a\":\"x\ty\"}}", 0, "control character 0x09"},
    {"unterminated", "{\"__metadata__\":{\"a\":\"xy", 0, "unterminated string"},
    {"trailing_text", "{} x", 0, "text after the header object"},
    {"not_object", "[]", 0, "expected '{'"},
    {"empty_header", "", 0, "expected '{', found the end"},
};

static void malformed(void) {
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; i++) {
        const bad_case *c = &k_bad[i];
        char fname[64];
        snprintf(fname, sizeof fname, "%s.safetensors", c->name);
        const char *path = make(fname, c->json, c->data, 0);
        st_file sf;
        int rc = st_open(&sf, path);
        test_check(rc != 0 && strstr(err_msg(), path) && strstr(err_msg(), c->want),
                   "%s refused naming the file: %s", c->name, rc ? err_msg() : "(accepted)");
        if (rc == 0) st_close(&sf);
    }
    /* lengths */
    st_file sf;
    int rc;
    const char *p = make("short.safetensors", "", 0, 0);
    truncate(p, 5);
    test_check(st_open(&sf, p) != 0 && strstr(err_msg(), "too short"), "a 5-byte file: %s", err_msg());
    p = make("len_beyond.safetensors", "{}", 0, 1000);
    test_check(st_open(&sf, p) != 0 && strstr(err_msg(), "header length 1000 exceeds the 2 bytes"),
               "a header length beyond the file: %s", err_msg());
    p = make("len_limit.safetensors", "{}", 0, ST_MAX_HEADER + 1);
    test_check(truncate(p, (off_t)(ST_MAX_HEADER + 64)) == 0 && st_open(&sf, p) != 0 &&
                   strstr(err_msg(), "exceeds the limit"),
               "a header length over the 100 MiB limit is refused before allocating: %s", err_msg());
    p = make("valid_empty.safetensors", "{}", 0, 0);
    rc = st_open(&sf, p);
    test_check(rc == 0 && sf.n_tensors == 0, "an empty header {} (no tensors) is valid");
    if (rc == 0) st_close(&sf);
    p = make("empty_tensor.safetensors", "{\"t\":{}}", 0, 0);
    test_check(st_open(&sf, p) != 0 && strstr(err_msg(), "tensor 't': missing dtype"),
               "an empty tensor entry is refused: %s", err_msg());
    /* a valid file of the format's corner cases: whitespace, escapes, surrogate
     * pair, a zero-size tensor, no metadata, an integer dtype (readable header) */
    p = make("valid_corners.safetensors",
             " {\n \"z\" : { \"shape\" : [ 0 , 3 ], \"dtype\":\"F32\", \"data_offsets\":[0,0]},"
             "\"\\u00e9\\ud83d\\ude00\\n\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]} }  ", 8, 0);
    rc = st_open(&sf, p);
    if (test_check(rc == 0, "a valid header with whitespace, escapes, a zero-size and a scalar tensor: %s",
                   rc ? err_msg() : "read")) {
        float v;
        test_check(st_find(&sf, "\xc3\xa9\xf0\x9f\x98\x80\n") == 1 && sf.tensors[1].count == 1 &&
                       sf.tensors[0].count == 0 && st_read_f32(&sf, 1, &v) != 0 &&
                       strstr(err_msg(), "dtype I64 is not supported"),
                   "names decoded (U+00E9, a surrogate pair, \\n); an I64 tensor is refused as floats");
        st_close(&sf);
    }
}

int main(void) {
    if (!mkdtemp(g_dir)) return 1;
    round_trip();
    half_precision();
    malformed();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) return 1;
    return test_done();
}
