#!/usr/bin/env bash
# The authorization matrix (gateway/tests/authz.rs) with its observed table
# written into docs/RELIABILITY.md (under RELIABILITY_DOC=1; see section.sh).
# Needs the extension installed (the README's test command does that).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp /tmp/pdbrel-authz.XXXXXX)
trap 'rm -f "$out"' EXIT
AUTHZ_MATRIX_OUT=$out cargo test -q -p progressdb-gateway --test authz -- --test-threads 1
{
  echo "## Authorization, exhaustively"
  echo
  echo "Every route of the OpenAPI document × every kind of caller, each cell on"
  echo "fresh data (a thread owned by alice with a reader, a member and an admin;"
  echo "\`{m}\` is alice's message — the owner's own — and \`{m2}\` mike's, someone"
  echo "else's), compared with the spec table in [AUTHZ.md](AUTHZ.md), which the"
  echo "test reads as its oracle. Re-run: \`bash tests/reliability/authz.sh\`"
  echo "(also part of the README's test command)."
  echo
  cat "$out"
} | bash tests/reliability/section.sh authz
