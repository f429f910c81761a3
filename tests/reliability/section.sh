#!/usr/bin/env bash
# Replaces one generated section of docs/RELIABILITY.md with standard input.
#   tests/reliability/section.sh NAME < body.md
# The section sits between "<!-- section:NAME -->" and "<!-- /section:NAME -->";
# a section not there yet is appended. Only the reliability scripts call this,
# and only when RELIABILITY_DOC=1 (tests/reliability/run.sh sets it): the quick
# runs inside the test command check the same things without touching the
# checkout.
set -euo pipefail
name=${1:?usage: section.sh NAME < body}
doc="$(cd "$(dirname "$0")/../.." && pwd)/docs/RELIABILITY.md"
body=$(cat)
if [ "${RELIABILITY_DOC:-0}" != 1 ]; then
  printf '%s\n' "$body" >&2
  exit 0
fi
python3 - "$doc" "$name" "$body" <<'PY'
import sys, re
doc, name, body = sys.argv[1], sys.argv[2], sys.argv[3]
begin, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
text = open(doc).read()
block = f"{begin}\n{body.strip()}\n{end}"
if begin in text and end in text:
    a = text.index(begin)
    b = text.index(end) + len(end)
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(doc, "w").write(text)
PY
