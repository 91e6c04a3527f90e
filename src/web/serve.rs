//! The accept loop and one task per connection, over hyper directly so
//! that every connection is bounded: admitted by `core` right after TCP
//! accept (global and per-address caps, the descriptors kept for SSH),
//! a deadline on the TLS handshake, an idle timeout (no request in
//! flight) for HTTP/1.1 and HTTP/2, and a maximum age for HTTP/2. Closing
//! is graceful (GOAWAY, or the end of a keep-alive); a connection that
//! does not finish within the grace period is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::core::connections::WebConnections;

/// The per-connection limits.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    /// TLS handshake and first request headers.
    pub first_request: Duration,
    pub http1_idle: Duration,
    pub http2_idle: Duration,
    pub http2_max_age: Duration,
    /// How long a closing connection (or all of them at shutdown) may take.
    pub grace: Duration,
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity { in_flight: AtomicUsize::new(0), last: Mutex::new(Instant::now()) })
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// When the connection went idle; `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        (self.in_flight.load(Ordering::SeqCst) == 0).then_some(last)
    }
}

/// One request in flight; dropping it marks the end.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts until `stop` resolves, then asks every connection to close and
/// gives them `timeouts.grace` before dropping the rest.
pub(super) async fn run(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    app: Router,
    connections: Arc<WebConnections>,
    core: Arc<crate::core::Core>,
    timeouts: Timeouts,
    stop: impl std::future::Future<Output = ()>,
) {
    let (closing_tx, closing) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) if core.is_blocked(peer.ip(), crate::model::Millis::now()) => {
                    // A blocked address: closed before any TLS byte.
                    drop(tcp);
                    core.blocked_connection(peer.ip(), "https", crate::model::Millis::now()).await;
                }
                Ok((tcp, peer)) => match connections.admit(peer.ip()) {
                    Ok(permit) => {
                        let (tls, app, closing) = (tls.clone(), app.clone(), closing.clone());
                        tasks.spawn(async move {
                            connection(tcp, peer, tls, app, timeouts, closing).await;
                            drop(permit);
                        });
                    }
                    Err(refusal) => {
                        // Closed at once: no TLS work for a refused peer.
                        tracing::debug!(peer = %peer.ip(), reason = refusal.reason(), "web: connection refused");
                        drop(tcp);
                    }
                },
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "web: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = &mut stop => break,
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = tokio::time::timeout(timeouts.grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(left = tasks.len(), "web: closing the connections that did not finish");
        tasks.shutdown().await;
    }
}

/// Serves one connection to the end.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: tokio_rustls::TlsAcceptor,
    app: Router,
    t: Timeouts,
    mut closing: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let stream = match tokio::time::timeout(t.first_request, tls.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer.ip(), error = %e, "web: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer.ip(), "web: TLS handshake timed out");
            return;
        }
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = Activity::new();
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let busy = activity.begin();
            request.extensions_mut().insert(ConnectInfo(peer));
            let call = hyper::service::Service::call(&TowerToHyperService::new(app.clone()), request);
            async move {
                let response = call.await;
                drop(busy);
                response
            }
        })
    };
    let io = TokioIo::new(stream);
    // The same loop for both protocols; only the builder and limits differ.
    macro_rules! drive {
        ($conn:expr, $idle:expr, $max_age:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            let born = Instant::now();
            loop {
                let idle_deadline = activity.idle_since().map(|since| since + $idle);
                let age_deadline = $max_age.map(|age: Duration| born + age);
                let next = [idle_deadline, age_deadline].into_iter().flatten().min();
                // While a request runs, look again a little later.
                let wake = next.unwrap_or_else(|| Instant::now() + $idle.min(Duration::from_secs(1)));
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(peer = %peer.ip(), error = %e, "web: connection ended with an error");
                        }
                        return;
                    }
                    () = tokio::time::sleep_until(wake) => {
                        let now = Instant::now();
                        let idle = activity.idle_since().is_some_and(|since| now >= since + $idle);
                        let old = age_deadline.is_some_and(|d| now >= d);
                        if idle || old {
                            tracing::debug!(peer = %peer.ip(), idle, old, "web: closing the connection");
                            break;
                        }
                    }
                    changed = closing.changed() => {
                        if changed.is_err() || *closing.borrow() {
                            break;
                        }
                    }
                }
            }
            conn.as_mut().graceful_shutdown();
            if tokio::time::timeout(t.grace, conn).await.is_err() {
                tracing::debug!(peer = %peer.ip(), "web: connection did not close in time; dropped");
            }
        }};
    }
    if h2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            // Dead peers are found by ping; live idle ones by the idle timeout.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10))
            .max_concurrent_streams(32);
        drive!(builder.serve_connection(io, service), t.http2_idle, Some(t.http2_max_age));
    } else {
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(t.first_request);
        drive!(builder.serve_connection(io, service), t.http1_idle, None::<Duration>);
    }
}
