#!/usr/bin/env bash
# Upgrade test: release 0.1.0 -> the current build, on data written by 0.1.0.
#
# 1. Copies Debian's PostgreSQL 15 into a scratch prefix (never touching the
#    system folders, which other test steps and people install into).
# 2. Builds 0.1.0 from its commit (a temporary git worktree) into the prefix,
#    fills a database through the 0.1.0 API and captures its documents.
# 3. Installs the current build into the prefix, runs ALTER EXTENSION
#    progressdb UPDATE, and checks: every document reads back the same (see
#    compare_docs.py), again after compacting anew, the new features work on
#    the old threads (features.sql), and the upgraded schema equals a fresh
#    install (schema.sql listings, diffed).
#
# Everything it creates outside the checkout is removed at the end, also on
# failure. Run as root or as a user with sudo (the cluster runs as postgres).
#
# Environment:
#   UPGRADE_TEST_FROM=<commit>  the old release (default: 21d7033, release 0.1.0)
#   UPGRADE_TEST_SELF=1         harness self-test: the "current" build is the old
#                               one; no UPDATE, no new-feature checks
#   UPGRADE_TEST_CURRENT=<dir>  source tree of the "current" build (default: this
#                               checkout)
#   UPGRADE_TEST_KEEP=1         keep the scratch directory (and stop nothing)
#                               for a look after a failure
set -euo pipefail
# Whatever is installed into the prefix must be readable by postgres.
umask 022

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

FROM_REV=${UPGRADE_TEST_FROM:-21d703307614c3f54b0cad536cb85bd1056bebcb}   # release 0.1.0
SELF=${UPGRADE_TEST_SELF:-0}
KEEP=${UPGRADE_TEST_KEEP:-0}
CURRENT_DIR=${UPGRADE_TEST_CURRENT:-$root}
# The current build uses the checkout's target directory (or the caller's
# CARGO_TARGET_DIR), where the test command's release install has just built
# it. The old release gets a directory of its own inside it: cargo names a
# path crate's cdylib without a hash (deps/libprogressdb.so), so an old build
# in the shared directory would overwrite the checkout's own dev build while
# cargo still counts that as fresh -- the next `cargo pgrx test` would then
# install the old extension. The price: pgrx is compiled once more, in the
# dev profile without debug info (a few minutes, then cached).
target_dir=${CARGO_TARGET_DIR:-$root/target}
old_target_dir=$target_dir/upgrade-old
current_target_dir=$target_dir
# Another source tree (UPGRADE_TEST_CURRENT) must not overwrite this
# checkout's release build either.
[ "$CURRENT_DIR" -ef "$root" ] || current_target_dir=$target_dir/upgrade-current
SYS_PG=/usr/lib/postgresql/15
SYS_SHARE=/usr/share/postgresql/15
PORT=5499   # only names the socket: the cluster listens on a private unix socket

started=$(date +%s)
step() { printf '==> upgrade test [%ss]: %s\n' "$(( $(date +%s) - started ))" "$*" >&2; }
die() { printf '==> upgrade test FAILED: %s\n' "$*" >&2; exit 1; }
# A failed check is reported at once and the others still run; the test
# fails at the end. (die is for failures that leave nothing to check.)
failures=()
check_failed() { printf '==> upgrade test CHECK FAILED: %s\n' "$*" >&2; failures+=("$*"); }

# The cluster runs as postgres (PostgreSQL refuses root); its files are
# postgres's. As root that is runuser, otherwise (a sudoer) sudo.
if [ "$(id -u)" = 0 ]; then
  as_root() { "$@"; }
  as_pg_here() { runuser -u postgres -- "$@"; }
else
  as_root() { sudo -n "$@"; }
  as_pg_here() { sudo -n -u postgres -- "$@"; }
fi
# From the scratch directory: postgres may not be able to enter the checkout.
as_pg() { (cd "$scratch" && as_pg_here "$@"); }

for tool in git cargo python3 diff; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
[ -x "$SYS_PG/bin/pg_config" ] && cargo pgrx --version >/dev/null 2>&1 \
  || die "PostgreSQL 15 or cargo-pgrx missing: run scripts/setup.sh first"

# --- scratch directory and cleanup ------------------------------------------

# Under /tmp whatever TMPDIR says: the socket path must stay short (< 108
# bytes) and postgres must be able to reach it. mktemp -d makes it 0700;
# postgres must traverse it to reach the prefix, the cluster and the socket.
scratch=$(mktemp -d /tmp/pdb-upg.XXXXXX)
chmod 755 "$scratch"
prefix=$scratch/pg
pg_bin=$prefix/lib/postgresql/15/bin
pgdata=$scratch/data
sock=$scratch/s
worktree=$scratch/old
out=$scratch/out   # captured documents, listings and logs
cluster_started=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$KEEP" = 1 ]; then
    step "kept $scratch (cluster: $([ "$cluster_started" = 1 ] && echo "running, socket $sock port $PORT" || echo stopped))"
    exit "$rc"
  fi
  if [ "$cluster_started" = 1 ]; then
    as_pg "$pg_bin/pg_ctl" -D "$pgdata" -m immediate -t 30 stop >/dev/null 2>&1 || true
  fi
  if [ -d "$worktree" ]; then
    git -C "$root" worktree remove --force "$worktree" >/dev/null 2>&1 || true
  fi
  as_root rm -rf "$scratch"
  git -C "$root" worktree prune || true
  if [ "$rc" = 0 ]; then
    step "passed in $(( $(date +%s) - started ))s"
  else
    printf '==> upgrade test failed (exit %s) after %ss\n' "$rc" "$(( $(date +%s) - started ))" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$out"
