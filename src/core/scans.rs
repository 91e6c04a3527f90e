//! `security scan` (SPEC §11): four scans over the store, each a list of
//! findings with stable field names, and one `scan_completed` event with
//! the counts per kind.
//!
//! - `passwords`: hashes below the policy's iteration count (the PHC
//!   string says its cost), passwords older than `passwords.max_age_days`,
//!   and passwords found weak at their last successful login. That verdict
//!   is taken beside the login's answer (`judge_password_beside`): the typed
//!   password against the policy of that moment and the common list; only
//!   the verdict, its rules' codes and when are stored.
//! - `mfa`: accounts without a second factor; accounts whose policy level
//!   (their groups', imposed) is above what their factors reach. A member
//!   of `sysops` below their level opens an incident (high).
//! - `sessions`: open session rows that nothing refreshed for
//!   `stale_after` (the daemon refreshes its live sessions every
//!   `SESSION_REFRESH`; rows left by a crash or a killed daemon stop
//!   moving) are closed at their last sign of life, each with a
//!   `session_ended` event, in one transaction.
//! - `suspicious`: the detection rules over recent history
//!   (`detect/scan.rs`); each finding opens or attaches to an incident.

use super::detect::scan::SuspiciousScan;
use super::password::{self, Policy};
use super::{Core, Result};
use crate::model::{Event, EventType, Finding, IncidentSeverity, IncidentType, Millis, Secret, Severity, Subject, User};
use std::collections::BTreeMap;
use std::time::Duration;

/// How often the daemon refreshes the rows of its live sessions.
pub const SESSION_REFRESH: Duration = Duration::from_secs(60);

/// The rule name of the incident a sysop below their level opens.
pub const SYSOP_BELOW_LEVEL_RULE: &str = "scan_sysop_below_required_level";

/// Accounts read per page.
const PAGE: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScanKind {
    Passwords,
    Mfa,
    Sessions,
    Suspicious,
}

impl ScanKind {
    /// Every kind, in the order they run and print.
    pub const ALL: [ScanKind; 4] = [ScanKind::Passwords, ScanKind::Mfa, ScanKind::Sessions, ScanKind::Suspicious];

    pub fn as_str(self) -> &'static str {
        match self {
            ScanKind::Passwords => "passwords",
            ScanKind::Mfa => "mfa",
            ScanKind::Sessions => "sessions",
            ScanKind::Suspicious => "suspicious",
        }
    }
}

/// How a scan tells how far it is (the CLI draws a bar on a terminal).
pub trait Progress: Sync {
    /// A kind starts; `total` steps (accounts, events) when known.
    fn start(&self, kind: ScanKind, total: u64);
    fn advance(&self, steps: u64);
    fn finish(&self, kind: ScanKind);
}

/// Progress nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: ScanKind, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self, _: ScanKind) {}
}

/// One password finding. `finding` is one of `hash_below_iterations`
/// (with `iterations`, `required_iterations`), `hash_unreadable`,
/// `password_old` (`age_days`, `max_age_days`), `password_weak`
/// (`reasons`, `checked_at`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PasswordFinding {
    pub user_id: i64,
    pub username: String,
    pub finding: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_iterations: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
}

