# imbridge - phone sockets (edge) <-> Redis pub/sub <-> XMPP sessions (xmppd).
#
#   make            build bin/imb-edge, bin/imb-xmppd, bin/imcat, and the phone
#                   client library (build/*/libimbclient.a) with its example,
#                   bin/imb-client-example (docs/CLIENT.md)
#   make test       install what is missing, build, run unit + integration tests
#   make run        install what is missing, build, start a local stack
#   make bench      benchmarks (never part of make test)
#   make install    bin/ programs, imb-healthcheck, man pages, sample configs,
#                   systemd units under PREFIX (/usr/local), SYSCONFDIR (/etc),
#                   DESTDIR
#   make deb-test   build the Debian package (debian/) from a copy of the
#                   tree, lintian, and as root install, check, purge it
#   make SANITIZE=1 ...   the same with ASan+UBSan (objects go to build/asan)
#   make CC=clang   any C11 compiler

CC       ?= cc
PKGS     := libevent libevent_openssl hiredis libstrophe jansson yajl openssl libidn
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
            -Icommon $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lm -pthread

# The version: VERSION (one line, the release number), plus `git describe`
# when building in a git checkout. Only common/config.o sees it
# (config_version()); it is rebuilt when VERSION changes.
IMB_VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
IMB_GIT     := $(shell git describe --always --dirty 2>/dev/null)

# Sanitized binaries live apart (build/asan/bin) so they never pass for the
# release ones in bin/.
ifeq ($(SANITIZE),1)
BUILD    := build/asan
BIN      := build/asan/bin
CFLAGS   += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
else
BUILD    := build/release
BIN      := bin
endif

