#!/usr/bin/env bash
# Idle cost of a CDC sync: the CPU time and the wake-ups (voluntary context
# switches, from /proc/<pid>/stat and /proc/<pid>/status) of the worker of
# a sync whose tables do not change, over SECONDS:
#   - beside a busy database (pgbench at RATE one-row transactions per
#     second in another database of the cluster), and
#   - with the whole cluster idle;
# against a reference from the same run: the walsender of pg_recvlogical
# streaming test_decoding from a slot in the sync's (idle) database.  The
# targets: under 0.5 % of a core and at most 2 wake-ups a second.  Prints
# figures; asserts nothing.  CP_PERF=1 records where the worker sleeps
# (scheduler switches with call graphs) into $dir/perf-{busy,idle}.data.
#
#   test/bench/idle.sh [SECONDS] [RATE]
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

seconds=${1:-60}
rate=${2:-1000}
dir=/tmp/calabi_push-bench-idle
port=5495

cp_install_dependencies
cp_build_and_install
cleanup() {
	cp_bench_stop "$dir/recvlogical.pid"
	cp_bench_receiver_stop "$dir"
	cp_cluster_stop 2>/dev/null || true
}
trap cleanup EXIT
cp_cluster_start "$dir" "$port"
cp_allow_output_plugins calabi_push

cp_log "starting the receiver (--no-store)"
cp_bench_receiver "$dir" 0 --token bench --validate none

cp_psql -v url="https://localhost:$(cat "$dir/receiver/port")/ingest" \
	-v ca="$dir/receiver/certs/ca.crt" >/dev/null <<'SQL'
CREATE DATABASE busy;
CREATE EXTENSION calabi_push;
CREATE TABLE quiet (id int PRIMARY KEY, v text);
INSERT INTO quiet SELECT g, 'row ' || g FROM generate_series(1, 1000) g;
SELECT calabi_push.create_destination('bench', :'url', token => 'bench',
       options => jsonb_build_object('ca_file', :'ca'));
SELECT calabi_push.create_sync('idle', 'bench', ARRAY['quiet']::regclass[], method => 'cdc');
SELECT calabi_push.start_sync('idle');
SELECT pg_create_logical_replication_slot('reference', 'test_decoding');
SQL
cp_psql -d busy -q -c "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)"
echo "INSERT INTO t (v) VALUES ('x');" | cp_run_as_server_user tee "$dir/one.sql" >/dev/null

for _ in $(seq 600); do
	[ "$(cp_psql -At -c "SELECT state = 'running' AND lsn_acknowledged IS NOT NULL
	                       FROM calabi_push.sync_status WHERE name = 'idle'")" = t ] &&
	[ "$(cp_psql -At -c "SELECT bool_and(phase = 'done') FROM calabi_push.stream_status WHERE sync = 'idle'")" = t ] &&
		break
	sleep 0.1
done
worker=$(cp_psql -At -c "SELECT pid FROM calabi_push.sync_status WHERE name = 'idle'")

cp_bench_background "$dir/recvlogical.pid" "$dir/recvlogical.log" \
	"$(cp_pg_bindir)/pg_recvlogical" -h "$dir" -p "$port" -U postgres -d postgres \
	-S reference --start -f /dev/null
for _ in $(seq 100); do
	walsender=$(cp_psql -At -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'reference'")
	[ -n "$walsender" ] && break
	sleep 0.1
done
[ -n "$walsender" ] || { echo "pg_recvlogical did not connect: see $dir/recvlogical.log" >&2; exit 1; }

# "utime+stime_ticks voluntary_switches" of process $1
sample() {
	awk '{ print $14 + $15 }' "/proc/$1/stat" | tr '\n' ' '
	awk '$1 == "voluntary_ctxt_switches:" { print $2 }' "/proc/$1/status"
}

# Samples the worker and the walsender over $seconds; prints
# "worker_cpu_pct worker_wakeups_per_s ref_cpu_pct ref_wakeups_per_s"
measure() {
	local w0 r0 w1 r1
	w0=$(sample "$worker")
	r0=$(sample "$walsender")
	if [ "${CP_PERF:-0}" = 1 ]; then
		perf record -q -e sched:sched_switch -g -p "$worker" -o "$dir/perf-$1.data" \
			-- sleep "$seconds" >/dev/null 2>&1
	else
		sleep "$seconds"
	fi
	w1=$(sample "$worker")
	r1=$(sample "$walsender")
	awk -v w0="$w0" -v w1="$w1" -v r0="$r0" -v r1="$r1" -v s="$seconds" -v hz="$(getconf CLK_TCK)" 'BEGIN {
		split(w0, a); split(w1, b); split(r0, c); split(r1, d)
		printf "%.3f %.2f %.3f %.2f\n", (b[1] - a[1]) / hz / s * 100, (b[2] - a[2]) / s,
			(d[1] - c[1]) / hz / s * 100, (d[2] - c[2]) / s
	}'
}

# settle: the sync's own start-up writes, the slot's first rounds
sleep 5

cp_log "beside a busy database: pgbench -R $rate in database busy for $seconds s"
cp_bench_background "$dir/pgbench.pid" "$dir/pgbench.log" \
	"$(cp_pg_bindir)/pgbench" -n -R "$rate" -T $((seconds + 4)) -c 2 -j 2 \
	-f "$dir/one.sql" -h "$dir" -p "$port" -U postgres busy
sleep 2
read -r busy_w busy_wu busy_r busy_ru < <(measure busy)
while [ -s "$dir/pgbench.pid" ] && kill -0 "$(cat "$dir/pgbench.pid")" 2>/dev/null; do sleep 0.2; done
grep -E '^(tps|number of transactions actually processed)' "$dir/pgbench.log" || true
[ "$(cp_psql -At -c "SELECT pid FROM calabi_push.sync_status WHERE name = 'idle'")" = "$worker" ] ||
	{ echo "the worker restarted meanwhile" >&2; exit 1; }

cp_log "the whole cluster idle for $seconds s"
sleep 2
read -r idle_w idle_wu idle_r idle_ru < <(measure idle)

awk -v s="$seconds" -v rate="$rate" -v bw="$busy_w" -v bwu="$busy_wu" -v br="$busy_r" -v bru="$busy_ru" \
	-v iw="$idle_w" -v iwu="$idle_wu" -v ir="$idle_r" -v iru="$idle_ru" '
function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
BEGIN {
	printf "\nIdle CDC sync, %d s each (worker vs the walsender of pg_recvlogical + test_decoding on a slot of the same database)\n", s
	printf "  %-44s %8s %12s   %8s %12s   %s\n", "", "CPU %", "wake-ups/s", "ref CPU %", "ref wake/s", "ratio CPU, wake-ups"
	printf "  %-44s %8.3f %12.2f   %8.3f %12.2f   %s, %s\n", "beside a busy database (" rate " tx/s)", bw, bwu, br, bru, ratio(bw, br), ratio(bwu, bru)
	printf "  %-44s %8.3f %12.2f   %8.3f %12.2f   %s, %s\n", "whole cluster idle", iw, iwu, ir, iru, ratio(iw, ir), ratio(iwu, iru)
	printf "  target: worker under 0.5 %% of a core and at most 2 wake-ups/s\n"
}'
