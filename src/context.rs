//! The LLM context window of a thread: `progressdb.context()` (API.md,
//! "AI conversations"; sql/context.sql is its SQL face).
//!
//! A request reads the thread from the newest message backwards, in batches,
//! and stops as soon as the token budget is full, so its cost follows the
//! budget, not the thread's length. Token counts are exact for the named
//! tokenizer (tiktoken's o200k_base and cl100k_base, bundled in the
//! `tiktoken-rs` crate) and computed once per message version: the first
//! request that needs a count computes it and stores it in
//! `progressdb.message_tokens`; later requests read it. Posting never
//! tokenizes, and a backend loads a tokenizer's table (tens of MB) only when
//! it first counts with it.
//!
//! The pure parts -- mapping a stored body to an LLM message, what is
//! counted, the budget walk with its tool-call groups, the two output
//! formats -- are plain functions with unit tests at the bottom.

use std::cell::RefCell;

use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgOid;
use serde_json::Value;

use crate::checks::fail;
use crate::crypto;
use crate::render::{write_field_int, write_field_str, write_str};

extension_sql_file!(
    "../sql/context.sql",
    name = "context",
    requires = ["members", "threads", context_text]
);

/// The largest budget accepted: well above any model's context window, so a
/// larger number is a mistake (a byte count, a negative number overflowed).
pub const MAX_BUDGET: i32 = 10_000_000;

/// Joins the system messages into Anthropic's top-level `system` string.
pub const SYSTEM_SEPARATOR: &str = "\n\n";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Format {
    OpenAi,
    Anthropic,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tokenizer {
    O200k,
    Cl100k,
}

impl Format {
    pub fn parse(s: Option<&str>) -> Result<Format, String> {
        match s.unwrap_or("openai") {
            "openai" => Ok(Format::OpenAi),
            "anthropic" => Ok(Format::Anthropic),
            other => Err(format!("format must be openai or anthropic (got {other})")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
        }
    }
}

impl Tokenizer {
    pub fn parse(s: Option<&str>) -> Result<Tokenizer, String> {
        match s.unwrap_or("o200k_base") {
            "o200k_base" => Ok(Tokenizer::O200k),
            "cl100k_base" => Ok(Tokenizer::Cl100k),
            other => Err(format!(
                "tokenizer must be o200k_base or cl100k_base (got {other})"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tokenizer::O200k => "o200k_base",
            Tokenizer::Cl100k => "cl100k_base",
        }
    }

    /// The number of tokens of `text`, special-token look-alikes (such as
    /// `<|endoftext|>` typed by a user) counted as ordinary text, as the
    /// chat APIs treat message content.
    pub fn count(self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        let bpe = match self {
            Tokenizer::O200k => tiktoken_rs::o200k_base_singleton(),
            Tokenizer::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        };
        bpe.encode_ordinary(text).len()
    }
}

pub fn check_budget(max_tokens: Option<i32>) -> Result<i32, String> {
    match max_tokens {
        Some(n @ 1..=MAX_BUDGET) => Ok(n),
        Some(n) => Err(format!(
            "max_tokens must be between 1 and {MAX_BUDGET} (got {n})"
        )),
        None => Err(format!(
            "max_tokens is required (between 1 and {MAX_BUDGET})"
        )),
    }
}

/// Appends `v` as compact JSON with object keys sorted (bytewise) and
/// strings escaped as PostgreSQL's `to_json(text)` does: the canonical text
/// that is counted and sent, whatever order the stored jsonb had.
pub fn write_canonical(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, x);
            }
            out.push(']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, k);
                out.push(':');
                write_canonical(out, &o[k.as_str()]);
            }
            out.push('}');
        }
    }
}

pub fn canonical(v: &Value) -> String {
    let mut s = String::new();
    write_canonical(&mut s, v);
    s
}

/// A stored message as an LLM message.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmMessage {
    pub role: String,
    /// A string, an array of content parts, or null (an assistant turn that
    /// only calls tools).
    pub content: Value,
    /// Assistant messages only; absent when null or an empty array.
    pub tool_calls: Option<Value>,
    /// Tool messages only.
    pub tool_call_id: Option<Value>,
}

impl LlmMessage {
    /// An assistant message that calls tools: the head of a tool-call group.
    pub fn calls_tools(&self) -> bool {
        self.tool_calls.is_some()
    }

    pub fn is_tool_result(&self) -> bool {
        self.role == "tool"
    }

    /// The text the content counts as: a string as it is, null as nothing,
    /// anything else (content parts) as its canonical JSON text.
    pub fn content_text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => canonical(other),
        }
    }

    /// The message's token count: the content text's tokens plus, when it
    /// calls tools, the tokens of the tool_calls' canonical JSON text. No
    /// per-message framing of a chat format is included.
    pub fn count_tokens(&self, tok: Tokenizer) -> usize {
        tok.count(&self.content_text())
            + self
                .tool_calls
                .as_ref()
                .map_or(0, |tc| tok.count(&canonical(tc)))
    }
}

