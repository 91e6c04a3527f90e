//! Address blocks: the in-memory set checked right after every TCP accept
//! (before any SSH or TLS byte), the durations that grow for repeat
//! offenders (30 min doubling to 24 h, a one-week tier for recidivists),
//! `blocks.never_block`, and the change feed through which the daemon
//! learns of blocks and unblocks made by the CLI.
//!
//! The set keeps one hash map per prefix length present (IPv4 and IPv6
//! apart), so a check is one masked lookup per distinct length, whatever
//! the number of blocks. Expiry is checked on lookup; the daemon deletes
//! expired rows as it follows the feed.

use super::accounts::Actor;
use super::{Core, Error, Result};
use crate::config::load::BlockSettings;
use crate::model::{canonical_ip, mask_v4, mask_v6, Event, EventType, IpNetwork, Millis, Severity};
use crate::store::blocks::{BlockRow, Overlap, PutBlock};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::Duration;

/// When a block ends: `None` until lifted.
type Expiry = Option<Millis>;

/// The set's hash: a folded multiply of the key with a per-process random
/// seed (integer keys only; a fraction of SipHash's cost, and no one can
/// predict which keys collide).
#[derive(Clone, Copy)]
struct KeyHasher(u64);

const HASH_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl KeyHasher {
    fn mix(&mut self, v: u64) {
        let m = u128::from(self.0 ^ v) * u128::from(HASH_MULTIPLIER);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let m = u128::from(self.0) * u128::from(HASH_MULTIPLIER ^ 0xFF51_AFD7_ED55_8CCD);
        (m as u64) ^ ((m >> 64) as u64)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }
}

#[derive(Clone, Copy)]
struct Seeded(u64);

impl Default for Seeded {
    fn default() -> Seeded {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        Seeded(*SEED.get_or_init(rand::random))
    }
}

impl std::hash::BuildHasher for Seeded {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

type Map<K> = HashMap<K, Expiry, Seeded>;

fn in_force(e: Expiry, now: Millis) -> bool {
    e.is_none_or(|t| t > now)
}

#[derive(Default)]
struct Tables {
    /// (prefix length, masked address → expiry), longest prefix first.
    v4: Vec<(u8, Map<u32>)>,
    v6: Vec<(u8, Map<u128>)>,
    len: usize,
}

impl Tables {
    fn insert(&mut self, net: IpNetwork, expires: Expiry) {
        let bits = net.bits();
        let fresh = match net.addr() {
            IpAddr::V4(a) => bucket(&mut self.v4, bits).insert(u32::from(a), expires).is_none(),
            IpAddr::V6(a) => bucket(&mut self.v6, bits).insert(u128::from(a), expires).is_none(),
        };
        if fresh {
            self.len += 1;
        }
    }

    fn remove(&mut self, net: &IpNetwork) -> bool {
        let bits = net.bits();
        let gone = match net.addr() {
            IpAddr::V4(a) => unbucket(&mut self.v4, bits, &u32::from(a)),
            IpAddr::V6(a) => unbucket(&mut self.v6, bits, &u128::from(a)),
        };
        if gone {
            self.len -= 1;
        }
        gone
    }

    fn find(&self, ip: IpAddr, now: Millis) -> Option<(IpNetwork, Expiry)> {
        match canonical_ip(ip) {
            IpAddr::V4(a) => {
                let x = u32::from(a);
                for (bits, map) in &self.v4 {
                    if let Some(e) = map.get(&(x & mask_v4(*bits))) {
                        if in_force(*e, now) {
                            return Some((IpNetwork::containing(ip, *bits), *e));
                        }
                    }
                }
            }
            IpAddr::V6(a) => {
                let x = u128::from(a);
                for (bits, map) in &self.v6 {
                    if let Some(e) = map.get(&(x & mask_v6(*bits))) {
                        if in_force(*e, now) {
                            return Some((IpNetwork::containing(ip, *bits), *e));
                        }
                    }
                }
            }
        }
        None
    }
}

fn bucket<K>(buckets: &mut Vec<(u8, Map<K>)>, bits: u8) -> &mut Map<K> {
    let i = match buckets.iter().position(|(b, _)| *b <= bits) {
        Some(i) if buckets[i].0 == bits => i,
        Some(i) => {
            buckets.insert(i, (bits, Map::default()));
            i
        }
        None => {
            buckets.push((bits, Map::default()));
            buckets.len() - 1
        }
    };
    &mut buckets[i].1
}

fn unbucket<K: std::hash::Hash + Eq>(buckets: &mut Vec<(u8, Map<K>)>, bits: u8, key: &K) -> bool {
    let Some(i) = buckets.iter().position(|(b, _)| *b == bits) else { return false };
    let gone = buckets[i].1.remove(key).is_some();
    if buckets[i].1.is_empty() {
        buckets.remove(i);
    }
    gone
}

/// The blocks in force, as the accept loops check them.
#[derive(Default)]
pub struct BlockSet {
    tables: RwLock<Tables>,
    /// `blocks.never_block`: never blocked, even by a block made before
    /// the address was listed (looked at only when a block matches).
    exempt: RwLock<std::sync::Arc<[IpNetwork]>>,
}

impl BlockSet {
    pub fn new() -> BlockSet {
        BlockSet::default()
    }

