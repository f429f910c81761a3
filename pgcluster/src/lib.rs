//! A private PostgreSQL 15 cluster living in one directory.
//!
//! The gateway's embedded mode (`--db ./data`) and the integration tests both
//! need the same thing: `initdb` on first use, start on a private unix socket,
//! stop cleanly. PostgreSQL refuses to run as root, so when we are root every
//! server command runs as the `postgres` user and the directory is handed to it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian installs PostgreSQL 15's server binaries.
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// unix socket paths must stay under 108 bytes; leave room for `/.s.PGSQL.NNNNN`.
const MAX_SOCKET_DIR_LEN: usize = 80;

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

/// Whether a cluster's postmaster runs, per [`Cluster::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No lock file: never started, or stopped cleanly (`pg_ctl stop`).
    Stopped,
    /// The postmaster with this pid is alive (0: pid not known).
    Running(u32),
    /// The lock file names a postmaster that is gone: it died without
    /// cleaning up (`kill -9`, the OOM killer, a crash). Starting it again
    /// runs crash recovery; it can only start once the old server's
    /// processes have all exited and the dead postmaster has been reaped.
    Died(u32),
}

/// True when process `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S …": the state follows the last ')' (comm may hold ')').
    match stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
    {
        Some(s) => s != "Z" && s != "X",
        None => true,
    }
}

/// A cluster in `data_dir`, reachable on a unix socket in `socket_dir`.
#[derive(Debug, Clone)]
pub struct Cluster {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    bin_dir: PathBuf,
    /// Extra `-c name=value` settings passed to the server on start.
    settings: Vec<(String, String)>,
}

impl Cluster {
    /// A cluster in `data_dir` (made absolute) listening on `port`'s socket.
    /// The socket lives in `data_dir/run` when that path is short enough,
    /// otherwise in a per-port directory under /tmp.
    pub fn new(data_dir: impl AsRef<Path>, port: u16) -> Result<Self> {
        let data_dir = absolute(data_dir.as_ref())?;
        let in_data = data_dir.join("run");
        let socket_dir = if in_data.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
            in_data
        } else {
            PathBuf::from(format!("/tmp/progressdb-{port}"))
        };
        let bin_dir = std::env::var_os("PROGRESSDB_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR));
        Ok(Cluster {
            data_dir,
            socket_dir,
            port,
            bin_dir,
            settings: Vec::new(),
        })
    }

    /// Adds a server setting (`-c name=value`) used from the next start on.
    pub fn with_setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A libpq/tokio-postgres connection string for database `db`.
    pub fn conn_string(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={}",
            self.socket_dir.display(),
            self.port,
            db
        )
    }

    /// True once `initdb` has run in the data directory.
    pub fn is_initialized(&self) -> bool {
        self.data_dir.join("PG_VERSION").exists()
    }

    /// Runs `initdb` unless the directory already holds a cluster.
    /// Returns whether it created one.
    pub fn init(&self) -> Result<bool> {
        if self.is_initialized() {
            return Ok(false);
        }
        if !self.bin("initdb").exists() {
            return Err(err(format!(
                "PostgreSQL 15 server binaries not found in {} (install postgresql-15, or set PROGRESSDB_PG_BIN)",
                self.bin_dir.display()
            )));
        }
        make_owned_dir(&self.data_dir, 0o700)?;
        let out = self.run_as_pg(
            Command::new(self.bin("initdb"))
                .arg("-D")
                .arg(&self.data_dir)
                .args([
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]),
        )?;
        check(out, "initdb")?;
        Ok(true)
    }

    /// True when a postmaster is running on this data directory.
    pub fn is_running(&self) -> bool {
        matches!(self.state(), State::Running(_))
    }

    /// What the data directory's lock file (`postmaster.pid`) says, checked
    /// against the process table. Unlike `pg_ctl status`, a postmaster that
    /// was killed and is now a zombie (its parent has not reaped it yet)
    /// counts as dead, not running.
    pub fn state(&self) -> State {
        let text = match std::fs::read_to_string(self.data_dir.join("postmaster.pid")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return State::Stopped,
            Err(_) => return self.pg_ctl_status(),
        };
        // The first line is the postmaster's pid (negative: a standalone backend).
        match text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i64>().ok())
        {
            Some(pid) if pid > 0 => {
                let pid = pid as u32;
                if process_alive(pid) {
                    State::Running(pid)
                } else {
                    State::Died(pid)
                }
            }
            // Being written right now, or not ours to judge: ask pg_ctl.
            _ => self.pg_ctl_status(),
        }
    }

    fn pg_ctl_status(&self) -> State {
        let running = self
            .run_as_pg(
                Command::new(self.bin("pg_ctl"))
                    .arg("-D")
                    .arg(&self.data_dir)
                    .arg("status"),
            )
            .map(|o| o.status.success())
            .unwrap_or(false);
        if running {
            State::Running(0)
        } else {
            State::Stopped
        }
    }

    /// Starts the server (no TCP listener; unix socket only) and waits until it
    /// accepts connections. Starting a running cluster is a no-op.
    pub fn start(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        make_owned_dir(&self.socket_dir, 0o755)?;
        let mut opts = format!(
            "-c listen_addresses='' -c port={} -c unix_socket_directories='{}'",
            self.port,
            self.socket_dir.display()
        );
        for (k, v) in &self.settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let log = self.data_dir.join("server.log");
        let out = self.run_as_pg(
            Command::new(self.bin("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
        )?;
        check(out, "pg_ctl start")
            .map_err(|e| {
                let tail = std::fs::read_to_string(&log)
                    .map(|s| {
                        s.lines()
                            .rev()
                            .take(10)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                err(format!("{e}\nserver log ({}):\n{tail}", log.display()))
            })
            .map(|_| ())
    }

    /// Fast shutdown (rolls back open transactions, checkpoints, exits).
    pub fn stop(&self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let out = self.run_as_pg(
            Command::new(self.bin("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-t", "60", "-m", "fast", "stop"]),
        )?;
        check(out, "pg_ctl stop").map(|_| ())
    }

    /// Runs a psql script against `db` as the superuser, failing on the first error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = self.run_as_pg(
            Command::new(self.bin("psql"))
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .arg("-h")
                .arg(&self.socket_dir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                    "-c",
                    sql,
                ]),
        )?;
        check(out, "psql").map(|s| s.trim().to_string())
    }

    /// Runs `cmd` as the `postgres` user when we are root, as ourselves otherwise.
    pub fn run_as_pg(&self, cmd: &mut Command) -> Result<Output> {
        let mut real = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(cmd.get_program())
                .args(cmd.get_args());
            c
        } else {
            let mut c = Command::new(cmd.get_program());
            c.args(cmd.get_args());
            c
        };
        real.current_dir("/");
        real.output()
            .map_err(|e| err(format!("cannot run {:?}: {e}", cmd.get_program())))
    }
}

