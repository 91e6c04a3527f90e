//! The event stream: one thread beside the event writer that sends every
//! committed event, in id order, to the configured sinks (a JSON-lines
//! file, syslog) and writes the login lines of the daemon's log. Never in a
//! login's path:
//!
//! - The writer hands each committed batch over without waiting (a feed of
//!   `export.queue` events, `store::writer::feed`); a batch it had to drop,
//!   and the events other processes (the CLI) wrote, show up as gaps in the
//!   ids and are read from the table by id, on a connection of its own (as
//!   the detector does); the table's newest id is looked at every second.
//! - A sink that fails drops its records (counted), says so once in the log
//!   per outage, and is tried again later; the others go on.
//! - The chain head (`Store::event_chain_link`: the id and hash of the last
//!   event written) goes into every stream after each `chain_head_every`
//!   events, at start and at stop, as its own record, so a copy kept
//!   elsewhere anchors the hash chain.
//! - JSON lines are the objects of `security events --json` (C1 controls,
//!   DEL and bidi overrides as `\uXXXX`), so no attacker text reaches a
//!   terminal that shows the file. Events carry no secret, and the stream
//!   adds none.
//!
//! The stream starts at the head when the daemon starts: events written
//! while no daemon runs are not streamed (`security events --json` has
//! them; the start's chain-head record shows where the stream resumed).
//! That head is read (`head`) before the writer that feeds the stream
//! starts, so every batch it commits is after it and streamed.

pub mod syslog;

use crate::config::export::ExportSettings;
use crate::core::metrics::ExportCounts;
use crate::model::{escape_control, json_terminal_safe, EventType, Millis, StoredEvent};
use crate::store::chain::ChainHead;
use crate::store::events::EventFilter;
use crate::store::writer::{Committed, FeedReceiver};
use crate::store::Store;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the table is asked for events the writer did not hand over.
const POLL: Duration = Duration::from_secs(1);
/// Rows read from the table at a time.
const PAGE: usize = 1000;

/// The running thread.
pub struct Exporter {
    stop: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Reopens the file at the next record or within a second (SIGHUP, for
    /// logrotate: after the old file was renamed, a new one is created).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Streams what is left (call it after the writer's last flush), writes
    /// the chain head, closes the sinks and joins.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Whether the stream has anything to do with these settings.
pub fn wanted(s: &ExportSettings) -> bool {
    s.file.is_some() || s.syslog.is_some() || s.log_logins
}

/// The system's host name, for syslog's HOSTNAME when the config names none.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").or_else(|_| std::fs::read_to_string("/etc/hostname")).unwrap_or_default()
}

/// Where the stream starts: the event chain's head now. Read it before the
/// writer feeding the stream starts (a batch committed before this read
/// would count as before the start, and not be streamed). None when it
/// cannot be read (logged); the thread then reads it when it starts.
pub fn head(store: &Store) -> Option<ChainHead> {
    match store.event_chain_head() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "export: cannot read the event chain's head before the writer starts");
            None
        }
    }
}

/// Starts the thread. `store` is a connection of its own (catch-up reads
/// never wait on the core's); `handoff` the writer's feed for it; `from`
/// where the stream starts (`head`, read before the writer started);
/// `stats` the counters `/metrics` shows (`Core::export_counts`).
pub fn start(settings: ExportSettings, store: Arc<Store>, handoff: FeedReceiver, from: Option<ChainHead>, stats: Arc<ExportCounts>) -> std::io::Result<Exporter> {
    let stop = Arc::new(AtomicBool::new(false));
    let reopen = Arc::new(AtomicBool::new(false));
    let hostname = syslog::hostname_field(&settings.hostname.clone().unwrap_or_else(system_hostname));
    let header = syslog::Header { facility: settings.facility, hostname, procid: std::process::id() };
    if let Some(f) = &settings.file {
        tracing::info!(file = %f.display(), "export: events are appended to a JSON-lines file");
    }
    if let Some(t) = &settings.syslog {
        tracing::info!(target_addr = %t, facility = settings.facility, hostname = %header.hostname, "export: events are sent to syslog (RFC 5424)");
    }
    let mut stream = Stream::new(&settings, header, store, stats, reopen.clone());
    let s = stop.clone();
    let handle = std::thread::Builder::new().name("event-export".into()).spawn(move || stream.run(from, handoff, &s))?;
    Ok(Exporter { stop, reopen, handle: Some(handle) })
}

/// The JSON-lines file: appended to, reopened on request, closed after a
/// failure and opened again at the next batch (at most once a second).
struct FileSink {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    retry_at: Option<Instant>,
    down: bool,
    dropped_in_outage: u64,
}

