//! The first screens after login: a forced password change when one is
//! due, the welcome art with the previous login, `P` to change the
//! password, `Q` to log off.

use super::prompt::{read_line, Line};
use super::pager::count;
use super::{crlf, Ending, Terminal};
use crate::core::accounts::{Actor, PasswordStatus};
use crate::core::login::Authenticated;
use crate::core::{Core, Error};
use crate::model::{escape_control, Millis, Secret};
use std::time::Duration;

pub struct Welcome<'a> {
    pub core: &'a Core,
    pub auth: &'a Authenticated,
    pub ip: String,
    pub idle: Duration,
}

/// The welcome module: a forced password change when one is due, then
/// the user's previous login and the password-age notice. `Some` ends the
/// session.
pub async fn greet<T: Terminal>(term: &mut T, w: &Welcome<'_>) -> std::io::Result<Option<Ending>> {
    let status = w.core.password_status(&w.auth.user, Millis::now());
    if status == PasswordStatus::MustChange {
        term.write(&crlf("\n  Your password must be changed before you go on.\n\n")).await?;
        match change_password(term, w).await? {
            Change::Done => {}
            Change::GaveUp => {
                term.write(&crlf("\n  The password was not changed. Logging you off.\n")).await?;
                return Ok(Some(Ending::PasswordChangeRequired));
            }
            Change::Ended(e) => return Ok(Some(e)),
        }
    }
    let mut screen = format!("\n  Welcome, {}.\n", escape_control(&w.auth.user.username));
    let clock = w.core.settings().clock.clone();
    let now = Millis::now();
    match &w.auth.previous_login {
        Some((at, ip)) => screen.push_str(&format!("  Last login: {} from {}\n", clock.show_ago(*at, now), escape_control(ip))),
        None => screen.push_str("  This is your first login.\n"),
    }
    if let Some((since, _)) = &w.auth.previous_login {
        match w.core.since_last_login(&w.auth.user, *since, w.auth.device_id, now) {
            Ok(away) => screen.push_str(&while_away(&away, &clock)),
            Err(e) => tracing::warn!(error = %e, "reading what happened since the last login"),
        }
    }
    if let PasswordStatus::Old { age_days, max_days } = status {
        screen.push_str(&format!("\n  Your password is {age_days} days old (the limit is {max_days}). Please change it from your account menu.\n"));
    }
    let width = term.size().0 as usize;
    term.write(&crlf(&super::pager::wrap(&screen, if width >= 20 { width } else { 80 }))).await?;
    Ok(None)
}

/// The lines of the welcome screen on what happened since the previous
/// login (empty when nothing did). Device names and addresses are escaped:
/// a client names itself.
/// Counts read as words through `pager::count` ("1 failed login attempt").
pub(super) fn while_away(a: &crate::core::accounts::SinceLastLogin, clock: &crate::config::time::Clock) -> String {
    let mut out = String::new();
    if a.failures > 0 {
        out.push_str(&format!("  {} since your last login", count(a.failures.max(0) as u64, "failed login attempt", "failed login attempts")));
        match &a.last_failure {
            Some((at, Some(ip))) => out.push_str(&format!(", the last from {} on {}.\n", escape_control(ip), clock.show(*at))),
            Some((at, None)) => out.push_str(&format!(", the last on {}.\n", clock.show(*at))),
            None => out.push_str(".\n"),
        }
    }
    if a.new_device_count > 0 {
        let names: Vec<String> = a.new_devices.iter().map(|n| escape_control(n)).collect();
        let more = a.new_device_count.saturating_sub(names.len());
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        out.push_str(&format!(
            "  {} signed in since your last login: {}{more}. Not you? Change your password and remove it under Devices in the account menu.\n",
            if a.new_device_count == 1 { "A new device".to_owned() } else { count(a.new_device_count as u64, "new device", "new devices") },
            names.join(", ")
        ));
    }
    if a.backup_codes_used > 0 {
        let left = a.backup_codes_left.unwrap_or(0);
        let used = if a.backup_codes_used == 1 { "A backup code was".to_owned() } else { format!("{} backup codes were", a.backup_codes_used) };
        let tail = if left == 0 { " Make new ones from the account menu." } else { "" };
        out.push_str(&format!("  {used} used since your last login; {} left.{tail}\n", count(u64::from(left), "is", "are")));
    }
    if let Some(days) = a.password_days_left {
        out.push_str(&format!("  Your password reaches its maximum age in {}: change it from the account menu.\n", count(u64::from(days), "day", "days")));
    }
    out
}

