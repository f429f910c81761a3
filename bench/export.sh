#!/usr/bin/env bash
# Export and import (release 0.2): the gateway's memory while it streams a
# 1,000,000-message thread as NDJSON over HTTP, export throughput over HTTP,
# and `progressdb import` throughput of that file into an empty database.
# See bench/README.md.
#
#   bench/export.sh            full run: one thread of 1,000,000 messages (every 10th edited
#                              once, every 7th with a reaction) -> the "Export and import"
#                              section of bench/RESULTS.md and bench/export.json
#   bench/export.sh --smoke    20,000 messages; results in a temp dir (removed when it passes);
#                              exits non-zero if a step fails
#
# Options: --messages N  --out DIR  --keep  --gateway PATH (the progressdb binary; default
# $CARGO_TARGET_DIR or target/, release, then debug, built with cargo when missing)
#
# Server binaries from $PROGRESSDB_PG_BIN (default /usr/lib/postgresql/15/bin)
# with the progressdb extension installed there (cargo pgrx install --release).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PGBIN=${PROGRESSDB_PG_BIN:-/usr/lib/postgresql/15/bin}
COMMAND=$(printf '%q ' "bench/export.sh" "$@")
COMMAND=${COMMAND% }

SMOKE=0 MESSAGES="" OUT="" KEEP=0 GATEWAY_BIN=""
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --messages) MESSAGES=$2; shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    --gateway) GATEWAY_BIN=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$SMOKE" = 1 ]; then MESSAGES=${MESSAGES:-20000}; else MESSAGES=${MESSAGES:-1000000}; fi
[[ $MESSAGES =~ ^[1-9][0-9]*$ ]] || { echo "--messages must be a positive integer" >&2; exit 2; }

NAME=pdbexport PORT=55438 SHARED=256MB
# shellcheck source=bench/lib/cluster.sh
. "$BENCH_DIR/lib/cluster.sh"
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT=$(mktemp -d /tmp/pdbexport-smoke-out.XXXXXX); OUT_AUTO=1; else OUT=$BENCH_DIR; fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log "export bench: $COMMAND"

# ------------------------------------------------------------------ gateway binary
if [ -z "$GATEWAY_BIN" ]; then
  target=${CARGO_TARGET_DIR:-$ROOT/target}
  for b in "$target/release/progressdb" "$target/debug/progressdb"; do
    if [ -x "$b" ]; then GATEWAY_BIN=$b; break; fi
  done
  if [ -z "$GATEWAY_BIN" ]; then
    log "building the gateway: cargo build --release -p progressdb-gateway"
    cargo build --release -p progressdb-gateway --manifest-path "$ROOT/Cargo.toml" >/dev/null 2>&1 ||
      die "the gateway failed to build (cargo build --release -p progressdb-gateway)"
    GATEWAY_BIN=$target/release/progressdb
  fi
fi
[ -x "$GATEWAY_BIN" ] || die "gateway binary $GATEWAY_BIN not found"
command -v curl >/dev/null || die "curl is not installed"
log "gateway: $GATEWAY_BIN"

start_cluster
log "cluster up in $WORK"

# ------------------------------------------------------------------ dataset
# One thread, written directly (the append path is measured elsewhere), with
# an earlier version for every 10th message and a reaction on every 7th.
t0=$(now)
psql_db > "$RAW/load.log" 2>&1 <<SQL || die "loading failed: $(tail -5 "$RAW/load.log")"
SELECT progressdb.create_thread('alice', 'Export bench', 'big');
SELECT progressdb.add_member('big', 'bob');
INSERT INTO progressdb.messages (thread, seq, id, author, ts, body, updated_ts, version, reactions)
SELECT 'big', g, 'msg-big-' || g, CASE WHEN g % 2 = 0 THEN 'alice' ELSE 'bob' END,
       1700000000000000000 + g * 1000,
       jsonb_build_object('text', 'message ' || g || ' of the export benchmark, with a little more text to be typical'),
       1700000000000000000 + g * 1000 + CASE WHEN g % 10 = 0 THEN 500 ELSE 0 END,
       CASE WHEN g % 10 = 0 THEN 2 ELSE 1 END,
       CASE WHEN g % 7 = 0 THEN '{"carol":"+1"}'::jsonb ELSE '{}'::jsonb END
  FROM generate_series(1, $MESSAGES) g;
INSERT INTO progressdb.message_versions (thread, seq, version, body, updated_ts)
SELECT 'big', g, 1, jsonb_build_object('text', 'first draft of ' || g), 1700000000000000000 + g * 1000
  FROM generate_series(10, $MESSAGES, 10) g;
