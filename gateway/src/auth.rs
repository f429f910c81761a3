//! API keys, user signatures, route scopes and author resolution.
//!
//! Three roles by key (frontend / backend / admin). End users are named by
//! `X-User-ID` and proven by `X-User-Signature` = lowercase hex of
//! HMAC-SHA256(signing secret, user id). Everything secret is compared in
//! constant time, and no secret is ever logged.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

use crate::config::Keys;
use crate::error::ApiError;
use crate::AppState;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Frontend,
    Backend,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Frontend => "frontend",
            Role::Backend => "backend",
            Role::Admin => "admin",
        }
    }
}

/// The configured keys, held as SHA-256 digests so that comparing a presented
/// key takes the same time whatever its length or content.
pub struct KeyRing {
    keys: Vec<([u8; 32], Role)>,
    signing: Vec<Vec<u8>>,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Lowercase hex HMAC-SHA256(secret, user).
pub fn sign(secret: &[u8], user: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(user.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl KeyRing {
    pub fn new(k: &Keys) -> Self {
        let mut keys = Vec::new();
        for (list, role) in [
            (&k.frontend, Role::Frontend),
            (&k.backend, Role::Backend),
            (&k.admin, Role::Admin),
        ] {
            keys.extend(list.iter().map(|x| (digest(x), role)));
        }
        KeyRing {
            keys,
            signing: k.signing.iter().map(|s| s.as_bytes().to_vec()).collect(),
        }
    }

    /// The role of `key` and its index (a non-secret rate-limit bucket name).
    /// Every configured key is compared; there is no early exit.
    pub fn classify(&self, key: &str) -> Option<(Role, usize)> {
        let d = digest(key);
        let mut found = None;
        for (i, (k, role)) in self.keys.iter().enumerate() {
            if bool::from(k.ct_eq(&d)) && found.is_none() {
                found = Some((*role, i));
            }
        }
        found
    }

    /// Signs with the first signing secret (the one new signatures use).
    pub fn sign(&self, user: &str) -> Option<String> {
        self.signing.first().map(|s| sign(s, user))
    }

    /// True when `sig` is a valid signature of `user` under any signing secret.
    pub fn verify(&self, user: &str, sig: &str) -> bool {
        let Ok(given) = hex::decode(sig.trim()) else {
            return false;
        };
        let mut ok = false;
        for secret in &self.signing {
            let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
            mac.update(user.as_bytes());
            let expected = mac.finalize().into_bytes();
            // ct_eq on slices of different lengths is simply false.
            ok |= bool::from(expected.as_slice().ct_eq(&given));
        }
        ok
    }
}

/// `Authorization: Bearer <key>` (scheme case-insensitive), else `X-API-Key`.
pub fn extract_key(h: &HeaderMap) -> Option<String> {
    if let Some(v) = h.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some((scheme, rest)) = v.split_once(char::is_whitespace) {
            if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
                return Some(rest.trim().to_string());
            }
        }
    }
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// Which routes a role may use. Frontend keys live in browsers, so they get
/// only the documented public surface: `GET|POST /v1/messages`, `GET /v1/events`,
/// `GET /v1/search` and the thread-scoped routes, never signing, admin or metrics.
pub fn scope_allows(role: Role, method: &Method, path: &str) -> bool {
    let is_threads = path == "/v1/threads" || path.starts_with("/v1/threads/");
    match role {
        Role::Admin => path != "/v1/_sign",
        Role::Backend => true,
        Role::Frontend => {
            (path == "/v1/messages" && (method == Method::GET || method == Method::POST))
                || ((path == "/v1/events" || path == "/v1/search") && method == Method::GET)
                || is_threads
        }
    }
}

/// Who is calling, as established by the auth middleware.
#[derive(Clone, Debug)]
pub struct Caller {
    pub role: Role,
    /// The user proven by a valid signature.
    pub signed_user: Option<String>,
    /// `X-User-ID` as sent (equal to `signed_user` when signed).
    pub header_user: Option<String>,
    /// Development profile: frontends may name a user without a signature.
    pub dev: bool,
}

/// Author of new content and the `actor` whose ownership the SQL API checks
/// (`None` = trusted service, no ownership check).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub author: Option<String>,
    pub actor: Option<String>,
}

impl Caller {
    /// Resolves the author from body `author`, then `X-User-ID`, then
    /// `?author=`, and the actor from the role.
    pub fn identity(
        &self,
        body_author: Option<&str>,
        query_author: Option<&str>,
    ) -> Result<Identity, ApiError> {
        let candidates = [body_author, self.header_user.as_deref(), query_author];
        match self.role {
            Role::Frontend => {
                let user = match &self.signed_user {
                    Some(u) => u.clone(),
                    None if self.dev => candidates
                        .iter()
                        .flatten()
                        .next()
                        .map(|s| s.to_string())
                        .ok_or_else(|| {
                        ApiError::unauthorized(
                            "frontend requests must name a user (X-User-ID) with a signature",
                        )
                    })?,
                    None => return Err(ApiError::unauthorized("missing signature headers")),
                };
                // A frontend user cannot act or write as anyone else.
                if candidates.iter().flatten().any(|c| *c != user) {
                    return Err(ApiError::forbidden("author does not match the signed user"));
                }
                Ok(Identity {
                    author: Some(user.clone()),
                    actor: Some(user),
                })
            }
            Role::Backend | Role::Admin => {
                let author = candidates.iter().flatten().next().map(|s| s.to_string());
                let actor = if self.role == Role::Backend {
                    author.clone()
                } else {
                    None
                };
                Ok(Identity { author, actor })
            }
        }
    }