/// Maps a stored message (role and body) to an LLM message: content is
/// body.content if present, else body.text, else the body itself (a string
/// body as that string, any other body as its canonical JSON text); content
/// that is neither a string, an array (content parts) nor null becomes its
/// JSON text. tool_calls come from body.tool_calls of assistant messages,
/// tool_call_id from body.tool_call_id of tool messages.
pub fn map_message(role: &str, body: &Value) -> LlmMessage {
    let obj = body.as_object();
    let field = |k: &str| obj.and_then(|o| o.get(k));
    let content = match field("content").or_else(|| field("text")) {
        Some(c @ (Value::String(_) | Value::Array(_) | Value::Null)) => c.clone(),
        Some(other) => Value::String(canonical(other)),
        None => match body {
            Value::String(s) => Value::String(s.clone()),
            other => Value::String(canonical(other)),
        },
    };
    let tool_calls = if role == "assistant" {
        field("tool_calls")
            .filter(|tc| !tc.is_null() && tc.as_array().is_none_or(|a| !a.is_empty()))
            .cloned()
    } else {
        None
    };
    let tool_call_id = if role == "tool" {
        field("tool_call_id").filter(|v| !v.is_null()).cloned()
    } else {
        None
    };
    LlmMessage {
        role: role.to_string(),
        content,
        tool_calls,
        tool_call_id,
    }
}

/// One message met by the backward walk.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub seq: i64,
    pub tokens: i64,
    pub calls_tools: bool,
    pub is_tool_result: bool,
}

/// The budget walk, fed newest message first (system and deleted messages
/// are not fed: system messages are counted before, deleted ones never
/// shown). It keeps the newest messages that fit and stops at the first
/// that does not, so the window is an unbroken stretch of the conversation.
/// Tool results are held until the assistant message that called them: the
/// group is kept or dropped whole. Tool results with no such message right
/// before them (it was deleted, or is hidden by history 'joined') cannot be
/// sent to a model and are left out (orphans).
#[derive(Debug, Default)]
pub struct Walk {
    left: i64,
    /// Kept steps, newest first (indexes in feeding order).
    pub kept: Vec<usize>,
    pub tokens: i64,
    pending: Vec<(usize, Step)>,
    /// Seqs of tool results left out as orphans.
    pub orphans: Vec<i64>,
    pub stopped: bool,
    fed: usize,
}

impl Walk {
    pub fn new(budget: i64) -> Walk {
        Walk {
            left: budget,
            ..Walk::default()
        }
    }

    /// The budget not yet spoken for (held tool results count as spent).
    pub fn left(&self) -> i64 {
        self.left - self.pending.iter().map(|(_, p)| p.tokens).sum::<i64>()
    }

    /// Feeds the next older message; false once the budget is full.
    pub fn push(&mut self, s: Step) -> bool {
        if self.stopped {
            return false;
        }
        let i = self.fed;
        self.fed += 1;
        if s.is_tool_result {
            self.pending.push((i, s));
            return true;
        }
        if s.calls_tools {
            let cost = s.tokens + self.pending.iter().map(|(_, p)| p.tokens).sum::<i64>();
            if cost > self.left {
                self.stopped = true;
                return false;
            }
            self.left -= cost;
            self.tokens += cost;
            self.kept.extend(self.pending.drain(..).map(|(j, _)| j));
            self.kept.push(i);
            return true;
        }
        self.orphans
            .extend(self.pending.drain(..).map(|(_, p)| p.seq));
        if s.tokens > self.left {
            self.stopped = true;
            return false;
        }
        self.left -= s.tokens;
        self.tokens += s.tokens;
        self.kept.push(i);
        true
    }

    /// The start of the visible timeline was reached: held tool results
    /// are orphans.
    pub fn finish(&mut self) {
        if !self.stopped {
            self.orphans
                .extend(self.pending.drain(..).map(|(_, p)| p.seq));
        }
    }
}

/// Writes `{"role":…,"content":…(,"tool_calls":…)(,"tool_call_id":…)}`.
pub fn write_openai_message(out: &mut String, m: &LlmMessage) {
    write_field_str(out, "{\"role\":", &m.role);
    out.push_str(",\"content\":");
    write_canonical(out, &m.content);
    if let Some(tc) = &m.tool_calls {
        out.push_str(",\"tool_calls\":");
        write_canonical(out, tc);
    }
    if let Some(id) = &m.tool_call_id {
        out.push_str(",\"tool_call_id\":");
        write_canonical(out, id);
    }
    out.push('}');
}

/// An OpenAI tool call (`{"id","type":"function","function":{"name","arguments"}}`)
/// as an Anthropic tool_use block; arguments (a JSON string) become the
/// input object (an unparsable or non-object one is passed as
/// `{"arguments": <the text>}`).
fn tool_use_block(tc: &Value) -> Value {
    let f = tc.get("function");
    let name = f
        .and_then(|f| f.get("name"))
        .or_else(|| tc.get("name"))
        .cloned()
        .unwrap_or(Value::String(String::new()));
    let args = f
        .and_then(|f| f.get("arguments"))
        .or_else(|| tc.get("input"))
        .or_else(|| tc.get("arguments"));
    let input = match args {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ if s.trim().is_empty() => Value::Object(Default::default()),
            _ => serde_json::json!({ "arguments": s }),
        },
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(other) => serde_json::json!({ "arguments": other }),
    };
    serde_json::json!({
        "type": "tool_use",
        "id": tc.get("id").cloned().unwrap_or(Value::String(String::new())),
        "name": name,
        "input": input,
    })
}

