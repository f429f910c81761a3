//! The event feed: every committed change of a thread as an event, in one
//! gap-free, commit-ordered sequence (SQL in `sql/events.sql`, where the
//! design is explained). This module renders the Event document and keeps
//! the sealed copies of encrypted messages in the feed re-sealable.

use pgrx::prelude::*;

use crate::chunk_codec::{self, Entry, Sealed};
use crate::crypto;
use crate::render::{write_field_int, write_field_str, write_str};

extension_sql_file!(
    "../sql/events.sql",
    name = "events",
    requires = ["compaction", "members", "reactions", "replies", "versions"]
);

/// The Event document `{"id","type","thread","ts","actor","data"}` with
/// `data` already JSON text.
pub fn write_event(
    out: &mut String,
    pos: i64,
    kind: &str,
    thread: &str,
    ts: i64,
    actor: Option<&str>,
) {
    out.push_str("{\"id\":\"");
    out.push_str(&pos.to_string());
    out.push('"');
    write_field_str(out, ",\"type\":", kind);
    write_field_str(out, ",\"thread\":", thread);
    write_field_int(out, ",\"ts\":", ts);
    out.push_str(",\"actor\":");
    match actor {
        Some(a) => write_str(out, a),
        None => out.push_str("null"),
    }
    out.push_str(",\"data\":");
}

/// One stored feed entry (a message as `_chunk_entry` encodes it).
fn single_entry(entry: &[u8]) -> Entry<'_> {
    match chunk_codec::decode_entries(entry) {
        Some(mut v) if v.len() == 1 => v.remove(0),
        _ => error!("progressdb: a feed event holds a malformed message entry"),
    }
}

/// The Event document of a feed row. A message event's data is the Message
/// document from its stored entry: a sealed body is opened here, for the
/// reader, and is never stored in the clear.
#[allow(clippy::too_many_arguments)]
#[pg_extern(stable, parallel_safe, name = "_render_event")]
fn render_event(
    pos: i64,
    kind: &str,
    thread: &str,
    ts: i64,
    actor: Option<&str>,
    data: Option<&str>,
    entry: Option<&[u8]>,
) -> String {
    let mut out = String::with_capacity(256 + data.map_or(0, str::len));
    write_event(&mut out, pos, kind, thread, ts, actor);
    match (data, entry) {
        (_, Some(e)) => chunk_codec::entry_doc(
            thread,
            &single_entry(e),
            &chunk_codec::open_sealed,
            &mut out,
        ),
        (Some(d), None) => out.push_str(d),
        (None, None) => out.push_str("null"),
    }
    out.push('}');
    out
}

