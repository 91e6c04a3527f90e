//! Playbooks and webhooks against the real daemon: a signed delivery
//! reaches a receiver the test runs on loopback, also after the receiver
//! was down for a while; `config check` reports playbook problems with
//! their file and position.

use crate::harness::{self, free_port, poll, text, Gate, BIN, DEFAULT_CONFIG};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec-test-0123456789abcdef";

/// One request as the receiver got it.
#[derive(Debug)]
struct Received {
    request_line: String,
    /// Lowercased names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {name} header in {self:#?}"))
    }
}

/// A small HTTP/1.1 receiver on `127.0.0.1:port` (over TLS with `tls`):
/// answers each POST with 200 and sends what it got; stops accepting
/// after `within`.
fn start_receiver(port: u16, within: Duration, tls: Option<Arc<rustls::ServerConfig>>) -> mpsc::Receiver<Received> {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the receiver's port");
    listener.set_nonblocking(true).expect("nonblocking");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let until = Instant::now() + within;
        while Instant::now() < until {
            let s = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => panic!("accept: {e}"),
            };
            s.set_nonblocking(false).expect("blocking");
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let got = match &tls {
                Some(config) => {
                    let conn = rustls::ServerConnection::new(config.clone()).expect("tls");
                    // A client that refused the certificate ends the
                    // handshake: nothing was received.
                    match serve_one(rustls::StreamOwned::new(conn, s)) {
                        Ok(r) => r,
                        Err(_) => continue,
                    }
                }
                None => serve_one(s).expect("reading the request"),
            };
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads one request (headers and Content-Length body), answers 200.
fn serve_one<S: Read + Write>(mut s: S) -> std::io::Result<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk)?;
        assert!(n > 0, "the gate closed before the end of its headers: {:?}", text(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = text(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let length: usize = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).expect("a content-length");
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = s.read(&mut chunk)?;
        assert!(n > 0, "the gate closed in the middle of its body");
        body.extend_from_slice(&chunk[..n]);
    }
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    s.flush()?;
    Ok(Received { request_line, headers, body: text(&body) })
}

/// HMAC-SHA256 by openssl (an implementation independent of the gate's).
fn openssl_hmac(key: &str, message: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["dgst", "-sha256", "-hmac", key]);
    let out = harness::run(cmd, Some(message));
    assert!(out.status.success(), "openssl: {}", text(&out.stderr));
    // "SHA2-256(stdin)= HEX" (OpenSSL 3) or "(stdin)= HEX".
    let line = text(&out.stdout);
    line.rsplit("= ").next().unwrap_or_default().trim().to_owned()
}

fn webhook_config(port: u16) -> String {
    format!(
        "{DEFAULT_CONFIG}webhooks: {{\n  ops: {{\n    url: \"http://127.0.0.1:{port}/hooks/portcullis?src=it\"\n    secret: {SECRET}\n    retry_base: 200ms\n    retry_max: 1s\n    max_attempts: 1000\n  }}\n}}\n"
    )
}

fn queue(g: &Gate, all: bool) -> Vec<Value> {
    let mut args = vec!["security", "webhooks", "queue", "--json"];
    if all {
        args.push("--all");
    }
    match serde_json::from_str(&g.cli_ok(&args)) {
        Ok(Value::Array(v)) => v,
        other => panic!("webhooks queue: not a JSON array: {other:?}"),
    }
}

