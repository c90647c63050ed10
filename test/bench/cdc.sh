#!/usr/bin/env bash
# CDC benchmarks.  Prints figures; asserts nothing.
#
# Throughput: one WAL holding a 1,000,000-row write workload (inserts,
# then updates of half of the rows, in transactions of 1,000 changes) is
# read four ways in the same run and cluster, each RUNS times (a sync or
# slot each time, all made before the workload; the best run counts):
#   - a sync: its worker decodes, encodes, gzips and POSTs to the reference
#     receiver acknowledging without storing or parsing (--no-store
#     --validate none), checkpointing each batch; timed from its worker's
#     launch to the commit of the last acknowledgement;
#   - the same with gzip by zlib (calabi_push.gzip_library), the fallback
#     of a build with ISA-L (skipped in a build without it: zlib is then
#     the first);
#   - the same with a destination whose compression is none;
#   - pg_logical_slot_get_binary_changes with pgoutput (proto 1);
#   - pg_logical_slot_get_changes with wal2json (format-version 2).
# CP_PERF=1 records a profile of the sync's reading into $dir/perf.data.
# Latency: commit to acknowledgement at a steady 1,000 transactions per
# second (pgbench -R 1000, one row each), from each record's commit time
# (_calabi_cdc_updated_at) to the end of the request that carried it, as
# the receiver logs it: p50 and p99.
#
#   test/bench/cdc.sh [CHANGES] [SECONDS] [RUNS]
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

changes=${1:-1000000}
seconds=${2:-20}
runs=${3:-3}
dir=/tmp/calabi_push-bench-cdc
half=$((changes / 2))

cp_install_dependencies
cp_as_root apt-get install -y -q postgresql-15-wal2json >/dev/null
cp_build_and_install
cleanup() {
	cp_bench_receiver_stop "$dir"
	cp_cluster_stop 2>/dev/null || true
}
trap cleanup EXIT
cp_cluster_start "$dir" 5493 "shared_buffers = '1GB'" "max_wal_size = '4GB'" \
	"max_replication_slots = 40" "max_worker_processes = 32" "track_commit_timestamp = off"
cp_allow_output_plugins calabi_push, wal2json

cp_log "starting the receiver (--no-store)"
cp_bench_receiver "$dir" 0 --token bench --validate none
port=$(cat "$dir/receiver/port")

cp_psql -v url="https://localhost:$port/ingest" -v ca="$dir/receiver/certs/ca.crt" -v runs="$runs" <<'SQL'
CREATE EXTENSION calabi_push;
CREATE TABLE t (id int PRIMARY KEY, k int, v text, at timestamptz, n numeric);
CREATE PUBLICATION bench FOR TABLE t;
SELECT calabi_push.create_destination('bench', :'url', token => 'bench',
       options => jsonb_build_object('ca_file', :'ca'));
SELECT calabi_push.create_destination('bench-zlib', :'url', token => 'bench',
       options => jsonb_build_object('ca_file', :'ca'));
SELECT calabi_push.create_destination('bench-plain', :'url', token => 'bench',
       options => jsonb_build_object('ca_file', :'ca', 'compression', 'none'));
SELECT calabi_push.create_sync(d || '-' || i, d, ARRAY['t']::regclass[], method => 'cdc',
       options => '{"batch_rows": 10000}')
  FROM unnest(ARRAY['bench', 'bench-zlib', 'bench-plain']) d, generate_series(1, :runs) i;
SELECT calabi_push.start_sync(name) FROM calabi_push.sync;
SQL
wait_acked() {
	for _ in $(seq 12000); do
		[ "$(cp_psql -At -c "SELECT lsn_acknowledged >= '$1' FROM calabi_push.sync_status WHERE name = '$2'")" = t ] && return 0
		sleep 0.05
	done
	echo "the sync did not catch up" >&2
	return 1
}
lsn=$(cp_psql -At -c 'SELECT pg_current_wal_lsn()')
for i in $(seq "$runs"); do
	wait_acked "$lsn" "bench-$i"
	wait_acked "$lsn" "bench-zlib-$i"
	wait_acked "$lsn" "bench-plain-$i"
	cp_psql -c "SELECT pg_create_logical_replication_slot('pgo_$i', 'pgoutput')" \
		-c "SELECT pg_create_logical_replication_slot('w2j_$i', 'wal2json')" >/dev/null
