/* Wire layer: codec round trips, bf16 rounding against a reference computed in
 * double, the error-feedback identity, compression ratios (printed as "# ratio"
 * lines), every class of malformed input, and a random mutation loop. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <zstd.h>

#include "common/core/util.h"
#include "common/wire/wire.h"
#include "proto/wire.pb-c.h"
#include "tests/unit/test.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unif(void) { return ((double)(rnd() >> 11) + 0.5) / 9007199254740992.0; }
static double gauss(void) { return sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif()); }

static uint32_t fbits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static float bitsf(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

static int msg_has(const char *needle) { return strstr(err_msg(), needle) != NULL; }
/* err_msg() says "unknown error" when nothing was recorded since err_clear(). */
static void err_clear(void) { err_set("%s", ""); }
static int err_empty(void) { return strcmp(err_msg(), "unknown error") == 0; }

/* A gradient-like vector: tensors of U-Net-like sizes, each with its own scale
 * (log-uniform over 1e-6..1e-2) and heavy-tailed values (Gaussian times a
 * log-normal factor), a few tensors exactly zero (as the gradient of biases
 * before a GroupNorm is). */
static void gradient_like(float *g, size_t n) {
    static const size_t sizes[] = {9216, 32, 32, 32, 18432, 64, 64, 64, 36864, 64, 2048, 4096,
                                   128, 147456, 128, 65536, 256, 256, 294912, 128, 1024, 96};
    size_t i = 0, k = 0;
    while (i < n) {
        size_t len = sizes[k % (sizeof sizes / sizeof sizes[0])];
        k++;
        if (len > n - i) len = n - i;
        double scale = pow(10.0, -6 + 4 * unif());
        int zero = (k % 17) == 5;
        for (size_t j = 0; j < len; j++)
            g[i + j] = zero ? 0.0f : (float)(scale * gauss() * exp(0.5 * gauss()));
        i += len;
    }
}

/* Reference bf16 rounding in double: the two bf16 neighbours of |x| and the nearer one,
 * ties to the one with an even last mantissa bit. Finite x only, no saturation. */
static float bf16_ref(float x) {
    uint32_t u = fbits(x), sign = u & 0x80000000u, mag = u & 0x7FFFFFFFu;
    float lo = bitsf(mag & 0xFFFF0000u), hi = bitsf((mag & 0xFFFF0000u) + 0x10000u);
    /* above the largest bf16 the upper neighbour is 2^128 (= Inf as a float) */
    double hi_d = isinf(hi) ? 0x1p128 : (double)hi;
    double a = fabs((double)x), dlo = a - (double)lo, dhi = hi_d - a;
    float r;
    if (dlo < dhi) r = lo;
    else if (dhi < dlo) r = hi;
    else r = ((fbits(lo) >> 16) & 1u) ? hi : lo;
    return bitsf(fbits(r) | sign);
}

/* ---------------------------------------------------------------- bf16 rounding */

static void test_bf16_rounding(void) {
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)rnd();
        if ((u & 0x7F800000u) == 0x7F800000u) continue;
        if (i % 4 == 0) u = (u & 0xFFFF0000u) | 0x8000u; /* exact ties */
        if (i % 4 == 1) u &= 0x807FFFFFu;                /* subnormals */
        float x = bitsf(u);
        float want = bf16_ref(x);
        uint16_t got = wire_bf16_round(x);
        if (fbits(want) != (uint32_t)got << 16) {
            if (bad++ < 5) printf("# bf16(%a) = %04x, reference %08x\n", (double)x, got, fbits(want));
        }
    }
    test_check(bad == 0, "bf16 RNE matches the double reference on 200000 floats incl. ties and subnormals (%d off)", bad);

    /* Hand-worked ties: 1 + 2^-8 lies halfway between 1 (even) and 1 + 2^-7 (odd). */
    test_check(wire_bf16_round(1.0f + 0x1p-8f) == 0x3F80, "tie 1+2^-8 rounds down to even 1.0");
    test_check(wire_bf16_round(1.0f + 3 * 0x1p-8f) == 0x3F82, "tie 1+3*2^-8 rounds up to even 1+2^-6");
    test_check(wire_bf16_round(-(1.0f + 3 * 0x1p-8f)) == 0xBF82, "negative tie rounds to even");
    test_check(wire_bf16_round(1.0f + 0x1p-8f + 0x1p-23f) == 0x3F81, "just above a tie rounds up");
    test_check(wire_bf16_round(-0.0f) == 0x8000 && wire_bf16_round(0.0f) == 0, "signed zeros kept");
    test_check(wire_bf16_round(INFINITY) == 0x7F80 && wire_bf16_round(-INFINITY) == 0xFF80, "inf stays inf");
    uint16_t qn = wire_bf16_round(NAN), sn = wire_bf16_round(bitsf(0x7F800001u));
    test_check((qn & 0x7F80) == 0x7F80 && (qn & 0x7F) && (sn & 0x7F80) == 0x7F80 && (sn & 0x7F),
               "NaN stays NaN (payload only in low bits: %04x)", sn);
    test_check(wire_bf16_round(FLT_MAX) == 0x7F80, "FLT_MAX rounds to +inf (IEEE)");
    test_check(wire_bf16_round_sat(FLT_MAX) == 0x7F7F && wire_bf16_round_sat(-FLT_MAX) == 0xFF7F,
               "saturating rounding keeps FLT_MAX finite (largest bf16)");
    test_check(wire_bf16_round_sat(1.5f) == wire_bf16_round(1.5f), "saturating = plain below the top");
}

/* ---------------------------------------------------------------- round trips */

