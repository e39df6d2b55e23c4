//! `mamori vault serve`: the backup vault as a network service (issue 6).
//!
//! The vault normally runs on its own host, with its own key and a certificate from the mamori
//! CA (`mamori vault init` makes the key and CSR there, `mamori vault sign` signs it where the
//! CA is). Clients connect over TLS 1.3 with their device certificates and can only add:
//! upload blobs (each verified against its content address), commit snapshots, and read
//! their own snapshots back. The repository keys never leave the vault; the vault looks at
//! what arrives and flags snapshots that look like ransomware (see `mamori_vault::analysis`),
//! recording and forwarding security events to the manager.
//!
//! - [`layout`]: files under the vault's data directory.
//! - [`service`]: the HTTP routes and what they check.
//! - [`limits`]: per-device quota and rate limits.
//! - [`events`]: the security event log and its forwarding to the manager as CEF over syslog/TLS.

pub mod events;
pub mod layout;
pub mod limits;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tower::ServiceExt;

pub use layout::Layout;
pub use limits::Limits;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ServeOptions {
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub passphrase: String,
    pub limits: Limits,
    /// `host:port` of the manager's syslog TLS receiver for the vault's security events.
    pub manager_syslog: Option<String>,
}

/// The vault's identity: its key (0600, made on this host) and the signed certificate bundle.
pub struct Identity {
    pub identity: mamori_pki::KeyAndCert,
    pub ca_der: Vec<u8>,
}

pub fn load_identity(layout: &Layout) -> anyhow::Result<Identity> {
    let key_pem = mamori_pki::fsutil::read_private(&layout.key())
        .with_context(|| format!("the vault key {} (run `mamori vault init`)", layout.key().display()))?;
    let bundle = std::fs::read_to_string(layout.cert()).with_context(|| {
        format!(
            "the vault certificate {} is missing: sign {} with `mamori vault sign` where the manager runs",
            layout.cert().display(),
            layout.csr().display()
        )
    })?;
    let certs = mamori_pki::certs_from_pem(&bundle)?;
    if certs.len() < 2 {
        bail!("{} must hold the vault certificate followed by the CA certificate", layout.cert().display());
    }
    let ca_der = certs[certs.len() - 1].clone();
    Ok(Identity { identity: mamori_pki::KeyAndCert { key_pem, cert_pem: bundle }, ca_der })
}

/// Runs until `shutdown` turns true. Prints `listening on ADDR` when ready.
pub async fn serve(opts: ServeOptions, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let layout = Layout::new(&opts.data);
    let identity = load_identity(&layout)?;
    // Anything a device certificate was signed with is accepted; revocation is the manager's
    // (certificates are short-lived and renewed there), see the note in ARCHITECTURE.md.
    let tls = mamori_pki::tls::server_config(
        &identity.ca_der,
        &identity.identity,
        mamori_pki::tls::ClientAuth::Required,
        Arc::new(|_| false),
    )?;
    let repo_root = layout.repo();
    let passphrase = opts.passphrase.clone();
    let root = repo_root.clone();
    let repo = tokio::task::spawn_blocking(move || mamori_vault::Repository::open(&root, &passphrase))
        .await?
        .with_context(|| format!("opening the repository {}", repo_root.display()))?;
    // Held while serving: `mamori vault prune --execute` takes it exclusively, so garbage is
    // never collected under a running service that might refer to it.
    let _shared = mamori_vault::retention::service_lock(&layout.repo())?;
    let events = events::EventLog::open(layout.events())?;
    let appended = events.appended.clone();
    let vault = Arc::new(service::Vault::new(repo, repo_root, opts.limits.clone(), events)?);
    let reconcile_vault = vault.clone();
    let reconciled = tokio::task::spawn_blocking(move || reconcile_vault.reconcile()).await??;
    if reconciled > 0 {
        tracing::info!(
            "analysed {reconciled} snapshots that had no record (the vault had stopped mid-commit)"
        );
    }
    if let Some(address) = &opts.manager_syslog {
        let fingerprint = mamori_pki::fingerprint_of_der(&identity.ca_der);
        let client_tls = mamori_pki::tls::client_config(&fingerprint, Some(&identity.identity))?;
        let forwarding =
            events::Forwarding { address: address.clone(), tls: client_tls, hostname: hostname() };
        tokio::spawn(events::forward(layout.events(), layout.forwarded(), forwarding, appended));
    }

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let local = listener.local_addr()?;
    println!("listening on {local}");
    tracing::info!("vault listening on {local}");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let router = service::router(vault.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let last_tls_event = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
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
        let vault = vault.clone();
        let last_tls_event = last_tls_event.clone();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                // A connection closed before the handshake (a port probe) is no attempt.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
                Ok(Err(e)) => {
                    // Forged or foreign certificates end here. One event a second at most, so
                    // that a scanner cannot flood the log.
                    let now = std::time::Instant::now();
                    let log = match last_tls_event.lock() {
                        Ok(mut last)
                            if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) =>
                        {
                            *last = Some(now);
                            true
                        }
                        _ => false,
                    };
                    if log {
                        vault.events.record(events::SecurityEvent {
                            time_ms: service::now_ms(),
                            kind: "tls_refused".into(),
                            device_id: String::new(),
                            address: addr.ip().to_string(),
                            detail: format!("TLS handshake refused: {e}"),
                            severity: 5,
                        });
                    }
                    return;
                }
                Err(_) => return,
            };
            let cert = mamori_pki::tls::peer_info(tls.get_ref().1);
            let peer = service::Peer { device_id: cert.and_then(|c| c.device_id), addr };
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
                _ = shutdown.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(10), connection.as_mut()).await;
                }
            }
        });
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    // Blobs received but not yet in a pack belong to no snapshot; writing them saves the
    // client from sending them again.
    let flushed = tokio::task::spawn_blocking(move || vault.flush()).await?;
    flushed?;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "vault".into())
}
