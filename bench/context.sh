#!/usr/bin/env bash
# The LLM context window (release 0.2, "AI conversations"). See bench/README.md.
#
#   bench/context.sh           full run (~2 min on 2 cores): context(max_tokens => 8000) on a
#                              10,000-message thread at 1 client (counts warm), the first call
#                              of a fresh session and the first call over uncounted messages;
#                              appends with and without the indexes context() added (the write
#                              cost), and a chat turn (append + context) -> the "AI context"
#                              section of bench/RESULTS.md and bench/context.json
#   bench/context.sh --smoke   300 messages, 1 s runs; results in a temp dir (removed when it
#                              passes); exits non-zero if any scenario fails
#
# Options: --duration SECONDS (each pgbench run; default 10, smoke 1)  --out DIR  --keep
#
# Starts its own PostgreSQL 15 cluster (as the postgres user, unix socket only,
# in a temp dir under /tmp; server binaries from $PROGRESSDB_PG_BIN, default
# /usr/lib/postgresql/15/bin) with the progressdb extension installed there,
# and removes it and every process it started on exit. No timing is asserted:
# a miss of the target is reported, not failed.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PGBIN=${PROGRESSDB_PG_BIN:-/usr/lib/postgresql/15/bin}
COMMAND=$(printf '%q ' "bench/context.sh" "$@")
COMMAND=${COMMAND% }

SMOKE=0 DURATION="" OUT="" KEEP=0
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
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
  N=300 DURATION=${DURATION:-1} ROUNDS=1
else
  N=10000 DURATION=${DURATION:-10} ROUNDS=3
fi
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "--duration must be a positive integer" >&2; exit 2; }
BUDGET=8000
NPROC=$(nproc)

NAME=pdbcontext PORT=55437 SHARED=256MB
# shellcheck source=bench/lib/cluster.sh
. "$BENCH_DIR/lib/cluster.sh"
STARTED=$(now)
make_work
JSONL=$RAW/context.jsonl
: > "$JSONL"
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT=$(mktemp -d /tmp/pdbcontext-smoke-out.XXXXXX); OUT_AUTO=1; else OUT=$BENCH_DIR; fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPORT=(python3 "$BENCH_DIR/lib/context.py")
rec() { "${REPORT[@]}" record --jsonl "$JSONL" "$@"; }
fail() { rec scenario="$1" status=failed error="$2"; log "  $1: FAILED: $2"; }
meta() { printf '%s\t%s\n' "$1" "$2" >> "$RAW/meta.kv"; }

meta command "$COMMAND"
meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta smoke "$SMOKE"
meta nproc "$NPROC"
meta cpu_model "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta pg_version "$("$PGBIN/postgres" --version)"
meta duration_s "$DURATION"
meta rounds "$ROUNDS"
meta messages "$N"
meta budget "$BUDGET"
meta git "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) paths with uncommitted changes)"
log "context bench: $COMMAND  (work dir $WORK, results -> $OUT)"
log "machine: $NPROC cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

start_cluster
[ "$(psql_db -At -c "SELECT to_regproc('progressdb.context') IS NOT NULL")" = t ] ||
  die "progressdb.context() does not exist: the installed extension predates it"
log "cluster up, extension $(psql_db -At -c "SELECT extversion FROM pg_extension WHERE extname = 'progressdb'")"

# ------------------------------------------------------------------ load
log "loading: thread ctx with 1 system + $N messages"
t0=$(now)
run psql_db -v n="$N" -f "$BENCH_DIR/sql/context_dataset.sql" > "$RAW/load.log" 2>&1 ||
  die "loading failed: $(tail -5 "$RAW/load.log")"
run psql_db -c "VACUUM ANALYZE" -c "CHECKPOINT" > /dev/null
meta load_s "$(python3 -c "print(round($(now) - $t0, 1))")"
psql_db -At > "$RAW/dataset.json" <<SQL || die "dataset statistics failed"
SELECT json_build_object('messages', (SELECT count(*) FROM progressdb.messages WHERE thread = 'ctx'),
                         'tool_messages', (SELECT count(*) FROM progressdb.messages WHERE thread = 'ctx' AND role = 'tool'),
                         'body_bytes', (SELECT sum(length(body::text)) FROM progressdb.messages WHERE thread = 'ctx'));
SQL
log "dataset: $(cat "$RAW/dataset.json")"

