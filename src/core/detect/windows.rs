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
    /// The entries' last-touch times while making room, kept between
    /// calls (at most `cap`): a map at its cap makes room every `cap / 8`
    /// new keys, and a fresh buffer each time costs more than the choice.
    times: Vec<Millis>,
    /// No entry was touched last before this (a lower bound: touches only
    /// move entries later, removals only raise the true minimum), so a
    /// sweep with nothing stale costs a comparison, not a pass over the
    /// map. A scan over a week of history sweeps every replayed minute.
    oldest: Millis,
}

impl<K: Hash + Eq + Clone, V: Default> BoundedMap<K, V> {
    pub fn new(cap: usize, horizon_ms: i64) -> Self {
        BoundedMap { map: HashMap::new(), cap: cap.max(8), horizon_ms, evicted: 0, times: Vec::new(), oldest: Millis(i64::MAX) }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Raises the cap to `cap` (never lowers it).
    pub fn raise_cap(&mut self, cap: usize) {
        self.cap = self.cap.max(cap);
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
        // The size first: a full map is rare (it makes room for an eighth).
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.make_room(at);
        }
        let oldest = &mut self.oldest;
        let entry = self.map.entry(key).or_insert_with(|| {
            *oldest = (*oldest).min(at);
            (at, V::default())
        });
        if at > entry.0 {
            entry.0 = at;
        }
        &mut entry.1
    }

    /// Drops the entries untouched since `now - horizon`.
    pub fn sweep(&mut self, now: Millis) {
        let cutoff = now.0.saturating_sub(self.horizon_ms);
        if self.oldest.0 >= cutoff {
            return;
        }
        let mut oldest = i64::MAX;
        self.map.retain(|_, (last, _)| {
            let keep = last.0 >= cutoff;
            if keep {
                oldest = oldest.min(last.0);
            }
            keep
        });
        self.oldest = Millis(oldest);
    }

