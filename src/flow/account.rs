//! The account menu: change the password, enable or disable one-time codes
//! (by emailed link; disabling needs a session that passed the code),
//! regenerate backup codes, see own sessions, devices (and trust, untrust
//! or remove one), hardware keys (add one by emailed link, rename, remove)
//! and recent events.

use super::session::{actor, esc, Session};
use super::prompt::{read_line, read_visible_line, Line};
use super::pager::count;
use super::welcome::{change_password_interactive, Welcome};
use super::{crlf, Ending, Terminal};
use crate::core::mfa::Method;
use crate::model::{Millis, Secret};

/// Wrong current passwords one session may give before it is ended.
const MAX_WRONG_CURRENT: u32 = 3;

const MENU: &str = "
  [C] Change your password
  [O] One-time codes: set up or turn off
  [B] New backup codes
  [S] Your sessions (and end one)
  [D] Your devices
  [K] Hardware keys: add, rename, remove
  [E] Your recent security events
  [Q] Back

  Your choice: ";

/// `Some` ends the session.
pub async fn run<T: Terminal>(term: &mut T, s: &mut Session<'_>) -> std::io::Result<Option<Ending>> {
    let mut wrong_current = 0;
    loop {
        term.write(&crlf(MENU)).await?;
        let key = loop {
            match term.read(s.idle).await {
                Err(_) => return Ok(Some(Ending::IdleTimeout)),
                Ok(None) => return Ok(Some(Ending::Disconnected)),
                // Escape sequences (cursor keys) are ignored; a lone Esc is "back".
                Ok(Some(bytes)) if bytes.len() > 1 && bytes[0] == 0x1b => {}
                Ok(Some(bytes)) => {
                    if let Some(k) = bytes.iter().map(|b| (*b as char).to_ascii_uppercase()).find(|c| "COBSDKEQ\x1b".contains(*c)) {
                        break k;
                    }
                    // Enter or another key: say what works rather than wait in silence.
                    say(term, "\n  Press one of the letters in brackets (Q or Esc goes back).\n  Your choice: ").await?;
                }
            }
        };
        term.write(&crlf(&format!("{}\n", if key == '\x1b' { 'Q' } else { key }))).await?;
        let now = Millis::now();
        match key {
            'C' => {
                // The current password first (OWASP ASVS 2.1.6): a session
                // left open must not be enough to take the account over.
                let current = match read_line(term, "  Current password: ", true, s.idle).await? {
                    Line::Text(t) if t.is_empty() => {
                        say(term, "  Nothing was entered: your password is unchanged.\n").await?;
                        continue;
                    }
                    Line::Text(t) => t,
                    Line::Cancelled => {
                        say(term, "  Cancelled: your password is unchanged.\n").await?;
                        continue;
                    }
                    Line::Idle => return Ok(Some(Ending::IdleTimeout)),
                    Line::Closed => return Ok(Some(Ending::Disconnected)),
                };
                match s.core.verify_current_password(&s.auth, s.ip, &Secret::new(current), now).await {
                    Ok(true) => {}
                    Ok(false) => {
                        wrong_current += 1;
                        if wrong_current >= MAX_WRONG_CURRENT {
                            say(term, "  That is not your current password. Too many wrong tries: logging you off.\n").await?;
                            return Ok(Some(Ending::WrongCurrentPassword));
                        }
                        say(term, "  That is not your current password: your password is unchanged.\n").await?;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "checking a current password");
                        say(term, "  Your password cannot be checked right now: it is unchanged.\n").await?;
                        continue;
                    }
                }
                let w = Welcome { core: s.core, auth: &s.auth, ip: s.ip.to_string(), idle: s.idle };
                match change_password_interactive(term, &w).await? {
                    Ok(true) => s.refresh_user(),
                    Ok(false) => {}
                    Err(e) => return Ok(Some(e)),
                }
            }
            'O' => {
                let status = s.core.mfa_status(&s.auth.user, now);
                match status {
                    Ok(st) if st.enabled => {
                        if s.auth.factors < 2 {
                            say(term, "  Turning codes off needs a login that passed the code. Log in again with your code.\n").await?;
                            continue;
                        }
                        match read_visible_line(s, term, "  Type OFF to turn one-time codes off: ", "otp_off").await? {
                            Line::Text(t) if t.trim() == "OFF" => match s.core.disable_otp(&s.auth.user, &actor(s), now).await {
                                Ok(_) => say(term, "  One-time codes are off for your account.\n").await?,
                                Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
                            },
                            Line::Idle => return Ok(Some(Ending::IdleTimeout)),
                            Line::Closed => return Ok(Some(Ending::Disconnected)),
                            _ => say(term, "  Nothing changed.\n").await?,
                        }
                    }
                    Ok(_) => match s.core.start_otp_enrollment(&s.auth.user, Method::Totp, &actor(s), now).await {
                        Ok(to) => say(term, &format!("  A link to set up your authenticator app was mailed to {}.\n  It works once, within {}.\n", esc(&to), crate::core::mail::humanize(s.core.settings().mfa.link_ttl))).await?,
                        Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
                    },
                    Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
                }
            }
            'B' => {
                if s.auth.factors < 2 {
                    say(term, "  New backup codes need a login that passed the code.\n").await?;
                    continue;
                }
                match read_visible_line(s, term, "  New codes replace all your backup codes; the old ones stop working.\r\n  Type YES to make new ones: ", "backup_codes").await? {
                    Line::Text(t) if t.trim() == "YES" => {}
                    Line::Text(t) if t.trim().is_empty() => {
                        say(term, "  Nothing was entered: your backup codes are unchanged.\n").await?;
                        continue;
                    }
                    Line::Text(_) => {
                        say(term, "  Not confirmed: your backup codes are unchanged.\n").await?;
                        continue;
                    }
                    Line::Cancelled => {
                        say(term, "  Cancelled: your backup codes are unchanged.\n").await?;
                        continue;
                    }
                    Line::Idle => return Ok(Some(Ending::IdleTimeout)),
                    Line::Closed => return Ok(Some(Ending::Disconnected)),
                }
                match s.core.regenerate_backup_codes(&s.auth.user, &actor(s), now).await {
                    Ok(codes) => {
                        let mut text = String::from("  Your new backup codes (each works once; the old ones no longer work):\n\n");
                        for c in codes {
                            text.push_str(&format!("    {c}\n"));
                        }
                        text.push_str("\n  Write them down now: they are not shown again.\n");
                        say(term, &text).await?;
                    }
                    Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
                }
            }
            'S' => match s.core.sessions(Some(s.auth.user.id), 10) {
                Ok(list) => {
                    let rows: Vec<String> = list
                        .into_iter()
                        .map(|x| {
                            let state = match (&x.ended_at, x.id == s.auth.session_id) {
                                (_, true) => "this session".to_string(),
                                (Some(t), _) => format!("ended {} ({})", when(s, t), x.end_reason.unwrap_or_default()),
                                (None, _) => "open".to_string(),
                            };
                            format!("    #{:<5} {}  from {:<15} {}  {}", x.id, when(s, &x.started_at), esc(&x.ip), esc(&x.auth_method), state)
                        })
                        .collect();
                    if let Some(end) = paged(term, s, "  Your last sessions:", &rows).await? {
                        return Ok(Some(end));
                    }
                    match read_visible_line(s, term, "  End which session (number, Enter for none)? ", "end_session").await? {
                        Line::Text(t) if !t.trim().is_empty() => match t.trim().trim_start_matches('#').parse::<i64>() {
                            Ok(id) if id == s.auth.session_id => say(term, "  That is this session: use Q to log off.\n").await?,
                            Ok(id) => match s.core.revoke_own_session(&s.auth.user, id, &actor(s), now).await {
                                Ok(true) => say(term, &format!("  Session #{id} has been ended.\n")).await?,
                                Ok(false) => say(term, &format!("  #{id} is not one of your open sessions.\n")).await?,
                                Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
                            },
                            Err(_) => say(term, "  That is not a session number.\n").await?,
                        },
                        Line::Idle => return Ok(Some(Ending::IdleTimeout)),
                        Line::Closed => return Ok(Some(Ending::Disconnected)),
                        Line::Cancelled => say(term, "  Cancelled: no session was ended.\n").await?,
                        Line::Text(_) => say(term, "  No session was ended.\n").await?,
                    }
                }
                Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
            },
            'D' => match s.core.devices_of(s.auth.user.id) {
                Ok(list) => {
                    let mut rows = Vec::new();
                    for d in &list {
                        let mark = match (d.is_trusted, d.id == s.auth.device_id) {
                            (true, true) => "  [trusted, this device]",
                            (true, false) => "  [trusted]",
                            (false, true) => "  [this device]",
                            (false, false) => "",
                        };
                        rows.push(format!("    #{:<4} {}{mark}", d.id, esc(&d.device_name)));
                        rows.push(format!(
                            "          {}, last {} from {}  ({}, {})",
                            esc(&d.device_type),
                            when(s, &d.last_seen_at),
                            esc(&d.last_ip),
                            count(d.login_count.max(0) as u64, "login", "logins"),
                            count(d.failure_count.max(0) as u64, "failure", "failures")
                        ));
                    }
                    if let Some(end) = paged(term, s, "  Devices you have logged in from (ssh) or opened a mailed link in (web):", &rows).await? {
                        return Ok(Some(end));
                    }
                    if list.is_empty() {
                        continue;
                    }
                    match read_visible_line(s, term, "  T and a number trusts a device, U stops trusting it, R removes it (Enter for none): ", "device_action").await? {
                        Line::Text(t) if !t.trim().is_empty() => match device_action(t.trim()) {
                            Some((_, id)) if !list.iter().any(|d| d.id == id) => say(term, &format!("  #{id} is not one of your devices.\n")).await?,
                            Some(('R', id)) if id == s.auth.device_id => say(term, "  That is the device of this session: log off first, then remove it from another one.\n").await?,
                            Some(('R', id)) => match s.core.remove_device(id, Some(&s.auth.user), &actor(s), now).await {
                                Ok(r) => say(term, &format!("  Device #{id} has been removed ({} ended).\n", count(r.sessions_ended as u64, "session", "sessions"))).await?,
                                Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
                            },
                            Some((key, id)) => match s.core.set_device_trusted(id, key == 'T', Some(&s.auth.user), &actor(s), now).await {
                                Ok(c) if key == 'T' && !c.changed => say(term, &format!("  Device #{id} was already trusted.\n")).await?,
                                Ok(_) if key == 'T' => say(term, &format!("  Device #{id} is trusted now.\n")).await?,
                                Ok(c) if !c.changed => say(term, &format!("  Device #{id} was not trusted.\n")).await?,
                                Ok(_) => say(term, &format!("  Device #{id} is no longer trusted.\n")).await?,
                                Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
                            },
                            None => say(term, "  Type T, U or R and a device number, e.g. T12.\n").await?,
                        },
                        Line::Idle => return Ok(Some(Ending::IdleTimeout)),
                        Line::Closed => return Ok(Some(Ending::Disconnected)),
                        Line::Cancelled => say(term, "  Cancelled: your devices are unchanged.\n").await?,
                        Line::Text(_) => say(term, "  Your devices are unchanged.\n").await?,
                    }
                }
                Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
            },
            'K' => {
                if let Some(end) = hardware_keys(term, s, now).await? {
                    return Ok(Some(end));
                }
            }
            'E' => {
                match s.core.user_events(s.auth.user.id, EVENTS_SHOWN) {
                    Ok(list) => {
                        let rows: Vec<String> = list.iter().map(|e| format!("    {}  {:<18} {:<15} {}", when(s, &e.created_at), e.event_type, esc(e.ip.as_deref().unwrap_or("")), esc(&e.description))).collect();
                        if let Some(end) = paged(term, s, "  Your recent security events:", &rows).await? {
                            return Ok(Some(end));
                        }
                    }
                    Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
                }
            }
            _ => return Ok(None),
        }
    }
}

