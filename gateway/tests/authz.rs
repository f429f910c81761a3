//! Authorization matrix: every route × every kind of caller → the expected
//! status, with keys configured (not the development profile). Each cell runs
//! on fresh data: a new thread owned by alice, with members rita (reader),
//! mike (member) and ada (admin), one message by alice that carries a reaction
//! by alice, and one message by mike — so mutations in one cell cannot mask
//! another. The role table of the API contract decides every thread cell.

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
    BackAlice,
    BackBob,
    AdminBob,
}
use Who::*;
const ALL: [Who; 10] = [
    NoKey,
    FrontUnsigned,
    FrontReader,
    FrontMember,
    FrontAdmin,
    FrontOwner,
    FrontOutsider,
    BackAlice,
    BackBob,
    AdminBob,
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
        // a backend naming a user acts as that user (alice owns, bob is no member)
        BackAlice => g.req(m, path, Some(BACKEND)).header("X-User-ID", "alice"),
        BackBob => g.req(m, path, Some(BACKEND)).header("X-User-ID", "bob"),
        // admins act as the service: acting "as bob" on alice's thread still works
        AdminBob => g.req(m, path, Some(ADMIN)).header("X-User-ID", "bob"),
    }
}

struct Case {
    method: Method,
    /// `{t}`, `{m}` and `{m2}` are replaced by the cell's fresh thread id,
    /// alice's message id and mike's message id.
    path: &'static str,
    body: Option<serde_json::Value>,
    /// Expected status for each entry of `ALL`, in order.
    want: [u16; 10],
}

fn case(
    method: Method,
    path: &'static str,
    body: Option<serde_json::Value>,
    want: [u16; 10],
) -> Case {
    Case {
        method,
        path,
        body,
        want,
    }
}

/// The thread roles, lowest first.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Role {
    Reader,
    Member,
    Admin,
    Owner,
}

/// A thread route that needs role `min`: members with at least that role, the
/// owner acting through a backend, and the service (admin key) get `ok`;
/// everyone else with a valid identity 403.
fn needs(min: Role, ok: u16) -> [u16; 10] {
    let r = |have: Role| if have >= min { ok } else { 403 };
    [
        401,
        401,
        r(Role::Reader),
        r(Role::Member),
        r(Role::Admin),
        r(Role::Owner),
        403,
        ok,
        403,
        ok,
    ]
}

/// One status per caller, written out where the role table alone does not
/// decide (self-service, authorship, the last owner).
fn each(
    reader: u16,
    member: u16,
    admin: u16,
    owner: u16,
    back_alice: u16,
    admin_bob: u16,
) -> [u16; 10] {
    [
        401, 401, reader, member, admin, owner, 403, back_alice, 403, admin_bob,
    ]
}

