//! Server settings of the extension.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// Path of the master key file. SIGHUP context: only postgresql.conf (or
/// ALTER SYSTEM) and a reload change it, never a session; SUPERUSER_ONLY hides
/// it from ordinary users.
pub static MASTER_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Whether threads created without an explicit `encrypted` are encrypted.
pub static ENCRYPT_NEW_THREADS: GucSetting<bool> = GucSetting::<bool>::new(false);
/// JSON paths (e.g. `body.card,body.items.*.secret`) to encrypt instead of the whole body.
pub static ENCRYPTED_FIELDS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Whether encrypted threads are searchable (through the keyed blind index
/// of src/search.rs): read when a message is written (blind terms are stored
/// only while on) and when searching (encrypted threads are searched only
/// while on).
pub static ENCRYPTED_SEARCH: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Seconds between compaction rounds of the background compactor; 0 = off.
pub static COMPACTION_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(10);
/// Messages younger than this many seconds are not compacted yet.
pub static COMPACTION_MIN_AGE: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Database the background compactor works in.
pub static COMPACTION_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// How long the event feed keeps events: an interval ('30 days'), or
/// 'forever'. Read by `progressdb.trim_events()` (sql/events.sql).
pub static EVENT_RETENTION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"30 days"));

/// How long messages are kept unless their thread says otherwise (an
/// interval, or 'off'); read by `progressdb.apply_retention()` (sql/lifecycle.sql).
pub static RETENTION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"off"));
/// How long soft-deleted messages and threads are kept before they are
/// purged (an interval, or 'off').
pub static PURGE_DELETED_AFTER: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"off"));

pub fn init() {
    GucRegistry::define_string_guc(
        c"progressdb.retention",
        c"How long messages are kept: an interval such as '90 days', or 'off' (the default).",
        c"A thread's own retention setting wins; threads under legal hold are never purged. Applied by the background worker.",
        &RETENTION,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"progressdb.purge_deleted_after",
        c"Soft-deleted messages and threads are purged this long after their deletion: an interval, or 'off' (the default).",
        c"Threads under legal hold are never purged. Applied by the background worker.",
        &PURGE_DELETED_AFTER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"progressdb.event_retention",
        c"How long the event feed keeps events: an interval such as '30 days', or 'forever'.",
        c"Older events are removed by progressdb.trim_events() (the background worker calls it); a cursor older than that is refused.",
        &EVENT_RETENTION,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"progressdb.compaction_interval",
        c"Seconds between rounds of the background compactor (0 turns it off).",
        c"Needs shared_preload_libraries = 'progressdb'.",
        &COMPACTION_INTERVAL,
        0,
        86_400,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"progressdb.compaction_min_age",
        c"Messages younger than this many seconds are left for a later compaction round.",
        c"",
        &COMPACTION_MIN_AGE,
        0,
        86_400 * 365,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"progressdb.master_key_file",
        c"File holding the key-encryption keys (<id>:<64 hex> per line, active first).",
        c"Read by the server only; keys never travel through SQL. Changed by reload.",
        &MASTER_KEY_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_bool_guc(
        c"progressdb.encrypt_new_threads",
        c"Encrypt threads created without an explicit encrypted flag.",
        c"",
        &ENCRYPT_NEW_THREADS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"progressdb.encrypted_search",
        c"Make encrypted threads searchable by whole words through a keyed blind index.",
        c"Stores an HMAC of each distinct word per message (per-thread key): equal words of one thread are recognisable as equal. Off: encrypted threads are not searchable.",
        &ENCRYPTED_SEARCH,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"progressdb.encrypted_fields",
        c"Comma-separated JSON paths of message bodies to encrypt (empty: the whole body).",
        c"Paths start with body, * matches any key or array element, e.g. body.card,body.items.*.secret",
        &ENCRYPTED_FIELDS,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// Postmaster-level settings can only be defined while preloading.
pub fn init_preloaded() {
    GucRegistry::define_string_guc(
        c"progressdb.compaction_database",
        c"Database in which the background compactor runs.",
        c"",
        &COMPACTION_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

pub fn setting_string(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|v| !v.trim().is_empty())
}