static void test_round_trips(wire_ctx *c) {
    static const size_t ns[] = {0, 1, 7, 1000, 100003};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        size_t n = ns[k];
        float *g = xfloats(n + 1), *acc = xfloats(n + 1), *res = xfloats(n + 1), *base = xfloats(n + 1);
        gradient_like(g, n);
        if (n > 3) { g[0] = -0.0f; g[1] = FLT_MAX; g[2] = FLT_TRUE_MIN; g[3] = -1e-40f; }
        const uint8_t *out;
        size_t len;
        for (int codec = CODEC_FP32; codec <= CODEC_FP32_ZSTD; codec++) {
            for (size_t i = 0; i < n; i++) acc[i] = -0.0f; /* -0 + x == x bit for bit */
            int rc = wire_encode(c, codec, 3, g, NULL, n, &out, &len);
            if (rc == 0) rc = wire_decode_add(c, codec, out, len, acc, n);
            int exact = rc == 0;
            for (size_t i = 0; i < n && exact; i++) exact = fbits(acc[i]) == fbits(g[i]);
            test_check(exact, "%s round trip n=%zu bit-exact (%zu bytes) %s", wire_codec_name(codec), n,
                       len, rc ? err_msg() : "");
            if (codec == CODEC_FP32 && n > 0) {
                int le = 1;
                for (size_t i = 0; i < n && le; i++) {
                    uint32_t u = fbits(g[i]);
                    le = out[4 * i] == (u & 0xFF) && out[4 * i + 3] == (u >> 24);
                }
                test_check(le && len == 4 * n, "fp32 payload is raw little-endian float32, n=%zu", n);
            }
        }
        /* Adding: acc = base + decoded. */
        for (size_t i = 0; i < n; i++) base[i] = acc[i] = (float)gauss();
        int rc = wire_encode(c, CODEC_FP32_ZSTD, 1, g, NULL, n, &out, &len);
        if (rc == 0) rc = wire_decode_add(c, CODEC_FP32_ZSTD, out, len, acc, n);
        int adds = rc == 0;
        for (size_t i = 0; i < n && adds; i++) adds = acc[i] == base[i] + g[i];
        test_check(adds, "decode adds into acc (fp32_zstd, n=%zu)", n);

        /* bf16: decoded == RNE(g) (the reference), within 2^-8 relative, residual = g - sent. */
        if (n > 3) g[1] = 3.0e38f;
        for (size_t i = 0; i < n; i++) { acc[i] = 0.0f; res[i] = 0.0f; }
        rc = wire_encode(c, CODEC_BF16_ZSTD, 3, g, res, n, &out, &len);
        if (rc == 0) rc = wire_decode_add(c, CODEC_BF16_ZSTD, out, len, acc, n);
        int ok = rc == 0, within = 1, resid = 1;
        for (size_t i = 0; i < n && ok; i++) {
            float want = bf16_ref(g[i]);
            if (fbits(acc[i]) != fbits(want) && !(acc[i] == 0 && want == 0)) ok = 0;
            /* half a bf16 ulp: 2^-8 relative for normals, 2^-134 absolute for subnormals */
            if (fabs((double)acc[i] - g[i]) > fmax(fabs((double)g[i]) * 0x1p-8, 0x1p-134)) within = 0;
            if ((double)res[i] != (double)g[i] - (double)acc[i]) resid = 0;
        }
        test_check(ok, "bf16_zstd round trip n=%zu equals reference RNE (%zu bytes) %s", n, len, rc ? err_msg() : "");
        test_check(within && resid, "bf16_zstd n=%zu: |sent - g| <= 2^-8 |g| and residual == g - sent exactly", n);
        free(g); free(acc); free(res); free(base);
    }

    /* Saturation: the largest finite floats encode as the largest bf16, the rest kept. */
    float g2[2] = {FLT_MAX, -FLT_MAX}, r2[2] = {0, 0}, a2[2] = {0, 0};
    const uint8_t *out;
    size_t len;
    int rc = wire_encode(c, CODEC_BF16_ZSTD, 1, g2, r2, 2, &out, &len);
    if (rc == 0) rc = wire_decode_add(c, CODEC_BF16_ZSTD, out, len, a2, 2);
    test_check(rc == 0 && a2[0] == wire_bf16_to_float(0x7F7F) && a2[1] == -a2[0] &&
                   (double)r2[0] == (double)FLT_MAX - (double)a2[0],
               "bf16 saturates FLT_MAX to 3.3895e38, residual keeps %g", (double)r2[0]);
}

/* ---------------------------------------------------------------- error feedback */

