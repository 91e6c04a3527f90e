//! Mails the gate sends: templates (text and HTML, built in, or replaced
//! file by file from `templates_dir`) filled with escaped values, sealed
//! into the outbox with the event that causes them.

use super::{Core, Result};
use crate::model::{Event, Millis};
use crate::store::mfa::{NewMail, OutboxRow};

struct Template {
    name: &'static str,
    subject: &'static str,
    text: &'static str,
    html: &'static str,
}

const TEMPLATES: &[Template] = &[
    Template {
        name: "otp_enroll",
        subject: "Set up two-factor authentication",
        text: include_str!("../../templates/otp_enroll.txt"),
        html: include_str!("../../templates/otp_enroll.html"),
    },
    Template {
        name: "webauthn_enroll",
        subject: "Register a hardware key",
        text: include_str!("../../templates/webauthn_enroll.txt"),
        html: include_str!("../../templates/webauthn_enroll.html"),
    },
    Template {
        name: "code_failed",
        subject: "A wrong one-time code was entered after your password",
        text: include_str!("../../templates/code_failed.txt"),
        html: include_str!("../../templates/code_failed.html"),
    },
    Template {
        name: "mfa_disabled",
        subject: "Two-factor authentication was turned off",
        text: include_str!("../../templates/mfa_disabled.txt"),
        html: include_str!("../../templates/mfa_disabled.html"),
    },
    Template {
        name: "password_reset",
        subject: "Your password was reset",
        text: include_str!("../../templates/password_reset.txt"),
        html: include_str!("../../templates/password_reset.html"),
    },
    Template {
        name: "incident_created",
        subject: "Security incident #{{id}} ({{severity}}): {{title}}",
        text: include_str!("../../templates/incident_created.txt"),
        html: include_str!("../../templates/incident_created.html"),
    },
    Template {
        name: "playbook_alert",
        subject: "Security incident on the gate",
        text: include_str!("../../templates/playbook_alert.txt"),
        html: include_str!("../../templates/playbook_alert.html"),
    },
    Template {
        name: "device_new",
        subject: "Sign-in to your account from a new device",
        text: include_str!("../../templates/device_new.txt"),
        html: include_str!("../../templates/device_new.html"),
    },
    Template {
        name: "web_device_new",
        subject: "A link of yours was opened on a new device",
        text: include_str!("../../templates/web_device_new.txt"),
        html: include_str!("../../templates/web_device_new.html"),
    },
    Template {
        name: "security_notice",
        subject: "Unusual activity on your account",
        text: include_str!("../../templates/security_notice.txt"),
        html: include_str!("../../templates/security_notice.html"),
    },
];

/// A rendered mail, before sealing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Body {
    pub text: String,
    pub html: String,
}

use crate::model::html_escape;

/// Fills `{{name}}` placeholders; unknown placeholders stay visible so a
/// broken template is noticed, never silently emptied.
fn fill(template: &str, values: &[(&str, &str)], escape: bool) -> String {
    let mut out = template.to_owned();
    for (k, v) in values {
        let v = if escape { html_escape(v) } else { (*v).to_owned() };
        out = out.replace(&format!("{{{{{k}}}}}"), &v);
    }
    out
}

pub fn render(template: &str, values: &[(&str, &str)]) -> Option<(String, Body)> {
    render_from(None, template, values)
}

/// The three parts a template folder may replace, by file suffix.
const PARTS: &[&str] = &["subject", "txt", "html"];

/// A part of `name` from `dir` (`NAME.txt`, `NAME.html`, `NAME.subject`)
/// when the file is there; `None` means the built-in part. A file that is
/// there but cannot be read is logged and the built-in part used: a mail
/// is never lost to a template (`config check` reports such files).
fn part_from(dir: Option<&std::path::Path>, name: &str, suffix: &str) -> Option<String> {
    let path = dir?.join(format!("{name}.{suffix}"));
    match std::fs::read_to_string(&path) {
        Ok(t) if suffix == "subject" => Some(t.lines().next().unwrap_or_default().trim().to_owned()).filter(|s| !s.is_empty()),
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "mail template unreadable; the built-in one is used");
            None
        }
    }
}