/// A feed entry with its sealed body re-sealed under data key `new_dek`
/// (key rotation re-seals the feed's copies with the messages').
#[pg_extern(volatile, strict, name = "_reseal_entry")]
fn reseal_entry(thread: &str, entry: &[u8], new_dek: i64) -> Vec<u8> {
    let e = single_entry(entry);
    let Some(s) = &e.sealed else {
        return entry.to_vec();
    };
    let envelope = crypto::reseal(thread, s.id, s.version, s.envelope, new_dek);
    chunk_codec::encode_entry(&Entry {
        seq: e.seq,
        deleted: e.deleted,
        doc: e.doc,
        sealed: Some(Sealed {
            body_at: s.body_at,
            id: s.id,
            version: s.version,
            plain: s.plain,
            envelope: &envelope,
        }),
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn the_event_document_escapes_and_orders_its_fields() {
        let mut out = String::new();
        write_event(&mut out, 42, "message.created", "t\"1", 7, Some("al\nice"));
        out.push_str("{\"x\":1}}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["id"], "42");
        assert_eq!(v["type"], "message.created");
        assert_eq!(v["thread"], "t\"1");
        assert_eq!(v["ts"], 7);
        assert_eq!(v["actor"], "al\nice");
        assert_eq!(v["data"]["x"], 1);
        let keys: Vec<&str> = out
            .match_indices("\":")
            .map(|(i, _)| &out[out[..i].rfind('"').unwrap() + 1..i])
            .collect();
        assert_eq!(keys[..6], ["id", "type", "thread", "ts", "actor", "data"]);

        let mut none = String::new();
        write_event(&mut none, 1, "thread.updated", "t", 1, None);
        none.push_str("null}");
        let v: serde_json::Value = serde_json::from_str(&none).unwrap();
        assert!(v["actor"].is_null());
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{assert_fails, json, run};
    use pgrx::prelude::*;
    use serde_json::Value;

    fn events_of(thread: &str, actor: &str) -> Vec<Value> {
        json(&format!(
            "SELECT progressdb.thread_events('{thread}', NULL, 1000, {actor})"
        ))["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn types(evs: &[Value]) -> Vec<String> {
        evs.iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }

    fn one(sql: &str) -> String {
        Spi::get_one::<String>(sql).unwrap().unwrap()
    }

    #[pg_test]
    fn every_change_kind_makes_exactly_one_event_with_its_document() {
        run("SELECT progressdb.create_thread('own', 'Team', 't')");
        run("SELECT progressdb.add_member('t', 'mem', 'member', 'own')");
        let m = one("SELECT progressdb.post_message('t', 'mem', '{\"text\":\"hello\"}', actor => 'mem') ->> 'id'");
        run(&format!(
            "SELECT progressdb.edit_message('{m}', '{{\"text\":\"hello!\"}}', 'mem')"
        ));
        run(&format!(
            "SELECT progressdb.add_reaction('{m}', 'own', 'like', 'own')"
        ));
        run(&format!(
            "SELECT progressdb.remove_reaction('{m}', 'own', 'own')"
        ));
        run(&format!("SELECT progressdb.delete_message('{m}', 'own')"));
        run(&format!("SELECT progressdb.restore_message('{m}', 'own')"));
        run("SELECT progressdb.mark_read('t', NULL, 'own')");
        run("SELECT progressdb.update_thread('t', 'Renamed', 'own')");
        run("SELECT progressdb.add_member('t', 'mem', 'admin', 'own')");
        run("SELECT progressdb.remove_member('t', 'mem', 'own')");
        // changes nothing: no event
        run(&format!(
            "SELECT progressdb.remove_reaction('{m}', 'own', 'own')"
        ));
        run("SELECT progressdb.mark_read('t', NULL, 'own')");
        run("SELECT progressdb.delete_thread('t', 'own')");

        // raw table writes (a restore, a COPY) replay no events
        run("SELECT set_config('progressdb.actor', '', true)");
        run("UPDATE progressdb.messages SET reactions = '{\"x\":\"y\"}' WHERE thread = 't'");
        run("UPDATE progressdb.messages SET reactions = '{}' WHERE thread = 't'");

        let evs = events_of("t", "NULL");
        assert_eq!(
            types(&evs),
            [
                "member.added",
                "member.added",
                "message.created",
                "message.updated",
                "reaction.added",
                "reaction.removed",
                "message.deleted",
                "message.restored",
                "member.read",
                "thread.updated",
                "member.added",
                "member.removed",
                "thread.deleted"
            ]
        );
        // ids are consecutive positions, as strings
        let ids: Vec<i64> = evs
            .iter()
            .map(|e| e["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
        assert!(evs
            .iter()
            .all(|e| e["thread"] == "t" && e["ts"].as_i64().unwrap() > 0));
        // the Message document, as it is after the change
        assert_eq!(evs[2]["data"]["id"], m.as_str());
        assert_eq!(evs[2]["data"]["body"]["text"], "hello");
        assert_eq!(evs[2]["actor"], "mem");
        assert_eq!(evs[3]["data"]["body"]["text"], "hello!");
        assert_eq!(evs[3]["data"]["version"], 2);
        assert_eq!(evs[4]["data"]["reactions"]["own"], "like");
        assert_eq!(evs[4]["actor"], "own");
        assert!(evs[5]["data"].get("reactions").is_none());
        assert!(evs[6]["data"]["deleted_ts"].as_i64().is_some());
        assert_eq!(evs[6]["actor"], "own");
        assert!(evs[7]["data"].get("deleted_ts").is_none());
        assert_eq!(evs[8]["data"]["user"], "own");
        assert_eq!(evs[8]["data"]["last_read"], m.as_str());
        assert_eq!(evs[9]["data"]["title"], "Renamed");
        assert_eq!(evs[10]["data"]["role"], "admin");
        assert_eq!(evs[11]["data"]["user"], "mem");
        assert_eq!(evs[0]["data"]["role"], "owner");
        // each document equals what the renderer gives for the row now
        let now = json(&format!(
            "SELECT progressdb._message_json(m) FROM progressdb.messages m WHERE m.id = '{m}'"
        ));
        assert_eq!(evs[7]["data"], now);
    }

    #[pg_test]
    fn pages_resume_after_their_cursor_without_gap_or_repeat() {
        run("SELECT progressdb.create_thread('a', 'A', 'ta')");
        for i in 0..25 {
            run(&format!(
                "SELECT progressdb.post_message('ta', 'a', '{{\"i\":{i}}}')"
            ));
        }
        let mut after = "NULL".to_string();
        let mut seen = Vec::new();
        loop {
            let p = json(&format!(
                "SELECT progressdb.thread_events('ta', {after}, 7, 'a')"
            ));
            let evs = p["events"].as_array().unwrap();
            if evs.is_empty() {
                break;
            }
            for e in evs {
                if e["type"] == "message.created" {
                    seen.push(e["data"]["body"]["i"].as_i64().unwrap());
                }
            }
            after = format!("'{}'", p["next"].as_str().unwrap());
        }
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
        // the same through events(): the service sees all, the member theirs
        let all = json("SELECT progressdb.events(NULL, NULL, 1000)");
        assert_eq!(all["events"].as_array().unwrap().len(), 26);
        assert_eq!(
            json("SELECT progressdb.events('a', NULL, 1000)")["events"],
            all["events"]
        );
        // bad cursors are clear errors
        assert_fails("SELECT progressdb.events(NULL, 'c1.x')", "22023");
        assert_fails("SELECT progressdb.events(NULL, '999999')", "22023");
        assert_fails("SELECT progressdb.thread_events('nope')", "P0002");
    }

    #[pg_test]
    fn events_show_only_threads_the_actor_may_read_and_joined_history() {
        run("SELECT progressdb.create_thread('own', 'Shared', 'ts')");
        run("SELECT progressdb.create_thread('own', 'Joined', 'tj', history => 'joined')");
        run("SELECT progressdb.create_thread('other', 'Other', 'tx')");
        run("SELECT progressdb.post_message('ts', 'own', '{\"text\":\"s1\"}')");
        let early =
            one("SELECT progressdb.post_message('tj', 'own', '{\"text\":\"j1\"}') ->> 'id'");
        run("SELECT progressdb.post_message('tx', 'other', '{\"text\":\"x1\"}')");
        run("SELECT progressdb.add_member('ts', 'u', 'member', 'own')");
        run("SELECT progressdb.add_member('tj', 'u', 'member', 'own')");
        run("SELECT progressdb.post_message('tj', 'own', '{\"text\":\"j2\"}')");
        // a reaction to a message from before u joined a 'joined' thread
        run(&format!(
            "SELECT progressdb.add_reaction('{early}', 'own', 'up', 'own')"
        ));

        let texts = |evs: &Value| -> Vec<String> {
            evs["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["type"].as_str().unwrap().starts_with("message")
                        || e["type"].as_str().unwrap().starts_with("reaction")
                })
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["type"],
                        e["data"]["body"]["text"].as_str().unwrap()
                    )
                })
                .collect()
        };
        let u = json("SELECT progressdb.events('u', NULL, 1000)");
        assert_eq!(
            texts(&u),
            ["\"message.created\":s1", "\"message.created\":j2"],
            "u sees the shared thread's history, only what followed their joining in tj, nothing of tx"
        );
        assert!(u["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["thread"] != "tx"));
        // the owner sees everything of tj, including the reaction
        let own = json("SELECT progressdb.thread_events('tj', NULL, 100, 'own')");
        assert_eq!(
            texts(&own),
            [
                "\"message.created\":j1",
                "\"message.created\":j2",
                "\"reaction.added\":j1"
            ]
        );
        assert_fails(
            "SELECT progressdb.thread_events('tx', NULL, 100, 'u')",
            "42501",
        );

        // removed: nothing more of that thread, from the moment of removal
        let head = one("SELECT progressdb.events('u', NULL, 1000) ->> 'next'");
        run("SELECT progressdb.remove_member('ts', 'u', 'own')");
        run("SELECT progressdb.post_message('ts', 'own', '{\"text\":\"s2\"}')");
        let later = json(&format!("SELECT progressdb.events('u', '{head}', 1000)"));
        assert!(
            later["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["thread"] != "ts"),
            "{later}"
        );
        assert_fails(
            "SELECT progressdb.thread_events('ts', NULL, 100, 'u')",
            "42501",
        );
        // what u may receive live is decided by the same rule
        let grants = Spi::get_one::<pgrx::JsonB>(
            "SELECT jsonb_object_agg(thread, visible_after) FROM progressdb._feed_grants('u')",
        )
        .unwrap()
        .unwrap()
        .0;
        assert_eq!(grants, serde_json::json!({"tj": 1}));
    }

    #[pg_test]
    fn encrypted_bodies_stay_sealed_in_the_feed_and_survive_a_key_rotation() {
        run("SELECT progressdb.create_thread('own', 'Secret', 'te', encrypted => true)");
        let m = one(
            "SELECT progressdb.post_message('te', 'own', '{\"text\":\"attack at dawn\"}') ->> 'id'",
        );
        run(&format!(
            "SELECT progressdb.edit_message('{m}', '{{\"text\":\"attack at dusk\"}}')"
        ));
        let stored = Spi::get_one::<bool>(
            "SELECT bool_or(position('attack' in coalesce(data, '') || encode(coalesce(entry, ''), 'escape')) > 0)
               FROM (SELECT data, entry FROM progressdb.feed UNION ALL SELECT data, entry FROM progressdb.feed_queue) x",
        )
        .unwrap()
        .unwrap();
        assert!(!stored, "plaintext in the feed");
        run("SELECT progressdb.rotate_thread_key('te')");
        let evs = events_of("te", "'own'");
        let bodies: Vec<&str> = evs
            .iter()
            .filter_map(|e| e["data"]["body"]["text"].as_str())
            .collect();
        assert_eq!(bodies, ["attack at dawn", "attack at dusk"]);
        assert_eq!(
            types(&evs),
            ["member.added", "message.created", "message.updated"],
            "rotation is no event"
        );
    }

    #[pg_test]
    fn retention_removes_a_prefix_and_refuses_older_cursors() {
        run("SELECT progressdb.create_thread('own', 'R', 'tr')");
        run("SELECT progressdb.post_message('tr', 'own', '{\"n\":1}')");
        run("SELECT progressdb.post_message('tr', 'own', '{\"n\":2}')");
        let head = one("SELECT progressdb.events(NULL) ->> 'next'");
        run("SET LOCAL progressdb.event_retention = 'forever'");
        assert_eq!(
            Spi::get_one::<i64>("SELECT progressdb.trim_events()").unwrap(),
            Some(0)
        );
        run("SET LOCAL progressdb.event_retention = '1 microsecond'");
        let removed = Spi::get_one::<i64>("SELECT progressdb.trim_events()")
            .unwrap()
            .unwrap();
        assert_eq!(removed.to_string(), head);
        assert_fails("SELECT progressdb.events(NULL, '0')", "PD410");
        // from the head (or NULL: the oldest kept) it goes on
        run("SELECT progressdb.post_message('tr', 'own', '{\"n\":3}')");
        let rest = json(&format!("SELECT progressdb.events(NULL, '{head}')"));
        assert_eq!(rest["events"][0]["data"]["body"]["n"], 3);
        assert_eq!(
            json("SELECT progressdb.events(NULL)")["events"],
            rest["events"]
        );
    }

    #[pg_test]
    fn typing_is_for_members_who_may_post() {
        run("SELECT progressdb.create_thread('own', 'T', 'tt')");
        run("SELECT progressdb.add_member('tt', 'r', 'reader', 'own')");
        run("SELECT progressdb.typing('tt', 'own')");
        assert_fails("SELECT progressdb.typing('tt', 'r')", "42501");
        assert_fails("SELECT progressdb.typing('tt', 'stranger')", "42501");
        assert_fails("SELECT progressdb.typing('tt', NULL)", "22004");
        assert_fails("SELECT progressdb.typing('nope', 'own')", "P0002");
        // not stored
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM progressdb.feed_queue WHERE type = 'typing'")
                .unwrap(),
            Some(0)
        );
    }
}
