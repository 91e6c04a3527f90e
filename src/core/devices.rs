//! Devices (SPEC §9): what a login came from. An SSH device is the client's
//! version string, the HASSH of its key-exchange offer and the public key's
//! fingerprint when a key was used; its readable name comes from the
//! version string. A web device is the browser that used a mailed link
//! for its owner (the link's token names the account): its parsed user
//! agent (`useragent`). Trusting, untrusting and removing a device are
//! events; a sign-in from a new device mails its owner a notice.

use super::accounts::Actor;
use super::{Core, Error, Result};
use crate::model::{strip_unsafe, Event, EventType, Millis, Severity, User};
use crate::store::devices::{DeviceRow, Identity, SeenDevice};
use md5::Digest as _;

/// The longest `hassh_algorithms` kept (OpenSSH 9's is about 620 bytes).
pub const MAX_HASSH_ALGORITHMS: usize = 2048;
/// The longest readable device name.
pub const MAX_DEVICE_NAME: usize = 120;

/// The HASSH fingerprint of a client's key-exchange offer.
///
/// As Salesforce defines it (github.com/salesforce/hassh, README, "How does
/// HASSH work" and "Example 1: Client Fingerprinting"): the client's
/// SSH_MSG_KEXINIT name-lists `kex_algorithms`,
/// `encryption_algorithms_client_to_server`,
/// `mac_algorithms_client_to_server` and
/// `compression_algorithms_client_to_server`, joined with ";", are the
/// "hasshAlgorithms"; the hassh is the MD5 of that string, in lowercase
/// hex. The lists are hashed as sent (the same bytes any other HASSH
/// implementation sees); only the stored `algorithms` text is cleaned and
/// bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hassh {
    /// 32 lowercase hex digits.
    pub hash: String,
    /// The hasshAlgorithms string, control and bidi characters removed, at
    /// most `MAX_HASSH_ALGORITHMS` bytes.
    pub algorithms: String,
}

impl Hassh {
    pub fn of(kex: &[u8], encryption: &[u8], mac: &[u8], compression: &[u8]) -> Hassh {
        let mut joined = Vec::with_capacity(kex.len() + encryption.len() + mac.len() + compression.len() + 3);
        for (i, list) in [kex, encryption, mac, compression].into_iter().enumerate() {
            if i > 0 {
                joined.push(b';');
            }
            joined.extend_from_slice(list);
        }
        let hash = hex(&md5::Md5::digest(&joined));
        let mut algorithms = strip_unsafe(&String::from_utf8_lossy(&joined));
        truncate_at_char(&mut algorithms, MAX_HASSH_ALGORITHMS);
        Hassh { hash, algorithms }
    }
}

fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a login came from, as far as the gate can tell.
#[derive(Debug, Clone, Copy)]
pub struct DeviceIdentity<'a> {
    /// The client's version string (already stripped of unsafe characters).
    pub client_version: &'a str,
    /// `None`: the client's KEXINIT could not be read.
    pub hassh: Option<&'a Hassh>,
    /// The public key's fingerprint ("SHA256:..."), when a key was used.
    pub key_fingerprint: Option<&'a str>,
}

impl DeviceIdentity<'_> {
    /// The device's key among the account's devices (fingerprint version
    /// 2): SHA-256 over the three parts, each with its length, so no two
    /// different identities can run together into one.
    pub fn fingerprint(&self) -> String {
        let mut h = sha2::Sha256::new();
        h.update(b"portcullis device v2");
        for part in [self.client_version, self.hassh.map_or("", |x| x.hash.as_str()), self.key_fingerprint.unwrap_or("")] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex(&h.finalize()[..16])
    }

    /// What the device's fingerprint was before migration 0010: the
    /// version string alone (a row recorded then is taken over).
    pub fn legacy_fingerprint(&self) -> String {
        hex(&sha2::Sha256::digest(self.client_version.as_bytes())[..16])
    }

    pub fn name(&self) -> String {
        device_name(self.client_version, self.key_fingerprint)
    }
}

/// A readable name: "OpenSSH 9.2 on Linux (Debian), key SHA256:abcdefghijkl…".
pub fn device_name(client_version: &str, key_fingerprint: Option<&str>) -> String {
    let mut name = describe_client(&strip_unsafe(client_version));
    if let Some(fp) = key_fingerprint {
        let short: String = strip_unsafe(fp).chars().take(19).collect();
        let ellipsis = if fp.chars().count() > 19 { "…" } else { "" };
        name = format!("{name}, key {short}{ellipsis}");
    }
    name
}

