//! `progressdb import --from-langchain postgres://… [--table message_store]`:
//! a langchain-postgres chat-history table as export records (format 1).
//!
//! The table is what `PostgresChatMessageHistory` writes: `id serial`,
//! `session_id uuid`, `message jsonb` (LangChain's `message_to_dict`:
//! `{"type":…,"data":{…}}`) and `created_at timestamptz`. The older
//! langchain-community shape (`session_id text`, no `created_at`) reads too.
//! Rows are read in id order, a batch at a time (keyset on the primary key,
//! one short statement per batch, no long transaction on the source), so
//! memory stays flat whatever the table's size.
//!
//! Each session becomes one thread, `lc-<session id>`, and each row one
//! message whose id comes from the row id (`lc-<session id>-<row id>`): both
//! are deterministic, so running the import again finds them and skips them
//! (`import_record` answers `exists`). A thread record goes out before the
//! first message of its session; sessions interleave in a table, so their
//! messages arrive interleaved too (each record names its thread).

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use tokio_postgres::{Client, NoTls};

/// The table langchain-postgres's examples (and langchain-community) use.
pub const DEFAULT_TABLE: &str = "message_store";
/// Rows per read.
pub const BATCH: i64 = 500;
/// Sessions whose thread record went out, remembered to send it only once.
/// Past this many the memory is cleared: a thread record sent again is
/// harmless (`exists`), and memory stays bounded.
const SEEN_SESSIONS: usize = 100_000;
/// Author of the threads the import creates.
pub const THREAD_AUTHOR: &str = "langchain";

/// The thread a session becomes.
pub fn thread_id(session: &str) -> String {
    format!("lc-{session}")
}

/// The message a row becomes: stable across runs, unique across sessions.
pub fn message_id(session: &str, row_id: i64) -> String {
    format!("lc-{session}-{row_id}")
}

/// The `thread` record of a session whose first row was written at `created_ns`.
pub fn thread_record(session: &str, table: &str, created_ns: i64) -> Value {
    json!({
        "v": 1,
        "type": "thread",
        "id": thread_id(session),
        "title": format!("LangChain session {session}"),
        "author": THREAD_AUTHOR,
        "created_ts": created_ns,
        "updated_ts": created_ns,
        "metadata": {"source": "langchain-postgres", "session_id": session, "table": table},
        "history": "shared",
        "encrypted": false,
    })
}

/// One row of the table, as read.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub session: String,
    /// The `message` column's JSON text.
    pub message: String,
    /// `created_at` in Unix nanoseconds.
    pub created_ns: i64,
}

/// What a session remembers between its rows: the id given to a legacy
/// `function_call` of an AI message, which the `function` message after it
/// answers (LangChain's function messages carry no call id).
#[derive(Debug, Default, Clone)]
pub struct SessionState {
    pending_function_call: Option<String>,
}

/// The ProgressDB role of a LangChain message type (`…Chunk` types as their
/// message); `chat` messages carry their own role.
fn role_of(kind: &str, data: &Map<String, Value>) -> Result<String, String> {
    let base = kind.strip_suffix("MessageChunk").unwrap_or(kind);
    let role = match base {
        "human" | "Human" => "user",
        "ai" | "AI" => "assistant",
        "system" | "System" => "system",
        "tool" | "Tool" | "function" | "Function" => "tool",
        "chat" | "Chat" => {
            return match data.get("role").and_then(Value::as_str).map(str::trim) {
                Some(r) if !r.is_empty() => Ok(r.to_string()),
                _ => Err("a chat message without a role".into()),
            }
        }
        other => return Err(format!("unknown LangChain message type {other:?}")),
    };
    Ok(role.to_string())
}