UPDATE progressdb.threads SET last_seq = $MESSAGES WHERE id = 'big';
-- The members joined at the start (as usual; see README "Export and import"
-- for the import cost of members who joined after a long history).
UPDATE progressdb.thread_members SET joined_ts = 1700000000000000000 WHERE thread = 'big';
UPDATE progressdb.threads SET created_ts = 1699999999999999000, updated_ts = 1699999999999999000 WHERE id = 'big';
CREATE DATABASE bench_import;
VACUUM ANALYZE;
CHECKPOINT;
SQL
log "loaded $MESSAGES messages in $(elapsed "$t0" "$(now)") s"

# ------------------------------------------------------------------ gateway
gwport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env -u PROGRESSDB_API_FRONTEND_KEYS -u PROGRESSDB_API_BACKEND_KEYS -u PROGRESSDB_API_ADMIN_KEYS \
  PROGRESSDB_LOG_LEVEL=warn "$GATEWAY_BIN" --addr "127.0.0.1:$gwport" \
  --db "host=$SOCK port=$PORT user=postgres dbname=bench" > "$RAW/gateway.log" 2>&1 &
GW=$!
stop_gateway() { [ -z "$GW" ] || { kill "$GW" 2>/dev/null; wait "$GW" 2>/dev/null; GW=""; } || true; }
trap 'rc=$?; stop_gateway; (exit $rc); cluster_cleanup' EXIT
ready=0
for _ in $(seq 1 300); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$gwport/readyz" 2>/dev/null; then ready=1; break; fi
  kill -0 "$GW" 2>/dev/null || break
  sleep 0.1
done
[ "$ready" = 1 ] || { stop_gateway; die "gateway did not become ready: $(tail -3 "$RAW/gateway.log")"; }
AUTH=(-H "Authorization: Bearer sk_example")
GWPID=$GW
kb() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$GWPID/status"; }
# Warm up: one ordinary request, so the baseline includes a used connection.
curl -fsS -o /dev/null "${AUTH[@]}" "http://127.0.0.1:$gwport/v1/threads/big" || { stop_gateway; die "GET /v1/threads/big failed"; }
RSS_BEFORE=$(kb VmRSS) HWM_BEFORE=$(kb VmHWM)
log "gateway before the export: VmRSS $RSS_BEFORE kB, VmHWM $HWM_BEFORE kB"

# ------------------------------------------------------------------ export over HTTP
# Sample VmRSS while curl streams the export (to a file, for the import below).
SAMPLES=$RAW/rss.txt
: > "$SAMPLES"
( while kill -0 "$GWPID" 2>/dev/null; do kb VmRSS >> "$SAMPLES"; sleep 0.1; done ) &
SAMPLER=$!
FILE=$WORK/big.ndjson
t0=$(now)
code=$(curl -sS -o "$FILE" -w '%{http_code}' "${AUTH[@]}" "http://127.0.0.1:$gwport/v1/threads/big/export") ||
  { kill "$SAMPLER" 2>/dev/null; stop_gateway; die "the export request failed"; }
t1=$(now)
kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
RSS_AFTER=$(kb VmRSS) HWM_AFTER=$(kb VmHWM)
stop_gateway
[ "$code" = 200 ] || die "GET /v1/threads/big/export answered $code: $(head -c 300 "$FILE")"
EXPORT_S=$(elapsed "$t0" "$t1")
LINES=$(wc -l < "$FILE")
BYTES=$(stat -c %s "$FILE")
[ "$LINES" = $(( MESSAGES + 3 )) ] || die "the export has $LINES lines, expected $(( MESSAGES + 3 )) (thread, 2 members, messages)"
RSS_PEAK=$(sort -n "$SAMPLES" | tail -1)
log "export: $LINES records, $BYTES bytes in $EXPORT_S s; gateway VmRSS peak $RSS_PEAK kB (before $RSS_BEFORE), VmHWM $HWM_BEFORE -> $HWM_AFTER kB"

# ------------------------------------------------------------------ import
t0=$(now)
run env -u PROGRESSDB_MASTER_KEY_FILE PROGRESSDB_LOG_LEVEL=warn "$GATEWAY_BIN" import \
  --db "host=$SOCK port=$PORT user=postgres dbname=bench_import" "$FILE" \
  > "$RAW/import.out" 2> "$RAW/import.err" || die "import failed: $(tail -3 "$RAW/import.err")"
