//! The rules, as steps of the `Detector` on one event. Each keeps its
//! state in the bounded structures of `windows.rs` and fires through
//! `windows::crossing` (once at the threshold, then on each doubling).

use super::windows::{crossing, Attempt, AttemptWindow, Buckets, Emit, Fired, Window, ADDRS, NAMES};
use super::{finding, shown, DetectEvent, Detector, Kind};
use crate::core::admission::AddressKey;
use crate::model::{Finding, IncidentSeverity, IncidentType, Millis, Subject};
use serde_json::json;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// Event ids a finding carries at most.
const IDS: usize = 50;

/// A deterministic 64-bit hash (the same in every process, so a rebuild
/// and a scan count distinct names and addresses alike).
fn h<T: Hash + ?Sized>(t: &T) -> u64 {
    let mut s = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut s);
    s.finish()
}

/// A username as the rules compare it: lower-cased (borrowed when it
/// already is, as nearly every name is).
fn lowered(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(name.to_lowercase())
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// "10m", "24h", "7d", as the config writes windows.
pub(crate) fn span(d: Duration) -> String {
    let s = d.as_secs();
    match () {
        _ if d.subsec_millis() != 0 || s == 0 => format!("{}ms", d.as_millis()),
        _ if s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// Sliding windows keep at most this many attempts per key.
fn cap_for(threshold: u32) -> usize {
    (threshold as usize).saturating_mul(16).clamp(16, 1024)
}

#[derive(Default)]
pub(crate) struct AddressState {
    brute_force: Window,
    stuffing: Window,
    unknown_names: Window,
    dictionary: Window,
    injection: Window,
    slow: Vec<Buckets>,
}

#[derive(Default)]
pub(crate) struct NetworkState {
    unknown_names: Window,
    slow: Vec<Buckets>,
    /// Which addresses failed lately: a network's rules fire only when
    /// more than one of its addresses is in the window. One address alone
    /// is its own rules' business; the network's finding would have its
    /// playbook block every neighbour of the /24 (or /48) for it.
    addresses: RecentAddresses,
}

/// The two most recent distinct addresses seen, each with when it was
/// last seen: enough to tell whether two addresses or more acted since a
/// time (if any two did, the two seen last did).
#[derive(Default, Clone, Copy)]
pub(crate) struct RecentAddresses([Option<(u64, Millis)>; 2]);

impl RecentAddresses {
    fn see(&mut self, addr: u64, at: Millis) {
        match self.0[0] {
            Some((a, t)) if a == addr => self.0[0] = Some((a, t.max(at))),
            newest => self.0 = [Some((addr, at)), newest],
        }
    }

    /// Whether two addresses or more were seen since `cutoff`.
    fn several_since(&self, cutoff: Millis) -> bool {
        self.0.iter().all(|e| e.is_some_and(|(_, t)| t >= cutoff))
    }
}

#[derive(Default)]
pub(crate) struct AccountState {
    brute_force: Window,
    injection: Window,
    /// Recent failures against the account (time, event id).
    failures: VecDeque<(Millis, i64)>,
    /// Addresses of its successful logins, newest last (at most 32).
    known: Vec<(AddressKey, Millis)>,
    /// Sessions whose login came from a new device (at most 8).
    new_devices: VecDeque<(i64, Millis)>,
    /// The last risky login: a success from a new device and address
    /// right after failures.
    risky: Option<Risky>,
}

#[derive(Clone)]
struct Risky {
    at: Millis,
    id: i64,
    address: Option<AddressKey>,
    changes: u32,
    /// The addresses the account had logged in from before it (the
    /// owner's): a change made from one of them is not the newcomer's.
    owner_addresses: Vec<AddressKey>,
}

#[derive(Default)]
pub(crate) struct SprayState {
    attempts: Window,
    first_address: Option<AddressKey>,
    one_address: bool,
}

/// Distributed stuffing: the gate's attempts in 12 slots of its window.
const GATE_SLOTS: usize = 12;

#[derive(Default, Clone)]
struct GateSlot {
    slot: i64,
    attempts: u32,
    successes: u32,
    first: i64,
    addrs: HashSet<u64>,
    names: HashSet<u64>,
    ids: Vec<i64>,
}

#[derive(Default)]
pub(crate) struct GateState {
    slots: Vec<GateSlot>,
    since_check: u32,
    fired: Option<Fired>,
}

impl Detector {
    pub(super) fn apply(&mut self, ev: &DetectEvent, out: &mut Vec<Finding>) {
        match &ev.kind {
            Kind::Failure { unknown_user } => self.failure(ev, *unknown_user, out),
            Kind::Success => self.success(ev, out),
            Kind::NewDevice => self.new_device(ev),
            Kind::Change(what) => self.change(ev, what, out),
            Kind::Injection(i) => self.injection(ev, &i.source, &i.categories, &i.text, out),
        }
    }

    fn failure(&mut self, ev: &DetectEvent, unknown_user: bool, out: &mut Vec<Finding>) {
        let name = lowered(ev.name());
        let name_h = h(&*name);
        let address = ev.ip.map(|ip| self.address_key(ip));
        let network = ev.ip.map(|ip| self.network_key(ip));
        let addr_h = address.map(|a| h(&a)).unwrap_or(0);
        let attempt = Attempt { at: ev.at, id: ev.id, name: name_h, addr: addr_h, failed: true };
        // Escaped for titles only when a rule fires (most events fire none).
        let shown_name = || shown(ev.name());
        // Each part below reads and writes the state of one key; a shard
        // (`Detector::with_shard`) runs the parts whose key it owns.
        let mine = (address.is_some() && self.owns(addr_h), network.is_some_and(|n| self.shard.1 <= 1 || self.owns(h(&n))), ev.user_id.is_some_and(|u| self.owns(u as u64)), self.owns_gate());

        if let Some(key) = address.filter(|_| mine.0) {
            let s = &self.s;
            let in_dictionary = unknown_user && s.dictionary_usernames.enabled && self.dictionary.contains(&name);
            let st = self.addresses.touch(key, ev.at);
            let subject = || Subject::Address(key.to_string());
            if s.brute_force_ip.enabled {
                let r = &s.brute_force_ip;
                st.brute_force.push(attempt, ms(r.window), cap_for(r.failures), 0);
                let n = st.brute_force.len() as u64;
                let emit = crossing(&mut st.brute_force.fired, n, u64::from(r.failures), ev.at, ms(r.window));
                if emit != Emit::No {
                    out.push(finding(
                        IncidentType::BruteForceIp,
                        subject(),
                        IncidentSeverity::Medium,
                        format!("brute force from {key}: {n} failed logins in {}", span(r.window)),
                        format!("{n} failed login attempts from {key} within {}; the threshold is {}", span(r.window), r.failures),
                        st.brute_force.ids(IDS),
                        st.brute_force.first_at(),
                        json!({ "rule": "brute_force_ip", "threshold": r.failures, "window": span(r.window), "failures": n, "update": emit == Emit::Update }),
                    ));
                }
            }
            // Stuffing tries credentials against accounts that exist here;
            // names that are not accounts are username enumeration's (and
            // the dictionary's), which would otherwise never fire from one
            // address: stuffing's 5 names come before enumeration's 10.
            if s.credential_stuffing.enabled && !unknown_user {
                let r = &s.credential_stuffing;
                st.stuffing.push(attempt, ms(r.window), 256, NAMES);
                stuffing_check(st, r, key, ev.at, out);
            }
            if unknown_user && s.username_enumeration.enabled {
                let r = &s.username_enumeration;
                st.unknown_names.push(attempt, ms(r.window), cap_for(r.usernames), NAMES);
                let n = st.unknown_names.distinct_names() as u64;
                let emit = crossing(&mut st.unknown_names.fired, n, u64::from(r.usernames), ev.at, ms(r.window));
                if emit != Emit::No {
                    out.push(enumeration_finding(subject(), &key.to_string(), &st.unknown_names, n, r, emit));
                }
            }
            if in_dictionary {
                let r = &s.dictionary_usernames;
                st.dictionary.push(attempt, ms(r.window), 64, NAMES);
                let n = st.dictionary.len() as u64;
                let emit = crossing(&mut st.dictionary.fired, n, 1, ev.at, ms(r.window));
                if emit != Emit::No {
                    let action = s.dictionary_action.as_str();
                    let shown_name = shown_name();
                    out.push(finding(
                        IncidentType::BruteForceIp,
                        subject(),
                        IncidentSeverity::Medium,
                        format!("dictionary username \"{shown_name}\" tried from {key}"),
                        format!(
                            "{key} tried the username \"{shown_name}\", which attackers' dictionaries list and which is not an account here ({n} such attempts within {}); action: {action}",
                            span(r.window)
                        ),
                        st.dictionary.ids(IDS),
                        st.dictionary.first_at(),
                        json!({ "rule": "dictionary_username", "action": action, "username": shown_name, "attempts": n, "usernames": st.dictionary.distinct_names(), "window": span(r.window), "update": emit == Emit::Update }),
                    ));
                }
            }
            if s.slow_brute_force.enabled {
                slow_tiers(&mut st.slow, &s.slow_brute_force.tiers, ev, &|| (subject(), key.to_string()), "address", None, out);
            }
        }
        if let Some(net) = network.filter(|_| mine.1) {
            let s = &self.s;
            let st = self.networks.touch(net, ev.at);
            st.addresses.see(addr_h, ev.at);
            let subject = || Subject::Network(net.to_string());
            if s.slow_brute_force.enabled {
                slow_tiers(&mut st.slow, &s.slow_brute_force.tiers, ev, &|| (subject(), net.to_string()), "network", Some(&st.addresses), out);
            }
            if unknown_user && s.username_enumeration.enabled {
                let r = &s.username_enumeration;
                st.unknown_names.push(attempt, ms(r.window), cap_for(r.usernames), NAMES);
                let n = st.unknown_names.distinct_names() as u64;
                let spread = st.addresses.several_since(Millis(ev.at.0.saturating_sub(ms(r.window))));
                let emit = if spread { crossing(&mut st.unknown_names.fired, n, u64::from(r.usernames), ev.at, ms(r.window)) } else { Emit::No };
                if emit != Emit::No {
                    out.push(enumeration_finding(subject(), &net.to_string(), &st.unknown_names, n, r, emit));
                }
            }
        }
        if let Some(user_id) = ev.user_id.filter(|_| mine.2) {
            let s = &self.s;
            let st = self.accounts.touch(user_id, ev.at);
            if s.brute_force_account.enabled {
                let r = &s.brute_force_account;
                st.brute_force.push(attempt, ms(r.window), cap_for(r.failures), ADDRS);
                let n = st.brute_force.len() as u64;
                let emit = crossing(&mut st.brute_force.fired, n, u64::from(r.failures), ev.at, ms(r.window));
                if emit != Emit::No {
                    let addresses = st.brute_force.distinct_addrs();
                    // Every attempt from another address: the form that
                    // per-address counting (fail2ban) never sees.
                    let distributed = addresses as u64 >= u64::from(r.failures).min(n) && addresses > 1;
                    let shown_name = shown_name();
                    out.push(finding(
                        IncidentType::BruteForceAccount,
                        Subject::Account { user_id: Some(user_id), username: ev.name().to_owned() },
                        if distributed { IncidentSeverity::High } else { IncidentSeverity::Medium },
                        format!("brute force on account {shown_name}: {n} failures in {}{}", span(r.window), if distributed { format!(" from {addresses} addresses") } else { String::new() }),
                        format!("{n} failed attempts against {shown_name} from {addresses} address(es) within {}; the threshold is {}", span(r.window), r.failures),
                        st.brute_force.ids(IDS),
                        st.brute_force.first_at(),
                        json!({ "rule": "brute_force_account", "threshold": r.failures, "window": span(r.window), "failures": n, "addresses": addresses, "distributed": distributed, "update": emit == Emit::Update }),
                    ));
                }
            }
            if s.account_takeover.enabled {
                let within = ms(s.account_takeover.failures_within);
                while st.failures.front().is_some_and(|(t, _)| t.0 < ev.at.0 - within) || st.failures.len() >= 64 {
                    st.failures.pop_front();
                }
                st.failures.push_back((ev.at, ev.id));
            }
        }
        if let Some(tag) = ev.tag.filter(|_| mine.3) {
            if self.s.password_spraying.enabled {
                let r = &self.s.password_spraying;
                let st = self.sprays.touch(tag, ev.at);
                if st.attempts.len() == 0 {
                    st.first_address = address;
                    st.one_address = true;
                } else if st.first_address != address {
                    st.one_address = false;
                }
                st.attempts.push(attempt, ms(r.window), cap_for(r.accounts), NAMES | ADDRS);
                let n = st.attempts.distinct_names() as u64;
                let emit = crossing(&mut st.attempts.fired, n, u64::from(r.accounts), ev.at, ms(r.window));
                if emit != Emit::No {
                    let addresses = st.attempts.distinct_addrs();
                    let subject = match (st.one_address, st.first_address) {
                        (true, Some(a)) => Subject::Address(a.to_string()),
                        _ => Subject::Gate,
                    };
                    let from = match &subject {
                        Subject::Address(a) => format!("from {a}"),
                        _ => format!("from {addresses} addresses"),
                    };
                    out.push(finding(
                        IncidentType::PasswordSpraying,
                        subject,
                        IncidentSeverity::High,
                        format!("password spraying {from}: one password against {n} accounts in {}", span(r.window)),
                        format!("the same password was tried against {n} accounts within {} {from}; the threshold is {}", span(r.window), r.accounts),
                        st.attempts.ids(IDS),
                        st.attempts.first_at(),
                        json!({ "rule": "password_spraying", "threshold": r.accounts, "window": span(r.window), "accounts": n, "attempts": st.attempts.len(), "addresses": addresses, "update": emit == Emit::Update }),
                    ));
                }
            }
        }
        if self.s.distributed_stuffing.enabled && mine.3 {
            self.gate_attempt(ev, name_h, addr_h, false, out);
        }
    }

    fn success(&mut self, ev: &DetectEvent, out: &mut Vec<Finding>) {
        let name_h = h(&*lowered(ev.name()));
        let address = ev.ip.map(|ip| self.address_key(ip));
        let addr_h = address.map(|a| h(&a)).unwrap_or(0);
        if let Some(key) = address.filter(|_| self.owns(addr_h)) {
            if self.s.credential_stuffing.enabled {
                let r = &self.s.credential_stuffing;
                let st = self.addresses.touch(key, ev.at);
                st.stuffing.push(Attempt { at: ev.at, id: ev.id, name: name_h, addr: addr_h, failed: false }, ms(r.window), 256, NAMES);
            }
        }
        if self.s.distributed_stuffing.enabled && self.owns_gate() {
            self.gate_attempt(ev, name_h, addr_h, true, out);
        }
        let Some(user_id) = ev.user_id.filter(|u| self.owns(*u as u64)) else { return };
        let r = self.s.account_takeover.clone();
        if !r.enabled {
            return;
        }
        let st = self.accounts.touch(user_id, ev.at);
        let new_device = ev.session_id.is_some_and(|s| st.new_devices.iter().any(|(id, _)| *id == s));
        let new_address = address.is_some_and(|a| !st.known.iter().any(|(k, _)| *k == a));
        let within = ms(r.failures_within);
        let is_recent = |(t, _): &&(Millis, i64)| t.0 >= ev.at.0 - within && *t <= ev.at;
        if new_device && new_address && st.failures.iter().filter(is_recent).count() as u32 >= r.failures {
            let recent: Vec<(Millis, i64)> = st.failures.iter().filter(is_recent).copied().collect();
            let name = shown(ev.name());
            let from = address.map(|a| a.to_string()).unwrap_or_default();
            let mut ids: Vec<i64> = recent.iter().map(|(_, id)| *id).collect();
            ids.push(ev.id);
            let skip = ids.len().saturating_sub(IDS);
            out.push(finding(
                IncidentType::AccountTakeover,
                Subject::Account { user_id: Some(user_id), username: ev.name().to_owned() },
                IncidentSeverity::High,
                format!("possible takeover of {name}: login from a new device and address {from} after {} failures", recent.len()),
                format!(
                    "{name} logged in from a device and an address ({from}) never seen for the account, right after {} failed attempts within {}",
                    recent.len(),
                    span(r.failures_within)
                ),
                ids.split_off(skip),
                recent.first().map(|(t, _)| *t).unwrap_or(ev.at),
                json!({ "rule": "account_takeover", "form": "login", "failures": recent.len(), "threshold": r.failures, "failures_within": span(r.failures_within), "address": from, "session_id": ev.session_id, "update": false }),
            ));
            let owner_addresses = st.known.iter().map(|(k, _)| *k).collect();
            st.risky = Some(Risky { at: ev.at, id: ev.id, address, changes: 0, owner_addresses });
        }
        if let Some(a) = address {
            st.known.retain(|(k, _)| *k != a);
            st.known.push((a, ev.at));
            if st.known.len() > 32 {
                st.known.remove(0);
            }
        }
    }

    fn new_device(&mut self, ev: &DetectEvent) {
        let (Some(user_id), Some(session)) = (ev.user_id, ev.session_id) else { return };
        if !self.s.account_takeover.enabled || !self.owns(user_id as u64) {
            return;
        }
        let st = self.accounts.touch(user_id, ev.at);
        st.new_devices.push_back((session, ev.at));
        while st.new_devices.len() > 8 {
            st.new_devices.pop_front();
        }
    }

    fn change(&mut self, ev: &DetectEvent, what: &str, out: &mut Vec<Finding>) {
        let Some(user_id) = ev.user_id.filter(|u| self.owns(*u as u64)) else { return };
        let r = self.s.account_takeover.clone();
        if !r.enabled {
            return;
        }
        let address = ev.ip.map(|ip| self.address_key(ip));
        let Some(st) = self.accounts.get_mut(&user_id) else { return };
        let Some(risky) = st.risky.as_mut() else { return };
        if ev.at.0 - risky.at.0 > ms(r.change_within) || ev.at < risky.at || risky.changes >= 8 {
            return;
        }
        // The owner, from an address of theirs known before the risky
        // login (as when they obey the forced password reset a takeover
        // playbook asked for), is not taking the account over.
        if address.is_some_and(|a| risky.owner_addresses.contains(&a)) {
            return;
        }
        risky.changes += 1;
        let name = shown(ev.name());
        let from = risky.address.map(|a| a.to_string()).unwrap_or_default();
        out.push(finding(
            IncidentType::AccountTakeover,
            Subject::Account { user_id: Some(user_id), username: ev.name().to_owned() },
            IncidentSeverity::Critical,
            format!("possible takeover of {name}: {what} changed soon after a risky login"),
            format!("the {what} of {name} was changed {} after a login from a new device and address ({from}) that followed failed attempts", span(Duration::from_secs(((ev.at.0 - risky.at.0).max(0) / 1000) as u64))),
            vec![risky.id, ev.id],
            risky.at,
            json!({ "rule": "account_takeover", "form": "change", "change": what, "change_within": span(r.change_within), "address": from, "update": true }),
        ));
    }

    fn injection(&mut self, ev: &DetectEvent, source: &str, categories: &[String], text: &str, out: &mut Vec<Finding>) {
        if !self.s.injection.enabled {
            return;
        }
        let r = self.s.injection.clone();
        let attempt = Attempt { at: ev.at, id: ev.id, name: h(text), addr: 0, failed: true };
        let owner = match (ev.ip, ev.user_id) {
            (Some(ip), _) => self.owns(h(&self.address_key(ip))),
            (None, Some(id)) => self.owns(id as u64),
            (None, None) => false,
        };
        if !owner {
            return;
        }
        let (window, subject, who) = match (ev.ip, ev.user_id) {
            (Some(ip), _) => {
                let key = self.address_key(ip);
                (&mut self.addresses.touch(key, ev.at).injection, Subject::Address(key.to_string()), key.to_string())
            }
            (None, Some(id)) => {
                let name = ev.name().to_owned();
                let who = shown(&name);
                (&mut self.accounts.touch(id, ev.at).injection, Subject::Account { user_id: Some(id), username: name }, who)
            }
            (None, None) => return,
        };
        window.push(attempt, ms(r.window), 64, 0);
        let n = window.len() as u64;
        let emit = crossing(&mut window.fired, n, 1, ev.at, ms(r.window));
        if emit == Emit::No {
            return;
        }
        // The text was escaped when the event was made; escape again for
        // safety (an event written by another version).
        let text = shown(text);
        let kinds = categories.join(", ");
        out.push(finding(
            IncidentType::InjectionAttempt,
            subject,
            IncidentSeverity::Medium,
            format!("injection-looking input ({kinds}) from {who}"),
            format!("{who} typed input that looks like {kinds} injection in {}: \"{text}\" ({n} such inputs within {})", shown(source), span(r.window)),
            window.ids(IDS),
            window.first_at(),
            json!({ "rule": "injection_attempt", "source": shown(source), "categories": categories, "text": text, "inputs": n, "window": span(r.window), "update": emit == Emit::Update }),
        ));
    }

    fn gate_attempt(&mut self, ev: &DetectEvent, name_h: u64, addr_h: u64, success: bool, out: &mut Vec<Finding>) {
        let r = &self.s.distributed_stuffing;
        let window = ms(r.window);
        let width = (window / GATE_SLOTS as i64).max(1);
        let slot = ev.at.0.div_euclid(width);
        let g = &mut self.gate;
        if g.slots.is_empty() {
            g.slots = vec![GateSlot { slot: i64::MIN, ..Default::default() }; GATE_SLOTS];
        }
        let i = slot.rem_euclid(GATE_SLOTS as i64) as usize;
        let cell = &mut g.slots[i];
        if cell.slot != slot {
            *cell = GateSlot { slot, first: ev.at.0, ..Default::default() };
        }
        cell.attempts += 1;
        if success {
            cell.successes += 1;
        } else if cell.ids.len() < 8 {
            cell.ids.push(ev.id);
        }
        if cell.addrs.len() < r.addresses as usize {
            cell.addrs.insert(addr_h);
        }
        if cell.names.len() < r.accounts as usize {
            cell.names.insert(name_h);
        }
        // The sums are cheap and taken each time; the distinct union only
        // when they pass, and after a union that fell short, not again
        // before 32 more attempts.
        let in_window = |c: &&GateSlot| c.slot > slot - GATE_SLOTS as i64 && c.slot <= slot;
        let (attempts, successes) = g.slots.iter().filter(in_window).fold((0u64, 0u64), |(a, s), c| (a + u64::from(c.attempts), s + u64::from(c.successes)));
        if attempts < u64::from(r.attempts) || successes as f64 >= r.max_success_ratio * attempts as f64 {
            return;
        }
        if g.since_check > 0 {
            g.since_check -= 1;
            return;
        }
        let live: Vec<&GateSlot> = g.slots.iter().filter(in_window).collect();
        let addrs: HashSet<u64> = live.iter().flat_map(|c| c.addrs.iter().copied()).collect();
        let names: HashSet<u64> = live.iter().flat_map(|c| c.names.iter().copied()).collect();
        if addrs.len() < r.addresses as usize || names.len() < r.accounts as usize {
            g.since_check = 32;
            return;
        }
        // Fired or not, the next union waits 32 attempts (an update may
        // come that much late).
        g.since_check = 32;
        let emit = crossing(&mut g.fired, attempts, u64::from(r.attempts), ev.at, window);
        if emit == Emit::No {
            return;
        }
        let mut ids: Vec<i64> = live.iter().flat_map(|c| c.ids.iter().copied()).collect();
        ids.sort_unstable();
        let skip = ids.len().saturating_sub(IDS);
        let first = live.iter().map(|c| c.first).min().unwrap_or(ev.at.0);
        let rate = successes as f64 / attempts as f64;
        out.push(finding(
            IncidentType::CredentialStuffing,
            Subject::Gate,
            IncidentSeverity::High,
            format!("distributed credential stuffing: {attempts} attempts from {}+ addresses against {}+ accounts in {}, {:.1}% successful", addrs.len(), names.len(), span(r.window), rate * 100.0),
            format!(
                "{attempts} login attempts from at least {} addresses against at least {} accounts within {}, {successes} successful ({:.1}%, below {:.1}%)",
                addrs.len(),
                names.len(),
                span(r.window),
                rate * 100.0,
                r.max_success_ratio * 100.0
            ),
            ids.split_off(skip),
            Millis(first),
            json!({ "rule": "distributed_stuffing", "attempts": attempts, "successes": successes, "addresses": addrs.len(), "accounts": names.len(), "window": span(r.window), "max_success_ratio": r.max_success_ratio, "update": emit == Emit::Update }),
        ));
    }
}

fn stuffing_check(st: &mut AddressState, r: &crate::config::detection::CredentialStuffing, key: AddressKey, at: Millis, out: &mut Vec<Finding>) {
    let w = &mut st.stuffing;
    let names = w.distinct_names() as u64;
    let ratio = w.failures() as f64 / w.len().max(1) as f64;
    if ratio < r.failure_ratio {
        return;
    }
    let emit = crossing(&mut w.fired, names, u64::from(r.usernames), at, ms(r.window));
    if emit == Emit::No {
        return;
    }
    out.push(finding(
        IncidentType::CredentialStuffing,
        Subject::Address(key.to_string()),
        IncidentSeverity::High,
        format!("credential stuffing from {key}: {names} usernames in {}, {:.0}% failed", span(r.window), ratio * 100.0),
        format!("{key} tried {names} usernames within {} ({} attempts, {} failed); the thresholds are {} usernames and {:.0}% failures", span(r.window), w.len(), w.failures(), r.usernames, r.failure_ratio * 100.0),
        w.failed_ids(IDS),
        w.first_failure_at(),
        json!({ "rule": "credential_stuffing", "usernames": names, "attempts": w.len(), "failures": w.failures(), "failure_ratio": ratio, "threshold": r.usernames, "min_failure_ratio": r.failure_ratio, "window": span(r.window), "update": emit == Emit::Update }),
    ));
}

fn enumeration_finding(subject: Subject, who: &str, w: &AttemptWindow, n: u64, r: &crate::config::detection::UsernameEnumeration, emit: Emit) -> Finding {
    let scope = if matches!(subject, Subject::Network(_)) { "network" } else { "address" };
    finding(
        IncidentType::UsernameEnumeration,
        subject,
        IncidentSeverity::Medium,
        format!("username enumeration from {who}: {n} unknown usernames in {}", span(r.window)),
        format!("{who} tried {n} usernames that are not accounts here within {} ({} attempts); the threshold is {}", span(r.window), w.len(), r.usernames),
        w.ids(IDS),
        w.first_at(),
        json!({ "rule": "username_enumeration", "scope": scope, "usernames": n, "attempts": w.len(), "threshold": r.usernames, "window": span(r.window), "update": emit == Emit::Update }),
    )
}

/// `spread`: for a network, its recent addresses (a tier fires only when
/// two or more of them failed within the tier's window). `named`: the
/// subject and how titles write it, made only when a tier fires.
#[allow(clippy::too_many_arguments)]
fn slow_tiers(state: &mut Vec<Buckets>, tiers: &[crate::config::detection::Tier], ev: &DetectEvent, named: &dyn Fn() -> (Subject, String), scope: &str, spread: Option<&RecentAddresses>, out: &mut Vec<Finding>) {
    if state.len() != tiers.len() {
        state.reserve_exact(tiers.len().saturating_sub(state.len()));
        state.resize_with(tiers.len(), Buckets::default);
    }
    for (b, t) in state.iter_mut().zip(tiers) {
        let w = ms(t.window);
        b.add(ev.at, ev.id, w);
        let (n, first) = b.count(ev.at, w);
        if spread.is_some_and(|r| !r.several_since(Millis(ev.at.0.saturating_sub(w)))) {
            continue;
        }
        let emit = crossing(&mut b.fired, n, u64::from(t.failures), ev.at, w);
        if emit == Emit::No {
            continue;
        }
        let (subject, who) = named();
        out.push(finding(
            IncidentType::BruteForceIp,
            subject,
            IncidentSeverity::Medium,
            format!("slow brute force from {scope} {who}: {n} failed logins in {}", span(t.window)),
            format!("{n} failed login attempts from the {scope} {who} within {}; the tier's threshold is {}", span(t.window), t.failures),
            b.ids(),
            first,
            json!({ "rule": "slow_brute_force", "scope": scope, "threshold": t.failures, "window": span(t.window), "failures": n, "update": emit == Emit::Update }),
        ));
    }
}

#[cfg(test)]
mod span_tests {
    #[test]
    fn spans_read_like_the_config() {
        use std::time::Duration;
        let cases = [(600, "10m"), (86_400, "1d"), (7 * 86_400, "7d"), (3600, "1h"), (90, "90s"), (5400, "90m")];
        for (secs, want) in cases {
            assert_eq!(super::span(Duration::from_secs(secs)), want);
        }
        assert_eq!(super::span(Duration::from_millis(250)), "250ms");
    }
}

#[cfg(test)]
mod memory_tests {
    use super::super::{DetectEvent, Detector, Kind};
    use crate::config::detection::DetectionSettings;
    use crate::model::Millis;

    /// What one address of a botnet (one failed password against an
    /// existing account) leaves behind: the two windows its rules wrote,
    /// one slot per slow tier, and small fixed parts, so that
    /// `max_tracked` addresses and networks fit P13's memory target.
    #[test]
    fn a_botnet_address_keeps_only_what_its_rules_wrote() {
        assert!(std::mem::size_of::<super::AddressState>() <= 64, "{}", std::mem::size_of::<super::AddressState>());
        // A network also keeps its two latest addresses (48 bytes), so that
        // one address alone never fires a network's rule.
        assert!(std::mem::size_of::<super::NetworkState>() <= 80, "{}", std::mem::size_of::<super::NetworkState>());
        let mut d = Detector::new(&DetectionSettings::default(), 64);
        let ip: std::net::IpAddr = "203.0.113.9".parse().expect("ip");
        let ev = DetectEvent { id: 1, at: Millis(1_800_000_000_000), kind: Kind::Failure { unknown_user: false }, user_id: Some(7), username: Some("anna".into()), ip: Some(ip), session_id: None, tag: None };
        assert!(d.observe(&ev, ev.at).is_empty());
        let key = d.address_key(ip);
        let a = d.addresses.get(&key).expect("the address is tracked");
        // (window, made, should be)
        let windows = [("brute_force", a.brute_force.is_made(), true), ("stuffing", a.stuffing.is_made(), true), ("unknown_names", a.unknown_names.is_made(), false), ("dictionary", a.dictionary.is_made(), false), ("injection", a.injection.is_made(), false)];
        for (name, made, want) in windows {
            assert_eq!(made, want, "{name}");
        }
        assert_eq!(a.slow.len(), 2);
        assert_eq!(a.slow.capacity(), 2);
        assert_eq!((a.brute_force.len(), a.stuffing.len(), a.stuffing.distinct_names()), (1, 1, 1));
        let n = d.networks.get(&d.network_key(ip)).expect("the network is tracked");
        assert!(!n.unknown_names.is_made());
        assert_eq!(n.slow.len(), 2);
    }
}
