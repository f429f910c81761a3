#!/usr/bin/env bash
# Runs every reliability part, the long ones included, and rewrites their
# sections of docs/RELIABILITY.md. Takes about 30 minutes (the soak alone is
# 10). Needs what the README's test command installs (run it once first).
#   bash tests/reliability/run.sh [PART...]   parts: authz hostile restore crash fuzz soak
set -euo pipefail
cd "$(dirname "$0")/../.."
export RELIABILITY_DOC=1
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(authz hostile restore crash fuzz soak)
for p in "${parts[@]}"; do
  printf '\n==> reliability: %s (%s)\n' "$p" "$(date -u +%H:%M:%S)" >&2
  case $p in
    authz | hostile | restore | crash) bash "tests/reliability/$p.sh" ;;
    fuzz) bash tests/reliability/fuzz.sh ;;
    soak) bash bench/soak.sh ;;
    *) echo "unknown part $p (authz hostile restore crash fuzz soak)" >&2; exit 2 ;;
  esac
done
printf '\n==> reliability: done; see docs/RELIABILITY.md\n' >&2