t1=$(now)
IMPORT_S=$(elapsed "$t0" "$t1")
SUMMARY=$(cat "$RAW/import.out")
[ "$SUMMARY" = "created $LINES, existing 0" ] || die "import summary: $SUMMARY (expected created $LINES, existing 0)"
IMPORTED=$("${PSQL[@]}" -d bench_import -At -c "SELECT count(*) FROM progressdb.messages WHERE thread = 'big'")
[ "$IMPORTED" = "$MESSAGES" ] || die "imported $IMPORTED messages, expected $MESSAGES"
VERSIONS=$("${PSQL[@]}" -d bench_import -At -c "SELECT count(*) FROM progressdb.message_versions WHERE thread = 'big'")
[ "$VERSIONS" = $(( MESSAGES / 10 )) ] || die "imported $VERSIONS versions, expected $(( MESSAGES / 10 ))"
log "import: $SUMMARY in $IMPORT_S s"
# A rerun skips everything (restartability), timed too.
t0=$(now)
run env PROGRESSDB_LOG_LEVEL=warn "$GATEWAY_BIN" import \
  --db "host=$SOCK port=$PORT user=postgres dbname=bench_import" "$FILE" > "$RAW/import2.out" 2> "$RAW/import2.err" ||
  die "second import failed: $(tail -3 "$RAW/import2.err")"
t1=$(now)
RERUN_S=$(elapsed "$t0" "$t1")
[ "$(cat "$RAW/import2.out")" = "created 0, existing $LINES" ] || die "second import: $(cat "$RAW/import2.out")"
log "rerun: $(cat "$RAW/import2.out") in $RERUN_S s"

# ------------------------------------------------------------------ report
python3 - "$OUT" "$COMMAND" "$MESSAGES" "$LINES" "$BYTES" "$EXPORT_S" "$IMPORT_S" "$RERUN_S" \
  "$RSS_BEFORE" "$RSS_PEAK" "$HWM_BEFORE" "$HWM_AFTER" "$PGBIN" <<'PY'
import json, sys, datetime, os, subprocess
(out, command, n, lines, nbytes, export_s, import_s, rerun_s,
 rss_before, rss_peak, hwm_before, hwm_after, pgbin) = sys.argv[1:]
n, lines, nbytes = int(n), int(lines), int(nbytes)
export_s, import_s, rerun_s = float(export_s), float(import_s), float(rerun_s)
rss_before, rss_peak, hwm_before, hwm_after = map(int, (rss_before, rss_peak, hwm_before, hwm_after))
ver = subprocess.run([os.path.join(pgbin, "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
doc = {"command": command, "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
       "messages": n, "records": lines, "bytes": nbytes, "export_s": export_s, "import_s": import_s,
       "import_rerun_s": rerun_s, "gateway_vmrss_before_kb": rss_before, "gateway_vmrss_peak_kb": rss_peak,
       "gateway_vmhwm_before_kb": hwm_before, "gateway_vmhwm_after_kb": hwm_after,
       "postgres": ver, "nproc": os.cpu_count()}
json.dump(doc, open(os.path.join(out, "export.json"), "w"), indent=1)
rate = lambda s: f"{n / s:,.0f} messages/s" if s > 0 else "n/a"
md = ["<!-- export:begin -->", "## Export and import", "",
      f"`{command}` on {doc['date']} ({doc['nproc']} cores, {ver}). One thread of {n:,} messages "
      "(every 10th with an earlier version, every 7th with a reaction), exported over HTTP by the release gateway "
      f"(`GET /v1/threads/big/export`, curl to a file: {lines:,} records, {nbytes / 1e6:,.1f} MB of NDJSON), "
      "then loaded into an empty database by `progressdb import` (500 records per transaction).", "",
      "| | |", "|---|---|",
      f"| gateway VmRSS before the export | {rss_before / 1024:,.1f} MiB |",
      f"| gateway VmRSS peak while streaming (sampled every 0.1 s) | {rss_peak / 1024:,.1f} MiB |",
      f"| gateway VmHWM before → after | {hwm_before / 1024:,.1f} → {hwm_after / 1024:,.1f} MiB |",
      f"| export over HTTP | {export_s:,.1f} s, {rate(export_s)}, {nbytes / 1e6 / export_s if export_s else 0:,.1f} MB/s |",
      f"| `progressdb import` | {import_s:,.1f} s, {rate(import_s)} |",
      f"| the same import again (every record `exists`) | {rerun_s:,.1f} s |",
      "",
      "The gateway's memory does not grow with the export: it fetches 500 rows at a time from a portal and "
      "holds at most a few batches in flight (`gateway/src/routes/export.rs`).",
      "<!-- export:end -->"]
path = os.path.join(out, "RESULTS.md")
text = open(path).read() if os.path.exists(path) else ""
block = "\n".join(md)
if "<!-- export:begin -->" in text:
    a = text.index("<!-- export:begin -->"); b = text.index("<!-- export:end -->") + len("<!-- export:end -->")
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
print("\n".join(md))
PY
log "results: $OUT/RESULTS.md (export section), $OUT/export.json"