/// The software, its version and the system from an identification line
/// (RFC 4253 §4.2: "SSH-protoversion-softwareversion SP comments").
fn describe_client(v: &str) -> String {
    let Some(rest) = v.strip_prefix("SSH-2.0-").or_else(|| v.strip_prefix("SSH-1.99-")) else {
        return if v.is_empty() { "unknown SSH client".to_owned() } else { bounded(v, MAX_DEVICE_NAME) };
    };
    let (software, comment) = rest.split_once(' ').unwrap_or((rest, ""));
    let (name, version, mut system) = match software.strip_prefix("OpenSSH_for_Windows_") {
        Some(version) => ("OpenSSH".to_owned(), version.to_owned(), Some("Windows".to_owned())),
        None => {
            let (name, version) = split_software(software);
            (canonical_name(name), version.to_owned(), None)
        }
    };
    let version = if name == "OpenSSH" { strip_portable(&version) } else { version };
    if system.is_none() {
        system = system_of(comment);
    }
    let mut out = bounded(&name, 40);
    if !version.is_empty() {
        out.push(' ');
        out.push_str(&bounded(&version, 24));
    }
    if let Some(s) = system {
        out.push_str(" on ");
        out.push_str(&s);
    }
    bounded(&out, MAX_DEVICE_NAME)
}

/// "OpenSSH_9.2p1" → ("OpenSSH", "9.2p1"); "PuTTY_Release_0.78" →
/// ("PuTTY", "0.78"); "JSCH-0.1.54" → ("JSCH", "0.1.54"); "Go" → ("Go", "").
fn split_software(software: &str) -> (&str, &str) {
    let (name, version) = match software.split_once('_') {
        Some(x) => x,
        None => match software.char_indices().find(|&(i, c)| c == '-' && software[i + 1..].starts_with(|d: char| d.is_ascii_digit())) {
            Some((i, _)) => (&software[..i], &software[i + 1..]),
            None => (software, ""),
        },
    };
    let version = version.strip_prefix("Release_").or_else(|| version.strip_prefix("release_")).unwrap_or(version);
    (name, version)
}

fn canonical_name(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "openssh" => "OpenSSH".into(),
        "dropbear" => "Dropbear".into(),
        "paramiko" => "Paramiko".into(),
        "putty" => "PuTTY".into(),
        _ => name.to_owned(),
    }
}

/// "9.2p1" → "9.2" (the portable release's patch level).
fn strip_portable(version: &str) -> String {
    match version.rfind('p') {
        Some(i) if i > 0 && !version[i + 1..].is_empty() && version[i + 1..].chars().all(|c| c.is_ascii_digit()) => version[..i].to_owned(),
        _ => version.to_owned(),
    }
}

/// The system named by the comment part, when it is one we know (the
/// comment is the client's own text: anything else is not shown).
fn system_of(comment: &str) -> Option<String> {
    let c = comment.to_ascii_lowercase();
    let known: &[(&str, &str)] = &[
        ("debian", "Linux (Debian)"),
        ("ubuntu", "Linux (Ubuntu)"),
        ("raspbian", "Linux (Raspbian)"),
        ("freebsd", "FreeBSD"),
        ("netbsd", "NetBSD"),
        ("openbsd", "OpenBSD"),
    ];
    known.iter().find(|(prefix, _)| c.starts_with(prefix)).map(|(_, s)| (*s).to_owned())
}

fn bounded(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max_chars - 1).collect();
    out.push('…');
    out
}

/// What `set_device_trusted` did.
#[derive(Debug, Clone)]
pub struct TrustChange {
    /// The device as it is now.
    pub device: DeviceRow,
    /// False when it already was as asked (nothing recorded).
    pub changed: bool,
}

/// What `remove_device` did.
#[derive(Debug, Clone)]
pub struct RemovedDevice {
    /// The device as it was.
    pub device: DeviceRow,
    /// Its open sessions, ended with it.
    pub sessions_ended: usize,
}

/// What a web visit did with the link it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebUse {
    /// The enrollment page showed the secret ("Continue"): the device is
    /// seen, counted neither way.
    Opened,
    /// A wrong code was typed: a failure of the device.
    WrongCode,
    /// The right code: the caller counts the device's login once the
    /// change is committed.
    Confirmed,
}

impl WebUse {
    fn describe(self) -> &'static str {
        match self {
            WebUse::Opened => "opened",
            WebUse::WrongCode => "wrong_code",
            WebUse::Confirmed => "confirmed",
        }
    }

    /// The line of the notice that says what the browser did.
    fn notice(self) -> &'static str {
        match self {
            WebUse::Opened => "The page showed the secret for your authenticator app.",
            WebUse::WrongCode => "A wrong code was typed on the page.",
            WebUse::Confirmed => "Two-factor authentication was set up from it.",
        }
    }
}

