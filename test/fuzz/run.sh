#!/usr/bin/env bash
# Builds the libFuzzer targets of calabi_push (test/fuzz/fuzz_*.c, clang
# with -fsanitize=fuzzer,address,undefined) and runs each for a bounded
# time, starting from its seed corpus (corpus/<target>/) and replaying every
# crash input ever found (regressions/<target>/).  Prints "ok <target>" or
# "not ok <target>" per target; exits non-zero when any crashed.
#
#   test/fuzz/run.sh [TARGET…]      all targets, or the named ones
#   CP_FUZZ_SECONDS=N               time per target (default 45)
#
# A crash input lands in test/fuzz/build/crashes/; once the bug is fixed,
# keep it in regressions/<target>/ so that every run replays it.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${CP_FUZZ_SECONDS:-45}
build=${CP_FUZZ_BUILD:-$here/build}
pgc=${PG_CONFIG:-/usr/lib/postgresql/${CP_PG_MAJOR:-15}/bin/pg_config}

# the plain-C sources each target exercises
declare -A sources=(
	[fuzz_retry_after]="src/http_parse.c"
	[fuzz_header_line]="src/http_parse.c"
	[fuzz_excerpt]="src/http_parse.c"
	[fuzz_token_response]="src/http_parse.c"
	[fuzz_egress_literal]="src/egress_policy.c"
	[fuzz_egress_list]="src/egress_policy.c"
)
all=(fuzz_retry_after fuzz_header_line fuzz_excerpt fuzz_token_response
	fuzz_egress_literal fuzz_egress_list)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

# (gnu_printf in PostgreSQL's headers is a GCC-only attribute.)
# PostgreSQL's headers for the types and its pure helpers (UTF-8 checks,
# strlcpy, pg_strcasecmp) from libpgcommon/libpgport: nothing of the backend.
cflags=(-g -O1 -fno-omit-frame-pointer -Wall -Wno-ignored-attributes
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
	-I"$root/src" -I"$("$pgc" --includedir-server)"
	$(pkg-config --cflags libcjson libcurl))
libs=(-L"$("$pgc" --pkglibdir)" -lpgcommon -lpgport
	$(pkg-config --libs libcjson libcurl))

mkdir -p "$build/crashes"
passed=0
failed=0
for t in "${targets[@]}"; do
	if [ -z "${sources[$t]:-}" ]; then
		echo "not ok $t: no such fuzz target (one of: ${all[*]})"
		failed=$((failed + 1))
		continue
	fi
	srcs=()
	for s in ${sources[$t]}; do srcs+=("$root/$s"); done
	if ! clang "${cflags[@]}" "$here/$t.c" "${srcs[@]}" "${libs[@]}" \
		-o "$build/$t" 2>"$build/$t.build.log"; then
		cat "$build/$t.build.log"
		echo "not ok $t: does not build"
		failed=$((failed + 1))
		continue
	fi
	# new inputs go into a scratch corpus; the seeds stay as they are
	work="$build/corpus/$t"
	rm -rf "$work"
	mkdir -p "$work" "$here/corpus/$t" "$here/regressions/$t"
	# UBSan's reports are fatal (-fno-sanitize-recover), and print stacks
	if UBSAN_OPTIONS=print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
		"$build/$t" -max_total_time="$seconds" -timeout=10 -max_len=4096 \
		-artifact_prefix="$build/crashes/$t-" -print_final_stats=1 \
		"$work" "$here/corpus/$t" "$here/regressions/$t" \
		>"$build/$t.log" 2>&1; then
		echo "ok $t: $(sed -n 's/^stat::number_of_executed_units: *//p' "$build/$t.log" | tail -1) runs in ${seconds} s"
		passed=$((passed + 1))
	else
		grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$build/$t.log" | head -5
		echo "not ok $t: crashed; log $build/$t.log"
		failed=$((failed + 1))
	fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