/// A LangChain tool call (`{"name","args","id"}`) in OpenAI's form, which
/// `context()` hands to models: arguments become a JSON string.
fn openai_tool_call(tc: &Value) -> Value {
    let args = match tc.get("args") {
        // invalid_tool_calls keep the model's unparsed text.
        Some(Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => "{}".to_string(),
    };
    json!({
        "id": tc.get("id").cloned().unwrap_or(Value::Null),
        "type": "function",
        "function": {
            "name": tc.get("name").cloned().unwrap_or(Value::Null),
            "arguments": args,
        },
    })
}

fn non_empty_array(v: Option<&Value>) -> Option<&Vec<Value>> {
    v.and_then(Value::as_array).filter(|a| !a.is_empty())
}

/// The `message` record of a row. `state` is the row's session's.
pub fn message_record(row: &Row, state: &mut SessionState) -> Result<Value, String> {
    let at = |e: String| format!("row {} (session {}): {e}", row.id, row.session);
    let doc: Value =
        serde_json::from_str(&row.message).map_err(|e| at(format!("message is not JSON: {e}")))?;
    let kind = doc
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| at("message has no \"type\"".into()))?;
    let data = doc
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| at("message has no \"data\" object".into()))?;
    let role = role_of(kind, data).map_err(at)?;
    let mut body = Map::new();
    body.insert(
        "content".into(),
        data.get("content")
            .cloned()
            .unwrap_or(Value::String(String::new())),
    );
    let extra = data.get("additional_kwargs").and_then(Value::as_object);
    if role == "assistant" {
        let mut calls: Vec<Value> = Vec::new();
        if let Some(tcs) = non_empty_array(data.get("tool_calls")) {
            calls.extend(tcs.iter().map(openai_tool_call));
        } else if let Some(tcs) = non_empty_array(extra.and_then(|e| e.get("tool_calls"))) {
            // Older LangChain kept the provider's (OpenAI) calls here only.
            calls.extend(tcs.iter().cloned());
        }
        if let Some(tcs) = non_empty_array(data.get("invalid_tool_calls")) {
            calls.extend(tcs.iter().map(openai_tool_call));
        }
        state.pending_function_call = None;
        if calls.is_empty() {
            // The legacy function_call: one call, answered by the next
            // function message; it gets an id made from this row's.
            if let Some(fc) = extra
                .and_then(|e| e.get("function_call"))
                .and_then(Value::as_object)
            {
                let id = format!("call_lc_{}", row.id);
                let arguments = match fc.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) if !v.is_null() => v.to_string(),
                    _ => "{}".into(),
                };
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": fc.get("name").cloned().unwrap_or(Value::Null), "arguments": arguments},
                }));
                state.pending_function_call = Some(id);
            }
        }
        if !calls.is_empty() {
            body.insert("tool_calls".into(), Value::Array(calls));
        }
    } else if role == "tool" {
        match data.get("tool_call_id") {
            Some(id @ Value::String(_)) => {
                body.insert("tool_call_id".into(), id.clone());
            }
            _ => {
                if let Some(id) = state.pending_function_call.take() {
                    body.insert("tool_call_id".into(), Value::String(id));
                }
            }
        }
    } else {
        state.pending_function_call = None;
    }
    if let Some(name @ Value::String(_)) = data.get("name") {
        body.insert("name".into(), name.clone());
    }
    // What LangChain kept besides, for whoever needs it later (context()
    // reads only content, tool_calls and tool_call_id).
    let mut kept = Map::new();
    for k in [
        "id",
        "additional_kwargs",
        "response_metadata",
        "usage_metadata",
        "artifact",
        "status",
    ] {
        match data.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(Value::String(s)) if k == "status" && s == "success" => {}
            Some(v) => {
                kept.insert(k.into(), v.clone());
            }
        }
    }
    if !kept.is_empty() {
        body.insert("langchain".into(), Value::Object(kept));
    }
    Ok(json!({
        "v": 1,
        "type": "message",
        "thread": thread_id(&row.session),
        "id": message_id(&row.session, row.id),
        "author": role,
        "role": role,
        "ts": row.created_ns,
        "updated_ts": row.created_ns,
        "version": 1,
        "body": body,
        "reactions": {},
    }))
}

