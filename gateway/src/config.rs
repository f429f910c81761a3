//! Flags, their environment twins, an optional config file, and the resolved
//! configuration the rest of the gateway runs on.
//!
//! Precedence, highest first: command-line flag, environment variable, config
//! file, built-in default. clap merges flag and environment; the config file
//! only fills what both left empty.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Keys the development profile starts with when nothing is configured, so the
/// original's quickstart works verbatim on a fresh start.
pub const DEV_FRONTEND_KEY: &str = "pk_example";
pub const DEV_BACKEND_KEY: &str = "sk_example";
pub const DEV_ADMIN_KEY: &str = "admin_example";

#[derive(Parser, Default, Clone)]
#[command(
    name = "progressdb",
    version,
    about = "ProgressDB HTTP gateway: the /v1 chat API on top of PostgreSQL + the progressdb extension"
)]
pub struct Cli {
    /// What to do; none: serve the HTTP API (the gateway).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file of KEY=VALUE lines using the environment variable names
    /// (`KEY = "value"` TOML style is accepted too).
    #[arg(long, env = "PROGRESSDB_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Listen address: `host:port`, `:port` (all interfaces) or a bare port. Default `:8080`.
    #[arg(long, env = "PROGRESSDB_ADDR")]
    pub addr: Option<String>,
    /// A directory (embedded PostgreSQL cluster kept there) or a connection
    /// string (`postgres://…` or `host=… dbname=…`). Default `./data`.
    #[arg(long, env = "PROGRESSDB_DB", global = true)]
    pub db: Option<String>,
    /// Port number naming the embedded cluster's unix socket (no TCP). Default 5433.
    #[arg(long, env = "PROGRESSDB_PG_PORT", global = true)]
    pub pg_port: Option<u16>,
    /// Comma-separated frontend (public) API keys.
    #[arg(long, env = "PROGRESSDB_API_FRONTEND_KEYS", hide_env_values = true)]
    pub frontend_keys: Option<String>,
    /// Comma-separated backend (secret) API keys.
    #[arg(long, env = "PROGRESSDB_API_BACKEND_KEYS", hide_env_values = true)]
    pub backend_keys: Option<String>,
    /// Comma-separated admin API keys.
    #[arg(long, env = "PROGRESSDB_API_ADMIN_KEYS", hide_env_values = true)]
    pub admin_keys: Option<String>,
    /// Comma-separated HMAC secrets for user signatures. Default: the backend keys.
    #[arg(long, env = "PROGRESSDB_SIGNING_KEYS", hide_env_values = true)]
    pub signing_keys: Option<String>,
    /// Comma-separated allowed CORS origins (`*` allows any). Default: none.
    #[arg(long, env = "PROGRESSDB_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// Sustained requests per second per API key (0 disables). Default 100.
    #[arg(long, env = "PROGRESSDB_RATE_RPS")]
    pub rate_rps: Option<String>,
    /// Burst size per API key. Default 200.
    #[arg(long, env = "PROGRESSDB_RATE_BURST")]
    pub rate_burst: Option<String>,
    /// Maximum request body: bytes, or with a K/KB/KiB/M/MB/MiB suffix. Default 100KiB.
    #[arg(long, env = "PROGRESSDB_MAX_BODY")]
    pub max_body: Option<String>,
    /// Request timeout: seconds, or with an ms/s/m suffix. Default 30s.
    #[arg(long, env = "PROGRESSDB_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// After SIGTERM, how long connections already made are still served
    /// before idle ones are closed: seconds, or with an ms/s/m suffix. Default 500ms.
    #[arg(long, env = "PROGRESSDB_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Database connection pool size. Default 16.
    #[arg(long, env = "PROGRESSDB_POOL_SIZE")]
    pub pool_size: Option<String>,
    /// Log level: error, warn, info, debug, trace. Default info.
    #[arg(long, env = "PROGRESSDB_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
    /// Embedded cluster only: the master key file for encrypted threads,
    /// handed to PostgreSQL as `progressdb.master_key_file`. The gateway
    /// itself never opens it.
    #[arg(long, env = "PROGRESSDB_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<String>,
    /// Webhook endpoint (http or https URL): every event is POSTed there,
    /// signed with --webhook-secret. Repeatable; commas separate URLs (write
    /// a comma inside one as %2C).
    #[arg(
        long = "webhook-url",
        env = "PROGRESSDB_WEBHOOK_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook_urls: Vec<String>,
    /// HMAC-SHA256 secret that signs every webhook POST (required with --webhook-url).
    #[arg(long, env = "PROGRESSDB_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
}

