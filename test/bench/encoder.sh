#!/usr/bin/env bash
# Encoder benchmark: rows/s of calabi_push.preview(t, NULL) against
# COPY (SELECT row_to_json(t) FROM t) TO '/dev/null' on the same
# 1,000,000-row table of mixed types, in the same run and cluster.  Both
# sides go through COPY ... TO '/dev/null' so the only difference is the
# encoding (plus preview's cursor and result tuplestore).  Prints figures;
# asserts nothing.
#
#   test/bench/encoder.sh [ROWS] [RUNS]
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

rows=${1:-1000000}
runs=${2:-3}

cp_install_dependencies
cp_build_and_install
trap 'cp_cluster_stop' EXIT
cp_cluster_start /tmp/calabi_push-bench 5491 "shared_buffers = '1GB'" "work_mem = '64MB'"

cp_log "building a $rows-row table of mixed types"
cp_psql -c "CREATE EXTENSION calabi_push"
cp_psql -v rows="$rows" -f - <"$(dirname "$0")/mixed_table.sql"

# best of $runs, in milliseconds, for each side (first run warms the cache)
time_ms() {
	local sql=$1 best= ms i
	for i in $(seq 0 "$runs"); do
		ms=$(cp_psql -c '\timing on' -c "$sql" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
		[ "$i" -eq 0 ] && continue
		if [ -z "$best" ] || awk "BEGIN{exit !($ms < $best)}"; then best=$ms; fi
	done
	echo "$best"
}

ours=$(time_ms "COPY (SELECT p FROM calabi_push.preview('t', NULL) p) TO '/dev/null'")
ref=$(time_ms "COPY (SELECT row_to_json(t) FROM t) TO '/dev/null'")

awk -v rows="$rows" -v ours="$ours" -v ref="$ref" -v runs="$runs" 'BEGIN {
	printf "\nencoder benchmark: %d rows of 12 mixed-type columns, best of %d runs\n", rows, runs
	printf "  %-52s %10.0f ms %12.0f rows/s\n", "calabi_push.preview(t, NULL)", ours, rows / (ours / 1000)
	printf "  %-52s %10.0f ms %12.0f rows/s\n", "COPY (SELECT row_to_json(t) FROM t) TO /dev/null", ref, rows / (ref / 1000)
	printf "  ratio preview / row_to_json (rows/s): %.2f (target >= 1.0)\n", ref / ours
}'