/// The account menu's "change password" (after the current password was
/// checked): `Ok(Ok(true))` when it changed.
pub async fn change_password_interactive<T: Terminal>(term: &mut T, w: &Welcome<'_>) -> std::io::Result<Result<bool, Ending>> {
    match change_password(term, w).await? {
        Change::Done => Ok(Ok(true)),
        Change::GaveUp => {
            term.write(&crlf("  Your password is unchanged.\n")).await?;
            Ok(Ok(false))
        }
        Change::Ended(e) => Ok(Err(e)),
    }
}

pub(super) enum Change {
    Done,
    GaveUp,
    Ended(Ending),
}

/// Asks for a new password twice, up to three times, and sets it under the
/// policy. The messages name every failed rule; an empty entry and Esc
/// say what they did.
pub(super) async fn change_password<T: Terminal>(term: &mut T, w: &Welcome<'_>) -> std::io::Result<Change> {
    for _ in 0..3 {
        let first = match read_line(term, "  New password: ", true, w.idle).await? {
            Line::Text(t) if t.is_empty() => {
                term.write(&crlf("  Nothing was entered (Esc cancels).\n\n")).await?;
                continue;
            }
            Line::Text(t) => t,
            Line::Cancelled => {
                term.write(&crlf("  Cancelled.\n")).await?;
                return Ok(Change::GaveUp);
            }
            Line::Idle => return Ok(Change::Ended(Ending::IdleTimeout)),
            Line::Closed => return Ok(Change::Ended(Ending::Disconnected)),
        };
        let second = match read_line(term, "  Repeat it: ", true, w.idle).await? {
            Line::Text(t) => t,
            Line::Cancelled => {
                term.write(&crlf("  Cancelled.\n")).await?;
                return Ok(Change::GaveUp);
            }
            Line::Idle => return Ok(Change::Ended(Ending::IdleTimeout)),
            Line::Closed => return Ok(Change::Ended(Ending::Disconnected)),
        };
        if first != second {
            term.write(&crlf("  The two passwords differ.\n\n")).await?;
            continue;
        }
        let actor = Actor::User { id: w.auth.user.id, session: Some(w.auth.session_id), ip: w.ip.clone() };
        match w.core.change_password(&w.auth.user, &Secret::new(first), &actor, Millis::now()).await {
            Ok(()) => {
                term.write(&crlf("  Your password has been changed.\n")).await?;
                return Ok(Change::Done);
            }
            Err(Error::PasswordRejected(why)) => {
                term.write(&crlf(&format!("  {}.\n\n", escape_control(&why)))).await?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "changing a password from a session");
                term.write(&crlf("  The password cannot be changed right now.\n\n")).await?;
                return Ok(Change::GaveUp);
            }
        }
    }
    Ok(Change::GaveUp)
}

#[cfg(test)]
mod tests {
    use super::super::prompt::tests::{block_on, Script};
    use super::*;
    use crate::core::EventSink;
    use crate::store::Store;
    use std::sync::Arc;

    fn core(dir: &std::path::Path) -> Core {
        let settings = crate::config::load::from_text("timezone: UTC\npasswords: {\n  iterations: 1000\n}\n", "test.hjson", dir).expect("settings");
        let store = Arc::new(Store::open(&dir.join("t.db")).expect("open"));
        store.migrate(None).expect("migrate");
        Core::new(store.clone(), settings, EventSink::Direct(store), crate::core::secrets::Keyring::from_key(&[1; 32]))
    }

    fn auth(core: &Core, must_reset: bool, previous: Option<(Millis, String)>) -> Authenticated {
        let user = block_on(core.add_user("alice", None, &Secret::new("Correct-Horse-Battery-9".into()), &[], &Actor::Cli("t".into()), Millis::now())).expect("user");
        if must_reset {
            core.store.set_must_reset(user.id, true).expect("flag");
        }
        let user = core.find_user("alice").expect("find");
        Authenticated { user, session_id: 1, device_id: 1, factors: 1, required_level: 1, previous_login: previous, risk: None, key_enrollment_only: false }
    }

