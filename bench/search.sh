#!/usr/bin/env bash
# Costs of full-text search (release 0.2). See bench/README.md.
#
#   bench/search.sh           full run: the 1M-message dataset of bench/run.sh (10k threads);
#                             search as a user in 100 threads and as the service over all
#                             threads; append throughput with and without the search index
#                             -> the search section of bench/RESULTS.md and bench/search.json
#   bench/search.sh --smoke   10k messages, every scenario once, 1 s runs (< 1 min); results
#                             in a temp dir (removed when it passes); non-zero exit on failure
#
# Options: --duration SECONDS (each timed run; default 10, smoke 1)  --out DIR  --keep
#
# Starts its own PostgreSQL 15 cluster (as the postgres user, unix socket only,
# in a temp dir under /tmp; server binaries from $PROGRESSDB_PG_BIN, default
# /usr/lib/postgresql/15/bin) with the progressdb extension installed there,
# and removes it and every process it started on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PGBIN=${PROGRESSDB_PG_BIN:-/usr/lib/postgresql/15/bin}
COMMAND=$(printf '%q ' "bench/search.sh" "$@")
COMMAND=${COMMAND% }

SMOKE=0 DURATION="" OUT="" KEEP=0
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --duration) DURATION=$2; shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$SMOKE" = 1 ]; then
  THREADS=200 MESSAGES=10000 DURATION=${DURATION:-1} SERVICE_COMMON_TX=1 SHARED=128MB
else
  THREADS=10000 MESSAGES=1000000 DURATION=${DURATION:-10} SERVICE_COMMON_TX=3 SHARED=256MB
fi
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "--duration must be a positive integer" >&2; exit 2; }
SEARCHER_THREADS=100
SEED=0.42 SKEW=2.5     # as bench/run.sh: the same data
NPROC=$(nproc)

NAME=pdbsearchbench PORT=55437 MAX_WAL=8GB PSQL_TIMEOUT=3600
# shellcheck source=bench/lib/cluster.sh
. "$BENCH_DIR/lib/cluster.sh"
STARTED=$(date +%s)
make_work
RUNS=$RAW/search.jsonl
: > "$RUNS"
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT=$(mktemp -d /tmp/pdbsearchbench-smoke-out.XXXXXX); OUT_AUTO=1; else OUT=$BENCH_DIR; fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SEARCH_PY=(python3 "$BENCH_DIR/lib/search.py")
META=$RAW/meta.json
"${SEARCH_PY[@]}" meta "$META" command="$COMMAND" date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" smoke="$SMOKE" \
  nproc="$NPROC" cpu_model="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)" \
  loadavg_start="$(cut -d' ' -f1-3 /proc/loadavg)" pg_version="$("$PGBIN/postgres" --version)" \
  duration_s="$DURATION" git="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
log "search bench: $COMMAND  (work dir $WORK, results -> $OUT)"

# ------------------------------------------------------------------ cluster
start_cluster
chmod 777 "$RAW"
[ "$(psql_db -At -c "SELECT to_regproc('progressdb.search') IS NOT NULL")" = t ] ||
  die "progressdb.search() does not exist: the installed extension predates search (0.2)"

# ------------------------------------------------------------------ load
log "generating $MESSAGES messages in $THREADS threads (bench/sql/dataset.sql)"
t0=$(date +%s)
run psql_db -At -v threads="$THREADS" -v messages="$MESSAGES" -v seed="$SEED" -v skew="$SKEW" -v ncursors=10 \
  -v statsfile="$RAW/dataset.json" -f "$BENCH_DIR/sql/dataset.sql" > "$RAW/dataset.log" 2>&1 ||
  die "dataset failed: $(tail -3 "$RAW/dataset.log")"
log "loading into progressdb with search vectors, then the GIN index"
t1=$(date +%s)
run psql_db -v searcher_threads="$SEARCHER_THREADS" -f "$BENCH_DIR/sql/search_load.sql" > "$RAW/load.log" 2>&1 ||
  die "load failed: $(tail -3 "$RAW/load.log")"
t2=$(date +%s)
run psql_db -c "VACUUM ANALYZE" -c "CHECKPOINT" > /dev/null
psql_db -At > "$RAW/load.json" <<SQL || die "load statistics failed"
SELECT json_build_object(
  'generate_s', $t1 - $t0, 'load_and_index_s', $t2 - $t1,
  'threads', (SELECT count(*) FROM progressdb.threads),
  'messages', (SELECT count(*) FROM progressdb.messages),
  'searcher_threads', (SELECT count(*) FROM progressdb.thread_members WHERE user_id = 'searcher'),
  'searcher_messages', (SELECT count(*) FROM progressdb.messages m JOIN progressdb.thread_members mm
                          ON mm.thread = m.thread AND mm.user_id = 'searcher'),
  'messages_bytes', pg_table_size('progressdb.messages'),
  'search_index_bytes', pg_relation_size('progressdb.messages_search_idx'),
  'search_vec_bytes', (SELECT sum(pg_column_size(search_vec)) FROM progressdb.messages),
  'matches', (SELECT json_object_agg(w, n) FROM (
      SELECT w, (SELECT count(*) FROM progressdb.messages WHERE search_vec @@ websearch_to_tsquery('simple', w)) AS n
        FROM unnest(ARRAY['deploy', 'deploy failed', '"deploy failed"', 'zephyrword', 'nomatchword']) w) x))
