/* Fully connected layer on SGEMM (bf16: ops_gemm with bf16 operands). weight is
 * [Out][In] (PyTorch layout). */
#include "common/ops/ops.h"

#include "common/core/prof.h"

#include <cblas.h>

#include "common/ops/ops_internal.h"

size_t linear_workspace_floats(int N, int In, int Out, ops_precision prec) {
    if (prec != OPS_BF16) return 0;
    size_t w = ops_gemm_ws_floats(N, Out, In);
    const size_t w1 = ops_gemm_ws_floats(N, In, Out), w2 = ops_gemm_ws_floats(Out, In, N);
    if (w1 > w) w = w1;
    return w2 > w ? w2 : w;
}

void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int In, int Out, ops_precision prec, float *ws) {
    PROF_SCOPE(PROF_LINEAR);
    /* The bias pre-fill lets GEMM's beta=1 add it in the same pass. */
    if (bias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < Out; o++) out[(size_t)n * Out + o] = bias[o];
    ops_gemm(prec, 0, 1, N, Out, In, 1.0f, inp, In, weight, In,
                bias ? 1.0f : 0.0f, out, Out, ws);
}

void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int In, int Out,
                     ops_precision prec, float *ws) {
    PROF_SCOPE(PROF_LINEAR);
    if (dinp) /* dinp[N][In] += dout[N][Out] * W[Out][In] */
        ops_gemm(prec, 0, 0, N, In, Out, 1.0f, dout, Out,
                    weight, In, 1.0f, dinp, In, ws);
    if (dweight) /* dW[Out][In] += dout^T * inp */
        ops_gemm(prec, 1, 0, Out, In, N, 1.0f, dout, Out, inp,
                    In, 1.0f, dweight, In, ws);
    if (dbias)
        for (int o = 0; o < Out; o++) {
            double acc = 0; /* N is small (the batch): a plain column sum */
            for (int n = 0; n < N; n++) acc += dout[(size_t)n * Out + o];
            dbias[o] += (float)acc;
        }
}
