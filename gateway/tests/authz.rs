//! Authorization matrix: every route × every kind of caller → the expected
//! status, with keys configured (not the development profile). The oracle is
//! the spec table in docs/AUTHZ.md (read here at compile time), so the docs
//! and the gateway cannot disagree; every route of the OpenAPI document must
//! have a row. Each cell runs on fresh data: a new thread owned by alice, with
//! members rita (reader), mike (member) and ada (admin), one message by alice
//! that carries a reaction by alice, and one message by mike — so mutations
//! in one cell cannot mask another. With `AUTHZ_MATRIX_OUT=FILE` the observed
//! matrix is written there as markdown (tests/reliability/authz.sh).

mod common;

use common::*;
use reqwest::blocking::RequestBuilder;
use reqwest::Method;
use serde_json::json;

#[derive(Clone, Copy, Debug)]
enum Who {
    NoKey,
    FrontUnsigned,
    /// signed frontend users, by their role in the cell's thread
    FrontReader,
    FrontMember,
    FrontAdmin,
    FrontOwner,
    FrontOutsider,
    /// a backend key naming no user: the trusted service
    BackNone,
    BackAlice,
    BackBob,
    AdminBob,
}
use Who::*;

/// The spec table's caller columns, in its order.
const COLUMNS: [(&str, Who); 11] = [
    ("no key", NoKey),
    ("frontend, unsigned", FrontUnsigned),
    ("signed non-member", FrontOutsider),
    ("signed reader", FrontReader),
    ("signed member", FrontMember),
    ("signed admin", FrontAdmin),
    ("signed owner", FrontOwner),
    ("backend, no user", BackNone),
    ("backend as owner", BackAlice),
    ("backend as non-member", BackBob),
    ("admin key", AdminBob),
];

fn as_who(g: &Gateway, w: Who, m: Method, path: &str) -> RequestBuilder {
    match w {
        NoKey => g.req(m, path, None),
        // claims to be alice without proving it
        FrontUnsigned => g.req(m, path, Some(FRONTEND)).header("X-User-ID", "alice"),
        FrontReader => g.signed(m, path, "rita"),
        FrontMember => g.signed(m, path, "mike"),
        FrontAdmin => g.signed(m, path, "ada"),
        FrontOwner => g.signed(m, path, "alice"),
        FrontOutsider => g.signed(m, path, "bob"),
        BackNone => g.req(m, path, Some(BACKEND)),
        // a backend naming a user acts as that user (alice owns, bob is no member)
        BackAlice => g.req(m, path, Some(BACKEND)).header("X-User-ID", "alice"),
        BackBob => g.req(m, path, Some(BACKEND)).header("X-User-ID", "bob"),
        // admins act as the service: acting "as bob" on alice's thread still works
        AdminBob => g.req(m, path, Some(ADMIN)).header("X-User-ID", "bob"),
    }
}

const SPEC: &str = include_str!("../../docs/AUTHZ.md");

/// One row of the spec: `{t}`, `{m}` and `{m2}` in the path and body stand
/// for the cell's fresh thread, alice's message and mike's message.
struct Case {
    method: Method,
    path: String,
    body: Option<String>,
    /// Expected status per caller, in `COLUMNS` order.
    want: Vec<u16>,
}

fn cell(s: &str) -> &str {
    s.trim().trim_matches('`')
}

/// The rows of docs/AUTHZ.md's matrix (the table whose first header cell is
/// `route`); its caller columns must be `COLUMNS`, in order.
fn spec_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut in_table = false;
    for line in SPEC.lines().map(str::trim) {
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(cell).collect();
        if cells[0] == "route" {
            let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
            assert_eq!(cells[2..], names[..], "docs/AUTHZ.md: caller columns");
            in_table = true;
            continue;
        }
        if !in_table || cells[0].starts_with("---") {
            continue;
        }
        let (method, path) = cells[0].split_once(' ').expect("route cell: METHOD PATH");
        let want: Vec<u16> = cells[2..]
            .iter()
            .map(|c| {
                c.parse()
                    .unwrap_or_else(|_| panic!("status {c:?} in {line}"))
            })
            .collect();
        assert_eq!(want.len(), COLUMNS.len(), "{line}");
        cases.push(Case {
            method: method.parse().expect("method"),
            path: path.to_string(),
            body: (!cells[1].is_empty()).then(|| cells[1].to_string()),
            want,
        });
    }
    cases
}

/// Whether a spec path (placeholders and query included) is an instance of
/// an OpenAPI path template.
fn instance_of(path: &str, template: &str) -> bool {
    let path = path.split('?').next().unwrap();
    let (p, t): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), template.split('/').collect());
    p.len() == t.len()
        && p.iter()
            .zip(&t)
            .all(|(p, t)| p == t || (t.starts_with('{') && !p.is_empty()))
}

