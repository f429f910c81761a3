//! The LLM context window, `progressdb.context()`, over real connections:
//! budgets from tiny to huge, system messages first, tool-call groups never
//! split, deleted and edited messages, both formats, history 'joined', an
//! encrypted thread, a thread of a million tokens answered from its newest
//! end, and refusals. Token counts are checked against the tokenizer crate
//! itself (tiktoken-rs), on the content the document shows.

use progressdb_tests::{call, TestCluster};
use serde_json::{json, Value};
use tokio_postgres::Client;

fn o200k(s: &str) -> usize {
    tiktoken_rs::o200k_base_singleton().encode_ordinary(s).len()
}

fn cl100k(s: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(s)
        .len()
}

/// Compact JSON with keys sorted: the text tool_calls are counted as.
fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                let mut m = serde_json::Map::new();
                for k in keys {
                    m.insert(k.clone(), sorted(&o[k]));
                }
                Value::Object(m)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            x => x.clone(),
        }
    }
    serde_json::to_string(&sorted(v)).unwrap()
}

/// What an (openai-format) message counts, by the crate.
fn expected_tokens(m: &Value, count: fn(&str) -> usize) -> usize {
    let content = match &m["content"] {
        Value::String(s) => count(s),
        Value::Null => 0,
        other => count(&canonical(other)),
    };
    content + m.get("tool_calls").map_or(0, |tc| count(&canonical(tc)))
}

async fn ctx(c: &Client, thread: &str, max: i32) -> Value {
    call(
        c,
        "SELECT progressdb.context($1, $2)::text",
        &[&thread, &max],
    )
    .await
}

async fn sqlstate(c: &Client, sql: &str) -> (String, String) {
    let err = c.query_one(sql, &[]).await.expect_err(sql);
    let db = err.as_db_error().expect("a server error");
    (db.code().code().to_string(), db.message().to_string())
}

fn roles(doc: &Value) -> Vec<String> {
    doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_string())
        .collect()
}

fn contents(doc: &Value) -> Vec<Value> {
    doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect()
}

