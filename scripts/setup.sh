#!/usr/bin/env bash
# Installs everything ProgressDB needs to build and test on a Debian 12 machine,
# idempotently: Debian packages, cargo-pgrx (pinned), and pgrx's pointer to
# Debian's PostgreSQL 15. Safe to run again; each step is skipped when done.
set -euo pipefail

PGRX_VERSION=0.18.1
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PACKAGES=(build-essential postgresql-15 postgresql-server-dev-15 clang libclang-dev sudo pkg-config)

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
  # Do not let the package start its default cluster on 5432: we run our own.
  as_root mkdir -p /usr/sbin
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
    created_policy=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ "$created_policy" = 1 ] && as_root rm -f "$policy"
else
  log "Debian packages present"
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "installing cargo-pgrx $PGRX_VERSION (takes a few minutes the first time)"
  cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked
else
  log "cargo-pgrx $PGRX_VERSION present"
fi

if ! grep -qs "pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "pointing pgrx at Debian's PostgreSQL 15"
  cargo pgrx init --pg15 "$PG_CONFIG"
else
  log "pgrx already initialised for pg15"
fi