done
cp_psql -c "SELECT calabi_push.stop_sync(name) FROM calabi_push.sync" >/dev/null
sleep 1

cp_log "writing the workload: $half inserts, then $half updates, 1,000 changes per transaction"
cp_psql -v half="$half" <<'SQL'
CREATE PROCEDURE workload(n int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 0 .. n / 1000 - 1 LOOP
    INSERT INTO t SELECT g, g % 97, md5(g::text), now(), g * 1.5
      FROM generate_series(i * 1000 + 1, i * 1000 + 1000) g;
    COMMIT;
  END LOOP;
  FOR i IN 0 .. n / 1000 - 1 LOOP
    UPDATE t SET k = k + 1, v = v || 'x' WHERE id BETWEEN i * 1000 + 1 AND i * 1000 + 1000;
    COMMIT;
  END LOOP;
END $$;
CALL workload(:half);
SQL
end_lsn=$(cp_psql -At -c 'SELECT pg_current_wal_lsn()')

# One sync reads the workload: ms from its worker's launch to the commit of
# its last acknowledgement, waited for by one session (polling from the
# shell would take CPU from what is measured).  CP_PERF=1: profile the
# machine meanwhile, on-CPU and off-CPU (scheduler switches).
sync_ms() {
	[ "${CP_PERF:-0}" = 1 ] && { perf record -q -e cpu-clock -e sched:sched_switch -a -g -o "$dir/perf-$1.data" & perf_pid=$!; sleep 0.5; }
	cp_psql -v name="$1" -v lsn="$end_lsn" >/dev/null <<'SQL'
SET bench.name = :'name';
SET bench.lsn = :'lsn';
SELECT calabi_push.start_sync(:'name');
DO $$
BEGIN
  WHILE NOT EXISTS (SELECT FROM calabi_push.sync_status
                     WHERE name = current_setting('bench.name') AND lsn_acknowledged >= current_setting('bench.lsn')::pg_lsn) LOOP
    PERFORM pg_sleep(0.02);
  END LOOP;
END $$;
SQL
	[ "${CP_PERF:-0}" = 1 ] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
	cp_psql -At -c "SELECT round(extract(epoch FROM s.last_ack_at - r.worker_started_at) * 1000)
	                  FROM calabi_push.sync s, calabi_push._sync_runtime() r
	                 WHERE r.sync_id = s.id AND s.name = '$1'"
	cp_psql -c "SELECT calabi_push.stop_sync('$1')" >/dev/null
}
timed() {
	cp_psql -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
}
best() { tr ' ' '\n' | grep . | sort -n | head -1; }
libs=$(cp_bench_gzip_libraries)
default_lib=${libs%% *}
all_sync="" all_zlib="" all_plain="" all_pgo="" all_w2j=""
for i in $(seq "$runs"); do
	all_sync+="$(sync_ms "bench-$i") "
	if [ "$default_lib" != zlib ]; then
		cp_bench_gzip_library zlib
		all_zlib+="$(sync_ms "bench-zlib-$i") "
		cp_bench_gzip_library "$default_lib"
	fi
	all_plain+="$(sync_ms "bench-plain-$i") "
	all_pgo+="$(timed "SELECT count(*) FROM pg_logical_slot_get_binary_changes('pgo_$i', '$end_lsn', NULL, 'proto_version', '1', 'publication_names', 'bench')") "
	all_w2j+="$(timed "SELECT count(*) FROM pg_logical_slot_get_changes('w2j_$i', '$end_lsn', NULL, 'format-version', '2')") "
	cp_psql -c "SELECT pg_drop_replication_slot('pgo_$i')" -c "SELECT pg_drop_replication_slot('w2j_$i')" >/dev/null
done
sync_ms=$(echo "$all_sync" | best)
zlib_ms=$(echo "$all_zlib" | best)
plain_ms=$(echo "$all_plain" | best)
# bytes on the wire for the workload (the backfill of the empty table is a
# few hundred bytes)
wire() { cp_psql -At -c "SELECT bytes_sent FROM calabi_push.sync_status WHERE name = '$1'"; }
gzip_bytes=$(wire bench-1) zlib_bytes=$(wire bench-zlib-1) plain_bytes=$(wire bench-plain-1)
pgo_ms=$(echo "$all_pgo" | best)
w2j_ms=$(echo "$all_w2j" | best)
echo "runs (ms): sync gzip by $default_lib [$all_sync] gzip by zlib [$all_zlib] uncompressed [$all_plain] pgoutput [$all_pgo] wal2json [$all_w2j]"

awk -v n="$changes" -v r="$runs" -v s="$sync_ms" -v z="${zlib_ms:-0}" -v u="$plain_ms" -v p="$pgo_ms" -v w="$w2j_ms" \
	-v lib="$default_lib" -v gb="$gzip_bytes" -v zb="$zlib_bytes" -v ub="$plain_bytes" 'BEGIN {
	printf "\nCDC throughput: %d changes (inserts, then updates) in transactions of 1,000, same WAL, same run, best of %d\n", n, r
	printf "  %-70s %6.0f ms %9.0f changes/s %7.1f MB\n", "sync, gzip by " lib " (default): worker launch to last ack, HTTPS, checkpointed", s, n / (s / 1000), gb / 1e6
	if (z > 0)
		printf "  %-70s %6.0f ms %9.0f changes/s %7.1f MB\n", "sync, gzip by zlib (the fallback): the same", z, n / (z / 1000), zb / 1e6
	printf "  %-70s %6.0f ms %9.0f changes/s %7.1f MB\n", "sync, compression none: the same", u, n / (u / 1000), ub / 1e6
	printf "  %-70s %6.0f ms %9.0f changes/s\n", "pg_logical_slot_get_binary_changes, pgoutput (no JSON, no network)", p, n / (p / 1000)
	printf "  %-70s %6.0f ms %9.0f changes/s\n", "pg_logical_slot_get_changes, wal2json format 2 (no network)", w, n / (w / 1000)
	printf "  ratio sync / pgoutput: %.2f gzip by %s (target >= 1.1), %.2f uncompressed\n", p / s, lib, p / u
	if (z > 0)
		printf "  ratio sync / pgoutput, gzip by zlib: %.2f\n", p / z
	printf "  ratio sync / wal2json: %.2f gzip, %.2f uncompressed\n", w / s, w / u
}'

