#!/usr/bin/env bash
# Full refresh benchmark: rows/s of a sync reading the 1,000,000-row mixed
# table (test/bench/mixed_table.sql) and pushing it over HTTPS, gzip, to the
# reference receiver acknowledging without storing or parsing
# (--no-store --validate none: it costs next to nothing), against
# COPY (SELECT row_to_json(t) FROM t) TO '/dev/null' in the same run and
# cluster.  The sync's time is run_completed_at - run_started_at from its
# catalog row (start of the run to the last acknowledgement).  The sync
# runs three ways, interleaved with the COPY in each round: gzip by the
# default library (ISA-L when built with it), gzip by zlib
# (calabi_push.gzip_library, the fallback) and uncompressed; each prints
# its bytes on the wire for one run.  Prints figures; asserts nothing.
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
SELECT calabi_push.create_destination('bench-plain', :'url', token => 'bench',
       options => jsonb_build_object('ca_file', :'ca', 'compression', 'none'));
SELECT calabi_push.create_sync(name, dest, ARRAY['t']::regclass[],
       options => '{"batch_rows": 10000, "chunk_rows": 10000}')
  FROM (VALUES ('bench', 'bench'), ('bench-plain', 'bench-plain')) v(name, dest);
SQL
libs=$(cp_bench_gzip_libraries)
default_lib=${libs%% *}

# one run of sync $1 (under gzip library $2): "ms bytes"
sync_run() {
	local before
	cp_bench_gzip_library "$2"
	before=$(cp_psql -At -c "SELECT bytes_sent FROM calabi_push.sync_status WHERE name = '$1'")
	cp_psql -q -c "SELECT calabi_push.start_sync('$1')" >/dev/null
	# waited for by one session: polling from the shell would take CPU
	cp_psql -v name="$1" >/dev/null <<'SQL'
SET bench.name = :'name';
DO $$
BEGIN
  WHILE NOT EXISTS (SELECT FROM calabi_push.sync_status
                     WHERE name = current_setting('bench.name')
                       AND state = 'idle' AND completed_at IS NOT NULL) LOOP
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
SQL
	cp_psql -At -F ' ' -c "SELECT round(extract(epoch FROM s.run_completed_at - s.run_started_at) * 1000),
	                              st.bytes_sent - $before
	                         FROM calabi_push.sync s JOIN calabi_push.sync_status st USING (name)
	                        WHERE name = '$1'"
}
copy_ms() {
	cp_psql -c '\timing on' -c "COPY (SELECT row_to_json(t) FROM t) TO '/dev/null'" |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
}
min() { tr ' ' '\n' | grep . | sort -n | head -1; }

declare -A all_ms bytes
modes="$libs none"
all_copy=""
for i in $(seq 0 "$runs"); do
	for m in $modes; do
		if [ "$m" = none ]; then r=$(sync_run bench-plain "$default_lib"); else r=$(sync_run bench "$m"); fi
		[ "$i" -eq 0 ] && continue   # warm-up
		all_ms[$m]+="${r%% *} "
		bytes[$m]=${r##* }
	done
	c=$(copy_ms)
	[ "$i" -eq 0 ] && continue
	all_copy+="$c "
done
cp_bench_gzip_library "$default_lib"
best_copy=$(echo "$all_copy" | min)

printf "\nfull refresh benchmark: %d rows of 12 mixed-type columns, best of %d runs\n" "$rows" "$runs"
printf "  %-50s %8.0f ms %10.0f rows/s  (runs: %s)\n" "COPY (SELECT row_to_json(t) FROM t) TO /dev/null" \
	"$best_copy" "$(awk -v r="$rows" -v c="$best_copy" 'BEGIN{print r / (c / 1000)}')" "$all_copy"
for m in $modes; do
	s=$(echo "${all_ms[$m]}" | min)
	case $m in
		none) what="sync, uncompressed" ;;
		*) what="sync, gzip by $m, level 1" ;;
	esac
	awk -v w="$what" -v r="$rows" -v s="$s" -v c="$best_copy" -v b="${bytes[$m]}" -v all="${all_ms[$m]}" 'BEGIN {
		printf "  %-50s %8.0f ms %10.0f rows/s  ratio %.2f  %6.1f MB on the wire  (runs: %s)\n",
			w, s, r / (s / 1000), c / s, b / 1e6, all
	}'
done
echo "  (a sync: start of run to last acknowledgement: read, encode, compress, HTTPS POST, checkpoint;"
echo "   ratio: its rows/s / row_to_json's; target >= 1.8 with gzip)"
