#!/usr/bin/env bash
# Host cost: what a CDC sync costs the database it lives in.  Prints
# figures; asserts nothing.
#
# pgbench (builtin tpcb-like, -c 4 -j 2 -T SECONDS -n, the same each time)
# runs on its own tables at scale SCALE for the same duration three ways, in
# the same run and cluster:
#   - none: nothing consumes the WAL;
#   - sync: a CDC sync of the four pgbench tables, over HTTPS with gzip (the
#     destination's default compression, by the build's default library)
#     into the reference receiver acknowledging without storing or parsing
#     (--no-store --validate none), batches as a DBA gets them (defaults);
#   - walsender: pg_recvlogical streaming pgoutput (proto_version 1) to
#     /dev/null from a slot of a publication of the same four tables: the
#     walsender a pull-based peer would use.
# The modes run interleaved in ROUNDS rounds (none, sync, walsender, none,
# ...) so that drift hits all three; each mode's median TPS counts, and the
# ratios sync/none, walsender/none and sync/walsender are printed (target:
# sync/walsender >= 1.0).
#
# Every round starts alike: its consumer (none for "none") is started and
# has caught up with the WAL before it, then pgbench_branches and
# pgbench_tellers are vacuumed (what pgbench does itself without -n; it
# would also truncate pgbench_history, which the consumers would have to
# read), a CHECKPOINT is taken and the machine left alone for a few seconds.
# A consumer runs only during its own rounds: the sync is stopped
# (stop_sync) and pg_recvlogical ended after each, once it has acknowledged
# everything pgbench wrote (how far behind it was when pgbench ended, and how
# long it took to catch up, are printed).  Between its rounds each slot is
# left unconsumed: it retains the WAL written meanwhile (disk space only: a
# logical slot holds back the vacuuming of catalogs, which pgbench does not
# change, not of its tables), and the consumer reads that WAL when it starts
# again, before its next round begins: outside what is measured.  The
# sync's slot cannot be advanced instead (its worker refuses a slot ahead
# of what the endpoint acknowledged), so both consumers catch up the same
# way.
#
# pgbench_history has no primary key: a cdc sync's default mode,
# append_dedup, refuses it (REPLICA IDENTITY FULL does not help, the
# destination still needs a key), so the sync is made with
# destination_sync_mode => 'append' (every change a row; the mode changes
# only the STREAM metadata sent, not the work per change).  pgbench only
# inserts into pgbench_history, so the publication can include it without a
# replica identity.
#
# Both consumers' far ends (the receiver, pg_recvlogical) run on this
# machine and take CPU from pgbench; on a host whose consumer lives
# elsewhere both costs are lower.  Each consumer round also prints the CPU
# seconds its processes used while pgbench ran (the sync's worker with its
# threads plus the receiver; the walsender plus pg_recvlogical), a figure
# that other load on the machine does not move much, unlike TPS, and the
# requests the sync sent.  CP_PERF=1: a profile of the sync's worker during
# the first half of its first round, into $dir/perf-sync.data.
#
#   test/bench/hostcost.sh [SECONDS] [ROUNDS] [SCALE]
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

seconds=${1:-60}
rounds=${2:-3}
scale=${3:-10}
dir=/tmp/calabi_push-bench-hostcost
port=5497
pause=5
bindir=$(cp_pg_bindir)
slot=hostcost_pgoutput

cp_install_dependencies
cp_build_and_install
cleanup() {
	cp_bench_stop "$dir/recvlogical.pid"
	cp_bench_receiver_stop "$dir"
	cp_cluster_stop 2>/dev/null || true
}
trap cleanup EXIT
cp_cluster_start "$dir" "$port" "shared_buffers = '512MB'" "max_wal_size = '8GB'" \
	"checkpoint_timeout = '1h'" "max_replication_slots = 10" "max_wal_senders = 10" \
	"max_worker_processes = 16"
cp_allow_output_plugins calabi_push

cp_log "pgbench -i -s $scale"
cp_run_as_server_user "$bindir/pgbench" -i -s "$scale" -q -h "$dir" -p "$port" -U postgres postgres \
	>"$dir/pgbench-init.log" 2>&1 || { cat "$dir/pgbench-init.log" >&2; exit 1; }