/// The subcommands. `progressdb` without one serves the HTTP API.
#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// Load an export (NDJSON records, as `GET /v1/threads/{id}/export` and
    /// `GET /admin/users/{user}/export` write them), or with --from-langchain
    /// a langchain-postgres chat-history table, into the database named
    /// by --db. Restartable: records already there are skipped, so after an
    /// interruption run the same command again.
    Import(ImportArgs),
}

/// `progressdb import` (gateway/src/import).
#[derive(Args, Clone, Debug)]
pub struct ImportArgs {
    /// The export file (NDJSON, one record per line); `-` reads standard input.
    #[arg(value_name = "FILE.ndjson", required_unless_present = "from_langchain")]
    pub file: Option<PathBuf>,
    /// Instead of a file: a langchain-postgres chat-history database
    /// (`postgres://…` or `host=… dbname=…`); each session becomes a thread
    /// `lc-<session id>` (README "Importing from langchain-postgres").
    #[arg(long, value_name = "POSTGRES_URL", conflicts_with = "file")]
    pub from_langchain: Option<String>,
    /// The chat-history table of --from-langchain (`schema.table` works too).
    #[arg(long, default_value = crate::import::langchain::DEFAULT_TABLE, requires = "from_langchain")]
    pub table: String,
    /// Records written per transaction (a rerun after an interruption
    /// starts again from the last committed batch).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq)]
pub enum DbTarget {
    /// The gateway runs its own cluster in this directory.
    Embedded { dir: PathBuf, port: u16 },
    /// An existing server, by connection string.
    External(String),
}

#[derive(Clone, Default, PartialEq)]
pub struct Keys {
    pub frontend: Vec<String>,
    pub backend: Vec<String>,
    pub admin: Vec<String>,
    pub signing: Vec<String>,
}

/// Counts only: key material must never reach a log line.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keys {{ frontend: {}, backend: {}, admin: {}, signing: {} }}",
            self.frontend.len(),
            self.backend.len(),
            self.admin.len(),
            self.signing.len()
        )
    }
}

/// Webhook endpoints and the secret their deliveries are signed with.
#[derive(Clone, Default, PartialEq)]
pub struct Webhooks {
    /// Parsed and checked (http/https with a host), without duplicates.
    pub urls: Vec<String>,
    pub secret: String,
}

/// URLs as their origin and path only (no credentials, no query), and
/// never the secret.
impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        write!(f, "Webhooks {{ urls: {urls:?}, secret: <hidden> }}")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: String,
    pub db: DbTarget,
    pub keys: Keys,
    /// True when no key of any kind was configured: the example keys are in
    /// use and frontends may name their author without a signature.
    pub dev_profile: bool,
    pub cors_origins: Vec<String>,
    pub rate_rps: f64,
    pub rate_burst: f64,
    pub max_body: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub pool_size: usize,
    pub log_level: String,
    /// Absolute path given to the embedded cluster as progressdb.master_key_file.
    pub master_key_file: Option<PathBuf>,
    /// Where events are POSTed (none configured: `urls` is empty).
    pub webhooks: Webhooks,
}

/// Every name the config file may use (the environment variable names).
const FILE_KEYS: &[&str] = &[
    "PROGRESSDB_ADDR",
    "PROGRESSDB_DB",
    "PROGRESSDB_PG_PORT",
    "PROGRESSDB_API_FRONTEND_KEYS",
    "PROGRESSDB_API_BACKEND_KEYS",
    "PROGRESSDB_API_ADMIN_KEYS",
    "PROGRESSDB_SIGNING_KEYS",
    "PROGRESSDB_CORS_ORIGINS",
    "PROGRESSDB_RATE_RPS",
    "PROGRESSDB_RATE_BURST",
    "PROGRESSDB_MAX_BODY",
    "PROGRESSDB_REQUEST_TIMEOUT",
    "PROGRESSDB_SHUTDOWN_GRACE",
    "PROGRESSDB_POOL_SIZE",
    "PROGRESSDB_LOG_LEVEL",
    "PROGRESSDB_MASTER_KEY_FILE",
    "PROGRESSDB_WEBHOOK_URLS",
    "PROGRESSDB_WEBHOOK_SECRET",
];

