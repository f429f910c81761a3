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
  cat <<'MD'

Defects this found, fixed in the gateway, each with its regression test:

1. When the embedded postmaster died, nothing restarted it: the gateway
   answered 503 until someone restarted PostgreSQL by hand. The gateway now
   supervises its cluster (`gateway/src/db.rs`, `Supervisor`; a clean stop
   from outside is left alone); `crash_under_load` waits for the new
   postmaster. On the way: `pgcluster` took a killed but not yet reaped
   (zombie) postmaster for a running one, so a start was a no-op
   (`Cluster::state`, unit test `state_reads_the_lock_file_against_the_process_table`).
2. A gateway started just after its cluster's postmaster died (the two
   killed together) exited: `pg_ctl start` was refused while the old
   server's processes were still exiting, or the dying postmaster looked
   alive and did not answer. It now waits for them (bounded) and restarts
   PostgreSQL: `gateway_and_postgres_killed_together`.
3. SIGTERM reset connections already made: the kernel's backlog went with
   the closed socket, and hyper closed accepted connections it had not read
   yet (7 resets in 10 SIGTERMs under load before the fix, 0 after). The
   listener now takes the backlog before closing, and the server keeps
   serving for `--shutdown-grace` (500 ms): `sigterm_serves_connections_already_made`.
4. A database outage logged one warning per failed request (thousands a
   second); now one per 5 s with a count (unit test
   `outage_warnings_are_throttled`; `crash_under_load` bounds the log).
MD
  printf '\nRun on %s (%s cycles, %s writers, %s ms of load around each crash; %s s including the build).\n' \
    "$(date -u +%Y-%m-%d)" "$CRASH_CYCLES" "$CRASH_WRITERS" "$CRASH_LOAD_MS" "$took"
} | bash tests/reliability/section.sh crash
