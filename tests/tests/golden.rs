//! Golden test: the JSON documents of the SQL API, byte for byte, against
//! `tests/golden/api.out` (ids and timestamps masked). Regenerate after an
//! intended change with `UPDATE_GOLDEN=1 cargo test -p progressdb-tests --test golden`.

use progressdb_tests::TestCluster;
use std::path::Path;

/// Masks what differs from run to run: generated ids and nanosecond times.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(masked) = mask_id(rest, "msg-").or_else(|| mask_id(rest, "thread-")) {
            out.push_str(masked.0);
            rest = &rest[masked.1..];
        } else if rest.as_bytes()[0].is_ascii_digit() && !prev_is_word(&out) {
            let n = rest.bytes().take_while(u8::is_ascii_digit).count();
            if n == 19 {
                out.push_str("<ts>");
            } else {
                out.push_str(&rest[..n]);
            }
            rest = &rest[n..];
        } else {
            let ch = rest.chars().next().unwrap();
            out.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
    }
    out
}

fn prev_is_word(s: &str) -> bool {
    s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// `msg-<32 hex>` → ("msg-<id>", bytes consumed).
fn mask_id<'a>(s: &str, prefix: &'a str) -> Option<(&'a str, usize)> {
    let hex = s.strip_prefix(prefix)?;
    let n = hex.bytes().take_while(u8::is_ascii_hexdigit).count();
    (n == 32).then(|| {
        let masked: &'static str = if prefix == "msg-" {
            "msg-<id>"
        } else {
            "thread-<id>"
        };
        (masked, prefix.len() + n)
    })
}

#[test]
fn sql_api_documents_match_the_golden_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
    let sql = std::fs::read_to_string(dir.join("api.sql")).unwrap();
    let tc = TestCluster::start("golden");
    // psql reads the script from a file the server user can read.
    let script = tc.scratch().join("api.sql");
    std::fs::write(&script, sql).unwrap();
    let cl = &tc.cluster;
    let out = cl
        .run_as_pg(
            std::process::Command::new(cl.bin("psql"))
                .args(["-X", "-q", "-h"])
                .arg(cl.socket_dir())
                .args([
                    "-p",
                    &cl.port().to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-f",
                ])
                .arg(&script),
        )
        .unwrap();
    let actual = normalize(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr).replace(&format!("{}:", script.display()), "api.sql:")
    ));
    let expected_path = dir.join("api.out");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if actual != expected {
        let got = tc.scratch().join("api.actual");
        std::fs::write(&got, &actual).unwrap();
        panic!(
            "SQL API output differs from {}\n--- actual ---\n{actual}",
            expected_path.display()
        );
    }
}

#[test]
fn normalize_masks_ids_and_timestamps_only() {
    let s = r#"{"id": "msg-0123456789abcdef0123456789abcdef", "ts": 1795561132550155236, "version": 2, "thread": "thread-18eb1d563623ef3a7ff2c6d6f893ef93", "t": "t1"}"#;
    assert_eq!(
        normalize(s),
        r#"{"id": "msg-<id>", "ts": <ts>, "version": 2, "thread": "thread-<id>", "t": "t1"}"#
    );
}
