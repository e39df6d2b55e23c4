//! The manager's certificate authority.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{cert_info, fingerprint_of_der, fsutil, validate_device_id, CertInfo, Error, DEVICE_URI_PREFIX};

const CA_KEY_FILE: &str = "ca.key";
const CA_CERT_FILE: &str = "ca.crt";
/// The CA is pinned by fingerprint on every agent, so replacing it means re-enrolling the fleet;
/// give it a long life.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 60 * 60);
/// Tolerates clocks on agents that run a little behind the manager.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A private key and certificate in PEM form.
#[derive(Clone)]
pub struct KeyAndCert {
    pub key_pem: String,
    /// The leaf certificate, optionally followed by its chain.
    pub cert_pem: String,
}

impl std::fmt::Debug for KeyAndCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCert")
            .field("key_pem", &"[redacted]")
            .field("cert_pem", &self.cert_pem)
            .finish()
    }
}

/// A certificate issued to an agent.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub info: CertInfo,
}

/// The CA certificate and its ECDSA P-256 key.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    fingerprint: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `dir/ca.key` and `dir/ca.crt`, or creates both if `ca.key` does not exist.
    /// Returns `true` as the second value when the CA was created.
    ///
    /// The key is created with `O_EXCL` and mode 0600, so two processes racing here cannot both
    /// believe they created the CA. Loading refuses a key that is a symlink or group/other
    /// accessible.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<(Ca, bool), Error> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        match std::fs::symlink_metadata(&key_path) {
            Ok(_) => Ok((Self::load(&key_path, &cert_path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok((Self::create(&key_path, &cert_path, name)?, true))
            }
            Err(source) => Err(Error::Io { path: key_path, source }),
        }
    }

    fn create(key_path: &Path, cert_path: &Path, name: &str) -> Result<Ca, Error> {
        if let Some(dir) = key_path.parent() {
            fsutil::create_private_dir(dir)?;
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(now));
        params.not_after = to_offset(checked_add(now, CA_VALIDITY)?);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        // Key first: if we crash between the two writes the next start reports a missing
        // certificate instead of silently generating a second CA under the same directory.
        fsutil::create_private_exclusive(key_path, key.serialize_pem().as_bytes())?;
        fsutil::write_atomic(cert_path, cert_pem.as_bytes(), false)?;
        let cert_der = cert.der().to_vec();
        Ok(Ca {
            fingerprint: fingerprint_of_der(&cert_der),
            cert_pem,
            cert_der,
            issuer: Issuer::new(params, key),
        })
    }

    fn load(key_path: &Path, cert_path: &Path) -> Result<Ca, Error> {
        let key_pem = fsutil::read_private(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::InvalidKey(e.to_string()))?;
        let cert_pem = match std::fs::read_to_string(cert_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingCaCert {
                    key: key_path.to_path_buf(),
                    cert: cert_path.to_path_buf(),
                })
            }
            Err(source) => return Err(Error::Io { path: cert_path.to_path_buf(), source }),
        };
        let cert_der = crate::pem_to_der(&cert_pem)?;
        let (_, x509) =
            X509Certificate::from_der(&cert_der).map_err(|e| Error::InvalidCertificate(e.to_string()))?;
        // A swapped ca.crt would make us hand out certificates nobody can verify, or worse, make
        // agents pin a CA whose key we do not hold.
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(Error::CaKeyMismatch);
        }
        if !x509.is_ca() {
            return Err(Error::InvalidCertificate(format!(
                "{} is not a CA certificate",
                cert_path.display()
            )));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)?;
        Ok(Ca { fingerprint: fingerprint_of_der(&cert_der), cert_pem, cert_der, issuer })
    }

    /// Lowercase hex SHA-256 of the CA certificate DER; this is what agents pin.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The manager's own server certificate for `names` (DNS names and/or IP literals); the key
    /// is generated here. The returned `cert_pem` holds only the leaf; [`crate::tls::server_config`]
    /// appends the CA.
    pub fn issue_server(&self, names: &[String], validity: Duration) -> Result<KeyAndCert, Error> {
        let first = names.first().ok_or(Error::NoNames)?;
        for n in names {
            if n.is_empty() || n.len() > 253 || n.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(Error::InvalidName(n.clone()));
            }
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = dn(first);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(now));
        params.not_after = to_offset(checked_add(now, validity)?);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(KeyAndCert { key_pem: key.serialize_pem(), cert_pem: cert.pem() })
    }

    /// Signs an agent CSR after verifying its self-signature (proof that the requester holds the
    /// key). Only the public key is taken from the CSR: subject, SANs and extensions the agent
    /// asked for are ignored, and the certificate names exactly `device_id` (CN and SAN URI
    /// `urn:mamori:device:<device_id>`), with EKU clientAuth and a random serial.
    pub fn sign_csr(&self, csr_pem: &str, device_id: &str, validity: Duration) -> Result<IssuedCert, Error> {
        let now = SystemTime::now();
        let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
        let not_after = checked_add(now, validity)?;
        self.sign_csr_window(csr_pem, device_id, not_before, not_after)
    }

    /// The DNS names and IP addresses a service CSR asks for (shown to the administrator
    /// before signing). Verifies the CSR's signature.
    pub fn csr_names(csr_pem: &str) -> Result<Vec<String>, Error> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::InvalidCsr(e.to_string()))?;
        Ok(csr
            .params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                SanType::DnsName(name) => Some(name.to_string()),
                SanType::IpAddress(ip) => Some(ip.to_string()),
                _ => None,
            })
            .collect())
    }

    /// Signs the CSR of a mamori service that runs on another host (the backup vault): the key
    /// stays where it was made, the certificate names exactly `names` (DNS names or IP
    /// literals, chosen by the administrator, not taken from the CSR) and allows both
    /// serverAuth (clients connect to it) and clientAuth (it forwards alerts to the manager).
    pub fn sign_service_csr(
        &self,
        csr_pem: &str,
        names: &[String],
        validity: Duration,
    ) -> Result<IssuedCert, Error> {
        let first = names.first().ok_or(Error::NoNames)?;
        for n in names {
            if n.is_empty() || n.len() > 253 || n.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(Error::InvalidName(n.clone()));
            }
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::InvalidCsr(e.to_string()))?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = dn(first);
        // A device id of its own, so the manager accepts it as one of its certificates (its
        // syslog receiver refuses client certificates without one) and can distrust it by id.
        let uri = format!("{DEVICE_URI_PREFIX}{}", crate::new_device_id());
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().map_err(|e: rcgen::Error| Error::InvalidCsr(e.to_string()))?));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(now));
        params.not_after = to_offset(checked_add(now, validity)?);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        let info = cert_info(cert.der())?;
        Ok(IssuedCert { cert_pem: cert.pem(), info })
    }

    /// Like [`Ca::sign_csr`] with an explicit validity window; lets tests issue expired certificates.
    pub(crate) fn sign_csr_window(
        &self,
        csr_pem: &str,
        device_id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, Error> {
        validate_device_id(device_id)?;
        if not_after <= not_before {
            return Err(Error::InvalidValidity("not_after must be after not_before".into()));
        }
        // from_pem verifies the CSR signature (rcgen returns InvalidCertificationRequestSignature).
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::InvalidCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(device_id);
        let uri = format!("{DEVICE_URI_PREFIX}{device_id}");
        params.subject_alt_names =
            vec![SanType::URI(uri.try_into().map_err(|e: rcgen::Error| Error::InvalidCsr(e.to_string()))?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        let info = cert_info(cert.der())?;
        Ok(IssuedCert { cert_pem: cert.pem(), info })
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// 128 random bits behind a fixed 0x01 byte: the leading byte keeps the DER INTEGER positive and
/// its length fixed (17 bytes, within RFC 5280's 20-octet limit) without spending entropy on it.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 17];
    bytes[0] = 0x01;
    rand::rngs::OsRng.fill_bytes(&mut bytes[1..]);
    SerialNumber::from_slice(&bytes)
}

fn checked_add(now: SystemTime, validity: Duration) -> Result<SystemTime, Error> {
    now.checked_add(validity).ok_or_else(|| Error::InvalidValidity("validity period overflows".into()))
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    // X.509 times have one-second resolution; truncating avoids surprises when comparing.
    let t = OffsetDateTime::from(t);
    t.replace_nanosecond(0).unwrap_or(t)
}
