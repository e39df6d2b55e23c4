//! The mamori manager: one process that enrolls agents, talks to them over mutual TLS, stores
//! what they send in the embedded store, and answers the admin API.
//!
//! Layout of the data directory (created 0700):
//!
//! | path            | what                                                              |
//! |-----------------|-------------------------------------------------------------------|
//! | `ca/ca.key`     | the device CA's private key (0600); it never leaves this directory |
//! | `ca/ca.crt`     | the CA certificate agents pin by fingerprint                      |
//! | `manager.db`    | the SQLite store (WAL): agents, tokens, events, policy            |
//! | `admin.token`   | the admin API bearer token (0600), read by the local CLI          |
//! | `manager.json`  | where the running manager listens and its CA fingerprint, for the CLI |
//!
//! The server certificate is issued by the CA at every start and its key lives only in memory.
//!
//! How a request is handled: [`conn`] accepts TCP, completes a TLS 1.3 handshake in which any
//! client certificate is verified against the CA and the in-memory revocation set, and serves
//! HTTP/1.1 on it with the verified device id attached to each request. [`api`] routes the
//! request; agent routes require that device id, admin routes the admin token, enrollment an
//! enrollment token. Events go to [`writer`], a single thread that group-commits concurrent
//! batches into one SQLite transaction and answers each request only after the commit.
//!
//! This crate has no opinion on process concerns (signals, printing, exit codes): the `mamori`
//! binary owns those.

#![recursion_limit = "256"]

mod api;
mod conn;
mod console;
mod files;
mod log_rules;
mod openapi;
mod respond;
mod state;
mod syslog;
mod timefmt;
mod writer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

pub use console::audit::verify_data_dir as verify_audit_log;
pub use console::users::{local_user_command, LocalUserCommand, INITIAL_PASSWORD_FILE};
pub use mamori_audit::VerifyReport as AuditReport;
pub use openapi::document as openapi_document;
pub use syslog::{LogStatsReport, SyslogAddrs, SyslogConfig};

/// Where the default rule pack is written, under the manager's data directory.
pub const DEFAULT_RULES_DIR: &str = "rules/default";

/// Default age after which events are deleted.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// How the manager runs. `Config::new` gives the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Extra DNS names or IP addresses agents use to reach the manager; `localhost`, the loopback
    /// addresses, the host name and a specific listen address are always included.
    pub server_names: Vec<String>,
    /// Events older than this are deleted.
    pub retention: Duration,
    /// How often the retention sweep runs.
    pub retention_interval: Duration,
    /// An agent not heard from for this long is shown as offline.
    pub offline_after: Duration,
    /// Lifetime of the certificates issued to agents.
    pub client_cert_validity: Duration,
    /// Lifetime of the manager's own server certificate (re-issued at every start).
    pub server_cert_validity: Duration,
    /// Syslog receivers (all off by default).
    pub syslog: SyslogConfig,
    /// Sigma rule files and directories applied to received logs, besides the default pack.
    pub log_rules: Vec<PathBuf>,
    /// Also run mamori's default rule pack for hospitals (written to `<data>/rules/default` at
    /// every start, so an upgrade brings its rules).
    pub default_rules: bool,
    /// Field mappings for the log rules (pySigma-style processing pipelines, YAML), applied
    /// after the built-in Windows ones.
    pub log_pipelines: Vec<PathBuf>,
    /// Where the web console listens (HTTPS, no client certificates); `None`: no console.
    pub console: Option<SocketAddr>,
    /// A console session ends after this long without the user doing anything.
    pub console_idle: Duration,
    /// The console's address as people type it (`https://mamori.example.local:9443`): links in
    /// mails and the name passkeys are bound to; its host is added to the certificate. Default:
    /// the address the console is bound to.
    pub console_url: Option<String>,
    /// The institution's name, shown in reports and mails.
    pub institution: String,
}

impl Config {
    /// The rule paths the manager loads: the default pack (written now) and the site's own.
    pub fn rule_paths(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        if self.default_rules {
            let dir = self.data_dir.join(DEFAULT_RULES_DIR);
            mamori_rules::write_pack(&dir)
                .with_context(|| format!("cannot write the default rule pack to {}", dir.display()))?;
            paths.push(dir);
        }
        paths.extend(self.log_rules.iter().cloned());
        Ok(paths)
    }

    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Config {
        Config {
            data_dir,
            listen,
            server_names: Vec::new(),
            retention: DEFAULT_RETENTION,
            retention_interval: Duration::from_secs(3600),
            offline_after: Duration::from_secs(90),
            client_cert_validity: mamori_pki::DEFAULT_CLIENT_VALIDITY,
            server_cert_validity: Duration::from_secs(90 * 24 * 60 * 60),
            syslog: SyslogConfig::default(),
            log_rules: Vec::new(),
            default_rules: true,
            log_pipelines: Vec::new(),
            console: None,
            console_idle: Duration::from_secs(15 * 60),
            console_url: None,
            institution: "mamori".to_string(),
        }
    }
}

/// What the CLI and other local tools need to reach a running manager (`manager.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub url: String,
    pub ca_fingerprint: String,
}

