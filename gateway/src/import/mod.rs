//! `progressdb import FILE.ndjson`: loads export records (README "Export and
//! import") into the database named by `--db`, through SQL
//! `progressdb.import_record()`, which skips what is already there.
//!
//! The pieces, so that other record sources reuse the same sink:
//!
//! - a **source** yields [`SourceRecord`]s (a JSON record, where it came
//!   from, how far through the input it is) as a stream: [`file_source`]
//!   reads an NDJSON file line by line (constant memory); [`langchain_source`]
//!   reads a langchain-postgres chat-history table in batches of rows
//!   ([`langchain`]);
//! - [`Progress`] shows how far it got: a progress bar on a terminal, plain
//!   lines (every 5% or every few seconds) otherwise;
//! - [`import_records`], the **record sink**, writes records in batches,
//!   one transaction per batch: an interrupted import loses at most the
//!   batch in flight, and running it again skips every record committed
//!   before (each is answered `exists`), so a rerun resumes cheaply.

pub mod langchain;
mod progress;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use serde_json::Value;

use crate::config::{Config, DbTarget, ImportArgs};
use crate::db;
pub use progress::Progress;

/// Where the records come from.
pub enum ImportSource {
    /// An export file (NDJSON), or standard input for `-`.
    File(PathBuf),
    /// A langchain-postgres chat-history table: the source database's
    /// connection string and the table.
    Langchain { conn: String, table: String },
}

/// One record of a source.
pub struct SourceRecord {
    /// Where it came from, for error messages: the line number (1-based) for
    /// a file (`position_name` "line").
    pub position: u64,
    /// How far through the input the source is after this record (bytes of
    /// a file; rows of a table), for the progress report.
    pub done: u64,
    pub record: Value,
}

/// A failure of an import, at a position of its source when it has one.
#[derive(Debug)]
pub struct ImportError {
    pub at: Option<String>,
    pub message: String,
}

impl ImportError {
    pub fn new(message: impl Into<String>) -> Self {
        ImportError {
            at: None,
            message: message.into(),
        }
    }
    pub fn at(at: String, message: impl Into<String>) -> Self {
        ImportError {
            at: Some(at),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What an import did: records written, records that were there already,
/// and reaction records whose message is not in this database.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub created: u64,
    pub existing: u64,
    pub skipped: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "created {}, existing {}", self.created, self.existing)?;
        if self.skipped > 0 {
            write!(f, ", skipped {}", self.skipped)?;
        }
        Ok(())
    }
}

/// `progressdb import`: opens the database as the gateway would (starting
/// the embedded cluster when it is not running, and stopping it again
/// afterwards), reads the source and writes it.
pub async fn run(cfg: Config, args: ImportArgs) -> Result<(), ImportError> {
    let source = match (&args.from_langchain, &args.file) {
        (Some(conn), _) => ImportSource::Langchain {
            conn: conn.clone(),
            table: args.table.clone(),
        },
        (None, Some(file)) => ImportSource::File(file.clone()),
        (None, None) => return Err(ImportError::new("name a FILE or --from-langchain")),
    };
    let (records, total, position_name, unit) = match &source {
        ImportSource::File(path) => {
            let (s, total) = file_source(path)?;
            (s, total, "line", "bytes")
        }
        ImportSource::Langchain { conn, table } => {
            let (s, total) = langchain_source(conn, table).await?;
            (s, total, "row", "rows")
        }
    };
    // A cluster the gateway (or anyone) is running stays running.
    let was_running = match &cfg.db {
        DbTarget::Embedded { dir, port } => pgcluster::Cluster::new(dir, *port)
            .map(|c| c.is_running())
            .unwrap_or(false),
        DbTarget::External(_) => true,
    };
    let mut database = db::open(&cfg).await.map_err(ImportError::new)?;
    if was_running {
        database.cluster = None;
    }
    let result = async {
        let mut client = database
            .pool
            .get()
            .await
            .map_err(|e| ImportError::new(format!("cannot connect to the database: {e}")))?;
        let mut progress = Progress::new(total, unit);
        let summary = import_records(
            &mut client,
            records,
            position_name,
            args.batch as usize,
            &mut progress,
        )
        .await;
        match &summary {
            Ok(s) => progress.finish(s),
            Err(_) => progress.abandon(),
        }
        summary
    }
    .await;
    database.pool.close();
    db::stop_cluster(database.cluster).await;
    let summary = result?;
    println!("{summary}");
    Ok(())
}

