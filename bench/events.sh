#!/usr/bin/env bash
# Live event delivery (Server-Sent Events) through the gateway. See bench/README.md.
#
#   bench/events.sh            full run (~2.5 min on 2 cores): 1,000 SSE subscribers over
#                              100 threads (10 members each) while 500 messages/s are posted
#                              for 60 s -> the "Event delivery (SSE)" section of
#                              bench/RESULTS.md and bench/events.json
#   bench/events.sh --smoke    50 subscribers over 10 threads, 100 messages/s for 5 s (< 1 min
#                              once built); results in a temp dir (removed when it passes)
#
# Options: --threads N  --subs N (per thread)  --rate N (messages/s)  --duration S  --drain S
#          --out DIR  --keep  --gateway PATH (this gateway binary)  --no-build (never run cargo;
#          use binaries already in the target directory)
#
# Starts the gateway (release build; the smoke run uses whatever build is
# there, debug included) with its embedded PostgreSQL cluster in a temp dir
# under /tmp, rate limit off, and the load client bench/sse-load; server
# binaries from $PROGRESSDB_PG_BIN (default /usr/lib/postgresql/15/bin) with
# the progressdb extension installed there. Removes the cluster and stops
# every process it started on exit. Exits non-zero if any delivery was
# missed or repeated, a post failed or a subscriber could not connect.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PGBIN=${PROGRESSDB_PG_BIN:-/usr/lib/postgresql/15/bin}
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
COMMAND=$(printf '%q ' "bench/events.sh" "$@")
COMMAND=${COMMAND% }

# ------------------------------------------------------------------ options
SMOKE=0 THREADS="" SUBS="" RATE="" DURATION="" DRAIN="" OUT="" KEEP=0 GATEWAY_BIN="" BUILD=1
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --threads) THREADS=$2; shift ;;
    --subs) SUBS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --drain) DRAIN=$2; shift ;;
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
  THREADS=${THREADS:-10} SUBS=${SUBS:-5} RATE=${RATE:-100} DURATION=${DURATION:-5} DRAIN=${DRAIN:-10} PROFILE=any
else
  THREADS=${THREADS:-100} SUBS=${SUBS:-10} RATE=${RATE:-500} DURATION=${DURATION:-60} DRAIN=${DRAIN:-30} PROFILE=release
fi
for v in THREADS SUBS RATE DURATION DRAIN; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "--${v,,} must be a positive integer" >&2; exit 2; }
done
API_KEY=sk_bench
NPROC=$(nproc)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "FATAL: $*" >&2; exit 1; }