/// Parses a config file: `KEY=VALUE` lines, `#` comments, optional quotes
/// around values. Unknown keys are an error so that typos do not silently
/// fall back to defaults (which for keys would mean the dev profile).
pub fn parse_config_file(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=VALUE", n + 1))?;
        let k = k.trim().to_string();
        if !FILE_KEYS.contains(&k.as_str()) {
            return Err(format!("line {}: unknown setting {k:?}", n + 1));
        }
        let mut v = v.trim();
        if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            v = &v[1..v.len() - 1];
        }
        out.insert(k, v.to_string());
    }
    Ok(out)
}

pub fn split_list(s: Option<&str>) -> Vec<String> {
    s.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// `100KB`, `100KiB`, `1M`, `2048` → bytes (K and M are binary multiples).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = strip_any(&lower, &["kib", "kb", "k"]) {
        (n, 1024)
    } else if let Some(n) = strip_any(&lower, &["mib", "mb", "m"]) {
        (n, 1024 * 1024)
    } else {
        (lower.strip_suffix('b').unwrap_or(&lower), 1)
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {t:?}"))?;
    n.checked_mul(mult)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("invalid size {t:?}"))
}

/// `30`, `30s`, `500ms`, `2m` → duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    let bad = || format!("invalid duration {s:?}");
    let d = if let Some(n) = t.strip_suffix("ms") {
        Duration::from_millis(n.trim().parse().map_err(|_| bad())?)
    } else if let Some(n) = t.strip_suffix('m') {
        Duration::from_secs(n.trim().parse::<u64>().map_err(|_| bad())? * 60)
    } else {
        let n = t.strip_suffix('s').unwrap_or(&t);
        Duration::from_secs_f64(
            n.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(bad)?,
        )
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

fn strip_any<'a>(s: &'a str, suffixes: &[&str]) -> Option<&'a str> {
    suffixes.iter().find_map(|x| s.strip_suffix(x))
}

/// `:8080` → `0.0.0.0:8080`; a bare port likewise; anything else as given.
pub fn normalize_addr(a: &str) -> String {
    let a = a.trim();
    if let Some(port) = a.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if a.parse::<u16>().is_ok() {
        format!("0.0.0.0:{a}")
    } else {
        a.to_string()
    }
}

