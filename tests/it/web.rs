//! The web front end against the real daemon: connection caps and the
//! descriptors kept for SSH, idle and age limits on connections, who may
//! read `/metrics`.

use crate::harness::{curl, detail, totp_at, Gate, Ssh, ALICE_PW};
use crate::mfa::{enable, open_page, spool_config, spooled_link, wrong_totp};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(10);

fn config(web_extra: &str) -> String {
    format!(
        "data_dir: data\nssh: {{\n  listen: \"127.0.0.1:0\"\n  auth_rejection_time: 50ms\n  max_startups_per_address: 100\n  penalties: {{\n    max_failures: 1000\n  }}\n}}\npasswords: {{\n  iterations: 1000\n}}\nweb: {{\n  listen: \"127.0.0.1:0\"\n{web_extra}}}\n"
    )
}

/// A TLS client that trusts the gate's self-signed certificate and speaks h2.
fn tls_connector(g: &Gate) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(tls_config(g))
}

fn tls_config(g: &Gate) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(g.path("data/tls_cert.pem")).expect("the gate's certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// One HTTP/2 connection kept open after its GET: the client handle and
/// the task that drives the connection (it answers the server's pings).
struct Held {
    _client: h2::client::SendRequest<bytes::Bytes>,
    driver: tokio::task::JoinHandle<()>,
}

/// Opens an h2 connection from `from`, GETs `/healthz` and keeps the
/// connection. `None` when the gate refused or closed it.
async fn open_h2(tls: tokio_rustls::TlsConnector, from: IpAddr, port: u16) -> Option<Held> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    let tcp = timeout(STEP, socket.connect(SocketAddr::from(([127, 0, 0, 1], port)))).await.ok()?.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let stream = timeout(STEP, tls.connect(name, tcp)).await.ok()?.ok()?;
    let (client, connection) = timeout(STEP, h2::client::handshake(stream)).await.ok()?.ok()?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = timeout(STEP, client.ready()).await.ok()?.ok()?;
    let request = http::Request::get(format!("https://localhost:{port}/healthz")).body(()).ok()?;
    let (response, _) = client.send_request(request, true).ok()?;
    let response = timeout(STEP, response).await.ok()?.ok()?;
    if response.status() != 200 {
        return None;
    }
    let mut body = response.into_body();
    while let Some(chunk) = timeout(STEP, body.data()).await.ok()? {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Some(Held { _client: client, driver })
}

/// Opens `n` connections from `from`, `batch` at a time; returns those kept.
async fn open_many(tls: &tokio_rustls::TlsConnector, from: IpAddr, port: u16, n: usize, batch: usize) -> Vec<Held> {
    let mut held = Vec::new();
    let mut left = n;
    while left > 0 {
        let now = left.min(batch);
        left -= now;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..now {
            set.spawn(open_h2(tls.clone(), from, port));
        }
        while let Some(r) = set.join_next().await {
            held.extend(r.expect("client task"));
        }
    }
    held
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// 1,100 idle HTTP/2 connections from 127.0.0.2 against a daemon held to
/// 1,024 descriptors: the per-address cap keeps all but 32 out, SSH from
/// 127.0.0.1 still logs in and `/healthz` answers 127.0.0.3.
#[test]
fn idle_http2_flood_leaves_ssh_and_others_working() {
    let mut g = Gate::prepare(&config(""));
    g.add_user("alice", ALICE_PW);
    g.launch_with_nofile(1024);
    let rt = runtime();
    let tls = tls_connector(&g);
    let flood: IpAddr = "127.0.0.2".parse().unwrap();
    let held = rt.block_on(open_many(&tls, flood, g.web_port, 1100, 100));
    assert_eq!(held.len(), 32, "web.max_connections_per_address (default 32) connections kept");
    assert!(held.iter().all(|h| !h.driver.is_finished()), "the kept connections are still open");

    let ssh = g.ssh(&Ssh::kbd("alice", ALICE_PW).bind("127.0.0.1"));
    assert!(ssh.authenticated_exec(), "ssh login during the flood: {ssh:?}\n{}", g.daemon_log());
    let health = curl(&g.web_url("/healthz"), &["-k", "--interface", "127.0.0.3"]);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"), "{health:?}");
    assert!(held.iter().all(|h| !h.driver.is_finished()), "the flood is still held open");
    // Descriptor starvation shows as failed accepts in the daemon's log.
    let log = g.daemon_log();
    assert!(!log.contains("Too many open files"), "the daemon ran out of descriptors:\n{log}");

    // More from the flooding address are still refused; once its
    // connections close, it gets in again.
    assert!(rt.block_on(open_h2(tls.clone(), flood, g.web_port)).is_none());
    drop(held);
    let again = crate::harness::poll(Duration::from_secs(20), "a slot for 127.0.0.2 again", || rt.block_on(open_h2(tls.clone(), flood, g.web_port)));
    drop(again);
    g.stop();
}

/// An idle HTTP/2 connection is closed after `http2_idle_timeout`, an idle
/// HTTP/1.1 one after `http1_idle_timeout`, and any HTTP/2 connection once
/// it is `http2_max_age` old (even when the idle timeout is far off).
#[test]
fn idle_and_old_connections_are_closed() {
    let mut g = Gate::prepare(&config("  http2_idle_timeout: 1s\n  http1_idle_timeout: 1s\n"));
    g.launch();
    let rt = runtime();
    let tls = tls_connector(&g);
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let held = rt.block_on(open_h2(tls.clone(), lo, g.web_port)).expect("a connection");
    rt.block_on(async { timeout(Duration::from_secs(20), held.driver).await }).expect("the idle connection is closed by the gate").expect("driver");
    // HTTP/1.1 keep-alive: one request, then the gate closes the connection.
    let closed = rt.block_on(async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut config = (*tls_config(&g)).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", g.web_port)).await.expect("connect");
        let mut s = tls.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.expect("tls");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("request");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        timeout(Duration::from_secs(20), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .map(|()| String::from_utf8_lossy(&got).into_owned())
    });
    let answer = closed.expect("the idle HTTP/1.1 connection is closed by the gate");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    g.stop();

    let mut g = Gate::prepare(&config("  http2_idle_timeout: 1h\n  http2_max_age: 2s\n"));
    g.launch();
    let tls = tls_connector(&g);
    let held = rt.block_on(open_h2(tls.clone(), lo, g.web_port)).expect("a connection");
    rt.block_on(async { timeout(Duration::from_secs(20), held.driver).await }).expect("the old connection is closed by the gate").expect("driver");
    g.stop();
}

/// `web.metrics_from_loopback: false` (a reverse proxy on the same host):
/// loopback needs the token like everyone else.
#[test]
fn metrics_from_loopback_can_be_turned_off() {
    const TOKEN: &str = "metrics-token-0123456789";
    let off = "  metrics_from_loopback: false\n".to_owned();
    let off_with_token = format!("{off}  metrics_token: {TOKEN}\n");
    let bearer = format!("Bearer {TOKEN}");
    // (config, Authorization header, status)
    let cases: Vec<(&str, Option<&str>, u16)> = vec![
        ("", None, 200),
        (&off, None, 403),
        (&off_with_token, None, 401),
        (&off_with_token, Some("Bearer wrong-token-0123456789"), 401),
        (&off_with_token, Some(&bearer), 200),
    ];
    for (extra, auth, status) in &cases {
        let mut g = Gate::start_with(&config(extra));
        let header = auth.map(|a| format!("Authorization: {a}"));
        let mut args = vec!["-k"];
        if let Some(h) = &header {
            args.extend(["-H", h.as_str()]);
        }
        let r = curl(&g.web_url("/metrics"), &args);
        assert_eq!(r.status, *status, "{extra:?} {auth:?}: {r:#?}");
        if *status == 200 {
            assert!(r.body.contains("portcullis_users"), "{}", r.body);
        } else {
            assert!(!r.body.contains("portcullis_users"), "{}", r.body);
        }
        g.stop();
    }
}

/// Enrollment events from the web carry the client's address and user
/// agent (bounded; control characters kept as sent, escaped on display).
#[test]
fn enrollment_events_name_the_web_client() {
    let g = Gate::start_with(&spool_config(""));
    g.add_user("alice", ALICE_PW);
    enable(&g, "alice", "totp");
    let page = open_page(&g, &spooled_link(&g, "alice", 0), "alice.jar");
    let jar = page.jar.to_str().unwrap().to_owned();
    let long_agent = format!("Scanner/2.0 {}", "x".repeat(400));
    let post = |code: &str, agent: &str| {
        curl(&page.url, &["-k", "-b", &jar, "-A", agent, "--data-urlencode", &format!("csrf={}", page.csrf), "--data-urlencode", &format!("code={code}")])
    };
    let r = post(&wrong_totp(&page.secret), &long_agent);
    assert_eq!(r.status, 422, "{r:#?}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let r = post(&totp_at(&page.secret, now), "Mozilla/5.0 (X11; Linux) Test/1.0");
    assert_eq!(r.status, 200, "{r:#?}");

    let failed = g.wait_events(Some("alice"), "otp_failed", |ev| !ev.is_empty());
    assert_eq!(failed[0]["ip"], "127.0.0.1", "{}", failed[0]);
    assert_eq!(detail(&failed[0], "stage"), "enrollment");
    let agent = detail(&failed[0], "user_agent").as_str().unwrap_or_default().to_owned();
    assert_eq!(agent.len(), 256, "bounded: {agent}");
    assert!(long_agent.starts_with(&agent), "{agent}");
    let enabled = g.wait_events(Some("alice"), "mfa_enabled", |ev| !ev.is_empty());
    assert_eq!(enabled[0]["ip"], "127.0.0.1", "{}", enabled[0]);
    assert_eq!(detail(&enabled[0], "user_agent"), "Mozilla/5.0 (X11; Linux) Test/1.0");
}
