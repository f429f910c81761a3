//! Identifiers and clocks.
//!
//! Message and generated thread ids are `<prefix>-<16 hex ns timestamp><16 hex
//! random>`: they sort by creation time (useful in logs and for humans) and
//! 64 random bits make a collision between two ids minted in the same
//! nanosecond practically impossible, so no unique index on the id alone is
//! needed (every unique key leads with the thread id).

use pgrx::prelude::*;
use std::time::{SystemTime, UNIX_EPOCH};

/// Formats an id from its parts; split out so it can be tested without a clock.
pub fn format_id(prefix: &str, ts_ns: u64, random: u64) -> String {
    format!("{prefix}-{ts_ns:016x}{random:016x}")
}

/// Current Unix time in nanoseconds.
pub fn unix_nanos() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // i64 nanoseconds last until the year 2262.
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A new time-ordered id, e.g. `new_id('msg')` → `msg-18b0c…`.
#[pg_extern(volatile, parallel_safe)]
pub fn new_id(prefix: &str) -> String {
    format_id(prefix, unix_nanos() as u64, rand::random::<u64>())
}

/// Current time as integer Unix nanoseconds (the `ts` of the API).
#[pg_extern(volatile, parallel_safe)]
pub fn now_ns() -> i64 {
    unix_nanos()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_fixed_width() {
        let id = format_id("msg", 1, 2);
        assert_eq!(id, "msg-00000000000000010000000000000002");
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let a = format_id("msg", 1_757_000_000_000_000_000, u64::MAX);
        let b = format_id("msg", 1_757_000_000_000_000_001, 0);
        assert!(a < b);
    }

    #[test]
    fn clock_is_in_nanoseconds() {
        // 2020-01-01 in ns; a seconds or millis clock would be far below it.
        assert!(unix_nanos() > 1_577_836_800_000_000_000);
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn generated_ids_differ_and_are_time_ordered() {
        let (a, b) = Spi::get_two::<String, String>(
            "SELECT progressdb.new_id('msg'), progressdb.new_id('msg')",
        )
        .unwrap();
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("msg-") && a.len() == 36, "{a}");
        assert!(a[4..20] <= b[4..20], "timestamps must not go back: {a} {b}");
    }
}