static void test_error_feedback(wire_ctx *c) {
    enum { N = 20000, K = 50 };
    float *g = xfloats(N), *res = xfloats(N), *dec = xfloats(N);
    double *sum_g = calloc(N, sizeof(double)), *sum_sent = calloc(N, sizeof(double)),
           *bound = calloc(N, sizeof(double)), *sum_plain = calloc(N, sizeof(double));
    int rc = 0;
    for (int k = 0; k < K && rc == 0; k++) {
        gradient_like(g, N);
        for (size_t i = 0; i < N; i++) {
            /* v = fl(g + r) may round: one float rounding of |v| <= |g| + |r| per step. */
            bound[i] += ((double)fabsf(g[i]) + fabsf(res[i])) * 0x1p-24;
            sum_g[i] += g[i];
            dec[i] = 0.0f;
        }
        const uint8_t *out;
        size_t len;
        rc = wire_encode(c, CODEC_BF16_ZSTD, 1, g, res, N, &out, &len);
        if (rc == 0) rc = wire_decode_add(c, CODEC_BF16_ZSTD, out, len, dec, N);
        for (size_t i = 0; i < N; i++) sum_sent[i] += dec[i];
        /* Without error feedback each step's rounding error would stay in the sum. */
        for (size_t i = 0; i < N; i++) sum_plain[i] += wire_bf16_to_float(wire_bf16_round(g[i]));
    }
    test_check(rc == 0, "error feedback: %d steps encoded and decoded %s", K, rc ? err_msg() : "");
    int bad = 0;
    double worst = 0, err_fb = 0, err_plain = 0;
    for (size_t i = 0; i < N; i++) {
        double e = fabs(sum_sent[i] - (sum_g[i] - res[i]));
        if (e > bound[i] * 1.0001 + 1e-45) bad++;
        if (bound[i] > 0 && e / bound[i] > worst) worst = e / bound[i];
        err_fb += fabs(sum_sent[i] - sum_g[i]);
        err_plain += fabs(sum_plain[i] - sum_g[i]);
    }
    test_check(bad == 0, "error feedback: sum of sent == sum of gradients - residual, per element, within "
               "float rounding of g + r (%d off, worst %.3g of the bound)", bad, worst);
    printf("# error feedback: sum |sent - g| over %d steps %.4g, without feedback %.4g\n", K, err_fb, err_plain);
    test_check(err_fb < 0.5 * err_plain, "error feedback lowers the accumulated error (%.3g vs %.3g)", err_fb, err_plain);
    int res_small = 1;
    for (size_t i = 0; i < N && res_small; i++) {
        /* The residual is at most half a bf16 ulp of the last v ~ 2^-8 |v|. */
        double v = (double)dec[i] + res[i];
        res_small = fabs(res[i]) <= fabs(v) * 0x1p-8 + 1e-45;
    }
    test_check(res_small, "residual is at most half a bf16 ulp of the value it came from");
    free(g); free(res); free(dec); free(sum_g); free(sum_sent); free(bound); free(sum_plain);
}

/* ---------------------------------------------------------------- ratios */

static size_t zstd_plain(const void *src, size_t len, int level) {
    size_t cap = ZSTD_compressBound(len);
    void *dst = xmalloc(cap);
    size_t r = ZSTD_compress(dst, cap, src, len, level);
    free(dst);
    return ZSTD_isError(r) ? 0 : r;
}

static void test_ratios(wire_ctx *c) {
    size_t n = 1623169; /* the fashion_mnist U-Net's parameter count */
    float *g = xfloats(n), *res = xfloats(n);
    gradient_like(g, n);
    double raw = 4.0 * n;
    uint16_t *b16 = xmalloc(2 * n);
    for (size_t i = 0; i < n; i++) b16[i] = wire_bf16_round(g[i]);
    for (int level = 1; level <= 3; level += 2) {
        const uint8_t *out;
        size_t len_f, len_b;
        int rc = wire_encode(c, CODEC_FP32_ZSTD, level, g, NULL, n, &out, &len_f);
        memset(res, 0, n * sizeof *res);
        if (rc == 0) rc = wire_encode(c, CODEC_BF16_ZSTD, level, g, res, n, &out, &len_b);
        size_t plain_f = zstd_plain(g, 4 * n, level), plain_b = zstd_plain(b16, 2 * n, level);
        test_check(rc == 0 && plain_f && plain_b, "ratios: encoded at level %d", level);
        printf("# ratio level %d: fp32+zstd %.3fx, fp32 shuffle+zstd %.3fx, bf16+zstd %.3fx, "
               "bf16 shuffle+zstd %.3fx (vs raw fp32, %zu values)\n", level, raw / plain_f, raw / len_f,
               raw / plain_b, raw / len_b, n);
        printf("# ratio level %d: bf16 shuffle+zstd is %.3fx smaller than the 16-bit baseline (bf16 raw)\n",
               level, 2.0 * n / len_b);
        /* Speed, for the docs (not checked: it depends on the machine and the build). */
        float *acc = xfloats(n);
        double t0 = now_seconds();
        wire_encode(c, CODEC_BF16_ZSTD, level, g, res, n, &out, &len_b);
        double t1 = now_seconds();
        wire_decode_add(c, CODEC_BF16_ZSTD, out, len_b, acc, n);
        double t2 = now_seconds();
        wire_encode(c, CODEC_FP32_ZSTD, level, g, NULL, n, &out, &len_f);
        double t3 = now_seconds();
        wire_decode_add(c, CODEC_FP32_ZSTD, out, len_f, acc, n);
        double t4 = now_seconds();
        printf("# speed level %d (MB of fp32 per second): bf16_zstd encode %.0f decode %.0f, "
               "fp32_zstd encode %.0f decode %.0f\n", level, raw / 1e6 / (t1 - t0), raw / 1e6 / (t2 - t1),
               raw / 1e6 / (t3 - t2), raw / 1e6 / (t4 - t3));
        free(acc);
        test_check(len_f < plain_f, "byte shuffle helps fp32 at level %d (%zu < %zu bytes)", level, len_f, plain_f);
        test_check(len_b < plain_b, "byte shuffle helps bf16 at level %d (%zu < %zu bytes)", level, len_b, plain_b);
    }
    free(g); free(res); free(b16);
}

/* ---------------------------------------------------------------- malformed input */

static int acc_untouched(const float *acc, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (acc[i] != 1.0f) return 0;
    return 1;
}

static void test_bad_payloads(wire_ctx *c) {
    enum { N = 4096 };
    float g[N], acc[N], res[N];
    for (int i = 0; i < N; i++) { g[i] = (float)gauss() * 1e-3f; acc[i] = 1.0f; res[i] = 0; }
    const uint8_t *out;
    size_t len;
    uint8_t *buf = xmalloc(4 * N + 64);

    /* fp32 wrong size */
    wire_encode(c, CODEC_FP32, 0, g, NULL, N, &out, &len);
    memcpy(buf, out, len);
    int rc = wire_decode_add(c, CODEC_FP32, buf, len - 1, acc, N);
    test_check(rc == -1 && msg_has("expected 16384") && acc_untouched(acc, N), "fp32 short payload refused: %s", err_msg());
    rc = wire_decode_add(c, CODEC_FP32, buf, len, acc, N - 1);
    test_check(rc == -1 && msg_has("bytes"), "fp32 payload for another n refused: %s", err_msg());
    /* non-finite values in the payload; acc unchanged although earlier values are fine */
    uint32_t nan = 0x7FC00000u;
    memcpy(buf + 4 * (N - 1), &nan, 4);
    rc = wire_decode_add(c, CODEC_FP32, buf, len, acc, N);
    test_check(rc == -1 && msg_has("not finite") && acc_untouched(acc, N), "fp32 NaN refused, acc unchanged: %s", err_msg());

    for (int codec = CODEC_FP32_ZSTD; codec <= CODEC_BF16_ZSTD; codec++) {
        const char *nm = wire_codec_name(codec);
        size_t elt = codec == CODEC_FP32_ZSTD ? 4 : 2;
        memset(res, 0, sizeof res);
        rc = wire_encode(c, codec, 3, g, res, N, &out, &len);
        memcpy(buf, out, len);
        test_check(rc == 0, "%s encoded %zu bytes", nm, len);
        rc = wire_decode_add(c, codec, buf, len / 2, acc, N);
        test_check(rc == -1 && acc_untouched(acc, N), "%s truncated payload refused: %s", nm, err_msg());
        rc = wire_decode_add(c, codec, buf, 3, acc, N);
        test_check(rc == -1 && msg_has("not a zstd frame"), "%s 3-byte payload refused: %s", nm, err_msg());
        rc = wire_decode_add(c, codec, buf, 0, acc, N);
        test_check(rc == -1 && msg_has("empty"), "%s empty payload refused: %s", nm, err_msg());
        rc = wire_decode_add(c, codec, buf, len, acc, N / 2);
        test_check(rc == -1 && msg_has("declares"), "%s payload for another n refused: %s", nm, err_msg());
        /* corrupt the body: the block decoder or the checksum catches it */
        int caught = 0, tried = 0;
        for (size_t pos = 12; pos < len; pos += len / 16 + 1, tried++) {
            memcpy(buf, out, len);
            buf[pos] ^= 0x5A;
            /* checksum, block decoder or size check: any refusal with a message */
            if (wire_decode_add(c, codec, buf, len, acc, N) == -1 && (msg_has("corrupt") || msg_has("bytes"))) caught++;
            else printf("# %s corruption at %zu: %s\n", nm, pos, err_msg());
        }
        test_check(caught == tried && acc_untouched(acc, N), "%s corrupted bodies refused (%d of %d)", nm, caught, tried);
        memcpy(buf, out, len);
        memcpy(buf + len, "\x28\xb5\x2f\xfd\x00", 5);
        rc = wire_decode_add(c, codec, buf, len + 5, acc, N);
        test_check(rc == -1 && msg_has("5 bytes after its zstd frame") && acc_untouched(acc, N),
                   "%s trailing bytes refused: %s", nm, err_msg());
        /* a skippable frame (magic 0x184D2A50, 4-byte size, 0 bytes) before the data */
        memmove(buf + 8, buf, len);
        memcpy(buf, "\x50\x2a\x4d\x18\x00\x00\x00\x00", 8);
        rc = wire_decode_add(c, codec, buf, len + 8, acc, N);
        test_check(rc == -1 && msg_has("bad magic"), "%s skippable frame refused: %s", nm, err_msg());
        memcpy(buf, out, len);
        buf[0] ^= 0xFF;
        rc = wire_decode_add(c, codec, buf, len, acc, N);
        test_check(rc == -1 && msg_has("not a zstd frame"), "%s bad magic refused: %s", nm, err_msg());

        /* zstd bombs: 16 MiB of zeros compress to about 1 KiB; the decoder must stop at N*elt. */
        size_t big = (size_t)16 << 20;
        uint8_t *zeros = calloc(big, 1);
        size_t cap = ZSTD_compressBound(big);
        uint8_t *bomb = xmalloc(cap);
        size_t blen = ZSTD_compress(bomb, cap, zeros, big, 3);
        rc = wire_decode_add(c, codec, bomb, blen, acc, N);
        test_check(rc == -1 && msg_has("declares") && acc_untouched(acc, N),
                   "%s bomb (%zu bytes -> 16 MiB, size declared) refused: %s", nm, blen, err_msg());
        /* the same without a declared size: stopped by the output bound */
        ZSTD_CCtx *cc = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 3);
        ZSTD_outBuffer ob = {bomb, cap, 0};
        ZSTD_inBuffer ib = {zeros, big, 0};
        size_t left = ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_end);
        rc = wire_decode_add(c, codec, bomb, ob.pos, acc, N);
        test_check(left == 0 && rc == -1 && msg_has("more than") && acc_untouched(acc, N),
                   "%s bomb without declared size (%zu bytes) refused: %s", nm, ob.pos, err_msg());
        /* too short without a declared size */
        ob.pos = 0;
        ZSTD_CCtx_reset(cc, ZSTD_reset_session_only);
        ZSTD_inBuffer ib2 = {zeros, N * elt - 2, 0};
        ZSTD_compressStream2(cc, &ob, &ib2, ZSTD_e_end);
        rc = wire_decode_add(c, codec, bomb, ob.pos, acc, N);
        test_check(rc == -1 && msg_has("decompresses to") && acc_untouched(acc, N),
                   "%s payload short by 2 bytes (no declared size) refused: %s", nm, err_msg());
        /* well formed, right size, but a non-finite value inside */
        uint8_t *planes = xmalloc(N * elt);
        memset(planes, 0, N * elt);
        if (codec == CODEC_FP32_ZSTD) { planes[2 * N + 7] = 0x80; planes[3 * N + 7] = 0x7F; } /* +inf */
        else { planes[7] = 0xC0; planes[N + 7] = 0x7F; }                                     /* NaN */
        blen = ZSTD_compress(bomb, cap, planes, N * elt, 1);
        rc = wire_decode_add(c, codec, bomb, blen, acc, N);
        test_check(rc == -1 && msg_has("value 7 is not finite") && acc_untouched(acc, N),
                   "%s non-finite value refused: %s", nm, err_msg());
        ZSTD_freeCCtx(cc);
        free(zeros); free(bomb); free(planes);
    }
    rc = wire_decode_add(c, (wire_codec)7, buf, 16, acc, 4);
    test_check(rc == -1 && msg_has("unknown codec"), "unknown codec refused: %s", err_msg());

    /* encoder refusals */
    g[5] = INFINITY;
    rc = wire_encode(c, CODEC_FP32_ZSTD, 1, g, NULL, N, &out, &len);
    test_check(rc == -1 && msg_has("5 is not finite"), "encode refuses inf: %s", err_msg());
    g[5] = FLT_MAX;
    res[5] = FLT_MAX;
    res[6] = 0.25f;
    rc = wire_encode(c, CODEC_BF16_ZSTD, 1, g, res, N, &out, &len);
    test_check(rc == -1 && msg_has("at 5 is not finite") && res[6] == 0.25f,
               "encode refuses g + residual overflowing, residual unchanged: %s", err_msg());
    g[5] = 0;
    rc = wire_encode(c, CODEC_BF16_ZSTD, 1, g, NULL, N, &out, &len);
    test_check(rc == -1 && msg_has("residual"), "bf16 without residual refused: %s", err_msg());
    rc = wire_encode(c, CODEC_FP32_ZSTD, 1000, g, NULL, N, &out, &len);
    test_check(rc == -1 && msg_has("level"), "bad zstd level refused: %s", err_msg());
    rc = wire_encode(c, (wire_codec)3, 1, g, NULL, N, &out, &len);
    test_check(rc == -1 && msg_has("unknown codec"), "encode: unknown codec refused: %s", err_msg());
    /* n = 0 still round-trips through zstd */
    rc = wire_encode(c, CODEC_BF16_ZSTD, 1, g, res, 0, &out, &len);
    if (rc == 0) rc = wire_decode_add(c, CODEC_BF16_ZSTD, out, len, acc, 0);
    test_check(rc == 0, "n = 0 encodes and decodes %s", rc ? err_msg() : "");
    free(buf);
}

