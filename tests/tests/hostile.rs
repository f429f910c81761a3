//! Hostile input into every argument of every public SQL function: SQL
//! metacharacters, unicode edge cases, NUL bytes, 1 MB strings, deeply nested
//! JSON, numbers at the edges. The functions are enumerated from the catalog
//! (so a new function is covered without touching this file); each call runs
//! in its own transaction, rolled back, on a thread with members, messages,
//! edits and reactions. A hostile value may be accepted (it is only data) or
//! refused with a client error; it must never end in an internal error (a
//! panic surfaces as XX000), a lost connection, or a SQLSTATE that says the
//! function itself is broken. With `HOSTILE_REPORT=FILE` a markdown summary
//! is written there (tests/reliability/hostile.sh).

use progressdb_tests::TestCluster;
use std::collections::BTreeMap;
use tokio_postgres::Client;

/// Hostile text: SQL metacharacters, format strings, paths, markup, unicode
/// edge cases (bidi override, zero-width joiner sequence, BOM, combining mark,
/// the last code point, a lone surrogate's replacement), NUL, control
/// characters and sizes at the edges.
fn hostile_texts() -> Vec<(&'static str, String)> {
    vec![
        ("sql-quote", "'; DROP TABLE progressdb.messages; --".into()),
        ("sql-or", "\" OR \"1\"=\"1".into()),
        ("dollar-quote", "$$; SELECT pg_sleep(10); $$".into()),
        ("backslashes", "\\\\x00 \\' \\\"".into()),
        ("format", "%s%n%x%d{}{0}".into()),
        ("like", "%_*?[]".into()),
        ("path", "../../etc/passwd".into()),
        ("markup", "<script>alert(1)</script>".into()),
        ("json-text", "{\"$gt\":\"\"}".into()),
        ("empty", String::new()),
        ("spaces", "   \t ".into()),
        ("newlines", "a\nb\r\nc".into()),
        ("bidi", "\u{202E}txt.exe".into()),
        ("zwj", "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}".into()),
        ("bom", "\u{FEFF}alice".into()),
        ("combining", "e\u{301}\u{301}\u{301}".into()),
        ("max-code-point", "\u{10FFFF}".into()),
        ("replacement", "\u{FFFD}".into()),
        ("nul", "a\u{0}b".into()),
        ("control", "\u{1}\u{7}\u{1B}[31m".into()),
        ("1mb-ascii", "a".repeat(1 << 20)),
        ("1mb-emoji", "\u{1F600}".repeat(1 << 18)),
    ]
}