    /// The reaction identity: a frontend user reacts as themselves only; a
    /// backend or admin names the identity (falling back to the author).
    pub fn reaction_identity(
        &self,
        given: Option<&str>,
        ident: &Identity,
    ) -> Result<Option<String>, ApiError> {
        if self.role == Role::Frontend {
            let me = ident.author.clone();
            if let (Some(g), Some(m)) = (given, me.as_deref()) {
                if g != m {
                    return Err(ApiError::forbidden("cannot react as another user"));
                }
            }
            return Ok(me);
        }
        Ok(given.map(String::from).or_else(|| ident.author.clone()))
    }
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// The event-stream routes (`GET /v1/events`, `GET /v1/threads/{id}/events`)
/// accept `key`, `user` and `signature` query parameters; other routes never
/// read credentials from a URL.
fn stream_query_credentials(
    method: &Method,
    uri: &axum::http::Uri,
) -> Option<std::collections::HashMap<String, String>> {
    let path = uri.path();
    let is_stream = path == "/v1/events"
        || path
            .strip_prefix("/v1/threads/")
            .and_then(|rest| rest.strip_suffix("/events"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    if *method != Method::GET || !is_stream {
        return None;
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query()?).ok()?;
    Some(
        pairs
            .into_iter()
            .filter(|(k, v)| {
                matches!(k.as_str(), "key" | "user" | "signature") && !v.trim().is_empty()
            })
            .map(|(k, v)| (k, v.trim().to_string()))
            .collect(),
    )
}

/// Authenticates the key, enforces the role's scope and the rate limit,
/// verifies a user signature when one is sent, and hands a [`Caller`] to the
/// handler.
pub async fn require_auth(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    // A browser's EventSource cannot set headers: the event streams also
    // take the credentials from the query string (never logged).
    let query_creds = stream_query_credentials(req.method(), req.uri());
    let from_query = |name: &str| query_creds.as_ref().and_then(|q| q.get(name).cloned());
    let Some(key) = extract_key(headers).or_else(|| from_query("key")) else {
        // Failed attempts are limited per client address (slows key guessing).
        if !st.limiter.allow(&format!("ip:{}", peer.ip())) {
            return ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded",
            )
            .into_response();
        }
        return ApiError::unauthorized("missing API key").into_response();
    };
    let Some((role, idx)) = st.keys.classify(&key) else {
        if !st.limiter.allow(&format!("ip:{}", peer.ip())) {
            return ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded",
            )
            .into_response();
        }
        return ApiError::unauthorized("invalid API key").into_response();
    };
    if !scope_allows(role, req.method(), req.uri().path()) {
        return ApiError::forbidden(format!("{} keys may not use this route", role.name()))
            .into_response();
    }
    if !st.limiter.allow(&format!("key:{idx}")) {
        return ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded",
        )
        .into_response();
    }

    let header_user = header_str(headers, "x-user-id").or_else(|| from_query("user"));
    let signature = header_str(headers, "x-user-signature").or_else(|| from_query("signature"));
    let signed_user = match (&header_user, &signature) {
        (Some(u), Some(s)) => {
            if !st.keys.verify(u, s) {
                tracing::info!(role = role.name(), "invalid user signature");
                return ApiError::unauthorized("invalid signature").into_response();
            }
            Some(u.clone())
        }
        (None, Some(_)) => {
            return ApiError::unauthorized("X-User-Signature without X-User-ID").into_response()
        }
        _ => None,
    };
    if role == Role::Frontend && signed_user.is_none() && !st.dev_profile {
        return ApiError::unauthorized("missing signature headers").into_response();
    }

    req.extensions_mut().insert(Caller {
        role,
        signed_user,
        header_user,
        dev: st.dev_profile,
    });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ring() -> KeyRing {
        KeyRing::new(&Keys {
            frontend: vec!["pk_1".into()],
            backend: vec!["sk_1".into(), "sk_2".into()],
            admin: vec!["ad_1".into()],
            signing: vec!["sec_new".into(), "sec_old".into()],
        })
    }

    fn caller(role: Role, signed: Option<&str>, header: Option<&str>, dev: bool) -> Caller {
        Caller {
            role,
            signed_user: signed.map(String::from),
            header_user: header.or(signed).map(String::from),
            dev,
        }
    }

    #[test]
    fn keys_classify_by_role() {
        let r = ring();
        assert_eq!(r.classify("pk_1"), Some((Role::Frontend, 0)));
        assert_eq!(r.classify("sk_2"), Some((Role::Backend, 2)));
        assert_eq!(r.classify("ad_1").map(|x| x.0), Some(Role::Admin));
        assert_eq!(r.classify("sk_"), None);
        assert_eq!(r.classify(""), None);
    }

