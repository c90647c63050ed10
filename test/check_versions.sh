#!/usr/bin/env bash
# Compiles every source file against the server headers of PostgreSQL 14,
# 16 and 17 (the machine's own 15 is what test/run builds and tests), with
# the Makefile's warnings as errors.  Debian 12 packages only 15, so the
# headers come from other distributions' postgresql-server-dev packages,
# unpacked under /tmp (never installed): 14 from Ubuntu 22.04, 16 from
# Ubuntu 24.04, 17 from Debian 13.  Needs the network; not part of test/run.
# This checks that compat.h covers every API difference the code meets; it
# does not run anything on those versions.
#
#   test/check_versions.sh
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"

cp_install_dependencies
dir=/tmp/calabi_push-versions
mkdir -p "$dir"

# headers_of VERSION MIRROR SUITE COMPONENT: the unpacked include directory
headers_of() {
	local v=$1 mirror=$2 suite=$3 component=$4 index file
	local out="$dir/pg$v"
	if [ ! -d "$out/usr/include/postgresql/$v/server" ]; then
		index="$dir/$suite-$component.xz"
		[ -s "$index" ] || curl -fsS -o "$index" "$mirror/dists/$suite/$component/binary-amd64/Packages.xz"
		file=$(xz -dc "$index" | awk -v p="Package: postgresql-server-dev-$v" \
			'$0 == p { f = 1 } f && /^Filename:/ { print $2; exit }')
		[ -n "$file" ] || { echo "no postgresql-server-dev-$v in $mirror $suite" >&2; return 1; }
		curl -fsS -o "$dir/pg$v.deb" "$mirror/$file"
		rm -rf "$out"
		dpkg -x "$dir/pg$v.deb" "$out"
	fi
	echo "$out/usr/include/postgresql/$v/server"
}

# The other distributions' headers may expect a newer C library (strlcpy
# came to glibc in 2.38, after Debian 12's): declare it as they would.
echo 'extern unsigned long strlcpy(char *, const char *, unsigned long);' >"$dir/strlcpy.h"

cd "$CP_ROOT"
status=0
for spec in "14 http://archive.ubuntu.com/ubuntu jammy universe" \
	"16 http://archive.ubuntu.com/ubuntu noble universe" \
	"17 http://deb.debian.org/debian trixie main"; do
	set -- $spec
	inc=$(headers_of "$@")
	bad=0
	for f in src/*.c; do
		gcc -std=gnu99 -fsyntax-only -Wall -Wextra -Werror -Wno-unused-parameter \
			-Wno-sign-compare -Wmissing-prototypes -Wdeclaration-after-statement \
			-include "$dir/strlcpy.h" -DCALABI_PUSH_VERSION='"check"' \
			-Isrc -I"$inc" -I/usr/include/postgresql \
			$(pkg-config --cflags libcurl libcjson zlib) "$f" || bad=$((bad + 1))
	done
	if [ "$bad" -eq 0 ]; then
		echo "PostgreSQL $1 (server headers from $3): every file compiles"
	else
		echo "PostgreSQL $1: $bad file(s) do not compile"
		status=1
	fi
done
exit $status