/* A valid assignment: n items for T = 1000, dataset of 60000. */
static void make_work(wire_work *w, int n, uint64_t *ids, uint32_t *idx, int *t, uint8_t *fl) {
    memset(w, 0, sizeof *w);
    w->step = 12345678901ull;
    w->seed = 42;
    w->total_batch = 64;
    w->n = n;
    for (int i = 0; i < n; i++) {
        ids[i] = 1000000000000ull + (uint64_t)i;
        idx[i] = (uint32_t)(rnd() % 60000);
        t[i] = (int)(rnd() % 1000);
        fl[i] = (uint8_t)(rnd() & 1);
    }
    w->sample_ids = ids; w->indices = idx; w->t = t; w->flip = fl;
}

/* Packs a raw protobuf message (to build what our packer refuses to produce). */
static size_t pack_raw_work(const Ddpm__Wire__WorkAssignment *m, uint8_t *buf) {
    return ddpm__wire__work_assignment__pack(m, buf);
}

static void test_work_messages(void) {
    uint64_t ids[16];
    uint32_t idx[16];
    int t[16];
    uint8_t fl[16];
    wire_work w, u;
    make_work(&w, 16, ids, idx, t, fl);
    uint8_t *buf;
    size_t len;
    int rc = wire_work_pack(&w, &buf, &len);
    if (rc == 0) rc = wire_work_unpack(buf, len, 64, 1000, 60000, &u);
    int same = rc == 0 && u.step == w.step && u.seed == w.seed && u.total_batch == 64 && !u.stop && u.n == 16;
    for (int i = 0; same && i < 16; i++)
        same = u.sample_ids[i] == ids[i] && u.indices[i] == idx[i] && u.t[i] == t[i] && u.flip[i] == fl[i];
    test_check(same, "WorkAssignment round trip (%zu bytes) %s", len, rc ? err_msg() : "");
    wire_work_free(&u);
    test_check(u.n == 0 && u.t == NULL, "wire_work_free zeroes the struct");

    rc = wire_work_unpack(buf, len, 15, 1000, 60000, &u);
    test_check(rc == -1 && msg_has("sample_ids") && msg_has("at most 15"), "n > max_items refused: %s", err_msg());
    rc = wire_work_unpack(buf, len, 64, t[3], 60000, &u); /* t[3] == T: out of range */
    test_check(rc == -1 && msg_has("timesteps["), "t >= T refused: %s", err_msg());
    rc = wire_work_unpack(buf, len, 64, 1000, idx[0], &u);
    test_check(rc == -1 && msg_has("indices[0]"), "index >= dataset size refused: %s", err_msg());
    rc = wire_work_unpack(buf, len - 3, 64, 1000, 60000, &u);
    test_check(rc == -1 && msg_has("not a valid protobuf"), "truncated WorkAssignment refused: %s", err_msg());
    uint8_t garbage[32];
    memset(garbage, 0xFF, sizeof garbage); /* field 31 with wire type 7: never valid */
    rc = wire_work_unpack(garbage, sizeof garbage, 64, 1000, 60000, &u);
    test_check(rc == -1 && msg_has("not a valid protobuf"), "garbage WorkAssignment refused: %s", err_msg());
    test_check(u.n == 0 && u.sample_ids == NULL, "refused unpack leaves the struct zeroed");
    free(buf);

    /* Messages our packer will not write, built with protobuf-c directly. */
    uint32_t ts[16];
    for (int i = 0; i < 16; i++) ts[i] = (uint32_t)t[i];
    Ddpm__Wire__WorkAssignment m = DDPM__WIRE__WORK_ASSIGNMENT__INIT;
    m.total_batch = 64;
    m.n_sample_ids = 16; m.sample_ids = ids;
    m.n_indices = 16; m.indices = idx;
    m.n_timesteps = 16; m.timesteps = ts;
    m.flips.len = 16; m.flips.data = fl;
    uint8_t raw[1024];
    m.n_indices = 15;
    rc = wire_work_unpack(raw, pack_raw_work(&m, raw), 64, 1000, 60000, &u);
    test_check(rc == -1 && msg_has("WorkAssignment.indices: 15 entries"), "short indices refused: %s", err_msg());
    m.n_indices = 16; m.n_timesteps = 17; ts[16 - 1] = 3;
    uint32_t ts17[17];
    memcpy(ts17, ts, sizeof ts); ts17[16] = 1; m.timesteps = ts17;
    rc = wire_work_unpack(raw, pack_raw_work(&m, raw), 64, 1000, 60000, &u);
    test_check(rc == -1 && msg_has("WorkAssignment.timesteps: 17 entries"), "long timesteps refused: %s", err_msg());
    m.n_timesteps = 16; m.timesteps = ts; m.flips.len = 2;
    rc = wire_work_unpack(raw, pack_raw_work(&m, raw), 64, 1000, 60000, &u);
    test_check(rc == -1 && msg_has("WorkAssignment.flips: 2 bytes"), "short flips refused: %s", err_msg());
    m.flips.len = 16;
    uint8_t fl2[16];
    memcpy(fl2, fl, 16); fl2[9] = 2; m.flips.data = fl2;
    rc = wire_work_unpack(raw, pack_raw_work(&m, raw), 64, 1000, 60000, &u);
    test_check(rc == -1 && msg_has("flips[9]: 2"), "flip value 2 refused: %s", err_msg());
    m.flips.data = fl; m.total_batch = 8;
    rc = wire_work_unpack(raw, pack_raw_work(&m, raw), 64, 1000, 60000, &u);
    test_check(rc == -1 && msg_has("total_batch: 8"), "more items than total_batch refused: %s", err_msg());
    m.total_batch = 0;
    m.stop = 1;
    rc = wire_work_unpack(raw, pack_raw_work(&m, raw), 64, 1000, 60000, &u);
    test_check(rc == 0 && u.stop == 1, "stop message without total_batch accepted %s", rc ? err_msg() : "");
    wire_work_free(&u);
    rc = wire_work_unpack(NULL, 0, 64, 1000, 60000, &u);
    test_check(rc == -1 && msg_has("total_batch: 0"), "empty message (no stop, no batch) refused: %s", err_msg());

    /* packer refusals */
    t[2] = -1;
    rc = wire_work_pack(&w, &buf, &len);
    test_check(rc == -1 && msg_has("t[2]"), "pack refuses negative t: %s", err_msg());
    t[2] = 0; fl[4] = 7;
    rc = wire_work_pack(&w, &buf, &len);
    test_check(rc == -1 && msg_has("flip[4]"), "pack refuses flip 7: %s", err_msg());
    fl[4] = 0; w.n = -1;
    rc = wire_work_pack(&w, &buf, &len);
    test_check(rc == -1 && msg_has("negative"), "pack refuses n < 0: %s", err_msg());
    /* an empty share (more workers than samples) is fine */
    w.n = 0;
    rc = wire_work_pack(&w, &buf, &len);
    if (rc == 0) { rc = wire_work_unpack(buf, len, 64, 1000, 60000, &u); free(buf); }
    test_check(rc == 0 && u.n == 0 && u.sample_ids == NULL, "empty assignment round trip %s", rc ? err_msg() : "");
    wire_work_free(&u);
}

