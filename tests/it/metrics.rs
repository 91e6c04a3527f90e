//! Metrics: Debian's Prometheus scrapes the real gate over HTTPS (with the
//! bearer token, loopback access turned off) after real SSH logins, good
//! and bad; through Prometheus' HTTP API every metric that contrib's
//! Grafana dashboard and alert rules use exists and the login counters
//! match the logins made; `promtool check rules` passes on the rules; and
//! `security metrics` rolls today's events up to the same counts.

use crate::harness::{curl, free_port, poll, text, Gate, Ssh, ALICE_PW, DEFAULT_CONFIG};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "scrape-token-0123456789abcdef";

fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib").join(rel)
}

const DASHBOARD: &str = "grafana/portcullis-dashboard.json";
const RULES: &str = "prometheus/portcullis-alerts.yml";

/// Every `portcullis_*` series name in a file (PromQL in the rules and
/// the dashboard's targets).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("portcullis_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// A throwaway Prometheus (its own config, storage and port on loopback),
/// killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(web_port: u16) -> Prometheus {
        let dir = tempfile::Builder::new().prefix("portcullis-prometheus-").tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: portcullis\n    scheme: https\n    metrics_path: /metrics\n    tls_config:\n      insecure_skip_verify: true\n    authorization:\n      type: Bearer\n      credentials: {TOKEN}\n    static_configs:\n      - targets: [\"127.0.0.1:{web_port}\"]\n",
                rules = contrib(RULES).display()
            ),
        )
        .expect("prometheus.yml");
        let log = dir.path().join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run Debian's `prometheus` ({e}): scripts/test installs it (apt package prometheus); this test does not skip"));
        Prometheus { child, port, log, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/api/v1/query`: the result vector (None if Prometheus is not answering yet).
    fn query(&self, q: &str) -> Option<Vec<Value>> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let arg = format!("query={q}");
        let r = curl(&url, &["--get", "--data-urlencode", &arg]);
        if r.status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&r.body).ok()?;
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().cloned()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no value in {sample}"))
}

/// (method, result) → count, from Prometheus' answer.
fn login_counters(samples: &[Value]) -> BTreeMap<(String, String), u64> {
    samples
        .iter()
        .map(|s| ((s["metric"]["method"].as_str().unwrap_or("?").to_owned(), s["metric"]["result"].as_str().unwrap_or("?").to_owned()), value(s) as u64))
        .collect()
}

/// Fails loudly (never skips) when Debian's `prometheus` package is missing.
fn require(tool: &str) {
    match Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => {}
        other => panic!("`{tool} --version` failed ({other:?}): install Debian's `prometheus` package (scripts/test does); this test does not skip"),
    }
}

#[test]
fn prometheus_scrapes_the_gate_and_contrib_uses_only_real_metrics() {
    require("prometheus");
    require("promtool");
    // promtool (from the same package) accepts the shipped rules.
    let out = crate::harness::run(
        {
            let mut c = Command::new("promtool");
            c.args(["check", "rules"]).arg(contrib(RULES));
            c
        },
        None,
    );
    assert!(out.status.success(), "promtool check rules: {}{}", text(&out.stdout), text(&out.stderr));
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(contrib(DASHBOARD)).expect("dashboard")).expect("the dashboard is JSON");
    let mut used = BTreeSet::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            used.extend(metric_names(t["expr"].as_str().expect("expr")));
        }
    }
    let dashboard_count = used.len();
    used.extend(metric_names(&std::fs::read_to_string(contrib(RULES)).expect("rules")));
    assert!(dashboard_count >= 10 && used.len() >= 12, "{used:?}");
    assert_eq!(metric_names("sum(rate(portcullis_a_total[5m])) / portcullis_b2{x=\"portcullis\"}"), BTreeSet::from(["portcullis_a_total".to_owned(), "portcullis_b2".to_owned()]));
    for name in ["portcullis_login_attempts_total", "portcullis_open_incidents", "portcullis_mail_queue", "portcullis_event_writer_lag_seconds_bucket", "portcullis_kdf_queue_depth"] {
        assert!(used.contains(name), "{name} is not used by contrib/: {used:?}");
    }

    let config = DEFAULT_CONFIG.replace("web: {\n", &format!("web: {{\n  metrics_from_loopback: false\n  metrics_token: {TOKEN}\n"));
    let g = Gate::start_with(&config);
    g.add_user("alice", ALICE_PW);
    let (key, public) = g.keygen("alice_key");
    g.cli_ok(&["user", "key", "add", "alice", &public]);
    // Real logins: two good by keyboard-interactive, one by key, one by
    // the password method; three bad passwords and one unknown user.
    for _ in 0..2 {
        let run = g.ssh(&Ssh::kbd("alice", ALICE_PW));
        assert!(run.authenticated_exec(), "{run:#?}\n{}", g.daemon_log());
    }
    assert!(g.ssh(&Ssh::kbd("alice", "").key(&key)).authenticated_exec());
    assert!(g.ssh(&Ssh::kbd("alice", ALICE_PW).method("password")).authenticated_exec());
    assert_eq!(g.ssh(&Ssh::kbd("alice", "Wrong-Horse-Battery-0").prompts(3)).code, Some(255));
    assert_eq!(g.ssh(&Ssh::kbd("mallory", ALICE_PW)).code, Some(255));
    let failed = g.wait_events(None, "login_failed", |ev| ev.len() >= 4);
    assert_eq!(failed.len(), 4, "{failed:#?}");
    let succeeded = g.events_of(None, "login_success");
    assert_eq!(succeeded.len(), 4, "{succeeded:#?}");
    let want: BTreeMap<(String, String), u64> = [
        (("keyboard-interactive", "success"), 2),
        (("publickey", "success"), 1),
        (("password", "success"), 1),
        (("keyboard-interactive", "failure"), 4),
    ]
    .into_iter()
    .map(|((m, r), n)| ((m.to_owned(), r.to_owned()), n))
    .collect();
    // The event log says the same as what was made.
    let mut from_events: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (list, result) in [(&succeeded, "success"), (&failed, "failure")] {
        for e in list.iter() {
            *from_events.entry((e["details"]["method"].as_str().unwrap_or("?").to_owned(), result.to_owned())).or_default() += 1;
        }
    }
    assert_eq!(from_events, want);
    // Without the token the gate refuses even loopback.
    assert_eq!(curl(&g.web_url("/metrics"), &["-k"]).status, 401);

    let prom = Prometheus::start(g.web_port);
    // Prometheus has scraped once the counters it holds are the logins made.
    let scraped = poll(Duration::from_secs(120), "Prometheus to scrape the gate", || {
        let up = prom.query("up{job=\"portcullis\"}")?;
        if up.first().map(value) != Some(1.0) {
            return None;
        }
        let samples = prom.query("portcullis_login_attempts_total")?;
        let got = login_counters(&samples);
        (got == want).then_some(got)
    });
    assert_eq!(scraped, want, "{}", prom.log());
    // Every metric of the dashboard and the rules exists in Prometheus.
    let missing: Vec<&String> = used.iter().filter(|name| prom.query(&format!("{{__name__=\"{name}\"}}")).is_none_or(|r| r.is_empty())).collect();
    assert!(missing.is_empty(), "metrics used by contrib/ but not scraped: {missing:?}\n{}", prom.log());
    // Values that follow from what was done.
    let one = |q: &str| prom.query(q).and_then(|r| r.first().map(value)).unwrap_or_else(|| panic!("{q}: no answer"));
    assert_eq!(one("sum(portcullis_login_failures_total{reason=\"bad_password\"})"), 3.0);
    assert_eq!(one("sum(portcullis_login_failures_total{reason=\"unknown_user\"})"), 1.0);
    assert!(one("portcullis_kdf_duration_seconds_count") >= 7.0, "every password was hashed");
    assert_eq!(one("sum(portcullis_open_incidents)"), 0.0);
    assert_eq!(one("portcullis_blocked_addresses"), 0.0);
    // No series carries a username or an address as a label value, nor
    // has an address label.
    let all = prom.query("{job=\"portcullis\",__name__=~\"portcullis_.+\"}").expect("series");
    assert!(!all.is_empty(), "{}", prom.log());
    for s in &all {
        assert!(s["metric"].get("address").is_none() && s["metric"].get("ip").is_none(), "{}", s["metric"]);
        let labels = s["metric"].to_string();
        assert!(!labels.contains("alice") && !labels.contains("mallory") && !labels.contains("127.0.0.1\""), "{labels}");
    }
    // The rules loaded in Prometheus itself.
    let rules = curl(&format!("http://127.0.0.1:{}/api/v1/rules", prom.port), &[]);
    assert!(rules.body.contains("PortcullisMailQueueStuck"), "{}", rules.body);

    // Today's rollup counts the same logins.
    let out = g.cli(&["security", "metrics", "--days", "2", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let days: Value = serde_json::from_slice(&out.stdout).expect("json");
    let today = &days.as_array().expect("array")[1];
    assert_eq!((today["logins"].as_i64(), today["failures"].as_i64(), today["attacking_addresses"].as_i64()), (Some(4), Some(4), Some(1)), "{today}");
    assert_eq!((today["users"].as_i64(), today["users_mfa"].as_i64(), today["is_final"].as_bool()), (Some(1), Some(0), Some(false)), "{today}");
    let table = text(&g.cli(&["security", "metrics", "--days", "2"]).stdout);
    assert!(table.lines().next().is_some_and(|l| l.starts_with("DAY")), "{table}");
    assert!(table.contains("logins") && table.contains("|") && table.contains('█'), "a chart under the table:\n{table}");
}