impl FileSink {
    fn new(path: PathBuf) -> FileSink {
        FileSink { path, file: None, retry_at: None, down: false, dropped_in_outage: 0 }
    }

    fn open(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Usernames and addresses: readable by the owner only.
        let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path)?;
        self.file = Some(std::io::BufWriter::with_capacity(64 * 1024, f));
        Ok(())
    }

    fn reopen(&mut self) {
        self.flush();
        self.file = None;
        self.retry_at = None;
        tracing::info!(file = %self.path.display(), "export: reopening the events file");
    }

    /// Appends one line; false when it was dropped.
    fn write_line(&mut self, line: &str) -> bool {
        if self.file.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                self.dropped_in_outage += 1;
                return false;
            }
            if let Err(e) = self.open() {
                self.failed(&e);
                self.dropped_in_outage += 1;
                return false;
            }
        }
        let Some(f) = self.file.as_mut() else { return false };
        match f.write_all(line.as_bytes()).and_then(|_| f.write_all(b"\n")) {
            Ok(()) => {
                if self.down {
                    self.down = false;
                    tracing::info!(file = %self.path.display(), dropped = self.dropped_in_outage, "export: the events file is written again");
                    self.dropped_in_outage = 0;
                }
                true
            }
            Err(e) => {
                self.file = None;
                self.failed(&e);
                self.dropped_in_outage += 1;
                false
            }
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        self.retry_at = Some(Instant::now() + POLL);
        if !self.down {
            self.down = true;
            tracing::warn!(file = %self.path.display(), error = %e, "export: the events file cannot be written; its lines are dropped (counted) until it can");
        }
    }

    fn flush(&mut self) {
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f.flush() {
                self.file = None;
                self.failed(&e);
            }
        }
    }
}

struct Stream {
    file: Option<FileSink>,
    syslog: Option<syslog::SyslogSink>,
    header: syslog::Header,
    every: u64,
    log_logins: bool,
    /// Events since the last chain head record.
    since_head: u64,
    /// The next event id to stream.
    next_id: i64,
    store: Arc<Store>,
    stats: Arc<ExportCounts>,
    /// Set by SIGHUP: the file is reopened before the next record.
    reopen: Arc<AtomicBool>,
    /// Reading events from the table failed (logged once until it works).
    read_failing: bool,
    /// The chain's head could not be read at the start: the stream starts
    /// at the first batch handed over, or after the newest id a poll reads.
    start_unknown: bool,
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

impl Stream {
    fn new(settings: &ExportSettings, header: syslog::Header, store: Arc<Store>, stats: Arc<ExportCounts>, reopen: Arc<AtomicBool>) -> Stream {
        Stream {
            file: settings.file.clone().map(FileSink::new),
            syslog: settings.syslog.clone().map(syslog::SyslogSink::new),
            header,
            every: settings.chain_head_every.max(1),
            log_logins: settings.log_logins,
            since_head: 0,
            next_id: 1,
            store,
            stats,
            reopen,
            read_failing: false,
            start_unknown: false,
        }
    }

    fn sinks(&self) -> bool {
        self.file.is_some() || self.syslog.is_some()
    }

    fn maybe_reopen(&mut self) {
        if self.reopen.swap(false, Ordering::AcqRel) {
            if let Some(f) = self.file.as_mut() {
                f.reopen();
            }
        }
    }