/// `render` with the parts found in `dir` instead of the built-in ones.
pub fn render_from(dir: Option<&std::path::Path>, template: &str, values: &[(&str, &str)]) -> Option<(String, Body)> {
    let t = TEMPLATES.iter().find(|t| t.name == template)?;
    let subject = part_from(dir, t.name, "subject").unwrap_or_else(|| t.subject.to_owned());
    let text = part_from(dir, t.name, "txt").unwrap_or_else(|| t.text.to_owned());
    let html = part_from(dir, t.name, "html").unwrap_or_else(|| t.html.to_owned());
    // Subjects may hold placeholders too (never escaped: a header, not HTML).
    Some((fill(&subject, values, false), Body { text: fill(&text, values, false), html: fill(&html, values, true) }))
}

/// The `{{name}}` placeholders of a text.
fn placeholders(text: &str) -> std::collections::BTreeSet<&str> {
    let mut found = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        found.insert(&after[..end]);
        rest = &after[end + 2..];
    }
    found
}

/// What `config check` says of a template folder: problems (the folder
/// cannot be read, a file is not UTF-8 text) and warnings (a file no mail
/// uses, a placeholder the mail does not fill: it would be sent as typed).
pub fn check_templates(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return (vec![format!("cannot read the folder {}: {e}", dir.display())], warnings),
    };
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for file in names {
        let shown = crate::model::escape_control(&file);
        let known = file.rsplit_once('.').and_then(|(name, suffix)| TEMPLATES.iter().find(|t| t.name == name).filter(|_| PARTS.contains(&suffix)).map(|t| (t, suffix)));
        let Some((t, _)) = known else {
            let list: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
            warnings.push(format!("{}: {shown} is not a template part (NAME.txt, NAME.html or NAME.subject, NAME one of {}): no mail uses it", dir.display(), list.join(", ")));
            continue;
        };
        let text = match std::fs::read_to_string(dir.join(&file)) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}: {shown}: cannot read it as UTF-8 text: {e}", dir.display()));
                continue;
            }
        };
        let filled: std::collections::BTreeSet<&str> = [t.subject, t.text, t.html].iter().flat_map(|p| placeholders(p)).collect();
        for p in placeholders(&text).into_iter().filter(|p| !filled.contains(p)) {
            let mut known: Vec<&str> = filled.iter().copied().collect();
            known.sort_unstable();
            warnings.push(format!("{}: {shown}: {{{{{}}}}} is not filled by this mail (it fills {}): it would be sent as written", dir.display(), crate::model::escape_control(p), known.iter().map(|k| format!("{{{{{k}}}}}")).collect::<Vec<_>>().join(", ")));
        }
    }
    (problems, warnings)
}

/// The built-in templates, as files (`NAME.txt`, `NAME.html`,
/// `NAME.subject`), for `config init`.
pub fn built_in_template_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for t in TEMPLATES {
        files.push((format!("{}.subject", t.name), format!("{}\n", t.subject)));
        files.push((format!("{}.txt", t.name), t.text.to_owned()));
        files.push((format!("{}.html", t.name), t.html.to_owned()));
    }
    files
}

/// How long, in words, for mails.
pub fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s >= 86_400 => format!("{} day{}", s / 86_400, if s == 86_400 { "" } else { "s" }),
        s if s % 3600 == 0 && s >= 3600 => format!("{} hour{}", s / 3600, if s == 3600 { "" } else { "s" }),
        s if s >= 60 => format!("{} minute{}", s / 60, if s / 60 == 1 { "" } else { "s" }),
        s => format!("{s} seconds"),
    }
}

/// An outbox entry ready for the mail front end.
#[derive(Clone)]
pub struct Outgoing {
    pub id: i64,
    pub to: String,
    pub subject: String,
    pub body: Body,
    pub attempts: u32,
}