/// The receiver is down when the test delivery is queued: the queue shows
/// the failed attempts and their error; once it is up, the signed POST
/// arrives (signature checked with openssl, timestamp fresh) and the
/// delivery is marked sent.
#[test]
fn a_signed_webhook_arrives_after_the_receiver_was_down() {
    let port = free_port();
    let g = Gate::start_with(&webhook_config(port));
    let listed: Value = serde_json::from_str(&g.cli_ok(&["security", "webhooks", "list", "--json"])).expect("list json");
    assert_eq!(listed, serde_json::json!([{ "name": "ops", "url": format!("http://127.0.0.1:{port}/…"), "preset": "json", "timeout": "10s", "max_attempts": 1000 }]));

    let out = g.cli_ok(&["security", "webhooks", "test", "ops"]);
    assert!(out.starts_with("test delivery 1 to webhook ops queued"), "{out}");

    // Down: attempts pile up, each with its error.
    let failing = poll(Duration::from_secs(30), "two failed attempts in the queue", || {
        let q = queue(&g, false);
        q.first().filter(|d| d["attempts"].as_u64().unwrap_or(0) >= 2).cloned()
    });
    assert_eq!(failing["webhook"], "ops");
    assert_eq!(failing["event"], "test");
    assert!(failing["sent_at"].is_null(), "{failing}");
    let error = failing["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("connecting to 127.0.0.1:{port}: ")), "{failing}");
    assert!(g.daemon_log().contains("webhook not delivered, will retry"), "{}", g.daemon_log());

    // Up: the next attempt gets through.
    let received = start_receiver(port, Duration::from_secs(60), None);
    let got = received.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("no delivery within 30 s\n{}", g.daemon_log()));
    assert_eq!(got.request_line, "POST /hooks/portcullis?src=it HTTP/1.1");
    assert_eq!(got.header("host"), format!("127.0.0.1:{port}"));
    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header("x-portcullis-delivery"), "1");
    let ts: u64 = got.header("x-portcullis-timestamp").parse().expect("a Unix time");
    assert!(ts.abs_diff(harness::unix_now()) <= 300, "the timestamp {ts} is fresh");
    let want = format!("sha256={}", openssl_hmac(SECRET, &format!("{ts}.{}", got.body)));
    assert_eq!(got.header("x-portcullis-signature"), want, "signed over TIMESTAMP.BODY");
    assert_ne!(want, format!("sha256={}", openssl_hmac("another-secret-0123456789", &format!("{ts}.{}", got.body))));
    let body: Value = serde_json::from_str(&got.body).expect("a JSON body");
    assert_eq!(body["event"], "test");
    assert_eq!(body["webhook"], "ops");
    assert_eq!(body["id"].as_str().map(str::len), Some(32), "{body}");

    let sent = poll(Duration::from_secs(10), "the delivery marked sent", || {
        queue(&g, true).into_iter().find(|d| d["id"] == 1 && !d["sent_at"].is_null())
    });
    assert_eq!(sent["last_status"], 200);
    assert!(sent["attempts"].as_u64().unwrap_or(0) >= 3, "{sent}");
    assert!(sent["last_error"].is_null(), "{sent}");
    assert!(queue(&g, false).is_empty(), "nothing left to send");
    let log = g.daemon_log();
    assert!(log.contains("webhook delivered"), "{log}");
    assert!(!log.contains(SECRET) && !log.contains("/hooks/portcullis"), "neither the secret nor the URL's path is logged:\n{log}");
    // One delivery, not one per attempt.
    assert!(received.recv_timeout(Duration::from_millis(500)).is_err());
}

#[test]
fn webhook_commands_refuse_an_unknown_name() {
    let g = Gate::prepare(&webhook_config(free_port()));
    let out = g.cli(&["security", "webhooks", "test", "pager"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), "error: no webhook named \"pager\" in the config (defined: \"ops\")");
    assert!(queue(&g, true).is_empty());
    let g = Gate::prepare(DEFAULT_CONFIG);
    assert_eq!(g.cli_ok(&["security", "webhooks", "list"]).trim(), "no webhooks are configured");
}

