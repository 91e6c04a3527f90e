//! A second real browser: Debian's headless Firefox ESR, driven over its
//! own Marionette protocol on a loopback port (each message is
//! `LENGTH:JSON`; a command is `[0, id, name, params]`, its answer
//! `[1, id, error, result]`), with Marionette's WebDriver WebAuthn
//! commands for a virtual authenticator. No driver binary, no download:
//! the browser is `/usr/bin/firefox-esr` (or `PORTCULLIS_FIREFOX`), which
//! `scripts/test` installs. Every wait has a deadline; the browser and its
//! profile go away with the value.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn firefox_path() -> String {
    std::env::var("PORTCULLIS_FIREFOX").unwrap_or_else(|_| "/usr/bin/firefox-esr".into())
}

pub struct Firefox {
    child: Child,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_id: u64,
    profile: tempfile::TempDir,
}

impl Firefox {
    /// Starts headless Firefox with a fresh profile whose Marionette
    /// listens on a free loopback port, and opens a WebDriver session that
    /// accepts the gate's self-signed certificate.
    pub fn launch() -> Firefox {
        let path = firefox_path();
        assert!(std::path::Path::new(&path).exists(), "no Firefox at {path}: install Debian's firefox-esr (scripts/test does) or set PORTCULLIS_FIREFOX");
        let profile = tempfile::Builder::new().prefix("portcullis-firefox-").tempdir().expect("profile dir");
        let port = crate::harness::free_port();
        let prefs = [
            format!("user_pref(\"marionette.port\", {port});"),
            // Quiet: no first-run pages, updates, telemetry or remote settings.
            "user_pref(\"browser.shell.checkDefaultBrowser\", false);".into(),
            "user_pref(\"browser.startup.homepage_override.mstone\", \"ignore\");".into(),
            "user_pref(\"browser.aboutwelcome.enabled\", false);".into(),
            "user_pref(\"datareporting.policy.dataSubmissionEnabled\", false);".into(),
            "user_pref(\"toolkit.telemetry.reportingpolicy.firstRun\", false);".into(),
            "user_pref(\"app.update.disabledForTesting\", true);".into(),
            "user_pref(\"network.captive-portal-service.enabled\", false);".into(),
            "user_pref(\"network.connectivity-service.enabled\", false);".into(),
            "user_pref(\"browser.safebrowsing.update.enabled\", false);".into(),
            "user_pref(\"services.settings.server\", \"data:,#remote-settings-dummy/v1\");".into(),
            // WebAuthn goes to the test service, where WebDriver's virtual
            // authenticators live, instead of real USB devices.
            "user_pref(\"security.webauth.webauthn_enable_softtoken\", true);".into(),
            "user_pref(\"security.webauth.webauthn_enable_usbtoken\", false);".into(),
        ];
        std::fs::write(profile.path().join("user.js"), prefs.join("\n") + "\n").expect("user.js");
        let log = std::fs::File::create(profile.path().join("firefox.log")).expect("firefox log");
        let child = Command::new(&path)
            .args(["--headless", "--marionette", "--no-remote", "--profile"])
            .arg(profile.path())
            .arg("about:blank")
            .env("MOZ_HEADLESS", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {path}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("Firefox's Marionette did not listen on {port} within 60 s: {e}"),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut ff = Firefox { child, reader: BufReader::new(stream), writer, next_id: 1, profile };
        let hello = ff.read_message();
        assert_eq!(hello["marionetteProtocol"], 3, "{hello}");
        // Marionette takes the capabilities themselves (no alwaysMatch).
        let session = ff.call("WebDriver:NewSession", json!({ "acceptInsecureCerts": true }));
        assert_eq!(session["capabilities"]["acceptInsecureCerts"], true, "{session}");
        ff
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("firefox.log")).unwrap_or_default()
    }

    fn read_message(&mut self) -> Value {
        let mut len = Vec::new();
        self.reader.read_until(b':', &mut len).unwrap_or_else(|e| panic!("reading from Marionette: {e}\n{}", self.log()));
        let n: usize = std::str::from_utf8(&len[..len.len().saturating_sub(1)]).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad Marionette frame {len:?}"));
        let mut body = vec![0; n];
        self.reader.read_exact(&mut body).expect("Marionette message");
        serde_json::from_slice(&body).expect("Marionette JSON")
    }

    /// Sends one command and waits for its answer; an error is a panic
    /// naming the command.
    pub fn call(&mut self, name: &str, params: Value) -> Value {
        self.try_call(name, params).unwrap_or_else(|e| panic!("{name}: {e}\n{}", self.log()))
    }

    pub fn try_call(&mut self, name: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!([0, id, name, params]).to_string();
        self.writer.write_all(format!("{}:{msg}", msg.len()).as_bytes()).expect("writing to Marionette");
        loop {
            let answer = self.read_message();
            if answer[0] == 1 && answer[1] == id {
                return if answer[2].is_null() { Ok(answer[3].clone()) } else { Err(answer[2].clone()) };
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call("WebDriver:ExecuteScript", json!({ "script": format!("return ({expression});"), "args": [] }));
        r["value"].clone()
    }

    /// Waits until `condition` (JavaScript) is true, or panics after `within`.
    pub fn wait_for(&mut self, condition: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.eval(condition) == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self.eval("document.body ? document.body.innerText : ''");
                panic!("Firefox: {condition} not true within {within:?}; the page says: {body}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Loads `url` and waits until `ready` is true.
    pub fn open(&mut self, url: &str, ready: &str) {
        self.call("WebDriver:Navigate", json!({ "url": url }));
        self.wait_for(ready, Duration::from_secs(20));
    }

    /// A virtual authenticator (CTAP2, `transport`, resident keys, user
    /// verification, consent given at once); returns its id.
    pub fn add_authenticator(&mut self, transport: &str) -> String {
        let r = self.call(
            "WebAuthn:AddVirtualAuthenticator",
            json!({
                "protocol": "ctap2",
                "transport": transport,
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserConsenting": true,
                "isUserVerified": true
            }),
        );
        r.as_str().or_else(|| r["value"].as_str()).unwrap_or_else(|| panic!("authenticator id: {r}")).to_owned()
    }

    /// The credentials a virtual authenticator holds.
    pub fn credentials(&mut self, authenticator: &str) -> Vec<Value> {
        let r = self.call("WebAuthn:GetCredentials", json!({ "authenticatorId": authenticator }));
        r.as_array().or_else(|| r["value"].as_array()).cloned().unwrap_or_default()
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
