//! Encryption across real server restarts, reloads and dumps.

use pgcluster::Cluster;
use progressdb_tests::{call, TestCluster};
use std::path::{Path, PathBuf};

const K1: &str = "k1:1111111111111111111111111111111111111111111111111111111111111111";
const K2: &str = "k2:2222222222222222222222222222222222222222222222222222222222222222";
const K1_WRONG: &str = "k1:9999999999999999999999999999999999999999999999999999999999999999";

fn write_keys(path: &Path, lines: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    // Replace atomically, as an operator's deploy tool would.
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, lines.join("\n") + "\n").unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn key_file(tc: &TestCluster) -> PathBuf {
    tc.scratch().join("master.keys")
}

/// Restarts the server with the key file setting in place.
fn restart(cl: &Cluster) {
    cl.stop().unwrap();
    cl.start().unwrap();
}

fn start_encrypted(name: &str) -> TestCluster {
    let tc = TestCluster::start(name);
    let keys = key_file(&tc);
    write_keys(&keys, &[K1]);
    // As an operator does: a line in postgresql.conf, then a restart.
    use std::io::Write;
    let conf = tc.cluster.data_dir().join("postgresql.conf");
    let mut f = std::fs::OpenOptions::new().append(true).open(conf).unwrap();
    writeln!(f, "progressdb.master_key_file = '{}'", keys.display()).unwrap();
    restart(&tc.cluster);
    tc
}

async fn sqlstate(c: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let err = c.query_one(sql, &[]).await.expect_err(sql);
    let db = err.as_db_error().expect("a server error");
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_data_survives_restart_rotation_and_dump_restore() {
    let tc = start_encrypted("enc");
    let cl = &tc.cluster;
    let c = tc.connect("postgres").await;
    c.batch_execute(
        "SELECT progressdb.create_thread('alice', 'Vault', 'vault', encrypted => true);
         SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"top secret one\"}');
         SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"top secret two\"}');
         SELECT progressdb.post_message('plain', 'alice', '{\"text\":\"public\"}');",
    )
    .await
    .unwrap();
    let first = call(&c, "SELECT progressdb.list_messages('vault')::text", &[]).await;
    let id = first["messages"][0]["id"].as_str().unwrap().to_string();
    c.execute(
        "SELECT progressdb.edit_message($1, '{\"text\":\"top secret edited\"}')",
        &[&id],
    )
    .await
    .unwrap();
    let snapshot = "SELECT jsonb_build_object('page', progressdb.list_messages('vault'),
                                               'versions', progressdb.message_versions($1))::text";
    let before = call(&c, snapshot, &[&id]).await;
    assert_eq!(
        before["page"]["messages"][0]["body"]["text"],
        "top secret edited"
    );
    drop(c);

    // Restart, then read.
    restart(cl);
    let c = tc.connect("postgres").await;
    assert_eq!(call(&c, snapshot, &[&id]).await, before);

    // No plaintext in a dump.
    let dump = tc.tool("pg_dump", &["-d", "postgres"]);
    let text = String::from_utf8_lossy(&dump);
    assert!(
        text.contains("pdb1:"),
        "the dump holds the ciphertext envelopes"
    );
    assert!(
        text.contains("public"),
        "plain threads are dumped as they are"
    );
    assert!(
        !text.contains("top secret"),
        "no plaintext of an encrypted body in pg_dump output"
    );

    // Master key rotation: new key first, reload, rewrap, drop the old line, restart.
    write_keys(&key_file(&tc), &[K2, K1]);
    c.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let r = call(&c, "SELECT progressdb.rewrap_keys()::text", &[]).await;
    assert_eq!(r["rewrapped"], 1);
    write_keys(&key_file(&tc), &[K2]);
    drop(c);
    restart(cl);
    let c = tc.connect("postgres").await;
    assert_eq!(call(&c, snapshot, &[&id]).await, before);
    let kek: String = c
        .query_one("SELECT kek_id FROM progressdb.thread_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kek, "k2");

    // Data key rotation, then restart.
    let r = call(
        &c,
        "SELECT progressdb.rotate_thread_key('vault')::text",
        &[],
    )
    .await;
    assert_eq!(
        r["reencrypted"], 3,
        "two messages and one earlier version: {r}"
    );
    drop(c);
    restart(cl);
    let c = tc.connect("postgres").await;
    assert_eq!(call(&c, snapshot, &[&id]).await, before);

    // Dump, restore into a new database, read there with the same key file.
    tc.dump_and_restore("postgres", "restored");
    let r = tc.connect("restored").await;
    assert_eq!(
        call(&r, snapshot, &[&id]).await,
        before,
        "restore copies ciphertext as-is"
    );
    let m = call(
        &r,
        "SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"after restore\"}')::text",
        &[],
    )
    .await;
    assert_eq!(m["body"]["text"], "after restore");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_failures_are_clear_errors_and_plain_threads_keep_working() {
    let tc = start_encrypted("encfail");
    let cl = &tc.cluster;
    let c = tc.connect("postgres").await;
    c.batch_execute(
        "SELECT progressdb.post_message('plain', 'alice', '{\"text\":\"public\"}');
         SELECT progressdb.create_thread('alice', 'Vault', 'vault', encrypted => true);
         SELECT progressdb.post_message('vault', 'alice', '{\"text\":\"secret\"}');",
    )
    .await
    .unwrap();
    drop(c);
    let read_vault = "SELECT progressdb.list_messages('vault')::text";
    let read_plain = "SELECT progressdb.list_messages('plain')::text";

    // Missing key file: the server starts, plain threads work, encrypted ones fail clearly.
    std::fs::remove_file(key_file(&tc)).unwrap();
    restart(cl);
    let c = tc.connect("postgres").await;
    assert_eq!(
        call(&c, read_plain, &[]).await["messages"][0]["body"]["text"],
        "public"
    );
    let (code, msg) = sqlstate(&c, read_vault).await;
    assert_eq!(code, "39000", "{msg}");
    assert!(msg.contains("master_key_file"), "{msg}");

    // Unknown key id.
    write_keys(&key_file(&tc), &[K2]);
    let (code, msg) = sqlstate(&c, read_vault).await;
    assert_eq!(code, "28000", "{msg}");
    assert!(msg.contains("k1") && msg.contains("not in"), "{msg}");

    // Right id, wrong key material.
    write_keys(&key_file(&tc), &[K1_WRONG]);
    let (code, msg) = sqlstate(&c, read_vault).await;
    assert_eq!(code, "28000", "{msg}");
    assert!(msg.contains("k1") && msg.contains("cannot unwrap"), "{msg}");
    assert!(
        !msg.contains("9999") && !msg.contains("secret"),
        "no key material or plaintext: {msg}"
    );
    assert_eq!(
        call(&c, read_plain, &[]).await["messages"][0]["body"]["text"],
        "public"
    );

    // The right key again: readable, no restart needed.
    write_keys(&key_file(&tc), &[K1]);
    assert_eq!(
        call(&c, read_vault, &[]).await["messages"][0]["body"]["text"],
        "secret"
    );

    // Ordinary users can neither see nor change the key file setting.
    c.batch_execute("CREATE ROLE app LOGIN").await.unwrap();
    c.batch_execute("SET ROLE app").await.unwrap();
    let shown: String = c
        .query_one(
            "SELECT coalesce(current_setting('progressdb.master_key_file', true), '<hidden>')",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|_| "<hidden>".into());
    assert!(!shown.contains("master.keys"), "{shown}");
}
