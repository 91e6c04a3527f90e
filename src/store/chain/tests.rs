use super::*;
use crate::model::{EventType, Millis, Severity};
use crate::store::EventWriter;
use std::path::Path;

fn fresh(dir: &Path) -> Store {
    let store = Store::open(&dir.join("p.db")).expect("open");
    store.migrate(None).expect("migrate");
    store
}

/// A few events unlike each other: with and without account, address,
/// device and session, odd text, details with several keys.
fn sample(n: usize, at: i64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let at = Millis(at + i as i64);
            match i % 4 {
                0 => Event::new(EventType::LoginFailed, Severity::Low, "keyboard-interactive login failed: bad password", at)
                    .user(Some(i as i64 + 1), Some("alice"))
                    .ip(Some("10.0.0.1"))
                    .detail("reason", "bad_password")
                    .detail("method", "keyboard-interactive"),
                1 => Event::new(EventType::ConnectionRefused, Severity::Medium, "refused", at).ip(Some("203.0.113.9")),
                2 => Event::new(EventType::LoginSuccess, Severity::Info, "ok \u{202e} \x1b[2J", at).user(Some(7), Some("")).detail("n", i as i64),
                _ => Event::new(EventType::ConfigReloaded, Severity::Info, "", at),
            }
        })
        .collect()
}

fn sql(store: &Store, statement: &str) {
    store.conn().execute_batch(statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
}

fn verified(store: &Store) -> ChainReport {
    let r = store.verify_event_chain().expect("verify");
    assert_eq!(r.problem, None, "{r:?}");
    r
}

/// The encoding spelled out byte by byte for one row, and its hash as the
/// table holds it: the documented format, not just what the code does.
#[test]
fn canonical_bytes_and_hash_of_a_row_are_as_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fresh(dir.path());
    let e = Event::new(EventType::LoginFailed, Severity::Low, "no", Millis(0x0102)).user(Some(5), Some("al")).ip(Some("::1")).detail("k", 1);
    assert_eq!(store.insert_events(&[e]).expect("insert"), vec![1]);
    let mut want = Vec::new();
    want.extend([1, 0, 0, 0, 0, 0, 0, 0, 1]); // id 1
    want.extend([1, 0, 0, 0, 0, 0, 0, 1, 2]); // created_at 0x0102
    for text in ["login_failed", "authentication", "low"] {
        want.push(3);
        want.extend((text.len() as u32).to_be_bytes());
        want.extend(text.as_bytes());
    }
    want.extend([1, 0, 0, 0, 0, 0, 0, 0, 5]); // user_id 5
    want.extend([3, 0, 0, 0, 2, b'a', b'l']); // username
    want.extend([3, 0, 0, 0, 3, b':', b':', b'1']); // ip
    want.extend([0, 0]); // device_id, session_id NULL
    want.extend([3, 0, 0, 0, 2, b'n', b'o']); // description
    want.extend([3, 0, 0, 0, 7]);
    want.extend(br#"{"k":1}"#); // details as stored
    want.extend([1, 0, 0, 0, 0, 0, 0, 0, 0]); // risk_score 0
    want.extend([1, 0, 0, 0, 0, 0, 0, 0, 0]); // is_suspicious 0
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(&want);
    let expected: Hash = h.finalize().into();
    let stored: Vec<u8> = store.conn().query_row("SELECT hash FROM security_events WHERE id = 1", [], |r| r.get(0)).expect("hash");
    assert_eq!(stored, expected.to_vec());
    assert_eq!(store.event_chain_head().expect("head"), ChainHead { id: 1, hash: expected });
    let r = verified(&store);
    assert_eq!((r.verified, r.first_id, r.last_id, r.last_hash), (1, 1, Some(1), expected));
}

/// Rows that differ in one way only never share their canonical bytes.
#[test]
fn canonical_bytes_tell_apart_what_differs() {
    let base = || Event::new(EventType::LoginFailed, Severity::Low, "ab", Millis(1));
    let pairs: Vec<(&str, Event, Event)> = vec![
        ("NULL vs empty username", base(), base().user(None, Some(""))),
        ("a byte moved between columns", base().ip(Some("c")), Event::new(EventType::LoginFailed, Severity::Low, "a", Millis(1)).ip(Some("bc"))),
        ("user id vs device id", base().user(Some(3), None), Event { device_id: Some(3), ..base() }),
        ("risk score", base(), Event { risk_score: 1, ..base() }),
        ("suspicious flag", base(), Event { is_suspicious: true, ..base() }),
        ("severity", base(), Event { severity: Severity::High, ..base() }),
    ];
    for (what, a, b) in pairs {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        encode_event(&mut x, 1, &a, &a.details.to_string());
        encode_event(&mut y, 1, &b, &b.details.to_string());
        assert_ne!(x, y, "{what}");
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    put_value(&mut x, ValueRef::Integer(5));
    put_value(&mut y, ValueRef::Text(b"5"));
    assert_ne!(x, y, "5 vs '5'");
}

/// Whoever adds a column to `security_events` must add it to the chain.
#[test]
fn every_stored_column_is_chained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fresh(dir.path());
    let conn = store.conn();
    let mut st = conn.prepare("SELECT name FROM pragma_table_info('security_events') ORDER BY cid").expect("columns");
    let mut columns: Vec<String> = st.query_map([], |r| r.get(0)).expect("columns").collect::<rusqlite::Result<_>>().expect("columns");
    columns.retain(|c| c != "hash");
    columns.sort();
    let mut chained: Vec<String> = CHAINED_COLUMNS.iter().map(|c| c.to_string()).collect();
    chained.sort();
    assert_eq!(columns, chained, "a column of security_events is not in CHAINED_COLUMNS (and encode_event)");
}

#[test]
fn a_batch_forms_one_chain_continued_by_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fresh(dir.path());
    let empty = verified(&store);
    assert_eq!((empty.verified, empty.first_id, empty.last_id), (0, 1, None));
    assert_eq!(store.event_chain_head().expect("head"), ChainHead { id: 0, hash: GENESIS });
    assert_eq!(store.insert_events(&sample(500, 1000)).expect("batch"), (1..=500).collect::<Vec<_>>());
    assert_eq!(store.insert_events(&sample(3, 9000)).expect("batch"), vec![501, 502, 503]);
    let r = verified(&store);
    assert_eq!((r.verified, r.first_id, r.last_id), (503, 1, Some(503)));
    assert_eq!(store.event_chain_head().expect("head"), ChainHead { id: 503, hash: r.last_hash });
    let mut calls = Vec::new();
    store.verify_event_chain_with(&mut |done, total| calls.push((done, total))).expect("verify");
    assert_eq!(calls, vec![(0, 503)]);
    // The hashes differ row to row (no constant slipped in).
    let distinct: i64 = store.conn().query_row("SELECT COUNT(DISTINCT hash) FROM security_events", [], |r| r.get(0)).expect("count");
    assert_eq!(distinct, 503);
}

