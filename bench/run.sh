#!/usr/bin/env bash
# ProgressDB benchmark harness. See bench/README.md.
#
#   bench/run.sh                 full run: 10k threads, 1M messages -> bench/RESULTS.md,
#                                bench/results.json, bench/results.png
#   bench/run.sh --smoke         tiny dataset, 2 s runs, every scenario once; results in a
#                                temp dir; exits non-zero if any scenario fails
#
# Options: --threads N  --messages N  --duration SECONDS  --rounds N  --out DIR  --keep
#          --gateway PATH (use this gateway binary)  --no-build (never cargo build the gateway)
#          --compact auto|yes|no (run progressdb.compact() over the loaded data before the
#            read scenarios; auto = when the installed extension has it; default auto)
#          --set NAME=VALUE (extra postgresql.conf line, repeatable; e.g. shared_preload_libraries=progressdb)
#
# Starts its own PostgreSQL 15 cluster (as the postgres user, unix socket only,
# in a temp dir under /tmp) and removes it, the gateway and every load process
# on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PGBIN=${PROGRESSDB_PG_BIN:-/usr/lib/postgresql/15/bin}
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
COMMAND=$(printf '%q ' "bench/run.sh" "$@")
COMMAND=${COMMAND% }

# ------------------------------------------------------------------ options
SMOKE=0 THREADS="" MESSAGES="" DURATION="" ROUNDS="" OUT="" KEEP=0 GATEWAY_BIN="" BUILD=1 PGSET=() COMPACT=auto
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --threads) THREADS=$2; shift ;;
    --messages) MESSAGES=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --compact) COMPACT=$2; shift ;;
    --set) PGSET+=("$2"); shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    --gateway) GATEWAY_BIN=$2; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [ "$SMOKE" = 1 ]; then
  THREADS=${THREADS:-50} MESSAGES=${MESSAGES:-2000} DURATION=${DURATION:-2} ROUNDS=${ROUNDS:-1}
  # 32 connections too: the issue-11 HTTP targets are judged there
  COLD_TX=20 HTTP_CONNS="8 32" BATCH=500 BUILD=0
else
  THREADS=${THREADS:-10000} MESSAGES=${MESSAGES:-1000000} DURATION=${DURATION:-15} ROUNDS=${ROUNDS:-2}
  COLD_TX=300 HTTP_CONNS="8 32 64" BATCH=20000
fi
APPEND_CLIENTS="1 8"   # append at 1 and 8 clients
READ_CLIENTS=8         # page reads at 8 clients, every target, --rounds rounds
SOLO_CLIENTS=1         # and at 1 client: newest and warm history for the issue-11 ratios
SOLO_ROUNDS=1          # (progressdb's two faces, naive, naive_json), one round: keeps the
                       # full run under ~28 min
# The SQL targets of the page and append scenarios. progressdb is the text
# face (list_messages_text / post_message_text: what the gateway serves);
# progressdb_jsonb the jsonb face (list_messages / post_message).
SQL_TARGETS="progressdb progressdb_jsonb naive naive_json langchain"
SOLO_TARGETS="progressdb progressdb_jsonb naive naive_json"
NCURSORS=1000          # history cursors (busy threads) to pick from
BUFFER_SAMPLES=20      # pages EXPLAINed for the buffers figure
BUFFER_SAMPLES_WIDE=200 # and for progressdb's wider sample (distribution)
SEED=0.42              # setseed(): same seed, same data
SKEW=2.5               # thread rank = floor(T * u^SKEW): power-law activity
API_KEY=sk_bench
for v in THREADS MESSAGES DURATION ROUNDS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "--${v,,} must be a positive integer" >&2; exit 2; }
done
case $COMPACT in auto|yes|no) ;; *) echo "--compact wants auto, yes or no" >&2; exit 2 ;; esac
[ "$MESSAGES" -ge "$THREADS" ] || { echo "--messages must be >= --threads" >&2; exit 2; }
NPROC=$(nproc)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "FATAL: $*" >&2; exit 1; }