/// The content blocks of a message's content (a string becomes one text
/// block, omitted when empty; content parts are passed as they are).
fn content_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) if s.is_empty() => vec![],
        Value::String(s) => vec![serde_json::json!({"type": "text", "text": s})],
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        other => vec![serde_json::json!({"type": "text", "text": canonical(other)})],
    }
}

/// The window's turns in Anthropic's shape: user and assistant turns only;
/// an assistant message's tool calls become tool_use blocks after its text,
/// and tool results become tool_result blocks of a user turn (consecutive
/// results share one turn, as the API requires). Any role other than
/// assistant and tool is a user turn.
pub fn anthropic_turns(msgs: &[&LlmMessage]) -> Vec<Value> {
    let mut turns: Vec<Value> = Vec::new();
    let mut results: Vec<Value> = Vec::new();
    let flush = |turns: &mut Vec<Value>, results: &mut Vec<Value>| {
        if !results.is_empty() {
            turns.push(serde_json::json!({"role": "user", "content": std::mem::take(results)}));
        }
    };
    for m in msgs {
        if m.is_tool_result() {
            let mut block = serde_json::json!({
                "type": "tool_result",
                "tool_use_id": m.tool_call_id.clone().unwrap_or(Value::String(String::new())),
            });
            match &m.content {
                Value::Null => {}
                Value::String(_) | Value::Array(_) => {
                    block["content"] = m.content.clone();
                }
                other => block["content"] = Value::String(canonical(other)),
            }
            results.push(block);
            continue;
        }
        flush(&mut turns, &mut results);
        let role = if m.role == "assistant" {
            "assistant"
        } else {
            "user"
        };
        let content = match &m.tool_calls {
            Some(tc) => {
                let mut blocks = content_blocks(&m.content);
                match tc {
                    Value::Array(calls) => blocks.extend(calls.iter().map(tool_use_block)),
                    one => blocks.push(tool_use_block(one)),
                }
                Value::Array(blocks)
            }
            None => match &m.content {
                Value::Null => Value::String(String::new()),
                c => c.clone(),
            },
        };
        turns.push(serde_json::json!({"role": role, "content": content}));
    }
    flush(&mut turns, &mut results);
    turns
}

/// Anthropic's top-level system text: the system messages' content texts, joined.
pub fn system_text(system: &[&LlmMessage]) -> String {
    system
        .iter()
        .map(|m| m.content_text())
        .collect::<Vec<_>>()
        .join(SYSTEM_SEPARATOR)
}

/// The whole document. `system` and `window` are oldest first.
pub fn write_document(
    thread: &str,
    format: Format,
    tok: Tokenizer,
    tokens: i64,
    dropped: i64,
    system: &[&LlmMessage],
    window: &[&LlmMessage],
) -> String {
    let mut out = String::with_capacity(256 + window.len() * 256);
    write_field_str(&mut out, "{\"thread\":", thread);
    write_field_str(&mut out, ",\"format\":", format.name());
    write_field_str(&mut out, ",\"tokenizer\":", tok.name());
    write_field_int(&mut out, ",\"tokens\":", tokens);
    write_field_int(&mut out, ",\"dropped\":", dropped);
    match format {
        Format::OpenAi => {
            out.push_str(",\"messages\":[");
            for (i, m) in system.iter().chain(window.iter()).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_openai_message(&mut out, m);
            }
            out.push(']');
        }
        Format::Anthropic => {
            if !system.is_empty() {
                write_field_str(&mut out, ",\"system\":", &system_text(system));
            }
            out.push_str(",\"messages\":");
            write_canonical(&mut out, &Value::Array(anthropic_turns(window)));
        }
    }
    out.push('}');
    out
}

// ---------------------------------------------------------------------------
// The database side.

/// The first batch's size: a guess of 256 tokens a message (31 rows for a
/// budget of 8,000).
fn first_batch(budget: i32) -> i32 {
    (budget / 256).clamp(8, 128)
}

/// The next batch's size: enough rows for the budget left at the average
/// size of the messages seen so far, plus a quarter (the walk must read the
/// one that no longer fits), so a window usually takes two batches.
pub fn next_batch(prev: i32, left: i64, seen_tokens: i64, seen: i64) -> i32 {
    if seen == 0 || seen_tokens == 0 {
        return (prev.saturating_mul(2)).min(MAX_BATCH);
    }
    let avg = (seen_tokens / seen).max(1);
    let want = left / avg + left / avg / 4 + 4;
    want.clamp(8, i64::from(MAX_BATCH)) as i32
}
const MAX_BATCH: i32 = 2000;

/// The statements, prepared once per backend (their plans are kept; the
/// plan cache re-plans them after a schema change).
struct Plans {
    thread: OwnedPreparedStatement,
    system: OwnedPreparedStatement,
    batch: OwnedPreparedStatement,
    counts: OwnedPreparedStatement,
    count: OwnedPreparedStatement,
    store: OwnedPreparedStatement,
    prune: OwnedPreparedStatement,
}

thread_local! {
    static PLANS: RefCell<Option<std::rc::Rc<Plans>>> = const { RefCell::new(None) };
}

