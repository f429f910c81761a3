#!/usr/bin/env bash
# Runs every ProgressDB test on a fresh machine: installs what is missing,
# runs the unit and in-database tests (cargo pgrx test), installs the
# extension into the system PostgreSQL 15, then the integration tests over
# real connections and real HTTP, then lint. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
step() { printf '\n==> %s\n' "$*" >&2; }
started=$(date +%s)

bash scripts/setup.sh

# pgrx's test clusters run as postgres (PostgreSQL refuses root) under a
# directory that user owns; pgrx makes and removes 15-<pid> in it.
PGRX_TEST_DATA=/tmp/progressdb-pgrx-test
if [ "$(id -u)" = 0 ]; then
  install -d -o postgres -g postgres -m 0700 "$PGRX_TEST_DATA"
  RUNAS=(--runas postgres --pgdata "$PGRX_TEST_DATA")
else
  RUNAS=()
fi

# The gateway's web pages are tested in a real headless browser: Debian's
# Chromium, driven by playwright-core (pinned in gateway/tests/browser).
if ! command -v chromium >/dev/null; then
  step "installing Chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
    || { "${SUDO[@]}" apt-get update -q && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
fi
if [ ! -d gateway/tests/browser/node_modules/playwright-core ]; then
  step "installing playwright-core for the browser tests"
  (cd gateway/tests/browser && npm ci --no-audit --no-fund)
fi

step "unit + in-database tests (cargo pgrx test)"
cargo pgrx test pg15 "${RUNAS[@]}"

step "installing the extension into PostgreSQL 15 (release build)"
# cargo pgrx test leaves a test build in the system folders; replace it.
cargo pgrx install --release --pg-config "$PG_CONFIG"

step "upgrade test (0.1.0 → current)"
bash tests/upgrade/run.sh

step "python venvs: langchain importer test (langchain-postgres), schema fuzzer (schemathesis), both pinned"
bash scripts/setup-python.sh

step "integration tests (real clusters, real connections, real HTTP)"
cargo test -p pgcluster -p progressdb-tests -p progressdb-gateway

step "schema-driven fuzzing of the gateway, quick (schemathesis, every role)"
bash tests/reliability/fuzz.sh --quick --no-build

step "benchmark smoke (every scenario once on a tiny dataset)"
bash bench/run.sh --smoke --no-build
bash bench/members.sh --smoke
bash bench/events.sh --smoke
bash bench/forks.sh --smoke
bash bench/search.sh --smoke
bash bench/context.sh --smoke
bash bench/lifecycle.sh --smoke
bash bench/export.sh --smoke
bash bench/soak.sh --smoke

step "lint"
bash scripts/gen-upgrade.sh --check
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "all tests passed in $(( $(date +%s) - started ))s"