# ------------------------------------------------------------------ cleanup
WORK="" CHILD="" GW_PID="" PGDATA="" OUT_AUTO=0
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$CHILD" ]; then
    pkill -TERM -P "$CHILD" 2>/dev/null   # children of the command we started (by parent pid)
    kill "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null
  fi
  if [ -n "$GW_PID" ]; then kill "$GW_PID" 2>/dev/null; wait "$GW_PID" 2>/dev/null; fi
  if [ -n "$PGDATA" ] && [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$KEEP" = 1 ]; then log "kept $WORK (cluster data, raw logs)"; else rm -rf "$WORK"; fi
  fi
  # a passing smoke run leaves nothing behind unless --out was given
  if [ "$OUT_AUTO" = 1 ] && [ -n "$OUT" ] && [ -d "$OUT" ]; then
    if [ "$rc" = 0 ] && [ "$KEEP" = 0 ]; then rm -rf "$OUT"; else log "smoke results kept in $OUT"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background and waits, so a signal reaches our trap at
# once and the trap can kill the command.
run() { "$@" & CHILD=$!; local rc=0; wait "$CHILD" || rc=$?; CHILD=""; return "$rc"; }

elapsed() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" "$1" "$2"; }
now() { date +%s.%N; }
STARTED=$(now)

# ------------------------------------------------------------------ 1. install
install_deps() {
  if ! command -v wrk >/dev/null; then
    log "installing wrk (Debian package)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null 2>&1 ||
           { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null 2>&1; }; }; then
      log "could not install wrk: the HTTP section will be reported as not measured"
    fi
  fi
  if ! python3 -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib (pip)"
    python3 -m pip install -q matplotlib >/dev/null 2>&1 ||
      python3 -m pip install -q --break-system-packages matplotlib >/dev/null 2>&1 ||
      { DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-matplotlib >/dev/null 2>&1; } ||
      log "could not install matplotlib: no plot"
  fi
  for b in initdb pg_ctl psql pgbench; do
    [ -x "$PGBIN/$b" ] || die "$PGBIN/$b missing (install postgresql-15)"
  done
  [ -f "$("$PGBIN/pg_config" --sharedir)/extension/progressdb.control" ] ||
    die "the progressdb extension is not installed in PostgreSQL 15 (cargo pgrx install --release)"
}
install_deps

# ------------------------------------------------------------------ work dirs, records
WORK=$(mktemp -d /tmp/pdbbench.XXXXXX)
chmod 755 "$WORK"
RAW=$WORK/raw
mkdir -p "$RAW"
JSONL=$RAW/results.jsonl
: > "$JSONL"
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT=$(mktemp -d /tmp/pdbbench-smoke-out.XXXXXX); OUT_AUTO=1; else OUT=$BENCH_DIR; fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPORT=(python3 "$BENCH_DIR/lib/report.py")
meta() { printf '%s\t%s\n' "$1" "$2" >> "$RAW/meta.kv"; }
# rec key=value ... : one record (numbers stay numbers; json=<object> is merged in)
rec() { "${REPORT[@]}" record --jsonl "$JSONL" --kv "$@"; }

meta command "$COMMAND"
meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta smoke "$SMOKE"
meta nproc "$NPROC"
meta cpu_model "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
meta memory "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta kernel "$(uname -sr)"
meta pg_version "$("$PGBIN/postgres" --version)"
meta git "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) paths with uncommitted changes)"
meta seed "$SEED"
meta cold_tx "$COLD_TX"
meta buffer_samples "$BUFFER_SAMPLES"
meta duration_s "$DURATION"
meta rounds "$ROUNDS"
meta solo_rounds "$SOLO_ROUNDS"
log "bench: $COMMAND  (work dir $WORK, results -> $OUT)"
log "machine: $NPROC cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ gateway binary
GW_REASON=""
find_gateway() {
  if [ -n "$GATEWAY_BIN" ]; then
    [ -x "$GATEWAY_BIN" ] || GW_REASON="gateway binary $GATEWAY_BIN not found"
    return
  fi
  if [ ! -f "$ROOT/gateway/Cargo.toml" ]; then
    GW_REASON="no gateway in this checkout (gateway/Cargo.toml missing)"; return
  fi
  local target=${CARGO_TARGET_DIR:-$ROOT/target}
  if [ "$BUILD" = 1 ]; then
    if ! command -v cargo >/dev/null; then GW_REASON="cargo not found, cannot build the gateway"; return; fi
    log "building the gateway: cargo build --release -p progressdb-gateway"
    if ! run timeout 1800 cargo build --release -p progressdb-gateway --manifest-path "$ROOT/Cargo.toml" \
         > "$RAW/gateway-build.log" 2>&1; then
      GW_REASON="the gateway failed to build (cargo build --release -p progressdb-gateway): $(grep -m1 -E '^error' "$RAW/gateway-build.log" || tail -1 "$RAW/gateway-build.log")"
      return
    fi
    GATEWAY_BIN=$target/release/progressdb
  else
    for b in "$target/release/progressdb" "$target/debug/progressdb"; do
      if [ -x "$b" ]; then GATEWAY_BIN=$b; break; fi
    done
    [ -n "$GATEWAY_BIN" ] || GW_REASON="no gateway binary built (target/release/progressdb); run cargo build --release -p progressdb-gateway"
  fi
  [ -z "$GATEWAY_BIN" ] || [ -x "$GATEWAY_BIN" ] || GW_REASON="gateway binary $GATEWAY_BIN missing after build"
}
find_gateway
command -v wrk >/dev/null || GW_REASON=${GW_REASON:-"wrk is not installed"}
[ -z "$GW_REASON" ] && log "gateway: $GATEWAY_BIN" || log "HTTP will not be measured: $GW_REASON"