    /// Replaces every entry (a load at start, or an import seen in the feed).
    pub fn replace_all(&self, entries: impl IntoIterator<Item = (IpNetwork, Expiry)>) {
        let entries: Vec<(IpNetwork, Expiry)> = entries.into_iter().collect();
        // Each prefix length's table sized once (no rehash while loading).
        let mut counts = [[0usize; 129]; 2];
        for (net, _) in &entries {
            counts[usize::from(net.addr().is_ipv6())][usize::from(net.bits())] += 1;
        }
        let mut t = Tables::default();
        for bits in (0..=128u8).rev() {
            let (v4, v6) = (counts[0][usize::from(bits)], counts[1][usize::from(bits)]);
            if v4 > 0 {
                t.v4.push((bits, Map::with_capacity_and_hasher(v4, Seeded::default())));
            }
            if v6 > 0 {
                t.v6.push((bits, Map::with_capacity_and_hasher(v6, Seeded::default())));
            }
        }
        for (net, e) in entries {
            t.insert(net, e);
        }
        *self.write() = t;
    }

    pub fn insert(&self, net: IpNetwork, expires: Expiry) {
        self.write().insert(net, expires)
    }

    /// Sets `blocks.never_block` (at start and on reload).
    pub fn set_exempt(&self, never_block: &[IpNetwork]) {
        *self.exempt.write().unwrap_or_else(|p| p.into_inner()) = never_block.into();
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.exempt.read().unwrap_or_else(|p| p.into_inner()).iter().any(|n| n.contains(ip))
    }

    pub fn remove(&self, net: &IpNetwork) -> bool {
        self.write().remove(net)
    }

    /// The accept-time check: whether `ip` (IPv4-mapped IPv6 as IPv4) is
    /// in a block in force at `now`.
    pub fn is_blocked(&self, ip: IpAddr, now: Millis) -> bool {
        self.read().find(ip, now).is_some() && !self.exempt(ip)
    }

    /// The block in force that holds `ip` (the longest prefix), with its end.
    pub fn matching(&self, ip: IpAddr, now: Millis) -> Option<(IpNetwork, Expiry)> {
        self.read().find(ip, now).filter(|_| !self.exempt(ip))
    }

    /// Entries held (expired ones included until removed).
    pub fn len(&self) -> usize {
        self.read().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who made a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSource {
    /// A sysop at the CLI.
    Manual,
    /// A detection rule's playbook.
    Rule,
    /// `security ip import`.
    Import,
}

impl BlockSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockSource::Manual => "manual",
            BlockSource::Rule => "rule",
            BlockSource::Import => "import",
        }
    }
}

/// How long a block lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFor {
    /// By the address's record: `blocks.first` doubling with each earlier
    /// block up to `blocks.max`, `blocks.recidive` for recidivists (what
    /// rules and playbooks use when they name no duration).
    Grown,
    For(Duration),
    UntilLifted,
}

/// A request to block an address or network.
#[derive(Debug, Clone)]
pub struct BlockRequest<'a> {
    /// An address (`192.0.2.7`, `2001:db8::1`: IPv6 is blocked per
    /// `ssh.penalties.ipv6_prefix`), an address key (`2001:db8::/64`) or a
    /// network (`192.0.2.0/24`).
    pub target: &'a str,
    pub duration: BlockFor,
    pub reason: &'a str,
    pub incident_id: Option<i64>,
    pub source: BlockSource,
}

/// What a block request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOutcome {
    Blocked(Blocked),
    /// The target is on `blocks.never_block` (or overlaps `listed`):
    /// nothing was blocked.
    NeverBlock { network: IpNetwork, listed: IpNetwork },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The key blocked (IPv6 addresses as their /64).
    pub network: IpNetwork,
    pub expires_at: Option<Millis>,
    /// Earlier blocks of this key within `blocks.repeat_window`.
    pub repeat: u32,
    /// The one-week tier applied.
    pub recidivist: bool,
    pub change: BlockChange,
    /// Set when the target was widened to its key (an IPv6 address or a
    /// network longer than the IPv6 grouping).
    pub widened_from: Option<String>,
}

/// How the stored block changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockChange {
    /// Not blocked before.
    New,
    /// An active block was replaced (manual) or extended (rule).
    Changed,
    /// An active block already lasted as long: nothing changed.
    Unchanged,
}

/// What an unblock did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unblocked {
    pub network: IpNetwork,
    /// The block that was in force, if one was.
    pub removed: Option<BlockRow>,
    /// Penalty hold-offs of this process lifted at once (the daemon lifts
    /// its own when it reads the change, within a second).
    pub penalties_lifted: usize,
    /// A wider block that still holds the network.
    pub still_blocked_by: Option<IpNetwork>,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    pub added: usize,
    pub changed: usize,
    pub unchanged: usize,
    /// `FILE:LINE: ...` for the lines left out because they overlap
    /// `blocks.never_block`.
    pub skipped: Vec<String>,
}

/// The narrowest network a block may name is no concern; the widest is:
/// a typo like `/0` must not close the gate to everyone.
const WIDEST_V4: u8 = 8;
const WIDEST_V6: u8 = 16;

/// Most bad lines an import lists (the count says how many more).
const IMPORT_PROBLEMS_LISTED: usize = 50;

/// The key a target is blocked under: IPv6 wider than the grouping is
/// taken as is, an IPv6 address or longer network becomes its
/// `/ipv6_prefix`. Refuses networks wider than /8 (IPv4) or /16 (IPv6).
pub fn block_key(target: &str, ipv6_prefix: u8) -> std::result::Result<(IpNetwork, Option<String>), String> {
    let net = IpNetwork::parse(target)?;
    let (widest, family) = if net.addr().is_ipv4() { (WIDEST_V4, "IPv4") } else { (WIDEST_V6, "IPv6") };
    if net.bits() < widest {
        return Err(format!("{net} is too wide to block: a block may cover at most a /{widest} for {family}"));
    }
    if net.addr().is_ipv6() && net.bits() > ipv6_prefix {
        let key = IpNetwork::containing(net.addr(), ipv6_prefix);
        return Ok((key, Some(format!("{net} is blocked as {key} (IPv6 is blocked per /{ipv6_prefix}: ssh.penalties.ipv6_prefix)"))));
    }
    Ok((net, None))
}

