#!/usr/bin/env bash
# Data lifecycle (release 0.2): what hard deletes cost, and what the
# erasure lock costs every append. See bench/README.md.
#
#   bench/lifecycle.sh          full run (~1 min on 2 cores): a 100,000-message thread, 200 threads
#                               of a user -> the "Lifecycle" section of bench/RESULTS.md and bench/lifecycle.json
#   bench/lifecycle.sh --smoke  10,000 messages, 1 s runs; results in a temp dir (removed when it
#                               passes); exits non-zero if a scenario fails
#
# Options: --duration SECONDS (each pgbench run; default 5, smoke 1)  --out DIR  --keep
#
# Server binaries from $PROGRESSDB_PG_BIN (default /usr/lib/postgresql/15/bin)
# with the progressdb extension installed there (cargo pgrx install --release).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGBIN=${PROGRESSDB_PG_BIN:-/usr/lib/postgresql/15/bin}
COMMAND=$(printf '%q ' "bench/lifecycle.sh" "$@")
COMMAND=${COMMAND% }

SMOKE=0 DURATION="" OUT="" KEEP=0
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
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
if [ "$SMOKE" = 1 ]; then LONG=10000 DURATION=${DURATION:-1}; else LONG=100000 DURATION=${DURATION:-5}; fi
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "--duration must be a positive integer" >&2; exit 2; }

NAME=pdblifecycle PORT=55439 SHARED=256MB
# shellcheck source=bench/lib/cluster.sh
. "$BENCH_DIR/lib/cluster.sh"
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT=$(mktemp -d /tmp/pdblifecycle-smoke-out.XXXXXX); OUT_AUTO=1; else OUT=$BENCH_DIR; fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log "lifecycle bench: $COMMAND"
start_cluster
log "cluster up in $WORK"

# ------------------------------------------------------------------ dataset
# `long`: LONG messages (and their events) written directly, compacted; eve: 10 messages in
# each of 200 threads shared with bob; a naive table for the append baseline.
t0=$(now)
psql_db > "$RAW/load.log" 2>&1 <<SQL || die "loading failed: $(tail -5 "$RAW/load.log")"
CREATE FUNCTION pg_temp.fill(t text, n integer) RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM progressdb.create_thread('alice', id => t);
    INSERT INTO progressdb.messages (thread, seq, id, author, ts, body, updated_ts)
    SELECT t, g, 'msg-' || t || '-' || g, CASE WHEN g % 2 = 0 THEN 'alice' ELSE 'bot' END,
           1700000000000000000 + g, jsonb_build_object('text', 'message ' || g || ' of ' || t), 1700000000000000000 + g
      FROM generate_series(1, n) g;
    UPDATE progressdb.threads SET last_seq = n WHERE id = t;
END \$\$;
SELECT pg_temp.fill('long', $LONG);
-- Its events, as the API would have made them (one message.created each).
INSERT INTO progressdb.feed_state DEFAULT VALUES ON CONFLICT DO NOTHING;
INSERT INTO progressdb.feed (pos, thread, type, ts, seq, entry)
SELECT m.seq, m.thread, 'message.created', m.ts, m.seq, progressdb._chunk_entry(m)
  FROM progressdb.messages m WHERE m.thread = 'long';
UPDATE progressdb.feed_state SET last_pos = $LONG;
SELECT pg_temp.fill('t' || i, 100) FROM generate_series(1, 20) i;
SELECT progressdb.create_thread('bob', id => 'e' || i), progressdb.add_member('e' || i, 'eve')
  FROM generate_series(1, 200) i;
SELECT progressdb.post_message('e' || (g % 200 + 1), 'eve', jsonb_build_object('text', 'eve says ' || g))
  FROM generate_series(1, 2000) g;
