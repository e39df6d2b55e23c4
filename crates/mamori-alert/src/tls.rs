//! Trust for outgoing TLS (mail relay, webhooks, syslog): the system's roots (webpki's Mozilla
//! roots when the system has none), plus a per-target `ca_file`; and rustls errors told in words.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// The roots every connection trusts.
#[derive(Debug, Clone)]
pub(crate) struct SystemRoots {
    /// The system's certificates that rustls can use; empty means "use webpki-roots".
    native: Vec<CertificateDer<'static>>,
}

impl SystemRoots {
    pub(crate) fn load() -> SystemRoots {
        let found = rustls_native_certs::load_native_certs();
        // Only certificates rustls accepts: lettre refuses a whole store over one odd certificate.
        let native =
            found.certs.into_iter().filter(|cert| RootCertStore::empty().add(cert.clone()).is_ok()).collect();
        SystemRoots { native }
    }

    fn store(&self) -> RootCertStore {
        let mut store = RootCertStore::empty();
        if self.native.is_empty() {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            store.add_parsable_certificates(self.native.iter().cloned());
        }
        store
    }
}

/// The certificates of a PEM file, for `ca_file`.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file {} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("ca_file {} holds no certificate", path.display()));
    }
    for cert in &certs {
        RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| format!("ca_file {} has a certificate rustls cannot use: {e}", path.display()))?;
    }
    Ok(certs)
}

/// TLS 1.3 or 1.2 with the ring provider, trusting the system roots and `extra`.
pub(crate) fn client_config(
    system: &SystemRoots,
    extra: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = system.store();
    for cert in extra {
        roots.add(cert.clone()).map_err(|e| format!("unusable extra CA certificate: {e}"))?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The same trust for lettre's STARTTLS upgrade, which builds its own rustls configuration.
pub(crate) fn lettre_tls_parameters(
    domain: &str,
    system: &SystemRoots,
    extra: &[CertificateDer<'static>],
) -> Result<lettre::transport::smtp::client::TlsParameters, String> {
    use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
    let store = if system.native.is_empty() { CertificateStore::WebpkiRoots } else { CertificateStore::None };
    let mut builder = TlsParameters::builder(domain.to_string()).certificate_store(store);
    for cert in system.native.iter().chain(extra) {
        let cert = Certificate::from_der(cert.to_vec()).map_err(|e| format!("TLS setup: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build_rustls().map_err(|e| format!("TLS setup: {e}"))
}

/// The rustls error somewhere in `err`'s chain. `io::Error` hides its payload from `source()`,
/// so it is looked into with `get_ref`.
pub(crate) fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = find_rustls_error(inner) {
                    return Some(found);
                }
            }
        }
        current = e.source();
    }
    None
}

/// Why a TLS handshake failed, for a person who has to fix it.
pub(crate) fn describe_tls_error(err: &rustls::Error, host: &str) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => format!(
                "certificate not trusted: {host}'s certificate is not signed by a trusted CA \
                 (for a site's own CA, set ca_file)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate not valid for the name {host:?} ({err})")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("certificate expired ({err})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("certificate not valid yet: check this machine's clock ({err})")
            }
            CertificateError::Revoked => "certificate revoked".into(),
            _ => format!("certificate rejected: {err}"),
        },
        rustls::Error::InvalidMessage(_) => {
            format!("{host} did not answer with TLS ({err}): is this a plaintext or STARTTLS port?")
        }
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the handshake (TLS alert {alert:?})")
        }
        rustls::Error::PeerIncompatible(_) => {
            format!("no TLS version or cipher suite in common with the server ({err})")
        }
        _ => err.to_string(),
    }
}