async fn post(c: &Client, thread: &str, role: &str, body: Value) -> String {
    let m = call(
        c,
        "SELECT progressdb.post_message($1, 'alice', $2::text::jsonb, role => $3)::text",
        &[&thread, &body.to_string(), &role],
    )
    .await;
    m["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_window_rules() {
    let tc = TestCluster::start("context");
    let c = tc.connect("postgres").await;
    c.batch_execute("SELECT progressdb.create_thread('alice', 'Chat', 'chat')")
        .await
        .unwrap();
    let calls = json!([{"id": "call_1", "type": "function",
                        "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                       {"id": "call_2", "type": "function",
                        "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]);
    post(
        &c,
        "chat",
        "system",
        json!({"text": "You are a terse assistant."}),
    )
    .await;
    let u1 = post(&c, "chat", "user", json!({"text": "Hello there!"})).await;
    post(
        &c,
        "chat",
        "assistant",
        json!({"content": "Hi. What do you need?"}),
    )
    .await;
    let u2 = post(
        &c,
        "chat",
        "user",
        json!({"text": "Weather in Paris and Rome?"}),
    )
    .await;
    let call_msg = post(
        &c,
        "chat",
        "assistant",
        json!({"content": null, "tool_calls": calls}),
    )
    .await;
    post(
        &c,
        "chat",
        "tool",
        json!({"content": "18C, sunny", "tool_call_id": "call_1"}),
    )
    .await;
    post(
        &c,
        "chat",
        "tool",
        json!({"content": "25C, cloudy", "tool_call_id": "call_2"}),
    )
    .await;
    post(
        &c,
        "chat",
        "assistant",
        json!({"text": "Paris 18C, Rome 25C."}),
    )
    .await;

    // A huge budget: everything, oldest to newest, system first.
    let all = ctx(&c, "chat", 1_000_000).await;
    assert_eq!(
        roles(&all),
        [
            "system",
            "user",
            "assistant",
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant"
        ]
    );
    assert_eq!(all["thread"], "chat");
    assert_eq!(all["format"], "openai");
    assert_eq!(all["tokenizer"], "o200k_base");
    assert_eq!(all["dropped"], 0);
    let msgs = all["messages"].as_array().unwrap().clone();
    assert_eq!(msgs[4]["tool_calls"], calls);
    assert_eq!(msgs[4]["content"], Value::Null);
    assert_eq!(msgs[5]["tool_call_id"], "call_1");
    assert!(msgs[1].get("tool_calls").is_none() && msgs[1].get("tool_call_id").is_none());
    // Token counts are the crate's counts of the mapped content.
    let per: Vec<usize> = msgs.iter().map(|m| expected_tokens(m, o200k)).collect();
    let total: usize = per.iter().sum();
    assert_eq!(all["tokens"], total as i64);
    // ...computed once and stored, per message version.
    let stored: Vec<Option<i32>> = c
        .query(
            "SELECT o200k FROM progressdb.message_tokens WHERE thread = 'chat' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        stored,
        per.iter().map(|&n| Some(n as i32)).collect::<Vec<_>>()
    );
    // The other tokenizer counts (and stores) its own numbers.
    let cl = call(
        &c,
        "SELECT progressdb.context('chat', 1000000, tokenizer => 'cl100k_base')::text",
        &[],
    )
    .await;
    assert_eq!(cl["tokenizer"], "cl100k_base");
    let cl_total: usize = msgs.iter().map(|m| expected_tokens(m, cl100k)).sum();
    assert_eq!(cl["tokens"], cl_total as i64);
    assert_ne!(
        cl_total, total,
        "the two encodings count this text differently"
    );
    let both: i64 = c
        .query_one(
            "SELECT count(*) FROM progressdb.message_tokens WHERE thread = 'chat' AND o200k IS NOT NULL AND cl100k IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(both, 8);
    // A second request reads the stored counts: same answer.
    assert_eq!(ctx(&c, "chat", 1_000_000).await, all);

    // Tiny budgets. Exactly the system prompt: nothing else fits.
    let sys = per[0] as i32;
    let only = ctx(&c, "chat", sys).await;
    assert_eq!(roles(&only), ["system"]);
    assert_eq!(
        (only["tokens"].clone(), only["dropped"].clone()),
        (json!(sys), json!(7))
    );
    // Less than the system prompt: refused, naming the need.
    let (code, msg) = sqlstate(
        &c,
        &format!("SELECT progressdb.context('chat', {})", sys - 1),
    )
    .await;
    assert_eq!(code, "22023");
    assert!(msg.contains(&format!("need {sys} tokens")), "{msg}");

    // The newest message that fits, then the tool group: whole or not at all.
    let last = per[7] as i32;
    let group = (per[4] + per[5] + per[6]) as i32;
    for (budget, want) in [
        (sys + last, vec!["system", "assistant"]),
        (sys + last + group - 1, vec!["system", "assistant"]),
        (
            sys + last + per[6] as i32 + per[5] as i32,
            vec!["system", "assistant"],
        ),
        (
            sys + last + group,
            vec!["system", "assistant", "tool", "tool", "assistant"],
        ),
        (
            sys + last + group + per[3] as i32,
            vec!["system", "user", "assistant", "tool", "tool", "assistant"],
        ),
    ] {
        let d = ctx(&c, "chat", budget).await;
        assert_eq!(roles(&d), want, "budget {budget}");
        let n = want.len() as i64;
        assert_eq!(d["dropped"], 8 - n, "budget {budget}");
        let used: usize = d["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| expected_tokens(m, o200k))
            .sum();
        assert_eq!(d["tokens"], used as i64);
        assert!(used as i32 <= budget);
    }
    // Stops at the first message that does not fit, even when an older one would.
    let d = ctx(&c, "chat", sys + last + group + 1).await;
    assert_eq!(
        roles(&d).len(),
        5,
        "message u2 does not fit; u1 is not taken instead"
    );

    // Edits: the current version, counted anew; the old count goes.
    c.query_one(
        "SELECT progressdb.edit_message($1, '{\"text\":\"Weather in Paris, Rome and Oslo, please?\"}')::text",
        &[&u2],
    )
    .await
    .unwrap();
    let d = ctx(&c, "chat", 1_000_000).await;
    assert_eq!(
        d["messages"][3]["content"],
        "Weather in Paris, Rome and Oslo, please?"
    );
    let total2: usize = d["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| expected_tokens(m, o200k))
        .sum();
    assert_eq!(d["tokens"], total2 as i64);
    let versions: Vec<i32> = c
        .query(
            "SELECT tk.version FROM progressdb.message_tokens tk JOIN progressdb.messages m
                ON m.thread = tk.thread AND m.seq = tk.seq WHERE m.id = $1",
            &[&u2],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [2], "one count per current version");

    // Deleted messages never appear, nor count as dropped.
    c.execute("SELECT progressdb.delete_message($1)", &[&u1])
        .await
        .unwrap();
    let d = ctx(&c, "chat", 1_000_000).await;
    assert_eq!(roles(&d).len(), 7);
    assert!(!contents(&d).contains(&json!("Hello there!")));
    assert_eq!(d["dropped"], 0);
    let d = ctx(&c, "chat", sys + last).await;
    assert_eq!(d["dropped"], 5, "six other messages, one deleted");
    // Deleting the call leaves its results with nothing to answer: left out.
    c.execute("SELECT progressdb.delete_message($1)", &[&call_msg])
        .await
        .unwrap();
    let d = ctx(&c, "chat", 1_000_000).await;
    assert_eq!(roles(&d), ["system", "assistant", "user", "assistant"]);
    assert_eq!(d["dropped"], 2, "the two orphaned tool results");
    c.execute("SELECT progressdb.restore_message($1)", &[&call_msg])
        .await
        .unwrap();

    // The anthropic format.
    let a = call(
        &c,
        "SELECT progressdb.context('chat', 1000000, format => 'anthropic')::text",
        &[],
    )
    .await;
    assert_eq!(a["format"], "anthropic");
    assert_eq!(a["system"], "You are a terse assistant.");
    assert_eq!(a["tokens"], d["tokens"].as_i64().unwrap() + group as i64);
    let turns = a["messages"].as_array().unwrap();
    assert!(turns
        .iter()
        .all(|t| t["role"] == "user" || t["role"] == "assistant"));
    // u1 is deleted: the window starts with the assistant's greeting.
    assert_eq!(turns[0]["role"], "assistant");
    assert_eq!(
        turns[2],
        json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}}]})
    );
    assert_eq!(
        turns[3],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "25C, cloudy"}]})
    );
    assert_eq!(turns.len(), 5);

    // Several system messages: all first, in order, whatever their position.
    post(&c, "chat", "system", json!({"text": "Answer in French."})).await;
    let d = ctx(&c, "chat", 1_000_000).await;
    assert_eq!(roles(&d)[..2], ["system", "system"]);
    assert_eq!(d["messages"][1]["content"], "Answer in French.");
    assert_eq!(roles(&d).len(), 8);
    let a = call(
        &c,
        "SELECT progressdb.context('chat', 1000000, format => 'anthropic')::text",
        &[],
    )
    .await;
    assert_eq!(
        a["system"],
        "You are a terse assistant.\n\nAnswer in French."
    );

    // Refusals: 22023 for values out of range, 22004 for a missing budget.
    for (sql, want) in [
        ("SELECT progressdb.context('chat', 0)", "22023"),
        ("SELECT progressdb.context('chat', -5)", "22023"),
        ("SELECT progressdb.context('chat', 10000001)", "22023"),
        ("SELECT progressdb.context('chat', NULL)", "22004"),
        (
            "SELECT progressdb.context('chat', 100, format => 'gemini')",
            "22023",
        ),
        (
            "SELECT progressdb.context('chat', 100, tokenizer => 'p50k_base')",
            "22023",
        ),
        ("SELECT progressdb.context('nope', 100)", "P0002"),
        (
            "SELECT progressdb.context('chat', 100, actor => 'mallory')",
            "42501",
        ),
        ("SELECT progressdb.context(NULL, 100)", "22004"),
    ] {
        assert_eq!(sqlstate(&c, sql).await.0, want, "{sql}");
    }

    // History 'joined': a member reads from where they joined.
    c.batch_execute(
        "SELECT progressdb.create_thread('alice', 'J', 'j', history => 'joined');
         SELECT progressdb.post_message('j', 'alice', '{\"text\":\"Be kind.\"}', role => 'system');
         SELECT progressdb.post_message('j', 'alice', '{\"text\":\"before bob\"}');
         SELECT progressdb.add_member('j', 'bob');
         SELECT progressdb.post_message('j', 'alice', '{\"text\":\"after bob 1\"}');
         SELECT progressdb.post_message('j', 'alice', '{\"text\":\"after bob 2\"}');",
    )
    .await
    .unwrap();
    let bob = call(
        &c,
        "SELECT progressdb.context('j', 1000000, actor => 'bob')::text",
        &[],
    )
    .await;
    assert_eq!(contents(&bob), [json!("after bob 1"), json!("after bob 2")]);
    assert_eq!(bob["dropped"], 0);
    let bob = call(
        &c,
        "SELECT progressdb.context('j', 5, actor => 'bob')::text",
        &[],
    )
    .await;
    assert_eq!(contents(&bob), [json!("after bob 2")]);
    assert_eq!(bob["dropped"], 1, "only what bob can read counts");
    let alice = call(
        &c,
        "SELECT progressdb.context('j', 1000000, actor => 'alice')::text",
        &[],
    )
    .await;
    assert_eq!(roles(&alice), ["system", "user", "user", "user"]);

    // Bodies: content, else text, else the body as JSON text.
    c.batch_execute(
        "SELECT progressdb.create_thread('alice', 'B', 'bodies');
         SELECT progressdb.post_message('bodies', 'alice', '{\"text\":\"t\",\"content\":\"c\"}');
         SELECT progressdb.post_message('bodies', 'alice', '{\"b\":1,\"a\":{\"y\":2,\"x\":[1,2]}}');
         SELECT progressdb.post_message('bodies', 'alice', '{\"content\":[{\"type\":\"text\",\"text\":\"part\"}]}');",
    )
    .await
    .unwrap();
    let b = ctx(&c, "bodies", 1000).await;
    assert_eq!(
        contents(&b),
        [
            json!("c"),
            json!(r#"{"a":{"x":[1,2],"y":2},"b":1}"#),
            json!([{"type": "text", "text": "part"}])
        ]
    );
    let want: usize = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| expected_tokens(m, o200k))
        .sum();
    assert_eq!(b["tokens"], want as i64);

    // In a read-only transaction it answers, storing nothing.
    c.batch_execute("SELECT progressdb.create_thread('alice', 'R', 'ro'); SELECT progressdb.post_message('ro', 'alice', '{\"text\":\"hi\"}')")
        .await
        .unwrap();
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    let r = ctx(&c, "ro", 100).await;
    assert_eq!(r["tokens"], o200k("hi") as i64);
    c.batch_execute("COMMIT").await.unwrap();
}

