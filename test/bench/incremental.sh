#!/usr/bin/env bash
# Incremental benchmark: the methods that read, at each run, only what
# changed since the previous one, on the 1,000,000-row mixed table
# (test/bench/mixed_table.sql), each against a row_to_json COPY in the same
# run and cluster.  Syncs push over HTTPS, gzip, to the reference receiver
# acknowledging without storing or parsing (--no-store --validate none).
# A sync's time is run_completed_at - run_started_at from its catalog row
# (start of the run to the last acknowledgement), awaited by one session
# (polling from the shell would take CPU from what is measured).
#   1. xmin, first read (a new sync each run, read whole) vs
#      COPY (SELECT row_to_json(t) FROM t) TO '/dev/null'.
#   2. xmin, an incremental run after an UPDATE of 0.1 % of the rows, spread
#      over the table (id % 1000 = k, a new k each run), vs the same COPY
#      WHERE xmin::text::bigint >= X, X the updating transaction's
#      txid_current() (the same as its 32-bit xmin on this young cluster);
#      with stream_status's pages_examined, pages_skipped, last_run_rows.
#   3. cursor on created_at (indexed), on t and on a view of it, an
#      incremental run after setting created_at = now() on 0.1 % of the
#      rows, vs the same COPY WHERE created_at > X, X the largest
#      created_at before the update.  Said absent, and skipped, when
#      create_sync refuses method => 'cursor'.
#   4. the incremental runs of parts 2 and 3 again, in scheduled syncs
#      (schedule 1 minute), whose worker stays between runs: a run-once
#      sync launches a worker per run, which pays a page fault the first
#      time it touches each shared buffer page a run examines.  Takes
#      about RUNS + 2 minutes.
# Each part: one warm-up run, then RUNS runs; the best counts, all printed.
# Prints figures; asserts nothing.
#
#   test/bench/incremental.sh [ROWS] [RUNS]
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"

rows=${1:-1000000}
runs=${2:-3}
dir=/tmp/calabi_push-bench-inc

cp_install_dependencies
cp_build_and_install
cleanup() {
	cp_bench_receiver_stop "$dir"
	cp_cluster_stop 2>/dev/null || true
}
trap cleanup EXIT
cp_cluster_start "$dir" 5496 "shared_buffers = '1GB'" "work_mem = '64MB'"

cp_log "building a $rows-row table of mixed types"
cp_psql -c "CREATE EXTENSION calabi_push"
cp_psql -v rows="$rows" -f - <"$(dirname "$0")/mixed_table.sql"

cp_log "starting the receiver (--no-store)"
cp_bench_receiver "$dir" 0 --token bench --validate none

cp_psql -v url="https://localhost:$(cat "$dir/receiver/port")/ingest" \
	-v ca="$dir/receiver/certs/ca.crt" >/dev/null <<'SQL'
SELECT calabi_push.create_destination('bench', :'url', token => 'bench',
       options => jsonb_build_object('ca_file', :'ca'));
SQL