fn check(out: Output, what: &str) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )))
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .map_err(|e| err(format!("cannot resolve {}: {e}", p.display())))
    }
}

pub fn is_root() -> bool {
    // SAFETY-free: read our uid from /proc instead of calling libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Creates `dir` (and parents) and, when root, hands it to `postgres`.
fn make_owned_dir(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err(format!("cannot chmod {}: {e}", dir.display())))?;
    if is_root() {
        let out = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir)
            .output()
            .map_err(|e| err(format!("cannot run chown: {e}")))?;
        check(out, "chown postgres")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_data_dirs_get_a_short_socket_dir() {
        let long = format!("/tmp/{}", "x".repeat(120));
        let c = Cluster::new(&long, 5999).unwrap();
        assert_eq!(c.socket_dir(), Path::new("/tmp/progressdb-5999"));
        let short = Cluster::new("/tmp/pdb", 5999).unwrap();
        assert_eq!(short.socket_dir(), Path::new("/tmp/pdb/run"));
    }

    #[test]
    fn conn_string_names_socket_port_and_db() {
        let c = Cluster::new("/tmp/pdb", 6001).unwrap();
        assert_eq!(
            c.conn_string("app"),
            "host=/tmp/pdb/run port=6001 user=postgres dbname=app"
        );
    }

    #[test]
    fn state_reads_the_lock_file_against_the_process_table() {
        let dir = std::env::temp_dir().join(format!("pgcluster-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = Cluster::new(&dir, 6003).unwrap();
        assert_eq!(c.state(), State::Stopped);
        // Our own pid is alive.
        let me = std::process::id();
        std::fs::write(
            dir.join("postmaster.pid"),
            format!("{me}\n{}\n", dir.display()),
        )
        .unwrap();
        assert_eq!(c.state(), State::Running(me));
        assert!(c.is_running());
        // A child that exited but is not reaped yet (a zombie) is dead.
        let mut child = Command::new("true").spawn().unwrap();
        let zombie = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(zombie) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::write(dir.join("postmaster.pid"), format!("{zombie}\n")).unwrap();
        assert_eq!(c.state(), State::Died(zombie));
        assert!(!c.is_running());
        child.wait().unwrap();
        // …and so is one that is gone altogether.
        assert_eq!(c.state(), State::Died(zombie));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_dirs_become_absolute() {
        let c = Cluster::new("data", 6002).unwrap();
        assert!(c.data_dir().is_absolute());
    }
}