impl std::fmt::Debug for Outgoing {
    // Bodies hold single-use links: show their sizes only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let domain = self.to.rsplit_once('@').map_or("<invalid>", |(_, d)| d.trim_end_matches('>'));
        f.debug_struct("Outgoing")
            .field("id", &self.id)
            .field("to_domain", &domain)
            .field("text_len", &self.body.text.len())
            .field("html_len", &self.body.html.len())
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Renders and seals a mail; the caller stores it with its events.
    pub(crate) fn seal_mail(&self, template: &str, recipient: &str, values: &[(&str, &str)]) -> Result<(String, Vec<u8>)> {
        let dir = self.settings().templates_dir.clone();
        let (subject, body) = render_from(dir.as_deref(), template, values).ok_or_else(|| super::Error::Invalid(format!("no mail template {template:?}")))?;
        let json = serde_json::to_vec(&body).map_err(|e| super::Error::Invalid(format!("encoding a mail: {e}")))?;
        let sealed = self.keyring.seal(&format!("mail:{recipient}"), &json).map_err(super::Error::Invalid)?;
        Ok((subject, sealed))
    }

    /// Queues a mail with the events that cause it, in one transaction.
    pub(crate) fn queue_mail(&self, template: &str, recipient: &str, values: &[(&str, &str)], events: &[Event], now: Millis) -> Result<i64> {
        let (subject, sealed) = self.seal_mail(template, recipient, values)?;
        Ok(self.store.queue_mail(&NewMail { recipient, subject: &subject, body_sealed: &sealed, template }, events, now)?)
    }

    /// Mails a user about a change to their account (no link, no secret).
    /// Returns false when the account has no email address. A mail that
    /// cannot be queued is logged, not fatal: the change is already made.
    pub(crate) fn mail_user(&self, user: &crate::model::User, template: &str, values: &[(&str, &str)], now: Millis) -> bool {
        let Some(to) = user.email.as_deref() else {
            return false;
        };
        match self.queue_mail(template, to, values, &[], now) {
            Ok(_) => {
                self.mail_queued.notify_one();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, template, user_id = user.id, "a notice mail could not be queued");
                false
            }
        }
    }

    /// Mail due for sending, opened.
    pub fn due_mail(&self, now: Millis, limit: usize) -> Result<Vec<Outgoing>> {
        let rows = self.store.due_mail(now, limit)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            match self.open_mail(&r) {
                Some(body) => out.push(Outgoing { id: r.id, to: r.recipient, subject: r.subject, body, attempts: r.attempts }),
                None => {
                    // Undecryptable (key replaced): never sendable; park it.
                    self.store.mail_failed(r.id, "the mail body cannot be opened with this key", crate::model::FOREVER)?;
                }
            }
        }
        Ok(out)
    }

    fn open_mail(&self, r: &OutboxRow) -> Option<Body> {
        let sealed = r.body_sealed.as_ref()?;
        let json = self.keyring.open(&format!("mail:{}", r.recipient), sealed).ok()?;
        serde_json::from_slice(&json).ok()
    }

    pub fn mail_sent(&self, id: i64, now: Millis) -> Result<()> {
        Ok(self.store.mail_sent(id, now)?)
    }

    pub fn mail_failed(&self, id: i64, error: &str, next: Millis) -> Result<()> {
        Ok(self.store.mail_failed(id, error, next)?)
    }

    pub fn mail_queue(&self, include_sent: bool) -> Result<Vec<OutboxRow>> {
        Ok(self.store.mail_queue(include_sent, 200)?)
    }

    pub fn retry_mail(&self, now: Millis) -> Result<usize> {
        Ok(self.store.retry_mail(now)?)
    }
}

