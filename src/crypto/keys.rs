//! Key management inside a backend: the keyring read from the key file, and
//! a cache of unwrapped data keys.
//!
//! The key file is re-read whenever its path (the setting, changed by a
//! configuration reload) or the file itself (size, mtime, inode) changes; the
//! data-key cache is dropped at the same moment, so a KEK removed from the
//! file stops working in running sessions too.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use pgrx::prelude::*;

use super::envelope::{dek_aad, open_bytes, random_key, seal_bytes};
use super::keyfile::{Key, Keyring};
use crate::checks::fail;
use crate::guc;

type Fingerprint = (String, u64, i64, i64, u64);

#[derive(Default)]
struct State {
    fingerprint: Option<Fingerprint>,
    ring: Option<Keyring>,
    deks: HashMap<(String, i64), Key>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn key_error(msg: String) -> ! {
    fail(
        PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION,
        msg,
    )
}

fn auth_error(msg: String) -> ! {
    fail(
        PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        msg,
    )
}

/// Loads (or reuses) the keyring and runs `f` with it.
fn with_ring<R>(f: impl FnOnce(&Keyring) -> R) -> R {
    let Some(path) = guc::setting_string(&guc::MASTER_KEY_FILE) else {
        key_error(
            "progressdb.master_key_file is not set: encrypted threads cannot be read or written"
                .into(),
        )
    };
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| {
        key_error(format!(
            "cannot read progressdb.master_key_file {path}: {e}"
        ))
    });
    let fp: Fingerprint = (
        path.clone(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
    );
    let ring = STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.fingerprint.as_ref() != Some(&fp) {
            s.ring = None;
            s.deks.clear();
        }
        if s.ring.is_none() {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                key_error(format!(
                    "cannot read progressdb.master_key_file {path}: {e}"
                ))
            });
            let ring = Keyring::parse(&text)
                .unwrap_or_else(|e| key_error(format!("progressdb.master_key_file {path}: {e}")));
            s.ring = Some(ring);
            s.fingerprint = Some(fp);
        }
        s.ring.clone().expect("loaded above")
    });
    f(&ring)
}

fn unwrap_dek(ring: &Keyring, thread: &str, dek_id: i64, kek_id: &str, wrapped: &[u8]) -> Key {
    let Some(kek) = ring.get(kek_id) else {
        auth_error(format!(
            "master key {kek_id} (which wraps data key {dek_id} of thread {thread}) is not in progressdb.master_key_file"
        ))
    };
    let raw = open_bytes(kek, &dek_aad(thread, dek_id), wrapped).unwrap_or_else(|| {
        auth_error(format!(
            "master key {kek_id} cannot unwrap data key {dek_id} of thread {thread}: wrong key material for that id, or the wrapped key was altered"
        ))
    });
    raw.try_into().unwrap_or_else(|_| {
        auth_error(format!("data key {dek_id} of thread {thread} is malformed"))
    })
}

/// The unwrapped data key `dek_id` of `thread`.
pub fn dek(thread: &str, dek_id: i64) -> Key {
    with_ring(|ring| {
        let cache_key = (thread.to_string(), dek_id);
        if let Some(k) = STATE.with(|s| s.borrow().deks.get(&cache_key).copied()) {
            return k;
        }
        let row = Spi::get_two_with_args::<String, Vec<u8>>(
            "SELECT kek_id, wrapped FROM progressdb.thread_keys WHERE thread = $1 AND dek_id = $2",
            &[thread.into(), dek_id.into()],
        );
        let (kek_id, wrapped) = match row {
            Ok((Some(k), Some(w))) => (k, w),
            _ => fail(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("data key {dek_id} of thread {thread} does not exist"),
            ),
        };
        let key = unwrap_dek(ring, thread, dek_id, &kek_id, &wrapped);
        STATE.with(|s| s.borrow_mut().deks.insert(cache_key, key));
        key
    })
}

/// Makes a data key for `thread`, stores it wrapped by the active KEK.
pub fn create_dek(thread: &str) -> i64 {
    with_ring(|ring| {
        let (kek_id, kek) = ring.active();
        let dek_id = Spi::get_one::<i64>("SELECT nextval('progressdb.dek_id_seq')")
            .ok()
            .flatten()
            .expect("nextval returns a value");
        let key = random_key();
        let wrapped = seal_bytes(kek, &dek_aad(thread, dek_id), &key);
        Spi::run_with_args(
            "INSERT INTO progressdb.thread_keys (thread, dek_id, kek_id, wrapped, created_ts)
             VALUES ($1, $2, $3, $4, progressdb.now_ns())",
            &[thread.into(), dek_id.into(), kek_id.into(), wrapped.into()],
        )
        .unwrap_or_else(|e| {
            fail(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("storing data key: {e}"),
            )
        });
        STATE.with(|s| {
            s.borrow_mut()
                .deks
                .insert((thread.to_string(), dek_id), key)
        });
        dek_id
    })
}

/// Rewraps every data key not wrapped by the active KEK; returns how many.
pub fn rewrap_all() -> i64 {
    with_ring(|ring| {
        let (active_id, active) = ring.active();
        let rows: Vec<(String, i64, String, Vec<u8>)> = Spi::connect(|client| {
            let table = client.select(
                "SELECT thread, dek_id, kek_id, wrapped FROM progressdb.thread_keys WHERE kek_id <> $1",
                None,
                &[active_id.into()],
            )?;
            let mut out = Vec::new();
            for row in table {
                out.push((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<i64>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                    row.get::<Vec<u8>>(4)?.unwrap_or_default(),
                ));
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("reading data keys: {e}")));
        let n = rows.len() as i64;
        for (thread, dek_id, kek_id, wrapped) in rows {
            let key = unwrap_dek(ring, &thread, dek_id, &kek_id, &wrapped);
            let rewrapped = seal_bytes(active, &dek_aad(&thread, dek_id), &key);
            Spi::run_with_args(
                "UPDATE progressdb.thread_keys SET kek_id = $3, wrapped = $4 WHERE thread = $1 AND dek_id = $2",
                &[thread.as_str().into(), dek_id.into(), active_id.into(), rewrapped.into()],
            )
            .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("rewrapping: {e}")));
        }
        n
    })
}