const TEXT: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::TEXTOID);
const INT8: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::INT8OID);
const INT4: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::INT4OID);
const TEXT_ARRAY: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::TEXTARRAYOID);
const INT8_ARRAY: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::INT8ARRAYOID);
const INT4_ARRAY: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::INT4ARRAYOID);
const BOOL: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::BOOLOID);

/// The message columns both reads return: seq, id, role, version, body,
/// body_enc, deleted, the row's own thread (a timeline may some day show
/// rows of another thread, e.g. a fork's shared prefix: a row is opened and
/// its count keyed by the thread it is stored in), and the stored count.
/// The system messages' stored counts are one index probe per row (a
/// subplan); a batch's are read by one range scan per thread (`counts`).
const MESSAGE_COLUMNS: &str = "m.seq, m.id, m.role, m.version, \
     CASE WHEN m.deleted_ts IS NULL THEN m.body::text END, \
     CASE WHEN m.deleted_ts IS NULL THEN m.body_enc::text END, \
     m.deleted_ts IS NOT NULL, m.thread";
const STORED_COUNT: &str = "(SELECT CASE WHEN $3 THEN tk.o200k ELSE tk.cl100k END \
       FROM progressdb.message_tokens tk \
      WHERE tk.thread = m.thread AND tk.seq = m.seq AND tk.version = m.version)";

fn plans(client: &SpiClient) -> std::rc::Rc<Plans> {
    if let Some(p) = PLANS.with(|p| p.borrow().clone()) {
        return p;
    }
    let prep = |sql: &str, args: &[PgOid], mutating: bool| {
        let st = if mutating {
            client.prepare_mut(sql, args)
        } else {
            client.prepare(sql, args)
        };
        st.unwrap_or_else(|e| panic!("context(): preparing {sql}: {e}"))
            .keep()
    };
    let p = std::rc::Rc::new(Plans {
        thread: prep(
            "SELECT t.id, t.last_seq, progressdb._authorize(t, $2, 'read') \
               FROM progressdb._thread_for($1, NULL, 'read') t",
            &[TEXT, TEXT],
            false,
        ),
        system: prep(
            &format!(
                "SELECT {MESSAGE_COLUMNS}, {STORED_COUNT} \
                   FROM progressdb.threads t \
                  CROSS JOIN LATERAL progressdb._timeline_system(t) m \
                  WHERE t.id = $1 AND m.seq > $2 AND m.deleted_ts IS NULL \
                  ORDER BY m.seq"
            ),
            &[TEXT, INT8, BOOL],
            false,
        ),
        batch: prep(
            &format!(
                "SELECT {MESSAGE_COLUMNS}, NULL::integer \
                   FROM progressdb.threads t \
                  CROSS JOIN LATERAL progressdb._timeline_desc(t, $2, $3) m \
                  WHERE t.id = $1 AND m.seq > $4 \
                  ORDER BY m.seq DESC"
            ),
            &[TEXT, INT8, INT4, INT8],
            false,
        ),
        counts: prep(
            "SELECT tk.seq, tk.version, CASE WHEN $4 THEN tk.o200k ELSE tk.cl100k END \
               FROM progressdb.message_tokens tk \
              WHERE tk.thread = $1 AND tk.seq >= $2 AND tk.seq <= $3",
            &[TEXT, INT8, INT8, BOOL],
            false,
        ),
        count: prep(
            "SELECT progressdb._timeline_count(t, $2, $3) FROM progressdb.threads t WHERE t.id = $1",
            &[TEXT, INT8, INT8],
            false,
        ),
        // In seq order, so that concurrent requests storing overlapping
        // counts take their row locks in the same order.
        store: prep(
            "INSERT INTO progressdb.message_tokens AS tk (thread, seq, version, o200k, cl100k) \
             SELECT u.t, u.s, u.v, CASE WHEN $5 THEN u.n END, CASE WHEN NOT $5 THEN u.n END \
               FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::integer[]) AS u(t, s, v, n) \
              ORDER BY u.t, u.s \
             ON CONFLICT (thread, seq, version) DO UPDATE \
                SET o200k = coalesce(tk.o200k, excluded.o200k), \
                    cl100k = coalesce(tk.cl100k, excluded.cl100k)",
            &[TEXT_ARRAY, INT8_ARRAY, INT4_ARRAY, INT4_ARRAY, BOOL],
            true,
        ),
        // Counts of versions an edit replaced.
        prune: prep(
            "DELETE FROM progressdb.message_tokens tk \
              USING unnest($1::text[], $2::bigint[], $3::integer[]) AS u(t, s, v) \
              WHERE tk.thread = u.t AND tk.seq = u.s AND tk.version < u.v",
            &[TEXT_ARRAY, INT8_ARRAY, INT4_ARRAY],
            true,
        ),
    });
    PLANS.with(|c| *c.borrow_mut() = Some(p.clone()));
    p
}

/// A message row as read. Its body is opened, mapped and (when no count is
/// stored) tokenized only when the walk gets to it (`Row::prepare`).
struct Row {
    thread: String,
    seq: i64,
    id: String,
    role: String,
    version: i32,
    deleted: bool,
    plain: Option<String>,
    sealed: Option<String>,
    stored: Option<i32>,
    msg: Option<LlmMessage>,
    tokens: i64,
    /// Counted now (not stored yet).
    fresh: bool,
}

