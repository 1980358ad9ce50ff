/* TensorBoard event files, written natively: TFRecord framing around `Event`
 * protobuf messages (proto/tfevents.proto, TensorFlow's public field numbers).
 *
 * A record is: uint64 little-endian length n, uint32 LE masked CRC-32C of those 8
 * bytes, n bytes of a serialized Event, uint32 LE masked CRC-32C of the n bytes
 * (common/core/crc32c.h). A file's first event carries file_version
 * "brain.Event:2"; its name contains "tfevents", which is how TensorBoard finds
 * it under --logdir. Scalars are Summary values with simple_value (float32),
 * images Summary.Image with PNG bytes, text a DT_STRING tensor with the text
 * plugin's metadata. Each writer owns one new file; a SessionLog START at step s
 * makes TensorBoard drop the events of earlier files at steps >= s (a resumed
 * run's steps replace those an interrupted run logged after its checkpoint). */
#ifndef DDPM_TFEVENTS_H
#define DDPM_TFEVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    char *path;   /* owned */
} tfevents;

/* Creates dir/events.out.tfevents.<unix time>.<hostname>.<pid>.<n>, n the first
 * number for which no such file exists (created exclusively), and writes the
 * file_version event. 0, or -1 with err_msg() naming the path. */
int tfevents_open(tfevents *w, const char *dir);
/* One event at `step` holding n scalars (tags[i], values[i] as float32). */
int tfevents_scalars(tfevents *w, int64_t step, const char *const *tags, const double *values, int n);
/* The text plugin's summary: `text` (markdown; borrowed) as a string tensor. */
int tfevents_text(tfevents *w, int64_t step, const char *tag, const char *text);
/* An image summary: `png` holds a PNG file of width x height, channels 1 or 3. */
int tfevents_image_png(tfevents *w, int64_t step, const char *tag, const uint8_t *png, size_t len,
                       int width, int height, int channels);
/* SessionLog START at `step`: the first step this run will log. */
int tfevents_session_start(tfevents *w, int64_t step);
/* Hands what was written to the kernel (a killed process loses nothing written
 * before). */
int tfevents_flush(tfevents *w);
void tfevents_close(tfevents *w);

/* One framed record of `len` bytes into f (exposed for tests). 0 or -1. */
int tfevents_write_record(FILE *f, const char *name, const uint8_t *data, size_t len);

#endif