#[test]
fn authorization_matrix() {
    let dir = temp_dir("authz");
    let mut g = Gateway::embedded(&dir, free_port(), &keyed_args());
    g.wait_ready();
    let cases = spec_cases();

    // Every documented route has a row.
    let (s, doc) = send(g.req(Method::GET, "/openapi.json", None));
    assert_eq!(s, 200);
    let mut uncovered = Vec::new();
    let mut operations = 0;
    for (template, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&m.as_str()) {
                continue;
            }
            operations += 1;
            if !cases
                .iter()
                .any(|c| c.method == m && instance_of(&c.path, template))
            {
                uncovered.push(format!("{m} {template}"));
            }
        }
    }
    assert!(
        uncovered.is_empty(),
        "no row in docs/AUTHZ.md for {uncovered:?}"
    );

    let mut n = 0;
    let mut failures = Vec::new();
    let mut observed = String::new();
    for c in &cases {
        let mut row = vec![
            format!("`{} {}`", c.method, c.path),
            c.body
                .as_ref()
                .map(|b| format!("`{b}`"))
                .unwrap_or_default(),
        ];
        for (i, (_, who)) in COLUMNS.iter().enumerate() {
            n += 1;
            // fresh data for this cell, made by the trusted backend
            let t = format!("mx{n}");
            let (s, _) = send(
                g.req(Method::POST, "/v1/threads", Some(BACKEND))
                    .body(json!({"id": t, "author":"alice"}).to_string()),
            );
            assert_eq!(s, 200);
            let (s, m) = send(
                g.req(Method::POST, "/v1/messages", Some(BACKEND))
                    .body(json!({"thread": t, "author":"alice", "body":{"text":"hi"}}).to_string()),
            );
            assert_eq!(s, 200);
            let mid = m["id"].as_str().unwrap().to_string();
            let (s, _) = send(
                g.req(
                    Method::POST,
                    &format!("/v1/messages/{mid}/reactions"),
                    Some(BACKEND),
                )
                .body(json!({"id":"alice","reaction":"<3"}).to_string()),
            );
            assert_eq!(s, 200);
            for (user, role) in [("rita", "reader"), ("mike", "member"), ("ada", "admin")] {
                let (s, v) = send(
                    g.req(
                        Method::POST,
                        &format!("/v1/threads/{t}/members"),
                        Some(BACKEND),
                    )
                    .body(json!({"user": user, "role": role}).to_string()),
                );
                assert_eq!((s, v["role"].as_str()), (200, Some(role)), "{v}");
            }
            let (s, m2) = send(
                g.req(
                    Method::POST,
                    &format!("/v1/threads/{t}/messages"),
                    Some(BACKEND),
                )
                .header("X-User-ID", "mike")
                .body(json!({"body":{"text":"mike here"}}).to_string()),
            );
            assert_eq!(s, 200, "{m2}");
            let mid2 = m2["id"].as_str().unwrap().to_string();

            let fill = |s: &str| {
                s.replace("{t}", &t)
                    .replace("{m2}", &mid2)
                    .replace("{m}", &mid)
            };
            let path = fill(&c.path);
            let mut rb = as_who(&g, *who, c.method.clone(), &path);
            if let Some(b) = &c.body {
                rb = rb.body(fill(b));
            }
            let (got, body) = send(rb);
            if got == c.want[i] {
                row.push(got.to_string());
            } else {
                row.push(format!("**{got}** (spec {})", c.want[i]));
                failures.push(format!(
                    "{} {} as {:?}: want {}, got {} {}",
                    c.method, c.path, who, c.want[i], got, body
                ));
            }
        }
        observed.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    if let Ok(out) = std::env::var("AUTHZ_MATRIX_OUT") {
        let mut md = format!(
            "{} rows (every one of the {operations} documented operations has at least one) \
             × {} callers = {n} cells, each on fresh data; {} as the spec says, {} not.\n\n",
            cases.len(),
            COLUMNS.len(),
            n - failures.len(),
            failures.len()
        );
        let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
        md.push_str(&format!("| route | body | {} |\n", names.join(" | ")));
        md.push_str(&format!("|{}\n", "---|".repeat(names.len() + 2)));
        md.push_str(&observed);
        std::fs::write(out, md).expect("write AUTHZ_MATRIX_OUT");
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cells differ from docs/AUTHZ.md:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(n, cases.len() * COLUMNS.len());
    assert!(cases.len() >= operations);

    // a wrong signature, a signature for someone else, and an unknown key are 401s
    let (s, _) = send(
        g.req(Method::GET, "/v1/threads", Some(FRONTEND))
            .header("X-User-ID", "alice")
            .header("X-User-Signature", signature(SIGNING, "bob")),
    );
    assert_eq!(s, 401);
    let (s, _) = send(
        g.req(Method::GET, "/v1/threads", Some(FRONTEND))
            .header("X-User-ID", "alice")
            .header("X-User-Signature", signature("not-the-secret", "alice")),
    );
    assert_eq!(s, 401);
    let (s, _) = send(g.req(Method::GET, "/v1/threads", Some("sk_guess")));
    assert_eq!(s, 401);
    // the X-API-Key header and a lower-case scheme work too
    let (s, _) = send(
        g.req(Method::GET, "/admin/stats", None)
            .header("X-API-Key", BACKEND),
    );
    assert_eq!(s, 200);
    let (s, _) = send(
        g.req(Method::GET, "/admin/stats", None)
            .header("Authorization", format!("bearer {ADMIN}")),
    );
    assert_eq!(s, 200);
    // a signed frontend cannot write as, list as, or react as someone else
    let (s, _) = send(
        g.signed(Method::POST, "/v1/messages", "alice")
            .body(json!({"thread":"mine","author":"bob","body":1}).to_string()),
    );
    assert_eq!(s, 403);
    let (s, _) = send(g.signed(Method::GET, "/v1/threads?author=bob", "alice"));
    assert_eq!(s, 403);
    let (s, _) = send(
        g.signed(Method::POST, "/v1/threads", "alice")
            .body(json!({"id":"al1"}).to_string()),
    );
    assert_eq!(s, 200);
    let (s, m) = send(
        g.signed(Method::POST, "/v1/threads/al1/messages", "alice")
            .body(json!({"body":1}).to_string()),
    );
    assert_eq!(s, 200);
    assert_eq!(m["author"], "alice");
    let mid = m["id"].as_str().unwrap();
    let (s, _) = send(
        g.signed(
            Method::POST,
            &format!("/v1/threads/al1/messages/{mid}/reactions"),
            "alice",
        )
        .body(json!({"id":"bob","reaction":"x"}).to_string()),
    );
    assert_eq!(s, 403);
    let (s, m) = send(
        g.signed(
            Method::POST,
            &format!("/v1/threads/al1/messages/{mid}/reactions"),
            "alice",
        )
        .body(json!({"reaction":"x"}).to_string()),
    );
    assert_eq!((s, m["reactions"].clone()), (200, json!({"alice":"x"})));
    // a message seen through the wrong thread is not found
    let (s, _) = send(g.signed(
        Method::GET,
        &format!("/v1/threads/mx1/messages/{mid}"),
        "alice",
    ));
    assert!(s == 404 || s == 403, "{s}");
    let (s, _) = send(g.req(
        Method::GET,
        &format!("/v1/threads/mx1/messages/{mid}"),
        Some(ADMIN),
    ));
    assert_eq!(s, 404);
    // read state is a user's: an admin key marks it for the user it names, and
    // a call naming nobody is SQL's 22004 (400), for admin and backend keys alike
    let (s, v) = send(
        g.req(Method::POST, "/v1/threads/mx1/read", Some(ADMIN))
            .header("X-User-ID", "alice"),
    );
    assert_eq!((s, v["user"].clone()), (200, json!("alice")), "{v}");
    for key in [ADMIN, BACKEND] {
        let (s, v) = send(
            g.req(Method::POST, "/v1/threads/mx1/read", Some(key))
                .body("{}"),
        );
        assert_eq!(s, 400, "{v}");
    }
    // a frontend user manages members only as themselves
    let (s, _) = send(
        g.signed(Method::POST, "/v1/threads/mx1/members", "alice")
            .body(json!({"user":"zed","author":"bob"}).to_string()),
    );
    assert_eq!(s, 403);
    let (s, _) = send(g.signed(
        Method::DELETE,
        "/v1/threads/mx1/members/rita?author=bob",
        "alice",
    ));
    assert_eq!(s, 403);
    // a backend's author decides what it may list; without one it lists all
    let (_, l) = send(g.req(
        Method::GET,
        "/v1/threads?author=alice&limit=1000",
        Some(BACKEND),
    ));
    let alice_threads = l["threads"].as_array().unwrap().len();
    let (_, l) = send(g.req(Method::GET, "/v1/threads?limit=1000", Some(BACKEND)));
    assert!(l["threads"].as_array().unwrap().len() > alice_threads);

    assert!(g.stop().success());
}
