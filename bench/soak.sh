#!/usr/bin/env bash
# Soak: a long mixed load at half capacity with live subscribers. See bench/README.md.
#
#   bench/soak.sh              full run (~12 min): capacity of the mixed load (30 s, closed
#                              loop), then 10 minutes at half of it, open loop, with SSE
#                              subscribers connected throughout -> docs/soak.png,
#                              bench/soak.json and the "soak" section of docs/RELIABILITY.md
#                              (written only under RELIABILITY_DOC=1; otherwise printed)
#   bench/soak.sh --smoke      tiny: 4 s capacity, 15 s soak (~30 s once built); results in a
#                              temp dir (removed when it passes)
#
# Options: --minutes N (soak length; default 10)  --capacity-secs S  --sample S (seconds
#          between samples)  --warmup S (left out of the flatness check)  --fraction F (of
#          capacity; default 0.5)  --out DIR  --keep  --gateway PATH  --no-build
#
# Starts the gateway (release build; the smoke run uses whatever build is
# there) with its embedded PostgreSQL cluster in a temp dir under /tmp, rate
# limit off, and the load client soak-load (bench/sse-load); server binaries
# from $PROGRESSDB_PG_BIN (default /usr/lib/postgresql/15/bin) with the
# progressdb extension installed there. Samples the gateway's VmRSS and open
# files and PostgreSQL's connections (pg_stat_activity) every few seconds.
# Exits non-zero on any error (a non-2xx answer, a transport error, a
# dropped stream); the full run also when RSS or connections are not flat.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PGBIN=${PROGRESSDB_PG_BIN:-/usr/lib/postgresql/15/bin}
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
COMMAND=$(printf '%q ' "bench/soak.sh" "$@")
COMMAND=${COMMAND% }

# ------------------------------------------------------------------ options
SMOKE=0 MINUTES="" CAP_SECS="" SAMPLE="" WARMUP="" FRACTION=0.5 OUT="" KEEP=0 GATEWAY_BIN="" BUILD=1
usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --minutes) MINUTES=$2; shift ;;
    --capacity-secs) CAP_SECS=$2; shift ;;
    --sample) SAMPLE=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --fraction) FRACTION=$2; shift ;;
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
  DURATION=$(python3 -c "print(round(float('${MINUTES:-0.25}') * 60, 1))")
  CAP_SECS=${CAP_SECS:-4} SAMPLE=${SAMPLE:-1} WARMUP=${WARMUP:-3}
  THREADS=10 USERS=10 MEMBERS=3 GLOBAL_SUBS=1 CONCURRENCY=8 CONNECTIONS=16 PROFILE=any
else
  DURATION=$(python3 -c "print(round(float('${MINUTES:-10}') * 60, 1))")
  CAP_SECS=${CAP_SECS:-30} SAMPLE=${SAMPLE:-5} WARMUP=${WARMUP:-60}
  THREADS=100 USERS=50 MEMBERS=5 GLOBAL_SUBS=2 CONCURRENCY=32 CONNECTIONS=64 PROFILE=release
fi
for v in CAP_SECS SAMPLE WARMUP FRACTION DURATION; do
  [[ ${!v} =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "bad number for ${v,,}: ${!v}" >&2; exit 2; }
done
python3 -c "import sys; d, w = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if d > 0 and w < d else 1)" \
  "$DURATION" "$WARMUP" || { echo "the soak must be longer than its warm-up" >&2; exit 2; }
API_KEY=sk_bench
POOL=16
NPROC=$(nproc)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "FATAL: $*" >&2; exit 1; }

# ------------------------------------------------------------------ cleanup
WORK="" CHILD="" GW_PID="" SAMPLER_PID="" OUT_AUTO=0
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$CHILD" ]; then kill "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; fi
  if [ -n "$SAMPLER_PID" ]; then kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; fi
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
    if [ "$KEEP" = 1 ]; then log "kept $WORK (cluster data, logs, samples)"; else rm -rf "$WORK"; fi
  fi
  if [ "$OUT_AUTO" = 1 ] && [ -n "$OUT" ] && [ -d "$OUT" ]; then
    if [ "$rc" = 0 ] && [ "$KEEP" = 0 ]; then rm -rf "$OUT"; else log "smoke results kept in $OUT"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

