/* Single-head self-attention over the HW positions of each sample, as in the
 * authors' AttnBlock: w = softmax(q^T k / sqrt(C)), out = v w^T.
 * q, k, v, out are [N][C][HW]; forward saves att[N][HW][HW] (row i = query i).
 * backward needs one HW x HW scratch matrix (attention_workspace_floats); in
 * bf16 the GEMMs' operands are rounded to bf16 (ops_gemm) in the workspace after
 * it, while the scores, the softmax and its backward stay fp32. */
#include "common/ops/ops.h"

#include "common/core/prof.h"
#include "common/ops/ops_internal.h"

#include <cblas.h>
#include <math.h>

/* row = softmax(row), in place. The max is found with OPS_LANES partial
 * maxima (exact in any order), so every step vectorises. */
DDPM_CLONES
static void softmax_row(float *restrict row, int n) {
    float m[OPS_LANES];
    for (int l = 0; l < OPS_LANES; l++) m[l] = row[0];
    int j = 0;
    for (; j + OPS_LANES <= n; j += OPS_LANES)
        for (int l = 0; l < OPS_LANES; l++) m[l] = row[j + l] > m[l] ? row[j + l] : m[l];
    float mx = m[0];
    for (int l = 1; l < OPS_LANES; l++) mx = m[l] > mx ? m[l] : mx;
    for (; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    /* subtracting the max keeps exp in range */
#pragma omp simd
    for (int k = 0; k < n; k++) row[k] = ops_expf(row[k] - mx);
    const double sum = ops_sum(row, (size_t)n);
    const float inv = (float)(1.0 / sum);
#pragma omp simd
    for (int k = 0; k < n; k++) row[k] *= inv;
}

/* r = scale * a * (r - sum_j a_j r_j): the softmax backward of one row, in
 * place (a the softmax output, r its incoming gradient), times the scores'
 * scale, which dq and dk both carry (in bf16 the GEMMs' operand is then the
 * scaled gradient, as autograd hands it to the score matmul). */
DDPM_CLONES
static void softmax_row_backward(float *restrict r, const float *restrict a, int n, float scale) {
    const float d = (float)ops_dot(a, r, (size_t)n);
#pragma omp simd
    for (int j = 0; j < n; j++) r[j] = scale * (a[j] * (r[j] - d));
}

size_t attention_workspace_floats(int C, int HW, ops_precision prec) {
    size_t g = 0;
    if (prec == OPS_BF16) {
        g = ops_gemm_ws_floats(HW, HW, C);
        const size_t g2 = ops_gemm_ws_floats(C, HW, HW);
        if (g2 > g) g = g2;
    }
    return (size_t)HW * (size_t)HW + g;
}

void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       int N, int C, int HW, ops_precision prec, float *ws) {
    PROF_SCOPE(PROF_ATTENTION);
    /* forward works in att itself; bf16 operands after the backward's HW x HW */
    float *gws = prec == OPS_BF16 ? ws + (size_t)HW * HW : NULL;
    const float scale = (float)(1.0 / sqrt((double)C));
    const size_t chw = (size_t)C * HW, hw2 = (size_t)HW * HW;
    for (int n = 0; n < N; n++) {
        const float *qn = q + n * chw, *kn = k + n * chw, *vn = v + n * chw;
        float *a = att + n * hw2;
        /* scores[i][j] = scale * sum_c q[c][i] k[c][j] */
        ops_gemm(prec, 1, 0, HW, HW, C, scale, qn, HW, kn, HW,
                    0.0f, a, HW, gws);
#pragma omp parallel for schedule(static) if ((size_t)HW * HW >= OPS_PAR_MIN)
        for (int i = 0; i < HW; i++) softmax_row(a + (size_t)i * HW, HW);
        /* out[c][i] = sum_j v[c][j] att[i][j] */
        ops_gemm(prec, 0, 1, C, HW, HW, 1.0f, vn, HW, a, HW,
                    0.0f, out + n * chw, HW, gws);
    }
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *att, int N, int C,
                        int HW, ops_precision prec, float *ws) {
    PROF_SCOPE(PROF_ATTENTION);
    float *gws = prec == OPS_BF16 ? ws + (size_t)HW * HW : NULL;
    const float scale = (float)(1.0 / sqrt((double)C));
    const size_t chw = (size_t)C * HW, hw2 = (size_t)HW * HW;
    for (int n = 0; n < N; n++) {
        const float *qn = q + n * chw, *kn = k + n * chw, *vn = v + n * chw;
        const float *don = dout + n * chw;
        const float *a = att + n * hw2;
        if (dv) /* dv[c][j] += sum_i dout[c][i] att[i][j] */
            ops_gemm(prec, 0, 0, C, HW, HW, 1.0f, don, HW, a,
                        HW, 1.0f, dv + n * chw, HW, gws);
        if (!dq && !dk) continue;
        /* datt[i][j] = sum_c dout[c][i] v[c][j] */
        float *ds = ws;
        ops_gemm(prec, 1, 0, HW, HW, C, 1.0f, don, HW, vn, HW,
                    0.0f, ds, HW, gws);
        /* softmax backward: ds = scale att (datt - sum_j att datt), in place */
#pragma omp parallel for schedule(static) if ((size_t)HW * HW >= OPS_PAR_MIN)
        for (int i = 0; i < HW; i++)
            softmax_row_backward(ds + (size_t)i * HW, a + (size_t)i * HW, HW, scale);
        if (dq) /* dq[c][i] += sum_j k[c][j] ds[i][j] (ds carries the scale) */
            ops_gemm(prec, 0, 1, C, HW, HW, 1.0f, kn, HW, ds,
                        HW, 1.0f, dq + n * chw, HW, gws);
        if (dk) /* dk[c][j] += sum_i q[c][i] ds[i][j] */
            ops_gemm(prec, 0, 0, C, HW, HW, 1.0f, qn, HW, ds,
                        HW, 1.0f, dk + n * chw, HW, gws);
    }
}