/// Turns rows (in id order) into records, remembering which sessions'
/// thread records went out.
#[derive(Debug)]
pub struct Converter {
    table: String,
    sessions: HashMap<String, SessionState>,
}

impl Converter {
    pub fn new(table: &str) -> Self {
        Converter {
            table: table.to_string(),
            sessions: HashMap::new(),
        }
    }

    /// The records of one row: its session's thread record first when the
    /// session is new, then its message record.
    pub fn row(&mut self, row: &Row, out: &mut Vec<Value>) -> Result<(), String> {
        if !self.sessions.contains_key(&row.session) {
            let tid = thread_id(&row.session);
            let n = tid.chars().count();
            if !(1..=128).contains(&n) || row.session.is_empty() {
                return Err(format!(
                    "row {}: session id {:?} is too long to name a thread (at most 125 characters)",
                    row.id, row.session
                ));
            }
            if self.sessions.len() >= SEEN_SESSIONS {
                self.sessions.clear();
            }
            out.push(thread_record(&row.session, &self.table, row.created_ns));
            self.sessions
                .insert(row.session.clone(), SessionState::default());
        }
        let state = self.sessions.get_mut(&row.session).expect("inserted above");
        out.push(message_record(row, state)?);
        Ok(())
    }
}

/// `name` or `schema.name` as a quoted SQL identifier.
pub fn quote_table(table: &str) -> Result<String, String> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "--table {table:?}: expected a table name or schema.table"
        ));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join("."))
}

/// The source table, open for reading in id order.
pub struct Reader {
    client: Client,
    conn_task: tokio::task::JoinHandle<()>,
    query: String,
    after: i64,
    converter: Converter,
    done: bool,
    /// Rows read so far.
    pub rows: u64,
    /// Rows in the table when the import started (for progress).
    pub total: u64,
}

