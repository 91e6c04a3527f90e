//! The tamper-evident event log: every row of `security_events` carries a
//! hash chained over the row before it, so that altering, inserting or
//! deleting a kept row (short of rewriting every hash after it) shows.
//!
//! # Canonical bytes
//!
//! The canonical bytes of an event row are the encodings of these columns,
//! in this order, concatenated (every stored column but `hash` itself):
//!
//! ```text
//! id, created_at, event_type, category, severity, user_id, username, ip,
//! device_id, session_id, description, details, risk_score, is_suspicious
//! ```
//!
//! Each value is encoded by its SQLite storage class, as stored:
//!
//! ```text
//! NULL     0x00
//! INTEGER  0x01, then the value as 8 bytes, big-endian two's complement
//! REAL     0x02, then its IEEE 754 bits as 8 bytes, big-endian
//! TEXT     0x03, then its length in bytes as 4 bytes, big-endian, then its UTF-8 bytes
//! BLOB     0x04, then its length in bytes as 4 bytes, big-endian, then its bytes
//! ```
//!
//! Every encoding says by its first bytes how long it is, so a fixed count of
//! them concatenated reads back one way only: no two different rows have the
//! same canonical bytes (an empty `username` is not a NULL one, `5` is not
//! `'5'`, a byte moved from `description` into `ip` changes both lengths).
//! `details` is the JSON text exactly as stored, not re-serialised, so even
//! a change of its whitespace breaks the chain. SQLite caps a value at
//! 2^31 - 1 bytes, so 4 length bytes always suffice.
//!
//! The row's `hash` is `SHA-256(previous hash || canonical bytes)`, where the
//! previous hash is the stored `hash` of the row with the next lower id, or,
//! for the first kept row, the anchor's `hash_before`. Ids are given by the
//! chain (the head's id plus one), so a kept chain has no gap in its ids.
//!
//! # The anchor
//!
//! `security_event_chain` holds one row: `first_id`, where the kept chain
//! begins, and `hash_before`, what that event chains to (32 zero bytes at
//! the start of the log; the hash of the last deleted event after
//! `trim_events_before`). Rows that existed when migration 0011 ran were
//! hashed by it in id order from 32 zero bytes (`hash_existing_events`).
//!
//! # Writers
//!
//! Every event is written through `events::insert_batch_tx` inside an
//! IMMEDIATE transaction (the daemon's writer thread, the CLI process's
//! direct writes, and the transactions that write a change with its
//! event). It reads the head inside that transaction, after the write lock
//! is taken, so two processes never chain onto the same row. No head is
//! cached: the read is two primary-key lookups per transaction.
//!
//! # What it does not show
//!
//! Someone who can write the file can cut the newest events off, or
//! recompute every hash after the one they changed: only a copy of the head
//! kept elsewhere (`Store::event_chain_head`, meant for the export stream)
//! shows that.

use super::{open_connection, Context, Result, Store};
use crate::model::Event;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// What the first event of the log chains to.
pub const GENESIS: Hash = [0; 32];

/// The columns the canonical bytes cover, in their order.
pub const CHAINED_COLUMNS: [&str; 14] = [
    "id",
    "created_at",
    "event_type",
    "category",
    "severity",
    "user_id",
    "username",
    "ip",
    "device_id",
    "session_id",
    "description",
    "details",
    "risk_score",
    "is_suspicious",
];

/// Rows per transaction when trimming (each a short write lock).
const TRIM_BATCH: i64 = 1000;

/// Rows checked between two calls of `verify_event_chain_with`'s progress.
const PROGRESS_STEP: u64 = 1 << 16;

/// Rows read per step when hashing the rows that predate the chain.
const MIGRATE_BATCH: i64 = 10_000;

fn put_int(buf: &mut Vec<u8>, v: i64) {
    buf.push(0x01);
    buf.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, tag: u8, b: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
    buf.extend_from_slice(b);
}

fn put_text(buf: &mut Vec<u8>, s: &str) {
    put_bytes(buf, 0x03, s.as_bytes());
}

fn put_opt_int(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => put_int(buf, v),
        None => buf.push(0x00),
    }
}

fn put_opt_text(buf: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => put_text(buf, s),
        None => buf.push(0x00),
    }
}