#[cfg(test)]
impl Core {
    /// Queues a ready-made mail (for the mail worker's tests).
    pub(crate) fn queue_prepared_mail(&self, recipient: &str, subject: &str, body: &Body, now: Millis) -> Result<i64> {
        let json = serde_json::to_vec(body).map_err(|e| super::Error::Invalid(format!("encoding a mail: {e}")))?;
        let sealed = self.keyring.seal(&format!("mail:{recipient}"), &json).map_err(super::Error::Invalid)?;
        Ok(self.store.queue_mail(&NewMail { recipient, subject, body_sealed: &sealed, template: "test" }, &[], now)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_and_escape() {
        let (subject, body) = render("otp_enroll", &[("username", "alice"), ("issuer", "Gate <&>"), ("link", "https://x/otp/enroll/abc"), ("expires", "30 minutes"), ("replaces", "")]).expect("template");
        assert_eq!(subject, "Set up two-factor authentication");
        assert!(body.text.contains("Hello alice,") && body.text.contains("https://x/otp/enroll/abc") && body.text.contains("Gate <&>"));
        assert!(body.html.contains("Gate &lt;&amp;&gt;"));
        assert!(!body.text.contains("{{") && !body.html.contains("{{"), "every placeholder filled");
        assert!(render("nope", &[]).is_none());
        let values = [("username", "alice"), ("issuer", "Gate"), ("time", "2026-12-01T20:00:00Z"), ("by", "by the sysop"), ("next", "")];
        for name in ["mfa_disabled", "password_reset"] {
            let (_, body) = render(name, &values).expect("template");
            assert!(!body.text.contains("{{") && !body.html.contains("{{"), "{name}: every placeholder filled");
            assert!(body.text.contains("Hello alice,") && body.text.contains("2026-12-01T20:00:00Z"), "{name}");
        }
    }

    #[test]
    fn durations_in_words() {
        let cases = [(1800, "30 minutes"), (60, "1 minute"), (3600, "1 hour"), (7200, "2 hours"), (86_400, "1 day"), (45, "45 seconds")];
        for (secs, want) in cases {
            assert_eq!(humanize(std::time::Duration::from_secs(secs)), want);
        }
    }

    #[test]
    fn a_template_folder_replaces_parts_file_by_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("otp_enroll.txt"), "Hej {{username}}: {{link}}\n").unwrap();
        std::fs::write(dir.path().join("otp_enroll.subject"), "Tvåstegsverifiering för {{username}}\nignored second line\n").unwrap();
        let values = [("username", "alice"), ("issuer", "Gate"), ("link", "https://x/otp/enroll/abc"), ("expires", "30 minutes"), ("replaces", "")];
        let (subject, body) = render_from(Some(dir.path()), "otp_enroll", &values).expect("template");
        assert_eq!(subject, "Tvåstegsverifiering för alice");
        assert_eq!(body.text, "Hej alice: https://x/otp/enroll/abc\n");
        // The part not in the folder stays built in.
        let (_, built_in) = render("otp_enroll", &values).unwrap();
        assert_eq!(body.html, built_in.html);
        // Other mails are untouched.
        assert_eq!(render_from(Some(dir.path()), "mfa_disabled", &[]).unwrap().1.text, render("mfa_disabled", &[]).unwrap().1.text);
    }

    #[test]
    fn template_folders_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("otp_enroll.txt"), "Hi {{usrname}}, {{link}}\n").unwrap();
        std::fs::write(dir.path().join("otp_enrol.txt"), "typo\n").unwrap();
        std::fs::write(dir.path().join("device_new.html"), [0xff, 0xfe, 0x00]).unwrap();
        let d = dir.path().display();
        let (problems, warnings) = check_templates(dir.path());
        assert_eq!(problems, vec![format!("{d}: device_new.html: cannot read it as UTF-8 text: stream did not contain valid UTF-8")]);
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(warnings[0].starts_with(&format!("{d}: otp_enrol.txt is not a template part (NAME.txt, NAME.html or NAME.subject, NAME one of otp_enroll, ")), "{}", warnings[0]);
        assert_eq!(warnings[1], format!("{d}: otp_enroll.txt: {{{{usrname}}}} is not filled by this mail (it fills {{{{expires}}}}, {{{{issuer}}}}, {{{{link}}}}, {{{{replaces}}}}, {{{{username}}}}): it would be sent as written"));
        let (p, w) = check_templates(&dir.path().join("missing"));
        assert!(p[0].starts_with(&format!("cannot read the folder {d}/missing: ")), "{p:?}");
        assert!(w.is_empty());
        // The files `config init` writes are all template parts, unchanged.
        let out = tempfile::tempdir().unwrap();
        for (name, text) in built_in_template_files() {
            std::fs::write(out.path().join(name), text).unwrap();
        }
        assert_eq!(check_templates(out.path()), (vec![], vec![]));
        let values = [("username", "alice"), ("issuer", "Gate"), ("link", "https://x"), ("expires", "30 minutes"), ("replaces", "")];
        assert_eq!(render_from(Some(out.path()), "otp_enroll", &values).unwrap().1.text, render("otp_enroll", &values).unwrap().1.text);
    }
}
