# vlm — build: `make`, tests: `make test`, sanitizers: `make test SAN=1`,
# CUDA backend: `make CUDA=1` (needs nvcc), ARM64: `make TARGET=aarch64`,
# Windows: `make TARGET=windows`.
CC      ?= cc
ARCH    ?= -march=native
OPT     ?= -O2
BUILD   ?= build

# Other machines, cross-built and tested under emulation: the build goes to
# build-TARGET/, and `make test` runs every binary through RUNNER.
# aarch64 (Debian: gcc-aarch64-linux-gnu, qemu-user): a baseline ARMv8-A
# build whose kernels pick NEON or dot-product at run time; no
# OpenBLAS (our own GEMM engine) and no libedit.
ifeq ($(TARGET),aarch64)
  CC     := aarch64-linux-gnu-gcc
  ARCH   := -march=armv8-a
  BUILD  := build-aarch64
  BLAS   := 0
  RUNNER := env QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 -cpu max
# windows (Debian: mingw-w64, wine): x86-64 executables (.exe), linked
# statically, run by Wine; stb's headers found through a folder of the
# build (the cross compiler does not search /usr/include).
else ifeq ($(TARGET),windows)
  CC     := x86_64-w64-mingw32-gcc
  ARCH   := -march=x86-64
  BUILD  := build-windows
  BLAS   := 0
  EXE    := .exe
  CFLAGS += -I$(BUILD)/include -D__USE_MINGW_ANSI_STDIO=1
  LDFLAGS += -static
  LDLIBS += -lpsapi
  RUNNER := env WINEDEBUG=-all WINEPREFIX=$(CURDIR)/$(BUILD)/wine wine
  STB_DIR := $(BUILD)/include/stb
else ifneq ($(TARGET),)
  $(error unknown TARGET '$(TARGET)' (aarch64, windows))
endif
CFLAGS  += -std=c11 -g $(OPT) $(ARCH) -Wall -Wextra -Wpedantic \
           -D_GNU_SOURCE -Isrc -I. -Icli -pthread
LDLIBS  += -lm -lpthread

