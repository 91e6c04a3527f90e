//! The live feed: one thread beside the event writer that shows the
//! `Detector` every event in id order, never in a login's path.
//!
//! - The writer hands each committed batch over (with its ids) through a
//!   bounded channel, without waiting (`store::writer::Committed`). Its
//!   arrival is also the wake-up: no polling while the daemon writes.
//! - Events other processes wrote (the CLI) show up as gaps in the ids
//!   before a batch, or as a newer `max(id)` that the thread looks for
//!   every 250 ms; it reads them from the table by id (as it does a batch
//!   the writer had to drop because the channel was full).
//! - Password tags (`spray.rs`) come over their own channel and are paired
//!   with their `login_failed` event by time, address and username; a tag
//!   not claimed within 30 s is forgotten (counted).
//! - At start the thread first rebuilds the windows from the last
//!   `longest_window` of the table (7 days by default) with findings
//!   discarded (they were reported by the run that saw those events), then
//!   goes live. It runs after the ready line, so a big table delays
//!   detection, not the start (`LiveStats::ready` says when it is live).
//!   Sprays are not rebuilt: their key died with the previous process.
//!
//! Findings go out on a tokio channel the daemon consumes (the incident
//! engine's input); the thread waits when it is full.

use super::spray::{PasswordTag, TagMessage};
use super::{DetectEvent, Detector, Kind, EVENT_TYPES};
use crate::config::detection::DetectionSettings;
use crate::model::{Event, Finding, Millis};
use crate::store::writer::{Committed, FeedReceiver};
use crate::store::Store;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the table is asked for events of other processes.
pub const POLL: Duration = Duration::from_millis(250);
/// Rows read from the table at a time.
const PAGE: usize = 10_000;
/// Events the writer may have handed over and the thread not yet taken
/// (`store::writer::feed`): beyond them batches are read back from the
/// table instead, so a slow detector holds at most this many in memory.
pub const HANDOFF_EVENTS: usize = 100_000;
/// How long a tag waits for its event.
const TAG_TTL: Duration = Duration::from_secs(30);

/// What the detection thread has done, for `/metrics`, the benchmark and
/// tests. Shared with `Core`.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// The rebuild is done and events are seen as they come.
    pub ready: AtomicBool,
    /// Events looked at (all types), rebuild included.
    pub events: AtomicU64,
    /// Events replayed by the rebuild at start.
    pub rebuilt: AtomicU64,
    /// Events read from the table (other processes' and dropped batches).
    pub read_from_store: AtomicU64,
    /// The highest event id seen.
    pub last_id: AtomicI64,
    /// Every event with an id up to this one has been looked at (or, read
    /// from the table, skipped as a type no rule reads): what a caller
    /// waits on to know that detection has caught up with the table.
    pub seen_upto: AtomicI64,
    /// Tags whose event never came (or came first).
    pub tags_unmatched: AtomicU64,
    /// Keys the detector holds now, and how many it had to drop.
    pub tracked: AtomicU64,
    pub evicted: AtomicU64,
    /// Findings per (rule, incident type).
    findings: Mutex<BTreeMap<(String, String), u64>>,
}

impl LiveStats {
    fn count(&self, f: &Finding) {
        let rule = f.details.get("rule").and_then(|v| v.as_str()).unwrap_or("").to_owned();
        *self.findings.lock().unwrap_or_else(|p| p.into_inner()).entry((rule, f.incident_type.as_str().to_owned())).or_insert(0) += 1;
    }

