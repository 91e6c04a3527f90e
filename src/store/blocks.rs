//! Address blocks (`ip_blocks`), the history that makes their durations
//! grow (`ip_block_history`) and the change feed the daemon follows to
//! learn of blocks made by another process (`ip_block_changes`).

use super::{Context, Result, Store};
use crate::model::Millis;
use rusqlite::{params, OptionalExtension, Row, Transaction};
use std::time::Duration;

/// One block as stored. `network` is canonical (`IpNetwork`'s text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRow {
    pub network: String,
    pub reason: String,
    /// `manual`, `rule` or `import`.
    pub source: String,
    pub created_at: Millis,
    /// `None`: until lifted.
    pub expires_at: Option<Millis>,
    pub incident_id: Option<i64>,
    /// The actor (`cli:NAME`, `rule`, ...).
    pub created_by: String,
    /// Earlier blocks of the network within the repeat window.
    pub repeat: u32,
}

/// What to do when the network is already blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// The new block replaces it (a sysop's word).
    Replace,
    /// The later expiry wins; a block until lifted is never shortened.
    Extend,
}

/// What `put_block` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutBlock {
    /// A new block (no active one before): recorded in the history.
    Added(BlockRow),
    /// An active block was changed (replaced or extended).
    Changed(BlockRow),
    /// An active block already lasts as long or longer; left as it was.
    Kept(BlockRow),
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockChange {
    pub id: i64,
    pub network: String,
    /// `block`, `unblock`, `lift` or `reload`.
    pub kind: String,
    pub at: Millis,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub added: usize,
    pub changed: usize,
    pub kept: usize,
}

/// The blocks in force, as the daemon loads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveBlocks {
    pub keys: Vec<(crate::model::IpNetwork, Option<Millis>)>,
    pub last_change: i64,
    pub unreadable: Vec<String>,
}

/// Change rows are kept this long (a lift must outlive the penalty window
/// replayed at start; see `lifts_since`).
pub const CHANGES_KEPT: Duration = Duration::from_secs(30 * 86_400);

const COLUMNS: &str = "network, reason, source, created_at, expires_at, incident_id, created_by, repeat";

fn row(r: &Row<'_>) -> rusqlite::Result<BlockRow> {
    Ok(BlockRow {
        network: r.get(0)?,
        reason: r.get(1)?,
        source: r.get(2)?,
        created_at: Millis(r.get(3)?),
        expires_at: r.get::<_, Option<i64>>(4)?.map(Millis),
        incident_id: r.get(5)?,
        created_by: r.get(6)?,
        repeat: r.get(7)?,
    })
}

fn active(tx: &Transaction<'_>, network: &str, now: Millis) -> Result<Option<BlockRow>> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM ip_blocks WHERE network = ?1 AND (expires_at IS NULL OR expires_at > ?2)"),
        params![network, now.0],
        row,
    )
    .optional()
    .doing("reading a block")
}

fn change(tx: &Transaction<'_>, network: &str, kind: &str, now: Millis) -> Result<()> {
    tx.execute("INSERT INTO ip_block_changes (network, kind, at) VALUES (?1, ?2, ?3)", params![network, kind, now.0]).doing("recording a block change")?;
    Ok(())
}

fn prune_changes(tx: &Transaction<'_>, now: Millis) -> Result<()> {
    tx.execute("DELETE FROM ip_block_changes WHERE at < ?1", [now.minus(CHANGES_KEPT).0]).doing("pruning block changes")?;
    Ok(())
}

/// Whether `new` outlasts `old` (`None` is forever).
fn outlasts(new: Option<Millis>, old: Option<Millis>) -> bool {
    match (new, old) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(n), Some(o)) => n > o,
    }
}

fn upsert(tx: &Transaction<'_>, b: &BlockRow) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO ip_blocks (network, reason, source, created_at, expires_at, incident_id, created_by, repeat)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (network) DO UPDATE SET reason = excluded.reason, source = excluded.source, created_at = excluded.created_at,
             expires_at = excluded.expires_at, incident_id = excluded.incident_id, created_by = excluded.created_by, repeat = excluded.repeat",
    )
    .doing("preparing a block")?
    .execute(params![b.network, b.reason, b.source, b.created_at.0, b.expires_at.map(|t| t.0), b.incident_id, b.created_by, b.repeat])
    .doing("writing a block")?;
    Ok(())
}

