#!/usr/bin/env bash
# Forks (release 0.2): the cost of forking a long thread against a short one,
# of reading a fork's pages against its source's, and of a change to a source
# row that a fork shares (copy-on-write). See bench/README.md.
#
#   bench/forks.sh            full run (~1.5 min on 2 cores): `long` with 100,000 messages,
#                             `short` with 10, `e0`/`e1` with 10,000 (e1 has one fork)
#                             -> the "Forks" section of bench/RESULTS.md and bench/forks.json
#   bench/forks.sh --smoke    10,000-message `long`, 1 s runs; results in a temp dir (removed
#                             when it passes); exits non-zero if a scenario fails
#
# Options: --duration SECONDS (each pgbench run; default 5, smoke 1)  --out DIR  --keep
#
# Server binaries from $PROGRESSDB_PG_BIN (default /usr/lib/postgresql/15/bin)
# with the progressdb extension installed there (cargo pgrx install --release).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PGBIN=${PROGRESSDB_PG_BIN:-/usr/lib/postgresql/15/bin}
COMMAND=$(printf '%q ' "bench/forks.sh" "$@")
COMMAND=${COMMAND% }

SMOKE=0 DURATION="" OUT="" KEEP=0
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
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
EDIT=10000

NAME=pdbforks PORT=55437 SHARED=256MB
# shellcheck source=bench/lib/cluster.sh
. "$BENCH_DIR/lib/cluster.sh"
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT=$(mktemp -d /tmp/pdbforks-smoke-out.XXXXXX); OUT_AUTO=1; else OUT=$BENCH_DIR; fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log "forks bench: $COMMAND"
start_cluster
log "cluster up in $WORK"

# ------------------------------------------------------------------ dataset
# Messages are written directly (the append path is measured elsewhere),
# then compacted as the background worker would.
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
SELECT pg_temp.fill('short', 10);
SELECT pg_temp.fill('e0', $EDIT);
SELECT pg_temp.fill('e1', $EDIT);
SQL
for i in $(seq 1 500); do
  out=$(psql_db -At -c "SELECT progressdb.compact(max_threads => 10, min_age => '0 seconds')->>'threads'")
  [ "$out" = 0 ] && break
done
psql_db -q <<SQL > /dev/null || die "forks for reading failed"
SELECT progressdb.fork_thread('long', 'msg-long-$(( LONG - 1 ))', id => 'lf');
SELECT progressdb.post_message('lf', 'alice', jsonb_build_object('text', 'own ' || g)) FROM generate_series(1, 10) g;
SELECT progressdb.fork_thread('e1', 'msg-e1-$EDIT', id => 'e1f');
VACUUM ANALYZE;
CHECKPOINT;
SQL
log "loaded and compacted in $(elapsed "$t0" "$(now)") s"

# ------------------------------------------------------------------ scenarios
RESULTS=$RAW/results.tsv
: > "$RESULTS"
# scenario name, pgbench script text: records tps and mean latency
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
rows() {
  psql_db -At -c "SELECT (SELECT count(*) FROM progressdb.messages) + (SELECT count(*) FROM progressdb.message_versions)
                       + (SELECT count(*) FROM progressdb.fork_snapshots) + (SELECT count(*) FROM progressdb.message_chunks)"
}
forks_of() { psql_db -At -c "SELECT count(*) FROM progressdb.threads WHERE fork_of = '$1'"; }

R0=$(rows)
bench fork_long "SELECT progressdb.fork_thread('long', 'msg-long-$(( LONG - 1 ))');"
bench fork_short "SELECT progressdb.fork_thread('short', 'msg-short-9');"
R1=$(rows)
N_FORKS=$(( $(forks_of long) + $(forks_of short) - 1 ))
[ "$R0" = "$R1" ] || die "forking wrote message, version, snapshot or chunk rows: $R0 -> $R1"
log "$N_FORKS forks made; message/version/snapshot/chunk rows before and after: $R0, $R1"

