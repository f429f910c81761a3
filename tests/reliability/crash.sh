#!/usr/bin/env bash
# Crash under load, the long version: gateway/tests/crash.rs with more
# cycles and writers (the test command runs one cycle with 4 writers). Each
# cycle kills the embedded PostgreSQL postmaster twice (kill -9), kills the
# gateway (kill -9), and stops it with SIGTERM, all under concurrent writes,
# then checks every acknowledged write is there exactly once with its event
# and nothing is half-written. Writes its summary as the "crash" section of
# docs/RELIABILITY.md through section.sh (only under RELIABILITY_DOC=1;
# otherwise the summary goes to stderr).
#
#   bash tests/reliability/crash.sh                  # 10 cycles, 8 writers
#   CRASH_CYCLES=3 CRASH_WRITERS=4 bash tests/reliability/crash.sh
#   RELIABILITY_DOC=1 bash tests/reliability/crash.sh   # also rewrite the doc section
#
# Needs what the gateway's tests need: PostgreSQL 15 with the extension
# installed (scripts/test.sh does that).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CRASH_CYCLES=${CRASH_CYCLES:-10}
export CRASH_WRITERS=${CRASH_WRITERS:-8}
export CRASH_LOAD_MS=${CRASH_LOAD_MS:-2000}
report=$(mktemp /tmp/progressdb-crash-report.XXXXXX)
trap 'rm -f "$report"' EXIT
export CRASH_REPORT=$report
echo "crash: $CRASH_CYCLES cycles, $CRASH_WRITERS writers, ${CRASH_LOAD_MS} ms of load around each crash" >&2
started=$(date +%s)
cargo test -p progressdb-gateway --test crash -- --nocapture >&2
took=$(( $(date +%s) - started ))
[ -s "$report" ] || { echo "crash: the test wrote no report" >&2; exit 1; }
{
  cat "$report"
  printf '\nRun on %s (%s cycles, %s writers, %s ms of load around each crash; %s s including the build).\n' \
    "$(date -u +%Y-%m-%d)" "$CRASH_CYCLES" "$CRASH_WRITERS" "$CRASH_LOAD_MS" "$took"
} | bash tests/reliability/section.sh crash
