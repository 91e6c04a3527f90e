//! Hardware keys (SPEC §6): WebAuthn registration by emailed single-use
//! link, the keys' list, names and removal. webauthn-rs does the
//! ceremonies; this module keeps what the library leaves to its caller:
//! the ceremony state server-side, used once and expiring within five
//! minutes; the AAGUID (which the library keeps only for some attestation
//! formats) read from the authenticator data; the key's name; the events.
//!
//! Choices, written down for the docs:
//! - Every key is registered with the library's *security key* ceremony
//!   (user verification preferred, not required): a key is a factor next
//!   to the password, so a key without a PIN is still a key. The page asks
//!   for a security key or for this device's own authenticator (Touch ID,
//!   Windows Hello, a passkey manager); the second only changes the
//!   browser's hints (`authenticatorAttachment: platform`).
//! - `credential_type` is `passkey` for a backup-eligible credential (it
//!   may be synced to other devices) and `security_key` for one bound to
//!   a single authenticator.
//! - Registering a key does not by itself raise the level a login must
//!   reach (a code does, to 2): level 3 is asked when policy says so
//!   (group policy, an imposed level) or a risky login steps up to it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use webauthn_rs::prelude::*;

use super::accounts::Actor;
use super::mfa::{LinkRefusal, WebClient};
use super::secrets::{new_token, token_hash};
use super::{Core, Error, Result};
use crate::model::{Event, EventType, Millis, Severity, User};
use crate::store::mfa::NewMail;
use crate::store::webauthn::{KeyRow, NewKey};

/// A ceremony's state lives this long on the server (SPEC §6: within 5 minutes).
pub const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);
/// What the browser is told it has (a little less than the server keeps the state).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(4 * 60);
/// Ceremonies pending at once, all users together; past it the oldest goes.
const MAX_CEREMONIES: usize = 4096;
/// Ceremonies pending on one link at once (tabs); past it the oldest goes.
const MAX_PER_LINK: usize = 3;
/// Keys one account may have.
pub const MAX_KEYS_PER_USER: u32 = 20;
/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Well-known AAGUIDs and the authenticators they name (see
/// `aaguids.SOURCE.md`).
const AAGUIDS: &str = include_str!("aaguids.txt");

/// The authenticator an AAGUID names, from the shipped table.
pub fn authenticator_name(aaguid: &str) -> Option<&'static str> {
    AAGUIDS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(id, _)| id.eq_ignore_ascii_case(aaguid))
        .map(|(_, name)| name.trim())
}

/// A ceremony waiting for the browser's answer.
enum Pending {
    /// `attested`: the ceremony asked for attestation and accepts only a
    /// chain to the roots it was started with.
    Register { state: SecurityKeyRegistration, token_id: i64, user_id: i64, attested: bool },
}

struct Ceremony {
    pending: Pending,
    /// For the per-link cap: the link (token row) it belongs to.
    link: i64,
    created: Millis,
    expires: Millis,
}

/// Ceremony states by the SHA-256 of their id (the id itself goes only to
/// the browser). Bounded; expired entries are dropped as new ones come.
#[derive(Default)]
pub struct Ceremonies {
    map: Mutex<HashMap<String, Ceremony>>,
}

impl Ceremonies {
    fn insert(&self, pending: Pending, link: i64, now: Millis) -> Result<String> {
        let (id, hash) = new_token().map_err(Error::Invalid)?;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, c| c.expires > now);
        let mut same_link: Vec<(Millis, String)> = map.iter().filter(|(_, c)| c.link == link).map(|(k, c)| (c.created, k.clone())).collect();
        if same_link.len() >= MAX_PER_LINK {
            same_link.sort();
            for (_, k) in &same_link[..=same_link.len() - MAX_PER_LINK] {
                map.remove(k);
            }
        }
        if map.len() >= MAX_CEREMONIES {
            if let Some(oldest) = map.iter().min_by_key(|(_, c)| c.created).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(hash, Ceremony { pending, link, created: now, expires: now.plus(CEREMONY_TTL) });
        Ok(id)
    }

    /// Takes a ceremony out (it is used once, whatever the answer); `None`
    /// when unknown or expired.
    fn take(&self, id: &str, now: Millis) -> Option<Pending> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let c = map.remove(&token_hash(id))?;
        (c.expires > now).then_some(c.pending)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

/// Why a registration was refused; `message` is what the page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    Link(LinkRefusal),
    /// The ceremony is unknown, used or older than [`CEREMONY_TTL`].
    CeremonyExpired,
    /// The browser's answer did not verify (or was not one).
    NotVerified(String),
    AlreadyRegistered,
    TooManyKeys,
    BadName(String),
    /// Attestation roots are configured and this key's attestation does
    /// not chain to one of them (or it brought none).
    UntrustedMaker,
}

impl KeyRefusal {
    pub fn message(&self) -> String {
        match self {
            KeyRefusal::Link(LinkRefusal::InvalidToken) => "This link is not valid any more. Ask for a new one.".into(),
            KeyRefusal::Link(LinkRefusal::TooManyTries) => "Too many tries with this link. Ask for a new one.".into(),
            KeyRefusal::Link(_) => "The gate cannot do this right now. Try again in a minute.".into(),
            KeyRefusal::CeremonyExpired => "That took too long (or the page was used twice). Press the button to try again.".into(),
            KeyRefusal::NotVerified(why) => format!("The key's answer was not accepted: {why}. Press the button to try again."),
            KeyRefusal::AlreadyRegistered => "This key is already registered.".into(),
            KeyRefusal::TooManyKeys => format!("This account already has {MAX_KEYS_PER_USER} keys: remove one first."),
            KeyRefusal::BadName(why) => why.clone(),
            KeyRefusal::UntrustedMaker => "This gate accepts only keys from the makers its sysop lists, and this key is not one of them (or did not say who made it). Use another key, or ask the sysop.".into(),
        }
    }

    /// For the log line of the web route (no user input in it).
    pub fn outcome(&self) -> &'static str {
        match self {
            KeyRefusal::Link(LinkRefusal::InvalidToken) => "invalid_token",
            KeyRefusal::Link(LinkRefusal::TooManyTries) => "too_many_tries",
            KeyRefusal::Link(_) => "unavailable",
            KeyRefusal::CeremonyExpired => "ceremony_expired",
            KeyRefusal::NotVerified(_) => "not_verified",
            KeyRefusal::AlreadyRegistered => "already_registered",
            KeyRefusal::TooManyKeys => "too_many_keys",
            KeyRefusal::BadName(_) => "bad_name",
            KeyRefusal::UntrustedMaker => "untrusted_maker",
        }
    }
}