/// `[K]`: the user's hardware keys; A mails a link to add one, N renames
/// one, R removes one (only from a session that passed a second factor;
/// the last key of an account whose policy requires one stays).
async fn hardware_keys<T: Terminal>(term: &mut T, s: &mut Session<'_>, now: Millis) -> std::io::Result<Option<Ending>> {
    let keys = match s.core.webauthn_keys(&s.auth.user) {
        Ok(k) => k,
        Err(e) => {
            say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?;
            return Ok(None);
        }
    };
    let header = if keys.is_empty() { "  You have no hardware key." } else { "  Your hardware keys:" };
    let mut rows = Vec::new();
    for k in &keys {
        rows.push(format!("    #{:<4} {}", k.id, esc(&k.name)));
        rows.push(format!(
            "          {}, {}, added {}, last used {}",
            k.authenticator.as_deref().map(esc).unwrap_or_else(|| k.credential_type.replace('_', " ")),
            k.authenticator_attachment.as_deref().unwrap_or("unknown attachment"),
            when(s, &k.created_at),
            k.last_used_at.as_deref().map(|t| when(s, t)).unwrap_or_else(|| "never".into())
        ));
    }
    if let Some(end) = paged(term, s, header, &rows).await? {
        return Ok(Some(end));
    }
    let answer = match read_visible_line(s, term, "  A mails you a link to add a key, N and a number renames one (N12 Blue key), R and a number removes one (Enter for none): ", "key_action").await? {
        Line::Text(t) => t,
        Line::Idle => return Ok(Some(Ending::IdleTimeout)),
        Line::Closed => return Ok(Some(Ending::Disconnected)),
        Line::Cancelled => {
            say(term, "  Cancelled: your keys are unchanged.\n").await?;
            return Ok(None);
        }
    };
    match key_action(answer.trim()) {
        None if answer.trim().is_empty() => say(term, "  Your keys are unchanged.\n").await?,
        None => say(term, "  Type A, or N or R and a key number, e.g. R12.\n").await?,
        Some(KeyAction::Add) => match s.core.send_webauthn_enrollment(&s.auth.user, &actor(s), now).await {
            Ok(sent) => say(term, &format!(
                "  A link to add a key was mailed to {}; it works once, for {}. Open it on a device with your key.\n",
                esc(&sent.to),
                crate::core::mail::humanize(s.core.settings().mfa.link_ttl)
            ))
            .await?,
            Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
        },
        Some(KeyAction::Rename(id, _)) | Some(KeyAction::Remove(id)) if !keys.iter().any(|k| k.id == id) => say(term, &format!("  #{id} is not one of your keys.\n")).await?,
        Some(KeyAction::Rename(id, name)) => match s.core.rename_webauthn_key(&s.auth.user, id, &name, &actor(s), now).await {
            Ok(()) => say(term, &format!("  Key #{id} is now called {}.\n", esc(name.trim()))).await?,
            Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
        },
        Some(KeyAction::Remove(_)) if s.auth.factors < 2 => {
            say(term, "  Removing a key needs a session that passed a second factor (a code or a key): log in with it first, or ask your sysop.\n").await?
        }
        Some(KeyAction::Remove(id)) => match s.core.remove_webauthn_key(id, Some(&s.auth.user), &actor(s), now).await {
            Ok(k) => say(term, &format!("  Key #{id} ({}) has been removed.\n", esc(&k.name))).await?,
            Err(e) => say(term, &format!("  That did not work: {}\n", esc(&e.to_string()))).await?,
        },
    }
    Ok(None)
}

