//! The benchmark run: one command measures PERFORMANCE.md's P1, P2, P3, P4
//! (and P5), P6, P7, P8, P9, P10, P11, P12 and P13 on this machine and prints a Markdown report.
//!
//!     ./scripts/bench            # builds release, installs sshd if needed
//!     cargo bench --bench gate -- [--quick] [--only P1,P3,...]
//!
//! It starts the real daemon (the release binary, or the one named by
//! `PORTCULLIS_BENCH_BIN`) on loopback ports and, for P10, OpenSSH's own
//! sshd with a throwaway config on another port.

use portcullis::model::{Event, EventType, Millis, Severity};
use portcullis::store::events::EventFilter;
use portcullis::store::{EventWriter, Store};
use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "Correct-Horse-Battery-9";

struct Opts {
    quick: bool,
    only: Option<Vec<String>>,
}

impl Opts {
    fn wants(&self, p: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|x| x.eq_ignore_ascii_case(p)))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opts = Opts {
        quick: args.iter().any(|a| a == "--quick"),
        only: args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).map(|s| s.split(',').map(str::to_owned).collect()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    println!("# Benchmark run {}\n", Millis::now().rfc3339());
    println!("machine: {cores} cores, {:.1} GiB memory, {}; load average at start {}\n", mem_kib as f64 / 1048576.0, uname(), load_average());
    let mut kdf_rate = None;
    if opts.wants("P1") {
        kdf_rate = Some(raw_kdf_rate(cores, if opts.quick { 3 } else { 10 }));
        rt.block_on(p1_password_logins(kdf_rate.unwrap_or(0.0), if opts.quick { 5 } else { 20 }));
    }
    if opts.wants("P2") {
        rt.block_on(p2_login_under_flood(if opts.quick { 5 } else { 15 }, if opts.quick { 600 } else { 1250 }));
    }
    if opts.wants("P3") {
        p3_ingest(if opts.quick { 5 } else { 60 });
    }
    if opts.wants("P11") {
        p11_detection_ingest(if opts.quick { 2 } else { 5 }, if opts.quick { 2 } else { 10 });
    }
    if opts.only.as_ref().is_some_and(|o| o.iter().any(|x| x.eq_ignore_ascii_case("P11d"))) {
        // The detector by itself, three times per mix (only when named:
        // P11 prints it once at its end).
        for mix in [Mix::Flood, Mix::Spread] {
            let rates: Vec<String> = (0..3).map(|_| format!("{:.0}", p11_detector_alone(mix))).collect();
            println!("P11 detector alone, {mix:?}: {} events/s", rates.join(", "));
        }
    }
    if opts.wants("P4") || opts.wants("P5") {
        p4_window_query(if opts.quick { 1_000_000 } else { 10_000_000 });
    }
    if opts.wants("P6") {
        rt.block_on(p6_idle_sessions(if opts.quick { 200 } else { 1000 }));
    }
    if opts.wants("P9") {
        rt.block_on(p9_totp_checks(if opts.quick { 1_000 } else { 10_000 }));
    }
    if opts.wants("P10") {
        p10_pubkey_logins(if opts.quick { 10 } else { 30 });
    }
    if opts.wants("P12") {
        p12_blocks(100_000, if opts.quick { 100_000 } else { 1_000_000 });
    }
    if opts.wants("P7") {
        p7_start(if opts.quick { 100_000 } else { 1_000_000 }, if opts.quick { 3 } else { 10 });
    }
    if opts.wants("P8") {
        p8_scan(if opts.quick { 10_000 } else { 100_000 }, if opts.quick { 1_000_000 } else { 10_000_000 });
    }
    if opts.wants("P13") {
        rt.block_on(p13_botnet(if opts.quick { 100_000 } else { 1_000_000 }, if opts.quick { 1_000 } else { 10_000 }));
    }
    let _ = kdf_rate;
}

// ---------------------------------------------------------------- P8

/// `security scan` (all four kinds, the real binary) over `users`
/// accounts and `events` events spread over the suspicious scan's 7 days:
/// every user without a code, one in ten with an old-cost hash, 1,000 open
/// sessions left stale, failures from 50,000 addresses against them.
///
/// `PORTCULLIS_P8_KEEP=DIR` fills DIR once and keeps a copy of the filled
/// store: later runs with the same DIR scan that copy again without
/// filling (to profile the scan; the dataset's times then age by the time
/// since the fill).
fn p8_scan(users: u64, events: u64) {
    let temp = tempfile::tempdir().expect("tempdir");
    let kept = std::env::var_os("PORTCULLIS_P8_KEEP").map(PathBuf::from);
    let dir: &Path = kept.as_deref().unwrap_or(temp.path());
    let (db, pristine) = (dir.join("data").join("portcullis.db"), dir.join("pristine.db"));
    let filled = kept.is_some() && pristine.exists();
    let fill = if filled { 0.0 } else { p8_fill(dir, users, events) };
    if kept.is_some() {
        // The scan changes the store (it closes sessions, opens incidents):
        // each run starts from the filled copy.
        if filled {
            std::fs::copy(&pristine, &db).expect("restoring the dataset");
        } else {
            std::fs::copy(&db, &pristine).expect("keeping the dataset");
        }
    }
    let t = Instant::now();
    let st = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("--config")
        .arg(Gate::config_path(dir))
        .args(["security", "scan", "--json"])
        .env("PORTCULLIS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("security scan");
    let took = t.elapsed().as_secs_f64();
    assert!(st.success(), "security scan failed: {st:?}");
    let filled = if filled { "kept from an earlier run".to_owned() } else { format!("filled in {fill:.0} s") };
    println!("## P8 security scan\n\n{users} users, {events} events over 7 days ({filled}): `security scan --json` (passwords, mfa, sessions, suspicious) took **{took:.1} s** (target ≤ 10 s)\n");
}

/// P8's dataset in `dir` (config and store); returns the seconds it took.
fn p8_fill(dir: &Path, users: u64, events: u64) -> f64 {
    std::fs::create_dir_all(dir).expect("dataset folder");
    std::fs::write(Gate::config_path(dir), "data_dir: data\npasswords: {\n  iterations: 2000\n}\n").expect("config");
    let store = fresh_store(&dir.join("data"), "portcullis.db");
    let now = Millis::now();
    let start = Instant::now();
    let current = portcullis::core::password::hash(PASSWORD, 2000);
    let old = portcullis::core::password::hash(PASSWORD, 1000);
    for i in 0..users {
        let name = format!("user{i}");
        let hash = if i % 10 == 0 { &old } else { &current };
        let u = store.create_user(&portcullis::store::users::NewUser { username: &name, email: None, password_hash: hash, groups: &[], now }).expect("user");
        if i < 1000 {
            let at = now.minus(Duration::from_secs(2 * 86_400));
            let s = portcullis::store::sessions::NewSession { user_id: u.id, device_id: None, protocol: "ssh", ip: "10.0.0.1", client_version: "v", auth_method: "password", factors: 1, connected_at: at, now: at };
            store.start_session(&s).expect("session");
        }
    }
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..events {
        let user = (i % users) as i64 + 1;
        let at = Millis(now.0 - ((events - i) as i64 * 7 * 86_400_000 / events as i64));
        let ip = format!("10.{}.{}.{}", (i % 50_000) / 65_536, (i % 50_000) / 256 % 256, i % 256);
        let e = if i % 4 == 0 {
            Event::new(EventType::LoginSuccess, Severity::Info, "x", at).user(Some(user), Some("u")).ip(Some(&ip))
        } else {
            Event::new(EventType::LoginFailed, Severity::Low, "x", at).user(Some(user), Some("u")).ip(Some(&ip)).detail("reason", "bad_password")
        };
        batch.push(e);
        if batch.len() == 10_000 {
            store.insert_events(&batch).expect("fill");
            batch.clear();
        }
    }
    store.insert_events(&batch).expect("fill");
    drop(store);
    start.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- P7

/// The time from starting `portcullis serve` to its ready line (ms),
/// `runs` times, sorted; each daemon is stopped before the next starts.
fn p7_ready_times(dir: &Path, runs: usize) -> Vec<f64> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let mut child = Command::new(daemon_bin())
            .arg("--config")
            .arg(Gate::config_path(dir))
            .arg("serve")
            .env("PORTCULLIS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(line.starts_with("ready "), "P7: no ready line: {line:?}");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times
}

/// P7: start to the ready line with `total` events stored (the last 7
/// days, so detection's rebuild has the whole of them to replay: it runs
/// after the ready line), 5,000 accounts; then again with P12's 100,000
/// blocks loaded as well.
fn p7_start(total: u64, runs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "data_dir: data\nssh: {\n  listen: \"127.0.0.1:0\"\n}\npasswords: {\n  iterations: 1000\n}\nweb: {\n  listen: \"127.0.0.1:0\"\n}\n";
    std::fs::write(Gate::config_path(dir.path()), config).expect("config");
    Gate::cli(dir.path(), &["migrate", "run"], None);
    let db = dir.path().join("data/portcullis.db");
    let store = Store::open(&db).expect("store");
    let now = Millis::now();
    let fill = Instant::now();
    let hash = portcullis::core::password::hash(PASSWORD, 1000);
    for i in 0..5000 {
        store.create_user(&portcullis::store::users::NewUser { username: &format!("user{i}"), email: None, password_hash: &hash, groups: &[], now }).expect("user");
    }
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..total {
        let user = (i % 5000) as i64 + 1;
        let at = Millis(now.0 - ((total - i) as i64 * 7 * 86_400_000 / total as i64));
        let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let e = if i % 4 == 0 {
            Event::new(EventType::LoginSuccess, Severity::Info, "keyboard-interactive login", at).user(Some(user), Some(&format!("user{user}"))).ip(Some(&ip))
        } else {
            Event::new(EventType::LoginFailed, Severity::Low, "keyboard-interactive login failed: bad password", at).user(Some(user), Some(&format!("user{user}"))).ip(Some(&ip)).detail("reason", "bad_password")
        };
        batch.push(e);
        if batch.len() == 10_000 {
            store.insert_events(&batch).expect("fill");
            batch.clear();
        }
    }
    store.insert_events(&batch).expect("fill");
    let filled = fill.elapsed().as_secs_f64();
    let events_only = p7_ready_times(dir.path(), runs);
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let rows: Vec<portcullis::store::blocks::BlockRow> = p12_mix(100_000, &mut rng)
        .into_iter()
        .map(|network| portcullis::store::blocks::BlockRow { network, reason: "bench".into(), source: "import".into(), created_at: now, expires_at: None, incident_id: None, created_by: "bench".into(), repeat: 0 })
        .collect();
    store.import_blocks(&rows, now).expect("import");
    drop(store);
    let with_blocks = p7_ready_times(dir.path(), runs);
    let size_mib = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    let row = |name: &str, t: &[f64]| format!("| {name} | {runs} | {:.0} ms | {:.0} ms | {:.0} ms |", percentile(t, 0.0), percentile(t, 0.5), percentile(t, 1.0));
    println!(
        "## P7 start to the ready line\n\n{total} events over the last 7 days and 5,000 accounts (database {size_mib:.0} MiB, filled in {filled:.0} s), `portcullis serve` started {runs} times, from the spawn to its `ready` line on stdout (detection's rebuild of those events runs after it). Then the same with 100,000 blocked addresses and networks (P12's mix) added.\n\n| store | starts | min | median | max |\n|---|---|---|---|---|\n{}\n{}\n\n(target: ≤ 300 ms)\n",
        row(&format!("{total} events"), &events_only),
        row(&format!("{total} events + 100,000 blocks"), &with_blocks),
    );
}

/// The daemon's binary: this build's, or `PORTCULLIS_BENCH_BIN` (another
/// build, to measure before and after a change with the same benchmark).
fn daemon_bin() -> PathBuf {
    std::env::var_os("PORTCULLIS_BENCH_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_portcullis")))
}

