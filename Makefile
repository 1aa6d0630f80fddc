# slm — small language models on CPUs, as a Lua 5.4 module.
#
#   make            build build/libslm.a (C core) and build/slm/core.so (Lua module)
#   make test       C tests + busted specs; last line "N passed, N failed"
#   make asan       the whole suite under AddressSanitizer + UBSan (build-asan/)
#   make bench      benchmarks (tokens/s, MB/s, peak RSS)
#   make doc        docs/API.md from the Lua modules' comments
#   make default-model  train the shipped default model again (tools/default_model.lua,
#                   2 threads, 10-20 minutes): models/default/
#   make host       build/host: examples/host, a C program embedding Lua + slm
#   make fuzz       libFuzzer targets (clang) in build-fuzz/, each run FUZZ_SECONDS
#                   (tests/fuzz/README.md); make test replays their regression inputs
#   make install    install into the standard Lua 5.4 paths (PREFIX=/usr/local)
#   make deps       install the Debian packages below (needs root)
#   make clean

DEBIAN_PACKAGES = build-essential pkg-config lua5.4 liblua5.4-dev libopenblas-dev lua-http lua-cjson \
                  libutf8proc-dev libpcre2-dev libjansson-dev lua-busted \
                  clang libclang-rt-14-dev python3-jsonschema

BUILD    ?= build
CC       ?= cc
OPT      ?= -O2
PKGS      = lua5.4 openblas jansson libpcre2-8 libutf8proc
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs openblas jansson libpcre2-8 libutf8proc 2>/dev/null)
# only the host program links the Lua library (the module takes the
# interpreter's symbols)
LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null)

WARN     = -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes \
           -Wpointer-arith -Wno-unused-parameter
CFLAGS  ?=
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(OPT) -g -fPIC $(WARN) $(PKG_CFLAGS) $(SAN) $(CFLAGS)
# files named *_avx2.c hold the AVX2/FMA/F16C kernels, *_avx512.c the
# AVX-512 (F BW VL DQ VNNI) ones; everything else is portable C and the
# kernels pick the highest tier the CPU has at run time (vecdot.h)
AVX2_FLAGS = -mavx2 -mfma -mf16c
AVX512_FLAGS = $(AVX2_FLAGS) -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni
# the SIMD kernel files are optimized even in the -O1 sanitizer and fuzz
# builds (still instrumented): at -O1 their register tiles are not unrolled
# into registers, and the AVX-512 GEMM ran ~40x slower under ASan
KERNEL_OPT = -O2
LDLIBS   = $(PKG_LIBS) -lpthread -lm

