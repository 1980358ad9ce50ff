/* metrics.jsonl on resume: a run that resumes from the checkpoint of step s logs
 * steps s+1.. again, so the lines an interrupted run wrote after its checkpoint
 * (steps > s) would appear twice, with different values. They are removed, as
 * TensorBoard drops the same steps on the resumed run's SessionLog START. */
#ifndef DDPM_JSONL_STEPS_H
#define DDPM_JSONL_STEPS_H

#include <stdint.h>

/* Rewrites `path` (atomically: temporary file, fsync, rename) without its lines
 * whose leading "step" field is above max_step, and without a last line that has
 * no newline (torn by a kill). Lines that do not start with {"step": N are kept.
 * A missing file is no error; a file with nothing to remove is left untouched. A
 * `path`.tmp left by a rewrite that was killed is removed first (the caller owns
 * the folder: ddpm-train holds the run lock).
 * *dropped gets the number of lines removed. 0, or -1 with err_msg() naming the
 * file. Lines are at most JSONL_MAX_LINE bytes (longer ones: an error). */
#define JSONL_MAX_LINE (1u << 20)
int jsonl_drop_after_step(const char *path, uint64_t max_step, long *dropped);

/* The step of a line starting with {"step": N (spaces allowed around the colon);
 * 0 when it does not, with *step untouched. */
int jsonl_line_step(const char *line, uint64_t *step);

#endif