/// Appends the encoding of one stored value.
fn put_value(buf: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => buf.push(0x00),
        ValueRef::Integer(i) => put_int(buf, i),
        ValueRef::Real(f) => {
            buf.push(0x02);
            buf.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        ValueRef::Text(t) => put_bytes(buf, 0x03, t),
        ValueRef::Blob(b) => put_bytes(buf, 0x04, b),
    }
}

/// The canonical bytes of `e` stored with `id`, `details` being the JSON
/// text that is stored: the same bytes `put_value` gives for the stored
/// row (the insert binds integers to the INTEGER columns and text to the
/// TEXT ones, so nothing is converted on the way in).
pub(crate) fn encode_event(buf: &mut Vec<u8>, id: i64, e: &Event, details: &str) {
    put_int(buf, id);
    put_int(buf, e.created_at.0);
    put_text(buf, e.event_type.as_str());
    put_text(buf, e.category.as_str());
    put_text(buf, e.severity.as_str());
    put_opt_int(buf, e.user_id);
    put_opt_text(buf, e.username.as_deref());
    put_opt_text(buf, e.ip.as_deref());
    put_opt_int(buf, e.device_id);
    put_opt_int(buf, e.session_id);
    put_text(buf, &e.description);
    put_text(buf, details);
    put_int(buf, i64::from(e.risk_score));
    put_int(buf, i64::from(e.is_suspicious));
}

/// `SHA-256(prev || canonical)`.
pub(crate) fn chain_hash(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

/// A stored hash, when it is one (a 32-byte blob).
fn as_hash(v: ValueRef<'_>) -> Option<Hash> {
    match v {
        ValueRef::Blob(b) => b.try_into().ok(),
        _ => None,
    }
}

pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// `SELECT` of the chained columns and the hash, in the canonical order.
fn select_rows(tail: &str) -> String {
    format!("SELECT {}, hash FROM security_events {tail}", CHAINED_COLUMNS.join(", "))
}

/// The newest event of the chain: what the next event chains to. With no
/// event kept, `id` is one below where the chain continues and `hash` the
/// anchor's `hash_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub id: i64,
    pub hash: Hash,
}

impl ChainHead {
    pub fn hex(&self) -> String {
        hex(&self.hash)
    }
}

/// `(first_id, hash_before)`, or None when the row is gone.
fn anchor(conn: &Connection) -> Result<Option<(i64, Hash)>> {
    let mut st = conn.prepare_cached("SELECT first_id, hash_before FROM security_event_chain WHERE one = 1").doing("reading the event chain's anchor")?;
    st.query_row([], |r| Ok((r.get::<_, i64>(0)?, as_hash(r.get_ref(1)?).unwrap_or(GENESIS)))).optional().doing("reading the event chain's anchor")
}

/// The head, read on `conn` (inside the caller's write transaction, so it
/// cannot move before the caller commits). Never fails on a damaged chain:
/// a missing or malformed hash counts as 32 zero bytes, a missing anchor as
/// the start of a log, and the event is written regardless (verify names
/// the damage).
pub(crate) fn head(conn: &Connection) -> Result<ChainHead> {
    let (first_id, before) = anchor(conn)?.unwrap_or((1, GENESIS));
    let mut st = conn.prepare_cached("SELECT id, hash FROM security_events ORDER BY id DESC LIMIT 1").doing("reading the event chain's head")?;
    let last = st.query_row([], |r| Ok((r.get::<_, i64>(0)?, as_hash(r.get_ref(1)?)))).optional().doing("reading the event chain's head")?;
    Ok(match last {
        Some((id, hash)) if id >= first_id => ChainHead { id, hash: hash.unwrap_or(GENESIS) },
        _ => ChainHead { id: first_id - 1, hash: before },
    })
}

/// Migration 0011's step: chains the rows that predate it, in id order,
/// from the anchor the migration's SQL set (their first id, zero hash), in
/// the migration's transaction. Reads and writes `MIGRATE_BATCH` rows at a
/// time, so memory stays bounded whatever the table holds.
pub(crate) fn hash_existing_events(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let (first_id, mut prev) = anchor(tx)?.unwrap_or((1, GENESIS));
    let mut after = first_id - 1;
    let mut buf = Vec::with_capacity(512);
    let mut hashed: Vec<(i64, Hash)> = Vec::with_capacity(MIGRATE_BATCH as usize);
    loop {
        hashed.clear();
        {
            let mut st = tx.prepare_cached(&select_rows("WHERE id > ?1 ORDER BY id LIMIT ?2")).doing("reading events to chain")?;
            let mut rows = st.query(params![after, MIGRATE_BATCH]).doing("reading events to chain")?;
            while let Some(r) = rows.next().doing("reading events to chain")? {
                buf.clear();
                for i in 0..CHAINED_COLUMNS.len() {
                    put_value(&mut buf, r.get_ref(i).doing("reading events to chain")?);
                }
                prev = chain_hash(&prev, &buf);
                hashed.push((r.get(0).doing("reading events to chain")?, prev));
            }
        }
        let Some(&(last, _)) = hashed.last() else { return Ok(()) };
        let mut up = tx.prepare_cached("UPDATE security_events SET hash = ?2 WHERE id = ?1").doing("chaining existing events")?;
        for (id, h) in &hashed {
            up.execute(params![id, &h[..]]).doing("chaining existing events")?;
        }
        after = last;
    }
}

