//! Accepting connections: TLS 1.3 handshake, the verified peer identity, HTTP/1.1, and closing a
//! connection the moment its agent is revoked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use crate::state::Shared;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that opens a connection and then sends nothing (or a header a byte at a time) is
/// dropped after this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The verified client certificate's device id, attached to every request on the connection.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub device_id: Option<String>,
    pub cert: Option<mamori_pki::CertInfo>,
    /// The address the connection comes from.
    pub addr: std::net::SocketAddr,
}

pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.server_tls.clone());
    let router = crate::api::router(shared.clone());
    let next_id = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        while tasks.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                // Refused certificates end here: rustls has already sent the alert.
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let cert = mamori_pki::tls::peer_info(tls.get_ref().1);
            let peer = Peer { device_id: cert.as_ref().and_then(|c| c.device_id.clone()), cert, addr };
            serve_connection(shared, router, tls, peer, id, shutdown).await;
        });
    }
    // Let in-flight requests finish (each connection shuts down gracefully on the signal).
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        tasks.abort_all();
    }
    Ok(())
}

async fn serve_connection(
    shared: Arc<Shared>,
    router: axum::Router,
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: Peer,
    id: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let revoked = Arc::new(Notify::new());
    if let Some(device) = &peer.device_id {
        if let Ok(mut conns) = shared.connections.lock() {
            conns.entry(device.clone()).or_default().insert(id, revoked.clone());
        }
        // Revoked between the handshake's check and the registration above: close now.
        if !shared.is_active(device) {
            revoked.notify_one();
        }
    }
    let device = peer.device_id.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        // Dropping the connection closes the socket, in the middle of a request if need be.
        _ = revoked.notified() => {}
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), connection.as_mut()).await;
        }
    }
    if let Some(device) = device {
        if let Ok(mut conns) = shared.connections.lock() {
            if let Some(map) = conns.get_mut(&device) {
                map.remove(&id);
                if map.is_empty() {
                    conns.remove(&device);
                }
            }
        }
    }
}