as_root install -d -o postgres -g postgres -m 0700 "$pgdata" "$sock"
# A run killed by SIGKILL leaves a stale worktree entry behind.
git worktree prune

# --- 1. the PostgreSQL prefix -----------------------------------------------

step "copying PostgreSQL 15 into a scratch prefix"
mkdir -p "$prefix/lib/postgresql" "$prefix/share/postgresql"
cp -a "$SYS_PG" "$prefix/lib/postgresql/15"
cp -a "$SYS_SHARE" "$prefix/share/postgresql/15"
# Start without any progressdb build that other steps put in the system
# folders: only what this test installs may be found.
rm -f "$prefix/lib/postgresql/15/lib"/progressdb*.so "$prefix/share/postgresql/15/extension"/progressdb*
pg_config=$pg_bin/pg_config
[ "$("$pg_config" --sharedir)" = "$prefix/share/postgresql/15" ] \
  || die "the copied PostgreSQL is not relocatable here ($pg_config --sharedir: $("$pg_config" --sharedir))"
extdir=$("$pg_config" --sharedir)/extension

# --- 2. build and install the old release -----------------------------------

step "building ${FROM_REV:0:7} (old release, dev profile) into the prefix"
if ! git cat-file -e "$FROM_REV^{commit}" 2>/dev/null; then
  # A shallow clone may lack the old release: fetch just that commit.
  git fetch --quiet --depth=1 origin "$FROM_REV" >/dev/null 2>&1 \
    || die "commit $FROM_REV (the old release) is not in this clone and could not be fetched"
fi
git worktree add --detach "$worktree" "$FROM_REV" >"$out/worktree.log" 2>&1 \
  || { cat "$out/worktree.log" >&2; die "git worktree add ${FROM_REV:0:7} failed"; }
# The dev profile without debug info: the fastest build. No incremental
# state (it would pile up, one per run, for a one-off build). --locked: build
# exactly the old release's Cargo.lock.
(cd "$worktree" && CARGO_TARGET_DIR="$old_target_dir" CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=0 \
  PGRX_BUILD_FLAGS=--locked \
  cargo pgrx install --pg-config "$pg_config") >"$out/build-old.log" 2>&1 \
  || { tail -n 40 "$out/build-old.log" >&2; die "building ${FROM_REV:0:7} failed (log above)"; }
old_version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$extdir/progressdb.control")
[ -f "$extdir/progressdb--$old_version.sql" ] || die "no install script for $old_version in the prefix"
step "installed progressdb $old_version from ${FROM_REV:0:7}"

# --- 3. a cluster of the prefix ---------------------------------------------

keyfile=$scratch/master.keys
printf 'upgrade-test-k1:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$keyfile"
chmod 600 "$keyfile"
as_root chown postgres "$keyfile"

as_pg "$pg_bin/initdb" -D "$pgdata" --auth=trust -U postgres -E UTF8 --locale=C.UTF-8 \
  >"$out/initdb.log" 2>&1 || { cat "$out/initdb.log" >&2; die "initdb failed"; }

start_cluster() {
  as_pg "$pg_bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
    -o "-c listen_addresses='' -k $sock -p $PORT -c progressdb.master_key_file=$keyfile" start >/dev/null \
    || { tail -n 30 "$pgdata/server.log" >&2; die "the cluster did not start"; }
  cluster_started=1
}
stop_cluster() {
  as_pg "$pg_bin/pg_ctl" -D "$pgdata" -w -t 60 -m fast stop >/dev/null \
    || die "the cluster did not stop"
  cluster_started=0
}

# run_psql <db> [args]: psql as postgres over the private socket (its
# directory is postgres's alone); -X: no ~/.psqlrc. Statements get a timeout
# so that a hang fails the test instead of stalling CI. Scripts go in on
# stdin and results come out on stdout: postgres needs no access to the
# checkout.
run_psql() {
  local db=$1; shift
  as_pg "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 \
    -d "host=$sock port=$PORT user=postgres dbname=$db connect_timeout=10 options='-c statement_timeout=300s'" "$@"
}
sql() { run_psql "$1" -At -c "$2"; }   # one value

step "starting a cluster (unix socket only)"
start_cluster

# --- 4. data written by the old release -------------------------------------

step "creating the extension at $old_version and filling it through its API"
run_psql postgres -c 'CREATE DATABASE upgraded' -c 'CREATE DATABASE fresh'
run_psql upgraded -c "CREATE EXTENSION progressdb VERSION '$old_version'"
run_psql upgraded <"$here/fill.sql" >"$out/fill.log" 2>&1 \
  || { tail -n 30 "$out/fill.log" >&2; die "filling the $old_version database failed"; }
