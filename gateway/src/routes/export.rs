//! `GET /v1/threads/{thread}/export` and `GET /admin/users/{user}/export`:
//! the export records of SQL `export_thread()` / `export_user()` as NDJSON
//! (`application/x-ndjson`, one record per line; README "Export and import").
//!
//! Constant memory, whatever the size: the query runs as a portal (a
//! server-side cursor) in a read-only transaction, fetched `BATCH` rows at a
//! time by a task that owns the connection and hands each batch to the
//! response body through a channel of a few batches. A slow client holds the
//! task back (the channel is full), which holds the next fetch back, so
//! neither the gateway nor PostgreSQL ever holds more than a few batches.
//! Each fetch is its own statement for `statement_timeout`, so a long export
//! is not cut off by the request timeout.
//!
//! Errors before the first record (not found, not allowed, bad id) are the
//! usual JSON errors: the handler waits for the first batch before it
//! answers. A failure after streaming started aborts the response (the
//! client sees a truncated chunked body, never a well-formed short export).

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::Params;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// Records per fetch from the portal.
const BATCH: i32 = 500;
/// Batches buffered between the database task and the response body.
const BUFFERED_BATCHES: usize = 2;

pub const NDJSON: &str = "application/x-ndjson";

/// `GET /v1/threads/{thread}/export[?author=]`: backends without an author
/// and admins export as the service; signed users (and backends naming one)
/// get what they may read (SQL decides: 404/403 as everywhere).
pub async fn thread(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(thread): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    stream_records(
        &st.pool,
        "SELECT r::text FROM progressdb.export_thread($1::text, $2::text) r",
        vec![Some(thread), who.actor],
    )
    .await
}

/// `GET /admin/users/{user}/export`: everything of one user (service only,
/// like every `/admin` route: backend and admin keys).
pub async fn user(
    State(st): State<AppState>,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    stream_records(
        &st.pool,
        "SELECT r::text FROM progressdb.export_user($1::text) r",
        vec![Some(user)],
    )
    .await
}

/// Runs `sql` (one text column: a record) as a portal and streams its rows
/// as NDJSON; see the module documentation.
async fn stream_records(
    pool: &Pool,
    sql: &'static str,
    params: Vec<Option<String>>,
) -> Result<Response, ApiError> {
    let mut client = pool.get().await?;
    let (first_tx, first_rx) = oneshot::channel::<Result<(), ApiError>>();
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(BUFFERED_BATCHES);
    tokio::spawn(async move {
        let mut first_tx = Some(first_tx);
        let result: Result<(), tokio_postgres::Error> = async {
            let txn = client.build_transaction().read_only(true).start().await?;
            let stmt = txn.prepare(sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let portal = txn.bind(&stmt, &refs).await?;
            loop {
                let rows = txn.query_portal(&portal, BATCH).await?;
                let mut buf = String::with_capacity(rows.len() * 256);
                for row in &rows {
                    let rec: Option<&str> = row.try_get(0)?;
                    buf.push_str(rec.unwrap_or("null"));
                    buf.push('\n');
                }
                if let Some(f) = first_tx.take() {
                    if f.send(Ok(())).is_err() {
                        return Ok(()); // the request went away
                    }
                }
                if !buf.is_empty() && tx.send(Ok(Bytes::from(buf))).await.is_err() {
                    return Ok(()); // the client went away: roll back, free the connection
                }
                if rows.len() < BATCH as usize {
                    break;
                }
            }
            txn.commit().await
        }
        .await;
        if let Err(e) = result {
            match first_tx.take() {
                Some(f) => {
                    let _ = f.send(Err(ApiError::from(e)));
                }
                None => {
                    tracing::error!("export stream aborted: {e}");
                    let _ = tx.send(Err(std::io::Error::other("export aborted"))).await;
                }
            }
        }
    });
    match first_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ))
        }
    }
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
        HttpBody::from_stream(stream),
    )
        .into_response())
}