cp_log "starting the receiver (--no-store)"
cp_bench_receiver "$dir" 0 --token bench --validate none

cp_psql -v url="https://localhost:$(cat "$dir/receiver/port")/ingest" \
	-v ca="$dir/receiver/certs/ca.crt" >/dev/null <<'SQL'
CREATE EXTENSION calabi_push;
SELECT calabi_push.create_destination('bench', :'url', token => 'bench',
       options => jsonb_build_object('ca_file', :'ca'));
SELECT calabi_push.create_sync('hostcost', 'bench',
       ARRAY['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history']::regclass[],
       method => 'cdc', destination_sync_mode => 'append');
CREATE PUBLICATION hostcost
   FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history;
SQL
cp_run_as_server_user "$bindir/pg_recvlogical" -h "$dir" -p "$port" -U postgres -d postgres \
	--slot "$slot" --create-slot -P pgoutput
lib=$(cp_bench_gzip_libraries)
lib=${lib%% *}

now_lsn() { cp_psql -At -c 'SELECT pg_current_wal_lsn()'; }

# Whether consumer $1 (sync, walsender) has acknowledged the WAL up to $2.
acked() {
	case $1 in
	sync) cp_psql -At -c "SELECT coalesce(state = 'running' AND lsn_acknowledged >= '$2', false)
	                        FROM calabi_push.sync_status WHERE name = 'hostcost'" ;;
	walsender) cp_psql -At -c "SELECT coalesce(confirmed_flush_lsn >= '$2', false)
	                             FROM pg_replication_slots WHERE slot_name = '$slot'" ;;
	esac
}

# Waits until consumer $1 has acknowledged the WAL up to $2 (pg_recvlogical
# reports what it has received every 10 s, its default status interval);
# prints the seconds waited.
wait_acked() {
	local t0 t1
	t0=$(date +%s.%N)
	for _ in $(seq 3000); do
		if [ "$(acked "$1" "$2")" = t ]; then
			t1=$(date +%s.%N)
			awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }'
			return 0
		fi
		sleep 0.2
	done
	echo "the $1 did not acknowledge $2 within 10 minutes" >&2
	cp_psql -c "SELECT name, state, lsn_acknowledged, last_error FROM calabi_push.sync_status" \
		-c "SELECT slot_name, active, confirmed_flush_lsn FROM pg_replication_slots" >&2
	tail -5 "$dir/recvlogical.log" >&2 2>/dev/null || true
	return 1
}

# Waits until nothing consumes a slot and the sync has no worker.
wait_no_consumer() {
	for _ in $(seq 300); do
		[ "$(cp_psql -At -c "SELECT NOT EXISTS (SELECT FROM pg_replication_slots WHERE active)
		                        AND NOT EXISTS (SELECT FROM calabi_push.sync_status WHERE pid IS NOT NULL)")" = t ] &&
			return 0
		sleep 0.1
	done
	echo "a consumer is still running" >&2
	return 1
}

start_consumer() {
	case $1 in
	sync) cp_psql -c "SELECT calabi_push.start_sync('hostcost')" >/dev/null ;;
	walsender)
		cp_bench_background "$dir/recvlogical.pid" "$dir/recvlogical.log" \
			"$bindir/pg_recvlogical" -h "$dir" -p "$port" -U postgres -d postgres \
			--slot "$slot" --start -o proto_version=1 -o publication_names=hostcost -f /dev/null
		;;
	esac
}

stop_consumer() {
	local pid
	case $1 in
	sync) cp_psql -c "SELECT calabi_push.stop_sync('hostcost')" >/dev/null ;;
	walsender)
		# SIGINT: pg_recvlogical's own way out; cp_bench_stop if it lingers
		pid=$(cat "$dir/recvlogical.pid")
		kill -INT "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		cp_bench_stop "$dir/recvlogical.pid"
		;;
	esac
	wait_no_consumer
}