SQL
"${SEARCH_PY[@]}" record "$RUNS" kind=load "json=$(cat "$RAW/load.json")"
log "loaded: $(cat "$RAW/load.json")"

# ------------------------------------------------------------------ queries
# query NAME ACTOR Q [pgbench -T/-t args]: latency of search(actor, q), one client.
query() {
  local name=$1 actor=$2 q=$3; shift 3
  local prefix=$RAW/pgb-$name status=ok
  run timeout $(( DURATION * 4 + 600 )) "$PGBIN/pgbench" -n -M prepared -c 1 -j 1 "$@" -l --log-prefix="$prefix" \
    -D actor="$actor" -D q="$q" -f "$BENCH_DIR/pgbench/search_query.sql" -h "$SOCK" -p "$PORT" -U postgres bench \
    > "$prefix.out" 2> "$prefix.err" || status=failed
  "${SEARCH_PY[@]}" pgbench "$RUNS" --prefix "$prefix" --status "$status" kind=query name="$name" actor="$actor" q="$q"
}
# A first call of each query warms the plan and the caches it reads.
log "search as 'searcher' (a member of $SEARCHER_THREADS threads), ${DURATION}s per query"
for q in deploy 'deploy failed' '"deploy failed"' zephyrword nomatchword; do
  psql_db -c "SELECT progressdb.search('searcher', \$q\$$q\$q\$)" > /dev/null || true
  query "user:$q" searcher "$q" -T "$DURATION"
done
log "search as the service (all threads)"
for q in zephyrword nomatchword; do
  psql_db -c "SELECT progressdb.search(NULL, \$q\$$q\$q\$)" > /dev/null || true
  query "service:$q" NULL "$q" -T "$DURATION"
done
for q in deploy 'deploy failed'; do
  query "service:$q" NULL "$q" -t "$SERVICE_COMMON_TX"
done

# ------------------------------------------------------------------ appends
# The write cost of indexing: post_message_text into random threads, with
# the search index as shipped, then with the pre-search write path (no
# vector computed, no GIN index), in the same cluster. Commits do not wait
# for the WAL flush, so the runs compare the work an append does.
append() {
  local variant=$1 clients=$2
  local prefix=$RAW/pgb-append-$variant-c$clients status=ok jobs=$(( clients < NPROC ? clients : NPROC ))
  psql_db -c CHECKPOINT > /dev/null
  run env PGOPTIONS="-c synchronous_commit=off" timeout $(( DURATION + 600 )) "$PGBIN/pgbench" -n -M prepared \
    -c "$clients" -j "$jobs" -T "$DURATION" -l --log-prefix="$prefix" -D threads="$THREADS" -D messages="$MESSAGES" \
    -f "$BENCH_DIR/pgbench/search_append.sql" -h "$SOCK" -p "$PORT" -U postgres bench \
    > "$prefix.out" 2> "$prefix.err" || status=failed
  "${SEARCH_PY[@]}" pgbench "$RUNS" --prefix "$prefix" --status "$status" kind=append variant="$variant" clients="$clients"
}
log "appends with the search index, ${DURATION}s per run"
for c in 1 8; do append with_index "$c"; done
psql_db <<'SQL' > /dev/null || die "could not switch the search index off"
DROP INDEX progressdb.messages_search_idx;
CREATE OR REPLACE FUNCTION progressdb._search_vector(thread text, dek bigint, body jsonb) RETURNS tsvector
LANGUAGE sql STABLE AS $$ SELECT NULL::tsvector $$;
SQL
log "appends without it (no vector, no index), ${DURATION}s per run"
for c in 1 8; do append without_index "$c"; done

# ------------------------------------------------------------------ report
"${SEARCH_PY[@]}" meta "$META" loadavg_end="$(cut -d' ' -f1-3 /proc/loadavg)" elapsed_s=$(( $(date +%s) - STARTED ))
rc=0
"${SEARCH_PY[@]}" report "$RUNS" --meta "$META" --json "$OUT/search.json" --md "$OUT/RESULTS.md" || rc=$?
log "results: $OUT/RESULTS.md (search section), $OUT/search.json ($(( $(date +%s) - STARTED )) s)"
exit "$rc"
