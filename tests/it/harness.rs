//! The test harness: a `Gate` is one real daemon in its own temporary
//! folder, driven by the real OpenSSH client and the real CLI.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

pub const ALICE_PW: &str = "Correct-Horse-Battery-9";
pub const BOB_PW: &str = "Tangerine-Orbit-Lamp-42";

/// How long any one child process may run.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The test configuration: a free port, fast rejections, cheap hashes and
/// penalties out of the way.
pub const DEFAULT_CONFIG: &str = r#"data_dir: data
ssh: {
  listen: "127.0.0.1:0"
  auth_rejection_time: 50ms
  penalties: {
    max_failures: 1000
  }
}
passwords: {
  iterations: 1000
}
web: {
  listen: "127.0.0.1:0"
}
playbooks: []
"#;

/// `DEFAULT_CONFIG` with the built-in response playbooks on. The default
/// turns them off, so a test that makes failures on purpose is not locked
/// or blocked by the gate's answer to them (detection still runs).
pub fn config_with_playbooks() -> String {
    DEFAULT_CONFIG.replace("playbooks: []\n", "")
}

pub struct Gate {
    /// The HTTPS port from the ready line.
    pub web_port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The config the CLI uses (the daemon's file unless a test changes it,
    /// e.g. to keep the CLI working while the daemon's file is broken).
    pub cli_config: PathBuf,
    child: Option<Child>,
    pub port: u16,
    /// Daemon stderr goes here (appended over restarts).
    pub log: PathBuf,
    ssh_runs: Arc<AtomicUsize>,
}

/// What one `ssh` run produced.
#[derive(Debug)]
pub struct SshRun {
    /// Exit code; `None` when killed at the deadline or by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Each prompt the askpass script was asked, in order.
    pub prompts: Vec<String>,
}

impl SshRun {
    pub fn authenticated_exec(&self) -> bool {
        self.code == Some(1) && self.stderr.contains("portcullis: this gate offers interactive sessions only")
    }
}

/// How to run `ssh`.
#[derive(Clone, Debug)]
pub struct Ssh<'a> {
    pub user: &'a str,
    /// What askpass answers to every prompt (but the code prompt when
    /// `code` is set).
    pub password: &'a str,
    /// What askpass answers to a "Verification code: " prompt.
    pub code: Option<&'a str>,
    /// "keyboard-interactive", "password" or "publickey".
    pub method: &'a str,
    pub prompts: u32,
    /// Source address (`ssh -b`).
    pub bind: Option<&'a str>,
    /// Private key file for publickey.
    pub identity: Option<&'a Path>,
    /// Remote command; `None` asks for an interactive session.
    pub command: Option<&'a str>,
    /// More `-o` options (e.g. "Ciphers=aes256-gcm@openssh.com").
    pub options: &'a [&'a str],
}

impl<'a> Ssh<'a> {
    pub fn kbd(user: &'a str, password: &'a str) -> Ssh<'a> {
        Ssh { user, password, code: None, method: "keyboard-interactive", prompts: 1, bind: None, identity: None, command: Some("true"), options: &[] }
    }
    /// Answers the second-factor prompt with `code`.
    pub fn code(mut self, code: &'a str) -> Self {
        self.code = Some(code);
        self
    }
    pub fn method(mut self, m: &'a str) -> Self {
        self.method = m;
        self
    }
    pub fn prompts(mut self, n: u32) -> Self {
        self.prompts = n;
        self
    }
    pub fn bind(mut self, addr: &'a str) -> Self {
        self.bind = Some(addr);
        self
    }
    pub fn key(mut self, path: &'a Path) -> Self {
        self.identity = Some(path);
        self.method = "publickey";
        self
    }
    pub fn interactive(mut self) -> Self {
        self.command = None;
        self
    }
    /// More `-o` options for the client.
    pub fn options(mut self, options: &'a [&'a str]) -> Self {
        self.options = options;
        self
    }
}

/// Reads a pipe in a thread, chunk by chunk.
fn pump(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

fn drain(rx: &mpsc::Receiver<Vec<u8>>, into: &mut Vec<u8>, until: Instant) {
    while let Ok(chunk) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        into.extend_from_slice(&chunk);
    }
}