/// What the enrollment page shows before the ceremony.
#[derive(Debug, Clone)]
pub struct KeyEnrollView {
    pub username: String,
    pub keys: u32,
}

/// A key name as typed: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no
/// control or bidirectional-override characters. Empty means "choose one".
pub fn clean_key_name(input: &str) -> std::result::Result<Option<String>, String> {
    let name = input.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("A key's name has at most {MAX_NAME_CHARS} characters."));
    }
    if name != crate::model::strip_unsafe(name) || name.chars().any(char::is_control) {
        return Err("A key's name cannot hold control characters.".into());
    }
    Ok(Some(name.to_owned()))
}

/// The AAGUID in a registration's attestation object (CBOR map with
/// `authData`: rpIdHash 32 | flags 1 | signCount 4 | AAGUID 16 | ...
/// when flag AT, 0x40, is set), lowercase and hyphenated.
pub fn aaguid_of(attestation_object: &[u8]) -> Option<String> {
    use serde_cbor_2::Value;
    let Value::Map(map) = serde_cbor_2::from_slice::<Value>(attestation_object).ok()? else { return None };
    let Value::Bytes(auth) = map.get(&Value::Text("authData".into()))? else { return None };
    if auth.len() < 53 || auth[32] & 0x40 == 0 {
        return None;
    }
    Some(Uuid::from_slice(&auth[37..53]).ok()?.hyphenated().to_string())
}

/// What a registration's attestation statement says, for the sysop (the
/// event of a refused key): its format, and the first certificate's
/// subject, issuer and SHA-256 fingerprint when it has a chain (`x5c`).
pub fn attestation_summary(attestation_object: &[u8]) -> serde_json::Value {
    use serde_cbor_2::Value;
    use x509_cert::der::Decode;
    let mut out = serde_json::Map::new();
    let Ok(Value::Map(map)) = serde_cbor_2::from_slice::<Value>(attestation_object) else {
        out.insert("format".into(), "unreadable".into());
        return out.into();
    };
    if let Some(Value::Text(fmt)) = map.get(&Value::Text("fmt".into())) {
        out.insert("format".into(), crate::model::strip_unsafe(fmt).chars().take(32).collect::<String>().into());
    }
    let chain = match map.get(&Value::Text("attStmt".into())) {
        Some(Value::Map(st)) => match st.get(&Value::Text("x5c".into())) {
            Some(Value::Array(certs)) => certs.iter().filter_map(|c| if let Value::Bytes(b) = c { Some(b.as_slice()) } else { None }).collect::<Vec<_>>(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    out.insert("certificates".into(), chain.len().into());
    if let Some(leaf) = chain.first() {
        use sha2::Digest;
        out.insert("sha256".into(), super::devices::hex(&sha2::Sha256::digest(leaf)).into());
        if let Ok(cert) = x509_cert::Certificate::from_der(leaf) {
            // Names as RFC 4514 text, cleaned: they come from the device.
            let name = |n: &x509_cert::name::Name| crate::model::strip_unsafe(&n.to_string()).chars().take(200).collect::<String>();
            out.insert("subject".into(), name(&cert.tbs_certificate().subject()).into());
            out.insert("issuer".into(), name(&cert.tbs_certificate().issuer()).into());
        }
    }
    out.into()
}

/// Reads the PEM files of `webauthn.attestation_ca`: every certificate in
/// them is a root an authenticator's attestation may chain to (`None`: no
/// files, attestation is not asked for). A file that cannot be read,
/// holds no certificate, or a certificate that does not parse or cannot
/// anchor a chain is a problem naming the file and the certificate's place
/// in it.
pub fn attestation_roots(files: &[std::path::PathBuf]) -> std::result::Result<Option<AttestationCaList>, Vec<String>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    if files.is_empty() {
        return Ok(None);
    }
    let mut all = AttestationCaList::default();
    let mut problems = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", path.display()));
                continue;
            }
        };
        let mut found = 0;
        let mut rest = text.as_str();
        while let Some(start) = rest.find(BEGIN) {
            found += 1;
            let Some(len) = rest[start..].find(END) else {
                problems.push(format!("{}: certificate {found} has no \"{END}\" line", path.display()));
                break;
            };
            let block = &rest[start..start + len + END.len()];
            match AttestationCaList::try_from(block.as_bytes()) {
                Ok(one) => match one.cas().values().try_for_each(|ca| can_sign_certificates(ca.ca())) {
                    Ok(()) => all.union(&one),
                    Err(why) => problems.push(format!("{}: certificate {found} cannot be a root: {why}", path.display())),
                },
                Err(e) => problems.push(format!("{}: certificate {found} is not a valid X.509 certificate ({e})", path.display())),
            }
            rest = &rest[start + len + END.len()..];
        }
        if found == 0 {
            problems.push(format!("{} holds no PEM certificate (\"{BEGIN}\")", path.display()));
        }
    }
    if problems.is_empty() { Ok(Some(all)) } else { Err(problems) }
}

/// Whether `cert` can anchor an attestation chain, as the library's chain
/// check will require: a CA (basicConstraints CA:TRUE) whose key usage
/// includes signing certificates. An authenticator's own attestation
/// certificate is not one (the usual mistake: list its maker's root).
fn can_sign_certificates(cert: &x509_cert::Certificate) -> std::result::Result<(), &'static str> {
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
    let tbs = cert.tbs_certificate();
    if !matches!(tbs.get_extension::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca) {
        return Err("it is not a CA certificate (no basicConstraints CA:TRUE); list the maker's root, not a key's own certificate");
    }
    if !matches!(tbs.get_extension::<KeyUsage>(), Ok(Some((_, ku))) if ku.key_cert_sign()) {
        return Err("its key usage does not include signing certificates (keyCertSign)");
    }
    Ok(())
}

/// Whether a counter may follow the stored one (SPEC §6): both 0 is "no
/// counter"; otherwise it must grow.
pub fn counter_ok(stored: u32, new: u32) -> bool {
    (stored == 0 && new == 0) || new > stored
}

/// A key as the CLI and the pages list it (the seed's field names).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: i64,
    pub name: String,
    pub credential_type: String,
    pub authenticator_attachment: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub user_id: i64,
    pub authenticator: Option<String>,
    pub aaguid: Option<String>,
    pub transports: Vec<String>,
    pub attestation_format: String,
    pub attestation_verified: bool,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub sign_count: u32,
}

