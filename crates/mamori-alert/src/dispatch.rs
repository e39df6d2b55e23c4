//! Delivery: mail, webhooks and syslog, each failure told as a [`DeliveryError`] that says which
//! target failed, at which step, and why.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::payload::{json_payload, slack_payload, syslog_frame, syslog_message, teams_payload};
use crate::render;
use crate::router::{Delivery, Digest};
use crate::settings::{split_host_port, Lang, Settings, SyslogTransport, WebhookFormat};
use crate::smtp::SmtpClient;
use crate::tls::{self, describe_tls_error, find_rustls_error, SystemRoots};
use crate::Alert;

const WEBHOOK_TIMEOUT_S: u64 = 15;
const SYSLOG_TIMEOUT_S: u64 = 10;
/// Enough of an error response body to see what the server said.
const MAX_ERROR_BODY_CHARS: usize = 300;
const MAX_ERROR_BODY_BYTES: usize = 4096;

/// Why one delivery failed. Each message starts with the target (`mail relay host:port`,
/// `webhook "name" (host)`, `syslog "name" (tcp host:port)`) and never contains the SMTP
/// password or a webhook URL's path (which is often its secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The settings do not allow this delivery (unknown name, no smtp settings, plaintext AUTH).
    #[error("{target}: not configured: {detail}")]
    NotConfigured { target: String, detail: String },
    /// Reading a `ca_file` or building the client failed.
    #[error("{target}: setup failed: {detail}")]
    Setup { target: String, detail: String },
    #[error("{target}: DNS lookup of {host} failed: {detail}")]
    Dns { target: String, host: String, detail: String },
    #[error("{target}: connection refused by {address}")]
    ConnectionRefused { target: String, address: String },
    #[error("{target}: cannot connect to {address}: {detail}")]
    Connect { target: String, address: String, detail: String },
    #[error("{target}: timed out after {seconds} s during {during}")]
    Timeout { target: String, during: String, seconds: u64 },
    #[error("{target}: TLS handshake failed: {detail}")]
    Tls { target: String, detail: String },
    /// The relay said no to our username and password.
    #[error("{target}: authentication failed: AUTH rejected by server: {reply}")]
    AuthRejected { target: String, reply: String },
    /// A negative SMTP reply outside AUTH (sender or recipient refused, message refused, ...).
    #[error("{target}: the server refused {during}: {reply}")]
    Refused { target: String, during: String, code: u16, reply: String },
    #[error("{target}: HTTP {status} {reason} from {host}{body}")]
    HttpStatus { target: String, host: String, status: u16, reason: String, body: String },
    #[error("{target}: {detail}")]
    Other { target: String, detail: String },
}

impl DeliveryError {
    /// Whether trying again later may work (network trouble, 4xx SMTP, HTTP 429/5xx), as opposed
    /// to something a person has to fix (trust, credentials, settings, a refused recipient).
    pub fn retryable(&self) -> bool {
        match self {
            DeliveryError::Dns { .. }
            | DeliveryError::ConnectionRefused { .. }
            | DeliveryError::Connect { .. }
            | DeliveryError::Timeout { .. }
            | DeliveryError::Other { .. } => true,
            DeliveryError::Refused { code, .. } => (400..500).contains(code),
            DeliveryError::HttpStatus { status, .. } => *status == 429 || *status >= 500,
            DeliveryError::NotConfigured { .. }
            | DeliveryError::Setup { .. }
            | DeliveryError::Tls { .. }
            | DeliveryError::AuthRejected { .. } => false,
        }
    }

