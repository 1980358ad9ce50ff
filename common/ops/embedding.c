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