# ------------------------------------------------------------------ first calls
# In one fresh session each: (1) the very first call -- the tokenizer table
# is loaded and every message walked is counted; (2) a second session's first
# call, counts stored -- the tokenizer is not loaded at all; (3) the warm call.
timed_calls() { # name sql-file -> records the \timing of each statement
  local name=$1 f=$2
  if run psql_db -f "$f" > "$RAW/$name.out" 2> "$RAW/$name.err"; then
    "${REPORT[@]}" timing --jsonl "$JSONL" --name "$name" --log "$RAW/$name.out"
  else
    fail "$name" "$(grep -m1 ERROR "$RAW/$name.err" || tail -2 "$RAW/$name.err" | tr '\n' ' ')"
  fi
}
cat > "$RAW/first.sql" <<SQL
\timing on
SELECT length(progressdb.context('ctx', $BUDGET)::text) AS cold_uncounted;
SELECT length(progressdb.context('ctx', $BUDGET)::text) AS warm_same_session;
SQL
timed_calls first_session "$RAW/first.sql"
cat > "$RAW/second.sql" <<SQL
\timing on
SELECT length(progressdb.context('ctx', $BUDGET)::text) AS new_session_counted;
SELECT length(progressdb.context('ctx', $BUDGET, format => 'anthropic')::text) AS anthropic_warm;
SQL
timed_calls second_session "$RAW/second.sql"
psql_db -At > "$RAW/window.json" <<SQL || fail window "could not read the window"
SELECT json_build_object('tokens', d->'tokens', 'dropped', d->'dropped', 'messages', jsonb_array_length(d->'messages'),
                         'counted', (SELECT count(*) FROM progressdb.message_tokens WHERE thread = 'ctx'))
  FROM progressdb.context('ctx', $BUDGET) d;
SQL
rec scenario=window status=ok "window=$(cat "$RAW/window.json")" > /dev/null
log "window: $(cat "$RAW/window.json")"

# ------------------------------------------------------------------ pgbench
pgb() { # scenario clients script [pgbench -D args...]
  local scenario=$1 clients=$2 script=$3; shift 3
  local prefix=$RAW/pgb-$scenario-r${ROUND:-1} status=ok
  local envs=()
  [ -z "${PGB_OPTIONS:-}" ] || envs=(PGOPTIONS="$PGB_OPTIONS")
  run env "${envs[@]}" timeout $(( DURATION + 120 )) "$PGBIN/pgbench" -n -M prepared -c "$clients" -j "$clients" \
    -T "$DURATION" -l --log-prefix="$prefix" "$@" -f "$BENCH_DIR/pgbench/$script" -h "$SOCK" -p "$PORT" -U postgres bench \
    > "$prefix.out" 2> "$prefix.err" || status=failed
  "${REPORT[@]}" pgbench --jsonl "$JSONL" --scenario "$scenario" --clients "$clients" --round "${ROUND:-1}" \
    --prefix "$prefix" --status "$status"
  rm -f "$prefix".[0-9]*
}

log "context(max_tokens => $BUDGET): 1 client, ${DURATION}s"
ROUND=1
pgb window_openai 1 context_window.sql -D budget=$BUDGET -D format=openai
pgb window_anthropic 1 context_window.sql -D budget=$BUDGET -D format=anthropic
pgb window_text 1 context_window_text.sql -D budget=$BUDGET

# Appends: as shipped, and without the two partial indexes context() added
# (the schema before it; posts never tokenize, so these indexes are the whole
# write-side difference). Alternating order; synchronous_commit off so the
# runs compare the work of a post, not the disk's flush latency.
log "appends: with / without context()'s indexes, 1 client, ${DURATION}s, $ROUNDS round(s)"
PGB_OPTIONS="-c synchronous_commit=off"
drop_idx() { psql_db -c "DROP INDEX progressdb.messages_system_idx, progressdb.messages_deleted_idx" > /dev/null; }
make_idx() { psql_db -c "CREATE INDEX messages_system_idx ON progressdb.messages (thread, seq) WHERE role = 'system'" \
                     -c "CREATE INDEX messages_deleted_idx ON progressdb.messages (thread, seq) WHERE deleted_ts IS NOT NULL" > /dev/null; }
for ROUND in $(seq 1 "$ROUNDS"); do
  if [ $(( ROUND % 2 )) = 1 ]; then order="with without"; else order="without with"; fi
  for v in $order; do
    if [ "$v" = without ]; then drop_idx; pgb append_without_indexes 1 context_post.sql; make_idx
    else pgb append_as_shipped 1 context_post.sql; fi
  done
done
ROUND=1
log "chat turn (append to ctx + context): 1 client, ${DURATION}s"
pgb turn 1 context_turn.sql -D budget=$BUDGET
PGB_OPTIONS=""

# ------------------------------------------------------------------ report
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta elapsed_s "$(python3 -c "print(round($(now) - $STARTED))")"
rc=0
"${REPORT[@]}" report --jsonl "$JSONL" --meta "$RAW/meta.kv" --dataset "$RAW/dataset.json" \
  --json "$OUT/context.json" --md "$OUT/RESULTS.md" || rc=$?
nfail=$(grep -c '"status": "failed"' "$JSONL" || true)
log "results: $OUT/RESULTS.md (AI context section), $OUT/context.json$([ "$OUT_AUTO" = 1 ] && echo "; removed when the smoke run passes (--out DIR keeps them)")"
if [ "$nfail" -gt 0 ]; then
  log "FAILED: $nfail scenario(s) failed:"
  grep '"status": "failed"' "$JSONL" >&2
  exit 1
fi
[ "$rc" = 0 ] || { log "FAILED: the report step failed (rc $rc)"; exit 1; }
exit 0
