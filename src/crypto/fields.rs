//! Which parts of a message body are encrypted.
//!
//! `progressdb.encrypted_fields` lists JSON paths such as
//! `body.card,body.items.*.secret` (`*` = any key or array element). Empty
//! means the whole body. Sealing splits a body into a plaintext remainder and
//! the list of `(concrete path, value)` pairs that get encrypted together;
//! opening puts them back. Encrypted object keys are removed from the
//! remainder; encrypted array elements become `null` there so that indexes
//! stay valid.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Key(String),
    Any,
}

pub type Pattern = Vec<Seg>;

/// Parses the setting. An empty setting (or just `body`) means the whole body.
pub fn parse_patterns(setting: &str) -> Result<Vec<Pattern>, String> {
    let mut out = Vec::new();
    for raw in setting.split(',') {
        let p = raw.trim();
        if p.is_empty() {
            continue;
        }
        let mut segs = p.split('.');
        if segs.next() != Some("body") {
            return Err(format!(
                "encrypted field path {p:?} must start with \"body\""
            ));
        }
        let pattern: Pattern = segs
            .map(|s| match s {
                "" => Err(format!("encrypted field path {p:?} has an empty segment")),
                "*" => Ok(Seg::Any),
                k => Ok(Seg::Key(k.to_string())),
            })
            .collect::<Result<_, _>>()?;
        out.push(pattern);
    }
    if out.is_empty() {
        out.push(Vec::new());
    }
    Ok(out)
}

/// Splits `body` into (remainder, encrypted pairs). The remainder is None when
/// the whole body is encrypted.
pub fn split(body: Value, patterns: &[Pattern]) -> (Option<Value>, Vec<(Vec<Value>, Value)>) {
    let mut pairs = Vec::new();
    if patterns.iter().any(|p| p.is_empty()) {
        pairs.push((Vec::new(), body));
        return (None, pairs);
    }
    let mut rest = body;
    for pattern in patterns {
        let mut prefix = Vec::new();
        take(&mut rest, pattern, &mut prefix, &mut pairs);
    }
    (Some(rest), pairs)
}

fn take(
    node: &mut Value,
    pattern: &[Seg],
    prefix: &mut Vec<Value>,
    out: &mut Vec<(Vec<Value>, Value)>,
) {
    let Some((head, tail)) = pattern.split_first() else {
        return;
    };
    // Children of this node that match `head`, as path segments.
    let children: Vec<Value> = match (&*node, head) {
        (Value::Object(map), Seg::Key(k)) if map.contains_key(k) => vec![Value::String(k.clone())],
        (Value::Object(map), Seg::Any) => map.keys().map(|k| Value::String(k.clone())).collect(),
        (Value::Array(items), Seg::Any) => {
            (0..items.len()).map(|i| Value::from(i as u64)).collect()
        }
        (Value::Array(items), Seg::Key(k)) => match k.parse::<usize>() {
            Ok(i) if i < items.len() => vec![Value::from(i as u64)],
            _ => vec![],
        },
        _ => vec![],
    };
    for seg in children {
        prefix.push(seg.clone());
        if tail.is_empty() {
            let value = match (&mut *node, &seg) {
                (Value::Object(map), Value::String(k)) => map.remove(k),
                (Value::Array(items), Value::Number(n)) => n
                    .as_u64()
                    .map(|i| std::mem::replace(&mut items[i as usize], Value::Null)),
                _ => None,
            };
            if let Some(v) = value {
                out.push((prefix.clone(), v));
            }
        } else if let Some(child) = child_mut(node, &seg) {
            take(child, tail, prefix, out);
        }
        prefix.pop();
    }
}

fn child_mut<'a>(node: &'a mut Value, seg: &Value) -> Option<&'a mut Value> {
    match (node, seg) {
        (Value::Object(map), Value::String(k)) => map.get_mut(k),
        (Value::Array(items), Value::Number(n)) => items.get_mut(n.as_u64()? as usize),
        _ => None,
    }
}

/// Puts encrypted pairs back into the remainder.
pub fn merge(rest: Option<Value>, pairs: Vec<(Vec<Value>, Value)>) -> Value {
    let mut out = rest.unwrap_or(Value::Null);
    for (path, value) in pairs {
        if path.is_empty() {
            out = value;
            continue;
        }
        let mut node = &mut out;
        for seg in &path {
            node = match seg {
                Value::Number(n) => {
                    let i = n.as_u64().unwrap_or(0) as usize;
                    if !node.is_array() {
                        *node = Value::Array(Vec::new());
                    }
                    let items = node.as_array_mut().expect("array");
                    if items.len() <= i {
                        items.resize(i + 1, Value::Null);
                    }
                    &mut items[i]
                }
                other => {
                    let key = other.as_str().unwrap_or_default().to_string();
                    if !node.is_object() {
                        *node = Value::Object(Map::new());
                    }
                    node.as_object_mut()
                        .expect("object")
                        .entry(key)
                        .or_insert(Value::Null)
                }
            };
        }
        *node = value;
    }
    out
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_setting_encrypts_the_whole_body() {
        let p = parse_patterns("").unwrap();
        let (rest, pairs) = split(json!({"text": "hi"}), &p);
        assert_eq!(rest, None);
        assert_eq!(merge(rest, pairs), json!({"text": "hi"}));
    }

    #[test]
    fn listed_paths_are_taken_out_and_put_back() {
        let p = parse_patterns("body.card, body.items.*.secret").unwrap();
        let body = json!({"text": "order", "card": "4111",
                          "items": [{"name": "a", "secret": 1}, {"name": "b"}, {"name": "c", "secret": [2]}]});
        let (rest, pairs) = split(body.clone(), &p);
        assert_eq!(
            rest,
            Some(json!({"text": "order", "items": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}))
        );
        assert_eq!(pairs.len(), 3);
        assert_eq!(merge(rest, pairs), body);
    }

    #[test]
    fn wildcard_array_elements_leave_null_placeholders() {
        let p = parse_patterns("body.tags.*").unwrap();
        let body = json!({"tags": ["x", "y"], "n": 1});
        let (rest, pairs) = split(body.clone(), &p);
        assert_eq!(rest, Some(json!({"tags": [null, null], "n": 1})));
        assert_eq!(merge(rest, pairs), body);
    }

    #[test]
    fn paths_that_do_not_match_leave_the_body_alone() {
        let p = parse_patterns("body.card").unwrap();
        let (rest, pairs) = split(json!("just a string"), &p);
        assert_eq!(rest, Some(json!("just a string")));
        assert!(pairs.is_empty());
    }

    #[test]
    fn bad_paths_are_rejected() {
        assert!(parse_patterns("card").is_err());
        assert!(parse_patterns("body..x").is_err());
    }
}