    fn run(&mut self, from: Option<ChainHead>, handoff: FeedReceiver, stop: &AtomicBool) {
        match from.map(Ok).unwrap_or_else(|| self.store.event_chain_head()) {
            Ok(head) => {
                self.next_id = head.id + 1;
                self.chain_head(head);
            }
            Err(e) => {
                // Not from the start of the table: from the first event
                // the writer hands over (or, without one, the newest id a
                // poll reads).
                tracing::error!(error = %e, "export: cannot read the event chain's head; streaming from the next event written");
                self.start_unknown = true;
            }
        }
        self.flush();
        let mut writer_gone = false;
        loop {
            self.maybe_reopen();
            if stop.load(Ordering::Acquire) {
                while let Ok(b) = handoff.try_recv() {
                    self.batch(b);
                }
                self.poll();
                if self.since_head > 0 {
                    self.head_at(self.next_id - 1);
                }
                self.flush();
                return;
            }
            if writer_gone {
                std::thread::sleep(POLL.min(Duration::from_millis(200)));
                self.poll();
                self.flush();
                continue;
            }
            match handoff.recv_timeout(POLL) {
                Ok(b) => {
                    self.batch(b);
                    while let Ok(b) = handoff.try_recv() {
                        self.batch(b);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => self.poll(),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => writer_gone = true,
            }
            self.flush();
        }
    }

    /// A batch from the writer: what is missing before it first, from the
    /// table; events already streamed (read from the table) are skipped.
    /// When the missing ones cannot be read, the batch is left to the next
    /// poll too (it is in the table): nothing is skipped.
    fn batch(&mut self, b: Committed) {
        self.maybe_reopen();
        let Some(&first) = b.ids.first() else { return };
        if std::mem::take(&mut self.start_unknown) {
            self.next_id = first;
        }
        if first > self.next_id {
            self.catch_up(first - 1);
            if first > self.next_id {
                return;
            }
        }
        for (id, e) in b.ids.iter().zip(b.events.iter()) {
            if *id >= self.next_id {
                self.emit(&StoredEvent::of(*id, e));
            }
        }
    }

    /// Events the writer did not hand over (other processes', dropped batches).
    fn poll(&mut self) {
        self.maybe_reopen();
        match self.store.last_event_id() {
            Ok(last) if self.start_unknown => {
                self.start_unknown = true;
                self.next_id = last + 1;
            }
            Ok(last) if last >= self.next_id => self.catch_up(last),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "export: reading the newest event id"),
        }
    }

    /// Streams the events with ids from `next_id` to `upto`, read from the
    /// table. A read that fails leaves `next_id` where it is: the next poll
    /// reads from there again.
    fn catch_up(&mut self, upto: i64) {
        while self.next_id <= upto {
            let filter = EventFilter { after_id: Some(self.next_id - 1), limit: PAGE, ..Default::default() };
            let rows = match self.store.events(&filter) {
                Ok(r) => {
                    if std::mem::take(&mut self.read_failing) {
                        tracing::info!(from_id = self.next_id, "export: events are read from the table again");
                    }
                    r
                }
                Err(e) => {
                    if !self.read_failing {
                        self.read_failing = true;
                        tracing::warn!(error = %e, from_id = self.next_id, "export: reading events from the table failed; tried again every second");
                    }
                    return;
                }
            };
            let Some(last) = rows.last().map(|r| r.id) else {
                // Trimmed meanwhile (retention): nothing left below `upto`.
                self.next_id = upto + 1;
                return;
            };
            for e in rows.iter().filter(|e| e.id <= upto) {
                self.emit(e);
            }
            if last >= upto {
                self.next_id = self.next_id.max(upto + 1);
                return;
            }
        }
    }

    fn emit(&mut self, e: &StoredEvent) {
        self.next_id = e.id + 1;
        if self.log_logins {
            log_login(e);
        }
        if !self.sinks() {
            return;
        }
        self.write(
            || match serde_json::to_string(e) {
                Ok(json) => Some(json_terminal_safe(json)),
                Err(err) => {
                    tracing::error!(error = %err, id = e.id, "export: an event could not be serialised");
                    None
                }
            },
            |header| syslog::event_record(header, e),
        );
        self.since_head += 1;
        if self.since_head >= self.every {
            self.head_at(e.id);
        }
    }

    fn head_at(&mut self, id: i64) {
        match self.store.event_chain_link(id) {
            Ok(Some(link)) => self.chain_head(link),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, id, "export: reading the event chain at an event"),
        }
        self.since_head = 0;
    }

