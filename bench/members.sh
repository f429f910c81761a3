#!/usr/bin/env bash
# Costs of members, read state and the inbox (release 0.2). See bench/README.md.
#
#   bench/members.sh           full run (~2 min on 2 cores): 20,000 threads; inbox_user and
#                              quiet_user in 2,000 each; `big` with 1,000 members, `small`
#                              with 1; `long` with 5,000 messages -> the members section of
#                              bench/RESULTS.md and bench/members.json
#   bench/members.sh --smoke   tiny dataset, every scenario once, 1 s runs; results in a temp dir
#                              (removed when it passes); exits non-zero if any scenario fails
#
# Options: --duration SECONDS (each pgbench run; default 5, smoke 1)  --out DIR  --keep
#
# Starts its own PostgreSQL 15 cluster (as the postgres user, unix socket only,
# in a temp dir under /tmp; server binaries from $PROGRESSDB_PG_BIN, default
# /usr/lib/postgresql/15/bin) with the progressdb extension installed there,
# and removes it and every process it started on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PGBIN=${PROGRESSDB_PG_BIN:-/usr/lib/postgresql/15/bin}
COMMAND=$(printf '%q ' "bench/members.sh" "$@")
COMMAND=${COMMAND% }

# ------------------------------------------------------------------ options
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
  THREADS=1000 STRIDE=5 FLOOD=1100 RECENT=20 BIG=100 LONG=300 DURATION=${DURATION:-1} ROUNDS=1 SHARED=128MB
else
  THREADS=20000 STRIDE=10 FLOOD=1200,2000,3000 RECENT=200 BIG=1000 LONG=5000 DURATION=${DURATION:-5} ROUNDS=3 SHARED=256MB
fi
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "--duration must be a positive integer" >&2; exit 2; }
INBOX=$(( THREADS / STRIDE ))        # inbox_user's memberships
NFLOOD=$(awk -F, '{print NF}' <<< "$FLOOD")
DEEP=$(( INBOX / 2 < 1000 ? INBOX / 2 : 1000 ))   # offset of the deep inbox page
BIG_ACTOR=bigm$(( BIG / 2 ))         # a plain member of `big`
WARM=6                               # unlogged calls before the measured one (call 9; PL/pgSQL plans settle after 5)
SEED=0.42
NPROC=$(nproc)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "FATAL: $*" >&2; exit 1; }

