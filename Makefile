# calabi_push -- PGXS build
#
# The extension needs libcurl, cJSON and zlib from the system (Debian:
# libcurl4-openssl-dev, libcjson-dev, zlib1g-dev), found with pkg-config,
# and ISA-L (libisal-dev) when present, for gzip at several times zlib's speed.

EXTENSION = calabi_push
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" calabi_push.control)
MODULE_big = calabi_push
# every src/*.c is part of the library (the fuzz targets build their own)
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# The install script is built from sql/install/*.sql, one file per concern,
# concatenated in name order.
DATA_built = sql/calabi_push--$(EXTVERSION).sql
INSTALL_PARTS = $(sort $(wildcard sql/install/*.sql))


# Regression tests: one file per concern in sql/, expected output in expected/.
# They run in a temporary instance configured like production
# (test/regress.conf), so nothing needs to be running beforehand.
REGRESS = $(sort $(patsubst sql/%.sql,%,$(filter-out sql/calabi_push--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=./tmp_regress --temp-config=test/regress.conf \
	--load-extension=calabi_push
TAP_TESTS = 1

PKG_CONFIG ?= pkg-config
DEP_PKGS = libcurl libcjson zlib
# gzip bodies are compressed with ISA-L's igzip when it is found (Debian:
# libisal-dev, which ships libisal.pc), else with zlib.  CP_NO_ISAL=1 builds
# the zlib fallback even where ISA-L is installed.
ifneq ($(CP_NO_ISAL),1)
ifeq ($(shell $(PKG_CONFIG) --exists libisal && echo yes),yes)
DEP_PKGS += libisal
GZIP_CPPFLAGS = -DCP_HAVE_ISAL
endif
endif
PG_CPPFLAGS = -Isrc $(shell $(PKG_CONFIG) --cflags $(DEP_PKGS)) \
	-DCALABI_PUSH_VERSION=\"$(EXTVERSION)\" $(GZIP_CPPFLAGS)
# -pthread: the gzip and sending helper threads (src/thread.c starts them)
SHLIB_LINK = $(shell $(PKG_CONFIG) --libs $(DEP_PKGS)) -pthread
# PostgreSQL's own headers trip -Wunused-parameter and -Wsign-compare under
# -Wextra.  A plain make warns and builds: another compiler or PostgreSQL
# version may bring new warnings, which must not stop a DBA's build.
# CP_WERROR=1 makes every warning an error: the project's own builds use it
# (test/run, test/valgrind, the sanitizer pass, so CI; docs/testing.md).
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare
ifeq ($(CP_WERROR),1)
PG_CFLAGS += -Werror
endif
# SANITIZE=1: an AddressSanitizer + UndefinedBehaviorSanitizer build for
# test/run sanitize (docs/testing.md).  Every finding aborts the process
# (-fno-sanitize-recover); frame pointers keep the reports' stacks whole.
ifdef SANITIZE
PG_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=all
SHLIB_LINK += -fsanitize=address,undefined
endif

EXTRA_CLEAN = tmp_regress tmp_check results regression.diffs regression.out \
	src/cflags.stamp

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# TAP tests live in test/t; PGXS looks for t/*.pl relative to the source dir.
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))
PROVE_FLAGS = -I ./test/lib

# (after the PGXS include, so that "all" stays the default goal)
sql/calabi_push--$(EXTVERSION).sql: $(INSTALL_PARTS) calabi_push.control
	cat $(INSTALL_PARTS) > $@

# PGXS tracks no header dependencies: rebuild everything when one changes.
$(OBJS): $(wildcard src/*.h)

# Nor does it track flags: src/cflags.stamp holds the last build's, and is
# rewritten (so everything rebuilt) only when they change, e.g. a plain make
# followed by make CP_WERROR=1, whose objects must all have been compiled
# with -Werror.
$(OBJS): src/cflags.stamp
src/cflags.stamp: FORCE
	@echo '$(PG_CFLAGS) $(GZIP_CPPFLAGS)' | cmp -s - $@ || echo '$(PG_CFLAGS) $(GZIP_CPPFLAGS)' > $@
.PHONY: FORCE
FORCE:
