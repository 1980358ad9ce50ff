# ddpm-cluster build. `make` builds the programs, `make test` runs the whole suite
# (release build, then the same unit/reference tests under ASan+UBSan),
# `make bench` runs the benchmarks (`make bench-quality CKPT=...` the samplers' FID),
# `make install PREFIX=/usr/local` installs.

PREFIX   ?= /usr/local
.DEFAULT_GOAL := all
CC       ?= cc
PKGS     := openblas libzstd yaml-0.1 libprotobuf-c zlib libpng libjpeg libwebp lmdb
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c)
MPI_LIBS   := $(shell pkg-config --libs ompi-c)

WARN     := -Wall -Wextra -Wshadow
# CI builds with WERROR=1 so that a new warning fails the build.
ifeq ($(WERROR),1)
WARN     += -Werror
endif
# -fopenmp: the ops parallelise with OpenMP (docs/performance.md)
# MPI's include path for every file: common/dist (what the ranks speak) is part of the
# library; only ddpm-train and ddpm-eval link it (-lmpi)
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -g $(WARN) -pthread -fopenmp -Ibuild/gen -I. $(PKG_CFLAGS) $(MPI_CFLAGS)
# -fno-trapping-math: nothing reads the floating-point exception flags, and it
# lets gcc vectorise loops with float selects (the vectorised expf of the ops)
OPT      ?= -O3 -fno-trapping-math
# -ldnnl: oneDNN (Debian's libdnnl-dev ships no pkg-config file), the direct
# convolutions of common/ops/conv_dnnl.c
LDLIBS   := $(PKG_LIBS) -ldnnl -lm -pthread -fopenmp

# Two build flavours share the same rules: build/ (optimised) and build-san/
# (AddressSanitizer + UndefinedBehaviorSanitizer).
SAN_FLAGS := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