run() { "$@" & CHILD=$!; local rc=0; wait "$CHILD" || rc=$?; CHILD=""; return "$rc"; }

# ------------------------------------------------------------------ checks, tools
for b in initdb pg_ctl postgres pg_config psql; do
  [ -x "$PGBIN/$b" ] || die "$PGBIN/$b missing (install postgresql-15 or set PROGRESSDB_PG_BIN)"
done
[ -f "$("$PGBIN/pg_config" --sharedir)/extension/progressdb.control" ] ||
  die "the progressdb extension is not installed in $("$PGBIN/pg_config" --sharedir) (cargo pgrx install --release)"
command -v curl >/dev/null || die "curl is needed"
if ! python3 -c 'import matplotlib' 2>/dev/null; then
  log "installing matplotlib (pip)"
  python3 -m pip install -q matplotlib >/dev/null 2>&1 ||
    python3 -m pip install -q --break-system-packages matplotlib >/dev/null 2>&1 ||
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-matplotlib >/dev/null 2>&1; } ||
    log "could not install matplotlib: no plot"
fi
NEED_FDS=$(( THREADS * 4 + 4096 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED_FDS" ]; then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
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
LOAD_BIN=$(pick soak-load)
[ -n "$GATEWAY_BIN" ] && [ -x "$GATEWAY_BIN" ] ||
  die "no gateway binary (cargo build --release -p progressdb-gateway, or --gateway PATH)"
[ -n "$LOAD_BIN" ] && [ -x "$LOAD_BIN" ] || die "no load client (cargo build --release -p progressdb-sse-load)"

# ------------------------------------------------------------------ work dir, output
WORK=$(mktemp -d /tmp/pdbsoak.XXXXXX)
chmod 755 "$WORK"
PNG_LINK=soak.png
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then
    OUT=$(mktemp -d /tmp/pdbsoak-smoke-out.XXXXXX); OUT_AUTO=1
    JSON_OUT=$OUT/soak.json PNG_OUT=$OUT/soak.png
  else
    JSON_OUT=$BENCH_DIR/soak.json PNG_OUT=$ROOT/docs/soak.png
  fi
else
  mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
  JSON_OUT=$OUT/soak.json PNG_OUT=$OUT/soak.png
fi
log "soak: $COMMAND  (work dir $WORK)"
log "machine: $NPROC cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
GW_NAME=${GATEWAY_BIN#"$ROOT"/}
[[ $GW_NAME != /* ]] || GW_NAME=$(basename "$(dirname "$GATEWAY_BIN")")/$(basename "$GATEWAY_BIN")
log "gateway: $GW_NAME, load client: $(basename "$(dirname "$LOAD_BIN")")/$(basename "$LOAD_BIN")"

# ------------------------------------------------------------------ gateway
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GW_PORT=$(free_port)
PG_PORT=$(free_port)   # names the cluster's unix socket only (no TCP listener)
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
env -i PATH="$PATH" HOME="$HOME" PROGRESSDB_PG_BIN="$PGBIN" \
  "$GATEWAY_BIN" --db "$WORK/db" --pg-port "$PG_PORT" --addr "127.0.0.1:$GW_PORT" \
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
SOCK=$(sed -n 5p "$WORK/db/postmaster.pid" 2>/dev/null || true)
[ -n "$SOCK" ] || SOCK=$WORK/db/run
log "gateway up on 127.0.0.1:$GW_PORT (pid $GW_PID, postmaster ${PG_PID:-?}, pool $POOL)"

# ------------------------------------------------------------------ sampler
# Every $SAMPLE s: time, PostgreSQL's client backends, those of the gateway
# (application_name), all backends, and the gateway's open files.
PG_SAMPLES=$WORK/pg-samples.tsv
: > "$PG_SAMPLES"
CONN_SQL="SELECT count(*) FILTER (WHERE backend_type = 'client backend'),
  count(*) FILTER (WHERE application_name = 'progressdb-gateway'), count(*)
  FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
sampler() {
  while kill -0 "$GW_PID" 2>/dev/null; do
    local t c fds
    t=$(date +%s.%N)
    c=$(timeout 10 "$PGBIN/psql" -X -At -F $'\t' -h "$SOCK" -p "$PG_PORT" -U postgres -d postgres -c "$CONN_SQL" 2>/dev/null || echo "")
    fds=$(ls "/proc/$GW_PID/fd" 2>/dev/null | wc -l)
    [ -z "$c" ] || printf '%s\t%s\t%s\n' "$t" "$c" "$fds" >> "$PG_SAMPLES"
    sleep "$SAMPLE"
  done
}
sampler &
SAMPLER_PID=$!

# ------------------------------------------------------------------ load
SAMPLES=$WORK/samples.jsonl
SUMMARY=$WORK/summary.json
LOAD_ARGS=(--base "http://127.0.0.1:$GW_PORT" --key "$API_KEY" --samples "$SAMPLES" --summary "$SUMMARY"
  --threads "$THREADS" --users "$USERS" --members "$MEMBERS" --global-subs "$GLOBAL_SUBS"
  --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" --capacity-secs "$CAP_SECS" --fraction "$FRACTION"
  --duration "$DURATION" --sample "$SAMPLE" --gateway-pid "$GW_PID")
[ -z "$PG_PID" ] || LOAD_ARGS+=(--postgres-pid "$PG_PID")
rc=0
run timeout "$(python3 -c "print(int($DURATION + $CAP_SECS + 300))")" "$LOAD_BIN" "${LOAD_ARGS[@]}" || rc=$?
[ "$rc" = 0 ] || die "the load client failed (exit $rc)"
kill -0 "$GW_PID" 2>/dev/null || die "the gateway died during the run: $(tail -5 "$WORK/gateway.log")"
kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
if grep -qiE 'error|panic' "$WORK/gateway.log"; then
  log "gateway log (warnings and errors):"; grep -iE 'warn|error|panic' "$WORK/gateway.log" | tail -10
fi

# ------------------------------------------------------------------ report
REPORT_ARGS=(--samples "$SAMPLES" --pg-samples "$PG_SAMPLES" --summary "$SUMMARY" --warmup "$WARMUP"
  --json "$JSON_OUT" --png "$PNG_OUT" --png-link "$PNG_LINK" --pool "$POOL"
  --meta command="$COMMAND" --meta date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" --meta nproc="$NPROC"
  --meta loadavg_start="$LOADAVG_START" --meta loadavg_end="$(cut -d' ' -f1-3 /proc/loadavg)"
  --meta cpu_model="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
  --meta memory="$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  --meta pg_version="$("$PGBIN/postgres" --version)" --meta gateway="$GW_NAME"
  --meta git="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) paths with uncommitted changes)")
[ "$SMOKE" = 0 ] || REPORT_ARGS+=(--smoke)
rc=0
python3 "$BENCH_DIR/lib/soak.py" "${REPORT_ARGS[@]}" > "$WORK/section.md" || rc=$?
# rc 0 passed, 1 failed (errors, or not flat), anything else: the report broke
[ "$rc" = 0 ] || [ "$rc" = 1 ] || die "the report failed (exit $rc)"
# a smoke run's numbers mean nothing: it only prints its section
[ "$SMOKE" = 0 ] || RELIABILITY_DOC=0
RELIABILITY_DOC=${RELIABILITY_DOC:-0} bash "$ROOT/tests/reliability/section.sh" soak < "$WORK/section.md"
log "results: $JSON_OUT, $PNG_OUT$([ "${RELIABILITY_DOC:-0}" = 1 ] && echo ", the soak section of docs/RELIABILITY.md")$([ "$OUT_AUTO" = 1 ] && echo "; removed when the smoke run passes (--out DIR keeps them)")"
[ "$rc" = 0 ] || die "the soak failed (see the section above)"
log "soak passed"
