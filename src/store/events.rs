//! The security event log: batched inserts and the queries that read it.

use super::{chain, Context, Result, Store};
use crate::model::{Event, EventType, Millis, StoredEvent};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

const INSERT: &str = "INSERT INTO security_events
    (id, event_type, category, severity, user_id, username, ip, device_id, session_id,
     description, details, risk_score, is_suspicious, created_at, hash)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

/// Whether an insert links its rows into the hash chain: always `On`,
/// but for benchmark P3's comparison (`EventWriter::start_unchained_for_benchmark`),
/// whose rows get no hash, so `security events verify` fails on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chain {
    On,
    Off,
}

/// Inserts events in one transaction on `conn`; returns their ids.
pub(crate) fn insert_batch(conn: &mut Connection, events: &[Event], chain: Chain) -> Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting an event batch")?;
    let ids = insert_rows(&tx, events, chain)?;
    tx.commit().doing("committing security events")?;
    Ok(ids)
}

/// Inserts events inside a transaction the caller commits (so an event
/// and the change it records land together). Every event is inserted
/// here or by `insert_batch`, and `tx` must be IMMEDIATE (as every write
/// transaction of the store is): the chain's head is read inside it, so
/// another writer cannot chain onto the same row (see `chain`). Each event
/// gets the id after the head and its hash, computed from the bytes bound
/// here.
pub(crate) fn insert_batch_tx(tx: &rusqlite::Transaction<'_>, events: &[Event]) -> Result<Vec<i64>> {
    insert_rows(tx, events, Chain::On)
}

fn insert_rows(tx: &rusqlite::Transaction<'_>, events: &[Event], chain: Chain) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(events.len());
    if events.is_empty() {
        return Ok(ids);
    }
    let head = chain::head(tx)?;
    let (mut id, mut prev) = (head.id, head.hash);
    let mut canonical = Vec::with_capacity(512);
    {
        let mut st = tx.prepare_cached(INSERT).doing("preparing event insert")?;
        for e in events {
            id += 1;
            let details = e.details.to_string();
            let hash = (chain == Chain::On).then(|| {
                canonical.clear();
                chain::encode_event(&mut canonical, id, e, &details);
                prev = chain::chain_hash(&prev, &canonical);
                prev
            });
            st.execute(params![
                id,
                e.event_type.as_str(),
                e.category.as_str(),
                e.severity.as_str(),
                e.user_id,
                e.username,
                e.ip,
                e.device_id,
                e.session_id,
                e.description,
                details,
                e.risk_score,
                e.is_suspicious,
                e.created_at.0,
                hash.as_ref().map(|h| &h[..]),
            ])
            .doing("recording a security event")?;
            ids.push(id);
        }
    }
    Ok(ids)
}

/// One event as the detection rules read it (`detect_rows_by_id`): texts
/// borrowed from the row, `details` the stored JSON object unparsed.
#[derive(Debug, Clone, Copy)]
pub struct DetectRow<'a> {
    pub id: i64,
    pub event_type: EventType,
    pub user_id: Option<i64>,
    pub username: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub session_id: Option<i64>,
    pub created_at: Millis,
    pub details: &'a str,
}

/// What `security events` asks for.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub user_id: Option<i64>,
    pub event_type: Option<EventType>,
    /// Events of this severity or worse.
    pub min_severity: Option<crate::model::Severity>,
    pub since: Option<Millis>,
    /// Only events with an id above this (for `--follow`).
    pub after_id: Option<i64>,
    pub limit: usize,
}

pub(super) fn event_from_row(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let details: String = r.get(13)?;
    Ok(StoredEvent {
        id: r.get(0)?,
        event_type: r.get(1)?,
        category: r.get(2)?,
        severity: r.get(3)?,
        user_id: r.get(4)?,
        username: r.get(5)?,
        ip: r.get(6)?,
        device_id: r.get(7)?,
        session_id: r.get(8)?,
        description: r.get(9)?,
        risk_score: r.get(10)?,
        is_suspicious: r.get(11)?,
        created_at: Millis(r.get(12)?).rfc3339(),
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
    })
}

impl Store {
    /// Writes events directly (CLI use; the daemon goes through the writer).
    pub fn insert_events(&self, events: &[Event]) -> Result<Vec<i64>> {
        insert_batch(&mut self.conn(), events, Chain::On)
    }

