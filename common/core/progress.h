/* Progress of a long loop (ddpm-sample, ddpm-eval, ddpm-prep), one rule for all:
 * on a terminal the line is redrawn in place (carriage return) at most every
 * 0.25 s; when the stream is a file or a pipe (Slurm's stderr, `2>log`) plain
 * lines are written instead, one each time another 10% is done or 30 s have
 * passed, and one at the end, so a log holds a short readable history rather
 * than one line of many kilobytes. The program passes the stream (library code
 * prints only to a stream it is given). */
#ifndef DDPM_PROGRESS_H
#define DDPM_PROGRESS_H

#include <stdio.h>

/* Plain lines: one per this fraction done, and at least one per this many seconds. */
#define PROGRESS_LINE_FRACTION 0.1
#define PROGRESS_LINE_SECONDS 30.0
#define PROGRESS_REDRAW_SECONDS 0.25

typedef struct {
    FILE *out;       /* NULL: quiet */
    int tty;         /* redraw in place (a terminal) or write plain lines */
    double t0, last; /* start; time of the last line written */
    int last_step;   /* plain lines: the last tenth written (-1: none) */
} progress;

/* out NULL: nothing is written. Whether out is a terminal decides the style. */
void progress_start(progress *p, FILE *out);
/* frac in [0, 1] done; final: the loop is over (always written, ends the line).
 * When a line is due, writes "[bar] pct%  " and the formatted text. */
void progress_update(progress *p, double frac, int final, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Seconds since progress_start, and the seconds left at that pace for frac done. */
double progress_elapsed(const progress *p);
double progress_left(const progress *p, double frac);

#endif
