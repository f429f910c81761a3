# Shared start-up of the SQL benchmarks (sourced): a private PostgreSQL 15
# cluster in a temp dir under /tmp (unix socket only, run as the postgres
# user), database `bench` with the progressdb extension, removed on exit with
# every process started through `run`.
#
# The sourcing script sets NAME (temp dir prefix), PORT (names the socket),
# SHARED (shared_buffers), KEEP (1: keep the work dir), PGBIN, and optionally
# MAX_WAL (default 4GB) and PSQL_TIMEOUT (seconds, default 1800). It may call
# make_work first (WORK, the work dir, RAW, its raw logs, and SOCK, the socket dir, exist from then
# on), then start_cluster. It gets PSQL and psql_db, log/die, run (a command
# the exit trap can stop) and now/elapsed. A smoke run's results directory,
# OUT with OUT_AUTO=1, is removed on exit when the run passed (unless KEEP).

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "FATAL: $*" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" "$1" "$2"; }

WORK="" CHILD="" PGDATA="" OUT_AUTO=0
cluster_cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$CHILD" ]; then
    pkill -TERM -P "$CHILD" 2>/dev/null
    kill "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null
  fi
  if [ -n "$PGDATA" ] && [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  if [ "$OUT_AUTO" = 1 ] && [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    if [ "$rc" = 0 ] && [ "${KEEP:-0}" = 0 ]; then rm -rf "$OUT"; else log "smoke results kept in $OUT"; fi
  fi
  exit "$rc"
}
trap cluster_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background and waits, so that a signal reaches the
# trap at once and the trap can stop the command.
run() { "$@" & CHILD=$!; local rc=0; wait "$CHILD" || rc=$?; CHILD=""; return "$rc"; }

# The server binaries and the installed extension, then the work dir.
make_work() {
  for b in initdb pg_ctl psql pgbench postgres; do
    [ -x "$PGBIN/$b" ] || die "$PGBIN/$b missing (install postgresql-15 or set PROGRESSDB_PG_BIN)"
  done
  [ -f "$("$PGBIN/pg_config" --sharedir)/extension/progressdb.control" ] ||
    die "the progressdb extension is not installed in $("$PGBIN/pg_config" --sharedir) (cargo pgrx install --release)"
  WORK=$(mktemp -d "/tmp/$NAME.XXXXXX")
  chmod 755 "$WORK"
  RAW=$WORK/raw
  SOCK=$WORK/run
  mkdir -p "$RAW" "$SOCK"
}

start_cluster() {
  [ -n "$WORK" ] || make_work
  PGDATA=$WORK/data
  chown -R postgres:postgres "$WORK" 2>/dev/null || true
  as_pg "$PGBIN/initdb" -D "$PGDATA" --auth=trust -U postgres -E UTF8 --locale=C.UTF-8 > "$RAW/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -3 "$RAW/initdb.log")"
  cat >> "$PGDATA/postgresql.conf" <<CONF

listen_addresses = ''
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 50
shared_buffers = $SHARED
synchronous_commit = on
max_wal_size = ${MAX_WAL:-4GB}
checkpoint_timeout = 30min
autovacuum = off
jit = off
CONF
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/server.log" -w -t 120 start > /dev/null ||
    die "server failed to start: $(tail -5 "$WORK/server.log")"
  PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE bench" || die "createdb failed"
  psql_db -c "CREATE EXTENSION progressdb" || die "CREATE EXTENSION progressdb failed"
  if [ "$(psql_db -At -c "SELECT to_regproc('progressdb.test_sqlstate_of') IS NULL")" != t ]; then
    [ "${SMOKE:-0}" = 1 ] || die "the installed progressdb is a test build (left by cargo pgrx test); run: cargo pgrx install --release"
    log "note: a test build of the extension is installed (fine for a smoke run, not for numbers)"
  fi
}
psql_db() { timeout "${PSQL_TIMEOUT:-1800}" "${PSQL[@]}" -d bench "$@"; }
# pgbench on the bench database: pgbench_db SCRIPT SECONDS CLIENTS [more pgbench options]
pgbench_db() {
  local script=$1 secs=$2 clients=$3; shift 3
  timeout $(( secs + 120 )) "$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -n -M prepared \
    -c "$clients" -j "$clients" -T "$secs" -f "$script" "$@" bench
}