/// Two processes' worth of writers on one file (the daemon's writer
/// thread and two direct writers, each its own connection), at once:
/// one chain, no id twice, no gap.
#[test]
fn concurrent_writers_on_one_file_keep_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    fresh(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (writer, thread) = EventWriter::start_joinable(&path, 64).expect("writer");
    let direct: Vec<_> = (0..2)
        .map(|k| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Store::open(&path).expect("open");
                for round in 0..150 {
                    store.insert_events(&sample(1 + (round + k) % 4, 10_000 * (k as i64 + 1) + round as i64)).expect("direct insert");
                }
            })
        })
        .collect();
    rt.block_on(async {
        for round in 0..1500 {
            writer.record(sample(1, 50_000 + round).remove(0)).await;
            if round % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        assert!(writer.flush().await);
    });
    for t in direct {
        t.join().expect("direct writer");
    }
    drop(writer);
    thread.join();
    let store = Store::open(&path).expect("open");
    let total: i64 = store.conn().query_row("SELECT COUNT(*) FROM security_events", [], |r| r.get(0)).expect("count");
    let expected = 1500 + (0..2).map(|k| (0..150).map(|round| 1 + (round + k) % 4).sum::<i64>()).sum::<i64>();
    assert_eq!(total, expected);
    let r = verified(&store);
    assert_eq!((r.verified, r.last_id), (expected as u64, Some(expected)));
}