/// How long a grown block lasts: `first` doubled per earlier block within
/// the repeat window, at most `max`; `recidive` when the address had
/// `recidive_after` blocks or more within the recidive window. Returns the
/// duration and whether the recidive tier applied.
pub fn grown_duration(b: &BlockSettings, earlier: u32, earlier_recent: u32) -> (Duration, bool) {
    if earlier_recent >= b.recidive_after {
        return (b.recidive.max(b.max), true);
    }
    let factor = 1u32.checked_shl(earlier.min(31)).unwrap_or(u32::MAX);
    (b.first.checked_mul(factor).unwrap_or(b.max).min(b.max), false)
}

/// The entry of `never_block` that `net` overlaps, if any.
fn listed(never_block: &[IpNetwork], net: &IpNetwork) -> Option<IpNetwork> {
    never_block.iter().find(|n| n.overlaps(net)).copied()
}

fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        _ if s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// One import line: the text with `#` and `;` comments cut, or `None`
/// for a blank or comment line.
fn import_entry(line: &str) -> Option<&str> {
    let cut = line.find(['#', ';']).map_or(line, |i| &line[..i]).trim();
    (!cut.is_empty()).then_some(cut)
}

impl Core {
    /// The accept-time check (in memory, no I/O).
    pub fn is_blocked(&self, ip: IpAddr, now: Millis) -> bool {
        self.blocks.is_blocked(ip, now)
    }

    /// Blocks an address or network; one `ip_blocked` event says who,
    /// why, for how long and which repeat it is. A target on
    /// `blocks.never_block` is not blocked (`BlockOutcome::NeverBlock`).
    /// A manual block replaces one in force; a rule's or import's only
    /// extends it.
    pub async fn block_address(&self, req: &BlockRequest<'_>, actor: &Actor, now: Millis) -> Result<BlockOutcome> {
        let settings = self.settings();
        let (network, widened_from) = block_key(req.target, settings.ssh.penalties.ipv6_prefix).map_err(Error::Invalid)?;
        if let Some(entry) = listed(&settings.blocks.never_block, &network) {
            return Ok(BlockOutcome::NeverBlock { network, listed: entry });
        }
        let b = &settings.blocks;
        let key = network.to_string();
        // A block asked for while one is in force (another rule that fired
        // on the same attempts, or attempts still in flight) is the same
        // offence as the block in force, not a repeat of it: it counts the
        // blocks before that one, so two rules firing together block for
        // the first step, not the second.
        let in_force = self.store.active_block(&key, now)?;
        let earlier = match &in_force {
            Some(active) => active.repeat,
            None => self.store.blocks_of_since(&key, now.minus(b.repeat_window))?,
        };
        let (duration, recidivist) = match req.duration {
            BlockFor::Grown => {
                let recent = self.store.blocks_of_since(&key, now.minus(b.recidive_window))?;
                let recent = if in_force.is_some() { recent.saturating_sub(1) } else { recent };
                let (d, r) = grown_duration(b, earlier, recent);
                (Some(d), r)
            }
            BlockFor::For(d) => (Some(d), false),
            BlockFor::UntilLifted => (None, false),
        };
        let row = BlockRow {
            network: key.clone(),
            reason: req.reason.to_owned(),
            source: req.source.as_str().to_owned(),
            created_at: now,
            expires_at: duration.map(|d| now.plus(d)),
            incident_id: req.incident_id,
            created_by: actor.describe(),
            repeat: earlier,
        };
        let overlap = if req.source == BlockSource::Manual { Overlap::Replace } else { Overlap::Extend };
        let (stored, change) = match self.store.put_block(&row, overlap, now)? {
            PutBlock::Added(r) => (r, BlockChange::New),
            PutBlock::Changed(r) => (r, BlockChange::Changed),
            PutBlock::Kept(r) => (r, BlockChange::Unchanged),
        };
        if change != BlockChange::Unchanged {
            self.blocks.insert(network, stored.expires_at);
            let until = match stored.expires_at {
                Some(t) => format!("until {}", t.rfc3339()),
                None => "until lifted".to_owned(),
            };
            let e = Event::new(EventType::IpBlocked, Severity::Medium, format!("{key} blocked {until}"), now)
                .ip(Some(&key))
                .detail("kind", "block")
                .detail("network", key.clone())
                .detail("reason", req.reason)
                .detail("source", req.source.as_str())
                .detail("incident_id", req.incident_id)
                .detail("duration", duration.map(duration_text))
                .detail("expires_at", stored.expires_at.map(|t| t.rfc3339()))
                .detail("repeat", earlier)
                .detail("recidivist", recidivist)
                .detail("replaced", change == BlockChange::Changed);
            self.record(actor.stamp(e)).await;
        }
        Ok(BlockOutcome::Blocked(Blocked { network, expires_at: stored.expires_at, repeat: stored.repeat, recidivist, change, widened_from }))
    }