/// The first thing wrong with the chain, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// The anchor row is gone.
    NoAnchor,
    /// A row below where the chain begins (trimming removes those).
    BeforeStart { id: i64, first_id: i64 },
    /// Ids `from..=to` are not in the table (deleted).
    Missing { from: i64, to: i64 },
    /// The row's hash is NULL or not 32 bytes.
    NoHash { id: i64 },
    /// The row's hash is not `SHA-256(previous hash || its canonical bytes)`.
    Mismatch { id: i64 },
}

impl ChainBreak {
    /// A short name for `--json`.
    pub fn kind(&self) -> &'static str {
        match self {
            ChainBreak::NoAnchor => "no_anchor",
            ChainBreak::BeforeStart { .. } => "before_start",
            ChainBreak::Missing { .. } => "missing",
            ChainBreak::NoHash { .. } => "no_hash",
            ChainBreak::Mismatch { .. } => "hash_mismatch",
        }
    }

    /// The first event id concerned (None for a missing anchor).
    pub fn id(&self) -> Option<i64> {
        match *self {
            ChainBreak::NoAnchor => None,
            ChainBreak::BeforeStart { id, .. } | ChainBreak::NoHash { id } | ChainBreak::Mismatch { id } => Some(id),
            ChainBreak::Missing { from, .. } => Some(from),
        }
    }
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ChainBreak::NoAnchor => f.write_str("the event chain's anchor (table security_event_chain) is missing"),
            ChainBreak::BeforeStart { id, first_id } => write!(f, "event #{id}: older than where the chain begins (#{first_id})"),
            ChainBreak::Missing { from, to } if from == to => write!(f, "event #{from} missing"),
            ChainBreak::Missing { from, to } => write!(f, "events #{from}-#{to} missing"),
            ChainBreak::NoHash { id } => write!(f, "event #{id}: no hash"),
            ChainBreak::Mismatch { id } => write!(f, "event #{id}: hash does not match its contents"),
        }
    }
}

/// What `verify_event_chain` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events whose hash checked out (all of them, or those before the break).
    pub verified: u64,
    /// Where the kept chain begins (the anchor's `first_id`).
    pub first_id: i64,
    /// The last event that checked out.
    pub last_id: Option<i64>,
    /// The hash of that event (the anchor's `hash_before` when none did).
    pub last_hash: Hash,
    pub problem: Option<ChainBreak>,
}

/// Rows handed from the reading to the hashing stage at a time.
const VERIFY_CHUNK: usize = 4096;

/// Chunks queued between the two stages.
const VERIFY_QUEUE: usize = 4;

/// Rows read and encoded, for the hashing stage: their canonical bytes
/// back to back, and for each its id, where its bytes end and its hash.
struct Chunk {
    bytes: Vec<u8>,
    rows: Vec<(i64, usize, Hash)>,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk { bytes: Vec::with_capacity(VERIFY_CHUNK * 320), rows: Vec::with_capacity(VERIFY_CHUNK) }
    }
}