/// The devices one mailed link may add to its account: past it, a visit
/// with yet another user agent is served but recorded on no device (its
/// events still carry the address and the user agent), so whoever holds a
/// link cannot fill the account's devices nor its owner's mailbox.
pub const MAX_NEW_DEVICES_PER_LINK: i64 = 3;

/// What a user reads when their session ends because its device was removed.
pub const REMOVED_REASON: &str = "this device was removed from the account";

impl Core {
    pub fn device(&self, id: i64) -> Result<Option<DeviceRow>> {
        Ok(self.store.device(id)?)
    }

    pub fn device_addresses(&self, id: i64) -> Result<Vec<crate::store::devices::DeviceAddress>> {
        Ok(self.store.device_addresses(id)?)
    }

    /// The device `id`; with `owner`, only if it is theirs (the same
    /// answer either way, so a user learns nothing of others' devices).
    fn device_for(&self, id: i64, owner: Option<&User>) -> Result<DeviceRow> {
        match self.store.device(id)? {
            Some(d) if owner.is_none_or(|u| u.id == d.user_id) => Ok(d),
            _ => Err(Error::Invalid(format!("no device with id {id}"))),
        }
    }

    /// Trusts a device (or stops trusting it). A trusted device that
    /// logged in with a key opens a rule's lock for its owner (with every
    /// factor; see `locks`). `owner`: the change comes from that user's
    /// own session and must be about one of their devices. Recorded as
    /// `device_trusted` / `device_untrusted` with the actor; nothing is
    /// recorded when the device already was as asked.
    pub async fn set_device_trusted(&self, id: i64, trusted: bool, owner: Option<&User>, actor: &Actor, now: Millis) -> Result<TrustChange> {
        self.device_for(id, owner)?;
        let by = actor.describe();
        let changed = self.store.set_device_trusted(id, trusted, &by, now, |d| {
            let (t, severity, verb) = if trusted { (EventType::DeviceTrusted, Severity::Low, "trusted") } else { (EventType::DeviceUntrusted, Severity::Info, "no longer trusted") };
            let e = Event::new(t, severity, format!("device {} of {} {verb}: {}", d.id, d.username, d.device_name), now)
                .user(Some(d.user_id), Some(&d.username))
                .device(Some(d.id))
                .detail("device_name", d.device_name.clone())
                .detail("device_type", d.device_type.clone())
                .detail("hassh", d.hassh.clone())
                .detail("key_fingerprint", d.key_fingerprint.clone());
            vec![actor.stamp(e)]
        })?;
        let (_, changed) = changed.ok_or_else(|| Error::Invalid(format!("no device with id {id}")))?;
        let device = self.device_for(id, owner)?;
        Ok(TrustChange { device, changed })
    }

    /// Removes a device: its open sessions end (live connections are cut
    /// with `REMOVED_REASON`), `device_removed` and a `session_revoked`
    /// per session are recorded with the actor, in one transaction. Its
    /// next login is a new device again.
    pub async fn remove_device(&self, id: i64, owner: Option<&User>, actor: &Actor, now: Millis) -> Result<RemovedDevice> {
        self.device_for(id, owner)?;
        let removed = self.store.remove_device(id, REMOVED_REASON, now, |d, ended| {
            let mut events = vec![actor.stamp(
                Event::new(EventType::DeviceRemoved, Severity::Low, format!("device {} of {} removed: {}", d.id, d.username, d.device_name), now)
                    .user(Some(d.user_id), Some(&d.username))
                    .device(Some(d.id))
                    .detail("device_name", d.device_name.clone())
                    .detail("device_type", d.device_type.clone())
                    .detail("hassh", d.hassh.clone())
                    .detail("key_fingerprint", d.key_fingerprint.clone())
                    .detail("was_trusted", d.is_trusted)
                    .detail("sessions_ended", ended.len()),
            )];
            for s in ended {
                let e = self.revoked_event(s, &d.username, REMOVED_REASON, actor, None, now).device(Some(d.id)).detail("cause", "device_removed");
                events.push(e);
            }
            events
        })?;
        let (device, ended) = removed.ok_or_else(|| Error::Invalid(format!("no device with id {id}")))?;
        self.cut_live(ended.iter().map(|s| s.id), REMOVED_REASON);
        Ok(RemovedDevice { device, sessions_ended: ended.len() })
    }

