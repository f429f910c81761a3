//! The master key file: one key-encryption key (KEK) per line, `<id>:<64 hex>`.
//! The first key is the active one (it wraps new data keys); later lines are
//! older KEKs kept only to unwrap. Blank lines and `#` comments are ignored.
//!
//! Errors never include key material, only line numbers and key ids.

pub type Key = [u8; 32];

#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, Key)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Keyring({ids:?})")
    }
}

impl Keyring {
    pub fn parse(text: &str) -> Result<Keyring, String> {
        let mut keys: Vec<(String, Key)> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let lineno = n + 1;
            let (id, hex_key) = line
                .split_once(':')
                .ok_or_else(|| format!("line {lineno}: expected <key id>:<64 hex characters>"))?;
            let id = id.trim();
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "line {lineno}: key id must be 1-64 characters of [A-Za-z0-9._-]"
                ));
            }
            let bytes = hex::decode(hex_key.trim())
                .map_err(|_| format!("line {lineno} (key {id}): key is not valid hex"))?;
            let key: Key = bytes.try_into().map_err(|_| {
                format!("line {lineno} (key {id}): key must be 32 bytes (64 hex characters)")
            })?;
            if keys.iter().any(|(k, _)| k == id) {
                return Err(format!("line {lineno}: key id {id} appears twice"));
            }
            keys.push((id.to_string(), key));
        }
        if keys.is_empty() {
            return Err("the key file holds no key".into());
        }
        Ok(Keyring { keys })
    }

    /// The active KEK: the first line.
    pub fn active(&self) -> (&str, &Key) {
        let (id, key) = &self.keys[0];
        (id, key)
    }

    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, key)| key)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    const A: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const B: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    #[test]
    fn first_key_is_active_and_older_keys_are_found() {
        let ring = Keyring::parse(&format!("# keys\nk2:{B}\n\nk1:{A}\n")).unwrap();
        assert_eq!(ring.active().0, "k2");
        assert_eq!(ring.get("k1").unwrap()[31], 1);
        assert!(ring.get("k3").is_none());
    }

    #[test]
    fn bad_files_are_rejected_without_echoing_key_material() {
        for (text, want) in [
            ("", "no key"),
            ("justtext", "line 1"),
            ("k1:abcd", "32 bytes"),
            ("k1:zz", "not valid hex"),
            (":00", "key id"),
        ] {
            let err = Keyring::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?} -> {err}");
        }
        let err = Keyring::parse(&format!("k1:{A}\nk1:{B}")).unwrap_err();
        assert!(err.contains("twice") && !err.contains(B));
        let err = Keyring::parse(&format!("k1:{}", &B[..62])).unwrap_err();
        assert!(!err.contains(&B[..62]));
    }

    #[test]
    fn debug_output_shows_ids_only() {
        let ring = Keyring::parse(&format!("k1:{B}")).unwrap();
        assert_eq!(format!("{ring:?}"), "Keyring([\"k1\"])");
    }
}
