//! Authorization matrix: every route × every kind of caller → the expected
//! status, with keys configured (not the development profile). Each cell runs
//! on fresh data (a new thread owned by alice with one message by alice that
//! carries a reaction by alice), so mutations in one cell cannot mask another.

mod common;

use common::*;
use reqwest::blocking::RequestBuilder;
use reqwest::Method;
use serde_json::json;

#[derive(Clone, Copy, Debug)]
enum Who {
    NoKey,
    FrontUnsigned,
    FrontAlice,
    FrontBob,
    BackAlice,
    BackBob,
    AdminBob,
}
use Who::*;
const ALL: [Who; 7] = [
    NoKey,
    FrontUnsigned,
    FrontAlice,
    FrontBob,
    BackAlice,
    BackBob,
    AdminBob,
];

fn as_who(g: &Gateway, w: Who, m: Method, path: &str) -> RequestBuilder {
    match w {
        NoKey => g.req(m, path, None),
        // claims to be alice without proving it
        FrontUnsigned => g.req(m, path, Some(FRONTEND)).header("X-User-ID", "alice"),
        FrontAlice => g.signed(m, path, "alice"),
        FrontBob => g.signed(m, path, "bob"),
        BackAlice => g.req(m, path, Some(BACKEND)).header("X-User-ID", "alice"),
        BackBob => g.req(m, path, Some(BACKEND)).header("X-User-ID", "bob"),
        // admins skip ownership: acting "as bob" on alice's data still works
        AdminBob => g.req(m, path, Some(ADMIN)).header("X-User-ID", "bob"),
    }
}

struct Case {
    method: Method,
    /// `{t}` and `{m}` are replaced by the cell's fresh thread and message ids.
    path: &'static str,
    body: Option<serde_json::Value>,
    /// Expected status for each entry of `ALL`, in order.
    want: [u16; 7],
}

fn case(
    method: Method,
    path: &'static str,
    body: Option<serde_json::Value>,
    want: [u16; 7],
) -> Case {
    Case {
        method,
        path,
        body,
        want,
    }
}

#[test]
fn authorization_matrix() {
    let dir = temp_dir("authz");
    let mut g = Gateway::embedded(&dir, 55421, &keyed_args());
    g.wait_ready();

    let msg = || Some(json!({"body":{"text":"x"}}));
    let react = || Some(json!({"reaction":"+1"}));
    // NoKey, FrontUnsigned, FrontAlice, FrontBob, BackAlice, BackBob, AdminBob
    let owner_only_2xx = |ok: u16| [401, 401, ok, 403, ok, 403, ok];
    let backend_only_2xx = |ok: u16| [401, 403, 403, 403, ok, 403, ok];
    let cases = vec![
        // collection routes: everyone with a valid identity may use them for themselves
        case(
            Method::GET,
            "/v1/threads",
            None,
            [401, 401, 200, 200, 200, 200, 200],
        ),
        case(
            Method::POST,
            "/v1/threads",
            Some(json!({"title":"T"})),
            [401, 401, 200, 200, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/v1/messages?thread={t}",
            None,
            owner_only_2xx(200),
        ),
        case(
            Method::POST,
            "/v1/messages",
            Some(json!({"thread":"{t}","body":{"a":1}})),
            owner_only_2xx(200),
        ),
        // thread-scoped routes: frontends allowed, ownership enforced by SQL
        case(Method::GET, "/v1/threads/{t}", None, owner_only_2xx(200)),
        case(
            Method::PUT,
            "/v1/threads/{t}",
            Some(json!({"title":"N"})),
            owner_only_2xx(200),
        ),
        case(Method::DELETE, "/v1/threads/{t}", None, owner_only_2xx(204)),
        case(
            Method::GET,
            "/v1/threads/{t}/messages",
            None,
            owner_only_2xx(200),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/messages",
            msg(),
            owner_only_2xx(200),
        ),
        case(
            Method::GET,
            "/v1/threads/{t}/messages/{m}",
            None,
            owner_only_2xx(200),
        ),
        case(
            Method::PUT,
            "/v1/threads/{t}/messages/{m}",
            msg(),
            owner_only_2xx(200),
        ),
        case(
            Method::DELETE,
            "/v1/threads/{t}/messages/{m}",
            None,
            owner_only_2xx(204),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/messages/{m}/restore",
            None,
            owner_only_2xx(200),
        ),
        case(
            Method::GET,
            "/v1/threads/{t}/messages/{m}/versions",
            None,
            owner_only_2xx(200),
        ),
        case(
            Method::GET,
            "/v1/threads/{t}/messages/{m}/replies",
            None,
            owner_only_2xx(200),
        ),
        case(
            Method::GET,
            "/v1/threads/{t}/messages/{m}/reactions",
            None,
            owner_only_2xx(200),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/messages/{m}/reactions",
            react(),
            owner_only_2xx(200),
        ),
        case(
            Method::DELETE,
            "/v1/threads/{t}/messages/{m}/reactions/alice",
            None,
            owner_only_2xx(204),
        ),
        // message routes by id: outside the frontend scope
        case(Method::GET, "/v1/messages/{m}", None, backend_only_2xx(200)),
        case(
            Method::PUT,
            "/v1/messages/{m}",
            msg(),
            backend_only_2xx(200),
        ),
        case(
            Method::DELETE,
            "/v1/messages/{m}",
            None,
            backend_only_2xx(204),
        ),
        case(
            Method::POST,
            "/v1/messages/{m}/restore",
            None,
            backend_only_2xx(200),
        ),
        case(
            Method::GET,
            "/v1/messages/{m}/versions",
            None,
            backend_only_2xx(200),
        ),
        case(
            Method::GET,
            "/v1/messages/{m}/replies",
            None,
            backend_only_2xx(200),
        ),
        case(
            Method::GET,
            "/v1/messages/{m}/reactions",
            None,
            backend_only_2xx(200),
        ),
        case(
            Method::POST,
            "/v1/messages/{m}/reactions",
            react(),
            backend_only_2xx(200),
        ),
        case(
            Method::DELETE,
            "/v1/messages/{m}/reactions/alice",
            None,
            backend_only_2xx(204),
        ),
        // signing: backend keys only (not admin)
        case(
            Method::POST,
            "/v1/_sign",
            Some(json!({"userId":"u1"})),
            [401, 403, 403, 403, 200, 200, 403],
        ),
        // admin surface and metrics: backend and admin
        case(
            Method::GET,
            "/admin/health",
            None,
            [401, 403, 403, 403, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/admin/stats",
            None,
            [401, 403, 403, 403, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/admin/threads",
            None,
            [401, 403, 403, 403, 200, 200, 200],
        ),
        case(
            Method::GET,
            "/metrics",
            None,
            [401, 403, 403, 403, 200, 200, 200],
        ),
        // probes: no key needed, any key accepted
        case(Method::GET, "/healthz", None, [200; 7]),
        case(Method::GET, "/readyz", None, [200; 7]),
    ];

    let mut n = 0;
    let mut failures = Vec::new();
    for c in &cases {
        for (i, who) in ALL.iter().enumerate() {
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

            let path = c.path.replace("{t}", &t).replace("{m}", &mid);
            let mut rb = as_who(&g, *who, c.method.clone(), &path);
            if let Some(b) = &c.body {
                rb = rb.body(b.to_string().replace("{t}", &t));
            }
            let (got, body) = send(rb);
            if got != c.want[i] {
                failures.push(format!(
                    "{} {} as {:?}: want {}, got {} {}",
                    c.method, c.path, who, c.want[i], got, body
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(n, cases.len() * ALL.len());

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
