//! HTTP routes, one file per resource, plus the request parsing they share.
//!
//! Parsing (JSON syntax and types, query numbers and booleans) is the
//! gateway's job; every chat rule is the SQL function's.

pub mod admin;
pub mod context;
pub mod docs;
pub mod events;
pub mod export;
pub mod health;
pub mod members;
pub mod messages;
pub mod read;
pub mod search;
pub mod sign;
pub mod threads;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::error::ApiError;

/// The raw request body; a body over the limit answers 413 (as JSON).
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(rej) => {
                let status = rej.status();
                let msg = if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    "request body too large".to_string()
                } else {
                    "cannot read request body".to_string()
                };
                Err(ApiError::new(status, msg))
            }
        }
    }
}

impl Body {
    /// Like [`Body::json`], but an empty (or all-whitespace) body is `T`'s
    /// default: for routes whose every field is optional, so that a bare
    /// `curl -X POST` works.
    pub fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        if self.0.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(T::default());
        }
        self.json()
    }

    /// Parses a JSON object into `T`; syntax and type errors are 400s.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let first = self.0.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(ApiError::bad_request("request body must be a JSON object"));
        }
        serde_json::from_slice(&self.0)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// A JSON value kept as its original text. Present-but-null stays `Some("null")`
/// so that SQL sees a JSON null (and rejects it) rather than a missing value.
pub fn raw_json<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Query-string parameters. Empty values count as absent (`?before=` is how
/// forms say "no cursor").
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map(Params)
            .map_err(|_| ApiError::bad_request("invalid query string"))
    }
}

impl Params {
    #[cfg(test)]
    pub fn from_pairs(p: Vec<(String, String)>) -> Self {
        Params(p)
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    }

    pub fn int(&self, name: &str) -> Result<Option<i32>, ApiError> {
        self.number(name)
    }

    /// A 64-bit integer (nanosecond timestamps).
    pub fn bigint(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.number(name)
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse::<T>()
                    .map_err(|_| ApiError::bad_request(format!("{name} must be an integer")))
            })
            .transpose()
    }

    /// A JSON document passed in the query string (URL-encoded), returned as
    /// its text for a jsonb parameter. Only its syntax is checked here; what
    /// shape it must have is the SQL function's rule.
    pub fn json(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.get(name)
            .map(|v| {
                serde_json::from_str::<serde::de::IgnoredAny>(&v)
                    .map(|_| v)
                    .map_err(|e| ApiError::bad_request(format!("{name} must be JSON: {e}")))
            })
            .transpose()
    }

    /// Booleans as Go's strconv.ParseBool reads them (what the original accepted).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| match v.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "{name} must be true or false"
                ))),
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Params {
        Params::from_pairs(serde_urlencoded::from_str(q).unwrap())
    }

    #[test]
    fn query_numbers_and_booleans() {
        let q = p("limit=5&before=&include_deleted=true&x=1&x=2");
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert_eq!(q.get("before"), None);
        assert_eq!(q.bool("include_deleted").unwrap(), Some(true));
        assert_eq!(q.get("x").as_deref(), Some("1"));
        assert_eq!(p("limit=ten").int("limit").unwrap_err().status, 400);
        assert_eq!(p("limit=99999999999").int("limit").unwrap_err().status, 400);
        assert_eq!(p("limit=-3").int("limit").unwrap(), Some(-3));
        assert_eq!(p("d=yes").bool("d").unwrap_err().status, 400);
        assert_eq!(p("d=0").bool("d").unwrap(), Some(false));
        let ts = "before_ts=1757000000000000001";
        assert_eq!(
            p(ts).bigint("before_ts").unwrap(),
            Some(1757000000000000001)
        );
        assert_eq!(
            p("before_ts=1.5").bigint("before_ts").unwrap_err().status,
            400
        );
    }

    #[test]
    fn query_json() {
        let q = p("metadata=%7B%22kind%22%3A%22support%22%7D&bad=%7Bkind&empty=");
        assert_eq!(
            q.json("metadata").unwrap().as_deref(),
            Some(r#"{"kind":"support"}"#)
        );
        assert_eq!(q.json("bad").unwrap_err().status, 400);
        assert_eq!(q.json("empty").unwrap(), None);
        // not an object, but valid JSON: the SQL function says what it must be
        assert_eq!(p("m=%5B1%5D").json("m").unwrap().as_deref(), Some("[1]"));
    }

    #[derive(Deserialize, Debug)]
    struct M {
        thread: Option<String>,
        #[serde(default, deserialize_with = "raw_json")]
        body: Option<Box<RawValue>>,
    }

    #[test]
    fn json_bodies() {
        let b = |s: &str| Body(Bytes::from(s.to_string()));
        let m: M = b(r#"{"thread":"t","body":{"a":1},"id":"ignored"}"#)
            .json()
            .unwrap();
        assert_eq!(m.thread.as_deref(), Some("t"));
        assert_eq!(m.body.unwrap().get(), r#"{"a":1}"#);
        let m: M = b(r#"{"body":null}"#).json().unwrap();
        assert_eq!(m.body.unwrap().get(), "null");
        let m: M = b(r#"{}"#).json().unwrap();
        assert!(m.body.is_none());
        assert_eq!(
            b(r#"{"thread":5,"body":1}"#)
                .json::<M>()
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(b(r#"{"thread":"#).json::<M>().unwrap_err().status, 400);
        assert_eq!(b(r#"["t",1]"#).json::<M>().unwrap_err().status, 400);
        assert_eq!(b("").json::<M>().unwrap_err().status, 400);
    }

    #[derive(Deserialize, Debug, Default)]
    struct Opt {
        message: Option<String>,
    }

    #[test]
    fn optional_bodies() {
        let b = |s: &str| Body(Bytes::from(s.to_string()));
        assert!(b("").json_or_default::<Opt>().unwrap().message.is_none());
        assert!(b(" \n").json_or_default::<Opt>().unwrap().message.is_none());
        assert!(b("{}").json_or_default::<Opt>().unwrap().message.is_none());
        let o: Opt = b(r#"{"message":"m1"}"#).json_or_default().unwrap();
        assert_eq!(o.message.as_deref(), Some("m1"));
        assert_eq!(b("null").json_or_default::<Opt>().unwrap_err().status, 400);
        assert_eq!(
            b(r#"{"message":1}"#)
                .json_or_default::<Opt>()
                .unwrap_err()
                .status,
            400
        );
    }
}
