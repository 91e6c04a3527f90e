//! Admission of web connections: a global cap, a per-address cap, and a
//! budget of file descriptors that leaves a reserve only SSH may use.
//!
//! The web front end asks [`WebConnections::admit`] right after TCP
//! accept, before the TLS handshake; the permit it gets back gives the
//! slot back when dropped (the connection closed). Cheap and in memory.

use super::admission::AddressKey;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The caps, from the `web` section of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    /// Open web connections at most, from everyone.
    pub max_total: usize,
    /// Open web connections at most from one address (IPv6: one prefix
    /// of `ipv6_prefix` bits, as the SSH caps and penalties count).
    pub max_per_address: usize,
    /// IPv6 grouping (`ssh.penalties.ipv6_prefix`).
    pub ipv6_prefix: u8,
    /// Descriptors kept for SSH: the web never makes the process use more
    /// than `descriptor_limit - descriptor_reserve`.
    pub descriptor_reserve: usize,
}

/// Why a web connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebRefusal {
    /// `max_total` connections are open.
    Total,
    /// `max_per_address` connections from this address are open.
    PerAddress,
    /// One more would eat into the descriptors kept for SSH.
    Descriptors,
}

impl WebRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            WebRefusal::Total => "web_connections_full",
            WebRefusal::PerAddress => "web_connections_per_address",
            WebRefusal::Descriptors => "descriptor_reserve",
        }
    }
}

#[derive(Default)]
struct State {
    total: usize,
    per_address: HashMap<AddressKey, usize>,
}

pub struct WebConnections {
    limits: Mutex<WebLimits>,
    /// (soft descriptor limit, descriptors in use before any connection);
    /// `None` until the daemon has measured them (no descriptor budget).
    descriptors: Mutex<Option<(usize, usize)>>,
    state: Mutex<State>,
}

/// One admitted connection; dropping it frees the slot.
pub struct WebPermit {
    owner: Arc<WebConnections>,
    key: AddressKey,
}

impl Drop for WebPermit {
    fn drop(&mut self) {
        let mut s = self.owner.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                s.per_address.remove(&self.key);
            }
        }
    }
}

impl WebConnections {
    pub fn new(limits: WebLimits) -> WebConnections {
        WebConnections { limits: Mutex::new(limits), descriptors: Mutex::new(None), state: Mutex::default() }
    }

    pub fn set_limits(&self, limits: WebLimits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// The process's (soft) descriptor limit and how many descriptors it
    /// used before serving (store, listeners, log): measured by the daemon
    /// at start.
    pub fn set_descriptors(&self, limit: usize, in_use_at_start: usize) {
        *self.descriptors.lock().unwrap_or_else(|p| p.into_inner()) = Some((limit, in_use_at_start));
    }

    /// How many web connections the descriptor budget allows (unbounded
    /// when the daemon has not measured it).
    pub fn descriptor_budget(&self) -> usize {
        let reserve = self.limits.lock().unwrap_or_else(|p| p.into_inner()).descriptor_reserve;
        match *self.descriptors.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((limit, base)) => limit.saturating_sub(reserve).saturating_sub(base),
            None => usize::MAX,
        }
    }

