/* Read-ahead of dataset records in a background thread.
 *
 * The training order is known in advance (batch_plan(step + 1) depends only on the
 * seed and the step), so while step s computes, the records of step s + 1 are read
 * and decompressed from the shards. Two request buffers alternate: the records of the
 * step being computed and those of the next one; memory is 2 x (records requested) x
 * image bytes, whatever the dataset's size.
 *
 * Typical use (one training loop):
 *     prefetcher_request(pf, records of step s0)
 *     for each step s: prefetcher_request(pf, records of s + 1);
 *                      prefetcher_get(pf, r, out) for each record r of s
 *
 * Contract: prefetcher_request must not run concurrently with prefetcher_get (the
 * request reuses the buffer of two requests ago); prefetcher_get may be called from
 * several threads at once. A record that was not requested, or whose background read
 * failed, is read directly with dataset_get (so the error is reported in the caller's
 * thread with the dataset's message). */
#ifndef DDPM_PREFETCH_H
#define DDPM_PREFETCH_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"

typedef struct prefetcher prefetcher; /* owns its thread and buffers */

/* Starts the reader thread for `ds` (borrowed: it must outlive the prefetcher).
 * Returns 0 or -1 (err_msg) if the thread cannot be started. */
int prefetcher_create(prefetcher **out, const dataset *ds);
/* Queues records indices[0..n-1] (copied) for background reading; they become the
 * newest request, and the previous request stays readable. A request whose buffer size
 * (n x image bytes) would overflow is not read ahead (its records are read on demand). */
void prefetcher_request(prefetcher *pf, const uint32_t *indices, size_t n);
/* Copies record `index` (dataset_image_bytes) into caller-owned `out`: from the last two
 * requests if it is there (waiting for it if still being read), else read now.
 * Returns 0 or -1 (err_msg from dataset_get). */
int prefetcher_get(prefetcher *pf, uint32_t index, uint8_t *out);
/* Records served from the read-ahead buffers, and records read directly. */
void prefetcher_stats(prefetcher *pf, uint64_t *hits, uint64_t *misses);
/* Stops the thread (waiting for the record it is reading) and frees everything. */
void prefetcher_free(prefetcher *pf);

#endif