    fn check(must_reset: bool, previous: Option<(Millis, String)>, input: &[&[u8]], want_end: Option<Ending>, want_text: &[&str]) -> Core {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = core(dir.path());
        let a = auth(&core, must_reset, previous);
        let mut t = Script::new(input);
        let w = Welcome { core: &core, auth: &a, ip: "127.0.0.1".into(), idle: Duration::from_secs(1) };
        let end = block_on(greet(&mut t, &w)).expect("run");
        let text = t.text();
        assert_eq!(end, want_end, "{text}");
        for want in want_text {
            assert!(text.contains(want), "missing {want:?} in {text:?}");
        }
        assert!(!text.replace("\r\n", "").contains('\n'), "bare newline in output");
        core
    }

    #[test]
    fn welcome_transcripts() {
        check(false, None, &[], None, &["Welcome, alice.", "This is your first login."]);
        check(false, Some((Millis(1_764_072_000_000), "127.0.0.1".into())), &[], None, &["Last login: 2025-11-25 12:00 (", " ago) from 127.0.0.1"]);
    }

    #[test]
    fn forced_change_names_the_failed_rules_then_succeeds() {
        let core = check(
            true,
            None,
            &[b"short\r", b"short\r", b"Correct-Horse-Battery-9\r", b"Correct-Horse-Battery-9\r", b"Maple-Quartz-Violin-77\r", b"Maple-Quartz-Violin-77\r"],
            None,
            &["must be changed", "must be at least 12 characters (has 5)", "was used recently", "Your password has been changed.", "Welcome, alice."],
        );
        let u = core.find_user("alice").expect("user");
        assert!(!u.must_reset_password);
    }

    #[test]
    fn forced_change_refused_logs_off() {
        check(true, None, &[b"\x1b"], Some(Ending::PasswordChangeRequired), &["Cancelled.", "was not changed"]);
        check(true, None, &[b"\r", b"\r", b"\r"], Some(Ending::PasswordChangeRequired), &["Nothing was entered (Esc cancels).", "was not changed"]);
        check(true, None, &[b"Maple-Quartz-Violin-77\r", b"Maple-Quartz-Violin-78\r", b"x\r", b"y\r", b"a\r", b"b\r"], Some(Ending::PasswordChangeRequired), &["The two passwords differ."]);
    }

    #[test]
    fn while_away_lines() {
        use crate::core::accounts::SinceLastLogin;
        let at = Millis(1_764_072_000_000);
        let cases: Vec<(SinceLastLogin, &str)> = vec![
            (SinceLastLogin::default(), ""),
            (SinceLastLogin { failures: 1, last_failure: Some((at, Some("203.0.113.9".into()))), ..Default::default() },
             "  1 failed login attempt since your last login, the last from 203.0.113.9 on 2025-11-25 12:00.\n"),
            (SinceLastLogin { failures: 3, last_failure: Some((at, None)), ..Default::default() },
             "  3 failed login attempts since your last login, the last on 2025-11-25 12:00.\n"),
            (SinceLastLogin { new_devices: vec!["OpenSSH 9.2 \u{1b}[2J".into()], new_device_count: 1, ..Default::default() },
             "  A new device signed in since your last login: OpenSSH 9.2 \\x1b[2J. Not you? Change your password and remove it under Devices in the account menu.\n"),
            (SinceLastLogin { new_devices: vec!["a".into(), "b".into(), "c".into()], new_device_count: 5, ..Default::default() },
             "  5 new devices signed in since your last login: a, b, c and 2 more. Not you? Change your password and remove it under Devices in the account menu.\n"),
            (SinceLastLogin { backup_codes_used: 1, backup_codes_left: Some(7), ..Default::default() }, "  A backup code was used since your last login; 7 are left.\n"),
            (SinceLastLogin { backup_codes_used: 2, backup_codes_left: Some(1), ..Default::default() }, "  2 backup codes were used since your last login; 1 is left.\n"),
            (SinceLastLogin { backup_codes_used: 1, backup_codes_left: Some(0), ..Default::default() }, "  A backup code was used since your last login; 0 are left. Make new ones from the account menu.\n"),
            (SinceLastLogin { password_days_left: Some(1), ..Default::default() }, "  Your password reaches its maximum age in 1 day: change it from the account menu.\n"),
        ];
        for (away, want) in cases {
            assert_eq!(while_away(&away, &crate::config::time::Clock::utc()), want, "{away:?}");
        }
    }
}
