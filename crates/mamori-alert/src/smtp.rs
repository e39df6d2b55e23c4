//! One mail over SMTP with lettre's connection, step by step, so that each failure says where it
//! happened: DNS, TCP connect, TLS (implicit or STARTTLS), AUTH, or the message itself.
//!
//! The TCP connection and implicit TLS are ours (tokio + rustls), so DNS, refusal and certificate
//! problems are told apart; STARTTLS is lettre's upgrade with the same trust.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment as LettreAttachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::dispatch::{connect_tcp, error_chain, resolve, with_timeout, DeliveryError};
use crate::render::MailText;
use crate::settings::{SmtpSecurity, SmtpSettings};
use crate::tls::{self, describe_tls_error, find_rustls_error, SystemRoots};

/// A configured mail relay, ready to send.
pub(crate) struct SmtpClient {
    settings: SmtpSettings,
    from: Mailbox,
    /// For implicit TLS (our handshake).
    tls_config: Arc<ClientConfig>,
    /// For STARTTLS (lettre's upgrade).
    starttls: TlsParameters,
}

impl SmtpClient {
    pub(crate) fn new(settings: &SmtpSettings, roots: &SystemRoots) -> Result<SmtpClient, String> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|_| format!("smtp.from {:?} is not a mail address", settings.from))?;
        let extra = match &settings.ca_file {
            Some(path) => tls::read_ca_file(path)?,
            None => Vec::new(),
        };
        Ok(SmtpClient {
            settings: settings.clone(),
            from,
            tls_config: tls::client_config(roots, &extra)?,
            starttls: tls::lettre_tls_parameters(&settings.host, roots, &extra)?,
        })
    }

    pub(crate) fn target(&self) -> String {
        format!("mail relay {}:{}", self.settings.host, self.settings.port)
    }

    /// Sends `mail` to `to` (one message, all recipients in To).
    pub(crate) async fn send(&self, to: &[String], mail: &MailText) -> Result<(), DeliveryError> {
        let result = self.send_inner(to, mail).await;
        // Nothing we write contains the password, but a server reply might echo what it got.
        result.map_err(|e| match &self.settings.password {
            Some(password) => e.scrubbed(password),
            None => e,
        })
    }

    async fn send_inner(&self, to: &[String], mail: &MailText) -> Result<(), DeliveryError> {
        let target = self.target();
        let message = self
            .build_message(to, mail)
            .map_err(|detail| DeliveryError::Other { target: target.clone(), detail })?;
        let envelope = message.envelope().clone();
        let raw = message.formatted();

        let s = &self.settings;
        let timeout = Duration::from_secs(s.timeout_s);
        let addrs = resolve(&target, &s.host, s.port, timeout).await?;
        let tcp = connect_tcp(&target, &addrs, timeout).await?;
        let hello = ClientId::default();
        let mut conn = match s.security {
            SmtpSecurity::Tls => {
                let server_name = ServerName::try_from(s.host.clone()).map_err(|_| DeliveryError::Tls {
                    target: target.clone(),
                    detail: format!("{:?} is not a valid TLS server name", s.host),
                })?;
                let connector = tokio_rustls::TlsConnector::from(self.tls_config.clone());
                let stream = with_timeout(&target, "the TLS handshake", s.timeout_s, async {
                    connector
                        .connect(server_name, tcp)
                        .await
                        .map_err(|e| handshake_error(&target, &s.host, &e))
                })
                .await?;
                with_timeout(&target, "waiting for the server greeting", s.timeout_s, async {
                    AsyncSmtpConnection::connect_with_transport(Box::new(ImplicitTls(stream)), &hello)
                        .await
                        .map_err(|e| smtp_error(&target, &s.host, "the greeting", &e))
                })
                .await?
            }
            SmtpSecurity::Starttls | SmtpSecurity::None => {
                with_timeout(&target, "waiting for the server greeting", s.timeout_s, async {
                    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
                        .await
                        .map_err(|e| smtp_error(&target, &s.host, "the greeting", &e))
                })
                .await?
            }
        };
        let result = self.converse(&mut conn, &hello, &envelope, &raw).await;
        // The message is in (or refused) already; a slow goodbye is not worth an error.
        let goodbye = Duration::from_secs(s.timeout_s);
        if result.is_ok() {
            let _ = tokio::time::timeout(goodbye, conn.quit()).await;
        } else {
            let _ = tokio::time::timeout(goodbye, conn.abort()).await;
        }
        result
    }

    async fn converse(
        &self,
        conn: &mut AsyncSmtpConnection,
        hello: &ClientId,
        envelope: &lettre::address::Envelope,
        raw: &[u8],
    ) -> Result<(), DeliveryError> {
        let target = self.target();
        let s = &self.settings;
        if s.security == SmtpSecurity::Starttls {
            if !conn.can_starttls() {
                return Err(DeliveryError::Tls {
                    target,
                    detail: "the server does not offer STARTTLS; refusing to send in plaintext".into(),
                });
            }
            with_timeout(&target, "STARTTLS", s.timeout_s, async {
                conn.starttls(self.starttls.clone(), hello)
                    .await
                    .map_err(|e| smtp_error(&target, &s.host, "STARTTLS", &e))
            })
            .await?;
        }
        if let Some(username) = &s.username {
            if s.security == SmtpSecurity::None {
                return Err(DeliveryError::NotConfigured {
                    target,
                    detail: "AUTH over plaintext is refused: use security \"starttls\" or \"tls\"".into(),
                });
            }
            let credentials = Credentials::new(username.clone(), s.password.clone().unwrap_or_default());
            with_timeout(&target, "AUTH", s.timeout_s, async {
                conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials).await.map_err(|e| {
                    match reply_of(&e) {
                        Some(reply) => DeliveryError::AuthRejected { target: target.clone(), reply },
                        None if e.is_client() => DeliveryError::Other {
                            target: target.clone(),
                            detail: format!(
                                "authentication failed: the server offers neither AUTH PLAIN nor AUTH LOGIN ({})",
                                error_chain(&e)
                            ),
                        },
                        None => smtp_error(&target, &s.host, "AUTH", &e),
                    }
                })
            })
            .await?;
        }
        with_timeout(&target, "sending the message", s.timeout_s, async {
            conn.send(envelope, raw).await.map_err(|e| smtp_error(&target, &s.host, "the message", &e))
        })
        .await?;
        Ok(())
    }

    fn build_message(&self, to: &[String], mail: &MailText) -> Result<Message, String> {
        if to.is_empty() {
            return Err("no recipient".into());
        }
        let mut builder = Message::builder().from(self.from.clone());
        for address in to {
            let mailbox: Mailbox =
                address.parse().map_err(|_| format!("{address:?} is not a mail address"))?;
            builder = builder.to(mailbox);
        }
        let builder = builder
            .subject(mail.subject.clone())
            .message_id(None)
            .user_agent(concat!("mamori/", env!("CARGO_PKG_VERSION")).to_string());
        if mail.attachments.is_empty() {
            return builder
                .header(ContentType::TEXT_PLAIN)
                .body(mail.body.clone())
                .map_err(|e| format!("cannot build the message: {e}"));
        }
        let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(mail.body.clone()));
        for a in &mail.attachments {
            let content_type = ContentType::parse(&a.content_type)
                .map_err(|_| format!("{:?} is not a content type", a.content_type))?;
            parts = parts
                .singlepart(LettreAttachment::new(a.filename.clone()).body(a.bytes.clone(), content_type));
        }
        builder.multipart(parts).map_err(|e| format!("cannot build the message: {e}"))
    }
}