fn uname() -> String {
    Command::new("uname").arg("-srm").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------- daemon

struct Gate {
    dir: tempfile::TempDir,
    child: Child,
    addr: String,
    /// The HTTPS address (for `/metrics`).
    web: String,
}

impl Gate {
    fn config_path(dir: &Path) -> PathBuf {
        dir.join("portcullis.hjson")
    }

    fn cli(dir: &Path, args: &[&str], stdin: Option<&str>) {
        let mut c = Command::new(daemon_bin());
        c.arg("--config").arg(Self::config_path(dir)).args(args).stdin(Stdio::piped()).stdout(Stdio::null());
        let mut child = c.spawn().expect("cli");
        if let Some(s) = stdin {
            child.stdin.take().expect("stdin").write_all(s.as_bytes()).expect("write");
        }
        drop(child.stdin.take());
        let st = child.wait().expect("wait");
        assert!(st.success(), "portcullis {args:?} failed");
    }

    /// Writes the config, creates `alice` (with `key` if given) and starts.
    /// Caps and penalties are out of the way (a load generator, not an attack).
    fn start(iterations: u32, key: Option<&str>) -> Gate {
        Self::start_with(
            &format!("ssh: {{\n  listen: \"127.0.0.1:0\"\n  max_startups: \"2000:30:4000\"\n  max_startups_per_address: 4000\n  penalties: {{\n    max_failures: 100000\n  }}\n}}\npasswords: {{\n  iterations: {iterations}\n}}\nkdf: {{\n  queue: 64\n}}\n"),
            key,
        )
    }

    /// `config` holds everything but `data_dir` and `web`.
    fn start_with(config: &str, key: Option<&str>) -> Gate {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(Self::config_path(dir.path()), format!("data_dir: data\n{config}web: {{\n  listen: \"127.0.0.1:0\"\n}}\n")).expect("config");
        Self::cli(dir.path(), &["migrate", "run"], None);
        Self::cli(dir.path(), &["user", "add", "alice", "--password-stdin"], Some(&format!("{PASSWORD}\n")));
        if let Some(k) = key {
            Self::cli(dir.path(), &["user", "key", "add", "alice", k], None);
        }
        let mut child = Command::new(daemon_bin())
            .arg("--config")
            .arg(Self::config_path(dir.path()))
            .arg("serve")
            .env("PORTCULLIS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
        let addr = line.split_whitespace().find_map(|w| w.strip_prefix("ssh=")).expect("ssh= in ready line").to_owned();
        let web = line.split_whitespace().find_map(|w| w.strip_prefix("web=")).expect("web= in ready line").to_owned();
        Gate { dir, child, addr, web }
    }

    fn rss_kib(&self) -> u64 {
        rss_of(self.child.id())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

struct Client;
impl client::Handler for Client {
    type Error = russh::Error;
    async fn check_server_key(&mut self, _key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

fn client_config() -> Arc<client::Config> {
    Arc::new(client::Config { inactivity_timeout: None, ..Default::default() })
}

// ---------------------------------------------------------------- P1

fn raw_kdf_rate(threads: usize, secs: u64) -> f64 {
    use portcullis::core::password;
    let phc = password::hash(PASSWORD, 600_000);
    let count = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (phc, count) = (phc.clone(), count.clone());
            std::thread::spawn(move || {
                while Instant::now() < end {
                    let v = password::verify(PASSWORD, &phc);
                    assert!(matches!(v, password::Verify::Match { .. }));
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("## P1 raw KDF\n\nPBKDF2-HMAC-SHA256 600,000 iterations, {threads} threads, {secs} s: **{rate:.1} verifications/s** ({:.1} ms each per core)\n", 1000.0 * threads as f64 / rate);
    rate
}

async fn p1_password_logins(kdf_rate: f64, secs: u64) {
    let gate = Gate::start(600_000, None);
    let addr = gate.addr.clone();
    let clients = 16;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (addr, ok, failed, lat) = (addr.clone(), ok.clone(), failed.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let t = Instant::now();
                let r = async {
                    let mut h = client::connect(client_config(), addr.as_str(), Client).await?;
                    let res = h.authenticate_password("alice", PASSWORD).await?;
                    let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
                    Ok::<bool, russh::Error>(res.success())
                }
                .await;
                match r {
                    Ok(true) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut l) = lat.lock() {
                            l.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    other => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("P1: a login failed: {:?}", other.map_err(|e| e.to_string()));
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rate = ok.load(Ordering::Relaxed) as f64 / elapsed;
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(|a, b| a.total_cmp(b));
    println!(
        "## P1 SSH password logins\n\n{clients} concurrent russh clients, production cost, {secs} s: **{rate:.1} logins/s** = **{:.0}%** of the raw KDF rate (target ≥ 90%); {} failed; latency median {:.0} ms, p99 {:.0} ms\n",
        100.0 * rate / kdf_rate,
        failed.load(Ordering::Relaxed),
        percentile(&l, 0.5),
        percentile(&l, 0.99)
    );
}

// ---------------------------------------------------------------- P2

/// One password login of alice from 127.0.0.1: its time in ms, or why not.
async fn legit_login(addr: &str) -> Result<f64, String> {
    let t = Instant::now();
    let mut h = client::connect(client_config(), addr, Client).await.map_err(|e| format!("connect: {e}"))?;
    let res = h.authenticate_password("alice", PASSWORD).await.map_err(|e| format!("auth: {e}"))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
    if res.success() {
        Ok(ms)
    } else {
        Err("refused".into())
    }
}

/// Sequential legitimate logins for `secs`: latencies (ms), failures, and
/// what the first few failures were (with their time since the start).
async fn legit_logins(addr: &str, secs: u64) -> (Vec<f64>, u64, Vec<String>) {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let (mut ok, mut failed, mut why) = (Vec::new(), 0u64, Vec::new());
    while Instant::now() < end {
        let at = start.elapsed().as_secs_f64();
        match tokio::time::timeout(Duration::from_secs(30), legit_login(addr)).await {
            Ok(Ok(ms)) => ok.push(ms),
            other => {
                failed += 1;
                if failed <= 3 {
                    let reason = match other {
                        Ok(Err(e)) => e,
                        _ => "no answer within 30 s".to_owned(),
                    };
                    eprintln!("P2: a legitimate login failed at {at:.1} s: {reason}");
                    why.push(format!("{reason} (at {at:.1} s)"));
                }
            }
        }
    }
    ok.sort_by(|a, b| a.total_cmp(b));
    (ok, failed, why)
}

/// One flood attempt from 127.0.0.2: connect and try one wrong password
/// against alice. True when the gate answered the password (false: the
/// connection was dropped before that, at accept or in the handshake).
async fn flood_attempt(addr: std::net::SocketAddr, n: u64) -> bool {
    let attempt = async {
        let sock = tokio::net::TcpSocket::new_v4().ok()?;
        sock.set_reuseaddr(true).ok()?;
        sock.bind("127.0.0.2:0".parse().ok()?).ok()?;
        let stream = sock.connect(addr).await.ok()?;
        let mut h = client::connect_stream(client_config(), stream, Client).await.ok()?;
        let r = h.authenticate_password("alice", format!("Wrong-Battery-{n}")).await.ok();
        let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
        r.map(|_| ())
    };
    matches!(tokio::time::timeout(Duration::from_secs(10), attempt).await, Ok(Some(())))
}

/// What the flood cost the hashing pool, read after it. Per address from
/// the daemon's store: every password check of 127.0.0.2 that ran the KDF
/// ended in a `login_failed` event with reason `bad_password` (alice
/// exists and has a password; a refusal before the hash has another
/// reason), and the gate held it off with an `ip_blocked` event of kind
/// `penalty`. In all from `/metrics`: `portcullis_kdf_duration_seconds_count`
/// (every hash the pool ran, also one whose client had gone before its
/// event), less alice's own checks in the same time.
struct FloodCost {
    /// Password checks of 127.0.0.2 (its `bad_password` failures).
    checked: u64,
    /// Whether it was held off (a penalty `ip_blocked` event).
    held_off: bool,
    /// Hashes the pool ran during the flood, less alice's checks: at most
    /// what 127.0.0.2 cost, whatever its events say.
    pool_others: u64,
}

/// `portcullis_kdf_duration_seconds_count`: the hashes the pool has run.
fn hashes_run(web: &str) -> u64 {
    metric(&metrics_of(web), "portcullis_kdf_duration_seconds_count").expect("portcullis_kdf_duration_seconds_count in /metrics")
}

/// The flood's cost from the events after `after_id` (once the daemon has
/// written them all) and the pool's count `hashes_before` it.
fn flood_cost(gate: &Gate, after_id: i64, hashes_before: u64) -> FloodCost {
    let store = Store::open(&gate.dir.path().join("data/portcullis.db")).expect("store");
    // The writer flushes in batches: wait (10 s at most) until no event
    // has come for half a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = store.last_event_id().expect("last event id");
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = store.last_event_id().expect("last event id");
        if now == last {
            break;
        }
        last = now;
    }
    let hashes = hashes_run(&gate.web).saturating_sub(hashes_before);
    let events = store.events(&EventFilter { after_id: Some(after_id), limit: 10_000_000, ..Default::default() }).expect("events");
    let reason = |e: &portcullis::model::StoredEvent| e.details.get("reason").and_then(|r| r.as_str()).map(str::to_owned);
    let checked_from = |ip: &str| events.iter().filter(|e| e.ip.as_deref() == Some(ip) && e.event_type == "login_failed" && reason(e).as_deref() == Some("bad_password")).count() as u64;
    let alice_ok = events.iter().filter(|e| e.ip.as_deref() == Some("127.0.0.1") && e.event_type == "login_success").count() as u64;
    FloodCost {
        checked: checked_from("127.0.0.2"),
        held_off: events.iter().any(|e| e.ip.as_deref() == Some("127.0.0.2") && e.event_type == "ip_blocked" && e.details.get("kind").and_then(|k| k.as_str()) == Some("penalty")),
        pool_others: hashes.saturating_sub(alice_ok + checked_from("127.0.0.1")),
    }
}

/// P2: alice logs in from 127.0.0.1, one login after another, first with
/// no other traffic, then while 127.0.0.2 floods wrong passwords for her
/// account at `rate` attempts/s (many connections, paced by 256 tasks).
/// Production KDF cost and the default caps and penalties.
async fn p2_login_under_flood(secs: u64, rate: u64) {
    let gate = Gate::start_with("ssh: {\n  listen: \"127.0.0.1:0\"\n}\n", None);
    let addr = gate.addr.clone();
    let target: std::net::SocketAddr = addr.parse().expect("address");
    let budget = 10; // ssh.penalties.max_failures, the default
    let (quiet, quiet_failed, quiet_why) = legit_logins(&addr, secs).await;
    let hashes_before = hashes_run(&gate.web);
    let first_id = Store::open(&gate.dir.path().join("data/portcullis.db")).expect("store").last_event_id().expect("last event id");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers = 256u64;
    let period = Duration::from_micros(workers * 1_000_000 / rate);
    let flood_start = Instant::now();
    let mut flood = Vec::new();
    for w in 0..workers {
        let (stop, sent, answered) = (stop.clone(), sent.clone(), answered.clone());
        flood.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period.mul_f64(w as f64 / workers as f64), period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = w << 32;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                if flood_attempt(target, n).await {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let (loud, loud_failed, loud_why) = legit_logins(&addr, secs).await;
    stop.store(true, Ordering::Relaxed);
    let flood_secs = flood_start.elapsed().as_secs_f64();
    let attempts = sent.load(Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    let cost = flood_cost(&gate, first_id, hashes_before);
    let runs = cost.checked;
    let over_budget = if cost.held_off { format!("**{} after it went over its budget**", runs.saturating_sub(budget)) } else { "(it was never held off in this run, so the count says nothing)".to_owned() };
    println!(
        "## P2 a legitimate login while another address floods\n\nalice logs in with her password from 127.0.0.1, one login after another, {secs} s without other traffic, then {secs} s while 127.0.0.2 tries wrong passwords for her account; production KDF cost, default caps and penalties (10 failures in 10 min hold an address off).\n\n\
| | logins | failed | median | p99 |\n|---|---|---|---|---|\n\
| no flood | {} | {quiet_failed} | {:.0} ms | **{:.0} ms** |\n\
| flood | {} | {loud_failed} | {:.0} ms | **{:.0} ms** |\n\n\
Flood: **{:.0} attempts/s** achieved ({attempts} connections in {flood_secs:.1} s, target {rate}/s; {} got an answer to their password, the rest were dropped right after the TCP accept: over the per-address cap of unauthenticated connections, then held off). \
KDF runs for 127.0.0.2: {runs} (its budget: {budget} failures) → {over_budget} (target 0; its password checks, from the daemon's events); the pool ran {} hashes in that time besides alice's (`portcullis_kdf_duration_seconds_count`, an upper bound for the flooder's). Targets: p99 ≤ 1 s with the flood.\n\n\
Legitimate logins from 127.0.0.1 refused or cut: **{quiet_failed}** of {} without the flood{}, **{loud_failed}** of {} with it{}.\n",
        quiet.len(),
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
        loud.len(),
        percentile(&loud, 0.5),
        percentile(&loud, 0.99),
        attempts as f64 / flood_secs,
        answered.load(Ordering::Relaxed),
        cost.pool_others,
        quiet.len() as u64 + quiet_failed,
        why_text(&quiet_why),
        loud.len() as u64 + loud_failed,
        why_text(&loud_why),
    );
}

/// " (first: ...; ...)" for a list of failure reasons, or nothing.
fn why_text(why: &[String]) -> String {
    if why.is_empty() {
        String::new()
    } else {
        format!(" (first: {})", why.join("; "))
    }
}

// ---------------------------------------------------------------- P3

/// Two mixes of events. `Spread`: every event from a different address and
/// one of 5,000 accounts in turn (the worst case for the indexes: every
/// insert lands on a different page). `Flood`: what an attack under
/// admission control produces: most events from 32 addresses, a third
/// without an account (refused connections), the rest against 200 accounts.
#[derive(Clone, Copy, Debug)]
enum Mix {
    Spread,
    Flood,
}

fn sample_event(mix: Mix, i: u64, now: Millis) -> Event {
    let at = Millis(now.0 - 600_000 + (i % 600_000) as i64);
    match mix {
        Mix::Spread => {
            let user = (i % 5000) as i64 + 1;
            let t = if i % 3 == 0 { EventType::LoginSuccess } else { EventType::LoginFailed };
            Event::new(t, Severity::Low, "keyboard-interactive login failed: bad password", at)
                .user(Some(user), Some(&format!("user{user}")))
                .ip(Some(&format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)))
                .detail("reason", "bad_password")
                .detail("method", "keyboard-interactive")
                .detail("client_version", "SSH-2.0-OpenSSH_9.2p1")
        }
        Mix::Flood => {
            let ip = format!("203.0.113.{}", i % 32);
            if i % 3 == 0 {
                Event::new(EventType::ConnectionRefused, Severity::Low, "connection refused: address held off after repeated failures", at)
                    .ip(Some(&ip))
                    .detail("reason", "address held off after repeated failures")
            } else {
                let user = (i % 200) as i64 + 1;
                Event::new(EventType::LoginFailed, Severity::Low, "keyboard-interactive login failed: bad password", at)
                    .user(Some(user), Some(&format!("user{user}")))
                    .ip(Some(&ip))
                    .detail("reason", "bad_password")
                    .detail("method", "keyboard-interactive")
                    .detail("client_version", "SSH-2.0-OpenSSH_9.2p1")
            }
        }
    }
}

fn fresh_store(dir: &Path, name: &str) -> Store {
    let store = Store::open(&dir.join(name)).expect("open");
    store.migrate(None).expect("migrate");
    store
}

fn p3_ingest(secs: u64) {
    println!("## P3 event ingest\n\nAll 4 secondary indexes on; writer batches of up to 10,000. The product's writer always hash-chains (chain on); chain off is the same writer with the chain left out (a benchmark-only constructor). Off, on, off again, {secs} s each, same mix; the cost is on / mean of the offs. Raw = rusqlite prepared inserts of the same rows without the chain, 1,000 per transaction, same schema and page cache. Verify = `security events verify`'s walk (`Store::verify_event_chain`) over the chain-on run's rows.\n");
    println!("| mix | chain on (the product) | chain off | on / off | raw batched insert | on / raw | verify |\n|---|---|---|---|---|---|---|");
    for mix in [Mix::Flood, Mix::Spread] {
        let (off1, _, _) = p3_writer(mix, secs, false);
        let (on, n, verify) = p3_writer(mix, secs, true);
        let (off2, _, _) = p3_writer(mix, secs, false);
        let off = (off1 + off2) / 2.0;
        let (raw_rate, raw_n) = p3_raw(mix, n);
        let (verified, verify_secs) = verify.expect("verify ran");
        println!(
            "| {mix:?} | **{on:.0} events/s** ({n} in {secs} s) | {off1:.0} / {off2:.0} events/s | **{:.0}%** | {raw_rate:.0} rows/s ({raw_n} rows) | **{:.0}%** | {verified} events in {verify_secs:.2} s ({:.0} events/s) |",
            100.0 * on / off,
            100.0 * on / raw_rate,
            verified as f64 / verify_secs
        );
    }
    println!("\n(targets: ≥ 100,000 events/s sustained, ≥ 50% of raw)\n");
    println!("\n### P3 with devices, risk and the chain, against without them\n\nWith: the product's writer (chain on), the login events carrying a device id, a risk score and `details.risk` (three factors, as `core::risk` writes them): as the gate writes them (on successes only: a login is scored once its first factor is right, so a wrong password's failure has neither), and the worst case (on every event with an account, as if each were a failed code after a right password). Without: chain off, the events as before devices and risk. Without, with (as written), with (worst case), without again, {secs} s each, same mix.\n");
    println!("| mix | with, as written | with, worst case | without | as written / mean without | worst case / mean without |\n|---|---|---|---|---|---|");
    for mix in [Mix::Flood, Mix::Spread] {
        let (off1, _, _) = p3_writer_of(mix, secs, false, sample_event);
        let (on, _, _) = p3_writer_of(mix, secs, true, sample_event_as_written);
        let (worst, _, _) = p3_writer_of(mix, secs, true, sample_event_with_risk);
        let (off2, _, _) = p3_writer_of(mix, secs, false, sample_event);
        let off = (off1 + off2) / 2.0;
        println!("| {mix:?} | **{on:.0} events/s** | {worst:.0} events/s | {off1:.0} / {off2:.0} events/s | **{:.0}%** | {:.0}% |", 100.0 * on / off, 100.0 * worst / off);
    }
    println!();
}

/// Events through the daemon's writer (channel + group commit), sustained
/// for `secs`: (events/s, events, with the chain: the verify walk's
/// (events, seconds)).
/// `sample_event` as the gate writes a login's event today: with the
/// device it came from and its risk score and factors (`details.risk`,
/// what `core::risk` puts there), for P3 "with devices and risk".
fn sample_event_with_risk(mix: Mix, i: u64, now: Millis) -> Event {
    with_risk(sample_event(mix, i, now), i)
}

/// `e` with a device and `details.risk` when it has an account.
fn with_risk(mut e: Event, i: u64) -> Event {
    if e.user_id.is_some() {
        let risk = serde_json::json!({
            "score": 40,
            "factors": [
                { "name": "untrusted_device", "weight": 10 },
                { "name": "new_address", "weight": 15 },
                { "name": "new_network", "weight": 15 }
            ],
            "decision": "allow"
        });
        e = e.device(Some((i % 20_000) as i64 + 1)).detail("risk", risk);
        e.risk_score = 40;
    }
    e
}

/// `sample_event` with a device and risk where the gate puts them: on a
/// login that passed its first factor (here the successes; the mixes'
/// failures are wrong passwords, which are not scored).
fn sample_event_as_written(mix: Mix, i: u64, now: Millis) -> Event {
    let e = sample_event(mix, i, now);
    if e.event_type == EventType::LoginSuccess {
        with_risk(e, i)
    } else {
        e
    }
}

fn p3_writer(mix: Mix, secs: u64, chain: bool) -> (f64, u64, Option<(u64, f64)>) {
    p3_writer_of(mix, secs, chain, sample_event)
}

fn p3_writer_of(mix: Mix, secs: u64, chain: bool, make: fn(Mix, u64, Millis) -> Event) -> (f64, u64, Option<(u64, f64)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Millis::now();
    let store = fresh_store(dir.path(), "writer.db");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let (writer, thread) =
        if chain { EventWriter::start_joinable(store.path(), 10_000) } else { EventWriter::start_unchained_for_benchmark(store.path(), 10_000) }.expect("writer");
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut n = 0u64;
    rt.block_on(async {
        while Instant::now() < end {
            for _ in 0..1000 {
                writer.record(make(mix, n, now)).await;
                n += 1;
            }
        }
        writer.flush().await;
    });
    let writer_rate = n as f64 / start.elapsed().as_secs_f64();
    drop(writer);
    thread.join();
    let verify = chain.then(|| {
        let start = Instant::now();
        let report = store.verify_event_chain().expect("verify");
        assert!(report.problem.is_none(), "the chain does not verify: {:?}", report.problem);
        assert_eq!(report.verified, n);
        (report.verified, start.elapsed().as_secs_f64())
    });
    (writer_rate, n, verify)
}

/// Raw prepared inserts of the first `n` (at most 3M) rows of the mix.
fn p3_raw(mix: Mix, n: u64) -> (f64, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Millis::now();
    let raw_db = dir.path().join("raw.db");
    drop(fresh_store(dir.path(), "raw.db"));
    let mut conn = rusqlite::Connection::open(&raw_db).expect("open raw");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "NORMAL").expect("sync");
    conn.pragma_update(None, "cache_size", -65_536).expect("cache");
    let rows: Vec<Event> = (0..n.min(3_000_000)).map(|i| sample_event(mix, i, now)).collect();
    let start = Instant::now();
    for chunk in rows.chunks(1000) {
        let tx = conn.transaction().expect("tx");
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO security_events (event_type, category, severity, user_id, username, ip, device_id, session_id, description, details, risk_score, is_suspicious, created_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                )
                .expect("prepare");
            for e in chunk {
                st.execute(rusqlite::params![
                    e.event_type.as_str(),
                    e.category.as_str(),
                    e.severity.as_str(),
                    e.user_id,
                    e.username,
                    e.ip,
                    e.device_id,
                    e.session_id,
                    e.description,
                    e.details.to_string(),
                    e.risk_score,
                    e.is_suspicious,
                    e.created_at.0
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let raw_rate = rows.len() as f64 / start.elapsed().as_secs_f64();
    (raw_rate, rows.len())
}

// ---------------------------------------------------------------- P11

/// One P11 run: the rate and what the detector did.
struct P11Run {
    rate: f64,
    /// Events over the time to the writer's last flush only (without the
    /// detector's catch-up after it).
    committed_rate: f64,
    n: u64,
    /// From the writer's last flush to the detector past the last event (ms).
    catch_up_ms: f64,
    /// The most events committed but not yet through the detector, sampled
    /// every 50 ms.
    max_lag: i64,
    /// Events the detector looked at, and how many of them it read back
    /// from the table (handoff full) rather than from the writer.
    seen: u64,
    read_back: u64,
    findings: u64,
    tracked: u64,
    evicted: u64,
}

fn median_of(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    percentile(&s, 0.5)
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// P11: event ingest through the writer with the detection thread beside
/// it (every rule on, defaults) against the writer alone, same mixes as
/// P3, same run. Short runs taking turns (off, on, off, on, ...: `pairs`
/// pairs of `secs` each per mix), so a change in the machine's load falls
/// on both; the figure is the median of the pairs' ratios. "On" is
/// measured end to end: until the detector has looked at every event
/// committed, not only until the writer committed it.
fn p11_detection_ingest(secs: u64, pairs: usize) {
    println!(
        "## P11 event ingest with detection on\n\nThe daemon's path: events through the writer (batches of up to 10,000); with detection on, each committed batch is handed to the detection thread (every rule on, default thresholds, no rebuild) and the clock runs until the detector has looked at every committed event (`LiveStats::seen_upto`). \
{pairs} pairs of {secs} s runs per mix, in turns (off, on, off, on, ...), each on a fresh store; ratio = on / off of each pair; \"bracketed\" = on / mean of the offs before and after it (cancels a steady drift of the load).\n"
    );
    println!("| mix | off events/s, median (min–max) | on events/s, median (min–max) | on / off per pair: **median** (min–max) | bracketed median | detector: events seen / written, read back from the table, most behind (sampled), catch-up after the last flush median (max), findings, keys, evicted | load average (start → end) |\n|---|---|---|---|---|---|---|");
    for mix in [Mix::Flood, Mix::Spread] {
        let load_start = load_average();
        let (mut offs, mut ons) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
        for _ in 0..pairs {
            offs.push(p11_one(mix, secs, false));
            ons.push(p11_one(mix, secs, true));
        }
        let load_end = load_average();
        let off_rates: Vec<f64> = offs.iter().map(|r| r.rate).collect();
        let on_rates: Vec<f64> = ons.iter().map(|r| r.rate).collect();
        let ratios: Vec<f64> = on_rates.iter().zip(&off_rates).map(|(on, off)| on / off).collect();
        let committed: Vec<f64> = ons.iter().zip(&offs).map(|(on, off)| on.committed_rate / off.committed_rate).collect();
        let bracketed: Vec<f64> = (0..pairs.saturating_sub(1)).map(|i| on_rates[i] / ((off_rates[i] + off_rates[i + 1]) / 2.0)).collect();
        let (off_lo, off_hi) = min_max(&off_rates);
        let (on_lo, on_hi) = min_max(&on_rates);
        let (r_lo, r_hi) = min_max(&ratios);
        let catch: Vec<f64> = ons.iter().map(|r| r.catch_up_ms).collect();
        let seen: u64 = ons.iter().map(|r| r.seen).sum();
        let written: u64 = ons.iter().map(|r| r.n).sum();
        let read_back: u64 = ons.iter().map(|r| r.read_back).sum();
        let max_lag = ons.iter().map(|r| r.max_lag).max().unwrap_or(0);
        let last = ons.last();
        println!(
            "| {mix:?} | {:.0} ({off_lo:.0}–{off_hi:.0}) | {:.0} ({on_lo:.0}–{on_hi:.0}) | **{:.0}%** ({:.0}–{:.0}%) | {:.0}% | {seen} / {written}, {read_back} read back, at most {max_lag} behind, catch-up {:.0} ms ({:.0} ms), last run {} findings, {} keys, {} evicted | {load_start} → {load_end} |",
            median_of(&off_rates),
            median_of(&on_rates),
            100.0 * median_of(&ratios),
            100.0 * r_lo,
            100.0 * r_hi,
            100.0 * median_of(&bracketed),
            median_of(&catch),
            min_max(&catch).1,
            last.map_or(0, |r| r.findings),
            last.map_or(0, |r| r.tracked),
            last.map_or(0, |r| r.evicted),
        );
        eprintln!("P11 {mix:?}: ratios {:?}", ratios.iter().map(|r| format!("{:.2}", r)).collect::<Vec<_>>());
        println!("| {mix:?}, to the last commit only (without the detector's catch-up after it) | | | median {:.0}% ({:.0}–{:.0}%) | | | |", 100.0 * median_of(&committed), 100.0 * min_max(&committed).0, 100.0 * min_max(&committed).1);
    }
    println!("\nThe detector by itself on one thread (300,000 events made first): Flood {:.0} events/s, Spread {:.0} events/s.\n", p11_detector_alone(Mix::Flood), p11_detector_alone(Mix::Spread));
    println!("(target: on ≥ 90% of off)\n");
}

/// The `Detector` by itself over 300,000 events of the mix (made first),
/// on this thread: what one event costs it.
fn p11_detector_alone(mix: Mix) -> f64 {
    use portcullis::config::detection::DetectionSettings;
    use portcullis::core::detect::Detector;
    let now = Millis::now();
    let events: Vec<Event> = (0..300_000).map(|i| sample_event(mix, i, now)).collect();
    let mut d = Detector::new(&DetectionSettings::default(), 64);
    let start = Instant::now();
    let mut found = 0;
    for (i, e) in events.iter().enumerate() {
        found += d.observe_event(i as i64 + 1, e, now).len();
    }
    std::hint::black_box(found);
    events.len() as f64 / start.elapsed().as_secs_f64()
}

fn p11_one(mix: Mix, secs: u64, detect: bool) -> P11Run {
    use portcullis::config::detection::DetectionSettings;
    use portcullis::core::detect::feed;
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Millis::now();
    let store = fresh_store(dir.path(), "p11.db");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let (tx, rx) = if detect {
        let (tx, rx) = portcullis::store::writer::feed(feed::HANDOFF_EVENTS);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (writer, thread) = EventWriter::start_with_feed(store.path(), 10_000, tx).expect("writer");
    let stats = Arc::new(feed::LiveStats::default());
    let (ftx, mut frx) = tokio::sync::mpsc::channel(1024);
    let findings = Arc::new(AtomicU64::new(0));
    let counter = findings.clone();
    let drain = std::thread::spawn(move || {
        while frx.blocking_recv().is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let detection = rx.map(|rx| {
        let config = feed::FeedConfig { settings: DetectionSettings::default(), ipv6_prefix: 64, rebuild: false };
        feed::start(Arc::new(Store::open(store.path()).expect("open")), config, rx, None, stats.clone(), ftx.clone()).expect("detection")
    });
    drop(ftx);
    let deadline = Instant::now() + Duration::from_secs(60);
    while detect && !stats.ready.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "P11: the detection thread did not get ready");
        std::thread::sleep(Duration::from_millis(1));
    }
    // How far the detector trails what is committed, sampled every 50 ms
    // (on both sides, so both pay the same for the samples).
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, stats, path) = (sampling.clone(), stats.clone(), store.path().to_path_buf());
        std::thread::spawn(move || {
            let s = Store::open(&path).expect("open");
            let mut worst = 0i64;
            while sampling.load(Ordering::Relaxed) {
                if let Ok(last) = s.last_event_id() {
                    worst = worst.max(last - stats.seen_upto.load(Ordering::Acquire));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            worst
        })
    };
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut n = 0u64;
    rt.block_on(async {
        while Instant::now() < end {
            for _ in 0..1000 {
                writer.record(sample_event(mix, n, now)).await;
                n += 1;
            }
        }
        assert!(writer.flush().await, "P11: the writer lost events");
    });
    let flushed = Instant::now();
    let last = store.last_event_id().expect("last id");
    assert!(last >= n as i64, "P11: {last} events in the table, {n} written");
    if detect {
        let deadline = Instant::now() + Duration::from_secs(600);
        while stats.seen_upto.load(Ordering::Acquire) < last {
            assert!(Instant::now() < deadline, "P11: the detector did not catch up within 10 minutes");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let catch_up_ms = flushed.elapsed().as_secs_f64() * 1000.0;
    sampling.store(false, Ordering::Relaxed);
    let max_lag = sampler.join().unwrap_or(0);
    let run = P11Run {
        rate: n as f64 / elapsed,
        committed_rate: n as f64 / (flushed - start).as_secs_f64(),
        n,
        catch_up_ms: if detect { catch_up_ms } else { 0.0 },
        max_lag: if detect { max_lag } else { 0 },
        seen: stats.events.load(Ordering::Relaxed),
        read_back: stats.read_from_store.load(Ordering::Relaxed),
        findings: 0,
        tracked: stats.tracked.load(Ordering::Relaxed),
        evicted: stats.evicted.load(Ordering::Relaxed),
    };
    if let Some(d) = detection {
        d.stop();
    }
    drop(writer);
    thread.join();
    let _ = drain.join();
    if detect {
        // Every event the rules read went through the detector: all of them
        // from the writer, or (read back from the table) all but the types
        // no rule reads, which the Flood mix has a third of.
        let relevant = match mix {
            Mix::Spread => n,
            Mix::Flood => n - n.div_ceil(3),
        };
        assert!(run.seen >= relevant, "P11 {mix:?}: the detector looked at {} of {n} events", run.seen);
    }
    P11Run { findings: findings.load(Ordering::Relaxed), ..run }
}

// ---------------------------------------------------------------- P4/P5

fn p4_window_query(total: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = fresh_store(dir.path(), "big.db");
    let now = Millis::now();
    let start = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    // Spread over 30 days; 5,000 users.
    for i in 0..total {
        let user = (i % 5000) as i64 + 1;
        let at = Millis(now.0 - ((total - i) as i64 * 30 * 86_400_000 / total as i64));
        let t = if i % 4 == 0 { EventType::LoginSuccess } else { EventType::LoginFailed };
        batch.push(Event::new(t, Severity::Low, "x", at).user(Some(user), Some("u")).ip(Some("10.0.0.1")));
        if batch.len() == 10_000 {
            store.insert_events(&batch).expect("fill");
            batch.clear();
        }
    }
    store.insert_events(&batch).expect("fill");
    let fill = start.elapsed().as_secs_f64();
    let mut q = Vec::new();
    for i in 0..10_000u64 {
        let user = (i * 7919 % 5000) as i64 + 1;
        let t = Instant::now();
        let n = store.failures_since(user, now.minus(Duration::from_secs(900))).expect("query");
        q.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(n);
    }
    q.sort_by(|a, b| a.total_cmp(b));
    let mut e = Vec::new();
    for i in 0..1000u64 {
        let user = (i * 7919 % 5000) as i64 + 1;
        let t = Instant::now();
        let rows = store.events(&EventFilter { user_id: Some(user), limit: 50, ..Default::default() }).expect("events");
        e.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(rows);
    }
    e.sort_by(|a, b| a.total_cmp(b));
    println!(
        "## P4/P5 queries at {total} events\n\n(filled in {fill:.0} s.) Failures of one user in the last 15 minutes, 10,000 queries: median **{:.3} ms**, p99 **{:.3} ms** (target p99 ≤ 0.3 ms). `security events U 50`, 1,000 queries: median {:.2} ms, p99 **{:.2} ms** (target ≤ 5 ms)\n",
        percentile(&q, 0.5),
        percentile(&q, 0.99),
        percentile(&e, 0.5),
        percentile(&e, 0.99)
    );
}

// ---------------------------------------------------------------- P6

async fn p6_idle_sessions(n: usize) {
    let key = PrivateKey::random(&mut rand::rng(), russh::keys::ssh_key::Algorithm::Ed25519).expect("key");
    let line = key.public_key().to_openssh().expect("openssh");
    let gate = Gate::start(1000, Some(&line));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = gate.rss_kib();
    let key = Arc::new(key);
    let mut sessions = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let mut h = client::connect(client_config(), gate.addr.as_str(), Client).await.expect("connect");
        let auth = h.authenticate_publickey("alice", PrivateKeyWithHashAlg::new(key.clone(), None)).await.expect("auth");
        assert!(auth.success(), "public key login failed");
        let ch = h.channel_open_session().await.expect("channel");
        ch.request_pty(true, "xterm", 80, 24, 0, 0, &[]).await.expect("pty");
        ch.request_shell(true).await.expect("shell");
        sessions.push((h, ch));
    }
    let opened = start.elapsed().as_secs_f64();
    // Let the welcome screens go out and the daemon settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = gate.rss_kib();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "## P6 idle authenticated sessions\n\n{n} sessions (public key, PTY, shell at the welcome screen), opened in {opened:.1} s. Daemon RSS {:.1} MiB before, **{:.1} MiB** after: **{per:.1} KiB per session** (target ≤ 100 MiB in all, ≤ 100 KiB each)\n",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    drop(sessions);
}

// ---------------------------------------------------------------- P9

/// Base32 (RFC 4648, no padding) back to bytes, for the secret the
/// enrollment page shows.
fn base32_decode(s: &str) -> Vec<u8> {
    portcullis::core::otp::base32_decode(s).expect("base32")
}

/// P9: the code check a login makes (`Core::check_login_code`) against a
/// real store in a temp folder: the sealed secret read and opened, the
/// HMAC with ±1 step, the step burnt in SQL, the throttle row written.
/// Each accepted check is at a new 30 s step (time is passed in), so every
/// one burns; then, in a second series, the same code twice: the second
/// is refused as a replay and counted as a failure.
async fn p9_totp_checks(n: usize) {
    use portcullis::core::accounts::Actor;
    use portcullis::core::mfa::{CodeVerdict, Method};
    use portcullis::core::{otp, secrets::Keyring, Core, EventSink};
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = portcullis::config::load::from_text("passwords: {\n  iterations: 1000\n}\n", "bench.hjson", dir.path()).expect("settings");
    let store = Arc::new(fresh_store(dir.path(), "p9.db"));
    let core = Core::new(store.clone(), settings, EventSink::Direct(store), Keyring::from_key(&rand::random()));
    let t0 = Millis(Millis::now().0.div_euclid(30_000) * 30_000);
    let actor = Actor::Cli("bench".into());
    let user = core.add_user("alice", Some("alice@example.org"), &portcullis::model::Secret::new(PASSWORD.into()), &[], &actor, t0).await.expect("user");
    core.start_otp_enrollment(&user, Method::Totp, &actor, t0).await.expect("enroll");
    let mail = core.due_mail(t0, 10).expect("mail");
    let link = mail.iter().flat_map(|m| m.body.text.lines()).find(|l| l.contains("/otp/enroll/")).expect("enrollment link").trim().to_owned();
    let token = link.rsplit('/').next().expect("token").to_owned();
    let view = core.otp_enrollment_view(&token, t0).expect("enrollment view");
    let secret = base32_decode(&view.secret_base32);
    let alg = view
        .otpauth_uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("algorithm="))
        .and_then(otp::Algorithm::parse)
        .expect("algorithm in the otpauth URI");
    let code_at = |t: Millis| otp::hotp(alg, &secret, otp::step_of(t.0.div_euclid(1000), 30), view.digits);
    core.otp_confirm(&token, &code_at(t0), t0).await.expect("confirm");
    let (mut accepted, mut replayed) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // The usual login: a good code, no failure before it.
    for i in 1..=n {
        let t = Millis(t0.0 + 30_000 * i as i64);
        let code = code_at(t);
        let start = Instant::now();
        let v = core.check_login_code(&user, &code, t).expect("check");
        accepted.push(start.elapsed().as_secs_f64() * 1e6);
        assert_eq!(v, CodeVerdict::Accepted { kind: "totp" }, "check {i}");
    }
    // A replay (counted as a failure), after a good code that resets the
    // failure count so the factor never closes.
    for i in n + 1..=2 * n {
        let t = Millis(t0.0 + 30_000 * i as i64);
        let code = code_at(t);
        assert_eq!(core.check_login_code(&user, &code, t).expect("check"), CodeVerdict::Accepted { kind: "totp" }, "check {i}");
        let start = Instant::now();
        let v = core.check_login_code(&user, &code, t).expect("check");
        replayed.push(start.elapsed().as_secs_f64() * 1e6);
        assert_eq!(v, CodeVerdict::Replay, "replay {i}");
    }
    accepted.sort_by(|a, b| a.total_cmp(b));
    replayed.sort_by(|a, b| a.total_cmp(b));
    println!(
        "## P9 TOTP checks with replay bookkeeping\n\n`Core::check_login_code` on a real store (WAL), {alg:?} {}-digit codes, ±1 step: {n} accepted checks in a row (each burns its step in SQL): median **{:.1} µs**, p99 **{:.1} µs**; {n} replays (the same code again right after it was accepted; refused, the failure recorded): median {:.1} µs, p99 {:.1} µs (target ≤ 50 µs)\n",
        view.digits,
        percentile(&accepted, 0.5),
        percentile(&accepted, 0.99),
        percentile(&replayed, 0.5),
        percentile(&replayed, 0.99)
    );
}

// ---------------------------------------------------------------- P10

/// The key exchange both servers are offered by the client: without a pin
/// OpenSSH 9.2 picks sntrup761x25519 with sshd (about 75 ms of client CPU)
/// and curve25519 with the gate, and the comparison measures the kex.
const P10_KEX: &str = "curve25519-sha256";

/// One `ssh host true`, connect to exit, in seconds.
fn ssh_once(port: u16, user: &str, key: &Path, expect_code: i32) -> f64 {
    let t = Instant::now();
    let st = Command::new("ssh")
        .args(["-q", "-p", &port.to_string(), "-i"])
        .arg(key)
        .args([
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "PreferredAuthentications=publickey", "-o", "LogLevel=ERROR",
            "-o", &format!("KexAlgorithms={P10_KEX}"),
        ])
        .arg(format!("{user}@127.0.0.1"))
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ssh");
    let elapsed = t.elapsed().as_secs_f64();
    assert_eq!(st.code(), Some(expect_code), "ssh to port {port} exited with {st:?}");
    elapsed
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn p10_pubkey_logins(runs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyfile = dir.path().join("id");
    let st = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&keyfile).status().expect("ssh-keygen");
    assert!(st.success());
    let public = std::fs::read_to_string(dir.path().join("id.pub")).expect("pub");
    let gate = Gate::start(1000, Some(public.trim()));
    let port: u16 = gate.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let sshd = start_sshd(dir.path(), &public);
    let me = whoami();
    // The gate answers `ssh host true` after login with "interactive only",
    // exit status 1: the full login and session setup happen. The two
    // servers take turns (one warm-up each, not counted), so a change in
    // the machine's load hits both alike.
    let gate_once = || ssh_once(port, "alice", &keyfile, 1);
    let sshd_once = |p: u16| ssh_once(p, &me, &keyfile, 0);
    gate_once();
    if let Some((p, _)) = &sshd {
        sshd_once(*p);
    }
    let (mut ours, mut theirs) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..runs {
        // Alternate who goes first in each pair, too.
        if i % 2 == 1 {
            if let Some((p, _)) = &sshd {
                theirs.push(sshd_once(*p));
            }
        }
        ours.push(gate_once());
        if i % 2 == 0 {
            if let Some((p, _)) = &sshd {
                theirs.push(sshd_once(*p));
            }
        }
    }
    ours.sort_by(|a, b| a.total_cmp(b));
    theirs.sort_by(|a, b| a.total_cmp(b));
    let o = percentile(&ours, 0.5);
    let slow = ours.iter().filter(|t| **t >= 0.035).count();
    print!(
        "## P10 sequential public-key logins (OpenSSH client, `ssh host true`, `KexAlgorithms={P10_KEX}`)\n\n{runs} alternating runs each. Portcullis: median **{o:.4} s**, p99 {:.4} s, min {:.4} s ({slow} of {runs} at 35 ms or more)",
        percentile(&ours, 0.99),
        percentile(&ours, 0.0)
    );
    if sshd.is_some() {
        let s = percentile(&theirs, 0.5);
        println!("; OpenSSH sshd: median {s:.3} s, p99 {:.3} s; **{:.1}× faster** (targets ≤ 0.10 s, ≥ 10×)\n", percentile(&theirs, 0.99), s / o);
    } else {
        println!("; OpenSSH sshd not available (install openssh-server)\n");
    }
    if let Some((_, mut child)) = sshd {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn whoami() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
        Command::new("id").arg("-un").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_else(|_| "root".into())
    })
}

fn start_sshd(dir: &Path, public: &str) -> Option<(u16, Child)> {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() {
        return None;
    }
    let _ = std::fs::create_dir_all("/run/sshd");
    let host = dir.join("sshd_host_key");
    Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&host).status().ok()?;
    std::fs::write(dir.join("authorized_keys"), public).ok()?;
    let port = free_port();
    let conf = dir.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\nUsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
            host.display(),
            dir.join("sshd.pid").display(),
            dir.join("authorized_keys").display()
        ),
    )
    .ok()?;
    let child = Command::new(sshd).arg("-D").arg("-f").arg(&conf).arg("-E").arg(dir.join("sshd.log")).spawn().ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((port, child));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

// ---------------------------------------------------------------- P12

/// A small deterministic generator (xorshift64*), so every run checks the
/// same blocks.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `n` blocks as a public blocklist and a busy rule set would hold them:
/// 70% IPv4 addresses, 15% IPv4 networks (/24, /20, /16, /28), 10% IPv6
/// /64s, 5% wider IPv6 networks (/48, /32). Returns them as text.
fn p12_mix(n: usize, rng: &mut Xorshift) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    while out.len() < n {
        let r = rng.next();
        // Public-looking space: first octet 11..=223, never loopback.
        let v4 = std::net::Ipv4Addr::from((((r >> 32) as u32) % (213 << 24)) + (11 << 24));
        let v6 = std::net::Ipv6Addr::from((0x2001u128 << 112) | ((r as u128) << 48) | (rng.next() as u128 & 0xffff_ffff_ffff));
        let pick = (rng.next() % 100) as u8;
        let text = match pick {
            0..=69 => v4.to_string(),
            70..=79 => portcullis::model::IpNetwork::containing(v4.into(), 24).to_string(),
            80..=81 => portcullis::model::IpNetwork::containing(v4.into(), 20).to_string(),
            82..=83 => portcullis::model::IpNetwork::containing(v4.into(), 16).to_string(),
            84 => portcullis::model::IpNetwork::containing(v4.into(), 28).to_string(),
            85..=94 => portcullis::model::IpNetwork::containing(v6.into(), 64).to_string(),
            95..=98 => portcullis::model::IpNetwork::containing(v6.into(), 48).to_string(),
            _ => portcullis::model::IpNetwork::containing(v6.into(), 32).to_string(),
        };
        out.insert(text);
    }
    out.into_iter().collect()
}

/// The accept-time check against `n` blocks (hits and misses, each check
/// timed on its own), the load of the blocks from the store as the daemon
/// does it at start, and the daemon's start-up (spawn to ready line) with
/// and without them.
fn p12_blocks(n: usize, checks: usize) {
    use portcullis::core::{secrets::Keyring, Core, EventSink};
    use portcullis::model::IpNetwork;
    use portcullis::store::blocks::BlockRow;
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let entries = p12_mix(n, &mut rng);
    let nets: Vec<IpNetwork> = entries.iter().map(|e| IpNetwork::parse(e).expect("generated network")).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "data_dir: data\nssh: {\n  listen: \"127.0.0.1:0\"\n}\npasswords: {\n  iterations: 1000\n}\nweb: {\n  listen: \"127.0.0.1:0\"\n}\n";
    std::fs::write(Gate::config_path(dir.path()), config).expect("config");
    Gate::cli(dir.path(), &["migrate", "run"], None);
    let db = dir.path().join("data/portcullis.db");
    let store = Arc::new(Store::open(&db).expect("store"));
    let now = Millis::now();
    let rows: Vec<BlockRow> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| BlockRow {
            network: e.clone(),
            reason: "bench".into(),
            source: "import".into(),
            created_at: now,
            // A third expire in a day, the rest stay until lifted.
            expires_at: (i % 3 == 0).then(|| now.plus(Duration::from_secs(86_400))),
            incident_id: None,
            created_by: "bench".into(),
            repeat: 0,
        })
        .collect();
    store.import_blocks(&rows, now).expect("import");
    let settings = portcullis::config::load::from_text(config, "bench.hjson", dir.path()).expect("settings");
    let core = Core::new(store.clone(), settings, EventSink::Direct(store.clone()), Keyring::from_key(&[5; 32]));
    let mut loads = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(core.load_blocks(now).expect("load"), n);
        loads.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    loads.sort_by(|a, b| a.total_cmp(b));
    let (v4_lengths, v6_lengths) = {
        let mut v4: Vec<u8> = nets.iter().filter(|n| n.addr().is_ipv4()).map(|n| n.bits()).collect();
        let mut v6: Vec<u8> = nets.iter().filter(|n| n.addr().is_ipv6()).map(|n| n.bits()).collect();
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        (v4, v6)
    };

    // Hits: an address inside a random block (a host within its network).
    let hits: Vec<std::net::IpAddr> = (0..checks)
        .map(|_| {
            let net = nets[(rng.next() % nets.len() as u64) as usize];
            match net.addr() {
                std::net::IpAddr::V4(a) => {
                    let host = (rng.next() as u32) & !portcullis::model::mask_v4(net.bits());
                    std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) | host))
                }
                std::net::IpAddr::V6(a) => {
                    let host = ((rng.next() as u128) << 64 | rng.next() as u128) & !portcullis::model::mask_v6(net.bits());
                    std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) | host))
                }
            }
        })
        .collect();
    // Misses: random addresses of both families not blocked (checked first).
    let mut misses = Vec::with_capacity(checks);
    while misses.len() < checks {
        let r = rng.next();
        let ip: std::net::IpAddr = if r % 4 == 0 {
            std::net::Ipv6Addr::from((0x2001u128 << 112) | ((rng.next() as u128) << 48) | (r as u128 & 0xffff_ffff_ffff)).into()
        } else {
            std::net::Ipv4Addr::from(((r >> 32) as u32 % (213 << 24)) + (11 << 24)).into()
        };
        if !core.is_blocked(ip, now) {
            misses.push(ip);
        }
    }
    let time = |ips: &[std::net::IpAddr], want: bool| -> (Vec<f64>, f64) {
        let mut each = Vec::with_capacity(ips.len());
        let all = Instant::now();
        for ip in ips {
            let t = Instant::now();
            let b = core.is_blocked(*ip, now);
            each.push(t.elapsed().as_secs_f64() * 1e9);
            assert_eq!(b, want, "{ip}");
        }
        let per = all.elapsed().as_secs_f64() * 1e9 / ips.len() as f64;
        each.sort_by(|a, b| a.total_cmp(b));
        (each, per)
    };
    let (hit, hit_mean) = time(&hits, true);
    let (miss, miss_mean) = time(&misses, false);
    let v4_miss: Vec<std::net::IpAddr> = misses.iter().copied().filter(|i| i.is_ipv4()).collect();
    let (v4m, _) = time(&v4_miss, false);
    drop(core);
    drop(store);

    // The daemon's start-up, spawn to ready line, with the blocks and without.
    let startup = |dir: &Path| -> f64 { p7_ready_times(dir, 1)[0] };
    let empty = tempfile::tempdir().expect("tempdir");
    std::fs::write(Gate::config_path(empty.path()), config).expect("config");
    Gate::cli(empty.path(), &["migrate", "run"], None);
    // A first start each (host key and certificate made once), then measured.
    startup(dir.path());
    startup(empty.path());
    let mut with: Vec<f64> = (0..5).map(|_| startup(dir.path())).collect();
    let mut without: Vec<f64> = (0..5).map(|_| startup(empty.path())).collect();
    with.sort_by(|a, b| a.total_cmp(b));
    without.sort_by(|a, b| a.total_cmp(b));
    println!(
        "## P12 address blocks at accept\n\n{n} blocks ({} IPv4 addresses, {} IPv4 networks, {} IPv6 /64s, {} wider IPv6 networks; prefix lengths present: IPv4 {:?}, IPv6 {:?}; a third expiring). \
`Core::is_blocked`, one thread, each check timed on its own ({checks} of each kind; the clock read adds ~20-40 ns): \
hits median **{:.0} ns**, p99 **{:.0} ns** (mean {:.0} ns); misses (¾ IPv4, ¼ IPv6) median **{:.0} ns**, p99 **{:.0} ns** (mean {:.0} ns); IPv4 misses alone (every IPv4 length probed) p99 {:.0} ns (target p99 ≤ 2 µs).\n\n\
Loading them from the store (`Core::load_blocks`: one query, parse, build): median **{:.0} ms** of 5 (min {:.0}, max {:.0}). \
Daemon start-up, spawn to ready line, median of 5: **{:.0} ms** with the {n} blocks, {:.0} ms with none (target ≤ 300 ms).\n",
        nets.iter().filter(|x| x.addr().is_ipv4() && x.is_host()).count(),
        nets.iter().filter(|x| x.addr().is_ipv4() && !x.is_host()).count(),
        nets.iter().filter(|x| x.addr().is_ipv6() && x.bits() == 64).count(),
        nets.iter().filter(|x| x.addr().is_ipv6() && x.bits() < 64).count(),
        v4_lengths,
        v6_lengths,
        percentile(&hit, 0.5),
        percentile(&hit, 0.99),
        hit_mean,
        percentile(&miss, 0.5),
        percentile(&miss, 0.99),
        miss_mean,
        percentile(&v4m, 0.99),
        percentile(&loads, 0.5),
        loads[0],
        loads[loads.len() - 1],
        percentile(&with, 0.5),
        percentile(&without, 0.5),
    );
}

// ---------------------------------------------------------------- P13

/// A line of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The daemon's `/metrics` text.
fn metrics_of(web: &str) -> String {
    let out = Command::new("curl").args(["-sk", "--max-time", "10"]).arg(format!("https://{web}/metrics")).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One unlabelled value of a `/metrics` text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' '))).and_then(|v| v.trim().parse().ok())
}

/// One password attempt over SSH from the loopback address `from`: true
/// when the gate answered it (accepted or not), false when it dropped the
/// connection first.
async fn password_from(from: &str, addr: std::net::SocketAddr, user: &str, password: &str) -> bool {
    let attempt = async {
        let sock = tokio::net::TcpSocket::new_v4().ok()?;
        sock.bind(format!("{from}:0").parse().ok()?).ok()?;
        let stream = sock.connect(addr).await.ok()?;
        let mut h = client::connect_stream(client_config(), stream, Client).await.ok()?;
        let r = h.authenticate_password(user, password).await.ok();
        let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
        r.map(|_| ())
    };
    matches!(tokio::time::timeout(Duration::from_secs(30), attempt).await, Ok(Some(())))
}

/// Whether the gate sends its SSH banner to a TCP connection from `from`
/// (a blocked address is dropped right after the accept, before it).
async fn banner_from(from: &str, addr: std::net::SocketAddr) -> bool {
    use tokio::io::AsyncReadExt;
    let read = async {
        let sock = tokio::net::TcpSocket::new_v4().ok()?;
        sock.bind(format!("{from}:0").parse().ok()?).ok()?;
        let mut stream = sock.connect(addr).await.ok()?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    matches!(tokio::time::timeout(Duration::from_secs(10), read).await, Ok(Some(b)) if &b == b"SSH-")
}

/// The botnet's event `i` of P13: one failed password from address `i`
/// (1,000,000 addresses, four in each of 250,000 /24 networks from
/// 11.0.0.0 on) against account `i % accounts.len()`.
fn p13_botnet_event(i: u64, accounts: &[(i64, String)], at: Millis) -> Event {
    let ip = std::net::Ipv4Addr::from((11u32 << 24) + (i / 4) as u32 * 256 + 1 + (i % 4) as u32 * 60);
    let (id, name) = &accounts[(i % accounts.len() as u64) as usize];
    Event::new(EventType::LoginFailed, Severity::Low, "password login failed: bad password", at)
        .user(Some(*id), Some(name))
        .ip(Some(&ip.to_string()))
        .detail("reason", "bad_password")
        .detail("method", "password")
        .detail("client_version", "SSH-2.0-OpenSSH_9.2p1")
}

/// P13: the detection state of the real daemon under a distributed attack:
/// `addresses` distinct addresses, one failed password each, against
/// `account_count` accounts, over a day of event time. The events go
/// straight into the daemon's event table (as another process writes
/// there; a million real SSH connections would take this machine hours),
/// and the daemon's detection thread reads them from the table and reports
/// its findings to the incident engine and the built-in playbooks. RSS of
/// the daemon before, during and after. Then: did the rules still fire?
/// Inside the million, a slow address and a network of one-shot addresses;
/// after it, over real SSH: a brute force on one account, a dictionary
/// username, one password sprayed over five accounts.
async fn p13_botnet(addresses: u64, account_count: usize) {
    use portcullis::core::incidents::IncidentFilter;
    use portcullis::model::IncidentType;
    let gate = Gate::start_with("ssh: {\n  listen: \"127.0.0.1:0\"\n}\npasswords: {\n  iterations: 1000\n}\n", None);
    let pid = gate.child.id();
    let target: std::net::SocketAddr = gate.addr.parse().expect("address");
    let store = Store::open(&gate.dir.path().join("data/portcullis.db")).expect("store");
    let hash = portcullis::core::password::hash(PASSWORD, 1000);
    let t = Instant::now();
    let mut accounts = Vec::with_capacity(account_count);
    let new_account = |name: &str| {
        let u = store.create_user(&portcullis::store::users::NewUser { username: name, email: None, password_hash: &hash, groups: &[], now: Millis::now() }).expect("create user");
        (u.id, u.username)
    };
    for i in 0..account_count {
        accounts.push(new_account(&format!("acct{i:05}")));
    }
    let (victim_id, _) = new_account("victim");
    let sprayed: Vec<String> = (1..=5).map(|i| new_account(&format!("spray{i}")).1).collect();
    eprintln!("P13: {} accounts in {:.1} s", accounts.len() + 6, t.elapsed().as_secs_f64());
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&metrics_of(&gate.web), "portcullis_detection_ready") != Some(1) {
        assert!(Instant::now() < deadline, "P13: detection never got ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let events_before = metric(&metrics_of(&gate.web), "portcullis_detection_events_total").unwrap_or(0);
    let (rss_before, hwm_before) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));

    // RSS every 500 ms while the attack runs.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut series = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                series.push(status_kib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(500));
            }
            series
        })
    };

    // The million over the last day of event time (a day-long campaign,
    // 11.6 attempts/s: what a gate whose KDF takes ~30 logins/s can
    // actually be sent), ending a minute ago. Inside it: one address that
    // fails 40 times, once every 25,000 botnet events of the million
    // (about 36 minutes: the slow tier, 30 in 24 h), and one /24 whose 200
    // addresses fail once each, one every 5,000 (the network's slow tier).
    let slow_address = "198.51.100.7";
    let (a_step, b_step) = (addresses / 40, addresses / 200);
    let now = Millis::now();
    let span = 86_400_000i64;
    let t0 = now.0 - 60_000 - span;
    let load_start = load_average();
    let attack = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    let mut extra = 0u64;
    let fail = |ip: &str, account: &(i64, String), at: Millis| {
        Event::new(EventType::LoginFailed, Severity::Low, "password login failed: bad password", at)
            .user(Some(account.0), Some(&account.1))
            .ip(Some(ip))
            .detail("reason", "bad_password")
            .detail("method", "password")
    };
    for i in 0..addresses {
        let at = Millis(t0 + (i as i64) * span / addresses as i64);
        batch.push(p13_botnet_event(i, &accounts, at));
        if i % a_step == a_step / 2 && i / a_step < 40 {
            batch.push(fail(slow_address, &accounts[(i / a_step) as usize % accounts.len()], at));
            extra += 1;
        }
        if i % b_step == b_step / 2 && i / b_step < 200 {
            batch.push(fail(&format!("192.0.2.{}", 1 + i / b_step), &accounts[(i / b_step) as usize % accounts.len()], at));
            extra += 1;
        }
        if batch.len() >= 10_000 {
            store.insert_events(&batch).expect("insert");
            batch.clear();
        }
    }
    store.insert_events(&batch).expect("insert");
    let inserted = attack.elapsed().as_secs_f64();
    let last = store.last_event_id().expect("last id");
    let inserted_events = addresses + extra;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut metrics;
    loop {
        metrics = metrics_of(&gate.web);
        // An older daemon (PORTCULLIS_BENCH_BIN) may not say how far it
        // got: then every inserted event looked at will do.
        let through = match metric(&metrics, "portcullis_detection_seen_upto") {
            Some(upto) => upto >= last as u64,
            None => metric(&metrics, "portcullis_detection_events_total").unwrap_or(0) >= events_before + inserted_events,
        };
        if through {
            break;
        }
        assert!(Instant::now() < deadline, "P13: the detector did not get through the million within 30 minutes");
        std::thread::sleep(Duration::from_millis(500));
    }
    let detected = attack.elapsed().as_secs_f64();
    let rss_attack = status_kib(pid, "VmRSS:");
    let tracked = metric(&metrics, "portcullis_detection_tracked_keys").unwrap_or(0);
    let evicted = metric(&metrics, "portcullis_detection_evicted_total").unwrap_or(0);
    eprintln!("P13: inserted in {inserted:.1} s, detector through them at {detected:.1} s; RSS {} MiB", rss_attack / 1024);

    // After the million, over real SSH from loopback addresses.
    for k in 0..6 {
        assert!(password_from("127.0.0.50", target, "victim", &format!("Wrong-Battery-{k}")).await, "P13: the brute force's attempt {k} was not answered");
    }
    assert!(password_from("127.0.0.51", target, "oracle", "oracle").await, "P13: the dictionary attempt was not answered");
    for name in &sprayed {
        assert!(password_from("127.0.0.52", target, name, "Spring-2026!").await, "P13: the spray attempt on {name} was not answered");
    }

    // Wait for their incidents (the incident engine may still be working
    // through the million's findings).
    // (what, incident type, subject key, title prefix)
    let victim_key = format!("account:{victim_id}");
    let slow_key = format!("address:{slow_address}");
    let slow_what = format!("inside: slow brute force from one address ({slow_address}, 40 failures, one every {a_step} events)");
    let net_what = format!("inside: slow brute force from one network (192.0.2.0/24, 200 addresses failing once each, one every {b_step} events)");
    let wants: Vec<(&str, IncidentType, &str, &str)> = vec![
        ("after: brute force on one account (victim, 6 wrong passwords from 127.0.0.50)", IncidentType::BruteForceAccount, victim_key.as_str(), ""),
        ("after: dictionary username (oracle, from 127.0.0.51)", IncidentType::BruteForceIp, "address:127.0.0.51", "dictionary username"),
        ("after: password spraying (one password against 5 accounts, from 127.0.0.52)", IncidentType::PasswordSpraying, "address:127.0.0.52", ""),
        (slow_what.as_str(), IncidentType::BruteForceIp, slow_key.as_str(), "slow brute force"),
        (net_what.as_str(), IncidentType::BruteForceIp, "network:192.0.2.0/24", "slow brute force"),
        ("the campaign itself: distributed credential stuffing", IncidentType::CredentialStuffing, "gate", "distributed credential stuffing"),
    ];
    let probes = Instant::now();
    let deadline = probes + Duration::from_secs(900);
    let mut found: Vec<Option<f64>> = vec![None; wants.len()];
    let mut incidents;
    loop {
        incidents = store.incidents(IncidentFilter::All, 10_000_000).expect("incidents");
        for (k, (_, t, key, title)) in wants.iter().enumerate() {
            let want = (*t, *key, *title);
            if found[k].is_none() && incidents.iter().any(|i| i.incident_type == want.0 && i.subject.key() == want.1 && i.title.starts_with(want.2)) {
                found[k] = Some(probes.elapsed().as_secs_f64());
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let dictionary_dropped = !banner_from("127.0.0.51", target).await;
    let other_gets_banner = banner_from("127.0.0.53", target).await;
    sampling.store(false, Ordering::Relaxed);
    let series = sampler.join().unwrap_or_default();
    let (rss_after, hwm_after) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    let rss_max = series.iter().copied().max().unwrap_or(0).max(rss_after);
    let metrics = metrics_of(&gate.web);
    let findings: Vec<&str> = metrics.lines().filter(|l| l.starts_with("portcullis_detection_findings_total{")).collect();
    let mut by_type = std::collections::BTreeMap::new();
    for i in &incidents {
        *by_type.entry(i.incident_type.as_str()).or_insert(0u64) += 1;
    }
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "## P13 detection state under a distributed attack\n\n\
{addresses} distinct addresses (4 in each of {} /24 networks), one failed password each, against {} accounts, spread over the last 24 hours of event time (11.6 attempts/s: a day-long campaign, as fast as a gate whose KDF takes ~30 logins/s can be sent), written straight into the running daemon's event table in batches of 10,000 (as another process writes there: a million real SSH connections would take this machine hours) and read by the daemon's detection thread, which hands its findings to the incident engine and the built-in playbooks. Default detection settings (`max_tracked` 50,000 per map). Load average {load_start} at the start, {} at the end.\n\n\
| | |\n|---|---|\n\
| daemon RSS before (idle, {} accounts) | {:.1} MiB (peak so far {:.1} MiB) |\n\
| daemon RSS when the detector was through the million | **{:.1} MiB** |\n\
| daemon RSS at the end (after the incidents) | {:.1} MiB; highest sampled {:.1} MiB; **VmHWM {:.1} MiB** (target ≤ 300 MiB) |\n\
| the million in the table / through the detector | {inserted:.1} s / {detected:.1} s after the start ({:.0} events/s end to end) |\n\
| detector keys held / evicted | {tracked} / {evicted} (the growth over the idle daemon is {:.0} bytes per key held) |\n\
| incidents by type | {} |\n\n\
Findings by rule: {}.\n\n\
Did the rules still fire, inside the million and after it?\n\n| probe | incident |\n|---|---|\n{}\n\
The dictionary address 127.0.0.51 afterwards: {}; another loopback address (127.0.0.53): {}.\n",
        addresses / 4,
        accounts.len(),
        load_average(),
        accounts.len() + 6,
        mib(rss_before),
        mib(hwm_before),
        mib(rss_attack),
        mib(rss_after),
        mib(rss_max),
        mib(hwm_after),
        addresses as f64 / detected,
        (rss_attack.saturating_sub(rss_before) * 1024) as f64 / tracked.max(1) as f64,
        by_type.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", "),
        findings.iter().map(|l| l.trim_start_matches("portcullis_detection_findings_total")).collect::<Vec<_>>().join(", "),
        wants
            .iter()
            .zip(&found)
            .map(|((what, ..), f)| format!("| {what} | {} |\n", f.map_or("**none**".to_owned(), |s| format!("yes (there {s:.0} s after the SSH probes began)"))))
            .collect::<String>(),
        if dictionary_dropped { "dropped before the SSH banner (blocked)" } else { "**still gets the banner**" },
        if other_gets_banner { "gets the banner" } else { "**dropped**" },
    );
    assert!(found.iter().all(Option::is_some), "P13: a rule did not fire: {found:?}");
    assert!(dictionary_dropped && other_gets_banner, "P13: the dictionary address is not blocked, or another address is");
}