    /// Records the browser of a web visit that acts for `user` through the
    /// link `token_id` (the token named the account): a device of type
    /// `web` identified by its parsed user agent (`useragent::UserAgent`),
    /// with its address, last seen time and counts; the name and version
    /// string follow the latest visit. A new one is a `device_new` event
    /// and, unless it is the account's first device of any type (a new
    /// account's link opened before any login), a notice to the owner.
    /// A request without a peer address is no web visit (core's own
    /// callers): nothing is recorded. Returns the device, if recorded; a
    /// store error is logged and the visit goes on.
    pub(crate) async fn see_web_device(&self, user: &User, token_id: i64, client: &super::mfa::WebClient, visit: WebUse, now: Millis) -> Option<i64> {
        let ip = client.ip?.to_canonical().to_string();
        let agent = super::useragent::UserAgent::parse(client.user_agent.as_deref());
        let fingerprint = agent.fingerprint();
        let name = agent.name();
        match self.store.device_by_fingerprint(user.id, &fingerprint) {
            Ok(Some(_)) => {}
            Ok(None) => match self.store.count_on_token(token_id, "web_devices") {
                Ok(Some(n)) if n <= MAX_NEW_DEVICES_PER_LINK => {}
                Ok(_) => {
                    tracing::info!(user_id = user.id, "web: this link added its most devices; the visit is recorded on none");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "counting a link's devices");
                    return None;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "reading a web device");
                return None;
            }
        }
        let seen = SeenDevice {
            user_id: user.id,
            fingerprint: &fingerprint,
            device_name: &name,
            device_type: "web",
            client_version: &agent.raw,
            ip: &ip,
            success: visit != WebUse::WrongCode,
            pending: visit != WebUse::WrongCode,
            now,
        };
        let seen = match self.store.see_device_as(&seen, &Identity::default()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "recording a web device");
                return None;
            }
        };
        if seen.new {
            let e = Event::new(EventType::DeviceNew, Severity::Info, format!("enrollment link of {} used from a new device: {name}", user.username), now)
                .user(Some(user.id), Some(&user.username))
                .device(Some(seen.id))
                .detail("fingerprint", fingerprint.clone())
                .detail("device_name", name.clone())
                .detail("device_type", "web")
                .detail("browser", agent.family.clone())
                .detail("browser_major", agent.major.clone())
                .detail("os", agent.os.clone())
                .detail("category", agent.category.clone())
                .detail("via", "otp_enrollment_link")
                .detail("visit", visit.describe())
                .detail("first_of_account", seen.first_of_account);
            self.record(client.stamp(e)).await;
            if !seen.first_of_account {
                self.notify_new_web_device(user, seen.id, &name, &ip, visit, now);
            }
        }
        Some(seen.id)
    }

    /// Mails the owner that a link mailed to them was used from a browser
    /// the account had not seen (what, when, from which address, how to
    /// report it), like `notify_new_device` for SSH.
    fn notify_new_web_device(&self, user: &User, device_id: i64, device_name: &str, ip: &str, visit: WebUse, now: Millis) {
        let s = self.settings();
        let report_to = match self.incident_recipients() {
            Ok(list) if !list.is_empty() => format!("your sysop ({})", list.join(", ")),
            _ => "your sysop".to_owned(),
        };
        let when = self.settings().clock.show_zoned(now);
        let id = device_id.to_string();
        self.mail_user(
            user,
            "web_device_new",
            &[
                ("username", &user.username),
                ("issuer", &s.mfa.issuer),
                ("device", device_name),
                ("device_id", &id),
                ("address", ip),
                ("time", &when),
                ("stage", visit.notice()),
                ("report_to", &report_to),
            ],
            now,
        );
    }

    /// The account's trusted device with this identity, if there is one.
    pub(crate) fn trusted_device(&self, user: &User, device: &DeviceIdentity<'_>) -> Result<Option<DeviceRow>> {
        Ok(self.store.device_by_fingerprint(user.id, &device.fingerprint())?.filter(|d| d.is_trusted))
    }

    /// Mails the owner that their account was signed in to from a device
    /// it had not seen: what, when, from which address, how to report it.
    /// Not sent for the account's first SSH device (its first login:
    /// there is nothing to compare with, as GitHub and Google do not mail
    /// about an account's first sign-in either; a browser that used a
    /// mailed link before does not make it news). A mail that cannot be
    /// queued is logged; the login goes on.
    pub(crate) fn notify_new_device(&self, user: &User, device_id: i64, device_name: &str, ip: &str, code_pending: bool, now: Millis) {
        let s = self.settings();
        let report_to = match self.incident_recipients() {
            Ok(list) if !list.is_empty() => format!("your sysop ({})", list.join(", ")),
            _ => "your sysop".to_owned(),
        };
        let stage = if code_pending {
            "The password was right; the one-time code was still to be entered."
        } else {
            "Every required step of the login passed."
        };
        let when = self.settings().clock.show_zoned(now);
        let id = device_id.to_string();
        self.mail_user(
            user,
            "device_new",
            &[("username", &user.username), ("issuer", &s.mfa.issuer), ("device", device_name), ("device_id", &id), ("address", ip), ("time", &when), ("stage", stage), ("report_to", &report_to)],
            now,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hassh_is_md5_of_the_four_client_lists() {
        // Salesforce's README, Example 1 (Cyberduck 6.7.1): its lists and hassh.
        let kex = "curve25519-sha256@libssh.org,diffie-hellman-group-exchange-sha256,ecdh-sha2-nistp521,ecdh-sha2-nistp384,ecdh-sha2-nistp256,diffie-hellman-group-exchange-sha1,diffie-hellman-group1-sha1,diffie-hellman-group14-sha1,diffie-hellman-group14-sha256,diffie-hellman-group15-sha512,diffie-hellman-group16-sha512,diffie-hellman-group17-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256@ssh.com,diffie-hellman-group15-sha256,diffie-hellman-group15-sha256@ssh.com,diffie-hellman-group15-sha384@ssh.com,diffie-hellman-group16-sha256,diffie-hellman-group16-sha384@ssh.com,diffie-hellman-group16-sha512@ssh.com,diffie-hellman-group18-sha512@ssh.com";
        let enc = "aes128-cbc,aes128-ctr,aes192-cbc,aes192-ctr,aes256-cbc,aes256-ctr,blowfish-cbc,blowfish-ctr,cast128-cbc,cast128-ctr,idea-cbc,idea-ctr,serpent128-cbc,serpent128-ctr,serpent192-cbc,serpent192-ctr,serpent256-cbc,serpent256-ctr,3des-cbc,3des-ctr,twofish128-cbc,twofish128-ctr,twofish192-cbc,twofish192-ctr,twofish256-cbc,twofish256-ctr,twofish-cbc,arcfour,arcfour128,arcfour256";
        let mac = "hmac-sha1,hmac-sha1-96,hmac-md5,hmac-md5-96,hmac-sha2-256,hmac-sha2-512";
        let comp = "zlib@openssh.com,zlib,none";
        let h = Hassh::of(kex.as_bytes(), enc.as_bytes(), mac.as_bytes(), comp.as_bytes());
        assert_eq!(h.hash, "8a8ae540028bf433cd68356c1b9e8d5b");
        assert_eq!(h.algorithms, format!("{kex};{enc};{mac};{comp}"));
        // Empty lists still give three separators (MD5 of ";;;").
        assert_eq!(Hassh::of(b"", b"", b"", b"").hash, "95420f9d932ddd22833f17b96a80bedb");
        // The stored text is bounded and clean; the hash is over the bytes as sent.
        let long = vec![b'a'; 5000];
        let h = Hassh::of(&long, b"x\x1b[2J", b"", b"");
        assert_eq!(h.algorithms.len(), MAX_HASSH_ALGORITHMS);
        let mut sent = long.clone();
        sent.extend_from_slice(b";x\x1b[2J;;");
        assert_eq!(h.hash, hex(&md5::Md5::digest(&sent)));
        let h = Hassh::of(b"kex", "é\u{202e}".repeat(1500).as_bytes(), b"", b"");
        assert!(h.algorithms.len() <= MAX_HASSH_ALGORITHMS && !h.algorithms.contains('\u{202e}'), "{}", h.algorithms.len());
    }

    #[test]
    fn device_names_from_version_strings() {
        let key = "SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10", None, "OpenSSH 9.2 on Linux (Debian)"),
            ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10", Some(key), "OpenSSH 9.2 on Linux (Debian), key SHA256:abcdefghijkl…"),
            ("SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6", None, "OpenSSH 8.9 on Linux (Ubuntu)"),
            ("SSH-2.0-OpenSSH_7.9p1 Raspbian-10+deb10u2", None, "OpenSSH 7.9 on Linux (Raspbian)"),
            ("SSH-2.0-OpenSSH_9.3 FreeBSD-20230316", None, "OpenSSH 9.3 on FreeBSD"),
            ("SSH-2.0-OpenSSH_9.6", None, "OpenSSH 9.6"),
            ("SSH-2.0-OpenSSH_for_Windows_8.1", None, "OpenSSH 8.1 on Windows"),
            ("SSH-2.0-OpenSSH_9.9 some words", None, "OpenSSH 9.9"),
            ("SSH-2.0-PuTTY_Release_0.78", None, "PuTTY 0.78"),
            ("SSH-2.0-WinSCP_release_5.21.6", None, "WinSCP 5.21.6"),
            ("SSH-2.0-dropbear_2022.83", None, "Dropbear 2022.83"),
            ("SSH-2.0-paramiko_3.4.0", None, "Paramiko 3.4.0"),
            ("SSH-2.0-libssh_0.10.4", None, "libssh 0.10.4"),
            ("SSH-2.0-libssh2_1.10.0", None, "libssh2 1.10.0"),
            ("SSH-2.0-JSCH-0.1.54", None, "JSCH 0.1.54"),
            ("SSH-2.0-Go", None, "Go"),
            ("SSH-2.0-russh_0.65.1", None, "russh 0.65.1"),
            ("SSH-1.99-OpenSSH_3.9p1", None, "OpenSSH 3.9"),
            ("SSH-2.0-Sun_SSH_1.1", None, "Sun SSH_1.1"),
            ("", None, "unknown SSH client"),
            ("", Some("SHA256:short"), "unknown SSH client, key SHA256:short"),
            ("SSH-1.5-ancient", None, "SSH-1.5-ancient"),
            ("SSH-2.0-evil\x1b[2J\u{202e}", None, "evil[2J"),
        ];
        for (version, key, want) in cases {
            assert_eq!(device_name(version, *key), *want, "{version:?}");
        }
        let long = format!("SSH-2.0-{}_{} {}", "N".repeat(300), "9".repeat(300), "Debian");
        let name = device_name(&long, None);
        assert!(name.chars().count() <= MAX_DEVICE_NAME, "{name}");
        assert!(name.starts_with(&"N".repeat(39)) && name.ends_with("on Linux (Debian)"), "{name}");
    }

    /// The notice: not for the account's first device, then once per new
    /// device (never for a known one), with what, when, where and how to
    /// report it; every placeholder filled.
    #[test]
    fn a_new_device_of_a_known_account_mails_a_notice() {
        use crate::core::login::{Attempt, Credential, Outcome};
        use crate::model::Secret;
        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::core::test_core(dir.path(), "kdf: {\n  workers: 2\n  queue: 32\n}\n");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let t0 = Millis(1_800_000_000_000);
        let sysop = Actor::Cli("root".into());
        let pw = "Correct-Horse-Battery-9";
        rt.block_on(core.add_user("alice", Some("alice@example.org"), &Secret::new(pw.into()), &[], &sysop, t0)).expect("user");
        rt.block_on(core.add_user("carol", Some("carol@example.org"), &Secret::new(pw.into()), &["sysops".into()], &sysop, t0)).expect("sysop");
        let offers = [Hassh::of(b"curve25519-sha256", b"aes128-ctr", b"hmac-sha2-256", b"none"), Hassh::of(b"curve25519-sha256", b"aes256-ctr", b"hmac-sha2-256", b"none")];
        let login = |hassh: &Hassh, ip: &str, now: Millis| {
            let mut attempt = Attempt::new(ip.parse().expect("ip"), "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10".into(), "ssh", now);
            attempt.hassh = Some(hassh.clone());
            let secret = Secret::new(pw.to_owned());
            match rt.block_on(core.submit(&mut attempt, Credential::Password { username: "alice", password: &secret, method: "keyboard-interactive" }, now)) {
                Outcome::Accepted(a) => a.device_id,
                other => panic!("{other:?}"),
            }
        };
        let notices = || core.mail_queue(true).expect("queue").into_iter().filter(|m| m.template == "device_new").count();
        let first = login(&offers[0], "192.0.2.1", t0);
        assert_eq!(notices(), 0, "the first device of an account is not news");
        assert_eq!(login(&offers[0], "192.0.2.2", t0.plus(std::time::Duration::from_secs(60))), first, "a known device from another address");
        assert_eq!(notices(), 0);
        let t = t0.plus(std::time::Duration::from_secs(120));
        let second = login(&offers[1], "198.51.100.7", t);
        assert_ne!(second, first);
        assert_eq!(notices(), 1);
        let mail = core.due_mail(t, 10).expect("due").into_iter().find(|m| m.subject == "Sign-in to your account from a new device").expect("the notice");
        assert_eq!(mail.to, "alice@example.org");
        let text = &mail.body.text;
        for want in [
            "Hello alice,",
            &format!("OpenSSH 9.2 on Linux (Debian) (device #{second})"),
            "198.51.100.7",
            &core.settings().clock.show_zoned(t),
            "Every required step of the login passed.",
            &format!("remove device #{second}"),
            "report it to your sysop (carol@example.org)",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(!text.contains("{{") && !mail.body.html.contains("{{"), "every placeholder filled:\n{text}");
        // The events say so too.
        let new = core.events(&crate::store::events::EventFilter { event_type: Some(EventType::DeviceNew), limit: 10, ..Default::default() }).expect("events");
        assert_eq!(new.len(), 2, "{new:?}");
        assert_eq!((new[0].device_id, new[0].details["first_of_account"].as_bool(), new[0].details["hassh"].as_str()), (Some(second), Some(false), Some(offers[1].hash.as_str())));
        assert_eq!(new[1].details["first_of_account"], true);
    }

    /// Web visits through a link: the browser is a `web` device named from
    /// its user agent; a newer version is the same device (its name
    /// follows); the account's first device is not mailed about, a later
    /// new one is; one link adds at most `MAX_NEW_DEVICES_PER_LINK`.
    #[test]
    fn web_visits_through_a_link_are_web_devices() {
        use crate::core::mfa::{Method, WebClient};
        use crate::model::Secret;
        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::core::test_core(dir.path(), "kdf: {\n  workers: 2\n  queue: 32\n}\n");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let t0 = Millis(1_800_000_000_000);
        let sysop = Actor::Cli("root".into());
        let alice = rt.block_on(core.add_user("alice", Some("alice@example.org"), &Secret::new("Correct-Horse-Battery-9".into()), &[], &sysop, t0)).expect("user");
        rt.block_on(core.start_otp_enrollment(&alice, Method::Totp, &sysop, t0)).expect("link");
        let mail = core.due_mail(t0, 10).expect("mail");
        let text = &mail[0].body.text;
        let start = text.find("/otp/enroll/").expect("link") + "/otp/enroll/".len();
        let token = text[start..].split_whitespace().next().expect("token").to_owned();
        let client = |ua: &str, ip: &str| WebClient { ip: Some(ip.parse().expect("ip")), user_agent: Some(ua.to_owned()) };
        let firefox = |v: &str| format!("Mozilla/5.0 (X11; Linux x86_64; rv:{v}) Gecko/20100101 Firefox/{v}");
        let notices = || core.mail_queue(true).expect("queue").into_iter().filter(|m| m.template == "web_device_new").count();
        let open = |ua: &str, ip: &str, at: Millis| rt.block_on(core.otp_enrollment_view_from(&token, &client(ua, ip), at)).expect("view");

        let view = open(&firefox("128.0"), "192.0.2.1", t0);
        let secret = crate::core::otp::base32_decode(&view.secret_base32).expect("base32");
        let step = crate::core::otp::step_of(t0.0 / 1000 + 60, 30);
        let near: Vec<String> = (step - 2..=step + 2).map(|c| crate::core::otp::hotp(crate::core::otp::Algorithm::Sha1, &secret, c, 6)).collect();
        let wrong_code = ["000000", "111111", "222222", "333333", "444444", "555555"].into_iter().find(|c| !near.iter().any(|n| n == c)).expect("a wrong code");
        let list = core.devices_of(alice.id).expect("devices");
        assert_eq!(list.len(), 1, "{list:?}");
        let web = &list[0];
        assert_eq!((web.device_type.as_str(), web.device_name.as_str(), web.client_version.as_str()), ("web", "Firefox 128 on Linux", firefox("128.0").as_str()));
        assert_eq!((web.login_count, web.failure_count, web.last_ip.as_str(), web.is_trusted), (0, 0, "192.0.2.1", false));
        assert_eq!(notices(), 0, "the account's first device is not news");

        // A newer version from another address: the same device, renamed.
        let t1 = t0.plus(std::time::Duration::from_secs(60));
        open(&firefox("133.0"), "198.51.100.7", t1);
        let again = core.device(web.id).expect("read").expect("device");
        assert_eq!((again.device_name.as_str(), again.last_ip.as_str(), again.last_seen_at.as_str()), ("Firefox 133 on Linux", "198.51.100.7", t1.rfc3339().as_str()));
        assert_eq!(core.device_addresses(web.id).expect("addresses").len(), 2);
        assert_eq!(core.devices_of(alice.id).expect("devices").len(), 1);

        // Another browser: a new device of a known account, mailed about.
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        open(chrome, "203.0.113.9", t1);
        assert_eq!(notices(), 1);
        let notice = core.due_mail(t1, 10).expect("due").into_iter().find(|m| m.subject == "A link of yours was opened on a new device").expect("the notice");
        let chrome_id = core.devices_of(alice.id).expect("devices").iter().find(|d| d.device_name == "Chrome 131 on Windows").expect("chrome").id;
        for want in [&format!("Chrome 131 on Windows (device #{chrome_id})"), "203.0.113.9", &core.settings().clock.show_zoned(t1), "The page showed the secret", "Hello alice,"] {
            assert!(notice.body.text.contains(want), "{want:?} missing from:\n{}", notice.body.text);
        }
        assert!(!notice.body.text.contains("{{") && !notice.body.html.contains("{{"), "every placeholder filled");

        // A wrong code counts a failure on its device; the event names it.
        let wrong = rt.block_on(core.otp_confirm_from(&token, wrong_code, &client(&firefox("133.0"), "198.51.100.7"), t1));
        assert!(matches!(wrong, Err(crate::core::mfa::LinkRefusal::WrongCode { .. })), "{wrong:?}");
        assert_eq!(core.device(web.id).expect("read").expect("device").failure_count, 1);
        let failed = core.events(&crate::store::events::EventFilter { event_type: Some(EventType::OtpFailed), limit: 10, ..Default::default() }).expect("events");
        assert_eq!(failed[0].device_id, Some(web.id));

        // The link's third new device is recorded; a fourth is not.
        open("curl/8.14.1", "192.0.2.1", t1);
        assert_eq!(core.devices_of(alice.id).expect("devices").len(), 3);
        open("python-requests/2.32.3", "192.0.2.1", t1);
        assert_eq!(core.devices_of(alice.id).expect("devices").len(), 3, "at most {MAX_NEW_DEVICES_PER_LINK} devices from one link");
        assert_eq!(notices(), 2);
        // Known devices still are seen through it.
        open(chrome, "192.0.2.77", t1);
        assert_eq!(core.device(chrome_id).expect("read").expect("device").last_ip, "192.0.2.77");

        let new = core.events(&crate::store::events::EventFilter { event_type: Some(EventType::DeviceNew), limit: 10, ..Default::default() }).expect("events");
        assert_eq!(new.len(), 3, "{new:?}");
        let first = new.last().expect("first");
        assert_eq!((first.device_id, first.ip.as_deref()), (Some(web.id), Some("192.0.2.1")));
        assert_eq!((first.details["device_type"].as_str(), first.details["browser"].as_str(), first.details["first_of_account"].as_bool()), (Some("web"), Some("Firefox"), Some(true)));
        assert_eq!(first.details["user_agent"].as_str(), Some(firefox("128.0").as_str()));
        // Core's own callers (no peer address) record no device.
        let none = WebClient::default();
        assert_eq!(rt.block_on(core.see_web_device(&alice, 0, &none, WebUse::Opened, t1)), None);

        // The first SSH login is still the account's first login: no
        // notice; a second SSH client is news.
        use crate::core::login::{Attempt, Credential, Outcome};
        let ssh_notices = || core.mail_queue(true).expect("queue").into_iter().filter(|m| m.template == "device_new").count();
        let login = |version: &str| {
            let mut attempt = Attempt::new("192.0.2.1".parse().expect("ip"), version.into(), "ssh", t1);
            let secret = Secret::new("Correct-Horse-Battery-9".to_owned());
            match rt.block_on(core.submit(&mut attempt, Credential::Password { username: "alice", password: &secret, method: "keyboard-interactive" }, t1)) {
                Outcome::Accepted(a) => a.device_id,
                other => panic!("{other:?}"),
            }
        };
        login("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10");
        assert_eq!(ssh_notices(), 0, "the first login, though web devices came before");
        login("SSH-2.0-PuTTY_Release_0.78");
        assert_eq!(ssh_notices(), 1);
    }

    #[test]
    fn a_device_is_its_version_hassh_and_key() {
        let a = Hassh::of(b"curve25519-sha256", b"aes128-ctr", b"hmac-sha2-256", b"none");
        let b = Hassh::of(b"curve25519-sha256", b"aes256-gcm@openssh.com", b"hmac-sha2-256", b"none");
        let v = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10";
        let id = |h: Option<&Hassh>, k: Option<&'static str>| DeviceIdentity { client_version: v, hassh: h, key_fingerprint: k }.fingerprint();
        let all = [id(Some(&a), None), id(Some(&b), None), id(None, None), id(Some(&a), Some("SHA256:k1")), id(Some(&a), Some("SHA256:k2"))];
        for (i, x) in all.iter().enumerate() {
            assert_eq!(x.len(), 32);
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_eq!(id(Some(&a), None), id(Some(&a.clone()), None), "the same offer is the same device");
        // Parts never run together: ("ab", "") is not ("a", "b").
        let h = Hassh { hash: String::new(), algorithms: String::new() };
        let x = DeviceIdentity { client_version: "ab", hassh: Some(&h), key_fingerprint: Some("") }.fingerprint();
        let y = DeviceIdentity { client_version: "a", hassh: Some(&h), key_fingerprint: Some("b") }.fingerprint();
        assert_ne!(x, y);
        // Before 0010 a device was the SHA-256 of its version string.
        let legacy = DeviceIdentity { client_version: v, hassh: None, key_fingerprint: None }.legacy_fingerprint();
        assert_eq!(legacy, hex(&sha2::Sha256::digest(v.as_bytes())[..16]));
    }
}
