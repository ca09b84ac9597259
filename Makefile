# cllm: build the library, the binaries, the tests and the man pages.
#
#   make                  binaries into build/ (CUDA backend too when nvcc is found)
#   make check            the whole CPU test suite (unit tests under ASan+UBSan too)
#   make setup            Debian packages the build needs, and the default model
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make STATIC=1         third-party libraries linked statically (for a bare GPU machine;
#                         another setting in the same BUILD directory rebuilds it all)
#   make SAN=1            ASan+UBSan build (into build-san/)
#   make CUDA=0|1         force the CUDA backend off or on (default: on when nvcc exists)

VERSION := 0.1.0
PREFIX  ?= /usr/local
CC      ?= cc
NVCC    ?= nvcc

ifeq ($(SAN),1)
BUILD   ?= build-san
else
BUILD   ?= build
endif

ifndef CUDA
CUDA := $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
endif

WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS   ?= -O2 -g
# No FMA contraction: dequantisation must equal numpy's d*q+m bit for bit, and
# reductions must not change with the compiler's mood.
CFLAGS   += -std=c11 -D_GNU_SOURCE -ffp-contract=off -fno-strict-aliasing $(WARN) -pthread \
            -Ilibcore -Iformats -Ikernels -DCLLM_VERSION='"$(VERSION)"' -MMD -MP
ifeq ($(SAN),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif

THIRD    := -lmsgpackc -lzstd -ljansson -lpcre2-8 -lopenblas
ifeq ($(STATIC),1)
# Static third-party libraries; libc, libm and libpthread stay dynamic (glibc).
# OpenBLAS from Debian is built with gfortran, so its static archive needs libgfortran.
LIBS     := -Wl,-Bstatic $(THIRD) -lgfortran -lquadmath -Wl,-Bdynamic -lm -lpthread -ldl
else
LIBS     := $(THIRD) -lm -lpthread
endif

ifeq ($(CUDA),1)
CFLAGS   += -DCLLM_CUDA=1
CUDA_ARCH ?= 90
NVFLAGS  := -O2 -arch=sm_$(CUDA_ARCH) -Ilibcore -Iformats -Ikernels -Xcompiler -Wall -MMD -MP
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC))))
CU_SRC   := $(wildcard kernels/cuda/*.cu kernels/cuda/train/*.cu)
# Link the CUDA libraries only once there is CUDA code to link.
ifneq ($(CU_SRC),)
LIBS     += -L$(CUDA_HOME)/lib64 -lcublas -lcudart_static -lrt -lstdc++
endif
else
CU_SRC   :=
endif

LIB_SRC  := $(wildcard libcore/*.c) $(wildcard formats/*.c) $(wildcard kernels/cpu/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
CMD_SRC  := $(wildcard cmd/cllm-*.c)
BINS     := $(CMD_SRC:cmd/%.c=$(BUILD)/%)
TEST_SRC := $(wildcard tests/unit/test_*.c)
TESTS    := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# Kernel-level CUDA tests (tests/unit/test_*.cu), with the CUDA backend only;
# without a device they print "skip" (tests/cuemu runs them emulated).
ifneq ($(CU_SRC),)
TESTS    += $(patsubst tests/unit/%.cu,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.cu))
endif
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOLS    := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
MANS     := $(wildcard man/*.1 man/*.5 man/*.7)

all: $(BINS) $(TESTS) $(TOOLS)

# Every object depends on BUILD/config too (the build's settings, below).
$(BUILD)/obj/%.o: %.c $(BUILD)/config
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu $(BUILD)/config
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(BUILD)/libcllm.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/cllm-%: $(BUILD)/obj/cmd/cllm-%.o $(BUILD)/libcllm.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libcllm.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tools/%: $(BUILD)/obj/tests/tools/%.o $(BUILD)/libcllm.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# The whole CPU suite: unit tests and shell tests on the normal build, then the
# unit tests and the bad-input tests again under ASan+UBSan.
check: all
	tests/run.sh $(BUILD)
	$(MAKE) --no-print-directory SAN=1 BUILD=build-san all
	CLLM_SAN=1 tests/run.sh build-san unit bad

# Benchmarks print ratios and rates; they are not tests.
bench: all
	scripts/bench-stream.sh $(BUILD)

setup:
	@scripts/setup.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	           $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	for m in $(MANS); do s=$${m##*.}; install -m 644 $$m $(DESTDIR)$(PREFIX)/share/man/man$$s/; done

clean:
	rm -rf build build-san build-fuzz build-static

.PHONY: all check bench setup install clean
.SECONDARY:

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- fuzzing (tests/fuzz/, docs/RELIABILITY.md) ----------------------------
#   make fuzz [FUZZ_TIME=60] [FUZZ_TARGETS="stream gguf"]   libFuzzer + ASan + UBSan
# The targets are built with clang into build-fuzz/ and each runs FUZZ_TIME
# seconds on a copy of its corpus (new finds go to build-fuzz/corpus/, crashes
# to build-fuzz/crash-*), with tests/fuzz/TARGET.dict as its dictionary when
# there is one (the JSON targets: random bytes rarely make a key it knows). The normal build links each target to a replay driver
# (BUILD/tools/fuzz-replay-TARGET) that tests/sh/fuzz_replay.sh runs on the
# committed corpora.
FUZZ_ALL     := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_TIME    ?= 60
FUZZ_CC      ?= clang
FUZZ_FLAGS   := -max_total_time=$(FUZZ_TIME) -malloc_limit_mb=2048 -rss_limit_mb=4096 -timeout=20 -max_len=65536
FUZZ_REPLAY  := $(FUZZ_ALL:%=$(BUILD)/tools/fuzz-replay-%)

all: $(FUZZ_REPLAY)

$(BUILD)/tools/fuzz-replay-%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay.o $(BUILD)/libcllm.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

fuzz-build:
	$(MAKE) --no-print-directory BUILD=build-fuzz SAN=1 CUDA=0 MPI=0 CC="$(FUZZ_CC) -fsanitize=fuzzer-no-link" build-fuzz/libcllm.a
	for t in $(FUZZ_TARGETS); do \
	  $(FUZZ_CC) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
	    -O1 -g -std=c11 -D_GNU_SOURCE $(WARN) -Ilibcore -Iformats -Ikernels \
	    tests/fuzz/fuzz_$$t.c build-fuzz/libcllm.a $(THIRD) -lm -lpthread -o build-fuzz/fuzz_$$t || exit 1; \
	done

fuzz: fuzz-build
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t && \
	  dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
	  build-fuzz/fuzz_$$t $(FUZZ_FLAGS) $$dict -artifact_prefix=build-fuzz/crash-$$t- \
	    build-fuzz/corpus/$$t tests/fuzz/corpus/$$t || exit 1; \
	done

.PHONY: fuzz fuzz-build
# ---- end of fuzzing ---------------------------------------------------------

# ---- MPI (data-parallel cllm-train; libcore/dist.h, docs/SCALING.md) --------
#   make MPI=0|1   force MPI off or on (default: on when mpicc is found, off with STATIC=1:
#                  Debian's Open MPI has no static libraries)
# Only libcore/dist.c includes mpi.h: it gets -DCLLM_MPI=1 and Open MPI's compile flags;
# the binaries link libmpi --as-needed, so only those that use dist.o (cllm-train) need it.
MPICC ?= mpicc
ifndef MPI
MPI := $(if $(filter 1,$(STATIC)),0,$(if $(shell command -v $(MPICC) 2>/dev/null),1,0))
endif
ifeq ($(MPI),1)
ifeq ($(STATIC),1)
$(error MPI=1 and STATIC=1: Open MPI from Debian links dynamically only; use MPI=0)
endif
$(BUILD)/obj/libcore/dist.o: CFLAGS += -DCLLM_MPI=1 $(shell $(MPICC) --showme:compile)
LIBS     += -Wl,--as-needed $(shell $(MPICC) --showme:link) -Wl,--no-as-needed
endif
# ---- end of MPI --------------------------------------------------------------

# The build's settings, in BUILD/config: a build with other ones (make STATIC=1,
# CUDA=0, MPI=0, other CFLAGS) into the same directory rebuilds everything
# instead of finding it up to date and keeping what the old settings made. The
# file is rewritten only when the settings differ, so its time says when they
# last changed.
BUILD_CONFIG := CC=$(CC) CFLAGS=$(CFLAGS) NVCC=$(NVCC) NVFLAGS=$(NVFLAGS) LDFLAGS=$(LDFLAGS) LIBS=$(LIBS) MPI=$(MPI)
DRY_RUN := $(findstring n,$(firstword -$(MAKEFLAGS)))
ifneq ($(file < $(BUILD)/config),$(BUILD_CONFIG))
ifeq ($(DRY_RUN),)   # not under make -n
$(shell mkdir -p $(BUILD))
$(file > $(BUILD)/config,$(BUILD_CONFIG))
endif
endif
# A config missing when the objects are considered (make -n in a new build
# directory, which writes nothing above): without a rule every object was
# "No rule to make target"; written here unless under make -n.
$(BUILD)/config:
	@mkdir -p $(@D)
	$(if $(DRY_RUN),,$(file > $@,$(BUILD_CONFIG)))

# CPU emulation of the CUDA subset the kernels use (tests/cuemu/, docs/CUDA.md).
-include tests/cuemu/cuemu.mk