#[derive(Debug, PartialEq, Eq)]
enum KeyAction {
    Add,
    Rename(i64, String),
    Remove(i64),
}

/// "A", "N12 Blue key", "r #12" → what to do with the keys.
fn key_action(text: &str) -> Option<KeyAction> {
    let mut chars = text.chars();
    let key = chars.next()?.to_ascii_uppercase();
    let rest = chars.as_str().trim().trim_start_matches('#');
    match key {
        'A' if rest.is_empty() => Some(KeyAction::Add),
        'R' => rest.parse().ok().map(KeyAction::Remove),
        'N' => {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let name = rest[digits.len()..].trim();
            if name.is_empty() {
                return None;
            }
            Some(KeyAction::Rename(digits.parse().ok()?, name.to_owned()))
        }
        _ => None,
    }
}

/// "T12", "u 12", "R#12" → the action and the device id.
fn device_action(text: &str) -> Option<(char, i64)> {
    let mut chars = text.chars();
    let key = chars.next()?.to_ascii_uppercase();
    if !"TUR".contains(key) {
        return None;
    }
    let id = chars.as_str().trim().trim_start_matches('#').parse::<i64>().ok()?;
    Some((key, id))
}

/// How many of the user's events `[E]` lists (paged at the terminal's height).
const EVENTS_SHOWN: usize = 100;

