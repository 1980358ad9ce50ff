/* Writes the training state of a checkpoint (step, data cursor, params, EMA, Adam m
 * and v) to a tensor file, leaving out the config text, so that two runs with
 * different output folders can be compared byte for byte:
 *   ckpt_state CHECKPOINT OUT.tns */
#include <stdio.h>
#include <stdlib.h>

#include "common/ckpt/checkpoint.h"
#include "common/core/util.h"
#include "common/io/tensor_file.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CHECKPOINT OUT.tns\n", argv[0]);
        return 2;
    }
    ckpt_header h = {0};
    if (ckpt_read_header(argv[1], &h) != 0) {
        fprintf(stderr, "ckpt_state: %s\n", err_msg());
        return 1;
    }
    uint64_t P = h.n_params;
    ckpt_header_free(&h);
    float *buf[4];
    for (int i = 0; i < 4; i++) buf[i] = xfloats(P);
    tensor_file tf;
    int rc = ckpt_read(argv[1], &h, P, CKPT_ALL, buf[0], buf[1], buf[2], buf[3]);
    if (rc == 0) rc = tensor_file_create(&tf, argv[2]);
    if (rc == 0) {
        float meta[6] = {(float)h.step, (float)h.data_epoch, (float)h.data_position,
                         (float)h.seed, (float)h.sections, (float)h.n_params};
        int64_t d6[1] = {6}, dp[1] = {(int64_t)P};
        const char *names[4] = {"params", "ema", "adam_m", "adam_v"};
        rc = tensor_file_add(&tf, "meta", 1, d6, meta);
        for (int i = 0; rc == 0 && i < 4; i++) rc = tensor_file_add(&tf, names[i], 1, dp, buf[i]);
        /* and per named tensor, for per-tensor comparisons */
        for (int t = 0; rc == 0 && t < h.n_tensors; t++) {
            char name[256];
            int64_t dn[1] = {(int64_t)h.tensors[t].size};
            for (int i = 0; rc == 0 && i < 4; i++) {
                snprintf(name, sizeof name, "%s/%s", names[i], h.tensors[t].name);
                rc = tensor_file_add(&tf, name, 1, dn, buf[i] + h.tensors[t].offset);
            }
        }
        if (tensor_file_close(&tf) != 0) rc = -1;
    }
    if (rc != 0) fprintf(stderr, "ckpt_state: %s\n", err_msg());
    for (int i = 0; i < 4; i++) free(buf[i]);
    ckpt_header_free(&h);
    return rc == 0 ? 0 : 1;
}
