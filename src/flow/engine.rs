//! Runs the menus of `menu.hjson` for one session: art, ACS-steered
//! `next`, modules (welcome, menu, the in-terminal one-time code, the
//! account menu, doors, logoff). ENiGMA's conventions: `Esc` or `Q` goes
//! back or leaves, keys are single letters.

use super::menu::{Menu, Module, Next, START};
use super::prompt::{read_line, Line};
use super::welcome::Change;
use super::{art, crlf, Ending, Terminal};
pub use super::session::Session;
use crate::core::accounts::PasswordStatus;
use crate::model::{Millis, Secret};
use std::time::Duration;

/// Longest run of menus without a key from the user before the flow is
/// stopped (a guard; `menu::compile` already refuses such cycles).
const MAX_AUTOMATIC_STEPS: usize = 100;

pub async fn run<T: Terminal>(term: &mut T, s: &mut Session<'_>) -> std::io::Result<Ending> {
    let mut current = START.to_owned();
    let mut previous: Option<String> = None;
    let mut automatic = 0;
    loop {
        s.size = term.size();
        let Some(menu) = s.menus.menus.get(&current) else {
            return Ok(Ending::LoggedOff);
        };
        if let Some(guard) = &menu.guard {
            if !guard.eval(s) {
                term.write(&crlf("\n  You do not have access to that.\n")).await?;
                // Back to the last menu where the user chose something (a
                // menu that moves on by itself would just lead here again).
                match previous.take() {
                    Some(p) if p != current => {
                        current = p;
                        continue;
                    }
                    _ => return Ok(Ending::LoggedOff),
                }
            }
        }
        // Let in only to register a hardware key (`webauthn.enroll_grace`),
        // its code given: that, and nothing else, once the art is drawn.
        if s.auth.key_enrollment_only && s.auth.factors >= 2 && !matches!(menu.module, Module::Art | Module::Logoff) {
            return key_enrollment_grace(term, s).await;
        }
        // Whatever the menus say, nothing but art and the code prompt runs
        // for a session below its required level.
        if !s.auth.complete() && !matches!(menu.module, Module::Art | Module::LoginTwoFactorAuthOtp | Module::Logoff) {
            if s.auth.required_level >= 3 {
                if s.auth.key_enrollment_only {
                    // A plain-password client: the code first, then the above.
                    if let Some(end) = terminal_code(term, s).await? {
                        return Ok(end);
                    }
                    return key_enrollment_grace(term, s).await;
                }
                term.write(&crlf("\n  This account must log in with a hardware key.\n")).await?;
                return Ok(Ending::CodeRequired);
            }
            if let Some(end) = terminal_code(term, s).await? {
                return Ok(end);
            }
        }
        // Nor for a user who must change the password (a sysop's reset or
        // `force_change_after_days`), whether or not the menus run
        // `welcome`: the change comes first.
        if !matches!(menu.module, Module::Art | Module::LoginTwoFactorAuthOtp | Module::Logoff) {
            if let Some(end) = forced_password_change(term, s).await? {
                return Ok(end);
            }
        }
        // The code prompt's art (the "Two-factor check" box) only when the
        // code is asked: not for a session that gave it during SSH
        // authentication.
        if !(menu.module == Module::LoginTwoFactorAuthOtp && s.auth.complete()) {
            draw_art(term, s, menu).await?;
        }
        let chosen: Option<String> = match menu.module {
            Module::Art => {
                if let Some(p) = menu.config.pause.filter(|p| *p > 0) {
                    if let Ok(None) = term.read(Duration::from_secs(p as u64).min(s.idle)).await {
                        return Ok(Ending::Disconnected);
                    }
                }
                None
            }
            Module::Welcome => {
                let w = super::welcome::Welcome { core: s.core, auth: &s.auth, ip: s.ip.to_string(), idle: s.idle };
                if let Some(end) = super::welcome::greet(term, &w).await? {
                    return Ok(end);
                }
                None
            }
            Module::Menu => match choose(term, s, menu).await? {
                Ok(next) => Some(next),
                Err(end) => return Ok(end),
            },
            Module::LoginTwoFactorAuthOtp => {
                if let Some(end) = terminal_code(term, s).await? {
                    return Ok(end);
                }
                None
            }
            Module::Account => {
                if let Some(end) = super::account::run(term, s).await? {
                    return Ok(end);
                }
                None
            }
            Module::Exec | Module::Telnet => {
                if let Some(end) = super::door::run(term, s, menu).await? {
                    return Ok(end);
                }
                None
            }
            Module::Logoff => return Ok(Ending::LoggedOff),
        };
        let next = match chosen {
            Some(n) => Some(n),
            None => resolve_next(&menu.next, s),
        };
        match next {
            Some(n) => {
                automatic = if menu.module == Module::Art { automatic + 1 } else { 0 };
                if automatic > MAX_AUTOMATIC_STEPS {
                    tracing::error!(menu = %menu.name, "menus moved on by themselves too often; stopping the flow");
                    return Ok(Ending::LoggedOff);
                }
                let left = std::mem::replace(&mut current, n);
                if matches!(menu.module, Module::Menu) {
                    previous = Some(left);
                }
            }
            None => return Ok(Ending::LoggedOff),
        }
    }
}