    /// Open web connections now.
    pub fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Admits one more connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<WebPermit, WebRefusal> {
        let limits = *self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let budget = self.descriptor_budget();
        let key = AddressKey::with_prefix(ip, limits.ipv6_prefix);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let from_here = s.per_address.get(&key).copied().unwrap_or(0);
        if from_here >= limits.max_per_address {
            return Err(WebRefusal::PerAddress);
        }
        if s.total >= limits.max_total {
            return Err(WebRefusal::Total);
        }
        if s.total >= budget {
            return Err(WebRefusal::Descriptors);
        }
        s.total += 1;
        *s.per_address.entry(key).or_insert(0) += 1;
        Ok(WebPermit { owner: Arc::clone(self), key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// (limits, descriptors, connections to open in order, expected outcome of each)
    #[test]
    fn admission_table() {
        use WebRefusal::*;
        let l = |max_total, max_per_address, descriptor_reserve| WebLimits { max_total, max_per_address, descriptor_reserve, ipv6_prefix: 64 };
        type Case<'a> = (WebLimits, Option<(usize, usize)>, &'a [(&'a str, Result<(), WebRefusal>)]);
        let cases: &[Case] = &[
            // Per address: the third from .2 is refused, others still get in.
            (l(10, 2, 0), None, &[("127.0.0.2", Ok(())), ("127.0.0.2", Ok(())), ("127.0.0.2", Err(PerAddress)), ("127.0.0.3", Ok(()))]),
            // IPv6 counts per /64; v4-mapped counts as the v4 address.
            (l(10, 2, 0), None, &[("2001:db8::1", Ok(())), ("2001:db8::2", Ok(())), ("2001:db8::3", Err(PerAddress)), ("2001:db8:0:1::1", Ok(()))]),
            (l(10, 1, 0), None, &[("::ffff:10.0.0.1", Ok(())), ("10.0.0.1", Err(PerAddress))]),
            // Global cap.
            (l(2, 5, 0), None, &[("10.0.0.1", Ok(())), ("10.0.0.2", Ok(())), ("10.0.0.3", Err(Total))]),
            // Descriptors: limit 100, 40 in use at start, 50 kept for SSH → 10 web connections.
            (l(100, 100, 50), Some((100, 40)), &[("10.0.0.1", Ok(())), ("10.0.0.2", Ok(())), ("10.0.0.3", Ok(())), ("10.0.0.4", Ok(())), ("10.0.0.5", Ok(())), ("10.0.0.6", Ok(())), ("10.0.0.7", Ok(())), ("10.0.0.8", Ok(())), ("10.0.0.9", Ok(())), ("10.0.0.10", Ok(())), ("10.0.0.11", Err(Descriptors))]),
            // A reserve larger than the limit: no web connection at all.
            (l(100, 100, 5000), Some((1024, 10)), &[("10.0.0.1", Err(Descriptors))]),
        ];
        for (i, (limits, fds, steps)) in cases.iter().enumerate() {
            let c = Arc::new(WebConnections::new(*limits));
            if let Some((limit, base)) = fds {
                c.set_descriptors(*limit, *base);
            }
            let mut held = Vec::new();
            for (j, (addr, want)) in steps.iter().enumerate() {
                let got = c.admit(ip(addr));
                assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), *want, "case {i} step {j} ({addr})");
                held.extend(got.ok());
            }
            assert_eq!(c.open(), held.len(), "case {i}");
        }
    }

    /// The per-address cap groups IPv6 as the penalties do
    /// (`ssh.penalties.ipv6_prefix`), so a wider prefix holds there too.
    #[test]
    fn the_per_address_cap_follows_the_configured_ipv6_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "ssh: {\n  penalties: {\n    ipv6_prefix: 48\n  }\n}\nweb: {\n  max_connections_per_address: 2\n}\n";
        let settings = crate::config::load::from_text(text, "t.hjson", dir.path()).expect("settings");
        let store = Arc::new(crate::store::Store::open(&dir.path().join("t.db")).expect("open"));
        let core = crate::core::Core::new(store.clone(), settings, crate::core::EventSink::Direct(store), crate::core::secrets::Keyring::from_key(&[1; 32]));
        let c = &core.web_connections;
        let _a = c.admit(ip("2001:db8:1:1::1")).expect("first of the /48");
        let _b = c.admit(ip("2001:db8:1:2::1")).expect("second of the /48");
        assert_eq!(c.admit(ip("2001:db8:1:ffff::1")).err(), Some(WebRefusal::PerAddress), "another /64 of the same /48");
        let _c = c.admit(ip("2001:db8:2::1")).expect("the next /48");
    }

    #[test]
    fn dropping_a_permit_frees_its_slots() {
        let c = Arc::new(WebConnections::new(WebLimits { max_total: 2, max_per_address: 1, descriptor_reserve: 0, ipv6_prefix: 64 }));
        let a = c.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(c.admit(ip("10.0.0.1")).err(), Some(WebRefusal::PerAddress));
        let _b = c.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(c.admit(ip("10.0.0.3")).err(), Some(WebRefusal::Total));
        drop(a);
        assert_eq!(c.open(), 1);
        let _a2 = c.admit(ip("10.0.0.1")).expect("slot given back");
        // New limits apply to the next connection.
        c.set_limits(WebLimits { max_total: 10, max_per_address: 10, descriptor_reserve: 0, ipv6_prefix: 64 });
        let _c = c.admit(ip("10.0.0.3")).expect("after raising the caps");
    }
}
