//! The bounded state the rules keep: maps with a cap on their keys that
//! drop stale and then the oldest entries, sliding windows with a cap on
//! their entries, coarse buckets for windows of days, and the "fired"
//! state that makes a rule fire once per subject and window and then only
//! when its count doubles.

use crate::model::Millis;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map with at most `cap` keys. Each entry remembers when it was last
/// touched; entries untouched for `horizon_ms` are stale. When a new key
/// arrives at a full map, stale entries go first, then the oldest eighth.
pub(crate) struct BoundedMap<K, V> {
    map: HashMap<K, (Millis, V)>,
    cap: usize,
    horizon_ms: i64,
    /// Entries dropped to make room (not counting stale ones swept).
    pub evicted: u64,
}

impl<K: Hash + Eq + Clone, V: Default> BoundedMap<K, V> {
    pub fn new(cap: usize, horizon_ms: i64) -> Self {
        BoundedMap { map: HashMap::new(), cap: cap.max(8), horizon_ms, evicted: 0 }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|(_, v)| v)
    }

    /// The state of `key` (created when missing), marked as touched at `at`.
    pub fn touch(&mut self, key: K, at: Millis) -> &mut V {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            self.make_room(at);
        }
        let entry = self.map.entry(key).or_insert_with(|| (at, V::default()));
        if at > entry.0 {
            entry.0 = at;
        }
        &mut entry.1
    }

    /// Drops the entries untouched since `now - horizon`.
    pub fn sweep(&mut self, now: Millis) {
        let cutoff = now.0.saturating_sub(self.horizon_ms);
        self.map.retain(|_, (last, _)| last.0 >= cutoff);
    }

    fn make_room(&mut self, now: Millis) {
        self.sweep(now);
        if self.map.len() < self.cap {
            return;
        }
        let drop = (self.cap / 8).max(1);
        let mut lasts: Vec<Millis> = self.map.values().map(|(t, _)| *t).collect();
        let (_, cut, _) = lasts.select_nth_unstable(drop - 1);
        let cut = *cut;
        let victims: Vec<K> = self.map.iter().filter(|(_, (t, _))| *t <= cut).map(|(k, _)| k.clone()).take(drop).collect();
        for k in &victims {
            self.map.remove(k);
        }
        self.evicted += victims.len() as u64;
    }
}

/// One attempt in a sliding window: when, which event, hashes of the
/// username and address it named, and whether it failed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt {
    pub at: Millis,
    pub id: i64,
    pub name: u64,
    pub addr: u64,
    pub failed: bool,
}

/// The attempts of one key within a window, at most `cap` of them (the
/// oldest go first), with the distinct names and addresses among them
/// and the failures counted as they come and go.
#[derive(Default)]
pub(crate) struct AttemptWindow {
    items: VecDeque<Attempt>,
    names: HashMap<u64, u32>,
    addrs: HashMap<u64, u32>,
    track: u8,
    failures: u32,
    pub fired: Option<Fired>,
}

/// What an `AttemptWindow` counts distinct values of (a rule that needs
/// neither pays for neither).
pub(crate) const NAMES: u8 = 1;
pub(crate) const ADDRS: u8 = 2;

impl AttemptWindow {
    /// `track`: `NAMES`, `ADDRS`, both or 0; the same on every push.
    pub fn push(&mut self, a: Attempt, window_ms: i64, cap: usize, track: u8) {
        self.track = track;
        self.expire(Millis(a.at.0.saturating_sub(window_ms)));
        self.items.push_back(a);
        if track & NAMES != 0 {
            *self.names.entry(a.name).or_insert(0) += 1;
        }
        if track & ADDRS != 0 {
            *self.addrs.entry(a.addr).or_insert(0) += 1;
        }
        if a.failed {
            self.failures += 1;
        }
        while self.items.len() > cap.max(1) {
            self.pop();
        }
    }

    /// Forgets the attempts before `cutoff`.
    pub fn expire(&mut self, cutoff: Millis) {
        while self.items.front().is_some_and(|a| a.at < cutoff) {
            self.pop();
        }
    }

