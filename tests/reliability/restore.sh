#!/usr/bin/env bash
# Upgrade and restore under data: the 0.1.0 → current upgrade test
# (tests/upgrade/run.sh, on data written by 0.1.0) and the pg_dump/pg_restore
# round trips (tests/tests/dump_restore.rs, the second one on a database
# using every feature), summarised into docs/RELIABILITY.md (under
# RELIABILITY_DOC=1; see section.sh). Needs the extension installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
log=$(mktemp /tmp/pdbrel-restore.XXXXXX)
trap 'rm -f "$log"' EXIT
bash tests/upgrade/run.sh 2>&1 | tee "$log" >&2
facts=$(sed -n 's/^\([0-9]*\) catalog facts compared$/\1/p' "$log")
steps=$(grep -c '^==> upgrade test \[' "$log" || true)
cargo test -q -p progressdb-tests --test dump_restore 2>&1 | tee "$log" >&2
passed=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$log" | head -1)
{
  echo "## Upgrade and restore under data"
  echo
  echo "- **0.1.0 → $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)** (\`tests/upgrade/run.sh\`):"
  echo "  release 0.1.0 built from its commit, a database filled through its API"
  echo "  (threads, edits, replies, reactions, deletes, compacted chunks),"
  echo "  \`ALTER EXTENSION progressdb UPDATE\`; every document read back equal,"
  echo "  again after compacting anew, the 0.2 features working on the old"
  echo "  threads, and the upgraded schema equal to a fresh install: ${facts:-?}"
  echo "  catalog facts compared, $steps steps, passed."
  echo "- **pg_dump / pg_restore** (\`tests/tests/dump_restore.rs\`, ${passed:-?} tests"
  echo "  passed): a database with members and roles, read state, a late member,"
  echo "  edits, replies, reactions, a delete, a fork with a copy-on-write"
  echo "  snapshot, compacted chunks, events, and an encrypted thread indexed for"
  echo "  search is dumped and restored into a new database: every thread's"
  echo "  export, every inbox, every user's event feed, search results (plain and"
  echo "  encrypted) and a context window read back identical; the restored"
  echo "  database goes on (new posts land last, are found, raise new events)."
  echo
  echo "Re-run: \`bash tests/reliability/restore.sh\` (both are part of the"
  echo "README's test command)."
} | bash tests/reliability/section.sh restore
