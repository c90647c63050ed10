#!/usr/bin/env bash
# Memory benchmark: the peak private memory of a sync worker (RssAnon in
# /proc/<pid>/status, sampled every 100 ms, and VmHWM, which also counts
# the shared buffers the worker touched) while it
#   - backfills ROWS rows by full refresh (keyset chunks, gzip, HTTPS), and
#   - decodes and sends one transaction of TXN_ROWS inserted rows by CDC,
# pushing to the reference receiver acknowledging without storing.  The
# target is a private peak under 100 MB whatever the table or transaction
# size.  Prints figures; asserts nothing.
#
#   test/bench/memory.sh [ROWS] [TXN_ROWS]
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

rows=${1:-10000000}
txn_rows=${2:-5000000}
dir=/tmp/calabi_push-bench-mem

cp_install_dependencies
cp_build_and_install
cleanup() {
	cp_bench_receiver_stop "$dir"
	cp_cluster_stop 2>/dev/null || true
}
trap cleanup EXIT
cp_cluster_start "$dir" 5494 "shared_buffers = '256MB'" "max_wal_size = '8GB'"
cp_allow_output_plugins calabi_push

cp_log "starting the receiver (--no-store)"
cp_run_as_server_user mkdir -p "$dir/receiver"
printf '%s' bench | cp_run_as_server_user tee "$dir/receiver/token" >/dev/null
cp_run_as_server_user chmod 600 "$dir/receiver/token"
cp_bench_receiver "$dir" 0 --token-file "$dir/receiver/token" --validate none

cp_log "building a $rows-row table"
cp_psql -v url="https://localhost:$(cat "$dir/receiver/port")/ingest" \
	-v ca="$dir/receiver/certs/ca.crt" -v rows="$rows" <<'SQL'
CREATE EXTENSION calabi_push;
CREATE TABLE big (id bigint PRIMARY KEY, label text, amount numeric, at timestamptz);
INSERT INTO big SELECT g, 'label ' || g, g * 1.25, '2026-01-01'::timestamptz + g * interval '1 second'
  FROM generate_series(1, :rows) g;
CREATE TABLE txn (id bigint PRIMARY KEY, label text, amount numeric);
VACUUM ANALYZE big;
SELECT calabi_push.create_destination('bench', :'url', token => 'bench',
       options => jsonb_build_object('ca_file', :'ca'));
-- a schedule keeps the worker alive after its run, for its VmHWM
SELECT calabi_push.create_sync('fr', 'bench', ARRAY['big']::regclass[],
       options => '{"schedule": "1 hour"}');
SELECT calabi_push.create_sync('cdc', 'bench', ARRAY['txn']::regclass[], method => 'cdc');
SQL

worker_pid() {
	cp_psql -At -c "SELECT pid FROM calabi_push.sync_status WHERE name = '$1'"
}
kb() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# samples RssAnon of the sync's worker until done_sql is true; prints
# "peak_anon_kb hwm_kb seconds"
measure() {
	local sync=$1 done_sql=$2 pid peak=0 v start end
	start=$(date +%s.%N)
	for _ in $(seq 600); do pid=$(worker_pid "$sync"); [ -n "$pid" ] && break; sleep 0.1; done
	while :; do
		v=$(kb "$pid" RssAnon); [ "${v:-0}" -gt "$peak" ] && peak=$v
		[ "$(cp_psql -At -c "$done_sql")" = t ] && break
		sleep 0.1
	done
	end=$(date +%s.%N)
	echo "$peak $(kb "$pid" VmHWM) $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b - a}')"
}

cp_log "full refresh of $rows rows"
cp_psql -q -c "SELECT calabi_push.start_sync('fr')" >/dev/null
read -r fr_anon fr_hwm fr_s < <(measure fr \
	"SELECT state = 'idle' AND completed_at IS NOT NULL FROM calabi_push.sync_status WHERE name = 'fr'")

cp_log "CDC: one transaction of $txn_rows rows"
cp_psql -q -c "SELECT calabi_push.start_sync('cdc')" >/dev/null
for _ in $(seq 600); do
	[ "$(cp_psql -At -c "SELECT state = 'running' AND lsn_acknowledged IS NOT NULL FROM calabi_push.sync_status WHERE name = 'cdc'")" = t ] && break
	sleep 0.1
done
cp_psql -q -c "INSERT INTO txn SELECT g, 'label ' || g, g * 1.25 FROM generate_series(1, $txn_rows) g"
end_lsn=$(cp_psql -At -c "SELECT pg_current_wal_lsn()")
read -r cdc_anon cdc_hwm cdc_s < <(measure cdc \
	"SELECT lsn_acknowledged >= '$end_lsn' FROM calabi_push.sync_status WHERE name = 'cdc'")

awk -v rows="$rows" -v txn="$txn_rows" -v fa="$fr_anon" -v fh="$fr_hwm" -v fs="$fr_s" \
	-v ca="$cdc_anon" -v ch="$cdc_hwm" -v cs="$cdc_s" 'BEGIN {
	printf "\nworker memory (private peak = max RssAnon sampled every 100 ms; VmHWM includes shared buffers touched)\n"
	printf "  %-44s %8.1f MB private peak %8.1f MB VmHWM %7.1f s\n", "full refresh, " rows " rows", fa / 1024, fh / 1024, fs
	printf "  %-44s %8.1f MB private peak %8.1f MB VmHWM %7.1f s\n", "CDC, one transaction of " txn " rows", ca / 1024, ch / 1024, cs
	printf "  target: private peak under 100 MB in both\n"
}'
