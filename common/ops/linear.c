/* Fully connected layer on SGEMM. weight is [Out][In] (PyTorch layout). */
#include "common/ops/ops.h"

#include "common/core/prof.h"

#include <cblas.h>

#include "common/ops/ops_internal.h"

void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int In, int Out) {
    PROF_SCOPE(PROF_LINEAR);
    /* The bias pre-fill lets GEMM's beta=1 add it in the same pass. */
    if (bias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < Out; o++) out[(size_t)n * Out + o] = bias[o];
    ops_sgemm(CblasNoTrans, CblasTrans, N, Out, In, 1.0f, inp, In, weight, In,
                bias ? 1.0f : 0.0f, out, Out);
}

void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int In, int Out) {
    PROF_SCOPE(PROF_LINEAR);
    if (dinp) /* dinp[N][In] += dout[N][Out] * W[Out][In] */
        ops_sgemm(CblasNoTrans, CblasNoTrans, N, In, Out, 1.0f, dout, Out,
                    weight, In, 1.0f, dinp, In);
    if (dweight) /* dW[Out][In] += dout^T * inp */
        ops_sgemm(CblasTrans, CblasNoTrans, Out, In, N, 1.0f, dout, Out, inp,
                    In, 1.0f, dweight, In);
    if (dbias)
        for (int o = 0; o < Out; o++) {
            double acc = 0; /* N is small (the batch): a plain column sum */
            for (int n = 0; n < N; n++) acc += dout[(size_t)n * Out + o];
            dbias[o] += (float)acc;
        }
}