    /// Lifts the block of an address or network (the same key a block of
    /// it would use) and the admission penalty hold-offs on it: at once in
    /// this process, within a second in the running daemon. Recorded as
    /// `ip_unblocked` whether or not a block was in force.
    pub async fn unblock_address(&self, target: &str, actor: &Actor, now: Millis) -> Result<Unblocked> {
        let settings = self.settings();
        let (network, _) = block_key(target, settings.ssh.penalties.ipv6_prefix).map_err(Error::Invalid)?;
        let key = network.to_string();
        let removed = self.store.remove_block(&key, true, now)?;
        self.blocks.remove(&network);
        let penalties_lifted = self.admission.lift(&network);
        // From the table: the CLI holds no set.
        let still_blocked_by = self
            .store
            .active_blocks(now)?
            .iter()
            .filter_map(|b| IpNetwork::parse(&b.network).ok())
            .filter(|n| n.bits() < network.bits() && n.contains(network.addr()))
            .max_by_key(|n| n.bits());
        let what = if removed.is_some() { "block lifted" } else { "no block was in force; penalty hold-offs lifted" };
        let e = Event::new(EventType::IpUnblocked, Severity::Medium, format!("{key} unblocked ({what})"), now)
            .ip(Some(&key))
            .detail("kind", "block")
            .detail("network", key.clone())
            .detail("reason", "lifted")
            .detail("had_block", removed.is_some())
            .detail("penalty_lifted", true)
            .detail("incident_id", removed.as_ref().and_then(|b| b.incident_id));
        self.record(actor.stamp(e)).await;
        Ok(Unblocked { network, removed, penalties_lifted, still_blocked_by })
    }

    /// The blocks in force, oldest first.
    pub fn list_blocks(&self, now: Millis) -> Result<Vec<BlockRow>> {
        Ok(self.store.active_blocks(now)?)
    }

