//! The event writer: one thread, its own connection, group commit. Callers
//! queue events; the thread takes everything queued (up to `batch`), writes
//! it in one transaction, and only then answers those who asked to know.
//! With feeds (`start_with_feeds`) each committed batch is then handed,
//! with its ids, to readers in the same process (the detector, the event
//! export) without waiting: a full feed (`feed(max_events)`) drops the
//! batch, which the reader then finds in the table by id.

use super::{events::insert_batch, events::Chain, open_connection, Result};
use crate::model::Event;
use std::path::Path;
use tokio::sync::{mpsc, oneshot};

/// A waiter learns the id its event got (`Some`), or `None` when the
/// batch could not be written; a flush's waiter gets `Some(0)`.
type Waiter = oneshot::Sender<Option<i64>>;

enum Msg {
    Event(Event, Option<Waiter>),
    Flush(Waiter),
}

/// A committed batch and the ids the table gave its events, in order.
/// The events are shared by every feed (no copy per reader).
pub struct Committed {
    pub ids: Vec<i64>,
    pub events: std::sync::Arc<Vec<Event>>,
}

/// The writer's side of a feed: batches go out without waiting, and only
/// while fewer than `max_events` events are handed over and not yet taken
/// (a bound on the memory a slow reader can hold).
pub struct FeedSender {
    tx: std::sync::mpsc::SyncSender<Committed>,
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max_events: usize,
}

/// The reader's side: `recv_timeout` and `try_recv` as a channel's.
pub struct FeedReceiver {
    rx: std::sync::mpsc::Receiver<Committed>,
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A feed holding at most `max_events` events (in at most 4,096 batches).
pub fn feed(max_events: usize) -> (FeedSender, FeedReceiver) {
    let (tx, rx) = std::sync::mpsc::sync_channel(4096);
    let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (FeedSender { tx, queued: queued.clone(), max_events }, FeedReceiver { rx, queued })
}

impl FeedSender {
    /// Whether `n` more events fit now.
    fn has_room(&self, n: usize) -> bool {
        self.queued.load(std::sync::atomic::Ordering::Acquire) + n <= self.max_events
    }

