# ---- CPU emulation of the CUDA backend (tests/cuemu/, docs/CUDA.md) ---------
#   make cuemu              libcllm with CLLM_CUDA=1 and every kernels/cuda .cu
#                           file compiled by g++ against the emulator, into
#                           build-cuemu/: test_cuda, test_cuda_train, the
#                           cllm-* binaries and tools; no libcudart/libcublas
#   make cuemu-check        tests/cuemu/check.sh: test_cuda (twice: as is, and
#                           without graphs, 16-row products, reverse thread
#                           order), test_cuda_train and tests/cuemu/e2e.sh
#                           (cllm-gen / cllm-traj --device cuda vs cpu) under
#                           emulation, logs in build-cuemu/test-logs/
#   make cuemu CUEMU_SAN=1  the same with ASan+UBSan, into build-cuemu/san/
# Only when g++ and perl exist (cu2cc is perl); the normal build is untouched.
# make check runs cuemu-check too (when they exist).
# Included by the top-level Makefile; uses its CFLAGS, LIB_SRC, THIRD.
CUEMU_CXX ?= g++
ifneq ($(and $(shell command -v $(CUEMU_CXX) 2>/dev/null),$(shell command -v perl 2>/dev/null)),)

ifeq ($(CUEMU_SAN),1)
CE        := build-cuemu/san
CE_SAN    := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
CE        := build-cuemu
CE_SAN    :=
endif
CE_CFLAGS := $(filter-out -fsanitize=% -fno-sanitize-recover=%,$(CFLAGS)) -DCLLM_CUDA=1 $(CE_SAN)
# The .cu files: C++17 as nvcc, no FMA contraction (as the C build; nvcc's
# default contracts, one of the differences the emulation cannot show), and
# the project's warnings with three relaxed for them: unknown pragmas (#pragma
# unroll is nvcc's), unused parameters (as WARN), and subobject linkage (the
# #line of cu2cc makes g++ take the .cu text for a header). -Wshadow is left
# out: the nvcc build does not ask it of the .cu files either.
CE_CXXFLAGS := -std=c++17 -O2 -g -D_GNU_SOURCE -ffp-contract=off -fno-strict-aliasing -pthread \
               -Wall -Wextra -Werror -Wno-unused-parameter -Wno-unknown-pragmas -Wno-subobject-linkage \
               -Itests/cuemu/include -Ilibcore -Iformats -Ikernels -MMD -MP $(CE_SAN)
CE_LIBS   := $(THIRD) -lstdc++ -lm -lpthread

