/* Sinusoidal timestep embedding, as the authors' get_timestep_embedding
 * (diffusion_tf/nn.py): [sin(t f_0..f_{half-1}), cos(t f_0..f_{half-1})] with
 * f_i = exp(-log(10000) i / (half - 1)); an odd dim gets a trailing zero (as
 * their zero pad). Computed in double, rounded once to float. */
#include "common/ops/ops.h"

#include "common/core/prof.h"

#include <math.h>

void timestep_embedding_forward(float *out, const int *t, int N, int dim) {
    PROF_SCOPE(PROF_OTHER);
    const int half = dim / 2;
    /* half == 1 would divide by zero in the authors' formula; use f_0 = 1 then. */
    const double step = half > 1 ? log(10000.0) / (double)(half - 1) : 0.0;
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * dim;
        for (int i = 0; i < half; i++) {
            const double a = (double)t[n] * exp(-step * (double)i);
            o[i] = (float)sin(a);
            o[half + i] = (float)cos(a);
        }
        if (dim % 2) o[dim - 1] = 0.0f;
    }
}

/* The class label embedding (guided-diffusion's nn.Embedding, added to the time
 * embedding): a row lookup, so its backward scatters each image's gradient into
 * its label's row. */
void label_embedding_forward(float *out, const float *inp, const float *table, const int *y,
                             int N, int dim) {
    PROF_SCOPE(PROF_OTHER);
    for (int n = 0; n < N; n++) {
        const float *row = table + (size_t)y[n] * dim, *a = inp + (size_t)n * dim;
        float *o = out + (size_t)n * dim;
        for (int i = 0; i < dim; i++) o[i] = a[i] + row[i];
    }
}

void label_embedding_backward(float *dinp, float *dtable, const float *dout, const int *y,
                              int N, int dim) {
    PROF_SCOPE(PROF_OTHER);
    for (int n = 0; n < N; n++) {
        const float *g = dout + (size_t)n * dim;
        float *row = dtable + (size_t)y[n] * dim;
        for (int i = 0; i < dim; i++) row[i] += g[i];
        if (dinp)
            for (int i = 0; i < dim; i++) dinp[(size_t)n * dim + i] += g[i];
    }
}