/// Waits for a child with a deadline; kills it when the deadline passes.
pub fn wait_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs a command to completion with a deadline, stdin from `input`.
pub fn run(mut cmd: Command, input: Option<&str>) -> Output {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning a command");
    if let Some(text) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = pump(child.stdout.take().unwrap());
    let err = pump(child.stderr.take().unwrap());
    let status = wait_deadline(&mut child, DEADLINE).unwrap_or_else(|| panic!("{cmd:?} did not finish within {DEADLINE:?}"));
    let until = Instant::now() + Duration::from_secs(5);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    drain(&out, &mut stdout, until);
    drain(&err, &mut stderr, until);
    Output { status, stdout, stderr }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` until it returns `Some`, for at most `within`.
pub fn poll<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= until {
            panic!("timed out waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

impl Gate {
    /// A migrated, not yet started gate with `config` as its config file.
    pub fn prepare(config: &str) -> Gate {
        let dir = tempfile::Builder::new().prefix("portcullis-it-").tempdir().expect("tempdir");
        let path = dir.path().join("portcullis.hjson");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("daemon.log");
        let gate = Gate { cli_config: path.clone(), config: path, log, dir, child: None, port: 0, web_port: 0, ssh_runs: Arc::new(AtomicUsize::new(0)) };
        let out = gate.cli(&["migrate", "run"]);
        assert!(out.status.success(), "migrate run: {}", text(&out.stderr));
        gate
    }

    /// A running gate with the default test config.
    pub fn start() -> Gate {
        Gate::start_with(DEFAULT_CONFIG)
    }

    pub fn start_with(config: &str) -> Gate {
        let mut g = Gate::prepare(config);
        g.launch();
        g
    }

    /// Starts the daemon and waits for its ready line.
    pub fn launch(&mut self) {
        self.launch_adjusted(|_| {})
    }

    /// `launch`, with `adjust` applied to the daemon's command first (e.g.
    /// a `pre_exec` that leaves it an inherited descriptor).
    pub fn launch_adjusted(&mut self, adjust: impl FnOnce(&mut Command)) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("serve")
            .current_dir(self.dir.path())
            .env("PORTCULLIS_LOG", "info,russh=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawning the daemon");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep the pipe open and drained for the daemon's lifetime.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no ready line; daemon log:\n{}", self.daemon_log());
            }
        };
        self.child = Some(child);
        // ready ssh=127.0.0.1:PORT web=127.0.0.1:PORT
        let rest = line.strip_prefix("ready ssh=127.0.0.1:").unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        let (port, tail) = rest.split_once(' ').unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        let web = tail.strip_prefix("web=127.0.0.1:").unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        self.port = port.parse().unwrap_or_else(|_| panic!("unexpected ready line {line:?}"));
        self.web_port = web.parse().unwrap_or_else(|_| panic!("unexpected ready line {line:?}"));
        assert_ne!(self.port, 0);
        assert_ne!(self.web_port, 0);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon not running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    /// Whether the daemon is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (SIGKILL after a deadline); returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        wait_deadline(&mut c, Duration::from_secs(15))
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("data/portcullis.db")
    }

    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.cli_config).args(args).current_dir(self.dir.path()).env_remove("PORTCULLIS_CONFIG").env("PORTCULLIS_LOG", "warn");
        cmd
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        run(self.cli_command(args), None)
    }

    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        run(self.cli_command(args), Some(input))
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "portcullis {args:?} failed ({:?}): {}{}", out.status, text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    pub fn add_user(&self, name: &str, password: &str) {
        let email = format!("{name}@example.org");
        let out = self.cli_stdin(&["user", "add", name, "--email", &email, "--password-stdin"], &format!("{password}\n"));
        assert!(out.status.success(), "user add {name}: {}{}", text(&out.stdout), text(&out.stderr));
    }

    /// `security events ARGS --json`, newest first.
    pub fn events_json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["security", "events"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.cli_ok(&all);
        let mut events = match serde_json::from_str(&out) {
            Ok(Value::Array(v)) => v,
            other => panic!("security events {args:?}: not a JSON array: {other:?}\n{out}"),
        };
        // Newest first, whatever order the CLI prints them in.
        events.sort_by_key(|e| std::cmp::Reverse(e["id"].as_i64().unwrap_or_else(|| panic!("event without id: {e}"))));
        events
    }

    /// Events of one type (for `user`, or all users when `None`), newest first.
    pub fn events_of(&self, user: Option<&str>, event_type: &str) -> Vec<Value> {
        let mut args = Vec::new();
        if let Some(u) = user {
            args.push(u);
            args.push("1000");
        }
        args.extend_from_slice(&["--type", event_type]);
        self.events_json(&args)
    }

    /// Polls until `pred` holds for the events of one type.
    pub fn wait_events(&self, user: Option<&str>, event_type: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        poll(Duration::from_secs(10), &format!("{event_type} events"), || {
            let ev = self.events_of(user, event_type);
            pred(&ev).then_some(ev)
        })
    }

    /// The ssh side of this gate, usable from another thread.
    pub fn client(&self) -> Client {
        Client { dir: self.dir.path().to_path_buf(), port: self.port, runs: self.ssh_runs.clone() }
    }

    pub fn ssh(&self, o: &Ssh) -> SshRun {
        self.client().ssh(o)
    }

    pub fn ssh_session(&self, o: &Ssh) -> SshRun {
        self.client().ssh_session(o)
    }

    pub fn ssh_session_then(&self, o: &Ssh, at_welcome: impl FnOnce(&mut ChildStdin)) -> SshRun {
        self.client().ssh_session_then(o, at_welcome)
    }

    pub fn ssh_script(&self, o: &Ssh, steps: &[(&str, &str)]) -> SshRun {
        self.client().ssh_script(o, steps)
    }

    /// Generates an ed25519 key pair in the gate's folder; returns the
    /// private key path and the public key line.
    pub fn keygen(&self, name: &str) -> (PathBuf, String) {
        let path = self.path(name);
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&path);
        let out = run(cmd, None);
        assert!(out.status.success(), "ssh-keygen: {}", text(&out.stderr));
        let public = std::fs::read_to_string(format!("{}.pub", path.display())).unwrap().trim().to_owned();
        (path, public)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Runs the OpenSSH client against one gate.
#[derive(Clone)]
pub struct Client {
    dir: PathBuf,
    port: u16,
    runs: Arc<AtomicUsize>,
}

impl Client {
    /// A folder with an askpass script that answers `password` (or `code`
    /// to a verification-code prompt) and logs each prompt.
    fn askpass(&self, password: &str, code: Option<&str>) -> PathBuf {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let dir = self.dir.join(format!("ssh-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("answer"), format!("{password}\n")).unwrap();
        std::fs::write(dir.join("code"), format!("{}\n", code.unwrap_or(password))).unwrap();
        let script = dir.join("askpass.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{d}/prompts'\ncase \"$1\" in\n  *'Verification code'*) cat '{d}/code' ;;\n  *) cat '{d}/answer' ;;\nesac\n",
                d = dir.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn ssh_command(&self, o: &Ssh, askdir: &Path, tty: bool) -> Command {
        let mut cmd = Command::new("ssh");
        if tty {
            cmd.arg("-tt");
        } else {
            cmd.arg("-T");
        }
        cmd.arg("-p").arg(self.port.to_string());
        for opt in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "GlobalKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
            "BatchMode=no",
            "ConnectTimeout=10",
            "ServerAliveInterval=0",
            "ControlMaster=no",
            "ControlPath=none",
            "ForwardAgent=no",
            "ForwardX11=no",
        ] {
            cmd.arg("-o").arg(opt);
        }
        // The user name goes through a config file: OpenSSH refuses
        // control characters in a name given on the command line, and the
        // hostile-name test needs them.
        let config = askdir.join("ssh_config");
        std::fs::write(&config, format!("Host *\n  User {}\n", o.user)).unwrap();
        cmd.arg("-F").arg(&config);
        cmd.arg("-o").arg(format!("PreferredAuthentications={}", o.method));
        cmd.arg("-o").arg(format!("NumberOfPasswordPrompts={}", o.prompts));
        match o.identity {
            Some(key) => {
                cmd.arg("-o").arg("PubkeyAuthentication=yes").arg("-o").arg("IdentitiesOnly=yes").arg("-i").arg(key);
            }
            None => {
                cmd.arg("-o").arg("PubkeyAuthentication=no");
            }
        }
        for opt in o.options {
            cmd.arg("-o").arg(opt);
        }
        if let Some(b) = o.bind {
            cmd.arg("-b").arg(b);
        }
        cmd.arg("127.0.0.1");
        if let Some(c) = o.command {
            cmd.arg(c);
        }
        cmd.env("SSH_ASKPASS", askdir.join("askpass.sh"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .env("HOME", &self.dir)
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    fn prompts(askdir: &Path) -> Vec<String> {
        std::fs::read_to_string(askdir.join("prompts")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Runs `ssh` to completion (non-interactive: `o.command` is run).
    pub fn ssh(&self, o: &Ssh) -> SshRun {
        assert!(o.command.is_some(), "use ssh_session for interactive sessions");
        let askdir = self.askpass(o.password, o.code);
        let out = run(self.ssh_command(o, &askdir, false), None);
        SshRun { code: out.status.code(), stdout: text(&out.stdout), stderr: text(&out.stderr), prompts: Client::prompts(&askdir) }
    }

    /// An interactive session: waits for the welcome screen, presses `q`,
    /// and waits for ssh to exit. The screen text is in `stdout`.
    pub fn ssh_session(&self, o: &Ssh) -> SshRun {
        self.ssh_session_then(o, |stdin| {
            let _ = stdin.write_all(b"q");
            let _ = stdin.flush();
        })
    }

    /// An interactive session: waits for the welcome screen, calls
    /// `at_welcome` with ssh's stdin, and waits for ssh to exit.
    pub fn ssh_session_then(&self, o: &Ssh, at_welcome: impl FnOnce(&mut ChildStdin)) -> SshRun {
        let mut hook = Some(at_welcome);
        self.ssh_steps(o, &["Your choice: "], &mut |_, stdin| {
            if let Some(h) = hook.take() {
                h(stdin)
            }
        })
    }

    /// An interactive session: wait for each text in turn, then type the
    /// text that goes with it.
    pub fn ssh_script(&self, o: &Ssh, steps: &[(&str, &str)]) -> SshRun {
        let waits: Vec<&str> = steps.iter().map(|(w, _)| *w).collect();
        self.ssh_steps(o, &waits, &mut |i, stdin| {
            let _ = stdin.write_all(steps[i].1.as_bytes());
            let _ = stdin.flush();
        })
    }

    /// An interactive session: for each step, wait (with the deadline)
    /// until the screen since the last step contains the text, then call
    /// `act(step, stdin)`. Stops early if a step's text never appears.
    fn ssh_steps(&self, o: &Ssh, waits: &[&str], act: &mut dyn FnMut(usize, &mut ChildStdin)) -> SshRun {
        let o = o.clone().interactive();
        let askdir = self.askpass(o.password, o.code);
        let mut cmd = self.ssh_command(&o, &askdir, true);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning ssh");
        let mut stdin: Option<ChildStdin> = child.stdin.take();
        let out = pump(child.stdout.take().unwrap());
        let err = pump(child.stderr.take().unwrap());
        let until = Instant::now() + DEADLINE;
        let mut screen = Vec::new();
        let mut seen = 0; // screen bytes already matched by earlier steps
        'steps: for (step, wait_for) in waits.iter().enumerate() {
            loop {
                if Instant::now() >= until {
                    break 'steps;
                }
                // Search the raw bytes: the screen may not be UTF-8 (CP437 art).
                let needle = wait_for.as_bytes();
                let found = if needle.is_empty() { Some(0) } else { screen[seen..].windows(needle.len()).position(|w| w == needle) };
                if let Some(i) = found {
                    seen += i + needle.len();
                    if let Some(s) = stdin.as_mut() {
                        act(step, s);
                    }
                    break;
                }
                match out.recv_timeout(Duration::from_millis(100)) {
                    Ok(chunk) => screen.extend_from_slice(&chunk),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break 'steps,
                }
            }
        }
        let status = wait_deadline(&mut child, until.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)));
        drop(stdin);
        let drain_until = Instant::now() + Duration::from_secs(5);
        let mut stderr = Vec::new();
        drain(&out, &mut screen, drain_until);
        drain(&err, &mut stderr, drain_until);
        SshRun { code: status.and_then(|s| s.code()), stdout: text(&screen), stderr: text(&stderr), prompts: Client::prompts(&askdir) }
    }
}

/// A string field of an event's details.
pub fn detail<'a>(e: &'a Value, key: &str) -> &'a Value {
    &e["details"][key]
}

// ---- mail, web and one-time codes ----

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    l.local_addr().unwrap().port()
}

/// A real SMTP server (aiosmtpd) storing what it receives in a Maildir;
/// killed on drop.
pub struct Smtp {
    child: Child,
    pub port: u16,
    pub maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Smtp {
    /// Starts aiosmtpd on `port` and waits until it accepts connections.
    pub fn start(port: u16) -> Smtp {
        let dir = tempfile::Builder::new().prefix("portcullis-smtp-").tempdir().expect("tempdir");
        // An empty working folder: no stray .py file can shadow a module.
        let cwd = dir.path().join("cwd");
        std::fs::create_dir_all(&cwd).unwrap();
        let maildir = dir.path().join("box");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("aiosmtpd.log")).unwrap())
            .spawn()
            .expect("starting aiosmtpd (pip install aiosmtpd)");
        let mut smtp = Smtp { child, port, maildir, _dir: dir };
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        poll(Duration::from_secs(20), &format!("aiosmtpd on port {port}"), || {
            if let Ok(Some(status)) = smtp.child.try_wait() {
                let log = std::fs::read_to_string(smtp._dir.path().join("aiosmtpd.log")).unwrap_or_default();
                panic!("aiosmtpd exited early ({status}): {log}");
            }
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok().map(|_| ())
        });
        smtp
    }

    /// The messages delivered so far (files in the Maildir's `new`).
    pub fn messages(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(self.maildir.join("new")) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
    }

    /// Waits for at least `n` messages.
    pub fn wait_messages(&self, n: usize, within: Duration) -> Vec<PathBuf> {
        poll(within, &format!("{n} message(s) in {}", self.maildir.display()), || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = wait_deadline(&mut self.child, Duration::from_secs(5));
    }
}

/// One mail file (RFC 5322, any transfer encoding), decoded by Python's
/// `email` package: the headers we care about and the text/plain body.
#[derive(Debug)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

pub fn read_mail(path: &Path) -> Mail {
    const SCRIPT: &str = r#"
import email, email.policy, json, sys
with open(sys.argv[1], 'rb') as f:
    m = email.message_from_binary_file(f, policy=email.policy.default)
part = m.get_body(preferencelist=('plain',))
print(json.dumps({'to': str(m['To']), 'subject': str(m['Subject']), 'text': part.get_content() if part else ''}))
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(SCRIPT).arg(path).current_dir(std::env::temp_dir());
    let out = run(cmd, None);
    assert!(out.status.success(), "decoding {}: {}", path.display(), text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("decoder output");
    Mail { to: v["to"].as_str().unwrap_or_default().into(), subject: v["subject"].as_str().unwrap_or_default().into(), text: v["text"].as_str().unwrap_or_default().into() }
}

/// An HTTP answer as curl saw it.
#[derive(Debug)]
pub struct Http {
    /// 0 when there was no HTTP response at all.
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub curl_code: Option<i32>,
    pub stderr: String,
}

impl Http {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The security headers every response of the gate's web server carries.
    pub fn assert_security_headers(&self) {
        for (name, want) in [
            ("referrer-policy", Some("no-referrer")),
            ("cache-control", Some("no-store")),
            ("x-frame-options", Some("DENY")),
            ("x-content-type-options", Some("nosniff")),
            ("strict-transport-security", None),
            ("content-security-policy", None),
        ] {
            let got = self.header(name).unwrap_or_else(|| panic!("no {name} header on a {} response: {:?}", self.status, self.headers));
            if let Some(want) = want {
                assert_eq!(got, want, "{name} on a {} response", self.status);
            }
        }
        assert!(self.header("strict-transport-security").unwrap().contains("max-age="), "{:?}", self.headers);
        let csp = self.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src") || csp.contains("frame-ancestors"), "csp {csp:?}");
    }
}

/// Runs curl (with a 10 s limit) and splits the answer. `args` come
/// before the URL.
pub fn curl(url: &str, args: &[&str]) -> Http {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("headers");
    let body = dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http1.1", "--max-time", "10", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url);
    let out = run(cmd, None);
    let status: u16 = text(&out.stdout).trim().parse().unwrap_or(0);
    let raw = std::fs::read_to_string(&head).unwrap_or_default();
    let headers = raw
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Http { status, headers, body: std::fs::read_to_string(&body).unwrap_or_default(), curl_code: out.status.code(), stderr: text(&out.stderr) }
}

/// `oathtool --totp` for the 30 s step holding Unix time `at`.
pub fn totp_at(secret: &str, at: u64) -> String {
    let mut cmd = Command::new("oathtool");
    cmd.args(["--totp", "-b", secret, "-N", &format!("@{at}")]);
    oath(cmd)
}

/// `oathtool --hotp` for `counter`.
pub fn hotp(secret: &str, counter: u64) -> String {
    let mut cmd = Command::new("oathtool");
    cmd.args(["--hotp", "-b", secret, "-c", &counter.to_string()]);
    oath(cmd)
}

fn oath(cmd: Command) -> String {
    let out = run(cmd, None);
    assert!(out.status.success(), "oathtool: {}", text(&out.stderr));
    let code = text(&out.stdout).trim().to_owned();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "oathtool said {code:?}");
    code
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

impl Gate {
    /// `https://127.0.0.1:<web_port><path>`.
    pub fn web_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.web_port)
    }

    /// A link from a mail (made with `web.base_url`) pointed at this gate.
    pub fn local_link(&self, link: &str) -> String {
        let rest = link.strip_prefix("https://").unwrap_or_else(|| panic!("not an https link: {link}"));
        let path = &rest[rest.find('/').unwrap_or(rest.len())..];
        self.web_url(path)
    }

    /// The `.eml` files of the file spool, oldest first.
    pub fn spooled_mail(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(self.path("data/mail")) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect(),
            Err(_) => Vec::new(),
        };
        // <id>-<millis>.eml: order by id.
        files.sort_by_key(|p| p.file_name().and_then(|n| n.to_str()).and_then(|n| n.split('-').next()).and_then(|id| id.parse::<i64>().ok()).unwrap_or(i64::MAX));
        files
    }

    /// `mail queue [--all] --json`.
    pub fn mail_queue(&self, all: bool) -> Vec<Value> {
        let mut args = vec!["mail", "queue", "--json"];
        if all {
            args.push("--all");
        }
        match serde_json::from_str(&self.cli_ok(&args)) {
            Ok(Value::Array(v)) => v,
            other => panic!("mail queue: not a JSON array: {other:?}"),
        }
    }

    /// `security mfa status --user=U --json`.
    pub fn mfa_status(&self, user: &str) -> Value {
        let out = self.cli_ok(&["security", "mfa", "status", &format!("--user={user}"), "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("mfa status: {e}: {out}"))
    }
}

// ---- ssh under a pseudo-terminal the test controls ----

/// An interactive `ssh -tt` whose terminal is a pseudo-terminal this test
/// owns: its size can change (the client then sends a window change, as
/// under a real terminal), `TERM` is chosen, and the screen is kept as the
/// raw bytes the client wrote (no UTF-8 conversion).
pub struct PtySsh {
    child: Child,
    master: std::fs::File,
    out: mpsc::Receiver<Vec<u8>>,
    /// Everything the client wrote so far, as bytes.
    pub screen: Vec<u8>,
    /// Screen bytes already matched by `expect`.
    seen: usize,
    until: Instant,
}

/// A pseudo-terminal pair of the given size: (master, slave).
fn open_pty(cols: u16, rows: u16) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave): (libc::c_int, libc::c_int) = (-1, -1);
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two descriptors; name and termios are unused.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &ws) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptors we own.
    unsafe { (std::os::fd::OwnedFd::from_raw_fd(master), std::os::fd::OwnedFd::from_raw_fd(slave)) }
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Client {
    /// Starts `ssh -tt` for an interactive session on a pseudo-terminal of
    /// `cols` x `rows` with `TERM=term`.
    pub fn ssh_pty(&self, o: &Ssh, term: &str, cols: u16, rows: u16) -> PtySsh {
        use std::os::unix::process::CommandExt;
        let o = o.clone().interactive();
        let askdir = self.askpass(o.password, o.code);
        let mut cmd = self.ssh_command(&o, &askdir, true);
        cmd.env("TERM", term);
        let (master, slave) = open_pty(cols, rows);
        cmd.stdin(Stdio::from(slave.try_clone().unwrap())).stdout(Stdio::from(slave.try_clone().unwrap())).stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec: a new
        // session with the pty (stdin) as its controlling terminal, so the
        // client gets SIGWINCH when the test resizes it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning ssh on a pty");
        // Our copies of the slave side go with the command.
        drop(cmd);
        let master = std::fs::File::from(master);
        let out = pump(master.try_clone().unwrap());
        PtySsh { child, master, out, screen: Vec::new(), seen: 0, until: Instant::now() + DEADLINE }
    }
}