/// A `--db` value is a connection string when it looks like one, else a directory.
pub fn db_target(db: &str, pg_port: u16) -> DbTarget {
    let t = db.trim();
    if t.starts_with("postgres://") || t.starts_with("postgresql://") || t.contains('=') {
        DbTarget::External(t.to_string())
    } else {
        DbTarget::Embedded {
            dir: PathBuf::from(t),
            port: pg_port,
        }
    }
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, String> {
        let file = match &cli.config {
            Some(p) => read_file(p)?,
            None => HashMap::new(),
        };
        let pick = |v: &Option<String>, env: &str| -> Option<String> {
            v.clone().or_else(|| file.get(env).cloned())
        };

        let addr = normalize_addr(&pick(&cli.addr, "PROGRESSDB_ADDR").unwrap_or(":8080".into()));
        let pg_port = match cli.pg_port {
            Some(p) => p,
            None => match file.get("PROGRESSDB_PG_PORT") {
                Some(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| format!("invalid PROGRESSDB_PG_PORT {s:?}"))?,
                None => 5433,
            },
        };
        let db = db_target(
            &pick(&cli.db, "PROGRESSDB_DB").unwrap_or("./data".into()),
            pg_port,
        );

        let mut keys = Keys {
            frontend: split_list(
                pick(&cli.frontend_keys, "PROGRESSDB_API_FRONTEND_KEYS").as_deref(),
            ),
            backend: split_list(pick(&cli.backend_keys, "PROGRESSDB_API_BACKEND_KEYS").as_deref()),
            admin: split_list(pick(&cli.admin_keys, "PROGRESSDB_API_ADMIN_KEYS").as_deref()),
            signing: split_list(pick(&cli.signing_keys, "PROGRESSDB_SIGNING_KEYS").as_deref()),
        };
        let dev_profile = keys == Keys::default();
        if dev_profile {
            keys.frontend = vec![DEV_FRONTEND_KEY.into()];
            keys.backend = vec![DEV_BACKEND_KEY.into()];
            keys.admin = vec![DEV_ADMIN_KEY.into()];
        }
        if keys.signing.is_empty() {
            // As in the original: backends sign with their own key by default.
            keys.signing = keys.backend.clone();
        }
        check_disjoint(&keys)?;

        let num = |v: &Option<String>, env: &str, default: f64| -> Result<f64, String> {
            match pick(v, env) {
                None => Ok(default),
                Some(s) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("invalid {env} {s:?}")),
            }
        };
        let rate_rps = num(&cli.rate_rps, "PROGRESSDB_RATE_RPS", 100.0)?;
        let rate_burst = num(&cli.rate_burst, "PROGRESSDB_RATE_BURST", 200.0)?.max(1.0);
        let max_body = match pick(&cli.max_body, "PROGRESSDB_MAX_BODY") {
            Some(s) => parse_size(&s).map_err(|e| format!("PROGRESSDB_MAX_BODY: {e}"))?,
            None => 100 * 1024,
        };
        let request_timeout = match pick(&cli.request_timeout, "PROGRESSDB_REQUEST_TIMEOUT") {
            Some(s) => {
                parse_duration(&s).map_err(|e| format!("PROGRESSDB_REQUEST_TIMEOUT: {e}"))?
            }
            None => Duration::from_secs(30),
        };
        let shutdown_grace = match pick(&cli.shutdown_grace, "PROGRESSDB_SHUTDOWN_GRACE") {
            Some(s) => parse_duration(&s).map_err(|e| format!("PROGRESSDB_SHUTDOWN_GRACE: {e}"))?,
            None => Duration::from_millis(500),
        };
        let pool_size = num(&cli.pool_size, "PROGRESSDB_POOL_SIZE", 16.0)?.max(1.0) as usize;
        let log_level = pick(&cli.log_level, "PROGRESSDB_LOG_LEVEL").unwrap_or("info".into());
        let master_key_file = master_key_file(
            pick(&cli.master_key_file, "PROGRESSDB_MASTER_KEY_FILE").as_deref(),
            &db,
        )?;
        let webhook_urls = if cli.webhook_urls.is_empty() {
            split_list(file.get("PROGRESSDB_WEBHOOK_URLS").map(String::as_str))
        } else {
            cli.webhook_urls.clone()
        };
        let webhooks = webhooks(
            &webhook_urls,
            pick(&cli.webhook_secret, "PROGRESSDB_WEBHOOK_SECRET"),
        )?;

        Ok(Config {
            addr,
            db,
            keys,
            dev_profile,
            cors_origins: split_list(pick(&cli.cors_origins, "PROGRESSDB_CORS_ORIGINS").as_deref()),
            rate_rps,
            rate_burst,
            max_body,
            request_timeout,
            shutdown_grace,
            pool_size,
            log_level,
            master_key_file,
            webhooks,
        })
    }
}

/// The key file path for the embedded cluster: absolute (the server runs in
/// another directory) and quotable on its command line.
fn master_key_file(value: Option<&str>, db: &DbTarget) -> Result<Option<PathBuf>, String> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if matches!(db, DbTarget::External(_)) {
        return Err(
            "PROGRESSDB_MASTER_KEY_FILE applies to the embedded cluster only; \
                    set progressdb.master_key_file in that server's postgresql.conf"
                .into(),
        );
    }
    if v.contains('\'') {
        return Err("PROGRESSDB_MASTER_KEY_FILE must not contain a single quote".into());
    }
    let p = PathBuf::from(v);
    let abs = if p.is_absolute() {
        p
    } else {
        std::env::current_dir()
            .map_err(|e| format!("PROGRESSDB_MASTER_KEY_FILE: {e}"))?
            .join(p)
    };
    Ok(Some(abs))
}

