//! ProgressDB: chat-native threads and messages inside PostgreSQL.
//!
//! The chat rules live here, in the database, so that a `psql` user and an
//! HTTP user (through the gateway) get exactly the same behaviour. Each chat
//! primitive is one module: its SQL (tables are in `sql/schema.sql`, functions
//! in `sql/<primitive>.sql`) is loaded beside the Rust that supports it, and
//! its in-database tests live with it.

::pgrx::pg_module_magic!(name, version);

pub mod checks;
pub mod chunk_codec;
pub mod compaction;
pub mod context;
pub mod crypto;
pub mod events;
pub mod export;
pub mod forks;
pub mod guc;
pub mod ids;
pub mod lifecycle;
pub mod members;
pub mod messages;
pub mod reactions;
pub mod render;
pub mod replies;
pub mod schema;
pub mod search;
pub mod threads;
pub mod versions;

#[cfg(any(test, feature = "pg_test"))]
pub mod testing;

#[allow(non_snake_case)]
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::init();
    compaction::register_worker();
}

/// Called by `cargo pgrx test` to configure the test cluster.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// The in-database tests run with a master key file of their own.
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        write_test_key_file();
        vec!["progressdb.master_key_file = '/tmp/progressdb-pgtest-keys/keys'"]
    }

    /// Writes the test key file once per process (every test thread calls
    /// `postgresql_conf_options`), atomically: the content goes to a
    /// temporary name no other writer shares (the process id; `Once` keeps
    /// this process to one writer), then is renamed over `keys`. So a first
    /// run on a machine without the file cannot race, concurrent test
    /// processes cannot either, and a running server reading the file sees
    /// a whole old or whole new file, never a partial one.
    fn write_test_key_file() {
        static WRITTEN: std::sync::Once = std::sync::Once::new();
        WRITTEN.call_once(|| {
            let dir = std::path::Path::new("/tmp/progressdb-pgtest-keys");
            std::fs::create_dir_all(dir).expect("key dir");
            let file = dir.join("keys");
            let key =
                "test-kek-1:8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\n";
            if std::fs::read_to_string(&file).ok().as_deref() == Some(key) {
                return;
            }
            let tmp = dir.join(format!("keys.{}.tmp", std::process::id()));
            std::fs::write(&tmp, key).expect("write the test key file");
            std::fs::rename(&tmp, &file).expect("install the test key file");
        });
    }
}