impl Gate {
    pub fn ssh_pty(&self, o: &Ssh, term: &str, cols: u16, rows: u16) -> PtySsh {
        self.client().ssh_pty(o, term, cols, rows)
    }
}

impl PtySsh {
    /// Waits (within the session's deadline) until the screen after the
    /// last match holds `text`; panics with the screen otherwise.
    pub fn expect(&mut self, text: &str) {
        loop {
            if let Some(i) = find_bytes(&self.screen[self.seen..], text.as_bytes()) {
                self.seen += i + text.len();
                return;
            }
            let left = self.until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("timed out waiting for {text:?}; screen so far:\n{}", String::from_utf8_lossy(&self.screen));
            }
            match self.out.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(chunk) => self.screen.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("ssh closed its terminal before {text:?} appeared; screen:\n{}", String::from_utf8_lossy(&self.screen))
                }
            }
        }
    }

    /// Gives the session `d` from now (instead of `DEADLINE` from its
    /// start) before `expect` and `finish` give up.
    pub fn within(&mut self, d: Duration) {
        self.until = Instant::now() + d;
    }

    /// Keeps reading the screen for `d`.
    pub fn settle(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while let Ok(chunk) = self.out.recv_timeout(until.saturating_duration_since(Instant::now())) {
            self.screen.extend_from_slice(&chunk);
        }
    }

    /// Types `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("writing to the pty");
        self.master.flush().unwrap();
    }

    /// Changes the terminal's size (the kernel sends ssh SIGWINCH).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        use std::os::fd::AsRawFd;
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// Waits for ssh to exit (within the deadline); returns its exit code
    /// (`None`: killed) and the whole screen as bytes.
    pub fn finish(mut self) -> (Option<i32>, Vec<u8>) {
        let status = wait_deadline(&mut self.child, self.until.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)));
        // EIO ends the reader once ssh has closed the terminal.
        drain(&self.out, &mut self.screen, Instant::now() + Duration::from_secs(2));
        (status.and_then(|s| s.code()), std::mem::take(&mut self.screen))
    }
}