PROTO_SRC := $(wildcard proto/*.proto)
PROTO_C   := $(patsubst proto/%.proto,build/gen/proto/%.pb-c.c,$(PROTO_SRC))
PROTO_H   := $(PROTO_C:.c=.h)

LIB_SRC  := $(shell find common -name '*.c' | sort)
TRAIN_SRC := $(wildcard coordinator/*.c worker/*.c)
SAMPLE_SRC := $(wildcard sampler/*.c)
PREP_SRC := $(wildcard prep/*.c)
EVAL_SRC := $(wildcard eval/*.c)
# export/: two programs, one main each (ddpm-export, ddpm-import; no MPI)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
TOOL_SRC := $(wildcard tests/tools/*.c)
BENCH_SRC := $(wildcard bench/*.c)

define flavour
# $(1) = build dir, $(2) = extra cflags
$(1)/obj/%.o: %.c $(PROTO_H)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(BASE_CFLAGS) $(2) -MMD -MP -c $$< -o $$@

$(1)/obj/gen/%.o: build/gen/%.c $(PROTO_H)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(BASE_CFLAGS) $(2) -Wno-unused-parameter -c $$< -o $$@

$(1)/libddpm.a: $(patsubst %.c,$(1)/obj/%.o,$(LIB_SRC)) $(patsubst build/gen/%.c,$(1)/obj/gen/%.o,$(PROTO_C))
	@rm -f $$@
	ar rcs $$@ $$^

$(1)/tests/%: tests/unit/%.c $(1)/libddpm.a tests/unit/test.h
	@mkdir -p $$(dir $$@)
	$$(CC) $$(BASE_CFLAGS) $(2) $$< $(1)/libddpm.a -o $$@ $$(LDLIBS)

$(1)/tools/%: tests/tools/%.c $(1)/libddpm.a
	@mkdir -p $$(dir $$@)
	$$(CC) $$(BASE_CFLAGS) $(2) $$< $(1)/libddpm.a -o $$@ $$(LDLIBS)
endef

$(eval $(call flavour,build,$(OPT)))
$(eval $(call flavour,build-san,$(SAN_FLAGS)))

# keep the generated files: as intermediates of a pattern rule make would delete
# them after each build and then rebuild everything that includes them
.SECONDARY: $(PROTO_C) $(PROTO_H)

build/gen/proto/%.pb-c.c build/gen/proto/%.pb-c.h: proto/%.proto
	@mkdir -p build/gen/proto
	protoc-c --c_out=build/gen $<

UNIT_BINS := $(patsubst tests/unit/%.c,build/tests/%,$(UNIT_SRC))
SAN_UNIT_BINS := $(patsubst tests/unit/%.c,build-san/tests/%,$(UNIT_SRC))
TOOL_BINS := $(patsubst tests/tools/%.c,build/tools/%,$(TOOL_SRC))
SAN_TOOL_BINS := $(patsubst tests/tools/%.c,build-san/tools/%,$(TOOL_SRC))

PROGRAMS := build/ddpm-train build/ddpm-sample build/ddpm-prep build/ddpm-eval build/ddpm-export \
            build/ddpm-import

.PHONY: all test test-build bench bench-memory bench-dist bench-cluster bench-quality install clean
all: $(PROGRAMS)

build/ddpm-train: $(patsubst %.c,build/obj/%.o,$(TRAIN_SRC)) build/libddpm.a
	$(CC) $(BASE_CFLAGS) $(OPT) $^ -o $@ $(MPI_LIBS) $(LDLIBS)


build/ddpm-sample: $(patsubst %.c,build/obj/%.o,$(SAMPLE_SRC)) build/libddpm.a
	$(CC) $(BASE_CFLAGS) $(OPT) $^ -o $@ $(LDLIBS)

build/ddpm-prep: $(patsubst %.c,build/obj/%.o,$(PREP_SRC)) build/libddpm.a
	$(CC) $(BASE_CFLAGS) $(OPT) $^ -o $@ $(LDLIBS)
# ddpm-eval: only its bpd subcommand (eval/eval_bpd.c) uses MPI.
build/ddpm-eval: $(patsubst %.c,build/obj/%.o,$(EVAL_SRC)) build/libddpm.a
	$(CC) $(BASE_CFLAGS) $(OPT) $^ -o $@ $(MPI_LIBS) $(LDLIBS)


build/ddpm-export: build/obj/export/export_main.o build/libddpm.a
	$(CC) $(BASE_CFLAGS) $(OPT) $^ -o $@ $(LDLIBS)

build/ddpm-import: build/obj/export/import_main.o build/libddpm.a
	$(CC) $(BASE_CFLAGS) $(OPT) $^ -o $@ $(LDLIBS)

test-build: all $(UNIT_BINS) $(SAN_UNIT_BINS) $(TOOL_BINS) $(SAN_TOOL_BINS)

test: test-build
	bash tests/run_tests.sh

build/bench/%: bench/%.c build/libddpm.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT) $< build/libddpm.a -o $@ $(LDLIBS)

bench: all $(patsubst bench/%.c,build/bench/%,$(BENCH_SRC))
	bash bench/run_bench.sh

# peak RSS of one lsun256 training step, C against PyTorch (docs/memory.md); ~10 min
bench-memory: all build/bench/mem_step
	bash bench/memory_bench.sh

# distributed training on this machine (1 and 2 workers, each codec, timeline), the
# single-core wire/optimizer costs, and the lsun256 scaling model (docs/scaling.md)
bench-dist: all build/bench/wire_bench
	bash bench/dist_bench.sh
	OMP_NUM_THREADS=1 build/bench/wire_bench

# lsun256's parameter count over emulated nodes (ops/netns-cluster.sh; root), measured
# against bench/scaling_model.py's prediction (docs/scaling.md); ~20 min
bench-cluster: all build/tools/shard_tool build/bench/bench_step
	bash bench/cluster_bench.sh

# FID (feature network of bench/fmnist_fid.py) and wall time per image of each sampler
# row on one Fashion-MNIST checkpoint (docs/evaluation.md): CKPT=path [ROWS="ddim:50 ..."]
# [N=1000]; the default rows include ancestral:1000, about 2 hours per 1,000 images
bench-quality: build/ddpm-sample
	@[ -n "$(CKPT)" ] || { echo "make bench-quality CKPT=path/ckpt.ddpm [ROWS=...]" >&2; exit 2; }
	bash bench/quality_table.sh $(CKPT) $(ROWS)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/ddpm-cluster/configs
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 configs/*.yaml $(DESTDIR)$(PREFIX)/share/ddpm-cluster/configs/
	install -m 644 export/ddpm_unet.py $(DESTDIR)$(PREFIX)/share/ddpm-cluster/

clean:
	rm -rf build build-san

-include $(shell find build build-san -name '*.d' 2>/dev/null)

# ---- fuzzing (libFuzzer; needs clang). `make fuzz` builds build/fuzz/fuzz_*: the wire
# targets (fuzz/fuzz_wire_*.c, fuzz/fuzz_wire.h) and the decoder targets (every other
# fuzz/fuzz_<name>.c, fuzz/fuzz.h), against the whole library built with clang.
# `make fuzz-run FUZZ_TIME=60` runs each target that long from tests/fuzz_corpus/<target>
# and merges inputs with new coverage back into it (fuzz/run_fuzz.sh);
# `make fuzz-seeds` rewrites the wire valid_* seeds. The normal suite replays every
# corpus under ASan+UBSan with gcc: the wire ones through tests/unit/test_wire_corpus.c,
# which includes the targets' check functions, the decoder ones through
# build-san/fuzz-replay/fuzz_<name> (fuzz/replay_main.c; tests/integration/test_fuzz_replay.sh).
FUZZ_CC    ?= clang-14
FUZZ_TIME  ?= 60
FUZZ_SAN   := -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_BINS  := $(patsubst fuzz/%.c,build/fuzz/%,$(wildcard fuzz/fuzz_*.c))
DEC_FUZZ_SRC := $(filter-out fuzz/fuzz_wire_%,$(wildcard fuzz/fuzz_*.c))
FUZZ_REPLAY_BINS := $(patsubst fuzz/%.c,build-san/fuzz-replay/%,$(DEC_FUZZ_SRC))
FUZZ_LIB   := build/fuzz/libddpm.a
FUZZ_CFLAGS := $(filter-out -Wshadow,$(BASE_CFLAGS)) $(FUZZ_SAN)

build/fuzz/obj/common/%.o: common/%.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

build/fuzz/obj/fuzz/%.o: fuzz/%.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

build/fuzz/obj/gen/%.o: build/gen/%.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Wno-unused-parameter -c $< -o $@

$(FUZZ_LIB): $(patsubst %.c,build/fuzz/obj/%.o,$(LIB_SRC)) $(patsubst build/gen/%.c,build/fuzz/obj/gen/%.o,$(PROTO_C))
	@rm -f $@
	ar rcs $@ $^

build/fuzz/fuzz_wire_%: fuzz/fuzz_wire_%.c fuzz/fuzz_wire.h $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_LIB) -o $@ $(LDLIBS)

build/fuzz/fuzz_%: build/fuzz/obj/fuzz/fuzz_%.o build/fuzz/obj/fuzz/harness.o build/fuzz/obj/fuzz/entry_libfuzzer.o $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $^ -o $@ $(LDLIBS)

build-san/fuzz-replay/fuzz_%: fuzz/fuzz_%.c fuzz/harness.c fuzz/replay_main.c fuzz/fuzz.h build-san/libddpm.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(SAN_FLAGS) $(filter %.c,$^) build-san/libddpm.a -o $@ $(LDLIBS)

build/fuzz/gen_seeds: fuzz/gen_seeds.c build/libddpm.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT) $< build/libddpm.a -o $@ $(LDLIBS)

# The replay test includes the fuzz targets' sources.
build/tests/test_wire_corpus build-san/tests/test_wire_corpus: $(wildcard fuzz/fuzz_wire*.c fuzz/fuzz_wire.h)

.PRECIOUS: build/fuzz/obj/fuzz/%.o
test-build: $(FUZZ_REPLAY_BINS)

.PHONY: fuzz fuzz-run fuzz-seeds
fuzz: $(FUZZ_BINS)

fuzz-seeds: build/fuzz/gen_seeds
	build/fuzz/gen_seeds tests/fuzz_corpus

fuzz-run: fuzz
	bash fuzz/run_fuzz.sh $(FUZZ_TIME)

# SIGKILL chaos beyond the suite's 6 kills: 24 by default (CHAOS_KILLS=N), half of
# them inside a checkpoint write (tests/integration/test_chaos.sh).
.PHONY: chaos
chaos: all $(TOOL_BINS)
	CHAOS_KILLS=$${CHAOS_KILLS:-24} bash tests/integration/test_chaos.sh