/// Altering any column of a row, or its hash, breaks the chain at that row.
#[test]
fn an_altered_row_is_named() {
    let cases = [
        ("description", "UPDATE security_events SET description = description || '.' WHERE id = 7"),
        ("details", r#"UPDATE security_events SET details = '{"n": 7}' WHERE id = 7"#),
        ("details whitespace", "UPDATE security_events SET details = details || ' ' WHERE id = 7"),
        ("time", "UPDATE security_events SET created_at = created_at + 1 WHERE id = 7"),
        ("type", "UPDATE security_events SET event_type = 'login_failed' WHERE id = 7"),
        ("severity", "UPDATE security_events SET severity = 'high' WHERE id = 7"),
        ("category", "UPDATE security_events SET category = 'admin' WHERE id = 7"),
        ("user", "UPDATE security_events SET user_id = 8 WHERE id = 7"),
        ("username NULL for empty", "UPDATE security_events SET username = NULL WHERE id = 7"),
        ("address", "UPDATE security_events SET ip = '10.0.0.2' WHERE id = 7"),
        ("device", "UPDATE security_events SET device_id = 1 WHERE id = 7"),
        ("session", "UPDATE security_events SET session_id = 1 WHERE id = 7"),
        ("risk score", "UPDATE security_events SET risk_score = 90 WHERE id = 7"),
        ("suspicious", "UPDATE security_events SET is_suspicious = 1 WHERE id = 7"),
        ("user id as text", "UPDATE security_events SET user_id = 'seven' WHERE id = 7"),
        ("hash", "UPDATE security_events SET hash = randomblob(32) WHERE id = 7"),
    ];
    for (what, update) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = fresh(dir.path());
        store.insert_events(&sample(10, 1000)).expect("insert");
        verified(&store);
        sql(&store, update);
        let r = store.verify_event_chain().expect("verify");
        assert_eq!(r.problem, Some(ChainBreak::Mismatch { id: 7 }), "{what}");
        assert_eq!((r.verified, r.last_id), (6, Some(6)), "{what}");
        assert_eq!(r.problem.map(|p| p.to_string()).as_deref(), Some("event #7: hash does not match its contents"), "{what}");
    }
}

/// A row whose hash was recomputed after its contents were changed passes
/// itself and breaks the next one (only a copy of the head outside the
/// file catches a rewrite of every later hash).
#[test]
fn a_rehashed_row_breaks_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fresh(dir.path());
    store.insert_events(&sample(10, 1000)).expect("insert");
    sql(&store, "UPDATE security_events SET description = 'nothing happened' WHERE id = 4");
    let prev: Hash = store.conn().query_row("SELECT hash FROM security_events WHERE id = 3", [], |r| r.get(0)).expect("hash");
    let canonical = {
        let conn = store.conn();
        let mut st = conn.prepare(&select_rows("WHERE id = 4")).expect("row");
        let mut rows = st.query([]).expect("row");
        let r = rows.next().expect("row").expect("row");
        let mut buf = Vec::new();
        for i in 0..CHAINED_COLUMNS.len() {
            put_value(&mut buf, r.get_ref(i).expect("value"));
        }
        buf
    };
    store.conn().execute("UPDATE security_events SET hash = ?1 WHERE id = 4", [&chain_hash(&prev, &canonical)[..]]).expect("rehash");
    assert_eq!(store.verify_event_chain().expect("verify").problem, Some(ChainBreak::Mismatch { id: 5 }));
}

#[test]
fn deleted_or_unhashed_rows_are_named() {
    let cases: [(&str, ChainBreak, u64); 6] = [
        ("DELETE FROM security_events WHERE id = 5", ChainBreak::Missing { from: 5, to: 5 }, 4),
        ("DELETE FROM security_events WHERE id BETWEEN 4 AND 7", ChainBreak::Missing { from: 4, to: 7 }, 3),
        ("DELETE FROM security_events WHERE id = 1", ChainBreak::Missing { from: 1, to: 1 }, 0),
        ("UPDATE security_events SET hash = NULL WHERE id = 3", ChainBreak::NoHash { id: 3 }, 2),
        ("UPDATE security_events SET hash = x'00' WHERE id = 3", ChainBreak::NoHash { id: 3 }, 2),
        ("DELETE FROM security_event_chain", ChainBreak::NoAnchor, 0),
    ];
    for (change, want, ok) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = fresh(dir.path());
        store.insert_events(&sample(10, 1000)).expect("insert");
        sql(&store, change);
        let r = store.verify_event_chain().expect("verify");
        assert_eq!((r.problem, r.verified), (Some(want), ok), "{change}");
    }
    assert_eq!(ChainBreak::Missing { from: 4, to: 7 }.to_string(), "events #4-#7 missing");
    assert_eq!(ChainBreak::Missing { from: 5, to: 5 }.to_string(), "event #5 missing");
}

