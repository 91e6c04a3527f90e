//! A real browser for the tests: Debian's headless Chromium, driven over
//! the DevTools protocol through `--remote-debugging-pipe` (Chromium reads
//! commands on descriptor 3 and writes answers and events on 4, each a
//! JSON text ended by a NUL byte). No driver crate, no download: the
//! browser is `/usr/bin/chromium` (or `PORTCULLIS_CHROMIUM`), which
//! `scripts/test` installs. Every wait has a deadline; the browser and its
//! profile go away with the value.

use serde_json::{json, Value};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long one DevTools command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(20);

pub fn chromium_path() -> String {
    std::env::var("PORTCULLIS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

pub struct Browser {
    child: Child,
    to_browser: File,
    from_browser: mpsc::Receiver<Value>,
    /// Events that arrived while waiting for an answer.
    pub events: Vec<Value>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// A page (tab) of the browser, attached in flat mode.
pub struct Page {
    pub session: String,
}

/// Two pipes moved out of the way of descriptors 3 and 4 (`F_DUPFD_CLOEXEC`
/// from 10), so the child's `dup2` onto 3 and 4 cannot clobber them.
fn pipe_high() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    let high = |fd: RawFd| {
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(h >= 10, "fcntl F_DUPFD_CLOEXEC");
        unsafe { libc::close(fd) };
        h
    };
    (high(fds[0]), high(fds[1]))
}

impl Browser {
    /// Starts headless Chromium with a fresh profile. `ignore_cert` lets it
    /// accept the gate's self-signed certificate (WebAuthn on `localhost`
    /// still works with it).
    pub fn launch() -> Browser {
        let path = chromium_path();
        assert!(
            std::path::Path::new(&path).exists(),
            "no Chromium at {path}: install Debian's chromium (scripts/test does) or set PORTCULLIS_CHROMIUM"
        );
        let profile = tempfile::Builder::new().prefix("portcullis-chromium-").tempdir().expect("profile dir");
        let (cmd_read, cmd_write) = pipe_high(); // we write, Chromium reads on 3
        let (out_read, out_write) = pipe_high(); // Chromium writes on 4, we read
        let log = File::create(profile.path().join("chromium.log")).expect("chromium log");
        let mut cmd = Command::new(&path);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--ignore-certificate-errors",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cmd_read, 3) < 0 || libc::dup2(out_write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {path}: {e}"));
        unsafe {
            libc::close(cmd_read);
            libc::close(out_write);
        }
        let to_browser = unsafe { File::from_raw_fd(cmd_write) };
        let mut reader = unsafe { File::from_raw_fd(out_read) };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|b| *b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    match serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        Ok(v) => {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                        Err(e) => eprintln!("browser: unreadable DevTools message: {e}"),
                    }
                }
            }
        });
        Browser { child, to_browser, from_browser: rx, events: Vec::new(), next_id: 0, _profile: profile }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._profile.path().join("chromium.log")).unwrap_or_default()
    }

    /// Sends one command (on `session`, or the browser's own) and waits for
    /// its answer; a protocol error is a panic naming the method.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params).unwrap_or_else(|e| panic!("DevTools {method}: {e}\nchromium log:\n{}", self.log()))
    }

    /// Like `call`, with the protocol's error as `Err`.
    pub fn try_call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).map_err(|e| format!("writing to the browser: {e}"))?;
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            let left = deadline.checked_duration_since(Instant::now()).ok_or_else(|| format!("no answer within {COMMAND_DEADLINE:?}"))?;
            let v = self.from_browser.recv_timeout(left).map_err(|_| format!("no answer within {COMMAND_DEADLINE:?} (browser gone?)"))?;
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    return Err(err.to_string());
                }
                return Ok(v["result"].clone());
            }
            self.events.push(v);
        }
    }

    /// A new tab at about:blank, attached.
    pub fn page(&mut self) -> Page {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = self.call(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }));
        let session = attached["sessionId"].as_str().expect("sessionId").to_owned();
        self.call(Some(&session), "Page.enable", json!({}));
        self.call(Some(&session), "Runtime.enable", json!({}));
        self.call(Some(&session), "Log.enable", json!({}));
        Page { session }
    }

    /// A virtual authenticator on `page` (CTAP2, resident keys, user
    /// verification, touches that succeed at once); returns its id.
    /// `transport` is `"usb"` for a security key, `"internal"` for this
    /// device's own authenticator (Touch ID, Windows Hello).
    pub fn add_authenticator_on(&mut self, page: &Page, transport: &str) -> String {
        self.call(Some(&page.session), "WebAuthn.enable", json!({ "enableUI": false }));
        let r = self.call(
            Some(&page.session),
            "WebAuthn.addVirtualAuthenticator",
            json!({ "options": {
                "protocol": "ctap2",
                "ctap2Version": "ctap2_1",
                "transport": transport,
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
                "automaticPresenceSimulation": true
            }}),
        );
        r["authenticatorId"].as_str().expect("authenticatorId").to_owned()
    }

    /// The credentials a virtual authenticator holds.
    pub fn credentials(&mut self, page: &Page, authenticator: &str) -> Vec<Value> {
        let r = self.call(Some(&page.session), "WebAuthn.getCredentials", json!({ "authenticatorId": authenticator }));
        r["credentials"].as_array().cloned().unwrap_or_default()
    }

    /// Evaluates `expression` in the page (promises awaited); its value.
    pub fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let r = self.call(Some(&page.session), "Runtime.evaluate", json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }));
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("page exception in {expression:?}: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Opens `url` in `page` and waits until `ready` (a JS expression)
    /// is true.
    pub fn open(&mut self, page: &Page, url: &str, ready: &str) {
        let r = self.call(Some(&page.session), "Page.navigate", json!({ "url": url }));
        if let Some(e) = r.get("errorText") {
            panic!("navigating to {url}: {e}");
        }
        self.wait_for(page, ready, Duration::from_secs(20));
    }

    /// Polls `condition` (a JS expression) until it is true; panics with
    /// the page's text after `within`.
    pub fn wait_for(&mut self, page: &Page, condition: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self
                .try_call(Some(&page.session), "Runtime.evaluate", json!({ "expression": format!("!!({condition})"), "returnByValue": true }))
                .ok()
                .and_then(|r| r["result"]["value"].as_bool())
                .unwrap_or(false);
            if ok {
                return;
            }
            if Instant::now() > deadline {
                let body = self.eval(page, "document.body ? document.body.innerText : ''");
                let console: Vec<String> = self
                    .events
                    .iter()
                    .filter(|e| matches!(e["method"].as_str(), Some("Runtime.exceptionThrown" | "Runtime.consoleAPICalled" | "Log.entryAdded")))
                    .map(|e| e["params"].to_string())
                    .collect();
                panic!("waited {within:?} for {condition:?}; the page says:\n{}\nconsole:\n{}", body.as_str().unwrap_or_default(), console.join("\n"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.try_call(None, "Browser.close", json!({}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