impl Row {
    fn is_system(&self) -> bool {
        self.role == "system"
    }

    fn prepare(&mut self, tok: Tokenizer) {
        let thread = self.thread.as_str();
        let body_text = match self.sealed.as_deref() {
            Some(env) => {
                crypto::open_body_text(thread, &self.id, self.version, self.plain.as_deref(), env)
            }
            None => self.plain.take().unwrap_or_else(|| "null".into()),
        };
        let body: Value = serde_json::from_str(&body_text).unwrap_or_else(|_| {
            fail(
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                format!("message {} of thread {thread}: body is not JSON", self.id),
            )
        });
        let msg = map_message(&self.role, &body);
        match self.stored {
            Some(n) => self.tokens = i64::from(n),
            None => {
                self.tokens = msg.count_tokens(tok) as i64;
                self.fresh = true;
            }
        }
        self.msg = Some(msg);
    }
}

fn read_rows(table: pgrx::spi::SpiTupleTable) -> Vec<Row> {
    table
        .map(|r| {
            let text = |i: usize| r.get::<String>(i).expect("context(): reading a row");
            Row {
                thread: text(8).unwrap_or_default(),
                seq: r.get::<i64>(1).ok().flatten().expect("seq"),
                id: text(2).unwrap_or_default(),
                role: text(3).unwrap_or_default(),
                version: r.get::<i32>(4).ok().flatten().expect("version"),
                plain: text(5),
                sealed: text(6),
                deleted: r.get::<bool>(7).ok().flatten().unwrap_or(false),
                stored: r.get::<i32>(9).ok().flatten(),
                msg: None,
                tokens: 0,
                fresh: false,
            }
        })
        .collect()
}

/// Planner settings for this call's statements, as a function's `SET`
/// clause would apply them: index paths only (message_tokens grows from
/// empty, and a plan cached while it was tiny would otherwise scan it whole
/// for every message), and generic plans (the statements' shapes never
/// change; re-planning them per call cost more than running them). Undone
/// by `restore_planner` on return, and by the transaction's end on an error.
fn pin_planner() -> i32 {
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        for (name, value) in [
            (c"enable_seqscan", c"off"),
            (c"plan_cache_mode", c"force_generic_plan"),
        ] {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        level
    }
}

fn restore_planner(level: i32) {
    unsafe { pg_sys::AtEOXact_GUC(true, level) }
}

fn invalid(msg: String) -> ! {
    fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, msg)
}