impl From<&KeyRow> for KeyInfo {
    fn from(k: &KeyRow) -> KeyInfo {
        KeyInfo {
            id: k.id,
            name: k.name.clone(),
            credential_type: k.credential_type.clone(),
            authenticator_attachment: k.authenticator_attachment.clone(),
            created_at: k.created_at.rfc3339(),
            last_used_at: k.last_used_at.map(|t| t.rfc3339()),
            user_id: k.user_id,
            authenticator: k.authenticator_name.clone(),
            aaguid: k.aaguid.clone(),
            transports: k.transports.clone(),
            attestation_format: k.attestation_format.clone(),
            attestation_verified: k.attestation_verified,
            backup_eligible: k.backup_eligible,
            backup_state: k.backup_state,
            sign_count: k.sign_count,
        }
    }
}

/// The relying party named by `base_url` (an `https://` URL; checked at
/// config load): its host is the RP ID, which must be a name.
pub fn relying_party(base_url: &str, rp_name: &str) -> std::result::Result<Webauthn, String> {
    let origin = Url::parse(base_url).map_err(|e| format!("web.base_url {base_url:?}: {e}"))?;
    let Some(host) = origin.domain() else {
        return Err(format!(
            "web.base_url {base_url:?} names an address, not a host name: browsers allow hardware keys only for a name (e.g. \"https://gate.example.org\" or \"https://localhost:8443\")"
        ));
    };
    WebauthnBuilder::new(host, &origin)
        .and_then(|b| b.rp_name(rp_name).timeout(BROWSER_TIMEOUT).build())
        .map_err(|e| format!("web.base_url {base_url:?}: cannot serve hardware keys: {e}"))
}

/// The account's WebAuthn user handle: stable, not the database id (the
/// authenticator may keep it), derived with the gate's key.
fn user_handle(core: &Core, user_id: i64) -> Uuid {
    let hex = core.keyring.keyed_hash("webauthn-user", &user_id.to_be_bytes());
    Uuid::try_parse(&hex[..32]).unwrap_or_else(|_| Uuid::nil())
}

fn attachment_name(a: Option<&str>) -> Option<&'static str> {
    match a {
        Some("platform") => Some("platform"),
        Some("cross-platform") => Some("cross-platform"),
        _ => None,
    }
}

/// What the page posts to finish a registration.
#[derive(serde::Deserialize)]
struct FinishBody {
    ceremony: String,
    #[serde(default)]
    name: String,
    /// JS `credential.authenticatorAttachment` (not in the library's type).
    #[serde(default)]
    attachment: Option<String>,
    credential: RegisterPublicKeyCredential,
}

impl Core {
    fn relying_party(&self) -> Result<Webauthn> {
        let s = self.settings();
        relying_party(&s.web.base_url, &s.mfa.issuer).map_err(Error::Invalid)
    }

    /// Mails `user` a single-use link to register a hardware key (valid for
    /// `mfa.link_ttl`; an earlier such link stops working).
    pub async fn send_webauthn_enrollment(&self, user: &User, actor: &Actor, now: Millis) -> Result<super::mfa::EnrollmentSent> {
        let email = user.email.clone().ok_or_else(|| Error::Invalid(format!("user {} has no email address to send the link to", user.username)))?;
        self.relying_party()?;
        let s = self.settings();
        let (token, hash) = new_token().map_err(Error::Invalid)?;
        let link = format!("{}/webauthn/enroll/{token}", s.web.base_url);
        let expires = super::mail::humanize(s.mfa.link_ttl);
        let voided_earlier = self.store.live_tokens(user.id, "webauthn_enroll", now)? > 0;
        let replaces = if voided_earlier { " It replaces the link mailed earlier: that one no longer works." } else { "" };
        let (subject, body) = self.seal_mail(
            "webauthn_enroll",
            &email,
            &[("username", &user.username), ("issuer", &s.mfa.issuer), ("link", &link), ("expires", &expires), ("replaces", replaces)],
        )?;
        let ev = actor.stamp(
            Event::new(EventType::MfaEnrollmentSent, Severity::Info, format!("hardware key enrollment link mailed to {}", user.username), now)
                .user(Some(user.id), Some(&user.username))
                .detail("method", "webauthn")
                .detail("expires_at", now.plus(s.mfa.link_ttl).rfc3339())
                .detail("earlier_link_voided", voided_earlier),
        );
        self.store.issue_token_with_mail(
            user.id,
            "webauthn_enroll",
            &hash,
            &serde_json::json!({ "tries": 0 }),
            now.plus(s.mfa.link_ttl),
            &NewMail { recipient: &email, subject: &subject, body_sealed: &body, template: "webauthn_enroll" },
            &[ev],
            now,
        )?;
        self.mail_queued.notify_one();
        Ok(super::mfa::EnrollmentSent { to: email, voided_earlier })
    }

    fn key_enrollment(&self, token: &str, now: Millis) -> std::result::Result<(crate::store::mfa::TokenRow, User), LinkRefusal> {
        let t = self.store.token(&token_hash(token)).map_err(|_| LinkRefusal::Unavailable)?.ok_or(LinkRefusal::InvalidToken)?;
        if t.purpose != "webauthn_enroll" || t.used_at.is_some() || t.expires_at <= now {
            return Err(LinkRefusal::InvalidToken);
        }
        let user = self.store.user_by_id(t.user_id).map_err(|_| LinkRefusal::Unavailable)?.ok_or(LinkRefusal::InvalidToken)?;
        Ok((t, user))
    }

    /// Whether `token` is a usable key enrollment link, and for whom.
    pub fn webauthn_enrollment_view(&self, token: &str, now: Millis) -> std::result::Result<KeyEnrollView, LinkRefusal> {
        let (_, user) = self.key_enrollment(token, now)?;
        let keys = self.store.webauthn_key_count(user.id).map_err(|_| LinkRefusal::Unavailable)?;
        Ok(KeyEnrollView { username: user.username, keys })
    }

