//! HTTP routes, one file per resource, plus the request parsing they share.
//!
//! Parsing (JSON syntax and types, query numbers and booleans) is the
//! gateway's job; every chat rule is the SQL function's.

pub mod admin;
pub mod docs;
pub mod health;
pub mod messages;
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
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse::<i32>()
                    .map_err(|_| ApiError::bad_request(format!("{name} must be an integer")))
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
}