pub const ENDPOINT_FILE: &str = "manager.json";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const STORE_FILE: &str = "manager.db";

/// Reads `manager.json` and `admin.token` from a manager data directory.
pub fn local_admin_access(data_dir: &Path) -> anyhow::Result<(Endpoint, String)> {
    let endpoint_path = data_dir.join(ENDPOINT_FILE);
    let text = std::fs::read_to_string(&endpoint_path).with_context(|| {
        format!(
            "cannot read {} (is `mamori server` or `mamori up` running with this data directory?)",
            endpoint_path.display()
        )
    })?;
    let endpoint: Endpoint =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", endpoint_path.display()))?;
    let token = files::read_admin_token(&data_dir.join(ADMIN_TOKEN_FILE))?;
    Ok((endpoint, token))
}

/// A running manager. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub local_addr: SocketAddr,
    pub url: String,
    pub ca_fingerprint: String,
    /// True when this start created the CA (first start).
    pub created_ca: bool,
    /// Where syslog is received (ports resolved).
    pub syslog: SyslogAddrs,
    pub admin_token_path: PathBuf,
    /// `https://host:port` of the web console, when it runs.
    pub console_url: Option<String>,
    /// Set when this start created the first console account: the file with its password.
    pub console_initial_password: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, commits pending events.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("manager task panicked")?
    }

    /// Waits until the manager stops on its own (it only does on a fatal error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("manager task panicked")?
    }

    pub fn stop_signal(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Opens (or on first start creates) the CA, the store and the admin token, binds the listener
/// and starts serving on the current tokio runtime.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    if let Some(url) = &config.console_url {
        if mamori_auth::passkey::console_host(url).is_none() {
            anyhow::bail!("the console URL {url:?} is not https://HOST[:PORT]");
        }
    }
    let shared = state::Shared::open(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    let host = if local_addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if local_addr.is_ipv6() {
        format!("[{}]", local_addr.ip())
    } else {
        local_addr.ip().to_string()
    };
    let url = format!("https://{host}:{}", local_addr.port());
    let endpoint = Endpoint { url: url.clone(), ca_fingerprint: shared.ca.fingerprint() };
    let endpoint_json = serde_json::to_vec_pretty(&endpoint)?;
    mamori_pki::fsutil::write_atomic(&config.data_dir.join(ENDPOINT_FILE), &endpoint_json, true)?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(shared);
    let (syslog, syslog_tasks) = syslog::start(shared.clone(), &config.syslog, shutdown_rx.clone()).await?;
    let mut console_url = None;
    let mut console_tasks = Vec::new();
    if let Some(addr) = config.console {
        let listener = console::bind(addr).await?;
        let bound = listener.local_addr()?;
        let host = if bound.ip().is_unspecified() { "127.0.0.1".to_string() } else { bound.ip().to_string() };
        let url = config.console_url.clone().unwrap_or_else(|| format!("https://{host}:{}", bound.port()));
        shared.console.set_public_url(&url);
        console_tasks.push(tokio::spawn(console::serve(shared.clone(), listener, shutdown_rx.clone())));
        console_tasks.push(console::stream::spawn_watcher(shared.clone(), shutdown_rx.clone()));
        console_url = Some(url);
    }
    console_tasks.push(console::alerting::spawn(shared.clone(), shutdown_rx.clone()));
    console_tasks.push(console::reports::spawn_schedule(shared.clone(), shutdown_rx.clone()));
    *shared.syslog_addrs.write().map_err(|_| anyhow::anyhow!("poisoned lock"))? = syslog.clone();
    let running = Running {
        local_addr,
        url,
        ca_fingerprint: shared.ca.fingerprint(),
        created_ca: shared.created_ca,
        syslog,
        admin_token_path: config.data_dir.join(ADMIN_TOKEN_FILE),
        console_url,
        console_initial_password: shared.console_initial_password.clone(),
        shutdown,
        task: tokio::spawn(serve(shared, listener, syslog_tasks, console_tasks, shutdown_rx)),
    };
    Ok(running)
}

async fn serve(
    shared: Arc<state::Shared>,
    listener: tokio::net::TcpListener,
    syslog_tasks: Vec<tokio::task::JoinHandle<()>>,
    console_tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let background = state::spawn_background(shared.clone(), shutdown.clone());
    let result = conn::accept_loop(shared.clone(), listener, shutdown).await;
    // The receivers stop on the same signal and hand what they read to the writer first.
    for task in syslog_tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    }
    for task in background {
        task.abort();
    }
    for task in console_tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    }
    // The tail of the audit log since the last checkpoint gets a signature of its own.
    let sign = shared.clone();
    let signed = tokio::task::spawn_blocking(move || {
        let store = mamori_store::Store::open(&sign.store_path)?;
        console::audit::checkpoint_head(&store, &sign.console.audit_key)
    })
    .await;
    if let Ok(Err(e)) = signed {
        tracing::warn!("could not sign the audit log's last checkpoint: {e:#}");
    }
    // Whatever agents told us since the last flush (heartbeats, last seen) is written once more.
    let flush = shared.clone();
    tokio::task::spawn_blocking(move || flush.flush_live()).await.ok();
    shared.writer.close().await;
    result
}
