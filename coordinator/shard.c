#include "coordinator/shard.h"

#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"

void shard_init(shard *s, size_t P, const optim_config *oc, const dist_layout *d) {
    memset(s, 0, sizeof *s);
    s->P = P;
    s->oc = *oc;
    s->params = xfloats(P);
    s->grads = xfloats(P);
    s->adam_m = xfloats(P);
    s->adam_v = xfloats(P);
    s->ema = xfloats(P);
    s->owned = xcalloc(d ? (size_t)d->n_chunks + 1 : 1, sizeof *s->owned);
    if (!d) {
        s->owned[0] = (optim_range){0, P};
        s->n_owned = 1;
        return;
    }
    for (int k = 0; k < d->n_chunks; k++)
        if (dist_chunk_owner(d, k) == d->shard)
            s->owned[s->n_owned++] = (optim_range){d->chunk_off[k], d->chunk_cnt[k]};
}

double shard_sum_squares(const shard *s) {
    return optim_ranges_sum_squares(s->grads, s->owned, s->n_owned);
}

void shard_update(shard *s, uint64_t step, double global_norm) {
    optim_ranges_update(s->params, s->grads, s->adam_m, s->adam_v, s->ema, s->owned, s->n_owned,
                        &s->oc, step, global_norm);
}

void shard_free(shard *s) {
    free(s->params);
    free(s->grads);
    free(s->adam_m);
    free(s->adam_v);
    free(s->ema);
    free(s->owned);
    memset(s, 0, sizeof *s);
}
