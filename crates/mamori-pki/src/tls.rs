//! TLS 1.3-only rustls configurations for the manager (server) and the agents (clients).
//!
//! Both sides use the `ring` provider explicitly rather than the process-wide default, so the
//! result does not depend on which other crates happen to install a provider.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, CommonState, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

use crate::{cert_info, certs_from_pem, fingerprint_of_der, CertInfo, Error};

/// Whether the server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Handshakes without a valid, unrevoked client certificate fail.
    Required,
    /// For the enrollment route, where the agent has no certificate yet. A certificate that is
    /// presented is still fully verified (and checked for revocation); the application must
    /// check per route that one was presented, using [`peer_info`].
    Optional,
}

/// Callback deciding whether a (CA-verified) client certificate is revoked.
pub type RevocationCheck = Arc<dyn Fn(&CertInfo) -> bool + Send + Sync>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn ca_roots(ca_der: &[u8]) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    Ok(Arc::new(roots))
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::InvalidKey(e.to_string()))
}

/// TLS 1.3-only server configuration.
///
/// Client certificates are verified against `ca_der` (webpki: signature, validity period, EKU
/// clientAuth), then `is_revoked` is called on every handshake; `true` fails the handshake. The
/// server sends `[leaf, CA]` so an enrolling agent can find and pin the CA.
pub fn server_config(
    ca_der: &[u8],
    server: &crate::KeyAndCert,
    auth: ClientAuth,
    is_revoked: RevocationCheck,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = provider();
    let builder = WebPkiClientVerifier::builder_with_provider(ca_roots(ca_der)?, provider.clone());
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    let verifier = Arc::new(RevocationCheckingVerifier { inner: builder.build()?, is_revoked });

    let mut chain: Vec<CertificateDer<'static>> =
        certs_from_pem(&server.cert_pem)?.into_iter().map(CertificateDer::from).collect();
    if chain.is_empty() {
        return Err(Error::InvalidPem("server certificate PEM contains no certificate".into()));
    }
    if !chain.iter().any(|c| c.as_ref() == ca_der) {
        chain.push(CertificateDer::from(ca_der.to_vec()));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key(&server.key_pem)?)?;
    // A resumed TLS 1.3 session skips client certificate verification, so a certificate revoked
    // after the first connection could keep resuming. No tickets and no session cache means
    // every connection is a full handshake that reaches the revocation check.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// TLS 1.3-only server configuration for browsers (the web console): no client certificates
/// are asked for, so a browser never shows a certificate picker. The chain is `[leaf, CA]`.
pub fn browser_server_config(
    ca_der: &[u8],
    server: &crate::KeyAndCert,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut chain: Vec<CertificateDer<'static>> =
        certs_from_pem(&server.cert_pem)?.into_iter().map(CertificateDer::from).collect();
    if chain.is_empty() {
        return Err(Error::InvalidPem("server certificate PEM contains no certificate".into()));
    }
    if !chain.iter().any(|c| c.as_ref() == ca_der) {
        chain.push(CertificateDer::from(ca_der.to_vec()));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, private_key(&server.key_pem)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS 1.3-only client configuration that trusts only a server whose chain contains the CA
/// certificate with SHA-256 fingerprint `pinned_ca_fingerprint`, and whose leaf verifies against
/// that CA for the requested server name. No system roots, no trust on first use.
///
/// `identity` (certificate PEM + key PEM) is presented for mutual TLS when given.
pub fn client_config(
    pinned_ca_fingerprint: &str,
    identity: Option<&crate::KeyAndCert>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let pinned = parse_fingerprint(pinned_ca_fingerprint)?;
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier {
        pinned,
        provider: provider.clone(),
        algs: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain: Vec<CertificateDer<'static>> =
                certs_from_pem(&id.cert_pem)?.into_iter().map(CertificateDer::from).collect();
            if chain.is_empty() {
                return Err(Error::InvalidPem("client certificate PEM contains no certificate".into()));
            }
            builder.with_client_auth_cert(chain, private_key(&id.key_pem)?)?
        }
    };
    // Our server never resumes (see server_config); not caching tickets keeps every connection a
    // full handshake that re-checks the pinned chain as well.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// After a handshake: the peer's leaf certificate details. On the server this is the verified
/// client certificate (None if the client presented none, possible only with
/// [`ClientAuth::Optional`]).
pub fn peer_info(conn: &CommonState) -> Option<CertInfo> {
    let leaf = conn.peer_certificates()?.first()?;
    cert_info(leaf.as_ref()).ok()
}

fn parse_fingerprint(s: &str) -> Result<[u8; 32], Error> {
    let s = s.trim();
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| Error::InvalidFingerprint)?;
    Ok(out)
}

/// webpki verification followed by the application's revocation check.
struct RevocationCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    is_revoked: RevocationCheck,
}

impl std::fmt::Debug for RevocationCheckingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationCheckingVerifier").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl ClientCertVerifier for RevocationCheckingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        // Only after the chain is verified: the callback may hit a database, and unauthenticated
        // input should not get that far.
        let info = cert_info(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if (self.is_revoked)(&info) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts a server only if it presents the pinned CA in its chain and the leaf verifies
/// against that CA alone. The CA certificate comes from the server, but since its hash must equal
/// the pin, the server cannot substitute a different one.
#[derive(Debug)]
struct PinnedCaVerifier {
    pinned: [u8; 32],
    provider: Arc<CryptoProvider>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned_hex = hex::encode(self.pinned);
        let ca = intermediates
            .iter()
            .find(|c| fingerprint_of_der(c.as_ref()) == pinned_hex)
            .ok_or(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        let others: Vec<CertificateDer<'_>> =
            intermediates.iter().filter(|c| c.as_ref() != ca.as_ref()).cloned().collect();
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("building pinned verifier: {e}")))?;
        inner.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