impl Reader {
    /// Connects to the source and checks that `table` has the columns of a
    /// langchain-postgres chat history.
    pub async fn open(conn: &str, table: &str) -> Result<Reader, String> {
        let cfg: tokio_postgres::Config = conn
            .parse()
            .map_err(|e| format!("invalid --from-langchain connection string: {e}"))?;
        let (client, connection) = cfg
            .connect(NoTls)
            .await
            .map_err(|e| format!("cannot connect to the langchain database: {e}"))?;
        let conn_task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!("langchain source connection: {e}");
            }
        });
        let quoted = quote_table(table)?;
        let cols = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                   FROM pg_attribute a \
                  WHERE a.attrelid = to_regclass($1)::oid AND a.attnum > 0 AND NOT a.attisdropped",
                &[&quoted],
            )
            .await
            .map_err(|e| format!("cannot read the columns of {table}: {e}"))?;
        let types: HashMap<String, String> = cols
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        if types.is_empty() {
            conn_task.abort();
            return Err(format!(
                "no table {table} in the langchain database (name it with --table)"
            ));
        }
        for need in ["id", "session_id", "message"] {
            if !types.contains_key(need) {
                conn_task.abort();
                return Err(format!(
                    "{table} is not a langchain-postgres chat history: no column {need} \
                     (expected id, session_id, message, created_at)"
                ));
            }
        }
        // The older langchain-community table has no created_at: its
        // messages get the import's start time.
        let ts = if types.contains_key("created_at") {
            "(extract(epoch FROM created_at) * 1000000)::int8 * 1000".to_string()
        } else {
            "(extract(epoch FROM statement_timestamp()) * 1000000)::int8 * 1000".to_string()
        };
        let query = format!(
            "SELECT id::int8, session_id::text, message::text, {ts} \
               FROM {quoted} WHERE id > $1::int8 ORDER BY id LIMIT {BATCH}"
        );
        let total: i64 = client
            .query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
            .await
            .map_err(|e| format!("cannot read {table}: {e}"))?
            .get(0);
        Ok(Reader {
            client,
            conn_task,
            query,
            after: i64::MIN,
            converter: Converter::new(table),
            done: false,
            rows: 0,
            total: total.max(0) as u64,
        })
    }

    /// The records of the next batch of rows, each with the id of the row
    /// it comes from, or `None` at the end.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<(i64, Value)>>, String> {
        if self.done {
            return Ok(None);
        }
        let rows = self
            .client
            .query(&self.query, &[&self.after])
            .await
            .map_err(|e| format!("reading the langchain table: {e}"))?;
        if (rows.len() as i64) < BATCH {
            self.done = true;
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(rows.len() + 8);
        let mut records = Vec::with_capacity(2);
        for r in &rows {
            let row = Row {
                id: r.get(0),
                session: r
                    .get::<_, Option<String>>(1)
                    .ok_or_else(|| format!("row {}: session_id is NULL", r.get::<_, i64>(0)))?,
                message: r
                    .get::<_, Option<String>>(2)
                    .ok_or_else(|| format!("row {}: message is NULL", r.get::<_, i64>(0)))?,
                created_ns: r.get::<_, Option<i64>>(3).unwrap_or(0),
            };
            self.after = row.id;
            self.converter.row(&row, &mut records)?;
            out.extend(records.drain(..).map(|rec| (row.id, rec)));
        }
        self.rows += rows.len() as u64;
        Ok(Some(out))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.conn_task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "6f1c1e0a-3b5e-4d2a-9c61-0d1f2a3b4c5d";

    fn row(id: i64, message: &str) -> Row {
        Row {
            id,
            session: S.into(),
            message: message.into(),
            created_ns: 1_764_569_439_242_022_000,
        }
    }

    fn convert(id: i64, message: &str) -> Value {
        message_record(&row(id, message), &mut SessionState::default()).unwrap()
    }

    // Rows below are verbatim what langchain-postgres 0.0.19 with
    // langchain-core 1.8.3 stores (message_to_dict, as jsonb text).

    #[test]
    fn human_message() {
        let r = convert(
            2,
            r#"{"data": {"id": null, "name": null, "type": "human", "content": "What's the weather in Paris? quetzalfjord", "additional_kwargs": {}, "response_metadata": {}}, "type": "human"}"#,
        );
        assert_eq!(
            r,
            json!({"v": 1, "type": "message", "thread": format!("lc-{S}"),
                   "id": format!("lc-{S}-2"), "author": "user", "role": "user",
                   "ts": 1_764_569_439_242_022_000i64, "updated_ts": 1_764_569_439_242_022_000i64,
                   "version": 1, "body": {"content": "What's the weather in Paris? quetzalfjord"},
                   "reactions": {}})
        );
    }

    #[test]
    fn roles_of_every_type() {
        let cases = [
            (
                r#"{"data": {"id": null, "name": null, "type": "system", "content": "sys", "additional_kwargs": {}, "response_metadata": {}}, "type": "system"}"#,
                "system",
            ),
            (
                r#"{"data": {"id": null, "name": null, "type": "ai", "content": "ok", "tool_calls": [], "usage_metadata": null, "additional_kwargs": {}, "response_metadata": {}, "invalid_tool_calls": []}, "type": "ai"}"#,
                "assistant",
            ),
            (
                r#"{"data": {"id": null, "name": null, "role": "developer", "type": "chat", "content": "Answer in one word.", "additional_kwargs": {}, "response_metadata": {}}, "type": "chat"}"#,
                "developer",
            ),
            (
                r#"{"data": {"id": null, "name": "legacy_lookup", "type": "function", "content": "Oslo (legacy)", "additional_kwargs": {}, "response_metadata": {}}, "type": "function"}"#,
                "tool",
            ),
            (
                r#"{"data": {"content": "chunk", "type": "AIMessageChunk", "tool_calls": [], "tool_call_chunks": []}, "type": "AIMessageChunk"}"#,
                "assistant",
            ),
        ];
        for (m, role) in cases {
            let r = convert(1, m);
            assert_eq!(r["role"], role, "{m}");
            assert_eq!(r["author"], role, "{m}");
            assert!(
                r["body"]["tool_calls"].is_null(),
                "no empty tool_calls: {m}"
            );
        }
    }

    #[test]
    fn ai_tool_calls_become_openai_calls() {
        let r = convert(
            5,
            r#"{"data": {"id": null, "name": null, "type": "ai", "content": "", "tool_calls": [{"id": "call_w1", "args": {"city": "Paris", "units": "metric"}, "name": "get_weather", "type": "tool_call"}, {"id": "call_t1", "args": {"tz": "Europe/Paris"}, "name": "get_time", "type": "tool_call"}], "usage_metadata": null, "additional_kwargs": {}, "response_metadata": {}, "invalid_tool_calls": []}, "type": "ai"}"#,
        );
        assert_eq!(r["role"], "assistant");
        assert_eq!(r["body"]["content"], "");
        let calls = r["body"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["id"], "call_w1");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris", "units": "metric"}));
        assert_eq!(calls[1]["function"]["name"], "get_time");
        assert_eq!(r["body"].as_object().unwrap().len(), 2, "{r}");
    }

    #[test]
    fn tool_message_keeps_call_id_and_name() {
        let r = convert(
            6,
            r#"{"data": {"id": null, "name": "get_weather", "type": "tool", "status": "success", "content": "{\"temp\": 18, \"sky\": \"cloudy\"}", "artifact": null, "tool_call_id": "call_w1", "additional_kwargs": {}, "response_metadata": {}}, "type": "tool"}"#,
        );
        assert_eq!(r["role"], "tool");
        assert_eq!(
            r["body"],
            json!({"content": "{\"temp\": 18, \"sky\": \"cloudy\"}", "tool_call_id": "call_w1", "name": "get_weather"})
        );
    }

    #[test]
    fn list_content_and_unicode_are_kept_as_they_are() {
        let r = convert(
            10,
            r#"{"data": {"id": null, "name": null, "type": "human", "content": [{"text": "Und jetzt: naïve café façade ½ — zorvantine", "type": "text"}, {"text": "zweiter Teil", "type": "text"}], "additional_kwargs": {}, "response_metadata": {}}, "type": "human"}"#,
        );
        assert_eq!(
            r["body"]["content"],
            json!([{"type": "text", "text": "Und jetzt: naïve café façade ½ — zorvantine"},
                   {"type": "text", "text": "zweiter Teil"}])
        );
        let u = convert(
            4,
            r#"{"data": {"id": null, "name": null, "type": "human", "content": "Grüße aus Köln 👋 — 東京はどう? brimblewick", "additional_kwargs": {}, "response_metadata": {}}, "type": "human"}"#,
        );
        assert_eq!(
            u["body"]["content"],
            "Grüße aus Köln 👋 — 東京はどう? brimblewick"
        );
    }

    #[test]
    fn metadata_is_kept_aside_and_name_in_the_body() {
        let r = convert(
            16,
            r#"{"data": {"id": "run-42", "name": "oracle", "type": "ai", "content": "Oslo.", "tool_calls": [], "usage_metadata": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}, "additional_kwargs": {}, "response_metadata": {"model_name": "gpt-x"}, "invalid_tool_calls": []}, "type": "ai"}"#,
        );
        assert_eq!(r["body"]["name"], "oracle");
        assert_eq!(
            r["body"]["langchain"],
            json!({"id": "run-42", "response_metadata": {"model_name": "gpt-x"},
                   "usage_metadata": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}})
        );
    }

    #[test]
    fn legacy_calls_in_additional_kwargs() {
        // OpenAI-form calls kept only in additional_kwargs pass as they are.
        let tc = json!([{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]);
        let m =
            json!({"type": "ai", "data": {"content": "", "additional_kwargs": {"tool_calls": tc}}});
        let r = convert(3, &m.to_string());
        assert_eq!(r["body"]["tool_calls"], tc);

        // A function_call is answered by the function message after it.
        let mut st = SessionState::default();
        let fc = json!({"type": "ai", "data": {"content": "", "additional_kwargs":
            {"function_call": {"name": "legacy_lookup", "arguments": "{\"q\":\"Oslo\"}"}}}});
        let a = message_record(&row(7, &fc.to_string()), &mut st).unwrap();
        assert_eq!(
            a["body"]["tool_calls"],
            json!([{"id": "call_lc_7", "type": "function",
                    "function": {"name": "legacy_lookup", "arguments": "{\"q\":\"Oslo\"}"}}])
        );
        let f = json!({"type": "function", "data": {"content": "Oslo", "name": "legacy_lookup"}});
        let b = message_record(&row(8, &f.to_string()), &mut st).unwrap();
        assert_eq!(b["body"]["tool_call_id"], "call_lc_7");
        // Answered once.
        let c = message_record(&row(9, &f.to_string()), &mut st).unwrap();
        assert!(c["body"]["tool_call_id"].is_null());
    }

    #[test]
    fn invalid_tool_calls_keep_their_text() {
        let m = r#"{"type": "ai", "data": {"content": "", "tool_calls": [], "invalid_tool_calls": [{"id": "c2", "name": "f", "args": "{not json", "error": "bad", "type": "invalid_tool_call"}]}}"#;
        let r = convert(4, m);
        assert_eq!(
            r["body"]["tool_calls"],
            json!([{"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{not json"}}])
        );
    }

    #[test]
    fn bad_rows_name_the_row() {
        for (m, want) in [
            ("not json", "not JSON"),
            (r#"{"data": {}}"#, "no \"type\""),
            (r#"{"type": "human"}"#, "no \"data\""),
            (
                r#"{"type": "robot", "data": {"content": "x"}}"#,
                "unknown LangChain message type",
            ),
            (
                r#"{"type": "chat", "data": {"content": "x"}}"#,
                "without a role",
            ),
        ] {
            let e = message_record(&row(77, m), &mut SessionState::default()).unwrap_err();
            assert!(e.contains("row 77") && e.contains(want), "{m}: {e}");
        }
    }

    #[test]
    fn thread_records_once_per_session_first() {
        let mut c = Converter::new("message_store");
        let mut out = Vec::new();
        let human = r#"{"type": "human", "data": {"content": "hi"}}"#;
        let mut a = row(1, human);
        c.row(&a, &mut out).unwrap();
        a.id = 2;
        a.created_ns += 5;
        c.row(&a, &mut out).unwrap();
        let mut b = row(3, human);
        b.session = "b0000000-0000-4000-8000-000000000000".into();
        c.row(&b, &mut out).unwrap();
        let kinds: Vec<&str> = out.iter().map(|r| r["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["thread", "message", "message", "thread", "message"]);
        assert_eq!(
            out[0],
            json!({"v": 1, "type": "thread", "id": format!("lc-{S}"),
                   "title": format!("LangChain session {S}"), "author": "langchain",
                   "created_ts": 1_764_569_439_242_022_000i64, "updated_ts": 1_764_569_439_242_022_000i64,
                   "metadata": {"source": "langchain-postgres", "session_id": S, "table": "message_store"},
                   "history": "shared", "encrypted": false})
        );
        assert_eq!(out[4]["thread"], "lc-b0000000-0000-4000-8000-000000000000");
        assert_eq!(out[4]["id"], "lc-b0000000-0000-4000-8000-000000000000-3");
        let mut long = row(4, human);
        long.session = "x".repeat(126);
        assert!(c.row(&long, &mut out).unwrap_err().contains("too long"));
    }

    #[test]
    fn table_names_are_quoted() {
        assert_eq!(quote_table("message_store").unwrap(), "\"message_store\"");
        assert_eq!(quote_table("chat.History").unwrap(), "\"chat\".\"History\"");
        assert_eq!(quote_table("a\"b").unwrap(), "\"a\"\"b\"");
        assert!(quote_table("a.b.c").is_err());
        assert!(quote_table("").is_err());
    }
}
