//! AES-256-GCM-SIV sealing and the ciphertext envelope.
//!
//! Stored form: `pdb1:<dek id>:<base64(nonce || ciphertext+tag)>`. The version
//! tag `pdb1` lets a later format coexist; the DEK id says which data key
//! sealed the value; the associated data binds the value to its row, so a
//! ciphertext copied into another row (or another version) does not open.

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

use super::keyfile::Key;

const PREFIX: &str = "pdb1";
const NONCE_LEN: usize = 12;

/// Associated data of a message body (or one of its versions).
pub fn body_aad(thread: &str, message_id: &str, version: i32) -> Vec<u8> {
    // Length-prefixed so that no two identities share an encoding.
    let mut aad = Vec::with_capacity(thread.len() + message_id.len() + 24);
    aad.extend_from_slice(b"progressdb/body/");
    for part in [thread.as_bytes(), message_id.as_bytes()] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Associated data of a wrapped data key.
pub fn dek_aad(thread: &str, dek_id: i64) -> Vec<u8> {
    let mut aad = b"progressdb/dek/".to_vec();
    aad.extend_from_slice(&(thread.len() as u32).to_be_bytes());
    aad.extend_from_slice(thread.as_bytes());
    aad.extend_from_slice(&dek_id.to_be_bytes());
    aad
}

pub fn random_key() -> Key {
    let mut k = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut k);
    k
}

/// nonce || ciphertext+tag
pub fn seal_bytes(key: &Key, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256GcmSiv::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM-SIV encryption cannot fail for in-memory buffers");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens `nonce || ciphertext+tag`; None when the key, the data or the
/// associated data do not match.
pub fn open_bytes(key: &Key, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    Aes256GcmSiv::new(key.into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

pub fn format_envelope(dek_id: i64, sealed: &[u8]) -> String {
    format!("{PREFIX}:{dek_id}:{}", B64.encode(sealed))
}

/// Splits an envelope into (dek id, sealed bytes).
pub fn parse_envelope(text: &str) -> Result<(i64, Vec<u8>), String> {
    let mut parts = text.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(PREFIX), Some(id), Some(data)) => {
            let id = id
                .parse::<i64>()
                .map_err(|_| "malformed ciphertext envelope (data key id)".to_string())?;
            let sealed = B64.decode(data).map_err(|_| {
                format!("malformed ciphertext envelope (data key {id}): bad base64")
            })?;
            Ok((id, sealed))
        }
        _ => Err("malformed ciphertext envelope (expected pdb1:<data key id>:<base64>)".into()),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn round_trip_through_the_envelope() {
        // A plaintext long and distinctive enough that neither the base64
        // text nor the raw sealed bytes can contain it by chance.
        let plain = b"{\"text\":\"the quick brown fox pays with card 4111-1111-1111-1111\"}";
        let key = random_key();
        let aad = body_aad("general", "msg-1", 1);
        let env = format_envelope(7, &seal_bytes(&key, &aad, plain));
        assert!(env.starts_with("pdb1:7:"), "{env}");
        assert!(
            !env.contains("4111-1111") && !env.contains("quick brown"),
            "{env}"
        );
        let (id, sealed) = parse_envelope(&env).unwrap();
        assert_eq!(id, 7);
        // The decoded bytes hold no plaintext either (no run of 8 plaintext bytes).
        for w in plain.windows(8) {
            assert!(
                !sealed.windows(8).any(|s| s == w),
                "plaintext in the sealed bytes"
            );
        }
        assert_eq!(open_bytes(&key, &aad, &sealed).unwrap(), plain);
    }

    #[test]
    fn another_row_wrong_key_or_tampering_do_not_open() {
        let key = random_key();
        let sealed = seal_bytes(&key, &body_aad("t", "m1", 1), b"secret");
        assert!(open_bytes(&key, &body_aad("t", "m2", 1), &sealed).is_none());
        assert!(open_bytes(&key, &body_aad("t", "m1", 2), &sealed).is_none());
        assert!(open_bytes(&key, &body_aad("u", "m1", 1), &sealed).is_none());
        assert!(open_bytes(&random_key(), &body_aad("t", "m1", 1), &sealed).is_none());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(open_bytes(&key, &body_aad("t", "m1", 1), &bad).is_none());
        assert!(open_bytes(&key, &body_aad("t", "m1", 1), &sealed[..10]).is_none());
    }

    #[test]
    fn same_plaintext_seals_differently_each_time() {
        let key = random_key();
        let aad = body_aad("t", "m", 1);
        assert_ne!(seal_bytes(&key, &aad, b"x"), seal_bytes(&key, &aad, b"x"));
    }

    #[test]
    fn identities_do_not_collide_by_concatenation() {
        assert_ne!(body_aad("ab", "c", 1), body_aad("a", "bc", 1));
    }

    #[test]
    fn malformed_envelopes_are_rejected() {
        for bad in ["", "pdb1:x:AAAA", "pdb2:1:AAAA", "pdb1:1:@@@", "plain text"] {
            assert!(parse_envelope(bad).is_err(), "{bad}");
        }
    }
}