static const uint64_t chunk_off[3] = {0, 1000, 3000}, chunk_cnt[3] = {1000, 2000, 500};

static void test_push_messages(wire_ctx *c) {
    float g[2000], acc[2000], res[2000];
    for (int i = 0; i < 2000; i++) { g[i] = (float)gauss() * 1e-4f; acc[i] = 0; res[i] = 0; }
    const uint8_t *out;
    size_t olen;
    wire_encode(c, CODEC_BF16_ZSTD, 1, g, res, 2000, &out, &olen);
    wire_push p = {0};
    p.step = 77; p.worker = 5; p.chunk = 1; p.offset = 1000; p.count = 2000;
    p.codec = CODEC_BF16_ZSTD; p.data = out; p.data_len = olen; p.raw_bytes = 8000;
    p.has_stats = 1; p.loss_sum = 1.25; p.mse_sum = 1.125; p.vb_sum = 0.125;
    for (int q = 0; q < 4; q++) { p.q_sum[q] = 0.1 * (q + 1); p.q_count[q] = (uint64_t)q + 1; }
    p.n_samples = 10; p.bytes_raw_total = 123456789012ull; p.bytes_sent_total = 9876543210ull;
    uint8_t *buf;
    size_t len;
    wire_push u;
    int rc = wire_push_pack(&p, &buf, &len);
    if (rc == 0) rc = wire_push_unpack(buf, len, 77, 3, chunk_off, chunk_cnt, &u);
    int same = rc == 0 && u.step == 77 && u.worker == 5 && u.chunk == 1 && u.offset == 1000 &&
               u.count == 2000 && u.codec == CODEC_BF16_ZSTD && u.data_len == olen &&
               memcmp(u.data, out, olen) == 0 && u.raw_bytes == 8000 && u.has_stats && u.loss_sum == 1.25 &&
               u.mse_sum == 1.125 && u.vb_sum == 0.125 &&
               u.n_samples == 10 && u.bytes_raw_total == p.bytes_raw_total && u.bytes_sent_total == p.bytes_sent_total;
    for (int q = 0; same && q < 4; q++) same = u.q_sum[q] == p.q_sum[q] && u.q_count[q] == p.q_count[q];
    test_check(same, "GradientPush round trip (%zu bytes) %s", len, rc ? err_msg() : "");
    if (rc == 0) {
        rc = wire_decode_add(c, u.codec, u.data, u.data_len, acc, u.count);
        test_check(rc == 0 && acc[0] == wire_bf16_to_float(wire_bf16_round(g[0])), "payload decodes from the unpacked push");
    }
    wire_push_free(&u);
    test_check(u.msg_ == NULL && u.data == NULL, "wire_push_free zeroes the struct");

    rc = wire_push_unpack(buf, len, 78, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("GradientPush.step: 77, expected 78"), "wrong step refused: %s", err_msg());
    rc = wire_push_unpack(buf, len, 77, 1, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("GradientPush.chunk: 1"), "chunk out of range refused: %s", err_msg());
    static const uint64_t off2[3] = {0, 1001, 3000}, cnt2[3] = {1000, 1999, 500};
    rc = wire_push_unpack(buf, len, 77, 3, off2, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("GradientPush.offset"), "offset mismatch refused: %s", err_msg());
    rc = wire_push_unpack(buf, len, 77, 3, chunk_off, cnt2, &u);
    test_check(rc == -1 && msg_has("GradientPush.count"), "count mismatch refused: %s", err_msg());
    rc = wire_push_unpack(buf, len - 5, 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("not a valid protobuf") && u.msg_ == NULL, "truncated push refused: %s", err_msg());
    uint8_t garbage[40];
    memset(garbage, 0xFF, sizeof garbage);
    rc = wire_push_unpack(garbage, sizeof garbage, 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("not a valid protobuf"), "garbage push refused: %s", err_msg());
    free(buf);

    /* Fields our packer refuses to write. */
    Ddpm__Wire__GradientPush m = DDPM__WIRE__GRADIENT_PUSH__INIT;
    m.step = 77; m.chunk = 2; m.offset = 3000; m.count = 500; m.raw_bytes = 2000;
    m.codec = (Ddpm__Wire__Codec)9;
    uint8_t raw[4096];
    rc = wire_push_unpack(raw, ddpm__wire__gradient_push__pack(&m, raw), 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("GradientPush.codec: unknown value 9"), "unknown codec refused: %s", err_msg());
    m.codec = (Ddpm__Wire__Codec)-1;
    rc = wire_push_unpack(raw, ddpm__wire__gradient_push__pack(&m, raw), 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("GradientPush.codec"), "negative codec refused: %s", err_msg());
    m.codec = DDPM__WIRE__CODEC__CODEC_FP32;
    static uint8_t zeros2000[2000]; /* 500 fp32 zeros */
    m.data.len = 1999; m.data.data = zeros2000;
    rc = wire_push_unpack(raw, ddpm__wire__gradient_push__pack(&m, raw), 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("GradientPush.data: 1999 bytes"), "fp32 data of the wrong size refused: %s", err_msg());
    m.data.len = 2000; m.raw_bytes = 1000;
    rc = wire_push_unpack(raw, ddpm__wire__gradient_push__pack(&m, raw), 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("GradientPush.raw_bytes"), "raw_bytes mismatch refused: %s", err_msg());
    m.raw_bytes = 2000;
    double qs[3] = {1, 2, 3};
    uint64_t qc[4] = {1, 2, 3, 4};
    m.has_stats = 1; m.n_q_sum = 3; m.q_sum = qs; m.n_q_count = 4; m.q_count = qc; m.n_samples = 10;
    rc = wire_push_unpack(raw, ddpm__wire__gradient_push__pack(&m, raw), 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("q_sum/q_count: 3 and 4"), "3 quartile sums refused: %s", err_msg());
    double qs4[4] = {1, 2, 3, 4};
    m.q_sum = qs4; m.n_q_sum = 4; m.n_samples = 11;
    rc = wire_push_unpack(raw, ddpm__wire__gradient_push__pack(&m, raw), 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("q_count: does not sum"), "q_count not summing to n_samples refused: %s", err_msg());
    m.n_samples = 10; m.has_stats = 0;
    rc = wire_push_unpack(raw, ddpm__wire__gradient_push__pack(&m, raw), 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("has_stats 0"), "quartile stats without has_stats refused: %s", err_msg());
    m.has_stats = 1; m.n_samples = 10;
    uint64_t qbig[4] = {UINT64_MAX, 11, 0, 0}; /* wraps around to 10 */
    m.q_count = qbig;
    rc = wire_push_unpack(raw, ddpm__wire__gradient_push__pack(&m, raw), 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == -1 && msg_has("q_count"), "wrapping q_count refused: %s", err_msg());
    m.q_count = qc;
    rc = wire_push_unpack(raw, ddpm__wire__gradient_push__pack(&m, raw), 77, 3, chunk_off, chunk_cnt, &u);
    test_check(rc == 0 && u.count == 500 && u.data_len == 2000, "hand-built fp32 push accepted %s", rc ? err_msg() : "");
    wire_push_free(&u);

    /* packer refusals */
    p.raw_bytes = 7999;
    rc = wire_push_pack(&p, &buf, &len);
    test_check(rc == -1 && msg_has("raw_bytes"), "pack refuses raw_bytes != count*4: %s", err_msg());
    p.raw_bytes = 8000; p.codec = (wire_codec)5;
    rc = wire_push_pack(&p, &buf, &len);
    test_check(rc == -1 && msg_has("unknown codec"), "pack refuses unknown codec: %s", err_msg());
    p.codec = CODEC_BF16_ZSTD; p.n_samples = 3;
    rc = wire_push_pack(&p, &buf, &len);
    test_check(rc == -1 && msg_has("n_samples"), "pack refuses inconsistent stats: %s", err_msg());
}