    /// Findings so far per (rule, incident type).
    pub fn findings(&self) -> Vec<((String, String), u64)> {
        self.findings.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// How the thread runs.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    pub settings: DetectionSettings,
    pub ipv6_prefix: u8,
    /// Replay the last `longest_window` of the table first.
    pub rebuild: bool,
}

/// The running thread; `stop` reads what is left in the table, then joins.
pub struct DetectionThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl DetectionThread {
    /// Stops after one last look at the table (call it after the writer's
    /// last flush, so nothing committed goes unseen), and joins.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for DetectionThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts the detection thread.
pub fn start(
    store: Arc<Store>,
    config: FeedConfig,
    handoff: FeedReceiver,
    tags: Option<Receiver<TagMessage>>,
    stats: Arc<LiveStats>,
    findings: tokio::sync::mpsc::Sender<Finding>,
) -> std::io::Result<DetectionThread> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::Builder::new().name("detection".into()).spawn(move || {
        // Room for every account there is at start (see `with_accounts`).
        let accounts = store.count_users().unwrap_or(0);
        let mut feed = Feed { detector: Detector::new(&config.settings, config.ipv6_prefix).with_accounts(accounts), store, stats, findings, pending: Pending::default(), next_id: 1, quiet: false, now: Millis::now() };
        feed.run(&config, handoff, tags, &flag);
    })?;
    Ok(DetectionThread { stop, handle: Some(handle) })
}

/// Tags waiting for their `login_failed` event.
#[derive(Default)]
struct Pending {
    by_key: HashMap<(i64, String, String), PasswordTag>,
    order: VecDeque<((i64, String, String), Instant)>,
}

impl Pending {
    fn add(&mut self, m: TagMessage, now: Instant) {
        let key = (m.at.0, m.ip, m.username);
        self.by_key.insert(key.clone(), m.tag);
        self.order.push_back((key, now));
    }

    fn claim(&mut self, at: Millis, ip: &str, username: &str) -> Option<PasswordTag> {
        if self.by_key.is_empty() {
            return None;
        }
        self.by_key.remove(&(at.0, ip.to_owned(), username.to_owned()))
    }