/// The reading stage: rows in id order into chunks, until the end or the
/// first break the ids or a missing hash show (returned; every row before
/// it was sent). Stops early when the hasher stopped (a mismatch).
fn read_chunks(tx: &rusqlite::Transaction<'_>, first_id: i64, out: std::sync::mpsc::SyncSender<Chunk>, total: u64, progress: &mut dyn FnMut(u64, u64)) -> Result<Option<ChainBreak>> {
    let mut st = tx.prepare(&select_rows("ORDER BY id")).doing("reading the event chain")?;
    let mut rows = st.query([]).doing("reading the event chain")?;
    let hash_at = CHAINED_COLUMNS.len();
    let mut expect = first_id;
    let mut read = 0u64;
    let mut chunk = Chunk::new();
    let mut problem = None;
    while let Some(r) = rows.next().doing("reading the event chain")? {
        let id: i64 = r.get(0).doing("reading the event chain")?;
        if id < first_id {
            problem = Some(ChainBreak::BeforeStart { id, first_id });
            break;
        }
        if id > expect {
            problem = Some(ChainBreak::Missing { from: expect, to: id - 1 });
            break;
        }
        let Some(stored) = as_hash(r.get_ref(hash_at).doing("reading the event chain")?) else {
            problem = Some(ChainBreak::NoHash { id });
            break;
        };
        for i in 0..hash_at {
            put_value(&mut chunk.bytes, r.get_ref(i).doing("reading the event chain")?);
        }
        chunk.rows.push((id, chunk.bytes.len(), stored));
        expect = id + 1;
        read += 1;
        if read % PROGRESS_STEP == 0 {
            progress(read, total);
        }
        if chunk.rows.len() == VERIFY_CHUNK && out.send(std::mem::replace(&mut chunk, Chunk::new())).is_err() {
            return Ok(None); // the hasher found a mismatch before here
        }
    }
    if !chunk.rows.is_empty() {
        let _ = out.send(chunk);
    }
    Ok(problem)
}

/// The hashing stage: each row's hash against `SHA-256(previous stored
/// hash || its bytes)`, from the anchor's `hash_before`; stops at the first
/// mismatch.
fn hash_chunks(chunks: std::sync::mpsc::Receiver<Chunk>, first_id: i64, before: Hash) -> ChainReport {
    let mut report = ChainReport { verified: 0, first_id, last_id: None, last_hash: before, problem: None };
    for chunk in chunks {
        let mut start = 0;
        for &(id, end, stored) in &chunk.rows {
            if chain_hash(&report.last_hash, &chunk.bytes[start..end]) != stored {
                report.problem = Some(ChainBreak::Mismatch { id });
                return report;
            }
            start = end;
            report.last_hash = stored;
            report.last_id = Some(id);
            report.verified += 1;
        }
    }
    report
}

impl Store {
    /// The head of the event chain now: the newest event's id and hash.
    /// The hook for the export stream, which is to write it every N
    /// events so that a copy outside this file anchors the chain.
    pub fn event_chain_head(&self) -> Result<ChainHead> {
        head(&self.conn())
    }

    /// Walks the whole chain in id order on a connection of its own, in one
    /// read transaction (a snapshot: writers go on meanwhile); stops at the
    /// first break. Two stages: this thread reads the rows, checks their ids
    /// and encodes them, a second thread hashes (reading is most of the
    /// cost, hashing a fifth); at most `VERIFY_QUEUE` chunks of
    /// `VERIFY_CHUNK` rows are in memory between them.
    pub fn verify_event_chain(&self) -> Result<ChainReport> {
        self.verify_event_chain_with(&mut |_, _| {})
    }

    /// `verify_event_chain`, calling `progress(rows read, rows in the
    /// chain)` at the start and every `PROGRESS_STEP` rows (the count is
    /// the head's id less the chain's first: ids have no gap).
    pub fn verify_event_chain_with(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<ChainReport> {
        let mut conn = open_connection(self.path())?;
        let tx = conn.transaction().doing("starting to verify the event chain")?;
        let Some((first_id, before)) = anchor(&tx)? else {
            return Ok(ChainReport { verified: 0, first_id: 1, last_id: None, last_hash: GENESIS, problem: Some(ChainBreak::NoAnchor) });
        };
        let total = u64::try_from(head(&tx)?.id - first_id + 1).unwrap_or(0);
        progress(0, total);
        let (chunks, to_hash) = std::sync::mpsc::sync_channel::<Chunk>(VERIFY_QUEUE);
        std::thread::scope(|scope| {
            let hasher = std::thread::Builder::new()
                .name("chain-verify".into())
                .spawn_scoped(scope, move || hash_chunks(to_hash, first_id, before))
                .map_err(|e| super::Error::Conflict(format!("starting to verify the event chain: {e}")))?;
            // The first break the ids or a missing hash show (the hasher
            // has every row before it).
            let read = read_chunks(&tx, first_id, chunks, total, progress);
            let mut report = hasher.join().map_err(|_| super::Error::Conflict("verifying the event chain: the hashing thread failed".into()))?;
            let structural = read?;
            if report.problem.is_none() {
                report.problem = structural;
            }
            Ok(report)
        })
    }

    /// Where the kept chain begins (the anchor's `first_id`; 1 without one).
    pub fn event_chain_start(&self) -> Result<i64> {
        Ok(anchor(&self.conn())?.map(|(id, _)| id).unwrap_or(1))
    }

    /// The head as it was at event `id`: that event's id and stored hash
    /// (None when it is not kept, or has no hash). The export stream writes
    /// it after the event, so an outside copy anchors the chain there.
    pub fn event_chain_link(&self, id: i64) -> Result<Option<ChainHead>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT hash FROM security_events WHERE id = ?1").doing("reading an event's hash")?;
        let hash = st.query_row([id], |r| Ok(as_hash(r.get_ref(0)?))).optional().doing("reading an event's hash")?;
        Ok(hash.flatten().map(|hash| ChainHead { id, hash }))
    }