impl PasswordFinding {
    fn new(a: &crate::store::scans::ScanAccount, finding: &'static str) -> PasswordFinding {
        PasswordFinding {
            user_id: a.id,
            username: a.username.clone(),
            finding,
            iterations: None,
            required_iterations: None,
            age_days: None,
            max_age_days: None,
            reasons: None,
            checked_at: None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PasswordScan {
    pub accounts: u64,
    pub findings: Vec<PasswordFinding>,
}

/// One factor finding: `no_second_factor` or `below_required_level`.
/// `level` is what the account's factors reach (1 password or key, 2 with
/// a one-time code, 3 with a hardware key); `required_level` what its groups and any imposed
/// level ask; `incident_id` the incident it opened or attached to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MfaFinding {
    pub user_id: i64,
    pub username: String,
    pub finding: &'static str,
    pub sysop: bool,
    pub level: u8,
    pub required_level: u8,
    pub incident_id: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MfaScan {
    pub accounts: u64,
    pub findings: Vec<MfaFinding>,
}

/// An expired session the scan closed (`finding`: `session_expired`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionFinding {
    pub session_id: i64,
    pub user_id: i64,
    pub username: String,
    pub finding: &'static str,
    pub protocol: String,
    pub ip: String,
    pub started_at: String,
    pub last_activity_at: String,
    pub ended_at: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionScan {
    /// Open before the scan.
    pub open: u64,
    pub closed: u64,
    pub still_open: u64,
    pub stale_after_seconds: u64,
    pub findings: Vec<SessionFinding>,
}

/// Incidents the scan opened or attached findings to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IncidentCounts {
    pub opened: u64,
    pub attached: u64,
    /// Address findings reported in the incident of their network's
    /// finding of the same rule instead of one of their own.
    pub folded: u64,
}

/// Addresses a folded network finding names at most.
const FOLDED_ADDRESSES: usize = 20;

/// The findings a scan opens incidents for: an address finding whose
/// network has a finding of the same rule (slow brute force and username
/// enumeration count both) goes into the network's finding — its details
/// gain `addresses_folded` and the busiest `addresses` — rather than
/// opening an incident of its own. Over a week of a botnet that is one
/// incident per attacking network a sysop can act on (the network's block
/// covers its addresses), not tens of thousands, one per address. The
/// report still lists every finding. Returns the findings to report and
/// how many were folded.
fn fold_into_networks(summary: &[Finding]) -> (Vec<Finding>, u64) {
    let rule = |f: &Finding| f.details.get("rule").and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let mut networks: BTreeMap<(String, crate::model::IpNetwork), usize> = BTreeMap::new();
    for (i, f) in summary.iter().enumerate() {
        if let Subject::Network(n) = &f.subject {
            if let Ok(net) = crate::model::IpNetwork::parse(n) {
                networks.insert((rule(f), net), i);
            }
        }
    }
    let mut widths: BTreeMap<String, std::collections::BTreeSet<u8>> = BTreeMap::new();
    for (r, n) in networks.keys() {
        widths.entry(r.clone()).or_default().insert(n.bits());
    }
    let mut into: BTreeMap<usize, Vec<(String, u64)>> = BTreeMap::new();
    let mut folded_away = vec![false; summary.len()];
    if !networks.is_empty() {
        for (i, f) in summary.iter().enumerate() {
            let Subject::Address(a) = &f.subject else { continue };
            let Ok(addr) = crate::model::IpNetwork::parse(a) else { continue };
            let r = rule(f);
            let Some(ws) = widths.get(&r) else { continue };
            let holder = ws.iter().filter(|b| **b <= addr.bits()).find_map(|b| networks.get(&(r.clone(), crate::model::IpNetwork::containing(addr.addr(), *b))));
            if let Some(&n) = holder {
                let count = ["failures", "usernames", "attempts"].iter().find_map(|k| f.details.get(*k).and_then(|v| v.as_u64())).unwrap_or(f.event_ids.len() as u64);
                into.entry(n).or_default().push((a.clone(), count));
                folded_away[i] = true;
            }
        }
    }
    let mut folded = 0;
    let mut out = Vec::with_capacity(summary.len());
    for (i, f) in summary.iter().enumerate() {
        if folded_away[i] {
            folded += 1;
            continue;
        }
        let mut f = f.clone();
        if let Some(mut addresses) = into.remove(&i) {
            addresses.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
            let n = addresses.len();
            addresses.truncate(FOLDED_ADDRESSES);
            if let Some(d) = f.details.as_object_mut() {
                d.insert("addresses_folded".into(), serde_json::json!(n));
                d.insert("addresses".into(), serde_json::json!(addresses.iter().map(|(a, c)| serde_json::json!({ "address": a, "count": c })).collect::<Vec<_>>()));
            }
            f.description = format!("{} ({n} of its addresses also crossed the rule on their own)", f.description);
        }
        out.push(f);
    }
    (out, folded)
}

/// What `Core::scan` found, per kind run.
#[derive(Debug, Clone)]
pub struct ScanReport {
    pub kinds: Vec<ScanKind>,
    pub passwords: Option<PasswordScan>,
    pub mfa: Option<MfaScan>,
    pub sessions: Option<SessionScan>,
    pub suspicious: Option<SuspiciousScan>,
    /// The suspicious scan's summary (one per rule and subject).
    pub suspicious_summary: Vec<Finding>,
    pub incidents: IncidentCounts,
}

impl ScanReport {
    /// Findings per kind run (suspicious: its summary).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut c = BTreeMap::new();
        if let Some(p) = &self.passwords {
            c.insert("passwords", p.findings.len() as u64);
        }
        if let Some(m) = &self.mfa {
            c.insert("mfa", m.findings.len() as u64);
        }
        if let Some(s) = &self.sessions {
            c.insert("sessions", s.findings.len() as u64);
        }
        if self.suspicious.is_some() {
            c.insert("suspicious", self.suspicious_summary.len() as u64);
        }
        c
    }
}

/// How long an open session row may go unrefreshed before a scan closes
/// it: the SSH idle timeout, and never less than five refreshes.
pub fn stale_after(idle_timeout: Duration) -> Duration {
    idle_timeout.max(SESSION_REFRESH * 5)
}

impl Core {
    /// Runs `kinds` (in `ScanKind::ALL` order), opens or attaches the
    /// incidents their findings warrant, and records one `scan_completed`
    /// with the counts per kind. `since` is the suspicious scan's start.
    pub async fn scan(&self, kinds: &[ScanKind], since: Option<Millis>, now: Millis, progress: &dyn Progress) -> Result<ScanReport> {
        Ok(self.scan_with(kinds, since, now, progress, |_| ()).await?.0)
    }

