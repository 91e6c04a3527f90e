//! `security scan suspicious`: the live rules over history. A fresh
//! `Detector` reads the events since a moment (the longest window by
//! default) in id order from the table, as the live feed would have seen
//! them, and the scan is recorded as a `scan_completed` event with its
//! counts. Password spraying cannot be seen here: its tags lived only in
//! the daemon's memory (see `spray.rs`).

use super::{DetectEvent, Detector, EVENT_TYPES};
use crate::core::{Core, Result};
use crate::model::{Event, EventType, Finding, Millis, Severity};
use std::collections::BTreeMap;

/// Rows read per query (and between progress updates).
const PAGE: usize = 10_000;

/// Detector threads of the scan (the machine this was measured on has 2
/// cores; the reading thread shares them).
const SHARDS: u64 = 2;

/// Pages read ahead of the slowest detector.
const QUEUED_PAGES: usize = 4;

/// What a scan found.
#[derive(Debug, Clone)]
pub struct SuspiciousScan {
    pub since: Millis,
    /// Events read (of the types the rules look at).
    pub events_read: u64,
    /// Every finding, in the order the live feed would have reported them.
    pub findings: Vec<Finding>,
}

impl SuspiciousScan {
    /// One finding per (rule, subject): the last one (with the highest
    /// count), its first event the earliest of them all, its event ids
    /// gathered (at most 50). For people; the incident engine takes
    /// `findings` as they are.
    pub fn summary(&self) -> Vec<Finding> {
        let mut order: Vec<(String, String)> = Vec::new();
        let mut merged: BTreeMap<(String, String), Finding> = BTreeMap::new();
        for f in &self.findings {
            let rule = f.details.get("rule").and_then(|v| v.as_str()).unwrap_or(f.incident_type.as_str()).to_owned();
            let key = (rule, f.subject.key());
            match merged.get_mut(&key) {
                Some(m) => {
                    let first = m.first_event_at.min(f.first_event_at);
                    let mut ids = std::mem::take(&mut m.event_ids);
                    ids.extend(&f.event_ids);
                    ids.sort_unstable();
                    ids.dedup();
                    let skip = ids.len().saturating_sub(50);
                    *m = f.clone();
                    m.first_event_at = first;
                    m.event_ids = ids.split_off(skip);
                }
                None => {
                    order.push(key.clone());
                    merged.insert(key, f.clone());
                }
            }
        }
        order.into_iter().filter_map(|k| merged.remove(&k)).collect()
    }

    /// Findings per incident type (of the summary).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut by: BTreeMap<&'static str, u64> = BTreeMap::new();
        for f in self.summary() {
            *by.entry(f.incident_type.as_str()).or_insert(0) += 1;
        }
        by
    }
}

impl Core {
    /// Runs every detection rule over the events since `since` (default:
    /// the longest window of the rules) and records `scan_completed`.
    /// Findings are returned, not acted on.
    pub async fn scan_suspicious(&self, since: Option<Millis>, now: Millis) -> Result<SuspiciousScan> {
        let settings = self.settings();
        let scan = self.run_suspicious_scan(since, now, &crate::core::scans::NoProgress)?;
        let counts = scan.counts();
        let total: u64 = counts.values().sum();
        let e = Event::new(EventType::ScanCompleted, if total > 0 { Severity::Medium } else { Severity::Info }, format!("suspicious-activity scan: {total} finding(s) in {} events", scan.events_read), now)
            .detail("scan", "suspicious")
            .detail("since", scan.since.rfc3339())
            .detail("events_read", scan.events_read)
            .detail("findings", total)
            .detail("by_type", serde_json::to_value(&counts).unwrap_or_default())
            .detail("rules_enabled", settings.detection.any_enabled())
            .detail("password_spraying", "not scanned: password tags live only in the daemon's memory");
        self.events.record(e).await;
        Ok(scan)
    }