# Redis scripts (common/lua/*.lua) become C string literals in
# $(BUILD)/gen/<name>.lua.h, included by common/inbox.c: comment lines and
# indentation dropped, lines joined by spaces.
LUA_H    := $(patsubst common/lua/%.lua,$(BUILD)/gen/%.lua.h,$(wildcard common/lua/*.lua))
CFLAGS   += -I$(BUILD)/gen

COMMON_SRC := $(wildcard common/*.c)
EDGE_SRC   := $(wildcard edge/*.c)
XMPPD_SRC  := $(wildcard xmppd/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
EDGE_OBJ   := $(EDGE_SRC:%.c=$(BUILD)/%.o)
XMPPD_OBJ  := $(XMPPD_SRC:%.c=$(BUILD)/%.o)
# Unit tests link the service modules they test, minus each service's main.
EDGE_LIB   := $(filter-out $(BUILD)/edge/main.o,$(EDGE_OBJ))
XMPPD_LIB  := $(filter-out $(BUILD)/xmppd/main.o,$(XMPPD_OBJ))
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

PROGS := $(BIN)/imb-edge $(BIN)/imb-xmppd $(BIN)/imcat $(BIN)/imtap

# The phone client library (client/, docs/CLIENT.md): the sans-I/O core, its
# libevent adapter, a static library of both, and the example program (built
# by `make all` so every build compiles it; not installed).
CLIENT_OBJ  := $(BUILD)/client/imb_client.o $(BUILD)/client/imb_client_event.o
CLIENT_LIB  := $(BUILD)/libimbclient.a
CLIENT_PROGS := $(BIN)/imb-client-example

.PHONY: all test unit integration run bench fuzz fuzz-build fuzz-regress clean deps install uninstall deb-test
# Keep test objects: they are not throw-away intermediates.
.SECONDARY:
all: $(PROGS) $(CLIENT_LIB) $(CLIENT_PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/gen/%.lua.h: common/lua/%.lua
	@mkdir -p $(dir $@)
	sed -e 's/^[[:space:]]*//' -e '/^--/d' -e '/^$$/d' -e 's/\\/\\\\/g' \
	    -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/ "/' $< > $@

$(BUILD)/common/config.o: CFLAGS += -DIMB_VERSION='"$(IMB_VERSION)"' -DIMB_GIT='"$(IMB_GIT)"'
$(BUILD)/common/config.o: VERSION

$(BUILD)/common/inbox.o $(BUILD)/common/lease.o $(BUILD)/common/resume.o $(BUILD)/xmppd/session.o $(BUILD)/tests/unit/test_lease.o: $(LUA_H)

$(BIN)/imb-edge: $(EDGE_OBJ) $(COMMON_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BIN)/imb-xmppd: $(XMPPD_OBJ) $(COMMON_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# imcat: on the client library, with libedit for the interactive prompt.
EDIT_CFLAGS := $(shell pkg-config --cflags libedit 2>/dev/null)
EDIT_LIBS   := $(shell pkg-config --libs libedit 2>/dev/null || echo -ledit)
$(BUILD)/tools/imcat.o: CFLAGS += -Iclient $(EDIT_CFLAGS)
$(BIN)/imcat: $(BUILD)/tools/imcat.o $(CLIENT_LIB) $(COMMON_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(EDIT_LIBS) -o $@

$(BIN)/imtap: $(BUILD)/tools/imtap.o $(COMMON_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(CLIENT_LIB): $(CLIENT_OBJ)
	$(AR) rcs $@ $^

$(BIN)/imb-client-example: $(BUILD)/client/example.o $(CLIENT_LIB)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# The client's unit test links the core only (it needs no event loop).
$(BUILD)/tests/unit/test_client.o: CFLAGS += -Iclient
$(BUILD)/tests/test_client: $(BUILD)/client/imb_client.o

# The parser buffer test drives expat itself.
$(BUILD)/tests/test_xmlbuf: LDLIBS += -lexpat

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/tests/unit/unit.o $(EDGE_LIB) $(XMPPD_LIB) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

deps:
	@scripts/deps.sh

unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(UNIT_BIN)

integration: all
	@IMB_TEST_BIN_DIR=$(BIN) IMB_TEST_SANITIZED=$(SANITIZE) scripts/run-integration.sh

test: deps
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory integration

# A quiet parallel build (one short line per file, scripts/cc-brief.sh), then
# the stack in the foreground; Ctrl-C stops it and `make run` exits 0.
run: deps
	@$(MAKE) --no-print-directory -s -j$$(nproc 2>/dev/null || echo 2) all CC="$(CURDIR)/scripts/cc-brief.sh $(CC)"
	@scripts/run-local.sh

# The core and delivery tests with both services under valgrind memcheck: any
# error or definite leak makes a service exit 99, which fails the test.
VALGRIND := valgrind -q --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite --show-leak-kinds=definite
valgrind: all
	@IMB_TEST_WRAPPER="$(VALGRIND)" IMB_TEST_BIN_DIR=$(BIN) scripts/run-integration.sh \
	    tests/integration/core.test.mjs tests/integration/delivery.test.mjs

clean:
	rm -rf build bin

# Install. Sample configs are installed only where none exists (an edited
# /etc/imbridge/edge.conf is never overwritten); the systemd units get the
# real paths. DESTDIR stages the tree for a package.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
BINDIR     ?= $(PREFIX)/bin
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MANDIR     ?= $(PREFIX)/share/man
CONFDIR    := $(SYSCONFDIR)/imbridge
MAN1       := man/imcat.1 man/imtap.1
MAN8       := man/imb-edge.8 man/imb-xmppd.8
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(CONFDIR) $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(PROGS) $(DESTDIR)$(BINDIR)/
	install -m 0644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(MAN8) $(DESTDIR)$(MANDIR)/man8/
	install -m 0755 deploy/healthcheck.sh $(DESTDIR)$(BINDIR)/imb-healthcheck
	@for f in edge.conf xmppd.conf filter.rules; do \
	    if [ -e $(DESTDIR)$(CONFDIR)/$$f ]; then echo "install: keeping $(CONFDIR)/$$f"; \
	    else echo "install -m 0644 deploy/$$f $(DESTDIR)$(CONFDIR)/$$f"; \
	        install -m 0644 deploy/$$f $(DESTDIR)$(CONFDIR)/$$f || exit 1; fi; \
	done
	@for u in imb-edge imb-xmppd; do \
	    echo "install deploy/systemd/$$u.service $(DESTDIR)$(UNITDIR)/$$u.service"; \
	    sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/etc/imbridge/|$(CONFDIR)/|g' \
	        deploy/systemd/$$u.service > $(DESTDIR)$(UNITDIR)/$$u.service || exit 1; \
	    chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service; \
	done

# Programs, man pages and units go; configuration stays.
uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(PROGS)) imb-healthcheck)
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MAN1))) \
	    $(addprefix $(DESTDIR)$(MANDIR)/man8/,$(notdir $(MAN8)))
	rm -f $(DESTDIR)$(UNITDIR)/imb-edge.service $(DESTDIR)$(UNITDIR)/imb-xmppd.service