# One run of sync $1 (run once per start_sync: no schedule), waited for in
# one session until it is idle again; prints its ms, or nothing (and why,
# on stderr) when it stopped in error, retried or took over 15 minutes.
run_ms() {
	cp_psql -v name="$1" >/dev/null <<'SQL'
SET bench.name = :'name';
SELECT calabi_push.start_sync(:'name');
DO $$
DECLARE
  st text;
  t0 timestamptz := clock_timestamp();
BEGIN
  LOOP
    SELECT state INTO st FROM calabi_push.sync_status WHERE name = current_setting('bench.name');
    EXIT WHEN st IN ('idle', 'error', 'retrying') OR clock_timestamp() - t0 > interval '15 minutes';
    PERFORM pg_sleep(0.02);
  END LOOP;
END $$;
SQL
	local ms
	ms=$(cp_psql -At -c "SELECT round(extract(epoch FROM y.run_completed_at - y.run_started_at) * 1000)
	                       FROM calabi_push.sync y JOIN calabi_push.sync_status s USING (name)
	                      WHERE y.name = '$1' AND s.state = 'idle'")
	if [ -z "$ms" ]; then
		echo "sync $1: its run did not complete: $(cp_psql -At -c "SELECT state || ': ' || coalesce(last_error, '') FROM calabi_push.sync_status WHERE name = '$1'")" >&2
		cp_psql -c "SELECT calabi_push.stop_sync('$1')" >/dev/null 2>&1 || true
	fi
	echo "$ms"
}
copy_ms() {
	cp_psql -c '\timing on' -c "COPY (SELECT row_to_json(t) FROM t$1) TO '/dev/null'" |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
}
best() { tr ' ' '\n' | { grep . || true; } | sort -n | head -1; }
# a line of the report: label, ms, rows/s
line() { awk -v l="$1" -v ms="$2" -v r="$3" 'BEGIN {
	if (ms == "") printf "  %-66s %10s ms %12s rows/s\n", l, "n/a", "n/a"
	else printf "  %-66s %10.0f ms %12.0f rows/s\n", l, ms, r / (ms / 1000) }'; }
# reference ms / sync ms
ratio() { awk -v c="$1" -v s="$2" 'BEGIN { if (c == "" || s == "" || s == 0) print "n/a"; else printf "%.2f", c / s }'; }

# --- 1. xmin: the first read --------------------------------------------
cp_log "xmin: first read, a new sync each time (1 warm-up + $runs)"
all_first="" all_copy=""
for i in $(seq 0 "$runs"); do
	cp_psql -q <<'SQL' >/dev/null
SELECT calabi_push.drop_sync(name) FROM calabi_push.sync WHERE name = 'xmin';
SELECT calabi_push.create_sync('xmin', 'bench', ARRAY['t']::regclass[], method => 'xmin',
       options => '{"batch_rows": 10000, "chunk_rows": 10000}');
SQL
	s=$(run_ms xmin); c=$(copy_ms "")
	[ "$i" -eq 0 ] && continue   # warm-up
	all_first+="$s " all_copy+="$c "
done
first_ms=$(echo "$all_first" | best)
copy_all_ms=$(echo "$all_copy" | best)
first_read=$(cp_psql -At -c "SELECT read, last_run_rows FROM calabi_push.stream_status WHERE sync = 'xmin'")

# --- 2. xmin: an incremental run after updating 0.1 % of the rows -------
cp_log "xmin: incremental runs after updating 0.1 % of the rows (1 warm-up + $runs)"
all_inc="" all_incc="" pages="" changed=0
for i in $(seq 0 "$runs"); do
	k=$((7 + i))
	# one statement, one transaction: its txid and the rows it updated
	IFS='|' read -r x n < <(cp_psql -At -c "WITH u AS (UPDATE t SET qty = qty + 1 WHERE id % 1000 = $k RETURNING 1)
	                                      SELECT txid_current(), count(*) FROM u")
	s=$(run_ms xmin)
	# by name, through to_jsonb: pages_found_by and wal_bytes_read only
	# where this version has them
	st=$(cp_psql -At -F ' ' -c "SELECT j->>'read', j->>'pages_examined', j->>'pages_skipped', j->>'last_run_rows',
	                                   coalesce(j->>'pages_found_by', '-'), coalesce(j->>'wal_bytes_read', '-')
	                              FROM calabi_push.stream_status s, to_jsonb(s) j WHERE s.sync = 'xmin'")
	c=$(copy_ms " WHERE xmin::text::bigint >= $x")
	[ "$i" -eq 0 ] && continue   # warm-up
	changed=$n
	all_inc+="$s " all_incc+="$c "
	read -r rd pe ps lr fb wb <<<"$st"
	pages+="    id % 1000 = $k: $n rows updated, sync ${s:-n/a} ms, COPY $c ms; read $rd, pages_examined $pe, pages_skipped $ps, last_run_rows $lr, pages_found_by $fb, wal_bytes_read $wb"$'\n'
done
inc_ms=$(echo "$all_inc" | best)
incc_ms=$(echo "$all_incc" | best)
# the same with nothing written since the previous run: what a run costs
# whatever it sends (worker launch, connection, checkpoint)
empty_ms=$(run_ms xmin)
empty_st=$(cp_psql -At -F ' ' -c "SELECT pages_examined, pages_skipped, last_run_rows
                                    FROM calabi_push.stream_status WHERE sync = 'xmin'")

# --- 3. cursor: on t and on a view of it --------------------------------
cp_log "cursor: on t(created_at), indexed, and on a view of t"
cp_psql -c "CREATE INDEX t_created_at ON t (created_at)" -c "CREATE VIEW tv AS SELECT * FROM t" \
	-c "ANALYZE t" >/dev/null
cursor_t="" cursor_v=""
if err=$(cp_psql -c "SELECT calabi_push.create_sync('cursor-t', 'bench', ARRAY['t']::regclass[],
                            method => 'cursor', options => '{\"cursor\": \"created_at\"}')" 2>&1 >/dev/null); then
	cursor_t=1
else
	cursor_t_err="create_sync(..., method => 'cursor') refused it: $(echo "$err" | grep -m1 ERROR || echo "$err" | head -1)"
fi
if err=$(cp_psql -c "SELECT calabi_push.create_sync('cursor-tv', 'bench', ARRAY['tv']::regclass[],
                            method => 'cursor', options => '{\"cursor\": \"created_at\"}')" 2>&1 >/dev/null); then
	cursor_v=1
else
	cursor_v_err="create_sync(..., method => 'cursor') refused it: $(echo "$err" | grep -m1 ERROR || echo "$err" | head -1)"
fi
# what stream_status says of sync $1's stream after a run (by name, through
# to_jsonb: whichever of these columns this version has)
stream_info() {
	cp_psql -At -c "SELECT concat_ws(', ', 'read ' || (j->>'read'),
	                                 'pages_examined ' || (j->>'pages_examined'),
	                                 'pages_skipped ' || (j->>'pages_skipped'),
	                                 'pages_found_by ' || (j->>'pages_found_by'),
	                                 'wal_bytes_read ' || (j->>'wal_bytes_read'),
	                                 'last_run_rows ' || coalesce(j->>'last_run_rows', j->>'rows_sent'),
	                                 'cursor_value ' || (j->>'cursor_value'))
	                  FROM calabi_push.stream_status s, to_jsonb(s) j WHERE s.sync = '$1'"
}
# the first runs read everything: not measured.  One that does not
# complete (a version that accepts the method but cannot run it) counts as
# the method absent.
first_ct="" first_cv=""
if [ -n "$cursor_t" ]; then
	first_ct=$(run_ms cursor-t)
	[ -z "$first_ct" ] && cursor_t="" cursor_t_err="create_sync accepted it, but its first run did not complete: $(cp_psql -At -c "SELECT state || ': ' || coalesce(last_error, '') FROM calabi_push.sync_status WHERE name = 'cursor-t'")"
fi
if [ -n "$cursor_v" ]; then
	first_cv=$(run_ms cursor-tv)
	[ -z "$first_cv" ] && cursor_v="" cursor_v_err="create_sync accepted it, but its first run did not complete: $(cp_psql -At -c "SELECT state || ': ' || coalesce(last_error, '') FROM calabi_push.sync_status WHERE name = 'cursor-tv'")"
fi
[ -z "$cursor_t$cursor_v" ] && cp_log "the cursor method is absent ($cursor_t_err): part 3 is skipped"
all_ct="" all_cv="" all_cc="" cruns=""
if [ -n "$cursor_t$cursor_v" ]; then
	for i in $(seq 0 "$runs"); do
		k=$((507 + i))
		x=$(cp_psql -At -c "SELECT max(created_at)::text FROM t")
		n=$(cp_psql -At -c "WITH u AS (UPDATE t SET created_at = now() WHERE id % 1000 = $k RETURNING 1)
		                    SELECT count(*) FROM u")
		st="" sv="" rt="" rv=""
		if [ -n "$cursor_t" ]; then
			st=$(run_ms cursor-t)
			rt=$(stream_info cursor-t)
		fi
		if [ -n "$cursor_v" ]; then
			sv=$(run_ms cursor-tv)
			rv=$(stream_info cursor-tv)
		fi
		c=$(copy_ms " WHERE created_at > '$x'::timestamptz")
		[ "$i" -eq 0 ] && continue   # warm-up
		cchanged=$n
		all_ct+="$st " all_cv+="$sv " all_cc+="$c "
		cruns+="    id % 1000 = $k: $n rows updated, COPY $c ms"$'\n'
		[ -n "$cursor_t" ] && cruns+="      table: sync ${st:-n/a} ms; $rt"$'\n'
		[ -n "$cursor_v" ] && cruns+="      view:  sync ${sv:-n/a} ms; $rv"$'\n'
	done
fi
ct_ms=$(echo "$all_ct" | best)
cv_ms=$(echo "$all_cv" | best)
cc_ms=$(echo "$all_cc" | best)


# --- 4. the same incremental runs, in a scheduled sync's worker ----------
# A run-once sync (parts 2 and 3) launches a worker per run, whose first
# touch of each shared buffer page the run examines costs a page fault; a
# scheduled sync's worker stays between runs, as a DBA's would.  Three
# syncs on a 1-minute schedule, started 20 s apart so that their runs do
# not overlap; each round updates 0.1 % of the rows (qty and created_at)
# once, then waits for the next run of each.  The references are parts 2
# and 3's COPYs.
cp_log "scheduled syncs (1 minute, the worker stays): 1 warm-up + $runs rounds"
sched_syncs="xmin-s"
[ -n "$cursor_t" ] && sched_syncs+=" cursor-t-s"
[ -n "$cursor_v" ] && sched_syncs+=" cursor-tv-s"
cp_psql -q <<'SQL' >/dev/null
SELECT calabi_push.create_sync('xmin-s', 'bench', ARRAY['t']::regclass[], method => 'xmin',
       options => '{"batch_rows": 10000, "chunk_rows": 10000, "schedule": "1 minute"}');
SQL
[ -n "$cursor_t" ] && cp_psql -q -c "SELECT calabi_push.create_sync('cursor-t-s', 'bench', ARRAY['t']::regclass[],
       method => 'cursor', options => '{\"cursor\": \"created_at\", \"schedule\": \"1 minute\"}')" >/dev/null
[ -n "$cursor_v" ] && cp_psql -q -c "SELECT calabi_push.create_sync('cursor-tv-s', 'bench', ARRAY['tv']::regclass[],
       method => 'cursor', options => '{\"cursor\": \"created_at\", \"schedule\": \"1 minute\"}')" >/dev/null
completed() { cp_psql -At -c "SELECT coalesce(run_completed_at::text, '') FROM calabi_push.sync WHERE name = '$1'"; }
for name in $sched_syncs; do
	cp_psql -q -c "SELECT calabi_push.start_sync('$name')" >/dev/null
	until [ -n "$(completed "$name")" ]; do sleep 1; done
	sleep 20
done
declare -A sched_all sched_by
for i in $(seq 0 "$runs"); do
	k=$((707 + i))
	declare -A before
	for name in $sched_syncs; do before[$name]=$(completed "$name"); done
	cp_psql -q -c "UPDATE t SET qty = qty + 1, created_at = now() WHERE id % 1000 = $k" >/dev/null
	for name in $sched_syncs; do
		until [ "$(completed "$name")" != "${before[$name]}" ]; do sleep 1; done
		ms=$(cp_psql -At -c "SELECT round(extract(epoch FROM run_completed_at - run_started_at) * 1000)
		                      FROM calabi_push.sync WHERE name = '$name'")
		[ "$i" -eq 0 ] && continue
		sched_all[$name]+="$ms "
		sched_by[$name]+="$(cp_psql -At -c "SELECT coalesce(to_jsonb(s)->>'pages_found_by', '-')
		                                      FROM calabi_push.stream_status s WHERE s.sync = '$name'") "
	done
done
for name in $sched_syncs; do cp_psql -q -c "SELECT calabi_push.stop_sync('$name')" >/dev/null; done

# --- report --------------------------------------------------------------
printf '\nincremental benchmark: %d rows of 12 mixed-type columns, best of %d runs (after a warm-up)\n' "$rows" "$runs"

printf '\n1. xmin, first read (%s)\n' "read ${first_read%%|*}, ${first_read#*|} rows"
line "sync: read whole, encode, gzip, HTTPS POST, checkpoint" "$first_ms" "$rows"
line "COPY (SELECT row_to_json(t) FROM t) TO /dev/null" "$copy_all_ms" "$rows"
printf '  ratio sync / row_to_json (rows/s): %s (target >= 1.0)\n' "$(ratio "$copy_all_ms" "$first_ms")"
printf '  (all runs, ms: sync [%s] COPY [%s])\n' "${all_first% }" "${all_copy% }"

printf '\n2. xmin, incremental run after updating %d rows (0.1 %%, id %% 1000 = k)\n' "$changed"
line "sync: start of run to last acknowledgement" "$inc_ms" "$changed"
line "COPY (... FROM t WHERE xmin::text::bigint >= X) TO /dev/null" "$incc_ms" "$changed"
printf '  ratio COPY time / sync time: %s (target >= 3.0: the sync at least 3x faster)\n' "$(ratio "$incc_ms" "$inc_ms")"
printf '  each run (stream_status after it):\n%s' "$pages"
printf '  (a run with nothing written since the previous one: %s ms; pages_examined, pages_skipped, last_run_rows: %s)\n' "${empty_ms:-n/a}" "$empty_st"

printf '\n3. cursor on created_at (indexed), incremental run after setting created_at = now() on 0.1 %% of the rows\n'
if [ -z "$cursor_t$cursor_v" ]; then
	printf '  CURSOR METHOD ABSENT in this build, nothing measured:\n    %s\n' "$cursor_t_err"
else
	[ -z "$cursor_t" ] && printf '  the table: not measured: %s\n' "$cursor_t_err"
	[ -z "$cursor_v" ] && printf '  the view: not measured: %s\n' "$cursor_v_err"
	[ -n "$cursor_t" ] && line "sync on t: start of run to last acknowledgement" "$ct_ms" "$cchanged"
	[ -n "$cursor_v" ] && line "sync on the view tv (SELECT * FROM t): the same" "$cv_ms" "$cchanged"
	line "COPY (... FROM t WHERE created_at > X) TO /dev/null" "$cc_ms" "$cchanged"
	[ -n "$cursor_t" ] && printf '  ratio COPY time / sync time, table: %s (target >= 1.0)\n' "$(ratio "$cc_ms" "$ct_ms")"
	[ -n "$cursor_v" ] && printf '  ratio COPY time / sync time, view:  %s (target >= 1.0)\n' "$(ratio "$cc_ms" "$cv_ms")"
	printf '  (first runs, reading everything: table %s ms, view %s ms)\n' "${first_ct:-n/a}" "${first_cv:-n/a}"
	printf '  each run:\n%s' "$cruns"
fi

printf '\n4. the same incremental runs in a scheduled sync'"'"'s worker (schedule 1 minute: the worker stays between runs)\n'
xs_ms=$(echo "${sched_all[xmin-s]}" | best)
line "xmin: a scheduled run after updating 0.1 % of the rows" "$xs_ms" 1000
printf '  ratio COPY (part 2) time / sync time: %s (target >= 3.0)\n' "$(ratio "$incc_ms" "$xs_ms")"
if [ -n "$cursor_t" ]; then
	cts_ms=$(echo "${sched_all[cursor-t-s]}" | best)
	line "cursor on t: the same" "$cts_ms" 1000
	printf '  ratio COPY (part 3) time / sync time, table: %s (target >= 1.0)\n' "$(ratio "$cc_ms" "$cts_ms")"
fi
if [ -n "$cursor_v" ]; then
	cvs_ms=$(echo "${sched_all[cursor-tv-s]}" | best)
	line "cursor on the view tv: the same" "$cvs_ms" 1000
	printf '  ratio COPY (part 3) time / sync time, view:  %s (target >= 1.0)\n' "$(ratio "$cc_ms" "$cvs_ms")"
fi
printf '  (all runs, ms:'
for name in $sched_syncs; do printf ' %s [%s]' "$name" "${sched_all[$name]% }"; done
printf ')\n  (pages_found_by of each run:'
for name in $sched_syncs; do printf ' %s [%s]' "$name" "${sched_by[$name]% }"; done
printf ')\n'
