/* config_dump FILE [section.key=value ...]: load a config, apply overrides,
 * validate, print its canonical YAML (config_to_yaml) on stdout. Errors go to
 * stderr with exit status 1. Used by tests/ref/test_config_pyyaml.sh and handy
 * for seeing every value a run will use. */
#include "common/config/config.h"
#include "common/core/util.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [section.key=value ...]\n", argv[0]);
        return 2;
    }
    config *c = xmalloc(sizeof *c);
    int rc = config_load_file(c, argv[1]);
    for (int i = 2; !rc && i < argc; i++) rc = config_override(c, argv[i]);
    if (!rc) rc = config_validate(c);
    if (rc) {
        fprintf(stderr, "error: %s\n", err_msg());
        free(c);
        return 1;
    }
    char *text = config_to_yaml(c);
    fputs(text, stdout);
    free(text);
    free(c);
    return 0;
}