    /// The same error with `secret` (and its base64, as AUTH sends it) replaced by `***`.
    pub(crate) fn scrubbed(self, secret: &str) -> DeliveryError {
        if secret.is_empty() {
            return self;
        }
        let forms = [secret.to_string(), base64(secret.as_bytes())];
        let clean = |s: String| forms.iter().fold(s, |s, form| s.replace(form.as_str(), "***"));
        match self {
            DeliveryError::NotConfigured { target, detail } => {
                DeliveryError::NotConfigured { target, detail: clean(detail) }
            }
            DeliveryError::Setup { target, detail } => DeliveryError::Setup { target, detail: clean(detail) },
            DeliveryError::Dns { target, host, detail } => {
                DeliveryError::Dns { target, host, detail: clean(detail) }
            }
            DeliveryError::Connect { target, address, detail } => {
                DeliveryError::Connect { target, address, detail: clean(detail) }
            }
            DeliveryError::Tls { target, detail } => DeliveryError::Tls { target, detail: clean(detail) },
            DeliveryError::AuthRejected { target, reply } => {
                DeliveryError::AuthRejected { target, reply: clean(reply) }
            }
            DeliveryError::Refused { target, during, code, reply } => {
                DeliveryError::Refused { target, during, code, reply: clean(reply) }
            }
            DeliveryError::Other { target, detail } => DeliveryError::Other { target, detail: clean(detail) },
            other @ (DeliveryError::ConnectionRefused { .. }
            | DeliveryError::Timeout { .. }
            | DeliveryError::HttpStatus { .. }) => other,
        }
    }
}

struct WebhookClient {
    target: String,
    format: WebhookFormat,
    host: String,
    port: u16,
    /// The client and URL, or why there are none.
    ready: Result<(reqwest::Client, reqwest::Url), String>,
}

struct SyslogClient {
    target: String,
    address: Option<(String, u16)>,
    transport: SyslogTransport,
    tls: Option<Result<Arc<ClientConfig>, String>>,
}

/// Sends deliveries. Built once per settings; problems of one target (an unreadable `ca_file`,
/// a bad URL) are kept and reported when that target is used, so the others still work.
pub struct Dispatcher {
    lang: Lang,
    utc_offset_minutes: i32,
    digest_email: Vec<String>,
    /// The RFC 5424 HOSTNAME of our syslog messages.
    hostname: String,
    smtp: Option<Result<SmtpClient, (String, String)>>,
    webhooks: BTreeMap<String, WebhookClient>,
    syslog: BTreeMap<String, SyslogClient>,
}

