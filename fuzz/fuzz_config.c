/* Decoder target: the YAML run configuration plus command-line overrides
 * (common/config). The input is the YAML text, then up to FUZZ_MAX_OVERRIDES
 * override strings ("section.key=value"), separated by NUL bytes:
 *
 *     <yaml> \0 <override> \0 <override> ...
 *
 * An accepted config (the file loads, every override applies, config_validate
 * passes) must pass the model's own check (unet_check_config), write back to
 * canonical YAML that loads to an equal config and writes identically, and, when
 * its model is small, build (forward only, one image) unless the model refuses
 * it as unsupported. A refusal must carry a message naming the file or the
 * command line, and a refused override must leave the config as it was. No big
 * model is ever allocated: sizes are judged by the check, not by building. */
#include <string.h>

#include "common/config/config.h"
#include "common/model/unet.h"
#include "fuzz/fuzz.h"

/* one lane: the model checks here need no threads */
static const unet_options one_lane = {.lanes = 1, .prepare_budget = UNET_PREPARE_AUTO};

#define FUZZ_MAX_OVERRIDES 8
#define FUZZ_NAME "fuzz.yaml"

static int contains(const char *s, const char *what) { return strstr(s, what) != NULL; }

/* Messages quote user text with control characters replaced: one that holds any
 * is not a message (issue #14 row 5 printed uninitialised memory). */
static void check_message(const char *what) {
    const char *m = err_msg();
    if (fuzz_err_empty()) FUZZ_FAIL("config: %s refused without a message", what);
    for (const char *p = m; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            FUZZ_FAIL("config: %s refused with a message holding byte 0x%02x: %s", what,
                      (unsigned char)*p, m);
}

/* Same config and same origin of every key (the unchanged-on-error promise). */
static int same_config(const config *a, const config *b) {
    return config_diff_all(a, b, NULL, 0) == 0 &&
           memcmp(a->key_line, b->key_line, sizeof a->key_line) == 0;
}

/* Small enough to build in the fuzzer: a few hundred thousand floats at most. */
static int tiny_model(const model_config *m) {
    int widest = 0;
    for (int i = 0; i < m->num_levels; i++)
        if (m->ch_mult[i] > widest) widest = m->ch_mult[i];
    return m->image_size <= 16 && m->num_levels <= 3 && m->num_res_blocks <= 2 &&
           m->ch * widest <= 64;
}

static void check_accepted(const config *c) {
    unet_config_error e;
    if (unet_check_config(&c->model, &e) != 0)
        FUZZ_FAIL("config: accepted a model the model refuses: %s", err_msg());
    char *text = config_to_yaml(c);
    config back;
    if (config_load_string(&back, text, strlen(text), "round-trip.yaml") != 0)
        FUZZ_FAIL("config: canonical YAML does not load back: %s\n%s", err_msg(), text);
    char diff[512];
    if (config_diff_all(c, &back, diff, sizeof diff) != 0)
        FUZZ_FAIL("config: round trip changed %s", diff);
    char *again = config_to_yaml(&back);
    if (strcmp(text, again) != 0) FUZZ_FAIL("config: canonical YAML is not stable");
    free(again);
    free(text);
    if (!tiny_model(&c->model)) return;
    fuzz_err_clear();
    unet *m = unet_create(&c->model, 1, 0, &one_lane);
    if (!m && (c->model.resamp_with_conv || fuzz_err_empty()))
        FUZZ_FAIL("config: a small accepted model does not build: %s", err_msg());
    if (m && !c->model.resamp_with_conv) FUZZ_FAIL("config: resamp_with_conv false was built");
    unet_free(m);
}

int fuzz_check(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    size_t ylen = size;
    const uint8_t *nul = memchr(data, 0, size);
    if (nul) ylen = (size_t)(nul - data);
    config c;
    memset(&c, 0, sizeof c);
    fuzz_err_clear();
    if (config_load_string(&c, text, ylen, FUZZ_NAME) != 0) {
        check_message("the file");
        if (!contains(err_msg(), FUZZ_NAME)) FUZZ_FAIL("config: message names no file: %s", err_msg());
        return 0;
    }
    /* overrides: NUL-terminated copies of the chunks after the YAML */
    size_t pos = nul ? ylen + 1 : size;
    int refused = 0;
    for (int i = 0; i < FUZZ_MAX_OVERRIDES && pos < size; i++) {
        const uint8_t *end = memchr(data + pos, 0, size - pos);
        size_t len = end ? (size_t)(end - (data + pos)) : size - pos;
        char *ov = xmalloc(len + 1);
        memcpy(ov, data + pos, len);
        ov[len] = '\0';
        pos += len + 1;
        config before = c;
        fuzz_err_clear();
        if (config_override(&c, ov) != 0) {
            check_message("an override");
            if (!contains(err_msg(), "<command line>"))
                FUZZ_FAIL("config: override '%s' refused without a message naming the command line: %s",
                          ov, err_msg());
            if (!same_config(&before, &c)) FUZZ_FAIL("config: a refused override changed the config");
            refused = 1;
        }
        free(ov);
        if (refused) return 0;
    }
    fuzz_err_clear();
    if (config_validate(&c) != 0) {
        check_message("config_validate");
        return 0;
    }
    check_accepted(&c);
    return 1;
}