/// A stored time (RFC 3339) as the screens show it: `2026-12-01 19:14`
/// in the configured zone.
fn when(s: &Session<'_>, t: &str) -> String {
    Millis::parse_rfc3339(t).map(|m| s.core.settings().clock.show(m)).unwrap_or_else(|| esc(t))
}

/// A list through the pager; `Some` when the session ended meanwhile.
async fn paged<T: Terminal>(term: &mut T, s: &Session<'_>, header: &str, rows: &[String]) -> std::io::Result<Option<Ending>> {
    Ok(match super::pager::show(term, header, rows, s.idle).await? {
        super::pager::Paged::Idle => Some(Ending::IdleTimeout),
        super::pager::Paged::Closed => Some(Ending::Disconnected),
        _ => None,
    })
}

async fn say<T: Terminal>(term: &mut T, text: &str) -> std::io::Result<()> {
    let width = term.size().0 as usize;
    term.write(&crlf(&super::pager::wrap(text, if width >= 20 { width } else { 80 }))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_actions() {
        let table: &[(&str, Option<KeyAction>)] = &[
            ("a", Some(KeyAction::Add)),
            ("A", Some(KeyAction::Add)),
            ("A12", None),
            ("R12", Some(KeyAction::Remove(12))),
            ("r #7", Some(KeyAction::Remove(7))),
            ("R", None),
            ("N12 Blue key", Some(KeyAction::Rename(12, "Blue key".into()))),
            ("n 3 Spare", Some(KeyAction::Rename(3, "Spare".into()))),
            ("N12", None),
            ("N Blue", None),
            ("X1", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(&key_action(text), want, "{text:?}");
        }
    }
}