    /// Newest first, unless `after_id` is set (then oldest first, for follow).
    pub fn events(&self, f: &EventFilter) -> Result<Vec<StoredEvent>> {
        let mut sql = String::from(
            "SELECT id, event_type, category, severity, user_id, username, ip, device_id, session_id,
                    description, risk_score, is_suspicious, created_at, details
             FROM security_events WHERE 1=1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(u) = f.user_id {
            args.push(u.into());
            sql.push_str(&format!(" AND user_id = ?{}", args.len()));
        }
        if let Some(t) = f.event_type {
            args.push(t.as_str().to_owned().into());
            sql.push_str(&format!(" AND event_type = ?{}", args.len()));
        }
        if let Some(s) = f.min_severity {
            let names: Vec<String> = crate::model::Severity::ALL.iter().filter(|x| x.rank() >= s.rank()).map(|x| format!("'{}'", x.as_str())).collect();
            // The names come from our own enum, never from input.
            sql.push_str(&format!(" AND severity IN ({})", names.join(",")));
        }
        if let Some(t) = f.since {
            args.push(t.0.into());
            sql.push_str(&format!(" AND created_at >= ?{}", args.len()));
        }
        if let Some(id) = f.after_id {
            args.push(id.into());
            sql.push_str(&format!(" AND id > ?{} ORDER BY id ASC", args.len()));
        } else {
            sql.push_str(" ORDER BY created_at DESC, id DESC");
        }
        args.push((f.limit.max(1) as i64).into());
        sql.push_str(&format!(" LIMIT ?{}", args.len()));
        let conn = self.conn();
        let mut st = conn.prepare_cached(&sql).doing("querying security events")?;
        let rows = st.query_map(params_from_iter(args.iter()), event_from_row).doing("querying security events")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading security events")
    }

    /// Events of `types` with an id in `(after_id, upto_id]` (and created at
    /// `since` or later, when given), oldest id first, at most `limit`: the
    /// detector's catch-up, its rebuild at start and the scan over history.
    /// Walks the primary key; `types` come from our own enum.
    pub fn events_by_id(&self, after_id: i64, upto_id: i64, since: Option<Millis>, types: &[EventType], limit: usize) -> Result<Vec<(i64, Event)>> {
        let names: Vec<String> = types.iter().map(|t| format!("'{}'", t.as_str())).collect();
        let sql = format!(
            "SELECT id, event_type, category, severity, user_id, username, ip, device_id, session_id,
                    description, risk_score, is_suspicious, created_at, details
             FROM security_events
             WHERE id > ?1 AND id <= ?2 AND created_at >= ?3 AND event_type IN ({})
             ORDER BY id LIMIT ?4",
            names.join(",")
        );
        let conn = self.conn();
        let mut st = conn.prepare_cached(&sql).doing("reading events by id")?;
        let rows = st
            .query_map(params![after_id, upto_id, since.map(|t| t.0).unwrap_or(i64::MIN), limit.max(1) as i64], |r| {
                let event_type: String = r.get(1)?;
                let category: String = r.get(2)?;
                let severity: String = r.get(3)?;
                let details: String = r.get(13)?;
                Ok((r.get::<_, i64>(0)?, event_type, category, severity, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get::<_, u8>(10)?, r.get(11)?, r.get(12)?, details))
            })
            .doing("reading events by id")?;
        let mut out = Vec::new();
        for row in rows {
            let (id, t, c, sev, user_id, username, ip, device_id, session_id, description, risk_score, is_suspicious, created_at, details) = row.doing("reading events by id")?;
            // A type this build does not know (a newer writer): skipped.
            let Some(event_type) = EventType::parse(&t) else { continue };
            out.push((
                id,
                Event {
                    event_type,
                    category: crate::model::Category::parse(&c).unwrap_or(event_type.category()),
                    severity: crate::model::Severity::parse(&sev).unwrap_or(crate::model::Severity::Info),
                    user_id,
                    username,
                    ip,
                    device_id,
                    session_id,
                    description,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                    risk_score,
                    is_suspicious,
                    created_at: Millis(created_at),
                },
            ));
        }
        Ok(out)
    }

    /// What `events_by_id` reads, without copying: reads at most `limit`
    /// rows with an id in `(after_id, upto_id]` (and created at `since` or
    /// later), oldest id first, and calls `f` with those of `types`,
    /// borrowing the texts from SQLite's buffers; returns how many rows it
    /// read (of `types` or not: a page is bounded however few are) and the
    /// last id read. The scan over history reads millions of rows this way:
    /// the eight columns the rules look at, and no allocation per row.
    pub fn detect_rows_by_id(&self, after_id: i64, upto_id: i64, since: Option<Millis>, types: &[EventType], limit: usize, mut f: impl FnMut(&DetectRow<'_>)) -> Result<(usize, i64)> {
        // The types are tested here, not in SQL: an IN list costs SQLite a
        // search per row, a sixth of the whole read.
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT id, event_type, user_id, username, ip, session_id, created_at, details
                 FROM security_events
                 WHERE id > ?1 AND id <= ?2 AND created_at >= ?3
                 ORDER BY id LIMIT ?4",
            )
            .doing("reading events by id")?;
        let mut rows = st.query(params![after_id, upto_id, since.map(|t| t.0).unwrap_or(i64::MIN), limit.max(1) as i64]).doing("reading events by id")?;
        let (mut n, mut last) = (0, after_id);
        fn text<'r>(r: &'r Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
            match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                v => v.as_str().map(Some).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, v.data_type(), Box::new(e))),
            }
        }
        while let Some(r) = rows.next().doing("reading events by id")? {
            let id: i64 = r.get(0).doing("reading events by id")?;
            last = id;
            n += 1;
            // A type this build does not know (a newer writer): skipped.
            let Some(event_type) = text(r, 1).doing("reading events by id")?.and_then(EventType::parse) else { continue };
            if !types.contains(&event_type) {
                continue;
            }
            let row = DetectRow {
                id,
                event_type,
                user_id: r.get(2).doing("reading events by id")?,
                username: text(r, 3).doing("reading events by id")?,
                ip: text(r, 4).doing("reading events by id")?,
                session_id: r.get(5).doing("reading events by id")?,
                created_at: Millis(r.get(6).doing("reading events by id")?),
                details: text(r, 7).doing("reading events by id")?.unwrap_or("{}"),
            };
            f(&row);
        }
        Ok((n, last))
    }

    /// The id of the first event (by time) created at `since` or later, less
    /// one: where a rebuild of the last window starts reading by id.
    pub fn event_id_before(&self, since: Millis) -> Result<i64> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT id FROM security_events WHERE created_at >= ?1 ORDER BY created_at LIMIT 1").doing("finding where a window starts")?;
        let first: Option<i64> = st.query_row([since.0], |r| r.get(0)).optional().doing("finding where a window starts")?;
        Ok(first.map(|id| id - 1).unwrap_or(i64::MAX))
    }

    pub fn last_event_id(&self) -> Result<i64> {
        self.conn().query_row("SELECT COALESCE(MAX(id), 0) FROM security_events", [], |r| r.get(0)).doing("reading the newest event id")
    }

    /// Failed logins of one account since a moment (uses the covering
    /// `(user_id, event_type, created_at)` index).
    pub fn failures_since(&self, user_id: i64, since: Millis) -> Result<i64> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT COUNT(*) FROM security_events WHERE user_id = ?1 AND event_type = 'login_failed' AND created_at >= ?2")
            .doing("counting failures")?;
        st.query_row(params![user_id, since.0], |r| r.get(0)).doing("counting failures")
    }

    /// Failed logins per address since a moment, for rebuilding the
    /// in-memory penalty windows at start.
    pub fn failures_by_ip_since(&self, since: Millis) -> Result<Vec<(String, i64)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                // The failures that count live: failed first factors (not
                // refusals of a held-off address or a busy server) and
                // failed or replayed codes.
                "SELECT ip, created_at FROM security_events
                 WHERE created_at >= ?1 AND ip IS NOT NULL
                   AND ((event_type = 'login_failed'
                         AND COALESCE(json_extract(details, '$.reason'), '') NOT IN ('address_penalized', 'server_busy', 'event_log_unavailable'))
                        OR event_type = 'otp_failed' OR event_type = 'otp_replay')
                 ORDER BY created_at",
            )
            .doing("reading recent failures")?;
        let rows = st.query_map([since.0], |r| Ok((r.get(0)?, r.get(1)?))).doing("reading recent failures")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading recent failures")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    #[test]
    fn every_event_type_satisfies_the_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        store.migrate(None).expect("migrate");
        let events: Vec<Event> = EventType::ALL.iter().map(|t| Event::new(*t, Severity::Info, t.as_str(), Millis(1))).collect();
        let ids = store.insert_events(&events).expect("insert every type");
        assert_eq!(ids.len(), EventType::ALL.len());
        let back = store.events(&EventFilter { limit: 1000, ..Default::default() }).expect("read");
        assert_eq!(back.len(), EventType::ALL.len());
    }

    #[test]
    fn filters_narrow_the_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        store.migrate(None).expect("migrate");
        let mk = |t, s, user, at| Event::new(t, s, "x", Millis(at)).user(user, Some("u"));
        store
            .insert_events(&[
                mk(EventType::LoginFailed, Severity::Low, Some(1), 1000),
                mk(EventType::LoginFailed, Severity::Low, Some(1), 2000),
                mk(EventType::LoginSuccess, Severity::Info, Some(1), 3000),
                mk(EventType::LoginFailed, Severity::High, Some(2), 4000),
            ])
            .expect("insert");
        let q = |f: EventFilter| store.events(&EventFilter { limit: 100, ..f }).expect("query").iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(q(EventFilter::default()), vec![4, 3, 2, 1]);
        assert_eq!(q(EventFilter { user_id: Some(1), ..Default::default() }), vec![3, 2, 1]);
        assert_eq!(q(EventFilter { event_type: Some(EventType::LoginFailed), ..Default::default() }), vec![4, 2, 1]);
        assert_eq!(q(EventFilter { min_severity: Some(Severity::Low), ..Default::default() }), vec![4, 2, 1]);
        assert_eq!(q(EventFilter { since: Some(Millis(2000)), ..Default::default() }), vec![4, 3, 2]);
        assert_eq!(q(EventFilter { after_id: Some(2), ..Default::default() }), vec![3, 4]);
        assert_eq!(store.failures_since(1, Millis(1500)).expect("count"), 1);
        assert_eq!(store.failures_since(1, Millis(0)).expect("count"), 2);
    }
}