    /// Forgets tags older than the TTL (or beyond `cap`); returns how many
    /// of them were never claimed.
    fn expire(&mut self, now: Instant, cap: usize) -> u64 {
        let mut lost = 0;
        while let Some((key, t)) = self.order.front() {
            if now.duration_since(*t) < TAG_TTL && self.order.len() <= cap {
                break;
            }
            if self.by_key.remove(key).is_some() {
                lost += 1;
            }
            self.order.pop_front();
        }
        lost
    }
}

struct Feed {
    detector: Detector,
    store: Arc<Store>,
    stats: Arc<LiveStats>,
    findings: tokio::sync::mpsc::Sender<Finding>,
    pending: Pending,
    /// The next event id to look at.
    next_id: i64,
    /// Findings are discarded (the rebuild).
    quiet: bool,
    /// The wall clock, read once per batch or page.
    now: Millis,
}

impl Feed {
    fn run(&mut self, config: &FeedConfig, handoff: FeedReceiver, tags: Option<Receiver<TagMessage>>, stop: &AtomicBool) {
        let start_id = match self.store.last_event_id() {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "detection: cannot read the newest event id; starting from the next one written");
                0
            }
        };
        if config.rebuild && config.settings.any_enabled() {
            let started = Instant::now();
            let now = Millis::now();
            let since = now.minus(config.settings.longest_window());
            self.quiet = true;
            match self.store.event_id_before(since) {
                Ok(from) if from < start_id => {
                    self.next_id = from + 1;
                    let before = self.stats.events.load(Ordering::Relaxed);
                    self.catch_up(start_id, Some(since));
                    let n = self.stats.events.load(Ordering::Relaxed) - before;
                    self.stats.rebuilt.store(n, Ordering::Relaxed);
                    tracing::info!(events = n, since = %since.rfc3339(), took_ms = started.elapsed().as_millis() as u64, "detection windows rebuilt");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "detection: cannot rebuild the windows; starting empty"),
            }
            self.quiet = false;
        }
        self.next_id = start_id + 1;
        self.stats.seen_upto.store(start_id, Ordering::Release);
        self.stats.ready.store(true, Ordering::Release);
        let queue_cap = config.settings.password_spraying.queue.max(1) * 4;
        let mut writer_gone = false;
        loop {
            if stop.load(Ordering::Acquire) {
                // What was handed over, then what is left in the table.
                self.take_tags(tags.as_ref(), queue_cap);
                while let Ok(b) = handoff.try_recv() {
                    self.batch(b);
                }
                self.poll();
                return;
            }
            if writer_gone {
                // Only other processes write now.
                std::thread::sleep(POLL);
                self.take_tags(tags.as_ref(), queue_cap);
                self.poll();
                continue;
            }
            match handoff.recv_timeout(POLL) {
                Ok(b) => {
                    // Tags first: each was sent before its event was queued.
                    self.take_tags(tags.as_ref(), queue_cap);
                    self.batch(b);
                    while let Ok(b) = handoff.try_recv() {
                        self.take_tags(tags.as_ref(), queue_cap);
                        self.batch(b);
                    }
                    self.publish();
                    // While the writer keeps handing batches over, another
                    // process's events show up as gaps before them; the
                    // table is asked only once it has gone quiet (asking
                    // earlier would read what is still queued here).
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.take_tags(tags.as_ref(), queue_cap);
                    self.poll();
                    self.publish();
                }
                Err(RecvTimeoutError::Disconnected) => writer_gone = true,
            }
        }
    }

    fn take_tags(&mut self, tags: Option<&Receiver<TagMessage>>, cap: usize) {
        let now = Instant::now();
        if let Some(rx) = tags {
            while let Ok(m) = rx.try_recv() {
                self.pending.add(m, now);
            }
        }
        let lost = self.pending.expire(now, cap);
        if lost > 0 {
            self.stats.tags_unmatched.fetch_add(lost, Ordering::Relaxed);
        }
    }

    /// One batch from the writer: first what lies before it in the table
    /// (other processes' events, dropped batches), then the batch itself.
    fn batch(&mut self, b: Committed) {
        let Some(&first) = b.ids.first() else { return };
        self.now = Millis::now();
        if first > self.next_id {
            self.catch_up(first - 1, None);
        }
        for (id, e) in b.ids.iter().zip(b.events.iter()) {
            if *id < self.next_id {
                continue;
            }
            self.one(*id, e);
            self.next_id = id + 1;
        }
        self.stats.seen_upto.store(self.next_id - 1, Ordering::Release);
    }

    /// The detector's size, for `/metrics`.
    fn publish(&self) {
        let st = self.detector.stats();
        self.stats.tracked.store((st.addresses + st.networks + st.accounts + st.tags) as u64, Ordering::Relaxed);
        self.stats.evicted.store(st.evicted, Ordering::Relaxed);
    }

    /// Reads what other processes wrote since the last look.
    fn poll(&mut self) {
        match self.store.last_event_id() {
            Ok(max) if max >= self.next_id => self.catch_up(max, None),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "detection: polling the event table"),
        }
    }

    /// Reads the events with ids from `next_id` to `upto` from the table.
    fn catch_up(&mut self, upto: i64, since: Option<Millis>) {
        while self.next_id <= upto {
            let page = match self.store.events_by_id(self.next_id - 1, upto, since, EVENT_TYPES, PAGE) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "detection: reading events by id");
                    return;
                }
            };
            let full = page.len() == PAGE;
            self.now = Millis::now();
            if !self.quiet {
                self.stats.read_from_store.fetch_add(page.len() as u64, Ordering::Relaxed);
            }
            for (id, e) in &page {
                self.one(*id, e);
                self.next_id = id + 1;
            }
            if !full {
                // The rest of the range holds nothing the rules read.
                self.next_id = upto + 1;
            }
            if !self.quiet {
                self.stats.seen_upto.store(self.next_id - 1, Ordering::Release);
            }
        }
    }

    fn one(&mut self, id: i64, e: &Event) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        self.stats.last_id.store(id, Ordering::Relaxed);
        let Some(mut ev) = DetectEvent::from_event(id, e) else { return };
        if matches!(ev.kind, Kind::Failure { .. }) {
            if let (Some(ip), Some(name)) = (e.ip.as_deref(), e.username.as_deref()) {
                ev.tag = self.pending.claim(e.created_at, ip, name);
            }
        }
        let found = self.detector.observe(&ev, self.now);
        if self.quiet {
            return;
        }
        for f in found {
            self.stats.count(&f);
            if self.findings.blocking_send(f).is_err() {
                // Nobody listens any more (shutting down).
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::detect::spray::Tagger;
    use crate::model::{EventType, Secret, Severity};
    use crate::store::EventWriter;

    /// The thread rebuilds from the table, then sees the writer's batches,
    /// events another process wrote straight into the table, and password
    /// tags paired with their events.
    #[test]
    fn the_feed_sees_the_rebuild_the_writer_another_process_and_tags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = Arc::new(Store::open(&path).expect("open"));
        store.migrate(None).expect("migrate");
        let now = Millis::now();
        let fail = |name: &str, user: Option<i64>, ip: &str, at: Millis| {
            Event::new(EventType::LoginFailed, Severity::Low, "x", at).user(user, Some(name)).ip(Some(ip)).detail("reason", if user.is_some() { "bad_password" } else { "unknown_user" })
        };
        // Before the start: four failures of alice (the rebuild keeps them
        // and reports nothing).
        let before: Vec<Event> = (0..4).map(|i| fail("alice", Some(1), "192.0.2.1", now.minus(Duration::from_secs(60 - i)))).collect();
        store.insert_events(&before).expect("insert");
        let (tx, rx) = crate::store::writer::feed(HANDOFF_EVENTS);
        let (writer, writer_thread) = EventWriter::start_with_feed(&path, 100, Some(tx)).expect("writer");
        let tagger = Tagger::with_key(Some(Secret::new([1; 32])), 64);
        let stats = Arc::new(LiveStats::default());
        let (ftx, mut frx) = tokio::sync::mpsc::channel(100);
        let config = FeedConfig { settings: DetectionSettings::default(), ipv6_prefix: 64, rebuild: true };
        let thread = start(Arc::new(Store::open(&path).expect("open")), config, rx, tagger.take_receiver(), stats.clone(), ftx).expect("start");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stats.ready.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the rebuild did not finish");
            std::thread::sleep(Duration::from_millis(10));
        }
        rt.block_on(async {
            // The fifth failure, through the writer.
            writer.record(fail("alice", Some(1), "192.0.2.1", Millis::now())).await;
            // A dictionary name, written by "another process".
            store.insert_events(&[fail("oracle", None, "127.0.0.9", Millis::now())]).expect("insert");
            // One password against five accounts: tag first, then the event.
            for (i, name) in ["anna", "ben", "cleo", "dirk", "eva"].iter().enumerate() {
                let at = Millis::now();
                tagger.offer(b"Spring-2026!", at, "198.51.100.20".into(), name.to_string());
                writer.record(fail(name, Some(10 + i as i64), "198.51.100.20", at)).await;
            }
            assert!(writer.flush().await);
        });
        let mut rules = std::collections::BTreeSet::new();
        while !(rules.contains("brute_force_account") && rules.contains("dictionary_username") && rules.contains("password_spraying")) {
            assert!(Instant::now() < deadline, "findings so far: {rules:?}");
            if let Ok(Some(f)) = rt.block_on(async { tokio::time::timeout(Duration::from_millis(200), frx.recv()).await }) {
                rules.insert(f.details["rule"].as_str().unwrap_or("").to_owned());
            }
        }
        assert!(stats.ready.load(Ordering::Acquire));
        assert_eq!(stats.rebuilt.load(Ordering::Relaxed), 4);
        assert!(stats.read_from_store.load(Ordering::Relaxed) >= 1, "the other process's event came from the table");
        assert_eq!(tagger.dropped(), 0);
        thread.stop();
        assert_eq!(stats.seen_upto.load(Ordering::Acquire), store.last_event_id().expect("last id"), "every event was looked at");
        drop(writer);
        writer_thread.join();
        // What `/metrics` shows as portcullis_detection_findings_total.
        let findings = stats.findings();
        assert!(findings.contains(&(("password_spraying".to_owned(), "password_spraying".to_owned()), 1)), "{findings:?}");
    }
}