    #[test]
    fn signature_is_hmac_sha256_hex_and_checks_every_secret() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let r = ring();
        let s = r.sign("alice").unwrap();
        assert_eq!(s, sign(b"sec_new", "alice"));
        assert!(r.verify("alice", &s));
        assert!(r.verify("alice", &sign(b"sec_old", "alice")));
        assert!(!r.verify("bob", &s));
        assert!(!r.verify("alice", &sign(b"sk_1", "alice")));
        assert!(!r.verify("alice", "zz"));
        assert!(!r.verify("alice", &s[..10]));
    }

    #[test]
    fn key_extraction() {
        let mut h = HeaderMap::new();
        assert_eq!(extract_key(&h), None);
        h.insert("authorization", HeaderValue::from_static("bEaReR  k1 "));
        assert_eq!(extract_key(&h).as_deref(), Some("k1"));
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(extract_key(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(extract_key(&h).as_deref(), Some("k2"));
    }

    #[test]
    fn frontend_scope() {
        let f = Role::Frontend;
        assert!(scope_allows(f, &Method::GET, "/v1/messages"));
        assert!(scope_allows(f, &Method::POST, "/v1/messages"));
        assert!(!scope_allows(f, &Method::GET, "/v1/messages/m1"));
        assert!(!scope_allows(f, &Method::PUT, "/v1/messages"));
        assert!(scope_allows(f, &Method::DELETE, "/v1/threads/t/messages/m"));
        assert!(scope_allows(f, &Method::GET, "/v1/threads"));
        assert!(!scope_allows(f, &Method::GET, "/v1/threadsx"));
        assert!(scope_allows(f, &Method::GET, "/v1/search"));
        assert!(!scope_allows(f, &Method::POST, "/v1/search"));
        assert!(!scope_allows(f, &Method::POST, "/v1/_sign"));
        assert!(!scope_allows(f, &Method::GET, "/admin/stats"));
        assert!(!scope_allows(f, &Method::GET, "/metrics"));
        assert!(scope_allows(Role::Backend, &Method::POST, "/v1/_sign"));
        assert!(!scope_allows(Role::Admin, &Method::POST, "/v1/_sign"));
        assert!(scope_allows(Role::Admin, &Method::GET, "/metrics"));
    }

    #[test]
    fn signed_frontend_is_the_author_and_cannot_be_anyone_else() {
        let c = caller(Role::Frontend, Some("alice"), None, false);
        let id = c.identity(None, None).unwrap();
        assert_eq!(id.author.as_deref(), Some("alice"));
        assert_eq!(id.actor.as_deref(), Some("alice"));
        assert!(c.identity(Some("alice"), Some("alice")).is_ok());
        assert_eq!(c.identity(Some("bob"), None).unwrap_err().status, 403);
        assert_eq!(c.identity(None, Some("bob")).unwrap_err().status, 403);
    }

    #[test]
    fn unsigned_frontend_needs_the_dev_profile() {
        let c = caller(Role::Frontend, None, Some("alice"), false);
        assert_eq!(c.identity(None, None).unwrap_err().status, 401);
        let dev = caller(Role::Frontend, None, None, true);
        assert_eq!(
            dev.identity(Some("alice"), None).unwrap().actor.as_deref(),
            Some("alice")
        );
        assert_eq!(
            dev.identity(None, Some("carol")).unwrap().author.as_deref(),
            Some("carol")
        );
        assert_eq!(dev.identity(None, None).unwrap_err().status, 401);
        let dev_h = caller(Role::Frontend, None, Some("alice"), true);
        assert_eq!(dev_h.identity(Some("bob"), None).unwrap_err().status, 403);
    }

    #[test]
    fn backend_and_admin_actors() {
        let b = caller(Role::Backend, None, Some("hdr"), false);
        let id = b.identity(Some("body"), Some("q")).unwrap();
        assert_eq!(id.author.as_deref(), Some("body"));
        assert_eq!(id.actor.as_deref(), Some("body"));
        let b = caller(Role::Backend, None, None, false);
        assert_eq!(
            b.identity(None, Some("q")).unwrap().actor.as_deref(),
            Some("q")
        );
        assert_eq!(b.identity(None, None).unwrap().actor, None);
        let a = caller(Role::Admin, None, Some("hdr"), false);
        let id = a.identity(None, None).unwrap();
        assert_eq!(id.author.as_deref(), Some("hdr"));
        assert_eq!(id.actor, None);
    }

    #[test]
    fn reaction_identities() {
        let f = caller(Role::Frontend, Some("alice"), None, false);
        let id = f.identity(None, None).unwrap();
        assert_eq!(
            f.reaction_identity(None, &id).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            f.reaction_identity(Some("bob"), &id).unwrap_err().status,
            403
        );
        let b = caller(Role::Backend, None, None, false);
        let id = b.identity(None, None).unwrap();
        assert_eq!(
            b.reaction_identity(Some("bob"), &id).unwrap().as_deref(),
            Some("bob")
        );
    }
}
