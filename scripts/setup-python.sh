#!/usr/bin/env bash
# Installs what the langchain importer's integration test needs
# (gateway/tests/langchain.rs): Debian's python3 and python3-venv, and a
# virtualenv in .venv-langchain/ (git-ignored) holding the pinned packages of
# tests/langchain/requirements.txt (langchain-postgres, langchain-core,
# psycopg). Idempotent: a venv made from the same requirements is kept; a
# changed requirements file, or a broken venv, makes a new one.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-langchain
REQ=tests/langchain/requirements.txt
PY=/usr/bin/python3
PACKAGES=(python3 python3-venv)

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The venv records the requirements it was made from.
stamp="$VENV/requirements.installed"
# (written only after a complete install).
if [ -x "$VENV/bin/python" ] && cmp -s "$REQ" "$stamp" && "$VENV/bin/python" -c '' 2>/dev/null; then
  log "python venv for the langchain test present ($VENV)"
  exit 0
fi

log "creating $VENV with the pinned langchain-postgres (see $REQ)"
started=$(date +%s)
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --no-input --disable-pip-version-check --require-virtualenv -r "$REQ"
"$VENV/bin/python" -c 'import langchain_postgres, langchain_core, psycopg'
cp "$REQ" "$stamp"
log "python venv ready in $(( $(date +%s) - started ))s"