    /// Stale entries first; if none, the oldest eighth (by last touch).
    /// Two passes over the map, no allocation once the buffer has grown.
    fn make_room(&mut self, now: Millis) {
        let cutoff = now.0.saturating_sub(self.horizon_ms);
        self.times.clear();
        self.times.extend(self.map.values().map(|(t, _)| *t));
        if self.times.iter().any(|t| t.0 < cutoff) {
            self.sweep(now);
            if self.map.len() < self.cap {
                return;
            }
            self.times.retain(|t| t.0 >= cutoff);
        }
        let drop = (self.cap / 8).max(1).min(self.times.len());
        if drop == 0 {
            return;
        }
        let (_, cut, _) = self.times.select_nth_unstable(drop - 1);
        let cut = *cut;
        let mut left = drop;
        self.map.retain(|_, (t, _)| {
            if left > 0 && *t <= cut {
                left -= 1;
                false
            } else {
                true
            }
        });
        self.evicted += (drop - left) as u64;
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

/// Distinct values among a window's attempts, each with how many attempts
/// carry it. A small vector searched in place: a window holds at most
/// 1,024 attempts, most hold a few, and an empty one costs no allocation.
#[derive(Default)]
struct Counts(Vec<(u64, u32)>);

impl Counts {
    fn add(&mut self, key: u64, cap: usize) {
        if let Some(e) = self.0.iter_mut().find(|e| e.0 == key) {
            e.1 += 1;
            return;
        }
        grow_exact(&mut self.0, cap);
        self.0.push((key, 1));
    }

    fn remove(&mut self, key: u64) {
        if let Some(i) = self.0.iter().position(|e| e.0 == key) {
            self.0[i].1 -= 1;
            if self.0[i].1 == 0 {
                self.0.swap_remove(i);
            }
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Room for one more element, doubling from 1 up to `cap` and never past
/// it (the default growth starts at 4 and overshoots the cap: for a
/// million keys of one attempt each that is most of their memory).
fn grow_exact<T>(v: &mut Vec<T>, cap: usize) {
    if v.len() == v.capacity() {
        let want = (v.len() * 2).clamp(1, cap.max(v.len() + 1));
        v.reserve_exact(want - v.len());
    }
}

fn grow_exact_deque<T>(v: &mut VecDeque<T>, cap: usize) {
    if v.len() == v.capacity() {
        let want = (v.len() * 2).clamp(1, cap.max(v.len() + 1));
        v.reserve_exact(want - v.len());
    }
}

/// The attempts of one key within a window, at most `cap` of them (the
/// oldest go first), with the distinct names and addresses among them
/// and the failures counted as they come and go.
#[derive(Default)]
pub(crate) struct AttemptWindow {
    items: VecDeque<Attempt>,
    names: Counts,
    addrs: Counts,
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
        let cap = cap.max(1);
        self.track = track;
        self.expire(Millis(a.at.0.saturating_sub(window_ms)));
        while self.items.len() >= cap {
            self.pop();
        }
        grow_exact_deque(&mut self.items, cap);
        self.items.push_back(a);
        if track & NAMES != 0 {
            self.names.add(a.name, cap);
        }
        if track & ADDRS != 0 {
            self.addrs.add(a.addr, cap);
        }
        if a.failed {
            self.failures += 1;
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
        if self.track & NAMES != 0 {
            self.names.remove(a.name);
        }
        if self.track & ADDRS != 0 {
            self.addrs.remove(a.addr);
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

/// An `AttemptWindow` made on first use: a key holds five of them and
/// most keys of a botnet use one or two, so an unused one costs a pointer.
/// Reads of an unused one see an empty window.
#[derive(Default)]
pub(crate) struct Window(Option<Box<AttemptWindow>>);

static EMPTY_WINDOW: AttemptWindow =
    AttemptWindow { items: VecDeque::new(), names: Counts(Vec::new()), addrs: Counts(Vec::new()), track: 0, failures: 0, fired: None };

impl std::ops::Deref for Window {
    type Target = AttemptWindow;
    fn deref(&self) -> &AttemptWindow {
        self.0.as_deref().unwrap_or(&EMPTY_WINDOW)
    }
}

impl std::ops::DerefMut for Window {
    fn deref_mut(&mut self) -> &mut AttemptWindow {
        self.0.get_or_insert_with(Box::default)
    }
}

impl Window {
    #[cfg(test)]
    pub fn is_made(&self) -> bool {
        self.0.is_some()
    }
}

/// Buckets for the long tiers: the window cut in `SLOTS` slots, each a
/// count and the time of its first event; only the slots that hold events
/// are stored (a key seen once holds one). Memory per key and tier is
/// bounded; the window slides by a slot (1/24 of it) at a time.
pub(crate) const SLOTS: usize = 24;

#[derive(Clone, Copy, Debug)]
struct Slot {
    slot: i64,
    count: u32,
    first: i64,
}

#[derive(Clone, Default)]
pub(crate) struct Buckets {
    /// At most `SLOTS`, none older than `SLOTS` slots before the newest.
    slots: Vec<Slot>,
    /// The newest event ids, for the finding (a ring of `IDS_KEPT`).
    ids: Vec<i64>,
    ids_seen: usize,
    pub fired: Option<Fired>,
}

const IDS_KEPT: usize = 16;

impl Buckets {
    pub fn add(&mut self, at: Millis, id: i64, window_ms: i64) {
        let width = (window_ms / SLOTS as i64).max(1);
        let slot = at.0.div_euclid(width);
        if let Some(s) = self.slots.iter_mut().find(|s| s.slot == slot) {
            s.count = s.count.saturating_add(1);
            s.first = s.first.min(at.0);
        } else {
            let newest = self.slots.iter().map(|s| s.slot).max().unwrap_or(slot).max(slot);
            self.slots.retain(|s| s.slot > newest - SLOTS as i64);
            if self.slots.len() >= SLOTS {
                if let Some(i) = self.slots.iter().enumerate().min_by_key(|(_, s)| s.slot).map(|(i, _)| i) {
                    self.slots.swap_remove(i);
                }
            }
            if slot > newest - SLOTS as i64 {
                grow_exact(&mut self.slots, SLOTS);
                self.slots.push(Slot { slot, count: 1, first: at.0 });
            }
        }
        if self.ids.len() < IDS_KEPT {
            grow_exact(&mut self.ids, IDS_KEPT);
            self.ids.push(id);
        } else {
            self.ids[self.ids_seen % IDS_KEPT] = id;
        }
        self.ids_seen += 1;
    }

    /// The count within the window ending at `at`, and the first event's time.
    pub fn count(&self, at: Millis, window_ms: i64) -> (u64, Millis) {
        let width = (window_ms / SLOTS as i64).max(1);
        let now = at.0.div_euclid(width);
        let mut total = 0u64;
        let mut first = i64::MAX;
        for s in &self.slots {
            if s.slot > now - SLOTS as i64 && s.slot <= now {
                total += u64::from(s.count);
                first = first.min(s.first);
            }
        }
        (total, Millis(if first == i64::MAX { at.0 } else { first }))
    }

    /// The newest ids, oldest first.
    pub fn ids(&self) -> Vec<i64> {
        if self.ids.len() < IDS_KEPT {
            return self.ids.clone();
        }
        let start = self.ids_seen % IDS_KEPT;
        self.ids[start..].iter().chain(&self.ids[..start]).copied().collect()
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

    /// The sweep's shortcut (nothing can be stale before the oldest
    /// touch) never keeps a stale entry: not after a sweep raised the
    /// bound, nor for a key made later with an older time.
    #[test]
    fn a_sweep_with_nothing_stale_keeps_everything_and_the_bound_stays_true() {
        let mut m: BoundedMap<u32, u32> = BoundedMap::new(64, 1000);
        m.touch(1, Millis(0));
        m.touch(2, Millis(500));
        m.sweep(Millis(900));
        assert_eq!(m.len(), 2, "nothing is older than the horizon");
        m.sweep(Millis(1200));
        assert!(m.get(&1).is_none() && m.get(&2).is_some(), "1 was stale");
        // A key made later with an older time (events out of order).
        m.touch(3, Millis(300));
        m.sweep(Millis(1400));
        assert!(m.get(&3).is_none() && m.get(&2).is_some(), "3 was stale although made after the last sweep");
        // Touches move an entry later and keep it.
        m.touch(2, Millis(2000));
        m.sweep(Millis(2900));
        assert!(m.get(&2).is_some());
        m.sweep(Millis(3001));
        assert_eq!(m.len(), 0);
    }

    /// Counts and first times match the events of the window: events in
    /// time order at irregular steps, each count checked against the
    /// events themselves.
    #[test]
    fn bucket_counts_match_the_events_in_the_window() {
        let w = 24 * 1000;
        let mut b = Buckets::default();
        let mut times: Vec<i64> = Vec::new();
        let mut t = 0i64;
        for i in 0..3000i64 {
            t += (i * 7919) % 2300;
            b.add(Millis(t), i, w);
            times.push(t);
            let now = t.div_euclid(1000);
            let want = times.iter().filter(|x| x.div_euclid(1000) > now - 24).count() as u64;
            let first = times.iter().copied().filter(|x| x.div_euclid(1000) > now - 24).min().unwrap_or(t);
            assert_eq!(b.count(Millis(t), w), (want, Millis(first)), "event {i} at {t}");
            // And later, with no new event (the general path).
            let later = t + 5_000;
            let lnow = later.div_euclid(1000);
            let lwant = times.iter().filter(|x| x.div_euclid(1000) > lnow - 24).count() as u64;
            assert_eq!(b.count(Millis(later), w).0, lwant, "after event {i}");
        }
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

    /// A window allocates for what it holds, doubling from one attempt up
    /// to its cap and never past it; distinct counts likewise.
    #[test]
    fn windows_allocate_only_what_they_hold() {
        // (attempts pushed, cap, attempts held, capacity)
        let cases = [(0, 256, 0, 0), (1, 256, 1, 1), (2, 256, 2, 2), (3, 256, 3, 4), (80, 80, 80, 80), (1000, 80, 80, 80), (9, 4, 4, 4), (300, 256, 256, 256)];
        for (n, cap, held, capacity) in cases {
            let mut w = AttemptWindow::default();
            for i in 0..n {
                w.push(Attempt { at: Millis(i), id: i, name: i as u64, addr: i as u64 % 7, failed: true }, 1_000_000, cap, NAMES | ADDRS);
            }
            assert_eq!(w.len(), held, "{n} attempts, cap {cap}");
            assert_eq!(w.items.capacity(), capacity, "{n} attempts, cap {cap}");
            assert_eq!(w.distinct_names(), held, "{n} attempts, cap {cap}");
            assert!(w.names.0.capacity() <= capacity.max(1) && w.addrs.0.capacity() <= capacity.max(1), "{n} attempts, cap {cap}");
            assert_eq!(w.distinct_addrs(), held.min(7), "{n} attempts, cap {cap}");
        }
        // Untracked distinct values cost nothing.
        let mut w = AttemptWindow::default();
        w.push(Attempt { at: Millis(0), id: 1, name: 1, addr: 1, failed: true }, 100, 16, 0);
        assert_eq!((w.names.0.capacity(), w.addrs.0.capacity()), (0, 0));
    }

    /// A `Window` is made on first write; reads of an unused one see an
    /// empty window and make nothing.
    #[test]
    fn windows_are_made_on_first_write() {
        let mut w = Window::default();
        assert_eq!((w.len(), w.failures(), w.distinct_names(), w.ids(10)), (0, 0, 0, vec![]));
        assert!(w.fired.is_none());
        assert!(!w.is_made());
        w.push(Attempt { at: Millis(5), id: 9, name: 1, addr: 1, failed: true }, 100, 16, NAMES);
        assert!(w.is_made());
        assert_eq!((w.len(), w.ids(10)), (1, vec![9]));
    }

    /// The long tiers store only the slots that hold events (at most
    /// `SLOTS`) and the newest `IDS_KEPT` ids, oldest first.
    #[test]
    fn buckets_store_only_their_events() {
        let day = 86_400_000;
        let hour = 3_600_000;
        let mut b = Buckets::default();
        b.add(Millis(10), 1, day);
        assert_eq!((b.slots.len(), b.slots.capacity(), b.ids.capacity()), (1, 1, 1));
        assert_eq!(b.count(Millis(10), day), (1, Millis(10)));
        // (events, one every `step` ms: slots held, count at the last)
        let cases = [(3, 1, 1, 3), (30, hour, 24, 24), (100, hour / 2, 24, 48), (200, 3 * hour, 8, 8)];
        for (n, step, slots, count) in cases {
            let mut b = Buckets::default();
            for i in 0..n {
                b.add(Millis(i * step), i, day);
            }
            assert_eq!(b.slots.len(), slots, "{n} events {step} ms apart");
            assert!(b.slots.capacity() <= SLOTS, "{n} events {step} ms apart");
            assert_eq!(b.count(Millis((n - 1) * step), day).0, count, "{n} events {step} ms apart");
            let kept = (n as usize).min(IDS_KEPT) as i64;
            assert_eq!(b.ids(), (n - kept..n).collect::<Vec<i64>>(), "{n} events {step} ms apart");
            assert!(b.ids.capacity() <= IDS_KEPT);
        }
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
