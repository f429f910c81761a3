//! `GET /v1/search?q=&thread=&limit=&before=`: full-text search over the
//! messages the caller may read (the service, with no author: all threads).
//! What is searched, the order and the cursor are the SQL function's
//! (`progressdb.search`, sql/search.sql).

use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::Params;
use crate::auth::Caller;
use crate::db::Call;
use crate::error::ApiError;
use crate::AppState;

pub async fn search(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> Result<Response, ApiError> {
    let who = caller.identity(None, q.get("author").as_deref())?;
    // An absent or empty q reaches SQL as NULL: its 22023 is the 400.
    Call::new("search")
        .text(who.actor)
        .text(q.get("q"))
        .opt_text("thread", q.get("thread"))
        .opt_int("lim", q.int("limit")?)
        .opt_text("before", q.get("before"))
        .json_response(&st.pool)
        .await
}