# "decoded-and-sent-lag acknowledged-lag" in bytes of consumer $1, now
lag() {
	case $1 in
	sync) cp_psql -At -F ' ' -c "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), lsn_sent)::int8, -1), lag_bytes
	                               FROM calabi_push.sync_status WHERE name = 'hostcost'" ;;
	walsender) cp_psql -At -F ' ' -c "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), r.sent_lsn)::int8, -1),
	                                         pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::int8
	                                    FROM pg_replication_slots s
	                                    LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
	                                   WHERE s.slot_name = '$slot'" ;;
	esac
}

cp_log "the sync's first start: its slot and the backfill of the pgbench tables"
start_consumer sync
for i in $(seq 6000); do
	[ "$(cp_psql -At -c "SELECT state = 'running' AND lsn_acknowledged IS NOT NULL
	                       AND (SELECT bool_and(phase = 'done') FROM calabi_push.stream_status WHERE sync = 'hostcost')
	                      FROM calabi_push.sync_status WHERE name = 'hostcost'")" = t ] && break
	[ "$i" = 6000 ] && { echo "the sync's backfill did not finish" >&2;
		cp_psql -c "SELECT state, last_error FROM calabi_push.sync_status" >&2; exit 1; }
	sleep 0.1
done
wait_acked sync "$(now_lsn)" >/dev/null
stop_consumer sync

# The processes of consumer $1, both ends on this machine: the sync's
# worker (its threads included) and the receiver; the walsender and
# pg_recvlogical.
consumer_pids() {
	case $1 in
	sync) echo "$(cp_psql -At -c "SELECT pid FROM calabi_push.sync_status WHERE name = 'hostcost'")" \
		"$(cat "$dir/receiver/pid")" ;;
	walsender) echo "$(cp_psql -At -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot'")" \
		"$(cat "$dir/recvlogical.pid")" ;;
	esac
}
# CPU seconds (user + system) used so far by processes $@: what a consumer
# takes from the host, whatever else the machine does meanwhile.
cpu_seconds() {
	local ticks=0 p f
	for p in "$@"; do
		[ -r "/proc/$p/stat" ] || continue
		# fields 14 and 15 of stat, counted after the command's parentheses
		f=$(sed 's/^.*) //' "/proc/$p/stat")
		ticks=$((ticks + $(echo "$f" | awk '{ print $12 + $13 }')))
	done
	awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f\n", t / hz }'
}

# Requests the sync has sent so far.
batches_sent() {
	cp_psql -At -c "SELECT coalesce(batches_sent, 0) FROM calabi_push.sync_status WHERE name = 'hostcost'"
}

declare -A all cpu
run_round() {
	local mode=$1 round=$2 log tps end_lag waited pids cpu0 used near0 near batches0 batches
	log="$dir/pgbench-$mode-$round.log"
	if [ "$mode" != none ]; then
		start_consumer "$mode"
		wait_acked "$mode" "$(now_lsn)" >/dev/null
	fi
	cp_psql -c 'VACUUM pgbench_branches, pgbench_tellers' -c 'CHECKPOINT' >/dev/null
	sleep "$pause"
	pids=""
	[ "$mode" != none ] && pids=$(consumer_pids "$mode")
	cpu0=$(cpu_seconds $pids)
	near0=$(cpu_seconds ${pids%% *})
	batches0=$(batches_sent)
	if [ "${CP_PERF:-0}" = 1 ] && [ "$mode" = sync ] && [ "$round" = 1 ]; then
		perf record -q -g -p "${pids%% *}" -o "$dir/perf-sync.data" -- sleep "$((seconds / 2))" &
	fi
	cp_run_as_server_user "$bindir/pgbench" -c 4 -j 2 -T "$seconds" -n \
		-h "$dir" -p "$port" -U postgres postgres >"$log" 2>&1 || { cat "$log" >&2; return 1; }
	used=$(awk -v a="$cpu0" -v b="$(cpu_seconds $pids)" 'BEGIN { printf "%.2f", b - a }')
	near=$(awk -v a="$near0" -v b="$(cpu_seconds ${pids%% *})" 'BEGIN { printf "%.2f", b - a }')
	batches=$(( $(batches_sent) - batches0 ))
	tps=$(awk '$1 == "tps" && $2 == "=" { print $3; exit }' "$log")
	[ -n "$tps" ] || { echo "no tps in $log" >&2; cat "$log" >&2; return 1; }
	all[$mode]+="$tps "
	if [ "$mode" = none ]; then
		printf '  round %d  %-9s %10.1f tps\n' "$round" "$mode" "$tps"
		return 0
	fi
	end_lag=$(lag "$mode")
	waited=$(wait_acked "$mode" "$(now_lsn)")
	cpu[$mode]+="$used "
	[ "$mode" = sync ] && printf '  round %d  sync: %d requests, %.1f a second\n' "$round" "$batches" \
		"$(awk -v b="$batches" -v s="$seconds" 'BEGIN { print b / s }')"
	printf '  round %d  %-9s %10.1f tps   consumer CPU %6.2f s (%s %.2f s, its far end %.2f s); behind when pgbench ended: %s bytes sent, %s bytes acknowledged; caught up %s s later\n' \
		"$round" "$mode" "$tps" "$used" "$mode" "$near" "$(awk -v a="$used" -v b="$near" 'BEGIN { print a - b }')" \
		"${end_lag% *}" "${end_lag#* }" "$waited"
	stop_consumer "$mode"
}