bench page_source "SELECT progressdb.list_messages_text('long', 50);"
bench page_fork "SELECT progressdb.list_messages_text('lf', 50);"
bench history_source "SELECT progressdb.list_messages_text('long', 50, before => 'msg-long-$(( LONG / 2 ))');"
bench history_fork "SELECT progressdb.list_messages_text('lf', 50, before => 'msg-long-$(( LONG / 2 ))');"
bench react_no_fork "\\set n random(1, $EDIT)
SELECT progressdb.add_reaction('msg-e0-' || :n, 'u' || :client_id, 'x');"
bench react_shared_with_fork "\\set n random(1, $EDIT)
SELECT progressdb.add_reaction('msg-e1-' || :n, 'u' || :client_id, 'x');"
SNAPS=$(psql_db -At -c "SELECT count(*) FROM progressdb.fork_snapshots WHERE fork = 'e1f'")
log "snapshots taken for e1f: $SNAPS"

# ------------------------------------------------------------------ report
python3 - "$RESULTS" "$OUT" "$COMMAND" "$LONG" "$N_FORKS" "$R0" "$R1" "$SNAPS" "$DURATION" "$PGBIN" <<'PY'
import json, sys, datetime, os, subprocess
res, out, command, long_n, n_forks, r0, r1, snaps, dur, pgbin = sys.argv[1:]
r = {}
for line in open(res):
    name, tps, lat = line.rstrip("\n").split("\t")
    r[name] = {"tps": float(tps), "ms": float(lat)}
ver = subprocess.run([os.path.join(pgbin, "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
doc = {"command": command, "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
       "long_messages": int(long_n), "forks_made": int(n_forks), "rows_before": int(r0), "rows_after": int(r1),
       "snapshots_e1f": int(snaps), "duration_s": int(dur), "results": r, "postgres": ver, "nproc": os.cpu_count()}
json.dump(doc, open(os.path.join(out, "forks.json"), "w"), indent=1)
def row(label, a, b, note=""):
    return f"| {label} | {r[a]['ms']:.3f} ms ({r[a]['tps']:.0f}/s) | {r[b]['ms']:.3f} ms ({r[b]['tps']:.0f}/s) | {r[b]['ms']/r[a]['ms']:.2f}x | {note} |"
md = ["<!-- forks:begin -->", "## Forks", "",
      f"`{command}` on {doc['date']} ({doc['nproc']} cores, {ver}); pgbench, 1 client, {dur} s per row, mean latency.",
      f"`long` has {int(long_n):,} messages, `short` 10; all timelines compacted.", "",
      "| | baseline | fork case | ratio | |", "|---|---|---|---|---|",
      row(f"fork_thread: 10-message source (baseline) vs {int(long_n):,}-message source", "fork_short", "fork_long",
          "O(1): same cost"),
      row("newest page of 50: source (chunks) vs fork", "page_source", "page_fork",
          "fork pages are read row by row"),
      row("history page of 50 in the middle: source vs fork", "history_source", "history_fork", ""),
      row("add_reaction on a random message: no fork vs shared with 1 fork", "react_no_fork", "react_shared_with_fork",
          f"{int(snaps):,} copy-on-write snapshots taken"),
      "",
      f"Rows written by {int(n_forks):,} forks in messages, message_versions, fork_snapshots and message_chunks: "
      f"{int(r1) - int(r0)} (before {int(r0):,}, after {int(r1):,}); each fork writes one thread row and one membership.",
      "<!-- forks:end -->"]
path = os.path.join(out, "RESULTS.md")
text = open(path).read() if os.path.exists(path) else ""
block = "\n".join(md)
if "<!-- forks:begin -->" in text:
    a = text.index("<!-- forks:begin -->"); b = text.index("<!-- forks:end -->") + len("<!-- forks:end -->")
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
print("\n".join(md))
PY
log "results: $OUT/RESULTS.md (forks section), $OUT/forks.json"