/// Checks the webhook settings: every URL http or https with a host, and a
/// secret whenever there is a URL (deliveries are always signed).
fn webhooks(urls: &[String], secret: Option<String>) -> Result<Webhooks, String> {
    let mut out = Webhooks::default();
    for raw in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
        let url = reqwest::Url::parse(raw)
            .map_err(|e| format!("invalid --webhook-url {:?}: {e}", redact_url(raw)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "invalid --webhook-url {:?}: must be an http:// or https:// URL with a host",
                redact_url(raw)
            ));
        }
        let url = url.to_string();
        if !out.urls.contains(&url) {
            out.urls.push(url);
        }
    }
    let secret = secret.filter(|s| !s.is_empty());
    match secret {
        Some(s) => out.secret = s,
        None if !out.urls.is_empty() => {
            return Err(
                "--webhook-url needs --webhook-secret (PROGRESSDB_WEBHOOK_SECRET): \
                        every webhook delivery is signed with it"
                    .into(),
            )
        }
        None => {}
    }
    Ok(out)
}

/// A URL as it may appear in logs and errors: scheme, host, port and path,
/// without user info or query (either may carry a token).
pub fn redact_url(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}{}", u.scheme(), u.path()),
                None => format!("{}://{host}{}", u.scheme(), u.path()),
            }
        }
        // Unparsable: show only what precedes any '@', '?' or '#'.
        Err(_) => {
            let cut = raw.find(['?', '#']).unwrap_or(raw.len());
            let head = &raw[..cut];
            match head.rfind('@') {
                Some(at) => format!("…{}", &head[at..]),
                None => head.to_string(),
            }
        }
    }
}

fn read_file(p: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
    parse_config_file(&text).map_err(|e| format!("config file {}: {e}", p.display()))
}

