/* Mixed precision (issue 19): the precision names, what this CPU offers for
 * bf16, the fp32 -> bf16 rounding, and the GEMM with bf16 operands and fp32
 * accumulation that linear layers and the attention matmuls use in bf16.
 *
 * bf16 is the upper half of an IEEE fp32 (8-bit exponent, 7 stored mantissa
 * bits): rounding to nearest even gives a relative error of at most 2^-8 per
 * operand. oneDNN does the arithmetic: its convolutions (conv_dnnl.c) and
 * dnnl_gemm_bf16bf16f32, both with fp32 accumulation; on a CPU with
 * avx512_bf16 (VDPBF16PS) or AMX natively, on plain AVX-512 by its emulation
 * (correct, slower), not at all below. */
#include <dnnl.h>
#include <stdlib.h>

#include "common/core/prof.h"
#include "common/core/util.h"
#include "common/ops/ops.h"
#include "common/ops/ops_internal.h"

/* Exported by libdnnl (row-major, like dnnl_sgemm) but declared only in
 * oneDNN's own tests: A [M][K] (transa 'T': [K][M]), B [K][N] ('T': [N][K]),
 * C = alpha A B + beta C in fp32. */
dnnl_status_t dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t M, dnnl_dim_t N,
                                    dnnl_dim_t K, float alpha, const uint16_t *A,
                                    dnnl_dim_t lda, const uint16_t *B, dnnl_dim_t ldb,
                                    float beta, float *C, dnnl_dim_t ldc);

const char *const ops_precision_names[] = {"fp32", "bf16", NULL};

ops_bf16_level ops_bf16_support(const char **how) {
    const unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    const unsigned amx = dnnl_cpu_isa_avx512_core_amx, bf = dnnl_cpu_isa_avx512_core_bf16,
                   core = dnnl_cpu_isa_avx512_core;
    const char *h;
    ops_bf16_level l;
    if ((isa & amx) == amx) {
        h = "native (oneDNN ISA avx512_core_amx: AMX tiles)";
        l = OPS_BF16_NATIVE;
    } else if ((isa & bf) == bf) {
        h = "native (oneDNN ISA avx512_core_bf16: VDPBF16PS)";
        l = OPS_BF16_NATIVE;
    } else if ((isa & core) == core) {
        h = "emulated by oneDNN on AVX-512 (this CPU lacks avx512_bf16 and AMX: correct but "
            "slower than fp32)";
        l = OPS_BF16_EMULATED;
    } else {
        h = "unsupported (this CPU lacks avx512_bf16, AMX and AVX-512 (avx512f/bw/vl/dq), "
            "which oneDNN's bf16 kernels need)";
        l = OPS_BF16_NONE;
    }
    if (how) *how = h;
    return l;
}

uint16_t ops_to_bf16(float x) { return ops_bf16_rne(x); }

float ops_from_bf16(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

DDPM_CLONES
static void to_bf16_run(uint16_t *restrict d, const float *restrict s, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) d[i] = ops_bf16_rne(s[i]);
}

void ops_to_bf16_n(uint16_t *d, const float *s, size_t n) {
    const size_t blk = 16384, nblk = (n + blk - 1) / blk;
#pragma omp parallel for schedule(static) if (n >= 4 * (size_t)OPS_PAR_MIN)
    for (size_t b = 0; b < nblk; b++) {
        const size_t lo = b * blk, hi = lo + blk < n ? lo + blk : n;
        to_bf16_run(d + lo, s + lo, hi - lo);
    }
}

size_t ops_gemm_ws_floats(int M, int N, int K) {
    /* both operands in bf16 (two per float), each rounded up to whole floats */
    return ((size_t)M * K + 1) / 2 + ((size_t)K * N + 1) / 2 + 2;
}

/* A rows x cols block of a row-major matrix with leading dimension ld, packed
 * into d (ld = cols) as bf16. */
static void pack_bf16(uint16_t *d, const float *s, int rows, int cols, int ld) {
    if (ld == cols) {
        ops_to_bf16_n(d, s, (size_t)rows * cols);
        return;
    }
    for (int r = 0; r < rows; r++) ops_to_bf16_n(d + (size_t)r * cols, s + (size_t)r * ld, (size_t)cols);
}

int ops_bf16_gemm(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                  const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    return dnnl_gemm_bf16bf16f32(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                 beta, C, ldc) == dnnl_success ? 0 : -1;
}

void ops_gemm(ops_precision prec, int ta, int tb, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc,
              float *ws) {
    const enum CBLAS_TRANSPOSE cta = ta ? CblasTrans : CblasNoTrans,
                               ctb = tb ? CblasTrans : CblasNoTrans;
    if (prec != OPS_BF16) {
        ops_sgemm(cta, ctb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const double t0 = prof_begin();
    uint16_t *a = (uint16_t *)ws, *b = a + ((size_t)M * K + 1) / 2 * 2 + 2;
    const int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    pack_bf16(a, A, ar, ac, lda);
    pack_bf16(b, B, br, bc, ldb);
    if (ops_bf16_gemm(ta, tb, M, N, K, alpha, a, ac, b, bc, beta, C, ldc) != 0) {
        log_warn("ops_gemm: oneDNN's bf16 GEMM failed for %dx%dx%d", M, N, K);
        abort();
    }
    prof_end(PROF_GEMM, t0);
}