# The Debian package, built with this Makefile (debian/rules) in a temporary
# copy of the tree: this tree is neither cleaned nor dirtied.
deb-test:
	@scripts/deb-test.sh

-include $(shell find build -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------------------
# Fuzzing (libFuzzer, clang only). Never part of make test.
#
#   make fuzz                  build, replay the reproducers, then run each
#                              driver FUZZ_SECONDS (default 60) on a copy of
#                              its seed corpus; fails on any crash or finding
#   make fuzz-regress          build and run each driver once over its seeds
#                              and tests/fuzz/regress/<driver>/ (reproducers of
#                              past crashes, kept forever)
#
# Drivers live in tests/fuzz/fuzz_<name>.c, seeds in tests/fuzz/corpus/<name>/,
# dictionaries in tests/fuzz/<name>.dict.
# The modules under test are compiled straight into each driver with the
# sanitizers and coverage instrumentation (not the release objects). The
# working corpus (build/fuzz/corpus/<name>) grows across local runs; a crash
# leaves its input in build/fuzz/artifacts/<name>/.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
FUZZ_NAMES   := frame envelope stanza client jparse
FUZZ_BINS    := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_CFLAGS  := -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
                -Wno-unused-parameter -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                -Icommon -Iedge -Ixmppd -Iclient $(PKG_CFLAGS)
FUZZ_LIBS    := $(PKG_LIBS) -lm
FUZZ_OPTS    := -timeout=10 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1
FUZZ_HDRS    := $(wildcard common/*.h edge/*.h xmppd/*.h client/*.h tests/fuzz/*.h)

FUZZ_SRC_frame    := common/frame.c edge/phone.c common/envelope.c common/jparse.c common/proto.c common/schema.c common/jid.c common/util.c
FUZZ_SRC_envelope := common/envelope.c common/jparse.c common/proto.c common/schema.c common/jid.c common/seal.c common/util.c
FUZZ_SRC_stanza   := xmppd/stanza.c common/envelope.c common/jparse.c common/schema.c common/jid.c common/util.c
FUZZ_SRC_client   := client/imb_client.c
FUZZ_SRC_jparse   := common/jparse.c

.SECONDEXPANSION:
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $$(FUZZ_SRC_$$*) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(FUZZ_SRC_$*) $(FUZZ_LIBS) -o $@

fuzz-build: $(FUZZ_BINS)

fuzz-regress: fuzz-build
	@set -e; for n in $(FUZZ_NAMES); do \
	    files=$$(find tests/fuzz/corpus/$$n tests/fuzz/regress/$$n -type f 2>/dev/null | sort); \
	    echo "fuzz-regress: $$n: $$(echo "$$files" | grep -c . || true) inputs"; \
	    [ -z "$$files" ] || $(FUZZ_DIR)/fuzz_$$n $$files >$(FUZZ_DIR)/regress-$$n.log 2>&1 || \
	        { cat $(FUZZ_DIR)/regress-$$n.log; echo "fuzz-regress: $$n: FAILED"; exit 1; }; \
	done

fuzz: fuzz-regress
	@set -e; for n in $(FUZZ_NAMES); do \
	    mkdir -p $(FUZZ_DIR)/corpus/$$n $(FUZZ_DIR)/artifacts/$$n; \
	    cp tests/fuzz/corpus/$$n/* $(FUZZ_DIR)/corpus/$$n/; \
	    echo "fuzz: $$n for $(FUZZ_SECONDS) s"; \
	    $(FUZZ_DIR)/fuzz_$$n $(FUZZ_OPTS) -dict=tests/fuzz/$$n.dict \
	        -max_total_time=$(FUZZ_SECONDS) \
	        -artifact_prefix=$(FUZZ_DIR)/artifacts/$$n/ $(FUZZ_DIR)/corpus/$$n \
	        >$(FUZZ_DIR)/fuzz-$$n.log 2>&1 || \
	        { tail -n 60 $(FUZZ_DIR)/fuzz-$$n.log; \
	          echo "fuzz: $$n: FAILED; reproducer in $(FUZZ_DIR)/artifacts/$$n/"; exit 1; }; \
	    grep -E '^#[0-9]+.*DONE|^stat::' $(FUZZ_DIR)/fuzz-$$n.log || true; \
	done; echo "fuzz: no crash in $(FUZZ_NAMES)"

# ---------------------------------------------------------------------------
# Benchmarks (docs/BENCHMARKS.md). Never part of make test.
#
#   make bench                 every bench, 5 runs of 10 s per timed figure
#                              (<= 45 minutes);
#                              rewrites the tables in docs/BENCHMARKS.md
#   make bench BENCH_QUICK=1   small sizes, 2 short runs (~3-4 minutes); tables
#                              only in bench/results/latest.md
#   make bench BENCH_ARGS='--only chat,sio,wire,cost --runs 5'
#
# Bench programs (bench/*.c) are built into build/bench/ (always release
# flags; the stub bridge links the release common/ objects); the driver
# (bench/run.mjs) starts Redis, Prosody and the services on free 127.0.0.1
# ports and writes bench/results/*.json. Section 7 counts system calls with
# `perf stat` (package linux-perf) when it is there.
BENCH_DIR    := build/bench
BENCH_BINS   := $(BENCH_DIR)/loadgen $(BENCH_DIR)/echoserver $(BENCH_DIR)/xmppclient \
                $(BENCH_DIR)/stubbridge $(BENCH_DIR)/leanrelay $(BENCH_DIR)/malloccount.so \
                $(BENCH_DIR)/tlsfloor
BENCH_CFLAGS := -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
BENCH_ARGS   ?=

$(BENCH_DIR)/echoserver: bench/echoserver.c
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) $(shell pkg-config --cflags libevent) $< $(shell pkg-config --libs libevent) -o $@

# The load generator speaks the protocol through the client library's core
# (client/imb_client.c, release flags like the rest of the bench).
$(BENCH_DIR)/loadgen: bench/loadgen.c client/imb_client.c client/imb_client.h
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -Iclient $(shell pkg-config --cflags libevent jansson) bench/loadgen.c client/imb_client.c \
	    $(shell pkg-config --libs libevent jansson) -o $@

$(BENCH_DIR)/xmppclient: bench/xmppclient.c
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) $(shell pkg-config --cflags libstrophe) $< $(shell pkg-config --libs libstrophe) -o $@

# The stub bridge links the project's own common/ modules (the bus, the
# envelope codec, the inbox scripts): it runs the delivery xmppd runs.
$(BENCH_DIR)/stubbridge: bench/stubbridge.c $(COMMON_OBJ) | $(LUA_H)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(COMMON_OBJ) $(LDLIBS) -o $@

# The floor of bench 3: a relay with no storage and no bridge, on the same
# JSON lexer, allocator pool and event loop setup as the edge.
$(BENCH_DIR)/leanrelay: bench/leanrelay.c $(COMMON_OBJ) | $(LUA_H)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(COMMON_OBJ) $(LDLIBS) -o $@

# OpenSSL's own heap per idle TLS connection (bench/idle-tls.mjs prints it).
$(BENCH_DIR)/tlsfloor: bench/tlsfloor.c
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) $< $(shell pkg-config --libs openssl) -o $@

# The same of GnuTLS, measured by hand (needs libgnutls28-dev, which CI
# does not install): docs/BENCHMARKS.md, section 7.
$(BENCH_DIR)/tlsfloor-gnutls: bench/tlsfloor_gnutls.c
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) $< $(shell pkg-config --libs gnutls) -o $@

# LD_PRELOAD shim counting malloc/calloc/realloc/free (bench "cost" section).
$(BENCH_DIR)/malloccount.so: bench/malloccount.c
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -fPIC -shared $< -ldl -o $@

bench/node_modules/.package-lock.json: bench/package.json
	cd bench && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; \
	    else npm install --no-audit --no-fund --loglevel=error; fi

bench: deps
	@$(MAKE) --no-print-directory SANITIZE= all $(BENCH_BINS) bench/node_modules/.package-lock.json
	@BENCH_QUICK=$(BENCH_QUICK) node bench/run.mjs $(BENCH_ARGS)
