#!/usr/bin/env bash
# Schema-driven fuzzing of the HTTP gateway: schemathesis (pinned, in
# .venv-fuzz/, made by scripts/setup-python.sh) generates requests from the
# gateway's own /openapi.json and sends them to a gateway started here (debug
# build, embedded cluster in a temp folder, keys configured, a free loopback
# port), once per role: frontend (signed user), backend acting as a user,
# backend as the trusted service, admin. Fails on any 5xx, on any error that
# is not application/json {"error":"…"}, and on any response the document does
# not describe (status, content type, body schema).
#
#   tests/reliability/fuzz.sh [--quick] [--no-build]
#
# --no-build: use the debug gateway binary as it is (scripts/test.sh: the
# integration tests have just built it).
# --quick: a few hundred requests (the one in scripts/test.sh, < 2 minutes).
# Without it: the full run (≥ 5,000 requests, ~10 minutes), whose summary goes
# to docs/RELIABILITY.md through tests/reliability/section.sh when
# RELIABILITY_DOC=1. FUZZ_SEED=<n> and FUZZ_EXAMPLES=<n> (cases per operation
# and phase) override the defaults. Everything it creates is under one temp
# folder (/tmp/pdbfuzz.*), removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=0
build=1
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --no-build) build=0 ;;
    *) echo "usage: tests/reliability/fuzz.sh [--quick] [--no-build]" >&2; exit 2 ;;
  esac
done

log() { printf '==> fuzz: %s\n' "$*" >&2; }
# No bytecode caches next to the hooks in the checkout.
export PYTHONDONTWRITEBYTECODE=1

bash scripts/setup-python.sh fuzz
PY=$PWD/.venv-fuzz/bin/python

if [ "$build" = 1 ]; then
  log "building the gateway (debug)"
  cargo build -q -p progressdb-gateway
fi
target=${CARGO_TARGET_DIR:-target}
case "$target" in /*) ;; *) target=$PWD/$target ;; esac
bin=$target/debug/progressdb
[ -x "$bin" ] || { echo "fuzz: no gateway binary at $bin" >&2; exit 1; }

if [ "$quick" = 1 ]; then
  examples=${FUZZ_EXAMPLES:-2}
  phases=examples,fuzzing
  budget=120
  seed=${FUZZ_SEED:-20261201}
else
  examples=${FUZZ_EXAMPLES:-40}
  phases=examples,coverage,fuzzing
  budget=1500
  seed=${FUZZ_SEED:-$(( (RANDOM << 15) | RANDOM ))}
fi

work=$(mktemp -d /tmp/pdbfuzz.XXXXXX)
# As root the embedded cluster runs as postgres, which must reach the folder.
chmod 0755 "$work"
gw_pid=
cleanup() {
  local rc=$?
  if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
    # SIGTERM: the gateway stops serving, then stops its cluster cleanly.
    kill -TERM "$gw_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$gw_pid" 2>/dev/null || true
  fi
  if [ "$rc" != 0 ] && [ -f "$work/gateway.log" ]; then
    echo "--- gateway log (last lines) ---" >&2
    tail -n 40 "$work/gateway.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Encrypted threads are part of the API: a master key file (a fresh random
# test key) so that creating and reading them works as configured servers do.
"$PY" -c 'import secrets; print("fuzz1:" + secrets.token_hex(32))' >"$work/master.key"
chmod 0644 "$work/master.key"

# A port picked free can be taken before the gateway binds it: try again.
base=
for attempt in 1 2 3; do
  port=$(free_port)
  log "starting the gateway on 127.0.0.1:$port (attempt $attempt)"
  PROGRESSDB_API_FRONTEND_KEYS=pk_fuzz_front \
  PROGRESSDB_API_BACKEND_KEYS=sk_fuzz_back \
  PROGRESSDB_API_ADMIN_KEYS=adm_fuzz \
  PROGRESSDB_SIGNING_KEYS=sig_fuzz_secret \
  PROGRESSDB_RATE_RPS=0 \
  PROGRESSDB_LOG_LEVEL=warn \
  PROGRESSDB_MASTER_KEY_FILE="$work/master.key" \
    "$bin" --db "$work/db" --pg-port 5433 --addr "127.0.0.1:$port" \
    </dev/null >>"$work/gateway.log" 2>&1 &
  gw_pid=$!
  for _ in $(seq 1 240); do
    kill -0 "$gw_pid" 2>/dev/null || break
    if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$port/readyz" 2>/dev/null; then
      base=http://127.0.0.1:$port
      break
    fi
    sleep 0.5
  done
  [ -n "$base" ] && break
  kill -TERM "$gw_pid" 2>/dev/null || true
  wait "$gw_pid" 2>/dev/null || true
  gw_pid=
done
[ -n "$base" ] || { echo "fuzz: the gateway did not become ready" >&2; exit 1; }

rerun="bash tests/reliability/fuzz.sh"
[ "$quick" = 1 ] && rerun="$rerun --quick"
log "schemathesis: phases $phases, $examples cases per operation, seed $seed"
set +e
"$PY" tests/reliability/fuzz/run.py "$base" "$work" \
  --examples "$examples" --phases "$phases" --seed "$seed" --budget "$budget" \
  --summary "$work/summary.md" --rerun "$rerun"
rc=$?
set -e
if [ "$rc" != 0 ]; then
  echo "fuzz: FAILED (seed $seed; re-run with FUZZ_SEED=$seed $rerun)" >&2
  exit "$rc"
fi

if [ "$quick" = 1 ]; then
  log "quick run passed"
else
  bash tests/reliability/section.sh fuzz <"$work/summary.md"
  log "full run passed"
fi