cp_log "$rounds rounds of pgbench -c 4 -j 2 -T $seconds -n (scale $scale): none, sync, walsender"
echo "Host cost, rounds as they ran (pgbench tpcb-like -c 4 -j 2 -T $seconds -n, scale $scale):"
for r in $(seq "$rounds"); do
	for mode in none sync walsender; do
		run_round "$mode" "$r"
	done
done

sent=$(cp_psql -At -F ' ' -c "SELECT records_sent, bytes_sent FROM calabi_push.sync_status WHERE name = 'hostcost'")
awk -v none="${all[none]}" -v sync="${all[sync]}" -v wals="${all[walsender]}" -v s="$seconds" \
	-v cs="${cpu[sync]}" -v cw="${cpu[walsender]}" \
	-v n="$rounds" -v scale="$scale" -v lib="$lib" -v sent="$sent" '
function median(list,    v, k, i, j, t) {
	k = split(list, v, " ")
	for (i = 2; i <= k; i++)
		for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
	return k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
}
function row(name, list, m, ratio,    v, k, i, r) {
	k = split(list, v, " ")
	r = ""
	for (i = 1; i <= k; i++)
		r = r sprintf("%.1f ", v[i])
	printf "  %-10s %12.1f   %-34s %s\n", name, m, r, ratio
}
BEGIN {
	mn = median(none); ms = median(sync); mw = median(wals)
	split(sent, b, " ")
	printf "\nHost cost: pgbench tpcb-like, 4 clients, %d s per round, scale %d, %d rounds interleaved (median counts)\n", s, scale, n
	printf "  sync: cdc over HTTPS, gzip by %s (default), %d records and %.1f MB sent in all (catch-ups and backfill included)\n", lib, b[1], b[2] / 1e6
	printf "  walsender: pg_recvlogical, pgoutput proto 1, to /dev/null\n"
	printf "  %-10s %12s   %-34s %s\n", "mode", "tps(median)", "rounds", "ratio to none"
	row("none", none, mn, "1")
	row("sync", sync, ms, sprintf("%.3f", ms / mn))
	row("walsender", wals, mw, sprintf("%.3f", mw / mn))
	printf "  sync/none = %.3f, walsender/none = %.3f\n", ms / mn, mw / mn
	printf "  sync/walsender = %.3f (target >= 1.0)\n", ms / mw
	printf "  consumer CPU per round (median, both ends): sync %.2f s, walsender %.2f s; per pgbench transaction: sync %.1f us, walsender %.1f us\n",
		median(cs), median(cw), median(cs) / (ms * s) * 1e6, median(cw) / (mw * s) * 1e6
	printf "  (lag in the rounds above: pg_recvlogical acknowledges every 10 s, its default status interval; compare the bytes sent)\n"
}'