/// 2,000 messages of about 500 tokens: a budget of 8,000 answers from the
/// newest end and tokenizes only what it reads; a budget above the thread
/// takes it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_token_thread_answers_from_the_newest_end() {
    let tc = TestCluster::start("context-big");
    let c = tc.connect("postgres").await;
    c.batch_execute(
        "SELECT progressdb.create_thread('u', 'Big', 'big');
         SELECT progressdb.post_message('big', 'u', jsonb_build_object('text', 'm' || i || repeat(' hello', 499)))
           FROM generate_series(1, 2000) i;",
    )
    .await
    .unwrap();
    let d = ctx(&c, "big", 8000).await;
    let got = contents(&d);
    let n = got.len();
    assert!(
        (10..=16).contains(&n),
        "{n} messages of ~500 tokens in 8,000"
    );
    for (k, content) in got.iter().enumerate() {
        let i = 2000 - n + 1 + k;
        assert!(
            content.as_str().unwrap().starts_with(&format!("m{i} ")),
            "message {k} is m{i}"
        );
    }
    assert_eq!(d["dropped"], (2000 - n) as i64);
    let tokens = d["tokens"].as_i64().unwrap();
    assert!(tokens <= 8000 && tokens > 8000 - 600, "{tokens}");
    let counted: i64 = c
        .query_one(
            "SELECT count(*) FROM progressdb.message_tokens WHERE thread = 'big'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        counted,
        n as i64 + 1,
        "only the messages walked are tokenized"
    );

    let whole = ctx(&c, "big", 2_000_000).await;
    assert_eq!(whole["messages"].as_array().unwrap().len(), 2000);
    assert_eq!(whole["dropped"], 0);
    let total = whole["tokens"].as_i64().unwrap();
    assert!(total > 1_000_000, "{total}");
    let want: usize = (1..=2000)
        .map(|i| o200k(&format!("m{i}{}", " hello".repeat(499))))
        .sum();
    assert_eq!(total, want as i64);
}