/// A row inserted around the store (no hash) is named; the writer still
/// records after it (an event is never refused for a damaged chain).
#[test]
fn a_hand_made_row_is_named_and_writing_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fresh(dir.path());
    store.insert_events(&sample(3, 1000)).expect("insert");
    sql(&store, "INSERT INTO security_events (event_type, category, severity, description, created_at) VALUES ('login_success', 'authentication', 'info', 'forged', 5)");
    assert_eq!(store.insert_events(&sample(2, 2000)).expect("insert after"), vec![5, 6]);
    assert_eq!(store.verify_event_chain().expect("verify").problem, Some(ChainBreak::NoHash { id: 4 }));
}

#[test]
fn trimming_the_start_keeps_the_rest_verifiable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fresh(dir.path());
    store.insert_events(&sample(2500, 1000)).expect("insert");
    assert_eq!(store.trim_events_before(1).expect("trim nothing"), 0);
    // More than one batch.
    assert_eq!(store.trim_events_before(2201).expect("trim"), 2200);
    let r = verified(&store);
    assert_eq!((r.verified, r.first_id, r.last_id), (300, 2201, Some(2500)));
    assert_eq!(store.insert_events(&sample(2, 5000)).expect("insert"), vec![2501, 2502]);
    verified(&store);
    // Removing a kept row after the trim is still seen.
    let dir2 = tempfile::tempdir().expect("tempdir");
    sql(&store, &format!("VACUUM INTO '{}'", dir2.path().join("p.db").display()));
    let copy = Store::open(&dir2.path().join("p.db")).expect("open copy");
    sql(&copy, "DELETE FROM security_events WHERE id = 2201");
    assert_eq!(copy.verify_event_chain().expect("verify").problem, Some(ChainBreak::Missing { from: 2201, to: 2201 }));
    // Everything: the next event continues the ids and the chain.
    let head = store.event_chain_head().expect("head");
    assert_eq!(store.trim_events_before(i64::MAX).expect("trim all"), 302);
    assert_eq!(store.event_chain_head().expect("head"), head);
    let r = verified(&store);
    assert_eq!((r.verified, r.first_id, r.last_id), (0, 2503, None));
    assert_eq!(store.insert_events(&sample(1, 6000)).expect("insert"), vec![2503]);
    let r = verified(&store);
    assert_eq!((r.verified, r.first_id, r.last_id), (1, 2503, Some(2503)));
}

/// Rows written before migration 0011 are chained by it.
#[test]
fn the_migration_chains_existing_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("p.db")).expect("open");
    store.migrate(Some("0008_webhooks")).expect("migrate to 0008");
    {
        let conn = store.conn();
        let tx = conn.unchecked_transaction().expect("begin");
        let mut st = tx
            .prepare("INSERT INTO security_events (event_type, category, severity, user_id, username, description, details, created_at) VALUES ('login_failed', 'authentication', 'low', ?1, ?2, 'old', ?3, ?4)")
            .expect("prepare");
        for i in 0..25_000i64 {
            st.execute(rusqlite::params![i % 7, if i % 3 == 0 { None } else { Some(format!("u{i}")) }, format!("{{\"i\":{i}}}"), i]).expect("old row");
        }
        drop(st);
        tx.commit().expect("commit");
    }
    let applied = store.migrate(None).expect("migrate");
    assert!(applied.iter().any(|m| m == "0011_event_chain"), "{applied:?}");
    let r = verified(&store);
    assert_eq!((r.verified, r.first_id, r.last_id), (25_000, 1, Some(25_000)));
    store.insert_events(&sample(2, 99_000)).expect("insert");
    assert_eq!(verified(&store).verified, 25_002);
    sql(&store, "UPDATE security_events SET details = '{\"i\":0}' WHERE id = 12345");
    assert_eq!(store.verify_event_chain().expect("verify").problem, Some(ChainBreak::Mismatch { id: 12345 }));
}

