//! Tables, indexes and the JSON renderers every primitive shares.
//!
//! Loaded first (`bootstrap`): every other SQL file refers to these tables.

use pgrx::prelude::*;

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
