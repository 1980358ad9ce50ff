/* Background record reading: two alternating request buffers, one reader thread. */
#include "common/data/prefetch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/util.h"

enum { SLOT_PENDING = 0, SLOT_READY = 1, SLOT_FAILED = -1 };

typedef struct {
    uint32_t *idx;
    int8_t *state;
    uint8_t *img;  /* cap * record bytes */
    size_t n, cap;
    size_t next;   /* next position the thread reads */
    size_t hint;   /* where the next lookup probably is (gets come in order) */
} pf_buf;

struct prefetcher {
    const dataset *ds;
    size_t rb;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    pf_buf buf[2];
    int newest; /* buffer of the latest request; the other holds the one before */
    int busy;   /* buffer the thread is writing into outside the lock, or -1 */
    int stop;
    uint64_t hits, misses;
};

static void *reader_main(void *arg) {
    prefetcher *pf = arg;
    pthread_mutex_lock(&pf->mu);
    while (!pf->stop) {
        /* the older request first: it is the one the current step is waiting for */
        int which = -1;
        for (int k = 0; k < 2 && which < 0; k++) {
            int b = k == 0 ? pf->newest ^ 1 : pf->newest;
            if (pf->buf[b].next < pf->buf[b].n) which = b;
        }
        if (which < 0) {
            pthread_cond_wait(&pf->work, &pf->mu);
            continue;
        }
        pf_buf *b = &pf->buf[which];
        size_t pos = b->next++;
        pf->busy = which;
        pthread_mutex_unlock(&pf->mu);
        int rc = dataset_get(pf->ds, b->idx[pos], b->img + pos * pf->rb);
        pthread_mutex_lock(&pf->mu);
        pf->busy = -1;
        b->state[pos] = rc == 0 ? SLOT_READY : SLOT_FAILED;
        pthread_cond_broadcast(&pf->done);
    }
    pthread_mutex_unlock(&pf->mu);
    return NULL;
}

int prefetcher_create(prefetcher **out, const dataset *ds) {
    prefetcher *pf = xcalloc(1, sizeof *pf);
    pf->ds = ds;
    pf->rb = dataset_image_bytes(ds);
    pf->busy = -1;
    pthread_mutex_init(&pf->mu, NULL);
    pthread_cond_init(&pf->work, NULL);
    pthread_cond_init(&pf->done, NULL);
    if (pthread_create(&pf->thread, NULL, reader_main, pf) != 0) {
        pthread_mutex_destroy(&pf->mu);
        pthread_cond_destroy(&pf->work);
        pthread_cond_destroy(&pf->done);
        free(pf);
        *out = NULL;
        return err_set("prefetch: cannot start the reader thread");
    }
    *out = pf;
    return 0;
}

void prefetcher_request(prefetcher *pf, const uint32_t *indices, size_t n) {
    pthread_mutex_lock(&pf->mu);
    int t = pf->newest ^ 1;
    while (pf->busy == t) pthread_cond_wait(&pf->done, &pf->mu);
    pf_buf *b = &pf->buf[t];
    size_t img_bytes = 0, idx_bytes = 0;
    /* a request too large to hold is not read ahead: its records are read on demand */
    if (size_mul(n, pf->rb, &img_bytes) || size_mul(n, sizeof *b->idx, &idx_bytes)) n = 0;
    if (n > b->cap) { /* grows to the largest request, then stays */
        free(b->idx);
        free(b->state);
        free(b->img);
        b->idx = xmalloc(idx_bytes);
        b->state = xmalloc(n);
        b->img = xmalloc(img_bytes);
        b->cap = n;
    }
    if (n) {
        memcpy(b->idx, indices, n * sizeof *indices);
        memset(b->state, SLOT_PENDING, n);
    }
    b->n = n;
    b->next = 0;
    b->hint = 0;
    pf->newest = t;
    pthread_cond_signal(&pf->work);
    pthread_mutex_unlock(&pf->mu);
}

static int find(pf_buf *b, uint32_t index, size_t *pos) {
    if (b->hint < b->n && b->idx[b->hint] == index) {
        *pos = b->hint;
        return 1;
    }
    for (size_t i = 0; i < b->n; i++)
        if (b->idx[i] == index) {
            *pos = i;
            return 1;
        }
    return 0;
}

int prefetcher_get(prefetcher *pf, uint32_t index, uint8_t *out) {
    pthread_mutex_lock(&pf->mu);
    pf_buf *b = NULL;
    size_t pos = 0;
    for (int k = 0; k < 2 && !b; k++) {
        pf_buf *c = &pf->buf[k == 0 ? pf->newest ^ 1 : pf->newest];
        if (find(c, index, &pos)) b = c;
    }
    if (b) {
        while (b->state[pos] == SLOT_PENDING) pthread_cond_wait(&pf->done, &pf->mu);
        if (b->state[pos] == SLOT_READY) {
            b->hint = pos + 1;
            pf->hits++;
            const uint8_t *src = b->img + pos * pf->rb;
            pthread_mutex_unlock(&pf->mu);
            /* outside the lock: only a later request may overwrite this buffer */
            memcpy(out, src, pf->rb);
            return 0;
        }
    }
    pf->misses++;
    pthread_mutex_unlock(&pf->mu);
    return dataset_get(pf->ds, index, out);
}

void prefetcher_stats(prefetcher *pf, uint64_t *hits, uint64_t *misses) {
    pthread_mutex_lock(&pf->mu);
    *hits = pf->hits;
    *misses = pf->misses;
    pthread_mutex_unlock(&pf->mu);
}

void prefetcher_free(prefetcher *pf) {
    if (!pf) return;
    pthread_mutex_lock(&pf->mu);
    pf->stop = 1;
    pthread_cond_broadcast(&pf->work);
    pthread_mutex_unlock(&pf->mu);
    pthread_join(pf->thread, NULL);
    for (int i = 0; i < 2; i++) {
        free(pf->buf[i].idx);
        free(pf->buf[i].state);
        free(pf->buf[i].img);
    }
    pthread_mutex_destroy(&pf->mu);
    pthread_cond_destroy(&pf->work);
    pthread_cond_destroy(&pf->done);
    free(pf);
}