/// `535 5.7.8 Authentication credentials invalid` from a negative reply.
fn reply_of(err: &lettre::transport::smtp::Error) -> Option<String> {
    let code = err.status()?;
    let text = err.source().map(|s| s.to_string()).unwrap_or_default();
    Some(format!("{code} {text}").trim().to_string())
}

fn smtp_error(target: &str, host: &str, during: &str, err: &lettre::transport::smtp::Error) -> DeliveryError {
    if let Some(tls) = find_rustls_error(err) {
        return DeliveryError::Tls { target: target.into(), detail: describe_tls_error(tls, host) };
    }
    if let (Some(code), Some(reply)) = (err.status(), reply_of(err)) {
        return DeliveryError::Refused {
            target: target.into(),
            during: during.into(),
            code: code.to_string().parse().unwrap_or_default(),
            reply,
        };
    }
    DeliveryError::Other { target: target.into(), detail: format!("during {during}: {}", error_chain(err)) }
}

fn handshake_error(target: &str, host: &str, err: &io::Error) -> DeliveryError {
    match find_rustls_error(err) {
        Some(tls) => DeliveryError::Tls { target: target.into(), detail: describe_tls_error(tls, host) },
        None => DeliveryError::Tls { target: target.into(), detail: err.to_string() },
    }
}

/// Our implicit-TLS stream, handed to lettre as an already connected transport.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}
