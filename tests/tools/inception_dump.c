/* Inception-v3 pool3 features and logits of the images of an .npz (what
 * `ddpm-eval features` writes), as a tool so that the ASan+UBSan build runs it too:
 *   inception_dump WEIGHTS.tns IMAGES.npz OUT.tns */
#include <stdio.h>
#include <stdlib.h>

#include "common/core/util.h"
#include "common/eval/inception.h"
#include "common/io/npz_array.h"
#include "common/io/tensor_file.h"

static int fail(void) {
    fprintf(stderr, "inception_dump: %s\n", err_msg());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s WEIGHTS.tns IMAGES.npz OUT.tns\n", argv[0]);
        return 2;
    }
    inception *net;
    if (inception_load(&net, argv[1]) != 0) return fail();
    npz_reader *r;
    if (npz_reader_open(&r, argv[2], "arr_0") != 0) return fail();
    const int64_t *sh = npz_reader_shape(r);
    int nd = npz_reader_ndim(r);
    int N = (int)sh[0], H = (int)sh[1], W = (int)sh[2], C = nd == 4 ? (int)sh[3] : 1;
    uint8_t *img = xmalloc((size_t)N * H * W * C);
    if (npz_reader_read(r, img, (uint64_t)N * H * W * C) != 0) return fail();
    npz_reader_close(r);
    float *p = xfloats((size_t)N * INCEPTION_FEATURES), *l = xfloats((size_t)N * INCEPTION_CLASSES);
    if (inception_forward_u8(net, img, N, H, W, C, p, l) != 0) return fail();
    tensor_file tf;
    int64_t dp[2] = {N, INCEPTION_FEATURES}, dl[2] = {N, INCEPTION_CLASSES};
    if (tensor_file_create(&tf, argv[3]) != 0 || tensor_file_add(&tf, "pool3", 2, dp, p) != 0 ||
        tensor_file_add(&tf, "logits", 2, dl, l) != 0 || tensor_file_close(&tf) != 0)
        return fail();
    printf("wrote %s: %d images\n", argv[3], N);
    free(img);
    free(p);
    free(l);
    inception_free(net);
    return 0;
}
