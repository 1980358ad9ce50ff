/* Elementwise and data-movement ops: SiLU, dropout, add, per-channel add,
 * MSE, nearest 2x upsample, channel concat. None needs a workspace; the only
 * saved state is the input itself (SiLU) or the caller's dropout mask. */
#include "common/ops/ops.h"

#include "common/core/prof.h"

#include <math.h>
#include <string.h>

#include "common/ops/ops_internal.h"

void silu_forward(float *out, const float *inp, size_t n) {
    PROF_SCOPE(PROF_SILU);
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        const float x = inp[i];
        out[i] = x / (1.0f + ops_expf(-x)); /* -x huge: exp -> inf, x/inf -> -0, no NaN */
    }
}

/* d/dx x s(x) = s (1 + x (1 - s)), s = sigmoid(x). */
void silu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    PROF_SCOPE(PROF_SILU);
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        const float x = inp[i];
        const float s = 1.0f / (1.0f + ops_expf(-x));
        dinp[i] += dout[i] * s * (1.0f + x * (1.0f - s));
    }
}

void dropout_forward(float *out, const float *inp, const float *mask, size_t n) {
    PROF_SCOPE(PROF_ELEMENTWISE);
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] * mask[i];
}

void dropout_backward(float *dinp, const float *dout, const float *mask, size_t n) {
    PROF_SCOPE(PROF_ELEMENTWISE);
    if (!dinp) return;
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * mask[i];
}

void add_forward(float *out, const float *a, const float *b, size_t n) {
    PROF_SCOPE(PROF_ELEMENTWISE);
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void add_backward(float *da, float *db, const float *dout, size_t n) {
    PROF_SCOPE(PROF_ELEMENTWISE);
    if (da) {
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
        for (size_t i = 0; i < n; i++) da[i] += dout[i];
    }
    if (db) {
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
        for (size_t i = 0; i < n; i++) db[i] += dout[i];
    }
}

void add_channel_forward(float *out, const float *inp, const float *bias, int N, int C, int HW) {
    PROF_SCOPE(PROF_ELEMENTWISE);
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)N * C * HW >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const size_t off = ((size_t)n * C + c) * HW;
            const float b = bias[n * C + c];
            for (int i = 0; i < HW; i++) out[off + i] = inp[off + i] + b;
        }
}

void add_channel_backward(float *dinp, float *dbias, const float *dout, int N, int C, int HW) {
    PROF_SCOPE(PROF_ELEMENTWISE);
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)N * C * HW >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const size_t off = ((size_t)n * C + c) * HW;
            if (dinp)
                for (int i = 0; i < HW; i++) dinp[off + i] += dout[off + i];
            if (dbias) dbias[n * C + c] += (float)ops_sum(dout + off, (size_t)HW);
        }
}

float mse_forward(const float *pred, const float *target, size_t n) {
    PROF_SCOPE(PROF_ELEMENTWISE);
    if (n == 0) return 0.0f;
    return (float)(ops_sum_sq_diff(pred, target, n) / (double)n);
}

void mse_backward(float *dpred, const float *pred, const float *target, size_t n, float scale) {
    PROF_SCOPE(PROF_ELEMENTWISE);
    if (!dpred || n == 0) return;
    const float f = (float)(2.0 * (double)scale / (double)n);
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++) dpred[i] += f * (pred[i] - target[i]);
}

void upsample2x_forward(float *out, const float *inp, int N, int C, int H, int W) {
    PROF_SCOPE(PROF_ELEMENTWISE);
    const size_t planes = (size_t)N * C;
    const int W2 = 2 * W;
#pragma omp parallel for schedule(static) if (planes * H * W >= OPS_PAR_MIN)
    for (size_t p = 0; p < planes; p++) {
        const float *x = inp + p * H * W;
        float *o = out + p * 4 * H * W;
        for (int h = 0; h < H; h++) {
            float *r0 = o + (size_t)(2 * h) * W2;
            const float *xr = x + (size_t)h * W;
            for (int w = 0; w < W; w++) r0[2 * w] = r0[2 * w + 1] = xr[w];
            memcpy(r0 + W2, r0, sizeof(float) * (size_t)W2); /* row 2h+1 = row 2h */
        }
    }
}

void upsample2x_backward(float *dinp, const float *dout, int N, int C, int H, int W) {
    PROF_SCOPE(PROF_ELEMENTWISE);
    if (!dinp) return;
    const size_t planes = (size_t)N * C;
    const int W2 = 2 * W;
#pragma omp parallel for schedule(static) if (planes * H * W >= OPS_PAR_MIN)
    for (size_t p = 0; p < planes; p++) {
        float *dx = dinp + p * H * W;
        const float *d = dout + p * 4 * H * W;
        for (int h = 0; h < H; h++) {
            const float *r0 = d + (size_t)(2 * h) * W2, *r1 = r0 + W2;
            float *dr = dx + (size_t)h * W;
            for (int w = 0; w < W; w++)
                dr[w] += (r0[2 * w] + r0[2 * w + 1]) + (r1[2 * w] + r1[2 * w + 1]);
        }
    }
}

void concat_forward(float *out, const float *a, const float *b, int N, int Ca, int Cb, int HW) {
    PROF_SCOPE(PROF_ELEMENTWISE);
    const size_t sa = (size_t)Ca * HW, sb = (size_t)Cb * HW;
#pragma omp parallel for schedule(static) if ((sa + sb) * N >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++) {
        memcpy(out + n * (sa + sb), a + n * sa, sizeof(float) * sa);
        memcpy(out + n * (sa + sb) + sa, b + n * sb, sizeof(float) * sb);
    }
}

void concat_backward(float *da, float *db, const float *dout, int N, int Ca, int Cb, int HW) {
    PROF_SCOPE(PROF_ELEMENTWISE);
    const size_t sa = (size_t)Ca * HW, sb = (size_t)Cb * HW;
#pragma omp parallel for schedule(static) if ((sa + sb) * N >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *d = dout + n * (sa + sb);
        if (da)
            for (size_t i = 0; i < sa; i++) da[n * sa + i] += d[i];
        if (db)
            for (size_t i = 0; i < sb; i++) db[n * sb + i] += d[sa + i];
    }
}