/* ---------------------------------------------------------------- mutation loop */

static void mutate(uint8_t *b, size_t *len, size_t cap) {
    int kind = (int)(rnd() % 5);
    size_t n = *len;
    if (kind == 0 && n) b[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));         /* bit flip */
    else if (kind == 1 && n) b[rnd() % n] = (uint8_t)rnd();                    /* byte set */
    else if (kind == 2 && n) *len = rnd() % n;                                 /* truncate */
    else if (kind == 3 && n < cap) { size_t p = rnd() % (n + 1);               /* insert */
        memmove(b + p + 1, b + p, n - p); b[p] = (uint8_t)rnd(); (*len)++; }
    else for (size_t i = 0; i < n; i++) if (rnd() % 8 == 0) b[i] = (uint8_t)rnd(); /* spray */
}

static void test_mutation_fuzz(wire_ctx *c) {
    enum { ITERS = 4000, N = 1500 };
    float g[N], acc[N], res[N];
    for (int i = 0; i < N; i++) { g[i] = (float)gauss() * 1e-3f; res[i] = 0; }
    uint8_t *b = xmalloc(4 * N + 256);
    size_t cap = 4 * N + 256;
    int accepted[5] = {0}, broken = 0, silent = 0;

    uint64_t ids[32]; uint32_t idx[32]; int t[32]; uint8_t fl[32];
    wire_work w;
    make_work(&w, 32, ids, idx, t, fl);
    uint8_t *wbuf; size_t wlen;
    wire_work_pack(&w, &wbuf, &wlen);
    for (int it = 0; it < ITERS; it++) {
        size_t len = wlen;
        if (it % 10 == 0) { len = rnd() % 200; for (size_t i = 0; i < len; i++) b[i] = (uint8_t)rnd(); }
        else { memcpy(b, wbuf, wlen); for (int k = 0; k <= it % 3; k++) mutate(b, &len, cap); }
        wire_work u;
        err_clear();
        if (wire_work_unpack(b, len, 40, 1000, 60000, &u) == 0) {
            accepted[0]++;
            for (int i = 0; i < u.n; i++)
                if (u.t[i] < 0 || u.t[i] >= 1000 || u.indices[i] >= 60000 || u.flip[i] > 1) broken++;
            if (u.n > 40 || (!u.stop && (u.total_batch < 1 || (uint32_t)u.n > u.total_batch))) broken++;
            wire_work_free(&u);
        } else if (err_empty()) silent++;
    }
    free(wbuf);

    wire_push p = {0};
    const uint8_t *out; size_t olen;
    for (int codec = CODEC_FP32; codec <= CODEC_BF16_ZSTD; codec++) {
        wire_encode(c, codec, 1, g, res, 1000, &out, &olen);
        uint8_t *payload = xmalloc(olen);
        memcpy(payload, out, olen);
        p.step = 9; p.chunk = 0; p.offset = 0; p.count = 1000; p.raw_bytes = 4000; p.codec = codec;
        p.data = payload; p.data_len = olen;
        uint8_t *pbuf; size_t plen;
        wire_push_pack(&p, &pbuf, &plen);
        for (int it = 0; it < ITERS; it++) {
            /* the payload alone, through the decoder */
            size_t len = olen;
            memcpy(b, payload, olen);
            for (int k = 0; k <= it % 3; k++) mutate(b, &len, cap);
            for (int i = 0; i < N; i++) acc[i] = 0;
            size_t n = it % 7 == 0 ? (size_t)(rnd() % N) : 1000;
            err_clear();
            if (wire_decode_add(c, codec, b, len, acc, n) == 0) {
                accepted[1 + codec]++;
                for (size_t i = 0; i < n; i++) if (!isfinite(acc[i])) broken++;
            } else if (err_empty()) silent++;
            /* the whole push */
            len = plen;
            memcpy(b, pbuf, plen);
            for (int k = 0; k <= it % 3; k++) mutate(b, &len, cap);
            wire_push u;
            err_clear();
            if (wire_push_unpack(b, len, 9, 3, chunk_off, chunk_cnt, &u) == 0) {
                accepted[4]++;
                if (u.chunk >= 3 || u.offset != chunk_off[u.chunk] || u.count != chunk_cnt[u.chunk]) broken++;
                for (int i = 0; i < N; i++) acc[i] = 0;
                if (u.count <= N) wire_decode_add(c, u.codec, u.data, u.data_len, acc, u.count);
                wire_push_free(&u);
            } else if (err_empty()) silent++;
        }
        free(pbuf); free(payload);
    }
    free(b);
    printf("# mutation fuzz: accepted work %d/%d, fp32 %d, fp32_zstd %d, bf16_zstd %d of %d each, push %d/%d\n",
           accepted[0], ITERS, accepted[1], accepted[2], accepted[3], ITERS, accepted[4], 3 * ITERS);
    test_check(broken == 0 && silent == 0, "mutation fuzz: %d iterations, no crash, every accepted message "
               "satisfies the rules (%d broken), every refusal has a message (%d silent)", 10 * ITERS, broken, silent);
}

int main(void) {
    wire_ctx *c = wire_ctx_create();
    test_check(c != NULL, "wire_ctx_create");
    test_bf16_rounding();
    test_round_trips(c);
    test_error_feedback(c);
    test_ratios(c);
    test_bad_payloads(c);
    test_work_messages();
    test_push_messages(c);
    test_mutation_fuzz(c);
    wire_ctx_free(c);
    wire_ctx_free(NULL);
    return test_done();
}