CE_CU     := $(wildcard kernels/cuda/*.cu kernels/cuda/train/*.cu)
CE_OBJ    := $(LIB_SRC:%.c=$(CE)/obj/%.o) $(CE_CU:%.cu=$(CE)/obj/%.cu.o) $(CE)/obj/tests/cuemu/cuemu.o
CE_BINS   := $(CMD_SRC:cmd/%.c=$(CE)/%)
CE_TESTS  := $(CE)/tests/test_cuda $(CE)/tests/test_cuda_train $(CE)/tests/test_nccl \
             $(patsubst tests/unit/%.cu,$(CE)/tests/%,$(wildcard tests/unit/test_*.cu))
CE_TOOLS  := $(CE)/tools/make-tiny $(CE)/tools/cllm-model-info

cuemu: $(CE_TESTS) $(CE_BINS) $(CE_TOOLS) $(CE)/cuemu-selftest $(CE)/libnccl-emu.so $(CE)/tools/model-diff

# MPI as in the normal build (dist.c; data-parallel training on the emulated
# device), and the emulated NCCL that nccl.cu loads at run time
# (CLLM_NCCL_LIB=build-cuemu/libnccl-emu.so; over MPI when there is MPI).
ifeq ($(MPI),1)
$(CE)/obj/libcore/dist.o: CE_CFLAGS += -DCLLM_MPI=1 $(shell $(MPICC) --showme:compile)
CE_LIBS   += -Wl,--as-needed $(shell $(MPICC) --showme:link) -Wl,--no-as-needed
CE_NCCL_MPI := -DCUEMU_MPI=1 -DOMPI_SKIP_MPICXX=1 -DMPICH_SKIP_MPICXX=1 $(shell $(MPICC) --showme:compile)
CE_NCCL_LINK := $(shell $(MPICC) --showme:link)
endif
$(CE)/obj/libcore/dist.o: $(CE)/.mpi-$(MPI)
$(CE)/.mpi-%:
	@mkdir -p $(CE) && rm -f $(CE)/.mpi-* && touch $@
$(CE)/libnccl-emu.so: tests/cuemu/nccl_emu.cc tests/cuemu/include/nccl.h $(CE)/.mpi-$(MPI)
	@mkdir -p $(dir $@)
	$(CUEMU_CXX) $(filter-out -MMD -MP,$(CE_CXXFLAGS)) $(CE_NCCL_MPI) -shared -fPIC $< -o $@ $(CE_NCCL_LINK)

$(CE)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CE_CFLAGS) -c $< -o $@

# cu2cc rewrites launches and __shared__ (line numbers kept; #line names the .cu)
$(CE)/gen/%.cc: %.cu tests/cuemu/cu2cc
	@mkdir -p $(dir $@)
	perl tests/cuemu/cu2cc $< > $@.tmp && mv $@.tmp $@

$(CE)/obj/%.cu.o: $(CE)/gen/%.cc
	@mkdir -p $(dir $@)
	$(CUEMU_CXX) $(CE_CXXFLAGS) -iquote $(dir $*) -c $< -o $@

$(CE)/obj/tests/cuemu/cuemu.o: tests/cuemu/cuemu.cc
	@mkdir -p $(dir $@)
	$(CUEMU_CXX) $(CE_CXXFLAGS) -Wshadow -c $< -o $@

$(CE)/libcllm.a: $(CE_OBJ)
	@rm -f $@
	ar rcs $@ $^

# the emulator's own test (a .cu file of its own, no libcllm)
$(CE)/cuemu-selftest: $(CE)/obj/tests/cuemu/selftest.cu.o $(CE)/obj/tests/cuemu/cuemu.o
	$(CUEMU_CXX) $(LDFLAGS) $(CE_SAN) -o $@ $^ -lm -lpthread

$(CE)/cllm-%: $(CE)/obj/cmd/cllm-%.o $(CE)/libcllm.a
	$(CC) $(LDFLAGS) $(CE_SAN) -o $@ $^ $(CE_LIBS)

$(CE)/tests/%: $(CE)/obj/tests/unit/%.o $(CE)/libcllm.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(CE_SAN) -o $@ $^ $(CE_LIBS)

# kernel-level tests written in CUDA (tests/unit/test_*.cu), through cu2cc
$(CE)/tests/%: $(CE)/obj/tests/unit/%.cu.o $(CE)/libcllm.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(CE_SAN) -o $@ $^ $(CE_LIBS)

$(CE)/tools/%: $(CE)/obj/tests/tools/%.o $(CE)/libcllm.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(CE_SAN) -o $@ $^ $(CE_LIBS)

cuemu-check: cuemu
	tests/cuemu/check.sh $(CE)

# Part of the whole suite: ~1.5 min on 2 cores, build included. A .cu file that
# calls a CUDA function the stand-ins lack fails here (add it to
# tests/cuemu/include/ and cuemu.cc).
check: cuemu-check

cuemu-clean:
	rm -rf build-cuemu
clean: cuemu-clean

.PHONY: cuemu cuemu-check cuemu-clean

-include $(shell find $(CE)/obj -name '*.d' 2>/dev/null)

else
cuemu cuemu-check:
	@echo "cuemu: needs $(CUEMU_CXX) and perl" >&2; exit 1
.PHONY: cuemu cuemu-check
endif
# ---- end of the CPU emulation -----------------------------------------------
