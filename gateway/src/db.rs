//! The connection pool, the embedded cluster, and the one way routes call SQL.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use pgcluster::Cluster;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use crate::config::{Config, DbTarget};
use crate::error::{json_ct, ApiError};

/// How long a request waits for a connection before answering 503.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// A running database: the pool, and the cluster when we started it ourselves.
pub struct Database {
    pub pool: Pool,
    /// The connection string (the event feed's LISTEN connection uses it).
    pub conn: String,
    pub cluster: Option<Cluster>,
}

/// Starts (embedded) or reaches (external) the database, and makes sure the
/// extension is installed in it.
pub async fn open(cfg: &Config) -> Result<Database, String> {
    let (conn, cluster) = match &cfg.db {
        DbTarget::External(s) => (s.clone(), None),
        DbTarget::Embedded { dir, port } => {
            // Preloaded so its background compactor keeps timelines clustered.
            let mut cluster = Cluster::new(dir, *port)
                .map_err(|e| e.to_string())?
                .with_setting("shared_preload_libraries", "progressdb");
            if let Some(keys) = &cfg.master_key_file {
                // Only the path travels; PostgreSQL reads the keys itself.
                let quoted = format!("'{}'", keys.display());
                cluster = cluster.with_setting("progressdb.master_key_file", &quoted);
            }
            let c = cluster.clone();
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                if c.init().map_err(|e| e.to_string())? {
                    tracing::info!(
                        "initialised a new PostgreSQL cluster in {}",
                        c.data_dir().display()
                    );
                }
                start_after_crash(&c)
            })
            .await
            .map_err(|e| e.to_string())??;
            tracing::info!(
                "embedded PostgreSQL running in {} (socket {}, port {})",
                cluster.data_dir().display(),
                cluster.socket_dir().display(),
                cluster.port()
            );
            (cluster.conn_string("postgres"), Some(cluster))
        }
    };
    let pool = match make_pool(&conn, cfg) {
        Ok(p) => p,
        Err(e) => {
            stop_cluster(cluster).await;
            return Err(e);
        }
    };
    // An embedded cluster found running may be a postmaster that is dying
    // right now (killed with the gateway): when it does not answer, make sure
    // it runs (start_after_crash restarts a dead one) and ask again, bounded.
    let deadline = std::time::Instant::now() + DEAD_POSTMASTER_WAIT;
    loop {
        match ensure_extension(&pool).await {
            Ok(()) => break,
            Err(ExtError::Unreachable(e))
                if cluster.is_some() && std::time::Instant::now() < deadline =>
            {
                tracing::warn!("the embedded PostgreSQL does not answer yet: {e}");
                tokio::time::sleep(RESTART_RETRY).await;
                if let Some(c) = cluster.clone() {
                    let started = tokio::task::spawn_blocking(move || start_after_crash(&c))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r);
                    if let Err(e) = started {
                        stop_cluster(cluster).await;
                        return Err(e);
                    }
                }
            }
            Err(e) => {
                stop_cluster(cluster).await;
                return Err(e.to_string());
            }
        }
    }
    Ok(Database {
        pool,
        conn,
        cluster,
    })
}

/// How long a start waits for a dead postmaster's processes to go away.
const DEAD_POSTMASTER_WAIT: Duration = Duration::from_secs(60);