    /// `scan`, running `beside` on a thread of its own while the incidents
    /// of the suspicious findings are opened (for a large store the longest
    /// step after the replay, and one that leaves the other cores idle):
    /// it sees the report with every finding and the incidents of the
    /// other kinds counted so far (`incidents` is complete in the report
    /// returned). The command line renders its JSON report there.
    pub async fn scan_with<T: Send>(&self, kinds: &[ScanKind], since: Option<Millis>, now: Millis, progress: &dyn Progress, beside: impl FnOnce(&ScanReport) -> T + Send) -> Result<(ScanReport, T)> {
        let kinds: Vec<ScanKind> = ScanKind::ALL.into_iter().filter(|k| kinds.contains(k)).collect();
        let mut report = ScanReport { kinds: kinds.clone(), passwords: None, mfa: None, sessions: None, suspicious: None, suspicious_summary: Vec::new(), incidents: IncidentCounts::default() };
        for kind in &kinds {
            match kind {
                ScanKind::Passwords => report.passwords = Some(self.scan_passwords(now, progress)?),
                ScanKind::Mfa => report.mfa = Some(self.scan_mfa(progress)?),
                ScanKind::Sessions => report.sessions = Some(self.scan_sessions(now, progress)?),
                ScanKind::Suspicious => {
                    let s = self.run_suspicious_scan(since, now, progress)?;
                    report.suspicious_summary = s.summary();
                    report.suspicious = Some(s);
                }
            }
        }
        // Findings open incidents (or attach to the open ones) but run no
        // playbook: an attack seen over history may be long over, and the
        // sysop decides what to do (`security incidents`). The sysops'
        // first: their findings carry the incident's id.
        if let Some(m) = &mut report.mfa {
            for f in m.findings.iter_mut().filter(|f| f.sysop && f.finding == "below_required_level") {
                let id = self.count_reported(&mut report.incidents, sysop_below_level(f, now), now)?;
                f.incident_id = Some(id);
            }
        }
        let (suspicious, beside) = std::thread::scope(|threads| {
            let report = &report;
            let beside = threads.spawn(move || beside(report));
            let mut counts = IncidentCounts::default();
            let (to_report, folded) = fold_into_networks(&report.suspicious_summary);
            counts.folded = folded;
            let reported = to_report.into_iter().try_for_each(|f| self.count_reported(&mut counts, f, now).map(|_| ()));
            // A panic there is the caller's, as it would be on this thread.
            let beside = beside.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (reported.map(|()| counts), beside)
        });
        let suspicious = suspicious?;
        report.incidents.opened += suspicious.opened;
        report.incidents.attached += suspicious.attached;
        report.incidents.folded += suspicious.folded;
        self.record(scan_event(&report, since, now)).await;
        Ok((report, beside))
    }

    fn count_reported(&self, counts: &mut IncidentCounts, f: Finding, now: Millis) -> Result<i64> {
        let r = self.report_finding(f, now)?;
        if r.created {
            counts.opened += 1;
        } else {
            counts.attached += 1;
        }
        Ok(r.incident_id)
    }

    fn each_account(&self, kind: ScanKind, progress: &dyn Progress, mut f: impl FnMut(&crate::store::scans::ScanAccount)) -> Result<u64> {
        progress.start(kind, self.store.count_users()?);
        let (mut after, mut seen) = (0, 0);
        loop {
            let page = self.store.scan_accounts(after, PAGE)?;
            for a in &page {
                f(a);
                after = a.id;
            }
            seen += page.len() as u64;
            progress.advance(page.len() as u64);
            if page.len() < PAGE {
                break;
            }
        }
        progress.finish(kind);
        Ok(seen)
    }