    /// The rules over the events since `since` (default: the longest
    /// window), recording nothing; `progress` counts event ids.
    ///
    /// This thread reads the rows and hands them, a page at a time, to
    /// `SHARDS` detectors on threads of their own, each keeping the state
    /// of its part of the keys (`Detector::with_shard`); their findings
    /// are put back in event order. The work is memory-bound (a state per
    /// address, network and account, a week of them), so the shards'
    /// cache misses overlap.
    pub fn run_suspicious_scan(&self, since: Option<Millis>, now: Millis, progress: &dyn crate::core::scans::Progress) -> Result<SuspiciousScan> {
        let settings = self.settings();
        let since = since.unwrap_or_else(|| now.minus(settings.detection.longest_window()));
        let accounts = self.store.count_users()?;
        let upto = self.store.last_event_id()?;
        let mut after = self.store.event_id_before(since)?.min(upto);
        let mut scan = SuspiciousScan { since, events_read: 0, findings: Vec::new() };
        progress.start(crate::core::scans::ScanKind::Suspicious, (upto - after).max(0) as u64);
        if !settings.detection.any_enabled() {
            progress.finish(crate::core::scans::ScanKind::Suspicious);
            return Ok(scan);
        }
        let detectors: Vec<Detector> = (0..SHARDS).map(|i| Detector::new(&settings.detection, settings.ssh.penalties.ipv6_prefix).with_accounts(accounts).with_shard(i, SHARDS)).collect();
        let read: Result<()> = std::thread::scope(|threads| {
            let mut pages = Vec::new();
            let mut handles = Vec::new();
            for mut d in detectors {
                let (tx, rx) = std::sync::mpsc::sync_channel::<std::sync::Arc<Vec<DetectEvent>>>(QUEUED_PAGES);
                pages.push(tx);
                handles.push(threads.spawn(move || {
                    // (the event's place in the replay, what it made fire)
                    let mut found: Vec<(u64, Finding)> = Vec::new();
                    let mut seq = 0u64;
                    for page in rx {
                        for ev in page.iter() {
                            // History replays on its own clock.
                            found.extend(d.observe(ev, ev.at).into_iter().map(|f| (seq, f)));
                            seq += 1;
                        }
                    }
                    found
                }));
            }
            let read = (|| -> Result<()> {
                loop {
                    let before = after;
                    let mut page = Vec::with_capacity(PAGE);
                    let (n, last) = self.store.detect_rows_by_id(after, upto, Some(since), EVENT_TYPES, PAGE, |row| {
                        scan.events_read += 1;
                        page.extend(DetectEvent::from_row(row));
                    })?;
                    after = last;
                    let page = std::sync::Arc::new(page);
                    for tx in &pages {
                        // A detector thread that is gone panicked: its
                        // join below says so; reading on is no use.
                        if tx.send(page.clone()).is_err() {
                            return Ok(());
                        }
                    }
                    let full = n == PAGE;
                    progress.advance(if full { (after - before).max(0) as u64 } else { (upto - before).max(0) as u64 });
                    if !full {
                        return Ok(());
                    }
                }
            })();
            drop(pages);
            let mut all: Vec<(u64, usize, Finding)> = Vec::new();
            let mut panicked = false;
            // Every thread is joined (a panic is this scan's error, not
            // the scope's).
            for (shard, h) in handles.into_iter().enumerate() {
                match h.join() {
                    Ok(found) => all.extend(found.into_iter().map(|(seq, f)| (seq, shard, f))),
                    Err(_) => panicked = true,
                }
            }
            if panicked {
                return Err(crate::core::Error::Conflict("the suspicious-activity scan failed: a detector thread panicked".into()));
            }
            // Each shard's findings are in event order already; a stable
            // sort by the event's place merges them (within one event, the
            // first shard's first: the order may differ from one
            // detector's there, never across events).
            all.sort_by_key(|(seq, shard, _)| (*seq, *shard));
            scan.findings = all.into_iter().map(|(_, _, f)| f).collect();
            read
        });
        read?;
        progress.finish(crate::core::scans::ScanKind::Suspicious);
        Ok(scan)
    }
}