/// The context window document as JSON text: the text face the gateway
/// calls (`context()` is its jsonb face, sql/context.sql). NULL format or
/// tokenizer mean the defaults.
#[pg_extern(volatile, name = "context_text")]
fn context_text(
    thread: Option<&str>,
    max_tokens: Option<i32>,
    actor: default!(Option<&str>, "NULL"),
    format: default!(Option<&str>, "'openai'"),
    tokenizer: default!(Option<&str>, "'o200k_base'"),
) -> String {
    let budget = check_budget(max_tokens).unwrap_or_else(|m| match max_tokens {
        None => fail(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, m),
        Some(_) => invalid(m),
    });
    let format = Format::parse(format).unwrap_or_else(|m| invalid(m));
    let tok = Tokenizer::parse(tokenizer).unwrap_or_else(|m| invalid(m));
    let o200k = tok == Tokenizer::O200k;
    let level = pin_planner();
    let doc = Spi::connect_mut(|client| {
        let p = plans(client);
        // The live thread (else P0002), and what the actor may read (42501;
        // with history 'joined', seqs up to `vis` are hidden from them).
        let (tid, last_seq, vis) = {
            let t = client
                .select(&p.thread, Some(1), &[thread.into(), actor.into()])
                .expect("context(): thread");
            let r = t.first();
            (
                r.get::<String>(1).ok().flatten().expect("thread id"),
                r.get::<i64>(2).ok().flatten().expect("last_seq"),
                r.get::<i64>(3).ok().flatten().unwrap_or(0),
            )
        };

        let mut fresh: Vec<(String, i64, i32, i32)> = Vec::new();
        let note = |fresh: &mut Vec<(String, i64, i32, i32)>, r: &Row| {
            if r.fresh {
                fresh.push((r.thread.clone(), r.seq, r.version, r.tokens as i32));
            }
        };

        // System messages first: always included, counted first.
        let mut system_rows = read_rows(
            client
                .select(
                    &p.system,
                    None,
                    &[tid.as_str().into(), vis.into(), o200k.into()],
                )
                .expect("context(): system messages"),
        );
        for r in &mut system_rows {
            r.prepare(tok);
        }
        let system_tokens: i64 = system_rows.iter().map(|r| r.tokens).sum();
        for r in &system_rows {
            note(&mut fresh, r);
        }
        if system_tokens > i64::from(budget) {
            invalid(format!(
                "the system messages of thread {tid} need {system_tokens} tokens ({}), more than max_tokens {budget}",
                tok.name()
            ));
        }

        // Then the newest messages that fit, read backwards in batches.
        let mut walk = Walk::new(i64::from(budget) - system_tokens);
        let mut fed: Vec<Row> = Vec::new();
        let mut before = last_seq + 1;
        let mut lim = first_batch(budget);
        let (mut seen, mut seen_tokens) = (0i64, 0i64);
        'batches: loop {
            let rows = read_rows(
                client
                    .select(
                        &p.batch,
                        None,
                        &[tid.as_str().into(), before.into(), lim.into(), vis.into()],
                    )
                    .expect("context(): timeline"),
            );
            let mut rows = rows;
            // The stored counts: one range scan per thread the batch shows.
            let mut ranges: Vec<(String, i64, i64)> = Vec::new();
            for r in rows.iter().filter(|r| !r.deleted) {
                match ranges.iter_mut().find(|g| g.0 == r.thread) {
                    Some(g) => {
                        g.1 = g.1.min(r.seq);
                        g.2 = g.2.max(r.seq);
                    }
                    None => ranges.push((r.thread.clone(), r.seq, r.seq)),
                }
            }
            let mut known = std::collections::HashMap::with_capacity(rows.len());
            for (th, lo, hi) in &ranges {
                let stored = client
                    .select(
                        &p.counts,
                        None,
                        &[th.as_str().into(), (*lo).into(), (*hi).into(), o200k.into()],
                    )
                    .expect("context(): stored counts");
                for r in stored {
                    let seq = r.get::<i64>(1).ok().flatten().expect("seq");
                    let version = r.get::<i32>(2).ok().flatten().expect("version");
                    if let Some(n) = r.get::<i32>(3).ok().flatten() {
                        known.insert((th.clone(), seq, version), n);
                    }
                }
            }
            for r in &mut rows {
                r.stored = known.get(&(r.thread.clone(), r.seq, r.version)).copied();
            }
            let n = rows.len();
            for mut r in rows {
                before = r.seq;
                if r.deleted || r.is_system() {
                    continue;
                }
                r.prepare(tok);
                note(&mut fresh, &r);
                seen += 1;
                seen_tokens += r.tokens;
                let msg = r.msg.as_ref().expect("a live row is mapped");
                let go = walk.push(Step {
                    seq: r.seq,
                    tokens: r.tokens,
                    calls_tools: msg.calls_tools(),
                    is_tool_result: msg.is_tool_result(),
                });
                fed.push(r);
                if !go {
                    break 'batches;
                }
            }
            if (n as i32) < lim || before <= vis + 1 {
                break;
            }
            lim = next_batch(lim, walk.left(), seen_tokens, seen);
        }
        walk.finish();

        // dropped: the visible live non-system messages left out -- those
        // older than the window (counted, not read) and orphaned tool results
        // inside it.
        let oldest_kept = walk.kept.iter().map(|&i| fed[i].seq).min();
        let dropped = if walk.stopped {
            let edge = oldest_kept.unwrap_or(last_seq + 1);
            let older_live: i64 = client
                .select(
                    &p.count,
                    Some(1),
                    &[tid.as_str().into(), vis.into(), edge.into()],
                )
                .expect("context(): count")
                .first()
                .get::<i64>(1)
                .ok()
                .flatten()
                .unwrap_or(0);
            let older_system = system_rows.iter().filter(|r| r.seq < edge).count() as i64;
            let inside = walk.orphans.iter().filter(|&&s| s > edge).count() as i64;
            (older_live - older_system).max(0) + inside
        } else {
            walk.orphans.len() as i64
        };

        // Store the counts computed now (not in a read-only transaction:
        // they are computed again next time).
        if !fresh.is_empty() && !unsafe { pg_sys::XactReadOnly } {
            fresh.sort_unstable();
            let threads: Vec<String> = fresh.iter().map(|f| f.0.clone()).collect();
            let seqs: Vec<i64> = fresh.iter().map(|f| f.1).collect();
            let versions: Vec<i32> = fresh.iter().map(|f| f.2).collect();
            let counts: Vec<i32> = fresh.iter().map(|f| f.3).collect();
            client
                .update(
                    &p.store,
                    None,
                    &[
                        threads.clone().into(),
                        seqs.clone().into(),
                        versions.clone().into(),
                        counts.into(),
                        o200k.into(),
                    ],
                )
                .expect("context(): storing token counts");
            if versions.iter().any(|&v| v > 1) {
                client
                    .update(
                        &p.prune,
                        None,
                        &[threads.into(), seqs.into(), versions.into()],
                    )
                    .expect("context(): pruning token counts");
            }
        }

        let system: Vec<&LlmMessage> = system_rows.iter().filter_map(|r| r.msg.as_ref()).collect();
        let window: Vec<&LlmMessage> = walk
            .kept
            .iter()
            .rev()
            .filter_map(|&i| fed[i].msg.as_ref())
            .collect();
        write_document(
            &tid,
            format,
            tok,
            system_tokens + walk.tokens,
            dropped,
            &system,
            &window,
        )
    });
    restore_planner(level);
    doc
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    fn step(seq: i64, tokens: i64) -> Step {
        Step {
            seq,
            tokens,
            calls_tools: false,
            is_tool_result: false,
        }
    }

    #[test]
    fn content_comes_from_content_then_text_then_the_body() {
        let m = map_message("user", &json!({"content": "hi", "text": "no"}));
        assert_eq!(m.content, json!("hi"));
        assert_eq!(
            map_message("user", &json!({"text": "yo"})).content,
            json!("yo")
        );
        assert_eq!(
            map_message("user", &json!({"b": 1, "a": [true, null]})).content,
            json!(r#"{"a":[true,null],"b":1}"#),
            "the body's canonical JSON text"
        );
        assert_eq!(map_message("user", &json!("plain")).content, json!("plain"));
        assert_eq!(map_message("user", &json!(42)).content, json!("42"));
        assert_eq!(map_message("user", &json!({"text": 7})).content, json!("7"));
        let parts = json!([{"type": "text", "text": "a"}]);
        assert_eq!(
            map_message("user", &json!({"content": parts})).content,
            parts
        );
        assert_eq!(
            map_message("assistant", &json!({"content": null, "tool_calls": [1]})).content,
            Value::Null
        );
    }

    #[test]
    fn tool_fields_only_on_their_roles() {
        let tc =
            json!([{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]);
        let a = map_message("assistant", &json!({"content": "x", "tool_calls": tc}));
        assert_eq!(a.tool_calls, Some(tc.clone()));
        assert!(a.calls_tools());
        let u = map_message("user", &json!({"content": "x", "tool_calls": tc}));
        assert_eq!(u.tool_calls, None);
        let empty = map_message("assistant", &json!({"content": "x", "tool_calls": []}));
        assert!(!empty.calls_tools(), "an empty list calls nothing");
        let t = map_message("tool", &json!({"content": "42", "tool_call_id": "c1"}));
        assert_eq!(t.tool_call_id, Some(json!("c1")));
        assert!(t.is_tool_result());
        assert_eq!(
            map_message("user", &json!({"tool_call_id": "c1", "text": "x"})).tool_call_id,
            None
        );
    }

    #[test]
    fn counts_equal_the_tokenizer_on_the_mapped_content() {
        for tok in [Tokenizer::O200k, Tokenizer::Cl100k] {
            let bpe = match tok {
                Tokenizer::O200k => tiktoken_rs::o200k_base().unwrap(),
                Tokenizer::Cl100k => tiktoken_rs::cl100k_base().unwrap(),
            };
            let text = "Hello, wörld! 你好 <|endoftext|> tokens\n\tindented";
            let m = map_message("user", &json!({"text": text}));
            assert_eq!(m.count_tokens(tok), bpe.encode_ordinary(text).len());
            let tc = json!([{"id": "c1", "type": "function",
                             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]);
            let a = map_message(
                "assistant",
                &json!({"content": "Let me check.", "tool_calls": tc}),
            );
            let want = bpe.encode_ordinary("Let me check.").len()
                + bpe.encode_ordinary(&canonical(&tc)).len();
            assert_eq!(a.count_tokens(tok), want);
            assert_eq!(
                map_message("assistant", &json!({"content": null})).count_tokens(tok),
                0
            );
        }
        // The two encodings differ (so the right one is used).
        let s = "ProgressDB stores conversations — 会話 — for LLMs.";
        assert_ne!(Tokenizer::O200k.count(s), 0);
        assert_eq!(
            Tokenizer::O200k.count(s),
            tiktoken_rs::o200k_base().unwrap().encode_ordinary(s).len()
        );
        assert_eq!(
            Tokenizer::Cl100k.count(s),
            tiktoken_rs::cl100k_base().unwrap().encode_ordinary(s).len()
        );
    }

    #[test]
    fn canonical_json_sorts_keys_and_is_compact() {
        let v: Value =
            serde_json::from_str(r#"{"b": {"z": 1, "a": "x\ny"}, "a": [1.5, "é"]}"#).unwrap();
        assert_eq!(canonical(&v), r#"{"a":[1.5,"é"],"b":{"a":"x\ny","z":1}}"#);
    }

    #[test]
    fn the_newest_messages_that_fit_and_no_gaps() {
        let mut w = Walk::new(10);
        assert!(w.push(step(5, 4)));
        assert!(w.push(step(4, 4)));
        assert!(
            !w.push(step(3, 3)),
            "3 does not fit: stop, even if older ones would"
        );
        assert!(!w.push(step(2, 1)));
        assert_eq!(w.kept, vec![0, 1]);
        assert_eq!(w.tokens, 8);
        assert!(w.stopped);
    }

    #[test]
    fn tiny_and_huge_budgets() {
        let mut w = Walk::new(1);
        assert!(!w.push(step(3, 2)));
        assert!(w.kept.is_empty());
        let mut w = Walk::new(i64::from(MAX_BUDGET));
        for s in (1..=100).rev() {
            assert!(w.push(step(s, 1000)));
        }
        w.finish();
        assert_eq!(w.kept.len(), 100);
        assert!(!w.stopped);
    }

    fn tool(seq: i64, tokens: i64) -> Step {
        Step {
            is_tool_result: true,
            ..step(seq, tokens)
        }
    }

    fn calls(seq: i64, tokens: i64) -> Step {
        Step {
            calls_tools: true,
            ..step(seq, tokens)
        }
    }

    #[test]
    fn tool_call_groups_are_kept_or_dropped_whole() {
        // user(1) assistant-calls(2) tool(3) tool(4) assistant(5), newest first
        let mut w = Walk::new(100);
        assert!(w.push(step(5, 10)));
        assert!(w.push(tool(4, 20)));
        assert!(w.push(tool(3, 20)));
        assert!(w.push(calls(2, 10)));
        assert!(w.push(step(1, 10)));
        assert_eq!(w.kept, vec![0, 1, 2, 3, 4]);
        assert_eq!(w.tokens, 70);

        // The group costs 50: with 50 left after message 5 it fits, with 49 not.
        for (budget, kept) in [(60, vec![0, 1, 2, 3]), (59, vec![0])] {
            let mut w = Walk::new(budget);
            w.push(step(5, 10));
            w.push(tool(4, 20));
            w.push(tool(3, 20));
            w.push(calls(2, 10));
            w.push(step(1, 10));
            w.finish();
            assert_eq!(w.kept, kept, "budget {budget}");
            assert!(w.orphans.is_empty(), "the unfit group is not orphaned");
        }
    }

    #[test]
    fn orphaned_tool_results_are_left_out() {
        // tool(3) follows user(2): its call is gone (deleted, or hidden).
        let mut w = Walk::new(100);
        w.push(tool(3, 5));
        w.push(step(2, 5));
        w.push(tool(1, 5));
        w.finish();
        assert_eq!(w.kept, vec![1]);
        assert_eq!(w.orphans, vec![3, 1]);
        assert_eq!(w.tokens, 5);
    }

    fn msg(role: &str, body: Value) -> LlmMessage {
        map_message(role, &body)
    }

    #[test]
    fn openai_document() {
        let sys = msg("system", json!({"text": "Be brief."}));
        let u = msg("user", json!({"text": "Weather in Paris?"}));
        let a = msg(
            "assistant",
            json!({"content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
        );
        let t = msg("tool", json!({"content": "18C", "tool_call_id": "c1"}));
        let doc = write_document(
            "th",
            Format::OpenAi,
            Tokenizer::O200k,
            42,
            3,
            &[&sys],
            &[&u, &a, &t],
        );
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["thread"], "th");
        assert_eq!(v["format"], "openai");
        assert_eq!(v["tokenizer"], "o200k_base");
        assert_eq!(v["tokens"], 42);
        assert_eq!(v["dropped"], 3);
        let m = v["messages"].as_array().unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            m[1],
            json!({"role": "user", "content": "Weather in Paris?"})
        );
        assert_eq!(m[2]["content"], Value::Null);
        assert_eq!(m[2]["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(
            m[3],
            json!({"role": "tool", "content": "18C", "tool_call_id": "c1"})
        );
        assert!(v.get("system").is_none());
    }

    #[test]
    fn anthropic_document() {
        let s1 = msg("system", json!({"text": "Be brief."}));
        let s2 = msg("system", json!({"text": "Answer in French."}));
        let u = msg("user", json!({"text": "Weather in Paris and Rome?"}));
        let a = msg(
            "assistant",
            json!({"content": "Checking.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]}),
        );
        let t1 = msg("tool", json!({"content": "18C", "tool_call_id": "c1"}));
        let t2 = msg("tool", json!({"content": "25C", "tool_call_id": "c2"}));
        let f = msg("assistant", json!({"text": "Il fait 18 et 25."}));
        let doc = write_document(
            "th",
            Format::Anthropic,
            Tokenizer::Cl100k,
            1,
            0,
            &[&s1, &s2],
            &[&u, &a, &t1, &t2, &f],
        );
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["system"], "Be brief.\n\nAnswer in French.");
        assert_eq!(v["tokenizer"], "cl100k_base");
        let m = v["messages"].as_array().unwrap();
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(
            m[0],
            json!({"role": "user", "content": "Weather in Paris and Rome?"})
        );
        assert_eq!(
            m[1],
            json!({"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "c2", "name": "weather", "input": {"city": "Rome"}}]})
        );
        assert_eq!(
            m[2],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "25C"}]})
        );
        assert_eq!(
            m[3],
            json!({"role": "assistant", "content": "Il fait 18 et 25."})
        );
        for turn in m {
            assert!(turn["role"] == "user" || turn["role"] == "assistant");
        }
    }

    #[test]
    fn batches_follow_the_messages_seen() {
        assert_eq!(first_batch(8000), 31);
        // 31 messages of 70 tokens seen, 5,830 tokens left: 83 more, plus a quarter.
        assert_eq!(next_batch(31, 5830, 31 * 70, 31), 83 + 20 + 4);
        assert_eq!(next_batch(31, 0, 100, 1), 8, "at least a few rows");
        assert_eq!(
            next_batch(31, 1000, 0, 0),
            62,
            "nothing seen (all deleted): double"
        );
        assert_eq!(next_batch(1500, 10_000_000, 10, 10), MAX_BATCH);
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(Format::parse(Some("gemini")).is_err());
        assert_eq!(Format::parse(None), Ok(Format::OpenAi));
        assert!(Tokenizer::parse(Some("p50k_base")).is_err());
        assert_eq!(Tokenizer::parse(None), Ok(Tokenizer::O200k));
        for bad in [Some(0), Some(-1), Some(MAX_BUDGET + 1), None] {
            assert!(check_budget(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_budget(Some(1)), Ok(1));
        assert_eq!(check_budget(Some(MAX_BUDGET)), Ok(MAX_BUDGET));
    }
}
