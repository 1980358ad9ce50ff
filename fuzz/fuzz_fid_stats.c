/* Decoder target: FID statistics files (.npz with 'mu' [D] and 'sigma' [D][D])
 * through fid_stats_load, as `ddpm-eval fid` reads a reference. Accepted
 * statistics are finite, symmetric, of a dimension within the limit, and their
 * distance to themselves is a finite number >= 0; a refusal names the file. */
#include <math.h>
#include <string.h>

#include "common/eval/fid.h"
#include "fuzz/fuzz.h"

int fuzz_check(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, "stats.npz");
    fid_stats st;
    fuzz_err_clear();
    if (fid_stats_load(path, &st) != 0) {
        if (fuzz_err_empty()) FUZZ_FAIL("fid stats: refused without a message");
        if (!strstr(err_msg(), path)) FUZZ_FAIL("fid stats: message does not name the file: %s", err_msg());
        if (st.mu || st.sigma) FUZZ_FAIL("fid stats: refused but returned arrays");
        return 0;
    }
    int d = st.d;
    if (d < 1 || d > FID_MAX_DIM) FUZZ_FAIL("fid stats: dimension %d accepted", d);
    for (int i = 0; i < d; i++) {
        if (!isfinite(st.mu[i])) FUZZ_FAIL("fid stats: non-finite mu accepted");
        for (int j = 0; j < d; j++) {
            double a = st.sigma[(size_t)i * d + j];
            if (!isfinite(a) || a != st.sigma[(size_t)j * d + i]) FUZZ_FAIL("fid stats: sigma not symmetric");
        }
    }
    /* the distance of a small accepted set to itself (larger d costs seconds) */
    if (d <= 64) {
        double fid = -1;
        if (fid_distance(st.mu, st.sigma, st.mu, st.sigma, d, &fid) != 0)
            FUZZ_FAIL("fid stats: accepted statistics give no distance: %s", err_msg());
        if (!(fid >= 0) || !isfinite(fid)) FUZZ_FAIL("fid stats: distance %g", fid);
    }
    fid_stats_free(&st);
    return 1;
}