    /// Starts a registration on the link `token`: the options for
    /// `navigator.credentials.create` (JSON, with `ceremony`, the id the
    /// page sends back). `platform` asks for this device's authenticator
    /// rather than a security key.
    pub async fn webauthn_register_start(&self, token: &str, platform: bool, client: &WebClient, now: Millis) -> std::result::Result<serde_json::Value, KeyRefusal> {
        let (t, user) = self.key_enrollment(token, now).map_err(KeyRefusal::Link)?;
        let rp = self.relying_party().map_err(|e| {
            tracing::error!(error = %e, "webauthn: no relying party");
            KeyRefusal::Link(LinkRefusal::Unavailable)
        })?;
        let existing = self.store.webauthn_keys(user.id).map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
        if existing.len() as u32 >= MAX_KEYS_PER_USER {
            return Err(KeyRefusal::TooManyKeys);
        }
        let exclude: Vec<CredentialID> = existing.iter().map(|k| CredentialID::from(k.credential_id.clone())).collect();
        // With attestation roots configured the library asks for the
        // attestation ("direct") and its finish accepts only a chain to one
        // of them (none and self attestation are refused).
        let roots = attestation_roots(&self.settings().attestation_ca).map_err(|problems| {
            // Checked at start and reload; a file changed since refuses
            // registrations (it never turns the check off).
            tracing::error!(problems = %problems.join("; "), "webauthn: the attestation roots cannot be read");
            KeyRefusal::Link(LinkRefusal::Unavailable)
        })?;
        let attested = roots.is_some();
        let (options, state) = rp
            .start_securitykey_registration(user_handle(self, user.id), &user.username, &user.username, Some(exclude), roots, None)
            .map_err(|e| {
                tracing::error!(error = %e, "webauthn: starting a registration");
                KeyRefusal::Link(LinkRefusal::Unavailable)
            })?;
        let ceremony = self
            .ceremonies
            .insert(Pending::Register { state, token_id: t.id, user_id: user.id, attested }, t.id, now)
            .map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
        self.see_web_device(&user, t.id, client, super::devices::WebUse::Opened, now).await;
        let mut json = serde_json::to_value(&options).map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
        // The library asks for credProtect "userVerificationRequired" (not
        // enforced) on this ceremony, whose user verification is only
        // preferred; Chromium refuses that pair for a non-resident key
        // ("Requested protection policy is inconsistent..."). A key that
        // is a second factor after the password needs no such protection.
        if let Some(ext) = json["publicKey"]["extensions"].as_object_mut() {
            ext.remove("credentialProtectionPolicy");
            ext.remove("enforceCredentialProtectionPolicy");
        }
        if platform {
            // Only the browser's hints change (the state does not check them).
            let pk = &mut json["publicKey"];
            pk["hints"] = serde_json::json!(["client-device"]);
            pk["authenticatorSelection"]["authenticatorAttachment"] = serde_json::json!("platform");
        }
        json["ceremony"] = serde_json::Value::String(ceremony);
        Ok(json)
    }

