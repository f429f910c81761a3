//! Field-level encryption of message bodies.
//!
//! Each encrypted thread has random 256-bit data keys (DEKs), stored in
//! `progressdb.thread_keys` wrapped (AES-256-GCM-SIV) by a key-encryption key
//! (KEK) from the server's key file, with the id of that KEK. Bodies are
//! sealed with the thread's current DEK, the row identity bound as associated
//! data, and stored as a `pdb1:<dek id>:<base64>` envelope. Keys never pass
//! through SQL text, so they cannot reach logs or `pg_stat_activity`.

pub mod envelope;
pub mod fields;
pub mod keyfile;
mod keys;

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use crate::checks::fail;
use crate::guc;
use envelope::{body_aad, format_envelope, open_bytes, parse_envelope, seal_bytes};

extension_sql_file!(
    "../../sql/crypto.sql",
    name = "crypto",
    requires = ["messages"]
);

fn patterns() -> Vec<fields::Pattern> {
    let setting = guc::setting_string(&guc::ENCRYPTED_FIELDS).unwrap_or_default();
    fields::parse_patterns(&setting).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("progressdb.encrypted_fields: {e}"),
        )
    })
}

fn seal_pairs(
    thread: &str,
    message_id: &str,
    version: i32,
    dek_id: i64,
    pairs: &[(Vec<Value>, Value)],
) -> String {
    let key = keys::dek(thread, dek_id);
    let plaintext = serde_json::to_vec(pairs).expect("serialising JSON cannot fail");
    format_envelope(
        dek_id,
        &seal_bytes(&key, &body_aad(thread, message_id, version), &plaintext),
    )
}

/// The decrypted JSON text of an envelope: the list of (path, value) pairs.
fn open_plaintext(thread: &str, message_id: &str, version: i32, body_enc: &str) -> Vec<u8> {
    let (dek_id, sealed) = parse_envelope(body_enc).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("message {message_id} of thread {thread}: {e}"),
        )
    });
    let key = keys::dek(thread, dek_id);
    open_bytes(&key, &body_aad(thread, message_id, version), &sealed).unwrap_or_else(|| {
        fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!(
                "message {message_id} (version {version}) of thread {thread} does not decrypt with data key {dek_id}: \
                 the ciphertext was altered or belongs to another row"
            )
        )
    })
}

fn open_pairs(
    thread: &str,
    message_id: &str,
    version: i32,
    body_enc: &str,
) -> Vec<(Vec<Value>, Value)> {
    let plain = open_plaintext(thread, message_id, version, body_enc);
    serde_json::from_slice(&plain).unwrap_or_else(|_| {
        fail(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("message {message_id}: decrypted body is not JSON"),
        )
    })
}

/// Splits a body by `progressdb.encrypted_fields` and seals the encrypted part
/// under data key `dek_id`: returns the plaintext remainder (NULL when the
/// whole body is encrypted) and the envelope (NULL when nothing matched).
#[pg_extern(volatile)]
fn _seal(
    thread: &str,
    message_id: &str,
    version: i32,
    dek_id: i64,
    body: JsonB,
) -> TableIterator<'static, (name!(body, Option<JsonB>), name!(body_enc, Option<String>))> {
    let (rest, pairs) = fields::split(body.0, &patterns());
    let envelope =
        (!pairs.is_empty()).then(|| seal_pairs(thread, message_id, version, dek_id, &pairs));
    TableIterator::once((rest.map(JsonB), envelope))
}

/// The plaintext body of a stored message (or version).
#[pg_extern(stable)]
fn _open(
    thread: &str,
    message_id: &str,
    version: i32,
    body: Option<JsonB>,
    body_enc: &str,
) -> JsonB {
    let pairs = open_pairs(thread, message_id, version, body_enc);
    JsonB(fields::merge(body.map(|b| b.0), pairs))
}