# ------------------------------------------------------------------ 2. cluster
PORT=55432   # names the unix socket only; the server has no TCP listener
PGDATA=$WORK/data
SOCK=$WORK/run
mkdir -p "$SOCK"
chown -R postgres:postgres "$WORK" 2>/dev/null || true
chmod 755 "$RAW"
log "initdb $PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" --auth=trust -U postgres -E UTF8 --locale=C.UTF-8 > "$RAW/initdb.log" 2>&1 ||
  die "initdb failed: $(tail -3 "$RAW/initdb.log")"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | sed 's/^/bench:/' > "$WORK/master.key"
echo >> "$WORK/master.key"
chown postgres:postgres "$WORK/master.key"; chmod 600 "$WORK/master.key"
cat >> "$PGDATA/postgresql.conf" <<EOF

# --- bench/run.sh ---
listen_addresses = ''
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 200
shared_buffers = 256MB
synchronous_commit = on
max_wal_size = 8GB
checkpoint_timeout = 30min
# read by progressdb once encryption exists (the encrypted-vs-plain hook)
progressdb.master_key_file = '$WORK/master.key'
EOF
for kv in ${PGSET[@]+"${PGSET[@]}"}; do
  [[ $kv == *=* ]] || die "--set wants NAME=VALUE, got $kv"
  printf "%s = '%s'\n" "${kv%%=*}" "${kv#*=}" >> "$PGDATA/postgresql.conf"
done
meta extra_settings "${PGSET[*]:-none}"
pg_start() {
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/server.log" -w -t 120 start > /dev/null ||
    die "server failed to start: $(tail -5 "$WORK/server.log")"
}
pg_stop() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 120 stop > /dev/null; }
pg_start
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
psql_db() { timeout 3600 "${PSQL[@]}" -d bench "$@"; }
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench" || die "createdb failed"
psql_db -c "CREATE EXTENSION progressdb" || die "CREATE EXTENSION progressdb failed"
# `cargo pgrx test` installs its own debug build with test helpers over the
# release one; its numbers would mean nothing.
[ "$(psql_db -At -c "SELECT to_regproc('progressdb.test_sqlstate_of') IS NULL")" = t ] ||
  die "the installed progressdb is a test build (left by cargo pgrx test); run: cargo pgrx install --release"
psql_db -c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" >/dev/null 2>&1 || true
meta pg_settings "$(psql_db -At -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers','synchronous_commit','fsync','full_page_writes','max_wal_size','max_connections','work_mem')")"
[ "$(psql_db -At -c 'SHOW synchronous_commit')" = on ] || die "synchronous_commit must be on"
log "cluster up: $SOCK port $PORT, extension $(psql_db -At -c "SELECT extversion FROM pg_extension WHERE extname='progressdb'")"

# ------------------------------------------------------------------ 3. dataset + load
log "generating dataset: $THREADS threads, $MESSAGES messages (seed $SEED)"
t0=$(now)
run psql_db -At -v threads="$THREADS" -v messages="$MESSAGES" -v seed="$SEED" -v skew="$SKEW" \
  -v ncursors="$NCURSORS" -v statsfile="$RAW/dataset.json" -f "$BENCH_DIR/sql/dataset.sql" > "$RAW/dataset.log" 2>&1 ||
  die "dataset generation failed: $(tail -5 "$RAW/dataset.log")"
run psql_db -f "$BENCH_DIR/sql/helpers.sql" > "$RAW/helpers.log" 2>&1 || die "helpers failed: $(tail -5 "$RAW/helpers.log")"
meta generate_s "$(elapsed "$t0" "$(now)")"
log "dataset ready in $(elapsed "$t0" "$(now)") s: $(cat "$RAW/dataset.json")"