# Optional: OpenBLAS, the portable kernel variant's sgemm for large products
# where it is found; `make BLAS=0` (into build-noblas/) uses our own GEMM
# engine there too, as builds without it do.
ifeq ($(origin BLAS),undefined)
  BLAS := $(shell printf '\#include <cblas.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1 || echo 0)
else ifeq ($(BLAS)$(TARGET),0)
  BUILD := build-noblas
endif
ifeq ($(BLAS),1)
  CFLAGS += -DVLM_HAVE_BLAS
  LDLIBS := -lopenblas $(LDLIBS)
endif

ifeq ($(SAN),1)
  BUILD  := build-san
  CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
endif
# Coverage: `make coverage` (gcov + lcov) runs `make test` on an instrumented
# build and prints line and branch coverage of the library and the CLI.
ifeq ($(COV),1)
  BUILD  := build-cov
  OPT    := -O0
  CFLAGS += --coverage
  LDFLAGS += --coverage
endif
# ThreadSanitizer: `make tsan` runs the tests that share an engine or a
# backend between threads, and the server's (its slots share one engine).
ifeq ($(SAN),thread)
  BUILD  := build-tsan
  CFLAGS += -fsanitize=thread -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=thread
endif

# Optional: libedit (line editing and history in `vlm chat`), detected.
ifeq ($(TARGET),)
  HAVE_LIBEDIT := $(shell printf '\#include <editline/readline.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1)
endif
ifeq ($(HAVE_LIBEDIT),1)
  CLI_CFLAGS += -DVLM_HAVE_LIBEDIT
  CLI_LDLIBS += -ledit
endif

# Optional: libmicrohttpd (`vlm serve`, server/), detected for the native build.
ifeq ($(TARGET),)
  HAVE_MHD := $(shell printf '\#include <microhttpd.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1)
endif
ifeq ($(HAVE_MHD),1)
  CLI_CFLAGS += -DVLM_HAVE_SERVER
  CLI_LDLIBS += -lmicrohttpd
  SERVER_SRC := $(wildcard server/*.c)
endif

SUBSYSTEMS := platform core io text vision api
LIB_SRC  := $(foreach d,$(SUBSYSTEMS),$(wildcard src/$(d)/*.c)) $(wildcard models/*.c) \
            $(filter-out src/cpu/variant.c,$(wildcard src/cpu/*.c))
# The kernel families (src/cpu/kernels/) compiled once per instruction set,
# chosen at run time (src/cpu/variant.c sets each one's target).
ifneq ($(findstring aarch64,$(shell $(CC) -dumpmachine)),)
  CPU_VARIANTS := scalar neon dotprod
else
  CPU_VARIANTS := scalar avx2
endif
CLI_SRC  := $(wildcard cli/*.c) $(SERVER_SRC)
TEST_SRC := $(wildcard tests/test_*.c)
EX_SRC   := $(wildcard examples/*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CPU_VARIANTS:%=$(BUILD)/src/cpu/variant_%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%$(EXE))
EX_BIN   := $(EX_SRC:examples/%.c=$(BUILD)/examples/%$(EXE))
HEADERS  := $(wildcard src/*.h src/*/*.h src/*/*/*.h)

ifeq ($(CUDA),1)
  CUDA_HOME ?= /usr/local/cuda
  NVCC    ?= $(CUDA_HOME)/bin/nvcc
  CFLAGS  += -DVLM_CUDA
  LIB_OBJ += $(BUILD)/vlm_cuda.o
  LDLIBS  += -L$(CUDA_HOME)/lib64 -lcudart
endif

.PHONY: all test tsan coverage mutate examples clean amalgamate check-amalgamation
ifeq ($(TARGET),)
all: vlm.h vlm_cpu.c $(BUILD)/libvlm.a vlm
else
all: vlm.h vlm_cpu.c $(BUILD)/libvlm.a $(BUILD)/vlm$(EXE)
endif

$(BUILD)/%.o: %.c $(HEADERS) | $(STB_DIR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

ifneq ($(STB_DIR),)
$(STB_DIR):
	@mkdir -p $(dir $@)
	ln -sfn /usr/include/stb $@
endif

$(BUILD)/src/cpu/variant_%.o: src/cpu/variant.c $(wildcard src/cpu/kernels/*) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DCPU_VARIANT_$(shell echo $* | tr a-z A-Z) -c $< -o $@

$(BUILD)/vlm_cuda.o: vlm_cuda.cu $(HEADERS)
	@mkdir -p $(dir $@)
	$(NVCC) -O2 -Isrc -c $< -o $@

$(BUILD)/libvlm.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/cli/%.o: cli/%.c $(HEADERS) cli/cli.h server/server.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CLI_CFLAGS) -c $< -o $@

$(BUILD)/server/%.o: server/%.c $(HEADERS) server/server.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CLI_CFLAGS) -c $< -o $@

vlm: $(CLI_OBJ) $(BUILD)/libvlm.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libvlm.a $(LDLIBS) $(CLI_LDLIBS)

$(BUILD)/vlm$(EXE): $(CLI_OBJ) $(BUILD)/libvlm.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libvlm.a $(LDLIBS) $(CLI_LDLIBS)

$(BUILD)/tests/%$(EXE): tests/%.c $(BUILD)/libvlm.a $(HEADERS) tests/test_util.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libvlm.a $(LDLIBS)

$(BUILD)/examples/%$(EXE): examples/%.c $(BUILD)/libvlm.a $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libvlm.a $(LDLIBS)

examples: $(EX_BIN)

# The single-header amalgamation is generated; CI checks it is up to date.
vlm.h: $(HEADERS) $(wildcard src/*/*.c) tools/amalgamate.sh
	sh tools/amalgamate.sh > $@.tmp && mv $@.tmp $@
vlm_cpu.c: $(wildcard src/cpu/* src/cpu/kernels/*) tools/amalgamate.sh
	sh tools/amalgamate.sh cpu > $@.tmp && mv $@.tmp $@

test: vlm.h vlm_cpu.c $(TEST_BIN) $(BUILD)/vlm$(EXE) $(EX_BIN)
	VLM_RUNNER="$(RUNNER)" sh tests/run.sh $(BUILD)

TSAN_TESTS := test_threads test_api test_api_contract test_ops
tsan:
	$(MAKE) SAN=thread $(TSAN_TESTS:%=build-tsan/tests/%) build-tsan/vlm
	for t in $(TSAN_TESTS); do TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/$$t > build-tsan/$$t.log 2>&1 \
	  && echo "PASS tsan $$t" || { echo "FAIL tsan $$t"; tail -n 40 build-tsan/$$t.log; exit 1; }; done
	TSAN_OPTIONS=halt_on_error=1 sh tests/check_serve.sh build-tsan > build-tsan/check_serve.log 2>&1 \
	  && echo "PASS tsan check_serve" || { echo "FAIL tsan check_serve"; tail -n 60 build-tsan/check_serve.log; exit 1; }

# Mutation testing: each bug of tests/mutants.txt planted in turn, the tests
# run until one fails; prints the score and the survivors (tools/mutate.py).
mutate:
	python3 tools/mutate.py

coverage:
	rm -f $$(find build-cov -name '*.gcda' 2>/dev/null)
	-$(MAKE) COV=1 test
	sh tools/coverage.sh build-cov

clean:
	rm -rf build build-san build-tsan build-cov build-mut build-noblas build-aarch64 build-windows vlm

# libFuzzer targets for the JSON and safetensors header parsers (clang);
# not part of `make test`. Run e.g.
#   build-fuzz/fuzz_json fuzz/seeds/json -max_total_time=60
FUZZ_CC  ?= clang
FUZZ_SRC := $(wildcard src/platform/*.c) $(wildcard src/core/*.c) src/io/json.c src/io/safetensors.c $(wildcard src/vision/*.c) \
            $(wildcard src/text/*.c)
FUZZ_TARGETS := json safetensors image jinja tokenizer config openai
FUZZ_SECONDS ?= 30
.PHONY: fuzz fuzz-smoke
fuzz: $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)
# CI: every target for FUZZ_SECONDS with its seeds (tools/fuzz_smoke.sh).
fuzz-smoke: fuzz
	sh tools/fuzz_smoke.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)
build-fuzz/fuzz_image: FUZZ_DEFS = -DVLM_IMAGE_MAX_PIXELS='(1LL << 22)'
# model loading runs the model code and the CPU backend (its generated file,
# which carries every kernel variant in one translation unit)
build-fuzz/fuzz_config: FUZZ_EXTRA = src/io/model.c $(wildcard models/*.c) vlm_cpu.c
# vlm serve's request reader, over the public API (the whole library)
build-fuzz/fuzz_openai: FUZZ_EXTRA = server/openai.c $(wildcard src/api/*.c) src/io/model.c $(wildcard models/*.c) vlm_cpu.c
build-fuzz/%: fuzz/%.c $(FUZZ_SRC) $(HEADERS) vlm_cpu.c
	@mkdir -p build-fuzz
	$(FUZZ_CC) -std=c11 -g -O1 -D_GNU_SOURCE -Isrc -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $(FUZZ_DEFS) -o $@ $< $(FUZZ_SRC) $(FUZZ_EXTRA) -lm -lpthread
