//! What one session knows about itself after login: the user and how far
//! they got (`Authenticated`), the connection, the terminal. The engine and
//! the modules (account, door, welcome) all read it; it is the ACS context.

use super::menu::Menus;
use crate::acs::AcsContext;
use crate::core::accounts::Actor;
use crate::core::login::Authenticated;
use crate::core::Core;
use crate::model::{escape_control, Millis};
use std::path::Path;
use std::time::Duration;

/// What one session knows about itself, for ACS and the modules.
pub struct Session<'a> {
    pub core: &'a Core,
    pub auth: Authenticated,
    pub ip: std::net::IpAddr,
    pub art_dir: Option<&'a Path>,
    pub idle: Duration,
    pub menus: &'a Menus,
    pub terminal_type: String,
    /// 0 CP437, 1 UTF-8.
    pub encoding: u8,
    pub size: (u32, u32),
}

impl Session<'_> {
    /// Re-reads the user after a change made from this session (a new
    /// password), so the session does not act on the old state.
    pub fn refresh_user(&mut self) {
        match self.core.find_user(&self.auth.user.username).ok().filter(|u| u.id == self.auth.user.id) {
            Some(u) => self.auth.user = u,
            None => {
                // The change is stored; at least do not ask for it again.
                self.auth.user.must_reset_password = false;
                self.auth.user.password_changed_at = Some(Millis::now());
            }
        }
    }
}

impl AcsContext for Session<'_> {
    fn required_level(&self) -> u8 {
        self.auth.required_level
    }
    fn factors_passed(&self) -> u8 {
        self.auth.factors
    }
    fn in_group(&self, group: &str) -> bool {
        self.auth.user.groups.iter().any(|g| g.eq_ignore_ascii_case(group))
    }
    fn secure_connection(&self) -> bool {
        true // SSH is encrypted
    }
    fn local_connection(&self) -> bool {
        self.ip.to_canonical().is_loopback()
    }
    fn account_status(&self) -> &str {
        if self.auth.user.is_locked(Millis::now()) { "locked" } else { "active" }
    }
    fn login_count(&self) -> u64 {
        self.auth.user.login_count.max(0) as u64 + 1
    }
    fn account_age_days(&self) -> u64 {
        ((Millis::now().0 - self.auth.user.created_at.0).max(0) / 86_400_000) as u64
    }
    fn user_id(&self) -> i64 {
        self.auth.user.id
    }
    fn minutes_past_midnight(&self) -> u32 {
        ((Millis::now().0.rem_euclid(86_400_000)) / 60_000) as u32
    }
    fn weekday(&self) -> u8 {
        // 1970-01-01 was a Thursday (4).
        ((Millis::now().0.div_euclid(86_400_000) + 4).rem_euclid(7)) as u8
    }
    fn terminal_type(&self) -> &str {
        &self.terminal_type
    }
    fn terminal_width(&self) -> u32 {
        self.size.0
    }
    fn terminal_height(&self) -> u32 {
        self.size.1
    }
    fn encoding(&self) -> u8 {
        self.encoding
    }
    fn property(&self, name: &str) -> Option<String> {
        match name {
            "username" => Some(self.auth.user.username.clone()),
            "email" => self.auth.user.email.clone(),
            _ => None,
        }
    }
    /// Read at each check, so a trust given or taken from the account
    /// menu counts at once; a device removed (or unreadable) is untrusted.
    fn device_trusted(&self) -> bool {
        match self.core.device(self.auth.device_id) {
            Ok(Some(d)) => d.is_trusted && d.user_id == self.auth.user.id,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "reading this session's device for DT");
                false
            }
        }
    }
    /// The score of this session's login (`core::risk`), as decided at
    /// login.
    fn risk_score(&self) -> u8 {
        self.auth.risk_score()
    }
}

pub fn actor(s: &Session<'_>) -> Actor {
    Actor::User { id: s.auth.user.id, session: Some(s.auth.session_id), ip: s.ip.to_string() }
}

pub fn esc(text: &str) -> String {
    escape_control(text)
}