/// A source's records, in order.
pub type Records = std::pin::Pin<Box<dyn Stream<Item = Result<SourceRecord, ImportError>> + Send>>;

/// The records of an NDJSON file (or standard input for `-`), read line by
/// line; blank lines are skipped. Returns the stream and the file's size
/// (None for standard input and other unsized inputs).
pub fn file_source(path: &Path) -> Result<(Records, Option<u64>), ImportError> {
    let (reader, total): (Box<dyn Read + Send>, Option<u64>) = if path.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = File::open(path)
            .map_err(|e| ImportError::new(format!("cannot open {}: {e}", path.display())))?;
        let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (Box::new(f), len)
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut line_no = 0u64;
    let mut done = 0u64;
    let mut buf = String::new();
    let iter = std::iter::from_fn(move || loop {
        buf.clear();
        line_no += 1;
        let n = match reader.read_line(&mut buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) => {
                return Some(Err(ImportError::at(
                    format!("line {line_no}"),
                    format!("cannot read: {e}"),
                )))
            }
        };
        done += n as u64;
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        return Some(
            serde_json::from_str::<Value>(text)
                .map(|record| SourceRecord {
                    position: line_no,
                    done,
                    record,
                })
                .map_err(|e| ImportError::at(format!("line {line_no}"), format!("not JSON: {e}"))),
        );
    });
    Ok((Box::pin(futures_util::stream::iter(iter)), total))
}

/// The records of a langchain-postgres chat-history table (see
/// [`langchain`]), read in batches of rows; a record's position is the id
/// of the row it comes from (a thread record: its session's first row).
/// Returns the stream and the table's row count.
pub async fn langchain_source(
    conn: &str,
    table: &str,
) -> Result<(Records, Option<u64>), ImportError> {
    let reader = langchain::Reader::open(conn, table)
        .await
        .map_err(ImportError::new)?;
    let total = reader.total;
    let stream = futures_util::stream::unfold(
        (Some(reader), std::collections::VecDeque::new()),
        |(mut reader, mut queue)| async move {
            loop {
                if let Some(r) = queue.pop_front() {
                    return Some((Ok(r), (reader, queue)));
                }
                let rd = reader.as_mut()?;
                match rd.next_batch().await {
                    Ok(Some(batch)) => {
                        let done = rd.rows;
                        queue.extend(batch.into_iter().map(|(row, record)| SourceRecord {
                            position: row as u64,
                            done,
                            record,
                        }));
                    }
                    Ok(None) => return None,
                    Err(e) => return Some((Err(ImportError::new(e)), (None, queue))),
                }
            }
        },
    );
    Ok((Box::pin(stream), Some(total)))
}

