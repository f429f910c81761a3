//! ProgressDB: chat-native threads and messages inside PostgreSQL.
//!
//! The chat rules live here, in the database, so that a `psql` user and an
//! HTTP user (through the gateway) get exactly the same behaviour. Each chat
//! primitive is one module: its SQL (tables are in `sql/schema.sql`, functions
//! in `sql/<primitive>.sql`) is loaded beside the Rust that supports it, and
//! its in-database tests live with it.

::pgrx::pg_module_magic!(name, version);

pub mod ids;
pub mod messages;
pub mod reactions;
pub mod replies;
pub mod schema;
pub mod threads;
pub mod versions;

#[cfg(any(test, feature = "pg_test"))]
pub mod testing;

/// Called by `cargo pgrx test` to configure the test cluster.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
