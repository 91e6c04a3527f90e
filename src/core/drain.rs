//! The worker loop of a durable queue, shared by the mail outbox worker
//! (`mail`) and the webhook worker (`hooks`), which may not use each
//! other: a round now, then one every `poll` or when woken, until shut
//! down. A round reads the due items batch after batch and sends each at
//! most once. Reading and sending are the front end's (`Queue`); no I/O
//! here.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How much one round takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Items fetched at a time.
    pub batch: usize,
    /// Items tried in one round before the worker sleeps again.
    pub max_per_round: usize,
}

/// A durable queue as its worker sees it.
pub trait Queue {
    type Item;
    /// The item's id: a round sends each item at most once.
    fn id(item: &Self::Item) -> i64;
    /// Up to `n` due items, oldest first; `None` when they could not be
    /// read (the implementation says why in the log), which ends the round.
    fn due(&self, n: usize) -> impl Future<Output = Option<Vec<Self::Item>>> + Send;
    /// Sends one item and records how it went (a failure included: it is
    /// the queue's to reschedule or give up).
    fn send(&self, item: &Self::Item) -> impl Future<Output = ()> + Send;
}

/// Runs until `shutdown` turns true (or its sender is dropped): a round at
/// once, then one every `poll`, or as soon as `wake` is notified (a
/// `notify_one` is not lost while a round runs).
pub async fn run<Q: Queue>(queue: &Q, limits: Limits, wake: &Notify, mut shutdown: watch::Receiver<bool>, poll: Duration) {
    loop {
        if *shutdown.borrow() {
            break;
        }
        round(queue, limits, &shutdown).await;
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = wake.notified() => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
}

/// One round: batches of at most `limits.batch` due items, each item sent
/// at most once. It ends when a batch was not full (nothing more is due),
/// brought nothing new (every item in it was sent this round and is still
/// due), or `limits.max_per_round` items were sent; when the items could
/// not be read; and before the next item once `shutdown` is true. Returns
/// how many were sent.
pub async fn round<Q: Queue>(queue: &Q, limits: Limits, shutdown: &watch::Receiver<bool>) -> usize {
    let mut seen = HashSet::new();
    loop {
        let Some(due) = queue.due(limits.batch).await else {
            return seen.len();
        };
        let full = due.len() >= limits.batch;
        let mut progressed = false;
        for item in &due {
            if *shutdown.borrow() {
                return seen.len();
            }
            if !seen.insert(Q::id(item)) {
                continue;
            }
            progressed = true;
            queue.send(item).await;
        }
        if !full || !progressed || seen.len() >= limits.max_per_round {
            return seen.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A queue of ids; `stuck` ids stay due after they are sent (a failure
    /// retried later), the others leave it. `fail_at`: the read with this
    /// number (from 1) fails. `after_send` runs after each send with the
    /// number sent so far.
    struct Ids<F> {
        state: Mutex<State>,
        stuck: Vec<i64>,
        fail_at: Option<usize>,
        after_send: F,
    }

    #[derive(Default)]
    struct State {
        due: Vec<i64>,
        reads: usize,
        sent: Vec<i64>,
    }

    impl<F: Fn(&mut State, usize) + Sync> Queue for Ids<F> {
        type Item = i64;

        fn id(item: &i64) -> i64 {
            *item
        }

        async fn due(&self, n: usize) -> Option<Vec<i64>> {
            let mut s = self.state.lock().expect("state");
            s.reads += 1;
            (Some(s.reads) != self.fail_at).then(|| s.due.iter().take(n).copied().collect())
        }

        async fn send(&self, item: &i64) {
            let mut s = self.state.lock().expect("state");
            s.sent.push(*item);
            if !self.stuck.contains(item) {
                s.due.retain(|d| d != item);
            }
            let n = s.sent.len();
            (self.after_send)(&mut s, n);
        }
    }

    fn ids<F>(due: std::ops::RangeInclusive<i64>, stuck: &[i64], fail_at: Option<usize>, after_send: F) -> Ids<F> {
        Ids { state: Mutex::new(State { due: due.collect(), ..State::default() }), stuck: stuck.to_vec(), fail_at, after_send }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("rt")
    }

    const LIMITS: Limits = Limits { batch: 3, max_per_round: 7 };

    /// The progress rule, case by case: (what, due ids, still due after
    /// sending, failing read, shut down after this many sent; sent, reads).
    #[test]
    fn a_round_drains_batch_after_batch_and_stops_by_the_rules() {
        let all = |r: std::ops::RangeInclusive<i64>| r.collect::<Vec<i64>>();
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, std::ops::RangeInclusive<i64>, &[i64], Option<usize>, Option<usize>, Vec<i64>, usize)] = &[
            ("nothing due: one read", 1..=0, &[], None, None, vec![], 1),
            ("a batch not full: nothing more is due", 1..=2, &[], None, None, vec![1, 2], 1),
            ("full batches, then the rest", 1..=5, &[], None, None, all(1..=5), 2),
            ("an exact batch: one more read sees the end", 1..=3, &[], None, None, all(1..=3), 2),
            ("max_per_round, counted after a batch, then sleep", 1..=20, &[], None, None, all(1..=9), 3),
            ("items still due after sending are not sent twice", 1..=3, &[1, 2, 3], None, None, all(1..=3), 2),
            ("some still due: the next batch brings the rest", 1..=5, &[1], None, None, all(1..=5), 3),
            ("a failed read ends the round", 1..=9, &[], Some(2), None, all(1..=3), 2),
            ("shut down: not one item more", 1..=9, &[], None, Some(4), all(1..=4), 2),
        ];
        for (what, due, stuck, fail_at, stop_after, want_sent, want_reads) in cases {
            let (tx, rx) = watch::channel(false);
            let q = ids(due.clone(), stuck, *fail_at, |_: &mut State, n| {
                if Some(n) == *stop_after {
                    tx.send(true).expect("receiver");
                }
            });
            let n = runtime().block_on(round(&q, LIMITS, &rx));
            let s = q.state.lock().expect("state");
            assert_eq!((&s.sent, s.reads), (want_sent, *want_reads), "{what}");
            assert_eq!(n, s.sent.len(), "{what}");
        }
    }

    /// The worker runs a round at once and another when woken, and ends
    /// when the shutdown sender is dropped.
    #[test]
    fn the_worker_runs_when_woken_and_stops_with_its_sender() {
        let wake = Notify::new();
        let (tx, rx) = watch::channel(false);
        let tx = Mutex::new(Some(tx));
        let q = ids(1..=2, &[], None, |s: &mut State, n| match n {
            // The first round's last mail queues one more and wakes the worker...
            2 => {
                s.due.push(3);
                wake.notify_one();
            }
            // ...and the second round's: then the daemon goes away.
            3 => drop(tx.lock().expect("tx").take()),
            _ => {}
        });
        runtime().block_on(run(&q, Limits { batch: 10, max_per_round: 100 }, &wake, rx, Duration::from_secs(3600)));
        let s = q.state.lock().expect("state");
        assert_eq!((&s.sent[..], s.reads), (&[1, 2, 3][..], 2));
    }
}