# ------------------------------------------------------------------ cleanup
WORK="" CHILD="" GW_PID="" OUT_AUTO=0
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$CHILD" ]; then kill "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; fi
  if [ -n "$GW_PID" ]; then
    # SIGTERM: the gateway stops its embedded cluster itself
    kill -TERM "$GW_PID" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$GW_PID" 2>/dev/null; wait "$GW_PID" 2>/dev/null
  fi
  if [ -n "$WORK" ] && [ -f "$WORK/db/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$WORK/db" -m immediate -w -t 30 stop >/dev/null 2>&1
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$KEEP" = 1 ]; then log "kept $WORK (cluster data, logs)"; else rm -rf "$WORK"; fi
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

# ------------------------------------------------------------------ checks
for b in initdb pg_ctl postgres pg_config; do
  [ -x "$PGBIN/$b" ] || die "$PGBIN/$b missing (install postgresql-15 or set PROGRESSDB_PG_BIN)"
done
[ -f "$("$PGBIN/pg_config" --sharedir)/extension/progressdb.control" ] ||
  die "the progressdb extension is not installed in $("$PGBIN/pg_config" --sharedir) (cargo pgrx install --release)"
command -v curl >/dev/null || die "curl is needed"

# Every subscriber is a socket in the gateway and one in the client.
NEED_FDS=$(( THREADS * SUBS * 2 + 512 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED_FDS" ]; then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$NEED_FDS" ] ||
    die "open files limit $(ulimit -n) < $NEED_FDS (raise it with ulimit -n)"
fi

# ------------------------------------------------------------------ binaries
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET = /* ]] || TARGET=$ROOT/$TARGET
if [ "$BUILD" = 1 ]; then
  command -v cargo >/dev/null || die "cargo not found (or pass --no-build)"
  if [ "$PROFILE" = release ]; then
    log "building: cargo build --release -p progressdb-gateway -p progressdb-sse-load"
    cargo build -q --release -p progressdb-gateway -p progressdb-sse-load --manifest-path "$ROOT/Cargo.toml" ||
      die "the build failed"
  else
    # the smoke run: a debug build is enough, and the gateway the test
    # command has just built (any profile) is used as it is
    pkgs=(-p progressdb-sse-load)
    [ -n "$GATEWAY_BIN" ] || [ -x "$TARGET/debug/progressdb" ] || [ -x "$TARGET/release/progressdb" ] ||
      pkgs+=(-p progressdb-gateway)
    log "building: cargo build ${pkgs[*]}"
    cargo build -q "${pkgs[@]}" --manifest-path "$ROOT/Cargo.toml" || die "the build failed"
  fi
fi
pick() { # name -> the newest fitting build of it
  local c
  if [ "$PROFILE" = release ]; then c=("$TARGET/release/$1"); else c=("$TARGET/release/$1" "$TARGET/debug/$1"); fi
  { ls -t "${c[@]}" 2>/dev/null || true; } | head -1
}
[ -n "$GATEWAY_BIN" ] || GATEWAY_BIN=$(pick progressdb)
LOAD_BIN=$(pick sse-load)
[ -n "$GATEWAY_BIN" ] && [ -x "$GATEWAY_BIN" ] ||
  die "no gateway binary (cargo build --release -p progressdb-gateway, or --gateway PATH)"
[ -n "$LOAD_BIN" ] && [ -x "$LOAD_BIN" ] || die "no load client (cargo build --release -p progressdb-sse-load)"

# ------------------------------------------------------------------ work dir, output
WORK=$(mktemp -d /tmp/pdbevents.XXXXXX)
chmod 755 "$WORK"
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT=$(mktemp -d /tmp/pdbevents-smoke-out.XXXXXX); OUT_AUTO=1; else OUT=$BENCH_DIR; fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log "events bench: $COMMAND  (work dir $WORK, results -> $OUT)"
log "machine: $NPROC cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
# named relative to the project, never by a machine's absolute path
GW_NAME=${GATEWAY_BIN#"$ROOT"/}
[[ $GW_NAME != /* ]] || GW_NAME=$(basename "$(dirname "$GATEWAY_BIN")")/$(basename "$GATEWAY_BIN")
log "gateway: $GW_NAME, load client: ${LOAD_BIN#"$ROOT"/}"

# ------------------------------------------------------------------ gateway
GW_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
POOL=16
env -i PATH="$PATH" HOME="$HOME" PROGRESSDB_PG_BIN="$PGBIN" \
  "$GATEWAY_BIN" --db "$WORK/db" --pg-port 55439 --addr "127.0.0.1:$GW_PORT" \
  --backend-keys "$API_KEY" --admin-keys admin_bench --rate-rps 0 --pool-size "$POOL" --log-level warn \
  > "$WORK/gateway.log" 2>&1 &
GW_PID=$!
ready=0
for _ in $(seq 1 240); do
  kill -0 "$GW_PID" 2>/dev/null || break
  if curl -sf -m 2 "http://127.0.0.1:$GW_PORT/readyz" > /dev/null; then ready=1; break; fi
  sleep 0.5
done
[ "$ready" = 1 ] || die "the gateway did not become ready: $(tail -5 "$WORK/gateway.log")"
PG_PID=$(head -1 "$WORK/db/postmaster.pid" 2>/dev/null || true)
[ -n "$PG_PID" ] || log "no postmaster.pid in $WORK/db: PostgreSQL CPU not measured"
log "gateway up on 127.0.0.1:$GW_PORT (pid $GW_PID, postmaster ${PG_PID:-?}, pool $POOL)"

# ------------------------------------------------------------------ load
NOTES="Method: the load client (bench/sse-load) creates the threads and members over HTTP, reads the feed's head, \
opens every stream with \`Last-Event-ID\` = that head (so no event written later can fall between connecting and \
the live feed), then posts; after the last post it waits until every subscriber has every message (at most \
${DRAIN} s) and 0.5 s more for duplicates. A delivery is matched by message id to the post that returned it; \
expected = every post answered 200 × the members of its thread. Latency uses the event's \`ts\` (Unix ns, \
written by the database when the message was written, i.e. before commit) against the client's receive time \
(same machine clock); it spans commit, sequencing into the feed, the gateway's fan-out and the client's read. \
CPU is from /proc/PID/stat (utime+stime) over the posting window, PostgreSQL summed over the postmaster and its \
children; RSS from /proc/PID/status VmRSS every second. The client shares the machine's cores with the gateway \
and PostgreSQL, so latency includes its scheduling."
LOAD_ARGS=(--base "http://127.0.0.1:$GW_PORT" --key "$API_KEY" --threads "$THREADS" --subs "$SUBS"
  --rate "$RATE" --duration "$DURATION" --drain "$DRAIN" --gateway-pid "$GW_PID"
  --json "$OUT/events.json" --md "$OUT/RESULTS.md"
  --meta command="$COMMAND" --meta date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" --meta nproc="$NPROC"
  --meta loadavg_start="$(cut -d' ' -f1-3 /proc/loadavg)"
  --meta cpu_model="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
  --meta pg_version="$("$PGBIN/postgres" --version)"
  --meta gateway="$GW_NAME" --meta pool_size="$POOL"
  --meta git="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) paths with uncommitted changes)"
  --meta notes="$NOTES")
[ -z "$PG_PID" ] || LOAD_ARGS+=(--postgres-pid "$PG_PID")
[ "$SMOKE" = 0 ] || LOAD_ARGS+=(--smoke)
rc=0
run timeout $(( DURATION + DRAIN + 600 )) "$LOAD_BIN" "${LOAD_ARGS[@]}" || rc=$?
kill -0 "$GW_PID" 2>/dev/null || { log "the gateway died during the run: $(tail -5 "$WORK/gateway.log")"; rc=1; }
if grep -qiE 'error|panic' "$WORK/gateway.log"; then
  log "gateway log (warnings and errors):"; grep -iE 'warn|error|panic' "$WORK/gateway.log" | tail -10
fi
log "results: $OUT/RESULTS.md (events section), $OUT/events.json$([ "$OUT_AUTO" = 1 ] && echo "; removed when the smoke run passes (--out DIR keeps them)")"
[ "$rc" = 0 ] || die "the events bench failed (load client exit $rc)"
log "events bench passed"