/// The plaintext body of a stored message as JSON text, for the renderer
/// (src/render.rs): `plain` is the stored plaintext remainder, if any.
pub fn open_body_text(
    thread: &str,
    message_id: &str,
    version: i32,
    plain: Option<&str>,
    body_enc: &str,
) -> String {
    if plain.is_none() {
        // The whole body sealed (the default): its JSON text is the one
        // value in the pairs, passed on as it is, without building a tree.
        let bytes = open_plaintext(thread, message_id, version, body_enc);
        if let Some(text) = whole_body_text(&bytes) {
            return text;
        }
        let pairs: Vec<(Vec<Value>, Value)> = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            fail(
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                format!("message {message_id}: decrypted body is not JSON"),
            )
        });
        return fields::merge(None, pairs).to_string();
    }
    let rest = plain.map(|p| {
        serde_json::from_str::<Value>(p).unwrap_or_else(|_| {
            fail(
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                format!("message {message_id}: stored body is not JSON"),
            )
        })
    });
    let pairs = open_pairs(thread, message_id, version, body_enc);
    fields::merge(rest, pairs).to_string()
}

/// The body's JSON text when `pairs` (decrypted) is exactly one pair with an
/// empty path, i.e. the whole body.
fn whole_body_text(pairs: &[u8]) -> Option<String> {
    let parsed: Vec<(Vec<Value>, &serde_json::value::RawValue)> =
        serde_json::from_slice(pairs).ok()?;
    match parsed.as_slice() {
        [(path, raw)] if path.is_empty() => Some(raw.get().to_string()),
        _ => None,
    }
}

