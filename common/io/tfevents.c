#include "common/io/tfevents.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/core/crc32c.h"
#include "common/core/util.h"
#include "proto/tfevents.pb-c.h"

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void put_le(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

int tfevents_write_record(FILE *f, const char *name, const uint8_t *data, size_t len) {
    uint8_t head[12], tail[4];
    put_le(head, (uint64_t)len, 8);
    put_le(head + 8, crc32c_mask(crc32c(0, head, 8)), 4);
    put_le(tail, crc32c_mask(crc32c(0, data, len)), 4);
    if (fwrite(head, 1, sizeof head, f) != sizeof head || fwrite(data, 1, len, f) != len ||
        fwrite(tail, 1, sizeof tail, f) != sizeof tail)
        return err_set("%s: write failed: %m", name);
    return 0;
}

/* Stamps the event with the wall time, packs it and writes it as one record. */
static int write_event(tfevents *w, Tensorboard__Event *ev) {
    if (!w->f) return err_set("event file not open");
    ev->wall_time = wall_now();
    size_t n = tensorboard__event__get_packed_size(ev);
    uint8_t *buf = xmalloc(n + 1);
    tensorboard__event__pack(ev, buf);
    int rc = tfevents_write_record(w->f, w->path, buf, n);
    free(buf);
    return rc;
}

/* The host name as it may appear in a file name (no '/'). */
static void host_name(char *out, size_t cap) {
    if (gethostname(out, cap) != 0) snprintf(out, cap, "localhost");
    out[cap - 1] = 0;
    for (char *p = out; *p; p++)
        if (*p == '/' || *p <= ' ') *p = '_';
}

int tfevents_open(tfevents *w, const char *dir) {
    memset(w, 0, sizeof *w);
    char host[256];
    host_name(host, sizeof host);
    size_t cap = strlen(dir) + sizeof host + 96;
    w->path = xmalloc(cap);
    long t = (long)time(NULL), pid = (long)getpid();
    int fd = -1;
    for (int n = 0; n < 1000 && fd < 0; n++) {
        snprintf(w->path, cap, "%s/events.out.tfevents.%ld.%s.%ld.%d", dir, t, host, pid, n);
        fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0 || !(w->f = fdopen(fd, "wb"))) {
        err_set("%s: cannot create: %m", w->path);
        if (fd >= 0) close(fd);
        tfevents_close(w);
        return -1;
    }
    Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
    ev.what_case = TENSORBOARD__EVENT__WHAT_FILE_VERSION;
    ev.file_version = "brain.Event:2";
    if (write_event(w, &ev) != 0 || tfevents_flush(w) != 0) {
        tfevents_close(w);
        return -1;
    }
    return 0;
}

/* An event at `step` whose summary holds the n values. */
static int write_summary(tfevents *w, int64_t step, Tensorboard__Summary__Value **vals, size_t n) {
    Tensorboard__Summary sum = TENSORBOARD__SUMMARY__INIT;
    sum.n_value = n;
    sum.value = vals;
    Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
    ev.step = step;
    ev.what_case = TENSORBOARD__EVENT__WHAT_SUMMARY;
    ev.summary = &sum;
    return write_event(w, &ev);
}

int tfevents_scalars(tfevents *w, int64_t step, const char *const *tags, const double *values, int n) {
    if (n <= 0) return 0;
    Tensorboard__Summary__Value *v = xcalloc((size_t)n, sizeof *v);
    Tensorboard__Summary__Value **pv = xcalloc((size_t)n, sizeof *pv);
    for (int i = 0; i < n; i++) {
        tensorboard__summary__value__init(&v[i]);
        v[i].tag = (char *)tags[i];
        v[i].value_case = TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
        v[i].simple_value = (float)values[i];
        pv[i] = &v[i];
    }
    int rc = write_summary(w, step, pv, (size_t)n);
    free(pv);
    free(v);
    return rc;
}

int tfevents_text(tfevents *w, int64_t step, const char *tag, const char *text) {
    /* the text plugin reads a string tensor (rank 0) tagged with its metadata;
     * its content, TextPluginData{version 0}, serializes to no bytes */
    Tensorboard__SummaryMetadata__PluginData pd = TENSORBOARD__SUMMARY_METADATA__PLUGIN_DATA__INIT;
    pd.plugin_name = "text";
    Tensorboard__SummaryMetadata md = TENSORBOARD__SUMMARY_METADATA__INIT;
    md.plugin_data = &pd;
    Tensorboard__TensorShapeProto shape = TENSORBOARD__TENSOR_SHAPE_PROTO__INIT;
    ProtobufCBinaryData s = {strlen(text), (uint8_t *)text};
    Tensorboard__TensorProto t = TENSORBOARD__TENSOR_PROTO__INIT;
    t.dtype = TENSORBOARD__DATA_TYPE__DT_STRING;
    t.tensor_shape = &shape;
    t.n_string_val = 1;
    t.string_val = &s;
    Tensorboard__Summary__Value v = TENSORBOARD__SUMMARY__VALUE__INIT, *pv = &v;
    v.tag = (char *)tag;
    v.metadata = &md;
    v.value_case = TENSORBOARD__SUMMARY__VALUE__VALUE_TENSOR;
    v.tensor = &t;
    return write_summary(w, step, &pv, 1);
}

int tfevents_image_png(tfevents *w, int64_t step, const char *tag, const uint8_t *png, size_t len,
                       int width, int height, int channels) {
    Tensorboard__Summary__Image im = TENSORBOARD__SUMMARY__IMAGE__INIT;
    im.height = height;
    im.width = width;
    im.colorspace = channels; /* 1 grey, 3 RGB: the same numbers */
    im.encoded_image_string.len = len;
    im.encoded_image_string.data = (uint8_t *)png;
    Tensorboard__Summary__Value v = TENSORBOARD__SUMMARY__VALUE__INIT, *pv = &v;
    v.tag = (char *)tag;
    v.value_case = TENSORBOARD__SUMMARY__VALUE__VALUE_IMAGE;
    v.image = &im;
    return write_summary(w, step, &pv, 1);
}

int tfevents_session_start(tfevents *w, int64_t step) {
    Tensorboard__SessionLog sl = TENSORBOARD__SESSION_LOG__INIT;
    sl.status = TENSORBOARD__SESSION_LOG__SESSION_STATUS__START;
    Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
    ev.step = step;
    ev.what_case = TENSORBOARD__EVENT__WHAT_SESSION_LOG;
    ev.session_log = &sl;
    return write_event(w, &ev);
}

int tfevents_flush(tfevents *w) {
    if (!w->f) return err_set("event file not open");
    if (fflush(w->f) != 0) return err_set("%s: write failed: %m", w->path);
    return 0;
}

void tfevents_close(tfevents *w) {
    if (w->f) fclose(w->f);
    free(w->path);
    memset(w, 0, sizeof *w);
}