impl Drop for PtySsh {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Gate {
    /// Like `launch`, with the daemon's `RLIMIT_NOFILE` (soft and hard) set
    /// to `nofile` before it starts, so raising the soft limit cannot help.
    pub fn launch_with_nofile(&mut self, nofile: u64) {
        use std::os::unix::process::CommandExt as _;
        self.launch_adjusted(|cmd| {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit { rlim_cur: nofile as libc::rlim_t, rlim_max: nofile as libc::rlim_t };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    /// A gate folder holding only `config`: no database, no migration run,
    /// no daemon (as after unpacking a release). `launch` starts it.
    pub fn fresh(config: &str) -> Gate {
        let dir = tempfile::Builder::new().prefix("portcullis-it-").tempdir().expect("tempdir");
        let path = dir.path().join("portcullis.hjson");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("daemon.log");
        Gate { cli_config: path.clone(), config: path, log, dir, child: None, port: 0, web_port: 0, ssh_runs: Arc::new(AtomicUsize::new(0)) }
    }
}

/// A TCP connection to the gate from the loopback address `from`.
pub fn connect_from(from: &str, port: u16) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

impl Client {
    /// `ssh` (non-interactive) answering the password prompts with
    /// `answers` in turn, as a person retypes after a typo; the code
    /// prompt that follows a refused password gets an empty answer (the
    /// Enter key of someone who has no code). As many password prompts as
    /// answers are allowed.
    pub fn ssh_typing(&self, o: &Ssh, answers: &[&str]) -> SshRun {
        let o = o.clone().prompts(answers.len().max(1) as u32);
        let askdir = self.askpass(o.password, o.code);
        let d = askdir.display();
        std::fs::write(askdir.join("answers"), answers.iter().map(|a| format!("{a}\n")).collect::<String>()).unwrap();
        std::fs::write(
            askdir.join("askpass.sh"),
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{d}/prompts'\ncase \"$1\" in\n  *'Verification code'*) echo ;;\n  *) n=$(grep -vc 'Verification code' '{d}/prompts'); sed -n \"${{n}}p\" '{d}/answers' ;;\nesac\n"
            ),
        )
        .unwrap();
        let out = run(self.ssh_command(&o, &askdir, false), None);
        SshRun { code: out.status.code(), stdout: text(&out.stdout), stderr: text(&out.stderr), prompts: Client::prompts(&askdir) }
    }
}
