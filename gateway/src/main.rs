//! `progressdb`: the HTTP gateway. Flags → config → database → serve.

mod app;
mod auth;
mod config;
mod db;
mod error;
mod feed;
mod import;
mod layers;
mod listener;
mod metrics;
mod ratelimit;
mod routes;
mod webhooks;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::serve::ListenerExt;

use clap::Parser;
use deadpool_postgres::Pool;

use crate::auth::KeyRing;
use crate::config::{Cli, Command, Config};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// Typing notices: one per second per user sustained, bursts of 5.
const TYPING_PER_SECOND: f64 = 1.0;
const TYPING_BURST: f64 = 5.0;

/// What every handler and middleware shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub keys: Arc<KeyRing>,
    pub limiter: Arc<RateLimiter>,
    pub metrics: Arc<Metrics>,
    pub dev_profile: bool,
    /// Live delivery of the event feed (SSE).
    pub feed: Arc<feed::Feed>,
    /// Typing notices per user.
    pub typing_limiter: Arc<RateLimiter>,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = cli.command.take();
    let cfg = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("progressdb: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log_level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("progressdb: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Import(args)) = command {
        return match rt.block_on(import::run(cfg, args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("progressdb import: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("progressdb: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let level = level.parse().unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

async fn run(cfg: Config) -> Result<(), String> {
    if cfg.dev_profile {
        // eprintln, not tracing: this must show whatever the log level.
        eprintln!(
            "\
             ******************************************************************\n\
             *  DEVELOPMENT PROFILE: no API keys configured.                  *\n\
             *  Using the example keys pk_example (frontend), sk_example      *\n\
             *  (backend) and admin_example (admin), and frontend requests    *\n\
             *  may name their user WITHOUT a signature. Never expose this.   *\n\
             *  Set PROGRESSDB_API_*_KEYS to turn this profile off.           *\n\
             ******************************************************************"
        );
    }
    // Bind first: a taken port should fail before we start a database.
    let listener = tokio::net::TcpListener::bind(&cfg.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.addr))?;
    let database = db::open(&cfg).await?;
    // The embedded cluster is ours: start it again if its postmaster dies.
    let supervisor = database.cluster.clone().map(db::Supervisor::start);
    let state = AppState {
        pool: database.pool.clone(),
        keys: Arc::new(KeyRing::new(&cfg.keys)),
        limiter: Arc::new(RateLimiter::new(cfg.rate_rps, cfg.rate_burst)),
        metrics: Arc::new(Metrics::default()),
        dev_profile: cfg.dev_profile,
        feed: Arc::new(feed::Feed::default()),
        typing_limiter: Arc::new(RateLimiter::new(TYPING_PER_SECOND, TYPING_BURST)),
    };
    tokio::spawn(feed::run(
        state.feed.clone(),
        database.pool.clone(),
        database.conn.clone(),
    ));
    let hooks =
        match webhooks::start(&cfg.webhooks, database.pool.clone(), state.metrics.clone()).await {
            Ok(h) => h,
            Err(e) => {
                if let Some(s) = supervisor {
                    s.stop().await;
                }
                db::stop_cluster(database.cluster).await;
                return Err(e);
            }
        };
    let feed = state.feed.clone();
    let stopping = Arc::new(AtomicBool::new(false));
    let app = app::router(state, &cfg).layer(axum::middleware::from_fn_with_state(
        stopping.clone(),
        listener::close_when_stopping,
    ));
    match listener.local_addr() {
        Ok(a) => tracing::info!("progressdb gateway listening on http://{a}"),
        Err(_) => tracing::info!("progressdb gateway listening on {}", cfg.addr),
    }
    // On SIGTERM: stop accepting (the connections the kernel already
    // accepted are still served, see listener.rs), serve what is on its way
    // for a moment, then let every in-flight request finish and stop.
    let (stop_accepting, stop_rx) = tokio::sync::watch::channel(false);
    let listener = listener::Draining::new(listener, stop_rx)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.addr))?
        // (tap_io: what gives the connections their peer address)
        .tap_io(|_| ());
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown({
        let feed = feed.clone();
        let grace = cfg.shutdown_grace;
        async move {
            shutdown_signal().await;
            stopping.store(true, Ordering::Relaxed);
            let _ = stop_accepting.send(true);
            tokio::time::sleep(grace).await;
            // Open event streams never end by themselves: end them, so the
            // server can finish its in-flight requests and stop.
            feed.shut_down();
            drop(stop_accepting);
        }
    })
    .await;
    tracing::info!("HTTP server stopped");
    hooks.stop().await;
    database.pool.close();
    if let Some(s) = supervisor {
        s.stop().await;
    }
    db::stop_cluster(database.cluster).await;
    served.map_err(|e| format!("server error: {e}"))
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
}
