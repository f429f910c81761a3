#!/usr/bin/env bash
# The quickstart: installs what is missing, builds and installs the extension
# into PostgreSQL 15, and starts the gateway on :8080 over an embedded
# PostgreSQL cluster in ./data (created on first start). Ctrl-C stops both.
# Extra arguments go to the gateway (see `progressdb --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
printf '==> %s\n' "building and installing the progressdb extension (release)" >&2
cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config
printf '==> %s\n' "building the gateway (release)" >&2
cargo build --release -p progressdb-gateway

cat >&2 <<'MSG'
==> starting ProgressDB on :8080 (data in ./data)
    try:  curl -X POST http://localhost:8080/v1/messages \
            -H "Authorization: Bearer pk_example" -H "Content-Type: application/json" \
            -d '{"thread":"general","author":"alice","body":{"text":"Hello"}}'
    psql: psql -h "$PWD/data/run" -p 5433 -U postgres
          then SELECT progressdb.post_message('general','alice','{"text":"Hello"}');
MSG
exec target/release/progressdb --db "${PROGRESSDB_DB:-./data}" "$@"