    /// Writes `head` into every stream.
    fn chain_head(&mut self, head: ChainHead) {
        if !self.sinks() {
            return;
        }
        let at = Millis::now().rfc3339();
        let hex = head.hex();
        self.write(|| Some(serde_json::json!({ "chain_head": { "id": head.id, "hash": hex, "at": at } }).to_string()), |header| syslog::chain_head_record(header, head.id, &hex, &at));
        self.stats.chain_heads.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes one line into the file (when there is one and `line` gives
    /// it) and one record to syslog (when configured), and counts them.
    fn write(&mut self, line: impl FnOnce() -> Option<String>, record: impl FnOnce(&syslog::Header) -> String) {
        if let Some(f) = self.file.as_mut() {
            if let Some(line) = line() {
                let ok = f.write_line(&line);
                (if ok { &self.stats.file_written } else { &self.stats.file_dropped }).fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(s) = self.syslog.as_mut() {
            s.send(&record(&self.header));
            self.stats.syslog_sent.store(s.sent, Ordering::Relaxed);
            self.stats.syslog_dropped.store(s.dropped, Ordering::Relaxed);
        }
    }

    fn flush(&mut self) {
        if let Some(f) = self.file.as_mut() {
            f.flush();
        }
    }
}

/// One structured line in the daemon's log per login success or failure,
/// for a log shipper: the event id, the result, the username as typed
/// (escaped, then quoted), the account id, address, method and protocol,
/// and a failure's reason.
fn log_login(e: &StoredEvent) {
    let result = match EventType::parse(&e.event_type) {
        Some(EventType::LoginSuccess) => "success",
        Some(EventType::LoginFailed) => "failure",
        _ => return,
    };
    let detail = |k: &str| e.details.get(k).and_then(|v| v.as_str()).map(escape_control).unwrap_or_else(|| "-".into());
    let user = e.username.as_deref().map(escape_control).unwrap_or_default();
    tracing::info!(
        target: "portcullis::login",
        event_id = e.id,
        result,
        user = ?user,
        user_id = %opt(e.user_id),
        ip = %opt(e.ip.as_deref()),
        method = %detail("method"),
        protocol = %detail("protocol"),
        reason = %detail("reason"),
        "login {result}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Severity};
    use crate::store::EventWriter;

    fn settings(file: PathBuf) -> ExportSettings {
        ExportSettings { file: Some(file), syslog: None, facility: 10, hostname: Some("gate".into()), chain_head_every: 1000, queue: 1000, log_logins: false }
    }

    fn event(n: usize) -> Event {
        Event::new(EventType::LoginFailed, Severity::Low, &format!("e{n}"), Millis::now())
    }

    /// Records events `ns` through `writer` and waits for their commit.
    fn record(rt: &tokio::runtime::Runtime, writer: &EventWriter, ns: std::ops::RangeInclusive<usize>) {
        rt.block_on(async {
            for n in ns {
                writer.record(event(n)).await;
            }
            assert!(writer.flush().await);
        });
    }

    /// (chain head ids, event ids) of the lines of the events file.
    fn lines(path: &std::path::Path) -> (Vec<i64>, Vec<i64>) {
        let body = std::fs::read_to_string(path).expect("read the events file");
        let (mut heads, mut events) = (Vec::new(), Vec::new());
        for l in body.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            match v.get("chain_head") {
                Some(h) => heads.push(h["id"].as_i64().expect("head id")),
                None => events.push(v["id"].as_i64().expect("id")),
            }
        }
        (heads, events)
    }

    /// The stream starts at the head read before the writer started: what
    /// the writer committed before the thread was running is streamed too;
    /// what was there before is not.
    #[test]
    fn batches_committed_before_the_thread_runs_are_streamed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = Arc::new(Store::open(&path).expect("open"));
        store.migrate(None).expect("migrate");
        store.insert_events(&[event(0)]).expect("insert");
        let export_store = Arc::new(Store::open(&path).expect("open"));
        let from = head(&export_store);
        assert_eq!(from.as_ref().map(|h| h.id), Some(1));
        let (tx, rx) = crate::store::writer::feed(1000);
        let (writer, writer_thread) = EventWriter::start_with_feed(&path, 100, Some(tx)).expect("writer");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        record(&rt, &writer, 1..=3);
        let file = dir.path().join("events.jsonl");
        let stats = Arc::new(ExportCounts::default());
        let exporter = start(settings(file.clone()), export_store, rx, from, stats.clone()).expect("start");
        record(&rt, &writer, 4..=5);
        exporter.stop();
        drop(writer);
        writer_thread.join();
        let (heads, events) = lines(&file);
        assert_eq!(events, vec![2, 3, 4, 5, 6]);
        assert_eq!(heads, vec![1, 6], "at start and at stop");
        assert_eq!(stats.file_written.load(Ordering::Relaxed), 7);
        assert_eq!(stats.file_dropped.load(Ordering::Relaxed), 0);
    }

    /// A head that cannot be read starts the stream at the first event the
    /// writer hands over, as the log line says, not at the table's start.
    #[test]
    fn an_unreadable_head_streams_from_the_next_event_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = Store::open(&path).expect("open");
        store.migrate(None).expect("migrate");
        store.insert_events(&[event(1), event(2), event(3)]).expect("insert");
        let export_store = Arc::new(Store::open(&path).expect("open"));
        // A temporary table of the same name hides the chain's anchor from
        // this connection only (the writer's is untouched).
        export_store.conn().execute_batch("CREATE TEMP TABLE security_event_chain (one INTEGER)").expect("temp table");
        assert!(head(&export_store).is_none());
        let (tx, rx) = crate::store::writer::feed(1000);
        let (writer, writer_thread) = EventWriter::start_with_feed(&path, 100, Some(tx)).expect("writer");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        record(&rt, &writer, 4..=5);
        let file = dir.path().join("events.jsonl");
        let header = syslog::Header { facility: 10, hostname: "gate".into(), procid: 1 };
        let mut stream = Stream::new(&settings(file.clone()), header, export_store, Arc::new(ExportCounts::default()), Arc::new(AtomicBool::new(false)));
        // Stopped already: the thread's last round (what was handed over,
        // then a poll) on this thread.
        stream.run(None, rx, &AtomicBool::new(true));
        drop(writer);
        writer_thread.join();
        assert_eq!(lines(&file).1, vec![4, 5]);
    }
}