/// Starts the cluster. When its postmaster died without cleaning up (the
/// gateway and PostgreSQL killed together, say), the old server's processes
/// may still be exiting and hold its lock file and shared memory for a
/// moment: keep trying (bounded) instead of giving up on the first refusal.
fn start_after_crash(c: &Cluster) -> Result<(), String> {
    let deadline = std::time::Instant::now() + DEAD_POSTMASTER_WAIT;
    loop {
        let dead = matches!(c.state(), pgcluster::State::Died(_));
        match c.start() {
            Ok(()) => return Ok(()),
            Err(e) if dead && std::time::Instant::now() < deadline => {
                tracing::warn!(
                    "the embedded PostgreSQL's last postmaster died; waiting for its processes to exit: {e}"
                );
                std::thread::sleep(RESTART_RETRY);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Stops the embedded cluster, if any (fast shutdown, waits for it).
pub async fn stop_cluster(cluster: Option<Cluster>) {
    if let Some(c) = cluster {
        tracing::info!("stopping embedded PostgreSQL");
        match tokio::task::spawn_blocking(move || c.stop()).await {
            Ok(Ok(())) => tracing::info!("embedded PostgreSQL stopped"),
            Ok(Err(e)) => tracing::error!("stopping embedded PostgreSQL: {e}"),
            Err(e) => tracing::error!("stopping embedded PostgreSQL: {e}"),
        }
    }
}

/// How often the supervisor looks at the embedded postmaster.
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// Pause between attempts to start a postmaster that died.
const RESTART_RETRY: Duration = Duration::from_secs(1);

/// Keeps the embedded cluster running: when its postmaster dies (`kill -9`,
/// the OOM killer, a crash; its lock file left behind), starts it again,
/// which runs PostgreSQL's crash recovery, retrying until the old server's
/// processes are gone. A cluster stopped cleanly (`pg_ctl stop`: no lock
/// file) was stopped on purpose and is left alone. Requests meanwhile get
/// 503; the pool reconnects by itself once the server is back.
pub struct Supervisor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    pub fn start(cluster: Cluster) -> Supervisor {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(supervise(cluster, rx));
        Supervisor { stop, task }
    }

    /// Stops watching (waits for a restart under way to finish, so the
    /// cluster can then be stopped).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn supervise(cluster: Cluster, mut stop: tokio::sync::watch::Receiver<bool>) {
    use pgcluster::State;
    let mut stopped_told = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stop.changed() => return,
        }
        let c = cluster.clone();
        let Ok(state) = tokio::task::spawn_blocking(move || c.state()).await else {
            continue;
        };
        match state {
            State::Running(_) => stopped_told = false,
            State::Stopped => {
                if !stopped_told {
                    tracing::warn!(
                        "embedded PostgreSQL was stopped from outside the gateway; not restarting it \
                         (requests answer 503 until it is started again)"
                    );
                    stopped_told = true;
                }
            }
            State::Died(pid) => {
                tracing::error!(
                    "embedded PostgreSQL died (postmaster pid {pid}); restarting it (crash recovery)"
                );
                let t0 = std::time::Instant::now();
                let mut attempt = 0u32;
                loop {
                    attempt += 1;
                    let c = cluster.clone();
                    let r = tokio::task::spawn_blocking(move || {
                        c.start().map_err(|e| e.to_string())?;
                        Ok::<_, String>(c.state())
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                    match r {
                        Ok(State::Running(_)) => {
                            tracing::warn!(
                                "embedded PostgreSQL restarted after {:.1}s ({attempt} attempt(s))",
                                t0.elapsed().as_secs_f64()
                            );
                            break;
                        }
                        Ok(other) => {
                            if attempt == 1 || attempt.is_multiple_of(10) {
                                tracing::warn!(
                                    "embedded PostgreSQL not restarted yet (attempt {attempt}): {other:?}"
                                );
                            }
                        }
                        Err(e) => {
                            // Typically: the old server's processes have not
                            // all exited yet, or its dead postmaster is not
                            // reaped yet (a zombie still holds the lock file).
                            if attempt == 1 || attempt.is_multiple_of(10) {
                                tracing::warn!(
                                    "embedded PostgreSQL not restarted yet (attempt {attempt}): {e}"
                                );
                            }
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(RESTART_RETRY) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }
}

pub fn make_pool(conn: &str, cfg: &Config) -> Result<Pool, String> {
    let mut pg: tokio_postgres::Config = conn
        .parse()
        .map_err(|e| format!("invalid database connection string: {e}"))?;
    if pg.get_application_name().is_none() {
        pg.application_name("progressdb-gateway");
    }
    // The database stops working on a request once the gateway has given up on it.
    let timeout = format!("-c statement_timeout={}", cfg.request_timeout.as_millis());
    let options = match pg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {timeout}"),
        _ => timeout,
    };
    pg.options(&options);
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(3));
    }
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(cfg.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .recycle_timeout(Some(POOL_WAIT))
        .build()
        .map_err(|e| format!("cannot build the connection pool: {e}"))
}

/// Why the extension could not be made sure of.
enum ExtError {
    /// No connection, or it broke: the server is not (yet) there.
    Unreachable(String),
    /// The server answered with an error.
    Failed(String),
}

impl std::fmt::Display for ExtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExtError::Unreachable(m) | ExtError::Failed(m) => f.write_str(m),
        }
    }
}

async fn ensure_extension(pool: &Pool) -> Result<(), ExtError> {
    let client = pool
        .get()
        .await
        .map_err(|e| ExtError::Unreachable(format!("cannot connect to the database: {e}")))?;
    match client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS progressdb")
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => {
            let Some(db) = e.as_db_error() else {
                return Err(ExtError::Unreachable(format!(
                    "cannot reach the database: {e}"
                )));
            };
            let detail = db.detail().map(|d| format!(" {d}")).unwrap_or_default();
            // PostgreSQL 15.x says 0A000 "extension … is not available" (older
            // minors: 58P01 "could not open extension control file").
            if matches!(db.code().code(), "0A000" | "58P01") {
                Err(ExtError::Failed(format!(
                    "the progressdb extension is not installed in this PostgreSQL server: {}.{detail}\n\
                     Install it into the server's PostgreSQL 15 (on that machine, from the repository root: \
                     `cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config`), \
                     then start the gateway again.",
                    db.message()
                )))
            } else if matches!(&db.code().code()[..2], "57" | "08" | "53") {
                // starting up, shutting down, connection trouble
                Err(ExtError::Unreachable(format!(
                    "the database is not ready: {}",
                    db.message()
                )))
            } else {
                Err(ExtError::Failed(format!(
                    "CREATE EXTENSION progressdb failed: {}{detail}",
                    db.message()
                )))
            }
        }
    }
}

/// One SQL function call with bound parameters. Positional arguments come
/// first; optional ones are passed by name and only when given, so the SQL
/// function's own defaults apply otherwise (the gateway repeats no default).
pub struct Call {
    func: &'static str,
    args: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
    named_started: bool,
}

impl Call {
    pub fn new(func: &'static str) -> Self {
        Call {
            func,
            args: Vec::new(),
            params: Vec::new(),
            named_started: false,
        }
    }

    fn push(&mut self, name: Option<&str>, cast: &str, v: Box<dyn ToSql + Sync + Send>) {
        self.params.push(v);
        let p = format!("${}::{cast}", self.params.len());
        match name {
            Some(n) => {
                self.named_started = true;
                self.args.push(format!("{n} => {p}"));
            }
            None => {
                debug_assert!(!self.named_started, "positional after named");
                self.args.push(p);
            }
        }
    }

    /// A positional text argument (NULL when `None`).
    pub fn text(mut self, v: Option<String>) -> Self {
        self.push(None, "text", Box::new(v));
        self
    }

    /// A positional jsonb argument given as JSON text (a JSON `null` stays a
    /// JSON null; `None` is SQL NULL).
    pub fn json(mut self, v: Option<String>) -> Self {
        self.push(None, "text::jsonb", Box::new(v));
        self
    }

    pub fn opt_text(mut self, name: &str, v: Option<String>) -> Self {
        if let Some(v) = v {
            self.push(Some(name), "text", Box::new(v));
        }
        self
    }

    pub fn opt_int(mut self, name: &str, v: Option<i32>) -> Self {
        if let Some(v) = v {
            self.push(Some(name), "int4", Box::new(v));
        }
        self
    }

    pub fn opt_bigint(mut self, name: &str, v: Option<i64>) -> Self {
        if let Some(v) = v {
            self.push(Some(name), "int8", Box::new(v));
        }
        self
    }

    /// A named jsonb argument given as JSON text (see [`Call::json`]): a JSON
    /// `null` reaches SQL as JSON null, which decides what it means.
    pub fn opt_json(mut self, name: &str, v: Option<String>) -> Self {
        if let Some(v) = v {
            self.push(Some(name), "text::jsonb", Box::new(v));
        }
        self
    }

    pub fn opt_bool(mut self, name: &str, v: Option<bool>) -> Self {
        if let Some(v) = v {
            self.push(Some(name), "bool", Box::new(v));
        }
        self
    }

    pub fn sql(&self, as_text: bool) -> String {
        format!(
            "SELECT progressdb.{}({}){}",
            self.func,
            self.args.join(", "),
            if as_text { "::text" } else { "" }
        )
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    /// Runs the call and answers 200 with the function's jsonb as the body,
    /// passed through as text (no re-serialisation).
    pub async fn json_response(self, pool: &Pool) -> Result<Response, ApiError> {
        let client = pool.get().await?;
        let stmt = client.prepare_cached(&self.sql(true)).await?;
        let row = client.query_one(&stmt, &self.refs()).await?;
        let body: Option<String> = row.try_get(0)?;
        let body = body.unwrap_or_else(|| "null".into());
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, json_ct())], body).into_response())
    }

    /// Runs a void call and answers 204.
    pub async fn no_content(self, pool: &Pool) -> Result<Response, ApiError> {
        let client = pool.get().await?;
        let stmt = client.prepare_cached(&self.sql(false)).await?;
        client.execute(&stmt, &self.refs()).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

/// Why `/readyz` is not ready.
#[derive(Debug)]
pub enum NotReady {
    NoExtension,
    /// Unreachable or not answering; the detail is for the log only.
    Unavailable(String),
}

/// The installed extension's version, or why there is none. Bounded by a
/// short timeout so `/readyz` answers quickly while the database is away.
pub async fn ext_version(pool: &Pool) -> Result<String, NotReady> {
    let un = |e: &dyn std::fmt::Display| NotReady::Unavailable(e.to_string());
    let q = async {
        let client = pool.get().await.map_err(|e| un(&e))?;
        let stmt = client
            .prepare_cached("SELECT extversion FROM pg_extension WHERE extname = 'progressdb'")
            .await
            .map_err(|e| un(&e))?;
        let row = client.query_opt(&stmt, &[]).await.map_err(|e| un(&e))?;
        match row {
            Some(r) => r.try_get::<_, String>(0).map_err(|e| un(&e)),
            None => Err(NotReady::NoExtension),
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), q).await {
        Ok(r) => r,
        Err(_) => Err(NotReady::Unavailable("no answer within 2s".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_sql_uses_named_optionals_only_when_given() {
        let c = Call::new("list_messages")
            .text(Some("t".into()))
            .opt_int("lim", Some(5))
            .opt_text("before", None)
            .opt_bool("include_deleted", Some(true))
            .opt_text("actor", Some("alice".into()));
        assert_eq!(
            c.sql(true),
            "SELECT progressdb.list_messages($1::text, lim => $2::int4, include_deleted => $3::bool, actor => $4::text)::text"
        );
        assert_eq!(c.refs().len(), 4);
        let d = Call::new("delete_thread").text(Some("t".into()));
        assert_eq!(d.sql(false), "SELECT progressdb.delete_thread($1::text)");
        let p = Call::new("post_message")
            .text(None)
            .text(None)
            .json(Some("null".into()));
        assert!(p.sql(true).contains("$3::text::jsonb"));
        let t = Call::new("list_threads")
            .text(None)
            .opt_json("metadata", Some(r#"{"a":1}"#.into()))
            .opt_bigint("before_ts", Some(7))
            .opt_json("nothing", None);
        assert_eq!(
            t.sql(true),
            "SELECT progressdb.list_threads($1::text, metadata => $2::text::jsonb, before_ts => $3::int8)::text"
        );
    }
}