fn history(tx: &Transaction<'_>, b: &BlockRow) -> Result<()> {
    tx.prepare_cached("INSERT INTO ip_block_history (network, created_at, expires_at, source, incident_id) VALUES (?1, ?2, ?3, ?4, ?5)")
        .doing("preparing block history")?
        .execute(params![b.network, b.created_at.0, b.expires_at.map(|t| t.0), b.source, b.incident_id])
        .doing("recording block history")?;
    Ok(())
}

/// Writes one block in `tx` (no change row).
fn put(tx: &Transaction<'_>, b: &BlockRow, overlap: Overlap, record_history: bool, now: Millis) -> Result<PutBlock> {
    match active(tx, &b.network, now)? {
        None => {
            upsert(tx, b)?;
            if record_history {
                history(tx, b)?;
            }
            Ok(PutBlock::Added(b.clone()))
        }
        Some(old) if overlap == Overlap::Extend && !outlasts(b.expires_at, old.expires_at) => Ok(PutBlock::Kept(old)),
        Some(old) => {
            // The block's first offence keeps its repeat count.
            let mut b = b.clone();
            b.repeat = old.repeat;
            upsert(tx, &b)?;
            Ok(PutBlock::Changed(b))
        }
    }
}

impl Store {
    /// Every block in force at `now` as (network, expiry), the last change
    /// id, and the stored networks that do not parse (none unless the
    /// table was edited by hand), read in one transaction: the daemon
    /// loads these at start and then follows the changes after that id.
    pub fn active_block_keys(&self, now: Millis) -> Result<ActiveBlocks> {
        let mut conn = self.conn();
        let tx = conn.transaction().doing("starting to read blocks")?;
        let last: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM ip_block_changes", [], |r| r.get(0)).doing("reading the block changes")?;
        let mut keys = Vec::new();
        let mut unreadable = Vec::new();
        {
            let mut st = tx.prepare("SELECT network, expires_at FROM ip_blocks WHERE expires_at IS NULL OR expires_at > ?1").doing("reading blocks")?;
            let mut rows = st.query([now.0]).doing("reading blocks")?;
            while let Some(r) = rows.next().doing("reading blocks")? {
                // Parsed from the row's own bytes: no string per row.
                let text = r.get_ref(0).and_then(|v| v.as_str().map_err(rusqlite::Error::from)).doing("reading blocks")?;
                let expires = r.get::<_, Option<i64>>(1).doing("reading blocks")?.map(Millis);
                match crate::model::IpNetwork::parse(text) {
                    Ok(n) => keys.push((n, expires)),
                    Err(_) => unreadable.push(text.to_owned()),
                }
            }
        }
        tx.commit().doing("reading blocks")?;
        Ok(ActiveBlocks { keys, last_change: last, unreadable })
    }