cp_log "latency: pgbench -R 1000 for $seconds s, one-row transactions"
cp_psql -c "TRUNCATE t" >/dev/null
cp_run_as_server_user rm -f "$dir/receiver/requests.jsonl"
cp_bench_receiver "$dir" "$port" --token bench --validate light --log-bodies --log "$dir/receiver/requests.jsonl"
cp_psql -c "SELECT calabi_push.start_sync('bench-1')" >/dev/null
wait_acked "$(cp_psql -At -c 'SELECT pg_current_wal_lsn()')" bench-1
echo "INSERT INTO t VALUES (nextval('s'), 1, 'x', now(), 1);" | cp_run_as_server_user tee "$dir/one.sql" >/dev/null
cp_psql -c "CREATE SEQUENCE s START 10000000" >/dev/null
cp_run_as_server_user "$(cp_pg_bindir)/pgbench" -n -R 1000 -T "$seconds" -c 4 -j 2 \
	-f "$dir/one.sql" -h "$dir" -p 5493 -U postgres postgres 2>&1 | grep -E '^(tps|latency average)' || true
wait_acked "$(cp_psql -At -c 'SELECT pg_current_wal_lsn()')" bench-1
sleep 1
/usr/bin/python3 - "$dir/receiver/requests.jsonl" <<'PY'
import json, sys, datetime
def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
lat = []
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("status") != 200 or "body" not in e:
        continue
    acked = ts(e["time"]) + e.get("duration_ms", 0) / 1000
    for rec in e["body"].splitlines():
        m = json.loads(rec)
        if m.get("type") == "RECORD":
            lat.append((acked - ts(m["record"]["data"]["_calabi_cdc_updated_at"])) * 1000)
lat.sort()
if not lat:
    sys.exit("no records")
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print("\nCDC latency, commit to acknowledgement, %d one-row transactions at 1,000/s:" % len(lat))
print("  p50 %.1f ms (target <= 10), p99 %.1f ms (target <= 50), max %.1f ms" % (q(0.5), q(0.99), lat[-1]))
PY
