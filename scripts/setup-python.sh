#!/usr/bin/env bash
# Installs the Python tools some tests need: Debian's python3 and python3-venv,
# and one virtualenv per tool in the checkout (git-ignored), each holding the
# pinned packages of its requirements file:
#   langchain  .venv-langchain/  tests/langchain/requirements.txt
#              (langchain-postgres, for gateway/tests/langchain.rs)
#   fuzz       .venv-fuzz/       tests/reliability/fuzz/requirements.txt
#              (schemathesis, for tests/reliability/fuzz.sh)
#   scripts/setup-python.sh [langchain|fuzz]...   (default: all of them)
# Idempotent: a venv made from the same requirements is kept; a changed
# requirements file, or a broken venv, makes a new one.
set -euo pipefail
cd "$(dirname "$0")/.."

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

# venv NAME DIR REQUIREMENTS PYTHON-CHECK
venv() {
  local name=$1 dir=$2 req=$3 check=$4
  # The venv records the requirements it was made from
  # (written only after a complete install).
  local stamp="$dir/requirements.installed"
  if [ -x "$dir/bin/python" ] && cmp -s "$req" "$stamp" && "$dir/bin/python" -c "$check" 2>/dev/null; then
    log "python venv for $name present ($dir)"
    return 0
  fi
  log "creating $dir for $name (pinned in $req)"
  local started
  started=$(date +%s)
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/pip" install --quiet --no-input --disable-pip-version-check --require-virtualenv -r "$req"
  "$dir/bin/python" -c "$check"
  cp "$req" "$stamp"
  log "python venv for $name ready in $(( $(date +%s) - started ))s"
}

targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(langchain fuzz)
for t in "${targets[@]}"; do
  case "$t" in
    langchain)
      venv "the langchain importer test" .venv-langchain tests/langchain/requirements.txt \
        'import langchain_postgres, langchain_core, psycopg' ;;
    fuzz)
      venv "the schema fuzzer" .venv-fuzz tests/reliability/fuzz/requirements.txt \
        'import schemathesis' ;;
    *) echo "setup-python.sh: unknown venv '$t' (langchain, fuzz)" >&2; exit 2 ;;
  esac
done