async fn draw_art<T: Terminal>(term: &mut T, s: &Session<'_>, menu: &Menu) -> std::io::Result<()> {
    let name = menu.art.iter().find(|(acs, _)| acs.as_ref().is_none_or(|a| a.eval(s))).map(|(_, n)| n);
    if let Some(name) = name {
        if let Some(bytes) = art::render(s.art_dir, name, s.encoding, s.size.0) {
            term.write(&bytes).await?;
        }
    }
    Ok(())
}

fn resolve_next(next: &Next, s: &Session<'_>) -> Option<String> {
    match next {
        Next::End => None,
        Next::One(n) => Some(n.clone()),
        Next::Random(list) => {
            if list.is_empty() {
                None
            } else {
                Some(list[rand::random_range(0..list.len())].clone())
            }
        }
        Next::FirstMatch(list) => list.iter().find(|(acs, _)| acs.as_ref().is_none_or(|a| a.eval(s))).map(|(_, n)| n.clone()),
    }
}

/// A `menu` module: the options this user may see, one key to choose.
async fn choose<T: Terminal>(term: &mut T, s: &Session<'_>, menu: &Menu) -> std::io::Result<Result<String, Ending>> {
    let visible: Vec<_> = menu.options.iter().filter(|o| o.acs.as_ref().is_none_or(|a| a.eval(s))).collect();
    let mut text = String::from("\n");
    for o in &visible {
        text.push_str(&format!("  [{}] {}\n", o.key, o.text));
    }
    text.push('\n');
    text.push_str(&format!("  {}", menu.prompt.as_deref().unwrap_or("Your choice: ")));
    term.write(&crlf(&text)).await?;
    loop {
        let bytes = match term.read(s.idle).await {
            Err(_) => {
                term.write(&crlf("\n  Idle too long: logging you off.\n")).await?;
                return Ok(Err(Ending::IdleTimeout));
            }
            Ok(None) => return Ok(Err(Ending::Disconnected)),
            Ok(Some(b)) => b,
        };
        // Cursor keys and the like arrive as escape sequences: ignored.
        if bytes.len() > 1 && bytes[0] == 0x1b {
            continue;
        }
        for b in bytes {
            // ENiGMA's convention: a lone Esc does what Q (back / log off) does.
            let key = if b == 0x1b { 'Q' } else { (b as char).to_ascii_uppercase() };
            if let Some(o) = visible.iter().find(|o| o.key == key) {
                term.write(format!("{key}\r\n").as_bytes()).await?;
                return Ok(Ok(o.next.clone()));
            }
        }
    }
}