# progressdb's storage: messages, threads and timeline chunks (when the
# extension has them), tables + indexes + TOAST.
PDB_SIZE_SQL="SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c
  WHERE c.oid IN (to_regclass('progressdb.messages'), to_regclass('progressdb.threads'), to_regclass('progressdb.message_chunks'))"

load() { # target sqlfile method
  local target=$1 file=$2 method=$3 t0 t1 secs size
  log "loading $target ($method)"
  t0=$(now)
  if run psql_db -v batch="$BATCH" -f "$BENCH_DIR/sql/$file" > "$RAW/load-$target.log" 2>&1; then
    t1=$(now); secs=$(elapsed "$t0" "$t1")
    case $target in
      progressdb) size=$(psql_db -At -c "$PDB_SIZE_SQL") ;;
      naive) size=$(psql_db -At -c "SELECT pg_size_pretty(pg_total_relation_size('bench.naive_messages'))") ;;
      langchain) size=$(psql_db -At -c "SELECT pg_size_pretty(pg_total_relation_size('bench.langchain_history'))") ;;
    esac
    rec scenario=load target="$target" status=ok seconds="$secs" \
      rows_per_s="$(python3 -c "print(round($MESSAGES / max($secs, 1e-3)))")" size="$size" method="$method"
  else
    rec scenario=load target="$target" status=failed error="$(tail -3 "$RAW/load-$target.log" | tr '\n' ' ')"
    die "loading $target failed"
  fi
}
load progressdb load_progressdb.sql "SELECT progressdb.post_message(…) per message, ts order, $BATCH per statement"
load naive load_naive.sql "INSERT … SELECT, ts order, $BATCH per statement"
load langchain load_langchain.sql "INSERT … SELECT, ts order, $BATCH per statement"
psql_db -c "SELECT bench.fill_cursors()" > /dev/null
problems=$(psql_db -At -c "SELECT bench.check_load()") || problems="check_load failed to run"
if [ -z "$problems" ]; then
  rec scenario=load_check target=all status=ok
else
  rec scenario=load_check target=all status=failed error="$problems"
fi
log "VACUUM ANALYZE + CHECKPOINT"
run psql_db -c "VACUUM ANALYZE" -c "CHECKPOINT" > /dev/null
NCURSORS_REAL=$(psql_db -At -c "SELECT count(*) FROM bench.cursors")

buffers() { # scenario target page [whole_call]  (target *_wide: $BUFFER_SAMPLES_WIDE pages)
  local scenario=$1 target=$2 page=$3 whole=${4:-false} js samples=$BUFFER_SAMPLES
  local sqltarget=${target%_call}; sqltarget=${sqltarget%_interleaved}; sqltarget=${sqltarget%_wide}
  [[ $target == *_wide ]] && samples=$BUFFER_SAMPLES_WIDE
  if js=$(psql_db -At -c "SELECT bench.page_buffers('$sqltarget', '$page', $samples, $whole)" 2> "$RAW/buffers.err"); then
    rec scenario="$scenario" target="$target" status=ok json="$js"
  else
    rec scenario="$scenario" target="$target" status=failed error="$(tail -2 "$RAW/buffers.err" | tr '\n' ' ')"
  fi
}

# Each warm SQL scenario runs ROUNDS times, alternating the order of the
# targets (odd rounds progressdb first, even rounds progressdb last); the
# report uses each target's best round, results.json keeps every round.
# naive_json is the naive table again, each page (and each appended row)
# returned as one JSON document built in SQL: pgbench/*_naive_json.sql.
# targets_for_round ROUND TARGET...: the targets as given in odd rounds, reversed in even ones.
targets_for_round() {
  local r=$1; shift
  if [ $(( r % 2 )) = 1 ]; then echo "$@"; else printf '%s\n' "$@" | tac | tr '\n' ' '; fi
}

