//! Harness for the integration tests: a real PostgreSQL 15 cluster of its own
//! per test, with the installed `progressdb` extension created in it.
//!
//! The extension must already be installed into the system PostgreSQL
//! (`cargo pgrx install`), which the README's test command does first.

use pgcluster::Cluster;
use std::path::PathBuf;
use std::process::Command;
use tokio_postgres::{Client, NoTls};

pub struct TestCluster {
    pub cluster: Cluster,
    root: PathBuf,
}

impl TestCluster {
    /// Starts a fresh cluster under /tmp named after the test, with the
    /// extension created in database `postgres`.
    pub fn start(name: &str) -> TestCluster {
        Self::start_with(name, &[])
    }

    /// As `start`, with server settings (`-c name=value`) such as
    /// `shared_preload_libraries`.
    pub fn start_with(name: &str, settings: &[(&str, &str)]) -> TestCluster {
        let root = PathBuf::from(format!("/tmp/pdb-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create test root");
        // The server (running as postgres) writes dumps here too.
        set_mode(&root, 0o777);
        let mut cluster = Cluster::new(root.join("pg"), 5440).expect("cluster");
        for (k, v) in settings {
            cluster = cluster.with_setting(k, v);
        }
        cluster.init().expect("initdb");
        cluster.start().expect("start");
        cluster
            .psql("postgres", "CREATE EXTENSION progressdb")
            .expect("CREATE EXTENSION progressdb (is the extension installed?)");
        TestCluster { cluster, root }
    }

    /// A scratch directory the server user can write to.
    pub fn scratch(&self) -> PathBuf {
        self.root.clone()
    }

    /// Configures encryption as an operator does: a key file (`k1:<hex>`
    /// lines) readable by the server, `progressdb.master_key_file` and any
    /// further `settings` lines in postgresql.conf, then a restart. Returns
    /// the key file's path.
    pub fn with_master_key(&self, key_lines: &str, settings: &[&str]) -> PathBuf {
        use std::io::Write;
        let keys = self.scratch().join("master.keys");
        std::fs::write(&keys, format!("{}\n", key_lines.trim_end())).expect("write key file");
        set_mode(&keys, 0o644);
        let conf = self.cluster.data_dir().join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(conf)
            .expect("postgresql.conf");
        writeln!(f, "progressdb.master_key_file = '{}'", keys.display()).unwrap();
        for line in settings {
            writeln!(f, "{line}").unwrap();
        }
        self.cluster.stop().expect("stop");
        self.cluster.start().expect("start");
        keys
    }

    /// Runs a server tool (pg_dump, pg_restore) against this cluster as the
    /// server user; panics with its stderr when it fails. Returns stdout.
    pub fn tool(&self, name: &str, args: &[&str]) -> Vec<u8> {
        let cl = &self.cluster;
        let sock = cl.socket_dir().to_str().expect("utf-8 path").to_string();
        let port = cl.port().to_string();
        let out = cl
            .run_as_pg(
                Command::new(cl.bin(name))
                    .args(["-h", &sock, "-p", &port, "-U", "postgres"])
                    .args(args),
            )
            .expect(name);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `pg_dump -Fc` of `from`, restored with `pg_restore` into a new database `to`.
    pub fn dump_and_restore(&self, from: &str, to: &str) {
        let file = self.scratch().join(format!("{from}.dump"));
        let file = file.to_str().expect("utf-8 path");
        self.tool("pg_dump", &["-Fc", "-d", from, "-f", file]);
        self.cluster
            .psql("postgres", &format!("CREATE DATABASE {to}"))
            .expect("create database");
        self.tool("pg_restore", &["--exit-on-error", "-d", to, file]);
    }

    pub async fn connect(&self, db: &str) -> Client {
        let (client, conn) = tokio_postgres::connect(&self.cluster.conn_string(db), NoTls)
            .await
            .expect("connect");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn set_mode(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Calls a SQL function returning jsonb and parses it (via text, so no
/// binary-format concerns).
pub async fn call(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> serde_json::Value {
    let row = client
        .query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let text: String = row.get(0);
    serde_json::from_str(&text).expect("json")
}
