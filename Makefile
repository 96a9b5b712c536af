# imbridge - phone sockets (edge) <-> Redis pub/sub <-> XMPP sessions (xmppd).
#
#   make            build bin/imb-edge, bin/imb-xmppd, bin/imcat
#   make test       install what is missing, build, run unit + integration tests
#   make run        install what is missing, build, start a local stack
#   make bench      benchmarks (never part of make test)
#   make SANITIZE=1 ...   the same with ASan+UBSan (objects go to build/asan)
#   make CC=clang   any C11 compiler

CC       ?= cc
PKGS     := libevent libevent_openssl hiredis libstrophe jansson openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
            -Icommon $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lm

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

.PHONY: all test unit integration run bench fuzz clean deps
# Keep test objects: they are not throw-away intermediates.
.SECONDARY:
all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BIN)/imb-edge: $(EDGE_OBJ) $(COMMON_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BIN)/imb-xmppd: $(XMPPD_OBJ) $(COMMON_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BIN)/imcat: $(BUILD)/tools/imcat.o $(COMMON_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BIN)/imtap: $(BUILD)/tools/imtap.o $(COMMON_OBJ)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/tests/unit/unit.o $(EDGE_LIB) $(XMPPD_LIB) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

deps:
	@scripts/deps.sh

unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(UNIT_BIN)

integration: all
	@IMB_TEST_BIN_DIR=$(BIN) scripts/run-integration.sh

test: deps
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory integration

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-local.sh

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