# ------------------------------------------------------------------ timeline clustering
# The loaded heap has every thread's messages interleaved. When the extension
# has progressdb.compact() (timeline clustering), measure the buffers per page
# as loaded, then compact everything (min_age 0: all of it is "closed") in
# batches of 500 threads, each its own transaction, and run every read
# scenario on the compacted storage, as a server with the background
# compactor would have it.
HAS_COMPACT=$(psql_db -At -c "SELECT count(*) FROM pg_proc WHERE oid::regprocedure::text = 'progressdb.compact(integer,integer,interval)'")
if [ "$COMPACT" = yes ] && [ "$HAS_COMPACT" != 1 ]; then die "--compact yes, but progressdb.compact(integer, integer, interval) does not exist"; fi
if [ "$COMPACT" != no ] && [ "$HAS_COMPACT" = 1 ]; then
  log "shared buffers per page as loaded (interleaved)"
  buffers buffers_history progressdb_interleaved history
  buffers buffers_newest progressdb_interleaved newest
  log "compacting timelines: progressdb.compact(max_threads => 500, min_age => '0')"
  t0=$(now) moved=0 rounds=0 cstatus=ok
  for i in $(seq 1 1000); do
    if ! out=$(psql_db -At -c "SELECT progressdb.compact(max_threads => 500, min_age => '0 seconds')" 2> "$RAW/compact.err"); then
      cstatus=failed; break
    fi
    rounds=$i
    n=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["messages"])' "$out")
    moved=$(( moved + n ))
    if [ "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["threads"])' "$out")" = 0 ]; then break; fi
  done
  secs=$(elapsed "$t0" "$(now)")
  if [ "$cstatus" = ok ]; then
    run psql_db -c "VACUUM ANALYZE progressdb.messages" -c "VACUUM ANALYZE progressdb.message_chunks" -c "CHECKPOINT" > /dev/null
    chunks=$(psql_db -At -F ' ' -c "SELECT count(*), round(avg(n_messages), 1), round(avg(octet_length(packed))),
        count(*) FILTER (WHERE octet_length(packed) > 8000),
        pg_size_pretty(pg_total_relation_size('progressdb.message_chunks'))
      FROM progressdb.message_chunks")
    read -r n_chunks per_chunk chunk_bytes chunks_toasted chunks_size <<< "$chunks"
    # The history cursors again, now that pages come from chunks: the page
    # cursor still gives the message id's page, and the right messages.
    problems=$(psql_db -At -c "SELECT bench.check_cursors()") || problems="check_cursors failed to run"
    if [ -z "$problems" ]; then rec scenario=cursor_check target=compacted status=ok
    else rec scenario=cursor_check target=compacted status=failed error="$problems"; fi
    rec scenario=compaction target=progressdb status=ok seconds="$secs" messages="$moved" calls="$rounds" \
      size="$(psql_db -At -c "$PDB_SIZE_SQL")" chunks="$n_chunks" messages_per_chunk="$per_chunk" \
      chunk_stored_bytes="$chunk_bytes" chunks_over_8000_bytes="$chunks_toasted" chunks_size="$chunks_size"
    meta storage "compacted: progressdb.compact() put $moved messages into $n_chunks timeline chunks in $secs s before the read scenarios"
  else
    rec scenario=compaction target=progressdb status=failed error="$(tail -3 "$RAW/compact.err" | tr '\n' ' ')"
    meta storage "as loaded (compaction failed)"
  fi
else
  meta storage "as loaded: thread timelines interleaved ($([ "$HAS_COMPACT" = 1 ] && echo "--compact no" || echo "no progressdb.compact() in this extension"))"
fi


# ------------------------------------------------------------------ 4. measurements
# pgb scenario target clients script [pgbench args...]: one pgbench run -> one record
pgb() {
  local scenario=$1 target=$2 clients=$3 script=$4; shift 4
  local name="$scenario-$target-c$clients-r${ROUND:-1}" jobs=$(( clients < NPROC ? clients : NPROC )) status=ok
  local prefix=$RAW/$name
  local mode=(-T "$DURATION")
  [ "${1:-}" = "-t" ] && { mode=(-t "$2"); shift 2; }
  run timeout $(( DURATION + 300 )) "$PGBIN/pgbench" -n -M prepared -c "$clients" -j "$jobs" "${mode[@]}" \
    -l --log-prefix="$prefix" -D nthreads="$THREADS" -D ncursors="$NCURSORS_REAL" "$@" \
    -f "$BENCH_DIR/pgbench/$script" -h "$SOCK" -p "$PORT" -U postgres bench > "$prefix.out" 2> "$prefix.err" || status=failed
  "${REPORT[@]}" pgbench --jsonl "$JSONL" --scenario "$scenario" --target "$target" --clients "$clients" \
    --prefix "$prefix" --status "$status" --extra "{\"round\": ${ROUND:-1}}"
  rm -f "$prefix".[0-9]*   # per-transaction logs: summarised above
}
log "scenario: newest page of 50, $READ_CLIENTS clients, ${DURATION}s each, $ROUNDS round(s); $SOLO_CLIENTS client, $SOLO_ROUNDS round(s)"
for ROUND in $(seq 1 "$ROUNDS"); do
  for t in $(targets_for_round "$ROUND" $SQL_TARGETS); do pgb newest "$t" "$READ_CLIENTS" "newest_$t.sql"; done
done
for ROUND in $(seq 1 "$SOLO_ROUNDS"); do
  for t in $(targets_for_round "$ROUND" $SOLO_TARGETS); do pgb newest "$t" "$SOLO_CLIENTS" "newest_$t.sql"; done
done

log "scenario: history page of 50 (older half of busy threads), warm"
for t in progressdb naive naive_json langchain; do
  psql_db -At -c "SELECT bench.warm('$t', 'history')" > /dev/null 2>&1 || true
done
# (progressdb_jsonb reads what progressdb's warm-up read)
for ROUND in $(seq 1 "$ROUNDS"); do
  for t in $(targets_for_round "$ROUND" $SQL_TARGETS); do pgb history_warm "$t" "$READ_CLIENTS" "history_$t.sql"; done
done
for ROUND in $(seq 1 "$SOLO_ROUNDS"); do
  for t in $(targets_for_round "$ROUND" $SOLO_TARGETS); do pgb history_warm "$t" "$SOLO_CLIENTS" "history_$t.sql"; done
done
ROUND=1
log "shared buffers per page (EXPLAIN ANALYZE BUFFERS, $BUFFER_SAMPLES pages)"
# Not for naive_json: its page is the naive query with an aggregate over the
# 50 rows on top, so it touches the naive query's buffers (the report says so).
for t in progressdb naive langchain; do
  buffers buffers_history "$t" history
  buffers buffers_newest "$t" newest
done
# ... except for TOAST: a body stored out of line is read by the JSON aggregate
# but not by EXPLAIN of the bare naive query. 0 bytes: there is none.
meta naive_toast_bytes "$(psql_db -At -c "SELECT coalesce(pg_relation_size(NULLIF(reltoastrelid, 0)), 0) FROM pg_class WHERE oid = 'bench.naive_messages'::regclass" 2>/dev/null || echo '')"
buffers buffers_history progressdb_call history true
buffers buffers_newest progressdb_call newest true
buffers buffers_history progressdb_wide history
buffers buffers_newest progressdb_wide newest

log "scenario: append, clients $APPEND_CLIENTS"
for c in $APPEND_CLIENTS; do
  for ROUND in $(seq 1 "$ROUNDS"); do
    for t in $(targets_for_round "$ROUND" $SQL_TARGETS); do pgb append "$t" "$c" "append_$t.sql"; done
  done
done
ROUND=1

log "scenario: history page, cold cache ($COLD_TX pages per target, 1 client)"
DROP=""
for t in progressdb naive naive_json langchain; do
  run psql_db -c "CHECKPOINT" > /dev/null
  pg_stop; pg_start
  if sync && (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then DROP=yes
  else DROP="not permitted (cannot write /proc/sys/vm/drop_caches); only PostgreSQL's buffers were cold"; fi
  pgb history_cold "$t" 1 "history_$t.sql" -t "$COLD_TX"
done
meta drop_caches "$DROP"

# Everything the HTTP runs touch back into the OS cache after the cold runs.
psql_db -At -c "SELECT sum(pg_prewarm(c.oid, 'read')) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'progressdb' AND c.relkind IN ('r', 'i', 't')" > /dev/null 2>&1 || true

# ------------------------------------------------------------------ HTTP
http_section() {
  if [ -n "$GW_REASON" ]; then
    rec scenario=http target=gateway status="not measured" reason="not measured: $GW_REASON"
    return
  fi
  local gwport pool=16
  gwport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log "starting the gateway on 127.0.0.1:$gwport"
  env -i PATH="$PATH" HOME="$HOME" PROGRESSDB_API_BACKEND_KEYS="$API_KEY" PROGRESSDB_API_ADMIN_KEYS=admin_bench \
    PROGRESSDB_RATE_RPS=0 PROGRESSDB_POOL_SIZE="$pool" PROGRESSDB_LOG_LEVEL=warn \
    "$GATEWAY_BIN" --addr "127.0.0.1:$gwport" --db "host=$SOCK port=$PORT user=postgres dbname=bench" \
    > "$RAW/gateway.log" 2>&1 &
  GW_PID=$!
  local i ready=0
  for i in $(seq 1 120); do
    if ! kill -0 "$GW_PID" 2>/dev/null; then break; fi
    if curl -sf -m 2 "http://127.0.0.1:$gwport/readyz" > /dev/null; then ready=1; break; fi
    sleep 0.5
  done
  if [ "$ready" != 1 ]; then
    rec scenario=http target=gateway status=failed error="gateway did not become ready: $(tail -3 "$RAW/gateway.log" | tr '\n' ' ')"
    return
  fi
  # One real request of each kind first: a wrong answer here is a failure, not a number.
  local code
  code=$(curl -s -m 10 -o "$RAW/http-check.json" -w '%{http_code}' -X POST "http://127.0.0.1:$gwport/v1/messages" \
    -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
    -d '{"thread":"t1","author":"user1","body":{"text":"bench check"}}') || code=000
  if [ "$code" != 200 ]; then
    rec scenario=http target=gateway status=failed error="POST /v1/messages answered $code: $(head -c 300 "$RAW/http-check.json" 2>/dev/null)"
    return
  fi
  code=$(curl -s -m 10 -o "$RAW/http-check.json" -w '%{http_code}' -H "Authorization: Bearer $API_KEY" \
    "http://127.0.0.1:$gwport/v1/threads/t1/messages?limit=50") || code=000
  if [ "$code" != 200 ]; then
    rec scenario=http target=gateway status=failed error="GET /v1/threads/t1/messages answered $code: $(head -c 300 "$RAW/http-check.json" 2>/dev/null)"
    return
  fi
  local c route lua wt status res
  for c in $HTTP_CONNS; do
    for route in post get; do
      lua=$BENCH_DIR/wrk/$route.lua
      wt=$(( c < 2 ? c : 2 ))
      res=$RAW/wrk-$route-c$c.json
      status=ok
      log "wrk $route, $c connections, ${DURATION}s"
      WRK_RESULT=$res run timeout $(( DURATION + 120 )) wrk -t "$wt" -c "$c" -d "${DURATION}s" --timeout 10s \
        -s "$lua" "http://127.0.0.1:$gwport" -- "$THREADS" "$API_KEY" > "$RAW/wrk-$route-c$c.out" 2>&1 || status=failed
      "${REPORT[@]}" wrk --jsonl "$JSONL" --scenario "http_$route" --target gateway --clients "$c" \
        --result "$res" --status "$status"
      pgb "http_${route}_sql" pgbench "$c" "http_${route}_sql.sql"
    done
  done
  local hwm rss
  hwm=$(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$GW_PID/status" 2>/dev/null || echo "?")
  rss=$(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$GW_PID/status" 2>/dev/null || echo "?")
  if kill -0 "$GW_PID" 2>/dev/null; then
    # recorded relative to the project, so results never carry a machine's paths
    rec scenario=http target=gateway status=ok binary="${GATEWAY_BIN#"$ROOT"/}" pool_size="$pool" vmhwm="$hwm" vmrss_end="$rss"
  else
    rec scenario=http target=gateway status=failed error="the gateway died during the run: $(tail -3 "$RAW/gateway.log" | tr '\n' ' ')"
  fi
  kill "$GW_PID" 2>/dev/null; wait "$GW_PID" 2>/dev/null || true
  GW_PID=""
}
log "scenario: HTTP"
http_section

# ------------------------------------------------------------------ encrypted vs plain (hook)
# Probes create_thread(encrypted => true). Today it raises 0A000 ("not
# available"), so this reports "not measured". Once encryption lands (with the
# key file above configured), it measures append and newest page on encrypted
# vs plain threads without any change here.
encrypted_section() {
  local out
  if ! out=$(psql_db -At -c "\\set VERBOSITY verbose" -c "BEGIN" \
        -c "SELECT progressdb.create_thread(author => 'user1', id => 'bench-encryption-probe', encrypted => true)" \
        -c "ROLLBACK" 2>&1); then
    if grep -q '0A000' <<< "$out"; then
      rec scenario=encrypted target=progressdb status="not measured" reason="not measured: encryption not available ($(grep -m1 -o 'ERROR:.*' <<< "$out"))"
    else
      rec scenario=encrypted target=progressdb status="not measured" reason="not measured: encryption probe failed: $(tr '\n' ' ' <<< "$out" | head -c 300)"
    fi
    return
  fi
  local n=$(( THREADS < 1000 ? THREADS : 1000 )) per=60 kind prefix t0 secs leaked
  psql_db -c "SELECT count(progressdb.create_thread(author => 'user' || (i % 1000), id => 'enc' || i, encrypted => true)),
                     count(progressdb.create_thread(author => 'user' || (i % 1000), id => 'pln' || i))
                FROM generate_series(1, $n) i" > /dev/null 2> "$RAW/encrypted.err" ||
    { rec scenario=encrypted target=progressdb status=failed error="creating encrypted threads failed: $(tail -2 "$RAW/encrypted.err" | tr '\n' ' ')"; return; }
  rec scenario=encrypted target=progressdb status=ok threads="$n" messages_per_thread="$per"
  # Same messages into $n plain and $n encrypted threads ($per each, interleaved),
  # so that pages are full and both sets have the same shape.
  for kind in plain encrypted; do
    prefix=$([ "$kind" = plain ] && echo pln || echo enc)
    t0=$(now)
    if run psql_db -c "SELECT count(*) FROM (SELECT progressdb.post_message('$prefix' || i, 'user' || (i % 1000),
            jsonb_build_object('text', left(repeat('lorem ipsum dolor sit amet consectetur ', 52), 100 + (i * 37 + j * 11) % 1901)))
            FROM generate_series(1, $per) j, generate_series(1, $n) i ORDER BY j, i) s" > /dev/null 2> "$RAW/encrypted.err"; then
      secs=$(elapsed "$t0" "$(now)")
      rec scenario=encrypted_load target="$kind" status=ok seconds="$secs" clients=1 \
        throughput="$(python3 -c "print(round($n * $per / max($secs, 1e-3), 1))")"
    else
      rec scenario=encrypted_load target="$kind" status=failed error="$(tail -2 "$RAW/encrypted.err" | tr '\n' ' ')"
    fi
  done
  # The contract: stored rows of encrypted threads never show plaintext.
  leaked=$(psql_db -At -c "SELECT count(*) FROM progressdb.messages m WHERE m.thread LIKE 'enc%' AND m::text LIKE '%lorem ipsum%'") || leaked="?"
  if [ "$leaked" = 0 ]; then rec scenario=encrypted_check target=encrypted status=ok
  else rec scenario=encrypted_check target=encrypted status=failed error="$leaked stored rows of encrypted threads contain plaintext"; fi
  for kind in plain encrypted; do
    prefix=$([ "$kind" = plain ] && echo pln || echo enc)
    pgb encrypted_append "$kind" "$READ_CLIENTS" enc_append.sql -D prefix="$prefix" -D nenc="$n"
    pgb encrypted_newest "$kind" "$READ_CLIENTS" enc_newest.sql -D prefix="$prefix" -D nenc="$n"
  done
}
log "scenario: encrypted vs plain"
encrypted_section

# ------------------------------------------------------------------ 5. report
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta elapsed_s "$(python3 -c "print(round($(now) - $STARTED))")"
python3 - "$RAW/meta.kv" "$RAW/dataset.json" "$RAW/meta.json" <<'PY'
import json, sys
meta = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("\t")
    meta[k] = v
meta["smoke"] = meta.get("smoke") == "1"
try:
    meta["dataset"] = json.load(open(sys.argv[2]))
except (OSError, ValueError):
    pass
json.dump(meta, open(sys.argv[3], "w"), indent=1, sort_keys=True)
PY
rc=0
"${REPORT[@]}" report --jsonl "$JSONL" --meta "$RAW/meta.json" --md "$OUT/RESULTS.md" \
  --json "$OUT/results.json" --png "$OUT/results.png" || rc=$?
nfail=$(grep -c '"status": "failed"' "$JSONL" || true)
log "results: $OUT/RESULTS.md, $OUT/results.json, $OUT/results.png ($(python3 -c "print(round($(now) - $STARTED))") s)$([ "$OUT_AUTO" = 1 ] && echo "; this smoke output is removed when the run passes (--out DIR keeps it)")"
if [ "$nfail" -gt 0 ]; then
  log "FAILED: $nfail scenario run(s) failed:"
  grep '"status": "failed"' "$JSONL" | python3 -c 'import json,sys; [print("  ", r["scenario"], r["target"], r.get("clients",""), r.get("error","")) for r in map(json.loads, sys.stdin)]'
  exit 1
fi
[ "$rc" = 0 ] || { log "FAILED: the report/plot step failed (rc $rc)"; exit 1; }
exit 0
