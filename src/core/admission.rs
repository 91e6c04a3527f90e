//! Admission control: the cheap, in-memory checks that run before any SSH
//! handshake work or password hash. A connection is admitted only while
//! the unauthenticated population is under `MaxStartups` and its address is
//! neither over its own cap nor serving a penalty; an address that fails
//! too often is held off, with the hold-off doubling on each repeat.

use crate::config::load::MaxStartups;
use crate::config::schema::Penalties;
use crate::model::Millis;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Addresses are grouped as blocks are: IPv4 per address (IPv4-mapped IPv6
/// as IPv4), IPv6 per prefix (`ssh.penalties.ipv6_prefix`, /64 unless
/// configured wider), since one IPv6 host usually holds a whole /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddressKey {
    ip: IpAddr,
    /// Prefix length for IPv6 keys (unused for IPv4).
    prefix: u8,
}

/// The default IPv6 grouping.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

impl AddressKey {
    /// The key with the default /64 grouping.
    pub fn of(ip: IpAddr) -> AddressKey {
        AddressKey::with_prefix(ip, DEFAULT_IPV6_PREFIX)
    }

    /// The key of `ip` with IPv6 addresses grouped per `/prefix` (clamped
    /// to 0..=128).
    pub fn with_prefix(ip: IpAddr, prefix: u8) -> AddressKey {
        let prefix = prefix.min(128);
        match ip {
            IpAddr::V4(_) => AddressKey { ip, prefix: 32 },
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey { ip: IpAddr::V4(v4), prefix: 32 },
                None => {
                    let bits = u128::from(v6);
                    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
                    AddressKey { ip: IpAddr::V6(std::net::Ipv6Addr::from(bits & mask)), prefix }
                }
            },
        }
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/{}", self.prefix),
        }
    }
}

#[derive(Default)]
struct AddressState {
    unauthenticated: u32,
    failures: VecDeque<Millis>,
    held_until: Option<Millis>,
    repeats: u32,
}

struct State {
    unauthenticated: u32,
    addresses: HashMap<AddressKey, AddressState>,
    /// Refused connections per address since its last recorded refusal.
    refusals: HashMap<AddressKey, (Millis, u64)>,
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub startups: MaxStartups,
    pub per_address: u32,
    pub penalties: Penalties,
    /// `blocks.never_block`: failures from these are not counted, so they
    /// are never held off.
    pub never_penalised: Arc<[crate::model::IpNetwork]>,
}

pub struct Admission {
    limits: Mutex<Limits>,
    state: Mutex<State>,
    /// One first-factor check (and so at most one password hash) at a time
    /// per address: see [`Admission::turn`].
    turns: Mutex<HashMap<AddressKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// An address's turn to have a credential checked; the next waiting check
/// of the same address starts when this is dropped.
pub struct Turn {
    admission: Arc<Admission>,
    key: AddressKey,
    slot: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.guard.take();
        let mut turns = lock(&self.admission.turns);
        // Clones are only made under this lock: the map's and ours left
        // means nobody waits, so the entry can go.
        if Arc::strong_count(&self.slot) == 2 {
            turns.remove(&self.key);
        }
    }
}

/// Why a connection or attempt was refused before any real work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many unauthenticated connections in all (MaxStartups).
    Startups,
    /// This address holds too many unauthenticated connections.
    PerAddress,
    /// This address failed too often and is held off until then.
    Penalized(Millis),
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Startups => "too many unauthenticated connections",
            Refusal::PerAddress => "too many unauthenticated connections from this address",
            Refusal::Penalized(_) => "address held off after repeated failures",
        }
    }
}

/// Holds one unauthenticated slot; released on `authenticated` or drop.
pub struct Ticket {
    admission: Arc<Admission>,
    key: AddressKey,
    held: bool,
}