    /// Finishes a registration with the page's answer (`body`, JSON: the
    /// ceremony id, the key's name, the attachment and the credential).
    pub async fn webauthn_register_finish(&self, token: &str, body: &[u8], client: &WebClient, now: Millis) -> std::result::Result<KeyInfo, KeyRefusal> {
        let (t, user) = self.key_enrollment(token, now).map_err(KeyRefusal::Link)?;
        let body: FinishBody = serde_json::from_slice(body).map_err(|_| KeyRefusal::NotVerified("the browser sent no credential".into()))?;
        let name = clean_key_name(&body.name).map_err(KeyRefusal::BadName)?;
        let Some(Pending::Register { state, token_id, user_id, attested }) = self.ceremonies.take(&body.ceremony, now) else {
            return Err(KeyRefusal::CeremonyExpired);
        };
        if token_id != t.id || user_id != user.id {
            return Err(KeyRefusal::CeremonyExpired);
        }
        let rp = self.relying_party().map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
        let key = match rp.finish_securitykey_registration(&body.credential, &state) {
            Ok(k) => k,
            Err(e) => {
                let untrusted = matches!(
                    e,
                    WebauthnError::AttestationNotVerifiable | WebauthnError::AttestationChainNotTrusted(_) | WebauthnError::AttestationUntrustedAaguid | WebauthnError::AttestationFormatMissingAaguid
                );
                let device = self.see_web_device(&user, t.id, client, super::devices::WebUse::WrongCode, now).await;
                self.record(client.stamp(
                    Event::new(EventType::OtpFailed, Severity::Low, format!("a hardware key's registration for {} did not verify", user.username), now)
                        .user(Some(user.id), Some(&user.username))
                        .device(device)
                        .detail("stage", "webauthn_registration")
                        .detail("method", "webauthn")
                        .detail("error", e.to_string())
                        .detail("attestation", attestation_summary(&body.credential.response.attestation_object)),
                ))
                .await;
                let tries = self.store.count_on_token(t.id, "tries").ok().flatten().unwrap_or(0);
                if tries >= i64::from(super::mfa::ENROLL_TRIES) {
                    let _ = self.store.burn_token(t.id, now);
                    return Err(KeyRefusal::Link(LinkRefusal::TooManyTries));
                }
                if untrusted {
                    return Err(KeyRefusal::UntrustedMaker);
                }
                return Err(KeyRefusal::NotVerified(e.to_string()));
            }
        };
        let mut cred = Credential::from(key);
        if cred.transports.is_none() {
            // Kept with the credential: the browser's hint at sign-in.
            cred.transports = body.credential.response.transports.clone();
        }
        let aaguid = aaguid_of(&body.credential.response.attestation_object);
        let known = aaguid.as_deref().and_then(authenticator_name);
        let count = self.store.webauthn_key_count(user.id).map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
        let name = name.unwrap_or_else(|| match known {
            Some(k) => k.to_owned(),
            None => format!("Key {}", count + 1),
        });
        // As the browser reported them (`getTransports()`); the library does
        // not copy them into its record.
        let transports: Vec<String> = body.credential.response.transports.iter().flatten().map(|t| t.to_string()).collect();
        let attachment = attachment_name(body.attachment.as_deref());
        let credential_type = if cred.backup_eligible { "passkey" } else { "security_key" };
        let format = serde_json::to_value(&cred.attestation_format).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| "none".into());
        let json = serde_json::to_string(&cred).map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
        let device = self.see_web_device(&user, t.id, client, super::devices::WebUse::Confirmed, now).await;
        let ev = client.stamp(
            Event::new(EventType::WebauthnRegistered, Severity::Medium, format!("hardware key \"{name}\" registered for {}", user.username), now)
                .user(Some(user.id), Some(&user.username))
                .device(device)
                .detail("name", name.clone())
                .detail("credential_type", credential_type)
                .detail("authenticator_attachment", attachment)
                .detail("aaguid", aaguid.clone())
                .detail("authenticator", known)
                .detail("transports", transports.clone())
                .detail("attestation_format", format.clone()),
        );
        let new = NewKey {
            user_id: user.id,
            name: &name,
            credential_id: cred.cred_id.as_ref(),
            credential_json: &json,
            credential_type,
            authenticator_attachment: attachment,
            transports: &transports,
            aaguid: aaguid.as_deref(),
            authenticator_name: known,
            attestation_format: &format,
            attestation_verified: attested,
            backup_eligible: cred.backup_eligible,
            backup_state: cred.backup_state,
            user_verified: cred.user_verified,
            sign_count: cred.counter,
        };
        let id = match self.store.register_webauthn_key(&new, t.id, &[ev], now) {
            Ok(id) => id,
            Err(crate::store::Error::Conflict(m)) if m.contains("already registered") => return Err(KeyRefusal::AlreadyRegistered),
            Err(crate::store::Error::Conflict(_)) => return Err(KeyRefusal::Link(LinkRefusal::InvalidToken)),
            Err(e) => {
                tracing::error!(error = %e, "webauthn: storing a key");
                return Err(KeyRefusal::Link(LinkRefusal::Unavailable));
            }
        };
        if let Some(d) = device {
            if let Err(e) = self.store.count_device_login(d, now) {
                tracing::warn!(error = %e, "counting a web device's use");
            }
        }
        let row = self.store.webauthn_key(id).ok().flatten().ok_or(KeyRefusal::Link(LinkRefusal::Unavailable))?;
        Ok(KeyInfo::from(&row))
    }

    /// A user's keys, oldest first.
    pub fn webauthn_keys(&self, user: &User) -> Result<Vec<KeyInfo>> {
        Ok(self.store.webauthn_keys(user.id)?.iter().map(KeyInfo::from).collect())
    }

    /// One key, by id.
    pub fn webauthn_key(&self, id: i64) -> Result<KeyInfo> {
        Ok(KeyInfo::from(&self.store.webauthn_key(id)?.ok_or_else(|| Error::Invalid(format!("no hardware key {id}")))?))
    }

    /// Renames a key of `user`.
    pub async fn rename_webauthn_key(&self, user: &User, id: i64, name: &str, actor: &Actor, now: Millis) -> Result<()> {
        let name = clean_key_name(name).map_err(Error::Invalid)?.ok_or_else(|| Error::Invalid("a key's name cannot be empty".into()))?;
        let ev = actor.stamp(
            Event::new(EventType::UserUpdated, Severity::Info, format!("hardware key {id} of {} renamed to \"{name}\"", user.username), now)
                .user(Some(user.id), Some(&user.username))
                .detail("key_id", id)
                .detail("name", name.clone()),
        );
        if self.store.rename_webauthn_key(id, user.id, &name, &[ev])? {
            Ok(())
        } else {
            Err(Error::Invalid(format!("no hardware key {id} of {}", user.username)))
        }
    }

    /// Removes key `id` (of `owner` when given: a user removing their own).
    /// The last key of a user whose policy requires level 3 stays.
    pub async fn remove_webauthn_key(&self, id: i64, owner: Option<&User>, actor: &Actor, now: Millis) -> Result<KeyInfo> {
        let row = self.store.webauthn_key(id)?.ok_or_else(|| Error::Invalid(format!("no hardware key {id}")))?;
        if owner.is_some_and(|o| o.id != row.user_id) {
            return Err(Error::Invalid(format!("no hardware key {id}")));
        }
        let user = self.store.user_by_id(row.user_id)?.ok_or_else(|| Error::Invalid(format!("no hardware key {id}")))?;
        let keep_one = self.policy_level(&user) >= 3;
        let ev = actor.stamp(
            Event::new(EventType::WebauthnRemoved, Severity::Medium, format!("hardware key \"{}\" of {} removed", row.name, user.username), now)
                .user(Some(user.id), Some(&user.username))
                .detail("key_id", id)
                .detail("name", row.name.clone()),
        );
        match self.store.remove_webauthn_key(id, keep_one, &[ev]) {
            Ok(Some(r)) => Ok(KeyInfo::from(&r)),
            Ok(None) => Err(Error::Invalid(format!("no hardware key {id}"))),
            Err(crate::store::Error::Conflict(_)) => Err(Error::Invalid(format!(
                "key {id} is the last hardware key of {}, whose policy requires level 3 (a hardware key): register another key first, or lower the policy",
                user.username
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

// ---------------------------------------------------------------------
// SSH logins approved by a key (SPEC §6, issue 10 item 3).
//
// A login that must reach level 3 gets, in keyboard-interactive, a link
// `{base_url}/webauthn/approve/{id}` (a 256-bit id, kept hashed) and a
// short code; the page shows the same code, the account, the address and
// the client, and asks for a touch of one of *that account's* keys (the
// assertion's allowed credentials are only theirs, so another user's key
// cannot release it). The approval is bound to the one waiting login (the
// SSH side holds the only receiver: once it is gone the page says so),
// used once, and expires after `APPROVAL_TTL`.

/// Approvals waiting at once (each belongs to a connection already
/// admitted and past its first factor).
const MAX_APPROVALS: usize = 4096;
/// The short code's alphabet: no look-alikes (0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// Where an approval stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    Approved { key_id: i64, key_name: String },
    /// Refused on the page ("this was not me"), or by the key's check
    /// (a counter regression); the text is what the SSH user reads.
    Refused(String),
    Expired,
}

struct Approval {
    user_id: i64,
    username: String,
    ip: String,
    client: String,
    code: String,
    created: Millis,
    expires: Millis,
    state: tokio::sync::watch::Sender<ApprovalState>,
    ceremony: Option<SecurityKeyAuthentication>,
}

/// Pending approvals by the SHA-256 of their id.
#[derive(Default)]
pub struct Approvals {
    map: Mutex<HashMap<String, Approval>>,
}

/// The SSH side of an approval: what to show, and the receiver it waits on.
pub struct ApprovalTicket {
    pub link: String,
    pub code: String,
    pub expires: Millis,
    rx: tokio::sync::watch::Receiver<ApprovalState>,
}

/// What the approval page shows.
#[derive(Debug, Clone)]
pub struct ApprovalView {
    pub username: String,
    pub ip: String,
    pub client: String,
    pub code: String,
    pub seconds_left: i64,
}

/// `link` as a QR code for a terminal (two modules per character cell,
/// dark on light with a quiet zone, lines ended by CRLF for a raw
/// terminal); `None` if it does not fit.
pub fn terminal_qr(link: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(link.as_bytes(), qrcode::EcLevel::L).ok()?;
    let art = code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    Some(art.lines().collect::<Vec<_>>().join("\r\n"))
}

fn short_code() -> Result<String> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|e| Error::Invalid(format!("generating a code: {e}")))?;
    let c: String = raw.iter().map(|b| CODE_ALPHABET[(*b as usize) % CODE_ALPHABET.len()] as char).collect();
    Ok(format!("{}-{}", &c[..4], &c[4..]))
}

fn load_keys(core: &Core, user_id: i64) -> Result<Vec<(i64, SecurityKey)>> {
    let mut keys = Vec::new();
    for (id, json) in core.store.webauthn_credential_json(user_id)? {
        match serde_json::from_str::<Credential>(&json) {
            Ok(c) => keys.push((id, SecurityKey::from(c))),
            Err(e) => tracing::error!(key = id, error = %e, "webauthn: a stored key cannot be read"),
        }
    }
    Ok(keys)
}

impl Core {
    /// Whether `user` has a hardware key (level 3 is reachable).
    pub fn has_webauthn_key(&self, user_id: i64) -> Result<bool> {
        Ok(self.store.webauthn_key_count(user_id)? > 0)
    }

    /// Opens an approval for the login of `user` from `ip` with `client`
    /// (its version string): the link and code to show.
    /// It expires after `webauthn.approval_ttl`, or at `not_after` if sooner.
    pub fn start_key_approval(&self, user: &User, ip: std::net::IpAddr, client: &str, not_after: Millis, now: Millis) -> Result<ApprovalTicket> {
        let s = self.settings();
        relying_party(&s.web.base_url, &s.mfa.issuer).map_err(Error::Invalid)?;
        let (id, hash) = new_token().map_err(Error::Invalid)?;
        let code = short_code()?;
        let (tx, rx) = tokio::sync::watch::channel(ApprovalState::Pending);
        let expires = now.plus(s.webauthn.approval_ttl).min(not_after);
        let approval = Approval {
            user_id: user.id,
            username: user.username.clone(),
            ip: ip.to_canonical().to_string(),
            client: crate::model::strip_unsafe(client).chars().take(100).collect(),
            code: code.clone(),
            created: now,
            expires,
            state: tx,
            ceremony: None,
        };
        let mut map = self.approvals.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, a| a.expires > now && !a.state.is_closed());
        if map.len() >= MAX_APPROVALS {
            if let Some(oldest) = map.iter().min_by_key(|(_, a)| a.created).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(hash, approval);
        Ok(ApprovalTicket { link: format!("{}/webauthn/approve/{id}", s.web.base_url), code, expires, rx })
    }

    /// Waits up to `max` for the approval to be decided; `Expired` once
    /// its time is up.
    pub async fn wait_key_approval(&self, ticket: &mut ApprovalTicket, max: Duration) -> ApprovalState {
        let left = Duration::from_millis(ticket.expires.0.saturating_sub(Millis::now().0).max(0) as u64);
        let slice = max.min(left);
        let decided = tokio::time::timeout(slice, ticket.rx.wait_for(|s| *s != ApprovalState::Pending)).await;
        match decided {
            Ok(Ok(state)) => state.clone(),
            // The page side is gone (dropped as expired): nothing can approve it.
            Ok(Err(_)) => ApprovalState::Expired,
            Err(_) if Millis::now() >= ticket.expires => ApprovalState::Expired,
            Err(_) => ApprovalState::Pending,
        }
    }

    /// Runs `f` on a live approval (known, not expired, its login still
    /// waiting, not decided).
    fn with_approval<T>(&self, id: &str, now: Millis, f: impl FnOnce(&mut Approval) -> std::result::Result<T, KeyRefusal>) -> std::result::Result<T, KeyRefusal> {
        let mut map = self.approvals.map.lock().unwrap_or_else(|p| p.into_inner());
        let hash = token_hash(id);
        let live = map.get(&hash).is_some_and(|a| a.expires > now && !a.state.is_closed() && *a.state.borrow() == ApprovalState::Pending);
        if !live {
            if let Some(a) = map.remove(&hash) {
                if a.expires <= now {
                    a.state.send_replace(ApprovalState::Expired);
                }
            }
            return Err(KeyRefusal::Link(LinkRefusal::InvalidToken));
        }
        f(map.get_mut(&hash).expect("checked above"))
    }

    pub fn key_approval_view(&self, id: &str, now: Millis) -> std::result::Result<ApprovalView, KeyRefusal> {
        self.with_approval(id, now, |a| {
            Ok(ApprovalView { username: a.username.clone(), ip: a.ip.clone(), client: a.client.clone(), code: a.code.clone(), seconds_left: (a.expires.0 - now.0) / 1000 })
        })
    }

    /// The options of the assertion that approves `id` (the account's keys only).
    pub fn key_approval_start(&self, id: &str, now: Millis) -> std::result::Result<serde_json::Value, KeyRefusal> {
        let user_id = self.with_approval(id, now, |a| Ok(a.user_id))?;
        let keys = load_keys(self, user_id).map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
        if keys.is_empty() {
            // The library would start a ceremony no key can answer.
            return Err(KeyRefusal::NotVerified("this account has no hardware key".into()));
        }
        let rp = self.relying_party().map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
        let creds: Vec<SecurityKey> = keys.into_iter().map(|(_, k)| k).collect();
        let (options, state) = rp.start_securitykey_authentication(&creds).map_err(|e| {
            tracing::error!(error = %e, "webauthn: starting an assertion");
            KeyRefusal::Link(LinkRefusal::Unavailable)
        })?;
        self.with_approval(id, now, |a| {
            a.ceremony = Some(state);
            Ok(())
        })?;
        serde_json::to_value(&options).map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))
    }

    /// "This was not me": the waiting login is refused.
    pub fn key_approval_deny(&self, id: &str, now: Millis) -> std::result::Result<(), KeyRefusal> {
        // The waiting SSH login records its own failure (`key_approval_refused`).
        self.with_approval(id, now, |a| {
            a.state.send_replace(ApprovalState::Refused("The login was refused on the approval page.".into()));
            Ok(())
        })
    }

    /// Checks the page's assertion for approval `id`: the key's counter is
    /// saved, `webauthn_used` recorded and the waiting login released; a
    /// counter that went back refuses it, raises
    /// `webauthn_counter_regression` and opens `cloned_authenticator`.
    pub async fn key_approval_finish(&self, id: &str, body: &[u8], client: &WebClient, now: Millis) -> std::result::Result<ApprovalState, KeyRefusal> {
        let (state, user_id, username, ip, login_client, code) = self.with_approval(id, now, |a| match a.ceremony.take() {
            Some(st) => Ok((st, a.user_id, a.username.clone(), a.ip.clone(), a.client.clone(), a.code.clone())),
            None => Err(KeyRefusal::CeremonyExpired),
        })?;
        let response: PublicKeyCredential = serde_json::from_slice(body).map_err(|_| KeyRefusal::NotVerified("the browser sent no assertion".into()))?;
        let rp = self.relying_party().map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
        let keys = load_keys(self, user_id).map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
        let raw_id: &[u8] = response.raw_id.as_ref();
        let used = keys.iter().find(|(_, k)| AsRef::<[u8]>::as_ref(k.cred_id()) == raw_id).map(|(id, _)| *id);
        let row = used.and_then(|k| self.store.webauthn_key(k).ok().flatten());
        match rp.finish_securitykey_authentication(&response, &state) {
            Ok(result) => {
                let (Some(key_id), Some(row)) = (used, row) else {
                    return Err(KeyRefusal::NotVerified("that key is not one of this account's".into()));
                };
                let mut key = keys.into_iter().find(|(k, _)| *k == key_id).map(|(_, k)| k).expect("found above");
                key.update_credential(&result);
                let cred = Credential::from(key);
                let json = serde_json::to_string(&cred).map_err(|_| KeyRefusal::Link(LinkRefusal::Unavailable))?;
                let ev = client.stamp(
                    Event::new(EventType::WebauthnUsed, Severity::Info, format!("hardware key \"{}\" of {username} approved a login from {ip}", row.name), now)
                        .user(Some(user_id), Some(&username))
                        .detail("key_id", key_id)
                        .detail("name", row.name.clone())
                        .detail("counter", result.counter())
                        .detail("user_verified", result.user_verified())
                        .detail("login_address", ip.clone())
                        .detail("login_client", login_client.clone())
                        .detail("approval_code", code.clone()),
                );
                match self.store.webauthn_key_used(key_id, &json, result.counter(), result.backup_state(), &[ev], now) {
                    Ok(()) => {}
                    // Another assertion saved this counter meanwhile: the same
                    // signature count twice is what a clone looks like.
                    Err(crate::store::Error::Conflict(_)) => return Err(KeyRefusal::NotVerified("the key was used twice at once".into())),
                    Err(e) => {
                        tracing::error!(error = %e, "webauthn: saving a key's use");
                        return Err(KeyRefusal::Link(LinkRefusal::Unavailable));
                    }
                }
                let approved = ApprovalState::Approved { key_id, key_name: row.name.clone() };
                self.with_approval(id, now, |a| {
                    a.state.send_replace(approved.clone());
                    Ok(())
                })?;
                Ok(approved)
            }
            Err(WebauthnError::CredentialPossibleCompromise) => {
                let stored = row.as_ref().map_or(0, |r| r.sign_count);
                let new = response.response.authenticator_data.get(33..37).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let name = row.as_ref().map(|r| r.name.clone()).unwrap_or_default();
                let ev = client.stamp(
                    Event::new(
                        EventType::WebauthnCounterRegression,
                        Severity::Critical,
                        format!("hardware key \"{name}\" of {username} answered with signature counter {new}, not above the stored {stored}: it may have been cloned"),
                        now,
                    )
                    .user(Some(user_id), Some(&username))
                    .detail("key_id", used)
                    .detail("name", name.clone())
                    .detail("stored_counter", stored)
                    .detail("new_counter", new)
                    .detail("login_address", ip.clone())
                    .detail("login_client", login_client.clone())
                    .detail("approval_code", code.clone()),
                );
                let event_id = self.events.record_committed_id(ev).await;
                let finding = crate::model::Finding {
                    incident_type: crate::model::IncidentType::ClonedAuthenticator,
                    subject: crate::model::Subject::Account { user_id: Some(user_id), username: username.clone() },
                    severity: crate::model::IncidentSeverity::Critical,
                    title: format!("hardware key of {username} may be cloned (counter went back)"),
                    description: format!(
                        "key {} (\"{}\") of {username} signed with counter {new} while {stored} was stored; the login from {ip} it was to approve was refused",
                        used.map_or("?".into(), |k| k.to_string()),
                        crate::model::escape_control(&name)
                    ),
                    event_ids: event_id.into_iter().collect(),
                    first_event_at: now,
                    details: serde_json::json!({ "rule": "cloned_authenticator", "key_id": used, "stored_counter": stored, "new_counter": new, "address": ip }),
                };
                if let Err(e) = self.respond_to_finding(finding, now).await {
                    tracing::error!(error = %e, "opening the incident of a cloned key");
                }
                let refused = ApprovalState::Refused("The hardware key failed its check (its counter went back); the login was refused and your sysop told.".into());
                let _ = self.with_approval(id, now, |a| {
                    a.state.send_replace(refused.clone());
                    Ok(())
                });
                Err(KeyRefusal::NotVerified("the key's signature counter went back, as a cloned key's would; the login was refused and your sysop told".into()))
            }
            Err(e) => {
                // Recorded: a wrong key (another account's), a bad signature
                // or a replayed answer. The ceremony is spent; the page may
                // start another while the login still waits.
                self.record(client.stamp(
                    Event::new(EventType::LoginFailed, Severity::Medium, format!("a hardware key's answer for the waiting login of {username} was refused"), now)
                        .user(Some(user_id), Some(&username))
                        .detail("reason", "key_assertion_refused")
                        .detail("method", "webauthn")
                        .detail("key_id", used)
                        .detail("error", e.to_string())
                        .detail("login_address", ip.clone()),
                ))
                .await;
                Err(KeyRefusal::NotVerified(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_rule_table() {
        // (stored, new, accepted)
        let table = [(0, 0, true), (0, 1, true), (1, 2, true), (5, 6, true), (1, 1, false), (2, 1, false), (5, 0, false), (0, u32::MAX, true), (u32::MAX, u32::MAX, false)];
        for (stored, new, ok) in table {
            assert_eq!(counter_ok(stored, new), ok, "stored {stored}, new {new}");
        }
    }

    #[test]
    fn key_names() {
        assert_eq!(clean_key_name("  "), Ok(None));
        assert_eq!(clean_key_name(" Blue YubiKey "), Ok(Some("Blue YubiKey".into())));
        assert_eq!(clean_key_name(&"x".repeat(64)), Ok(Some("x".repeat(64))));
        assert_eq!(clean_key_name(&"x".repeat(65)), Err("A key's name has at most 64 characters.".into()));
        assert_eq!(clean_key_name("a\u{1b}[2Jb"), Err("A key's name cannot hold control characters.".into()));
        assert_eq!(clean_key_name("a\u{202e}b"), Err("A key's name cannot hold control characters.".into()));
    }

    #[test]
    fn aaguid_table() {
        assert_eq!(authenticator_name("ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"), Some("Google Password Manager"));
        assert_eq!(authenticator_name("EA9B8D66-4D01-1D21-3CE4-B6B48CB575D4"), Some("Google Password Manager"));
        assert_eq!(authenticator_name("00000000-0000-0000-0000-000000000001"), None);
    }

    #[test]
    fn aaguid_from_attestation_object() {
        use serde_cbor_2::Value;
        let mut auth = vec![0u8; 32];
        auth.push(0x41); // UP | AT
        auth.extend_from_slice(&7u32.to_be_bytes());
        auth.extend_from_slice(&[0xea, 0x9b, 0x8d, 0x66, 0x4d, 0x01, 0x1d, 0x21, 0x3c, 0xe4, 0xb6, 0xb4, 0x8c, 0xb5, 0x75, 0xd4]);
        auth.extend_from_slice(&[0, 1, 9]);
        let object = |auth: Vec<u8>| {
            let mut m = std::collections::BTreeMap::new();
            m.insert(Value::Text("fmt".into()), Value::Text("none".into()));
            m.insert(Value::Text("attStmt".into()), Value::Map(Default::default()));
            m.insert(Value::Text("authData".into()), Value::Bytes(auth));
            serde_cbor_2::to_vec(&Value::Map(m)).unwrap()
        };
        assert_eq!(aaguid_of(&object(auth.clone())).as_deref(), Some("ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"));
        let mut no_at = auth.clone();
        no_at[32] = 0x01;
        assert_eq!(aaguid_of(&object(no_at)), None, "no attested credential data");
        assert_eq!(aaguid_of(&object(auth[..40].to_vec())), None, "too short");
        assert_eq!(aaguid_of(b"\xff\x00garbage"), None);
    }

    #[test]
    fn relying_party_needs_a_name() {
        assert!(relying_party("https://localhost:8443", "Gate").is_ok());
        assert!(relying_party("https://gate.example.org", "Gate").is_ok());
        let e = relying_party("https://127.0.0.1:8443", "Gate").err().unwrap();
        assert_eq!(
            e,
            "web.base_url \"https://127.0.0.1:8443\" names an address, not a host name: browsers allow hardware keys only for a name (e.g. \"https://gate.example.org\" or \"https://localhost:8443\")"
        );
    }

    #[test]
    fn ceremonies_are_single_use_bounded_and_expire() {
        let rp = relying_party("https://localhost:8443", "Gate").unwrap();
        let state = || rp.start_securitykey_registration(Uuid::nil(), "a", "a", None, None, None).unwrap().1;
        let c = Ceremonies::default();
        let now = Millis(1_000_000);
        let id = c.insert(Pending::Register { state: state(), token_id: 1, user_id: 1, attested: false }, 1, now).unwrap();
        assert!(c.take(&id, now).is_some());
        assert!(c.take(&id, now).is_none(), "used once");
        let id = c.insert(Pending::Register { state: state(), token_id: 1, user_id: 1, attested: false }, 1, now).unwrap();
        assert!(c.take(&id, now.plus(CEREMONY_TTL)).is_none(), "expired at 5 minutes");
        let ids: Vec<String> = (0..5).map(|i| c.insert(Pending::Register { state: state(), token_id: 1, user_id: 1, attested: false }, 1, Millis(now.0 + i)).unwrap()).collect();
        assert_eq!(c.len(), MAX_PER_LINK, "per link");
        assert!(c.take(&ids[0], now).is_none(), "the oldest went");
        assert!(c.take(&ids[4], now).is_some());
    }

    #[test]
    fn attestation_roots_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = |name: &str| std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core/testdata").join(name)).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let one = write("one.pem", &fixture("root_one.pem"));
        let two = write("two.pem", &format!("# two makers\n{}\n{}", fixture("root_two.pem"), fixture("root_one.pem")));
        assert!(attestation_roots(&[]).unwrap().is_none());
        assert_eq!(attestation_roots(&[one.clone()]).unwrap().map(|l| l.len()), Some(1));
        // The same root twice is one root.
        assert_eq!(attestation_roots(&[one.clone(), two.clone()]).unwrap().map(|l| l.len()), Some(2));

        let d = dir.path().display();
        let cases: Vec<(std::path::PathBuf, String)> = vec![
            (dir.path().join("missing.pem"), format!("cannot read {d}/missing.pem: No such file or directory (os error 2)")),
            (write("empty.pem", "nothing here\n"), format!("{d}/empty.pem holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")")),
            (write("cut.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n"), format!("{d}/cut.pem: certificate 1 has no \"-----END CERTIFICATE-----\" line")),
            (write("leaf.pem", &fixture("leaf.pem")), format!("{d}/leaf.pem: certificate 1 cannot be a root: it is not a CA certificate (no basicConstraints CA:TRUE); list the maker's root, not a key's own certificate")),
            (write("no_signing.pem", &fixture("no_signing.pem")), format!("{d}/no_signing.pem: certificate 1 cannot be a root: its key usage does not include signing certificates (keyCertSign)")),
        ];
        for (file, want) in &cases {
            assert_eq!(attestation_roots(&[one.clone(), file.clone()]).unwrap_err(), vec![want.clone()], "{}", file.display());
        }
        // A bad one is named by its place in its file.
        let bad = write("bad.pem", &format!("{}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", fixture("root_two.pem")));
        let e = attestation_roots(&[bad]).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with(&format!("{d}/bad.pem: certificate 2 is not a valid X.509 certificate (")), "{e:?}");
    }
}
