/* Test helper: builds a real LMDB (liblmdb) whose values are the bytes of the given
 * files, keyed by each file's base name, as LSUN's exports key images by id.
 *   lmdb_build OUT_DIR FILE...        (OUT_DIR is created; data.mdb + lock.mdb) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lmdb.h>

static int fail(const char *what, int rc) {
    fprintf(stderr, "lmdb_build: %s: %s\n", what, mdb_strerror(rc));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: lmdb_build OUT_DIR FILE...\n");
        return 2;
    }
    if (mkdir(argv[1], 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "lmdb_build: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc = mdb_env_create(&env);
    if (rc) return fail("env_create", rc);
    if ((rc = mdb_env_set_mapsize(env, (size_t)1 << 34))) return fail("set_mapsize", rc);
    if ((rc = mdb_env_open(env, argv[1], 0, 0644))) return fail(argv[1], rc);
    if ((rc = mdb_txn_begin(env, NULL, 0, &txn))) return fail("txn_begin", rc);
    if ((rc = mdb_dbi_open(txn, NULL, 0, &dbi))) return fail("dbi_open", rc);
    for (int i = 2; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            fprintf(stderr, "lmdb_build: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *buf = malloc(n > 0 ? (size_t)n : 1);
        if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
            fprintf(stderr, "lmdb_build: cannot read %s\n", argv[i]);
            return 1;
        }
        fclose(f);
        const char *base = strrchr(argv[i], '/');
        base = base ? base + 1 : argv[i];
        MDB_val k = {strlen(base), (void *)base}, v = {(size_t)n, buf};
        if ((rc = mdb_put(txn, dbi, &k, &v, 0))) return fail(argv[i], rc);
        free(buf);
    }
    if ((rc = mdb_txn_commit(txn))) return fail("commit", rc);
    mdb_env_close(env);
    printf("%d entries\n", argc - 2);
    return 0;
}