    /// Old-cost and unreadable hashes, old passwords, weak verdicts.
    pub fn scan_passwords(&self, now: Millis, progress: &dyn Progress) -> Result<PasswordScan> {
        let s = self.settings();
        let (required, max_age) = (s.passwords.iterations, s.passwords.max_age_days);
        let mut findings = Vec::new();
        let accounts = self.each_account(ScanKind::Passwords, progress, |a| {
            let Some(hash) = &a.password_hash else { return };
            match password::iterations_of(hash) {
                Some(i) if i < required => findings.push(PasswordFinding { iterations: Some(i), required_iterations: Some(required), ..PasswordFinding::new(a, "hash_below_iterations") }),
                Some(_) => {}
                None => findings.push(PasswordFinding::new(a, "hash_unreadable")),
            }
            let changed = a.password_changed_at.unwrap_or(a.created_at);
            let age_days = ((now.0 - changed.0).max(0) / 86_400_000) as u32;
            if age_days >= max_age {
                findings.push(PasswordFinding { age_days: Some(age_days), max_age_days: Some(max_age), ..PasswordFinding::new(a, "password_old") });
            }
            if a.password_weak == Some(true) {
                findings.push(PasswordFinding {
                    reasons: Some(a.weak_reasons.clone()),
                    checked_at: a.password_checked_at.map(|t| t.rfc3339()),
                    ..PasswordFinding::new(a, "password_weak")
                });
            }
        })?;
        Ok(PasswordScan { accounts, findings })
    }

    /// Accounts without a second factor; accounts below their level.
    pub fn scan_mfa(&self, progress: &dyn Progress) -> Result<MfaScan> {
        let s = self.settings();
        let mut findings = Vec::new();
        let accounts = self.each_account(ScanKind::Mfa, progress, |a| {
            let mut required = a.imposed_level.max(1);
            for g in &a.groups {
                if let Some(l) = s.group_levels.get(&g.to_lowercase()) {
                    required = required.max(*l);
                }
            }
            // What the account's factors reach: a hardware key 3, a code 2.
            let level = if a.has_webauthn_key { 3 } else if a.otp_enabled { 2 } else { 1 };
            let sysop = a.groups.iter().any(|g| g.eq_ignore_ascii_case(super::playbooks::SYSOPS_GROUP));
            let finding = |finding| MfaFinding { user_id: a.id, username: a.username.clone(), finding, sysop, level, required_level: required, incident_id: None };
            if !a.otp_enabled && !a.has_webauthn_key {
                findings.push(finding("no_second_factor"));
            }
            if level < required {
                findings.push(finding("below_required_level"));
            }
        })?;
        Ok(MfaScan { accounts, findings })
    }

    /// Closes the open sessions nothing refreshed for `stale_after`.
    pub fn scan_sessions(&self, now: Millis, progress: &dyn Progress) -> Result<SessionScan> {
        let stale = stale_after(self.settings().ssh.idle_timeout);
        let open = self.store.count_open_sessions()?;
        progress.start(ScanKind::Sessions, open);
        let reason = "expired: closed by a scan (no sign of life)";
        let closed = self.store.end_stale_sessions(now.minus(stale), reason, |rows| {
            rows.iter()
                .map(|s| {
                    Event::new(EventType::SessionEnded, Severity::Info, format!("session {} of {} closed by a scan: no sign of life since {}", s.id, s.username, s.ended_at.rfc3339()), now)
                        .user(Some(s.user_id), Some(&s.username))
                        .ip(Some(&s.ip))
                        .session(Some(s.id))
                        .detail("reason", "expired")
                        .detail("scan", "sessions")
                        .detail("last_activity_at", s.ended_at.rfc3339())
                })
                .collect()
        })?;
        progress.advance(open);
        progress.finish(ScanKind::Sessions);
        let findings: Vec<SessionFinding> = closed
            .into_iter()
            .map(|s| SessionFinding {
                session_id: s.id,
                user_id: s.user_id,
                username: s.username,
                finding: "session_expired",
                protocol: s.protocol,
                ip: s.ip,
                started_at: s.started_at.rfc3339(),
                last_activity_at: s.last_activity_at.rfc3339(),
                ended_at: s.ended_at.rfc3339(),
            })
            .collect();
        let n = findings.len() as u64;
        Ok(SessionScan { open, closed: n, still_open: open.saturating_sub(n), stale_after_seconds: stale.as_secs(), findings })
    }