    fn pop(&mut self) {
        let Some(a) = self.items.pop_front() else { return };
        for (map, key, on) in [(&mut self.names, a.name, self.track & NAMES != 0), (&mut self.addrs, a.addr, self.track & ADDRS != 0)] {
            if !on {
                continue;
            }
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
        if a.failed {
            self.failures -= 1;
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn failures(&self) -> usize {
        self.failures as usize
    }
    pub fn distinct_names(&self) -> usize {
        self.names.len()
    }
    pub fn distinct_addrs(&self) -> usize {
        self.addrs.len()
    }
    pub fn first_at(&self) -> Millis {
        self.items.front().map(|a| a.at).unwrap_or_default()
    }
    /// The ids of the newest `limit` attempts, oldest first.
    pub fn ids(&self, limit: usize) -> Vec<i64> {
        let skip = self.items.len().saturating_sub(limit);
        self.items.iter().skip(skip).map(|a| a.id).collect()
    }
    /// The ids of the newest `limit` failed attempts, oldest first.
    pub fn failed_ids(&self, limit: usize) -> Vec<i64> {
        let mut ids: Vec<i64> = self.items.iter().rev().filter(|a| a.failed).take(limit).map(|a| a.id).collect();
        ids.reverse();
        ids
    }
    pub fn first_failure_at(&self) -> Millis {
        self.items.iter().find(|a| a.failed).map(|a| a.at).unwrap_or_default()
    }
}

/// Buckets for the long tiers: the window cut in `SLOTS` slots, each a
/// count and the time of its first event. Memory per key and tier is
/// fixed; the window slides by a slot (1/24 of it) at a time.
pub(crate) const SLOTS: usize = 24;

#[derive(Clone)]
pub(crate) struct Buckets {
    slot: [i64; SLOTS],
    count: [u32; SLOTS],
    first: [i64; SLOTS],
    /// The newest event ids, for the finding (a ring, no allocation).
    ids: [i64; IDS_KEPT],
    ids_seen: usize,
    pub fired: Option<Fired>,
}

const IDS_KEPT: usize = 16;

impl Default for Buckets {
    fn default() -> Self {
        Buckets { slot: [i64::MIN; SLOTS], count: [0; SLOTS], first: [0; SLOTS], ids: [0; IDS_KEPT], ids_seen: 0, fired: None }
    }
}

impl Buckets {
    pub fn add(&mut self, at: Millis, id: i64, window_ms: i64) {
        let width = (window_ms / SLOTS as i64).max(1);
        let slot = at.0.div_euclid(width);
        let i = slot.rem_euclid(SLOTS as i64) as usize;
        if self.slot[i] != slot {
            self.slot[i] = slot;
            self.count[i] = 0;
            self.first[i] = at.0;
        }
        self.count[i] = self.count[i].saturating_add(1);
        self.first[i] = self.first[i].min(at.0);
        self.ids[self.ids_seen % IDS_KEPT] = id;
        self.ids_seen += 1;
    }

    /// The count within the window ending at `at`, and the first event's time.
    pub fn count(&self, at: Millis, window_ms: i64) -> (u64, Millis) {
        let width = (window_ms / SLOTS as i64).max(1);
        let now = at.0.div_euclid(width);
        let mut total = 0u64;
        let mut first = i64::MAX;
        for i in 0..SLOTS {
            if self.slot[i] > now - SLOTS as i64 && self.slot[i] <= now {
                total += u64::from(self.count[i]);
                first = first.min(self.first[i]);
            }
        }
        (total, Millis(if first == i64::MAX { at.0 } else { first }))
    }

    /// The newest ids, oldest first.
    pub fn ids(&self) -> Vec<i64> {
        let n = self.ids_seen.min(IDS_KEPT);
        (self.ids_seen - n..self.ids_seen).map(|i| self.ids[i % IDS_KEPT]).collect()
    }
}

/// That a rule fired for a subject: it fires again for it only when the
/// count reaches `next` (twice the count of the last finding), or after a
/// quiet window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fired {
    next: u64,
    last: Millis,
}

/// What a rule should do with a count: nothing, a first finding, or an
/// update (the count doubled since the last one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Emit {
    No,
    First,
    Update,
}

/// Decides for a count at `at`: a first finding when it reaches
/// `threshold` (or when it does again after `window_ms` with no event),
/// then an update each time it doubles. Bounded: at most log2(count)
/// findings per subject and window.
pub(crate) fn crossing(fired: &mut Option<Fired>, count: u64, threshold: u64, at: Millis, window_ms: i64) -> Emit {
    if let Some(f) = fired {
        if at.0 - f.last.0 > window_ms {
            *fired = None;
        }
    }
    match fired {
        Some(f) => {
            f.last = f.last.max(at);
            if count >= f.next {
                f.next = count.saturating_mul(2);
                Emit::Update
            } else {
                Emit::No
            }
        }
        None if count >= threshold.max(1) => {
            *fired = Some(Fired { next: count.max(threshold).saturating_mul(2), last: at });
            Emit::First
        }
        None => Emit::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_fires_at_the_threshold_then_on_doubling_then_after_quiet() {
        let mut f = None;
        let w = 600_000;
        let seq: Vec<(u64, i64, Emit)> = vec![
            (4, 0, Emit::No),
            (5, 1, Emit::First),
            (6, 2, Emit::No),
            (9, 3, Emit::No),
            (10, 4, Emit::Update),
            (19, 5, Emit::No),
            (20, 6, Emit::Update),
            // Quiet for longer than the window: the next crossing is new.
            (5, 6 + w + 1, Emit::First),
        ];
        for (count, at, want) in seq {
            assert_eq!(crossing(&mut f, count, 5, Millis(at), w), want, "count {count} at {at}");
        }
    }

    #[test]
    fn bounded_map_drops_stale_then_oldest() {
        let mut m: BoundedMap<u32, u32> = BoundedMap::new(16, 1000);
        for k in 0..16 {
            *m.touch(k, Millis(k as i64)) += 1;
        }
        assert_eq!(m.len(), 16);
        // Full: a new key drops the oldest eighth (2 keys).
        m.touch(100, Millis(20));
        assert_eq!(m.len(), 15);
        assert!(m.get(&0).is_none() && m.get(&1).is_none() && m.get(&2).is_some());
        assert_eq!(m.evicted, 2);
        // Stale entries go first, without counting as evictions.
        m.touch(101, Millis(5000));
        m.sweep(Millis(5000));
        assert_eq!(m.len(), 1);
        assert_eq!(m.evicted, 2);
    }

    #[test]
    fn attempt_window_counts_as_attempts_come_and_go() {
        let mut w = AttemptWindow::default();
        let a = |at: i64, name: u64, addr: u64, failed: bool| Attempt { at: Millis(at), id: at, name, addr, failed };
        w.push(a(0, 1, 1, true), 100, 4, NAMES | ADDRS);
        w.push(a(10, 2, 1, false), 100, 4, NAMES | ADDRS);
        w.push(a(20, 2, 2, true), 100, 4, NAMES | ADDRS);
        assert_eq!((w.len(), w.failures(), w.distinct_names(), w.distinct_addrs()), (3, 2, 2, 2));
        // 0 drops out of the window.
        w.push(a(105, 3, 3, true), 100, 4, NAMES | ADDRS);
        assert_eq!((w.len(), w.failures(), w.distinct_names(), w.distinct_addrs()), (3, 2, 2, 3));
        assert_eq!(w.ids(10), vec![10, 20, 105]);
        assert_eq!(w.failed_ids(10), vec![20, 105]);
        // The cap drops the oldest.
        for t in 106..110 {
            w.push(a(t, 9, 9, true), 100, 4, NAMES | ADDRS);
        }
        assert_eq!(w.len(), 4);
        assert_eq!(w.first_at(), Millis(106));
    }

    #[test]
    fn buckets_slide_by_slot() {
        let mut b = Buckets::default();
        let day = 86_400_000;
        for i in 0..30 {
            b.add(Millis(i * 3_600_000), i, day);
        }
        // At hour 29 the window holds hours 6..=29 (24 slots of an hour).
        assert_eq!(b.count(Millis(29 * 3_600_000), day).0, 24);
        assert_eq!(b.count(Millis(29 * 3_600_000), day).1, Millis(6 * 3_600_000));
        assert_eq!(b.count(Millis(60 * 3_600_000), day).0, 0);
    }
}