    /// Imports a blocklist: one address or network per line, `#` and `;`
    /// start comments, blank lines are skipped. Any bad line
    /// (`FILE:LINE: problem`, every one listed up to 50) means nothing is
    /// imported. Lines that overlap `blocks.never_block` are skipped and
    /// reported. Imported blocks extend, never shorten, those in force and
    /// count as no offence for repeat durations.
    pub async fn import_blocks(&self, file: &str, text: &str, duration: Option<Duration>, reason: &str, actor: &Actor, now: Millis) -> Result<ImportOutcome> {
        let settings = self.settings();
        let prefix = settings.ssh.penalties.ipv6_prefix;
        let mut problems = Vec::new();
        let mut bad = 0usize;
        let mut skipped = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let Some(entry) = import_entry(line) else { continue };
            let at = format!("{file}:{}", i + 1);
            let parsed = if entry.split_whitespace().nth(1).is_some() {
                Err(format!("{:?}: expected one address or network per line", crate::model::escape_control(entry)))
            } else {
                block_key(entry, prefix)
            };
            match parsed {
                Err(e) => {
                    bad += 1;
                    if problems.len() < IMPORT_PROBLEMS_LISTED {
                        problems.push(format!("{at}: {e}"));
                    }
                }
                Ok((net, _)) => {
                    if let Some(entry) = listed(&settings.blocks.never_block, &net) {
                        skipped.push(format!("{at}: {net} overlaps {entry} of blocks.never_block; skipped"));
                    } else if seen.insert(net) {
                        rows.push(BlockRow {
                            network: net.to_string(),
                            reason: reason.to_owned(),
                            source: BlockSource::Import.as_str().to_owned(),
                            created_at: now,
                            expires_at: duration.map(|d| now.plus(d)),
                            incident_id: None,
                            created_by: actor.describe(),
                            repeat: 0,
                        });
                    }
                }
            }
        }
        if bad > 0 {
            let mut text = problems.join("\n");
            if bad > problems.len() {
                text.push_str(&format!("\n... and {} more bad lines", bad - problems.len()));
            }
            return Err(Error::Invalid(format!("{text}\n{file}: {bad} bad line(s): nothing imported")));
        }
        let counts = self.store.import_blocks(&rows, now)?;
        for r in &rows {
            if let Ok(net) = IpNetwork::parse(&r.network) {
                self.blocks.insert(net, r.expires_at);
            }
        }
        // What was kept may outlast the import: reload this process's set
        // from the table so it holds what is stored.
        if counts.kept > 0 {
            self.load_blocks(now)?;
        }
        let e = Event::new(EventType::IpBlocked, Severity::Medium, format!("{} addresses and networks imported from {file}", rows.len()), now)
            .detail("kind", "import")
            .detail("file", file)
            .detail("reason", reason)
            .detail("source", BlockSource::Import.as_str())
            .detail("entries", rows.len())
            .detail("added", counts.added)
            .detail("changed", counts.changed)
            .detail("unchanged", counts.kept)
            .detail("skipped", skipped.len())
            .detail("duration", duration.map(duration_text))
            .detail("expires_at", duration.map(|d| now.plus(d).rfc3339()));
        self.record(actor.stamp(e)).await;
        Ok(ImportOutcome { added: counts.added, changed: counts.changed, unchanged: counts.kept, skipped })
    }

    /// Loads every block in force into memory (at start) and takes the
    /// change feed's position; returns how many.
    pub fn load_blocks(&self, now: Millis) -> Result<usize> {
        let active = self.store.active_block_keys(now)?;
        for text in &active.unreadable {
            tracing::warn!(network = %crate::model::escape_control(text), "a stored block cannot be read; ignored");
        }
        let n = active.keys.len();
        self.blocks.replace_all(active.keys);
        *self.block_feed.lock().unwrap_or_else(|p| p.into_inner()) = active.last_change;
        Ok(n)
    }

    /// Applies the blocks, unblocks and penalty lifts another process
    /// recorded since the last call (one small indexed query when nothing
    /// changed), and removes expired blocks with an `ip_unblocked` event
    /// each. The daemon calls this twice a second. Returns the changes
    /// applied.
    pub async fn sync_blocks(&self, now: Millis) -> Result<usize> {
        let last = *self.block_feed.lock().unwrap_or_else(|p| p.into_inner());
        let changes = self.store.block_changes_after(last)?;
        let mut reload = false;
        for c in &changes {
            if c.kind == "reload" {
                reload = true;
                continue;
            }
            let Ok(net) = IpNetwork::parse(&c.network) else { continue };
            match c.kind.as_str() {
                "lift" => {
                    let n = self.admission.lift(&net);
                    if n > 0 {
                        tracing::info!(network = %net, "penalty hold-off lifted");
                    }
                }
                _ if reload => {}
                _ => match self.store.active_block(&c.network, now)? {
                    Some(b) => self.blocks.insert(net, b.expires_at),
                    None => {
                        self.blocks.remove(&net);
                    }
                },
            }
        }
        if let Some(c) = changes.last() {
            *self.block_feed.lock().unwrap_or_else(|p| p.into_inner()) = c.id;
        }
        if reload {
            // Takes the feed's position afresh (at or past the last change read).
            self.load_blocks(now)?;
        }
        if self.store.any_block_expired(now)? {
            for b in self.store.expire_blocks(now)? {
                if let Ok(net) = IpNetwork::parse(&b.network) {
                    self.blocks.remove(&net);
                }
                let e = Event::new(EventType::IpUnblocked, Severity::Info, format!("{} unblocked (the block expired)", b.network), now)
                    .ip(Some(&b.network))
                    .detail("kind", "block")
                    .detail("network", b.network.clone())
                    .detail("reason", "expired")
                    .detail("source", b.source.clone())
                    .detail("incident_id", b.incident_id)
                    .detail("blocked_at", b.created_at.rfc3339())
                    .detail("actor", "system");
                self.record(e).await;
            }
        }
        Ok(changes.len())
    }

    /// A connection from a blocked address was closed at accept: recorded
    /// as `connection_refused` at most once per address per 10 s, with the
    /// count of refusals it stands for (as admission refusals are).
    pub async fn blocked_connection(&self, ip: IpAddr, protocol: &str, now: Millis) {
        let Some(count) = self.admission.refusal_to_record(ip, now) else { return };
        let mut e = Event::new(EventType::ConnectionRefused, Severity::Low, "connection refused: address blocked", now)
            .ip(Some(&ip.to_string()))
            .detail("reason", "address blocked")
            .detail("protocol", protocol)
            .detail("refusals", count);
        if let Some((net, until)) = self.blocks.matching(ip, now) {
            e = e.detail("network", net.to_string()).detail("blocked_until", until.map(|t| t.rfc3339()));
        }
        self.record(e).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        IpNetwork::parse(s).expect("network")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn settings() -> BlockSettings {
        BlockSettings {
            first: Duration::from_secs(1800),
            max: Duration::from_secs(86_400),
            repeat_window: Duration::from_secs(7 * 86_400),
            recidive_after: 5,
            recidive_window: Duration::from_secs(86_400),
            recidive: Duration::from_secs(7 * 86_400),
            never_block: vec![],
        }
    }

    #[test]
    fn durations_grow_from_30m_to_24h_and_recidivists_get_a_week() {
        let b = settings();
        // (earlier blocks within the repeat window, within the recidive window, duration, recidive tier)
        let cases: &[(u32, u32, &str, bool)] = &[
            (0, 0, "30m", false),
            (1, 0, "1h", false),
            (2, 0, "2h", false),
            (3, 0, "4h", false),
            (4, 0, "8h", false),
            (5, 0, "16h", false),
            (6, 0, "1d", false),
            (7, 0, "1d", false),
            (40, 0, "1d", false),
            (4, 4, "8h", false),
            (5, 5, "7d", true),
            (9, 6, "7d", true),
            (u32::MAX, 0, "1d", false),
        ];
        for (earlier, recent, want, tier) in cases {
            let (d, r) = grown_duration(&b, *earlier, *recent);
            assert_eq!((duration_text(d).as_str(), r), (*want, *tier), "{earlier} earlier, {recent} recent");
        }
        let mut b = settings();
        b.recidive = Duration::from_secs(3600);
        assert_eq!(grown_duration(&b, 5, 5), (Duration::from_secs(86_400), true), "the recidive tier is never shorter than max");
    }

    #[test]
    fn block_keys_group_ipv6_and_refuse_wide_networks() {
        // (target, ipv6 prefix, key, widened)
        let ok: &[(&str, u8, &str, bool)] = &[
            ("192.0.2.7", 64, "192.0.2.7", false),
            ("::ffff:192.0.2.7", 64, "192.0.2.7", false),
            ("192.0.2.0/24", 64, "192.0.2.0/24", false),
            ("10.0.0.0/8", 64, "10.0.0.0/8", false),
            ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64", true),
            ("2001:db8:1:2::/64", 64, "2001:db8:1:2::/64", false),
            ("2001:db8:1:2::/80", 64, "2001:db8:1:2::/64", true),
            ("2001:db8::/32", 64, "2001:db8::/32", false),
            ("2001:db8:1:2:aaaa::1", 48, "2001:db8:1::/48", true),
        ];
        for (target, prefix, want, widened) in ok {
            let (key, note) = block_key(target, *prefix).unwrap_or_else(|e| panic!("{target}: {e}"));
            assert_eq!((key.to_string().as_str(), note.is_some()), (*want, *widened), "{target}");
        }
        assert_eq!(
            block_key("2001:db8::1", 64).map(|(_, n)| n),
            Ok(Some("2001:db8::1 is blocked as 2001:db8::/64 (IPv6 is blocked per /64: ssh.penalties.ipv6_prefix)".to_owned()))
        );
        let bad: &[(&str, &str)] = &[
            ("0.0.0.0/0", "0.0.0.0/0 is too wide to block: a block may cover at most a /8 for IPv4"),
            ("10.0.0.0/7", "10.0.0.0/7 is too wide to block: a block may cover at most a /8 for IPv4"),
            ("::/0", "::/0 is too wide to block: a block may cover at most a /16 for IPv6"),
            ("2000::/3", "2000::/3 is too wide to block: a block may cover at most a /16 for IPv6"),
            ("10.0.0.1/8", "invalid network \"10.0.0.1/8\": host bits are set (the network is 10.0.0.0/8)"),
            ("192.0.2.0/40", "invalid network \"192.0.2.0/40\": /40 is out of range for IPv4 (0-32)"),
            ("nope", "invalid address \"nope\": expected an IPv4 or IPv6 address, optionally with /BITS, like 192.0.2.7, 192.0.2.0/24 or 2001:db8::/64"),
        ];
        for (target, want) in bad {
            assert_eq!(block_key(target, 64), Err(want.to_string()), "{target}");
        }
    }

    #[test]
    fn the_set_matches_addresses_networks_and_mapped_ipv4_and_honours_expiry() {
        let set = BlockSet::new();
        set.insert(net("192.0.2.7"), None);
        set.insert(net("198.51.100.0/24"), Some(Millis(1000)));
        set.insert(net("10.0.0.0/8"), None);
        set.insert(net("2001:db8:1:2::/64"), None);
        set.insert(net("2001:db9::/32"), Some(Millis(5000)));
        assert_eq!(set.len(), 5);
        // (address, blocked at t=500, blocked at t=1000)
        let cases: &[(&str, bool, bool)] = &[
            ("192.0.2.7", true, true),
            ("::ffff:192.0.2.7", true, true),
            ("192.0.2.8", false, false),
            ("198.51.100.200", true, false),
            ("::ffff:198.51.100.1", true, false),
            ("198.51.101.1", false, false),
            ("10.255.0.1", true, true),
            ("11.0.0.1", false, false),
            ("2001:db8:1:2:ffff::1", true, true),
            ("2001:db8:1:3::1", false, false),
            ("2001:db9:abcd::1", true, true),
            ("2001:dba::1", false, false),
            ("127.0.0.1", false, false),
            ("::1", false, false),
        ];
        for (a, at500, at1000) in cases {
            assert_eq!(set.is_blocked(ip(a), Millis(500)), *at500, "{a} at 500");
            assert_eq!(set.is_blocked(ip(a), Millis(1000)), *at1000, "{a} at 1000");
        }
        // The longest block in force is named; an expired narrower one lets a wider one answer.
        set.insert(net("10.1.0.0/16"), Some(Millis(100)));
        assert_eq!(set.matching(ip("10.1.2.3"), Millis(50)), Some((net("10.1.0.0/16"), Some(Millis(100)))));
        assert_eq!(set.matching(ip("10.1.2.3"), Millis(200)), Some((net("10.0.0.0/8"), None)));
        // Replacing keeps one entry; removing empties the prefix's table.
        set.insert(net("192.0.2.7"), Some(Millis(10)));
        assert_eq!(set.len(), 6);
        assert!(!set.is_blocked(ip("192.0.2.7"), Millis(10)));
        assert!(set.remove(&net("10.0.0.0/8")));
        assert!(!set.remove(&net("10.0.0.0/8")));
        assert!(!set.is_blocked(ip("10.9.9.9"), Millis(0)));
        assert_eq!(set.len(), 5);
        set.replace_all([(net("203.0.113.0/24"), None)]);
        assert_eq!(set.len(), 1);
        assert!(!set.is_blocked(ip("192.0.2.7"), Millis(0)));
        assert!(set.is_blocked(ip("203.0.113.9"), Millis(0)));
        // An address put on never_block after its network was blocked gets in.
        set.set_exempt(&[net("203.0.113.9")]);
        assert!(!set.is_blocked(ip("203.0.113.9"), Millis(0)));
        assert_eq!(set.matching(ip("203.0.113.9"), Millis(0)), None);
        assert!(set.is_blocked(ip("203.0.113.10"), Millis(0)));
    }

    #[test]
    fn never_block_overlaps_either_way() {
        let list = vec![net("127.0.0.0/8"), net("2001:db8::5")];
        assert_eq!(listed(&list, &net("127.0.0.1")), Some(net("127.0.0.0/8")));
        assert_eq!(listed(&list, &net("127.0.0.0/16")), Some(net("127.0.0.0/8")));
        assert_eq!(listed(&list, &net("2001:db8::/64")), Some(net("2001:db8::5")), "a /64 holding a listed address");
        assert_eq!(listed(&list, &net("128.0.0.1")), None);
        assert_eq!(listed(&list, &net("2001:db8:0:1::/64")), None);
    }

    fn core(dir: &std::path::Path, extra: &str) -> Core {
        let text = format!("passwords: {{\n  iterations: 1000\n}}\nssh: {{\n  penalties: {{\n    max_failures: 3\n  }}\n}}\n{extra}");
        let settings = crate::config::load::from_text(&text, "t.hjson", dir).expect("settings");
        let store = std::sync::Arc::new(crate::store::Store::open(&dir.join("t.db")).expect("open"));
        store.migrate(None).expect("migrate");
        Core::new(store.clone(), settings, super::super::EventSink::Direct(store), super::super::secrets::Keyring::from_key(&[3; 32]))
    }

    fn rule(target: &str) -> BlockRequest<'_> {
        BlockRequest { target, duration: BlockFor::Grown, reason: "brute force", incident_id: Some(7), source: BlockSource::Rule }
    }

    fn blocked(o: BlockOutcome) -> Blocked {
        match o {
            BlockOutcome::Blocked(b) => b,
            other => panic!("not blocked: {other:?}"),
        }
    }

    /// Rule blocks of one address grow 30m, 1h, 2h... across unblocks and
    /// expiry (the history stays), five within a day make a week; a block
    /// made in one process (the CLI) reaches another (the daemon) through
    /// the feed, as do unblocks, penalty lifts and expiry.
    #[test]
    fn blocks_grow_on_repeat_and_reach_the_daemon_through_the_feed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = core(dir.path(), "blocks: {\n  never_block: [\"192.0.2.128/25\"]\n}\n");
        let cli = core(dir.path(), "blocks: {\n  never_block: [\"192.0.2.128/25\"]\n}\n");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let actor = Actor::Cli("t".into());
        let t0 = Millis(1_800_000_000_000);
        let min = |m: i64| Millis(t0.0 + m * 60_000);
        assert_eq!(daemon.load_blocks(t0).expect("load"), 0);
        let x = ip("192.0.2.7");
        // (minute of the block, its length in minutes, recidivist)
        let steps: &[(i64, i64, bool)] = &[(0, 30, false), (40, 60, false), (110, 120, false), (240, 240, false), (500, 480, false), (990, 7 * 24 * 60, true)];
        for (i, (at, length, tier)) in steps.iter().enumerate() {
            let b = blocked(rt.block_on(cli.block_address(&rule("192.0.2.7"), &actor, min(*at))).expect("block"));
            assert_eq!((b.repeat, b.expires_at, b.recidivist, b.change), (i as u32, Some(min(at + length)), *tier, BlockChange::New), "block {i}");
            assert!(rt.block_on(daemon.sync_blocks(min(*at))).expect("sync") > 0);
            assert!(daemon.is_blocked(x, min(*at)), "the daemon learnt of block {i}");
            assert!(!daemon.is_blocked(ip("192.0.2.8"), min(*at)));
            // Expiry: the daemon deletes it and says so.
            rt.block_on(daemon.sync_blocks(min(at + length))).expect("sync");
            assert!(!daemon.is_blocked(x, min(at + length)), "block {i} expired");
        }
        let expired = daemon.store.events(&crate::store::events::EventFilter { user_id: None, event_type: Some(EventType::IpUnblocked), min_severity: None, since: None, after_id: None, limit: 100 }).expect("events");
        assert_eq!(expired.len(), 6);
        assert!(expired.iter().all(|e| e.details["reason"] == "expired" && e.details["network"] == "192.0.2.7"), "{expired:#?}");
        let made = daemon.store.events(&crate::store::events::EventFilter { user_id: None, event_type: Some(EventType::IpBlocked), min_severity: None, since: None, after_id: None, limit: 100 }).expect("events");
        assert_eq!(made[0].details["repeat"], 5);
        assert_eq!(made[0].details["recidivist"], true);
        assert_eq!(made[0].details["incident_id"], 7);
        assert_eq!(made[0].details["source"], "rule");
        assert_eq!(made[0].details["duration"], "7d");
        assert_eq!(made[0].details["actor"], "cli:t");

        // A manual block until lifted, seen by the daemon; a rule block does not shorten it.
        let later = min(20_000);
        let manual = BlockRequest { target: "198.51.100.0/24", duration: BlockFor::UntilLifted, reason: "feed", incident_id: None, source: BlockSource::Manual };
        assert_eq!(blocked(rt.block_on(cli.block_address(&manual, &actor, later)).expect("block")).expires_at, None);
        assert_eq!(blocked(rt.block_on(cli.block_address(&rule("198.51.100.0/24"), &actor, later)).expect("block")).change, BlockChange::Unchanged);
        rt.block_on(daemon.sync_blocks(later)).expect("sync");
        assert!(daemon.is_blocked(ip("::ffff:198.51.100.77"), later));
        // never_block: refused, nothing stored.
        assert_eq!(
            rt.block_on(cli.block_address(&rule("192.0.2.200"), &actor, later)).expect("block"),
            BlockOutcome::NeverBlock { network: net("192.0.2.200"), listed: net("192.0.2.128/25") }
        );
        assert_eq!(
            rt.block_on(cli.block_address(&rule("192.0.2.0/24"), &actor, later)).expect("block"),
            BlockOutcome::NeverBlock { network: net("192.0.2.0/24"), listed: net("192.0.2.128/25") }
        );
        assert_eq!(cli.list_blocks(later).expect("list").len(), 1);

        // The daemon holds a penalty on 203.0.113.5; the CLI's unblock lifts it.
        let y = ip("203.0.113.5");
        let failures: Vec<Event> = (0..3).map(|s| Event::new(EventType::LoginFailed, Severity::Low, "f", Millis(later.0 - 10 + s)).ip(Some("203.0.113.5"))).collect();
        daemon.store.insert_events(&failures).expect("events");
        daemon.rebuild_windows(later).expect("rebuild");
        assert!(daemon.admission.check_attempt(y, later).is_err(), "held off after its failures");
        let u = rt.block_on(cli.unblock_address("203.0.113.5", &actor, later)).expect("unblock");
        assert_eq!((u.removed.is_none(), u.still_blocked_by), (true, None));
        rt.block_on(daemon.sync_blocks(later)).expect("sync");
        assert_eq!(daemon.admission.check_attempt(y, later), Ok(()), "the CLI's unblock reached the daemon");
        // A restart does not bring the lifted hold-off back from the failures in the log.
        let restarted = core(dir.path(), "");
        restarted.rebuild_windows(later.plus(Duration::from_secs(1))).expect("rebuild");
        assert_eq!(restarted.admission.check_attempt(y, later.plus(Duration::from_secs(1))), Ok(()));
        let u = rt.block_on(cli.unblock_address("198.51.100.77", &actor, later)).expect("unblock");
        assert_eq!((u.removed.is_none(), u.still_blocked_by), (true, Some(net("198.51.100.0/24"))));
        let u = rt.block_on(cli.unblock_address("198.51.100.0/24", &actor, later)).expect("unblock");
        assert!(u.removed.is_some());
        rt.block_on(daemon.sync_blocks(later)).expect("sync");
        assert!(!daemon.is_blocked(ip("198.51.100.77"), later));

        // A restarted daemon loads what is in force.
        rt.block_on(cli.block_address(&BlockRequest { target: "2001:db8:1:2::99", duration: BlockFor::For(Duration::from_secs(3600)), reason: "r", incident_id: None, source: BlockSource::Manual }, &actor, later)).expect("block");
        let restarted = core(dir.path(), "");
        assert_eq!(restarted.load_blocks(later).expect("load"), 1);
        assert!(restarted.is_blocked(ip("2001:db8:1:2:ffff::1"), later));
        assert!(!restarted.is_blocked(ip("2001:db8:1:2:ffff::1"), later.plus(Duration::from_secs(3600))));
    }

    /// Two rules that fire on the same attempts (stuffing and spraying on
    /// the fifth account) block once for the first step: the second block
    /// is the same offence, it only moves the end; the next offence, after
    /// expiry, is the second step.
    #[test]
    fn a_second_rule_on_the_same_attempts_is_not_a_repeat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path(), "");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let actor = Actor::Cli("t".into());
        let t0 = Millis(1_800_000_000_000);
        let sec = |s: i64| Millis(t0.0 + s * 1000);
        // (second of the block, its end in seconds, repeat, change)
        let steps: &[(i64, i64, u32, BlockChange)] = &[(0, 1800, 0, BlockChange::New), (1, 1801, 0, BlockChange::Changed), (1801, 1801 + 3600, 1, BlockChange::New)];
        for (i, (at, end, repeat, change)) in steps.iter().enumerate() {
            let b = blocked(rt.block_on(core.block_address(&rule("192.0.2.9"), &actor, sec(*at))).expect("block"));
            assert_eq!((b.expires_at, b.repeat, b.change), (Some(sec(*end)), *repeat, *change), "block {i}");
        }
        let made = core.store.events(&crate::store::events::EventFilter { event_type: Some(EventType::IpBlocked), limit: 10, ..Default::default() }).expect("events");
        let shown: Vec<(String, u64)> = made.iter().rev().map(|e| (e.details["duration"].as_str().unwrap_or("").to_owned(), e.details["repeat"].as_u64().unwrap_or(99))).collect();
        assert_eq!(shown, [("30m".to_owned(), 0), ("30m".to_owned(), 0), ("1h".to_owned(), 1)]);
    }

    #[test]
    fn an_import_with_a_bad_line_imports_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = core(dir.path(), "blocks: {\n  never_block: [\"10.0.0.0/8\"]\n}\n");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let actor = Actor::Cli("t".into());
        let now = Millis(1_800_000_000_000);
        let bad = "# feed\n192.0.2.7\n\n192.0.2.0/33\n198.51.100.1/24 ; x\nhello world\n";
        match rt.block_on(c.import_blocks("feed.txt", bad, None, "feed", &actor, now)) {
            Err(Error::Invalid(msg)) => assert_eq!(
                msg,
                "feed.txt:4: invalid network \"192.0.2.0/33\": /33 is out of range for IPv4 (0-32)\n\
                 feed.txt:5: invalid network \"198.51.100.1/24\": host bits are set (the network is 198.51.100.0/24)\n\
                 feed.txt:6: \"hello world\": expected one address or network per line\n\
                 feed.txt: 3 bad line(s): nothing imported"
            ),
            other => panic!("{other:?}"),
        }
        assert!(c.list_blocks(now).expect("list").is_empty());
        let good = "# feed\n192.0.2.7\n192.0.2.7 # twice\n10.1.0.0/16\n2001:db8::1\n203.0.113.0/24 ; SBL\n";
        let o = rt.block_on(c.import_blocks("feed.txt", good, None, "feed", &actor, now)).expect("import");
        assert_eq!((o.added, o.changed, o.unchanged), (3, 0, 0));
        assert_eq!(o.skipped, vec!["feed.txt:4: 10.1.0.0/16 overlaps 10.0.0.0/8 of blocks.never_block; skipped".to_owned()]);
        let listed: Vec<String> = c.list_blocks(now).expect("list").into_iter().map(|b| b.network).collect();
        assert_eq!(listed, vec!["192.0.2.7", "2001:db8::/64", "203.0.113.0/24"]);
        assert!(c.is_blocked(ip("203.0.113.9"), now));
    }

    #[test]
    fn import_lines_cut_comments() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", None),
            ("   ", None),
            ("# a comment", None),
            ("; Spamhaus DROP style", None),
            ("192.0.2.7", Some("192.0.2.7")),
            ("  192.0.2.0/24 ; SBL123", Some("192.0.2.0/24")),
            ("2001:db8::/32 # note", Some("2001:db8::/32")),
            ("1.2.3.4 5.6.7.8", Some("1.2.3.4 5.6.7.8")),
        ];
        for (line, want) in cases {
            assert_eq!(import_entry(line), *want, "{line:?}");
        }
    }
}