step "$(sql upgraded "SELECT format('%s threads, %s messages, %s versions, %s timeline chunks, %s documents to compare',
         (SELECT count(*) FROM progressdb.threads), (SELECT count(*) FROM progressdb.messages),
         (SELECT count(*) FROM progressdb.message_versions), (SELECT count(*) FROM progressdb.message_chunks),
         (SELECT count(*) FROM public.upgrade_docs))")"

# Every registered document: "<n>\t<kind>\t<label>\t<document or ERROR code>".
capture() {
  run_psql upgraded -At -F $'\t' \
    -c 'SELECT n, kind, label, public.upgrade_try(query) FROM public.upgrade_docs ORDER BY n' >"$1"
}
capture "$out/docs-old.tsv"

# compare_docs <capture> <what failed>: against the old release's capture.
compare_docs() {
  if python3 "$here/compare_docs.py" "$out/docs-old.tsv" "$1" >"$1.compared"; then
    head -n 1 "$1.compared" >&2
  else
    head -n 50 "$1.compared" | cut -c1-1500 >&2
    check_failed "$2 (above)"
  fi
}

# --- 5. the current build, and the update -----------------------------------

stop_cluster
if [ "$SELF" = 1 ]; then
  step "SELF-TEST mode: the current build stays ${FROM_REV:0:7} ($old_version)"
else
  step "installing the current build (release) into the prefix"
  # The test command built the release just before (installing into the
  # system PostgreSQL), so this is mostly copying.
  (cd "$CURRENT_DIR" && CARGO_TARGET_DIR="$current_target_dir" cargo pgrx install --release --pg-config "$pg_config") \
    >"$out/build-new.log" 2>&1 \
    || { tail -n 40 "$out/build-new.log" >&2; die "building the current checkout failed"; }
fi
new_version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$extdir/progressdb.control")
start_cluster

if [ "$SELF" = 1 ]; then
  step "SELF-TEST mode: no ALTER EXTENSION UPDATE"
else
  step "ALTER EXTENSION progressdb UPDATE ($old_version -> $new_version)"
  [ "$new_version" != "$old_version" ] \
    || check_failed "the current build's default_version is still $old_version: nothing to upgrade to"
  run_psql upgraded -c 'ALTER EXTENSION progressdb UPDATE' >"$out/update.log" 2>&1 \
    || { cat "$out/update.log" >&2; die "ALTER EXTENSION progressdb UPDATE failed"; }
fi
got=$(sql upgraded "SELECT extversion FROM pg_extension WHERE extname = 'progressdb'")
[ "$got" = "$new_version" ] || check_failed "after the update the extension is at $got, not $new_version"

# --- 6. checks ----------------------------------------------------------------

step "comparing every document with its $old_version capture"
capture "$out/docs-new.tsv"
compare_docs "$out/docs-new.tsv" "documents changed by the upgrade"

step "compacting again with the current build, comparing again"
sql upgraded "SELECT progressdb.compact(min_run => 1, min_age => '0')" >/dev/null \
  || check_failed "compact() failed after the update"
[ "$(sql upgraded "SELECT count(*) FROM progressdb.message_chunks WHERE thread = 'busy'")" -ge 3 ] \
  || check_failed "compaction after the update made no timeline chunks for 'busy'"
capture "$out/docs-compacted.tsv"
compare_docs "$out/docs-compacted.tsv" "documents differ after compacting with the current build"

if [ "$SELF" = 1 ]; then
  step "SELF-TEST mode: new-feature checks skipped"
else
  step "new features on the old threads (members, roles, read state; encryption)"
  run_psql upgraded <"$here/features.sql" >"$out/features.log" 2>&1 \
    || { tail -n 20 "$out/features.log" >&2; check_failed "new features on old threads (above)"; }
fi

step "comparing the upgraded schema with a fresh install of $new_version"
run_psql fresh -c 'CREATE EXTENSION progressdb'
run_psql upgraded -At <"$here/schema.sql" >"$out/schema-upgraded.txt"
run_psql fresh -At <"$here/schema.sql" >"$out/schema-fresh.txt"
[ -s "$out/schema-fresh.txt" ] || die "the schema listing is empty"
if ! diff -u --label "fresh install of $new_version" --label "upgraded from $old_version" \
     "$out/schema-fresh.txt" "$out/schema-upgraded.txt" >"$out/schema.diff"; then
  cat "$out/schema.diff" >&2
  check_failed "the upgraded schema differs from a fresh install (diff above: - fresh, + upgraded)"
fi
printf '%s catalog facts compared\n' "$(wc -l <"$out/schema-fresh.txt")" >&2

if [ "${#failures[@]}" -gt 0 ]; then
  printf '==> upgrade test: %s check(s) failed:\n' "${#failures[@]}" >&2
  printf '      - %s\n' "${failures[@]}" >&2
  exit 1
fi