    /// The daemon's sign of life for its live sessions (every
    /// `SESSION_REFRESH`), so a scan closes only rows nobody serves.
    pub fn refresh_live_sessions(&self, now: Millis) -> Result<()> {
        let ids: Vec<i64> = self.live.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        Ok(self.store.touch_sessions(&ids, now)?)
    }

    /// After a right password at login: its verdict against the policy of
    /// this moment (reuse aside) and the common list, taken on a blocking
    /// thread beside the login's answer and stored as the verdict alone.
    pub(super) fn judge_password_beside(&self, user: &User, password: &Secret<String>, now: Millis) {
        let p = &self.settings().passwords;
        let policy = Policy { min_length: p.min_length, max_length: p.max_length, min_strength: p.min_strength, history: 0 };
        let (store, pw, user_id, username, email, changed) =
            (self.store.clone(), password.clone(), user.id, user.username.clone(), user.email.clone(), user.password_changed_at);
        tokio::task::spawn_blocking(move || {
            let ctx = password::Context { username: &username, email: email.as_deref(), history: &[] };
            let reasons: Vec<&'static str> = match policy.check(pw.expose(), &ctx) {
                Ok(()) => Vec::new(),
                Err(violations) => violations.iter().map(|v| v.code()).collect(),
            };
            if let Err(e) = store.set_password_verdict(user_id, changed, !reasons.is_empty(), &reasons, now) {
                tracing::warn!(error = %e, user = user_id, "could not record a password's verdict");
            }
        });
    }
}

fn sysop_below_level(f: &MfaFinding, now: Millis) -> Finding {
    let name = crate::model::escape_control(&f.username);
    Finding {
        incident_type: IncidentType::SysopFactorLevel,
        subject: Subject::Account { user_id: Some(f.user_id), username: f.username.clone() },
        severity: IncidentSeverity::High,
        title: format!("sysop {name} is below the required factor level ({} of {})", f.level, f.required_level),
        description: format!(
            "A scan found that {name}, a member of the sysops group, has factors reaching level {} while the policy requires {}: enroll the missing factor or change the group's policy.",
            f.level, f.required_level
        ),
        event_ids: Vec::new(),
        first_event_at: now,
        details: serde_json::json!({ "rule": SYSOP_BELOW_LEVEL_RULE, "scan": "mfa", "level": f.level, "required_level": f.required_level }),
    }
}