# ------------------------------------------------------------------ cleanup
WORK="" CHILD="" PGDATA="" OUT_AUTO=0
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$CHILD" ]; then
    pkill -TERM -P "$CHILD" 2>/dev/null   # children of the command we started (by parent pid)
    kill "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null
  fi
  if [ -n "$PGDATA" ] && [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$KEEP" = 1 ]; then log "kept $WORK (cluster data, raw logs)"; else rm -rf "$WORK"; fi
  fi
  if [ "$OUT_AUTO" = 1 ] && [ -n "$OUT" ] && [ -d "$OUT" ]; then
    if [ "$rc" = 0 ] && [ "$KEEP" = 0 ]; then rm -rf "$OUT"; else log "smoke results kept in $OUT"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background and waits, so that a signal reaches the
# trap at once and the trap can stop the command.
run() { "$@" & CHILD=$!; local rc=0; wait "$CHILD" || rc=$?; CHILD=""; return "$rc"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$1" "$2"; }
STARTED=$(now)

for b in initdb pg_ctl psql pgbench postgres; do
  [ -x "$PGBIN/$b" ] || die "$PGBIN/$b missing (install postgresql-15 or set PROGRESSDB_PG_BIN)"
done
[ -f "$("$PGBIN/pg_config" --sharedir)/extension/progressdb.control" ] ||
  die "the progressdb extension is not installed in $("$PGBIN/pg_config" --sharedir) (cargo pgrx install --release)"
[ -f "$("$PGBIN/pg_config" --pkglibdir)/auto_explain.so" ] || die "auto_explain is missing from $("$PGBIN/pg_config" --pkglibdir)"

# ------------------------------------------------------------------ work dirs, records
WORK=$(mktemp -d /tmp/pdbmembers.XXXXXX)
chmod 755 "$WORK"
RAW=$WORK/raw
mkdir -p "$RAW"
JSONL=$RAW/members.jsonl
: > "$JSONL"
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT=$(mktemp -d /tmp/pdbmembers-smoke-out.XXXXXX); OUT_AUTO=1; else OUT=$BENCH_DIR; fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
MEMBERS=(python3 "$BENCH_DIR/lib/members.py")
REPORT=(python3 "$BENCH_DIR/lib/report.py")
meta() { printf '%s\t%s\n' "$1" "$2" >> "$RAW/meta.kv"; }
rec() { "${REPORT[@]}" record --jsonl "$JSONL" --kv "$@"; }
fail() { rec scenario="$1" name="$2" target="$2" status=failed error="$3"; }   # scenario name error

meta command "$COMMAND"
meta date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta smoke "$SMOKE"
meta nproc "$NPROC"
meta cpu_model "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta pg_version "$("$PGBIN/postgres" --version)"
meta duration_s "$DURATION"
meta rounds "$ROUNDS"
meta warm_calls "$WARM"
meta deep_offset "$DEEP"
meta git "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) paths with uncommitted changes)"
log "members bench: $COMMAND  (work dir $WORK, results -> $OUT)"
log "machine: $NPROC cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ cluster
PORT=55433   # names the unix socket only; the server has no TCP listener
PGDATA=$WORK/data
SOCK=$WORK/run
mkdir -p "$SOCK"
chown -R postgres:postgres "$WORK" 2>/dev/null || true
chmod 755 "$RAW"
as_pg "$PGBIN/initdb" -D "$PGDATA" --auth=trust -U postgres -E UTF8 --locale=C.UTF-8 > "$RAW/initdb.log" 2>&1 ||
  die "initdb failed: $(tail -3 "$RAW/initdb.log")"
cat >> "$PGDATA/postgresql.conf" <<EOF

# --- bench/members.sh ---
listen_addresses = ''
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 50
shared_buffers = $SHARED
synchronous_commit = on
max_wal_size = 4GB
checkpoint_timeout = 30min
# row counters move only with the measured calls
autovacuum = off
jit = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/server.log" -w -t 120 start > /dev/null ||
  die "server failed to start: $(tail -5 "$WORK/server.log")"
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
psql_db() { timeout 1800 "${PSQL[@]}" -d bench "$@"; }
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench" || die "createdb failed"
psql_db -c "CREATE EXTENSION progressdb" || die "CREATE EXTENSION progressdb failed"
[ "$(psql_db -At -c "SELECT to_regproc('progressdb.test_sqlstate_of') IS NULL")" = t ] ||
  die "the installed progressdb is a test build (left by cargo pgrx test); run: cargo pgrx install --release"
for f in list_threads add_member mark_read get_thread list_messages post_message; do
  [ "$(psql_db -At -c "SELECT count(*) FROM pg_proc WHERE proname = '$f' AND pronamespace = 'progressdb'::regnamespace")" != 0 ] ||
    die "progressdb.$f() does not exist: the installed extension predates members (0.2)"
done
meta pg_settings "$(psql_db -At -c "SELECT string_agg(name || ' = ' || current_setting(name), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers','synchronous_commit','work_mem','random_page_cost')")"
log "cluster up, extension $(psql_db -At -c "SELECT extversion FROM pg_extension WHERE extname = 'progressdb'")"

# ------------------------------------------------------------------ load
log "loading: $THREADS threads, inbox_user and quiet_user in $INBOX each, flood $FLOOD, big $BIG members, long $LONG messages"
LOAD_T0=$(now) t0=$(now)
if ! run psql_db -v threads="$THREADS" -v stride="$STRIDE" -v flood="$FLOOD" -v recent="$RECENT" -v big="$BIG" \
     -v long="$LONG" -v seed="$SEED" -f "$BENCH_DIR/sql/members_dataset.sql" > "$RAW/load.log" 2>&1; then
  fail load dataset "$(tail -3 "$RAW/load.log" | tr '\n' ' ')"
  die "loading failed: $(tail -5 "$RAW/load.log")"
fi
meta load_s "$(elapsed "$t0" "$(now)")"

# Timeline clustering, as bench/run.sh does (a server with the background
# compactor has closed history in chunks).
HAS_COMPACT=$(psql_db -At -c "SELECT count(*) FROM pg_proc WHERE oid::regprocedure::text = 'progressdb.compact(integer,integer,interval)'")
if [ "$HAS_COMPACT" = 1 ]; then
  t0=$(now)
  for i in $(seq 1 200); do
    out=$(psql_db -At -c "SELECT progressdb.compact(max_threads => 500, min_age => '0 seconds')" 2> "$RAW/compact.err") ||
      { fail compaction all "$(tail -2 "$RAW/compact.err" | tr '\n' ' ')"; break; }
    [ "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["threads"])' "$out")" = 0 ] && break
  done
  meta storage "timelines compacted with progressdb.compact(min_age => '0') before measuring ($(elapsed "$t0" "$(now)") s)"
else
  meta storage "no progressdb.compact() in this extension: timelines as loaded"
fi
run psql_db -c "VACUUM ANALYZE" -c "CHECKPOINT" > /dev/null
log "loaded, compacted and analyzed in $(elapsed "$LOAD_T0" "$(now)") s"

psql_db -At > "$RAW/dataset.json" <<SQL || die "dataset statistics failed"
SELECT json_build_object(
  'threads', (SELECT count(*) FROM progressdb.threads),
  'messages', (SELECT count(*) FROM progressdb.messages),
  'memberships', (SELECT count(*) FROM progressdb.thread_members),
  'inbox_memberships', (SELECT count(*) FROM progressdb.thread_members WHERE user_id = 'inbox_user'),
  'quiet_memberships', (SELECT count(*) FROM progressdb.thread_members WHERE user_id = 'quiet_user'),
  'inbox_unread_threads', (SELECT count(*) FROM bench.inbox_unread() WHERE unread > 0),
  'inbox_capped', (SELECT count(*) FROM bench.inbox_unread() WHERE unread >= 1000),
  'big_members', (progressdb.get_thread('big') ->> 'member_count')::int,
  'small_members', (progressdb.get_thread('small') ->> 'member_count')::int,
  'long_messages', (SELECT count(*) FROM progressdb.messages WHERE thread = 'long'),
  'flood', '$FLOOD', 'stride', $STRIDE)
SQL
log "dataset: $(cat "$RAW/dataset.json")"
python3 - "$RAW/dataset.json" "$INBOX" "$BIG" "$NFLOOD" "$LONG" > "$RAW/load-check.txt" 2>&1 <<'PY' ||
import json, sys
d = json.load(open(sys.argv[1])); inbox, big, nflood, long_ = map(int, sys.argv[2:6])
bad = []
if d["inbox_memberships"] != inbox: bad.append(f"inbox_user has {d['inbox_memberships']} memberships, expected {inbox}")
if d["quiet_memberships"] != inbox: bad.append(f"quiet_user has {d['quiet_memberships']} memberships, expected {inbox}")
if d["big_members"] != big: bad.append(f"big has {d['big_members']} members, expected {big}")
if d["small_members"] != 1: bad.append(f"small has {d['small_members']} members, expected 1")
if d["inbox_capped"] != nflood: bad.append(f"{d['inbox_capped']} inbox threads report unread 1000, expected {nflood}")
if d["long_messages"] != long_: bad.append(f"long has {d['long_messages']} messages, expected {long_}")
if d["inbox_unread_threads"] <= nflood: bad.append("no inbox thread has a few unread messages")
print("; ".join(bad))
PY
  echo "the dataset check did not run: $(tail -1 "$RAW/load-check.txt")" > "$RAW/load-check.txt"
if [ -n "$(tr -d '[:space:]' < "$RAW/load-check.txt")" ]; then
  fail load_check dataset "$(cat "$RAW/load-check.txt")"
  log "dataset check FAILED: $(cat "$RAW/load-check.txt")"
else
  rec scenario=load_check name=dataset status=ok > /dev/null
fi

# ------------------------------------------------------------------ measurements
# explain_call NAME SQL [WARM] [EXTRA_JSON]: in one session, runs SQL WARM
# times unlogged, once under a plain EXPLAIN (ANALYZE, BUFFERS) (recorded, to
# compare totals), once with auto_explain logging nowhere (primes the
# catalog caches that explaining nested plans needs), and then the measured
# call: auto_explain logs every statement it executes (nested ones too) with
# actual rows and buffers, as JSON sent to the client (client_min_messages =
# log, with the call stack as CONTEXT). The measured call is call WARM + 3.
explain_call() {
  local name=$1 sql=$2 warm=${3:-$WARM} extra=${4:-} i
  local logf=$RAW/explain-$name.log ej=$RAW/explain-$name.json
  {
    echo "\\set SHOW_CONTEXT always"
    echo "LOAD 'auto_explain';"
    echo "SET auto_explain.log_min_duration = -1;"
    echo "SET auto_explain.log_analyze = on;"
    echo "SET auto_explain.log_buffers = on;"
    echo "SET auto_explain.log_timing = on;"
    echo "SET auto_explain.log_nested_statements = on;"
    echo "SET auto_explain.log_format = json;"
    for i in $(seq 1 "$warm"); do echo "$sql \\g /dev/null"; done
    echo "\\pset tuples_only on"
    echo "\\pset format unaligned"
    echo "\\o $ej"
    echo "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) $sql;"
    echo "\\o"
    # A first logged call, logged nowhere (debug5): explaining nested plans
    # reads catalogs once per session, and those reads would count in the
    # buffers of the statements around them.
    echo "SET auto_explain.log_level = debug5;"
    echo "SET auto_explain.log_min_duration = 0;"
    echo "$sql \\g /dev/null"
    echo "SET auto_explain.log_level = log;"
    echo "SET client_min_messages = log;"
    echo "$sql \\g /dev/null"
    echo "SET auto_explain.log_min_duration = -1;"
  } > "$RAW/explain-$name.sql"
  if run psql_db -f "$RAW/explain-$name.sql" > /dev/null 2> "$logf"; then
    "${MEMBERS[@]}" explain --log "$logf" --explain-json "$ej" --name "$name" --sql "$sql" --jsonl "$JSONL" \
      ${extra:+--extra "$extra"}
  else
    fail explain "$name" "$(grep -m1 'ERROR' "$logf" || tail -2 "$logf" | tr '\n' ' ')"
    log "  explain/$name: FAILED"
  fi
}

# pgb SCENARIO TARGET CLIENTS SCRIPT [pgbench -D args...] -> one record (via report.py)
pgb() {
  local scenario=$1 target=$2 clients=$3 script=$4; shift 4
  local prefix=$RAW/pgb-$scenario-$target-c$clients-r${ROUND:-1} jobs=$(( clients < NPROC ? clients : NPROC )) status=ok
  local envs=()
  [ -z "${PGB_OPTIONS:-}" ] || envs=(PGOPTIONS="$PGB_OPTIONS")
  run env "${envs[@]}" timeout $(( DURATION + 120 )) "$PGBIN/pgbench" -n -M prepared -c "$clients" -j "$jobs" -T "$DURATION" \
    -l --log-prefix="$prefix" "$@" -f "$BENCH_DIR/pgbench/$script" -h "$SOCK" -p "$PORT" -U postgres bench \
    > "$prefix.out" 2> "$prefix.err" || status=failed
  PGB_PREFIX=$prefix PGB_STATUS=$status
}
pgb_record() { # scenario target clients [extra json]
  local extra=${4:-}
  [ -n "$extra" ] || extra="{\"round\": ${ROUND:-1}}"
  "${REPORT[@]}" pgbench --jsonl "$JSONL" --scenario "$1" --target "$2" --clients "$3" --prefix "$PGB_PREFIX" \
    --status "$PGB_STATUS" --extra "$extra"
  rm -f "$PGB_PREFIX".[0-9]*
}

# --- inbox page
log "inbox page: auto_explain of list_threads(user, lim => 50)"
explain_call inbox_page1 "SELECT progressdb.list_threads('inbox_user', lim => 50)::text"
explain_call inbox_page1_first "SELECT progressdb.list_threads('inbox_user', lim => 50)::text" 0
read -r DEEP_ID DEEP_TS < <(psql_db -At -F ' ' -c "SELECT th.id, th.last_activity_ts
    FROM progressdb.thread_members mm JOIN progressdb.threads th ON th.id = mm.thread
   WHERE mm.user_id = 'inbox_user' AND th.deleted_ts IS NULL
   ORDER BY th.last_activity_ts DESC, th.id DESC OFFSET $(( DEEP - 1 )) LIMIT 1") || true
if [ -n "${DEEP_ID:-}" ]; then
  explain_call inbox_deep "SELECT progressdb.list_threads('inbox_user', lim => 50, before => '$DEEP_ID', before_ts => $DEEP_TS)::text"
else
  fail explain inbox_deep "no cursor thread at offset $DEEP"
fi
explain_call quiet_page1 "SELECT progressdb.list_threads('quiet_user', lim => 50)::text"
log "inbox page: pgbench, ${DURATION}s each"
ROUND=1
for c in 1 8; do
  pgb inbox inbox_user "$c" members_inbox.sql -D user=inbox_user
  pgb_record inbox inbox_user "$c"
done
pgb inbox quiet_user 1 members_inbox.sql -D user=quiet_user
pgb_record inbox quiet_user 1

# --- unread
log "unread: get_thread(t, 'inbox_user') with no, few and more than 1,000 unread messages"
psql_db -At -F ' ' > "$RAW/unread-threads.txt" <<SQL || fail unread pick "could not pick threads"
(SELECT thread, 'few' FROM bench.inbox_unread() WHERE unread BETWEEN 1 AND 3 ORDER BY activity DESC LIMIT 1)
UNION ALL
(SELECT thread, 'none' FROM bench.inbox_unread() WHERE unread = 0 ORDER BY activity DESC LIMIT 1)
UNION ALL
SELECT 'th' || (k * $STRIDE), 'flood' FROM generate_series(1, $NFLOOD) k;
SQL
while read -r th kind; do
  [ -n "$th" ] || continue
  reported=$(psql_db -At -c "SELECT progressdb.get_thread('$th', 'inbox_user') ->> 'unread'") || reported=null
  true_unread=$(psql_db -At -c "SELECT bench.true_unread('$th')") || true_unread=null
  explain_call "unread_$th" "SELECT progressdb.get_thread('$th', 'inbox_user')::text" "$WARM" \
    "{\"kind\": \"unread\", \"thread\": \"$th\", \"which\": \"$kind\", \"reported_unread\": ${reported:-null}, \"true_unread\": ${true_unread:-null}}"
done < "$RAW/unread-threads.txt"

# --- membership check on timeline pages
log "timeline pages of 'long': actor NULL vs a member"
MID=$(psql_db -At -c "SELECT id FROM progressdb.messages WHERE thread = 'long' AND seq = $(( LONG / 2 + 1 ))")
explain_call timeline_newest_service "SELECT progressdb.list_messages('long', 50)::text"
explain_call timeline_newest_member "SELECT progressdb.list_messages('long', 50, actor => 'long_member')::text"
explain_call timeline_history_service "SELECT progressdb.list_messages('long', 50, before => '$MID')::text"
explain_call timeline_history_member "SELECT progressdb.list_messages('long', 50, before => '$MID', actor => 'long_member')::text"

# --- posting to a 1,000-member thread vs a 1-member thread
# Row counters of thread_members, messages and threads and the WAL position
# before and after each run; the counters are read once every pgbench backend
# has reported (messages inserted >= posts made).
stats() {
  psql_db -At -F ' ' -c "SELECT
    (SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relid = 'progressdb.thread_members'::regclass),
    (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = 'progressdb.messages'::regclass),
    (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'progressdb.threads'::regclass),
    pg_current_wal_lsn() - '0/0'::pg_lsn"
}
post_run() { # target thread actor
  local target=$1 thread=$2 actor=$3 m0 i0 u0 w0 m1 i1 u1 w1 posts tx i extra
  read -r m0 i0 u0 w0 < <(stats)
  pgb post "$target" 1 members_post.sql -D thread="$thread" -D actor="$actor"
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$PGB_PREFIX.out")
  tx=${tx:-0}
  for i in $(seq 1 100); do
    read -r m1 i1 u1 w1 < <(stats)
    [ $(( i1 - i0 )) -ge "$tx" ] && break
    sleep 0.2
  done
  posts=$(( i1 - i0 ))
  if [ "$posts" -lt "$tx" ] || [ "$posts" = 0 ]; then
    extra="{\"round\": $ROUND}"
    fail post_stats "$target" "row counters did not catch up after the run: $posts of $tx posts counted"
  else
    extra=$(python3 -c "import json,sys; m,p,u,w,r=map(int,sys.argv[1:6]); print(json.dumps({'round': r,
      'members_rows': m, 'posts_counted': p, 'members_rows_per_post': m / p,
      'threads_upd_per_post': u / p, 'wal_bytes_per_post': round(w / p)}))" \
      $(( m1 - m0 )) "$posts" $(( u1 - u0 )) $(( w1 - w0 )) "$ROUND")
  fi
  pgb_record post "$target" 1 "$extra"
  if [ "$(( m1 - m0 ))" != 0 ]; then
    fail post_rows "$target" "$(( m1 - m0 )) thread_members rows written by $posts posts to $thread"
  fi
}
# With one client a post waits mostly for its commit's WAL flush, the same for
# both threads and, on a shared disk, noisy; synchronous_commit is off for
# these sessions so that the runs compare the work a post does.
log "posting: 1 client, ${DURATION}s, $ROUNDS round(s): big ($BIG members) vs small (1 member), synchronous_commit off"
PGB_OPTIONS="-c synchronous_commit=off"
for ROUND in $(seq 1 "$ROUNDS"); do
  if [ $(( ROUND % 2 )) = 1 ]; then order="big small"; else order="small big"; fi
  for t in $order; do
    if [ "$t" = big ]; then post_run big big "$BIG_ACTOR"; else post_run small small small_owner; fi
  done
done
ROUND=1 PGB_OPTIONS=""
# The same, exactly, inside one transaction (rolled back): this backend's
# own counters for 100 posts.
for t in big small; do
  actor=$([ "$t" = big ] && echo "$BIG_ACTOR" || echo small_owner)
  if out=$(psql_db -At -F ' ' 2> "$RAW/post-exact.err" <<SQL
BEGIN;
SELECT count(progressdb.post_message('$t', '$actor', bench.body(i, 9), actor => '$actor')) FROM generate_series(1, 100) i \g /dev/null
SELECT pg_stat_get_xact_tuples_inserted(c) + pg_stat_get_xact_tuples_updated(c) + pg_stat_get_xact_tuples_deleted(c),
       pg_stat_get_xact_tuples_inserted('progressdb.messages'::regclass),
       pg_stat_get_xact_tuples_updated('progressdb.threads'::regclass)
  FROM (SELECT 'progressdb.thread_members'::regclass::oid AS c) x;
ROLLBACK;
SQL
  ); then
    read -r m i u <<< "$out"
    rec scenario=post_rows_exact target="$t" status=ok posts=100 members_rows="$m" messages_ins="$i" threads_upd="$u"
    [ "$m" = 0 ] || fail post_rows_exact "$t" "$m thread_members rows written by 100 posts to $t"
  else
    fail post_rows_exact "$t" "$(tail -2 "$RAW/post-exact.err" | tr '\n' ' ')"
  fi
done

# ------------------------------------------------------------------ report
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta elapsed_s "$(python3 -c "print(round($(now) - $STARTED))")"
python3 - "$RAW/meta.kv" "$RAW/dataset.json" "$RAW/meta.json" <<'PY'
import json, sys
meta = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("\t")
    meta[k] = v
meta["smoke"] = meta.get("smoke") == "1"
for k in ("nproc", "warm_calls", "deep_offset", "duration_s", "rounds", "elapsed_s"):
    if meta.get(k, "").isdigit():
        meta[k] = int(meta[k])
try:
    meta["dataset"] = json.load(open(sys.argv[2]))
except (OSError, ValueError):
    pass
json.dump(meta, open(sys.argv[3], "w"), indent=1, sort_keys=True)
PY
rc=0
"${MEMBERS[@]}" report --jsonl "$JSONL" --meta "$RAW/meta.json" --json "$OUT/members.json" --md "$OUT/RESULTS.md" || rc=$?
nfail=$(grep -c '"status": "failed"' "$JSONL" || true)
log "results: $OUT/RESULTS.md (members section), $OUT/members.json ($(python3 -c "print(round($(now) - $STARTED))") s)$([ "$OUT_AUTO" = 1 ] && echo "; removed when the smoke run passes (--out DIR keeps them)")"
if [ "$nfail" -gt 0 ]; then
  log "FAILED: $nfail scenario(s) failed:"
  grep '"status": "failed"' "$JSONL" | python3 -c 'import json,sys; [print("  ", r.get("scenario"), r.get("name") or r.get("target") or "", r.get("error","")) for r in map(json.loads, sys.stdin)]'
  exit 1
fi
[ "$rc" = 0 ] || { log "FAILED: the report step failed (rc $rc)"; exit 1; }
exit 0