/// A key derived from a thread's data key for one purpose (`label`):
/// HMAC-SHA256(DEK, label). It is computed inside the backend and, like the
/// data key, never reaches SQL; it changes when the thread's key is rotated.
pub fn derived_key(thread: &str, dek_id: i64, label: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let dek = keys::dek(thread, dek_id);
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(&dek).expect("HMAC accepts keys of any length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Re-seals an envelope under another data key (same row identity).
#[pg_extern(volatile)]
fn _reseal(
    thread: &str,
    message_id: &str,
    version: i32,
    body_enc: &str,
    new_dek_id: i64,
) -> String {
    reseal(thread, message_id, version, body_enc, new_dek_id)
}

/// See `_reseal`; also used for the sealed copies in the event feed.
pub fn reseal(
    thread: &str,
    message_id: &str,
    version: i32,
    body_enc: &str,
    new_dek_id: i64,
) -> String {
    let pairs = open_pairs(thread, message_id, version, body_enc);
    seal_pairs(thread, message_id, version, new_dek_id, &pairs)
}

/// Creates a new data key for `thread`, wrapped by the active KEK; returns its id.
#[pg_extern(volatile)]
fn _create_dek(thread: &str) -> i64 {
    keys::create_dek(thread)
}

#[pg_extern(stable)]
fn _encrypt_new_threads() -> bool {
    guc::ENCRYPT_NEW_THREADS.get()
}

/// Rewraps every data key not wrapped by the active KEK under it (master key
/// rotation: put the new key first in the file, reload, rewrap_keys(), then
/// drop the old line). Message bodies are not touched.
#[pg_extern(volatile)]
fn rewrap_keys() -> JsonB {
    let n = keys::rewrap_all();
    JsonB(serde_json::json!({ "rewrapped": n }))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run};
    use pgrx::prelude::*;
    use serde_json::json;

    #[pg_test]
    fn encrypted_threads_round_trip_through_every_function() {
        let t =
            json("SELECT progressdb.create_thread('alice', 'Secret', 'vault', encrypted => true)");
        assert_eq!(t["encrypted"], true);
        let m =
            json("SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"top secret\"}')");
        assert_eq!(m["body"]["text"], "top secret");
        let id = m["id"].as_str().unwrap();
        let stored = Spi::get_two::<pgrx::JsonB, String>(&format!(
            "SELECT body, body_enc::text FROM progressdb.messages WHERE id = '{id}'"
        ))
        .unwrap();
        assert!(
            stored.0.is_none(),
            "whole body encrypted: no plaintext column"
        );
        let env = stored.1.unwrap();
        assert!(
            env.starts_with("pdb1:") && !env.contains("top secret"),
            "{env}"
        );

        assert_eq!(
            json(&format!("SELECT progressdb.get_message('{id}')"))["body"]["text"],
            "top secret"
        );
        run(&format!(
            "SELECT progressdb.edit_message('{id}', '{{\"text\":\"v2 secret\"}}')"
        ));
        let r = json(&format!(
            "SELECT progressdb.post_message('vault', 'alice', '{{\"text\":\"reply\"}}', reply_to => '{id}')"
        ));
        run(&format!(
            "SELECT progressdb.add_reaction('{id}', 'bob', '👍')"
        ));
        let page = json("SELECT progressdb.list_messages('vault')");
        let texts: Vec<&str> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["v2 secret", "reply"]);
        assert_eq!(page["messages"][0]["reactions"], json!({"bob": "👍"}));
        let versions = json(&format!("SELECT progressdb.message_versions('{id}')"));
        let vt: Vec<&str> = versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(vt, ["top secret", "v2 secret"]);
        let replies = json(&format!("SELECT progressdb.replies('{id}')"));
        assert_eq!(replies["replies"][0]["id"], r["id"]);
        assert_eq!(replies["replies"][0]["body"]["text"], "reply");
        let leaked = Spi::get_one::<bool>(
            "SELECT bool_or(t LIKE '%secret%') FROM (SELECT m::text FROM progressdb.messages m
                                                      UNION ALL SELECT v::text FROM progressdb.message_versions v) x(t)",
        )
        .unwrap();
        assert_eq!(
            leaked,
            Some(false),
            "no plaintext in SELECT * of the tables"
        );
    }

    #[pg_test]
    fn plain_update_of_an_encrypted_message_keeps_a_version_too() {
        run("SELECT progressdb.create_thread('alice', 'S', 'vault', encrypted => true)");
        let m = json("SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"a\"}')");
        let id = m["id"].as_str().unwrap();
        run(&format!(
            "SELECT progressdb.edit_message('{id}', '{{\"text\":\"b\"}}')"
        ));
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM progressdb.message_versions WHERE body_enc IS NOT NULL",
        )
        .unwrap();
        assert_eq!(n, Some(1));
    }

    #[pg_test]
    fn encrypted_fields_encrypt_only_the_listed_paths() {
        run("SET progressdb.encrypted_fields = 'body.card,body.items.*.secret'");
        run("SELECT progressdb.create_thread('alice', 'S', 'shop', encrypted => true)");
        let body = json!({"text": "order", "card": "4111-1111", "items": [{"n": 1, "secret": "s1"}, {"n": 2}]});
        let m = json(&format!(
            "SELECT progressdb.post_message('shop', 'alice', '{body}')"
        ));
        assert_eq!(m["body"], body);
        let id = m["id"].as_str().unwrap();
        let stored = json(&format!(
            "SELECT body FROM progressdb.messages WHERE id = '{id}'"
        ));
        assert_eq!(
            stored,
            json!({"text": "order", "items": [{"n": 1}, {"n": 2}]})
        );
        assert_eq!(
            json(&format!("SELECT progressdb.get_message('{id}')"))["body"],
            body
        );
    }

    #[pg_test]
    fn encrypt_new_threads_makes_auto_created_threads_encrypted() {
        run("SET progressdb.encrypt_new_threads = on");
        let m = json("SELECT progressdb.post_message('auto', 'alice', '{\"text\":\"x\"}')");
        assert_eq!(
            json("SELECT progressdb.get_thread('auto')")["encrypted"],
            true
        );
        let plain =
            json("SELECT progressdb.create_thread('alice', 'P', 'plain', encrypted => false)");
        assert!(plain.get("encrypted").is_none());
        let id = m["id"].as_str().unwrap();
        let enc = Spi::get_one::<bool>(&format!(
            "SELECT body_enc IS NOT NULL FROM progressdb.messages WHERE id = '{id}'"
        ))
        .unwrap();
        assert_eq!(enc, Some(true));
    }

    #[pg_test]
    fn a_ciphertext_moved_to_another_row_does_not_decrypt() {
        run("SELECT progressdb.create_thread('alice', 'S', 'vault', encrypted => true)");
        let a = json("SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"mine\"}')");
        let b = json("SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"yours\"}')");
        let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
        run("SET progressdb.reencrypting = on"); // copy without making a version
        run(&format!(
            "UPDATE progressdb.messages SET body_enc = (SELECT body_enc FROM progressdb.messages WHERE id = '{a}') WHERE id = '{b}'"
        ));
        run("SET progressdb.reencrypting = off");
        assert_fails(&format!("SELECT progressdb.get_message('{b}')"), "XX000");
        assert_eq!(
            json(&format!("SELECT progressdb.get_message('{a}')"))["body"]["text"],
            "mine"
        );
    }

    #[pg_test]
    fn tampered_ciphertext_is_an_error_not_garbage() {
        run("SELECT progressdb.create_thread('alice', 'S', 'vault', encrypted => true)");
        let a = json("SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"mine\"}')");
        let a = a["id"].as_str().unwrap();
        run("SET progressdb.reencrypting = on");
        run(&format!(
            "UPDATE progressdb.messages
                SET body_enc = overlay(body_enc PLACING CASE WHEN substr(body_enc, 20, 1) = 'A' THEN 'B' ELSE 'A' END
                                       FROM 20 FOR 1)
              WHERE id = '{a}'"
        ));
        assert_fails(&format!("SELECT progressdb.get_message('{a}')"), "XX000");
        run(&format!(
            "UPDATE progressdb.messages SET body_enc = 'pdb1:999999:AAAA' WHERE id = '{a}'"
        ));
        assert_fails(&format!("SELECT progressdb.get_message('{a}')"), "XX000");
    }

    #[pg_test]
    fn rotate_thread_key_reencrypts_messages_and_versions() {
        run("SELECT progressdb.create_thread('alice', 'S', 'vault', encrypted => true)");
        let m = json("SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"v1\"}')");
        let id = m["id"].as_str().unwrap();
        run(&format!(
            "SELECT progressdb.edit_message('{id}', '{{\"text\":\"v2\"}}')"
        ));
        run("SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"other\"}')");
        run("SELECT progressdb.post_message('plain', 'alice', '{\"text\":\"p\"}')");
        let before =
            Spi::get_one::<i64>("SELECT dek_id FROM progressdb.threads WHERE id = 'vault'")
                .unwrap()
                .unwrap();
        let r = json("SELECT progressdb.rotate_thread_key('vault')");
        assert_eq!(
            r,
            json!({"thread": "vault", "reencrypted": 3, "messages": 2, "versions": 1})
        );
        let after = Spi::get_one::<i64>("SELECT dek_id FROM progressdb.threads WHERE id = 'vault'")
            .unwrap()
            .unwrap();
        assert_ne!(before, after);
        let stale = Spi::get_one::<i64>(&format!(
            "SELECT count(*) FROM (SELECT body_enc FROM progressdb.messages UNION ALL SELECT body_enc FROM progressdb.message_versions) x
              WHERE body_enc NOT LIKE 'pdb1:{after}:%'"
        ))
        .unwrap();
        assert_eq!(stale, Some(0), "every ciphertext uses the new key");
        let keys = Spi::get_one::<i64>(
            "SELECT count(*) FROM progressdb.thread_keys WHERE thread = 'vault'",
        )
        .unwrap();
        assert_eq!(keys, Some(1), "the old data key is gone");
        let v = json(&format!("SELECT progressdb.message_versions('{id}')"));
        assert_eq!(v["versions"][0]["body"]["text"], "v1");
        assert_eq!(v["versions"][1]["body"]["text"], "v2");
        assert_eq!(
            v["versions"].as_array().unwrap().len(),
            2,
            "rotation makes no versions"
        );
        assert_fails("SELECT progressdb.rotate_thread_key('plain')", "22023");
    }

    #[pg_test]
    fn rewrap_keys_with_a_single_kek_has_nothing_to_do() {
        run("SELECT progressdb.create_thread('alice', 'S', 'vault', encrypted => true)");
        assert_eq!(
            json("SELECT progressdb.rewrap_keys()"),
            json!({"rewrapped": 0})
        );
    }

    #[pg_test]
    fn key_settings_are_not_settable_per_session() {
        assert_fails("SET progressdb.master_key_file = '/tmp/other'", "55P02");
    }
}