impl Dispatcher {
    /// Reads the system roots and every `ca_file` now.
    pub fn new(settings: &Settings) -> Dispatcher {
        let roots = SystemRoots::load();
        let smtp = settings.smtp.as_ref().map(|s| {
            SmtpClient::new(s, &roots).map_err(|e| (format!("mail relay {}:{}", s.host, s.port), e))
        });
        let webhooks = settings
            .webhooks
            .iter()
            .map(|hook| {
                let url = reqwest::Url::parse(&hook.url);
                let (host, port) = url
                    .as_ref()
                    .map(|u| {
                        (
                            u.host_str().unwrap_or_default().to_string(),
                            u.port_or_known_default().unwrap_or(443),
                        )
                    })
                    .unwrap_or_default();
                let target = format!("webhook {:?} ({host})", hook.name);
                let ready = match url {
                    Err(e) => Err(format!("the url is not a URL: {e}")),
                    Ok(url) => webhook_http_client(hook.ca_file.as_deref(), &roots).map(|http| (http, url)),
                };
                let client = WebhookClient { target, format: hook.format, host, port, ready };
                (hook.name.clone(), client)
            })
            .collect();
        let syslog = settings
            .syslog
            .iter()
            .map(|target| {
                let transport = target.transport;
                let tls = (transport == SyslogTransport::Tls).then(|| {
                    let extra = match &target.ca_file {
                        Some(path) => tls::read_ca_file(path)?,
                        None => Vec::new(),
                    };
                    tls::client_config(&roots, &extra)
                });
                let kind = match transport {
                    SyslogTransport::Udp => "udp",
                    SyslogTransport::Tcp => "tcp",
                    SyslogTransport::Tls => "tls",
                };
                let client = SyslogClient {
                    target: format!("syslog {:?} ({kind} {})", target.name, target.address),
                    address: split_host_port(&target.address),
                    transport,
                    tls,
                };
                (target.name.clone(), client)
            })
            .collect();
        let hostname =
            hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "-".to_string());
        Dispatcher {
            lang: settings.lang,
            utc_offset_minutes: settings.digest.utc_offset_minutes,
            digest_email: settings.digest.email.clone(),
            hostname,
            smtp,
            webhooks,
            syslog,
        }
    }

    /// Sends `alert` through one delivery the [`crate::Router`] decided.
    pub async fn deliver(&self, delivery: &Delivery, alert: &Alert) -> Result<(), DeliveryError> {
        match delivery {
            Delivery::Email { to } => {
                let mail = render::alert_mail(alert, self.lang, self.utc_offset_minutes);
                self.smtp()?.send(to, &mail).await
            }
            Delivery::Webhook { name } => self.post_webhook(name, alert).await,
            Delivery::Syslog { name } => self.send_syslog(name, alert).await,
        }
    }

    /// Mails the digest to the digest recipients.
    pub async fn send_digest(&self, digest: &Digest) -> Result<(), DeliveryError> {
        let smtp = self.smtp()?;
        if self.digest_email.is_empty() {
            return Err(DeliveryError::NotConfigured {
                target: smtp.target(),
                detail: "digest.email names no recipient".into(),
            });
        }
        smtp.send(&self.digest_email, &render::digest_mail(digest)).await
    }

    /// Mails `mail` (with its attachments) to `to` through the configured relay: the monthly
    /// report uses this.
    pub async fn send_mail(&self, to: &[String], mail: &render::MailText) -> Result<(), DeliveryError> {
        self.smtp()?.send(to, mail).await
    }

    /// Sends a harmless test alert ("テスト通知" / "Test notification") through `channel`, for a
    /// settings page's "send test" button.
    pub async fn send_test(&self, channel: &Delivery) -> Result<(), DeliveryError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.deliver(channel, &render::test_alert(self.lang, now_ms)).await
    }

    fn smtp(&self) -> Result<&SmtpClient, DeliveryError> {
        match &self.smtp {
            Some(Ok(client)) => Ok(client),
            Some(Err((target, detail))) => {
                Err(DeliveryError::Setup { target: target.clone(), detail: detail.clone() })
            }
            None => Err(DeliveryError::NotConfigured {
                target: "mail".into(),
                detail: "there are no smtp settings".into(),
            }),
        }
    }

    async fn post_webhook(&self, name: &str, alert: &Alert) -> Result<(), DeliveryError> {
        let hook = self.webhooks.get(name).ok_or_else(|| DeliveryError::NotConfigured {
            target: format!("webhook {name:?}"),
            detail: "no webhook has this name".into(),
        })?;
        let target = &hook.target;
        let (http, url) = hook
            .ready
            .as_ref()
            .map_err(|e| DeliveryError::Setup { target: target.clone(), detail: e.clone() })?;
        let body = match hook.format {
            WebhookFormat::Json => json_payload(alert, self.lang),
            WebhookFormat::Slack => slack_payload(alert, self.lang, self.utc_offset_minutes),
            WebhookFormat::Teams => teams_payload(alert, self.lang, self.utc_offset_minutes),
        };
        let response = http.post(url.clone()).json(&body).send().await.map_err(|e| e.without_url());
        let response = match response {
            Ok(response) => response,
            Err(e) => return Err(http_error(target, &hook.host, hook.port, e).await),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = read_error_body(response).await;
        Err(DeliveryError::HttpStatus {
            target: target.clone(),
            host: hook.host.clone(),
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").to_string(),
            body: if body.is_empty() { String::new() } else { format!(": {body}") },
        })
    }

    async fn send_syslog(&self, name: &str, alert: &Alert) -> Result<(), DeliveryError> {
        let client = self.syslog.get(name).ok_or_else(|| DeliveryError::NotConfigured {
            target: format!("syslog {name:?}"),
            detail: "no syslog target has this name".into(),
        })?;
        let target = &client.target;
        let (host, port) = client.address.as_ref().ok_or_else(|| DeliveryError::NotConfigured {
            target: target.clone(),
            detail: "the address is not host:port".into(),
        })?;
        let timeout = Duration::from_secs(SYSLOG_TIMEOUT_S);
        let message = syslog_message(alert, &self.hostname);
        let addrs = resolve(target, host, *port, timeout).await?;
        match client.transport {
            SyslogTransport::Udp => {
                let mut last = None;
                for addr in &addrs {
                    let local: SocketAddr =
                        if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                    let sent = async {
                        let socket = UdpSocket::bind(local).await?;
                        socket.send_to(message.as_bytes(), addr).await
                    };
                    match with_timeout(target, "sending the datagram", SYSLOG_TIMEOUT_S, async {
                        sent.await.map_err(|e| DeliveryError::Other {
                            target: target.clone(),
                            detail: format!("sending to {addr}: {e}"),
                        })
                    })
                    .await
                    {
                        Ok(_) => return Ok(()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| DeliveryError::Dns {
                    target: target.clone(),
                    host: host.clone(),
                    detail: "no address".into(),
                }))
            }
            SyslogTransport::Tcp => {
                let mut tcp = connect_tcp(target, &addrs, timeout).await?;
                with_timeout(target, "sending the message", SYSLOG_TIMEOUT_S, async {
                    tcp.write_all(&syslog_frame(&message)).await?;
                    tcp.shutdown().await
                })
                .await
            }
            SyslogTransport::Tls => {
                let config = match &client.tls {
                    Some(Ok(config)) => config.clone(),
                    Some(Err(e)) => {
                        return Err(DeliveryError::Setup { target: target.clone(), detail: e.clone() })
                    }
                    None => {
                        return Err(DeliveryError::Other {
                            target: target.clone(),
                            detail: "no TLS setup".into(),
                        })
                    }
                };
                let server_name = ServerName::try_from(host.clone()).map_err(|_| DeliveryError::Tls {
                    target: target.clone(),
                    detail: format!("{host:?} is not a valid TLS server name"),
                })?;
                let tcp = connect_tcp(target, &addrs, timeout).await?;
                let connector = tokio_rustls::TlsConnector::from(config);
                let mut stream = with_timeout(target, "the TLS handshake", SYSLOG_TIMEOUT_S, async {
                    connector.connect(server_name, tcp).await.map_err(|e| DeliveryError::Tls {
                        target: target.clone(),
                        detail: find_rustls_error(&e)
                            .map_or_else(|| e.to_string(), |t| describe_tls_error(t, host)),
                    })
                })
                .await?;
                with_timeout(target, "sending the message", SYSLOG_TIMEOUT_S, async {
                    stream.write_all(&syslog_frame(&message)).await?;
                    stream.shutdown().await
                })
                .await
            }
        }
    }
}

fn webhook_http_client(
    ca_file: Option<&std::path::Path>,
    roots: &SystemRoots,
) -> Result<reqwest::Client, String> {
    let extra = match ca_file {
        Some(path) => tls::read_ca_file(path)?,
        None => Vec::new(),
    };
    let config = tls::client_config(roots, &extra)?;
    reqwest::Client::builder()
        .use_preconfigured_tls((*config).clone())
        .connect_timeout(Duration::from_secs(WEBHOOK_TIMEOUT_S))
        .timeout(Duration::from_secs(WEBHOOK_TIMEOUT_S))
        // A webhook that redirects is misconfigured or not the service it claims to be.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mamori/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTPS client: {}", error_chain(&e)))
}

async fn http_error(target: &str, host: &str, port: u16, err: reqwest::Error) -> DeliveryError {
    if err.is_timeout() {
        return DeliveryError::Timeout {
            target: target.into(),
            during: "the HTTP request".into(),
            seconds: WEBHOOK_TIMEOUT_S,
        };
    }
    if let Some(tls) = find_rustls_error(&err) {
        return DeliveryError::Tls { target: target.into(), detail: describe_tls_error(tls, host) };
    }
    if find_io_kind(&err) == Some(io::ErrorKind::ConnectionRefused) {
        return DeliveryError::ConnectionRefused { target: target.into(), address: format!("{host}:{port}") };
    }
    if err.is_connect() {
        // reqwest does not say which step of connecting failed; a lookup of our own tells DNS apart.
        if let Err(dns) = resolve(target, host, port, Duration::from_secs(WEBHOOK_TIMEOUT_S)).await {
            if matches!(dns, DeliveryError::Dns { .. }) {
                return dns;
            }
        }
        return DeliveryError::Connect {
            target: target.into(),
            address: format!("{host}:{port}"),
            detail: error_chain(&err),
        };
    }
    DeliveryError::Other { target: target.into(), detail: error_chain(&err) }
}

async fn read_error_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    let text = render::one_line(&String::from_utf8_lossy(&bytes));
    match text.char_indices().nth(MAX_ERROR_BODY_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// Looks `host` up, telling DNS failures apart from everything else.
pub(crate) async fn resolve(
    target: &str,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, DeliveryError> {
    let lookup = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await;
    let addrs: Vec<SocketAddr> = match lookup {
        Err(_) => {
            return Err(DeliveryError::Timeout {
                target: target.into(),
                during: format!("the DNS lookup of {host}"),
                seconds: timeout.as_secs(),
            })
        }
        Ok(Err(e)) => {
            return Err(DeliveryError::Dns {
                target: target.into(),
                host: host.into(),
                detail: e.to_string(),
            })
        }
        Ok(Ok(addrs)) => addrs.collect(),
    };
    if addrs.is_empty() {
        return Err(DeliveryError::Dns {
            target: target.into(),
            host: host.into(),
            detail: "no address".into(),
        });
    }
    Ok(addrs)
}

/// Connects to the first address that answers.
pub(crate) async fn connect_tcp(
    target: &str,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<TcpStream, DeliveryError> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = Some(DeliveryError::ConnectionRefused {
                    target: target.into(),
                    address: addr.to_string(),
                })
            }
            Ok(Err(e)) => {
                last = Some(DeliveryError::Connect {
                    target: target.into(),
                    address: addr.to_string(),
                    detail: e.to_string(),
                })
            }
            Err(_) => {
                last = Some(DeliveryError::Timeout {
                    target: target.into(),
                    during: format!("connecting to {addr}"),
                    seconds: timeout.as_secs(),
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| DeliveryError::Other {
        target: target.into(),
        detail: "no address to connect to".into(),
    }))
}

/// Runs one step with a deadline; I/O errors of the step become [`DeliveryError::Other`].
pub(crate) async fn with_timeout<T, E, F>(
    target: &str,
    during: &str,
    seconds: u64,
    step: F,
) -> Result<T, DeliveryError>
where
    F: Future<Output = Result<T, E>>,
    E: Into<StepError>,
{
    match tokio::time::timeout(Duration::from_secs(seconds), step).await {
        Err(_) => Err(DeliveryError::Timeout { target: target.into(), during: during.into(), seconds }),
        Ok(Err(e)) => Err(match e.into() {
            StepError::Delivery(e) => e,
            StepError::Io(e) => {
                DeliveryError::Other { target: target.into(), detail: format!("during {during}: {e}") }
            }
        }),
        Ok(Ok(value)) => Ok(value),
    }
}

/// What a step of [`with_timeout`] may fail with.
pub(crate) enum StepError {
    Delivery(DeliveryError),
    Io(io::Error),
}

impl From<DeliveryError> for StepError {
    fn from(e: DeliveryError) -> Self {
        StepError::Delivery(e)
    }
}

impl From<io::Error> for StepError {
    fn from(e: io::Error) -> Self {
        StepError::Io(e)
    }
}

/// `error: cause: cause`, each message once (libraries often repeat their source in Display).
pub(crate) fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        current = e.source();
    }
    out
}

fn find_io_kind(err: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() != io::ErrorKind::Other {
                return Some(io.kind());
            }
        }
        current = e.source();
    }
    None
}

/// Standard base64 with padding (only for recognising an echoed secret).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn scrubbing_removes_the_secret_and_its_base64() {
        let e = DeliveryError::AuthRejected {
            target: "mail relay h:587".into(),
            reply: "535 bad credentials hunter2 aHVudGVyMg==".into(),
        };
        let text = e.scrubbed("hunter2").to_string();
        assert!(!text.contains("hunter2") && !text.contains("aHVudGVyMg=="), "{text}");
        assert!(text.contains("authentication failed"));
    }

    #[test]
    fn retryable_separates_transient_from_configuration_problems() {
        let t = || "t".to_string();
        assert!(DeliveryError::Timeout { target: t(), during: t(), seconds: 1 }.retryable());
        assert!(DeliveryError::Refused { target: t(), during: t(), code: 451, reply: t() }.retryable());
        assert!(!DeliveryError::Refused { target: t(), during: t(), code: 550, reply: t() }.retryable());
        assert!(!DeliveryError::AuthRejected { target: t(), reply: t() }.retryable());
        let http =
            |status| DeliveryError::HttpStatus { target: t(), host: t(), status, reason: t(), body: t() };
        assert!(http(503).retryable() && http(429).retryable() && !http(404).retryable());
    }
}
