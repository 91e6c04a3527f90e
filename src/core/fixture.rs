//! What the unit tests of the login path (`locks`, `sessions`) share: a
//! core on a fresh store in its own folder (two hash workers), a runtime,
//! a fixed clock, the sysop who acts, and alice with her password.

use super::accounts::Actor;
use super::login::{Attempt, Credential, Outcome};
use super::Core;
use crate::model::{Millis, Secret, User};

pub const PASSWORD: &str = "Correct-Horse-Battery-9";
/// Where the clock starts (alice is created then).
pub const T0: Millis = Millis(1_800_000_000_000);

pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// The config text after the tests' own (`test_core`'s).
    config: String,
    pub core: Core,
    pub rt: tokio::runtime::Runtime,
    pub sysop: Actor,
    pub alice: User,
}

impl Fixture {
    /// `extra` config text; alice with `email` (needed for mailed links).
    pub fn new(extra: &str, email: Option<&str>) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!("kdf: {{\n  workers: 2\n  queue: 32\n}}\n{extra}");
        let core = super::test_core(dir.path(), &config);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let sysop = Actor::Cli("root".into());
        let alice = rt.block_on(core.add_user("alice", email, &Secret::new(PASSWORD.into()), &[], &sysop, T0)).expect("alice");
        Fixture { dir, config, core, rt, sysop, alice }
    }

    /// Another `Core` on the same database, as a CLI process is.
    pub fn other_process(&self) -> Core {
        super::test_core(self.dir.path(), &self.config)
    }

    /// alice's password over keyboard-interactive from `ip`, then `code`
    /// when one is asked for: the outcome of the last step.
    pub fn login(&self, ip: &str, code: Option<&str>, now: Millis) -> Outcome {
        let mut attempt = Attempt::new(ip.parse().expect("ip"), "SSH-2.0-test".into(), "ssh", now);
        let pw = Secret::new(PASSWORD.to_owned());
        let first = self.rt.block_on(self.core.submit(&mut attempt, Credential::Password { username: "alice", password: &pw, method: "keyboard-interactive" }, now));
        match (first, code) {
            (Outcome::Need(_), Some(c)) => self.rt.block_on(self.core.submit(&mut attempt, Credential::Code { code: &Secret::new(c.to_owned()) }, now)),
            (other, _) => other,
        }
    }

    /// Enrolls alice in time-based codes through the mailed link, as a user
    /// does, at `now`: her code at any time.
    pub fn enroll_totp(&self, now: Millis) -> impl Fn(Millis) -> String {
        let core = &self.core;
        self.rt.block_on(core.start_otp_enrollment(&self.alice, crate::core::mfa::Method::Totp, &self.sysop, now)).expect("enroll");
        let mail = core.due_mail(now, 10).expect("mail");
        let link = mail.iter().find_map(|m| m.body.text.lines().find(|l| l.contains("/otp/enroll/")).map(str::to_owned)).expect("link");
        let token = link.trim().rsplit('/').next().expect("token").to_owned();
        let secret = crate::core::otp::base32_decode(&core.otp_enrollment_view(&token, now).expect("view").secret_base32).expect("base32");
        let code = move |t: Millis| crate::core::otp::hotp(crate::model::OtpAlgorithm::Sha1, &secret, crate::core::otp::step_of(t.0 / 1000, 30), 6);
        self.rt.block_on(core.otp_confirm(&token, &code(now), now)).expect("confirm");
        code
    }
}
