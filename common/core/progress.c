#include "common/core/progress.h"

#include <stdarg.h>
#include <unistd.h>

#include "common/core/util.h"

void progress_start(progress *p, FILE *out) {
    p->out = out;
    p->tty = out && isatty(fileno(out));
    p->t0 = p->last = now_seconds();
    p->last_step = -1;
}

double progress_elapsed(const progress *p) { return now_seconds() - p->t0; }

double progress_left(const progress *p, double frac) {
    double el = progress_elapsed(p);
    return frac > 0 && frac < 1 ? el / frac - el : 0;
}

/* Whether a line is due now (see the header); notes it as written. */
static int due(progress *p, double frac, int final, double now) {
    int step = (int)(frac / PROGRESS_LINE_FRACTION + 1e-9);
    int ok;
    if (final)
        ok = 1;
    else if (p->tty)
        ok = now - p->last >= PROGRESS_REDRAW_SECONDS;
    else
        ok = step > p->last_step || now - p->last >= PROGRESS_LINE_SECONDS;
    if (ok) {
        p->last = now;
        p->last_step = step;
    }
    return ok;
}

void progress_update(progress *p, double frac, int final, const char *fmt, ...) {
    if (!p->out || !due(p, frac, final, now_seconds())) return;
    if (frac < 0) frac = 0;
    if (frac > 1) frac = 1;
    char bar[21];
    int fill = (int)(frac * 20);
    for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
    bar[20] = 0;
    fprintf(p->out, "%s[%s] %5.1f%%  ", p->tty ? "\r" : "", bar, 100 * frac);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->out, fmt, ap);
    va_end(ap);
    /* on a terminal, spaces wipe the end of a longer previous line */
    fputs(p->tty && !final ? "   " : "\n", p->out);
    fflush(p->out);
}
