//! The agent's own key.

use std::path::Path;

use rand::RngCore;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};

use crate::{fingerprint_of_der, fsutil, validate_device_id, Error};

/// An agent key pair (ECDSA P-256), generated on the device; the private key never leaves it.
pub struct DeviceKey {
    key: KeyPair,
    key_pem: String,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").field("public_key_fingerprint", &self.public_key_fingerprint()).finish()
    }
}

impl DeviceKey {
    pub fn generate() -> Result<DeviceKey, Error> {
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        Ok(DeviceKey { key, key_pem })
    }

    /// Loads a PEM key, refusing symlinks and files that group or others can access.
    pub fn load(path: &Path) -> Result<DeviceKey, Error> {
        let key_pem = fsutil::read_private(path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::InvalidKey(e.to_string()))?;
        // Normalise to what we would have written so key_pem() is stable.
        let key_pem = key.serialize_pem();
        Ok(DeviceKey { key, key_pem })
    }

    /// Writes the key with mode 0600 via a temporary file and rename, so a crash never leaves a
    /// truncated key behind.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        fsutil::write_atomic(path, self.key_pem.as_bytes(), true)
    }

    /// A CSR for `device_id`. The CA decides the certificate's identity regardless; the CN is
    /// only a hint for humans reading the request.
    pub fn csr_pem(&self, device_id: &str) -> Result<String, Error> {
        validate_device_id(device_id)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        params.distinguished_name = dn;
        Ok(params.serialize_request(&self.key)?.pem()?)
    }

    /// A CSR for a mamori service (the backup vault) that names the DNS names or IP addresses
    /// clients will use to reach it; the CA still decides what it signs.
    pub fn service_csr_pem(&self, names: &[String]) -> Result<String, Error> {
        let first = names.first().ok_or(Error::NoNames)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, first.as_str());
        params.distinguished_name = dn;
        Ok(params.serialize_request(&self.key)?.pem()?)
    }

    /// The private key as PKCS#8 PEM. Never log this.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER. Stable for the life of the key, so
    /// the manager can tie a device id to it across certificate renewals.
    pub fn public_key_fingerprint(&self) -> String {
        fingerprint_of_der(&self.key.subject_public_key_info())
    }
}

/// A new random device id: 128 bits as 32 lowercase hex characters.
pub fn new_device_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}
