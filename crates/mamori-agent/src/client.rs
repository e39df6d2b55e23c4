//! HTTPS to the manager: a reqwest client on the pinned TLS 1.3 configuration, JSON in and out,
//! and errors turned into something a person can act on.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use mamori_pki::{CertInfo, DeviceKey, KeyAndCert};
use mamori_proto::ApiError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::{AlertDescription, CertificateError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Error bodies are for people; a manager (or something pretending to be one) sending more is
/// not worth reading.
const MAX_ERROR_BODY: usize = 4096;

/// A connection to one manager, optionally with our client certificate.
#[derive(Clone)]
pub(crate) struct ManagerClient {
    base: String,
    pinned: String,
    http: reqwest::Client,
}

impl ManagerClient {
    /// `base` must already be a normalised https URL and `pinned` a normalised fingerprint.
    pub(crate) fn new(base: &str, pinned: &str, identity: Option<&KeyAndCert>) -> Result<Self, Error> {
        let tls = mamori_pki::tls::client_config(pinned, identity)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .https_only(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("mamori-agent/", env!("CARGO_PKG_VERSION")))
            // The manager is ours; following a redirect could only lead somewhere it is not.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("building the HTTPS client: {}", chain(&e))))?;
        Ok(ManagerClient { base: base.to_string(), pinned: pinned.to_string(), http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub(crate) async fn post_json<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Internal(e.to_string()))?;
        self.post_bytes(path, body).await
    }

    /// POSTs an already serialised JSON body.
    pub(crate) async fn post_bytes<Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Resp, Error> {
        let req = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(path, req).await
    }

    pub(crate) async fn get_json<Resp: DeserializeOwned>(&self, path: &str) -> Result<Resp, Error> {
        let req = self.http.get(self.url(path));
        self.send(path, req).await
    }

    async fn send<Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<Resp, Error> {
        let resp = req.send().await.map_err(|e| self.classify(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.classify(&e))?;
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &bytes));
        }
        // An empty success body reads as JSON `null` (fine for callers that want no reply).
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(body)
            .map_err(|e| Error::Protocol { what: path.to_string(), reason: e.to_string() })
    }

    /// Sorts a failed request into "wrong manager", "we were refused" and "could not reach".
    fn classify(&self, err: &reqwest::Error) -> Error {
        let url = self.base.clone();
        match find_rustls_error(err) {
            Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                Error::CaMismatch { url, pinned: self.pinned.clone() }
            }
            Some(rustls::Error::InvalidCertificate(e)) => {
                Error::ServerCertificate { url, reason: format!("{e:?}") }
            }
            Some(rustls::Error::AlertReceived(alert)) if refuses_our_certificate(*alert) => {
                Error::CertificateRefused { reason: format!("TLS alert {alert:?}") }
            }
            _ => Error::Transport { url, message: chain(err) },
        }
    }
}

/// TLS alerts a server sends when it does not accept the client certificate.
fn refuses_our_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::CertificateRevoked
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::AccessDenied
            | AlertDescription::UnsupportedCertificate
    )
}

fn api_error(status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => Error::Api { status, code: e.error, message: e.message },
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]).trim().to_string();
            let message = if text.is_empty() { "(no details)".to_string() } else { text };
            Error::Api { status, code: format!("http_{status}"), message }
        }
    }
}

/// The rustls error behind a request failure, if any. `io::Error::source` skips the error it
/// wraps, so wrapped errors are looked into explicitly.
fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = find_rustls_error(inner) {
                    return Some(r);
                }
            }
        }
        cur = e.source();
    }
    None
}

/// "a: b: c" from an error and its sources, without repeating a message a wrapper copied.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Checks a certificate the manager issued to us: it is for our key, it verifies as a client
/// certificate against the pinned CA (signature, validity, clientAuth), and it names the
/// expected device (when one is expected). Returns its details.
pub(crate) fn verify_issued(
    what: &str,
    cert_pem: &str,
    key: &DeviceKey,
    ca_der: &[u8],
    expected_device: Option<&str>,
) -> Result<CertInfo, Error> {
    let bad = |reason: String| Error::Protocol { what: what.to_string(), reason };
    let der = mamori_pki::pem_to_der(cert_pem).map_err(|e| bad(format!("certificate: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    key_matches_cert(&der, key)
        .map_err(|e| bad(format!("the certificate is not for this agent's key ({e})")))?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).map_err(|e| bad(format!("CA certificate: {e}")))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| Error::Internal(format!("building a certificate verifier: {e}")))?;
    verifier
        .verify_client_cert(&CertificateDer::from(der.clone()), &[], UnixTime::now())
        .map_err(|e| bad(format!("the certificate does not verify against the pinned CA: {e}")))?;

    let info = mamori_pki::cert_info(&der).map_err(|e| bad(e.to_string()))?;
    let Some(device_id) = info.device_id.as_deref() else {
        return Err(bad("the certificate names no device id".into()));
    };
    if let Some(expected) = expected_device {
        if device_id != expected {
            return Err(bad(format!("the certificate is for device {device_id}, expected {expected}")));
        }
    }
    Ok(info)
}

/// Whether `cert_der` certifies `key`'s public key.
pub(crate) fn key_matches_cert(cert_der: &[u8], key: &DeviceKey) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    let key_der = PrivateKeyDer::from_pem_slice(key.key_pem().as_bytes()).map_err(|e| e.to_string())?;
    rustls::sign::CertifiedKey::from_der(vec![CertificateDer::from(cert_der.to_vec())], key_der, &provider)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_the_managers_message() {
        let body = br#"{"error":"token_expired","message":"this enrollment token expired"}"#;
        let e = api_error(401, body);
        assert!(matches!(&e, Error::Api { status: 401, code, .. } if code == "token_expired"));
        assert!(e.to_string().contains("this enrollment token expired"), "{e}");
        let e = api_error(502, b"<html>bad gateway</html>");
        assert!(e.to_string().contains("502") && e.to_string().contains("bad gateway"), "{e}");
        let huge = vec![b'x'; 100_000];
        assert!(api_error(500, &huge).to_string().len() < MAX_ERROR_BODY + 200);
    }

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        let inner = rustls::Error::AlertReceived(AlertDescription::CertificateRevoked);
        let io = std::io::Error::other(inner);
        let found = find_rustls_error(&io);
        assert!(matches!(found, Some(rustls::Error::AlertReceived(AlertDescription::CertificateRevoked))));
        assert!(find_rustls_error(&std::io::Error::other("plain")).is_none());
    }
}