#[test]
fn authorization_matrix() {
    let dir = temp_dir("authz");
    let mut g = Gateway::embedded(&dir, free_port(), &keyed_args());
    g.wait_ready();

    let msg = || Some(json!({"body":{"text":"x"}}));
    let react = || Some(json!({"reaction":"+1"}));
    // the by-id message routes are outside the frontend scope
    let backend_only_2xx = |ok: u16| [401, 403, 403, 403, 403, 403, 403, ok, 403, ok];
    let keyed_2xx = |ok: u16| [401, 401, ok, ok, ok, ok, ok, ok, ok, ok];
    let admin_surface = [401, 403, 403, 403, 403, 403, 403, 200, 200, 200];
    use Role::*;
    let cases = vec![
        // collection routes: everyone with a valid identity may use them for themselves
        case(Method::GET, "/v1/threads", None, keyed_2xx(200)),
        case(
            Method::POST,
            "/v1/threads",
            Some(json!({"title":"T","metadata":{"k":1},"history":"joined"})),
            keyed_2xx(200),
        ),
        case(
            Method::GET,
            "/v1/messages?thread={t}",
            None,
            needs(Reader, 200),
        ),
        case(
            Method::POST,
            "/v1/messages",
            Some(json!({"thread":"{t}","body":{"a":1}})),
            needs(Member, 200),
        ),
        // the thread itself
        case(Method::GET, "/v1/threads/{t}", None, needs(Reader, 200)),
        case(
            Method::GET,
            "/v1/threads/{t}/export",
            None,
            needs(Reader, 200),
        ),
        case(
            Method::PUT,
            "/v1/threads/{t}",
            Some(json!({"title":"N"})),
            needs(Admin, 200),
        ),
        case(
            Method::PUT,
            "/v1/threads/{t}",
            Some(json!({"metadata":{"tier":"gold"}})),
            needs(Admin, 200),
        ),
        case(
            Method::PUT,
            "/v1/threads/{t}",
            Some(json!({"history":"joined"})),
            needs(Owner, 200),
        ),
        case(Method::DELETE, "/v1/threads/{t}", None, needs(Owner, 204)),
        // lifecycle: retention and legal hold are the owners', so is purging
        // the thread; purging a message is moderation (admins), even one's own
        case(
            Method::PUT,
            "/v1/threads/{t}",
            Some(json!({"retention":"30 days"})),
            needs(Owner, 200),
        ),
        case(
            Method::PUT,
            "/v1/threads/{t}",
            Some(json!({"legal_hold":false})),
            needs(Owner, 200),
        ),
        case(
            Method::DELETE,
            "/v1/threads/{t}?purge=true",
            None,
            needs(Owner, 204),
        ),
        case(
            Method::DELETE,
            "/v1/threads/{t}/messages/{m}?purge=true",
            None,
            needs(Admin, 204),
        ),
        case(
            Method::DELETE,
            "/v1/threads/{t}/messages/{m2}?purge=true",
            None,
            needs(Admin, 204),
        ),
        // members
        case(
            Method::GET,
            "/v1/threads/{t}/members",
            None,
            needs(Reader, 200),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/members",
            Some(json!({"user":"zed"})),
            needs(Admin, 200),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/members",
            Some(json!({"user":"rita","role":"member"})),
            needs(Admin, 200),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/members",
            Some(json!({"user":"zed","role":"admin"})),
            needs(Owner, 200),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/members",
            Some(json!({"user":"ada","role":"owner"})),
            needs(Owner, 200),
        ),
        // anyone may leave; admins remove members, only owners remove admins
        case(
            Method::DELETE,
            "/v1/threads/{t}/members/rita",
            None,
            each(204, 403, 204, 204, 204, 204),
        ),
        case(
            Method::DELETE,
            "/v1/threads/{t}/members/mike",
            None,
            each(403, 204, 204, 204, 204, 204),
        ),
        case(
            Method::DELETE,
            "/v1/threads/{t}/members/ada",
            None,
            each(403, 403, 204, 204, 204, 204),
        ),
        // alice is the only owner: whoever may remove her gets 409, not 204
        case(
            Method::DELETE,
            "/v1/threads/{t}/members/alice",
            None,
            each(403, 403, 403, 409, 409, 409),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/members",
            Some(json!({"user":"alice","role":"admin"})),
            each(403, 403, 403, 409, 409, 409),
        ),
        // read state: every member; an admin key acts for the user it names
        // (bob, no member here)
        case(
            Method::POST,
            "/v1/threads/{t}/read",
            None,
            each(200, 200, 200, 200, 200, 403),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/read",
            Some(json!({"message":"{m}"})),
            each(200, 200, 200, 200, 200, 403),
        ),
        // forking: whoever reads the thread may fork it (and owns the fork)
        case(
            Method::POST,
            "/v1/threads/{t}/fork",
            Some(json!({"message":"{m}"})),
            needs(Reader, 200),
        ),
        // the LLM context window: whoever reads the thread, in both formats
        case(
            Method::GET,
            "/v1/threads/{t}/context?max_tokens=1000",
            None,
            needs(Reader, 200),
        ),
        case(
            Method::GET,
            "/v1/threads/{t}/context?max_tokens=1000&format=anthropic&tokenizer=cl100k_base",
            None,
            needs(Reader, 200),
        ),
        // the event feed: members read a thread's events (JSON form); every
        // identified caller reads their own feed; typing is for posters, and
        // always a user's (an admin key naming a non-member is refused)
        case(
            Method::GET,
            "/v1/threads/{t}/events",
            None,
            needs(Reader, 200),
        ),
        case(Method::GET, "/v1/events", None, keyed_2xx(200)),
        // search: every identified caller searches what they may read; one
        // thread only by those who may read it
        case(Method::GET, "/v1/search?q=hello", None, keyed_2xx(200)),
        case(
            Method::GET,
            "/v1/search?q=hello&thread={t}",
            None,
            needs(Reader, 200),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/typing",
            None,
            each(403, 204, 204, 204, 204, 403),
        ),
        // the timeline
        case(
            Method::GET,
            "/v1/threads/{t}/messages",
            None,
            needs(Reader, 200),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/messages",
            msg(),
            needs(Member, 200),
        ),
        case(
            Method::GET,
            "/v1/threads/{t}/messages/{m}",
            None,
            needs(Reader, 200),
        ),
        // edits: the author only (alice's message, then mike's)
        case(
            Method::PUT,
            "/v1/threads/{t}/messages/{m}",
            msg(),
            each(403, 403, 403, 200, 200, 200),
        ),
        case(
            Method::PUT,
            "/v1/threads/{t}/messages/{m2}",
            msg(),
            each(403, 200, 403, 403, 403, 200),
        ),
        // deletes and restores: the author, or an admin/owner moderating
        case(
            Method::DELETE,
            "/v1/threads/{t}/messages/{m}",
            None,
            needs(Admin, 204),
        ),
        case(
            Method::DELETE,
            "/v1/threads/{t}/messages/{m2}",
            None,
            each(403, 204, 204, 204, 204, 204),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/messages/{m}/restore",
            None,
            needs(Admin, 200),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/messages/{m2}/restore",
            None,
            each(403, 200, 200, 200, 200, 200),
        ),
        case(
            Method::GET,
            "/v1/threads/{t}/messages/{m}/versions",
            None,
            needs(Reader, 200),
        ),
        case(
            Method::GET,
            "/v1/threads/{t}/messages/{m}/replies",
            None,
            needs(Reader, 200),
        ),
        case(
            Method::GET,
            "/v1/threads/{t}/messages/{m}/reactions",
            None,
            needs(Reader, 200),
        ),
        case(
            Method::POST,
            "/v1/threads/{t}/messages/{m}/reactions",
            react(),
            needs(Member, 200),
        ),
        // alice's reaction: a frontend user removes only their own (the
        // gateway's 403 for the others)
        case(
            Method::DELETE,
            "/v1/threads/{t}/messages/{m}/reactions/alice",
            None,
            each(403, 403, 403, 204, 204, 204),
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
            [401, 403, 403, 403, 403, 403, 403, 200, 200, 403],
        ),
        // admin surface and metrics: backend and admin
        case(Method::GET, "/admin/health", None, admin_surface),
        case(Method::GET, "/admin/stats", None, admin_surface),
        case(Method::GET, "/admin/threads", None, admin_surface),
        case(Method::DELETE, "/admin/users/nobody", None, admin_surface),
        case(
            Method::GET,
            "/admin/users/alice/export",
            None,
            admin_surface,
        ),
        case(Method::GET, "/metrics", None, admin_surface),
        // probes: no key needed, any key accepted
        case(Method::GET, "/healthz", None, [200; 10]),
        case(Method::GET, "/readyz", None, [200; 10]),
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
            let path = fill(c.path);
            let mut rb = as_who(&g, *who, c.method.clone(), &path);
            if let Some(b) = &c.body {
                rb = rb.body(fill(&b.to_string()));
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