impl Ticket {
    pub fn authenticated(&mut self) {
        if self.held {
            self.held = false;
            self.admission.release(self.key);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.authenticated();
    }
}

/// How often a refused address gets an event (with a count).
pub const REFUSAL_EVENT_INTERVAL: Duration = Duration::from_secs(10);

/// Bound on remembered addresses; beyond it, idle ones are forgotten.
const MAX_ADDRESSES: usize = 100_000;

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        Admission {
            limits: Mutex::new(limits),
            state: Mutex::new(State { unauthenticated: 0, addresses: HashMap::new(), refusals: HashMap::new() }),
            turns: Mutex::new(HashMap::new()),
        }
    }

    /// The key `ip` is counted under (IPv6 grouped per the configured prefix).
    pub fn key(&self, ip: IpAddr) -> AddressKey {
        AddressKey::with_prefix(ip, lock(&self.limits).penalties.ipv6_prefix)
    }

    /// Waits for the address's turn: first-factor checks of one address run
    /// one after another (fairly, in arrival order), so the failure of one
    /// is counted before the next is admitted and no hash runs for an
    /// address once its penalty has begun. Other addresses do not wait.
    pub async fn turn(self: &Arc<Self>, ip: IpAddr) -> Turn {
        let key = self.key(ip);
        let slot = lock(&self.turns).entry(key).or_default().clone();
        // Built before the wait: if this future is dropped while it waits,
        // the Turn's drop still removes the entry nobody else uses.
        let mut turn = Turn { admission: self.clone(), key, slot: slot.clone(), guard: None };
        turn.guard = Some(slot.lock_owned().await);
        turn
    }

    /// Addresses with a check running or waiting (for tests).
    pub fn turns_held(&self) -> usize {
        lock(&self.turns).len()
    }

    pub fn set_limits(&self, limits: Limits) {
        *lock(&self.limits) = limits;
    }

    fn limits(&self) -> Limits {
        lock(&self.limits).clone()
    }

    /// Called right after TCP accept. `roll` is a uniform random number in
    /// 0..100 for MaxStartups' random early drop.
    ///
    /// The early drop falls only on addresses that already hold an
    /// unauthenticated connection: OpenSSH drops newcomers at random, so
    /// one address filling `start` slots gets everyone else refused 30%
    /// of the time; here a first connection from an address holding none
    /// is refused only at `full`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Millis, roll: u32) -> Result<Ticket, Refusal> {
        let limits = self.limits();
        let key = AddressKey::with_prefix(ip, limits.penalties.ipv6_prefix);
        let mut st = lock(&self.state);
        let mut holding = 0;
        if let Some(a) = st.addresses.get(&key) {
            if let Some(until) = a.held_until.filter(|t| *t > now) {
                return Err(Refusal::Penalized(until));
            }
            if a.unauthenticated >= limits.per_address {
                return Err(Refusal::PerAddress);
            }
            holding = a.unauthenticated;
        }
        let m = limits.startups;
        let n = st.unauthenticated;
        if n >= m.full {
            return Err(Refusal::Startups);
        }
        if n >= m.start && holding > 0 {
            let span = (m.full - m.start).max(1);
            let p = m.rate + (100 - m.rate) * (n - m.start) / span;
            if roll < p {
                return Err(Refusal::Startups);
            }
        }
        if st.addresses.len() >= MAX_ADDRESSES {
            prune(&mut st.addresses, now, limits.penalties.window);
        }
        st.unauthenticated += 1;
        st.addresses.entry(key).or_default().unauthenticated += 1;
        Ok(Ticket { admission: self.clone(), key, held: true })
    }

    fn release(&self, key: AddressKey) {
        let mut st = lock(&self.state);
        st.unauthenticated = st.unauthenticated.saturating_sub(1);
        if let Some(a) = st.addresses.get_mut(&key) {
            a.unauthenticated = a.unauthenticated.saturating_sub(1);
        }
    }

    /// Checked before each authentication attempt (before any KDF).
    pub fn check_attempt(&self, ip: IpAddr, now: Millis) -> Result<(), Refusal> {
        let key = self.key(ip);
        let st = lock(&self.state);
        match st.addresses.get(&key).and_then(|a| a.held_until) {
            Some(until) if until > now => Err(Refusal::Penalized(until)),
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt; returns the hold-off end when this failure
    /// starts a penalty.
    pub fn record_failure(&self, ip: IpAddr, now: Millis) -> Option<Millis> {
        let limits = self.limits();
        if limits.never_penalised.iter().any(|n| n.contains(ip)) {
            return None;
        }
        let p = limits.penalties;
        let mut st = lock(&self.state);
        if st.addresses.len() >= MAX_ADDRESSES {
            prune(&mut st.addresses, now, p.window);
        }
        let a = st.addresses.entry(AddressKey::with_prefix(ip, p.ipv6_prefix)).or_default();
        let horizon = now.minus(p.window);
        while a.failures.front().is_some_and(|t| *t < horizon) {
            a.failures.pop_front();
        }
        a.failures.push_back(now);
        if a.failures.len() as u32 >= p.max_failures && a.held_until.is_none_or(|t| t <= now) {
            let factor = 1u32.checked_shl(a.repeats.min(20)).unwrap_or(u32::MAX);
            let hold = p.penalty.checked_mul(factor).unwrap_or(p.max_penalty).min(p.max_penalty);
            let until = now.plus(hold);
            a.held_until = Some(until);
            a.repeats = a.repeats.saturating_add(1);
            a.failures.clear();
            return Some(until);
        }
        None
    }

    /// Rebuilds failure windows from the event log at start.
    pub fn replay_failures(&self, failures: &[(IpAddr, Millis)], now: Millis) {
        let window = self.limits().penalties.window;
        for (ip, at) in failures {
            if *at >= now.minus(window) {
                let _ = self.record_failure(*ip, *at);
            }
        }
    }

    /// Whether a refused connection from `ip` should be recorded now: at
    /// most one event per address per `REFUSAL_EVENT_INTERVAL`, carrying
    /// how many refusals it stands for, so a flood cannot fill the log.
    pub fn refusal_to_record(&self, ip: IpAddr, now: Millis) -> Option<u64> {
        let key = self.key(ip);
        let mut st = lock(&self.state);
        if st.refusals.len() >= MAX_ADDRESSES {
            let horizon = now.minus(REFUSAL_EVENT_INTERVAL);
            st.refusals.retain(|_, (at, _)| *at >= horizon);
        }
        let e = st.refusals.entry(key).or_insert((Millis(i64::MIN), 0));
        e.1 += 1;
        if e.0 <= now.minus(REFUSAL_EVENT_INTERVAL) {
            let count = e.1;
            *e = (now, 0);
            Some(count)
        } else {
            None
        }
    }

    /// Lifts the hold-off (and forgets the failures and repeats) of every
    /// address key within `network` (`security ip unblock`); returns how
    /// many keys were held off.
    pub fn lift(&self, network: &crate::model::IpNetwork) -> usize {
        let mut st = lock(&self.state);
        let mut held = 0;
        for (key, a) in st.addresses.iter_mut() {
            if crate::model::IpNetwork::containing(key.ip, key.prefix).overlaps(network) {
                if a.held_until.is_some() {
                    held += 1;
                }
                a.held_until = None;
                a.failures.clear();
                a.repeats = 0;
            }
        }
        held
    }

    pub fn unauthenticated(&self) -> u32 {
        lock(&self.state).unauthenticated
    }
}

fn prune(addresses: &mut HashMap<AddressKey, AddressState>, now: Millis, window: Duration) {
    let horizon = now.minus(window);
    addresses.retain(|_, a| {
        a.unauthenticated > 0 || a.held_until.is_some_and(|t| t > now) || a.failures.back().is_some_and(|t| *t >= horizon)
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            startups: MaxStartups { start: 2, rate: 50, full: 4 },
            per_address: 3,
            penalties: Penalties {
                max_failures: 3,
                window: Duration::from_secs(600),
                penalty: Duration::from_secs(60),
                max_penalty: Duration::from_secs(150),
                ipv6_prefix: 64,
            },
            never_penalised: Arc::from([]),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn max_startups_drops_early_and_at_full() {
        let a = Arc::new(Admission::new(limits()));
        let now = Millis(0);
        let t1 = a.admit(ip("127.0.0.1"), now, 0).expect("first");
        let _t2 = a.admit(ip("127.0.0.2"), now, 0).expect("second");
        // 2 of start=2: rate 50% → roll 49 dropped, roll 50 admitted, for
        // an address that already holds a slot.
        assert_eq!(a.admit(ip("127.0.0.2"), now, 49).err(), Some(Refusal::Startups));
        let _t3 = a.admit(ip("127.0.0.2"), now, 50).expect("third");
        // 3: probability 75%.
        assert_eq!(a.admit(ip("127.0.0.1"), now, 74).err(), Some(Refusal::Startups));
        let _t4 = a.admit(ip("127.0.0.1"), now, 75).expect("fourth");
        // Full: refused whoever asks, whatever the roll.
        assert_eq!(a.admit(ip("127.0.0.5"), now, 99).err(), Some(Refusal::Startups));
        drop(t1);
        assert_eq!(a.unauthenticated(), 3);
        let mut t5 = a.admit(ip("127.0.0.5"), now, 99).expect("after release");
        t5.authenticated();
        assert_eq!(a.unauthenticated(), 3);
    }

    #[test]
    fn the_early_drop_spares_addresses_holding_no_slot() {
        let mut l = limits();
        l.startups = MaxStartups { start: 2, rate: 30, full: 6 };
        l.per_address = 10;
        let a = Arc::new(Admission::new(l));
        let now = Millis(0);
        let flood: Vec<Ticket> = (0..2).map(|_| a.admit(ip("127.0.0.2"), now, 99).expect("flood")).collect();
        // (address, roll, admitted?): .2 holds two slots, .1 and .3 none
        // until their first is admitted.
        let table = [
            ("127.0.0.2", 0, false),
            ("127.0.0.2", 29, false),
            ("127.0.0.1", 0, true),
            ("127.0.0.3", 0, true),
            ("127.0.0.1", 0, false),
        ];
        let mut kept = Vec::new();
        for (addr, roll, admitted) in table {
            match a.admit(ip(addr), now, roll) {
                Ok(t) => {
                    assert!(admitted, "{addr} roll {roll} admitted");
                    kept.push(t);
                }
                Err(r) => {
                    assert!(!admitted, "{addr} roll {roll} refused");
                    assert_eq!(r, Refusal::Startups);
                }
            }
        }
        // At full even a fresh address is refused.
        kept.push(a.admit(ip("127.0.0.4"), now, 0).expect("fifth"));
        kept.push(a.admit(ip("127.0.0.5"), now, 0).expect("sixth"));
        assert_eq!(a.admit(ip("127.0.0.6"), now, 99).err(), Some(Refusal::Startups));
        drop((flood, kept));
    }

    #[test]
    fn per_address_cap() {
        let mut l = limits();
        l.startups = MaxStartups { start: 100, rate: 100, full: 100 };
        let a = Arc::new(Admission::new(l));
        let held: Vec<Ticket> = (0..3).map(|_| a.admit(ip("10.0.0.1"), Millis(0), 0).expect("admit")).collect();
        assert_eq!(a.admit(ip("10.0.0.1"), Millis(0), 0).err(), Some(Refusal::PerAddress));
        assert!(a.admit(ip("10.0.0.2"), Millis(0), 0).is_ok());
        drop(held);
    }

    #[test]
    fn penalties_start_double_and_cap() {
        let a = Arc::new(Admission::new(limits()));
        let x = ip("192.0.2.7");
        let s = |secs: i64| Millis(secs * 1000);
        assert_eq!(a.record_failure(x, s(0)), None);
        assert_eq!(a.record_failure(x, s(1)), None);
        assert_eq!(a.record_failure(x, s(2)), Some(s(62)));
        assert_eq!(a.check_attempt(x, s(61)), Err(Refusal::Penalized(s(62))));
        assert!(a.admit(x, s(61), 0).is_err());
        assert_eq!(a.check_attempt(x, s(62)), Ok(()));
        // Second offence: 120 s; third: capped at 150 s.
        for t in 63..65 {
            assert_eq!(a.record_failure(x, s(t)), None);
        }
        assert_eq!(a.record_failure(x, s(65)), Some(s(185)));
        for t in 190..192 {
            assert_eq!(a.record_failure(x, s(t)), None);
        }
        assert_eq!(a.record_failure(x, s(192)), Some(s(342)));
        // Failures outside the window do not add up.
        let y = ip("192.0.2.8");
        assert_eq!(a.record_failure(y, s(0)), None);
        assert_eq!(a.record_failure(y, s(1)), None);
        assert_eq!(a.record_failure(y, s(700)), None);
    }

    #[test]
    fn never_penalised_addresses_are_not_counted_and_a_lift_ends_a_hold_off() {
        let net = |s: &str| crate::model::IpNetwork::parse(s).expect("network");
        let mut l = limits();
        l.never_penalised = Arc::from([net("10.0.0.0/8"), net("2001:db8::/48")]);
        let a = Arc::new(Admission::new(l));
        let s = |secs: i64| Millis(secs * 1000);
        for (addr, penalised) in [("10.1.2.3", false), ("::ffff:10.9.9.9", false), ("2001:db8:0:5::1", false), ("11.0.0.1", true), ("2001:db9::1", true)] {
            let held = (0..10).filter_map(|t| a.record_failure(ip(addr), s(t))).count();
            assert_eq!(held > 0, penalised, "{addr}");
            assert_eq!(a.check_attempt(ip(addr), s(10)).is_err(), penalised, "{addr}");
        }
        // A lift ends the hold-off of every key in the network and only there.
        let x = ip("192.0.2.7");
        for t in 0..3 {
            a.record_failure(x, s(t));
        }
        assert!(a.check_attempt(x, s(3)).is_err());
        assert_eq!(a.lift(&net("198.51.100.0/24")), 0);
        assert!(a.check_attempt(x, s(3)).is_err());
        assert_eq!(a.lift(&net("192.0.2.7")), 1);
        assert_eq!(a.check_attempt(x, s(3)), Ok(()));
        assert!(a.admit(x, s(3), 0).is_ok());
        // The failures and the doubling are forgotten too: the next hold-off is the first one's length.
        assert_eq!(a.record_failure(x, s(4)), None);
        assert_eq!(a.record_failure(x, s(5)), None);
        assert_eq!(a.record_failure(x, s(6)), Some(s(66)));
        // IPv6 keys: a lift of an address lifts its /64.
        let y = ip("2001:db9:1:2::7");
        for t in 0..3 {
            a.record_failure(y, s(t));
        }
        assert_eq!(a.lift(&net("2001:db9:1:2::/64")), 1);
        assert_eq!(a.check_attempt(ip("2001:db9:1:2::8"), s(3)), Ok(()));
    }

    #[test]
    fn refusals_are_recorded_once_per_interval_with_a_count() {
        let a = Admission::new(limits());
        let x = ip("198.51.100.1");
        assert_eq!(a.refusal_to_record(x, Millis(0)), Some(1));
        for t in 1..5 {
            assert_eq!(a.refusal_to_record(x, Millis(t * 1000)), None);
        }
        assert_eq!(a.refusal_to_record(x, Millis(10_000)), Some(5));
        assert_eq!(a.refusal_to_record(ip("198.51.100.2"), Millis(10_001)), Some(1));
    }

    #[test]
    fn ipv6_is_grouped_per_64() {
        assert_eq!(AddressKey::of(ip("2001:db8:1:2:aaaa::1")), AddressKey::of(ip("2001:db8:1:2:bbbb::2")));
        assert_ne!(AddressKey::of(ip("2001:db8:1:2::1")), AddressKey::of(ip("2001:db8:1:3::1")));
        assert_eq!(AddressKey::of(ip("::ffff:192.0.2.1")), AddressKey::of(ip("192.0.2.1")));
        assert_eq!(AddressKey::of(ip("2001:db8:1:2::1")).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv6_grouping_follows_the_prefix() {
        // (prefix, address, the key it is counted under)
        let cases: &[(u8, &str, &str)] = &[
            (64, "2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
            (56, "2001:db8:1:2:aaaa::1", "2001:db8:1::/56"),
            (56, "2001:db8:1:ff:aaaa::1", "2001:db8:1::/56"),
            (56, "2001:db8:1:100::1", "2001:db8:1:100::/56"),
            (48, "2001:db8:1:ffff:1:2:3:4", "2001:db8:1::/48"),
            (60, "2001:db8:1:2f::1", "2001:db8:1:20::/60"),
            (16, "2001:db8::1", "2001::/16"),
            (48, "192.0.2.9", "192.0.2.9"),
            (48, "::ffff:192.0.2.9", "192.0.2.9"),
        ];
        for (prefix, addr, want) in cases {
            assert_eq!(AddressKey::with_prefix(ip(addr), *prefix).to_string(), *want, "/{prefix} {addr}");
        }
        // Caps and penalties use the configured prefix.
        let mut l = limits();
        l.penalties.ipv6_prefix = 56;
        l.startups = MaxStartups { start: 100, rate: 100, full: 100 };
        let a = Arc::new(Admission::new(l));
        let s = |secs: i64| Millis(secs * 1000);
        assert_eq!(a.record_failure(ip("2001:db8:1:1::1"), s(0)), None);
        assert_eq!(a.record_failure(ip("2001:db8:1:2::1"), s(1)), None);
        assert_eq!(a.record_failure(ip("2001:db8:1:3::1"), s(2)), Some(s(62)), "one /56");
        assert_eq!(a.check_attempt(ip("2001:db8:1:ff::7"), s(3)), Err(Refusal::Penalized(s(62))));
        assert_eq!(a.check_attempt(ip("2001:db8:1:100::7"), s(3)), Ok(()), "the next /56");
        let held: Vec<Ticket> = (0..3).map(|i| a.admit(ip(&format!("2001:db8:2:{i}::1")), s(3), 0).expect("admit")).collect();
        assert_eq!(a.admit(ip("2001:db8:2:9::1"), s(3), 0).err(), Some(Refusal::PerAddress), "the cap counts the /56");
        drop(held);
    }

    /// A check given up while it waits (its connection went) leaves no
    /// bookkeeping behind, even when the turn was just handed to it.
    #[tokio::test]
    async fn a_wait_given_up_leaves_nothing_behind() {
        let a = Arc::new(Admission::new(limits()));
        let first = a.turn(ip("192.0.2.1")).await;
        let mut waiting = Box::pin(a.turn(ip("192.0.2.1")));
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut waiting).await.is_err(), "waits while the first holds the turn");
        // The turn passes to the waiting check, which is dropped before it runs.
        drop(first);
        drop(waiting);
        assert_eq!(a.turns_held(), 0);
        let _again = tokio::time::timeout(Duration::from_secs(5), a.turn(ip("192.0.2.1"))).await.expect("the address can take its turn");
    }

    /// Checks of one address take turns; other addresses do not wait; the
    /// bookkeeping goes when nobody waits.
    #[tokio::test]
    async fn one_check_at_a_time_per_address() {
        let a = Arc::new(Admission::new(limits()));
        let first = a.turn(ip("192.0.2.1")).await;
        let other = tokio::time::timeout(Duration::from_secs(5), a.turn(ip("192.0.2.2"))).await.expect("another address does not wait");
        let a2 = a.clone();
        let mut second = tokio::spawn(async move { a2.turn(ip("192.0.2.1")).await });
        // The second check of the same address waits while the first runs.
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut second).await.is_err(), "second check ran while the first held the turn");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second).await.expect("second gets its turn").expect("join");
        assert_eq!(a.turns_held(), 2);
        drop(second);
        drop(other);
        assert_eq!(a.turns_held(), 0);
    }
}