/// Over several of verify's chunks: the first break in id order is named,
/// whichever of its two stages sees it.
#[test]
fn the_first_break_is_named_across_chunks() {
    let n = 3 * VERIFY_CHUNK as i64 + 10;
    let cases = [
        ("mismatch in a late chunk", vec![format!("UPDATE security_events SET risk_score = 1 WHERE id = {}", n - 3)], ChainBreak::Mismatch { id: n - 3 }),
        ("missing in a late chunk", vec![format!("DELETE FROM security_events WHERE id = {}", 2 * VERIFY_CHUNK + 1)], ChainBreak::Missing { from: 2 * VERIFY_CHUNK as i64 + 1, to: 2 * VERIFY_CHUNK as i64 + 1 }),
        (
            "a mismatch before a deletion",
            vec!["UPDATE security_events SET ip = '::2' WHERE id = 100".to_owned(), format!("DELETE FROM security_events WHERE id = {}", n - 1)],
            ChainBreak::Mismatch { id: 100 },
        ),
        (
            "a deletion before a mismatch",
            vec!["DELETE FROM security_events WHERE id = 100".to_owned(), format!("UPDATE security_events SET ip = '::2' WHERE id = {}", n - 1)],
            ChainBreak::Missing { from: 100, to: 100 },
        ),
        (
            "no hash before a mismatch at a chunk's end",
            vec![format!("UPDATE security_events SET hash = NULL WHERE id = {}", VERIFY_CHUNK + 1), format!("UPDATE security_events SET ip = '::2' WHERE id = {}", VERIFY_CHUNK)],
            ChainBreak::Mismatch { id: VERIFY_CHUNK as i64 },
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let original = fresh(dir.path());
    original.insert_events(&sample(n as usize, 1000)).expect("insert");
    assert_eq!(verified(&original).verified, n as u64);
    for (i, (what, changes, want)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.db"));
        sql(&original, &format!("VACUUM INTO '{}'", path.display()));
        let store = Store::open(&path).expect("open copy");
        for c in &changes {
            sql(&store, c);
        }
        let r = store.verify_event_chain().expect("verify");
        let before = want.id().expect("an id") - 1;
        assert_eq!((r.problem, r.verified, r.last_id), (Some(want), before as u64, Some(before)), "{what}");
    }
}

/// Retention's cut: the first event in chain order at or after the
/// cutoff (an old event after a newer one waits), past the head when every
/// event is older; the paced trim pauses after each full batch and stops
/// when told; the hash at an event is what the export stream writes.
#[test]
fn the_trim_point_follows_the_chain_and_the_paced_trim_stops_when_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fresh(dir.path());
    assert_eq!(store.event_trim_point(Millis(10)).expect("empty"), 1);
    // ids 1..=2500 at 1000.., then id 2501 at 100 (older, written late).
    store.insert_events(&sample(2500, 1000)).expect("insert");
    store.insert_events(&sample(1, 100)).expect("insert");
    let cases: &[(i64, i64)] = &[(0, 1), (1000, 1), (1001, 2), (3499, 2500), (3500, 2502), (i64::MAX, 2502)];
    for (cutoff, want) in cases {
        assert_eq!(store.event_trim_point(Millis(*cutoff)).expect("point"), *want, "cutoff {cutoff}");
    }
    let mut calls = Vec::new();
    let removed = store
        .trim_events_before_with(2502, &mut |n| {
            calls.push(n);
            n < 2000
        })
        .expect("trim");
    assert_eq!((removed, calls), (2000, vec![1000, 2000]));
    let r = verified(&store);
    assert_eq!((r.first_id, r.last_id), (2001, Some(2501)));
    let mut calls = 0;
    assert_eq!(store.trim_events_before_with(2502, &mut |_| { calls += 1; true }).expect("trim"), 501);
    assert_eq!(calls, 0, "a short batch is the last: no pause after it");
    let r = verified(&store);
    assert_eq!((r.verified, r.first_id, r.last_id), (0, 2502, None));
    let ids = store.insert_events(&sample(3, 9000)).expect("insert");
    let link = store.event_chain_link(ids[1]).expect("link").expect("kept");
    assert_eq!(link.id, ids[1]);
    assert_ne!(link, store.event_chain_head().expect("head"));
    assert_eq!(store.event_chain_link(ids[2]).expect("link"), Some(store.event_chain_head().expect("head")));
    assert_eq!(store.event_chain_link(5).expect("trimmed"), None);
}