    fn offer(&self, c: Committed) {
        use std::sync::atomic::Ordering;
        let n = c.events.len();
        if !self.has_room(n) {
            return; // the reader finds it in the table
        }
        self.queued.fetch_add(n, Ordering::AcqRel);
        if self.tx.try_send(c).is_err() {
            self.queued.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

impl FeedReceiver {
    fn taken(&self, c: Committed) -> Committed {
        self.queued.fetch_sub(c.events.len(), std::sync::atomic::Ordering::AcqRel);
        c
    }
    pub fn recv_timeout(&self, d: std::time::Duration) -> std::result::Result<Committed, std::sync::mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(d).map(|c| self.taken(c))
    }
    pub fn try_recv(&self) -> std::result::Result<Committed, std::sync::mpsc::TryRecvError> {
        self.rx.try_recv().map(|c| self.taken(c))
    }
}

/// Told of every committed batch, on the writer's thread, with the commit
/// time (the daemon's metrics: batch size and lag). Must not block.
pub type BatchObserver = Box<dyn Fn(&[Event], crate::model::Millis) + Send + Sync>;

/// Cheap to clone; every clone feeds the same thread.
#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<Msg>,
    observer: std::sync::Arc<std::sync::OnceLock<BatchObserver>>,
}

/// Joined by the daemon at shutdown, after every sender is dropped.
pub struct WriterThread(Option<std::thread::JoinHandle<()>>);

impl WriterThread {
    pub fn join(mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

const QUEUE: usize = 65_536;

impl EventWriter {
    pub fn start_joinable(path: &Path, batch: usize) -> Result<(EventWriter, WriterThread)> {
        EventWriter::start_with_feed(path, batch, None)
    }

    /// `start_joinable`, handing every committed batch to `feed` (with
    /// `try_send`: the writer never waits for its reader).
    pub fn start_with_feed(path: &Path, batch: usize, feed: Option<FeedSender>) -> Result<(EventWriter, WriterThread)> {
        EventWriter::start_inner(path, batch, feed.into_iter().collect(), Chain::On)
    }

    /// `start_with_feed` with several readers: each gets every committed
    /// batch (shared, not copied), each dropped on its own when that
    /// reader's feed is full.
    pub fn start_with_feeds(path: &Path, batch: usize, feeds: Vec<FeedSender>) -> Result<(EventWriter, WriterThread)> {
        EventWriter::start_inner(path, batch, feeds, Chain::On)
    }

    /// The writer with the hash chain off, for benchmark P3's "without the
    /// chain" figure only: its rows have no hash (`security events verify`
    /// fails on them). The daemon and every other writer always chain;
    /// nothing in the config or the CLI reaches this.
    #[doc(hidden)]
    pub fn start_unchained_for_benchmark(path: &Path, batch: usize) -> Result<(EventWriter, WriterThread)> {
        EventWriter::start_inner(path, batch, Vec::new(), Chain::Off)
    }

    fn start_inner(path: &Path, batch: usize, feeds: Vec<FeedSender>, chain: Chain) -> Result<(EventWriter, WriterThread)> {
        let mut conn = open_connection(path)?;
        // The event indexes take inserts at many points at once (one per
        // user and address); a larger page cache keeps those pages hot.
        conn.pragma_update(None, "cache_size", -65_536).map_err(|source| super::Error::Sqlite { what: "sizing the writer cache".into(), source })?;
        // Checkpoint less often: an index page rewritten by many batches is
        // then copied into the database once, not once per 1,000 WAL pages.
        conn.pragma_update(None, "wal_autocheckpoint", 16_384).map_err(|source| super::Error::Sqlite { what: "setting the checkpoint interval".into(), source })?;
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let observer: std::sync::Arc<std::sync::OnceLock<BatchObserver>> = Default::default();
        let observing = observer.clone();
        let handle = std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || {
                let mut events = Vec::with_capacity(batch);
                let mut waiters = Vec::new();
                while let Some(first) = rx.blocking_recv() {
                    let mut next = Some(first);
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Event(e, w) => {
                                if let Some(w) = w {
                                    waiters.push((w, Some(events.len())));
                                }
                                events.push(e);
                            }
                            Msg::Flush(w) => waiters.push((w, None)),
                        }
                        if events.len() >= batch {
                            break;
                        }
                        next = rx.try_recv().ok();
                    }
                    // What each waiter is told: its event's id (0 for a flush).
                    let mut answers: Vec<i64> = Vec::new();
                    let ok = events.is_empty() || match insert_batch(&mut conn, &events, chain) {
                        Ok(ids) => {
                            answers = waiters.iter().map(|(_, at)| at.and_then(|i| ids.get(i).copied()).unwrap_or(0)).collect();
                            if let Some(o) = observing.get() {
                                o(&events, crate::model::Millis::now());
                            }
                            // Full or gone: the reader catches up from the table.
                            let takers: Vec<&FeedSender> = feeds.iter().filter(|f| f.has_room(events.len())).collect();
                            if !takers.is_empty() {
                                let done = std::sync::Arc::new(std::mem::replace(&mut events, Vec::with_capacity(batch.min(1024))));
                                for feed in takers {
                                    feed.offer(Committed { ids: ids.clone(), events: done.clone() });
                                }
                            }
                            true
                        }
                        Err(e) => {
                            tracing::error!(error = %e, count = events.len(), "security events could not be written");
                            false
                        }
                    };
                    events.clear();
                    for (i, (w, _)) in waiters.drain(..).enumerate() {
                        let _ = w.send(if ok { Some(answers.get(i).copied().unwrap_or(0)) } else { None });
                    }
                }
            })
            .map_err(|e| super::Error::Conflict(format!("starting the event writer: {e}")))?;
        Ok((EventWriter { tx, observer }, WriterThread(Some(handle))))
    }

    /// Sets the observer of committed batches (once; false if one is set).
    pub fn observe(&self, observer: BatchObserver) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Queues an event; waits only when the queue is full.
    pub async fn record(&self, event: Event) {
        if self.tx.send(Msg::Event(event, None)).await.is_err() {
            tracing::error!("event writer has stopped; event lost");
        }
    }

    /// Queues an event and waits until it is committed. Returns false if
    /// the write failed: a caller that must not proceed unrecorded
    /// (a successful login) refuses then.
    pub async fn record_committed(&self, event: Event) -> bool {
        self.record_committed_id(event).await.is_some()
    }

    /// `record_committed`, answering the id the event got (`None`: not
    /// written).
    pub async fn record_committed_id(&self, event: Event) -> Option<i64> {
        let (w, r) = oneshot::channel();
        if self.tx.send(Msg::Event(event, Some(w))).await.is_err() {
            return None;
        }
        r.await.ok().flatten()
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> bool {
        let (w, r) = oneshot::channel();
        if self.tx.send(Msg::Flush(w)).await.is_err() {
            return false;
        }
        r.await.ok().flatten().is_some()
    }
}
