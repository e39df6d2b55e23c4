//! Certificate authority, agent credentials and TLS 1.3 mutual authentication for mamori.
//!
//! The manager runs a small internal CA ([`Ca`]). An agent enrolls like this:
//!
//! 1. An administrator creates a one-time enrollment token ([`generate_token`]); the manager keeps
//!    only its SHA-256 ([`NewToken::hash`]) and checks presented secrets with [`token_matches`].
//! 2. The agent is given the token and the CA fingerprint ([`Ca::fingerprint`]) out of band. It
//!    connects with [`tls::client_config`], which accepts the manager only if the manager's chain
//!    ends in the CA with exactly that fingerprint: there is no trust on first use.
//! 3. The agent creates its key locally ([`DeviceKey::generate`]); the private key never leaves
//!    the host. It sends [`DeviceKey::csr_pem`] together with the token.
//! 4. The manager signs the CSR with [`Ca::sign_csr`]. Everything the agent asked for in the CSR
//!    except the public key is ignored: the identity in the certificate is the device id the
//!    manager chose. Certificates are short-lived (7 days by default, [`DEFAULT_CLIENT_VALIDITY`])
//!    so that revocation mostly takes care of itself, and the revocation callback covers the rest.
//! 5. From then on every agent connection is TLS 1.3 with a client certificate that is verified
//!    against the CA and passed to a revocation callback on every handshake
//!    ([`tls::server_config`]); the application reads the device id with [`tls::peer_info`].
//!
//! This crate does no networking, no storage beyond the key files it is asked to manage, and no
//! logging of secrets. All keys are ECDSA P-256.

#![forbid(unsafe_code)]

mod ca;
mod device;
pub mod fsutil;
pub mod tls;
mod token;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub use ca::{Ca, IssuedCert, KeyAndCert};
pub use device::{new_device_id, DeviceKey};
pub use token::{generate_token, hash_token, token_matches, NewToken};

/// Default lifetime of an agent client certificate.
pub const DEFAULT_CLIENT_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Prefix of the URI subject alternative name that carries the device id.
pub const DEVICE_URI_PREFIX: &str = "urn:mamori:device:";

/// Errors from this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is accessible by group or others (mode {mode:o}); it must be 0600")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("{0} is a symbolic link; refusing to use it for key material")]
    Symlink(PathBuf),
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("CA key {key} exists but certificate {cert} is missing")]
    MissingCaCert { key: PathBuf, cert: PathBuf },
    #[error("CA certificate does not match the CA private key")]
    CaKeyMismatch,
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    #[error("invalid PEM: {0}")]
    InvalidPem(String),
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    #[error("invalid device id {0:?}: use 1-128 characters from [A-Za-z0-9._-]")]
    InvalidDeviceId(String),
    #[error("invalid server name {0:?}")]
    InvalidName(String),
    #[error("no server names given")]
    NoNames,
    #[error("invalid CA fingerprint: expected 64 hexadecimal characters")]
    InvalidFingerprint,
    #[error("invalid validity period: {0}")]
    InvalidValidity(String),
    #[error("TLS configuration error: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS verifier configuration error: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// What the application needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number as lowercase hex of the DER INTEGER contents.
    pub serial_hex: String,
    /// Device id from the `urn:mamori:device:<id>` URI SAN, if present.
    pub device_id: Option<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Lowercase hex SHA-256 of the certificate DER.
    pub fingerprint: String,
    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER, the same value as
    /// [`DeviceKey::public_key_fingerprint`]: equal across renewals of one device's key.
    pub public_key_fingerprint: String,
}

/// Parses a DER certificate into [`CertInfo`]. Does not verify anything.
pub fn cert_info(cert_der: &[u8]) -> Result<CertInfo, Error> {
    let (rest, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::InvalidCertificate("trailing data after certificate".into()));
    }
    // A certificate with two device URIs would be ambiguous; we never issue one, so treat it as
    // having no device id rather than guessing which one counts.
    let mut device_ids = Vec::new();
    let san = cert.subject_alternative_name().map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if let Some(id) = uri.strip_prefix(DEVICE_URI_PREFIX) {
                    device_ids.push(id.to_string());
                }
            }
        }
    }
    let device_id = if device_ids.len() == 1 { device_ids.pop() } else { None };
    let validity = cert.validity();
    Ok(CertInfo {
        serial_hex: hex::encode(cert.raw_serial()),
        device_id,
        not_before: unix_to_system(validity.not_before.timestamp()),
        not_after: unix_to_system(validity.not_after.timestamp()),
        fingerprint: fingerprint_of_der(cert_der),
        public_key_fingerprint: fingerprint_of_der(cert.public_key().raw),
    })
}

fn unix_to_system(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Extracts the first certificate from PEM text as DER.
pub fn pem_to_der(cert_pem: &str) -> Result<Vec<u8>, Error> {
    certs_from_pem(cert_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::InvalidPem("no CERTIFICATE block found".into()))
}

/// All CERTIFICATE blocks in `pem`, in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| Error::InvalidPem(e.to_string())))
        .collect()
}

/// Lowercase hex SHA-256 of `der`.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The id goes into a URN and a CN; restricting the alphabet keeps it from smuggling in
/// separators or anything a log viewer or a later parser could misread.
pub(crate) fn validate_device_id(device_id: &str) -> Result<(), Error> {
    let ok = !device_id.is_empty()
        && device_id.len() <= 128
        && device_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidDeviceId(device_id.to_string()))
    }
}