/// ENiGMA's `loginTwoFactorAuthOTP`: when the SSH login did not pass the
/// code factor (a `password`-only client), ask for it here, three tries,
/// before anything else. Passes at once when the session has the factor.
/// `webauthn.enroll_grace`: a user required at level 3 with no key yet got
/// in with password and code, only for this: a link to register a key is
/// mailed, and the session ends.
async fn key_enrollment_grace<T: Terminal>(term: &mut T, s: &mut Session<'_>) -> std::io::Result<Ending> {
    let actor = crate::core::accounts::Actor::User { id: s.auth.user.id, session: Some(s.auth.session_id), ip: s.ip.to_string() };
    term.write(&crlf("\n  This account must log in with a hardware key (a security key, Touch ID,\n  Windows Hello or a passkey) and has none registered yet.\n")).await?;
    match s.core.send_webauthn_enrollment(&s.auth.user, &actor, Millis::now()).await {
        Ok(sent) => {
            let expires = crate::core::mail::humanize(s.core.settings().mfa.link_ttl);
            term.write(&crlf(&format!(
                "  A link to register one was mailed to {}; it works once, for {expires}.\n  Open it on a device with your key, then log in again.\n",
                crate::model::escape_control(&sent.to)
            )))
            .await?;
        }
        Err(e) => {
            tracing::warn!(error = %e, "mailing a key enrollment link from a session");
            term.write(&crlf("  A registration link cannot be mailed right now (is there an address on the account?): ask your sysop.\n")).await?;
        }
    }
    Ok(Ending::CodeRequired)
}

async fn terminal_code<T: Terminal>(term: &mut T, s: &mut Session<'_>) -> std::io::Result<Option<Ending>> {
    if s.auth.complete() {
        return Ok(None);
    }
    term.write(&crlf("\n  This account needs a one-time code (or a backup code).\n")).await?;
    for _ in 0..3 {
        let code = match read_line(term, "  Verification code: ", true, s.idle).await? {
            Line::Text(t) => t,
            Line::Cancelled => break,
            Line::Idle => return Ok(Some(Ending::IdleTimeout)),
            Line::Closed => return Ok(Some(Ending::Disconnected)),
        };
        match s.core.session_code(&s.auth, s.ip, &Secret::new(code), Millis::now()).await {
            Ok(crate::core::login::CodeAnswer::Accepted) => {
                s.auth.factors = 2;
                if s.auth.complete() {
                    term.fully_authenticated();
                }
                term.write(&crlf("  Thank you.\n")).await?;
                return Ok(None);
            }
            Ok(refused) => term.write(&crlf(&format!("  {}\n", refused.message()))).await?,
            Err(e) => {
                tracing::warn!(error = %e, "checking a code in the terminal");
                term.write(&crlf("  Codes cannot be checked right now.\n")).await?;
                break;
            }
        }
    }
    term.write(&crlf("\n  The one-time code was not given. Goodbye.\n")).await?;
    Ok(Some(Ending::CodeRequired))
}

/// The password change a user must make before anything else runs
/// (`None` when none is due or it was made; the session's copy of the
/// user is then refreshed). Giving up ends the session.
async fn forced_password_change<T: Terminal>(term: &mut T, s: &mut Session<'_>) -> std::io::Result<Option<Ending>> {
    if s.core.password_status(&s.auth.user, Millis::now()) != PasswordStatus::MustChange {
        return Ok(None);
    }
    term.write(&crlf("\n  Your password must be changed before you go on.\n\n")).await?;
    let w = super::welcome::Welcome { core: s.core, auth: &s.auth, ip: s.ip.to_string(), idle: s.idle };
    match super::welcome::change_password(term, &w).await? {
        Change::Done => {
            s.refresh_user();
            Ok(None)
        }
        Change::GaveUp => {
            term.write(&crlf("\n  The password was not changed. Logging you off.\n")).await?;
            Ok(Some(Ending::PasswordChangeRequired))
        }
        Change::Ended(e) => Ok(Some(e)),
    }
}
