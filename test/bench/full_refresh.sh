#!/usr/bin/env bash
# Full refresh benchmark: rows/s of a sync reading the 1,000,000-row mixed
# table (test/bench/mixed_table.sql) and pushing it over HTTPS, gzip, to the
# reference receiver acknowledging without storing or parsing
# (--no-store --validate none: it costs next to nothing), against
# COPY (SELECT row_to_json(t) FROM t) TO '/dev/null' in the same run and
# cluster.  The sync's time is run_completed_at - run_started_at from its
# catalog row (start of the run to the last acknowledgement).  Prints
# figures; asserts nothing.
#
#   test/bench/full_refresh.sh [ROWS] [RUNS]
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

rows=${1:-1000000}
runs=${2:-3}
dir=/tmp/calabi_push-bench-fr

cp_install_dependencies
cp_build_and_install
cleanup() {
	cp_bench_receiver_stop "$dir"
	cp_cluster_stop 2>/dev/null || true
}
trap cleanup EXIT
cp_cluster_start "$dir" 5492 "shared_buffers = '1GB'" "work_mem = '64MB'"

cp_log "building a $rows-row table of mixed types"
cp_psql -c "CREATE EXTENSION calabi_push"
cp_psql -v rows="$rows" -f - <"$(dirname "$0")/mixed_table.sql"

cp_log "starting the receiver (--no-store)"
cp_bench_receiver "$dir" 0 --token bench --validate none

cp_psql -v url="https://localhost:$(cat "$dir/receiver/port")/ingest" \
	-v ca="$dir/receiver/certs/ca.crt" <<'SQL'
SELECT calabi_push.create_destination('bench', :'url', token => 'bench',
       options => jsonb_build_object('ca_file', :'ca'));
SELECT calabi_push.create_sync('bench', 'bench', ARRAY['t']::regclass[],
       options => '{"batch_rows": 10000, "chunk_rows": 10000}');
SQL

sync_ms() {
	cp_psql -q -c "SELECT calabi_push.start_sync('bench')" >/dev/null
	for _ in $(seq 6000); do
		done_=$(cp_psql -At -c "SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'bench'")
		[ "$done_" = t ] && break
		sleep 0.1
	done
	cp_psql -At -c "SELECT round(extract(epoch FROM run_completed_at - run_started_at) * 1000)
	                  FROM calabi_push.sync WHERE name = 'bench'"
}
copy_ms() {
	cp_psql -c '\timing on' -c "COPY (SELECT row_to_json(t) FROM t) TO '/dev/null'" |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
}

best_sync= ; best_copy=
for i in $(seq 0 "$runs"); do
	s=$(sync_ms); c=$(copy_ms)
	[ "$i" -eq 0 ] && continue   # warm-up
	if [ -z "$best_sync" ] || [ "$s" -lt "$best_sync" ]; then best_sync=$s; fi
	if [ -z "$best_copy" ] || awk "BEGIN{exit !($c < $best_copy)}"; then best_copy=$c; fi
done
stats=$(cp_psql -At -c "SELECT batches_sent, bytes_sent FROM calabi_push.sync_status WHERE name = 'bench'")

awk -v rows="$rows" -v s="$best_sync" -v c="$best_copy" -v runs="$runs" -v stats="$stats" 'BEGIN {
	split(stats, a, "|")
	printf "\nfull refresh benchmark: %d rows of 12 mixed-type columns, best of %d runs\n", rows, runs
	printf "  %-56s %10.0f ms %12.0f rows/s\n", "sync: read, encode, gzip, HTTPS POST, checkpoint", s, rows / (s / 1000)
	printf "  %-56s %10.0f ms %12.0f rows/s\n", "COPY (SELECT row_to_json(t) FROM t) TO /dev/null", c, rows / (c / 1000)
	printf "  ratio sync / row_to_json (rows/s): %.2f (target >= 1.0)\n", c / s
	printf "  (all runs: %d batches, %.1f MB gzip on the wire)\n", a[1], a[2] / 1e6
}'