    /// The blocks in force at `now`, oldest first.
    pub fn active_blocks(&self, now: Millis) -> Result<Vec<BlockRow>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM ip_blocks WHERE expires_at IS NULL OR expires_at > ?1 ORDER BY created_at, id"))
            .doing("listing blocks")?;
        let rows = st.query_map([now.0], row).doing("listing blocks")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing blocks")
    }

    /// The block of `network` in force at `now`, if any.
    pub fn active_block(&self, network: &str, now: Millis) -> Result<Option<BlockRow>> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM ip_blocks WHERE network = ?1 AND (expires_at IS NULL OR expires_at > ?2)"),
            params![network, now.0],
            row,
        )
        .optional()
        .doing("reading a block")
    }

    /// How many blocks of `network` were made at or after `since`.
    pub fn blocks_of_since(&self, network: &str, since: Millis) -> Result<u32> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM ip_block_history WHERE network = ?1 AND created_at >= ?2", params![network, since.0], |r| r.get(0))
            .doing("counting earlier blocks")
    }

    /// Writes a block (and, for a new one, its history row) with a change
    /// row for the daemon, in one transaction.
    pub fn put_block(&self, b: &BlockRow, overlap: Overlap, now: Millis) -> Result<PutBlock> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting a block")?;
        let done = put(&tx, b, overlap, true, now)?;
        if !matches!(done, PutBlock::Kept(_)) {
            change(&tx, &b.network, "block", now)?;
        }
        prune_changes(&tx, now)?;
        tx.commit().doing("committing a block")?;
        Ok(done)
    }

    /// Many blocks in one transaction (an import: extend only, no history
    /// rows, one `reload` change).
    pub fn import_blocks(&self, blocks: &[BlockRow], now: Millis) -> Result<Imported> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting an import")?;
        let mut counts = Imported::default();
        for b in blocks {
            match put(&tx, b, Overlap::Extend, false, now)? {
                PutBlock::Added(_) => counts.added += 1,
                PutBlock::Changed(_) => counts.changed += 1,
                PutBlock::Kept(_) => counts.kept += 1,
            }
        }
        change(&tx, "*", "reload", now)?;
        prune_changes(&tx, now)?;
        tx.commit().doing("committing an import")?;
        Ok(counts)
    }

    /// Removes the block of `network` (returning it when one was in force)
    /// and, when `lift` is set, asks the daemon to lift its penalty
    /// hold-offs on the network as well.
    pub fn remove_block(&self, network: &str, lift: bool, now: Millis) -> Result<Option<BlockRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting an unblock")?;
        let was = active(&tx, network, now)?;
        tx.execute("DELETE FROM ip_blocks WHERE network = ?1", [network]).doing("removing a block")?;
        change(&tx, network, "unblock", now)?;
        if lift {
            change(&tx, network, "lift", now)?;
        }
        prune_changes(&tx, now)?;
        tx.commit().doing("committing an unblock")?;
        Ok(was)
    }

    /// Deletes the blocks that expired by `now` and returns them (with an
    /// `unblock` change each).
    pub fn expire_blocks(&self, now: Millis) -> Result<Vec<BlockRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to expire blocks")?;
        let gone = {
            let mut st = tx
                .prepare_cached(&format!("DELETE FROM ip_blocks WHERE expires_at IS NOT NULL AND expires_at <= ?1 RETURNING {COLUMNS}"))
                .doing("expiring blocks")?;
            let rows = st.query_map([now.0], row).doing("expiring blocks")?;
            rows.collect::<rusqlite::Result<Vec<_>>>().doing("expiring blocks")?
        };
        for b in &gone {
            change(&tx, &b.network, "unblock", now)?;
        }
        tx.commit().doing("committing expired blocks")?;
        Ok(gone)
    }

    /// Whether any block has expired by `now` (a cheap check on the
    /// expiry index before `expire_blocks` takes the write lock).
    pub fn any_block_expired(&self, now: Millis) -> Result<bool> {
        self.conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM ip_blocks WHERE expires_at IS NOT NULL AND expires_at <= ?1)", [now.0], |r| r.get(0))
            .doing("checking block expiry")
    }

    /// The changes after id `after`, in order.
    pub fn block_changes_after(&self, after: i64) -> Result<Vec<BlockChange>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT id, network, kind, at FROM ip_block_changes WHERE id > ?1 ORDER BY id LIMIT 10000").doing("reading block changes")?;
        let rows = st.query_map([after], |r| Ok(BlockChange { id: r.get(0)?, network: r.get(1)?, kind: r.get(2)?, at: Millis(r.get(3)?) })).doing("reading block changes")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("reading block changes")
    }

    /// The penalty lifts (`security ip unblock`) at or after `since`, as
    /// (network, when), oldest first.
    pub fn lifts_since(&self, since: Millis) -> Result<Vec<(String, Millis)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT network, at FROM ip_block_changes WHERE kind = 'lift' AND at >= ?1 ORDER BY id").doing("reading penalty lifts")?;
        let rows = st.query_map([since.0], |r| Ok((r.get::<_, String>(0)?, Millis(r.get(1)?)))).doing("reading penalty lifts")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("reading penalty lifts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        store.migrate(None).expect("migrate");
        (dir, store)
    }

    fn block(network: &str, expires_at: Option<i64>) -> BlockRow {
        BlockRow {
            network: network.into(),
            reason: "test".into(),
            source: "rule".into(),
            created_at: Millis(1000),
            expires_at: expires_at.map(Millis),
            incident_id: Some(3),
            created_by: "rule".into(),
            repeat: 0,
        }
    }

    #[test]
    fn blocks_extend_replace_expire_and_feed_changes() {
        let (_d, s) = store();
        let now = Millis(1000);
        assert!(matches!(s.put_block(&block("192.0.2.7", Some(5000)), Overlap::Extend, now).expect("put"), PutBlock::Added(_)));
        // A shorter rule block leaves the longer one; a longer one extends it.
        assert!(matches!(s.put_block(&block("192.0.2.7", Some(4000)), Overlap::Extend, now).expect("put"), PutBlock::Kept(_)));
        assert!(matches!(s.put_block(&block("192.0.2.7", Some(9000)), Overlap::Extend, now).expect("put"), PutBlock::Changed(_)));
        // A manual block replaces, even with a shorter time.
        assert!(matches!(s.put_block(&block("192.0.2.7", Some(2000)), Overlap::Replace, now).expect("put"), PutBlock::Changed(_)));
        assert_eq!(s.active_block("192.0.2.7", now).expect("read").and_then(|b| b.expires_at), Some(Millis(2000)));
        // Only the first was a new offence.
        assert_eq!(s.blocks_of_since("192.0.2.7", Millis(0)).expect("count"), 1);
        s.put_block(&block("10.0.0.0/8", None), Overlap::Extend, now).expect("put");
        let active = s.active_block_keys(now).expect("keys");
        let keys: Vec<(String, Option<Millis>)> = active.keys.iter().map(|(n, e)| (n.to_string(), *e)).collect();
        assert_eq!(keys, vec![("192.0.2.7".to_owned(), Some(Millis(2000))), ("10.0.0.0/8".to_owned(), None)]);
        assert!(active.unreadable.is_empty());
        let last = active.last_change;
        let changes = s.block_changes_after(0).expect("changes");
        assert_eq!(changes.iter().map(|c| (c.network.as_str(), c.kind.as_str())).collect::<Vec<_>>(), vec![("192.0.2.7", "block"), ("192.0.2.7", "block"), ("192.0.2.7", "block"), ("10.0.0.0/8", "block")]);
        assert_eq!(last, changes[3].id);
        // Expiry: gone from the table, kept in the history, fed as an unblock.
        assert!(!s.any_block_expired(Millis(1999)).expect("check"));
        assert!(s.any_block_expired(Millis(2000)).expect("check"));
        let gone = s.expire_blocks(Millis(2000)).expect("expire");
        assert_eq!(gone.iter().map(|b| b.network.as_str()).collect::<Vec<_>>(), vec!["192.0.2.7"]);
        assert_eq!(s.active_blocks(Millis(2000)).expect("list").len(), 1);
        assert_eq!(s.blocks_of_since("192.0.2.7", Millis(0)).expect("count"), 1);
        let after = s.block_changes_after(last).expect("changes");
        assert_eq!(after.iter().map(|c| (c.network.as_str(), c.kind.as_str())).collect::<Vec<_>>(), vec![("192.0.2.7", "unblock")]);
        // Unblock with a lift; the lift is found by time.
        assert!(s.remove_block("10.0.0.0/8", true, Millis(3000)).expect("remove").is_some());
        assert!(s.remove_block("10.0.0.0/8", true, Millis(3001)).expect("remove").is_none());
        assert_eq!(s.lifts_since(Millis(3000)).expect("lifts"), vec![("10.0.0.0/8".to_owned(), Millis(3000)), ("10.0.0.0/8".to_owned(), Millis(3001))]);
        assert!(s.active_blocks(Millis(3000)).expect("list").is_empty());
    }

    #[test]
    fn an_import_extends_only_and_feeds_one_reload() {
        let (_d, s) = store();
        let now = Millis(1000);
        s.put_block(&block("192.0.2.7", None), Overlap::Extend, now).expect("put");
        let rows = vec![block("192.0.2.7", Some(5000)), block("198.51.100.0/24", None), block("2001:db8::/64", Some(9000))];
        assert_eq!(s.import_blocks(&rows, now).expect("import"), Imported { added: 2, changed: 0, kept: 1 });
        assert_eq!(s.active_blocks(now).expect("list").len(), 3);
        let changes = s.block_changes_after(1).expect("changes");
        assert_eq!(changes.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>(), vec!["reload"]);
        assert_eq!(s.blocks_of_since("198.51.100.0/24", Millis(0)).expect("count"), 0, "imports are no offences");
    }
}