    /// Where retention may cut the chain for events created before
    /// `cutoff`: the id of the first event, in chain order, created at
    /// `cutoff` or later (one past the head when there is none). Only a
    /// prefix of the chain can go, so an old event written after a newer
    /// one waits for it. Walks the primary key from the start (the rows to
    /// remove, and one more), on a connection of its own.
    pub fn event_trim_point(&self, cutoff: crate::model::Millis) -> Result<i64> {
        let conn = open_connection(self.path())?;
        let first: Option<i64> = conn
            .query_row("SELECT id FROM security_events NOT INDEXED WHERE created_at >= ?1 ORDER BY id LIMIT 1", [cutoff.0], |r| r.get(0))
            .optional()
            .doing("finding where retention cuts the event chain")?;
        match first {
            Some(id) => Ok(id),
            None => Ok(head(&conn)?.id + 1),
        }
    }

    /// Deletes the events with an id below `before_id` from the start of
    /// the chain, `TRIM_BATCH` rows per transaction (the writer waits for
    /// one short batch at most), moving the anchor in the same transaction
    /// as each delete: the kept chain still verifies. Returns how many
    /// were deleted. Trimming past the newest event leaves the anchor where
    /// the next event will be written.
    pub fn trim_events_before(&self, before_id: i64) -> Result<u64> {
        self.trim_events_before_with(before_id, &mut |_| true)
    }

    /// `trim_events_before`, on a connection of its own (the store's shared
    /// one stays free), calling `between(removed so far)` after each
    /// committed batch: it may pause (retention sleeps there, so the writer
    /// gets the lock between batches) and returns false to stop early.
    pub fn trim_events_before_with(&self, before_id: i64, between: &mut dyn FnMut(u64) -> bool) -> Result<u64> {
        let mut conn = open_connection(self.path())?;
        let mut removed = 0u64;
        loop {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to trim events")?;
            let last: Option<(i64, Option<Hash>)> = {
                let mut st = tx
                    .prepare_cached(
                        "SELECT id, hash FROM security_events WHERE id =
                           (SELECT MAX(id) FROM (SELECT id FROM security_events WHERE id < ?1 ORDER BY id LIMIT ?2))",
                    )
                    .doing("finding events to trim")?;
                st.query_row(params![before_id, TRIM_BATCH], |r| Ok((r.get(0)?, as_hash(r.get_ref(1)?)))).optional().doing("finding events to trim")?
            };
            let Some((last, hash)) = last else { return Ok(removed) };
            let n = tx.prepare_cached("DELETE FROM security_events WHERE id <= ?1").and_then(|mut st| st.execute([last])).doing("trimming events")?;
            let first_id = anchor(&tx)?.map(|(id, _)| id);
            // Never moves the start back (a row below it is removed as is).
            if first_id.is_none_or(|f| last + 1 > f) {
                tx.execute(
                    "INSERT INTO security_event_chain (one, first_id, hash_before) VALUES (1, ?1, ?2)
                     ON CONFLICT (one) DO UPDATE SET first_id = excluded.first_id, hash_before = excluded.hash_before",
                    params![last + 1, &hash.unwrap_or(GENESIS)[..]],
                )
                .doing("moving the event chain's anchor")?;
            }
            tx.commit().doing("committing a trim")?;
            removed += n as u64;
            // A short batch took the last rows below `before_id`.
            if (n as i64) < TRIM_BATCH || !between(removed) {
                return Ok(removed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