fn hostile_json() -> Vec<(&'static str, String)> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    vec![
        ("json-null", "null".into()),
        ("json-scalar", "42".into()),
        ("json-string", "\"text\"".into()),
        ("json-array", "[1,2,3]".into()),
        ("json-empty", "{}".into()),
        ("json-nul-escape", "{\"text\":\"a\\u0000b\"}".into()),
        ("json-huge-number", "{\"n\":1e400000}".into()),
        ("json-deep-array", deep),
        ("json-deep-object", deep_obj),
        (
            "json-1mb",
            format!("{{\"text\":\"{}\"}}", "b".repeat(1 << 20)),
        ),
        (
            "json-sql",
            "{\"text\":\"'; DROP TABLE progressdb.threads; --\",\"v\":1,\"id\":\"x\",\"type\":\"thread\"}"
                .into(),
        ),
        (
            "json-many-keys",
            format!(
                "{{{}}}",
                (0..20_000)
                    .map(|i| format!("\"k{i}\":{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        ("json-not-json", "{not json".into()),
    ]
}

fn hostile_numbers() -> Vec<(&'static str, String)> {
    [
        ("zero", "0"),
        ("minus-one", "-1"),
        ("int-max", "2147483647"),
        ("int-min", "-2147483648"),
        ("int-overflow", "2147483648"),
        ("bigint-max", "9223372036854775807"),
        ("fraction", "1.5"),
        ("not-a-number", "NaN"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

fn hostile_intervals() -> Vec<(&'static str, String)> {
    [
        ("negative", "-1 day"),
        ("zero-interval", "0"),
        ("huge", "178000000 years"),
        ("overflow", "999999999999 years"),
        ("garbage", "soon"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

/// SQLSTATEs that say the function, not its input, is broken.
fn broken(code: &str) -> bool {
    let class = &code[..2];
    matches!(class, "XX" | "58" | "0A" | "25" | "08" | "39" | "38")
        // undefined function/column/table, wrong types, syntax: a bug in the function
        || (class == "42" && code != "42501")
}

struct Arg {
    name: String,
    ty: String,
    has_default: bool,
}

struct Function {
    name: String,
    args: Vec<Arg>,
}

/// Every public (not `_`-prefixed) function of the extension, with its
/// argument names and types, from the catalog.
async fn functions(c: &Client) -> Vec<Function> {
    let rows = c
        .query(
            "SELECT p.proname::text,
                    coalesce(p.proargnames, '{}')::text[],
                    array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t)::text[],
                    p.pronargdefaults::int
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'progressdb' AND p.prokind = 'f'
               AND p.proname !~ '^_' AND p.prorettype <> 'trigger'::regtype
               AND p.prorettype <> 'internal'::regtype
             ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("catalog");
    rows.iter()
        .map(|r| {
            let names: Vec<String> = r.get(1);
            let types: Vec<String> = r.get(2);
            let defaults: i32 = r.get(3);
            let first_default = types.len() - defaults as usize;
            Function {
                name: r.get(0),
                args: types
                    .into_iter()
                    .enumerate()
                    .map(|(i, ty)| Arg {
                        name: names.get(i).cloned().unwrap_or_default(),
                        ty,
                        has_default: i >= first_default,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A valid value for an argument, so that only the hostile one is wrong.
fn baseline(f: &str, arg: &str, msg: &str) -> Option<String> {
    let thread_fn = f.contains("thread") && !f.contains("message");
    Some(match arg {
        "thread" | "in_thread" => "h1".into(),
        "id" if f == "create_thread" || f == "fork_thread" => return None,
        "id" if thread_fn => "h1".into(),
        "id" | "at_message" | "message" => msg.into(),
        "actor" | "author" | "user" | "identity" => "alice".into(),
        "member" => "rita".into(),
        "body" => "{\"text\":\"hi\"}".into(),
        "reaction" => "+1".into(),
        "q" => "hello".into(),
        "max_tokens" => "1000".into(),
        "title" => "T".into(),
        "role" => "member".into(),
        "rec" => {
            "{\"v\":1,\"type\":\"thread\",\"id\":\"imp\",\"author\":\"alice\",\"created_ts\":1}"
                .into()
        }
        _ => return None,
    })
}

fn hostile_for(ty: &str) -> Vec<(&'static str, String)> {
    match ty {
        "text" | "character varying" => hostile_texts(),
        "jsonb" | "json" => hostile_json()
            .into_iter()
            .chain(hostile_texts().into_iter().take(3))
            .collect(),
        "integer" | "bigint" | "smallint" => hostile_numbers(),
        "interval" => hostile_intervals(),
        "text[]" => vec![
            ("array-sql", "{\"'; DROP TABLE x; --\"}".into()),
            ("array-empty", "{}".into()),
            ("array-null", "{NULL}".into()),
            ("array-garbage", "{{".into()),
        ],
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_arguments_never_break_a_function() {
    let tc = TestCluster::start("hostile");
    let c = tc.connect("postgres").await;
    c.batch_execute(
        "SELECT progressdb.create_thread('alice', 'Ops', 'h1');
         SELECT progressdb.add_member('h1', 'rita', 'reader');
         SELECT progressdb.add_member('h1', 'mike', 'member');",
    )
    .await
    .expect("fixture");
    let row = c
        .query_one(
            "SELECT progressdb.post_message('h1', 'alice', '{\"text\":\"hello world\"}')->>'id'",
            &[],
        )
        .await
        .unwrap();
    let msg: String = row.get(0);
    c.batch_execute(&format!(
        "SELECT progressdb.edit_message('{msg}', '{{\"text\":\"hello again\"}}', 'alice');
         SELECT progressdb.add_reaction('{msg}', 'mike', ':)');
         SELECT progressdb.post_message('h1', 'mike', '{{\"text\":\"a reply\"}}', reply_to => '{msg}');"
    ))
    .await
    .expect("fixture");

    let funcs = functions(&c).await;
    assert!(funcs.len() >= 30, "only {} functions found", funcs.len());
    let mut calls = 0usize;
    let mut accepted = 0usize;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut per_function: Vec<(String, usize)> = Vec::new();
    for f in &funcs {
        let before = calls;
        for (target, arg) in f.args.iter().enumerate() {
            for (label, value) in hostile_for(&arg.ty) {
                // Named arguments: the target gets the hostile value, the
                // others a valid one (or their default, or NULL).
                let mut params: Vec<String> = Vec::new();
                let mut sql_args = Vec::new();
                for (i, a) in f.args.iter().enumerate() {
                    let v = if i == target {
                        Some(value.clone())
                    } else {
                        baseline(&f.name, &a.name, &msg)
                    };
                    let expr = match v {
                        Some(v) => {
                            params.push(v);
                            format!("${}::text::{}", params.len(), a.ty)
                        }
                        None if a.has_default => continue,
                        None => format!("NULL::{}", a.ty),
                    };
                    sql_args.push(if a.name.is_empty() {
                        expr
                    } else {
                        format!("\"{}\" => {expr}", a.name)
                    });
                }
                let sql = format!(
                    "SELECT count(*) FROM progressdb.{}({}) AS r",
                    f.name,
                    sql_args.join(", ")
                );
                let used: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                calls += 1;
                c.batch_execute("BEGIN").await.expect("begin");
                let res = c.query_one(&sql, &used).await;
                c.batch_execute("ROLLBACK")
                    .await
                    .expect("the connection survives every call (a crashed backend would lose it)");
                match res {
                    Ok(_) => accepted += 1,
                    Err(e) => {
                        let Some(db) = e.as_db_error() else {
                            bad.push(format!(
                                "{}({} = {label}): no server error: {e}",
                                f.name, arg.name
                            ));
                            continue;
                        };
                        let code = db.code().code().to_string();
                        if broken(&code) {
                            bad.push(format!(
                                "{}({} = {label}): {code} {}",
                                f.name,
                                arg.name,
                                db.message()
                            ));
                        }
                        *codes.entry(code).or_default() += 1;
                    }
                }
            }
        }
        per_function.push((f.name.clone(), calls - before));
    }
    // the fixture is still whole: every call was rolled back
    let row = c
        .query_one(
            "SELECT count(*)::int FROM progressdb.messages WHERE thread = 'h1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);

    if let Ok(out) = std::env::var("HOSTILE_REPORT") {
        let mut md = format!(
            "**SQL functions** (`tests/tests/hostile.rs`): {} public functions from the catalog, \
             every argument of type text, jsonb, integer, interval or text[] given each hostile \
             value of its type while the others stay valid: {calls} calls, {accepted} accepted as \
             data, {} refused with a client error, {} broken (internal error, lost connection, \
             or a SQLSTATE of a broken function).\n\n| SQLSTATE | refusals |\n|---|---|\n",
            funcs.len(),
            calls - accepted - bad.len(),
            bad.len()
        );
        for (code, n) in &codes {
            md.push_str(&format!("| `{code}` | {n} |\n"));
        }
        std::fs::write(out, md).expect("write HOSTILE_REPORT");
    }
    assert!(
        per_function.iter().filter(|(_, n)| *n > 0).count() >= 30,
        "{per_function:?}"
    );
    assert!(
        bad.is_empty(),
        "{} of {calls} calls broke:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
