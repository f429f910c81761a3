#!/usr/bin/env bash
# Hostile input into every SQL function (tests/tests/hostile.rs) and every
# route (gateway/tests/hostile.rs), summarised into docs/RELIABILITY.md
# (under RELIABILITY_DOC=1; see section.sh). Needs the extension installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
sql=$(mktemp /tmp/pdbrel-hostile-sql.XXXXXX)
http=$(mktemp /tmp/pdbrel-hostile-http.XXXXXX)
trap 'rm -f "$sql" "$http"' EXIT
HOSTILE_REPORT=$sql cargo test -q -p progressdb-tests --test hostile
HOSTILE_REPORT=$http cargo test -q -p progressdb-gateway --test hostile
{
  echo "## Hostile input"
  echo
  echo "SQL metacharacters, format strings, paths, markup, unicode edge cases"
  echo "(bidi override, zero-width joiner sequence, combining marks, U+10FFFF),"
  echo "NUL bytes and control characters, 1 MB strings, JSON nested 10,000 deep,"
  echo "20,000 keys, numbers past every integer width. A value may be accepted"
  echo "(it is only data) or refused with a client error; it must never give a"
  echo "5xx, a panic, a lost connection, or a half-written change."
  echo "Re-run: \`bash tests/reliability/hostile.sh\` (both tests are part of the"
  echo "README's test command)."
  echo
  echo "Defect this found, fixed with its regression test (the SQL test itself):"
  echo "a message body nested more than 128 levels deep ended post_message,"
  echo "edit_message and import_record in an internal error (XX000: the JSON"
  echo "parser the extension reads bodies with stops at 128 levels). Bodies are"
  echo "now refused past 100 levels with 22023 (HTTP 400) before anything is"
  echo "written (\`_check_body\` in sql/messages.sql). Over HTTP the gateway's own"
  echo "parser already refused such bodies, so this reached SQL callers only."
  echo
  cat "$sql"
  echo
  cat "$http"
} | bash tests/reliability/section.sh hostile