CREATE TABLE naive (thread text, seq bigserial, author text, body jsonb, ts bigint, PRIMARY KEY (thread, seq));
SQL
for i in $(seq 1 500); do
  out=$(psql_db -At -c "SELECT progressdb.compact(max_threads => 10, min_age => '0 seconds')->>'threads'")
  [ "$out" = 0 ] && break
done
# The feed as a running server keeps it: events numbered (the gateway and
# the background worker run the sequencer within milliseconds), the queue
# vacuumed (autovacuum is off here).
drain_feed() {
  for i in $(seq 1 1000); do
    left=$(psql_db -At -c "SELECT progressdb._sequence_events(); SELECT count(*) FROM progressdb.feed_queue" | tail -1)
    [ "$left" = 0 ] && break
  done
  psql_db -q -c "VACUUM ANALYZE progressdb.feed_queue" -c "VACUUM ANALYZE progressdb.feed" > /dev/null
}
drain_feed
psql_db -q -c "VACUUM ANALYZE" -c "CHECKPOINT" > /dev/null
log "loaded and compacted in $(elapsed "$t0" "$(now)") s"

# ------------------------------------------------------------------ scenarios
RESULTS=$RAW/results.tsv
: > "$RESULTS"
bench() {
  local name=$1 script=$RAW/$1.sql clients=${3:-1}
  printf '%s\n' "$2" > "$script"
  if ! run pgbench_db "$script" "$DURATION" "$clients" > "$RAW/$name.out" 2>&1; then
    die "$name failed: $(tail -3 "$RAW/$name.out")"
  fi
  local tps lat failed
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$RAW/$name.out" | tail -1)
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$RAW/$name.out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$RAW/$name.out")
  [ "${failed:-0}" = 0 ] || die "$name: $failed failed transactions"
  printf '%s\t%s\t%s\n' "$name" "$tps" "$lat" >> "$RESULTS"
  log "$name: $tps tps, $lat ms"
}
# one timed statement: name, SQL -> ms
timed() {
  local name=$1 ms
  ms=$(psql_db -At -c "\\timing on" -c "$2" 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1)
  [ -n "$ms" ] || die "$name failed"
  printf '%s\t0\t%s\n' "$name" "$ms" >> "$RESULTS"
  log "$name: $ms ms"
}
POST="\\set t random(1, 20)
SELECT progressdb.post_message_text('t' || :t, 'u' || :client_id, '{\"text\":\"hello there\"}');"
NAIVE="\\set t random(1, 20)
INSERT INTO naive (thread, author, body, ts) VALUES ('t' || :t, 'u' || :client_id, '{\"text\":\"hello there\"}', 0);"
bench naive_1 "$NAIVE" 1
# Appends as shipped and without the erasure lock (the function made a
# no-op), alternating over two rounds so that neither always runs on the
# bigger table.
LOCK_ON="CREATE OR REPLACE FUNCTION progressdb._share_user(user_id text) RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN PERFORM pg_advisory_xact_lock_shared(hashtext('progressdb.user'), hashtext(user_id)); END \$\$"
LOCK_OFF="CREATE OR REPLACE FUNCTION progressdb._share_user(user_id text) RETURNS void LANGUAGE plpgsql AS \$\$ BEGIN END \$\$"
appends() { psql_db -q -c "$2" > /dev/null; bench "$1_1_r$3" "$POST" 1; bench "$1_4_r$3" "$POST" 4; }
appends append "$LOCK_ON" 1
appends nolock "$LOCK_OFF" 1
appends nolock "$LOCK_OFF" 2
appends append "$LOCK_ON" 2
drain_feed
# Purging random messages of the compacted thread (their chunks re-cut).
bench purge_message "\\set n random(1, $LONG)
SELECT progressdb.purge_message(id) FROM progressdb.messages WHERE thread = 'long' AND seq >= :n ORDER BY seq LIMIT 1;"
# A retention batch of 500 of the oldest messages (what the worker runs).
psql_db -q -c "SELECT progressdb.update_thread('long', NULL, retention => '1 day')" > /dev/null
timed retention_batch "SELECT progressdb.apply_retention(500)"
timed erase_user "SELECT progressdb.erase_user('eve')"
timed purge_thread "SELECT progressdb.purge_thread('long')"
LEFT=$(psql_db -At -c "SELECT count(*) FROM progressdb.messages WHERE thread = 'long' OR author = 'eve'")
[ "$LEFT" = 0 ] || die "$LEFT messages of long/eve left after the purges"