/// In an encrypted thread the context is plaintext (opened like every read)
/// and nothing new holds the text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_threads_answer_in_plaintext() {
    let tc = TestCluster::start("context-enc");
    tc.with_master_key(
        "k1:1111111111111111111111111111111111111111111111111111111111111111",
        &[],
    );

    let c = tc.connect("postgres").await;
    c.batch_execute(
        "SELECT progressdb.create_thread('alice', 'Vault', 'vault', encrypted => true);
         SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"Secret system prompt\"}', role => 'system');
         SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"classified question\"}');
         SELECT progressdb.post_message('vault', 'alice', '{\"content\":\"classified answer\"}', role => 'assistant');",
    )
    .await
    .unwrap();
    let sealed: i64 = c
        .query_one(
            "SELECT count(*) FROM progressdb.messages WHERE thread = 'vault' AND body IS NULL AND body_enc IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sealed, 3, "stored sealed");
    let d = ctx(&c, "vault", 1000).await;
    assert_eq!(
        contents(&d),
        [
            json!("Secret system prompt"),
            json!("classified question"),
            json!("classified answer")
        ]
    );
    let want =
        o200k("Secret system prompt") + o200k("classified question") + o200k("classified answer");
    assert_eq!(d["tokens"], want as i64);
    let a = call(
        &c,
        "SELECT progressdb.context('vault', 1000, format => 'anthropic')::text",
        &[],
    )
    .await;
    assert_eq!(a["system"], "Secret system prompt");
    // The side table holds numbers only.
    let cols: Vec<String> = c
        .query(
            "SELECT data_type FROM information_schema.columns
              WHERE table_schema = 'progressdb' AND table_name = 'message_tokens'
                AND column_name NOT IN ('thread')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        cols.iter().all(|t| t == "integer" || t == "bigint"),
        "{cols:?}"
    );
}