/// A key listed under two roles is ambiguous (which powers does it get?), so
/// refuse to start rather than guess. The key itself is never printed.
fn check_disjoint(k: &Keys) -> Result<(), String> {
    let lists = [
        ("frontend", &k.frontend),
        ("backend", &k.backend),
        ("admin", &k.admin),
    ];
    for (i, (na, a)) in lists.iter().enumerate() {
        for (nb, b) in lists.iter().skip(i + 1) {
            if a.iter().any(|x| b.contains(x)) {
                return Err(format!("a key is listed as both {na} and {nb} key"));
            }
        }
    }
    if k.frontend.iter().any(|x| k.signing.contains(x)) {
        return Err("a frontend (public) key is also a signing secret".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Cli {
        Cli::default()
    }

    #[test]
    fn defaults_are_the_dev_profile() {
        let c = Config::from_cli(cli()).unwrap();
        assert!(c.dev_profile);
        assert_eq!(c.addr, "0.0.0.0:8080");
        assert_eq!(
            c.db,
            DbTarget::Embedded {
                dir: "./data".into(),
                port: 5433
            }
        );
        assert_eq!(c.keys.frontend, vec!["pk_example"]);
        assert_eq!(c.keys.signing, vec!["sk_example"]);
        assert_eq!(c.max_body, 102400);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.shutdown_grace, Duration::from_millis(500));
    }

    #[test]
    fn any_key_turns_the_dev_profile_off() {
        let mut c = cli();
        c.admin_keys = Some("adm1".into());
        let c = Config::from_cli(c).unwrap();
        assert!(!c.dev_profile);
        assert!(c.keys.frontend.is_empty());
        assert!(c.keys.backend.is_empty());
        assert!(c.keys.signing.is_empty());
    }

    #[test]
    fn signing_keys_default_to_backend_keys() {
        let mut c = cli();
        c.backend_keys = Some("sk_a, sk_b".into());
        let cfg = Config::from_cli(c.clone()).unwrap();
        assert_eq!(cfg.keys.signing, vec!["sk_a", "sk_b"]);
        c.signing_keys = Some("sec".into());
        assert_eq!(Config::from_cli(c).unwrap().keys.signing, vec!["sec"]);
    }

    #[test]
    fn a_key_in_two_roles_is_refused() {
        let mut c = cli();
        c.backend_keys = Some("k".into());
        c.admin_keys = Some("x,k".into());
        let e = Config::from_cli(c).unwrap_err();
        assert!(e.contains("backend and admin"), "{e}");
        assert!(!e.contains("x,k"));
    }

    #[test]
    fn config_file_fills_what_flags_leave_empty() {
        let dir = std::env::temp_dir().join(format!("pdbgw-cfg-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# comment\nPROGRESSDB_ADDR = \"127.0.0.1:9000\"\nPROGRESSDB_API_BACKEND_KEYS=sk_file\nPROGRESSDB_MAX_BODY=1MB\nPROGRESSDB_DB=postgres://u@h/db\n",
        )
        .unwrap();
        let mut c = cli();
        c.config = Some(dir.clone());
        c.addr = Some(":7000".into());
        let cfg = Config::from_cli(c).unwrap();
        std::fs::remove_file(&dir).ok();
        assert_eq!(cfg.addr, "0.0.0.0:7000");
        assert_eq!(cfg.keys.backend, vec!["sk_file"]);
        assert!(!cfg.dev_profile);
        assert_eq!(cfg.max_body, 1024 * 1024);
        assert_eq!(cfg.db, DbTarget::External("postgres://u@h/db".into()));
    }

    #[test]
    fn config_file_rejects_unknown_and_malformed_lines() {
        assert!(parse_config_file("PROGRESSDB_ADR=x").is_err());
        assert!(parse_config_file("just words").is_err());
        let m = parse_config_file("[server]\nPROGRESSDB_RATE_RPS='5'\n").unwrap();
        assert_eq!(m["PROGRESSDB_RATE_RPS"], "5");
    }

    #[test]
    fn webhook_urls_need_a_secret_and_an_http_scheme() {
        let mut c = cli();
        c.webhook_urls = vec!["https://hooks.example/in".into()];
        let e = Config::from_cli(c.clone()).unwrap_err();
        assert!(e.contains("--webhook-secret"), "{e}");
        c.webhook_secret = Some("whsec".into());
        let cfg = Config::from_cli(c.clone()).unwrap();
        assert_eq!(cfg.webhooks.urls, vec!["https://hooks.example/in"]);
        assert_eq!(cfg.webhooks.secret, "whsec");
        assert!(!format!("{cfg:?}").contains("whsec"));
        // Duplicates collapse to one endpoint.
        c.webhook_urls = vec!["http://127.0.0.1:9/a".into(), "http://127.0.0.1:9/a".into()];
        assert_eq!(Config::from_cli(c.clone()).unwrap().webhooks.urls.len(), 1);
        for bad in ["ftp://h/x", "not a url", "file:///etc/passwd", "mailto:a@b"] {
            c.webhook_urls = vec![bad.into()];
            let e = Config::from_cli(c.clone()).unwrap_err();
            assert!(e.contains("--webhook-url"), "{bad}: {e}");
        }
        // A secret without URLs is harmless; no URL means no webhooks.
        c.webhook_urls.clear();
        assert!(Config::from_cli(c).unwrap().webhooks.urls.is_empty());
        let m = parse_config_file(
            "PROGRESSDB_WEBHOOK_URLS=http://a.example/x, https://b.example/y\nPROGRESSDB_WEBHOOK_SECRET=s\n",
        )
        .unwrap();
        assert_eq!(
            split_list(m.get("PROGRESSDB_WEBHOOK_URLS").map(String::as_str)).len(),
            2
        );
    }

    #[test]
    fn webhook_urls_are_redacted_for_logs() {
        assert_eq!(
            redact_url("https://user:pw@hooks.example:8443/in?token=t#f"),
            "https://hooks.example:8443/in"
        );
        assert_eq!(redact_url("http://h/"), "http://h/");
        assert!(!redact_url("nonsense://u:pw@h?token=t").contains("pw"));
        assert!(!redact_url("::bad u:pw@h?token=t").contains("token"));
    }

    #[test]
    fn sizes_durations_addrs_and_db_targets() {
        assert_eq!(parse_size("100KB").unwrap(), 102400);
        assert_eq!(parse_size("100kib").unwrap(), 102400);
        assert_eq!(parse_size("2048").unwrap(), 2048);
        assert_eq!(parse_size("2M").unwrap(), 2 * 1024 * 1024);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert_eq!(normalize_addr("9090"), "0.0.0.0:9090");
        assert_eq!(normalize_addr("127.0.0.1:1"), "127.0.0.1:1");
        assert!(matches!(
            db_target("host=/tmp port=5 user=postgres", 1),
            DbTarget::External(_)
        ));
        assert!(matches!(
            db_target("/var/lib/pdb", 1),
            DbTarget::Embedded { .. }
        ));
    }
}