# ------------------------------------------------------------------ report
python3 - "$RESULTS" "$OUT" "$COMMAND" "$LONG" "$DURATION" "$PGBIN" <<'PY'
import json, sys, datetime, os, subprocess
res, out, command, long_n, dur, pgbin = sys.argv[1:]
r = {}
for line in open(res):
    name, tps, ms = line.rstrip("\n").split("\t")
    r[name] = {"tps": float(tps), "ms": float(ms)}
# the two rounds of each append case, averaged
for case in ("append_1", "append_4", "nolock_1", "nolock_4"):
    a, b = r[case + "_r1"], r[case + "_r2"]
    r[case] = {"tps": (a["tps"] + b["tps"]) / 2, "ms": (a["ms"] + b["ms"]) / 2}
ver = subprocess.run([os.path.join(pgbin, "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
doc = {"command": command, "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
       "long_messages": int(long_n), "duration_s": int(dur), "results": r, "postgres": ver, "nproc": os.cpu_count()}
json.dump(doc, open(os.path.join(out, "lifecycle.json"), "w"), indent=1)
def tps(k): return f"{r[k]['tps']:.0f}/s ({r[k]['ms']:.3f} ms)"
md = ["<!-- lifecycle:begin -->", "## Lifecycle", "",
      f"`{command}` on {doc['date']} ({doc['nproc']} cores, {ver}); pgbench, {dur} s per run; appends: mean of two alternating rounds.", "",
      "| appends to 20 threads | 1 client | 4 clients |", "|---|---|---|",
      f"| naive table (raw INSERT, baseline) | {tps('naive_1')} | |",
      f"| post_message_text without the erasure lock | {tps('nolock_1')} | {tps('nolock_4')} |",
      f"| post_message_text (shared user lock, as shipped) | {tps('append_1')} | {tps('append_4')} |",
      f"| ratio with / without the lock | {r['append_1']['tps']/r['nolock_1']['tps']:.2f}x | {r['append_4']['tps']/r['nolock_4']['tps']:.2f}x |",
      f"| ratio shipped / naive | {r['append_1']['tps']/r['naive_1']['tps']:.2f}x | |",
      "",
      "| operation | time |", "|---|---|",
      f"| purge_message of a random message of a compacted {int(long_n):,}-message thread (1 client, mean) | {r['purge_message']['ms']:.2f} ms |",
      f"| apply_retention: one batch of 500 of that thread's oldest messages | {r['retention_batch']['ms']:.1f} ms |",
      f"| erase_user: 2,000 messages in 200 threads (scans all messages: no index by author) | {r['erase_user']['ms']:.1f} ms |",
      f"| purge_thread of the rest of the {int(long_n):,}-message thread, one transaction | {r['purge_thread']['ms']:.0f} ms |",
      "", "A retention batch locks only the rows it purges: appends to the same thread take the thread row, not those rows, so they do not wait for it.",
      "<!-- lifecycle:end -->"]
path = os.path.join(out, "RESULTS.md")
text = open(path).read() if os.path.exists(path) else ""
block = "\n".join(md)
if "<!-- lifecycle:begin -->" in text:
    a = text.index("<!-- lifecycle:begin -->"); b = text.index("<!-- lifecycle:end -->") + len("<!-- lifecycle:end -->")
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
print("\n".join(md))
PY
log "results: $OUT/RESULTS.md (lifecycle section), $OUT/lifecycle.json"