/// `config check` reads a playbook file named by the config and reports
/// its problems at their place in that file, with the rest.
#[test]
fn config_check_reports_playbook_problems_in_the_included_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.hjson");
    let playbooks = dir.path().join("responses.hjson");
    std::fs::write(&config, format!("{}playbooks: responses.hjson\nwebhooks: {{\n  ops: {{\n    url: \"http://hooks.example.org/x\"\n    secret: {SECRET}\n  }}\n}}\n", crate::harness::config_with_playbooks())).unwrap();
    std::fs::write(&playbooks, "playbooks: [\n  {\n    name: lock-brute-force\n    when: { incident_type: \"brute_force\" }\n    actions: [\n      { lock: \"3d\" }\n      { webhook: \"pager\" }\n      {\n        block: { ipv4_bits: 40 }\n      }\n    ]\n  }\n]\n").unwrap();
    let check = || {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&config).args(["config", "check"]).current_dir(dir.path());
        harness::run(c, None)
    };
    let out = check();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let (cfg, file) = (config.display().to_string(), playbooks.display().to_string());
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let types = "\"brute_force_account\", \"brute_force_ip\", \"credential_stuffing\", \"password_spraying\", \"account_takeover\", \"username_enumeration\", \"injection_attempt\", \"cloned_authenticator\", \"risky_login\", \"sysop_factor_level\", \"manual\"";
    assert_eq!(
        lines,
        [
            format!("{cfg}:18:5: webhooks.ops.url: webhook url is plain http:// to hooks.example.org, which is not a loopback address: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 and localhost, where nothing crosses a network)"),
            format!("{file}:4:28: playbooks[0].when.incident_type: unknown incident type \"brute_force\", expected one of {types}"),
            "2 problems found".to_owned(),
        ],
        "{err}"
    );
    // The type fixed, the actions' own problems show.
    std::fs::write(&playbooks, std::fs::read_to_string(&playbooks).unwrap().replace("\"brute_force\"", "\"brute_force_account\"")).unwrap();
    let err = text(&check().stderr);
    assert!(err.contains(&format!("{file}:6:9: playbooks[0].actions[0].lock: a playbook lock of 3d is longer than the maximum of 24h")), "{err}");
    assert!(err.contains(&format!("{file}:7:9: playbooks[0].actions[1].webhook: no webhook named \"pager\" under webhooks: (defined: \"ops\")")), "{err}");
    assert!(err.contains(&format!("{file}:9:18: playbooks[0].actions[2].block.ipv4_bits: must be between 8 and 32 (32: the address alone)")), "{err}");
    assert!(err.ends_with("4 problems found\n"), "{err}");
}

/// Over https: the receiver's certificate (self-signed, for 127.0.0.1) is
/// trusted through the webhook's `ca_file`, and refused by a webhook that
/// trusts only the system's CA bundle.
#[test]
fn an_https_webhook_checks_the_receivers_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    let ca_file = dir.path().join("receiver.pem");
    std::fs::write(&ca_file, cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der"))
        .expect("server config");
    let port = free_port();
    let received = start_receiver(port, Duration::from_secs(60), Some(Arc::new(server)));
    let hook = |name: &str, extra: &str| format!("  {name}: {{\n    url: \"https://127.0.0.1:{port}/tls\"\n    secret: {SECRET}\n    retry_base: 200ms\n    retry_max: 1s\n{extra}  }}\n");
    let config = format!("{DEFAULT_CONFIG}webhooks: {{\n{}{}}}\n", hook("private", &format!("    ca_file: {}\n", ca_file.display())), hook("public", "    max_attempts: 1\n"));
    let g = Gate::start_with(&config);

    g.cli_ok(&["security", "webhooks", "test", "private"]);
    let got = received.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("no delivery within 30 s\n{}", g.daemon_log()));
    assert_eq!(got.request_line, "POST /tls HTTP/1.1");
    let ts = got.header("x-portcullis-timestamp").to_owned();
    assert_eq!(got.header("x-portcullis-signature"), format!("sha256={}", openssl_hmac(SECRET, &format!("{ts}.{}", got.body))));
    poll(Duration::from_secs(10), "the https delivery marked sent", || queue(&g, true).into_iter().find(|d| d["webhook"] == "private" && d["last_status"] == 200));

    g.cli_ok(&["security", "webhooks", "test", "public"]);
    let refused = poll(Duration::from_secs(30), "the untrusted receiver given up", || queue(&g, true).into_iter().find(|d| d["webhook"] == "public" && !d["gave_up_at"].is_null()));
    let error = refused["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("TLS with 127.0.0.1: ") && error.contains("certificate"), "{refused}");
    assert!(refused["sent_at"].is_null(), "{refused}");
    assert!(received.recv_timeout(Duration::from_millis(500)).is_err(), "nothing reached the receiver over an untrusted connection");
}