/// The record sink: writes `records` through `progressdb.import_record`,
/// `batch` records per statement and transaction, reporting to `progress`.
/// A record the database refuses stops the import with its position
/// (`position_name` and [`SourceRecord::position`], e.g. "line 12") and the
/// database's message; the batches before it stay committed (a rerun after
/// fixing the input skips them), nothing of its own batch is written.
pub async fn import_records<S>(
    client: &mut tokio_postgres::Client,
    mut records: S,
    position_name: &str,
    batch: usize,
    progress: &mut Progress,
) -> Result<Summary, ImportError>
where
    S: Stream<Item = Result<SourceRecord, ImportError>> + Unpin,
{
    let stmt = client
        .prepare("SELECT progressdb.import_record(r::jsonb) FROM unnest($1::text[]) r")
        .await
        .map_err(|e| ImportError::new(db_message(&e)))?;
    let mut summary = Summary::default();
    let mut texts: Vec<String> = Vec::with_capacity(batch);
    let mut positions: Vec<u64> = Vec::with_capacity(batch);
    let mut n = 0u64;
    let mut done = 0u64;
    loop {
        texts.clear();
        positions.clear();
        let mut source_error = None;
        while texts.len() < batch {
            match records.next().await {
                None => break,
                Some(Err(e)) => {
                    source_error = Some(e);
                    break;
                }
                Some(Ok(r)) => {
                    texts.push(r.record.to_string());
                    positions.push(r.position);
                    done = r.done;
                }
            }
        }
        if !texts.is_empty() {
            let txn = client
                .transaction()
                .await
                .map_err(|e| ImportError::new(db_message(&e)))?;
            match txn.query(&stmt, &[&texts]).await {
                Ok(rows) => {
                    for row in rows {
                        match row.get::<_, Option<&str>>(0) {
                            Some("created") => summary.created += 1,
                            Some("skipped") => summary.skipped += 1,
                            _ => summary.existing += 1,
                        }
                    }
                    txn.commit()
                        .await
                        .map_err(|e| ImportError::new(db_message(&e)))?;
                }
                Err(e) => {
                    drop(txn);
                    return Err(find_refused(client, &texts, &positions, position_name)
                        .await
                        .unwrap_or_else(|| ImportError::new(db_message(&e))));
                }
            }
            n += texts.len() as u64;
            progress.update(n, done);
        }
        if let Some(e) = source_error {
            return Err(e);
        }
        if texts.len() < batch {
            return Ok(summary);
        }
    }
}

/// Which record of a refused batch the database refuses, written one by one
/// in a transaction that is rolled back.
async fn find_refused(
    client: &mut tokio_postgres::Client,
    texts: &[String],
    positions: &[u64],
    position_name: &str,
) -> Option<ImportError> {
    let txn = client.transaction().await.ok()?;
    for (text, pos) in texts.iter().zip(positions) {
        if let Err(e) = txn
            .query_one("SELECT progressdb.import_record($1::text::jsonb)", &[text])
            .await
        {
            return Some(ImportError::at(
                format!("{position_name} {pos}"),
                db_message(&e),
            ));
        }
    }
    None
}

/// A database error as a line for people: the server's message with its
/// SQLSTATE, or the client's error.
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line() {
        let mut s = Summary {
            created: 3,
            existing: 2,
            skipped: 0,
        };
        assert_eq!(s.to_string(), "created 3, existing 2");
        s.skipped = 1;
        assert_eq!(s.to_string(), "created 3, existing 2, skipped 1");
    }

    #[tokio::test]
    async fn file_source_numbers_lines_and_skips_blank_ones() {
        let p = std::env::temp_dir().join(format!("pdb-import-src-{}.ndjson", std::process::id()));
        std::fs::write(&p, "{\"v\":1}\n\n{\"v\":2}\nnot json\n").unwrap();
        let (mut s, total) = file_source(&p).unwrap();
        assert_eq!(total, Some(26));
        let a = s.next().await.unwrap().unwrap();
        assert_eq!(
            (a.position, a.done, a.record["v"].as_i64()),
            (1, 8, Some(1))
        );
        let b = s.next().await.unwrap().unwrap();
        assert_eq!((b.position, b.done), (3, 17));
        let e = s.next().await.unwrap().err().unwrap();
        assert!(e.to_string().starts_with("line 4: not JSON"), "{e}");
        assert!(s.next().await.is_none());
        std::fs::remove_file(&p).ok();
        assert!(file_source(Path::new("/nonexistent/x.ndjson")).is_err());
    }
}