fn scan_event(r: &ScanReport, since: Option<Millis>, now: Millis) -> Event {
    let counts = r.counts();
    let total: u64 = counts.values().sum();
    let names: Vec<&str> = r.kinds.iter().map(|k| k.as_str()).collect();
    let mut e = Event::new(
        EventType::ScanCompleted,
        if total > 0 { Severity::Medium } else { Severity::Info },
        format!("scan ({}): {total} finding(s)", names.join(", ")),
        now,
    )
    .detail("scan", names.join(","))
    .detail("counts", serde_json::to_value(&counts).unwrap_or_default())
    .detail("findings", total)
    .detail("incidents_opened", r.incidents.opened)
    .detail("incidents_attached", r.incidents.attached)
    .detail("findings_folded", r.incidents.folded);
    if let Some(s) = &r.suspicious {
        let mut by_type: BTreeMap<&'static str, u64> = BTreeMap::new();
        for f in &r.suspicious_summary {
            *by_type.entry(f.incident_type.as_str()).or_insert(0) += 1;
        }
        e = e
            .detail("since", since.unwrap_or(s.since).rfc3339())
            .detail("events_read", s.events_read)
            .detail("by_type", serde_json::to_value(&by_type).unwrap_or_default())
            .detail("password_spraying", "not scanned: password tags live only in the daemon's memory");
    }
    if let Some(s) = &r.sessions {
        e = e.detail("sessions_closed", s.closed).detail("sessions_still_open", s.still_open);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::accounts::Actor;
    use crate::store::sessions::NewSession;

    const PW: &str = "Correct-Horse-Battery-9";
    const T0: Millis = Millis(1_800_000_000_000);
    const DAY_MS: i64 = 86_400_000;

    fn core(dir: &std::path::Path) -> Core {
        crate::core::test_core(dir, "groups: {\n  sysops: {\n    require_level: 2\n  }\n  staff: {\n    require_level: 1\n  }\n}\n")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt")
    }

    fn add(core: &Core, rt: &tokio::runtime::Runtime, name: &str, groups: &[&str], now: Millis) -> User {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        rt.block_on(core.add_user(name, Some(&format!("{name}@example.org")), &Secret::new(PW.into()), &groups, &Actor::Cli("t".into()), now)).expect("user")
    }

    /// Enrolls a one-time code through the mailed link, as a user does.
    fn enroll(core: &Core, rt: &tokio::runtime::Runtime, user: &User, now: Millis) {
        rt.block_on(core.start_otp_enrollment(user, crate::core::mfa::Method::Totp, &Actor::Cli("t".into()), now)).expect("enroll");
        let mail = core.due_mail(now, 10).expect("mail");
        let link = mail.iter().rev().find_map(|m| m.body.text.lines().find(|l| l.contains("/otp/enroll/"))).expect("link").trim().to_owned();
        let token = link.rsplit('/').next().expect("token").to_owned();
        let secret = crate::core::otp::base32_decode(&core.otp_enrollment_view(&token, now).expect("view").secret_base32).expect("base32");
        let code = crate::core::otp::hotp(crate::model::OtpAlgorithm::Sha1, &secret, crate::core::otp::step_of(now.0 / 1000, 30), 6);
        rt.block_on(core.otp_confirm(&token, &code, now)).expect("confirm");
    }

    fn scan_events(core: &Core) -> Vec<crate::model::StoredEvent> {
        core.events(&crate::store::events::EventFilter { event_type: Some(EventType::ScanCompleted), limit: 10, ..Default::default() }).expect("events")
    }

    /// Old-cost and unreadable hashes, an old password, a weak verdict:
    /// exactly those findings, none for the sound account.
    #[test]
    fn the_password_scan_finds_exactly_the_seeded_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path());
        let rt = rt();
        let now = T0.plus(Duration::from_secs(3600));
        let _fine = add(&core, &rt, "fine", &[], T0);
        let oldcost = add(&core, &rt, "oldcost", &[], T0);
        let old = oldcost.password_hash.as_ref().expect("hash").expose().clone();
        core.store.rehash_password(oldcost.id, &old, &password::hash(PW, 100)).expect("old cost");
        let oldpw = add(&core, &rt, "oldpw", &[], T0);
        core.store.set_password(oldpw.id, &password::hash(PW, 1000), 5, Millis(T0.0 - 200 * DAY_MS)).expect("old password");
        let weak = add(&core, &rt, "weak", &[], T0);
        assert!(core.store.set_password_verdict(weak.id, weak.password_changed_at, true, &["too_short", "common"], T0.plus(Duration::from_secs(60))).expect("verdict"));
        let strong = add(&core, &rt, "strong", &[], T0);
        assert!(core.store.set_password_verdict(strong.id, strong.password_changed_at, false, &[], T0).expect("verdict"));
        let broken = add(&core, &rt, "broken", &[], T0);
        let old = broken.password_hash.as_ref().expect("hash").expose().clone();
        core.store.rehash_password(broken.id, &old, "$pbkdf2-sha256$garbage").expect("broken");

        let r = rt.block_on(core.scan(&[ScanKind::Passwords], None, now, &NoProgress)).expect("scan");
        let p = r.passwords.expect("passwords");
        assert_eq!(p.accounts, 6);
        let base = |u: &User, finding| PasswordFinding { user_id: u.id, username: u.username.clone(), finding, iterations: None, required_iterations: None, age_days: None, max_age_days: None, reasons: None, checked_at: None };
        assert_eq!(
            p.findings,
            vec![
                PasswordFinding { iterations: Some(100), required_iterations: Some(1000), ..base(&oldcost, "hash_below_iterations") },
                PasswordFinding { age_days: Some(200), max_age_days: Some(90), ..base(&oldpw, "password_old") },
                PasswordFinding { reasons: Some(vec!["too_short".into(), "common".into()]), checked_at: Some(T0.plus(Duration::from_secs(60)).rfc3339()), ..base(&weak, "password_weak") },
                base(&broken, "hash_unreadable"),
            ]
        );
        assert!(r.mfa.is_none() && r.sessions.is_none() && r.suspicious.is_none());
        assert_eq!(r.incidents, IncidentCounts::default(), "weak passwords open no incident");
        let done = scan_events(&core);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].details["scan"], "passwords");
        assert_eq!(done[0].details["counts"], serde_json::json!({ "passwords": 4 }));
        // A new password has no verdict until its next login.
        rt.block_on(core.change_password(&weak, &Secret::new("Another-Quiet-Harbour-77".into()), &Actor::Cli("t".into()), now)).expect("change");
        let r = core.scan_passwords(now, &NoProgress).expect("scan");
        assert!(!r.findings.iter().any(|f| f.username == "weak"), "{:?}", r.findings);
    }

    /// Accounts without a code; a sysop and an account with an imposed
    /// hardware-key level below their level. Only the sysop opens an
    /// incident (high), once: the next scan attaches to it.
    #[test]
    fn the_mfa_scan_finds_missing_factors_and_opens_an_incident_for_a_sysop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path());
        let rt = rt();
        let plain = add(&core, &rt, "plain", &["staff"], T0);
        let sysop = add(&core, &rt, "root", &["sysops"], T0);
        let enrolled = add(&core, &rt, "ada", &["sysops"], T0);
        enroll(&core, &rt, &enrolled, T0);
        let keyless = add(&core, &rt, "kim", &[], T0);
        enroll(&core, &rt, &keyless, T0);
        core.store.raise_imposed_level(keyless.id, 3).expect("level 3");

        let r = rt.block_on(core.scan(&[ScanKind::Mfa], None, T0, &NoProgress)).expect("scan");
        let m = r.mfa.expect("mfa");
        assert_eq!(m.accounts, 4);
        let f = |u: &User, finding, sysop, level, required_level, incident_id| MfaFinding { user_id: u.id, username: u.username.clone(), finding, sysop, level, required_level, incident_id };
        let incident = m.findings.iter().find_map(|x| x.incident_id).expect("an incident");
        assert_eq!(
            m.findings,
            vec![
                f(&plain, "no_second_factor", false, 1, 1, None),
                f(&sysop, "no_second_factor", true, 1, 2, None),
                f(&sysop, "below_required_level", true, 1, 2, Some(incident)),
                f(&keyless, "below_required_level", false, 2, 3, None),
            ]
        );
        assert_eq!(r.incidents, IncidentCounts { opened: 1, attached: 0, folded: 0 });
        let i = core.store.incident(incident).expect("read").expect("incident");
        assert_eq!((i.incident_type, i.severity, i.subject.key()), (IncidentType::SysopFactorLevel, IncidentSeverity::High, format!("account:{}", sysop.id)));
        assert_eq!(i.title, "sysop root is below the required factor level (1 of 2)");
        // The next scan attaches to the open incident.
        let again = rt.block_on(core.scan(&[ScanKind::Mfa], None, T0.plus(Duration::from_secs(60)), &NoProgress)).expect("scan");
        assert_eq!(again.incidents, IncidentCounts { opened: 0, attached: 1, folded: 0 });
        let done = scan_events(&core);
        assert_eq!(done[0].details["counts"], serde_json::json!({ "mfa": 4 }));
        assert_eq!(done[0].details["incidents_attached"], 1);
    }

    /// Open rows nothing refreshed for the idle timeout are closed at their
    /// last sign of life with a `session_ended` each; live, refreshed and
    /// ended rows are left alone.
    #[test]
    fn the_session_scan_closes_exactly_the_stale_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path());
        let rt = rt();
        let alice = add(&core, &rt, "alice", &[], T0);
        let start = |at: Millis| {
            core.store
                .start_session(&NewSession { user_id: alice.id, device_id: None, protocol: "ssh", ip: "192.0.2.7", client_version: "v", auth_method: "password", factors: 1, connected_at: at, now: at })
                .expect("session")
        };
        let now = T0.plus(Duration::from_secs(10 * 3600));
        let stale = start(T0);
        let fresh = start(now.minus(Duration::from_secs(600)));
        let refreshed = start(T0);
        let ended = start(T0);
        core.store.end_session(ended, "logout", T0.plus(Duration::from_secs(5))).expect("end");
        // The daemon's sign of life for the one it serves.
        core.watch_session(refreshed, crate::core::sessions::LiveSession::new());
        core.refresh_live_sessions(now.minus(Duration::from_secs(30))).expect("refresh");

        let r = rt.block_on(core.scan(&[ScanKind::Sessions], None, now, &NoProgress)).expect("scan");
        let s = r.sessions.expect("sessions");
        assert_eq!((s.open, s.closed, s.still_open, s.stale_after_seconds), (3, 1, 2, 3600));
        assert_eq!(
            s.findings,
            vec![SessionFinding {
                session_id: stale,
                user_id: alice.id,
                username: "alice".into(),
                finding: "session_expired",
                protocol: "ssh".into(),
                ip: "192.0.2.7".into(),
                started_at: T0.rfc3339(),
                last_activity_at: T0.rfc3339(),
                ended_at: T0.rfc3339(),
            }]
        );
        let row = core.store.session(stale).expect("read").expect("row");
        assert_eq!((row.ended_at.as_deref(), row.end_reason.as_deref()), (Some(T0.rfc3339().as_str()), Some("expired: closed by a scan (no sign of life)")));
        assert!(core.store.session(fresh).expect("read").expect("row").ended_at.is_none());
        assert!(core.store.session(refreshed).expect("read").expect("row").ended_at.is_none());
        let ended_events = core.events(&crate::store::events::EventFilter { event_type: Some(EventType::SessionEnded), limit: 10, ..Default::default() }).expect("events");
        assert_eq!(ended_events.len(), 1);
        assert_eq!((ended_events[0].session_id, ended_events[0].details["reason"].as_str()), (Some(stale), Some("expired")));
        // Nothing left to close.
        let again = core.scan_sessions(now, &NoProgress).expect("scan");
        assert_eq!((again.open, again.closed, again.still_open), (2, 0, 2));
    }

    /// Five failed passwords on one account within the window: one
    /// brute-force finding, its incident opened, and the counts in the
    /// `scan_completed` of a scan of every kind.
    #[test]
    fn the_suspicious_scan_finds_the_seeded_brute_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path());
        let rt = rt();
        let alice = add(&core, &rt, "alice", &[], T0);
        let failures: Vec<Event> = (0..5)
            .map(|i| {
                Event::new(EventType::LoginFailed, Severity::Low, "password login failed: bad password", T0.plus(Duration::from_secs(10 * i)))
                    .user(Some(alice.id), Some("alice"))
                    .ip(Some("198.51.100.9"))
                    .detail("reason", "bad_password")
            })
            .collect();
        core.store.insert_events(&failures).expect("seed");
        let now = T0.plus(Duration::from_secs(120));
        let r = rt.block_on(core.scan(&ScanKind::ALL, Some(T0.minus(Duration::from_secs(60))), now, &NoProgress)).expect("scan");
        let kinds: Vec<(&str, &str)> = r.suspicious_summary.iter().map(|f| (f.incident_type.as_str(), f.details["rule"].as_str().unwrap_or(""))).collect();
        assert_eq!(kinds, vec![("brute_force_account", "brute_force_account")], "{:#?}", r.suspicious_summary);
        assert_eq!(r.suspicious_summary[0].subject, Subject::Account { user_id: Some(alice.id), username: "alice".into() });
        assert_eq!(r.incidents, IncidentCounts { opened: 1, attached: 0, folded: 0 });
        let done = scan_events(&core);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].details["scan"], "passwords,mfa,sessions,suspicious");
        assert_eq!(done[0].details["counts"], serde_json::json!({ "passwords": 0, "mfa": 1, "sessions": 0, "suspicious": 1 }));
        assert_eq!(done[0].details["by_type"], serde_json::json!({ "brute_force_account": 1 }));
    }

    /// Address findings go into their network's finding of the same rule;
    /// another rule's, or an address outside every such network, keep
    /// their own.
    #[test]
    fn address_findings_fold_into_their_networks_finding_of_the_same_rule() {
        let f = |subject: Subject, rule: &str, failures: u64, id: i64| {
            crate::core::detect::finding(IncidentType::BruteForceIp, subject, IncidentSeverity::Medium, "t".into(), "d".into(), vec![id], T0, serde_json::json!({ "rule": rule, "failures": failures }))
        };
        let summary = vec![
            f(Subject::Address("10.0.1.5".into()), "slow_brute_force", 120, 1),
            f(Subject::Network("10.0.1.0/24".into()), "slow_brute_force", 400, 2),
            f(Subject::Address("10.0.1.6".into()), "slow_brute_force", 150, 3),
            f(Subject::Address("10.0.2.7".into()), "slow_brute_force", 110, 4),
            f(Subject::Address("10.0.1.8".into()), "brute_force_ip", 10, 5),
        ];
        let (out, folded) = fold_into_networks(&summary);
        assert_eq!(folded, 2);
        let subjects: Vec<String> = out.iter().map(|f| f.subject.key()).collect();
        assert_eq!(subjects, ["network:10.0.1.0/24", "address:10.0.2.7", "address:10.0.1.8"]);
        assert_eq!(out[0].details["addresses_folded"], 2);
        assert_eq!(out[0].details["addresses"], serde_json::json!([{ "address": "10.0.1.6", "count": 150 }, { "address": "10.0.1.5", "count": 120 }]));
        assert!(out[0].description.ends_with("(2 of its addresses also crossed the rule on their own)"), "{}", out[0].description);
        // Nothing to fold into: everything is reported as it is.
        let (alone, none) = fold_into_networks(&summary[2..]);
        assert_eq!((alone.len(), none), (3, 0));
    }
}