CORE_SRC := $(sort $(wildcard csrc/core/*.c csrc/quant/*.c csrc/kernels/*.c \
                              csrc/formats/*.c csrc/tokenizer/*.c \
                              csrc/blocks/*.c csrc/sampler/*.c csrc/train/*.c))
BIND_SRC := $(sort $(wildcard csrc/bind/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)

CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
BIND_OBJ := $(BIND_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# each fuzz target with replay.c's main(): its regression inputs, in make test
FUZZ_REPLAY := $(FUZZ_NAMES:%=$(BUILD)/tests/test_fuzz_%)

LIB    = $(BUILD)/libslm.a
MODULE = $(BUILD)/slm/core.so
HOST   = $(BUILD)/host

.PHONY: all test asan bench doc default-model install uninstall deps clean check-layers host \
        fuzz fuzz-build fuzz-bins

all: $(LIB) $(MODULE) $(TEST_BIN) $(FUZZ_REPLAY) $(HOST)

$(BUILD)/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(KERNEL_OPT) $(AVX2_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(KERNEL_OPT) $(AVX512_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(MODULE): $(BIND_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -shared $(SAN) -o $@ $(BIND_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Icsrc $< -o $@ $(LIB) $(SAN) $(LDLIBS)

# examples/host: slm linked in statically (binding objects + libslm.a,
# "slm.core" registered in package.preload), so it needs no core.so
host: $(HOST)
$(HOST): examples/host/host.c $(BIND_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(BIND_OBJ) $(LIB) $(SAN) $(LDLIBS) $(LUA_LIBS)

# The chat target runs chat.lua in an embedded Lua state (as examples/host)
FUZZ_OBJ_chat = $(BIND_OBJ)
FUZZ_LIBS_chat = $(LUA_LIBS)
FUZZ_COMMON = tests/fuzz/common.c tests/fuzz/fuzz.h

$(FUZZ_REPLAY): $(BUILD)/tests/test_fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(FUZZ_COMMON) $(LIB) $(BIND_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Icsrc -Itests/fuzz -DFUZZ_TARGET='"$*"' tests/fuzz/replay.c tests/fuzz/common.c $< \
	  $(FUZZ_OBJ_$*) -o $@ $(LIB) $(SAN) $(LDLIBS) $(FUZZ_LIBS_$*)

-include $(CORE_OBJ:.o=.d) $(BIND_OBJ:.o=.d)

# The core must not depend on Lua: only csrc/bind may include lua.h.
check-layers:
	@! grep -rlE '#include *[<"](lua|lauxlib|lualib)\.h' csrc --include=*.c --include=*.h \
	    | grep -v '^csrc/bind/' || { echo "lua.h included outside csrc/bind"; exit 1; }

test: all check-layers
	@BUILD=$(BUILD) sh tests/run.sh

# Sanitizers: the Lua interpreter is not instrumented, so the ASan runtime is
# preloaded; leaks are checked by LeakSanitizer at exit. Huge allocations
# return NULL (as malloc does) so that the specs of size errors run.
# intercept_tls_get_addr=0: GCC 12's runtime misreads glibc 2.36's dynamic
# TLS blocks (core.so's and OpenBLAS's thread-locals, dlopen'ed), and
# LeakSanitizer's tracer then crashes at exit ("Tracer caught signal 11",
# "DTLS 5 at 0xa7-...") depending on memory layout alone.
ASAN_LIB = $(shell $(CC) -print-file-name=libasan.so)
UBSAN_LIB = $(shell $(CC) -print-file-name=libubsan.so)
asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all
	@BUILD=build-asan SLM_PRELOAD="$(ASAN_LIB) $(UBSAN_LIB)" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=1:intercept_tls_get_addr=0 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 sh tests/run.sh

# Fuzzing (tests/fuzz/README.md): clang's libFuzzer with ASan + UBSan. The
# core and binding objects are rebuilt with coverage and the sanitizers in
# build-fuzz/ (a normal build is untouched); one program per target in
# build-fuzz/fuzz/. tests/fuzz/run.sh makes the seed corpora from the
# fixtures, runs each target FUZZ_SECONDS seconds and prints one line per
# target and "N passed, N failed" (a crash is a failure).
FUZZ_BUILD   ?= build-fuzz
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 6
FUZZ_SAN      = -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer
FUZZ_TARGETS ?= $(FUZZ_NAMES)

fuzz: fuzz-build $(MODULE)
	@BUILD=$(BUILD) FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) \
	  sh tests/fuzz/run.sh $(FUZZ_TARGETS)

fuzz-build:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT=-O1 SAN="$(FUZZ_SAN)" fuzz-bins

# (with BUILD=build-fuzz, from fuzz-build)
fuzz-bins: $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_COMMON) $(LIB) $(BIND_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Icsrc -Itests/fuzz -DFUZZ_LIBFUZZER tests/fuzz/common.c $< $(FUZZ_OBJ_$*) -fsanitize=fuzzer \
	  -o $@ $(LIB) $(SAN) $(LDLIBS) $(FUZZ_LIBS_$*)

bench: all
	@BUILD=$(BUILD) bin/slm bench/run.lua $(BENCH_ARGS)

doc:
	lua5.4 tools/apidoc.lua

# The default model (issue 16): trained from scratch on data/tinyshakespeare.txt
# with a fixed recipe; writes models/default/ (the Q8_0 GGUF, loss.svg,
# record.json, RECORD.md) and the initial f32 weights + each step's batch
# starts in $(BUILD)/default-model/ (for a PyTorch run from the same start).
default-model: $(MODULE)
	@mkdir -p $(BUILD)/default-model
	BUILD=$(BUILD) bin/slm tools/default_model.lua --out models/default --init $(BUILD)/default-model/init.gguf

PREFIX  ?= /usr/local
LUA_LDIR = $(DESTDIR)$(PREFIX)/share/lua/5.4
LUA_CDIR = $(DESTDIR)$(PREFIX)/lib/lua/5.4
install: all
	install -d $(LUA_LDIR)/slm $(LUA_CDIR)/slm $(LUA_LDIR)/slm/models $(LUA_LDIR)/slm/train
	install -m 644 lua/slm/*.lua $(LUA_LDIR)/slm/
	install -m 644 lua/slm/train/*.lua $(LUA_LDIR)/slm/train/
	install -d $(LUA_LDIR)/slm/grammar && install -m 644 lua/slm/grammar/*.lua $(LUA_LDIR)/slm/grammar/
	install -m 644 $(MODULE) $(LUA_CDIR)/slm/core.so
	if ls models/*.lua >/dev/null 2>&1; then install -m 644 models/*.lua $(LUA_LDIR)/slm/models/; fi
	# the shipped models (slm.load("default"), "shakespeare-char") beside slm/model.lua, where
	# slm.model.shipped_path looks
	for f in models/default/shakespeare-bpe512.gguf models/char/shakespeare-char.gguf; do \
	  if [ -f $$f ]; then install -d $(LUA_LDIR)/slm/$$(dirname $$f) && install -m 644 $$f $(LUA_LDIR)/slm/$$f; fi; \
	done
	install -d $(DESTDIR)$(PREFIX)/bin && install -m 755 bin/slm $(DESTDIR)$(PREFIX)/bin/slm

uninstall:
	rm -rf $(LUA_LDIR)/slm $(LUA_CDIR)/slm $(DESTDIR)$(PREFIX)/bin/slm

deps:
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(DEBIAN_PACKAGES)

clean:
	rm -rf build build-asan build-fuzz
